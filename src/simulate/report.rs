//! What a run measured, as the summary printed on stdout, `report.json`, and for a sweep the
//! table and `sweep.json`. Every number is formatted with a fixed precision and every list has
//! a fixed order, so the same run gives the same bytes.

use std::fmt::Write as _;

use serde::Serialize;

use super::args::human_secs;
use super::engine::{Outcome, Scenario};
use super::SimInput;
use crate::agones::AgonesSettings;
use crate::model::ServerSource;

/// Rounds to `digits` decimals, so that JSON shows no float noise.
fn round(v: f64, digits: i32) -> f64 {
    let scale = 10f64.powi(digits);
    (v * scale).round() / scale
}

/// `12345` → `12,345`.
pub fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// Bytes as a quantity when it is a whole number of Gi/Mi/Ki, else bytes.
pub fn bytes(n: u64) -> String {
    for (shift, unit) in [(30, "Gi"), (20, "Mi"), (10, "Ki")] {
        if n > 0 && n.is_multiple_of(1 << shift) {
            return format!("{}{unit}", n >> shift);
        }
    }
    n.to_string()
}

/// Wait-for-a-slot percentiles, seconds.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Waits {
    /// Median.
    pub p50: u64,
    /// 95th percentile.
    pub p95: u64,
    /// 99th percentile.
    pub p99: u64,
    /// Longest.
    pub max: u64,
}

impl Waits {
    /// Nearest-rank percentiles of `waits`.
    pub fn of(waits: &[u64]) -> Waits {
        let mut sorted = waits.to_vec();
        sorted.sort_unstable();
        let rank = |q: f64| {
            if sorted.is_empty() {
                return 0;
            }
            let i = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len()) - 1;
            sorted[i]
        };
        Waits {
            p50: rank(0.50),
            p95: rank(0.95),
            p99: rank(0.99),
            max: sorted.last().copied().unwrap_or(0),
        }
    }
}

/// Sessions, for the report.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Sessions {
    /// Running at the start (not counted below).
    pub running_at_start: u64,
    /// Arrived during the run.
    pub arrived: u64,
    /// Found a free slot at once (started within the step they arrived).
    pub instant: u64,
    /// `instant / arrived` (1 with no arrival).
    pub instant_share: f64,
    /// Ended normally (warm ones included).
    pub ended: u64,
    /// Running at the end.
    pub running_at_end: u64,
    /// Still waiting at the end.
    pub waiting_at_end: u64,
}

/// Actions carried out, for the report.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Actions {
    /// Target raises.
    pub grow: u64,
    /// Nodes those raises ordered.
    pub nodes_ordered: u64,
    /// Cordons.
    pub cordon: u64,
    /// Uncordons.
    pub uncordon: u64,
    /// Node deletions.
    pub delete: u64,
    /// Deletions the live re-check cancelled.
    pub cancelled_deletions: u64,
}

/// Planner warnings, for the report.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Warnings {
    /// Passes whose plan carried at least one warning.
    pub passes: u64,
    /// The first one.
    pub first: Option<FirstWarning>,
}

/// The first planner warning.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct FirstWarning {
    /// Simulated second.
    pub at_sec: u64,
    /// The planner's text.
    pub message: String,
}

/// The figures of one run.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Summary {
    /// Buffer size of the run.
    pub buffer: u32,
    /// Node-hours paid for (every node from its order to its deletion).
    pub node_hours: f64,
    /// Nodes on average over the run.
    pub mean_nodes: f64,
    /// Most nodes at once.
    pub peak_nodes: u32,
    /// Sessions.
    pub sessions: Sessions,
    /// Wait for a slot, seconds, over every arrived session (one still waiting at the end
    /// counts with its wait so far).
    pub wait_sec: Waits,
    /// Actions carried out.
    pub actions: Actions,
    /// Reconcile passes.
    pub passes: u64,
    /// Passes that failed.
    pub failed_passes: u64,
    /// Planner warnings.
    pub planner_warnings: Warnings,
    /// Server pods on a node when it was deleted. Must be 0.
    pub server_pods_killed: u64,
    /// The GameServer figures, for a run whose servers were an Agones Fleet's (absent from the
    /// JSON otherwise).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub agones: Option<FleetFigures>,
}

