//! The whole deletion sequence, in one place: how a node the planner chose is deleted without
//! ever taking a game server with it.
//!
//! For each node, in this order, with nothing slow between the last check and the DELETE:
//! 1. **resolve** the node to its cloud instance in the pool just read (no request); an
//!    instance the cloud already reports as draining or deleting is not deleted again;
//! 2. **fence** it: kubescaler's own NoSchedule taint ([`FENCE_TAINT`]) and the request time,
//!    written only if the live node is still cordoned by kubescaler (the ownership rule of
//!    [`crate::kubernetes::marks`]), so nothing new lands there, whatever a person does;
//! 3. **re-check live**: the server pods bound to it, in Agones mode its GameServers and their
//!    pods, then the node itself, all read from the API server; a server pod, any GameServer
//!    not on its way out (an allocation ignores cordons and fences, so even a Ready one could
//!    become a match), or a node that is no longer kubescaler's (a person uncordoned or
//!    re-cordoned it) cancels the deletion (Event, metric) and lifts the fence;
//! 4. **DELETE** the instance at once (one request: the pool read of step 1 already resolved
//!    it), then record the accepted deletion on the node ([`DELETION_ACCEPTED_ANNOTATION`]),
//!    so that a restarted or newly elected replica does not delete it twice.
//!
//! Each node's failure is its own: the other nodes of the pass go ahead, and a node whose
//! deletion keeps failing is held back with a growing delay ([`Actuator::held_back`], which
//! the planner skips) and reported by a `DeleteFailed` Event, instead of being retried first on
//! every pass.
//!
//! Compaction (Agones mode) belongs to the same sequence: before a surplus node can be
//! deleted its Ready GameServers must go. [`Actuator::compact`] deletes them one by one, each
//! only if still at the resourceVersion the planner read (an allocation racing the delete
//! wins, and the node stays), on a node still cordoned by kubescaler, at most
//! `agones-compaction-per-minute` a minute.
//!
//! [`FENCE_TAINT`]: crate::model::FENCE_TAINT
//! [`DELETION_ACCEPTED_ANNOTATION`]: crate::model::DELETION_ACCEPTED_ANNOTATION

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Duration;

use jiff::{SignedDuration, Timestamp};
use tracing::{info, info_span, warn, Instrument};

use crate::agones::{GameServerDelete, GameServerInfo};
use crate::kubernetes::{ActionEvent, EventReason, Kubernetes, MarkOp, MarkOutcome};
use crate::model::{CloudNode, CloudPool, InstanceStatus, FENCE_TAINT};
use crate::provider::{NodePoolProvider, NodeRef};
use crate::telemetry::Telemetry;

/// Delay after a node's first failed deletion; doubled per further failure.
const RETRY_START: Duration = Duration::from_secs(30);
/// Longest delay between two attempts at one node.
const RETRY_MAX: Duration = Duration::from_secs(15 * 60);

/// How one deletion ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// The cloud accepted the DELETE.
    Deleted,
    /// The cloud already reports the instance as going: nothing sent.
    AlreadyGoing,
    /// Called off before the DELETE, and why (the fence, if placed, is lifted).
    Cancelled(String),
    /// Something failed; the node is held back for a while.
    Failed(String),
    /// Held back after earlier failures: not attempted this pass.
    HeldBack,
}

/// A node whose deletion keeps failing.
#[derive(Clone, Debug)]
struct Failures {
    count: u32,
    retry_at: Timestamp,
}

/// What one node's compaction did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Compaction {
    /// GameServers deleted.
    pub deleted: u32,
    /// Left alone: changed since read (an allocation won).
    pub conflicts: u32,
    /// Already gone.
    pub gone: u32,
    /// Not attempted: the rate limit is spent for now.
    pub deferred: u32,
    /// Not attempted at all, and why (the node is no longer kubescaler's, or a read failed).
    pub skipped: Option<String>,
}

/// The compaction rate limit: a bucket of `per_minute` deletions, refilled continuously.
#[derive(Clone, Debug)]
struct Bucket {
    per_minute: u32,
    tokens: f64,
    at: Option<Timestamp>,
}

