//! Simulator fidelity (issue 12): one demand trace replayed in compressed time against the
//! real `kubescaler` binary, the DOKS fake and a real local control plane (kube-apiserver,
//! etcd, kube-scheduler), next to `kubescaler simulate` on the same trace, config and seed.
//! Not a test: `hack/fidelity.sh` builds it, starts a dedicated control plane, runs it and
//! stops the plane; see that script.
//!
//! ```text
//! bash hack/fidelity.sh                  # about 35 minutes, report in /tmp/kubescaler-fidelity
//! ```
//!
//! What it does, in order:
//! 1. Reads the trace with kubescaler's own library ([`read_trace`]) and draws the workload
//!    with [`kubescaler::simulate::demand::Demand::workload`] (duration, mean session, seed):
//!    the very sessions `simulate` plays (warm ones running at second 0, then arrivals with
//!    their lengths).
//! 2. Starts the DOKS fake in this process, connected to the API server: a pool of
//!    `--size` nodes (4 slots of `--server-cpu` millicores on s-4vcpu-8gb's 3900m) that starts
//!    with as many running nodes as `simulate` starts with (the warm sessions plus the buffer,
//!    within the pool's bounds); a node ordered later registers as a Ready Node after
//!    `--boot-delay` seconds. Writes one kubescaler config (`kubescaler.yaml`) for both sides.
//! 3. Runs `kubescaler simulate` with that config, the trace, `--step 1s`, `--boot-delay`,
//!    `--session-length`, `--seed`, `--daemon-pods 0` (the fake's nodes run no DaemonSet pods)
//!    and `--placement least-allocated` (kube-scheduler's default scoring); reads its
//!    `report.json`.
//! 4. Replay: creates the warm server pods and waits until kube-scheduler has bound them,
//!    starts the real binary (leader election off) and waits for its first pass: that is
//!    second 0. A warm pod is deleted at its remaining length; each arrival's pod is created at
//!    its second and deleted `length` seconds after it was bound (a session runs once started,
//!    as in `simulate`). A watch on the server pods records when each is bound. No kubelet
//!    runs: a bound pod stays Pending with `spec.nodeName` set, which is a running server for
//!    kubescaler and the fake.
//! 5. Measures:
//!    - instant start: bound within `--instant-threshold` (1.5 s) of the create request
//!      (`simulate`: started within the one-second step it arrived in; kube-scheduler's
//!      latency is not zero, hence the margin);
//!    - wait: create request to bind (a pod never bound counts its wait until the end), p99
//!      by nearest rank like `simulate`;
//!    - node-hours: the pool nodes the fake holds (ordered, booting, running, until removed),
//!      sampled every 250 ms and integrated over the run, the way `simulate` pays a node from
//!      its order to its deletion;
//!    - cordons, uncordons: kubescaler's `/metrics` (`kubescaler_actions_total`);
//!      deletions: the DeleteNode requests the fake accepted (its request log);
//!    - server pods killed: the fake's count of server pods on the nodes it removed.
//! 6. Writes `report.txt` (printed too), `report.json`, `series.csv` (per second: nodes,
//!    running nodes, bound and pending server pods) and `sessions.csv` into `--out`; exits 1
//!    (MISSED) if instant starts differ by more than `--max-instant-pp` percentage points,
//!    node-hours by more than `--max-node-hours-pct` percent, or a server pod was killed.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use clap::Parser;
use doks_fake::{FakeDoks, FakeOptions, Operation, PoolSpec};
use futures::StreamExt;
use jiff::Timestamp;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, DeleteParams, ListParams};
use kube::runtime::watcher;
use kubescaler::simulate::demand::{read_trace, Workload};
use serde_json::{json, Value};

mod support;
use support::{client_from, http_client, loadavg, lock, metrics, say, Backoff, Cloud, Daemon, Res};

/// The prefix of [`say!`]'s lines.
const LOG_TAG: &str = "fidelity";

const NAMESPACE: &str = "default";
const TOKEN: &str = "dop_v1_fidelity_token_0123456789abcdef";
const CLUSTER: &str = "fidelity";
const POOL: &str = "fidelity";
/// The pool's nodes carry it (valued with the run id): kubescaler's node selector.
const POOL_KEY: &str = "kubescaler-fidelity/pool";
/// The server pods carry it (valued with the run id).
const SERVER_KEY: &str = "kubescaler-fidelity/server";
/// Longest wait for a set-up step.
const WAIT: Duration = Duration::from_secs(120);
/// Retries of a create.
const RETRY: Backoff = Backoff {
    first: Duration::from_millis(100),
    max: Duration::from_secs(2),
};

