//! `doks-fake`: a local fake of the DigitalOcean Kubernetes (DOKS) node-pool API, for
//! kubescaler's tests and for a local try-out of kubescaler without a DigitalOcean account.
//!
//! # What it answers
//! The six operations of `shared/digitalocean/doks-node-pools.openapi.yaml` (DigitalOcean's
//! own description, every `$ref` resolved): list clusters (paginated), get a cluster, list a
//! cluster's node pools, get a node pool, update (resize) a node pool, delete one node.
//!
//! # Conformance is checked against the description, loaded at run time
//! [`FakeDoks::start`] loads the description ([`FakeOptions::spec_path`], by default
//! [`default_spec_path`]) and refuses to start if it uses a schema keyword, format or security
//! scheme the validator cannot enforce, or lacks one of the six operations. Each request is
//! then checked, in this order, and refused with DigitalOcean's error body
//! (`{"id", "message", "request_id"}`) saying why:
//!
//! | check | answer |
//! | --- | --- |
//! | the path is one of the description's templates | 404 `not_found` |
//! | the method is one the path has | 405 `method_not_allowed` (with `Allow`) |
//! | `Authorization: Bearer <token>` with [`FakeOptions::token`] | 401 `unauthorized` |
//! | the token has the operation's scopes (only with [`FakeOptions::token_scopes`]) | 403 `forbidden` |
//! | path and query parameters: declared, not repeated, typed and within bounds (a UUID path parameter must be a UUID, `per_page` an integer in 1..=200, `skip_drain` 0 or 1...) | 400 `bad_request` |
//! | a body only where one is declared; a required body present; valid JSON | 400 `bad_request` |
//! | the body's media type is a declared one | 415 `unsupported_media_type` |
//! | the body matches its schema (required `name` and `count`, types, enums, `readOnly` fields such as `id` and `nodes` not sent...) | 422 `unprocessable_entity` |
//!
//! The schema rules are walked from the loaded file by [`schema`]; nothing of the API's shape
//! is retyped here. The fake also checks its **own answers** against the documented responses
//! (status, header types, body schema) and records any mismatch in
//! [`FakeDoks::response_violations`], so the driver is tested against answers the real API
//! could give.
//!
//! # What it models
//! * Clusters and node pools ([`FakeDoks::add_cluster`], [`FakeDoks::add_pool`]).
//! * Raising a pool's `count` adds nodes in state `provisioning`; after
//!   [`FakeOptions::boot_delay`] each becomes `running` (with a Kubernetes API server: once its
//!   `Node` object is registered and Ready).
//! * Lowering `count` removes nodes **of the fake's own choosing, as DOKS does**: provisioning
//!   nodes first, then the newest running ones, whatever runs on them. This is why kubescaler
//!   never lowers the count.
//! * Deleting a node (`replace=0`) lowers `count` by one and removes that node; `replace=1`
//!   removes it and orders a replacement. A node already being deleted is accepted again
//!   without effect; an unknown node is a 404. With [`FakeOptions::delete_delay`] the node
//!   shows `draining` for the first half of it (straight `deleting` with `skip_drain=1`), then
//!   `deleting`, before it goes. Draining itself is not emulated: pods are not evicted.
//! * Answers carry the `ratelimit-limit`, `ratelimit-remaining` and `ratelimit-reset` headers
//!   (5000 per hour window).
//! * Paginated lists honour `page` and `per_page` (the description's defaults apply; an
//!   optional [`FakeOptions::max_per_page`] caps the page size like the API's own cap) and
//!   link the other pages in `links.pages` (`first`, `prev`, `next`, `last`) with `meta.total`.
//!
//! # Kubernetes side ([`FakeOptions::kube`])
//! Connected to an API server, a node that becomes `running` is created as a `Node`: its name,
//! `spec.providerID = digitalocean://<droplet_id>`, the DOKS labels
//! (`doks.digitalocean.com/node-id`, `doks.digitalocean.com/node-pool`,
//! `doks.digitalocean.com/node-pool-id`, `kubernetes.io/hostname`, `node.kubernetes.io/instance-type`,
//! `topology.kubernetes.io/region`...), the pool's `labels` (e.g. the label kubescaler's
//! node-selector matches), [`FakeOptions::node_labels`], the pool's taints, capacity and
//! allocatable from the size slug ([`FakeOptions::sizes`], defaults in [`default_sizes`]) and a
//! `Ready` condition. When a node is removed, the fake first lists the pods still bound to it
//! (`spec.nodeName`, phase not `Succeeded`/`Failed`, matching
//! [`FakeOptions::server_pod_selector`], or every such pod without one): each is a **lost
//! server** ([`FakeDoks::lost_servers`], the figure every test asserts is 0). Then it deletes
//! the `Node`. Pods are not deleted (no kubelet or garbage collector does it on the test
//! control plane either). Kubernetes failures are retried, then recorded in
//! [`FakeDoks::kube_errors`].
//!
//! # Faults ([`FakeDoks::inject_fault`], [`FakeDoks::set_chaos`])
//! A fault hits a request that passed validation (an invalid request is always refused, never
//! faulted): [`Fault::RateLimited`] (429 with the rate-limit headers, `ratelimit-remaining: 0`
//! and `ratelimit-reset` in the near future; not applied), [`Fault::ServerError`] (500; not
//! applied), [`Fault::Delay`] (applied, then answered late: a client that times out has still
//! changed the pool), [`Fault::DropConnection`] (the connection is closed without an answer; not
//! applied) and [`Fault::DropAfterApply`] (applied, then the connection is closed without an
//! answer). Queued faults (`inject_fault(op, fault, n)`: the next `n` calls of `op`) come
//! first; otherwise [`Chaos`] picks one of its faults at random with its probability.
//! Two faults of the pool itself: [`FakeDoks::make_undeletable`] (every DELETE of one node
//! fails with a 500) and [`FakeDoks::never_register_next`] (a node that never comes up).
//!
//! # Observing
//! [`FakeDoks::requests`] logs every request: method, path, query, operation, status (none
//! when the connection was dropped), the rejection reason, the fault, whether it was applied
//! and its body. [`FakeDoks::pool`] shows a pool's count and nodes.
//!
//! # Standalone
//! The `doks-fake` binary runs it for a local try-out (see `doks-fake --help`).

