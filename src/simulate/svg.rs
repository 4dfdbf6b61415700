//! The charts, as hand-written SVG: no dependency, and every coordinate printed with one
//! decimal so the same run gives the same bytes.
//!
//! - `chart.svg`: two panels over simulated time: sessions and slots (demand, running servers,
//!   free slots, waiting sessions) and nodes (paid for, schedulable, booting, cordoned).
//! - `sweep.svg`: one point per buffer size, cost (node-hours) against the share of sessions
//!   that started at once, with the target line and the cheapest size meeting it.

use std::fmt::Write as _;

use super::engine::Sample;
use super::report::{percent, Summary};

const WIDTH: f64 = 1000.0;
const FONT: &str = "DejaVu Sans, Helvetica, Arial, sans-serif";
const GRID: &str = "#e3e3e3";
const AXIS: &str = "#444444";

/// Escapes text for XML.
fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// A "nice" tick step (1, 2 or 5 × 10^k) giving about `target` ticks over `span`.
fn nice_step(span: f64, target: f64) -> f64 {
    if span <= 0.0 {
        return 1.0;
    }
    let raw = span / target;
    let mag = 10f64.powf(raw.log10().floor());
    let norm = raw / mag;
    let nice = if norm <= 1.0 {
        1.0
    } else if norm <= 2.0 {
        2.0
    } else if norm <= 5.0 {
        5.0
    } else {
        10.0
    };
    nice * mag
}

/// A linear mapping from data to pixels.
#[derive(Clone, Copy)]
struct Scale {
    lo: f64,
    hi: f64,
    px_lo: f64,
    px_hi: f64,
}

impl Scale {
    fn at(&self, v: f64) -> f64 {
        let span = (self.hi - self.lo).max(f64::EPSILON);
        self.px_lo + (v - self.lo) / span * (self.px_hi - self.px_lo)
    }
}

/// One line of a chart.
struct Line<'a> {
    label: &'a str,
    color: &'a str,
    width: f64,
    dash: Option<&'a str>,
    points: Vec<(f64, f64)>,
}

struct Svg {
    out: String,
}

impl Svg {
    fn new(height: f64) -> Self {
        let mut out = String::new();
        let _ = writeln!(
            out,
            r#"<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH:.0}" height="{height:.0}" viewBox="0 0 {WIDTH:.0} {height:.0}" font-family="{FONT}" font-size="13">"#
        );
        let _ = writeln!(
            out,
            r##"<rect x="0" y="0" width="{WIDTH:.0}" height="{height:.0}" fill="#ffffff"/>"##
        );
        Svg { out }
    }

    fn text(&mut self, x: f64, y: f64, anchor: &str, attrs: &str, s: &str) {
        let _ = writeln!(
            self.out,
            r#"<text x="{x:.1}" y="{y:.1}" text-anchor="{anchor}"{attrs}>{}</text>"#,
            esc(s)
        );
    }

    fn line(&mut self, (x1, y1): (f64, f64), (x2, y2): (f64, f64), stroke: &str, extra: &str) {
        let _ = writeln!(
            self.out,
            r#"<line x1="{x1:.1}" y1="{y1:.1}" x2="{x2:.1}" y2="{y2:.1}" stroke="{stroke}"{extra}/>"#
        );
    }

