//! `buffer-schedule`: time-of-day windows that override the node pool's buffer, the pure part.
//!
//! Demand for game servers follows the players' clock (evenings, weekends), so a window is
//! written in the local time of an explicit IANA time zone and checked there: daylight saving
//! moves the window with the zone instead of leaving it an hour off half the year.
//!
//! Syntax, windows separated by `;`, the first window (in written order) that contains the
//! current instant wins:
//!
//! ```text
//! Mon-Fri 18:00-23:00 Europe/Berlin buffer=12; Sat,Sun 10:00-02:00 UTC target=0.995
//! ```

use std::str::FromStr;

use jiff::civil::Weekday;
use jiff::tz::TimeZone;
use jiff::Timestamp;

/// The parsed `buffer-schedule`: windows in written order, so overlaps resolve predictably.
#[derive(Debug, Clone, Default)]
pub struct BufferSchedule {
    windows: Vec<Window>,
}

/// What a window sets while it is in force: the same two ways the buffer is sized otherwise.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Override {
    /// A fixed buffer of this many free slots (`buffer=N`).
    Buffer(u32),
    /// A start-time target: the share of matches that must find a free slot at once
    /// (`target=0.99` or `target=99%`), above 0.5 and below 1.
    Target(f64),
}

/// One window of the schedule: days, a local time range, its time zone and the override.
#[derive(Debug, Clone)]
pub struct Window {
    /// Days the window starts on, Monday first; a window past midnight ends on the next day.
    days: [bool; 7],
    /// The days as canonical text (`*`, `Mon-Fri`, `Sat,Sun`), kept for [`Window::describe`].
    days_text: String,
    /// Start, minutes after local midnight, `0..1440`.
    start: u16,
    /// End, minutes after local midnight, `0..=1440`; at or before `start` it wraps past midnight.
    end: u16,
    tz: TimeZone,
    /// The zone's canonical IANA name (jiff matches names case-insensitively).
    zone: String,
    setting: Override,
    /// The override as canonical text, keeping a percentage written as one.
    setting_text: String,
}

const DAY_NAMES: [&str; 7] = ["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"];
const MAX_BUFFER: u32 = 10_000;
const MINUTES_PER_DAY: u16 = 24 * 60;
const EXAMPLE: &str = "Mon-Fri 18:00-23:00 Europe/Berlin buffer=12";

impl BufferSchedule {
    /// No windows: the pool's own buffer always applies.
    pub fn is_empty(&self) -> bool {
        self.windows.is_empty()
    }

    /// The windows in written order, e.g. to log the schedule at start-up.
    pub fn windows(&self) -> &[Window] {
        &self.windows
    }

    /// The first window (in written order) that contains `now`, with what it sets; `None`
    /// means the pool's own buffer applies.
    pub fn in_force(&self, now: Timestamp) -> Option<(&Window, Override)> {
        self.windows
            .iter()
            .find(|w| w.contains(now))
            .map(|w| (w, w.setting))
    }
}

/// The canonical text, windows joined by `; ` (what `check-config` prints; it parses back to
/// the same schedule).
impl std::fmt::Display for BufferSchedule {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let text: Vec<String> = self.windows.iter().map(Window::describe).collect();
        f.write_str(&text.join("; "))
    }
}

/// Serialised as its canonical text.
impl serde::Serialize for BufferSchedule {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

/// Two schedules are the same when their canonical texts are.
impl PartialEq for BufferSchedule {
    fn eq(&self, other: &Self) -> bool {
        self.to_string() == other.to_string()
    }
}

impl FromStr for BufferSchedule {
    type Err = String;

