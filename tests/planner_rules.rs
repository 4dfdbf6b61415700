//! The planner's rules, one test per rule, including one per defect of the Go kubescaler
//! (REFERENCE-BEHAVIOUR.md) that concerns the scaling decision.

mod common;

use common::*;
use kubescaler::model::{Taint, TaintEffect};
use kubescaler::planner::{plan, Action, ActionKind};

fn kinds(p: &kubescaler::planner::Plan) -> Vec<ActionKind> {
    p.actions.iter().map(Action::kind).collect()
}

fn nodes_of(p: &kubescaler::planner::Plan, kind: ActionKind) -> Vec<String> {
    p.actions
        .iter()
        .filter(|a| a.kind() == kind)
        .filter_map(|a| a.node().map(str::to_string))
        .collect()
}

#[test]
fn steady_pool_with_exact_buffer_does_nothing() {
    // 2 nodes x 4 CPU, 4 servers: 4 free = buffer.
    let s = snap(vec![node("a", 4), node("b", 4)], servers_on("a", 4));
    let p = plan(&s, 2, now(), &cfg());
    assert!(p.actions.is_empty(), "{:?}", p.actions);
    assert_eq!(p.summary.free_slots, 4);
}

#[test]
fn defect_1_slots_come_from_allocatable_minus_requests_of_every_pod() {
    // Daemon and other pods count, not only servers; 4 CPU allocatable - 1.5 CPU = 2 slots.
    let s = snap(
        vec![node("a", 4)],
        vec![
            other("kube-system/proxy", "a", 500, true),
            other("web/api", "a", 1000, false),
        ],
    );
    let p = plan(&s, 1, now(), &cfg());
    assert_eq!(p.summary.free_slots, 2);
}

#[test]
fn defect_2_half_slots_on_many_nodes_are_not_pooled() {
    // 4 nodes each with 1.5 CPU free: pooled that is 6 CPU (6 slots), really 4 slots.
    let s = snap(
        (0..4).map(|i| node(&format!("n{i}"), 2)).collect(),
        (0..4)
            .map(|i| other(&format!("x/p{i}"), &format!("n{i}"), 500, false))
            .collect(),
    );
    let p = plan(&s, 4, now(), &cfg());
    assert_eq!(p.summary.free_slots, 4);
    let mut c = cfg();
    c.buffer = 5;
    let p = plan(&s, 4, now(), &c);
    assert_eq!(kinds(&p), vec![ActionKind::Grow], "short by one slot: grow");
}

#[test]
fn defect_3_booting_nodes_count_and_target_never_drops() {
    // Target 4, only 2 registered and ready, both full: the 2 provisioning nodes bring 8 slots.
    let mut pods = servers_on("a", 4);
    pods.extend(servers_on("b", 4));
    let s = snap(vec![node("a", 4), node("b", 4)], pods);
    let p = plan(&s, 4, now(), &cfg());
    assert!(
        p.actions.is_empty(),
        "incoming slots cover the buffer: {:?}",
        p.actions
    );
    assert_eq!(p.summary.incoming_slots, 8);
    assert_eq!(p.summary.provisioning_nodes, 2);
}

#[test]
fn registered_but_not_ready_young_node_is_incoming_not_missing() {
    let mut booting = node("c", 4);
    booting.ready = false;
    booting.created = Some(ago(30));
    let mut pods = servers_on("a", 4);
    pods.extend(servers_on("b", 4));
    let p = plan(
        &snap(vec![node("a", 4), node("b", 4), booting], pods),
        3,
        now(),
        &cfg(),
    );
    assert!(p.actions.is_empty(), "{:?}", p.actions);
    assert_eq!(p.summary.booting_nodes, 1);
}

#[test]
fn not_ready_node_past_boot_timeout_is_not_capacity() {
    let mut broken = node("c", 4);
    broken.ready = false;
    let p = plan(&snap(vec![broken], vec![]), 1, now(), &cfg());
    assert_eq!(p.summary.free_slots + p.summary.incoming_slots, 0);
    assert_eq!(p.grow_target(), Some(2));
}