    fn polyline(&mut self, x: Scale, y: Scale, line: &Line) {
        let mut pts = String::new();
        for (i, &(vx, vy)) in line.points.iter().enumerate() {
            if i > 0 {
                pts.push(' ');
            }
            let _ = write!(pts, "{:.1},{:.1}", x.at(vx), y.at(vy));
        }
        let dash = line
            .dash
            .map(|d| format!(r#" stroke-dasharray="{d}""#))
            .unwrap_or_default();
        let _ = writeln!(
            self.out,
            r#"<polyline fill="none" stroke="{}" stroke-width="{:.1}" stroke-linejoin="round"{dash} points="{pts}"/>"#,
            line.color, line.width
        );
    }

    /// Frame, grid, ticks and axis titles of a panel.
    #[allow(clippy::too_many_arguments)]
    fn axes(
        &mut self,
        x: Scale,
        y: Scale,
        x_ticks: &[(f64, String)],
        y_step: f64,
        x_title: &str,
        y_title: &str,
        y_fmt: &dyn Fn(f64) -> String,
    ) {
        let (left, right, bottom, top) = (x.px_lo, x.px_hi, y.px_lo, y.px_hi);
        let mut v = y.lo;
        while v <= y.hi + y_step * 1e-6 {
            let py = y.at(v);
            self.line((left, py), (right, py), GRID, "");
            self.line((left - 5.0, py), (left, py), AXIS, "");
            self.text(left - 8.0, py + 4.0, "end", "", &y_fmt(v));
            v += y_step;
        }
        for (vx, label) in x_ticks {
            let px = x.at(*vx);
            self.line((px, top), (px, bottom), GRID, "");
            self.line((px, bottom), (px, bottom + 5.0), AXIS, "");
            self.text(px, bottom + 19.0, "middle", "", label);
        }
        let _ = writeln!(
            self.out,
            r#"<rect x="{left:.1}" y="{top:.1}" width="{:.1}" height="{:.1}" fill="none" stroke="{AXIS}"/>"#,
            right - left,
            bottom - top
        );
        self.text((left + right) / 2.0, bottom + 38.0, "middle", "", x_title);
        let cy = (top + bottom) / 2.0;
        let _ = writeln!(
            self.out,
            r#"<text x="{:.1}" y="{cy:.1}" text-anchor="middle" transform="rotate(-90 {:.1} {cy:.1})">{}</text>"#,
            left - 48.0,
            left - 48.0,
            esc(y_title)
        );
    }

    /// A legend box at (x, y), one entry per line.
    fn legend(&mut self, x: f64, y: f64, lines: &[Line]) {
        let h = 10.0 + 20.0 * lines.len() as f64;
        let _ = writeln!(
            self.out,
            r##"<rect x="{x:.1}" y="{y:.1}" width="215" height="{h:.1}" fill="#ffffff" stroke="#bbbbbb"/>"##
        );
        for (i, l) in lines.iter().enumerate() {
            let ly = y + 16.0 + 20.0 * i as f64;
            let dash = l
                .dash
                .map(|d| format!(r#" stroke-dasharray="{d}""#))
                .unwrap_or_default();
            self.line(
                (x + 8.0, ly - 4.0),
                (x + 34.0, ly - 4.0),
                l.color,
                &format!(r#" stroke-width="{:.1}"{dash}"#, l.width.max(2.0)),
            );
            self.text(x + 40.0, ly, "start", r#" font-size="12""#, l.label);
        }
    }

    fn finish(mut self) -> String {
        self.out.push_str("</svg>\n");
        self.out
    }
}

/// Time ticks in hours: a step of 1, 2, 3, 4, 6, 12 or 24 h (then whole days) giving at most
/// 13 ticks.
fn time_ticks(duration: u64) -> Vec<(f64, String)> {
    let hours = duration as f64 / 3600.0;
    let step = [1.0, 2.0, 3.0, 4.0, 6.0, 12.0, 24.0]
        .into_iter()
        .find(|s| hours / s <= 12.0)
        .unwrap_or_else(|| (hours / 12.0 / 24.0).ceil() * 24.0);
    let mut ticks = Vec::new();
    let mut h = 0.0;
    while h <= hours + 1e-9 {
        ticks.push((h * 3600.0, format!("{h:.0}")));
        h += step;
    }
    ticks
}

/// The y range and tick step for values up to `max`.
fn y_range(max: f64) -> (f64, f64) {
    let step = nice_step(max.max(1.0), 5.0);
    let top = ((max.max(1.0) / step).ceil() * step).max(step);
    (top, step)
}

/// `chart.svg` of one run. `title` and `subtitle` head it.
pub fn run_chart(series: &[Sample], duration: u64, title: &str, subtitle: &str) -> String {
    const HEIGHT: f64 = 760.0;
    let (left, right) = (80.0, WIDTH - 250.0);
    let mut svg = Svg::new(HEIGHT);
    svg.text(
        left,
        30.0,
        "start",
        r#" font-size="18" font-weight="bold""#,
        title,
    );
    svg.text(left, 52.0, "start", r##" fill="#333333""##, subtitle);

    let t = |s: &Sample| s.t as f64;
    let x_of = |px_top: f64, px_bottom: f64, max: f64| {
        (
            Scale {
                lo: 0.0,
                hi: duration.max(1) as f64,
                px_lo: left,
                px_hi: right,
            },
            Scale {
                lo: 0.0,
                hi: max,
                px_lo: px_bottom,
                px_hi: px_top,
            },
        )
    };
    let ticks = time_ticks(duration);
    let x_title = "simulated time (hours from the start)";

    // Panel 1: sessions and slots.
    let sessions = [
        Line {
            label: "demand: running + waiting",
            color: "#1f77b4",
            width: 2.4,
            dash: None,
            points: series
                .iter()
                .map(|s| (t(s), f64::from(s.census.running + s.census.waiting)))
                .collect(),
        },
        Line {
            label: "running servers",
            color: "#2ca02c",
            width: 1.6,
            dash: Some("6 3"),
            points: series
                .iter()
                .map(|s| (t(s), f64::from(s.census.running)))
                .collect(),
        },
        Line {
            label: "free slots",
            color: "#ff7f0e",
            width: 1.6,
            dash: None,
            points: series
                .iter()
                .map(|s| (t(s), f64::from(s.census.free_slots)))
                .collect(),
        },
        Line {
            label: "waiting for a slot",
            color: "#d62728",
            width: 1.6,
            dash: None,
            points: series
                .iter()
                .map(|s| (t(s), f64::from(s.census.waiting)))
                .collect(),
        },
    ];
    let max1 = sessions
        .iter()
        .flat_map(|l| l.points.iter().map(|p| p.1))
        .fold(0.0, f64::max);
    let (top1, step1) = y_range(max1);
    let (x, y) = x_of(90.0, 380.0, top1);
    svg.text(
        left,
        80.0,
        "start",
        r#" font-size="14" font-weight="bold""#,
        "Game sessions and server slots",
    );
    let int = |v: f64| format!("{v:.0}");
    svg.axes(
        x,
        y,
        &ticks,
        step1,
        x_title,
        "sessions / slots (count)",
        &int,
    );
    for l in &sessions {
        svg.polyline(x, y, l);
    }
    svg.legend(right + 20.0, 90.0, &sessions);

    // Panel 2: nodes.
    let nodes = [
        Line {
            label: "nodes paid for (all)",
            color: "#9467bd",
            width: 2.4,
            dash: None,
            points: series
                .iter()
                .map(|s| (t(s), f64::from(s.census.nodes)))
                .collect(),
        },
        Line {
            label: "Ready, schedulable",
            color: "#17becf",
            width: 1.6,
            dash: Some("6 3"),
            points: series
                .iter()
                .map(|s| (t(s), f64::from(s.census.schedulable)))
                .collect(),
        },
        Line {
            label: "booting",
            color: "#8c564b",
            width: 1.6,
            dash: None,
            points: series
                .iter()
                .map(|s| (t(s), f64::from(s.census.booting)))
                .collect(),
        },
        Line {
            label: "cordoned by kubescaler",
            color: "#7f7f7f",
            width: 1.6,
            dash: None,
            points: series
                .iter()
                .map(|s| (t(s), f64::from(s.census.cordoned)))
                .collect(),
        },
    ];
    let max2 = nodes
        .iter()
        .flat_map(|l| l.points.iter().map(|p| p.1))
        .fold(0.0, f64::max);
    let (top2, step2) = y_range(max2);
    let (x, y) = x_of(470.0, 700.0, top2);
    svg.text(
        left,
        460.0,
        "start",
        r#" font-size="14" font-weight="bold""#,
        "Nodes",
    );
    svg.axes(x, y, &ticks, step2, x_title, "nodes (count)", &int);
    for l in &nodes {
        svg.polyline(x, y, l);
    }
    svg.legend(right + 20.0, 470.0, &nodes);
    svg.finish()
}

/// `sweep.svg`: cost against instant starts, one point per buffer size.
pub fn sweep_chart(
    runs: &[Summary],
    target: f64,
    chosen: Option<u32>,
    title: &str,
    x_title: &str,
) -> String {
    const HEIGHT: f64 = 580.0;
    let (left, right, top, bottom) = (90.0, WIDTH - 40.0, 90.0, 520.0);
    let mut svg = Svg::new(HEIGHT);
    svg.text(
        left,
        30.0,
        "start",
        r#" font-size="18" font-weight="bold""#,
        title,
    );
    let subtitle = match chosen {
        Some(b) => format!(
            "each point is one buffer size; the cheapest with at least {} instant starts is {b}",
            percent(target)
        ),
        None => format!(
            "each point is one buffer size; none reaches {} instant starts",
            percent(target)
        ),
    };
    svg.text(left, 52.0, "start", r##" fill="#333333""##, &subtitle);

    let xs: Vec<f64> = runs.iter().map(|s| s.node_hours).collect();
    let ys: Vec<f64> = runs
        .iter()
        .map(|s| s.sessions.instant_share * 100.0)
        .collect();
    let (x_min, x_max) = (
        xs.iter().copied().fold(f64::INFINITY, f64::min),
        xs.iter().copied().fold(0.0, f64::max),
    );
    let x_min = if x_min.is_finite() { x_min } else { 0.0 };
    // A margin on both sides keeps the end labels inside the frame.
    let pad = ((x_max - x_min) * 0.04).max(0.5);
    let x_step = nice_step((x_max - x_min + 2.0 * pad).max(1.0), 6.0);
    let x_lo = ((x_min - pad) / x_step).floor() * x_step;
    let x_hi = (((x_max + pad) / x_step).ceil() * x_step).max(x_lo + x_step);
    let y_min = ys
        .iter()
        .copied()
        .fold(target * 100.0, f64::min)
        .clamp(0.0, 100.0);
    let y_step = nice_step((100.0 - y_min).max(1.0), 6.0);
    let y_lo = ((y_min / y_step).floor() * y_step).max(0.0);
    let y_hi = ((100.0 / y_step).ceil() * y_step).max(y_lo + y_step);
    let x = Scale {
        lo: x_lo,
        hi: x_hi,
        px_lo: left,
        px_hi: right,
    };
    let y = Scale {
        lo: y_lo,
        hi: y_hi,
        px_lo: bottom,
        px_hi: top,
    };
    let mut ticks = Vec::new();
    let mut v = x_lo;
    while v <= x_hi + x_step * 1e-6 {
        ticks.push((v, format!("{v:.0}")));
        v += x_step;
    }
    let pct = |v: f64| {
        if y_step < 1.0 {
            format!("{v:.1} %")
        } else {
            format!("{v:.0} %")
        }
    };
    svg.axes(
        x,
        y,
        &ticks,
        y_step,
        x_title,
        "sessions that started at once (%)",
        &pct,
    );

    // Target line, labelled at the left end (the cheap, low runs sit bottom-left).
    let ty = y.at(target * 100.0);
    svg.line(
        (left, ty),
        (right, ty),
        "#d62728",
        r#" stroke-width="1.5" stroke-dasharray="8 4""#,
    );
    svg.text(
        left + 6.0,
        ty - 6.0,
        "start",
        r##" fill="#d62728""##,
        &format!("target: {} instant starts", percent(target)),
    );

    svg.polyline(
        x,
        y,
        &Line {
            label: "",
            color: "#1f77b4",
            width: 1.5,
            dash: None,
            points: xs.iter().copied().zip(ys.iter().copied()).collect(),
        },
    );
    for (i, (s, (&vx, &vy))) in runs.iter().zip(xs.iter().zip(ys.iter())).enumerate() {
        let (px, py) = (x.at(vx), y.at(vy));
        let best = Some(s.buffer) == chosen;
        let (r, fill, attrs) = if best {
            (7.0, "#2ca02c", r##" font-weight="bold" fill="#2ca02c""##)
        } else {
            (4.5, "#1f77b4", "")
        };
        let _ = writeln!(
            svg.out,
            r##"<circle cx="{px:.1}" cy="{py:.1}" r="{r:.1}" fill="{fill}" stroke="#ffffff"/>"##
        );
        // Neighbours alternate sides so that close points keep readable labels.
        if i % 2 == 0 {
            svg.text(px + 8.0, py + 17.0, "start", attrs, &s.buffer.to_string());
        } else {
            svg.text(px - 8.0, py - 9.0, "end", attrs, &s.buffer.to_string());
        }
    }

    // Legend, bottom right: the runs climb from bottom left to top right.
    let (lx, ly) = (right - 290.0, bottom - 82.0);
    let _ = writeln!(
        svg.out,
        r##"<rect x="{lx:.1}" y="{ly:.1}" width="280" height="72" fill="#ffffff" stroke="#bbbbbb"/>"##
    );
    let _ = writeln!(
        svg.out,
        r##"<circle cx="{:.1}" cy="{:.1}" r="4.5" fill="#1f77b4"/>"##,
        lx + 20.0,
        ly + 16.0
    );
    svg.text(
        lx + 36.0,
        ly + 20.0,
        "start",
        r#" font-size="12""#,
        "one run; label: buffer-slot-size",
    );
    let _ = writeln!(
        svg.out,
        r##"<circle cx="{:.1}" cy="{:.1}" r="7" fill="#2ca02c"/>"##,
        lx + 20.0,
        ly + 36.0
    );
    svg.text(
        lx + 36.0,
        ly + 40.0,
        "start",
        r#" font-size="12""#,
        "cheapest run meeting the target",
    );
    svg.line(
        (lx + 8.0, ly + 56.0),
        (lx + 32.0, ly + 56.0),
        "#d62728",
        r#" stroke-width="1.5" stroke-dasharray="8 4""#,
    );
    svg.text(
        lx + 36.0,
        ly + 60.0,
        "start",
        r#" font-size="12""#,
        "target share of instant starts",
    );
    svg.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ticks_are_round_numbers() {
        assert_eq!(nice_step(100.0, 5.0), 20.0);
        assert_eq!(nice_step(7.0, 5.0), 2.0);
        assert_eq!(y_range(37.0), (40.0, 10.0));
        let t = time_ticks(86_400);
        assert_eq!(t.len(), 13);
        assert_eq!(t[1].1, "2");
        assert_eq!(time_ticks(7 * 86_400)[1].1, "24");
    }

    #[test]
    fn text_is_escaped() {
        assert_eq!(esc("a<b & \"c\">"), "a&lt;b &amp; &quot;c&quot;&gt;");
    }
}
