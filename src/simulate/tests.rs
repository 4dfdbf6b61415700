//! End-to-end tests of `simulate`: the command line through to the files.

use std::path::Path;

use clap::Parser;

use super::*;
use crate::cli::{Cli, Command};

/// The parsed `kubescaler simulate ARGS...` and its configuration (no file, no env).
fn parse(args: &[&str]) -> (SimulateArgs, SimConfig) {
    let cli = Cli::try_parse_from(["kubescaler", "simulate"].iter().chain(args))
        .expect("valid command line");
    let sources = ConfigSources {
        flags: cli.overrides.clone(),
        ..ConfigSources::default()
    };
    let config = settings::load(&sources).expect("valid configuration");
    match cli.command() {
        Command::Simulate(a) => (a, config),
        other => panic!("not simulate: {other:?}"),
    }
}

fn execute_in(dir: &Path, args: &[&str]) -> Produced {
    let out = dir.to_str().expect("utf-8 temp path");
    let mut all = vec!["--out", out];
    all.extend_from_slice(args);
    let (args, config) = parse(&all);
    execute(&args, config, &|_, _| {}).expect("simulation runs")
}

fn read(dir: &Path, name: &str) -> Vec<u8> {
    std::fs::read(dir.join(name)).expect("file written")
}

fn summary_of(args: &[&str]) -> (Summary, Outcome) {
    let (args, config) = parse(args);
    let (input, scenario) = prepare(&args, config).expect("valid scenario");
    let workload = input
        .demand
        .workload(scenario.duration, input.mean_session, input.seed);
    let outcome = engine::run(&input.config.config, &scenario, &workload, &|_| {}).expect("runs");
    (Summary::of(&outcome, scenario.duration), outcome)
}

#[test]
fn same_seed_gives_byte_identical_stdout_report_and_chart() {
    let (a, b) = (
        tempfile::tempdir().expect("tempdir"),
        tempfile::tempdir().expect("tempdir"),
    );
    let args = ["--duration", "6h", "--seed", "42"];
    let pa = execute_in(a.path(), &args);
    let pb = execute_in(b.path(), &args);
    for name in ["report.json", "chart.svg"] {
        assert_eq!(read(a.path(), name), read(b.path(), name), "{name} differs");
    }
    let strip = |s: &str| {
        s.lines()
            .filter(|l| !l.starts_with("wrote "))
            .collect::<Vec<_>>()
            .join("\n")
    };
    assert_eq!(strip(&pa.stdout), strip(&pb.stdout));

    let c = tempfile::tempdir().expect("tempdir");
    execute_in(c.path(), &["--duration", "6h", "--seed", "43"]);
    assert_ne!(read(a.path(), "report.json"), read(c.path(), "report.json"));
}

#[test]
fn default_scenario_kills_no_server_pod_and_exercises_every_action() {
    let (s, o) = summary_of(&[]);
    assert_eq!(s.server_pods_killed, 0);
    assert_eq!(o.failed_passes, 0);
    assert_eq!(s.actions.cancelled_deletions, 0);
    // The day curve makes the pool grow into the evening and shrink overnight.
    assert!(
        s.actions.grow > 0 && s.actions.cordon > 0 && s.actions.delete > 0,
        "{s:?}"
    );
    assert!(s.peak_nodes > o.initial_nodes);
    assert!(s.sessions.arrived > 5_000, "{}", s.sessions.arrived);
    assert!(
        s.sessions.instant_share > 0.9,
        "{}",
        s.sessions.instant_share
    );
    assert_eq!(s.sessions.waiting_at_end, 0);
    // Every session is accounted for: warm + arrived = ended + running + waiting.
    assert_eq!(
        s.sessions.running_at_start + s.sessions.arrived,
        s.sessions.ended + s.sessions.running_at_end + s.sessions.waiting_at_end
    );
}

#[test]
fn buffer_sweep_kills_no_server_pod_and_more_buffer_starts_more_at_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    let produced = execute_in(
        dir.path(),
        &[
            "--duration",
            "12h",
            "--sweep-buffer",
            "0..8",
            "--target-instant",
            "0.99",
        ],
    );
    assert_eq!(produced.servers_killed, 0);
    let sweep: serde_json::Value =
        serde_json::from_slice(&read(dir.path(), "sweep.json")).expect("json");
    let runs = sweep["runs"].as_array().expect("runs");
    assert_eq!(runs.len(), 9);
    let share = |i: usize| runs[i]["sessions"]["instant_share"].as_f64().unwrap_or(0.0);
    let hours = |i: usize| runs[i]["node_hours"].as_f64().unwrap_or(0.0);
    assert!(share(8) > share(0), "{} vs {}", share(8), share(0));
    assert!(hours(8) > hours(0), "{} vs {}", hours(8), hours(0));
    for r in runs {
        assert_eq!(r["server_pods_killed"], 0);
    }
    assert!(produced.stdout.contains("buffer  node-hours"));
    let svg = String::from_utf8(read(dir.path(), "sweep.svg")).expect("utf-8");
    assert!(svg.starts_with("<svg") && svg.contains("target: 99.00 %"));
}

