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
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use crate::metrics::Metrics;

/// What the probes report, and whether this replica leads.
pub struct Health {
    ready: AtomicBool,
    leader: Gauge,
    registry: Registry,
}

impl Default for Health {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("beeos_operator");
        let leader = Gauge::default();
        registry.register(
            "leader",
            "1 while this replica runs the controller (it holds the Lease, or leader election is off)",
            leader.clone(),
        );
        Self {
            ready: AtomicBool::new(false),
            leader,
            registry,
        }
    }
}

impl Health {
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
        self.leader.set(i64::from(leader));
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

/// The controller's metrics followed by the leader gauge, as one exposition.
fn encode_all(metrics: &Metrics, health: &Health) -> Result<String, std::fmt::Error> {
    let controller = metrics.encode()?;
    let mut text = controller
        .strip_suffix("# EOF\n")
        .unwrap_or(&controller)
        .to_owned();
    prometheus_client::encoding::text::encode(&mut text, &health.registry)?;
    Ok(text)
}

async fn metrics_text(State(state): State<AppState>) -> impl IntoResponse {
    match encode_all(&state.metrics, &state.health) {
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
    fn metrics_end_once_and_say_whether_this_replica_leads() {
        let health = Health::default();
        let metrics = Metrics::default();
        let standby = encode_all(&metrics, &health).unwrap();
        assert!(standby.contains("beeos_operator_leader 0\n"), "{standby}");
        assert!(standby.contains("# TYPE beeos_operator_reconciles counter"));
        assert_eq!(standby.matches("# EOF").count(), 1, "{standby}");
        assert!(standby.ends_with("# EOF\n"));

        health.set_leader(true);
        let leading = encode_all(&metrics, &health).unwrap();
        assert!(leading.contains("beeos_operator_leader 1\n"), "{leading}");
    }
}
