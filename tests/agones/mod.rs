//! A stand-in for the Agones controller in end-to-end tests, on Agones' real CRDs
//! (`../shared/agones/agones-crds.yaml`, installed by [`install_crds`]).
//!
//! No Agones controller runs in the local control plane, so [`AgonesStandIn`] plays its part
//! for one Fleet: it keeps the Fleet's replica count like a GameServerSet (creating each
//! GameServer and its Pod, moving it Creating -> Scheduled -> Ready as the pod is bound),
//! replaces GameServers that are deleted (by anyone: kubescaler's compaction, a match's end),
//! and plays GameServerAllocations ([`AgonesStandIn::allocate`]). It also watches for what
//! must never happen: a live match lost because its GameServer, pod or node went away under
//! it ([`AgonesStandIn::lost_matches`]).
//!
//! Facts of the Agones behaviour played (from its docs and source, see the README beside the
//! CRDs): the GameServer CRD has no status subresource, so every state change is an update of
//! the whole object carrying the resourceVersion it was read at; allocation is such an update
//! (so it and a delete with a resourceVersion precondition cannot both win); Packed allocation
//! prefers the nodes with the most Allocated GameServers and ignores cordons; a GameServerSet
//! counts Allocated and Reserved GameServers toward its replicas and never removes them when
//! scaling down, removing first the ones without a node, then those on the least full nodes
//! (Allocated + Ready), pre-Ready before Ready on one node; it scales down by setting Shutdown,
//! then the GameServer is deleted.
//!
//! The control plane has no garbage collector and no kubelets: the stand-in deletes the pod of
//! every GameServer that goes (grace period 0), and a pod bound to a deleted node stays.
//!
//! Include it next to `tests/cluster` (`mod cluster; mod agones;`): it uses that module's
//! constants and [`eventually`].
#![allow(dead_code)]

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use futures::FutureExt;
use k8s_openapi::api::core::v1::{Node, Pod};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::core::DynamicObject;
use kube::Client;
use kubescaler::agones::{
    game_server_info, game_server_resource, GameServerState, FLEET_LABEL, GAMESERVER_LABEL,
    ROLE_GAMESERVER, ROLE_LABEL,
};
use serde_json::json;
use tokio::sync::{Notify, RwLock};
use tokio::task::JoinHandle;

use crate::cluster::cloud::{NAMESPACE, POOL_LABEL, SERVER_CPU, WAIT};
use crate::cluster::eventually;

/// Field manager of the CRD installs.
const CRD_MANAGER: &str = "kubescaler-e2e";
/// Image of every pod: never pulled, since no kubelet runs.
const IMAGE: &str = "registry.invalid/never-pulled:1";
/// Rounds of "list, try every candidate" an allocation makes before giving up.
const ALLOCATE_ROUNDS: usize = 20;

/// Installs every CustomResourceDefinition of `path` and waits until each is Established;
/// returns their names.
///
/// Idempotent and safe to call from many tests at once on one API server: a server-side apply
/// with `force` under one field manager, so identical concurrent applies converge instead of
/// conflicting; a transient refusal is retried.
pub async fn install_crds(client: &Client, path: &Path) -> Vec<String> {
    let text =
        std::fs::read_to_string(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    let api: Api<CustomResourceDefinition> = Api::all(client.clone());
    let params = PatchParams::apply(CRD_MANAGER).force();
    let mut names = Vec::new();
    for doc in serde_yaml::Deserializer::from_str(&text) {
        let value: serde_json::Value = serde::Deserialize::deserialize(doc)
            .unwrap_or_else(|e| panic!("a document of {}: {e}", path.display()));
        if value.get("kind").and_then(|k| k.as_str()) != Some("CustomResourceDefinition") {
            continue;
        }
        let name = value["metadata"]["name"]
            .as_str()
            .unwrap_or_else(|| panic!("a CRD without a name in {}", path.display()))
            .to_string();
        let mut attempt = 0;
        loop {
            attempt += 1;
            match api.patch(&name, &params, &Patch::Apply(&value)).await {
                Ok(_) => break,
                Err(e) if attempt < 10 && transient(&e) => {
                    eprintln!("apply CRD {name}: {e}; retrying");
                    tokio::time::sleep(Duration::from_millis(300)).await;
                }
                Err(e) => panic!("apply CRD {name}: {e}"),
            }
        }
        names.push(name);
    }
    for name in &names {
        eventually(&format!("CRD {name} Established"), WAIT, || async {
            let crd = api.get_opt(name).await.ok()??;
            crd.status?
                .conditions?
                .iter()
                .any(|c| c.type_ == "Established" && c.status == "True")
                .then_some(())
        })
        .await;
    }
    names
}

/// A refusal worth retrying: a conflict, throttling, a server error or no answer.
fn transient(e: &kube::Error) -> bool {
    match e {
        kube::Error::Api(s) => s.code == 409 || s.code == 429 || s.code >= 500,
        _ => true,
    }
}

/// A 404 or a 409: the object went or changed since it was read (a race, not a failure).
fn raced(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == 404 || s.code == 409)
}

