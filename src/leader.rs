//! Leader election on a coordination.k8s.io Lease, so that several replicas are safe: only
//! the holder runs the scale loop; the others wait, serving health and metrics, and take over
//! when the holder stops renewing. On shutdown the holder releases the Lease at once.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use kube::Client;
use kube_lease_manager::LeaseManagerBuilder;
use tokio::sync::watch;
use tracing::{info, warn};

use crate::config::Config;
use crate::telemetry::Telemetry;

/// How long shutdown waits for the Lease to be released.
const RELEASE_TIMEOUT: Duration = Duration::from_secs(3);

/// Errors of leader election.
#[derive(Debug, thiserror::Error)]
#[error("leader election on Lease {namespace}/{name}: {source}")]
pub struct LeaderError {
    namespace: String,
    name: String,
    #[source]
    source: kube_lease_manager::LeaseManagerError,
}

/// Runs `act` (the scale loop) only while this replica holds the Lease; stops it when the
/// Lease is lost, and starts it again if it is won back. Returns when `shutdown` flips.
pub async fn run_as_leader<F, Fut>(
    client: Client,
    config: &Config,
    telemetry: Arc<Telemetry>,
    mut shutdown: watch::Receiver<bool>,
    mut act: F,
) -> Result<(), LeaderError>
where
    F: FnMut(watch::Receiver<bool>) -> Fut,
    Fut: Future<Output = ()>,
{
    let namespace = config.own_namespace();
    let name = config.leader_election_lease_name.clone();
    let identity = config.identity();
    let duration = config.leader_election_lease_duration_sec;
    // Renew a third of the duration before expiry: room for a slow API server.
    let grace = (duration / 3).max(1);
    let manager = LeaseManagerBuilder::new(client, &name)
        .with_namespace(&namespace)
        .with_identity(&identity)
        .with_duration(duration)
        .with_grace(grace)
        .build()
        .await
        .map_err(|source| LeaderError {
            namespace: namespace.clone(),
            name: name.clone(),
            source,
        })?;
    info!(lease = %format!("{namespace}/{name}"), identity = %identity, "waiting for leadership");
    let (mut leading, task) = manager.watch().await;

    'terms: loop {
        while !*leading.borrow_and_update() {
            tokio::select! {
                _ = shutdown.wait_for(|stop| *stop) => break 'terms,
                changed = leading.changed() => if changed.is_err() {
                    warn!("lease manager stopped; not acting");
                    break 'terms;
                }
            }
        }
        info!(identity = %identity, "became leader: acting");
        telemetry.set_leader(true);
        let lost = async {
            loop {
                if leading.changed().await.is_err() || !*leading.borrow() {
                    return;
                }
            }
        };
        tokio::select! {
            _ = act(shutdown.clone()) => {
                telemetry.set_leader(false);
                break 'terms;
            }
            _ = lost => {
                warn!(identity = %identity, "lost leadership: stopped acting");
                telemetry.set_leader(false);
            }
        }
    }
    // Dropping the receiver makes the manager release the Lease and end.
    drop(leading);
    match tokio::time::timeout(RELEASE_TIMEOUT, task).await {
        Ok(Ok(Ok(_))) => info!("lease released"),
        Ok(Ok(Err(e))) => warn!(error = %e, "lease release failed; it expires by itself"),
        Ok(Err(e)) => warn!(error = %e, "lease task failed"),
        Err(_) => warn!("lease release timed out; it expires by itself"),
    }
    Ok(())
}
