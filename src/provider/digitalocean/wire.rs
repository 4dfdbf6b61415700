//! The JSON shapes of the DigitalOcean API v2 that the driver reads and writes, as
//! `../shared/digitalocean/doks-node-pools.openapi.yaml` describes them. Only the fields the
//! driver uses are declared; serde ignores the rest, so new API fields do not break us.

use serde::{Deserialize, Deserializer, Serialize};

/// `links` of a paginated list.
#[derive(Debug, Default, Deserialize)]
pub(super) struct Links {
    /// `links.pages`; `{}` on the last page.
    #[serde(default)]
    pub pages: Option<PageLinks>,
}

/// `links.pages`.
#[derive(Debug, Default, Deserialize)]
pub(super) struct PageLinks {
    /// Absolute URL of the next page, absent on the last page.
    #[serde(default)]
    pub next: Option<String>,
}

/// One page of a list answer: its items and the link to the next page.
pub(super) trait Paged: serde::de::DeserializeOwned {
    /// What the list holds.
    type Item;
    /// Splits the page into its items and its `links.pages.next`.
    fn into_parts(self) -> (Vec<Self::Item>, Option<String>);
}

fn next_link(links: Option<Links>) -> Option<String> {
    links
        .and_then(|l| l.pages)
        .and_then(|p| p.next)
        .filter(|n| !n.trim().is_empty())
}

/// `GET /v2/kubernetes/clusters`.
#[derive(Debug, Deserialize)]
pub(super) struct ClusterList {
    #[serde(default)]
    pub kubernetes_clusters: Vec<Cluster>,
    #[serde(default)]
    pub links: Option<Links>,
}

impl Paged for ClusterList {
    type Item = Cluster;
    fn into_parts(self) -> (Vec<Cluster>, Option<String>) {
        (self.kubernetes_clusters, next_link(self.links))
    }
}

/// A cluster, as far as name resolution needs it.
#[derive(Debug, Deserialize)]
pub(super) struct Cluster {
    pub id: String,
    pub name: String,
}

/// `GET /v2/kubernetes/clusters/{cluster_id}/node_pools`.
#[derive(Debug, Deserialize)]
pub(super) struct NodePoolList {
    #[serde(default)]
    pub node_pools: Vec<NodePool>,
    /// Not in the contract for this operation; followed anyway if the API ever sends it.
    #[serde(default)]
    pub links: Option<Links>,
}

impl Paged for NodePoolList {
    type Item = NodePool;
    fn into_parts(self) -> (Vec<NodePool>, Option<String>) {
        (self.node_pools, next_link(self.links))
    }
}

/// `GET /v2/kubernetes/clusters/{cluster_id}/node_pools/{node_pool_id}`.
#[derive(Debug, Deserialize)]
pub(super) struct NodePoolEnvelope {
    pub node_pool: NodePool,
}

/// A node pool.
#[derive(Debug, Deserialize)]
pub(super) struct NodePool {
    pub id: String,
    pub name: String,
    /// Target number of nodes.
    pub count: u32,
    /// DigitalOcean's own cluster autoscaler manages this pool.
    #[serde(default)]
    pub auto_scale: Option<bool>,
    #[serde(default)]
    pub min_nodes: Option<u32>,
    #[serde(default)]
    pub max_nodes: Option<u32>,
    #[serde(default)]
    pub nodes: Option<Vec<PoolNode>>,
}

impl NodePool {
    /// Whether DigitalOcean autoscales this pool.
    pub fn autoscaled(&self) -> bool {
        self.auto_scale.unwrap_or(false)
    }

    /// The pool's nodes (an absent or null list is empty).
    pub fn nodes(&self) -> &[PoolNode] {
        self.nodes.as_deref().unwrap_or(&[])
    }
}

/// A node of a pool.
#[derive(Debug, Deserialize)]
pub(super) struct PoolNode {
    pub id: String,
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub status: Option<NodeStatus>,
    /// A string in the contract; a number is accepted too, as older answers used one.
    #[serde(default, deserialize_with = "string_or_number")]
    pub droplet_id: Option<String>,
    /// ISO 8601 creation time.
    #[serde(default)]
    pub created_at: Option<String>,
}

impl PoolNode {
    /// `status.state`, `unknown` when absent.
    pub fn state(&self) -> &str {
        self.status
            .as_ref()
            .and_then(|s| s.state.as_deref())
            .unwrap_or("unknown")
    }

    /// The node name, empty when the API has none yet (provisioning).
    pub fn name(&self) -> &str {
        self.name.as_deref().unwrap_or("")
    }
}

/// `status` of a pool node.
#[derive(Debug, Deserialize)]
pub(super) struct NodeStatus {
    #[serde(default)]
    pub state: Option<String>,
}

/// The body of `PUT .../node_pools/{node_pool_id}`. The contract requires exactly `name` and
/// `count`; everything else is optional and left out so that the pool's tags, labels, taints
/// and autoscaling settings stay as the operator set them (`id` and `nodes` are read-only).
#[derive(Debug, Serialize)]
pub(super) struct ResizeRequest<'a> {
    pub name: &'a str,
    /// The absolute target, never an increment: see `grow_to`.
    pub count: u32,
}

/// DigitalOcean's error body (`id`, `message`, `request_id`).
#[derive(Debug, Deserialize)]
pub(super) struct ErrorBody {
    #[serde(default)]
    pub id: Option<String>,
    #[serde(default)]
    pub message: Option<String>,
    #[serde(default)]
    pub request_id: Option<String>,
}

fn string_or_number<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Raw {
        Text(String),
        Number(serde_json::Number),
    }
    Ok(match Option::<Raw>::deserialize(d)? {
        Some(Raw::Text(s)) if !s.is_empty() => Some(s),
        Some(Raw::Number(n)) => Some(n.to_string()),
        _ => None,
    })
}
