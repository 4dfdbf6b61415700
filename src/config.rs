//! Configuration: every key of the Go kubescaler plus the port's additions, layered from
//! built-in defaults < YAML file < UPPER_SNAKE env vars < CLI flags, then validated.
//!
//! * Keys are kebab-case in the YAML file and as flags (`buffer-slot-size`,
//!   `--buffer-slot-size 6`); the env var is the UPPER_SNAKE form without prefix
//!   (`BUFFER_SLOT_SIZE`). Only the env vars of known keys are read.
//! * The file is `--config PATH` (which must exist), else `./config.yaml` when it exists.
//! * The layering itself is done by the `config` crate; each layer tags its values with its
//!   origin so that every error can say where the bad value came from.
//! * Every problem is collected (not just the first) into [`ConfigErrors`], each naming the key,
//!   the value, its source and what is allowed.
//! * The token never appears in any error, `Debug`, `Display` or YAML output: it is shown as
//!   `<redacted>`, and every error text is scrubbed of every token value seen in any source.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use config::{Value as LayerValue, ValueKind};
use serde::Serialize;
use tracing_subscriber::filter::{EnvFilter, LevelFilter};

use crate::agones::{AgonesBuffer, AgonesSettings};
use crate::buffer::BufferPolicy;
use crate::cli::{Cli, FlagValue, Overrides};
use crate::model::{Resources, ServerSource, Toleration};
use crate::provider;
use crate::quantity;
use crate::selector::{self, LabelSelector};

mod keys;
pub use keys::{
    core_key, core_keys, readme_table, Key, KeyDefault, KeyKind, CORE_KEYS_HEAD, CORE_KEYS_TAIL,
};

/// The cloud API token. Its `Debug`, `Display` and `Serialize` never show the secret.
#[derive(Clone, PartialEq, Eq)]
pub struct SecretToken(String);

impl SecretToken {
    /// Wraps a secret value.
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }
    /// The secret itself: call only where it is sent to the cloud API.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for SecretToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

impl fmt::Display for SecretToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

impl Serialize for SecretToken {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str("<redacted>")
    }
}

/// Log output format.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

/// Allocatable resources of a freshly provisioned node, used to plan while the pool has no
/// node to learn the shape from (scale up from zero).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct NodeTemplate {
    /// Allocatable CPU in millicores.
    pub cpu_millis: u64,
    /// Allocatable memory in bytes.
    pub memory_bytes: u64,
    /// Allocatable pod count.
    pub pods: u32,
}

/// The effective, validated configuration.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct Config {
    /// Registered provider name (`digitalocean`).
    pub cloud_provider: String,
    /// Cloud API token, from `cloud-provider-token` or read from `cloud-provider-token-file`.
    pub cloud_provider_token: Option<SecretToken>,
    /// File holding the token (a mounted Secret); read at load time.
    pub cloud_provider_token_file: Option<PathBuf>,
    /// Cloud-side cluster name.
    pub cluster_name: String,
    /// Cloud-side node pool name.
    pub node_pool_name: String,
    /// The validated settings of the selected provider by key (`digitalocean-api-url`...), each
    /// set or defaulted. The provider declares them ([`provider::ProviderSpec::settings`]) and
    /// reads them into its own type (`provider::digitalocean::DigitalOceanSettings`).
    pub provider_settings: BTreeMap<String, String>,
    /// Kubernetes label selector choosing the pool's nodes (validated syntax).
    pub node_selector: String,
    /// API server URL overriding the kubeconfig's (empty: none).
    pub cluster_kube_config_master_url: Option<String>,
    /// Kubeconfig path (empty: in-cluster, else KUBECONFIG / ~/.kube/config).
    pub cluster_kube_config_path: Option<PathBuf>,
    /// Smallest pool size.
    pub minimum_node_pool_size: u32,
    /// Largest pool size.
    pub maximum_node_pool_size: u32,
    /// Label name marking game server pods.
    pub server_pod_label_name: String,
    /// Label value marking game server pods.
    pub server_pod_label_value: String,
    /// Free server slots to keep at all times.
    pub buffer_slot_size: u32,
    /// How the buffer is sized: `buffer-slot-size` always, or from a start-time target.
    pub buffer_policy: BufferPolicy,
    /// With `buffer-policy: target`: the share of matches that must find a free slot at once.
    pub target_instant_start: f64,
    /// Time-of-day windows that set the buffer or the target instead (first match wins).
    pub buffer_schedule: crate::schedule::BufferSchedule,
    /// Seconds between reconciles when nothing changes.
    pub scale_loop_tick_sec: u64,
    /// CPU one server requests, in millicores.
    pub server_cpu_resource_request: u64,
    /// Memory one server requests, in bytes; when set, a slot needs both.
    pub server_memory_resource_request: Option<u64>,
    /// Taints the server pods tolerate (`key=value:Effect`, `key:Effect`, `key`, `*`).
    pub server_pod_tolerations: Vec<Toleration>,
    /// Where game servers are learnt from: server pods, or Agones GameServers.
    pub server_source: ServerSource,
    /// The `agones-*` settings (defaults unless `server-source: agones`).
    pub agones: AgonesSettings,
    /// Seconds after a node of the pool was created during which nothing is cordoned.
    pub scale_down_delay_after_add_sec: u64,
    /// Seconds a surplus of at least a node must hold before a node is cordoned.
    pub scale_down_unneeded_sec: u64,
    /// Seconds a node stays cordoned by kubescaler before it may be deleted once empty.
    pub empty_node_expiration_sec: u64,
    /// Seconds a registered but not-yet-Ready node counts as booting capacity.
    pub node_boot_timeout_sec: u64,
    /// With `buffer-policy: target`: seconds from a grow to a Ready node, until measured.
    pub expected_node_boot_sec: u64,
    /// Plan and log, change nothing.
    pub dry_run: bool,
    /// Log format.
    pub log_format: LogFormat,
    /// tracing filter directive (`info`, `kubescaler=debug`, ...).
    pub log_level: String,
    /// Shape of a new node, for planning with an empty pool.
    pub node_template: Option<NodeTemplate>,
    /// Address of the health and metrics listener.
    pub http_listen_address: std::net::SocketAddr,
    /// Whether to elect a leader on a Lease so that only one replica acts.
    pub leader_election: bool,
    /// Namespace of the Lease (unset: the pod's own namespace, else `default`).
    pub leader_election_namespace: Option<String>,
    /// Name of the Lease.
    pub leader_election_lease_name: String,
    /// Seconds a leader holds the Lease without renewing it.
    pub leader_election_lease_duration_sec: u64,
    /// This replica's identity in the Lease (unset: `$HOSTNAME`, the pod name).
    pub leader_election_identity: Option<String>,
}

impl LogFormat {
    /// The config value naming this format.
    pub fn as_str(self) -> &'static str {
        match self {
            LogFormat::Text => "text",
            LogFormat::Json => "json",
        }
    }
}

impl FromStr for LogFormat {
    type Err = String;
    /// `text` or `json`, case-insensitive.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.eq_ignore_ascii_case("text") {
            Ok(LogFormat::Text)
        } else if s.eq_ignore_ascii_case("json") {
            Ok(LogFormat::Json)
        } else {
            Err(format!("unknown log format {s:?}"))
        }
    }
}

impl fmt::Display for LogFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The token's key, whose value is never shown.
pub const TOKEN_KEY: &str = "cloud-provider-token";

/// The file read when `--config` is not given, if it exists (relative to the working dir).
pub const DEFAULT_CONFIG_FILE: &str = "config.yaml";

/// Every configuration key, in the order of the docs and of [`Config::to_redacted_yaml`]: the
/// core keys, with the settings the providers declare ([`provider::ProviderSpec::settings`],
/// `digitalocean-api-url`...) after `node-pool-name`.
pub const KEYS: &[&str] = &ALL_KEYS;

const ALL_KEYS: [&str; CORE_KEYS_HEAD.len() + provider::SETTING_COUNT + CORE_KEYS_TAIL.len()] = {
    let mut keys = [""; CORE_KEYS_HEAD.len() + provider::SETTING_COUNT + CORE_KEYS_TAIL.len()];
    let mut n = 0;
    let mut i = 0;
    while i < CORE_KEYS_HEAD.len() {
        keys[n] = CORE_KEYS_HEAD[i].name;
        n += 1;
        i += 1;
    }
    let mut p = 0;
    while p < provider::REGISTRY.len() {
        let settings = provider::REGISTRY[p].settings;
        let mut j = 0;
        while j < settings.len() {
            keys[n] = settings[j].key;
            n += 1;
            j += 1;
        }
        p += 1;
    }
    let mut i = 0;
    while i < CORE_KEYS_TAIL.len() {
        keys[n] = CORE_KEYS_TAIL[i].name;
        n += 1;
        i += 1;
    }
    keys
};

/// The values a numeric key accepts: `min..=max`, counted in `unit`.
///
/// Every numeric key has one, in its key's declaration ([`ranges`]): the loader refuses a value outside it (a
/// [`ConfigError::Invalid`] whose reason starts with `out of range` and whose `allowed` is
/// the range), so no setting can wrap when converted (`u64` seconds to `i64`) or overflow when
/// added to a clock. The README lists the same table (a test keeps them in step).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Range {
    /// Smallest allowed value.
    pub min: u64,
    /// Largest allowed value.
    pub max: u64,
    /// What the value counts (`seconds`, `nodes`...), as messages say it.
    pub unit: &'static str,
}

impl Range {
    const fn new(min: u64, max: u64, unit: &'static str) -> Self {
        Range { min, max, unit }
    }

    /// Whether `n` is allowed.
    pub fn contains(self, n: u64) -> bool {
        (self.min..=self.max).contains(&n)
    }

    /// `parsed` if it is a number in the range, else why not (a number too large even to
    /// parse is out of range like any other above `max`).
    fn check(self, parsed: Result<u64, NumberError>) -> Result<u64, String> {
        match parsed {
            Ok(n) if self.contains(n) => Ok(n),
            Ok(n) if n < self.min => Err(format!("out of range: must be at least {}", self.min)),
            Ok(_) | Err(NumberError::TooLarge) => {
                Err(format!("out of range: must be at most {}", self.max))
            }
            Err(NumberError::Negative) => Err("out of range: must not be negative".into()),
            Err(NumberError::Invalid(reason)) => Err(reason),
        }
    }

    /// Like [`Range::check`], for a key stored as `u32` (every such range fits in one).
    fn check_u32(self, parsed: Result<u64, NumberError>) -> Result<u32, String> {
        let n = self.check(parsed)?;
        u32::try_from(n).map_err(|_| format!("out of range: must be at most {}", self.max))
    }
}

impl fmt::Display for Range {
    /// `0..=315360000 seconds`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}..={} {}", self.min, self.max, self.unit)
    }
}

/// Ten years in seconds: the longest duration a production pool could want before an action
/// (in practice "never"), and still far from `i64::MAX` seconds, where a timestamp comparison
/// would wrap.
pub const TEN_YEARS_SEC: u64 = 10 * 365 * 24 * 3600;

