//! The `clusterapi` provider's own configuration keys, declared here rather than in core
//! configuration (see [`crate::provider`]): which kind of Cluster API object is the node
//! group, its namespace, and where the management cluster is. The group's name is the core
//! `node-pool-name`, and `cluster-name` must be the group's `spec.clusterName`.

use std::collections::BTreeMap;
use std::path::PathBuf;

use super::config_error;
use crate::config::Config;
use crate::provider::{ProviderError, ProviderSetting};

/// Key of the node group's kind.
pub const KIND_KEY: &str = "clusterapi-node-group-kind";
/// Key of the node group's namespace in the management cluster.
pub const NAMESPACE_KEY: &str = "clusterapi-namespace";
/// Key of the management cluster's kubeconfig.
pub const MANAGEMENT_KUBECONFIG_KEY: &str = "clusterapi-management-kubeconfig";

/// Every key of the `clusterapi` provider.
pub const SETTINGS: &[ProviderSetting] = &[
    ProviderSetting {
        key: KIND_KEY,
        default: "MachineDeployment",
        value_name: "KIND",
        help: "Kind of the Cluster API node group named by node-pool-name",
        allowed: "MachineDeployment, MachineSet or MachinePool",
        validate: check_kind,
    },
    ProviderSetting {
        key: NAMESPACE_KEY,
        default: "default",
        value_name: "NAMESPACE",
        help: "Namespace of the node group (and its Machines) in the management cluster",
        allowed: "a Kubernetes namespace name: 1 to 63 lowercase letters, digits or '-', \
                  starting and ending with a letter or digit",
        validate: check_namespace,
    },
    ProviderSetting {
        key: MANAGEMENT_KUBECONFIG_KEY,
        default: "",
        value_name: "PATH",
        help: "Kubeconfig of the Cluster API management cluster; empty: the cluster kubescaler \
               watches (its kubeconfig or service account) holds the Machines too",
        allowed: "a file path, or empty",
        validate: check_path,
    },
];

/// The Cluster API kinds that can be a node group: each has a `scale` subresource.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GroupKind {
    /// A MachineDeployment (the usual node group); its Machines carry
    /// `cluster.x-k8s.io/deployment-name`.
    MachineDeployment,
    /// A MachineSet that no MachineDeployment owns; its Machines carry
    /// `cluster.x-k8s.io/set-name`.
    MachineSet,
    /// A MachinePool; its Machines (where the infrastructure provider makes them) carry
    /// `cluster.x-k8s.io/pool-name`.
    MachinePool,
}

impl GroupKind {
    /// The kind as Kubernetes spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            GroupKind::MachineDeployment => "MachineDeployment",
            GroupKind::MachineSet => "MachineSet",
            GroupKind::MachinePool => "MachinePool",
        }
    }

    /// The plural resource name (the RBAC and URL name).
    pub fn plural(self) -> &'static str {
        match self {
            GroupKind::MachineDeployment => "machinedeployments",
            GroupKind::MachineSet => "machinesets",
            GroupKind::MachinePool => "machinepools",
        }
    }

    /// The label CAPI puts on the group's Machines, whose value is the group's name.
    pub fn machine_label(self) -> &'static str {
        match self {
            GroupKind::MachineDeployment => "cluster.x-k8s.io/deployment-name",
            GroupKind::MachineSet => "cluster.x-k8s.io/set-name",
            GroupKind::MachinePool => "cluster.x-k8s.io/pool-name",
        }
    }

    fn parse(text: &str) -> Option<GroupKind> {
        [
            GroupKind::MachineDeployment,
            GroupKind::MachineSet,
            GroupKind::MachinePool,
        ]
        .into_iter()
        .find(|k| k.as_str().eq_ignore_ascii_case(text))
    }
}

/// The `clusterapi` provider's settings, read from the configuration.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClusterApiSettings {
    /// The node group's kind (`clusterapi-node-group-kind`).
    pub kind: GroupKind,
    /// Its namespace (`clusterapi-namespace`).
    pub namespace: String,
    /// The management cluster's kubeconfig (`clusterapi-management-kubeconfig`); `None`: the
    /// watched cluster's own connection.
    pub management_kubeconfig: Option<PathBuf>,
}

impl ClusterApiSettings {
    /// The settings in `config` (validated by the loader; unset keys take their default).
    pub fn from_config(config: &Config) -> Result<Self, ProviderError> {
        Self::from_values(&config.provider_settings)
    }

