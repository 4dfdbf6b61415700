//! The `clusterapi` provider end to end: kubescaler's real scale loop and driver on the real
//! control plane with Cluster API's real CRDs (v1beta2, from the Go module; see
//! hack/capi-crds.sh), and the CAPI controller stand-in of hack/capi-standin playing the
//! MachineDeployment and MachineSet controllers: Machines and Ready Nodes for replicas, and
//! on a lower count the `delete-machine`-marked Machines first, else a victim of its own
//! choosing, which these tests count ([`CapiStandIn::own_choices`]): kubescaler must never
//! leave it one.
//!
//! Faults come from the API server itself: a ValidatingAdmissionPolicy refuses the scale
//! write after the Machine is marked. Gated by `KUBESCALER_E2E_KUBECONFIG` and
//! `KUBESCALER_CAPI_CRDS` (required in CI).

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use async_trait::async_trait;
use capi_standin::{CapiStandIn, StandInOptions};
use k8s_openapi::api::core::v1::Node;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use kube::core::{ApiResource, DynamicObject};
use kube::Client;
use kubescaler::config::Config;
use kubescaler::kubernetes::{
    ActionEvent, ChangeEvent, KubeCluster, KubeError, Kubernetes, MarkOp, MarkOutcome,
};
use kubescaler::model::{ClusterSnapshot, NodeState, FENCE_TAINT};
use kubescaler::provider::{CloudNode, CloudPool, NodePoolProvider, NodeRef, ProviderError};
use serde_json::json;
use tokio::sync::broadcast;

mod cluster;
use cluster::cloud::{
    eventually, Placement, Pool, ScaleLoop, FOUR_CPU, POOL_LABEL, SERVER_LABEL, WAIT,
};
use cluster::{client_or_skip, kubeconfig_or_skip, prereq};

/// The namespace of every test's MachineDeployment (each test has its own MachineDeployment
/// and nodes, so tests run in parallel).
const NAMESPACE: &str = "capi-e2e";
/// The Cluster the groups belong to (`spec.clusterName`, kubescaler's `cluster-name`).
const CLUSTER: &str = "games";

/// What a test runs on: the pool harness (nodes, servers), the group, the stand-in.
struct Capi {
    pool: Pool,
    md: String,
    standin: CapiStandIn,
    kubeconfig: PathBuf,
}

/// A client, Cluster API's CRDs installed, and a MachineDeployment `replicas` strong with
/// `annotations`, served by a stand-in whose Nodes are this test's pool; `None` to skip.
async fn capi(test: &str, tag: &str, replicas: i32, annotations: &[(&str, &str)]) -> Option<Capi> {
    let client = client_or_skip(test).await?;
    let kubeconfig = kubeconfig_or_skip(test)?;
    let crds = prereq::capi_crds_or_skip(test)?;
    capi_standin::install_crds(&client, &crds)
        .await
        .unwrap_or_else(|e| panic!("install the CRDs of {}: {e}", crds.display()));
    capi_standin::capi::ensure_namespace(&client, NAMESPACE)
        .await
        .unwrap_or_else(|e| panic!("namespace {NAMESPACE}: {e}"));
    let pool = Pool::new(client.clone(), tag, FOUR_CPU, Duration::ZERO);
    let md = pool.id.clone();
    let annotations: BTreeMap<String, String> = annotations
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    capi_standin::capi::create_machine_deployment(
        &client,
        NAMESPACE,
        &md,
        CLUSTER,
        replicas,
        &annotations,
        &BTreeMap::new(),
    )
    .await
    .unwrap_or_else(|e| panic!("create MachineDeployment {md}: {e}"));
    let mut options = StandInOptions::new(NAMESPACE, &md);
    options.node_labels = BTreeMap::from([(POOL_LABEL.to_string(), pool.id.clone())]);
    options.server_selector = format!("{SERVER_LABEL}={}", pool.id);
    options.cpu = FOUR_CPU.cpu.to_string();
    options.memory = FOUR_CPU.memory.to_string();
    options.pods = FOUR_CPU.pods.to_string();
    let standin = CapiStandIn::start(client, options);
    let world = Capi {
        pool,
        md,
        standin,
        kubeconfig,
    };
    world.ready_nodes(replicas as usize).await;
    Some(world)
}

impl Capi {
    /// kubescaler's configuration for the group, through the provider's own keys: 1 s tick,
    /// 1-CPU servers, the pool's selector; `settings` override.
    fn config(&self, settings: &[(&str, &str)]) -> Config {
        let kubeconfig = self.kubeconfig.to_string_lossy().to_string();
        let mut all: Vec<(&str, &str)> = vec![
            ("CLOUD_PROVIDER", "clusterapi"),
            ("CLUSTER_NAME", CLUSTER),
            ("NODE_POOL_NAME", &self.md),
            ("CLUSTERAPI_NAMESPACE", NAMESPACE),
            ("CLUSTER_KUBE_CONFIG_PATH", &kubeconfig),
        ];
        all.extend_from_slice(settings);
        self.pool.config(&all)
    }

