//! [`KubeCluster`]: the [`Kubernetes`] implementation on kube-rs.
//!
//! Reads come from two watches (selector-matched Nodes; non-terminal Pods in all namespaces)
//! reduced into a [`ClusterIndex`], so a [`Kubernetes::snapshot`] costs no API call. Writes are
//! single merge patches. The one live read is [`Kubernetes::live_server_pods`], the last check
//! before a node is deleted.

use std::fmt::Debug;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use async_trait::async_trait;
use futures::stream::BoxStream;
use futures::{Stream, StreamExt};
use k8s_openapi::api::core::v1::{Namespace, ObjectReference};
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::api::{DeleteParams, ListParams, Patch, PatchParams, Preconditions};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::core::DynamicObject;
use kube::runtime::events::{Event as KubeEvent, EventType, Recorder, Reporter};
use kube::runtime::watcher::{self, watcher, Event};
use kube::runtime::WatchStreamExt;
use kube::{Api, Client, Resource};
use serde::de::DeserializeOwned;
use tokio::sync::broadcast;
use tokio::task::AbortHandle;
use tracing::{debug, error, info, warn};

use super::index::{game_server_of, node_state, pod_key, ClusterIndex};
use super::marks::decide;
use super::{ActionEvent, ChangeEvent, EventReason, KubeError, Kubernetes, MarkOp, MarkOutcome};
use crate::agones::{self, GameServerDelete, GameServerInfo, LiveNodeServers, LivePod};
use crate::config::Config;
use crate::model::{ClusterSnapshot, NodeState, ServerSource, FIELD_MANAGER};

/// Pods that still hold (or wait for) a node: the API server filters out the terminal ones.
pub const NON_TERMINAL_PODS: &str = "status.phase!=Succeeded,status.phase!=Failed";

/// Change events buffered per receiver; a receiver that falls further behind gets
/// `RecvError::Lagged` and should treat it as "something changed".
const CHANGE_CHANNEL_CAPACITY: usize = 1024;
/// Most reads-and-patches of one mark change when the node keeps changing under it.
const MARK_ATTEMPTS: u32 = 4;
/// The `reportingController` of kubescaler's Events.
const EVENT_REPORTER: &str = "kubescaler";

/// The cluster as kubescaler sees it, kept current by watches.
///
/// Dropping it stops the watch tasks.
pub struct KubeCluster {
    client: Client,
    index: Arc<Mutex<ClusterIndex>>,
    changes: broadcast::Sender<ChangeEvent>,
    server_label: (String, String),
    watch_tasks: Vec<AbortHandle>,
    /// Publishes the Events of kubescaler's actions.
    recorder: Recorder,
    /// Namespace that pool-wide Events (ScaleUp) are recorded on.
    home_namespace: String,
}

/// Label selector of GameServer pods.
fn game_server_pods_selector() -> String {
    format!("{}={}", agones::ROLE_LABEL, agones::ROLE_GAMESERVER)
}

impl Debug for KubeCluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KubeCluster")
            .field("server_label", &self.server_label)
            .finish_non_exhaustive()
    }
}

impl Drop for KubeCluster {
    fn drop(&mut self) {
        for task in &self.watch_tasks {
            task.abort();
        }
    }
}

impl KubeCluster {
    /// Builds a client from `config` and starts the watches.
    ///
    /// Without `cluster-kube-config-path` and `cluster-kube-config-master-url`, inside a pod
    /// (`KUBERNETES_SERVICE_HOST` set), it uses the pod's service account. Otherwise it reads
    /// the kubeconfig at `cluster-kube-config-path`, else `KUBECONFIG` / `~/.kube/config`; a
    /// master URL replaces that kubeconfig's server. A master URL with no kubeconfig to be found
    /// connects to that URL without credentials, as the Go version did (e.g. `kubectl proxy`).
    pub async fn connect(config: &Config) -> Result<Self, KubeError> {
        let client_config = client_config(
            config.cluster_kube_config_master_url.as_deref(),
            config.cluster_kube_config_path.as_deref(),
        )
        .await?;
        info!(
            server = %client_config.cluster_url,
            node_selector = %config.node_selector,
            "connecting to the Kubernetes API server"
        );
        let client = Client::try_from(client_config)
            .map_err(|e| KubeError::Client(format!("cannot create the HTTP client: {e}")))?;
        let cluster = Self::start(
            client,
            &config.node_selector,
            (
                config.server_pod_label_name.clone(),
                config.server_pod_label_value.clone(),
            ),
        )
        .with_events(&config.identity(), &config.own_namespace());
        Ok(match config.server_source {
            ServerSource::Pods => cluster,
            ServerSource::Agones => {
                cluster.with_agones(config.agones.buffer == agones::AgonesBuffer::FleetAutoscalers)
            }
        })
    }

