//! The `deploy/` manifests on the real local control plane (`hack/controlplane.sh start`):
//!
//! * `kubectl apply -k deploy/` (and the example token Secret) succeeds, and the Deployment's
//!   pod template passes the namespace's PodSecurity `restricted` level (server-side dry run
//!   of a Pod made from it);
//! * a token requested for the ServiceAccount (TokenRequest, `kubectl create token`) can do
//!   exactly what kubescaler needs and nothing else (`kubectl auth can-i` matrix, plus real
//!   requests refused with 403);
//! * the `kubescaler` binary, run as two replicas with only that token, against the DOKS fake
//!   (`hack/doks-fake`, which registers Node objects as the pool grows), scales the pool up
//!   for new game servers (bound by the real kube-scheduler), survives the loss of the leader
//!   (the standby takes the Lease over) and scales down (cordon, then delete after the
//!   expiration) with zero lost servers, never hitting a 403;
//! * without a cluster: the ConfigMap's `config.yaml`, with the Deployment's env, passes
//!   `kubescaler check-config`;
//! * the Agones component `deploy/agones/` (a kustomize Component, rendered on the base by an
//!   overlay): without a cluster, it adds exactly its ClusterRole and binding and sets
//!   `server-source: agones` in a config.yaml otherwise the base's; on the control plane, a
//!   ServiceAccount of base + component can do exactly what the Agones mode needs (a second
//!   `can-i` matrix), under its own names so that the base's matrix is not disturbed.
//!
//! * the Helm chart `deploy/helm/kubescaler/`, rendered by the real `helm`
//!   (`KUBESCALER_HELM`, built by `hack/helm.sh`): without a cluster, `helm lint` passes, its
//!   default rendering is the base object for object (and with `agones.enabled` /
//!   `clusterapi.enabled` base + that component), its RBAC rules are exactly theirs, its
//!   values.yaml and config.yaml hold every configuration key but the token, and the config
//!   passes `kubescaler check-config`; on the control plane, a release of its own applied gives
//!   its ServiceAccount exactly the base's `can-i` matrix, in its namespace.
//!
//! `KUBESCALER_E2E_BIN=<path>` runs the replicas from another binary (e.g. the static one
//! `hack/static-build.sh` prints, which the image ships); `KUBESCALER_E2E_LOG_DIR=<dir>` keeps
//! their logs. The Deployment itself never runs here: the test plane has no kubelet and no
//! controller-manager. Gated by `tests/cluster` (`KUBESCALER_E2E_KUBECONFIG`; required in CI).

use std::collections::{BTreeMap, BTreeSet};
use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use doks_fake::FakeOptions;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::events::v1::Event;
use kube::api::{Api, DeleteParams, ListParams};
use kube::Client;
use serde_json::json;

mod cluster;
use cluster::cloud::unique_id;
use cluster::{client_or_skip, kubeconfig_or_skip, prereq};
mod deploy_support;
use deploy_support::{
    assert_no_rejected_requests, create_server, delete_server, forbidden_lines, free_port,
    http_get, kubectl, kubectl_ok, pool_nodes, print_log_tail, repo, servers, servers_bound,
    service_account_token, start_fake_with_pool, NAMESPACE, POOL_LABEL, SA_USER, SERVICE_ACCOUNT,
    WAIT, WHOAMI,
};

/// The Lease name of `deploy/` (in [`NAMESPACE`]).
const LEASE: &str = "kubescaler";
const LEASE_DURATION_SEC: u64 = 5;

/// What every test of this file shares: the manifests applied once, and a kubeconfig holding
/// only a token of kubescaler's ServiceAccount.
struct Deployed {
    admin: PathBuf,
    sa_kubeconfig: PathBuf,
    _dir: tempfile::TempDir,
}

static DEPLOYED: OnceLock<Deployed> = OnceLock::new();

/// Applies `deploy/` (once per test process) and returns the admin and ServiceAccount
/// kubeconfigs; `None` to skip.
fn deployed(test: &str) -> Option<&'static Deployed> {
    let admin = kubeconfig_or_skip(test)?;
    Some(DEPLOYED.get_or_init(|| deploy(admin)))
}

fn deploy(admin: PathBuf) -> Deployed {
    let base = repo().join("deploy");
    let base = base.to_str().unwrap();
    // The kustomize base renders (the same check as `kubectl kustomize deploy/` in CI).
    let rendered = kubectl_ok(&admin, &["kustomize", base]);
    let what = "kubectl kustomize deploy/";
    assert_renders_kinds(&rendered, &["Namespace"], what);
    assert_renders_kinds(&rendered, &BASE_KINDS, what);
    assert!(
        !rendered.contains("\nkind: Secret\n"),
        "the base must not ship a Secret (secret-example.yaml is an example only)"
    );
    apply_within_pod_security(&admin, &["apply", "-k", base], "deploy/");
    // The example Secret (placeholder value), so that there is a Secret to be refused.
    let example = repo().join("deploy/secret-example.yaml");
    let example_text = std::fs::read_to_string(&example).unwrap();
    assert!(
        example_text.contains("EXAMPLE"),
        "secret-example.yaml must say it is an example"
    );
    kubectl_ok(&admin, &["apply", "-f", example.to_str().unwrap()]);

    let dir = tempfile::tempdir().unwrap();
    let template = assert_pod_template_admitted(&admin, NAMESPACE, "kubescaler", dir.path());
    check_pod_template(&template);

    // TokenRequest for the ServiceAccount, and a kubeconfig with only that token.
    let sa_kubeconfig = dir.path().join("kubescaler-sa.kubeconfig");
    service_account_kubeconfig(&admin, SERVICE_ACCOUNT, SA_USER, &sa_kubeconfig);
    Deployed {
        admin,
        sa_kubeconfig,
        _dir: dir,
    }
}

/// The kinds of the base's objects (but its Namespace, which the chart renders only with
/// `namespace.create`): what both `deploy/` and the chart must render.
const BASE_KINDS: [&str; 7] = [
    "ServiceAccount",
    "ClusterRole",
    "ClusterRoleBinding",
    "Role",
    "RoleBinding",
    "ConfigMap",
    "Deployment",
];

/// Asserts that `rendered` (`what`'s rendering) holds an object of each of `kinds`.
fn assert_renders_kinds(rendered: &str, kinds: &[&str], what: &str) {
    for kind in kinds {
        assert!(
            rendered.contains(&format!("\nkind: {kind}\n")),
            "{what} renders no {kind}:\n{rendered}"
        );
    }
}

/// `kubectl apply args...` (`args` start with `apply`), which must succeed without a
/// PodSecurity warning: one would mean the pod template of `what`'s Deployment breaks the
/// namespace's level (a Deployment is only warned about, its Pods would be refused).
fn apply_within_pod_security(admin: &Path, args: &[&str], what: &str) {
    let applied = kubectl(admin, args);
    let stderr = String::from_utf8_lossy(&applied.stderr);
    assert!(
        applied.status.success(),
        "kubectl {} ({what}):\n{stderr}",
        args.join(" ")
    );
    assert!(
        !stderr.contains("would violate PodSecurity"),
        "the Deployment of {what} breaks PodSecurity restricted:\n{stderr}"
    );
}

/// Writes to `out` a kubeconfig holding only a token (TokenRequest) of the ServiceAccount
/// `service_account` of [`NAMESPACE`], and checks that the API server sees it as `user`.
fn service_account_kubeconfig(admin: &Path, service_account: &str, user: &str, out: &Path) {
    service_account_kubeconfig_in(admin, NAMESPACE, service_account, user, out);
}

/// [`service_account_kubeconfig`] for a ServiceAccount of `namespace`.
fn service_account_kubeconfig_in(
    admin: &Path,
    namespace: &str,
    service_account: &str,
    user: &str,
    out: &Path,
) {
    let token = service_account_token(admin, namespace, service_account, "2h");
    write_token_kubeconfig(admin, &token, out);
    let whoami = kubectl_ok(out, WHOAMI);
    assert_eq!(
        whoami.trim(),
        user,
        "the token kubeconfig is not the ServiceAccount {service_account}"
    );
}

/// The pod template of the applied Deployment `namespace/deployment` is admitted as a Pod under
/// the namespace's PodSecurity `restricted` (enforced on Pods, only warned on Deployments): a
/// server-side dry run of a Pod made from it (written into `dir`). Returns the template.
fn assert_pod_template_admitted(
    admin: &Path,
    namespace: &str,
    deployment: &str,
    dir: &Path,
) -> serde_json::Value {
    let deployment: serde_json::Value = serde_json::from_str(&kubectl_ok(
        admin,
        &[
            "get",
            "deployment",
            deployment,
            "-n",
            namespace,
            "-o",
            "json",
        ],
    ))
    .unwrap();
    let template = deployment["spec"]["template"].clone();
    let pod = json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "kubescaler-template-check", "namespace": namespace,
                     "labels": template["metadata"]["labels"]},
        "spec": template["spec"],
    });
    let pod_file = dir.join("pod.json");
    std::fs::write(&pod_file, pod.to_string()).unwrap();
    let dry = kubectl(
        admin,
        &[
            "apply",
            "--dry-run=server",
            "-f",
            pod_file.to_str().unwrap(),
        ],
    );
    assert!(
        dry.status.success(),
        "a Pod from the template of Deployment {namespace}/{}: refused:\n{}",
        deployment["metadata"]["name"],
        String::from_utf8_lossy(&dry.stderr)
    );
    template
}

/// The hardening the issue asks for, read back from the applied Deployment.
fn check_pod_template(template: &serde_json::Value) {
    let spec = &template["spec"];
    assert_eq!(spec["serviceAccountName"], "kubescaler");
    assert_eq!(spec["securityContext"]["runAsNonRoot"], true);
    assert_eq!(spec["securityContext"]["runAsUser"], 65532);
    assert_eq!(
        spec["securityContext"]["seccompProfile"]["type"],
        "RuntimeDefault"
    );
    let c = &spec["containers"][0];
    let sc = &c["securityContext"];
    assert_eq!(sc["readOnlyRootFilesystem"], true);
    assert_eq!(sc["allowPrivilegeEscalation"], false);
    assert_eq!(sc["capabilities"]["drop"], json!(["ALL"]));
    assert_eq!(c["livenessProbe"]["httpGet"]["path"], "/healthz");
    assert_eq!(c["readinessProbe"]["httpGet"]["path"], "/readyz");
    assert_eq!(c["ports"][0]["containerPort"], 8080);
    for (kind, what) in [
        ("requests", "cpu"),
        ("requests", "memory"),
        ("limits", "memory"),
    ] {
        assert!(
            c["resources"][kind][what].is_string(),
            "no resources.{kind}.{what}"
        );
    }
    // The token is a file from the Secret, never an env value in the manifest.
    let env = c["env"].as_array().cloned().unwrap_or_default();
    assert!(
        env.iter().all(|e| e["name"] != "CLOUD_PROVIDER_TOKEN"),
        "the token must come from the mounted Secret file"
    );
    let volumes = spec["volumes"].as_array().unwrap();
    assert!(
        volumes
            .iter()
            .any(|v| v["secret"]["secretName"] == "kubescaler-cloud-token"),
        "the token Secret is not mounted"
    );
}

