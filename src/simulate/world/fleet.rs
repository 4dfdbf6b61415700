//! The Agones side of the simulated world (`--server-source agones`): one Fleet of
//! GameServers, played as the Agones controller, its FleetAutoscaler and the API server would
//! (`../shared/agones/README.md`).
//!
//! - **GameServerSet**: the Fleet keeps `replicas` GameServers. Each has one pod requesting the
//!   server's resources, labelled as Agones labels it (`agones.dev/role=gameserver`,
//!   `agones.dev/gameserver=<name>`) and with the server-pod label, so that kubescaler in pods
//!   mode counts it as a server pod. A new GameServer is `Starting` with its pod pending; the
//!   simulated scheduler binds the pod (`World::place`, the same rule as for server pods)
//!   and it turns `Scheduled`, then `Ready` [`FleetSpec::ready_delay`] seconds later. A
//!   GameServer that goes (its match ended, kubescaler deleted it) is recreated wherever the
//!   scheduler puts the new pod.
//! - **FleetAutoscaler, Buffer policy**: `replicas = Allocated + bufferSize`, at most
//!   `maxReplicas`, applied at once (Agones syncs every 30 s by default; at once is the
//!   kinder case for the Fleet). The set never has to scale down: every way a GameServer
//!   goes lowers `Allocated` or the count by as much as it lowers the other.
//! - **GameServerAllocation, Packed**: a match takes a Ready GameServer on the node with the
//!   most Allocated GameServers (ties: the oldest node, then the oldest GameServer), cordoned
//!   or not (the allocator ignores cordons); the GameServer turns `Allocated` and is deleted
//!   when the match ends (Shutdown). A match that finds no Ready GameServer waits, first come
//!   first served, like a server pod that finds no room: it did not start at once.
//! - **API server**: every state change gives the GameServer a new `resourceVersion` (one
//!   counter for all, as etcd's revision); a delete with a stale one is a 409 Conflict, one of
//!   a GameServer that is gone a 404. An Allocated GameServer deleted (by anyone) or on a
//!   deleted node is a lost match, counted: it must never happen.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap, VecDeque};

use super::{Phase, World};
use crate::agones::{
    FleetBuffer, GameServerDelete, GameServerInfo, GameServerState, LiveNodeServers, LivePod,
};
use crate::model::{ClusterSnapshot, PodState};

/// Seconds from a GameServer's pod being bound to the GameServer being Ready (the game
/// server process starting and calling the SDK's `Ready()`).
pub const GAME_SERVER_READY_DELAY: u64 = 10;

/// Namespace of the Fleet, its GameServers and their pods.
const NAMESPACE: &str = "games";
/// The Fleet's name: the `agones.dev/fleet` label and the prefix of its GameServers' names.
const FLEET: &str = "arena";

/// What the simulated Fleet and its FleetAutoscaler are.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FleetSpec {
    /// The Buffer policy's `bufferSize`: Ready GameServers kept besides the Allocated ones.
    pub buffer_size: u32,
    /// The Buffer policy's `maxReplicas`.
    pub max_replicas: u32,
    /// Seconds from a GameServer's pod being bound to its being Ready.
    pub ready_delay: u64,
}

/// One GameServer (and its pod, which has the same name).
#[derive(Clone, Debug)]
pub(super) struct GameServer {
    /// `namespace/name`.
    key: String,
    state: GameServerState,
    /// Id of the node its pod is bound to.
    node: Option<u64>,
    /// `metadata.resourceVersion`.
    version: u64,
    /// The match it holds, once Allocated.
    session: Option<u32>,
}

