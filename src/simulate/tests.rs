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

/// Stdout without the `wrote` line, whose paths differ between two output folders.
fn without_paths(stdout: &str) -> String {
    stdout
        .lines()
        .filter(|l| !l.starts_with("wrote "))
        .collect::<Vec<_>>()
        .join("\n")
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
    assert_eq!(without_paths(&pa.stdout), without_paths(&pb.stdout));

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

/// The Agones comparison of `args` (with `--server-source agones`): rows and outcomes.
fn comparison_of(args: &[&str]) -> (Vec<ComparisonRow>, Vec<Outcome>) {
    let mut all = vec!["--server-source", "agones"];
    all.extend_from_slice(args);
    let (args, config) = parse(&all);
    let (input, scenario) = prepare(&args, config).expect("valid scenario");
    let workload = input
        .demand
        .workload(scenario.duration, input.mean_session, input.seed);
    compare_runs(&input, &scenario, &workload, &|_, _| {}).expect("runs")
}

/// The comparison on the built-in day with the defaults, computed once for the tests below.
fn built_in_day() -> &'static (Vec<ComparisonRow>, Vec<Outcome>) {
    static DAY: std::sync::OnceLock<(Vec<ComparisonRow>, Vec<Outcome>)> =
        std::sync::OnceLock::new();
    DAY.get_or_init(|| comparison_of(&[]))
}

/// A trace whose load ends: 150 concurrent sessions for 3 h, none after 03:20, until 06:00.
fn load_that_ends(dir: &Path) -> String {
    let trace = dir.join("ends.csv");
    std::fs::write(
        &trace,
        "time,concurrent_sessions\n0,150\n03:00,150\n03:20,0\n06:00,0\n",
    )
    .expect("write");
    trace.to_str().expect("utf-8").to_string()
}

fn figures(row: &ComparisonRow) -> report::FleetFigures {
    row.summary
        .agones
        .expect("a Fleet run has GameServer figures")
}

#[test]
fn agones_comparison_rows_are_pods_mode_then_agones_without_and_with_compaction() {
    let (rows, _) = built_in_day();
    let modes: Vec<&str> = rows.iter().map(|r| r.mode.as_str()).collect();
    assert_eq!(
        modes,
        [
            "pods mode",
            "agones, compaction off",
            "agones, compaction 30/min"
        ]
    );
    // Only the row with compaction compacts.
    let compacted: Vec<u64> = rows
        .iter()
        .map(|r| figures(r).game_servers_compacted)
        .collect();
    assert_eq!(compacted[..2], [0, 0]);
    assert!(compacted[2] > 0, "{compacted:?}");
    // The same day in every row.
    let arrived: Vec<u64> = rows.iter().map(|r| r.summary.sessions.arrived).collect();
    assert!(arrived.iter().all(|&a| a == arrived[0]), "{arrived:?}");
}

#[test]
fn agones_compaction_costs_fewer_node_hours_than_no_compaction_on_the_built_in_day() {
    let (rows, _) = built_in_day();
    let hours: Vec<f64> = rows.iter().map(|r| r.summary.node_hours).collect();
    assert!(
        hours[2] < hours[1],
        "with {} vs without {}",
        hours[2],
        hours[1]
    );
    assert!(
        hours[2] < hours[0],
        "with {} vs pods mode {}",
        hours[2],
        hours[0]
    );
}

#[test]
fn no_allocated_game_server_is_ever_lost_in_any_row_of_the_comparison() {
    let dir = tempfile::tempdir().expect("tempdir");
    let trace = load_that_ends(dir.path());
    let (ended, ended_outcomes) = comparison_of(&["--trace", &trace]);
    let (day, day_outcomes) = built_in_day();
    for (row, outcome) in day
        .iter()
        .zip(day_outcomes)
        .chain(ended.iter().zip(&ended_outcomes))
    {
        // An Allocated GameServer on a deleted node, or deleted, is a lost match.
        assert_eq!(figures(row).lost_matches, 0, "{}", row.mode);
        // No GameServer pod at all, Ready ones included, went with a deleted node.
        assert_eq!(row.summary.server_pods_killed, 0, "{}", row.mode);
        assert_eq!(outcome.failed_passes, 0, "{}", row.mode);
        assert!(
            row.summary.actions.delete > 0,
            "{}: deletes nodes",
            row.mode
        );
    }
}