/// Largest pool: twice the 5,000 nodes upstream Kubernetes supports in one cluster, so every
/// real pool fits, while a slip of a few digits (or `u32::MAX` as "unlimited") is refused.
pub const MAX_POOL_NODES: u64 = 10_000;

/// 1,000 cores in millicores: above the largest machine any cloud sells (under 1,000 vCPUs).
pub const MAX_CPU_MILLIS: u64 = 1_000_000;

/// 64 TiB: above the largest machine any cloud sells (32 TiB of memory).
pub const MAX_MEMORY_BYTES: u64 = 64 << 40;

/// `minimum-node-pool-size`: 0 lets the pool empty when idle; at most [`MAX_POOL_NODES`].
pub const MINIMUM_NODE_POOL_SIZE_RANGE: Range = Range::new(0, MAX_POOL_NODES, "nodes");
/// `maximum-node-pool-size`: at least 1, as a pool that may hold no node runs no server; at
/// most [`MAX_POOL_NODES`].
pub const MAXIMUM_NODE_POOL_SIZE_RANGE: Range = Range::new(1, MAX_POOL_NODES, "nodes");
/// `buffer-slot-size`: 0 (no spare capacity) to a million free slots, more than a full
/// [`MAX_POOL_NODES`] pool of 100-slot nodes holds: a larger buffer could never be met.
pub const BUFFER_SLOT_SIZE_RANGE: Range = Range::new(0, 1_000_000, "slots");
/// `scale-loop-tick-sec`: at least 1 s (0 would spin); at most an hour, as the periodic pass is
/// what retries failures and expires empty nodes when no event comes, and a longer tick would
/// leave the buffer unrestored for hours.
pub const SCALE_LOOP_TICK_SEC_RANGE: Range = Range::new(1, 3600, "seconds");
/// `server-cpu-resource-request`: at least 1 millicore (a slot that needs nothing would make
/// every node infinitely large); at most [`MAX_CPU_MILLIS`], one server per the largest node.
pub const SERVER_CPU_RESOURCE_REQUEST_RANGE: Range = Range::new(1, MAX_CPU_MILLIS, "millicores");
/// `server-memory-resource-request`: 1 byte to [`MAX_MEMORY_BYTES`], like the CPU request.
pub const SERVER_MEMORY_RESOURCE_REQUEST_RANGE: Range = Range::new(1, MAX_MEMORY_BYTES, "bytes");
/// `scale-down-delay-after-add-sec` and `scale-down-unneeded-sec`: 0 (off) to a day; a
/// longer hold would keep a pool at its peak into the next day.
pub const SCALE_DOWN_HOLD_SEC_RANGE: Range = Range::new(0, 86_400, "seconds");
/// `empty-node-expiration-sec`: 0 deletes an empty cordoned node at once; up to ten years
/// ([`TEN_YEARS_SEC`]) for "keep it".
pub const EMPTY_NODE_EXPIRATION_SEC_RANGE: Range = Range::new(0, TEN_YEARS_SEC, "seconds");
/// `node-boot-timeout-sec`: 0 never counts a not-Ready node as booting; up to ten years
/// ([`TEN_YEARS_SEC`]) for "always".
pub const NODE_BOOT_TIMEOUT_SEC_RANGE: Range = Range::new(0, TEN_YEARS_SEC, "seconds");
/// `expected-node-boot-sec`: at least a second, at most an hour (past that a pool cannot
/// promise instant starts from a buffer sized by boot time).
pub const EXPECTED_NODE_BOOT_SEC_RANGE: Range = Range::new(1, 3600, "seconds");
/// `node-template-cpu`: a node has some CPU, and no more than [`MAX_CPU_MILLIS`].
pub const NODE_TEMPLATE_CPU_RANGE: Range = Range::new(1, MAX_CPU_MILLIS, "millicores");
/// `node-template-memory`: a node has some memory, and no more than [`MAX_MEMORY_BYTES`].
pub const NODE_TEMPLATE_MEMORY_RANGE: Range = Range::new(1, MAX_MEMORY_BYTES, "bytes");
/// `node-template-pods`: at least 1; at most 1,000, above what any distribution lets a node
/// run (the kubelet's default is 110; EKS's largest instances allow 737).
pub const NODE_TEMPLATE_PODS_RANGE: Range = Range::new(1, 1000, "pods");
/// `leader-election-lease-duration-sec`: at least 5 s, as renewals need a few seconds of slack;
/// at most an hour, the longest a crashed leader may keep the standby from scaling.
/// `agones-compaction-per-minute`: 0 (off) to 10 a second, far above what a Fleet can
/// recreate, while a slip of digits is refused.
pub const AGONES_COMPACTION_PER_MINUTE_RANGE: Range = Range::new(0, 600, "GameServers per minute");
/// `leader-election-lease-duration-sec`.
pub const LEADER_ELECTION_LEASE_DURATION_SEC_RANGE: Range = Range::new(5, 3600, "seconds");

/// Every numeric key with its allowed range, in [`KEYS`] order: what the loader checks, error
/// messages print and the README repeats, from each key's declaration ([`core_keys`]).
pub fn ranges() -> impl Iterator<Item = (&'static str, Range)> {
    core_keys().filter_map(|k| k.range().map(|r| (k.name, r)))
}

/// The allowed range of a numeric key; `None` for a key that is not a number.
pub fn range_of(key: &str) -> Option<Range> {
    core_key(key).and_then(Key::range)
}

/// The env var of a key: `buffer-slot-size` → `BUFFER_SLOT_SIZE`.
pub fn env_var_name(key: &str) -> String {
    key.replace('-', "_").to_ascii_uppercase()
}

/// Where a key's effective value came from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ValueSource {
    /// Built-in default.
    Default,
    /// The YAML config file at this path.
    File(PathBuf),
    /// This env var.
    Env(String),
    /// This flag (`--buffer-slot-size`).
    Flag(String),
    /// The token, read from the file named by `cloud-provider-token-file`.
    TokenFile(PathBuf),
}

impl fmt::Display for ValueSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ValueSource::Default => f.write_str("default"),
            ValueSource::File(p) => write!(f, "config file {}", p.display()),
            ValueSource::Env(name) => write!(f, "env var {name}"),
            ValueSource::Flag(flag) => write!(f, "flag {flag}"),
            ValueSource::TokenFile(p) => write!(f, "token file {}", p.display()),
        }
    }
}

/// Everything [`load`] reads, injectable so tests need not touch the process env or cwd.
#[derive(Clone, Default)]
pub struct ConfigSources {
    /// `--config PATH`: read it; an error if it does not exist.
    pub file: Option<PathBuf>,
    /// Read when `file` is `None` and this exists (the binary passes `./config.yaml`).
    pub default_file: Option<PathBuf>,
    /// Env vars by name (`BUFFER_SLOT_SIZE`); only those of [`KEYS`] are looked at.
    pub env: BTreeMap<String, String>,
    /// Flag overrides from the command line.
    pub flags: Overrides,
}

impl fmt::Debug for ConfigSources {
    // Env values may hold the token: show only which vars are set.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ConfigSources")
            .field("file", &self.file)
            .field("default_file", &self.default_file)
            .field("env", &self.env.keys().collect::<Vec<_>>())
            .field("flags", &self.flags)
            .finish()
    }
}

impl ConfigSources {
    /// The sources of a real run: `--config` or `./config.yaml`, the process env (known keys
    /// only) and the parsed flags.
    pub fn from_cli(cli: &Cli) -> Self {
        ConfigSources {
            file: cli.config.clone(),
            default_file: Some(PathBuf::from(DEFAULT_CONFIG_FILE)),
            env: env_from_process(),
            flags: cli.overrides.clone(),
        }
    }
}

/// The process env vars of the known keys (and no other: never PATH, HOME...). A value that
/// is not UTF-8 is converted lossily, so it fails validation instead of vanishing.
pub fn env_from_process() -> BTreeMap<String, String> {
    KEYS.iter()
        .filter_map(|key| {
            let name = env_var_name(key);
            let value = std::env::var_os(&name)?;
            Some((name, value.to_string_lossy().into_owned()))
        })
        .collect()
}

/// One configuration problem.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// `--config` names a file that does not exist.
    #[error("config file {} does not exist (given with --config)", path.display())]
    FileNotFound {
        /// The path given.
        path: PathBuf,
    },
    /// The config file exists but cannot be read.
    #[error("cannot read config file {}: {reason}", path.display())]
    FileUnreadable {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        reason: String,
    },
    /// The config file is not valid YAML (the reason gives a location, never file content).
    #[error("config file {} is not valid YAML: {reason}", path.display())]
    FileSyntax {
        /// The file.
        path: PathBuf,
        /// The parser's message.
        reason: String,
    },
    /// The config file's top level is not a mapping.
    #[error(
        "config file {} must be a mapping of keys to values (e.g. `buffer-slot-size: 4`), found {found}",
        path.display()
    )]
    FileNotMapping {
        /// The file.
        path: PathBuf,
        /// What it holds instead.
        found: &'static str,
    },
    /// A key in the config file that kubescaler does not know.
    #[error("unknown key {key:?} in {}{}", path.display(), did_you_mean(*suggestion))]
    UnknownKey {
        /// The key as written.
        key: String,
        /// The file.
        path: PathBuf,
        /// The nearest valid key, if one is close.
        suggestion: Option<&'static str>,
    },
    /// A required key without default is set nowhere.
    #[error(
        "{key} is required and has no default: {why} (set it in the config file, env var {} or flag --{key})",
        env_var_name(key)
    )]
    Missing {
        /// The key.
        key: &'static str,
        /// Why there is no default.
        why: &'static str,
    },
    /// A value that is of the wrong type or out of range.
    #[error("invalid {key} {value} from {origin}: {reason} (allowed: {allowed})")]
    Invalid {
        /// The key.
        key: &'static str,
        /// The value as given (`<redacted>` for the token).
        value: String,
        /// Where it came from.
        origin: ValueSource,
        /// What is wrong.
        reason: String,
        /// What would be accepted.
        allowed: String,
    },
    /// Both a token and a token file are set.
    #[error(
        "both cloud-provider-token (from {token_origin}) and cloud-provider-token-file \
         (from {file_origin}) are set (allowed: exactly one of them)"
    )]
    TokenConflict {
        /// Where the token came from.
        token_origin: ValueSource,
        /// Where the token file path came from.
        file_origin: ValueSource,
    },
    /// The provider needs a token and none is set.
    #[error(
        "cloud-provider {provider:?} needs an API token and none is set (allowed: env var \
         CLOUD_PROVIDER_TOKEN, or cloud-provider-token-file naming a file that holds it, e.g. a \
         mounted Secret)"
    )]
    TokenMissing {
        /// The provider.
        provider: String,
    },
    /// Some but not all of the node template keys are set.
    #[error(
        "node-template-cpu, node-template-memory and node-template-pods must be set together or \
         not at all: {} set, {} missing",
        set.join(", "),
        missing.join(", ")
    )]
    PartialNodeTemplate {
        /// The keys that are set, with their source.
        set: Vec<String>,
        /// The keys that are not.
        missing: Vec<&'static str>,
    },
    /// The `config` crate refused to layer the sources (not expected to happen).
    #[error("internal error while layering the configuration: {0}")]
    Internal(String),
}

