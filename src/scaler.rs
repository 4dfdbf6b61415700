//! The imperative shell: reconciles on a tick and on change events, one pass at a time, runs
//! the planner and carries out its plan through the two traits.

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use jiff::Timestamp;
use tokio::sync::broadcast::error::RecvError;
use tokio::time::Instant;
use tracing::{debug, error, info, info_span, warn, Instrument};

use crate::config::Config;
use crate::kubernetes::{ActionEvent, EventReason, KubeError, Kubernetes};
use crate::planner::{self, Action, Plan, PlannerConfig};
use crate::provider::{NodePoolProvider, ProviderError};
use crate::telemetry::Telemetry;

/// How long a burst of change events is gathered into one reconcile.
pub const DEBOUNCE: Duration = Duration::from_millis(500);
/// How long an in-flight pass may finish after a shutdown signal before it is abandoned.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);
/// First retry delay after a failed pass; doubles per failure.
const BACKOFF_START: Duration = Duration::from_millis(500);
/// Longest retry delay.
const BACKOFF_MAX: Duration = Duration::from_secs(120);
/// A node whose deletion was accepted is not deleted again for this long (the cloud needs
/// time to remove it; a second DELETE could lower the count twice).
const DELETION_MEMORY: Duration = Duration::from_secs(600);

/// Errors of one reconcile pass.
#[derive(Debug, thiserror::Error)]
pub enum ScaleError {
    /// Reading or writing the cluster failed.
    #[error(transparent)]
    Kube(#[from] KubeError),
    /// The cloud provider failed.
    #[error(transparent)]
    Provider(#[from] ProviderError),
    /// The provider failed to delete a node.
    #[error("deleting node {node}: {source}")]
    Deletion {
        /// The node.
        node: String,
        /// Cause.
        #[source]
        source: ProviderError,
    },
    /// The provider answered a deletion with no result.
    #[error("provider returned no result for deleting node {0}")]
    MissingResult(String),
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
}

/// What one pass did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PassReport {
    /// The plan that was computed.
    pub plan: Plan,
    /// Actions carried out (in dry-run: none).
    pub executed: usize,
    /// Deletions cancelled because the live re-check found a server pod.
    pub cancelled_deletions: Vec<String>,
}

/// The scale loop.
pub struct Scaler {
    k8s: Arc<dyn Kubernetes>,
    provider: Arc<dyn NodePoolProvider>,
    planner: PlannerConfig,
    tick: Duration,
    dry_run: bool,
    /// Nodes whose deletion the provider accepted, and when.
    deleted: HashMap<String, Timestamp>,
    /// Wall clock for plans and marks; replaceable so a simulation can run on its own time.
    clock: Clock,
    /// Where passes, actions and errors are reported.
    telemetry: Arc<Telemetry>,
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
        Scaler {
            k8s,
            provider,
            planner: PlannerConfig::from(config),
            tick: Duration::from_secs(config.scale_loop_tick_sec.max(1)),
            dry_run: config.dry_run,
            deleted: HashMap::new(),
            clock: Arc::new(Timestamp::now),
            telemetry: Arc::new(Telemetry::new(Duration::from_secs(
                config.scale_loop_tick_sec.max(1),
            ))),
        }
    }

    /// Reports into `telemetry` (shared with the HTTP listener).
    pub fn with_telemetry(mut self, telemetry: Arc<Telemetry>) -> Self {
        self.telemetry = telemetry;
        self
    }

    /// Uses `clock` instead of the system time (simulations).
    pub fn with_clock(mut self, clock: Clock) -> Self {
        self.clock = clock;
        self
    }