#[test]
fn defect_4_scales_up_from_an_empty_pool_with_the_node_template() {
    let mut c = cfg();
    c.min_nodes = 0;
    c.node_template = Some(template());
    let p = plan(&snap(vec![], vec![]), 0, now(), &c);
    assert_eq!(
        p.grow_target(),
        Some(1),
        "4 slots per template node cover buffer 4"
    );
    // Six pending servers + buffer 4 = 10 slots = 3 nodes.
    let pending = (0..6).map(|i| server(&format!("g/s{i}"), None)).collect();
    let p = plan(&snap(vec![], pending), 0, now(), &c);
    assert_eq!(p.grow_target(), Some(3));
}

#[test]
fn empty_pool_without_template_orders_one_node_to_learn_its_size() {
    let mut c = cfg();
    c.min_nodes = 0;
    let p = plan(&snap(vec![], vec![]), 0, now(), &c);
    assert_eq!(p.grow_target(), Some(1));
    // While that node is on its way, nothing more is ordered.
    let p = plan(&snap(vec![], vec![]), 1, now(), &c);
    assert_eq!(p.grow_target(), None);
}

#[test]
fn growing_an_empty_pool_to_its_minimum_says_so_not_that_it_grows_by_one() {
    // Issue 14: with minimum 3 the plan grows to 3, and its warning must say that.
    let mut c = cfg();
    c.min_nodes = 3;
    let p = plan(&snap(vec![], vec![]), 0, now(), &c);
    assert_eq!(p.grow_target(), Some(3));
    assert!(
        p.warnings
            .iter()
            .any(|w| w.contains("growing to minimum-node-pool-size 3")),
        "{:?}",
        p.warnings
    );
    assert!(
        !p.warnings.iter().any(|w| w.contains("by one node")),
        "{:?}",
        p.warnings
    );
    // Minimum 0: one node, and the warning says one.
    c.min_nodes = 0;
    let p = plan(&snap(vec![], vec![]), 0, now(), &c);
    assert_eq!(p.grow_target(), Some(1));
    assert!(p.warnings.iter().any(|w| w.contains("by one node")));
}

#[test]
fn defect_5_every_expired_empty_node_is_deleted_not_just_the_first() {
    let s = snap(
        vec![
            node("a", 4),
            node("b", 4),
            ours("c", 4, 600),
            ours("d", 4, 500),
            ours("e", 4, 400),
        ],
        vec![],
    );
    let p = plan(&s, 5, now(), &cfg());
    assert_eq!(nodes_of(&p, ActionKind::Delete), vec!["c", "d", "e"]);
}

#[test]
fn defect_8_node_cordoned_by_an_admin_is_never_uncordoned_or_deleted() {
    // Short of buffer, with an admin-cordoned empty node available: grow instead.
    let s = snap(vec![node("a", 4), foreign("admin", 4)], servers_on("a", 4));
    let p = plan(&s, 2, now(), &cfg());
    assert!(nodes_of(&p, ActionKind::Uncordon).is_empty());
    assert!(nodes_of(&p, ActionKind::Delete).is_empty());
    assert_eq!(p.grow_target(), Some(3));
    assert_eq!(p.summary.cordoned_by_others, 1);
}

#[test]
fn defect_9_missing_or_bad_timestamp_skips_that_node_only() {
    let mut no_stamp = ours("b", 4, 600);
    no_stamp.cordon_timestamp = None;
    let mut bad_stamp = ours("c", 4, 600);
    bad_stamp.cordon_timestamp = Some("yesterday".to_string());
    let s = snap(
        vec![
            node("a", 4),
            node("z", 4),
            no_stamp,
            bad_stamp,
            ours("d", 4, 600),
        ],
        vec![],
    );
    let p = plan(&s, 5, now(), &cfg());
    assert_eq!(nodes_of(&p, ActionKind::Delete), vec!["d"]);
    assert_eq!(p.warnings.len(), 2, "{:?}", p.warnings);
    assert!(p.warnings.iter().any(|w| w.contains("yesterday")));
}

