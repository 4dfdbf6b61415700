//! The one declaration of every core configuration key: its name, what its value is, its
//! default, its flag's placeholder and its meaning. The loader's defaults and ranges, the
//! env var names, the command-line flags and their help, `check-config`'s order and the
//! README's table all derive from [`CORE_KEYS_HEAD`] and [`CORE_KEYS_TAIL`]; the tests
//! compare `config.yaml.example`, the README and the Helm chart's values with it. A
//! provider's settings are declared by the provider ([`crate::provider::Setting`]).

use super::*;

/// What a key's value is.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum KeyKind {
    /// Text: a name, a path, a selector, a list, an enumeration checked by the loader.
    Text,
    /// The cloud token: never shown (a flag's value is wrapped at parse time).
    Secret,
    /// A whole number in this range (the loader refuses any other).
    Number(Range),
    /// A share in (0.5, 1), written `0.99` or `99%`.
    Share,
    /// `true` or `false`; the flag is `--key` or `--key=false`.
    Switch,
}

/// A key's built-in default.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum KeyDefault {
    /// None: unset unless given (what unset means is in the key's help).
    None,
    /// None on purpose: the loader refuses a configuration without it.
    Required,
    /// This text.
    Text(&'static str),
    /// This number.
    Number(u64),
    /// This share.
    Share(f64),
    /// This switch.
    Switch(bool),
}

/// One configuration key.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Key {
    /// The key as the file writes it; the flag is `--name`, the env var its UPPER_SNAKE form.
    pub name: &'static str,
    /// What its value is.
    pub kind: KeyKind,
    /// Its built-in default.
    pub default: KeyDefault,
    /// How the docs show the default when the default itself does not say it (`all`, `the
    /// pod's, else \`default\``); `None`: derived from [`Key::default`].
    pub default_doc: Option<&'static str>,
    /// The flag's placeholder in `--help` (`N`, `SECONDS`).
    pub value_name: &'static str,
    /// What it means, in Markdown (the README's words; `--help` shows it plain).
    pub help: &'static str,
}

/// The core keys before the provider settings (the cloud and the pool).
pub const CORE_KEYS_HEAD: &[Key] = &[
    Key {
        name: "cloud-provider",
        kind: KeyKind::Text,
        default: KeyDefault::Text("digitalocean"),
        default_doc: None,
        value_name: "NAME",
        help: "registered cloud provider owning the pool",
    },
    Key {
        name: "cloud-provider-token",
        kind: KeyKind::Secret,
        default: KeyDefault::None,
        default_doc: None,
        value_name: "TOKEN",
        help: "cloud API token (prefer the env var or a token file; never printed)",
    },
    Key {
        name: "cloud-provider-token-file",
        kind: KeyKind::Text,
        default: KeyDefault::None,
        default_doc: None,
        value_name: "PATH",
        help: "file holding the token, e.g. a mounted Secret",
    },
    Key {
        name: "cluster-name",
        kind: KeyKind::Text,
        default: KeyDefault::Required,
        default_doc: None,
        value_name: "NAME",
        help: "cloud-side cluster name",
    },
    Key {
        name: "node-pool-name",
        kind: KeyKind::Text,
        default: KeyDefault::Required,
        default_doc: None,
        value_name: "NAME",
        help: "cloud-side node pool name",
    },
];

