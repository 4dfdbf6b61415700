//! What kubescaler needs to know of Agones GameServers (`gameservers.agones.dev/v1`), reduced
//! from the objects as the API server serves them. Pure: no client, no I/O.
//!
//! The facts (states, their meaning, Agones' own deletability rule, the Fleet label) are those
//! of `../shared/agones/README.md` and the GameServer CRD's `status.state` enum.
//!
//! This is the model of the `server-source: agones` mode: which GameServers are live matches
//! (never disturbed), which are warm Ready slots, which are on their way; which of a node's
//! GameServers may be removed to empty it (compaction), and the per-Fleet buffer the
//! FleetAutoscalers ask for.

use std::collections::BTreeMap;

use kube::core::{ApiResource, DynamicObject};
use serde::Serialize;

/// API group of GameServers.
pub const GROUP: &str = "agones.dev";
/// API version of GameServers.
pub const VERSION: &str = "v1";
/// Kind of a GameServer.
pub const KIND: &str = "GameServer";
/// Resource (plural) of GameServers.
pub const PLURAL: &str = "gameservers";
/// Label a GameServerSet puts on its GameServers: the Fleet's name.
pub const FLEET_LABEL: &str = "agones.dev/fleet";
/// Label Agones puts on a GameServer's pod: `gameserver`.
pub const ROLE_LABEL: &str = "agones.dev/role";
/// Value of [`ROLE_LABEL`] on a GameServer's pod.
pub const ROLE_GAMESERVER: &str = "gameserver";
/// Label Agones puts on a GameServer's pod: the GameServer's name.
pub const GAMESERVER_LABEL: &str = "agones.dev/gameserver";
/// API group of FleetAutoscalers.
pub const AUTOSCALING_GROUP: &str = "autoscaling.agones.dev";

/// How the buffer is sized in Agones mode (`agones-buffer`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum AgonesBuffer {
    /// `buffer-slot-size` slots: free room plus Ready and starting GameServers.
    #[default]
    Fixed,
    /// From the FleetAutoscalers' Buffer policies: per Fleet, its Ready buffer plus room for
    /// the autoscaler's next step (as large again, within its maxReplicas), at least
    /// `buffer-slot-size` in all.
    FleetAutoscalers,
}

impl AgonesBuffer {
    /// The config value naming it.
    pub fn as_str(self) -> &'static str {
        match self {
            AgonesBuffer::Fixed => "fixed",
            AgonesBuffer::FleetAutoscalers => "fleet-autoscalers",
        }
    }
}

impl std::str::FromStr for AgonesBuffer {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "fixed" => Ok(AgonesBuffer::Fixed),
            "fleet-autoscalers" => Ok(AgonesBuffer::FleetAutoscalers),
            other => Err(format!("unknown agones buffer {other:?}")),
        }
    }
}

/// The settings of the Agones mode (the `agones-*` keys), in one place.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct AgonesSettings {
    /// Namespaces whose GameServers count toward the buffer and may be compacted; empty: all.
    pub namespaces: Vec<String>,
    /// Fleets whose GameServers count toward the buffer and may be compacted; empty: all.
    pub fleets: Vec<String>,
    /// Ready GameServers compaction may delete per minute; 0 turns compaction off.
    pub compaction_per_minute: u32,
    /// How the buffer is sized.
    pub buffer: AgonesBuffer,
}

impl AgonesSettings {
    /// Whether `gs` is in scope: its namespace and Fleet are among those configured (an empty
    /// list admits all). Out-of-scope GameServers still protect their nodes; they are only
    /// not counted as warm slots nor compacted.
    pub fn in_scope(&self, gs: &GameServerInfo) -> bool {
        let namespace = gs.key.split_once('/').map_or("", |(ns, _)| ns);
        let namespace_ok =
            self.namespaces.is_empty() || self.namespaces.iter().any(|n| n == namespace);
        let fleet_ok = self.fleets.is_empty()
            || gs
                .fleet
                .as_deref()
                .is_some_and(|f| self.fleets.iter().any(|n| n == f));
        namespace_ok && fleet_ok
    }

