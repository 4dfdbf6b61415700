//! The command line: `kubescaler [GLOBAL FLAGS] [SUBCOMMAND]`.
//!
//! Every configuration key is also a flag (`--buffer-slot-size 6`). Flags win over env vars,
//! which win over the YAML file, which wins over built-in defaults (see [`crate::config`]).
//! Flag values are taken as text here and typed and validated in [`crate::config::load`], so
//! that one run reports every bad value, each with the flag it came from.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::path::PathBuf;

use clap::{Arg, ArgAction, ArgMatches, Args, FromArgMatches, Parser, Subcommand};

use crate::config::{env_var_name, SecretToken};
use crate::provider;
use crate::simulate::args::{BufferRange, Bytes, Millicores, Placement, Share, SimDuration};

/// The parsed command line.
#[derive(Clone, Debug, Parser)]
#[command(
    name = "kubescaler",
    version,
    about = "Scales a Kubernetes node pool for stateful dedicated game servers, keeping a buffer of free server slots",
    after_help = "Configuration precedence: flag > env var (UPPER_SNAKE key, e.g. BUFFER_SLOT_SIZE) > \
                  config file > built-in default.\nExit codes: 0 ok, 1 the daemon failed, 2 invalid \
                  command line or configuration."
)]
pub struct Cli {
    /// YAML config file [default: ./config.yaml if it exists; an explicit path must exist]
    #[arg(long, global = true, value_name = "PATH")]
    pub config: Option<PathBuf>,

    /// Per-key overrides, highest precedence.
    #[command(flatten)]
    pub overrides: Overrides,

    /// What to do; `run` when omitted.
    #[command(subcommand)]
    pub command: Option<Command>,
}

impl Cli {
    /// The subcommand to run: `run` when none was given, as the Go binary always ran the daemon.
    pub fn command(&self) -> Command {
        self.command.clone().unwrap_or_default()
    }
}

/// Subcommands, dispatched in `main.rs`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Subcommand)]
pub enum Command {
    /// Run the scaling daemon (the default).
    #[default]
    Run,
    /// Validate the configuration, print the effective config as YAML (token redacted) and exit:
    /// 0 when valid, 2 with every problem listed on stderr otherwise.
    CheckConfig,
    /// Run the real planner and scale loop against a simulated pool and cloud, in simulated
    /// time, and report cost and instant starts. No cluster, cloud or token needed.
    #[command(long_about = SIMULATE_ABOUT)]
    Simulate(SimulateArgs),
    /// One read-only pass against the configured cluster and cloud (no writes, no leader
    /// election): print each node with its class, servers, free slots and what kubescaler
    /// would do with it and why, then the plan.
    Explain(ExplainArgs),
}

/// Options of `explain`.
#[derive(Clone, Debug, Default, PartialEq, Eq, clap::Args)]
pub struct ExplainArgs {
    /// `text` (a table) or `json` (for scripts)
    #[arg(long, value_enum, default_value_t = ExplainOutput::Text)]
    pub output: ExplainOutput,
}

/// The output format of `explain`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum ExplainOutput {
    /// A table, one row per node, then the plan.
    #[default]
    Text,
    /// The plan as JSON (the same as `/debug/plan`'s `plan`).
    Json,
}

/// Long help of `simulate`.
const SIMULATE_ABOUT: &str = "\
Run the real planner and scale loop against a simulated node pool and cloud, in simulated time:
game sessions arrive along a built-in day curve (or --trace), each needs one server slot, and
kubescaler grows, cordons and deletes nodes as it would in a cluster. Prints a summary
(node-hours, peak and mean nodes, share of sessions that found a free slot at once, wait
percentiles, actions, server pods killed) and writes report.json and chart.svg to --out.
With --sweep-buffer it runs once per buffer size and writes sweep.json and sweep.svg.

It reads the same config file, env vars and flags as the daemon (buffer-slot-size, minimum- and
maximum-node-pool-size, server requests, empty-node-expiration-sec, scale-loop-tick-sec...).
Keys only the daemon needs (cluster-name, node-pool-name, node-selector, server-pod-label-*, the
token) get placeholders when set nowhere; maximum-node-pool-size defaults to 100 and log-level
to error. Nodes have the node-template-* shape when set, else 8 CPUs, 16Gi, 110 pods.
The same arguments give the same output, byte for byte.";

