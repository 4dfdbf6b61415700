//! Cluster API's names (group, kinds, labels, annotations, finalizer), reading fields of its
//! objects held as [`DynamicObject`]s, and the helpers a test needs around the stand-in:
//! installing the CRDs ([`install_crds`]) and creating a MachineDeployment the schema accepts
//! ([`create_machine_deployment`]).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use jiff::Timestamp;
use k8s_openapi::api::core::v1::Namespace;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::core::{ApiResource, DynamicObject};
use kube::Client;
use serde_json::{json, Value};

use crate::Error;

/// API group of the Cluster API core kinds.
pub const GROUP: &str = "cluster.x-k8s.io";
/// The version the stand-in reads and writes: the one the CRDs store (v1beta1 is deprecated).
pub const VERSION: &str = "v1beta2";
/// `apiVersion` of the objects.
pub const API_VERSION: &str = "cluster.x-k8s.io/v1beta2";

/// Label (on MachineDeployments, MachineSets, Machines) and node annotation: the Cluster.
pub const CLUSTER_NAME_LABEL: &str = "cluster.x-k8s.io/cluster-name";
/// Label of MachineSets and Machines: their MachineDeployment.
pub const DEPLOYMENT_NAME_LABEL: &str = "cluster.x-k8s.io/deployment-name";
/// Label of Machines: their MachineSet.
pub const SET_NAME_LABEL: &str = "cluster.x-k8s.io/set-name";
/// Node annotation: the Machine's name.
pub const MACHINE_ANNOTATION: &str = "cluster.x-k8s.io/machine";
/// Node annotation: the Cluster's (and the Machine's) namespace.
pub const CLUSTER_NAMESPACE_ANNOTATION: &str = "cluster.x-k8s.io/cluster-namespace";
/// Node annotation: the kind of the Machine's owner (`MachineSet`).
pub const OWNER_KIND_ANNOTATION: &str = "cluster.x-k8s.io/owner-kind";
/// Node annotation: the name of the Machine's owner.
pub const OWNER_NAME_ANNOTATION: &str = "cluster.x-k8s.io/owner-name";
/// Machine annotation (any value): delete this Machine first when replicas drop.
pub const DELETE_MACHINE_ANNOTATION: &str = "cluster.x-k8s.io/delete-machine";
/// Machine annotation: an in-place update is in progress (ranked right after marked Machines).
pub const UPDATE_IN_PROGRESS_ANNOTATION: &str =
    "in-place-updates.internal.cluster.x-k8s.io/update-in-progress";
/// The Machine controller's finalizer: a DELETE only sets `deletionTimestamp` until it goes.
pub const MACHINE_FINALIZER: &str = "machine.cluster.x-k8s.io";
/// MachineDeployment annotations of cluster-autoscaler's node-group size.
pub const AUTOSCALER_MIN_SIZE_ANNOTATION: &str =
    "cluster.x-k8s.io/cluster-api-autoscaler-node-group-min-size";
/// See [`AUTOSCALER_MIN_SIZE_ANNOTATION`].
pub const AUTOSCALER_MAX_SIZE_ANNOTATION: &str =
    "cluster.x-k8s.io/cluster-api-autoscaler-node-group-max-size";
/// Scheme of the stand-in's provider IDs: `capi-standin://<machine name>`.
pub const PROVIDER_ID_PREFIX: &str = "capi-standin://";
/// Field manager of the stand-in's server-side applies.
pub const FIELD_MANAGER: &str = "capi-standin";
/// API group of the (absent) infrastructure provider the templates name: no object of it
/// exists, and nothing checks (no webhook or controller runs).
pub const INFRASTRUCTURE_GROUP: &str = "infrastructure.cluster.x-k8s.io";

/// How long [`install_crds`] waits for a CRD to be Established.
const ESTABLISH_TIMEOUT: Duration = Duration::from_secs(60);

/// The Cluster API kinds the stand-in handles.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// `MachineDeployment`: replicas through `/scale`.
    MachineDeployment,
    /// `MachineSet`: replicas through `/scale`.
    MachineSet,
    /// `Machine`: one node.
    Machine,
}

impl Kind {
    /// The kind's name.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::MachineDeployment => "MachineDeployment",
            Kind::MachineSet => "MachineSet",
            Kind::Machine => "Machine",
        }
    }

    /// Its `ApiResource` at [`VERSION`].
    pub fn resource(self) -> ApiResource {
        let plural = match self {
            Kind::MachineDeployment => "machinedeployments",
            Kind::MachineSet => "machinesets",
            Kind::Machine => "machines",
        };
        ApiResource {
            group: GROUP.to_string(),
            version: VERSION.to_string(),
            api_version: API_VERSION.to_string(),
            kind: self.as_str().to_string(),
            plural: plural.to_string(),
        }
    }

    /// The namespaced API of this kind.
    pub fn api(self, client: Client, namespace: &str) -> Api<DynamicObject> {
        Api::namespaced_with(client, namespace, &self.resource())
    }
}