#[test]
fn defect_12_pending_server_pods_are_demand() {
    // 4 free slots = buffer, but 3 servers wait: 7 slots needed -> 1 more node (4 slots).
    let mut pods = servers_on("a", 4);
    pods.extend((0..3).map(|i| server(&format!("g/p{i}"), None)));
    let s = snap(vec![node("a", 4), node("b", 4)], pods);
    let p = plan(&s, 2, now(), &cfg());
    assert_eq!(p.summary.pending_servers, 3);
    assert_eq!(p.grow_target(), Some(3));
}

#[test]
fn short_of_buffer_uncordons_own_nodes_busiest_first_before_growing() {
    // a full; b cordoned by us with 3 servers (1 free); c cordoned by us, empty (4 free).
    let mut pods = servers_on("a", 4);
    pods.extend(servers_on("b", 3));
    let s = snap(vec![node("a", 4), ours("b", 4, 10), ours("c", 4, 10)], pods);
    let p = plan(&s, 3, now(), &cfg());
    assert_eq!(nodes_of(&p, ActionKind::Uncordon), vec!["b", "c"]);
    assert_eq!(p.grow_target(), None, "5 slots after uncordon >= buffer 4");
}

#[test]
fn growth_is_ceil_missing_over_slots_per_node_and_capped_at_max() {
    let mut c = cfg();
    c.buffer = 9;
    let s = snap(vec![node("a", 4)], servers_on("a", 4));
    let p = plan(&s, 1, now(), &c);
    assert_eq!(p.grow_target(), Some(4), "9 missing / 4 per node = 3 more");
    c.max_nodes = 2;
    let p = plan(&s, 1, now(), &c);
    assert_eq!(p.grow_target(), Some(2));
    assert!(p.warnings.iter().any(|w| w.contains("maximum")));
}

#[test]
fn new_node_size_excludes_daemon_pods_and_takes_the_smallest_node() {
    // a: 4 CPU with a 1 CPU daemon -> 3 slots when empty; b: 8 CPU -> 7. New node = 3 slots.
    let mut pods = vec![
        other("ks/d-a", "a", 1000, true),
        other("ks/d-b", "b", 1000, true),
    ];
    pods.extend(servers_on("a", 3));
    pods.extend(servers_on("b", 7));
    let s = snap(vec![node("a", 4), node("b", 8)], pods);
    let p = plan(&s, 2, now(), &cfg());
    assert_eq!(p.summary.slots_per_new_node, Some(3));
    assert_eq!(p.grow_target(), Some(4), "4 missing / 3 per node = 2 more");
}

#[test]
fn below_minimum_grows_to_minimum() {
    let mut c = cfg();
    c.min_nodes = 3;
    let s = snap(vec![node("a", 8), node("b", 8)], vec![]);
    let p = plan(&s, 2, now(), &c);
    assert_eq!(p.grow_target(), Some(3));
    assert!(p.actions[0].reason().contains("minimum"));
}

#[test]
fn surplus_cordons_fewest_servers_first_keeping_buffer_and_minimum() {
    // Four 4-CPU nodes: a 3 servers, b 1, c 0, d 2 -> 10 free, buffer 4: surplus 6 = 1 node.
    let mut pods = servers_on("a", 3);
    pods.extend(servers_on("b", 1));
    pods.extend(servers_on("d", 2));
    let s = snap(
        vec![node("a", 4), node("b", 4), node("c", 4), node("d", 4)],
        pods,
    );
    let p = plan(&s, 4, now(), &cfg());
    assert_eq!(nodes_of(&p, ActionKind::Cordon), vec!["c"]);
    // Buffer 0: surplus 10 = 2 whole nodes: c, then b.
    let mut c = cfg();
    c.buffer = 0;
    let p = plan(&s, 4, now(), &c);
    assert_eq!(nodes_of(&p, ActionKind::Cordon), vec!["c", "b"]);
    // Minimum 4: nothing may be cordoned.
    c.min_nodes = 4;
    let p = plan(&s, 4, now(), &c);
    assert!(nodes_of(&p, ActionKind::Cordon).is_empty());
}