/// What a run with an Agones Fleet adds to its figures.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct FleetFigures {
    /// Nodes at the end of the run.
    pub nodes_at_end: u32,
    /// Ready GameServers kubescaler deleted (compaction).
    pub game_servers_compacted: u64,
    /// Allocated GameServers (live matches) lost: on a deleted node, or deleted. Must be 0.
    pub lost_matches: u64,
}

impl Summary {
    /// The figures of `o`, a run of `duration` seconds.
    pub fn of(o: &Outcome, duration: u64) -> Summary {
        let arrived = o.arrived();
        let hours = o.node_seconds as f64 / 3600.0;
        Summary {
            buffer: o.buffer,
            node_hours: round(hours, 3),
            mean_nodes: round(o.node_seconds as f64 / duration.max(1) as f64, 3),
            peak_nodes: o.peak_nodes,
            sessions: Sessions {
                running_at_start: o.warm_sessions,
                arrived,
                instant: o.instant,
                instant_share: if arrived == 0 {
                    1.0
                } else {
                    round(o.instant as f64 / arrived as f64, 6)
                },
                ended: o.ended,
                running_at_end: o.running_at_end,
                waiting_at_end: o.waiting_at_end,
            },
            wait_sec: Waits::of(&o.waits),
            actions: Actions {
                grow: o.calls.grows,
                nodes_ordered: o.calls.nodes_ordered,
                cordon: o.calls.cordons,
                uncordon: o.calls.uncordons,
                delete: o.calls.deletions,
                cancelled_deletions: o.cancelled_deletions,
            },
            passes: o.passes,
            failed_passes: o.failed_passes,
            planner_warnings: Warnings {
                passes: o.warned_passes,
                first: o.first_warning.as_ref().map(|(t, m)| FirstWarning {
                    at_sec: *t,
                    message: m.clone(),
                }),
            },
            server_pods_killed: o.calls.servers_killed,
            agones: o.fleet.map(|_| FleetFigures {
                nodes_at_end: o.nodes_at_end,
                game_servers_compacted: o.calls.game_servers_compacted,
                lost_matches: o.calls.matches_lost,
            }),
        }
    }
}

/// The pool and demand, for the reports.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ScenarioReport {
    /// RNG seed.
    pub seed: u64,
    /// Simulated seconds.
    pub duration_sec: u64,
    /// Seconds per step.
    pub step_sec: u64,
    /// Where the sessions come from.
    pub demand: String,
    /// Mean session length, seconds.
    pub mean_session_sec: u64,
    /// Node allocatable CPU, millicores.
    pub node_cpu_millis: u64,
    /// Node allocatable memory, bytes.
    pub node_memory_bytes: u64,
    /// Node allocatable pods.
    pub node_pods: u32,
    /// DaemonSet pods per node.
    pub daemon_pods: u32,
    /// Their CPU, millicores, together.
    pub daemon_cpu_millis: u64,
    /// Their memory, bytes, together.
    pub daemon_memory_bytes: u64,
    /// Seconds from order to registration (NotReady).
    pub register_delay_sec: u64,
    /// Seconds from order to Ready.
    pub boot_delay_sec: u64,
    /// Servers per node.
    pub slots_per_node: u32,
    /// Scheduler placement.
    pub placement: &'static str,
    /// The Agones Fleet, when the servers are its GameServers (absent from the JSON otherwise).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fleet: Option<FleetReport>,
}

/// The simulated Agones Fleet, for the reports.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct FleetReport {
    /// Its FleetAutoscaler's Buffer policy: `bufferSize`.
    pub buffer_size: u32,
    /// Its FleetAutoscaler's Buffer policy: `maxReplicas`.
    pub max_replicas: u32,
    /// Seconds from a GameServer's pod being bound to its being Ready.
    pub ready_delay_sec: u64,
}

