//! The scaling decision: a pure function from a snapshot of the pool, the provider's target
//! size, the time and the settings to a [`Plan`] of actions, each with its reason.
//!
//! Rules it keeps (see REFERENCE-BEHAVIOUR.md for the defects they fix):
//! - slots are counted per node, like the scheduler: only whole servers count (defect 2);
//! - nodes still provisioning count as incoming capacity, and the target never goes down
//!   (defect 3), also from an empty pool (defect 4);
//! - pending server pods are demand (defect 12);
//! - only nodes kubescaler cordoned itself are uncordoned or deleted (defect 8);
//! - a node is deleted only when cordoned by kubescaler, empty of servers, expired, and the pool
//!   stays at or above its minimum; a bad mark is a warning for that node only (defect 9).

use std::collections::{BTreeSet, HashMap};
use std::fmt;

use jiff::Timestamp;
use serde::Serialize;

use crate::agones::{AgonesBuffer, AgonesSettings, GameServerInfo};
use crate::buffer::{calibrate, target_buffer, BufferPolicy, StartsSeen, TargetInputs};
use crate::config::{Config, NodeTemplate};
use crate::model::{
    CloudNode, CloudView, ClusterSnapshot, InstanceStatus, NodeState, Resources, ServerSource,
    TaintEffect, Toleration,
};
use crate::provider::NodeRef;
use crate::schedule::{BufferSchedule, Override};
use crate::scheduling::{admission_default_tolerations, slots_in, tolerates_all};

/// The settings the planner uses, taken from [`Config`].
#[derive(Clone, Debug, PartialEq)]
pub struct PlannerConfig {
    /// Smallest pool size.
    pub min_nodes: u32,
    /// Largest pool size.
    pub max_nodes: u32,
    /// Free slots to keep.
    pub buffer: u32,
    /// What one server requests.
    pub slot: Resources,
    /// Taints the server pods tolerate.
    pub tolerations: Vec<Toleration>,
    /// Seconds from kubescaler's cordon until an empty node may be deleted.
    pub empty_node_expiration_sec: u64,
    /// Seconds a registered, not-Ready node counts as booting.
    pub node_boot_timeout_sec: u64,
    /// Shape of a new node, when no node is there to learn it from.
    pub node_template: Option<NodeTemplate>,
    /// Where game servers are learnt from.
    pub server_source: ServerSource,
    /// The Agones settings (used with [`ServerSource::Agones`]).
    pub agones: AgonesSettings,
    /// How the buffer is sized; with [`BufferPolicy::Target`], `buffer` is the floor.
    pub buffer_policy: BufferPolicy,
    /// The share of matches that must start at once ([`BufferPolicy::Target`]).
    pub target_instant_start: f64,
    /// Seconds from a grow to a Ready node until the loop has measured one.
    pub expected_node_boot_sec: u64,
    /// `scale-loop-tick-sec`: part of the lead time of a grow.
    pub tick_sec: u64,
    /// Seconds after the newest pool node was created during which nothing is cordoned.
    pub scale_down_delay_after_add_sec: u64,
    /// Seconds a surplus of at least a node must hold before a node is cordoned.
    pub scale_down_unneeded_sec: u64,
    /// Time-of-day windows that set the buffer or the target instead of the policy.
    pub buffer_schedule: BufferSchedule,
}

/// What the loop measured and remembers from earlier passes, handed to the planner as plain
/// values so that the plan stays a pure function of its inputs.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Observed {
    /// Server pods first seen per second (recent, smoothed); `None` before it is known.
    pub arrivals_per_sec: Option<f64>,
    /// Servers ending on schedulable nodes per second.
    pub departures_per_sec: Option<f64>,
    /// The events the two rates were measured from ([`crate::buffer::Expected::evidence`]);
    /// `(0, 0)`, read as exact, when not known.
    pub evidence: (f64, f64),
    /// Recent percentile of the seconds from a grow to its node being Ready, once measured.
    pub lead_sec: Option<u64>,
    /// The surplus the pool has held so far (the previous plan's [`PoolSummary::surplus`]).
    pub surplus: Option<HeldSurplus>,
    /// This pass's matches: first seen, and how many found no slot.
    pub starts: StartsSeen,
    /// The target policy's calibration so far (the previous plan's [`PoolSummary::ln_ease`]).
    pub ln_ease: f64,
    /// The share of the last hour's matches that started at once, once enough were seen.
    pub instant_share: Option<f64>,
}

/// A surplus of whole nodes over the buffer, remembered across passes: scale-down cordons
/// only what has held for `scale-down-unneeded-sec`, and only as many nodes as the surplus
/// never fell below in that time (a dip to one node means one, not the peak's five).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HeldSurplus {
    /// When the surplus began (or its last cordon was made).
    pub since: Timestamp,
    /// The fewest surplus nodes seen since then.
    pub fewest_nodes: u32,
}

impl From<&Config> for PlannerConfig {
    fn from(c: &Config) -> Self {
        PlannerConfig {
            min_nodes: c.minimum_node_pool_size,
            max_nodes: c.maximum_node_pool_size,
            buffer: c.buffer_slot_size,
            slot: c.slot_request(),
            tolerations: c.server_pod_tolerations.clone(),
            empty_node_expiration_sec: c.empty_node_expiration_sec,
            node_boot_timeout_sec: c.node_boot_timeout_sec,
            node_template: c.node_template,
            server_source: c.server_source,
            agones: c.agones.clone(),
            buffer_policy: c.buffer_policy,
            target_instant_start: c.target_instant_start,
            expected_node_boot_sec: c.expected_node_boot_sec,
            tick_sec: c.scale_loop_tick_sec,
            scale_down_delay_after_add_sec: c.scale_down_delay_after_add_sec,
            scale_down_unneeded_sec: c.scale_down_unneeded_sec,
            buffer_schedule: c.buffer_schedule.clone(),
        }
    }
}

/// One step of a plan.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "action", rename_all = "kebab-case")]
pub enum Action {
    /// Make a node kubescaler cordoned schedulable again.
    Uncordon {
        /// Node name.
        node: String,
        /// Why.
        reason: String,
    },
    /// Raise the pool's target size.
    Grow {
        /// The provider's target now.
        from: u32,
        /// The new target.
        to: u32,
        /// Why.
        reason: String,
    },
    /// Cordon a surplus node and mark it as kubescaler's.
    Cordon {
        /// Node name.
        node: String,
        /// Why.
        reason: String,
    },
    /// Delete an expired, empty node kubescaler cordoned.
    Delete {
        /// The node.
        #[serde(skip)]
        node: NodeRef,
        /// Why.
        reason: String,
    },
    /// Remove kubescaler's marks from a schedulable node (a person uncordoned it).
    ClearMarks {
        /// Node name.
        node: String,
        /// Why.
        reason: String,
    },
    /// Delete, through the cloud, a pool instance that never registered as a node (it holds
    /// no server: nothing can run on a node that is not there).
    DeleteInstance {
        /// The instance.
        #[serde(skip)]
        instance: CloudNode,
        /// Why.
        reason: String,
    },
    /// Agones mode: delete the Ready GameServers of a surplus node kubescaler cordoned, each
    /// only if still as read (an allocation racing the delete wins), so that their Fleet
    /// recreates them on schedulable nodes and this node can empty.
    Compact {
        /// Node name.
        node: String,
        /// The Ready GameServers to delete, with the resourceVersion they were read at.
        #[serde(skip)]
        game_servers: Vec<GameServerInfo>,
        /// Why.
        reason: String,
    },
}

