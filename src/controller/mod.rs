//! The controller: watches `BeeosInstance` resources and drives their BeeOS instances.
//!
//! [`reconcile`] is the only code in the operator that talks to both Kubernetes and BeeOS;
//! [`plan`] decides what to do next and [`status`] what the status should say, both pure.
//! Around them: [`index`] answers "who owns this instance, who reads this Secret" without scans,
//! [`fleet`] turns BeeOS polling into an informer that wakes only resources whose instance
//! changed, and [`secrets`] reads, protects and watches the Secrets resources use.

mod bookkeeping;
mod connection;
mod deploy;
mod fleet;
mod index;
mod plan;
mod reconcile;
mod report;
mod request;
mod secrets;
mod status;

#[cfg(test)]
mod driver_tests;
#[cfg(test)]
mod fixtures;

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use futures::StreamExt;
use kube::ResourceExt;
use kube::runtime::controller::{Action, Config as ControllerConfig, Controller};
use kube::runtime::events::Reporter;
use kube::runtime::reflector::{ObjectRef, Store};
use kube::runtime::{Predicate, WatchStreamExt, reflector, watcher};
use kube::{Api, Client};
use tokio::sync::mpsc;

use crate::beeos::{BeeosClient, ClientOptions, Credential, Fingerprint};
use crate::crd::{
    BOOKKEEPING_ANNOTATIONS, BeeosInstance, CLAIM_ANNOTATION, INSTANCE_ID_ANNOTATION,
    ObservedInstance, PAUSED_ANNOTATION, REPLACEMENT_ID_ANNOTATION,
};
use crate::error::Error;
use crate::metrics::Metrics;

pub use index::{Key, SecretRef};

/// How often to look at instances, and how to back off.
#[derive(Clone, Debug)]
pub struct Intervals {
    /// First poll of an instance in transition (deploying, starting, stopping, destroying);
    /// later polls of a long transition come more slowly, up to `steady_poll`.
    pub transition_poll: Duration,
    /// How often each account's instances are listed while steady.
    pub steady_poll: Duration,
    /// Retrying a problem that needs a person (a change to the resource retries at once).
    pub stalled_retry: Duration,
    /// Retrying while a Secret a resource names does not exist (GitOps often applies the
    /// resource before its Secret materialises); costs a Secret read, never a BeeOS call.
    pub missing_secret_retry: Duration,
    /// First retry after a transient failure; doubles per failure up to `max_backoff`.
    pub min_backoff: Duration,
    pub max_backoff: Duration,
    /// How long a deploy whose answer was lost may take to show up in BeeOS's list before the
    /// operator concludes it never happened and deploys again. A deploy is never sent on a
    /// mark older than half of it.
    pub deploy_grace: Duration,
    /// How long an instance may stay in transition (or running but not online) before the
    /// resource is `Stalled` with reason `TransitionTimeout`.
    pub transition_timeout: Duration,
    /// How long before a trial instance expires its resource gets a `TrialExpiring` warning.
    pub trial_expiry_warning: Duration,
}

impl Default for Intervals {
    fn default() -> Self {
        Self {
            transition_poll: Duration::from_secs(3),
            steady_poll: Duration::from_secs(60),
            stalled_retry: Duration::from_secs(600),
            missing_secret_retry: Duration::from_secs(10),
            min_backoff: Duration::from_secs(1),
            max_backoff: Duration::from_secs(300),
            deploy_grace: Duration::from_secs(120),
            transition_timeout: Duration::from_secs(900),
            trial_expiry_warning: Duration::from_secs(72 * 3600),
        }
    }
}

/// Which namespaces to watch.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Namespaces {
    All,
    Only(Vec<String>),
}

/// Builds BeeOS clients per credential and keeps them, so each credential keeps one connection
/// pool and one set of rate-limit buckets across reconciles.
pub struct BeeosClients {
    base_url: String,
    options: ClientOptions,
    default_credential: Option<Credential>,
    clients: Mutex<HashMap<Fingerprint, BeeosClient>>,
}

impl BeeosClients {
    pub fn new(
        base_url: String,
        options: ClientOptions,
        default_credential: Option<Credential>,
    ) -> Self {
        Self {
            base_url,
            options,
            default_credential,
            clients: Mutex::new(HashMap::new()),
        }
    }

    /// The operator's default credential, if it has one.
    pub fn default_credential(&self) -> Option<&Credential> {
        self.default_credential.as_ref()
    }

