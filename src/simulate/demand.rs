//! Demand: when game sessions arrive and how long they last.
//!
//! Arrivals come from a concurrency curve `c(t)` (the built-in day curve, or a trace of
//! concurrent sessions) as a non-homogeneous Poisson process of rate `c(t) / mean session
//! length` (Little's law: in steady state about `c(t)` sessions then run at once), generated
//! by thinning; or they are read from a trace of sessions started. Session lengths are
//! log-normal (σ = 0.5) around the mean, clamped to [1 min, 4 × mean].
//!
//! Everything is drawn up front from one ChaCha8 stream, in a fixed order, and never depends on
//! what the scaler does: every run of a buffer sweep sees the very same sessions (common random
//! numbers), so the runs differ only by the buffer. Only `next_u64` of the stream is used and
//! the conversions to floats are written here, so the numbers depend on the ChaCha algorithm
//! alone, not on the version of a distributions crate.

use std::path::Path;

use jiff::Timestamp;

pub use super::shapes::DayShape;
use rand_chacha::rand_core::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// Share of the peak concurrency at each hour of the built-in day (00:00 to 23:00, linear in
/// between): a quiet night with the low at 05:00, a climb through the day and an evening peak
/// at 20:00.
pub const DAY_CURVE: [f64; 24] = [
    0.62, 0.48, 0.36, 0.27, 0.21, 0.18, 0.19, 0.23, 0.29, 0.36, 0.43, 0.49, 0.54, 0.58, 0.62, 0.66,
    0.71, 0.78, 0.87, 0.95, 1.00, 0.97, 0.88, 0.76,
];

/// Spread of the log-normal session length (σ of its logarithm).
const LENGTH_SIGMA: f64 = 0.5;
/// Shortest session, seconds.
const MIN_LENGTH: u64 = 60;

/// The seeded random stream of a run.
pub struct Rand(ChaCha8Rng);

impl Rand {
    /// The stream for `seed`: the seed's little-endian bytes start ChaCha's 32-byte key.
    pub fn new(seed: u64) -> Self {
        let mut key = [0u8; 32];
        key[..8].copy_from_slice(&seed.to_le_bytes());
        Rand(ChaCha8Rng::from_seed(key))
    }

    /// Uniform in (0, 1]: 53 random bits, never zero (so its logarithm is finite).
    pub fn unit(&mut self) -> f64 {
        ((self.0.next_u64() >> 11) + 1) as f64 * (1.0 / (1u64 << 53) as f64)
    }

    /// Exponential with the given mean.
    pub fn exponential(&mut self, mean: f64) -> f64 {
        -self.unit().ln() * mean
    }

    /// Standard normal (Box–Muller, one of the pair).
    pub fn normal(&mut self) -> f64 {
        let (u1, u2) = (self.unit(), self.unit());
        (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
    }
}

/// One session of the workload.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Arrival {
    /// Second (from the start) its server pod is created.
    pub at: u64,
    /// Seconds it runs once started.
    pub length: u64,
}

/// Everything the simulation plays: the sessions running at the start and those arriving.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Workload {
    /// Remaining lengths of the sessions already running at second 0 (a warm start, so the
    /// run does not begin with an empty pool).
    pub warm: Vec<u64>,
    /// Arrivals, in time order.
    pub arrivals: Vec<Arrival>,
}

/// Where the demand comes from.
#[derive(Clone, Debug, PartialEq)]
pub enum Demand {
    /// A day curve (the built-in [`DAY_CURVE`] or a `--scenario`'s) scaled to this peak of
    /// concurrent sessions.
    DayCurve {
        /// Concurrent sessions at the peak hour.
        peak: f64,
        /// The hourly shares of the peak, and a spike if any.
        shape: DayShape,
    },
    /// A trace of concurrent sessions: `(second, sessions)`, linear in between, the first
    /// value before the first point and the last after the last.
    Concurrency(Vec<(u64, f64)>),
    /// A trace of sessions started: `(second, count)`, each row's sessions spread evenly over
    /// the time to the next row (the last row over the same span as the row before).
    Starts(Vec<(u64, u64)>),
}