impl Bucket {
    fn take(&mut self, now: Timestamp) -> bool {
        let cap = f64::from(self.per_minute);
        let elapsed = self
            .at
            .map_or(60.0, |at| now.duration_since(at).as_secs_f64().max(0.0));
        self.tokens = (self.tokens + elapsed * cap / 60.0).min(cap);
        self.at = Some(now);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

/// Carries out deletions; remembers failures between passes.
pub struct Actuator {
    k8s: Arc<dyn Kubernetes>,
    provider: Arc<dyn NodePoolProvider>,
    telemetry: Arc<Telemetry>,
    failures: HashMap<String, Failures>,
    /// Agones mode: GameServers are re-checked before a deletion.
    agones: bool,
    compaction: Bucket,
}

impl Actuator {
    /// An actuator over these two sides, reporting into `telemetry`.
    pub fn new(
        k8s: Arc<dyn Kubernetes>,
        provider: Arc<dyn NodePoolProvider>,
        telemetry: Arc<Telemetry>,
    ) -> Self {
        Actuator {
            k8s,
            provider,
            telemetry,
            failures: HashMap::new(),
            agones: false,
            compaction: Bucket {
                per_minute: 0,
                tokens: 0.0,
                at: None,
            },
        }
    }

    /// Agones mode: re-checks GameServers before each deletion, and compacts at most
    /// `compaction_per_minute` GameServers a minute.
    pub fn with_agones(mut self, compaction_per_minute: u32) -> Self {
        self.agones = true;
        self.compaction = Bucket {
            per_minute: compaction_per_minute,
            tokens: 0.0,
            at: None,
        };
        self
    }

    /// Deletes the Ready GameServers the planner chose on `node` (see the module docs), and
    /// records one `Compact` Event for the node if any went.
    pub async fn compact(
        &mut self,
        node: &str,
        game_servers: &[GameServerInfo],
        now: Timestamp,
    ) -> Compaction {
        let span = info_span!("compact", node = %node, candidates = game_servers.len());
        let done = self
            .compact_node(node, game_servers, now)
            .instrument(span.clone())
            .await;
        let _in = span.enter();
        if let Some(why) = &done.skipped {
            info!(why = %why, "compaction skipped");
        } else {
            info!(
                deleted = done.deleted,
                conflicts = done.conflicts,
                gone = done.gone,
                deferred = done.deferred,
                "compacted"
            );
        }
        if done.deleted > 0 {
            self.telemetry
                .action_done(crate::planner::ActionKind::Compact);
            self.publish(
                EventReason::Compact,
                node,
                format!(
                    "deleted {} Ready GameServers of this surplus node so that it can empty ({} allocated meanwhile and kept, {} already gone, {} left for later by agones-compaction-per-minute)",
                    done.deleted, done.conflicts, done.gone, done.deferred
                ),
            )
            .await;
        }
        done
    }

    async fn compact_node(
        &mut self,
        node: &str,
        game_servers: &[GameServerInfo],
        now: Timestamp,
    ) -> Compaction {
        let mut done = Compaction::default();
        // Only a node kubescaler still holds cordoned: a person's uncordon or cordon ends it.
        match self.k8s.live_node(node).await {
            Ok(Some(live)) if live.cordoned_by_kubescaler => {}
            Ok(Some(_)) => {
                done.skipped = Some("the node is no longer cordoned by kubescaler".into());
                return done;
            }
            Ok(None) => {
                done.skipped = Some("the node is gone".into());
                return done;
            }
            Err(e) => {
                done.skipped = Some(e.to_string());
                return done;
            }
        }
        for (i, gs) in game_servers.iter().enumerate() {
            if !self.compaction.take(now) {
                done.deferred = (game_servers.len() - i) as u32;
                break;
            }
            match self.k8s.delete_game_server(gs).await {
                Ok(GameServerDelete::Deleted) => {
                    done.deleted += 1;
                    self.telemetry.game_server_compacted("deleted");
                }
                Ok(GameServerDelete::Conflict) => {
                    info!(game_server = %gs.key, "changed since read (allocated?): kept");
                    done.conflicts += 1;
                    self.telemetry.game_server_compacted("conflict");
                }
                Ok(GameServerDelete::Gone) => {
                    done.gone += 1;
                    self.telemetry.game_server_compacted("gone");
                }
                Err(e) => {
                    warn!(game_server = %gs.key, error = %e, "cannot delete GameServer");
                    done.skipped = Some(e.to_string());
                    break;
                }
            }
        }
        done
    }

    /// Reports into `telemetry` from now on.
    pub fn set_telemetry(&mut self, telemetry: Arc<Telemetry>) {
        self.telemetry = telemetry;
    }

    /// Nodes (and instance ids) whose deletion is held back at `now` after failures.
    pub fn held_back(&self, now: Timestamp) -> BTreeSet<String> {
        self.failures
            .iter()
            .filter(|(_, f)| f.retry_at > now)
            .map(|(k, _)| k.clone())
            .collect()
    }

    /// Deletes `node` through the sequence of the module documentation, `pool` being the
    /// cloud pool as just read.
    pub async fn delete_node(
        &mut self,
        node: &NodeRef,
        pool: &CloudPool,
        reason: &str,
        now: Timestamp,
    ) -> Outcome {
        let span = info_span!("delete_node", node = %node.name);
        let outcome = if self.is_held_back(&node.name, now) {
            Outcome::HeldBack
        } else {
            self.sequence(node, pool, now)
                .instrument(span.clone())
                .await
        };
        let _in = span.enter();
        match &outcome {
            Outcome::Deleted => {
                self.failures.remove(&node.name);
                self.telemetry
                    .action_done(crate::planner::ActionKind::Delete);
                self.publish(
                    EventReason::DeleteNode,
                    &node.name,
                    format!("delete node {}: {reason}", node.name),
                )
                .await;
            }
            Outcome::AlreadyGoing => {
                self.failures.remove(&node.name);
            }
            Outcome::Cancelled(why) => {
                warn!(why = %why, "deletion cancelled");
                self.telemetry.deletion_cancelled();
                self.publish(
                    EventReason::DeleteCancelled,
                    &node.name,
                    format!("deletion cancelled: {why}"),
                )
                .await;
            }
            Outcome::Failed(why) => {
                let (count, retry_at) = self.record_failure(&node.name, now);
                warn!(why = %why, attempt = count, retry_at = %retry_at, "deletion failed; holding the node back");
                self.telemetry.deletion_failed();
                self.publish(
                    EventReason::DeleteFailed,
                    &node.name,
                    format!(
                        "deletion failed (attempt {count}, next no sooner than {retry_at}): {why}"
                    ),
                )
                .await;
            }
            Outcome::HeldBack => {}
        }
        outcome
    }

    /// Deletes a pool instance that never registered as a node.
    pub async fn delete_unregistered(&mut self, instance: &CloudNode, now: Timestamp) -> Outcome {
        let key = format!("instance/{}", instance.id);
        if self.is_held_back(&key, now) {
            return Outcome::HeldBack;
        }
        match self.provider.delete_instance(instance).await {
            Ok(()) => {
                self.failures.remove(&key);
                info!(instance = %instance.id, "deleted an instance that never registered");
                self.telemetry
                    .action_done(crate::planner::ActionKind::DeleteInstance);
                Outcome::Deleted
            }
            Err(e) => {
                let (count, _) = self.record_failure(&key, now);
                warn!(instance = %instance.id, error = %e, attempt = count, "cannot delete an instance that never registered");
                self.telemetry.deletion_failed();
                Outcome::Failed(e.to_string())
            }
        }
    }

    fn is_held_back(&self, key: &str, now: Timestamp) -> bool {
        self.failures.get(key).is_some_and(|f| f.retry_at > now)
    }

    fn record_failure(&mut self, key: &str, now: Timestamp) -> (u32, Timestamp) {
        let entry = self.failures.entry(key.to_string()).or_insert(Failures {
            count: 0,
            retry_at: now,
        });
        entry.count = entry.count.saturating_add(1);
        let delay = RETRY_START
            .saturating_mul(2u32.saturating_pow(entry.count.saturating_sub(1).min(16)))
            .min(RETRY_MAX);
        let delay = SignedDuration::try_from(delay).unwrap_or(SignedDuration::from_secs(900));
        entry.retry_at = now.checked_add(delay).unwrap_or(now);
        (entry.count, entry.retry_at)
    }

    async fn sequence(&self, node: &NodeRef, pool: &CloudPool, now: Timestamp) -> Outcome {
        // 1. Resolve, from the pool read this pass: no request.
        let instance = match self.provider.find(node, pool) {
            Ok(Some(instance)) => instance,
            Ok(None) => return Outcome::Failed("the node is not in the cloud pool".into()),
            Err(e) => return Outcome::Failed(e.to_string()),
        };
        if instance.status == InstanceStatus::Deleting {
            info!(instance = %instance.id, state = %instance.state, "the cloud is removing the node already");
            self.accept(&node.name, now).await;
            return Outcome::AlreadyGoing;
        }

        // 2. Fence, if it is still kubescaler's.
        match self.k8s.mark(&node.name, MarkOp::Fence(now)).await {
            Ok(MarkOutcome::Applied(_)) => {}
            Ok(MarkOutcome::Refused(_, why)) => return Outcome::Cancelled(why),
            Ok(MarkOutcome::Gone) => {
                return Outcome::Cancelled("the node is gone from the cluster".into())
            }
            Err(e) => return Outcome::Failed(e.to_string()),
        }

        // 3. Re-check live: its server pods, then the node.
        match self.k8s.live_server_pods(&node.name).await {
            Ok(servers) if servers.is_empty() => {}
            Ok(servers) => {
                return self
                    .cancel(
                        &node.name,
                        format!("live re-check found server pods {}", servers.join(", ")),
                    )
                    .await
            }
            Err(e) => {
                self.release(&node.name).await;
                return Outcome::Failed(e.to_string());
            }
        }
        if self.agones {
            match self.k8s.live_node_game_servers(&node.name).await {
                Ok(live) => {
                    let blockers = live.blockers();
                    if !blockers.is_empty() {
                        return self
                            .cancel(
                                &node.name,
                                format!("live re-check found {}", blockers.join(", ")),
                            )
                            .await;
                    }
                }
                Err(e) => {
                    self.release(&node.name).await;
                    return Outcome::Failed(e.to_string());
                }
            }
        }
        match self.k8s.live_node(&node.name).await {
            Ok(Some(live))
                if live.cordoned_by_kubescaler
                    && live.taints.iter().any(|t| t.key == FENCE_TAINT) => {}
            Ok(Some(live)) => {
                let why = if live.unschedulable {
                    "the node's cordon is no longer kubescaler's (a person cordoned it)"
                } else {
                    "the node was uncordoned"
                };
                return self.cancel(&node.name, why.to_string()).await;
            }
            Ok(None) => return Outcome::Cancelled("the node is gone from the cluster".into()),
            Err(e) => {
                self.release(&node.name).await;
                return Outcome::Failed(e.to_string());
            }
        }

        // 4. DELETE at once.
        match self.provider.delete_instance(&instance).await {
            Ok(()) => {
                self.accept(&node.name, now).await;
                Outcome::Deleted
            }
            Err(e) => {
                self.release(&node.name).await;
                Outcome::Failed(e.to_string())
            }
        }
    }

    /// Lifts the fence and reports the cancellation.
    async fn cancel(&self, node: &str, why: String) -> Outcome {
        self.release(node).await;
        Outcome::Cancelled(why)
    }

    async fn release(&self, node: &str) {
        if let Err(e) = self.k8s.mark(node, MarkOp::Release).await {
            warn!(node, error = %e, "cannot lift the deletion fence; the next pass retries");
        }
    }

    /// Records in the cluster that the deletion was accepted; the node may be gone already.
    async fn accept(&self, node: &str, now: Timestamp) {
        if let Err(e) = self.k8s.mark(node, MarkOp::AcceptDeletion(now)).await {
            warn!(node, error = %e, "cannot record the accepted deletion on the node");
        }
    }

    async fn publish(&self, reason: EventReason, node: &str, message: String) {
        publish(&*self.k8s, reason, Some(node), message).await;
    }
}

/// Records an Event; a failure is logged and never fails the pass.
pub async fn publish(
    k8s: &dyn Kubernetes,
    reason: EventReason,
    node: Option<&str>,
    message: String,
) {
    let event = ActionEvent {
        reason,
        node: node.map(str::to_string),
        message,
    };
    if let Err(e) = k8s.publish_event(&event).await {
        warn!(error = %e, reason = reason.as_str(), "cannot record event");
    }
}

#[cfg(test)]
mod tests {
    //! Compaction's own rules, with mocked sides: only a node kubescaler still holds cordoned,
    //! at most `agones-compaction-per-minute` deletions a minute, one `Compact` Event per node,
    //! an allocation that wins the race keeps its GameServer.
    use super::*;
    use crate::agones::GameServerState;
    use crate::kubernetes::MockKubernetes;
    use crate::model::NodeState;
    use crate::provider::MockNodePoolProvider;
    use std::sync::Mutex;

    /// What a mocked side recorded.
    type Log<T> = Arc<Mutex<Vec<T>>>;

    /// Node `name`, cordoned by kubescaler an hour ago if `ours`, else schedulable.
    fn node(name: &str, ours: bool) -> NodeState {
        crate::scaler::tests::node(name, true, ours.then_some(3600))
    }

    fn ready(node: &str, n: usize) -> Vec<GameServerInfo> {
        (0..n)
            .map(|i| GameServerInfo {
                key: format!("games/{node}-{i}"),
                node: Some(node.into()),
                state: GameServerState::Ready,
                resource_version: Some(format!("{}", 100 + i)),
                being_deleted: false,
                fleet: Some("arena".into()),
            })
            .collect()
    }

    /// An actuator whose cluster holds `live` as node `n1`, answers each GameServer delete
    /// with `answer(key)`, and records every delete and Event.
    fn actuator(
        live: Option<NodeState>,
        per_minute: u32,
        answer: fn(&str) -> GameServerDelete,
    ) -> (Actuator, Log<String>, Log<ActionEvent>) {
        let deleted = Arc::new(Mutex::new(Vec::new()));
        let events = Arc::new(Mutex::new(Vec::new()));
        let mut k8s = MockKubernetes::new();
        k8s.expect_live_node().returning(move |_| Ok(live.clone()));
        let log = Arc::clone(&deleted);
        k8s.expect_delete_game_server().returning(move |gs| {
            log.lock()
                .unwrap_or_else(|e| e.into_inner())
                .push(gs.key.clone());
            Ok(answer(&gs.key))
        });
        let seen = Arc::clone(&events);
        k8s.expect_publish_event().returning(move |e| {
            seen.lock()
                .unwrap_or_else(|p| p.into_inner())
                .push(e.clone());
            Ok(())
        });
        let telemetry = Arc::new(Telemetry::new(std::time::Duration::from_secs(10)));
        let a = Actuator::new(
            Arc::new(k8s),
            Arc::new(MockNodePoolProvider::new()),
            telemetry,
        )
        .with_agones(per_minute);
        (a, deleted, events)
    }

    fn at(secs: i64) -> Timestamp {
        Timestamp::from_second(1_735_689_600 + secs).unwrap_or(Timestamp::UNIX_EPOCH)
    }

    #[tokio::test]
    async fn compaction_records_one_compact_event_per_node_naming_what_it_deleted() {
        let (mut a, deleted, events) =
            actuator(Some(node("n1", true)), 30, |_| GameServerDelete::Deleted);
        let done = a.compact("n1", &ready("n1", 3), at(0)).await;
        assert_eq!(done.deleted, 3);
        assert_eq!(deleted.lock().unwrap_or_else(|e| e.into_inner()).len(), 3);
        let events = events.lock().unwrap_or_else(|e| e.into_inner());
        assert_eq!(events.len(), 1, "{events:?}");
        assert_eq!(events[0].reason, EventReason::Compact);
        assert_eq!(events[0].node.as_deref(), Some("n1"));
        assert!(
            events[0].message.contains("deleted 3 Ready GameServers"),
            "{:?}",
            events[0]
        );
    }

    #[tokio::test]
    async fn compaction_deletes_at_most_agones_compaction_per_minute_and_defers_the_rest() {
        let (mut a, deleted, _) =
            actuator(Some(node("n1", true)), 2, |_| GameServerDelete::Deleted);
        let first = a.compact("n1", &ready("n1", 5), at(0)).await;
        assert_eq!((first.deleted, first.deferred), (2, 3));
        // 15 s later half a minute's worth has not come back: nothing more.
        let soon = a.compact("n1", &ready("n1", 3), at(15)).await;
        assert_eq!((soon.deleted, soon.deferred), (0, 3));
        // Half a minute after the start, 2 a minute has earned one more.
        let later = a.compact("n1", &ready("n1", 3), at(30)).await;
        assert_eq!((later.deleted, later.deferred), (1, 2));
        assert_eq!(deleted.lock().unwrap_or_else(|e| e.into_inner()).len(), 3);
    }

    #[tokio::test]
    async fn an_allocation_that_wins_the_race_keeps_its_game_server_and_is_reported() {
        let (mut a, _, events) = actuator(Some(node("n1", true)), 30, |key| {
            if key.ends_with("-1") {
                GameServerDelete::Conflict
            } else {
                GameServerDelete::Deleted
            }
        });
        let done = a.compact("n1", &ready("n1", 3), at(0)).await;
        assert_eq!((done.deleted, done.conflicts), (2, 1));
        let events = events.lock().unwrap_or_else(|e| e.into_inner());
        assert!(
            events[0].message.contains("1 allocated meanwhile and kept"),
            "{events:?}"
        );
    }

    #[tokio::test]
    async fn no_game_server_is_compacted_on_a_node_no_longer_cordoned_by_kubescaler() {
        for live in [Some(node("n1", false)), None] {
            let (mut a, deleted, events) =
                actuator(live.clone(), 30, |_| GameServerDelete::Deleted);
            let done = a.compact("n1", &ready("n1", 2), at(0)).await;
            assert!(done.skipped.is_some(), "{live:?}: {done:?}");
            assert!(deleted.lock().unwrap_or_else(|e| e.into_inner()).is_empty());
            assert!(events.lock().unwrap_or_else(|e| e.into_inner()).is_empty());
        }
    }
}
