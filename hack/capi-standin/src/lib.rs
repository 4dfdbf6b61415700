//! `capi-standin`: a stand-in for the Cluster API (CAPI) controllers, for kubescaler's tests
//! and local try-out on CAPI's real CRDs (fetched by `hack/capi-crds.sh`, installed with
//! [`install_crds`]). No CAPI controller runs in the local control plane (and no kubelet, no
//! garbage collector): [`CapiStandIn`] plays the MachineDeployment, MachineSet and Machine
//! controllers, and the kubelets, for ONE MachineDeployment, polling every
//! [`StandInOptions::poll`].
//!
//! # What it does
//! * **MachineSet.** It keeps one MachineSet `<md>-<5 random characters>` controlled by the
//!   MachineDeployment (ownerReference, labels `cluster.x-k8s.io/deployment-name` and
//!   `cluster-name`), with the MachineDeployment's selector and template and, every pass, its
//!   `spec.replicas` and `spec.deletion.order` (as CAPI's MachineDeployment controller does
//!   outside a rollout: a change made to the MachineSet itself is overwritten).
//! * **Machines.** While the MachineSet has fewer Machines than replicas (counting those
//!   already being deleted, as CAPI does) it creates Machines `<ms>-<5 random characters>`
//!   (ownerReference to the MachineSet; labels `deployment-name`, `set-name`, `cluster-name`;
//!   finalizer `machine.cluster.x-k8s.io`). Each goes, counted from its creation:
//!   `Pending` -> `Provisioning` (next pass) -> at half [`StandInOptions::boot_delay`]
//!   `Provisioned`, with `spec.providerID = capi-standin://<machine>`, while its Node registers
//!   like a kubelet (NotReady, tainted `node.kubernetes.io/not-ready:NoSchedule`, the option
//!   labels plus `kubernetes.io/hostname`, capacity and allocatable) -> `Running` once the
//!   Node is found: `status.nodeRef.name`, the Node annotated `cluster.x-k8s.io/machine`,
//!   `cluster-name`, `cluster-namespace`, `owner-kind: MachineSet`, `owner-name`, condition
//!   `NodeHealthy` False -> at [`StandInOptions::boot_delay`] the Node Ready and untainted,
//!   `NodeHealthy` True.
//! * **Scale-down**, as CAPI's MachineSet controller: `diff = Machines (including those being
//!   deleted) - replicas`; if positive, the first `diff` in the deletion order of [`order`]
//!   (being deleted, then marked `cluster.x-k8s.io/delete-machine`, then in-place updating,
//!   then unhealthy, then by `spec.deletion.order`, ties by name) are deleted, skipping those
//!   already being deleted. Each deletion is recorded as a [`Victim`]: chosen by the mark or
//!   by the stand-in itself ([`CapiStandIn::own_choices`]).
//! * **Deletion.** A Machine with `deletionTimestamp` (whoever deleted it) shows phase
//!   `Deleting`; after [`StandInOptions::delete_delay`] its Node is deleted, then the finalizer
//!   removed and the Machine goes. CAPI would drain the node first; the stand-in does not
//!   evict, it records every server pod ([`StandInOptions::server_selector`], not terminal)
//!   still bound to the node when it deleted it ([`CapiStandIn::lost_servers`]).
//! * **Status**: the MachineSet's and MachineDeployment's `status.replicas` (Machines),
//!   `readyReplicas` and `availableReplicas` (NodeHealthy True), `upToDateReplicas` (not being
//!   deleted), `selector`, `observedGeneration`, and the MachineDeployment's `phase`.
//!
//! What it does not do: rollouts (template changes), MachinePools, remediation, Cluster objects
//! (nothing needs one: no webhook runs and the API server checks no references).

#![warn(missing_docs)]

pub mod capi;
pub mod order;

use std::collections::{BTreeMap, BTreeSet};
use std::hash::{BuildHasher, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use jiff::Timestamp;
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::core::DynamicObject;
use kube::Client;
use serde_json::{json, Value};
use tokio::task::JoinHandle;

pub use capi::{
    create_machine_deployment, ensure_namespace, install_crds, machine_deployment_object, Kind,
};
pub use order::{Choice, DeletionOrder};

use capi::{
    condition_status, controlled_by, created, has_annotation, int_at, kube_time, selector_string,
    str_at, API_VERSION, CLUSTER_NAMESPACE_ANNOTATION, CLUSTER_NAME_LABEL,
    DELETE_MACHINE_ANNOTATION, DEPLOYMENT_NAME_LABEL, MACHINE_ANNOTATION, MACHINE_FINALIZER,
    OWNER_KIND_ANNOTATION, OWNER_NAME_ANNOTATION, PROVIDER_ID_PREFIX, SET_NAME_LABEL,
    UPDATE_IN_PROGRESS_ANNOTATION,
};

/// The taint a real cluster puts on a node until it is Ready.
pub const NOT_READY_TAINT: &str = "node.kubernetes.io/not-ready";
/// The Machine condition the stand-in keeps: its Node is Ready.
pub const NODE_HEALTHY_CONDITION: &str = "NodeHealthy";
/// Errors kept for [`CapiStandIn::errors`] (the oldest are dropped).
const KEPT_ERRORS: usize = 100;

/// What went wrong.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// An API call failed.
    #[error("{what}: {source}")]
    Kube {
        /// The call.
        what: String,
        /// Its error.
        #[source]
        source: kube::Error,
    },
    /// A file could not be read.
    #[error("read {}: {source}", path.display())]
    Io {
        /// The file.
        path: std::path::PathBuf,
        /// Its error.
        #[source]
        source: std::io::Error,
    },
    /// An object or file is not what it must be.
    #[error("{0}")]
    Invalid(String),
    /// Something did not happen in time.
    #[error("timed out: {0}")]
    Timeout(String),
}

