//! Shared setup of the tests that run the DigitalOcean driver against the DOKS fake
//! (`hack/doks-fake`), which checks every request against
//! `../shared/digitalocean/doks-node-pools.openapi.yaml`. A clone without that file skips
//! these tests through [`prereq::skip`] ([`spec_or_skip`]).
#![allow(dead_code)]

#[path = "../prereq/mod.rs"]
pub mod prereq;
pub use prereq::spec_or_skip;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use doks_fake::{FakeDoks, FakeOptions, LoggedRequest, Operation, PoolSpec};
use kubescaler::config::SecretToken;
use kubescaler::provider::digitalocean::{DigitalOcean, DigitalOceanOptions};
use kubescaler::provider::NodeRef;

/// The token the fakes of these tests accept.
pub const TOKEN: &str = "dop_v1_contract_test_token_0123456789";
/// The pool label kubescaler's node-selector would match.
pub const POOL_LABEL: (&str, &str) = ("role", "game-servers");

/// A fake with a short boot delay and no Kubernetes side, or `None` to skip `test` (see
/// [`spec_or_skip`]).
pub async fn start_fake(test: &str, tweak: impl FnOnce(&mut FakeOptions)) -> Option<FakeDoks> {
    let spec_path = spec_or_skip(test)?;
    let mut options = FakeOptions {
        spec_path,
        token: TOKEN.to_owned(),
        boot_delay: Duration::from_millis(150),
        seed: Some(7),
        ..FakeOptions::default()
    };
    tweak(&mut options);
    Some(
        FakeDoks::start(options)
            .await
            .unwrap_or_else(|e| panic!("start the DOKS fake: {e}")),
    )
}

/// A cluster `games` among `others` other clusters, with a `system` pool and a `game-servers`
/// pool of `count` running nodes. Returns (cluster ID, pool ID).
pub async fn games_cluster(fake: &FakeDoks, others: usize, count: u32) -> (String, String) {
    for i in 0..others {
        fake.add_cluster(&format!("other-{i}"));
    }
    let cluster = fake.add_cluster("games");
    fake.add_pool(&cluster, PoolSpec::new("system", "s-2vcpu-4gb", 2))
        .await
        .unwrap_or_else(|e| panic!("add pool: {e}"));
    let pool = fake
        .add_pool(
            &cluster,
            PoolSpec::new("game-servers", "s-4vcpu-8gb", count).label(POOL_LABEL.0, POOL_LABEL.1),
        )
        .await
        .unwrap_or_else(|e| panic!("add pool: {e}"));
    (cluster, pool)
}

/// Retry settings short enough for tests.
pub fn fast_options() -> DigitalOceanOptions {
    DigitalOceanOptions {
        connect_timeout: Duration::from_secs(2),
        request_timeout: Duration::from_secs(2),
        max_attempts: 5,
        retry_budget: Duration::from_secs(20),
        initial_backoff: Duration::from_millis(50),
        max_backoff: Duration::from_millis(400),
        per_page: 200,
        skip_drain: false,
    }
}

/// The real driver, pointed at the fake.
pub fn driver(fake: &FakeDoks, options: DigitalOceanOptions) -> DigitalOcean {
    DigitalOcean::new(
        fake.base_url(),
        SecretToken::new(TOKEN),
        "games",
        "game-servers",
        options,
    )
    .unwrap_or_else(|e| panic!("build the driver: {e}"))
}

/// A fake holding the `games` cluster (its `game-servers` pool of `count` running nodes) and a
/// driver for it with `options`, its names already resolved; `None` to skip `test`.
pub async fn resolved_driver(
    test: &str,
    count: u32,
    options: DigitalOceanOptions,
) -> Option<(FakeDoks, DigitalOcean)> {
    let fake = start_fake(test, |_| {}).await?;
    games_cluster(&fake, 0, count).await;
    let driver = driver(&fake, options);
    driver.resolve().await.unwrap_or_else(|e| panic!("{e}"));
    Some((fake, driver))
}

/// Polls until `check` holds, failing after `limit`.
pub async fn wait_for(what: &str, limit: Duration, mut check: impl FnMut() -> bool) {
    let start = Instant::now();
    while !check() {
        assert!(
            start.elapsed() < limit,
            "timed out after {limit:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// A Kubernetes node as DOKS registers pool node `i`: by label, provider ID or name.
pub enum Identify {
    /// `doks.digitalocean.com/node-id`.
    Label,
    /// `spec.providerID`.
    ProviderId,
    /// Name only.
    Name,
}

/// The NodeRef of a pool node as kubescaler would pass it.
pub fn node_ref(node: &doks_fake::NodeView, how: Identify) -> NodeRef {
    let mut labels = BTreeMap::new();
    let mut provider_id = None;
    match how {
        Identify::Label => {
            labels.insert("doks.digitalocean.com/node-id".to_owned(), node.id.clone());
        }
        Identify::ProviderId => provider_id = Some(format!("digitalocean://{}", node.droplet_id)),
        Identify::Name => {}
    }
    NodeRef {
        name: node.name.clone(),
        provider_id,
        labels,
        identity_annotations: BTreeMap::new(),
    }
}

/// The requests of one operation.
pub fn of(log: &[LoggedRequest], op: Operation) -> Vec<LoggedRequest> {
    log.iter()
        .filter(|r| r.operation == Some(op))
        .cloned()
        .collect()
}

/// The log, one request a line, for failure messages.
pub fn show(log: &[LoggedRequest]) -> String {
    log.iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("\n")
}
