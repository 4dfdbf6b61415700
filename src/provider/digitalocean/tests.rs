//! Tests of the DigitalOcean driver against a minimal in-test DOKS stand-in on 127.0.0.1 (a
//! blocking std server on its own threads, so the tests rely on no extra tokio feature and no
//! extra crate). Each test is named after the rule it protects.

use std::collections::{BTreeMap, VecDeque};
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use reqwest::header::{HeaderMap, HeaderValue};
use serde_json::{json, Value};

use super::client::{rate_limit_wait, retry_wait};
use super::*;

const TOKEN: &str = "dop_v1_0123456789abcdefSECRETTOKENVALUE";
const CLUSTER_ID: &str = "bd5f5959-5e1e-4205-a714-a914373942af";
const POOL_ID: &str = "cdda885e-7663-40c8-bc74-3a036c66545d";
const CLUSTER: &str = "games-prod";
const POOL: &str = "game-servers";

// ---------------------------------------------------------------------------------------------
// The stub server.

/// One request as the stub received it.
#[derive(Clone, Debug)]
struct Recorded {
    method: String,
    path: String,
    query: BTreeMap<String, String>,
    raw_query: String,
    headers: Vec<(String, String)>,
    body: String,
}

impl Recorded {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// The stub's answer.
#[derive(Clone, Debug)]
struct Reply {
    status: u16,
    headers: Vec<(String, String)>,
    body: String,
    /// Sleep before answering (to provoke client timeouts).
    delay: Duration,
}

impl Reply {
    fn json(status: u16, body: Value) -> Self {
        Self {
            status,
            headers: Vec::new(),
            body: body.to_string(),
            delay: Duration::ZERO,
        }
    }
    fn empty(status: u16) -> Self {
        Self {
            status,
            headers: Vec::new(),
            body: String::new(),
            delay: Duration::ZERO,
        }
    }
    fn error(status: u16, id: &str, message: &str, request_id: &str) -> Self {
        Self::json(
            status,
            json!({"id": id, "message": message, "request_id": request_id}),
        )
    }
    fn with_header(mut self, name: &str, value: &str) -> Self {
        self.headers.push((name.to_owned(), value.to_owned()));
        self
    }
    fn delayed(mut self, delay: Duration) -> Self {
        self.delay = delay;
        self
    }
}

/// Starts a server on 127.0.0.1 answering every request with `handler`; returns its base URL.
/// The listener thread lives until the test process ends, which is fine for tests.
fn serve(handler: impl Fn(&Recorded) -> Reply + Send + Sync + 'static) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind the stub");
    let addr = listener.local_addr().expect("stub address");
    let handler = Arc::new(handler);
    thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(stream) = stream else { continue };
            let handler = Arc::clone(&handler);
            thread::spawn(move || serve_one(stream, &*handler));
        }
    });
    format!("http://{addr}")
}

fn serve_one(mut stream: TcpStream, handler: &dyn Fn(&Recorded) -> Reply) {
    let Some(request) = read_request(&mut stream) else {
        return;
    };
    let reply = handler(&request);
    thread::sleep(reply.delay);
    let reason = reqwest::StatusCode::from_u16(reply.status)
        .ok()
        .and_then(|s| s.canonical_reason())
        .unwrap_or("Stub");
    let mut head = format!(
        "HTTP/1.1 {} {reason}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n",
        reply.status,
        reply.body.len()
    );
    for (k, v) in &reply.headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    // The client may have timed out and gone: ignore write errors.
    let _ = stream.write_all(head.as_bytes());
    let _ = stream.write_all(reply.body.as_bytes());
    let _ = stream.flush();
}

fn read_request(stream: &mut TcpStream) -> Option<Recorded> {
    let mut buffer = Vec::new();
    let mut chunk = [0u8; 4096];
    let head_end = loop {
        if let Some(at) = buffer.windows(4).position(|w| w == b"\r\n\r\n") {
            break at;
        }
        let n = stream.read(&mut chunk).ok()?;
        if n == 0 {
            return None;
        }
        buffer.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buffer[..head_end]).to_string();
    let mut lines = head.split("\r\n");
    let mut first = lines.next()?.split(' ');
    let method = first.next()?.to_owned();
    let target = first.next()?.to_owned();
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
        .collect();
    let length = headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case("content-length"))
        .and_then(|(_, v)| v.parse::<usize>().ok())
        .unwrap_or(0);
    let mut body = buffer[head_end + 4..].to_vec();
    while body.len() < length {
        let n = stream.read(&mut chunk).ok()?;
        if n == 0 {
            break;
        }
        body.extend_from_slice(&chunk[..n]);
    }
    let (path, raw_query) = match target.split_once('?') {
        Some((p, q)) => (p.to_owned(), q.to_owned()),
        None => (target.clone(), String::new()),
    };
    let query = reqwest::Url::parse(&format!("http://x/?{raw_query}"))
        .map(|u| u.query_pairs().into_owned().collect())
        .unwrap_or_default();
    Some(Recorded {
        method,
        path,
        query,
        raw_query,
        headers,
        body: String::from_utf8_lossy(&body).to_string(),
    })
}

// ---------------------------------------------------------------------------------------------
// A minimal DOKS stand-in: the six operations, with pagination and scripted failures.

#[derive(Clone, Debug)]
struct FakeNode {
    id: String,
    name: String,
    droplet_id: String,
    state: String,
}

#[derive(Clone, Debug)]
struct FakePool {
    id: String,
    name: String,
    count: u32,
    auto_scale: bool,
    nodes: Vec<FakeNode>,
}