/// The kind of an [`Action`], for metrics and logs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ActionKind {
    /// [`Action::Uncordon`].
    Uncordon,
    /// [`Action::Grow`].
    Grow,
    /// [`Action::Cordon`].
    Cordon,
    /// [`Action::Delete`].
    Delete,
    /// [`Action::ClearMarks`].
    ClearMarks,
    /// [`Action::DeleteInstance`].
    DeleteInstance,
    /// [`Action::Compact`].
    Compact,
}

impl ActionKind {
    /// Every kind, for metrics that start each at zero.
    pub const ALL: [ActionKind; 7] = [
        ActionKind::Uncordon,
        ActionKind::Grow,
        ActionKind::Cordon,
        ActionKind::Delete,
        ActionKind::ClearMarks,
        ActionKind::DeleteInstance,
        ActionKind::Compact,
    ];

    /// Lower-case name.
    pub fn as_str(self) -> &'static str {
        match self {
            ActionKind::Uncordon => "uncordon",
            ActionKind::Grow => "grow",
            ActionKind::Cordon => "cordon",
            ActionKind::Delete => "delete",
            ActionKind::ClearMarks => "clear-marks",
            ActionKind::DeleteInstance => "delete-instance",
            ActionKind::Compact => "compact",
        }
    }
}

impl Action {
    /// Its kind.
    pub fn kind(&self) -> ActionKind {
        match self {
            Action::Uncordon { .. } => ActionKind::Uncordon,
            Action::Grow { .. } => ActionKind::Grow,
            Action::Cordon { .. } => ActionKind::Cordon,
            Action::Delete { .. } => ActionKind::Delete,
            Action::ClearMarks { .. } => ActionKind::ClearMarks,
            Action::DeleteInstance { .. } => ActionKind::DeleteInstance,
            Action::Compact { .. } => ActionKind::Compact,
        }
    }
    /// Why the planner chose it.
    pub fn reason(&self) -> &str {
        match self {
            Action::Uncordon { reason, .. }
            | Action::Grow { reason, .. }
            | Action::Cordon { reason, .. }
            | Action::Delete { reason, .. }
            | Action::ClearMarks { reason, .. }
            | Action::DeleteInstance { reason, .. }
            | Action::Compact { reason, .. } => reason,
        }
    }
    /// The node it concerns, if any.
    pub fn node(&self) -> Option<&str> {
        match self {
            Action::Uncordon { node, .. }
            | Action::Cordon { node, .. }
            | Action::ClearMarks { node, .. }
            | Action::Compact { node, .. } => Some(node),
            Action::Delete { node, .. } => Some(&node.name),
            Action::DeleteInstance { instance, .. } => {
                Some(instance.name.as_str()).filter(|n| !n.is_empty())
            }
            Action::Grow { .. } => None,
        }
    }
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Action::Grow { from, to, reason } => write!(f, "grow pool {from} -> {to}: {reason}"),
            Action::DeleteInstance { instance, reason } => {
                write!(f, "delete instance {}: {reason}", instance.id)
            }
            other => write!(
                f,
                "{} node {}: {}",
                other.kind().as_str(),
                other.node().unwrap_or_default(),
                other.reason()
            ),
        }
    }
}

/// What the planner saw, for logs and metrics.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct PoolSummary {
    /// Provider's target size before the plan.
    pub target_size: u32,
    /// Selector-matched nodes registered in Kubernetes.
    pub registered_nodes: u32,
    /// Ready, schedulable nodes whose slots count.
    pub active_nodes: u32,
    /// Registered, not yet Ready nodes within the boot timeout.
    pub booting_nodes: u32,
    /// Target minus registered nodes: ordered, not yet registered.
    pub provisioning_nodes: u32,
    /// Not Ready past the boot timeout.
    pub not_ready_nodes: u32,
    /// Cordoned by kubescaler.
    pub cordoned_by_kubescaler: u32,
    /// Cordoned by someone else: never touched.
    pub cordoned_by_others: u32,
    /// Being deleted (the cloud says so, or kubescaler's accepted-deletion mark is recent).
    pub deleting_nodes: u32,
    /// Selector-matched nodes that are not in the cloud pool: ignored.
    pub outside_pool_nodes: u32,
    /// Pool instances that did not register within the boot timeout: not counted.
    pub stuck_instances: u32,
    /// Free slots on active nodes.
    pub free_slots: u32,
    /// Slots expected from booting and provisioning nodes.
    pub incoming_slots: u32,
    /// Unbound server pods.
    pub pending_servers: u32,
    /// Server pods bound to pool nodes (Agones mode: live matches, Allocated or Reserved,
    /// and any server the planner cannot tell is not one).
    pub running_servers: u32,
    /// Agones mode: Ready GameServers in scope on active nodes (warm slots).
    pub ready_game_servers: u32,
    /// Agones mode: in-scope GameServers on active nodes still starting.
    pub starting_game_servers: u32,
    /// Agones mode: in-scope GameServer pods waiting for a node.
    pub pending_game_servers: u32,
    /// free + incoming - pending.
    pub available_slots: i64,
    /// The buffer to keep.
    pub buffer: u32,
    /// How the buffer was sized, when not the fixed `buffer-slot-size`.
    pub buffer_reason: Option<String>,
    /// Slots of one new, empty node, if known.
    pub slots_per_new_node: Option<u32>,
    /// The surplus of whole nodes over the buffer and since when it has held: fed back to
    /// the next pass as [`Observed::surplus`]. Restarts when a node is cordoned, so that each
    /// cordon waits for a surplus that held.
    #[serde(skip)]
    pub surplus: Option<HeldSurplus>,
    /// The target policy's calibration after this pass ([`crate::buffer::calibrate`]): fed
    /// back to the next pass as [`Observed::ln_ease`]; unchanged while no target is in force.
    pub ln_ease: f64,
    /// Why a surplus was not cordoned this pass (a recent grow, a surplus not held long).
    pub scale_down_held: Option<String>,
}