fn did_you_mean(suggestion: Option<&str>) -> String {
    suggestion
        .map(|s| format!(" (did you mean {s:?}?)"))
        .unwrap_or_default()
}

impl ConfigError {
    /// Replaces each secret in the error's texts by `<redacted>`: in a value as given,
    /// wherever it occurs (a token pasted into the wrong key, maybe glued to other text); in
    /// prose (reasons, key names), only where it stands as a whole word, so that a short
    /// token (`x`) does not eat into the words around it (`maximum`).
    fn redact(&mut self, secrets: &[String]) {
        let scrub_value = |s: &mut String| {
            for secret in secrets {
                if s.contains(secret.as_str()) {
                    *s = s.replace(secret.as_str(), REDACTED);
                }
            }
        };
        let scrub = |s: &mut String| {
            for secret in secrets {
                *s = replace_whole_words(s, secret, REDACTED);
            }
        };
        match self {
            ConfigError::FileUnreadable { reason, .. } | ConfigError::FileSyntax { reason, .. } => {
                scrub(reason)
            }
            ConfigError::UnknownKey { key, .. } => scrub(key),
            ConfigError::Invalid {
                value,
                reason,
                allowed,
                ..
            } => {
                scrub_value(value);
                scrub(reason);
                scrub(allowed);
            }
            ConfigError::TokenMissing { provider } => scrub_value(provider),
            ConfigError::PartialNodeTemplate { set, .. } => set.iter_mut().for_each(scrub),
            ConfigError::Internal(message) => scrub(message),
            ConfigError::FileNotFound { .. }
            | ConfigError::FileNotMapping { .. }
            | ConfigError::Missing { .. }
            | ConfigError::TokenConflict { .. } => {}
        }
    }
}

/// `text` with each occurrence of `word` that no letter, digit, `-` or `_` touches on either
/// side replaced by `by`.
fn replace_whole_words(text: &str, word: &str, by: &str) -> String {
    if word.is_empty() {
        return text.to_string();
    }
    let joins = |c: Option<char>| c.is_some_and(|c| c.is_alphanumeric() || c == '-' || c == '_');
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find(word) {
        // What precedes the match: in `rest`, else the end of what was written.
        let before = rest[..at].chars().last().or_else(|| out.chars().last());
        let after = rest[at + word.len()..].chars().next();
        out.push_str(&rest[..at]);
        if joins(before) || joins(after) {
            out.push_str(word);
        } else {
            out.push_str(by);
        }
        rest = &rest[at + word.len()..];
    }
    out.push_str(rest);
    out
}

/// Every problem found in one load, in key order (file problems first).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl ConfigErrors {
    /// The problems.
    pub fn errors(&self) -> &[ConfigError] {
        &self.0
    }
    /// How many problems.
    pub fn len(&self) -> usize {
        self.0.len()
    }
    /// Whether there is none (a returned `ConfigErrors` always has at least one).
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.0.len();
        write!(
            f,
            "invalid configuration ({n} problem{}):",
            if n == 1 { "" } else { "s" }
        )?;
        for e in &self.0 {
            write!(f, "\n  - {e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

/// A loaded configuration with the source of each key's value.
#[derive(Clone, Debug, PartialEq)]
pub struct LoadedConfig {
    /// The effective configuration.
    pub config: Config,
    /// Source of every key that has a value (unset optional keys are absent).
    pub origins: BTreeMap<&'static str, ValueSource>,
}

impl LoadedConfig {
    /// Like [`Config::to_redacted_yaml`], each key followed by a comment naming its source.
    pub fn to_annotated_yaml(&self) -> String {
        render_yaml(&self.config, Some(&self.origins))
    }
}

/// Loads and validates the configuration from `sources`, reporting every problem at once.
pub fn load(sources: &ConfigSources) -> Result<Config, ConfigErrors> {
    load_with_origins(sources).map(|loaded| loaded.config)
}

/// Like [`load`], also telling where each value came from.
pub fn load_with_origins(sources: &ConfigSources) -> Result<LoadedConfig, ConfigErrors> {
    let mut errors = Vec::new();
    let mut secrets = Vec::new();
    let (file_path, file_layer) = file_layer(sources, &mut errors, &mut secrets);
    let env_layer = env_layer(&sources.env, &mut secrets);
    let flag_layer = flag_layer(&sources.flags, &mut secrets);

    let layered = config::Config::builder()
        .add_source(default_layer())
        .add_source(file_layer)
        .add_source(env_layer)
        .add_source(flag_layer)
        .build();
    let table = match layered {
        Ok(c) => match c.cache.kind {
            ValueKind::Table(table) => table,
            _ => config::Map::new(),
        },
        Err(e) => {
            errors.push(ConfigError::Internal(e.to_string()));
            config::Map::new()
        }
    };

    let mut resolver = Resolver {
        table,
        file: file_path.as_deref(),
        errors,
        origins: BTreeMap::new(),
        secrets,
    };
    let config = resolver.resolve();
    let Resolver {
        mut errors,
        origins,
        mut secrets,
        ..
    } = resolver;
    match config {
        Some(config) if errors.is_empty() => Ok(LoadedConfig { config, origins }),
        _ => {
            if errors.is_empty() {
                errors.push(ConfigError::Internal(
                    "a key with a default has no value".into(),
                ));
            }
            // Longest first, so a secret containing a shorter one is replaced whole.
            secrets.retain(|s| !s.is_empty());
            secrets.sort_by_key(|s| std::cmp::Reverse(s.len()));
            for e in &mut errors {
                e.redact(&secrets);
            }
            Err(ConfigErrors(errors))
        }
    }
}

const REDACTED: &str = "<redacted>";
const ORIGIN_DEFAULT: &str = "default";
const ORIGIN_FILE: &str = "file";
const ORIGIN_ENV: &str = "env";
const ORIGIN_FLAG: &str = "flag";

/// One source's values, tagged with its origin, as the `config` crate layers them.
#[derive(Clone)]
struct Layer {
    values: config::Map<String, LayerValue>,
}

impl Layer {
    fn new() -> Self {
        Layer {
            values: config::Map::new(),
        }
    }
    fn set(&mut self, origin: &'static str, key: &str, kind: ValueKind) {
        let origin = origin.to_string();
        let kind = match kind {
            // Array items carry the origin too, or the crate would report them as unknown.
            ValueKind::Array(items) => ValueKind::Array(
                items
                    .into_iter()
                    .map(|v| LayerValue::new(Some(&origin), v.kind))
                    .collect(),
            ),
            other => other,
        };
        self.values
            .insert(key.to_string(), LayerValue::new(Some(&origin), kind));
    }
}

impl fmt::Debug for Layer {
    // Values may hold the token.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.values.keys()).finish()
    }
}

impl config::Source for Layer {
    fn clone_into_box(&self) -> Box<dyn config::Source + Send + Sync> {
        Box::new(self.clone())
    }
    fn collect(&self) -> Result<config::Map<String, LayerValue>, config::ConfigError> {
        Ok(self.values.clone())
    }
}

/// Default `scale-down-delay-after-add-sec`, from `simulate --compare` (README "Churn").
pub const DEFAULT_SCALE_DOWN_DELAY_AFTER_ADD_SEC: u64 = 600;
/// Default `scale-down-unneeded-sec`, from `simulate --compare` (README "Churn").
pub const DEFAULT_SCALE_DOWN_UNNEEDED_SEC: u64 = 600;

/// The built-in defaults (the Go program's, plus the new keys'), from each key's declaration.
fn default_layer() -> Layer {
    let mut l = Layer::new();
    for key in core_keys() {
        if let Some(value) = key.default_value() {
            l.set(ORIGIN_DEFAULT, key.name, value);
        }
    }
    l
}

fn env_layer(env: &BTreeMap<String, String>, secrets: &mut Vec<String>) -> Layer {
    let mut l = Layer::new();
    for key in KEYS {
        if let Some(value) = env.get(&env_var_name(key)) {
            if *key == TOKEN_KEY {
                push_secret(secrets, value);
            }
            l.set(ORIGIN_ENV, key, ValueKind::String(value.clone()));
        }
    }
    l
}

fn flag_layer(flags: &Overrides, secrets: &mut Vec<String>) -> Layer {
    let mut l = Layer::new();
    for (key, value) in flags.set_flags() {
        let kind = match value {
            FlagValue::Text(s) => ValueKind::String(s.to_string()),
            FlagValue::Bool(b) => ValueKind::Boolean(b),
            FlagValue::Secret(token) => {
                push_secret(secrets, token.expose());
                ValueKind::String(token.expose().to_string())
            }
        };
        l.set(ORIGIN_FLAG, key, kind);
    }
    l
}

/// Remembers a token value to scrub from errors: as given, trimmed, and each long word of it
/// (a file holding "TOKEN junk" is invalid, yet TOKEN must still never be shown).
fn push_secret(secrets: &mut Vec<String>, value: &str) {
    secrets.push(value.to_string());
    let trimmed = value.trim();
    if trimmed != value {
        secrets.push(trimmed.to_string());
    }
    if trimmed.split_whitespace().nth(1).is_some() {
        secrets.extend(
            trimmed
                .split_whitespace()
                .filter(|w| w.len() >= MIN_SECRET_WORD)
                .map(str::to_string),
        );
    }
}

/// Words shorter than this are not scrubbed on their own ("Bearer", "the"...).
const MIN_SECRET_WORD: usize = 8;

/// Longest unknown key echoed in errors; every valid key is shorter. A longer "key" is more
/// likely a value on the wrong line (maybe the token) than a typo, so it is not shown.
const MAX_SHOWN_KEY_LEN: usize = 40;

/// Reads and checks the YAML file; returns its path (when one was read) and its values.
fn file_layer(
    sources: &ConfigSources,
    errors: &mut Vec<ConfigError>,
    secrets: &mut Vec<String>,
) -> (Option<PathBuf>, Layer) {
    let mut layer = Layer::new();
    let path = match (&sources.file, &sources.default_file) {
        (Some(explicit), _) => {
            if !explicit.exists() {
                errors.push(ConfigError::FileNotFound {
                    path: explicit.clone(),
                });
                return (None, layer);
            }
            explicit.clone()
        }
        (None, Some(default)) if default.exists() => default.clone(),
        _ => return (None, layer),
    };
    let text = match std::fs::read_to_string(&path) {
        Ok(text) => text,
        Err(e) => {
            errors.push(ConfigError::FileUnreadable {
                path: path.clone(),
                reason: e.to_string(),
            });
            return (Some(path), layer);
        }
    };
    let root: serde_yaml::Value = match serde_yaml::from_str(&text) {
        Ok(root) => root,
        Err(e) => {
            // The parse failed, so the token's value is not known: guess it from the text so
            // that no message can echo it.
            secrets.extend(token_candidates(&text));
            errors.push(ConfigError::FileSyntax {
                path: path.clone(),
                reason: e.to_string(),
            });
            return (Some(path), layer);
        }
    };
    let mapping = match root {
        serde_yaml::Value::Mapping(m) => m,
        serde_yaml::Value::Null => return (Some(path), layer),
        other => {
            errors.push(ConfigError::FileNotMapping {
                path: path.clone(),
                found: yaml_kind(&other),
            });
            return (Some(path), layer);
        }
    };
    for (k, v) in &mapping {
        let key_text = match k {
            serde_yaml::Value::String(s) => s.clone(),
            serde_yaml::Value::Number(n) => n.to_string(),
            serde_yaml::Value::Bool(b) => b.to_string(),
            other => format!("<{}>", yaml_kind(other)),
        };
        let Some(key) = KEYS.iter().copied().find(|known| *known == key_text) else {
            let looks_like_key = key_text.len() <= MAX_SHOWN_KEY_LEN
                && key_text
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b));
            errors.push(ConfigError::UnknownKey {
                suggestion: suggest_key(&key_text),
                key: if looks_like_key {
                    key_text
                } else {
                    format!("<{} characters, not shown>", key_text.chars().count())
                },
                path: path.clone(),
            });
            continue;
        };
        if key == TOKEN_KEY {
            // Whatever shape it has (string, number, a list by mistake), never echo it.
            for scalar in yaml_scalars(v) {
                push_secret(secrets, &scalar);
            }
        }
        match yaml_to_kind(v) {
            Ok(Some(kind)) => layer.set(ORIGIN_FILE, key, kind),
            // `key:` with no value (or `~`) leaves the key unset.
            Ok(None) => {}
            Err(reason) => errors.push(ConfigError::Invalid {
                key,
                value: if key == TOKEN_KEY {
                    REDACTED.into()
                } else {
                    format!("<{}>", yaml_kind(v))
                },
                origin: ValueSource::File(path.clone()),
                reason: reason.into(),
                allowed: allowed_for(key),
            }),
        }
    }
    (Some(path), layer)
}

