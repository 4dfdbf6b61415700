//! The watch caches, reduced to what the planner needs: one compact [`NodeState`] per
//! selector-matched node and one [`PodState`] per non-terminal pod, fed by watcher events.
//!
//! Pure: no client, no I/O. The watch tasks in [`super::kube`] feed it [`Event`]s and publish
//! the [`ChangeEvent`]s it returns; [`ClusterIndex::snapshot`] reads it without an API call.
//!
//! Every live event (`Apply`, `Delete`) is one hash map lookup and one insert or removal. A
//! relist (`Init`, `InitApply`..., `InitDone`) fills a side buffer that replaces the live map
//! in one step at `InitDone`, so a reader never sees half a list and objects deleted while the
//! watch was down disappear.

use std::collections::HashMap;

use k8s_openapi::api::core::v1::{Node, Pod};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use kube::core::DynamicObject;
use kube::runtime::watcher::Event;

use super::ChangeEvent;
use crate::agones::{self, FleetBuffer, GameServerInfo};
use crate::model::{
    ClusterSnapshot, NodeState, PodState, Resources, Taint, CORDONED_BY_ANNOTATION,
    CORDONED_BY_VALUE, DELETION_ACCEPTED_ANNOTATION, FENCE_TAINT, FIELD_MANAGER,
    KUBESCALER_ANNOTATIONS, TIMESTAMP_ANNOTATION,
};
use crate::quantity::{parse_cpu_millis, parse_memory_bytes};
use crate::scheduling::pod_requests;

/// Pod phases after which a pod holds no resources and never runs again.
const TERMINAL_PHASES: [&str; 2] = ["Succeeded", "Failed"];

/// Reduces a Node to what the planner needs; `None` for a node without a name (which the API
/// server never sends).
pub fn node_state(node: &Node) -> Option<NodeState> {
    let meta = &node.metadata;
    let name = meta.name.clone()?;
    let spec = node.spec.as_ref();
    let status = node.status.as_ref();
    let allocatable = status.and_then(|s| s.allocatable.as_ref());
    let quantity = |key: &str| {
        allocatable
            .and_then(|a| a.get(key))
            .map(|q: &Quantity| &q.0)
    };
    // The API server validated these quantities; an unparsable one counts as zero, which
    // makes the node useless to the planner rather than failing the whole pass.
    let cpu_millis = quantity("cpu")
        .and_then(|q| parse_cpu_millis(q).ok())
        .unwrap_or(0);
    let memory_bytes = quantity("memory")
        .and_then(|q| parse_memory_bytes(q).ok())
        .unwrap_or(0);
    // `pods` is a plain count, but still a quantity ("110", in theory "1k"): read it through
    // the millicore parser, which accepts every quantity form, and scale back.
    let allocatable_pods = quantity("pods")
        .and_then(|q| parse_cpu_millis(q).ok())
        .map(|millis| u32::try_from(millis / 1000).unwrap_or(u32::MAX))
        .unwrap_or(0);
    let ready = status
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|conds| {
            conds
                .iter()
                .any(|c| c.type_ == "Ready" && c.status == "True")
        });
    let taints: Vec<Taint> = spec
        .and_then(|s| s.taints.as_ref())
        .map(|taints| {
            taints
                .iter()
                // An effect outside the three the API server accepts cannot occur; skipping
                // it beats failing the node.
                .filter_map(|t| {
                    Some(Taint {
                        key: t.key.clone(),
                        value: t.value.clone().unwrap_or_default(),
                        effect: t.effect.parse().ok()?,
                    })
                })
                .collect()
        })
        .unwrap_or_default();
    let annotation = |key: &str| meta.annotations.as_ref().and_then(|a| a.get(key));
    let unschedulable = spec.and_then(|s| s.unschedulable).unwrap_or(false);
    let marked = annotation(CORDONED_BY_ANNOTATION).is_some_and(|v| v == CORDONED_BY_VALUE);
    let has_kubescaler_marks = KUBESCALER_ANNOTATIONS
        .iter()
        .any(|key| annotation(key).is_some())
        || taints.iter().any(|t| t.key == FENCE_TAINT);
    Some(NodeState {
        name,
        provider_id: spec.and_then(|s| s.provider_id.clone()),
        labels: meta.labels.clone().unwrap_or_default(),
        identity_annotations: crate::provider::identity_annotations()
            .filter_map(|key| annotation(key).map(|v| (key.to_string(), v.clone())))
            .collect(),
        allocatable: Resources {
            cpu_millis,
            memory_bytes,
        },
        allocatable_pods,
        ready,
        unschedulable,
        taints,
        cordoned_by_kubescaler: unschedulable
            && marked
            && unschedulable_manager(node) == Some(FIELD_MANAGER),
        has_kubescaler_marks,
        deletion_accepted: annotation(DELETION_ACCEPTED_ANNOTATION).cloned(),
        cordon_timestamp: annotation(TIMESTAMP_ANNOTATION).cloned(),
        created: meta.creation_timestamp.as_ref().map(|t| t.0),
    })
}