impl Error {
    fn kube(what: impl Into<String>, source: kube::Error) -> Self {
        Error::Kube {
            what: what.into(),
            source,
        }
    }
}

/// How a [`CapiStandIn`] is set up. [`StandInOptions::new`] gives the defaults.
#[derive(Clone, Debug)]
pub struct StandInOptions {
    /// Namespace of the MachineDeployment (and of its MachineSet and Machines).
    pub namespace: String,
    /// Name of the one MachineDeployment it keeps.
    pub machine_deployment: String,
    /// The Cluster's name for labels and node annotations; empty (default): the
    /// MachineDeployment's `spec.clusterName`.
    pub cluster_name: String,
    /// Time from a Machine's creation to its Node being Ready (registered NotReady halfway).
    pub boot_delay: Duration,
    /// Time from a Machine's `deletionTimestamp` (as first seen) to its Node's deletion.
    pub delete_delay: Duration,
    /// Labels of every Node (e.g. the pool label kubescaler's node selector matches);
    /// `kubernetes.io/hostname` is added.
    pub node_labels: BTreeMap<String, String>,
    /// Node name = this prefix + the Machine's name (default empty: the Machine's name).
    pub node_name_prefix: String,
    /// CPU capacity and allocatable of each Node (a quantity).
    pub cpu: String,
    /// Memory capacity and allocatable of each Node (a quantity).
    pub memory: String,
    /// Pod capacity of each Node.
    pub pods: String,
    /// Label selector of the server pods recorded as lost when their Node is deleted (empty:
    /// every pod).
    pub server_selector: String,
    /// Deletion order used instead of the MachineDeployment's `spec.deletion.order` (CAPI's
    /// default when neither is set: Random).
    pub order_override: Option<DeletionOrder>,
    /// Time between reconcile passes.
    pub poll: Duration,
}

impl StandInOptions {
    /// MachineDeployment `namespace/machine_deployment`; boot 2 s, deletion 1 s, 4-CPU 16 GiB
    /// 110-pod nodes, every pod a server, poll 250 ms.
    pub fn new(namespace: &str, machine_deployment: &str) -> Self {
        StandInOptions {
            namespace: namespace.to_string(),
            machine_deployment: machine_deployment.to_string(),
            cluster_name: String::new(),
            boot_delay: Duration::from_secs(2),
            delete_delay: Duration::from_secs(1),
            node_labels: BTreeMap::new(),
            node_name_prefix: String::new(),
            cpu: "4".to_string(),
            memory: "16Gi".to_string(),
            pods: "110".to_string(),
            server_selector: String::new(),
            order_override: None,
            poll: Duration::from_millis(250),
        }
    }
}

/// A Machine the stand-in deleted to bring its MachineSet down to its replicas.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Victim {
    /// The Machine.
    pub machine: String,
    /// Its Node, if it had registered one.
    pub node: Option<String>,
    /// Chosen because it carried `cluster.x-k8s.io/delete-machine`; `false`: the stand-in
    /// chose it itself ([`Victim::choice`] says why).
    pub by_mark: bool,
    /// Why it ranked first.
    pub choice: Choice,
    /// When the stand-in deleted it.
    pub at: Timestamp,
}

/// A server pod still bound to a Node when the stand-in deleted that Node.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LostServer {
    /// The Machine whose Node it was.
    pub machine: String,
    /// The Node.
    pub node: String,
    /// `namespace/name` of the pod.
    pub pod: String,
}

/// One Machine as the API server has it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MachineView {
    /// `metadata.name`.
    pub name: String,
    /// `status.phase`.
    pub phase: Option<String>,
    /// `spec.providerID`.
    pub provider_id: Option<String>,
    /// `status.nodeRef.name`.
    pub node: Option<String>,
    /// `deletionTimestamp` is set.
    pub deleting: bool,
    /// Carries `cluster.x-k8s.io/delete-machine`.
    pub marked: bool,
    /// `metadata.creationTimestamp`.
    pub created: Option<Timestamp>,
}

impl MachineView {
    fn of(m: &DynamicObject) -> Self {
        MachineView {
            name: m.metadata.name.clone().unwrap_or_default(),
            phase: str_at(m, "/status/phase").map(str::to_string),
            provider_id: str_at(m, "/spec/providerID").map(str::to_string),
            node: str_at(m, "/status/nodeRef/name").map(str::to_string),
            deleting: m.metadata.deletion_timestamp.is_some(),
            marked: has_annotation(m, DELETE_MACHINE_ANNOTATION),
            created: created(m),
        }
    }
}