impl Demand {
    /// Expected concurrent sessions at second `t`, for curves; `None` for a start trace.
    pub fn concurrency(&self, t: f64) -> Option<f64> {
        match self {
            Demand::DayCurve { peak, shape } => Some(peak * shape.share(t)),
            Demand::Concurrency(points) => Some(interpolate(points, t)),
            Demand::Starts(_) => None,
        }
    }

    /// The highest concurrency of a curve (the thinning bound).
    fn peak(&self) -> f64 {
        match self {
            Demand::DayCurve { peak, shape } => *peak * shape.max_share(),
            Demand::Concurrency(points) => points.iter().map(|p| p.1).fold(0.0, f64::max),
            Demand::Starts(_) => 0.0,
        }
    }

    /// The span a trace covers, seconds; `None` for the built-in curve.
    pub fn trace_span(&self) -> Option<u64> {
        match self {
            Demand::DayCurve { .. } => None,
            Demand::Concurrency(points) => points.last().map(|p| p.0).filter(|t| *t > 0),
            Demand::Starts(rows) => {
                let (last, before) = (rows.last()?, rows.len().checked_sub(2));
                let span = before.map_or(60, |i| last.0 - rows[i].0);
                Some(last.0 + span)
            }
        }
    }

    /// A short description for the summary and the report.
    pub fn describe(&self) -> String {
        match self {
            Demand::DayCurve { peak, shape } => format!(
                "{}, peak {peak:.0} concurrent sessions at {}",
                shape.name,
                shape.peak_hour()
            ),
            Demand::Concurrency(points) => format!(
                "trace of concurrent sessions ({} points, peak {:.0})",
                points.len(),
                self.peak()
            ),
            Demand::Starts(rows) => format!(
                "trace of sessions started ({} rows, {} sessions)",
                rows.len(),
                rows.iter().map(|r| r.1).sum::<u64>()
            ),
        }
    }

    /// Draws the workload of `duration` seconds with sessions of `mean_length` seconds on
    /// average. The same inputs always give the same workload.
    pub fn workload(&self, duration: u64, mean_length: u64, seed: u64) -> Workload {
        let mut rand = Rand::new(seed);
        let mean = mean_length.max(1) as f64;
        let length = |rand: &mut Rand| session_length(rand, mean);
        let mut out = Workload::default();

        if let Some(c0) = self.concurrency(0.0) {
            // Running sessions at the start have, on average, half their length left: draw a
            // length and keep a uniform share of it.
            let warm = c0.round() as u64;
            for _ in 0..warm {
                let full = length(&mut rand) as f64;
                out.warm.push(((full * rand.unit()).ceil() as u64).max(1));
            }
        }

        match self {
            Demand::DayCurve { .. } | Demand::Concurrency(_) => {
                let rate_max = self.peak() / mean;
                if rate_max <= 0.0 {
                    return out;
                }
                let mut t = 0.0;
                loop {
                    t += rand.exponential(1.0 / rate_max);
                    if t >= duration as f64 {
                        break;
                    }
                    let rate = self.concurrency(t).unwrap_or(0.0) / mean;
                    if rand.unit() * rate_max <= rate {
                        out.arrivals.push(Arrival {
                            at: (t.ceil() as u64).clamp(1, duration),
                            length: length(&mut rand),
                        });
                    }
                }
            }
            Demand::Starts(rows) => {
                for (i, &(at, count)) in rows.iter().enumerate() {
                    let span = match (rows.get(i + 1), i.checked_sub(1)) {
                        (Some(next), _) => next.0 - at,
                        (None, Some(prev)) => at - rows[prev].0,
                        (None, None) => 60,
                    } as f64;
                    for k in 0..count {
                        let t = at as f64 + (k as f64 + 0.5) * span / count as f64;
                        let t = (t.ceil() as u64).max(1);
                        if t > duration {
                            break;
                        }
                        out.arrivals.push(Arrival {
                            at: t,
                            length: length(&mut rand),
                        });
                    }
                }
            }
        }
        out
    }
}

/// A log-normal session length around `mean` seconds, clamped to [1 min, 4 × mean].
fn session_length(rand: &mut Rand, mean: f64) -> u64 {
    let mu = mean.ln() - LENGTH_SIGMA * LENGTH_SIGMA / 2.0;
    let drawn = (mu + LENGTH_SIGMA * rand.normal()).exp();
    let max = (4.0 * mean).max(MIN_LENGTH as f64);
    drawn.clamp(MIN_LENGTH as f64, max).round() as u64
}

