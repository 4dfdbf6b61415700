//! DigitalOcean Kubernetes (DOKS) node pools, over the six operations of the DigitalOcean API
//! v2 described in `../shared/digitalocean/doks-node-pools.openapi.yaml`.
//!
//! # Name resolution
//! The configuration names a cluster and a node pool; the API wants their IDs. They are
//! resolved lazily, on the first call that needs them (the daemon's first `target_size()`),
//! or eagerly with [`DigitalOcean::resolve`], and cached. A 404 on the pool forgets the cache,
//! so a pool deleted and recreated under the same name is found again. [`build`] itself sends
//! nothing: it only validates the settings and builds the HTTP client.
//!
//! # Safety rules
//! * A pool with DigitalOcean's own autoscaling on (`auto_scale: true`) is refused by every
//!   operation: two autoscalers would fight over its size.
//! * [`NodePoolProvider::grow_to`] re-reads the pool and refuses any count below the current
//!   one, and always sends the absolute target count (so a retried PUT cannot grow twice).
//! * [`NodePoolProvider::delete_instance`] deletes exactly the node asked for, without
//!   replacement (`replace=0`), and lets DOKS drain it first (`skip_drain=0`, see
//!   [`DigitalOceanOptions::skip_drain`]). It sends the DELETE at once (the pool was read when
//!   the node was resolved), and a node DOKS reports `draining` or `deleting` is never deleted
//!   again.
//! * [`NodePoolProvider::grow_to`] checks the count DigitalOcean answers.
//!
//! # Failures
//! Every request has a connect and a total timeout. 429 (honouring `Retry-After` and
//! `ratelimit-reset`), 5xx and connection/timeout failures are retried with exponential
//! backoff and jitter, up to `max_attempts` within `retry_budget`; other 4xx are not. Errors
//! carry DigitalOcean's `id`, `message` and `request_id`. The token is sent only in the
//! `Authorization: Bearer` header and never appears in errors, logs or `Debug` output.

mod client;
mod settings;
mod wire;

#[cfg(test)]
mod tests;

use std::fmt;
use std::time::Duration;

use async_trait::async_trait;
use tokio::sync::Mutex;
use tracing::{debug, info, warn};

use self::client::{ApiClient, CallError};
use self::wire::{
    ClusterList, NodePool, NodePoolEnvelope, NodePoolList, Paged, PoolNode, ResizeRequest,
};
use super::{CloudNode, CloudPool, InstanceStatus, NodePoolProvider, NodeRef, ProviderError};
use crate::config::{Config, SecretToken};

pub use self::settings::{check_api_url, DigitalOceanSettings, API_URL_KEY, SETTINGS};

/// The provider's registry name, also the prefix of its errors.
pub const PROVIDER: &str = "digitalocean";

/// Where the DigitalOcean API lives: the default of the `digitalocean-api-url` key (whose env
/// var is `DIGITALOCEAN_API_URL`).
pub const DEFAULT_API_URL: &str = "https://api.digitalocean.com";

/// Label DOKS puts on a Kubernetes node: the pool node's `id`.
pub const NODE_ID_LABEL: &str = "doks.digitalocean.com/node-id";

/// `spec.providerID` prefix of a DOKS node; the droplet ID follows.
pub const PROVIDER_ID_PREFIX: &str = "digitalocean://";

/// Pool node states of a node already going away: a second DELETE is never sent for them.
const STATE_DELETING: &str = "deleting";
/// See [`STATE_DELETING`]: DOKS drains a node before it deletes it.
const STATE_DRAINING: &str = "draining";

/// Most pages a list may have before the driver assumes the pagination links loop.
const MAX_PAGES: u32 = 1_000;