/// A kubeconfig for the admin kubeconfig's API server (and CA) authenticating with `token`
/// only: no client certificate, no other user.
fn write_token_kubeconfig(admin: &Path, token: &str, out: &Path) {
    let admin_cfg: serde_yaml::Value =
        serde_yaml::from_str(&std::fs::read_to_string(admin).unwrap()).unwrap();
    let current = admin_cfg["current-context"].as_str().unwrap_or_default();
    let contexts = admin_cfg["contexts"].as_sequence().unwrap();
    let ctx = contexts
        .iter()
        .find(|c| c["name"].as_str() == Some(current))
        .unwrap_or(&contexts[0]);
    let cluster_name = ctx["context"]["cluster"].as_str().unwrap();
    let cluster = admin_cfg["clusters"]
        .as_sequence()
        .unwrap()
        .iter()
        .find(|c| c["name"].as_str() == Some(cluster_name))
        .unwrap()["cluster"]
        .clone();
    let cfg = json!({
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "e2e", "cluster": serde_json::to_value(&cluster).unwrap()}],
        "users": [{"name": "kubescaler", "user": {"token": token}}],
        "contexts": [{"name": "kubescaler", "context": {"cluster": "e2e", "user": "kubescaler"}}],
        "current-context": "kubescaler",
    });
    std::fs::write(out, serde_yaml::to_string(&cfg).unwrap()).unwrap();
}

// --- the shipped configuration -----------------------------------------------------------

/// The ConfigMap's `config.yaml`, with the env the Deployment sets, is a valid configuration
/// (`kubescaler check-config`, exit 0) that reads the token from the mounted Secret file and
/// serves the probes' port. Needs no cluster.
#[test]
fn configmap_config_passes_check_config_with_the_deployment_env() {
    let configmap: serde_yaml::Value = serde_yaml::from_str(
        &std::fs::read_to_string(repo().join("deploy/configmap.yaml")).unwrap(),
    )
    .unwrap();
    let config_yaml = configmap["data"]["config.yaml"]
        .as_str()
        .expect("deploy/configmap.yaml has data.config.yaml");
    let deployment: serde_yaml::Value = serde_yaml::from_str(
        &std::fs::read_to_string(repo().join("deploy/deployment.yaml")).unwrap(),
    )
    .unwrap();
    let container = &deployment["spec"]["template"]["spec"]["containers"][0];
    let args: Vec<String> = container["args"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap().to_owned())
        .collect();
    assert_eq!(args, ["--config", "/etc/kubescaler/config.yaml"]);

    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config.yaml");
    std::fs::write(&config, config_yaml).unwrap();
    // The mounted Secret's file, here in the temp dir.
    let token_file = dir.path().join("token");
    std::fs::write(&token_file, "dop_v1_EXAMPLE_not_a_real_token_0123456789\n").unwrap();
    assert!(
        config_yaml.contains("cloud-provider-token-file: /var/run/secrets/kubescaler/token"),
        "the config must read the token from the Secret mounted by the Deployment"
    );
    // The downward-API env of the Deployment, with values a pod would get.
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_kubescaler"));
    cmd.env_clear().current_dir(dir.path());
    for var in container["env"].as_sequence().unwrap() {
        let name = var["name"].as_str().unwrap();
        let value = match var["valueFrom"]["fieldRef"]["fieldPath"].as_str() {
            Some("metadata.namespace") => "kubescaler",
            Some("metadata.name") => "kubescaler-7d9f8b6c5-x2x4q",
            _ => var["value"].as_str().unwrap_or_default(),
        };
        cmd.env(name, value);
    }
    let out = cmd
        .arg("--config")
        .arg(&config)
        .arg("--cloud-provider-token-file")
        .arg(&token_file)
        .arg("check-config")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "check-config refuses the ConfigMap's config.yaml:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for expected in [
        "0.0.0.0:8080",
        "kubescaler-7d9f8b6c5-x2x4q",
        "leader-election-namespace: kubescaler",
    ] {
        assert!(
            stdout.contains(expected),
            "effective config lacks {expected:?}:\n{stdout}"
        );
    }
    assert!(
        !stdout.contains("dop_v1_EXAMPLE"),
        "check-config printed the token"
    );
}

// --- RBAC ---------------------------------------------------------------------------------

/// The `kubectl auth can-i` matrix: the answer least privilege demands, then the question.
/// Cluster-scoped questions take no namespace; `resource/name` asks about one object.
const CAN_I: &str = "
# What kubescaler does.
yes get nodes
yes list nodes
yes watch nodes
yes patch nodes
yes get pods --all-namespaces
yes list pods --all-namespaces
yes watch pods --all-namespaces
yes create events -n default
yes patch events -n default
yes create events -n game-servers
yes create events.events.k8s.io -n default
yes patch events.events.k8s.io -n default
yes create leases.coordination.k8s.io -n kubescaler
yes get leases.coordination.k8s.io/kubescaler -n kubescaler
yes update leases.coordination.k8s.io/kubescaler -n kubescaler
yes get namespaces/kubescaler
# Secrets: none, anywhere (the cloud token is a mounted file).
no  get secrets --all-namespaces
no  list secrets --all-namespaces
no  watch secrets --all-namespaces
no  get secrets/kubescaler-cloud-token -n kubescaler
no  list secrets -n kubescaler
# Pods: read only.
no  delete pods --all-namespaces
no  deletecollection pods --all-namespaces
no  create pods --all-namespaces
no  patch pods --all-namespaces
no  update pods --all-namespaces
no  create pods --subresource=eviction --all-namespaces
no  create pods --subresource=exec --all-namespaces
# Nodes: no write beyond patch (nodes are deleted through the cloud API).
no  create nodes
no  update nodes
no  delete nodes
no  deletecollection nodes
no  patch nodes --subresource=status
no  update nodes --subresource=status
no  get nodes --subresource=proxy
# Leases: only its own, only in its namespace; no list, watch, update or delete.
no  get leases.coordination.k8s.io -n kube-system
no  create leases.coordination.k8s.io -n default
no  update leases.coordination.k8s.io/kubescaler -n default
no  update leases.coordination.k8s.io/kube-scheduler -n kubescaler
no  list leases.coordination.k8s.io -n kubescaler
no  watch leases.coordination.k8s.io -n kubescaler
no  patch leases.coordination.k8s.io/kubescaler -n kubescaler
no  delete leases.coordination.k8s.io/kubescaler -n kubescaler
# Events: write only.
no  list events --all-namespaces
no  delete events -n default
# Namespaces: its own, get only.
no  get namespaces/default
no  list namespaces
no  patch namespaces/kubescaler
# Cluster API: nothing in the base (the component deploy/clusterapi/ adds it; CLUSTERAPI_CAN_I).
no  get machinedeployments.cluster.x-k8s.io -n default
no  update machinedeployments.cluster.x-k8s.io --subresource=scale -n default
no  list machines.cluster.x-k8s.io -n default
no  patch machines.cluster.x-k8s.io -n default
# Agones: nothing in the base (the component deploy/agones/ adds it; AGONES_CAN_I).
no  get gameservers.agones.dev --all-namespaces
no  list gameservers.agones.dev --all-namespaces
no  watch gameservers.agones.dev --all-namespaces
no  delete gameservers.agones.dev --all-namespaces
no  create gameservers.agones.dev --all-namespaces
no  update gameservers.agones.dev --all-namespaces
no  patch gameservers.agones.dev --all-namespaces
no  deletecollection gameservers.agones.dev --all-namespaces
no  get fleets.agones.dev --all-namespaces
no  list fleets.agones.dev --all-namespaces
no  watch fleets.agones.dev --all-namespaces
no  delete fleets.agones.dev --all-namespaces
no  create fleets.agones.dev --all-namespaces
no  update fleets.agones.dev --all-namespaces
no  patch fleets.agones.dev --all-namespaces
no  deletecollection fleets.agones.dev --all-namespaces
no  get fleetautoscalers.autoscaling.agones.dev --all-namespaces
no  list fleetautoscalers.autoscaling.agones.dev --all-namespaces
no  watch fleetautoscalers.autoscaling.agones.dev --all-namespaces
no  delete fleetautoscalers.autoscaling.agones.dev --all-namespaces
no  create fleetautoscalers.autoscaling.agones.dev --all-namespaces
no  update fleetautoscalers.autoscaling.agones.dev --all-namespaces
no  patch fleetautoscalers.autoscaling.agones.dev --all-namespaces
no  deletecollection fleetautoscalers.autoscaling.agones.dev --all-namespaces
no  list gameserversets.agones.dev --all-namespaces
no  create gameserverallocations.allocation.agones.dev -n default
# Nothing else.
no  get configmaps -n kubescaler
no  create serviceaccounts --subresource=token -n kubescaler
no  create clusterrolebindings
no  escalate clusterroles
no  impersonate users
no  patch deployments.apps -n kubescaler
no  * *
";

/// The questions of a `can-i` matrix: (the answer wanted, the question).
fn can_i_questions(matrix: &str) -> Vec<(bool, String)> {
    matrix
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|line| {
            let (want, question) = line
                .split_once(' ')
                .unwrap_or_else(|| panic!("a can-i line is `yes|no question`: {line:?}"));
            assert!(
                want == "yes" || want == "no",
                "a can-i line starts with yes or no: {line:?}"
            );
            (want == "yes", question.trim().to_owned())
        })
        .collect()
}

/// Asks every question of `questions` as the holder of `kubeconfig` (`user`), prints the
/// table of answers and fails on any answer other than the one wanted.
fn assert_can_i(kubeconfig: &Path, user: &str, questions: &[(bool, String)]) {
    let mut table = String::new();
    let mut wrong = Vec::new();
    for (expected, question) in questions {
        let mut args = vec!["auth", "can-i"];
        args.extend(question.split_whitespace());
        let out = kubectl(kubeconfig, &args);
        let answer = String::from_utf8_lossy(&out.stdout).trim().to_owned();
        // can-i exits 0 for yes, 1 for no; anything else (or no answer) is an error. (A
        // resource the API server does not serve, e.g. Agones' before its CRDs are installed,
        // only adds a warning: RBAC rules are about names.)
        let got = match (answer.as_str(), out.status.code()) {
            ("yes", Some(0)) => true,
            ("no", Some(1)) => false,
            _ => panic!(
                "kubectl auth can-i {question}: unexpected answer {answer:?} ({}): {}",
                out.status,
                String::from_utf8_lossy(&out.stderr)
            ),
        };
        let mark = if got == *expected { "ok" } else { "WRONG" };
        table.push_str(&format!(
            "  can-i {question:<76} {answer:<3} (want {}) {mark}\n",
            if *expected { "yes" } else { "no" }
        ));
        if got != *expected {
            wrong.push(question.as_str());
        }
    }
    eprintln!("kubectl auth can-i as {user}:\n{table}");
    assert!(
        wrong.is_empty(),
        "RBAC of {user} differs from least privilege on {wrong:?}:\n{table}"
    );
}

