//! kubescaler's marks on a node, and the ownership rule they serve.
//!
//! **The rule.** A node is kubescaler's to uncordon, fence or delete only while it is cordoned
//! (`spec.unschedulable`), carries [`CORDONED_BY_ANNOTATION`], and the API server's own record
//! (`metadata.managedFields`) says that kubescaler's field manager
//! ([`FIELD_MANAGER`](crate::model::FIELD_MANAGER)) was the last to set `spec.unschedulable`. A person's `kubectl cordon` is recorded under kubectl's
//! manager, so it is never mistaken for kubescaler's, whatever annotations an earlier cordon
//! left behind. A node that a person cordoned is never uncordoned, fenced or deleted.
//!
//! **No mark left behind.** When kubescaler uncordons a node, or finds a schedulable node that
//! carries one of its marks (a person ran `kubectl uncordon`), it removes every annotation of
//! [`KUBESCALER_ANNOTATIONS`] and its [`FENCE_TAINT`].
//!
//! Every change is decided here, purely, on the node as just read from the API server, and
//! written as one merge patch that carries that read's `resourceVersion`: if anything changed
//! the node in between, the API server refuses the patch (409) and the change is decided again
//! on the newer node. Pure: no client, no I/O.

use jiff::Timestamp;
use k8s_openapi::api::core::v1::{Node, Taint as K8sTaint};
use serde_json::{json, Map, Value};

use super::index::node_state;
use crate::model::{
    NodeState, CORDONED_BY_ANNOTATION, CORDONED_BY_VALUE, DELETION_ACCEPTED_ANNOTATION,
    DELETION_REQUESTED_ANNOTATION, FENCE_TAINT, KUBESCALER_ANNOTATIONS, TIMESTAMP_ANNOTATION,
};

/// A change to kubescaler's marks on one node.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MarkOp {
    /// Cordon a schedulable node and mark it as kubescaler's, cordoned at this time.
    Cordon(Timestamp),
    /// Make a node kubescaler cordoned schedulable again, with none of its marks left.
    Uncordon,
    /// Remove kubescaler's marks from a schedulable node (left behind by a person's uncordon).
    ClearStale,
    /// Put the deletion fence (taint and request time) on a node kubescaler cordoned.
    Fence(Timestamp),
    /// Lift the deletion fence; on a node a person made schedulable, remove every mark.
    Release,
    /// Record that the cloud accepted the node's deletion at this time.
    AcceptDeletion(Timestamp),
}

impl MarkOp {
    /// Lower-case name, for logs.
    pub fn as_str(self) -> &'static str {
        match self {
            MarkOp::Cordon(_) => "cordon",
            MarkOp::Uncordon => "uncordon",
            MarkOp::ClearStale => "clear-marks",
            MarkOp::Fence(_) => "fence",
            MarkOp::Release => "release",
            MarkOp::AcceptDeletion(_) => "accept-deletion",
        }
    }
}

/// What a mark change did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MarkOutcome {
    /// Written; the node as the API server answered the patch.
    Applied(NodeState),
    /// Not written: the live node does not allow it (the node as read, and why).
    Refused(NodeState, String),
    /// The node does not exist (any more).
    Gone,
}

