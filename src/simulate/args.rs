//! Typed values of the `simulate` command line, each with the parser clap calls, so a bad
//! value is refused at parse time (exit code 2) with what would be accepted.

use std::fmt;
use std::str::FromStr;

use clap::ValueEnum;

use crate::quantity::{parse_cpu_millis, parse_memory_bytes};

/// A simulated span of time, whole seconds: `24h`, `90m`, `1h30m`, `2d`, `45s` or bare seconds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct SimDuration(pub u64);

impl SimDuration {
    /// Seconds.
    pub fn secs(self) -> u64 {
        self.0
    }
}

impl FromStr for SimDuration {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        const ALLOWED: &str = "e.g. 24h, 90m, 1h30m, 2d, 45s or a number of seconds";
        let s = s.trim();
        if s.is_empty() {
            return Err(format!("empty duration ({ALLOWED})"));
        }
        if let Ok(secs) = s.parse::<u64>() {
            return Ok(SimDuration(secs));
        }
        let mut total: u64 = 0;
        let mut number = String::new();
        for c in s.chars() {
            if c.is_ascii_digit() {
                number.push(c);
                continue;
            }
            let unit = match c {
                'd' => 86_400,
                'h' => 3_600,
                'm' => 60,
                's' => 1,
                _ => return Err(format!("unknown unit {c:?} in duration {s:?} ({ALLOWED})")),
            };
            let n: u64 = number
                .parse()
                .map_err(|_| format!("a unit without a number in duration {s:?} ({ALLOWED})"))?;
            total = n
                .checked_mul(unit)
                .and_then(|v| total.checked_add(v))
                .ok_or_else(|| format!("duration {s:?} is too long"))?;
            number.clear();
        }
        if !number.is_empty() {
            return Err(format!(
                "number without a unit at the end of duration {s:?} ({ALLOWED})"
            ));
        }
        Ok(SimDuration(total))
    }
}

impl fmt::Display for SimDuration {
    /// As [`human_secs`].
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&human_secs(self.0))
    }
}

pub use crate::model::human_secs;

/// Parses a [`SimDuration`] of at least one second (for `--step`, `--boot-delay`...).
pub fn parse_positive_duration(s: &str) -> Result<SimDuration, String> {
    let d: SimDuration = s.parse()?;
    if d.0 == 0 {
        return Err("must be at least 1 second".to_string());
    }
    Ok(d)
}

/// An inclusive range of buffer sizes, `0..12` (0 to 12), also written `0..=12` or `0-12`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BufferRange {
    /// Smallest buffer size.
    pub first: u32,
    /// Largest buffer size (inclusive).
    pub last: u32,
}

impl BufferRange {
    /// The sizes, smallest first.
    pub fn sizes(self) -> impl Iterator<Item = u32> {
        self.first..=self.last
    }
}

impl FromStr for BufferRange {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        const ALLOWED: &str = "FIRST..LAST, inclusive, e.g. 0..12";
        let s = s.trim();
        let (a, b) = s
            .split_once("..=")
            .or_else(|| s.split_once(".."))
            .or_else(|| s.split_once('-'))
            .ok_or_else(|| format!("{s:?} is not a range ({ALLOWED})"))?;
        let num = |v: &str| {
            v.trim()
                .parse::<u32>()
                .map_err(|_| format!("{v:?} is not a buffer size ({ALLOWED})"))
        };
        let (first, last) = (num(a)?, num(b)?);
        if first > last {
            return Err(format!("range {s:?} is empty ({ALLOWED})"));
        }
        if last - first >= 200 {
            return Err(format!("range {s:?} has more than 200 sizes"));
        }
        Ok(BufferRange { first, last })
    }
}

/// A share between 0 and 1, given as `0.99` or `99%`. Kept in parts per million so that it
/// compares exactly and derives `Eq`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Share(pub u32);

impl Share {
    /// As a fraction of one.
    pub fn fraction(self) -> f64 {
        f64::from(self.0) / 1e6
    }
}

impl FromStr for Share {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim();
        let (text, scale) = match s.strip_suffix('%') {
            Some(p) => (p.trim(), 100.0),
            None => (s, 1.0),
        };
        let v: f64 = text
            .parse()
            .map_err(|_| format!("{s:?} is not a share (e.g. 0.99 or 99%)"))?;
        let v = v / scale;
        if !(0.0..=1.0).contains(&v) {
            return Err(format!("{s:?} is not between 0 and 1 (0% and 100%)"));
        }
        Ok(Share((v * 1e6).round() as u32))
    }
}

/// CPU in millicores, from a quantity (`300m`, `0.5`, `1`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Millicores(pub u64);

impl FromStr for Millicores {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        parse_cpu_millis(s.trim())
            .map(Millicores)
            .map_err(|e| e.to_string())
    }
}

/// Memory in bytes, from a quantity (`512Mi`, `1Gi`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Bytes(pub u64);

impl FromStr for Bytes {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        parse_memory_bytes(s.trim())
            .map(Bytes)
            .map_err(|e| e.to_string())
    }
}

/// How the simulated scheduler picks among the nodes a server fits on.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, ValueEnum)]
pub enum Placement {
    /// The fullest node first (kube-scheduler's `MostAllocated` scoring, as game-server setups
    /// configure it): servers pack together and surplus nodes empty sooner.
    #[default]
    MostAllocated,
    /// The emptiest node first (kube-scheduler's default `LeastAllocated` scoring): servers
    /// spread out, which keeps nodes busy and slows scale-down.
    LeastAllocated,
}

impl Placement {
    /// The flag value naming it.
    pub fn as_str(self) -> &'static str {
        match self {
            Placement::MostAllocated => "most-allocated",
            Placement::LeastAllocated => "least-allocated",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_accept_units_and_bare_seconds() {
        let d = |s: &str| s.parse::<SimDuration>().map(SimDuration::secs);
        assert_eq!(d("24h"), Ok(86_400));
        assert_eq!(d("1h30m"), Ok(5_400));
        assert_eq!(d("2d"), Ok(172_800));
        assert_eq!(d("45"), Ok(45));
        assert_eq!(d("10s"), Ok(10));
        assert!(d("10x").is_err());
        assert!(d("h").is_err());
        assert!(d("10h5").is_err());
        assert!(parse_positive_duration("0s").is_err());
        assert_eq!(SimDuration(93_784).to_string(), "26h 3m 4s");
        assert_eq!(SimDuration(2 * 86_400 + 61).to_string(), "2d 1m 1s");
        assert_eq!(SimDuration(86_400).to_string(), "24h");
    }

    #[test]
    fn buffer_range_is_inclusive_in_every_spelling() {
        let r = |s: &str| {
            s.parse::<BufferRange>()
                .map(|r| r.sizes().collect::<Vec<_>>())
        };
        assert_eq!(r("0..3"), Ok(vec![0, 1, 2, 3]));
        assert_eq!(r("2..=4"), Ok(vec![2, 3, 4]));
        assert_eq!(r("5-5"), Ok(vec![5]));
        assert!(r("4..2").is_err());
        assert!(r("a..2").is_err());
    }

    #[test]
    fn share_accepts_fraction_or_percent_within_bounds() {
        assert_eq!("0.99".parse::<Share>(), Ok(Share(990_000)));
        assert_eq!("99.5%".parse::<Share>(), Ok(Share(995_000)));
        assert!("1.5".parse::<Share>().is_err());
        assert!("x".parse::<Share>().is_err());
    }
}
