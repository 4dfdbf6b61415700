//! The HTTP server: one task per connection (hyper, HTTP/1.1 with keep-alive), each request
//! validated against the description, then faulted or applied, answered, checked against the
//! documented responses and logged.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http::{HeaderValue, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use serde_json::{json, Value};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::{JoinHandle, JoinSet};

use crate::kube_side::{KubeSide, NodeObject};
use crate::spec::{Auth, Spec, ValidRequest};
use crate::state::{ApiError, Effect, NodeAddr, NodeState, Rng, State};
use crate::{
    lock, Chaos, FakeError, FakeOptions, Fault, LoggedRequest, Operation, PoolSpec, Target,
};

/// Largest request body read.
const MAX_BODY: usize = 1 << 20;
/// The documented rate limit per hour.
const RATE_LIMIT: u32 = 5000;
const RATE_WINDOW_SECS: u64 = 3600;

pub(crate) struct Faults {
    pub queued: Vec<(Target, Fault, u32)>,
    pub chaos: Option<Chaos>,
    pub rng: Rng,
}

impl Faults {
    fn next(&mut self, op: Operation) -> Option<Fault> {
        if let Some(i) = self
            .queued
            .iter()
            .position(|(t, _, n)| *n > 0 && t.matches(op))
        {
            let entry = &mut self.queued[i];
            entry.2 -= 1;
            let fault = entry.1;
            if entry.2 == 0 {
                self.queued.remove(i);
            }
            return Some(fault);
        }
        let chaos = self.chaos.as_ref()?;
        if chaos.faults.is_empty() || self.rng.fraction() >= chaos.probability {
            return None;
        }
        let pick = (self.rng.next_u64() % chaos.faults.len() as u64) as usize;
        chaos.faults.get(pick).copied()
    }
}

struct RateWindow {
    start: u64,
    used: u32,
}

pub(crate) struct Shared {
    pub spec: Spec,
    pub auth: Auth,
    boot_delay: Duration,
    delete_delay: Duration,
    max_per_page: Option<u32>,
    pub state: Mutex<State>,
    pub faults: Mutex<Faults>,
    pub log: Mutex<Vec<LoggedRequest>>,
    pub violations: Mutex<Vec<String>>,
    /// Pool node ids whose every DELETE fails with a 500 (a node the cloud cannot delete).
    pub undeletable: Mutex<std::collections::BTreeSet<String>>,
    /// How many of the next nodes to boot never register as a Node (nor become running).
    pub never_register: Mutex<u32>,
    pub kube: Option<KubeSide>,
    pub cleanup_on_shutdown: bool,
    base_url: String,
    stop: watch::Receiver<bool>,
    rate: Mutex<RateWindow>,
    seq: AtomicU64,
    started: std::time::Instant,
}

/// The error that makes hyper close a connection without answering.
#[derive(Debug)]
struct Dropped;

impl fmt::Display for Dropped {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("connection dropped on purpose (injected fault)")
    }
}

impl std::error::Error for Dropped {}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or_default()
}

pub(crate) async fn start(
    options: FakeOptions,
) -> Result<(Arc<Shared>, watch::Sender<bool>, JoinHandle<()>, String), FakeError> {
    let spec = Spec::load(&options.spec_path).map_err(FakeError::Spec)?;
    for op in Operation::ALL {
        if spec.operation(op.operation_id()).is_none() {
            return Err(FakeError::Spec(format!(
                "{}: it has no operation {:?}, which the fake implements",
                options.spec_path.display(),
                op.operation_id()
            )));
        }
    }
    let listener = TcpListener::bind(options.listen)
        .await
        .map_err(|source| FakeError::Listen {
            addr: options.listen,
            source,
        })?;
    let local = listener.local_addr().map_err(|source| FakeError::Listen {
        addr: options.listen,
        source,
    })?;
    let shown = if local.ip().is_unspecified() {
        std::net::SocketAddr::from(([127, 0, 0, 1], local.port()))
    } else {
        local
    };
    let base_url = format!("http://{shown}");
    let seed = options.seed.unwrap_or_else(|| {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(1)
            ^ u64::from(std::process::id())
    });
    let kube = options.kube.clone().map(|client| {
        KubeSide::new(
            client,
            options.server_pod_selector.clone(),
            options.node_labels.clone(),
            options.sizes.clone(),
        )
    });
    let (stop_tx, stop_rx) = watch::channel(false);
    let shared = Arc::new(Shared {
        spec,
        auth: Auth {
            token: options.token.clone(),
            scopes: options.token_scopes.clone(),
        },
        boot_delay: options.boot_delay,
        delete_delay: options.delete_delay,
        max_per_page: options.max_per_page,
        state: Mutex::new(State::new(seed, options.region.clone())),
        faults: Mutex::new(Faults {
            queued: Vec::new(),
            chaos: None,
            rng: Rng::new(0),
        }),
        log: Mutex::new(Vec::new()),
        violations: Mutex::new(Vec::new()),
        undeletable: Mutex::new(std::collections::BTreeSet::new()),
        never_register: Mutex::new(0),
        kube,
        cleanup_on_shutdown: options.cleanup_on_shutdown,
        base_url: base_url.clone(),
        stop: stop_rx.clone(),
        rate: Mutex::new(RateWindow {
            start: unix_now(),
            used: 0,
        }),
        seq: AtomicU64::new(0),
        started: std::time::Instant::now(),
    });
    let server = tokio::spawn(accept_loop(listener, Arc::clone(&shared), stop_rx));
    Ok((shared, stop_tx, server, base_url))
}

