//! What `tests/e2e_deploy.rs` and `tests/e2e_image.rs` share: both run kubescaler with only
//! `deploy/`'s ServiceAccount on the local control plane, against a pool of the DOKS fake
//! (`hack/doks-fake`) whose nodes the real kube-scheduler binds the test's server pods to. One
//! copy of `deploy/`'s names, kubectl, the fake's pool, the server pods and the checks on them
//! keeps the two tests asking the same things.
//!
//! Both files also load `cluster` (the control-plane gate), which this module uses.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use doks_fake::{FakeDoks, FakeOptions, PoolSpec};
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::api::{Api, DeleteParams, ListParams, PostParams};
use kube::Client;
use serde_json::json;

/// `deploy/`'s namespace and ServiceAccount.
pub const NAMESPACE: &str = "kubescaler";
pub const SERVICE_ACCOUNT: &str = "kubescaler";
/// The ServiceAccount's user name as the API server sees it.
pub const SA_USER: &str = "system:serviceaccount:kubescaler:kubescaler";
/// Label of the test pool's nodes (value: the test's id), the daemon's node selector.
pub const POOL_LABEL: &str = "kubescaler-e2e/pool";
/// Where the test's game server pods live.
pub const POD_NAMESPACE: &str = "default";
/// A DigitalOcean size the fake knows: 3900m allocatable, so three 1-CPU servers a node.
pub const NODE_SIZE: &str = "s-4vcpu-8gb";
/// Generous waits for a busy 2-core machine.
pub const WAIT: Duration = Duration::from_secs(120);

/// The checkout under test: cargo runs tests from the package root. Read at run time, not
/// fixed at build time, so a target dir shared between clones tests each clone's own files.
pub fn repo() -> PathBuf {
    std::env::current_dir().unwrap_or_else(|e| panic!("current dir: {e}"))
}

// --- kubectl ------------------------------------------------------------------------------

/// `kubectl --kubeconfig kubeconfig args...`, whatever its outcome.
pub fn kubectl(kubeconfig: &Path, args: &[&str]) -> Output {
    Command::new("kubectl")
        .arg("--kubeconfig")
        .arg(kubeconfig)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("kubectl {args:?}: {e} (kubectl must be on PATH)"))
}

