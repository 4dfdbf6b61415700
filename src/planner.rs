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

use std::collections::HashMap;
use std::fmt;

use jiff::Timestamp;
use serde::Serialize;

use crate::config::{Config, NodeTemplate};
use crate::model::{ClusterSnapshot, NodeState, Resources, TaintEffect, Toleration};
use crate::provider::NodeRef;
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
}

impl ActionKind {
    /// Lower-case name.
    pub fn as_str(self) -> &'static str {
        match self {
            ActionKind::Uncordon => "uncordon",
            ActionKind::Grow => "grow",
            ActionKind::Cordon => "cordon",
            ActionKind::Delete => "delete",
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
        }
    }
    /// Why the planner chose it.
    pub fn reason(&self) -> &str {
        match self {
            Action::Uncordon { reason, .. }
            | Action::Grow { reason, .. }
            | Action::Cordon { reason, .. }
            | Action::Delete { reason, .. } => reason,
        }
    }
    /// The node it concerns, if any.
    pub fn node(&self) -> Option<&str> {
        match self {
            Action::Uncordon { node, .. } | Action::Cordon { node, .. } => Some(node),
            Action::Delete { node, .. } => Some(&node.name),
            Action::Grow { .. } => None,
        }
    }
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Action::Grow { from, to, reason } => write!(f, "grow pool {from} -> {to}: {reason}"),
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
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
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
    /// Free slots on active nodes.
    pub free_slots: u32,
    /// Slots expected from booting and provisioning nodes.
    pub incoming_slots: u32,
    /// Unbound server pods.
    pub pending_servers: u32,
    /// Server pods bound to pool nodes.
    pub running_servers: u32,
    /// free + incoming - pending.
    pub available_slots: i64,
    /// The buffer to keep.
    pub buffer: u32,
    /// Slots of one new, empty node, if known.
    pub slots_per_new_node: Option<u32>,
}

/// The planner's output.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Plan {
    /// Actions to run, in order: uncordons, growth, cordons, deletions.
    pub actions: Vec<Action>,
    /// Things the operator should know that did not stop the pass (a bad annotation...).
    pub warnings: Vec<String>,
    /// What the plan was computed from.
    pub summary: PoolSummary,
}

impl Plan {
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
}

/// Per-node facts the planner derives once.
struct NodeView<'a> {
    node: &'a NodeState,
    class: Class,
    /// Servers that fit now, ignoring the cordon.
    free_slots: u32,
    /// Servers that would fit with only its daemon pods: the size of a node of this shape.
    empty_slots: u32,
    servers: u32,
    /// The servers tolerate all its NoSchedule/NoExecute taints.
    tolerated: bool,
}

#[derive(Default)]
struct Usage {
    used: Resources,
    pods: u32,
    daemon_used: Resources,
    daemon_pods: u32,
    servers: u32,
}

fn classify(node: &NodeState, now: Timestamp, cfg: &PlannerConfig) -> Class {
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
    let young = node.created.is_some_and(|created| {
        now.duration_since(created).as_secs()
            < i64::try_from(cfg.node_boot_timeout_sec).unwrap_or(i64::MAX)
    });
    if young {
        Class::Booting
    } else {
        Class::NotReady
    }
}

