//! The simulated cluster and cloud: a node pool, its DaemonSet pods, the game server pods and a
//! scheduler, behind in-memory implementations of the two traits the scale loop drives
//! ([`SimCluster`]: [`Kubernetes`], [`SimCloud`]: [`NodePoolProvider`]).
//!
//! Model:
//! - A node ordered by `grow_to` exists (and is paid for) at once; it registers NotReady after
//!   two thirds of the boot delay, with its DaemonSet pods bound, and turns Ready after the
//!   whole boot delay. Deletion removes it at once, from the cloud and from Kubernetes.
//! - Every node has the same shape; every server requests the same resources, so a node holds
//!   a fixed number of servers (its slots).
//! - A server pod is created when its session arrives and waits (pending, the demand the
//!   planner sees) until the scheduler binds it: first come, first served, a whole slot on a
//!   Ready, schedulable (not cordoned) node, the fullest or emptiest first
//!   ([`Placement`]), ties to the oldest node. It ends when its session does.
//! - Deleting a node with a server pod on it kills that server: counted, and must never happen.
//!
//! With a Fleet ([`World::with_fleet`], `--server-source agones`) the server pods are those of
//! Agones GameServers instead, and a session is a match that takes a Ready one: see [`fleet`].

use std::cmp::Reverse;
use std::collections::{BinaryHeap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use async_trait::async_trait;
use jiff::Timestamp;
use tokio::sync::broadcast;

use super::args::Placement;
use crate::agones::{GameServerDelete, GameServerInfo, LiveNodeServers};
use crate::kubernetes::{ChangeEvent, KubeError, Kubernetes};
use crate::kubernetes::{MarkOp, MarkOutcome};
use crate::model::{CloudNode, CloudPool, InstanceStatus};
use crate::model::{ClusterSnapshot, NodeState, PodState, Resources};
use crate::provider::{NodePoolProvider, ProviderError};
use crate::scheduling::slots_in;

pub mod fleet;

use self::fleet::Fleet;
pub use self::fleet::{FleetSpec, GAME_SERVER_READY_DELAY};

/// Second 0 of every simulation: 2025-01-01T00:00:00Z. The planner's timestamps (node
/// creation, cordon marks) are this plus the simulated seconds.
pub const EPOCH_SECOND: i64 = 1_735_689_600;

/// The timestamp of simulated second `t`.
pub fn timestamp(t: i64) -> Timestamp {
    Timestamp::from_second(EPOCH_SECOND + t).unwrap_or(Timestamp::UNIX_EPOCH)
}

/// The pool's fixed properties.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PoolShape {
    /// Allocatable cpu and memory of a node.
    pub node: Resources,
    /// Allocatable pods of a node.
    pub node_pods: u32,
    /// What the DaemonSet pods of one node request together.
    pub daemon: Resources,
    /// DaemonSet pods per node (0: none, and then no overhead).
    pub daemon_pods: u32,
    /// What one server requests.
    pub server: Resources,
    /// Seconds from ordering a node to its being Ready.
    pub boot_delay: u64,
    /// How the scheduler chooses a node.
    pub placement: Placement,
}

impl PoolShape {
    /// Servers that fit on one node next to its DaemonSet pods.
    pub fn slots_per_node(&self) -> u32 {
        let (daemon, pods) = if self.daemon_pods == 0 {
            (Resources::default(), 0)
        } else {
            (self.daemon, self.daemon_pods)
        };
        slots_in(
            self.node.saturating_sub(daemon),
            self.node_pods.saturating_sub(pods),
            self.server,
        )
    }

    /// Seconds from ordering a node to its registering (NotReady).
    pub fn register_delay(&self) -> u64 {
        self.boot_delay * 2 / 3
    }
}

/// Where a session is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    /// Its server pod is pending.
    Waiting,
    /// Its server runs on node `node` (an id) until `ends`.
    Running { node: u64, ends: i64 },
    /// It ended normally.
    Ended,
    /// Its node was deleted under it.
    Killed,
}

/// One game session and its server pod.
#[derive(Clone, Debug)]
struct Session {
    /// `namespace/name` of its server pod.
    key: String,
    arrived: i64,
    length: i64,
    started: Option<i64>,
    phase: Phase,
    /// Running at second 0 (not counted in the arrival statistics).
    warm: bool,
    /// With a Fleet: the GameServer it was allocated (its server pod).
    game_server: Option<u32>,
}