    /// Records Events as reporter instance `instance`, pool-wide ones on `namespace`.
    pub fn with_events(mut self, instance: &str, namespace: &str) -> Self {
        self.recorder = Recorder::new(
            self.client.clone(),
            Reporter {
                controller: EVENT_REPORTER.into(),
                instance: Some(instance.to_string()),
            },
        );
        self.home_namespace = namespace.to_string();
        self
    }

    /// The API client, shared with leader election.
    pub fn client(&self) -> Client {
        self.client.clone()
    }

    /// Starts the node and pod watches on `client` and returns at once; [`Kubernetes::snapshot`]
    /// answers `NotSynced` until both have listed. `node_selector` is a label selector (empty:
    /// every node); `server_label` is the `(name, value)` label of game server pods.
    ///
    /// Must be called within a Tokio runtime: the watches run as tasks on it.
    pub fn start(client: Client, node_selector: &str, server_label: (String, String)) -> Self {
        let index = Arc::new(Mutex::new(ClusterIndex::new(server_label.clone())));
        let (changes, _) = broadcast::channel(CHANGE_CHANNEL_CAPACITY);

        let node_watch = watcher::Config::default().labels(node_selector);
        let nodes = tokio::spawn(run_watch(
            "nodes",
            Api::<Node>::all(client.clone()),
            node_watch,
            Arc::clone(&index),
            changes.clone(),
            ClusterIndex::on_node_event,
            ClusterIndex::desync_nodes,
        ));
        let pod_watch = watcher::Config::default().fields(NON_TERMINAL_PODS);
        let pods = tokio::spawn(run_watch(
            "pods",
            Api::<Pod>::all(client.clone()),
            pod_watch,
            Arc::clone(&index),
            changes.clone(),
            ClusterIndex::on_pod_event,
            ClusterIndex::desync_pods,
        ));

        Self {
            recorder: Recorder::new(client.clone(), EVENT_REPORTER.into()),
            client,
            index,
            changes,
            server_label,
            watch_tasks: vec![nodes.abort_handle(), pods.abort_handle()],
            home_namespace: "default".into(),
        }
    }

    /// Agones mode: also watches GameServers (all namespaces; the settings' scope is applied by
    /// the planner, since out-of-scope GameServers still protect their nodes) and, if
    /// `fleet_buffers`, FleetAutoscalers. Snapshots wait for these caches too.
    pub fn with_agones(mut self, fleet_buffers: bool) -> Self {
        lock(&self.index).enable_agones(fleet_buffers);
        let game_servers = tokio::spawn(run_watch(
            "gameservers",
            Api::<DynamicObject>::all_with(self.client.clone(), &agones::game_server_resource()),
            watcher::Config::default(),
            Arc::clone(&self.index),
            self.changes.clone(),
            ClusterIndex::on_game_server_event,
            ClusterIndex::desync_game_servers,
        ));
        self.watch_tasks.push(game_servers.abort_handle());
        if fleet_buffers {
            let autoscalers = tokio::spawn(run_watch(
                "fleetautoscalers",
                Api::<DynamicObject>::all_with(
                    self.client.clone(),
                    &agones::fleet_autoscaler_resource(),
                ),
                watcher::Config::default(),
                Arc::clone(&self.index),
                self.changes.clone(),
                ClusterIndex::on_fleet_autoscaler_event,
                ClusterIndex::desync_fleet_autoscalers,
            ));
            self.watch_tasks.push(autoscalers.abort_handle());
        }
        self
    }