async fn accept_loop(listener: TcpListener, shared: Arc<Shared>, mut stop: watch::Receiver<bool>) {
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            _ = stop.changed() => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    let shared = Arc::clone(&shared);
                    connections.spawn(async move {
                        let service = service_fn(move |req| handle(Arc::clone(&shared), req));
                        // An error here is a client gone or a connection dropped on purpose.
                        let _ = http1::Builder::new()
                            .serve_connection(TokioIo::new(stream), service)
                            .await;
                    });
                }
                Err(e) => {
                    tracing::warn!(error = %e, "doks-fake: accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
    connections.abort_all();
}

/// Sleeps for `d`; false if the fake stopped meanwhile.
async fn sleep_or_stop(shared: &Shared, d: Duration) -> bool {
    let mut stop = shared.stop.clone();
    if *stop.borrow() {
        return false;
    }
    tokio::select! {
        _ = tokio::time::sleep(d) => true,
        _ = stop.changed() => false,
    }
}

/// An answer before rendering.
struct Answer {
    status: u16,
    body: Option<Value>,
    headers: Vec<(&'static str, String)>,
}

impl Answer {
    fn json(status: u16, body: Value) -> Self {
        Answer {
            status,
            body: Some(body),
            headers: Vec::new(),
        }
    }
    fn empty(status: u16) -> Self {
        Answer {
            status,
            body: None,
            headers: Vec::new(),
        }
    }
}

impl Shared {
    fn error(&self, status: u16, id: &str, message: &str) -> Answer {
        let request_id = lock(&self.state).rng.uuid();
        Answer::json(
            status,
            json!({"id": id, "message": message, "request_id": request_id}),
        )
    }

    fn api_error(&self, e: ApiError) -> Answer {
        self.error(e.status, e.id, &e.message)
    }

    /// The rate-limit headers of an answer; `exhausted` for a 429 whose reset is that far.
    fn rate_headers(&self, exhausted: Option<Duration>) -> Vec<(&'static str, String)> {
        let now = unix_now();
        let mut rate = lock(&self.rate);
        if now.saturating_sub(rate.start) >= RATE_WINDOW_SECS {
            rate.start = now;
            rate.used = 0;
        }
        rate.used = rate.used.saturating_add(1);
        let (remaining, reset) = match exhausted {
            Some(d) => {
                let secs = d.as_secs() + u64::from(d.subsec_nanos() > 0);
                (0, now + secs)
            }
            None => (
                RATE_LIMIT.saturating_sub(rate.used),
                rate.start + RATE_WINDOW_SECS,
            ),
        };
        vec![
            ("ratelimit-limit", RATE_LIMIT.to_string()),
            ("ratelimit-remaining", remaining.to_string()),
            ("ratelimit-reset", reset.to_string()),
        ]
    }

    fn render(&self, answer: Answer, exhausted: Option<Duration>) -> Response<Full<Bytes>> {
        let body = answer
            .body
            .as_ref()
            .map(|v| Bytes::from(v.to_string()))
            .unwrap_or_default();
        let mut response = Response::new(Full::new(body));
        *response.status_mut() =
            StatusCode::from_u16(answer.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let headers = response.headers_mut();
        if answer.body.is_some() {
            headers.insert(
                http::header::CONTENT_TYPE,
                HeaderValue::from_static("application/json; charset=utf-8"),
            );
        }
        for (name, value) in self
            .rate_headers(exhausted)
            .into_iter()
            .chain(answer.headers)
        {
            if let Ok(v) = HeaderValue::from_str(&value) {
                headers.insert(name, v);
            }
        }
        response
    }

    fn check_answer(&self, op: Operation, response: &Response<Full<Bytes>>, body: &[u8]) {
        let Some(spec_op) = self.spec.operation(op.operation_id()) else {
            return;
        };
        let problems = self.spec.check_response(
            spec_op,
            response.status().as_u16(),
            response.headers(),
            body,
        );
        if !problems.is_empty() {
            let text = format!(
                "{} answer {}: {}",
                op.operation_id(),
                response.status().as_u16(),
                problems.join("; ")
            );
            tracing::error!(%text, "doks-fake: an answer does not match the description");
            lock(&self.violations).push(text);
        }
    }

    fn log(&self, entry: LoggedRequest) {
        tracing::debug!(request = %entry, "doks-fake");
        let mut log = lock(&self.log);
        if log.len() >= crate::MAX_LOGGED_REQUESTS {
            let excess = log.len() + 1 - crate::MAX_LOGGED_REQUESTS;
            log.drain(..excess.max(crate::MAX_LOGGED_REQUESTS / 10));
        }
        log.push(entry);
    }
}

async fn handle(
    shared: Arc<Shared>,
    req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Dropped> {
    let seq = shared.seq.fetch_add(1, Ordering::Relaxed) + 1;
    let method = req.method().clone();
    let path = req.uri().path().to_owned();
    let query = req.uri().query().map(str::to_owned);
    let (parts, body) = req.into_parts();
    let mut entry = LoggedRequest {
        seq,
        at: shared.started.elapsed(),
        method: method.to_string(),
        path: path.clone(),
        query: query.clone(),
        operation: None,
        status: None,
        rejection: None,
        fault: None,
        applied: false,
        body: None,
    };
    let bytes = match Limited::new(body, MAX_BODY).collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(e) => {
            let message = format!("cannot read the request body (at most {MAX_BODY} bytes): {e}");
            let answer = shared.error(413, "request_entity_too_large", &message);
            entry.status = Some(413);
            entry.rejection = Some(message);
            shared.log(entry);
            return Ok(shared.render(answer, None));
        }
    };

    let valid = match shared.spec.check_request(
        &method,
        &path,
        query.as_deref(),
        &parts.headers,
        &bytes,
        &shared.auth,
    ) {
        Ok(valid) => valid,
        Err(rejection) => {
            let mut answer = shared.error(rejection.status, rejection.id, &rejection.message);
            if let Some(allow) = rejection.allow.clone() {
                answer.headers.push(("allow", allow));
            }
            entry.status = Some(rejection.status);
            entry.rejection = Some(rejection.message);
            tracing::info!(request = %entry, "doks-fake: rejected a request off the contract");
            shared.log(entry);
            return Ok(shared.render(answer, None));
        }
    };
    let Some(op) = Operation::from_operation_id(&valid.operation.id) else {
        let message = format!(
            "operation {} is in the description but the fake does not implement it",
            valid.operation.id
        );
        let answer = shared.error(501, "not_implemented", &message);
        entry.status = Some(501);
        entry.rejection = Some(message);
        shared.log(entry);
        return Ok(shared.render(answer, None));
    };
    entry.operation = Some(op);
    entry.body = valid.body.clone();

    let mut fault = lock(&shared.faults).next(op);
    if op == Operation::DeleteNode {
        let node_id = path.rsplit('/').next().unwrap_or_default();
        if lock(&shared.undeletable).contains(node_id) {
            fault = Some(Fault::ServerError);
        }
    }
    entry.fault = fault;
    let early = match fault {
        Some(Fault::RateLimited { reset_in }) => Some((
            shared.error(429, "too_many_requests", "API Rate limit exceeded."),
            Some(reset_in),
        )),
        Some(Fault::ServerError) => Some((
            shared.error(
                500,
                "server_error",
                "Server was unable to give you a response. (doks-fake: injected)",
            ),
            None,
        )),
        Some(Fault::DropConnection) => {
            shared.log(entry);
            return Err(Dropped);
        }
        _ => None,
    };
    if let Some((answer, exhausted)) = early {
        let body = answer
            .body
            .as_ref()
            .map(|v| v.to_string())
            .unwrap_or_default();
        let response = shared.render(answer, exhausted);
        shared.check_answer(op, &response, body.as_bytes());
        entry.status = Some(response.status().as_u16());
        shared.log(entry);
        return Ok(response);
    }

    let answer = apply(&shared, op, &valid).await;
    entry.applied = answer.status < 300;
    let body = answer
        .body
        .as_ref()
        .map(|v| v.to_string())
        .unwrap_or_default();
    let response = shared.render(answer, None);
    shared.check_answer(op, &response, body.as_bytes());
    match fault {
        Some(Fault::DropAfterApply) => {
            shared.log(entry);
            Err(Dropped)
        }
        Some(Fault::Delay(d)) => {
            entry.status = Some(response.status().as_u16());
            shared.log(entry);
            sleep_or_stop(&shared, d).await;
            Ok(response)
        }
        _ => {
            entry.status = Some(response.status().as_u16());
            shared.log(entry);
            Ok(response)
        }
    }
}

fn text_param<'a>(valid: &'a ValidRequest<'_>, name: &str) -> &'a str {
    valid.path.get(name).and_then(Value::as_str).unwrap_or("")
}

fn int_query(valid: &ValidRequest<'_>, name: &str) -> Option<i64> {
    valid.query.get(name).and_then(Value::as_i64)
}

async fn apply(shared: &Arc<Shared>, op: Operation, valid: &ValidRequest<'_>) -> Answer {
    let cluster_id = text_param(valid, "cluster_id");
    let pool_id = text_param(valid, "node_pool_id");
    match op {
        Operation::ListClusters => list_clusters(shared, valid),
        Operation::GetCluster => {
            let st = lock(&shared.state);
            match st.cluster(cluster_id) {
                Ok(c) => Answer::json(
                    200,
                    json!({"kubernetes_cluster": crate::state::cluster_json(c)}),
                ),
                Err(e) => {
                    drop(st);
                    shared.api_error(e)
                }
            }
        }
        Operation::ListNodePools => {
            let st = lock(&shared.state);
            match st.cluster(cluster_id) {
                Ok(c) => Answer::json(
                    200,
                    json!({"node_pools": c.pools.iter().map(crate::state::pool_json).collect::<Vec<_>>()}),
                ),
                Err(e) => {
                    drop(st);
                    shared.api_error(e)
                }
            }
        }
        Operation::GetNodePool => {
            let st = lock(&shared.state);
            match st.pool(cluster_id, pool_id) {
                Ok(p) => Answer::json(200, json!({"node_pool": crate::state::pool_json(p)})),
                Err(e) => {
                    drop(st);
                    shared.api_error(e)
                }
            }
        }
        Operation::UpdateNodePool => {
            let body = valid.body.clone().unwrap_or(Value::Null);
            let result = lock(&shared.state).update_pool(cluster_id, pool_id, &body);
            match result {
                Ok((answer, effects)) => {
                    run_effects(shared, effects).await;
                    Answer::json(202, answer)
                }
                Err(e) => shared.api_error(e),
            }
        }
        Operation::DeleteNode => {
            let node_id = text_param(valid, "node_id");
            let skip_drain = int_query(valid, "skip_drain") == Some(1);
            let replace = int_query(valid, "replace") == Some(1);
            let drains = !shared.delete_delay.is_zero();
            let result = lock(&shared.state)
                .delete_node(cluster_id, pool_id, node_id, skip_drain, replace, drains);
            match result {
                Ok(effects) => {
                    run_effects(shared, effects).await;
                    Answer::empty(202)
                }
                Err(e) => shared.api_error(e),
            }
        }
    }
}

fn list_clusters(shared: &Shared, valid: &ValidRequest<'_>) -> Answer {
    let page = int_query(valid, "page").unwrap_or(1).max(1) as usize;
    let mut per_page = int_query(valid, "per_page").unwrap_or(20).max(1) as usize;
    if let Some(cap) = shared.max_per_page {
        per_page = per_page.min(cap.max(1) as usize);
    }
    let st = lock(&shared.state);
    let total = st.clusters.len();
    let last = total.div_ceil(per_page).max(1);
    let items: Vec<Value> = st
        .clusters
        .iter()
        .skip((page - 1).saturating_mul(per_page))
        .take(per_page)
        .map(crate::state::cluster_json)
        .collect();
    let link = |n: usize| {
        format!(
            "{}/v2/kubernetes/clusters?page={n}&per_page={per_page}",
            shared.base_url
        )
    };
    let mut pages = serde_json::Map::new();
    if page > 1 {
        pages.insert("first".into(), Value::String(link(1)));
        pages.insert("prev".into(), Value::String(link((page - 1).min(last))));
    }
    if page < last {
        pages.insert("next".into(), Value::String(link(page + 1)));
        pages.insert("last".into(), Value::String(link(last)));
    }
    Answer::json(
        200,
        json!({
            "kubernetes_clusters": items,
            "links": {"pages": pages},
            "meta": {"total": total},
        }),
    )
}

/// Starts what an operation left to do. With no deletion delay, removals are awaited so that
/// the answer comes after the Node is gone; they run in their own tasks, so a client hanging
/// up cannot cut one short.
pub(crate) async fn run_effects(shared: &Arc<Shared>, effects: Vec<Effect>) {
    let mut removals = Vec::new();
    for effect in effects {
        match effect {
            Effect::Boot(addr) => {
                tokio::spawn(boot(Arc::clone(shared), addr));
            }
            Effect::Remove { addr, name } => {
                removals.push(tokio::spawn(remove(Arc::clone(shared), addr, name)));
            }
        }
    }
    if shared.delete_delay.is_zero() {
        for r in removals {
            let _ = r.await;
        }
    }
}

fn node_object(st: &State, addr: &NodeAddr) -> Option<NodeObject> {
    let cluster = st.cluster(&addr.cluster).ok()?;
    let pool = st.pool(&addr.cluster, &addr.pool).ok()?;
    let node = pool.nodes.iter().find(|n| n.id == addr.node)?;
    Some(NodeObject {
        name: node.name.clone(),
        node_id: node.id.clone(),
        droplet_id: node.droplet_id.clone(),
        pool_id: pool.id.clone(),
        pool_name: pool.name.clone(),
        size: pool.size.clone(),
        region: cluster.region.clone(),
        pool_labels: pool.labels.clone().unwrap_or_default(),
        taints: pool.taints.clone(),
    })
}

/// provisioning -> (Node registered) -> running, after the boot delay.
async fn boot(shared: Arc<Shared>, addr: NodeAddr) {
    if !sleep_or_stop(&shared, shared.boot_delay).await {
        return;
    }
    {
        let mut never = lock(&shared.never_register);
        if *never > 0 {
            // A node that never comes up: it stays provisioning until deleted.
            *never -= 1;
            return;
        }
    }
    if let Some(kube) = &shared.kube {
        let _serial = kube.serial.lock().await;
        let object = {
            let st = lock(&shared.state);
            match st.node(&addr) {
                Some(n) if n.state == NodeState::Provisioning => node_object(&st, &addr),
                _ => None,
            }
        };
        let Some(object) = object else { return };
        if !kube.register(&object).await {
            return;
        }
    }
    let mut st = lock(&shared.state);
    if st
        .node(&addr)
        .is_some_and(|n| n.state == NodeState::Provisioning)
    {
        st.set_state(&addr, NodeState::Running);
    }
}

/// (draining ->) deleting -> gone: lost servers counted, Node deleted, node forgotten.
async fn remove(shared: Arc<Shared>, addr: NodeAddr, name: String) {
    if !shared.delete_delay.is_zero() {
        if !sleep_or_stop(&shared, shared.delete_delay / 2).await {
            return;
        }
        lock(&shared.state).set_state(&addr, NodeState::Deleting);
        if !sleep_or_stop(&shared, shared.delete_delay / 2).await {
            return;
        }
    }
    if let Some(kube) = &shared.kube {
        let _serial = kube.serial.lock().await;
        kube.remove(&name).await;
    }
    lock(&shared.state).forget_node(&addr);
}

pub(crate) async fn add_pool(
    shared: &Arc<Shared>,
    cluster_id: &str,
    spec: PoolSpec,
) -> Result<String, FakeError> {
    if let Some(kube) = &shared.kube {
        if !kube.knows_size(&spec.size) {
            return Err(FakeError::Invalid(format!(
                "size {:?} has no allocatable figures in FakeOptions::sizes",
                spec.size
            )));
        }
    }
    let (pool_id, node_ids) = lock(&shared.state)
        .add_pool(cluster_id, &spec)
        .map_err(|e| FakeError::Invalid(e.message))?;
    if let Some(kube) = &shared.kube {
        let _serial = kube.serial.lock().await;
        for node in node_ids {
            let addr = NodeAddr {
                cluster: cluster_id.to_owned(),
                pool: pool_id.clone(),
                node,
            };
            let object = node_object(&lock(&shared.state), &addr);
            if let Some(object) = object {
                if !kube.register(&object).await {
                    return Err(FakeError::Invalid(format!(
                        "cannot register Node {}: {}",
                        object.name,
                        kube.errors().last().cloned().unwrap_or_default()
                    )));
                }
            }
        }
    }
    Ok(pool_id)
}