/// One node of the pool.
#[derive(Clone, Debug)]
struct SimNode {
    /// Monotonic id; names sort like ids.
    id: u64,
    name: String,
    provider_id: String,
    /// When it was ordered.
    ordered_at: i64,
    registers_at: i64,
    ready_at: i64,
    unschedulable: bool,
    /// kubescaler's deletion fence is on.
    fenced: bool,
    cordoned_by_kubescaler: bool,
    cordon_timestamp: Option<String>,
    /// Sessions whose servers run here (with a Fleet: GameServers whose pods run here).
    servers: Vec<u32>,
    /// Its DaemonSet pods (bound once it registers).
    daemon_pods: Vec<PodState>,
}

impl SimNode {
    fn registered(&self, now: i64) -> bool {
        now >= self.registers_at
    }
    fn ready(&self, now: i64) -> bool {
        now >= self.ready_at
    }
}

/// What the scale loop did to the simulated sides.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Calls {
    /// `grow_to` calls that raised the target.
    pub grows: u64,
    /// Nodes those calls ordered.
    pub nodes_ordered: u64,
    /// Nodes cordoned.
    pub cordons: u64,
    /// Nodes uncordoned.
    pub uncordons: u64,
    /// Nodes deleted.
    pub deletions: u64,
    /// Server pods that were on a node when it was deleted (with a Fleet: GameServer pods,
    /// Ready ones too).
    pub servers_killed: u64,
    /// With a Fleet: Allocated GameServers (live matches) lost with their node or deleted.
    pub matches_lost: u64,
    /// With a Fleet: Ready GameServers kubescaler deleted (compaction).
    pub game_servers_compacted: u64,
}

/// Per-session outcome, for the statistics.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SessionRecord {
    /// Seconds waited for a slot (for a session still waiting, so far).
    pub wait: u64,
    /// Whether it has started.
    pub started: bool,
}

/// A point-in-time view for the chart.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Census {
    /// Nodes that exist at the cloud (paid for): booting, Ready and cordoned.
    pub nodes: u32,
    /// Ready, schedulable nodes.
    pub schedulable: u32,
    /// Nodes ordered and not Ready yet.
    pub booting: u32,
    /// Nodes kubescaler cordoned.
    pub cordoned: u32,
    /// Free server slots on Ready, schedulable nodes (with a Fleet: Ready GameServers, on any
    /// node, the slots a match takes at once).
    pub free_slots: u32,
    /// Servers running (with a Fleet: Allocated GameServers, the matches).
    pub running: u32,
    /// Sessions waiting for a slot.
    pub waiting: u32,
}

/// The whole simulated state.
pub struct World {
    now: i64,
    shape: PoolShape,
    slots: u32,
    nodes: Vec<SimNode>,
    next_node_id: u64,
    sessions: Vec<Session>,
    /// Waiting sessions, first come first served (with a Fleet: matches waiting for a Ready
    /// GameServer).
    pending: VecDeque<u32>,
    /// `(end second, session)` of running sessions.
    ends: BinaryHeap<Reverse<(i64, u32)>>,
    /// Earliest second a node registers or turns Ready.
    next_boot_event: i64,
    /// Something a change event would report happened since the last [`World::take_changed`].
    changed: bool,
    calls: Calls,
    /// The Agones side, if the servers are GameServers.
    fleet: Option<Fleet>,
}

impl World {
    /// A pool of `initial_nodes` Ready nodes at second 0.
    pub fn new(shape: PoolShape, initial_nodes: u32) -> Self {
        let mut world = World {
            now: 0,
            shape,
            slots: shape.slots_per_node(),
            nodes: Vec::new(),
            next_node_id: 1,
            sessions: Vec::new(),
            pending: VecDeque::new(),
            ends: BinaryHeap::new(),
            next_boot_event: i64::MAX,
            changed: false,
            calls: Calls::default(),
            fleet: None,
        };
        for _ in 0..initial_nodes {
            // Booted an hour before the start.
            world.order_node(-3600);
        }
        world.next_boot_event = i64::MAX;
        world
    }

