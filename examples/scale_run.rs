//! Scale run: the real `kubescaler` binary against a real, local API server holding 1,000 nodes
//! and 30,000 pods. Measures resident memory, the time from a burst of server pods to the grow
//! call, and the API requests of an idle minute. Not a test: `hack/scale-run.sh` builds it,
//! starts a dedicated control plane, runs it and stops the plane; see that script.
//!
//! ```text
//! bash hack/scale-run.sh                       # everything, report in /tmp/kubescaler-scale-run
//! ```
//!
//! What it does, in order:
//! 1. Populates the cluster with the admin identity, many requests in flight: `--nodes` Node
//!    objects (32 CPU, 128Gi, 110 pods, Ready), `--pool-nodes` of them labelled
//!    `doks.digitalocean.com/node-pool=game-servers` (kubescaler's node selector) and the rest
//!    `=general`; then `--pods-per-node` pods on each, bound by `spec.nodeName` (no kubelet:
//!    they stay Pending but bound, which is all the scheduler and kubescaler look at): one
//!    DaemonSet-owned pod, on pool nodes `--servers-per-node` game servers (`app=game-server`,
//!    1 CPU), and plain pods; on pool nodes these are sized so that the node has no free server
//!    slot, except on `--spare-nodes` nodes, so the pool has a few free slots more than the
//!    buffer: the steady state. kubescaler watches every pod of the cluster either way.
//! 2. Serves DigitalOcean's API with the DOKS fake in this process (a pool of `--pool-nodes`
//!    nodes, without a Kubernetes connection: the fake creates no Node object; the fake refuses
//!    a count above 512, hence the default of 500) and starts the real binary with its own
//!    identity (`kubeconfig-kubescaler`, user `kubescaler-e2e`, the one the API server's audit
//!    log records), leader election off.
//! 3. Waits for kubescaler's caches and first pass (`/readyz`, `/metrics`); samples its
//!    `VmRSS` every 200 ms all along (`rss.csv`) and `VmHWM` (peak) at each step.
//! 4. Idle: counts kubescaler's requests to the API server over `--idle-secs` from the audit log
//!    (every `RequestReceived` event of its user: a watch counts once, when opened).
//! 5. Bursts, `--trials` times: creates `--burst` unschedulable server pods at once (a node
//!    selector no node has, so kube-scheduler leaves them Pending) and times from the first
//!    create request to the arrival of kubescaler's resize (`PUT` node pool) at the fake. Then
//!    it resets: deletes the burst, waits for a pass that saw it gone, and sets the fake pool's
//!    count back with a `PUT` of its own (kubescaler never lowers a count; the planner is
//!    stateless and reads the target from the cloud on every pass, so each trial starts from
//!    the same state). Trials start at varying delays so they hit the tick at varying phases.
//! 6. Stops kubescaler (SIGTERM) and writes `report.txt` and `report.json` into `--out`.
//!
//! The objects are left in place: the script stops the (dedicated) control plane afterwards.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use clap::Parser;
use doks_fake::{FakeOptions, PoolSpec};
use futures::StreamExt;
use jiff::Timestamp;
use k8s_openapi::api::core::v1::{Namespace, Node, Pod};
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams};
use kube::Client;
use serde_json::{json, Value};

mod support;
use support::{
    client_from, create, http_client, loadavg, lock, metrics, retry, say, Backoff, Cloud, Daemon,
    Res,
};

/// The prefix of [`say!`]'s lines.
const LOG_TAG: &str = "scale-run";

/// The pool label DOKS puts on its nodes; kubescaler's node selector.
const POOL_LABEL: &str = "doks.digitalocean.com/node-pool";
const POOL: &str = "game-servers";
/// The other nodes' pool: general workloads, no servers.
const OTHER_POOL: &str = "general";
const CLUSTER: &str = "scale-run";
/// Every object of the run carries it.
const RUN_LABEL: &str = "kubescaler-scale-run/run";
/// Burst pods carry it, valued with the trial number.
const BURST_LABEL: &str = "kubescaler-scale-run/burst";
const SERVER_LABEL: (&str, &str) = ("app", "game-server");
const SERVER_NS: &str = "games";
const DAEMON_NS: &str = "kube-system";
const OTHER_NS: &str = "default";
/// kubescaler's identity (CN of `kubeconfig-kubescaler`'s certificate).
const KUBESCALER_USER: &str = "kubescaler-e2e";
/// Node allocatable.
const NODE_CPU_MILLIS: u64 = 32_000;
const NODE_MEMORY: &str = "128Gi";
const NODE_PODS: u32 = 110;
/// Requests: a server is one slot (kubescaler's default server-cpu-resource-request).
const SERVER_CPU_MILLIS: u64 = 1000;
const DAEMON_CPU_MILLIS: u64 = 100;
const SMALL_CPU_MILLIS: u64 = 100;
/// Longest wait for any one step.
const WAIT: Duration = Duration::from_secs(600);
/// Retries of a create or a status patch.
const RETRY: Backoff = Backoff {
    first: Duration::from_millis(200),
    max: Duration::from_secs(5),
};