/// Likely token values in YAML text that failed to parse: whatever follows
/// `cloud-provider-token:` on a line, with and without quotes.
fn token_candidates(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    for line in text.lines() {
        let line = line.trim_start().trim_start_matches(['"', '\'']);
        let Some(rest) = line.strip_prefix(TOKEN_KEY) else {
            continue;
        };
        if rest.starts_with("-file") {
            continue;
        }
        let rest = rest.trim_start_matches(['"', '\'']).trim_start();
        let value = rest
            .strip_prefix(':')
            .or_else(|| rest.strip_prefix('='))
            .unwrap_or(rest);
        let value = value.trim();
        let unquoted = value.trim_matches(['"', '\'']).trim();
        for candidate in [value, unquoted] {
            if !candidate.is_empty() {
                out.push(candidate.to_string());
            }
        }
        // Also every word of it, in case the parser quotes a fragment.
        out.extend(
            unquoted
                .split_whitespace()
                .filter(|w| w.len() >= MIN_SECRET_WORD)
                .map(str::to_string),
        );
    }
    out
}

/// Every scalar inside `v`, as text.
fn yaml_scalars(v: &serde_yaml::Value) -> Vec<String> {
    match v {
        serde_yaml::Value::String(s) => vec![s.clone()],
        serde_yaml::Value::Number(n) => vec![n.to_string()],
        serde_yaml::Value::Bool(b) => vec![b.to_string()],
        serde_yaml::Value::Null => Vec::new(),
        serde_yaml::Value::Sequence(items) => items.iter().flat_map(yaml_scalars).collect(),
        serde_yaml::Value::Mapping(m) => m
            .iter()
            .flat_map(|(k, v)| yaml_scalars(k).into_iter().chain(yaml_scalars(v)))
            .collect(),
        serde_yaml::Value::Tagged(t) => yaml_scalars(&t.value),
    }
}

fn yaml_kind(v: &serde_yaml::Value) -> &'static str {
    match v {
        serde_yaml::Value::Null => "null",
        serde_yaml::Value::Bool(_) => "a boolean",
        serde_yaml::Value::Number(_) => "a number",
        serde_yaml::Value::String(_) => "a string",
        serde_yaml::Value::Sequence(_) => "a list",
        serde_yaml::Value::Mapping(_) => "a mapping",
        serde_yaml::Value::Tagged(_) => "a tagged value",
    }
}

/// A YAML value as a layer value; `Ok(None)` for null (unset).
fn yaml_to_kind(v: &serde_yaml::Value) -> Result<Option<ValueKind>, &'static str> {
    Ok(Some(match v {
        serde_yaml::Value::Null => return Ok(None),
        serde_yaml::Value::Sequence(items) => ValueKind::Array(
            items
                .iter()
                .map(|item| match yaml_scalar(item) {
                    Some(kind) => Ok(LayerValue::new(None, kind)),
                    None => Err("a list may hold only single values (strings)"),
                })
                .collect::<Result<_, _>>()?,
        ),
        serde_yaml::Value::Mapping(_) => return Err("expected a single value, got a mapping"),
        serde_yaml::Value::Tagged(_) => return Err("YAML tags (!tag) are not supported"),
        scalar => yaml_scalar(scalar).ok_or("expected a single value")?,
    }))
}

fn yaml_scalar(v: &serde_yaml::Value) -> Option<ValueKind> {
    Some(match v {
        serde_yaml::Value::Bool(b) => ValueKind::Boolean(*b),
        serde_yaml::Value::Number(n) => {
            if let Some(u) = n.as_u64() {
                ValueKind::U64(u)
            } else if let Some(i) = n.as_i64() {
                ValueKind::I64(i)
            } else {
                ValueKind::Float(n.as_f64()?)
            }
        }
        serde_yaml::Value::String(s) => ValueKind::String(s.clone()),
        _ => return None,
    })
}

/// The valid key nearest to a misspelt one, if it is close enough to be a likely typo.
fn suggest_key(key: &str) -> Option<&'static str> {
    // snake_case and UPPER case are common slips (env var habits).
    let normalized = key.trim().to_ascii_lowercase().replace('_', "-");
    KEYS.iter()
        .map(|k| (*k, strsim::damerau_levenshtein(&normalized, k)))
        .min_by_key(|(_, d)| *d)
        .filter(|(k, d)| *d <= (k.len() / 4).max(2))
        .map(|(k, _)| k)
}

/// What each key accepts, for error messages: a numeric key's [`Range`] first, then details.
fn allowed_for(key: &str) -> String {
    if let Some((spec, setting)) = provider::setting(key) {
        return format!(
            "{}; only with cloud-provider {}",
            setting.allowed, spec.name
        );
    }
    let detail = allowed_detail(key);
    match range_of(key) {
        Some(range) if detail.is_empty() => range.to_string(),
        Some(range) => format!("{range}, {detail}"),
        None => detail,
    }
}

/// What a key accepts besides its range (all of it for a key that is not a number).
fn allowed_detail(key: &str) -> String {
    match key {
        "cloud-provider" => {
            let names = provider::names();
            if names.is_empty() {
                "a registered provider (none are registered in this build)".into()
            } else {
                format!("one of: {}", names.join(", "))
            }
        }
        "cloud-provider-token" => "the provider's API token: printable ASCII, no spaces".into(),
        "cloud-provider-token-file" => "the path of a readable file holding the token".into(),
        "cluster-name" | "node-pool-name" => "a non-empty name".into(),
        "node-selector" => "a non-empty Kubernetes label selector, e.g. role=game-servers or \
             role=game-servers,tier in (a,b)"
            .into(),
        "cluster-kube-config-master-url" => "an http:// or https:// URL, or empty".into(),
        "cluster-kube-config-path" => "a file path, or empty for in-cluster config".into(),
        "minimum-node-pool-size" => "and at most maximum-node-pool-size".into(),
        "maximum-node-pool-size" => "and at least minimum-node-pool-size".into(),
        "server-pod-label-name" => {
            "a label key: [prefix/]name, name <= 63 of [A-Za-z0-9-_.] starting and ending \
             alphanumeric, prefix a lowercase DNS subdomain"
                .into()
        }
        "server-pod-label-value" => {
            "a non-empty label value: <= 63 of [A-Za-z0-9-_.] starting and ending alphanumeric"
                .into()
        }
        "server-cpu-resource-request" | "node-template-cpu" => {
            "as integer millicores (1000) or a Kubernetes CPU quantity (\"1\", \"500m\", \"1.5\"); \
             in env vars and flags a bare integer is millicores"
                .into()
        }
        "server-memory-resource-request" | "node-template-memory" => {
            "that is up to 64Ti, as bytes or a Kubernetes quantity (512Mi, 1Gi, 2G, 1e9)".into()
        }
        "server-pod-tolerations" => {
            "a list (comma-separated in env/flags) of *, key, key:Effect, key=value, \
             key=value:Effect with Effect NoSchedule, PreferNoSchedule or NoExecute; none may \
             tolerate node.kubernetes.io/unschedulable, not-ready or unreachable as NoSchedule \
             (so not *)"
                .into()
        }
        "server-source" => "pods or agones".into(),
        "buffer-policy" => "fixed or target (target: pods mode only)".into(),
        "target-instant-start" => {
            "a share above 0.5 and below 1, as a fraction (0.99) or a percentage (99%)".into()
        }
        "buffer-schedule" => {
            "windows separated by ';', each DAYS HH:MM-HH:MM TIME-ZONE buffer=N or target=SHARE \
             (e.g. Mon-Fri 18:00-23:00 Europe/Berlin buffer=12); empty: none; pods mode only"
                .into()
        }
        "agones-namespaces" => {
            "a list (comma-separated in env/flags) of namespace names; empty: all; only with \
             server-source agones"
                .into()
        }
        "agones-fleets" => {
            "a list (comma-separated in env/flags) of Fleet names; empty: all; only with \
             server-source agones"
                .into()
        }
        "agones-compaction-per-minute" => {
            "0 turns compaction off; only with server-source agones".into()
        }
        "agones-buffer" => "fixed or fleet-autoscalers; only with server-source agones".into(),
        "dry-run" => "true or false".into(),
        "log-format" => "text or json".into(),
        "log-level" => {
            "a tracing filter: trace, debug, info, warn, error, off, or directives like \
             info,kubescaler=debug"
                .into()
        }
        "http-listen-address" => {
            "an IP address and port, e.g. 0.0.0.0:8080 or 127.0.0.1:9090".into()
        }
        "leader-election" => "true or false".into(),
        "leader-election-namespace" | "leader-election-lease-name" => {
            "a Kubernetes object name: lower-case letters, digits, '-' and '.', at most 253".into()
        }
        "leader-election-identity" => "a non-empty string (default: $HOSTNAME)".into(),
        // A numeric key whose range says it all.
        _ if range_of(key).is_some() => String::new(),
        _ => "see config.yaml.example".into(),
    }
}