    /// The client for `credential`, built on first use.
    pub fn client_for(&self, credential: &Credential) -> Result<BeeosClient, crate::beeos::Error> {
        let mut clients = self.clients.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(client) = clients.get(credential.fingerprint()) {
            return Ok(client.clone());
        }
        let client = match clients.values().next() {
            // Share the first client's connection pool and TLS setup.
            Some(template) => template.with_credential(credential.clone())?,
            None => BeeosClient::new(&self.base_url, credential.clone(), self.options.clone())?,
        };
        clients.insert(*credential.fingerprint(), client.clone());
        Ok(client)
    }
}

/// The watched resources (one store per watched namespace, or one for all) and the indexes
/// over them.
#[derive(Default)]
pub struct Resources {
    stores: Mutex<Vec<Store<BeeosInstance>>>,
    index: Mutex<index::Index>,
}

impl Resources {
    fn index(&self) -> std::sync::MutexGuard<'_, index::Index> {
        self.index.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn add_store(&self, store: Store<BeeosInstance>) {
        self.stores
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(store);
    }

    /// The resource as last watched.
    pub fn get(&self, key: &Key) -> Option<Arc<BeeosInstance>> {
        let reference = key.object_ref();
        self.stores
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .find_map(|store| store.get(&reference))
    }

    /// Every watched resource (for gauges; a snapshot of shared pointers).
    pub fn all(&self) -> Vec<Arc<BeeosInstance>> {
        self.stores
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .flat_map(|store| store.state())
            .collect()
    }

    /// The resources that name `instance_id` in any slot.
    pub fn naming(&self, instance_id: &str) -> Vec<Key> {
        self.index().naming(instance_id)
    }

    /// Whether `key`'s status no longer shows what BeeOS reports of an instance it holds, so
    /// it must be reconciled even though the instance did not change since the last poll (the
    /// operator restarted, a status write was lost). Paused and claimed resources are left
    /// alone: they deliberately do not follow their instance.
    pub fn status_differs(&self, key: &Key, observed: &ObservedInstance) -> bool {
        let Some(resource) = self.get(key) else {
            return false;
        };
        let annotation = |name: &str| resource.annotations().get(name).map(String::as_str);
        if annotation(PAUSED_ANNOTATION) == Some("true") {
            return false;
        }
        let status = resource.status.as_ref();
        if annotation(INSTANCE_ID_ANNOTATION) == Some(observed.id.as_str()) {
            if self.index().ownership(&resource) != index::Ownership::Owned {
                return false;
            }
            return status.and_then(|s| s.instance.as_ref()) != Some(observed);
        }
        if annotation(REPLACEMENT_ID_ANNOTATION) == Some(observed.id.as_str()) {
            return status.and_then(|s| s.replacement.as_deref()) != Some(observed);
        }
        false
    }
}

/// What every reconcile shares.
pub struct Context {
    pub client: Client,
    pub beeos: BeeosClients,
    /// Who the operator's events say reported them.
    pub reporter: Reporter,
    pub intervals: Intervals,
    pub metrics: Arc<Metrics>,
    resources: Arc<Resources>,
    fleet: fleet::Fleet,
    /// Resources to reconcile now (an instance changed, a Secret changed).
    wake: mpsc::UnboundedSender<ObjectRef<BeeosInstance>>,
    wake_receiver: Mutex<Option<mpsc::UnboundedReceiver<ObjectRef<BeeosInstance>>>>,
    /// Secrets whose users changed: maybe their protection can go.
    secrets_to_check: mpsc::UnboundedSender<SecretRef>,
    secrets_receiver: Mutex<Option<mpsc::UnboundedReceiver<SecretRef>>>,
    /// Consecutive transient failures per resource, for exponential backoff.
    failures: Mutex<HashMap<ObjectRef<BeeosInstance>, u32>>,
    /// Resources this process has reconciled at least once.
    looked_at: Mutex<HashSet<Key>>,
    /// The resourceVersion of the operator's own last write to each Secret (its label and
    /// finalizer): the watch event it causes is no change to tell anyone about.
    own_secret_writes: Mutex<HashMap<SecretRef, String>>,
    /// What each resource was last warned of (a Stalled cause, a trial expiry), so a reconcile
    /// that runs before the status recording it reaches the cache does not warn again.
    warned: Mutex<HashMap<(Key, &'static str), String>>,
}

impl Context {
    pub fn new(
        client: Client,
        beeos: BeeosClients,
        intervals: Intervals,
        metrics: Arc<Metrics>,
        reporter: Reporter,
    ) -> Self {
        let resources = Arc::new(Resources::default());
        let (wake, wake_receiver) = mpsc::unbounded_channel();
        let (secrets_to_check, secrets_receiver) = mpsc::unbounded_channel();
        Self {
            reporter,
            client,
            beeos,
            fleet: fleet::Fleet::new(intervals.clone(), resources.clone(), wake.clone()),
            intervals,
            metrics,
            resources,
            wake,
            wake_receiver: Mutex::new(Some(wake_receiver)),
            secrets_to_check,
            secrets_receiver: Mutex::new(Some(secrets_receiver)),
            failures: Mutex::new(HashMap::new()),
            looked_at: Mutex::new(HashSet::new()),
            own_secret_writes: Mutex::new(HashMap::new()),
            warned: Mutex::new(HashMap::new()),
        }
    }