/// Runs the real kubescaler against 1,000 nodes and 30,000 pods and reports memory, burst-to-grow
/// latency and idle API requests (see the module docs; run it through hack/scale-run.sh).
#[derive(Debug, Parser)]
struct Args {
    /// The control plane's run dir (kubeconfig, kubeconfig-kubescaler, audit.log).
    #[arg(long)]
    run_dir: PathBuf,
    /// The kubescaler binary to run.
    #[arg(long)]
    kubescaler: PathBuf,
    /// Where the report, kubescaler's log and config and the RSS samples go.
    #[arg(long)]
    out: PathBuf,
    /// Nodes in the cluster.
    #[arg(long, default_value_t = 1000)]
    nodes: usize,
    /// Of those, nodes in kubescaler's pool (the DOKS fake refuses a pool count above 512,
    /// its `MAX_POOL_COUNT`); the others form a second pool of general workloads.
    #[arg(long, default_value_t = 500)]
    pool_nodes: usize,
    #[arg(long, default_value_t = 30)]
    pods_per_node: usize,
    #[arg(long, default_value_t = 20)]
    servers_per_node: usize,
    /// Nodes with room left (the rest are full).
    #[arg(long, default_value_t = 4)]
    spare_nodes: usize,
    /// kubescaler's buffer-slot-size.
    #[arg(long, default_value_t = 32)]
    buffer: u32,
    /// Server pods per burst.
    #[arg(long, default_value_t = 40)]
    burst: usize,
    #[arg(long, default_value_t = 30)]
    trials: usize,
    #[arg(long, default_value_t = 60)]
    idle_secs: u64,
    /// kubescaler's scale-loop-tick-sec.
    #[arg(long, default_value_t = 10)]
    tick: u64,
    /// Requests in flight while populating.
    #[arg(long, default_value_t = 48)]
    concurrency: usize,
    /// The command line to print as the way to reproduce the figures.
    #[arg(long, default_value = "bash hack/scale-run.sh")]
    command: String,
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    match run(&args).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            say!("FAILED: {e}");
            ExitCode::FAILURE
        }
    }
}

/// The pod layout of one node.
#[derive(Clone, Copy, Debug)]
struct Layout {
    servers: usize,
    plain: usize,
    /// CPU of each plain pod on a full node: leaves less than one slot free.
    full_plain_cpu: u64,
}

impl Layout {
    fn new(args: &Args) -> Res<Self> {
        let plain = args
            .pods_per_node
            .checked_sub(1 + args.servers_per_node)
            .filter(|p| *p > 0)
            .ok_or(
                "pods-per-node must exceed servers-per-node + 1 (a daemon, servers, plain pods)",
            )?;
        let left = NODE_CPU_MILLIS
            .checked_sub(DAEMON_CPU_MILLIS + SERVER_CPU_MILLIS * args.servers_per_node as u64)
            .ok_or("the servers do not fit on a node")?;
        // Leave at most SERVER_CPU_MILLIS - 1 free.
        let fill = left.saturating_sub(SERVER_CPU_MILLIS - 1);
        Ok(Layout {
            servers: args.servers_per_node,
            plain,
            full_plain_cpu: fill.div_ceil(plain as u64).max(SMALL_CPU_MILLIS),
        })
    }
    /// Free server slots of a spare node.
    fn spare_slots(&self) -> u64 {
        let used = DAEMON_CPU_MILLIS
            + SERVER_CPU_MILLIS * self.servers as u64
            + SMALL_CPU_MILLIS * self.plain as u64;
        NODE_CPU_MILLIS.saturating_sub(used) / SERVER_CPU_MILLIS
    }
    fn full_slots(&self) -> u64 {
        let used = DAEMON_CPU_MILLIS
            + SERVER_CPU_MILLIS * self.servers as u64
            + self.full_plain_cpu * self.plain as u64;
        NODE_CPU_MILLIS.saturating_sub(used) / SERVER_CPU_MILLIS
    }
}

fn node_name(i: usize) -> String {
    format!("pool-n{i:04}")
}

async fn create_node(nodes: &Api<Node>, run: &str, i: usize, pool: &str) -> Res<()> {
    let name = node_name(i);
    let node: Node = serde_json::from_value(json!({
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {"name": name, "labels": {
            POOL_LABEL: pool, RUN_LABEL: run, "kubernetes.io/hostname": name,
        }},
    }))
    .map_err(|e| format!("node: {e}"))?;
    create(nodes, &node, &name, RETRY).await?;
    let now = Timestamp::now().strftime("%Y-%m-%dT%H:%M:%SZ").to_string();
    let resources = json!({"cpu": format!("{NODE_CPU_MILLIS}m"), "memory": NODE_MEMORY, "pods": NODE_PODS.to_string()});
    let status = json!({"status": {
        "capacity": resources,
        "allocatable": resources,
        "conditions": [{
            "type": "Ready", "status": "True", "reason": "KubeletReady",
            "message": "scale run", "lastHeartbeatTime": now, "lastTransitionTime": now,
        }],
    }});
    let (params, patch) = (PatchParams::default(), Patch::Merge(&status));
    retry(&format!("patch status of {name}"), RETRY, || {
        nodes.patch_status(&name, &params, &patch)
    })
    .await?;
    Ok(())
}

/// What a pod is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Daemon,
    Server,
    Plain,
}

