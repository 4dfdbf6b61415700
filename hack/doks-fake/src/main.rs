//! `doks-fake`: runs the DOKS fake standalone, for a local try-out of kubescaler.
//!
//! ```text
//! KUBESCALER_RUN_DIR=/tmp/cp bash hack/controlplane.sh start      # a local control plane
//! cargo run -p doks-fake -- --kubeconfig /tmp/cp/kubeconfig \
//!     --cluster local --pool game-servers --count 1 --pool-label role=game-servers \
//!     --server-pod-selector app=game-server
//! ```
//! It prints the settings kubescaler needs (API URL, token, cluster and pool names) and runs
//! until SIGINT/SIGTERM, then reports the lost servers and deletes the Node objects it
//! created.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use doks_fake::{locate_spec, Chaos, FakeDoks, FakeOptions, Fault, PoolSpec, Taint};

/// A local fake of the DigitalOcean Kubernetes node-pool API that checks every request against
/// DigitalOcean's OpenAPI description.
#[derive(Debug, Parser)]
#[command(name = "doks-fake", version)]
struct Args {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:8089")]
    listen: SocketAddr,
    /// The bearer token to accept.
    #[arg(long, env = "DOKS_FAKE_TOKEN", default_value = "doks-fake-token")]
    token: String,
    /// The OpenAPI description [default: ../shared/digitalocean/doks-node-pools.openapi.yaml
    /// beside the kubescaler repository holding the current directory]
    #[arg(long, env = "DOKS_FAKE_SPEC")]
    spec: Option<PathBuf>,
    /// Kubeconfig of a Kubernetes API server to register the nodes in (none: API only).
    #[arg(long)]
    kubeconfig: Option<PathBuf>,
    /// Cluster name.
    #[arg(long, default_value = "local")]
    cluster: String,
    /// Node pool name.
    #[arg(long, default_value = "game-servers")]
    pool: String,
    /// Nodes the pool starts with (running).
    #[arg(long, default_value_t = 1)]
    count: u32,
    /// Droplet size slug of the pool (see the fake's size table).
    #[arg(long, default_value = "s-4vcpu-8gb")]
    size: String,
    /// A pool label put on every node, KEY=VALUE (repeatable), e.g. the label kubescaler's
    /// node-selector matches.
    #[arg(long = "pool-label", value_parser = parse_pair)]
    pool_labels: Vec<(String, String)>,
    /// A pool taint put on every node, KEY=VALUE:EFFECT (repeatable).
    #[arg(long = "pool-taint", value_parser = parse_taint)]
    pool_taints: Vec<Taint>,
    /// An extra label on every node, KEY=VALUE (repeatable).
    #[arg(long = "node-label", value_parser = parse_pair)]
    node_labels: Vec<(String, String)>,
    /// Label selector of the server pods counted as lost when their node is removed.
    #[arg(long)]
    server_pod_selector: Option<String>,
    /// Seconds a new node stays provisioning.
    #[arg(long, default_value_t = 10.0)]
    boot_delay: f64,
    /// Seconds a deleted node stays draining/deleting.
    #[arg(long, default_value_t = 0.0)]
    delete_delay: f64,
    /// Share of requests (0 to 1) that get a random fault.
    #[arg(long, default_value_t = 0.0)]
    chaos_rate: f64,
    /// Faults chaos picks from: 429, 500, slow, drop, drop-after-apply (comma-separated).
    #[arg(long, default_value = "429,500,slow", value_delimiter = ',')]
    chaos_faults: Vec<String>,
}

fn parse_pair(s: &str) -> Result<(String, String), String> {
    s.split_once('=')
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .filter(|(k, _)| !k.is_empty())
        .ok_or_else(|| format!("{s:?} is not KEY=VALUE"))
}

fn parse_taint(s: &str) -> Result<Taint, String> {
    let (kv, effect) = s
        .rsplit_once(':')
        .ok_or_else(|| format!("{s:?} is not KEY=VALUE:EFFECT"))?;
    let (key, value) = kv.split_once('=').unwrap_or((kv, ""));
    Ok(Taint {
        key: key.to_owned(),
        value: value.to_owned(),
        effect: effect.to_owned(),
    })
}

fn seconds(name: &str, s: f64) -> Result<Duration, String> {
    Duration::try_from_secs_f64(s).map_err(|e| format!("--{name} {s}: {e}"))
}

