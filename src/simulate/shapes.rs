//! Built-in day shapes for `simulate --scenario`: the demand curve of a day and the pool it
//! runs on, one per situation a buffer policy must handle (an ordinary weekday, a weekend with
//! two peaks, a launch, a cloud slow to boot, nodes of 2 and of 30 slots).
//!
//! A scenario fills in only what the user left unset: `--boot-delay`, `node-template-*` and
//! `maximum-node-pool-size` given anywhere win over it, so a scenario is a starting point, not
//! a lock.

use clap::ValueEnum;

use crate::config::NodeTemplate;

use super::demand::DAY_CURVE;

/// Share of the peak concurrency at each hour of a weekend day: a late, high night, a first
/// peak in the afternoon (14:00), a dip at teatime and the evening peak at 21:00.
pub const WEEKEND_CURVE: [f64; 24] = [
    0.70, 0.58, 0.45, 0.34, 0.27, 0.24, 0.24, 0.28, 0.36, 0.46, 0.58, 0.70, 0.79, 0.84, 0.85, 0.80,
    0.72, 0.70, 0.78, 0.90, 0.98, 1.00, 0.93, 0.82,
];

/// An hour of the day when arrivals are multiplied, on top of the hourly curve.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Spike {
    /// First second of the spike, from the start of the day.
    pub from_sec: u64,
    /// Second the spike ends.
    pub to_sec: u64,
    /// Factor on the curve (and so on the arrival rate) while it lasts.
    pub factor: f64,
}

/// A day's demand: an hourly curve of the peak's share (linear in between) and an optional
/// spike.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct DayShape {
    /// Name in the summary ("built-in day curve", "weekend curve"...).
    pub name: &'static str,
    /// Share of the peak at 00:00 .. 23:00.
    pub hours: &'static [f64; 24],
    /// A launch or a tournament.
    pub spike: Option<Spike>,
}

impl DayShape {
    /// The built-in day: [`DAY_CURVE`], no spike.
    pub const DAY: DayShape = DayShape {
        name: "built-in day curve",
        hours: &DAY_CURVE,
        spike: None,
    };

    /// Share of the peak at second `t` of the run (days repeat).
    pub fn share(&self, t: f64) -> f64 {
        let h = (t / 3600.0).rem_euclid(24.0);
        let i = h.floor() as usize % 24;
        let frac = h - h.floor();
        let (a, b) = (self.hours[i], self.hours[(i + 1) % 24]);
        let base = a + (b - a) * frac;
        let second = t.rem_euclid(86_400.0);
        match self.spike {
            Some(s) if second >= s.from_sec as f64 && second < s.to_sec as f64 => base * s.factor,
            _ => base,
        }
    }

    /// The highest share of the day (the thinning bound of arrivals).
    pub fn max_share(&self) -> f64 {
        let curve = self.hours.iter().copied().fold(0.0, f64::max);
        let spiked = self.spike.map_or(0.0, |s| {
            // The spike's hours, at their highest.
            let first = (s.from_sec / 3600) as usize;
            let last = (s.to_sec.saturating_sub(1) / 3600) as usize;
            (first..=last.min(first + 24))
                .flat_map(|h| [self.hours[h % 24], self.hours[(h + 1) % 24]])
                .fold(0.0, f64::max)
                * s.factor
        });
        curve.max(spiked)
    }

    /// The peak hour of the curve (for the summary), e.g. "20:00".
    pub fn peak_hour(&self) -> String {
        let (hour, _) = self
            .hours
            .iter()
            .enumerate()
            .fold(
                (0, f64::MIN),
                |best, (h, v)| if *v > best.1 { (h, *v) } else { best },
            );
        format!("{hour:02}:00")
    }
}