/// Timeouts, retry policy and deletion behaviour of the driver.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DigitalOceanOptions {
    /// Longest wait to open a connection.
    pub connect_timeout: Duration,
    /// Longest time one request (connect, send, whole answer) may take.
    pub request_timeout: Duration,
    /// Most attempts of one call, the first included (at least 1).
    pub max_attempts: u32,
    /// Longest time one call may take, retries and waits included. A 429 asking to wait past
    /// it fails at once instead of sleeping.
    pub retry_budget: Duration,
    /// Wait before the first retry; doubled for each further one.
    pub initial_backoff: Duration,
    /// Cap of the exponential wait (a 429's own wait may be longer).
    pub max_backoff: Duration,
    /// `per_page` of paginated lists (the API allows 1 to 200).
    pub per_page: u32,
    /// Send `skip_drain=1` when deleting nodes. Off by default: kubescaler deletes only nodes
    /// it has cordoned and emptied of game servers, so DOKS's drain has little to do and costs
    /// little, while it still evicts whatever else runs there (system pods, or a game server
    /// that raced onto the node) gracefully and within its PodDisruptionBudget, instead of
    /// killing it with the droplet.
    pub skip_drain: bool,
}

impl Default for DigitalOceanOptions {
    fn default() -> Self {
        Self {
            connect_timeout: Duration::from_secs(10),
            request_timeout: Duration::from_secs(30),
            max_attempts: 5,
            retry_budget: Duration::from_secs(60),
            initial_backoff: Duration::from_millis(500),
            max_backoff: Duration::from_secs(10),
            per_page: 200,
            skip_drain: false,
        }
    }
}

/// The IDs the configured cluster and node pool names resolve to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PoolIds {
    /// The cluster's UUID.
    pub cluster_id: String,
    /// The node pool's UUID.
    pub node_pool_id: String,
}

/// The DigitalOcean (DOKS) node pool driver.
pub struct DigitalOcean {
    api: ApiClient,
    cluster_name: String,
    node_pool_name: String,
    /// Resolved lazily; a tokio mutex so that concurrent first calls resolve once.
    ids: Mutex<Option<PoolIds>>,
}

impl fmt::Debug for DigitalOcean {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DigitalOcean")
            .field("api", &self.api)
            .field("cluster_name", &self.cluster_name)
            .field("node_pool_name", &self.node_pool_name)
            .finish_non_exhaustive()
    }
}

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

/// The registry's factory: reads the token, cluster and pool names from `config`, and the API
/// URL from the provider's own [`DigitalOceanSettings`] (`digitalocean-api-url`, default
/// [`DEFAULT_API_URL`]). Sends nothing; see the module documentation on resolution.
pub fn build(config: &Config) -> Result<Box<dyn NodePoolProvider>, ProviderError> {
    let settings = DigitalOceanSettings::from_config(config)?;
    build_from(
        config.cloud_provider_token.as_ref(),
        &config.cluster_name,
        &config.node_pool_name,
        Some(settings.api_url.as_str()),
    )
}

/// [`build`] without the configuration and environment, for tests.
fn build_from(
    token: Option<&SecretToken>,
    cluster_name: &str,
    node_pool_name: &str,
    base_url: Option<&str>,
) -> Result<Box<dyn NodePoolProvider>, ProviderError> {
    let token = token.ok_or_else(|| {
        config_error("cloud-provider-token (or cloud-provider-token-file) is required")
    })?;
    let driver = DigitalOcean::new(
        base_url.unwrap_or(DEFAULT_API_URL),
        token.clone(),
        cluster_name,
        node_pool_name,
        DigitalOceanOptions::default(),
    )?;
    Ok(Box::new(driver))
}

impl DigitalOcean {
    /// A driver for the pool `node_pool_name` of the cluster `cluster_name`, talking to the
    /// API at `base_url` (`https`, or `http` on localhost only). Validates its arguments and
    /// builds the HTTP client; sends nothing.
    pub fn new(
        base_url: &str,
        token: SecretToken,
        cluster_name: impl Into<String>,
        node_pool_name: impl Into<String>,
        options: DigitalOceanOptions,
    ) -> Result<Self, ProviderError> {
        let cluster_name = cluster_name.into();
        let node_pool_name = node_pool_name.into();
        if cluster_name.trim().is_empty() {
            return Err(config_error("cluster-name is empty"));
        }
        if node_pool_name.trim().is_empty() {
            return Err(config_error("node-pool-name is empty"));
        }
        if !(1..=200).contains(&options.per_page) {
            return Err(config_error(format!(
                "per_page must be between 1 and 200, not {}",
                options.per_page
            )));
        }
        Ok(Self {
            api: ApiClient::new(base_url, token, options)?,
            cluster_name,
            node_pool_name,
            ids: Mutex::new(None),
        })
    }

