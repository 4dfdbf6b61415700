//! What the measuring examples share (`scale_run`, `fidelity`; each includes this file with
//! `mod support;`): the log line, a client from a kubeconfig, retries against a busy API
//! server, the DOKS fake with its one pool, the kubescaler child (started, waited for,
//! stopped) and its `/metrics`. Not an example itself: cargo finds examples as `examples/*.rs`
//! and `examples/*/main.rs`, and this directory has no `main.rs`.
//!
//! The including example names itself with `const LOG_TAG: &str` at its root, for [`say!`].
// Each example uses its own part of this module.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::fs::File;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use doks_fake::{FakeDoks, FakeOptions, PoolSpec};
use kube::api::{Api, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::Client;

pub type Res<T> = Result<T, String>;

/// `[<LOG_TAG> HH:MM:SS] <message>` on stderr (`LOG_TAG`: a constant of the example).
macro_rules! say {
    ($($arg:tt)*) => {{
        eprintln!(
            "[{} {}] {}",
            crate::LOG_TAG,
            ::jiff::Timestamp::now().strftime("%H:%M:%S"),
            format!($($arg)*)
        );
    }};
}
pub(crate) use say;

/// The mutex's value, poisoned or not.
pub fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

pub async fn client_from(path: &Path) -> Res<Client> {
    let kubeconfig =
        Kubeconfig::read_from(path).map_err(|e| format!("read {}: {e}", path.display()))?;
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
        .await
        .map_err(|e| format!("kubeconfig {}: {e}", path.display()))?;
    Client::try_from(config).map_err(|e| format!("client: {e}"))
}

/// The pauses between attempts: `first`, doubled after each failure, at most `max`.
#[derive(Clone, Copy, Debug)]
pub struct Backoff {
    pub first: Duration,
    pub max: Duration,
}

/// Runs `op` up to 8 times, pausing by `backoff` between failures (each one logged as
/// `<what> (attempt N): <error>; retrying`); the last failure is the error, `<what>: <error>`.
pub async fn retry<T, E, F, Fut>(what: &str, backoff: Backoff, mut op: F) -> Res<T>
where
    E: std::fmt::Display,
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, E>>,
{
    let mut delay = backoff.first;
    for attempt in 1..=8 {
        match op().await {
            Ok(v) => return Ok(v),
            Err(e) if attempt < 8 => {
                say!("{what} (attempt {attempt}): {e}; retrying");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(backoff.max);
            }
            Err(e) => return Err(format!("{what}: {e}")),
        }
    }
    unreachable!("the last attempt returns")
}

/// Creates `object`, retrying what a busy API server may answer; 409 counts as created.
pub async fn create<K>(api: &Api<K>, object: &K, name: &str, backoff: Backoff) -> Res<()>
where
    K: kube::Resource + Clone + serde::Serialize + serde::de::DeserializeOwned + std::fmt::Debug,
{
    let params = PostParams::default();
    retry(&format!("create {name}"), backoff, || async {
        match api.create(&params, object).await {
            Ok(_) => Ok(()),
            Err(kube::Error::Api(s)) if s.code == 409 => Ok(()),
            Err(e) => Err(e),
        }
    })
    .await
}

/// A free port on the loopback interface (for kubescaler's `http-listen-address`).
pub fn free_port() -> Res<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map_err(|e| format!("free port: {e}"))?
        .port())
}

pub fn http_client(timeout: Duration) -> Res<reqwest::Client> {
    reqwest::Client::builder()
        .timeout(timeout)
        .build()
        .map_err(|e| e.to_string())
}

/// The load average over 1, 5 and 15 minutes (`?` if unknown).
pub fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "?".into())
}

// --- the DOKS fake -------------------------------------------------------------------------

/// The DOKS fake, serving one cluster with one pool.
pub struct Cloud {
    pub fake: FakeDoks,
    /// Taken as the fake's `start` returned: it stamps requests from an instant taken just
    /// before.
    pub epoch: Instant,
    pub cluster_id: String,
    pub pool_id: String,
}