/// The Fleet's state.
#[derive(Clone, Debug)]
pub(super) struct Fleet {
    spec: FleetSpec,
    /// Live GameServers by id; ids are zero-padded in the names, so this is also key order.
    servers: BTreeMap<u32, GameServer>,
    next_id: u32,
    /// GameServers whose pods wait for a node, oldest first.
    unbound: VecDeque<u32>,
    /// `(second it turns Ready, GameServer)` of the Scheduled ones.
    readies: BinaryHeap<Reverse<(i64, u32)>>,
    allocated: u32,
    /// The last resourceVersion handed out.
    version: u64,
}

impl Fleet {
    /// An empty Fleet of `spec`.
    pub(super) fn new(spec: FleetSpec) -> Self {
        Fleet {
            spec,
            servers: BTreeMap::new(),
            next_id: 1,
            unbound: VecDeque::new(),
            readies: BinaryHeap::new(),
            allocated: 0,
            version: 0,
        }
    }

    /// Allocated GameServers: the matches running.
    pub(super) fn allocated(&self) -> u32 {
        self.allocated
    }

    /// Ready GameServers.
    pub(super) fn ready(&self) -> u32 {
        self.servers
            .values()
            .filter(|gs| gs.state == GameServerState::Ready)
            .count() as u32
    }

    /// The pod keys of GameServers `ids`.
    pub(super) fn keys(&self, ids: &[u32]) -> Vec<String> {
        ids.iter()
            .filter_map(|id| self.servers.get(id))
            .map(|gs| gs.key.clone())
            .collect()
    }

    /// The Buffer policy's replica count now.
    fn replicas(&self) -> u32 {
        self.allocated
            .saturating_add(self.spec.buffer_size)
            .min(self.spec.max_replicas)
    }

    /// Moves GameServer `id` to `state` with a new resourceVersion.
    fn set_state(&mut self, id: u32, state: GameServerState) {
        self.version += 1;
        if let Some(gs) = self.servers.get_mut(&id) {
            gs.state = state;
            gs.version = self.version;
        }
    }

    /// A new GameServer, its pod pending.
    fn create(&mut self) {
        let id = self.next_id;
        self.next_id += 1;
        self.version += 1;
        self.servers.insert(
            id,
            GameServer {
                key: format!("{NAMESPACE}/{FLEET}-{id:07}"),
                state: GameServerState::Starting,
                node: None,
                version: self.version,
                session: None,
            },
        );
        self.unbound.push_back(id);
    }

    /// The id in a GameServer's key, if it names one of this Fleet.
    fn id_of(key: &str) -> Option<u32> {
        key.strip_prefix(NAMESPACE)?
            .strip_prefix('/')?
            .strip_prefix(FLEET)?
            .strip_prefix('-')?
            .parse()
            .ok()
    }

    /// The FleetAutoscaler as kubescaler's watch reduces it.
    fn buffer(&self) -> FleetBuffer {
        FleetBuffer {
            key: format!("{NAMESPACE}/{FLEET}-buffer"),
            fleet: FLEET.to_string(),
            ready: self.spec.buffer_size,
            headroom: self
                .spec
                .max_replicas
                .saturating_sub(self.servers.len() as u32),
        }
    }
}

impl World {
    /// The Fleet before the start: GameServers for the warm matches and the buffer, created,
    /// bound and Ready (they started long before second 0).
    pub(super) fn settle_fleet(&mut self) {
        let Some(fleet) = &mut self.fleet else {
            return;
        };
        let wanted = (self.pending.len() as u32)
            .saturating_add(fleet.spec.buffer_size)
            .min(fleet.spec.max_replicas);
        for _ in 0..wanted {
            fleet.create();
        }
        self.bind_game_servers();
        // Everything bound before the start has had its start delay.
        self.ready_game_servers(i64::MAX);
    }

    /// Scheduled GameServers whose start delay is over by `t` turn Ready.
    pub(super) fn ready_game_servers(&mut self, t: i64) {
        let Some(fleet) = &mut self.fleet else {
            return;
        };
        while let Some(&Reverse((at, id))) = fleet.readies.peek() {
            if at > t {
                break;
            }
            fleet.readies.pop();
            if fleet
                .servers
                .get(&id)
                .is_some_and(|gs| gs.state == GameServerState::Scheduled)
            {
                fleet.set_state(id, GameServerState::Ready);
                self.changed = true;
            }
        }
    }

