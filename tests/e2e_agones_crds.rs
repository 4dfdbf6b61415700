//! Agones' real CRDs (`../shared/agones/agones-crds.yaml`) installed in the real API server,
//! and kubescaler's reading of GameServers (`kubescaler::agones`) checked against objects the
//! API server itself validated and stored: the ground the `server-source: agones` mode
//! (issue 11) stands on; and the Agones stand-in of the end-to-end tests (`tests/agones`)
//! checked against the same API server: that it keeps a Fleet like Agones does, and that what
//! it reports (compaction, lost matches, allocations racing deletes) is what happened.
//!
//! Gated by `tests/cluster` (`KUBESCALER_E2E_KUBECONFIG`; required in CI) and by the CRD file.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Node, Pod};
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams, Preconditions};
use kube::core::DynamicObject;
use kubescaler::agones::{
    game_server_info, game_server_resource, tally, GameServerDelete, GameServerState,
    GAMESERVER_LABEL, ROLE_LABEL,
};
use serde_json::json;

mod agones;
mod cluster;
use agones::{install_crds, AgonesStandIn, GameServerView, NamedAllocation, Options};
use cluster::cloud::{Pool, FOUR_CPU, NAMESPACE, POOL_LABEL, SERVER_CPU, SERVER_LABEL, WAIT};
use cluster::{client_or_skip, eventually, prereq};

#[tokio::test]
async fn agones_crds_install_and_game_server_states_read_as_the_api_server_stores_them() {
    let test = "e2e_agones_crds";
    let Some(client) = client_or_skip(test).await else {
        return;
    };
    let Some(crds) = prereq::agones_crds_or_skip(test) else {
        return;
    };
    let names = install_crds(&client, &crds).await;
    assert!(
        names.iter().any(|n| n == "gameservers.agones.dev"),
        "{names:?}"
    );

    let ns = "default";
    let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), ns, &game_server_resource());
    let id = format!("ks-gs-{}", std::process::id());
    let mut keys = Vec::new();
    for (i, state) in ["Allocated", "Ready", "Scheduled"].iter().enumerate() {
        let name = format!("{id}-{i}");
        let object: DynamicObject = serde_json::from_value(json!({
            "apiVersion": "agones.dev/v1",
            "kind": "GameServer",
            "metadata": {"name": name, "labels": {"agones.dev/fleet": id, "kubescaler-e2e/run": id}},
            "spec": {"template": {"spec": {"containers": [{"name": "game", "image": "registry.invalid/game:1"}]}}},
        }))
        .unwrap_or_else(|e| panic!("object: {e}"));
        api.create(&PostParams::default(), &object)
            .await
            .unwrap_or_else(|e| panic!("create GameServer {name}: {e}"));
        // As the Agones controller would. The CRD has no status subresource (only scale): the
        // controller, and an allocation, update the whole object.
        let status = json!({"status": {"state": state, "nodeName": "node-a"}});
        api.patch(&name, &PatchParams::default(), &Patch::Merge(&status))
            .await
            .unwrap_or_else(|e| panic!("status of {name}: {e}"));
        keys.push(name);
    }
    // The CRD's enum is enforced: a state outside it is refused.
    let bad = json!({"status": {"state": "Hibernating"}});
    assert!(
        api.patch(&keys[1], &PatchParams::default(), &Patch::Merge(&bad))
            .await
            .is_err(),
        "the API server accepted a state outside the CRD's enum"
    );

    let list = api
        .list(&ListParams::default().labels(&format!("kubescaler-e2e/run={id}")))
        .await
        .unwrap_or_else(|e| panic!("list GameServers: {e}"));
    let servers: Vec<_> = list.items.iter().filter_map(game_server_info).collect();
    assert_eq!(servers.len(), 3);
    let allocated = servers
        .iter()
        .find(|g| g.state == GameServerState::Allocated)
        .unwrap_or_else(|| panic!("{servers:?}"));
    assert!(allocated.blocks_node_deletion());
    assert!(allocated.resource_version.is_some());
    assert_eq!(allocated.fleet.as_deref(), Some(id.as_str()));
    let t = tally(&servers);
    assert_eq!(
        (t["node-a"].live, t["node-a"].ready, t["node-a"].starting),
        (1, 1, 1)
    );

    for name in keys {
        let _ = api.delete(&name, &Default::default()).await;
    }
}

