//! The Grafana dashboard (`deploy/grafana/kubescaler.json`) and the alerts
//! (`deploy/prometheus/kubescaler-rules.yaml`) are built on what kubescaler exports: every
//! PromQL expression parses (promql-parser, a PromQL parser in Rust, as promtool would) and
//! names only metrics the daemon serves, checked against its metric registry and against a
//! real `/metrics` scrape of the binary in an end-to-end run (the DOKS fake and the control
//! plane, `tests/fullstack`).

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use promql_parser::parser::{self, Expr};
use promql_parser::util::{walk_expr, ExprVisitor};

mod cluster;
mod fullstack;
use fullstack::{run, World};

fn repo() -> PathBuf {
    std::env::current_dir().unwrap()
}

/// Every PromQL expression of the alerts and the dashboard, with where it is; the
/// dashboard's Grafana variables replaced by what Grafana sends.
fn expressions() -> Vec<(String, String)> {
    let mut out = Vec::new();
    let rules_path = repo().join("deploy/prometheus/kubescaler-rules.yaml");
    let rules: serde_yaml::Value =
        serde_yaml::from_str(&std::fs::read_to_string(&rules_path).unwrap()).unwrap();
    assert_eq!(rules["kind"].as_str(), Some("PrometheusRule"));
    for group in rules["spec"]["groups"].as_sequence().unwrap() {
        for rule in group["rules"].as_sequence().unwrap() {
            let name = rule["alert"].as_str().unwrap().to_string();
            let expr = rule["expr"].as_str().unwrap().to_string();
            out.push((format!("alert {name}"), expr));
        }
    }
    let dash_path = repo().join("deploy/grafana/kubescaler.json");
    let dash: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&dash_path).unwrap()).unwrap();
    for panel in dash["panels"].as_array().unwrap() {
        for target in panel["targets"].as_array().unwrap() {
            let expr = target["expr"]
                .as_str()
                .unwrap()
                .replace("$__rate_interval", "2m")
                .replace("$namespace", ".*");
            out.push((
                format!("panel {:?}", panel["title"].as_str().unwrap_or("?")),
                expr,
            ));
        }
    }
    for variable in dash["templating"]["list"].as_array().unwrap() {
        if let Some(query) = variable["query"]["query"].as_str() {
            // label_values(metric, label) is Grafana's, not PromQL: its metric must exist.
            if let Some(inner) = query
                .strip_prefix("label_values(")
                .and_then(|q| q.split(',').next())
            {
                out.push((format!("variable {}", variable["name"]), inner.to_string()));
            }
        }
    }
    out
}

/// The metric names an expression selects.
fn metric_names(expr: &Expr) -> BTreeSet<String> {
    struct Names(BTreeSet<String>);
    impl ExprVisitor for Names {
        type Error = ();
        fn pre_visit(&mut self, expr: &Expr) -> Result<bool, ()> {
            match expr {
                Expr::VectorSelector(vs) => self.0.extend(vs.name.clone()),
                Expr::MatrixSelector(ms) => self.0.extend(ms.vs.name.clone()),
                _ => {}
            }
            Ok(true)
        }
    }
    let mut names = Names(BTreeSet::new());
    let _ = walk_expr(&mut names, expr);
    names.0
}

/// The sample names an OpenMetrics text exposes, from its `# TYPE` lines (a family with no
/// sample yet, e.g. a counter by kind before its first action, is still declared there).
fn exported(text: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for line in text.lines() {
        let Some(rest) = line.strip_prefix("# TYPE ") else {
            continue;
        };
        let mut parts = rest.split_whitespace();
        let (Some(name), Some(kind)) = (parts.next(), parts.next()) else {
            continue;
        };
        match kind {
            "counter" => {
                names.insert(format!("{name}_total"));
            }
            "histogram" => {
                for suffix in ["_bucket", "_sum", "_count"] {
                    names.insert(format!("{name}{suffix}"));
                }
            }
            "info" => {
                names.insert(format!("{name}_info"));
            }
            _ => {
                names.insert(name.to_string());
            }
        }
    }
    names
}

/// Asserts every expression parses and selects only `exported` metrics, and that the
/// dashboard and alerts cover what the issue asks of them.
fn check_against(exported: &BTreeSet<String>, source: &str) {
    let mut used = BTreeSet::new();
    for (place, expr) in expressions() {
        let parsed = parser::parse(&expr)
            .unwrap_or_else(|e| panic!("{place}: the expression does not parse: {e}\n{expr}"));
        for name in metric_names(&parsed) {
            assert!(
                exported.contains(&name),
                "{place} uses {name}, which {source} does not export: {exported:?}"
            );
            used.insert(name);
        }
    }
    for needed in [
        "kubescaler_buffer_slots",
        "kubescaler_free_slots",
        "kubescaler_available_slots",
        "kubescaler_pool_target_size",
        "kubescaler_nodes",
        "kubescaler_actions_total",
        "kubescaler_errors_total",
        "kubescaler_reconcile_duration_seconds_bucket",
        "kubescaler_leader",
    ] {
        assert!(used.contains(needed), "nothing shows {needed}");
    }
}

/// Without a cluster: against the daemon's registry, as `/metrics` encodes it.
#[test]
fn dashboard_and_alert_expressions_parse_and_use_only_exported_metrics() {
    // The counters start at zero; the gauges by state appear with the first pass.
    let telemetry = kubescaler::telemetry::Telemetry::new(Duration::from_secs(10));
    telemetry.observe_pool(&kubescaler::planner::PoolSummary::default());
    let names = exported(&telemetry.encode());
    assert!(names.contains("kubescaler_leader"), "{names:?}");
    check_against(&names, "the metric registry");
    // The alerts the issue names, each once.
    let alerts: BTreeSet<String> = expressions()
        .into_iter()
        .filter_map(|(place, _)| place.strip_prefix("alert ").map(str::to_string))
        .collect();
    for alert in [
        "KubescalerBufferShort",
        "KubescalerPassesFailing",
        "KubescalerNoLeader",
        "KubescalerDeletionsCancelled",
        "KubescalerNodesNotRegistering",
    ] {
        assert!(alerts.contains(alert), "no alert {alert}: {alerts:?}");
    }
}

/// End to end: the same check against a real `/metrics` scrape of the kubescaler binary
/// after it has run passes on a pool.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dashboard_and_alert_metrics_are_in_a_real_metrics_scrape() {
    let test = "e2e_observability::real_scrape";
    let Some((client, kubeconfig, spec_path)) = fullstack::prerequisites_or_skip(test).await else {
        return;
    };
    let world = World::start(spec_path, client, &kubeconfig, "obs", false).await;
    run(world, |w| async move {
        let w = Arc::clone(&w);
        w.create_servers(2).await;
        let port = w.daemons()[0].port;
        let text = w
            .eventually(
                "a /metrics scrape after passes",
                Duration::from_secs(60),
                || async {
                    let text = fullstack::scrape_metrics(port).await?;
                    // The histogram's count line is there (as 0) before any pass: wait for a
                    // finished one, after which every labelled family has its series.
                    text.lines()
                        .filter_map(|l| {
                            l.strip_prefix("kubescaler_reconcile_duration_seconds_count ")
                        })
                        .any(|n| n.trim().parse::<f64>().is_ok_and(|n| n >= 1.0))
                        .then_some(text)
                },
            )
            .await;
        check_against(&exported(&text), "a real /metrics scrape");
    })
    .await;
}