/// Piecewise-linear value at `t`; flat before the first and after the last point.
fn interpolate(points: &[(u64, f64)], t: f64) -> f64 {
    let Some(first) = points.first() else {
        return 0.0;
    };
    if t <= first.0 as f64 {
        return first.1;
    }
    for pair in points.windows(2) {
        let ((t0, v0), (t1, v1)) = (pair[0], pair[1]);
        if t <= t1 as f64 {
            let span = (t1 - t0) as f64;
            return v0 + (v1 - v0) * (t - t0 as f64) / span;
        }
    }
    points.last().map_or(0.0, |p| p.1)
}

/// Reads a trace CSV: a header `time,sessions_started` or `time,concurrent_sessions`, then one
/// row per line. Times are seconds from the start (`90`, `90.5`), `HH:MM[:SS]` from the start
/// (hours may pass 24), or RFC 3339 timestamps (relative to the first row); they must
/// increase. Blank lines and lines starting with `#` are skipped.
pub fn read_trace(path: &Path) -> Result<Demand, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read trace {}: {e}", path.display()))?;
    parse_trace(&text).map_err(|e| format!("trace {}: {e}", path.display()))
}

/// [`read_trace`] on the file's text.
pub fn parse_trace(text: &str) -> Result<Demand, String> {
    let mut lines = text
        .lines()
        .enumerate()
        .map(|(i, l)| (i + 1, l.trim()))
        .filter(|(_, l)| !l.is_empty() && !l.starts_with('#'));
    let (header_line, header) = lines
        .next()
        .ok_or("is empty (expected a header time,sessions_started or time,concurrent_sessions)")?;
    let columns: Vec<String> = header
        .split(',')
        .map(|c| c.trim().to_ascii_lowercase())
        .collect();
    let starts = match columns.iter().map(String::as_str).collect::<Vec<_>>()[..] {
        ["time", "sessions_started"] => true,
        ["time", "concurrent_sessions"] => false,
        _ => {
            return Err(format!(
            "line {header_line}: header {header:?} must be time,sessions_started or time,concurrent_sessions"
        ))
        }
    };
    let mut origin: Option<Timestamp> = None;
    let mut rows: Vec<(u64, f64)> = Vec::new();
    for (n, line) in lines {
        let (time, value) = line
            .split_once(',')
            .ok_or_else(|| format!("line {n}: expected two columns, found {line:?}"))?;
        let t = parse_time(time.trim(), &mut origin).map_err(|e| format!("line {n}: {e}"))?;
        let v: f64 = value
            .trim()
            .parse()
            .ok()
            .filter(|v: &f64| v.is_finite() && *v >= 0.0)
            .ok_or_else(|| format!("line {n}: {:?} is not a count >= 0", value.trim()))?;
        if let Some(&(prev, _)) = rows.last() {
            if t <= prev {
                return Err(format!(
                    "line {n}: time {t} s does not increase (previous {prev} s)"
                ));
            }
        }
        rows.push((t, v));
    }
    if rows.is_empty() {
        return Err("has a header but no rows".to_string());
    }
    Ok(if starts {
        Demand::Starts(
            rows.into_iter()
                .map(|(t, v)| (t, v.round() as u64))
                .collect(),
        )
    } else {
        Demand::Concurrency(rows)
    })
}