/// Replays a trace against the real kubescaler, the DOKS fake and a local control plane, and
/// compares with `kubescaler simulate` (see the module docs; run it through hack/fidelity.sh).
#[derive(Debug, Parser)]
struct Args {
    /// The control plane's run dir (kubeconfig, kubeconfig-kubescaler).
    #[arg(long)]
    run_dir: PathBuf,
    /// The kubescaler binary (the daemon and `simulate`).
    #[arg(long)]
    kubescaler: PathBuf,
    /// Where the report and the logs go.
    #[arg(long)]
    out: PathBuf,
    /// The demand trace (`time,concurrent_sessions` or `time,sessions_started`).
    #[arg(long)]
    trace: PathBuf,
    /// Seconds to play (default: the trace's span, as `simulate` does).
    #[arg(long)]
    duration: Option<u64>,
    /// Mean session length, seconds (`simulate --session-length`; note that `simulate` clamps
    /// every session to at least 60 s).
    #[arg(long, default_value_t = 60)]
    session_secs: u64,
    /// Seconds from ordering a node to its Node being Ready (fake) / Ready (simulate).
    #[arg(long, default_value_t = 5)]
    boot_delay: u64,
    /// RNG seed of the workload.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Droplet size of the pool (its allocatable from the fake's table).
    #[arg(long, default_value = "s-4vcpu-8gb")]
    size: String,
    /// CPU request of a server pod, millicores (server-cpu-resource-request).
    #[arg(long, default_value_t = 900)]
    server_cpu: u64,
    #[arg(long, default_value_t = 4)]
    buffer: u32,
    #[arg(long, default_value_t = 2)]
    min_nodes: u32,
    #[arg(long, default_value_t = 30)]
    max_nodes: u32,
    #[arg(long, default_value_t = 1)]
    tick: u64,
    #[arg(long, default_value_t = 3)]
    empty_node_expiration: u64,
    #[arg(long, default_value_t = 10)]
    scale_down_unneeded: u64,
    #[arg(long, default_value_t = 10)]
    scale_down_delay_after_add: u64,
    /// A pod bound within this many seconds of its creation started at once.
    #[arg(long, default_value_t = 1.5)]
    instant_threshold: f64,
    /// Tolerance on instant starts, percentage points.
    #[arg(long, default_value_t = 2.0)]
    max_instant_pp: f64,
    /// Tolerance on node-hours, percent of simulate's.
    #[arg(long, default_value_t = 5.0)]
    max_node_hours_pct: f64,
    /// The command line to print as the way to reproduce the figures.
    #[arg(long, default_value = "bash hack/fidelity.sh")]
    command: String,
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    match run(&args).await {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            say!("FAILED: {e}");
            ExitCode::FAILURE
        }
    }
}

/// A Kubernetes CPU quantity (`3900m`, `4`) in millicores.
fn cpu_millis(q: &str) -> Option<u64> {
    match q.strip_suffix('m') {
        Some(m) => m.parse().ok(),
        None => q.parse::<f64>().ok().map(|c| (c * 1000.0).round() as u64),
    }
}

// --- kubescaler's /metrics -----------------------------------------------------------------

/// A sample of [`metrics`]; 0 if absent (a counter nothing has counted yet).
fn metric(m: &BTreeMap<String, f64>, name: &str) -> f64 {
    m.get(name).copied().unwrap_or(0.0)
}

// --- server pods ---------------------------------------------------------------------------

/// One session's server pod, as the replay saw it.
#[derive(Clone, Debug)]
struct PodRec {
    /// Seconds from second 0 its session arrived (0 for a warm one).
    arrival: u64,
    /// Seconds it runs once bound (for a warm one: from second 0).
    length: u64,
    warm: bool,
    /// When the create request was sent.
    created: Option<Instant>,
    /// When the watch first showed it bound.
    bound: Option<Instant>,
    node: Option<String>,
    /// When the replay deleted it.
    deleted: Option<Instant>,
}

type Pods = Arc<Mutex<BTreeMap<String, PodRec>>>;

fn server_pod(name: &str, run: &str, cpu_millis: u64) -> Res<Pod> {
    serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": NAMESPACE, "labels": {SERVER_KEY: run}},
        "spec": {
            "nodeSelector": {POOL_KEY: run},
            "terminationGracePeriodSeconds": 0,
            "containers": [{
                "name": "server",
                "image": "registry.invalid/game-server:1",
                "resources": {"requests": {"cpu": format!("{cpu_millis}m")}},
            }],
        },
    }))
    .map_err(|e| format!("pod: {e}"))
}

