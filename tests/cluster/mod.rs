//! Shared gate for the tests that need the real local control plane.
//!
//! They run only against the API server named by `KUBESCALER_E2E_KUBECONFIG` (written by
//! `hack/controlplane.sh start`), never against whatever cluster a developer's own
//! `KUBECONFIG` points at: they create and delete Node objects. Without it they skip through
//! [`prereq::skip`] (a visible line, counted by `hack/test.sh`); with
//! `KUBESCALER_TESTS_REQUIRED=1` (CI) they fail instead.
#![allow(dead_code)]

pub mod cloud;
#[path = "../prereq/mod.rs"]
pub mod prereq;

use std::future::Future;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Client, Config};

/// The environment variable naming the test control plane's kubeconfig.
pub const KUBECONFIG_ENV: &str = "KUBESCALER_E2E_KUBECONFIG";

/// The test control plane's kubeconfig path, or `None` (after saying how to get one) to skip.
pub fn kubeconfig_or_skip(test: &str) -> Option<PathBuf> {
    match std::env::var_os(KUBECONFIG_ENV) {
        Some(path) => Some(PathBuf::from(path)),
        None => {
            prereq::skip(
                test,
                "the local control plane",
                "run `bash hack/build-controlplane.sh && eval \"$(bash hack/controlplane.sh start)\"` \
                 then the tests again (README, Tests)",
            );
            None
        }
    }
}

/// A client for the test control plane, or `None` to skip.
pub async fn client_or_skip(test: &str) -> Option<Client> {
    let path = kubeconfig_or_skip(test)?;
    let kubeconfig = Kubeconfig::read_from(&path)
        .unwrap_or_else(|e| panic!("{test}: read {}: {e}", path.display()));
    let config = Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
        .await
        .unwrap_or_else(|e| panic!("{test}: kubeconfig {}: {e}", path.display()));
    Some(Client::try_from(config).unwrap_or_else(|e| panic!("{test}: client: {e}")))
}

/// Polls `check` every 200 ms until it yields a value; fails with `what` after `timeout`.
pub async fn eventually<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let start = Instant::now();
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(
            start.elapsed() < timeout,
            "timed out after {timeout:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
