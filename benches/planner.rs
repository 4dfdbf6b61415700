//! The planner's cost per pass: `plan()` on generated pools of 100, 1,000, 5,000 and 10,000
//! nodes with 30 pods per node (2 DaemonSet pods and 28 servers on a busy node), plus the
//! snapshot the watch caches hand it (`ClusterIndex::snapshot`, which clones every entry).
//!
//! Targets: `plan` under 1 ms at 1,000 nodes and under 10 ms at 10,000.
//!
//! `cargo bench --bench planner`; medians are in `target/criterion/*/*/new/estimates.json`.
//! Under `cargo test` (no `--bench`) each case runs once on the two smaller pools.

use std::collections::BTreeMap;
use std::hint::black_box;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use jiff::Timestamp;
use kubescaler::model::{ClusterSnapshot, NodeState, PodState, Resources};
use kubescaler::planner::{plan, PlannerConfig};

// The planner tests' builders; only their settings are used here.
#[path = "../tests/common/mod.rs"]
mod common;

/// Pods per node.
const PODS_PER_NODE: usize = 30;
/// DaemonSet pods per node.
const DAEMON_PODS: usize = 2;

fn now() -> Timestamp {
    Timestamp::from_second(1_764_158_400).unwrap_or(Timestamp::UNIX_EPOCH)
}

fn ago(secs: i64) -> Timestamp {
    Timestamp::from_second(now().as_second() - secs).unwrap_or(Timestamp::UNIX_EPOCH)
}

/// A pool of `nodes` nodes shaped like a production game pool: 32 CPUs, 64 GiB, 110 pods
/// allocatable each; every 20th node cordoned by kubescaler (half of those empty and expired);
/// the rest busy with 28 servers; one pending server per 100 nodes.
fn pool(nodes: usize) -> ClusterSnapshot {
    let mut snapshot = ClusterSnapshot::default();
    let labels = BTreeMap::from([
        (
            "doks.digitalocean.com/node-pool".to_string(),
            "game-servers".to_string(),
        ),
        (
            "doks.digitalocean.com/node-id".to_string(),
            "00000000-0000-0000-0000-000000000000".to_string(),
        ),
        ("role".to_string(), "game-servers".to_string()),
    ]);
    for n in 0..nodes {
        let name = format!("game-servers-pool-{n:06}");
        let cordoned = n % 20 == 19;
        let empty = cordoned && n % 40 == 39;
        snapshot.nodes.push(NodeState {
            name: name.clone(),
            provider_id: Some(format!("digitalocean://{}", 400_000_000 + n)),
            labels: labels.clone(),
            identity_annotations: Default::default(),
            allocatable: Resources {
                cpu_millis: 32_000,
                memory_bytes: 64 << 30,
            },
            allocatable_pods: 110,
            ready: true,
            unschedulable: cordoned,
            taints: Vec::new(),
            cordoned_by_kubescaler: cordoned,
            has_kubescaler_marks: cordoned,
            deletion_accepted: None,
            cordon_timestamp: cordoned.then(|| ago(3600).to_string()),
            created: Some(ago(86_400)),
        });
        let servers = if empty {
            0
        } else {
            PODS_PER_NODE - DAEMON_PODS
        };
        for d in 0..DAEMON_PODS {
            snapshot.pods.push(PodState {
                key: format!("kube-system/agent-{d}-{n:06}"),
                node: Some(name.clone()),
                requests: Resources {
                    cpu_millis: 150,
                    memory_bytes: 256 << 20,
                },
                is_server: false,
                is_daemon: true,
                game_server: None,
            });
        }
        for s in 0..servers {
            snapshot.pods.push(PodState {
                key: format!("games/match-{n:06}-{s:02}"),
                node: Some(name.clone()),
                requests: Resources {
                    cpu_millis: 1000,
                    memory_bytes: 2 << 30,
                },
                is_server: true,
                is_daemon: false,
                game_server: None,
            });
        }
    }
    for p in 0..nodes / 100 {
        snapshot.pods.push(PodState {
            key: format!("games/pending-{p:06}"),
            node: None,
            requests: Resources {
                cpu_millis: 1000,
                memory_bytes: 2 << 30,
            },
            is_server: true,
            is_daemon: false,
            game_server: None,
        });
    }
    snapshot
}