/// A value as shown in an error (`<redacted>` for the token).
fn show(key: &str, kind: &ValueKind) -> String {
    if key == TOKEN_KEY {
        return REDACTED.into();
    }
    match kind {
        ValueKind::Nil => "null".into(),
        ValueKind::String(s) => format!("{s:?}"),
        ValueKind::Boolean(b) => b.to_string(),
        ValueKind::I64(n) => n.to_string(),
        ValueKind::I128(n) => n.to_string(),
        ValueKind::U64(n) => n.to_string(),
        ValueKind::U128(n) => n.to_string(),
        ValueKind::Float(f) => f.to_string(),
        ValueKind::Array(items) => {
            let items: Vec<String> = items.iter().map(|v| show(key, &v.kind)).collect();
            format!("[{}]", items.join(", "))
        }
        ValueKind::Table(_) => "<a mapping>".into(),
    }
}

/// A single value as text (trimmed); numbers and booleans are accepted as their text.
fn to_text(kind: &ValueKind) -> Result<String, String> {
    Ok(match kind {
        ValueKind::String(s) => s.trim().to_string(),
        ValueKind::Boolean(b) => b.to_string(),
        ValueKind::I64(n) => n.to_string(),
        ValueKind::I128(n) => n.to_string(),
        ValueKind::U64(n) => n.to_string(),
        ValueKind::U128(n) => n.to_string(),
        ValueKind::Float(f) => f.to_string(),
        ValueKind::Nil => String::new(),
        ValueKind::Array(_) => return Err("expected a single value, got a list".into()),
        ValueKind::Table(_) => return Err("expected a single value, got a mapping".into()),
    })
}

/// Why a value is not a non-negative 64-bit integer; [`Range::check`] words it.
#[derive(Debug)]
enum NumberError {
    /// Below zero: out of every range.
    Negative,
    /// Above `u64::MAX`: out of every range.
    TooLarge,
    /// Not a number at all.
    Invalid(String),
}

impl From<quantity::QuantityError> for NumberError {
    fn from(e: quantity::QuantityError) -> Self {
        match e {
            quantity::QuantityError::Negative => NumberError::Negative,
            quantity::QuantityError::TooLarge => NumberError::TooLarge,
            other => NumberError::Invalid(other.to_string()),
        }
    }
}

/// A share strictly between 0.5 and 1: `0.99`, or `99%` (text).
fn to_share(kind: &ValueKind) -> Result<f64, String> {
    let value = match kind {
        ValueKind::Float(f) => *f,
        ValueKind::U64(_) | ValueKind::I64(_) | ValueKind::U128(_) | ValueKind::I128(_) => {
            return Err("out of range: 0 and 1 (and every whole number) are not allowed".into())
        }
        _ => {
            let text = to_text(kind)?;
            let (number, scale) = match text.strip_suffix('%') {
                Some(p) => (p.trim().to_string(), 100.0),
                None => (text.clone(), 1.0),
            };
            number
                .parse::<f64>()
                .map_err(|_| "not a number".to_string())?
                / scale
        }
    };
    if !(value.is_finite() && value > 0.5 && value < 1.0) {
        return Err(format!(
            "out of range: {value} is not above 0.5 and below 1"
        ));
    }
    Ok(value)
}

fn to_u64(kind: &ValueKind) -> Result<u64, NumberError> {
    let invalid = |reason: &str| Err(NumberError::Invalid(reason.into()));
    match kind {
        ValueKind::U64(n) => Ok(*n),
        ValueKind::I64(n) => u64::try_from(*n).map_err(|_| NumberError::Negative),
        ValueKind::U128(n) => u64::try_from(*n).map_err(|_| NumberError::TooLarge),
        ValueKind::I128(n) if *n < 0 => Err(NumberError::Negative),
        ValueKind::I128(n) => u64::try_from(*n).map_err(|_| NumberError::TooLarge),
        ValueKind::String(s) => {
            let s = s.trim();
            if s.starts_with('-') && s.len() > 1 && s[1..].bytes().all(|b| b.is_ascii_digit()) {
                Err(NumberError::Negative)
            } else if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) {
                s.parse::<u64>().map_err(|_| NumberError::TooLarge)
            } else {
                invalid("not an integer")
            }
        }
        ValueKind::Float(_) => invalid("not an integer (no decimal point allowed)"),
        ValueKind::Boolean(_) => invalid("not an integer, got a boolean"),
        ValueKind::Nil => invalid("not an integer, got null"),
        ValueKind::Array(_) => invalid("expected a single integer, got a list"),
        ValueKind::Table(_) => invalid("expected a single integer, got a mapping"),
    }
}

fn to_bool(kind: &ValueKind) -> Result<bool, String> {
    match kind {
        ValueKind::Boolean(b) => Ok(*b),
        ValueKind::String(s) => match s.trim().to_ascii_lowercase().as_str() {
            "true" | "1" | "yes" | "on" => Ok(true),
            "false" | "0" | "no" | "off" => Ok(false),
            _ => Err("not a boolean".into()),
        },
        _ => Err("not a boolean".into()),
    }
}

/// CPU in millicores. A YAML integer is millicores (the Go program's unit). A string is a
/// Kubernetes quantity ("1" = one core), except that in env vars and flags, where every value
/// is a string, a bare integer stays millicores as it was for the Go program.
fn to_cpu_millis(kind: &ValueKind, source: &ValueSource) -> Result<u64, NumberError> {
    match kind {
        ValueKind::String(s) => {
            let s = s.trim();
            let bare_integer = !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
            if bare_integer && matches!(source, ValueSource::Env(_) | ValueSource::Flag(_)) {
                to_u64(kind)
            } else {
                Ok(quantity::parse_cpu_millis(s)?)
            }
        }
        ValueKind::Float(f) => Ok(quantity::parse_cpu_millis(&float_text(*f)?)?),
        other => to_u64(other),
    }
}

/// Memory in bytes: an integer, or a Kubernetes quantity string.
fn to_memory_bytes(kind: &ValueKind) -> Result<u64, NumberError> {
    match kind {
        ValueKind::String(s) => Ok(quantity::parse_memory_bytes(s.trim())?),
        ValueKind::Float(f) => Ok(quantity::parse_memory_bytes(&float_text(*f)?)?),
        other => to_u64(other),
    }
}

/// A YAML float (`1.5`, `1e9`) as quantity text; Rust prints the shortest exact form.
fn float_text(f: f64) -> Result<String, NumberError> {
    if f.is_finite() {
        Ok(f.to_string())
    } else {
        Err(NumberError::Invalid("not a finite number".into()))
    }
}

/// A list: a YAML list, or a comma-separated string (env vars, flags, or the file).
fn to_list(kind: &ValueKind) -> Result<Vec<String>, String> {
    let items = match kind {
        ValueKind::Array(items) => items
            .iter()
            .map(|v| to_text(&v.kind))
            .collect::<Result<Vec<_>, _>>()?,
        ValueKind::Table(_) => return Err("expected a list, got a mapping".into()),
        other => to_text(other)?
            .split(',')
            .map(|s| s.trim().to_string())
            .collect(),
    };
    Ok(items.into_iter().filter(|s| !s.is_empty()).collect())
}

/// A tracing filter, refusing bare words that are not levels: EnvFilter would take `warning`
/// or `verbose` as a target name and silently log nothing of kubescaler.
/// Taints that keep servers off a node kubescaler is draining (its cordon) or that is not
/// ready: servers tolerating them would land where they must not, and attrition would never end.
const FENCE_TAINTS: &[&str] = &[
    crate::model::FENCE_TAINT,
    "node.kubernetes.io/unschedulable",
    "node.kubernetes.io/not-ready",
    "node.kubernetes.io/unreachable",
];

fn refuse_fence_toleration(item: &str, toleration: &Toleration) -> Result<(), String> {
    let fence = FENCE_TAINTS.iter().find(|key| {
        toleration.tolerates(&crate::model::Taint {
            key: (**key).to_string(),
            value: String::new(),
            effect: crate::model::TaintEffect::NoSchedule,
        })
    });
    match fence {
        Some(key) => Err(format!(
            "{item:?} tolerates {key}:NoSchedule: servers would be placed on nodes kubescaler \
             cordoned to drain them (or on nodes not ready), so they would never empty"
        )),
        None => Ok(()),
    }
}

fn check_log_level(s: &str) -> Result<(), String> {
    if s.is_empty() {
        return Err("must not be empty".into());
    }
    EnvFilter::try_new(s).map_err(|e| e.to_string())?;
    for directive in s.split(',').map(str::trim).filter(|d| !d.is_empty()) {
        if directive.contains('=') || directive.contains('[') {
            continue;
        }
        if directive.parse::<LevelFilter>().is_err() {
            let levels = ["trace", "debug", "info", "warn", "error", "off"];
            let nearest = levels
                .iter()
                .min_by_key(|l| strsim::damerau_levenshtein(&directive.to_ascii_lowercase(), l))
                .copied()
                .unwrap_or("info");
            return Err(format!(
                "{directive:?} is not a level (did you mean {nearest:?}? a target needs a level: \
                 {directive}=debug)"
            ));
        }
    }
    Ok(())
}

/// A DNS label (RFC 1123), as namespace and Fleet names are.
fn is_dns_label(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 63
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        && name.starts_with(|c: char| c.is_ascii_alphanumeric())
        && name.ends_with(|c: char| c.is_ascii_alphanumeric())
}

/// Why the required keys have no default.
const WHY_CLUSTER: &str = "it names the cloud-side cluster whose pool is scaled";
const WHY_POOL: &str = "it names the cloud-side node pool that is resized";
const WHY_SELECTOR: &str = "it chooses the pool's nodes, and an empty selector would select every \
                            node of the cluster";
const WHY_LABEL: &str = "it identifies the game server pods, and a wrong label would make \
                         kubescaler think busy nodes are empty and delete them";

/// Turns the layered table into a typed, validated [`Config`], collecting every error.
struct Resolver<'a> {
    table: config::Map<String, LayerValue>,
    file: Option<&'a Path>,
    errors: Vec<ConfigError>,
    origins: BTreeMap<&'static str, ValueSource>,
    secrets: Vec<String>,
}

