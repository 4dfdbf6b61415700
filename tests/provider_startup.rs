//! The daemon refuses to start against a pool it must not or cannot manage: DigitalOcean's own
//! autoscaler runs the pool, or the pool's name does not exist. It exits 1 with the reason
//! instead of retrying forever. (Runs the binary against the DOKS fake; needs no cluster: the
//! Kubernetes side is never reached before the provider check fails.)

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use doks_fake::PoolSpec;

mod dofake;
use dofake::{start_fake, TOKEN};

/// Runs kubescaler with `pool` as node-pool-name against the fake; (exit code, stderr).
fn run_daemon(fake_url: &str, pool: &str, dir: &std::path::Path) -> (Option<i32>, String) {
    let kubeconfig = dir.join("kubeconfig");
    // Points nowhere: the provider is checked first.
    std::fs::write(
        &kubeconfig,
        "apiVersion: v1\nkind: Config\nclusters:\n- name: c\n  cluster:\n    server: https://127.0.0.1:1\n\
         users:\n- name: u\n  user:\n    token: t\ncontexts:\n- name: x\n  context:\n    cluster: c\n    user: u\n\
         current-context: x\n",
    )
    .expect("write kubeconfig");
    let config = dir.join("config.yaml");
    std::fs::write(
        &config,
        format!(
            "cloud-provider-token: {TOKEN}\ndigitalocean-api-url: {fake_url}\ncluster-name: games\n\
             node-pool-name: {pool}\nnode-selector: role=game-servers\nserver-pod-label-name: app\n\
             server-pod-label-value: game\ncluster-kube-config-path: {}\nleader-election: false\n\
             http-listen-address: 127.0.0.1:0\n",
            kubeconfig.display()
        ),
    )
    .expect("write config");
    let mut child = Command::new(env!("CARGO_BIN_EXE_kubescaler"))
        .arg("--config")
        .arg(&config)
        .env_clear()
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start kubescaler");
    let started = Instant::now();
    let code = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status.code(),
            Ok(None) if started.elapsed() < Duration::from_secs(30) => {
                std::thread::sleep(Duration::from_millis(50))
            }
            _ => {
                let _ = child.kill();
                break None;
            }
        }
    };
    let mut stderr = String::new();
    if let Some(mut err) = child.stderr.take() {
        use std::io::Read;
        let _ = err.read_to_string(&mut stderr);
    }
    (code, stderr)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn daemon_refuses_to_start_on_a_pool_digitalocean_autoscales() {
    let Some(fake) = start_fake(
        "daemon_refuses_to_start_on_a_pool_digitalocean_autoscales",
        |_| {},
    )
    .await
    else {
        return;
    };
    let cluster = fake.add_cluster("games");
    let mut pool = PoolSpec::new("game-servers", "s-4vcpu-8gb", 2);
    pool.auto_scale = true;
    pool.min_nodes = 1;
    pool.max_nodes = 5;
    fake.add_pool(&cluster, pool).await.expect("add pool");
    let dir = tempfile::tempdir().expect("tempdir");
    let url = fake.base_url().to_string();
    let (code, stderr) =
        tokio::task::spawn_blocking(move || run_daemon(&url, "game-servers", dir.path()))
            .await
            .expect("join");
    assert_eq!(code, Some(1), "{stderr}");
    assert!(stderr.contains("autoscaling"), "{stderr}");
    assert!(!stderr.contains(TOKEN), "token leaked: {stderr}");
    fake.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn daemon_refuses_to_start_when_the_pool_name_does_not_exist_naming_those_that_do() {
    let Some(fake) = start_fake(
        "daemon_refuses_to_start_when_the_pool_name_does_not_exist_naming_those_that_do",
        |_| {},
    )
    .await
    else {
        return;
    };
    let cluster = fake.add_cluster("games");
    fake.add_pool(&cluster, PoolSpec::new("game-servers", "s-4vcpu-8gb", 2))
        .await
        .expect("add pool");
    let dir = tempfile::tempdir().expect("tempdir");
    let url = fake.base_url().to_string();
    let (code, stderr) =
        tokio::task::spawn_blocking(move || run_daemon(&url, "game-srevers", dir.path()))
            .await
            .expect("join");
    assert_eq!(code, Some(1), "{stderr}");
    assert!(stderr.contains("game-srevers"), "{stderr}");
    assert!(stderr.contains("\"game-servers\""), "{stderr}");
    fake.shutdown().await;
}