    /// The settings from raw values by key, each checked again (a hand-built [`Config`] has
    /// not been through the loader); a missing key takes its default.
    pub fn from_values(values: &BTreeMap<String, String>) -> Result<Self, ProviderError> {
        let get = |key: &str| -> Result<String, ProviderError> {
            let setting = SETTINGS
                .iter()
                .find(|s| s.key == key)
                .ok_or_else(|| config_error(format!("{key} is not a clusterapi setting")))?;
            let text = values.get(key).map_or(setting.default, String::as_str);
            (setting.validate)(text.trim()).map_err(|reason| {
                config_error(format!(
                    "{key} {text:?}: {reason} (allowed: {})",
                    setting.allowed
                ))
            })
        };
        let kind_text = get(KIND_KEY)?;
        let kind = GroupKind::parse(&kind_text)
            .ok_or_else(|| config_error(format!("{KIND_KEY} {kind_text:?} is not a kind")))?;
        let path = get(MANAGEMENT_KUBECONFIG_KEY)?;
        Ok(Self {
            kind,
            namespace: get(NAMESPACE_KEY)?,
            management_kubeconfig: (!path.is_empty()).then(|| PathBuf::from(path)),
        })
    }
}

/// `clusterapi-node-group-kind`: one of the three kinds, in any letter case.
pub fn check_kind(text: &str) -> Result<String, String> {
    GroupKind::parse(text.trim())
        .map(|k| k.as_str().to_string())
        .ok_or_else(|| "not a Cluster API node group kind".to_string())
}

/// `clusterapi-namespace`: an RFC 1123 label, as Kubernetes requires of a namespace.
pub fn check_namespace(text: &str) -> Result<String, String> {
    let text = text.trim();
    if is_dns_label(text) {
        Ok(text.to_string())
    } else {
        Err("not a namespace name".to_string())
    }
}

/// `clusterapi-management-kubeconfig`: any path (it is read when the provider connects, where
/// the daemon runs; a check here could only see this machine's files).
pub fn check_path(text: &str) -> Result<String, String> {
    Ok(text.trim().to_string())
}

/// An RFC 1123 label: 1 to 63 of `[a-z0-9-]`, alphanumeric at both ends.
pub fn is_dns_label(text: &str) -> bool {
    let bytes = text.as_bytes();
    let edge = |b: &u8| b.is_ascii_lowercase() || b.is_ascii_digit();
    (1..=63).contains(&bytes.len())
        && bytes.first().is_some_and(edge)
        && bytes.last().is_some_and(edge)
        && bytes.iter().all(|b| edge(b) || *b == b'-')
}

/// An RFC 1123 subdomain (what Kubernetes requires of most object names): at most 253
/// characters, dot-separated labels.
pub fn is_dns_subdomain(text: &str) -> bool {
    text.len() <= 253 && text.split('.').all(is_dns_label)
}

#[cfg(test)]
mod settings_tests {
    use super::*;

    #[test]
    fn config_settings_are_read_back_with_defaults_for_missing_keys() {
        let defaults = ClusterApiSettings::from_values(&BTreeMap::new()).ok();
        assert_eq!(
            defaults,
            Some(ClusterApiSettings {
                kind: GroupKind::MachineDeployment,
                namespace: "default".into(),
                management_kubeconfig: None,
            })
        );
        let values = BTreeMap::from([
            (KIND_KEY.to_string(), "machineset".to_string()),
            (NAMESPACE_KEY.to_string(), "capi-system".to_string()),
            (
                MANAGEMENT_KUBECONFIG_KEY.to_string(),
                "/etc/mgmt".to_string(),
            ),
        ]);
        let read = ClusterApiSettings::from_values(&values).ok();
        assert_eq!(read.as_ref().map(|s| s.kind), Some(GroupKind::MachineSet));
        assert_eq!(
            read.and_then(|s| s.management_kubeconfig),
            Some(PathBuf::from("/etc/mgmt"))
        );
    }

    #[test]
    fn config_a_bad_kind_or_namespace_names_the_key_the_value_and_what_is_allowed() {
        for (key, value) in [(KIND_KEY, "Deployment"), (NAMESPACE_KEY, "Game_Servers")] {
            let values = BTreeMap::from([(key.to_string(), value.to_string())]);
            let message = ClusterApiSettings::from_values(&values)
                .err()
                .map(|e| e.to_string())
                .unwrap_or_default();
            assert!(message.contains(key), "{message}");
            assert!(message.contains(value), "{message}");
            assert!(message.contains("allowed"), "{message}");
        }
    }

    #[test]
    fn config_names_follow_the_kubernetes_rules() {
        assert!(is_dns_label("game-servers-1"));
        assert!(!is_dns_label("-x"));
        assert!(!is_dns_label(&"a".repeat(64)));
        assert!(is_dns_subdomain("pool.eu-west.1"));
        assert!(!is_dns_subdomain("Pool"));
    }
}
