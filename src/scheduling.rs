//! The scheduler's accounting, restated: a pod's effective request and how many copies of the
//! server pod fit a node. It must agree with kube-scheduler (component-helpers
//! `resource.PodRequests`, NodeResourcesFit, NodeUnschedulable, TaintToleration); the end-to-end
//! oracle test checks it against the real scheduler.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Container, PodSpec};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;

use crate::model::{Resources, Taint, TaintEffect, Toleration};
use crate::quantity::{parse_cpu_millis, parse_memory_bytes};

/// Reads cpu and memory out of a resource list. The API server validated these quantities, so
/// an unparsable one cannot occur on a real pod; it counts as zero rather than failing a pass.
fn resource_list(list: Option<&BTreeMap<String, Quantity>>) -> Resources {
    let Some(list) = list else {
        return Resources::default();
    };
    Resources {
        cpu_millis: list
            .get("cpu")
            .and_then(|q| parse_cpu_millis(&q.0).ok())
            .unwrap_or(0),
        memory_bytes: list
            .get("memory")
            .and_then(|q| parse_memory_bytes(&q.0).ok())
            .unwrap_or(0),
    }
}

fn container_requests(c: &Container) -> Resources {
    resource_list(c.resources.as_ref().and_then(|r| r.requests.as_ref()))
}

/// A pod's effective request as kube-scheduler computes it:
/// `max(apps + sidecars, init peak) + overhead`, with pod-level requests replacing the
/// container aggregate for the resources they name.
pub fn pod_requests(spec: &PodSpec) -> Resources {
    let mut apps = spec
        .containers
        .iter()
        .map(container_requests)
        .fold(Resources::default(), Resources::saturating_add);

    let mut sidecars = Resources::default();
    let mut init_peak = Resources::default();
    for init in spec.init_containers.iter().flatten() {
        let req = container_requests(init);
        if init.restart_policy.as_deref() == Some("Always") {
            // A sidecar keeps running next to the app containers.
            apps = apps.saturating_add(req);
            sidecars = sidecars.saturating_add(req);
            init_peak = init_peak.max(sidecars);
        } else {
            // An ordinary init container runs alone beside the sidecars started before it.
            init_peak = init_peak.max(req.saturating_add(sidecars));
        }
    }
    let mut effective = apps.max(init_peak);

    if let Some(pod_level) = spec.resources.as_ref().and_then(|r| r.requests.as_ref()) {
        let named = resource_list(Some(pod_level));
        if pod_level.contains_key("cpu") {
            effective.cpu_millis = named.cpu_millis;
        }
        if pod_level.contains_key("memory") {
            effective.memory_bytes = named.memory_bytes;
        }
    }
    effective.saturating_add(resource_list(spec.overhead.as_ref()))
}

/// Whether a pod with `tolerations` may be scheduled onto a node with `taints`: every
/// NoSchedule and NoExecute taint must be tolerated.
pub fn tolerates_all(tolerations: &[Toleration], taints: &[Taint]) -> bool {
    taints
        .iter()
        .filter(|t| t.effect != TaintEffect::PreferNoSchedule)
        .all(|t| tolerations.iter().any(|tol| tol.tolerates(t)))
}