    /// Records one more transient failure of `object` and returns how long to wait: exponential
    /// from `min_backoff`, capped, with up to 50% jitter so a burst of failures spreads out, and
    /// never sooner than BeeOS's Retry-After.
    fn backoff(&self, object: ObjectRef<BeeosInstance>, retry_after: Option<Duration>) -> Duration {
        let mut failures = self.failures.lock().unwrap_or_else(PoisonError::into_inner);
        let count = failures.entry(object).or_insert(0);
        *count = count.saturating_add(1);
        let exponential = self
            .intervals
            .min_backoff
            .saturating_mul(1 << (*count - 1).min(16))
            .min(self.intervals.max_backoff);
        let jittered = exponential.mul_f64(1.0 + rand::random::<f64>() * 0.5);
        jittered.max(retry_after.unwrap_or_default())
    }

    fn clear_backoff(&self, object: &ObjectRef<BeeosInstance>) {
        self.failures
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(object);
    }

    /// Notes that `key` was warned of `what` with `detail`; false when it already was.
    fn warn_once(&self, key: &Key, what: &'static str, detail: &str) -> bool {
        let mut warned = self.warned.lock().unwrap_or_else(PoisonError::into_inner);
        let previous = warned.insert((key.clone(), what), detail.to_owned());
        previous.as_deref() != Some(detail)
    }

    /// `key` is no longer in the state it was warned of: a later return to it warns again.
    fn clear_warning(&self, key: &Key, what: &'static str) {
        self.warned
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&(key.clone(), what));
    }

    /// Whether this is the first time this process reconciles `key` (and notes that it did).
    fn first_look(&self, key: &Key) -> bool {
        self.looked_at
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(key.clone())
    }

    /// Takes in one watch event: the indexes follow it; a deleted resource releases its BeeOS
    /// account and maybe its Secrets.
    fn observe_event(&self, event: &watcher::Event<BeeosInstance>) {
        let secrets = self.resources.index().apply(event);
        if let watcher::Event::Delete(resource) = event {
            let key = Key::of(resource);
            self.fleet.release(&key);
            self.looked_at
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .remove(&key);
            self.warned
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .retain(|(warned, _), _| *warned != key);
            self.clear_backoff(&ObjectRef::from_obj(resource));
        }
        for secret in secrets {
            let _ = self.secrets_to_check.send(secret);
        }
    }
}

