//! Cluster API's real CRDs (`hack/capi-crds.sh`) in the real local API server, and the CAPI
//! controller stand-in (`hack/capi-standin`) on them: the ground the `clusterapi` provider's
//! end-to-end tests (issue 13) stand on. What is checked is what those tests rely on: a
//! scale through `/scale` becomes Machines and Ready Nodes with matching providerIDs; a
//! `delete-machine` mark decides which Machine goes; without a mark the stand-in picks the
//! victim itself, as CAPI does, and says so; a server still on a deleted node is recorded lost.
//!
//! Gated by `tests/cluster` (`KUBESCALER_E2E_KUBECONFIG`) and by `KUBESCALER_CAPI_CRDS` (the
//! directory `hack/capi-crds.sh` prints); both required in CI. Each test has its own
//! MachineDeployment and pool label in the shared namespace [`NS`], so they run in parallel.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use capi_standin::capi::{
    DELETE_MACHINE_ANNOTATION, DEPLOYMENT_NAME_LABEL, MACHINE_ANNOTATION, OWNER_KIND_ANNOTATION,
    OWNER_NAME_ANNOTATION,
};
use capi_standin::{
    create_machine_deployment, ensure_namespace, install_crds, CapiStandIn, Choice, DeletionOrder,
    Kind, MachineView, StandInOptions,
};
use k8s_openapi::api::core::v1::{Node, Pod};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use kube::core::DynamicObject;
use kube::Client;
use serde_json::json;

mod cluster;
use cluster::cloud::{unique_id, POOL_LABEL, SERVER_LABEL, WAIT};
use cluster::{client_or_skip, eventually, prereq};

/// Environment variable naming the CRD directory `hack/capi-crds.sh` prints.
/// Namespace of every test's MachineDeployment.
const NS: &str = "capi-standin-e2e";
/// Boot delay of the tests' Machines.
const BOOT: Duration = Duration::from_secs(2);

/// A client with the CRDs installed and [`NS`] present, or `None` to skip.
async fn setup(test: &str) -> Option<Client> {
    let client = client_or_skip(test).await?;
    let crds = prereq::capi_crds_or_skip(test)?;
    let names = install_crds(&client, &crds)
        .await
        .unwrap_or_else(|e| panic!("{test}: install {}: {e}", crds.display()));
    assert!(
        names
            .iter()
            .any(|n| n == "machinedeployments.cluster.x-k8s.io"),
        "{names:?}"
    );
    ensure_namespace(&client, NS)
        .await
        .unwrap_or_else(|e| panic!("{test}: {e}"));
    Some(client)
}

/// A MachineDeployment `id` of `replicas` and a stand-in for it whose nodes carry
/// `POOL_LABEL=id` (`adjust` changes the options first).
async fn deployment(
    client: &Client,
    id: &str,
    replicas: i32,
    adjust: impl FnOnce(&mut StandInOptions),
) -> CapiStandIn {
    create_machine_deployment(
        client,
        NS,
        id,
        "e2e",
        replicas,
        &BTreeMap::new(),
        &BTreeMap::new(),
    )
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    let mut opts = StandInOptions::new(NS, id);
    opts.boot_delay = BOOT;
    opts.delete_delay = Duration::from_millis(500);
    opts.node_labels = BTreeMap::from([(POOL_LABEL.to_string(), id.to_string())]);
    opts.server_selector = format!("{SERVER_LABEL}={id}");
    adjust(&mut opts);
    CapiStandIn::start(client.clone(), opts)
}