/// How an [`AgonesStandIn`] is set up. Build with [`Options::new`] and the setters.
#[derive(Clone, Debug)]
pub struct Options {
    /// Namespace of its GameServers and pods ([`NAMESPACE`] by default).
    pub namespace: String,
    /// The Fleet: label `agones.dev/fleet` of its GameServers (and of their pods), name prefix.
    pub fleet: String,
    /// The pool: pods get the node selector `POOL_LABEL=<pool>`.
    pub pool: String,
    /// CPU request of each pod ([`SERVER_CPU`] by default).
    pub server_cpu: String,
    /// One more label of each pod (a test's server label), if any.
    pub server_label: Option<(String, String)>,
    /// Time from Scheduled to Ready (0 by default).
    pub ready_delay: Duration,
    /// Longest pause between reconcile passes (200 ms by default; a change the stand-in makes
    /// itself wakes it at once).
    pub tick: Duration,
}

impl Options {
    /// Fleet `fleet` in [`NAMESPACE`], its pods on the nodes of pool `pool`.
    pub fn new(fleet: &str, pool: &str) -> Self {
        Options {
            namespace: NAMESPACE.to_string(),
            fleet: fleet.to_string(),
            pool: pool.to_string(),
            server_cpu: SERVER_CPU.to_string(),
            server_label: None,
            ready_delay: Duration::ZERO,
            tick: Duration::from_millis(200),
        }
    }

    /// Puts the GameServers and pods in `namespace`.
    pub fn namespace(mut self, namespace: &str) -> Self {
        self.namespace = namespace.to_string();
        self
    }

    /// Adds the label `key=value` to every pod (e.g. `SERVER_LABEL=<pool id>`).
    pub fn server_label(mut self, key: &str, value: &str) -> Self {
        self.server_label = Some((key.to_string(), value.to_string()));
        self
    }

    /// Makes each pod request `cpu` (a quantity).
    pub fn server_cpu(mut self, cpu: &str) -> Self {
        self.server_cpu = cpu.to_string();
        self
    }

    /// Makes a Scheduled GameServer wait `delay` before Ready (a game server booting).
    pub fn ready_delay(mut self, delay: Duration) -> Self {
        self.ready_delay = delay;
        self
    }
}

/// One GameServer as the API server has it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GameServerView {
    /// Its name (also its pod's).
    pub name: String,
    /// `status.state`.
    pub state: GameServerState,
    /// `status.nodeName`.
    pub node: Option<String>,
    /// `metadata.resourceVersion`.
    pub resource_version: Option<String>,
}

/// A won allocation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Allocation {
    /// The GameServer now Allocated.
    pub name: String,
    /// Its node.
    pub node: String,
}

/// The answer to [`AgonesStandIn::allocate_named`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum NamedAllocation {
    /// It was Ready at that resourceVersion and is now Allocated.
    Allocated(Allocation),
    /// 409 Conflict: it changed since that resourceVersion; nothing was written.
    Conflict,
    /// 404: it is gone (a delete won).
    Gone,
    /// At that very resourceVersion it is in this state, not Ready: an allocator would not
    /// have picked it.
    NotReady(GameServerState),
}

/// A GameServer that lost its GameServer object, pod or node while it was not leaving.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Lost {
    /// The GameServer.
    pub name: String,
    /// Its state when lost (Allocated or Reserved: a live match lost).
    pub state: GameServerState,
    /// Its node, if it had one.
    pub node: Option<String>,
    /// What went.
    pub why: &'static str,
}

/// A GameServer deleted by someone other than the stand-in (kubescaler, a test).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ForeignDelete {
    /// The GameServer.
    pub name: String,
    /// Its state when last seen.
    pub state: GameServerState,
    /// Its node when last seen.
    pub node: Option<String>,
}

/// A GameServer that counts toward the replicas, as last written by a pass.
struct Counted {
    state: GameServerState,
    node: Option<String>,
    object: DynamicObject,
}

