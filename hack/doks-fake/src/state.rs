//! Clusters, node pools and their nodes, and how the API's operations change them.

use std::collections::BTreeMap;

use jiff::Timestamp;
use serde_json::{json, Value};

/// Largest count the fake accepts for one pool (a guard against runaway tests; DOKS's own
/// limits are account quotas the description does not state).
pub const MAX_POOL_COUNT: i64 = 2048;

/// Kubernetes version the fake's clusters report.
const K8S_VERSION: &str = "1.35.1-do.0";

/// A taint of a pool, applied to its nodes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Taint {
    /// Key.
    pub key: String,
    /// Value (may be empty).
    pub value: String,
    /// `NoSchedule`, `PreferNoSchedule` or `NoExecute`.
    pub effect: String,
}

/// A node pool to create with [`crate::FakeDoks::add_pool`].
#[derive(Clone, Debug)]
pub struct PoolSpec {
    /// Pool name.
    pub name: String,
    /// Droplet size slug; must be in [`crate::FakeOptions::sizes`] when a Kubernetes API server
    /// is connected.
    pub size: String,
    /// Nodes it starts with, already running.
    pub count: u32,
    /// Labels DOKS puts on every node of the pool (e.g. the label kubescaler's node-selector
    /// matches).
    pub labels: BTreeMap<String, String>,
    /// Taints put on every node of the pool.
    pub taints: Vec<Taint>,
    /// Extra tags (DOKS adds `k8s`, `k8s:<cluster id>` and `k8s:worker`).
    pub tags: Vec<String>,
    /// DigitalOcean's own autoscaling (kubescaler refuses such a pool).
    pub auto_scale: bool,
    /// Autoscaling bounds (0 without autoscaling).
    pub min_nodes: u32,
    /// Autoscaling bounds (0 without autoscaling).
    pub max_nodes: u32,
}

impl PoolSpec {
    /// A pool of `count` running nodes of `size`, without labels, taints or autoscaling.
    pub fn new(name: impl Into<String>, size: impl Into<String>, count: u32) -> Self {
        Self {
            name: name.into(),
            size: size.into(),
            count,
            labels: BTreeMap::new(),
            taints: Vec::new(),
            tags: Vec::new(),
            auto_scale: false,
            min_nodes: 0,
            max_nodes: 0,
        }
    }

    /// Adds a node label.
    pub fn label(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.labels.insert(key.into(), value.into());
        self
    }
}

/// The state of a pool node, as the API reports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NodeState {
    /// Ordered, booting.
    Provisioning,
    /// Up (and, with a Kubernetes API server, registered as a Node).
    Running,
    /// Being drained before deletion.
    Draining,
    /// Being deleted.
    Deleting,
}

impl NodeState {
    /// The API's word for it.
    pub fn as_str(self) -> &'static str {
        match self {
            NodeState::Provisioning => "provisioning",
            NodeState::Running => "running",
            NodeState::Draining => "draining",
            NodeState::Deleting => "deleting",
        }
    }

    fn leaving(self) -> bool {
        matches!(self, NodeState::Draining | NodeState::Deleting)
    }
}

/// A node of a pool.
#[derive(Clone, Debug)]
pub struct Node {
    /// UUID.
    pub id: String,
    /// Name, also the Kubernetes Node name.
    pub name: String,
    /// Droplet ID (digits, as a string).
    pub droplet_id: String,
    /// State.
    pub state: NodeState,
    created_at: Timestamp,
    updated_at: Timestamp,
}

/// What a test sees of a node.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeView {
    /// UUID.
    pub id: String,
    /// Name (= Kubernetes Node name).
    pub name: String,
    /// Droplet ID.
    pub droplet_id: String,
    /// `provisioning`, `running`, `draining` or `deleting`.
    pub state: String,
}

/// What a test sees of a pool.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PoolView {
    /// UUID.
    pub id: String,
    /// Name.
    pub name: String,
    /// Target node count.
    pub count: u32,
    /// Size slug.
    pub size: String,
    /// Autoscaling on.
    pub auto_scale: bool,
    /// Node labels.
    pub labels: BTreeMap<String, String>,
    /// Nodes, leaving ones included.
    pub nodes: Vec<NodeView>,
}