/// The configuration that matters to a run, for the reports.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ConfigReport {
    /// `buffer-slot-size` (of the first run, for a sweep).
    pub buffer_slot_size: u32,
    /// `minimum-node-pool-size`.
    pub minimum_node_pool_size: u32,
    /// `maximum-node-pool-size`.
    pub maximum_node_pool_size: u32,
    /// `scale-loop-tick-sec`.
    pub scale_loop_tick_sec: u64,
    /// `server-cpu-resource-request`, millicores.
    pub server_cpu_resource_request: u64,
    /// `server-memory-resource-request`, bytes.
    pub server_memory_resource_request: Option<u64>,
    /// `empty-node-expiration-sec`.
    pub empty_node_expiration_sec: u64,
    /// `node-boot-timeout-sec`.
    pub node_boot_timeout_sec: u64,
    /// `node-template-*` given (the planner's shape of a new node for an empty pool).
    pub node_template: bool,
    /// `dry-run`.
    pub dry_run: bool,
    /// Keys whose value the simulation chose, with the value (a JSON object, in key order).
    #[serde(serialize_with = "pairs_as_map")]
    pub simulation_values: Vec<(&'static str, String)>,
    /// The `agones-*` settings with `server-source: agones` (absent from the JSON otherwise).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub agones: Option<AgonesSettings>,
}

/// `report.json`.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Report {
    /// kubescaler's version.
    pub kubescaler_version: &'static str,
    /// The scenario.
    pub scenario: ScenarioReport,
    /// The configuration.
    pub config: ConfigReport,
    /// The figures.
    pub summary: Summary,
    /// The time series (written by [`Report::to_json`] one row per line).
    #[serde(skip)]
    pub series: Series,
}