/// The field manager that last set `spec.unschedulable`, from `metadata.managedFields`: the
/// API server's own record of who cordoned the node, which no annotation can fake.
pub fn unschedulable_manager(node: &Node) -> Option<&str> {
    node.metadata
        .managed_fields
        .as_deref()?
        .iter()
        .filter(|entry| entry.subresource.as_deref().unwrap_or_default().is_empty())
        .filter(|entry| {
            entry
                .fields_v1
                .as_ref()
                .and_then(|f| f.0.get("f:spec"))
                .and_then(|spec| spec.get("f:unschedulable"))
                .is_some()
        })
        // Several managers can share a field set to the same value; the latest write wins.
        .max_by(|a, b| {
            a.time
                .as_ref()
                .map(|t| t.0)
                .cmp(&b.time.as_ref().map(|t| t.0))
        })
        .and_then(|entry| entry.manager.as_deref())
}

/// `namespace/name` of a pod; `None` without a name (which the API server never sends).
pub fn pod_key(pod: &Pod) -> Option<String> {
    let name = pod.metadata.name.as_deref()?;
    let namespace = pod.metadata.namespace.as_deref().unwrap_or_default();
    Some(format!("{namespace}/{name}"))
}

/// `namespace/name` of a namespaced custom object.
fn dynamic_key(object: &DynamicObject) -> Option<String> {
    let name = object.metadata.name.as_deref()?;
    let namespace = object.metadata.namespace.as_deref().unwrap_or_default();
    Some(format!("{namespace}/{name}"))
}

/// Whether the pod is Succeeded or Failed: it will never run again and holds nothing.
pub fn is_terminal(pod: &Pod) -> bool {
    pod.status
        .as_ref()
        .and_then(|s| s.phase.as_deref())
        .is_some_and(|phase| TERMINAL_PHASES.contains(&phase))
}

/// Reduces a Pod to what the planner needs. `server_label` is the `(name, value)` pair that
/// marks game server pods. `None` for a terminal pod (it must leave the index) or a nameless
/// one.
pub fn pod_state(pod: &Pod, server_label: &(String, String)) -> Option<PodState> {
    if is_terminal(pod) {
        return None;
    }
    let key = pod_key(pod)?;
    let meta = &pod.metadata;
    let spec = pod.spec.as_ref();
    Some(PodState {
        key,
        node: spec.and_then(|s| s.node_name.clone()),
        requests: spec
            .map(|spec| pod_requests(spec, pod.status.as_ref()))
            .unwrap_or_default(),
        is_server: meta
            .labels
            .as_ref()
            .and_then(|l| l.get(&server_label.0))
            .is_some_and(|v| *v == server_label.1),
        is_daemon: meta
            .owner_references
            .as_ref()
            .is_some_and(|refs| refs.iter().any(|r| r.kind == "DaemonSet")),
        game_server: game_server_of(pod),
    })
}

/// `namespace/name` of the GameServer whose pod this is (Agones' role and name labels).
pub fn game_server_of(pod: &Pod) -> Option<String> {
    let labels = pod.metadata.labels.as_ref()?;
    if labels.get(agones::ROLE_LABEL).map(String::as_str) != Some(agones::ROLE_GAMESERVER) {
        return None;
    }
    let name = labels.get(agones::GAMESERVER_LABEL)?;
    let namespace = pod.metadata.namespace.as_deref().unwrap_or_default();
    Some(format!("{namespace}/{name}"))
}

/// The entries of an optional store, sorted by key (none without the store).
fn sorted_entries<V: Clone>(store: Option<&Store<V>>) -> Vec<V> {
    let mut entries: Vec<(&String, &V)> = store.iter().flat_map(|s| s.live.iter()).collect();
    entries.sort_unstable_by(|a, b| a.0.cmp(b.0));
    entries.into_iter().map(|(_, v)| v.clone()).collect()
}

/// What an indexed entry change means to the planner.
trait Entry: PartialEq {
    /// The event for `key` going from `old` to `new` (`None`: absent), if it matters.
    fn change(key: &str, old: Option<&Self>, new: Option<&Self>) -> Option<ChangeEvent>;
}

impl Entry for NodeState {
    /// Any difference matters: a NodeState holds only planning inputs (readiness,
    /// schedulability, taints, allocatable, kubescaler's annotations, identity), so the
    /// heartbeat-only updates a kubelet makes every few seconds compare equal and are dropped.
    fn change(key: &str, old: Option<&Self>, new: Option<&Self>) -> Option<ChangeEvent> {
        (old != new).then(|| ChangeEvent::Node(key.to_string()))
    }
}

impl Entry for GameServerInfo {
    /// A change of state, node or deletion matters; a new resourceVersion alone does not.
    fn change(key: &str, old: Option<&Self>, new: Option<&Self>) -> Option<ChangeEvent> {
        let meaning = |gs: &GameServerInfo| {
            (
                gs.state,
                gs.node.clone(),
                gs.being_deleted,
                gs.fleet.clone(),
            )
        };
        (old.map(meaning) != new.map(meaning)).then(|| ChangeEvent::GameServer(key.to_string()))
    }
}

impl Entry for FleetBuffer {
    fn change(key: &str, old: Option<&Self>, new: Option<&Self>) -> Option<ChangeEvent> {
        (old != new).then(|| ChangeEvent::GameServer(key.to_string()))
    }
}

