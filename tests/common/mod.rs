//! Builders for planner inputs shared by the planner tests (and, for its settings,
//! benches/planner.rs).
#![allow(dead_code)]

use std::collections::BTreeMap;

use jiff::Timestamp;
use kubescaler::config::NodeTemplate;
use kubescaler::model::{ClusterSnapshot, NodeState, PodState, Resources};
use kubescaler::planner::PlannerConfig;

/// 1 CPU = 1000 millicores.
pub const CPU: u64 = 1000;
/// 1 GiB.
pub const GIB: u64 = 1 << 30;

/// A fixed "now" so plans are reproducible.
pub fn now() -> Timestamp {
    "2026-11-26T12:00:00Z".parse().expect("valid time")
}

/// `now` minus `secs` seconds.
pub fn ago(secs: i64) -> Timestamp {
    now()
        .checked_sub(jiff::SignedDuration::from_secs(secs))
        .expect("in range")
}

/// Settings: min 1, max 10, buffer 4 (fixed), 1 CPU servers, 120 s expiration, no scale-down
/// holds.
pub fn cfg() -> PlannerConfig {
    PlannerConfig {
        min_nodes: 1,
        max_nodes: 10,
        buffer: 4,
        slot: Resources {
            cpu_millis: CPU,
            memory_bytes: 0,
        },
        tolerations: vec![],
        empty_node_expiration_sec: 120,
        node_boot_timeout_sec: 600,
        node_template: None,
        server_source: kubescaler::model::ServerSource::Pods,
        agones: kubescaler::agones::AgonesSettings::default(),
        buffer_policy: kubescaler::buffer::BufferPolicy::Fixed,
        target_instant_start: 0.99,
        expected_node_boot_sec: 180,
        tick_sec: 10,
        // The rules of a single pass: a surplus is cordoned at once (the holds have tests
        // of their own).
        scale_down_delay_after_add_sec: 0,
        scale_down_unneeded_sec: 0,
        buffer_schedule: Default::default(),
    }
}

/// A 4-CPU node template.
pub fn template() -> NodeTemplate {
    NodeTemplate {
        cpu_millis: 4 * CPU,
        memory_bytes: 16 * GIB,
        pods: 110,
    }
}

/// A ready, schedulable node with `cpus` allocatable CPUs, created an hour ago.
pub fn node(name: &str, cpus: u64) -> NodeState {
    NodeState {
        name: name.to_string(),
        provider_id: Some(format!("digitalocean://{}", name.len())),
        labels: BTreeMap::from([("role".to_string(), "game-servers".to_string())]),
        identity_annotations: BTreeMap::new(),
        allocatable: Resources {
            cpu_millis: cpus * CPU,
            memory_bytes: 16 * GIB,
        },
        allocatable_pods: 110,
        ready: true,
        unschedulable: false,
        taints: vec![],
        cordoned_by_kubescaler: false,
        has_kubescaler_marks: false,
        deletion_accepted: None,
        cordon_timestamp: None,
        created: Some(ago(3600)),
    }
}

/// `node` cordoned by kubescaler `secs_ago` seconds ago.
pub fn ours(name: &str, cpus: u64, secs_ago: i64) -> NodeState {
    NodeState {
        unschedulable: true,
        cordoned_by_kubescaler: true,
        has_kubescaler_marks: true,
        deletion_accepted: None,
        cordon_timestamp: Some(ago(secs_ago).to_string()),
        ..node(name, cpus)
    }
}

/// `node` cordoned by an administrator.
pub fn foreign(name: &str, cpus: u64) -> NodeState {
    NodeState {
        unschedulable: true,
        ..node(name, cpus)
    }
}

/// A server pod requesting 1 CPU on `node` (None: pending).
pub fn server(key: &str, node: Option<&str>) -> PodState {
    PodState {
        key: key.to_string(),
        node: node.map(str::to_string),
        requests: Resources {
            cpu_millis: CPU,
            memory_bytes: 0,
        },
        is_server: true,
        is_daemon: false,
        game_server: None,
    }
}

/// A non-server pod with `millis` CPU on `node`.
pub fn other(key: &str, node: &str, millis: u64, daemon: bool) -> PodState {
    PodState {
        key: key.to_string(),
        node: Some(node.to_string()),
        requests: Resources {
            cpu_millis: millis,
            memory_bytes: 0,
        },
        is_server: false,
        is_daemon: daemon,
        game_server: None,
    }
}

/// `n` server pods on `node`.
pub fn servers_on(node: &str, n: usize) -> Vec<PodState> {
    (0..n)
        .map(|i| server(&format!("games/{node}-s{i}"), Some(node)))
        .collect()
}

/// A snapshot.
pub fn snap(nodes: Vec<NodeState>, pods: Vec<PodState>) -> ClusterSnapshot {
    ClusterSnapshot {
        nodes,
        pods,
        ..Default::default()
    }
}