    /// The `kubescaler` binary with `settings` over the environment of [`Capi::config`]'s
    /// keys, leader election off, the HTTP listener on a free port; nothing else inherited.
    fn daemon(&self, settings: &[(&str, &str)]) -> std::process::Command {
        let kubeconfig = self.kubeconfig.to_string_lossy().to_string();
        let selector = self.pool.selector();
        let mut env: BTreeMap<&str, &str> = BTreeMap::from([
            ("CLOUD_PROVIDER", "clusterapi"),
            ("CLUSTER_NAME", CLUSTER),
            ("NODE_POOL_NAME", self.md.as_str()),
            ("CLUSTERAPI_NAMESPACE", NAMESPACE),
            ("CLUSTER_KUBE_CONFIG_PATH", kubeconfig.as_str()),
            ("NODE_SELECTOR", selector.as_str()),
            ("SERVER_POD_LABEL_NAME", SERVER_LABEL),
            ("SERVER_POD_LABEL_VALUE", self.pool.id.as_str()),
            ("SERVER_CPU_RESOURCE_REQUEST", "1000m"),
            ("LEADER_ELECTION", "false"),
            ("HTTP_LISTEN_ADDRESS", "127.0.0.1:0"),
        ]);
        env.extend(settings.iter().copied());
        let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_kubescaler"));
        command.env_clear().envs(env);
        command
    }

    /// The driver as the daemon builds it from `config` (it connects with the kubeconfig).
    fn provider(&self, config: &Config) -> Arc<dyn NodePoolProvider> {
        Arc::from(
            kubescaler::provider::clusterapi::build(config)
                .unwrap_or_else(|e| panic!("build the clusterapi provider: {e}")),
        )
    }

    fn start_loop(&self, config: &Config) -> ScaleLoop {
        self.pool
            .start_loop_on(config, self.provider(config), |cluster| cluster)
    }

    fn groups(&self) -> Api<DynamicObject> {
        let resource = ApiResource {
            group: "cluster.x-k8s.io".into(),
            version: "v1beta2".into(),
            api_version: "cluster.x-k8s.io/v1beta2".into(),
            kind: "MachineDeployment".into(),
            plural: "machinedeployments".into(),
        };
        Api::namespaced_with(self.pool.client.clone(), NAMESPACE, &resource)
    }

    /// The MachineDeployment's `spec.replicas`.
    async fn replicas(&self) -> i64 {
        let md = self
            .groups()
            .get(&self.md)
            .await
            .unwrap_or_else(|e| panic!("get MachineDeployment {}: {e}", self.md));
        md.data["spec"]["replicas"].as_i64().unwrap_or(-1)
    }

    /// Waits until the pool has `n` Ready nodes, each with its Machine's providerID and the
    /// machine annotation; returns their names.
    async fn ready_nodes(&self, n: usize) -> Vec<String> {
        eventually(&format!("{n} Ready nodes of {}", self.md), WAIT, || async {
            let nodes = self.pool.nodes().await;
            let ready: Vec<String> = nodes
                .iter()
                .filter(|(_, node)| cluster::cloud::is_ready(node) && linked(node))
                .map(|(name, _)| name.clone())
                .collect();
            (ready.len() == n && nodes.len() == n).then_some(ready)
        })
        .await
    }

    /// The Machine names carrying the delete-machine mark.
    async fn marked(&self) -> BTreeSet<String> {
        self.standin
            .machines()
            .await
            .unwrap_or_else(|e| panic!("list Machines: {e}"))
            .into_iter()
            .filter(|m| m.marked)
            .map(|m| m.name)
            .collect()
    }

    /// Asserts what must hold at the end of every test: the stand-in never chose a victim
    /// and no server was on a node it deleted; then stops it and removes what it made.
    async fn finish(&self) {
        assert_eq!(
            self.standin.own_choices(),
            0,
            "Cluster API chose victims itself: {:?}",
            self.standin.victims()
        );
        assert_eq!(
            self.standin.lost_servers(),
            vec![],
            "server pods were on nodes Cluster API deleted"
        );
        self.pool.assert_no_lost_servers();
        self.standin.stop();
        let _ = self.standin.cleanup().await;
        let _ = self
            .groups()
            .delete(&self.md, &DeleteParams::default())
            .await;
        self.pool.cleanup().await;
    }
}

/// A node CAPI linked to its Machine: the stand-in's providerID and the machine annotation.
fn linked(node: &Node) -> bool {
    let id = node.spec.as_ref().and_then(|s| s.provider_id.as_deref());
    let annotated = node
        .metadata
        .annotations
        .as_ref()
        .is_some_and(|a| a.contains_key("cluster.x-k8s.io/machine"));
    id.is_some_and(|id| id.starts_with(capi_standin::capi::PROVIDER_ID_PREFIX)) && annotated
}

