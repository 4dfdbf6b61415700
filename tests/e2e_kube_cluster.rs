//! `KubeCluster` against a real API server (`hack/controlplane.sh start`).
//!
//! Gated by `tests/cluster` (`KUBESCALER_E2E_KUBECONFIG`; required in CI). The control plane has no
//! kubelets and no controller-manager: the tests create Node objects and patch their status
//! themselves, and bind pods by setting `spec.nodeName`.

use std::collections::BTreeMap;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures::FutureExt;
use k8s_openapi::api::core::v1::{Container, Node, Pod, PodSpec, ResourceRequirements};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use kube::config::Kubeconfig;
use kube::Client;
use kubescaler::config::{load, ConfigSources};
use kubescaler::kubernetes::{ChangeEvent, KubeCluster, Kubernetes, MarkOp, MarkOutcome};
use kubescaler::model::{ClusterSnapshot, CORDONED_BY_ANNOTATION, TIMESTAMP_ANNOTATION};
use serde_json::json;
use tokio::sync::broadcast;

mod cluster;
use cluster::client_or_skip;

const NAMESPACE: &str = "default";
const WAIT: Duration = Duration::from_secs(30);

/// A name part unique to this test run.
fn unique(test: &str) -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or_default();
    format!("{test}-{}-{nanos}", std::process::id())
}

/// Creates a Ready node with `labels` and the given allocatable, as a kubelet would report it.
async fn create_node(nodes: &Api<Node>, name: &str, labels: &[(&str, &str)], cpu: &str, mem: &str) {
    let node = Node {
        metadata: ObjectMeta {
            name: Some(name.to_string()),
            labels: Some(
                labels
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
            ),
            ..Default::default()
        },
        ..Default::default()
    };
    nodes
        .create(&PostParams::default(), &node)
        .await
        .unwrap_or_else(|e| panic!("create node {name}: {e}"));
    let now = jiff::Timestamp::now()
        .strftime("%Y-%m-%dT%H:%M:%SZ")
        .to_string();
    let resources = json!({"cpu": cpu, "memory": mem, "pods": "110"});
    let status = json!({"status": {
        "capacity": resources,
        "allocatable": resources,
        "conditions": [{
            "type": "Ready", "status": "True", "reason": "KubeletReady",
            "message": "e2e", "lastHeartbeatTime": now, "lastTransitionTime": now,
        }],
    }});
    nodes
        .patch_status(name, &PatchParams::default(), &Patch::Merge(&status))
        .await
        .unwrap_or_else(|e| panic!("patch status of node {name}: {e}"));
}

/// Creates a pod requesting `cpu`, bound to `node` or (when `None`) kept unschedulable.
async fn create_pod(
    pods: &Api<Pod>,
    name: &str,
    labels: &[(&str, &str)],
    node: Option<&str>,
    cpu: &str,
) {
    let pod = Pod {
        metadata: ObjectMeta {
            name: Some(name.to_string()),
            namespace: Some(NAMESPACE.to_string()),
            labels: Some(
                labels
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
            ),
            ..Default::default()
        },
        spec: Some(PodSpec {
            node_name: node.map(str::to_string),
            // The real scheduler runs: an unbound pod must match no node to stay unbound.
            node_selector: node.is_none().then(|| {
                BTreeMap::from([("kubescaler-e2e/nowhere".to_string(), "true".to_string())])
            }),
            containers: vec![Container {
                name: "server".to_string(),
                image: Some("registry.invalid/never-pulled:1".to_string()),
                resources: Some(ResourceRequirements {
                    requests: Some(BTreeMap::from([(
                        "cpu".to_string(),
                        Quantity(cpu.to_string()),
                    )])),
                    ..Default::default()
                }),
                ..Default::default()
            }],
            ..Default::default()
        }),
        ..Default::default()
    };
    pods.create(&PostParams::default(), &pod)
        .await
        .unwrap_or_else(|e| panic!("create pod {name}: {e}"));
}

/// Deletes what a test created; errors (e.g. already gone) are reported, not fatal.
async fn cleanup(client: &Client, nodes: &[String], pods: &[String]) {
    let now = DeleteParams {
        grace_period_seconds: Some(0),
        ..Default::default()
    };
    let pod_api: Api<Pod> = Api::namespaced(client.clone(), NAMESPACE);
    for pod in pods {
        match pod_api.delete(pod, &now).await {
            Ok(_) => {}
            Err(kube::Error::Api(s)) if s.code == 404 => {}
            Err(e) => eprintln!("cleanup: delete pod {pod}: {e}"),
        }
    }
    let node_api: Api<Node> = Api::all(client.clone());
    for node in nodes {
        match node_api.delete(node, &now).await {
            Ok(_) => {}
            Err(kube::Error::Api(s)) if s.code == 404 => {}
            Err(e) => eprintln!("cleanup: delete node {node}: {e}"),
        }
    }
}