impl PoolView {
    /// Nodes in `state`.
    pub fn nodes_in(&self, state: &str) -> usize {
        self.nodes.iter().filter(|n| n.state == state).count()
    }
}

#[derive(Clone, Debug)]
pub(crate) struct Pool {
    pub id: String,
    pub name: String,
    pub size: String,
    pub count: u32,
    pub tags: Vec<String>,
    pub labels: Option<BTreeMap<String, String>>,
    pub taints: Vec<Taint>,
    pub auto_scale: bool,
    pub min_nodes: u32,
    pub max_nodes: u32,
    pub nodes: Vec<Node>,
}

#[derive(Clone, Debug)]
pub(crate) struct Cluster {
    pub id: String,
    pub name: String,
    pub region: String,
    created_at: Timestamp,
    pub pools: Vec<Pool>,
}

/// Where a node is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct NodeAddr {
    pub cluster: String,
    pub pool: String,
    pub node: String,
}

/// Work an operation leaves for the background: boot a node, or remove one.
#[derive(Clone, Debug)]
pub(crate) enum Effect {
    Boot(NodeAddr),
    Remove { addr: NodeAddr, name: String },
}

/// An API error answer: status, `id`, message.
#[derive(Clone, Debug)]
pub(crate) struct ApiError {
    pub status: u16,
    pub id: &'static str,
    pub message: String,
}

fn not_found(message: String) -> ApiError {
    ApiError {
        status: 404,
        id: "not_found",
        message,
    }
}

fn unprocessable(message: String) -> ApiError {
    ApiError {
        status: 422,
        id: "unprocessable_entity",
        message,
    }
}

/// A small deterministic generator (splitmix64) for IDs and chaos.
#[derive(Clone, Debug)]
pub(crate) struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed)
    }
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    /// In [0, 1).
    pub fn fraction(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
    pub fn uuid(&mut self) -> String {
        let a = self.next_u64();
        let b = self.next_u64();
        // Version 4, variant 10.
        let a = (a & 0xFFFF_FFFF_FFFF_0FFF) | 0x0000_0000_0000_4000;
        let b = (b & 0x3FFF_FFFF_FFFF_FFFF) | 0x8000_0000_0000_0000;
        format!(
            "{:08x}-{:04x}-{:04x}-{:04x}-{:012x}",
            a >> 32,
            (a >> 16) & 0xFFFF,
            a & 0xFFFF,
            b >> 48,
            b & 0xFFFF_FFFF_FFFF
        )
    }
    fn suffix(&mut self) -> String {
        const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
        let mut n = self.next_u64();
        (0..5)
            .map(|_| {
                let c = ALPHABET[(n % ALPHABET.len() as u64) as usize] as char;
                n /= ALPHABET.len() as u64;
                c
            })
            .collect()
    }
}

/// Every cluster the fake holds.
#[derive(Debug)]
pub(crate) struct State {
    pub clusters: Vec<Cluster>,
    pub rng: Rng,
    next_droplet: u64,
    region: String,
}

/// A DNS-1123 label made of `name`: lower case, `[a-z0-9-]`, at most 40 characters.
fn dns_label(name: &str) -> String {
    let mut out: String = name
        .to_ascii_lowercase()
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .take(40)
        .collect();
    while out.ends_with('-') {
        out.pop();
    }
    while out.starts_with('-') {
        out.remove(0);
    }
    if out.is_empty() {
        "pool".into()
    } else {
        out
    }
}

impl State {
    pub fn new(seed: u64, region: String) -> Self {
        State {
            clusters: Vec::new(),
            rng: Rng::new(seed),
            next_droplet: 400_000_000 + seed % 100_000_000,
            region,
        }
    }

    pub fn add_cluster(&mut self, name: &str) -> String {
        let id = self.rng.uuid();
        self.clusters.push(Cluster {
            id: id.clone(),
            name: name.to_owned(),
            region: self.region.clone(),
            created_at: Timestamp::now(),
            pools: Vec::new(),
        });
        id
    }