/// Options of `kubescaler simulate`; the configuration flags apply too.
#[derive(Clone, Debug, PartialEq, Eq, Args)]
#[command(next_help_heading = "Simulation")]
pub struct SimulateArgs {
    /// Simulated time to run: 24h, 90m, 1h30m, 2d or seconds [default: 24h, or the trace's
    /// length]
    #[arg(long, value_name = "DURATION")]
    pub duration: Option<SimDuration>,

    /// Seed of the random sessions: the same seed gives the same output
    #[arg(long, value_name = "N", default_value = "1")]
    pub seed: u64,

    /// Simulated time per step: the resolution of arrivals, boots and waits
    #[arg(long, value_name = "DURATION", default_value = "1s", value_parser = parse_step)]
    pub step: SimDuration,

    /// Demand from a CSV instead of the built-in day curve: header `time,sessions_started` or
    /// `time,concurrent_sessions`; time in seconds, HH:MM[:SS] or RFC 3339
    #[arg(long, value_name = "CSV")]
    pub trace: Option<PathBuf>,

    /// Directory for report.json and chart.svg (sweep.json and sweep.svg with --sweep-buffer)
    #[arg(long, value_name = "DIR", default_value = "simulate-out")]
    pub out: PathBuf,

    /// Run once per buffer size FIRST..LAST (inclusive), print cost vs. instant starts
    #[arg(long, value_name = "FIRST..LAST")]
    pub sweep_buffer: Option<BufferRange>,

    /// Run fixed buffers (--sweep-buffer's range, else 0..12) and buffer-policy target on the
    /// same day; print one table (instant starts, p99 wait, node-hours, cordons, uncordons,
    /// deletions, server pods killed) marking the cheapest fixed buffer that met
    /// target-instant-start; write compare.json
    #[arg(long)]
    pub compare: bool,

    /// Share of sessions that must start at once, to pick a buffer in a sweep: 0.99 or 99%
    #[arg(long, value_name = "SHARE", default_value = "0.99")]
    pub target_instant: Share,

    /// Concurrent sessions at the evening peak (20:00) of the built-in day curve
    #[arg(long, value_name = "N", default_value = "200")]
    pub peak_sessions: u32,

    /// Mean session length (log-normal around it, 1 min to 4x the mean)
    #[arg(long, value_name = "DURATION", default_value = "20m", value_parser = parse_step)]
    pub session_length: SimDuration,

    /// Time from ordering a node until it is Ready; it registers NotReady at two thirds of it
    /// [default: 150s; 5m with --scenario slow-boot]
    #[arg(long, value_name = "DURATION")]
    pub boot_delay: Option<SimDuration>,

    /// Built-in day and pool: weekday (the built-in day), weekend (two peaks), launch (10x
    /// arrivals 12:00-13:00), slow-boot (Ready after 5 min), small-nodes (2 slots), big-nodes
    /// (30 slots); what is set elsewhere (--boot-delay, node-template-*,
    /// maximum-node-pool-size) wins
    #[arg(
        long,
        value_name = "NAME",
        default_value = "weekday",
        conflicts_with = "trace"
    )]
    pub scenario: crate::simulate::shapes::BuiltIn,

    /// CPU the DaemonSet pods of a node request together (per-node overhead)
    #[arg(long, value_name = "CPU", default_value = "300m")]
    pub daemon_cpu: Millicores,

    /// Memory the DaemonSet pods of a node request together
    #[arg(long, value_name = "MEMORY", default_value = "512Mi")]
    pub daemon_memory: Bytes,

    /// DaemonSet pods per node (0: no DaemonSet, no overhead)
    #[arg(long, value_name = "N", default_value = "2")]
    pub daemon_pods: u32,

    /// Where the simulated scheduler puts a server: the fullest node that fits, or the emptiest
    #[arg(long, value_enum, value_name = "HOW", default_value = "most-allocated")]
    pub placement: Placement,

    /// With --server-source agones: Ready GameServers the simulated Fleet's FleetAutoscaler
    /// keeps (Buffer policy: replicas = Allocated + N) [default: buffer-slot-size]
    #[arg(long, value_name = "N")]
    pub fleet_buffer_size: Option<u32>,
}

fn parse_step(s: &str) -> Result<SimDuration, String> {
    crate::simulate::args::parse_positive_duration(s)
}