/// Records every `spec.replicas` the MachineDeployment takes, polling every 50 ms.
struct ReplicaLog {
    seen: Arc<Mutex<Vec<i64>>>,
    task: tokio::task::JoinHandle<()>,
}

impl ReplicaLog {
    fn start(world: &Capi) -> ReplicaLog {
        let api = world.groups();
        let md = world.md.clone();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let log = Arc::clone(&seen);
        let task = tokio::spawn(async move {
            loop {
                if let Ok(obj) = api.get(&md).await {
                    let r = obj.data["spec"]["replicas"].as_i64().unwrap_or(-1);
                    let mut seen = log.lock().unwrap_or_else(PoisonError::into_inner);
                    if seen.last() != Some(&r) {
                        seen.push(r);
                    }
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        });
        ReplicaLog { seen, task }
    }

    fn values(&self) -> Vec<i64> {
        self.seen
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

impl Drop for ReplicaLog {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Growth raises the MachineDeployment's replicas through the scale subresource, never
/// lowers them, and the new Machines' Nodes take the servers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn capi_growth_raises_the_machine_deployment_and_its_machines_take_the_servers() {
    let test = "e2e_clusterapi::growth";
    let Some(w) = capi(test, "capigrow", 1, &[]).await else {
        return;
    };
    let log = ReplicaLog::start(&w);
    let config = w.config(&[("MAXIMUM_NODE_POOL_SIZE", "5"), ("BUFFER_SLOT_SIZE", "2")]);
    w.pool
        .run(async {
            let _kubescaler = w.start_loop(&config);
            // 6 servers + a buffer of 2 on 4-slot nodes: 2 nodes.
            w.pool.create_servers(6, Placement::Scheduler).await;
            let nodes = w.ready_nodes(2).await;
            eventually("every server on a node", WAIT, || async {
                let placed = w.pool.placement().await;
                (placed.len() == 6 && placed.values().all(Option::is_some)).then_some(())
            })
            .await;
            assert_eq!(w.replicas().await, 2, "nodes {nodes:?}");
        })
        .await;
    let values = log.values();
    assert!(
        values.windows(2).all(|p| p[0] <= p[1]),
        "replicas went down during growth: {values:?}"
    );
    assert!(w.standin.victims().is_empty());
    w.finish().await;
}

/// From zero Machines, the group's capacity annotations tell kubescaler a new node's size, so
/// it grows straight to what the buffer needs instead of one node first to learn it. (The
/// driver reaches the Machines through `clusterapi-management-kubeconfig` here.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn capi_scale_from_zero_sizes_the_first_growth_from_the_capacity_annotations() {
    let test = "e2e_clusterapi::scale_from_zero";
    let Some(w) = capi(
        test,
        "capizero",
        0,
        &[
            ("capacity.cluster-autoscaler.kubernetes.io/cpu", "4"),
            ("capacity.cluster-autoscaler.kubernetes.io/memory", "16Gi"),
            ("capacity.cluster-autoscaler.kubernetes.io/maxPods", "110"),
        ],
    )
    .await
    else {
        return;
    };
    let log = ReplicaLog::start(&w);
    // The Machines through clusterapi-management-kubeconfig: the watched cluster's own
    // kubeconfig path leads nowhere, so only that key can connect the driver.
    let management = w.kubeconfig.to_string_lossy().to_string();
    let config = w.config(&[
        ("MINIMUM_NODE_POOL_SIZE", "0"),
        ("MAXIMUM_NODE_POOL_SIZE", "5"),
        ("BUFFER_SLOT_SIZE", "6"),
        ("CLUSTER_KUBE_CONFIG_PATH", "/nonexistent/kubeconfig"),
        ("CLUSTERAPI_MANAGEMENT_KUBECONFIG", &management),
    ]);
    w.pool
        .run(async {
            let _kubescaler = w.start_loop(&config);
            w.ready_nodes(2).await;
            assert!(w.pool.free_slots().await >= 6);
        })
        .await;
    let values = log.values();
    assert_eq!(
        values.iter().copied().find(|r| *r > 0),
        Some(2),
        "the first growth from zero must be 2 nodes (6 slots of 4 per node), not one to learn \
         the size: {values:?}"
    );
    w.finish().await;
}

/// Attrition: the nodes whose servers ended are cordoned, emptied and deleted, exactly those:
/// each through its marked Machine, with the count lowered one by one; the node whose match
/// runs on stays, and Cluster API never picks a victim.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn capi_attrition_deletes_exactly_the_emptied_nodes_through_their_marked_machines() {
    let test = "e2e_clusterapi::attrition";
    let Some(w) = capi(test, "capiattr", 3, &[]).await else {
        return;
    };
    let config = w.config(&[("BUFFER_SLOT_SIZE", "0")]);
    w.pool
        .run(async {
            let nodes = w.ready_nodes(3).await;
            let mut servers = BTreeMap::new();
            for node in &nodes {
                servers.insert(
                    node.clone(),
                    w.pool.create_server(Placement::On(node)).await,
                );
            }
            let _kubescaler = w.start_loop(&config);
            // One server a node, 12 slots for 3 servers and a buffer of 0: two nodes are
            // surplus. kubescaler cordons two (attrition), and nothing goes while they run.
            let cordoned = eventually("two nodes cordoned", WAIT, || async {
                let c = w.pool.observer.ever_cordoned();
                (c.len() == 2).then_some(c)
            })
            .await;
            w.pool.wait_passes(8).await;
            assert_eq!(w.replicas().await, 3, "a node with a running match went");
            assert!(w.standin.victims().is_empty());
            for node in &cordoned {
                w.pool.end_server(&servers[node]).await;
            }
            eventually("the two emptied nodes deleted", WAIT, || async {
                let left: BTreeSet<String> = w.pool.nodes().await.into_keys().collect();
                (left.len() == 1).then_some(())
            })
            .await;
            let busy: Vec<&String> = nodes.iter().filter(|n| !cordoned.contains(*n)).collect();
            assert!(w.pool.node_exists(busy[0]).await, "the busy node went");
            let victims: BTreeSet<String> = w
                .standin
                .victims()
                .iter()
                .filter_map(|v| v.node.clone())
                .collect();
            assert_eq!(victims, cordoned, "Cluster API removed other nodes");
            assert!(
                w.standin.victims().iter().all(|v| v.by_mark),
                "{:?}",
                w.standin.victims()
            );
            assert_eq!(w.replicas().await, 1);
            assert!(w.marked().await.is_empty(), "a mark stayed behind");
        })
        .await;
    w.finish().await;
}

/// A MachineDeployment that cluster-autoscaler manages (its min/max size annotations) is
/// refused: the driver reads and writes nothing of it, and the daemon stops at start saying
/// why. So is a MachineDeployment that does not exist.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn capi_a_group_cluster_autoscaler_manages_or_a_missing_one_is_refused_at_start() {
    let test = "e2e_clusterapi::refusal";
    let Some(w) = capi(
        test,
        "capiref",
        1,
        &[(
            "cluster.x-k8s.io/cluster-api-autoscaler-node-group-max-size",
            "10",
        )],
    )
    .await
    else {
        return;
    };
    let config = w.config(&[]);
    let provider = w.provider(&config);
    let refusal = provider
        .pool()
        .await
        .expect_err("the group must be refused");
    assert!(
        matches!(&refusal, ProviderError::Refused { .. })
            && refusal.to_string().contains("node-group-max-size"),
        "{refusal}"
    );
    assert!(provider.grow_to(3).await.is_err());
    assert_eq!(w.replicas().await, 1, "the refused group was resized");

    // The daemon: it exits at start with the reason, for this group and for a missing one.
    for (pool_name, expected) in [
        (w.md.as_str(), "cluster-autoscaler"),
        ("no-such-group", "not found"),
    ] {
        let mut child = w
            .daemon(&[("NODE_POOL_NAME", pool_name)])
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("run kubescaler: {e}"));
        let started = std::time::Instant::now();
        while child.try_wait().ok().flatten().is_none() {
            if started.elapsed() > WAIT {
                let _ = child.kill();
                panic!("the daemon did not stop on {pool_name}");
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        let output = child.wait_with_output().unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr).to_string()
            + &String::from_utf8_lossy(&output.stdout);
        assert!(!output.status.success(), "the daemon ran on {pool_name}");
        assert!(
            stderr.contains(expected) && stderr.contains(pool_name),
            "the daemon's error for {pool_name} lacks {expected:?}:\n{stderr}"
        );
    }
    assert_eq!(w.replicas().await, 1);
    w.finish().await;
}

/// A ValidatingAdmissionPolicy (and its binding) that makes the API server refuse every write
/// of `md`'s scale subresource, or `None` once removed.
struct ScaleRefusal {
    client: Client,
    name: String,
}

impl ScaleRefusal {
    fn api(client: &Client, kind: &str, plural: &str) -> Api<DynamicObject> {
        Api::all_with(
            client.clone(),
            &ApiResource {
                group: "admissionregistration.k8s.io".into(),
                version: "v1".into(),
                api_version: "admissionregistration.k8s.io/v1".into(),
                kind: kind.into(),
                plural: plural.into(),
            },
        )
    }

