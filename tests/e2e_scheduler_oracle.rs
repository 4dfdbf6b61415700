//! The scheduler is the oracle: for randomized pools, the free slots kubescaler counts must be
//! exactly the number of server pods the real kube-scheduler binds when asked to place one more
//! than that count (so exactly one stays Pending), and per node, the servers the scheduler
//! bound there must equal kubescaler's free slots of that node. (Should all of them find a
//! place, more are added until one stays Pending, so the per-node figures show the scheduler's
//! real capacity.)
//!
//! Each pool is built from its own seed (printed; replay with `KUBESCALER_ORACLE_SEED=<seed>`
//! and `KUBESCALER_ORACLE_POOLS=1`): 2-6 nodes of mixed size (allocatable cpu 1-8 cores,
//! memory in binary and decimal units, capacity above allocatable, a pod limit that is
//! sometimes tiny), taints the servers tolerate or not, cordoned nodes, NotReady nodes (with the
//! not-ready taints the node lifecycle controller would add), Ready nodes still carrying a
//! lifecycle taint, and pods pinned by `spec.nodeName` (bypassing the scheduler, like DaemonSet
//! pods): daemon-like pods (owner DaemonSet), other servers, plain pods in three namespaces,
//! with init containers, sidecars (init containers with `restartPolicy: Always`), RuntimeClass
//! overhead, pod-level requests, limit-only containers, ephemeral-storage requests, terminal
//! pods (Succeeded/Failed through the status subresource), terminating pods (deleted with a
//! grace period, which without a kubelet never ends) and pods whose container statuses report
//! an in-place resize under way. The server shape and tolerations (sometimes `*`) come from
//! kubescaler's own config keys (buffer 0).
//!
//! `KUBESCALER_ORACLE_POOLS` (default 30) sets the number of pools; the seeds are
//! `KUBESCALER_ORACLE_SEED` (default: from the clock) and the following integers. Every pool
//! runs even after a disagreement; the test fails at the end with all of them, each node that
//! disagrees described and tagged with the minimised case it matches, if any.
//!
//! The `minimal_*` tests are those cases, one node each: they fail as long as kubescaler
//! counts differently from the scheduler there.
//!
//! Gated by `tests/cluster` (`KUBESCALER_E2E_KUBECONFIG`). About 1.5 s per pool, under a
//! minute for the file on a busy 2-core machine.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::future::Future;
use std::io::Write as _;
use std::panic::AssertUnwindSafe;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use futures::{FutureExt, StreamExt};
use k8s_openapi::api::core::v1::{Node, Pod};
use k8s_openapi::api::node::v1::RuntimeClass;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::Client;
use kubescaler::config::{load, Config, ConfigSources};
use kubescaler::kubernetes::{KubeCluster, Kubernetes};
use kubescaler::model::ClusterSnapshot;
use kubescaler::planner::{plan, PlannerConfig};
use rand_chacha::rand_core::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde_json::{json, Map, Value};

mod cluster;
use cluster::client_or_skip;

/// Namespaces the pinned pods are spread over (the API server creates all three).
const NAMESPACES: [&str; 3] = ["default", "kube-system", "kube-public"];
/// Where the server pods go.
const SERVER_NAMESPACE: &str = "default";
/// Label on everything of one test run (cleanup).
const RUN_LABEL: &str = "kubescaler-oracle/run";
/// Label on the nodes and pods of one pool: the node selector; on server pods, the server label.
const POOL_LABEL: &str = "kubescaler-oracle/pool";
/// Server label name (its value is the pool id).
const SERVER_LABEL: &str = "kubescaler-oracle/server";
/// Label of the server pods the scheduler places (not of the servers pinned beforehand).
const PLACED_LABEL: &str = "kubescaler-oracle/placed";
/// Longest wait for the caches or the scheduler.
const WAIT: Duration = Duration::from_secs(180);
/// Servers added at most past kubescaler's count + 1 to find the scheduler's capacity.
const MAX_EXTRA_SERVERS: usize = 400;
/// Pools per run unless `KUBESCALER_ORACLE_POOLS` says otherwise.
const DEFAULT_POOLS: u64 = 30;

/// Writes past libtest's capture, so progress shows in a plain `cargo test`.
macro_rules! say {
    ($($arg:tt)*) => {{
        let _ = writeln!(std::io::stderr(), $($arg)*);
    }};
}

/// The seeded randomness of one pool.
struct Dice(ChaCha8Rng);

impl Dice {
    fn new(seed: u64) -> Self {
        Dice(ChaCha8Rng::seed_from_u64(seed))
    }
    /// Uniform in `lo..=hi`.
    fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.0.next_u64() % (hi - lo + 1)
    }
    fn chance(&mut self, percent: u64) -> bool {
        self.range(0, 99) < percent
    }
    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.range(0, items.len() as u64 - 1) as usize]
    }
}

/// A CPU amount in one of the forms the API accepts (`1500m`, `1.5`, `2`).
fn cpu_quantity(d: &mut Dice, millis: u64) -> String {
    match d.range(0, 2) {
        0 => format!("{millis}m"),
        _ if millis.is_multiple_of(1000) => format!("{}", millis / 1000),
        1 => {
            let frac = format!("{:03}", millis % 1000);
            format!("{}.{}", millis / 1000, frac.trim_end_matches('0'))
        }
        _ => format!("{millis}m"),
    }
}

/// A memory amount in one of the exact forms its value allows (`Gi`, `Mi`, `Ki`, `M`, `e6`,
/// `k`, bytes).
fn memory_quantity(d: &mut Dice, bytes: u64) -> String {
    let mut forms = vec![format!("{bytes}")];
    if bytes.is_multiple_of(1 << 30) {
        forms.push(format!("{}Gi", bytes >> 30));
    }
    if bytes.is_multiple_of(1 << 20) {
        forms.push(format!("{}Mi", bytes >> 20));
    }
    if bytes.is_multiple_of(1 << 10) {
        forms.push(format!("{}Ki", bytes >> 10));
    }
    if bytes.is_multiple_of(1_000_000) {
        forms.push(format!("{}M", bytes / 1_000_000));
        forms.push(format!("{}e6", bytes / 1_000_000));
    }
    if bytes.is_multiple_of(1000) {
        forms.push(format!("{}k", bytes / 1000));
    }
    d.pick(&forms).clone()
}

/// Node taints `(key, value, effect)` the pools draw from.
const TAINTS: &[(&str, &str, &str)] = &[
    ("dedicated", "games", "NoSchedule"),
    ("dedicated", "web", "NoSchedule"),
    ("dedicated", "games", "NoExecute"),
    ("gpu", "", "NoSchedule"),
    ("spot", "true", "PreferNoSchedule"),
    ("maintenance", "", "NoExecute"),
    ("example.com/team", "a", "NoSchedule"),
];

