//! kubescaler's real scale loop (`Scaler::run` on a `KubeCluster`) against the local control
//! plane (`hack/controlplane.sh start`), with an in-test cloud ([`TestCloud`]) whose nodes are
//! Node objects and whose pods are placed by the real kube-scheduler.
//!
//! Gated by `tests/cluster` (`KUBESCALER_E2E_KUBECONFIG`; required in CI). Each test runs in
//! its own pool (node selector and server label unique to it), so the tests of this binary run
//! in parallel on one API server. Nodes have 4 CPUs and a server requests 1: four slots a node.
//! Every test checks that no node was deleted with a game server on it.

use std::time::Duration;

use jiff::{SignedDuration, Timestamp};

mod cluster;
use cluster::client_or_skip;
use cluster::cloud::{
    eventually, has_kubescaler_mark, is_unschedulable, Op, Placement, Pool, FOUR_CPU, WAIT,
};

/// From `grow_to` to a Ready node (registered NotReady halfway).
const BOOT: Duration = Duration::from_secs(2);

/// Waits until every server pod of `pool` (`expected` of them) is bound to a node of the pool;
/// returns pod name → node.
async fn all_bound(pool: &Pool, expected: usize) -> Vec<(String, String)> {
    let what = format!("the scheduler to bind all {expected} server pods");
    eventually(&what, WAIT, || async {
        let placement = pool.placement().await;
        if placement.len() != expected {
            return None;
        }
        placement
            .into_iter()
            .map(|(pod, node)| node.map(|n| (pod, n)))
            .collect::<Option<Vec<_>>>()
    })
    .await
}

/// Asserts every pod in `placement` is on a node of the pool.
async fn assert_on_pool_nodes(pool: &Pool, placement: &[(String, String)]) {
    let nodes = pool.nodes().await;
    for (pod, node) in placement {
        assert!(
            nodes.contains_key(node),
            "pod {pod} is on {node}, not a node of the pool {:?}",
            nodes.keys().collect::<Vec<_>>()
        );
    }
}

