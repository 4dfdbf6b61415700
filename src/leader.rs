//! Leader election on a coordination.k8s.io Lease, so that several replicas are safe: only
//! the holder runs the scale loop; the others wait, serving health and metrics, and take over
//! when the holder stops renewing. On shutdown the holder releases the Lease at once.
//!
//! One request per step: the holder renews with one `PUT` of the Lease it last wrote (its
//! resourceVersion makes a concurrent change fail with 409 instead of being overwritten), a
//! third of the duration before it expires; a standby reads the Lease once when it would
//! expire, and takes it with one `PUT` if it has. So an idle pool costs each replica one
//! request per two thirds of the lease duration (with the default 15 s, 6 a minute).
//! A holder that cannot renew stops acting a second before its Lease can expire, so that two
//! replicas never act at once.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use jiff::{SignedDuration, Timestamp};
use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use kube::api::{Api, ObjectMeta, PostParams};
use kube::Client;
use tokio::sync::watch;
use tracing::{debug, info, warn};

use crate::config::Config;
use crate::telemetry::Telemetry;

/// How long shutdown waits for the Lease to be released.
const RELEASE_TIMEOUT: Duration = Duration::from_secs(3);
/// Wait between attempts after a failed request.
const RETRY: Duration = Duration::from_millis(500);
/// A standby reads an expiring Lease this long after its expiry: renewTime is the holder's
/// clock, written to the microsecond.
const EXPIRY_MARGIN: Duration = Duration::from_millis(100);
/// A holder that cannot renew stops acting this long before its Lease expires.
const STEP_DOWN_MARGIN: Duration = Duration::from_secs(1);

/// Errors of leader election.
#[derive(Debug, thiserror::Error)]
#[error("leader election on Lease {namespace}/{name}: {source}")]
pub struct LeaderError {
    namespace: String,
    name: String,
    #[source]
    source: kube::Error,
}

/// What a replica should do about the Lease as it reads it now.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Step {
    /// Take it: free, expired, or already this replica's (a restart); `transition` when the
    /// holder changes.
    Take {
        /// The holder changes (count it in `leaseTransitions`).
        transition: bool,
    },
    /// Someone else holds it: look again at this instant (its expiry).
    WaitUntil(Timestamp),
}

/// The rule, pure: a Lease with no holder, or whose `renewTime + leaseDurationSeconds` has
/// passed, or held by `identity`, can be taken; else wait for its expiry.
pub fn step(spec: Option<&LeaseSpec>, identity: &str, now: Timestamp, duration: u64) -> Step {
    let Some(spec) = spec else {
        return Step::Take { transition: true };
    };
    let holder = spec.holder_identity.as_deref().filter(|h| !h.is_empty());
    match holder {
        None => Step::Take { transition: true },
        Some(h) if h == identity => Step::Take { transition: false },
        Some(_) => {
            let seconds = spec
                .lease_duration_seconds
                .and_then(|s| u64::try_from(s).ok())
                .unwrap_or(duration);
            let renewed = spec
                .renew_time
                .as_ref()
                .or(spec.acquire_time.as_ref())
                .map(|t| t.0);
            let expiry = renewed.and_then(|r| {
                r.checked_add(SignedDuration::from_secs(i64::try_from(seconds).ok()?))
                    .ok()
            });
            match expiry {
                Some(expiry) if expiry > now => Step::WaitUntil(expiry),
                // Expired, or no time to expire from: the holder is gone.
                _ => Step::Take { transition: true },
            }
        }
    }
}

/// The Lease as written by this replica taking or renewing it at `now`.
fn taken(
    mut lease: Lease,
    identity: &str,
    now: Timestamp,
    duration: u64,
    transition: bool,
) -> Lease {
    let spec = lease.spec.get_or_insert_with(LeaseSpec::default);
    if transition {
        spec.acquire_time = Some(MicroTime(now));
        spec.lease_transitions = Some(spec.lease_transitions.unwrap_or(0).saturating_add(1));
    }
    spec.holder_identity = Some(identity.to_string());
    spec.lease_duration_seconds = Some(i32::try_from(duration).unwrap_or(i32::MAX));
    spec.renew_time = Some(MicroTime(now));
    lease
}

/// Sleeps until `at` (at once if it has passed) or until shutdown; `false` on shutdown.
async fn sleep_until(at: Timestamp, shutdown: &mut watch::Receiver<bool>) -> bool {
    let wait = at.duration_since(Timestamp::now());
    let wait = Duration::try_from(wait).unwrap_or(Duration::ZERO);
    sleep_for(wait, shutdown).await
}

async fn sleep_for(wait: Duration, shutdown: &mut watch::Receiver<bool>) -> bool {
    tokio::select! {
        _ = shutdown.wait_for(|stop| *stop) => false,
        _ = tokio::time::sleep(wait) => true,
    }
}

fn is_conflict(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == 409)
}

