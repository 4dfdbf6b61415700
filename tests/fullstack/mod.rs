//! The full-stack harness: the `kubescaler` binary run as child processes with config files,
//! driving the DOKS fake (`hack/doks-fake`) through its DigitalOcean driver, against the real
//! local control plane. The fake registers each running pool node as a Node; the real
//! kube-scheduler binds the server pods; the fake counts every server pod still on a node it
//! removes (it must stay 0).
//!
//! Each world has its own pool label, taint and server label (and Lease), so tests running in
//! parallel on one API server never see each other's nodes, pods or leader.
#![allow(dead_code)]

use std::collections::{BTreeMap, BTreeSet};
use std::fs::File;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

// The binaries using this module also load `cluster`, which holds the prerequisite gate.
pub use crate::cluster::prereq::spec_or_skip;

/// The `/metrics` text of the replica listening on `port`, or `None` if it does not answer.
pub async fn scrape_metrics(port: u16) -> Option<String> {
    reqwest::get(format!("http://127.0.0.1:{port}/metrics"))
        .await
        .ok()?
        .text()
        .await
        .ok()
}

/// What a full-stack test needs: the control plane (client and kubeconfig) and DigitalOcean's
/// API description; `None` (after saying what is missing) to skip `test`.
pub async fn prerequisites_or_skip(test: &str) -> Option<(Client, PathBuf, PathBuf)> {
    let client = crate::cluster::client_or_skip(test).await?;
    let kubeconfig = crate::cluster::kubeconfig_or_skip(test)?;
    let spec_path = spec_or_skip(test)?;
    Some((client, kubeconfig, spec_path))
}

use doks_fake::{Chaos, FakeDoks, FakeOptions, Fault, Operation, PoolSpec, Taint};
use futures::FutureExt;
use k8s_openapi::api::core::v1::{Container, Node, Pod, PodSpec, ResourceRequirements, Toleration};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{Api, DeleteParams, ListParams, PostParams};
use kube::Client;
use kubescaler::model::{CORDONED_BY_ANNOTATION, CORDONED_BY_VALUE};

pub const NAMESPACE: &str = "default";
const TOKEN: &str = "dop_v1_e2e_token_0123456789abcdef";
pub const POOL_KEY: &str = "kubescaler-e2e/pool";
const TAINT_KEY: &str = "kubescaler-e2e/dedicated";
const SERVER_KEY: &str = "kubescaler-e2e/server";
/// `empty-node-expiration-sec`.
pub const EXPIRATION_SECS: u64 = 3;
/// `leader-election-lease-duration-sec` with several replicas.
pub const LEASE_SECS: u64 = 6;
/// Slots per node: s-4vcpu-8gb is 3900m allocatable, a server requests 1 CPU.
const SIZE: &str = "s-4vcpu-8gb";

/// A name part unique to this test run.
pub fn unique(tag: &str) -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or_default();
    format!("{tag}-{}-{nanos}", std::process::id())
}

/// Starts the binary on `config`, its log going to `stderr`.
fn spawn(config: &Path, stderr: File) -> Child {
    Command::new(env!("CARGO_BIN_EXE_kubescaler"))
        .arg("--config")
        .arg(config)
        // Only the config file speaks: no CLUSTER_NAME, DIGITALOCEAN_API_URL... from the
        // developer's environment.
        .env_clear()
        .env("RUST_BACKTRACE", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::from(stderr))
        .spawn()
        .unwrap_or_else(|e| panic!("start kubescaler: {e}"))
}

/// The kubescaler child process, killed if the test ends without stopping it.
pub struct Daemon {
    child: Option<Child>,
    config: PathBuf,
    log: PathBuf,
    /// Port of its health and metrics listener.
    pub port: u16,
}

impl Daemon {
    fn start(config: &Path, log: PathBuf, port: u16) -> Daemon {
        let stderr = File::create(&log).unwrap_or_else(|e| panic!("create {}: {e}", log.display()));
        let child = spawn(config, stderr);
        Daemon {
            child: Some(child),
            config: config.to_path_buf(),
            log,
            port,
        }
    }

