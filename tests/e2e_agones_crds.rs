//! Agones' real CRDs (`../shared/agones/agones-crds.yaml`) installed in the real API server,
//! and kubescaler's reading of GameServers (`kubescaler::agones`) checked against objects the
//! API server itself validated and stored: the ground the `server-source: agones` mode
//! (issue 11) stands on.
//!
//! Gated by `tests/cluster` (`KUBESCALER_E2E_KUBECONFIG`; required in CI) and by the CRD file.

use std::time::Duration;

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use kube::core::DynamicObject;
use kube::Client;
use kubescaler::agones::{game_server_info, game_server_resource, tally, GameServerState};
use serde_json::json;

mod cluster;
use cluster::{client_or_skip, prereq};

/// Installs every CRD of `path` by server-side apply (idempotent: tests share one API server)
/// and waits until each is Established.
async fn install_crds(client: &Client, path: &std::path::Path) -> Vec<String> {
    let text =
        std::fs::read_to_string(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    let api: Api<CustomResourceDefinition> = Api::all(client.clone());
    let params = PatchParams::apply("kubescaler-e2e").force();
    let mut names = Vec::new();
    for doc in serde_yaml::Deserializer::from_str(&text) {
        let value: serde_json::Value = match serde::Deserialize::deserialize(doc) {
            Ok(v) => v,
            Err(e) => panic!("a document of {}: {e}", path.display()),
        };
        if value.get("kind").and_then(|k| k.as_str()) != Some("CustomResourceDefinition") {
            continue;
        }
        let name = value["metadata"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        api.patch(&name, &params, &Patch::Apply(&value))
            .await
            .unwrap_or_else(|e| panic!("apply CRD {name}: {e}"));
        names.push(name);
    }
    for name in &names {
        cluster::eventually(
            &format!("CRD {name} Established"),
            Duration::from_secs(60),
            || async {
                let crd = api.get(name).await.ok()?;
                crd.status?
                    .conditions?
                    .iter()
                    .any(|c| c.type_ == "Established" && c.status == "True")
                    .then_some(())
            },
        )
        .await;
    }
    names
}

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