    /// One step of the Agones controllers and the scheduler: allocations for the waiting
    /// matches, the Fleet's replicas, then the binding of its pending pods.
    pub(super) fn schedule_fleet(&mut self) {
        while let Some(&session) = self.pending.front() {
            let Some(id) = self.packed_pick() else {
                break;
            };
            self.pending.pop_front();
            self.allocate(id, session);
        }
        if let Some(fleet) = &mut self.fleet {
            while (fleet.servers.len() as u32) < fleet.replicas() {
                fleet.create();
                self.changed = true;
            }
        }
        self.bind_game_servers();
    }

    /// Packed allocation: the Ready GameServer on the node with the most Allocated ones.
    fn packed_pick(&self) -> Option<u32> {
        let fleet = self.fleet.as_ref()?;
        // Per node: (Allocated count, its oldest Ready GameServer).
        let mut nodes: BTreeMap<u64, (u32, Option<u32>)> = BTreeMap::new();
        for (&id, gs) in &fleet.servers {
            let Some(node) = gs.node else { continue };
            let entry = nodes.entry(node).or_default();
            match gs.state {
                GameServerState::Allocated => entry.0 += 1,
                GameServerState::Ready => {
                    entry.1.get_or_insert(id);
                }
                _ => {}
            }
        }
        nodes
            .values()
            .filter_map(|&(allocated, ready)| Some((allocated, ready?)))
            // `max_by_key` keeps the last of equals: reverse the node order so the oldest wins.
            .rev()
            .max_by_key(|&(allocated, _)| allocated)
            .map(|(_, id)| id)
    }

    /// GameServer `id` is allocated to the match `session`, which starts now.
    fn allocate(&mut self, id: u32, session: u32) {
        let now = self.now;
        let Some(fleet) = &mut self.fleet else {
            return;
        };
        fleet.set_state(id, GameServerState::Allocated);
        fleet.allocated += 1;
        let Some(gs) = fleet.servers.get_mut(&id) else {
            return;
        };
        gs.session = Some(session);
        let node = gs.node.unwrap_or_default();
        if let Some(s) = self.sessions.get_mut(session as usize) {
            let ends = now + s.length;
            s.started = Some(now);
            s.game_server = Some(id);
            s.phase = Phase::Running { node, ends };
            self.ends.push(Reverse((ends, session)));
        }
        self.changed = true;
    }

    /// The scheduler binds pending GameServer pods, oldest first, while a node has room.
    fn bind_game_servers(&mut self) {
        let now = self.now;
        loop {
            let Some(&id) = self.fleet.as_ref().and_then(|f| f.unbound.front()) else {
                return;
            };
            let Some(i) = self.place() else {
                return;
            };
            let node = &mut self.nodes[i];
            node.servers.push(id);
            let node_id = node.id;
            let Some(fleet) = &mut self.fleet else {
                return;
            };
            fleet.unbound.pop_front();
            if let Some(gs) = fleet.servers.get_mut(&id) {
                gs.node = Some(node_id);
            }
            fleet.set_state(id, GameServerState::Scheduled);
            let ready_at = now.saturating_add(fleet.spec.ready_delay as i64);
            fleet.readies.push(Reverse((ready_at, id)));
            self.changed = true;
        }
    }