#[test]
fn no_scale_down_while_nodes_are_on_their_way() {
    let s = snap(vec![node("a", 4), node("b", 4), node("c", 4)], vec![]);
    let p = plan(&s, 4, now(), &cfg());
    assert!(nodes_of(&p, ActionKind::Cordon).is_empty());
}

#[test]
fn node_with_a_server_is_never_deleted_however_long_cordoned() {
    let s = snap(
        vec![node("a", 4), node("b", 4), ours("c", 4, 86_400)],
        servers_on("c", 1),
    );
    let p = plan(&s, 3, now(), &cfg());
    assert!(nodes_of(&p, ActionKind::Delete).is_empty());
}

#[test]
fn empty_node_is_deleted_only_after_the_expiration() {
    let s = snap(vec![node("a", 4), node("b", 4), ours("c", 4, 119)], vec![]);
    assert!(nodes_of(&plan(&s, 3, now(), &cfg()), ActionKind::Delete).is_empty());
    let s = snap(vec![node("a", 4), node("b", 4), ours("c", 4, 120)], vec![]);
    assert_eq!(
        nodes_of(&plan(&s, 3, now(), &cfg()), ActionKind::Delete),
        vec!["c"]
    );
}

#[test]
fn deletions_keep_the_pool_at_its_minimum() {
    let mut c = cfg();
    c.min_nodes = 2;
    c.buffer = 0;
    let s = snap(
        vec![node("a", 4), ours("b", 4, 600), ours("c", 4, 700)],
        vec![],
    );
    let p = plan(&s, 3, now(), &c);
    assert_eq!(
        nodes_of(&p, ActionKind::Delete),
        vec!["c"],
        "oldest mark first, one only"
    );
}

#[test]
fn untolerated_taint_gives_a_node_no_slots() {
    let mut tainted = node("t", 4);
    tainted.taints.push(Taint {
        key: "dedicated".into(),
        value: "other".into(),
        effect: TaintEffect::NoSchedule,
    });
    let s = snap(vec![node("a", 4), tainted.clone()], vec![]);
    let p = plan(&s, 2, now(), &cfg());
    assert_eq!(p.summary.free_slots, 4);
    let mut c = cfg();
    c.tolerations = vec!["dedicated=other:NoSchedule".parse().expect("valid")];
    let p = plan(&snap(vec![node("a", 4), tainted], vec![]), 2, now(), &c);
    assert_eq!(p.summary.free_slots, 8);
}

#[test]
fn memory_request_limits_slots_when_set() {
    let mut c = cfg();
    c.slot.memory_bytes = 6 * GIB; // 16 GiB nodes: 2 servers by memory, 4 by CPU.
    let p = plan(&snap(vec![node("a", 4)], vec![]), 1, now(), &c);
    assert_eq!(p.summary.free_slots, 2);
}

#[test]
fn every_action_carries_a_reason() {
    let mut pods = servers_on("a", 4);
    pods.extend((0..5).map(|i| server(&format!("g/p{i}"), None)));
    let s = snap(vec![node("a", 4), ours("b", 4, 10)], pods);
    let p = plan(&s, 2, now(), &cfg());
    assert!(!p.actions.is_empty());
    assert!(p.actions.iter().all(|a| !a.reason().is_empty()));
}