    /// Resolves the configured cluster and pool names to IDs (once; later calls return the
    /// cached IDs), and checks that DigitalOcean does not autoscale the pool. The daemon may
    /// call it at start to fail fast; every operation calls it anyway.
    pub async fn resolve(&self) -> Result<PoolIds, ProviderError> {
        // Held across the lookup so that concurrent first calls resolve only once.
        let mut cached = self.ids.lock().await;
        if let Some(ids) = cached.as_ref() {
            return Ok(ids.clone());
        }
        let ids = self.look_up_ids().await?;
        info!(
            cluster = %self.cluster_name,
            cluster_id = %ids.cluster_id,
            node_pool = %self.node_pool_name,
            node_pool_id = %ids.node_pool_id,
            "resolved the DigitalOcean cluster and node pool"
        );
        *cached = Some(ids.clone());
        Ok(ids)
    }

    /// Drops the cached IDs if they are still `ids`.
    async fn forget(&self, ids: &PoolIds) {
        let mut cached = self.ids.lock().await;
        if cached.as_ref() == Some(ids) {
            warn!(node_pool_id = %ids.node_pool_id, "node pool not found by ID; resolving its name again next time");
            *cached = None;
        }
    }

    async fn look_up_ids(&self) -> Result<PoolIds, ProviderError> {
        const LIST_CLUSTERS: &str = "list clusters";
        const LIST_POOLS: &str = "list node pools";
        let clusters = self
            .list_all::<ClusterList>(LIST_CLUSTERS, &["v2", "kubernetes", "clusters"], true)
            .await
            .map_err(|e| self.api.provider_error(LIST_CLUSTERS, &e))?;
        let cluster = pick_by_name(
            "cluster-name",
            &self.cluster_name,
            "cluster",
            "",
            clusters,
            |c| (&c.name, &c.id),
        )?;
        let pools = self
            .list_all::<NodePoolList>(
                LIST_POOLS,
                &["v2", "kubernetes", "clusters", &cluster.id, "node_pools"],
                // The contract gives this list no `page`/`per_page`; a `next` link is still
                // followed if one ever comes.
                false,
            )
            .await
            .map_err(|e| self.api.provider_error(LIST_POOLS, &e))?;
        let pool = pick_by_name(
            "node-pool-name",
            &self.node_pool_name,
            "node pool",
            &format!(" of cluster {:?}", self.cluster_name),
            pools,
            |p| (&p.name, &p.id),
        )?;
        check_not_autoscaled(&pool, &self.cluster_name)?;
        Ok(PoolIds {
            cluster_id: cluster.id,
            node_pool_id: pool.id,
        })
    }

    /// Every item of a paginated list, following `links.pages.next`. With `page_params`,
    /// `page` and `per_page` are sent from the first request on; otherwise the first request
    /// has no query and later ones take `page`/`per_page` from the `next` link. Only the
    /// link's page numbers are used, never its host, so the token goes nowhere but the
    /// configured API.
    async fn list_all<P: Paged>(
        &self,
        op: &'static str,
        segments: &[&str],
        page_params: bool,
    ) -> Result<Vec<P::Item>, CallError> {
        let per_page = self.api.options().per_page.to_string();
        let mut page: u32 = 1;
        let mut query: Vec<(&str, String)> = if page_params {
            vec![("page", page.to_string()), ("per_page", per_page.clone())]
        } else {
            Vec::new()
        };
        let mut items = Vec::new();
        for _ in 0..MAX_PAGES {
            let url = self.api.url(segments, &query)?;
            let call = format!("GET {}", url.path());
            let answer: P = self.api.get_json(op, url).await?;
            let (mut batch, next) = answer.into_parts();
            debug!(
                op,
                page,
                items = batch.len(),
                more = next.is_some(),
                "listed a page"
            );
            items.append(&mut batch);
            let Some(next) = next else {
                return Ok(items);
            };
            let (next_page, link_per_page) =
                parse_next_link(&next).ok_or_else(|| CallError::Unexpected {
                    call: call.clone(),
                    detail: format!("links.pages.next {next:?} has no usable page number"),
                })?;
            if next_page <= page {
                return Err(CallError::Unexpected {
                    call,
                    detail: format!("links.pages.next goes from page {page} back to {next_page}"),
                });
            }
            page = next_page;
            query = vec![("page", page.to_string())];
            match (page_params, link_per_page) {
                (true, _) => query.push(("per_page", per_page.clone())),
                (false, Some(pp)) => query.push(("per_page", pp.to_string())),
                (false, None) => {}
            }
        }
        Err(CallError::Unexpected {
            call: format!("GET /{}", segments.join("/")),
            detail: format!("more than {MAX_PAGES} pages; assuming the pagination loops"),
        })
    }