/// The planner's output.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Plan {
    /// Actions to run, in order: uncordons, growth, cordons, deletions.
    pub actions: Vec<Action>,
    /// Things the operator should know that did not stop the pass (a bad annotation...).
    pub warnings: Vec<String>,
    /// Selector-matched nodes that are not in the cloud pool (each also has a warning).
    pub outside_pool: Vec<String>,
    /// What the plan was computed from.
    pub summary: PoolSummary,
    /// Every selector-matched node: its class, servers, free slots, and what the plan does
    /// with it or why it does nothing (`kubescaler explain`, `/debug/plan`).
    pub nodes: Vec<NodeExplanation>,
}

/// One node as the plan sees it, for an operator.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct NodeExplanation {
    /// Node name.
    pub name: String,
    /// Its class: `active`, `booting`, `not-ready`, `kubescaler's`, `someone else's`,
    /// `deleting`, `outside-pool`.
    pub class: String,
    /// Server pods (Agones mode: live GameServers) that keep it.
    pub servers: u32,
    /// Servers that fit on it now (ignoring its cordon).
    pub free_slots: u32,
    /// What this pass does with it, or why nothing.
    pub verdict: String,
}

impl Plan {
    /// Whether carrying it out changes the cloud pool (grow or delete).
    pub fn changes_cloud(&self) -> bool {
        self.actions.iter().any(|a| {
            matches!(
                a,
                Action::Grow { .. } | Action::Delete { .. } | Action::DeleteInstance { .. }
            )
        })
    }

    /// The target size after the plan's growth, if it grows.
    pub fn grow_target(&self) -> Option<u32> {
        self.actions.iter().find_map(|a| match a {
            Action::Grow { to, .. } => Some(*to),
            _ => None,
        })
    }
}

/// Taints the node lifecycle controller and cloud controller manager put on a node while it
/// registers, and remove when it is Ready and initialised.
const BOOT_TAINTS: &[&str] = &[
    "node.kubernetes.io/not-ready",
    "node.kubernetes.io/unreachable",
    "node.cloudprovider.kubernetes.io/uninitialized",
];

/// How the planner classes a node.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Class {
    /// Ready and schedulable: its free slots count.
    Active,
    /// Registered, not Ready yet, within the boot timeout: incoming capacity.
    Booting,
    /// Not Ready past the boot timeout: counts for nothing.
    NotReady,
    /// Cordoned by kubescaler: may be uncordoned or, once empty and expired, deleted.
    Ours,
    /// Cordoned by someone else: never touched.
    Foreign,
    /// Going away: never capacity, never deleted again.
    Deleting,
}

/// Per-node facts the planner derives once.
struct NodeView<'a> {
    node: &'a NodeState,
    class: Class,
    /// Servers that fit now, ignoring the cordon.
    free_slots: u32,
    /// Servers that would fit with only its daemon pods: the size of a node of this shape.
    empty_slots: u32,
    /// What keeps the node: server pods, or in Agones mode live GameServers (and any the
    /// planner cannot rule out as one).
    servers: u32,
    /// Agones mode: Ready in-scope GameServers (warm slots; compaction may remove them).
    warm: u32,
    /// Agones mode: in-scope GameServers on their way to Ready.
    starting: u32,
    /// Agones mode: the Ready GameServers compaction may delete.
    compactable: Vec<&'a GameServerInfo>,
    /// The servers tolerate all its NoSchedule/NoExecute taints.
    tolerated: bool,
}

#[derive(Default)]
struct Usage<'a> {
    used: Resources,
    pods: u32,
    daemon_used: Resources,
    daemon_pods: u32,
    servers: u32,
    warm: u32,
    starting: u32,
    compactable: Vec<&'a GameServerInfo>,
}

/// What a GameServer pod means to the planner (Agones mode).
enum GameServerRole<'a> {
    /// Keeps its node: a live match, another scope's server, or one not seen.
    Keeps,
    /// Ready and in scope: a warm slot compaction may remove.
    Warm(&'a GameServerInfo),
    /// In scope, on its way to Ready.
    Starting,
    /// Leaving: holds no match.
    Leaving,
}

fn game_server_role<'a>(
    game_server: Option<&'a GameServerInfo>,
    settings: &AgonesSettings,
) -> GameServerRole<'a> {
    let Some(gs) = game_server else {
        // Its GameServer is not in the cache (not yet, or in no watched scope): it may be a
        // live match.
        return GameServerRole::Keeps;
    };
    if gs.blocks_node_deletion() {
        GameServerRole::Keeps
    } else if gs.being_deleted || gs.state.is_leaving() {
        GameServerRole::Leaving
    } else if !settings.in_scope(gs) {
        GameServerRole::Keeps
    } else if gs.state.is_warm() {
        GameServerRole::Warm(gs)
    } else {
        GameServerRole::Starting
    }
}

impl NodeView<'_> {
    /// What the node adds to the available slots: free room, plus in Agones mode its warm
    /// and starting GameServers.
    fn slots(&self) -> u32 {
        self.free_slots + self.warm + self.starting
    }

    /// `3 free slots and 2` or, with GameServers, `3 free slots, 1 Ready and 0 starting
    /// GameServers, and 2` (the caller appends "servers").
    fn describe_slots(&self) -> String {
        if self.warm + self.starting == 0 {
            format!("{} free slots and {}", self.free_slots, self.servers)
        } else {
            format!(
                "{} free slots, {} Ready and {} starting GameServers, and {} live",
                self.free_slots, self.warm, self.starting, self.servers
            )
        }
    }
}

/// The buffer the target policy sizes from the measurements: at least `buffer-slot-size`,
/// at most what the pool can still hold (`ceiling`).
fn target_in_force(
    observed: &Observed,
    cfg: &PlannerConfig,
    instant_start: f64,
    ceiling: u32,
    slots_per_node: u32,
) -> (u32, String, f64) {
    let inputs = |ln_ease: f64| TargetInputs {
        instant_start,
        arrivals_per_sec: observed.arrivals_per_sec.unwrap_or(0.0),
        departures_per_sec: observed.departures_per_sec.unwrap_or(0.0),
        evidence: observed.evidence,
        lead_sec: observed.lead_sec.unwrap_or(cfg.expected_node_boot_sec),
        lead_measured: observed.lead_sec.is_some(),
        tick_sec: cfg.tick_sec,
        floor: cfg.buffer,
        ceiling,
        slots_per_node,
        ln_ease,
        measured_instant: observed.instant_share,
    };
    // This pass's matches calibrate the model; whether it, not the floor, set the buffer
    // is read with the calibration they found.
    let (before, _) = target_buffer(&inputs(observed.ln_ease));
    let learned = calibrate(
        observed.ln_ease,
        observed.starts,
        instant_start,
        before > cfg.buffer,
    );
    let (buffer, reason) = target_buffer(&inputs(learned));
    (buffer, reason, learned)
}