/// What the stand-in remembers between passes.
#[derive(Default)]
struct Book {
    replicas: u32,
    /// Every GameServer of the Fleet seen and not yet seen gone: last seen state and node.
    known: BTreeMap<String, (GameServerState, Option<String>)>,
    /// GameServers it allocated whose match has not ended: their disappearance is a lost match
    /// even if no pass saw them Allocated.
    allocated: BTreeSet<String>,
    /// GameServers it deleted itself (so their disappearance is not someone else's doing).
    own_deletes: BTreeSet<String>,
    scheduled_at: BTreeMap<String, Instant>,
    lost: Vec<Lost>,
    foreign: Vec<ForeignDelete>,
    conflicts: u64,
    passes: u64,
    last_error: Option<String>,
}

struct Inner {
    opts: Options,
    game_servers: Api<DynamicObject>,
    pods: Api<Pod>,
    nodes: Api<Node>,
    book: Mutex<Book>,
    /// Allocations share it; a reconcile pass and a match's end take it alone, so a pass never
    /// judges a GameServer halfway through an allocation (which could make a fresh allocation
    /// look like a deleted Ready server) or through a match's end (a pod deleted on purpose).
    turn: RwLock<()>,
    /// Wakes the loop before its tick (new replicas, a match ended).
    wake: Notify,
}

/// The Agones controller's part for one Fleet in one namespace, run by a tokio task.
///
/// One per test: everything it lists is selected by its Fleet label (GameServers, pods) or its
/// pool label (nodes), so parallel tests never see each other's objects. Dropping it stops
/// the task; [`AgonesStandIn::cleanup`] also deletes its objects.
pub struct AgonesStandIn {
    inner: Arc<Inner>,
    task: JoinHandle<()>,
    stopped: AtomicBool,
}

impl Drop for AgonesStandIn {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl AgonesStandIn {
    /// Starts the stand-in with 0 replicas.
    pub fn start(client: Client, opts: Options) -> Self {
        let inner = Arc::new(Inner {
            game_servers: Api::namespaced_with(
                client.clone(),
                &opts.namespace,
                &game_server_resource(),
            ),
            pods: Api::namespaced(client.clone(), &opts.namespace),
            nodes: Api::all(client),
            opts,
            book: Mutex::default(),
            turn: RwLock::new(()),
            wake: Notify::new(),
        });
        let looping = Arc::clone(&inner);
        let task = tokio::spawn(async move {
            loop {
                if let Err(e) = looping.pass().await {
                    looping.note_error("reconcile pass", &e);
                }
                looping.book().passes += 1;
                let tick = looping.opts.tick;
                let _ = tokio::time::timeout(tick, looping.wake.notified()).await;
            }
        });
        AgonesStandIn {
            inner,
            task,
            stopped: AtomicBool::new(false),
        }
    }

    /// The Fleet's name.
    pub fn fleet(&self) -> &str {
        &self.inner.opts.fleet
    }

    /// Sets the Fleet's replicas (Allocated and Reserved ones count, and are never removed).
    pub fn set_replicas(&self, n: u32) {
        self.check_alive();
        self.inner.book().replicas = n;
        self.inner.wake.notify_one();
    }

    /// The Fleet's replicas as last set.
    pub fn replicas(&self) -> u32 {
        self.inner.book().replicas
    }

    /// Plays a GameServerAllocation with the Packed rule: a Ready GameServer on the node with
    /// the most Allocated GameServers of the Fleet (ties: node name, then GameServer name),
    /// cordons ignored, updated to Allocated at the resourceVersion read; on a 409 or 404 (it
    /// changed or went meanwhile) the next candidate. `None` if no GameServer is Ready.
    pub async fn allocate(&self) -> Option<Allocation> {
        self.check_alive();
        let inner = &self.inner;
        for _ in 0..ALLOCATE_ROUNDS {
            let _turn = inner.turn.read().await;
            let listed = inner
                .game_servers
                .list(&inner.fleet_selector())
                .await
                .unwrap_or_else(|e| panic!("allocate in fleet {}: list: {e}", self.fleet()));
            let nodes = inner
                .pool_nodes()
                .await
                .unwrap_or_else(|e| panic!("allocate in fleet {}: list nodes: {e}", self.fleet()));
            let mut allocated_on: BTreeMap<String, usize> = BTreeMap::new();
            let mut ready = Vec::new();
            for gs in &listed.items {
                let Some(info) = game_server_info(gs) else {
                    continue;
                };
                let Some(node) = info.node.clone().filter(|n| nodes.contains(n)) else {
                    continue;
                };
                if info.being_deleted {
                    continue;
                }
                if info.state == GameServerState::Allocated {
                    *allocated_on.entry(node).or_default() += 1;
                } else if info.state == GameServerState::Ready {
                    ready.push((node, gs));
                }
            }
            if ready.is_empty() {
                return None;
            }
            let most_allocated =
                |node: &String| std::cmp::Reverse(allocated_on.get(node).copied().unwrap_or(0));
            ready.sort_by(|(na, a), (nb, b)| {
                (most_allocated(na), na, &a.metadata.name).cmp(&(
                    most_allocated(nb),
                    nb,
                    &b.metadata.name,
                ))
            });
            for (node, gs) in ready {
                let name = gs.metadata.name.clone().unwrap_or_default();
                match inner.set_state(gs, GameServerState::Allocated, None).await {
                    Ok(_) => {
                        inner.book().allocated.insert(name.clone());
                        return Some(Allocation { name, node });
                    }
                    Err(e) if raced(&e) => inner.book().conflicts += 1,
                    Err(e) => panic!("allocate GameServer {name}: {e}"),
                }
            }
            // Every candidate changed under us: read them again.
        }
        panic!(
            "allocate in fleet {}: still conflicting after {ALLOCATE_ROUNDS} rounds",
            self.fleet()
        );
    }

