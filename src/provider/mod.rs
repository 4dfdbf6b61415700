//! Node pool providers (clouds) and their registry. A new provider is one module plus one
//! line in [`REGISTRY`].

use async_trait::async_trait;

pub mod digitalocean;

use crate::config::Config;

/// A node to delete, with what a provider needs to find its cloud instance.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeRef {
    /// Kubernetes node name.
    pub name: String,
    /// `spec.providerID`.
    pub provider_id: Option<String>,
    /// The node's labels.
    pub labels: std::collections::BTreeMap<String, String>,
}

/// A node as the cloud sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProviderNode {
    /// Cloud-side node id.
    pub id: String,
    /// Node name (the Kubernetes node name once registered).
    pub name: String,
    /// Cloud-side state (`provisioning`, `running`, `deleting`...).
    pub state: String,
}

/// Errors of a provider.
#[derive(Debug, thiserror::Error)]
pub enum ProviderError {
    /// The provider refused to do something unsafe or impossible.
    #[error("{provider}: refused: {reason}")]
    Refused {
        /// Provider name.
        provider: &'static str,
        /// Why.
        reason: String,
    },
    /// A call to the cloud API failed.
    #[error("{provider}: {op} failed: {message}")]
    Api {
        /// Provider name.
        provider: &'static str,
        /// The operation, e.g. `resize pool`.
        op: String,
        /// What the cloud said (never the token).
        message: String,
    },
    /// A node could not be mapped to a cloud instance.
    #[error("{provider}: node {node} not found in the pool")]
    UnknownNode {
        /// Provider name.
        provider: &'static str,
        /// Node name.
        node: String,
    },
    /// The provider cannot be built from the configuration.
    #[error("{provider}: configuration: {message}")]
    Config {
        /// Provider name.
        provider: &'static str,
        /// What is wrong.
        message: String,
    },
}

/// What kubescaler needs of a cloud's node pool.
#[cfg_attr(test, mockall::automock)]
#[async_trait]
pub trait NodePoolProvider: Send + Sync {
    /// The pool's current target node count (including nodes still provisioning).
    async fn target_size(&self) -> Result<u32, ProviderError>;

    /// Raises the pool's target to `target`. Never lowers it: a lower count would let the cloud
    /// pick which nodes to remove.
    async fn grow_to(&self, target: u32) -> Result<(), ProviderError>;

    /// Deletes exactly these nodes (without replacement), lowering the target by one each.
    /// One result per node, in order.
    async fn delete_nodes(&self, nodes: &[NodeRef]) -> Vec<Result<(), ProviderError>>;

    /// The pool's nodes as the cloud sees them.
    async fn nodes(&self) -> Result<Vec<ProviderNode>, ProviderError>;
}

/// Builds a provider from the configuration.
pub type ProviderFactory = fn(&Config) -> Result<Box<dyn NodePoolProvider>, ProviderError>;

/// A registered provider.
pub struct ProviderSpec {
    /// The `cloud-provider` value selecting it.
    pub name: &'static str,
    /// Whether it needs `cloud-provider-token`.
    pub needs_token: bool,
    /// Its constructor.
    pub build: ProviderFactory,
}

/// Every provider kubescaler knows. Add a line here for a new one.
pub const REGISTRY: &[ProviderSpec] = &[ProviderSpec {
    name: "digitalocean",
    needs_token: true,
    build: digitalocean::build,
}];

/// The registered provider named `name`.
pub fn lookup(name: &str) -> Option<&'static ProviderSpec> {
    REGISTRY.iter().find(|p| p.name == name)
}

/// Names of every registered provider, for error messages.
pub fn names() -> Vec<&'static str> {
    REGISTRY.iter().map(|p| p.name).collect()
}
