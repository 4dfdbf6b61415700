//! The planner in `server-source: agones`: GameServer states decide what keeps a node, what
//! counts toward the buffer, and which Ready servers compaction may remove. One test per rule.

mod common;

use common::*;
use kubescaler::agones::{
    AgonesBuffer, AgonesSettings, FleetBuffer, GameServerInfo, GameServerState,
};
use kubescaler::model::{ClusterSnapshot, NodeState, PodState, ServerSource};
use kubescaler::planner::{plan, Action, ActionKind, Plan, PlannerConfig};

fn agones_cfg() -> PlannerConfig {
    PlannerConfig {
        server_source: ServerSource::Agones,
        agones: AgonesSettings {
            compaction_per_minute: 30,
            ..AgonesSettings::default()
        },
        ..cfg()
    }
}

/// A GameServer `games/<name>` of Fleet `arena` on `node` in `state`, and its 1-CPU pod.
fn gs(name: &str, state: GameServerState, node: Option<&str>) -> (GameServerInfo, PodState) {
    let key = format!("games/{name}");
    let info = GameServerInfo {
        key: key.clone(),
        node: node.map(str::to_string),
        state,
        resource_version: Some("41".into()),
        being_deleted: false,
        fleet: Some("arena".into()),
    };
    let pod = PodState {
        is_server: false,
        game_server: Some(key.clone()),
        ..server(&key, node)
    };
    (info, pod)
}

/// A snapshot of `nodes` holding `servers` (GameServers and their pods) and `pods`.
fn world(
    nodes: Vec<NodeState>,
    servers: Vec<(GameServerInfo, PodState)>,
    pods: Vec<PodState>,
) -> ClusterSnapshot {
    let (game_servers, gs_pods): (Vec<_>, Vec<_>) = servers.into_iter().unzip();
    ClusterSnapshot {
        nodes,
        pods: gs_pods.into_iter().chain(pods).collect(),
        game_servers,
        fleet_buffers: vec![],
    }
}

fn many(
    node: &str,
    n: usize,
    state: GameServerState,
    tag: &str,
) -> Vec<(GameServerInfo, PodState)> {
    (0..n)
        .map(|i| gs(&format!("{node}-{tag}{i}"), state, Some(node)))
        .collect()
}

fn of_kind(p: &Plan, kind: ActionKind) -> Vec<String> {
    p.actions
        .iter()
        .filter(|a| a.kind() == kind)
        .filter_map(|a| a.node().map(str::to_string))
        .collect()
}

fn compacted(p: &Plan) -> Vec<(String, Vec<String>)> {
    p.actions
        .iter()
        .filter_map(|a| match a {
            Action::Compact {
                node, game_servers, ..
            } => Some((
                node.clone(),
                game_servers.iter().map(|g| g.key.clone()).collect(),
            )),
            _ => None,
        })
        .collect()
}

#[test]
fn a_node_holding_one_allocated_game_server_is_never_deleted_whatever_its_age() {
    for state in [GameServerState::Allocated, GameServerState::Reserved] {
        let s = world(
            vec![node("a", 4), ours("old", 4, 10 * 365 * 24 * 3600)],
            many("old", 1, state, "m"),
            vec![],
        );
        let p = plan(&s, 2, now(), &agones_cfg());
        assert!(
            of_kind(&p, ActionKind::Delete).is_empty(),
            "{state:?}: {:?}",
            p.actions
        );
        assert!(
            compacted(&p).is_empty(),
            "a live match is never compacted: {:?}",
            p.actions
        );
    }
}

#[test]
fn a_live_game_server_whose_pod_is_not_cached_still_keeps_its_node() {
    let (info, _pod) = gs("lonely", GameServerState::Allocated, Some("old"));
    let s = ClusterSnapshot {
        nodes: vec![node("a", 4), ours("old", 4, 3600)],
        pods: vec![],
        game_servers: vec![info],
        fleet_buffers: vec![],
    };
    let p = plan(&s, 2, now(), &agones_cfg());
    assert!(
        of_kind(&p, ActionKind::Delete).is_empty(),
        "{:?}",
        p.actions
    );
}

#[test]
fn a_game_server_pod_whose_game_server_is_unknown_keeps_its_node() {
    let (_info, pod) = gs("unseen", GameServerState::Ready, Some("old"));
    let s = world(vec![node("a", 4), ours("old", 4, 3600)], vec![], vec![pod]);
    let p = plan(&s, 2, now(), &agones_cfg());
    assert!(
        of_kind(&p, ActionKind::Delete).is_empty(),
        "{:?}",
        p.actions
    );
    assert!(compacted(&p).is_empty(), "{:?}", p.actions);
}

