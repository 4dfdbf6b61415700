//! An in-test cloud, [`TestCloud`], that plays a node pool provider against the local control
//! plane, and [`Pool`], the harness of the tests that run kubescaler's real scale loop on it.
//!
//! The control plane has no kubelets and no controller-manager: the cloud "boots" a node by
//! creating its Node object (first NotReady, then Ready, like a kubelet registering), and
//! "removes" one by deleting it. Pods are placed by the real kube-scheduler, or bound by the
//! test itself (`spec.nodeName`) where a test needs a known layout; a pod ends when it is
//! deleted with grace period 0.
//!
//! Every test runs in its own pool: its nodes carry `kubescaler-e2e/pool=<id>` (the loop's node
//! selector) and its game server pods `app=<id>` (the loop's server label), so tests running in
//! parallel on one API server never see each other's nodes or servers.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use futures::{FutureExt, StreamExt};
use jiff::Timestamp;
use k8s_openapi::api::core::v1::{Container, Node, NodeSpec, Pod, PodSpec, ResourceRequirements};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::runtime::watcher::{self, watcher, Event};
use kube::runtime::WatchStreamExt;
use kube::Client;
use kubescaler::agones::AgonesBuffer;
use kubescaler::config::{load, Config, ConfigSources};
use kubescaler::kubernetes::{KubeCluster, Kubernetes};
use kubescaler::model::ServerSource;
use kubescaler::model::{CORDONED_BY_ANNOTATION, TIMESTAMP_ANNOTATION};
use kubescaler::provider::{
    CloudNode, CloudPool, InstanceStatus, NodePoolProvider, NodeRef, ProviderError,
};
use kubescaler::scaler::Scaler;
use serde_json::json;
use tokio::sync::oneshot;
use tokio::task::{AbortHandle, JoinHandle};
use tracing::Instrument;

/// Namespace of every test pod.
pub const NAMESPACE: &str = "default";
/// Label key of a pool's nodes; its value is the test's id.
pub const POOL_LABEL: &str = "kubescaler-e2e/pool";
/// Label key of game server pods; its value is the test's id.
pub const SERVER_LABEL: &str = "app";
/// CPU one game server requests (the loop's `server-cpu-resource-request`).
pub const SERVER_CPU: &str = "1";
/// Default wait for an outcome: generous for a busy 2-core machine running tests in parallel.
pub const WAIT: Duration = Duration::from_secs(90);

const PROVIDER: &str = "test-cloud";
/// The taint a real cluster puts on a node until it is Ready.
const NOT_READY_TAINT: &str = "node.kubernetes.io/not-ready";

/// A name part unique to this process and call: `<tag>-<pid>-<n><nanos>`, short enough for a
/// label value (63 characters).
pub fn unique_id(tag: &str) -> String {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or_default();
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    format!("{tag}-{}-{n}{nanos}", std::process::id())
}

/// Sends kubescaler's logs to the test output (`RUST_LOG` overrides the default filter).
pub fn init_logs() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("kubescaler=info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_test_writer()
        .try_init();
}

pub use super::eventually;

/// Allocatable resources of the pool's nodes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NodeSize {
    /// CPU, a quantity (`"4"`).
    pub cpu: &'static str,
    /// Memory, a quantity (`"16Gi"`).
    pub memory: &'static str,
    /// Pod count.
    pub pods: &'static str,
    /// Game servers (of [`SERVER_CPU`]) that fit on an empty node.
    pub slots: u32,
}

/// A 4-CPU node: four 1-CPU servers.
pub const FOUR_CPU: NodeSize = NodeSize {
    cpu: "4",
    memory: "16Gi",
    pods: "110",
    slots: 4,
};

/// What the loop asked of the cloud.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Op {
    /// `pool` (or `target_size`): a read of the pool.
    TargetSize,
    /// `grow_to(n)`.
    GrowTo(u32),
    /// `delete_instance` (or `delete_nodes`) of these node names.
    Delete(Vec<String>),
}

impl Op {
    /// Whether the call may change the pool.
    pub fn is_mutation(&self) -> bool {
        matches!(self, Op::GrowTo(_) | Op::Delete(_))
    }
}

/// One recorded provider call.
#[derive(Clone, Debug)]
pub struct Call {
    /// When it was made (wall clock, like kubescaler's plans and cordon marks).
    pub at: Timestamp,
    /// What it asked.
    pub op: Op,
}

/// A game server pod that was still bound to a node when the cloud deleted that node.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LostServer {
    /// The deleted node.
    pub node: String,
    /// `namespace/name` of the pod.
    pub pod: String,
}

#[derive(Default)]
struct CloudState {
    target: u32,
    max_target: u32,
    next_index: u32,
    /// The cloud's instances: booting or running, by node name.
    instances: BTreeSet<String>,
    /// Nodes deleted, in order.
    removed: Vec<String>,
    calls: Vec<Call>,
    lost: Vec<LostServer>,
    boots: Vec<AbortHandle>,
    closed: bool,
    /// The telemetry of the loop that drives this cloud: its pass count.
    loop_telemetry: Option<Arc<kubescaler::telemetry::Telemetry>>,
}