#[test]
fn agones_compaction_returns_the_pool_to_its_minimum_after_load_ends() {
    let dir = tempfile::tempdir().expect("tempdir");
    let trace = load_that_ends(dir.path());
    // The trace ends soon after its load: scale-down without holds, so that what is measured
    // is compaction, not how long the holds last.
    let (rows, outcomes) = comparison_of(&[
        "--trace",
        &trace,
        "--scale-down-unneeded-sec",
        "0",
        "--scale-down-delay-after-add-sec",
        "0",
    ]);
    let at_end: Vec<u32> = rows.iter().map(|r| figures(r).nodes_at_end).collect();
    let minimum = 2;
    assert_eq!(at_end[2], minimum, "{at_end:?}");
    // Without compaction, idle Ready GameServers keep their nodes.
    assert!(at_end[1] > minimum && at_end[0] > minimum, "{at_end:?}");
    assert_eq!(outcomes[2].running_at_end, 0);
    assert!(rows[2].summary.node_hours < rows[1].summary.node_hours);
}

#[test]
fn same_seed_gives_the_same_agones_comparison_byte_for_byte() {
    let (a, b, c) = (
        tempfile::tempdir().expect("tempdir"),
        tempfile::tempdir().expect("tempdir"),
        tempfile::tempdir().expect("tempdir"),
    );
    let args = [
        "--server-source",
        "agones",
        "--duration",
        "6h",
        "--seed",
        "7",
    ];
    let pa = execute_in(a.path(), &args);
    let pb = execute_in(b.path(), &args);
    for name in ["report.json", "chart.svg", "comparison.json"] {
        assert_eq!(read(a.path(), name), read(b.path(), name), "{name} differs");
    }
    assert_eq!(without_paths(&pa.stdout), without_paths(&pb.stdout));
    assert!(
        pa.stdout.contains("agones, compaction 30/min"),
        "{}",
        pa.stdout
    );
    execute_in(
        c.path(),
        &[
            "--server-source",
            "agones",
            "--duration",
            "6h",
            "--seed",
            "8",
        ],
    );
    assert_ne!(
        read(a.path(), "comparison.json"),
        read(c.path(), "comparison.json")
    );
}

#[test]
fn pods_mode_output_carries_no_agones_figures() {
    let dir = tempfile::tempdir().expect("tempdir");
    let produced = execute_in(dir.path(), &["--duration", "2h"]);
    let report: serde_json::Value =
        serde_json::from_slice(&read(dir.path(), "report.json")).expect("json");
    assert!(report["summary"].get("agones").is_none());
    assert!(report["scenario"].get("fleet").is_none());
    assert!(report["config"].get("agones").is_none());
    assert!(!produced.stdout.contains("GameServers"));
    assert!(!produced.stdout.contains("comparison"));
    assert!(!dir.path().join("comparison.json").exists());
}

#[test]
fn a_compaction_rate_of_zero_leaves_out_the_row_with_compaction() {
    let (_, config) = parse(&[
        "--server-source",
        "agones",
        "--agones-compaction-per-minute",
        "0",
    ]);
    let configs = comparison_configs(&config.config);
    let sources: Vec<_> = configs
        .iter()
        .map(|c| (c.server_source, c.agones.compaction_per_minute))
        .collect();
    assert_eq!(
        sources,
        [(ServerSource::Pods, 0), (ServerSource::Agones, 0)]
    );
}