/// Deletes GameServer `name` only if it is still at `resource_version`, as kubescaler's
/// compaction does.
async fn delete_unless_changed(
    api: &Api<DynamicObject>,
    name: &str,
    resource_version: &str,
) -> GameServerDelete {
    let params = DeleteParams {
        preconditions: Some(Preconditions {
            resource_version: Some(resource_version.to_string()),
            uid: None,
        }),
        ..Default::default()
    };
    match api.delete(name, &params).await {
        Ok(_) => GameServerDelete::Deleted,
        Err(kube::Error::Api(s)) if s.code == 409 => GameServerDelete::Conflict,
        Err(kube::Error::Api(s)) if s.code == 404 => GameServerDelete::Gone,
        Err(e) => panic!("delete GameServer {name}: {e}"),
    }
}

/// A Ready GameServer with its resourceVersion.
fn ready_one(servers: &[GameServerView]) -> (String, String) {
    let gs = servers
        .iter()
        .find(|g| g.state == GameServerState::Ready)
        .unwrap_or_else(|| panic!("no Ready GameServer in {servers:?}"));
    let version = gs
        .resource_version
        .clone()
        .unwrap_or_else(|| panic!("GameServer {} has no resourceVersion", gs.name));
    (gs.name.clone(), version)
}

/// Allocated GameServers per node (for the nodes having a Ready one, with 0 if none).
fn allocated_per_node_with_ready(servers: &[GameServerView]) -> BTreeMap<String, usize> {
    let mut per_node = BTreeMap::new();
    for gs in servers {
        let Some(node) = &gs.node else { continue };
        if gs.state == GameServerState::Ready {
            per_node.entry(node.clone()).or_insert(0);
        }
    }
    for gs in servers {
        if let (Some(n), GameServerState::Allocated) = (&gs.node, gs.state) {
            if let Some(count) = per_node.get_mut(n) {
                *count += 1;
            }
        }
    }
    per_node
}

async fn pod_exists(pods: &Api<Pod>, name: &str) -> bool {
    pods.get_opt(name)
        .await
        .unwrap_or_else(|e| panic!("get pod {name}: {e}"))
        .is_some()
}