    fn new_node(&mut self, pool_name: &str, state: NodeState) -> Node {
        self.next_droplet += 1;
        let now = Timestamp::now();
        Node {
            id: self.rng.uuid(),
            name: format!("{}-{}", dns_label(pool_name), self.rng.suffix()),
            droplet_id: self.next_droplet.to_string(),
            state,
            created_at: now,
            updated_at: now,
        }
    }

    /// Adds a pool whose `count` nodes are already running; returns its ID and node IDs.
    pub fn add_pool(
        &mut self,
        cluster_id: &str,
        spec: &PoolSpec,
    ) -> Result<(String, Vec<String>), ApiError> {
        let id = self.rng.uuid();
        let mut nodes = Vec::new();
        for _ in 0..spec.count {
            nodes.push(self.new_node(&spec.name, NodeState::Running));
        }
        let node_ids = nodes.iter().map(|n| n.id.clone()).collect();
        let cluster = self.cluster_mut(cluster_id)?;
        let mut tags = vec![
            "k8s".to_owned(),
            format!("k8s:{}", cluster.id),
            "k8s:worker".to_owned(),
        ];
        tags.extend(spec.tags.iter().cloned());
        cluster.pools.push(Pool {
            id: id.clone(),
            name: spec.name.clone(),
            size: spec.size.clone(),
            count: spec.count,
            tags,
            labels: (!spec.labels.is_empty()).then(|| spec.labels.clone()),
            taints: spec.taints.clone(),
            auto_scale: spec.auto_scale,
            min_nodes: spec.min_nodes,
            max_nodes: spec.max_nodes,
            nodes,
        });
        Ok((id, node_ids))
    }

    pub fn cluster(&self, id: &str) -> Result<&Cluster, ApiError> {
        self.clusters
            .iter()
            .find(|c| c.id == id)
            .ok_or_else(|| not_found(format!("no Kubernetes cluster has the ID {id}")))
    }

    fn cluster_mut(&mut self, id: &str) -> Result<&mut Cluster, ApiError> {
        self.clusters
            .iter_mut()
            .find(|c| c.id == id)
            .ok_or_else(|| not_found(format!("no Kubernetes cluster has the ID {id}")))
    }

    pub fn pool(&self, cluster_id: &str, pool_id: &str) -> Result<&Pool, ApiError> {
        self.cluster(cluster_id)?
            .pools
            .iter()
            .find(|p| p.id == pool_id)
            .ok_or_else(|| not_found(format!("no node pool of this cluster has the ID {pool_id}")))
    }

    fn pool_mut(&mut self, cluster_id: &str, pool_id: &str) -> Result<&mut Pool, ApiError> {
        self.cluster_mut(cluster_id)?
            .pools
            .iter_mut()
            .find(|p| p.id == pool_id)
            .ok_or_else(|| not_found(format!("no node pool of this cluster has the ID {pool_id}")))
    }

    pub fn node(&self, addr: &NodeAddr) -> Option<&Node> {
        self.pool(&addr.cluster, &addr.pool)
            .ok()?
            .nodes
            .iter()
            .find(|n| n.id == addr.node)
    }

    pub fn set_state(&mut self, addr: &NodeAddr, state: NodeState) {
        if let Ok(pool) = self.pool_mut(&addr.cluster, &addr.pool) {
            if let Some(n) = pool.nodes.iter_mut().find(|n| n.id == addr.node) {
                n.state = state;
                n.updated_at = Timestamp::now();
            }
        }
    }

    pub fn forget_node(&mut self, addr: &NodeAddr) {
        if let Ok(pool) = self.pool_mut(&addr.cluster, &addr.pool) {
            pool.nodes.retain(|n| n.id != addr.node);
        }
    }