impl Entry for PodState {
    /// Only server pods: they are what the buffer counts. Other pods change the free room too,
    /// but they come and go all the time and the periodic tick picks them up.
    fn change(key: &str, old: Option<&Self>, new: Option<&Self>) -> Option<ChangeEvent> {
        let counts = |p: &PodState| p.is_server || p.game_server.is_some();
        let server = old.is_some_and(counts) || new.is_some_and(counts);
        (server && old != new).then(|| ChangeEvent::ServerPod(key.to_string()))
    }
}

/// Where one cache stands with respect to the API server.
#[derive(Clone, Debug, PartialEq, Eq)]
enum SyncState {
    /// No full list has completed yet.
    Initial,
    /// The last full list completed and no watch error happened since.
    Synced,
    /// The watch failed (the reason); stale until the next full list completes.
    Desynced(String),
}

/// One cache: the live entries by key, plus the buffer of a relist in progress.
#[derive(Debug)]
struct Store<V> {
    /// What it holds, for messages (`nodes`, `pods`).
    what: &'static str,
    live: HashMap<String, V>,
    /// `Some` between `Init` and `InitDone`.
    relist: Option<HashMap<String, V>>,
    sync: SyncState,
}

impl<V: Entry> Store<V> {
    fn new(what: &'static str) -> Self {
        Self {
            what,
            live: HashMap::new(),
            relist: None,
            sync: SyncState::Initial,
        }
    }

    /// Applies one watcher event. `key` extracts an object's key, `state` its entry (`None`:
    /// the object must not be indexed, e.g. a terminal pod, so it is removed).
    fn on_event<K>(
        &mut self,
        event: Event<K>,
        key: impl Fn(&K) -> Option<String>,
        state: impl Fn(&K) -> Option<V>,
    ) -> Vec<ChangeEvent> {
        match event {
            Event::Apply(obj) => {
                let Some(k) = key(&obj) else {
                    return Vec::new();
                };
                match state(&obj) {
                    Some(new) => {
                        let change = V::change(&k, self.live.get(&k), Some(&new));
                        self.live.insert(k, new);
                        change.into_iter().collect()
                    }
                    None => self.remove(&k),
                }
            }
            Event::Delete(obj) => match key(&obj) {
                Some(k) => self.remove(&k),
                None => Vec::new(),
            },
            Event::Init => {
                self.relist = Some(HashMap::new());
                Vec::new()
            }
            Event::InitApply(obj) => {
                // The watcher always sends Init first; start a buffer anyway rather than
                // write a partial list into the live map.
                let buffer = self.relist.get_or_insert_with(HashMap::new);
                if let Some(k) = key(&obj) {
                    match state(&obj) {
                        Some(new) => {
                            buffer.insert(k, new);
                        }
                        None => {
                            buffer.remove(&k);
                        }
                    }
                }
                Vec::new()
            }
            Event::InitDone => self.finish_relist(),
        }
    }

    fn remove(&mut self, key: &str) -> Vec<ChangeEvent> {
        let old = self.live.remove(key);
        V::change(key, old.as_ref(), None).into_iter().collect()
    }

    /// Swaps the relist buffer in and reports what differs from before, then `Resynced`.
    fn finish_relist(&mut self) -> Vec<ChangeEvent> {
        let fresh = self.relist.take().unwrap_or_default();
        let old = std::mem::replace(&mut self.live, fresh);
        self.sync = SyncState::Synced;
        let mut events: Vec<ChangeEvent> = self
            .live
            .iter()
            .filter_map(|(k, new)| V::change(k, old.get(k), Some(new)))
            .chain(
                old.iter()
                    .filter(|(k, _)| !self.live.contains_key(*k))
                    .filter_map(|(k, gone)| V::change(k, Some(gone), None)),
            )
            .collect();
        events.push(ChangeEvent::Resynced);
        events
    }

    /// The watch failed: the contents may miss changes until the next relist completes.
    fn desync(&mut self, reason: String) {
        // A half-received list is useless; the restarted watcher lists from scratch.
        self.relist = None;
        self.sync = SyncState::Desynced(reason);
    }

    /// `Err` with a reason unless synced.
    fn check_synced(&self) -> Result<(), String> {
        match &self.sync {
            SyncState::Synced => Ok(()),
            SyncState::Initial => Err(format!("{}: waiting for the first full list", self.what)),
            SyncState::Desynced(reason) => Err(format!(
                "{}: watch failed ({reason}), waiting for a full relist",
                self.what
            )),
        }
    }
}

/// The node and pod caches behind [`super::KubeCluster`], and in Agones mode the GameServer
/// and FleetAutoscaler caches.
#[derive(Debug)]
pub struct ClusterIndex {
    server_label: (String, String),
    nodes: Store<NodeState>,
    pods: Store<PodState>,
    /// `Some` in Agones mode.
    game_servers: Option<Store<GameServerInfo>>,
    /// `Some` with `agones-buffer: fleet-autoscalers`.
    fleet_buffers: Option<Store<FleetBuffer>>,
}

impl ClusterIndex {
    /// An empty, not yet synced index; `server_label` is the `(name, value)` pair that marks
    /// game server pods.
    pub fn new(server_label: (String, String)) -> Self {
        Self {
            server_label,
            nodes: Store::new("nodes"),
            pods: Store::new("pods"),
            game_servers: None,
            fleet_buffers: None,
        }
    }