    /// Removes GameServer `id` and its pod wherever they are. An Allocated one takes its
    /// match with it (a lost match), unless the match has ended already.
    pub(super) fn remove_game_server(&mut self, id: u32) {
        let Some(fleet) = &mut self.fleet else {
            return;
        };
        let Some(gs) = fleet.servers.remove(&id) else {
            return;
        };
        fleet.unbound.retain(|&u| u != id);
        if gs.state == GameServerState::Allocated {
            fleet.allocated = fleet.allocated.saturating_sub(1);
        }
        if let Some(node) = gs.node.and_then(|n| self.node_by_id(n)) {
            node.servers.retain(|&s| s != id);
        }
        let running = gs
            .session
            .and_then(|s| self.sessions.get_mut(s as usize))
            .filter(|s| matches!(s.phase, Phase::Running { .. }));
        if let Some(session) = running {
            session.phase = Phase::Killed;
            self.calls.matches_lost += 1;
        }
        self.changed = true;
    }

    /// A GameServer as kubescaler's watch reduces it.
    fn game_server_info(&self, gs: &GameServer) -> GameServerInfo {
        GameServerInfo {
            key: gs.key.clone(),
            node: gs
                .node
                .and_then(|n| self.node_position(n))
                .map(|i| self.nodes[i].name.clone()),
            state: gs.state,
            resource_version: Some(gs.version.to_string()),
            being_deleted: false,
            fleet: Some(FLEET.to_string()),
        }
    }

    /// A GameServer's pod, bound to `node` or pending.
    fn game_server_pod(&self, gs: &GameServer, node: Option<String>) -> PodState {
        PodState {
            key: gs.key.clone(),
            node,
            requests: self.shape.server,
            // It carries the server-pod label too: what kubescaler in pods mode counts.
            is_server: true,
            is_daemon: false,
            game_server: Some(gs.key.clone()),
        }
    }

    /// The planner's view with a Fleet: the registered nodes, their DaemonSet and GameServer
    /// pods, the pending GameServer pods, every GameServer and the FleetAutoscaler. kubescaler
    /// in pods mode reads the same view and leaves the GameServers aside, as its planner does.
    pub(super) fn fleet_snapshot(&self) -> ClusterSnapshot {
        let Some(fleet) = &self.fleet else {
            return ClusterSnapshot::default();
        };
        let now = self.now;
        let mut nodes = Vec::with_capacity(self.nodes.len());
        let mut pods = Vec::new();
        for n in self.nodes.iter().filter(|n| n.registered(now)) {
            nodes.push(self.node_state(n));
            pods.extend(n.daemon_pods.iter().cloned());
            for gs in n.servers.iter().filter_map(|id| fleet.servers.get(id)) {
                pods.push(self.game_server_pod(gs, Some(n.name.clone())));
            }
        }
        for gs in fleet.unbound.iter().filter_map(|id| fleet.servers.get(id)) {
            pods.push(self.game_server_pod(gs, None));
        }
        ClusterSnapshot {
            nodes,
            pods,
            game_servers: fleet
                .servers
                .values()
                .map(|gs| self.game_server_info(gs))
                .collect(),
            fleet_buffers: vec![fleet.buffer()],
        }
    }

    /// The GameServers and GameServer pods on node `name`, as a live read gives them; `None`
    /// without a Fleet.
    pub(super) fn live_game_servers(&self, name: &str) -> Option<LiveNodeServers> {
        let fleet = self.fleet.as_ref()?;
        let Some(i) = self.node_index(name) else {
            return Some(LiveNodeServers::default());
        };
        let servers: Vec<&GameServer> = self.nodes[i]
            .servers
            .iter()
            .filter_map(|id| fleet.servers.get(id))
            .collect();
        Some(LiveNodeServers {
            game_servers: servers.iter().map(|gs| self.game_server_info(gs)).collect(),
            pods: servers
                .iter()
                .map(|gs| LivePod {
                    key: gs.key.clone(),
                    game_server: Some(gs.key.clone()),
                })
                .collect(),
        })
    }