    /// Whether both watches have listed and not failed since.
    pub fn is_synced(&self) -> bool {
        lock(&self.index).is_synced()
    }
}

#[async_trait]
impl Kubernetes for KubeCluster {
    async fn snapshot(&self) -> Result<ClusterSnapshot, KubeError> {
        lock(&self.index).snapshot().map_err(KubeError::NotSynced)
    }

    async fn mark(&self, node: &str, op: MarkOp) -> Result<MarkOutcome, KubeError> {
        let nodes = Api::<Node>::all(self.client.clone());
        let params = PatchParams {
            field_manager: Some(FIELD_MANAGER.to_string()),
            ..PatchParams::default()
        };
        let mut attempt = 0;
        loop {
            attempt += 1;
            let Some(live) = nodes
                .get_opt(node)
                .await
                .map_err(|e| api_error(format!("get node {node}"), e))?
            else {
                return Ok(MarkOutcome::Gone);
            };
            let patch = match decide(op, &live) {
                Ok(patch) => patch,
                Err(why) => {
                    let state = node_state(&live)
                        .ok_or_else(|| KubeError::Client(format!("node {node} has no name")))?;
                    return Ok(MarkOutcome::Refused(state, why));
                }
            };
            match nodes.patch(node, &params, &Patch::Merge(&patch)).await {
                Ok(written) => {
                    info!(node, op = op.as_str(), "marked node");
                    let state = node_state(&written)
                        .ok_or_else(|| KubeError::Client(format!("node {node} has no name")))?;
                    return Ok(MarkOutcome::Applied(state));
                }
                // Changed since it was read: decide again on the newer node.
                Err(kube::Error::Api(e)) if e.code == 409 && attempt < MARK_ATTEMPTS => {
                    debug!(
                        node,
                        op = op.as_str(),
                        attempt,
                        "node changed under the patch; reading it again"
                    );
                }
                Err(kube::Error::Api(e)) if e.code == 404 => return Ok(MarkOutcome::Gone),
                Err(e) => return Err(api_error(format!("patch node {node} ({})", op.as_str()), e)),
            }
        }
    }

    async fn live_node(&self, node: &str) -> Result<Option<NodeState>, KubeError> {
        let found = Api::<Node>::all(self.client.clone())
            .get_opt(node)
            .await
            .map_err(|e| api_error(format!("get node {node}"), e))?;
        Ok(found.as_ref().and_then(node_state))
    }

    async fn live_server_pods(&self, node: &str) -> Result<Vec<String>, KubeError> {
        let (name, value) = &self.server_label;
        let params = ListParams::default()
            .labels(&format!("{name}={value}"))
            .fields(&live_pods_field_selector(node));
        let list = Api::<Pod>::all(self.client.clone())
            .list(&params)
            .await
            .map_err(|e| api_error(format!("list server pods on node {node}"), e))?;
        let mut keys: Vec<String> = list.items.iter().filter_map(pod_key).collect();
        keys.sort();
        debug!(node, count = keys.len(), "listed live server pods");
        Ok(keys)
    }

    async fn live_node_game_servers(&self, node: &str) -> Result<LiveNodeServers, KubeError> {
        // Pods first: a GameServer's pod exists before the GameServer names its node.
        let params = ListParams::default()
            .labels(&game_server_pods_selector())
            .fields(&live_pods_field_selector(node));
        let pods = Api::<Pod>::all(self.client.clone())
            .list(&params)
            .await
            .map_err(|e| api_error(format!("list GameServer pods on node {node}"), e))?;
        // GameServers have no field selector on status.nodeName: list and filter.
        let servers =
            Api::<DynamicObject>::all_with(self.client.clone(), &agones::game_server_resource())
                .list(&ListParams::default())
                .await
                .map_err(|e| api_error(format!("list GameServers for node {node}"), e))?;
        let live = LiveNodeServers {
            game_servers: servers
                .items
                .iter()
                .filter_map(agones::game_server_info)
                .filter(|gs| gs.node.as_deref() == Some(node))
                .collect(),
            pods: pods
                .items
                .iter()
                .filter_map(|pod| {
                    Some(LivePod {
                        key: pod_key(pod)?,
                        game_server: game_server_of(pod),
                    })
                })
                .collect(),
        };
        debug!(
            node,
            game_servers = live.game_servers.len(),
            pods = live.pods.len(),
            "listed live GameServers"
        );
        Ok(live)
    }

