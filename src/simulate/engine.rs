//! The driver: moves simulated time forward in steps and runs the real scale loop
//! ([`Scaler::reconcile`]) on simulated time, the way [`Scaler::run`] does: a pass at the
//! start, then one whenever a change event would arrive (a node registered, turned Ready or was
//! cordoned, a server pod was created, bound or ended: the daemon's 0.5 s debounce falls within
//! one step) and at the latest one tick (`scale-loop-tick-sec`) after the previous pass.
//!
//! Within a step, in order: nodes register or turn Ready, sessions end, new sessions arrive,
//! the scheduler binds waiting servers, the pass runs (if due), the scheduler binds again (an
//! uncordon may have freed slots), then the step is accounted. With a Fleet, GameServers turn
//! Ready with the nodes, and each binding of the scheduler is preceded by the allocations of
//! waiting matches and the Fleet's replica update ([`super::world`]'s `fleet`).
//!
//! No real time passes: the loop's clock is the simulated one ([`Scaler::with_clock`]) and the
//! passes run on a current-thread runtime whose futures never wait.

use std::cell::Cell;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex};

use crate::config::Config;
use crate::scaler::{Clock, Scaler};

use super::demand::Workload;
use super::world::{self, lock, Calls, Census, FleetSpec, PoolShape, SimCloud, SimCluster, World};

thread_local! {
    /// Simulated second of the run on this thread, for the log timestamps.
    pub static LOG_CLOCK: Cell<i64> = const { Cell::new(0) };
}

/// What to simulate besides the configuration.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Scenario {
    /// Simulated seconds.
    pub duration: u64,
    /// Seconds per step.
    pub step: u64,
    /// The pool.
    pub shape: PoolShape,
    /// The Agones Fleet whose GameServers are the servers (`--server-source agones`), or
    /// `None`: every session's server is a pod of its own.
    pub fleet: Option<FleetSpec>,
}

impl Scenario {
    /// Seconds between two points of the time series: a minute, coarser for long runs so a
    /// run keeps at most 2,880 points.
    pub fn sample_interval(&self) -> u64 {
        let per_point = self.duration.div_ceil(2880).max(60);
        per_point.div_ceil(60) * 60
    }
}

/// One point of the time series.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Sample {
    /// Simulated second.
    pub t: u64,
    /// The counts at that second.
    pub census: Census,
}

/// Everything one run measured.
#[derive(Clone, Debug, PartialEq)]
pub struct Outcome {
    /// The buffer the run used.
    pub buffer: u32,
    /// Servers per node.
    pub slots_per_node: u32,
    /// Nodes at the start.
    pub initial_nodes: u32,
    /// Sum over the run of nodes existing × seconds.
    pub node_seconds: u64,
    /// Most nodes at once.
    pub peak_nodes: u32,
    /// Per arrived session, in arrival order: seconds it waited for a slot (so far, for one
    /// still waiting at the end).
    pub waits: Vec<u64>,
    /// Sessions that started within the step they arrived.
    pub instant: u64,
    /// Arrived sessions still waiting at the end.
    pub waiting_at_end: u64,
    /// Sessions (warm ones included) that ended normally.
    pub ended: u64,
    /// Servers running at the end.
    pub running_at_end: u64,
    /// Nodes at the end.
    pub nodes_at_end: u32,
    /// The Fleet of the run, if its servers were GameServers.
    pub fleet: Option<FleetSpec>,
    /// Sessions running at the start.
    pub warm_sessions: u64,
    /// What the loop did.
    pub calls: Calls,
    /// Passes run.
    pub passes: u64,
    /// Passes that failed.
    pub failed_passes: u64,
    /// Deletions cancelled by the live re-check.
    pub cancelled_deletions: u64,
    /// Passes whose plan carried warnings.
    pub warned_passes: u64,
    /// The first warning and its simulated second.
    pub first_warning: Option<(u64, String)>,
    /// The time series.
    pub series: Vec<Sample>,
}

impl Outcome {
    /// Sessions that arrived during the run.
    pub fn arrived(&self) -> u64 {
        self.waits.len() as u64
    }
}

/// Why a run could not take place.
#[derive(Debug, thiserror::Error)]
pub enum SimError {
    /// The runtime could not be built.
    #[error("cannot start the async runtime: {0}")]
    Runtime(#[from] std::io::Error),
    /// No server fits on a node.
    #[error(
        "no server fits on a node: {server_cpu}m CPU / {server_memory} B per server, node \
         {node_cpu}m / {node_memory} B / {node_pods} pods minus DaemonSet pods \
         {daemon_cpu}m / {daemon_memory} B / {daemon_pods} pods"
    )]
    NoSlot {
        /// Server CPU.
        server_cpu: u64,
        /// Server memory.
        server_memory: u64,
        /// Node CPU.
        node_cpu: u64,
        /// Node memory.
        node_memory: u64,
        /// Node pods.
        node_pods: u32,
        /// DaemonSet CPU.
        daemon_cpu: u64,
        /// DaemonSet memory.
        daemon_memory: u64,
        /// DaemonSet pods.
        daemon_pods: u32,
    },
}