    /// The same pool whose server pods are the GameServers of one Agones Fleet (see
    /// [`fleet`]): sessions are matches that take a Ready GameServer.
    pub fn with_fleet(mut self, spec: FleetSpec) -> Self {
        self.fleet = Some(Fleet::new(spec));
        self
    }

    /// Brings the world to second 0 once the warm sessions are added: their servers run (with
    /// a Fleet, its GameServers for them and its buffer were created before the start, are
    /// bound and Ready, and the warm matches are allocated).
    pub fn settle(&mut self) {
        self.settle_fleet();
        self.schedule();
    }

    /// Servers per node.
    pub fn slots_per_node(&self) -> u32 {
        self.slots
    }

    fn order_node(&mut self, at: i64) {
        let id = self.next_node_id;
        self.next_node_id += 1;
        let name = format!("pool-node-{id:05}");
        let per = |total: u64, i: u32| {
            let n = u64::from(self.shape.daemon_pods.max(1));
            total / n + u64::from(i == 0) * (total % n)
        };
        let daemon_pods = (0..self.shape.daemon_pods)
            .map(|i| PodState {
                key: format!("kube-system/node-agent-{i}-{name}"),
                node: Some(name.clone()),
                requests: Resources {
                    cpu_millis: per(self.shape.daemon.cpu_millis, i),
                    memory_bytes: per(self.shape.daemon.memory_bytes, i),
                },
                is_server: false,
                is_daemon: true,
                game_server: None,
            })
            .collect();
        let registers_at = at + self.shape.register_delay() as i64;
        let ready_at = at + self.shape.boot_delay as i64;
        self.next_boot_event = self.next_boot_event.min(registers_at);
        self.nodes.push(SimNode {
            id,
            ordered_at: at,
            fenced: false,
            provider_id: format!("simulated://{id}"),
            name,
            registers_at,
            ready_at,
            unschedulable: false,
            cordoned_by_kubescaler: false,
            cordon_timestamp: None,
            servers: Vec::new(),
            daemon_pods,
        });
    }

    /// Starts a session already running at second 0 with `remaining` seconds left.
    pub fn add_warm_session(&mut self, remaining: u64) {
        let id = self.new_session(0, remaining, true);
        self.pending.push_back(id);
    }

    /// A session arrives now: its server pod is created, pending.
    pub fn arrive(&mut self, length: u64) {
        let id = self.new_session(self.now, length, false);
        self.pending.push_back(id);
        // A match waiting for an allocation is no object kubescaler watches; a server pod is.
        self.changed |= self.fleet.is_none();
    }

    fn new_session(&mut self, arrived: i64, length: u64, warm: bool) -> u32 {
        let id = self.sessions.len() as u32;
        self.sessions.push(Session {
            key: format!("games/match-{id:07}"),
            arrived,
            length: length as i64,
            started: None,
            phase: Phase::Waiting,
            warm,
            game_server: None,
        });
        id
    }

    /// Moves the clock to `t`: nodes register and turn Ready, sessions end. Call
    /// [`World::schedule`] after adding the arrivals of `t`.
    pub fn advance(&mut self, t: i64) {
        let before = self.now;
        self.now = t;
        if t >= self.next_boot_event {
            let mut next = i64::MAX;
            for node in &self.nodes {
                let crossed = |at: i64| before < at && at <= t;
                if crossed(node.registers_at) || crossed(node.ready_at) {
                    self.changed = true;
                }
                for at in [node.registers_at, node.ready_at] {
                    if at > t {
                        next = next.min(at);
                    }
                }
            }
            self.next_boot_event = next;
        }
        self.ready_game_servers(t);
        while let Some(&Reverse((end, id))) = self.ends.peek() {
            if end > t {
                break;
            }
            self.ends.pop();
            self.end_session(id);
        }
    }

    fn end_session(&mut self, id: u32) {
        let Some(session) = self.sessions.get_mut(id as usize) else {
            return;
        };
        let Phase::Running { node, .. } = session.phase else {
            // Killed with its node: nothing left to end.
            return;
        };
        session.phase = Phase::Ended;
        match session.game_server {
            // The match ends: its GameServer shuts down and is deleted.
            Some(gs) => {
                self.remove_game_server(gs);
            }
            None => {
                if let Some(n) = self.node_by_id(node) {
                    n.servers.retain(|s| *s != id);
                }
            }
        }
        self.changed = true;
    }

