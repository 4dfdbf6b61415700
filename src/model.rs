//! The compact view of the cluster the planner works on: what the scheduler needs to know of
//! each node and pod, and nothing more (the watch caches hold only this).

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use jiff::Timestamp;
use serde::Serialize;

/// Annotation holding the RFC 3339 UTC time kubescaler cordoned a node (the Go version's key).
pub const TIMESTAMP_ANNOTATION: &str = "kubescaler/timestamp";
/// Annotation marking that kubescaler itself cordoned the node. Without it, a cordoned node
/// belongs to someone else and is never touched.
pub const CORDONED_BY_ANNOTATION: &str = "kubescaler/cordoned-by";
/// Value of [`CORDONED_BY_ANNOTATION`].
pub const CORDONED_BY_VALUE: &str = "kubescaler";
/// The field manager of every write kubescaler makes to a node. The API server records, in
/// `metadata.managedFields`, which manager last set `spec.unschedulable`; a node counts as
/// cordoned by kubescaler only while that manager is this one, so a person's `kubectl cordon`
/// (manager `kubectl-cordon`, `kubectl-patch`, `kubectl-edit`...) can never be mistaken for
/// kubescaler's, whatever annotations an earlier cordon left behind.
pub const FIELD_MANAGER: &str = "kubescaler";
/// Key of kubescaler's own NoSchedule taint, put on a node while it is being deleted: the
/// fence. A person's uncordon does not lift it, so no server lands between the last check and
/// the DELETE.
pub const FENCE_TAINT: &str = "kubescaler/deleting";
/// Annotation: RFC 3339 time kubescaler fenced the node to delete it.
pub const DELETION_REQUESTED_ANNOTATION: &str = "kubescaler/deletion-requested-at";
/// Annotation: RFC 3339 time the cloud accepted the node's deletion. Kept in the cluster, so a
/// restarted or newly elected replica neither deletes the node twice nor forgets it is going.
pub const DELETION_ACCEPTED_ANNOTATION: &str = "kubescaler/deletion-accepted-at";
/// Every annotation kubescaler writes; none is left behind on a node it gives back.
pub const KUBESCALER_ANNOTATIONS: &[&str] = &[
    CORDONED_BY_ANNOTATION,
    TIMESTAMP_ANNOTATION,
    DELETION_REQUESTED_ANNOTATION,
    DELETION_ACCEPTED_ANNOTATION,
];

/// Where kubescaler learns which workloads are game servers (`server-source`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ServerSource {
    /// Pods carrying the server label are game servers; every one is a live match.
    #[default]
    Pods,
    /// Agones GameServers: Allocated and Reserved ones are live matches, Ready ones are warm
    /// slots, and their pods are told apart by `agones.dev/role=gameserver`.
    Agones,
}

impl ServerSource {
    /// The config value naming it.
    pub fn as_str(self) -> &'static str {
        match self {
            ServerSource::Pods => "pods",
            ServerSource::Agones => "agones",
        }
    }
}

impl FromStr for ServerSource {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "pods" => Ok(ServerSource::Pods),
            "agones" => Ok(ServerSource::Agones),
            other => Err(format!("unknown server source {other:?}")),
        }
    }
}

impl fmt::Display for ServerSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Schedulable resource amounts, in the scheduler's units.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize)]
pub struct Resources {
    /// CPU in millicores.
    pub cpu_millis: u64,
    /// Memory in bytes.
    pub memory_bytes: u64,
}

impl Resources {
    /// Component-wise sum, saturating.
    pub fn saturating_add(self, other: Resources) -> Resources {
        Resources {
            cpu_millis: self.cpu_millis.saturating_add(other.cpu_millis),
            memory_bytes: self.memory_bytes.saturating_add(other.memory_bytes),
        }
    }
    /// Component-wise difference, floored at zero.
    pub fn saturating_sub(self, other: Resources) -> Resources {
        Resources {
            cpu_millis: self.cpu_millis.saturating_sub(other.cpu_millis),
            memory_bytes: self.memory_bytes.saturating_sub(other.memory_bytes),
        }
    }
    /// Component-wise maximum.
    pub fn max(self, other: Resources) -> Resources {
        Resources {
            cpu_millis: self.cpu_millis.max(other.cpu_millis),
            memory_bytes: self.memory_bytes.max(other.memory_bytes),
        }
    }
}

/// Taint effect, as on a Node.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
pub enum TaintEffect {
    /// New pods that do not tolerate it are not scheduled.
    NoSchedule,
    /// Scheduler tries to avoid the node; does not block a fit.
    PreferNoSchedule,
    /// Not scheduled, and running pods that do not tolerate it are evicted.
    NoExecute,
}