/// One flag per configuration key. `None` (not given) leaves the key to env, file or default.
#[derive(Clone, Debug, Default, PartialEq, Eq, Args)]
#[command(next_help_heading = "Configuration (each also settable as env var or config file key)")]
pub struct Overrides {
    /// Cloud provider driving the node pool [env: CLOUD_PROVIDER] [default: digitalocean]
    #[arg(long, global = true, value_name = "NAME")]
    pub cloud_provider: Option<String>,

    /// Cloud API token. Prefer env var CLOUD_PROVIDER_TOKEN or --cloud-provider-token-file:
    /// a flag is visible to every user in the process list [env: CLOUD_PROVIDER_TOKEN]
    #[arg(long, global = true, value_name = "TOKEN", value_parser = parse_secret)]
    pub cloud_provider_token: Option<SecretToken>,

    /// File holding the cloud API token, e.g. a mounted Secret; read once at start, trimmed
    /// [env: CLOUD_PROVIDER_TOKEN_FILE]
    #[arg(long, global = true, value_name = "PATH")]
    pub cloud_provider_token_file: Option<String>,

    /// Cloud-side cluster name (required) [env: CLUSTER_NAME]
    #[arg(long, global = true, value_name = "NAME")]
    pub cluster_name: Option<String>,

    /// Cloud-side node pool name (required) [env: NODE_POOL_NAME]
    #[arg(long, global = true, value_name = "NAME")]
    pub node_pool_name: Option<String>,

    /// The settings the cloud providers declare (`--digitalocean-api-url`...).
    #[command(flatten)]
    pub provider_settings: ProviderFlags,

    /// Label selector of the pool's nodes, e.g. role=game-servers (required, non-empty)
    /// [env: NODE_SELECTOR]
    #[arg(long, global = true, value_name = "SELECTOR")]
    pub node_selector: Option<String>,

    /// API server URL overriding the kubeconfig's [env: CLUSTER_KUBE_CONFIG_MASTER_URL]
    #[arg(long, global = true, value_name = "URL")]
    pub cluster_kube_config_master_url: Option<String>,

    /// Kubeconfig path; empty: in-cluster config, else KUBECONFIG / ~/.kube/config
    /// [env: CLUSTER_KUBE_CONFIG_PATH]
    #[arg(long, global = true, value_name = "PATH")]
    pub cluster_kube_config_path: Option<String>,

    /// Smallest pool size [env: MINIMUM_NODE_POOL_SIZE] [default: 2]
    #[arg(long, global = true, value_name = "N")]
    pub minimum_node_pool_size: Option<String>,

    /// Largest pool size [env: MAXIMUM_NODE_POOL_SIZE] [default: 3]
    #[arg(long, global = true, value_name = "N")]
    pub maximum_node_pool_size: Option<String>,

    /// Label name marking game server pods (required) [env: SERVER_POD_LABEL_NAME]
    #[arg(long, global = true, value_name = "NAME")]
    pub server_pod_label_name: Option<String>,

    /// Label value marking game server pods (required) [env: SERVER_POD_LABEL_VALUE]
    #[arg(long, global = true, value_name = "VALUE")]
    pub server_pod_label_value: Option<String>,

    /// Free server slots to keep at all times [env: BUFFER_SLOT_SIZE] [default: 4]
    #[arg(long, global = true, value_name = "N")]
    pub buffer_slot_size: Option<String>,

    /// How the buffer is sized: fixed (buffer-slot-size) or target (from measured arrivals and
    /// boot times, to meet target-instant-start; buffer-slot-size is the floor)
    /// [env: BUFFER_POLICY] [default: fixed]
    #[arg(long, global = true, value_name = "POLICY")]
    pub buffer_policy: Option<String>,

    /// With buffer-policy target: share of matches that must find a free slot at once, 0.99 or
    /// 99% [env: TARGET_INSTANT_START] [default: 0.99]
    #[arg(long, global = true, value_name = "SHARE")]
    pub target_instant_start: Option<String>,

    /// Time-of-day windows that set the buffer or the target, first match wins, e.g.
    /// "Mon-Fri 18:00-23:00 Europe/Berlin buffer=12; Sat,Sun 00:00-24:00 UTC target=0.995"
    /// [env: BUFFER_SCHEDULE] [default: none]
    #[arg(long, global = true, value_name = "WINDOWS")]
    pub buffer_schedule: Option<String>,

