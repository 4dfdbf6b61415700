//! The imperative shell: reconciles on a tick and on change events, one pass at a time, runs
//! the planner and carries out its plan through the two traits.

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use jiff::Timestamp;
use tokio::sync::broadcast::error::RecvError;
use tokio::time::Instant;
use tracing::{debug, error, info, info_span, warn, Instrument};

use crate::actuator::{Actuator, Outcome};
use crate::buffer::DemandTracker;
use crate::config::Config;
use crate::kubernetes::{EventReason, KubeError, Kubernetes, MarkOp, MarkOutcome};
use crate::model::{CloudPool, CloudView, ClusterSnapshot};
use crate::planner::{self, Action, HeldSurplus, Observed, Plan, PlannerConfig};
use crate::provider::{NodePoolProvider, NodeRef, ProviderError};
use crate::telemetry::Telemetry;

/// How long a burst of change events is gathered into one reconcile.
pub const DEBOUNCE: Duration = Duration::from_millis(500);
/// How long an in-flight pass may finish after a shutdown signal before it is abandoned.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);
/// First retry delay after a failed pass; doubles per failure.
const BACKOFF_START: Duration = Duration::from_millis(500);
/// Longest retry delay.
const BACKOFF_MAX: Duration = Duration::from_secs(120);

/// Errors of one reconcile pass.
#[derive(Debug, thiserror::Error)]
pub enum ScaleError {
    /// Reading or writing the cluster failed.
    #[error(transparent)]
    Kube(#[from] KubeError),
    /// The cloud provider failed.
    #[error(transparent)]
    Provider(#[from] ProviderError),
}

/// Errors that stop the daemon.
#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    /// The cloud provider could not be built.
    #[error("cannot start cloud provider {name:?}: {source}")]
    Provider {
        /// Provider name.
        name: String,
        /// Cause.
        #[source]
        source: ProviderError,
    },
    /// `cloud-provider` names no registered provider (validation normally catches this).
    #[error("cloud-provider {0:?} is not registered")]
    UnknownProvider(String),
    /// The Kubernetes client could not be built.
    #[error(transparent)]
    Kube(#[from] KubeError),
    /// The runtime could not install a signal handler.
    #[error("cannot install signal handler: {0}")]
    Signal(#[source] std::io::Error),
    /// The health and metrics listener could not bind its address.
    #[error("cannot listen on http-listen-address {addr}: {source}")]
    Listen {
        /// The address.
        addr: std::net::SocketAddr,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// Leader election failed to start.
    #[error(transparent)]
    Leader(#[from] crate::leader::LeaderError),
    /// `explain`'s pass failed (the caches did not sync, the cloud did not answer...).
    #[error("explain: {0}")]
    Explain(String),
}

/// What one pass did.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct PassReport {
    /// The plan that was computed.
    pub plan: Plan,
    /// Actions carried out (in dry-run: none).
    pub executed: usize,
    /// Deletions called off by the live re-check (a server pod, or the node no longer
    /// kubescaler's).
    pub cancelled_deletions: Vec<String>,
    /// Deletions that failed this pass (each node is held back for a while).
    pub failed_deletions: Vec<String>,
    /// Cloud reads this pass made.
    pub cloud_reads: u32,
    /// Agones mode: Ready GameServers compaction deleted this pass.
    pub compacted: u32,
}

/// How often the cloud pool is read when nothing asks for it sooner: outside changes (a
/// resize in the cloud console) are noticed within this, at one request per period.
pub const CLOUD_REFRESH: Duration = Duration::from_secs(60);

/// The cloud pool as last read.
struct CachedPool {
    pool: CloudPool,
    /// When it was read (the loop's clock).
    read_at: Timestamp,
    /// The registered pool nodes then: a node joining or leaving is a cloud-related change.
    nodes: BTreeSet<String>,
}

/// The scale loop.
pub struct Scaler {
    k8s: Arc<dyn Kubernetes>,
    provider: Arc<dyn NodePoolProvider>,
    planner: PlannerConfig,
    tick: Duration,
    dry_run: bool,
    /// Carries out deletions.
    actuator: Actuator,
    /// The cloud pool, read when a decision needs it (see [`Scaler::reconcile`]).
    cloud: Option<CachedPool>,
    /// Nodes already reported as outside the cloud pool (one Event each).
    reported_outside: BTreeSet<String>,
    /// Wall clock for plans and marks; replaceable so a simulation can run on its own time.
    clock: Clock,
    /// Where passes, actions and errors are reported.
    telemetry: Arc<Telemetry>,
    /// Arrivals, departures and grow lead times, measured from the snapshots.
    demand: DemandTracker,
    /// The last plan's [`PoolSummary::surplus`]: a surplus must hold across passes.
    /// Lost on a restart, which only delays a cordon.
    surplus: Option<HeldSurplus>,
    /// The last plan's [`PoolSummary::ln_ease`]: the target policy's calibration. Lost on a
    /// restart, which returns to the model as it is.
    ln_ease: f64,
}

/// Window of the arrival and departure rates: long enough to smooth a minute's noise, short
/// enough to follow an evening's climb.
const DEMAND_WINDOW_SEC: u64 = 600;
/// Grow lead times kept; the buffer uses their 90th percentile.
const LEAD_TIMES_KEPT: usize = 20;
/// Percentile of the recent lead times the buffer covers.
const LEAD_QUANTILE: f64 = 0.9;

/// Seconds since the Unix epoch, as the demand tracker counts.
fn unix_secs(t: Timestamp) -> f64 {
    t.as_millisecond() as f64 / 1000.0
}

/// A source of the current time.
pub type Clock = Arc<dyn Fn() -> Timestamp + Send + Sync>;

impl Scaler {
    /// A loop over these two sides with the settings in `config`.
    pub fn new(
        k8s: Arc<dyn Kubernetes>,
        provider: Arc<dyn NodePoolProvider>,
        config: &Config,
    ) -> Self {
        let tick = Duration::from_secs(config.scale_loop_tick_sec.max(1));
        let telemetry = Arc::new(Telemetry::new(tick));
        Scaler {
            actuator: {
                let actuator = Actuator::new(
                    Arc::clone(&k8s),
                    Arc::clone(&provider),
                    Arc::clone(&telemetry),
                );
                match config.server_source {
                    crate::model::ServerSource::Pods => actuator,
                    crate::model::ServerSource::Agones => {
                        actuator.with_agones(config.agones.compaction_per_minute)
                    }
                }
            },
            k8s,
            provider,
            planner: PlannerConfig::from(config),
            tick,
            dry_run: config.dry_run,
            cloud: None,
            reported_outside: BTreeSet::new(),
            clock: Arc::new(Timestamp::now),
            telemetry,
            demand: DemandTracker::new(DEMAND_WINDOW_SEC, LEAD_TIMES_KEPT),
            surplus: None,
            ln_ease: 0.0,
        }
    }

    /// Reports into `telemetry` (shared with the HTTP listener).
    pub fn with_telemetry(mut self, telemetry: Arc<Telemetry>) -> Self {
        self.actuator.set_telemetry(Arc::clone(&telemetry));
        self.telemetry = telemetry;
        self
    }

    /// Uses `clock` instead of the system time (simulations).
    pub fn with_clock(mut self, clock: Clock) -> Self {
        self.clock = clock;
        self
    }

    /// Whether the cached pool may serve this pass: read within [`CLOUD_REFRESH`] and with
    /// the same registered nodes.
    fn cloud_current(&self, nodes: &BTreeSet<String>, now: Timestamp) -> bool {
        self.cloud.as_ref().is_some_and(|c| {
            let age = now.duration_since(c.read_at);
            !age.is_negative() && age.unsigned_abs() < CLOUD_REFRESH && c.nodes == *nodes
        })
    }

    async fn read_cloud(
        &mut self,
        nodes: BTreeSet<String>,
        now: Timestamp,
        report: &mut PassReport,
    ) -> Result<(), ScaleError> {
        let pool = self.provider.pool().await?;
        report.cloud_reads += 1;
        self.telemetry.provider_resolved();
        debug!(
            target = pool.target,
            instances = pool.nodes.len(),
            "read the cloud pool"
        );
        self.cloud = Some(CachedPool {
            pool,
            read_at: now,
            nodes,
        });
        Ok(())
    }

    /// The cloud pool matched against the registered nodes.
    fn cloud_view(&self, snapshot: &ClusterSnapshot) -> CloudView {
        let Some(pool) = self.cloud.as_ref().map(|c| &c.pool) else {
            return CloudView::default();
        };
        let mut members = BTreeMap::new();
        let mut matched = BTreeSet::new();
        for node in &snapshot.nodes {
            let node_ref = NodeRef {
                name: node.name.clone(),
                provider_id: node.provider_id.clone(),
                labels: node.labels.clone(),
                identity_annotations: node.identity_annotations.clone(),
            };
            match self.provider.find(&node_ref, pool) {
                Ok(Some(instance)) => {
                    matched.insert(instance.id.clone());
                    members.insert(node.name.clone(), instance.status);
                }
                Ok(None) => {}
                // Contradicting identifiers: treated as not in the pool, and said so.
                Err(e) => {
                    warn!(node = %node.name, error = %e, "cannot match the node to the cloud pool")
                }
            }
        }
        CloudView {
            target: pool.target,
            members,
            unregistered: pool
                .nodes
                .iter()
                .filter(|n| !matched.contains(&n.id))
                .cloned()
                .collect(),
            template: pool.template,
        }
    }

    /// What the planner is told of the loop's measurements and memory.
    fn observed(&self, now: Timestamp) -> Observed {
        let at = unix_secs(now);
        Observed {
            arrivals_per_sec: self.demand.arrivals_per_sec(at),
            departures_per_sec: self.demand.departures.per_sec(at),
            evidence: self.demand.evidence(at),
            lead_sec: self.demand.lead.quantile(LEAD_QUANTILE),
            surplus: self.surplus,
            starts: self.demand.starts,
            ln_ease: self.ln_ease,
            instant_share: self.demand.instant_share(at),
        }
    }

    fn plan(&self, snapshot: &ClusterSnapshot, now: Timestamp) -> Plan {
        planner::plan_with(
            snapshot,
            &self.cloud_view(snapshot),
            &self.actuator.held_back(now),
            &self.observed(now),
            now,
            &self.planner,
        )
    }

    /// One reconcile: snapshot, plan, act.
    ///
    /// The cloud pool is read only when a decision needs it: when the cached read is older
    /// than [`CLOUD_REFRESH`], when a node joined or left, after kubescaler changed the pool,
    /// and before any change to the pool (a plan from a cached read that would grow or delete
    /// is computed again from a fresh read). An idle pool costs one cloud read a minute,
    /// whatever the tick.
    ///
    /// A failed deletion does not stop the pass: the other actions go ahead.
    pub async fn reconcile(&mut self) -> Result<PassReport, ScaleError> {
        let snapshot = self.k8s.snapshot().await?;
        let now = (self.clock)();
        let nodes: BTreeSet<String> = snapshot.nodes.iter().map(|n| n.name.clone()).collect();
        let mut report = PassReport::default();
        let mut fresh = false;
        if !self.cloud_current(&nodes, now) {
            self.read_cloud(nodes.clone(), now, &mut report).await?;
            fresh = true;
        }
        self.demand.observe(&snapshot, unix_secs(now));
        let mut plan = self.plan(&snapshot, now);
        if !fresh && !self.dry_run && plan.changes_cloud() {
            self.read_cloud(nodes, now, &mut report).await?;
            plan = self.plan(&snapshot, now);
        }
        self.surplus = plan.summary.surplus;
        self.ln_ease = plan.summary.ln_ease;
        self.telemetry.observe_pool(&plan.summary);
        self.telemetry.record_plan(&plan, now);
        self.telemetry.observe_demand(&self.observed(now));

        let s = &plan.summary;
        info!(
            target = s.target_size,
            nodes = s.registered_nodes,
            active = s.active_nodes,
            provisioning = s.provisioning_nodes,
            booting = s.booting_nodes,
            cordoned_by_kubescaler = s.cordoned_by_kubescaler,
            cordoned_by_others = s.cordoned_by_others,
            deleting = s.deleting_nodes,
            outside_pool = s.outside_pool_nodes,
            stuck_instances = s.stuck_instances,
            free_slots = s.free_slots,
            incoming_slots = s.incoming_slots,
            pending_servers = s.pending_servers,
            ready_game_servers = s.ready_game_servers,
            starting_game_servers = s.starting_game_servers,
            pending_game_servers = s.pending_game_servers,
            available = s.available_slots,
            buffer = s.buffer,
            actions = plan.actions.len(),
            "planned"
        );
        for w in &plan.warnings {
            warn!(warning = %w, "planner warning");
        }
        self.report_outside_pool(&plan.outside_pool).await;

        report.plan = plan.clone();
        for action in &plan.actions {
            let kind = action.kind().as_str();
            let node = action.node().unwrap_or("");
            info!(
                action = kind,
                node,
                reason = action.reason(),
                dry_run = self.dry_run,
                "action"
            );
            if self.dry_run {
                continue;
            }
            let event = match action {
                Action::DeleteInstance { instance, .. } => {
                    let outcome = self.actuator.delete_unregistered(instance, now).await;
                    self.cloud = None;
                    if outcome != Outcome::Deleted {
                        continue;
                    }
                    report.executed += 1;
                    let message = action.to_string();
                    self.publish(EventReason::PoolMismatch, action.node(), message)
                        .await;
                    continue;
                }
                Action::Compact {
                    node, game_servers, ..
                } => {
                    let done = self.actuator.compact(node, game_servers, now).await;
                    report.compacted += done.deleted;
                    if done.deleted > 0 {
                        report.executed += 1;
                    }
                    continue;
                }
                Action::Uncordon { node, .. } => {
                    if !self.marked(node, MarkOp::Uncordon).await? {
                        continue;
                    }
                    EventReason::Uncordon
                }
                Action::ClearMarks { node, .. } => {
                    if !self.marked(node, MarkOp::ClearStale).await? {
                        continue;
                    }
                    EventReason::ClearMarks
                }
                Action::Grow { from, to, .. } => {
                    self.cloud = None;
                    self.provider.grow_to(*to).await?;
                    self.demand.grew(to.saturating_sub(*from), unix_secs(now));
                    EventReason::ScaleUp
                }
                Action::Cordon { node, .. } => {
                    if !self.marked(node, MarkOp::Cordon(now)).await? {
                        continue;
                    }
                    EventReason::Cordon
                }
                Action::Delete { node, reason } => {
                    let pool = match &self.cloud {
                        Some(c) => c.pool.clone(),
                        None => {
                            // A grow this pass dropped the read: read again before deleting.
                            let names = snapshot.nodes.iter().map(|n| n.name.clone()).collect();
                            self.read_cloud(names, now, &mut report).await?;
                            self.cloud
                                .as_ref()
                                .map(|c| c.pool.clone())
                                .unwrap_or_default()
                        }
                    };
                    match self.actuator.delete_node(node, &pool, reason, now).await {
                        Outcome::Deleted => {
                            self.cloud = None;
                            report.executed += 1;
                        }
                        Outcome::Cancelled(_) => report.cancelled_deletions.push(node.name.clone()),
                        Outcome::Failed(_) => report.failed_deletions.push(node.name.clone()),
                        Outcome::AlreadyGoing | Outcome::HeldBack => {}
                    }
                    // The actuator reports its own outcome.
                    continue;
                }
            };
            self.telemetry.action_done(action.kind());
            let message = action.to_string();
            self.publish(event, action.node(), message).await;
            report.executed += 1;
        }
        Ok(report)
    }

    /// One read-only pass: the cluster and the cloud pool read, the plan made, nothing done
    /// (no action, no Event, no metric): what `kubescaler explain` prints.
    pub async fn explain(&mut self) -> Result<Plan, ScaleError> {
        let snapshot = self.k8s.snapshot().await?;
        let now = (self.clock)();
        let nodes: BTreeSet<String> = snapshot.nodes.iter().map(|n| n.name.clone()).collect();
        let mut report = PassReport::default();
        self.read_cloud(nodes, now, &mut report).await?;
        self.demand.observe(&snapshot, unix_secs(now));
        Ok(self.plan(&snapshot, now))
    }

    /// Applies a mark change; `false` when the live node did not allow it (logged).
    async fn marked(&self, node: &str, op: MarkOp) -> Result<bool, ScaleError> {
        match self.k8s.mark(node, op).await? {
            MarkOutcome::Applied(_) => Ok(true),
            MarkOutcome::Refused(_, why) => {
                info!(node, op = op.as_str(), why = %why, "not done: the live node does not allow it");
                Ok(false)
            }
            MarkOutcome::Gone => {
                info!(node, op = op.as_str(), "not done: the node is gone");
                Ok(false)
            }
        }
    }

    /// One warning Event per node found outside the cloud pool.
    async fn report_outside_pool(&mut self, outside: &[String]) {
        for node in outside {
            if self.reported_outside.insert(node.clone()) {
                let message = format!(
                    "node {node} matches node-selector but is not in the cloud pool: kubescaler ignores it (check node-selector and node-pool-name)"
                );
                self.publish(EventReason::PoolMismatch, Some(node), message)
                    .await;
            }
        }
        self.reported_outside.retain(|n| outside.contains(n));
    }

    /// Records an Event; a failure is logged and never fails the pass.
    async fn publish(&self, reason: EventReason, node: Option<&str>, message: String) {
        crate::actuator::publish(&*self.k8s, reason, node, message).await;
    }

    /// Runs until `shutdown` completes: a pass at start, then on every tick and after every
    /// burst of change events; failed passes are retried with exponential backoff.
    pub async fn run(mut self, shutdown: impl Future<Output = ()>) {
        tokio::pin!(shutdown);
        let mut changes = Some(self.k8s.changes());
        let mut failures: u32 = 0;
        let mut next = Instant::now();
        let mut pass: u64 = 0;

        loop {
            tokio::select! {
                biased;
                _ = &mut shutdown => break,
                _ = tokio::time::sleep_until(next) => {}
                event = recv(&mut changes), if changes.is_some() && failures == 0 => {
                    match event {
                        Some(event) => debug!(?event, "change"),
                        None => {
                            warn!("change events closed; reconciling on the tick only");
                            changes = None;
                            continue;
                        }
                    }
                    // Gather the burst, then drain what queued up meanwhile.
                    tokio::select! {
                        _ = &mut shutdown => break,
                        _ = tokio::time::sleep(DEBOUNCE) => {}
                    }
                    if let Some(rx) = changes.as_mut() {
                        while !matches!(rx.try_recv(), Err(tokio::sync::broadcast::error::TryRecvError::Empty | tokio::sync::broadcast::error::TryRecvError::Closed)) {}
                    }
                }
            }

            pass += 1;
            let span = info_span!("reconcile", pass, dry_run = self.dry_run);
            let tick = self.tick;
            let started = Instant::now();
            let telemetry = Arc::clone(&self.telemetry);
            let result = {
                let fut = self.reconcile().instrument(span.clone());
                tokio::pin!(fut);
                tokio::select! {
                    r = &mut fut => Some(r),
                    _ = &mut shutdown => {
                        info!("shutdown requested: letting the pass finish for up to {SHUTDOWN_GRACE:?}");
                        match tokio::time::timeout(SHUTDOWN_GRACE, fut).await {
                            Ok(r) => { log_result(&r, &span); }
                            Err(_) => warn!("shutdown: in-flight pass abandoned"),
                        }
                        None
                    }
                }
            };
            let Some(result) = result else { break };
            log_result(&result, &span);
            telemetry.pass_finished(result.as_ref().err(), started.elapsed());
            let not_synced = matches!(result, Err(ScaleError::Kube(KubeError::NotSynced(_))));
            if result.is_ok() || not_synced {
                // Not synced is no failure: the Resynced event starts the next pass as soon as
                // the caches are complete.
                failures = 0;
                next = Instant::now().checked_add(tick).unwrap_or_else(far_future);
            } else {
                failures = failures.saturating_add(1);
                let delay = backoff(failures, tick);
                span.in_scope(|| warn!(failures, retry_in = ?delay, "pass failed; retrying"));
                next = Instant::now().checked_add(delay).unwrap_or_else(far_future);
            }
        }
        info!("scale loop stopped");
    }
}

fn log_result(result: &Result<PassReport, ScaleError>, span: &tracing::Span) {
    span.in_scope(|| match result {
        Ok(r) => debug!(
            executed = r.executed,
            cancelled = r.cancelled_deletions.len(),
            "pass done"
        ),
        // Expected at start and after a watch desync: not worth an error line.
        Err(ScaleError::Kube(KubeError::NotSynced(why))) => {
            info!(waiting_for = %why, "caches not synced yet; no action taken")
        }
        Err(e) => error!(error = %e, "pass failed"),
    });
}

/// Delay before retry number `failures` (1-based). Capped at two ticks so that a failing
/// loop still makes an honest attempt within the three ticks liveness allows.
fn backoff(failures: u32, tick: Duration) -> Duration {
    let factor = 2u32.saturating_pow(failures.saturating_sub(1).min(16));
    BACKOFF_START
        .saturating_mul(factor)
        .min(BACKOFF_MAX)
        .min(tick.saturating_mul(2).max(BACKOFF_START))
}

/// A deadline past any run (30 years, tokio's own "never") for a wait too long to add to now.
fn far_future() -> Instant {
    Instant::now() + Duration::from_secs(30 * 365 * 86_400)
}

/// Next change event; a lagged receiver still means "something changed". `None`: closed.
async fn recv(
    rx: &mut Option<tokio::sync::broadcast::Receiver<crate::kubernetes::ChangeEvent>>,
) -> Option<crate::kubernetes::ChangeEvent> {
    let rx = rx.as_mut()?;
    match rx.recv().await {
        Ok(e) => Some(e),
        Err(RecvError::Lagged(_)) => Some(crate::kubernetes::ChangeEvent::Resynced),
        Err(RecvError::Closed) => None,
    }
}

/// Resolves when SIGTERM or SIGINT arrives.
pub async fn shutdown_signal() -> Result<impl Future<Output = ()>, std::io::Error> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    Ok(async move {
        tokio::select! {
            _ = term.recv() => info!(signal = "SIGTERM", "shutting down"),
            _ = int.recv() => info!(signal = "SIGINT", "shutting down"),
        }
    })
}

/// The cloud provider `config` names, built from its settings.
fn build_provider(config: &Config) -> Result<Arc<dyn NodePoolProvider>, DaemonError> {
    let spec = crate::provider::lookup(&config.cloud_provider)
        .ok_or_else(|| DaemonError::UnknownProvider(config.cloud_provider.clone()))?;
    let provider = (spec.build)(config).map_err(|source| DaemonError::Provider {
        name: config.cloud_provider.clone(),
        source,
    })?;
    Ok(Arc::from(provider))
}

/// Runs the daemon: builds the cloud provider and the Kubernetes side from `config`, serves
/// health and metrics, and runs the scale loop (only while leader, with leader election on)
/// until SIGTERM/SIGINT.
pub async fn run_daemon(config: Config) -> Result<(), DaemonError> {
    let provider = build_provider(&config)?;
    let cluster = crate::kubernetes::KubeCluster::connect(&config).await?;
    let client = cluster.client();
    let k8s: Arc<dyn Kubernetes> = Arc::new(cluster);
    let tick = Duration::from_secs(config.scale_loop_tick_sec.max(1));
    let telemetry = Arc::new(Telemetry::new(tick));

    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let signal = shutdown_signal().await.map_err(DaemonError::Signal)?;
    tokio::spawn(async move {
        signal.await;
        let _ = stop_tx.send(true);
    });

    let addr = config.http_listen_address;
    let listener = crate::http::bind(addr)
        .await
        .map_err(|source| DaemonError::Listen { addr, source })?;
    let http_state = crate::http::HttpState {
        telemetry: Arc::clone(&telemetry),
        k8s: Arc::clone(&k8s),
    };
    let http = tokio::spawn(crate::http::serve(
        listener,
        http_state,
        stopped(stop_rx.clone()),
    ));
    // Every replica, standby too, resolves the provider before anything else, so that a
    // misconfigured pool stops the process and readiness means "could act".
    match resolve_provider(&provider, &telemetry, stop_rx.clone()).await {
        Ok(true) => {}
        Ok(false) => {
            info!("stopped before the cloud provider answered");
            return Ok(());
        }
        Err(source) => {
            return Err(DaemonError::Provider {
                name: config.cloud_provider.clone(),
                source,
            })
        }
    }

    info!(
        provider = %config.cloud_provider,
        cluster = %config.cluster_name,
        pool = %config.node_pool_name,
        listen = %addr,
        leader_election = config.leader_election,
        dry_run = config.dry_run,
        "kubescaler starting"
    );
    let act = |stop: tokio::sync::watch::Receiver<bool>| {
        let scaler = Scaler::new(Arc::clone(&k8s), Arc::clone(&provider), &config)
            .with_telemetry(Arc::clone(&telemetry));
        scaler.run(stopped(stop))
    };
    if config.leader_election {
        crate::leader::run_as_leader(client, &config, Arc::clone(&telemetry), stop_rx, act).await?;
    } else {
        telemetry.set_leader(true);
        act(stop_rx).await;
    }
    if let Ok(Err(e)) = http.await {
        warn!(error = %e, "health and metrics listener failed");
    }
    info!("kubescaler stopped");
    Ok(())
}

/// How long `explain` waits for the watch caches to fill.
const EXPLAIN_SYNC_TIMEOUT: Duration = Duration::from_secs(60);

/// `kubescaler explain`: one read-only pass against the configured cluster and cloud (no
/// write, no Event, no leader election), returning the plan with every node explained.
pub async fn explain_once(config: Config) -> Result<Plan, DaemonError> {
    let provider = build_provider(&config)?;
    let cluster = crate::kubernetes::KubeCluster::connect(&config).await?;
    let started = tokio::time::Instant::now();
    while !cluster.synced() {
        if started.elapsed() > EXPLAIN_SYNC_TIMEOUT {
            return Err(DaemonError::Explain(format!(
                "the cluster's watch caches did not sync within {EXPLAIN_SYNC_TIMEOUT:?}"
            )));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let k8s: Arc<dyn Kubernetes> = Arc::new(cluster);
    let mut config = config;
    config.dry_run = true;
    let mut scaler = Scaler::new(k8s, provider, &config);
    scaler
        .explain()
        .await
        .map_err(|e| DaemonError::Explain(e.to_string()))
}

/// Completes when `stop` flips to true (or its sender is gone).
async fn stopped(mut stop: tokio::sync::watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}

/// Asks the provider for the pool until it answers, then marks it resolved: `Ok(true)`.
/// `Ok(false)` if shutdown came first. A refusal or a configuration error (a pool managed by
/// the cloud's own autoscaler, a cluster or pool name that does not exist) is final: `Err`.
/// Anything else (the API down, rate limits) is retried with backoff.
async fn resolve_provider(
    provider: &Arc<dyn NodePoolProvider>,
    telemetry: &Telemetry,
    stop: tokio::sync::watch::Receiver<bool>,
) -> Result<bool, ProviderError> {
    let mut failures = 0;
    loop {
        match provider.target_size().await {
            Ok(size) => {
                info!(target = size, "cloud provider resolved the pool");
                telemetry.provider_resolved();
                return Ok(true);
            }
            Err(e @ (ProviderError::Refused { .. } | ProviderError::Config { .. })) => {
                return Err(e)
            }
            Err(e) => {
                failures += 1;
                let delay = backoff(failures, BACKOFF_MAX);
                warn!(error = %e, retry_in = ?delay, "cloud provider not reachable yet");
                tokio::select! {
                    _ = stopped(stop.clone()) => return Ok(false),
                    _ = tokio::time::sleep(delay) => {}
                }
            }
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::kubernetes::{ChangeEvent, MockKubernetes};
    use crate::model::{CloudNode, InstanceStatus, NodeState, PodState, Resources};
    use crate::provider::MockNodePoolProvider;
    use mockall::Sequence;
    use std::collections::BTreeMap;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use tokio::sync::broadcast;

    fn config(dry_run: bool) -> Config {
        Config {
            cloud_provider: "digitalocean".into(),
            cloud_provider_token: None,
            cloud_provider_token_file: None,
            cluster_name: "c".into(),
            node_pool_name: "p".into(),
            provider_settings: BTreeMap::new(),
            node_selector: "role=game".into(),
            cluster_kube_config_master_url: None,
            cluster_kube_config_path: None,
            minimum_node_pool_size: 1,
            maximum_node_pool_size: 10,
            server_pod_label_name: "app".into(),
            server_pod_label_value: "game".into(),
            buffer_slot_size: 4,
            buffer_policy: crate::buffer::BufferPolicy::Fixed,
            target_instant_start: 0.99,
            scale_loop_tick_sec: 10,
            server_cpu_resource_request: 1000,
            server_memory_resource_request: None,
            server_pod_tolerations: vec![],
            server_source: crate::model::ServerSource::Pods,
            agones: crate::agones::AgonesSettings::default(),
            scale_down_delay_after_add_sec: 0,
            scale_down_unneeded_sec: 0,
            buffer_schedule: Default::default(),
            empty_node_expiration_sec: 120,
            node_boot_timeout_sec: 600,
            expected_node_boot_sec: 180,
            dry_run,
            log_format: crate::config::LogFormat::Text,
            log_level: "info".into(),
            node_template: None,
            http_listen_address: ([127, 0, 0, 1], 0).into(),
            leader_election: false,
            leader_election_namespace: None,
            leader_election_lease_name: "kubescaler".into(),
            leader_election_lease_duration_sec: 15,
            leader_election_identity: None,
        }
    }

    /// A node fixture: `ours_since` seconds ago kubescaler cordoned it, if given.
    pub(crate) fn node(name: &str, ready: bool, ours_since: Option<i64>) -> NodeState {
        let now = Timestamp::now();
        NodeState {
            name: name.into(),
            provider_id: None,
            labels: BTreeMap::new(),
            identity_annotations: BTreeMap::new(),
            allocatable: Resources {
                cpu_millis: 4000,
                memory_bytes: 1 << 34,
            },
            allocatable_pods: 110,
            ready,
            unschedulable: ours_since.is_some(),
            taints: vec![],
            cordoned_by_kubescaler: ours_since.is_some(),
            has_kubescaler_marks: ours_since.is_some(),
            deletion_accepted: None,
            cordon_timestamp: ours_since
                .map(|s| (now - jiff::SignedDuration::from_secs(s)).to_string()),
            created: Some(now - jiff::SignedDuration::from_secs(7200)),
        }
    }

    fn servers(node: &str, n: usize) -> Vec<PodState> {
        (0..n)
            .map(|i| PodState {
                key: format!("g/{node}-{i}"),
                node: Some(node.into()),
                requests: Resources {
                    cpu_millis: 1000,
                    memory_bytes: 0,
                },
                is_server: true,
                is_daemon: false,
                game_server: None,
            })
            .collect()
    }

    /// a full, b cordoned by us with 3 servers (1 free), c ours, not ready, empty, expired:
    /// uncordon b, grow, delete c.
    fn busy_pool() -> ClusterSnapshot {
        let mut pods = servers("a", 4);
        pods.extend(servers("b", 3));
        ClusterSnapshot {
            nodes: vec![
                node("a", true, None),
                node("b", true, Some(30)),
                node("c", false, Some(3600)),
            ],
            pods,
            ..Default::default()
        }
    }

    fn kube_with(snapshot: ClusterSnapshot) -> (MockKubernetes, broadcast::Sender<ChangeEvent>) {
        let (tx, _) = broadcast::channel(64);
        let mut k = MockKubernetes::new();
        let sub = tx.clone();
        k.expect_changes().returning(move || sub.subscribe());
        k.expect_snapshot().returning(move || Ok(snapshot.clone()));
        k.expect_publish_event().returning(|_| Ok(()));
        (k, tx)
    }

    /// The cloud pool behind `snapshot`: one running instance per node (`test://<name>`),
    /// plus `extra` instances of the target still being created.
    fn cloud_of(snapshot: &ClusterSnapshot, extra: u32) -> CloudPool {
        let mut nodes: Vec<CloudNode> = snapshot
            .nodes
            .iter()
            .map(|n| instance(&n.name, InstanceStatus::Running))
            .collect();
        for i in 0..extra {
            nodes.push(instance(&format!("new-{i}"), InstanceStatus::Creating));
        }
        CloudPool {
            target: nodes.len() as u32,
            nodes,
            template: None,
        }
    }

    fn instance(name: &str, status: InstanceStatus) -> CloudNode {
        CloudNode {
            id: format!("id-{name}"),
            name: name.into(),
            status,
            state: format!("{status:?}"),
            provider_id: None,
            created: Some(Timestamp::now()),
        }
    }

    /// A provider mock whose pool is `pool` and whose `find` is the default matcher.
    fn provider_with(pool: CloudPool) -> MockNodePoolProvider {
        let mut p = MockNodePoolProvider::new();
        p.expect_pool().returning(move || Ok(pool.clone()));
        p.expect_find()
            .returning(|n, pool| Ok(crate::provider::find_by_provider_id_or_name(n, pool)));
        p
    }

    fn applied(node: &str) -> Result<MarkOutcome, KubeError> {
        Ok(MarkOutcome::Applied(live(node, true, true)))
    }

    /// A node as read live: cordoned by kubescaler and fenced, or not.
    fn live(node_name: &str, ours: bool, fenced: bool) -> NodeState {
        let mut n = node(node_name, true, ours.then_some(3600));
        if fenced {
            n.taints.push(crate::model::Taint {
                key: crate::model::FENCE_TAINT.into(),
                value: String::new(),
                effect: crate::model::TaintEffect::NoSchedule,
            });
        }
        n
    }

    fn is_op(op: &MarkOp, want: &str) -> bool {
        op.as_str() == want
    }

    fn scaler(k: MockKubernetes, p: MockNodePoolProvider, dry_run: bool) -> Scaler {
        Scaler::new(Arc::new(k), Arc::new(p), &config(dry_run))
    }

    #[tokio::test]
    async fn deletion_runs_resolve_fence_recheck_then_delete_in_that_order() {
        let mut seq = Sequence::new();
        let snapshot = busy_pool();
        let (mut k, _tx) = kube_with(snapshot.clone());
        let mut p = MockNodePoolProvider::new();
        let pool = cloud_of(&snapshot, 0);
        p.expect_pool().returning(move || Ok(pool.clone()));
        p.expect_find()
            .returning(|n, pool| Ok(crate::provider::find_by_provider_id_or_name(n, pool)));
        k.expect_mark()
            .withf(|n, op| n == "b" && is_op(op, "uncordon"))
            .times(1)
            .in_sequence(&mut seq)
            .returning(|n, _| applied(n));
        p.expect_grow_to()
            .withf(|t| *t == 4)
            .times(1)
            .in_sequence(&mut seq)
            .returning(|_| Ok(()));
        k.expect_mark()
            .withf(|n, op| n == "c" && is_op(op, "fence"))
            .times(1)
            .in_sequence(&mut seq)
            .returning(|n, _| applied(n));
        k.expect_live_server_pods()
            .withf(|n| n == "c")
            .times(1)
            .in_sequence(&mut seq)
            .returning(|_| Ok(vec![]));
        k.expect_live_node()
            .withf(|n| n == "c")
            .times(1)
            .in_sequence(&mut seq)
            .returning(|n| Ok(Some(live(n, true, true))));
        p.expect_delete_instance()
            .withf(|i| i.name == "c")
            .times(1)
            .in_sequence(&mut seq)
            .returning(|_| Ok(()));
        k.expect_mark()
            .withf(|n, op| n == "c" && is_op(op, "accept-deletion"))
            .times(1)
            .in_sequence(&mut seq)
            .returning(|n, _| applied(n));
        let report = scaler(k, p, false)
            .reconcile()
            .await
            .expect("pass succeeds");
        assert_eq!(report.executed, 3);
    }

    #[tokio::test]
    async fn surplus_is_cordoned_before_expired_nodes_are_deleted() {
        // 11 free slots, buffer 4: one whole node (4 slots) of surplus.
        let mut seq = Sequence::new();
        let snapshot = ClusterSnapshot {
            nodes: vec![
                node("a", true, None),
                node("b", true, None),
                node("c", true, None),
                node("old", true, Some(3600)),
            ],
            pods: servers("a", 1),
            ..Default::default()
        };
        let (mut k, _tx) = kube_with(snapshot.clone());
        let mut p = provider_with(cloud_of(&snapshot, 0));
        k.expect_mark()
            .withf(|_, op| is_op(op, "cordon"))
            .times(1)
            .in_sequence(&mut seq)
            .returning(|n, _| applied(n));
        k.expect_mark()
            .withf(|n, op| n == "old" && is_op(op, "fence"))
            .times(1)
            .in_sequence(&mut seq)
            .returning(|n, _| applied(n));
        k.expect_live_server_pods().returning(|_| Ok(vec![]));
        k.expect_live_node()
            .returning(|n| Ok(Some(live(n, true, true))));
        p.expect_delete_instance()
            .times(1)
            .in_sequence(&mut seq)
            .returning(|_| Ok(()));
        k.expect_mark()
            .withf(|_, op| is_op(op, "accept-deletion"))
            .returning(|n, _| applied(n));
        scaler(k, p, false)
            .reconcile()
            .await
            .expect("pass succeeds");
    }

    /// busy_pool with the grow and uncordon accepted: only the deletion of `c` is of interest.
    fn busy_pool_sides() -> (MockKubernetes, MockNodePoolProvider) {
        let snapshot = busy_pool();
        let (mut k, _tx) = kube_with(snapshot.clone());
        let mut p = provider_with(cloud_of(&snapshot, 0));
        k.expect_mark()
            .withf(|n, op| n == "b" && is_op(op, "uncordon"))
            .returning(|n, _| applied(n));
        p.expect_grow_to().returning(|_| Ok(()));
        (k, p)
    }

    /// The fence on `c` goes on; the deletion must be called off: the fence lifted once and no
    /// DELETE sent.
    fn expect_fence_then_release(k: &mut MockKubernetes, p: &mut MockNodePoolProvider) {
        k.expect_mark()
            .withf(|_, op| is_op(op, "fence"))
            .returning(|n, _| applied(n));
        k.expect_mark()
            .withf(|n, op| n == "c" && is_op(op, "release"))
            .times(1)
            .returning(|n, _| applied(n));
        p.expect_delete_instance().times(0);
    }

    #[tokio::test]
    async fn server_pod_found_by_live_recheck_cancels_the_deletion_and_lifts_the_fence() {
        let (mut k, mut p) = busy_pool_sides();
        expect_fence_then_release(&mut k, &mut p);
        k.expect_live_server_pods()
            .returning(|_| Ok(vec!["g/just-scheduled".to_string()]));
        let report = scaler(k, p, false)
            .reconcile()
            .await
            .expect("pass succeeds");
        assert_eq!(report.cancelled_deletions, vec!["c".to_string()]);
    }

    #[tokio::test]
    async fn a_node_uncordoned_inside_the_deletion_window_is_not_deleted() {
        // The fence went on, then a person uncordoned: the live read of the node shows it.
        let (mut k, mut p) = busy_pool_sides();
        expect_fence_then_release(&mut k, &mut p);
        k.expect_live_server_pods().returning(|_| Ok(vec![]));
        k.expect_live_node()
            .returning(|n| Ok(Some(live(n, false, true))));
        let report = scaler(k, p, false)
            .reconcile()
            .await
            .expect("pass succeeds");
        assert_eq!(report.cancelled_deletions, vec!["c".to_string()]);
    }

    #[tokio::test]
    async fn a_node_a_person_cordoned_is_not_fenced_or_deleted() {
        // The cache was a moment old: the live node's cordon is a person's.
        let (mut k, mut p) = busy_pool_sides();
        k.expect_mark()
            .withf(|_, op| is_op(op, "fence"))
            .returning(|n, _| {
                Ok(MarkOutcome::Refused(
                    live(n, false, false),
                    "the node's cordon is not kubescaler's (a person cordoned it)".into(),
                ))
            });
        k.expect_live_server_pods().times(0);
        p.expect_delete_instance().times(0);
        let report = scaler(k, p, false)
            .reconcile()
            .await
            .expect("pass succeeds");
        assert_eq!(report.cancelled_deletions, vec!["c".to_string()]);
    }

    #[tokio::test]
    async fn a_node_the_cloud_reports_draining_gets_no_second_delete() {
        let snapshot = busy_pool();
        let (mut k, _tx) = kube_with(snapshot.clone());
        let mut pool = cloud_of(&snapshot, 0);
        for n in &mut pool.nodes {
            if n.name == "c" {
                n.status = InstanceStatus::Deleting;
                n.state = "draining".into();
            }
        }
        let mut p = provider_with(pool);
        k.expect_mark()
            .withf(|n, op| n == "b" && is_op(op, "uncordon"))
            .returning(|n, _| applied(n));
        p.expect_grow_to().returning(|_| Ok(()));
        k.expect_mark()
            .withf(|n, _| n == "c")
            .times(0)
            .returning(|n, _| applied(n));
        p.expect_delete_instance().times(0);
        let report = scaler(k, p, false)
            .reconcile()
            .await
            .expect("pass succeeds");
        assert_eq!(report.plan.summary.deleting_nodes, 1);
    }

    #[tokio::test]
    async fn one_undeletable_node_does_not_stop_the_others_and_is_held_back() {
        // Two expired empty nodes of kubescaler's; the first (oldest) cannot be deleted.
        let snapshot = ClusterSnapshot {
            nodes: vec![
                node("a", true, None),
                node("stuck", true, Some(7200)),
                node("fine", true, Some(3600)),
            ],
            // a's 4 free slots are the buffer: nothing to uncordon.
            pods: vec![],
            ..Default::default()
        };
        let (mut k, _tx) = kube_with(snapshot.clone());
        let mut p = provider_with(cloud_of(&snapshot, 0));
        k.expect_mark()
            .withf(|_, op| {
                is_op(op, "fence") || is_op(op, "release") || is_op(op, "accept-deletion")
            })
            .returning(|n, _| applied(n));
        k.expect_live_server_pods().returning(|_| Ok(vec![]));
        k.expect_live_node()
            .returning(|n| Ok(Some(live(n, true, true))));
        let stuck_attempts = Arc::new(AtomicUsize::new(0));
        let s2 = stuck_attempts.clone();
        p.expect_delete_instance().returning(move |i| {
            if i.name == "stuck" {
                s2.fetch_add(1, Ordering::SeqCst);
                Err(ProviderError::Api {
                    provider: "test",
                    op: "delete node".into(),
                    message: "422 node is locked".into(),
                })
            } else {
                Ok(())
            }
        });
        let mut s = Scaler::new(
            Arc::new(k),
            Arc::new(p),
            &Config {
                minimum_node_pool_size: 0,
                ..config(false)
            },
        );
        let first = s
            .reconcile()
            .await
            .expect("a failed deletion does not fail the pass");
        assert_eq!(first.failed_deletions, vec!["stuck".to_string()]);
        assert_eq!(first.executed, 1, "the other node was deleted: {first:?}");
        // Next pass: the stuck node is held back, not retried first.
        let second = s.reconcile().await.expect("second pass");
        assert_eq!(stuck_attempts.load(Ordering::SeqCst), 1);
        assert!(second.failed_deletions.is_empty());
    }

    #[tokio::test]
    async fn dry_run_plans_but_calls_no_mutation() {
        let snapshot = busy_pool();
        let (mut k, _tx) = kube_with(snapshot.clone());
        let mut p = provider_with(cloud_of(&snapshot, 0));
        k.expect_mark().times(0);
        k.expect_live_server_pods().times(0);
        p.expect_grow_to().times(0);
        p.expect_delete_instance().times(0);
        let report = scaler(k, p, true).reconcile().await.expect("pass succeeds");
        assert_eq!(report.plan.actions.len(), 3);
        assert_eq!(report.executed, 0);
    }

    /// A clock the test moves.
    fn manual_clock() -> (Clock, Arc<std::sync::atomic::AtomicI64>) {
        let start = Timestamp::now().as_second();
        let t = Arc::new(std::sync::atomic::AtomicI64::new(start));
        let t2 = t.clone();
        let clock: Clock = Arc::new(move || {
            Timestamp::from_second(t2.load(Ordering::SeqCst)).unwrap_or(Timestamp::UNIX_EPOCH)
        });
        (clock, t)
    }

    #[tokio::test]
    async fn an_idle_pool_reads_the_cloud_once_a_minute_whatever_the_tick() {
        let snapshot = ClusterSnapshot {
            nodes: vec![node("a", true, None), node("b", true, None)],
            pods: servers("a", 4),
            ..Default::default()
        };
        let (k, _tx) = kube_with(snapshot.clone());
        let reads = Arc::new(AtomicUsize::new(0));
        let r = reads.clone();
        let pool = cloud_of(&snapshot, 0);
        let mut p = MockNodePoolProvider::new();
        p.expect_pool().returning(move || {
            r.fetch_add(1, Ordering::SeqCst);
            Ok(pool.clone())
        });
        p.expect_find()
            .returning(|n, pool| Ok(crate::provider::find_by_provider_id_or_name(n, pool)));
        let (clock, t) = manual_clock();
        let mut s = scaler(k, p, false).with_clock(clock);
        // A pass every second for two minutes.
        for _ in 0..120 {
            let report = s.reconcile().await.expect("pass");
            assert!(report.plan.actions.is_empty(), "{:?}", report.plan.actions);
            t.fetch_add(1, Ordering::SeqCst);
        }
        assert_eq!(reads.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn a_plan_that_changes_the_pool_is_made_again_from_a_fresh_read() {
        // The cached read says 2 nodes; meanwhile the cloud console resized the pool to 3
        // (one on its way): with it, the buffer is met and no grow is needed.
        let snapshot = ClusterSnapshot {
            nodes: vec![node("a", true, None), node("b", true, None)],
            pods: servers("a", 4),
            ..Default::default()
        };
        let (k, _tx) = kube_with(snapshot.clone());
        let reads = Arc::new(AtomicUsize::new(0));
        let r = reads.clone();
        let before = cloud_of(&snapshot, 0);
        let after = cloud_of(&snapshot, 1);
        let mut p = MockNodePoolProvider::new();
        p.expect_pool().returning(move || {
            Ok(if r.fetch_add(1, Ordering::SeqCst) == 0 {
                before.clone()
            } else {
                after.clone()
            })
        });
        p.expect_find()
            .returning(|n, pool| Ok(crate::provider::find_by_provider_id_or_name(n, pool)));
        p.expect_grow_to().times(0);
        let (clock, t) = manual_clock();
        let mut s = scaler(k, p, false).with_clock(clock);
        s.reconcile().await.expect("first pass");
        // Two servers end on b... simpler: demand grows by a pending server.
        t.fetch_add(5, Ordering::SeqCst);
        let mut busier = snapshot.clone();
        busier.pods.extend(servers("b", 4));
        let (k2, _tx2) = kube_with(busier);
        s.k8s = Arc::new(k2);
        let report = s.reconcile().await.expect("second pass");
        assert_eq!(report.cloud_reads, 1, "re-read before growing");
        assert!(
            report.plan.grow_target().is_none(),
            "{:?}",
            report.plan.actions
        );
    }

    /// Like [`kube_with`], counting the passes (snapshots taken).
    fn kube_counting(
        snapshot: ClusterSnapshot,
    ) -> (
        MockKubernetes,
        broadcast::Sender<ChangeEvent>,
        Arc<AtomicUsize>,
    ) {
        let (tx, _) = broadcast::channel(64);
        let mut k = MockKubernetes::new();
        let sub = tx.clone();
        k.expect_changes().returning(move || sub.subscribe());
        let passes = Arc::new(AtomicUsize::new(0));
        let c = passes.clone();
        k.expect_snapshot().returning(move || {
            c.fetch_add(1, Ordering::SeqCst);
            Ok(snapshot.clone())
        });
        k.expect_publish_event().returning(|_| Ok(()));
        (k, tx, passes)
    }

    #[tokio::test(start_paused = true)]
    async fn provider_error_is_retried_with_backoff_and_the_loop_survives() {
        let snapshot = ClusterSnapshot {
            nodes: vec![node("a", true, None), node("b", true, None)],
            pods: servers("a", 4),
            ..Default::default()
        };
        let (k, _tx) = kube_with(snapshot.clone());
        let calls = Arc::new(AtomicUsize::new(0));
        let c = calls.clone();
        let pool = cloud_of(&snapshot, 0);
        let mut p = MockNodePoolProvider::new();
        p.expect_pool().returning(move || {
            // Fails twice, then works.
            if c.fetch_add(1, Ordering::SeqCst) < 2 {
                Err(ProviderError::Api {
                    provider: "test",
                    op: "get pool".into(),
                    message: "503".into(),
                })
            } else {
                Ok(pool.clone())
            }
        });
        p.expect_find()
            .returning(|n, pool| Ok(crate::provider::find_by_provider_id_or_name(n, pool)));
        let s = scaler(k, p, false);
        // Backoff 0.5 s then 1 s: the third attempt comes well before the 10 s tick.
        s.run(tokio::time::sleep(Duration::from_secs(3))).await;
        assert_eq!(calls.load(Ordering::SeqCst), 3);
    }

    #[tokio::test(start_paused = true)]
    async fn a_burst_of_change_events_is_one_reconcile() {
        let snapshot = ClusterSnapshot {
            nodes: vec![node("a", true, None), node("b", true, None)],
            pods: servers("a", 4),
            ..Default::default()
        };
        let (k, tx, passes) = kube_counting(snapshot.clone());
        let p = provider_with(cloud_of(&snapshot, 0));
        let s = scaler(k, p, false);
        let burst = async move {
            tokio::time::sleep(Duration::from_secs(1)).await;
            for i in 0..20 {
                let _ = tx.send(ChangeEvent::ServerPod(format!("g/{i}")));
            }
            tokio::time::sleep(Duration::from_secs(3)).await;
        };
        s.run(burst).await;
        // One pass at start, one for the burst; the tick (10 s) has not come.
        assert_eq!(passes.load(Ordering::SeqCst), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn unsynced_caches_wait_for_the_resync_event_not_for_backoff() {
        let (tx, _) = broadcast::channel(8);
        let mut k = MockKubernetes::new();
        let sub = tx.clone();
        k.expect_changes().returning(move || sub.subscribe());
        let synced = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let s2 = synced.clone();
        k.expect_snapshot().returning(move || {
            if s2.load(Ordering::SeqCst) {
                Ok(ClusterSnapshot::default())
            } else {
                Err(KubeError::NotSynced("pods have not listed".into()))
            }
        });
        k.expect_publish_event().returning(|_| Ok(()));
        let calls = Arc::new(AtomicUsize::new(0));
        let c = calls.clone();
        let pool = cloud_of(&ClusterSnapshot::default(), 1);
        let mut p = MockNodePoolProvider::new();
        p.expect_pool().returning(move || {
            c.fetch_add(1, Ordering::SeqCst);
            Ok(pool.clone())
        });
        let s = scaler(k, p, false);
        let world = async move {
            // The caches fill after 3 s and say so.
            tokio::time::sleep(Duration::from_secs(3)).await;
            synced.store(true, Ordering::SeqCst);
            let _ = tx.send(ChangeEvent::Resynced);
            tokio::time::sleep(Duration::from_secs(1)).await;
        };
        s.run(world).await;
        // The pass after the resync ran within the debounce, long before the 10 s tick.
        assert_eq!(calls.load(Ordering::SeqCst), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn the_tick_reconciles_without_events() {
        let (k, _tx, passes) = kube_counting(ClusterSnapshot::default());
        let p = provider_with(cloud_of(&ClusterSnapshot::default(), 1));
        scaler(k, p, false)
            .run(tokio::time::sleep(Duration::from_secs(35)))
            .await;
        // At 0, 10, 20 and 30 s.
        assert_eq!(passes.load(Ordering::SeqCst), 4);
    }

    /// A cloud whose resize call never answers.
    struct HangingProvider;

    #[async_trait::async_trait]
    impl NodePoolProvider for HangingProvider {
        async fn pool(&self) -> Result<CloudPool, ProviderError> {
            // Below the minimum of 1: the pass must grow, and the grow hangs.
            Ok(CloudPool::default())
        }
        async fn grow_to(&self, _: u32) -> Result<(), ProviderError> {
            std::future::pending().await
        }
        async fn delete_instance(&self, _: &CloudNode) -> Result<(), ProviderError> {
            Ok(())
        }
    }

    #[tokio::test(start_paused = true)]
    async fn shutdown_abandons_a_stuck_pass_within_the_grace() {
        let (k, _tx) = kube_with(ClusterSnapshot::default());
        let s = Scaler::new(Arc::new(k), Arc::new(HangingProvider), &config(false));
        let started = Instant::now();
        s.run(tokio::time::sleep(Duration::from_millis(100))).await;
        let took = Instant::now() - started;
        assert!(took >= SHUTDOWN_GRACE, "waited for the pass: {took:?}");
        assert!(
            took <= Duration::from_millis(200) + SHUTDOWN_GRACE,
            "{took:?}"
        );
    }

    #[test]
    fn backoff_doubles_and_is_capped() {
        let tick = Duration::from_secs(600);
        assert_eq!(backoff(1, tick), Duration::from_millis(500));
        assert_eq!(backoff(2, tick), Duration::from_secs(1));
        assert_eq!(backoff(3, tick), Duration::from_secs(2));
        assert_eq!(backoff(100, tick), BACKOFF_MAX);
        assert_eq!(
            backoff(100, Duration::from_secs(10)),
            Duration::from_secs(20)
        );
    }
}