    /// Parses `;`-separated windows; empty pieces (a trailing `;`, an empty value) are skipped
    /// so that an unset or blank key simply means no schedule.
    fn from_str(value: &str) -> Result<Self, String> {
        let windows = value
            .split(';')
            .map(str::trim)
            .filter(|text| !text.is_empty())
            .enumerate()
            .map(|(i, text)| {
                parse_window(text).map_err(|why| format!("window {} {text:?}: {why}", i + 1))
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(BufferSchedule { windows })
    }
}

impl Window {
    /// The canonical text of the window (`Mon-Fri 18:00-23:00 Europe/Berlin buffer=12`), for
    /// log and reason lines, so they say which window applied the way it can be written.
    pub fn describe(&self) -> String {
        format!(
            "{} {}-{} {} {}",
            self.days_text,
            clock(self.start),
            clock(self.end),
            self.zone,
            self.setting_text
        )
    }

    /// Whether `now`, seen on the zone's local clock, falls in the window.
    fn contains(&self, now: Timestamp) -> bool {
        let local = now.to_zoned(self.tz.clone());
        let time = local.time();
        // The clock's fields are small and non-negative, so the conversion cannot fail.
        let minute =
            u16::try_from(i32::from(time.hour()) * 60 + i32::from(time.minute())).unwrap_or(0);
        let weekday = local.weekday();
        if self.start < self.end {
            self.starts_on(weekday) && (self.start..self.end).contains(&minute)
        } else {
            // Past midnight: the evening part on a listed day, the early part on the day after.
            (self.starts_on(weekday) && minute >= self.start)
                || (self.starts_on(weekday.previous()) && minute < self.end)
        }
    }

    fn starts_on(&self, day: Weekday) -> bool {
        let index = usize::try_from(day.to_monday_zero_offset()).unwrap_or(0);
        self.days.get(index).copied().unwrap_or(false)
    }
}

fn parse_window(text: &str) -> Result<Window, String> {
    let tokens: Vec<&str> = text.split_whitespace().collect();
    let [days, times, zone, settings @ ..] = tokens.as_slice() else {
        return Err(format!(
            "needs days, a time range, a time zone and buffer=N or target=SHARE, like {EXAMPLE:?}"
        ));
    };
    let (days, days_text) = parse_days(days)?;
    let (start, end) = parse_times(times)?;
    let (tz, zone) = parse_zone(zone)?;
    let (setting, setting_text) = parse_setting(settings)?;
    Ok(Window {
        days,
        days_text,
        start,
        end,
        tz,
        zone,
        setting,
        setting_text,
    })
}

fn parse_days(text: &str) -> Result<([bool; 7], String), String> {
    if text == "*" {
        return Ok(([true; 7], "*".into()));
    }
    let mut days = [false; 7];
    let mut canonical = Vec::new();
    for item in text.split(',') {
        if item.is_empty() {
            return Err(format!(
                "days {text:?} has an empty entry: write a list without spaces, like Sat,Sun"
            ));
        }
        match item.split_once('-') {
            Some((first, last)) => {
                let (first, last) = (parse_day(first)?, parse_day(last)?);
                // A range runs forward and may wrap the week (Fri-Mon), as people say it.
                let mut day = first;
                loop {
                    days[day] = true;
                    if day == last {
                        break;
                    }
                    day = (day + 1) % 7;
                }
                canonical.push(format!("{}-{}", DAY_NAMES[first], DAY_NAMES[last]));
            }
            None => {
                let day = parse_day(item)?;
                days[day] = true;
                canonical.push(DAY_NAMES[day].to_string());
            }
        }
    }
    Ok((days, canonical.join(",")))
}

/// A day name, case-insensitive, as its Monday-first index.
fn parse_day(text: &str) -> Result<usize, String> {
    DAY_NAMES
        .iter()
        .position(|name| name.eq_ignore_ascii_case(text))
        .ok_or_else(|| format!("day {text:?} is not one of Mon Tue Wed Thu Fri Sat Sun or *"))
}

fn parse_times(text: &str) -> Result<(u16, u16), String> {
    let shape = || format!("time range {text:?} must be HH:MM-HH:MM (the end may be 24:00)");
    let (start, end) = text.split_once('-').ok_or_else(shape)?;
    let (start, end) = (
        parse_clock(start).ok_or_else(shape)?,
        parse_clock(end).ok_or_else(shape)?,
    );
    if start >= MINUTES_PER_DAY {
        return Err(format!(
            "time range {text:?}: the start must be 00:00..23:59 (only the end may be 24:00)"
        ));
    }
    if start == end {
        return Err(format!(
            "time range {text:?} is empty: the start equals the end (a whole day is 00:00-24:00)"
        ));
    }
    Ok((start, end))
}

/// `HH:MM` (the hour may have one digit) as minutes after midnight, `24:00` included.
fn parse_clock(text: &str) -> Option<u16> {
    let (hour, minute) = text.split_once(':')?;
    let digits = |s: &str, len: std::ops::RangeInclusive<usize>| {
        len.contains(&s.len()) && s.bytes().all(|b| b.is_ascii_digit())
    };
    if !digits(hour, 1..=2) || !digits(minute, 2..=2) {
        return None;
    }
    let (hour, minute) = (hour.parse::<u16>().ok()?, minute.parse::<u16>().ok()?);
    let total = hour * 60 + minute;
    (minute < 60 && total <= MINUTES_PER_DAY).then_some(total)
}

fn clock(minutes: u16) -> String {
    format!("{:02}:{:02}", minutes / 60, minutes % 60)
}

fn parse_zone(text: &str) -> Result<(TimeZone, String), String> {
    if text.contains('=') {
        return Err(format!(
            "needs an IANA time zone after the time range, like Europe/Berlin or UTC, \
             before {text:?}"
        ));
    }
    match TimeZone::get(text) {
        Ok(tz) => {
            let name = tz.iana_name().unwrap_or(text).to_string();
            Ok((tz, name))
        }
        // Without a database every name fails; say so rather than blame the name.
        Err(_) if jiff::tz::db().is_definitively_empty() => Err(format!(
            "time zone {text:?} cannot be looked up: no time zone database was found \
             (install tzdata, /usr/share/zoneinfo)"
        )),
        Err(_) => Err(format!(
            "time zone {text:?} is not a known IANA time zone (like Europe/Berlin, \
             America/New_York or UTC)"
        )),
    }
}

fn parse_setting(tokens: &[&str]) -> Result<(Override, String), String> {
    let [token] = tokens else {
        return Err(format!(
            "needs exactly one of buffer=N or target=SHARE after the time zone, found {}",
            tokens.len()
        ));
    };
    match token.split_once('=') {
        Some((key, value)) if key.eq_ignore_ascii_case("buffer") => {
            let buffer = Some(value)
                .filter(|v| !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit()))
                .and_then(|v| v.parse::<u32>().ok())
                .filter(|n| *n <= MAX_BUFFER)
                .ok_or_else(|| {
                    format!("{token:?}: buffer must be a whole number 0..={MAX_BUFFER}")
                })?;
            Ok((Override::Buffer(buffer), format!("buffer={buffer}")))
        }
        Some((key, value)) if key.eq_ignore_ascii_case("target") => {
            let bad = || {
                format!("{token:?}: target must be a share above 0.5 and below 1, like 0.99 or 99%")
            };
            let (number, percent) = match value.strip_suffix('%') {
                Some(number) => (number, true),
                None => (value, false),
            };
            let written = number.parse::<f64>().map_err(|_| bad())?;
            let share = if percent { written / 100.0 } else { written };
            if !(share.is_finite() && share > 0.5 && share < 1.0) {
                return Err(bad());
            }
            let mut text = format!("target={written}");
            if percent {
                text.push('%');
            }
            Ok((Override::Target(share), text))
        }
        _ => Err(format!(
            "{token:?} is not a setting: a window ends with exactly one of buffer=N or \
             target=SHARE"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn schedule(text: &str) -> BufferSchedule {
        text.parse().unwrap()
    }

    fn at(instant: &str) -> Timestamp {
        instant.parse().unwrap()
    }

    fn set(s: &BufferSchedule, instant: &str) -> Option<Override> {
        s.in_force(at(instant)).map(|(_, o)| o)
    }

    fn error(text: &str) -> String {
        text.parse::<BufferSchedule>().unwrap_err()
    }

    #[test]
    fn an_empty_value_is_an_empty_schedule() {
        for text in ["", "   ", " ; ;"] {
            let s = schedule(text);
            assert!(s.is_empty());
            assert!(s.windows().is_empty());
            assert_eq!(set(&s, "2024-01-15T12:00:00Z"), None);
        }
    }

    #[test]
    fn an_evening_window_applies_in_its_own_time_zone() {
        // Monday 2024-01-15; Berlin is UTC+1 in winter.
        let s = schedule("Mon-Fri 18:00-23:00 Europe/Berlin buffer=12");
        assert_eq!(set(&s, "2024-01-15T16:59:00Z"), None);
        assert_eq!(set(&s, "2024-01-15T17:00:00Z"), Some(Override::Buffer(12)));
        assert_eq!(set(&s, "2024-01-15T21:59:59Z"), Some(Override::Buffer(12)));
        assert_eq!(set(&s, "2024-01-15T22:00:00Z"), None);
        // Saturday evening is not a weekday.
        assert_eq!(set(&s, "2024-01-20T18:00:00Z"), None);
    }

    #[test]
    fn a_window_past_midnight_belongs_to_the_day_it_starts() {
        // 2024-01-12 is a Friday.
        let s = schedule("Sat,Sun 22:00-02:00 UTC buffer=5");
        let on = Some(Override::Buffer(5));
        assert_eq!(set(&s, "2024-01-12T23:00:00Z"), None, "Friday night");
        assert_eq!(
            set(&s, "2024-01-13T01:00:00Z"),
            None,
            "early Saturday is Friday's night"
        );
        assert_eq!(set(&s, "2024-01-13T23:00:00Z"), on, "Saturday night");
        assert_eq!(
            set(&s, "2024-01-14T01:00:00Z"),
            on,
            "early Sunday ends Saturday's"
        );
        assert_eq!(
            set(&s, "2024-01-15T01:59:00Z"),
            on,
            "early Monday ends Sunday's"
        );
        assert_eq!(
            set(&s, "2024-01-15T02:00:00Z"),
            None,
            "the end is not included"
        );
        assert_eq!(set(&s, "2024-01-14T12:00:00Z"), None, "Sunday noon");
    }

    #[test]
    fn the_first_matching_window_wins() {
        let s = schedule("Mon-Fri 18:00-23:00 UTC buffer=12; * 00:00-24:00 UTC target=0.995");
        let (window, setting) = s.in_force(at("2024-01-15T19:00:00Z")).unwrap();
        assert_eq!(setting, Override::Buffer(12));
        assert_eq!(window.describe(), "Mon-Fri 18:00-23:00 UTC buffer=12");
        let (window, setting) = s.in_force(at("2024-01-15T10:00:00Z")).unwrap();
        assert_eq!(setting, Override::Target(0.995));
        assert_eq!(window.describe(), "* 00:00-24:00 UTC target=0.995");

        let reversed = schedule("* 00:00-24:00 UTC buffer=3; Mon-Fri 18:00-23:00 UTC buffer=12");
        assert_eq!(
            set(&reversed, "2024-01-15T19:00:00Z"),
            Some(Override::Buffer(3))
        );
    }

    #[test]
    fn daylight_saving_shifts_the_window_with_the_zone() {
        let s = schedule("* 18:00-19:00 Europe/Berlin buffer=7");
        let on = Some(Override::Buffer(7));
        // 17:30 UTC is 18:30 in January (CET) but 19:30 in July (CEST).
        assert_eq!(set(&s, "2024-01-15T17:30:00Z"), on);
        assert_eq!(set(&s, "2024-07-15T17:30:00Z"), None);
        // 16:30 UTC is 17:30 in January but 18:30 in July.
        assert_eq!(set(&s, "2024-01-15T16:30:00Z"), None);
        assert_eq!(set(&s, "2024-07-15T16:30:00Z"), on);
    }

    #[test]
    fn describe_gives_back_the_canonical_window() {
        let s = schedule(
            "  mon-FRI   9:00-17:00 europe/berlin TARGET=99.5% ;sat,Sun 10:00-02:00 utc buffer=0;\
             fri-mon 00:00-24:00 America/New_York buffer=10000",
        );
        let described: Vec<String> = s.windows().iter().map(Window::describe).collect();
        assert_eq!(
            described,
            [
                "Mon-Fri 09:00-17:00 Europe/Berlin target=99.5%",
                "Sat,Sun 10:00-02:00 UTC buffer=0",
                "Fri-Mon 00:00-24:00 America/New_York buffer=10000",
            ]
        );
        // Each canonical text parses back to itself.
        for text in &described {
            assert_eq!(&schedule(text).windows()[0].describe(), text);
        }
    }

    #[test]
    fn a_day_range_may_wrap_the_week() {
        let s = schedule("Fri-Mon 12:00-13:00 UTC buffer=1");
        // 2024-01-15 is a Monday.
        for (day, on) in [
            (15, true),
            (16, false),
            (17, false),
            (18, false),
            (19, true),
        ] {
            let got = set(&s, &format!("2024-01-{day}T12:30:00Z"));
            assert_eq!(got.is_some(), on, "2024-01-{day}");
        }
        assert!(set(&s, "2024-01-20T12:30:00Z").is_some());
        assert!(set(&s, "2024-01-21T12:30:00Z").is_some());
    }

    #[test]
    fn a_target_is_a_share_above_half_and_below_one() {
        let target = |t: &str| {
            format!("* 00:00-24:00 UTC target={t}")
                .parse::<BufferSchedule>()
                .map(|s| s.windows()[0].setting)
        };
        assert_eq!(target("0.99"), Ok(Override::Target(0.99)));
        assert_eq!(target("99%"), Ok(Override::Target(0.99)));
        for bad in ["0.5", "1", "1.0", "50%", "100%", "x", "", "%", "NaN", "inf"] {
            assert!(target(bad).is_err(), "target={bad}");
        }
    }

    #[test]
    fn bad_windows_name_the_piece_and_what_is_allowed() {
        assert_eq!(
            error("* 00:00-24:00 UTC buffer=1; Mon-Fry 18:00-23:00 UTC buffer=3"),
            "window 2 \"Mon-Fry 18:00-23:00 UTC buffer=3\": day \"Fry\" is not one of \
             Mon Tue Wed Thu Fri Sat Sun or *"
        );
        assert_eq!(
            error("Mon 18:00-23:00 Europe/Berlinn buffer=3"),
            "window 1 \"Mon 18:00-23:00 Europe/Berlinn buffer=3\": time zone \
             \"Europe/Berlinn\" is not a known IANA time zone (like Europe/Berlin, \
             America/New_York or UTC)"
        );
        assert_eq!(
            error("Mon 18:00-23:00 UTC buffer=x"),
            "window 1 \"Mon 18:00-23:00 UTC buffer=x\": \"buffer=x\": buffer must be a whole \
             number 0..=10000"
        );
        assert!(error("Mon 18:00-23:00 UTC buffer=10001").ends_with("0..=10000"));
        assert!(error("Mon 18:00-23:00 UTC buffer=-1").ends_with("0..=10000"));
        for text in [
            "Mon 18:00-23:00 UTC",
            "Mon 18:00-23:00 UTC buffer=3 target=0.99",
        ] {
            assert!(
                error(text).contains("needs exactly one of buffer=N or target=SHARE"),
                "{text}: {}",
                error(text)
            );
        }
        assert!(error("Mon 18:00-23:00 UTC target=2").contains("above 0.5 and below 1"));
        assert!(error("Mon 18:00-23:00 UTC size=3").contains("\"size=3\" is not a setting"));
        assert!(error("Mon 18:00-23:00 buffer=3").contains("needs an IANA time zone"));
        assert!(error("Mon-Fri buffer=3").contains("needs days, a time range, a time zone"));
        assert!(error("Sat, Sun 10:00-12:00 UTC buffer=1").contains("without spaces"));
        for times in [
            "18-23",
            "18:00",
            "18:60-19:00",
            "25:00-01:00",
            "18:00-24:01",
            "a:bc-d",
        ] {
            let why = error(&format!("Mon {times} UTC buffer=1"));
            assert!(why.contains("must be HH:MM-HH:MM"), "{times}: {why}");
        }
        assert!(error("Mon 24:00-01:00 UTC buffer=1").contains("start must be 00:00..23:59"));
        assert!(error("Mon 10:00-10:00 UTC buffer=1").contains("is empty"));
    }
}