    /// Adds the GameServer cache (and the FleetAutoscaler cache if `fleet_buffers`): the
    /// snapshot then waits for them to sync too.
    pub fn enable_agones(&mut self, fleet_buffers: bool) {
        self.game_servers = Some(Store::new("gameservers"));
        if fleet_buffers {
            self.fleet_buffers = Some(Store::new("fleetautoscalers"));
        }
    }

    /// Applies a GameServer watcher event.
    pub fn on_game_server_event(&mut self, event: Event<DynamicObject>) -> Vec<ChangeEvent> {
        match &mut self.game_servers {
            Some(store) => store.on_event(event, dynamic_key, agones::game_server_info),
            None => Vec::new(),
        }
    }

    /// Marks the GameServer cache stale after a watch error.
    pub fn desync_game_servers(&mut self, reason: String) {
        if let Some(store) = &mut self.game_servers {
            store.desync(reason);
        }
    }

    /// Applies a FleetAutoscaler watcher event (only Buffer policies are kept).
    pub fn on_fleet_autoscaler_event(&mut self, event: Event<DynamicObject>) -> Vec<ChangeEvent> {
        match &mut self.fleet_buffers {
            Some(store) => store.on_event(event, dynamic_key, agones::fleet_buffer),
            None => Vec::new(),
        }
    }

    /// Marks the FleetAutoscaler cache stale after a watch error.
    pub fn desync_fleet_autoscalers(&mut self, reason: String) {
        if let Some(store) = &mut self.fleet_buffers {
            store.desync(reason);
        }
    }

    /// Applies a node watcher event (the watch is already restricted to the node selector)
    /// and returns the change events it causes.
    pub fn on_node_event(&mut self, event: Event<Node>) -> Vec<ChangeEvent> {
        self.nodes
            .on_event(event, |n: &Node| n.metadata.name.clone(), node_state)
    }

    /// Applies a pod watcher event and returns the change events it causes. A pod that turned
    /// terminal leaves the index.
    pub fn on_pod_event(&mut self, event: Event<Pod>) -> Vec<ChangeEvent> {
        let label = &self.server_label;
        self.pods
            .on_event(event, pod_key, |p: &Pod| pod_state(p, label))
    }

    /// Marks the node cache stale after a watch error, until its next relist completes.
    pub fn desync_nodes(&mut self, reason: String) {
        self.nodes.desync(reason);
    }

    /// Marks the pod cache stale after a watch error, until its next relist completes.
    pub fn desync_pods(&mut self, reason: String) {
        self.pods.desync(reason);
    }

    /// Number of indexed nodes and pods, for logs.
    pub fn counts(&self) -> (usize, usize) {
        (self.nodes.live.len(), self.pods.live.len())
    }

    /// Whether both caches are synced.
    pub fn is_synced(&self) -> bool {
        self.sync_problems().is_empty()
    }

    fn sync_problems(&self) -> Vec<String> {
        [
            Some(self.nodes.check_synced()),
            Some(self.pods.check_synced()),
            self.game_servers.as_ref().map(Store::check_synced),
            self.fleet_buffers.as_ref().map(Store::check_synced),
        ]
        .into_iter()
        .flatten()
        .filter_map(Result::err)
        .collect()
    }

    /// The planner's view: every indexed node, the pods bound to them and the unbound server
    /// pods, sorted by name and key so that equal caches give equal snapshots. `Err` says
    /// which cache is not synced.
    pub fn snapshot(&self) -> Result<ClusterSnapshot, String> {
        let problems = self.sync_problems();
        if !problems.is_empty() {
            return Err(problems.join("; "));
        }
        let mut nodes: Vec<NodeState> = self.nodes.live.values().cloned().collect();
        // Node order makes plans reproducible; pod order does not matter to the planner (it
        // only sums and counts them), and sorting 30,000 pods per pass would cost more than
        // planning.
        nodes.sort_unstable_by(|a, b| a.name.cmp(&b.name));
        let pods: Vec<PodState> = self
            .pods
            .live
            .values()
            .filter(|p| match &p.node {
                Some(node) => self.nodes.live.contains_key(node),
                None => p.is_server || p.game_server.is_some(),
            })
            .cloned()
            .collect();
        Ok(ClusterSnapshot {
            nodes,
            pods,
            game_servers: sorted_entries(self.game_servers.as_ref()),
            fleet_buffers: sorted_entries(self.fleet_buffers.as_ref()),
        })
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use k8s_openapi::api::core::v1::{
        Container, NodeCondition, NodeSpec, NodeStatus, PodSpec, PodStatus, ResourceRequirements,
        Taint as K8sTaint,
    };
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference, Time};

    use super::*;
    use crate::model::TaintEffect;

    fn label() -> (String, String) {
        ("app".to_string(), "gameserver".to_string())
    }

    fn q(s: &str) -> Quantity {
        Quantity(s.to_string())
    }

    fn node(name: &str) -> Node {
        Node {
            metadata: ObjectMeta {
                name: Some(name.to_string()),
                labels: Some(BTreeMap::from([("pool".to_string(), "games".to_string())])),
                ..Default::default()
            },
            spec: Some(NodeSpec::default()),
            status: Some(NodeStatus {
                allocatable: Some(BTreeMap::from([
                    ("cpu".to_string(), q("3900m")),
                    ("memory".to_string(), q("7Gi")),
                    ("pods".to_string(), q("110")),
                    ("ephemeral-storage".to_string(), q("50Gi")),
                ])),
                conditions: Some(vec![NodeCondition {
                    type_: "Ready".to_string(),
                    status: "True".to_string(),
                    ..Default::default()
                }]),
                ..Default::default()
            }),
        }
    }