    async fn install(client: &Client, md: &str) -> ScaleRefusal {
        let name = format!("refuse-scale-{md}");
        let policy = json!({
            "apiVersion": "admissionregistration.k8s.io/v1",
            "kind": "ValidatingAdmissionPolicy",
            "metadata": {"name": name},
            "spec": {
                "failurePolicy": "Fail",
                "matchConstraints": {"resourceRules": [{
                    "apiGroups": ["cluster.x-k8s.io"], "apiVersions": ["*"],
                    "operations": ["UPDATE"], "resources": ["machinedeployments/scale"],
                    "resourceNames": [md],
                }]},
                "validations": [{"expression": "false",
                                 "message": "e2e fault: the scale call fails"}],
            },
        });
        let binding = json!({
            "apiVersion": "admissionregistration.k8s.io/v1",
            "kind": "ValidatingAdmissionPolicyBinding",
            "metadata": {"name": name},
            "spec": {"policyName": name, "validationActions": ["Deny"]},
        });
        for (kind, plural, object) in [
            (
                "ValidatingAdmissionPolicy",
                "validatingadmissionpolicies",
                policy,
            ),
            (
                "ValidatingAdmissionPolicyBinding",
                "validatingadmissionpolicybindings",
                binding,
            ),
        ] {
            let object: DynamicObject = serde_json::from_value(object).unwrap();
            Self::api(client, kind, plural)
                .create(&PostParams::default(), &object)
                .await
                .unwrap_or_else(|e| panic!("create {kind} {name}: {e}"));
        }
        ScaleRefusal {
            client: client.clone(),
            name,
        }
    }