    /// Seconds between reconciles when nothing changes [env: SCALE_LOOP_TICK_SEC] [default: 10]
    #[arg(long, global = true, value_name = "SECONDS")]
    pub scale_loop_tick_sec: Option<String>,

    /// CPU one server requests: integer millicores (1000) or a quantity with a unit or decimal
    /// point (500m, 1.5) [env: SERVER_CPU_RESOURCE_REQUEST] [default: 1000]
    #[arg(long, global = true, value_name = "CPU")]
    pub server_cpu_resource_request: Option<String>,

    /// Memory one server requests: bytes or a quantity (512Mi, 1Gi, 2G)
    /// [env: SERVER_MEMORY_RESOURCE_REQUEST] [default: none]
    #[arg(long, global = true, value_name = "MEMORY")]
    pub server_memory_resource_request: Option<String>,

    /// Comma-separated taints the server pods tolerate: key=value:Effect, key:Effect, key, *
    /// [env: SERVER_POD_TOLERATIONS]
    #[arg(long, global = true, value_name = "LIST")]
    pub server_pod_tolerations: Option<String>,

    /// Where game servers are learnt from: pods or agones [env: SERVER_SOURCE] [default: pods]
    #[arg(long, global = true, value_name = "SOURCE")]
    pub server_source: Option<String>,

    /// Agones mode: comma-separated namespaces whose GameServers count and may be compacted
    /// (empty: all) [env: AGONES_NAMESPACES]
    #[arg(long, global = true, value_name = "LIST")]
    pub agones_namespaces: Option<String>,

    /// Agones mode: comma-separated Fleets whose GameServers count and may be compacted
    /// (empty: all) [env: AGONES_FLEETS]
    #[arg(long, global = true, value_name = "LIST")]
    pub agones_fleets: Option<String>,

    /// Agones mode: Ready GameServers compaction may delete per minute, 0 = off
    /// [env: AGONES_COMPACTION_PER_MINUTE] [default: 30]
    #[arg(long, global = true, value_name = "COUNT")]
    pub agones_compaction_per_minute: Option<String>,

    /// Agones mode: buffer sizing, fixed or fleet-autoscalers [env: AGONES_BUFFER]
    /// [default: fixed]
    #[arg(long, global = true, value_name = "POLICY")]
    pub agones_buffer: Option<String>,

    /// Seconds after a pool node was created during which nothing is cordoned
    /// [env: SCALE_DOWN_DELAY_AFTER_ADD_SEC] [default: 600]
    #[arg(long, global = true, value_name = "SECONDS")]
    pub scale_down_delay_after_add_sec: Option<String>,

    /// Seconds a surplus of at least a node must hold before a node is cordoned
    /// [env: SCALE_DOWN_UNNEEDED_SEC] [default: 600]
    #[arg(long, global = true, value_name = "SECONDS")]
    pub scale_down_unneeded_sec: Option<String>,

    /// Seconds a cordoned empty node is kept before deletion [env: EMPTY_NODE_EXPIRATION_SEC]
    /// [default: 120]
    #[arg(long, global = true, value_name = "SECONDS")]
    pub empty_node_expiration_sec: Option<String>,

    /// Seconds a registered, not-yet-Ready node counts as booting capacity
    /// [env: NODE_BOOT_TIMEOUT_SEC] [default: 600]
    #[arg(long, global = true, value_name = "SECONDS")]
    pub node_boot_timeout_sec: Option<String>,

    /// With buffer-policy target: seconds from a grow to a Ready node until kubescaler has
    /// measured one [env: EXPECTED_NODE_BOOT_SEC] [default: 180]
    #[arg(long, global = true, value_name = "SECONDS")]
    pub expected_node_boot_sec: Option<String>,