#[derive(Debug)]
struct Fake {
    /// (id, name) of every cluster, listed with `page`/`per_page`.
    clusters: Vec<(String, String)>,
    /// Pools of the cluster `CLUSTER_ID`.
    pools: Vec<FakePool>,
    /// When set, the pool list is paginated with this page size through `links.pages.next`.
    pool_page_size: Option<usize>,
    /// Answers served first, one per request, before normal routing.
    scripted: VecDeque<Reply>,
    /// Every request received.
    requests: Vec<Recorded>,
}

fn node(n: u32, state: &str) -> FakeNode {
    FakeNode {
        id: format!("478247f8-b1bb-4f7a-8db9-2a5f8d4b8f{n:02}"),
        name: format!("game-servers-x{n}"),
        droplet_id: format!("20554537{n}"),
        state: state.to_owned(),
    }
}

impl Fake {
    /// Five clusters (ours last), our pool among two, with three running nodes.
    fn new() -> Self {
        let mut clusters: Vec<(String, String)> = (1..=4)
            .map(|i| {
                (
                    format!("00000000-0000-4000-8000-00000000000{i}"),
                    format!("other-{i}"),
                )
            })
            .collect();
        clusters.push((CLUSTER_ID.to_owned(), CLUSTER.to_owned()));
        Self {
            clusters,
            pools: vec![
                FakePool {
                    id: "f49f4379-7e7f-4af5-aeb6-0354bd840778".to_owned(),
                    name: "system".to_owned(),
                    count: 2,
                    auto_scale: false,
                    nodes: Vec::new(),
                },
                FakePool {
                    id: POOL_ID.to_owned(),
                    name: POOL.to_owned(),
                    count: 3,
                    auto_scale: false,
                    nodes: vec![node(1, "running"), node(2, "running"), node(3, "running")],
                },
            ],
            pool_page_size: None,
            scripted: VecDeque::new(),
            requests: Vec::new(),
        }
    }

    fn pool_json(pool: &FakePool) -> Value {
        json!({
            "id": pool.id, "name": pool.name, "size": "s-4vcpu-8gb", "count": pool.count,
            "tags": ["k8s", "k8s:worker"], "labels": null, "taints": [],
            "auto_scale": pool.auto_scale, "min_nodes": 1, "max_nodes": 10,
            "nodes": pool.nodes.iter().map(|n| json!({
                "id": n.id, "name": n.name, "status": {"state": n.state},
                "droplet_id": n.droplet_id,
                "created_at": "2026-01-01T00:00:00Z", "updated_at": "2026-01-01T00:00:00Z",
            })).collect::<Vec<_>>(),
        })
    }

    fn not_found() -> Reply {
        Reply::error(
            404,
            "not_found",
            "The resource you requested could not be found.",
            "req-404",
        )
    }

    fn handle(&mut self, request: &Recorded) -> Reply {
        self.requests.push(request.clone());
        if request.header("authorization") != Some(&format!("Bearer {TOKEN}")) {
            return Reply::error(
                401,
                "unauthorized",
                "Unable to authenticate you.",
                "req-401",
            );
        }
        if let Some(reply) = self.scripted.pop_front() {
            return reply;
        }
        let segments: Vec<&str> = request.path.trim_start_matches('/').split('/').collect();
        let page = |key: &str, default: usize| -> usize {
            request
                .query
                .get(key)
                .and_then(|v| v.parse().ok())
                .unwrap_or(default)
        };
        match (request.method.as_str(), segments.as_slice()) {
            ("GET", ["v2", "kubernetes", "clusters"]) => {
                let (page, per_page) = (page("page", 1), page("per_page", 20));
                let start = (page - 1) * per_page;
                let items: Vec<Value> = self
                    .clusters
                    .iter()
                    .skip(start)
                    .take(per_page)
                    .map(|(id, name)| json!({"id": id, "name": name, "region": "fra1", "version": "1.33.1-do.0", "node_pools": []}))
                    .collect();
                let mut pages = json!({});
                if start + per_page < self.clusters.len() {
                    // Absolute, on the real API's host: the driver must reuse only the page
                    // number, on its own base URL.
                    pages = json!({"next": format!("https://api.digitalocean.com/v2/kubernetes/clusters?page={}&per_page={per_page}", page + 1)});
                }
                Reply::json(
                    200,
                    json!({"kubernetes_clusters": items, "links": {"pages": pages}, "meta": {"total": self.clusters.len()}}),
                )
            }
            ("GET", ["v2", "kubernetes", "clusters", cluster, "node_pools"])
                if *cluster == CLUSTER_ID =>
            {
                let all: Vec<Value> = self.pools.iter().map(Self::pool_json).collect();
                match self.pool_page_size {
                    None => Reply::json(200, json!({"node_pools": all})),
                    Some(size) => {
                        let page = page("page", 1);
                        let start = (page - 1) * size;
                        let items: Vec<Value> =
                            all.iter().skip(start).take(size).cloned().collect();
                        let mut body = json!({"node_pools": items});
                        if start + size < all.len() {
                            body["links"] = json!({"pages": {"next": format!("https://api.digitalocean.com/v2/kubernetes/clusters/{CLUSTER_ID}/node_pools?page={}", page + 1)}});
                        }
                        Reply::json(200, body)
                    }
                }
            }
            ("GET", ["v2", "kubernetes", "clusters", cluster, "node_pools", pool])
                if *cluster == CLUSTER_ID =>
            {
                match self.pools.iter().find(|p| p.id == *pool) {
                    Some(p) => Reply::json(200, json!({"node_pool": Self::pool_json(p)})),
                    None => Self::not_found(),
                }
            }
            ("PUT", ["v2", "kubernetes", "clusters", cluster, "node_pools", pool])
                if *cluster == CLUSTER_ID =>
            {
                let Ok(body) = serde_json::from_str::<Value>(&request.body) else {
                    return Reply::error(400, "bad_request", "invalid JSON", "req-400");
                };
                let (Some(_), Some(count)) = (body["name"].as_str(), body["count"].as_u64()) else {
                    return Reply::error(
                        422,
                        "unprocessable_entity",
                        "name and count are required",
                        "req-422",
                    );
                };
                match self.pools.iter_mut().find(|p| p.id == *pool) {
                    Some(p) => {
                        p.count = count as u32;
                        Reply::json(202, json!({"node_pool": Self::pool_json(p)}))
                    }
                    None => Self::not_found(),
                }
            }
            (
                "DELETE",
                ["v2", "kubernetes", "clusters", cluster, "node_pools", pool, "nodes", node],
            ) if *cluster == CLUSTER_ID => {
                let Some(p) = self.pools.iter_mut().find(|p| p.id == *pool) else {
                    return Self::not_found();
                };
                let Some(n) = p.nodes.iter_mut().find(|n| n.id == *node) else {
                    return Self::not_found();
                };
                n.state = "deleting".to_owned();
                p.count = p.count.saturating_sub(1);
                Reply::empty(202)
            }
            _ => Self::not_found(),
        }
    }