/// Creates the pod, retrying what a busy API server may answer; 409 counts as created.
async fn create_pod(api: &Api<Pod>, pod: &Pod, name: &str) -> Res<()> {
    support::create(api, pod, name, RETRY).await
}

/// Deletes the pod at once (grace 0), retrying; 404 counts as deleted.
async fn delete_pod(api: &Api<Pod>, name: &str) {
    let now = DeleteParams {
        grace_period_seconds: Some(0),
        ..DeleteParams::default()
    };
    for attempt in 1..=8u32 {
        match api.delete(name, &now).await {
            Ok(_) => return,
            Err(kube::Error::Api(s)) if s.code == 404 => return,
            Err(e) => {
                say!("delete {name} (attempt {attempt}): {e}");
                tokio::time::sleep(Duration::from_millis(100 * u64::from(attempt))).await;
            }
        }
    }
}

/// Watches the server pods and records when each is first seen bound; an arrival's pod is then
/// deleted `length` seconds later.
fn spawn_watch(api: Api<Pod>, run: String, pods: Pods) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let config = watcher::Config::default().labels(&format!("{SERVER_KEY}={run}"));
        let mut stream = watcher(api.clone(), config).boxed();
        while let Some(event) = stream.next().await {
            let pod = match event {
                Ok(watcher::Event::Apply(p) | watcher::Event::InitApply(p)) => p,
                Ok(_) => continue,
                Err(e) => {
                    say!("pod watch: {e}");
                    continue;
                }
            };
            let (Some(name), Some(node)) = (
                pod.metadata.name.clone(),
                pod.spec.as_ref().and_then(|s| s.node_name.clone()),
            ) else {
                continue;
            };
            let now = Instant::now();
            let length = {
                let mut map = lock(&pods);
                let Some(rec) = map.get_mut(&name) else {
                    continue;
                };
                if rec.bound.is_some() {
                    continue;
                }
                rec.bound = Some(now);
                rec.node = Some(node);
                (!rec.warm).then_some(rec.length)
            };
            if let Some(length) = length {
                let (api, pods) = (api.clone(), Arc::clone(&pods));
                tokio::spawn(async move {
                    tokio::time::sleep_until((now + Duration::from_secs(length)).into()).await;
                    delete_pod(&api, &name).await;
                    if let Some(rec) = lock(&pods).get_mut(&name) {
                        rec.deleted = Some(Instant::now());
                    }
                });
            }
        }
    })
}

// --- statistics ----------------------------------------------------------------------------

/// Nearest-rank percentile of sorted values, as `simulate`'s `Waits::of`.
fn percentile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[i]
}

/// One side's figures.
#[derive(Clone, Debug, Default)]
struct Row {
    arrived: u64,
    instant: u64,
    instant_share: f64,
    p99_wait: f64,
    waiting_at_end: u64,
    node_hours: f64,
    peak_nodes: u64,
    grows: u64,
    cordons: u64,
    uncordons: u64,
    deletions: u64,
    killed: u64,
}

impl Row {
    fn to_json(&self) -> Value {
        json!({
            "arrived": self.arrived, "instant": self.instant, "instant_share": self.instant_share,
            "p99_wait_sec": self.p99_wait, "waiting_at_end": self.waiting_at_end,
            "node_hours": self.node_hours, "peak_nodes": self.peak_nodes, "grows": self.grows,
            "cordons": self.cordons, "uncordons": self.uncordons, "deletions": self.deletions,
            "server_pods_killed": self.killed,
        })
    }
}

fn simulate_row(report: &Value) -> Res<Row> {
    let s = &report["summary"];
    let u = |v: &Value| {
        v.as_u64()
            .ok_or_else(|| format!("simulate report: {v} not a count"))
    };
    Ok(Row {
        arrived: u(&s["sessions"]["arrived"])?,
        instant: u(&s["sessions"]["instant"])?,
        instant_share: s["sessions"]["instant_share"]
            .as_f64()
            .ok_or("simulate report: no instant_share")?,
        p99_wait: s["wait_sec"]["p99"].as_f64().unwrap_or(f64::NAN),
        waiting_at_end: u(&s["sessions"]["waiting_at_end"])?,
        node_hours: s["node_hours"]
            .as_f64()
            .ok_or("simulate report: no node_hours")?,
        peak_nodes: u(&s["peak_nodes"])?,
        grows: u(&s["actions"]["grow"])?,
        cordons: u(&s["actions"]["cordon"])?,
        uncordons: u(&s["actions"]["uncordon"])?,
        deletions: u(&s["actions"]["delete"])?,
        killed: u(&s["server_pods_killed"])?,
    })
}

