//! The probe and metrics server: `/healthz`, `/readyz` and `/metrics` on their own port, apart
//! from anything the operator talks to.
//!
//! Readiness is decided elsewhere (the controller's watches have synced; or, for a standby
//! replica, it reaches the API server and reads the Lease) and only reported here, together
//! with `beeos_operator_leader`, which says whether this replica runs the controller.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;

use crate::metrics::Metrics;

/// What the probes report, and whether this replica leads (the `beeos_operator_leader`
/// gauge of the operator's metrics).
pub struct Health {
    ready: AtomicBool,
    metrics: Arc<Metrics>,
}

impl Health {
    /// Probes not ready yet, reporting leadership into `metrics`.
    pub fn new(metrics: Arc<Metrics>) -> Self {
        Self {
            ready: AtomicBool::new(false),
            metrics,
        }
    }

    /// Marks the operator ready (it serves: watches synced, or a standby that reaches the API
    /// server) or not (starting, taking over, shutting down).
    pub fn set_ready(&self, ready: bool) {
        self.ready.store(ready, Ordering::Relaxed);
    }

    /// Whether `/readyz` answers 200.
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Relaxed)
    }

    /// Records whether this replica runs the controller.
    pub fn set_leader(&self, leader: bool) {
        self.metrics.set_leader(leader);
    }
}

#[derive(Clone)]
struct AppState {
    health: Arc<Health>,
    metrics: Arc<Metrics>,
}

/// Serves until `shutdown` completes.
pub async fn serve(
    address: SocketAddr,
    health: Arc<Health>,
    metrics: Arc<Metrics>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let app = Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics_text))
        .with_state(AppState { health, metrics });
    let listener = tokio::net::TcpListener::bind(address).await?;
    tracing::info!(%address, "serving /healthz, /readyz and /metrics");
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await
}

async fn readyz(State(state): State<AppState>) -> impl IntoResponse {
    if state.health.is_ready() {
        (StatusCode::OK, "ok")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "not ready")
    }
}

async fn metrics_text(State(state): State<AppState>) -> impl IntoResponse {
    match state.metrics.encode() {
        Ok(text) => (
            StatusCode::OK,
            [(
                header::CONTENT_TYPE,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
            )],
            text,
        )
            .into_response(),
        Err(_) => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metrics_say_whether_this_replica_leads() {
        let metrics = Arc::new(Metrics::default());
        let health = Health::new(metrics.clone());
        let standby = metrics.encode().unwrap();
        assert!(standby.contains("beeos_operator_leader 0\n"), "{standby}");
        assert_eq!(
            standby.matches("# TYPE beeos_operator_leader ").count(),
            1,
            "{standby}"
        );
        health.set_leader(true);
        assert!(
            metrics
                .encode()
                .unwrap()
                .contains("beeos_operator_leader 1\n")
        );
    }
}