    fn pod(ns: &str, name: &str, node: Option<&str>, server: bool, cpu: &str) -> Pod {
        let mut labels = BTreeMap::new();
        if server {
            labels.insert("app".to_string(), "gameserver".to_string());
        }
        Pod {
            metadata: ObjectMeta {
                name: Some(name.to_string()),
                namespace: Some(ns.to_string()),
                labels: Some(labels),
                ..Default::default()
            },
            spec: Some(PodSpec {
                node_name: node.map(str::to_string),
                containers: vec![Container {
                    name: "c".to_string(),
                    resources: Some(ResourceRequirements {
                        requests: Some(BTreeMap::from([("cpu".to_string(), q(cpu))])),
                        ..Default::default()
                    }),
                    ..Default::default()
                }],
                ..Default::default()
            }),
            status: Some(PodStatus {
                phase: Some(if node.is_some() { "Running" } else { "Pending" }.to_string()),
                ..Default::default()
            }),
        }
    }

    fn with_phase(mut p: Pod, phase: &str) -> Pod {
        p.status = Some(PodStatus {
            phase: Some(phase.to_string()),
            ..Default::default()
        });
        p
    }

    /// An index whose two caches completed an (empty) first list.
    fn synced() -> ClusterIndex {
        let mut idx = ClusterIndex::new(label());
        for ev in [Event::Init, Event::InitDone] {
            idx.on_node_event(ev);
        }
        for ev in [Event::Init, Event::InitDone] {
            idx.on_pod_event(ev);
        }
        idx
    }

    #[test]
    fn node_allocatable_readiness_and_identity_are_parsed() {
        let mut n = node("n1");
        n.metadata.creation_timestamp = Some(Time("2024-05-01T10:00:00Z".parse().unwrap()));
        n.spec = Some(NodeSpec {
            provider_id: Some("digitalocean://42".to_string()),
            ..Default::default()
        });
        let s = node_state(&n).unwrap();
        assert_eq!(s.name, "n1");
        assert_eq!(
            s.allocatable,
            Resources {
                cpu_millis: 3900,
                memory_bytes: 7 << 30
            }
        );
        assert_eq!(s.allocatable_pods, 110);
        assert!(s.ready);
        assert!(!s.unschedulable);
        assert!(s.taints.is_empty());
        assert_eq!(s.provider_id.as_deref(), Some("digitalocean://42"));
        assert_eq!(s.labels.get("pool").map(String::as_str), Some("games"));
        assert_eq!(s.created, Some("2024-05-01T10:00:00Z".parse().unwrap()));
    }

    #[test]
    fn node_without_annotations_status_or_spec_is_a_bare_unready_node() {
        let n = Node {
            metadata: ObjectMeta {
                name: Some("bare".to_string()),
                ..Default::default()
            },
            ..Default::default()
        };
        let s = node_state(&n).unwrap();
        assert!(!s.ready);
        assert!(!s.unschedulable);
        assert!(!s.cordoned_by_kubescaler);
        assert_eq!(s.cordon_timestamp, None);
        assert_eq!(s.allocatable, Resources::default());
        assert_eq!(s.allocatable_pods, 0);
        assert!(s.labels.is_empty());
        assert_eq!(s.created, None);
    }

    #[test]
    fn node_ready_false_or_unknown_is_not_ready() {
        for status in ["False", "Unknown"] {
            let mut n = node("n1");
            if let Some(st) = n.status.as_mut() {
                st.conditions = Some(vec![NodeCondition {
                    type_: "Ready".to_string(),
                    status: status.to_string(),
                    ..Default::default()
                }]);
            }
            assert!(!node_state(&n).unwrap().ready, "{status}");
        }
    }

    #[test]
    fn node_cordon_taints_and_kubescaler_annotations_are_parsed() {
        let mut n = node("n1");
        n.spec = Some(NodeSpec {
            unschedulable: Some(true),
            taints: Some(vec![
                K8sTaint {
                    key: "dedicated".to_string(),
                    value: Some("games".to_string()),
                    effect: "NoSchedule".to_string(),
                    ..Default::default()
                },
                K8sTaint {
                    key: "node.kubernetes.io/unschedulable".to_string(),
                    value: None,
                    effect: "NoSchedule".to_string(),
                    ..Default::default()
                },
            ]),
            ..Default::default()
        });
        n.metadata.annotations = Some(BTreeMap::from([
            (
                CORDONED_BY_ANNOTATION.to_string(),
                CORDONED_BY_VALUE.to_string(),
            ),
            (
                TIMESTAMP_ANNOTATION.to_string(),
                "2024-05-01T10:00:00Z".to_string(),
            ),
        ]));
        n.metadata.managed_fields = Some(vec![unschedulable_set_by(FIELD_MANAGER, 10)]);
        let s = node_state(&n).unwrap();
        assert!(s.unschedulable);
        assert!(s.cordoned_by_kubescaler);
        assert!(s.has_kubescaler_marks);
        assert_eq!(s.cordon_timestamp.as_deref(), Some("2024-05-01T10:00:00Z"));
        assert_eq!(
            s.taints,
            vec![
                Taint {
                    key: "dedicated".to_string(),
                    value: "games".to_string(),
                    effect: TaintEffect::NoSchedule
                },
                Taint {
                    key: "node.kubernetes.io/unschedulable".to_string(),
                    value: String::new(),
                    effect: TaintEffect::NoSchedule
                },
            ]
        );
    }

