//! Cluster API: one driver for every infrastructure Cluster API drives. The node group is a
//! MachineDeployment (or a MachineSet no MachineDeployment owns, or a MachinePool) in the
//! management cluster, `clusterapi-namespace`/`node-pool-name`, of the Cluster
//! `cluster-name`; its Machines are the pool's instances.
//!
//! # Safety rules
//! * A group carrying cluster-autoscaler's min/max size annotations is refused by every
//!   operation: two autoscalers on one group fight.
//! * [`NodePoolProvider::grow_to`] sets an absolute `spec.replicas` through the `scale`
//!   subresource, never a lower one, with the resourceVersion it read (a concurrent change
//!   fails the write instead of being overwritten).
//! * [`NodePoolProvider::delete_instance`] marks the node's Machine
//!   `cluster.x-k8s.io/delete-machine`, then lowers replicas by exactly one, and only when the
//!   new count equals the live Machines without a mark ([`group::check_lowering`]), so that
//!   Cluster API removes exactly the marked Machine and never picks a victim itself. The mark
//!   comes off again if the count cannot be lowered.
//! * A MachinePool whose instances are not Machines is grown, never shrunk: there is nothing
//!   to mark, so Cluster API would choose the instance.
//!
//! # Connection
//! [`build`] sends nothing. The first operation connects, with
//! `clusterapi-management-kubeconfig` when set, else as kubescaler connects to the cluster it
//! watches (a service account, `cluster-kube-config-path`, the master URL), and every read
//! checks the group again. The Machines' Nodes are in the watched cluster, as usual.

pub mod group;
pub mod settings;

#[cfg(test)]
mod tests;

use std::path::PathBuf;
use std::time::Duration;

use async_trait::async_trait;
use k8s_openapi::api::autoscaling::v1::{Scale, ScaleSpec};
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use kube::core::{ApiResource, DynamicObject};
use kube::Client;
use serde_json::{json, Value};
use tokio::sync::OnceCell;
use tracing::{info, warn};

use self::group::{
    check_group, check_lowering, cloud_node, find_machine, template, GroupProblem, MachineFacts,
    DELETE_MACHINE_ANNOTATION,
};
use super::{CloudNode, CloudPool, InstanceStatus, NodePoolProvider, NodeRef, ProviderError};
use crate::config::Config;

pub use self::settings::{ClusterApiSettings, GroupKind, SETTINGS};

/// The provider's registry name, also the prefix of its errors.
pub const PROVIDER: &str = "clusterapi";
/// The API group of Cluster API's core kinds.
pub const API_GROUP: &str = "cluster.x-k8s.io";
/// The version kubescaler reads and writes (the stored one since v1.11).
pub const API_VERSION: &str = "v1beta2";
/// Longest wait for one request to the management cluster.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// Longest wait to connect to it.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

fn config_error(message: impl Into<String>) -> ProviderError {
    ProviderError::Config {
        provider: PROVIDER,
        message: message.into(),
    }
}

fn refused(reason: impl Into<String>) -> ProviderError {
    ProviderError::Refused {
        provider: PROVIDER,
        reason: reason.into(),
    }
}

fn api_error(op: impl Into<String>, message: impl Into<String>) -> ProviderError {
    ProviderError::Api {
        provider: PROVIDER,
        op: op.into(),
        message: message.into(),
    }
}

/// How the driver reaches the management cluster.
enum Connect {
    /// A client made elsewhere (tests; an embedding program).
    Given(Client),
    /// Built on first use from a kubeconfig path and/or master URL (`None`, `None`: the
    /// service account in a pod, else `KUBECONFIG` / `~/.kube/config`).
    Build {
        master_url: Option<String>,
        kubeconfig: Option<PathBuf>,
    },
}

/// The Cluster API node group driver.
pub struct ClusterApi {
    settings: ClusterApiSettings,
    name: String,
    cluster_name: String,
    connect: Connect,
    client: OnceCell<Client>,
}

impl std::fmt::Debug for ClusterApi {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClusterApi")
            .field("settings", &self.settings)
            .field("name", &self.name)
            .field("cluster_name", &self.cluster_name)
            .finish_non_exhaustive()
    }
}

