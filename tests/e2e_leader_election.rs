//! Two kubescaler processes against one control plane and one cloud (harness in
//! `tests/fullstack`): exactly one acts; when the leader is killed the other takes over within
//! the lease duration; no action is taken twice; SIGTERM releases the Lease.
//!
//! Gated by `tests/cluster` (`KUBESCALER_E2E_KUBECONFIG`; required in CI).

use std::collections::BTreeMap;
use std::io::Write;
use std::sync::Arc;
use std::time::{Duration, Instant};

use doks_fake::Operation;
use k8s_openapi::api::coordination::v1::Lease;
use kube::Api;

mod cluster;
mod fullstack;
use cluster::client_or_skip;
use fullstack::{assert_clean_end, of, run, World, LEASE_SECS, NAMESPACE};

/// The Lease holder's replica index, if any.
async fn holder(w: &World) -> Option<usize> {
    let leases: Api<Lease> = Api::namespaced(w.client.clone(), NAMESPACE);
    let lease = leases.get_opt(&format!("lease-{}", w.id)).await.ok()??;
    let id = lease.spec?.holder_identity?;
    id.strip_prefix("replica-")?.parse().ok()
}

/// `kubescaler_leader` as replica `i` reports it on `/metrics`.
async fn leader_metric(w: &World, i: usize) -> Option<u8> {
    let port = w.daemons()[i].port;
    let text = fullstack::scrape_metrics(port).await?;
    text.lines()
        .find_map(|l| l.strip_prefix("kubescaler_leader "))
        .and_then(|v| v.trim().parse().ok())
}