    /// A managedFields entry of `manager` owning `spec.unschedulable`, written at `secs`.
    fn unschedulable_set_by(
        manager: &str,
        secs: i64,
    ) -> k8s_openapi::apimachinery::pkg::apis::meta::v1::ManagedFieldsEntry {
        use k8s_openapi::apimachinery::pkg::apis::meta::v1::{FieldsV1, ManagedFieldsEntry, Time};
        ManagedFieldsEntry {
            manager: Some(manager.to_string()),
            operation: Some("Update".to_string()),
            fields_v1: Some(FieldsV1(
                serde_json::json!({"f:spec": {"f:unschedulable": {}}}),
            )),
            time: Some(Time(jiff::Timestamp::from_second(secs).unwrap())),
            ..Default::default()
        }
    }

    #[test]
    fn a_person_who_cordons_after_an_uncordon_owns_the_cordon_whatever_the_annotations() {
        // kubescaler cordoned (its annotations), a person uncordoned and cordoned again: the
        // annotations are still there, but the API server says who set spec.unschedulable.
        let mut n = node("n1");
        n.spec = Some(NodeSpec {
            unschedulable: Some(true),
            ..Default::default()
        });
        n.metadata.annotations = Some(BTreeMap::from([
            (
                CORDONED_BY_ANNOTATION.to_string(),
                CORDONED_BY_VALUE.to_string(),
            ),
            (
                TIMESTAMP_ANNOTATION.to_string(),
                "2024-05-01T10:00:00Z".to_string(),
            ),
        ]));
        n.metadata.managed_fields = Some(vec![unschedulable_set_by("kubectl-cordon", 20)]);
        let s = node_state(&n).unwrap();
        assert!(
            !s.cordoned_by_kubescaler,
            "a person's cordon read as kubescaler's"
        );
        assert!(s.has_kubescaler_marks);
        // No record of who cordoned it: not kubescaler's either.
        n.metadata.managed_fields = None;
        assert!(!node_state(&n).unwrap().cordoned_by_kubescaler);
    }

    #[test]
    fn node_cordoned_by_someone_else_is_not_kubescalers() {
        let mut n = node("n1");
        n.metadata.annotations = Some(BTreeMap::from([(
            CORDONED_BY_ANNOTATION.to_string(),
            "an-admin".to_string(),
        )]));
        assert!(!node_state(&n).unwrap().cordoned_by_kubescaler);
    }

    #[test]
    fn pod_server_daemon_and_requests_are_parsed() {
        let server = pod_state(&pod("games", "gs-1", Some("n1"), true, "500m"), &label()).unwrap();
        assert_eq!(server.key, "games/gs-1");
        assert_eq!(server.node.as_deref(), Some("n1"));
        assert!(server.is_server);
        assert!(!server.is_daemon);
        assert_eq!(server.requests.cpu_millis, 500);

        let mut other_value = pod("games", "gs-2", None, false, "1");
        other_value.metadata.labels =
            Some(BTreeMap::from([("app".to_string(), "lobby".to_string())]));
        let s = pod_state(&other_value, &label()).unwrap();
        assert!(!s.is_server);
        assert_eq!(s.node, None);

        let mut ds = pod("kube-system", "proxy-x", Some("n1"), false, "100m");
        ds.metadata.owner_references = Some(vec![OwnerReference {
            kind: "DaemonSet".to_string(),
            name: "proxy".to_string(),
            ..Default::default()
        }]);
        let s = pod_state(&ds, &label()).unwrap();
        assert!(s.is_daemon);
        assert!(!s.is_server);

        let mut rs = pod("default", "web-1", Some("n1"), false, "100m");
        rs.metadata.owner_references = Some(vec![OwnerReference {
            kind: "ReplicaSet".to_string(),
            name: "web".to_string(),
            ..Default::default()
        }]);
        assert!(!pod_state(&rs, &label()).unwrap().is_daemon);
    }

    #[test]
    fn pod_requests_come_from_the_scheduler_accounting() {
        let mut p = pod("games", "gs-1", Some("n1"), true, "500m");
        if let Some(spec) = p.spec.as_mut() {
            spec.overhead = Some(BTreeMap::from([("cpu".to_string(), q("250m"))]));
            spec.init_containers = Some(vec![Container {
                name: "init".to_string(),
                resources: Some(ResourceRequirements {
                    requests: Some(BTreeMap::from([("memory".to_string(), q("1Gi"))])),
                    ..Default::default()
                }),
                ..Default::default()
            }]);
        }
        let s = pod_state(&p, &label()).unwrap();
        assert_eq!(
            s.requests,
            pod_requests(p.spec.as_ref().unwrap(), p.status.as_ref())
        );
        assert_eq!(
            s.requests,
            Resources {
                cpu_millis: 750,
                memory_bytes: 1 << 30
            }
        );
    }

