//! kubescaler's real scale loop across a kube-apiserver restart (`hack/controlplane.sh
//! stop-apiserver` / `start-apiserver`): while the API server is down the loop takes no action
//! from its stale cache; once it is back, the watches relist and the loop acts on the world as
//! it is now, including what changed while it was down.
//!
//! Its own test binary: restarting the API server would disturb other tests sharing it.
//! Gated by `tests/cluster` (`KUBESCALER_E2E_KUBECONFIG`; required in CI), and needs the run
//! dir of `hack/controlplane.sh` (the kubeconfig's directory) to stop and start the API server
//! and to reach etcd.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use jiff::{SignedDuration, Timestamp};
use serde_json::json;

mod cluster;
use cluster::cloud::{
    eventually, is_ready, is_unschedulable, Op, Placement, Pool, FOUR_CPU, NAMESPACE, WAIT,
};
use cluster::{client_or_skip, kubeconfig_or_skip};

/// How long kube-scheduler may take to place pods after the outage (see the test).
const SCHEDULER_RECOVERY: Duration = Duration::from_secs(180);

/// The control plane's run dir: where `hack/controlplane.sh start` wrote the kubeconfig.
fn run_dir(kubeconfig: &Path) -> PathBuf {
    let dir = kubeconfig
        .parent()
        .unwrap_or_else(|| panic!("kubeconfig {} has no directory", kubeconfig.display()))
        .to_path_buf();
    assert!(
        dir.join(".kubescaler-controlplane").is_file() && dir.join("env").is_file(),
        "{} is not a hack/controlplane.sh run dir: this test stops and starts kube-apiserver \
         through that script, so KUBESCALER_E2E_KUBECONFIG must be the kubeconfig it wrote",
        dir.display()
    );
    dir
}

/// `KEY=value` lines of the run dir's `env` file.
fn run_env(dir: &Path) -> BTreeMap<String, String> {
    let path = dir.join("env");
    std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
        .lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect()
}