impl FromStr for TaintEffect {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "NoSchedule" => Ok(Self::NoSchedule),
            "PreferNoSchedule" => Ok(Self::PreferNoSchedule),
            "NoExecute" => Ok(Self::NoExecute),
            other => Err(format!(
                "unknown taint effect {other:?} (allowed: NoSchedule, PreferNoSchedule, NoExecute)"
            )),
        }
    }
}

impl fmt::Display for TaintEffect {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::NoSchedule => "NoSchedule",
            Self::PreferNoSchedule => "PreferNoSchedule",
            Self::NoExecute => "NoExecute",
        })
    }
}

/// A node taint.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize)]
pub struct Taint {
    /// Taint key.
    pub key: String,
    /// Taint value (may be empty).
    pub value: String,
    /// Taint effect.
    pub effect: TaintEffect,
}

/// A toleration of the server pods, in the scheduler's semantics: with `value: None` it is
/// operator `Exists`; an empty key with `Exists` tolerates every taint; no effect matches all.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Toleration {
    /// Taint key it matches; empty with `value: None` means every key.
    pub key: String,
    /// `Some(v)`: operator Equal with value v; `None`: operator Exists.
    pub value: Option<String>,
    /// Effect it matches; `None` matches every effect.
    pub effect: Option<TaintEffect>,
}

impl Toleration {
    /// Whether this toleration tolerates `taint` (the scheduler's `ToleratesTaint`).
    pub fn tolerates(&self, taint: &Taint) -> bool {
        if let Some(effect) = self.effect {
            if effect != taint.effect {
                return false;
            }
        }
        match &self.value {
            None => self.key.is_empty() || self.key == taint.key,
            Some(v) => self.key == taint.key && *v == taint.value,
        }
    }
}

impl FromStr for Toleration {
    type Err = String;
    /// Parses `*`, `key`, `key:Effect`, `key=value` or `key=value:Effect`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim();
        if s == "*" {
            return Ok(Toleration {
                key: String::new(),
                value: None,
                effect: None,
            });
        }
        let (kv, effect) = match s.rsplit_once(':') {
            Some((kv, e)) => (kv, Some(e.parse::<TaintEffect>()?)),
            None => (s, None),
        };
        let (key, value) = match kv.split_once('=') {
            Some((k, v)) => (k, Some(v.to_string())),
            None => (kv, None),
        };
        if key.is_empty() {
            return Err(format!(
                "toleration {s:?} has no key (allowed: *, key, key:Effect, key=value, key=value:Effect)"
            ));
        }
        Ok(Toleration {
            key: key.to_string(),
            value,
            effect,
        })
    }
}

impl fmt::Display for Toleration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.key.is_empty() && self.value.is_none() && self.effect.is_none() {
            return f.write_str("*");
        }
        f.write_str(&self.key)?;
        if let Some(v) = &self.value {
            write!(f, "={v}")?;
        }
        if let Some(e) = self.effect {
            write!(f, ":{e}")?;
        }
        Ok(())
    }
}

impl Serialize for Toleration {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// One selector-matched node, as the planner sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeState {
    /// Node name.
    pub name: String,
    /// `spec.providerID` (e.g. `digitalocean://123`).
    pub provider_id: Option<String>,
    /// Labels the provider uses to map the node to its cloud instance.
    pub labels: BTreeMap<String, String>,
    /// The node's annotations that a provider identifies its instance by (each registered
    /// provider's [`crate::provider::ProviderSpec::identity_annotations`]), e.g. Cluster API's
    /// `cluster.x-k8s.io/machine`; no others are kept.
    pub identity_annotations: BTreeMap<String, String>,
    /// `status.allocatable` cpu and memory.
    pub allocatable: Resources,
    /// `status.allocatable` pods.
    pub allocatable_pods: u32,
    /// Ready condition is True.
    pub ready: bool,
    /// `spec.unschedulable` (cordoned).
    pub unschedulable: bool,
    /// NoSchedule/NoExecute/PreferNoSchedule taints.
    pub taints: Vec<Taint>,
    /// Whether kubescaler cordoned it and still owns the cordon: `spec.unschedulable` is
    /// true, [`CORDONED_BY_ANNOTATION`] is set, and [`FIELD_MANAGER`] is the manager that last
    /// set `spec.unschedulable` (see the ownership rule in the README's "Safety rules").
    pub cordoned_by_kubescaler: bool,
    /// Carries any mark of kubescaler's (one of [`KUBESCALER_ANNOTATIONS`] or the
    /// [`FENCE_TAINT`]): on a schedulable node these are left-overs to clear.
    pub has_kubescaler_marks: bool,
    /// Raw [`DELETION_ACCEPTED_ANNOTATION`] value: the cloud accepted its deletion then.
    pub deletion_accepted: Option<String>,
    /// Raw [`TIMESTAMP_ANNOTATION`] value, parsed by the planner (a bad one is a warning).
    pub cordon_timestamp: Option<String>,
    /// `metadata.creationTimestamp`.
    pub created: Option<Timestamp>,
}