/// Serializes `(key, value)` pairs as a JSON object, keeping their order.
fn pairs_as_map<S: serde::Serializer>(
    pairs: &[(&'static str, String)],
    s: S,
) -> Result<S::Ok, S::Error> {
    s.collect_map(pairs.iter().map(|(k, v)| (*k, v)))
}

impl Report {
    /// `report.json`: pretty-printed, except that each row of the series stays on one line.
    pub fn to_json(&self) -> String {
        let mut out = serde_json::to_string_pretty(self).unwrap_or_else(|_| "{}".to_string());
        // Reopen the object to append the series.
        if out.ends_with('}') {
            out.pop();
        }
        while out.ends_with(char::is_whitespace) {
            out.pop();
        }
        let columns = serde_json::to_string(&self.series.columns).unwrap_or_default();
        let _ = write!(
            out,
            ",\n  \"series\": {{\n    \"interval_sec\": {},\n    \"columns\": {columns},\n    \"rows\": [",
            self.series.interval_sec
        );
        for (i, row) in self.series.rows.iter().enumerate() {
            let cells: Vec<String> = row.iter().map(u64::to_string).collect();
            let sep = if i + 1 < self.series.rows.len() {
                ","
            } else {
                ""
            };
            let _ = write!(out, "\n      [{}]{sep}", cells.join(", "));
        }
        out.push_str("\n    ]\n  }\n}\n");
        out
    }
}

/// The time series, as rows of `columns`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Series {
    /// Seconds between rows.
    pub interval_sec: u64,
    /// Names of the columns.
    pub columns: [&'static str; 8],
    /// One row per point.
    pub rows: Vec<[u64; 8]>,
}

/// `sweep.json`.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct SweepReport {
    /// kubescaler's version.
    pub kubescaler_version: &'static str,
    /// The scenario.
    pub scenario: ScenarioReport,
    /// The configuration (the buffer varies).
    pub config: ConfigReport,
    /// The instant-start share to meet.
    pub target_instant: f64,
    /// The cheapest buffer that meets it, if one does.
    pub cheapest_meeting_target: Option<u32>,
    /// One summary per buffer size.
    pub runs: Vec<Summary>,
}

impl ScenarioReport {
    /// From the run's inputs.
    pub fn of(input: &SimInput, scenario: &Scenario, slots: u32) -> Self {
        let s = &scenario.shape;
        ScenarioReport {
            seed: input.seed,
            duration_sec: scenario.duration,
            step_sec: scenario.step,
            demand: input.demand.describe(),
            mean_session_sec: input.mean_session,
            node_cpu_millis: s.node.cpu_millis,
            node_memory_bytes: s.node.memory_bytes,
            node_pods: s.node_pods,
            daemon_pods: s.daemon_pods,
            daemon_cpu_millis: s.daemon.cpu_millis,
            daemon_memory_bytes: s.daemon.memory_bytes,
            register_delay_sec: s.register_delay(),
            boot_delay_sec: s.boot_delay,
            slots_per_node: slots,
            placement: s.placement.as_str(),
            fleet: scenario.fleet.map(|f| FleetReport {
                buffer_size: f.buffer_size,
                max_replicas: f.max_replicas,
                ready_delay_sec: f.ready_delay,
            }),
        }
    }
}

impl ConfigReport {
    /// From the loaded configuration.
    pub fn of(input: &SimInput) -> Self {
        let c = &input.config.config;
        ConfigReport {
            buffer_slot_size: c.buffer_slot_size,
            minimum_node_pool_size: c.minimum_node_pool_size,
            maximum_node_pool_size: c.maximum_node_pool_size,
            scale_loop_tick_sec: c.scale_loop_tick_sec,
            server_cpu_resource_request: c.server_cpu_resource_request,
            server_memory_resource_request: c.server_memory_resource_request,
            empty_node_expiration_sec: c.empty_node_expiration_sec,
            node_boot_timeout_sec: c.node_boot_timeout_sec,
            node_template: c.node_template.is_some(),
            dry_run: c.dry_run,
            simulation_values: input.config.simulation_values.clone(),
            agones: (c.server_source == ServerSource::Agones).then(|| c.agones.clone()),
        }
    }
}

impl Series {
    /// The series of `o`.
    pub fn of(o: &Outcome, interval: u64) -> Self {
        Series {
            interval_sec: interval,
            columns: [
                "time_sec",
                "nodes",
                "schedulable_nodes",
                "booting_nodes",
                "cordoned_nodes",
                "free_slots",
                "running_servers",
                "waiting_sessions",
            ],
            rows: o
                .series
                .iter()
                .map(|s| {
                    let c = &s.census;
                    [
                        s.t,
                        c.nodes.into(),
                        c.schedulable.into(),
                        c.booting.into(),
                        c.cordoned.into(),
                        c.free_slots.into(),
                        c.running.into(),
                        c.waiting.into(),
                    ]
                })
                .collect(),
        }
    }
}

/// A share as `99.12 %`.
pub fn percent(share: f64) -> String {
    format!("{:.2} %", share * 100.0)
}

/// The header lines shared by the run summary and the sweep table.
pub fn header(input: &SimInput, scenario: &Scenario, slots: u32) -> String {
    let c = &input.config.config;
    let s = &scenario.shape;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "kubescaler simulate: {} of {}, sessions of {} on average, seed {}",
        human_secs(scenario.duration),
        input.demand.describe(),
        human_secs(input.mean_session),
        input.seed
    );
    let _ = writeln!(
        out,
        "pool    nodes of {}m CPU, {} memory, {} pods; DaemonSet pods {}m, {}, {} per node; \
         {slots} servers per node; Ready {} after the order",
        s.node.cpu_millis,
        bytes(s.node.memory_bytes),
        s.node_pods,
        s.daemon.cpu_millis,
        bytes(s.daemon.memory_bytes),
        s.daemon_pods,
        human_secs(s.boot_delay),
    );
    let _ = writeln!(
        out,
        "config  buffer {}, min {}, max {}, tick {}, server {}m CPU{}, empty-node expiration {}{}; \
         step {}, placement {}",
        c.buffer_slot_size,
        c.minimum_node_pool_size,
        c.maximum_node_pool_size,
        human_secs(c.scale_loop_tick_sec),
        c.server_cpu_resource_request,
        c.server_memory_resource_request
            .map(|m| format!(" {}", bytes(m)))
            .unwrap_or_default(),
        human_secs(c.empty_node_expiration_sec),
        if c.dry_run { ", DRY RUN" } else { "" },
        human_secs(scenario.step),
        s.placement.as_str(),
    );
    if let Some(f) = &scenario.fleet {
        let _ = writeln!(
            out,
            "agones  one Fleet, FleetAutoscaler Buffer {} (replicas = Allocated + {}, max {}), \
             GameServers Ready {} after binding, Packed allocation; agones-buffer {}, \
             compaction {}/min",
            f.buffer_size,
            f.buffer_size,
            f.max_replicas,
            human_secs(f.ready_delay),
            c.agones.buffer.as_str(),
            c.agones.compaction_per_minute,
        );
    }
    out
}