    /// Whether a FleetAutoscaler of `namespace` for `fleet` is in scope.
    pub fn fleet_in_scope(&self, namespace: &str, fleet: &str) -> bool {
        (self.namespaces.is_empty() || self.namespaces.iter().any(|n| n == namespace))
            && (self.fleets.is_empty() || self.fleets.iter().any(|n| n == fleet))
    }
}

/// The resource description kube's dynamic API needs to read GameServers.
pub fn game_server_resource() -> ApiResource {
    ApiResource {
        group: GROUP.into(),
        version: VERSION.into(),
        api_version: format!("{GROUP}/{VERSION}"),
        kind: KIND.into(),
        plural: PLURAL.into(),
    }
}

/// `status.state` of a GameServer (the CRD's enum), plus `Unknown` for an absent or new value.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub enum GameServerState {
    /// Ports being allocated.
    PortAllocation,
    /// Its pod is being created.
    Creating,
    /// Its pod is starting.
    Starting,
    /// Its pod is bound to a node.
    Scheduled,
    /// The game server asked to become Ready.
    RequestReady,
    /// Warm and idle: a free slot waiting for a match.
    Ready,
    /// Held for a match about to start.
    Reserved,
    /// A live match.
    Allocated,
    /// Shutting down.
    Shutdown,
    /// Failed.
    Error,
    /// Failed its health checks.
    Unhealthy,
    /// No state yet, or one this version does not know.
    Unknown,
}

impl GameServerState {
    /// Parses `status.state`; anything else is [`GameServerState::Unknown`].
    pub fn parse(s: &str) -> GameServerState {
        match s {
            "PortAllocation" => Self::PortAllocation,
            "Creating" => Self::Creating,
            "Starting" => Self::Starting,
            "Scheduled" => Self::Scheduled,
            "RequestReady" => Self::RequestReady,
            "Ready" => Self::Ready,
            "Reserved" => Self::Reserved,
            "Allocated" => Self::Allocated,
            "Shutdown" => Self::Shutdown,
            "Error" => Self::Error,
            "Unhealthy" => Self::Unhealthy,
            _ => Self::Unknown,
        }
    }

    /// A live match, or one about to start: its node must never be fenced or deleted.
    pub fn is_live_match(self) -> bool {
        matches!(self, Self::Allocated | Self::Reserved)
    }

    /// A warm, idle server: a free slot already paid for.
    pub fn is_warm(self) -> bool {
        self == Self::Ready
    }

    /// Capacity on its way (not free yet). An unknown state is taken as starting: counting
    /// it as gone could delete a node under a server.
    pub fn is_starting(self) -> bool {
        matches!(
            self,
            Self::PortAllocation
                | Self::Creating
                | Self::Starting
                | Self::Scheduled
                | Self::RequestReady
                | Self::Unknown
        )
    }

    /// On its way out: not a live match.
    pub fn is_leaving(self) -> bool {
        matches!(self, Self::Shutdown | Self::Error | Self::Unhealthy)
    }
}

/// One GameServer, as far as a node scaler needs it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GameServerInfo {
    /// `namespace/name`.
    pub key: String,
    /// `status.nodeName`, once its pod is bound.
    pub node: Option<String>,
    /// `status.state`.
    pub state: GameServerState,
    /// `metadata.resourceVersion`: the precondition of a safe delete.
    pub resource_version: Option<String>,
    /// `metadata.deletionTimestamp` is set.
    pub being_deleted: bool,
    /// Its Fleet ([`FLEET_LABEL`]), if it belongs to one.
    pub fleet: Option<String>,
}

impl GameServerInfo {
    /// Agones' own rule (`IsDeletable`): an Allocated or Reserved GameServer is not deletable
    /// unless it is already being deleted.
    pub fn deletable(&self) -> bool {
        self.being_deleted || !self.state.is_live_match()
    }