#[test]
fn node_tainted_against_servers_is_never_cordoned() {
    let mut tainted = node("t", 4);
    tainted.taints.push(Taint {
        key: "maintenance".into(),
        value: "".into(),
        effect: TaintEffect::NoSchedule,
    });
    let mut c = cfg();
    c.buffer = 0;
    let s = snap(vec![node("a", 4), node("b", 4), tainted], vec![]);
    let p = plan(&s, 3, now(), &c);
    // Surplus of 2 whole nodes; the tainted node still counts toward the minimum of 1.
    assert_eq!(nodes_of(&p, ActionKind::Cordon), vec!["a", "b"]);
    assert!(!nodes_of(&p, ActionKind::Cordon).contains(&"t".to_string()));
}

#[test]
fn booting_node_with_the_not_ready_taint_still_counts_as_incoming() {
    // Real clusters taint a registering node node.kubernetes.io/not-ready:NoSchedule until it
    // is Ready: its capacity is on its way, not missing.
    let mut booting = node("b", 4);
    booting.ready = false;
    booting.created = Some(ago(20));
    booting.taints.push(Taint {
        key: "node.kubernetes.io/not-ready".into(),
        value: "".into(),
        effect: TaintEffect::NoSchedule,
    });
    let p = plan(
        &snap(vec![node("a", 4), booting], servers_on("a", 4)),
        2,
        now(),
        &cfg(),
    );
    assert_eq!(p.summary.incoming_slots, 4);
    assert!(p.actions.is_empty(), "{:?}", p.actions);
}

#[test]
fn ready_node_still_carrying_a_lifecycle_taint_is_incoming_not_free() {
    // Just Ready, the lifecycle controller has not lifted the taint yet: the scheduler places
    // nothing there (so no free slot), but its capacity is on its way (so no new order).
    for key in [
        "node.kubernetes.io/not-ready",
        "node.cloudprovider.kubernetes.io/uninitialized",
    ] {
        let mut fresh = node("b", 4);
        fresh.created = Some(ago(60));
        fresh.taints.push(Taint {
            key: key.into(),
            value: "".into(),
            effect: TaintEffect::NoSchedule,
        });
        let p = plan(
            &snap(vec![node("a", 4), fresh], servers_on("a", 4)),
            2,
            now(),
            &cfg(),
        );
        assert_eq!(p.summary.free_slots, 0, "{key}");
        assert_eq!(p.summary.incoming_slots, 4, "{key}");
        assert!(p.actions.is_empty(), "{key}: {:?}", p.actions);
    }
}

#[test]
fn not_ready_noexecute_taints_are_tolerated_like_admission_does() {
    // DefaultTolerationSeconds gives every pod these two tolerations.
    let mut n = node("a", 4);
    for key in [
        "node.kubernetes.io/not-ready",
        "node.kubernetes.io/unreachable",
    ] {
        n.taints.push(Taint {
            key: key.into(),
            value: "".into(),
            effect: TaintEffect::NoExecute,
        });
    }
    let p = plan(&snap(vec![n], vec![]), 1, now(), &cfg());
    assert_eq!(p.summary.free_slots, 4);
}

// ---------------------------------------------------------------------------------------------
// The cloud pool, cross-checked (issue 10).

use kubescaler::model::{CloudNode, CloudView, InstanceStatus};
use kubescaler::planner::{plan_with, Observed};

/// One pass of the default config against a cloud view that differs from the snapshot.
fn plan_in_cloud(
    s: &kubescaler::model::ClusterSnapshot,
    cloud: &CloudView,
) -> kubescaler::planner::Plan {
    plan_with(
        s,
        cloud,
        &BTreeSet::new(),
        &Observed::default(),
        now(),
        &cfg(),
    )
}
use std::collections::BTreeSet;

fn instance(id: &str, created_secs_ago: Option<i64>) -> CloudNode {
    CloudNode {
        id: id.to_string(),
        name: String::new(),
        status: InstanceStatus::Creating,
        state: "provisioning".to_string(),
        provider_id: None,
        created: created_secs_ago.map(ago),
    }
}

