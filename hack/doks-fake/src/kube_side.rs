//! The Kubernetes side of the fake: a running pool node becomes a `Node` object, as a DOKS
//! droplet's kubelet would register it, and a removed pool node's `Node` object is deleted,
//! after the server pods still on it have been counted as lost.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Mutex;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Node, NodeSpec, Pod, Taint as K8sTaint};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::Client;
use serde_json::json;

use crate::lock;
use crate::state::Taint;

/// Allocatable resources of a droplet size, as its Node reports them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeShape {
    /// `status.capacity.cpu` (a Kubernetes quantity, e.g. `"4"`).
    pub capacity_cpu: String,
    /// `status.capacity.memory` (e.g. `"8Gi"`).
    pub capacity_memory: String,
    /// `status.allocatable.cpu` (e.g. `"3900m"`).
    pub allocatable_cpu: String,
    /// `status.allocatable.memory` (e.g. `"6Gi"`).
    pub allocatable_memory: String,
    /// `status.allocatable.pods` and `capacity.pods`.
    pub pods: u32,
}

impl NodeShape {
    fn of(
        cpus: u32,
        capacity_memory: &str,
        allocatable_cpu: &str,
        allocatable_memory: &str,
    ) -> Self {
        NodeShape {
            capacity_cpu: cpus.to_string(),
            capacity_memory: capacity_memory.to_owned(),
            allocatable_cpu: allocatable_cpu.to_owned(),
            allocatable_memory: allocatable_memory.to_owned(),
            pods: 110,
        }
    }
}

/// A few DigitalOcean size slugs with allocatable figures close to what DOKS nodes report
/// (DOKS reserves some CPU and memory for the system). Override them with
/// [`crate::FakeOptions::sizes`] where exact figures matter.
pub fn default_sizes() -> BTreeMap<String, NodeShape> {
    BTreeMap::from([
        (
            "s-1vcpu-2gb".to_owned(),
            NodeShape::of(1, "2Gi", "900m", "1Gi"),
        ),
        (
            "s-2vcpu-2gb".to_owned(),
            NodeShape::of(2, "2Gi", "1900m", "1Gi"),
        ),
        (
            "s-2vcpu-4gb".to_owned(),
            NodeShape::of(2, "4Gi", "1900m", "2560Mi"),
        ),
        (
            "s-4vcpu-8gb".to_owned(),
            NodeShape::of(4, "8Gi", "3900m", "6Gi"),
        ),
        (
            "s-8vcpu-16gb".to_owned(),
            NodeShape::of(8, "16Gi", "7900m", "13Gi"),
        ),
        ("c-4".to_owned(), NodeShape::of(4, "8Gi", "3900m", "6Gi")),
        ("c-8".to_owned(), NodeShape::of(8, "16Gi", "7900m", "13Gi")),
        (
            "g-4vcpu-16gb".to_owned(),
            NodeShape::of(4, "16Gi", "3900m", "13Gi"),
        ),
    ])
}

/// Server pods that were still on a node when the fake removed it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LostServer {
    /// The Node's name.
    pub node: String,
    /// The pods, as `namespace/name`.
    pub pods: Vec<String>,
}

/// What a Node object is made of.
#[derive(Clone, Debug)]
pub(crate) struct NodeObject {
    pub name: String,
    pub node_id: String,
    pub droplet_id: String,
    pub pool_id: String,
    pub pool_name: String,
    pub size: String,
    pub region: String,
    pub pool_labels: BTreeMap<String, String>,
    pub taints: Vec<Taint>,
}

/// How many times a Kubernetes call is tried before the fake records an error.
const ATTEMPTS: u32 = 5;

pub(crate) struct KubeSide {
    client: Client,
    server_pod_selector: Option<String>,
    node_labels: BTreeMap<String, String>,
    sizes: BTreeMap<String, NodeShape>,
    /// Serialises the fake's Kubernetes work, so a node's creation and its removal never
    /// interleave.
    pub serial: tokio::sync::Mutex<()>,
    lost: Mutex<Vec<LostServer>>,
    errors: Mutex<Vec<String>>,
    created: Mutex<BTreeSet<String>>,
}

