//! The planner's buffer policy and scale-down holds (issue 12): the target buffer is sized
//! from what the loop measured, handed in as [`Observed`]; a surplus is cordoned only once it
//! has held for `scale-down-unneeded-sec`, one node per held surplus, and never within
//! `scale-down-delay-after-add-sec` of the newest node's creation.

mod common;

use std::collections::BTreeSet;

use common::*;
use kubescaler::buffer::{BufferPolicy, StartsSeen};
use kubescaler::model::CloudView;
use kubescaler::planner::{plan_with, ActionKind, HeldSurplus, Observed, Plan, PlannerConfig};

fn plan_at(s: &kubescaler::model::ClusterSnapshot, observed: &Observed, c: &PlannerConfig) -> Plan {
    plan_with(
        s,
        &CloudView::trusting(s, s.nodes.len() as u32),
        &BTreeSet::new(),
        observed,
        now(),
        c,
    )
}

fn cordons(p: &Plan) -> Vec<String> {
    p.actions
        .iter()
        .filter(|a| a.kind() == ActionKind::Cordon)
        .filter_map(|a| a.node().map(str::to_string))
        .collect()
}

/// Four idle 4-CPU nodes created an hour ago, one server: 15 free, buffer 0 = 3 surplus nodes.
fn idle_pool() -> kubescaler::model::ClusterSnapshot {
    snap(
        vec![node("a", 4), node("b", 4), node("c", 4), node("d", 4)],
        servers_on("a", 1),
    )
}

fn holding(unneeded: u64, after_add: u64) -> PlannerConfig {
    PlannerConfig {
        buffer: 0,
        scale_down_unneeded_sec: unneeded,
        scale_down_delay_after_add_sec: after_add,
        ..cfg()
    }
}

#[test]
fn a_surplus_is_not_cordoned_until_it_has_held_for_scale_down_unneeded_sec() {
    let c = holding(600, 0);
    // First seen now: the surplus starts its hold, nothing is cordoned.
    let first = plan_at(&idle_pool(), &Observed::default(), &c);
    assert!(cordons(&first).is_empty(), "{:?}", first.actions);
    assert_eq!(
        first.summary.surplus,
        Some(HeldSurplus {
            since: now(),
            fewest_nodes: 3
        })
    );
    assert!(first
        .summary
        .scale_down_held
        .as_deref()
        .is_some_and(|h| h.contains("scale-down-unneeded-sec 600")));
    // Held 5 minutes: still nothing.
    assert!(cordons(&plan_at(&idle_pool(), &held(300, 3), &c)).is_empty());
    // Held 10 minutes, never below three nodes: all three go, and the hold starts again.
    let p = plan_at(&idle_pool(), &held(600, 3), &c);
    assert_eq!(cordons(&p).len(), 3, "{:?}", p.actions);
    assert_eq!(p.summary.surplus, None);
}

#[test]
fn only_the_surplus_that_held_through_the_whole_window_is_cordoned() {
    // Three surplus nodes now, but ten minutes ago a peak left only one: one node goes, the
    // other two wait for a window of their own.
    let c = holding(600, 0);
    let p = plan_at(&idle_pool(), &held(600, 1), &c);
    assert_eq!(cordons(&p).len(), 1, "{:?}", p.actions);
    // Less than a minute of three: the remembered low stays.
    let p = plan_at(&idle_pool(), &held(30, 1), &c);
    assert_eq!(p.summary.surplus.map(|h| h.fewest_nodes), Some(1));
}

/// A surplus first seen `secs` ago that never fell below `fewest` nodes.
fn held(secs: i64, fewest: u32) -> Observed {
    Observed {
        surplus: Some(HeldSurplus {
            since: ago(secs),
            fewest_nodes: fewest,
        }),
        ..Observed::default()
    }
}

#[test]
fn a_surplus_that_goes_away_restarts_its_hold() {
    let c = holding(600, 0);
    // 13 servers on four 4-slot nodes leave 3 free: less than a node over buffer 0.
    let mut pods = servers_on("a", 4);
    pods.extend(servers_on("b", 4));
    pods.extend(servers_on("c", 4));
    pods.extend(servers_on("d", 1));
    let busy = snap(
        vec![node("a", 4), node("b", 4), node("c", 4), node("d", 4)],
        pods,
    );
    let p = plan_at(&busy, &held(3600, 2), &c);
    assert!(cordons(&p).is_empty());
    assert_eq!(p.summary.surplus, None, "the hold is forgotten");
}

#[test]
fn nothing_is_cordoned_within_scale_down_delay_after_add_sec_of_a_new_node() {
    let c = holding(0, 600);
    let mut s = idle_pool();
    s.nodes[3].created = Some(ago(120));
    let p = plan_at(&s, &Observed::default(), &c);
    assert!(cordons(&p).is_empty(), "{:?}", p.actions);
    assert!(p
        .summary
        .scale_down_held
        .as_deref()
        .is_some_and(|h| h.contains("scale-down-delay-after-add-sec 600")));
    // Ten minutes after the newest node came: the surplus goes, all of it (no unneeded hold).
    s.nodes[3].created = Some(ago(600));
    let p = plan_at(&s, &Observed::default(), &c);
    assert_eq!(cordons(&p).len(), 3, "{:?}", p.actions);
}

#[test]
fn without_holds_the_whole_surplus_is_cordoned_in_one_pass() {
    let p = plan_at(&idle_pool(), &Observed::default(), &holding(0, 0));
    assert_eq!(cordons(&p).len(), 3);
}