/// A refusal no retry mends: no right to the Lease (RBAC), or its namespace does not exist.
fn is_final(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == 401 || s.code == 403 || (s.code == 404 && s.reason == "NotFound" && s.message.contains("namespaces")))
}

/// One replica's side of the election: keeps `leading` up to date until shutdown, then
/// releases the Lease if it holds it.
struct Elector {
    api: Api<Lease>,
    name: String,
    identity: String,
    duration: u64,
    /// Renew this long after the last renewal (two thirds of the duration).
    renew_after: Duration,
}

impl Elector {
    /// Follows until the Lease can be taken and is; returns the Lease as written, or `None`
    /// on shutdown. Refusals that no retry mends (no right to the Lease, no such namespace)
    /// are errors; anything else is retried.
    async fn acquire(
        &self,
        shutdown: &mut watch::Receiver<bool>,
    ) -> Result<Option<Lease>, kube::Error> {
        loop {
            let now = Timestamp::now();
            let read = match self.api.get_opt(&self.name).await {
                Ok(read) => read,
                Err(e) if is_final(&e) => return Err(e),
                Err(e) => {
                    warn!(error = %e, "cannot read the Lease; retrying");
                    if !sleep_for(RETRY, shutdown).await {
                        return Ok(None);
                    }
                    continue;
                }
            };
            match step(
                read.as_ref().and_then(|l| l.spec.as_ref()),
                &self.identity,
                now,
                self.duration,
            ) {
                Step::WaitUntil(expiry) => {
                    let at = expiry
                        .checked_add(SignedDuration::try_from(EXPIRY_MARGIN).unwrap_or_default())
                        .unwrap_or(expiry);
                    debug!(until = %at, "the Lease is held by another replica; waiting for its expiry");
                    if !sleep_until(at, shutdown).await {
                        return Ok(None);
                    }
                }
                Step::Take { transition } => {
                    let written = match read {
                        Some(lease) => {
                            let lease =
                                taken(lease, &self.identity, now, self.duration, transition);
                            self.api
                                .replace(&self.name, &PostParams::default(), &lease)
                                .await
                        }
                        None => {
                            let lease = Lease {
                                metadata: ObjectMeta {
                                    name: Some(self.name.clone()),
                                    ..Default::default()
                                },
                                spec: None,
                            };
                            let lease = taken(lease, &self.identity, now, self.duration, true);
                            self.api.create(&PostParams::default(), &lease).await
                        }
                    };
                    match written {
                        Ok(lease) => return Ok(Some(lease)),
                        // Another replica was quicker: read again.
                        Err(e) if is_conflict(&e) => {}
                        Err(e) if is_final(&e) => return Err(e),
                        Err(e) => {
                            warn!(error = %e, "cannot take the Lease; retrying");
                            if !sleep_for(RETRY, shutdown).await {
                                return Ok(None);
                            }
                        }
                    }
                }
            }
        }
    }

    /// Renews `lease` until it is lost or `until` flips; returns the Lease last written when
    /// told to stop while holding it (to release), `None` when lost.
    async fn hold(&self, mut lease: Lease, until: &mut watch::Receiver<bool>) -> Option<Lease> {
        let mut renewed = Timestamp::now();
        let mut next = renewed;
        let step_down = Duration::from_secs(self.duration).saturating_sub(STEP_DOWN_MARGIN);
        loop {
            next = next
                .checked_add(SignedDuration::try_from(self.renew_after).unwrap_or_default())
                .unwrap_or(next);
            if !sleep_until(next, until).await {
                return Some(lease);
            }
            loop {
                let now = Timestamp::now();
                let renewal = taken(lease.clone(), &self.identity, now, self.duration, false);
                match self
                    .api
                    .replace(&self.name, &PostParams::default(), &renewal)
                    .await
                {
                    Ok(written) => {
                        lease = written;
                        renewed = now;
                        next = now;
                        break;
                    }
                    Err(e) if is_conflict(&e) => {
                        // Someone wrote the Lease: still ours only if it still names us.
                        match self.api.get_opt(&self.name).await {
                            Ok(Some(read))
                                if read
                                    .spec
                                    .as_ref()
                                    .and_then(|s| s.holder_identity.as_deref())
                                    == Some(self.identity.as_str()) =>
                            {
                                lease = read;
                                continue;
                            }
                            Ok(_) => return None,
                            Err(e) => warn!(error = %e, "cannot read the Lease after a conflict"),
                        }
                    }
                    Err(e) => warn!(error = %e, "cannot renew the Lease; retrying"),
                }
                let held = Duration::try_from(Timestamp::now().duration_since(renewed))
                    .unwrap_or(Duration::ZERO);
                if held >= step_down {
                    // Another replica may take it soon: stop acting first.
                    warn!(since = %renewed, "the Lease could not be renewed in time");
                    return None;
                }
                if !sleep_for(RETRY, until).await {
                    return Some(lease);
                }
            }
        }
    }