    /// Whether it blocks the deletion of its node: a live match not already on its way out.
    pub fn blocks_node_deletion(&self) -> bool {
        !self.deletable()
    }
}

/// Reduces a GameServer object; `None` for one without a name (which the API server never
/// sends).
pub fn game_server_info(object: &DynamicObject) -> Option<GameServerInfo> {
    let meta = &object.metadata;
    let name = meta.name.as_deref()?;
    let namespace = meta.namespace.as_deref().unwrap_or_default();
    let status = object.data.get("status");
    let text = |key: &str| {
        status
            .and_then(|s| s.get(key))
            .and_then(|v| v.as_str())
            .filter(|s| !s.is_empty())
    };
    Some(GameServerInfo {
        key: format!("{namespace}/{name}"),
        node: text("nodeName").map(str::to_string),
        state: text("state").map_or(GameServerState::Unknown, GameServerState::parse),
        resource_version: meta.resource_version.clone(),
        being_deleted: meta.deletion_timestamp.is_some(),
        fleet: meta
            .labels
            .as_ref()
            .and_then(|l| l.get(FLEET_LABEL))
            .cloned(),
    })
}

/// The resource description of FleetAutoscalers (`autoscaling.agones.dev/v1`).
pub fn fleet_autoscaler_resource() -> ApiResource {
    ApiResource {
        group: AUTOSCALING_GROUP.into(),
        version: VERSION.into(),
        api_version: format!("{AUTOSCALING_GROUP}/{VERSION}"),
        kind: "FleetAutoscaler".into(),
        plural: "fleetautoscalers".into(),
    }
}

/// What one FleetAutoscaler's Buffer policy asks of the nodes.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct FleetBuffer {
    /// `namespace/name` of the FleetAutoscaler.
    pub key: String,
    /// The Fleet it scales.
    pub fleet: String,
    /// Ready GameServers it keeps (bufferSize, a percentage resolved on its current replicas).
    pub ready: u32,
    /// Replicas it may still add before its maxReplicas: the most its next step can ask.
    pub headroom: u32,
}

impl FleetBuffer {
    /// Slots the nodes must offer for this Fleet: its Ready buffer, plus room for the next
    /// step as large again (when a burst allocates the Ready ones, the autoscaler creates as
    /// many new GameServers, which need room at once), capped by its maxReplicas.
    pub fn slots(&self) -> u32 {
        self.ready.saturating_add(self.ready.min(self.headroom))
    }
}

/// Reduces a FleetAutoscaler with a Buffer policy; `None` for another policy type (Webhook,
/// Counter, List... say nothing a node scaler can size from) or a malformed one.
pub fn fleet_buffer(object: &DynamicObject) -> Option<FleetBuffer> {
    let meta = &object.metadata;
    let name = meta.name.as_deref()?;
    let namespace = meta.namespace.as_deref().unwrap_or_default();
    let spec = object.data.get("spec")?;
    let fleet = spec.get("fleetName")?.as_str()?.to_string();
    let policy = spec.get("policy")?;
    if policy.get("type").and_then(|t| t.as_str()) != Some("Buffer") {
        return None;
    }
    let buffer = policy.get("buffer")?;
    let max = buffer.get("maxReplicas")?.as_u64()?;
    let current = object
        .data
        .get("status")
        .and_then(|s| s.get("currentReplicas"))
        .and_then(|v| v.as_u64())
        .unwrap_or(0);
    let size = buffer.get("bufferSize")?;
    let ready = match (size.as_u64(), size.as_str()) {
        (Some(n), _) => n,
        (None, Some(text)) => {
            let pct: u64 = text.strip_suffix('%')?.trim().parse().ok()?;
            // Agones keeps pct% of all replicas Ready: at least one while any are wanted.
            (current * pct).div_ceil(100).max(u64::from(pct > 0))
        }
        _ => return None,
    };
    let clamp = |n: u64| u32::try_from(n).unwrap_or(u32::MAX);
    Some(FleetBuffer {
        key: format!("{namespace}/{name}"),
        fleet,
        ready: clamp(ready.min(max)),
        headroom: clamp(max.saturating_sub(current)),
    })
}

