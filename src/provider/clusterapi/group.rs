//! What the driver decides from what it read, without I/O: the node group's checks, its
//! Machines as cloud instances, the scale-from-zero template, and the rule that makes a
//! lower replica count remove exactly the marked Machine.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::Value;

use super::settings::GroupKind;
use crate::model::{CloudNode, InstanceStatus, NodeCapacity, Resources};
use crate::quantity::{parse_cpu_millis, parse_memory_bytes};

/// Cluster API's annotation on a Machine that its MachineSet must delete first when replicas
/// drop (ranked below only the Machines already being deleted).
pub const DELETE_MACHINE_ANNOTATION: &str = "cluster.x-k8s.io/delete-machine";
/// The annotation CAPI puts on a Node: the name of its Machine.
pub const NODE_MACHINE_ANNOTATION: &str = "cluster.x-k8s.io/machine";
/// cluster-autoscaler's size annotations: a group carrying either is cluster-autoscaler's.
pub const AUTOSCALER_SIZE_ANNOTATIONS: [&str; 2] = [
    "cluster.x-k8s.io/cluster-api-autoscaler-node-group-min-size",
    "cluster.x-k8s.io/cluster-api-autoscaler-node-group-max-size",
];
/// Capacity annotations of a group (cluster-autoscaler's convention), for scale from zero.
pub const CAPACITY_CPU_ANNOTATION: &str = "capacity.cluster-autoscaler.kubernetes.io/cpu";
/// See [`CAPACITY_CPU_ANNOTATION`].
pub const CAPACITY_MEMORY_ANNOTATION: &str = "capacity.cluster-autoscaler.kubernetes.io/memory";
/// See [`CAPACITY_CPU_ANNOTATION`].
pub const CAPACITY_PODS_ANNOTATION: &str = "capacity.cluster-autoscaler.kubernetes.io/maxPods";
/// The pods a node takes when `maxPods` is not annotated (the kubelet's default).
pub const DEFAULT_MAX_PODS: u32 = 110;
/// The label naming a Machine's MachineSet.
pub const SET_NAME_LABEL: &str = "cluster.x-k8s.io/set-name";

/// Why the driver will not manage a group, or how the group contradicts the configuration.
#[derive(Debug, PartialEq, Eq)]
pub enum GroupProblem {
    /// Another controller owns the group's size: never manage it.
    Refused(String),
    /// The configuration names something else than what is there.
    Config(String),
}

/// The checks every read of the group makes: not cluster-autoscaler's, of the configured
/// cluster, and (a MachineSet) not driven by a MachineDeployment.
pub fn check_group(
    kind: GroupKind,
    id: &str,
    group: &Value,
    cluster_name: &str,
) -> Result<(), GroupProblem> {
    let annotations = &group["metadata"]["annotations"];
    let claimed: Vec<&str> = AUTOSCALER_SIZE_ANNOTATIONS
        .into_iter()
        .filter(|key| annotations.get(*key).is_some())
        .collect();
    if !claimed.is_empty() {
        return Err(GroupProblem::Refused(format!(
            "{} {id} carries cluster-autoscaler's annotation {}: cluster-autoscaler manages its \
             size, and two autoscalers on one group fight; remove the annotation or let \
             kubescaler manage another group",
            kind.as_str(),
            claimed.join(" and ")
        )));
    }
    let spec_cluster = group["spec"]["clusterName"].as_str().unwrap_or_default();
    if !spec_cluster.is_empty() && spec_cluster != cluster_name {
        return Err(GroupProblem::Config(format!(
            "cluster-name is {cluster_name:?} but {} {id} belongs to cluster {spec_cluster:?}",
            kind.as_str()
        )));
    }
    if kind == GroupKind::MachineSet {
        let owners = group["metadata"]["ownerReferences"].as_array();
        if let Some(owner) = owners.into_iter().flatten().find(|o| {
            o["kind"] == "MachineDeployment" && o["controller"].as_bool().unwrap_or(false)
        }) {
            return Err(GroupProblem::Refused(format!(
                "MachineSet {id} is run by MachineDeployment {}, which sets its replicas: \
                 set clusterapi-node-group-kind to MachineDeployment and node-pool-name to it",
                owner["name"].as_str().unwrap_or("?")
            )));
        }
    }
    Ok(())
}