/// `--scenario`: a built-in day and the pool it runs on.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, ValueEnum)]
pub enum BuiltIn {
    /// The built-in day curve (quiet night, evening peak at 20:00) on 7-slot nodes that are
    /// Ready 2m30s after the order: the default.
    #[default]
    Weekday,
    /// Two peaks (14:00 and 21:00) and a busier night.
    Weekend,
    /// The weekday with 10x the arrivals from 12:00 to 13:00 (a release or a free weekend);
    /// maximum-node-pool-size 400 unless set.
    Launch,
    /// The weekday on a cloud whose nodes take 5 minutes to be Ready.
    SlowBoot,
    /// The weekday on nodes of 2 slots (2500m CPU allocatable); maximum-node-pool-size 250
    /// unless set.
    SmallNodes,
    /// The weekday on nodes of 30 slots (30500m CPU, 64Gi allocatable: a 32-vCPU machine less
    /// its system reserve).
    BigNodes,
}

impl BuiltIn {
    /// Every scenario, in the order the README lists them.
    pub const ALL: [BuiltIn; 6] = [
        BuiltIn::Weekday,
        BuiltIn::Weekend,
        BuiltIn::Launch,
        BuiltIn::SlowBoot,
        BuiltIn::SmallNodes,
        BuiltIn::BigNodes,
    ];

    /// The flag value naming it.
    pub fn as_str(self) -> &'static str {
        match self {
            BuiltIn::Weekday => "weekday",
            BuiltIn::Weekend => "weekend",
            BuiltIn::Launch => "launch",
            BuiltIn::SlowBoot => "slow-boot",
            BuiltIn::SmallNodes => "small-nodes",
            BuiltIn::BigNodes => "big-nodes",
        }
    }

    /// Its demand curve.
    pub fn day(self) -> DayShape {
        match self {
            BuiltIn::Weekend => DayShape {
                name: "weekend curve",
                hours: &WEEKEND_CURVE,
                spike: None,
            },
            BuiltIn::Launch => DayShape {
                name: "built-in day curve with a 10x launch hour at 12:00",
                spike: Some(Spike {
                    from_sec: 12 * 3600,
                    to_sec: 13 * 3600,
                    factor: 10.0,
                }),
                ..DayShape::DAY
            },
            _ => DayShape::DAY,
        }
    }

    /// Seconds from order to Ready, when the scenario is about it.
    pub fn boot_delay(self) -> Option<u64> {
        (self == BuiltIn::SlowBoot).then_some(300)
    }

    /// The node shape, when the scenario is about it.
    pub fn node(self) -> Option<NodeTemplate> {
        match self {
            BuiltIn::SmallNodes => Some(NodeTemplate {
                cpu_millis: 2500,
                memory_bytes: 8 << 30,
                pods: 110,
            }),
            BuiltIn::BigNodes => Some(NodeTemplate {
                cpu_millis: 30_500,
                memory_bytes: 64 << 30,
                pods: 110,
            }),
            _ => None,
        }
    }

    /// `maximum-node-pool-size` when none is set: room for the scenario's peak.
    pub fn max_nodes(self) -> Option<u32> {
        match self {
            BuiltIn::Launch => Some(400),
            BuiltIn::SmallNodes => Some(250),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_launch_hour_has_ten_times_the_weekday_and_only_that_hour() {
        let launch = BuiltIn::Launch.day();
        let day = DayShape::DAY;
        let noon_half = 12.5 * 3600.0;
        assert!((launch.share(noon_half) - 10.0 * day.share(noon_half)).abs() < 1e-9);
        assert_eq!(launch.share(11.5 * 3600.0), day.share(11.5 * 3600.0));
        assert_eq!(launch.share(13.0 * 3600.0), day.share(13.0 * 3600.0));
        assert!(launch.max_share() >= 10.0 * day.share(12.99 * 3600.0));
    }

    #[test]
    fn the_weekend_has_two_peaks_with_a_dip_between() {
        let w = BuiltIn::Weekend.day();
        let at = |h: f64| w.share(h * 3600.0);
        assert!(at(14.0) > at(12.0) && at(14.0) > at(17.0), "afternoon peak");
        assert!(at(21.0) > at(17.0) && at(21.0) >= at(23.0), "evening peak");
        assert_eq!(w.peak_hour(), "21:00");
        assert_eq!(DayShape::DAY.peak_hour(), "20:00");
    }
}
