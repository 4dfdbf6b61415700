//! API economy: with 100 nodes and 3,000 pods, kubescaler's real scale loop (tick 1 s) sends
//! next to no requests while the cluster is idle for a minute: its passes read the watch
//! caches, not the API server.
//!
//! kubescaler runs under its own identity (`kubeconfig-kubescaler` in the control plane's run
//! dir, user `kubescaler-e2e`), whose requests the API server's audit log records (see
//! `hack/controlplane.sh`); the test counts that user's `RequestReceived` events, one per
//! request, a watch included. Nothing else may use that identity while it runs.
//!
//! SLOW: about 1.5 minutes, up to 3 on a busy 2-core machine (creating 3,100 objects, then
//! the idle minute). Gated by `tests/cluster` (`KUBESCALER_E2E_KUBECONFIG`).

use std::collections::BTreeMap;
use std::io::Write as _;
use std::panic::AssertUnwindSafe;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use futures::{FutureExt, StreamExt};
use jiff::Timestamp;
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::Client;
use kubescaler::config::{load, ConfigSources};
use kubescaler::kubernetes::{KubeCluster, Kubernetes};
use kubescaler::provider::{CloudNode, CloudPool, InstanceStatus, NodePoolProvider, ProviderError};
use kubescaler::scaler::Scaler;
use serde_json::{json, Value};
use tokio::sync::oneshot;

mod cluster;
use cluster::{client_or_skip, kubeconfig_or_skip};

const NODES: usize = 100;
const PODS_PER_NODE: usize = 30;
const SERVERS_PER_NODE: usize = 5;
const NAMESPACE: &str = "default";
/// Label of everything this test creates; its value is the run id.
const POOL_LABEL: &str = "kubescaler-economy/pool";
/// Server label name; its value is the run id.
const SERVER_LABEL: &str = "kubescaler-economy/server";
/// The identity kubescaler runs under (CN of `kubeconfig-kubescaler`'s certificate).
const KUBESCALER_USER: &str = "kubescaler-e2e";
/// How long the cluster stays idle while the requests are counted.
const IDLE: Duration = Duration::from_secs(60);
/// Longest wait for setup steps.
const WAIT: Duration = Duration::from_secs(300);
/// At most this many requests in the idle minute (expected: none but a watch re-established).
const MAX_IDLE_REQUESTS: usize = 10;

/// Writes past libtest's capture, so the figures show in a plain `cargo test`.
macro_rules! say {
    ($($arg:tt)*) => {{
        let _ = writeln!(std::io::stderr(), $($arg)*);
    }};
}

/// A provider that answers a fixed target and records every call.
#[derive(Default)]
struct StubProvider {
    target: u32,
    /// The pool's instances (matched to nodes by name).
    nodes: Vec<CloudNode>,
    target_calls: AtomicU32,
    changes: Mutex<Vec<String>>,
}

#[async_trait]
impl NodePoolProvider for StubProvider {
    async fn pool(&self) -> Result<CloudPool, ProviderError> {
        self.target_calls.fetch_add(1, Ordering::SeqCst);
        Ok(CloudPool {
            target: self.target,
            nodes: self.nodes.clone(),
            template: None,
        })
    }
    async fn grow_to(&self, target: u32) -> Result<(), ProviderError> {
        self.record(format!("grow_to({target})"));
        Ok(())
    }
    async fn delete_instance(&self, n: &CloudNode) -> Result<(), ProviderError> {
        self.record(format!("delete({})", n.name));
        Ok(())
    }
}

impl StubProvider {
    fn record(&self, call: String) {
        self.changes
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .push(call);
    }
    fn changes(&self) -> Vec<String> {
        self.changes
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }
}

/// One request of the audit log.
#[derive(Debug)]
struct Request {
    at: Timestamp,
    verb: String,
    uri: String,
}

/// `verb path` (query left out) with how many times each came.
fn tally(requests: &[&Request]) -> BTreeMap<String, usize> {
    let mut out = BTreeMap::new();
    for r in requests {
        let path = r.uri.split('?').next().unwrap_or_default();
        *out.entry(format!("{} {path}", r.verb)).or_insert(0) += 1;
    }
    out
}