fn pod_object(
    run: &str,
    name: &str,
    kind: Kind,
    cpu_millis: u64,
    node: Option<&str>,
    extra_labels: &[(&str, &str)],
) -> Res<Pod> {
    let (namespace, memory) = match kind {
        Kind::Daemon => (DAEMON_NS, "128Mi"),
        Kind::Server => (SERVER_NS, "1Gi"),
        Kind::Plain => (OTHER_NS, "256Mi"),
    };
    let mut labels = json!({RUN_LABEL: run});
    match kind {
        Kind::Server => labels[SERVER_LABEL.0] = SERVER_LABEL.1.into(),
        Kind::Daemon => labels["app"] = "node-agent".into(),
        Kind::Plain => labels["app"] = "sidecar-service".into(),
    }
    for (k, v) in extra_labels {
        labels[*k] = (*v).into();
    }
    let mut metadata = json!({"name": name, "namespace": namespace, "labels": labels});
    if kind == Kind::Daemon {
        metadata["ownerReferences"] = json!([{
            "apiVersion": "apps/v1", "kind": "DaemonSet", "name": "node-agent",
            "uid": "00000000-0000-4000-8000-00000000d5e7", "controller": true,
        }]);
    }
    let mut spec = json!({
        "terminationGracePeriodSeconds": 0,
        "containers": [{
            "name": "c",
            "image": "registry.invalid/never-pulled:1",
            "resources": {"requests": {"cpu": format!("{cpu_millis}m"), "memory": memory}},
        }],
    });
    match node {
        Some(node) => spec["nodeName"] = node.into(),
        // kube-scheduler runs: a pod that matches no node stays Pending (Unschedulable).
        None => spec["nodeSelector"] = json!({"kubescaler-scale-run/nowhere": "true"}),
    }
    serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Pod", "metadata": metadata, "spec": spec,
    }))
    .map_err(|e| format!("pod: {e}"))
}

/// Where a node is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Place {
    /// kubescaler's pool, full.
    Full,
    /// kubescaler's pool, with room.
    Spare,
    /// The other pool.
    Other,
}

/// Pod `j` of node `i`: a daemon, then (in kubescaler's pool) the servers, then plain pods.
async fn create_pod(
    client: &Client,
    run: &str,
    layout: Layout,
    place: Place,
    i: usize,
    j: usize,
) -> Res<()> {
    let name = format!("{}-p{j:02}", node_name(i));
    let spare = place != Place::Full;
    let (kind, cpu) = if j == 0 {
        (Kind::Daemon, DAEMON_CPU_MILLIS)
    } else if j <= layout.servers && place != Place::Other {
        (Kind::Server, SERVER_CPU_MILLIS)
    } else if spare {
        (Kind::Plain, SMALL_CPU_MILLIS)
    } else {
        (Kind::Plain, layout.full_plain_cpu)
    };
    let pod = pod_object(run, &name, kind, cpu, Some(&node_name(i)), &[])?;
    let ns = pod.metadata.namespace.clone().unwrap_or_default();
    create(
        &Api::<Pod>::namespaced(client.clone(), &ns),
        &pod,
        &name,
        RETRY,
    )
    .await
}

// --- /proc -------------------------------------------------------------------------------

/// A `/proc/<pid>/status` field in kB (`VmRSS`, `VmHWM`).
fn status_kb(pid: u32, key: &str) -> Option<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    text.lines().find_map(|line| {
        line.strip_prefix(key)?
            .strip_prefix(':')?
            .trim()
            .strip_suffix("kB")?
            .trim()
            .parse()
            .ok()
    })
}

/// User + system CPU seconds of a process (clock ticks of 1/100 s, as on Linux x86-64/arm64).
fn cpu_seconds(pid: u32) -> Option<f64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after = text.rsplit_once(')')?.1;
    let fields: Vec<&str> = after.split_whitespace().collect();
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    Some((utime + stime) / 100.0)
}

/// kB (KiB, as /proc counts) to MiB.
fn mb(kb: u64) -> f64 {
    kb as f64 / 1024.0
}

/// RSS of a control-plane component, from its pidfile.
fn component_rss_kb(run_dir: &Path, name: &str) -> Option<u64> {
    let pid: u32 = std::fs::read_to_string(run_dir.join(format!("{name}.pid")))
        .ok()?
        .trim()
        .parse()
        .ok()?;
    status_kb(pid, "VmRSS")
}

// --- kubescaler's /metrics ---------------------------------------------------------------

/// A sample of [`metrics`]; NaN if absent, so that no wait is satisfied by a missing one.
fn metric(m: &BTreeMap<String, f64>, name: &str) -> f64 {
    m.get(name).copied().unwrap_or(f64::NAN)
}

