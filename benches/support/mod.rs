//! Objects shared by the index benchmarks: realistic Nodes as a DOKS API server sends them.
#![allow(dead_code)]

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Node, NodeCondition, NodeSpec, NodeStatus};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};

/// A quantity.
pub fn q(s: &str) -> Quantity {
    Quantity(s.to_string())
}

/// The name of node `n`.
pub fn node_name(n: usize) -> String {
    format!("game-servers-pool-{n:06}")
}

/// A DigitalOcean node as the API server sends it: 12 labels, provider ID, allocatable,
/// conditions, creation time.
pub fn node(n: usize, unschedulable: bool) -> Node {
    let name = node_name(n);
    Node {
        metadata: ObjectMeta {
            name: Some(name.clone()),
            creation_timestamp: Some(Time(jiff::Timestamp::UNIX_EPOCH)),
            labels: Some(BTreeMap::from([
                ("beta.kubernetes.io/arch".to_string(), "amd64".to_string()),
                ("beta.kubernetes.io/os".to_string(), "linux".to_string()),
                (
                    "doks.digitalocean.com/node-id".to_string(),
                    format!("c0ffee00-0000-4000-8000-{n:012}"),
                ),
                (
                    "doks.digitalocean.com/node-pool".to_string(),
                    "game-servers".to_string(),
                ),
                (
                    "doks.digitalocean.com/node-pool-id".to_string(),
                    "5a6b7c8d-0000-4000-8000-000000000001".to_string(),
                ),
                (
                    "doks.digitalocean.com/version".to_string(),
                    "1.33.1-do.0".to_string(),
                ),
                ("kubernetes.io/arch".to_string(), "amd64".to_string()),
                ("kubernetes.io/hostname".to_string(), name.clone()),
                ("kubernetes.io/os".to_string(), "linux".to_string()),
                (
                    "node.kubernetes.io/instance-type".to_string(),
                    "c-32".to_string(),
                ),
                ("region".to_string(), "fra1".to_string()),
                (
                    "topology.kubernetes.io/region".to_string(),
                    "fra1".to_string(),
                ),
            ])),
            annotations: Some(BTreeMap::from([(
                "node.alpha.kubernetes.io/ttl".to_string(),
                "0".to_string(),
            )])),
            ..ObjectMeta::default()
        },
        spec: Some(NodeSpec {
            provider_id: Some(format!("digitalocean://{}", 400_000_000 + n)),
            unschedulable: Some(unschedulable),
            ..NodeSpec::default()
        }),
        status: Some(NodeStatus {
            allocatable: Some(BTreeMap::from([
                ("cpu".to_string(), q("31850m")),
                ("memory".to_string(), q("60Gi")),
                ("pods".to_string(), q("110")),
                ("ephemeral-storage".to_string(), q("300Gi")),
            ])),
            conditions: Some(vec![NodeCondition {
                type_: "Ready".to_string(),
                status: "True".to_string(),
                ..NodeCondition::default()
            }]),
            ..NodeStatus::default()
        }),
    }
}
