//! Prometheus metrics of the operator, served on `/metrics` by [`crate::server`].
//!
//! Labels are static reasons and operation names, never resource names or instance ids, so the
//! series count stays bounded at any number of resources.

use std::time::Instant;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabel {
    reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OperationLabel {
    operation: &'static str,
}

/// The operator's metrics, registered in one registry.
pub struct Metrics {
    registry: Registry,
    reconciles: Counter,
    reconcile_failures: Family<ReasonLabel, Counter>,
    reconcile_duration: Histogram,
    beeos_mutations: Family<OperationLabel, Counter>,
    beeos_errors: Family<ReasonLabel, Counter>,
    status_writes: Counter,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("beeos_operator");
        let reconciles = Counter::default();
        registry.register("reconciles", "Reconciles started", reconciles.clone());
        let reconcile_failures = Family::<ReasonLabel, Counter>::default();
        registry.register(
            "reconcile_failures",
            "Reconciles that failed on a Kubernetes call, by reason",
            reconcile_failures.clone(),
        );
        let reconcile_duration = Histogram::new([
            0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
        ]);
        registry.register(
            "reconcile_duration_seconds",
            "Time spent in one reconcile",
            reconcile_duration.clone(),
        );
        let beeos_mutations = Family::<OperationLabel, Counter>::default();
        registry.register(
            "beeos_mutations",
            "Successful BeeOS calls that change an instance, by operation",
            beeos_mutations.clone(),
        );
        let beeos_errors = Family::<ReasonLabel, Counter>::default();
        registry.register(
            "beeos_errors",
            "Failed BeeOS calls, by reason",
            beeos_errors.clone(),
        );
        let status_writes = Counter::default();
        registry.register(
            "status_writes",
            "Status writes to the API server",
            status_writes.clone(),
        );
        Self {
            registry,
            reconciles,
            reconcile_failures,
            reconcile_duration,
            beeos_mutations,
            beeos_errors,
            status_writes,
        }
    }
}

/// Observes a reconcile's duration when dropped.
pub struct ReconcileTimer<'a> {
    started: Instant,
    histogram: &'a Histogram,
}

impl Drop for ReconcileTimer<'_> {
    fn drop(&mut self) {
        self.histogram.observe(self.started.elapsed().as_secs_f64());
    }
}

impl Metrics {
    pub fn reconcile_started(&self) -> ReconcileTimer<'_> {
        self.reconciles.inc();
        ReconcileTimer {
            started: Instant::now(),
            histogram: &self.reconcile_duration,
        }
    }

    pub fn reconcile_failed(&self, reason: &'static str) {
        self.reconcile_failures
            .get_or_create(&ReasonLabel { reason })
            .inc();
    }

    pub fn beeos_mutation(&self, operation: &'static str) {
        self.beeos_mutations
            .get_or_create(&OperationLabel { operation })
            .inc();
    }

    pub fn beeos_error(&self, reason: &'static str) {
        self.beeos_errors
            .get_or_create(&ReasonLabel { reason })
            .inc();
    }

    pub fn status_written(&self) {
        self.status_writes.inc();
    }

    /// The OpenMetrics text exposition.
    pub fn encode(&self) -> Result<String, std::fmt::Error> {
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &self.registry)?;
        Ok(text)
    }
}
