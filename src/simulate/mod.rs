//! `kubescaler simulate`: the real planner and scale loop against a simulated node pool and
//! cloud, with game sessions arriving along a day-shaped demand curve (or a trace), in
//! simulated time. It shows kubescaler at work without a cluster, and gives the evidence to
//! pick a buffer size: how many sessions start at once against how many node-hours it costs.
//!
//! - [`settings`]: the daemon's configuration loader, with the keys only the daemon needs
//!   filled in ([`settings::FILLED_WHEN_MISSING`]) and a simulation's own defaults for
//!   `maximum-node-pool-size` and `log-level` when they are not given.
//! - [`demand`]: the sessions (seeded ChaCha8, drawn up front).
//! - [`world`]: the simulated pool, scheduler, `Kubernetes` and `NodePoolProvider`; with
//!   `--server-source agones`, an Agones Fleet whose GameServers are the servers.
//! - [`engine`]: steps simulated time and runs [`crate::scaler::Scaler::reconcile`].
//! - [`report`] and [`svg`]: the summary, `report.json`, the charts, the sweep table, the
//!   Agones comparison (pods mode, Agones without and with compaction on the same day).
//!
//! The same command line (and config) gives the same stdout, `report.json` and SVG, byte for
//! byte: the wall time goes to stderr only.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::cli::SimulateArgs;
use crate::config::{Config, ConfigSources, LogFormat, NodeTemplate};
use crate::model::{Resources, ServerSource};

pub mod args;
pub mod demand;
pub mod engine;
pub mod policies;
pub mod report;
pub mod settings;
pub mod shapes;
pub mod svg;
pub mod world;

use self::args::human_secs;
use self::demand::{Demand, Workload};
use self::engine::{Outcome, Scenario, SimError};
use self::report::{
    cheapest_meeting, ComparisonReport, ComparisonRow, ConfigReport, Report, ScenarioReport,
    Series, Summary, SweepReport,
};
use self::settings::SimConfig;
use self::world::{FleetSpec, PoolShape, GAME_SERVER_READY_DELAY};

/// Shape of a simulated node when no `node-template-*` keys are given: 8 CPUs, 16 GiB, 110
/// pods allocatable.
pub const DEFAULT_NODE: NodeTemplate = NodeTemplate {
    cpu_millis: 8000,
    memory_bytes: 16 << 30,
    pods: 110,
};

/// Seconds from order to Ready when neither `--boot-delay` nor the scenario says.
pub const DEFAULT_BOOT_DELAY: u64 = 150;

/// Simulated time when neither `--duration` nor a trace gives one.
pub const DEFAULT_DURATION: u64 = 86_400;

/// Exit code of a failed run (a file could not be written, or a server pod was killed).
const EXIT_FAILURE: u8 = 1;
/// Exit code of an invalid configuration, trace or scenario.
const EXIT_INVALID: u8 = 2;

/// Everything a run is made of besides the pool shape and durations.
#[derive(Clone, Debug, PartialEq)]
pub struct SimInput {
    /// The configuration.
    pub config: SimConfig,
    /// Where the sessions come from.
    pub demand: Demand,
    /// RNG seed.
    pub seed: u64,
    /// Mean session length, seconds.
    pub mean_session: u64,
}

