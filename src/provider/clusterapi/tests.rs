//! Unit tests of the driver's decisions (the I/O is tested end to end on the real control
//! plane with Cluster API's CRDs, in tests/e2e_clusterapi.rs).

use serde_json::json;

use super::group::*;
use super::settings::GroupKind;
use crate::model::InstanceStatus;

fn facts(name: &str, deleting: bool, marked: bool, set: &str) -> MachineFacts {
    MachineFacts {
        name: name.into(),
        deleting,
        marked,
        set: Some(set.into()),
    }
}

#[test]
fn a_lower_count_is_sent_only_when_it_removes_exactly_the_marked_machine() {
    let md = GroupKind::MachineDeployment;
    // Three Machines, m2 marked: replicas 3 -> 2 leaves CAPI nothing to choose.
    let three = [
        facts("m1", false, false, "s"),
        facts("m2", false, true, "s"),
        facts("m3", false, false, "s"),
    ];
    assert_eq!(check_lowering("m2", 3, &three, md), Ok(()));
    // A scale-down already pending (replicas 2 with three live Machines): lowering to 1 would
    // make CAPI pick a second victim by its own order.
    let err = check_lowering("m2", 2, &three, md).unwrap_err();
    assert!(err.contains("choose"), "{err}");
    // Replicas above the Machines (a grow not yet served): lowering would cancel a pending
    // Machine and leave m2 marked.
    let err = check_lowering("m2", 4, &three, md).unwrap_err();
    assert!(err.contains("still creating"), "{err}");
    // The victim must carry the mark and not be going already.
    let unmarked = [
        facts("m1", false, false, "s"),
        facts("m2", false, false, "s"),
    ];
    assert!(check_lowering("m2", 2, &unmarked, md).is_err());
    let going = [facts("m1", false, false, "s"), facts("m2", true, true, "s")];
    assert!(check_lowering("m2", 2, &going, md).is_err());
    assert!(check_lowering("gone", 2, &unmarked, md).is_err());
}

#[test]
fn successive_deletions_in_one_pass_each_lower_by_one_and_a_stale_mark_stops_them() {
    let md = GroupKind::MachineDeployment;
    // m1 was marked and replicas lowered 4 -> 3 (CAPI has not acted yet); now m2: 3 -> 2.
    let pending = [
        facts("m1", false, true, "s"),
        facts("m2", false, true, "s"),
        facts("m3", false, false, "s"),
        facts("m4", false, false, "s"),
    ];
    assert_eq!(check_lowering("m2", 3, &pending, md), Ok(()));
    // The same once CAPI is deleting m1.
    let acting = [
        facts("m1", true, true, "s"),
        facts("m2", false, true, "s"),
        facts("m3", false, false, "s"),
        facts("m4", false, false, "s"),
    ];
    assert_eq!(check_lowering("m2", 3, &acting, md), Ok(()));
    // m1 marked but its count never lowered (a failed deletion whose mark stayed): replicas
    // are still 4. Lowering for m2 would take m1 too: refused, naming m1.
    let err = check_lowering("m2", 4, &pending, md).unwrap_err();
    assert!(err.contains("m1"), "{err}");
}

#[test]
fn a_machine_deployment_in_a_rollout_is_not_lowered() {
    let spread = [
        facts("m1", false, false, "old"),
        facts("m2", false, true, "new"),
        facts("m3", false, false, "new"),
    ];
    let err = check_lowering("m2", 3, &spread, GroupKind::MachineDeployment).unwrap_err();
    assert!(err.contains("rollout"), "{err}");
    // A MachineSet has one set by definition.
    assert_eq!(
        check_lowering("m2", 3, &spread, GroupKind::MachineSet),
        Ok(())
    );
}

#[test]
fn a_group_cluster_autoscaler_manages_is_refused_and_names_the_annotation() {
    let group = json!({"metadata": {"annotations": {
        "cluster.x-k8s.io/cluster-api-autoscaler-node-group-max-size": "10"}},
        "spec": {"clusterName": "c"}});
    match check_group(GroupKind::MachineDeployment, "ns/md", &group, "c") {
        Err(GroupProblem::Refused(why)) => {
            assert!(why.contains("node-group-max-size"), "{why}");
            assert!(why.contains("cluster-autoscaler"), "{why}");
        }
        other => panic!("not refused: {other:?}"),
    }
}

#[test]
fn a_group_of_another_cluster_or_a_machine_set_run_by_a_deployment_is_not_managed() {
    let other = json!({"metadata": {}, "spec": {"clusterName": "other"}});
    assert!(matches!(
        check_group(GroupKind::MachineDeployment, "ns/md", &other, "c"),
        Err(GroupProblem::Config(_))
    ));
    let owned = json!({"metadata": {"ownerReferences": [
        {"kind": "MachineDeployment", "name": "md", "controller": true}]},
        "spec": {"clusterName": "c"}});
    assert!(matches!(
        check_group(GroupKind::MachineSet, "ns/ms", &owned, "c"),
        Err(GroupProblem::Refused(w)) if w.contains("MachineDeployment md")
    ));
    let fine = json!({"metadata": {}, "spec": {"clusterName": "c"}});
    assert_eq!(
        check_group(GroupKind::MachineSet, "ns/ms", &fine, "c"),
        Ok(())
    );
}