#[test]
fn ready_game_servers_count_toward_the_buffer() {
    // One 4-CPU node full of Ready GameServers: 0 free, 4 warm = buffer 4: nothing to do.
    let s = world(
        vec![node("a", 4)],
        many("a", 4, GameServerState::Ready, "r"),
        vec![],
    );
    let p = plan(&s, 1, now(), &agones_cfg());
    assert_eq!(p.summary.free_slots, 0);
    assert_eq!(p.summary.ready_game_servers, 4);
    assert_eq!(p.summary.available_slots, 4);
    assert!(p.actions.is_empty(), "{:?}", p.actions);
    // The same pods in pods mode are 4 matches: short by 4, grow.
    let mut pods_mode = s.clone();
    for pod in &mut pods_mode.pods {
        pod.is_server = true;
    }
    let p = plan(&pods_mode, 1, now(), &cfg());
    assert!(p.actions.iter().any(|a| a.kind() == ActionKind::Grow));
}

#[test]
fn starting_game_servers_are_capacity_on_its_way_and_allocated_ones_are_not() {
    let mut servers = many("a", 2, GameServerState::Scheduled, "s");
    servers.extend(many("a", 2, GameServerState::Allocated, "m"));
    let s = world(vec![node("a", 4)], servers, vec![]);
    let p = plan(&s, 1, now(), &agones_cfg());
    assert_eq!(p.summary.starting_game_servers, 2);
    assert_eq!(p.summary.running_servers, 2);
    assert_eq!(p.summary.available_slots, 2, "{:?}", p.summary);
    assert_eq!(
        p.grow_target(),
        Some(2),
        "2 short of buffer 4: one 4-slot node"
    );
}

#[test]
fn pending_game_server_pods_are_short_only_where_no_room_is_left() {
    // 4 free, 2 GameServer pods pending: they take room and become warm slots: still 4.
    let pending = many("x", 2, GameServerState::Creating, "p")
        .into_iter()
        .map(|(mut info, mut pod)| {
            info.node = None;
            pod.node = None;
            (info, pod)
        })
        .collect::<Vec<_>>();
    let s = world(vec![node("a", 4)], pending.clone(), vec![]);
    let p = plan(&s, 1, now(), &agones_cfg());
    assert_eq!(p.summary.pending_game_servers, 2);
    assert_eq!(p.summary.available_slots, 4);
    assert!(p.actions.is_empty(), "{:?}", p.actions);
    // With no room at all, each pending one is a slot short.
    let s = world(
        vec![node("a", 4)],
        pending
            .into_iter()
            .chain(many("a", 4, GameServerState::Allocated, "m"))
            .collect(),
        vec![],
    );
    let p = plan(&s, 1, now(), &agones_cfg());
    assert_eq!(p.summary.available_slots, -2, "{:?}", p.summary);
    assert_eq!(p.grow_target(), Some(3), "6 slots short: two 4-slot nodes");
}

#[test]
fn compaction_deletes_only_the_ready_game_servers_of_surplus_nodes_kubescaler_cordoned() {
    let mut servers = many("old", 2, GameServerState::Ready, "r");
    servers.extend(many("old", 1, GameServerState::Allocated, "m"));
    servers.extend(many("busy", 2, GameServerState::Ready, "r"));
    servers.extend(many("held", 2, GameServerState::Ready, "r"));
    let s = world(
        vec![
            node("a", 4),
            node("b", 4),
            ours("old", 4, 60),
            node("busy", 4),
            foreign("held", 4),
        ],
        servers,
        vec![],
    );
    let p = plan(&s, 5, now(), &agones_cfg());
    assert_eq!(
        compacted(&p),
        vec![(
            "old".to_string(),
            vec!["games/old-r0".to_string(), "games/old-r1".to_string()]
        )],
        "never the Allocated one, never a schedulable node's, never a person's cordoned node's: {:?}",
        p.actions
    );
    let Some(Action::Compact { game_servers, .. }) =
        p.actions.iter().find(|a| a.kind() == ActionKind::Compact)
    else {
        unreachable!()
    };
    assert!(
        game_servers
            .iter()
            .all(|g| g.resource_version.as_deref() == Some("41")),
        "each delete carries the resourceVersion read"
    );
}

#[test]
fn compaction_never_removes_more_warm_servers_than_the_schedulable_nodes_can_recreate() {
    // a has room for 1; old holds 3 Ready ones: only 1 is compacted.
    let mut servers = many("a", 3, GameServerState::Allocated, "m");
    servers.extend(many("old", 3, GameServerState::Ready, "r"));
    let mut c = agones_cfg();
    c.buffer = 0;
    let s = world(vec![node("a", 4), ours("old", 4, 60)], servers, vec![]);
    let p = plan(&s, 2, now(), &c);
    assert_eq!(compacted(&p).len(), 1, "{:?}", p.actions);
    assert_eq!(compacted(&p)[0].1.len(), 1, "{:?}", p.actions);
}

#[test]
fn compaction_is_off_at_zero_per_minute_and_in_pods_mode() {
    let s = world(
        vec![node("a", 4), ours("old", 4, 60)],
        many("old", 2, GameServerState::Ready, "r"),
        vec![],
    );
    let mut off = agones_cfg();
    off.agones.compaction_per_minute = 0;
    assert!(compacted(&plan(&s, 2, now(), &off)).is_empty());
    assert!(compacted(&plan(&s, 2, now(), &cfg())).is_empty());
}