/// Polls kubescaler's metrics until `check` holds.
async fn wait_metrics(
    http: &reqwest::Client,
    base: &str,
    what: &str,
    timeout: Duration,
    check: impl Fn(&BTreeMap<String, f64>) -> bool,
) -> Res<BTreeMap<String, f64>> {
    let start = Instant::now();
    loop {
        if let Ok(m) = metrics(http, base).await {
            if check(&m) {
                return Ok(m);
            }
        }
        if start.elapsed() > timeout {
            return Err(format!("timed out after {timeout:?} waiting for {what}"));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

// --- audit log ---------------------------------------------------------------------------

#[derive(Debug)]
struct Request {
    at: Timestamp,
    verb: String,
    uri: String,
}

fn kubescaler_requests(log: &Path, from: Timestamp, to: Timestamp) -> Res<Vec<Request>> {
    let text = std::fs::read_to_string(log).map_err(|e| format!("read {}: {e}", log.display()))?;
    Ok(text
        .lines()
        .filter_map(|line| serde_json::from_str::<Value>(line).ok())
        .filter(|e| e["stage"] == "RequestReceived" && e["user"]["username"] == KUBESCALER_USER)
        .filter_map(|e| {
            Some(Request {
                at: e["requestReceivedTimestamp"].as_str()?.parse().ok()?,
                verb: e["verb"].as_str().unwrap_or_default().to_string(),
                uri: e["requestURI"].as_str().unwrap_or_default().to_string(),
            })
        })
        .filter(|r| r.at >= from && r.at <= to)
        .collect())
}

/// `verb path` (query left out, watch marked) with counts.
fn tally(requests: &[Request]) -> BTreeMap<String, usize> {
    let mut out = BTreeMap::new();
    for r in requests {
        let (path, query) = r.uri.split_once('?').unwrap_or((&r.uri, ""));
        let watch = if query.contains("watch=true") || query.contains("watch=1") {
            " (watch)"
        } else {
            ""
        };
        *out.entry(format!("{} {path}{watch}", r.verb)).or_insert(0) += 1;
    }
    out
}

// --- statistics ---------------------------------------------------------------------------

/// Nearest-rank percentile of sorted values.
fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil().max(1.0) as usize;
    sorted[rank.min(sorted.len()) - 1]
}

fn median_u64(values: &[u64]) -> u64 {
    let mut v = values.to_vec();
    v.sort_unstable();
    v.get(v.len() / 2).copied().unwrap_or(0)
}

// --- the run -------------------------------------------------------------------------------

struct Trial {
    latency_ms: f64,
    created_ms: f64,
    grow_to: u64,
}

async fn run(args: &Args) -> Res<()> {
    let layout = Layout::new(args)?;
    if args.pool_nodes > args.nodes || args.spare_nodes > args.pool_nodes {
        return Err("need spare-nodes <= pool-nodes <= nodes".into());
    }
    let expected_free = layout.spare_slots() * args.spare_nodes as u64
        + layout.full_slots() * (args.pool_nodes - args.spare_nodes) as u64;
    if expected_free < u64::from(args.buffer) {
        return Err(format!(
            "the steady pool has {expected_free} free slots, below the buffer {}: kubescaler would grow at once",
            args.buffer
        ));
    }
    if (args.burst as u64) <= expected_free - u64::from(args.buffer) {
        return Err(format!(
            "a burst of {} fits the {} slots above the buffer: no growth to time",
            args.burst,
            expected_free - u64::from(args.buffer)
        ));
    }
    std::fs::create_dir_all(&args.out).map_err(|e| format!("{}: {e}", args.out.display()))?;
    let pods_total = args.nodes * args.pods_per_node;
    let servers_total = args.pool_nodes * layout.servers;
    let admin = client_from(&args.run_dir.join("kubeconfig")).await?;
    let kubescaler_kubeconfig = args.run_dir.join("kubeconfig-kubescaler");
    let audit_log = args.run_dir.join("audit.log");
    if !kubescaler_kubeconfig.is_file() || !audit_log.is_file() {
        return Err(format!(
            "{} or {} missing: start the control plane with KUBESCALER_AUDIT=kubescaler",
            kubescaler_kubeconfig.display(),
            audit_log.display()
        ));
    }
    let run = format!("{}", std::process::id());
    let load_start = loadavg();
    let mut report = String::new();
    let mut json_report = json!({});

    // --- 1. population ---
    let namespaces: Api<Namespace> = Api::all(admin.clone());
    let ns: Namespace = serde_json::from_value(json!({"metadata": {"name": SERVER_NS}}))
        .map_err(|e| e.to_string())?;
    create(&namespaces, &ns, SERVER_NS, RETRY).await?;
    let existing = Api::<Node>::all(admin.clone())
        .list_metadata(
            &ListParams::default()
                .labels(&format!("{POOL_LABEL}={POOL}"))
                .limit(1),
        )
        .await
        .map_err(|e| format!("list nodes: {e}"))?;
    if !existing.items.is_empty() {
        return Err("the cluster already has pool nodes: use a fresh control plane (hack/scale-run.sh starts one)".into());
    }

    say!(
        "creating {} nodes and {pods_total} pods, {} requests in flight (load average {load_start})",
        args.nodes,
        args.concurrency
    );
    let started = Instant::now();
    let nodes_api: Api<Node> = Api::all(admin.clone());
    let results: Vec<Res<()>> = futures::stream::iter(0..args.nodes)
        .map(|i| {
            let pool = if i < args.pool_nodes {
                POOL
            } else {
                OTHER_POOL
            };
            create_node(&nodes_api, &run, i, pool)
        })
        .buffer_unordered(args.concurrency)
        .collect()
        .await;
    results.into_iter().collect::<Res<Vec<()>>>()?;
    let nodes_secs = started.elapsed().as_secs_f64();
    say!("{} nodes in {nodes_secs:.1}s", args.nodes);

    let pods_started = Instant::now();
    let done = Arc::new(AtomicUsize::new(0));
    let progress = {
        let done = Arc::clone(&done);
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_secs(15)).await;
                let n = done.load(Ordering::Relaxed);
                say!(
                    "  {n}/{pods_total} pods ({:.0}/s)",
                    n as f64 / pods_started.elapsed().as_secs_f64()
                );
            }
        })
    };
    let spare_from = args.pool_nodes - args.spare_nodes;
    let place = |i: usize| match i {
        i if i >= args.pool_nodes => Place::Other,
        i if i >= spare_from => Place::Spare,
        _ => Place::Full,
    };
    let results: Vec<Res<()>> = futures::stream::iter(
        (0..args.nodes).flat_map(|i| (0..args.pods_per_node).map(move |j| (i, j))),
    )
    .map(|(i, j)| {
        let (admin, run, done) = (&admin, &run, &done);
        async move {
            let r = create_pod(admin, run, layout, place(i), i, j).await;
            done.fetch_add(1, Ordering::Relaxed);
            r
        }
    })
    .buffer_unordered(args.concurrency)
    .collect()
    .await;
    progress.abort();
    results.into_iter().collect::<Res<Vec<()>>>()?;
    let pods_secs = pods_started.elapsed().as_secs_f64();
    let populate_secs = started.elapsed().as_secs_f64();
    let apiserver_mb = component_rss_kb(&args.run_dir, "kube-apiserver").map_or(f64::NAN, mb);
    let etcd_mb = component_rss_kb(&args.run_dir, "etcd").map_or(f64::NAN, mb);
    say!(
        "{pods_total} pods in {pods_secs:.1}s ({:.0}/s); kube-apiserver RSS {apiserver_mb:.0} MiB, etcd {etcd_mb:.0} MiB",
        pods_total as f64 / pods_secs
    );

    // --- 2. the fake cloud and kubescaler ---
    let Cloud {
        fake,
        epoch: fake_epoch,
        cluster_id,
        pool_id,
    } = support::start_fake(
        FakeOptions {
            boot_delay: Duration::from_secs(3600),
            ..FakeOptions::default()
        },
        CLUSTER,
        PoolSpec::new(POOL, "g-32vcpu-128gb", args.pool_nodes as u32).label(POOL_LABEL, POOL),
    )
    .await?;
    let port = support::free_port()?;
    let metrics_base = format!("http://127.0.0.1:{port}");
    let config_path = args.out.join("kubescaler.yaml");
    let config = format!(
        "# Written by examples/scale_run.rs.\n\
         cloud-provider: digitalocean\n\
         cluster-name: {CLUSTER}\n\
         node-pool-name: {POOL}\n\
         digitalocean-api-url: {}\n\
         node-selector: \"{POOL_LABEL}={POOL}\"\n\
         cluster-kube-config-path: {}\n\
         server-pod-label-name: {}\n\
         server-pod-label-value: {}\n\
         minimum-node-pool-size: 1\n\
         maximum-node-pool-size: {}\n\
         buffer-slot-size: {}\n\
         server-cpu-resource-request: {SERVER_CPU_MILLIS}\n\
         scale-loop-tick-sec: {}\n\
         leader-election: false\n\
         http-listen-address: \"127.0.0.1:{port}\"\n\
         log-format: text\n\
         log-level: info\n",
        fake.base_url(),
        kubescaler_kubeconfig.display(),
        SERVER_LABEL.0,
        SERVER_LABEL.1,
        // Room to grow, within the fake's cap of 512 when the pool is below it.
        (args.pool_nodes * 2).min(512).max(args.pool_nodes + 1),
        args.buffer,
        args.tick,
    );
    std::fs::write(&config_path, &config).map_err(|e| format!("{}: {e}", config_path.display()))?;

    let since_start = Timestamp::now();
    let spawned = Instant::now();
    let mut daemon = Daemon::spawn(&args.kubescaler, &config_path, fake.token(), &args.out)?;
    let pid = daemon.pid();
    say!(
        "kubescaler started (pid {pid}), log {}",
        daemon.log.display()
    );

    // RSS every 200 ms, all along.
    let samples: Arc<Mutex<Vec<(f64, u64)>>> = Arc::default();
    let sampler = {
        let samples = Arc::clone(&samples);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(200));
            loop {
                tick.tick().await;
                if let Some(kb) = status_kb(pid, "VmRSS") {
                    lock(&samples).push((spawned.elapsed().as_secs_f64(), kb));
                }
            }
        })
    };
    let rss_since = |from: f64| -> Vec<u64> {
        lock(&samples)
            .iter()
            .filter(|(t, _)| *t >= from)
            .map(|(_, kb)| *kb)
            .collect()
    };

    // --- 3. sync ---
    let http = http_client(Duration::from_secs(10))?;
    let ready = daemon
        .wait_until(spawned, WAIT, "kubescaler not ready in time", || async {
            http.get(format!("{metrics_base}/readyz"))
                .send()
                .await
                .is_ok_and(|r| r.status().is_success())
        })
        .await?;
    let synced = wait_metrics(
        &http,
        &metrics_base,
        "the first pass over the whole cluster",
        WAIT,
        |m| {
            metric(m, "kubescaler_running_servers") == servers_total as f64
                && metric(m, "kubescaler_reconcile_duration_seconds_count") >= 1.0
        },
    )
    .await?;
    let first_pass = spawned.elapsed();
    let free_slots = metric(&synced, "kubescaler_free_slots");
    let rss_sync = status_kb(pid, "VmRSS").unwrap_or(0);
    let hwm_sync = status_kb(pid, "VmHWM").unwrap_or(0);
    say!(
        "kubescaler ready after {:.1}s, first full pass after {:.1}s: {} servers, {free_slots} free slots (expected {expected_free}); RSS {:.1} MiB, peak {:.1} MiB",
        ready.as_secs_f64(),
        first_pass.as_secs_f64(),
        metric(&synced, "kubescaler_running_servers"),
        mb(rss_sync),
        mb(hwm_sync)
    );
    if free_slots != expected_free as f64 {
        return Err(format!(
            "kubescaler counts {free_slots} free slots, the layout has {expected_free}"
        ));
    }

    // --- 4. idle ---
    // Let the start-up settle (the first pass's Events, a tick) before the window.
    tokio::time::sleep(Duration::from_secs(args.tick.max(5))).await;
    let idle_from = Timestamp::now();
    let idle_t0 = spawned.elapsed().as_secs_f64();
    let before = metrics(&http, &metrics_base).await?;
    let cpu_before = cpu_seconds(pid).unwrap_or(f64::NAN);
    say!("idle for {}s", args.idle_secs);
    tokio::time::sleep(Duration::from_secs(args.idle_secs)).await;
    let cpu_idle = cpu_seconds(pid).unwrap_or(f64::NAN) - cpu_before;
    let after = metrics(&http, &metrics_base).await?;
    let idle_to = Timestamp::now();
    let idle_rss = rss_since(idle_t0);
    let rss_idle_median = median_u64(&idle_rss);
    let rss_idle_max = idle_rss.iter().copied().max().unwrap_or(0);
    // The audit backend writes while serving; a moment's margin.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let startup_requests = kubescaler_requests(&audit_log, since_start, idle_from)?;
    let idle_requests = kubescaler_requests(&audit_log, idle_from, idle_to)?;
    let idle_passes = metric(&after, "kubescaler_reconcile_duration_seconds_count")
        - metric(&before, "kubescaler_reconcile_duration_seconds_count");
    let idle_pass_secs = (metric(&after, "kubescaler_reconcile_duration_seconds_sum")
        - metric(&before, "kubescaler_reconcile_duration_seconds_sum"))
        / idle_passes;
    let per_minute = idle_requests.len() as f64 * 60.0 / args.idle_secs as f64;
    say!(
        "idle: {} requests in {}s ({per_minute:.1}/min): {:?}; {idle_passes} passes of {:.1} ms on average; CPU {cpu_idle:.2}s",
        idle_requests.len(),
        args.idle_secs,
        tally(&idle_requests),
        idle_pass_secs * 1000.0
    );

    // --- 5. bursts ---
    let servers_api: Api<Pod> = Api::namespaced(admin.clone(), SERVER_NS);
    let token = fake.token().to_string();
    let pool_url = format!(
        "{}/v2/kubernetes/clusters/{cluster_id}/node_pools/{pool_id}",
        fake.base_url()
    );
    let bursts_from = Timestamp::now();
    let bursts_t0 = spawned.elapsed().as_secs_f64();
    let mut trials: Vec<Trial> = Vec::new();
    let mut unexpected: Vec<String> = Vec::new();
    let mut seen_seq = fake.requests().last().map_or(0, |r| r.seq);
    for trial in 0..args.trials {
        // Varying phase against the tick: 0.5 to 3 s, spread by the golden ratio.
        let phase = 0.5 + 2.5 * ((trial as f64 * 0.618_034) % 1.0);
        tokio::time::sleep(Duration::from_secs_f64(phase)).await;
        let puts_before: Vec<_> = fake
            .requests()
            .into_iter()
            .filter(|r| r.seq > seen_seq && r.method == "PUT")
            .collect();
        if !puts_before.is_empty() {
            unexpected.push(format!(
                "before trial {trial}: resize with no burst: {puts_before:?}"
            ));
        }
        seen_seq = fake.requests().last().map_or(seen_seq, |r| r.seq);
        let tag = format!("t{trial:02}");
        let pods: Vec<Pod> = (0..args.burst)
            .map(|k| {
                pod_object(
                    &run,
                    &format!("burst-{tag}-{k:03}"),
                    Kind::Server,
                    SERVER_CPU_MILLIS,
                    None,
                    &[(BURST_LABEL, &tag)],
                )
            })
            .collect::<Res<_>>()?;
        let t0 = Instant::now();
        let creates = futures::future::join_all(pods.iter().map(|p| {
            create(
                &servers_api,
                p,
                p.metadata.name.as_deref().unwrap_or("?"),
                RETRY,
            )
        }));
        let created = creates.await;
        let created_ms = t0.elapsed().as_secs_f64() * 1000.0;
        created.into_iter().collect::<Res<Vec<()>>>()?;
        let grow = loop {
            let put = fake.requests().into_iter().find(|r| {
                r.seq > seen_seq
                    && r.method == "PUT"
                    && r.body
                        .as_ref()
                        .and_then(|b| b["count"].as_u64())
                        .is_some_and(|c| c > args.pool_nodes as u64)
            });
            if let Some(put) = put {
                break put;
            }
            if t0.elapsed() > Duration::from_secs(60) {
                return Err(format!(
                    "trial {trial}: no resize 60 s after the burst; see {}",
                    daemon.log.display()
                ));
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        };
        let arrived = fake_epoch + grow.at;
        let latency_ms = arrived.saturating_duration_since(t0).as_secs_f64() * 1000.0;
        let grow_to = grow
            .body
            .as_ref()
            .and_then(|b| b["count"].as_u64())
            .unwrap_or(0);
        say!(
            "trial {:>2}/{}: burst of {} created in {created_ms:.0} ms, grow {} -> {grow_to} after {latency_ms:.0} ms ({})",
            trial + 1,
            args.trials,
            args.burst,
            args.pool_nodes,
            grow.status.map_or("no answer".to_string(), |s| s.to_string())
        );
        if !grow.status.is_some_and(|s| (200..300).contains(&s)) {
            unexpected.push(format!(
                "trial {trial}: the fake refused the resize: {grow}"
            ));
        }
        trials.push(Trial {
            latency_ms,
            created_ms,
            grow_to,
        });

        // Reset: burst gone (and seen gone by a pass), then the pool's count back.
        servers_api
            .delete_collection(
                &DeleteParams {
                    grace_period_seconds: Some(0),
                    ..DeleteParams::default()
                },
                &ListParams::default().labels(&format!("{BURST_LABEL}={tag}")),
            )
            .await
            .map_err(|e| format!("delete burst {tag}: {e}"))?;
        wait_metrics(
            &http,
            &metrics_base,
            "a pass without the burst",
            WAIT,
            |m| metric(m, "kubescaler_pending_servers") == 0.0,
        )
        .await?;
        let extra: Vec<_> = fake
            .requests()
            .into_iter()
            .filter(|r| r.seq > grow.seq && r.method == "PUT")
            .collect();
        if !extra.is_empty() {
            unexpected.push(format!("trial {trial}: more than one resize: {extra:?}"));
        }
        let answer = http
            .put(&pool_url)
            .bearer_auth(&token)
            .json(&json!({"name": POOL, "count": args.pool_nodes}))
            .send()
            .await
            .map_err(|e| format!("reset the pool: {e}"))?;
        if !answer.status().is_success() {
            return Err(format!("reset the pool: {}", answer.status()));
        }
        let count = fake.pool(&cluster_id, &pool_id).map(|p| p.count);
        if count != Some(args.pool_nodes as u32) {
            return Err(format!("reset the pool: count {count:?}"));
        }
        seen_seq = fake.requests().last().map_or(seen_seq, |r| r.seq);
    }
    let bursts_to = Timestamp::now();
    let rss_bursts = rss_since(bursts_t0);
    let rss_after = status_kb(pid, "VmRSS").unwrap_or(0);
    let hwm = status_kb(pid, "VmHWM").unwrap_or(0);
    let final_metrics = metrics(&http, &metrics_base).await?;
    sampler.abort();
    let exit = daemon.stop();
    say!("kubescaler stopped: {exit:?}");
    tokio::time::sleep(Duration::from_secs(1)).await;
    let burst_requests = kubescaler_requests(&audit_log, bursts_from, bursts_to)?;

    // --- 6. report ---
    let mut latencies: Vec<f64> = trials.iter().map(|t| t.latency_ms).collect();
    latencies.sort_by(f64::total_cmp);
    let mut created: Vec<f64> = trials.iter().map(|t| t.created_ms).collect();
    created.sort_by(f64::total_cmp);
    let (p50, p95, p99) = (
        percentile(&latencies, 50.0),
        percentile(&latencies, 95.0),
        percentile(&latencies, 99.0),
    );
    let max = latencies.last().copied().unwrap_or(f64::NAN);
    let min = latencies.first().copied().unwrap_or(f64::NAN);
    let peak_mb = mb(hwm);
    let steady_mb = mb(rss_idle_median);
    let verdict = |ok: bool| if ok { "met" } else { "MISSED" };
    let (warn_lines, error_lines) = daemon.warn_error_lines();
    let grow_targets: Vec<u64> = trials.iter().map(|t| t.grow_to).collect();
    let samples_csv: String =
        lock(&samples)
            .iter()
            .fold("seconds,rss_kb\n".to_string(), |mut s, (t, kb)| {
                let _ = writeln!(s, "{t:.1},{kb}");
                s
            });
    std::fs::write(args.out.join("rss.csv"), samples_csv).map_err(|e| e.to_string())?;

    let w = &mut report;
    let _ = writeln!(
        w,
        "kubescaler scale run, {}",
        Timestamp::now().strftime("%Y-%m-%d %H:%M UTC")
    );
    let _ = writeln!(w, "reproduce: {}", args.command);
    let _ = writeln!(
        w,
        "machine: {} CPUs; load average (1/5/15 min) {load_start} at start, {} at end",
        std::thread::available_parallelism().map_or(0, usize::from),
        loadavg()
    );
    let _ = writeln!(
        w,
        "cluster: {} nodes (32 CPU, {NODE_MEMORY}, {NODE_PODS} pods, Ready), {} of them in kubescaler's pool ({POOL_LABEL}={POOL}); {pods_total} pods bound by spec.nodeName ({} per node): {servers_total} servers ({}={}) on the pool's nodes, {} DaemonSet pods, {} others; {} free slots on {} pool nodes, none on the others",
        args.nodes,
        args.pool_nodes,
        args.pods_per_node,
        SERVER_LABEL.0,
        SERVER_LABEL.1,
        args.nodes,
        pods_total - servers_total - args.nodes,
        expected_free,
        args.spare_nodes
    );
    let _ = writeln!(
        w,
        "population: {populate_secs:.0} s ({} nodes + status in {nodes_secs:.1} s, {pods_total} pods in {pods_secs:.1} s = {:.0} pods/s, {} in flight); then kube-apiserver RSS {apiserver_mb:.0} MiB, etcd {etcd_mb:.0} MiB",
        args.nodes,
        pods_total as f64 / pods_secs,
        args.concurrency
    );
    let _ = writeln!(
        w,
        "kubescaler: release binary, buffer {}, tick {} s, leader election off, DigitalOcean driver against the DOKS fake; ready {:.1} s after start, first full pass after {:.1} s ({} requests to the API server at start-up: {:?})",
        args.buffer,
        args.tick,
        ready.as_secs_f64(),
        first_pass.as_secs_f64(),
        startup_requests.len(),
        tally(&startup_requests)
    );
    let _ = writeln!(w);
    let _ = writeln!(
        w,
        "resident memory (target < 100 MB; MiB here, {}): after sync {:.1} MiB; steady (idle minute) median {steady_mb:.1} MiB, max {:.1} MiB; after {} bursts {:.1} MiB (max during bursts {:.1} MiB); peak VmHWM {peak_mb:.1} MiB (at sync {:.1} MiB)",
        // The target is in (decimal) megabytes.
        verdict(hwm as f64 * 1024.0 < 100e6),
        mb(rss_sync),
        mb(rss_idle_max),
        trials.len(),
        mb(rss_after),
        mb(rss_bursts.iter().copied().max().unwrap_or(0)),
        mb(hwm_sync)
    );
    let _ = writeln!(
        w,
        "burst to grow call (target p99 < 1 s, {}): {} trials of {} pending server pods: p50 {p50:.0} ms, p95 {p95:.0} ms, p99 {p99:.0} ms (min {min:.0}, max {max:.0}); creating a burst took p50 {:.0} ms; grow targets {:?}",
        verdict(p99 < 1000.0),
        trials.len(),
        args.burst,
        percentile(&created, 50.0),
        grow_targets.iter().collect::<std::collections::BTreeSet<_>>()
    );
    let _ = writeln!(
        w,
        "idle API requests (target < 10/min, {}): {} in {} s = {per_minute:.1}/min {:?}; {idle_passes} passes, {:.1} ms each on average; CPU {cpu_idle:.2} s",
        verdict(per_minute < 10.0),
        idle_requests.len(),
        args.idle_secs,
        tally(&idle_requests),
        idle_pass_secs * 1000.0
    );
    let _ = writeln!(
        w,
        "during the bursts: {} API requests {:?}; actions {:?}; errors {:?}",
        burst_requests.len(),
        tally(&burst_requests),
        final_metrics
            .iter()
            .filter(|(k, _)| k.starts_with("kubescaler_actions_total"))
            .collect::<Vec<_>>(),
        final_metrics
            .iter()
            .filter(|(k, _)| k.starts_with("kubescaler_errors_total"))
            .collect::<Vec<_>>()
    );
    let _ = writeln!(
        w,
        "kubescaler log: {warn_lines} WARN, {error_lines} ERROR lines (the not-synced passes before the caches filled are expected); exit {exit:?}"
    );
    if unexpected.is_empty() {
        let _ = writeln!(w, "no unexpected resize");
    } else {
        for u in &unexpected {
            let _ = writeln!(w, "UNEXPECTED: {u}");
        }
    }
    let _ = writeln!(
        w,
        "files: {} (report.txt, report.json, kubescaler.log, kubescaler.yaml, rss.csv)",
        args.out.display()
    );

    json_report["nodes"] = json!(args.nodes);
    json_report["pool_nodes"] = json!(args.pool_nodes);
    json_report["pods"] = json!(pods_total);
    json_report["population_seconds"] =
        json!({"total": populate_secs, "nodes": nodes_secs, "pods": pods_secs});
    json_report["rss_mib"] = json!({
        "after_sync": mb(rss_sync), "steady_median": steady_mb, "steady_max": mb(rss_idle_max),
        "after_bursts": mb(rss_after), "peak_hwm": peak_mb,
    });
    json_report["burst_to_grow_ms"] = json!({
        "trials": latencies.len(), "burst": args.burst, "p50": p50, "p95": p95, "p99": p99,
        "min": min, "max": max, "all": trials.iter().map(|t| t.latency_ms).collect::<Vec<_>>(),
    });
    json_report["idle"] = json!({
        "seconds": args.idle_secs, "requests": idle_requests.len(), "per_minute": per_minute,
        "passes": idle_passes, "mean_pass_ms": idle_pass_secs * 1000.0, "cpu_seconds": cpu_idle,
        "tally": tally(&idle_requests),
    });
    json_report["startup_requests"] = json!(startup_requests.len());
    json_report["ready_seconds"] = json!(ready.as_secs_f64());
    json_report["first_pass_seconds"] = json!(first_pass.as_secs_f64());
    json_report["apiserver_rss_mib"] = json!(apiserver_mb);
    json_report["etcd_rss_mib"] = json!(etcd_mb);
    json_report["load_average"] = json!({"start": load_start, "end": loadavg()});
    json_report["unexpected"] = json!(unexpected);
    json_report["command"] = json!(args.command);

    std::fs::write(args.out.join("report.txt"), &report).map_err(|e| e.to_string())?;
    std::fs::write(
        args.out.join("report.json"),
        serde_json::to_string_pretty(&json_report).map_err(|e| e.to_string())?,
    )
    .map_err(|e| e.to_string())?;
    print!("{report}");
    fake.shutdown().await;
    if unexpected.is_empty() {
        Ok(())
    } else {
        Err("unexpected resizes (see the report)".into())
    }
}