    /// Plays an allocation of `name` by an allocator that read it Ready at `resource_version`
    /// (possibly stale): the update it would send, carrying that resourceVersion. Lets a test
    /// race an allocation against a delete with a resourceVersion precondition.
    pub async fn allocate_named(&self, name: &str, resource_version: &str) -> NamedAllocation {
        self.check_alive();
        let inner = &self.inner;
        let _turn = inner.turn.read().await;
        let current = match inner.game_servers.get_opt(name).await {
            Ok(Some(gs)) => gs,
            Ok(None) => return NamedAllocation::Gone,
            Err(e) => panic!("allocate_named: get GameServer {name}: {e}"),
        };
        let state = game_server_info(&current).map_or(GameServerState::Unknown, |i| i.state);
        let same_version = current.metadata.resource_version.as_deref() == Some(resource_version);
        if same_version && state != GameServerState::Ready {
            return NamedAllocation::NotReady(state);
        }
        let mut request = current;
        request.metadata.resource_version = Some(resource_version.to_string());
        match inner
            .set_state(&request, GameServerState::Allocated, None)
            .await
        {
            Ok(written) => {
                let node = game_server_info(&written)
                    .and_then(|i| i.node)
                    .unwrap_or_else(|| panic!("allocated GameServer {name} has no node"));
                inner.book().allocated.insert(name.to_string());
                NamedAllocation::Allocated(Allocation {
                    name: name.to_string(),
                    node,
                })
            }
            Err(kube::Error::Api(s)) if s.code == 409 => NamedAllocation::Conflict,
            Err(kube::Error::Api(s)) if s.code == 404 => NamedAllocation::Gone,
            Err(e) => panic!("allocate_named: update GameServer {name}: {e}"),
        }
    }

    /// Ends the match of `name`: sets Shutdown, then deletes the GameServer and its pod (the
    /// replica loop replaces it). `false` if the GameServer was already gone (if it was
    /// Allocated, that is a lost match, reported by [`AgonesStandIn::lost_matches`]).
    pub async fn end_match(&self, name: &str) -> bool {
        self.check_alive();
        let inner = &self.inner;
        let _turn = inner.turn.write().await;
        let mut attempt = 0;
        loop {
            attempt += 1;
            let gs = match inner.game_servers.get_opt(name).await {
                Ok(Some(gs)) => gs,
                // Left in `allocated`: the next pass tells whether a match was lost.
                Ok(None) => return false,
                Err(e) => panic!("end_match: get GameServer {name}: {e}"),
            };
            match inner.set_state(&gs, GameServerState::Shutdown, None).await {
                Ok(_) => break,
                Err(e) if raced(&e) && attempt < 5 => {}
                Err(kube::Error::Api(s)) if s.code == 404 => return false,
                Err(e) => panic!("end_match: set GameServer {name} Shutdown: {e}"),
            }
        }
        inner.retire(name).await;
        inner.wake.notify_one();
        true
    }

    /// The Fleet's GameServers, by name.
    pub async fn game_servers(&self) -> Vec<GameServerView> {
        self.check_alive();
        let list = self
            .inner
            .game_servers
            .list(&self.inner.fleet_selector())
            .await
            .unwrap_or_else(|e| panic!("list GameServers of fleet {}: {e}", self.fleet()));
        let mut views: Vec<GameServerView> = list
            .items
            .iter()
            .filter_map(|gs| {
                let info = game_server_info(gs)?;
                Some(GameServerView {
                    name: gs.metadata.name.clone()?,
                    state: info.state,
                    node: info.node,
                    resource_version: info.resource_version,
                })
            })
            .collect();
        views.sort_by(|a, b| a.name.cmp(&b.name));
        views
    }