    fn node_by_id(&mut self, id: u64) -> Option<&mut SimNode> {
        let i = self.node_position(id)?;
        self.nodes.get_mut(i)
    }

    fn node_position(&self, id: u64) -> Option<usize> {
        self.nodes.binary_search_by_key(&id, |n| n.id).ok()
    }

    fn node_index(&self, name: &str) -> Option<usize> {
        // Names are zero-padded ids, so they sort like the vector.
        self.nodes
            .binary_search_by(|n| n.name.as_str().cmp(name))
            .ok()
    }

    /// The node the scheduler binds the next server pod to, if one has room.
    fn place(&self) -> Option<usize> {
        let now = self.now;
        let slots = self.slots as usize;
        let fits = self
            .nodes
            .iter()
            .enumerate()
            .filter(|(_, n)| n.ready(now) && !n.unschedulable && n.servers.len() < slots);
        let best = match self.shape.placement {
            // `min_by_key`/`max_by_key` keep the first of equals: the oldest node.
            Placement::MostAllocated => fits.min_by_key(|(_, n)| slots - n.servers.len()),
            Placement::LeastAllocated => fits.min_by_key(|(_, n)| n.servers.len()),
        };
        best.map(|(i, _)| i)
    }

    /// Binds waiting servers, first come first served, while a node has room. With a Fleet:
    /// allocates Ready GameServers to waiting matches, keeps the Fleet's replicas and binds
    /// its GameServer pods ([`fleet`]).
    pub fn schedule(&mut self) {
        if self.fleet.is_some() {
            self.schedule_fleet();
            return;
        }
        let now = self.now;
        while let Some(&id) = self.pending.front() {
            let Some(i) = self.place() else {
                return;
            };
            self.pending.pop_front();
            let node = &mut self.nodes[i];
            node.servers.push(id);
            let node_id = node.id;
            if let Some(s) = self.sessions.get_mut(id as usize) {
                let ends = now + s.length;
                s.started = Some(now);
                s.phase = Phase::Running {
                    node: node_id,
                    ends,
                };
                self.ends.push(Reverse((ends, id)));
            }
            self.changed = true;
        }
    }

    /// Whether something changed that the real watch would report (a node registered, turned
    /// Ready, was cordoned or removed; a server pod was created, bound or ended), and resets it.
    pub fn take_changed(&mut self) -> bool {
        std::mem::take(&mut self.changed)
    }

    /// The counts the chart shows.
    pub fn census(&self) -> Census {
        let now = self.now;
        let mut c = Census {
            nodes: self.nodes.len() as u32,
            waiting: self.pending.len() as u32,
            ..Census::default()
        };
        for n in &self.nodes {
            c.running += n.servers.len() as u32;
            if !n.ready(now) {
                c.booting += 1;
            } else if n.unschedulable {
                c.cordoned += u32::from(n.cordoned_by_kubescaler);
            } else {
                c.schedulable += 1;
                c.free_slots += self.slots.saturating_sub(n.servers.len() as u32);
            }
        }
        if let Some(fleet) = &self.fleet {
            c.running = fleet.allocated();
            c.free_slots = fleet.ready();
        }
        c
    }

    /// What the scale loop did so far.
    pub fn calls(&self) -> Calls {
        self.calls
    }

    /// Every arrived (not warm) session's wait, in arrival order.
    pub fn session_records(&self) -> Vec<SessionRecord> {
        self.sessions
            .iter()
            .filter(|s| !s.warm)
            .map(|s| SessionRecord {
                wait: (s.started.unwrap_or(self.now) - s.arrived).max(0) as u64,
                started: s.started.is_some(),
            })
            .collect()
    }

    /// Sessions that ended normally.
    pub fn sessions_ended(&self) -> u64 {
        self.sessions
            .iter()
            .filter(|s| s.phase == Phase::Ended)
            .count() as u64
    }