/// Why `simulate` stopped.
#[derive(Debug, thiserror::Error)]
pub enum SimulateError {
    /// Invalid configuration.
    #[error("{0}")]
    Config(#[from] crate::config::ConfigErrors),
    /// The trace could not be read.
    #[error("kubescaler simulate: {0}")]
    Trace(String),
    /// The scenario cannot run.
    #[error("kubescaler simulate: {0}")]
    Scenario(#[from] SimError),
    /// An output file could not be written.
    #[error("kubescaler simulate: cannot write {path}: {source}")]
    Write {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
}

impl SimulateError {
    fn exit_code(&self) -> u8 {
        match self {
            SimulateError::Config(_)
            | SimulateError::Trace(_)
            | SimulateError::Scenario(SimError::NoSlot { .. }) => EXIT_INVALID,
            SimulateError::Scenario(SimError::Runtime(_)) | SimulateError::Write { .. } => {
                EXIT_FAILURE
            }
        }
    }
}

/// The files and text a `simulate` command produced.
#[derive(Clone, Debug, PartialEq)]
pub struct Produced {
    /// What goes to stdout.
    pub stdout: String,
    /// Files written, in order.
    pub files: Vec<PathBuf>,
    /// Server pods killed, over every run.
    pub servers_killed: u64,
    /// Live matches (Allocated GameServers) lost, over every run with a Fleet.
    pub matches_lost: u64,
}

/// The `simulate` subcommand: runs, prints, writes, and returns the exit code (0; 1 when a
/// server pod was killed or a file could not be written; 2 for an invalid configuration,
/// trace or scenario).
pub fn main(args: &SimulateArgs, sources: &ConfigSources) -> ExitCode {
    let config = match settings::load(sources) {
        Ok(c) => c,
        Err(errors) => {
            eprintln!("{errors}");
            return ExitCode::from(EXIT_INVALID);
        }
    };
    init_logging(config.config.log_format, &config.config.log_level);
    let started = Instant::now();
    let bar = Progress::new(started);
    match execute(args, config, &|done, total| bar.update(done, total)) {
        Ok(produced) => {
            bar.finish();
            print!("{}", produced.stdout);
            let _ = std::io::stdout().flush();
            eprintln!(
                "simulated in {:.2} s of wall time",
                started.elapsed().as_secs_f64()
            );
            if produced.servers_killed > 0 {
                eprintln!(
                    "kubescaler simulate: {} server pods were killed by a node deletion: this is a bug, please report it with the command line",
                    produced.servers_killed
                );
                return ExitCode::from(EXIT_FAILURE);
            }
            if produced.matches_lost > 0 {
                eprintln!(
                    "kubescaler simulate: {} Allocated GameServers (live matches) were lost: this is a bug, please report it with the command line",
                    produced.matches_lost
                );
                return ExitCode::from(EXIT_FAILURE);
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            bar.finish();
            eprintln!("{e}");
            ExitCode::from(e.exit_code())
        }
    }
}

/// Runs what `args` asks with `config`, writes the files and returns the text for stdout.
/// `progress(done, total)` counts simulated seconds over every run.
pub fn execute(
    args: &SimulateArgs,
    config: SimConfig,
    progress: &(dyn Fn(u64, u64) + Sync),
) -> Result<Produced, SimulateError> {
    let (input, scenario) = prepare(args, config)?;
    let slots = engine::check_shape(&scenario.shape)?;
    let workload = input
        .demand
        .workload(scenario.duration, input.mean_session, input.seed);
    if args.compare {
        let buffers: Vec<u32> = args
            .sweep_buffer
            .unwrap_or(DEFAULT_COMPARE_BUFFERS)
            .sizes()
            .collect();
        return compare_buffer_policies(
            args, &input, &scenario, &workload, slots, &buffers, progress,
        );
    }
    match args.sweep_buffer {
        None if scenario.fleet.is_some() => {
            compare(args, &input, &scenario, &workload, slots, progress)
        }
        None => single(args, &input, &scenario, &workload, slots, progress),
        Some(range) => {
            let buffers: Vec<u32> = range.sizes().collect();
            sweep(
                args, &input, &scenario, &workload, slots, &buffers, progress,
            )
        }
    }
}

/// The run's inputs from the command line and the configuration.
pub fn prepare(
    args: &SimulateArgs,
    config: SimConfig,
) -> Result<(SimInput, Scenario), SimulateError> {
    let demand = match &args.trace {
        Some(path) => demand::read_trace(path).map_err(SimulateError::Trace)?,
        None => Demand::DayCurve {
            peak: f64::from(args.peak_sessions),
            shape: args.scenario.day(),
        },
    };
    let duration = args
        .duration
        .map(|d| d.secs())
        .or_else(|| demand.trace_span())
        .unwrap_or(DEFAULT_DURATION);
    let mut config = config;
    // A scenario's pool, where the user set none.
    if let Some(max) = args.scenario.max_nodes() {
        if let Some(slot) = config
            .simulation_values
            .iter_mut()
            .find(|(k, _)| *k == "maximum-node-pool-size")
        {
            let max = max.max(config.config.minimum_node_pool_size);
            config.config.maximum_node_pool_size = max;
            slot.1 = format!("{max} (--scenario {})", args.scenario.as_str());
        }
    }
    let node = config
        .config
        .node_template
        .or(args.scenario.node())
        .unwrap_or(DEFAULT_NODE);
    let shape = PoolShape {
        node: Resources {
            cpu_millis: node.cpu_millis,
            memory_bytes: node.memory_bytes,
        },
        node_pods: node.pods,
        daemon: Resources {
            cpu_millis: args.daemon_cpu.0,
            memory_bytes: args.daemon_memory.0,
        },
        daemon_pods: args.daemon_pods,
        server: config.config.slot_request(),
        boot_delay: args
            .boot_delay
            .map(args::SimDuration::secs)
            .or(args.scenario.boot_delay())
            .unwrap_or(DEFAULT_BOOT_DELAY),
        placement: args.placement,
    };
    // Agones mode plays a Fleet whose FleetAutoscaler keeps `buffer-slot-size` Ready
    // GameServers unless told otherwise: the same number of warm slots as pods mode's buffer.
    let c = &config.config;
    let fleet = (c.server_source == ServerSource::Agones).then(|| FleetSpec {
        buffer_size: args.fleet_buffer_size.unwrap_or(c.buffer_slot_size),
        max_replicas: c
            .maximum_node_pool_size
            .saturating_mul(shape.slots_per_node()),
        ready_delay: GAME_SERVER_READY_DELAY,
    });
    let input = SimInput {
        config,
        demand,
        seed: args.seed,
        mean_session: args.session_length.secs().max(1),
    };
    let scenario = Scenario {
        duration,
        step: args.step.secs().max(1),
        shape,
        fleet,
    };
    Ok((input, scenario))
}

fn write(
    dir: &Path,
    name: &str,
    content: &str,
    files: &mut Vec<PathBuf>,
) -> Result<(), SimulateError> {
    let path = dir.join(name);
    std::fs::create_dir_all(dir)
        .and_then(|()| std::fs::write(&path, content))
        .map_err(|source| SimulateError::Write {
            path: path.clone(),
            source,
        })?;
    files.push(path);
    Ok(())
}

/// The outputs of one run: `report.json` and `chart.svg` contents.
pub fn render_run(input: &SimInput, scenario: &Scenario, outcome: &Outcome) -> (String, String) {
    let summary = Summary::of(outcome, scenario.duration);
    let report = Report {
        kubescaler_version: env!("CARGO_PKG_VERSION"),
        scenario: ScenarioReport::of(input, scenario, outcome.slots_per_node),
        config: ConfigReport::of(input),
        series: Series::of(outcome, scenario.sample_interval()),
        summary: summary.clone(),
    };
    let json = report.to_json();
    let mode = match outcome.fleet {
        Some(_) => format!(" ({})", mode_name(&input.config.config)),
        None => String::new(),
    };
    let title = format!(
        "kubescaler simulate{mode}: buffer {}, {}, seed {}",
        outcome.buffer,
        human_secs(scenario.duration),
        input.seed
    );
    let subtitle = format!(
        "{:.1} node-hours, peak {} nodes ({} servers each); {} of sessions started at once, p99 wait {}; {} server pods killed",
        summary.node_hours,
        summary.peak_nodes,
        outcome.slots_per_node,
        report::percent(summary.sessions.instant_share),
        human_secs(summary.wait_sec.p99),
        summary.server_pods_killed
    );
    let chart = svg::run_chart(&outcome.series, scenario.duration, &title, &subtitle);
    (json, chart)
}

fn single(
    args: &SimulateArgs,
    input: &SimInput,
    scenario: &Scenario,
    workload: &Workload,
    slots: u32,
    progress: &(dyn Fn(u64, u64) + Sync),
) -> Result<Produced, SimulateError> {
    let total = scenario.duration;
    let outcome = engine::run(&input.config.config, scenario, workload, &|done| {
        progress(done, total)
    })?;
    let (json, chart) = render_run(input, scenario, &outcome);
    let mut files = Vec::new();
    write(&args.out, "report.json", &json, &mut files)?;
    write(&args.out, "chart.svg", &chart, &mut files)?;
    let summary = Summary::of(&outcome, scenario.duration);
    let mut stdout = report::header(input, scenario, slots);
    stdout.push('\n');
    stdout.push_str(&report::summary_text(&summary));
    stdout.push_str(&wrote(&files));
    Ok(Produced {
        stdout,
        files,
        servers_killed: summary.server_pods_killed,
        matches_lost: 0,
    })
}

/// A row's name in the Agones comparison.
fn mode_name(config: &Config) -> String {
    match (config.server_source, config.agones.compaction_per_minute) {
        (ServerSource::Pods, _) => "pods mode".to_string(),
        (ServerSource::Agones, 0) => "agones, compaction off".to_string(),
        (ServerSource::Agones, n) => format!("agones, compaction {n}/min"),
    }
}

/// The configurations the Agones comparison runs, the configured one last: kubescaler in
/// pods mode (every GameServer pod is a server pod, so an idle Ready one keeps its node), in
/// Agones mode without compaction, and in Agones mode with the configured compaction (left
/// out when that is 0: it is the row without).
pub fn comparison_configs(config: &Config) -> Vec<Config> {
    let mut pods = config.clone();
    pods.server_source = ServerSource::Pods;
    pods.agones = Default::default();
    let mut off = config.clone();
    off.agones.compaction_per_minute = 0;
    let mut configs = vec![pods, off];
    if config.agones.compaction_per_minute > 0 {
        configs.push(config.clone());
    }
    configs
}

/// Runs the [`comparison_configs`] of `input` (in parallel): the table's rows and the runs'
/// outcomes, in the same order, the configured run last.
pub fn compare_runs(
    input: &SimInput,
    scenario: &Scenario,
    workload: &Workload,
    progress: &(dyn Fn(u64, u64) + Sync),
) -> Result<(Vec<ComparisonRow>, Vec<Outcome>), SimError> {
    let configs = comparison_configs(&input.config.config);
    let outcomes = run_configs(scenario, workload, &configs, progress)?;
    let rows = configs
        .iter()
        .zip(&outcomes)
        .map(|(c, o)| ComparisonRow {
            mode: mode_name(c),
            server_source: c.server_source.as_str(),
            compaction_per_minute: c.agones.compaction_per_minute,
            summary: Summary::of(o, scenario.duration),
        })
        .collect();
    Ok((rows, outcomes))
}

/// Agones mode: the configured run's summary and files, and the comparison of the modes on
/// the same day, seed and Fleet (`comparison.json`, the table).
fn compare(
    args: &SimulateArgs,
    input: &SimInput,
    scenario: &Scenario,
    workload: &Workload,
    slots: u32,
    progress: &(dyn Fn(u64, u64) + Sync),
) -> Result<Produced, SimulateError> {
    let (rows, outcomes) = compare_runs(input, scenario, workload, progress)?;
    let mut files = Vec::new();
    let mut stdout = report::header(input, scenario, slots);
    if let (Some(configured), Some(row)) = (outcomes.last(), rows.last()) {
        let (json, chart) = render_run(input, scenario, configured);
        write(&args.out, "report.json", &json, &mut files)?;
        write(&args.out, "chart.svg", &chart, &mut files)?;
        stdout.push('\n');
        stdout.push_str(&report::summary_text(&row.summary));
    }
    let comparison = ComparisonReport {
        kubescaler_version: env!("CARGO_PKG_VERSION"),
        scenario: ScenarioReport::of(input, scenario, slots),
        config: ConfigReport::of(input),
        rows: rows.clone(),
    };
    let json = serde_json::to_string_pretty(&comparison).unwrap_or_default() + "\n";
    write(&args.out, "comparison.json", &json, &mut files)?;
    stdout.push_str(&format!(
        "\ncomparison on the same day, seed {} and Fleet (buffer {} Ready GameServers):\n",
        input.seed,
        scenario.fleet.map_or(0, |f| f.buffer_size)
    ));
    stdout.push_str(&report::comparison_table(
        &rows,
        input.config.config.minimum_node_pool_size,
    ));
    stdout.push_str(&wrote(&files));
    Ok(Produced {
        stdout,
        files,
        servers_killed: rows.iter().map(|r| r.summary.server_pods_killed).sum(),
        matches_lost: rows
            .iter()
            .filter_map(|r| r.summary.agones)
            .map(|a| a.lost_matches)
            .sum(),
    })
}

fn wrote(files: &[PathBuf]) -> String {
    let names: Vec<String> = files.iter().map(|f| f.display().to_string()).collect();
    format!("\nwrote {}\n", names.join(", "))
}

/// Runs the scenario once per buffer size on up to as many threads as there are cores; the
/// summaries come back in buffer order whatever the threads did.
pub fn run_buffers(
    input: &SimInput,
    scenario: &Scenario,
    workload: &Workload,
    buffers: &[u32],
    progress: &(dyn Fn(u64, u64) + Sync),
) -> Result<Vec<Outcome>, SimError> {
    let configs: Vec<Config> = buffers
        .iter()
        .map(|&buffer| {
            let mut config = input.config.config.clone();
            config.buffer_slot_size = buffer;
            config
        })
        .collect();
    run_configs(scenario, workload, &configs, progress)
}

/// Runs the scenario once per configuration on up to as many threads as there are cores; the
/// outcomes come back in the order of `configs` whatever the threads did.
pub fn run_configs(
    scenario: &Scenario,
    workload: &Workload,
    configs: &[Config],
    progress: &(dyn Fn(u64, u64) + Sync),
) -> Result<Vec<Outcome>, SimError> {
    let total = scenario.duration * configs.len() as u64;
    let done = AtomicU64::new(0);
    let next = AtomicUsize::new(0);
    let results: Mutex<Vec<Option<Result<Outcome, SimError>>>> =
        Mutex::new((0..configs.len()).map(|_| None).collect());
    let threads = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .min(configs.len())
        .max(1);
    std::thread::scope(|scope| {
        for _ in 0..threads {
            scope.spawn(|| loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some(config) = configs.get(i) else {
                    break;
                };
                let last = AtomicU64::new(0);
                let result = engine::run(config, scenario, workload, &|t| {
                    let before = last.swap(t, Ordering::Relaxed);
                    let sum = done.fetch_add(t.saturating_sub(before), Ordering::Relaxed);
                    progress(sum + t.saturating_sub(before), total);
                });
                let mut slots = results.lock().unwrap_or_else(|e| e.into_inner());
                slots[i] = Some(result);
            });
        }
    });
    results
        .into_inner()
        .unwrap_or_else(|e| e.into_inner())
        .into_iter()
        .flatten()
        .collect()
}

#[allow(clippy::too_many_arguments)]
fn sweep(
    args: &SimulateArgs,
    input: &SimInput,
    scenario: &Scenario,
    workload: &Workload,
    slots: u32,
    buffers: &[u32],
    progress: &(dyn Fn(u64, u64) + Sync),
) -> Result<Produced, SimulateError> {
    let outcomes = run_buffers(input, scenario, workload, buffers, progress)?;
    let runs: Vec<Summary> = outcomes
        .iter()
        .map(|o| Summary::of(o, scenario.duration))
        .collect();
    let target = args.target_instant.fraction();
    let chosen = cheapest_meeting(&runs, target);
    let mut config = ConfigReport::of(input);
    config.buffer_slot_size = buffers.first().copied().unwrap_or(0);
    let sweep = SweepReport {
        kubescaler_version: env!("CARGO_PKG_VERSION"),
        scenario: ScenarioReport::of(input, scenario, slots),
        config,
        target_instant: target,
        cheapest_meeting_target: chosen,
        runs: runs.clone(),
    };
    let json = serde_json::to_string_pretty(&sweep).unwrap_or_default() + "\n";
    let chart = svg::sweep_chart(
        &runs,
        target,
        chosen,
        &format!(
            "Buffer sweep: cost vs. instant starts ({}, seed {})",
            human_secs(scenario.duration),
            input.seed
        ),
        &format!(
            "cost: node-hours over {} (nodes paid from order to deletion)",
            human_secs(scenario.duration)
        ),
    );
    let mut files = Vec::new();
    write(&args.out, "sweep.json", &json, &mut files)?;
    write(&args.out, "sweep.svg", &chart, &mut files)?;
    let what = format!(
        "sweep   buffer-slot-size {}..{}, target {} instant starts\n\n",
        buffers.first().copied().unwrap_or(0),
        buffers.last().copied().unwrap_or(0),
        report::percent(target)
    );
    let table = report::sweep_table(&runs, target, chosen);
    Ok(many_runs(
        report::header(input, scenario, slots) + &what + &table,
        files,
        &runs,
    ))
}

/// What a mode of many runs produced: its text (the header, what ran and the table), then the
/// files it wrote, and the servers and matches lost over all its runs.
fn many_runs<'a>(
    text: String,
    files: Vec<PathBuf>,
    runs: impl IntoIterator<Item = &'a Summary>,
) -> Produced {
    let (mut servers_killed, mut matches_lost) = (0, 0);
    for s in runs {
        servers_killed += s.server_pods_killed;
        matches_lost += s.agones.map_or(0, |a| a.lost_matches);
    }
    Produced {
        stdout: text + &wrote(&files),
        files,
        servers_killed,
        matches_lost,
    }
}

/// Fixed buffers `--compare` runs when `--sweep-buffer` does not say.
pub const DEFAULT_COMPARE_BUFFERS: args::BufferRange = args::BufferRange { first: 0, last: 12 };

/// `--compare`: fixed buffers and the target policy on the same day (`compare.json`, the
/// table).
#[allow(clippy::too_many_arguments)]
fn compare_buffer_policies(
    args: &SimulateArgs,
    input: &SimInput,
    scenario: &Scenario,
    workload: &Workload,
    slots: u32,
    buffers: &[u32],
    progress: &(dyn Fn(u64, u64) + Sync),
) -> Result<Produced, SimulateError> {
    let comparison = policies::compare_policies(input, scenario, workload, buffers, progress)?;
    let json = serde_json::to_string_pretty(&comparison).unwrap_or_default() + "\n";
    let mut files = Vec::new();
    write(&args.out, "compare.json", &json, &mut files)?;
    let what = format!(
        "compare buffer-slot-size {}..{} (fixed) with buffer-policy target, target {} instant starts\n\n",
        buffers.first().copied().unwrap_or(0),
        buffers.last().copied().unwrap_or(0),
        report::percent(comparison.target_instant)
    );
    let table = policies::policy_table(&comparison);
    Ok(many_runs(
        report::header(input, scenario, slots) + &what + &table,
        files,
        comparison.rows.iter().map(|r| &r.summary),
    ))
}

/// A progress bar on stderr that appears only when a run lasts more than half a second of
/// wall time, and only on a terminal.
struct Progress {
    bar: ProgressBar,
    started: Instant,
    shown: AtomicBool,
}

impl Progress {
    fn new(started: Instant) -> Self {
        let bar = ProgressBar::with_draw_target(None, ProgressDrawTarget::hidden());
        if let Ok(style) = ProgressStyle::with_template(
            "{spinner} simulating [{bar:30}] {percent:>3}% ({elapsed}, ~{eta} left)",
        ) {
            bar.set_style(style.progress_chars("=> "));
        }
        Progress {
            bar,
            started,
            shown: AtomicBool::new(false),
        }
    }

    fn update(&self, done: u64, total: u64) {
        self.bar.set_length(total);
        self.bar.set_position(done);
        if self.started.elapsed() > Duration::from_millis(500)
            && !self.shown.swap(true, Ordering::Relaxed)
        {
            self.bar.set_draw_target(ProgressDrawTarget::stderr());
        }
    }

    fn finish(&self) {
        self.bar.finish_and_clear();
    }
}

/// Logs to stderr with the simulated time as timestamp. A subscriber already installed (in
/// tests) is kept.
fn init_logging(format: LogFormat, level: &str) {
    let Ok(filter) = tracing_subscriber::EnvFilter::try_new(level) else {
        return;
    };
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_timer(SimTime);
    let _ = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().try_init(),
    };
}

/// Log timestamps in simulated time: `sim 19:02:10` (`sim 1d 03:00:00` past the first day).
struct SimTime;

impl tracing_subscriber::fmt::time::FormatTime for SimTime {
    fn format_time(&self, w: &mut tracing_subscriber::fmt::format::Writer<'_>) -> std::fmt::Result {
        let t = engine::LOG_CLOCK.get().max(0) as u64;
        write!(w, "sim {}", report::clock_time(t))
    }
}

#[cfg(test)]
mod tests;