/// The buffer in force and, when not the fixed `buffer-slot-size`, how it was computed.
fn buffer_in_force(snapshot: &ClusterSnapshot, cfg: &PlannerConfig) -> (u32, Option<String>) {
    if cfg.server_source != ServerSource::Agones
        || cfg.agones.buffer != AgonesBuffer::FleetAutoscalers
    {
        return (cfg.buffer, None);
    }
    let fleets: Vec<_> = snapshot
        .fleet_buffers
        .iter()
        .filter(|f| {
            let namespace = f.key.split_once('/').map_or("", |(ns, _)| ns);
            cfg.agones.fleet_in_scope(namespace, &f.fleet)
        })
        .collect();
    let from_fleets: u32 = fleets
        .iter()
        .map(|f| f.slots())
        .fold(0, u32::saturating_add);
    let parts: Vec<String> = fleets
        .iter()
        .map(|f| {
            format!(
                "{} ({}): {} Ready + {} for its next step",
                f.fleet,
                f.key,
                f.ready,
                f.slots() - f.ready
            )
        })
        .collect();
    let buffer = from_fleets.max(cfg.buffer);
    let reason = if parts.is_empty() {
        format!(
            "no FleetAutoscaler with a Buffer policy in scope: buffer-slot-size {}",
            cfg.buffer
        )
    } else {
        format!(
            "fleet-autoscalers {} = {from_fleets}{}",
            parts.join(", "),
            if from_fleets < cfg.buffer {
                format!(", raised to buffer-slot-size {}", cfg.buffer)
            } else {
                String::new()
            }
        )
    };
    (buffer, Some(reason))
}

/// How long kubescaler's accepted-deletion mark keeps a node out of every count and every
/// action: the cloud needs time to remove it, and a second DELETE could lower the count twice.
/// Past it, a node the cloud still runs and does not report as going is deleted again.
pub const DELETION_MEMORY_SEC: i64 = 600;

/// Seconds from `from` to `now`, negative if `from` is later.
fn age_sec(now: Timestamp, from: Timestamp) -> i64 {
    now.duration_since(from).as_secs()
}

/// A configured number of seconds as a signed age: values past `i64::MAX` mean "never".
fn limit_sec(secs: u64) -> i64 {
    i64::try_from(secs).unwrap_or(i64::MAX)
}

fn classify(
    node: &NodeState,
    status: InstanceStatus,
    now: Timestamp,
    cfg: &PlannerConfig,
) -> Class {
    let accepted_recently = node
        .deletion_accepted
        .as_deref()
        .and_then(|raw| raw.parse::<Timestamp>().ok())
        .is_some_and(|at| age_sec(now, at) < DELETION_MEMORY_SEC);
    if status == InstanceStatus::Deleting || accepted_recently {
        return Class::Deleting;
    }
    if node.unschedulable {
        return if node.cordoned_by_kubescaler {
            Class::Ours
        } else {
            Class::Foreign
        };
    }
    // A Ready node still fenced by a lifecycle taint takes no server yet (the scheduler says
    // so), but will shortly: it is capacity on its way, like a node still booting.
    let initialising = node
        .taints
        .iter()
        .any(|t| t.effect == TaintEffect::NoSchedule && BOOT_TAINTS.contains(&t.key.as_str()));
    if node.ready && !initialising {
        return Class::Active;
    }
    let young = node
        .created
        .is_some_and(|created| age_sec(now, created) < limit_sec(cfg.node_boot_timeout_sec));
    if young {
        Class::Booting
    } else {
        Class::NotReady
    }
}

/// Computes the plan for a cloud that is taken at its word about the selector (see
/// [`CloudView::trusting`]). Pure: same inputs, same plan.
pub fn plan(
    snapshot: &ClusterSnapshot,
    target_size: u32,
    now: Timestamp,
    cfg: &PlannerConfig,
) -> Plan {
    plan_with(
        snapshot,
        &CloudView::trusting(snapshot, target_size),
        &BTreeSet::new(),
        &Observed::default(),
        now,
        cfg,
    )
}

