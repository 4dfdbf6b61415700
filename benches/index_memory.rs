//! Bytes the watch-cache index holds per cached pod and per cached node, measured with a
//! counting global allocator: live heap bytes (as requested from the allocator, so without
//! its own per-block overhead) and live allocations, after feeding `ClusterIndex` realistic
//! watch events, divided by the number of entries. Hash-map slack is included, as it is in the
//! running daemon.
//!
//! Runs under `cargo bench --bench index_memory` and under `cargo test` (it is a plain binary:
//! it prints the figures and fails when a pod costs 1 KiB or more).

use std::alloc::{GlobalAlloc, Layout, System};
use std::collections::BTreeMap;
use std::process::ExitCode;
use std::sync::atomic::{AtomicIsize, Ordering};

use k8s_openapi::api::core::v1::{Container, Pod, PodSpec, PodStatus, ResourceRequirements};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use kube::runtime::watcher::Event;
use kubescaler::kubernetes::ClusterIndex;

#[path = "support/mod.rs"]
mod support;
use kubescaler::model::{NodeState, PodState};
use support::{node, node_name, q};

/// Live bytes and blocks.
static BYTES: AtomicIsize = AtomicIsize::new(0);
static BLOCKS: AtomicIsize = AtomicIsize::new(0);

/// The system allocator, counting.
struct Counting;

// SAFETY: every call is forwarded unchanged to the system allocator; the counters are atomics.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: same contract as the caller's.
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            BYTES.fetch_add(layout.size() as isize, Ordering::Relaxed);
            BLOCKS.fetch_add(1, Ordering::Relaxed);
        }
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: same contract as the caller's.
        unsafe { System.dealloc(ptr, layout) };
        BYTES.fetch_sub(layout.size() as isize, Ordering::Relaxed);
        BLOCKS.fetch_sub(1, Ordering::Relaxed);
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: same contract as the caller's.
        let p = unsafe { System.realloc(ptr, layout, new_size) };
        if !p.is_null() {
            BYTES.fetch_add(
                new_size as isize - layout.size() as isize,
                Ordering::Relaxed,
            );
        }
        p
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

fn live() -> (isize, isize) {
    (
        BYTES.load(Ordering::Relaxed),
        BLOCKS.load(Ordering::Relaxed),
    )
}

/// A bound game server pod with labels, an owner and two containers.
fn pod(i: usize) -> Pod {
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
            node_name: Some(node_name(i / 30)),
            containers: ["server", "sidecar"]
                .iter()
                .map(|name| Container {
                    name: (*name).to_string(),
                    resources: Some(ResourceRequirements {
                        requests: Some(BTreeMap::from([
                            ("cpu".to_string(), q("1")),
                            ("memory".to_string(), q("2Gi")),
                        ])),
                        ..ResourceRequirements::default()
                    }),
                    ..Container::default()
                })
                .collect(),
            ..PodSpec::default()
        }),
        status: Some(PodStatus {
            phase: Some("Running".to_string()),
            ..PodStatus::default()
        }),
    }
}

/// Live (bytes, blocks) added per call of `apply`, over `count` calls.
fn per_entry(count: usize, mut apply: impl FnMut(usize)) -> (f64, f64) {
    let (b0, n0) = live();
    for i in 0..count {
        apply(i);
    }
    let (b1, n1) = live();
    (
        (b1 - b0) as f64 / count as f64,
        (n1 - n0) as f64 / count as f64,
    )
}

fn main() -> ExitCode {
    const PODS: usize = 30_000;
    const NODES: usize = 1_000;
    let mut index = ClusterIndex::new(("app".to_string(), "game-server".to_string()));
    let (node_bytes, node_blocks) = per_entry(NODES, |n| {
        index.on_node_event(Event::Apply(node(n, false)));
    });
    let (pod_bytes, pod_blocks) = per_entry(PODS, |i| {
        index.on_pod_event(Event::Apply(pod(i)));
    });
    let counts = index.counts();

    // What parts of an entry cost, to see what could shrink: a node's label map, and the
    // strings every pod holds (its key twice: as the map key and in the entry; its node name).
    let states: Vec<NodeState> = (0..NODES)
        .filter_map(|n| kubescaler::kubernetes::index::node_state(&node(n, false)))
        .collect();
    let mut labels = Vec::with_capacity(NODES);
    let (label_bytes, _) = per_entry(NODES, |n| labels.push(states[n].labels.clone()));
    let keys: Vec<String> = (0..PODS)
        .map(|i| format!("games/match-{i:07}-x8k2p"))
        .collect();
    let mut copies = Vec::with_capacity(PODS);
    let (key_bytes, _) = per_entry(PODS, |i| copies.push(keys[i].clone()));
    let node_names: Vec<String> = (0..PODS).map(|i| node_name(i / 30)).collect();
    let mut names = Vec::with_capacity(PODS);
    let (name_bytes, _) = per_entry(PODS, |i| names.push(node_names[i].clone()));

    println!(
        "index_memory: {} nodes: {node_bytes:.0} B and {node_blocks:.1} allocations per node \
         (NodeState itself {} B)",
        counts.0,
        std::mem::size_of::<NodeState>()
    );
    println!(
        "index_memory: {} pods: {pod_bytes:.0} B and {pod_blocks:.1} allocations per pod \
         (PodState itself {} B)",
        counts.1,
        std::mem::size_of::<PodState>()
    );
    println!(
        "index_memory: of which a node's {} labels: {label_bytes:.0} B heap; a pod's key: \
         {key_bytes:.0} B heap (held twice), its node name: {name_bytes:.0} B heap",
        states.first().map_or(0, |s| s.labels.len())
    );
    let ok = pod_bytes < 1024.0 && counts == (NODES, PODS);
    println!(
        "index_memory: {} passed, {} failed",
        u8::from(ok),
        u8::from(!ok)
    );
    if ok {
        ExitCode::SUCCESS
    } else {
        eprintln!("index_memory: a cached pod must stay well under 1 KiB");
        ExitCode::FAILURE
    }
}