/// The registry's factory: the group from `node-pool-name` and the provider's settings,
/// connecting on first use (see the module documentation). Sends nothing.
pub fn build(config: &Config) -> Result<Box<dyn NodePoolProvider>, ProviderError> {
    let settings = ClusterApiSettings::from_config(config)?;
    let connect = match &settings.management_kubeconfig {
        Some(path) => Connect::Build {
            master_url: None,
            kubeconfig: Some(path.clone()),
        },
        None => Connect::Build {
            master_url: config.cluster_kube_config_master_url.clone(),
            kubeconfig: config.cluster_kube_config_path.clone(),
        },
    };
    Ok(Box::new(ClusterApi::new(
        connect,
        settings,
        &config.node_pool_name,
        &config.cluster_name,
    )?))
}

impl ClusterApi {
    /// A driver for the group `name` of the Cluster `cluster_name`, through `client`.
    pub fn with_client(
        client: Client,
        settings: ClusterApiSettings,
        name: &str,
        cluster_name: &str,
    ) -> Result<Self, ProviderError> {
        Self::new(Connect::Given(client), settings, name, cluster_name)
    }

    fn new(
        connect: Connect,
        settings: ClusterApiSettings,
        name: &str,
        cluster_name: &str,
    ) -> Result<Self, ProviderError> {
        let name = name.trim();
        if !settings::is_dns_subdomain(name) {
            return Err(config_error(format!(
                "node-pool-name {name:?} is not a {} name (allowed: lowercase letters, digits, \
                 '-' and '.', at most 253 characters)",
                settings.kind.as_str()
            )));
        }
        if cluster_name.trim().is_empty() {
            return Err(config_error("cluster-name is empty"));
        }
        Ok(Self {
            settings,
            name: name.to_string(),
            cluster_name: cluster_name.trim().to_string(),
            connect,
            client: OnceCell::new(),
        })
    }

    /// `namespace/name` of the group, for messages.
    fn id(&self) -> String {
        format!("{}/{}", self.settings.namespace, self.name)
    }

    async fn client(&self) -> Result<Client, ProviderError> {
        self.client
            .get_or_try_init(|| async {
                match &self.connect {
                    Connect::Given(client) => Ok(client.clone()),
                    Connect::Build {
                        master_url,
                        kubeconfig,
                    } => {
                        let mut config = crate::kubernetes::kube::client_config(
                            master_url.as_deref(),
                            kubeconfig.as_deref(),
                        )
                        .await
                        .map_err(|e| {
                            config_error(format!("the management cluster's connection: {e}"))
                        })?;
                        config.connect_timeout = Some(CONNECT_TIMEOUT);
                        config.read_timeout = Some(REQUEST_TIMEOUT);
                        config.write_timeout = Some(REQUEST_TIMEOUT);
                        info!(server = %config.cluster_url, group = %self.id(), "connecting to the Cluster API management cluster");
                        Client::try_from(config).map_err(|e| {
                            config_error(format!("the management cluster's client: {e}"))
                        })
                    }
                }
            })
            .await
            .cloned()
    }

    fn resource(kind: &str, plural: &str) -> ApiResource {
        ApiResource {
            group: API_GROUP.to_string(),
            version: API_VERSION.to_string(),
            api_version: format!("{API_GROUP}/{API_VERSION}"),
            kind: kind.to_string(),
            plural: plural.to_string(),
        }
    }

    async fn groups(&self) -> Result<Api<DynamicObject>, ProviderError> {
        let kind = self.settings.kind;
        Ok(Api::namespaced_with(
            self.client().await?,
            &self.settings.namespace,
            &Self::resource(kind.as_str(), kind.plural()),
        ))
    }

    async fn machines(&self) -> Result<Api<DynamicObject>, ProviderError> {
        Ok(Api::namespaced_with(
            self.client().await?,
            &self.settings.namespace,
            &Self::resource("Machine", "machines"),
        ))
    }

    /// The message of a failed call; a missing group or missing rights are configuration
    /// errors (final at start), the rest API failures (retried).
    fn call_error(&self, op: &str, e: kube::Error) -> ProviderError {
        match e {
            kube::Error::Api(status) if status.code == 404 && op.starts_with("get ") => {
                config_error(format!(
                    "{} {} not found in the management cluster (clusterapi-namespace {:?}, \
                     node-pool-name {:?}): {}",
                    self.settings.kind.as_str(),
                    self.id(),
                    self.settings.namespace,
                    self.name,
                    status.message
                ))
            }
            kube::Error::Api(status) if status.code == 401 || status.code == 403 => {
                config_error(format!(
                    "{op}: {} {}: {} (the RBAC of deploy/clusterapi/ grants what kubescaler needs)",
                    status.code, status.reason, status.message
                ))
            }
            kube::Error::Api(status) => api_error(
                op,
                format!("{} {}: {}", status.code, status.reason, status.message),
            ),
            other => api_error(op, other.to_string()),
        }
    }