    /// The pool, read fresh, with its IDs. Refuses an autoscaled pool.
    async fn read_pool(&self) -> Result<(PoolIds, NodePool), ProviderError> {
        const OP: &str = "get node pool";
        let ids = self.resolve().await?;
        let url = self
            .pool_url(&ids, &[], &[])
            .map_err(|e| self.api.provider_error(OP, &e))?;
        match self.api.get_json::<NodePoolEnvelope>(OP, url).await {
            Ok(answer) => {
                check_not_autoscaled(&answer.node_pool, &self.cluster_name)?;
                Ok((ids, answer.node_pool))
            }
            Err(e) => {
                if e.status() == Some(reqwest::StatusCode::NOT_FOUND) {
                    self.forget(&ids).await;
                }
                Err(self.api.provider_error(OP, &e))
            }
        }
    }

    /// `/v2/kubernetes/clusters/{cluster_id}/node_pools/{node_pool_id}/<more>?<query>`.
    fn pool_url(
        &self,
        ids: &PoolIds,
        more: &[&str],
        query: &[(&str, String)],
    ) -> Result<reqwest::Url, CallError> {
        let mut segments = vec![
            "v2",
            "kubernetes",
            "clusters",
            ids.cluster_id.as_str(),
            "node_pools",
            ids.node_pool_id.as_str(),
        ];
        segments.extend_from_slice(more);
        self.api.url(&segments, query)
    }

    /// Deletes one pool node (already mapped), reading the pool back when an ambiguous
    /// failure leaves open whether an earlier attempt went through.
    async fn delete_pool_node(
        &self,
        ids: &PoolIds,
        pool_node: &CloudNode,
    ) -> Result<(), ProviderError> {
        const OP: &str = "delete node";
        let query = [
            (
                "skip_drain",
                u8::from(self.api.options().skip_drain).to_string(),
            ),
            // Never replace: the point is to lower the pool's count by exactly this node.
            ("replace", "0".to_owned()),
        ];
        let url = self
            .pool_url(ids, &["nodes", pool_node.id.as_str()], &query)
            .map_err(|e| self.api.provider_error(OP, &e))?;
        let error = match self.api.delete(OP, url).await {
            Ok(()) => {
                info!(node = %pool_node.name, node_id = %pool_node.id, "deleting node");
                return Ok(());
            }
            Err(error) => error,
        };
        if error.after_ambiguous_attempt() && self.deletion_under_way(&pool_node.id).await {
            // A timed-out or 5xx attempt was carried out after all: the node is going.
            info!(node = %pool_node.name, node_id = %pool_node.id, "deleting node (confirmed after a failed attempt)");
            return Ok(());
        }
        if error.status() == Some(reqwest::StatusCode::NOT_FOUND) {
            return Err(ProviderError::UnknownNode {
                provider: PROVIDER,
                node: pool_node.name.clone(),
            });
        }
        Err(self.api.provider_error(OP, &error))
    }

    /// Whether the pool no longer has this node, or has it draining or deleting.
    async fn deletion_under_way(&self, node_id: &str) -> bool {
        match self.read_pool().await {
            Ok((_, pool)) => pool
                .nodes()
                .iter()
                .find(|n| n.id == node_id)
                .is_none_or(|n| matches!(n.state(), STATE_DELETING | STATE_DRAINING)),
            Err(_) => false,
        }
    }
}

#[async_trait]
impl NodePoolProvider for DigitalOcean {
    async fn pool(&self) -> Result<CloudPool, ProviderError> {
        let (_, pool) = self.read_pool().await?;
        Ok(CloudPool {
            target: pool.count,
            nodes: pool.nodes().iter().map(cloud_node).collect(),
            // The API description gives a pool's `size` slug only (no sizes endpoint, no
            // capacity): a new node's shape comes from a running node or node-template-*.
            template: None,
        })
    }

