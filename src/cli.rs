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

use crate::config::{self, env_var_name, Key, KeyKind, SecretToken};
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

/// The configuration keys given as flags: one flag per key (`--buffer-slot-size 6`), made
/// from the keys' declarations ([`config::core_keys`], and the providers' settings in
/// [`provider::REGISTRY`]) rather than declared here, so that a key is a flag, with its help,
/// without a line in this file. Highest precedence; a key not given is left to env, file or
/// default.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Overrides(BTreeMap<&'static str, Override>);

/// One given flag's value.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Override {
    /// Text, typed and validated by the loader.
    Text(String),
    /// A switch (`--dry-run`, `--leader-election=false`).
    Switch(bool),
    /// The token, wrapped at parse time so no `Debug` shows it.
    Secret(SecretToken),
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

/// Every key a flag can set: `(name, kind, value placeholder, help)`, in [`config::KEYS`]
/// order (core head, provider settings, core tail).
fn flag_keys() -> Vec<(&'static str, KeyKind, &'static str, String)> {
    let core = |k: &'static Key| (k.name, k.kind, k.value_name, k.flag_help());
    let settings = provider::settings().map(|(spec, setting)| {
        (
            setting.key,
            KeyKind::Text,
            setting.value_name,
            format!(
                "{} (cloud-provider {}) [env: {}] [default: {}]",
                setting.help,
                spec.name,
                env_var_name(setting.key),
                setting.default
            ),
        )
    });
    config::CORE_KEYS_HEAD
        .iter()
        .map(core)
        .chain(settings)
        .chain(config::CORE_KEYS_TAIL.iter().map(core))
        .collect()
}

impl Overrides {
    /// The flags given, as `(config key, value)`; the key is the flag name without `--`.
    pub fn set_flags(&self) -> Vec<(&'static str, FlagValue<'_>)> {
        self.0
            .iter()
            .map(|(key, value)| {
                let value = match value {
                    Override::Text(s) => FlagValue::Text(s),
                    Override::Switch(b) => FlagValue::Bool(*b),
                    Override::Secret(token) => FlagValue::Secret(token),
                };
                (*key, value)
            })
            .collect()
    }

    /// The value given for `key`, if any.
    pub fn get(&self, key: &str) -> Option<&Override> {
        self.0.get(key)
    }

    /// Sets `key` as the flag `--key value` would (`true`/`false` for a switch); `Err` names
    /// a key that is no flag or a switch value that is not a boolean.
    pub fn set(&mut self, key: &str, value: &str) -> Result<(), String> {
        let (name, kind, _, _) = flag_keys()
            .into_iter()
            .find(|(name, ..)| *name == key)
            .ok_or_else(|| format!("no flag --{key}"))?;
        let value = match kind {
            KeyKind::Switch => Override::Switch(
                value
                    .parse()
                    .map_err(|_| format!("--{key}: {value:?} is not true or false"))?,
            ),
            KeyKind::Secret => Override::Secret(SecretToken::new(value)),
            _ => Override::Text(value.to_string()),
        };
        self.0.insert(name, value);
        Ok(())
    }

    /// Sets the token, as `--cloud-provider-token` would.
    pub fn set_token(&mut self, token: SecretToken) {
        self.0.insert(config::TOKEN_KEY, Override::Secret(token));
    }

    /// The flags `pairs` would give (see [`Overrides::set`]).
    pub fn from_pairs(pairs: &[(&str, &str)]) -> Result<Self, String> {
        let mut flags = Self::default();
        for (key, value) in pairs {
            flags.set(key, value)?;
        }
        Ok(flags)
    }
}

impl FromArgMatches for Overrides {
    fn from_arg_matches(matches: &ArgMatches) -> Result<Self, clap::Error> {
        let mut flags = Self::default();
        flags.update_from_arg_matches(matches)?;
        Ok(flags)
    }

    fn update_from_arg_matches(&mut self, matches: &ArgMatches) -> Result<(), clap::Error> {
        for (name, kind, _, _) in flag_keys() {
            let value = match kind {
                KeyKind::Switch => matches
                    .try_get_one::<bool>(name)
                    .ok()
                    .flatten()
                    .map(|b| Override::Switch(*b)),
                KeyKind::Secret => matches
                    .try_get_one::<SecretToken>(name)
                    .ok()
                    .flatten()
                    .map(|t| Override::Secret(t.clone())),
                _ => matches
                    .try_get_one::<String>(name)
                    .ok()
                    .flatten()
                    .map(|s| Override::Text(s.clone())),
            };
            if let Some(value) = value {
                self.0.insert(name, value);
            }
        }
        Ok(())
    }
}

impl Args for Overrides {
    fn augment_args(cmd: clap::Command) -> clap::Command {
        let cmd = cmd
            .next_help_heading("Configuration (each also settable as env var or config file key)");
        flag_keys()
            .into_iter()
            .fold(cmd, |cmd, (name, kind, value_name, help)| {
                let arg = Arg::new(name)
                    .long(name)
                    .global(true)
                    .value_name(value_name)
                    .help(help);
                cmd.arg(match kind {
                    KeyKind::Switch => arg
                        .num_args(0..=1)
                        .require_equals(true)
                        .default_missing_value("true")
                        .action(ArgAction::Set)
                        .value_parser(clap::value_parser!(bool)),
                    KeyKind::Secret => arg.action(ArgAction::Set).value_parser(parse_secret),
                    _ => arg
                        .action(ArgAction::Set)
                        .value_parser(clap::value_parser!(String)),
                })
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