#[test]
fn sweep_runs_match_single_runs_of_the_same_buffer() {
    // Threads must not change results: buffer 3 in a sweep equals a plain run with buffer 3.
    let (args, config) = parse(&["--duration", "3h"]);
    let (input, scenario) = prepare(&args, config).expect("valid");
    let workload = input
        .demand
        .workload(scenario.duration, input.mean_session, input.seed);
    let swept = run_buffers(&input, &scenario, &workload, &[2, 3], &|_, _| {}).expect("runs");
    let (single, _) = summary_of(&["--duration", "3h", "--buffer-slot-size", "3"]);
    assert_eq!(Summary::of(&swept[1], scenario.duration), single);
}

#[test]
fn configuration_flags_reach_the_simulated_loop() {
    let (s, o) = summary_of(&[
        "--duration",
        "4h",
        "--buffer-slot-size",
        "0",
        "--maximum-node-pool-size",
        "3",
        "--minimum-node-pool-size",
        "3",
    ]);
    // Pinned at 3 nodes: never grows past the maximum, never deletes below the minimum.
    assert_eq!(s.peak_nodes, 3);
    assert_eq!(o.initial_nodes, 3);
    assert_eq!(s.actions.delete, 0);
    assert!(
        s.sessions.instant_share < 0.5,
        "{}",
        s.sessions.instant_share
    );
    assert!(s.planner_warnings.passes > 0);
    assert_eq!(s.server_pods_killed, 0);
}

#[test]
fn dry_run_changes_nothing_in_the_simulated_pool() {
    let (s, o) = summary_of(&["--duration", "2h", "--dry-run"]);
    assert_eq!(s.actions.grow + s.actions.cordon + s.actions.delete, 0);
    assert_eq!(s.peak_nodes, o.initial_nodes);
}

#[test]
fn trace_of_sessions_started_drives_the_arrivals() {
    let dir = tempfile::tempdir().expect("tempdir");
    let trace = dir.path().join("trace.csv");
    std::fs::write(&trace, "time,sessions_started\n0,30\n00:10,0\n").expect("write");
    let (s, _) = summary_of(&["--trace", trace.to_str().expect("utf-8")]);
    assert_eq!(s.sessions.arrived, 30);
    assert_eq!(s.sessions.running_at_start, 0);
    assert_eq!(s.server_pods_killed, 0);
}

#[test]
fn a_server_that_fits_no_node_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = dir.path().to_str().expect("utf-8 temp path");
    // 9 CPUs on a node of 8.
    let (args, config) = parse(&["--out", out, "--server-cpu-resource-request", "9000"]);
    let e = execute(&args, config, &|_, _| {}).expect_err("no slot");
    assert_eq!(e.exit_code(), EXIT_INVALID);
    assert!(e.to_string().contains("no server fits"), "{e}");
    assert!(!dir.path().join("report.json").exists());
}

#[test]
fn chart_is_labelled_with_axes_units_and_legend() {
    let dir = tempfile::tempdir().expect("tempdir");
    execute_in(dir.path(), &["--duration", "2h"]);
    let svg = String::from_utf8(read(dir.path(), "chart.svg")).expect("utf-8");
    for label in [
        "simulated time (hours from the start)",
        "sessions / slots (count)",
        "nodes (count)",
        "demand: running + waiting",
        "free slots",
        "running servers",
        "nodes paid for (all)",
    ] {
        assert!(svg.contains(label), "missing {label:?}");
    }
}

#[test]
fn report_json_holds_summary_config_and_one_row_per_minute() {
    let dir = tempfile::tempdir().expect("tempdir");
    execute_in(dir.path(), &["--duration", "2h", "--buffer-slot-size", "6"]);
    let text = String::from_utf8(read(dir.path(), "report.json")).expect("utf-8");
    let report: serde_json::Value = serde_json::from_str(&text).expect("valid JSON");
    assert_eq!(report["config"]["buffer_slot_size"], 6);
    assert_eq!(
        report["config"]["simulation_values"]["cluster-name"],
        "simulated"
    );
    assert_eq!(report["summary"]["server_pods_killed"], 0);
    assert_eq!(report["series"]["interval_sec"], 60);
    let rows = report["series"]["rows"].as_array().expect("rows");
    assert_eq!(rows.len(), 121, "minute 0 to minute 120");
    assert_eq!(rows[120][0], 7200);
    // One row per line keeps the file small and diffable.
    assert!(text.contains("\n      [7200, "));
}