/// The summary of one run.
pub fn summary_text(summary: &Summary) -> String {
    let s = summary;
    let mut out = String::new();
    let line = |out: &mut String, label: &str, text: String| {
        let _ = writeln!(out, "{label:<20}{text}");
    };
    line(
        &mut out,
        "sessions",
        format!(
            "{} arrived ({} running at the start), {} ended, {} running and {} waiting at the end",
            thousands(s.sessions.arrived),
            thousands(s.sessions.running_at_start),
            thousands(s.sessions.ended),
            thousands(s.sessions.running_at_end),
            thousands(s.sessions.waiting_at_end),
        ),
    );
    line(
        &mut out,
        "instant start",
        format!(
            "{} ({} of {} found a free slot at once)",
            percent(s.sessions.instant_share),
            thousands(s.sessions.instant),
            thousands(s.sessions.arrived)
        ),
    );
    line(
        &mut out,
        "wait for a slot",
        format!(
            "p50 {}, p95 {}, p99 {}, max {}",
            human_secs(s.wait_sec.p50),
            human_secs(s.wait_sec.p95),
            human_secs(s.wait_sec.p99),
            human_secs(s.wait_sec.max)
        ),
    );
    line(
        &mut out,
        "nodes",
        format!(
            "peak {}, mean {:.2}, {:.2} node-hours",
            s.peak_nodes, s.mean_nodes, s.node_hours
        ),
    );
    let a = &s.actions;
    line(
        &mut out,
        "actions",
        format!(
            "{} grow (+{} nodes), {} cordon, {} uncordon, {} delete, {} deletion{} cancelled",
            thousands(a.grow),
            thousands(a.nodes_ordered),
            thousands(a.cordon),
            thousands(a.uncordon),
            thousands(a.delete),
            a.cancelled_deletions,
            if a.cancelled_deletions == 1 { "" } else { "s" }
        ),
    );
    line(
        &mut out,
        "passes",
        format!(
            "{} ({} failed, {} with planner warnings)",
            thousands(s.passes),
            s.failed_passes,
            thousands(s.planner_warnings.passes)
        ),
    );
    if let Some(w) = &s.planner_warnings.first {
        line(
            &mut out,
            "first warning",
            format!("at {}: {}", clock_time(w.at_sec), w.message),
        );
    }
    if let Some(a) = &s.agones {
        line(
            &mut out,
            "GameServers",
            format!(
                "{} compacted, {} matches lost, {} nodes at the end",
                thousands(a.game_servers_compacted),
                a.lost_matches,
                a.nodes_at_end
            ),
        );
    }
    line(
        &mut out,
        "server pods killed",
        if s.server_pods_killed == 0 {
            "0".to_string()
        } else {
            format!(
                "{} (a node was deleted under a live match)",
                s.server_pods_killed
            )
        },
    );
    out
}

/// A simulated second as `HH:MM:SS`, with a day count past the first day (`1d 03:00:00`).
pub fn clock_time(t: u64) -> String {
    let (d, h, m, s) = (t / 86_400, t % 86_400 / 3600, t % 3600 / 60, t % 60);
    if d > 0 {
        format!("{d}d {h:02}:{m:02}:{s:02}")
    } else {
        format!("{h:02}:{m:02}:{s:02}")
    }
}