// --- the run -------------------------------------------------------------------------------

/// Starts as many nodes as `simulate`'s engine does: the warm sessions plus the buffer, within
/// the pool's bounds.
fn initial_nodes(args: &Args, workload: &Workload, slots: u64) -> u32 {
    let needed = (workload.warm.len() as u64 + u64::from(args.buffer)).div_ceil(slots);
    (needed.min(u64::from(args.max_nodes)) as u32).max(args.min_nodes)
}

fn config_yaml(args: &Args, fake: &FakeDoks, run: &str, kubeconfig: &Path, port: u16) -> String {
    let shape = doks_fake::default_sizes()
        .get(&args.size)
        .cloned()
        .unwrap_or_else(|| doks_fake::default_sizes()["s-4vcpu-8gb"].clone());
    format!(
        "# Written by examples/fidelity.rs: the daemon and `kubescaler simulate` both read it.\n\
         cloud-provider: digitalocean\n\
         digitalocean-api-url: {url}\n\
         cluster-name: {CLUSTER}\n\
         node-pool-name: {POOL}\n\
         node-selector: \"{POOL_KEY}={run}\"\n\
         cluster-kube-config-path: {kubeconfig}\n\
         server-pod-label-name: {SERVER_KEY}\n\
         server-pod-label-value: {run}\n\
         server-cpu-resource-request: {cpu}\n\
         minimum-node-pool-size: {min}\n\
         maximum-node-pool-size: {max}\n\
         buffer-slot-size: {buffer}\n\
         scale-loop-tick-sec: {tick}\n\
         empty-node-expiration-sec: {expiration}\n\
         scale-down-unneeded-sec: {unneeded}\n\
         scale-down-delay-after-add-sec: {after_add}\n\
         node-boot-timeout-sec: 120\n\
         node-template-cpu: {node_cpu}\n\
         node-template-memory: {node_memory}\n\
         node-template-pods: {node_pods}\n\
         leader-election: false\n\
         http-listen-address: \"127.0.0.1:{port}\"\n\
         log-format: text\n\
         log-level: info\n",
        url = fake.base_url(),
        kubeconfig = kubeconfig.display(),
        cpu = args.server_cpu,
        min = args.min_nodes,
        max = args.max_nodes,
        buffer = args.buffer,
        tick = args.tick,
        expiration = args.empty_node_expiration,
        unneeded = args.scale_down_unneeded,
        after_add = args.scale_down_delay_after_add,
        node_cpu = shape.allocatable_cpu,
        node_memory = shape.allocatable_memory,
        node_pods = shape.pods,
    )
}