/// Waits until the pool has `n` Ready nodes.
async fn ready_nodes(pool: &Pool, n: usize) {
    eventually(&format!("{n} Ready nodes in the pool"), WAIT, || async {
        let nodes = pool.nodes().await;
        let ready = nodes
            .values()
            .filter(|n| cluster::cloud::is_ready(n))
            .count();
        (nodes.len() == n && ready == n).then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_pods_beyond_the_buffer_grow_the_pool_and_the_scheduler_places_them() {
    let Some(client) = client_or_skip("server_pods_beyond_the_buffer_grow_the_pool").await else {
        return;
    };
    let pool = Pool::new(client, "grow", FOUR_CPU, BOOT);
    pool.run(async {
        pool.cloud.start_with(1).await;
        let config = pool.config(&[("BUFFER_SLOT_SIZE", "2")]);
        let _kubescaler = pool.start_loop(&config);

        // One node: 4 free slots cover the buffer of 2; nothing to do.
        pool.wait_passes(2).await;
        assert_eq!(pool.cloud.target(), 1, "{}", pool.dump().await);

        // 9 servers + a buffer of 2 need 11 slots: 3 nodes.
        pool.create_servers(9, Placement::Scheduler).await;
        let placement = all_bound(&pool, 9).await;
        assert_on_pool_nodes(&pool, &placement).await;
        ready_nodes(&pool, 3).await;
        eventually("free slots >= the buffer of 2", WAIT, || async {
            (pool.free_slots().await >= 2).then_some(())
        })
        .await;

        // Settled: neither more growth nor a scale-down.
        pool.wait_passes(3).await;
        assert_eq!(pool.cloud.target(), 3, "{}", pool.dump().await);
        assert_eq!(pool.cloud.max_target(), 3, "grew past the need");
        assert!(pool.cloud.delete_requests().is_empty());
        assert!(pool.observer.ever_cordoned().is_empty());
        pool.assert_no_lost_servers();
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pending_server_pods_count_as_demand() {
    let Some(client) = client_or_skip("pending_server_pods_count_as_demand").await else {
        return;
    };
    let pool = Pool::new(client, "pending", FOUR_CPU, BOOT);
    pool.run(async {
        let nodes = pool.cloud.start_with(1).await;
        pool.create_servers(4, Placement::On(&nodes[0])).await;
        // A buffer of 0: only the pending servers can ask for more nodes.
        let config = pool.config(&[("BUFFER_SLOT_SIZE", "0")]);
        let _kubescaler = pool.start_loop(&config);
        pool.wait_passes(2).await;
        assert_eq!(pool.cloud.target(), 1, "a full node and a buffer of 0");

        // 6 servers that fit nowhere: exactly 2 more nodes.
        pool.create_servers(6, Placement::Scheduler).await;
        let placement = all_bound(&pool, 10).await;
        assert_on_pool_nodes(&pool, &placement).await;
        ready_nodes(&pool, 3).await;
        pool.wait_passes(3).await;
        assert_eq!(pool.cloud.target(), 3, "{}", pool.dump().await);
        assert_eq!(pool.cloud.max_target(), 3, "grew past the need");
        assert!(pool.cloud.delete_requests().is_empty());
        pool.assert_no_lost_servers();
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scales_up_from_an_empty_pool_with_the_node_template() {
    let Some(client) = client_or_skip("scales_up_from_an_empty_pool").await else {
        return;
    };
    let pool = Pool::new(client, "empty", FOUR_CPU, BOOT);
    pool.run(async {
        // No node at all; 5 servers wait.
        pool.create_servers(5, Placement::Scheduler).await;
        let config = pool.config(&[
            ("MINIMUM_NODE_POOL_SIZE", "0"),
            ("BUFFER_SLOT_SIZE", "2"),
            // A bare integer from the environment is millicores.
            ("NODE_TEMPLATE_CPU", "4000m"),
            ("NODE_TEMPLATE_MEMORY", FOUR_CPU.memory),
            ("NODE_TEMPLATE_PODS", FOUR_CPU.pods),
        ]);
        let _kubescaler = pool.start_loop(&config);

        // 5 servers + a buffer of 2 = 7 slots: 2 template-sized nodes, ordered at once.
        let placement = all_bound(&pool, 5).await;
        assert_on_pool_nodes(&pool, &placement).await;
        ready_nodes(&pool, 2).await;
        pool.wait_passes(3).await;
        let growth: Vec<Op> = pool
            .cloud
            .calls()
            .into_iter()
            .map(|c| c.op)
            .filter(Op::is_mutation)
            .collect();
        assert_eq!(growth, vec![Op::GrowTo(2)], "{}", pool.dump().await);
        assert_eq!(pool.cloud.target(), 2);
        assert!(pool.free_slots().await >= 2);
        pool.assert_no_lost_servers();
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn load_drop_cordons_fewest_servers_first_and_deletes_only_expired_empty_nodes() {
    let Some(client) = client_or_skip("load_drop_cordons_fewest_servers_first").await else {
        return;
    };
    let pool = Pool::new(client, "drop", FOUR_CPU, BOOT);
    pool.run(async {
        let expiration = 5;
        let n = pool.cloud.start_with(4).await;
        let (n0, n1, n2, n3) = (&n[0], &n[1], &n[2], &n[3]);
        // 14 servers on 16 slots: exactly the buffer of 2 free.
        let on0 = pool.create_servers(4, Placement::On(n0)).await;
        let on1 = pool.create_servers(3, Placement::On(n1)).await;
        let on2 = pool.create_servers(3, Placement::On(n2)).await;
        let on3 = pool.create_servers(4, Placement::On(n3)).await;
        let config = pool.config(&[
            ("BUFFER_SLOT_SIZE", "2"),
            ("EMPTY_NODE_EXPIRATION_SEC", &expiration.to_string()),
        ]);
        let _kubescaler = pool.start_loop(&config);
        pool.wait_passes(2).await;
        assert!(
            pool.observer.ever_cordoned().is_empty(),
            "{}",
            pool.dump().await
        );

        // The load drops to n0: 2, n1: 0, n2: 1, n3: 3 (10 free slots, 8 over the buffer).
        // In this order every intermediate state either has no surplus node or picks n1 then
        // n2, so the outcome does not depend on when the passes run. n2 (1 server) must be
        // chosen over n0 (2 servers), which sorts first by name.
        for pod in on1
            .iter()
            .chain(&on2[..2])
            .chain(&on0[..2])
            .chain(&on3[..1])
        {
            pool.end_server(pod).await;
        }
        let t1 = pool.wait_cordoned_by_kubescaler(n1, WAIT).await;
        let t2 = pool.wait_cordoned_by_kubescaler(n2, WAIT).await;

        // n1 is empty: deleted, but not before its mark plus the expiration.
        eventually("the empty cordoned node n1 to be deleted", WAIT, || async {
            pool.cloud.deleted_at(n1)
        })
        .await;
        let deleted = pool.cloud.deleted_at(n1).unwrap_or_default();
        assert!(
            deleted >= t1 + SignedDuration::from_secs(expiration),
            "n1 deleted at {deleted}, cordoned at {t1}, expiration {expiration}s"
        );
        eventually("n1 gone from the API", WAIT, || async {
            (!pool.node_exists(n1).await).then_some(())
        })
        .await;

        // n2 still runs a server: it stays cordoned, well past its expiration.
        let past = t2 + SignedDuration::from_secs(expiration + 3);
        while Timestamp::now() < past {
            assert!(pool.node_exists(n2).await, "n2 deleted with a server on it");
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        pool.wait_passes(2).await;
        let nodes = pool.nodes().await;
        let node2 = nodes.get(n2.as_str());
        assert!(node2.is_some_and(is_unschedulable), "{}", pool.dump().await);
        assert!(!pool.cloud.delete_requests().contains(n2));

        // Its last server ends: now it goes.
        let ended = Timestamp::now();
        pool.end_server(&on2[2]).await;
        let deleted = eventually("n2 to be deleted once empty", WAIT, || async {
            pool.cloud.deleted_at(n2)
        })
        .await;
        assert!(
            deleted >= ended,
            "n2 deleted at {deleted} before its server ended at {ended}"
        );

        // The busier nodes were never cordoned, nothing was uncordoned, and the pool kept
        // the rest: n0 (2 servers) and n3 (3 servers), 3 free slots.
        pool.wait_passes(2).await;
        let cordoned = pool.observer.ever_cordoned();
        assert_eq!(
            cordoned,
            [n1.clone(), n2.clone()].into_iter().collect(),
            "{}",
            pool.dump().await
        );
        for node in [n0, n1, n2, n3] {
            assert_eq!(pool.observer.history(node).uncordoned_at, None, "{node}");
        }
        let mut deleted = pool.cloud.delete_requests();
        deleted.sort();
        assert_eq!(deleted, vec![n1.clone(), n2.clone()]);
        assert_eq!(pool.cloud.target(), 2);
        let nodes = pool.nodes().await;
        assert_eq!(
            nodes.keys().collect::<Vec<_>>(),
            vec![n0, n3],
            "{}",
            pool.dump().await
        );
        assert!(nodes
            .values()
            .all(|n| !is_unschedulable(n) && !has_kubescaler_mark(n)));
        pool.assert_no_lost_servers();
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_cordoned_by_an_admin_is_never_uncordoned_or_deleted() {
    let Some(client) = client_or_skip("node_cordoned_by_an_admin").await else {
        return;
    };
    let pool = Pool::new(client, "admin", FOUR_CPU, BOOT);
    pool.run(async {
        let n = pool.cloud.start_with(2).await;
        let admin = &n[0];
        pool.admin_cordon(admin).await;
        let config = pool.config(&[
            ("BUFFER_SLOT_SIZE", "2"),
            ("EMPTY_NODE_EXPIRATION_SEC", "3"),
        ]);
        let _kubescaler = pool.start_loop(&config);
        pool.wait_passes(2).await;
        assert_eq!(pool.cloud.target(), 2);

        // Pressure: 5 servers, 4 slots on the one schedulable node. The admin's empty node
        // is not reused: the pool grows instead.
        let servers = pool.create_servers(5, Placement::Scheduler).await;
        let placement = all_bound(&pool, 5).await;
        assert!(
            placement.iter().all(|(_, node)| node != admin),
            "a server landed on the admin's cordoned node: {placement:?}"
        );
        assert_eq!(pool.cloud.target(), 3, "{}", pool.dump().await);

        // Surplus: every server ends. kubescaler cordons and deletes one of its own nodes,
        // never the admin's.
        for pod in &servers {
            pool.end_server(pod).await;
        }
        let deleted = eventually("a surplus node to be deleted", WAIT, || async {
            let d = pool.cloud.deleted_nodes();
            (!d.is_empty()).then_some(d)
        })
        .await;
        pool.wait_passes(3).await;

        assert!(
            !deleted.contains(admin),
            "deleted the admin's node: {deleted:?}"
        );
        assert!(!pool.cloud.delete_requests().contains(admin));
        let history = pool.observer.history(admin);
        assert_eq!(
            history.uncordoned_at, None,
            "the admin's node was uncordoned"
        );
        let nodes = pool.nodes().await;
        let node = nodes
            .get(admin.as_str())
            .unwrap_or_else(|| panic!("the admin's node {admin} is gone"));
        assert!(
            is_unschedulable(node),
            "the admin's node is schedulable again"
        );
        assert!(
            !has_kubescaler_mark(node),
            "kubescaler marked the admin's node"
        );
        assert_eq!(pool.cloud.target(), 2, "{}", pool.dump().await);
        pool.assert_no_lost_servers();
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_mid_expiration_continues_from_the_annotation() {
    let Some(client) = client_or_skip("restart_mid_expiration").await else {
        return;
    };
    let pool = Pool::new(client, "restart", FOUR_CPU, BOOT);
    pool.run(async {
        let expiration: i64 = 12;
        let nodes = pool.cloud.start_with(2).await;
        let config = pool.config(&[
            ("BUFFER_SLOT_SIZE", "2"),
            ("EMPTY_NODE_EXPIRATION_SEC", &expiration.to_string()),
        ]);
        // Two empty nodes, a buffer of 2: one node is surplus and gets cordoned (by name, as
        // both are empty).
        let first = pool.start_loop(&config);
        let cordoned_at = pool.wait_cordoned_by_kubescaler(&nodes[0], WAIT).await;
        let due = cordoned_at + SignedDuration::from_secs(expiration);

        // kubescaler stops a third of the way into the expiration and a new one (fresh
        // process state: new Scaler, new KubeCluster) starts halfway.
        sleep_until(cordoned_at + SignedDuration::from_secs(expiration / 3)).await;
        first.stop().await;
        assert!(
            pool.cloud.delete_requests().is_empty(),
            "deleted before the expiration"
        );
        sleep_until(cordoned_at + SignedDuration::from_secs(expiration / 2)).await;
        let restarted = Timestamp::now();
        assert!(
            restarted >= cordoned_at + SignedDuration::from_secs(5),
            "the restart must come well after the cordon"
        );
        let _second = pool.start_loop(&config);

        // The node goes when the mark says, not a full expiration after the restart.
        let deleted = eventually("the cordoned node to be deleted", WAIT, || async {
            pool.cloud.deleted_at(&nodes[0])
        })
        .await;
        assert!(
            deleted >= due,
            "deleted at {deleted}, before the mark {cordoned_at} + {expiration}s"
        );
        assert!(
            deleted < restarted + SignedDuration::from_secs(expiration),
            "deleted at {deleted}: the expiration restarted at {restarted} instead of \
             continuing from the mark {cordoned_at}"
        );
        pool.wait_passes(2).await;
        assert_eq!(pool.cloud.delete_requests(), vec![nodes[0].clone()]);
        assert!(pool.node_exists(&nodes[1]).await);
        assert_eq!(pool.cloud.target(), 1);
        pool.assert_no_lost_servers();
    })
    .await;
}

/// Sleeps until the wall clock reaches `at` (the scenario's timeline, not a wait for an
/// outcome).
async fn sleep_until(at: Timestamp) {
    let left = at.duration_since(Timestamp::now());
    if left.is_positive() {
        tokio::time::sleep(left.unsigned_abs()).await;
    }
}
