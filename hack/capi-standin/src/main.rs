//! `capi-standin`: runs the Cluster API stand-in for one MachineDeployment, for a local try-out
//! of kubescaler's Cluster API provider.
//!
//! ```text
//! bash hack/controlplane.sh start                                  # a local control plane
//! export KUBESCALER_CAPI_CRDS=$(bash hack/capi-crds.sh | tail -n1) # CAPI's CRDs
//! cargo run -p capi-standin -- --kubeconfig /tmp/kubescaler-controlplane/kubeconfig \
//!     --crds "$KUBESCALER_CAPI_CRDS" --create --replicas 1 \
//!     --namespace default --machine-deployment game-servers --cluster local \
//!     --node-label role=game-servers --server-selector app=game-server
//! ```
//! It runs until SIGINT/SIGTERM, then reports what it deleted and the servers lost.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use capi_standin::{
    create_machine_deployment, ensure_namespace, install_crds, CapiStandIn, DeletionOrder,
    StandInOptions,
};
use clap::Parser;

/// A stand-in for the Cluster API controllers: keeps one MachineDeployment's MachineSet,
/// Machines and Node objects.
#[derive(Debug, Parser)]
#[command(name = "capi-standin", version)]
struct Args {
    /// Kubeconfig of the Kubernetes API server.
    #[arg(long)]
    kubeconfig: PathBuf,
    /// Namespace of the MachineDeployment.
    #[arg(long, default_value = "default")]
    namespace: String,
    /// The MachineDeployment.
    #[arg(long)]
    machine_deployment: String,
    /// Cluster name (default: the MachineDeployment's spec.clusterName).
    #[arg(long, default_value = "")]
    cluster: String,
    /// Install the CRDs of this file or directory first (e.g. hack/capi-crds.sh's output).
    #[arg(long, env = "KUBESCALER_CAPI_CRDS")]
    crds: Option<PathBuf>,
    /// Create the MachineDeployment (with --replicas) if it does not exist.
    #[arg(long)]
    create: bool,
    /// Replicas of a MachineDeployment created with --create.
    #[arg(long, default_value_t = 1)]
    replicas: i32,
    /// A label on every node, KEY=VALUE (repeatable), e.g. the label kubescaler's
    /// node-selector matches.
    #[arg(long = "node-label", value_parser = parse_pair)]
    node_labels: Vec<(String, String)>,
    /// Node name = this prefix + the Machine's name.
    #[arg(long, default_value = "")]
    node_name_prefix: String,
    /// CPU of each node.
    #[arg(long, default_value = "4")]
    cpu: String,
    /// Memory of each node.
    #[arg(long, default_value = "16Gi")]
    memory: String,
    /// Pod capacity of each node.
    #[arg(long, default_value = "110")]
    pods: String,
    /// Label selector of the server pods counted as lost when their node is deleted.
    #[arg(long, default_value = "")]
    server_selector: String,
    /// Deletion order instead of the MachineDeployment's: Random, Newest or Oldest.
    #[arg(long)]
    order: Option<DeletionOrder>,
    /// Seconds from a Machine's creation to its Node being Ready.
    #[arg(long, default_value_t = 10.0)]
    boot_delay: f64,
    /// Seconds from a Machine's deletion to its Node's.
    #[arg(long, default_value_t = 2.0)]
    delete_delay: f64,
    /// Milliseconds between reconcile passes.
    #[arg(long, default_value_t = 250)]
    poll_ms: u64,
}

fn parse_pair(s: &str) -> Result<(String, String), String> {
    s.split_once('=')
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .filter(|(k, _)| !k.is_empty())
        .ok_or_else(|| format!("{s:?} is not KEY=VALUE"))
}

fn seconds(name: &str, s: f64) -> Result<Duration, String> {
    Duration::try_from_secs_f64(s).map_err(|e| format!("--{name} {s}: {e}"))
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
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
            eprintln!("capi-standin: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn run(args: Args) -> Result<(), String> {
    let path = &args.kubeconfig;
    let kubeconfig = kube::config::Kubeconfig::read_from(path)
        .map_err(|e| format!("kubeconfig {}: {e}", path.display()))?;
    let config = kube::Config::from_custom_kubeconfig(
        kubeconfig,
        &kube::config::KubeConfigOptions::default(),
    )
    .await
    .map_err(|e| format!("kubeconfig {}: {e}", path.display()))?;
    let client = kube::Client::try_from(config).map_err(|e| format!("Kubernetes client: {e}"))?;

    if let Some(crds) = &args.crds {
        let names = install_crds(&client, crds)
            .await
            .map_err(|e| e.to_string())?;
        eprintln!("capi-standin: CRDs installed: {}", names.join(", "));
    }
    if args.create {
        ensure_namespace(&client, &args.namespace)
            .await
            .map_err(|e| e.to_string())?;
        let cluster = if args.cluster.is_empty() {
            "local"
        } else {
            &args.cluster
        };
        let created = create_machine_deployment(
            &client,
            &args.namespace,
            &args.machine_deployment,
            cluster,
            args.replicas,
            &BTreeMap::new(),
            &BTreeMap::new(),
        )
        .await;
        match created {
            Ok(_) => eprintln!(
                "capi-standin: created MachineDeployment {}/{}",
                args.namespace, args.machine_deployment
            ),
            Err(capi_standin::Error::Kube {
                source: kube::Error::Api(s),
                ..
            }) if s.code == 409 => {}
            Err(e) => return Err(e.to_string()),
        }
    }

    let mut opts = StandInOptions::new(&args.namespace, &args.machine_deployment);
    opts.cluster_name = args.cluster.clone();
    opts.boot_delay = seconds("boot-delay", args.boot_delay)?;
    opts.delete_delay = seconds("delete-delay", args.delete_delay)?;
    opts.node_labels = args.node_labels.iter().cloned().collect();
    opts.node_name_prefix = args.node_name_prefix.clone();
    opts.cpu = args.cpu.clone();
    opts.memory = args.memory.clone();
    opts.pods = args.pods.clone();
    opts.server_selector = args.server_selector.clone();
    opts.order_override = args.order;
    opts.poll = Duration::from_millis(args.poll_ms.max(10));
    let standin = CapiStandIn::start(client, opts);
    eprintln!(
        "capi-standin: keeping MachineDeployment {}/{}; Ctrl-C to stop",
        args.namespace, args.machine_deployment
    );

    wait_for_signal().await;
    standin.stop();
    let victims = standin.victims();
    let lost = standin.lost_servers();
    eprintln!(
        "capi-standin: stopping after {} pass(es); {} Machine(s) deleted on scale-down, {} of \
         them its own choice; {} lost server pod(s){}",
        standin.passes(),
        victims.len(),
        standin.own_choices(),
        lost.len(),
        if lost.is_empty() {
            String::new()
        } else {
            format!(": {lost:?}")
        }
    );
    for v in victims {
        eprintln!(
            "capi-standin:   {} (node {}) {:?} at {}",
            v.machine,
            v.node.as_deref().unwrap_or("-"),
            v.choice,
            v.at
        );
    }
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