struct CloudInner {
    client: Client,
    id: String,
    size: NodeSize,
    boot_delay: Duration,
    state: Mutex<CloudState>,
}

/// A node pool provider whose instances are Node objects on the test API server.
///
/// Cheap to clone (one `Arc`): the test keeps a clone to inspect while the loop owns another.
#[derive(Clone)]
pub struct TestCloud {
    inner: Arc<CloudInner>,
}

impl TestCloud {
    /// An empty pool `id` (target 0) whose nodes are of `size` and take `boot_delay` from
    /// `grow_to` to Ready (registered NotReady halfway).
    pub fn new(client: Client, id: &str, size: NodeSize, boot_delay: Duration) -> Self {
        TestCloud {
            inner: Arc::new(CloudInner {
                client,
                id: id.to_string(),
                size,
                boot_delay,
                state: Mutex::new(CloudState::default()),
            }),
        }
    }

    fn state(&self) -> MutexGuard<'_, CloudState> {
        self.inner
            .state
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    fn record(&self, op: Op) {
        self.state().calls.push(Call {
            at: Timestamp::now(),
            op,
        });
    }

    /// Adds `n` nodes that are Ready at once (the pool as it was before the test), raising
    /// the target by `n`; returns their names in order.
    pub async fn start_with(&self, n: u32) -> Vec<String> {
        let names = self.allocate(n);
        for name in &names {
            self.create_node(name, true)
                .await
                .unwrap_or_else(|e| panic!("create node {name}: {e}"));
        }
        names
    }

    /// Reserves `n` new instance names and raises the target by `n`.
    fn allocate(&self, n: u32) -> Vec<String> {
        allocate(&self.inner.id, &mut self.state(), n)
    }

    /// Registers `name` as a kubelet would: the Node, then its status (allocatable and a
    /// Ready condition, `ready` or not).
    async fn create_node(&self, name: &str, ready: bool) -> Result<(), kube::Error> {
        let nodes: Api<Node> = Api::all(self.inner.client.clone());
        let node = Node {
            metadata: ObjectMeta {
                name: Some(name.to_string()),
                labels: Some(BTreeMap::from([
                    (POOL_LABEL.to_string(), self.inner.id.clone()),
                    ("kubernetes.io/hostname".to_string(), name.to_string()),
                ])),
                ..Default::default()
            },
            spec: Some(NodeSpec {
                provider_id: Some(format!("test://{name}")),
                // As a real cluster does while a node registers (lifted in `boot`).
                taints: (!ready).then(|| {
                    vec![k8s_openapi::api::core::v1::Taint {
                        key: NOT_READY_TAINT.to_string(),
                        effect: "NoSchedule".to_string(),
                        ..Default::default()
                    }]
                }),
                ..Default::default()
            }),
            ..Default::default()
        };
        match nodes.create(&PostParams::default(), &node).await {
            Ok(_) => {}
            // A retry after a lost answer.
            Err(kube::Error::Api(s)) if s.code == 409 => {}
            Err(e) => return Err(e),
        }
        self.patch_status(name, ready).await
    }