    async fn remove(&self) {
        for (kind, plural) in [
            (
                "ValidatingAdmissionPolicyBinding",
                "validatingadmissionpolicybindings",
            ),
            ("ValidatingAdmissionPolicy", "validatingadmissionpolicies"),
        ] {
            let _ = Self::api(&self.client, kind, plural)
                .delete(&self.name, &DeleteParams::default())
                .await;
        }
    }
}

/// Writes `md`'s current replicas back through the scale subresource: whether the API server
/// takes a scale write now (a probe of the refusal policy that changes nothing).
async fn scale_write_accepted(world: &Capi) -> bool {
    let api = world.groups();
    let Ok(scale) = api.get_scale(&world.md).await else {
        return false;
    };
    api.replace_scale(&world.md, &PostParams::default(), &scale)
        .await
        .is_ok()
}

/// The provider, recording each deletion's result.
struct Recorded {
    inner: Arc<dyn NodePoolProvider>,
    deletions: Mutex<Vec<Result<String, String>>>,
}

#[async_trait]
impl NodePoolProvider for Recorded {
    async fn pool(&self) -> Result<CloudPool, ProviderError> {
        self.inner.pool().await
    }
    async fn grow_to(&self, target: u32) -> Result<(), ProviderError> {
        self.inner.grow_to(target).await
    }
    fn find(&self, node: &NodeRef, pool: &CloudPool) -> Result<Option<CloudNode>, ProviderError> {
        self.inner.find(node, pool)
    }
    async fn delete_instance(&self, node: &CloudNode) -> Result<(), ProviderError> {
        let result = self.inner.delete_instance(node).await;
        self.deletions
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(match &result {
                Ok(()) => Ok(node.id.clone()),
                Err(e) => Err(e.to_string()),
            });
        result
    }
}

/// The scale call fails after the Machine was marked: the mark comes off again (so no later,
/// unrelated scale-down takes that Machine), the count stays, nothing is deleted; once the
/// API server takes scale writes again, the retry deletes exactly that node.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn capi_a_scale_call_that_fails_after_the_mark_takes_the_mark_off_again() {
    let test = "e2e_clusterapi::scale_fails";
    let Some(w) = capi(test, "capifail", 2, &[]).await else {
        return;
    };
    let refusal = ScaleRefusal::install(&w.pool.client, &w.md).await;
    eventually("the API server refusing scale writes", WAIT, || async {
        (!scale_write_accepted(&w).await).then_some(())
    })
    .await;
    let config = w.config(&[("BUFFER_SLOT_SIZE", "0")]);
    let recorded = Arc::new(Recorded {
        inner: w.provider(&config),
        deletions: Mutex::new(Vec::new()),
    });
    let provider: Arc<dyn NodePoolProvider> = recorded.clone();
    let failures = || {
        recorded
            .deletions
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .filter_map(|r| r.as_ref().err().cloned())
            .collect::<Vec<_>>()
    };
    w.pool
        .run(async {
            let nodes = w.ready_nodes(2).await;
            w.pool.create_server(Placement::On(&nodes[1])).await;
            let _kubescaler = w.pool.start_loop_on(&config, provider, |c| c);
            let failed = eventually("a deletion failing on the scale call", WAIT, || async {
                failures().into_iter().next()
            })
            .await;
            assert!(failed.contains("update scale"), "{failed}");
            assert!(
                w.marked().await.is_empty(),
                "the mark stayed after: {failed}"
            );
            assert_eq!(w.replicas().await, 2);
            assert!(w.standin.victims().is_empty());
            assert!(w.pool.node_exists(&nodes[0]).await);

            // The API server takes scale writes again: the retry (after the deletion
            // backoff) deletes exactly the emptied node.
            refusal.remove().await;
            eventually("the emptied node deleted", WAIT + WAIT, || async {
                (!w.pool.node_exists(&nodes[0]).await).then_some(())
            })
            .await;
            let victims: Vec<Option<String>> =
                w.standin.victims().into_iter().map(|v| v.node).collect();
            assert_eq!(victims, vec![Some(nodes[0].clone())]);
            assert!(w.pool.node_exists(&nodes[1]).await);
            assert_eq!(w.replicas().await, 1);
        })
        .await;
    refusal.remove().await;
    w.finish().await;
}

