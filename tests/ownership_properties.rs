//! The ownership rule over random histories: whatever people do to the nodes (cordon,
//! uncordon, annotate as if they were kubescaler), whenever they do it (between any two of
//! kubescaler's API calls, inside its deletion sequence too) and however servers come and go,
//! kubescaler never uncordons or deletes a node a person cordoned, and never deletes a node
//! with a server pod on it.
//!
//! The real scale loop ([`Scaler::reconcile`]), planner, actuator and mark rules
//! ([`kubescaler::kubernetes::marks::decide`] on real `Node` objects, reduced by the real
//! [`node_state`]) run against a model API server that keeps `managedFields` for
//! `spec.unschedulable` as the real one does, applies merge patches with their
//! `resourceVersion` precondition, and a model cloud that checks every DELETE.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use async_trait::async_trait;
use jiff::Timestamp;
use k8s_openapi::api::core::v1::{Node, NodeCondition, NodeSpec, NodeStatus};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{FieldsV1, ManagedFieldsEntry, Time};
use kubescaler::config::{load, ConfigSources};
use kubescaler::kubernetes::index::node_state;
use kubescaler::kubernetes::marks::decide;
use kubescaler::kubernetes::{ChangeEvent, KubeError, Kubernetes, MarkOp, MarkOutcome};
use kubescaler::model::{
    CloudNode, CloudPool, ClusterSnapshot, InstanceStatus, NodeState, PodState, Resources,
    CORDONED_BY_ANNOTATION, CORDONED_BY_VALUE, FIELD_MANAGER, TIMESTAMP_ANNOTATION,
};
use kubescaler::provider::{NodePoolProvider, ProviderError};
use kubescaler::scaler::Scaler;
use proptest::prelude::*;
use serde_json::Value;
use tokio::sync::broadcast;

/// Servers per node (4 CPUs, 1 CPU each).
const SLOTS: usize = 4;

/// Something a person (or a match) does.
#[derive(Clone, Debug)]
enum Person {
    /// `kubectl cordon` of the i-th node (by name order).
    Cordon(usize),
    /// `kubectl uncordon`.
    Uncordon(usize),
    /// Puts kubescaler's annotations on a node by hand.
    Annotate(usize),
    /// A match starts (its server pod is scheduled where it fits, or waits).
    ServerArrives,
    /// The j-th running match ends.
    ServerEnds(usize),
}

/// One step of a history: a reconcile pass, with person actions landing after the given
/// number of kubescaler's API calls within it.
#[derive(Clone, Debug)]
struct Step {
    during: Vec<(u8, Person)>,
    /// Seconds the clock moves before the pass.
    advance: i64,
}

/// Where the model API server or cloud injects a failure.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum FaultKind {
    /// A DELETE fails without effect.
    DeleteRefused,
    /// A DELETE is carried out, then answered with an error (a dropped answer).
    DeleteAnswerLost,
    /// A pool read fails.
    PoolRead,
    /// A resize fails.
    Grow,
    /// A node patch fails (the API server errs).
    NodePatch,
    /// A live read (node or pods) fails.
    LiveRead,
}

#[derive(Default)]
struct Model {
    /// The fault injected, and its rate.
    fault: Option<(FaultKind, f64)>,
    rng: u64,
    faults_injected: usize,
    nodes: BTreeMap<String, Node>,
    /// Server pod -> node (None: pending).
    servers: BTreeMap<String, Option<String>>,
    next_server: u64,
    next_node: u64,
    rv: u64,
    calls: u64,
    queue: VecDeque<(u64, Person)>,
    /// Nodes whose current cordon is a person's.
    person_cordoned: BTreeSet<String>,
    violations: Vec<String>,
    deletions: usize,
}

impl Model {
    /// Whether `kind` hits this call.
    fn faulted(&mut self, kind: FaultKind) -> bool {
        let Some((k, rate)) = self.fault else {
            return false;
        };
        if k != kind {
            return false;
        }
        // SplitMix64: reproducible per seed.
        self.rng = self.rng.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.rng;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        let hit = (z >> 11) as f64 / (1u64 << 53) as f64 <= rate;
        self.faults_injected += usize::from(hit);
        hit
    }