    /// The group, read fresh and checked.
    async fn read_group(&self) -> Result<Value, ProviderError> {
        let op = format!("get {}", self.settings.kind.as_str());
        let object = self
            .groups()
            .await?
            .get(&self.name)
            .await
            .map_err(|e| self.call_error(&op, e))?;
        let value = serde_json::to_value(&object).map_err(|e| api_error(&op, e.to_string()))?;
        check_group(self.settings.kind, &self.id(), &value, &self.cluster_name).map_err(
            |problem| match problem {
                GroupProblem::Refused(why) => refused(why),
                GroupProblem::Config(why) => config_error(why),
            },
        )?;
        Ok(value)
    }

    /// The group's Machines, by the label CAPI gives them.
    async fn list_machines(&self) -> Result<Vec<Value>, ProviderError> {
        const OP: &str = "list Machines";
        let selector = format!("{}={}", self.settings.kind.machine_label(), self.name);
        let list = self
            .machines()
            .await?
            .list(&ListParams::default().labels(&selector))
            .await
            .map_err(|e| self.call_error(OP, e))?;
        list.items
            .iter()
            .map(|m| serde_json::to_value(m).map_err(|e| api_error(OP, e.to_string())))
            .collect()
    }

    /// The scale subresource: (replicas, resourceVersion).
    async fn read_scale(&self) -> Result<(u32, Option<String>), ProviderError> {
        const OP: &str = "get scale";
        let scale = self
            .groups()
            .await?
            .get_scale(&self.name)
            .await
            .map_err(|e| self.call_error(OP, e))?;
        let replicas = scale.spec.as_ref().and_then(|s| s.replicas).unwrap_or(0);
        let replicas = u32::try_from(replicas)
            .map_err(|_| api_error(OP, format!("negative replicas {replicas}")))?;
        Ok((replicas, scale.metadata.resource_version))
    }

    /// Sets replicas to `to` if they are still at `resource_version`; returns the answer's.
    async fn write_scale(
        &self,
        to: u32,
        resource_version: Option<String>,
    ) -> Result<u32, ProviderError> {
        const OP: &str = "update scale";
        let replicas = i32::try_from(to).map_err(|_| api_error(OP, format!("{to} is too many")))?;
        let scale = Scale {
            metadata: kube::core::ObjectMeta {
                name: Some(self.name.clone()),
                namespace: Some(self.settings.namespace.clone()),
                resource_version,
                ..Default::default()
            },
            spec: Some(ScaleSpec {
                replicas: Some(replicas),
            }),
            status: None,
        };
        let answer = self
            .groups()
            .await?
            .replace_scale(&self.name, &PostParams::default(), &scale)
            .await
            .map_err(|e| self.call_error(OP, e))?;
        let got = answer.spec.and_then(|s| s.replicas).unwrap_or(-1);
        u32::try_from(got).map_err(|_| api_error(OP, format!("the answer has replicas {got}")))
    }