    fn count(&self, method: &str, path_part: &str) -> usize {
        self.requests
            .iter()
            .filter(|r| r.method == method && r.path.contains(path_part))
            .count()
    }
}

/// Serves `fake`; returns the base URL and the shared state to inspect afterwards.
fn start(fake: Fake) -> (String, Arc<Mutex<Fake>>) {
    let state = Arc::new(Mutex::new(fake));
    let shared = Arc::clone(&state);
    let url = serve(move |request| match shared.lock() {
        Ok(mut fake) => fake.handle(request),
        Err(_) => Reply::empty(500),
    });
    (url, state)
}

fn fast_options() -> DigitalOceanOptions {
    DigitalOceanOptions {
        connect_timeout: Duration::from_secs(2),
        request_timeout: Duration::from_secs(2),
        max_attempts: 4,
        retry_budget: Duration::from_secs(10),
        initial_backoff: Duration::from_millis(5),
        max_backoff: Duration::from_millis(20),
        per_page: 2,
        skip_drain: false,
    }
}

fn driver(url: &str) -> DigitalOcean {
    driver_with(url, fast_options())
}

fn driver_with(url: &str, options: DigitalOceanOptions) -> DigitalOcean {
    DigitalOcean::new(url, SecretToken::new(TOKEN), CLUSTER, POOL, options).expect("valid driver")
}

fn requests(state: &Arc<Mutex<Fake>>) -> Vec<Recorded> {
    state.lock().expect("fake state").requests.clone()
}

fn node_ref(name: &str, provider_id: Option<&str>, node_id_label: Option<&str>) -> NodeRef {
    let mut labels = BTreeMap::new();
    labels.insert(
        "doks.digitalocean.com/node-pool".to_owned(),
        POOL.to_owned(),
    );
    if let Some(id) = node_id_label {
        labels.insert(NODE_ID_LABEL.to_owned(), id.to_owned());
    }
    NodeRef {
        name: name.to_owned(),
        provider_id: provider_id.map(str::to_owned),
        labels,
        identity_annotations: BTreeMap::new(),
    }
}

fn deletes(state: &Arc<Mutex<Fake>>) -> Vec<Recorded> {
    requests(state)
        .into_iter()
        .filter(|r| r.method == "DELETE")
        .collect()
}

// ---------------------------------------------------------------------------------------------
// Name resolution.

#[tokio::test]
async fn names_resolve_to_ids_following_pagination_on_every_list() {
    let mut fake = Fake::new();
    fake.pool_page_size = Some(1); // our pool is on page 2 of the pool list
    let (url, state) = start(fake);
    let ids = driver(&url).resolve().await.expect("resolves");
    assert_eq!(
        ids,
        PoolIds {
            cluster_id: CLUSTER_ID.to_owned(),
            node_pool_id: POOL_ID.to_owned()
        }
    );
    let seen = requests(&state);
    let cluster_pages: Vec<String> = seen
        .iter()
        .filter(|r| r.path == "/v2/kubernetes/clusters")
        .map(|r| r.raw_query.clone())
        .collect();
    // Five clusters, two per page: three pages, each with page and per_page.
    assert_eq!(
        cluster_pages,
        [
            "page=1&per_page=2",
            "page=2&per_page=2",
            "page=3&per_page=2"
        ]
    );
    let pool_pages: Vec<String> = seen
        .iter()
        .filter(|r| r.path.ends_with("/node_pools"))
        .map(|r| r.raw_query.clone())
        .collect();
    // The contract gives the pool list no query; only the next link's page is followed.
    assert_eq!(pool_pages, ["", "page=2"]);
}

#[tokio::test]
async fn next_links_never_take_the_token_to_another_host() {
    // The fake's next links point at api.digitalocean.com, unreachable from here: resolution
    // succeeds, and every page reaches the stub, only if the link's host is ignored.
    let (url, state) = start(Fake::new());
    driver(&url).resolve().await.expect("resolves");
    let pages = requests(&state)
        .iter()
        .filter(|r| r.path == "/v2/kubernetes/clusters")
        .count();
    assert_eq!(pages, 3);
}