    fn add_node(&mut self) -> String {
        self.next_node += 1;
        let name = format!("n{:03}", self.next_node);
        let mut node = Node::default();
        node.metadata.name = Some(name.clone());
        node.metadata.creation_timestamp = Some(Time(Timestamp::now()));
        node.spec = Some(NodeSpec {
            provider_id: Some(format!("model://{name}")),
            ..NodeSpec::default()
        });
        let resources = BTreeMap::from([
            ("cpu".to_string(), Quantity("4".into())),
            ("memory".to_string(), Quantity("16Gi".into())),
            ("pods".to_string(), Quantity("110".into())),
        ]);
        node.status = Some(NodeStatus {
            allocatable: Some(resources),
            conditions: Some(vec![NodeCondition {
                type_: "Ready".into(),
                status: "True".into(),
                ..NodeCondition::default()
            }]),
            ..NodeStatus::default()
        });
        self.bump(&mut node);
        self.nodes.insert(name.clone(), node);
        name
    }

    fn bump(&mut self, node: &mut Node) {
        self.rv += 1;
        node.metadata.resource_version = Some(self.rv.to_string());
    }

    /// One API call by kubescaler: the person actions due by now land first, and the
    /// scheduler binds what it can.
    fn call(&mut self) {
        self.calls += 1;
        while self.queue.front().is_some_and(|(at, _)| *at <= self.calls) {
            if let Some((_, action)) = self.queue.pop_front() {
                self.person(action);
            }
        }
        self.schedule();
    }

    fn names(&self) -> Vec<String> {
        self.nodes.keys().cloned().collect()
    }

    fn set_unschedulable(&mut self, name: &str, value: bool, manager: &str) {
        let Some(mut node) = self.nodes.remove(name) else {
            return;
        };
        node.spec
            .get_or_insert_with(NodeSpec::default)
            .unschedulable = Some(value);
        node.metadata.managed_fields = unschedulable_owned_by(manager);
        self.bump(&mut node);
        self.nodes.insert(name.to_string(), node);
    }

    fn person(&mut self, action: Person) {
        let names = self.names();
        let pick = |i: usize| names.get(i % names.len().max(1)).cloned();
        match action {
            Person::Cordon(i) => {
                if let Some(name) = pick(i) {
                    // kubectl leaves a cordoned node as it is ("already cordoned").
                    if !is_unschedulable(&self.nodes[&name]) {
                        self.set_unschedulable(&name, true, "kubectl-cordon");
                        self.person_cordoned.insert(name);
                    }
                }
            }
            Person::Uncordon(i) => {
                if let Some(name) = pick(i) {
                    if is_unschedulable(&self.nodes[&name]) {
                        self.set_unschedulable(&name, false, "kubectl-cordon");
                    }
                    self.person_cordoned.remove(&name);
                }
            }
            Person::Annotate(i) => {
                if let Some(name) = pick(i) {
                    if let Some(mut node) = self.nodes.remove(&name) {
                        let annotations =
                            node.metadata.annotations.get_or_insert_with(BTreeMap::new);
                        annotations.insert(CORDONED_BY_ANNOTATION.into(), CORDONED_BY_VALUE.into());
                        annotations
                            .insert(TIMESTAMP_ANNOTATION.into(), "2000-01-01T00:00:00Z".into());
                        self.bump(&mut node);
                        self.nodes.insert(name, node);
                    }
                }
            }
            Person::ServerArrives => {
                self.next_server += 1;
                self.servers
                    .insert(format!("games/s{}", self.next_server), None);
            }
            Person::ServerEnds(j) => {
                let running: Vec<String> = self
                    .servers
                    .iter()
                    .filter(|(_, n)| n.is_some())
                    .map(|(k, _)| k.clone())
                    .collect();
                if !running.is_empty() {
                    let key = running[j % running.len()].clone();
                    self.servers.remove(&key);
                }
            }
        }
    }

