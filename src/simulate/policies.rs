//! `simulate --compare`: the same day under fixed buffers FIRST..LAST and under
//! `buffer-policy: target`, in one table, with the cheapest fixed buffer that met the target
//! in hindsight marked. The fixed runs are what an operator hand-tuning `buffer-slot-size`
//! could reach knowing the day in advance; the target run knows nothing in advance.

use std::fmt::Write as _;

use serde::Serialize;

use crate::buffer::BufferPolicy;
use crate::config::Config;

use super::args::human_secs;
use super::demand::Workload;
use super::engine::{Scenario, SimError};
use super::report::{cheapest_meeting, percent, ConfigReport, ScenarioReport, Summary};
use super::{run_configs, SimInput};

/// One row of the comparison.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct PolicyRow {
    /// `fixed 4` or `target 99%`.
    pub policy: String,
    /// The run's figures.
    pub summary: Summary,
}

/// The comparison, as `compare.json` holds it.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct PolicyComparison {
    /// kubescaler's version.
    pub kubescaler_version: &'static str,
    /// The scenario.
    pub scenario: ScenarioReport,
    /// The configuration of the target run.
    pub config: ConfigReport,
    /// The instant-start share to meet (`target-instant-start`).
    pub target_instant: f64,
    /// The cheapest fixed buffer that met it, if one did.
    pub cheapest_fixed_meeting_target: Option<u32>,
    /// The fixed runs, smallest buffer first, then the target run.
    pub rows: Vec<PolicyRow>,
}

impl PolicyComparison {
    /// The target run.
    pub fn target(&self) -> Option<&PolicyRow> {
        self.rows.last()
    }

    /// The row of the cheapest fixed buffer that met the target.
    pub fn cheapest_fixed(&self) -> Option<&PolicyRow> {
        let buffer = self.cheapest_fixed_meeting_target?;
        self.rows[..self.rows.len().saturating_sub(1)]
            .iter()
            .find(|r| r.summary.buffer == buffer)
    }
}

/// The configurations compared: `buffer-policy: fixed` at each of `buffers`, then the
/// configuration as given with `buffer-policy: target` (its `buffer-slot-size` the floor).
pub fn policy_configs(config: &Config, buffers: &[u32]) -> Vec<Config> {
    let mut configs: Vec<Config> = buffers
        .iter()
        .map(|&b| {
            let mut c = config.clone();
            c.buffer_policy = BufferPolicy::Fixed;
            c.buffer_slot_size = b;
            c
        })
        .collect();
    let mut target = config.clone();
    target.buffer_policy = BufferPolicy::Target;
    configs.push(target);
    configs
}

/// Runs the comparison (in parallel).
pub fn compare_policies(
    input: &SimInput,
    scenario: &Scenario,
    workload: &Workload,
    buffers: &[u32],
    progress: &(dyn Fn(u64, u64) + Sync),
) -> Result<PolicyComparison, SimError> {
    let config = &input.config.config;
    let configs = policy_configs(config, buffers);
    let outcomes = run_configs(scenario, workload, &configs, progress)?;
    let goal = config.target_instant_start;
    let mut rows: Vec<PolicyRow> = configs
        .iter()
        .zip(&outcomes)
        .map(|(c, o)| PolicyRow {
            policy: match c.buffer_policy {
                BufferPolicy::Fixed => format!("fixed {}", c.buffer_slot_size),
                BufferPolicy::Target => format!(
                    "target {} (floor {})",
                    percent(c.target_instant_start),
                    c.buffer_slot_size
                ),
            },
            summary: Summary::of(o, scenario.duration),
        })
        .collect();
    let fixed: Vec<Summary> = rows[..buffers.len()]
        .iter()
        .map(|r| r.summary.clone())
        .collect();
    let cheapest = cheapest_meeting(&fixed, goal);
    rows.shrink_to_fit();
    let slots = outcomes.first().map_or(0, |o| o.slots_per_node);
    Ok(PolicyComparison {
        kubescaler_version: env!("CARGO_PKG_VERSION"),
        scenario: ScenarioReport::of(input, scenario, slots),
        config: ConfigReport::of(input),
        target_instant: goal,
        cheapest_fixed_meeting_target: cheapest,
        rows,
    })
}

/// Cordons plus uncordons per deletion: how much an operator sees happen for each node saved.
pub fn churn_per_deletion(s: &Summary) -> Option<f64> {
    (s.actions.delete > 0)
        .then(|| (s.actions.cordon + s.actions.uncordon) as f64 / s.actions.delete as f64)
}

/// The comparison's table, the cheapest fixed buffer that met the target marked, and a line
/// on how the target run compares with it.
pub fn policy_table(c: &PolicyComparison) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:<22}  {:>13}  {:>8}  {:>10}  {:>6}  {:>8}  {:>6}  {:>9}  {:>6}",
        "policy",
        "instant start",
        "p99 wait",
        "node-hours",
        "cordon",
        "uncordon",
        "delete",
        "churn/del",
        "killed"
    );
    let cheapest = c.cheapest_fixed().map(|r| r.policy.clone());
    for r in &c.rows {
        let s = &r.summary;
        let mark = if Some(&r.policy) == cheapest.as_ref() {
            "  <- cheapest fixed meeting the target"
        } else {
            ""
        };
        let _ = writeln!(
            out,
            "{:<22}  {:>13}  {:>8}  {:>10.2}  {:>6}  {:>8}  {:>6}  {:>9}  {:>6}{mark}",
            r.policy,
            percent(s.sessions.instant_share),
            human_secs(s.wait_sec.p99),
            s.node_hours,
            s.actions.cordon,
            s.actions.uncordon,
            s.actions.delete,
            churn_per_deletion(s).map_or("-".to_string(), |v| format!("{v:.2}")),
            s.server_pods_killed,
        );
    }
    let _ = writeln!(out);
    match (c.target(), c.cheapest_fixed()) {
        (Some(t), Some(f)) => {
            let _ = writeln!(
                out,
                "target: {} instant starts, {:.2} node-hours, {:+.2} % vs {} ({:.2} node-hours, {})",
                percent(t.summary.sessions.instant_share),
                t.summary.node_hours,
                (t.summary.node_hours / f.summary.node_hours.max(1e-9) - 1.0) * 100.0,
                f.policy,
                f.summary.node_hours,
                percent(f.summary.sessions.instant_share),
            );
        }
        (Some(t), None) => {
            let _ = writeln!(
                out,
                "target: {} instant starts, {:.2} node-hours; no fixed buffer compared met {}",
                percent(t.summary.sessions.instant_share),
                t.summary.node_hours,
                percent(c.target_instant),
            );
        }
        _ => {}
    }
    out
}