/// Computes the plan from the cluster, the cloud pool matched against it, the nodes whose
/// deletion is held back (they keep failing; others take their turn), and what the loop
/// measured and remembers. Pure: same inputs, same plan.
pub fn plan_with(
    snapshot: &ClusterSnapshot,
    cloud: &CloudView,
    held_back: &BTreeSet<String>,
    observed: &Observed,
    now: Timestamp,
    cfg: &PlannerConfig,
) -> Plan {
    let mut warnings = Vec::new();
    // Growing with no way to know a node's size (see the warning it gets).
    let mut learning_size = false;
    let target_size = cloud.target;

    // Only nodes of the cloud pool are the pool's: a selector wider than the pool must not
    // let kubescaler cordon or count another pool's nodes.
    let mut outside_pool = Vec::new();
    let pool_nodes: Vec<(&NodeState, InstanceStatus)> = snapshot
        .nodes
        .iter()
        .filter_map(|n| match cloud.members.get(&n.name) {
            Some(status) => Some((n, *status)),
            None => {
                outside_pool.push(n.name.clone());
                warnings.push(format!(
                    "node {} matches node-selector but is not in the cloud pool: ignored (not counted, never cordoned or deleted)",
                    n.name
                ));
                None
            }
        })
        .collect();

    let mut usage: HashMap<&str, Usage> = pool_nodes
        .iter()
        .map(|(n, _)| (n.name.as_str(), Usage::default()))
        .collect();
    let agones = cfg.server_source == ServerSource::Agones;
    let game_servers: HashMap<&str, &GameServerInfo> = if agones {
        snapshot
            .game_servers
            .iter()
            .map(|gs| (gs.key.as_str(), gs))
            .collect()
    } else {
        HashMap::new()
    };
    // In Agones mode a pod of a GameServer is told apart by its GameServer's state.
    let role = |pod: &crate::model::PodState| {
        pod.game_server
            .as_deref()
            .filter(|_| agones)
            .map(|key| game_server_role(game_servers.get(key).copied(), &cfg.agones))
    };
    let mut pending_servers = 0u32;
    let mut pending_game_servers = 0u32;
    let mut counted_game_servers: BTreeSet<&str> = BTreeSet::new();
    for pod in &snapshot.pods {
        match &pod.node {
            None => match role(pod) {
                // A warm server to be, once it finds room.
                Some(GameServerRole::Warm(_) | GameServerRole::Starting) => {
                    pending_game_servers += 1
                }
                Some(GameServerRole::Leaving) => {}
                // Takes room and is no warm slot of ours: demand like a match.
                Some(GameServerRole::Keeps) => pending_servers += 1,
                None => pending_servers += u32::from(pod.is_server),
            },
            Some(node) => {
                // Pods on nodes outside the pool do not concern it.
                if let Some(u) = usage.get_mut(node.as_str()) {
                    u.used = u.used.saturating_add(pod.requests);
                    u.pods += 1;
                    match role(pod) {
                        Some(GameServerRole::Keeps) => u.servers += 1,
                        Some(GameServerRole::Warm(gs)) => {
                            u.warm += 1;
                            u.compactable.push(gs);
                        }
                        Some(GameServerRole::Starting) => u.starting += 1,
                        Some(GameServerRole::Leaving) => {}
                        None => u.servers += u32::from(pod.is_server),
                    }
                    if let Some(key) = pod.game_server.as_deref() {
                        counted_game_servers.insert(key);
                    }
                    if pod.is_daemon {
                        u.daemon_used = u.daemon_used.saturating_add(pod.requests);
                        u.daemon_pods += 1;
                    }
                }
            }
        }
    }
    // A live GameServer whose pod the cache does not hold (yet, or any more) still keeps its
    // node.
    for gs in game_servers.values().filter(|gs| gs.blocks_node_deletion()) {
        let node = gs.node.as_deref().unwrap_or_default();
        if !counted_game_servers.contains(gs.key.as_str()) {
            if let Some(u) = usage.get_mut(node) {
                u.servers += 1;
            }
        }
    }

    // What the server pods tolerate once admitted: the configured tolerations plus the
    // defaults the API server adds to every pod.
    let tolerations: Vec<Toleration> = cfg
        .tolerations
        .iter()
        .cloned()
        .chain(admission_default_tolerations())
        .collect();
    let views: Vec<NodeView> = pool_nodes
        .iter()
        .map(|&(node, status)| {
            let u = usage.get(node.name.as_str());
            let (used, pods, daemon_used, daemon_pods, servers) = u
                .map(|u| (u.used, u.pods, u.daemon_used, u.daemon_pods, u.servers))
                .unwrap_or_default();
            let (warm, starting, compactable) = u
                .map(|u| (u.warm, u.starting, u.compactable.clone()))
                .unwrap_or_default();
            let class = classify(node, status, now, cfg);
            let fits = if class == Class::Booting {
                // The slots a booting node will have once its lifecycle taints are lifted;
                // counted as zero, they would order another node.
                let lasting: Vec<_> = node
                    .taints
                    .iter()
                    .filter(|t| !BOOT_TAINTS.contains(&t.key.as_str()))
                    .cloned()
                    .collect();
                tolerates_all(&tolerations, &lasting)
            } else {
                tolerates_all(&tolerations, &node.taints)
            };
            let slots = |used: Resources, pods: u32| {
                if fits {
                    slots_in(
                        node.allocatable.saturating_sub(used),
                        node.allocatable_pods.saturating_sub(pods),
                        cfg.slot,
                    )
                } else {
                    0
                }
            };
            NodeView {
                node,
                class,
                free_slots: slots(used, pods),
                empty_slots: slots(daemon_used, daemon_pods),
                servers,
                warm,
                starting,
                compactable,
                tolerated: fits,
            }
        })
        .collect();

    // A new node is assumed to be like the smallest node already there (an underestimate
    // orders one node too many, never one too few); the template serves an empty pool.
    let learned = views
        .iter()
        .filter(|v| v.node.allocatable.cpu_millis > 0 && v.node.allocatable_pods > 0)
        .filter(|v| v.tolerated)
        .map(|v| v.empty_slots)
        .min();
    // Then the configured template (an override), then the capacity the cloud reports.
    let slots_per_new_node = learned
        .or_else(|| {
            cfg.node_template.map(|t| {
                slots_in(
                    Resources {
                        cpu_millis: t.cpu_millis,
                        memory_bytes: t.memory_bytes,
                    },
                    t.pods,
                    cfg.slot,
                )
            })
        })
        .or_else(|| {
            cloud
                .template
                .map(|t| slots_in(t.allocatable, t.pods, cfg.slot))
        });

    let count = |class: Class| views.iter().filter(|v| v.class == class).count() as u32;
    let registered = views.len() as u32;

    // Instances that have not registered: on their way, unless the boot timeout passed (then
    // they never will: deleted through the cloud, and not counted meanwhile).
    let mut stuck: Vec<&CloudNode> = Vec::new();
    let mut unregistered_incoming = 0u32;
    let mut live_listed = views.iter().filter(|v| v.class != Class::Deleting).count() as u32;
    for instance in cloud
        .unregistered
        .iter()
        .filter(|i| i.status != InstanceStatus::Deleting)
    {
        live_listed += 1;
        let overdue = instance
            .created
            .is_some_and(|c| age_sec(now, c) >= limit_sec(cfg.node_boot_timeout_sec));
        if overdue {
            stuck.push(instance);
        } else {
            unregistered_incoming += 1;
        }
    }
    // Ordered but not listed yet.
    let provisioning = unregistered_incoming + target_size.saturating_sub(live_listed);
    // The target once the stuck instances are deleted: growth starts from it.
    let target_size = target_size.saturating_sub(stuck.len() as u32);
    let free_slots: u32 = views
        .iter()
        .filter(|v| v.class == Class::Active)
        .map(|v| v.free_slots)
        .sum();
    let booting_slots: u32 = views
        .iter()
        .filter(|v| v.class == Class::Booting)
        .map(|v| {
            // A node that has not posted its allocatable yet is taken to be a new node.
            if v.node.allocatable.cpu_millis == 0 {
                slots_per_new_node.unwrap_or(0)
            } else {
                v.free_slots
            }
        })
        .sum();
    let incoming_slots =
        booting_slots.saturating_add(provisioning.saturating_mul(slots_per_new_node.unwrap_or(0)));
    let active_sum = |f: fn(&NodeView) -> u32| -> u32 {
        views
            .iter()
            .filter(|v| v.class == Class::Active)
            .map(f)
            .sum()
    };
    let ready_game_servers = active_sum(|v| v.warm);
    let starting_game_servers = active_sum(|v| v.starting);
    // Room for new servers: free and incoming slots less the matches waiting for one.
    let room = i64::from(free_slots) + i64::from(incoming_slots) - i64::from(pending_servers);
    // A warm or starting GameServer is a slot already there; a pending GameServer pod turns a
    // slot of room into a warm one (no change), and only those that find no room are short.
    let available = room + i64::from(ready_game_servers) + i64::from(starting_game_servers)
        - (i64::from(pending_game_servers) - room.max(0)).max(0);
    let running_servers: u32 = views.iter().map(|v| v.servers).sum();
    let mut ln_ease = observed.ln_ease;
    let mut target = |instant_start: f64| {
        let ceiling = slots_per_new_node.map_or(u32::MAX, |per_node| {
            cfg.max_nodes
                .saturating_mul(per_node)
                .saturating_sub(running_servers.saturating_add(pending_servers))
        });
        let (buffer, reason, learned) = target_in_force(
            observed,
            cfg,
            instant_start,
            ceiling,
            slots_per_new_node.unwrap_or(1),
        );
        ln_ease = learned;
        (buffer, reason)
    };
    // A window of the schedule wins over the policy while it holds.
    let (buffer_slots, buffer_reason) = match cfg.buffer_schedule.in_force(now) {
        Some((window, Override::Buffer(b))) => (
            b,
            Some(format!(
                "buffer {b}: buffer-schedule window \"{}\"",
                window.describe()
            )),
        ),
        Some((window, Override::Target(share))) => {
            let (b, why) = target(share);
            (
                b,
                Some(format!(
                    "{why} (buffer-schedule window \"{}\")",
                    window.describe()
                )),
            )
        }
        None => match cfg.buffer_policy {
            BufferPolicy::Target => {
                let (b, why) = target(cfg.target_instant_start);
                (b, Some(why))
            }
            BufferPolicy::Fixed => buffer_in_force(snapshot, cfg),
        },
    };
    let buffer = i64::from(buffer_slots);

    let summary = PoolSummary {
        target_size: cloud.target,
        registered_nodes: registered,
        active_nodes: count(Class::Active),
        booting_nodes: count(Class::Booting),
        provisioning_nodes: provisioning,
        not_ready_nodes: count(Class::NotReady),
        cordoned_by_kubescaler: count(Class::Ours),
        cordoned_by_others: count(Class::Foreign),
        deleting_nodes: count(Class::Deleting),
        outside_pool_nodes: outside_pool.len() as u32,
        stuck_instances: stuck.len() as u32,
        free_slots,
        incoming_slots,
        pending_servers,
        running_servers,
        ready_game_servers,
        starting_game_servers,
        pending_game_servers,
        available_slots: available,
        buffer: buffer_slots,
        buffer_reason,
        slots_per_new_node,
        surplus: None,
        ln_ease,
        scale_down_held: None,
    };
    let mut summary = summary;

    let mut actions = Vec::new();
    for instance in &stuck {
        warnings.push(format!(
            "pool instance {} ({}) has not registered as a node within node-boot-timeout-sec {}: deleting it",
            instance.id, instance.state, cfg.node_boot_timeout_sec
        ));
        actions.push(Action::DeleteInstance {
            instance: (*instance).clone(),
            reason: format!(
                "created {} and not registered within node-boot-timeout-sec {}; it holds no server",
                instance
                    .created
                    .map_or_else(|| "at an unknown time".to_string(), |c| c.to_string()),
                cfg.node_boot_timeout_sec
            ),
        });
    }
    // A person uncordoned a node kubescaler had cordoned: its marks must not outlive the cordon.
    for v in views.iter().filter(|v| {
        !v.node.unschedulable && v.node.has_kubescaler_marks && v.class != Class::Deleting
    }) {
        actions.push(Action::ClearMarks {
            node: v.node.name.clone(),
            reason: "schedulable, but carries kubescaler's marks (uncordoned by someone else)"
                .to_string(),
        });
    }
    let mut uncordoned: Vec<&str> = Vec::new();
    let mut new_target = target_size;

    if available < buffer {
        let mut missing = buffer - available;

        // Reuse nodes kubescaler cordoned before buying new ones, busiest first: they cannot
        // be deleted soon anyway.
        let mut ours: Vec<&NodeView> = views
            .iter()
            .filter(|v| v.class == Class::Ours && v.node.ready && v.slots() > 0)
            .collect();
        ours.sort_by(|a, b| {
            b.servers
                .cmp(&a.servers)
                .then(a.node.name.cmp(&b.node.name))
        });
        for v in ours {
            if missing <= 0 {
                break;
            }
            missing -= i64::from(v.slots());
            uncordoned.push(&v.node.name);
            actions.push(Action::Uncordon {
                node: v.node.name.clone(),
                reason: format!(
                    "available slots {available} < buffer {buffer}: node has {} servers",
                    v.describe_slots()
                ),
            });
        }

        if missing > 0 {
            match slots_per_new_node {
                Some(0) => warnings.push(format!(
                    "a server ({} millicores, {} bytes) does not fit on an empty node of this pool: cannot add slots by growing",
                    cfg.slot.cpu_millis, cfg.slot.memory_bytes
                )),
                Some(per_node) => {
                    let per_node = i64::from(per_node);
                    let need = (missing + per_node - 1) / per_node;
                    let wanted = i64::from(target_size) + need;
                    let capped = wanted.min(i64::from(cfg.max_nodes)) as u32;
                    if wanted > i64::from(cfg.max_nodes) {
                        warnings.push(format!(
                            "{need} more nodes needed for the buffer but maximum-node-pool-size is {}",
                            cfg.max_nodes
                        ));
                    }
                    if capped > new_target {
                        new_target = capped;
                    }
                }
                None if provisioning > 0 || summary.booting_nodes > 0 => warnings.push(
                    "pool size unknown while its first nodes boot: waiting for them".to_string(),
                ),
                None => {
                    // Nothing to learn a node's size from: order one to learn it (said once
                    // the minimum has had its say, below).
                    if target_size < cfg.max_nodes {
                        new_target = target_size + 1;
                    }
                    learning_size = true;
                }
            }
        }
    }

    if new_target < cfg.min_nodes {
        new_target = cfg.min_nodes;
    }
    if learning_size {
        // Say what happens: the minimum may order more than the one node the size needs.
        warnings.push(match new_target.saturating_sub(target_size) {
            0 => "empty pool and no node-template: a node's size is unknown and \
                  maximum-node-pool-size allows no node to learn it"
                .to_string(),
            1 => {
                "empty pool and no node-template: growing by one node to learn its size".to_string()
            }
            _ => format!(
                "empty pool and no node-template: growing to minimum-node-pool-size {new_target}; \
                 the first node to register tells a node's size"
            ),
        });
    }
    if new_target > target_size {
        let reason = if available < buffer {
            format!(
                "available slots {available} (free {free_slots} + incoming {incoming_slots}{} - pending {pending_servers}) < buffer {buffer}; {} slots per new node",
                if agones {
                    format!(" + Ready {ready_game_servers} + starting {starting_game_servers}, {pending_game_servers} GameServers pending")
                } else {
                    String::new()
                },
                slots_per_new_node.map_or("unknown".to_string(), |s| s.to_string())
            )
        } else {
            format!("pool target {target_size} < minimum {}", cfg.min_nodes)
        };
        actions.push(Action::Grow {
            from: target_size,
            to: new_target,
            reason,
        });
    }

    // Scale down only from a settled pool: with nodes on their way, surplus is transient.
    let settled = provisioning == 0 && summary.booting_nodes == 0 && new_target == target_size;
    let surplus_node = slots_per_new_node
        .filter(|s| *s > 0)
        .filter(|per_node| available - buffer >= i64::from(*per_node));
    let surplus_nodes = surplus_node.map_or(0, |per_node| {
        u32::try_from((available - buffer) / i64::from(per_node)).unwrap_or(u32::MAX)
    });
    if settled && surplus_node.is_some() {
        summary.surplus = Some(match observed.surplus {
            Some(held) if held.since <= now => HeldSurplus {
                since: held.since,
                fewest_nodes: held.fewest_nodes.min(surplus_nodes),
            },
            _ => HeldSurplus {
                since: now,
                fewest_nodes: surplus_nodes,
            },
        });
    }
    // No cordon soon after capacity came (it was wanted a moment ago), nor for a surplus that
    // has not held: either would be undone by the next arrivals, a cordon and an uncordon for
    // nothing.
    let newest = views
        .iter()
        .filter(|v| v.class != Class::Deleting)
        .filter_map(|v| v.node.created)
        .max();
    let hold = match (newest, summary.surplus) {
        (Some(created), Some(_))
            if age_sec(now, created) < limit_sec(cfg.scale_down_delay_after_add_sec) =>
        {
            Some(format!(
                "newest node created {} ago, within scale-down-delay-after-add-sec {}",
                crate::model::human_secs(age_sec(now, created).max(0) as u64),
                cfg.scale_down_delay_after_add_sec
            ))
        }
        (_, Some(held)) if age_sec(now, held.since) < limit_sec(cfg.scale_down_unneeded_sec) => {
            Some(format!(
                "surplus of {} nodes held {} of scale-down-unneeded-sec {}",
                held.fewest_nodes,
                crate::model::human_secs(age_sec(now, held.since).max(0) as u64),
                cfg.scale_down_unneeded_sec
            ))
        }
        _ => None,
    };
    summary.scale_down_held = hold.clone();
    if settled && hold.is_none() {
        if let Some(per_node) = surplus_node {
            // What the surplus never fell below while it held: a node more would be wanted
            // back by the next peak like the ones just seen. Without a hold, the whole surplus
            // now (the Go program's behaviour).
            let mut budget = if cfg.scale_down_unneeded_sec > 0 {
                summary
                    .surplus
                    .map_or(0, |held| i64::from(held.fewest_nodes))
            } else {
                i64::from(surplus_nodes)
            };
            let mut remaining = available;
            let mut active = summary.active_nodes;
            // Agones: the warm servers of a cordoned node are recreated elsewhere (compaction),
            // so what stays must have room for them.
            let mut spare_room = room;
            // A node tainted against the servers was fenced off by someone else: not ours to
            // cordon (it holds no slots, so it would be a free pick).
            let mut candidates: Vec<&NodeView> = views
                .iter()
                .filter(|v| v.class == Class::Active && v.tolerated)
                .collect();
            // Fewest servers first: they empty soonest. Then emptier, then by name.
            candidates.sort_by(|a, b| {
                a.servers
                    .cmp(&b.servers)
                    .then((a.warm + a.starting).cmp(&(b.warm + b.starting)))
                    .then(b.free_slots.cmp(&a.free_slots))
                    .then(a.node.name.cmp(&b.node.name))
            });
            for v in candidates {
                if budget <= 0 || active <= cfg.min_nodes {
                    break;
                }
                let after = remaining - i64::from(v.slots());
                let moved = i64::from(v.warm + v.starting);
                let room_after = spare_room - i64::from(v.free_slots) - moved;
                if after < buffer || (moved > 0 && room_after < 0) {
                    continue;
                }
                actions.push(Action::Cordon {
                    node: v.node.name.clone(),
                    reason: format!(
                        "available slots {remaining} exceed buffer {buffer} by at least a node ({per_node} slots); node has {} servers, {after} slots remain",
                        if agones { v.describe_slots() } else { v.servers.to_string() }
                    ),
                });
                remaining = after;
                spare_room = room_after;
                active -= 1;
                budget -= 1;
                // The next cordon waits for a surplus that holds after this one.
                summary.surplus = None;
            }
        }
    }

    // Deletions: kubescaler's own cordoned nodes, empty of servers, past the expiration.
    let mut expired: Vec<(Timestamp, &NodeView)> = Vec::new();
    for v in views
        .iter()
        .filter(|v| v.class == Class::Ours && !uncordoned.contains(&v.node.name.as_str()))
    {
        let stamp = match v.node.cordon_timestamp.as_deref() {
            None => {
                warnings.push(format!(
                    "node {} is marked cordoned by kubescaler but has no {} annotation: not deleting it",
                    v.node.name,
                    crate::model::TIMESTAMP_ANNOTATION
                ));
                continue;
            }
            Some(raw) => match raw.parse::<Timestamp>() {
                Ok(t) => t,
                Err(e) => {
                    warnings.push(format!(
                        "node {}: annotation {}={raw:?} is not an RFC 3339 time ({e}): not deleting it",
                        v.node.name,
                        crate::model::TIMESTAMP_ANNOTATION
                    ));
                    continue;
                }
            },
        };
        let age = age_sec(now, stamp);
        if v.servers == 0
            && v.warm == 0
            && v.starting == 0
            && age >= limit_sec(cfg.empty_node_expiration_sec)
            && !held_back.contains(&v.node.name)
        {
            expired.push((stamp, v));
        }
    }
    expired.sort_by(|a, b| a.0.cmp(&b.0).then(a.1.node.name.cmp(&b.1.node.name)));
    // Each deletion lowers the cloud's target by one; the minimum holds for what remains.
    let mut pool = new_target;
    for (stamp, v) in expired {
        if pool <= cfg.min_nodes {
            break;
        }
        pool -= 1;
        actions.push(Action::Delete {
            node: NodeRef {
                name: v.node.name.clone(),
                provider_id: v.node.provider_id.clone(),
                labels: v.node.labels.clone(),
                identity_annotations: v.node.identity_annotations.clone(),
            },
            reason: format!(
                "cordoned by kubescaler at {stamp}, {}, past empty-node-expiration-sec {}",
                if agones {
                    "no GameServers (live, Ready or starting) and no server pods"
                } else {
                    "no server pods"
                },
                cfg.empty_node_expiration_sec
            ),
        });
    }

    // Compaction: the Ready GameServers of the surplus nodes kubescaler cordoned go, so that
    // allocations (which ignore cordons) stop landing there and the nodes empty. Never more
    // than the schedulable nodes have room to recreate: a Fleet's servers must not go pending.
    if agones && cfg.agones.compaction_per_minute > 0 {
        let mut room_left = room.max(0) - i64::from(pending_game_servers);
        let mut surplus: Vec<&NodeView> = views
            .iter()
            .filter(|v| {
                v.class == Class::Ours
                    && !uncordoned.contains(&v.node.name.as_str())
                    && !v.compactable.is_empty()
            })
            .collect();
        // Fewest live matches first: they empty soonest.
        surplus.sort_by(|a, b| {
            a.servers
                .cmp(&b.servers)
                .then(a.node.name.cmp(&b.node.name))
        });
        for v in surplus {
            if room_left <= 0 {
                warnings.push(format!(
                    "node {}: {} Ready GameServers not compacted: the schedulable nodes have no room to recreate them",
                    v.node.name,
                    v.compactable.len()
                ));
                continue;
            }
            let take = v
                .compactable
                .len()
                .min(usize::try_from(room_left).unwrap_or(usize::MAX));
            room_left -= take as i64;
            actions.push(Action::Compact {
                node: v.node.name.clone(),
                game_servers: v.compactable[..take].iter().map(|gs| (*gs).clone()).collect(),
                reason: format!(
                    "surplus node cordoned by kubescaler holds {} Ready GameServers and {} live matches; deleting {take} so their Fleets recreate them on schedulable nodes",
                    v.compactable.len(),
                    v.servers
                ),
            });
        }
    }

    let nodes = explain_nodes(
        &views,
        &outside_pool,
        &actions,
        held_back,
        new_target,
        now,
        cfg,
    );
    Plan {
        actions,
        warnings,
        outside_pool,
        summary,
        nodes,
    }
}