    async fn untaint(&self, name: &str) -> Result<(), kube::Error> {
        let nodes: Api<Node> = Api::all(self.inner.client.clone());
        let patch = json!({"spec": {"taints": null}});
        nodes
            .patch(name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .map(|_| ())
    }

    async fn patch_status(&self, name: &str, ready: bool) -> Result<(), kube::Error> {
        let nodes: Api<Node> = Api::all(self.inner.client.clone());
        let now = Timestamp::now().strftime("%Y-%m-%dT%H:%M:%SZ").to_string();
        let size = self.inner.size;
        let resources = json!({"cpu": size.cpu, "memory": size.memory, "pods": size.pods});
        let (status, reason) = if ready {
            ("True", "KubeletReady")
        } else {
            ("False", "KubeletNotReady")
        };
        let patch = json!({"status": {
            "capacity": resources,
            "allocatable": resources,
            "conditions": [{
                "type": "Ready", "status": status, "reason": reason,
                "message": "kubescaler e2e test cloud",
                "lastHeartbeatTime": now, "lastTransitionTime": now,
            }],
        }});
        nodes
            .patch_status(name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .map(|_| ())
    }

    /// Boots `names` in the background: NotReady after half the boot delay, Ready after it.
    fn boot(&self, names: Vec<String>, guard: &mut CloudState) {
        let cloud = self.clone();
        let half = self.inner.boot_delay / 2;
        let task = tokio::spawn(async move {
            tokio::time::sleep(half).await;
            for name in &names {
                cloud
                    .retry(&format!("register node {name}"), || {
                        cloud.create_node(name, false)
                    })
                    .await;
            }
            tokio::time::sleep(half).await;
            for name in &names {
                cloud
                    .retry(&format!("mark node {name} Ready"), || {
                        cloud.patch_status(name, true)
                    })
                    .await;
                // The lifecycle controller lifts the taint a moment after Ready.
                cloud
                    .retry(&format!("untaint node {name}"), || cloud.untaint(name))
                    .await;
            }
        });
        guard.boots.push(task.abort_handle());
    }

    /// Retries an API call for up to [`WAIT`] (the API server may be restarting).
    async fn retry<F, Fut>(&self, what: &str, mut call: F)
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<(), kube::Error>>,
    {
        let start = Instant::now();
        loop {
            match call().await {
                Ok(()) => return,
                Err(e) if start.elapsed() < WAIT => {
                    eprintln!("test cloud {}: {what}: {e}; retrying", self.inner.id);
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
                Err(e) => {
                    eprintln!("test cloud {}: {what}: {e}; giving up", self.inner.id);
                    return;
                }
            }
        }
    }

    /// The pool's target size.
    pub fn target(&self) -> u32 {
        self.state().target
    }

    /// The highest target the pool ever had.
    pub fn max_target(&self) -> u32 {
        self.state().max_target
    }

    /// Every call the loop made, in order.
    pub fn calls(&self) -> Vec<Call> {
        self.state().calls.clone()
    }

    /// Calls made in `[from, to]`.
    pub fn calls_between(&self, from: Timestamp, to: Timestamp) -> Vec<Call> {
        self.calls()
            .into_iter()
            .filter(|c| c.at >= from && c.at <= to)
            .collect()
    }

    /// Reconcile passes finished so far by the loop that drives this cloud.
    pub fn passes(&self) -> usize {
        self.state()
            .loop_telemetry
            .as_ref()
            .map_or(0, |t| t.passes() as usize)
    }

    /// Counts the passes of the loop reporting into `telemetry`.
    pub fn count_passes_of(&self, telemetry: Arc<kubescaler::telemetry::Telemetry>) {
        self.state().loop_telemetry = Some(telemetry);
    }

    /// When the loop asked to delete `node`, once the cloud has deleted it (`None` before).
    pub fn deleted_at(&self, node: &str) -> Option<Timestamp> {
        let st = self.state();
        if !st.removed.iter().any(|n| n == node) {
            return None;
        }
        st.calls.iter().find_map(|c| match &c.op {
            Op::Delete(names) if names.iter().any(|n| n == node) => Some(c.at),
            _ => None,
        })
    }

    /// Nodes the cloud has deleted (target lowered, Node object gone), in order.
    pub fn deleted_nodes(&self) -> Vec<String> {
        self.state().removed.clone()
    }

    /// Every node the loop asked to delete, whether or not the deletion is done or worked.
    pub fn delete_requests(&self) -> Vec<String> {
        self.calls()
            .into_iter()
            .flat_map(|c| match c.op {
                Op::Delete(names) => names,
                _ => vec![],
            })
            .collect()
    }

    /// The cloud's instances (booting or running).
    pub fn instances(&self) -> Vec<String> {
        self.state().instances.iter().cloned().collect()
    }

    /// Game server pods that were still bound to a node when it was deleted: must stay 0.
    pub fn lost_servers(&self) -> usize {
        self.state().lost.len()
    }

    /// Which servers were lost, for messages.
    pub fn lost_detail(&self) -> Vec<LostServer> {
        self.state().lost.clone()
    }

    /// Stops booting nodes and refuses growth from now on (test cleanup).
    pub fn close(&self) {
        let mut st = self.state();
        st.closed = true;
        for boot in st.boots.drain(..) {
            boot.abort();
        }
    }

    /// Live, non-terminal game server pods bound to `node`.
    async fn servers_on(&self, node: &str) -> Result<Vec<String>, kube::Error> {
        let pods: Api<Pod> = Api::all(self.inner.client.clone());
        let params = ListParams::default()
            .labels(&format!("{SERVER_LABEL}={}", self.inner.id))
            .fields(&format!("spec.nodeName={node}"));
        let list = pods.list(&params).await?;
        Ok(list
            .items
            .iter()
            .filter(|p| !is_terminal(p))
            .map(|p| {
                format!(
                    "{}/{}",
                    p.metadata.namespace.as_deref().unwrap_or_default(),
                    p.metadata.name.as_deref().unwrap_or_default()
                )
            })
            .collect())
    }

    async fn delete_one(&self, node: &NodeRef) -> Result<(), ProviderError> {
        let api = |op: &str, e: kube::Error| ProviderError::Api {
            provider: PROVIDER,
            op: format!("{op} {}", node.name),
            message: e.to_string(),
        };
        if !self.state().instances.contains(&node.name) {
            return Err(ProviderError::UnknownNode {
                provider: PROVIDER,
                node: node.name.clone(),
            });
        }
        let expected = format!("test://{}", node.name);
        if node.provider_id.as_deref() != Some(expected.as_str()) {
            return Err(ProviderError::Refused {
                provider: PROVIDER,
                reason: format!(
                    "node {} has providerID {:?}, the cloud knows it as {expected}",
                    node.name, node.provider_id
                ),
            });
        }
        // What the machine is running at the moment it goes away.
        let running = self
            .servers_on(&node.name)
            .await
            .map_err(|e| api("list server pods on", e))?;
        let nodes: Api<Node> = Api::all(self.inner.client.clone());
        match nodes.delete(&node.name, &DeleteParams::default()).await {
            Ok(_) => {}
            Err(kube::Error::Api(s)) if s.code == 404 => {}
            Err(e) => return Err(api("delete node", e)),
        }
        let mut st = self.state();
        st.lost.extend(running.into_iter().map(|pod| LostServer {
            node: node.name.clone(),
            pod,
        }));
        st.instances.remove(&node.name);
        st.removed.push(node.name.clone());
        st.target = st.target.saturating_sub(1);
        Ok(())
    }
}

/// Reserves `n` new instance names of pool `id` and raises the target by `n`.
fn allocate(id: &str, st: &mut CloudState, n: u32) -> Vec<String> {
    let names: Vec<String> = (0..n)
        .map(|i| format!("{id}-n{}", st.next_index + i))
        .collect();
    st.next_index += n;
    st.target += n;
    st.max_target = st.max_target.max(st.target);
    st.instances.extend(names.iter().cloned());
    names
}

#[async_trait]
impl NodePoolProvider for TestCloud {
    async fn pool(&self) -> Result<CloudPool, ProviderError> {
        self.record(Op::TargetSize);
        let st = self.state();
        Ok(CloudPool {
            target: st.target,
            nodes: st
                .instances
                .iter()
                .map(|name| CloudNode {
                    id: format!("test://{name}"),
                    name: name.clone(),
                    status: InstanceStatus::Running,
                    state: "running".into(),
                    provider_id: Some(format!("test://{name}")),
                    created: None,
                })
                .collect(),
            template: None,
        })
    }

    async fn grow_to(&self, target: u32) -> Result<(), ProviderError> {
        self.record(Op::GrowTo(target));
        let mut st = self.state();
        if st.closed {
            return Err(ProviderError::Refused {
                provider: PROVIDER,
                reason: "the test is over".into(),
            });
        }
        if target < st.target {
            return Err(ProviderError::Refused {
                provider: PROVIDER,
                reason: format!("grow_to({target}) would lower the target {}", st.target),
            });
        }
        let n = target - st.target;
        let names = allocate(&self.inner.id, &mut st, n);
        if !names.is_empty() {
            self.boot(names, &mut st);
        }
        Ok(())
    }

    async fn delete_instance(&self, node: &CloudNode) -> Result<(), ProviderError> {
        self.record(Op::Delete(vec![node.name.clone()]));
        self.delete_one(&NodeRef {
            name: node.name.clone(),
            provider_id: node.provider_id.clone(),
            labels: Default::default(),
            identity_annotations: Default::default(),
        })
        .await
    }
}

/// Whether a pod is Succeeded or Failed.
pub fn is_terminal(pod: &Pod) -> bool {
    pod.status
        .as_ref()
        .and_then(|s| s.phase.as_deref())
        .is_some_and(|p| p == "Succeeded" || p == "Failed")
}

/// What the node watch of a test saw happen to one node.
#[derive(Clone, Debug, Default)]
pub struct NodeHistory {
    /// First time it was seen unschedulable.
    pub cordoned_at: Option<Timestamp>,
    /// First time it was seen schedulable again after being unschedulable.
    pub uncordoned_at: Option<Timestamp>,
    /// When its deletion was seen.
    pub deleted_at: Option<Timestamp>,
    /// `spec.unschedulable` as last seen.
    pub unschedulable: bool,
    /// The kubescaler annotations as last seen.
    pub marks: BTreeMap<String, String>,
}

/// A watch on a pool's nodes recording every cordon and uncordon, so a test can check that
/// something never happened even briefly.
pub struct NodeObserver {
    seen: Arc<Mutex<BTreeMap<String, NodeHistory>>>,
    task: AbortHandle,
}

impl Drop for NodeObserver {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl NodeObserver {
    /// Starts watching the nodes labelled `POOL_LABEL=id`.
    pub fn start(client: Client, id: &str) -> Self {
        let seen: Arc<Mutex<BTreeMap<String, NodeHistory>>> = Arc::default();
        let config = watcher::Config::default().labels(&format!("{POOL_LABEL}={id}"));
        let stream = watcher(Api::<Node>::all(client), config).default_backoff();
        let record = Arc::clone(&seen);
        let task = tokio::spawn(async move {
            let mut stream = std::pin::pin!(stream);
            while let Some(event) = stream.next().await {
                let now = Timestamp::now();
                let mut seen = record.lock().unwrap_or_else(PoisonError::into_inner);
                match event {
                    Ok(Event::Apply(node) | Event::InitApply(node)) => {
                        let name = node.metadata.name.clone().unwrap_or_default();
                        let h = seen.entry(name).or_default();
                        let unschedulable = node
                            .spec
                            .as_ref()
                            .and_then(|s| s.unschedulable)
                            .unwrap_or(false);
                        if unschedulable && h.cordoned_at.is_none() {
                            h.cordoned_at = Some(now);
                        }
                        if !unschedulable && h.unschedulable && h.uncordoned_at.is_none() {
                            h.uncordoned_at = Some(now);
                        }
                        h.unschedulable = unschedulable;
                        h.marks = node
                            .metadata
                            .annotations
                            .unwrap_or_default()
                            .into_iter()
                            .filter(|(k, _)| k.starts_with("kubescaler/"))
                            .collect();
                    }
                    Ok(Event::Delete(node)) => {
                        let name = node.metadata.name.clone().unwrap_or_default();
                        seen.entry(name).or_default().deleted_at.get_or_insert(now);
                    }
                    Ok(Event::Init | Event::InitDone) | Err(_) => {}
                }
            }
        });
        NodeObserver {
            seen,
            task: task.abort_handle(),
        }
    }

    /// What was seen of `node` so far.
    pub fn history(&self, node: &str) -> NodeHistory {
        self.seen
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(node)
            .cloned()
            .unwrap_or_default()
    }

    /// Nodes seen cordoned at least once.
    pub fn ever_cordoned(&self) -> BTreeSet<String> {
        self.seen
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .filter(|(_, h)| h.cordoned_at.is_some())
            .map(|(n, _)| n.clone())
            .collect()
    }
}

/// A running kubescaler: the real [`Scaler::run`] loop with a fresh [`KubeCluster`], in a task.
///
/// Dropping it stops the loop at once (and with it the cluster's watches).
pub struct ScaleLoop {
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
    /// The loop's view of the cluster (shared with the loop), to check its sync state.
    pub cluster: Arc<KubeCluster>,
}

impl ScaleLoop {
    /// Starts the loop of `config` on `client` and `cloud`; logs carry `id`.
    pub fn start(client: Client, config: &Config, cloud: &TestCloud, id: &str) -> Self {
        Self::start_with(client, config, cloud, id, |cluster| cluster)
    }

    /// [`ScaleLoop::start`], the loop seeing the cluster through `view` (given the real
    /// cluster view): a test seam that acts between two of kubescaler's API calls.
    pub fn start_with(
        client: Client,
        config: &Config,
        cloud: &TestCloud,
        id: &str,
        view: impl FnOnce(Arc<KubeCluster>) -> Arc<dyn Kubernetes>,
    ) -> Self {
        let counter = cloud.clone();
        Self::start_on(
            client,
            config,
            Arc::new(cloud.clone()),
            move |telemetry| counter.count_passes_of(telemetry),
            id,
            view,
        )
    }

    /// [`ScaleLoop::start_with`] on any provider (a real driver against a stand-in);
    /// `telemetry` is handed the loop's telemetry before it starts.
    pub fn start_on(
        client: Client,
        config: &Config,
        provider: Arc<dyn NodePoolProvider>,
        telemetry_hook: impl FnOnce(Arc<kubescaler::telemetry::Telemetry>),
        id: &str,
        view: impl FnOnce(Arc<KubeCluster>) -> Arc<dyn Kubernetes>,
    ) -> Self {
        let cluster = KubeCluster::start(
            client,
            &config.node_selector,
            (
                config.server_pod_label_name.clone(),
                config.server_pod_label_value.clone(),
            ),
        );
        // As `KubeCluster::connect` builds it for the daemon.
        let cluster = Arc::new(match config.server_source {
            ServerSource::Pods => cluster,
            ServerSource::Agones => {
                cluster.with_agones(config.agones.buffer == AgonesBuffer::FleetAutoscalers)
            }
        });
        let telemetry = Arc::new(kubescaler::telemetry::Telemetry::new(Duration::from_secs(
            config.scale_loop_tick_sec.max(1),
        )));
        let own = Arc::clone(&telemetry);
        telemetry_hook(own);
        let scaler =
            Scaler::new(view(Arc::clone(&cluster)), provider, config).with_telemetry(telemetry);
        let (stop, stopped) = oneshot::channel::<()>();
        let span = tracing::info_span!("kubescaler", pool = %id);
        let task = tokio::spawn(
            scaler
                .run(async move {
                    let _ = stopped.await;
                })
                .instrument(span),
        );
        ScaleLoop {
            stop: Some(stop),
            task: Some(task),
            cluster,
        }
    }

    /// Signals shutdown and waits for the loop to return (it lets an in-flight pass finish).
    pub async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            let limit = kubescaler::scaler::SHUTDOWN_GRACE + Duration::from_secs(10);
            match tokio::time::timeout(limit, task).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => panic!("the scale loop task failed: {e}"),
                Err(_) => panic!("the scale loop did not stop within {limit:?}"),
            }
        }
    }
}

impl Drop for ScaleLoop {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

/// Where a new server pod goes.
#[derive(Clone, Copy, Debug)]
pub enum Placement<'a> {
    /// Left to kube-scheduler, restricted to the pool's nodes by a node selector.
    Scheduler,
    /// Bound to this node by the test (`spec.nodeName`), as if scheduled before the test.
    On(&'a str),
}

/// One test's pool: its ids, a client, its cloud and a watch on its nodes.
pub struct Pool {
    /// Unique id: the pool label value, the server label value and the name prefix.
    pub id: String,
    /// Client of the test API server.
    pub client: Client,
    /// The pool's cloud.
    pub cloud: TestCloud,
    /// The watch on the pool's nodes.
    pub observer: NodeObserver,
    next_pod: AtomicU32,
}

impl Pool {
    /// A new, empty pool of `size` nodes that boot in `boot_delay`.
    pub fn new(client: Client, tag: &str, size: NodeSize, boot_delay: Duration) -> Self {
        init_logs();
        let id = unique_id(tag);
        Pool {
            cloud: TestCloud::new(client.clone(), &id, size, boot_delay),
            observer: NodeObserver::start(client.clone(), &id),
            client,
            id,
            next_pod: AtomicU32::new(0),
        }
    }