/// kubescaler's view of the cluster, with a person uncordoning `node` (as `kubectl uncordon`
/// does) right after kubescaler fenced it for deletion and before its live re-check.
struct UncordonBeforeRecheck {
    cluster: Arc<KubeCluster>,
    client: Client,
    node: String,
    done: AtomicBool,
}

#[async_trait]
impl Kubernetes for UncordonBeforeRecheck {
    async fn snapshot(&self) -> Result<ClusterSnapshot, KubeError> {
        self.cluster.snapshot().await
    }
    async fn mark(&self, node: &str, op: MarkOp) -> Result<MarkOutcome, KubeError> {
        self.cluster.mark(node, op).await
    }
    async fn live_node(&self, node: &str) -> Result<Option<NodeState>, KubeError> {
        self.cluster.live_node(node).await
    }
    async fn live_server_pods(&self, node: &str) -> Result<Vec<String>, KubeError> {
        if node == self.node && !self.done.swap(true, Ordering::SeqCst) {
            let nodes: Api<Node> = Api::all(self.client.clone());
            let params = PatchParams {
                field_manager: Some("kubectl-cordon".into()),
                ..Default::default()
            };
            nodes
                .patch(
                    node,
                    &params,
                    &Patch::Strategic(json!({"spec": {"unschedulable": false}})),
                )
                .await
                .map_err(|e| KubeError::Client(format!("the person's uncordon: {e}")))?;
        }
        self.cluster.live_server_pods(node).await
    }
    fn changes(&self) -> broadcast::Receiver<ChangeEvent> {
        self.cluster.changes()
    }
    async fn publish_event(&self, event: &ActionEvent) -> Result<(), KubeError> {
        self.cluster.publish_event(event).await
    }
    fn synced(&self) -> bool {
        self.cluster.synced()
    }
}

/// A person uncordons a node in the middle of its deletion: the deletion is cancelled before
/// its Machine is marked or the count lowered, and a match that then starts there runs on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn capi_a_node_a_person_uncordons_mid_deletion_is_kept_and_its_machine_never_marked() {
    let test = "e2e_clusterapi::uncordon_mid_deletion";
    let Some(w) = capi(test, "capiunc", 2, &[]).await else {
        return;
    };
    let config = w.config(&[("BUFFER_SLOT_SIZE", "0")]);
    w.pool
        .run(async {
            let nodes = w.ready_nodes(2).await;
            w.pool.create_server(Placement::On(&nodes[1])).await;
            let target = nodes[0].clone();
            let client = w.pool.client.clone();
            let _kubescaler = w
                .pool
                .start_loop_on(&config, w.provider(&config), |cluster| {
                    Arc::new(UncordonBeforeRecheck {
                        cluster,
                        client,
                        node: target.clone(),
                        done: AtomicBool::new(false),
                    })
                });
            // The cancelled deletion lifts the fence; the node is schedulable again.
            eventually(
                "the deletion cancelled and the fence lifted",
                WAIT,
                || async {
                    let nodes = w.pool.nodes().await;
                    let node = nodes.get(&target)?;
                    let fenced = node
                        .spec
                        .as_ref()
                        .and_then(|s| s.taints.as_ref())
                        .is_some_and(|t| t.iter().any(|t| t.key == FENCE_TAINT));
                    let history = w.pool.observer.history(&target);
                    (history.cordoned_at.is_some()
                        && history.uncordoned_at.is_some()
                        && !fenced
                        && !is_cordoned(node))
                    .then_some(())
                },
            )
            .await;
            // A match starts on the node the person reopened.
            w.pool.create_server(Placement::On(&target)).await;
            w.pool.wait_passes(5).await;
            assert!(w.pool.node_exists(&target).await, "the reopened node went");
            assert_eq!(w.replicas().await, 2);
            assert!(w.marked().await.is_empty());
            assert!(w.standin.victims().is_empty());
        })
        .await;
    w.finish().await;
}