#[test]
fn a_surplus_node_is_deleted_only_once_it_holds_no_game_server_that_could_take_a_match() {
    for state in [
        GameServerState::Ready,
        GameServerState::Scheduled,
        GameServerState::Unknown,
    ] {
        let s = world(
            vec![node("a", 4), node("b", 4), ours("old", 4, 3600)],
            many("old", 1, state, "x"),
            vec![],
        );
        let p = plan(&s, 3, now(), &agones_cfg());
        assert!(
            of_kind(&p, ActionKind::Delete).is_empty(),
            "{state:?}: {:?}",
            p.actions
        );
    }
    // Leaving ones hold no match.
    for state in [
        GameServerState::Shutdown,
        GameServerState::Error,
        GameServerState::Unhealthy,
    ] {
        let s = world(
            vec![node("a", 4), node("b", 4), ours("old", 4, 3600)],
            many("old", 1, state, "x"),
            vec![],
        );
        let p = plan(&s, 3, now(), &agones_cfg());
        assert_eq!(
            of_kind(&p, ActionKind::Delete),
            vec!["old"],
            "{state:?}: {:?}",
            p.actions
        );
    }
}

#[test]
fn out_of_scope_game_servers_protect_their_node_but_are_neither_warm_nor_compacted() {
    let mut c = agones_cfg();
    c.agones.fleets = vec!["lobby".into()];
    let s = world(
        vec![node("a", 4), node("b", 4), ours("old", 4, 3600)],
        many("old", 2, GameServerState::Ready, "r"),
        vec![],
    );
    let p = plan(&s, 3, now(), &c);
    assert!(compacted(&p).is_empty(), "{:?}", p.actions);
    assert!(
        of_kind(&p, ActionKind::Delete).is_empty(),
        "{:?}",
        p.actions
    );
    let s = world(
        vec![node("a", 4)],
        many("a", 4, GameServerState::Ready, "r"),
        vec![],
    );
    assert_eq!(plan(&s, 1, now(), &c).summary.ready_game_servers, 0);
}

#[test]
fn a_node_is_cordoned_only_where_the_rest_have_room_for_its_warm_servers() {
    // a: 4 free; b: 4 Ready. Buffer 4. Cordoning b would leave 4 available but the 4 Ready
    // servers it holds need a's 4 slots: fine. Cordoning a leaves b's 4 warm: fine too, and a
    // (no GameServers) is the cheaper pick.
    let s = world(
        vec![node("a", 4), node("b", 4)],
        many("b", 4, GameServerState::Ready, "r"),
        vec![],
    );
    let mut c = agones_cfg();
    c.buffer = 0;
    let p = plan(&s, 2, now(), &c);
    assert_eq!(
        of_kind(&p, ActionKind::Cordon),
        vec!["a"],
        "{:?}",
        p.actions
    );
    // With a full of live matches, b's warm servers would have nowhere to go: b stays (a,
    // all matches, may drain by attrition instead).
    let mut servers = many("a", 4, GameServerState::Allocated, "m");
    servers.extend(many("b", 4, GameServerState::Ready, "r"));
    let s = world(vec![node("a", 4), node("b", 4)], servers, vec![]);
    let p = plan(&s, 2, now(), &c);
    assert!(
        !of_kind(&p, ActionKind::Cordon).contains(&"b".to_string()),
        "{:?}",
        p.actions
    );
}

#[test]
fn the_fleet_aware_buffer_is_each_fleets_ready_buffer_plus_room_for_its_next_step() {
    let mut c = agones_cfg();
    c.agones.buffer = AgonesBuffer::FleetAutoscalers;
    c.buffer = 1;
    let mut s = world(vec![node("a", 4)], vec![], vec![]);
    s.fleet_buffers = vec![
        FleetBuffer {
            key: "games/arena-fa".into(),
            fleet: "arena".into(),
            ready: 3,
            headroom: 10,
        },
        FleetBuffer {
            key: "games/duel-fa".into(),
            fleet: "duel".into(),
            ready: 2,
            headroom: 1,
        },
    ];
    let p = plan(&s, 1, now(), &c);
    assert_eq!(
        p.summary.buffer,
        3 + 3 + 2 + 1,
        "{:?}",
        p.summary.buffer_reason
    );
    let reason = p.summary.buffer_reason.clone().unwrap_or_default();
    assert!(
        reason.contains("arena") && reason.contains("duel"),
        "{reason}"
    );
    // Fixed mode ignores them.
    c.agones.buffer = AgonesBuffer::Fixed;
    assert_eq!(plan(&s, 1, now(), &c).summary.buffer, 1);
    // No FleetAutoscaler: buffer-slot-size is the floor.
    c.agones.buffer = AgonesBuffer::FleetAutoscalers;
    s.fleet_buffers.clear();
    assert_eq!(plan(&s, 1, now(), &c).summary.buffer, 1);
}
