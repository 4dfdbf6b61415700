//! Which Machines a MachineSet deletes when it has more than its replicas: Cluster API's
//! ranking (its MachineSet controller, `machineset_deletion_order.go`), retold.
//!
//! Every Machine gets a priority; the highest go first, ties by name (ascending):
//!
//! | Machine | priority |
//! | --- | --- |
//! | already being deleted (`deletionTimestamp`) | 100 |
//! | annotated `cluster.x-k8s.io/delete-machine` (any value) | 80 |
//! | an in-place update in progress (annotation) | 75 |
//! | unhealthy: no `status.nodeRef`, or condition `NodeHealthy` or `HealthCheckSucceeded` False | 50 |
//! | otherwise, by `spec.deletion.order`: `Random` | 20 |
//! | `Oldest` | 50 · (1 − e^(−age / 10 days)) |
//! | `Newest` | 50 − that |
//!
//! So CAPI's `Random` is not random: all healthy Machines tie and the first by name goes
//! (names end in random characters). Ages are whole seconds (`creationTimestamp`), so Machines
//! created in the same second tie too and go by name.

use std::cmp::Ordering;
use std::fmt;
use std::str::FromStr;

use jiff::Timestamp;

const MUST_DELETE: f64 = 100.0;
const SHOULD_DELETE_FIRST: f64 = 80.0;
const SHOULD_DELETE: f64 = 75.0;
const BETTER_DELETE: f64 = 50.0;
const COULD_DELETE: f64 = 20.0;
const MUST_NOT_DELETE: f64 = 0.0;
const SECONDS_PER_TEN_DAYS: f64 = 864_000.0;

/// `spec.deletion.order` of a MachineSet or MachineDeployment.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum DeletionOrder {
    /// CAPI's default: every healthy Machine ties, the first by name goes.
    #[default]
    Random,
    /// The most recently created first.
    Newest,
    /// The longest running first.
    Oldest,
}

impl DeletionOrder {
    /// The value as the CRD spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            DeletionOrder::Random => "Random",
            DeletionOrder::Newest => "Newest",
            DeletionOrder::Oldest => "Oldest",
        }
    }
}

impl fmt::Display for DeletionOrder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for DeletionOrder {
    type Err = String;

    /// The CRD's spelling (`Random`, `Newest`, `Oldest`); lower case is accepted too.
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "Random" | "random" => Ok(DeletionOrder::Random),
            "Newest" | "newest" => Ok(DeletionOrder::Newest),
            "Oldest" | "oldest" => Ok(DeletionOrder::Oldest),
            other => Err(format!(
                "unknown deletion order {other:?} (allowed: Random, Newest, Oldest)"
            )),
        }
    }
}

/// What the ranking reads of one Machine.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Candidate {
    /// `metadata.name`.
    pub name: String,
    /// `metadata.deletionTimestamp` is set.
    pub deleting: bool,
    /// Carries the `cluster.x-k8s.io/delete-machine` annotation.
    pub marked: bool,
    /// Carries the in-place update annotation.
    pub updating: bool,
    /// Has `status.nodeRef` and neither `NodeHealthy` nor `HealthCheckSucceeded` is False.
    pub healthy: bool,
    /// `metadata.creationTimestamp`.
    pub created: Option<Timestamp>,
}

/// Why a Machine was ranked where it was.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Choice {
    /// It was already being deleted.
    AlreadyDeleting,
    /// It carried the `delete-machine` annotation.
    Marked,
    /// An in-place update was in progress on it.
    UpdateInProgress,
    /// It had no node, or its node was not healthy.
    Unhealthy,
    /// The deletion order picked it among the healthy ones.
    Order(DeletionOrder),
}

fn age_priority(c: &Candidate, now: Timestamp) -> f64 {
    let Some(created) = c.created else {
        return MUST_NOT_DELETE;
    };
    let age = now.as_second() - created.as_second();
    if age < 0 {
        return MUST_NOT_DELETE;
    }
    BETTER_DELETE * (1.0 - (-(age as f64) / SECONDS_PER_TEN_DAYS).exp())
}