/// The core keys after the provider settings.
pub const CORE_KEYS_TAIL: &[Key] = &[
    Key {
        name: "node-selector",
        kind: KeyKind::Text,
        default: KeyDefault::Required,
        default_doc: None,
        value_name: "SELECTOR",
        help: "label selector of the pool's nodes (`role=game-servers`); empty is refused",
    },
    Key {
        name: "cluster-kube-config-master-url",
        kind: KeyKind::Text,
        default: KeyDefault::None,
        default_doc: None,
        value_name: "URL",
        help: "API server URL overriding the kubeconfig's",
    },
    Key {
        name: "cluster-kube-config-path",
        kind: KeyKind::Text,
        default: KeyDefault::None,
        default_doc: None,
        value_name: "PATH",
        help: "kubeconfig path; empty: in-cluster config in a pod, else `KUBECONFIG` / `~/.kube/config`",
    },
    Key {
        name: "minimum-node-pool-size",
        kind: KeyKind::Number(MINIMUM_NODE_POOL_SIZE_RANGE),
        default: KeyDefault::Number(2),
        default_doc: None,
        value_name: "N",
        help: "smallest pool size",
    },
    Key {
        name: "maximum-node-pool-size",
        kind: KeyKind::Number(MAXIMUM_NODE_POOL_SIZE_RANGE),
        default: KeyDefault::Number(3),
        default_doc: None,
        value_name: "N",
        help: "largest pool size",
    },
    Key {
        name: "server-pod-label-name",
        kind: KeyKind::Text,
        default: KeyDefault::Required,
        default_doc: None,
        value_name: "NAME",
        help: "label name marking game server pods",
    },
    Key {
        name: "server-pod-label-value",
        kind: KeyKind::Text,
        default: KeyDefault::Required,
        default_doc: None,
        value_name: "VALUE",
        help: "label value marking game server pods",
    },
    Key {
        name: "buffer-slot-size",
        kind: KeyKind::Number(BUFFER_SLOT_SIZE_RANGE),
        default: KeyDefault::Number(4),
        default_doc: None,
        value_name: "N",
        help: "free server slots to keep (with `buffer-policy: target`, the least kept)",
    },
    Key {
        name: "buffer-policy",
        kind: KeyKind::Text,
        default: KeyDefault::Text("fixed"),
        default_doc: None,
        value_name: "POLICY",
        help: "`fixed` (`buffer-slot-size`) or `target` (sized each pass to meet `target-instant-start`: see [Buffer from a start-time target](#buffer-from-a-start-time-target))",
    },
    Key {
        name: "target-instant-start",
        kind: KeyKind::Share,
        default: KeyDefault::Share(0.99),
        default_doc: None,
        value_name: "SHARE",
        help: "with `buffer-policy: target`: share of matches that must find a free slot at once (`0.99` or `99%`, above 0.5 and below 1)",
    },
    Key {
        name: "buffer-schedule",
        kind: KeyKind::Text,
        default: KeyDefault::Text(""),
        default_doc: Some("none"),
        value_name: "WINDOWS",
        help: "time-of-day windows, `;`-separated, each `DAYS HH:MM-HH:MM TIME-ZONE buffer=N` or `target=SHARE`; the first that holds sets the buffer (see [Buffer schedule](#buffer-schedule))",
    },
    Key {
        name: "scale-loop-tick-sec",
        kind: KeyKind::Number(SCALE_LOOP_TICK_SEC_RANGE),
        default: KeyDefault::Number(10),
        default_doc: None,
        value_name: "SECONDS",
        help: "seconds between passes when nothing changes",
    },
    Key {
        name: "server-cpu-resource-request",
        kind: KeyKind::Number(SERVER_CPU_RESOURCE_REQUEST_RANGE),
        default: KeyDefault::Number(1000),
        default_doc: None,
        value_name: "CPU",
        help: "CPU of one server: integer millicores or a quantity (`\"1\"`, `\"500m\"`)",
    },
    Key {
        name: "server-memory-resource-request",
        kind: KeyKind::Number(SERVER_MEMORY_RESOURCE_REQUEST_RANGE),
        default: KeyDefault::None,
        default_doc: None,
        value_name: "MEMORY",
        help: "memory of one server (`1Gi`); when set a slot needs both",
    },
    Key {
        name: "server-pod-tolerations",
        kind: KeyKind::Text,
        default: KeyDefault::None,
        default_doc: None,
        value_name: "LIST",
        help: "taints the servers tolerate: `key=value:Effect`, `key:Effect`, `key`, `*`",
    },
    Key {
        name: "server-source",
        kind: KeyKind::Text,
        default: KeyDefault::Text("pods"),
        default_doc: None,
        value_name: "SOURCE",
        help: "`pods` (server-labelled pods are live matches) or `agones` (GameServers: see [Agones](#agones))",
    },
    Key {
        name: "agones-namespaces",
        kind: KeyKind::Text,
        default: KeyDefault::None,
        default_doc: Some("all"),
        value_name: "LIST",
        help: "Agones mode: namespaces whose GameServers count toward the buffer and may be compacted",
    },
    Key {
        name: "agones-fleets",
        kind: KeyKind::Text,
        default: KeyDefault::None,
        default_doc: Some("all"),
        value_name: "LIST",
        help: "Agones mode: Fleets whose GameServers count toward the buffer and may be compacted",
    },
    Key {
        name: "agones-compaction-per-minute",
        kind: KeyKind::Number(AGONES_COMPACTION_PER_MINUTE_RANGE),
        default: KeyDefault::Number(30),
        default_doc: None,
        value_name: "COUNT",
        help: "Agones mode: Ready GameServers compaction may delete per minute; `0` turns it off",
    },
    Key {
        name: "agones-buffer",
        kind: KeyKind::Text,
        default: KeyDefault::Text("fixed"),
        default_doc: None,
        value_name: "POLICY",
        help: "Agones mode: `fixed` or `fleet-autoscalers` (buffer from the FleetAutoscalers' Buffer policies)",
    },
    Key {
        name: "scale-down-delay-after-add-sec",
        kind: KeyKind::Number(SCALE_DOWN_HOLD_SEC_RANGE),
        default: KeyDefault::Number(DEFAULT_SCALE_DOWN_DELAY_AFTER_ADD_SEC),
        default_doc: None,
        value_name: "SECONDS",
        help: "seconds after the newest pool node was created during which nothing is cordoned",
    },
    Key {
        name: "scale-down-unneeded-sec",
        kind: KeyKind::Number(SCALE_DOWN_HOLD_SEC_RANGE),
        default: KeyDefault::Number(DEFAULT_SCALE_DOWN_UNNEEDED_SEC),
        default_doc: None,
        value_name: "SECONDS",
        help: "seconds a surplus of at least a node must hold before one node is cordoned (then the hold starts again); `0` cordons the whole surplus at once",
    },
    Key {
        name: "empty-node-expiration-sec",
        kind: KeyKind::Number(EMPTY_NODE_EXPIRATION_SEC_RANGE),
        default: KeyDefault::Number(120),
        default_doc: None,
        value_name: "SECONDS",
        help: "seconds from kubescaler's cordon until an empty node may be deleted",
    },
    Key {
        name: "node-boot-timeout-sec",
        kind: KeyKind::Number(NODE_BOOT_TIMEOUT_SEC_RANGE),
        default: KeyDefault::Number(600),
        default_doc: None,
        value_name: "SECONDS",
        help: "seconds a new node counts as capacity on its way (registered and not Ready, or not registered yet); a pool instance not registered by then is deleted through the cloud",
    },
    Key {
        name: "expected-node-boot-sec",
        kind: KeyKind::Number(EXPECTED_NODE_BOOT_SEC_RANGE),
        default: KeyDefault::Number(180),
        default_doc: None,
        value_name: "SECONDS",
        help: "with `buffer-policy: target`: seconds from a grow to a Ready node, until kubescaler has measured one",
    },
    Key {
        name: "dry-run",
        kind: KeyKind::Switch,
        default: KeyDefault::Switch(false),
        default_doc: None,
        value_name: "BOOL",
        help: "plan and log every action, change nothing",
    },
    Key {
        name: "log-format",
        kind: KeyKind::Text,
        default: KeyDefault::Text("text"),
        default_doc: None,
        value_name: "FORMAT",
        help: "`text` or `json` (stderr)",
    },
    Key {
        name: "log-level",
        kind: KeyKind::Text,
        default: KeyDefault::Text("info"),
        default_doc: None,
        value_name: "FILTER",
        help: "`trace`…`error`, `off`, or directives like `info,kubescaler=debug`",
    },
    Key {
        name: "node-template-cpu",
        kind: KeyKind::Number(NODE_TEMPLATE_CPU_RANGE),
        default: KeyDefault::None,
        default_doc: None,
        value_name: "CPU",
        help: "allocatable CPU of a new node (plans from an empty pool)",
    },
    Key {
        name: "node-template-memory",
        kind: KeyKind::Number(NODE_TEMPLATE_MEMORY_RANGE),
        default: KeyDefault::None,
        default_doc: None,
        value_name: "MEMORY",
        help: "allocatable memory of a new node",
    },
    Key {
        name: "node-template-pods",
        kind: KeyKind::Number(NODE_TEMPLATE_PODS_RANGE),
        default: KeyDefault::None,
        default_doc: None,
        value_name: "N",
        help: "allocatable pods of a new node",
    },
    Key {
        name: "http-listen-address",
        kind: KeyKind::Text,
        default: KeyDefault::Text("0.0.0.0:8080"),
        default_doc: None,
        value_name: "ADDR",
        help: "address of `/healthz`, `/readyz`, `/metrics`",
    },
    Key {
        name: "leader-election",
        kind: KeyKind::Switch,
        default: KeyDefault::Switch(true),
        default_doc: None,
        value_name: "BOOL",
        help: "elect a leader on a Lease so only one replica acts",
    },
    Key {
        name: "leader-election-namespace",
        kind: KeyKind::Text,
        default: KeyDefault::None,
        default_doc: Some("the pod's, else `default`"),
        value_name: "NAMESPACE",
        help: "namespace of the Lease (and of ScaleUp Events)",
    },
    Key {
        name: "leader-election-lease-name",
        kind: KeyKind::Text,
        default: KeyDefault::Text("kubescaler"),
        default_doc: None,
        value_name: "NAME",
        help: "name of the Lease",
    },
    Key {
        name: "leader-election-lease-duration-sec",
        kind: KeyKind::Number(LEADER_ELECTION_LEASE_DURATION_SEC_RANGE),
        default: KeyDefault::Number(15),
        default_doc: None,
        value_name: "SECONDS",
        help: "seconds a leader holds the Lease without renewing",
    },
    Key {
        name: "leader-election-identity",
        kind: KeyKind::Text,
        default: KeyDefault::None,
        default_doc: Some("`$HOSTNAME`"),
        value_name: "ID",
        help: "this replica's identity in the Lease",
    },
];