fn is_cordoned(node: &Node) -> bool {
    node.spec
        .as_ref()
        .and_then(|s| s.unschedulable)
        .unwrap_or(false)
}

/// `kubescaler explain` and `/debug/plan` on a pool with a node of every class: each node is
/// shown with its class, servers and what kubescaler does with it or why not, and `explain`
/// writes nothing (no node, MachineDeployment or Machine changes).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn explain_shows_every_node_class_and_why_and_changes_nothing() {
    let test = "e2e_clusterapi::explain";
    let Some(w) = capi(test, "capiexp", 5, &[]).await else {
        return;
    };
    w.pool
        .run(async {
            let mut names = w.ready_nodes(5).await;
            names.sort();
            let [active, ours, foreign, deleting, unready] =
                <[String; 5]>::try_from(names).unwrap_or_else(|n| panic!("five nodes, got {n:?}"));
            w.pool.create_server(Placement::On(&active)).await;
            let cluster = KubeCluster::start(
                w.pool.client.clone(),
                &w.pool.selector(),
                (SERVER_LABEL.to_string(), w.pool.id.clone()),
            );
            eventually("the marking cache synced", WAIT, || async {
                cluster.synced().then_some(())
            })
            .await;
            let now = jiff::Timestamp::now();
            for (node, ops) in [
                (&ours, vec![MarkOp::Cordon(now)]),
                (
                    &deleting,
                    vec![
                        MarkOp::Cordon(now),
                        MarkOp::Fence(now),
                        MarkOp::AcceptDeletion(now),
                    ],
                ),
            ] {
                for op in ops {
                    let outcome = cluster
                        .mark(node, op)
                        .await
                        .unwrap_or_else(|e| panic!("{} {node}: {e}", op.as_str()));
                    assert!(
                        matches!(outcome, MarkOutcome::Applied(_)),
                        "{} {node}: {outcome:?}",
                        op.as_str()
                    );
                }
            }
            w.pool.admin_cordon(&foreign).await;
            // A kubelet that stopped reporting: Ready False (the stand-in sets it only once).
            let nodes_api: Api<Node> = Api::all(w.pool.client.clone());
            let not_ready = json!({"status": {"conditions": [{
                "type": "Ready", "status": "False", "reason": "KubeletStopped",
                "lastHeartbeatTime": now.to_string(), "lastTransitionTime": now.to_string(),
            }]}});
            nodes_api
                .patch_status(&unready, &PatchParams::default(), &Patch::Merge(&not_ready))
                .await
                .unwrap_or_else(|e| panic!("make {unready} NotReady: {e}"));
            // A node the selector matches that no Machine of the group stands for.
            let outside = format!("{}-outside", w.pool.id);
            let node: Node = serde_json::from_value(json!({
                "metadata": {"name": outside, "labels": {POOL_LABEL: w.pool.id}},
            }))
            .unwrap_or_else(|e| panic!("node: {e}"));
            nodes_api
                .create(&PostParams::default(), &node)
                .await
                .unwrap_or_else(|e| panic!("create {outside}: {e}"));
            eventually("the server bound and the marks seen", WAIT, || async {
                let placed = w.pool.placement().await;
                let nodes = w.pool.nodes().await;
                (placed
                    .values()
                    .all(|n| n.as_deref() == Some(active.as_str()))
                    && nodes.get(&foreign).is_some_and(is_cordoned)
                    && nodes.len() == 6)
                    .then_some(())
            })
            .await;

            let versions = |nodes: &BTreeMap<String, Node>| -> BTreeMap<String, Option<String>> {
                nodes
                    .iter()
                    .map(|(n, node)| (n.clone(), node.metadata.resource_version.clone()))
                    .collect()
            };
            let before = versions(&w.pool.nodes().await);
            let machines_before = w.standin.machines().await.expect("list Machines").len();
            let explain = |settings: &[(&str, &str)], output: &str| {
                let output = w
                    .daemon(settings)
                    .args(["explain", "--output", output])
                    .output()
                    .unwrap_or_else(|e| panic!("run kubescaler explain: {e}"));
                let stdout = String::from_utf8_lossy(&output.stdout).to_string();
                assert!(
                    output.status.success(),
                    "explain failed:\n{stdout}\n{}",
                    String::from_utf8_lossy(&output.stderr)
                );
                stdout
            };
            let settings = [
                ("BUFFER_SLOT_SIZE", "2"),
                ("EMPTY_NODE_EXPIRATION_SEC", "1800"),
                ("NODE_BOOT_TIMEOUT_SEC", "600"),
            ];
            let json: serde_json::Value = serde_json::from_str(&explain(&settings, "json"))
                .unwrap_or_else(|e| panic!("explain --output json: {e}"));
            let rows = |plan: &serde_json::Value| -> BTreeMap<String, (String, u64, String)> {
                plan["nodes"]
                    .as_array()
                    .unwrap_or_else(|| panic!("no nodes in {plan}"))
                    .iter()
                    .map(|n| {
                        (
                            n["name"].as_str().unwrap_or_default().to_string(),
                            (
                                n["class"].as_str().unwrap_or_default().to_string(),
                                n["servers"].as_u64().unwrap_or(u64::MAX),
                                n["verdict"].as_str().unwrap_or_default().to_string(),
                            ),
                        )
                    })
                    .collect()
            };
            let explained = rows(&json);
            let expect = |rows: &BTreeMap<String, (String, u64, String)>,
                          node: &str,
                          class: &str,
                          servers: u64,
                          verdict: &str| {
                let (c, s, v) = rows
                    .get(node)
                    .unwrap_or_else(|| panic!("{node} not explained: {rows:?}"));
                assert_eq!((c.as_str(), *s), (class, servers), "{node}: {v}");
                assert!(
                    v.contains(verdict),
                    "{node} ({class}): {v:?} lacks {verdict:?}"
                );
            };
            expect(&explained, &active, "active", 1, "kept: 1 server");
            // 30 minutes from its cordon, less the seconds since.
            expect(&explained, &ours, "kubescaler's", 0, "empty: deletable in ");
            let (_, _, verdict) = &explained[&ours];
            assert!(
                verdict.ends_with("deletable in 30m") || verdict.contains("deletable in 29m"),
                "{verdict}"
            );
            expect(
                &explained,
                &foreign,
                "someone else's",
                0,
                "cordoned by someone else: never touched",
            );
            expect(&explained, &deleting, "deleting", 0, "being deleted");
            expect(&explained, &unready, "booting", 0, "booting");
            expect(
                &explained,
                &outside,
                "outside-pool",
                0,
                "not in the cloud pool",
            );
            assert_eq!(explained.len(), 6, "{explained:?}");

            // Past its boot timeout, the silent node counts for nothing; the text table says
            // the same as the JSON, one row per node.
            let text = explain(&[("NODE_BOOT_TIMEOUT_SEC", "1")], "text");
            let row = |node: &str| -> String {
                text.lines()
                    .find(|l| l.split_whitespace().next() == Some(node))
                    .unwrap_or_else(|| panic!("no row for {node} in:\n{text}"))
                    .to_string()
            };
            assert!(row(&unready).contains("not-ready"), "{text}");
            assert!(row(&active).contains("kept: 1 server"), "{text}");
            assert!(row(&foreign).contains("never touched"), "{text}");
            assert!(
                text.contains("NODE") && text.contains("\nplan:\n"),
                "{text}"
            );

            // Nothing was written by either pass.
            assert_eq!(
                versions(&w.pool.nodes().await),
                before,
                "explain changed a node"
            );
            assert_eq!(w.replicas().await, 5, "explain resized the group");
            assert_eq!(
                w.standin.machines().await.expect("list").len(),
                machines_before
            );
            assert!(w.marked().await.is_empty(), "explain marked a Machine");

            // The daemon's listener shows the same view of its last pass (dry run: no writes).
            let port = std::net::TcpListener::bind("127.0.0.1:0")
                .and_then(|l| l.local_addr())
                .map(|a| a.port())
                .unwrap_or_else(|e| panic!("free port: {e}"));
            let address = format!("127.0.0.1:{port}");
            let mut daemon = w
                .daemon(&[
                    settings[0],
                    settings[1],
                    settings[2],
                    ("DRY_RUN", "true"),
                    ("SCALE_LOOP_TICK_SEC", "1"),
                    ("HTTP_LISTEN_ADDRESS", &address),
                ])
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .spawn()
                .unwrap_or_else(|e| panic!("run kubescaler: {e}"));
            let url = format!("http://{address}/debug/plan");
            let served = eventually("/debug/plan answers with a plan", WAIT, || async {
                let response = reqwest::get(&url).await.ok()?;
                (response.status() == 200).then_some(())?;
                response.json::<serde_json::Value>().await.ok()
            })
            .await;
            let _ = daemon.kill();
            let _ = daemon.wait();
            assert!(served["at"].is_string(), "{served}");
            let served = rows(&served["plan"]);
            for (node, class) in [
                (&active, "active"),
                (&ours, "kubescaler's"),
                (&foreign, "someone else's"),
                (&deleting, "deleting"),
                (&unready, "booting"),
                (&outside, "outside-pool"),
            ] {
                assert_eq!(served.get(node.as_str()).map(|r| r.0.as_str()), Some(class));
            }
            assert_eq!(w.replicas().await, 5, "the dry run resized the group");
            let _ = nodes_api.delete(&outside, &DeleteParams::default()).await;
        })
        .await;
    w.finish().await;
}
