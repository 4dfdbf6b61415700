//! Full stack: the `kubescaler` binary with a config file, its DigitalOcean driver, the DOKS
//! fake and the real control plane (harness in `tests/fullstack`): scale up, then down by
//! attrition, losing no server, also with the fake injecting API faults throughout.
//!
//! Gated by `tests/cluster` (`KUBESCALER_E2E_KUBECONFIG`; required in CI).

use std::collections::BTreeSet;
use std::sync::Arc;

use doks_fake::Operation;

mod cluster;
mod fullstack;
use fullstack::{assert_clean_end, run, scale_up_then_down_by_attrition, stop_with_sigterm, World};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn e2e_digitalocean_scales_up_for_servers_and_down_by_attrition_losing_none() {
    let test = "e2e_digitalocean";
    let Some((client, kubeconfig, spec_path)) = fullstack::prerequisites_or_skip(test).await else {
        return;
    };
    let world = World::start(spec_path, client, &kubeconfig, "do", false).await;
    run(world, |w| async move {
        scale_up_then_down_by_attrition(Arc::clone(&w), 1).await;
        assert_clean_end(&w);
        assert!(
            w.daemons()[0].log_count("planned") >= 10,
            "few passes logged"
        );
        stop_with_sigterm(&w);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn e2e_digitalocean_rides_out_api_faults_throughout_losing_none() {
    let test = "e2e_digitalocean_faults";
    let Some((client, kubeconfig, spec_path)) = fullstack::prerequisites_or_skip(test).await else {
        return;
    };
    let world = World::start(spec_path, client, &kubeconfig, "do-faults", true).await;
    run(world, |w| async move {
        scale_up_then_down_by_attrition(Arc::clone(&w), 3).await;
        assert_clean_end(&w);
        let log = w.fake.requests();
        let faulted: BTreeSet<Operation> = log
            .iter()
            .filter(|r| r.fault.is_some())
            .filter_map(|r| r.operation)
            .collect();
        for op in [
            Operation::GetNodePool,
            Operation::UpdateNodePool,
            Operation::DeleteNode,
        ] {
            assert!(faulted.contains(&op), "no fault hit {op:?}");
        }
        let faults = log.iter().filter(|r| r.fault.is_some()).count();
        assert!(faults >= 10, "only {faults} faults injected");
        assert!(
            w.daemons()[0].log_count("retrying") > 0,
            "the driver never retried"
        );
        stop_with_sigterm(&w);
    })
    .await;
}