/// Actions a replica carried out, from its log.
fn actions_of(w: &World, i: usize) -> usize {
    w.daemons()[i].log_count(" action ")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_only_the_leader_acts_and_the_standby_takes_over_when_it_dies() {
    let test = "e2e_leader_election";
    let Some((client, kubeconfig, spec_path)) = fullstack::prerequisites_or_skip(test).await else {
        return;
    };
    let world = World::start_replicas(spec_path, client, &kubeconfig, "lead", false, 2).await;
    run(world, |w| async move {
        let w = Arc::clone(&w);
        let leader = w
            .eventually("a leader", Duration::from_secs(30), || async {
                holder(&w).await
            })
            .await;
        let standby = 1 - leader;
        // Both serve metrics; only the leader says it leads.
        w.eventually(
            "metrics of both replicas",
            Duration::from_secs(20),
            || async {
                let l = leader_metric(&w, leader).await?;
                let s = leader_metric(&w, standby).await?;
                (l == 1 && s == 0).then_some(())
            },
        )
        .await;

        // Demand: the leader grows the pool, once.
        w.create_servers(5).await;
        w.eventually("the pool to grow to 2", Duration::from_secs(60), || async {
            let pool = w.fake.pool(&w.cluster_id, &w.pool_id)?;
            (pool.count == 2 && pool.nodes_in("running") == 2).then_some(())
        })
        .await;
        assert!(actions_of(&w, leader) >= 1, "the leader acted");
        assert_eq!(actions_of(&w, standby), 0, "the standby acted");
        assert_eq!(
            of(&w.fake, Operation::UpdateNodePool).len(),
            1,
            "one resize"
        );

        // The leader dies without releasing the Lease: the standby takes over once it expires.
        w.daemons()[leader].kill();
        let killed = Instant::now();
        w.eventually(
            "the standby to take over",
            Duration::from_secs(30),
            || async { (holder(&w).await == Some(standby)).then_some(()) },
        )
        .await;
        let takeover = killed.elapsed();
        let _ = writeln!(
            std::io::stderr(),
            "leader election: takeover {:.1} s after SIGKILL (lease duration {LEASE_SECS} s)",
            takeover.as_secs_f64()
        );
        // Expiry plus one renewal attempt of the standby, on a busy machine.
        assert!(
            takeover <= Duration::from_secs(LEASE_SECS + 2),
            "takeover took {takeover:?}"
        );

        // The new leader scales down by attrition; nothing is done twice.
        let placement = w.placement().await;
        for pod in placement.keys() {
            w.delete_server(pod).await;
        }
        w.eventually("the pool back to 1", Duration::from_secs(60), || async {
            (w.count() == 1 && w.nodes().await.len() == 1).then_some(())
        })
        .await;
        assert!(actions_of(&w, standby) >= 2, "the new leader acted");
        let deletes = of(&w.fake, Operation::DeleteNode);
        let mut per_node: BTreeMap<String, usize> = BTreeMap::new();
        for r in &deletes {
            *per_node.entry(r.path.clone()).or_default() += 1;
        }
        assert!(
            per_node.values().all(|n| *n == 1),
            "a node deleted twice: {per_node:?}"
        );
        assert_eq!(
            of(&w.fake, Operation::UpdateNodePool).len(),
            1,
            "no second resize"
        );
        assert_clean_end(&w);

        // SIGTERM: the leader exits 0 and releases the Lease at once.
        let code = w.daemons()[standby].terminate(Duration::from_secs(10));
        assert_eq!(code, Some(0));
        assert_eq!(holder(&w).await, None, "lease not released");
    })
    .await;
}

/// An idle leader renews its Lease with one request per renewal (a `PUT` of the Lease it last
/// wrote), not a read and a write: counted in the API server's audit log under kubescaler's
/// own identity (`kubeconfig-kubescaler`, user `kubescaler-e2e`), for this test's Lease only.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_leader_renews_its_lease_with_one_request_per_renewal() {
    let test = "e2e_leader_election::one_request_per_renewal";
    let Some(_) = client_or_skip(test).await else {
        return;
    };
    let kubeconfig = cluster::kubeconfig_or_skip(test).unwrap_or_else(|| panic!("gated above"));
    let run_dir = kubeconfig.parent().unwrap().to_path_buf();
    let audit_log = run_dir.join("audit.log");
    let own = run_dir.join("kubeconfig-kubescaler");
    assert!(
        audit_log.is_file() && own.is_file(),
        "{test}: the control plane has no audit log or kubescaler identity: restart it"
    );
    let client = {
        let kc = kube::config::Kubeconfig::read_from(&own).unwrap();
        let config =
            kube::Config::from_custom_kubeconfig(kc, &kube::config::KubeConfigOptions::default())
                .await
                .unwrap();
        kube::Client::try_from(config).unwrap()
    };
    let lease_name = format!("renewals-{}", std::process::id());
    let env: BTreeMap<String, String> = [
        ("CLOUD_PROVIDER_TOKEN", "unused"),
        ("CLUSTER_NAME", "c"),
        ("NODE_POOL_NAME", "p"),
        ("NODE_SELECTOR", "kubescaler-e2e/none=1"),
        ("SERVER_POD_LABEL_NAME", "app"),
        ("SERVER_POD_LABEL_VALUE", "none"),
        ("LEADER_ELECTION_NAMESPACE", "default"),
        ("LEADER_ELECTION_LEASE_NAME", lease_name.as_str()),
        ("LEADER_ELECTION_LEASE_DURATION_SEC", "6"),
        ("LEADER_ELECTION_IDENTITY", "renewer"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    let config = kubescaler::config::load(&kubescaler::config::ConfigSources {
        env,
        ..Default::default()
    })
    .unwrap();
    let telemetry = Arc::new(kubescaler::telemetry::Telemetry::new(Duration::from_secs(
        1,
    )));
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let (led_tx, mut led_rx) = tokio::sync::watch::channel(false);
    let election = tokio::spawn({
        let telemetry = Arc::clone(&telemetry);
        async move {
            kubescaler::leader::run_as_leader(client, &config, telemetry, stop_rx, |mut stop| {
                let _ = led_tx.send(true);
                async move {
                    let _ = stop.wait_for(|s| *s).await;
                }
            })
            .await
        }
    });
    tokio::time::timeout(Duration::from_secs(30), led_rx.wait_for(|l| *l))
        .await
        .expect("leadership within 30 s")
        .unwrap();
    // The idle window: 6 s leases are renewed 4 s after the last renewal.
    let window_start = jiff::Timestamp::now();
    let window = Duration::from_secs(21);
    tokio::time::sleep(window).await;
    let window_end = jiff::Timestamp::now();
    let _ = stop_tx.send(true);
    election.await.unwrap().unwrap();
    tokio::time::sleep(Duration::from_secs(1)).await;

    let text = std::fs::read_to_string(&audit_log).unwrap();
    let mut verbs: BTreeMap<String, usize> = BTreeMap::new();
    for event in text
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
    {
        let at: Option<jiff::Timestamp> = event["requestReceivedTimestamp"]
            .as_str()
            .and_then(|t| t.parse().ok());
        let ours = event["stage"] == "RequestReceived"
            && event["user"]["username"] == "kubescaler-e2e"
            && event["requestURI"]
                .as_str()
                .is_some_and(|u| u.contains(&format!("/leases/{lease_name}")));
        if ours && at.is_some_and(|t| t >= window_start && t <= window_end) {
            *verbs
                .entry(event["verb"].as_str().unwrap_or_default().to_string())
                .or_default() += 1;
        }
    }
    let _ = writeln!(
        std::io::stderr(),
        "leader election: an idle leader's Lease requests in {}s (6 s lease): {verbs:?}",
        window.as_secs()
    );
    let renewals = verbs.get("update").copied().unwrap_or(0);
    // 21 s / 4 s: 5 renewals (one more or less at the edges).
    assert!(
        (4..=6).contains(&renewals),
        "renewals in {window:?}: {verbs:?}"
    );
    assert_eq!(
        verbs.values().sum::<usize>(),
        renewals,
        "a renewal sent more than its one PUT: {verbs:?}"
    );
    // SIGTERM's equivalent released it.
    let leases: Api<Lease> =
        Api::namespaced(cluster::client_or_skip(test).await.unwrap(), "default");
    let lease = leases.get(&lease_name).await.unwrap();
    assert_eq!(lease.spec.and_then(|s| s.holder_identity), None);
    let _ = leases.delete(&lease_name, &Default::default()).await;
}