#![warn(missing_docs)]

mod kube_side;
pub mod schema;
mod server;
pub mod spec;
mod state;

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use serde_json::Value;
use tokio::sync::watch;
use tokio::task::JoinHandle;

pub use kube_side::{default_sizes, LostServer, NodeShape};
pub use state::{NodeView, PoolSpec, PoolView, Taint};

/// Environment variable naming the OpenAPI description (overrides the search beside the
/// repository).
pub const SPEC_ENV: &str = "DOKS_FAKE_SPEC";

/// The description's place relative to the kubescaler repository root: CI lays out `shared/`
/// beside the clone.
pub const SPEC_RELATIVE_TO_REPO: &str = "../shared/digitalocean/doks-node-pools.openapi.yaml";

/// The OpenAPI description could not be found; says where it looked and how to point at it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpecNotFound {
    /// The paths tried, in order.
    pub tried: Vec<PathBuf>,
}

impl fmt::Display for SpecNotFound {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let tried: Vec<String> = self.tried.iter().map(|p| p.display().to_string()).collect();
        write!(
            f,
            "DigitalOcean's API description doks-node-pools.openapi.yaml is missing (tried: {}); \
             pass --spec PATH or set {SPEC_ENV}, or lay out shared/digitalocean/ beside the \
             kubescaler repository",
            if tried.is_empty() {
                "no kubescaler repository above the current directory".to_owned()
            } else {
                tried.join(", ")
            }
        )
    }
}

impl std::error::Error for SpecNotFound {}