    async fn delete_game_server(
        &self,
        game_server: &GameServerInfo,
    ) -> Result<GameServerDelete, KubeError> {
        let (namespace, name) = game_server
            .key
            .split_once('/')
            .unwrap_or(("", &game_server.key));
        let Some(version) = game_server.resource_version.clone() else {
            return Err(KubeError::Client(format!(
                "GameServer {} has no resourceVersion: not deleting it without a precondition",
                game_server.key
            )));
        };
        let params = DeleteParams {
            preconditions: Some(Preconditions {
                resource_version: Some(version),
                uid: None,
            }),
            ..DeleteParams::default()
        };
        let api = Api::<DynamicObject>::namespaced_with(
            self.client.clone(),
            namespace,
            &agones::game_server_resource(),
        );
        match api.delete(name, &params).await {
            Ok(_) => Ok(GameServerDelete::Deleted),
            Err(kube::Error::Api(e)) if e.code == 409 => Ok(GameServerDelete::Conflict),
            Err(kube::Error::Api(e)) if e.code == 404 => Ok(GameServerDelete::Gone),
            Err(e) => Err(api_error(
                format!("delete GameServer {}", game_server.key),
                e,
            )),
        }
    }

    fn changes(&self) -> broadcast::Receiver<ChangeEvent> {
        self.changes.subscribe()
    }

    async fn publish_event(&self, event: &ActionEvent) -> Result<(), KubeError> {
        let reference = match &event.node {
            // The node's uid lets `kubectl describe node` show the Event; a node already gone
            // still gets it, by name.
            Some(name) => {
                let found = Api::<Node>::all(self.client.clone()).get_opt(name).await;
                match found {
                    Ok(Some(node)) => node.object_ref(&()),
                    other => {
                        if let Err(e) = other {
                            warn!(node = %name, error = %e, "cannot read the node for its Event");
                        }
                        ObjectReference {
                            api_version: Some("v1".into()),
                            kind: Some("Node".into()),
                            name: Some(name.clone()),
                            ..ObjectReference::default()
                        }
                    }
                }
            }
            None => {
                let found = Api::<Namespace>::all(self.client.clone())
                    .get_opt(&self.home_namespace)
                    .await;
                let mut reference = match found {
                    Ok(Some(ns)) => ns.object_ref(&()),
                    other => {
                        if let Err(e) = other {
                            warn!(namespace = %self.home_namespace, error = %e, "cannot read the namespace for its Event");
                        }
                        ObjectReference {
                            api_version: Some("v1".into()),
                            kind: Some("Namespace".into()),
                            name: Some(self.home_namespace.clone()),
                            ..ObjectReference::default()
                        }
                    }
                };
                // The recorder files an Event in its object's namespace; a Namespace has none,
                // so pool-wide Events would land in `default` instead of kubescaler's own.
                reference.namespace = Some(self.home_namespace.clone());
                reference
            }
        };
        let kube_event = KubeEvent {
            type_: match event.reason {
                EventReason::DeleteCancelled
                | EventReason::DeleteFailed
                | EventReason::PoolMismatch => EventType::Warning,
                _ => EventType::Normal,
            },
            reason: event.reason.as_str().into(),
            // The Events API caps the note at 1 kB.
            note: Some(event.message.chars().take(1000).collect()),
            action: event.reason.as_str().into(),
            secondary: None,
        };
        self.recorder
            .publish(&kube_event, &reference)
            .await
            .map_err(|e| KubeError::Api {
                op: format!("record event {}", event.reason.as_str()),
                source: Box::new(e),
            })
    }

    fn synced(&self) -> bool {
        self.is_synced()
    }
}