/// The Fleet lifecycle the kubescaler e2e tests rely on: replicas kept Ready on the pool's
/// nodes with well-formed pods; Packed allocations; Allocated servers counted and never
/// removed by a scale-down; a compacted Ready server and an ended match replaced, each pod
/// deleted; and a node deleted under a live match reported as a lost match.
#[tokio::test]
async fn agones_stand_in_keeps_a_fleet_like_agones_and_reports_compaction_and_lost_matches() {
    let test = "e2e_agones_crds::stand_in_fleet";
    let Some(client) = client_or_skip(test).await else {
        return;
    };
    let Some(crds) = prereq::agones_crds_or_skip(test) else {
        return;
    };
    install_crds(&client, &crds).await;
    let started = Instant::now();
    let pool = Pool::new(client.clone(), "agfleet", FOUR_CPU, Duration::ZERO);
    let nodes = pool.cloud.start_with(2).await;
    let fleet = AgonesStandIn::start(
        client.clone(),
        Options::new(&pool.id, &pool.id).server_label(SERVER_LABEL, &pool.id),
    );
    let gs_api: Api<DynamicObject> =
        Api::namespaced_with(client.clone(), NAMESPACE, &game_server_resource());
    let pods: Api<Pod> = Api::namespaced(client.clone(), NAMESPACE);
    pool.run(fleet.run(async {
        // Replicas: Ready, on the pool's nodes, each with its pod as Agones makes it.
        fleet.set_replicas(4);
        let servers = fleet.wait_state(GameServerState::Ready, 4).await;
        assert_eq!(servers.len(), 4, "{servers:?}");
        for gs in &servers {
            let node = gs.node.as_deref().unwrap_or_else(|| panic!("{gs:?}"));
            assert!(nodes.iter().any(|n| n == node), "{gs:?} not on {nodes:?}");
            let pod = pods
                .get(&gs.name)
                .await
                .unwrap_or_else(|e| panic!("pod of {}: {e}", gs.name));
            let labels = pod.metadata.labels.clone().unwrap_or_default();
            assert_eq!(
                labels.get(ROLE_LABEL).map(String::as_str),
                Some("gameserver")
            );
            assert_eq!(labels.get(GAMESERVER_LABEL), Some(&gs.name));
            assert_eq!(labels.get(SERVER_LABEL), Some(&pool.id));
            let owner = &pod.metadata.owner_references.clone().unwrap_or_default()[..];
            assert!(
                matches!(owner, [o] if o.kind == "GameServer" && o.name == gs.name),
                "{owner:?}"
            );
            let spec = pod.spec.clone().unwrap_or_default();
            assert_eq!(spec.node_name.as_deref(), Some(node), "bound where it says");
            assert_eq!(spec.termination_grace_period_seconds, Some(0));
            assert_eq!(
                spec.node_selector.unwrap_or_default().get(POOL_LABEL),
                Some(&pool.id)
            );
            let cpu = spec.containers[0]
                .resources
                .as_ref()
                .and_then(|r| r.requests.as_ref())
                .and_then(|r| r.get("cpu"))
                .map(|q| q.0.clone());
            assert_eq!(cpu.as_deref(), Some(SERVER_CPU));
        }

        // Packed: each allocation lands on a node with the most Allocated servers.
        let mut matches = Vec::new();
        for _ in 0..3 {
            let before = allocated_per_node_with_ready(&fleet.game_servers().await);
            let most = before.values().copied().max().unwrap_or(0);
            let a = fleet
                .allocate()
                .await
                .unwrap_or_else(|| panic!("no allocation among {before:?}"));
            assert_eq!(
                before.get(&a.node),
                Some(&most),
                "{a:?} not packed: {before:?}"
            );
            matches.push(a);
        }
        let counts = fleet.counts().await;
        assert_eq!(
            counts.get(&GameServerState::Allocated),
            Some(&3),
            "{counts:?}"
        );
        assert_eq!(counts.get(&GameServerState::Ready), Some(&1), "{counts:?}");
        assert_eq!(
            fleet.game_servers().await.len(),
            4,
            "Allocated count as replicas"
        );

        // Compaction: a Ready server deleted by someone else, as kubescaler does.
        fleet.set_replicas(6);
        let servers = fleet.wait_state(GameServerState::Ready, 3).await;
        let (victim, version) = ready_one(&servers);
        assert_eq!(
            delete_unless_changed(&gs_api, &victim, &version).await,
            GameServerDelete::Deleted
        );
        eventually("the compaction to be seen", WAIT, || async {
            fleet.compacted().contains(&victim).then_some(())
        })
        .await;
        eventually("the compacted server's pod to go", WAIT, || async {
            (!pod_exists(&pods, &victim).await).then_some(())
        })
        .await;
        let servers = fleet.wait_state(GameServerState::Ready, 3).await;
        assert!(servers.iter().all(|g| g.name != victim), "{servers:?}");

        // A match ends: its server and pod go, a new one takes its place.
        let ended = matches.remove(0);
        assert!(fleet.end_match(&ended.name).await);
        eventually("the ended match's pod to go", WAIT, || async {
            (!pod_exists(&pods, &ended.name).await).then_some(())
        })
        .await;
        let servers = fleet.wait_state(GameServerState::Ready, 4).await;
        assert!(servers.iter().all(|g| g.name != ended.name), "{servers:?}");
        assert_eq!(fleet.count(GameServerState::Allocated).await, 2);
        assert_eq!(
            fleet.compacted(),
            vec![victim.clone()],
            "only the compacted one"
        );
        assert_eq!(fleet.deleted_by_others().len(), 1);

        // Scale-down below the Allocated count: every other server goes, no live match does.
        fleet.set_replicas(1);
        let servers = eventually("a scale-down to the 2 Allocated", WAIT, || async {
            let all = fleet.game_servers().await;
            (all.len() == 2).then_some(all)
        })
        .await;
        let left: BTreeSet<&str> = servers.iter().map(|g| g.name.as_str()).collect();
        let live: BTreeSet<&str> = matches.iter().map(|a| a.name.as_str()).collect();
        assert_eq!(left, live, "{servers:?}");
        assert!(servers
            .iter()
            .all(|g| g.state == GameServerState::Allocated));
        assert!(
            fleet.lost_matches().is_empty(),
            "{:?}",
            fleet.lost_matches()
        );
        assert!(
            fleet.lost_servers().is_empty(),
            "{:?}",
            fleet.lost_servers()
        );

        // A node deleted under a live match (what kubescaler must never do) is a lost match.
        let doomed = matches[0].node.clone();
        Api::<Node>::all(client.clone())
            .delete(&doomed, &DeleteParams::default())
            .await
            .unwrap_or_else(|e| panic!("delete node {doomed}: {e}"));
        let lost = eventually("the lost match to be seen", WAIT, || async {
            let lost = fleet.lost_matches();
            lost.iter()
                .any(|l| l.name == matches[0].name)
                .then_some(lost)
        })
        .await;
        let on_doomed: BTreeSet<&str> = matches
            .iter()
            .filter(|a| a.node == doomed)
            .map(|a| a.name.as_str())
            .collect();
        let lost_names: BTreeSet<&str> = lost.iter().map(|l| l.name.as_str()).collect();
        assert_eq!(lost_names, on_doomed, "{lost:?}");
        assert!(lost
            .iter()
            .all(|l| l.node.as_deref() == Some(doomed.as_str())));
        eprintln!(
            "{test}: passed in {:?} ({} stand-in passes)",
            started.elapsed(),
            fleet.passes()
        );
    }))
    .await;
}