    /// How many of the Fleet's GameServers are in each state (absent: none).
    pub async fn counts(&self) -> BTreeMap<GameServerState, usize> {
        let mut counts = BTreeMap::new();
        for gs in self.game_servers().await {
            *counts.entry(gs.state).or_default() += 1;
        }
        counts
    }

    /// How many of the Fleet's GameServers are in `state`.
    pub async fn count(&self, state: GameServerState) -> usize {
        self.counts().await.get(&state).copied().unwrap_or(0)
    }

    /// Waits (up to [`WAIT`]) until exactly `n` GameServers are in `state`; returns them all.
    pub async fn wait_state(&self, state: GameServerState, n: usize) -> Vec<GameServerView> {
        let what = format!("{n} {state:?} GameServers in fleet {}", self.fleet());
        eventually(&what, WAIT, || async {
            let all = self.game_servers().await;
            (all.iter().filter(|g| g.state == state).count() == n).then_some(all)
        })
        .await
    }

    /// Live matches lost: GameServers that were Allocated (or Reserved) when their GameServer
    /// object, pod or node went. Must stay empty: the "0 Allocated on a deleted node" proof.
    pub fn lost_matches(&self) -> Vec<Lost> {
        self.check_alive();
        let book = self.inner.book();
        book.lost
            .iter()
            .filter(|l| l.state.is_live_match())
            .cloned()
            .collect()
    }

    /// Every GameServer, of any non-leaving state, whose pod or node went under it (or that
    /// was deleted while Allocated); a superset of [`AgonesStandIn::lost_matches`].
    pub fn lost_servers(&self) -> Vec<Lost> {
        self.check_alive();
        self.inner.book().lost.clone()
    }

    /// Ready GameServers deleted by someone other than the stand-in (compaction), in order.
    pub fn compacted(&self) -> Vec<String> {
        self.deleted_by_others()
            .into_iter()
            .filter(|d| d.state == GameServerState::Ready)
            .map(|d| d.name)
            .collect()
    }

    /// Every GameServer deleted by someone other than the stand-in while not allocated by it.
    pub fn deleted_by_others(&self) -> Vec<ForeignDelete> {
        self.check_alive();
        self.inner.book().foreign.clone()
    }

    /// Allocation updates refused with 409/404 so far (each followed by another candidate).
    pub fn allocation_conflicts(&self) -> u64 {
        self.inner.book().conflicts
    }

    /// Reconcile passes made so far.
    pub fn passes(&self) -> u64 {
        self.inner.book().passes
    }

    /// A description for failure messages.
    pub async fn dump(&self) -> String {
        let mut out = String::new();
        {
            let book = self.inner.book();
            let _ = writeln!(
                out,
                "agones stand-in of fleet {}: replicas {}, passes {}, last error {:?}",
                self.fleet(),
                book.replicas,
                book.passes,
                book.last_error
            );
            let _ = writeln!(out, "  lost: {:?}", book.lost);
            let _ = writeln!(out, "  deleted by others: {:?}", book.foreign);
            let _ = writeln!(out, "  allocated by it: {:?}", book.allocated);
        }
        match self
            .inner
            .game_servers
            .list(&self.inner.fleet_selector())
            .await
        {
            Ok(list) => {
                for gs in list.items.iter().filter_map(game_server_info) {
                    let _ = writeln!(
                        out,
                        "  GameServer {}: {:?} on {:?}",
                        gs.key, gs.state, gs.node
                    );
                }
            }
            Err(e) => {
                let _ = writeln!(out, "  (list GameServers: {e})");
            }
        }
        out
    }

    /// Stops the task (at once; a pass in flight is abandoned).
    pub fn stop(&self) {
        self.stopped.store(true, Ordering::Relaxed);
        self.task.abort();
    }

    /// Stops the task, then deletes the Fleet's GameServers and pods. Errors are reported, not
    /// fatal.
    pub async fn cleanup(&self) {
        self.stop();
        let inner = &self.inner;
        let now = DeleteParams {
            grace_period_seconds: Some(0),
            ..Default::default()
        };
        if let Err(e) = inner
            .game_servers
            .delete_collection(&now, &inner.fleet_selector())
            .await
        {
            eprintln!("cleanup fleet {}: delete GameServers: {e}", self.fleet());
        }
        if let Err(e) = inner
            .pods
            .delete_collection(&now, &inner.pod_selector())
            .await
        {
            eprintln!("cleanup fleet {}: delete pods: {e}", self.fleet());
        }
    }