/// Finds the description at run time: [`SPEC_ENV`] if set, else [`SPEC_RELATIVE_TO_REPO`]
/// beside the kubescaler repository that holds the current directory (cargo runs tests from
/// their package's directory, both inside it). Never a path fixed at build time, so a build
/// shared between clones, or one moved, finds each clone's own neighbourhood.
pub fn locate_spec() -> Result<PathBuf, SpecNotFound> {
    let env = std::env::var_os(SPEC_ENV).filter(|p| !p.is_empty());
    let cwd = std::env::current_dir().unwrap_or_default();
    locate_spec_from(env.map(PathBuf::from), &cwd)
}

/// [`locate_spec`] with its inputs given: the env value and the directory to search up from.
pub fn locate_spec_from(explicit: Option<PathBuf>, start: &Path) -> Result<PathBuf, SpecNotFound> {
    if let Some(path) = explicit {
        return if path.is_file() {
            Ok(path)
        } else {
            Err(SpecNotFound { tried: vec![path] })
        };
    }
    let Some(repo) = start
        .ancestors()
        .find(|dir| dir.join("hack/doks-fake/Cargo.toml").is_file())
    else {
        return Err(SpecNotFound { tried: vec![] });
    };
    let path = repo.join(SPEC_RELATIVE_TO_REPO);
    if path.is_file() {
        Ok(std::fs::canonicalize(&path).unwrap_or(path))
    } else {
        Err(SpecNotFound { tried: vec![path] })
    }
}

/// [`locate_spec`], or where it was expected when missing (starting a fake on it then fails,
/// naming the path).
pub fn default_spec_path() -> PathBuf {
    match locate_spec() {
        Ok(path) => path,
        Err(e) => e
            .tried
            .into_iter()
            .next()
            .unwrap_or_else(|| PathBuf::from(SPEC_RELATIVE_TO_REPO)),
    }
}

/// One of the six operations, named by the description's `operationId`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Operation {
    /// `GET /v2/kubernetes/clusters`.
    ListClusters,
    /// `GET /v2/kubernetes/clusters/{cluster_id}`.
    GetCluster,
    /// `GET /v2/kubernetes/clusters/{cluster_id}/node_pools`.
    ListNodePools,
    /// `GET /v2/kubernetes/clusters/{cluster_id}/node_pools/{node_pool_id}`.
    GetNodePool,
    /// `PUT /v2/kubernetes/clusters/{cluster_id}/node_pools/{node_pool_id}`.
    UpdateNodePool,
    /// `DELETE /v2/kubernetes/clusters/{cluster_id}/node_pools/{node_pool_id}/nodes/{node_id}`.
    DeleteNode,
}

impl Operation {
    /// All six.
    pub const ALL: [Operation; 6] = [
        Operation::ListClusters,
        Operation::GetCluster,
        Operation::ListNodePools,
        Operation::GetNodePool,
        Operation::UpdateNodePool,
        Operation::DeleteNode,
    ];

    /// Its `operationId` in the description.
    pub fn operation_id(self) -> &'static str {
        match self {
            Operation::ListClusters => "kubernetes_list_clusters",
            Operation::GetCluster => "kubernetes_get_cluster",
            Operation::ListNodePools => "kubernetes_list_nodePools",
            Operation::GetNodePool => "kubernetes_get_nodePool",
            Operation::UpdateNodePool => "kubernetes_update_nodePool",
            Operation::DeleteNode => "kubernetes_delete_node",
        }
    }

    /// The operation with this `operationId`.
    pub fn from_operation_id(id: &str) -> Option<Operation> {
        Operation::ALL.into_iter().find(|o| o.operation_id() == id)
    }
}

/// Which requests a queued fault hits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Target {
    /// Any valid request.
    Any,
    /// Valid requests of this operation.
    Op(Operation),
}

impl From<Operation> for Target {
    fn from(op: Operation) -> Self {
        Target::Op(op)
    }
}

impl Target {
    fn matches(self, op: Operation) -> bool {
        match self {
            Target::Any => true,
            Target::Op(o) => o == op,
        }
    }
}