/// What the plan does with each node, or why nothing: the operator's view of one pass.
fn explain_nodes(
    views: &[NodeView],
    outside_pool: &[String],
    actions: &[Action],
    held_back: &BTreeSet<String>,
    new_target: u32,
    now: Timestamp,
    cfg: &PlannerConfig,
) -> Vec<NodeExplanation> {
    let mut out: Vec<NodeExplanation> = views
        .iter()
        .map(|v| {
            let name = v.node.name.clone();
            let acted: Vec<String> = actions
                .iter()
                .filter(|a| a.node() == Some(name.as_str()))
                .map(|a| format!("{}: {}", a.kind().as_str(), a.reason()))
                .collect();
            let class = match v.class {
                Class::Active => "active",
                Class::Booting => "booting",
                Class::NotReady => "not-ready",
                Class::Ours => "kubescaler's",
                Class::Foreign => "someone else's",
                Class::Deleting => "deleting",
            };
            let verdict = if !acted.is_empty() {
                acted.join("; ")
            } else {
                idle_verdict(v, held_back, new_target, now, cfg)
            };
            NodeExplanation {
                name,
                class: class.to_string(),
                servers: v.servers,
                free_slots: v.free_slots,
                verdict,
            }
        })
        .collect();
    out.extend(outside_pool.iter().map(|name| NodeExplanation {
        name: name.clone(),
        class: "outside-pool".to_string(),
        verdict: "not in the cloud pool: never counted, cordoned or deleted".to_string(),
        ..NodeExplanation::default()
    }));
    out.sort_by(|a, b| a.name.cmp(&b.name));
    out
}