    /// Plan and log, change nothing; `--dry-run` or `--dry-run=false` [env: DRY_RUN]
    /// [default: false]
    #[arg(
        long,
        global = true,
        value_name = "BOOL",
        num_args = 0..=1,
        require_equals = true,
        default_missing_value = "true"
    )]
    pub dry_run: Option<bool>,

    /// Log format: text or json [env: LOG_FORMAT] [default: text]
    #[arg(long, global = true, value_name = "FORMAT")]
    pub log_format: Option<String>,

    /// tracing filter: a level (info) or directives (info,kubescaler=debug) [env: LOG_LEVEL]
    /// [default: info]
    #[arg(long, global = true, value_name = "FILTER")]
    pub log_level: Option<String>,

    /// Address of the health and metrics listener [env: HTTP_LISTEN_ADDRESS]
    /// [default: 0.0.0.0:8080]
    #[arg(long, global = true, value_name = "ADDR")]
    pub http_listen_address: Option<String>,

    /// Elect a leader on a Lease so only one replica acts; `--leader-election=false` to turn
    /// off [env: LEADER_ELECTION] [default: true]
    #[arg(
        long,
        global = true,
        value_name = "BOOL",
        num_args = 0..=1,
        require_equals = true,
        default_missing_value = "true"
    )]
    pub leader_election: Option<bool>,

    /// Namespace of the leader Lease [env: LEADER_ELECTION_NAMESPACE] [default: the pod's]
    #[arg(long, global = true, value_name = "NAMESPACE")]
    pub leader_election_namespace: Option<String>,

    /// Name of the leader Lease [env: LEADER_ELECTION_LEASE_NAME] [default: kubescaler]
    #[arg(long, global = true, value_name = "NAME")]
    pub leader_election_lease_name: Option<String>,

    /// Seconds a leader holds the Lease without renewing [env:
    /// LEADER_ELECTION_LEASE_DURATION_SEC] [default: 15]
    #[arg(long, global = true, value_name = "SECONDS")]
    pub leader_election_lease_duration_sec: Option<String>,

    /// This replica's identity in the Lease [env: LEADER_ELECTION_IDENTITY] [default:
    /// $HOSTNAME]
    #[arg(long, global = true, value_name = "ID")]
    pub leader_election_identity: Option<String>,

    /// Allocatable CPU of a new node, for scaling up an empty pool (with the two others)
    /// [env: NODE_TEMPLATE_CPU]
    #[arg(long, global = true, value_name = "CPU")]
    pub node_template_cpu: Option<String>,

    /// Allocatable memory of a new node (with the two others) [env: NODE_TEMPLATE_MEMORY]
    #[arg(long, global = true, value_name = "MEMORY")]
    pub node_template_memory: Option<String>,

    /// Allocatable pod count of a new node (with the two others) [env: NODE_TEMPLATE_PODS]
    #[arg(long, global = true, value_name = "N")]
    pub node_template_pods: Option<String>,
}