/// Taints the node lifecycle controller and the cloud controller manager manage. Every pod
/// tolerates the two NoExecute ones for 300 s (admission plugin DefaultTolerationSeconds).
const LIFECYCLE_TAINTS: &[(&str, &str, &str)] = &[
    (
        "node.cloudprovider.kubernetes.io/uninitialized",
        "true",
        "NoSchedule",
    ),
    ("node.kubernetes.io/not-ready", "", "NoSchedule"),
    ("node.kubernetes.io/not-ready", "", "NoExecute"),
    ("node.kubernetes.io/unreachable", "", "NoExecute"),
];

/// Whether a taint is one of [`LIFECYCLE_TAINTS`]' keys.
fn is_lifecycle(key: &str) -> bool {
    LIFECYCLE_TAINTS.iter().any(|t| t.0 == key)
}

/// Server tolerations: the `server-pod-tolerations` item and, written independently of
/// kubescaler's parser, the Kubernetes toleration the server pods carry.
fn toleration_catalogue() -> Vec<(&'static str, Value)> {
    vec![
        // No "*" or node.kubernetes.io/unschedulable: kubescaler refuses tolerations that let
        // servers onto the nodes it cordons (tests/config_validation.rs).
        (
            "dedicated=games:NoSchedule",
            json!({"key": "dedicated", "operator": "Equal", "value": "games", "effect": "NoSchedule"}),
        ),
        (
            "dedicated=games",
            json!({"key": "dedicated", "operator": "Equal", "value": "games"}),
        ),
        (
            "dedicated",
            json!({"key": "dedicated", "operator": "Exists"}),
        ),
        (
            "dedicated:NoExecute",
            json!({"key": "dedicated", "operator": "Exists", "effect": "NoExecute"}),
        ),
        (
            "gpu:NoSchedule",
            json!({"key": "gpu", "operator": "Exists", "effect": "NoSchedule"}),
        ),
        (
            "gpu=:NoSchedule",
            json!({"key": "gpu", "operator": "Equal", "value": "", "effect": "NoSchedule"}),
        ),
        (
            "maintenance",
            json!({"key": "maintenance", "operator": "Exists"}),
        ),
        (
            "example.com/team=a",
            json!({"key": "example.com/team", "operator": "Equal", "value": "a"}),
        ),
        (
            "spot=true:PreferNoSchedule",
            json!({"key": "spot", "operator": "Equal", "value": "true", "effect": "PreferNoSchedule"}),
        ),
    ]
}