/// The string at `pointer` (e.g. `/spec/providerID`) of `obj`.
pub fn str_at<'a>(obj: &'a DynamicObject, pointer: &str) -> Option<&'a str> {
    obj.data.pointer(pointer).and_then(Value::as_str)
}

/// The integer at `pointer` of `obj`.
pub fn int_at(obj: &DynamicObject, pointer: &str) -> Option<i64> {
    obj.data.pointer(pointer).and_then(Value::as_i64)
}

/// Whether `obj` has annotation `key` (any value).
pub fn has_annotation(obj: &DynamicObject, key: &str) -> bool {
    obj.metadata
        .annotations
        .as_ref()
        .is_some_and(|a| a.contains_key(key))
}

/// `status.conditions[type == kind].status` of `obj`.
pub fn condition_status<'a>(obj: &'a DynamicObject, kind: &str) -> Option<&'a str> {
    obj.data
        .pointer("/status/conditions")
        .and_then(Value::as_array)?
        .iter()
        .find(|c| c.get("type").and_then(Value::as_str) == Some(kind))?
        .get("status")
        .and_then(Value::as_str)
}

/// `metadata.creationTimestamp`.
pub fn created(obj: &DynamicObject) -> Option<Timestamp> {
    obj.metadata.creation_timestamp.as_ref().map(|t| t.0)
}

/// Whether the controller ownerReference of `obj` is the object with `uid`.
pub fn controlled_by(obj: &DynamicObject, uid: &str) -> bool {
    obj.metadata.owner_references.as_ref().is_some_and(|refs| {
        refs.iter()
            .any(|r| r.controller == Some(true) && r.uid == uid)
    })
}

/// `matchLabels` of the selector at `pointer` as `k=v,k=v` (sorted): `status.selector`'s form.
pub fn selector_string(obj: &DynamicObject, pointer: &str) -> String {
    let Some(labels) = obj.data.pointer(pointer).and_then(Value::as_object) else {
        return String::new();
    };
    let sorted: BTreeMap<&String, &Value> = labels.iter().collect();
    sorted
        .into_iter()
        .filter_map(|(k, v)| v.as_str().map(|v| format!("{k}={v}")))
        .collect::<Vec<_>>()
        .join(",")
}

/// A timestamp as Kubernetes writes `metav1.Time` (whole seconds, UTC).
pub fn kube_time(t: Timestamp) -> String {
    t.strftime("%Y-%m-%dT%H:%M:%SZ").to_string()
}

/// The MachineDeployment [`create_machine_deployment`] creates, as JSON: the schema's required
/// fields plus what CAPI's defaulting webhook would add (none runs locally): the cluster-name
/// label, `spec.replicas`, selector and template labels (`cluster-name`, `deployment-name`),
/// the RollingUpdate strategy (max surge 1, max unavailable 0), a bootstrap `dataSecretName`
/// and an `infrastructureRef` naming a template that does not exist (nothing checks).
pub fn machine_deployment_object(
    namespace: &str,
    name: &str,
    cluster: &str,
    replicas: i32,
    annotations: &BTreeMap<String, String>,
    labels: &BTreeMap<String, String>,
) -> Value {
    let mut md_labels = labels.clone();
    md_labels.insert(CLUSTER_NAME_LABEL.to_string(), cluster.to_string());
    let selector = json!({CLUSTER_NAME_LABEL: cluster, DEPLOYMENT_NAME_LABEL: name});
    json!({
        "apiVersion": API_VERSION,
        "kind": "MachineDeployment",
        "metadata": {
            "name": name,
            "namespace": namespace,
            "labels": md_labels,
            "annotations": annotations,
        },
        "spec": {
            "clusterName": cluster,
            "replicas": replicas,
            "selector": {"matchLabels": selector},
            "rollout": {"strategy": {
                "type": "RollingUpdate",
                "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0},
            }},
            "template": {
                "metadata": {"labels": selector},
                "spec": {
                    "clusterName": cluster,
                    "bootstrap": {"dataSecretName": format!("{name}-bootstrap")},
                    "infrastructureRef": {
                        "apiGroup": INFRASTRUCTURE_GROUP,
                        "kind": "StandInMachineTemplate",
                        "name": name,
                    },
                },
            },
        },
    })
}

