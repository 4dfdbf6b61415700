//! The HTTP listener: `/healthz` (liveness), `/readyz` (readiness), `/metrics` (Prometheus
//! text) and `/debug/plan` (the last pass's plan with every node explained, JSON), served by
//! every replica, leader or standby.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use tokio::net::TcpListener;

use crate::kubernetes::Kubernetes;
use crate::telemetry::Telemetry;

/// What the endpoints read.
#[derive(Clone)]
pub struct HttpState {
    /// Metrics and liveness.
    pub telemetry: Arc<Telemetry>,
    /// For readiness: whether its caches are synced.
    pub k8s: Arc<dyn Kubernetes>,
}

/// The router of the endpoints.
pub fn router(state: HttpState) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route("/debug/plan", get(debug_plan))
        .with_state(state)
}

/// Binds `addr` (so a taken port fails at start, not later).
pub async fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    TcpListener::bind(addr).await
}

/// Serves until `shutdown` completes.
pub async fn serve(
    listener: TcpListener,
    state: HttpState,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, router(state))
        .with_graceful_shutdown(shutdown)
        .await
}

async fn healthz(State(s): State<HttpState>) -> impl IntoResponse {
    if s.telemetry.is_live() {
        (StatusCode::OK, "ok\n")
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "scale loop has not finished a pass within 3 ticks plus the cloud retry allowance\n",
        )
    }
}

async fn readyz(State(s): State<HttpState>) -> impl IntoResponse {
    let synced = s.k8s.synced();
    let resolved = s.telemetry.is_provider_resolved();
    if synced && resolved {
        return (StatusCode::OK, "ok\n".to_string());
    }
    let mut why = Vec::new();
    if !synced {
        why.push("cluster caches not synced");
    }
    if !resolved {
        why.push("cloud provider not resolved");
    }
    (
        StatusCode::SERVICE_UNAVAILABLE,
        format!("not ready: {}\n", why.join(", ")),
    )
}

async fn metrics(State(s): State<HttpState>) -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        s.telemetry.encode(),
    )
}

/// The last pass's plan: each node's class, servers, free slots and what kubescaler does with
/// it or why not, then the actions and the pool summary. A standby has none (it plans nothing).
async fn debug_plan(State(s): State<HttpState>) -> impl IntoResponse {
    match s.telemetry.last_plan() {
        Some(json) => (
            StatusCode::OK,
            [(header::CONTENT_TYPE, "application/json")],
            json,
        ),
        None => (
            StatusCode::SERVICE_UNAVAILABLE,
            [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
            "no plan yet: this replica has not run a pass (a standby never does)\n".to_string(),
        ),
    }
}
