//! kubescaler in `server-source: agones` mode, end to end: the real scale loop on a
//! `KubeCluster` watching GameServers, against the real control plane with Agones' CRDs
//! installed, a Fleet kept by the Agones stand-in (`tests/agones`: replicas, Ready on bind,
//! Packed allocation by a resourceVersion update) and the in-test cloud (`tests/cluster`).
//!
//! Every test ends with no live match lost (no Allocated GameServer, pod or node removed under
//! it) and no game server pod on a deleted node. Nodes have 4 CPUs and a GameServer requests
//! 1: four slots a node.
//!
//! Gated by `tests/cluster` (`KUBESCALER_E2E_KUBECONFIG`; required in CI) and by the CRD file.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use jiff::Timestamp;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::core::DynamicObject;
use kube::Client;
use kubescaler::agones::{
    game_server_info, game_server_resource, GameServerDelete, GameServerInfo, GameServerState,
    LiveNodeServers, GAMESERVER_LABEL, ROLE_GAMESERVER, ROLE_LABEL,
};
use kubescaler::kubernetes::{
    ActionEvent, ChangeEvent, KubeCluster, KubeError, Kubernetes, MarkOp, MarkOutcome,
};
use kubescaler::model::{ClusterSnapshot, NodeState};
use serde_json::json;
use tokio::sync::broadcast;

mod agones;
mod cluster;
use agones::{install_crds, AgonesStandIn, NamedAllocation, Options};
use cluster::cloud::{
    eventually, has_kubescaler_mark, is_unschedulable, Pool, TestCloud, FOUR_CPU, NAMESPACE,
    SERVER_LABEL, WAIT,
};
use cluster::{client_or_skip, prereq};

/// `empty-node-expiration-sec` of these tests.
const EXPIRATION: &str = "3";
/// How long the compaction comparison watches each pool, from kubescaler's start.
const WINDOW: Duration = Duration::from_secs(40);

/// A client of the control plane with Agones' CRDs installed, or `None` (skipped) off CI.
async fn agones_client(test: &str) -> Option<Client> {
    let client = client_or_skip(test).await?;
    let crds = prereq::agones_crds_or_skip(test)?;
    install_crds(&client, &crds).await;
    Some(client)
}

/// A Fleet of the pool's GameServers (its pods carry the pool's server label).
fn fleet_of(client: &Client, pool: &Pool) -> Arc<AgonesStandIn> {
    Arc::new(AgonesStandIn::start(
        client.clone(),
        Options::new(&pool.id, &pool.id).server_label(SERVER_LABEL, &pool.id),
    ))
}

/// kubescaler's settings in Agones mode (on top of [`Pool::config`]: 1 s tick, buffer 2,
/// min 1, max 10), with compaction at `per_minute`.
fn agones_settings(per_minute: &str) -> Vec<(&'static str, String)> {
    vec![
        ("SERVER_SOURCE", "agones".into()),
        ("AGONES_COMPACTION_PER_MINUTE", per_minute.into()),
        ("EMPTY_NODE_EXPIRATION_SEC", EXPIRATION.into()),
    ]
}