/// One node of a pool.
struct NodePlan {
    name: String,
    cpu_millis: u64,
    cpu: String,
    memory: String,
    pods: u32,
    taints: Vec<(&'static str, &'static str, &'static str)>,
    unschedulable: bool,
    ready: bool,
}

/// What happens to a pinned pod after it is created.
#[derive(Clone, Debug, PartialEq)]
enum After {
    /// Stays Pending (bound, no kubelet to run it).
    Nothing,
    /// Its status is patched with this, as a kubelet would: phase Running, Succeeded or
    /// Failed (terminal: holds nothing any more), container statuses.
    Status(Value),
    /// Deleted with a long grace period: still holds its resources.
    Terminating,
}

/// A pod pinned to a node of the pool.
struct PinnedPod {
    namespace: &'static str,
    name: String,
    node: String,
    body: Value,
    after: After,
    kind: &'static str,
}

impl PinnedPod {
    fn key(&self) -> String {
        format!("{}/{}", self.namespace, self.name)
    }
    /// Whether it still occupies its node once set up.
    fn occupies(&self) -> bool {
        !self.is_terminal()
    }
    fn is_terminal(&self) -> bool {
        matches!(&self.after, After::Status(s) if matches!(s["phase"].as_str(), Some("Succeeded" | "Failed")))
    }
    /// Whether its container statuses report resources (an in-place resize under way).
    fn is_resizing(&self) -> bool {
        matches!(&self.after, After::Status(s) if s.get("containerStatuses").is_some())
    }
}

/// One randomized pool.
struct PoolPlan {
    seed: u64,
    id: String,
    /// Millicores of one server.
    slot_cpu_millis: u64,
    /// `server-cpu-resource-request` as configured (a bare integer is millicores there).
    slot_cpu_config: String,
    /// Memory of one server: bytes and the quantity used both in the config and the pods.
    slot_memory: Option<(u64, String)>,
    tolerations: Vec<(&'static str, Value)>,
    nodes: Vec<NodePlan>,
    pods: Vec<PinnedPod>,
}

/// The run's RuntimeClasses: name and `overhead.podFixed`.
fn runtime_classes(run: &str) -> Vec<(String, Value)> {
    vec![
        (
            format!("{run}-overhead-a"),
            json!({"cpu": "100m", "memory": "64Mi"}),
        ),
        (format!("{run}-overhead-b"), json!({"cpu": "250m"})),
        (format!("{run}-overhead-c"), json!({"memory": "300M"})),
    ]
}

/// Container `resources` with random requests (or only limits, which the API server copies
/// into the requests); adds the requested cpu and memory to `total`.
fn container_resources(d: &mut Dice, total: &mut (u64, u64)) -> Value {
    let limits_only = d.chance(12);
    let mut list = Map::new();
    if d.chance(85) || limits_only {
        let millis = d.range(u64::from(limits_only), 20) * 50;
        total.0 += millis;
        list.insert("cpu".into(), cpu_quantity(d, millis).into());
    }
    if d.chance(60) {
        let bytes = if d.chance(70) {
            d.range(1, 48) * (32 << 20)
        } else {
            d.range(1, 15) * 100_000_000
        };
        total.1 += bytes;
        list.insert("memory".into(), memory_quantity(d, bytes).into());
    }
    if d.chance(15) {
        list.insert("ephemeral-storage".into(), "1Gi".into());
    }
    if limits_only {
        json!({"limits": list})
    } else if d.chance(15) {
        // Limits above the requests: only the requests count.
        let mut limits = Map::new();
        for k in list.keys() {
            limits.insert(
                k.clone(),
                match k.as_str() {
                    "cpu" => "16".into(),
                    "memory" => "64Gi".into(),
                    _ => "100Gi".into(),
                },
            );
        }
        json!({"requests": list, "limits": limits})
    } else {
        json!({"requests": list})
    }
}

/// The status a kubelet reports while an in-place resize of the app containers is under way:
/// what each container actually runs with (`resources`, `allocatedResources`, for the
/// resources its spec requests) differs from its spec, sometimes with the resize marked
/// infeasible. kube-scheduler counts the larger of spec and status, or the status alone when
/// the resize is infeasible.
fn resize_status(d: &mut Dice, spec: &Value) -> Value {
    let statuses: Vec<Value> = spec["containers"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|c| {
            let r = &c["resources"];
            let named = |key: &str| r["requests"].get(key).or(r["limits"].get(key)).is_some();
            let mut actual = Map::new();
            if named("cpu") {
                actual.insert("cpu".into(), format!("{}m", d.range(1, 30) * 50).into());
            }
            if named("memory") {
                actual.insert("memory".into(), format!("{}Mi", d.range(1, 24) * 64).into());
            }
            json!({
                "name": c["name"],
                "image": c["image"],
                "imageID": "",
                "ready": true,
                "restartCount": 0,
                "state": {"running": {}},
                "resources": {"requests": actual},
                "allocatedResources": actual,
            })
        })
        .collect();
    let mut status = json!({"phase": "Running", "containerStatuses": statuses});
    if d.chance(30) {
        status["conditions"] = json!([{
            "type": "PodResizePending",
            "status": "True",
            "reason": "Infeasible",
            "message": "oracle",
        }]);
    }
    status
}

fn container(name: &str, resources: Value) -> Value {
    json!({
        "name": name,
        "image": "registry.invalid/never-pulled:1",
        "resources": resources,
    })
}

impl PoolPlan {
    fn generate(seed: u64, run: &str, index: usize) -> PoolPlan {
        let mut d = Dice::new(seed);
        let id = format!("{run}-p{index}");

        let slot_cpu_millis = *d.pick(&[250, 300, 500, 600, 750, 1000, 1250, 1500, 2000]);
        let slot_cpu_config = match d.range(0, 2) {
            0 => format!("{slot_cpu_millis}"),
            1 => format!("{slot_cpu_millis}m"),
            // A decimal point makes it a quantity of cores ("2" alone would be millicores).
            _ => {
                let frac = format!("{:03}", slot_cpu_millis % 1000);
                let frac = frac.trim_end_matches('0');
                format!(
                    "{}.{}",
                    slot_cpu_millis / 1000,
                    if frac.is_empty() { "0" } else { frac }
                )
            }
        };
        let slot_memory = d.chance(50).then(|| {
            *d.pick(&[
                (256 << 20, "256Mi"),
                (512 << 20, "512Mi"),
                (1 << 30, "1Gi"),
                (1536 << 20, "1536Mi"),
                (2 << 30, "2Gi"),
                (1_000_000_000, "1G"),
                (700_000_000, "700M"),
                (300_000_000, "3e8"),
            ])
        });
        let slot_memory = slot_memory.map(|(b, q)| (b, q.to_string()));

        let catalogue = toleration_catalogue();
        let mut tolerations = Vec::new();
        for t in &catalogue {
            // The two that also tolerate a cordon are rarer.
            let percent = if t.0 == "*" || t.0.starts_with("node.kubernetes.io/") {
                5
            } else {
                25
            };
            if d.chance(percent) {
                tolerations.push(t.clone());
            }
        }

        let node_count = d.range(2, 6) as usize;
        let mut nodes = Vec::new();
        for i in 0..node_count {
            let cpu_millis = d.range(10, 80) * 100;
            let cpu = cpu_quantity(&mut d, cpu_millis);
            let memory_bytes = if d.chance(70) {
                d.range(16, 256) * (128 << 20)
            } else {
                d.range(2, 32) * 1_000_000_000
            };
            let memory = memory_quantity(&mut d, memory_bytes);
            let pods = if d.chance(70) {
                110
            } else {
                d.range(1, 8) as u32
            };
            let mut taints = Vec::new();
            if d.chance(20) {
                taints.push(*d.pick(TAINTS));
                if d.chance(30) {
                    let second = *d.pick(TAINTS);
                    if !taints
                        .iter()
                        .any(|t: &(&str, &str, &str)| t.0 == second.0 && t.2 == second.2)
                    {
                        taints.push(second);
                    }
                }
            }
            let unschedulable = d.chance(12);
            let ready = !d.chance(10);
            if !ready {
                // What the node lifecycle controller adds to a NotReady node.
                taints.push(("node.kubernetes.io/not-ready", "", "NoSchedule"));
                taints.push(("node.kubernetes.io/not-ready", "", "NoExecute"));
            } else if d.chance(10) {
                // A Ready node still carrying a lifecycle taint: the cloud controller manager
                // has not initialised it yet, or the lifecycle controller has not caught up.
                taints.push(*d.pick(LIFECYCLE_TAINTS));
            }
            nodes.push(NodePlan {
                name: format!("{id}-n{i}"),
                cpu_millis,
                cpu,
                memory,
                pods,
                taints,
                unschedulable,
                ready,
            });
        }

        let classes = runtime_classes(run);
        let mut pods = Vec::new();
        for node in &nodes {
            for _ in 0..d.range(0, 5) {
                let n = pods.len();
                let namespace = *d.pick(&NAMESPACES);
                let kind = *d.pick(&["daemon", "daemon", "server", "plain", "plain", "plain"]);
                let name = format!("{id}-{kind}-{n}");
                let mut total = (0u64, 0u64);
                let containers: Vec<Value> = (0..d.range(1, 2))
                    .map(|c| container(&format!("app{c}"), container_resources(&mut d, &mut total)))
                    .collect();
                let mut spec = json!({
                    "nodeName": node.name,
                    "containers": containers,
                });
                if d.chance(35) {
                    let inits: Vec<Value> = (0..d.range(1, 3))
                        .map(|c| {
                            let mut init = container(
                                &format!("init{c}"),
                                container_resources(&mut d, &mut total),
                            );
                            if d.chance(45) {
                                init["restartPolicy"] = "Always".into();
                            }
                            init
                        })
                        .collect();
                    spec["initContainers"] = inits.into();
                }
                if d.chance(20) {
                    spec["runtimeClassName"] = d.pick(&classes).0.clone().into();
                }
                if d.chance(12) {
                    // Pod-level requests, at least the sum of every container's requests.
                    let mut list = Map::new();
                    let cpu = total.0 + d.range(0, 10) * 50;
                    list.insert("cpu".into(), cpu_quantity(&mut d, cpu.max(50)).into());
                    if d.chance(50) {
                        let mem = total.1 + d.range(0, 8) * (64 << 20);
                        list.insert(
                            "memory".into(),
                            memory_quantity(&mut d, mem.max(64 << 20)).into(),
                        );
                    }
                    spec["resources"] = json!({"requests": list});
                }
                let mut labels = json!({RUN_LABEL: run, POOL_LABEL: id});
                if kind == "server" {
                    labels[SERVER_LABEL] = id.clone().into();
                }
                let mut metadata = json!({
                    "name": name,
                    "namespace": namespace,
                    "labels": labels,
                });
                if kind == "daemon" {
                    metadata["ownerReferences"] = json!([{
                        "apiVersion": "apps/v1",
                        "kind": "DaemonSet",
                        "name": format!("{id}-ds"),
                        "uid": "00000000-0000-4000-8000-000000000001",
                        "controller": true,
                    }]);
                }
                let after = match d.range(0, 99) {
                    0..=9 => After::Status(json!({"phase": "Succeeded"})),
                    10..=16 => After::Status(json!({"phase": "Failed"})),
                    17..=26 => After::Terminating,
                    27..=34 => After::Status(resize_status(&mut d, &spec)),
                    35..=51 => After::Status(json!({"phase": "Running"})),
                    _ => After::Nothing,
                };
                pods.push(PinnedPod {
                    namespace,
                    name,
                    node: node.name.clone(),
                    body: json!({"apiVersion": "v1", "kind": "Pod", "metadata": metadata, "spec": spec}),
                    after,
                    kind,
                });
            }
        }

        PoolPlan {
            seed,
            id,
            slot_cpu_millis,
            slot_cpu_config,
            slot_memory,
            tolerations,
            nodes,
            pods,
        }
    }