/// One pod that occupies a node or waits for one (terminal pods are not kept).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PodState {
    /// `namespace/name`.
    pub key: String,
    /// `spec.nodeName`, `None` while unbound.
    pub node: Option<String>,
    /// Effective request as the scheduler computes it.
    pub requests: Resources,
    /// Carries the server label.
    pub is_server: bool,
    /// Owned by a DaemonSet: every new node will run one too.
    pub is_daemon: bool,
    /// `namespace/name` of the Agones GameServer it is the pod of (labels
    /// `agones.dev/role=gameserver`, `agones.dev/gameserver=<name>`), if any.
    pub game_server: Option<String>,
}

/// Everything the planner needs from Kubernetes at one instant.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ClusterSnapshot {
    /// Selector-matched nodes.
    pub nodes: Vec<NodeState>,
    /// Pods bound to those nodes, plus unbound server pods (and GameServer pods).
    pub pods: Vec<PodState>,
    /// Agones GameServers (empty unless `server-source: agones`), sorted by key.
    pub game_servers: Vec<crate::agones::GameServerInfo>,
    /// The FleetAutoscalers' Buffer policies (empty unless `agones-buffer: fleet-autoscalers`).
    pub fleet_buffers: Vec<crate::agones::FleetBuffer>,
}

/// A cloud instance's lifecycle, as the provider reports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum InstanceStatus {
    /// Ordered, being created.
    Creating,
    /// Up (it may or may not have registered as a node yet).
    Running,
    /// Being drained or deleted: going away, never capacity, never deleted again.
    Deleting,
    /// A state the provider does not map.
    Unknown,
}

/// One instance of the cloud pool.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CloudNode {
    /// The cloud's id of the instance (what a DELETE names).
    pub id: String,
    /// Its name (the Kubernetes node name once registered; may be empty while creating).
    pub name: String,
    /// Lifecycle.
    pub status: InstanceStatus,
    /// The provider's own word for the state (for messages).
    pub state: String,
    /// The `spec.providerID` its Kubernetes node will carry, where the cloud says it.
    pub provider_id: Option<String>,
    /// When the cloud created it.
    pub created: Option<Timestamp>,
}

/// What a new node of the pool can hold, when the cloud says it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NodeCapacity {
    /// Allocatable cpu and memory.
    pub allocatable: Resources,
    /// Allocatable pods.
    pub pods: u32,
}

/// The cloud's side of the pool at one instant: the NodeGroup view.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CloudPool {
    /// Target node count.
    pub target: u32,
    /// Its instances, with their status.
    pub nodes: Vec<CloudNode>,
    /// A new node's capacity, where the cloud offers it.
    pub template: Option<NodeCapacity>,
}

/// The cloud pool matched against the registered nodes: the planner's cloud input.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CloudView {
    /// Target node count.
    pub target: u32,
    /// Status of each selector-matched node that belongs to the pool, by node name. A
    /// selector-matched node missing here is not in the cloud pool.
    pub members: BTreeMap<String, InstanceStatus>,
    /// Instances of the pool that no registered node matches.
    pub unregistered: Vec<CloudNode>,
    /// A new node's capacity, where the cloud offers it.
    pub template: Option<NodeCapacity>,
}

impl CloudView {
    /// The view of a cloud that is taken at its word about the selector: every
    /// selector-matched node is a running member, and the target's excess over them is
    /// ordered, not yet listed (no creation time: incoming until it registers). For tests and
    /// simulations whose cloud has no separate node list.
    pub fn trusting(snapshot: &ClusterSnapshot, target: u32) -> CloudView {
        let members: BTreeMap<String, InstanceStatus> = snapshot
            .nodes
            .iter()
            .map(|n| (n.name.clone(), InstanceStatus::Running))
            .collect();
        let ordered = target.saturating_sub(members.len() as u32);
        CloudView {
            target,
            members,
            unregistered: (0..ordered)
                .map(|i| CloudNode {
                    id: format!("ordered-{i}"),
                    name: String::new(),
                    status: InstanceStatus::Creating,
                    state: "ordered".into(),
                    provider_id: None,
                    created: None,
                })
                .collect(),
            template: None,
        }
    }
}

/// `2d 3h 4m 5s`, leaving out zero parts; `0s` for zero. Below two days, hours are not
/// folded into days (`24h`, `26h 3m`).
pub fn human_secs(secs: u64) -> String {
    if secs == 0 {
        return "0s".to_string();
    }
    let days = if secs >= 2 * 86_400 { secs / 86_400 } else { 0 };
    let parts = [
        (days, "d"),
        (secs / 3_600 - days * 24, "h"),
        (secs % 3_600 / 60, "m"),
        (secs % 60, "s"),
    ];
    parts
        .iter()
        .filter(|(n, _)| *n > 0)
        .map(|(n, u)| format!("{n}{u}"))
        .collect::<Vec<_>>()
        .join(" ")
}