    /// Binds pending servers where the scheduler would: schedulable, no NoSchedule taint,
    /// a free slot.
    fn schedule(&mut self) {
        let pending: Vec<String> = self
            .servers
            .iter()
            .filter(|(_, n)| n.is_none())
            .map(|(k, _)| k.clone())
            .collect();
        for key in pending {
            let target = self.nodes.iter().find(|(name, node)| {
                let tainted = node
                    .spec
                    .as_ref()
                    .and_then(|s| s.taints.as_ref())
                    .is_some_and(|t| t.iter().any(|t| t.effect == "NoSchedule"));
                let used = self
                    .servers
                    .values()
                    .filter(|n| n.as_deref() == Some(name.as_str()))
                    .count();
                !is_unschedulable(node) && !tainted && used < SLOTS
            });
            if let Some((name, _)) = target {
                let name = name.clone();
                self.servers.insert(key, Some(name));
            }
        }
    }

    fn servers_on(&self, node: &str) -> Vec<String> {
        self.servers
            .iter()
            .filter(|(_, n)| n.as_deref() == Some(node))
            .map(|(k, _)| k.clone())
            .collect()
    }

    /// A merge patch, as the API server applies it (with its precondition checked by the
    /// caller); `spec.unschedulable` becomes kubescaler's in managedFields.
    fn apply(&mut self, name: &str, patch: &Value) {
        let Some(mut node) = self.nodes.remove(name) else {
            return;
        };
        let mut value = serde_json::to_value(&node).unwrap_or_default();
        merge(&mut value, patch);
        if let Ok(patched) = serde_json::from_value::<Node>(value) {
            node = patched;
        }
        if let Some(u) = patch.get("spec").and_then(|s| s.get("unschedulable")) {
            let wanted = u.as_bool().unwrap_or(false);
            if !wanted && self.person_cordoned.contains(name) {
                self.violations.push(format!(
                    "kubescaler uncordoned {name}, which a person cordoned"
                ));
            }
            node.metadata.managed_fields = unschedulable_owned_by(FIELD_MANAGER);
        }
        self.bump(&mut node);
        self.nodes.insert(name.to_string(), node);
    }
}

/// managedFields saying `manager` last set `spec.unschedulable`, as the API server records an
/// Update.
fn unschedulable_owned_by(manager: &str) -> Option<Vec<ManagedFieldsEntry>> {
    Some(vec![ManagedFieldsEntry {
        manager: Some(manager.into()),
        operation: Some("Update".into()),
        fields_v1: Some(FieldsV1(
            serde_json::json!({"f:spec": {"f:unschedulable": {}}}),
        )),
        time: Some(Time(Timestamp::now())),
        ..ManagedFieldsEntry::default()
    }])
}

fn is_unschedulable(node: &Node) -> bool {
    node.spec.as_ref().and_then(|s| s.unschedulable) == Some(true)
}

/// RFC 7386 JSON merge patch.
fn merge(target: &mut Value, patch: &Value) {
    match patch {
        Value::Object(fields) => {
            if !target.is_object() {
                *target = Value::Object(serde_json::Map::new());
            }
            if let Value::Object(map) = target {
                for (k, v) in fields {
                    if v.is_null() {
                        map.remove(k);
                    } else {
                        merge(map.entry(k.clone()).or_insert(Value::Null), v);
                    }
                }
            }
        }
        other => *target = other.clone(),
    }
}