/// Min 2, max twice the pool, buffer 8, 1-CPU 2-GiB servers; the rest as the planner tests
/// set it (`tests/common`: fixed buffer, pod servers, 120 s expiration, no scale-down holds).
fn cfg(nodes: usize) -> PlannerConfig {
    PlannerConfig {
        min_nodes: 2,
        max_nodes: (nodes * 2) as u32,
        buffer: 8,
        slot: Resources {
            cpu_millis: 1000,
            memory_bytes: 2 << 30,
        },
        ..common::cfg()
    }
}

/// Whether cargo runs the real benchmark (`cargo bench`) rather than a test pass.
fn benchmarking() -> bool {
    std::env::args().any(|a| a == "--bench")
}

fn sizes() -> Vec<usize> {
    if benchmarking() {
        vec![100, 1_000, 5_000, 10_000]
    } else {
        vec![100, 1_000]
    }
}

fn planner(c: &mut Criterion) {
    let mut group = c.benchmark_group("plan");
    group.warm_up_time(Duration::from_secs(1));
    group.measurement_time(Duration::from_secs(3));
    for nodes in sizes() {
        let snapshot = pool(nodes);
        let config = cfg(nodes);
        let target = nodes as u32;
        // Sanity: the plan is not trivial (it deletes the expired, empty nodes).
        let p = plan(&snapshot, target, now(), &config);
        assert!(!p.actions.is_empty(), "the generated pool needs actions");
        group.throughput(Throughput::Elements(snapshot.pods.len() as u64));
        group.bench_with_input(BenchmarkId::new("nodes", nodes), &nodes, |b, _| {
            b.iter(|| plan(black_box(&snapshot), target, now(), &config))
        });
    }
    group.finish();
}

/// What a pass pays before planning: the snapshot is a sorted clone of every cached entry.
fn snapshot(c: &mut Criterion) {
    use k8s_openapi::api::core::v1::{Container, Node, NodeCondition, NodeStatus, Pod, PodSpec};
    use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
    use kube::runtime::watcher::Event;
    use kubescaler::kubernetes::ClusterIndex;

    let mut group = c.benchmark_group("snapshot");
    group.warm_up_time(Duration::from_secs(1));
    group.measurement_time(Duration::from_secs(3));
    group.sample_size(20);
    for nodes in sizes() {
        let mut index = ClusterIndex::new(("app".to_string(), "game-server".to_string()));
        index.on_node_event(Event::Init);
        index.on_pod_event(Event::Init);
        for n in 0..nodes {
            let name = format!("game-servers-pool-{n:06}");
            index.on_node_event(Event::InitApply(Node {
                metadata: ObjectMeta {
                    name: Some(name.clone()),
                    ..ObjectMeta::default()
                },
                status: Some(NodeStatus {
                    allocatable: Some(BTreeMap::from([
                        ("cpu".to_string(), Quantity("32".to_string())),
                        ("memory".to_string(), Quantity("64Gi".to_string())),
                        ("pods".to_string(), Quantity("110".to_string())),
                    ])),
                    conditions: Some(vec![NodeCondition {
                        type_: "Ready".to_string(),
                        status: "True".to_string(),
                        ..NodeCondition::default()
                    }]),
                    ..NodeStatus::default()
                }),
                ..Node::default()
            }));
            for p in 0..PODS_PER_NODE {
                index.on_pod_event(Event::InitApply(Pod {
                    metadata: ObjectMeta {
                        name: Some(format!("match-{n:06}-{p:02}")),
                        namespace: Some("games".to_string()),
                        ..ObjectMeta::default()
                    },
                    spec: Some(PodSpec {
                        node_name: Some(name.clone()),
                        containers: vec![Container::default()],
                        ..PodSpec::default()
                    }),
                    ..Pod::default()
                }));
            }
        }
        index.on_node_event(Event::InitDone);
        index.on_pod_event(Event::InitDone);
        group.throughput(Throughput::Elements((nodes * PODS_PER_NODE) as u64));
        group.bench_with_input(BenchmarkId::new("nodes", nodes), &nodes, |b, _| {
            b.iter(|| black_box(&index).snapshot())
        });
    }
    group.finish();
}

criterion_group!(benches, planner, snapshot);
criterion_main!(benches);