/// What the stand-in remembers between passes.
#[derive(Default)]
struct Book {
    machine_set: Option<String>,
    /// When each Machine was created (or first seen): its boot clock.
    born: BTreeMap<String, Instant>,
    /// When each Machine was first seen with a `deletionTimestamp`.
    deleting_since: BTreeMap<String, Instant>,
    /// Nodes it deleted (their servers are recorded once).
    deleted_nodes: BTreeSet<String>,
    victims: Vec<Victim>,
    lost: Vec<LostServer>,
    errors: Vec<String>,
    passes: u64,
}

struct Inner {
    opts: StandInOptions,
    mds: Api<DynamicObject>,
    sets: Api<DynamicObject>,
    machines: Api<DynamicObject>,
    nodes: Api<Node>,
    pods: Api<Pod>,
    book: Mutex<Book>,
}

/// The CAPI controllers' part for one MachineDeployment, run by a tokio task (see the crate
/// docs). Dropping it, or [`CapiStandIn::stop`], stops the task; [`CapiStandIn::cleanup`] also
/// deletes what it created.
pub struct CapiStandIn {
    inner: Arc<Inner>,
    task: Mutex<Option<JoinHandle<()>>>,
}

impl Drop for CapiStandIn {
    fn drop(&mut self) {
        self.stop();
    }
}

impl CapiStandIn {
    /// Starts the loop (the MachineDeployment may not exist yet: each pass looks for it).
    pub fn start(client: Client, opts: StandInOptions) -> Self {
        let ns = opts.namespace.clone();
        let inner = Arc::new(Inner {
            mds: Kind::MachineDeployment.api(client.clone(), &ns),
            sets: Kind::MachineSet.api(client.clone(), &ns),
            machines: Kind::Machine.api(client.clone(), &ns),
            nodes: Api::all(client.clone()),
            pods: Api::all(client),
            opts,
            book: Mutex::default(),
        });
        let looping = Arc::clone(&inner);
        let task = tokio::spawn(async move {
            loop {
                if let Err(e) = looping.pass().await {
                    looping.note(&e.to_string());
                }
                looping.book().passes += 1;
                tokio::time::sleep(looping.opts.poll).await;
            }
        });
        CapiStandIn {
            inner,
            task: Mutex::new(Some(task)),
        }
    }

    /// Its options.
    pub fn options(&self) -> &StandInOptions {
        &self.inner.opts
    }

    /// Stops the loop (idempotent); what it recorded stays readable.
    pub fn stop(&self) {
        let task = self
            .task
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if let Some(task) = task {
            task.abort();
        }
    }

    /// Every Machine it deleted to scale down, in order.
    pub fn victims(&self) -> Vec<Victim> {
        self.inner.book().victims.clone()
    }

    /// How many of [`CapiStandIn::victims`] it chose itself (not by the `delete-machine` mark):
    /// each is a scale-down that left CAPI the choice.
    pub fn own_choices(&self) -> usize {
        self.inner
            .book()
            .victims
            .iter()
            .filter(|v| !v.by_mark)
            .count()
    }

    /// Server pods still bound to a Node when it deleted the Node.
    pub fn lost_servers(&self) -> Vec<LostServer> {
        self.inner.book().lost.clone()
    }

    /// The MachineSet it keeps, once created or found.
    pub fn machine_set(&self) -> Option<String> {
        self.inner.book().machine_set.clone()
    }

    /// Reconcile passes finished.
    pub fn passes(&self) -> u64 {
        self.inner.book().passes
    }

    /// What failed in its passes (the last 100), oldest first.
    pub fn errors(&self) -> Vec<String> {
        self.inner.book().errors.clone()
    }

    /// The Machines of its MachineDeployment now (a fresh list), by name.
    pub async fn machines(&self) -> Result<Vec<MachineView>, Error> {
        let mut views: Vec<MachineView> = self
            .inner
            .list_machines_of_deployment()
            .await?
            .iter()
            .map(MachineView::of)
            .collect();
        views.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(views)
    }

    /// Stops the loop, then deletes its Nodes, Machines (finalizer removed), MachineSet and
    /// the MachineDeployment itself. Pods are left alone.
    pub async fn cleanup(&self) -> Result<(), Error> {
        self.stop();
        let inner = &self.inner;
        for m in inner.list_machines_of_deployment().await? {
            let name = m.metadata.name.clone().unwrap_or_default();
            if let Some(node) = inner.node_of(&m) {
                ignore_missing(inner.nodes.delete(&node, &DeleteParams::default()).await)
                    .map_err(|e| Error::kube(format!("delete node {node}"), e))?;
            }
            let patch = json!({"metadata": {"finalizers": null}});
            ignore_missing(
                inner
                    .machines
                    .patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
                    .await,
            )
            .map_err(|e| Error::kube(format!("remove the finalizer of Machine {name}"), e))?;
            ignore_missing(inner.machines.delete(&name, &DeleteParams::default()).await)
                .map_err(|e| Error::kube(format!("delete Machine {name}"), e))?;
        }
        for ms in inner.machine_sets(None).await? {
            let name = ms.metadata.name.clone().unwrap_or_default();
            ignore_missing(inner.sets.delete(&name, &DeleteParams::default()).await)
                .map_err(|e| Error::kube(format!("delete MachineSet {name}"), e))?;
        }
        let md = &inner.opts.machine_deployment;
        ignore_missing(inner.mds.delete(md, &DeleteParams::default()).await)
            .map_err(|e| Error::kube(format!("delete MachineDeployment {md}"), e))?;
        Ok(())
    }
}

