//! What the daemon tells its operators: Prometheus metrics, liveness and readiness. The scale
//! loop reports into it; the HTTP listener ([`crate::http`]) reads from it.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use prometheus_client::encoding::text::encode;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

use crate::kubernetes::KubeError;
use crate::planner::{ActionKind, PoolSummary};
use crate::provider::ProviderError;
use crate::scaler::ScaleError;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StateLabels {
    state: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindLabels {
    kind: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabels {
    result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ErrorLabels {
    source: &'static str,
    kind: &'static str,
}

/// Liveness bookkeeping.
#[derive(Debug)]
struct Liveness {
    /// When the loop last finished a pass, well or badly (or started, before the first).
    last_attempt: Instant,
}

/// Metrics and health of one kubescaler process.
pub struct Telemetry {
    registry: Registry,
    free_slots: Gauge,
    available_slots: Gauge,
    incoming_slots: Gauge,
    pending_servers: Gauge,
    running_servers: Gauge,
    buffer: Gauge,
    arrivals_per_minute: Gauge<f64, AtomicU64>,
    departures_per_minute: Gauge<f64, AtomicU64>,
    lead_seconds: Gauge,
    instant_start_ratio: Gauge<f64, AtomicU64>,
    buffer_calibration: Gauge<f64, AtomicU64>,
    pool_target: Gauge,
    nodes: Family<StateLabels, Gauge>,
    game_servers: Family<StateLabels, Gauge>,
    compacted: Family<ResultLabels, Counter>,
    actions: Family<KindLabels, Counter>,
    errors: Family<ErrorLabels, Counter>,
    reconcile_seconds: Histogram,
    last_success: Gauge<f64, AtomicU64>,
    leader: Gauge,
    is_leader: AtomicBool,
    provider_resolved: AtomicBool,
    liveness: Mutex<Liveness>,
    passes: AtomicU64,
    /// Longest a live leader may go without finishing a pass.
    stall_after: Duration,
    /// The last pass's plan as JSON, for `/debug/plan`.
    last_plan: Mutex<Option<String>>,
}

/// What a pass may spend in one cloud call that keeps retrying (the DigitalOcean driver's
/// retry budget): such a pass is an honest attempt in progress, not a stuck loop.
pub const IN_FLIGHT_ALLOWANCE: Duration = Duration::from_secs(60);

impl std::fmt::Debug for Telemetry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Telemetry")
            .field("stall_after", &self.stall_after)
            .finish_non_exhaustive()
    }
}

impl Telemetry {
    /// Metrics for a loop ticking every `tick`.
    pub fn new(tick: Duration) -> Self {
        let mut t = Telemetry {
            registry: Registry::with_prefix("kubescaler"),
            free_slots: Gauge::default(),
            available_slots: Gauge::default(),
            incoming_slots: Gauge::default(),
            pending_servers: Gauge::default(),
            running_servers: Gauge::default(),
            buffer: Gauge::default(),
            arrivals_per_minute: Gauge::default(),
            departures_per_minute: Gauge::default(),
            lead_seconds: Gauge::default(),
            instant_start_ratio: Gauge::default(),
            buffer_calibration: Gauge::default(),
            pool_target: Gauge::default(),
            nodes: Family::default(),
            game_servers: Family::default(),
            compacted: Family::default(),
            actions: Family::default(),
            errors: Family::default(),
            reconcile_seconds: Histogram::new(exponential_buckets(0.001, 2.0, 16)),
            last_success: Gauge::default(),
            leader: Gauge::default(),
            is_leader: AtomicBool::new(false),
            provider_resolved: AtomicBool::new(false),
            passes: AtomicU64::new(0),
            liveness: Mutex::new(Liveness {
                last_attempt: Instant::now(),
            }),
            stall_after: tick.saturating_mul(3).saturating_add(IN_FLIGHT_ALLOWANCE),
            last_plan: Mutex::new(None),
        };
        let r = &mut t.registry;
        r.register(
            "free_slots",
            "Free server slots on ready, schedulable pool nodes",
            t.free_slots.clone(),
        );
        r.register(
            "available_slots",
            "Free plus incoming slots minus pending server pods",
            t.available_slots.clone(),
        );
        r.register(
            "incoming_slots",
            "Slots expected from nodes still provisioning or booting",
            t.incoming_slots.clone(),
        );
        r.register(
            "pending_servers",
            "Server pods waiting for a node",
            t.pending_servers.clone(),
        );
        r.register(
            "running_servers",
            "Server pods bound to pool nodes",
            t.running_servers.clone(),
        );
        r.register(
            "buffer_slots",
            "Buffer of free slots in force (buffer-policy target: as sized this pass)",
            t.buffer.clone(),
        );
        r.register(
            "server_arrivals_per_minute",
            "Measured rate of new server pods (recent, smoothed)",
            t.arrivals_per_minute.clone(),
        );
        r.register(
            "server_departures_per_minute",
            "Measured rate of servers ending on schedulable nodes (their slots come back)",
            t.departures_per_minute.clone(),
        );
        r.register(
            "grow_lead_seconds",
            "Recent percentile of the seconds from a grow to its node being Ready (0 until measured)",
            t.lead_seconds.clone(),
        );
        r.register(
            "instant_start_ratio",
            "Share of the last hour's new server pods that found a slot at once (NaN until 50 were seen)",
            t.instant_start_ratio.clone(),
        );
        r.register(
            "buffer_calibration",
            "Factor on the target policy's chance of running short per lead time, learned from the measured starts (1: the model as it is)",
            t.buffer_calibration.clone(),
        );
        r.register(
            "pool_target_size",
            "The cloud node pool's target size",
            t.pool_target.clone(),
        );
        r.register(
            "nodes",
            "Pool nodes by state (ready, booting, provisioning, not_ready, cordoned_by_kubescaler, cordoned_by_others)",
            t.nodes.clone(),
        );
        r.register(
            "game_servers",
            "Agones mode: in-scope GameServers on ready pool nodes by state (ready, starting, pending), and live matches (live)",
            t.game_servers.clone(),
        );
        r.register(
            "compacted_game_servers",
            "Agones mode: Ready GameServers compaction tried to delete, by result (deleted, conflict: an allocation won, gone)",
            t.compacted.clone(),
        );
        r.register("actions", "Actions carried out, by kind", t.actions.clone());
        r.register(
            "errors",
            "Failed passes by source (kubernetes, provider) and kind",
            t.errors.clone(),
        );
        r.register(
            "reconcile_duration_seconds",
            "Duration of reconcile passes",
            t.reconcile_seconds.clone(),
        );
        r.register(
            "last_successful_reconcile_timestamp_seconds",
            "Unix time of the last successful pass",
            t.last_success.clone(),
        );
        r.register(
            "leader",
            "1 when this replica holds the leader lease and acts, else 0",
            t.leader.clone(),
        );
        // Every counter by label starts at 0, so that a series exists before its first event:
        // `increase()` and an alert then see the first one, and a scrape lists them all.
        for kind in ActionKind::ALL
            .map(ActionKind::as_str)
            .into_iter()
            .chain(DELETION_OUTCOMES)
        {
            let _ = t.actions.get_or_create(&KindLabels { kind });
        }
        for (source, kind) in ERROR_LABELS {
            let _ = t.errors.get_or_create(&ErrorLabels { source, kind });
        }
        for result in COMPACTION_RESULTS {
            let _ = t.compacted.get_or_create(&ResultLabels { result });
        }
        // The state gauges too: a scrape before the first pass (or after a failed one) lists
        // every state at 0 rather than none.
        for state in NODE_STATES {
            let _ = t.nodes.get_or_create(&StateLabels { state });
        }
        for state in GAME_SERVER_STATES {
            let _ = t.game_servers.get_or_create(&StateLabels { state });
        }
        t
    }

    /// Uses `allowance` instead of [`IN_FLIGHT_ALLOWANCE`] for a pass in flight.
    pub fn with_in_flight_allowance(mut self, tick: Duration, allowance: Duration) -> Self {
        self.stall_after = tick.saturating_mul(3).saturating_add(allowance);
        self
    }

    /// Records what the loop measured for the target buffer.
    pub fn observe_demand(&self, observed: &crate::planner::Observed) {
        self.arrivals_per_minute
            .set(observed.arrivals_per_sec.unwrap_or(0.0) * 60.0);
        self.departures_per_minute
            .set(observed.departures_per_sec.unwrap_or(0.0) * 60.0);
        self.lead_seconds.set(
            observed
                .lead_sec
                .map_or(0, |s| i64::try_from(s).unwrap_or(i64::MAX)),
        );
        self.instant_start_ratio
            .set(observed.instant_share.unwrap_or(f64::NAN));
    }

    /// Records the pool as the planner saw it.
    pub fn observe_pool(&self, s: &PoolSummary) {
        self.free_slots.set(i64::from(s.free_slots));
        self.buffer_calibration.set(s.ln_ease.exp());
        self.available_slots.set(s.available_slots);
        self.incoming_slots.set(i64::from(s.incoming_slots));
        self.pending_servers.set(i64::from(s.pending_servers));
        self.running_servers.set(i64::from(s.running_servers));
        self.buffer.set(i64::from(s.buffer));
        self.pool_target.set(i64::from(s.target_size));
        let nodes = [
            s.active_nodes,
            s.booting_nodes,
            s.provisioning_nodes,
            s.not_ready_nodes,
            s.cordoned_by_kubescaler,
            s.cordoned_by_others,
            s.deleting_nodes,
            s.outside_pool_nodes,
            s.stuck_instances,
        ];
        for (state, n) in NODE_STATES.into_iter().zip(nodes) {
            self.nodes
                .get_or_create(&StateLabels { state })
                .set(i64::from(n));
        }
        let game_servers = [
            s.ready_game_servers,
            s.starting_game_servers,
            s.pending_game_servers,
        ];
        for (state, n) in GAME_SERVER_STATES.into_iter().zip(game_servers) {
            self.game_servers
                .get_or_create(&StateLabels { state })
                .set(i64::from(n));
        }
    }

    /// Counts an action carried out.
    pub fn action_done(&self, kind: ActionKind) {
        self.actions
            .get_or_create(&KindLabels {
                kind: kind.as_str(),
            })
            .inc();
    }

    /// Counts one GameServer compaction tried to delete, by `result`.
    pub fn game_server_compacted(&self, result: &'static str) {
        self.compacted.get_or_create(&ResultLabels { result }).inc();
    }

    /// Counts a deletion cancelled by the live re-check.
    pub fn deletion_cancelled(&self) {
        self.actions
            .get_or_create(&KindLabels {
                kind: DELETION_OUTCOMES[0],
            })
            .inc();
    }

    /// Counts a deletion that failed (the node is held back for a while).
    pub fn deletion_failed(&self) {
        self.actions
            .get_or_create(&KindLabels {
                kind: DELETION_OUTCOMES[1],
            })
            .inc();
    }

    /// Records the end of a pass: its duration, and its error if it failed.
    pub fn pass_finished(&self, error: Option<&ScaleError>, elapsed: Duration) {
        self.passes.fetch_add(1, Ordering::Relaxed);
        self.reconcile_seconds.observe(elapsed.as_secs_f64());
        self.liveness
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .last_attempt = Instant::now();
        match error {
            None => {
                let now = jiff::Timestamp::now().as_millisecond() as f64 / 1000.0;
                self.last_success.set(now);
            }
            Some(e) => {
                let (source, kind) = error_labels(e);
                self.errors
                    .get_or_create(&ErrorLabels { source, kind })
                    .inc();
            }
        }
    }

    /// Keeps `plan`, computed at `at`, for `/debug/plan` (JSON: the time, then the plan).
    pub fn record_plan(&self, plan: &crate::planner::Plan, at: jiff::Timestamp) {
        let json = serde_json::to_string_pretty(&serde_json::json!({"at": at, "plan": plan}));
        if let Ok(json) = json {
            *self
                .last_plan
                .lock()
                .unwrap_or_else(PoisonError::into_inner) = Some(json);
        }
    }

    /// The last plan recorded by [`Telemetry::record_plan`], as JSON.
    pub fn last_plan(&self) -> Option<String> {
        self.last_plan
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Passes finished so far, well or badly.
    pub fn passes(&self) -> u64 {
        self.passes.load(Ordering::Relaxed)
    }

    /// The provider answered: its cluster and pool are resolved.
    pub fn provider_resolved(&self) {
        self.provider_resolved.store(true, Ordering::Relaxed);
    }

    /// Whether the provider has answered at least once.
    pub fn is_provider_resolved(&self) -> bool {
        self.provider_resolved.load(Ordering::Relaxed)
    }

    /// This replica became (or stopped being) the one that acts.
    pub fn set_leader(&self, leader: bool) {
        if leader && !self.is_leader.load(Ordering::Relaxed) {
            // Leadership starts the liveness clock afresh: a standby runs no passes.
            self.liveness
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .last_attempt = Instant::now();
        }
        self.is_leader.store(leader, Ordering::Relaxed);
        self.leader.set(i64::from(leader));
    }

    /// Liveness: a standby is alive while it serves; the leader must have finished a pass,
    /// well or badly, within three ticks plus [`IN_FLIGHT_ALLOWANCE`] (a pass stuck longer
    /// means a stuck process).
    pub fn is_live(&self) -> bool {
        if !self.is_leader.load(Ordering::Relaxed) {
            return true;
        }
        let last = self
            .liveness
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .last_attempt;
        last.elapsed() <= self.stall_after
    }

    /// The metrics in Prometheus text format.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = encode(&mut out, &self.registry);
        out
    }
}

/// The `state` labels of `kubescaler_nodes`, in [`Telemetry::observe_pool`]'s order.
const NODE_STATES: [&str; 9] = [
    "ready",
    "booting",
    "provisioning",
    "not_ready",
    "cordoned_by_kubescaler",
    "cordoned_by_others",
    "deleting",
    "outside_pool",
    "unregistered_stuck",
];

/// The `state` labels of `kubescaler_game_servers`.
const GAME_SERVER_STATES: [&str; 3] = ["ready", "starting", "pending"];

/// `kind` of `kubescaler_actions_total` for a deletion the actuator called off or that failed.
const DELETION_OUTCOMES: [&str; 2] = ["delete-cancelled", "delete-failed"];
/// Every `(source, kind)` of `kubescaler_errors_total` ([`error_labels`] gives one of them).
const ERROR_LABELS: [(&str, &str); 7] = [
    ("kubernetes", "not_synced"),
    ("kubernetes", "api"),
    ("kubernetes", "client"),
    ("provider", "refused"),
    ("provider", "api"),
    ("provider", "unknown_node"),
    ("provider", "config"),
];
/// Every `result` of `kubescaler_compacted_game_servers_total`.
const COMPACTION_RESULTS: [&str; 3] = ["deleted", "conflict", "gone"];

fn error_labels(e: &ScaleError) -> (&'static str, &'static str) {
    match e {
        ScaleError::Kube(k) => (
            "kubernetes",
            match k {
                KubeError::NotSynced(_) => "not_synced",
                KubeError::Api { .. } => "api",
                KubeError::Client(_) => "client",
            },
        ),
        ScaleError::Provider(p) => (
            "provider",
            match p {
                ProviderError::Refused { .. } => "refused",
                ProviderError::Api { .. } => "api",
                ProviderError::UnknownNode { .. } => "unknown_node",
                ProviderError::Config { .. } => "config",
            },
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_counter_series_exists_at_zero_before_its_first_event() {
        let text = Telemetry::new(Duration::from_secs(10)).encode();
        for line in [
            "kubescaler_actions_total{kind=\"delete-cancelled\"} 0",
            "kubescaler_actions_total{kind=\"delete-failed\"} 0",
            "kubescaler_actions_total{kind=\"grow\"} 0",
            "kubescaler_errors_total{source=\"provider\",kind=\"api\"} 0",
            "kubescaler_compacted_game_servers_total{result=\"conflict\"} 0",
            "kubescaler_nodes{state=\"ready\"} 0",
            "kubescaler_nodes{state=\"unregistered_stuck\"} 0",
            "kubescaler_game_servers{state=\"pending\"} 0",
        ] {
            assert!(text.contains(line), "{line} missing:\n{text}");
        }
        // The list holds every label pair the errors can have.
        let errors = [
            ScaleError::Kube(KubeError::NotSynced("x".into())),
            ScaleError::Kube(KubeError::Client("x".into())),
            ScaleError::Provider(ProviderError::UnknownNode {
                provider: "p",
                node: "n".into(),
            }),
            ScaleError::Provider(ProviderError::Config {
                provider: "p",
                message: "m".into(),
            }),
        ];
        for e in &errors {
            assert!(ERROR_LABELS.contains(&error_labels(e)), "{e}");
        }
    }

    #[test]
    fn metrics_expose_pool_state_actions_and_errors() {
        let t = Telemetry::new(Duration::from_secs(10));
        t.observe_pool(&PoolSummary {
            free_slots: 3,
            buffer: 4,
            target_size: 2,
            active_nodes: 2,
            cordoned_by_others: 1,
            ..PoolSummary::default()
        });
        t.action_done(ActionKind::Grow);
        t.pass_finished(
            Some(&ScaleError::Kube(KubeError::NotSynced("x".into()))),
            Duration::from_millis(3),
        );
        t.set_leader(true);
        let text = t.encode();
        for line in [
            "kubescaler_free_slots 3",
            "kubescaler_buffer_slots 4",
            "kubescaler_pool_target_size 2",
            "kubescaler_nodes{state=\"ready\"} 2",
            "kubescaler_nodes{state=\"cordoned_by_others\"} 1",
            "kubescaler_actions_total{kind=\"grow\"} 1",
            "kubescaler_errors_total{source=\"kubernetes\",kind=\"not_synced\"} 1",
            "kubescaler_reconcile_duration_seconds_count 1",
            "kubescaler_leader 1",
        ] {
            assert!(text.contains(line), "missing {line:?} in\n{text}");
        }
    }

    #[test]
    fn leader_without_a_pass_for_three_ticks_is_not_live_but_a_standby_is() {
        let tick = Duration::from_millis(1);
        let t = Telemetry::new(tick).with_in_flight_allowance(tick, Duration::ZERO);
        assert!(t.is_live(), "standby");
        t.set_leader(true);
        std::thread::sleep(Duration::from_millis(10));
        assert!(!t.is_live(), "leader stalled past 3 ticks");
        t.pass_finished(None, Duration::ZERO);
        assert!(t.is_live());
    }
}
