//! Scale-down you can trust, end to end: the `kubescaler` binary, its DigitalOcean driver, the
//! DOKS fake and the real control plane (harness in `tests/fullstack`), with the test acting as
//! a person (`kubectl cordon`/`uncordon` under kubectl's field manager) and as a faulty cloud.
//! Each test is named for the safety rule it protects; each ends with no server lost.
//!
//! Gated by `tests/cluster` (`KUBESCALER_E2E_KUBECONFIG`; required in CI).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use doks_fake::{Fault, Operation};
use k8s_openapi::api::core::v1::Node;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};

mod cluster;
mod fullstack;
use cluster::client_or_skip;
use fullstack::{run, World, WorldOptions, POOL_KEY};

/// Starts a world for `test` with these config settings, or `None` (skipped) off CI.
async fn world(test: &str, options: WorldOptions) -> Option<World> {
    let client = client_or_skip(test).await?;
    let kubeconfig = cluster::kubeconfig_or_skip(test)?;
    let spec_path = fullstack::spec_or_skip(test)?;
    // Object names allow no underscores.
    let tag = test.replace('_', "-");
    Some(World::start_with(spec_path, client, &kubeconfig, &tag, options).await)
}

fn settings(pairs: &[(&'static str, &str)]) -> Vec<(&'static str, String)> {
    pairs.iter().map(|(k, v)| (*k, (*v).to_string())).collect()
}

/// Whether the live node is cordoned (`spec.unschedulable`).
fn unschedulable(node: &Node) -> bool {
    node.spec.as_ref().and_then(|s| s.unschedulable) == Some(true)
}

/// The pool's nodes kubescaler has cordoned, now.
async fn cordoned_now(w: &World) -> Vec<String> {
    w.nodes()
        .await
        .into_iter()
        .filter(|(_, ours)| *ours)
        .map(|(name, _)| name)
        .collect()
}

/// The nodes kubescaler cordoned, once there are `n` of them.
async fn cordoned_by_kubescaler(w: &World, n: usize, limit: Duration) -> Vec<String> {
    w.eventually(
        &format!("kubescaler to cordon {n} nodes"),
        limit,
        || async {
            let ours = cordoned_now(w).await;
            (ours.len() >= n).then_some(ours)
        },
    )
    .await
}

/// Waits until kubescaler has planned a few passes.
async fn planning(w: &World) {
    w.eventually("kubescaler to plan", Duration::from_secs(60), || async {
        (w.daemons()[0].log_count("planned") >= 3).then_some(())
    })
    .await;
}

/// Whether kubescaler's log shows it starting the deletion of `node`.
fn deletion_started(w: &World, node: &str) -> bool {
    let daemons = w.daemons();
    daemons[0].log_tail(400).lines().any(|l| {
        l.contains(node) && (l.contains("action=\"delete\"") || l.contains("action=delete"))
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_a_person_cordons_after_an_uncordon_is_never_uncordoned_or_deleted() {
    // Item 1. Two empty nodes, buffer 0: kubescaler cordons one. A person uncordons it, then
    // cordons it again for maintenance: kubescaler's annotations are still there, but the
    // cordon is the person's.
    let test = "e2e_safety_person_cordon";
    let options = WorldOptions {
        initial_nodes: 2,
        settings: settings(&[("buffer-slot-size", "0")]),
        ..WorldOptions::default()
    };
    let Some(world) = world(test, options).await else {
        return;
    };
    run(world, |w| async move {
        let node = cordoned_by_kubescaler(&w, 1, Duration::from_secs(60)).await[0].clone();
        assert!(w.person_sets_unschedulable(&node, false).await);
        assert!(w.person_sets_unschedulable(&node, true).await);
        let id = w.pool_node(&node).map(|n| n.id).unwrap_or_default();

        // Well past empty-node-expiration-sec: the person's node is neither deleted nor
        // uncordoned.
        let until = Instant::now() + Duration::from_secs(fullstack::EXPIRATION_SECS + 10);
        while Instant::now() < until {
            let live = w.node(&node).await;
            assert!(
                live.is_some(),
                "kubescaler deleted node {node}, which a person cordoned"
            );
            assert!(
                live.as_ref().is_some_and(unschedulable),
                "kubescaler uncordoned {node}"
            );
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        assert_eq!(w.deletes_of(&id), 0, "a DELETE was sent for {node}");

        // Demand comes back: kubescaler grows the pool rather than take the person's node.
        w.create_servers(4).await;
        w.eventually("all 4 servers bound", Duration::from_secs(60), || async {
            let placement = w.placement().await;
            (placement.len() == 4 && placement.values().all(Option::is_some)).then_some(())
        })
        .await;
        let placement = w.placement().await;
        assert!(
            placement.values().flatten().all(|n| *n != node),
            "a server landed on the person's node: {placement:?}"
        );
        assert!(w.node(&node).await.as_ref().is_some_and(unschedulable));
        assert_eq!(w.fake.lost_servers(), 0, "{:?}", w.fake.lost_server_pods());
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_uncordoned_while_its_deletion_waits_on_the_cloud_loses_no_server() {
    // Item 2. Node B is kubescaler's, empty and expired; every pool read takes 4 s. The moment
    // kubescaler starts deleting B, a person uncordons it and a server arrives that fits only
    // there (A is full). Whatever the interleaving, no server may be on B when it goes.
    let test = "e2e_safety_window";
    let options = WorldOptions {
        settings: settings(&[("buffer-slot-size", "0")]),
        ..WorldOptions::default()
    };
    let Some(world) = world(test, options).await else {
        return;
    };
    run(world, |w| async move {
        // A full (3 servers), a fourth brings B.
        w.create_servers(4).await;
        let placement = w
            .eventually("4 servers bound", Duration::from_secs(60), || async {
                let placement = w.placement().await;
                (placement.len() == 4 && placement.values().all(Option::is_some))
                    .then_some(placement)
            })
            .await;
        let mut by_node: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for (pod, node) in &placement {
            if let Some(node) = node {
                by_node.entry(node.clone()).or_default().push(pod.clone());
            }
        }
        let (b, lone) = by_node
            .iter()
            .find(|(_, pods)| pods.len() == 1)
            .map(|(n, pods)| (n.clone(), pods[0].clone()))
            .unwrap_or_else(|| panic!("one node with one server: {by_node:?}"));
        w.fake.inject_fault(
            Operation::GetNodePool,
            Fault::Delay(Duration::from_secs(4)),
            40,
        );
        w.delete_server(&lone).await;
        w.eventually(
            "kubescaler to start deleting B",
            Duration::from_secs(60),
            || async { deletion_started(&w, &b).then_some(()) },
        )
        .await;
        // The person and the new match, inside the window.
        // (B may be gone already: then there was no window to act in.)
        let acted = w.person_sets_unschedulable(&b, false).await;
        w.create_servers(1).await;
        w.eventually("the new server bound", Duration::from_secs(60), || async {
            let placement = w.placement().await;
            (placement.len() == 4 && placement.values().all(Option::is_some)).then_some(())
        })
        .await;
        // Let any deletion in flight finish.
        tokio::time::sleep(Duration::from_secs(6)).await;
        eprintln!(
            "window test: the person's uncordon {} node {b}",
            if acted {
                "reached"
            } else {
                "came after the deletion of"
            }
        );
        assert_eq!(
            w.fake.lost_servers(),
            0,
            "a server was on node {b} when it was deleted: {:?}",
            w.fake.lost_server_pods()
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_node_the_cloud_cannot_delete_does_not_stall_the_others() {
    // Item 3. Three empty nodes, buffer 0, minimum 1: two are cordoned and expire together. The
    // first in deletion order cannot be deleted (every DELETE of it is a 500).
    let test = "e2e_safety_stuck_delete";
    let options = WorldOptions {
        initial_nodes: 3,
        settings: settings(&[
            ("buffer-slot-size", "0"),
            ("empty-node-expiration-sec", "8"),
        ]),
        ..WorldOptions::default()
    };
    let Some(world) = world(test, options).await else {
        return;
    };
    run(world, |w| async move {
        let mut cordoned = cordoned_by_kubescaler(&w, 2, Duration::from_secs(60)).await;
        // Deletion order: oldest cordon first, then by name; cordoned in one pass, so by name.
        cordoned.sort();
        let (stuck, other) = (cordoned[0].clone(), cordoned[1].clone());
        let stuck_id = w.pool_node(&stuck).map(|n| n.id).unwrap_or_default();
        w.fake.make_undeletable(&stuck_id);

        w.eventually(
            "the other expired node to be deleted",
            Duration::from_secs(90),
            || async { w.node(&other).await.is_none().then_some(()) },
        )
        .await;
        assert!(w.node(&stuck).await.is_some());
        // Held back, not retried first on every pass: no new attempt for a while.
        let attempts = |w: &World| {
            fullstack::of(&w.fake, Operation::DeleteNode)
                .iter()
                .filter(|r| r.path.ends_with(&stuck_id))
                .count()
        };
        let before = attempts(&w);
        tokio::time::sleep(Duration::from_secs(10)).await;
        assert!(
            attempts(&w) <= before + 5,
            "the undeletable node was retried every pass: {} -> {} DELETEs in 10 s",
            before,
            attempts(&w)
        );
        assert!(
            w.daemons()[0].log_count("holding the node back") >= 1,
            "the failure was not reported"
        );
        assert_eq!(w.fake.lost_servers(), 0);
    })
    .await;
}

/// A Ready Node with the pool's label that is no node of the cloud pool (another pool's node
/// the selector also matches).
async fn create_foreign_node(w: &World, name: &str) {
    let api: Api<Node> = Api::all(w.client.clone());
    let node: Node = serde_json::from_value(serde_json::json!({
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {"name": name, "labels": {POOL_KEY: w.id}},
        "spec": {"providerID": format!("digitalocean://99{}", std::process::id())},
    }))
    .unwrap_or_else(|e| panic!("node: {e}"));
    api.create(&PostParams::default(), &node)
        .await
        .unwrap_or_else(|e| panic!("create node {name}: {e}"));
    let now = jiff::Timestamp::now()
        .strftime("%Y-%m-%dT%H:%M:%SZ")
        .to_string();
    let resources = serde_json::json!({"cpu": "3900m", "memory": "6Gi", "pods": "110"});
    let status = serde_json::json!({"status": {
        "capacity": resources,
        "allocatable": resources,
        "conditions": [{
            "type": "Ready", "status": "True", "reason": "KubeletReady",
            "message": "e2e", "lastHeartbeatTime": now, "lastTransitionTime": now,
        }],
    }});
    api.patch_status(name, &PatchParams::default(), &Patch::Merge(&status))
        .await
        .unwrap_or_else(|e| panic!("node status {name}: {e}"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_the_selector_matches_outside_the_cloud_pool_is_never_touched() {
    // Item 5, a selector wider than the pool: one pool node and one node of another pool with
    // the same label. Counted, the foreign node would be a surplus to cordon.
    let test = "e2e_safety_outside_pool";
    let options = WorldOptions {
        settings: settings(&[("buffer-slot-size", "0")]),
        ..WorldOptions::default()
    };
    let Some(world) = world(test, options).await else {
        return;
    };
    let foreign = format!("aaa-foreign-{}", world.id);
    create_foreign_node(&world, &foreign).await;
    let client = world.client.clone();
    run(world, |w| async move {
        let foreign = format!("aaa-foreign-{}", w.id);
        planning(&w).await;
        // Long enough to cordon a surplus node and delete it once expired.
        tokio::time::sleep(Duration::from_secs(fullstack::EXPIRATION_SECS + 8)).await;
        let live = w.node(&foreign).await;
        assert!(live.is_some(), "the foreign node was deleted");
        assert!(
            !live.as_ref().is_some_and(unschedulable),
            "kubescaler cordoned another pool's node"
        );
        assert!(
            !live
                .and_then(|n| n.metadata.annotations)
                .unwrap_or_default()
                .keys()
                .any(|k| k.starts_with("kubescaler/")),
            "kubescaler marked another pool's node"
        );
        assert_eq!(w.count(), 1, "the pool changed");
        assert!(
            w.daemons()[0].log_count("is not in the cloud pool") > 0,
            "the foreign node was not reported"
        );
    })
    .await;
    let api: Api<Node> = Api::all(client);
    let _ = api.delete(&foreign, &DeleteParams::default()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cloud_node_that_never_registers_stops_counting_and_is_replaced() {
    // Item 5, a node that never comes up: the pool grows for a fourth server, the new node never
    // registers. Counted as incoming forever, the server would wait forever.
    let test = "e2e_safety_never_registers";
    let options = WorldOptions {
        settings: settings(&[("node-boot-timeout-sec", "10")]),
        ..WorldOptions::default()
    };
    let Some(world) = world(test, options).await else {
        return;
    };
    run(world, |w| async move {
        w.fake.never_register_next(1);
        w.create_servers(4).await;
        w.eventually("all 4 servers bound", Duration::from_secs(90), || async {
            let placement = w.placement().await;
            (placement.len() == 4 && placement.values().all(Option::is_some)).then_some(())
        })
        .await;
        assert!(
            w.daemons()[0].log_count("has not registered as a node") >= 1,
            "the stuck instance was not reported"
        );
        let pool = w.fake.pool(&w.cluster_id, &w.pool_id);
        assert!(
            pool.as_ref()
                .is_some_and(|p| p.nodes_in("provisioning") == 0),
            "the stuck instance is still there: {pool:?}"
        );
        assert_eq!(w.fake.lost_servers(), 0);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_kubescaler_does_not_delete_a_node_twice() {
    // Item 6. The cloud takes 20 s to remove a node (draining, then deleting). kubescaler is
    // killed and restarted while its deletion is in flight: the new process must not send a
    // second DELETE.
    let test = "e2e_safety_restart";
    let options = WorldOptions {
        // Three nodes of 3 slots, a buffer of two nodes' worth: one surplus node. Minimum 0: the
        // pool's minimum must not be what stops a second deletion.
        initial_nodes: 3,
        settings: settings(&[("buffer-slot-size", "6"), ("minimum-node-pool-size", "0")]),
        delete_delay: Duration::from_secs(24),
        ..WorldOptions::default()
    };
    let Some(world) = world(test, options).await else {
        return;
    };
    run(world, |w| async move {
        let node = cordoned_by_kubescaler(&w, 1, Duration::from_secs(60)).await[0].clone();
        let id = w.pool_node(&node).map(|n| n.id).unwrap_or_default();
        w.eventually(
            "the deletion to be accepted",
            Duration::from_secs(60),
            || async { (w.deletes_of(&id) == 1).then_some(()) },
        )
        .await;
        w.daemons()[0].restart();
        // The new process syncs and plans many passes while the node is still going.
        let passes = w.daemons()[0].log_count("planned");
        w.eventually(
            "the restarted process to plan",
            Duration::from_secs(30),
            || async { (w.daemons()[0].log_count("planned") >= passes + 5).then_some(()) },
        )
        .await;
        assert!(
            w.pool_node(&node).is_some(),
            "the test needs the node still going"
        );
        assert_eq!(w.deletes_of(&id), 1, "a second DELETE after the restart");
        w.eventually("the node to go", Duration::from_secs(40), || async {
            w.node(&node).await.is_none().then_some(())
        })
        .await;
        assert_eq!(w.deletes_of(&id), 1);
        assert_eq!(w.fake.lost_servers(), 0);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_pool_costs_at_most_one_cloud_read_a_minute_whatever_the_tick() {
    // Item 9. One node at the minimum, no servers, tick 1 s: nothing to decide. The token's
    // 5,000 requests an hour are shared with everything else the studio runs.
    let test = "e2e_safety_idle_reads";
    let Some(world) = world(test, WorldOptions::default()).await else {
        return;
    };
    run(world, |w| async move {
        planning(&w).await;
        let reads = || fullstack::of(&w.fake, Operation::GetNodePool).len();
        let (before, passes_before) = (reads(), w.daemons()[0].log_count("planned"));
        tokio::time::sleep(Duration::from_secs(61)).await;
        let (calls, passes) = (
            reads() - before,
            w.daemons()[0].log_count("planned") - passes_before,
        );
        eprintln!("idle minute: {passes} passes, {calls} DigitalOcean calls");
        assert!(
            passes >= 30,
            "only {passes} passes in a minute at a 1 s tick"
        );
        assert!(
            calls <= 2,
            "{calls} DigitalOcean calls in an idle minute (at most 1 a minute, 2 at a boundary)"
        );
        assert_eq!(w.count(), 1);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pool_resized_outside_kubescaler_is_noticed_and_brought_back() {
    // Item 9's other half: reading the cloud less often still notices an outside resize
    // (someone ran `doctl ... --count 2`): the new node registers and joins the count.
    let test = "e2e_safety_outside_resize";
    let Some(world) = world(test, WorldOptions::default()).await else {
        return;
    };
    run(world, |w| async move {
        planning(&w).await;
        let raised = w.fake.resize(&w.cluster_id, &w.pool_id, 3).await;
        assert!(raised, "the fake did not resize");
        // Two new nodes boot and join; the surplus is cordoned and deleted again by attrition.
        w.eventually(
            "the outside nodes to be seen and the pool brought back to 1",
            Duration::from_secs(120),
            || async { (w.count() == 1 && w.nodes().await.len() == 1).then_some(()) },
        )
        .await;
        assert_eq!(w.fake.lost_servers(), 0);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_surplus_is_cordoned_only_once_it_has_held_for_scale_down_unneeded_sec() {
    // Two empty nodes, buffer 0: a surplus of one node from the first pass. Without a hold
    // it is cordoned within a pass or two; with scale-down-unneeded-sec 8, not before 8 s.
    let test = "e2e_safety_unneeded_hold";
    let options = WorldOptions {
        initial_nodes: 2,
        settings: settings(&[("buffer-slot-size", "0"), ("scale-down-unneeded-sec", "8")]),
        ..WorldOptions::default()
    };
    let started = Instant::now();
    let Some(world) = world(test, options).await else {
        return;
    };
    run(world, |w| async move {
        let cordoned = cordoned_by_kubescaler(&w, 1, Duration::from_secs(60)).await;
        let after = started.elapsed();
        assert!(
            after >= Duration::from_secs(8),
            "{cordoned:?} cordoned {after:?} after start, within scale-down-unneeded-sec 8"
        );
        assert_eq!(cordoned.len(), 1, "the minimum (1) keeps the other node");
        assert_eq!(w.fake.lost_servers(), 0, "{:?}", w.fake.lost_server_pods());
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nothing_is_cordoned_within_scale_down_delay_after_add_sec_of_the_newest_node() {
    // The same surplus, but the pool's nodes were created a moment ago and
    // scale-down-delay-after-add-sec is 600: kubescaler plans on and cordons nothing.
    let test = "e2e_safety_delay_after_add";
    let options = WorldOptions {
        initial_nodes: 2,
        settings: settings(&[
            ("buffer-slot-size", "0"),
            ("scale-down-delay-after-add-sec", "600"),
        ]),
        ..WorldOptions::default()
    };
    let Some(world) = world(test, options).await else {
        return;
    };
    run(world, |w| async move {
        planning(&w).await;
        let until = Instant::now() + Duration::from_secs(10);
        while Instant::now() < until {
            let ours = cordoned_now(&w).await;
            assert!(
                ours.is_empty(),
                "cordoned {ours:?} within the delay after add"
            );
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        assert!(
            w.daemons()[0].log_count("planned") >= 10,
            "kubescaler kept planning"
        );
    })
    .await;
}