/// A new node's capacity from the group's capacity annotations: `None` without any; an error
/// naming the annotation, its value and what is allowed when one is unusable or only part of
/// cpu and memory is given.
pub fn template(group: &Value) -> Result<Option<NodeCapacity>, String> {
    let annotations = &group["metadata"]["annotations"];
    let text = |key: &str| annotations.get(key).and_then(Value::as_str).map(str::trim);
    let (cpu, memory, pods) = (
        text(CAPACITY_CPU_ANNOTATION),
        text(CAPACITY_MEMORY_ANNOTATION),
        text(CAPACITY_PODS_ANNOTATION),
    );
    let (cpu, memory) = match (cpu, memory) {
        (None, None) => return Ok(None),
        (Some(cpu), Some(memory)) => (cpu, memory),
        (Some(_), None) | (None, Some(_)) => {
            return Err(format!(
                "annotations {CAPACITY_CPU_ANNOTATION} and {CAPACITY_MEMORY_ANNOTATION} go \
                 together: a new node's size needs both"
            ))
        }
    };
    let cpu_millis = parse_cpu_millis(cpu)
        .ok()
        .filter(|m| *m > 0)
        .ok_or_else(|| {
            format!(
                "annotation {CAPACITY_CPU_ANNOTATION} {cpu:?} is not a cpu quantity above zero \
             (e.g. 8 or 7500m)"
            )
        })?;
    let memory_bytes = parse_memory_bytes(memory)
        .ok()
        .filter(|b| *b > 0)
        .ok_or_else(|| {
            format!(
                "annotation {CAPACITY_MEMORY_ANNOTATION} {memory:?} is not a memory quantity above \
             zero (e.g. 32Gi)"
            )
        })?;
    let pods = match pods {
        None => DEFAULT_MAX_PODS,
        Some(p) => p.parse::<u32>().ok().filter(|p| *p > 0).ok_or_else(|| {
            format!("annotation {CAPACITY_PODS_ANNOTATION} {p:?} is not a whole number above zero")
        })?,
    };
    Ok(Some(NodeCapacity {
        allocatable: Resources {
            cpu_millis,
            memory_bytes,
        },
        pods,
    }))
}

/// What the deletion rule needs of one Machine of the group.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MachineFacts {
    /// The Machine's name.
    pub name: String,
    /// Being deleted already (`deletionTimestamp` set).
    pub deleting: bool,
    /// Carries [`DELETE_MACHINE_ANNOTATION`].
    pub marked: bool,
    /// Its MachineSet (`cluster.x-k8s.io/set-name`), where labelled.
    pub set: Option<String>,
}

impl MachineFacts {
    /// The facts of a Machine object.
    pub fn of(machine: &Value) -> MachineFacts {
        let meta = &machine["metadata"];
        MachineFacts {
            name: meta["name"].as_str().unwrap_or_default().to_string(),
            deleting: meta.get("deletionTimestamp").is_some_and(|t| !t.is_null()),
            marked: meta["annotations"]
                .get(DELETE_MACHINE_ANNOTATION)
                .is_some_and(|v| !v.is_null()),
            set: meta["labels"][SET_NAME_LABEL].as_str().map(str::to_string),
        }
    }
}

/// Whether lowering the group's replicas from `replicas` to `replicas - 1`, with `victim`
/// marked, makes Cluster API remove exactly the marked Machines and choose none itself.
///
/// CAPI's MachineSet deletes (its Machines, those being deleted included) minus replicas,
/// taking those being deleted first, then the marked ones, and only then a victim by its own
/// deletion order. So the new count must equal the live Machines that carry no mark: one more
/// and a mark is left unserved (a Machine still being created, or a mark not yet paid for by
/// an earlier lowering, such as one a failed deletion left); one fewer and CAPI picks a
/// victim. In a MachineDeployment all live Machines must be in one MachineSet: in a rollout
/// the replicas are spread over sets that the marks do not steer.
pub fn check_lowering(
    victim: &str,
    replicas: u32,
    machines: &[MachineFacts],
    kind: GroupKind,
) -> Result<(), String> {
    let Some(target) = machines.iter().find(|m| m.name == victim) else {
        return Err(format!("Machine {victim} is no longer in the group"));
    };
    if target.deleting {
        return Err(format!("Machine {victim} is being deleted already"));
    }
    if !target.marked {
        return Err(format!(
            "Machine {victim} lost its {DELETE_MACHINE_ANNOTATION} mark"
        ));
    }
    if replicas == 0 {
        return Err("the group's replicas are 0 already".into());
    }
    let live: Vec<&MachineFacts> = machines.iter().filter(|m| !m.deleting).collect();
    let unmarked = live.iter().filter(|m| !m.marked).count();
    let new = replicas - 1;
    if unmarked != new as usize {
        let marked: Vec<&str> = live
            .iter()
            .filter(|m| m.marked && m.name != victim)
            .map(|m| m.name.as_str())
            .collect();
        let why = if (unmarked as u64) > u64::from(new) {
            format!(
                "{} live Machines carry no mark but replicas would be {new}: Cluster API would \
                 choose {} victim(s) itself (a scale-down is already pending)",
                unmarked,
                unmarked as u64 - u64::from(new)
            )
        } else if marked.is_empty() {
            format!(
                "replicas would be {new} but only {unmarked} live Machines carry no mark: the \
                 group is still creating Machines (or replacing one deleted without a lower \
                 count), so a lower count would cancel one of those instead of removing \
                 {victim}"
            )
        } else {
            format!(
                "replicas would be {new} but only {unmarked} live Machines carry no mark: \
                 Machines {} are marked {DELETE_MACHINE_ANNOTATION} without a lowered count \
                 (a failed deletion's mark?); remove the mark by hand if they should stay",
                marked.join(", ")
            )
        };
        return Err(why);
    }
    if kind == GroupKind::MachineDeployment {
        let sets: BTreeSet<&str> = live.iter().filter_map(|m| m.set.as_deref()).collect();
        if sets.len() > 1 {
            return Err(format!(
                "the MachineDeployment's live Machines are in {} MachineSets ({}): a rollout is \
                 under way, and Cluster API spreads a lower count over them regardless of marks",
                sets.len(),
                sets.into_iter().collect::<Vec<_>>().join(", ")
            ));
        }
    }
    Ok(())
}

