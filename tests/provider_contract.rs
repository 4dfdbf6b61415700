//! Contract tests: the real DigitalOcean driver against the DOKS fake, which checks every
//! request against DigitalOcean's own OpenAPI description
//! (`../shared/digitalocean/doks-node-pools.openapi.yaml`, loaded at run time), and hand-made
//! bad requests showing that the fake's validation bites. Each test is named after the rule it
//! protects. No control plane needed.

use std::collections::BTreeSet;
use std::time::Duration;

use doks_fake::{FakeDoks, FakeOptions, Operation};
use kubescaler::provider::digitalocean::DigitalOceanOptions;
use kubescaler::provider::{NodePoolProvider, ProviderError};
use serde_json::{json, Value};

mod dofake;
use dofake::{
    driver, fast_options, games_cluster, node_ref, of, show, start_fake, wait_for, Identify, TOKEN,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_request_the_driver_makes_passes_the_fakes_validation() {
    let Some(fake) = start_fake(
        "every_request_the_driver_makes_passes_the_fakes_validation",
        |_| {},
    )
    .await
    else {
        return;
    };
    // Five clusters and two per page: resolution must follow the pagination links.
    let (cluster, pool) = games_cluster(&fake, 4, 1).await;
    let options = DigitalOceanOptions {
        per_page: 2,
        ..fast_options()
    };
    let driver = driver(&fake, options);

    let ids = driver
        .resolve()
        .await
        .unwrap_or_else(|e| panic!("resolve: {e}"));
    assert_eq!(
        (ids.cluster_id.as_str(), ids.node_pool_id.as_str()),
        (cluster.as_str(), pool.as_str())
    );
    assert_eq!(
        driver.target_size().await.unwrap_or_else(|e| panic!("{e}")),
        1
    );
    driver
        .grow_to(4)
        .await
        .unwrap_or_else(|e| panic!("grow_to: {e}"));
    wait_for("4 running nodes", Duration::from_secs(10), || {
        fake.pool(&cluster, &pool)
            .is_some_and(|p| p.nodes_in("running") == 4)
    })
    .await;
    let nodes = driver
        .pool()
        .await
        .unwrap_or_else(|e| panic!("pool: {e}"))
        .nodes;
    assert_eq!(nodes.len(), 4);
    assert!(nodes.iter().all(|n| n.state == "running"), "{nodes:?}");

    // Delete three, each identified the way a Kubernetes node may be.
    let view = fake.pool(&cluster, &pool).unwrap_or_else(|| panic!("pool"));
    let refs = vec![
        node_ref(&view.nodes[1], Identify::Label),
        node_ref(&view.nodes[2], Identify::ProviderId),
        node_ref(&view.nodes[3], Identify::Name),
    ];
    let results = driver.delete_nodes(&refs).await;
    assert!(results.iter().all(Result::is_ok), "{results:?}");
    assert_eq!(
        driver.target_size().await.unwrap_or_else(|e| panic!("{e}")),
        1
    );
    let left = fake.pool(&cluster, &pool).unwrap_or_else(|| panic!("pool"));
    assert_eq!(left.nodes.len(), 1);
    assert_eq!(
        left.nodes[0].id, view.nodes[0].id,
        "the node not asked for stays"
    );

    let log = fake.requests();
    let off: Vec<_> = log
        .iter()
        .filter(|r| !r.passed_validation() || r.status.is_none_or(|s| s >= 300))
        .collect();
    assert!(
        off.is_empty(),
        "requests off the contract or failed:\n{}",
        show(&log)
    );
    let used: BTreeSet<Operation> = log.iter().filter_map(|r| r.operation).collect();
    for op in [
        Operation::ListClusters,
        Operation::ListNodePools,
        Operation::GetNodePool,
        Operation::UpdateNodePool,
        Operation::DeleteNode,
    ] {
        assert!(
            used.contains(&op),
            "the driver never used {op:?}:\n{}",
            show(&log)
        );
    }
    let pages: Vec<Option<String>> = of(&log, Operation::ListClusters)
        .into_iter()
        .map(|r| r.query)
        .collect();
    assert_eq!(
        pages,
        vec![
            Some("page=1&per_page=2".to_owned()),
            Some("page=2&per_page=2".to_owned()),
            Some("page=3&per_page=2".to_owned()),
        ],
        "pagination"
    );
    let puts = of(&log, Operation::UpdateNodePool);
    assert_eq!(puts.len(), 1);
    assert_eq!(
        puts[0].body,
        Some(json!({"name": "game-servers", "count": 4})),
        "the resize body is exactly the required name and the absolute count"
    );
    for delete in of(&log, Operation::DeleteNode) {
        assert_eq!(
            delete.query.as_deref(),
            Some("skip_drain=0&replace=0"),
            "{delete}"
        );
    }
    assert!(
        fake.response_violations().is_empty(),
        "{:?}",
        fake.response_violations()
    );
    fake.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn driver_follows_pagination_when_the_api_caps_the_page_size() {
    // The API returns fewer items than per_page asks: the driver must follow `next` links.
    let Some(fake) = start_fake(
        "driver_follows_pagination_when_the_api_caps_the_page_size",
        |o| o.max_per_page = Some(1),
    )
    .await
    else {
        return;
    };
    let (cluster, _) = games_cluster(&fake, 3, 1).await;
    let driver = driver(&fake, fast_options());
    let ids = driver
        .resolve()
        .await
        .unwrap_or_else(|e| panic!("resolve: {e}"));
    assert_eq!(ids.cluster_id, cluster);
    let lists = of(&fake.requests(), Operation::ListClusters);
    assert_eq!(lists.len(), 4, "{}", show(&fake.requests()));
    assert!(lists.iter().all(|r| r.passed_validation()));
    fake.shutdown().await;
}

/// Sends one raw request.
async fn raw(
    fake: &FakeDoks,
    method: &str,
    path: &str,
    auth: Option<&str>,
    content_type: Option<&str>,
    body: Option<String>,
) -> (u16, Value) {
    let client = reqwest::Client::new();
    let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap_or_else(|e| panic!("{e}"));
    let mut request = client.request(method, format!("{}{path}", fake.base_url()));
    if let Some(auth) = auth {
        request = request.header("authorization", auth);
    }
    if let Some(ct) = content_type {
        request = request.header("content-type", ct);
    }
    if let Some(body) = body {
        request = request.body(body);
    }
    let response = request.send().await.unwrap_or_else(|e| panic!("send: {e}"));
    let status = response.status().as_u16();
    let text = response.text().await.unwrap_or_default();
    let value = serde_json::from_str(&text).unwrap_or(Value::Null);
    (status, value)
}

/// One hand-made request off the contract and how the fake must refuse it.
struct Case {
    what: &'static str,
    method: &'static str,
    path: String,
    /// `None`: the valid bearer token.
    auth: Option<Option<String>>,
    content_type: Option<&'static str>,
    body: Option<String>,
    status: u16,
    reason: &'static str,
}

impl Case {
    fn new(
        what: &'static str,
        method: &'static str,
        path: impl Into<String>,
        status: u16,
        reason: &'static str,
    ) -> Case {
        Case {
            what,
            method,
            path: path.into(),
            auth: None,
            content_type: None,
            body: None,
            status,
            reason,
        }
    }
    fn auth(mut self, auth: Option<String>) -> Case {
        self.auth = Some(auth);
        self
    }
    fn content_type(mut self, ct: Option<&'static str>) -> Case {
        self.content_type = ct;
        self
    }
    fn body(mut self, body: Option<String>) -> Case {
        self.body = body;
        self
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fake_rejects_requests_off_the_contract_with_a_4xx_and_the_reason() {
    let Some(fake) = start_fake(
        "fake_rejects_requests_off_the_contract_with_a_4xx_and_the_reason",
        |_| {},
    )
    .await
    else {
        return;
    };
    let (c, p) = games_cluster(&fake, 0, 2).await;
    let node = fake.pool(&c, &p).unwrap_or_else(|| panic!("pool")).nodes[0]
        .id
        .clone();
    let bearer = format!("Bearer {TOKEN}");
    let pool_path = format!("/v2/kubernetes/clusters/{c}/node_pools/{p}");
    let node_path = format!("{pool_path}/nodes/{node}");
    let json_ct = Some("application/json");
    let ok_body = || Some(json!({"name": "game-servers", "count": 3}).to_string());

    let get = |what, path: String, status, reason| Case::new(what, "GET", path, status, reason);
    let delete =
        |what, path: String, status, reason| Case::new(what, "DELETE", path, status, reason);
    let put = |what, status, reason, body: Value| {
        Case::new(what, "PUT", pool_path.clone(), status, reason)
            .content_type(json_ct)
            .body(Some(body.to_string()))
    };
    let clusters = |query: &str| format!("/v2/kubernetes/clusters?{query}");
    let bad_taint = json!({
        "name": "game-servers", "count": 3,
        "taints": [{"key": "k", "value": "v", "effect": "Sometimes"}]
    });
    let cases = [
        Case::new(
            "wrong method",
            "POST",
            pool_path.clone(),
            405,
            "POST is not an operation",
        )
        .content_type(json_ct)
        .body(ok_body()),
        Case::new(
            "PATCH for PUT",
            "PATCH",
            pool_path.clone(),
            405,
            "allowed: GET, PUT",
        )
        .content_type(json_ct)
        .body(ok_body()),
        get(
            "unknown path",
            format!("/v2/kubernetes/clusters/{c}/nodes"),
            404,
            "no operation",
        ),
        get(
            "non-numeric per_page",
            clusters("per_page=abc"),
            400,
            "\"abc\" is not an integer",
        ),
        get(
            "per_page below its minimum",
            clusters("per_page=0"),
            400,
            "is not >= 1",
        ),
        get(
            "per_page above its maximum",
            clusters("per_page=201"),
            400,
            "is not <= 200",
        ),
        get(
            "unknown query parameter",
            clusters("name=games"),
            400,
            "\"name\" is not a parameter",
        ),
        get(
            "repeated query parameter",
            clusters("page=1&page=2"),
            400,
            "more than once",
        ),
        get(
            "page params where none are declared",
            format!("/v2/kubernetes/clusters/{c}/node_pools?page=1"),
            400,
            "declared: none",
        ),
        delete(
            "skip_drain not 0 or 1",
            format!("{node_path}?skip_drain=true"),
            400,
            "not an integer",
        ),
        delete(
            "replace out of range",
            format!("{node_path}?replace=2"),
            400,
            "is not <= 1",
        ),
        delete(
            "unknown delete flag",
            format!("{node_path}?force=1"),
            400,
            "\"force\" is not a",
        ),
        get(
            "cluster ID not a UUID",
            "/v2/kubernetes/clusters/games/node_pools".into(),
            400,
            "\"games\" is not a valid uuid",
        ),
        delete(
            "node ID not a UUID",
            format!("{pool_path}/nodes/adoring-newton-3niq"),
            400,
            "is not a valid uuid",
        ),
        put(
            "body without count",
            422,
            "required property \"count\" is missing",
            json!({"name": "game-servers"}),
        ),
        put(
            "body without name",
            422,
            "required property \"name\" is missing",
            json!({"count": 3}),
        ),
        put(
            "count as a string",
            422,
            "/count: expected integer, got string",
            json!({"name": "game-servers", "count": "3"}),
        ),
        put(
            "count as a fraction",
            422,
            "/count: expected integer, got number",
            json!({"name": "game-servers", "count": 2.5}),
        ),
        put(
            "name as a number",
            422,
            "/name: expected string",
            json!({"name": 7, "count": 3}),
        ),
        put(
            "read-only id sent",
            422,
            "/id: is read-only",
            json!({"id": p, "name": "game-servers", "count": 3}),
        ),
        put(
            "read-only nodes sent",
            422,
            "/nodes: is read-only",
            json!({"name": "game-servers", "count": 3, "nodes": []}),
        ),
        put(
            "taint effect off its enum",
            422,
            "/taints/0/effect: \"Sometimes\" is not one of",
            bad_taint,
        ),
        put(
            "body that is not an object",
            422,
            "expected object",
            json!([]),
        ),
        Case::new(
            "no body",
            "PUT",
            pool_path.clone(),
            400,
            "requires a request body",
        )
        .content_type(json_ct),
        Case::new(
            "body that is not JSON",
            "PUT",
            pool_path.clone(),
            400,
            "not valid JSON",
        )
        .content_type(json_ct)
        .body(Some("count=3".into())),
        Case::new(
            "body of another media type",
            "PUT",
            pool_path.clone(),
            415,
            "\"text/plain\"",
        )
        .content_type(Some("text/plain"))
        .body(ok_body()),
        get(
            "body on a GET",
            pool_path.clone(),
            400,
            "takes no request body",
        )
        .content_type(json_ct)
        .body(ok_body()),
        get(
            "no bearer token",
            pool_path.clone(),
            401,
            "Authorization: Bearer",
        )
        .auth(None),
        get("wrong bearer token", pool_path.clone(), 401, "not valid")
            .auth(Some("Bearer dop_v1_not_the_token".into())),
        get(
            "token without the Bearer scheme",
            pool_path.clone(),
            401,
            "Authorization: Bearer",
        )
        .auth(Some(TOKEN.into())),
        Case::new(
            "wrong token on a resize",
            "PUT",
            pool_path.clone(),
            401,
            "not valid",
        )
        .auth(Some("Bearer nope".into()))
        .content_type(json_ct)
        .body(ok_body()),
    ];
    let mut failures = Vec::new();
    for c in &cases {
        let auth = c.auth.clone().unwrap_or_else(|| Some(bearer.clone()));
        let (got, answer) = raw(
            &fake,
            c.method,
            &c.path,
            auth.as_deref(),
            c.content_type,
            c.body.clone(),
        )
        .await;
        let message = answer.get("message").and_then(Value::as_str).unwrap_or("");
        let id_ok = answer.get("id").and_then(Value::as_str).is_some()
            && answer.get("request_id").and_then(Value::as_str).is_some();
        if got != c.status || !message.contains(c.reason) || !id_ok {
            failures.push(format!(
                "{}: {} {} -> {got} {answer}; wanted {} with a message containing {:?}",
                c.what, c.method, c.path, c.status, c.reason
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));

    // Nothing was applied: the pool is as it was, and every request is logged as rejected.
    let view = fake.pool(&c, &p).unwrap_or_else(|| panic!("pool"));
    assert_eq!((view.count, view.nodes.len()), (2, 2));
    let log = fake.requests();
    assert_eq!(log.len(), cases.len());
    assert!(
        log.iter().all(|r| r.rejection.is_some() && !r.applied),
        "{}",
        show(&log)
    );

    // The same requests, made right, are accepted: the rejections were about the faults.
    let (status, _) = raw(&fake, "PUT", &pool_path, Some(&bearer), json_ct, ok_body()).await;
    assert_eq!(status, 202);
    let (status, _) = raw(
        &fake,
        "DELETE",
        &format!("{node_path}?skip_drain=1&replace=0"),
        Some(&bearer),
        None,
        None,
    )
    .await;
    assert_eq!(status, 202);
    let (status, _) = raw(
        &fake,
        "GET",
        "/v2/kubernetes/clusters?per_page=200&page=1",
        Some(&bearer),
        None,
        None,
    )
    .await;
    assert_eq!(status, 200);
    fake.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fake_answers_every_operation_as_the_description_documents() {
    let Some(fake) = start_fake(
        "fake_answers_every_operation_as_the_description_documents",
        |_| {},
    )
    .await
    else {
        return;
    };
    let (c, p) = games_cluster(&fake, 2, 2).await;
    let bearer = format!("Bearer {TOKEN}");
    let node = fake.pool(&c, &p).unwrap_or_else(|| panic!("pool")).nodes[0]
        .id
        .clone();
    let unknown = "00000000-0000-4000-8000-000000000000";
    let json_ct = Some("application/json");
    let resize = |count: u32| {
        Some(json!({"name": "game-servers", "count": count, "labels": {"role": "game-servers"}, "tags": ["web"], "taints": []}).to_string())
    };
    let requests: Vec<(&str, String, Option<String>, u16)> = vec![
        ("GET", "/v2/kubernetes/clusters".into(), None, 200),
        (
            "GET",
            "/v2/kubernetes/clusters?page=2&per_page=2".into(),
            None,
            200,
        ),
        (
            "GET",
            "/v2/kubernetes/clusters?page=9&per_page=2".into(),
            None,
            200,
        ),
        ("GET", format!("/v2/kubernetes/clusters/{c}"), None, 200),
        (
            "GET",
            format!("/v2/kubernetes/clusters/{unknown}"),
            None,
            404,
        ),
        (
            "GET",
            format!("/v2/kubernetes/clusters/{c}/node_pools"),
            None,
            200,
        ),
        (
            "GET",
            format!("/v2/kubernetes/clusters/{unknown}/node_pools"),
            None,
            404,
        ),
        (
            "GET",
            format!("/v2/kubernetes/clusters/{c}/node_pools/{p}"),
            None,
            200,
        ),
        (
            "GET",
            format!("/v2/kubernetes/clusters/{c}/node_pools/{unknown}"),
            None,
            404,
        ),
        (
            "PUT",
            format!("/v2/kubernetes/clusters/{c}/node_pools/{p}"),
            resize(4),
            202,
        ),
        (
            "PUT",
            format!("/v2/kubernetes/clusters/{c}/node_pools/{unknown}"),
            resize(4),
            404,
        ),
        (
            "DELETE",
            format!("/v2/kubernetes/clusters/{c}/node_pools/{p}/nodes/{node}"),
            None,
            202,
        ),
        (
            "DELETE",
            format!("/v2/kubernetes/clusters/{c}/node_pools/{p}/nodes/{unknown}"),
            None,
            404,
        ),
    ];
    for (method, path, body, want) in &requests {
        let ct = body.as_ref().and(json_ct);
        let (got, answer) = raw(&fake, method, path, Some(&bearer), ct, body.clone()).await;
        assert_eq!(got, *want, "{method} {path}: {answer}");
    }
    // Error answers of the fault injector are documented answers too.
    fake.inject_fault(
        Operation::GetNodePool,
        doks_fake::Fault::RateLimited {
            reset_in: Duration::from_secs(1),
        },
        1,
    );
    fake.inject_fault(Operation::GetNodePool, doks_fake::Fault::ServerError, 1);
    let path = format!("/v2/kubernetes/clusters/{c}/node_pools/{p}");
    assert_eq!(
        raw(&fake, "GET", &path, Some(&bearer), None, None).await.0,
        429
    );
    assert_eq!(
        raw(&fake, "GET", &path, Some(&bearer), None, None).await.0,
        500
    );
    let log = fake.requests();
    let used: BTreeSet<Operation> = log.iter().filter_map(|r| r.operation).collect();
    assert_eq!(
        used.len(),
        6,
        "all six operations answered:\n{}",
        show(&log)
    );
    let violations = fake.response_violations();
    assert!(
        violations.is_empty(),
        "answers off the description:\n{}",
        violations.join("\n")
    );
    fake.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_without_the_update_scope_can_read_but_not_resize_or_delete() {
    let Some(fake) = start_fake(
        "a_token_without_the_update_scope_can_read_but_not_resize_or_delete",
        |o| o.token_scopes = Some(vec!["kubernetes:read".to_owned()]),
    )
    .await
    else {
        return;
    };
    let (c, p) = games_cluster(&fake, 0, 2).await;
    let driver = driver(&fake, fast_options());
    assert_eq!(
        driver.target_size().await.unwrap_or_else(|e| panic!("{e}")),
        2
    );
    let err = driver
        .grow_to(3)
        .await
        .expect_err("resize needs kubernetes:update");
    let text = err.to_string();
    assert!(
        text.contains("403") && text.contains("kubernetes:update"),
        "{text}"
    );
    let view = fake.pool(&c, &p).unwrap_or_else(|| panic!("pool"));
    let results = driver
        .delete_nodes(&[node_ref(&view.nodes[0], Identify::Label)])
        .await;
    match &results[..] {
        [Err(ProviderError::Api { message, .. })] => {
            assert!(message.contains("kubernetes:update"), "{message}")
        }
        other => panic!("expected a 403 API error, got {other:?}"),
    }
    assert_eq!(fake.pool(&c, &p).map(|v| v.count), Some(2));
    fake.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn growing_adds_nodes_that_go_provisioning_then_running_after_the_boot_delay() {
    let Some(fake) = start_fake(
        "growing_adds_nodes_that_go_provisioning_then_running_after_the_boot_delay",
        |o| o.boot_delay = Duration::from_millis(600),
    )
    .await
    else {
        return;
    };
    let (c, p) = games_cluster(&fake, 0, 1).await;
    let driver = driver(&fake, fast_options());
    driver.grow_to(3).await.unwrap_or_else(|e| panic!("{e}"));
    let view = fake.pool(&c, &p).unwrap_or_else(|| panic!("pool"));
    assert_eq!(
        (
            view.count,
            view.nodes_in("provisioning"),
            view.nodes_in("running")
        ),
        (3, 2, 1)
    );
    let seen = driver.pool().await.unwrap_or_else(|e| panic!("{e}")).nodes;
    assert_eq!(seen.iter().filter(|n| n.state == "provisioning").count(), 2);
    wait_for("the new nodes to run", Duration::from_secs(5), || {
        fake.pool(&c, &p)
            .is_some_and(|v| v.nodes_in("running") == 3)
    })
    .await;
    fake.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lowering_the_count_removes_nodes_the_fake_chooses_newest_first() {
    // Why kubescaler never lowers the count: DOKS, not the caller, picks the nodes to remove.
    let Some(fake) = start_fake(
        "lowering_the_count_removes_nodes_the_fake_chooses_newest_first",
        |o| o.boot_delay = Duration::from_secs(30),
    )
    .await
    else {
        return;
    };
    let (c, p) = games_cluster(&fake, 0, 3).await;
    let before = fake.pool(&c, &p).unwrap_or_else(|| panic!("pool"));
    let bearer = format!("Bearer {TOKEN}");
    let path = format!("/v2/kubernetes/clusters/{c}/node_pools/{p}");
    let body = |n: u32| Some(json!({"name": "game-servers", "count": n}).to_string());
    let json_ct = Some("application/json");
    assert_eq!(
        raw(&fake, "PUT", &path, Some(&bearer), json_ct, body(4))
            .await
            .0,
        202
    );
    assert_eq!(
        raw(&fake, "PUT", &path, Some(&bearer), json_ct, body(2))
            .await
            .0,
        202
    );
    let after = fake.pool(&c, &p).unwrap_or_else(|| panic!("pool"));
    assert_eq!(after.count, 2);
    // The provisioning node went first, then the newest running one.
    let ids: Vec<&str> = after.nodes.iter().map(|n| n.id.as_str()).collect();
    assert_eq!(
        ids,
        vec![before.nodes[0].id.as_str(), before.nodes[1].id.as_str()]
    );
    fake.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_a_node_lowers_the_count_by_one_and_replace_keeps_it() {
    let Some(fake) = start_fake(
        "deleting_a_node_lowers_the_count_by_one_and_replace_keeps_it",
        |_| {},
    )
    .await
    else {
        return;
    };
    let (c, p) = games_cluster(&fake, 0, 3).await;
    let view = fake.pool(&c, &p).unwrap_or_else(|| panic!("pool"));
    let bearer = format!("Bearer {TOKEN}");
    let node = |i: usize| {
        format!(
            "/v2/kubernetes/clusters/{c}/node_pools/{p}/nodes/{}",
            view.nodes[i].id
        )
    };
    assert_eq!(
        raw(&fake, "DELETE", &node(0), Some(&bearer), None, None)
            .await
            .0,
        202
    );
    let after = fake.pool(&c, &p).unwrap_or_else(|| panic!("pool"));
    assert_eq!((after.count, after.nodes.len()), (2, 2));
    assert!(after.nodes.iter().all(|n| n.id != view.nodes[0].id));
    // A second delete of the same node: it is gone.
    assert_eq!(
        raw(&fake, "DELETE", &node(0), Some(&bearer), None, None)
            .await
            .0,
        404
    );
    assert_eq!(
        raw(
            &fake,
            "DELETE",
            &format!("{}?replace=1", node(1)),
            Some(&bearer),
            None,
            None
        )
        .await
        .0,
        202
    );
    let after = fake.pool(&c, &p).unwrap_or_else(|| panic!("pool"));
    assert_eq!(after.count, 2);
    assert_eq!(
        after.nodes_in("provisioning"),
        1,
        "a replacement was ordered"
    );
    fake.shutdown().await;
}

#[tokio::test]
async fn the_fake_refuses_a_description_it_cannot_enforce() {
    let Some(path) = dofake::spec_or_skip("the_fake_refuses_a_description_it_cannot_enforce")
    else {
        return;
    };
    let spec =
        std::fs::read_to_string(path).unwrap_or_else(|e| panic!("read the description: {e}"));
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let start = |text: String| {
        let path = dir.path().join(format!("spec-{}.yaml", text.len()));
        std::fs::write(&path, text).unwrap_or_else(|e| panic!("{e}"));
        FakeDoks::start(FakeOptions {
            spec_path: path,
            ..FakeOptions::default()
        })
    };
    // A rule the validator does not implement is an error, not silently skipped.
    let with_pattern = spec.replacen(
        "\n          maximum: 200\n",
        "\n          maximum: 200\n          pattern: '^[0-9]+$'\n",
        1,
    );
    assert_ne!(
        with_pattern, spec,
        "the per_page schema moved; update this test"
    );
    let err = start(with_pattern)
        .await
        .expect_err("pattern is not enforced");
    assert!(
        err.to_string().contains("\"pattern\" is not supported"),
        "{err}"
    );
    // An operation the fake implements must be in the description.
    let renamed = spec.replace("kubernetes_delete_node", "kubernetes_delete_node_v2");
    let err = start(renamed).await.expect_err("missing operation");
    assert!(err.to_string().contains("kubernetes_delete_node"), "{err}");
    // The real description loads.
    let fake = start(spec).await.unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(fake.spec().operations.len(), 6);
    fake.shutdown().await;
}

#[tokio::test]
async fn the_description_is_found_at_run_time_beside_the_repository() {
    let Some(path) =
        dofake::spec_or_skip("the_description_is_found_at_run_time_beside_the_repository")
    else {
        return;
    };
    if std::env::var_os(doks_fake::SPEC_ENV).is_none() {
        assert!(
            path.ends_with("shared/digitalocean/doks-node-pools.openapi.yaml"),
            "{}",
            path.display()
        );
    }
    assert!(path.is_file(), "{} does not exist", path.display());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deleted_node_drains_then_deletes_then_goes_after_the_delete_delay() {
    let Some(fake) = start_fake(
        "a_deleted_node_drains_then_deletes_then_goes_after_the_delete_delay",
        |o| o.delete_delay = Duration::from_millis(800),
    )
    .await
    else {
        return;
    };
    let (c, p) = games_cluster(&fake, 0, 2).await;
    let driver = driver(&fake, fast_options());
    let view = fake.pool(&c, &p).unwrap_or_else(|| panic!("pool"));
    let gone = view.nodes[0].id.clone();
    let results = driver
        .delete_nodes(&[node_ref(&view.nodes[0], Identify::Label)])
        .await;
    assert!(matches!(&results[..], [Ok(())]), "{results:?}");
    let state = |fake: &FakeDoks| {
        fake.pool(&c, &p)
            .and_then(|v| v.nodes.into_iter().find(|n| n.id == gone))
            .map(|n| n.state)
    };
    assert_eq!(state(&fake).as_deref(), Some("draining"));
    assert_eq!(
        fake.pool(&c, &p).map(|v| v.count),
        Some(1),
        "the count drops at once"
    );
    // Asked again while it drains: accepted, nothing more happens.
    let again = driver
        .delete_nodes(&[node_ref(&view.nodes[0], Identify::Label)])
        .await;
    assert!(matches!(&again[..], [Ok(())]), "{again:?}");
    assert_eq!(fake.pool(&c, &p).map(|v| v.count), Some(1));
    wait_for("deleting", Duration::from_secs(5), || {
        state(&fake).as_deref() == Some("deleting")
    })
    .await;
    wait_for("the node to go", Duration::from_secs(5), || {
        state(&fake).is_none()
    })
    .await;
    assert!(fake.requests().iter().all(|r| r.passed_validation()));
    fake.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_doks_reports_draining_gets_no_second_delete() {
    // Issue 10, item 4: "draining" is as much on its way out as "deleting".
    let Some(fake) = start_fake("a_node_doks_reports_draining_gets_no_second_delete", |o| {
        o.delete_delay = Duration::from_secs(10)
    })
    .await
    else {
        return;
    };
    let (c, p) = games_cluster(&fake, 0, 2).await;
    let driver = driver(&fake, fast_options());
    let view = fake.pool(&c, &p).unwrap_or_else(|| panic!("pool"));
    let target = node_ref(&view.nodes[0], Identify::Label);
    let first = driver.delete_nodes(std::slice::from_ref(&target)).await;
    assert!(matches!(&first[..], [Ok(())]), "{first:?}");
    let draining = fake
        .pool(&c, &p)
        .and_then(|v| v.nodes.into_iter().find(|n| n.id == view.nodes[0].id))
        .map(|n| n.state);
    assert_eq!(draining.as_deref(), Some("draining"));
    let again = driver.delete_nodes(std::slice::from_ref(&target)).await;
    assert!(matches!(&again[..], [Ok(())]), "{again:?}");
    let deletes = of(&fake.requests(), Operation::DeleteNode);
    assert_eq!(
        deletes.len(),
        1,
        "a second DELETE for a draining node: {deletes:?}"
    );
    fake.shutdown().await;
}