/// A flag's value, as [`Overrides::set_flags`] hands it to the config loader.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FlagValue<'a> {
    /// A value to be typed and validated by the loader.
    Text(&'a str),
    /// A boolean flag.
    Bool(bool),
    /// The token (its `Debug` stays redacted).
    Secret(&'a SecretToken),
}

impl Overrides {
    /// The flags given, as `(config key, value)`; the key is the flag name without `--`.
    pub fn set_flags(&self) -> Vec<(&'static str, FlagValue<'_>)> {
        fn text<'a>(
            key: &'static str,
            v: &'a Option<String>,
        ) -> Option<(&'static str, FlagValue<'a>)> {
            v.as_deref().map(|s| (key, FlagValue::Text(s)))
        }
        let mut out: Vec<(&'static str, FlagValue<'_>)> = [
            text("cloud-provider", &self.cloud_provider),
            text("cloud-provider-token-file", &self.cloud_provider_token_file),
            text("cluster-name", &self.cluster_name),
            text("node-pool-name", &self.node_pool_name),
            text("node-selector", &self.node_selector),
            text(
                "cluster-kube-config-master-url",
                &self.cluster_kube_config_master_url,
            ),
            text("cluster-kube-config-path", &self.cluster_kube_config_path),
            text("minimum-node-pool-size", &self.minimum_node_pool_size),
            text("maximum-node-pool-size", &self.maximum_node_pool_size),
            text("server-pod-label-name", &self.server_pod_label_name),
            text("server-pod-label-value", &self.server_pod_label_value),
            text("buffer-slot-size", &self.buffer_slot_size),
            text("scale-loop-tick-sec", &self.scale_loop_tick_sec),
            text(
                "server-cpu-resource-request",
                &self.server_cpu_resource_request,
            ),
            text(
                "server-memory-resource-request",
                &self.server_memory_resource_request,
            ),
            text("server-pod-tolerations", &self.server_pod_tolerations),
            text("server-source", &self.server_source),
            text("agones-namespaces", &self.agones_namespaces),
            text("agones-fleets", &self.agones_fleets),
            text(
                "agones-compaction-per-minute",
                &self.agones_compaction_per_minute,
            ),
            text("agones-buffer", &self.agones_buffer),
            text("buffer-policy", &self.buffer_policy),
            text("target-instant-start", &self.target_instant_start),
            text("buffer-schedule", &self.buffer_schedule),
            text(
                "scale-down-delay-after-add-sec",
                &self.scale_down_delay_after_add_sec,
            ),
            text("scale-down-unneeded-sec", &self.scale_down_unneeded_sec),
            text("empty-node-expiration-sec", &self.empty_node_expiration_sec),
            text("node-boot-timeout-sec", &self.node_boot_timeout_sec),
            text("expected-node-boot-sec", &self.expected_node_boot_sec),
            text("log-format", &self.log_format),
            text("log-level", &self.log_level),
            text("node-template-cpu", &self.node_template_cpu),
            text("node-template-memory", &self.node_template_memory),
            text("node-template-pods", &self.node_template_pods),
            text("http-listen-address", &self.http_listen_address),
            text("leader-election-namespace", &self.leader_election_namespace),
            text(
                "leader-election-lease-name",
                &self.leader_election_lease_name,
            ),
            text(
                "leader-election-lease-duration-sec",
                &self.leader_election_lease_duration_sec,
            ),
            text("leader-election-identity", &self.leader_election_identity),
        ]
        .into_iter()
        .flatten()
        .collect();
        out.extend(
            self.provider_settings
                .0
                .iter()
                .map(|(key, value)| (*key, FlagValue::Text(value))),
        );
        if let Some(token) = &self.cloud_provider_token {
            out.push(("cloud-provider-token", FlagValue::Secret(token)));
        }
        if let Some(dry_run) = self.dry_run {
            out.push(("dry-run", FlagValue::Bool(dry_run)));
        }
        if let Some(on) = self.leader_election {
            out.push(("leader-election", FlagValue::Bool(on)));
        }
        out
    }
}

/// One flag per provider setting (`--digitalocean-api-url`), made from
/// [`provider::REGISTRY`] rather than declared here, so that a new provider's keys are flags
/// too without a field in [`Overrides`]. Maps each given setting's key to its text.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ProviderFlags(pub BTreeMap<&'static str, String>);

impl ProviderFlags {
    /// The value given for `key`, if any.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).map(String::as_str)
    }
}

impl FromIterator<(&'static str, String)> for ProviderFlags {
    fn from_iter<I: IntoIterator<Item = (&'static str, String)>>(iter: I) -> Self {
        Self(iter.into_iter().collect())
    }
}

impl FromArgMatches for ProviderFlags {
    fn from_arg_matches(matches: &ArgMatches) -> Result<Self, clap::Error> {
        let mut flags = Self::default();
        flags.update_from_arg_matches(matches)?;
        Ok(flags)
    }

    fn update_from_arg_matches(&mut self, matches: &ArgMatches) -> Result<(), clap::Error> {
        for (_, setting) in provider::settings() {
            if let Ok(Some(value)) = matches.try_get_one::<String>(setting.key) {
                self.0.insert(setting.key, value.clone());
            }
        }
        Ok(())
    }
}

impl Args for ProviderFlags {
    fn augment_args(cmd: clap::Command) -> clap::Command {
        provider::settings().fold(cmd, |cmd, (spec, setting)| {
            cmd.arg(
                Arg::new(setting.key)
                    .long(setting.key)
                    .global(true)
                    .value_name(setting.value_name)
                    .action(ArgAction::Set)
                    .value_parser(clap::value_parser!(String))
                    .help(format!(
                        "{} (cloud-provider {}) [env: {}] [default: {}]",
                        setting.help,
                        spec.name,
                        env_var_name(setting.key),
                        setting.default
                    )),
            )
        })
    }

    fn augment_args_for_update(cmd: clap::Command) -> clap::Command {
        Self::augment_args(cmd)
    }
}

/// Wraps the token at parse time so no `Debug` of the parsed command line can show it.
fn parse_secret(s: &str) -> Result<SecretToken, Infallible> {
    Ok(SecretToken::new(s))
}