/// Runs kubectl and returns its stdout; panics with its stderr when it fails.
pub fn kubectl_ok(kubeconfig: &Path, args: &[&str]) -> String {
    let out = kubectl(kubeconfig, args);
    assert!(
        out.status.success(),
        "kubectl {} failed ({}):\n{}{}",
        args.join(" "),
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A token (TokenRequest, `kubectl create token`) of the ServiceAccount
/// `namespace/service_account`, valid for `duration` (e.g. `1h`): what a pod of it is given.
pub fn service_account_token(
    admin: &Path,
    namespace: &str,
    service_account: &str,
    duration: &str,
) -> String {
    let duration = format!("--duration={duration}");
    kubectl_ok(
        admin,
        &[
            "create",
            "token",
            service_account,
            "-n",
            namespace,
            &duration,
        ],
    )
    .trim()
    .to_owned()
}

/// kubectl's arguments that print the user name the API server sees for the credentials:
/// that a token is the ServiceAccount's.
pub const WHOAMI: &[&str] = &[
    "auth",
    "whoami",
    "-o",
    "jsonpath={.status.userInfo.username}",
];

// --- the daemon's side ---------------------------------------------------------------------

/// A port free on 127.0.0.1 for the daemon's HTTP listener.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// GET `url` (3 s timeout): status and body, `None` while nothing answers.
pub async fn http_get(url: &str) -> Option<(u16, String)> {
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(3))
        .build()
        .unwrap();
    let resp = client.get(url).send().await.ok()?;
    let status = resp.status().as_u16();
    Some((status, resp.text().await.unwrap_or_default()))
}

/// Lines of a daemon's log that say it was refused by the API server's authorizer.
pub fn forbidden_lines(log: &str) -> Vec<String> {
    log.lines()
        .filter(|l| {
            let l = l.to_ascii_lowercase();
            l.contains("forbidden") || l.contains(" 403") || l.contains("code: 403")
        })
        .map(str::to_owned)
        .collect()
}

/// Writes the last 80 lines of a child's log `text` to stderr (past libtest's capture, so a
/// failing test shows what the process it ran said), headed `--- last N lines of <what> ---`.
pub fn print_log_tail(what: &str, text: &str) {
    let lines: Vec<&str> = text.lines().collect();
    let tail = &lines[lines.len().saturating_sub(80)..];
    let _ = writeln!(
        std::io::stderr(),
        "--- last {} lines of {what} ---\n{}",
        tail.len(),
        tail.join("\n")
    );
}

// --- the cloud and the game servers --------------------------------------------------------

/// Starts the DOKS fake with `options` (its description, its token), registering its nodes in
/// the control plane and counting the test's servers (`app=<id>`) on the nodes it removes; adds
/// the cluster `id` with the pool `<id>-pool` of one [`NODE_SIZE`] node labelled for the test,
/// and waits for that node. Returns the fake, the cluster's id and the pool's id.
pub async fn start_fake_with_pool(
    admin: &Client,
    id: &str,
    options: FakeOptions,
) -> (FakeDoks, String, String) {
    let fake = FakeDoks::start(FakeOptions {
        kube: Some(admin.clone()),
        server_pod_selector: Some(format!("app={id}")),
        boot_delay: Duration::from_secs(1),
        ..options
    })
    .await
    .expect("start the DOKS fake");
    let cluster_id = fake.add_cluster(id);
    let pool_id = fake
        .add_pool(
            &cluster_id,
            PoolSpec::new(format!("{id}-pool"), NODE_SIZE, 1).label(POOL_LABEL, id),
        )
        .await
        .expect("add the pool");
    crate::cluster::eventually("the pool's first node", WAIT, || async {
        (pool_nodes(admin, id).await.len() == 1).then_some(())
    })
    .await;
    (fake, cluster_id, pool_id)
}

/// Asserts that the fake saw no request the real DigitalOcean API would refuse.
pub fn assert_no_rejected_requests(fake: &FakeDoks) {
    let rejected: Vec<String> = fake
        .requests()
        .iter()
        .filter(|r| r.rejection.is_some())
        .map(ToString::to_string)
        .collect();
    assert!(
        rejected.is_empty(),
        "requests the DOKS API would refuse: {rejected:?}"
    );
}

/// The pool's nodes (by the test's pool label): name → unschedulable.
pub async fn pool_nodes(admin: &Client, id: &str) -> BTreeMap<String, bool> {
    Api::<Node>::all(admin.clone())
        .list(&ListParams::default().labels(&format!("{POOL_LABEL}={id}")))
        .await
        .unwrap()
        .items
        .into_iter()
        .map(|n| {
            let cordoned = n
                .spec
                .as_ref()
                .and_then(|s| s.unschedulable)
                .unwrap_or(false);
            (n.metadata.name.unwrap_or_default(), cordoned)
        })
        .collect()
}

/// The test's server pods: name → node (None while pending).
pub async fn servers(admin: &Client, id: &str) -> BTreeMap<String, Option<String>> {
    Api::<Pod>::namespaced(admin.clone(), POD_NAMESPACE)
        .list(&ListParams::default().labels(&format!("app={id}")))
        .await
        .unwrap()
        .items
        .into_iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .map(|p| {
            (
                p.metadata.name.unwrap_or_default(),
                p.spec.and_then(|s| s.node_name),
            )
        })
        .collect()
}

/// Waits until the pool has `nodes` nodes and the scheduler has bound all `count` of the test's
/// servers to them; returns where each is (server → node).
pub async fn servers_bound(
    admin: &Client,
    id: &str,
    count: usize,
    nodes: usize,
) -> BTreeMap<String, Option<String>> {
    crate::cluster::eventually(
        &format!("{count} servers bound by the scheduler on {nodes} pool nodes"),
        WAIT,
        || async {
            let pool = pool_nodes(admin, id).await;
            let servers = servers(admin, id).await;
            let bound: Option<Vec<String>> = servers.values().cloned().collect();
            let bound = bound?;
            (pool.len() == nodes
                && bound.len() == count
                && bound.iter().all(|n| pool.contains_key(n)))
            .then_some(servers)
        },
    )
    .await
}

/// A game server pod of the test (`app=<id>`, 1 CPU) for the pool's nodes only; its image never
/// runs (no kubelet), the scheduler's binding is what counts.
pub async fn create_server(admin: &Client, id: &str, name: &str) {
    let pod: Pod = serde_json::from_value(json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "labels": {"app": id}},
        "spec": {
            "nodeSelector": {POOL_LABEL: id},
            "terminationGracePeriodSeconds": 0,
            "containers": [{
                "name": "game",
                "image": "registry.invalid/game-server:e2e",
                "resources": {"requests": {"cpu": "1", "memory": "256Mi"}},
            }],
        },
    }))
    .unwrap();
    Api::<Pod>::namespaced(admin.clone(), POD_NAMESPACE)
        .create(&PostParams::default(), &pod)
        .await
        .unwrap();
}

/// Deletes a server pod at once (grace 0): the game server ended. Whether it was still there
/// does not matter.
pub async fn delete_server(admin: &Client, name: &str) {
    let _ = Api::<Pod>::namespaced(admin.clone(), POD_NAMESPACE)
        .delete(name, &DeleteParams::default().grace_period(0))
        .await;
}