/// What to write for `op` on `node` as just read: a merge patch, or why nothing may be written.
pub fn decide(op: MarkOp, node: &Node) -> Result<Value, String> {
    let Some(state) = node_state(node) else {
        return Err("the node has no name".into());
    };
    let rv = node.metadata.resource_version.clone().unwrap_or_default();
    let taints: Vec<K8sTaint> = node
        .spec
        .as_ref()
        .and_then(|s| s.taints.clone())
        .unwrap_or_default();
    let fenced = taints.iter().any(|t| t.key == FENCE_TAINT);
    let without_fence = || -> Vec<K8sTaint> {
        taints
            .iter()
            .filter(|t| t.key != FENCE_TAINT)
            .cloned()
            .collect()
    };
    let mut annotations = Map::new();
    let mut spec = Map::new();
    let remove_all = |annotations: &mut Map<String, Value>| {
        for key in KUBESCALER_ANNOTATIONS {
            annotations.insert((*key).to_string(), Value::Null);
        }
    };
    match op {
        MarkOp::Cordon(at) => {
            if state.unschedulable {
                return Err("the node is cordoned already (by someone else)".into());
            }
            remove_all(&mut annotations);
            annotations.insert(CORDONED_BY_ANNOTATION.into(), CORDONED_BY_VALUE.into());
            annotations.insert(TIMESTAMP_ANNOTATION.into(), rfc3339_utc(at).into());
            spec.insert("unschedulable".into(), true.into());
            if fenced {
                spec.insert("taints".into(), json!(without_fence()));
            }
        }
        MarkOp::Uncordon => {
            if !state.cordoned_by_kubescaler {
                return Err(not_ours(&state));
            }
            remove_all(&mut annotations);
            spec.insert("unschedulable".into(), false.into());
            if fenced {
                spec.insert("taints".into(), json!(without_fence()));
            }
        }
        MarkOp::ClearStale => {
            if state.unschedulable {
                return Err("the node is cordoned: its marks are not stale".into());
            }
            if !state.has_kubescaler_marks {
                return Err("the node carries no mark of kubescaler's".into());
            }
            remove_all(&mut annotations);
            if fenced {
                spec.insert("taints".into(), json!(without_fence()));
            }
        }
        MarkOp::Fence(at) => {
            if !state.cordoned_by_kubescaler {
                return Err(not_ours(&state));
            }
            let mut fence = without_fence();
            fence.push(K8sTaint {
                key: FENCE_TAINT.into(),
                effect: "NoSchedule".into(),
                ..K8sTaint::default()
            });
            spec.insert("taints".into(), json!(fence));
            annotations.insert(DELETION_REQUESTED_ANNOTATION.into(), rfc3339_utc(at).into());
        }
        MarkOp::Release => {
            if state.unschedulable {
                annotations.insert(DELETION_REQUESTED_ANNOTATION.into(), Value::Null);
                annotations.insert(DELETION_ACCEPTED_ANNOTATION.into(), Value::Null);
            } else {
                // A person made it schedulable again: it is theirs, with nothing of ours.
                remove_all(&mut annotations);
            }
            if fenced {
                spec.insert("taints".into(), json!(without_fence()));
            }
        }
        MarkOp::AcceptDeletion(at) => {
            annotations.insert(DELETION_ACCEPTED_ANNOTATION.into(), rfc3339_utc(at).into());
        }
    }
    let mut patch = json!({
        "metadata": {"resourceVersion": rv, "annotations": Value::Object(annotations)}
    });
    if !spec.is_empty() {
        patch["spec"] = Value::Object(spec);
    }
    Ok(patch)
}

fn not_ours(state: &NodeState) -> String {
    if !state.unschedulable {
        "the node is schedulable (someone uncordoned it)".into()
    } else {
        "the node's cordon is not kubescaler's (a person cordoned it)".into()
    }
}

