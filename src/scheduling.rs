//! The scheduler's accounting, restated: a pod's effective request and how many copies of the
//! server pod fit a node. It must agree with kube-scheduler (component-helpers
//! `resource.PodRequests`, NodeResourcesFit, NodeUnschedulable, TaintToleration); the end-to-end
//! oracle test checks it against the real scheduler.

use std::collections::{BTreeMap, HashMap};

use k8s_openapi::api::core::v1::{Container, ContainerStatus, PodSpec, PodStatus};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;

use crate::model::{Resources, Taint, TaintEffect, Toleration};
use crate::quantity::{parse_cpu_millis, parse_quantity_to};

/// A request while it is being summed: memory in millibytes, so that fractional byte requests
/// add up exactly and round once per pod, as the scheduler's `Quantity` sum does.
#[derive(Clone, Copy, Default)]
struct Exact {
    cpu_millis: u64,
    memory_millibytes: u64,
}

impl Exact {
    fn add(self, o: Exact) -> Exact {
        Exact {
            cpu_millis: self.cpu_millis.saturating_add(o.cpu_millis),
            memory_millibytes: self.memory_millibytes.saturating_add(o.memory_millibytes),
        }
    }
    fn max(self, o: Exact) -> Exact {
        Exact {
            cpu_millis: self.cpu_millis.max(o.cpu_millis),
            memory_millibytes: self.memory_millibytes.max(o.memory_millibytes),
        }
    }
    fn rounded(self) -> Resources {
        Resources {
            cpu_millis: self.cpu_millis,
            memory_bytes: self.memory_millibytes.div_ceil(1000),
        }
    }
}

/// Reads cpu and memory out of a resource list. The API server validated these quantities, so
/// an unparsable one cannot occur on a real pod; it counts as zero rather than failing a pass.
/// (CPU needs no exact sum: the API server keeps CPU requests to whole millicores.)
fn resource_list(list: Option<&BTreeMap<String, Quantity>>) -> Exact {
    let Some(list) = list else {
        return Exact::default();
    };
    Exact {
        cpu_millis: list
            .get("cpu")
            .and_then(|q| parse_cpu_millis(&q.0).ok())
            .unwrap_or(0),
        memory_millibytes: list
            .get("memory")
            .and_then(|q| parse_quantity_to(&q.0, 3).ok())
            .unwrap_or(0),
    }
}

/// The request of one running container, as the scheduler counts it with in-place resize: the
/// larger of what the spec asks and what the kubelet reports allocated and actuated; for a
/// resize found infeasible, only what it actually runs with.
fn container_requests(
    c: &Container,
    statuses: &HashMap<&str, &ContainerStatus>,
    resize_infeasible: bool,
) -> Exact {
    let spec = resource_list(c.resources.as_ref().and_then(|r| r.requests.as_ref()));
    let Some(status) = statuses.get(c.name.as_str()) else {
        return spec;
    };
    let Some(actual) = status.resources.as_ref() else {
        return spec;
    };
    let running = resource_list(actual.requests.as_ref())
        .max(resource_list(status.allocated_resources.as_ref()));
    if resize_infeasible {
        running
    } else {
        spec.max(running)
    }
}

/// Whether the pod's resize was found infeasible (`PodResizePending` with reason Infeasible, or
/// the older `status.resize`).
fn resize_infeasible(status: &PodStatus) -> bool {
    status.resize.as_deref() == Some("Infeasible")
        || status.conditions.iter().flatten().any(|c| {
            c.type_ == "PodResizePending"
                && c.status == "True"
                && c.reason.as_deref() == Some("Infeasible")
        })
}

/// A pod's effective request as kube-scheduler computes it:
/// `max(apps + sidecars, init peak) + overhead`, with pod-level requests replacing the
/// container aggregate for the resources they name, running containers counted with their
/// in-place resize status, and fractional memory rounded up once for the whole pod.
pub fn pod_requests(spec: &PodSpec, status: Option<&PodStatus>) -> Resources {
    let statuses: HashMap<&str, &ContainerStatus> = status
        .into_iter()
        .flat_map(|s| {
            s.container_statuses
                .iter()
                .flatten()
                .chain(s.init_container_statuses.iter().flatten())
        })
        .map(|cs| (cs.name.as_str(), cs))
        .collect();
    let infeasible = status.is_some_and(resize_infeasible);
    let running = |c: &Container| container_requests(c, &statuses, infeasible);

    let mut apps = spec
        .containers
        .iter()
        .map(running)
        .fold(Exact::default(), Exact::add);

    let mut sidecars = Exact::default();
    let mut init_peak = Exact::default();
    for init in spec.init_containers.iter().flatten() {
        if init.restart_policy.as_deref() == Some("Always") {
            // A sidecar keeps running next to the app containers.
            let req = running(init);
            apps = apps.add(req);
            sidecars = sidecars.add(req);
            init_peak = init_peak.max(sidecars);
        } else {
            // An ordinary init container runs alone beside the sidecars started before it.
            let req = resource_list(init.resources.as_ref().and_then(|r| r.requests.as_ref()));
            init_peak = init_peak.max(req.add(sidecars));
        }
    }
    let mut effective = apps.max(init_peak);

    if let Some(pod_level) = spec.resources.as_ref().and_then(|r| r.requests.as_ref()) {
        let named = resource_list(Some(pod_level));
        if pod_level.contains_key("cpu") {
            effective.cpu_millis = named.cpu_millis;
        }
        if pod_level.contains_key("memory") {
            effective.memory_millibytes = named.memory_millibytes;
        }
    }
    effective
        .add(resource_list(spec.overhead.as_ref()))
        .rounded()
}