/// Runs `body`, then `cleanup` whatever happened, then re-raises a failure of `body`.
async fn with_cleanup<Fut: Future<Output = ()>>(
    client: &Client,
    nodes: &[String],
    pods: &[String],
    body: Fut,
) {
    let outcome = AssertUnwindSafe(body).catch_unwind().await;
    cleanup(client, nodes, pods).await;
    if let Err(panic) = outcome {
        std::panic::resume_unwind(panic);
    }
}

/// Waits until the snapshot is synced and `accept` it.
async fn snapshot_where(
    cluster: &KubeCluster,
    what: &str,
    accept: impl Fn(&ClusterSnapshot) -> bool,
) -> ClusterSnapshot {
    cluster::eventually(what, WAIT, || async {
        match cluster.snapshot().await {
            Ok(s) if accept(&s) => Some(s),
            _ => None,
        }
    })
    .await
}

/// Waits for `event` on `rx`, skipping others.
async fn expect_event(rx: &mut broadcast::Receiver<ChangeEvent>, event: ChangeEvent) {
    let found = tokio::time::timeout(WAIT, async {
        loop {
            match rx.recv().await {
                Ok(e) if e == event => return true,
                Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => {}
                Err(broadcast::error::RecvError::Closed) => return false,
            }
        }
    })
    .await;
    assert_eq!(found, Ok(true), "change event {event:?} not seen");
}