/// `Ok` for a 404 (already gone).
fn ignore_missing<T>(r: Result<T, kube::Error>) -> Result<(), kube::Error> {
    match r {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(s)) if s.code == 404 => Ok(()),
        Err(e) => Err(e),
    }
}

/// A name suffix like the API server's `generateName` (5 characters, no vowels).
fn random_suffix() -> String {
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    static CALLS: AtomicU64 = AtomicU64::new(0);
    // RandomState is seeded per process; mixing in a counter and the clock varies each call.
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(CALLS.fetch_add(1, Ordering::Relaxed));
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default(),
    );
    let mut x = h.finish();
    (0..5)
        .map(|_| {
            let c = ALPHABET[(x % ALPHABET.len() as u64) as usize] as char;
            x /= ALPHABET.len() as u64;
            c
        })
        .collect()
}

/// A label value of at most 63 characters (a long node name is cut for its hostname label).
fn label_value(s: &str) -> String {
    let cut: String = s.chars().take(63).collect();
    cut.trim_end_matches(['-', '.', '_']).to_string()
}

/// A Machine's place in the deletion ranking, read from the object as CAPI reads it.
fn candidate(m: &DynamicObject) -> order::Candidate {
    let node_ok = str_at(m, "/status/nodeRef/name").is_some()
        && condition_status(m, NODE_HEALTHY_CONDITION) != Some("False")
        && condition_status(m, "HealthCheckSucceeded") != Some("False");
    order::Candidate {
        name: m.metadata.name.clone().unwrap_or_default(),
        deleting: m.metadata.deletion_timestamp.is_some(),
        marked: has_annotation(m, DELETE_MACHINE_ANNOTATION),
        updating: has_annotation(m, UPDATE_IN_PROGRESS_ANNOTATION),
        healthy: node_ok,
        created: created(m),
    }
}

impl Inner {
    fn book(&self) -> MutexGuard<'_, Book> {
        self.book.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn note(&self, what: &str) {
        tracing::warn!(
            "capi-standin {}/{}: {what}",
            self.opts.namespace,
            self.opts.machine_deployment
        );
        let mut book = self.book();
        book.errors.push(what.to_string());
        if book.errors.len() > KEPT_ERRORS {
            book.errors.remove(0);
        }
    }

    fn node_name(&self, machine: &str) -> String {
        format!("{}{machine}", self.opts.node_name_prefix)
    }

    /// The Node of a Machine: its nodeRef, else the one it registers once it has a providerID.
    fn node_of(&self, m: &DynamicObject) -> Option<String> {
        if let Some(n) = str_at(m, "/status/nodeRef/name") {
            return Some(n.to_string());
        }
        str_at(m, "/spec/providerID")?;
        m.metadata.name.as_deref().map(|n| self.node_name(n))
    }

    async fn list_machines_of_deployment(&self) -> Result<Vec<DynamicObject>, Error> {
        let params = ListParams::default().labels(&format!(
            "{DEPLOYMENT_NAME_LABEL}={}",
            self.opts.machine_deployment
        ));
        self.machines
            .list(&params)
            .await
            .map(|l| l.items)
            .map_err(|e| Error::kube("list Machines", e))
    }

    /// MachineSets labelled with the MachineDeployment's name (controlled by `uid` if given),
    /// oldest first.
    async fn machine_sets(&self, uid: Option<&str>) -> Result<Vec<DynamicObject>, Error> {
        let params = ListParams::default().labels(&format!(
            "{DEPLOYMENT_NAME_LABEL}={}",
            self.opts.machine_deployment
        ));
        let mut sets: Vec<DynamicObject> = self
            .sets
            .list(&params)
            .await
            .map_err(|e| Error::kube("list MachineSets", e))?
            .items
            .into_iter()
            .filter(|ms| uid.is_none_or(|uid| controlled_by(ms, uid)))
            .collect();
        sets.sort_by_key(|ms| (created(ms), ms.metadata.name.clone()));
        Ok(sets)
    }