impl Resolver<'_> {
    /// The key's value and source; `None` when unset (null counts as unset).
    fn get(&mut self, key: &'static str) -> Option<(ValueKind, ValueSource)> {
        let value = self.table.get(key)?;
        if matches!(value.kind, ValueKind::Nil) {
            return None;
        }
        let source = match value.origin() {
            Some(ORIGIN_FILE) => ValueSource::File(
                self.file
                    .map(Path::to_path_buf)
                    .unwrap_or_else(|| DEFAULT_CONFIG_FILE.into()),
            ),
            Some(ORIGIN_ENV) => ValueSource::Env(env_var_name(key)),
            Some(ORIGIN_FLAG) => ValueSource::Flag(format!("--{key}")),
            _ => ValueSource::Default,
        };
        let kind = value.kind.clone();
        self.origins.insert(key, source.clone());
        Some((kind, source))
    }

    fn invalid(
        &mut self,
        key: &'static str,
        kind: &ValueKind,
        origin: ValueSource,
        reason: String,
    ) {
        self.errors.push(ConfigError::Invalid {
            key,
            value: show(key, kind),
            origin,
            reason,
            allowed: allowed_for(key),
        });
    }

    /// The key's value converted by `f`; an error (and `None`) when `f` refuses it.
    fn parsed<T>(
        &mut self,
        key: &'static str,
        f: impl FnOnce(&ValueKind, &ValueSource) -> Result<T, String>,
    ) -> Option<T> {
        let (kind, source) = self.get(key)?;
        match f(&kind, &source) {
            Ok(v) => Some(v),
            Err(reason) => {
                self.invalid(key, &kind, source, reason);
                None
            }
        }
    }

    /// A text value; empty counts as unset (the Go program's "leave empty").
    fn optional_text(&mut self, key: &'static str) -> Option<String> {
        self.parsed(key, |k, _| to_text(k))
            .filter(|s| !s.is_empty())
    }

    /// A required text value, checked by `check`.
    fn required<T>(
        &mut self,
        key: &'static str,
        why: &'static str,
        check: impl FnOnce(&str) -> Result<T, String>,
    ) -> Option<T> {
        if self.get(key).is_none() {
            self.errors.push(ConfigError::Missing { key, why });
            return None;
        }
        self.parsed(key, |k, _| {
            let text = to_text(k)?;
            if text.is_empty() {
                return Err(format!("must not be empty: {why}"));
            }
            check(&text)
        })
    }

    fn resolve(&mut self) -> Option<Config> {
        let provider = self.parsed("cloud-provider", |k, _| {
            let name = to_text(k)?;
            provider::lookup(&name)
                .map(|spec| (name, spec))
                .ok_or_else(|| "not a registered cloud provider".to_string())
        });

        let token = self.token(
            provider
                .as_ref()
                .map(|(name, spec)| (name.clone(), spec.needs_token)),
        );
        let (cloud_provider, spec) = provider.unzip();
        let (cloud_provider_token, cloud_provider_token_file) = token;

        let cluster_name = self.required("cluster-name", WHY_CLUSTER, |s| Ok(s.to_string()));
        let node_pool_name = self.required("node-pool-name", WHY_POOL, |s| Ok(s.to_string()));
        let provider_settings = self.provider_settings(provider::REGISTRY, spec);
        let node_selector = self.required("node-selector", WHY_SELECTOR, |s| {
            let selector: LabelSelector =
                s.parse().map_err(|e: selector::SelectorError| e.message)?;
            if selector.is_empty() {
                return Err(format!("must not be empty: {WHY_SELECTOR}"));
            }
            // The canonical form is what the API server will be sent and what is logged.
            Ok(selector.to_string())
        });

        let master_url = self.optional_text("cluster-kube-config-master-url");
        if let Some(url) = &master_url {
            let ok = ["http://", "https://"]
                .iter()
                .any(|scheme| url.len() > scheme.len() && url.starts_with(scheme));
            if !ok {
                let kind = ValueKind::String(url.clone());
                let source = self.origin_of("cluster-kube-config-master-url");
                self.invalid(
                    "cluster-kube-config-master-url",
                    &kind,
                    source,
                    "not an http(s) URL".into(),
                );
            }
        }
        let kube_config_path = self
            .optional_text("cluster-kube-config-path")
            .map(PathBuf::from);

        let minimum = self.parsed("minimum-node-pool-size", |k, _| {
            MINIMUM_NODE_POOL_SIZE_RANGE.check_u32(to_u64(k))
        });
        let maximum = self.parsed("maximum-node-pool-size", |k, _| {
            MAXIMUM_NODE_POOL_SIZE_RANGE.check_u32(to_u64(k))
        });
        if let (Some(min), Some(max)) = (minimum, maximum) {
            if min > max {
                let max_source = self.origin_of("maximum-node-pool-size");
                let min_source = self.origin_of("minimum-node-pool-size");
                self.invalid(
                    "minimum-node-pool-size",
                    &ValueKind::U64(min.into()),
                    min_source,
                    format!("greater than maximum-node-pool-size {max} (from {max_source})"),
                );
            }
        }

        let label_name = self.required("server-pod-label-name", WHY_LABEL, |s| {
            selector::validate_label_key(s)?;
            Ok(s.to_string())
        });
        let label_value = self.required("server-pod-label-value", WHY_LABEL, |s| {
            selector::validate_label_value(s)?;
            Ok(s.to_string())
        });

        let buffer = self.parsed("buffer-slot-size", |k, _| {
            BUFFER_SLOT_SIZE_RANGE.check_u32(to_u64(k))
        });
        let buffer_policy =
            self.parsed("buffer-policy", |k, _| to_text(k)?.parse::<BufferPolicy>());
        let target_instant_start = self.parsed("target-instant-start", |k, _| to_share(k));
        let buffer_schedule = self.parsed("buffer-schedule", |k, _| {
            to_text(k)?.parse::<crate::schedule::BufferSchedule>()
        });
        let tick = self.parsed("scale-loop-tick-sec", |k, _| {
            SCALE_LOOP_TICK_SEC_RANGE.check(to_u64(k))
        });
        let cpu = self.parsed("server-cpu-resource-request", |k, s| {
            SERVER_CPU_RESOURCE_REQUEST_RANGE.check(to_cpu_millis(k, s))
        });
        let memory = self.parsed("server-memory-resource-request", |k, _| {
            SERVER_MEMORY_RESOURCE_REQUEST_RANGE.check(to_memory_bytes(k))
        });
        let tolerations = self
            .parsed("server-pod-tolerations", |k, _| {
                to_list(k)?
                    .iter()
                    .map(|item| {
                        let toleration = item.parse::<Toleration>()?;
                        refuse_fence_toleration(item, &toleration)?;
                        Ok(toleration)
                    })
                    .collect::<Result<Vec<_>, String>>()
            })
            // Unset (no error recorded): no tolerations.
            .or_else(|| self.get("server-pod-tolerations").is_none().then(Vec::new));
        let server_source =
            self.parsed("server-source", |k, _| to_text(k)?.parse::<ServerSource>());
        let agones = self.agones_settings(server_source);
        let delay_after_add = self.parsed("scale-down-delay-after-add-sec", |k, _| {
            SCALE_DOWN_HOLD_SEC_RANGE.check(to_u64(k))
        });
        let unneeded = self.parsed("scale-down-unneeded-sec", |k, _| {
            SCALE_DOWN_HOLD_SEC_RANGE.check(to_u64(k))
        });
        if server_source == Some(ServerSource::Agones)
            && buffer_schedule.as_ref().is_some_and(|s| !s.is_empty())
        {
            if let Some((kind, from)) = self.get("buffer-schedule") {
                self.invalid(
                    "buffer-schedule",
                    &kind,
                    from,
                    "with server-source agones the buffer comes from agones-buffer; a schedule \
                     needs server-source pods"
                        .into(),
                );
            }
        }
        if buffer_policy == Some(BufferPolicy::Target)
            && server_source == Some(ServerSource::Agones)
        {
            if let Some((kind, from)) = self.get("buffer-policy") {
                self.invalid(
                    "buffer-policy",
                    &kind,
                    from,
                    "target sizing measures server pods, and with server-source agones the \
                     buffer comes from agones-buffer"
                        .into(),
                );
            }
        }
        let expiration = self.parsed("empty-node-expiration-sec", |k, _| {
            EMPTY_NODE_EXPIRATION_SEC_RANGE.check(to_u64(k))
        });
        let boot_timeout = self.parsed("node-boot-timeout-sec", |k, _| {
            NODE_BOOT_TIMEOUT_SEC_RANGE.check(to_u64(k))
        });
        let expected_boot = self.parsed("expected-node-boot-sec", |k, _| {
            EXPECTED_NODE_BOOT_SEC_RANGE.check(to_u64(k))
        });
        let dry_run = self.parsed("dry-run", |k, _| to_bool(k));
        let log_format = self.parsed("log-format", |k, _| to_text(k)?.parse::<LogFormat>());
        let log_level = self.parsed("log-level", |k, _| {
            let s = to_text(k)?;
            check_log_level(&s)?;
            Ok(s)
        });
        let node_template = self.node_template();
        let http_listen_address = self.parsed("http-listen-address", |k, _| {
            to_text(k)?
                .parse::<std::net::SocketAddr>()
                .map_err(|e| e.to_string())
        });
        let leader_election = self.parsed("leader-election", |k, _| to_bool(k));
        let lease_namespace = self.optional_text("leader-election-namespace");
        if let Some(ns) = &lease_namespace {
            self.check_object_name("leader-election-namespace", ns);
        }
        let lease_name = self.parsed("leader-election-lease-name", |k, _| to_text(k));
        if let Some(name) = &lease_name {
            self.check_object_name("leader-election-lease-name", name);
        }
        let lease_duration = self.parsed("leader-election-lease-duration-sec", |k, _| {
            LEADER_ELECTION_LEASE_DURATION_SEC_RANGE.check(to_u64(k))
        });
        let identity = self.optional_text("leader-election-identity");

        let (tolerations_ok, template_ok) = (tolerations.is_some(), node_template.is_some());
        if !tolerations_ok || !template_ok {
            return None;
        }
        Some(Config {
            cloud_provider: cloud_provider?,
            cloud_provider_token,
            cloud_provider_token_file,
            cluster_name: cluster_name?,
            node_pool_name: node_pool_name?,
            provider_settings: provider_settings?,
            node_selector: node_selector?,
            cluster_kube_config_master_url: master_url,
            cluster_kube_config_path: kube_config_path,
            minimum_node_pool_size: minimum?,
            maximum_node_pool_size: maximum?,
            server_pod_label_name: label_name?,
            server_pod_label_value: label_value?,
            buffer_slot_size: buffer?,
            buffer_policy: buffer_policy?,
            target_instant_start: target_instant_start?,
            buffer_schedule: buffer_schedule?,
            scale_loop_tick_sec: tick?,
            server_cpu_resource_request: cpu?,
            server_memory_resource_request: memory,
            server_pod_tolerations: tolerations?,
            server_source: server_source?,
            agones: agones?,
            scale_down_delay_after_add_sec: delay_after_add?,
            scale_down_unneeded_sec: unneeded?,
            empty_node_expiration_sec: expiration?,
            node_boot_timeout_sec: boot_timeout?,
            expected_node_boot_sec: expected_boot?,
            dry_run: dry_run?,
            log_format: log_format?,
            log_level: log_level?,
            node_template: node_template?,
            http_listen_address: http_listen_address?,
            leader_election: leader_election?,
            leader_election_namespace: lease_namespace,
            leader_election_lease_name: lease_name?,
            leader_election_lease_duration_sec: lease_duration?,
            leader_election_identity: identity,
        })
    }

    /// The `agones-*` settings, each validated; set while `server-source` is not `agones` they
    /// are refused, as they would do nothing.
    fn agones_settings(&mut self, source: Option<ServerSource>) -> Option<AgonesSettings> {
        let mut valid = true;
        if source == Some(ServerSource::Pods) {
            for key in KEYS.iter().copied().filter(|k| k.starts_with("agones-")) {
                // Defaults are not a choice the operator made.
                if let Some((kind, from)) =
                    self.get(key).filter(|(_, f)| *f != ValueSource::Default)
                {
                    valid = false;
                    self.invalid(
                        key,
                        &kind,
                        from,
                        "an Agones setting, but server-source is \"pods\": it would be ignored"
                            .into(),
                    );
                }
            }
        }
        // Fleet names are object names and may hold dots; namespace names may not.
        let names = |s: &mut Self, key: &'static str, dots: bool| {
            s.parsed(key, |k, _| {
                let items = to_list(k)?;
                for item in &items {
                    if !is_dns_label(&item.replace('.', if dots { "-" } else { "." })) {
                        return Err(format!(
                            "{item:?} is not a {} name (lower-case letters, digits and '-'{}, \
                             at most 63)",
                            if dots { "Fleet" } else { "namespace" },
                            if dots { " or '.'" } else { "" }
                        ));
                    }
                }
                Ok(items)
            })
            .or_else(|| s.get(key).is_none().then(Vec::new))
        };
        let namespaces = names(self, "agones-namespaces", false);
        let fleets = names(self, "agones-fleets", true);
        let per_minute = self.parsed("agones-compaction-per-minute", |k, _| {
            AGONES_COMPACTION_PER_MINUTE_RANGE.check_u32(to_u64(k))
        });
        let buffer = self.parsed("agones-buffer", |k, _| to_text(k)?.parse::<AgonesBuffer>());
        if !valid {
            return None;
        }
        Some(AgonesSettings {
            namespaces: namespaces?,
            fleets: fleets?,
            compaction_per_minute: per_minute?,
            buffer: buffer?,
        })
    }

    /// The settings the providers of `registry` declare: the selected provider's, validated,
    /// with the default of each one set nowhere; `None` when one is invalid. A setting of
    /// another registered provider is refused when set, as it would silently do nothing (a
    /// leftover from a provider switch, or a typo in `cloud-provider`); while no valid
    /// provider is selected, each setting given is still checked with its own validator.
    fn provider_settings(
        &mut self,
        registry: &'static [provider::ProviderSpec],
        selected: Option<&'static provider::ProviderSpec>,
    ) -> Option<BTreeMap<String, String>> {
        let mut values = BTreeMap::new();
        let mut valid = true;
        for spec in registry {
            let ours = selected.is_some_and(|s| s.name == spec.name);
            for setting in spec.settings {
                match (self.get(setting.key), selected) {
                    (None, _) => {
                        if ours {
                            self.origins.insert(setting.key, ValueSource::Default);
                            values.insert(setting.key.to_string(), setting.default.to_string());
                        }
                    }
                    (Some((kind, source)), Some(other)) if !ours => {
                        valid = false;
                        let reason = format!(
                            "a setting of cloud-provider {}, but cloud-provider is {:?}: it would \
                             be ignored",
                            spec.name, other.name
                        );
                        self.invalid(setting.key, &kind, source, reason);
                    }
                    (Some((kind, source)), _) => {
                        match to_text(&kind).and_then(|text| (setting.validate)(&text)) {
                            Ok(value) if ours => {
                                values.insert(setting.key.to_string(), value);
                            }
                            Ok(_) => {}
                            Err(reason) => {
                                valid = false;
                                self.invalid(setting.key, &kind, source, reason);
                            }
                        }
                    }
                }
            }
        }
        valid.then_some(values)
    }

    /// Records an error unless `name` is a valid Kubernetes object name (DNS-1123 subdomain).
    fn check_object_name(&mut self, key: &'static str, name: &str) {
        let valid = !name.is_empty()
            && name.len() <= 253
            && name
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.')
            && name.starts_with(|c: char| c.is_ascii_alphanumeric())
            && name.ends_with(|c: char| c.is_ascii_alphanumeric());
        if !valid {
            let source = self.origin_of(key);
            self.invalid(
                key,
                &ValueKind::String(name.to_string()),
                source,
                "not a valid Kubernetes object name".into(),
            );
        }
    }

    fn origin_of(&self, key: &'static str) -> ValueSource {
        self.origins
            .get(key)
            .cloned()
            .unwrap_or(ValueSource::Default)
    }

    /// The token and token-file keys: at most one set; the file read; present when the
    /// provider needs it.
    fn token(
        &mut self,
        provider: Option<(String, bool)>,
    ) -> (Option<SecretToken>, Option<PathBuf>) {
        let token = self
            .parsed(TOKEN_KEY, |k, _| {
                let t = to_text(k)?;
                if !t.is_empty() && !t.chars().all(|c| c.is_ascii_graphic()) {
                    // Likely a pasted "Bearer xyz" or a stray character; the cloud would reject it.
                    return Err("contains a space, control or non-ASCII character".into());
                }
                Ok(t)
            })
            .filter(|t| !t.is_empty());
        let token_error = self
            .errors
            .iter()
            .any(|e| matches!(e, ConfigError::Invalid { key, .. } if *key == TOKEN_KEY));
        let file = self
            .optional_text("cloud-provider-token-file")
            .map(PathBuf::from);

        let mut problem = token_error;
        let secret = match (&token, &file) {
            (Some(_), Some(_)) => {
                self.errors.push(ConfigError::TokenConflict {
                    token_origin: self.origin_of(TOKEN_KEY),
                    file_origin: self.origin_of("cloud-provider-token-file"),
                });
                problem = true;
                None
            }
            (Some(t), None) => Some(SecretToken::new(t.clone())),
            (None, Some(path)) => match self.read_token_file(path) {
                Some(t) => {
                    self.origins
                        .insert(TOKEN_KEY, ValueSource::TokenFile(path.clone()));
                    Some(t)
                }
                None => {
                    problem = true;
                    None
                }
            },
            (None, None) => None,
        };
        if let Some((name, true)) = provider {
            if secret.is_none() && !problem {
                self.errors
                    .push(ConfigError::TokenMissing { provider: name });
            }
        }
        (secret, file)
    }

    fn read_token_file(&mut self, path: &Path) -> Option<SecretToken> {
        const KEY: &str = "cloud-provider-token-file";
        let source = self.origin_of(KEY);
        let kind = ValueKind::String(path.display().to_string());
        let reason = match std::fs::read_to_string(path) {
            Ok(content) => {
                push_secret(&mut self.secrets, &content);
                let token = content.trim();
                if token.is_empty() {
                    "the file is empty".to_string()
                } else if !token.chars().all(|c| c.is_ascii_graphic()) {
                    "the token in the file contains a space, control or non-ASCII character"
                        .to_string()
                } else {
                    return Some(SecretToken::new(token));
                }
            }
            Err(e) => format!("cannot read it: {e}"),
        };
        self.invalid(KEY, &kind, source, reason);
        None
    }

    /// `Some(None)`: no template; `Some(Some(t))`: a valid one; `None`: an error was recorded.
    fn node_template(&mut self) -> Option<Option<NodeTemplate>> {
        const KEYS3: [&str; 3] = [
            "node-template-cpu",
            "node-template-memory",
            "node-template-pods",
        ];
        let present: Vec<&'static str> = KEYS3
            .into_iter()
            .filter(|k| self.get(k).is_some())
            .collect();
        let cpu = self.parsed("node-template-cpu", |k, s| {
            NODE_TEMPLATE_CPU_RANGE.check(to_cpu_millis(k, s))
        });
        let memory = self.parsed("node-template-memory", |k, _| {
            NODE_TEMPLATE_MEMORY_RANGE.check(to_memory_bytes(k))
        });
        let pods = self.parsed("node-template-pods", |k, _| {
            NODE_TEMPLATE_PODS_RANGE.check_u32(to_u64(k))
        });
        if present.is_empty() {
            return Some(None);
        }
        if present.len() < KEYS3.len() {
            let set = present
                .iter()
                .map(|k| format!("{k} (from {})", self.origin_of(k)))
                .collect();
            let missing = KEYS3.into_iter().filter(|k| !present.contains(k)).collect();
            self.errors
                .push(ConfigError::PartialNodeTemplate { set, missing });
            return None;
        }
        Some(Some(NodeTemplate {
            cpu_millis: cpu?,
            memory_bytes: memory?,
            pods: pods?,
        }))
    }
}