    /// kubescaler's configuration for this pool: its own server shape and tolerations,
    /// buffer 0.
    fn config(&self) -> Config {
        let mut env = BTreeMap::from(
            [
                ("CLOUD_PROVIDER_TOKEN", "unused".to_string()),
                ("CLUSTER_NAME", "oracle".to_string()),
                ("NODE_POOL_NAME", "oracle".to_string()),
                ("NODE_SELECTOR", format!("{POOL_LABEL}={}", self.id)),
                ("SERVER_POD_LABEL_NAME", SERVER_LABEL.to_string()),
                ("SERVER_POD_LABEL_VALUE", self.id.clone()),
                ("BUFFER_SLOT_SIZE", "0".to_string()),
                ("MINIMUM_NODE_POOL_SIZE", "0".to_string()),
                ("MAXIMUM_NODE_POOL_SIZE", "100".to_string()),
                ("SERVER_CPU_RESOURCE_REQUEST", self.slot_cpu_config.clone()),
            ]
            .map(|(k, v)| (k.to_string(), v)),
        );
        if let Some((_, q)) = &self.slot_memory {
            env.insert("SERVER_MEMORY_RESOURCE_REQUEST".into(), q.clone());
        }
        if !self.tolerations.is_empty() {
            let items: Vec<&str> = self.tolerations.iter().map(|t| t.0).collect();
            env.insert("SERVER_POD_TOLERATIONS".into(), items.join(","));
        }
        load(&ConfigSources {
            env,
            ..Default::default()
        })
        .unwrap_or_else(|e| panic!("pool {} (seed {}): config: {e}", self.id, self.seed))
    }

    fn server_pod(&self, i: u32, run: &str) -> Value {
        let mut requests = json!({"cpu": format!("{}m", self.slot_cpu_millis)});
        if let Some((_, q)) = &self.slot_memory {
            requests["memory"] = q.clone().into();
        }
        let tolerations: Vec<Value> = self.tolerations.iter().map(|t| t.1.clone()).collect();
        json!({
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {
                "name": format!("{}-srv-{i}", self.id),
                "namespace": SERVER_NAMESPACE,
                "labels": {
                    RUN_LABEL: run, POOL_LABEL: self.id, SERVER_LABEL: self.id, PLACED_LABEL: self.id,
                },
            },
            "spec": {
                "nodeSelector": {POOL_LABEL: self.id},
                "tolerations": tolerations,
                "terminationGracePeriodSeconds": 0,
                "containers": [container("server", json!({"requests": requests}))],
            },
        })
    }

    /// How many of each feature the pool has, for the run's coverage line.
    fn features(&self) -> Vec<(&'static str, usize)> {
        let nodes = |f: &dyn Fn(&NodePlan) -> bool| self.nodes.iter().filter(|n| f(n)).count();
        let pods = |f: &dyn Fn(&PinnedPod) -> bool| self.pods.iter().filter(|p| f(p)).count();
        let spec_has = |p: &PinnedPod, key: &str| p.body["spec"].get(key).is_some();
        vec![
            ("nodes", self.nodes.len()),
            (
                "nodes tainted",
                nodes(&|n| n.taints.iter().any(|t| !is_lifecycle(t.0))),
            ),
            (
                "Ready nodes with a lifecycle taint",
                nodes(&|n| n.ready && n.taints.iter().any(|t| is_lifecycle(t.0))),
            ),
            ("nodes cordoned", nodes(&|n| n.unschedulable)),
            ("nodes not ready", nodes(&|n| !n.ready)),
            ("nodes with a pod limit < 10", nodes(&|n| n.pods < 10)),
            (
                "pools with a memory request",
                usize::from(self.slot_memory.is_some()),
            ),
            (
                "pools whose servers tolerate the cordon",
                usize::from(
                    self.tolerations
                        .iter()
                        .any(|t| t.0 == "*" || t.0.starts_with("node.kubernetes.io/")),
                ),
            ),
            ("pinned pods", self.pods.len()),
            ("daemon pods", pods(&|p| p.kind == "daemon")),
            ("pinned servers", pods(&|p| p.kind == "server")),
            (
                "pods with init containers",
                pods(&|p| spec_has(p, "initContainers")),
            ),
            (
                "pods with sidecars",
                pods(&|p| {
                    p.body["spec"]["initContainers"]
                        .as_array()
                        .is_some_and(|a| a.iter().any(|c| c.get("restartPolicy").is_some()))
                }),
            ),
            (
                "pods with overhead",
                pods(&|p| spec_has(p, "runtimeClassName")),
            ),
            (
                "pods with pod-level requests",
                pods(&|p| spec_has(p, "resources")),
            ),
            ("terminal pods", pods(&|p| p.is_terminal())),
            ("terminating pods", pods(&|p| p.after == After::Terminating)),
            ("pods resizing in place", pods(&|p| p.is_resizing())),
            ("pods outside default", pods(&|p| p.namespace != "default")),
        ]
    }

    /// One line per feature, for the log.
    fn summary(&self) -> String {
        let count = |f: &dyn Fn(&PinnedPod) -> bool| self.pods.iter().filter(|p| f(p)).count();
        let has = |p: &PinnedPod, key: &str| p.body["spec"].get(key).is_some();
        let sidecars = count(&|p| {
            p.body["spec"]["initContainers"]
                .as_array()
                .is_some_and(|a| a.iter().any(|c| c.get("restartPolicy").is_some()))
        });
        format!(
            "slot cpu {} (config {:?}) mem {:?}; tolerations {:?}; {} nodes ({} tainted, {} Ready with a lifecycle taint, {} cordoned, {} not ready, {} with a small pod limit); {} pinned pods: {} daemon, {} server, {} with init containers ({} with sidecars), {} with overhead, {} pod-level, {} terminal, {} terminating, {} resizing in place, {} outside `default`",
            self.slot_cpu_millis,
            self.slot_cpu_config,
            self.slot_memory.as_ref().map(|m| &m.1),
            self.tolerations.iter().map(|t| t.0).collect::<Vec<_>>(),
            self.nodes.len(),
            self.nodes.iter().filter(|n| n.taints.iter().any(|t| !is_lifecycle(t.0))).count(),
            self.nodes.iter().filter(|n| n.ready && n.taints.iter().any(|t| is_lifecycle(t.0))).count(),
            self.nodes.iter().filter(|n| n.unschedulable).count(),
            self.nodes.iter().filter(|n| !n.ready).count(),
            self.nodes.iter().filter(|n| n.pods < 110).count(),
            self.pods.len(),
            count(&|p| p.kind == "daemon"),
            count(&|p| p.kind == "server"),
            count(&|p| has(p, "initContainers")),
            sidecars,
            count(&|p| has(p, "runtimeClassName")),
            count(&|p| has(p, "resources")),
            count(&|p| p.is_terminal()),
            count(&|p| p.after == After::Terminating),
            count(&|p| p.is_resizing()),
            count(&|p| p.namespace != "default"),
        )
    }