/// Sets the MachineDeployment's replicas through its `/scale` subresource.
async fn scale(client: &Client, md: &str, replicas: i32) {
    let api = Kind::MachineDeployment.api(client.clone(), NS);
    let patch = json!({"spec": {"replicas": replicas}});
    let scale = api
        .patch_scale(md, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .unwrap_or_else(|e| panic!("scale {md} to {replicas}: {e}"));
    // A zero is left out of the answer.
    let answered = scale.spec.and_then(|s| s.replicas).unwrap_or(0);
    assert_eq!(answered, replicas, "/scale of {md}");
}

/// Whether `node` exists, has `provider_id`, the machine annotation `machine`, is Ready and
/// untainted.
fn node_matches(node: &Node, machine: &MachineView) -> bool {
    let spec = node.spec.clone().unwrap_or_default();
    let annotations = node.metadata.annotations.clone().unwrap_or_default();
    let ready = node
        .status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"));
    spec.provider_id.is_some()
        && spec.provider_id == machine.provider_id
        && annotations.get(MACHINE_ANNOTATION) == Some(&machine.name)
        && ready
        && spec.taints.unwrap_or_default().is_empty()
}

/// Waits until the MachineDeployment has `n` Machines, each Running with a Ready Node that
/// matches it; returns them by name.
async fn ready_machines(client: &Client, standin: &CapiStandIn, n: usize) -> Vec<MachineView> {
    let nodes: Api<Node> = Api::all(client.clone());
    let md = standin.options().machine_deployment.clone();
    eventually(&format!("{n} Ready machines of {md}"), WAIT, || async {
        let machines = standin.machines().await.ok()?;
        if machines.len() != n || machines.iter().any(|m| m.deleting) {
            return None;
        }
        for m in &machines {
            let node = nodes.get_opt(m.node.as_deref()?).await.ok()??;
            if m.phase.as_deref() != Some("Running") || !node_matches(&node, m) {
                return None;
            }
        }
        Some(machines)
    })
    .await
}

async fn node_exists(client: &Client, name: &str) -> bool {
    let nodes: Api<Node> = Api::all(client.clone());
    nodes
        .get_opt(name)
        .await
        .unwrap_or_else(|e| panic!("get node {name}: {e}"))
        .is_some()
}

#[tokio::test]
async fn capi_crds_store_v1beta2_and_refuse_what_only_capis_webhooks_would_fill_in() {
    let test = "capi_crds_store_v1beta2_and_refuse_what_only_capis_webhooks_would_fill_in";
    let Some(client) = setup(test).await else {
        return;
    };
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    for kind in ["machinedeployments", "machinesets", "machines"] {
        let crd = crds
            .get(&format!("{kind}.cluster.x-k8s.io"))
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let stored = crd.status.and_then(|s| s.stored_versions);
        assert_eq!(stored, Some(vec!["v1beta2".to_string()]), "{kind}");
    }
    let api = Kind::MachineDeployment.api(client.clone(), NS);
    let bare: DynamicObject = serde_json::from_value(json!({
        "apiVersion": "cluster.x-k8s.io/v1beta2", "kind": "MachineDeployment",
        "metadata": {"name": unique_id("capi-bare"), "namespace": NS},
        "spec": {},
    }))
    .unwrap();
    match api.create(&PostParams::default(), &bare).await {
        Err(kube::Error::Api(s)) => {
            assert_eq!(s.code, 422, "{s:?}");
            for field in ["spec.clusterName", "spec.selector", "spec.template"] {
                assert!(s.message.contains(field), "{field} not in {}", s.message);
            }
        }
        other => panic!("a MachineDeployment without the required fields: {other:?}"),
    }
    // Without spec.replicas (the webhook would default it) `/scale` cannot even be read.
    let id = unique_id("capi-norep");
    let mut value = capi_standin::machine_deployment_object(
        NS,
        &id,
        "e2e",
        0,
        &BTreeMap::new(),
        &BTreeMap::new(),
    );
    value["spec"].as_object_mut().unwrap().remove("replicas");
    let object: DynamicObject = serde_json::from_value(value).unwrap();
    api.create(&PostParams::default(), &object)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let err = api
        .get_scale(&id)
        .await
        .expect_err("scale without replicas");
    assert!(
        matches!(&err, kube::Error::Api(s) if s.code == 500),
        "{err:?}"
    );
    api.delete(&id, &DeleteParams::default()).await.unwrap();
}

#[tokio::test]
async fn scaling_up_through_scale_yields_machines_and_ready_nodes_with_their_provider_id() {
    let test = "scaling_up_through_scale_yields_machines_and_ready_nodes_with_their_provider_id";
    let Some(client) = setup(test).await else {
        return;
    };
    let id = unique_id("capi-up");
    let standin = deployment(&client, &id, 0, |_| {}).await;
    eventually("the MachineSet", WAIT, || async { standin.machine_set() }).await;

    let asked = Instant::now();
    scale(&client, &id, 3).await;
    let machines = ready_machines(&client, &standin, 3).await;
    let took = asked.elapsed();
    // Never before the boot delay (a node is Ready at boot delay after its Machine's
    // creation), and on an idle machine soon after it (polls, a busy 2-core CI aside).
    assert!(
        took >= BOOT,
        "Ready after {took:?}, before the boot delay {BOOT:?}"
    );
    eprintln!("{test}: 3 Machines with Ready Nodes {took:?} after the scale call (boot {BOOT:?})");

    let ms = standin.machine_set().unwrap();
    let nodes: Api<Node> = Api::all(client.clone());
    for m in &machines {
        assert_eq!(
            m.provider_id.as_deref(),
            Some(format!("capi-standin://{}", m.name).as_str())
        );
        let node = nodes.get(m.node.as_deref().unwrap()).await.unwrap();
        let annotations = node.metadata.annotations.clone().unwrap_or_default();
        assert_eq!(
            annotations.get(OWNER_KIND_ANNOTATION).map(String::as_str),
            Some("MachineSet")
        );
        assert_eq!(annotations.get(OWNER_NAME_ANNOTATION), Some(&ms));
        let labels = node.metadata.labels.clone().unwrap_or_default();
        assert_eq!(labels.get(POOL_LABEL), Some(&id));
        let alloc = node.status.and_then(|s| s.allocatable).unwrap_or_default();
        assert_eq!(alloc.get("cpu").map(|q| q.0.as_str()), Some("4"));
    }
    // The Machines' labels and owner, and the replicas the scale subresource reports.
    let raw = Kind::Machine
        .api(client.clone(), NS)
        .get(&machines[0].name)
        .await
        .unwrap();
    let labels = raw.metadata.labels.clone().unwrap_or_default();
    assert_eq!(labels.get(DEPLOYMENT_NAME_LABEL), Some(&id));
    assert_eq!(labels.get("cluster.x-k8s.io/set-name"), Some(&ms));
    let owner = &raw.metadata.owner_references.as_ref().unwrap()[0];
    assert_eq!(
        (owner.kind.as_str(), owner.name.as_str()),
        ("MachineSet", ms.as_str())
    );
    let md_api = Kind::MachineDeployment.api(client.clone(), NS);
    eventually("status.replicas 3 through /scale", WAIT, || async {
        let s = md_api.get_scale(&id).await.ok()?;
        (s.status?.replicas == 3).then_some(())
    })
    .await;
    let md = md_api.get(&id).await.unwrap();
    assert_eq!(
        md.data["status"]["readyReplicas"],
        json!(3),
        "{:?}",
        md.data["status"]
    );
    assert!(standin.victims().is_empty());
    standin.cleanup().await.unwrap();
}

#[tokio::test]
async fn lowering_replicas_by_one_removes_exactly_the_machine_marked_delete_machine() {
    let test = "lowering_replicas_by_one_removes_exactly_the_machine_marked_delete_machine";
    let Some(client) = setup(test).await else {
        return;
    };
    let id = unique_id("capi-mark");
    let standin = deployment(&client, &id, 3, |_| {}).await;
    let machines = ready_machines(&client, &standin, 3).await;
    // CAPI's default order (Random) takes the first by name: mark the last.
    let marked = machines.last().unwrap().clone();
    let api = Kind::Machine.api(client.clone(), NS);
    let patch =
        json!({"metadata": {"annotations": {DELETE_MACHINE_ANNOTATION: "2026-01-01T00:00:00Z"}}});
    api.patch(&marked.name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .unwrap();
    scale(&client, &id, 2).await;

    let node = marked.node.clone().unwrap();
    eventually("a victim", WAIT, || async {
        (!standin.victims().is_empty()).then_some(())
    })
    .await;
    let victims = standin.victims();
    assert_eq!(victims.len(), 1, "{victims:?}");
    assert_eq!(victims[0].machine, marked.name, "{victims:?}");
    assert_eq!(victims[0].node.as_deref(), Some(node.as_str()));
    assert!(victims[0].by_mark, "{victims:?}");
    eventually("the marked Machine and its Node gone", WAIT, || async {
        let left = standin.machines().await.ok()?;
        let gone = !left.iter().any(|m| m.name == marked.name);
        (gone && left.len() == 2 && !node_exists(&client, &node).await).then_some(())
    })
    .await;
    assert_eq!(standin.victims().len(), 1, "{:?}", standin.victims());
    assert_eq!(standin.own_choices(), 0);
    let left = ready_machines(&client, &standin, 2).await;
    assert_eq!(
        left.iter().map(|m| &m.name).collect::<Vec<_>>(),
        machines[..2].iter().map(|m| &m.name).collect::<Vec<_>>()
    );
    standin.cleanup().await.unwrap();
}

#[tokio::test]
async fn lowering_replicas_without_a_mark_lets_the_standin_choose_newest_first() {
    let test = "lowering_replicas_without_a_mark_lets_the_standin_choose_newest_first";
    let Some(client) = setup(test).await else {
        return;
    };
    let id = unique_id("capi-own");
    let standin = deployment(&client, &id, 2, |_| {}).await;
    // The MachineDeployment's own order, which the MachineSet follows.
    let patch = json!({"spec": {"deletion": {"order": "Newest"}}});
    Kind::MachineDeployment
        .api(client.clone(), NS)
        .patch(&id, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .unwrap();
    let first = ready_machines(&client, &standin, 2).await;
    // creationTimestamp has whole seconds: the boot delay (2 s) puts the third in a later one.
    scale(&client, &id, 3).await;
    let all = ready_machines(&client, &standin, 3).await;
    let newest = all
        .iter()
        .find(|m| !first.iter().any(|f| f.name == m.name))
        .unwrap()
        .clone();
    assert!(
        all.iter()
            .all(|m| m.name == newest.name || m.created < newest.created),
        "{all:?}"
    );
    let ms = standin.machine_set().unwrap();
    let ms_obj = Kind::MachineSet
        .api(client.clone(), NS)
        .get(&ms)
        .await
        .unwrap();
    assert_eq!(ms_obj.data["spec"]["deletion"]["order"], json!("Newest"));

    scale(&client, &id, 2).await;
    eventually("one victim", WAIT, || async {
        (standin.victims().len() == 1).then_some(())
    })
    .await;
    let victims = standin.victims();
    assert_eq!(standin.own_choices(), 1, "{victims:?}");
    assert!(!victims[0].by_mark);
    assert_eq!(victims[0].choice, Choice::Order(DeletionOrder::Newest));
    assert_eq!(victims[0].machine, newest.name, "{all:?}");
    let left = ready_machines(&client, &standin, 2).await;
    assert!(!left.iter().any(|m| m.name == newest.name));
    assert!(!node_exists(&client, newest.node.as_deref().unwrap()).await);
    standin.cleanup().await.unwrap();
}

#[tokio::test]
async fn a_server_pod_still_bound_to_a_node_the_standin_deletes_is_recorded_lost() {
    let test = "a_server_pod_still_bound_to_a_node_the_standin_deletes_is_recorded_lost";
    let Some(client) = setup(test).await else {
        return;
    };
    let id = unique_id("capi-lost");
    let standin = deployment(&client, &id, 1, |_| {}).await;
    let machines = ready_machines(&client, &standin, 1).await;
    let node = machines[0].node.clone().unwrap();

    // A server bound to the node, and a pod of something else there (not a server).
    let pods: Api<Pod> = Api::namespaced(client.clone(), NS);
    let server = format!("{id}-server");
    let other = format!("{id}-other");
    for (name, label) in [(&server, SERVER_LABEL), (&other, "role")] {
        let pod: Pod = serde_json::from_value(json!({
            "metadata": {"name": name, "labels": {label: id}},
            "spec": {
                "nodeName": node,
                "terminationGracePeriodSeconds": 0,
                "containers": [{"name": "game", "image": "registry.invalid/never-pulled:1"}],
            },
        }))
        .unwrap();
        pods.create(&PostParams::default(), &pod).await.unwrap();
    }
    scale(&client, &id, 0).await;
    // Recorded right after the node's DELETE returns.
    eventually("the node deleted and its server recorded", WAIT, || async {
        let recorded = !standin.lost_servers().is_empty();
        (recorded && !node_exists(&client, &node).await).then_some(())
    })
    .await;
    let lost = standin.lost_servers();
    assert_eq!(lost.len(), 1, "{lost:?}");
    assert_eq!(lost[0].node, node);
    assert_eq!(lost[0].machine, machines[0].name);
    assert_eq!(lost[0].pod, format!("{NS}/{server}"));
    eventually("no Machine left", WAIT, || async {
        standin.machines().await.ok()?.is_empty().then_some(())
    })
    .await;
    assert_eq!(standin.own_choices(), 1);
    let now = DeleteParams {
        grace_period_seconds: Some(0),
        ..Default::default()
    };
    for name in [&server, &other] {
        pods.delete(name, &now).await.unwrap();
    }
    standin.cleanup().await.unwrap();
}