/// Starts the fake and adds cluster `cluster` with the pool `pool`.
pub async fn start_fake(options: FakeOptions, cluster: &str, pool: PoolSpec) -> Res<Cloud> {
    let fake = FakeDoks::start(options)
        .await
        .map_err(|e| format!("DOKS fake: {e}"))?;
    let epoch = Instant::now();
    let cluster_id = fake.add_cluster(cluster);
    let pool_id = fake
        .add_pool(&cluster_id, pool)
        .await
        .map_err(|e| format!("DOKS fake pool: {e}"))?;
    Ok(Cloud {
        fake,
        epoch,
        cluster_id,
        pool_id,
    })
}

// --- the kubescaler child and /metrics -----------------------------------------------------

/// The kubescaler child; killed if still running when dropped.
pub struct Daemon {
    child: Child,
    /// Its stdout and stderr.
    pub log: PathBuf,
}

impl Daemon {
    /// Starts `kubescaler --config <config>` with nothing in its environment but the cloud
    /// token, its output in `<out>/kubescaler.log`, and writes its pid to
    /// `<out>/kubescaler.pid` (which the script's cleanup reads, hack/lib.sh).
    pub fn spawn(kubescaler: &Path, config: &Path, token: &str, out: &Path) -> Res<Daemon> {
        let log_path = out.join("kubescaler.log");
        let log = File::create(&log_path).map_err(|e| format!("{}: {e}", log_path.display()))?;
        let log_err = log.try_clone().map_err(|e| e.to_string())?;
        let child = Command::new(kubescaler)
            .arg("--config")
            .arg(config)
            .env_clear()
            .env("CLOUD_PROVIDER_TOKEN", token)
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log_err)
            .spawn()
            .map_err(|e| format!("start {}: {e}", kubescaler.display()))?;
        let daemon = Daemon {
            child,
            log: log_path,
        };
        std::fs::write(out.join("kubescaler.pid"), daemon.pid().to_string())
            .map_err(|e| e.to_string())?;
        Ok(daemon)
    }
    pub fn pid(&self) -> u32 {
        self.child.id()
    }
    pub fn running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }
    /// SIGTERM, then SIGKILL after 10 s.
    pub fn stop(&mut self) -> Option<ExitStatus> {
        let _ = Command::new("kill")
            .args(["-TERM", &self.pid().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        self.child.wait().ok()
    }
    /// Polls `probe` every 50 ms until it holds and returns the time since `since`; fails if
    /// kubescaler exits first, or with `late` once `timeout` has passed since `since`.
    pub async fn wait_until<F, Fut>(
        &mut self,
        since: Instant,
        timeout: Duration,
        late: &str,
        mut probe: F,
    ) -> Res<Duration>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = bool>,
    {
        loop {
            if !self.running() {
                return Err(format!("kubescaler exited; see {}", self.log.display()));
            }
            if probe().await {
                return Ok(since.elapsed());
            }
            if since.elapsed() > timeout {
                return Err(late.to_string());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    /// The WARN and ERROR lines of its log.
    pub fn warn_error_lines(&self) -> (usize, usize) {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let warn = text.lines().filter(|l| l.contains(" WARN ")).count();
        let error = text.lines().filter(|l| l.contains(" ERROR ")).count();
        (warn, error)
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if self.running() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// `name{labels}` -> value of every sample of kubescaler's `/metrics` at `base`.
pub async fn metrics(http: &reqwest::Client, base: &str) -> Res<BTreeMap<String, f64>> {
    let text = http
        .get(format!("{base}/metrics"))
        .send()
        .await
        .map_err(|e| format!("GET /metrics: {e}"))?
        .text()
        .await
        .map_err(|e| format!("GET /metrics: {e}"))?;
    Ok(text
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let (name, value) = l.rsplit_once(' ')?;
            Some((name.to_string(), value.parse().ok()?))
        })
        .collect())
}
