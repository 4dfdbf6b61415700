//! The `Kubernetes` side of kubescaler: what it reads of the cluster and the few writes it
//! makes (cordon, uncordon). The kube-rs implementation lives in a submodule; tests use the
//! mockall fake generated here.

use async_trait::async_trait;
use tokio::sync::broadcast;

use crate::agones::{GameServerDelete, GameServerInfo, LiveNodeServers};
use crate::model::{ClusterSnapshot, NodeState};

pub mod index;
pub mod kube;
pub mod marks;

pub use self::index::ClusterIndex;
pub use self::kube::KubeCluster;
pub use self::marks::{MarkOp, MarkOutcome};

/// Something changed that may change the plan.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ChangeEvent {
    /// A selector-matched node was added, changed or removed.
    Node(String),
    /// A server pod was added, bound, finished or removed.
    ServerPod(String),
    /// An Agones GameServer (or FleetAutoscaler) changed state, node, or came or went.
    GameServer(String),
    /// The caches were (re)built from a full list.
    Resynced,
}

/// Errors of the Kubernetes side.
#[derive(Debug, thiserror::Error)]
pub enum KubeError {
    /// The caches are not (yet, or no longer) in sync with the API server; planning now would
    /// act on a partial view.
    #[error("cluster caches are not synced yet: {0}")]
    NotSynced(String),
    /// An API call failed.
    #[error("kubernetes API call {op} failed: {source}")]
    Api {
        /// What was attempted, e.g. `patch node n1`.
        op: String,
        /// The client error.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// The client could not be built.
    #[error("cannot build a Kubernetes client: {0}")]
    Client(String),
}

/// The Kubernetes Event reasons kubescaler records, one per kind of action it takes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventReason {
    /// The pool's target size was raised.
    ScaleUp,
    /// A surplus node was cordoned.
    Cordon,
    /// A node kubescaler had cordoned was made schedulable again.
    Uncordon,
    /// An expired, empty node was deleted through the cloud provider.
    DeleteNode,
    /// A deletion was called off: the live re-check found a server pod on the node, or the
    /// node was no longer kubescaler's.
    DeleteCancelled,
    /// The cloud refused or failed a node's deletion; it is retried after a backoff.
    DeleteFailed,
    /// kubescaler's marks were removed from a node a person made schedulable.
    ClearMarks,
    /// A selector-matched node is not in the cloud pool, or a pool instance never registered.
    PoolMismatch,
    /// Ready GameServers were deleted from a surplus node so that it can empty (Agones mode).
    Compact,
}

impl EventReason {
    /// The Event's `reason` text.
    pub fn as_str(self) -> &'static str {
        match self {
            EventReason::ScaleUp => "ScaleUp",
            EventReason::Cordon => "Cordon",
            EventReason::Uncordon => "Uncordon",
            EventReason::DeleteNode => "DeleteNode",
            EventReason::DeleteCancelled => "DeleteCancelled",
            EventReason::DeleteFailed => "DeleteFailed",
            EventReason::ClearMarks => "ClearMarks",
            EventReason::PoolMismatch => "PoolMismatch",
            EventReason::Compact => "Compact",
        }
    }
}

/// A Kubernetes Event about one action.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ActionEvent {
    /// Why it is recorded.
    pub reason: EventReason,
    /// The node concerned; `None` for pool-wide actions (recorded on kubescaler's namespace).
    pub node: Option<String>,
    /// The planner's reason for the action.
    pub message: String,
}

/// What kubescaler needs of a Kubernetes cluster.
#[cfg_attr(test, mockall::automock)]
#[async_trait]
pub trait Kubernetes: Send + Sync {
    /// The pool as of now: selector-matched nodes, the pods bound to them, unbound server pods.
    async fn snapshot(&self) -> Result<ClusterSnapshot, KubeError>;

    /// Changes kubescaler's marks on `node` (cordon, uncordon, fence...), decided on the node
    /// as read live from the API server and written only if nothing changed it meanwhile
    /// (see [`marks`] for the ownership rule).
    async fn mark(&self, node: &str, op: MarkOp) -> Result<MarkOutcome, KubeError>;

    /// The node read live from the API server (not from a cache); `None` if it is gone.
    async fn live_node(&self, node: &str) -> Result<Option<NodeState>, KubeError>;

    /// Server pods bound to `node` that are not terminal, read live from the API server (not
    /// from a cache): the last check before a node is deleted.
    async fn live_server_pods(&self, node: &str) -> Result<Vec<String>, KubeError>;

    /// The GameServers and GameServer pods on `node`, read live from the API server (Agones
    /// mode): with [`Kubernetes::live_server_pods`], the last check before a node is deleted.
    /// A cluster view without GameServer reads refuses, so a deletion fails rather than
    /// proceeding unchecked.
    async fn live_node_game_servers(&self, node: &str) -> Result<LiveNodeServers, KubeError> {
        Err(KubeError::Client(format!(
            "cannot read the GameServers of node {node}: this cluster view has no Agones support"
        )))
    }

    /// Deletes a GameServer only if it is still at the `resourceVersion` it was read with (an
    /// allocation since then wins: [`GameServerDelete::Conflict`]).
    async fn delete_game_server(
        &self,
        game_server: &GameServerInfo,
    ) -> Result<GameServerDelete, KubeError> {
        Err(KubeError::Client(format!(
            "cannot delete GameServer {}: this cluster view has no Agones support",
            game_server.key
        )))
    }

    /// A receiver of change events; each call subscribes anew.
    fn changes(&self) -> broadcast::Receiver<ChangeEvent>;

    /// Records a Kubernetes Event for an action. Implementations with nowhere to record
    /// (simulations) keep this default, which records nothing.
    async fn publish_event(&self, _event: &ActionEvent) -> Result<(), KubeError> {
        Ok(())
    }

    /// Whether the view of the cluster is complete (caches synced), for readiness.
    fn synced(&self) -> bool {
        true
    }
}