/// The allocate-vs-delete race kubescaler's compaction relies on: a delete with a
/// resourceVersion precondition and an allocation (an update at the same resourceVersion) of
/// one Ready GameServer never both win, in either order or at once; and concurrent
/// allocations never hand out one GameServer twice.
#[tokio::test]
async fn an_allocation_and_a_resource_version_guarded_delete_never_both_win() {
    let test = "e2e_agones_crds::allocation_race";
    let Some(client) = client_or_skip(test).await else {
        return;
    };
    let Some(crds) = prereq::agones_crds_or_skip(test) else {
        return;
    };
    install_crds(&client, &crds).await;
    let started = Instant::now();
    let pool = Pool::new(client.clone(), "agrace", FOUR_CPU, Duration::ZERO);
    pool.cloud.start_with(1).await;
    let fleet = AgonesStandIn::start(
        client.clone(),
        Options::new(&pool.id, &pool.id).server_label(SERVER_LABEL, &pool.id),
    );
    let gs_api: Api<DynamicObject> =
        Api::namespaced_with(client.clone(), NAMESPACE, &game_server_resource());
    pool.run(fleet.run(async {
        fleet.set_replicas(4);

        // Allocation first: the delete at the version read before it is refused.
        let (name, version) = ready_one(&fleet.wait_state(GameServerState::Ready, 4).await);
        let won = fleet.allocate_named(&name, &version).await;
        assert!(
            matches!(&won, NamedAllocation::Allocated(a) if a.name == name),
            "{won:?}"
        );
        assert_eq!(
            delete_unless_changed(&gs_api, &name, &version).await,
            GameServerDelete::Conflict
        );
        let after = fleet.game_servers().await;
        assert!(
            after
                .iter()
                .any(|g| g.name == name && g.state == GameServerState::Allocated),
            "{after:?}"
        );
        // A second allocation at the same stale version is refused too.
        assert_eq!(
            fleet.allocate_named(&name, &version).await,
            NamedAllocation::Conflict
        );
        assert!(fleet.end_match(&name).await);

        // Delete first: the allocation at the version read before it finds nothing.
        let (name, version) = ready_one(&fleet.wait_state(GameServerState::Ready, 4).await);
        assert_eq!(
            delete_unless_changed(&gs_api, &name, &version).await,
            GameServerDelete::Deleted
        );
        assert_eq!(
            fleet.allocate_named(&name, &version).await,
            NamedAllocation::Gone
        );

        // At once, several times: exactly one of the two wins each time. The allocation
        // reads the object before its update, so the delete starts 0-11 ms later to let the
        // two requests meet on the server in different orders.
        let (mut deletes_won, mut allocations_won) = (0, 0);
        for round in 0..12u64 {
            let (name, version) = ready_one(&fleet.wait_state(GameServerState::Ready, 4).await);
            let (deleted, allocated) = tokio::join!(
                async {
                    tokio::time::sleep(Duration::from_millis(round)).await;
                    delete_unless_changed(&gs_api, &name, &version).await
                },
                fleet.allocate_named(&name, &version)
            );
            match (deleted, &allocated) {
                (GameServerDelete::Deleted, NamedAllocation::Gone | NamedAllocation::Conflict) => {
                    deletes_won += 1;
                }
                (GameServerDelete::Conflict, NamedAllocation::Allocated(_)) => {
                    allocations_won += 1;
                    assert!(fleet.end_match(&name).await);
                }
                other => panic!("round {round} on {name}: {other:?}"),
            }
        }
        eprintln!("{test}: deletes won {deletes_won}, allocations won {allocations_won}");
        eventually("every won delete seen as compaction", WAIT, || async {
            (fleet.compacted().len() == 1 + deletes_won).then_some(())
        })
        .await;
        assert!(
            fleet.lost_matches().is_empty(),
            "{:?}",
            fleet.lost_matches()
        );

        // Concurrent allocators: one GameServer each, then none left.
        fleet.wait_state(GameServerState::Ready, 4).await;
        let conflicts_before = fleet.allocation_conflicts();
        let won = futures::future::join_all((0..5).map(|_| fleet.allocate())).await;
        let names: BTreeSet<String> = won.iter().flatten().map(|a| a.name.clone()).collect();
        assert_eq!(names.len(), 4, "{won:?}");
        assert_eq!(won.iter().filter(|a| a.is_none()).count(), 1, "{won:?}");
        assert_eq!(fleet.count(GameServerState::Allocated).await, 4);
        eprintln!(
            "{test}: concurrent allocations retried {} times; passed in {:?}",
            fleet.allocation_conflicts() - conflicts_before,
            started.elapsed()
        );
        assert!(
            fleet.lost_matches().is_empty(),
            "{:?}",
            fleet.lost_matches()
        );
    }))
    .await;
}

