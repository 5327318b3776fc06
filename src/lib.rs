//! beeos-operator: runs BeeOS AI-agent instances from `BeeosInstance` resources.

/// The BeeOS API client: wire types, errors, credential and per-credential rate limit.
pub mod beeos;
/// Command-line flags and environment.
pub mod config;
/// Watches resources and drives their instances (the only module that talks to both worlds).
pub mod controller;
/// The `BeeosInstance` resource: spec, status, conditions, finalizer and annotations.
pub mod crd;
/// The controller's error type.
pub mod error;
/// Prometheus metrics.
pub mod metrics;
/// `/healthz`, `/readyz` and `/metrics`.
pub mod server;
/// Logging setup.
pub mod telemetry;