    async fn pass(&self) -> Result<(), Error> {
        let ns = &self.opts.namespace;
        let md_name = &self.opts.machine_deployment;
        let Some(md) = self
            .mds
            .get_opt(md_name)
            .await
            .map_err(|e| Error::kube(format!("get MachineDeployment {ns}/{md_name}"), e))?
        else {
            return Err(Error::Invalid(format!(
                "MachineDeployment {ns}/{md_name} not found"
            )));
        };
        let replicas = int_at(&md, "/spec/replicas").ok_or_else(|| {
            // CAPI's MachineDeployment controller refuses too (its webhook always sets it).
            Error::Invalid(format!(
                "MachineDeployment {ns}/{md_name} has no spec.replicas"
            ))
        })?;
        let order = match self.opts.order_override {
            Some(o) => o,
            None => match str_at(&md, "/spec/deletion/order") {
                Some(s) => s.parse().map_err(Error::Invalid)?,
                None => DeletionOrder::default(),
            },
        };
        let cluster = if self.opts.cluster_name.is_empty() {
            str_at(&md, "/spec/clusterName")
                .unwrap_or_default()
                .to_string()
        } else {
            self.opts.cluster_name.clone()
        };

        let ms = self
            .ensure_machine_set(&md, replicas, order, &cluster)
            .await?;
        let ms_name = ms.metadata.name.clone().unwrap_or_default();
        let ms_uid = ms.metadata.uid.clone().unwrap_or_default();
        self.book().machine_set = Some(ms_name.clone());

        // Listed after the replicas were read: a mark set before the scale call is seen.
        let machines = self.machines_of_set(&ms_name, &ms_uid).await?;
        for m in &machines {
            let step = if m.metadata.deletion_timestamp.is_some() {
                self.finish_deletion(m).await
            } else {
                self.advance(m, &ms_name, &cluster).await
            };
            if let Err(e) = step {
                self.note(&e.to_string());
            }
        }

        let have = machines.len() as i64;
        if have < replicas {
            for _ in have..replicas {
                if let Err(e) = self.create_machine(&ms, &cluster).await {
                    self.note(&e.to_string());
                }
            }
        } else if have > replicas {
            self.scale_down(&machines, (have - replicas) as usize, order)
                .await;
        }

        let machines = self.machines_of_set(&ms_name, &ms_uid).await?;
        self.write_status(&ms, &md, replicas, &machines).await
    }

    async fn machines_of_set(&self, ms: &str, uid: &str) -> Result<Vec<DynamicObject>, Error> {
        let params = ListParams::default().labels(&format!("{SET_NAME_LABEL}={ms}"));
        Ok(self
            .machines
            .list(&params)
            .await
            .map_err(|e| Error::kube(format!("list Machines of MachineSet {ms}"), e))?
            .items
            .into_iter()
            .filter(|m| controlled_by(m, uid))
            .collect())
    }

    /// The MachineSet of the MachineDeployment, created if missing, its replicas and deletion
    /// order set to the MachineDeployment's.
    async fn ensure_machine_set(
        &self,
        md: &DynamicObject,
        replicas: i64,
        order: DeletionOrder,
        cluster: &str,
    ) -> Result<DynamicObject, Error> {
        let md_name = &self.opts.machine_deployment;
        let md_uid = md.metadata.uid.clone().unwrap_or_default();
        if let Some(ms) = self.machine_sets(Some(&md_uid)).await?.into_iter().next() {
            let same = int_at(&ms, "/spec/replicas") == Some(replicas)
                && str_at(&ms, "/spec/deletion/order") == Some(order.as_str());
            if same {
                return Ok(ms);
            }
            let name = ms.metadata.name.clone().unwrap_or_default();
            let patch =
                json!({"spec": {"replicas": replicas, "deletion": {"order": order.as_str()}}});
            return self
                .sets
                .patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
                .await
                .map_err(|e| Error::kube(format!("scale MachineSet {name}"), e));
        }
        let mut template = md
            .data
            .pointer("/spec/template")
            .cloned()
            .unwrap_or_else(|| json!({}));
        // The MachineDeployment controller labels the MachineSet's Machines with its name.
        template["metadata"]["labels"][DEPLOYMENT_NAME_LABEL] = json!(md_name);
        let selector = md
            .data
            .pointer("/spec/selector")
            .cloned()
            .unwrap_or_else(|| json!({}));
        let object = json!({
            "apiVersion": API_VERSION,
            "kind": "MachineSet",
            "metadata": {
                "name": format!("{md_name}-{}", random_suffix()),
                "namespace": self.opts.namespace,
                "labels": {DEPLOYMENT_NAME_LABEL: md_name, CLUSTER_NAME_LABEL: cluster},
                "ownerReferences": [{
                    "apiVersion": API_VERSION,
                    "kind": "MachineDeployment",
                    "name": md_name,
                    "uid": md_uid,
                    "controller": true,
                    "blockOwnerDeletion": true,
                }],
            },
            "spec": {
                "clusterName": cluster,
                "replicas": replicas,
                "deletion": {"order": order.as_str()},
                "selector": selector,
                "template": template,
            },
        });
        let object: DynamicObject = serde_json::from_value(object)
            .map_err(|e| Error::Invalid(format!("a MachineSet object: {e}")))?;
        let created = self
            .sets
            .create(&PostParams::default(), &object)
            .await
            .map_err(|e| Error::kube(format!("create a MachineSet for {md_name}"), e))?;
        tracing::info!(
            "capi-standin: created MachineSet {}",
            created.metadata.name.as_deref().unwrap_or_default()
        );
        Ok(created)
    }