    /// The disagreements already minimised (see the `minimal_*` tests) that this node shows,
    /// as ` [known: ...]`, or nothing.
    fn known_causes(&self, node: &NodePlan) -> String {
        let mut causes = Vec::new();
        let tolerates_cordon = self
            .tolerations
            .iter()
            .any(|t| t.0 == "*" || t.0 == "node.kubernetes.io/unschedulable");
        if tolerates_cordon && node.unschedulable {
            causes.push("servers tolerate the cordon of this cordoned node");
        }
        if self.tolerations.iter().any(|t| t.0 == "*") && !node.ready {
            causes.push("servers tolerate the not-ready taint of this NotReady node");
        }
        if node.ready
            && node
                .taints
                .iter()
                .any(|t| is_lifecycle(t.0) && t.2 == "NoSchedule")
        {
            causes.push("the planner ignores a lifecycle NoSchedule taint on this Ready node");
        }
        if self
            .pods
            .iter()
            .any(|p| p.node == node.name && p.is_resizing())
        {
            causes.push("a pod here reports in-place resize status");
        }
        if causes.is_empty() {
            String::new()
        } else {
            format!(" [known: {}]", causes.join("; "))
        }
    }

    /// Everything about one node and its pinned pods, for a disagreement report.
    fn describe_node(&self, name: &str) -> String {
        let mut out = String::new();
        if let Some(n) = self.nodes.iter().find(|n| n.name == name) {
            let _ = writeln!(
                out,
                "    node {}: allocatable cpu {} memory {} pods {}; taints {:?}; unschedulable {}; ready {}",
                n.name, n.cpu, n.memory, n.pods, n.taints, n.unschedulable, n.ready
            );
        }
        for p in self.pods.iter().filter(|p| p.node == name) {
            let spec = &p.body["spec"];
            let mut shown = Map::new();
            for key in [
                "containers",
                "initContainers",
                "runtimeClassName",
                "resources",
            ] {
                if let Some(v) = spec.get(key) {
                    let v = match v {
                        Value::Array(cs) => Value::Array(
                            cs.iter()
                                .map(|c| {
                                    json!({
                                        "resources": c["resources"],
                                        "restartPolicy": c.get("restartPolicy"),
                                    })
                                })
                                .collect(),
                        ),
                        other => other.clone(),
                    };
                    shown.insert(key.to_string(), v);
                }
            }
            let after = match &p.after {
                After::Nothing => "pending".to_string(),
                After::Status(status) => format!("status {status}"),
                After::Terminating => "terminating".to_string(),
            };
            let _ = writeln!(
                out,
                "      pod {} ({}, {after}): {}",
                p.key(),
                p.kind,
                Value::Object(shown)
            );
        }
        out
    }
}

/// Polls `check` every 200 ms until it yields a value; `None` after [`WAIT`].
async fn within_wait<T, F, Fut>(mut check: F) -> Option<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let start = Instant::now();
    loop {
        if let Some(v) = check().await {
            return Some(v);
        }
        if start.elapsed() >= WAIT {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Runs `body`, then `cleanup` whatever happened, then re-raises a failure of `body`.
async fn guarded<T>(body: impl Future<Output = T>, cleanup: impl Future<Output = ()>) -> T {
    let outcome = AssertUnwindSafe(body).catch_unwind().await;
    cleanup.await;
    match outcome {
        Ok(v) => v,
        Err(panic) => std::panic::resume_unwind(panic),
    }
}

/// Force-deletes (grace 0) the pods and nodes carrying `label=value`.
async fn delete_labelled(client: &Client, label: &str, value: &str) {
    let params = ListParams::default().labels(&format!("{label}={value}"));
    let now = DeleteParams {
        grace_period_seconds: Some(0),
        ..Default::default()
    };
    for ns in NAMESPACES {
        let pods: Api<Pod> = Api::namespaced(client.clone(), ns);
        if let Err(e) = pods.delete_collection(&now, &params).await {
            say!("cleanup: delete pods {label}={value} in {ns}: {e}");
        }
    }
    let nodes: Api<Node> = Api::all(client.clone());
    if let Err(e) = nodes.delete_collection(&now, &params).await {
        say!("cleanup: delete nodes {label}={value}: {e}");
    }
}

fn json_to<T: serde::de::DeserializeOwned>(v: &Value) -> T {
    serde_json::from_value(v.clone()).unwrap_or_else(|e| panic!("{e}: {v}"))
}

/// Creates the pool's nodes (spec first, then the status a kubelet would post).
async fn create_node(nodes: &Api<Node>, n: &NodePlan, run: &str, pool: &str) {
    let taints: Vec<Value> = n
        .taints
        .iter()
        .map(|(k, v, e)| {
            if v.is_empty() {
                json!({"key": k, "effect": e})
            } else {
                json!({"key": k, "value": v, "effect": e})
            }
        })
        .collect();
    let node = json!({
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {"name": n.name, "labels": {RUN_LABEL: run, POOL_LABEL: pool}},
        "spec": {"unschedulable": n.unschedulable, "taints": taints},
    });
    nodes
        .create(&PostParams::default(), &json_to(&node))
        .await
        .unwrap_or_else(|e| panic!("create node {}: {e}", n.name));
    let now = jiff::Timestamp::now()
        .strftime("%Y-%m-%dT%H:%M:%SZ")
        .to_string();
    let status = json!({"status": {
        // Capacity above allocatable: only allocatable may count.
        "capacity": {"cpu": format!("{}m", n.cpu_millis + 250), "memory": "256Gi", "pods": n.pods + 10},
        "allocatable": {"cpu": n.cpu, "memory": n.memory, "pods": n.pods.to_string()},
        "conditions": [{
            "type": "Ready",
            "status": if n.ready { "True" } else { "False" },
            "reason": if n.ready { "KubeletReady" } else { "KubeletNotReady" },
            "message": "oracle", "lastHeartbeatTime": now, "lastTransitionTime": now,
        }],
    }});
    nodes
        .patch_status(&n.name, &PatchParams::default(), &Patch::Merge(&status))
        .await
        .unwrap_or_else(|e| panic!("patch status of node {}: {e}", n.name));
}

/// Creates a pinned pod and gives it its fate.
async fn create_pinned(client: &Client, p: &PinnedPod) {
    let pods: Api<Pod> = Api::namespaced(client.clone(), p.namespace);
    pods.create(&PostParams::default(), &json_to(&p.body))
        .await
        .unwrap_or_else(|e| panic!("create pod {}: {e}\n{}", p.key(), p.body));
    match &p.after {
        After::Nothing => {}
        After::Status(status) => {
            let status = json!({ "status": status });
            pods.patch_status(&p.name, &PatchParams::default(), &Patch::Merge(&status))
                .await
                .unwrap_or_else(|e| panic!("patch status of pod {}: {e}", p.key()));
        }
        After::Terminating => {
            let later = DeleteParams {
                grace_period_seconds: Some(3600),
                ..Default::default()
            };
            pods.delete(&p.name, &later)
                .await
                .unwrap_or_else(|e| panic!("graceful delete of pod {}: {e}", p.key()));
        }
    }
}

/// Whether the cache shows exactly the pool as set up: every node with its status, every
/// pinned pod that still occupies its node and none of the terminal ones.
fn snapshot_is_current(pool: &PoolPlan, s: &ClusterSnapshot) -> bool {
    let nodes_ok = s.nodes.len() == pool.nodes.len()
        && pool.nodes.iter().all(|want| {
            s.nodes.iter().any(|n| {
                n.name == want.name
                    && n.allocatable_pods == want.pods
                    && n.ready == want.ready
                    && n.unschedulable == want.unschedulable
                    && n.taints.len() == want.taints.len()
            })
        });
    let want: BTreeSet<String> = pool
        .pods
        .iter()
        .filter(|p| p.occupies())
        .map(PinnedPod::key)
        .collect();
    let got: BTreeSet<String> = s
        .pods
        .iter()
        .filter(|p| p.node.is_some())
        .map(|p| p.key.clone())
        .collect();
    nodes_ok && want == got
}

/// kubescaler's free slots: the whole pool, and per node (a snapshot of that node alone).
fn kubescaler_count(s: &ClusterSnapshot, cfg: &PlannerConfig) -> (u32, BTreeMap<String, u32>) {
    let now = jiff::Timestamp::now();
    let total = plan(s, s.nodes.len() as u32, now, cfg).summary.free_slots;
    let per_node = s
        .nodes
        .iter()
        .map(|n| {
            let one = ClusterSnapshot {
                nodes: vec![n.clone()],
                pods: s
                    .pods
                    .iter()
                    .filter(|p| p.node.as_deref() == Some(n.name.as_str()))
                    .cloned()
                    .collect(),
                ..Default::default()
            };
            (n.name.clone(), plan(&one, 1, now, cfg).summary.free_slots)
        })
        .collect();
    (total, per_node)
}

/// Where the scheduler put the server pods: bound per node, and the unbound ones (each with
/// `PodScheduled=False`, reason Unschedulable). `None` while it has not tried them all.
async fn scheduler_outcome(
    pods: &Api<Pod>,
    pool: &str,
    expected: usize,
) -> Option<(BTreeMap<String, u32>, Vec<String>)> {
    let list = pods
        .list(&ListParams::default().labels(&format!("{PLACED_LABEL}={pool}")))
        .await
        .ok()?;
    if list.items.len() != expected {
        return None;
    }
    let mut bound = BTreeMap::new();
    let mut pending = Vec::new();
    for pod in &list.items {
        if let Some(node) = pod.spec.as_ref().and_then(|s| s.node_name.clone()) {
            *bound.entry(node).or_insert(0) += 1;
            continue;
        }
        let rejected = pod
            .status
            .as_ref()
            .and_then(|s| s.conditions.as_ref())
            .is_some_and(|cs| {
                cs.iter().any(|c| {
                    c.type_ == "PodScheduled"
                        && c.status == "False"
                        && c.reason.as_deref() == Some("Unschedulable")
                })
            });
        if !rejected {
            return None;
        }
        pending.push(pod.metadata.name.clone().unwrap_or_default());
    }
    Some((bound, pending))
}

/// Builds the pool, compares kubescaler's count with the scheduler's placements. `Err` is a
/// disagreement, described.
async fn run_pool(client: &Client, run: &str, pool: &PoolPlan) -> Result<String, String> {
    let started = Instant::now();
    let node_api: Api<Node> = Api::all(client.clone());
    futures::stream::iter(&pool.nodes)
        .for_each_concurrent(4, |n| create_node(&node_api, n, run, &pool.id))
        .await;
    futures::stream::iter(&pool.pods)
        .for_each_concurrent(8, |p| create_pinned(client, p))
        .await;

    let config = pool.config();
    let cfg = PlannerConfig::from(&config);
    assert_eq!(
        cfg.slot.cpu_millis, pool.slot_cpu_millis,
        "server-cpu-resource-request {:?}",
        pool.slot_cpu_config
    );
    assert_eq!(
        cfg.slot.memory_bytes,
        pool.slot_memory.as_ref().map_or(0, |m| m.0),
        "server-memory-resource-request {:?}",
        pool.slot_memory
    );
    assert_eq!(cfg.buffer, 0);

    let cluster = KubeCluster::start(
        client.clone(),
        &config.node_selector,
        (
            config.server_pod_label_name.clone(),
            config.server_pod_label_value.clone(),
        ),
    );
    let snapshot = within_wait(|| async {
        cluster
            .snapshot()
            .await
            .ok()
            .filter(|s| snapshot_is_current(pool, s))
    })
    .await;
    if snapshot.is_none() {
        return Err(format!(
            "pool {} (seed {}): kubescaler's caches never showed the pool as set up within {WAIT:?}\n  {}\n  last snapshot: {:?}",
            pool.id,
            pool.seed,
            pool.summary(),
            cluster.snapshot().await
        ));
    }
    // The first list may come from the API server's watch cache, a moment behind; the watch
    // then catches up. Give it (and the scheduler's informers) a second, then read again.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let snapshot = match cluster.snapshot().await {
        Ok(s) if snapshot_is_current(pool, &s) => s,
        other => panic!(
            "pool {}: the cache changed under the test: {other:?}",
            pool.id
        ),
    };
    drop(cluster);
    let (count, per_node) = kubescaler_count(&snapshot, &cfg);
    let setup = started.elapsed();

    let servers: Api<Pod> = Api::namespaced(client.clone(), SERVER_NAMESPACE);
    // One server more than kubescaler's count. Should every one find a place, kubescaler
    // under-counts: add servers until one stays Pending, so the placements show the
    // scheduler's capacity of every node.
    let mut created = 0;
    let mut want = count as usize + 1;
    let (bound, pending) = loop {
        futures::stream::iter(created..want)
            .for_each_concurrent(8, |i| {
                let servers = servers.clone();
                let body = pool.server_pod(i as u32, run);
                async move {
                    servers
                        .create(&PostParams::default(), &json_to(&body))
                        .await
                        .unwrap_or_else(|e| panic!("create server pod {i}: {e}"));
                }
            })
            .await;
        created = want;
        let outcome = within_wait(|| scheduler_outcome(&servers, &pool.id, want)).await;
        let Some((bound, pending)) = outcome else {
            let list = servers
                .list(&ListParams::default().labels(&format!("{PLACED_LABEL}={}", pool.id)))
                .await;
            let states: Vec<String> = list
                .map(|l| {
                    l.items
                        .iter()
                        .map(|p| {
                            format!(
                                "{} node={:?} conditions={:?}",
                                p.metadata.name.as_deref().unwrap_or_default(),
                                p.spec.as_ref().and_then(|s| s.node_name.as_deref()),
                                p.status.as_ref().and_then(|s| s.conditions.as_ref())
                            )
                        })
                        .collect()
                })
                .unwrap_or_else(|e| vec![format!("list failed: {e}")]);
            return Err(format!(
                "pool {} (seed {}): the scheduler did not decide all {want} server pods within {WAIT:?}\n  {}\n  {}",
                pool.id,
                pool.seed,
                pool.summary(),
                states.join("\n  ")
            ));
        };
        if !pending.is_empty() || want > count as usize + 1 + MAX_EXTRA_SERVERS {
            break (bound, pending);
        }
        want += (want / 2).max(4);
    };
    let bound_total: u32 = bound.values().sum();
    let timing = format!(
        "setup {:.1}s, scheduling {:.1}s",
        setup.as_secs_f64(),
        (started.elapsed() - setup).as_secs_f64()
    );

    let mut wrong = Vec::new();
    for node in &pool.nodes {
        let ours = per_node.get(&node.name).copied().unwrap_or(0);
        let theirs = bound.get(&node.name).copied().unwrap_or(0);
        if ours != theirs {
            wrong.push(format!(
                "  node {}: kubescaler {ours} free slots, scheduler bound {theirs}{}\n{}    kubescaler saw: {:?}\n    pods kubescaler counted there: {:?}",
                node.name,
                pool.known_causes(node),
                pool.describe_node(&node.name),
                snapshot.nodes.iter().find(|n| n.name == node.name),
                snapshot
                    .pods
                    .iter()
                    .filter(|p| p.node.as_deref() == Some(node.name.as_str()))
                    .map(|p| (p.key.as_str(), p.requests.cpu_millis, p.requests.memory_bytes))
                    .collect::<Vec<_>>(),
            ));
        }
    }
    if want == count as usize + 1 && bound_total == count && pending.len() == 1 && wrong.is_empty()
    {
        Ok(format!(
            "{count} slots = {bound_total} bound + 1 pending ({timing}); per node {per_node:?}"
        ))
    } else {
        Err(format!(
            "pool {} (seed {}): kubescaler counts {count} free slots; the scheduler bound {bound_total} of {want} server pods{} ({} pending: {pending:?}) [{timing}]\n  {}\n{}",
            pool.id,
            pool.seed,
            if want > count as usize + 1 {
                format!(
                    " (all {} of kubescaler's count + 1 found a place; more were added until one stayed Pending)",
                    count + 1
                )
            } else {
                String::new()
            },
            pending.len(),
            pool.summary(),
            wrong.join("\n")
        ))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubescalers_slot_count_is_what_the_scheduler_binds_in_random_pools() {
    let Some(client) = client_or_skip("scheduler-oracle").await else {
        return;
    };
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    let run = format!("orc-{}-{}", std::process::id(), nanos % 1_000_000);
    let pools: u64 = std::env::var("KUBESCALER_ORACLE_POOLS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(DEFAULT_POOLS);
    let first_seed: u64 = std::env::var("KUBESCALER_ORACLE_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or((nanos % 1_000_000_000) as u64);
    say!(
        "scheduler oracle: run {run}, {pools} pools, seeds {first_seed}..={} (replay one: KUBESCALER_ORACLE_SEED=<seed> KUBESCALER_ORACLE_POOLS=1)",
        first_seed + pools - 1
    );

    let body = async {
        let classes: Api<RuntimeClass> = Api::all(client.clone());
        for (name, overhead) in runtime_classes(&run) {
            let rc = json!({
                "apiVersion": "node.k8s.io/v1",
                "kind": "RuntimeClass",
                "metadata": {"name": name, "labels": {RUN_LABEL: run}},
                "handler": "runc",
                "overhead": {"podFixed": overhead},
            });
            classes
                .create(&PostParams::default(), &json_to(&rc))
                .await
                .unwrap_or_else(|e| panic!("create RuntimeClass {name}: {e}"));
        }

        let started = Instant::now();
        let mut disagreements = Vec::new();
        let mut slots_seen = Vec::new();
        let mut coverage: BTreeMap<&str, usize> = BTreeMap::new();
        for i in 0..pools {
            let seed = first_seed + i;
            let pool = PoolPlan::generate(seed, &run, i as usize);
            for (feature, n) in pool.features() {
                *coverage.entry(feature).or_insert(0) += n;
            }
            say!("pool {} seed {seed}: {}", pool.id, pool.summary());
            let outcome = guarded(
                run_pool(&client, &run, &pool),
                delete_labelled(&client, POOL_LABEL, &pool.id),
            )
            .await;
            match outcome {
                Ok(line) => {
                    say!("pool {} seed {seed}: agree: {line}", pool.id);
                    slots_seen.push(line);
                }
                Err(report) => {
                    say!("DISAGREEMENT {report}");
                    disagreements.push(report);
                }
            }
        }
        say!(
            "scheduler oracle: {pools} pools in {:.0}s, {} agreed, {} disagreed; covered: {coverage:?}",
            started.elapsed().as_secs_f64(),
            slots_seen.len(),
            disagreements.len()
        );
        assert!(
            disagreements.is_empty(),
            "kubescaler's slot count disagrees with kube-scheduler in {} of {pools} pools:\n{}",
            disagreements.len(),
            disagreements.join("\n\n")
        );
    };
    guarded(body, async {
        delete_labelled(&client, RUN_LABEL, &run).await;
        let classes: Api<RuntimeClass> = Api::all(client.clone());
        let params = ListParams::default().labels(&format!("{RUN_LABEL}={run}"));
        if let Err(e) = classes
            .delete_collection(&DeleteParams::default(), &params)
            .await
        {
            say!("cleanup: delete RuntimeClasses: {e}");
        }
    })
    .await;
}

// --- Minimised disagreements --------------------------------------------------------------
//
// One node each, the smallest pools in which kubescaler's count and the scheduler's placements
// differ. They fail until kubescaler counts like the scheduler.

/// A run id for a test of this file.
fn run_id(tag: &str) -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or_default();
    format!("orc{tag}-{}-{}", std::process::id(), nanos % 1_000_000)
}

/// A Ready, untainted node with 110 pod places.
fn plain_node(pool: &str, cpu: &str, memory: &str) -> NodePlan {
    NodePlan {
        name: format!("{pool}-n0"),
        cpu_millis: kubescaler::quantity::parse_cpu_millis(cpu).unwrap_or(0),
        cpu: cpu.to_string(),
        memory: memory.to_string(),
        pods: 110,
        taints: Vec::new(),
        unschedulable: false,
        ready: true,
    }
}

/// A plain pod pinned to `node` with these containers and fate.
fn pinned(run: &str, pool: &str, node: &str, containers: Value, after: After) -> PinnedPod {
    let name = format!("{pool}-plain-0");
    PinnedPod {
        namespace: "default",
        name: name.clone(),
        node: node.to_string(),
        body: json!({
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {
                "name": name,
                "namespace": "default",
                "labels": {RUN_LABEL: run, POOL_LABEL: pool},
            },
            "spec": {"nodeName": node, "containers": containers},
        }),
        after,
        kind: "plain",
    }
}

/// Runs one hand-made pool; panics with the report if kubescaler and the scheduler disagree.
async fn check_fixed_pool(client: &Client, run: &str, pool: PoolPlan) {
    say!("pool {}: {}", pool.id, pool.summary());
    let outcome = guarded(
        run_pool(client, run, &pool),
        delete_labelled(client, POOL_LABEL, &pool.id),
    )
    .await;
    match outcome {
        Ok(line) => say!("pool {}: agree: {line}", pool.id),
        Err(report) => panic!("kubescaler disagrees with kube-scheduler:\n{report}"),
    }
}

fn fixed_pool(id: String, slot_cpu_millis: u64, slot_memory: Option<(u64, &str)>) -> PoolPlan {
    PoolPlan {
        seed: 0,
        id,
        slot_cpu_millis,
        slot_cpu_config: format!("{slot_cpu_millis}m"),
        slot_memory: slot_memory.map(|(b, q)| (b, q.to_string())),
        tolerations: Vec::new(),
        nodes: Vec::new(),
        pods: Vec::new(),
    }
}

/// A pod whose in-place resize is under way: its spec asks 1 CPU, its container status says
/// it still runs with 2 (a downsize not yet actuated). kube-scheduler counts
/// max(spec, status) = 2, so 2 one-CPU servers fit on a 4-CPU node; kubescaler counts the
/// spec only and sees 3 slots.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn minimal_in_place_resize_in_progress_counts_the_larger_of_spec_and_status() {
    let Some(client) = client_or_skip("scheduler-oracle-resize").await else {
        return;
    };
    let run = run_id("r");
    let id = format!("{run}-0");
    let mut pool = fixed_pool(id.clone(), 1000, None);
    let node = plain_node(&id, "4", "8Gi");
    let status = json!({
        "phase": "Running",
        "containerStatuses": [{
            "name": "app0", "image": "registry.invalid/never-pulled:1", "imageID": "",
            "ready": true, "restartCount": 0, "state": {"running": {}},
            "resources": {"requests": {"cpu": "2"}},
            "allocatedResources": {"cpu": "2"},
        }],
    });
    pool.pods.push(pinned(
        &run,
        &id,
        &node.name,
        json!([container("app0", json!({"requests": {"cpu": "1"}}))]),
        After::Status(status),
    ));
    pool.nodes.push(node);
    check_fixed_pool(&client, &run, pool).await;
}

/// A pod whose resize up was found infeasible (`PodResizePending`, reason Infeasible): its
/// spec asks 3 CPU but it runs with 1. kube-scheduler counts the status alone (1 CPU), so 3
/// one-CPU servers fit on a 4-CPU node; kubescaler counts the spec and sees 1 slot.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn minimal_infeasible_resize_counts_the_status_not_the_spec() {
    let Some(client) = client_or_skip("scheduler-oracle-infeasible").await else {
        return;
    };
    let run = run_id("i");
    let id = format!("{run}-0");
    let mut pool = fixed_pool(id.clone(), 1000, None);
    let node = plain_node(&id, "4", "8Gi");
    let status = json!({
        "phase": "Running",
        "conditions": [{
            "type": "PodResizePending", "status": "True", "reason": "Infeasible",
            "message": "Node didn't have enough capacity",
        }],
        "containerStatuses": [{
            "name": "app0", "image": "registry.invalid/never-pulled:1", "imageID": "",
            "ready": true, "restartCount": 0, "state": {"running": {}},
            "resources": {"requests": {"cpu": "1"}},
            "allocatedResources": {"cpu": "1"},
        }],
    });
    pool.pods.push(pinned(
        &run,
        &id,
        &node.name,
        json!([container("app0", json!({"requests": {"cpu": "3"}}))]),
        After::Status(status),
    ));
    pool.nodes.push(node);
    check_fixed_pool(&client, &run, pool).await;
}

/// kube-scheduler sums a pod's requests exactly and rounds once per pod (`Quantity.Value()`
/// of the total); kubescaler rounds every container up, then sums. Two containers asking
/// `500m` bytes of memory each (the API server accepts fractional bytes, with a warning) are
/// 1 byte to the scheduler and 2 to kubescaler: on a node of 1Gi + 1 byte, two 512Mi servers
/// fit for the scheduler, one for kubescaler. (CPU cannot show this: the API server rounds
/// CPU requests to whole millicores.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn minimal_fractional_memory_is_rounded_per_pod_not_per_container() {
    let Some(client) = client_or_skip("scheduler-oracle-rounding").await else {
        return;
    };
    let run = run_id("f");
    let id = format!("{run}-0");
    let mut pool = fixed_pool(id.clone(), 100, Some((512 << 20, "512Mi")));
    let node = plain_node(&id, "4", "1073741825");
    pool.pods.push(pinned(
        &run,
        &id,
        &node.name,
        json!([
            container("app0", json!({"requests": {"memory": "500m"}})),
            container("app1", json!({"requests": {"memory": "500m"}})),
        ]),
        After::Nothing,
    ));
    pool.nodes.push(node);
    check_fixed_pool(&client, &run, pool).await;
}

/// A Ready node the cloud controller manager has not initialised yet still carries
/// `node.cloudprovider.kubernetes.io/uninitialized:NoSchedule` (likewise a node that just
/// turned Ready may still carry `node.kubernetes.io/not-ready:NoSchedule` for a moment):
/// kube-scheduler places no server there, but the planner leaves these "boot taints" out of
/// the toleration check for every node, so it counts the node's slots as free.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn minimal_ready_node_with_a_lifecycle_noschedule_taint() {
    let Some(client) = client_or_skip("scheduler-oracle-lifecycle").await else {
        return;
    };
    let run = run_id("l");
    let mut failures = Vec::new();
    for (i, taint) in LIFECYCLE_TAINTS
        .iter()
        .filter(|t| t.2 == "NoSchedule")
        .enumerate()
    {
        let id = format!("{run}-{i}");
        let mut pool = fixed_pool(id.clone(), 1000, None);
        let mut node = plain_node(&id, "2", "8Gi");
        node.taints.push(*taint);
        pool.nodes.push(node);
        let checked = AssertUnwindSafe(check_fixed_pool(&client, &run, pool))
            .catch_unwind()
            .await;
        if let Err(panic) = checked {
            let message = panic
                .downcast_ref::<String>()
                .cloned()
                .unwrap_or_else(|| "(no message)".to_string());
            failures.push(format!("taint {taint:?}: {message}"));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}