#[test]
fn service_account_has_exactly_the_rbac_kubescaler_needs() {
    let test = "service_account_has_exactly_the_rbac_kubescaler_needs";
    let Some(d) = deployed(test) else { return };
    assert_can_i(&d.sa_kubeconfig, SA_USER, &can_i_questions(CAN_I));

    // Real requests, not only the authorizer's opinion: each is refused with 403.
    for args in [
        &["get", "secret", "kubescaler-cloud-token", "-n", NAMESPACE][..],
        &["get", "secrets", "--all-namespaces"][..],
        &["delete", "pod", "any-pod", "-n", "default"][..],
        &["delete", "node", "any-node"][..],
        &["get", "leases", "-n", "kube-system"][..],
    ] {
        let out = kubectl(&d.sa_kubeconfig, args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            !out.status.success() && stderr.contains("Forbidden") && stderr.contains(SA_USER),
            "kubectl {args:?} as the ServiceAccount was not refused with 403: {stderr}"
        );
    }
    eprintln!(
        "kubectl auth can-i --list as {SA_USER} (namespace {NAMESPACE}):\n{}",
        kubectl_ok(
            &d.sa_kubeconfig,
            &["auth", "can-i", "--list", "-n", NAMESPACE]
        )
    );
}

// --- the Agones component (deploy/agones/) ------------------------------------------------

/// The `can-i` matrix of base + the Agones component: its rights and what stays refused. Run
/// together with every line of [`CAN_I`] not about Agones (the base's rights are unchanged).
const AGONES_CAN_I: &str = "
# What the Agones mode does (deploy/agones/rbac.yaml).
yes get gameservers.agones.dev --all-namespaces
yes list gameservers.agones.dev --all-namespaces
yes watch gameservers.agones.dev --all-namespaces
yes delete gameservers.agones.dev --all-namespaces
yes delete gameservers.agones.dev/any-gameserver -n default
yes get fleets.agones.dev --all-namespaces
yes list fleets.agones.dev --all-namespaces
yes watch fleets.agones.dev --all-namespaces
yes get fleetautoscalers.autoscaling.agones.dev --all-namespaces
yes list fleetautoscalers.autoscaling.agones.dev --all-namespaces
yes watch fleetautoscalers.autoscaling.agones.dev --all-namespaces
# GameServers: read and delete (compaction), never written; no status.
no  create gameservers.agones.dev --all-namespaces
no  update gameservers.agones.dev --all-namespaces
no  patch gameservers.agones.dev --all-namespaces
no  deletecollection gameservers.agones.dev --all-namespaces
no  update gameservers.agones.dev --subresource=status --all-namespaces
no  patch gameservers.agones.dev --subresource=status --all-namespaces
# Fleets: read only (no scaling either).
no  create fleets.agones.dev --all-namespaces
no  update fleets.agones.dev --all-namespaces
no  patch fleets.agones.dev --all-namespaces
no  delete fleets.agones.dev --all-namespaces
no  deletecollection fleets.agones.dev --all-namespaces
no  update fleets.agones.dev --subresource=scale --all-namespaces
no  patch fleets.agones.dev --subresource=scale --all-namespaces
# FleetAutoscalers: read only.
no  create fleetautoscalers.autoscaling.agones.dev --all-namespaces
no  update fleetautoscalers.autoscaling.agones.dev --all-namespaces
no  patch fleetautoscalers.autoscaling.agones.dev --all-namespaces
no  delete fleetautoscalers.autoscaling.agones.dev --all-namespaces
no  deletecollection fleetautoscalers.autoscaling.agones.dev --all-namespaces
# The rest of Agones: nothing (it never allocates, never touches GameServerSets).
no  get gameserversets.agones.dev --all-namespaces
no  list gameserversets.agones.dev --all-namespaces
no  watch gameserversets.agones.dev --all-namespaces
no  create gameserversets.agones.dev --all-namespaces
no  patch gameserversets.agones.dev --all-namespaces
no  delete gameserversets.agones.dev --all-namespaces
no  create gameserverallocations.allocation.agones.dev --all-namespaces
no  create gameserverallocations.allocation.agones.dev -n default
";

/// The suffix of every name of the test's copy of base + component (except the Namespace,
/// kubescaler's own): its ServiceAccount is kubescaler-agones-e2e, its ClusterRoles and
/// bindings kubescaler-agones-e2e and kubescaler-agones-agones-e2e. Applying the component as
/// shipped would grant kubescaler's own ServiceAccount the Agones rights, which the base's
/// matrix (run by a parallel test against the same API server) refuses.
const AGONES_E2E_SUFFIX: &str = "-agones-e2e";

/// Installs the CRDs of `path` (a file or a directory) and waits until they are Established.
/// `kubectl auth can-i` needs them: it resolves a resource through discovery, and asks about
/// an unknown one under a name no rule grants (`resource: gameservers.agones.dev`, no group).
/// Server-side apply under the field manager of the other tests' installs, so that they agree.
fn install_crds(admin: &Path, path: &Path) {
    let path = path.to_str().unwrap();
    kubectl_ok(
        admin,
        &[
            "apply",
            "--server-side",
            "--force-conflicts",
            "--field-manager=kubescaler-e2e",
            "-f",
            path,
        ],
    );
    kubectl_ok(
        admin,
        &[
            "wait",
            "--for=condition=Established",
            "--timeout=90s",
            "-f",
            path,
        ],
    );
}

/// `to` relative to the directory `from` (kustomize takes relative paths only).
fn relative_path(from: &Path, to: &Path) -> PathBuf {
    let from = from.canonicalize().unwrap();
    let to = to.canonicalize().unwrap();
    let mut rel = PathBuf::new();
    for _ in from.components().skip(1) {
        rel.push("..");
    }
    rel.push(to.strip_prefix("/").unwrap());
    rel
}

/// Writes into `dir` an overlay of the base with the Agones component, as a user's overlay
/// includes it (`deploy/agones/` is a Component: it does not build alone), with `name_suffix`
/// on every name if given. Returns `dir` as a `&str` for kubectl.
fn agones_overlay<'a>(dir: &'a Path, name_suffix: Option<&str>) -> &'a str {
    component_overlay(dir, "agones", name_suffix)
}

/// [`agones_overlay`] for the component `deploy/<component>/`.
fn component_overlay<'a>(dir: &'a Path, component: &str, name_suffix: Option<&str>) -> &'a str {
    let mut kustomization = format!(
        "apiVersion: kustomize.config.k8s.io/v1beta1\n\
         kind: Kustomization\n\
         resources: [{}]\n\
         components: [{}]\n",
        relative_path(dir, &repo().join("deploy")).display(),
        relative_path(dir, &repo().join("deploy").join(component)).display(),
    );
    if let Some(suffix) = name_suffix {
        kustomization.push_str(&format!("nameSuffix: {suffix}\n"));
    }
    std::fs::write(dir.join("kustomization.yaml"), kustomization).unwrap();
    dir.to_str().unwrap()
}