/// A failure to inject.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    /// 429 `too_many_requests`, `ratelimit-remaining: 0`, `ratelimit-reset` this far ahead
    /// (whole seconds, rounded up). Not applied.
    RateLimited {
        /// How far ahead the reset is.
        reset_in: Duration,
    },
    /// 500 `server_error`. Not applied.
    ServerError,
    /// Applied, then answered after this long.
    Delay(Duration),
    /// The connection is closed without an answer. Not applied.
    DropConnection,
    /// Applied, then the connection is closed without an answer.
    DropAfterApply,
}

impl fmt::Display for Fault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Fault::RateLimited { reset_in } => write!(f, "429 (reset in {reset_in:?})"),
            Fault::ServerError => f.write_str("500"),
            Fault::Delay(d) => write!(f, "delay {d:?}"),
            Fault::DropConnection => f.write_str("dropped connection"),
            Fault::DropAfterApply => f.write_str("dropped connection after applying"),
        }
    }
}

/// Random faults on a share of the valid requests, when no queued fault applies.
#[derive(Clone, Debug, PartialEq)]
pub struct Chaos {
    /// Share of requests hit, in [0, 1].
    pub probability: f64,
    /// The faults to pick from, uniformly.
    pub faults: Vec<Fault>,
    /// Seed of the generator (runs are reproducible).
    pub seed: u64,
}

/// How to run the fake.
#[derive(Clone)]
pub struct FakeOptions {
    /// The OpenAPI description (default: [`default_spec_path`]).
    pub spec_path: PathBuf,
    /// Where to listen (default `127.0.0.1:0`, a free port).
    pub listen: SocketAddr,
    /// The bearer token the fake accepts.
    pub token: String,
    /// The token's scopes (e.g. `kubernetes:read`); `None` (default): full access.
    pub token_scopes: Option<Vec<String>>,
    /// How long a new node stays `provisioning` (default 1 s).
    pub boot_delay: Duration,
    /// How long a deleted node stays `draining`/`deleting` before it is removed (default 0).
    pub delete_delay: Duration,
    /// A Kubernetes API server to register nodes in (default: none).
    pub kube: Option<kube::Client>,
    /// Labels put on every Node, besides the DOKS ones and the pool's.
    pub node_labels: BTreeMap<String, String>,
    /// Capacity and allocatable by size slug (default: [`default_sizes`]).
    pub sizes: BTreeMap<String, NodeShape>,
    /// Label selector of the server pods counted as lost (default: every pod).
    pub server_pod_selector: Option<String>,
    /// Largest page a list returns whatever `per_page` asks (default: none beyond the
    /// description's `maximum`).
    pub max_per_page: Option<u32>,
    /// Region of the clusters (default `nyc1`).
    pub region: String,
    /// Seed of the ID generator (default: from the clock).
    pub seed: Option<u64>,
    /// Delete the Node objects the fake created when it shuts down (default true).
    pub cleanup_on_shutdown: bool,
}

impl fmt::Debug for FakeOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FakeOptions")
            .field("spec_path", &self.spec_path)
            .field("listen", &self.listen)
            .field("token", &"<redacted>")
            .field("token_scopes", &self.token_scopes)
            .field("boot_delay", &self.boot_delay)
            .field("delete_delay", &self.delete_delay)
            .field("kube", &self.kube.is_some())
            .field("server_pod_selector", &self.server_pod_selector)
            .finish_non_exhaustive()
    }
}

impl Default for FakeOptions {
    fn default() -> Self {
        FakeOptions {
            spec_path: default_spec_path(),
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            token: "doks-fake-token".to_owned(),
            token_scopes: None,
            boot_delay: Duration::from_secs(1),
            delete_delay: Duration::ZERO,
            kube: None,
            node_labels: BTreeMap::new(),
            sizes: default_sizes(),
            server_pod_selector: None,
            max_per_page: None,
            region: "nyc1".to_owned(),
            seed: None,
            cleanup_on_shutdown: true,
        }
    }
}