/// A pod of a node as the last check before deletion reads it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LivePod {
    /// `namespace/name`.
    pub key: String,
    /// `namespace/name` of its GameServer ([`GAMESERVER_LABEL`]), for a GameServer's pod.
    pub game_server: Option<String>,
}

/// What a node holds, read live right before its deletion: the GameServers whose
/// `status.nodeName` is the node, and the GameServer pods bound to it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LiveNodeServers {
    /// GameServers on the node.
    pub game_servers: Vec<GameServerInfo>,
    /// GameServer pods (non-terminal) on the node.
    pub pods: Vec<LivePod>,
}

impl LiveNodeServers {
    /// What keeps the node from being deleted, one entry each (empty: nothing). A GameServer
    /// on its way out (Shutdown, Error, Unhealthy, or being deleted) holds no match; every
    /// other one could receive one (a Ready one by allocation, which ignores the cordon), and
    /// a GameServer pod whose GameServer is not among the leaving ones may be anything.
    pub fn blockers(&self) -> Vec<String> {
        let leaving = |gs: &GameServerInfo| gs.being_deleted || gs.state.is_leaving();
        let mut out: Vec<String> = self
            .game_servers
            .iter()
            .filter(|gs| !leaving(gs))
            .map(|gs| format!("GameServer {} ({:?})", gs.key, gs.state))
            .collect();
        for pod in &self.pods {
            let known_leaving = pod.game_server.as_ref().is_some_and(|k| {
                self.game_servers
                    .iter()
                    .any(|gs| &gs.key == k && leaving(gs))
            });
            let counted = pod
                .game_server
                .as_ref()
                .is_some_and(|k| self.game_servers.iter().any(|gs| &gs.key == k));
            if !known_leaving && !counted {
                out.push(format!(
                    "GameServer pod {} (its GameServer not seen)",
                    pod.key
                ));
            }
        }
        out
    }
}

/// The answer to a delete of a GameServer with a resourceVersion precondition.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GameServerDelete {
    /// Deleted: it was still as read.
    Deleted,
    /// 409 Conflict: it changed since it was read (an allocation won); left alone.
    Conflict,
    /// Already gone.
    Gone,
}

/// The GameServers of one node, by what they mean to the node scaler.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct NodeGameServers {
    /// Allocated or Reserved, not being deleted: the node must stay.
    pub live: u32,
    /// Ready: warm slots.
    pub ready: u32,
    /// On their way to Ready.
    pub starting: u32,
    /// Shutting down or failed.
    pub leaving: u32,
}