/// Why the plan leaves a node as it is.
fn idle_verdict(
    v: &NodeView,
    held_back: &BTreeSet<String>,
    new_target: u32,
    now: Timestamp,
    cfg: &PlannerConfig,
) -> String {
    let servers = |n: u32| {
        if n == 1 {
            "1 server".to_string()
        } else {
            format!("{n} servers")
        }
    };
    match v.class {
        Class::Active if v.servers > 0 => format!(
            "kept: {}, and its {} free slots count toward the buffer",
            servers(v.servers),
            v.free_slots
        ),
        Class::Active => format!(
            "kept: its {} free slots count toward the buffer (not surplus this pass)",
            v.free_slots
        ),
        Class::Booting => "booting: its slots count as incoming".to_string(),
        Class::NotReady => format!(
            "not Ready past node-boot-timeout-sec {}: counts for nothing",
            cfg.node_boot_timeout_sec
        ),
        Class::Foreign => "cordoned by someone else: never touched".to_string(),
        Class::Deleting => "being deleted: not capacity, never deleted again".to_string(),
        Class::Ours if v.servers > 0 => format!(
            "not deleted: {} (cordoned: deleted once empty and expired)",
            servers(v.servers)
        ),
        Class::Ours if v.warm > 0 || v.starting > 0 => format!(
            "not deleted: {} Ready and {} starting GameServers",
            v.warm, v.starting
        ),
        Class::Ours => {
            let stamp = v
                .node
                .cordon_timestamp
                .as_deref()
                .and_then(|raw| raw.parse::<Timestamp>().ok());
            let Some(stamp) = stamp else {
                return "not deleted: no readable cordon time (see the warnings)".to_string();
            };
            let left = limit_sec(cfg.empty_node_expiration_sec).saturating_sub(age_sec(now, stamp));
            if left > 0 {
                format!("empty: deletable in {}", duration_text(left))
            } else if held_back.contains(&v.node.name) {
                "empty and expired: deletion held back after failures (retried later)".to_string()
            } else if new_target <= cfg.min_nodes {
                format!(
                    "empty and expired: not deleted, the pool is at minimum-node-pool-size {}",
                    cfg.min_nodes
                )
            } else {
                "empty and expired: deleted in a later pass".to_string()
            }
        }
    }
}

/// `1m10s`, `45s`, `2h3m`.
fn duration_text(secs: i64) -> String {
    let (h, m, s) = (secs / 3600, secs % 3600 / 60, secs % 60);
    match (h, m, s) {
        (0, 0, s) => format!("{s}s"),
        (0, m, 0) => format!("{m}m"),
        (0, m, s) => format!("{m}m{s}s"),
        (h, 0, _) => format!("{h}h"),
        (h, m, _) => format!("{h}h{m}m"),
    }
}

#[cfg(test)]
mod tests {
    use super::duration_text;

    #[test]
    fn waits_read_as_an_operator_writes_them() {
        let cases = [
            (45, "45s"),
            (60, "1m"),
            (70, "1m10s"),
            (3600, "1h"),
            (3600 + 180 + 5, "1h3m"),
        ];
        for (secs, text) in cases {
            assert_eq!(duration_text(secs), text, "{secs} s");
        }
    }
}