    /// SIGKILL, then a new process with the same config, log (appended) and port: a crash and
    /// restart, or a replacement pod.
    pub fn restart(&mut self) {
        self.kill();
        let stderr = std::fs::OpenOptions::new()
            .append(true)
            .open(&self.log)
            .unwrap_or_else(|e| panic!("open {}: {e}", self.log.display()));
        self.child = Some(spawn(&self.config, stderr));
    }

    /// Whether the process still runs.
    pub fn running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    /// The last `lines` lines of its log.
    pub fn log_tail(&self, lines: usize) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }

    /// How many log lines contain `needle`.
    pub fn log_count(&self, needle: &str) -> usize {
        std::fs::read_to_string(&self.log)
            .unwrap_or_default()
            .lines()
            .filter(|l| l.contains(needle))
            .count()
    }

    /// SIGKILL: the process dies without releasing anything.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGTERM, then the exit code within `limit`.
    pub fn terminate(&mut self, limit: Duration) -> Option<i32> {
        let child = self.child.as_mut()?;
        let status = Command::new("kill")
            .arg("-TERM")
            .arg(child.id().to_string())
            .status()
            .unwrap_or_else(|e| panic!("run kill: {e}"));
        assert!(status.success(), "kill -TERM failed");
        let start = Instant::now();
        loop {
            match child.try_wait() {
                Ok(Some(status)) => {
                    self.child = None;
                    return status.code();
                }
                Ok(None) if start.elapsed() < limit => {
                    std::thread::sleep(Duration::from_millis(50))
                }
                _ => return None,
            }
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// One test's world: the fake, its pool, the server pods and the kubescaler children.
pub struct World {
    pub client: Client,
    pub id: String,
    pub fake: FakeDoks,
    pub cluster_id: String,
    pub pool_id: String,
    daemons: std::sync::Mutex<Vec<Daemon>>,
    pods: std::sync::Mutex<Vec<String>>,
    _dir: tempfile::TempDir,
    /// Highest pool count ever seen (sampled).
    max_count: Arc<AtomicU32>,
}

/// How to build a world beyond the defaults.
#[derive(Clone, Debug)]
pub struct WorldOptions {
    /// Random API faults throughout.
    pub chaos: bool,
    /// kubescaler processes (with more than one, they elect a leader).
    pub replicas: usize,
    /// Config keys that replace the defaults of [`config_yaml`] (value as YAML).
    pub settings: Vec<(&'static str, String)>,
    /// Nodes the pool starts with.
    pub initial_nodes: u32,
    /// The fake's `delete_delay`.
    pub delete_delay: Duration,
}

impl Default for WorldOptions {
    fn default() -> Self {
        WorldOptions {
            chaos: false,
            replicas: 1,
            settings: Vec::new(),
            initial_nodes: 1,
            delete_delay: Duration::ZERO,
        }
    }
}

/// The field manager `kubectl cordon`/`uncordon` write with: a person's hand.
pub const PERSON: &str = "kubectl-cordon";

impl World {
    /// One kubescaler, leader election off.
    pub async fn start(
        spec_path: PathBuf,
        client: Client,
        kubeconfig: &Path,
        tag: &str,
        chaos: bool,
    ) -> World {
        Self::start_replicas(spec_path, client, kubeconfig, tag, chaos, 1).await
    }

    /// `replicas` kubescaler processes; with more than one, they elect a leader on a Lease of
    /// their own (`lease-<id>` in `default`).
    pub async fn start_replicas(
        spec_path: PathBuf,
        client: Client,
        kubeconfig: &Path,
        tag: &str,
        chaos: bool,
        replicas: usize,
    ) -> World {
        let options = WorldOptions {
            chaos,
            replicas,
            ..WorldOptions::default()
        };
        Self::start_with(spec_path, client, kubeconfig, tag, options).await
    }

    /// A world built with `options`.
    pub async fn start_with(
        spec_path: PathBuf,
        client: Client,
        kubeconfig: &Path,
        tag: &str,
        options: WorldOptions,
    ) -> World {
        let WorldOptions {
            chaos,
            replicas,
            settings,
            initial_nodes,
            delete_delay,
        } = options;
        let id = unique(tag);
        let fake = FakeDoks::start(FakeOptions {
            spec_path,
            token: TOKEN.to_owned(),
            boot_delay: Duration::from_secs(2),
            delete_delay,
            kube: Some(client.clone()),
            server_pod_selector: Some(format!("{SERVER_KEY}={id}")),
            ..FakeOptions::default()
        })
        .await
        .unwrap_or_else(|e| panic!("start the DOKS fake: {e}"));
        let cluster_id = fake.add_cluster(&format!("cluster-{id}"));
        let mut pool =
            PoolSpec::new(format!("pool-{id}"), SIZE, initial_nodes).label(POOL_KEY, &id);
        pool.taints = vec![Taint {
            key: TAINT_KEY.to_owned(),
            value: id.clone(),
            effect: "NoSchedule".to_owned(),
        }];
        let pool_id = fake
            .add_pool(&cluster_id, pool)
            .await
            .unwrap_or_else(|e| panic!("add the pool: {e}"));
        if chaos {
            fake.set_chaos(Some(Chaos {
                probability: 0.3,
                faults: vec![
                    Fault::RateLimited {
                        reset_in: Duration::from_secs(1),
                    },
                    Fault::ServerError,
                    Fault::Delay(Duration::from_millis(1500)),
                    Fault::DropConnection,
                    Fault::DropAfterApply,
                ],
                seed: 42,
            }));
            // Certain faults on the calls that change the pool, besides the random ones.
            fake.inject_fault(Operation::UpdateNodePool, Fault::DropAfterApply, 1);
            fake.inject_fault(Operation::UpdateNodePool, Fault::ServerError, 1);
            fake.inject_fault(Operation::DeleteNode, Fault::DropAfterApply, 1);
            fake.inject_fault(
                Operation::DeleteNode,
                Fault::RateLimited {
                    reset_in: Duration::from_secs(1),
                },
                1,
            );
        }

        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}"));
        let daemons = (0..replicas)
            .map(|i| {
                let port = free_port();
                let mut yaml = config_yaml(&fake, &id, kubeconfig, port, &settings);
                if replicas > 1 {
                    yaml.push_str(&format!(
                        "leader-election: true\n\
                         leader-election-namespace: default\n\
                         leader-election-lease-name: lease-{id}\n\
                         leader-election-lease-duration-sec: {LEASE_SECS}\n\
                         leader-election-identity: replica-{i}\n"
                    ));
                } else {
                    yaml.push_str("leader-election: false\n");
                }
                let config = dir.path().join(format!("config-{i}.yaml"));
                std::fs::write(&config, yaml).unwrap_or_else(|e| panic!("write the config: {e}"));
                Daemon::start(
                    &config,
                    dir.path().join(format!("kubescaler-{i}.log")),
                    port,
                )
            })
            .collect();
        World {
            client,
            id,
            fake,
            cluster_id,
            pool_id,
            daemons: std::sync::Mutex::new(daemons),
            pods: std::sync::Mutex::new(Vec::new()),
            _dir: dir,
            max_count: Arc::new(AtomicU32::new(0)),
        }
    }

    /// The kubescaler processes, by replica index.
    pub fn daemons(&self) -> std::sync::MutexGuard<'_, Vec<Daemon>> {
        self.daemons
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    pub fn count(&self) -> u32 {
        let n = self
            .fake
            .pool(&self.cluster_id, &self.pool_id)
            .map_or(0, |p| p.count);
        self.max_count.fetch_max(n, Ordering::Relaxed);
        n
    }

    pub async fn create_servers(&self, n: usize) {
        let api: Api<Pod> = Api::namespaced(self.client.clone(), NAMESPACE);
        for _ in 0..n {
            let name = format!(
                "{}-server-{}",
                self.id,
                self.pods.lock().map(|p| p.len()).unwrap_or(0)
            );
            let pod = Pod {
                metadata: ObjectMeta {
                    name: Some(name.clone()),
                    namespace: Some(NAMESPACE.to_owned()),
                    labels: Some(BTreeMap::from([(SERVER_KEY.to_owned(), self.id.clone())])),
                    ..Default::default()
                },
                spec: Some(PodSpec {
                    node_selector: Some(BTreeMap::from([(POOL_KEY.to_owned(), self.id.clone())])),
                    tolerations: Some(vec![Toleration {
                        key: Some(TAINT_KEY.to_owned()),
                        operator: Some("Equal".to_owned()),
                        value: Some(self.id.clone()),
                        effect: Some("NoSchedule".to_owned()),
                        ..Default::default()
                    }]),
                    termination_grace_period_seconds: Some(0),
                    containers: vec![Container {
                        name: "server".to_owned(),
                        image: Some("registry.invalid/game-server:1".to_owned()),
                        resources: Some(ResourceRequirements {
                            requests: Some(BTreeMap::from([(
                                "cpu".to_owned(),
                                Quantity("1".to_owned()),
                            )])),
                            ..Default::default()
                        }),
                        ..Default::default()
                    }],
                    ..Default::default()
                }),
                ..Default::default()
            };
            api.create(&PostParams::default(), &pod)
                .await
                .unwrap_or_else(|e| panic!("create pod {name}: {e}"));
            if let Ok(mut pods) = self.pods.lock() {
                pods.push(name);
            }
        }
    }

    pub async fn delete_server(&self, name: &str) {
        let api: Api<Pod> = Api::namespaced(self.client.clone(), NAMESPACE);
        let now = DeleteParams {
            grace_period_seconds: Some(0),
            ..Default::default()
        };
        match api.delete(name, &now).await {
            Ok(_) => {}
            Err(kube::Error::Api(s)) if s.code == 404 => {}
            Err(e) => panic!("delete pod {name}: {e}"),
        }
    }

    /// Server pod name -> node it is bound to (None: pending).
    pub async fn placement(&self) -> BTreeMap<String, Option<String>> {
        let api: Api<Pod> = Api::namespaced(self.client.clone(), NAMESPACE);
        let list = api
            .list(&ListParams::default().labels(&format!("{SERVER_KEY}={}", self.id)))
            .await
            .unwrap_or_else(|e| panic!("list pods: {e}"));
        list.items
            .into_iter()
            .filter_map(|p| {
                let name = p.metadata.name?;
                Some((name, p.spec.and_then(|s| s.node_name)))
            })
            .collect()
    }

    /// A person's `kubectl cordon` (or, with `false`, `kubectl uncordon`) of `node`: a merge
    /// patch of `spec.unschedulable` under kubectl's field manager.
    /// Returns false if the node is gone.
    pub async fn person_sets_unschedulable(&self, node: &str, unschedulable: bool) -> bool {
        let api: Api<Node> = Api::all(self.client.clone());
        let params = kube::api::PatchParams {
            field_manager: Some(PERSON.to_owned()),
            ..Default::default()
        };
        let patch = serde_json::json!({"spec": {"unschedulable": unschedulable}});
        match api
            .patch(node, &params, &kube::api::Patch::Merge(&patch))
            .await
        {
            Ok(_) => true,
            Err(kube::Error::Api(e)) if e.code == 404 => false,
            Err(e) => panic!("person patch of node {node}: {e}"),
        }
    }

    /// The live Node, if it exists.
    pub async fn node(&self, name: &str) -> Option<Node> {
        let api: Api<Node> = Api::all(self.client.clone());
        api.get_opt(name)
            .await
            .unwrap_or_else(|e| panic!("get node {name}: {e}"))
    }

    /// DELETE requests the fake accepted (2xx) for the pool node `node_id`.
    pub fn deletes_of(&self, node_id: &str) -> usize {
        of(&self.fake, Operation::DeleteNode)
            .iter()
            .filter(|r| r.path.ends_with(node_id) && r.status.is_some_and(|s| s < 300))
            .count()
    }

    /// The pool node named `name` as the fake has it.
    pub fn pool_node(&self, name: &str) -> Option<doks_fake::NodeView> {
        self.fake
            .pool(&self.cluster_id, &self.pool_id)?
            .nodes
            .into_iter()
            .find(|n| n.name == name)
    }

    /// The pool's Node objects: name -> cordoned by kubescaler.
    pub async fn nodes(&self) -> BTreeMap<String, bool> {
        let api: Api<Node> = Api::all(self.client.clone());
        let list = api
            .list(&ListParams::default().labels(&format!("{POOL_KEY}={}", self.id)))
            .await
            .unwrap_or_else(|e| panic!("list nodes: {e}"));
        list.items
            .into_iter()
            .filter_map(|n| {
                let cordoned = n.spec.as_ref().and_then(|s| s.unschedulable) == Some(true)
                    && n.metadata
                        .annotations
                        .as_ref()
                        .and_then(|a| a.get(CORDONED_BY_ANNOTATION))
                        .map(String::as_str)
                        == Some(CORDONED_BY_VALUE);
                Some((n.metadata.name?, cordoned))
            })
            .collect()
    }

    pub async fn eventually<T, F, Fut>(&self, what: &str, limit: Duration, mut check: F) -> T
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Option<T>>,
    {
        let start = Instant::now();
        loop {
            self.count();
            if let Some(v) = check().await {
                return v;
            }
            assert!(
                start.elapsed() < limit,
                "timed out after {limit:?} waiting for {what}; pool {:?}",
                self.fake.pool(&self.cluster_id, &self.pool_id)
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// What helps to understand a failure.
    pub fn report(&self) -> String {
        let log = self.fake.requests();
        let requests: Vec<String> = log[log.len().saturating_sub(80)..]
            .iter()
            .map(ToString::to_string)
            .collect();
        format!(
            "--- fake: pool {:?}\nlost {:?}\nkube errors {:?}\nlast requests:\n{}\n--- kubescaler logs (tails):\n{}",
            self.fake.pool(&self.cluster_id, &self.pool_id),
            self.fake.lost_server_pods(),
            self.fake.kube_errors(),
            requests.join("\n"),
            self.daemons()
                .iter()
                .enumerate()
                .map(|(i, d)| format!("[replica {i}]\n{}", d.log_tail(60)))
                .collect::<Vec<_>>()
                .join("\n")
        )
    }

    pub async fn cleanup(self) {
        let pods: Vec<String> = self.pods.lock().map(|p| p.clone()).unwrap_or_default();
        for pod in pods {
            let api: Api<Pod> = Api::namespaced(self.client.clone(), NAMESPACE);
            let now = DeleteParams {
                grace_period_seconds: Some(0),
                ..Default::default()
            };
            if let Err(e) = api.delete(&pod, &now).await {
                if !matches!(&e, kube::Error::Api(s) if s.code == 404) {
                    eprintln!("cleanup: delete pod {pod}: {e}");
                }
            }
        }
        drop(self.daemons.into_inner());
        self.fake.shutdown().await;
    }
}

/// The config file: every setting the test relies on, nothing from the environment; a key of
/// `settings` replaces its default line.
fn config_yaml(
    fake: &FakeDoks,
    id: &str,
    kubeconfig: &Path,
    port: u16,
    settings: &[(&'static str, String)],
) -> String {
    let defaults = format!(
        "cloud-provider: digitalocean\n\
         cloud-provider-token: {TOKEN}\n\
         digitalocean-api-url: {url}\n\
         cluster-name: cluster-{id}\n\
         node-pool-name: pool-{id}\n\
         node-selector: \"{POOL_KEY}={id}\"\n\
         cluster-kube-config-path: {kubeconfig}\n\
         server-pod-label-name: {SERVER_KEY}\n\
         server-pod-label-value: {id}\n\
         server-pod-tolerations:\n  - \"{TAINT_KEY}={id}:NoSchedule\"\n\
         server-cpu-resource-request: 1000\n\
         minimum-node-pool-size: 1\n\
         maximum-node-pool-size: 4\n\
         buffer-slot-size: 1\n\
         scale-loop-tick-sec: 1\n\
         empty-node-expiration-sec: {EXPIRATION_SECS}\n\
         scale-down-unneeded-sec: 0\n\
         scale-down-delay-after-add-sec: 0\n\
         node-boot-timeout-sec: 120\n\
         node-template-cpu: 3900m\n\
         node-template-memory: 6Gi\n\
         node-template-pods: 110\n\
         log-format: text\n\
         log-level: info\n\
         http-listen-address: \"127.0.0.1:{port}\"\n",
        url = fake.base_url(),
        kubeconfig = kubeconfig.display(),
    );
    let mut yaml = String::new();
    // Inside a replaced key's indented continuation lines (a list).
    let mut skipping = false;
    for line in defaults.lines() {
        if line.starts_with(' ') && skipping {
            continue;
        }
        let key = line.split(':').next().unwrap_or_default();
        match settings.iter().find(|(k, _)| *k == key) {
            Some((k, v)) => {
                yaml.push_str(&format!("{k}: {v}\n"));
                skipping = true;
            }
            None => {
                yaml.push_str(line);
                yaml.push('\n');
                skipping = false;
            }
        }
    }
    for (k, v) in settings {
        if !defaults.lines().any(|l| l.split(':').next() == Some(*k)) {
            yaml.push_str(&format!("{k}: {v}\n"));
        }
    }
    yaml
}

/// A loopback port free right now (the child binds it a moment later).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or_else(|e| panic!("find a free port: {e}"))
}

/// Runs `body`; on failure prints the report; cleans up either way.
pub async fn run<Fut: Future<Output = ()>>(world: World, body: impl FnOnce(Arc<World>) -> Fut) {
    let world = Arc::new(world);
    let outcome = AssertUnwindSafe(body(Arc::clone(&world)))
        .catch_unwind()
        .await;
    // KUBESCALER_E2E_VERBOSE=1 shows the report of a passing run too.
    if outcome.is_err() || std::env::var_os("KUBESCALER_E2E_VERBOSE").is_some() {
        eprintln!("{}", world.report());
    }
    match Arc::try_unwrap(world) {
        Ok(world) => world.cleanup().await,
        Err(_) => eprintln!("cleanup skipped: the world is still shared"),
    }
    if let Err(panic) = outcome {
        std::panic::resume_unwind(panic);
    }
}

pub fn of(fake: &FakeDoks, op: Operation) -> Vec<doks_fake::LoggedRequest> {
    fake.requests()
        .into_iter()
        .filter(|r| r.operation == Some(op))
        .collect()
}

/// What every run must end with.
pub fn assert_clean_end(w: &World) {
    assert_eq!(
        w.fake.lost_servers(),
        0,
        "lost servers: {:?}",
        w.fake.lost_server_pods()
    );
    assert!(
        w.fake.kube_errors().is_empty(),
        "{:?}",
        w.fake.kube_errors()
    );
    assert!(
        w.fake.response_violations().is_empty(),
        "{:?}",
        w.fake.response_violations()
    );
    let log = w.fake.requests();
    let off: Vec<String> = log
        .iter()
        .filter(|r| !r.passed_validation())
        .map(ToString::to_string)
        .collect();
    assert!(
        off.is_empty(),
        "requests off the contract:\n{}",
        off.join("\n")
    );
    // No duplicate growth: the count never passed 2, and every resize asked for 2.
    assert_eq!(
        w.max_count.load(Ordering::Relaxed),
        2,
        "the pool grew past 2"
    );
    let targets: BTreeSet<u64> = of(&w.fake, Operation::UpdateNodePool)
        .iter()
        .filter_map(|r| r.body.as_ref()?.get("count")?.as_u64())
        .collect();
    assert_eq!(targets, BTreeSet::from([2]), "resizes to other counts");
}

/// SIGTERM to replica 0: it must exit 0 within 10 s.
pub fn stop_with_sigterm(w: &World) {
    let mut daemons = w.daemons();
    let daemon = &mut daemons[0];
    assert!(
        daemon.running(),
        "kubescaler exited early:\n{}",
        daemon.log_tail(40)
    );
    let code = daemon.terminate(Duration::from_secs(10));
    assert_eq!(
        code,
        Some(0),
        "exit after SIGTERM:\n{}",
        daemon.log_tail(40)
    );
}

/// The scenario the full-stack tests play: scale up for 5 servers, scale down by attrition, hold the
/// minimum, stop on SIGTERM. `slack` stretches the waits (faults slow everything down).
pub async fn scale_up_then_down_by_attrition(w: Arc<World>, slack: u32) {
    let limit = |secs: u64| Duration::from_secs(secs * u64::from(slack));

    // kubescaler resolves the pool and polls it.
    w.eventually("kubescaler to poll the pool", limit(30), || async {
        (!of(&w.fake, Operation::GetNodePool).is_empty()).then_some(())
    })
    .await;
    assert_eq!(w.count(), 1);

    // Up: 5 servers need 5 + 1 (buffer) slots; the first node has 3.
    w.create_servers(5).await;
    let placement = w
        .eventually("all 5 servers bound to pool nodes", limit(60), || async {
            let placement = w.placement().await;
            (placement.len() == 5 && placement.values().all(Option::is_some)).then_some(placement)
        })
        .await;
    let nodes = w.nodes().await;
    assert!(
        placement.values().flatten().all(|n| nodes.contains_key(n)),
        "servers on nodes outside the pool: {placement:?} vs {nodes:?}"
    );
    w.eventually(
        "the pool to settle at 2 running nodes",
        limit(30),
        || async {
            let pool = w.fake.pool(&w.cluster_id, &w.pool_id)?;
            (pool.count == 2 && pool.nodes_in("running") == 2).then_some(())
        },
    )
    .await;

    // Down by attrition: keep one server per node. One node becomes surplus and is cordoned
    // while a server still runs on it: it must stay until that server ends.
    let mut by_node: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (pod, node) in &placement {
        if let Some(node) = node {
            by_node.entry(node.clone()).or_default().push(pod.clone());
        }
    }
    assert_eq!(by_node.len(), 2, "servers on both nodes: {placement:?}");
    let mut kept: BTreeMap<String, String> = BTreeMap::new();
    for (node, pods) in &by_node {
        kept.insert(node.clone(), pods[0].clone());
        for pod in &pods[1..] {
            w.delete_server(pod).await;
        }
    }
    let cordoned = w
        .eventually("kubescaler to cordon one node", limit(30), || async {
            w.nodes()
                .await
                .into_iter()
                .find(|(_, c)| *c)
                .map(|(n, _)| n)
        })
        .await;
    let cordoned_at = Instant::now();
    // Past the expiration (and a few ticks), the node with its server is still there.
    tokio::time::sleep(Duration::from_secs(EXPIRATION_SECS + 4)).await;
    let nodes = w.nodes().await;
    assert!(
        nodes.contains_key(&cordoned),
        "node {cordoned} deleted with a server on it"
    );
    assert_eq!(w.count(), 2);
    assert_eq!(w.fake.lost_servers(), 0);
    // The server ends: the node goes.
    w.delete_server(&kept[&cordoned]).await;
    w.eventually("the emptied node to be deleted", limit(30), || async {
        let nodes = w.nodes().await;
        (!nodes.contains_key(&cordoned) && w.count() == 1).then_some(())
    })
    .await;
    assert!(cordoned_at.elapsed() >= Duration::from_secs(EXPIRATION_SECS));

    // The last server ends: the pool holds its minimum of one node.
    for (node, pod) in &kept {
        if *node != cordoned {
            w.delete_server(pod).await;
        }
    }
    tokio::time::sleep(Duration::from_secs(EXPIRATION_SECS + 3)).await;
    assert_eq!(w.count(), 1, "the pool went below its minimum");
    assert_eq!(w.nodes().await.len(), 1);

    // The loop is still running: it keeps planning (reading the cloud only once a minute).
    let passes = w.daemons()[0].log_count("planned");
    w.eventually("more passes", limit(10), || async {
        (w.daemons()[0].log_count("planned") >= passes + 2).then_some(())
    })
    .await;
}
