//! Prometheus metrics of the operator, served on `/metrics` by [`crate::server`].
//!
//! Labels are static reasons, operation names, HTTP codes and namespaces, so most series counts
//! stay bounded at any number of resources (namespaces times a handful of states). The
//! charge-back series (run time, trial expiry) are the exception: one per resource, by design.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use kube::ResourceExt;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::{ConstGauge, Gauge};
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use crate::beeos::{CallObserver, Operation};
use crate::crd::{BeeosInstance, PAUSED_ANNOTATION, condition};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabel {
    reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OperationLabel {
    operation: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StateLabels {
    namespace: String,
    state: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StatusLabels {
    namespace: String,
    status: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    route: &'static str,
    code: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteLabel {
    route: &'static str,
}

/// Every metric family the operator exports, as named in `# TYPE` lines (counters get `_total`
/// on their samples, histograms `_bucket`, `_sum` and `_count`). Dashboards and alert rules may
/// use only these; a test keeps the list equal to what is registered.
pub const FAMILIES: &[&str] = &[
    "beeos_operator_reconciles",
    "beeos_operator_reconcile_failures",
    "beeos_operator_reconcile_duration_seconds",
    "beeos_operator_beeos_mutations",
    "beeos_operator_beeos_errors",
    "beeos_operator_status_writes",
    "beeos_operator_resources",
    "beeos_operator_instances",
    "beeos_operator_reconcile_backlog",
    "beeos_operator_beeos_requests",
    "beeos_operator_beeos_rate_limit_wait_seconds",
    "beeos_operator_leader",
    "beeos_operator_run_seconds",
    "beeos_operator_namespace_run_seconds",
    "beeos_operator_trial_expiry_timestamp_seconds",
];

/// The run time of one resource's instances, for charge-back.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RunTime {
    pub namespace: String,
    pub name: String,
    /// The current instance.
    pub instance_id: String,
    pub agent_framework: String,
    pub region: String,
    /// Seconds run by every instance the resource has had (retired ones included).
    pub seconds: u64,
}

/// The run time of each resource's instances as last exported, by namespace and name, encoded
/// at scrape time: one map holds the series (a labelled family would hold its labels twice,
/// once to find the series and once to drop it when the instance is replaced).
#[derive(Debug, Default)]
struct RunTimes(std::sync::Mutex<BTreeMap<(String, String), ExportedRun>>);

#[derive(Debug)]
struct ExportedRun {
    instance_id: String,
    agent_framework: String,
    region: String,
    seconds: u64,
}

impl RunTimes {
    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<(String, String), ExportedRun>> {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

impl Collector for RunTimes {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let runs = self.lock();
        let mut by_namespace: BTreeMap<&str, i64> = BTreeMap::new();
        let mut family = encoder.encode_descriptor(
            "run_seconds",
            "Seconds run by the BeeOS instances of each resource, retired ones included (charge-back)",
            None,
            MetricType::Counter,
        )?;
        for ((namespace, name), run) in runs.iter() {
            let labels = [
                ("namespace", namespace.as_str()),
                ("name", name),
                ("instance_id", &run.instance_id),
                ("agent_framework", &run.agent_framework),
                ("region", &run.region),
            ];
            ConstCounter::new(run.seconds).encode(family.encode_family(&labels)?)?;
            *by_namespace.entry(namespace).or_default() +=
                i64::try_from(run.seconds).unwrap_or(i64::MAX);
        }
        let mut family = encoder.encode_descriptor(
            "namespace_run_seconds",
            "Seconds run by the BeeOS instances of the resources now in each namespace",
            None,
            MetricType::Gauge,
        )?;
        for (namespace, seconds) in by_namespace {
            ConstGauge::new(seconds).encode(family.encode_family(&[("namespace", namespace)])?)?;
        }
        Ok(())
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResourceLabels {
    namespace: String,
    name: String,
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
    resources: Family<StateLabels, Gauge>,
    instances: Family<StatusLabels, Gauge>,
    reconcile_backlog: Gauge,
    beeos_requests: Family<RequestLabels, Counter>,
    rate_limit_wait: Family<RouteLabel, Histogram>,
    leader: Gauge,
    run_times: Arc<RunTimes>,
    trial_expiry: Family<ResourceLabels, Gauge>,
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
        let resources = Family::<StateLabels, Gauge>::default();
        registry.register(
            "resources",
            "BeeosInstance resources by namespace and state (Ready, Stalled, Reconciling, Paused, Deleting)",
            resources.clone(),
        );
        let instances = Family::<StatusLabels, Gauge>::default();
        registry.register(
            "instances",
            "Managed BeeOS instances by namespace and BeeOS status",
            instances.clone(),
        );
        let reconcile_backlog = Gauge::default();
        registry.register(
            "reconcile_backlog",
            "Resources whose current generation the operator has not observed yet",
            reconcile_backlog.clone(),
        );
        let beeos_requests = Family::<RequestLabels, Counter>::default();
        registry.register(
            "beeos_requests",
            "BeeOS API calls by route and outcome (HTTP status, or timeout, transport, not_sent)",
            beeos_requests.clone(),
        );
        let rate_limit_wait = Family::<RouteLabel, Histogram>::new_with_constructor(|| {
            Histogram::new([0.001, 0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0])
        });
        registry.register(
            "beeos_rate_limit_wait_seconds",
            "Time BeeOS calls waited for the client-side rate limit, by route",
            rate_limit_wait.clone(),
        );
        let leader = Gauge::default();
        registry.register(
            "leader",
            "1 while this process holds the leader Lease and reconciles, else 0",
            leader.clone(),
        );
        let run_times = Arc::new(RunTimes::default());
        registry.register_collector(Box::new(run_times.clone()));
        let trial_expiry = Family::<ResourceLabels, Gauge>::default();
        registry.register(
            "trial_expiry_timestamp_seconds",
            "When each resource's trial instance expires (Unix seconds); trials only",
            trial_expiry.clone(),
        );
        Self {
            registry,
            run_times,
            trial_expiry,
            resources,
            instances,
            reconcile_backlog,
            beeos_requests,
            rate_limit_wait,
            leader,
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

    /// Whether this process leads (and reconciles).
    pub fn set_leader(&self, leading: bool) {
        self.leader.set(i64::from(leading));
    }

    /// Recomputes the gauges of resources and instances from the watched resources.
    pub fn set_resource_gauges(&self, resources: &[Arc<BeeosInstance>]) {
        let mut states: BTreeMap<(String, &'static str), i64> = BTreeMap::new();
        let mut statuses: BTreeMap<(String, String), i64> = BTreeMap::new();
        let mut backlog = 0;
        for resource in resources {
            let namespace = resource.namespace().unwrap_or_default();
            *states
                .entry((namespace.clone(), state_of(resource)))
                .or_default() += 1;
            let status = resource.status.as_ref();
            if let Some(instance) = status.and_then(|s| s.instance.as_ref()) {
                let beeos_status = instance.status.clone().unwrap_or_else(|| "unknown".into());
                *statuses.entry((namespace, beeos_status)).or_default() += 1;
            }
            if status.and_then(|s| s.observed_generation) != resource.metadata.generation {
                backlog += 1;
            }
        }
        self.resources.clear();
        for ((namespace, state), count) in states {
            self.resources
                .get_or_create(&StateLabels { namespace, state })
                .set(count);
        }
        self.instances.clear();
        for ((namespace, status), count) in statuses {
            self.instances
                .get_or_create(&StatusLabels { namespace, status })
                .set(count);
        }
        self.reconcile_backlog.set(backlog);
    }

    /// Moves the run-time counters to `run_times` (absolute values that only grow; the
    /// per-namespace sums follow at scrape time); drops the series of resources that are gone
    /// and of instances that were replaced, so there is one series per resource.
    pub fn set_run_times(&self, run_times: Vec<RunTime>) {
        let mut exported = self.run_times.lock();
        let mut next = BTreeMap::new();
        for run in run_times {
            let key = (run.namespace, run.name);
            // A counter never goes back: within one instance's series a lower reading (a
            // retiring instance already gone, its seconds not yet in the status) keeps the
            // higher one. A replaced instance starts a new series.
            let seconds = match exported.remove(&key) {
                Some(previous) if previous.instance_id == run.instance_id => {
                    previous.seconds.max(run.seconds)
                }
                _ => run.seconds,
            };
            next.insert(
                key,
                ExportedRun {
                    instance_id: run.instance_id,
                    agent_framework: run.agent_framework,
                    region: run.region,
                    seconds,
                },
            );
        }
        // What was not listed again belongs to resources that are gone.
        *exported = next;
    }

    /// Sets the expiry of every trial instance, `(namespace, name, Unix seconds)`.
    pub fn set_trial_expiries(&self, expiries: &[(String, String, i64)]) {
        self.trial_expiry.clear();
        for (namespace, name, at) in expiries {
            self.trial_expiry
                .get_or_create(&ResourceLabels {
                    namespace: namespace.clone(),
                    name: name.clone(),
                })
                .set(*at);
        }
    }

    /// The OpenMetrics text exposition.
    pub fn encode(&self) -> Result<String, std::fmt::Error> {
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &self.registry)?;
        Ok(text)
    }
}

/// One state per resource, for the `resources` gauge: deleting and paused first (they explain
/// everything else), then the kstatus conditions.
fn state_of(resource: &BeeosInstance) -> &'static str {
    if resource.metadata.deletion_timestamp.is_some() {
        return "Deleting";
    }
    if resource
        .annotations()
        .get(PAUSED_ANNOTATION)
        .map(String::as_str)
        == Some("true")
    {
        return "Paused";
    }
    let is_true = |type_: &str| {
        resource.status.as_ref().is_some_and(|s| {
            s.conditions
                .iter()
                .any(|c| c.type_ == type_ && c.status == "True")
        })
    };
    if is_true(condition::STALLED) {
        "Stalled"
    } else if is_true(condition::READY) {
        "Ready"
    } else {
        "Reconciling"
    }
}

/// Counts BeeOS calls by route and outcome, and rate-limit waits, for the client.
pub struct BeeosCallMetrics(pub Arc<Metrics>);

impl CallObserver for BeeosCallMetrics {
    fn finished(&self, operation: Operation, outcome: &str) {
        self.0
            .beeos_requests
            .get_or_create(&RequestLabels {
                route: operation.as_str(),
                code: outcome.to_owned(),
            })
            .inc();
    }

    fn waited(&self, operation: Operation, waited: Duration) {
        self.0
            .rate_limit_wait
            .get_or_create(&RouteLabel {
                route: operation.as_str(),
            })
            .observe(waited.as_secs_f64());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::BeeosInstanceSpec;

    #[test]
    fn the_families_list_names_exactly_what_is_registered() {
        let metrics = Arc::new(Metrics::default());
        // Labelled families show only once they have a sample.
        metrics.reconcile_failed("X");
        metrics.beeos_mutation("deploy");
        metrics.beeos_error("BeeosTimeout");
        let mut resource = BeeosInstance::new("a", crate::crd::BeeosInstanceSpec::default());
        resource.metadata.namespace = Some("ns".into());
        resource.status = Some(crate::crd::BeeosInstanceStatus {
            instance: Some(Default::default()),
            ..Default::default()
        });
        metrics.set_resource_gauges(&[Arc::new(resource)]);
        let observer = BeeosCallMetrics(metrics.clone());
        observer.finished(Operation::Get, "200");
        observer.waited(Operation::Get, Duration::ZERO);
        metrics.set_run_times(vec![run("a", "inst-1", 5)]);
        metrics.set_trial_expiries(&[("ns".into(), "a".into(), 1)]);
        let text = metrics.encode().expect("encodes");
        let mut exported: Vec<&str> = text
            .lines()
            .filter_map(|line| line.strip_prefix("# TYPE "))
            .filter_map(|rest| rest.split(' ').next())
            .collect();
        exported.sort_unstable();
        let mut listed = FAMILIES.to_vec();
        listed.sort_unstable();
        assert_eq!(exported, listed);
    }

    fn run(name: &str, instance_id: &str, seconds: u64) -> RunTime {
        RunTime {
            namespace: "ns".into(),
            name: name.into(),
            instance_id: instance_id.into(),
            agent_framework: "beeos-claw".into(),
            region: "eu-west-1".into(),
            seconds,
        }
    }

    #[test]
    fn run_time_survives_a_replace_and_keeps_one_series_per_resource() {
        let metrics = Metrics::default();
        metrics.set_run_times(vec![run("a", "inst-1", 100), run("b", "inst-9", 7)]);
        // Replaced: the new instance's series carries the retired seconds on.
        metrics.set_run_times(vec![run("a", "inst-2", 130), run("b", "inst-9", 8)]);
        let text = metrics.encode().expect("encodes");
        assert!(
            text.contains(
                r#"instance_id="inst-2",agent_framework="beeos-claw",region="eu-west-1"} 130"#
            ),
            "{text}"
        );
        assert!(
            !text.contains("inst-1"),
            "the replaced instance's series is gone:\n{text}"
        );
        assert!(
            text.contains(r#"beeos_operator_namespace_run_seconds{namespace="ns"} 138"#),
            "{text}"
        );
        // b deleted: its series goes.
        metrics.set_run_times(vec![run("a", "inst-2", 131)]);
        let text = metrics.encode().expect("encodes");
        assert!(!text.contains("inst-9"), "{text}");
    }

    #[test]
    fn run_time_of_one_instance_never_goes_back() {
        let metrics = Metrics::default();
        metrics.set_run_times(vec![run("a", "inst-1", 100)]);
        // A retiring instance's seconds dropped out before the status counts them as retired.
        metrics.set_run_times(vec![run("a", "inst-1", 60)]);
        let text = metrics.encode().expect("encodes");
        assert!(
            text.contains(r#"region="eu-west-1"} 100"#),
            "the counter keeps its highest reading:\n{text}"
        );
    }

    #[test]
    fn gauges_count_resources_by_namespace_and_state_without_names() {
        let metrics = Metrics::default();
        let mut paused = BeeosInstance::new("secret-project-x", BeeosInstanceSpec::default());
        paused.metadata.namespace = Some("team-a".into());
        paused.metadata.annotations =
            Some([(PAUSED_ANNOTATION.to_owned(), "true".to_owned())].into());
        let mut fresh = BeeosInstance::new("other", BeeosInstanceSpec::default());
        fresh.metadata.namespace = Some("team-a".into());
        fresh.metadata.generation = Some(1);
        metrics.set_resource_gauges(&[Arc::new(paused), Arc::new(fresh)]);
        let text = metrics.encode().expect("encodes");
        assert!(
            text.contains(r#"beeos_operator_resources{namespace="team-a",state="Paused"} 1"#),
            "{text}"
        );
        assert!(
            text.contains(r#"beeos_operator_resources{namespace="team-a",state="Reconciling"} 1"#),
            "{text}"
        );
        assert!(
            text.contains("beeos_operator_reconcile_backlog 1"),
            "{text}"
        );
        assert!(!text.contains("secret-project-x"), "{text}");
    }

    #[test]
    fn calls_are_counted_by_route_and_outcome() {
        let metrics = Arc::new(Metrics::default());
        let observer = BeeosCallMetrics(metrics.clone());
        observer.finished(Operation::Deploy, "201");
        observer.finished(Operation::Deploy, "timeout");
        observer.waited(Operation::List, Duration::from_millis(20));
        let text = metrics.encode().expect("encodes");
        assert!(
            text.contains(r#"beeos_operator_beeos_requests_total{route="deploy",code="201"} 1"#),
            "{text}"
        );
        assert!(
            text.contains(
                r#"beeos_operator_beeos_requests_total{route="deploy",code="timeout"} 1"#
            ),
            "{text}"
        );
        assert!(
            text.contains(r#"beeos_operator_beeos_rate_limit_wait_seconds_count{route="list"} 1"#),
            "{text}"
        );
    }
}