impl KubeSide {
    pub fn new(
        client: Client,
        server_pod_selector: Option<String>,
        node_labels: BTreeMap<String, String>,
        sizes: BTreeMap<String, NodeShape>,
    ) -> Self {
        KubeSide {
            client,
            server_pod_selector,
            node_labels,
            sizes,
            serial: tokio::sync::Mutex::new(()),
            lost: Mutex::new(Vec::new()),
            errors: Mutex::new(Vec::new()),
            created: Mutex::new(BTreeSet::new()),
        }
    }

    pub fn knows_size(&self, size: &str) -> bool {
        self.sizes.contains_key(size)
    }

    pub fn lost(&self) -> Vec<LostServer> {
        lock(&self.lost).clone()
    }

    pub fn errors(&self) -> Vec<String> {
        lock(&self.errors).clone()
    }

    fn record_error(&self, message: String) {
        tracing::error!(%message, "doks-fake: Kubernetes side");
        lock(&self.errors).push(message);
    }

    /// Registers the node (create, then status: allocatable from the size, Ready), retrying
    /// transient failures. Returns whether it exists.
    pub async fn register(&self, n: &NodeObject) -> bool {
        for attempt in 1..=ATTEMPTS {
            match self.try_register(n).await {
                Ok(()) => {
                    lock(&self.created).insert(n.name.clone());
                    return true;
                }
                Err(e) if attempt == ATTEMPTS => {
                    self.record_error(format!("register Node {}: {e}", n.name));
                }
                Err(e) => {
                    tracing::warn!(node = %n.name, error = %e, "doks-fake: register Node failed; retrying");
                    tokio::time::sleep(Duration::from_millis(200 * u64::from(attempt))).await;
                }
            }
        }
        false
    }

    async fn try_register(&self, n: &NodeObject) -> Result<(), String> {
        let shape = self
            .sizes
            .get(&n.size)
            .ok_or_else(|| format!("size {:?} has no allocatable figures", n.size))?;
        let mut labels = BTreeMap::from([
            (
                "doks.digitalocean.com/node-id".to_owned(),
                n.node_id.clone(),
            ),
            (
                "doks.digitalocean.com/node-pool".to_owned(),
                n.pool_name.clone(),
            ),
            (
                "doks.digitalocean.com/node-pool-id".to_owned(),
                n.pool_id.clone(),
            ),
            ("kubernetes.io/hostname".to_owned(), n.name.clone()),
            ("kubernetes.io/os".to_owned(), "linux".to_owned()),
            ("kubernetes.io/arch".to_owned(), "amd64".to_owned()),
            (
                "node.kubernetes.io/instance-type".to_owned(),
                n.size.clone(),
            ),
            ("topology.kubernetes.io/region".to_owned(), n.region.clone()),
        ]);
        labels.extend(n.pool_labels.clone());
        labels.extend(self.node_labels.clone());
        let taints: Vec<K8sTaint> = n
            .taints
            .iter()
            .map(|t| K8sTaint {
                key: t.key.clone(),
                value: (!t.value.is_empty()).then(|| t.value.clone()),
                effect: t.effect.clone(),
                ..Default::default()
            })
            .collect();
        let node = Node {
            metadata: ObjectMeta {
                name: Some(n.name.clone()),
                labels: Some(labels),
                ..Default::default()
            },
            spec: Some(NodeSpec {
                provider_id: Some(format!("digitalocean://{}", n.droplet_id)),
                taints: (!taints.is_empty()).then_some(taints),
                ..Default::default()
            }),
            ..Default::default()
        };
        let api: Api<Node> = Api::all(self.client.clone());
        match api.create(&PostParams::default(), &node).await {
            Ok(_) => {}
            Err(kube::Error::Api(s)) if s.code == 409 => {}
            Err(e) => return Err(format!("create: {e}")),
        }
        let now = jiff::Timestamp::now()
            .strftime("%Y-%m-%dT%H:%M:%SZ")
            .to_string();
        let status = json!({"status": {
            "capacity": {"cpu": shape.capacity_cpu, "memory": shape.capacity_memory, "pods": shape.pods.to_string()},
            "allocatable": {"cpu": shape.allocatable_cpu, "memory": shape.allocatable_memory, "pods": shape.pods.to_string()},
            "conditions": [{
                "type": "Ready", "status": "True", "reason": "KubeletReady",
                "message": "kubelet is posting ready status (doks-fake)",
                "lastHeartbeatTime": now, "lastTransitionTime": now,
            }],
            "addresses": [{"type": "Hostname", "address": n.name}],
            "nodeInfo": {
                "architecture": "amd64", "bootID": "", "containerRuntimeVersion": "containerd://2.0.0",
                "kernelVersion": "6.1.0", "kubeProxyVersion": "", "kubeletVersion": "v1.35.1",
                "machineID": n.droplet_id, "operatingSystem": "linux",
                "osImage": "Debian GNU/Linux 12 (bookworm)", "systemUUID": n.node_id,
            },
        }});
        api.patch_status(&n.name, &PatchParams::default(), &Patch::Merge(&status))
            .await
            .map_err(|e| format!("patch status: {e}"))?;
        Ok(())
    }