    /// Runs `body`, then [`AgonesStandIn::cleanup`] whatever happened (printing
    /// [`AgonesStandIn::dump`] first if `body` failed), then re-raises a failure of `body`.
    pub async fn run<Fut: Future<Output = ()>>(&self, body: Fut) {
        let outcome = AssertUnwindSafe(body).catch_unwind().await;
        if outcome.is_err() {
            eprintln!("test failed; {}", self.dump().await);
        }
        self.cleanup().await;
        if let Err(panic) = outcome {
            std::panic::resume_unwind(panic);
        }
    }

    /// Panics if the task ended on its own: it loops forever, so it panicked, and every
    /// wait would otherwise time out without saying why.
    fn check_alive(&self) {
        if self.task.is_finished() && !self.stopped.load(Ordering::Relaxed) {
            panic!(
                "the Agones stand-in of fleet {} died (a panic in its task; see above)",
                self.fleet()
            );
        }
    }
}

impl Inner {
    fn book(&self) -> MutexGuard<'_, Book> {
        self.book.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn fleet_selector(&self) -> ListParams {
        ListParams::default().labels(&format!("{FLEET_LABEL}={}", self.opts.fleet))
    }

    /// The Fleet's pods: they carry the Fleet label through the GameServer's pod template.
    fn pod_selector(&self) -> ListParams {
        ListParams::default().labels(&format!(
            "{ROLE_LABEL}={ROLE_GAMESERVER},{FLEET_LABEL}={}",
            self.opts.fleet
        ))
    }

    async fn pool_nodes(&self) -> Result<BTreeSet<String>, kube::Error> {
        let params = ListParams::default().labels(&format!("{POOL_LABEL}={}", self.opts.pool));
        Ok(self
            .nodes
            .list(&params)
            .await?
            .items
            .into_iter()
            .filter_map(|n| n.metadata.name)
            .collect())
    }

    fn note_error(&self, what: &str, e: &kube::Error) {
        let said = format!("agones stand-in {}: {what}: {e}", self.opts.fleet);
        eprintln!("{said}");
        self.book().last_error = Some(said);
    }

    /// Writes `state` (and `node`) into `gs` as read: a whole-object update carrying its
    /// resourceVersion, since the CRD has no status subresource.
    async fn set_state(
        &self,
        gs: &DynamicObject,
        state: GameServerState,
        node: Option<&str>,
    ) -> Result<DynamicObject, kube::Error> {
        let name = gs.metadata.name.clone().unwrap_or_default();
        let mut next = gs.clone();
        if !next.data["status"].is_object() {
            next.data["status"] = json!({});
        }
        // The variants are named as the CRD's enum values.
        next.data["status"]["state"] = json!(format!("{state:?}"));
        if let Some(node) = node {
            next.data["status"]["nodeName"] = json!(node);
        }
        self.game_servers
            .replace(&name, &PostParams::default(), &next)
            .await
    }

    /// One reconcile pass: account for what went, move states, keep the replica count.
    async fn pass(&self) -> Result<(), kube::Error> {
        let _turn = self.turn.write().await;
        // GameServers first, nodes last: a node a listed pod is bound to is then either in
        // the node list or really deleted.
        let servers: BTreeMap<String, DynamicObject> = self
            .game_servers
            .list(&self.fleet_selector())
            .await?
            .items
            .into_iter()
            .filter_map(|gs| Some((gs.metadata.name.clone()?, gs)))
            .collect();
        let pods: BTreeMap<String, Pod> = self
            .pods
            .list(&self.pod_selector())
            .await?
            .items
            .into_iter()
            .filter_map(|p| {
                let gs = p.metadata.labels.as_ref()?.get(GAMESERVER_LABEL)?.clone();
                Some((gs, p))
            })
            .collect();
        let nodes = self.pool_nodes().await?;

        self.note_vanished(&servers);
        // The garbage collector's part: a pod whose GameServer is gone.
        for name in pods.keys().filter(|n| !servers.contains_key(*n)) {
            self.delete_pod(name).await;
        }

        let mut up = Vec::new();
        for (name, gs) in &servers {
            let Some(info) = game_server_info(gs) else {
                continue;
            };
            if info.being_deleted || self.book().own_deletes.contains(name) {
                continue;
            }
            if info.state.is_leaving() {
                // Shutdown (a match's end, a scale-down), Error, Unhealthy: Agones deletes it.
                self.retire(name).await;
                continue;
            }
            let pod = pods.get(name);
            let pod_node = pod.and_then(|p| p.spec.as_ref()?.node_name.clone());
            let node = info.node.clone().or_else(|| pod_node.clone());
            if let Some(n) = node.as_ref().filter(|n| !nodes.contains(*n)) {
                self.lose(name, info.state, Some(n.clone()), "its node was deleted");
                self.retire(name).await;
                continue;
            }
            let before_scheduled = matches!(
                info.state,
                GameServerState::PortAllocation
                    | GameServerState::Creating
                    | GameServerState::Starting
                    | GameServerState::Unknown
            );
            if pod.is_none() {
                if before_scheduled {
                    self.create_pod(gs).await;
                } else {
                    // Agones marks it Unhealthy and replaces it.
                    self.lose(name, info.state, node, "its pod was deleted");
                    self.retire(name).await;
                    continue;
                }
            }
            let (mut state, mut current) = (info.state, gs.clone());
            if let (true, Some(n)) = (before_scheduled, &pod_node) {
                match self
                    .set_state(&current, GameServerState::Scheduled, Some(n))
                    .await
                {
                    Ok(written) => {
                        (state, current) = (GameServerState::Scheduled, written);
                        self.book()
                            .scheduled_at
                            .insert(name.clone(), Instant::now());
                    }
                    Err(e) if raced(&e) => {}
                    Err(e) => self.note_error(&format!("schedule {name}"), &e),
                }
            }
            let due = self
                .book()
                .scheduled_at
                .get(name)
                .is_none_or(|at| at.elapsed() >= self.opts.ready_delay);
            if state == GameServerState::Scheduled && due {
                match self.set_state(&current, GameServerState::Ready, None).await {
                    Ok(written) => (state, current) = (GameServerState::Ready, written),
                    Err(e) if raced(&e) => {}
                    Err(e) => self.note_error(&format!("make {name} Ready"), &e),
                }
            }
            // What a deletion seen by the next pass is judged by.
            self.book()
                .known
                .insert(name.clone(), (state, node.clone()));
            up.push(Counted {
                state,
                node,
                object: current,
            });
        }
        self.keep_replicas(up).await;
        Ok(())
    }