    /// Creates one Machine of MachineSet `ms` (phase Pending).
    async fn create_machine(&self, ms: &DynamicObject, cluster: &str) -> Result<(), Error> {
        let ms_name = ms.metadata.name.clone().unwrap_or_default();
        let md_name = &self.opts.machine_deployment;
        let template = ms
            .data
            .pointer("/spec/template")
            .cloned()
            .unwrap_or_default();
        let mut labels = template
            .pointer("/metadata/labels")
            .cloned()
            .unwrap_or_else(|| json!({}));
        labels[DEPLOYMENT_NAME_LABEL] = json!(md_name);
        labels[SET_NAME_LABEL] = json!(ms_name);
        labels[CLUSTER_NAME_LABEL] = json!(cluster);
        let annotations = template
            .pointer("/metadata/annotations")
            .cloned()
            .unwrap_or_else(|| json!({}));
        let name = format!("{ms_name}-{}", random_suffix());
        let mut spec = template.get("spec").cloned().unwrap_or_else(|| json!({}));
        spec["clusterName"] = json!(cluster);
        // CAPI clones the template into an infrastructure machine of the Machine's name.
        if let Some(kind) = spec
            .pointer("/infrastructureRef/kind")
            .and_then(Value::as_str)
        {
            let kind = kind.strip_suffix("Template").unwrap_or(kind).to_string();
            spec["infrastructureRef"]["kind"] = json!(kind);
            spec["infrastructureRef"]["name"] = json!(name);
        }
        let object = json!({
            "apiVersion": API_VERSION,
            "kind": "Machine",
            "metadata": {
                "name": name,
                "namespace": self.opts.namespace,
                "labels": labels,
                "annotations": annotations,
                "finalizers": [MACHINE_FINALIZER],
                "ownerReferences": [{
                    "apiVersion": API_VERSION,
                    "kind": "MachineSet",
                    "name": ms_name,
                    "uid": ms.metadata.uid.clone().unwrap_or_default(),
                    "controller": true,
                    "blockOwnerDeletion": true,
                }],
            },
            "spec": spec,
        });
        let object: DynamicObject = serde_json::from_value(object)
            .map_err(|e| Error::Invalid(format!("a Machine object: {e}")))?;
        self.machines
            .create(&PostParams::default(), &object)
            .await
            .map_err(|e| Error::kube(format!("create Machine {name}"), e))?;
        self.book().born.insert(name.clone(), Instant::now());
        self.machine_status(&name, json!({"phase": "Pending"}))
            .await
    }

    async fn machine_status(&self, name: &str, status: Value) -> Result<(), Error> {
        self.machines
            .patch_status(
                name,
                &PatchParams::default(),
                &Patch::Merge(&json!({ "status": status })),
            )
            .await
            .map(|_| ())
            .map_err(|e| Error::kube(format!("write the status of Machine {name}"), e))
    }

    /// Moves a Machine on along its boot, as far as its age allows.
    async fn advance(&self, m: &DynamicObject, ms_name: &str, cluster: &str) -> Result<(), Error> {
        let name = m.metadata.name.clone().unwrap_or_default();
        let age = self
            .book()
            .born
            .entry(name.clone())
            .or_insert_with(Instant::now)
            .elapsed();
        let boot = self.opts.boot_delay;
        let mut phase = str_at(m, "/status/phase").unwrap_or("Pending").to_string();
        let node = self.node_name(&name);
        if phase == "Pending" {
            self.machine_status(
                &name,
                json!({"phase": "Provisioning",
                       "initialization": {"bootstrapDataSecretCreated": true}}),
            )
            .await?;
            phase = "Provisioning".to_string();
        }
        if phase == "Provisioning" && age >= boot / 2 {
            let provider_id = format!("{PROVIDER_ID_PREFIX}{name}");
            if str_at(m, "/spec/providerID").is_none() {
                let patch = json!({"spec": {"providerID": provider_id}});
                self.machines
                    .patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
                    .await
                    .map_err(|e| Error::kube(format!("set the providerID of Machine {name}"), e))?;
            }
            self.register_node(&node, &provider_id).await?;
            self.machine_status(
                &name,
                json!({"phase": "Provisioned",
                       "initialization": {"bootstrapDataSecretCreated": true,
                                          "infrastructureProvisioned": true}}),
            )
            .await?;
            phase = "Provisioned".to_string();
        }
        if phase == "Provisioned" {
            // CAPI's Machine controller found the Node by providerID: it annotates it and
            // records it.
            let patch = json!({"metadata": {"annotations": {
                MACHINE_ANNOTATION: name,
                CLUSTER_NAME_LABEL: cluster,
                CLUSTER_NAMESPACE_ANNOTATION: self.opts.namespace,
                OWNER_KIND_ANNOTATION: "MachineSet",
                OWNER_NAME_ANNOTATION: ms_name,
            }}});
            self.nodes
                .patch(&node, &PatchParams::default(), &Patch::Merge(&patch))
                .await
                .map_err(|e| Error::kube(format!("annotate node {node}"), e))?;
            self.machine_status(
                &name,
                json!({"phase": "Running", "nodeRef": {"name": node},
                       "conditions": [node_healthy(false)]}),
            )
            .await?;
            phase = "Running".to_string();
        }
        let healthy = condition_status(m, NODE_HEALTHY_CONDITION) == Some("True");
        if phase == "Running" && !healthy && age >= boot {
            self.node_status(&node, true).await?;
            let untaint = json!({"spec": {"taints": null}});
            self.nodes
                .patch(&node, &PatchParams::default(), &Patch::Merge(&untaint))
                .await
                .map_err(|e| Error::kube(format!("untaint node {node}"), e))?;
            self.machine_status(&name, json!({"conditions": [node_healthy(true)]}))
                .await?;
        }
        Ok(())
    }