impl Config {
    /// This replica's identity: `leader-election-identity`, else `$HOSTNAME` (the pod name in
    /// a Deployment), else `kubescaler-<pid>`.
    pub fn identity(&self) -> String {
        self.leader_election_identity
            .clone()
            .or_else(|| std::env::var("HOSTNAME").ok().filter(|h| !h.is_empty()))
            .unwrap_or_else(|| format!("kubescaler-{}", std::process::id()))
    }

    /// kubescaler's own namespace (Lease, pool-wide Events): `leader-election-namespace`, else
    /// the pod's service account namespace, else `default`.
    pub fn own_namespace(&self) -> String {
        const SA_NAMESPACE: &str = "/var/run/secrets/kubernetes.io/serviceaccount/namespace";
        self.leader_election_namespace
            .clone()
            .or_else(|| {
                std::fs::read_to_string(SA_NAMESPACE)
                    .ok()
                    .map(|s| s.trim().to_string())
                    .filter(|s| !s.is_empty())
            })
            .unwrap_or_else(|| "default".into())
    }

    /// The validated value of the selected provider's setting `key` (set or defaulted).
    pub fn provider_setting(&self, key: &str) -> Option<&str> {
        self.provider_settings.get(key).map(String::as_str)
    }

    /// What one server pod requests, as the planner compares it with free resources.
    pub fn slot_request(&self) -> Resources {
        Resources {
            cpu_millis: self.server_cpu_resource_request,
            memory_bytes: self.server_memory_resource_request.unwrap_or(0),
        }
    }

    /// Every key in kebab-case with its effective value, as YAML, the token as `<redacted>`.
    /// CPU is in millicores and memory in bytes, so the output loads back to the same values.
    pub fn to_redacted_yaml(&self) -> String {
        render_yaml(self, None)
    }

    /// `(key, value)` for every key, in [`KEYS`] order, the token redacted; a provider setting
    /// is null unless its provider is the selected one.
    fn redacted_entries(&self) -> Vec<(&'static str, serde_yaml::Value)> {
        let mut core: BTreeMap<&'static str, serde_yaml::Value> =
            self.core_entries().into_iter().collect();
        // Like another provider's settings, the Agones settings are null outside Agones mode
        // (set, they would be refused there).
        if self.server_source == ServerSource::Pods {
            core.retain(|key, _| !key.starts_with("agones-"));
        }
        KEYS.iter()
            .map(|key| {
                let value = core.remove(key).unwrap_or_else(|| {
                    self.provider_setting(key)
                        .map_or(serde_yaml::Value::Null, |v| {
                            serde_yaml::Value::String(v.to_string())
                        })
                });
                (*key, value)
            })
            .collect()
    }