/// Every core key, head then tail (the provider settings stand between them in [`KEYS`]).
pub fn core_keys() -> impl Iterator<Item = &'static Key> {
    CORE_KEYS_HEAD.iter().chain(CORE_KEYS_TAIL)
}

/// The core key called `name`.
pub fn core_key(name: &str) -> Option<&'static Key> {
    core_keys().find(|k| k.name == name)
}

impl Key {
    /// Its allowed range, for a number.
    pub fn range(&self) -> Option<Range> {
        match self.kind {
            KeyKind::Number(range) => Some(range),
            _ => None,
        }
    }

    /// Its env var (`BUFFER_SLOT_SIZE`).
    pub fn env(&self) -> String {
        env_var_name(self.name)
    }

    /// Whether its value is the secret token.
    pub fn is_secret(&self) -> bool {
        self.kind == KeyKind::Secret
    }

    /// The default as the docs show it, in Markdown: `` `4` ``, `**required**`, `—` (none).
    pub fn default_markdown(&self) -> String {
        if let Some(doc) = self.default_doc {
            return doc.to_string();
        }
        match self.default {
            KeyDefault::None => "—".to_string(),
            KeyDefault::Required => "**required**".to_string(),
            KeyDefault::Text(t) => format!("`{t}`"),
            KeyDefault::Number(n) => format!("`{n}`"),
            KeyDefault::Share(s) => format!("`{s}`"),
            KeyDefault::Switch(b) => format!("`{b}`"),
        }
    }