/// Why the fake cannot start or do what a test asked.
#[derive(Debug, thiserror::Error)]
pub enum FakeError {
    /// The description cannot be used.
    #[error("OpenAPI description: {0}")]
    Spec(String),
    /// The listener cannot be opened.
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        /// The address.
        addr: SocketAddr,
        /// The cause.
        source: std::io::Error,
    },
    /// A cluster, pool or size is unknown.
    #[error("{0}")]
    Invalid(String),
}

/// Most requests the log keeps (a long standalone run drops the oldest).
pub const MAX_LOGGED_REQUESTS: usize = 100_000;

/// One request as the fake saw it.
#[derive(Clone, Debug, PartialEq)]
pub struct LoggedRequest {
    /// Order of arrival, from 1.
    pub seq: u64,
    /// When it arrived, since the fake started.
    pub at: Duration,
    /// Method.
    pub method: String,
    /// Path.
    pub path: String,
    /// Raw query string.
    pub query: Option<String>,
    /// The operation, when the request conformed.
    pub operation: Option<Operation>,
    /// Status answered; `None` when the connection was dropped.
    pub status: Option<u16>,
    /// Why it was refused by validation.
    pub rejection: Option<String>,
    /// The fault injected.
    pub fault: Option<Fault>,
    /// Whether it changed (or would have changed) the fake's state.
    pub applied: bool,
    /// The JSON body of a conforming request.
    pub body: Option<Value>,
}

impl LoggedRequest {
    /// Whether the request conformed to the description.
    pub fn passed_validation(&self) -> bool {
        self.operation.is_some() && self.rejection.is_none()
    }
}

impl fmt::Display for LoggedRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "#{} {} {}", self.seq, self.method, self.path)?;
        if let Some(q) = &self.query {
            write!(f, "?{q}")?;
        }
        match self.status {
            Some(s) => write!(f, " -> {s}")?,
            None => write!(f, " -> (dropped)")?,
        }
        if let Some(fault) = &self.fault {
            write!(f, " [fault: {fault}]")?;
        }
        if let Some(r) = &self.rejection {
            write!(f, " [rejected: {r}]")?;
        }
        Ok(())
    }
}

/// Locks a std mutex, taking the data of a poisoned one (a panicked test thread must not
/// take the server down).
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// A running fake.
pub struct FakeDoks {
    shared: Arc<server::Shared>,
    stop: watch::Sender<bool>,
    server: Option<JoinHandle<()>>,
    base_url: String,
}

impl fmt::Debug for FakeDoks {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FakeDoks")
            .field("base_url", &self.base_url)
            .finish_non_exhaustive()
    }
}

impl FakeDoks {
    /// Loads the description, opens the listener and starts serving.
    pub async fn start(options: FakeOptions) -> Result<FakeDoks, FakeError> {
        let (shared, stop, server, base_url) = server::start(options).await?;
        Ok(FakeDoks {
            shared,
            stop,
            server: Some(server),
            base_url,
        })
    }

    /// `http://127.0.0.1:<port>`: the driver's API URL.
    pub fn base_url(&self) -> &str {
        &self.base_url
    }

    /// The bearer token it accepts.
    pub fn token(&self) -> &str {
        &self.shared.auth.token
    }

    /// The loaded description.
    pub fn spec(&self) -> &spec::Spec {
        &self.shared.spec
    }

    /// Adds a cluster; returns its ID.
    pub fn add_cluster(&self, name: &str) -> String {
        lock(&self.shared.state).add_cluster(name)
    }

    /// Adds a pool whose `count` nodes are already running (registered as Nodes first, with a
    /// Kubernetes API server); returns its ID.
    pub async fn add_pool(&self, cluster_id: &str, spec: PoolSpec) -> Result<String, FakeError> {
        server::add_pool(&self.shared, cluster_id, spec).await
    }