#[tokio::test]
async fn resolution_is_cached_after_the_first_call() {
    let (url, state) = start(Fake::new());
    let driver = driver(&url);
    driver.target_size().await.expect("first");
    driver.target_size().await.expect("second");
    let lists = requests(&state)
        .iter()
        .filter(|r| r.path == "/v2/kubernetes/clusters")
        .count();
    assert_eq!(lists, 3, "clusters listed once (three pages), not per call");
}

#[tokio::test]
async fn unknown_cluster_name_error_lists_existing_clusters() {
    let (url, _) = start(Fake::new());
    let driver = DigitalOcean::new(&url, SecretToken::new(TOKEN), "nope", POOL, fast_options())
        .expect("valid driver");
    let error = driver.target_size().await.expect_err("not found");
    assert!(matches!(error, ProviderError::Config { .. }), "{error:?}");
    let text = error.to_string();
    for name in ["\"nope\"", "other-1", "other-4", CLUSTER] {
        assert!(text.contains(name), "{text}");
    }
}

#[tokio::test]
async fn unknown_pool_name_error_lists_existing_pools() {
    let (url, _) = start(Fake::new());
    let driver = DigitalOcean::new(
        &url,
        SecretToken::new(TOKEN),
        CLUSTER,
        "gpu",
        fast_options(),
    )
    .expect("valid driver");
    let error = NodePoolProvider::pool(&driver)
        .await
        .expect_err("not found");
    assert!(matches!(error, ProviderError::Config { .. }), "{error:?}");
    let text = error.to_string();
    for name in ["\"gpu\"", "\"system\"", "\"game-servers\""] {
        assert!(text.contains(name), "{text}");
    }
}

#[tokio::test]
async fn pool_with_digitalocean_autoscaling_is_refused() {
    let mut fake = Fake::new();
    fake.pools[1].auto_scale = true;
    let (url, state) = start(fake);
    let driver = driver(&url);
    let error = driver.target_size().await.expect_err("refused");
    assert!(matches!(error, ProviderError::Refused { .. }), "{error:?}");
    assert!(error.to_string().contains("auto_scale"), "{error}");
    assert!(driver.grow_to(5).await.is_err());
    assert_eq!(state.lock().expect("state").count("PUT", ""), 0);
}

#[tokio::test]
async fn autoscaling_switched_on_later_is_refused_too() {
    let (url, state) = start(Fake::new());
    let driver = driver(&url);
    driver.target_size().await.expect("resolves");
    state.lock().expect("state").pools[1].auto_scale = true;
    let error = driver.grow_to(5).await.expect_err("refused");
    assert!(matches!(error, ProviderError::Refused { .. }), "{error:?}");
    assert_eq!(state.lock().expect("state").count("PUT", ""), 0);
}

#[tokio::test]
async fn pool_recreated_under_the_same_name_is_resolved_again_after_404() {
    let (url, state) = start(Fake::new());
    let driver = driver(&url);
    driver.target_size().await.expect("resolves");
    state.lock().expect("state").pools[1].id = "11111111-2222-4333-8444-555555555555".to_owned();
    let error = driver.target_size().await.expect_err("old id is gone");
    assert!(error.to_string().contains("not_found"), "{error}");
    assert_eq!(driver.target_size().await.expect("re-resolved"), 3);
}

// ---------------------------------------------------------------------------------------------
// Reading the pool.

#[tokio::test]
async fn target_size_is_the_pool_count() {
    let (url, state) = start(Fake::new());
    state.lock().expect("state").pools[1].count = 7;
    assert_eq!(driver(&url).target_size().await.expect("count"), 7);
}

#[tokio::test]
async fn nodes_are_the_pool_nodes_with_their_state() {
    let mut fake = Fake::new();
    fake.pools[1].nodes[2].state = "provisioning".to_owned();
    let (url, _) = start(fake);
    let nodes = NodePoolProvider::pool(&driver(&url))
        .await
        .expect("nodes")
        .nodes;
    assert_eq!(nodes.len(), 3);
    assert_eq!(nodes[2].id, node(3, "").id);
    assert_eq!(nodes[2].name, "game-servers-x3");
    assert_eq!(nodes[2].status, InstanceStatus::Creating);
    assert_eq!(nodes[2].state, "provisioning");
}

// ---------------------------------------------------------------------------------------------
// Growing.

#[tokio::test]
async fn grow_puts_the_pool_name_and_the_absolute_count_only() {
    let (url, state) = start(Fake::new());
    driver(&url).grow_to(5).await.expect("grows");
    let puts: Vec<Recorded> = requests(&state)
        .into_iter()
        .filter(|r| r.method == "PUT")
        .collect();
    assert_eq!(puts.len(), 1);
    assert_eq!(
        puts[0].path,
        format!("/v2/kubernetes/clusters/{CLUSTER_ID}/node_pools/{POOL_ID}")
    );
    assert_eq!(puts[0].header("content-type"), Some("application/json"));
    let body: Value = serde_json::from_str(&puts[0].body).expect("JSON body");
    assert_eq!(body, json!({"name": POOL, "count": 5}));
}

#[tokio::test]
async fn grow_refuses_any_count_below_the_current_one() {
    let (url, state) = start(Fake::new());
    let error = driver(&url).grow_to(2).await.expect_err("refused");
    assert!(matches!(error, ProviderError::Refused { .. }), "{error:?}");
    assert!(error.to_string().contains("shrink"), "{error}");
    assert_eq!(state.lock().expect("state").count("PUT", ""), 0);
}