/// A Machine as a cloud instance: its name is the id, the node it registered as (from
/// `status.nodeRef`) the name, its phase the status.
pub fn cloud_node(machine: &Value) -> CloudNode {
    let meta = &machine["metadata"];
    let phase = machine["status"]["phase"].as_str().unwrap_or_default();
    let deleting = meta.get("deletionTimestamp").is_some_and(|t| !t.is_null());
    let status = if deleting {
        InstanceStatus::Deleting
    } else {
        match phase {
            "" | "Pending" | "Provisioning" => InstanceStatus::Creating,
            "Provisioned" | "Running" | "Updating" => InstanceStatus::Running,
            "Deleting" | "Deleted" => InstanceStatus::Deleting,
            _ => InstanceStatus::Unknown,
        }
    };
    CloudNode {
        id: meta["name"].as_str().unwrap_or_default().to_string(),
        name: machine["status"]["nodeRef"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_string(),
        status,
        state: if deleting {
            "Deleting".to_string()
        } else if phase.is_empty() {
            "Pending".to_string()
        } else {
            phase.to_string()
        },
        provider_id: machine["spec"]["providerID"]
            .as_str()
            .filter(|p| !p.is_empty())
            .map(str::to_string),
        created: meta["creationTimestamp"]
            .as_str()
            .and_then(|t| t.parse().ok()),
    }
}

/// The Machine of a node: by `spec.providerID`; else by the node's
/// [`NODE_MACHINE_ANNOTATION`]; else by the node CAPI recorded in `status.nodeRef`. `Err` when
/// two of these name different Machines (never guess).
pub fn find_machine(
    node_name: &str,
    provider_id: Option<&str>,
    machine_annotation: Option<&str>,
    machines: &[CloudNode],
) -> Result<Option<CloudNode>, String> {
    let by_id = provider_id.filter(|p| !p.is_empty()).and_then(|p| {
        machines
            .iter()
            .find(|m| m.provider_id.as_deref() == Some(p))
    });
    let by_annotation = machine_annotation
        .filter(|a| !a.is_empty())
        .and_then(|a| machines.iter().find(|m| m.id == a));
    let by_node_ref = machines
        .iter()
        .find(|m| !node_name.is_empty() && m.name == node_name);
    let found: BTreeMap<&str, &CloudNode> = [by_id, by_annotation, by_node_ref]
        .into_iter()
        .flatten()
        .map(|m| (m.id.as_str(), m))
        .collect();
    if found.len() > 1 {
        return Err(format!(
            "node {node_name} maps to Machines {} (by providerID, {NODE_MACHINE_ANNOTATION} and \
             nodeRef)",
            found.keys().copied().collect::<Vec<_>>().join(" and ")
        ));
    }
    let Some(machine) = found.into_values().next() else {
        return Ok(None);
    };
    // A Machine whose providerID is another node's is not this node's, whatever else says so.
    if let (Some(node_id), Some(machine_id)) = (
        provider_id.filter(|p| !p.is_empty()),
        machine.provider_id.as_deref(),
    ) {
        if node_id != machine_id {
            return Err(format!(
                "node {node_name} has providerID {node_id} but its Machine {} has {machine_id}",
                machine.id
            ));
        }
    }
    Ok(Some(machine.clone()))
}