/// `kubectl kustomize dir`, which must succeed.
fn kustomize(dir: &str) -> String {
    let out = Command::new("kubectl")
        .args(["kustomize", dir])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "kubectl kustomize {dir}:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// The objects a component's rendering has left after the test took out what it checked: the
/// base's, unchanged.
fn assert_rest_unchanged(
    overlay: &BTreeMap<String, serde_yaml::Value>,
    base: &BTreeMap<String, serde_yaml::Value>,
) {
    assert_eq!(
        overlay.keys().collect::<Vec<_>>(),
        base.keys().collect::<Vec<_>>(),
        "the component adds or removes other objects"
    );
    for (key, object) in base {
        assert_eq!(
            &overlay[key], object,
            "the component changes {key} of the base"
        );
    }
}

/// The documents of a rendering, by `Kind/name`.
fn rendered_objects(rendered: &str) -> BTreeMap<String, serde_yaml::Value> {
    let mut objects = BTreeMap::new();
    for doc in serde_yaml::Deserializer::from_str(rendered) {
        let value = <serde_yaml::Value as serde::Deserialize>::deserialize(doc).unwrap();
        let key = format!(
            "{}/{}",
            value["kind"].as_str().unwrap_or_default(),
            value["metadata"]["name"].as_str().unwrap_or_default()
        );
        assert!(
            objects.insert(key.clone(), value).is_none(),
            "{key} rendered twice"
        );
    }
    objects
}

/// A ConfigMap's `config.yaml` as a YAML mapping.
fn config_of(configmap: &serde_yaml::Value) -> serde_yaml::Mapping {
    let text = configmap["data"]["config.yaml"]
        .as_str()
        .expect("the ConfigMap has data.config.yaml");
    serde_yaml::from_str(text).unwrap_or_else(|e| panic!("config.yaml: {e}\n{text}"))
}

/// `kubectl` on PATH, or `None` (after saying so) to skip a test that needs no cluster.
fn kubectl_or_skip(test: &str) -> Option<()> {
    let found = Command::new("kubectl")
        .args(["version", "--client"])
        .stdin(Stdio::null())
        .output()
        .is_ok_and(|o| o.status.success());
    if !found {
        prereq::skip(
            test,
            "kubectl",
            "install kubectl (it renders the kustomize manifests) and run the tests again",
        );
    }
    found.then_some(())
}

/// Without a cluster: base + the Agones component renders, adds exactly its ClusterRole and
/// ClusterRoleBinding (to kubescaler's ServiceAccount), changes nothing of the base but
/// config.yaml, and that config.yaml is the base's plus `server-source: agones`. (Not passed
/// through `kubescaler check-config`: the daemon does not know `server-source` yet.)
#[test]
fn agones_component_renders_its_rbac_and_server_source() {
    let test = "agones_component_renders_its_rbac_and_server_source";
    let Some(()) = kubectl_or_skip(test) else {
        return;
    };
    let base_rendered = kustomize(repo().join("deploy").to_str().unwrap());
    // The base stays without any Agones access.
    assert!(
        !base_rendered.contains("agones"),
        "the base mentions Agones:\n{base_rendered}"
    );
    let dir = tempfile::tempdir().unwrap();
    let rendered = kustomize(agones_overlay(dir.path(), None));
    let mut base = rendered_objects(&base_rendered);
    let mut overlay = rendered_objects(&rendered);

    let role = overlay
        .remove("ClusterRole/kubescaler-agones")
        .unwrap_or_else(|| panic!("no ClusterRole kubescaler-agones:\n{rendered}"));
    let rules = serde_json::to_value(&role["rules"]).unwrap();
    assert_eq!(
        rules,
        json!([
            {"apiGroups": ["agones.dev"], "resources": ["gameservers"],
             "verbs": ["get", "list", "watch", "delete"]},
            {"apiGroups": ["agones.dev"], "resources": ["fleets"],
             "verbs": ["get", "list", "watch"]},
            {"apiGroups": ["autoscaling.agones.dev"], "resources": ["fleetautoscalers"],
             "verbs": ["get", "list", "watch"]},
        ]),
        "the Agones ClusterRole's rules"
    );
    let binding = overlay
        .remove("ClusterRoleBinding/kubescaler-agones")
        .unwrap_or_else(|| panic!("no ClusterRoleBinding kubescaler-agones:\n{rendered}"));
    assert_eq!(
        serde_json::to_value(&binding["roleRef"]).unwrap(),
        json!({"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole",
               "name": "kubescaler-agones"})
    );
    assert_eq!(
        serde_json::to_value(&binding["subjects"]).unwrap(),
        json!([{"kind": "ServiceAccount", "name": SERVICE_ACCOUNT, "namespace": NAMESPACE}]),
        "the Agones rights go to kubescaler's ServiceAccount"
    );

    // config.yaml: the base's, plus server-source: agones.
    let key = "ConfigMap/kubescaler-config";
    let mut config = config_of(&overlay.remove(key).expect("the overlay's ConfigMap"));
    let base_config = config_of(&base.remove(key).expect("the base's ConfigMap"));
    assert_eq!(
        config.remove("server-source"),
        Some("agones".into()),
        "the component's config.yaml must set server-source: agones"
    );
    assert_eq!(
        config, base_config,
        "the component's config.yaml must be the base's plus server-source (update \
         deploy/agones/configmap-patch.yaml to the base's deploy/configmap.yaml)"
    );

    // Everything else is the base's, unchanged (the base's ClusterRole included).
    assert_rest_unchanged(&overlay, &base);
}

/// On the control plane: a copy of base + component under [`AGONES_E2E_SUFFIX`] names (the
/// shipped objects would widen kubescaler's own ServiceAccount, which the base's matrix checks
/// in parallel) gives its ServiceAccount exactly the base's rights plus the Agones mode's.
/// `can-i` resolves resources through discovery, so Agones' CRDs are installed first.
#[test]
fn agones_component_service_account_has_exactly_the_agones_rbac() {
    let test = "agones_component_service_account_has_exactly_the_agones_rbac";
    let Some(d) = deployed(test) else { return };
    let Some(crds) = prereq::agones_crds_or_skip(test) else {
        return;
    };
    assert_component_rbac(
        d,
        "agones",
        AGONES_E2E_SUFFIX,
        &crds,
        AGONES_CAN_I,
        "agones.dev",
    );
}

/// The `can-i` matrix of base + the Cluster API component: its rights, in any namespace (the
/// group's namespace is configuration), and what stays refused.
const CLUSTERAPI_CAN_I: &str = "
# What the clusterapi provider does (deploy/clusterapi/rbac.yaml).
yes get machinedeployments.cluster.x-k8s.io -n default
yes get machinedeployments.cluster.x-k8s.io/game-servers -n capi-clusters
yes get machinesets.cluster.x-k8s.io -n default
yes get machinepools.cluster.x-k8s.io -n default
yes get machinedeployments.cluster.x-k8s.io --subresource=scale -n default
yes update machinedeployments.cluster.x-k8s.io --subresource=scale -n default
yes get machinesets.cluster.x-k8s.io --subresource=scale -n default
yes update machinesets.cluster.x-k8s.io --subresource=scale -n default
yes get machinepools.cluster.x-k8s.io --subresource=scale -n default
yes update machinepools.cluster.x-k8s.io --subresource=scale -n default
yes list machines.cluster.x-k8s.io -n default
yes patch machines.cluster.x-k8s.io -n default
yes patch machines.cluster.x-k8s.io/any-machine -n capi-clusters
# Groups: read one by name; never listed, watched or written but through scale.
no  list machinedeployments.cluster.x-k8s.io -n default
no  watch machinedeployments.cluster.x-k8s.io -n default
no  create machinedeployments.cluster.x-k8s.io -n default
no  update machinedeployments.cluster.x-k8s.io -n default
no  patch machinedeployments.cluster.x-k8s.io -n default
no  delete machinedeployments.cluster.x-k8s.io -n default
no  patch machinedeployments.cluster.x-k8s.io --subresource=scale -n default
no  update machinedeployments.cluster.x-k8s.io --subresource=status -n default
no  update machinesets.cluster.x-k8s.io -n default
no  delete machinesets.cluster.x-k8s.io -n default
no  patch machinesets.cluster.x-k8s.io --subresource=scale -n default
no  update machinepools.cluster.x-k8s.io -n default
# Machines: listed and marked, never deleted (Cluster API removes the marked one).
no  get machines.cluster.x-k8s.io -n default
no  watch machines.cluster.x-k8s.io -n default
no  delete machines.cluster.x-k8s.io -n default
no  deletecollection machines.cluster.x-k8s.io -n default
no  create machines.cluster.x-k8s.io -n default
no  update machines.cluster.x-k8s.io -n default
no  patch machines.cluster.x-k8s.io --subresource=status -n default
# Nothing else of Cluster API.
no  get clusters.cluster.x-k8s.io -n default
no  patch clusters.cluster.x-k8s.io -n default
no  get machinehealthchecks.cluster.x-k8s.io -n default
";

/// Suffix of the test's copy of base + the Cluster API component (see [`AGONES_E2E_SUFFIX`]).
const CLUSTERAPI_E2E_SUFFIX: &str = "-clusterapi-e2e";

/// Without a cluster: base + the Cluster API component renders, adds exactly its ClusterRole
/// and ClusterRoleBinding, drops the token Secret's volume (the provider needs no token), and
/// its config.yaml is the base's with the provider's keys for the cloud's, which
/// `kubescaler check-config` accepts.
#[test]
fn clusterapi_component_renders_its_rbac_and_provider_and_needs_no_token() {
    let test = "clusterapi_component_renders_its_rbac_and_provider_and_needs_no_token";
    let Some(()) = kubectl_or_skip(test) else {
        return;
    };
    let base_rendered = kustomize(repo().join("deploy").to_str().unwrap());
    assert!(
        !base_rendered.contains("cluster.x-k8s.io"),
        "the base mentions Cluster API:\n{base_rendered}"
    );
    let dir = tempfile::tempdir().unwrap();
    let rendered = kustomize(component_overlay(dir.path(), "clusterapi", None));
    let mut base = rendered_objects(&base_rendered);
    let mut overlay = rendered_objects(&rendered);

    let role = overlay
        .remove("ClusterRole/kubescaler-clusterapi")
        .unwrap_or_else(|| panic!("no ClusterRole kubescaler-clusterapi:\n{rendered}"));
    assert_eq!(
        serde_json::to_value(&role["rules"]).unwrap(),
        json!([
            {"apiGroups": ["cluster.x-k8s.io"],
             "resources": ["machinedeployments", "machinesets", "machinepools"],
             "verbs": ["get"]},
            {"apiGroups": ["cluster.x-k8s.io"],
             "resources": ["machinedeployments/scale", "machinesets/scale", "machinepools/scale"],
             "verbs": ["get", "update"]},
            {"apiGroups": ["cluster.x-k8s.io"], "resources": ["machines"],
             "verbs": ["list", "patch"]},
        ]),
        "the Cluster API ClusterRole's rules"
    );
    let binding = overlay
        .remove("ClusterRoleBinding/kubescaler-clusterapi")
        .unwrap_or_else(|| panic!("no ClusterRoleBinding kubescaler-clusterapi:\n{rendered}"));
    assert_eq!(
        serde_json::to_value(&binding["subjects"]).unwrap(),
        json!([{"kind": "ServiceAccount", "name": SERVICE_ACCOUNT, "namespace": NAMESPACE}]),
        "the Cluster API rights go to kubescaler's ServiceAccount"
    );

    // The Deployment: the base's without the token volume and its mount.
    let key = "Deployment/kubescaler";
    let deployment = serde_json::to_value(overlay.remove(key).unwrap()).unwrap();
    let mut base_deployment = serde_json::to_value(base.remove(key).unwrap()).unwrap();
    let pod = &mut base_deployment["spec"]["template"]["spec"];
    pod["volumes"]
        .as_array_mut()
        .unwrap()
        .retain(|v| v["name"] != "cloud-token");
    pod["containers"][0]["volumeMounts"]
        .as_array_mut()
        .unwrap()
        .retain(|m| m["name"] != "cloud-token");
    assert_eq!(
        deployment, base_deployment,
        "the component changes the Deployment beyond dropping the token volume"
    );

    // config.yaml: the base's, the cloud keys swapped for the provider's.
    let key = "ConfigMap/kubescaler-config";
    let config_map = overlay.remove(key).expect("the overlay's ConfigMap");
    let mut config = config_of(&config_map);
    let mut base_config = config_of(&base.remove(key).expect("the base's ConfigMap"));
    assert_eq!(config.remove("cloud-provider"), Some("clusterapi".into()));
    for key in [
        "clusterapi-node-group-kind",
        "clusterapi-namespace",
        "clusterapi-management-kubeconfig",
    ] {
        assert!(config.remove(key).is_some(), "config.yaml lacks {key}");
    }
    base_config.remove("cloud-provider");
    assert!(
        base_config.remove("cloud-provider-token-file").is_some(),
        "the base reads a token file"
    );
    assert_eq!(
        config, base_config,
        "the component's config.yaml must be the base's with the provider's keys (update \
         deploy/clusterapi/configmap-patch.yaml to the base's deploy/configmap.yaml)"
    );
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config.yaml");
    std::fs::write(&path, config_map["data"]["config.yaml"].as_str().unwrap()).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_kubescaler"))
        .env_clear()
        .current_dir(dir.path())
        .env("POD_NAMESPACE", NAMESPACE)
        .env("LEADER_ELECTION_NAMESPACE", NAMESPACE)
        .arg("--config")
        .arg(&path)
        .arg("check-config")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "check-config refuses the component's config.yaml (no token given):\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("clusterapi-node-group-kind: MachineDeployment"),
        "{stdout}"
    );

    assert_rest_unchanged(&overlay, &base);
}

/// On the control plane: a copy of base + the Cluster API component (under
/// [`CLUSTERAPI_E2E_SUFFIX`] names) gives its ServiceAccount exactly the base's rights plus
/// the provider's ([`CLUSTERAPI_CAN_I`]). Cluster API's CRDs are installed first: `can-i`
/// resolves resources through discovery.
#[test]
fn clusterapi_component_service_account_has_exactly_the_clusterapi_rbac() {
    let test = "clusterapi_component_service_account_has_exactly_the_clusterapi_rbac";
    let Some(d) = deployed(test) else { return };
    let Some(crds) = prereq::capi_crds_or_skip(test) else {
        return;
    };
    assert_component_rbac(
        d,
        "clusterapi",
        CLUSTERAPI_E2E_SUFFIX,
        &crds,
        CLUSTERAPI_CAN_I,
        "cluster.x-k8s.io",
    );
}

/// Renders base + `deploy/<component>/` under `suffix` names (the shipped objects would widen
/// kubescaler's own ServiceAccount, which the base's matrix checks in parallel), applies it
/// with the CRDs of `crds` installed (`can-i` resolves resources through discovery), and
/// checks that its ServiceAccount has exactly the `matrix` plus every line of the base's
/// matrix not about `group` (yes and no: the base's rights neither lost nor widened). Each
/// question of the base's matrix about `group` must be in `matrix` too, so none goes
/// unchecked.
fn assert_component_rbac(
    d: &Deployed,
    component: &str,
    suffix: &str,
    crds: &Path,
    matrix: &str,
    group: &str,
) {
    let dir = tempfile::tempdir().unwrap();
    let overlay = component_overlay(dir.path(), component, Some(suffix));
    let rendered = kubectl_ok(&d.admin, &["kustomize", overlay]);
    // Before applying: no object but kubescaler's Namespace keeps a shipped name (it would
    // overwrite the base's, e.g. its ClusterRoleBinding), and every binding names the copy's
    // ServiceAccount.
    let service_account = format!("{SERVICE_ACCOUNT}{suffix}");
    let objects = rendered_objects(&rendered);
    for (key, object) in &objects {
        assert!(
            key == "Namespace/kubescaler" || key.ends_with(suffix),
            "{key}: the test's copy would overwrite a shipped object"
        );
        for subject in object["subjects"].as_sequence().into_iter().flatten() {
            assert_eq!(
                subject["name"].as_str(),
                Some(service_account.as_str()),
                "{key} binds another subject"
            );
        }
    }
    let role = format!("ClusterRole/kubescaler-{component}{suffix}");
    assert!(objects.contains_key(&role), "no {role}:\n{rendered}");
    install_crds(&d.admin, crds);
    kubectl_ok(&d.admin, &["apply", "-k", overlay]);

    let user = format!("system:serviceaccount:{NAMESPACE}:{service_account}");
    let sa_kubeconfig = dir
        .path()
        .join(format!("kubescaler-{component}-sa.kubeconfig"));
    service_account_kubeconfig(&d.admin, &service_account, &user, &sa_kubeconfig);

    let questions = with_base_questions(
        can_i_questions(matrix),
        can_i_questions(CAN_I),
        &[group],
        &format!("the {component} matrix"),
    );
    assert_can_i(&sa_kubeconfig, &user, &questions);
}