#[tokio::test]
async fn grow_reads_the_count_fresh_before_deciding() {
    let (url, state) = start(Fake::new());
    let driver = driver(&url);
    assert_eq!(driver.target_size().await.expect("count"), 3);
    state.lock().expect("state").pools[1].count = 6; // grown behind our back
    assert!(driver.grow_to(4).await.is_err(), "4 < 6 must be refused");
    assert_eq!(state.lock().expect("state").count("PUT", ""), 0);
}

#[tokio::test]
async fn a_resize_answered_with_another_count_is_an_error() {
    // DigitalOcean answers the PUT with the pool as it now is; a count other than the one
    // asked for (a quota, a concurrent change) must not pass for success.
    let (url, state) = start(Fake::new());
    let driver = driver(&url);
    driver.target_size().await.expect("resolves");
    {
        let mut fake = state.lock().expect("state");
        let pool = Fake::pool_json(&fake.pools[1]);
        fake.scripted
            .push_back(Reply::json(200, json!({"node_pool": pool.clone()})));
        // count 3 still, though 5 was asked for.
        fake.scripted
            .push_back(Reply::json(202, json!({"node_pool": pool})));
    }
    let error = driver.grow_to(5).await.expect_err("count not confirmed");
    let text = error.to_string();
    assert!(
        text.contains("asked for 5") && text.contains("count 3"),
        "{text}"
    );
}

#[tokio::test]
async fn grow_to_the_current_count_sends_nothing() {
    let (url, state) = start(Fake::new());
    driver(&url).grow_to(3).await.expect("no-op");
    assert_eq!(state.lock().expect("state").count("PUT", ""), 0);
}

#[tokio::test]
async fn grow_retried_after_a_timeout_sets_the_same_absolute_count() {
    let fake = Fake::new();
    let (url, state) = start(fake);
    let driver = driver_with(
        &url,
        DigitalOceanOptions {
            request_timeout: Duration::from_millis(300),
            ..fast_options()
        },
    );
    driver.target_size().await.expect("resolves");
    // The GET of grow_to passes, then the first PUT times out.
    {
        let mut fake = state.lock().expect("state");
        let pool = Fake::pool_json(&fake.pools[1]);
        fake.scripted
            .push_back(Reply::json(200, json!({"node_pool": pool})));
        let mut grown = pool.clone();
        grown["count"] = json!(5);
        fake.scripted.push_back(
            Reply::json(202, json!({"node_pool": grown})).delayed(Duration::from_secs(1)),
        );
    }
    driver.grow_to(5).await.expect("grows after retry");
    let bodies: Vec<Value> = requests(&state)
        .iter()
        .filter(|r| r.method == "PUT")
        .map(|r| serde_json::from_str(&r.body).expect("JSON"))
        .collect();
    assert_eq!(bodies.len(), 2);
    assert!(
        bodies
            .iter()
            .all(|b| *b == json!({"name": POOL, "count": 5})),
        "{bodies:?}"
    );
}

// ---------------------------------------------------------------------------------------------
// Deleting.

#[tokio::test]
async fn delete_maps_nodes_by_label_then_provider_id_then_name() {
    let (url, state) = start(Fake::new());
    let nodes = [
        // By label only.
        node_ref("unrelated-name", None, Some(&node(2, "").id)),
        // By providerID (no label).
        node_ref("also-unrelated", Some("digitalocean://205545373"), None),
        // By name (neither).
        node_ref("game-servers-x1", None, None),
    ];
    let results = driver(&url).delete_nodes(&nodes).await;
    assert_eq!(results.len(), 3);
    assert!(results.iter().all(Result::is_ok), "{results:?}");
    let paths: Vec<String> = deletes(&state).into_iter().map(|r| r.path).collect();
    let base = format!("/v2/kubernetes/clusters/{CLUSTER_ID}/node_pools/{POOL_ID}/nodes/");
    assert_eq!(
        paths,
        [2, 3, 1].map(|n| format!("{base}{}", node(n, "").id)),
        "every node deleted, in order"
    );
}

#[tokio::test]
async fn delete_never_replaces_and_lets_doks_drain() {
    let (url, state) = start(Fake::new());
    let results = driver(&url)
        .delete_nodes(&[node_ref("game-servers-x1", None, None)])
        .await;
    assert!(results[0].is_ok(), "{results:?}");
    let sent = deletes(&state);
    assert_eq!(sent[0].query.get("replace").map(String::as_str), Some("0"));
    assert_eq!(
        sent[0].query.get("skip_drain").map(String::as_str),
        Some("0")
    );
}

#[tokio::test]
async fn delete_reports_an_unknown_node_and_still_deletes_the_others() {
    let (url, state) = start(Fake::new());
    let nodes = [
        node_ref("game-servers-x1", None, None),
        node_ref("not-in-pool", Some("digitalocean://999"), None),
        node_ref("game-servers-x3", None, None),
    ];
    let results = driver(&url).delete_nodes(&nodes).await;
    assert!(results[0].is_ok());
    assert!(
        matches!(&results[1], Err(ProviderError::UnknownNode { node, .. }) if node == "not-in-pool"),
        "{results:?}"
    );
    assert!(results[2].is_ok());
    assert_eq!(deletes(&state).len(), 2);
}

#[tokio::test]
async fn delete_does_not_fall_back_to_the_name_when_the_label_matches_nothing() {
    let (url, state) = start(Fake::new());
    // The label names a node of another pool; the name happens to match one of ours.
    let nodes = [node_ref(
        "game-servers-x1",
        None,
        Some("99999999-9999-4999-8999-999999999999"),
    )];
    let results = driver(&url).delete_nodes(&nodes).await;
    assert!(
        matches!(&results[0], Err(ProviderError::UnknownNode { .. })),
        "{results:?}"
    );
    assert!(deletes(&state).is_empty());
}