    /// The loop's node selector.
    pub fn selector(&self) -> String {
        format!("{POOL_LABEL}={}", self.id)
    }

    /// kubescaler's configuration for this pool, loaded and validated like the daemon's: a
    /// 1 s tick, 1-CPU servers, min 1, max 10, buffer 2, 5 s expiration; `settings` are env
    /// vars (`BUFFER_SLOT_SIZE`...) that override or add to these.
    pub fn config(&self, settings: &[(&str, &str)]) -> Config {
        let mut env: BTreeMap<String, String> = [
            ("CLOUD_PROVIDER_TOKEN", "unused-by-the-test-cloud"),
            ("CLUSTER_NAME", "e2e"),
            ("NODE_POOL_NAME", "e2e"),
            ("SERVER_POD_LABEL_NAME", SERVER_LABEL),
            ("SCALE_LOOP_TICK_SEC", "1"),
            ("SERVER_CPU_RESOURCE_REQUEST", "1000m"),
            ("MINIMUM_NODE_POOL_SIZE", "1"),
            ("MAXIMUM_NODE_POOL_SIZE", "10"),
            ("BUFFER_SLOT_SIZE", "2"),
            ("EMPTY_NODE_EXPIRATION_SEC", "5"),
            // Scale-down at once, as these tests time it (the holds have tests of their own).
            ("SCALE_DOWN_UNNEEDED_SEC", "0"),
            ("SCALE_DOWN_DELAY_AFTER_ADD_SEC", "0"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        env.insert("NODE_SELECTOR".into(), self.selector());
        env.insert("SERVER_POD_LABEL_VALUE".into(), self.id.clone());
        for (k, v) in settings {
            env.insert(k.to_string(), v.to_string());
        }
        load(&ConfigSources {
            env,
            ..Default::default()
        })
        .unwrap_or_else(|e| panic!("config: {e}"))
    }

    /// Starts kubescaler on this pool.
    pub fn start_loop(&self, config: &Config) -> ScaleLoop {
        ScaleLoop::start(self.client.clone(), config, &self.cloud, &self.id)
    }

    /// Starts kubescaler on this pool, seeing the cluster through `view`
    /// ([`ScaleLoop::start_with`]).
    pub fn start_loop_with(
        &self,
        config: &Config,
        view: impl FnOnce(Arc<KubeCluster>) -> Arc<dyn Kubernetes>,
    ) -> ScaleLoop {
        ScaleLoop::start_with(self.client.clone(), config, &self.cloud, &self.id, view)
    }

    /// Starts kubescaler on this pool's nodes and server pods with another provider than the
    /// pool's [`TestCloud`] (which then stays empty but still counts the loop's passes, for
    /// [`Pool::wait_passes`]), seeing the cluster through `view`.
    pub fn start_loop_on(
        &self,
        config: &Config,
        provider: Arc<dyn NodePoolProvider>,
        view: impl FnOnce(Arc<KubeCluster>) -> Arc<dyn Kubernetes>,
    ) -> ScaleLoop {
        let counter = self.cloud.clone();
        ScaleLoop::start_on(
            self.client.clone(),
            config,
            provider,
            move |telemetry| counter.count_passes_of(telemetry),
            &self.id,
            view,
        )
    }

    fn pods(&self) -> Api<Pod> {
        Api::namespaced(self.client.clone(), NAMESPACE)
    }

    fn nodes_api(&self) -> Api<Node> {
        Api::all(self.client.clone())
    }

    /// Creates a game server pod requesting [`SERVER_CPU`]; returns its name.
    pub async fn create_server(&self, placement: Placement<'_>) -> String {
        let name = format!(
            "{}-s{}",
            self.id,
            self.next_pod.fetch_add(1, Ordering::Relaxed)
        );
        let (node_name, node_selector) = match placement {
            Placement::On(node) => (Some(node.to_string()), None),
            Placement::Scheduler => (
                None,
                Some(BTreeMap::from([(POOL_LABEL.to_string(), self.id.clone())])),
            ),
        };
        let pod = Pod {
            metadata: ObjectMeta {
                name: Some(name.clone()),
                namespace: Some(NAMESPACE.to_string()),
                labels: Some(BTreeMap::from([(
                    SERVER_LABEL.to_string(),
                    self.id.clone(),
                )])),
                ..Default::default()
            },
            spec: Some(PodSpec {
                node_name,
                node_selector,
                termination_grace_period_seconds: Some(0),
                containers: vec![Container {
                    name: "server".to_string(),
                    image: Some("registry.invalid/never-pulled:1".to_string()),
                    resources: Some(ResourceRequirements {
                        requests: Some(BTreeMap::from([(
                            "cpu".to_string(),
                            Quantity(SERVER_CPU.to_string()),
                        )])),
                        ..Default::default()
                    }),
                    ..Default::default()
                }],
                ..Default::default()
            }),
            ..Default::default()
        };
        self.pods()
            .create(&PostParams::default(), &pod)
            .await
            .unwrap_or_else(|e| panic!("create pod {name}: {e}"));
        name
    }

    /// Creates `n` server pods; returns their names.
    pub async fn create_servers(&self, n: usize, placement: Placement<'_>) -> Vec<String> {
        let mut names = Vec::with_capacity(n);
        for _ in 0..n {
            names.push(self.create_server(placement).await);
        }
        names
    }

    /// Ends a game server: deletes its pod with grace period 0, as a kubelet would confirm.
    pub async fn end_server(&self, name: &str) {
        let now = DeleteParams {
            grace_period_seconds: Some(0),
            ..Default::default()
        };
        match self.pods().delete(name, &now).await {
            Ok(_) => {}
            Err(kube::Error::Api(s)) if s.code == 404 => {}
            Err(e) => panic!("delete pod {name}: {e}"),
        }
    }

    /// The pool's server pods (non-terminal).
    pub async fn servers(&self) -> Vec<Pod> {
        let params = ListParams::default().labels(&format!("{SERVER_LABEL}={}", self.id));
        self.pods()
            .list(&params)
            .await
            .unwrap_or_else(|e| panic!("list server pods: {e}"))
            .items
            .into_iter()
            .filter(|p| !is_terminal(p))
            .collect()
    }

    /// Node of each server pod (`None`: not bound yet), by pod name.
    pub async fn placement(&self) -> BTreeMap<String, Option<String>> {
        self.servers()
            .await
            .into_iter()
            .map(|p| {
                (
                    p.metadata.name.unwrap_or_default(),
                    p.spec.and_then(|s| s.node_name),
                )
            })
            .collect()
    }

    /// The pool's nodes, by name.
    pub async fn nodes(&self) -> BTreeMap<String, Node> {
        self.nodes_api()
            .list(&ListParams::default().labels(&self.selector()))
            .await
            .unwrap_or_else(|e| panic!("list nodes: {e}"))
            .items
            .into_iter()
            .map(|n| (n.metadata.name.clone().unwrap_or_default(), n))
            .collect()
    }

    /// Whether `node` exists.
    pub async fn node_exists(&self, node: &str) -> bool {
        match self.nodes_api().get_opt(node).await {
            Ok(n) => n.is_some(),
            Err(e) => panic!("get node {node}: {e}"),
        }
    }

    /// Free server slots on the Ready, schedulable pool nodes, counted from the API server.
    pub async fn free_slots(&self) -> u32 {
        let nodes = self.nodes().await;
        let placement = self.placement().await;
        let slots = self.cloud.inner.size.slots;
        nodes
            .iter()
            .filter(|(_, n)| !is_unschedulable(n) && is_ready(n))
            .map(|(name, _)| {
                let used = placement
                    .values()
                    .filter(|p| p.as_deref() == Some(name))
                    .count() as u32;
                slots.saturating_sub(used)
            })
            .sum()
    }

    /// Cordons `node` the way an administrator does (`kubectl cordon`): `spec.unschedulable`
    /// only, no kubescaler mark.
    pub async fn admin_cordon(&self, node: &str) {
        let patch = json!({"spec": {"unschedulable": true}});
        self.nodes_api()
            .patch(node, &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .unwrap_or_else(|e| panic!("cordon node {node}: {e}"));
    }

    /// The `kubescaler/timestamp` of `node`, once kubescaler has cordoned it.
    pub async fn wait_cordoned_by_kubescaler(&self, node: &str, timeout: Duration) -> Timestamp {
        let what = format!("kubescaler to cordon node {node}");
        eventually(&what, timeout, || async {
            let n = self.nodes_api().get_opt(node).await.ok()??;
            if !is_unschedulable(&n) {
                return None;
            }
            let ann = n.metadata.annotations.unwrap_or_default();
            if ann.get(CORDONED_BY_ANNOTATION).map(String::as_str) != Some("kubescaler") {
                return None;
            }
            ann.get(TIMESTAMP_ANNOTATION)?.parse::<Timestamp>().ok()
        })
        .await
    }

    /// Waits until the loop made `n` more passes (each asks the cloud for its target once).
    pub async fn wait_passes(&self, n: usize) {
        let start = self.cloud.passes();
        eventually(&format!("{n} more reconcile passes"), WAIT, || async {
            (self.cloud.passes() >= start + n).then_some(())
        })
        .await;
    }

    /// A description of the pool for failure messages.
    pub async fn dump(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "pool {}: cloud target {}",
            self.id,
            self.cloud.target()
        );
        if let Ok(list) = self
            .nodes_api()
            .list(&ListParams::default().labels(&self.selector()))
            .await
        {
            for n in list.items {
                let name = n.metadata.name.clone().unwrap_or_default();
                let _ = writeln!(
                    out,
                    "  node {name}: ready={} unschedulable={} marks={:?}",
                    is_ready(&n),
                    is_unschedulable(&n),
                    n.metadata
                        .annotations
                        .unwrap_or_default()
                        .into_iter()
                        .filter(|(k, _)| k.starts_with("kubescaler/"))
                        .collect::<BTreeMap<_, _>>()
                );
            }
        }
        let params = ListParams::default().labels(&format!("{SERVER_LABEL}={}", self.id));
        if let Ok(list) = self.pods().list(&params).await {
            for p in list.items {
                let _ = writeln!(
                    out,
                    "  pod {}: node={:?}",
                    p.metadata.name.unwrap_or_default(),
                    p.spec.and_then(|s| s.node_name)
                );
            }
        }
        for c in self.cloud.calls().iter().filter(|c| c.op != Op::TargetSize) {
            let _ = writeln!(out, "  cloud call at {}: {:?}", c.at, c.op);
        }
        out
    }

    /// Deletes everything of this pool: stops the cloud's boots, then deletes its server pods
    /// and its nodes by label. Errors are reported, not fatal.
    pub async fn cleanup(&self) {
        self.cloud.close();
        let now = DeleteParams {
            grace_period_seconds: Some(0),
            ..Default::default()
        };
        let servers = ListParams::default().labels(&format!("{SERVER_LABEL}={}", self.id));
        if let Err(e) = self.pods().delete_collection(&now, &servers).await {
            eprintln!("cleanup {}: delete server pods: {e}", self.id);
        }
        let nodes = ListParams::default().labels(&self.selector());
        if let Err(e) = self.nodes_api().delete_collection(&now, &nodes).await {
            eprintln!("cleanup {}: delete nodes: {e}", self.id);
        }
    }

    /// Runs `body`, then [`Pool::cleanup`] whatever happened (printing the pool's state first
    /// if `body` failed), then re-raises a failure of `body`. Loops started inside `body` are
    /// stopped when it ends, since dropping a [`ScaleLoop`] stops it.
    pub async fn run<Fut: Future<Output = ()>>(&self, body: Fut) {
        let outcome = AssertUnwindSafe(body).catch_unwind().await;
        if outcome.is_err() {
            eprintln!("test failed; state of the pool:\n{}", self.dump().await);
        }
        self.cleanup().await;
        if let Err(panic) = outcome {
            std::panic::resume_unwind(panic);
        }
    }

    /// Asserts that no game server was lost and, for the message, says which were.
    pub fn assert_no_lost_servers(&self) {
        assert_eq!(
            self.cloud.lost_servers(),
            0,
            "nodes deleted with game servers on them: {:?}",
            self.cloud.lost_detail()
        );
    }
}

/// `spec.unschedulable` of a node.
pub fn is_unschedulable(node: &Node) -> bool {
    node.spec
        .as_ref()
        .and_then(|s| s.unschedulable)
        .unwrap_or(false)
}

/// Whether a node's Ready condition is True.
pub fn is_ready(node: &Node) -> bool {
    node.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

/// Whether `node` carries kubescaler's cordon mark.
pub fn has_kubescaler_mark(node: &Node) -> bool {
    node.metadata.annotations.as_ref().is_some_and(|a| {
        a.contains_key(CORDONED_BY_ANNOTATION) || a.contains_key(TIMESTAMP_ANNOTATION)
    })
}