#[test]
fn scale_from_zero_reads_the_capacity_annotations() {
    let group = |annotations: serde_json::Value| json!({"metadata": {"annotations": annotations}});
    let t = template(&group(json!({
        CAPACITY_CPU_ANNOTATION: "8", CAPACITY_MEMORY_ANNOTATION: "32Gi",
        CAPACITY_PODS_ANNOTATION: "60"})))
    .unwrap()
    .unwrap();
    assert_eq!(t.allocatable.cpu_millis, 8000);
    assert_eq!(t.allocatable.memory_bytes, 32 << 30);
    assert_eq!(t.pods, 60);
    let default_pods = template(&group(json!({
        CAPACITY_CPU_ANNOTATION: "500m", CAPACITY_MEMORY_ANNOTATION: "1G"})))
    .unwrap()
    .unwrap();
    assert_eq!(default_pods.pods, DEFAULT_MAX_PODS);
    assert_eq!(template(&group(json!({}))), Ok(None));
}

#[test]
fn a_bad_capacity_annotation_names_the_annotation_its_value_and_what_is_allowed() {
    let group = |annotations: serde_json::Value| json!({"metadata": {"annotations": annotations}});
    let err = template(&group(json!({
        CAPACITY_CPU_ANNOTATION: "eight", CAPACITY_MEMORY_ANNOTATION: "32Gi"})))
    .unwrap_err();
    assert!(
        err.contains(CAPACITY_CPU_ANNOTATION) && err.contains("\"eight\""),
        "{err}"
    );
    let err = template(&group(json!({CAPACITY_CPU_ANNOTATION: "8"}))).unwrap_err();
    assert!(err.contains(CAPACITY_MEMORY_ANNOTATION), "{err}");
    let err = template(&group(json!({
        CAPACITY_CPU_ANNOTATION: "8", CAPACITY_MEMORY_ANNOTATION: "32Gi",
        CAPACITY_PODS_ANNOTATION: "-1"})))
    .unwrap_err();
    assert!(err.contains("maxPods") && err.contains("\"-1\""), "{err}");
}

#[test]
fn machines_map_to_instances_by_phase_and_deletion() {
    let machine = |phase: &str, deleting: bool| {
        let mut m = json!({
            "metadata": {"name": "m1", "creationTimestamp": "2026-12-04T10:00:00Z"},
            "spec": {"providerID": "capi://1"},
            "status": {"phase": phase, "nodeRef": {"name": "node-1"}},
        });
        if deleting {
            m["metadata"]["deletionTimestamp"] = json!("2026-12-04T11:00:00Z");
        }
        m
    };
    let running = cloud_node(&machine("Running", false));
    assert_eq!(running.id, "m1");
    assert_eq!(running.name, "node-1");
    assert_eq!(running.provider_id.as_deref(), Some("capi://1"));
    assert_eq!(running.status, InstanceStatus::Running);
    assert!(running.created.is_some());
    assert_eq!(
        cloud_node(&machine("Provisioning", false)).status,
        InstanceStatus::Creating
    );
    assert_eq!(
        cloud_node(&machine("Running", true)).status,
        InstanceStatus::Deleting
    );
    assert_eq!(
        cloud_node(&machine("Failed", false)).status,
        InstanceStatus::Unknown
    );
}

#[test]
fn a_node_finds_its_machine_by_provider_id_else_its_machine_annotation_and_never_guesses() {
    let m = |id: &str, node: &str, pid: Option<&str>| crate::model::CloudNode {
        id: id.into(),
        name: node.into(),
        status: InstanceStatus::Running,
        state: "Running".into(),
        provider_id: pid.map(str::to_string),
        created: None,
    };
    let machines = [m("m1", "n1", Some("p://1")), m("m2", "", None)];
    let found = |node: &str, pid: Option<&str>, ann: Option<&str>| {
        find_machine(node, pid, ann, &machines).map(|m| m.map(|m| m.id))
    };
    assert_eq!(found("n1", Some("p://1"), None), Ok(Some("m1".into())));
    // No providerID on the Machine yet: the node's annotation names it.
    assert_eq!(found("n2", None, Some("m2")), Ok(Some("m2".into())));
    // CAPI's nodeRef alone.
    assert_eq!(found("n1", None, None), Ok(Some("m1".into())));
    assert_eq!(found("n9", Some("p://9"), None), Ok(None));
    // The annotation and the providerID disagree: an error, not a pick.
    assert!(found("n1", Some("p://1"), Some("m2")).is_err());
    // The annotation names a Machine that has another node's providerID.
    assert!(found("n3", Some("p://3"), Some("m1")).is_err());
}
