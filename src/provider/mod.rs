//! Node pool providers (clouds) and their registry. A new provider is one module plus one
//! line in [`REGISTRY`].
//!
//! A provider's own configuration keys (its API endpoint, say) are declared by the provider,
//! as a [`ProviderSetting`] list in its [`ProviderSpec`], not in core configuration: the
//! config loader derives their env vars (`UPPER_SNAKE`), flags (`--key`), validation, printed
//! form and origins from here, stores the validated values of the selected provider in
//! [`Config::provider_settings`], and the provider reads them into its own settings type
//! (e.g. [`digitalocean::DigitalOceanSettings`]). A new cloud adds no field to [`Config`].

use async_trait::async_trait;

pub mod clusterapi;
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
    /// The node's identity annotations ([`crate::model::NodeState::identity_annotations`]).
    pub identity_annotations: std::collections::BTreeMap<String, String>,
}

pub use crate::model::{CloudNode, CloudPool, InstanceStatus, NodeCapacity};

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

/// What kubescaler needs of a cloud's node pool: the NodeGroup of cluster-autoscaler, as far
/// as a buffer scaler needs it.
#[cfg_attr(test, mockall::automock)]
#[async_trait]
pub trait NodePoolProvider: Send + Sync {
    /// The pool as the cloud sees it now: its target count, its instances with their status,
    /// and a new node's capacity where the cloud says it. One read.
    async fn pool(&self) -> Result<CloudPool, ProviderError>;

    /// The pool's current target node count (including nodes still provisioning).
    async fn target_size(&self) -> Result<u32, ProviderError> {
        Ok(self.pool().await?.target)
    }

    /// Raises the pool's target to `target`. Never lowers it: a lower count would let the cloud
    /// pick which nodes to remove. Fails unless the cloud's answer confirms the count.
    async fn grow_to(&self, target: u32) -> Result<(), ProviderError>;

    /// The instance of `pool` behind the Kubernetes node `node`, by the strongest identifier
    /// the provider knows; `Ok(None)`: the node is not in this pool. `Err`: the identifiers
    /// contradict each other (never guess). The default matches `spec.providerID`, else the
    /// name.
    fn find(&self, node: &NodeRef, pool: &CloudPool) -> Result<Option<CloudNode>, ProviderError> {
        Ok(find_by_provider_id_or_name(node, pool))
    }

    /// Deletes exactly this instance, already resolved, without replacement, lowering the
    /// target by one. Sends the deletion at once: no read of the pool comes first, so that
    /// nothing slow separates kubescaler's last check of the node from its deletion.
    async fn delete_instance(&self, node: &CloudNode) -> Result<(), ProviderError>;

    /// Resolves and deletes exactly these nodes (without replacement), lowering the target by
    /// one each; a node already being deleted is not deleted again. One result per node, in
    /// order. A convenience over [`pool`](Self::pool), [`find`](Self::find) and
    /// [`delete_instance`](Self::delete_instance); the scale loop uses those directly.
    async fn delete_nodes(&self, nodes: &[NodeRef]) -> Vec<Result<(), ProviderError>> {
        let pool = match self.pool().await {
            Ok(pool) => pool,
            Err(e) => return nodes.iter().map(|_| Err(e.duplicate())).collect(),
        };
        let mut results = Vec::with_capacity(nodes.len());
        let mut deleted = std::collections::BTreeSet::new();
        for node in nodes {
            let result = match self.find(node, &pool) {
                Err(e) => Err(e),
                Ok(None) => Err(ProviderError::UnknownNode {
                    provider: "provider",
                    node: node.name.clone(),
                }),
                // Going already, or asked twice: never a second DELETE.
                Ok(Some(cloud))
                    if cloud.status == InstanceStatus::Deleting || deleted.contains(&cloud.id) =>
                {
                    Ok(())
                }
                Ok(Some(cloud)) => {
                    let result = self.delete_instance(&cloud).await;
                    if result.is_ok() {
                        deleted.insert(cloud.id.clone());
                    }
                    result
                }
            };
            results.push(result);
        }
        results
    }
}

/// The instance whose provider ID is the node's, else (for a node without one) whose name is.
pub fn find_by_provider_id_or_name(node: &NodeRef, pool: &CloudPool) -> Option<CloudNode> {
    match node.provider_id.as_deref().filter(|p| !p.is_empty()) {
        Some(id) => pool
            .nodes
            .iter()
            .find(|c| c.provider_id.as_deref() == Some(id)),
        None => pool
            .nodes
            .iter()
            .find(|c| !node.name.is_empty() && c.name == node.name),
    }
    .cloned()
}

