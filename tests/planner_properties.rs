//! Properties of every plan over random pools: the rules that keep game servers alive and the
//! pool within its bounds hold whatever the cluster looks like.

mod common;

use std::collections::HashMap;

use common::*;
use kubescaler::config::NodeTemplate;
use kubescaler::model::{ClusterSnapshot, NodeState};
use kubescaler::planner::{plan, Action, Plan, PlannerConfig};
use proptest::prelude::*;

#[derive(Clone, Debug)]
struct Case {
    snapshot: ClusterSnapshot,
    target: u32,
    cfg: PlannerConfig,
}

fn arb_node(i: usize) -> impl Strategy<Value = NodeState> {
    (
        1u64..=16,                  // cpus
        prop::bool::weighted(0.85), // ready
        0u8..10,                    // 0-6 schedulable, 7-8 ours, 9 foreign
        0i64..400,                  // cordoned seconds ago
        prop::bool::weighted(0.1),  // bad timestamp
        0i64..1200,                 // created seconds ago
    )
        .prop_map(move |(cpus, ready, cordon, cordon_ago, bad, created)| {
            let name = format!("n{i}");
            let mut n = match cordon {
                0..=6 => node(&name, cpus),
                7 | 8 => ours(&name, cpus, cordon_ago),
                _ => foreign(&name, cpus),
            };
            if bad && n.cordoned_by_kubescaler {
                n.cordon_timestamp = Some("garbage".to_string());
            }
            n.ready = ready;
            n.created = Some(ago(created));
            n
        })
}

fn arb_case() -> impl Strategy<Value = Case> {
    (0usize..10)
        .prop_flat_map(|n| {
            let nodes: Vec<_> = (0..n).map(arb_node).collect();
            (
                nodes,
                prop::collection::vec((0usize..12, 0u8..4, 100u64..2500), 0..60),
                0u32..4,         // extra target (provisioning)
                0u32..4,         // min
                0u32..10,        // max - min
                0u32..10,        // buffer
                prop::bool::ANY, // template
            )
        })
        .prop_map(|(nodes, pods, extra, min, span, buffer, tmpl)| {
            let names: Vec<String> = nodes.iter().map(|n: &NodeState| n.name.clone()).collect();
            let pods = pods
                .into_iter()
                .enumerate()
                .map(|(i, (slot, kind, millis))| {
                    let node = names.get(slot).cloned();
                    let key = format!("ns/p{i}");
                    match (kind, node) {
                        (0 | 1, node) => server(&key, node.as_deref()),
                        (2, Some(n)) => other(&key, &n, millis, true),
                        (_, Some(n)) => other(&key, &n, millis, false),
                        (_, None) => server(&key, None),
                    }
                })
                .collect();
            let mut cfg = cfg();
            cfg.min_nodes = min;
            cfg.max_nodes = (min + span).max(1);
            cfg.buffer = buffer;
            cfg.node_template = tmpl.then_some(NodeTemplate {
                cpu_millis: 4 * CPU,
                memory_bytes: 16 * GIB,
                pods: 110,
            });
            let registered = names.len() as u32;
            Case {
                snapshot: ClusterSnapshot {
                    nodes,
                    pods,
                    ..Default::default()
                },
                target: registered + extra,
                cfg,
            }
        })
}

/// Free whole-server slots of each node by the plain rule, as a check of the planner.
fn free_slots(case: &Case) -> HashMap<String, i64> {
    let mut used: HashMap<&str, (u64, u32)> = HashMap::new();
    for p in &case.snapshot.pods {
        if let Some(n) = &p.node {
            let e = used.entry(n.as_str()).or_default();
            e.0 += p.requests.cpu_millis;
            e.1 += 1;
        }
    }
    case.snapshot
        .nodes
        .iter()
        .map(|n| {
            let (cpu, pods) = used.get(n.name.as_str()).copied().unwrap_or_default();
            let by_cpu = n.allocatable.cpu_millis.saturating_sub(cpu) / case.cfg.slot.cpu_millis;
            let by_pods = u64::from(n.allocatable_pods.saturating_sub(pods));
            (n.name.clone(), by_cpu.min(by_pods) as i64)
        })
        .collect()
}