/// The cheapest run (fewest node-hours; the smaller buffer on a tie) whose instant-start
/// share meets `target`.
pub fn cheapest_meeting(runs: &[Summary], target: f64) -> Option<u32> {
    runs.iter()
        .filter(|s| s.sessions.instant_share + 1e-12 >= target)
        .min_by(|a, b| {
            a.node_hours
                .total_cmp(&b.node_hours)
                .then(a.buffer.cmp(&b.buffer))
        })
        .map(|s| s.buffer)
}

/// The sweep's table.
pub fn sweep_table(runs: &[Summary], target: f64, chosen: Option<u32>) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:>6}  {:>10}  {:>10}  {:>10}  {:>13}  {:>9}  {:>9}  {:>9}  {:>6}",
        "buffer",
        "node-hours",
        "mean nodes",
        "peak nodes",
        "instant start",
        "p95 wait",
        "p99 wait",
        "max wait",
        "killed"
    );
    for s in runs {
        let mark = if Some(s.buffer) == chosen {
            "  <- cheapest meeting the target"
        } else {
            ""
        };
        let _ = writeln!(
            out,
            "{:>6}  {:>10.2}  {:>10.2}  {:>10}  {:>13}  {:>9}  {:>9}  {:>9}  {:>6}{mark}",
            s.buffer,
            s.node_hours,
            s.mean_nodes,
            s.peak_nodes,
            percent(s.sessions.instant_share),
            human_secs(s.wait_sec.p95),
            human_secs(s.wait_sec.p99),
            human_secs(s.wait_sec.max),
            s.server_pods_killed,
        );
    }
    match chosen.and_then(|b| runs.iter().find(|s| s.buffer == b)) {
        Some(best) => {
            let base = runs.first().map_or(best.node_hours, |s| s.node_hours);
            let extra = if base > 0.0 {
                format!(
                    ", {:+.1} % node-hours vs buffer {}",
                    (best.node_hours / base - 1.0) * 100.0,
                    runs.first().map_or(0, |s| s.buffer)
                )
            } else {
                String::new()
            };
            let _ = writeln!(
                out,
                "\ncheapest buffer with at least {} instant starts: {} ({:.2} node-hours, {}{extra})",
                percent(target),
                best.buffer,
                best.node_hours,
                percent(best.sessions.instant_share),
            );
        }
        None => {
            let _ = writeln!(
                out,
                "\nno buffer in the range reaches {} instant starts: try a larger range",
                percent(target)
            );
        }
    }
    out
}

/// One row of the Agones comparison: a run on the same day, seed and Fleet, kubescaler set
/// up one way.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ComparisonRow {
    /// What the row is, as the table names it.
    pub mode: String,
    /// `server-source` kubescaler read the cluster with.
    pub server_source: &'static str,
    /// `agones-compaction-per-minute` (0: off; not used in pods mode).
    pub compaction_per_minute: u32,
    /// The figures.
    pub summary: Summary,
}

/// `comparison.json`.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ComparisonReport {
    /// kubescaler's version.
    pub kubescaler_version: &'static str,
    /// The scenario.
    pub scenario: ScenarioReport,
    /// The configuration (server source and compaction vary by row).
    pub config: ConfigReport,
    /// One row per mode.
    pub rows: Vec<ComparisonRow>,
}