/// Tolerations the API server's DefaultTolerationSeconds admission adds to every pod: a pod
/// stays (and may be placed) on a node that is not ready or unreachable for 300 s.
pub fn admission_default_tolerations() -> [Toleration; 2] {
    [
        "node.kubernetes.io/not-ready",
        "node.kubernetes.io/unreachable",
    ]
    .map(|key| Toleration {
        key: key.to_string(),
        value: None,
        effect: Some(TaintEffect::NoExecute),
    })
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
        assert_eq!(pod_requests(&spec, None), r(750, 1 << 30));
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
        assert_eq!(pod_requests(&spec, None).cpu_millis, 1000);
    }

    #[test]
    fn init_container_peak_beats_smaller_apps() {
        let spec = PodSpec {
            containers: vec![container("200m", "", false)],
            init_containers: Some(vec![container("1", "", false)]),
            ..Default::default()
        };
        assert_eq!(pod_requests(&spec, None).cpu_millis, 1000);
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
        assert_eq!(pod_requests(&spec, None).cpu_millis, 600);
        // An init container before the sidecar does not see it.
        let spec = PodSpec {
            containers: vec![container("300m", "", false)],
            init_containers: Some(vec![
                container("500m", "", false),
                container("100m", "", true),
            ]),
            ..Default::default()
        };
        assert_eq!(pod_requests(&spec, None).cpu_millis, 500);
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
        assert_eq!(pod_requests(&spec, None).cpu_millis, 1250);
    }

    #[test]
    fn pod_level_requests_replace_only_the_resources_they_name() {
        let spec = PodSpec {
            containers: vec![container("1", "1Gi", false)],
            resources: reqs("2", ""),
            ..Default::default()
        };
        assert_eq!(pod_requests(&spec, None), r(2000, 1 << 30));
    }

    fn status_with(cpu: &str, infeasible: bool) -> PodStatus {
        use k8s_openapi::api::core::v1::PodCondition;
        PodStatus {
            container_statuses: Some(vec![ContainerStatus {
                name: "c".into(),
                resources: reqs(cpu, ""),
                allocated_resources: Some(BTreeMap::from([(
                    "cpu".to_string(),
                    Quantity(cpu.to_string()),
                )])),
                ..Default::default()
            }]),
            conditions: infeasible.then(|| {
                vec![PodCondition {
                    type_: "PodResizePending".into(),
                    status: "True".into(),
                    reason: Some("Infeasible".into()),
                    ..Default::default()
                }]
            }),
            ..Default::default()
        }
    }

    #[test]
    fn resize_in_progress_counts_the_larger_of_spec_and_status() {
        let spec = PodSpec {
            containers: vec![container("1", "", false)],
            ..Default::default()
        };
        assert_eq!(
            pod_requests(&spec, Some(&status_with("2", false))).cpu_millis,
            2000
        );
        let spec = PodSpec {
            containers: vec![container("3", "", false)],
            ..Default::default()
        };
        assert_eq!(
            pod_requests(&spec, Some(&status_with("1", false))).cpu_millis,
            3000
        );
    }

    #[test]
    fn infeasible_resize_counts_what_the_pod_runs_with() {
        let spec = PodSpec {
            containers: vec![container("3", "", false)],
            ..Default::default()
        };
        assert_eq!(
            pod_requests(&spec, Some(&status_with("1", true))).cpu_millis,
            1000
        );
    }

    #[test]
    fn fractional_memory_is_summed_exactly_and_rounded_once_per_pod() {
        // 500m bytes twice is 1 byte to the scheduler, not 2.
        let spec = PodSpec {
            containers: vec![container("", "500m", false), container("", "500m", false)],
            ..Default::default()
        };
        assert_eq!(pod_requests(&spec, None).memory_bytes, 1);
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