    /// Accounts for the GameServers seen before and gone now.
    fn note_vanished(&self, servers: &BTreeMap<String, DynamicObject>) {
        let mut book = self.book();
        let gone: Vec<String> = book
            .known
            .keys()
            .filter(|n| !servers.contains_key(*n))
            .cloned()
            .collect();
        for name in gone {
            let Some((state, node)) = book.known.remove(&name) else {
                continue;
            };
            book.scheduled_at.remove(&name);
            if book.own_deletes.contains(&name) {
                continue;
            }
            if book.allocated.remove(&name) {
                book.lost.push(Lost {
                    name,
                    state: GameServerState::Allocated,
                    node,
                    why: "its GameServer was deleted while Allocated",
                });
            } else {
                book.foreign.push(ForeignDelete { name, state, node });
            }
        }
    }

    fn lose(&self, name: &str, state: GameServerState, node: Option<String>, why: &'static str) {
        let mut book = self.book();
        // A GameServer it allocated is a live match whatever state a stale read said.
        let state = if book.allocated.contains(name) {
            GameServerState::Allocated
        } else {
            state
        };
        book.lost.push(Lost {
            name: name.to_string(),
            state,
            node,
            why,
        });
    }

    /// Creates or removes GameServers so that `up` (those counting) matches the replicas.
    async fn keep_replicas(&self, up: Vec<Counted>) {
        let replicas = self.book().replicas as usize;
        if up.len() < replicas {
            for _ in up.len()..replicas {
                if let Err(e) = self.create_game_server().await {
                    self.note_error("create a GameServer", &e);
                }
            }
            return;
        }
        let surplus = up.len() - replicas;
        if surplus == 0 {
            return;
        }
        // Agones' Packed scale-down order: no node first, then the least full nodes
        // (Allocated + Ready there), pre-Ready before Ready; never Allocated or Reserved.
        let mut fill: BTreeMap<&str, usize> = BTreeMap::new();
        for c in &up {
            if let (Some(n), GameServerState::Ready | GameServerState::Allocated) =
                (&c.node, c.state)
            {
                *fill.entry(n).or_default() += 1;
            }
        }
        let mut removable: Vec<&Counted> = up.iter().filter(|c| !c.state.is_live_match()).collect();
        removable.sort_by_key(|c| {
            (
                c.node.is_some(),
                c.node
                    .as_deref()
                    .map_or(0, |n| fill.get(n).copied().unwrap_or(0)),
                c.state == GameServerState::Ready,
                c.object.metadata.name.clone(),
            )
        });
        for c in removable.into_iter().take(surplus) {
            let gs = &c.object;
            let name = gs.metadata.name.clone().unwrap_or_default();
            // At the resourceVersion read: a concurrent allocation wins (409) and it stays.
            match self.set_state(gs, GameServerState::Shutdown, None).await {
                Ok(_) => self.retire(&name).await,
                Err(e) if raced(&e) => {}
                Err(e) => self.note_error(&format!("shut {name} down"), &e),
            }
        }
    }