    /// The planner's view, as the watch caches would give it: registered nodes sorted by
    /// name, the pods bound to them, the pending server pods.
    pub fn snapshot(&self) -> ClusterSnapshot {
        if self.fleet.is_some() {
            return self.fleet_snapshot();
        }
        let now = self.now;
        let server = self.shape.server;
        let mut nodes = Vec::with_capacity(self.nodes.len());
        let mut pods = Vec::new();
        for n in self.nodes.iter().filter(|n| n.registered(now)) {
            nodes.push(self.node_state(n));
            pods.extend(n.daemon_pods.iter().cloned());
            for &id in &n.servers {
                pods.push(PodState {
                    key: self.sessions[id as usize].key.clone(),
                    node: Some(n.name.clone()),
                    requests: server,
                    is_server: true,
                    is_daemon: false,
                    game_server: None,
                });
            }
        }
        for &id in &self.pending {
            pods.push(PodState {
                key: self.sessions[id as usize].key.clone(),
                node: None,
                requests: server,
                is_server: true,
                is_daemon: false,
                game_server: None,
            });
        }
        ClusterSnapshot {
            nodes,
            pods,
            ..Default::default()
        }
    }

    /// A node as the planner sees it.
    fn node_state(&self, n: &SimNode) -> NodeState {
        let now = self.now;
        NodeState {
            name: n.name.clone(),
            provider_id: Some(n.provider_id.clone()),
            labels: Default::default(),
            identity_annotations: Default::default(),
            allocatable: self.shape.node,
            allocatable_pods: self.shape.node_pods,
            ready: n.ready(now),
            unschedulable: n.unschedulable,
            taints: if n.fenced {
                vec![crate::model::Taint {
                    key: crate::model::FENCE_TAINT.into(),
                    value: String::new(),
                    effect: crate::model::TaintEffect::NoSchedule,
                }]
            } else {
                Vec::new()
            },
            cordoned_by_kubescaler: n.cordoned_by_kubescaler,
            has_kubescaler_marks: n.cordoned_by_kubescaler || n.fenced,
            deletion_accepted: None,
            cordon_timestamp: n.cordon_timestamp.clone(),
            created: Some(timestamp(n.registers_at)),
        }
    }

    /// kubescaler's mark changes, with the ownership rule of the real cluster.
    fn mark(&mut self, name: &str, op: MarkOp) -> MarkOutcome {
        let Some(i) = self
            .node_index(name)
            .filter(|&i| self.nodes[i].registered(self.now))
        else {
            return MarkOutcome::Gone;
        };
        let node = &self.nodes[i];
        let refuse = |why: &str| MarkOutcome::Refused(self.node_state(node), why.to_string());
        match op {
            MarkOp::Cordon(_) if node.unschedulable => return refuse("cordoned already"),
            MarkOp::Uncordon | MarkOp::Fence(_) if !node.cordoned_by_kubescaler => {
                return refuse("not kubescaler's")
            }
            MarkOp::ClearStale => return refuse("no stale marks in a simulation"),
            _ => {}
        }
        match op {
            MarkOp::Cordon(at) => self.cordon(name, at),
            MarkOp::Uncordon => self.uncordon(name),
            MarkOp::Fence(_) => self.nodes[i].fenced = true,
            MarkOp::Release => self.nodes[i].fenced = false,
            MarkOp::ClearStale | MarkOp::AcceptDeletion(_) => {}
        }
        MarkOutcome::Applied(self.node_state(&self.nodes[i]))
    }

    fn cordon(&mut self, name: &str, at: Timestamp) {
        let Some(i) = self.node_index(name) else {
            return;
        };
        let node = &mut self.nodes[i];
        node.unschedulable = true;
        node.cordoned_by_kubescaler = true;
        node.cordon_timestamp = Some(at.to_string());
        self.calls.cordons += 1;
        self.changed = true;
    }

    fn uncordon(&mut self, name: &str) {
        let Some(i) = self.node_index(name) else {
            return;
        };
        let node = &mut self.nodes[i];
        node.unschedulable = false;
        node.cordoned_by_kubescaler = false;
        node.cordon_timestamp = None;
        node.fenced = false;
        self.calls.uncordons += 1;
        self.changed = true;
    }

    /// The pool as the cloud reports it.
    fn cloud_pool(&self) -> CloudPool {
        let now = self.now;
        CloudPool {
            target: self.nodes.len() as u32,
            nodes: self
                .nodes
                .iter()
                .map(|n| CloudNode {
                    id: n.id.to_string(),
                    name: n.name.clone(),
                    status: if n.ready(now) {
                        InstanceStatus::Running
                    } else {
                        InstanceStatus::Creating
                    },
                    state: if n.ready(now) {
                        "running"
                    } else {
                        "provisioning"
                    }
                    .into(),
                    provider_id: Some(n.provider_id.clone()),
                    created: Some(timestamp(n.ordered_at)),
                })
                .collect(),
            template: None,
        }
    }