    /// Counts the server pods still on `name` as lost, then deletes its Node object.
    pub async fn remove(&self, name: &str) {
        let pods: Api<Pod> = Api::all(self.client.clone());
        let mut params = ListParams::default().fields(&format!(
            "spec.nodeName={name},status.phase!=Succeeded,status.phase!=Failed"
        ));
        if let Some(selector) = &self.server_pod_selector {
            params = params.labels(selector);
        }
        let mut listed = None;
        for attempt in 1..=ATTEMPTS {
            match pods.list(&params).await {
                Ok(list) => {
                    listed = Some(list);
                    break;
                }
                Err(e) if attempt == ATTEMPTS => self.record_error(format!(
                    "list the server pods on node {name} before removing it (lost servers unknown): {e}"
                )),
                Err(_) => tokio::time::sleep(Duration::from_millis(200 * u64::from(attempt))).await,
            }
        }
        if let Some(list) = listed {
            let lost: Vec<String> = list
                .items
                .iter()
                .map(|p| {
                    format!(
                        "{}/{}",
                        p.metadata.namespace.as_deref().unwrap_or(""),
                        p.metadata.name.as_deref().unwrap_or("")
                    )
                })
                .collect();
            if !lost.is_empty() {
                tracing::error!(node = %name, pods = ?lost, "doks-fake: node removed with server pods still on it: LOST");
                lock(&self.lost).push(LostServer {
                    node: name.to_owned(),
                    pods: lost,
                });
            }
        }
        self.delete_node_object(name).await;
    }

    async fn delete_node_object(&self, name: &str) {
        let api: Api<Node> = Api::all(self.client.clone());
        for attempt in 1..=ATTEMPTS {
            match api.delete(name, &DeleteParams::default()).await {
                Ok(_) => break,
                Err(kube::Error::Api(s)) if s.code == 404 => break,
                Err(e) if attempt == ATTEMPTS => {
                    self.record_error(format!("delete Node {name}: {e}"));
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(200 * u64::from(attempt))).await,
            }
        }
        lock(&self.created).remove(name);
    }

    /// Deletes every Node object the fake created and still has (shutdown), without counting
    /// lost servers.
    pub async fn delete_all(&self) {
        let names: Vec<String> = lock(&self.created).iter().cloned().collect();
        for name in names {
            self.delete_node_object(&name).await;
        }
    }
}