/// Runs the controller until `shutdown` completes, one watch per namespace when limited.
/// `synced` is called once every watch has listed its resources (the operator may then
/// report itself ready).
pub async fn run(
    context: Arc<Context>,
    namespaces: Namespaces,
    concurrency: u16,
    shutdown: impl std::future::Future<Output = ()> + Send + Sync + 'static,
    synced: impl FnOnce() + Send + 'static,
) {
    let apis: Vec<Api<BeeosInstance>> = match &namespaces {
        Namespaces::All => vec![Api::all(context.client.clone())],
        Namespaces::Only(names) => names
            .iter()
            .map(|ns| Api::namespaced(context.client.clone(), ns))
            .collect(),
    };
    let shutdown = futures::future::FutureExt::shared(Box::pin(shutdown));

    // Wake-ups from the fleet and the Secret watch, routed to the controller of the resource's
    // namespace.
    let mut routes: HashMap<Option<String>, mpsc::UnboundedSender<ObjectRef<BeeosInstance>>> =
        HashMap::new();
    // Each watch reports its first complete list once. (Waiting on the stores instead would
    // compete with the controllers' own wait for them.)
    let (listed_tx, mut listed_rx) = mpsc::unbounded_channel::<()>();
    let watches = apis.len();
    let mut controllers = Vec::new();
    for api in apis {
        let namespace = match &namespaces {
            Namespaces::All => None,
            Namespaces::Only(_) => Some(api_namespace(&api)),
        };
        let (route, triggers) = mpsc::unbounded_channel();
        routes.insert(namespace, route);
        let (reader, writer) = reflector::store();
        context.resources.add_store(reader.clone());
        let observer = context.clone();
        let mut listed = Some(listed_tx.clone());
        // Our own status and bookkeeping writes do not wake the resource again (the reconcile
        // that made them asks for what it needs); every user change does.
        let changes = watcher(api, watcher::Config::default().any_semantic())
            .default_backoff()
            .modify(slim)
            .map(move |event| {
                if let Ok(event) = &event {
                    observer.observe_event(event);
                    if matches!(event, watcher::Event::InitDone)
                        && let Some(listed) = listed.take()
                    {
                        let _ = listed.send(());
                    }
                }
                event
            })
            .reflect(writer)
            .applied_objects()
            .predicate_filter(
                kube::runtime::predicates::generation.combine(user_annotations),
                Default::default(),
            );
        let controller = Controller::for_stream(changes, reader)
            .reconcile_on(tokio_stream_of(triggers))
            .with_config(ControllerConfig::default().concurrency(concurrency))
            .graceful_shutdown_on(shutdown.clone())
            .run(
                reconcile::reconcile,
                reconcile::error_policy,
                context.clone(),
            )
            .for_each(|result| async move {
                if let Err(err) = result {
                    tracing::debug!(error = %err, "reconcile did not complete");
                }
            });
        controllers.push(controller);
    }

    let wake_receiver = context
        .wake_receiver
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .take();
    if let Some(mut wake_receiver) = wake_receiver {
        tokio::spawn(async move {
            while let Some(object) = wake_receiver.recv().await {
                let route = routes.get(&object.namespace).or_else(|| routes.get(&None));
                if let Some(route) = route {
                    let _ = route.send(object);
                }
            }
        });
    }
    let secrets_receiver = context
        .secrets_receiver
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .take();
    let background = futures::future::join3(
        secrets::watch(context.clone(), namespaces.clone()),
        secrets::release_unused(context.clone(), secrets_receiver),
        gauges(context.clone()),
    );
    drop(listed_tx);
    tokio::spawn(async move {
        for _ in 0..watches {
            if listed_rx.recv().await.is_none() {
                return;
            }
        }
        tracing::info!("every watch has listed its resources");
        synced();
    });
    tokio::select! {
        _ = futures::future::join_all(controllers) => {}
        _ = background => {}
    }
}

fn api_namespace(api: &Api<BeeosInstance>) -> String {
    api.resource_url()
        .split('/')
        .skip_while(|part| *part != "namespaces")
        .nth(1)
        .unwrap_or_default()
        .to_owned()
}

fn tokio_stream_of<T: Send + 'static>(
    mut receiver: mpsc::UnboundedReceiver<T>,
) -> impl futures::Stream<Item = T> + Send + 'static {
    futures::stream::poll_fn(move |cx| receiver.poll_recv(cx))
}

/// Drops what the operator never reads before the object is cached: managed fields and
/// kubectl's last-applied copy of the whole object (systemPrompt and all) would otherwise
/// dominate the memory of 10,000 cached resources.
fn slim(resource: &mut BeeosInstance) {
    resource.managed_fields_mut().clear();
    resource
        .annotations_mut()
        .remove("kubectl.kubernetes.io/last-applied-configuration");
}

/// A hash of the annotations users set: the operator's bookkeeping left out, and the instance
/// id left out while it is the one the operator itself recorded (so recording it wakes nothing,
/// while a hand-made change to it, or its loss, does).
fn user_annotations(resource: &BeeosInstance) -> Option<u64> {
    use std::hash::{Hash, Hasher};
    let annotations = resource.annotations();
    let recorded = annotations
        .get(CLAIM_ANNOTATION)
        .and_then(|claim| index::Claim::parse(claim))
        .map(|claim| claim.instance_id)
        .filter(|id| !id.is_empty());
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    annotations
        .iter()
        .filter(|(key, _)| !BOOKKEEPING_ANNOTATIONS.contains(&key.as_str()))
        .filter(|(key, value)| {
            !(key.as_str() == INSTANCE_ID_ANNOTATION && Some(*value) == recorded.as_ref())
        })
        .for_each(|entry| entry.hash(&mut hasher));
    let mirrored = resource
        .status
        .as_ref()
        .and_then(|s| s.instance.as_ref())
        .is_some_and(|i| !i.id.is_empty());
    let lost =
        (recorded.is_some() || mirrored) && !annotations.contains_key(INSTANCE_ID_ANNOTATION);
    lost.hash(&mut hasher);
    Some(hasher.finish())
}