/// RFC 3339 in UTC at second precision, the format the Go version wrote (`time.RFC3339`), so
/// nodes cordoned by either version read the same.
pub fn rfc3339_utc(at: Timestamp) -> String {
    at.strftime("%Y-%m-%dT%H:%M:%SZ").to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::NodeSpec;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{FieldsV1, ManagedFieldsEntry, Time};
    use std::collections::BTreeMap;

    fn at() -> Timestamp {
        "2024-05-01T10:00:00.5Z".parse().unwrap()
    }

    /// A node with `unschedulable` last set by `manager`, these annotations and taints.
    fn node(
        unschedulable: bool,
        manager: &str,
        annotations: &[(&str, &str)],
        taints: &[&str],
    ) -> Node {
        let mut n = Node::default();
        n.metadata.name = Some("n1".into());
        n.metadata.resource_version = Some("42".into());
        n.metadata.annotations = Some(
            annotations
                .iter()
                .map(|(k, v)| ((*k).to_string(), (*v).to_string()))
                .collect::<BTreeMap<_, _>>(),
        );
        n.metadata.managed_fields = Some(vec![ManagedFieldsEntry {
            manager: Some(manager.into()),
            operation: Some("Update".into()),
            fields_v1: Some(FieldsV1(json!({"f:spec": {"f:unschedulable": {}}}))),
            time: Some(Time(Timestamp::from_second(1).unwrap())),
            ..ManagedFieldsEntry::default()
        }]);
        n.spec = Some(NodeSpec {
            unschedulable: Some(unschedulable),
            taints: Some(
                taints
                    .iter()
                    .map(|k| K8sTaint {
                        key: (*k).into(),
                        effect: "NoSchedule".into(),
                        ..K8sTaint::default()
                    })
                    .collect(),
            ),
            ..NodeSpec::default()
        });
        n
    }

    const OURS: &[(&str, &str)] = &[
        (CORDONED_BY_ANNOTATION, CORDONED_BY_VALUE),
        (TIMESTAMP_ANNOTATION, "2024-05-01T09:00:00Z"),
    ];

    #[test]
    fn cordon_marks_and_takes_the_resource_version() {
        let patch = decide(MarkOp::Cordon(at()), &node(false, "kubelet", &[], &[])).unwrap();
        assert_eq!(patch["metadata"]["resourceVersion"], "42");
        assert_eq!(patch["spec"]["unschedulable"], true);
        assert_eq!(
            patch["metadata"]["annotations"][CORDONED_BY_ANNOTATION],
            "kubescaler"
        );
        assert_eq!(
            patch["metadata"]["annotations"][TIMESTAMP_ANNOTATION],
            "2024-05-01T10:00:00Z"
        );
    }

    #[test]
    fn a_node_a_person_cordoned_is_never_uncordoned_or_fenced() {
        let theirs = node(true, "kubectl-cordon", OURS, &[]);
        assert!(decide(MarkOp::Uncordon, &theirs).is_err());
        assert!(decide(MarkOp::Fence(at()), &theirs).is_err());
        // And a cordon races a person's: the live node is cordoned already, nothing is written.
        assert!(decide(MarkOp::Cordon(at()), &theirs).is_err());
    }

    #[test]
    fn uncordon_leaves_no_mark_of_kubescalers_behind() {
        let ours = node(true, "kubescaler", OURS, &["dedicated", FENCE_TAINT]);
        let patch = decide(MarkOp::Uncordon, &ours).unwrap();
        assert_eq!(patch["spec"]["unschedulable"], false);
        for key in KUBESCALER_ANNOTATIONS {
            assert_eq!(patch["metadata"]["annotations"][*key], Value::Null, "{key}");
        }
        let taints: Vec<&str> = patch["spec"]["taints"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t["key"].as_str().unwrap())
            .collect();
        assert_eq!(taints, vec!["dedicated"]);
    }

    #[test]
    fn marks_on_a_schedulable_node_are_cleared_but_a_cordoned_nodes_are_not_touched() {
        let uncordoned = node(false, "kubectl-cordon", OURS, &[FENCE_TAINT]);
        let patch = decide(MarkOp::ClearStale, &uncordoned).unwrap();
        assert_eq!(patch["spec"]["taints"], json!([]));
        assert!(patch["spec"].get("unschedulable").is_none());
        assert!(decide(MarkOp::ClearStale, &node(true, "kubectl-cordon", OURS, &[])).is_err());
    }

    #[test]
    fn fence_adds_kubescalers_taint_once_and_release_lifts_it() {
        let ours = node(true, "kubescaler", OURS, &["dedicated"]);
        let patch = decide(MarkOp::Fence(at()), &ours).unwrap();
        assert_eq!(
            patch["spec"]["taints"],
            json!([
                {"key": "dedicated", "effect": "NoSchedule"},
                {"key": FENCE_TAINT, "effect": "NoSchedule"}
            ])
        );
        let fenced = node(true, "kubescaler", OURS, &["dedicated", FENCE_TAINT]);
        let patch = decide(MarkOp::Fence(at()), &fenced).unwrap();
        assert_eq!(patch["spec"]["taints"].as_array().unwrap().len(), 2);
        let released = decide(MarkOp::Release, &fenced).unwrap();
        assert_eq!(
            released["spec"]["taints"],
            json!([{"key": "dedicated", "effect": "NoSchedule"}])
        );
        // Still cordoned by kubescaler: the cordon marks stay.
        assert!(released["metadata"]["annotations"]
            .get(CORDONED_BY_ANNOTATION)
            .is_none());
    }
}