/// The priority of `c` under `order` at `now`, and why.
pub fn priority(c: &Candidate, order: DeletionOrder, now: Timestamp) -> (f64, Choice) {
    if c.deleting {
        return (MUST_DELETE, Choice::AlreadyDeleting);
    }
    if c.marked {
        return (SHOULD_DELETE_FIRST, Choice::Marked);
    }
    if c.updating {
        return (SHOULD_DELETE, Choice::UpdateInProgress);
    }
    if !c.healthy {
        return (BETTER_DELETE, Choice::Unhealthy);
    }
    let p = match order {
        DeletionOrder::Random => COULD_DELETE,
        DeletionOrder::Oldest => age_priority(c, now),
        DeletionOrder::Newest => BETTER_DELETE - age_priority(c, now),
    };
    (p, Choice::Order(order))
}

/// The first `diff` of `candidates` in deletion order (all of them if `diff` is larger), with
/// why each was chosen; those already being deleted are among them, as in CAPI, and the caller
/// deletes only the others.
pub fn choose(
    candidates: &[Candidate],
    diff: usize,
    order: DeletionOrder,
    now: Timestamp,
) -> Vec<(Candidate, Choice)> {
    let mut ranked: Vec<(f64, Choice, &Candidate)> = candidates
        .iter()
        .map(|c| {
            let (p, why) = priority(c, order, now);
            (p, why, c)
        })
        .collect();
    ranked.sort_by(|a, b| match b.0.total_cmp(&a.0) {
        Ordering::Equal => a.2.name.cmp(&b.2.name),
        other => other,
    });
    ranked
        .into_iter()
        .take(diff)
        .map(|(_, why, c)| (c.clone(), why))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn healthy(name: &str, created_s: i64) -> Candidate {
        Candidate {
            name: name.to_string(),
            deleting: false,
            marked: false,
            updating: false,
            healthy: true,
            created: Some(Timestamp::from_second(created_s).unwrap()),
        }
    }

    fn names(chosen: &[(Candidate, Choice)]) -> Vec<&str> {
        chosen.iter().map(|(c, _)| c.name.as_str()).collect()
    }

    const NOW: i64 = 1_800_000_000;

    #[test]
    fn deleting_then_marked_then_unhealthy_then_the_order() {
        let now = Timestamp::from_second(NOW).unwrap();
        let mut deleting = healthy("e", NOW - 100);
        deleting.deleting = true;
        let mut marked = healthy("d", NOW - 100);
        marked.marked = true;
        let mut sick = healthy("c", NOW - 100);
        sick.healthy = false;
        let all = vec![healthy("a", NOW - 100), sick, marked, deleting];
        let chosen = choose(&all, 4, DeletionOrder::Newest, now);
        assert_eq!(names(&chosen), ["e", "d", "c", "a"]);
        assert_eq!(
            chosen.iter().map(|(_, w)| *w).collect::<Vec<_>>(),
            [
                Choice::AlreadyDeleting,
                Choice::Marked,
                Choice::Unhealthy,
                Choice::Order(DeletionOrder::Newest)
            ]
        );
    }

    #[test]
    fn newest_and_oldest_go_by_age_and_ties_by_name() {
        let now = Timestamp::from_second(NOW).unwrap();
        let all = vec![
            healthy("b", NOW - 30),
            healthy("a", NOW - 10),
            healthy("c", NOW - 10),
        ];
        assert_eq!(
            names(&choose(&all, 3, DeletionOrder::Newest, now)),
            ["a", "c", "b"]
        );
        assert_eq!(
            names(&choose(&all, 3, DeletionOrder::Oldest, now)),
            ["b", "a", "c"]
        );
    }

    #[test]
    fn random_is_by_name_among_the_healthy() {
        let now = Timestamp::from_second(NOW).unwrap();
        let all = vec![healthy("z", NOW - 5), healthy("m", NOW - 500)];
        assert_eq!(names(&choose(&all, 1, DeletionOrder::Random, now)), ["m"]);
    }

    #[test]
    fn a_machine_created_this_second_ties_with_an_unhealthy_one_under_newest() {
        // CAPI's arithmetic: 50 - 0 == 50, the unhealthy priority; the name decides.
        let now = Timestamp::from_second(NOW).unwrap();
        let mut sick = healthy("b", NOW - 100);
        sick.healthy = false;
        let all = vec![sick, healthy("a", NOW)];
        assert_eq!(names(&choose(&all, 1, DeletionOrder::Newest, now)), ["a"]);
    }

    #[test]
    fn orders_parse_as_the_crd_spells_them() {
        for o in [
            DeletionOrder::Random,
            DeletionOrder::Newest,
            DeletionOrder::Oldest,
        ] {
            assert_eq!(o.as_str().parse::<DeletionOrder>(), Ok(o));
        }
        assert!("Fastest".parse::<DeletionOrder>().is_err());
    }
}