/// How many copies of a pod requesting `slot` fit at once in `free` resources and `free_pods`
/// pod places. A zero request for a resource does not constrain it; the CPU request is
/// validated to be positive, so at least one resource always does.
pub fn slots_in(free: Resources, free_pods: u32, slot: Resources) -> u32 {
    let by = |free: u64, need: u64| free.checked_div(need).unwrap_or(u64::MAX);
    let fit = by(free.cpu_millis, slot.cpu_millis).min(by(free.memory_bytes, slot.memory_bytes));
    fit.min(u64::from(free_pods)) as u32
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::ResourceRequirements;

    fn reqs(cpu: &str, mem: &str) -> Option<ResourceRequirements> {
        let mut m = BTreeMap::new();
        if !cpu.is_empty() {
            m.insert("cpu".to_string(), Quantity(cpu.to_string()));
        }
        if !mem.is_empty() {
            m.insert("memory".to_string(), Quantity(mem.to_string()));
        }
        Some(ResourceRequirements {
            requests: Some(m),
            ..Default::default()
        })
    }

    fn container(cpu: &str, mem: &str, sidecar: bool) -> Container {
        Container {
            name: "c".into(),
            resources: reqs(cpu, mem),
            restart_policy: sidecar.then(|| "Always".to_string()),
            ..Default::default()
        }
    }

    fn r(cpu: u64, mem: u64) -> Resources {
        Resources {
            cpu_millis: cpu,
            memory_bytes: mem,
        }
    }

    #[test]
    fn app_containers_requests_are_summed() {
        let spec = PodSpec {
            containers: vec![
                container("500m", "1Gi", false),
                container("250m", "", false),
            ],
            ..Default::default()
        };
        assert_eq!(pod_requests(&spec), r(750, 1 << 30));
    }

    #[test]
    fn limits_without_requests_do_not_count_defect_1() {
        // Defect 1: the Go version summed limits. The scheduler uses requests only (the API
        // server copies a lone limit into the request, so a pod read back carries it there).
        let spec = PodSpec {
            containers: vec![Container {
                name: "c".into(),
                resources: Some(ResourceRequirements {
                    limits: Some(BTreeMap::from([(
                        "cpu".to_string(),
                        Quantity("4".to_string()),
                    )])),
                    requests: Some(BTreeMap::from([(
                        "cpu".to_string(),
                        Quantity("1".to_string()),
                    )])),
                    ..Default::default()
                }),
                ..Default::default()
            }],
            ..Default::default()
        };
        assert_eq!(pod_requests(&spec).cpu_millis, 1000);
    }

    #[test]
    fn init_container_peak_beats_smaller_apps() {
        let spec = PodSpec {
            containers: vec![container("200m", "", false)],
            init_containers: Some(vec![container("1", "", false)]),
            ..Default::default()
        };
        assert_eq!(pod_requests(&spec).cpu_millis, 1000);
    }

    #[test]
    fn sidecars_add_to_apps_and_to_later_init_containers() {
        // sidecar 100m, then init 500m (runs beside the sidecar: 600m), app 300m (+100m sidecar).
        let spec = PodSpec {
            containers: vec![container("300m", "", false)],
            init_containers: Some(vec![
                container("100m", "", true),
                container("500m", "", false),
            ]),
            ..Default::default()
        };
        assert_eq!(pod_requests(&spec).cpu_millis, 600);
        // An init container before the sidecar does not see it.
        let spec = PodSpec {
            containers: vec![container("300m", "", false)],
            init_containers: Some(vec![
                container("500m", "", false),
                container("100m", "", true),
            ]),
            ..Default::default()
        };
        assert_eq!(pod_requests(&spec).cpu_millis, 500);
    }

    #[test]
    fn overhead_is_added_after_the_max() {
        let spec = PodSpec {
            containers: vec![container("1", "", false)],
            overhead: Some(BTreeMap::from([(
                "cpu".to_string(),
                Quantity("250m".to_string()),
            )])),
            ..Default::default()
        };
        assert_eq!(pod_requests(&spec).cpu_millis, 1250);
    }

    #[test]
    fn pod_level_requests_replace_only_the_resources_they_name() {
        let spec = PodSpec {
            containers: vec![container("1", "1Gi", false)],
            resources: reqs("2", ""),
            ..Default::default()
        };
        assert_eq!(pod_requests(&spec), r(2000, 1 << 30));
    }

    #[test]
    fn untolerated_noschedule_taint_blocks_but_prefer_does_not() {
        let taint = |effect| Taint {
            key: "dedicated".into(),
            value: "games".into(),
            effect,
        };
        assert!(!tolerates_all(&[], &[taint(TaintEffect::NoSchedule)]));
        assert!(!tolerates_all(&[], &[taint(TaintEffect::NoExecute)]));
        assert!(tolerates_all(&[], &[taint(TaintEffect::PreferNoSchedule)]));
        let tol: Toleration = "dedicated=games:NoSchedule".parse().unwrap();
        assert!(tolerates_all(
            std::slice::from_ref(&tol),
            &[taint(TaintEffect::NoSchedule)]
        ));
        assert!(!tolerates_all(&[tol], &[taint(TaintEffect::NoExecute)]));
        let any: Toleration = "*".parse().unwrap();
        assert!(tolerates_all(&[any], &[taint(TaintEffect::NoExecute)]));
    }

    #[test]
    fn a_slot_needs_a_whole_server_in_every_resource_and_a_pod_place() {
        assert_eq!(slots_in(r(3999, 0), 110, r(1000, 0)), 3);
        assert_eq!(slots_in(r(4000, 3 << 30), 110, r(1000, 1 << 30)), 3);
        assert_eq!(slots_in(r(4000, 8 << 30), 2, r(1000, 1 << 30)), 2);
        assert_eq!(slots_in(r(999, 8 << 30), 110, r(1000, 1 << 30)), 0);
    }
}