    /// Creates one GameServer (Creating) and its pod.
    async fn create_game_server(&self) -> Result<(), kube::Error> {
        let fleet = &self.opts.fleet;
        // The pod template's labels are copied to the pod, as Agones does.
        let mut pod_labels = serde_json::Map::new();
        pod_labels.insert(FLEET_LABEL.into(), json!(fleet));
        if let Some((k, v)) = &self.opts.server_label {
            pod_labels.insert(k.clone(), json!(v));
        }
        let object: DynamicObject = serde_json::from_value(json!({
            "apiVersion": "agones.dev/v1",
            "kind": "GameServer",
            "metadata": {
                "generateName": format!("{fleet}-"),
                "namespace": self.opts.namespace,
                "labels": {FLEET_LABEL: fleet},
            },
            "spec": {
                "scheduling": "Packed",
                "template": {
                    "metadata": {"labels": pod_labels},
                    "spec": {"containers": [{"name": "game", "image": IMAGE}]},
                },
            },
            // No status subresource: the state is written with the object.
            "status": {"state": "Creating"},
        }))
        .unwrap_or_else(|e| panic!("a GameServer object: {e}"));
        let created = self
            .game_servers
            .create(&PostParams::default(), &object)
            .await?;
        let name = created.metadata.name.clone().unwrap_or_default();
        self.book()
            .known
            .insert(name, (GameServerState::Creating, None));
        self.create_pod(&created).await;
        Ok(())
    }

    /// Creates the pod of `gs` (named after it, owned by it); an existing one is kept.
    async fn create_pod(&self, gs: &DynamicObject) {
        let name = gs.metadata.name.clone().unwrap_or_default();
        let mut labels: serde_json::Map<String, serde_json::Value> = gs
            .data
            .pointer("/spec/template/metadata/labels")
            .and_then(|l| l.as_object())
            .cloned()
            .unwrap_or_default();
        labels.insert(ROLE_LABEL.into(), json!(ROLE_GAMESERVER));
        labels.insert(GAMESERVER_LABEL.into(), json!(name));
        // Under Agones' default `eviction.safe: Never`.
        labels.insert("agones.dev/safe-to-evict".into(), json!("false"));
        let pod: Pod = serde_json::from_value(json!({
            "metadata": {
                "name": name,
                "namespace": self.opts.namespace,
                "labels": labels,
                "annotations": {"cluster-autoscaler.kubernetes.io/safe-to-evict": "false"},
                "ownerReferences": [{
                    "apiVersion": "agones.dev/v1",
                    "kind": "GameServer",
                    "name": name,
                    "uid": gs.metadata.uid.clone().unwrap_or_default(),
                    "controller": true,
                }],
            },
            "spec": {
                "nodeSelector": {POOL_LABEL: self.opts.pool},
                "terminationGracePeriodSeconds": 0,
                "containers": [{
                    "name": "game",
                    "image": IMAGE,
                    "resources": {"requests": {"cpu": self.opts.server_cpu}},
                }],
            },
        }))
        .unwrap_or_else(|e| panic!("a pod object for {name}: {e}"));
        match self.pods.create(&PostParams::default(), &pod).await {
            Ok(_) => {}
            Err(kube::Error::Api(s)) if s.code == 409 => {}
            Err(e) => self.note_error(&format!("create pod {name}"), &e),
        }
    }

    /// Deletes GameServer `name` and its pod, as the stand-in's own doing.
    async fn retire(&self, name: &str) {
        {
            let mut book = self.book();
            book.own_deletes.insert(name.to_string());
            book.allocated.remove(name);
        }
        match self
            .game_servers
            .delete(name, &DeleteParams::default())
            .await
        {
            Ok(_) => {}
            Err(kube::Error::Api(s)) if s.code == 404 => {}
            Err(e) => {
                // Not deleted: the next pass sees it again and retries.
                self.book().own_deletes.remove(name);
                self.note_error(&format!("delete GameServer {name}"), &e);
                return;
            }
        }
        self.delete_pod(name).await;
    }

    /// Deletes the pod `name` at once (grace period 0: no kubelet would confirm it).
    async fn delete_pod(&self, name: &str) {
        let now = DeleteParams {
            grace_period_seconds: Some(0),
            ..Default::default()
        };
        match self.pods.delete(name, &now).await {
            Ok(_) => {}
            Err(kube::Error::Api(s)) if s.code == 404 => {}
            Err(e) => self.note_error(&format!("delete pod {name}"), &e),
        }
    }
}