    /// Gives the Lease up (no holder), if it is still as this replica last wrote it.
    async fn release(&self, mut lease: Lease) -> Result<(), kube::Error> {
        if let Some(spec) = lease.spec.as_mut() {
            spec.holder_identity = None;
        }
        self.api
            .replace(&self.name, &PostParams::default(), &lease)
            .await
            .map(|_| ())
    }
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
    let duration = config.leader_election_lease_duration_sec.max(1);
    let elector = Elector {
        api: Api::namespaced(client, &namespace),
        name: name.clone(),
        identity: config.identity(),
        duration,
        // Renew a third of the duration before expiry: room for a slow API server.
        renew_after: Duration::from_secs(duration - (duration / 3).max(1)),
    };
    info!(lease = %format!("{namespace}/{name}"), identity = %elector.identity, "waiting for leadership");
    let error = |source| LeaderError {
        namespace: namespace.clone(),
        name: name.clone(),
        source,
    };
    while let Some(lease) = elector.acquire(&mut shutdown).await.map_err(error)? {
        info!(identity = %elector.identity, "became leader: acting");
        telemetry.set_leader(true);
        // `stop` ends the loop (gracefully: its pass finishes) when the Lease is lost or on
        // shutdown; `end` ends the renewals when the loop is over, handing the Lease back
        // for release.
        let (stop_tx, stop_rx) = watch::channel(false);
        let (end_tx, end_rx) = watch::channel(false);
        let mut hold_end = end_rx.clone();
        let mut forward_end = end_rx;
        let mut stopping = shutdown.clone();
        let acting = async {
            act(stop_rx).await;
            let _ = end_tx.send(true);
        };
        let holding = async {
            let kept = elector.hold(lease, &mut hold_end).await;
            if kept.is_none() {
                let _ = stop_tx.send(true);
            }
            kept
        };
        let forward = async {
            tokio::select! {
                _ = stopping.wait_for(|stop| *stop) => { let _ = stop_tx.send(true); }
                _ = forward_end.wait_for(|end| *end) => {}
            }
        };
        let ((), kept, ()) = tokio::join!(acting, holding, forward);
        telemetry.set_leader(false);
        match kept {
            Some(lease) => {
                // The loop is over (shutdown): give the Lease up at once.
                match tokio::time::timeout(RELEASE_TIMEOUT, elector.release(lease)).await {
                    Ok(Ok(())) => info!("lease released"),
                    Ok(Err(e)) => warn!(error = %e, "lease release failed; it expires by itself"),
                    Err(_) => warn!("lease release timed out; it expires by itself"),
                }
                break;
            }
            None if *shutdown.borrow() => break,
            None => warn!(identity = %elector.identity, "lost leadership: stopped acting"),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(holder: Option<&str>, renewed: Option<Timestamp>, seconds: i32) -> LeaseSpec {
        LeaseSpec {
            holder_identity: holder.map(str::to_string),
            renew_time: renewed.map(MicroTime),
            lease_duration_seconds: Some(seconds),
            ..Default::default()
        }
    }

    #[test]
    fn a_lease_held_by_another_is_waited_for_until_it_expires_then_taken() {
        let now: Timestamp = "2026-12-04T10:00:00Z".parse().unwrap();
        let renewed = now - SignedDuration::from_secs(4);
        let held = spec(Some("b"), Some(renewed), 15);
        assert_eq!(
            step(Some(&held), "a", now, 15),
            Step::WaitUntil(renewed + SignedDuration::from_secs(15))
        );
        let later = now + SignedDuration::from_secs(12);
        assert_eq!(
            step(Some(&held), "a", later, 15),
            Step::Take { transition: true }
        );
    }

    #[test]
    fn a_free_missing_or_own_lease_is_taken_at_once() {
        let now = Timestamp::now();
        assert_eq!(step(None, "a", now, 15), Step::Take { transition: true });
        let free = spec(None, Some(now), 15);
        assert_eq!(
            step(Some(&free), "a", now, 15),
            Step::Take { transition: true }
        );
        let released = spec(Some(""), Some(now), 15);
        assert_eq!(
            step(Some(&released), "a", now, 15),
            Step::Take { transition: true }
        );
        // A restarted replica under the same identity takes its own Lease back.
        let own = spec(Some("a"), Some(now), 15);
        assert_eq!(
            step(Some(&own), "a", now, 15),
            Step::Take { transition: false }
        );
    }

    #[test]
    fn a_renewal_keeps_the_acquire_time_and_counts_no_transition() {
        let t0: Timestamp = "2026-12-04T10:00:00Z".parse().unwrap();
        let t1 = t0 + SignedDuration::from_secs(10);
        let first = taken(Lease::default(), "a", t0, 15, true);
        let renewed = taken(first, "a", t1, 15, false);
        let spec = renewed.spec.unwrap();
        assert_eq!(spec.acquire_time, Some(MicroTime(t0)));
        assert_eq!(spec.renew_time, Some(MicroTime(t1)));
        assert_eq!(spec.lease_transitions, Some(1));
        assert_eq!(spec.holder_identity.as_deref(), Some("a"));
    }
}