fn servers_on_node(case: &Case, node: &str) -> usize {
    case.snapshot
        .pods
        .iter()
        .filter(|p| p.is_server && p.node.as_deref() == Some(node))
        .count()
}

fn run(case: &Case) -> Plan {
    plan(&case.snapshot, case.target, now(), &case.cfg)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn no_plan_deletes_a_node_hosting_a_server(case in arb_case()) {
        let p = run(&case);
        for a in &p.actions {
            if let Action::Delete { node, .. } = a {
                prop_assert_eq!(servers_on_node(&case, &node.name), 0, "deleted {} with servers", node.name);
                let n = case.snapshot.nodes.iter().find(|n| n.name == node.name).expect("known node");
                prop_assert!(n.unschedulable && n.cordoned_by_kubescaler);
            }
        }
    }

    #[test]
    fn target_stays_within_bounds_and_never_drops(case in arb_case()) {
        let p = run(&case);
        let grows: Vec<_> = p.actions.iter().filter_map(|a| match a {
            Action::Grow { from, to, .. } => Some((*from, *to)),
            _ => None,
        }).collect();
        prop_assert!(grows.len() <= 1);
        if let Some((from, to)) = grows.first().copied() {
            prop_assert_eq!(from, case.target);
            prop_assert!(to > case.target, "grow must raise the target");
            prop_assert!(to <= case.cfg.max_nodes, "grow beyond max");
        }
        if case.target < case.cfg.min_nodes {
            prop_assert!(p.grow_target().is_some_and(|t| t >= case.cfg.min_nodes));
        }
        let deletions = p.actions.iter().filter(|a| matches!(a, Action::Delete { .. })).count() as u32;
        let final_target = p.grow_target().unwrap_or(case.target);
        prop_assert!(deletions == 0 || final_target - deletions >= case.cfg.min_nodes);
    }

    #[test]
    fn nodes_cordoned_by_others_are_never_touched(case in arb_case()) {
        let p = run(&case);
        for a in &p.actions {
            if let Some(name) = a.node() {
                let n = case.snapshot.nodes.iter().find(|n| n.name == name).expect("known node");
                prop_assert!(!n.unschedulable || n.cordoned_by_kubescaler, "touched foreign {}", name);
            }
        }
    }

    #[test]
    fn applying_the_plan_keeps_the_buffer_whenever_max_allows(case in arb_case()) {
        let p = run(&case);
        let Some(per_node) = p.summary.slots_per_new_node.filter(|s| *s > 0) else {
            return Ok(());
        };
        let free = free_slots(&case);
        let mut available = p.summary.available_slots;
        for a in &p.actions {
            match a {
                Action::Uncordon { node, .. } => available += free[node],
                Action::Cordon { node, .. } => available -= free[node],
                Action::Grow { from, to, .. } => available += i64::from(to - from) * i64::from(per_node),
                Action::Delete { .. } => {} // cordoned nodes hold no counted slots
                // Stale marks are cleared on nodes already counted; an instance that never
                // registered holds nothing.
                Action::ClearMarks { .. } | Action::DeleteInstance { .. } => {}
                // Pods mode: never planned.
                Action::Compact { .. } => prop_assert!(false, "compaction in pods mode: {a:?}"),
            }
        }
        let final_target = p.grow_target().unwrap_or(case.target);
        prop_assert!(
            available >= i64::from(case.cfg.buffer) || final_target >= case.cfg.max_nodes,
            "after plan {} < buffer {} with target {} < max {}: {:?}",
            available, case.cfg.buffer, final_target, case.cfg.max_nodes, p
        );
    }

    #[test]
    fn same_input_same_plan(case in arb_case()) {
        prop_assert_eq!(run(&case), run(&case));
    }
}

#[test]
fn free_slot_model_agrees_with_summary_for_a_simple_pool() {
    let case = Case {
        snapshot: snap(vec![node("a", 4), node("b", 2)], servers_on("a", 1)),
        target: 2,
        cfg: cfg(),
    };
    let free = free_slots(&case);
    assert_eq!(
        free["a"] + free["b"],
        i64::from(run(&case).summary.free_slots)
    );
}