/// `own` (the questions of components' matrices) plus every question of `base` (the base's
/// matrix) not about one of `groups`, yes and no: the base's rights neither lost nor widened.
/// Each question of `base` about `groups` must be in `own` too (`what` names it), so that none
/// goes unchecked.
fn with_base_questions(
    own: Vec<(bool, String)>,
    base: Vec<(bool, String)>,
    groups: &[&str],
    what: &str,
) -> Vec<(bool, String)> {
    let asked: BTreeSet<&str> = own.iter().map(|(_, q)| q.as_str()).collect();
    let (base_groups, base_rest): (Vec<_>, Vec<_>) = base
        .into_iter()
        .partition(|(_, q)| groups.iter().any(|g| q.contains(g)));
    let unasked: Vec<&str> = base_groups
        .iter()
        .map(|(_, q)| q.as_str())
        .filter(|q| !asked.contains(q))
        .collect();
    assert!(
        unasked.is_empty(),
        "questions of CAN_I about {groups:?} missing from {what}: {unasked:?}"
    );
    let mut questions = own;
    questions.extend(base_rest);
    questions
}

// --- the Helm chart (deploy/helm/kubescaler/) ----------------------------------------------

/// The chart, in the checkout under test.
fn chart_dir() -> PathBuf {
    repo().join("deploy/helm/kubescaler")
}

/// Runs `helm args...` with a Helm home of its own (no repositories, no plugins, nothing read
/// from or written to the user's ~/.config/helm or ~/.cache/helm) and no kubeconfig: lint and
/// template need no cluster, and the tests never touch a developer's own.
fn helm(helm: &Path, args: &[&str]) -> Output {
    let home = tempfile::tempdir().unwrap();
    Command::new(helm)
        .args(args)
        .env_remove("KUBECONFIG")
        .env("HELM_CACHE_HOME", home.path().join("cache"))
        .env("HELM_CONFIG_HOME", home.path().join("config"))
        .env("HELM_DATA_HOME", home.path().join("data"))
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("{} {args:?}: {e}", helm.display()))
}

/// `helm template release chart -n namespace --set s...` for each of `sets`: the rendering, or
/// the error's stderr.
fn helm_template_result(
    helm_bin: &Path,
    release: &str,
    namespace: &str,
    sets: &[&str],
) -> Result<String, String> {
    let chart = chart_dir();
    let mut args = vec![
        "template",
        release,
        chart.to_str().unwrap(),
        "--namespace",
        namespace,
    ];
    for set in sets {
        args.extend(["--set", set]);
    }
    let out = helm(helm_bin, &args);
    if out.status.success() {
        Ok(String::from_utf8(out.stdout).unwrap())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

/// [`helm_template_result`], which must succeed.
fn helm_template(helm_bin: &Path, release: &str, namespace: &str, sets: &[&str]) -> String {
    helm_template_result(helm_bin, release, namespace, sets)
        .unwrap_or_else(|e| panic!("helm template {release} -n {namespace} {sets:?}:\n{e}"))
}

/// The base's names: release `kubescaler` in namespace `kubescaler` renders them.
const CHART_BASE_RELEASE: &str = "kubescaler";

/// The `--set`s that switch on the chart's toggles for the kustomize components `components`.
fn chart_toggles(components: &[&str]) -> Vec<String> {
    components
        .iter()
        .map(|c| format!("{c}.enabled=true"))
        .collect()
}

/// The chart's objects (by `Kind/name`) as release [`CHART_BASE_RELEASE`] in [`NAMESPACE`],
/// whose names are the base's, with `sets`.
fn chart_objects(helm_bin: &Path, sets: &[&str]) -> BTreeMap<String, serde_yaml::Value> {
    rendered_objects(&helm_template(
        helm_bin,
        CHART_BASE_RELEASE,
        NAMESPACE,
        sets,
    ))
}

/// What a test compares: the objects of base + `components` as kustomize renders them, and
/// the chart's ([`chart_objects`]) with those components' toggles and `sets`; with the chart's
/// `--set`s, for its messages.
fn kustomize_and_chart(
    helm_bin: &Path,
    components: &[&str],
    sets: &[&str],
) -> (
    BTreeMap<String, serde_yaml::Value>,
    BTreeMap<String, serde_yaml::Value>,
    Vec<String>,
) {
    let dir = tempfile::tempdir().unwrap();
    let base = rendered_objects(&kustomize(components_overlay(dir.path(), components)));
    let mut all = chart_toggles(components);
    all.extend(sets.iter().map(|s| (*s).to_owned()));
    let chart = chart_objects(
        helm_bin,
        &all.iter().map(String::as_str).collect::<Vec<_>>(),
    );
    (base, chart, all)
}

/// Writes into `dir` an overlay of the base with every component of `components` (none: the
/// base alone, through an overlay all the same). Returns `dir` as a `&str` for kubectl.
fn components_overlay<'a>(dir: &'a Path, components: &[&str]) -> &'a str {
    let components: Vec<String> = components
        .iter()
        .map(|c| {
            relative_path(dir, &repo().join("deploy").join(c))
                .display()
                .to_string()
        })
        .collect();
    std::fs::write(
        dir.join("kustomization.yaml"),
        format!(
            "apiVersion: kustomize.config.k8s.io/v1beta1\n\
             kind: Kustomization\n\
             resources: [{}]\n\
             components: [{}]\n",
            relative_path(dir, &repo().join("deploy")).display(),
            components.join(", "),
        ),
    )
    .unwrap();
    dir.to_str().unwrap()
}

/// Every RBAC rule of a rendering, normalized: `ClusterRole: {rule}` or `Role <namespace>:
/// {rule}`, each list of the rule sorted, sorted and with duplicates kept (the role names are
/// left out: the chart names them after the release).
fn rbac_rules(objects: &BTreeMap<String, serde_yaml::Value>) -> Vec<String> {
    let mut rules = Vec::new();
    for object in objects.values() {
        let scope = match object["kind"].as_str() {
            Some("ClusterRole") => "ClusterRole".to_owned(),
            Some("Role") => format!(
                "Role {}",
                object["metadata"]["namespace"].as_str().unwrap_or_default()
            ),
            _ => continue,
        };
        for rule in object["rules"].as_sequence().into_iter().flatten() {
            let mut normalized = BTreeMap::new();
            for field in [
                "apiGroups",
                "resources",
                "resourceNames",
                "verbs",
                "nonResourceURLs",
            ] {
                let mut list: Vec<String> = rule[field]
                    .as_sequence()
                    .into_iter()
                    .flatten()
                    .map(|v| v.as_str().unwrap().to_owned())
                    .collect();
                list.sort();
                if !list.is_empty() {
                    normalized.insert(field, list);
                }
            }
            rules.push(format!("{scope}: {}", json!(normalized)));
        }
    }
    rules.sort();
    rules
}

/// Every binding of a rendering binds a role of the same rendering to exactly `subject`.
fn assert_bindings_bind(
    objects: &BTreeMap<String, serde_yaml::Value>,
    subject: &serde_json::Value,
    what: &str,
) {
    let mut bindings = 0;
    for (key, object) in objects {
        let kind = object["kind"].as_str().unwrap_or_default();
        if kind != "ClusterRoleBinding" && kind != "RoleBinding" {
            continue;
        }
        bindings += 1;
        let role = format!(
            "{}/{}",
            object["roleRef"]["kind"].as_str().unwrap_or_default(),
            object["roleRef"]["name"].as_str().unwrap_or_default()
        );
        assert!(
            objects.contains_key(&role),
            "{what}: {key} binds {role}, which it does not render"
        );
        assert_eq!(
            serde_json::to_value(&object["subjects"]).unwrap(),
            json!([subject]),
            "{what}: {key} binds another subject"
        );
    }
    assert!(bindings > 0, "{what} renders no binding");
}

/// The labels Helm adds to what the base has (`app.kubernetes.io/name`, `part-of`).
const HELM_LABELS: &[&str] = &[
    "app.kubernetes.io/instance",
    "app.kubernetes.io/managed-by",
    "app.kubernetes.io/version",
    "helm.sh/chart",
];

/// A chart's object without what only Helm adds: its labels, the release in the selector
/// labels, the config checksum on the pod template.
fn without_helm_additions(object: &serde_yaml::Value) -> serde_json::Value {
    fn strip(labels: &mut serde_json::Value) {
        if let Some(labels) = labels.as_object_mut() {
            for label in HELM_LABELS {
                labels.remove(*label);
            }
        }
    }
    let mut object = serde_json::to_value(object).unwrap();
    strip(&mut object["metadata"]["labels"]);
    if object["kind"] == "Deployment" {
        strip(&mut object["spec"]["selector"]["matchLabels"]);
        let template = &mut object["spec"]["template"];
        strip(&mut template["metadata"]["labels"]);
        let annotations = template["metadata"]["annotations"].as_object_mut().unwrap();
        assert!(
            annotations.remove("checksum/config").is_some(),
            "the chart's pod template has no checksum/config (a changed config must roll the pods)"
        );
        for term in template["spec"]["affinity"]["podAntiAffinity"]
            ["preferredDuringSchedulingIgnoredDuringExecution"]
            .as_array_mut()
            .into_iter()
            .flatten()
        {
            strip(&mut term["podAffinityTerm"]["labelSelector"]["matchLabels"]);
        }
    }
    object
}