#[test]
fn nodes_outside_the_cloud_pool_are_neither_counted_nor_touched() {
    // The selector matches a and x; the cloud pool has only a. x is empty and would be a
    // surplus node to cordon; its slots would hide a shortage.
    let s = snap(vec![node("a", 4), node("x", 4)], servers_on("a", 4));
    let mut cloud = CloudView::trusting(&s, 1);
    cloud.members.remove("x");
    let p = plan_in_cloud(&s, &cloud);
    assert!(
        nodes_of(&p, ActionKind::Cordon).is_empty(),
        "{:?}",
        p.actions
    );
    assert_eq!(p.outside_pool, vec!["x".to_string()]);
    assert_eq!(p.summary.outside_pool_nodes, 1);
    assert_eq!(p.summary.free_slots, 0, "x's slots counted");
    // a is full, buffer 4: the pool grows instead.
    assert_eq!(p.grow_target(), Some(2));
}

#[test]
fn an_instance_that_never_registers_stops_counting_and_is_deleted() {
    // a is full; the cloud has a second instance, created 11 minutes ago (boot timeout 10),
    // that never registered: not incoming capacity, deleted through the cloud, and the pool
    // grows from what remains.
    let s = snap(vec![node("a", 4)], servers_on("a", 4));
    let mut cloud = CloudView::trusting(&s, 2);
    cloud.unregistered = vec![instance("stuck-1", Some(660))];
    let p = plan_in_cloud(&s, &cloud);
    assert_eq!(p.summary.stuck_instances, 1);
    assert_eq!(p.summary.incoming_slots, 0);
    assert!(matches!(
        &p.actions[0],
        Action::DeleteInstance { instance, .. } if instance.id == "stuck-1"
    ));
    // Target 2 - 1 stuck = 1, and one node of 4 slots is missing for the buffer.
    assert!(p
        .actions
        .iter()
        .any(|a| matches!(a, Action::Grow { from: 1, to: 2, .. })));

    // Within the boot timeout the same instance is capacity on its way.
    cloud.unregistered = vec![instance("young-1", Some(60))];
    let p = plan_in_cloud(&s, &cloud);
    assert_eq!(p.summary.stuck_instances, 0);
    assert_eq!(p.summary.incoming_slots, 4);
    assert!(p.actions.is_empty(), "{:?}", p.actions);
}

#[test]
fn a_node_whose_deletion_was_accepted_is_not_deleted_again_after_a_restart() {
    // A fresh process sees only what the cluster holds: the accepted-deletion mark.
    let mut going = ours("going", 4, 3600);
    going.deletion_accepted = Some(ago(120).to_string());
    let s = snap(vec![node("a", 4), node("b", 4), going.clone()], vec![]);
    let p = plan(&s, 3, now(), &cfg());
    assert!(
        nodes_of(&p, ActionKind::Delete).is_empty(),
        "{:?}",
        p.actions
    );
    assert_eq!(p.summary.deleting_nodes, 1);
    // Past the memory (10 minutes), a node the cloud still runs is deleted again.
    going.deletion_accepted = Some(ago(700).to_string());
    let s = snap(vec![node("a", 4), node("b", 4), going], vec![]);
    let p = plan(&s, 3, now(), &cfg());
    assert_eq!(nodes_of(&p, ActionKind::Delete), vec!["going".to_string()]);
}

#[test]
fn a_node_the_cloud_reports_going_is_never_capacity_nor_deleted() {
    let s = snap(vec![node("a", 4), ours("d", 4, 3600)], vec![]);
    let mut cloud = CloudView::trusting(&s, 2);
    cloud.members.insert("d".into(), InstanceStatus::Deleting);
    let p = plan_in_cloud(&s, &cloud);
    assert!(
        nodes_of(&p, ActionKind::Delete).is_empty(),
        "{:?}",
        p.actions
    );
    assert_eq!(p.summary.deleting_nodes, 1);
}