#[tokio::test]
async fn delete_refuses_a_label_and_provider_id_that_disagree() {
    let (url, state) = start(Fake::new());
    let nodes = [node_ref(
        "game-servers-x1",
        Some("digitalocean://205545372"),
        Some(&node(1, "").id),
    )];
    let results = driver(&url).delete_nodes(&nodes).await;
    assert!(
        matches!(&results[0], Err(ProviderError::Refused { .. })),
        "{results:?}"
    );
    assert!(deletes(&state).is_empty());
}

#[tokio::test]
async fn delete_of_a_node_already_deleting_sends_no_second_delete() {
    let mut fake = Fake::new();
    fake.pools[1].nodes[0].state = "deleting".to_owned();
    let (url, state) = start(fake);
    let nodes = [
        node_ref("game-servers-x1", None, None),
        node_ref("game-servers-x2", None, None),
        node_ref("game-servers-x2", None, None), // asked twice in one call
    ];
    let results = driver(&url).delete_nodes(&nodes).await;
    assert!(results.iter().all(Result::is_ok), "{results:?}");
    let sent = deletes(&state);
    assert_eq!(sent.len(), 1, "only x2, once");
    assert!(sent[0].path.ends_with(&node(2, "").id));
}

#[tokio::test]
async fn delete_gives_one_result_per_node_when_the_pool_cannot_be_read() {
    let (url, state) = start(Fake::new());
    state.lock().expect("state").scripted.extend(
        (0..8).map(|_| Reply::error(403, "forbidden", "You do not have access", "req-403")),
    );
    let nodes = [
        node_ref("game-servers-x1", None, None),
        node_ref("game-servers-x2", None, None),
    ];
    let results = driver(&url).delete_nodes(&nodes).await;
    assert_eq!(results.len(), 2);
    assert!(
        results
            .iter()
            .all(|r| matches!(r, Err(ProviderError::Api { .. }))),
        "{results:?}"
    );
}

#[tokio::test]
async fn delete_retried_after_a_server_error_is_ok_when_the_first_attempt_went_through() {
    let (url, state) = start(Fake::new());
    let driver = driver(&url);
    driver.target_size().await.expect("resolves");
    {
        let mut fake = state.lock().expect("state");
        let pool = Fake::pool_json(&fake.pools[1]);
        // GET of delete_nodes, then a DELETE that DigitalOcean carried out but answered 500,
        // then the retried DELETE finds no such node any more.
        fake.scripted
            .push_back(Reply::json(200, json!({"node_pool": pool})));
        fake.scripted.push_back(Reply::error(
            500,
            "server_error",
            "Unexpected server-side error",
            "req-500",
        ));
        fake.scripted.push_back(Fake::not_found());
        fake.pools[1].nodes[0].state = "deleting".to_owned();
    }
    let results = driver
        .delete_nodes(&[node_ref("game-servers-x1", None, None)])
        .await;
    assert!(results[0].is_ok(), "{results:?}");
}

// ---------------------------------------------------------------------------------------------
// Retries and errors.