impl ProviderError {
    /// A copy (the type is not `Clone`), for reporting one failure per node.
    pub fn duplicate(&self) -> ProviderError {
        match self {
            ProviderError::Refused { provider, reason } => ProviderError::Refused {
                provider,
                reason: reason.clone(),
            },
            ProviderError::Api {
                provider,
                op,
                message,
            } => ProviderError::Api {
                provider,
                op: op.clone(),
                message: message.clone(),
            },
            ProviderError::UnknownNode { provider, node } => ProviderError::UnknownNode {
                provider,
                node: node.clone(),
            },
            ProviderError::Config { provider, message } => ProviderError::Config {
                provider,
                message: message.clone(),
            },
        }
    }
}

/// Builds a provider from the configuration.
pub type ProviderFactory = fn(&Config) -> Result<Box<dyn NodePoolProvider>, ProviderError>;

/// Checks a provider setting's text and returns its normalized value, or says what is wrong.
pub type SettingValidator = fn(&str) -> Result<String, String>;

/// One configuration key a provider declares. Like a core key it is a kebab-case YAML key, an
/// `UPPER_SNAKE` env var and a `--key` flag, and its problems are reported with key, value,
/// source and [`ProviderSetting::allowed`].
#[derive(Clone, Copy, Debug)]
pub struct ProviderSetting {
    /// The kebab-case key; it must not clash with a core key or another provider's.
    pub key: &'static str,
    /// The value when it is set nowhere (validated like a given one).
    pub default: &'static str,
    /// The flag's value placeholder in `--help` (`URL`).
    pub value_name: &'static str,
    /// One line of help, for `--help` and the docs.
    pub help: &'static str,
    /// What the validator accepts, for error messages.
    pub allowed: &'static str,
    /// Turns the given text (trimmed) into the stored value.
    pub validate: SettingValidator,
}

/// A registered provider.
pub struct ProviderSpec {
    /// The `cloud-provider` value selecting it.
    pub name: &'static str,
    /// Whether it needs `cloud-provider-token`.
    pub needs_token: bool,
    /// Its own configuration keys.
    pub settings: &'static [ProviderSetting],
    /// Node annotations the provider identifies an instance by (kept in the watch cache and
    /// handed to [`NodePoolProvider::find`] in [`NodeRef::identity_annotations`]).
    pub identity_annotations: &'static [&'static str],
    /// Its constructor.
    pub build: ProviderFactory,
}

/// Every provider kubescaler knows. Add a line here for a new one.
pub const REGISTRY: &[ProviderSpec] = &[
    ProviderSpec {
        name: digitalocean::PROVIDER,
        needs_token: true,
        settings: digitalocean::SETTINGS,
        identity_annotations: &[],
        build: digitalocean::build,
    },
    ProviderSpec {
        name: clusterapi::PROVIDER,
        needs_token: false,
        settings: clusterapi::SETTINGS,
        identity_annotations: &[clusterapi::group::NODE_MACHINE_ANNOTATION],
        build: clusterapi::build,
    },
];

/// Every identity annotation of the providers of [`REGISTRY`].
pub fn identity_annotations() -> impl Iterator<Item = &'static str> {
    REGISTRY
        .iter()
        .flat_map(|spec| spec.identity_annotations.iter().copied())
}

/// How many settings the providers of [`REGISTRY`] declare in all (sizes the key list).
pub const SETTING_COUNT: usize = {
    let mut count = 0;
    let mut i = 0;
    while i < REGISTRY.len() {
        count += REGISTRY[i].settings.len();
        i += 1;
    }
    count
};

/// Every provider setting with the provider declaring it, in [`REGISTRY`] order.
pub fn settings() -> impl Iterator<Item = (&'static ProviderSpec, &'static ProviderSetting)> {
    REGISTRY
        .iter()
        .flat_map(|spec| spec.settings.iter().map(move |setting| (spec, setting)))
}

/// The provider setting whose key is `key`, with the provider declaring it.
pub fn setting(key: &str) -> Option<(&'static ProviderSpec, &'static ProviderSetting)> {
    settings().find(|(_, setting)| setting.key == key)
}

/// The registered provider named `name`.
pub fn lookup(name: &str) -> Option<&'static ProviderSpec> {
    REGISTRY.iter().find(|p| p.name == name)
}

/// Names of every registered provider, for error messages.
pub fn names() -> Vec<&'static str> {
    REGISTRY.iter().map(|p| p.name).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A default is used unvalidated when a key is set nowhere: it must be a value its own
    /// validator accepts unchanged, for every provider.
    #[test]
    fn config_every_provider_settings_default_validates_to_itself() {
        for (spec, setting) in settings() {
            assert_eq!(
                (setting.validate)(setting.default).as_deref(),
                Ok(setting.default),
                "{}: {}",
                spec.name,
                setting.key
            );
        }
    }
}