/// `kubescaler check-config` of the `config.yaml` of `configmap`, with the env the pods of
/// `deployment` get (downward API values of a pod in `namespace`) and, when the Deployment
/// mounts the token Secret, a token file in its place: the effective configuration (its origin
/// comments dropped, they name the temp file), or the error.
fn check_config_of(
    configmap: &serde_yaml::Value,
    deployment: &serde_yaml::Value,
    namespace: &str,
) -> Result<serde_yaml::Value, String> {
    let config_yaml = configmap["data"]["config.yaml"]
        .as_str()
        .expect("the ConfigMap has data.config.yaml");
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config.yaml");
    std::fs::write(&config, config_yaml).unwrap();
    let pod = &deployment["spec"]["template"]["spec"];
    let container = &pod["containers"][0];
    let args: Vec<&str> = container["args"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap())
        .collect();
    assert_eq!(args, ["--config", "/etc/kubescaler/config.yaml"]);
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_kubescaler"));
    cmd.env_clear().current_dir(dir.path());
    for var in container["env"].as_sequence().unwrap() {
        let name = var["name"].as_str().unwrap();
        let value = match var["valueFrom"]["fieldRef"]["fieldPath"].as_str() {
            Some("metadata.namespace") => namespace,
            Some("metadata.name") => "kubescaler-7d9f8b6c5-x2x4q",
            _ => var["value"].as_str().unwrap_or_default(),
        };
        cmd.env(name, value);
    }
    let token_mounted = pod["volumes"]
        .as_sequence()
        .into_iter()
        .flatten()
        .any(|v| v["secret"].is_mapping());
    let token_file = dir.path().join("token");
    if token_mounted {
        std::fs::write(&token_file, "dop_v1_EXAMPLE_not_a_real_token_0123456789\n").unwrap();
        cmd.arg("--cloud-provider-token-file").arg(&token_file);
    }
    let out = cmd
        .arg("--config")
        .arg(&config)
        .arg("check-config")
        .output()
        .unwrap();
    if !out.status.success() {
        return Err(String::from_utf8_lossy(&out.stderr).into_owned());
    }
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert!(
        !stdout.contains("dop_v1_EXAMPLE"),
        "check-config printed the token"
    );
    // The token file's temp path stands for the mounted Secret's file.
    let stdout = stdout.replace(
        token_file.to_str().unwrap(),
        "<the mounted token Secret's file>",
    );
    Ok(serde_yaml::from_str(&stdout)
        .unwrap_or_else(|e| panic!("check-config's YAML: {e}\n{stdout}")))
}

/// Every configuration key (`config::KEYS`) but the token: what the chart's values.yaml and
/// its config.yaml must hold (the token comes from the Secret instead).
fn config_keys_but_the_token() -> BTreeSet<&'static str> {
    kubescaler::config::KEYS
        .iter()
        .copied()
        .filter(|k| *k != kubescaler::config::TOKEN_KEY)
        .collect()
}

/// The chart's `values.yaml` has an entry under `config:` for every configuration key
/// (`config::KEYS`) but the token, and no other: a key added to kubescaler must get its value
/// (and comment) in the chart. Needs no helm.
#[test]
fn helm_values_config_has_every_config_key_but_the_token() {
    let values: serde_yaml::Value =
        serde_yaml::from_str(&std::fs::read_to_string(chart_dir().join("values.yaml")).unwrap())
            .unwrap();
    let config = values["config"]
        .as_mapping()
        .expect("values.yaml has a config: mapping");
    let in_values: BTreeSet<&str> = config.keys().map(|k| k.as_str().unwrap()).collect();
    let wanted = config_keys_but_the_token();
    let missing: Vec<_> = wanted.difference(&in_values).collect();
    let unknown: Vec<_> = in_values.difference(&wanted).collect();
    assert!(
        missing.is_empty() && unknown.is_empty(),
        "deploy/helm/kubescaler/values.yaml config: lacks {missing:?} (config::KEYS), has \
         unknown {unknown:?} (the token {} must not be there)",
        kubescaler::config::TOKEN_KEY
    );
    // Where the token comes from instead.
    assert_eq!(values["tokenSecret"]["name"], "kubescaler-cloud-token");
    assert_eq!(values["tokenSecret"]["key"], "token");
}