#[test]
fn the_fleet_buffer_is_buffer_slot_size_unless_given() {
    let fleet = |args: &[&str]| {
        let (args, config) = parse(args);
        prepare(&args, config).expect("valid").1.fleet
    };
    assert_eq!(fleet(&[]), None, "pods mode plays no Fleet");
    let spec = fleet(&["--server-source", "agones", "--buffer-slot-size", "5"]);
    assert_eq!(spec.map(|f| f.buffer_size), Some(5));
    // All the pool holds: maximum-node-pool-size 100 x 7 servers per node.
    assert_eq!(spec.map(|f| f.max_replicas), Some(700));
    let spec = fleet(&["--server-source", "agones", "--fleet-buffer-size", "9"]);
    assert_eq!(spec.map(|f| f.buffer_size), Some(9));
}

#[test]
fn compare_runs_fixed_buffers_and_the_target_on_the_same_day_killing_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let produced = execute_in(
        dir.path(),
        &["--compare", "--duration", "3h", "--sweep-buffer", "2..4"],
    );
    let json: serde_json::Value =
        serde_json::from_slice(&read(dir.path(), "compare.json")).expect("json");
    let rows = json["rows"].as_array().expect("rows");
    let policies: Vec<&str> = rows.iter().filter_map(|r| r["policy"].as_str()).collect();
    assert_eq!(policies.len(), 4, "{policies:?}");
    assert_eq!(&policies[..3], ["fixed 2", "fixed 3", "fixed 4"]);
    assert!(policies[3].starts_with("target 99"), "{policies:?}");
    // The same sessions in every row.
    let arrived: Vec<u64> = rows
        .iter()
        .filter_map(|r| r["summary"]["sessions"]["arrived"].as_u64())
        .collect();
    assert!(arrived.windows(2).all(|p| p[0] == p[1]), "{arrived:?}");
    assert_eq!(produced.servers_killed, 0);
    for header in [
        "instant start",
        "p99 wait",
        "node-hours",
        "cordon",
        "uncordon",
        "killed",
    ] {
        assert!(produced.stdout.contains(header), "{}", produced.stdout);
    }
    assert!(
        produced.stdout.contains("target 99.00 %"),
        "{}",
        produced.stdout
    );
}

#[test]
fn each_scenario_shapes_its_own_day_and_pool() {
    let scenario = |name: &str| {
        let (args, config) = parse(&["--scenario", name]);
        prepare(&args, config).expect("valid")
    };
    let (input, weekday) = scenario("weekday");
    assert_eq!(weekday.shape.slots_per_node(), 7);
    assert_eq!(weekday.shape.boot_delay, DEFAULT_BOOT_DELAY);
    assert_eq!(input.config.config.maximum_node_pool_size, 100);
    assert_eq!(scenario("slow-boot").1.shape.boot_delay, 300);
    assert_eq!(scenario("small-nodes").1.shape.slots_per_node(), 2);
    assert_eq!(scenario("big-nodes").1.shape.slots_per_node(), 30);
    let (launch, _) = scenario("launch");
    assert_eq!(launch.config.config.maximum_node_pool_size, 400);
    let noon = 12.5 * 3600.0;
    assert_eq!(
        launch.demand.concurrency(noon).map(|c| c.round()),
        input.demand.concurrency(noon).map(|c| (c * 10.0).round())
    );
    assert!(scenario("weekend")
        .0
        .demand
        .describe()
        .starts_with("weekend curve"));
    // What the user sets wins over the scenario.
    let (args, config) = parse(&["--scenario", "slow-boot", "--boot-delay", "60s"]);
    assert_eq!(
        prepare(&args, config).expect("valid").1.shape.boot_delay,
        60
    );
    let (args, config) = parse(&["--scenario", "launch", "--maximum-node-pool-size", "50"]);
    let (input, _) = prepare(&args, config).expect("valid");
    assert_eq!(input.config.config.maximum_node_pool_size, 50);
}