/// Tallies GameServers per node; unbound ones are left out.
pub fn tally<'a>(
    servers: impl IntoIterator<Item = &'a GameServerInfo>,
) -> BTreeMap<String, NodeGameServers> {
    let mut by_node: BTreeMap<String, NodeGameServers> = BTreeMap::new();
    for gs in servers {
        let Some(node) = &gs.node else { continue };
        let entry = by_node.entry(node.clone()).or_default();
        if gs.blocks_node_deletion() {
            entry.live += 1;
        } else if gs.being_deleted || gs.state.is_leaving() {
            entry.leaving += 1;
        } else if gs.state.is_warm() {
            entry.ready += 1;
        } else {
            entry.starting += 1;
        }
    }
    by_node
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn object(name: &str, state: Option<&str>, node: Option<&str>) -> DynamicObject {
        let mut status = serde_json::Map::new();
        if let Some(s) = state {
            status.insert("state".into(), json!(s));
        }
        if let Some(n) = node {
            status.insert("nodeName".into(), json!(n));
        }
        serde_json::from_value(json!({
            "apiVersion": "agones.dev/v1",
            "kind": "GameServer",
            "metadata": {
                "name": name,
                "namespace": "games",
                "resourceVersion": "7",
                "labels": {FLEET_LABEL: "arena"},
            },
            "spec": {"template": {}},
            "status": status,
        }))
        .unwrap_or_else(|e| panic!("object: {e}"))
    }

    #[test]
    fn every_state_of_the_crd_enum_is_known() {
        // The enum of status.state in ../shared/agones/agones-crds.yaml.
        for s in [
            "PortAllocation",
            "Creating",
            "Starting",
            "Scheduled",
            "RequestReady",
            "Ready",
            "Shutdown",
            "Error",
            "Unhealthy",
            "Reserved",
            "Allocated",
        ] {
            assert_ne!(GameServerState::parse(s), GameServerState::Unknown, "{s}");
        }
        assert_eq!(
            GameServerState::parse("Hibernating"),
            GameServerState::Unknown
        );
    }

    #[test]
    fn allocated_and_reserved_game_servers_block_their_nodes_deletion() {
        for state in ["Allocated", "Reserved"] {
            let gs = game_server_info(&object("a", Some(state), Some("n1"))).unwrap();
            assert!(gs.blocks_node_deletion(), "{state}");
            assert!(!gs.deletable(), "{state}");
        }
        let ready = game_server_info(&object("r", Some("Ready"), Some("n1"))).unwrap();
        assert!(ready.deletable() && !ready.blocks_node_deletion());
    }

    #[test]
    fn an_allocated_game_server_already_being_deleted_no_longer_blocks() {
        let mut o = object("a", Some("Allocated"), Some("n1"));
        o.metadata.deletion_timestamp = Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
            jiff::Timestamp::UNIX_EPOCH,
        ));
        let gs = game_server_info(&o).unwrap();
        assert!(gs.deletable());
    }

    #[test]
    fn a_game_server_without_a_state_counts_as_starting_never_as_gone() {
        let gs = game_server_info(&object("new", None, Some("n1"))).unwrap();
        assert_eq!(gs.state, GameServerState::Unknown);
        assert!(gs.state.is_starting());
        assert_eq!(tally([&gs])["n1"].starting, 1);
    }

    #[test]
    fn the_reduction_keeps_key_node_resource_version_and_fleet() {
        let gs = game_server_info(&object("arena-x1", Some("Ready"), Some("n2"))).unwrap();
        assert_eq!(gs.key, "games/arena-x1");
        assert_eq!(gs.node.as_deref(), Some("n2"));
        assert_eq!(gs.resource_version.as_deref(), Some("7"));
        assert_eq!(gs.fleet.as_deref(), Some("arena"));
    }

    #[test]
    fn tally_sorts_each_nodes_game_servers_by_meaning_and_skips_unbound_ones() {
        let servers: Vec<GameServerInfo> = [
            ("a", "Allocated", Some("n1")),
            ("b", "Ready", Some("n1")),
            ("c", "Ready", Some("n1")),
            ("d", "Scheduled", Some("n2")),
            ("e", "Shutdown", Some("n2")),
            ("f", "Creating", None),
        ]
        .iter()
        .filter_map(|(n, s, node)| game_server_info(&object(n, Some(s), *node)))
        .collect();
        let t = tally(&servers);
        assert_eq!(
            t["n1"],
            NodeGameServers {
                live: 1,
                ready: 2,
                starting: 0,
                leaving: 0
            }
        );
        assert_eq!(
            t["n2"],
            NodeGameServers {
                live: 0,
                ready: 0,
                starting: 1,
                leaving: 1
            }
        );
        assert_eq!(t.len(), 2);
    }

    #[test]
    fn the_dynamic_resource_names_gameservers_of_agones_dev_v1() {
        let r = game_server_resource();
        assert_eq!(
            (r.api_version.as_str(), r.plural.as_str(), r.kind.as_str()),
            ("agones.dev/v1", "gameservers", "GameServer")
        );
    }
}