/// Runs `hack/controlplane.sh <args>` on the run dir `dir`, failing the test if it fails.
async fn controlplane(dir: &Path, args: &[&str]) {
    let script = std::path::absolute("hack/controlplane.sh").unwrap_or_default();
    let dir = dir.to_path_buf();
    let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
    let output = tokio::task::spawn_blocking(move || {
        std::process::Command::new("bash")
            .arg(&script)
            .args(&args)
            .env("KUBESCALER_RUN_DIR", &dir)
            .output()
            .unwrap_or_else(|e| panic!("run {}: {e}", script.display()))
    })
    .await
    .unwrap_or_else(|e| panic!("controlplane.sh task: {e}"));
    assert!(
        output.status.success(),
        "hack/controlplane.sh failed ({}):\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
}

/// Standard base64 (the etcd JSON gateway's encoding of keys).
fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// Deletes a pod straight from etcd, behind the (stopped) API server's back: the world
/// changing while nobody can watch it. Returns how many keys etcd deleted.
async fn delete_pod_in_etcd(etcd_port: &str, pod: &str) -> u64 {
    let key = format!("/registry/pods/{NAMESPACE}/{pod}");
    let url = format!("http://127.0.0.1:{etcd_port}/v3/kv/deleterange");
    let answer: serde_json::Value = reqwest::Client::new()
        .post(&url)
        .json(&json!({ "key": base64(key.as_bytes()) }))
        .send()
        .await
        .unwrap_or_else(|e| panic!("etcd deleterange {key}: {e}"))
        .json()
        .await
        .unwrap_or_else(|e| panic!("etcd deleterange {key}: answer: {e}"));
    answer
        .get("deleted")
        .and_then(|d| d.as_str())
        .and_then(|d| d.parse().ok())
        .unwrap_or(0)
}

/// Seconds from `from` to `to`.
fn secs(from: Timestamp, to: Timestamp) -> f64 {
    to.duration_since(from).as_secs_f64()
}

/// Starts kube-apiserver again when dropped, so that a failure while it is down leaves the
/// control plane usable for the cleanup and for later runs.
struct RestartOnDrop(PathBuf);

impl Drop for RestartOnDrop {
    fn drop(&mut self) {
        let script = std::path::absolute("hack/controlplane.sh").unwrap_or_default();
        let status = std::process::Command::new("bash")
            .arg(&script)
            .arg("start-apiserver")
            .env("KUBESCALER_RUN_DIR", &self.0)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status();
        if !matches!(status, Ok(s) if s.success()) {
            eprintln!("could not start kube-apiserver again: {status:?}");
        }
    }
}

#[test]
fn base64_matches_the_standard_encoding() {
    assert_eq!(base64(b""), "");
    assert_eq!(base64(b"f"), "Zg==");
    assert_eq!(base64(b"fo"), "Zm8=");
    assert_eq!(base64(b"foo"), "Zm9v");
    assert_eq!(
        base64(b"/registry/namespaces/default"),
        "L3JlZ2lzdHJ5L25hbWVzcGFjZXMvZGVmYXVsdA=="
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn apiserver_restart_recovers_watches_and_takes_no_action_from_a_stale_cache() {
    let test = "apiserver_restart";
    let Some(client) = client_or_skip(test).await else {
        return;
    };
    let dir = run_dir(&kubeconfig_or_skip(test).expect("checked by client_or_skip"));
    let etcd_port = run_env(&dir)
        .get("KUBESCALER_ETCD_CLIENT_PORT")
        .cloned()
        .unwrap_or_else(|| panic!("no KUBESCALER_ETCD_CLIENT_PORT in {}/env", dir.display()));

    let pool = Pool::new(client, "apirestart", FOUR_CPU, Duration::from_secs(2));
    pool.run(async {
        // Long enough that the cordoned empty node expires only once the API server is
        // surely down (kube-apiserver may take 10 s to stop on SIGTERM).
        let expiration: i64 = 20;
        let n = pool.cloud.start_with(4).await;
        let (a, b, c, d) = (&n[0], &n[1], &n[2], &n[3]);
        // a: 2 servers, b: 1, c: 0, d: 3; 10 free slots, 8 over the buffer of 2: kubescaler
        // cordons c (empty) and b (one server, P), and keeps a and d.
        pool.create_servers(2, Placement::On(a)).await;
        let p = pool.create_server(Placement::On(b)).await;
        pool.create_servers(3, Placement::On(d)).await;
        let config = pool.config(&[
            ("BUFFER_SLOT_SIZE", "2"),
            ("EMPTY_NODE_EXPIRATION_SEC", &expiration.to_string()),
        ]);
        let kubescaler = pool.start_loop(&config);
        let t_c = pool.wait_cordoned_by_kubescaler(c, WAIT).await;
        let t_b = pool.wait_cordoned_by_kubescaler(b, WAIT).await;
        let due = t_c.max(t_b) + SignedDuration::from_secs(expiration);
        assert!(pool.cloud.delete_requests().is_empty());

        // The API server goes down (and comes back even if the test fails meanwhile).
        let _restart = RestartOnDrop(dir.clone());
        let stopping = Timestamp::now();
        let watch_desync = async {
            let start = Instant::now();
            while kubescaler.cluster.is_synced() && start.elapsed() < Duration::from_secs(30) {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Timestamp::now()
        };
        let (desynced, ()) = tokio::join!(watch_desync, controlplane(&dir, &["stop-apiserver"]));
        let down = Timestamp::now();
        assert!(
            !kubescaler.cluster.is_synced(),
            "the caches still claim to be synced with the API server down"
        );
        eprintln!(
            "apiserver stop took {:.1}s; caches desynced {:.1}s after the stop began",
            secs(stopping, down),
            secs(stopping, desynced)
        );
        assert!(
            due > down + SignedDuration::from_secs(2),
            "setup too slow: the cordoned nodes expire at {due}, the API server was down only \
             at {down}"
        );

        // While it is down, a match ends: P disappears from etcd, unseen by any watch.
        assert_eq!(
            delete_pod_in_etcd(&etcd_port, &p).await,
            1,
            "delete {p} in etcd"
        );

        // The expiration passes during the outage. With a stale cache the loop would delete
        // c (and think b still busy); it must do nothing at all.
        let hold_until = due + SignedDuration::from_secs(3);
        while Timestamp::now() < hold_until {
            assert!(
                !kubescaler.cluster.is_synced(),
                "synced with the API server down"
            );
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        let restarting = Timestamp::now();
        let during = pool.cloud.calls_between(down, restarting);
        assert!(
            during.is_empty(),
            "the loop used its cache while the API server was down: {during:?}"
        );

        // Back up: the watches relist and the loop acts on the world as it is now. P is
        // gone, so b is empty too: both expired nodes go, and no server is lost.
        controlplane(&dir, &["start-apiserver"]).await;
        let up = Timestamp::now();
        eventually("the caches to resync after the restart", WAIT, || async {
            kubescaler.cluster.is_synced().then_some(())
        })
        .await;
        let resynced = Timestamp::now();
        eventually("b and c to be deleted", WAIT, || async {
            let deleted = pool.cloud.deleted_nodes();
            (deleted.contains(b) && deleted.contains(c)).then_some(())
        })
        .await;
        let first_pass = pool
            .cloud
            .calls()
            .into_iter()
            .find(|c| c.at > restarting)
            .map(|c| c.at);
        eprintln!(
            "apiserver ready {:.1}s after the start began; caches resynced {:.1}s later; the \
             loop's first pass {:.1}s after the API server was ready",
            secs(restarting, up),
            secs(up, resynced),
            first_pass.map_or(f64::NAN, |t| secs(up, t))
        );
        for node in [b, c] {
            let at = pool.cloud.deleted_at(node).unwrap_or_default();
            assert!(
                at >= up,
                "{node} deleted at {at}, before the API server was back at {up}"
            );
        }
        let mut deleted = pool.cloud.delete_requests();
        deleted.sort();
        assert_eq!(deleted, vec![b.clone(), c.clone()]);
        pool.assert_no_lost_servers();

        // Changes made after the restart arrive through the watches: 4 new servers, 3 free
        // slots on a and d, a buffer of 2: exactly one more node, whether or not the
        // scheduler has placed some of them yet.
        assert_eq!(pool.cloud.target(), 2);
        pool.create_servers(4, Placement::Scheduler).await;
        eventually("the pool to grow for the new servers", WAIT, || async {
            (pool.cloud.target() == 3).then_some(())
        })
        .await;
        eventually("the new node to be Ready", WAIT, || async {
            let nodes = pool.nodes().await;
            (nodes.len() == 3 && nodes.values().all(is_ready)).then_some(())
        })
        .await;
        // kube-scheduler recovers from the outage on its own time: its client-go reflectors
        // back off (up to 30 s, with jitter) while the API server is down, so it may see the
        // new pods only a while after kubescaler did.
        eventually(
            "the scheduler to bind all 9 servers",
            SCHEDULER_RECOVERY,
            || async {
                let placement = pool.placement().await;
                (placement.len() == 9 && placement.values().all(Option::is_some)).then_some(())
            },
        )
        .await;
        pool.wait_passes(2).await;
        assert_eq!(pool.cloud.target(), 3, "{}", pool.dump().await);
        let grows: Vec<Op> = pool
            .cloud
            .calls()
            .into_iter()
            .map(|c| c.op)
            .filter(|op| matches!(op, Op::GrowTo(_)))
            .collect();
        assert_eq!(grows, vec![Op::GrowTo(3)]);
        let nodes = pool.nodes().await;
        for node in [a, d] {
            let n = nodes
                .get(node.as_str())
                .unwrap_or_else(|| panic!("{node} is gone"));
            assert!(!is_unschedulable(n), "{node} cordoned");
        }
        pool.assert_no_lost_servers();
        kubescaler.stop().await;
    })
    .await;
}