/// The YAML blocks of README.md's Agones example: the Fleet and FleetAutoscaler, then the
/// kubescaler settings.
fn readme_agones_example() -> (Vec<serde_json::Value>, String) {
    let readme = std::fs::read_to_string("README.md").unwrap_or_else(|e| panic!("README.md: {e}"));
    let (_, example) = readme
        .split_once("**A working example.**")
        .unwrap_or_else(|| panic!("README.md has no Agones working example"));
    let mut blocks = example
        .split("```yaml\n")
        .skip(1)
        .map(|b| b.split_once("```").map_or(b, |(yaml, _)| yaml));
    let objects = blocks.next().unwrap_or_else(|| panic!("no Agones objects"));
    let settings = blocks
        .next()
        .unwrap_or_else(|| panic!("no kubescaler settings"));
    let objects = serde_yaml::Deserializer::from_str(objects)
        .map(|doc| {
            serde_yaml::from_value::<serde_json::Value>(
                serde::Deserialize::deserialize(doc).unwrap_or_else(|e| panic!("YAML: {e}")),
            )
            .unwrap_or_else(|e| panic!("YAML: {e}"))
        })
        .collect();
    (objects, settings.to_string())
}

#[tokio::test]
async fn the_readme_agones_example_is_accepted_by_agones_crds_and_sets_the_buffer_it_says() {
    let test = "e2e_agones_crds::readme_example";
    let Some(client) = client_or_skip(test).await else {
        return;
    };
    let Some(crds) = prereq::agones_crds_or_skip(test) else {
        return;
    };
    install_crds(&client, &crds).await;
    let (objects, settings) = readme_agones_example();
    let kinds: Vec<&str> = objects.iter().filter_map(|o| o["kind"].as_str()).collect();
    assert_eq!(kinds, ["Fleet", "FleetAutoscaler"]);

    // Server-side dry run with strict field validation: an unknown or misspelt field in the
    // README is an error from the API server, as `kubectl apply` would report it.
    let mut autoscaler = None;
    for object in &objects {
        let mut object: DynamicObject =
            serde_json::from_value(object.clone()).unwrap_or_else(|e| panic!("object: {e}"));
        let resource = match object.types.as_ref().map(|t| t.kind.as_str()) {
            Some("Fleet") => kube::core::ApiResource {
                group: "agones.dev".into(),
                version: "v1".into(),
                api_version: "agones.dev/v1".into(),
                kind: "Fleet".into(),
                plural: "fleets".into(),
            },
            _ => kubescaler::agones::fleet_autoscaler_resource(),
        };
        // The example's namespace need not exist here: a dry run in `default` checks the same.
        object.metadata.namespace = Some("default".into());
        let name = object.metadata.name.clone().unwrap_or_default();
        let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), "default", &resource);
        let params = PatchParams::apply("kubescaler-readme-check")
            .dry_run()
            .validation_strict();
        let stored = api
            .patch(&name, &params, &Patch::Apply(&object))
            .await
            .unwrap_or_else(|e| panic!("the API server refuses README's {name}: {e}"));
        if resource.kind == "FleetAutoscaler" {
            autoscaler = Some(stored);
        }
    }
    let autoscaler = autoscaler.unwrap_or_else(|| panic!("no FleetAutoscaler stored"));
    let buffer = kubescaler::agones::fleet_buffer(&autoscaler)
        .unwrap_or_else(|| panic!("kubescaler reads no Buffer policy from {autoscaler:?}"));
    // What the README's reason line says: 4 Ready + 4 for its next step.
    assert_eq!(
        (buffer.fleet.as_str(), buffer.ready, buffer.slots()),
        ("arena", 4, 8)
    );
    // The settings are the base's config.yaml plus these lines, and check-config accepts them.
    for key in ["server-source: agones", "agones-buffer: fleet-autoscalers"] {
        assert!(settings.contains(key), "README's settings lack {key}");
    }
    let base: serde_yaml::Value = serde_yaml::from_str(
        &std::fs::read_to_string("deploy/configmap.yaml").unwrap_or_else(|e| panic!("{e}")),
    )
    .unwrap_or_else(|e| panic!("deploy/configmap.yaml: {e}"));
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}"));
    let token = dir.path().join("token");
    std::fs::write(&token, "dop_v1_readme_example_token").unwrap_or_else(|e| panic!("{e}"));
    let config = base["data"]["config.yaml"]
        .as_str()
        .unwrap_or_else(|| panic!("deploy/configmap.yaml has no config.yaml"))
        .replace(
            "/var/run/secrets/kubescaler/token",
            token.to_str().unwrap_or_default(),
        )
        + "\n"
        + &settings;
    let path = dir.path().join("config.yaml");
    std::fs::write(&path, config).unwrap_or_else(|e| panic!("{e}"));
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_kubescaler"))
        .args(["check-config", "--config"])
        .arg(&path)
        .env_clear()
        .output()
        .unwrap_or_else(|e| panic!("kubescaler check-config: {e}"));
    let printed = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "check-config refuses README's settings: {}{}",
        printed,
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        printed.contains("agones-buffer: fleet-autoscalers"),
        "{printed}"
    );
}