    /// Its line in `--help`: the meaning, the env var, the default.
    pub fn flag_help(&self) -> String {
        let default = match self.default {
            KeyDefault::None if self.default_doc.is_none() => String::new(),
            KeyDefault::Required => " (required)".to_string(),
            _ => format!(" [default: {}]", plain(&self.default_markdown())),
        };
        format!("{} [env: {}]{default}", plain(self.help), self.env())
    }

    /// The default as the loader layers it, if there is one.
    pub(super) fn default_value(&self) -> Option<ValueKind> {
        match self.default {
            KeyDefault::None | KeyDefault::Required => None,
            KeyDefault::Text(t) => Some(ValueKind::String(t.to_string())),
            KeyDefault::Number(n) => Some(ValueKind::U64(n)),
            KeyDefault::Share(s) => Some(ValueKind::Float(s)),
            KeyDefault::Switch(b) => Some(ValueKind::Boolean(b)),
        }
    }
}

/// Markdown as plain text: no backticks, `[text](#anchor)` as `text`.
fn plain(markdown: &str) -> String {
    let mut out = String::with_capacity(markdown.len());
    let mut rest = markdown;
    while let Some(open) = rest.find('[') {
        let Some(close) = rest[open..].find("](").map(|i| open + i) else {
            break;
        };
        let Some(end) = rest[close..].find(')').map(|i| close + i) else {
            break;
        };
        out.push_str(&rest[..open]);
        out.push_str(&rest[open + 1..close]);
        rest = &rest[end + 1..];
    }
    out.push_str(rest);
    out.replace('`', "")
}

/// The README's table of the core keys (header included), one row per key in [`KEYS`] order.
pub fn readme_table() -> String {
    let mut out =
        String::from("| key | default | env var | meaning |\n| --- | --- | --- | --- |\n");
    for key in core_keys() {
        out.push_str(&format!(
            "| `{}` | {} | `{}` | {} |\n",
            key.name,
            key.default_markdown(),
            key.env(),
            key.help
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn markdown_reads_plain_in_help() {
        assert_eq!(
            plain("`fixed` or `target` (see [Buffer schedule](#buffer-schedule))"),
            "fixed or target (see Buffer schedule)"
        );
        assert_eq!(plain("a [b] c"), "a [b] c");
    }

    #[test]
    fn every_core_key_is_declared_once() {
        let mut names: Vec<&str> = core_keys().map(|k| k.name).collect();
        let n = names.len();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), n, "a key is declared twice");
    }
}