/// `kubescaler simulate` on the same config and trace; its report.json.
fn run_simulate(args: &Args, config: &Path, duration: u64) -> Res<Value> {
    let dir = args.out.join("simulate");
    let argv: Vec<String> = [
        "simulate",
        "--config",
        &config.display().to_string(),
        "--log-level",
        "error",
        "--trace",
        &args.trace.display().to_string(),
        "--duration",
        &format!("{duration}s"),
        "--session-length",
        &format!("{}s", args.session_secs),
        "--boot-delay",
        &format!("{}s", args.boot_delay),
        "--step",
        "1s",
        "--seed",
        &args.seed.to_string(),
        "--daemon-pods",
        "0",
        "--placement",
        "least-allocated",
        "--out",
        &dir.display().to_string(),
    ]
    .iter()
    .map(ToString::to_string)
    .collect();
    say!("kubescaler {}", argv.join(" "));
    let out = Command::new(&args.kubescaler)
        .args(&argv)
        .env_clear()
        .output()
        .map_err(|e| format!("run simulate: {e}"))?;
    std::fs::write(args.out.join("simulate.stdout"), &out.stdout).map_err(|e| e.to_string())?;
    std::fs::write(args.out.join("simulate.stderr"), &out.stderr).map_err(|e| e.to_string())?;
    if !out.status.success() && out.status.code() != Some(1) {
        return Err(format!(
            "simulate exited {:?}: {}",
            out.status.code(),
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    let text = std::fs::read_to_string(dir.join("report.json"))
        .map_err(|e| format!("simulate report.json: {e}"))?;
    let report: Value =
        serde_json::from_str(&text).map_err(|e| format!("simulate report.json: {e}"))?;
    let mut argv_text = String::from("kubescaler");
    for a in &argv {
        argv_text.push(' ');
        argv_text.push_str(a);
    }
    let mut report = report;
    report["fidelity_command"] = json!(argv_text);
    Ok(report)
}

async fn run(args: &Args) -> Res<bool> {
    std::fs::create_dir_all(&args.out).map_err(|e| format!("{}: {e}", args.out.display()))?;
    let admin = client_from(&args.run_dir.join("kubeconfig")).await?;
    let kubescaler_kubeconfig = Some(args.run_dir.join("kubeconfig-kubescaler"))
        .filter(|p| p.is_file())
        .unwrap_or_else(|| args.run_dir.join("kubeconfig"));
    let run = format!("r{}", std::process::id());
    let load_start = loadavg();

    // --- 1. the workload ---
    let demand = read_trace(&args.trace)?;
    let duration = args
        .duration
        .or_else(|| demand.trace_span())
        .ok_or("the trace gives no duration: pass --duration")?;
    let workload = demand.workload(duration, args.session_secs, args.seed);
    let shape = doks_fake::default_sizes()
        .get(&args.size)
        .cloned()
        .ok_or_else(|| format!("size {} unknown to the fake", args.size))?;
    let slots = cpu_millis(&shape.allocatable_cpu).unwrap_or(0) / args.server_cpu.max(1);
    if slots == 0 {
        return Err("no server fits on a node".into());
    }
    let initial = initial_nodes(args, &workload, slots);
    say!(
        "workload: {} ({}), {duration} s, {} warm sessions, {} arrivals, lengths {}..{} s; {slots} slots per node, {initial} nodes at the start",
        demand.describe(),
        args.trace.display(),
        workload.warm.len(),
        workload.arrivals.len(),
        workload.arrivals.iter().map(|a| a.length).min().unwrap_or(0),
        workload.arrivals.iter().map(|a| a.length).max().unwrap_or(0),
    );

    // --- 2. the fake and the config ---
    let pods_api: Api<Pod> = Api::namespaced(admin.clone(), NAMESPACE);
    let left = pods_api
        .list_metadata(&ListParams::default().labels(SERVER_KEY))
        .await
        .map_err(|e| format!("list pods: {e}"))?;
    if !left.items.is_empty() {
        return Err("server pods of an earlier run are left: use a fresh control plane (hack/fidelity.sh starts one)".into());
    }
    let Cloud {
        fake,
        cluster_id,
        pool_id,
        ..
    } = support::start_fake(
        FakeOptions {
            token: TOKEN.to_owned(),
            boot_delay: Duration::from_secs(args.boot_delay),
            kube: Some(admin.clone()),
            server_pod_selector: Some(format!("{SERVER_KEY}={run}")),
            ..FakeOptions::default()
        },
        CLUSTER,
        PoolSpec::new(POOL, &args.size, initial).label(POOL_KEY, &run),
    )
    .await?;
    let port = support::free_port()?;
    let metrics_base = format!("http://127.0.0.1:{port}");
    let config_path = args.out.join("kubescaler.yaml");
    std::fs::write(
        &config_path,
        config_yaml(args, &fake, &run, &kubescaler_kubeconfig, port),
    )
    .map_err(|e| format!("{}: {e}", config_path.display()))?;

    // --- 3. simulate ---
    let sim_started = Instant::now();
    let sim_report = run_simulate(args, &config_path, duration)?;
    let sim = simulate_row(&sim_report)?;
    say!(
        "simulate: {:.1} s of wall time; {} arrived, {:.2} % instant, {:.3} node-hours",
        sim_started.elapsed().as_secs_f64(),
        sim.arrived,
        sim.instant_share * 100.0,
        sim.node_hours
    );
    if sim.arrived != workload.arrivals.len() as u64 {
        return Err(format!(
            "simulate played {} arrivals, the replay's workload has {}",
            sim.arrived,
            workload.arrivals.len()
        ));
    }

    // --- 4. replay: warm pods, kubescaler, arrivals ---
    let pods: Pods = Arc::default();
    let watch = spawn_watch(pods_api.clone(), run.clone(), Arc::clone(&pods));
    for (i, &remaining) in workload.warm.iter().enumerate() {
        let name = format!("{run}-warm-{i:03}");
        lock(&pods).insert(
            name.clone(),
            PodRec {
                arrival: 0,
                length: remaining,
                warm: true,
                created: Some(Instant::now()),
                bound: None,
                node: None,
                deleted: None,
            },
        );
        create_pod(&pods_api, &server_pod(&name, &run, args.server_cpu)?, &name).await?;
    }
    let started = Instant::now();
    while lock(&pods).values().any(|p| p.bound.is_none()) {
        if started.elapsed() > WAIT {
            return Err("the warm server pods were not all bound in time".into());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    say!(
        "{} warm server pods bound; starting kubescaler",
        workload.warm.len()
    );

    let mut daemon = Daemon::spawn(&args.kubescaler, &config_path, TOKEN, &args.out)?;
    let http = http_client(Duration::from_secs(5))?;
    let spawned = Instant::now();
    let late = format!(
        "kubescaler made no full pass in time; see {}",
        daemon.log.display()
    );
    daemon
        .wait_until(spawned, WAIT, &late, || async {
            metrics(&http, &metrics_base).await.is_ok_and(|m| {
                metric(&m, "kubescaler_reconcile_duration_seconds_count") >= 1.0
                    && metric(&m, "kubescaler_running_servers") == workload.warm.len() as f64
            })
        })
        .await?;
    let t0 = Instant::now();
    let actions_at_t0 = metrics(&http, &metrics_base).await?;
    say!(
        "kubescaler's first pass after {:.1} s: second 0; replaying {duration} s",
        spawned.elapsed().as_secs_f64()
    );

    // Warm sessions end at their remaining length.
    for (name, rec) in lock(&pods).clone() {
        let api = pods_api.clone();
        let pods = Arc::clone(&pods);
        tokio::spawn(async move {
            tokio::time::sleep_until((t0 + Duration::from_secs(rec.length)).into()).await;
            delete_pod(&api, &name).await;
            if let Some(r) = lock(&pods).get_mut(&name) {
                r.deleted = Some(Instant::now());
            }
        });
    }

    // Nodes, sampled every 250 ms: node-seconds and the per-second series.
    let end = t0 + Duration::from_secs(duration);
    let sampler = {
        let pods = Arc::clone(&pods);
        let fake = &fake;
        let (cluster_id, pool_id) = (&cluster_id, &pool_id);
        async move {
            let mut node_secs = 0.0;
            let mut peak = 0u64;
            let mut series =
                String::from("second,nodes,running_nodes,bound_servers,pending_servers\n");
            let mut last = t0;
            let mut next_row = 0u64;
            let mut tick = tokio::time::interval(Duration::from_millis(250));
            loop {
                tick.tick().await;
                let now = Instant::now().min(end);
                let view = fake.pool(cluster_id, pool_id);
                let nodes = view.as_ref().map_or(0, |p| p.nodes.len()) as u64;
                node_secs += nodes as f64 * (now - last).as_secs_f64();
                last = now;
                peak = peak.max(nodes);
                let t = (now - t0).as_secs();
                if t >= next_row {
                    let (bound, pending) = lock(&pods)
                        .values()
                        .filter(|p| p.created.is_some() && p.deleted.is_none())
                        .fold((0, 0), |(b, w), p| {
                            if p.bound.is_some() {
                                (b + 1, w)
                            } else {
                                (b, w + 1)
                            }
                        });
                    let running = view.as_ref().map_or(0, |p| p.nodes_in("running"));
                    let _ = writeln!(series, "{t},{nodes},{running},{bound},{pending}");
                    next_row = t + 1;
                }
                if now >= end {
                    break (node_secs, peak, series);
                }
            }
        }
    };

    let arrivals = {
        let (pods, api, run) = (Arc::clone(&pods), pods_api.clone(), run.clone());
        let arrivals = workload.arrivals.clone();
        let cpu = args.server_cpu;
        async move {
            let mut creates = Vec::new();
            for (i, a) in arrivals.iter().enumerate() {
                tokio::time::sleep_until((t0 + Duration::from_secs(a.at)).into()).await;
                let name = format!("{run}-s{i:05}");
                let pod = server_pod(&name, &run, cpu)?;
                lock(&pods).insert(
                    name.clone(),
                    PodRec {
                        arrival: a.at,
                        length: a.length,
                        warm: false,
                        created: Some(Instant::now()),
                        bound: None,
                        node: None,
                        deleted: None,
                    },
                );
                let api = api.clone();
                creates.push(tokio::spawn(
                    async move { create_pod(&api, &pod, &name).await },
                ));
                if i % 200 == 199 {
                    say!(
                        "  {} of {} sessions arrived (second {})",
                        i + 1,
                        arrivals.len(),
                        a.at
                    );
                }
            }
            for c in creates {
                c.await.map_err(|e| e.to_string())??;
            }
            Ok::<(), String>(())
        }
    };
    let ((node_secs, peak, series), created) = tokio::join!(sampler, arrivals);
    created?;
    let measured_until = Instant::now();
    let final_metrics = metrics(&http, &metrics_base).await?;
    let exit = daemon.stop();
    watch.abort();
    say!("replay done; kubescaler stopped: {exit:?}");

    // --- 5. the replay's figures ---
    let snapshot = lock(&pods).clone();
    let mut waits: Vec<f64> = Vec::new();
    let mut real = Row::default();
    let mut sessions_csv = String::from("name,warm,arrival_sec,length_sec,wait_sec,node\n");
    for (name, rec) in &snapshot {
        let wait = match (rec.created, rec.bound) {
            (Some(c), Some(b)) if b <= end => Some(b.saturating_duration_since(c).as_secs_f64()),
            _ => None,
        };
        if wait.is_none() && !rec.warm {
            real.waiting_at_end += 1;
        }
        let _ = writeln!(
            sessions_csv,
            "{name},{},{},{},{},{}",
            rec.warm,
            rec.arrival,
            rec.length,
            wait.map_or(String::new(), |w| format!("{w:.3}")),
            rec.node.as_deref().unwrap_or("")
        );
        if rec.warm {
            continue;
        }
        real.arrived += 1;
        let w = wait.unwrap_or_else(|| {
            rec.created
                .map_or(0.0, |c| end.saturating_duration_since(c).as_secs_f64())
        });
        if wait.is_some_and(|w| w <= args.instant_threshold) {
            real.instant += 1;
        }
        waits.push(w);
    }
    waits.sort_by(f64::total_cmp);
    real.instant_share = if real.arrived == 0 {
        1.0
    } else {
        real.instant as f64 / real.arrived as f64
    };
    real.p99_wait = percentile(&waits, 0.99);
    real.node_hours = node_secs / 3600.0;
    real.peak_nodes = peak;
    let action = |m: &BTreeMap<String, f64>, kind: &str| {
        metric(m, &format!("kubescaler_actions_total{{kind=\"{kind}\"}}"))
    };
    let since = |kind: &str| (action(&final_metrics, kind) - action(&actions_at_t0, kind)) as u64;
    real.grows = since("grow");
    real.cordons = since("cordon");
    real.uncordons = since("uncordon");
    let requests = fake.requests();
    real.deletions = requests
        .iter()
        .filter(|r| {
            r.operation == Some(Operation::DeleteNode)
                && r.applied
                && r.status.is_some_and(|s| (200..300).contains(&s))
        })
        .count() as u64;
    let metric_deletes = since("delete");
    real.killed = fake.lost_servers() as u64;
    let kube_errors = fake.kube_errors();
    let off_contract = requests.iter().filter(|r| !r.passed_validation()).count();
    let errors: BTreeMap<&String, &f64> = final_metrics
        .iter()
        .filter(|(k, _)| k.starts_with("kubescaler_errors_total"))
        .collect();
    let (warn_lines, error_lines) = daemon.warn_error_lines();

    // --- 6. report ---
    let d_instant_pp = (real.instant_share - sim.instant_share) * 100.0;
    let d_hours_pct = if sim.node_hours > 0.0 {
        (real.node_hours / sim.node_hours - 1.0) * 100.0
    } else {
        f64::NAN
    };
    let instant_ok = d_instant_pp.abs() <= args.max_instant_pp;
    let hours_ok = d_hours_pct.abs() <= args.max_node_hours_pct;
    let killed_ok = real.killed == 0 && sim.killed == 0;
    let verdict = |ok: bool| if ok { "met" } else { "MISSED" };

    let mut w = String::new();
    let _ = writeln!(
        w,
        "kubescaler simulator fidelity, {}",
        Timestamp::now().strftime("%Y-%m-%d %H:%M UTC")
    );
    let _ = writeln!(w, "reproduce: {}", args.command);
    let _ = writeln!(
        w,
        "machine: {} CPUs; load average {} at start, {} at end; replay {:.0} s of wall time for {duration} s of trace",
        std::thread::available_parallelism().map_or(0, usize::from),
        load_start,
        loadavg(),
        (measured_until - t0).as_secs_f64(),
    );
    let _ = writeln!(
        w,
        "workload: {}, seed {}, mean session {} s (simulate clamps lengths to >= 60 s), {} warm sessions, {} arrivals",
        demand.describe(),
        args.seed,
        args.session_secs,
        workload.warm.len(),
        workload.arrivals.len()
    );
    let _ = writeln!(
        w,
        "pool: {} ({} CPU allocatable, {slots} servers of {}m), {initial} nodes at the start, {}..{} nodes, boot delay {} s; buffer {}, tick {} s, empty-node-expiration {} s, scale-down-unneeded {} s, scale-down-delay-after-add {} s",
        args.size,
        shape.allocatable_cpu,
        args.server_cpu,
        args.min_nodes,
        args.max_nodes,
        args.boot_delay,
        args.buffer,
        args.tick,
        args.empty_node_expiration,
        args.scale_down_unneeded,
        args.scale_down_delay_after_add
    );
    let _ = writeln!(
        w,
        "replay: real kubescaler + DOKS fake + kube-apiserver/etcd/kube-scheduler; instant = bound within {} s of the create request",
        args.instant_threshold
    );
    let _ = writeln!(
        w,
        "simulate: --step 1s --daemon-pods 0 --placement least-allocated, same config file and trace"
    );
    let _ = writeln!(w);
    let _ = writeln!(
        w,
        "{:<10} {:>8} {:>9} {:>9} {:>9} {:>11} {:>6} {:>6} {:>8} {:>9} {:>9} {:>7}",
        "",
        "arrived",
        "instant",
        "p99 wait",
        "waiting",
        "node-hours",
        "peak",
        "grows",
        "cordons",
        "uncordons",
        "deletions",
        "killed"
    );
    for (name, r, p99) in [
        ("simulate", &sim, format!("{:.0} s", sim.p99_wait)),
        ("replay", &real, format!("{:.1} s", real.p99_wait)),
    ] {
        let _ = writeln!(
            w,
            "{name:<10} {:>8} {:>8.2}% {p99:>9} {:>9} {:>11.3} {:>6} {:>6} {:>8} {:>9} {:>9} {:>7}",
            r.arrived,
            r.instant_share * 100.0,
            r.waiting_at_end,
            r.node_hours,
            r.peak_nodes,
            r.grows,
            r.cordons,
            r.uncordons,
            r.deletions,
            r.killed
        );
    }
    let _ = writeln!(w);
    let _ = writeln!(
        w,
        "instant starts: replay - simulate = {d_instant_pp:+.2} pp (target within {} pp): {}",
        args.max_instant_pp,
        verdict(instant_ok)
    );
    let _ = writeln!(
        w,
        "node-hours: replay / simulate - 1 = {d_hours_pct:+.2} % (target within {} %): {}",
        args.max_node_hours_pct,
        verdict(hours_ok)
    );
    let _ = writeln!(
        w,
        "server pods killed: replay {}, simulate {} (target 0): {}",
        real.killed,
        sim.killed,
        verdict(killed_ok)
    );
    let _ = writeln!(
        w,
        "counted: cordons/uncordons/grows from kubescaler's /metrics (kubescaler_actions_total, since second 0); deletions from the fake's request log (DeleteNode accepted: {}; /metrics says {metric_deletes}); killed from the fake",
        real.deletions
    );
    let _ = writeln!(
        w,
        "kubescaler: exit {exit:?}; {warn_lines} WARN, {error_lines} ERROR log lines; errors {errors:?}; fake: {} requests, {off_contract} off the contract, Kubernetes errors {:?}",
        requests.len(),
        kube_errors
    );
    let _ = writeln!(
        w,
        "files: {} (report.txt, report.json, series.csv, sessions.csv, kubescaler.yaml, kubescaler.log, simulate/)",
        args.out.display()
    );
    let ok = instant_ok && hours_ok && killed_ok;
    let _ = writeln!(w, "verdict: {}", if ok { "met" } else { "MISSED" });

    let report_json = json!({
        "simulate": sim.to_json(),
        "replay": real.to_json(),
        "difference": {"instant_pp": d_instant_pp, "node_hours_pct": d_hours_pct},
        "targets": {"instant_pp": args.max_instant_pp, "node_hours_pct": args.max_node_hours_pct},
        "met": ok,
        "duration_sec": duration,
        "seed": args.seed,
        "session_secs": args.session_secs,
        "boot_delay_sec": args.boot_delay,
        "instant_threshold_sec": args.instant_threshold,
        "initial_nodes": initial,
        "slots_per_node": slots,
        "simulate_command": sim_report["fidelity_command"],
        "kube_errors": kube_errors,
        "command": args.command,
    });
    let write = |name: &str, text: &str| {
        std::fs::write(args.out.join(name), text).map_err(|e| format!("write {name}: {e}"))
    };
    write("report.txt", &w)?;
    write(
        "report.json",
        &serde_json::to_string_pretty(&report_json).map_err(|e| e.to_string())?,
    )?;
    write("series.csv", &series)?;
    write("sessions.csv", &sessions_csv)?;
    print!("{w}");
    fake.shutdown().await;
    Ok(ok)
}