#[tokio::test]
async fn kube_cluster_watches_nodes_and_pods_then_cordons_and_checks_live_pods() {
    let test = "watch";
    let Some(client) = client_or_skip(test).await else {
        return;
    };
    let id = unique("ks-e2e");
    let pool_label = ("kubescaler-e2e/pool", id.as_str());
    let server_label = ("kubescaler-e2e/server", id.as_str());
    let (node_a, node_b, node_other) =
        (format!("{id}-a"), format!("{id}-b"), format!("{id}-other"));
    let (pod_a, pod_pending, pod_other, pod_web) = (
        format!("{id}-server-a"),
        format!("{id}-server-pending"),
        format!("{id}-server-other"),
        format!("{id}-web-a"),
    );
    let nodes = vec![node_a.clone(), node_b.clone(), node_other.clone()];
    let pods = vec![
        pod_a.clone(),
        pod_pending.clone(),
        pod_other.clone(),
        pod_web.clone(),
    ];
    let key = |name: &str| format!("{NAMESPACE}/{name}");

    with_cleanup(&client, &nodes, &pods, async {
        let node_api: Api<Node> = Api::all(client.clone());
        let pod_api: Api<Pod> = Api::namespaced(client.clone(), NAMESPACE);
        create_node(&node_api, &node_a, &[pool_label], "4", "8Gi").await;

        let cluster = KubeCluster::start(
            client.clone(),
            &format!("{}={}", pool_label.0, pool_label.1),
            (server_label.0.to_string(), server_label.1.to_string()),
        );
        let mut changes = cluster.changes();

        // The first list: node a only.
        let snap = snapshot_where(&cluster, "the first list", |s| s.nodes.len() == 1).await;
        let a = &snap.nodes[0];
        assert_eq!(a.name, node_a);
        assert!(a.ready);
        assert!(!a.unschedulable);
        assert_eq!(a.allocatable.cpu_millis, 4000);
        assert_eq!(a.allocatable.memory_bytes, 8 << 30);
        assert_eq!(a.allocatable_pods, 110);
        assert!(a.created.is_some());

        // Nodes added later arrive through the watch; an unselected one does not.
        create_node(&node_api, &node_b, &[pool_label], "2", "4Gi").await;
        create_node(
            &node_api,
            &node_other,
            &[("kubescaler-e2e/pool", "elsewhere")],
            "2",
            "4Gi",
        )
        .await;
        expect_event(&mut changes, ChangeEvent::Node(node_b.clone())).await;
        let snap = snapshot_where(&cluster, "node b", |s| s.nodes.len() == 2).await;
        let names: Vec<&str> = snap.nodes.iter().map(|n| n.name.as_str()).collect();
        assert_eq!(names, vec![node_a.as_str(), node_b.as_str()]);

        // Pods: server on a, pending server, server on the unselected node, non-server on a.
        create_pod(&pod_api, &pod_a, &[server_label], Some(&node_a), "500m").await;
        create_pod(&pod_api, &pod_pending, &[server_label], None, "500m").await;
        create_pod(
            &pod_api,
            &pod_other,
            &[server_label],
            Some(&node_other),
            "500m",
        )
        .await;
        create_pod(&pod_api, &pod_web, &[], Some(&node_a), "250m").await;
        expect_event(&mut changes, ChangeEvent::ServerPod(key(&pod_a))).await;
        let snap = snapshot_where(&cluster, "the pods", |s| s.pods.len() == 3).await;
        let mut keys: Vec<String> = snap.pods.iter().map(|p| p.key.clone()).collect();
        keys.sort();
        let mut want = vec![key(&pod_a), key(&pod_pending), key(&pod_web)];
        want.sort();
        assert_eq!(keys, want);
        let server_a = snap.pods.iter().find(|p| p.key == key(&pod_a));
        let server_a = server_a.unwrap_or_else(|| panic!("{} missing", pod_a));
        assert!(server_a.is_server);
        assert_eq!(server_a.node.as_deref(), Some(node_a.as_str()));
        assert_eq!(server_a.requests.cpu_millis, 500);
        let web = snap.pods.iter().find(|p| p.key == key(&pod_web));
        assert!(web.is_some_and(|p| !p.is_server && !p.is_daemon));

        // Cordon: one patch sets the flag and both marks.
        let at: jiff::Timestamp = "2024-05-01T10:00:00Z".parse().unwrap_or_default();
        let outcome = cluster
            .mark(&node_a, MarkOp::Cordon(at))
            .await
            .unwrap_or_else(|e| panic!("cordon: {e}"));
        assert!(
            matches!(outcome, MarkOutcome::Applied(ref n) if n.cordoned_by_kubescaler),
            "{outcome:?}"
        );
        let live = node_api
            .get(&node_a)
            .await
            .unwrap_or_else(|e| panic!("get node: {e}"));
        assert_eq!(live.spec.as_ref().and_then(|s| s.unschedulable), Some(true));
        let ann = live.metadata.annotations.clone().unwrap_or_default();
        assert_eq!(
            ann.get(CORDONED_BY_ANNOTATION).map(String::as_str),
            Some("kubescaler")
        );
        assert_eq!(
            ann.get(TIMESTAMP_ANNOTATION).map(String::as_str),
            Some("2024-05-01T10:00:00Z")
        );
        expect_event(&mut changes, ChangeEvent::Node(node_a.clone())).await;
        snapshot_where(&cluster, "node a cordoned in the cache", |s| {
            s.nodes.iter().any(|n| {
                n.name == node_a
                    && n.unschedulable
                    && n.cordoned_by_kubescaler
                    && n.cordon_timestamp.as_deref() == Some("2024-05-01T10:00:00Z")
            })
        })
        .await;

        // Uncordon removes both marks.
        let outcome = cluster
            .mark(&node_a, MarkOp::Uncordon)
            .await
            .unwrap_or_else(|e| panic!("uncordon: {e}"));
        assert!(matches!(outcome, MarkOutcome::Applied(_)), "{outcome:?}");
        let live = node_api
            .get(&node_a)
            .await
            .unwrap_or_else(|e| panic!("get node: {e}"));
        assert_ne!(live.spec.as_ref().and_then(|s| s.unschedulable), Some(true));
        let ann = live.metadata.annotations.unwrap_or_default();
        assert!(!ann.contains_key(CORDONED_BY_ANNOTATION), "{ann:?}");
        assert!(!ann.contains_key(TIMESTAMP_ANNOTATION), "{ann:?}");
        snapshot_where(&cluster, "node a uncordoned in the cache", |s| {
            s.nodes.iter().any(|n| {
                n.name == node_a
                    && !n.unschedulable
                    && !n.cordoned_by_kubescaler
                    && n.cordon_timestamp.is_none()
            })
        })
        .await;

        // The live check sees only the non-terminal server pod on the node.
        let live = cluster
            .live_server_pods(&node_a)
            .await
            .unwrap_or_else(|e| panic!("live_server_pods: {e}"));
        assert_eq!(live, vec![key(&pod_a)]);
        assert!(cluster
            .live_server_pods(&node_b)
            .await
            .unwrap_or_else(|e| panic!("live_server_pods: {e}"))
            .is_empty());

        // A server pod that finishes leaves both the live check and the cache.
        let done = json!({"status": {"phase": "Succeeded"}});
        pod_api
            .patch_status(&pod_a, &PatchParams::default(), &Patch::Merge(&done))
            .await
            .unwrap_or_else(|e| panic!("patch pod status: {e}"));
        assert!(cluster
            .live_server_pods(&node_a)
            .await
            .unwrap_or_else(|e| panic!("live_server_pods: {e}"))
            .is_empty());
        expect_event(&mut changes, ChangeEvent::ServerPod(key(&pod_a))).await;
        snapshot_where(&cluster, "the finished pod to leave the cache", |s| {
            !s.pods.iter().any(|p| p.key == key(&pod_a))
        })
        .await;

        // A deleted node leaves the snapshot, and so do the pods bound to it.
        node_api
            .delete(&node_a, &DeleteParams::default())
            .await
            .unwrap_or_else(|e| panic!("delete node: {e}"));
        expect_event(&mut changes, ChangeEvent::Node(node_a.clone())).await;
        let snap = snapshot_where(&cluster, "node a gone", |s| s.nodes.len() == 1).await;
        assert_eq!(snap.nodes[0].name, node_b);
        let keys: Vec<&str> = snap.pods.iter().map(|p| p.key.as_str()).collect();
        assert_eq!(keys, vec![key(&pod_pending).as_str()]);
    })
    .await;
}