/// Checks that a server fits on a node of `shape`.
pub fn check_shape(shape: &PoolShape) -> Result<u32, SimError> {
    match shape.slots_per_node() {
        0 => Err(SimError::NoSlot {
            server_cpu: shape.server.cpu_millis,
            server_memory: shape.server.memory_bytes,
            node_cpu: shape.node.cpu_millis,
            node_memory: shape.node.memory_bytes,
            node_pods: shape.node_pods,
            daemon_cpu: shape.daemon.cpu_millis,
            daemon_memory: shape.daemon.memory_bytes,
            daemon_pods: shape.daemon_pods,
        }),
        n => Ok(n),
    }
}

/// Runs `workload` through the scale loop configured by `config`. `progress` is called with
/// the simulated seconds done, about once per simulated hour.
pub fn run(
    config: &Config,
    scenario: &Scenario,
    workload: &Workload,
    progress: &(dyn Fn(u64) + Sync),
) -> Result<Outcome, SimError> {
    let slots = check_shape(&scenario.shape)?;
    let runtime = tokio::runtime::Builder::new_current_thread().build()?;

    // Start warm: enough Ready nodes for the running sessions plus the buffer (and the
    // Fleet's Ready GameServers).
    let fleet_buffer = scenario.fleet.map_or(0, |f| u64::from(f.buffer_size));
    let needed = (workload.warm.len() as u64 + u64::from(config.buffer_slot_size) + fleet_buffer)
        .div_ceil(u64::from(slots));
    let initial_nodes = (needed.min(u64::from(config.maximum_node_pool_size)) as u32)
        .max(config.minimum_node_pool_size);
    let mut w = World::new(scenario.shape, initial_nodes);
    if let Some(spec) = scenario.fleet {
        w = w.with_fleet(spec);
    }
    for &remaining in &workload.warm {
        w.add_warm_session(remaining);
    }
    w.settle();
    w.take_changed();
    let world = Arc::new(Mutex::new(w));

    let now = Arc::new(AtomicI64::new(0));
    let clock: Clock = {
        let now = now.clone();
        Arc::new(move || world::timestamp(now.load(Ordering::Relaxed)))
    };
    let mut scaler = Scaler::new(
        Arc::new(SimCluster::new(world.clone())),
        Arc::new(SimCloud::new(world.clone())),
        config,
    )
    .with_clock(clock);

    let tick = config.scale_loop_tick_sec.max(1);
    let step = scenario.step.max(1);
    let interval = scenario.sample_interval();
    let mut out = Outcome {
        buffer: config.buffer_slot_size,
        slots_per_node: slots,
        initial_nodes,
        node_seconds: 0,
        peak_nodes: initial_nodes,
        waits: Vec::new(),
        instant: 0,
        waiting_at_end: 0,
        ended: 0,
        running_at_end: 0,
        nodes_at_end: 0,
        fleet: scenario.fleet,
        warm_sessions: workload.warm.len() as u64,
        calls: Calls::default(),
        passes: 0,
        failed_passes: 0,
        cancelled_deletions: 0,
        warned_passes: 0,
        first_warning: None,
        series: Vec::new(),
    };

    runtime.block_on(async {
        let pass = async |scaler: &mut Scaler, t: u64, out: &mut Outcome| {
            out.passes += 1;
            match scaler.reconcile().await {
                Ok(report) => {
                    out.cancelled_deletions += report.cancelled_deletions.len() as u64;
                    if let Some(w) = report.plan.warnings.first() {
                        out.warned_passes += 1;
                        out.first_warning.get_or_insert_with(|| (t, w.clone()));
                    }
                }
                Err(_) => out.failed_passes += 1,
            }
        };

        LOG_CLOCK.set(0);
        pass(&mut scaler, 0, &mut out).await;
        {
            let mut w = lock(&world);
            w.schedule();
            out.series.push(Sample {
                t: 0,
                census: w.census(),
            });
        }
        let mut next_pass = tick;
        let mut next_sample = interval;
        let mut next_progress = 3600;
        let mut arrivals = workload.arrivals.iter().peekable();
        let mut t = 0;
        while t < scenario.duration {
            let prev = t;
            t = (t + step).min(scenario.duration);
            now.store(t as i64, Ordering::Relaxed);
            LOG_CLOCK.set(t as i64);
            let changed = {
                let mut w = lock(&world);
                w.advance(t as i64);
                while let Some(a) = arrivals.next_if(|a| a.at <= t) {
                    w.arrive(a.length);
                }
                w.schedule();
                w.take_changed()
            };
            if changed || t >= next_pass {
                pass(&mut scaler, t, &mut out).await;
                next_pass = t + tick;
                lock(&world).schedule();
            }
            let census = lock(&world).census();
            out.node_seconds += u64::from(census.nodes) * (t - prev);
            out.peak_nodes = out.peak_nodes.max(census.nodes);
            if t >= next_sample
                || t == scenario.duration && out.series.last().is_some_and(|s| s.t < t)
            {
                out.series.push(Sample { t, census });
                next_sample += interval;
            }
            if t >= next_progress {
                progress(t);
                next_progress += 3600;
            }
        }
    });

    let w = lock(&world);
    let records = w.session_records();
    out.instant = records.iter().filter(|r| r.started && r.wait == 0).count() as u64;
    out.waiting_at_end = records.iter().filter(|r| !r.started).count() as u64;
    out.waits = records.iter().map(|r| r.wait).collect();
    out.ended = w.sessions_ended();
    let census = w.census();
    out.running_at_end = u64::from(census.running);
    out.nodes_at_end = census.nodes;
    out.calls = w.calls();
    progress(scenario.duration);
    Ok(out)
}