    /// Puts on (`Some(timestamp)`) or takes off (`None`) the delete-machine mark.
    async fn set_mark(&self, machine: &str, value: Option<&str>) -> Result<(), ProviderError> {
        let op = if value.is_some() {
            "mark Machine"
        } else {
            "unmark Machine"
        };
        let patch = json!({"metadata": {"annotations": {DELETE_MACHINE_ANNOTATION: value}}});
        self.machines()
            .await?
            .patch(machine, &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .map(|_| ())
            .map_err(|e| self.call_error(op, e))
    }

    /// Lowers replicas by one for the marked `machine`, if that removes exactly it.
    async fn lower_for(&self, machine: &str) -> Result<(), ProviderError> {
        let (replicas, version) = self.read_scale().await?;
        let facts: Vec<MachineFacts> = self
            .list_machines()
            .await?
            .iter()
            .map(MachineFacts::of)
            .collect();
        check_lowering(machine, replicas, &facts, self.settings.kind).map_err(|why| {
            refused(format!(
                "not lowering {} {} for Machine {machine}: {why}",
                self.settings.kind.as_str(),
                self.id()
            ))
        })?;
        let want = replicas - 1;
        match self.write_scale(want, version).await {
            Ok(got) if got == want => Ok(()),
            Ok(got) => Err(api_error(
                "update scale",
                format!("asked for {want} replicas, the answer says {got}"),
            )),
            Err(e @ ProviderError::Api { .. }) => {
                // A lost answer may hide a write that went through: read back what is there.
                match self.read_scale().await {
                    Ok((now, _)) if now == want => Ok(()),
                    _ => Err(e),
                }
            }
            Err(e) => Err(e),
        }
    }
}

#[async_trait]
impl NodePoolProvider for ClusterApi {
    async fn pool(&self) -> Result<CloudPool, ProviderError> {
        let group = self.read_group().await?;
        let template = template(&group).map_err(|why| {
            config_error(format!(
                "{} {}: {why}",
                self.settings.kind.as_str(),
                self.id()
            ))
        })?;
        let replicas = group["spec"]["replicas"].as_u64().unwrap_or(0);
        let target = u32::try_from(replicas).unwrap_or(u32::MAX);
        let mut nodes: Vec<CloudNode> =
            self.list_machines().await?.iter().map(cloud_node).collect();
        if nodes.is_empty() && self.settings.kind == GroupKind::MachinePool {
            // Instances without Machines: known by providerID only, never deletable.
            nodes = group["spec"]["providerIDList"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
                .map(|id| CloudNode {
                    id: id.to_string(),
                    name: String::new(),
                    status: InstanceStatus::Running,
                    state: "in providerIDList".to_string(),
                    provider_id: Some(id.to_string()),
                    created: None,
                })
                .collect();
        }
        Ok(CloudPool {
            target,
            nodes,
            template,
        })
    }

    async fn grow_to(&self, target: u32) -> Result<(), ProviderError> {
        self.read_group().await?;
        let (replicas, version) = self.read_scale().await?;
        if target < replicas {
            return Err(refused(format!(
                "asked to grow {} {} to {target}, below its {replicas} replicas: a lower count \
                 would let Cluster API choose which Machines go",
                self.settings.kind.as_str(),
                self.id()
            )));
        }
        if target == replicas {
            return Ok(());
        }
        let got = self.write_scale(target, version).await?;
        if got != target {
            return Err(api_error(
                "update scale",
                format!("asked for {target} replicas, the answer says {got}"),
            ));
        }
        info!(group = %self.id(), from = replicas, to = target, "raised the node group's replicas");
        Ok(())
    }

    fn find(&self, node: &NodeRef, pool: &CloudPool) -> Result<Option<CloudNode>, ProviderError> {
        find_machine(
            &node.name,
            node.provider_id.as_deref(),
            node.identity_annotations
                .get(group::NODE_MACHINE_ANNOTATION)
                .map(String::as_str),
            &pool.nodes,
        )
        .map_err(refused)
    }

    async fn delete_instance(&self, node: &CloudNode) -> Result<(), ProviderError> {
        if node.status == InstanceStatus::Deleting {
            return Ok(());
        }
        if node.state == "in providerIDList" {
            return Err(refused(format!(
                "MachinePool {} has no Machine for {}: there is nothing to mark, and a lower \
                 count would let Cluster API choose the instance",
                self.id(),
                node.id
            )));
        }
        let machine = node.id.as_str();
        let stamp = jiff::Timestamp::now().to_string();
        self.set_mark(machine, Some(&stamp)).await?;
        match self.lower_for(machine).await {
            Ok(()) => {
                info!(group = %self.id(), machine, node = %node.name, "lowered the node group by its marked Machine");
                Ok(())
            }
            Err(e) => {
                if let Err(undo) = self.set_mark(machine, None).await {
                    warn!(machine, error = %undo, "cannot take the delete-machine mark off again");
                    return Err(api_error(
                        "delete node",
                        format!(
                            "{e}; and the {DELETE_MACHINE_ANNOTATION} mark could not be taken \
                             off Machine {machine} ({undo}): remove it by hand, or a later \
                             scale-down takes that Machine"
                        ),
                    ));
                }
                Err(e)
            }
        }
    }
}