    /// `PUT .../node_pools/{id}`, the body already validated against the description.
    pub fn update_pool(
        &mut self,
        cluster_id: &str,
        pool_id: &str,
        body: &Value,
    ) -> Result<(Value, Vec<Effect>), ApiError> {
        let count = body.get("count").and_then(Value::as_i64).unwrap_or(-1);
        if !(0..=MAX_POOL_COUNT).contains(&count) {
            return Err(unprocessable(format!(
                "count {count} is out of range: a node pool has 0 to {MAX_POOL_COUNT} nodes"
            )));
        }
        let name = body
            .get("name")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .trim()
            .to_owned();
        if name.is_empty() {
            return Err(unprocessable("name must not be empty".into()));
        }
        let count = count as u32;
        // Validate the whole update before changing anything.
        self.pool(cluster_id, pool_id)?;
        let mut fresh = Vec::new();
        {
            let pool = self.pool(cluster_id, pool_id)?;
            let staying = pool.nodes.iter().filter(|n| !n.state.leaving()).count() as u32;
            let pool_name = name.clone();
            for _ in staying..count {
                fresh.push(pool_name.clone());
            }
        }
        let fresh: Vec<Node> = fresh
            .iter()
            .map(|n| self.new_node(n, NodeState::Provisioning))
            .collect();
        let pool = self.pool_mut(cluster_id, pool_id)?;
        pool.name = name;
        pool.count = count;
        if let Some(Value::Array(tags)) = body.get("tags") {
            pool.tags = tags
                .iter()
                .filter_map(Value::as_str)
                .map(str::to_owned)
                .collect();
        }
        match body.get("labels") {
            Some(Value::Null) => pool.labels = None,
            Some(Value::Object(labels)) => {
                pool.labels = Some(
                    labels
                        .iter()
                        .map(|(k, v)| {
                            let v = v.as_str().map_or_else(|| v.to_string(), str::to_owned);
                            (k.clone(), v)
                        })
                        .collect(),
                )
            }
            _ => {}
        }
        if let Some(Value::Array(taints)) = body.get("taints") {
            pool.taints = taints
                .iter()
                .map(|t| Taint {
                    key: t.get("key").and_then(Value::as_str).unwrap_or("").into(),
                    value: t.get("value").and_then(Value::as_str).unwrap_or("").into(),
                    effect: t.get("effect").and_then(Value::as_str).unwrap_or("").into(),
                })
                .collect();
        }
        if let Some(b) = body.get("auto_scale").and_then(Value::as_bool) {
            pool.auto_scale = b;
        }
        if let Some(n) = body.get("min_nodes").and_then(Value::as_u64) {
            pool.min_nodes = n as u32;
        }
        if let Some(n) = body.get("max_nodes").and_then(Value::as_u64) {
            pool.max_nodes = n as u32;
        }
        let mut effects = Vec::new();
        let addr = |node: &str| NodeAddr {
            cluster: cluster_id.to_owned(),
            pool: pool_id.to_owned(),
            node: node.to_owned(),
        };
        for n in fresh {
            effects.push(Effect::Boot(addr(&n.id)));
            pool.nodes.push(n);
        }
        // Lowering the count: DOKS picks the nodes to remove, not the caller. This fake takes
        // provisioning nodes first, then the newest running ones, whatever runs on them.
        let staying: Vec<usize> = (0..pool.nodes.len())
            .filter(|i| !pool.nodes[*i].state.leaving())
            .collect();
        if staying.len() as u32 > count {
            let mut order = staying.clone();
            order.sort_by(|a, b| {
                let (na, nb) = (&pool.nodes[*a], &pool.nodes[*b]);
                let rank = |n: &Node| u8::from(n.state != NodeState::Provisioning);
                rank(na)
                    .cmp(&rank(nb))
                    .then(nb.created_at.cmp(&na.created_at))
                    .then(b.cmp(a))
            });
            let excess = staying.len() - count as usize;
            for i in order.into_iter().take(excess) {
                let n = &mut pool.nodes[i];
                n.state = NodeState::Deleting;
                n.updated_at = Timestamp::now();
                effects.push(Effect::Remove {
                    addr: addr(&n.id),
                    name: n.name.clone(),
                });
            }
        }
        let answer = json!({ "node_pool": pool_json(pool) });
        Ok((answer, effects))
    }