/// kubescaler's requests in the audit log received at or after `since`: one
/// `RequestReceived` event per request, watches included.
fn kubescaler_requests(log: &Path, since: Timestamp) -> Vec<Request> {
    let text = std::fs::read_to_string(log)
        .unwrap_or_else(|e| panic!("read the audit log {}: {e}", log.display()));
    text.lines()
        .filter_map(|line| serde_json::from_str::<Value>(line).ok())
        .filter(|e| e["stage"] == "RequestReceived" && e["user"]["username"] == KUBESCALER_USER)
        .filter_map(|e| {
            let at: Timestamp = e["requestReceivedTimestamp"].as_str()?.parse().ok()?;
            Some(Request {
                at,
                verb: e["verb"].as_str().unwrap_or_default().to_string(),
                uri: e["requestURI"].as_str().unwrap_or_default().to_string(),
            })
        })
        .filter(|r| r.at >= since)
        .collect()
}

/// A client with kubescaler's own identity.
async fn client_from(path: &Path) -> Client {
    let kubeconfig =
        Kubeconfig::read_from(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
        .await
        .unwrap_or_else(|e| panic!("kubeconfig {}: {e}", path.display()));
    Client::try_from(config).unwrap_or_else(|e| panic!("client: {e}"))
}

/// Force-deletes everything labelled with this run's id (two requests).
async fn cleanup(client: &Client, id: &str) {
    let params = ListParams::default().labels(&format!("{POOL_LABEL}={id}"));
    let now = DeleteParams {
        grace_period_seconds: Some(0),
        ..Default::default()
    };
    let pods: Api<Pod> = Api::namespaced(client.clone(), NAMESPACE);
    if let Err(e) = pods.delete_collection(&now, &params).await {
        say!("cleanup: delete pods: {e}");
    }
    let nodes: Api<Node> = Api::all(client.clone());
    if let Err(e) = nodes.delete_collection(&now, &params).await {
        say!("cleanup: delete nodes: {e}");
    }
}

fn node_name(id: &str, i: usize) -> String {
    format!("{id}-n{i:03}")
}

async fn create_node(nodes: &Api<Node>, id: &str, i: usize) {
    let name = node_name(id, i);
    let node: Node = serde_json::from_value(json!({
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {"name": name, "labels": {POOL_LABEL: id}},
    }))
    .unwrap_or_else(|e| panic!("node: {e}"));
    nodes
        .create(&PostParams::default(), &node)
        .await
        .unwrap_or_else(|e| panic!("create node {name}: {e}"));
    let now = Timestamp::now().strftime("%Y-%m-%dT%H:%M:%SZ").to_string();
    let resources = json!({"cpu": "16", "memory": "64Gi", "pods": "110"});
    let status = json!({"status": {
        "capacity": resources,
        "allocatable": resources,
        "conditions": [{
            "type": "Ready", "status": "True", "reason": "KubeletReady",
            "message": "economy", "lastHeartbeatTime": now, "lastTransitionTime": now,
        }],
    }});
    nodes
        .patch_status(&name, &PatchParams::default(), &Patch::Merge(&status))
        .await
        .unwrap_or_else(|e| panic!("patch status of node {name}: {e}"));
}

/// Pod `j` of node `i`: the first a daemon, the next [`SERVERS_PER_NODE`] servers, the rest
/// plain pods; all pinned by `spec.nodeName`.
async fn create_pod(pods: &Api<Pod>, id: &str, i: usize, j: usize) {
    let name = format!("{id}-n{i:03}-p{j:02}");
    let mut labels = json!({POOL_LABEL: id});
    let (cpu, kind) = match j {
        0 => ("100m", "daemon"),
        j if j <= SERVERS_PER_NODE => ("1", "server"),
        _ => ("100m", "plain"),
    };
    if kind == "server" {
        labels[SERVER_LABEL] = id.into();
    }
    let mut metadata = json!({"name": name, "namespace": NAMESPACE, "labels": labels});
    if kind == "daemon" {
        metadata["ownerReferences"] = json!([{
            "apiVersion": "apps/v1", "kind": "DaemonSet", "name": format!("{id}-ds"),
            "uid": "00000000-0000-4000-8000-000000000002", "controller": true,
        }]);
    }
    let pod: Pod = serde_json::from_value(json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": metadata,
        "spec": {
            "nodeName": node_name(id, i),
            "terminationGracePeriodSeconds": 0,
            "containers": [{
                "name": "c",
                "image": "registry.invalid/never-pulled:1",
                "resources": {"requests": {"cpu": cpu, "memory": "256Mi"}},
            }],
        },
    }))
    .unwrap_or_else(|e| panic!("pod: {e}"));
    // A busy API server may time a create out; retry a few times (409: it did get created).
    for attempt in 1..=5 {
        match pods.create(&PostParams::default(), &pod).await {
            Ok(_) => return,
            Err(kube::Error::Api(s)) if s.code == 409 => return,
            Err(e) if attempt < 5 => {
                say!("create pod {name} (attempt {attempt}): {e}; retrying");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
            Err(e) => panic!("create pod {name}: {e}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_scale_loop_sends_next_to_no_requests_with_100_nodes_and_3000_pods() {
    let test = "api-economy";
    let Some(admin) = client_or_skip(test).await else {
        return;
    };
    let run_dir: PathBuf = kubeconfig_or_skip(test)
        .and_then(|p| p.parent().map(Path::to_path_buf))
        .unwrap_or_else(|| panic!("{test}: the kubeconfig has no directory"));
    let kubescaler_kubeconfig = run_dir.join("kubeconfig-kubescaler");
    let audit_log = run_dir.join("audit.log");
    assert!(
        kubescaler_kubeconfig.is_file() && audit_log.is_file(),
        "{test}: {} or {} missing: this control plane was started by an older \
         hack/controlplane.sh (or with KUBESCALER_AUDIT=off); restart it",
        kubescaler_kubeconfig.display(),
        audit_log.display()
    );

    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or_default();
    let id = format!("eco-{}-{}", std::process::id(), nanos % 1_000_000);
    let started = Instant::now();

    let body = async {
        // --- setup, with the admin identity: 100 nodes, 3,000 pinned pods ---
        let nodes: Api<Node> = Api::all(admin.clone());
        futures::stream::iter(0..NODES)
            .for_each_concurrent(8, |i| create_node(&nodes, &id, i))
            .await;
        let pods: Api<Pod> = Api::namespaced(admin.clone(), NAMESPACE);
        futures::stream::iter((0..NODES).flat_map(|i| (0..PODS_PER_NODE).map(move |j| (i, j))))
            .for_each_concurrent(16, |(i, j)| create_pod(&pods, &id, i, j))
            .await;
        let setup = started.elapsed();
        say!(
            "api economy: created {NODES} nodes and {} pods in {:.0}s",
            NODES * PODS_PER_NODE,
            setup.as_secs_f64()
        );

        // --- kubescaler's real loop under its own identity ---
        let env = BTreeMap::from(
            [
                ("CLOUD_PROVIDER_TOKEN", "unused".to_string()),
                ("CLUSTER_NAME", "economy".to_string()),
                ("NODE_POOL_NAME", "economy".to_string()),
                ("NODE_SELECTOR", format!("{POOL_LABEL}={id}")),
                ("SERVER_POD_LABEL_NAME", SERVER_LABEL.to_string()),
                ("SERVER_POD_LABEL_VALUE", id.clone()),
                ("SCALE_LOOP_TICK_SEC", "1".to_string()),
                ("BUFFER_SLOT_SIZE", "4".to_string()),
                // Pool at its minimum: no cordon, no growth; the passes only plan.
                ("MINIMUM_NODE_POOL_SIZE", NODES.to_string()),
                ("MAXIMUM_NODE_POOL_SIZE", NODES.to_string()),
            ]
            .map(|(k, v)| (k.to_string(), v)),
        );
        let config = load(&ConfigSources {
            env,
            ..Default::default()
        })
        .unwrap_or_else(|e| panic!("config: {e}"));
        let provider = Arc::new(StubProvider {
            target: NODES as u32,
            nodes: (0..NODES)
                .map(|i| CloudNode {
                    id: format!("stub-{i}"),
                    name: node_name(&id, i),
                    status: InstanceStatus::Running,
                    state: "running".into(),
                    provider_id: None,
                    created: None,
                })
                .collect(),
            ..Default::default()
        });
        let telemetry = Arc::new(kubescaler::telemetry::Telemetry::new(Duration::from_secs(
            1,
        )));
        let kubescaler_client = client_from(&kubescaler_kubeconfig).await;
        let since_start = Timestamp::now();
        let sync_started = Instant::now();
        let cluster = Arc::new(KubeCluster::start(
            kubescaler_client,
            &config.node_selector,
            (
                config.server_pod_label_name.clone(),
                config.server_pod_label_value.clone(),
            ),
        ));
        let k8s: Arc<dyn Kubernetes> = cluster.clone();
        let (stop, stopped) = oneshot::channel::<()>();
        let scaler =
            Scaler::new(k8s, provider.clone(), &config).with_telemetry(Arc::clone(&telemetry));
        let loop_task = tokio::spawn(scaler.run(async {
            let _ = stopped.await;
        }));

        // First sync: every node and pod in the cache, and a pass done.
        let snapshot = cluster::eventually("kubescaler's first sync", WAIT, || async {
            let s = cluster.snapshot().await.ok()?;
            (s.nodes.len() == NODES && s.pods.len() == NODES * PODS_PER_NODE).then_some(s)
        })
        .await;
        cluster::eventually("the first pass", WAIT, || async {
            (telemetry.passes() > 0).then_some(())
        })
        .await;
        let sync = sync_started.elapsed();
        let servers = snapshot.pods.iter().filter(|p| p.is_server).count();
        let daemons = snapshot.pods.iter().filter(|p| p.is_daemon).count();
        assert_eq!(servers, NODES * SERVERS_PER_NODE);
        assert_eq!(daemons, NODES);

        // --- the idle minute ---
        let window_start = Timestamp::now();
        let passes_before = telemetry.passes();
        let reads_before = provider.target_calls.load(Ordering::SeqCst);
        tokio::time::sleep(IDLE).await;
        let passes = telemetry.passes() - passes_before;
        let cloud_reads = provider.target_calls.load(Ordering::SeqCst) - reads_before;
        let window_end = Timestamp::now();
        let _ = stop.send(());
        let _ = tokio::time::timeout(Duration::from_secs(30), loop_task).await;
        drop(cluster);
        // Blocking audit mode writes each event while serving the request; a moment's margin.
        tokio::time::sleep(Duration::from_secs(1)).await;

        let all = kubescaler_requests(&audit_log, since_start);
        let (startup, rest): (Vec<&Request>, Vec<&Request>) =
            all.iter().partition(|r| r.at < window_start);
        let idle: Vec<&Request> = rest.into_iter().filter(|r| r.at <= window_end).collect();

        let ticks = IDLE.as_secs();
        let go_design = (1 + NODES as u64) * 3 * ticks;
        let one_list = 2 * ticks;
        let pages = (NODES * PODS_PER_NODE).div_ceil(500) as u64;
        say!(
            "api economy: kubescaler sent {} requests in {:.0}s of idle ({passes} passes, tick 1 s, {cloud_reads} cloud reads): {:?}",
            idle.len(),
            IDLE.as_secs_f64(),
            tally(&idle)
        );
        say!(
            "api economy: start-up (first list and watches, {:.1}s): {} requests: {:?}",
            sync.as_secs_f64(),
            startup.len(),
            tally(&startup)
        );
        say!(
            "api economy: for comparison over the same {ticks} ticks: the Go design (1 node list + {NODES} per-node pod lists, 3 times per tick) = {go_design} requests; one list of nodes and one of pods per tick = {one_list} requests ({} with the pod list paged at 500)",
            (1 + pages) * ticks
        );
        say!(
            "api economy: total {:.0}s (setup {:.0}s)",
            started.elapsed().as_secs_f64(),
            setup.as_secs_f64()
        );

        // The count is only worth something if the audit log sees kubescaler at all.
        let seen = tally(&startup);
        assert!(
            seen.contains_key("list /api/v1/nodes") && seen.contains_key("watch /api/v1/pods"),
            "the audit log shows no start-up list/watch by {KUBESCALER_USER}: {seen:?}"
        );
        assert!(
            passes >= 30,
            "the loop ran only {passes} passes in {IDLE:?} with a 1 s tick"
        );
        assert!(
            idle.len() <= MAX_IDLE_REQUESTS,
            "kubescaler sent {} requests while idle (at most {MAX_IDLE_REQUESTS} expected)",
            idle.len()
        );
        assert!(
            !idle.iter().any(|r| r.verb == "list"),
            "a pass listed instead of reading the caches: {idle:?}"
        );
        assert_eq!(
            provider.changes(),
            Vec::<String>::new(),
            "the idle pool at its minimum must not be resized"
        );
        // The cloud is read when a decision needs it, and once a minute otherwise.
        assert!(
            cloud_reads <= 2,
            "{cloud_reads} cloud reads in an idle minute at a 1 s tick (at most 1 per minute, plus a boundary)"
        );
    };
    let outcome = AssertUnwindSafe(body).catch_unwind().await;
    cleanup(&admin, &id).await;
    if let Err(panic) = outcome {
        std::panic::resume_unwind(panic);
    }
}