    async fn grow_to(&self, target: u32) -> Result<(), ProviderError> {
        const OP: &str = "resize node pool";
        // Read fresh: defence in depth behind the planner, whose view may be stale.
        let (ids, pool) = self.read_pool().await?;
        if target < pool.count {
            return Err(refused(format!(
                "will not shrink node pool {:?} from {} to {target} nodes: lowering the count \
                 lets DigitalOcean choose which nodes to remove, possibly ones running game \
                 servers; nodes are removed only by deleting specific empty ones",
                pool.name, pool.count
            )));
        }
        if target == pool.count {
            debug!(count = pool.count, "node pool already at the target count");
            return Ok(());
        }
        // Always the absolute target, never an increment: if a PUT times out after DigitalOcean
        // applied it, the retry sets the same count again instead of growing twice.
        let body = ResizeRequest {
            name: &pool.name,
            count: target,
        };
        let url = self
            .pool_url(&ids, &[], &[])
            .map_err(|e| self.api.provider_error(OP, &e))?;
        let answer: NodePoolEnvelope = self
            .api
            .put_json(OP, url, &body)
            .await
            .map_err(|e| self.api.provider_error(OP, &e))?;
        // The answer is the pool as DigitalOcean now has it: anything but the count asked for
        // (a quota, a concurrent change) is reported, not assumed away.
        if answer.node_pool.count != target {
            return Err(ProviderError::Api {
                provider: PROVIDER,
                op: OP.into(),
                message: format!(
                    "asked for {target} nodes in pool {:?} but DigitalOcean answered count {}",
                    pool.name, answer.node_pool.count
                ),
            });
        }
        info!(from = pool.count, to = target, node_pool = %pool.name, "growing node pool");
        Ok(())
    }

    fn find(&self, node: &NodeRef, pool: &CloudPool) -> Result<Option<CloudNode>, ProviderError> {
        find_pool_node(node, &pool.nodes)
    }

    async fn delete_instance(&self, node: &CloudNode) -> Result<(), ProviderError> {
        // The IDs are cached by the pool read that resolved `node`: no request here.
        let ids = self.resolve().await?;
        self.delete_pool_node(&ids, node).await
    }
}

/// A pool node in the provider-neutral form.
fn cloud_node(n: &PoolNode) -> CloudNode {
    CloudNode {
        id: n.id.clone(),
        name: n.name().to_owned(),
        status: match n.state() {
            "provisioning" => InstanceStatus::Creating,
            "running" => InstanceStatus::Running,
            STATE_DRAINING | STATE_DELETING => InstanceStatus::Deleting,
            _ => InstanceStatus::Unknown,
        },
        state: n.state().to_owned(),
        provider_id: n
            .droplet_id
            .as_deref()
            .map(|d| format!("{PROVIDER_ID_PREFIX}{d}")),
        created: n.created_at.as_deref().and_then(|t| t.parse().ok()),
    }
}

/// Refuses a pool that DigitalOcean's own cluster autoscaler manages.
fn check_not_autoscaled(pool: &NodePool, cluster_name: &str) -> Result<(), ProviderError> {
    if !pool.autoscaled() {
        return Ok(());
    }
    let range = match (pool.min_nodes, pool.max_nodes) {
        (Some(min), Some(max)) => format!(", min_nodes {min}, max_nodes {max}"),
        _ => String::new(),
    };
    Err(refused(format!(
        "node pool {:?} has DigitalOcean's autoscaling enabled (auto_scale: true{range}); \
         two autoscalers would fight over its size. Turn it off (e.g. `doctl kubernetes \
         cluster node-pool update {cluster_name} {} --auto-scale=false`) or point kubescaler \
         at another pool",
        pool.name, pool.name
    )))
}