    /// `DELETE .../nodes/{node_id}`.
    pub fn delete_node(
        &mut self,
        cluster_id: &str,
        pool_id: &str,
        node_id: &str,
        skip_drain: bool,
        replace: bool,
        drains: bool,
    ) -> Result<Vec<Effect>, ApiError> {
        let pool_name = self.pool(cluster_id, pool_id)?.name.clone();
        let replacement = self.new_node(&pool_name, NodeState::Provisioning);
        let pool = self.pool_mut(cluster_id, pool_id)?;
        let Some(node) = pool.nodes.iter_mut().find(|n| n.id == node_id) else {
            return Err(not_found(format!(
                "no node of this node pool has the ID {node_id}"
            )));
        };
        if node.state.leaving() {
            // Already on its way out: accepted again, nothing more happens.
            return Ok(Vec::new());
        }
        node.state = if drains && !skip_drain {
            NodeState::Draining
        } else {
            NodeState::Deleting
        };
        node.updated_at = Timestamp::now();
        let addr = |id: &str| NodeAddr {
            cluster: cluster_id.to_owned(),
            pool: pool_id.to_owned(),
            node: id.to_owned(),
        };
        let mut effects = vec![Effect::Remove {
            addr: addr(node_id),
            name: node.name.clone(),
        }];
        if replace {
            effects.push(Effect::Boot(addr(&replacement.id)));
            pool.nodes.push(replacement);
        } else {
            pool.count = pool.count.saturating_sub(1);
        }
        Ok(effects)
    }

    pub fn view(&self, cluster_id: &str, pool_id: &str) -> Option<PoolView> {
        let pool = self.pool(cluster_id, pool_id).ok()?;
        Some(PoolView {
            id: pool.id.clone(),
            name: pool.name.clone(),
            count: pool.count,
            size: pool.size.clone(),
            auto_scale: pool.auto_scale,
            labels: pool.labels.clone().unwrap_or_default(),
            nodes: pool
                .nodes
                .iter()
                .map(|n| NodeView {
                    id: n.id.clone(),
                    name: n.name.clone(),
                    droplet_id: n.droplet_id.clone(),
                    state: n.state.as_str().to_owned(),
                })
                .collect(),
        })
    }
}

fn rfc3339(t: Timestamp) -> String {
    t.strftime("%Y-%m-%dT%H:%M:%SZ").to_string()
}

fn node_json(n: &Node) -> Value {
    json!({
        "id": n.id,
        "name": n.name,
        "status": {"state": n.state.as_str()},
        "droplet_id": n.droplet_id,
        "created_at": rfc3339(n.created_at),
        "updated_at": rfc3339(n.updated_at),
    })
}

pub(crate) fn pool_json(p: &Pool) -> Value {
    json!({
        "id": p.id,
        "name": p.name,
        "size": p.size,
        "count": p.count,
        "tags": p.tags,
        "labels": p.labels,
        "taints": p.taints.iter().map(|t| json!({"key": t.key, "value": t.value, "effect": t.effect})).collect::<Vec<_>>(),
        "auto_scale": p.auto_scale,
        "min_nodes": p.min_nodes,
        "max_nodes": p.max_nodes,
        "nodes": p.nodes.iter().map(node_json).collect::<Vec<_>>(),
    })
}

pub(crate) fn cluster_json(c: &Cluster) -> Value {
    json!({
        "id": c.id,
        "name": c.name,
        "region": c.region,
        "version": K8S_VERSION,
        "cluster_subnet": "10.244.0.0/16",
        "service_subnet": "10.245.0.0/16",
        "ipv4": "127.0.0.1",
        "endpoint": format!("https://{}.k8s.ondigitalocean.com", c.id),
        "tags": ["k8s", format!("k8s:{}", c.id)],
        "node_pools": c.pools.iter().map(pool_json).collect::<Vec<_>>(),
        "maintenance_policy": {"start_time": "00:00", "day": "any"},
        "auto_upgrade": false,
        "surge_upgrade": false,
        "ha": false,
        "status": {"state": "running", "message": "Cluster is running (doks-fake)"},
        "created_at": rfc3339(c.created_at),
        "updated_at": rfc3339(c.created_at),
    })
}