    /// `(key, value)` for every core key, the token redacted.
    fn core_entries(&self) -> Vec<(&'static str, serde_yaml::Value)> {
        use serde_yaml::Value as Y;
        let s = |v: &str| Y::String(v.to_string());
        let opt_s = |v: Option<String>| v.map_or(Y::Null, Y::String);
        let n = |v: u64| Y::Number(v.into());
        let opt_n = |v: Option<u64>| v.map_or(Y::Null, |v| Y::Number(v.into()));
        let template = self.node_template;
        vec![
            ("cloud-provider", s(&self.cloud_provider)),
            (
                "cloud-provider-token",
                opt_s(self.cloud_provider_token.as_ref().map(|_| REDACTED.into())),
            ),
            (
                "cloud-provider-token-file",
                opt_s(
                    self.cloud_provider_token_file
                        .as_ref()
                        .map(|p| p.display().to_string()),
                ),
            ),
            ("cluster-name", s(&self.cluster_name)),
            ("node-pool-name", s(&self.node_pool_name)),
            ("node-selector", s(&self.node_selector)),
            (
                "cluster-kube-config-master-url",
                opt_s(self.cluster_kube_config_master_url.clone()),
            ),
            (
                "cluster-kube-config-path",
                opt_s(
                    self.cluster_kube_config_path
                        .as_ref()
                        .map(|p| p.display().to_string()),
                ),
            ),
            (
                "minimum-node-pool-size",
                n(self.minimum_node_pool_size.into()),
            ),
            (
                "maximum-node-pool-size",
                n(self.maximum_node_pool_size.into()),
            ),
            ("server-pod-label-name", s(&self.server_pod_label_name)),
            ("server-pod-label-value", s(&self.server_pod_label_value)),
            ("buffer-slot-size", n(self.buffer_slot_size.into())),
            ("buffer-policy", s(self.buffer_policy.as_str())),
            (
                "target-instant-start",
                Y::Number(self.target_instant_start.into()),
            ),
            ("buffer-schedule", s(&self.buffer_schedule.to_string())),
            ("scale-loop-tick-sec", n(self.scale_loop_tick_sec)),
            (
                "server-cpu-resource-request",
                n(self.server_cpu_resource_request),
            ),
            (
                "server-memory-resource-request",
                opt_n(self.server_memory_resource_request),
            ),
            (
                "server-pod-tolerations",
                Y::Sequence(
                    self.server_pod_tolerations
                        .iter()
                        .map(|t| Y::String(t.to_string()))
                        .collect(),
                ),
            ),
            ("server-source", s(self.server_source.as_str())),
            (
                "agones-namespaces",
                Y::Sequence(
                    self.agones
                        .namespaces
                        .iter()
                        .map(|v| Y::String(v.clone()))
                        .collect(),
                ),
            ),
            (
                "agones-fleets",
                Y::Sequence(
                    self.agones
                        .fleets
                        .iter()
                        .map(|v| Y::String(v.clone()))
                        .collect(),
                ),
            ),
            (
                "agones-compaction-per-minute",
                n(self.agones.compaction_per_minute.into()),
            ),
            ("agones-buffer", s(self.agones.buffer.as_str())),
            (
                "scale-down-delay-after-add-sec",
                n(self.scale_down_delay_after_add_sec),
            ),
            ("scale-down-unneeded-sec", n(self.scale_down_unneeded_sec)),
            (
                "empty-node-expiration-sec",
                n(self.empty_node_expiration_sec),
            ),
            ("node-boot-timeout-sec", n(self.node_boot_timeout_sec)),
            ("expected-node-boot-sec", n(self.expected_node_boot_sec)),
            ("dry-run", Y::Bool(self.dry_run)),
            ("log-format", s(self.log_format.as_str())),
            ("log-level", s(&self.log_level)),
            ("node-template-cpu", opt_n(template.map(|t| t.cpu_millis))),
            (
                "node-template-memory",
                opt_n(template.map(|t| t.memory_bytes)),
            ),
            (
                "node-template-pods",
                opt_n(template.map(|t| u64::from(t.pods))),
            ),
            (
                "http-listen-address",
                Y::String(self.http_listen_address.to_string()),
            ),
            ("leader-election", Y::Bool(self.leader_election)),
            (
                "leader-election-namespace",
                self.leader_election_namespace
                    .as_deref()
                    .map_or(Y::Null, |v| Y::String(v.to_string())),
            ),
            (
                "leader-election-lease-name",
                s(&self.leader_election_lease_name),
            ),
            (
                "leader-election-lease-duration-sec",
                n(self.leader_election_lease_duration_sec),
            ),
            (
                "leader-election-identity",
                self.leader_election_identity
                    .as_deref()
                    .map_or(Y::Null, |v| Y::String(v.to_string())),
            ),
        ]
    }
}

impl fmt::Display for Config {
    /// The redacted YAML form.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_redacted_yaml())
    }
}

/// The YAML text of `config`, optionally with a `# source` comment on each key's line.
fn render_yaml(config: &Config, origins: Option<&BTreeMap<&'static str, ValueSource>>) -> String {
    let mut out = String::new();
    for (key, value) in config.redacted_entries() {
        let mut mapping = serde_yaml::Mapping::new();
        mapping.insert(serde_yaml::Value::String(key.to_string()), value);
        // Serializing plain strings, numbers and lists cannot fail; keep going if it ever does.
        let text = serde_yaml::to_string(&mapping).unwrap_or_else(|_| format!("{key}: null\n"));
        match origins {
            None => out.push_str(&text),
            Some(origins) => {
                let comment = origins
                    .get(key)
                    .map_or_else(|| "not set".to_string(), |s| s.to_string());
                let (first, rest) = text.split_once('\n').unwrap_or((&text, ""));
                out.push_str(&format!("{first}  # {comment}\n{rest}"));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::provider::{NodePoolProvider, ProviderError, ProviderSetting, ProviderSpec};

    #[test]
    fn config_keys_are_unique_and_hold_every_provider_setting_once() {
        let mut seen = std::collections::BTreeSet::new();
        for key in KEYS {
            assert!(seen.insert(*key), "{key} is declared twice");
        }
        for (spec, setting) in provider::settings() {
            assert_eq!(
                KEYS.iter().filter(|k| **k == setting.key).count(),
                1,
                "{} of {}",
                setting.key,
                spec.name
            );
            assert!(allowed_for(setting.key).contains(setting.allowed));
        }
    }

    #[test]
    fn config_ranges_are_well_formed_and_hold_the_defaults() {
        let defaults = default_layer().values;
        for (key, range) in ranges() {
            assert!(KEYS.contains(&key), "{key}");
            assert!(range.min <= range.max, "{key}");
            if let Some(value) = defaults.get(key) {
                let n = to_u64(&value.kind).expect("numeric default");
                assert!(range.contains(n), "default {n} of {key} is outside {range}");
            }
        }
        for key in [
            "minimum-node-pool-size",
            "maximum-node-pool-size",
            "buffer-slot-size",
            "node-template-pods",
        ] {
            let range = range_of(key).expect("range");
            assert!(u32::try_from(range.max).is_ok(), "{key} is stored as u32");
        }
    }

    fn no_build(_: &Config) -> Result<Box<dyn NodePoolProvider>, ProviderError> {
        Err(ProviderError::Config {
            provider: "test",
            message: "not buildable".into(),
        })
    }

    fn starts_with_a(text: &str) -> Result<String, String> {
        if text.starts_with('a') {
            Ok(text.to_uppercase())
        } else {
            Err("must start with a".into())
        }
    }

    const fn setting(key: &'static str, default: &'static str) -> ProviderSetting {
        ProviderSetting {
            key,
            default,
            value_name: "X",
            help: "test setting",
            allowed: "text starting with a",
            validate: starts_with_a,
        }
    }

    static TWO_PROVIDERS: &[ProviderSpec] = &[
        ProviderSpec {
            name: "alpha",
            needs_token: false,
            settings: &[setting("alpha-endpoint", "a-default")],
            identity_annotations: &[],
            build: no_build,
        },
        ProviderSpec {
            name: "beta",
            needs_token: false,
            settings: &[setting("beta-endpoint", "a-beta")],
            identity_annotations: &[],
            build: no_build,
        },
    ];

    /// A resolver over env vars `(key, value)` given by key.
    fn resolver(values: &[(&str, &str)]) -> Resolver<'static> {
        let mut layer = Layer::new();
        for (key, value) in values {
            layer.set(ORIGIN_ENV, key, ValueKind::String(value.to_string()));
        }
        let table = match config::Config::builder()
            .add_source(layer)
            .build()
            .expect("layers")
            .cache
            .kind
        {
            ValueKind::Table(table) => table,
            _ => config::Map::new(),
        };
        Resolver {
            table,
            file: None,
            errors: Vec::new(),
            origins: BTreeMap::new(),
            secrets: Vec::new(),
        }
    }

    #[test]
    fn config_provider_settings_of_the_selected_provider_are_validated_and_defaulted() {
        let alpha = &TWO_PROVIDERS[0];
        let mut r = resolver(&[]);
        let values = r.provider_settings(TWO_PROVIDERS, Some(alpha));
        assert_eq!(
            values,
            Some(BTreeMap::from([(
                "alpha-endpoint".to_string(),
                "a-default".to_string()
            )]))
        );
        assert_eq!(r.origins.get("alpha-endpoint"), Some(&ValueSource::Default));

        let mut r = resolver(&[("alpha-endpoint", "abc")]);
        let values = r.provider_settings(TWO_PROVIDERS, Some(alpha));
        assert_eq!(
            values
                .and_then(|v| v.get("alpha-endpoint").cloned())
                .as_deref(),
            Some("ABC")
        );

        let mut r = resolver(&[("alpha-endpoint", "xyz")]);
        assert_eq!(r.provider_settings(TWO_PROVIDERS, Some(alpha)), None);
        match r.errors.as_slice() {
            [ConfigError::Invalid {
                key: "alpha-endpoint",
                value,
                origin,
                reason,
                ..
            }] => {
                assert_eq!(value, "\"xyz\"");
                assert_eq!(origin, &ValueSource::Env("ALPHA_ENDPOINT".into()));
                assert_eq!(reason, "must start with a");
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn config_a_setting_of_another_provider_is_refused_not_ignored() {
        let alpha = &TWO_PROVIDERS[0];
        let mut r = resolver(&[("beta-endpoint", "abc")]);
        assert_eq!(r.provider_settings(TWO_PROVIDERS, Some(alpha)), None);
        match r.errors.as_slice() {
            [ConfigError::Invalid {
                key: "beta-endpoint",
                origin,
                reason,
                ..
            }] => {
                assert_eq!(origin, &ValueSource::Env("BETA_ENDPOINT".into()));
                assert!(
                    reason.contains(
                        "a setting of cloud-provider beta, but cloud-provider is \"alpha\""
                    ),
                    "{reason}"
                );
            }
            other => panic!("{other:?}"),
        }
        // With no valid provider selected, a given setting is still checked on its own.
        let mut r = resolver(&[("beta-endpoint", "xyz")]);
        assert_eq!(r.provider_settings(TWO_PROVIDERS, None), None);
        assert_eq!(r.errors.len(), 1, "{:?}", r.errors);
    }
}