/// The Agones comparison table, and what compaction saves when a row has it.
pub fn comparison_table(rows: &[ComparisonRow], minimum_nodes: u32) -> String {
    let mut out = String::new();
    let width = rows.iter().map(|r| r.mode.len()).max().unwrap_or(4).max(4);
    let _ = writeln!(
        out,
        "{:<width$}  {:>10}  {:>10}  {:>12}  {:>13}  {:>8}  {:>9}  {:>12}",
        "mode",
        "node-hours",
        "peak nodes",
        "nodes at end",
        "instant start",
        "p99 wait",
        "compacted",
        "lost matches"
    );
    for r in rows {
        let s = &r.summary;
        let a = s.agones.unwrap_or(FleetFigures {
            nodes_at_end: 0,
            game_servers_compacted: 0,
            lost_matches: 0,
        });
        let _ = writeln!(
            out,
            "{:<width$}  {:>10.2}  {:>10}  {:>12}  {:>13}  {:>8}  {:>9}  {:>12}",
            r.mode,
            s.node_hours,
            s.peak_nodes,
            a.nodes_at_end,
            percent(s.sessions.instant_share),
            human_secs(s.wait_sec.p99),
            thousands(a.game_servers_compacted),
            a.lost_matches,
        );
    }
    let compacting = rows
        .iter()
        .find(|r| r.server_source == ServerSource::Agones.as_str() && r.compaction_per_minute > 0);
    let Some(with) = compacting else {
        return out;
    };
    let saved = |other: Option<&ComparisonRow>| {
        other.map(|o| {
            let (a, b) = (o.summary.node_hours, with.summary.node_hours);
            let share = if a > 0.0 { (a - b) / a * 100.0 } else { 0.0 };
            format!(
                "{:.2} node-hours ({share:.1} %) against \"{}\"",
                a - b,
                o.mode
            )
        })
    };
    let others: Vec<String> = [
        rows.iter().find(|r| {
            r.server_source == ServerSource::Agones.as_str() && r.compaction_per_minute == 0
        }),
        rows.iter()
            .find(|r| r.server_source == ServerSource::Pods.as_str()),
    ]
    .into_iter()
    .filter_map(saved)
    .collect();
    let _ = writeln!(
        out,
        "\ncompaction saves {}; {} nodes at the end (minimum {minimum_nodes})",
        others.join(" and "),
        with.summary.agones.map_or(0, |a| a.nodes_at_end),
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_are_nearest_rank() {
        let waits: Vec<u64> = (1..=100).collect();
        assert_eq!(
            Waits::of(&waits),
            Waits {
                p50: 50,
                p95: 95,
                p99: 99,
                max: 100
            }
        );
        assert_eq!(Waits::of(&[]), Waits::default());
        assert_eq!(Waits::of(&[0, 0, 7]).p50, 0);
    }

    #[test]
    fn numbers_are_formatted_for_people() {
        assert_eq!(thousands(0), "0");
        assert_eq!(thousands(1234567), "1,234,567");
        assert_eq!(bytes(16 << 30), "16Gi");
        assert_eq!(bytes(512 << 20), "512Mi");
        assert_eq!(bytes(1000), "1000");
        assert_eq!(clock_time(3661), "01:01:01");
        assert_eq!(clock_time(90_000), "1d 01:00:00");
    }

    fn run(buffer: u32, hours: f64, share: f64) -> Summary {
        Summary {
            buffer,
            node_hours: hours,
            mean_nodes: 0.0,
            peak_nodes: 0,
            sessions: Sessions {
                running_at_start: 0,
                arrived: 100,
                instant: 0,
                instant_share: share,
                ended: 0,
                running_at_end: 0,
                waiting_at_end: 0,
            },
            wait_sec: Waits::default(),
            actions: Actions {
                grow: 0,
                nodes_ordered: 0,
                cordon: 0,
                uncordon: 0,
                delete: 0,
                cancelled_deletions: 0,
            },
            passes: 0,
            failed_passes: 0,
            planner_warnings: Warnings {
                passes: 0,
                first: None,
            },
            server_pods_killed: 0,
            agones: None,
        }
    }

    #[test]
    fn sweep_picks_the_cheapest_buffer_that_meets_the_target() {
        let runs = [
            run(0, 100.0, 0.90),
            run(1, 110.0, 0.99),
            run(2, 105.0, 0.995),
            run(3, 120.0, 1.0),
        ];
        assert_eq!(cheapest_meeting(&runs, 0.99), Some(2));
        assert_eq!(cheapest_meeting(&runs, 1.0), Some(3));
        assert_eq!(cheapest_meeting(&runs[..1], 0.99), None);
        let table = sweep_table(&runs, 0.99, Some(2));
        assert!(table.contains("cheapest buffer with at least 99.00 % instant starts: 2"));
    }
}