fn as_pairs<'a>(settings: &'a [(&'static str, String)]) -> Vec<(&'static str, &'a str)> {
    settings.iter().map(|(k, v)| (*k, v.as_str())).collect()
}

/// Asserts that no match and no game server pod was lost, saying which if one was.
fn assert_nothing_lost(pool: &Pool, fleet: &AgonesStandIn) {
    assert!(
        fleet.lost_matches().is_empty(),
        "lost matches: {:?}",
        fleet.lost_matches()
    );
    pool.assert_no_lost_servers();
}

/// Samples the cloud's instance count every 200 ms: node-seconds paid and the peak.
struct Meter {
    cloud: TestCloud,
    samples: Arc<Mutex<Vec<(Instant, usize)>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Meter {
    fn start(cloud: &TestCloud) -> Self {
        let meter_cloud = cloud.clone();
        let cloud = cloud.clone();
        let samples = Arc::new(Mutex::new(Vec::new()));
        let sink = Arc::clone(&samples);
        let task = tokio::spawn(async move {
            loop {
                let n = cloud.instances().len();
                sink.lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .push((Instant::now(), n));
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        });
        Meter {
            cloud: meter_cloud,
            samples,
            task,
        }
    }

    /// Node-seconds, peak and the count now.
    fn read(&self) -> (f64, usize, usize) {
        let mut samples = self.samples.lock().unwrap_or_else(PoisonError::into_inner);
        samples.push((Instant::now(), self.cloud.instances().len()));
        let node_seconds = samples
            .windows(2)
            .map(|w| w[0].1 as f64 * (w[1].0 - w[0].0).as_secs_f64())
            .sum();
        let peak = samples.iter().map(|s| s.1).max().unwrap_or(0);
        let last = samples.last().map_or(0, |s| s.1);
        (node_seconds, peak, last)
    }
}

impl Drop for Meter {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Waits until `fleet` has `n` Ready GameServers on `n` different nodes (the scheduler's
/// default scoring spreads them over empty nodes); returns the nodes.
async fn ready_one_per_node(fleet: &AgonesStandIn, n: usize) -> BTreeSet<String> {
    let servers = fleet.wait_state(GameServerState::Ready, n).await;
    let nodes: BTreeSet<String> = servers.iter().filter_map(|g| g.node.clone()).collect();
    assert_eq!(nodes.len(), n, "not one per node: {servers:?}");
    nodes
}

/// The nodes of the pool kubescaler has cordoned, once there is at least one.
async fn cordoned_by_kubescaler(pool: &Pool) -> Vec<String> {
    eventually("kubescaler to cordon a surplus node", WAIT, || async {
        let cordoned: Vec<String> = pool
            .nodes()
            .await
            .into_iter()
            .filter(|(_, n)| is_unschedulable(n) && has_kubescaler_mark(n))
            .map(|(name, _)| name)
            .collect();
        (!cordoned.is_empty()).then_some(cordoned)
    })
    .await
}

/// Scale up as the Fleet grows, then scale down by attrition with compaction: as matches start,
/// the Fleet keeps 2 Ready GameServers beyond its Allocated ones (as a Buffer FleetAutoscaler
/// would) and kubescaler adds the nodes their pods need; when every match has ended, the pool
/// goes back to its minimum of one node, and no live match was ever on a deleted or compacted
/// node.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_pool_grows_with_the_fleet_and_returns_to_its_minimum_with_no_match_lost() {
    let test = "e2e_agones::grow_and_return";
    let Some(client) = agones_client(test).await else {
        return;
    };
    let started = Instant::now();
    let pool = Pool::new(client.clone(), "aggrow", FOUR_CPU, Duration::from_secs(2));
    pool.cloud.start_with(1).await;
    let fleet = fleet_of(&client, &pool);
    let settings = agones_settings("600");
    let config = pool.config(&as_pairs(&settings));
    pool.run(fleet.run(async {
        let meter = Meter::start(&pool.cloud);
        let _kubescaler = pool.start_loop(&config);
        fleet.set_replicas(2);
        fleet.wait_state(GameServerState::Ready, 2).await;

        // Ten matches start one by one; the Fleet follows with allocated + 2.
        let mut matches = Vec::new();
        for k in 1..=10 {
            let a = eventually("a Ready GameServer to allocate", WAIT, || fleet.allocate()).await;
            matches.push(a);
            fleet.set_replicas(k + 2);
        }
        let servers = fleet.wait_state(GameServerState::Ready, 2).await;
        assert_eq!(fleet.count(GameServerState::Allocated).await, 10);
        let grown = pool.cloud.target();
        assert!(
            grown >= 3,
            "12 GameServers need 3 nodes of 4 slots; the pool is at {grown}: {servers:?}"
        );
        let (_, peak, _) = meter.read();

        // Load ends: each match ends and the Fleet shrinks with it.
        for (k, a) in matches.iter().enumerate().rev() {
            assert!(fleet.end_match(&a.name).await, "{a:?} was gone");
            fleet.set_replicas(u32::try_from(k).unwrap_or(0) + 2);
        }
        eventually("the pool back to its minimum of 1 node", WAIT, || async {
            (pool.cloud.instances().len() == 1 && pool.nodes().await.len() == 1).then_some(())
        })
        .await;
        let ready = fleet.wait_state(GameServerState::Ready, 2).await;
        let left = pool.nodes().await;
        assert!(
            ready
                .iter()
                .all(|g| g.node.as_ref().is_some_and(|n| left.contains_key(n))),
            "{ready:?} not on {:?}",
            left.keys()
        );
        let (node_seconds, _, last) = meter.read();
        eprintln!(
            "{test}: grew to {grown} nodes (peak {peak}), back to {last} after load; {} \
             GameServers compacted, {} nodes deleted, {node_seconds:.0} node-seconds; passed in {:?}",
            fleet.compacted().len(),
            pool.cloud.deleted_nodes().len(),
            started.elapsed()
        );
        assert_nothing_lost(&pool, &fleet);
    }))
    .await;
}

/// What the compaction comparison measured on one pool.
struct Watched {
    node_seconds: f64,
    nodes_at_end: usize,
    compacted: usize,
}

/// Three nodes with one idle Ready GameServer each (a Fleet of 3 after its matches ended), then
/// kubescaler with `settings` for [`WINDOW`].
async fn watch_idle_fleet(
    test: &str,
    tag: &str,
    settings: &[(&'static str, String)],
) -> Option<Watched> {
    let client = agones_client(test).await?;
    let pool = Pool::new(client.clone(), tag, FOUR_CPU, Duration::ZERO);
    pool.cloud.start_with(3).await;
    let fleet = fleet_of(&client, &pool);
    let config = pool.config(&as_pairs(settings));
    let mut watched = None;
    pool.run(fleet.run(async {
        fleet.set_replicas(3);
        let spread = ready_one_per_node(&fleet, 3).await;
        let meter = Meter::start(&pool.cloud);
        let start = Instant::now();
        let _kubescaler = pool.start_loop(&config);
        tokio::time::sleep(WINDOW).await;
        let (node_seconds, _, nodes_at_end) = meter.read();
        // Whatever the mode, the Fleet's three servers are still there, Ready.
        fleet.wait_state(GameServerState::Ready, 3).await;
        eprintln!(
            "{test}: {tag}: 3 nodes {spread:?} with an idle Ready GameServer each; after {:?}: \
             {nodes_at_end} nodes, {node_seconds:.0} node-seconds, {} compacted",
            start.elapsed(),
            fleet.compacted().len()
        );
        assert_nothing_lost(&pool, &fleet);
        watched = Some(Watched {
            node_seconds,
            nodes_at_end,
            compacted: fleet.compacted().len(),
        });
    }))
    .await;
    watched
}

/// With compaction, the idle Ready GameServers of surplus nodes are recreated on the node kept,
/// so the surplus nodes empty and are deleted: the pool is back at its minimum.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_ready_game_servers_are_compacted_so_their_nodes_empty_and_go() {
    let test = "e2e_agones::compaction";
    let Some(w) = watch_idle_fleet(test, "agcompact", &agones_settings("600")).await else {
        return;
    };
    assert_eq!(
        w.nodes_at_end, 1,
        "compaction left {} nodes",
        w.nodes_at_end
    );
    assert!(w.compacted >= 2, "{} compacted", w.compacted);
    // Cheaper than keeping the three nodes for the window, as the two baselines do.
    let kept = WINDOW.as_secs_f64() * 3.0;
    assert!(
        w.node_seconds < kept * 0.6,
        "{:.0} node-seconds",
        w.node_seconds
    );
}

/// Pods mode (kubescaler as it is without Agones, or any pod-counting node scaler): an idle
/// Ready GameServer is a server pod, so its node never empties and the pool keeps a node per
/// idle Ready server. The baseline of the compaction comparison.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_pods_mode_each_idle_ready_game_server_keeps_its_node() {
    let test = "e2e_agones::pods_mode_baseline";
    let settings = [("EMPTY_NODE_EXPIRATION_SEC", EXPIRATION.to_string())];
    let Some(w) = watch_idle_fleet(test, "agpods", &settings).await else {
        return;
    };
    assert_eq!(w.nodes_at_end, 3, "an idle Ready server's node was deleted");
    assert_eq!(w.compacted, 0);
}

/// Agones mode with compaction off (`agones-compaction-per-minute: 0`): Ready servers count
/// toward the buffer and surplus nodes are cordoned, but only their servers' own end would
/// empty them, so the pool keeps them too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_compaction_idle_ready_game_servers_keep_their_cordoned_nodes() {
    let test = "e2e_agones::no_compaction_baseline";
    let Some(w) = watch_idle_fleet(test, "agnocompact", &agones_settings("0")).await else {
        return;
    };
    assert_eq!(w.nodes_at_end, 3, "a node with a Ready server was deleted");
    assert_eq!(w.compacted, 0);
}

/// Agones' allocation ignores cordons: a Ready GameServer on a node kubescaler cordoned as
/// surplus can become a live match. That node is never deleted while the match runs, however
/// long past its expiration, and goes once the match ends.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_holding_one_allocated_game_server_is_never_deleted_whatever_its_age() {
    let test = "e2e_agones::allocated_keeps_node";
    let Some(client) = agones_client(test).await else {
        return;
    };
    let pool = Pool::new(client.clone(), "agkeep", FOUR_CPU, Duration::ZERO);
    pool.cloud.start_with(2).await;
    let fleet = fleet_of(&client, &pool);
    // Compaction off, so the Ready server stays on the cordoned node until it is allocated.
    let config = pool.config(&as_pairs(&agones_settings("0")));
    pool.run(fleet.run(async {
        fleet.set_replicas(2);
        ready_one_per_node(&fleet, 2).await;
        let _kubescaler = pool.start_loop(&config);
        let cordoned = cordoned_by_kubescaler(&pool).await;
        let [node] = &cordoned[..] else {
            panic!("one of two nodes is surplus, not {cordoned:?}");
        };
        let servers = fleet.game_servers().await;
        let gs = servers
            .iter()
            .find(|g| g.node.as_ref() == Some(node) && g.state == GameServerState::Ready)
            .unwrap_or_else(|| panic!("no Ready GameServer on {node}: {servers:?}"));
        let version = gs.resource_version.clone().unwrap_or_default();
        let allocated = fleet.allocate_named(&gs.name, &version).await;
        assert!(
            matches!(&allocated, NamedAllocation::Allocated(a) if &a.node == node),
            "{allocated:?}"
        );
        let since = Instant::now();

        // Four expirations and more passes: the node stays, cordoned.
        let hold = Duration::from_secs(4 * EXPIRATION.parse::<u64>().unwrap_or(3));
        let passes_before = pool.cloud.passes();
        while since.elapsed() < hold {
            assert!(
                pool.node_exists(node).await,
                "{node} deleted under a live match"
            );
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        assert!(
            pool.cloud.passes() >= passes_before + 3,
            "kubescaler made no passes"
        );
        assert!(!pool.cloud.delete_requests().contains(node));
        assert!(pool.node_exists(node).await);
        assert_eq!(fleet.count(GameServerState::Allocated).await, 1);

        // The match ends: its replacement lands on the schedulable node, and the empty node
        // goes.
        let ended = Timestamp::now();
        assert!(fleet.end_match(&gs.name).await);
        let deleted = eventually("the node to go once its match ended", WAIT, || async {
            pool.cloud.deleted_at(node)
        })
        .await;
        assert!(
            deleted >= ended,
            "{node} deleted at {deleted}, match ended at {ended}"
        );
        fleet.wait_state(GameServerState::Ready, 2).await;
        assert_nothing_lost(&pool, &fleet);
    }))
    .await;
}

/// kubescaler's view of the cluster, with an Agones allocation of each GameServer landing
/// between kubescaler's read of it and its compaction DELETE (`armed` times): the worst moment.
struct AllocateBeforeDelete {
    cluster: Arc<KubeCluster>,
    fleet: Arc<AgonesStandIn>,
    armed: AtomicUsize,
    /// Each raced GameServer: the allocation's outcome and the delete's.
    raced: Mutex<Vec<(String, NamedAllocation, GameServerDelete)>>,
    /// Whether a compaction DELETE ran without a race (after the armed ones).
    unraced: AtomicBool,
}

#[async_trait]
impl Kubernetes for AllocateBeforeDelete {
    async fn snapshot(&self) -> Result<ClusterSnapshot, KubeError> {
        self.cluster.snapshot().await
    }
    async fn mark(&self, node: &str, op: MarkOp) -> Result<MarkOutcome, KubeError> {
        self.cluster.mark(node, op).await
    }
    async fn live_node(&self, node: &str) -> Result<Option<NodeState>, KubeError> {
        self.cluster.live_node(node).await
    }
    async fn live_server_pods(&self, node: &str) -> Result<Vec<String>, KubeError> {
        self.cluster.live_server_pods(node).await
    }
    async fn live_node_game_servers(&self, node: &str) -> Result<LiveNodeServers, KubeError> {
        self.cluster.live_node_game_servers(node).await
    }
    async fn delete_game_server(
        &self,
        game_server: &GameServerInfo,
    ) -> Result<GameServerDelete, KubeError> {
        let take = self
            .armed
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok();
        if !take {
            self.unraced.store(true, Ordering::SeqCst);
            return self.cluster.delete_game_server(game_server).await;
        }
        let name = game_server
            .key
            .rsplit('/')
            .next()
            .unwrap_or(&game_server.key)
            .to_string();
        let version = game_server.resource_version.clone().unwrap_or_default();
        let allocation = self.fleet.allocate_named(&name, &version).await;
        let deleted = self.cluster.delete_game_server(game_server).await?;
        self.raced
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push((name, allocation, deleted));
        Ok(deleted)
    }
    fn changes(&self) -> broadcast::Receiver<ChangeEvent> {
        self.cluster.changes()
    }
    async fn publish_event(&self, event: &ActionEvent) -> Result<(), KubeError> {
        self.cluster.publish_event(event).await
    }
    fn synced(&self) -> bool {
        self.cluster.synced()
    }
}

/// An allocation that lands after kubescaler read a Ready GameServer and before its
/// compaction DELETE wins: the DELETE's resourceVersion precondition makes the API server
/// refuse it (409), the match runs on, and its node stays until the match ends.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_allocation_racing_compaction_wins_and_its_node_is_kept() {
    let test = "e2e_agones::allocation_races_compaction";
    let Some(client) = agones_client(test).await else {
        return;
    };
    let pool = Pool::new(client.clone(), "agrace2", FOUR_CPU, Duration::ZERO);
    pool.cloud.start_with(2).await;
    let fleet = fleet_of(&client, &pool);
    let config = pool.config(&as_pairs(&agones_settings("600")));
    let view = Arc::new(Mutex::new(None::<Arc<AllocateBeforeDelete>>));
    pool.run(fleet.run(async {
        fleet.set_replicas(2);
        ready_one_per_node(&fleet, 2).await;
        let _kubescaler = pool.start_loop_with(&config, |cluster| {
            let racing = Arc::new(AllocateBeforeDelete {
                cluster,
                fleet: Arc::clone(&fleet),
                armed: AtomicUsize::new(1),
                raced: Mutex::default(),
                unraced: AtomicBool::new(false),
            });
            *view.lock().unwrap_or_else(PoisonError::into_inner) = Some(Arc::clone(&racing));
            racing
        });
        let racing = view
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
            .unwrap_or_else(|| panic!("the loop did not build its view"));
        let raced = eventually("kubescaler to compact a Ready GameServer", WAIT, || async {
            let raced = racing.raced.lock().unwrap_or_else(PoisonError::into_inner);
            (!raced.is_empty()).then(|| raced.clone())
        })
        .await;
        let [(name, allocation, deleted)] = &raced[..] else {
            panic!("{raced:?}");
        };
        assert_eq!(
            *deleted,
            GameServerDelete::Conflict,
            "the DELETE won over {allocation:?}"
        );
        let NamedAllocation::Allocated(a) = allocation else {
            panic!("the allocation of {name} lost: {allocation:?}");
        };
        let node = a.node.clone();

        // The match runs on its cordoned node for several expirations; the node stays.
        let since = Instant::now();
        while since.elapsed() < Duration::from_secs(10) {
            assert!(
                pool.node_exists(&node).await,
                "{node} deleted under a live match"
            );
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        let servers = fleet.game_servers().await;
        assert!(
            servers
                .iter()
                .any(|g| &g.name == name && g.state == GameServerState::Allocated),
            "{servers:?}"
        );
        assert!(
            !racing.unraced.load(Ordering::SeqCst),
            "an Allocated server compacted"
        );

        // The match ends: the node empties and goes.
        assert!(fleet.end_match(name).await);
        eventually("the node to go once its match ended", WAIT, || async {
            pool.cloud.deleted_at(&node)
        })
        .await;
        assert_nothing_lost(&pool, &fleet);
    }))
    .await;
}

/// `KubeCluster` on the real API server: the live read of a node's GameServers and their pods
/// (the last check before a deletion) finds them by `status.nodeName` in any namespace, and a
/// compaction DELETE goes only at the version read: 409 on a stale one, 404 once gone.
#[tokio::test]
async fn game_servers_are_read_live_per_node_and_deleted_only_at_the_version_read() {
    let test = "e2e_agones::kube_cluster_game_servers";
    let Some(client) = agones_client(test).await else {
        return;
    };
    let id = cluster::cloud::unique_id("aglive");
    let node = format!("{id}-node");
    let api: Api<DynamicObject> =
        Api::namespaced_with(client.clone(), NAMESPACE, &game_server_resource());
    let pods: Api<Pod> = Api::namespaced(client.clone(), NAMESPACE);
    let mut written = Vec::new();
    for (i, (state, on)) in [("Ready", &node), ("Allocated", &node), ("Ready", &id)]
        .into_iter()
        .enumerate()
    {
        let name = format!("{id}-{i}");
        let object: DynamicObject = serde_json::from_value(json!({
            "apiVersion": "agones.dev/v1",
            "kind": "GameServer",
            "metadata": {"name": name},
            "spec": {"template": {"spec": {"containers": [{"name": "game", "image": "registry.invalid/game:1"}]}}},
        }))
        .unwrap_or_else(|e| panic!("object: {e}"));
        api.create(&PostParams::default(), &object)
            .await
            .unwrap_or_else(|e| panic!("create GameServer {name}: {e}"));
        let status = json!({"status": {"state": state, "nodeName": on}});
        let gs = api
            .patch(&name, &PatchParams::default(), &Patch::Merge(&status))
            .await
            .unwrap_or_else(|e| panic!("status of {name}: {e}"));
        let pod: Pod = serde_json::from_value(json!({
            "metadata": {"name": name, "labels": {ROLE_LABEL: ROLE_GAMESERVER, GAMESERVER_LABEL: name}},
            "spec": {"nodeName": on, "containers": [{"name": "game", "image": "registry.invalid/game:1"}]},
        }))
        .unwrap_or_else(|e| panic!("pod: {e}"));
        pods.create(&PostParams::default(), &pod)
            .await
            .unwrap_or_else(|e| panic!("create pod {name}: {e}"));
        written.push(gs);
    }
    let cluster = KubeCluster::start(
        client.clone(),
        &format!("kubescaler-e2e/pool={id}"),
        (SERVER_LABEL.to_string(), id.clone()),
    )
    .with_agones(false);

    let live = cluster
        .live_node_game_servers(&node)
        .await
        .unwrap_or_else(|e| panic!("live read: {e}"));
    let mut names: Vec<&str> = live.game_servers.iter().map(|g| g.key.as_str()).collect();
    names.sort_unstable();
    let mine = [format!("{NAMESPACE}/{id}-0"), format!("{NAMESPACE}/{id}-1")];
    assert_eq!(names, mine.iter().map(String::as_str).collect::<Vec<_>>());
    let mut pod_names: Vec<&str> = live.pods.iter().map(|p| p.key.as_str()).collect();
    pod_names.sort_unstable();
    assert_eq!(pod_names, names, "the GameServer pods on the node");
    // Both keep the node: the Allocated one runs a match, the Ready one can get one at any
    // moment (allocation ignores cordons).
    assert_eq!(live.blockers().len(), 2, "{live:?}");

    // A Ready GameServer read, then changed (an allocation would be such an update).
    let ready = game_server_info(&written[0]).unwrap_or_else(|| panic!("{:?}", written[0]));
    let bump = json!({"metadata": {"labels": {"touched": "yes"}}});
    let current = api
        .patch(
            &format!("{id}-0"),
            &PatchParams::default(),
            &Patch::Merge(&bump),
        )
        .await
        .unwrap_or_else(|e| panic!("update: {e}"));
    assert_eq!(
        cluster.delete_game_server(&ready).await.ok(),
        Some(GameServerDelete::Conflict),
        "a DELETE at a stale version must be refused"
    );
    assert!(api
        .get_opt(&format!("{id}-0"))
        .await
        .ok()
        .flatten()
        .is_some());
    let current = game_server_info(&current).unwrap_or_else(|| panic!("{current:?}"));
    assert_eq!(
        cluster.delete_game_server(&current).await.ok(),
        Some(GameServerDelete::Deleted)
    );
    assert_eq!(
        cluster.delete_game_server(&current).await.ok(),
        Some(GameServerDelete::Gone)
    );

    for i in 0..3 {
        let name = format!("{id}-{i}");
        let _ = api.delete(&name, &Default::default()).await;
        let _ = pods.delete(&name, &Default::default()).await;
    }
}