    /// Registers Node `name` as a kubelet would: NotReady and tainted (an existing one with
    /// the same providerID is kept).
    async fn register_node(&self, name: &str, provider_id: &str) -> Result<(), Error> {
        let mut labels = self.opts.node_labels.clone();
        labels.insert("kubernetes.io/hostname".to_string(), label_value(name));
        let node: Node = serde_json::from_value(json!({
            "metadata": {"name": name, "labels": labels},
            "spec": {
                "providerID": provider_id,
                "taints": [{"key": NOT_READY_TAINT, "effect": "NoSchedule"}],
            },
        }))
        .map_err(|e| Error::Invalid(format!("a Node object: {e}")))?;
        match self.nodes.create(&PostParams::default(), &node).await {
            Ok(_) => {}
            Err(kube::Error::Api(s)) if s.code == 409 => {
                let existing = self
                    .nodes
                    .get(name)
                    .await
                    .map_err(|e| Error::kube(format!("get node {name}"), e))?;
                let theirs = existing.spec.and_then(|s| s.provider_id);
                if theirs.as_deref() != Some(provider_id) {
                    return Err(Error::Invalid(format!(
                        "node {name} exists with providerID {theirs:?}, not {provider_id}"
                    )));
                }
                // A retry after a lost answer: our own Node.
            }
            Err(e) => return Err(Error::kube(format!("create node {name}"), e)),
        }
        self.node_status(name, false).await
    }

