//! Fault tests: the real DigitalOcean driver against the DOKS fake injecting 429s, 500s, slow
//! answers and dropped connections. The driver rides them out within its retry budget, fails
//! clearly past it, never grows a pool twice for one retried resize, and the scale loop keeps
//! running through failed passes. Each test is named after the rule it protects. No control
//! plane needed.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use doks_fake::{Fault, Operation};
use jiff::Timestamp;
use kubescaler::config::{load, ConfigSources};
use kubescaler::kubernetes::{ChangeEvent, KubeError, Kubernetes, MarkOp, MarkOutcome};
use kubescaler::model::{ClusterSnapshot, NodeState, PodState, Resources};
use kubescaler::provider::digitalocean::DigitalOceanOptions;
use kubescaler::provider::NodePoolProvider;
use kubescaler::scaler::Scaler;
use tokio::sync::broadcast;

mod dofake;
use dofake::{
    driver, fast_options, games_cluster, node_ref, of, resolved_driver, show, start_fake, wait_for,
    Identify,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_429_is_retried_after_its_ratelimit_reset() {
    let Some((fake, driver)) = resolved_driver(
        "a_429_is_retried_after_its_ratelimit_reset",
        1,
        fast_options(),
    )
    .await
    else {
        return;
    };
    fake.inject_fault(
        Operation::GetNodePool,
        Fault::RateLimited {
            reset_in: Duration::from_secs(2),
        },
        1,
    );
    assert_eq!(
        driver.target_size().await.unwrap_or_else(|e| panic!("{e}")),
        1
    );
    let gets = of(&fake.requests(), Operation::GetNodePool);
    let statuses: Vec<Option<u16>> = gets.iter().map(|r| r.status).collect();
    assert_eq!(statuses, vec![Some(429), Some(200)], "{}", show(&gets));
    // ratelimit-reset is whole Unix seconds, 2 s ahead: at least 1 s had to pass.
    let waited = gets[1].at - gets[0].at;
    assert!(
        waited >= Duration::from_secs(1),
        "retried after {waited:?}, before the reset"
    );
    fake.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_500s_are_retried_and_the_call_then_succeeds() {
    let Some(fake) = start_fake("two_500s_are_retried_and_the_call_then_succeeds", |_| {}).await
    else {
        return;
    };
    games_cluster(&fake, 0, 2).await;
    let driver = driver(&fake, fast_options());
    fake.inject_fault(Operation::GetNodePool, Fault::ServerError, 2);
    assert_eq!(
        driver.target_size().await.unwrap_or_else(|e| panic!("{e}")),
        2
    );
    let statuses: Vec<Option<u16>> = of(&fake.requests(), Operation::GetNodePool)
        .iter()
        .map(|r| r.status)
        .collect();
    assert_eq!(statuses, vec![Some(500), Some(500), Some(200)]);
    fake.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn past_its_attempts_the_driver_fails_clearly_with_the_apis_error() {
    let options = DigitalOceanOptions {
        max_attempts: 3,
        ..fast_options()
    };
    let Some((fake, driver)) = resolved_driver(
        "past_its_attempts_the_driver_fails_clearly_with_the_apis_error",
        1,
        options,
    )
    .await
    else {
        return;
    };
    fake.inject_fault(Operation::GetNodePool, Fault::ServerError, 10);
    let err = driver.target_size().await.expect_err("3 attempts, all 500");
    let text = err.to_string();
    for part in [
        "get node pool",
        "gave up after 3 attempt(s)",
        "HTTP 500",
        "server_error",
        "request_id",
    ] {
        assert!(text.contains(part), "{part:?} missing from: {text}");
    }
    assert!(!text.contains(dofake::TOKEN), "the token leaked: {text}");
    assert_eq!(of(&fake.requests(), Operation::GetNodePool).len(), 3);
    fake.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_429_resetting_past_the_retry_budget_fails_at_once() {
    let options = DigitalOceanOptions {
        retry_budget: Duration::from_secs(3),
        ..fast_options()
    };
    let Some((fake, driver)) = resolved_driver(
        "a_429_resetting_past_the_retry_budget_fails_at_once",
        1,
        options,
    )
    .await
    else {
        return;
    };
    fake.inject_fault(
        Operation::GetNodePool,
        Fault::RateLimited {
            reset_in: Duration::from_secs(60),
        },
        1,
    );
    let started = Instant::now();
    let err = driver
        .target_size()
        .await
        .expect_err("the reset is past the budget");
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "it slept: {:?}",
        started.elapsed()
    );
    let text = err.to_string();
    assert!(
        text.contains("retry budget") && text.contains("429"),
        "{text}"
    );
    assert_eq!(of(&fake.requests(), Operation::GetNodePool).len(), 1);
    fake.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_answer_past_the_request_timeout_is_retried() {
    let options = DigitalOceanOptions {
        request_timeout: Duration::from_millis(500),
        ..fast_options()
    };
    let Some((fake, driver)) = resolved_driver(
        "a_slow_answer_past_the_request_timeout_is_retried",
        1,
        options,
    )
    .await
    else {
        return;
    };
    fake.inject_fault(
        Operation::GetNodePool,
        Fault::Delay(Duration::from_secs(5)),
        1,
    );
    let started = Instant::now();
    assert_eq!(
        driver.target_size().await.unwrap_or_else(|e| panic!("{e}")),
        1
    );
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
    let gets = of(&fake.requests(), Operation::GetNodePool);
    assert_eq!(gets.len(), 2, "{}", show(&gets));
    assert!(gets[0].fault.is_some() && gets[1].fault.is_none());
    fake.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropped_connections_are_retried() {
    let Some(fake) = start_fake("dropped_connections_are_retried", |_| {}).await else {
        return;
    };
    games_cluster(&fake, 2, 1).await;
    let driver = driver(&fake, fast_options());
    fake.inject_fault(Operation::ListClusters, Fault::DropConnection, 1);
    fake.inject_fault(Operation::GetNodePool, Fault::DropConnection, 2);
    assert_eq!(
        driver.target_size().await.unwrap_or_else(|e| panic!("{e}")),
        1
    );
    let log = fake.requests();
    let dropped = log.iter().filter(|r| r.status.is_none()).count();
    assert_eq!(dropped, 3, "{}", show(&log));
    assert!(log.iter().all(|r| r.passed_validation()));
    fake.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resize_retried_after_its_answer_was_dropped_does_not_grow_twice() {
    let Some(fake) = start_fake(
        "a_resize_retried_after_its_answer_was_dropped_does_not_grow_twice",
        |_| {},
    )
    .await
    else {
        return;
    };
    let (c, p) = games_cluster(&fake, 0, 1).await;
    let driver = driver(&fake, fast_options());
    driver.resolve().await.unwrap_or_else(|e| panic!("{e}"));
    fake.inject_fault(Operation::UpdateNodePool, Fault::DropAfterApply, 1);
    driver
        .grow_to(3)
        .await
        .unwrap_or_else(|e| panic!("grow_to: {e}"));
    let view = fake.pool(&c, &p).unwrap_or_else(|| panic!("pool"));
    assert_eq!(
        (view.count, view.nodes.len()),
        (3, 3),
        "grown once, not twice"
    );
    let puts = of(&fake.requests(), Operation::UpdateNodePool);
    assert_eq!(puts.len(), 2, "{}", show(&puts));
    assert!(
        puts[0].applied && puts[0].status.is_none(),
        "the first PUT was applied, its answer lost"
    );
    for put in &puts {
        assert_eq!(
            put.body
                .as_ref()
                .and_then(|b| b.get("count"))
                .and_then(|c| c.as_u64()),
            Some(3)
        );
    }
    fake.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resize_that_timed_out_after_being_applied_does_not_grow_twice() {
    let Some(fake) = start_fake(
        "a_resize_that_timed_out_after_being_applied_does_not_grow_twice",
        |_| {},
    )
    .await
    else {
        return;
    };
    let (c, p) = games_cluster(&fake, 0, 2).await;
    let options = DigitalOceanOptions {
        request_timeout: Duration::from_millis(500),
        ..fast_options()
    };
    let driver = driver(&fake, options);
    driver.resolve().await.unwrap_or_else(|e| panic!("{e}"));
    fake.inject_fault(
        Operation::UpdateNodePool,
        Fault::Delay(Duration::from_secs(3)),
        1,
    );
    driver
        .grow_to(5)
        .await
        .unwrap_or_else(|e| panic!("grow_to: {e}"));
    let view = fake.pool(&c, &p).unwrap_or_else(|| panic!("pool"));
    assert_eq!((view.count, view.nodes.len()), (5, 5));
    // A later grow_to to the same target sends nothing: the pool is read fresh first.
    driver
        .grow_to(5)
        .await
        .unwrap_or_else(|e| panic!("grow_to: {e}"));
    assert_eq!(of(&fake.requests(), Operation::UpdateNodePool).len(), 2);
    fake.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delete_retried_after_its_answer_was_dropped_deletes_one_node() {
    let Some(fake) = start_fake(
        "a_delete_retried_after_its_answer_was_dropped_deletes_one_node",
        |_| {},
    )
    .await
    else {
        return;
    };
    let (c, p) = games_cluster(&fake, 0, 3).await;
    let driver = driver(&fake, fast_options());
    let view = fake.pool(&c, &p).unwrap_or_else(|| panic!("pool"));
    fake.inject_fault(Operation::DeleteNode, Fault::DropAfterApply, 1);
    let results = driver
        .delete_nodes(&[node_ref(&view.nodes[2], Identify::Label)])
        .await;
    assert!(
        matches!(&results[..], [Ok(())]),
        "{results:?}\n{}",
        show(&fake.requests())
    );
    let after = fake.pool(&c, &p).unwrap_or_else(|| panic!("pool"));
    assert_eq!(
        (after.count, after.nodes.len()),
        (2, 2),
        "exactly one node went"
    );
    assert!(after.nodes.iter().all(|n| n.id != view.nodes[2].id));
    fake.shutdown().await;
}

/// A Kubernetes side frozen on one snapshot: one full 4-CPU pool node and two pending servers,
/// so every pass plans to grow.
struct Frozen {
    changes: broadcast::Sender<ChangeEvent>,
    /// The pool node's name (the driver matches a node without DOKS labels by name).
    node: String,
}

#[async_trait]
impl Kubernetes for Frozen {
    async fn snapshot(&self) -> Result<ClusterSnapshot, KubeError> {
        let cpu = |n: u64| Resources {
            cpu_millis: n * 1000,
            memory_bytes: 0,
        };
        let node = NodeState {
            name: self.node.clone(),
            provider_id: None,
            labels: BTreeMap::new(),
            identity_annotations: BTreeMap::new(),
            allocatable: Resources {
                cpu_millis: 4000,
                memory_bytes: 16 << 30,
            },
            allocatable_pods: 110,
            ready: true,
            unschedulable: false,
            taints: vec![],
            cordoned_by_kubescaler: false,
            has_kubescaler_marks: false,
            deletion_accepted: None,
            cordon_timestamp: None,
            created: Some(Timestamp::now()),
        };
        let server = |i: usize, node: Option<&str>| PodState {
            key: format!("games/server-{i}"),
            node: node.map(str::to_owned),
            requests: cpu(1),
            is_server: true,
            is_daemon: false,
            game_server: None,
        };
        let mut pods: Vec<PodState> = (0..4).map(|i| server(i, Some(&self.node))).collect();
        pods.push(server(4, None));
        pods.push(server(5, None));
        Ok(ClusterSnapshot {
            nodes: vec![node],
            pods,
            ..Default::default()
        })
    }
    async fn mark(&self, _: &str, _: MarkOp) -> Result<MarkOutcome, KubeError> {
        Ok(MarkOutcome::Gone)
    }
    async fn live_node(&self, _: &str) -> Result<Option<NodeState>, KubeError> {
        Ok(None)
    }
    async fn live_server_pods(&self, _: &str) -> Result<Vec<String>, KubeError> {
        Ok(Vec::new())
    }
    fn changes(&self) -> broadcast::Receiver<ChangeEvent> {
        self.changes.subscribe()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_loop_keeps_running_through_failed_passes_and_grows_once_the_api_recovers() {
    let Some(fake) = start_fake(
        "the_loop_keeps_running_through_failed_passes_and_grows_once_the_api_recovers",
        |o| o.boot_delay = Duration::from_secs(60),
    )
    .await
    else {
        return;
    };
    let (c, p) = games_cluster(&fake, 0, 1).await;
    let env: BTreeMap<String, String> = [
        ("CLOUD_PROVIDER_TOKEN", dofake::TOKEN),
        ("CLUSTER_NAME", "games"),
        ("NODE_POOL_NAME", "game-servers"),
        ("NODE_SELECTOR", "role=game-servers"),
        ("SERVER_POD_LABEL_NAME", "app"),
        ("SERVER_POD_LABEL_VALUE", "game-server"),
        ("MINIMUM_NODE_POOL_SIZE", "1"),
        ("MAXIMUM_NODE_POOL_SIZE", "5"),
        ("BUFFER_SLOT_SIZE", "2"),
        ("SCALE_LOOP_TICK_SEC", "1"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect();
    let config = load(&ConfigSources {
        env,
        ..Default::default()
    })
    .unwrap_or_else(|e| panic!("config: {e}"));
    let options = DigitalOceanOptions {
        max_attempts: 2,
        ..fast_options()
    };
    let provider: Arc<dyn NodePoolProvider> = Arc::new(driver(&fake, options));
    let (changes, _) = broadcast::channel(16);
    let node = fake
        .pool(&c, &p)
        .and_then(|v| v.nodes.first().map(|n| n.name.clone()))
        .unwrap_or_else(|| panic!("the pool's node"));
    let k8s: Arc<dyn Kubernetes> = Arc::new(Frozen { changes, node });
    // Three passes' worth of failures (2 attempts each), 500s and 429s mixed.
    fake.inject_fault(Operation::GetNodePool, Fault::ServerError, 3);
    fake.inject_fault(
        Operation::GetNodePool,
        Fault::RateLimited {
            reset_in: Duration::from_millis(100),
        },
        1,
    );
    fake.inject_fault(Operation::GetNodePool, Fault::ServerError, 2);
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let telemetry = Arc::new(kubescaler::telemetry::Telemetry::new(Duration::from_secs(
        1,
    )));
    let scaler = Scaler::new(k8s, provider, &config).with_telemetry(Arc::clone(&telemetry));
    let running = tokio::spawn(scaler.run(async move {
        let _ = stop_rx.await;
    }));

    // 4 servers on a full node, 2 pending, buffer 2: 4 more slots, one 4-slot node.
    wait_for(
        "the pool to grow after the failed passes",
        Duration::from_secs(30),
        || fake.pool(&c, &p).is_some_and(|v| v.count == 2),
    )
    .await;
    let log = fake.requests();
    let failed = of(&log, Operation::GetNodePool)
        .iter()
        .filter(|r| r.fault.is_some())
        .count();
    assert_eq!(failed, 6, "{}", show(&log));
    // It keeps running: more passes come, and none grows again (the node is on its way).
    let passes_before = telemetry.passes();
    wait_for("more passes", Duration::from_secs(10), || {
        telemetry.passes() >= passes_before + 2
    })
    .await;
    assert!(!running.is_finished(), "the loop stopped");
    let puts = of(&fake.requests(), Operation::UpdateNodePool);
    assert_eq!(puts.len(), 1, "{}", show(&puts));
    assert_eq!(fake.pool(&c, &p).map(|v| v.count), Some(2));
    let _ = stop_tx.send(());
    tokio::time::timeout(Duration::from_secs(10), running)
        .await
        .unwrap_or_else(|_| panic!("the loop did not stop"))
        .unwrap_or_else(|e| panic!("the loop panicked: {e}"));
    fake.shutdown().await;
}