/// Builds the client configuration (see [`KubeCluster::connect`]).
pub(crate) async fn client_config(
    master_url: Option<&str>,
    kubeconfig_path: Option<&std::path::Path>,
) -> Result<kube::Config, KubeError> {
    if master_url.is_none()
        && kubeconfig_path.is_none()
        && std::env::var_os("KUBERNETES_SERVICE_HOST").is_some()
    {
        return kube::Config::incluster()
            .map_err(|e| KubeError::Client(format!("in-cluster configuration: {e}")));
    }
    let options = KubeConfigOptions::default();
    let loaded = match kubeconfig_path {
        Some(path) => {
            let kubeconfig = Kubeconfig::read_from(path).map_err(|e| {
                KubeError::Client(format!("reading kubeconfig {}: {e}", path.display()))
            })?;
            kube::Config::from_custom_kubeconfig(kubeconfig, &options)
                .await
                .map_err(|e| KubeError::Client(format!("kubeconfig {}: {e}", path.display())))
        }
        None => kube::Config::from_kubeconfig(&options).await.map_err(|e| {
            KubeError::Client(format!("kubeconfig from KUBECONFIG or ~/.kube/config: {e}"))
        }),
    };
    let Some(url) = master_url else {
        return loaded;
    };
    let uri = url
        .parse()
        .map_err(|e| KubeError::Client(format!("master URL {url:?}: {e}")))?;
    match loaded {
        Ok(mut config) => {
            config.cluster_url = uri;
            Ok(config)
        }
        // An explicit kubeconfig path that fails is an error; with only a master URL, no
        // kubeconfig is fine (the Go client did the same).
        Err(e) if kubeconfig_path.is_none() => {
            warn!(
                server = url,
                reason = %e,
                "no usable kubeconfig; connecting to the master URL without credentials"
            );
            Ok(kube::Config::new(uri))
        }
        Err(e) => Err(e),
    }
}

/// Locks the index. A panic while holding the lock cannot leave it half-updated in a way a
/// reader could misuse (every update is a single map operation or a swap), so poisoning is
/// ignored rather than propagated as a panic.
fn lock(index: &Mutex<ClusterIndex>) -> MutexGuard<'_, ClusterIndex> {
    index.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Why a watch stream yielded no event.
#[derive(Debug, thiserror::Error)]
enum WatchFailure {
    /// The watcher reported an error (list, watch start, watch stream, or an API status).
    #[error(transparent)]
    Watcher(#[from] watcher::Error),
    /// The watcher stream ended, which kube's watcher never does; handled like an error.
    #[error("watch stream ended")]
    Ended,
}

type WatchItem<K> = Result<Event<K>, WatchFailure>;

/// State of [`relisting_watcher`].
struct Relisting<K: 'static> {
    api: Api<K>,
    config: watcher::Config,
    /// The running watcher; `None` after a failure, so the next poll starts a fresh one.
    current: Option<BoxStream<'static, Result<Event<K>, watcher::Error>>>,
    /// An event read ahead while holding back an `Init`.
    pending: Option<WatchItem<K>>,
}

/// A watcher that starts over with a full list after every error.
///
/// kube's watcher resumes from the last resourceVersion after most errors, without a relist;
/// a cache marked stale on error would then never see the `InitDone` that marks it synced
/// again. Restarting forces that relist. The caller's backoff paces the restarts: it delays
/// the poll after an error, which is the one that creates the fresh watcher.
///
/// A fresh watcher's `Init` comes before its list request, and a backoff resets on every
/// success, so passing `Init` on at once would reset the backoff before each failing list
/// and keep retries at the initial delay while the API server is down. `Init` is therefore
/// held back until the list has answered: a failure then replaces it.
fn relisting_watcher<K>(
    api: Api<K>,
    config: watcher::Config,
) -> impl Stream<Item = WatchItem<K>> + Send
where
    K: Resource + Clone + DeserializeOwned + Debug + Send + 'static,
{
    let state = Relisting {
        api,
        config,
        current: None,
        pending: None,
    };
    futures::stream::unfold(state, |mut st| async move {
        if let Some(item) = st.pending.take() {
            return Some((item, st));
        }
        let mut stream = match st.current.take() {
            Some(stream) => stream,
            None => watcher(st.api.clone(), st.config.clone()).boxed(),
        };
        let item = next_item(&mut stream).await;
        let item = match item {
            Ok(Event::Init) => match next_item(&mut stream).await {
                Ok(next) => {
                    st.pending = Some(Ok(next));
                    Ok(Event::Init)
                }
                Err(e) => Err(e),
            },
            other => other,
        };
        if item.is_ok() {
            st.current = Some(stream);
        }
        Some((item, st))
    })
}