    #[test]
    fn terminal_pods_are_not_indexed_states() {
        for phase in ["Succeeded", "Failed"] {
            let p = with_phase(pod("games", "gs-1", Some("n1"), true, "1"), phase);
            assert!(is_terminal(&p));
            assert_eq!(pod_state(&p, &label()), None);
        }
        let p = with_phase(pod("games", "gs-1", Some("n1"), true, "1"), "Unknown");
        assert!(!is_terminal(&p));
    }

    #[test]
    fn snapshot_is_not_synced_until_both_caches_listed() {
        let mut idx = ClusterIndex::new(label());
        let err = idx.snapshot().unwrap_err();
        assert!(err.contains("nodes") && err.contains("pods"), "{err}");
        idx.on_node_event(Event::Init);
        idx.on_node_event(Event::InitApply(node("n1")));
        idx.on_node_event(Event::InitDone);
        let err = idx.snapshot().unwrap_err();
        assert!(!err.contains("nodes") && err.contains("pods"), "{err}");
        assert!(!idx.is_synced());
        idx.on_pod_event(Event::Init);
        idx.on_pod_event(Event::InitDone);
        assert!(idx.is_synced());
        assert_eq!(idx.snapshot().unwrap().nodes.len(), 1);
    }

    #[test]
    fn watch_error_desyncs_until_the_next_relist_completes() {
        let mut idx = synced();
        idx.on_node_event(Event::Apply(node("n1")));
        idx.desync_nodes("connection reset".to_string());
        let err = idx.snapshot().unwrap_err();
        assert!(err.contains("connection reset"), "{err}");
        idx.on_node_event(Event::Init);
        idx.on_node_event(Event::InitApply(node("n1")));
        // Mid-relist: still not synced.
        assert!(idx.snapshot().is_err());
        idx.on_node_event(Event::InitDone);
        assert_eq!(idx.snapshot().unwrap().nodes.len(), 1);
        idx.desync_pods("gone".to_string());
        assert!(idx.snapshot().unwrap_err().starts_with("pods"));
    }

    #[test]
    fn relist_replaces_contents_atomically_at_init_done() {
        let mut idx = synced();
        idx.on_node_event(Event::Apply(node("old-1")));
        idx.on_node_event(Event::Apply(node("kept")));
        idx.on_pod_event(Event::Apply(pod("g", "gone", Some("kept"), true, "1")));
        idx.on_pod_event(Event::Apply(pod("g", "stays", Some("kept"), true, "1")));

        idx.on_node_event(Event::Init);
        idx.on_node_event(Event::InitApply(node("kept")));
        idx.on_node_event(Event::InitApply(node("new-1")));
        // Until InitDone the live contents are the old ones.
        assert_eq!(idx.counts().0, 2);
        assert!(idx.nodes.live.contains_key("old-1"));
        let mut events = idx.on_node_event(Event::InitDone);
        events.sort_by_key(|e| format!("{e:?}"));
        assert_eq!(
            events,
            vec![
                ChangeEvent::Node("new-1".to_string()),
                ChangeEvent::Node("old-1".to_string()),
                ChangeEvent::Resynced,
            ]
        );
        let names: Vec<String> = idx
            .snapshot()
            .unwrap()
            .nodes
            .into_iter()
            .map(|n| n.name)
            .collect();
        assert_eq!(names, vec!["kept", "new-1"]);

        idx.on_pod_event(Event::Init);
        idx.on_pod_event(Event::InitApply(pod("g", "stays", Some("kept"), true, "1")));
        // A terminal pod in a list (the field selector normally hides it) is not indexed.
        idx.on_pod_event(Event::InitApply(with_phase(
            pod("g", "done", Some("kept"), true, "1"),
            "Succeeded",
        )));
        let events = idx.on_pod_event(Event::InitDone);
        assert_eq!(
            events,
            vec![
                ChangeEvent::ServerPod("g/gone".to_string()),
                ChangeEvent::Resynced
            ]
        );
        let keys: Vec<String> = idx
            .snapshot()
            .unwrap()
            .pods
            .into_iter()
            .map(|p| p.key)
            .collect();
        assert_eq!(keys, vec!["g/stays"]);
    }

    #[test]
    fn error_mid_relist_discards_the_partial_list() {
        let mut idx = synced();
        idx.on_node_event(Event::Apply(node("n1")));
        idx.on_node_event(Event::Init);
        idx.on_node_event(Event::InitApply(node("partial")));
        idx.desync_nodes("list failed".to_string());
        idx.on_node_event(Event::Init);
        idx.on_node_event(Event::InitApply(node("n1")));
        idx.on_node_event(Event::InitDone);
        let names: Vec<String> = idx
            .snapshot()
            .unwrap()
            .nodes
            .into_iter()
            .map(|n| n.name)
            .collect();
        assert_eq!(names, vec!["n1"]);
    }

    #[test]
    fn pod_turning_terminal_on_apply_leaves_the_index() {
        let mut idx = synced();
        idx.on_node_event(Event::Apply(node("n1")));
        let p = pod("g", "gs", Some("n1"), true, "1");
        assert_eq!(
            idx.on_pod_event(Event::Apply(p.clone())),
            vec![ChangeEvent::ServerPod("g/gs".to_string())]
        );
        assert_eq!(
            idx.on_pod_event(Event::Apply(with_phase(p.clone(), "Failed"))),
            vec![ChangeEvent::ServerPod("g/gs".to_string())]
        );
        assert_eq!(idx.counts().1, 0);
        assert!(idx.snapshot().unwrap().pods.is_empty());
        // The Delete that follows is a no-op.
        assert!(idx.on_pod_event(Event::Delete(p)).is_empty());
    }