/// Computes the plan. Pure: same inputs, same plan.
pub fn plan(
    snapshot: &ClusterSnapshot,
    target_size: u32,
    now: Timestamp,
    cfg: &PlannerConfig,
) -> Plan {
    let mut warnings = Vec::new();

    let mut usage: HashMap<&str, Usage> = snapshot
        .nodes
        .iter()
        .map(|n| (n.name.as_str(), Usage::default()))
        .collect();
    let mut pending_servers = 0u32;
    for pod in &snapshot.pods {
        match &pod.node {
            None => pending_servers += u32::from(pod.is_server),
            Some(node) => {
                // Pods on nodes outside the pool do not concern it.
                if let Some(u) = usage.get_mut(node.as_str()) {
                    u.used = u.used.saturating_add(pod.requests);
                    u.pods += 1;
                    u.servers += u32::from(pod.is_server);
                    if pod.is_daemon {
                        u.daemon_used = u.daemon_used.saturating_add(pod.requests);
                        u.daemon_pods += 1;
                    }
                }
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
    let views: Vec<NodeView> = snapshot
        .nodes
        .iter()
        .map(|node| {
            let u = usage.get(node.name.as_str());
            let (used, pods, daemon_used, daemon_pods, servers) = u
                .map(|u| (u.used, u.pods, u.daemon_used, u.daemon_pods, u.servers))
                .unwrap_or_default();
            let class = classify(node, now, cfg);
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
    let slots_per_new_node = learned.or_else(|| {
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
    });

    let count = |class: Class| views.iter().filter(|v| v.class == class).count() as u32;
    let registered = views.len() as u32;
    let provisioning = target_size.saturating_sub(registered);
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
    let available = i64::from(free_slots) + i64::from(incoming_slots) - i64::from(pending_servers);
    let buffer = i64::from(cfg.buffer);

    let summary = PoolSummary {
        target_size,
        registered_nodes: registered,
        active_nodes: count(Class::Active),
        booting_nodes: count(Class::Booting),
        provisioning_nodes: provisioning,
        not_ready_nodes: count(Class::NotReady),
        cordoned_by_kubescaler: count(Class::Ours),
        cordoned_by_others: count(Class::Foreign),
        free_slots,
        incoming_slots,
        pending_servers,
        running_servers: views.iter().map(|v| v.servers).sum(),
        available_slots: available,
        buffer: cfg.buffer,
        slots_per_new_node,
    };

    let mut actions = Vec::new();
    let mut uncordoned: Vec<&str> = Vec::new();
    let mut new_target = target_size;

    if available < buffer {
        let mut missing = buffer - available;

        // Reuse nodes kubescaler cordoned before buying new ones, busiest first: they cannot
        // be deleted soon anyway.
        let mut ours: Vec<&NodeView> = views
            .iter()
            .filter(|v| v.class == Class::Ours && v.node.ready && v.free_slots > 0)
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
            missing -= i64::from(v.free_slots);
            uncordoned.push(&v.node.name);
            actions.push(Action::Uncordon {
                node: v.node.name.clone(),
                reason: format!(
                    "available slots {available} < buffer {}: node has {} free slots and {} servers",
                    cfg.buffer, v.free_slots, v.servers
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
                    // Nothing to learn a node's size from: order one to learn it.
                    if target_size < cfg.max_nodes {
                        new_target = target_size + 1;
                    }
                    warnings.push(
                        "empty pool and no node-template: growing by one node to learn its size"
                            .to_string(),
                    );
                }
            }
        }
    }

    if new_target < cfg.min_nodes {
        new_target = cfg.min_nodes;
    }
    if new_target > target_size {
        let reason = if available < buffer {
            format!(
                "available slots {available} (free {free_slots} + incoming {incoming_slots} - pending {pending_servers}) < buffer {}; {} slots per new node",
                cfg.buffer,
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
    if settled && available > buffer {
        if let Some(per_node) = slots_per_new_node.filter(|s| *s > 0) {
            let mut budget = (available - buffer) / i64::from(per_node);
            let mut remaining = available;
            let mut active = summary.active_nodes;
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
                    .then(b.free_slots.cmp(&a.free_slots))
                    .then(a.node.name.cmp(&b.node.name))
            });
            for v in candidates {
                if budget <= 0 || active <= cfg.min_nodes {
                    break;
                }
                let after = remaining - i64::from(v.free_slots);
                if after < buffer {
                    continue;
                }
                actions.push(Action::Cordon {
                    node: v.node.name.clone(),
                    reason: format!(
                        "available slots {remaining} exceed buffer {} by at least a node ({per_node} slots); node has {} servers, {after} slots remain",
                        cfg.buffer, v.servers
                    ),
                });
                remaining = after;
                active -= 1;
                budget -= 1;
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
        let age = now.duration_since(stamp).as_secs();
        if v.servers == 0 && age >= i64::try_from(cfg.empty_node_expiration_sec).unwrap_or(i64::MAX)
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
            },
            reason: format!(
                "cordoned by kubescaler at {stamp}, no server pods, past empty-node-expiration-sec {}",
                cfg.empty_node_expiration_sec
            ),
        });
    }

    Plan {
        actions,
        warnings,
        summary,
    }
}