    /// One reconcile: snapshot, plan, act. Stops at the first failed action; the next pass
    /// starts again from a fresh snapshot.
    pub async fn reconcile(&mut self) -> Result<PassReport, ScaleError> {
        let snapshot = self.k8s.snapshot().await?;
        let target = self.provider.target_size().await?;
        self.telemetry.provider_resolved();
        let now = (self.clock)();
        let mut plan = planner::plan(&snapshot, target, now, &self.planner);
        self.telemetry.observe_pool(&plan.summary);

        let s = &plan.summary;
        info!(
            target = s.target_size,
            nodes = s.registered_nodes,
            active = s.active_nodes,
            provisioning = s.provisioning_nodes,
            booting = s.booting_nodes,
            cordoned_by_kubescaler = s.cordoned_by_kubescaler,
            cordoned_by_others = s.cordoned_by_others,
            free_slots = s.free_slots,
            incoming_slots = s.incoming_slots,
            pending_servers = s.pending_servers,
            available = s.available_slots,
            buffer = s.buffer,
            actions = plan.actions.len(),
            "planned"
        );
        for w in &plan.warnings {
            warn!(warning = %w, "planner warning");
        }

        self.deleted
            .retain(|_, at| now.duration_since(*at).unsigned_abs() < DELETION_MEMORY);
        plan.actions.retain(|a| match a {
            Action::Delete { node, .. } if self.deleted.contains_key(&node.name) => {
                debug!(node = %node.name, "deletion already accepted by the provider; waiting for it");
                false
            }
            _ => true,
        });

        let mut report = PassReport {
            plan: plan.clone(),
            ..PassReport::default()
        };
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
                Action::Uncordon { node, .. } => {
                    self.k8s.uncordon(node).await?;
                    EventReason::Uncordon
                }
                Action::Grow { to, .. } => {
                    self.provider.grow_to(*to).await?;
                    EventReason::ScaleUp
                }
                Action::Cordon { node, .. } => {
                    self.k8s.cordon(node, now).await?;
                    EventReason::Cordon
                }
                Action::Delete { node, .. } => {
                    // The snapshot may be a moment old: ask the API server itself.
                    let live = self.k8s.live_server_pods(&node.name).await?;
                    if !live.is_empty() {
                        warn!(node = %node.name, servers = ?live, "deletion cancelled: server pods on the node");
                        report.cancelled_deletions.push(node.name.clone());
                        self.telemetry.deletion_cancelled();
                        let message = format!(
                            "deletion cancelled: live re-check found server pods {}",
                            live.join(", ")
                        );
                        self.publish(EventReason::DeleteCancelled, Some(&node.name), message)
                            .await;
                        continue;
                    }
                    let result = self
                        .provider
                        .delete_nodes(std::slice::from_ref(node))
                        .await
                        .into_iter()
                        .next()
                        .ok_or_else(|| ScaleError::MissingResult(node.name.clone()))?;
                    result.map_err(|source| ScaleError::Deletion {
                        node: node.name.clone(),
                        source,
                    })?;
                    self.deleted.insert(node.name.clone(), now);
                    EventReason::DeleteNode
                }
            };
            self.telemetry.action_done(action.kind());
            let message = action.to_string();
            self.publish(event, action.node(), message).await;
            report.executed += 1;
        }
        Ok(report)
    }

    /// Records an Event; a failure is logged and never fails the pass.
    async fn publish(&self, reason: EventReason, node: Option<&str>, message: String) {
        let event = ActionEvent {
            reason,
            node: node.map(str::to_string),
            message,
        };
        if let Err(e) = self.k8s.publish_event(&event).await {
            warn!(error = %e, reason = reason.as_str(), "cannot record event");
        }
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

/// Runs the daemon: builds the cloud provider and the Kubernetes side from `config`, serves
/// health and metrics, and runs the scale loop (only while leader, with leader election on)
/// until SIGTERM/SIGINT.
pub async fn run_daemon(config: Config) -> Result<(), DaemonError> {
    let spec = crate::provider::lookup(&config.cloud_provider)
        .ok_or_else(|| DaemonError::UnknownProvider(config.cloud_provider.clone()))?;
    let provider: Arc<dyn NodePoolProvider> = Arc::from((spec.build)(&config).map_err(
        |source| DaemonError::Provider {
            name: config.cloud_provider.clone(),
            source,
        },
    )?);
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
mod tests {
    use super::*;
    use crate::kubernetes::{ChangeEvent, MockKubernetes};
    use crate::model::{ClusterSnapshot, NodeState, PodState, Resources};
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
            scale_loop_tick_sec: 10,
            server_cpu_resource_request: 1000,
            server_memory_resource_request: None,
            server_pod_tolerations: vec![],
            empty_node_expiration_sec: 120,
            node_boot_timeout_sec: 600,
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

    fn node(name: &str, ready: bool, ours_since: Option<i64>) -> NodeState {
        let now = Timestamp::now();
        NodeState {
            name: name.into(),
            provider_id: None,
            labels: BTreeMap::new(),
            allocatable: Resources {
                cpu_millis: 4000,
                memory_bytes: 1 << 34,
            },
            allocatable_pods: 110,
            ready,
            unschedulable: ours_since.is_some(),
            taints: vec![],
            cordoned_by_kubescaler: ours_since.is_some(),
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

    fn scaler(k: MockKubernetes, p: MockNodePoolProvider, dry_run: bool) -> Scaler {
        Scaler::new(Arc::new(k), Arc::new(p), &config(dry_run))
    }

    #[tokio::test]
    async fn actions_run_in_order_uncordon_grow_then_recheck_and_delete() {
        let mut seq = Sequence::new();
        let (mut k, _tx) = kube_with(busy_pool());
        let mut p = MockNodePoolProvider::new();
        p.expect_target_size()
            .times(1)
            .in_sequence(&mut seq)
            .returning(|| Ok(3));
        k.expect_uncordon()
            .withf(|n| n == "b")
            .times(1)
            .in_sequence(&mut seq)
            .returning(|_| Ok(()));
        p.expect_grow_to()
            .withf(|t| *t == 4)
            .times(1)
            .in_sequence(&mut seq)
            .returning(|_| Ok(()));
        k.expect_live_server_pods()
            .withf(|n| n == "c")
            .times(1)
            .in_sequence(&mut seq)
            .returning(|_| Ok(vec![]));
        p.expect_delete_nodes()
            .withf(|n| n.len() == 1 && n[0].name == "c")
            .times(1)
            .in_sequence(&mut seq)
            .returning(|n| n.iter().map(|_| Ok(())).collect());
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
        };
        let (mut k, _tx) = kube_with(snapshot);
        let mut p = MockNodePoolProvider::new();
        p.expect_target_size().returning(|| Ok(4));
        k.expect_cordon()
            .times(1)
            .in_sequence(&mut seq)
            .returning(|_, _| Ok(()));
        k.expect_live_server_pods()
            .times(1)
            .in_sequence(&mut seq)
            .returning(|_| Ok(vec![]));
        p.expect_delete_nodes()
            .times(1)
            .in_sequence(&mut seq)
            .returning(|n| n.iter().map(|_| Ok(())).collect());
        scaler(k, p, false)
            .reconcile()
            .await
            .expect("pass succeeds");
    }

    #[tokio::test]
    async fn server_pod_found_by_live_recheck_cancels_the_deletion() {
        let (mut k, _tx) = kube_with(busy_pool());
        let mut p = MockNodePoolProvider::new();
        p.expect_target_size().returning(|| Ok(3));
        k.expect_uncordon().returning(|_| Ok(()));
        p.expect_grow_to().returning(|_| Ok(()));
        k.expect_live_server_pods()
            .returning(|_| Ok(vec!["g/just-scheduled".to_string()]));
        p.expect_delete_nodes().times(0);
        let report = scaler(k, p, false)
            .reconcile()
            .await
            .expect("pass succeeds");
        assert_eq!(report.cancelled_deletions, vec!["c".to_string()]);
    }

    #[tokio::test]
    async fn dry_run_plans_but_calls_no_mutation() {
        let (mut k, _tx) = kube_with(busy_pool());
        let mut p = MockNodePoolProvider::new();
        p.expect_target_size().returning(|| Ok(3));
        k.expect_uncordon().times(0);
        k.expect_cordon().times(0);
        k.expect_live_server_pods().times(0);
        p.expect_grow_to().times(0);
        p.expect_delete_nodes().times(0);
        let report = scaler(k, p, true).reconcile().await.expect("pass succeeds");
        assert_eq!(report.plan.actions.len(), 3);
        assert_eq!(report.executed, 0);
    }

    #[tokio::test]
    async fn accepted_deletion_is_not_requested_twice() {
        let (mut k, _tx) = kube_with(busy_pool());
        let mut p = MockNodePoolProvider::new();
        p.expect_target_size().returning(|| Ok(3));
        k.expect_uncordon().returning(|_| Ok(()));
        p.expect_grow_to().returning(|_| Ok(()));
        k.expect_live_server_pods().returning(|_| Ok(vec![]));
        p.expect_delete_nodes()
            .times(1)
            .returning(|n| n.iter().map(|_| Ok(())).collect());
        let mut s = scaler(k, p, false);
        s.reconcile().await.expect("first pass");
        s.reconcile().await.expect("second pass");
    }

    #[tokio::test(start_paused = true)]
    async fn provider_error_is_retried_with_backoff_and_the_loop_survives() {
        let (k, _tx) = kube_with(ClusterSnapshot {
            nodes: vec![node("a", true, None), node("b", true, None)],
            pods: servers("a", 4),
        });
        let calls = Arc::new(AtomicUsize::new(0));
        let c = calls.clone();
        let mut p = MockNodePoolProvider::new();
        p.expect_target_size().returning(move || {
            // Fails twice, then works.
            if c.fetch_add(1, Ordering::SeqCst) < 2 {
                Err(ProviderError::Api {
                    provider: "test",
                    op: "get pool".into(),
                    message: "503".into(),
                })
            } else {
                Ok(2)
            }
        });
        let s = scaler(k, p, false);
        // Backoff 0.5 s then 1 s: the third attempt comes well before the 10 s tick.
        s.run(tokio::time::sleep(Duration::from_secs(3))).await;
        assert_eq!(calls.load(Ordering::SeqCst), 3);
    }

    #[tokio::test(start_paused = true)]
    async fn a_burst_of_change_events_is_one_reconcile() {
        let (k, tx) = kube_with(ClusterSnapshot {
            nodes: vec![node("a", true, None), node("b", true, None)],
            pods: servers("a", 4),
        });
        let calls = Arc::new(AtomicUsize::new(0));
        let c = calls.clone();
        let mut p = MockNodePoolProvider::new();
        p.expect_target_size().returning(move || {
            c.fetch_add(1, Ordering::SeqCst);
            Ok(2)
        });
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
        assert_eq!(calls.load(Ordering::SeqCst), 2);
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
        let mut p = MockNodePoolProvider::new();
        p.expect_target_size().returning(move || {
            c.fetch_add(1, Ordering::SeqCst);
            Ok(1)
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
        let (k, _tx) = kube_with(ClusterSnapshot::default());
        let calls = Arc::new(AtomicUsize::new(0));
        let c = calls.clone();
        let mut p = MockNodePoolProvider::new();
        p.expect_target_size().returning(move || {
            c.fetch_add(1, Ordering::SeqCst);
            Ok(1)
        });
        p.expect_grow_to().returning(|_| Ok(()));
        scaler(k, p, false)
            .run(tokio::time::sleep(Duration::from_secs(35)))
            .await;
        // At 0, 10, 20 and 30 s.
        assert_eq!(calls.load(Ordering::SeqCst), 4);
    }

    /// A cloud whose resize call never answers.
    struct HangingProvider;

    #[async_trait::async_trait]
    impl NodePoolProvider for HangingProvider {
        async fn target_size(&self) -> Result<u32, ProviderError> {
            // Below the minimum of 1: the pass must grow, and the grow hangs.
            Ok(0)
        }
        async fn grow_to(&self, _: u32) -> Result<(), ProviderError> {
            std::future::pending().await
        }
        async fn delete_nodes(
            &self,
            nodes: &[crate::provider::NodeRef],
        ) -> Vec<Result<(), ProviderError>> {
            nodes.iter().map(|_| Ok(())).collect()
        }
        async fn nodes(&self) -> Result<Vec<crate::provider::ProviderNode>, ProviderError> {
            Ok(vec![])
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