/// The one item named `wanted`, or a configuration error listing the names that exist.
/// `what` is the singular noun, `within` where the search happened (may be empty).
fn pick_by_name<T>(
    key: &str,
    wanted: &str,
    what: &str,
    within: &str,
    items: Vec<T>,
    name_and_id: impl Fn(&T) -> (&String, &String),
) -> Result<T, ProviderError> {
    let mut names: Vec<String> = items.iter().map(|i| name_and_id(i).0.clone()).collect();
    let mut matching: Vec<T> = items
        .into_iter()
        .filter(|i| name_and_id(i).0 == wanted)
        .collect();
    match matching.len() {
        1 => Ok(matching.remove(0)),
        0 => {
            names.sort();
            names.dedup();
            let existing = if names.is_empty() {
                format!("there are no {what}s{within}")
            } else {
                format!("existing {what}s{within}: {}", quote_list(&names))
            };
            Err(config_error(format!(
                "{key} {wanted:?}: no {what}{within} has this name; {existing}"
            )))
        }
        n => {
            let ids: Vec<String> = matching.iter().map(|i| name_and_id(i).1.clone()).collect();
            Err(config_error(format!(
                "{key} {wanted:?}: {n} {what}s{within} have this name (IDs {}); cannot tell \
                 which to use",
                ids.join(", ")
            )))
        }
    }
}

/// `"a", "b", "c"`, at most 50 of them.
fn quote_list(names: &[String]) -> String {
    const SHOWN: usize = 50;
    let mut text = names
        .iter()
        .take(SHOWN)
        .map(|n| format!("{n:?}"))
        .collect::<Vec<_>>()
        .join(", ");
    if names.len() > SHOWN {
        text.push_str(&format!(" and {} more", names.len() - SHOWN));
    }
    text
}

/// `page` (required) and `per_page` (optional) of a `links.pages.next` URL.
fn parse_next_link(next: &str) -> Option<(u32, Option<u32>)> {
    let url = reqwest::Url::parse(next)
        .or_else(|_| reqwest::Url::parse("http://relative.invalid/")?.join(next))
        .ok()?;
    let mut page = None;
    let mut per_page = None;
    for (key, value) in url.query_pairs() {
        match key.as_ref() {
            "page" => page = value.parse::<u32>().ok(),
            "per_page" => per_page = value.parse::<u32>().ok(),
            _ => {}
        }
    }
    Some((page?, per_page))
}

/// The droplet ID in a `digitalocean://<droplet_id>` provider ID.
fn droplet_id_of(provider_id: &str) -> Option<&str> {
    provider_id
        .strip_prefix(PROVIDER_ID_PREFIX)
        .map(str::trim)
        .filter(|id| !id.is_empty())
}

/// The pool node behind a Kubernetes node, by the strongest identifier the node carries: the
/// `doks.digitalocean.com/node-id` label, else the droplet ID of its `digitalocean://`
/// provider ID, else its name. A weaker identifier is not tried when a stronger one is present
/// but matches nothing: that node is not in this pool, and a looser match could pick the wrong
/// node. A provider ID that contradicts the label is refused for the same reason.
fn find_pool_node(
    node: &NodeRef,
    pool_nodes: &[CloudNode],
) -> Result<Option<CloudNode>, ProviderError> {
    let label = node
        .labels
        .get(NODE_ID_LABEL)
        .map(|v| v.trim())
        .filter(|v| !v.is_empty());
    let droplet = node.provider_id.as_deref().and_then(droplet_id_of);
    let found = if let Some(node_id) = label {
        pool_nodes.iter().find(|p| p.id == node_id)
    } else if let Some(droplet) = droplet {
        pool_nodes
            .iter()
            .find(|p| p.provider_id.as_deref().and_then(droplet_id_of) == Some(droplet))
    } else if node.name.is_empty() {
        None
    } else {
        pool_nodes.iter().find(|p| p.name == node.name)
    };
    let Some(pool_node) = found else {
        return Ok(None);
    };
    let pool_droplet = pool_node.provider_id.as_deref().and_then(droplet_id_of);
    if let (Some(droplet), Some(pool_droplet)) = (droplet, pool_droplet) {
        if droplet != pool_droplet {
            return Err(refused(format!(
                "node {:?}: its label {NODE_ID_LABEL} names pool node {} (droplet {pool_droplet}) \
                 but its providerID names droplet {droplet}; not deleting either",
                node.name, pool_node.id
            )));
        }
    }
    Ok(Some(pool_node.clone()))
}