/// `helm lint --strict` passes (also with each toggle), the chart is versioned as the crate,
/// and `helm template` renders the base's kinds and no Secret.
#[test]
fn helm_chart_lints_and_is_versioned_as_the_crate() {
    let test = "helm_chart_lints_and_is_versioned_as_the_crate";
    let Some(helm_bin) = prereq::helm_or_skip(test) else {
        return;
    };
    let chart: serde_yaml::Value =
        serde_yaml::from_str(&std::fs::read_to_string(chart_dir().join("Chart.yaml")).unwrap())
            .unwrap();
    let crate_version = env!("CARGO_PKG_VERSION");
    assert_eq!(chart["name"], "kubescaler");
    assert_eq!(
        chart["version"].as_str(),
        Some(crate_version),
        "Chart.yaml version must be the crate's (Cargo.toml)"
    );
    assert_eq!(
        chart["appVersion"].as_str(),
        Some(crate_version),
        "Chart.yaml appVersion must be the crate's (Cargo.toml)"
    );
    let chart_path = chart_dir();
    for sets in [
        &[][..],
        &["agones.enabled=true"][..],
        &["clusterapi.enabled=true"][..],
        &["agones.enabled=true,clusterapi.enabled=true,namespace.create=true"][..],
    ] {
        let mut args = vec!["lint", "--strict", chart_path.to_str().unwrap()];
        for set in sets {
            args.extend(["--set", set]);
        }
        let out = helm(&helm_bin, &args);
        assert!(
            out.status.success(),
            "helm lint --strict {sets:?}:\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let rendered = helm_template(&helm_bin, CHART_BASE_RELEASE, NAMESPACE, &[]);
    assert_renders_kinds(&rendered, &BASE_KINDS, "helm template");
    assert!(
        !rendered.contains("\nkind: Secret\n") && !rendered.contains("\nkind: Namespace\n"),
        "by default the chart renders no Secret (the token Secret is the user's) and no \
         Namespace (namespace.create)"
    );
}

/// The chart's RBAC rules (every ClusterRole's and Role's, normalized) are exactly the
/// kustomize base's, and with `agones.enabled` / `clusterapi.enabled` exactly base + that
/// component's; every binding binds one of them to the chart's ServiceAccount only. Under
/// another release and namespace the rules follow the namespace (its Namespace object, its
/// Leases) and nothing else.
#[test]
fn helm_chart_rbac_rules_equal_the_kustomize_base_and_components() {
    let test = "helm_chart_rbac_rules_equal_the_kustomize_base_and_components";
    let Some(helm_bin) = prereq::helm_or_skip(test) else {
        return;
    };
    for components in [
        &[][..],
        &["agones"][..],
        &["clusterapi"][..],
        &["agones", "clusterapi"][..],
    ] {
        let (base, chart, sets) = kustomize_and_chart(&helm_bin, components, &[]);
        let base_rules = rbac_rules(&base);
        assert!(!base_rules.is_empty());
        assert_eq!(
            rbac_rules(&chart),
            base_rules,
            "the chart's RBAC rules with {sets:?} differ from deploy/ with components \
             {components:?}"
        );
        let subject = json!({"kind": "ServiceAccount", "name": SERVICE_ACCOUNT,
                             "namespace": NAMESPACE});
        assert_bindings_bind(&chart, &subject, &format!("the chart with {sets:?}"));
        assert_bindings_bind(&base, &subject, &format!("deploy/ with {components:?}"));
    }

    // Another release in another namespace: the same rules but for the namespace's names.
    let (release, namespace) = ("games-autoscaler", "autoscaling");
    let chart = rendered_objects(&helm_template(&helm_bin, release, namespace, &[]));
    let base = rendered_objects(&kustomize(repo().join("deploy").to_str().unwrap()));
    let mut moved: Vec<String> = rbac_rules(&base)
        .into_iter()
        .map(|r| {
            r.replace("Role kubescaler:", &format!("Role {namespace}:"))
                .replace(
                    r#""resourceNames":["kubescaler"],"resources":["namespaces"]"#,
                    &format!(r#""resourceNames":["{namespace}"],"resources":["namespaces"]"#),
                )
        })
        .collect();
    moved.sort();
    assert_eq!(
        rbac_rules(&chart),
        moved,
        "release {release} in {namespace}: the base's rules but for its namespace"
    );
    assert_bindings_bind(
        &chart,
        &json!({"kind": "ServiceAccount", "name": format!("{release}-kubescaler"),
                "namespace": namespace}),
        "the chart as another release",
    );
}

/// Release `kubescaler` in namespace `kubescaler` (with `namespace.create`) renders the
/// kustomize base object for object, and with each toggle base + that component: equal once
/// Helm's own labels and the config checksum are taken out (so the Deployment's hardening,
/// probes, ports, env, node affinity, resources and token volume are the base's); the
/// ConfigMaps' config.yaml give the same effective configuration (`kubescaler check-config`
/// with the Deployment's env).
#[test]
fn helm_chart_default_rendering_is_the_kustomize_base() {
    let test = "helm_chart_default_rendering_is_the_kustomize_base";
    let Some(helm_bin) = prereq::helm_or_skip(test) else {
        return;
    };
    for components in [&[][..], &["agones"][..], &["clusterapi"][..]] {
        let (mut base, mut chart, sets) =
            kustomize_and_chart(&helm_bin, components, &["namespace.create=true"]);

        let key = "ConfigMap/kubescaler-config";
        let (base_cm, chart_cm) = (base.remove(key).unwrap(), chart.remove(key).unwrap());
        let deployment = &base["Deployment/kubescaler"];
        let base_config = check_config_of(&base_cm, deployment, NAMESPACE)
            .unwrap_or_else(|e| panic!("check-config of deploy/ + {components:?}: {e}"));
        let chart_config = check_config_of(&chart_cm, &chart["Deployment/kubescaler"], NAMESPACE)
            .unwrap_or_else(|e| panic!("check-config of the chart with {sets:?}: {e}"));
        assert_eq!(
            chart_config, base_config,
            "the chart's config.yaml with {sets:?} is not the effective configuration of \
             deploy/ + {components:?}"
        );

        assert_eq!(
            chart.keys().collect::<Vec<_>>(),
            base.keys().collect::<Vec<_>>(),
            "the chart with {sets:?} renders other objects than deploy/ + {components:?}"
        );
        for (key, object) in &base {
            assert_eq!(
                without_helm_additions(&chart[key]),
                serde_json::to_value(object).unwrap(),
                "the chart's {key} with {sets:?} differs from deploy/ + {components:?}"
            );
        }
    }
}

/// The ConfigMap's config.yaml holds every key of `config::KEYS` but the token (null for an
/// unset one) and, with the Deployment's env, passes `kubescaler check-config`: by default,
/// with each toggle, and as another release in another namespace (where the Lease and its
/// Role follow the namespace).
#[test]
fn helm_chart_config_holds_every_key_and_passes_check_config() {
    let test = "helm_chart_config_holds_every_key_and_passes_check_config";
    let Some(helm_bin) = prereq::helm_or_skip(test) else {
        return;
    };
    for (release, namespace, sets) in [
        (CHART_BASE_RELEASE, NAMESPACE, &[][..]),
        (CHART_BASE_RELEASE, NAMESPACE, &["agones.enabled=true"][..]),
        (
            CHART_BASE_RELEASE,
            NAMESPACE,
            &["clusterapi.enabled=true"][..],
        ),
        (
            "games-autoscaler",
            "autoscaling",
            &["agones.enabled=true", "config.log-level=debug"][..],
        ),
    ] {
        let objects = rendered_objects(&helm_template(&helm_bin, release, namespace, sets));
        let name = if release.contains("kubescaler") {
            release.to_owned()
        } else {
            format!("{release}-kubescaler")
        };
        let configmap = &objects[&format!("ConfigMap/{name}-config")];
        let deployment = &objects[&format!("Deployment/{name}")];
        let config = config_of(configmap);
        let keys: BTreeSet<&str> = config.keys().map(|k| k.as_str().unwrap()).collect();
        let clusterapi = sets.contains(&"clusterapi.enabled=true");
        let wanted = config_keys_but_the_token();
        assert_eq!(
            keys, wanted,
            "the chart's config.yaml ({sets:?}) must hold every key of config::KEYS but the token"
        );
        let effective = check_config_of(configmap, deployment, namespace).unwrap_or_else(|e| {
            panic!("check-config refuses the chart's config.yaml ({sets:?}):\n{e}")
        });
        assert_eq!(effective["leader-election-namespace"], namespace);
        assert_eq!(
            effective["leader-election-identity"],
            "kubescaler-7d9f8b6c5-x2x4q"
        );
        assert_eq!(effective["http-listen-address"], "0.0.0.0:8080");
        let provider = if clusterapi {
            "clusterapi"
        } else {
            "digitalocean"
        };
        assert_eq!(effective["cloud-provider"], provider, "{sets:?}");
        let source = if sets.contains(&"agones.enabled=true") {
            "agones"
        } else {
            "pods"
        };
        assert_eq!(effective["server-source"], source, "{sets:?}");
        if clusterapi {
            assert!(
                config["cloud-provider-token-file"].is_null(),
                "Cluster API needs no token, so no token file"
            );
        } else {
            assert_eq!(
                config["cloud-provider-token-file"], "/var/run/secrets/kubescaler/token",
                "the token file is where the chart mounts tokenSecret"
            );
        }
    }
}

/// What the chart refuses to render, each an unsafe or inconsistent release: the token in the
/// values (it would land in the ConfigMap), several replicas without leader election, a fixed
/// leader identity, a listen address without a port. Leader election off drops the Lease Role.
#[test]
fn helm_chart_refuses_the_token_in_values_and_unsafe_leader_election() {
    let test = "helm_chart_refuses_the_token_in_values_and_unsafe_leader_election";
    let Some(helm_bin) = prereq::helm_or_skip(test) else {
        return;
    };
    for (sets, says) in [
        (
            &["config.cloud-provider-token=dop_v1_x"][..],
            "config.cloud-provider-token must not be set",
        ),
        (
            &["config.leader-election=false"][..],
            "replicaCount > 1 needs config.leader-election",
        ),
        (
            &["config.leader-election-identity=kubescaler-0"][..],
            "leader-election-identity must stay unset",
        ),
        (&["config.http-listen-address=0.0.0.0"][..], "has no port"),
    ] {
        match helm_template_result(&helm_bin, CHART_BASE_RELEASE, NAMESPACE, sets) {
            Ok(rendered) => panic!("helm template {sets:?} rendered:\n{rendered}"),
            Err(stderr) => assert!(stderr.contains(says), "helm template {sets:?}: {stderr}"),
        }
    }
    let single = chart_objects(
        &helm_bin,
        &["config.leader-election=false", "replicaCount=1"],
    );
    assert!(
        !single.contains_key("Role/kubescaler-leader-election")
            && !single.contains_key("RoleBinding/kubescaler-leader-election"),
        "without leader election the chart must not grant Leases"
    );
    // A renamed Lease in another namespace: the Role follows both, the env names the namespace.
    let moved = chart_objects(
        &helm_bin,
        &[
            "config.leader-election-namespace=kube-system",
            "config.leader-election-lease-name=scaler",
        ],
    );
    let role = &moved["Role/kubescaler-leader-election"];
    assert_eq!(role["metadata"]["namespace"], "kube-system");
    assert_eq!(role["rules"][1]["resourceNames"][0], "scaler");
    let env = serde_json::to_value(
        &moved["Deployment/kubescaler"]["spec"]["template"]["spec"]["containers"][0]["env"],
    )
    .unwrap();
    assert!(
        env.as_array()
            .unwrap()
            .contains(&json!({"name": "LEADER_ELECTION_NAMESPACE", "value": "kube-system"})),
        "{env}"
    );
}

/// The releases the control-plane tests install, each under names of its own (its ClusterRoles,
/// bindings and ServiceAccount start with the release name) in a namespace of its own, so that
/// none widens or disturbs the base's objects (whose matrix a parallel test checks) or another's.
const HELM_E2E_RELEASE: &str = "kubescaler-helm-e2e";
const HELM_E2E_TOGGLES_RELEASE: &str = "kubescaler-helm-toggles-e2e";

/// [`CAN_I`] for a release in `namespace`: its questions about kubescaler's namespace (`-n
/// kubescaler`, `namespaces/kubescaler`) asked about `namespace` instead, plus the base's
/// namespace refused (its Namespace object, its Leases).
fn can_i_questions_in(namespace: &str) -> Vec<(bool, String)> {
    let mut questions: Vec<(bool, String)> = can_i_questions(CAN_I)
        .into_iter()
        .map(|(want, question)| {
            let mut words: Vec<String> = Vec::new();
            for word in question.split_whitespace() {
                let moved = if word == NAMESPACE && words.last().is_some_and(|w| w == "-n") {
                    namespace.to_owned()
                } else if word == format!("namespaces/{NAMESPACE}") {
                    format!("namespaces/{namespace}")
                } else {
                    word.to_owned()
                };
                words.push(moved);
            }
            (want, words.join(" "))
        })
        .collect();
    for question in [
        format!("get namespaces/{NAMESPACE}"),
        format!("create leases.coordination.k8s.io -n {NAMESPACE}"),
        format!("get leases.coordination.k8s.io/{LEASE} -n {NAMESPACE}"),
        format!("update leases.coordination.k8s.io/{LEASE} -n {NAMESPACE}"),
    ] {
        questions.push((false, question));
    }
    questions
}

/// Renders the chart with the real `helm` as `release` in the namespace of the same name (the
/// Namespace rendered too, with `sets`), applies it, checks that it passes PodSecurity
/// `restricted` and that a token of its ServiceAccount gets exactly the answers of `questions`.
fn assert_helm_release_rbac(
    d: &Deployed,
    helm_bin: &Path,
    release: &str,
    sets: &[&str],
    questions: &[(bool, String)],
) {
    let namespace = release;
    let mut sets = sets.to_vec();
    sets.push("namespace.create=true");
    let rendered = helm_template(helm_bin, release, namespace, &sets);
    for key in rendered_objects(&rendered).keys() {
        let name = key.split_once('/').map_or("", |(_, name)| name);
        assert!(
            name == release || name.starts_with(&format!("{release}-")),
            "{key}: the release {release} would touch an object not its own"
        );
    }
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("chart.yaml");
    std::fs::write(&file, &rendered).unwrap();
    apply_within_pod_security(
        &d.admin,
        &["apply", "-f", file.to_str().unwrap()],
        &format!("the chart as {release}"),
    );
    assert_pod_template_admitted(&d.admin, namespace, release, dir.path());

    let user = format!("system:serviceaccount:{namespace}:{release}");
    let sa_kubeconfig = dir.path().join("kubescaler-helm-sa.kubeconfig");
    service_account_kubeconfig_in(&d.admin, namespace, release, &user, &sa_kubeconfig);
    assert_can_i(&sa_kubeconfig, &user, questions);
}

/// On the control plane: the chart, rendered by the real `helm` as its own release
/// ([`HELM_E2E_RELEASE`], in its own namespace) and applied, passes PodSecurity `restricted`,
/// and a token of its ServiceAccount can do exactly what the base's can, in its own namespace
/// ([`CAN_I`], moved there).
#[test]
fn helm_chart_service_account_has_exactly_the_rbac_kubescaler_needs() {
    let test = "helm_chart_service_account_has_exactly_the_rbac_kubescaler_needs";
    let Some(d) = deployed(test) else { return };
    let Some(helm_bin) = prereq::helm_or_skip(test) else {
        return;
    };
    assert_helm_release_rbac(
        d,
        &helm_bin,
        HELM_E2E_RELEASE,
        &[],
        &can_i_questions_in(HELM_E2E_RELEASE),
    );
}

/// On the control plane: the chart with `agones.enabled` and `clusterapi.enabled` (release
/// [`HELM_E2E_TOGGLES_RELEASE`]) gives its ServiceAccount exactly the base's rights plus both
/// components' ([`AGONES_CAN_I`], [`CLUSTERAPI_CAN_I`]), as base + the kustomize components do.
/// Both CRD sets are installed first: `can-i` resolves resources through discovery.
#[test]
fn helm_chart_toggles_give_exactly_the_agones_and_clusterapi_rbac() {
    let test = "helm_chart_toggles_give_exactly_the_agones_and_clusterapi_rbac";
    let Some(d) = deployed(test) else { return };
    let Some(helm_bin) = prereq::helm_or_skip(test) else {
        return;
    };
    let Some(agones_crds) = prereq::agones_crds_or_skip(test) else {
        return;
    };
    let Some(capi_crds) = prereq::capi_crds_or_skip(test) else {
        return;
    };
    install_crds(&d.admin, &agones_crds);
    install_crds(&d.admin, &capi_crds);
    let questions = with_base_questions(
        can_i_questions(AGONES_CAN_I)
            .into_iter()
            .chain(can_i_questions(CLUSTERAPI_CAN_I))
            .collect(),
        can_i_questions_in(HELM_E2E_TOGGLES_RELEASE),
        &["agones.dev", "cluster.x-k8s.io"],
        "the components' matrices",
    );
    assert_helm_release_rbac(
        d,
        &helm_bin,
        HELM_E2E_TOGGLES_RELEASE,
        &["agones.enabled=true", "clusterapi.enabled=true"],
        &questions,
    );
}

// --- the daemon with only the ServiceAccount's token --------------------------------------

/// The binary the replicas run: `KUBESCALER_E2E_BIN` (e.g. the static release binary of
/// `hack/static-build.sh`, the one the image ships) or this build's `kubescaler`.
fn daemon_binary() -> PathBuf {
    std::env::var_os("KUBESCALER_E2E_BIN")
        .filter(|p| !p.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_kubescaler")))
}

/// A `kubescaler` child process; stopped (SIGTERM, then SIGKILL) when dropped. On a failing
/// test its log is printed.
struct Daemon {
    name: String,
    child: Child,
    log: PathBuf,
    http: String,
}

impl Daemon {
    fn start(name: &str, dir: &Path, config: &Path, api_url: &str, port: u16) -> Daemon {
        let log = dir.join(format!("{name}.log"));
        let out = File::create(&log).unwrap();
        let child = Command::new(daemon_binary())
            .arg("--config")
            .arg(config)
            .args(["--leader-election-identity", name])
            .args(["--http-listen-address", &format!("127.0.0.1:{port}")])
            // Nothing from the test's environment: only the config file, the ServiceAccount
            // kubeconfig it names and the (fake) API URL.
            .env_clear()
            .env("DIGITALOCEAN_API_URL", api_url)
            .env("HOSTNAME", name)
            .current_dir(dir)
            .stdin(Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .spawn()
            .expect("start kubescaler");
        Daemon {
            name: name.to_owned(),
            child,
            log,
            http: format!("http://127.0.0.1:{port}"),
        }
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn log_text(&self) -> String {
        let mut s = String::new();
        if let Ok(mut f) = File::open(&self.log) {
            let _ = f.read_to_string(&mut s);
        }
        s
    }

    fn running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// SIGKILL: a replica that vanishes without releasing the Lease (its node died).
    fn kill_hard(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM, then SIGKILL after `grace`; whether it exited on its own.
    fn stop(&mut self, grace: Duration) -> bool {
        if !self.running() {
            return true;
        }
        let _ = Command::new("kill")
            .args(["-TERM", &self.pid().to_string()])
            .status();
        let deadline = Instant::now() + grace;
        while Instant::now() < deadline {
            if !self.running() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        self.kill_hard();
        false
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.stop(Duration::from_secs(5));
        // KUBESCALER_E2E_LOG_DIR=<dir> keeps every replica's log for a look afterwards.
        if let Some(keep) = std::env::var_os("KUBESCALER_E2E_LOG_DIR") {
            let keep = PathBuf::from(keep);
            let _ = std::fs::create_dir_all(&keep);
            let _ = std::fs::copy(&self.log, keep.join(format!("{}.log", self.name)));
        }
        if std::thread::panicking() {
            print_log_tail(
                &format!("kubescaler {} ({})", self.name, self.log.display()),
                &self.log_text(),
            );
        }
    }
}

async fn lease_holder(admin: &Client) -> Option<String> {
    Api::<Lease>::namespaced(admin.clone(), NAMESPACE)
        .get_opt(LEASE)
        .await
        .ok()
        .flatten()
        .and_then(|l| l.spec)
        .and_then(|s| s.holder_identity)
        .filter(|h| !h.is_empty())
}

/// The Events the given reporting instances recorded (events.k8s.io/v1 sees core v1 ones
/// too): (reason, regarding kind/name, whether the reference carries the object's uid).
async fn events_by(admin: &Client, instances: &[&str]) -> Vec<(String, String, bool)> {
    let events = Api::<Event>::all(admin.clone())
        .list(&ListParams::default())
        .await
        .unwrap();
    events
        .items
        .into_iter()
        .filter(|e| {
            e.reporting_controller.as_deref() == Some("kubescaler")
                && e.reporting_instance
                    .as_deref()
                    .is_some_and(|i| instances.contains(&i))
        })
        .map(|e| {
            let r = e.regarding.unwrap_or_default();
            let regarding = format!(
                "{}/{}",
                r.kind.unwrap_or_default(),
                r.name.unwrap_or_default()
            );
            let has_uid = r.uid.is_some_and(|u| !u.is_empty());
            (e.reason.unwrap_or_default(), regarding, has_uid)
        })
        .collect()
}

fn write_config(dir: &Path, sa_kubeconfig: &Path, token_file: &Path, id: &str) -> PathBuf {
    let config = format!(
        "\
cloud-provider: digitalocean
cloud-provider-token-file: {token}
cluster-name: {id}
node-pool-name: {id}-pool
cluster-kube-config-path: {kubeconfig}
node-selector: \"{POOL_LABEL}={id}\"
server-pod-label-name: app
server-pod-label-value: \"{id}\"
minimum-node-pool-size: 1
maximum-node-pool-size: 4
buffer-slot-size: 2
server-cpu-resource-request: 1000
scale-loop-tick-sec: 1
empty-node-expiration-sec: 3
scale-down-unneeded-sec: 0
scale-down-delay-after-add-sec: 0
node-boot-timeout-sec: 60
leader-election: true
leader-election-namespace: {NAMESPACE}
leader-election-lease-name: {LEASE}
leader-election-lease-duration-sec: {LEASE_DURATION_SEC}
log-format: text
log-level: info,kubescaler=debug
",
        token = token_file.display(),
        kubeconfig = sa_kubeconfig.display(),
    );
    let path = dir.join("config.yaml");
    std::fs::write(&path, config).unwrap();
    path
}

/// Two replicas of the real binary with only the ServiceAccount's token: scale up, leader
/// lost, scale down, zero lost servers, no 403.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_with_only_the_service_account_scale_up_and_down() {
    let test = "two_replicas_with_only_the_service_account_scale_up_and_down";
    let Some(d) = deployed(test) else { return };
    let Some(admin) = client_or_skip(test).await else {
        return;
    };
    let id = unique_id("deploy");
    let dir = tempfile::tempdir().unwrap();

    // A Lease left by an earlier run (a killed replica does not release it) would only delay
    // the election by its duration; remove it to keep the test short.
    let _ = Api::<Lease>::namespaced(admin.clone(), NAMESPACE)
        .delete(LEASE, &DeleteParams::default())
        .await;

    // The cloud: a DOKS fake registering its nodes in the control plane, one node to start.
    let token = format!("e2e-token-{id}");
    let (fake, cluster_id, pool_id) = start_fake_with_pool(
        &admin,
        &id,
        FakeOptions {
            token: token.clone(),
            ..FakeOptions::default()
        },
    )
    .await;

    let token_file = dir.path().join("token");
    std::fs::write(&token_file, format!("{token}\n")).unwrap();
    let config = write_config(dir.path(), &d.sa_kubeconfig, &token_file, &id);
    let (name_a, name_b) = (format!("{id}-a"), format!("{id}-b"));
    let mut a = Daemon::start(&name_a, dir.path(), &config, fake.base_url(), free_port());
    let mut b = Daemon::start(&name_b, dir.path(), &config, fake.base_url(), free_port());

    // Both replicas are alive and ready (caches synced with the ServiceAccount's rights,
    // provider resolved with the token file); one holds the Lease.
    for r in [&a, &b] {
        cluster::eventually(&format!("{} /readyz 200", r.name), WAIT, || async {
            let (status, _) = http_get(&format!("{}/readyz", r.http)).await?;
            (status == 200).then_some(())
        })
        .await;
        let (status, _) = http_get(&format!("{}/healthz", r.http))
            .await
            .expect("/healthz answers");
        assert_eq!(status, 200, "{} /healthz", r.name);
    }
    let leader = cluster::eventually("a replica to hold the Lease", WAIT, || async {
        lease_holder(&admin).await
    })
    .await;
    assert!(
        leader == a.name || leader == b.name,
        "the Lease is held by {leader:?}, not by a replica"
    );
    eprintln!("leader: {leader}");

    // Scale up: 5 servers of 1 CPU need 5 + buffer 2 = 7 slots: three nodes of 3 slots.
    let names: Vec<String> = (0..5).map(|i| format!("{id}-server-{i}")).collect();
    for name in &names {
        create_server(&admin, &id, name).await;
    }
    let placement = servers_bound(&admin, &id, 5, 3).await;
    eprintln!("after scale-up: {placement:?}");
    let pool = fake.pool(&cluster_id, &pool_id).expect("the pool");
    assert_eq!(pool.count, 3, "the pool's count after scale-up");
    assert_eq!(fake.lost_servers(), 0, "servers lost during scale-up");
    let mut seen_nodes: BTreeSet<String> = pool_nodes(&admin, &id).await.into_keys().collect();

    // The leader vanishes without releasing the Lease (its node died): the standby takes over
    // within about the lease duration and carries on.
    let (old, standby) = if leader == a.name {
        (&mut a, &mut b)
    } else {
        (&mut b, &mut a)
    };
    let old_log = {
        old.kill_hard();
        old.log_text()
    };
    let standby_name = standby.name.clone();
    cluster::eventually(
        &format!("{standby_name} to take the Lease over"),
        Duration::from_secs(LEASE_DURATION_SEC * 6 + 30),
        || async { (lease_holder(&admin).await.as_deref() == Some(&standby_name)).then_some(()) },
    )
    .await;

    // Scale down: 4 servers end; the one left (plus a buffer of 2) fits on its own node. The
    // others are cordoned, then deleted after the 3 s expiration, never with a server on them.
    let keep = names[0].clone();
    let keep_node = placement[&keep].clone().unwrap();
    for name in &names[1..] {
        delete_server(&admin, name).await;
    }
    let deadline = Instant::now() + WAIT;
    loop {
        let nodes = pool_nodes(&admin, &id).await;
        seen_nodes.extend(nodes.keys().cloned());
        if nodes.len() == 1 && nodes.contains_key(&keep_node) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {WAIT:?} waiting for the pool to shrink to {keep_node}: {nodes:?}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert_eq!(
        fake.pool(&cluster_id, &pool_id).unwrap().count,
        1,
        "the pool's count after scale-down"
    );
    assert_eq!(
        servers(&admin, &id)
            .await
            .get(&keep)
            .cloned()
            .flatten()
            .as_deref(),
        Some(keep_node.as_str()),
        "the last server is still on its node"
    );
    assert!(
        !pool_nodes(&admin, &id).await[&keep_node],
        "the last server's node must not stay cordoned"
    );

    // /metrics is Prometheus text.
    let (status, metrics) = http_get(&format!("{}/metrics", standby.http))
        .await
        .expect("/metrics answers");
    assert_eq!(status, 200, "/metrics");
    assert!(
        metrics.contains("# TYPE"),
        "/metrics is not Prometheus text:\n{metrics}"
    );

    // Events for the actions, written with the ServiceAccount's rights. The references of
    // ScaleUp (kubescaler's Namespace) and Cordon (a live node) carry the object's uid, which
    // the daemon has only if RBAC let it read the object: a 403 there is swallowed (the Event
    // is still recorded, by name), so this is where a missing `get` shows.
    let events = events_by(&admin, &[&name_a, &name_b]).await;
    eprintln!("kubescaler's events: {events:?}");
    for reason in ["ScaleUp", "Cordon", "DeleteNode"] {
        assert!(
            events.iter().any(|(r, _, _)| r == reason),
            "no {reason} Event from kubescaler (saw {events:?})"
        );
    }
    for (reason, regarding) in [("ScaleUp", "Namespace/kubescaler"), ("Cordon", "Node/")] {
        assert!(
            events
                .iter()
                .filter(|(r, o, _)| r == reason && o.starts_with(regarding))
                .all(|(_, _, uid)| *uid),
            "a {reason} Event regards {regarding} without its uid: the daemon could not read \
             the object (RBAC): {events:?}"
        );
    }
    let on_pool_nodes: BTreeSet<&str> = events
        .iter()
        .filter(|(_, o, _)| {
            o.strip_prefix("Node/")
                .is_some_and(|n| seen_nodes.contains(n))
        })
        .map(|(r, _, _)| r.as_str())
        .collect();
    assert!(
        on_pool_nodes.contains("Cordon") && on_pool_nodes.contains("DeleteNode"),
        "Cordon and DeleteNode must regard the pool's nodes: {events:?}"
    );

    // Zero lost servers, a conforming cloud conversation, and never a 403.
    assert_eq!(
        fake.lost_servers(),
        0,
        "servers lost: {:?}",
        fake.lost_server_pods()
    );
    assert!(
        fake.kube_errors().is_empty(),
        "fake's Kubernetes errors: {:?}",
        fake.kube_errors()
    );
    assert_no_rejected_requests(&fake);
    let standby_log = standby.log_text();
    for (name, log) in [("old leader", &old_log), ("new leader", &standby_log)] {
        let forbidden = forbidden_lines(log);
        assert!(
            forbidden.is_empty(),
            "{name} was refused by RBAC (the Role/ClusterRole or the daemon is wrong):\n{}",
            forbidden.join("\n")
        );
    }

    // Graceful stop: SIGTERM ends the daemon.
    assert!(
        standby.stop(Duration::from_secs(15)),
        "kubescaler did not exit within 15 s of SIGTERM"
    );
    delete_server(&admin, &keep).await;
    fake.shutdown().await;
    let _ = Api::<Lease>::namespaced(admin.clone(), NAMESPACE)
        .delete(LEASE, &DeleteParams::default())
        .await;
}