#[derive(Clone)]
struct Shared(Arc<Mutex<Model>>);

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Model> {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

struct ModelKube {
    model: Shared,
    changes: broadcast::Sender<ChangeEvent>,
}

#[async_trait]
impl Kubernetes for ModelKube {
    async fn snapshot(&self) -> Result<ClusterSnapshot, KubeError> {
        let mut m = self.model.lock();
        m.call();
        let nodes: Vec<NodeState> = m.nodes.values().filter_map(node_state).collect();
        let pods = m
            .servers
            .iter()
            .map(|(key, node)| PodState {
                key: key.clone(),
                node: node.clone(),
                requests: Resources {
                    cpu_millis: 1000,
                    memory_bytes: 0,
                },
                is_server: true,
                is_daemon: false,
                game_server: None,
            })
            .collect();
        Ok(ClusterSnapshot {
            nodes,
            pods,
            ..Default::default()
        })
    }

    async fn mark(&self, node: &str, op: MarkOp) -> Result<MarkOutcome, KubeError> {
        for _ in 0..4 {
            let read = {
                let mut m = self.model.lock();
                m.call();
                m.nodes.get(node).cloned()
            };
            let Some(read) = read else {
                return Ok(MarkOutcome::Gone);
            };
            let patch = match decide(op, &read) {
                Ok(patch) => patch,
                Err(why) => {
                    let state =
                        node_state(&read).ok_or_else(|| KubeError::Client("nameless".into()))?;
                    return Ok(MarkOutcome::Refused(state, why));
                }
            };
            let mut m = self.model.lock();
            // The PATCH is a call of its own: a person may act between the GET and it.
            m.call();
            let current = m
                .nodes
                .get(node)
                .and_then(|n| n.metadata.resource_version.clone());
            let precondition = patch["metadata"]["resourceVersion"]
                .as_str()
                .map(str::to_string);
            match current {
                None => return Ok(MarkOutcome::Gone),
                Some(rv) if Some(&rv) != precondition.as_ref() => continue, // 409
                Some(_) if m.faulted(FaultKind::NodePatch) => {
                    return Err(KubeError::Client("injected: patch failed".into()))
                }
                Some(_) => {
                    m.apply(node, &patch);
                    let state = m.nodes.get(node).and_then(node_state);
                    return Ok(state.map_or(MarkOutcome::Gone, MarkOutcome::Applied));
                }
            }
        }
        Err(KubeError::Client(format!("node {node} kept changing")))
    }

    async fn live_node(&self, node: &str) -> Result<Option<NodeState>, KubeError> {
        let mut m = self.model.lock();
        m.call();
        if m.faulted(FaultKind::LiveRead) {
            return Err(KubeError::Client("injected: get node failed".into()));
        }
        Ok(m.nodes.get(node).and_then(node_state))
    }

    async fn live_server_pods(&self, node: &str) -> Result<Vec<String>, KubeError> {
        let mut m = self.model.lock();
        m.call();
        if m.faulted(FaultKind::LiveRead) {
            return Err(KubeError::Client("injected: list pods failed".into()));
        }
        Ok(m.servers_on(node))
    }

    fn changes(&self) -> broadcast::Receiver<ChangeEvent> {
        self.changes.subscribe()
    }
}

struct ModelCloud {
    model: Shared,
}

#[async_trait]
impl NodePoolProvider for ModelCloud {
    async fn pool(&self) -> Result<CloudPool, ProviderError> {
        let mut m = self.model.lock();
        m.call();
        if m.faulted(FaultKind::PoolRead) {
            return Err(injected("get pool"));
        }
        let nodes: Vec<CloudNode> = m
            .nodes
            .keys()
            .map(|name| CloudNode {
                id: name.clone(),
                name: name.clone(),
                status: InstanceStatus::Running,
                state: "running".into(),
                provider_id: Some(format!("model://{name}")),
                created: None,
            })
            .collect();
        Ok(CloudPool {
            target: nodes.len() as u32,
            nodes,
            template: None,
        })
    }

    async fn grow_to(&self, target: u32) -> Result<(), ProviderError> {
        let mut m = self.model.lock();
        m.call();
        if m.faulted(FaultKind::Grow) {
            return Err(injected("resize"));
        }
        while (m.nodes.len() as u32) < target {
            m.add_node();
        }
        Ok(())
    }

    async fn delete_instance(&self, node: &CloudNode) -> Result<(), ProviderError> {
        let mut m = self.model.lock();
        if m.faulted(FaultKind::DeleteRefused) {
            m.call();
            return Err(injected("delete"));
        }
        // The DELETE is checked as it arrives; what people do at the same call comes after.
        let servers = m.servers_on(&node.name);
        if !servers.is_empty() {
            m.violations
                .push(format!("deleted {} with servers {servers:?}", node.name));
        }
        if m.person_cordoned.contains(&node.name) {
            m.violations
                .push(format!("deleted {}, which a person cordoned", node.name));
        }
        m.nodes.remove(&node.name);
        m.deletions += 1;
        m.call();
        let dropped = m.faulted(FaultKind::DeleteAnswerLost);
        for (_, n) in m.servers.iter_mut() {
            if n.as_deref() == Some(node.name.as_str()) {
                *n = None; // killed; counted above
            }
        }
        if dropped {
            return Err(injected("delete (answer lost)"));
        }
        Ok(())
    }
}

fn injected(op: &str) -> ProviderError {
    ProviderError::Api {
        provider: "model",
        op: op.into(),
        message: "injected fault".into(),
    }
}

fn arb_person() -> impl Strategy<Value = Person> {
    prop_oneof![
        (0usize..8).prop_map(Person::Cordon),
        (0usize..8).prop_map(Person::Uncordon),
        (0usize..8).prop_map(Person::Annotate),
        Just(Person::ServerArrives),
        Just(Person::ServerArrives),
        (0usize..32).prop_map(Person::ServerEnds),
        (0usize..32).prop_map(Person::ServerEnds),
    ]
}

fn arb_step() -> impl Strategy<Value = Step> {
    (
        prop::collection::vec((0u8..10, arb_person()), 0..4),
        prop_oneof![Just(1i64), Just(30), Just(90)],
    )
        .prop_map(|(during, advance)| Step { during, advance })
}

fn config() -> kubescaler::config::Config {
    let env: BTreeMap<String, String> = [
        ("CLOUD_PROVIDER_TOKEN", "model-token"),
        ("CLUSTER_NAME", "model"),
        ("NODE_POOL_NAME", "model"),
        ("NODE_SELECTOR", "role=game"),
        ("SERVER_POD_LABEL_NAME", "app"),
        ("SERVER_POD_LABEL_VALUE", "game"),
        ("MINIMUM_NODE_POOL_SIZE", "1"),
        ("MAXIMUM_NODE_POOL_SIZE", "8"),
        ("BUFFER_SLOT_SIZE", "2"),
        ("EMPTY_NODE_EXPIRATION_SEC", "60"),
        // Every surplus cordoned at once: the most cordons and uncordons for the properties.
        ("SCALE_DOWN_UNNEEDED_SEC", "0"),
        ("SCALE_DOWN_DELAY_AFTER_ADD_SEC", "0"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    load(&ConfigSources {
        env,
        ..ConfigSources::default()
    })
    .unwrap_or_else(|e| panic!("config: {e}"))
}

/// What one history did.
#[derive(Debug, Default)]
struct Outcome {
    violations: Vec<String>,
    deletions: usize,
    faults: usize,
    servers: u64,
    max_nodes: usize,
}

/// Plays `steps` and returns the violations seen and the deletions made.
fn play(initial: usize, steps: &[Step]) -> (Vec<String>, usize) {
    let o = play_with(initial, steps, None, 0);
    (o.violations, o.deletions)
}

/// Plays `steps` with `fault` injected (seeded by `seed`).
fn play_with(
    initial: usize,
    steps: &[Step],
    fault: Option<(FaultKind, f64)>,
    seed: u64,
) -> Outcome {
    let model = Shared(Arc::new(Mutex::new(Model::default())));
    let mut max_nodes = 0;
    {
        let mut m = model.lock();
        m.fault = fault;
        m.rng = seed;
        for _ in 0..initial {
            m.add_node();
        }
    }
    let clock_secs = Arc::new(AtomicI64::new(Timestamp::now().as_second()));
    let c = Arc::clone(&clock_secs);
    let clock: kubescaler::scaler::Clock = Arc::new(move || {
        Timestamp::from_second(c.load(Ordering::SeqCst)).unwrap_or(Timestamp::UNIX_EPOCH)
    });
    let k8s = Arc::new(ModelKube {
        model: model.clone(),
        changes: broadcast::channel(4).0,
    });
    let cloud = Arc::new(ModelCloud {
        model: model.clone(),
    });
    let mut scaler = Scaler::new(k8s, cloud, &config()).with_clock(clock);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap_or_else(|e| panic!("runtime: {e}"));
    for step in steps {
        clock_secs.fetch_add(step.advance, Ordering::SeqCst);
        {
            let mut m = model.lock();
            let base = m.calls;
            let mut due: Vec<(u64, Person)> = step
                .during
                .iter()
                .map(|(k, p)| (base + u64::from(*k), p.clone()))
                .collect();
            due.sort_by_key(|(at, _)| *at);
            m.queue.extend(due);
        }
        // A failed pass (a node that kept changing) is retried by the next one.
        let _ = runtime.block_on(scaler.reconcile());
        max_nodes = max_nodes.max(model.lock().nodes.len());
    }
    let m = model.lock();
    Outcome {
        violations: m.violations.clone(),
        deletions: m.deletions,
        faults: m.faults_injected,
        servers: m.next_server,
        max_nodes,
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(400))]

    #[test]
    fn no_person_cordoned_node_is_uncordoned_or_deleted_and_no_server_is_lost(
        initial in 1usize..5,
        steps in prop::collection::vec(arb_step(), 1..40),
    ) {
        let (violations, _) = play(initial, &steps);
        prop_assert!(violations.is_empty(), "{violations:?}");
    }
}

#[test]
fn the_model_lets_kubescaler_scale_down_when_no_person_interferes() {
    // A check of the check: without people, surplus nodes are cordoned and deleted.
    let steps: Vec<Step> = (0..20)
        .map(|_| Step {
            during: vec![],
            advance: 30,
        })
        .collect();
    let (violations, deletions) = play(4, &steps);
    assert!(violations.is_empty(), "{violations:?}");
    assert!(deletions >= 2, "only {deletions} deletions");
}

/// A reproducible history: `n` steps from seed `seed`.
fn seeded_history(seed: u64, n: usize) -> (usize, Vec<Step>) {
    use proptest::strategy::ValueTree;
    use proptest::test_runner::{Config, RngAlgorithm, TestRng, TestRunner};
    let mut bytes = [0u8; 32];
    bytes[..8].copy_from_slice(&seed.to_le_bytes());
    let mut runner = TestRunner::new_with_rng(
        Config {
            failure_persistence: None,
            ..Config::default()
        },
        TestRng::from_seed(RngAlgorithm::ChaCha, &bytes),
    );
    let strategy = (1usize..5, prop::collection::vec(arb_step(), n));
    match strategy.new_tree(&mut runner) {
        Ok(tree) => tree.current(),
        Err(e) => panic!("history: {e}"),
    }
}

#[test]
fn fault_matrix_no_server_lost_and_no_persons_node_touched_under_every_fault() {
    // Every fault the two APIs can throw at kubescaler, at two rates, over the same 100
    // seeded histories each: the figures go to stderr (`cargo test -- --nocapture`).
    let kinds = [
        FaultKind::DeleteRefused,
        FaultKind::DeleteAnswerLost,
        FaultKind::PoolRead,
        FaultKind::Grow,
        FaultKind::NodePatch,
        FaultKind::LiveRead,
    ];
    eprintln!("fault matrix: fault, rate, histories, peak nodes, servers, faults injected, deletions, servers lost, person's nodes touched");
    let mut total_faults = 0;
    for kind in kinds {
        for rate in [0.1, 0.3] {
            let (mut peak, mut servers, mut faults, mut deletions, mut lost, mut touched) =
                (0, 0, 0, 0, 0, 0);
            for seed in 0..100u64 {
                let (initial, steps) = seeded_history(seed, 30);
                let o = play_with(initial, &steps, Some((kind, rate)), seed);
                peak = peak.max(o.max_nodes);
                servers += o.servers;
                faults += o.faults;
                deletions += o.deletions;
                lost += o
                    .violations
                    .iter()
                    .filter(|v| v.contains("with servers"))
                    .count();
                touched += o
                    .violations
                    .iter()
                    .filter(|v| v.contains("a person cordoned"))
                    .count();
                assert!(
                    o.violations.is_empty(),
                    "{kind:?} at {rate}, seed {seed}: {:?}",
                    o.violations
                );
            }
            total_faults += faults;
            eprintln!("fault matrix: {kind:?}, {rate}, 100, {peak}, {servers}, {faults}, {deletions}, {lost}, {touched}");
        }
    }
    assert!(
        total_faults > 1000,
        "too few faults injected: {total_faults}"
    );
}