#[tokio::test]
async fn rate_limited_call_waits_for_ratelimit_reset_then_succeeds() {
    let (url, state) = start(Fake::new());
    let driver = driver(&url);
    driver.target_size().await.expect("resolves");
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_secs();
    state.lock().expect("state").scripted.push_back(
        Reply::error(
            429,
            "too_many_requests",
            "API rate limit exceeded.",
            "req-429",
        )
        .with_header("ratelimit-limit", "5000")
        .with_header("ratelimit-remaining", "0")
        .with_header("ratelimit-reset", &(now + 2).to_string()),
    );
    let started = Instant::now();
    assert_eq!(driver.target_size().await.expect("after the wait"), 3);
    // reset is 1 to 2 s away; the backoff alone would be a few milliseconds.
    assert!(
        started.elapsed() >= Duration::from_millis(900),
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn server_error_is_retried_then_succeeds() {
    let (url, state) = start(Fake::new());
    let driver = driver(&url);
    driver.target_size().await.expect("resolves");
    state
        .lock()
        .expect("state")
        .scripted
        .push_back(Reply::error(
            500,
            "server_error",
            "Unexpected server-side error",
            "req-500",
        ));
    assert_eq!(driver.target_size().await.expect("retried"), 3);
    assert_eq!(state.lock().expect("state").count("GET", POOL_ID), 3);
}

#[tokio::test]
async fn timed_out_request_is_retried_then_succeeds() {
    let (url, state) = start(Fake::new());
    let driver = driver_with(
        &url,
        DigitalOceanOptions {
            request_timeout: Duration::from_millis(300),
            ..fast_options()
        },
    );
    driver.target_size().await.expect("resolves");
    state
        .lock()
        .expect("state")
        .scripted
        .push_back(Reply::json(200, json!({})).delayed(Duration::from_secs(2)));
    assert_eq!(driver.target_size().await.expect("retried"), 3);
}

#[tokio::test]
async fn connection_failure_is_retried_and_ends_in_a_clear_error() {
    // A port nothing listens on.
    let closed = TcpListener::bind("127.0.0.1:0").expect("bind");
    let url = format!("http://{}", closed.local_addr().expect("addr"));
    drop(closed);
    let error = driver(&url).target_size().await.expect_err("no server");
    let text = error.to_string();
    assert!(text.contains("gave up after 4 attempt(s)"), "{text}");
    assert!(text.contains("list clusters"), "{text}");
}

#[tokio::test]
async fn client_error_other_than_429_is_not_retried() {
    let (url, state) = start(Fake::new());
    let driver = driver(&url);
    driver.target_size().await.expect("resolves");
    state.lock().expect("state").scripted.extend([
        Reply::json(
            200,
            json!({"node_pool": Fake::pool_json(&Fake::new().pools[1])}),
        ),
        Reply::error(
            422,
            "unprocessable_entity",
            "count exceeds droplet limit",
            "req-422",
        ),
    ]);
    let error = driver.grow_to(50).await.expect_err("422");
    assert!(error.to_string().contains("HTTP 422"), "{error}");
    assert_eq!(state.lock().expect("state").count("PUT", ""), 1);
}

#[tokio::test]
async fn retries_stop_after_max_attempts_with_a_clear_error() {
    let (url, state) = start(Fake::new());
    let driver = driver(&url);
    driver.target_size().await.expect("resolves");
    state
        .lock()
        .expect("state")
        .scripted
        .extend((0..10).map(|_| Reply::error(503, "service_unavailable", "try later", "req-503")));
    let error = driver.target_size().await.expect_err("exhausted");
    let text = error.to_string();
    assert!(text.contains("gave up after 4 attempt(s)"), "{text}");
    assert!(text.contains("max_attempts is 4"), "{text}");
    assert!(
        text.contains("service_unavailable: try later (request_id: req-503)"),
        "{text}"
    );
    assert_eq!(state.lock().expect("state").count("GET", POOL_ID), 1 + 4);
}

#[tokio::test]
async fn rate_limit_reset_beyond_the_retry_budget_fails_at_once() {
    let (url, state) = start(Fake::new());
    let driver = driver(&url);
    driver.target_size().await.expect("resolves");
    let in_an_hour = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_secs()
        + 3600;
    state.lock().expect("state").scripted.push_back(
        Reply::error(
            429,
            "too_many_requests",
            "API rate limit exceeded.",
            "req-429",
        )
        .with_header("ratelimit-reset", &in_an_hour.to_string()),
    );
    let started = Instant::now();
    let error = driver.target_size().await.expect_err("budget");
    assert!(started.elapsed() < Duration::from_secs(2));
    let text = error.to_string();
    assert!(text.contains("retry budget"), "{text}");
    assert!(text.contains("too_many_requests"), "{text}");
}

#[tokio::test]
async fn error_message_carries_digitalocean_id_message_and_request_id() {
    let (url, state) = start(Fake::new());
    let driver = driver(&url);
    driver.target_size().await.expect("resolves");
    state
        .lock()
        .expect("state")
        .scripted
        .push_back(Reply::error(
            403,
            "forbidden",
            "You do not have access for the attempted action.",
            "4d9d8375-3c56-4925-a3e7-eb137fed17e9",
        ));
    let error = driver.target_size().await.expect_err("403");
    assert!(matches!(error, ProviderError::Api { .. }), "{error:?}");
    let text = error.to_string();
    for part in [
        "get node pool",
        "HTTP 403",
        "forbidden",
        "You do not have access for the attempted action.",
        "request_id: 4d9d8375-3c56-4925-a3e7-eb137fed17e9",
    ] {
        assert!(text.contains(part), "{part} missing from {text}");
    }
}

#[tokio::test]
async fn token_is_sent_only_as_a_bearer_header() {
    let (url, state) = start(Fake::new());
    let driver = driver(&url);
    driver.grow_to(4).await.expect("grows");
    driver
        .delete_nodes(&[node_ref("game-servers-x1", None, None)])
        .await;
    let seen = requests(&state);
    assert!(seen.len() >= 6);
    for request in seen {
        assert_eq!(
            request.header("authorization"),
            Some(format!("Bearer {TOKEN}").as_str())
        );
        assert!(!request.path.contains(TOKEN) && !request.raw_query.contains(TOKEN));
        assert!(!request.body.contains(TOKEN));
        let others = request
            .headers
            .iter()
            .filter(|(k, _)| !k.eq_ignore_ascii_case("authorization"));
        for (name, value) in others {
            assert!(!value.contains(TOKEN), "token in header {name}");
        }
    }
}

/// A tracing writer into a shared buffer.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        if let Ok(mut buffer) = self.0.lock() {
            buffer.extend_from_slice(data);
        }
        Ok(data.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test]
async fn token_never_appears_in_debug_errors_or_logs() {
    let logs = Captured::default();
    let writer = logs.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_writer(move || writer.clone())
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);

    let (url, state) = start(Fake::new());
    let driver = driver(&url);
    let mut texts = vec![format!("{driver:?}"), format!("{driver:#?}")];
    let mut check = |error: ProviderError| {
        texts.push(error.to_string());
        texts.push(format!("{error:?}"));
    };

    // Api, with a server that echoes the token back in its error body.
    driver.target_size().await.expect("resolves");
    state
        .lock()
        .expect("state")
        .scripted
        .push_back(Reply::error(
            403,
            "forbidden",
            &format!("token Bearer {TOKEN} lacks kubernetes:update"),
            "req-echo",
        ));
    check(driver.target_size().await.expect_err("403"));
    // Api after retries (500 echoing the token, non-JSON).
    state
        .lock()
        .expect("state")
        .scripted
        .extend((0..10).map(|_| Reply {
            status: 500,
            headers: Vec::new(),
            body: format!("<html>Authorization: Bearer {TOKEN}</html>"),
            delay: Duration::ZERO,
        }));
    check(driver.target_size().await.expect_err("500"));
    state.lock().expect("state").scripted.clear();
    // Refused (shrink) and UnknownNode.
    check(driver.grow_to(1).await.expect_err("refused"));
    for result in driver.delete_nodes(&[node_ref("ghost", None, None)]).await {
        check(result.expect_err("unknown"));
    }
    // Refused (autoscaled pool).
    state.lock().expect("state").pools[1].auto_scale = true;
    check(driver.target_size().await.expect_err("autoscaled"));
    // Config: unknown names, bad URL, missing token.
    let other = DigitalOcean::new(&url, SecretToken::new(TOKEN), "nope", POOL, fast_options())
        .expect("valid");
    check(other.target_size().await.expect_err("unknown cluster"));
    check(
        DigitalOcean::new(
            "ftp://example.com",
            SecretToken::new(TOKEN),
            CLUSTER,
            POOL,
            fast_options(),
        )
        .expect_err("bad scheme"),
    );
    check(
        DigitalOcean::new(
            "https://example.com",
            SecretToken::new(format!("{TOKEN}\nX")),
            CLUSTER,
            POOL,
            fast_options(),
        )
        .expect_err("bad header value"),
    );
    // Transport: nothing listening.
    let closed = TcpListener::bind("127.0.0.1:0").expect("bind");
    let dead = format!("http://{}", closed.local_addr().expect("addr"));
    drop(closed);
    check(
        driver_with(
            &dead,
            DigitalOceanOptions {
                max_attempts: 1,
                ..fast_options()
            },
        )
        .target_size()
        .await
        .expect_err("transport"),
    );

    let logged = String::from_utf8_lossy(&logs.0.lock().expect("logs")).to_string();
    assert!(
        logged.contains("digitalocean_api"),
        "spans were logged: {logged}"
    );
    texts.push(logged);
    for text in &texts {
        assert!(!text.contains(TOKEN), "token leaked in: {text}");
        assert!(
            !text.contains("SECRETTOKEN"),
            "token part leaked in: {text}"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Construction and pure helpers.

#[test]
fn build_requires_a_token() {
    let Err(error) = build_from(None, CLUSTER, POOL, None) else {
        panic!("built without a token");
    };
    assert!(matches!(error, ProviderError::Config { .. }), "{error:?}");
    assert!(error.to_string().contains("cloud-provider-token"));
    assert!(build_from(Some(&SecretToken::new(TOKEN)), CLUSTER, POOL, None).is_ok());
}

#[test]
fn plain_http_is_refused_except_on_localhost() {
    let token = || SecretToken::new(TOKEN);
    let error = DigitalOcean::new(
        "http://api.digitalocean.com",
        token(),
        CLUSTER,
        POOL,
        fast_options(),
    )
    .expect_err("clear text");
    assert!(error.to_string().contains("https"), "{error}");
    for ok in [
        "https://api.digitalocean.com",
        "http://127.0.0.1:8080",
        "http://localhost:1/",
        "http://[::1]:9",
    ] {
        assert!(
            DigitalOcean::new(ok, token(), CLUSTER, POOL, fast_options()).is_ok(),
            "{ok}"
        );
    }
    assert!(DigitalOcean::new(
        "https://user:pw@example.com",
        token(),
        CLUSTER,
        POOL,
        fast_options()
    )
    .is_err());
}

#[test]
fn the_registry_knows_digitalocean() {
    let spec = crate::provider::lookup("digitalocean").expect("registered");
    assert!(spec.needs_token);
}

#[test]
fn rate_limit_wait_honours_retry_after_then_ratelimit_reset() {
    let now = UNIX_EPOCH + Duration::from_secs(1_444_931_800);
    let mut headers = HeaderMap::new();
    assert_eq!(rate_limit_wait(&headers, now), None);
    headers.insert("ratelimit-reset", HeaderValue::from_static("1444931833"));
    assert_eq!(
        rate_limit_wait(&headers, now),
        Some(Duration::from_secs(33))
    );
    headers.insert("retry-after", HeaderValue::from_static("7"));
    assert_eq!(rate_limit_wait(&headers, now), Some(Duration::from_secs(7)));
    let mut past = HeaderMap::new();
    past.insert("ratelimit-reset", HeaderValue::from_static("1444931000"));
    assert_eq!(rate_limit_wait(&past, now), Some(Duration::ZERO));
}

#[test]
fn backoff_grows_exponentially_with_jitter_and_a_cap() {
    let options = DigitalOceanOptions {
        initial_backoff: Duration::from_millis(100),
        max_backoff: Duration::from_millis(1000),
        ..DigitalOceanOptions::default()
    };
    for _ in 0..50 {
        let first = retry_wait(&options, 1, None);
        assert!(
            first >= Duration::from_millis(50) && first <= Duration::from_millis(100),
            "{first:?}"
        );
        let third = retry_wait(&options, 3, None);
        assert!(
            third >= Duration::from_millis(200) && third <= Duration::from_millis(400),
            "{third:?}"
        );
        let late = retry_wait(&options, 40, None);
        assert!(
            late >= Duration::from_millis(500) && late <= Duration::from_millis(1000),
            "{late:?}"
        );
        let hinted = retry_wait(&options, 1, Some(Duration::from_secs(5)));
        assert!(
            hinted >= Duration::from_secs(5) && hinted <= Duration::from_millis(5100),
            "{hinted:?}"
        );
    }
}

#[test]
fn next_link_yields_its_page_numbers() {
    assert_eq!(
        parse_next_link("https://api.digitalocean.com/v2/kubernetes/clusters?page=3&per_page=2"),
        Some((3, Some(2)))
    );
    assert_eq!(
        parse_next_link("/v2/kubernetes/clusters?page=2"),
        Some((2, None))
    );
    assert_eq!(parse_next_link("https://api.digitalocean.com/v2/x"), None);
}