    /// The server pods bound to `name` (with a Fleet: its GameServer pods, which carry the
    /// server label too).
    fn live_server_pods(&self, name: &str) -> Vec<String> {
        let Some(i) = self.node_index(name) else {
            return Vec::new();
        };
        match &self.fleet {
            Some(fleet) => fleet.keys(&self.nodes[i].servers),
            None => self.nodes[i]
                .servers
                .iter()
                .map(|&id| self.sessions[id as usize].key.clone())
                .collect(),
        }
    }

    fn grow_to(&mut self, target: u32) {
        let current = self.nodes.len() as u32;
        if target <= current {
            return;
        }
        self.calls.grows += 1;
        for _ in current..target {
            self.order_node(self.now);
            self.calls.nodes_ordered += 1;
        }
    }

    fn delete(&mut self, node: &CloudNode) -> Result<(), ProviderError> {
        let i = self
            .node_index(&node.name)
            .ok_or_else(|| ProviderError::UnknownNode {
                provider: PROVIDER,
                node: node.name.clone(),
            })?;
        let removed = self.nodes.remove(i);
        for id in removed.servers {
            self.calls.servers_killed += 1;
            if self.fleet.is_some() {
                self.remove_game_server(id);
            } else if let Some(s) = self.sessions.get_mut(id as usize) {
                s.phase = Phase::Killed;
            }
        }
        self.calls.deletions += 1;
        self.changed = true;
        Ok(())
    }
}

/// Provider name in errors.
const PROVIDER: &str = "simulated";

/// The refusal of GameServer calls by a world without a Fleet: a deletion then fails rather
/// than proceeding unchecked, as with a cluster view that has no Agones support.
const NO_FLEET: &str = "the simulated world has no Agones Fleet (run with --server-source agones)";

/// The world shared by the two simulated sides and the driver.
pub type SharedWorld = Arc<Mutex<World>>;