    async fn node_status(&self, name: &str, ready: bool) -> Result<(), Error> {
        let now = kube_time(Timestamp::now());
        let o = &self.opts;
        let resources = json!({"cpu": o.cpu, "memory": o.memory, "pods": o.pods});
        let (status, reason) = if ready {
            ("True", "KubeletReady")
        } else {
            ("False", "KubeletNotReady")
        };
        let patch = json!({"status": {
            "capacity": resources,
            "allocatable": resources,
            "conditions": [{
                "type": "Ready", "status": status, "reason": reason,
                "message": "capi-standin",
                "lastHeartbeatTime": now, "lastTransitionTime": now,
            }],
        }});
        self.nodes
            .patch_status(name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .map(|_| ())
            .map_err(|e| Error::kube(format!("write the status of node {name}"), e))
    }

    /// A Machine being deleted: phase Deleting, then after the delete delay its Node goes
    /// (its servers recorded as lost), then the finalizer.
    async fn finish_deletion(&self, m: &DynamicObject) -> Result<(), Error> {
        let name = m.metadata.name.clone().unwrap_or_default();
        let since = *self
            .book()
            .deleting_since
            .entry(name.clone())
            .or_insert_with(Instant::now);
        if str_at(m, "/status/phase") != Some("Deleting") {
            self.machine_status(&name, json!({"phase": "Deleting"}))
                .await?;
        }
        if since.elapsed() < self.opts.delete_delay {
            return Ok(());
        }
        if let Some(node) = self.node_of(m) {
            let done = self.book().deleted_nodes.contains(&node);
            if !done {
                // What the node is running at the moment it goes away (no drain).
                let servers = self.servers_on(&node).await?;
                ignore_missing(self.nodes.delete(&node, &DeleteParams::default()).await)
                    .map_err(|e| Error::kube(format!("delete node {node}"), e))?;
                let mut book = self.book();
                book.deleted_nodes.insert(node.clone());
                book.lost.extend(servers.into_iter().map(|pod| LostServer {
                    machine: name.clone(),
                    node: node.clone(),
                    pod,
                }));
            }
        }
        let rest: Vec<&String> = m
            .metadata
            .finalizers
            .iter()
            .flatten()
            .filter(|f| *f != MACHINE_FINALIZER)
            .collect();
        // At the resourceVersion read: a concurrent change (409) is retried next pass.
        let patch = json!({"metadata": {
            "finalizers": rest,
            "resourceVersion": m.metadata.resource_version,
        }});
        ignore_missing(
            self.machines
                .patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
                .await,
        )
        .map_err(|e| Error::kube(format!("remove the finalizer of Machine {name}"), e))?;
        let mut book = self.book();
        book.born.remove(&name);
        book.deleting_since.remove(&name);
        Ok(())
    }

    /// Live server pods bound to `node`, as `namespace/name`.
    async fn servers_on(&self, node: &str) -> Result<Vec<String>, Error> {
        let mut params = ListParams::default().fields(&format!("spec.nodeName={node}"));
        if !self.opts.server_selector.is_empty() {
            params = params.labels(&self.opts.server_selector);
        }
        let pods = self
            .pods
            .list(&params)
            .await
            .map_err(|e| Error::kube(format!("list the pods on node {node}"), e))?;
        Ok(pods
            .items
            .iter()
            .filter(|p| {
                let phase = p.status.as_ref().and_then(|s| s.phase.as_deref());
                !matches!(phase, Some("Succeeded" | "Failed"))
            })
            .map(|p| {
                format!(
                    "{}/{}",
                    p.metadata.namespace.as_deref().unwrap_or_default(),
                    p.metadata.name.as_deref().unwrap_or_default()
                )
            })
            .collect())
    }

    /// Deletes the first `diff` Machines in deletion order that are not already going.
    async fn scale_down(&self, machines: &[DynamicObject], diff: usize, order: DeletionOrder) {
        let candidates: Vec<order::Candidate> = machines.iter().map(candidate).collect();
        for (c, choice) in order::choose(&candidates, diff, order, Timestamp::now()) {
            if c.deleting {
                continue;
            }
            let node = machines
                .iter()
                .find(|m| m.metadata.name.as_deref() == Some(c.name.as_str()))
                .and_then(|m| self.node_of(m));
            match self
                .machines
                .delete(&c.name, &DeleteParams::default())
                .await
            {
                Ok(_) => {
                    tracing::info!(
                        "capi-standin: deleting Machine {} ({choice:?}, order {order})",
                        c.name
                    );
                    self.book().victims.push(Victim {
                        machine: c.name.clone(),
                        node,
                        by_mark: choice == Choice::Marked,
                        choice,
                        at: Timestamp::now(),
                    });
                }
                Err(kube::Error::Api(s)) if s.code == 404 => {}
                Err(e) => self.note(&format!("delete Machine {}: {e}", c.name)),
            }
        }
    }

    /// Writes the MachineSet's and the MachineDeployment's status where it changed.
    async fn write_status(
        &self,
        ms: &DynamicObject,
        md: &DynamicObject,
        replicas: i64,
        machines: &[DynamicObject],
    ) -> Result<(), Error> {
        let total = machines.len() as i64;
        let ready = machines
            .iter()
            .filter(|m| condition_status(m, NODE_HEALTHY_CONDITION) == Some("True"))
            .count() as i64;
        let up_to_date = machines
            .iter()
            .filter(|m| m.metadata.deletion_timestamp.is_none())
            .count() as i64;
        let counts = |obj: &DynamicObject| {
            json!({
                "replicas": total,
                "readyReplicas": ready,
                "availableReplicas": ready,
                "upToDateReplicas": up_to_date,
                "selector": selector_string(obj, "/spec/selector/matchLabels"),
                "observedGeneration": obj.metadata.generation,
            })
        };
        let ms_status = counts(ms);
        let mut md_status = counts(md);
        md_status["phase"] = json!(match total.cmp(&replicas) {
            std::cmp::Ordering::Less => "ScalingUp",
            std::cmp::Ordering::Greater => "ScalingDown",
            std::cmp::Ordering::Equal => "Running",
        });
        let ms_name = ms.metadata.name.clone().unwrap_or_default();
        let md_name = &self.opts.machine_deployment;
        for (api, obj, status, what) in [
            (&self.sets, ms, ms_status, format!("MachineSet {ms_name}")),
            (
                &self.mds,
                md,
                md_status,
                format!("MachineDeployment {md_name}"),
            ),
        ] {
            let current = obj.data.get("status").cloned().unwrap_or_default();
            let unchanged = status
                .as_object()
                .is_some_and(|s| s.iter().all(|(k, v)| current.get(k) == Some(v)));
            if unchanged {
                continue;
            }
            let name = obj.metadata.name.clone().unwrap_or_default();
            api.patch_status(
                &name,
                &PatchParams::default(),
                &Patch::Merge(&json!({ "status": status })),
            )
            .await
            .map_err(|e| Error::kube(format!("write the status of {what}"), e))?;
        }
        Ok(())
    }
}

/// The `NodeHealthy` condition (v1beta2 conditions need reason and message).
fn node_healthy(ok: bool) -> Value {
    let (status, reason) = if ok {
        ("True", "NodeHealthy")
    } else {
        ("False", "NodeNotReady")
    };
    json!({
        "type": NODE_HEALTHY_CONDITION, "status": status, "reason": reason,
        "message": "", "lastTransitionTime": kube_time(Timestamp::now()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suffixes_look_generated_and_differ() {
        let a = random_suffix();
        let b = random_suffix();
        assert_eq!(a.len(), 5);
        assert!(a
            .bytes()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit()));
        assert_ne!(a, b);
    }

    #[test]
    fn a_long_node_name_is_cut_to_a_valid_hostname_label() {
        let long = format!("{}-x", "a".repeat(62));
        assert_eq!(label_value(&long), "a".repeat(62));
        assert_eq!(label_value("node-1"), "node-1");
    }
}