#[test]
fn a_held_back_node_lets_the_next_expired_node_take_its_turn() {
    // Minimum 2 of 4: room for one deletion. The oldest is held back after failures.
    let mut c = cfg();
    c.min_nodes = 2;
    c.buffer = 0;
    let s = snap(
        vec![
            node("a", 4),
            node("b", 4),
            ours("old", 4, 7200),
            ours("newer", 4, 3600),
        ],
        servers_on("a", 4),
    );
    let held = BTreeSet::from(["old".to_string()]);
    let p = plan_with(
        &s,
        &CloudView::trusting(&s, 4),
        &held,
        &Observed::default(),
        now(),
        &c,
    );
    assert_eq!(nodes_of(&p, ActionKind::Delete), vec!["newer".to_string()]);
}

#[test]
fn a_schedulable_node_with_kubescalers_marks_gets_them_cleared() {
    // A person ran `kubectl uncordon`: the node is schedulable, the annotations remain.
    let mut n = node("b", 4);
    n.has_kubescaler_marks = true;
    n.cordon_timestamp = Some(ago(60).to_string());
    let s = snap(vec![node("a", 4), n], servers_on("a", 4));
    let p = plan(&s, 2, now(), &cfg());
    assert_eq!(nodes_of(&p, ActionKind::ClearMarks), vec!["b".to_string()]);
}

#[test]
fn durations_past_i64_mean_never_not_at_once() {
    // Defence in depth behind config validation: u64::MAX seconds must not wrap negative.
    let mut c = cfg();
    c.empty_node_expiration_sec = u64::MAX;
    c.node_boot_timeout_sec = u64::MAX;
    let s = snap(
        vec![node("a", 4), node("b", 4), ours("old", 4, 7200)],
        vec![],
    );
    let p = plan(&s, 3, now(), &c);
    assert!(
        nodes_of(&p, ActionKind::Delete).is_empty(),
        "{:?}",
        p.actions
    );
}

#[test]
fn every_node_is_explained_with_its_class_and_why_it_is_left_alone() {
    // Issue 14: what `explain` and `/debug/plan` show, one row per node.
    let mut c = cfg();
    // The busy node's 2 free slots cover the buffer: nothing is uncordoned.
    c.buffer = 1;
    let s = snap(
        vec![
            node("a-busy", 4),
            ours("b-draining", 4, 600),
            ours("c-young", 4, 50),
            ours("d-expired", 4, 600),
            foreign("e-admin", 4),
        ],
        [servers_on("a-busy", 2), servers_on("b-draining", 1)].concat(),
    );
    let p = plan(&s, 5, now(), &c);
    let row = |name: &str| {
        p.nodes
            .iter()
            .find(|n| n.name == name)
            .unwrap_or_else(|| panic!("no row for {name}: {:?}", p.nodes))
            .clone()
    };
    let busy = row("a-busy");
    assert_eq!(
        (busy.class.as_str(), busy.servers, busy.free_slots),
        ("active", 2, 2)
    );
    assert!(busy.verdict.contains("kept: 2 servers"), "{}", busy.verdict);
    let draining = row("b-draining");
    assert_eq!(draining.class, "kubescaler's");
    assert!(
        draining.verdict.contains("not deleted: 1 server"),
        "{}",
        draining.verdict
    );
    // Cordoned 50 s ago, expiration 120 s: 1m10s to go.
    let young = row("c-young");
    assert!(
        young.verdict.contains("deletable in 1m10s"),
        "{}",
        young.verdict
    );
    let expired = row("d-expired");
    assert!(
        expired.verdict.starts_with("delete: "),
        "{}",
        expired.verdict
    );
    let admin = row("e-admin");
    assert_eq!(admin.class, "someone else's");
    assert!(admin.verdict.contains("never touched"), "{}", admin.verdict);
    assert_eq!(p.nodes.len(), 5);
}