fn parse_fault(s: &str) -> Result<Fault, String> {
    match s.trim() {
        "429" => Ok(Fault::RateLimited {
            reset_in: Duration::from_secs(1),
        }),
        "500" => Ok(Fault::ServerError),
        "slow" => Ok(Fault::Delay(Duration::from_secs(2))),
        "drop" => Ok(Fault::DropConnection),
        "drop-after-apply" => Ok(Fault::DropAfterApply),
        other => Err(format!(
            "unknown fault {other:?} (allowed: 429, 500, slow, drop, drop-after-apply)"
        )),
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    let mut args = Args::parse();
    // Without its description the fake cannot check anything: one line, exit 2 (bad setup).
    let spec = match args.spec.take() {
        Some(path) => doks_fake::locate_spec_from(Some(path), Path::new(".")),
        None => locate_spec(),
    };
    match spec {
        Ok(path) => args.spec = Some(path),
        Err(e) => {
            eprintln!("doks-fake: {e}");
            return ExitCode::from(2);
        }
    }
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    match run(args).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("doks-fake: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn run(args: Args) -> Result<(), String> {
    let kube = match &args.kubeconfig {
        None => None,
        Some(path) => {
            let kubeconfig = kube::config::Kubeconfig::read_from(path)
                .map_err(|e| format!("kubeconfig {}: {e}", path.display()))?;
            let config = kube::Config::from_custom_kubeconfig(
                kubeconfig,
                &kube::config::KubeConfigOptions::default(),
            )
            .await
            .map_err(|e| format!("kubeconfig {}: {e}", path.display()))?;
            Some(kube::Client::try_from(config).map_err(|e| format!("Kubernetes client: {e}"))?)
        }
    };
    let faults = args
        .chaos_faults
        .iter()
        .map(|f| parse_fault(f))
        .collect::<Result<Vec<_>, _>>()?;
    let options = FakeOptions {
        spec_path: args.spec.clone().unwrap_or_default(),
        listen: args.listen,
        token: args.token.clone(),
        boot_delay: seconds("boot-delay", args.boot_delay)?,
        delete_delay: seconds("delete-delay", args.delete_delay)?,
        kube,
        node_labels: args.node_labels.iter().cloned().collect(),
        server_pod_selector: args.server_pod_selector.clone(),
        ..FakeOptions::default()
    };
    let fake = FakeDoks::start(options).await.map_err(|e| e.to_string())?;
    let cluster_id = fake.add_cluster(&args.cluster);
    let mut pool = PoolSpec::new(&args.pool, &args.size, args.count);
    pool.labels = args.pool_labels.iter().cloned().collect::<BTreeMap<_, _>>();
    pool.taints = args.pool_taints.clone();
    let pool_id = fake
        .add_pool(&cluster_id, pool)
        .await
        .map_err(|e| e.to_string())?;
    if args.chaos_rate > 0.0 {
        fake.set_chaos(Some(Chaos {
            probability: args.chaos_rate.clamp(0.0, 1.0),
            faults,
            seed: 1,
        }));
    }
    println!("DIGITALOCEAN_API_URL={}", fake.base_url());
    println!("CLOUD_PROVIDER_TOKEN={}", args.token);
    println!("CLUSTER_NAME={}", args.cluster);
    println!("NODE_POOL_NAME={}", args.pool);
    eprintln!(
        "doks-fake: serving {} (cluster {} = {cluster_id}, pool {} = {pool_id}); Ctrl-C to stop",
        fake.base_url(),
        args.cluster,
        args.pool
    );

    wait_for_signal().await;
    let lost = fake.lost_server_pods();
    eprintln!(
        "doks-fake: stopping; {} request(s) served, {} rejected as off the contract, {} lost server pod(s){}",
        fake.requests().len(),
        fake.requests().iter().filter(|r| r.rejection.is_some()).count(),
        fake.lost_servers(),
        if lost.is_empty() {
            String::new()
        } else {
            format!(": {lost:?}")
        }
    );
    fake.shutdown().await;
    Ok(())
}

async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        if let Ok(mut term) = signal(SignalKind::terminate()) {
            tokio::select! {
                _ = term.recv() => {}
                _ = tokio::signal::ctrl_c() => {}
            }
            return;
        }
    }
    let _ = tokio::signal::ctrl_c().await;
}