#[test]
fn the_target_buffer_grows_with_measured_arrivals_and_says_how() {
    let c = PlannerConfig {
        buffer_policy: BufferPolicy::Target,
        buffer: 2,
        ..cfg()
    };
    // 30 arrivals a minute, none ending, over a measured 2-minute boot + 10 s tick.
    let busy = Observed {
        arrivals_per_sec: Some(0.5),
        departures_per_sec: Some(0.0),
        lead_sec: Some(120),
        ..Observed::default()
    };
    let p = plan_at(&idle_pool(), &busy, &c);
    let b = p.summary.buffer;
    assert!(b > 15, "65 arrivals expected in a lead time: buffer {b}");
    assert!(
        p.grow_target().is_some(),
        "15 free slots < buffer {b}: grows"
    );
    let why = p.summary.buffer_reason.clone().unwrap_or_default();
    assert!(
        why.starts_with(&format!("buffer {b}: 30.0 arrivals/min, 0.0 ends/min x 2m 10s lead (measured boot 2m + tick 10s), p99")),
        "{why}"
    );
    // Nothing measured yet: the floor, and the configured boot time in the reason.
    let p = plan_at(&idle_pool(), &Observed::default(), &c);
    assert_eq!(p.summary.buffer, 2);
    let why = p.summary.buffer_reason.unwrap_or_default();
    assert!(why.contains("configured boot 3m"), "{why}");
}

#[test]
fn matches_that_waited_raise_the_target_buffer_and_the_plan_carries_the_lesson() {
    let c = PlannerConfig {
        buffer_policy: BufferPolicy::Target,
        buffer: 2,
        ..cfg()
    };
    let busy = Observed {
        arrivals_per_sec: Some(0.15),
        departures_per_sec: Some(0.15),
        lead_sec: Some(300),
        evidence: (180.0, 180.0),
        ..Observed::default()
    };
    let calm = plan_at(&idle_pool(), &busy, &c);
    assert_eq!(
        calm.summary.ln_ease, 0.0,
        "no matches this pass: nothing learned"
    );
    // Eight matches of ten found no slot this pass, and earlier passes already tightened.
    let burst = Observed {
        starts: StartsSeen {
            arrived: 10,
            waited: 8,
        },
        ln_ease: -0.9,
        instant_share: Some(0.95),
        ..busy
    };
    let p = plan_at(&idle_pool(), &burst, &c);
    assert!(
        p.summary.ln_ease < -0.9,
        "tightened further: {}",
        p.summary.ln_ease
    );
    assert!(
        p.summary.buffer > calm.summary.buffer,
        "{} vs {}",
        p.summary.buffer,
        calm.summary.buffer
    );
    let why = p.summary.buffer_reason.unwrap_or_default();
    assert!(
        why.contains("tightened from") && why.contains("95 % at once over the last hour"),
        "{why}"
    );
    // A fixed buffer leaves the lesson as it was.
    let fixed = plan_at(&idle_pool(), &burst, &cfg());
    assert_eq!(fixed.summary.ln_ease, -0.9);
}

#[test]
fn the_target_buffer_never_asks_for_more_than_maximum_node_pool_size_holds() {
    let c = PlannerConfig {
        buffer_policy: BufferPolicy::Target,
        max_nodes: 5,
        ..cfg()
    };
    let flood = Observed {
        arrivals_per_sec: Some(50.0),
        departures_per_sec: Some(0.0),
        lead_sec: Some(120),
        ..Observed::default()
    };
    let p = plan_at(&idle_pool(), &flood, &c);
    // 5 nodes x 4 slots less the 1 server running.
    assert_eq!(p.summary.buffer, 19);
    assert!(p
        .summary
        .buffer_reason
        .unwrap_or_default()
        .contains("capped at 19 by maximum-node-pool-size"));
}

#[test]
fn a_buffer_schedule_window_sets_the_buffer_while_it_holds_in_its_own_time_zone() {
    // now() is Thursday 2026-11-26 12:00 UTC: 13:00 in Berlin, 07:00 in New York.
    let c = PlannerConfig {
        buffer: 0,
        buffer_schedule:
            "Mon-Fri 12:30-14:00 Europe/Berlin buffer=20; * 00:00-24:00 UTC target=0.99"
                .parse()
                .expect("valid schedule"),
        ..cfg()
    };
    let p = plan_at(&idle_pool(), &Observed::default(), &c);
    assert_eq!(p.summary.buffer, 20);
    assert_eq!(
        p.summary.buffer_reason.as_deref(),
        Some("buffer 20: buffer-schedule window \"Mon-Fri 12:30-14:00 Europe/Berlin buffer=20\"")
    );
    // 15 free slots < 20: the window's buffer grows the pool, and nothing is cordoned.
    assert!(p.grow_target().is_some(), "{:?}", p.actions);
    assert!(cordons(&p).is_empty());

    // The same window in New York (07:00 there) does not hold: the next one, a target, does.
    let c = PlannerConfig {
        buffer_schedule:
            "Mon-Fri 12:30-14:00 America/New_York buffer=20; * 00:00-24:00 UTC target=0.99"
                .parse()
                .expect("valid schedule"),
        ..c
    };
    let p = plan_at(&idle_pool(), &Observed::default(), &c);
    let why = p.summary.buffer_reason.unwrap_or_default();
    assert!(why.contains("p99"), "{why}");
    assert!(
        why.ends_with("(buffer-schedule window \"* 00:00-24:00 UTC target=0.99\")"),
        "{why}"
    );

    // No window holds: the policy (fixed, buffer 0) applies again.
    let c = PlannerConfig {
        buffer_schedule: "Sat,Sun 00:00-24:00 UTC buffer=20".parse().expect("valid"),
        ..c
    };
    let p = plan_at(&idle_pool(), &Observed::default(), &c);
    assert_eq!(p.summary.buffer, 0);
    assert_eq!(p.summary.buffer_reason, None);
}