/// Creates MachineDeployment `namespace/name` of Cluster `cluster` with `replicas` (see
/// [`machine_deployment_object`]); no Cluster object is needed (the API server checks no
/// reference). Returns it as stored.
pub async fn create_machine_deployment(
    client: &Client,
    namespace: &str,
    name: &str,
    cluster: &str,
    replicas: i32,
    annotations: &BTreeMap<String, String>,
    labels: &BTreeMap<String, String>,
) -> Result<DynamicObject, Error> {
    let value = machine_deployment_object(namespace, name, cluster, replicas, annotations, labels);
    let object: DynamicObject = serde_json::from_value(value)
        .map_err(|e| Error::Invalid(format!("a MachineDeployment object: {e}")))?;
    Kind::MachineDeployment
        .api(client.clone(), namespace)
        .create(&PostParams::default(), &object)
        .await
        .map_err(|e| Error::kube(format!("create MachineDeployment {namespace}/{name}"), e))
}

/// Creates namespace `name` unless it exists.
pub async fn ensure_namespace(client: &Client, name: &str) -> Result<(), Error> {
    let api: Api<Namespace> = Api::all(client.clone());
    let ns: Namespace = serde_json::from_value(json!({"metadata": {"name": name}}))
        .map_err(|e| Error::Invalid(format!("a Namespace object: {e}")))?;
    match api.create(&PostParams::default(), &ns).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(s)) if s.code == 409 => Ok(()),
        Err(e) => Err(Error::kube(format!("create namespace {name}"), e)),
    }
}

/// A refusal worth retrying: a conflict, throttling, a server error or no answer.
pub(crate) fn transient(e: &kube::Error) -> bool {
    match e {
        kube::Error::Api(s) => s.code == 409 || s.code == 429 || s.code >= 500,
        _ => true,
    }
}

/// The YAML files to install from `path`: the file itself, or a directory's `*.yaml` and
/// `*.yml` files in name order.
fn crd_files(path: &Path) -> Result<Vec<PathBuf>, Error> {
    if !path.is_dir() {
        return Ok(vec![path.to_path_buf()]);
    }
    let io = |e| Error::Io {
        path: path.to_path_buf(),
        source: e,
    };
    let mut files = Vec::new();
    for entry in std::fs::read_dir(path).map_err(io)? {
        let p = entry.map_err(io)?.path();
        if p.extension().is_some_and(|x| x == "yaml" || x == "yml") {
            files.push(p);
        }
    }
    files.sort();
    Ok(files)
}

/// Installs every CustomResourceDefinition in `path` (a YAML file, or a directory of them such
/// as the one `hack/capi-crds.sh` prints) and waits until each is Established; returns their
/// names.
///
/// Idempotent and safe to call from many tests at once on one API server: a server-side apply
/// with `force` under one field manager, so identical concurrent applies converge instead of
/// conflicting; a transient refusal is retried.
pub async fn install_crds(client: &Client, path: &Path) -> Result<Vec<String>, Error> {
    let api: Api<CustomResourceDefinition> = Api::all(client.clone());
    let params = PatchParams::apply(FIELD_MANAGER).force();
    let mut names = Vec::new();
    for file in crd_files(path)? {
        let text = std::fs::read_to_string(&file).map_err(|e| Error::Io {
            path: file.clone(),
            source: e,
        })?;
        for doc in serde_yaml::Deserializer::from_str(&text) {
            let value: Value = serde::Deserialize::deserialize(doc)
                .map_err(|e| Error::Invalid(format!("a document of {}: {e}", file.display())))?;
            if value.get("kind").and_then(Value::as_str) != Some("CustomResourceDefinition") {
                continue;
            }
            let Some(name) = value.pointer("/metadata/name").and_then(Value::as_str) else {
                return Err(Error::Invalid(format!(
                    "a CRD without a name in {}",
                    file.display()
                )));
            };
            let mut attempt = 0;
            loop {
                attempt += 1;
                match api.patch(name, &params, &Patch::Apply(&value)).await {
                    Ok(_) => break,
                    Err(e) if attempt < 10 && transient(&e) => {
                        tracing::warn!("apply CRD {name}: {e}; retrying");
                        tokio::time::sleep(Duration::from_millis(300)).await;
                    }
                    Err(e) => return Err(Error::kube(format!("apply CRD {name}"), e)),
                }
            }
            names.push(name.to_string());
        }
    }
    if names.is_empty() {
        return Err(Error::Invalid(format!(
            "no CustomResourceDefinition in {}",
            path.display()
        )));
    }
    for name in &names {
        let start = Instant::now();
        loop {
            let established = api.get_opt(name).await.ok().flatten().is_some_and(|crd| {
                crd.status.and_then(|s| s.conditions).is_some_and(|c| {
                    c.iter()
                        .any(|c| c.type_ == "Established" && c.status == "True")
                })
            });
            if established {
                break;
            }
            if start.elapsed() > ESTABLISH_TIMEOUT {
                return Err(Error::Timeout(format!(
                    "CRD {name} not Established after {ESTABLISH_TIMEOUT:?}"
                )));
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    Ok(names)
}