    /// The pool as it stands.
    pub fn pool(&self, cluster_id: &str, pool_id: &str) -> Option<PoolView> {
        lock(&self.shared.state).view(cluster_id, pool_id)
    }

    /// The next `times` valid requests that `target` matches get `fault`.
    pub fn inject_fault(&self, target: impl Into<Target>, fault: Fault, times: u32) {
        if times > 0 {
            lock(&self.shared.faults)
                .queued
                .push((target.into(), fault, times));
        }
    }

    /// Makes every DELETE of the pool node `node_id` fail with a 500 from now on: a node the
    /// cloud cannot delete.
    pub fn make_undeletable(&self, node_id: &str) {
        lock(&self.shared.undeletable).insert(node_id.to_owned());
    }

    /// The next `n` nodes to finish booting never register as a Node and stay
    /// `provisioning` (a node that never comes up).
    pub fn never_register_next(&self, n: u32) {
        *lock(&self.shared.never_register) += n;
    }

    /// Resizes a pool as someone outside kubescaler would (the cloud console, `doctl`): the
    /// same effect as the API's update, without a request in the log. `false` if the pool is
    /// unknown.
    pub async fn resize(&self, cluster_id: &str, pool_id: &str, count: u32) -> bool {
        let name = match self.pool(cluster_id, pool_id) {
            Some(view) => view.name,
            None => return false,
        };
        let body = serde_json::json!({"name": name, "count": count});
        let result = lock(&self.shared.state).update_pool(cluster_id, pool_id, &body);
        match result {
            Ok((_, effects)) => {
                server::run_effects(&self.shared, effects).await;
                true
            }
            Err(_) => false,
        }
    }

    /// Drops every queued fault.
    pub fn clear_faults(&self) {
        lock(&self.shared.faults).queued.clear();
    }

    /// Starts (or with `None` stops) random faults.
    pub fn set_chaos(&self, chaos: Option<Chaos>) {
        let mut faults = lock(&self.shared.faults);
        faults.rng = state::Rng::new(chaos.as_ref().map_or(0, |c| c.seed));
        faults.chaos = chaos;
    }

    /// Every request so far (the last [`MAX_LOGGED_REQUESTS`]).
    pub fn requests(&self) -> Vec<LoggedRequest> {
        lock(&self.shared.log).clone()
    }

    /// Forgets the request log.
    pub fn clear_requests(&self) {
        lock(&self.shared.log).clear();
    }

    /// The fake's own answers that did not match the description (should stay empty).
    pub fn response_violations(&self) -> Vec<String> {
        lock(&self.shared.violations).clone()
    }

    /// How many server pods were still on a node when the fake removed it.
    pub fn lost_servers(&self) -> usize {
        self.lost_server_pods().iter().map(|l| l.pods.len()).sum()
    }

    /// The lost server pods, by node.
    pub fn lost_server_pods(&self) -> Vec<LostServer> {
        self.shared
            .kube
            .as_ref()
            .map(|k| k.lost())
            .unwrap_or_default()
    }

    /// Kubernetes calls that failed for good (should stay empty).
    pub fn kube_errors(&self) -> Vec<String> {
        self.shared
            .kube
            .as_ref()
            .map(|k| k.errors())
            .unwrap_or_default()
    }

    /// Stops serving, stops the boot and removal timers and (unless
    /// [`FakeOptions::cleanup_on_shutdown`] is off) deletes the Node objects it created.
    pub async fn shutdown(mut self) {
        let _ = self.stop.send(true);
        if let Some(server) = self.server.take() {
            let _ = server.await;
        }
        if self.shared.cleanup_on_shutdown {
            if let Some(kube) = &self.shared.kube {
                let _serial = kube.serial.lock().await;
                kube.delete_all().await;
            }
        }
    }
}

impl Drop for FakeDoks {
    fn drop(&mut self) {
        // Without shutdown(): stop serving at least (Node objects stay).
        let _ = self.stop.send(true);
        if let Some(server) = self.server.take() {
            server.abort();
        }
    }
}
