//! The watch-cache index's cost per watch event: one pod event (a server pod bound to its
//! node) with 1,000, 30,000 and 300,000 pods cached, and one node event (a node cordoned) with
//! 33, 1,000 and 10,000 nodes cached. Constant time: each is one key computation, one
//! conversion of the object and one hash-map insert, whatever the cache holds.
//!
//! `cargo bench --bench index`. Under `cargo test` (no `--bench`) each case runs once on the
//! two smaller caches.

use std::collections::BTreeMap;
use std::hint::black_box;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, BatchSize, BenchmarkId, Criterion};
use k8s_openapi::api::core::v1::{Container, Pod, PodSpec, PodStatus, ResourceRequirements};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use kube::runtime::watcher::Event;
use kubescaler::kubernetes::ClusterIndex;

#[path = "support/mod.rs"]
mod support;
use support::{node, node_name, q};

const PODS_PER_NODE: usize = 30;

fn server_pod(i: usize, node: Option<String>) -> Pod {
    Pod {
        metadata: ObjectMeta {
            name: Some(format!("match-{i:07}-x8k2p")),
            namespace: Some("games".to_string()),
            labels: Some(BTreeMap::from([
                ("app".to_string(), "game-server".to_string()),
                ("fleet".to_string(), "eu-west-ranked".to_string()),
            ])),
            owner_references: Some(vec![OwnerReference {
                kind: "GameServer".to_string(),
                name: format!("match-{i:07}"),
                api_version: "games.example.com/v1".to_string(),
                uid: "3f2a1c9e-5b7d-4e8f-9a0b-1c2d3e4f5a6b".to_string(),
                ..OwnerReference::default()
            }]),
            ..ObjectMeta::default()
        },
        spec: Some(PodSpec {
            node_name: node,
            containers: vec![
                Container {
                    name: "server".to_string(),
                    resources: Some(ResourceRequirements {
                        requests: Some(BTreeMap::from([
                            ("cpu".to_string(), q("1")),
                            ("memory".to_string(), q("2Gi")),
                        ])),
                        ..ResourceRequirements::default()
                    }),
                    ..Container::default()
                },
                Container {
                    name: "sidecar".to_string(),
                    resources: Some(ResourceRequirements {
                        requests: Some(BTreeMap::from([
                            ("cpu".to_string(), q("50m")),
                            ("memory".to_string(), q("64Mi")),
                        ])),
                        ..ResourceRequirements::default()
                    }),
                    ..Container::default()
                },
            ],
            ..PodSpec::default()
        }),
        status: Some(PodStatus {
            phase: Some("Running".to_string()),
            ..PodStatus::default()
        }),
    }
}

fn benchmarking() -> bool {
    std::env::args().any(|a| a == "--bench")
}

/// An index holding `pods` bound server pods on `pods / 30` nodes.
fn index_with(pods: usize) -> ClusterIndex {
    let mut index = ClusterIndex::new(("app".to_string(), "game-server".to_string()));
    let nodes = pods.div_ceil(PODS_PER_NODE);
    for n in 0..nodes {
        index.on_node_event(Event::Apply(node(n, false)));
    }
    for i in 0..pods {
        index.on_pod_event(Event::Apply(server_pod(
            i,
            Some(node_name(i / PODS_PER_NODE)),
        )));
    }
    index
}

fn pod_event(c: &mut Criterion) {
    let sizes: &[usize] = if benchmarking() {
        &[1_000, 30_000, 300_000]
    } else {
        &[1_000, 30_000]
    };
    let mut group = c.benchmark_group("index_pod_event");
    group.warm_up_time(Duration::from_secs(1));
    group.measurement_time(Duration::from_secs(3));
    for &pods in sizes {
        let mut index = index_with(pods);
        // A cached server pod is bound to its node (the event of every match start), then
        // seen pending again: alternate so that every event is a real change.
        let target = pods / 2;
        let events = [
            server_pod(target, None),
            server_pod(target, Some(node_name(target / PODS_PER_NODE))),
        ];
        let mut i = 0usize;
        group.bench_with_input(BenchmarkId::new("cached_pods", pods), &pods, |b, _| {
            b.iter_batched(
                || {
                    i += 1;
                    Event::Apply(events[i % 2].clone())
                },
                |e| black_box(index.on_pod_event(e)),
                BatchSize::SmallInput,
            )
        });
    }
    group.finish();
}

fn node_event(c: &mut Criterion) {
    let sizes: &[usize] = if benchmarking() {
        &[33, 1_000, 10_000]
    } else {
        &[33, 1_000]
    };
    let mut group = c.benchmark_group("index_node_event");
    group.warm_up_time(Duration::from_secs(1));
    group.measurement_time(Duration::from_secs(3));
    for &nodes in sizes {
        let mut index = ClusterIndex::new(("app".to_string(), "game-server".to_string()));
        for n in 0..nodes {
            index.on_node_event(Event::Apply(node(n, false)));
        }
        // A node is cordoned, then uncordoned: alternate so every event is a real change.
        let events = [node(nodes / 2, true), node(nodes / 2, false)];
        let mut i = 0usize;
        group.bench_with_input(BenchmarkId::new("cached_nodes", nodes), &nodes, |b, _| {
            b.iter_batched(
                || {
                    i += 1;
                    Event::Apply(events[i % 2].clone())
                },
                |e| black_box(index.on_node_event(e)),
                BatchSize::SmallInput,
            )
        });
    }
    group.finish();
}

criterion_group!(benches, pod_event, node_event);
criterion_main!(benches);