/// Locks the world; a poisoned lock (a panic elsewhere) still holds a usable state.
pub fn lock(world: &SharedWorld) -> MutexGuard<'_, World> {
    world.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The simulated Kubernetes API: the snapshot comes straight from the world (the watch
/// caches are assumed current), cordons and uncordons change it at once.
pub struct SimCluster {
    world: SharedWorld,
    changes: broadcast::Sender<ChangeEvent>,
}

impl SimCluster {
    /// Kubernetes over `world`.
    pub fn new(world: SharedWorld) -> Self {
        SimCluster {
            world,
            changes: broadcast::channel(16).0,
        }
    }
}

#[async_trait]
impl Kubernetes for SimCluster {
    async fn snapshot(&self) -> Result<ClusterSnapshot, KubeError> {
        Ok(lock(&self.world).snapshot())
    }

    async fn mark(&self, node: &str, op: MarkOp) -> Result<MarkOutcome, KubeError> {
        Ok(lock(&self.world).mark(node, op))
    }

    async fn live_node(&self, node: &str) -> Result<Option<NodeState>, KubeError> {
        let world = lock(&self.world);
        Ok(world
            .node_index(node)
            .map(|i| &world.nodes[i])
            .filter(|n| n.registered(world.now))
            .map(|n| world.node_state(n)))
    }

    async fn live_server_pods(&self, node: &str) -> Result<Vec<String>, KubeError> {
        Ok(lock(&self.world).live_server_pods(node))
    }

    async fn live_node_game_servers(&self, node: &str) -> Result<LiveNodeServers, KubeError> {
        lock(&self.world)
            .live_game_servers(node)
            .ok_or_else(|| KubeError::Client(NO_FLEET.to_string()))
    }

    async fn delete_game_server(
        &self,
        game_server: &GameServerInfo,
    ) -> Result<GameServerDelete, KubeError> {
        lock(&self.world)
            .delete_game_server(game_server)
            .ok_or_else(|| KubeError::Client(NO_FLEET.to_string()))
    }

    /// The driver knows when the world changed and runs the passes itself; nothing is sent.
    fn changes(&self) -> broadcast::Receiver<ChangeEvent> {
        self.changes.subscribe()
    }
}

/// The simulated cloud: the target is the number of nodes ordered and not deleted.
pub struct SimCloud {
    world: SharedWorld,
}

impl SimCloud {
    /// The cloud over `world`.
    pub fn new(world: SharedWorld) -> Self {
        SimCloud { world }
    }
}

#[async_trait]
impl NodePoolProvider for SimCloud {
    async fn pool(&self) -> Result<CloudPool, ProviderError> {
        Ok(lock(&self.world).cloud_pool())
    }

    async fn grow_to(&self, target: u32) -> Result<(), ProviderError> {
        lock(&self.world).grow_to(target);
        Ok(())
    }

    async fn delete_instance(&self, node: &CloudNode) -> Result<(), ProviderError> {
        lock(&self.world).delete(node)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shape(placement: Placement) -> PoolShape {
        PoolShape {
            node: Resources {
                cpu_millis: 4000,
                memory_bytes: 8 << 30,
            },
            node_pods: 110,
            daemon: Resources {
                cpu_millis: 500,
                memory_bytes: 0,
            },
            daemon_pods: 2,
            server: Resources {
                cpu_millis: 1000,
                memory_bytes: 0,
            },
            boot_delay: 90,
            placement,
        }
    }

    #[test]
    fn daemon_overhead_takes_its_share_of_a_node() {
        // (4000 - 500) / 1000 = 3 servers.
        assert_eq!(shape(Placement::MostAllocated).slots_per_node(), 3);
        let mut none = shape(Placement::MostAllocated);
        none.daemon_pods = 0;
        assert_eq!(none.slots_per_node(), 4);
    }

    #[test]
    fn scheduler_packs_the_fullest_node_with_most_allocated() {
        let mut w = World::new(shape(Placement::MostAllocated), 2);
        for _ in 0..4 {
            w.arrive(100);
        }
        w.schedule();
        let c = w.census();
        assert_eq!((c.running, c.waiting, c.free_slots), (4, 0, 2));
        assert_eq!(w.nodes[0].servers.len(), 3);
        assert_eq!(w.nodes[1].servers.len(), 1);
    }

    #[test]
    fn scheduler_spreads_with_least_allocated() {
        let mut w = World::new(shape(Placement::LeastAllocated), 2);
        for _ in 0..4 {
            w.arrive(100);
        }
        w.schedule();
        assert_eq!(w.nodes[0].servers.len(), 2);
        assert_eq!(w.nodes[1].servers.len(), 2);
    }

    #[test]
    fn servers_wait_when_full_and_never_land_on_cordoned_or_booting_nodes() {
        let mut w = World::new(shape(Placement::MostAllocated), 1);
        w.cordon("pool-node-00001", timestamp(0));
        w.grow_to(2);
        w.arrive(100);
        w.schedule();
        assert_eq!(w.census().waiting, 1);
        let snap = w.snapshot();
        // The new node has not registered yet; the pending pod is demand.
        assert_eq!(snap.nodes.len(), 1);
        assert_eq!(snap.pods.iter().filter(|p| p.node.is_none()).count(), 1);
        w.advance(60);
        assert_eq!(w.snapshot().nodes.len(), 2);
        assert!(w.take_changed());
        w.schedule();
        assert_eq!(w.census().waiting, 1, "registered but not Ready");
        w.advance(90);
        w.schedule();
        assert_eq!(w.census().waiting, 0);
        assert_eq!(w.session_records()[0].wait, 90);
    }

    #[test]
    fn sessions_end_and_free_their_slot() {
        let mut w = World::new(shape(Placement::MostAllocated), 1);
        w.arrive(30);
        w.schedule();
        w.advance(29);
        assert_eq!(w.census().running, 1);
        w.advance(30);
        assert_eq!(w.census().running, 0);
        assert_eq!(w.sessions_ended(), 1);
    }

    #[test]
    fn deleting_a_node_under_a_server_counts_it_killed() {
        let mut w = World::new(shape(Placement::MostAllocated), 1);
        w.arrive(30);
        w.schedule();
        let node = w.cloud_pool().nodes[0].clone();
        w.delete(&node).expect("exists");
        assert_eq!(w.calls().servers_killed, 1);
        // Its end later finds nothing to end.
        w.advance(40);
        assert_eq!(w.sessions_ended(), 0);
        assert!(w.delete(&node).is_err());
    }
}