/// The next event of a watcher stream; its end counts as a failure.
async fn next_item<K>(
    stream: &mut BoxStream<'static, Result<Event<K>, watcher::Error>>,
) -> WatchItem<K> {
    match stream.next().await {
        Some(Ok(event)) => Ok(event),
        Some(Err(e)) => Err(WatchFailure::Watcher(e)),
        None => Err(WatchFailure::Ended),
    }
}

/// Feeds one watch into the index until the task is aborted; never returns on its own.
async fn run_watch<K>(
    resource: &'static str,
    api: Api<K>,
    config: watcher::Config,
    index: Arc<Mutex<ClusterIndex>>,
    changes: broadcast::Sender<ChangeEvent>,
    apply: fn(&mut ClusterIndex, Event<K>) -> Vec<ChangeEvent>,
    desync: fn(&mut ClusterIndex, String),
) where
    K: Resource + Clone + DeserializeOwned + Debug + Send + 'static,
{
    let stream = relisting_watcher(api, config).default_backoff();
    let mut stream = std::pin::pin!(stream);
    while let Some(item) = stream.next().await {
        match item {
            Ok(event) => {
                let done = matches!(event, Event::InitDone);
                let (events, (nodes, pods), all_synced) = {
                    let mut idx = lock(&index);
                    let events = apply(&mut idx, event);
                    (events, idx.counts(), idx.is_synced())
                };
                if done {
                    info!(resource, nodes, pods, all_synced, "watch cache (re)listed");
                }
                for event in events {
                    // No receiver is not an error: nobody is waiting for changes yet.
                    let _ = changes.send(event);
                }
            }
            Err(err) => {
                warn!(
                    resource,
                    error = %err,
                    "watch failed; snapshots are refused until a full relist completes (retrying with backoff)"
                );
                desync(&mut lock(&index), err.to_string());
            }
        }
    }
    error!(
        resource,
        "watch stream ended unexpectedly; the cache stays stale"
    );
}

fn api_error(op: String, err: kube::Error) -> KubeError {
    KubeError::Api {
        op,
        source: Box::new(err),
    }
}

/// Field selector of the live server pod check: bound to `node` and not terminal.
fn live_pods_field_selector(node: &str) -> String {
    format!("spec.nodeName={node},{NON_TERMINAL_PODS}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn live_pod_check_selects_the_node_and_excludes_terminal_pods() {
        assert_eq!(
            live_pods_field_selector("n1"),
            "spec.nodeName=n1,status.phase!=Succeeded,status.phase!=Failed"
        );
    }

    #[tokio::test]
    async fn explicit_kubeconfig_path_that_does_not_exist_is_a_client_error() {
        let err = client_config(None, Some(std::path::Path::new("/nonexistent/kubeconfig")))
            .await
            .unwrap_err();
        assert!(
            matches!(&err, KubeError::Client(m) if m.contains("/nonexistent/kubeconfig")),
            "{err}"
        );
    }

    #[tokio::test]
    async fn master_url_overrides_the_kubeconfig_server() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("kubeconfig");
        std::fs::write(
            &path,
            "apiVersion: v1\nkind: Config\ncurrent-context: c\n\
             clusters:\n- name: k\n  cluster:\n    server: https://from-file.example:6443\n\
             contexts:\n- name: c\n  context:\n    cluster: k\n    user: u\n\
             users:\n- name: u\n  user:\n    token: t\n",
        )
        .unwrap();
        let plain = client_config(None, Some(&path)).await.unwrap();
        assert_eq!(
            plain.cluster_url.to_string(),
            "https://from-file.example:6443/"
        );
        let overridden = client_config(Some("https://override.example:8443"), Some(&path))
            .await
            .unwrap();
        assert_eq!(
            overridden.cluster_url.to_string(),
            "https://override.example:8443/"
        );
    }
}