/// Keeps the gauges of resources and instances by namespace, the run-time counters and the
/// trial expiries up to date: computed from the caches every few seconds, never from BeeOS.
async fn gauges(context: Arc<Context>) {
    let mut tick = tokio::time::interval(Duration::from_secs(10));
    loop {
        tick.tick().await;
        let resources = context.resources.all();
        context.metrics.set_resource_gauges(&resources);
        let (run_times, expiries) = run_times_and_expiries(&context, &resources);
        context.metrics.set_run_times(run_times);
        context.metrics.set_trial_expiries(&expiries);
    }
}

/// Each resource's run time (retired instances, the current one, and one being retired that is
/// not yet counted in the retired seconds) and each trial's expiry.
fn run_times_and_expiries(
    context: &Context,
    resources: &[Arc<BeeosInstance>],
) -> (Vec<crate::metrics::RunTime>, Vec<(String, String, i64)>) {
    let mut run_times = Vec::new();
    let mut expiries = Vec::new();
    for resource in resources {
        let Some(current) = resource.annotations().get(INSTANCE_ID_ANNOTATION) else {
            continue;
        };
        let Some(seen) = context.fleet.seen(current) else {
            continue;
        };
        let namespace = resource.namespace().unwrap_or_default();
        let name = resource.name_any();
        let retiring = resource
            .annotations()
            .get(crate::crd::RETIRING_ID_ANNOTATION)
            .and_then(|id| context.fleet.seen(id))
            .filter(|r| r.observed.desired_status.as_deref() != Some("terminated"))
            .map_or(0, |r| r.total_run_seconds);
        let retired = resource
            .status
            .as_ref()
            .and_then(|s| s.retired_run_seconds)
            .unwrap_or(0);
        let seconds = retired + seen.total_run_seconds + retiring;
        run_times.push(crate::metrics::RunTime {
            namespace: namespace.clone(),
            name: name.clone(),
            instance_id: current.clone(),
            agent_framework: seen.agent_framework.clone(),
            region: seen.observed.region.clone().unwrap_or_default(),
            seconds: u64::try_from(seconds).unwrap_or(0),
        });
        if seen.observed.is_trial == Some(true)
            && let Some(at) = seen
                .observed
                .expires_at
                .as_deref()
                .and_then(|at| at.parse::<k8s_openapi::jiff::Timestamp>().ok())
        {
            expiries.push((namespace, name, at.as_second()));
        }
    }
    (run_times, expiries)
}

/// Re-exported for the reconcile driver's return type.
pub(crate) type ReconcileResult = Result<Action, Error>;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::BeeosInstanceSpec;

    fn with_annotations(pairs: &[(&str, &str)]) -> BeeosInstance {
        let mut resource = BeeosInstance::new("agent", BeeosInstanceSpec::default());
        resource.metadata.namespace = Some("team-a".into());
        resource.metadata.annotations = Some(
            pairs
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
        );
        resource
    }

    #[test]
    fn recording_an_id_wakes_nothing_but_a_hand_made_change_does() {
        let before = user_annotations(&with_annotations(&[]));
        let recorded = user_annotations(&with_annotations(&[
            (INSTANCE_ID_ANNOTATION, "inst-1"),
            (CLAIM_ANNOTATION, "team-a/agent/inst-1"),
        ]));
        assert_eq!(before, recorded);
        let repointed = user_annotations(&with_annotations(&[
            (INSTANCE_ID_ANNOTATION, "inst-2"),
            (CLAIM_ANNOTATION, "team-a/agent/inst-1"),
        ]));
        assert_ne!(before, repointed);
        let lost = user_annotations(&with_annotations(&[(
            CLAIM_ANNOTATION,
            "team-a/agent/inst-1",
        )]));
        assert_ne!(
            before, lost,
            "losing the recorded id wakes the resource to restore it"
        );
        let recreating =
            user_annotations(&with_annotations(&[(CLAIM_ANNOTATION, "team-a/agent/")]));
        assert_eq!(before, recreating, "an empty claim is bookkeeping");
        let paused = user_annotations(&with_annotations(&[(PAUSED_ANNOTATION, "true")]));
        assert_ne!(before, paused);
    }

    #[test]
    fn slimming_drops_what_the_operator_never_reads() {
        let mut resource = with_annotations(&[
            ("kubectl.kubernetes.io/last-applied-configuration", "{...}"),
            (INSTANCE_ID_ANNOTATION, "inst-1"),
        ]);
        resource.metadata.managed_fields = Some(vec![Default::default()]);
        slim(&mut resource);
        assert!(resource.managed_fields().is_empty());
        assert_eq!(resource.annotations().len(), 1);
    }
}