/// A trace time in seconds from the start.
fn parse_time(s: &str, origin: &mut Option<Timestamp>) -> Result<u64, String> {
    if let Ok(secs) = s.parse::<f64>() {
        if secs.is_finite() && secs >= 0.0 {
            return Ok(secs.round() as u64);
        }
        return Err(format!("time {s:?} is negative"));
    }
    if let Ok(ts) = s.parse::<Timestamp>() {
        let start = *origin.get_or_insert(ts);
        let secs = ts.duration_since(start).as_secs();
        return u64::try_from(secs).map_err(|_| format!("time {s:?} is before the first row"));
    }
    let parts: Vec<&str> = s.split(':').collect();
    if (2..=3).contains(&parts.len()) {
        let nums: Option<Vec<u64>> = parts.iter().map(|p| p.parse().ok()).collect();
        if let Some(nums) = nums {
            let (h, m, sec) = (nums[0], nums[1], nums.get(2).copied().unwrap_or(0));
            if m < 60 && sec < 60 {
                return Ok(h * 3600 + m * 60 + sec);
            }
        }
    }
    Err(format!(
        "time {s:?} is not seconds, HH:MM[:SS] or an RFC 3339 timestamp"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_gives_the_same_workload_and_another_seed_another() {
        let demand = Demand::DayCurve {
            peak: 100.0,
            shape: DayShape::DAY,
        };
        let a = demand.workload(86_400, 1200, 7);
        let b = demand.workload(86_400, 1200, 7);
        let c = demand.workload(86_400, 1200, 8);
        assert_eq!(a, b);
        assert_ne!(a, c);
    }

    #[test]
    fn day_curve_arrivals_follow_littles_law() {
        // Mean concurrency of the curve × seconds / mean length = expected arrivals.
        let demand = Demand::DayCurve {
            peak: 200.0,
            shape: DayShape::DAY,
        };
        let mean_share = DAY_CURVE.iter().sum::<f64>() / 24.0;
        let expected = 200.0 * mean_share * 86_400.0 / 1200.0;
        let got = demand.workload(86_400, 1200, 1).arrivals.len() as f64;
        assert!(
            (got - expected).abs() < expected * 0.05,
            "{got} vs {expected}"
        );
    }

    #[test]
    fn session_lengths_stay_within_bounds_around_the_mean() {
        let w = Demand::DayCurve {
            peak: 200.0,
            shape: DayShape::DAY,
        }
        .workload(86_400, 1200, 3);
        let lengths: Vec<u64> = w.arrivals.iter().map(|a| a.length).collect();
        assert!(lengths.iter().all(|l| (60..=4800).contains(l)));
        let mean = lengths.iter().sum::<u64>() as f64 / lengths.len() as f64;
        assert!((mean - 1200.0).abs() < 60.0, "mean {mean}");
    }

    #[test]
    fn arrivals_are_in_time_order_within_the_run() {
        let w = Demand::DayCurve {
            peak: 50.0,
            shape: DayShape::DAY,
        }
        .workload(3600, 600, 1);
        assert!(w.arrivals.windows(2).all(|p| p[0].at <= p[1].at));
        assert!(w.arrivals.iter().all(|a| (1..=3600).contains(&a.at)));
    }

    #[test]
    fn start_trace_spreads_each_row_over_its_interval() {
        let d = parse_trace("time,sessions_started\n0,2\n00:01,4\n").expect("valid");
        assert_eq!(d, Demand::Starts(vec![(0, 2), (60, 4)]));
        assert_eq!(d.trace_span(), Some(120));
        let w = d.workload(120, 600, 1);
        let at: Vec<u64> = w.arrivals.iter().map(|a| a.at).collect();
        assert_eq!(at, vec![15, 45, 68, 83, 98, 113]);
        assert!(w.warm.is_empty());
    }

    #[test]
    fn concurrency_trace_accepts_timestamps_and_interpolates() {
        let d = parse_trace(
            "# exported\ntime,concurrent_sessions\n2025-01-01T00:00:00Z,10\n2025-01-01T01:00:00Z,30\n",
        )
        .expect("valid");
        assert_eq!(d.concurrency(1800.0), Some(20.0));
        assert_eq!(d.concurrency(7200.0), Some(30.0));
        assert_eq!(d.trace_span(), Some(3600));
        assert_eq!(d.workload(3600, 600, 1).warm.len(), 10);
    }

    #[test]
    fn bad_traces_are_refused_with_the_line() {
        let e = |s: &str| parse_trace(s).expect_err("invalid");
        assert!(e("").contains("empty"));
        assert!(e("t,v\n").contains("line 1: header"));
        assert!(e("# comment\nt,v\n").contains("line 2: header"));
        assert!(e("time,sessions_started\n").contains("no rows"));
        assert!(e("time,sessions_started\n10,1\n5,1\n").contains("line 3"));
        assert!(e("time,sessions_started\n10,-1\n").contains("line 2"));
        assert!(e("time,sessions_started\nnoon,1\n").contains("line 2"));
    }
}