    #[test]
    fn snapshot_keeps_pods_on_selected_nodes_and_unbound_servers_only() {
        let mut idx = synced();
        idx.on_node_event(Event::Apply(node("n1")));
        for p in [
            pod("g", "on-selected", Some("n1"), true, "1"),
            pod("kube-system", "ds-on-selected", Some("n1"), false, "100m"),
            pod("g", "on-other-node", Some("elsewhere"), true, "1"),
            pod(
                "default",
                "web-on-other-node",
                Some("elsewhere"),
                false,
                "1",
            ),
            pod("g", "pending-server", None, true, "1"),
            pod("default", "pending-web", None, false, "1"),
        ] {
            idx.on_pod_event(Event::Apply(p));
        }
        let snap = idx.snapshot().unwrap();
        // Pod order is not part of the contract (the planner only sums pods).
        let mut keys: Vec<&str> = snap.pods.iter().map(|p| p.key.as_str()).collect();
        keys.sort_unstable();
        assert_eq!(
            keys,
            vec![
                "g/on-selected",
                "g/pending-server",
                "kube-system/ds-on-selected"
            ]
        );
        // A pod bound to a node that later leaves the selection leaves the snapshot too.
        idx.on_node_event(Event::Delete(node("n1")));
        let keys: Vec<String> = idx
            .snapshot()
            .unwrap()
            .pods
            .into_iter()
            .map(|p| p.key)
            .collect();
        assert_eq!(keys, vec!["g/pending-server"]);
    }

    #[test]
    fn node_events_only_for_changes_that_matter() {
        let mut idx = synced();
        assert_eq!(
            idx.on_node_event(Event::Apply(node("n1"))),
            vec![ChangeEvent::Node("n1".to_string())]
        );
        // A heartbeat-only update (condition times, resourceVersion) changes nothing we keep.
        let mut heartbeat = node("n1");
        heartbeat.metadata.resource_version = Some("999".to_string());
        if let Some(st) = heartbeat.status.as_mut() {
            st.conditions = Some(vec![NodeCondition {
                type_: "Ready".to_string(),
                status: "True".to_string(),
                last_heartbeat_time: Some(Time("2024-05-01T10:00:00Z".parse().unwrap())),
                ..Default::default()
            }]);
        }
        assert!(idx.on_node_event(Event::Apply(heartbeat)).is_empty());
        let mut cordoned = node("n1");
        cordoned.spec = Some(NodeSpec {
            unschedulable: Some(true),
            ..Default::default()
        });
        assert_eq!(
            idx.on_node_event(Event::Apply(cordoned)),
            vec![ChangeEvent::Node("n1".to_string())]
        );
        assert_eq!(
            idx.on_node_event(Event::Delete(node("n1"))),
            vec![ChangeEvent::Node("n1".to_string())]
        );
        assert!(idx.on_node_event(Event::Delete(node("n1"))).is_empty());
    }

    #[test]
    fn pod_events_only_for_server_pods() {
        let mut idx = synced();
        assert!(idx
            .on_pod_event(Event::Apply(pod("default", "web", None, false, "1")))
            .is_empty());
        assert!(idx
            .on_pod_event(Event::Apply(pod("default", "web", Some("n1"), false, "1")))
            .is_empty());
        assert!(idx
            .on_pod_event(Event::Delete(pod("default", "web", Some("n1"), false, "1")))
            .is_empty());
        let key = || vec![ChangeEvent::ServerPod("g/gs".to_string())];
        assert_eq!(
            idx.on_pod_event(Event::Apply(pod("g", "gs", None, true, "1"))),
            key()
        );
        // Bound.
        assert_eq!(
            idx.on_pod_event(Event::Apply(pod("g", "gs", Some("n1"), true, "1"))),
            key()
        );
        // Same state again (e.g. a status update we do not keep): nothing.
        assert!(idx
            .on_pod_event(Event::Apply(pod("g", "gs", Some("n1"), true, "1")))
            .is_empty());
        assert_eq!(
            idx.on_pod_event(Event::Delete(pod("g", "gs", Some("n1"), true, "1"))),
            key()
        );
    }

    #[test]
    fn updates_are_keyed_lookups_in_place() {
        // O(1) per event by structure: entries live in hash maps keyed by node name and pod
        // key, and an Apply or Delete touches exactly that one entry.
        let mut idx = synced();
        for i in 0..1000 {
            idx.on_pod_event(Event::Apply(pod(
                "g",
                &format!("p{i}"),
                Some("n1"),
                false,
                "1",
            )));
        }
        idx.on_pod_event(Event::Apply(pod("g", "p500", Some("n2"), false, "2")));
        assert_eq!(idx.counts().1, 1000);
        let p500 = idx.pods.live.get("g/p500").unwrap();
        assert_eq!(p500.node.as_deref(), Some("n2"));
        assert_eq!(p500.requests.cpu_millis, 2000);
        idx.on_pod_event(Event::Delete(pod("g", "p7", None, false, "1")));
        assert_eq!(idx.counts().1, 999);
        assert!(!idx.pods.live.contains_key("g/p7"));
        // Live events never allocate a relist buffer.
        assert!(idx.pods.relist.is_none());
    }
}