    /// A delete of a GameServer with its resourceVersion as precondition, as the API server
    /// answers it; `None` without a Fleet. The Fleet recreates the GameServer at the next
    /// [`World::schedule`].
    pub(super) fn delete_game_server(&mut self, info: &GameServerInfo) -> Option<GameServerDelete> {
        let fleet = self.fleet.as_ref()?;
        let Some(id) = Fleet::id_of(&info.key).filter(|id| fleet.servers.contains_key(id)) else {
            return Some(GameServerDelete::Gone);
        };
        let current = fleet.servers.get(&id).map(|gs| gs.version.to_string());
        if info.resource_version != current {
            return Some(GameServerDelete::Conflict);
        }
        self.remove_game_server(id);
        self.calls.game_servers_compacted += 1;
        Some(GameServerDelete::Deleted)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Resources;
    use crate::simulate::args::Placement;
    use crate::simulate::world::{timestamp, PoolShape};

    /// Nodes of 3 servers, a Fleet keeping 2 Ready, Ready 10 s after binding.
    fn world(nodes: u32) -> World {
        let shape = PoolShape {
            node: Resources {
                cpu_millis: 3000,
                memory_bytes: 0,
            },
            node_pods: 110,
            daemon: Resources::default(),
            daemon_pods: 0,
            server: Resources {
                cpu_millis: 1000,
                memory_bytes: 0,
            },
            boot_delay: 90,
            placement: Placement::MostAllocated,
        };
        let mut w = World::new(shape, nodes).with_fleet(FleetSpec {
            buffer_size: 2,
            max_replicas: 100,
            ready_delay: 10,
        });
        w.settle();
        w
    }

    fn states(w: &World) -> Vec<(GameServerState, Option<String>)> {
        w.snapshot()
            .game_servers
            .into_iter()
            .map(|gs| (gs.state, gs.node))
            .collect()
    }

    fn info(w: &World, key: &str) -> GameServerInfo {
        w.snapshot()
            .game_servers
            .into_iter()
            .find(|gs| gs.key == key)
            .unwrap_or_else(|| panic!("{key} not found"))
    }

    #[test]
    fn the_fleet_keeps_its_buffer_ready_and_replaces_an_allocated_game_server() {
        let mut w = world(2);
        let ready = |w: &World| w.census().free_slots;
        assert_eq!(ready(&w), 2, "{:?}", states(&w));
        w.arrive(600);
        w.schedule();
        let c = w.census();
        assert_eq!((c.running, c.waiting), (1, 0));
        // Replicas = 1 Allocated + 2: a new GameServer, bound, Ready only after its delay.
        assert_eq!(ready(&w), 1);
        assert_eq!(w.snapshot().game_servers.len(), 3);
        w.advance(9);
        assert_eq!(ready(&w), 1);
        w.advance(10);
        assert_eq!(ready(&w), 2);
        // The match ends: its GameServer goes and the replicas drop with it.
        w.advance(700);
        w.schedule();
        assert_eq!((w.census().running, ready(&w)), (0, 2));
        assert_eq!(w.snapshot().game_servers.len(), 2);
    }

    #[test]
    fn game_server_pods_carry_the_labels_kubescaler_reads() {
        let w = world(1);
        let snap = w.snapshot();
        let pods: Vec<&PodState> = snap.pods.iter().filter(|p| !p.is_daemon).collect();
        assert_eq!(pods.len(), 2);
        for p in pods {
            assert!(p.is_server, "the server-pod label");
            assert_eq!(p.game_server.as_deref(), Some(p.key.as_str()));
            assert!(snap.game_servers.iter().any(|gs| gs.key == p.key));
        }
        assert_eq!(snap.fleet_buffers[0].ready, 2);
        assert!(snap
            .game_servers
            .iter()
            .all(|gs| gs.fleet.as_deref() == Some(FLEET)));
    }

    #[test]
    fn packed_allocation_takes_the_node_with_the_most_allocated_first_cordoned_or_not() {
        let mut w = world(2);
        // Both Ready GameServers on the first node (most-allocated placement).
        w.arrive(600);
        w.schedule();
        w.advance(10);
        w.schedule();
        let first = w.nodes[0].name.clone();
        w.cordon(&first, timestamp(10));
        // The node with the Allocated one is picked again, although it is cordoned now.
        w.arrive(600);
        w.schedule();
        let allocated: Vec<_> = states(&w)
            .into_iter()
            .filter(|(s, _)| *s == GameServerState::Allocated)
            .collect();
        assert_eq!(allocated.len(), 2);
        assert!(allocated.iter().all(|(_, n)| n.as_deref() == Some(&first)));
        // The replacement lands on the schedulable node only.
        w.advance(20);
        w.schedule();
        assert_eq!(w.nodes[0].servers.len(), 3, "{:?}", states(&w));
        assert_eq!(w.nodes[1].servers.len(), 1, "{:?}", states(&w));
    }

    #[test]
    fn a_match_that_finds_no_ready_game_server_waits_and_did_not_start_at_once() {
        // One node of 3 slots: 2 Ready, then full.
        let mut w = world(1);
        for _ in 0..3 {
            w.arrive(600);
        }
        w.schedule();
        assert_eq!((w.census().running, w.census().waiting), (2, 1));
        // The third slot's GameServer turns Ready after its delay and takes the match.
        w.advance(10);
        w.schedule();
        assert_eq!((w.census().running, w.census().waiting), (3, 0));
        let waits: Vec<u64> = w.session_records().iter().map(|r| r.wait).collect();
        assert_eq!(waits, [0, 0, 10]);
        // The Fleet wants 2 more, with no room: their pods are pending, the planner's demand.
        let snap = w.snapshot();
        assert_eq!(snap.pods.iter().filter(|p| p.node.is_none()).count(), 2);
    }

    #[test]
    fn a_delete_with_a_stale_resource_version_is_a_conflict_as_the_api_server_answers() {
        let mut w = world(2);
        let read = w.snapshot().game_servers;
        let (a, b) = (read[0].clone(), read[1].clone());
        // Allocated since it was read: the delete loses, the match keeps its server.
        w.arrive(600);
        w.schedule();
        let allocated = read
            .iter()
            .find(|gs| info(&w, &gs.key).state == GameServerState::Allocated)
            .cloned()
            .unwrap_or_else(|| a.clone());
        assert_ne!(
            info(&w, &allocated.key).resource_version,
            allocated.resource_version
        );
        assert_eq!(
            w.delete_game_server(&allocated),
            Some(GameServerDelete::Conflict)
        );
        assert_eq!(w.census().running, 1);
        // Still as read: deleted, counted as compacted, recreated by the Fleet.
        let other = if allocated.key == a.key { b } else { a };
        let fresh = info(&w, &other.key);
        assert_eq!(
            w.delete_game_server(&fresh),
            Some(GameServerDelete::Deleted)
        );
        assert_eq!(w.delete_game_server(&fresh), Some(GameServerDelete::Gone));
        assert_eq!(w.calls().game_servers_compacted, 1);
        w.schedule();
        assert_eq!(w.snapshot().game_servers.len(), 3);
        assert_eq!(w.calls().matches_lost, 0);
    }

    #[test]
    fn a_node_deleted_under_an_allocated_game_server_loses_the_match() {
        let mut w = world(1);
        w.arrive(600);
        w.schedule();
        let node = w.cloud_pool().nodes[0].clone();
        let live = w.live_game_servers(&node.name).unwrap_or_default();
        // Allocated, Ready and the replacement (Scheduled) all block a deletion.
        assert_eq!(live.blockers().len(), 3, "{:?}", live.blockers());
        w.delete(&node).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(w.calls().matches_lost, 1);
        assert_eq!(w.calls().servers_killed, 3);
        // Its end later finds nothing to end.
        w.advance(700);
        assert_eq!(w.sessions_ended(), 0);
    }
}