#[tokio::test]
async fn cordon_of_a_missing_node_reports_it_gone() {
    let Some(client) = client_or_skip("missing-node").await else {
        return;
    };
    let id = unique("ks-e2e-missing");
    let cluster = KubeCluster::start(
        client,
        &format!("kubescaler-e2e/pool={id}"),
        ("kubescaler-e2e/server".to_string(), id.clone()),
    );
    let outcome = cluster
        .mark(&id, MarkOp::Cordon(jiff::Timestamp::now()))
        .await
        .unwrap_or_else(|e| panic!("cordon of a node that does not exist: {e}"));
    assert_eq!(outcome, MarkOutcome::Gone);
    // An empty selection still syncs: an empty pool is a valid snapshot.
    let snap = snapshot_where(&cluster, "the first list", |_| true).await;
    assert!(snap.nodes.is_empty());
}

#[tokio::test]
async fn connect_uses_the_kubeconfig_path_with_the_master_url_overriding_its_server() {
    let Some(_) = client_or_skip("connect").await else {
        return;
    };
    // A copy of the kubeconfig whose server points nowhere: only the master URL override can
    // make the connection work.
    let mut kubeconfig =
        Kubeconfig::read_from(cluster::kubeconfig_or_skip("connect").expect("checked above"))
            .unwrap_or_else(|e| panic!("read the test kubeconfig: {e}"));
    let context = kubeconfig.current_context.clone().unwrap_or_default();
    let cluster_name = kubeconfig
        .contexts
        .iter()
        .find(|c| c.name == context)
        .and_then(|c| c.context.as_ref())
        .map(|c| c.cluster.clone())
        .unwrap_or_else(|| panic!("no current context {context:?} in the kubeconfig"));
    let cluster = kubeconfig
        .clusters
        .iter_mut()
        .find(|c| c.name == cluster_name)
        .and_then(|c| c.cluster.as_mut())
        .unwrap_or_else(|| panic!("no cluster {cluster_name:?} in the kubeconfig"));
    let real_server = cluster.server.replace("https://127.0.0.1:1".to_string());
    let real_server =
        real_server.unwrap_or_else(|| panic!("cluster {cluster_name:?} has no server"));
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}"));
    let path = dir.path().join("kubeconfig");
    let yaml =
        serde_yaml::to_string(&kubeconfig).unwrap_or_else(|e| panic!("kubeconfig to YAML: {e}"));
    std::fs::write(&path, yaml).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));

    let id = unique("ks-e2e-connect");
    let env = BTreeMap::from(
        [
            ("CLOUD_PROVIDER_TOKEN", "unused".to_string()),
            ("CLUSTER_NAME", "e2e".to_string()),
            ("NODE_POOL_NAME", "e2e".to_string()),
            ("NODE_SELECTOR", format!("kubescaler-e2e/pool={id}")),
            ("SERVER_POD_LABEL_NAME", "kubescaler-e2e/server".to_string()),
            ("SERVER_POD_LABEL_VALUE", id.clone()),
            ("CLUSTER_KUBE_CONFIG_PATH", path.display().to_string()),
            ("CLUSTER_KUBE_CONFIG_MASTER_URL", real_server),
        ]
        .map(|(k, v)| (k.to_string(), v)),
    );
    let config = load(&ConfigSources {
        env,
        ..Default::default()
    })
    .unwrap_or_else(|e| panic!("config: {e}"));
    let cluster = KubeCluster::connect(&config)
        .await
        .unwrap_or_else(|e| panic!("connect: {e}"));
    let snap = snapshot_where(&cluster, "the first list through the master URL", |_| true).await;
    assert!(snap.nodes.is_empty());
    assert!(snap.pods.is_empty());
}
