//! The controller: watches `BeeosInstance` resources and drives their BeeOS instances.
//!
//! [`reconcile`] is the only code in the operator that talks to both Kubernetes and BeeOS;
//! [`plan`] decides what to do next and [`status`] what the status should say, both pure.

mod plan;
mod reconcile;
mod request;
mod snapshot;
mod status;

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use futures::StreamExt;
use kube::ResourceExt;
use kube::runtime::controller::{Action, Config as ControllerConfig, Controller};
use kube::runtime::events::{Recorder, Reporter};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::runtime::{Predicate, WatchStreamExt, predicates, reflector, watcher};
use kube::{Api, Client};

use crate::beeos::{BeeosClient, ClientOptions, Credential, Fingerprint};
use crate::crd::{
    BOOKKEEPING_ANNOTATIONS, BeeosInstance, INSTANCE_ID_ANNOTATION, REPLACEMENT_ID_ANNOTATION,
    RETIRING_ID_ANNOTATION,
};
use crate::error::Error;
use crate::metrics::Metrics;

/// How often to look at instances, and how to back off.
#[derive(Clone, Debug)]
pub struct Intervals {
    /// While an instance is between states (deploying, starting, stopping, destroying).
    pub transition_poll: Duration,
    /// While an instance is steady.
    pub steady_poll: Duration,
    /// Retrying a problem that needs a person (a change to the resource retries at once).
    pub stalled_retry: Duration,
    /// First retry after a transient failure; doubles per failure up to `max_backoff`.
    pub min_backoff: Duration,
    pub max_backoff: Duration,
    /// How long a deploy whose answer was lost may take to show up in BeeOS's list before the
    /// operator concludes it never happened and deploys again.
    pub deploy_grace: Duration,
}

impl Default for Intervals {
    fn default() -> Self {
        Self {
            transition_poll: Duration::from_secs(3),
            steady_poll: Duration::from_secs(60),
            stalled_retry: Duration::from_secs(600),
            min_backoff: Duration::from_secs(1),
            max_backoff: Duration::from_secs(300),
            deploy_grace: Duration::from_secs(120),
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
/// pool and one rate-limit bucket across reconciles.
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

/// What every reconcile shares.
pub struct Context {
    pub client: Client,
    pub beeos: BeeosClients,
    pub recorder: Recorder,
    pub intervals: Intervals,
    pub metrics: Arc<Metrics>,
    /// The batched listings steady instances are read from.
    snapshots: snapshot::Snapshots,
    /// Consecutive transient failures per resource, for exponential backoff.
    failures: Mutex<HashMap<ObjectRef<BeeosInstance>, u32>>,
    /// The watched resources, to tell whether an instance is already owned.
    stores: Mutex<Vec<Store<BeeosInstance>>>,
}

impl Context {
    pub fn new(
        client: Client,
        beeos: BeeosClients,
        intervals: Intervals,
        metrics: Arc<Metrics>,
        reporter: Reporter,
    ) -> Self {
        Self {
            recorder: Recorder::new(client.clone(), reporter),
            client,
            beeos,
            intervals,
            metrics,
            snapshots: snapshot::Snapshots::default(),
            failures: Mutex::new(HashMap::new()),
            stores: Mutex::new(Vec::new()),
        }
    }

    /// Every other watched resource, whatever its namespace.
    fn other_resources(&self, resource: &BeeosInstance) -> Vec<Arc<BeeosInstance>> {
        let stores = self.stores.lock().unwrap_or_else(PoisonError::into_inner);
        stores
            .iter()
            .flat_map(|store| store.state())
            .filter(|other| other.metadata.uid != resource.metadata.uid)
            .collect()
    }

    /// The instance ids recorded by every other watched resource.
    fn claimed_ids(&self, resource: &BeeosInstance) -> Vec<String> {
        self.other_resources(resource)
            .iter()
            .flat_map(|other| {
                [
                    INSTANCE_ID_ANNOTATION,
                    REPLACEMENT_ID_ANNOTATION,
                    RETIRING_ID_ANNOTATION,
                ]
                .into_iter()
                .filter_map(|key| other.annotations().get(key).cloned())
                .collect::<Vec<_>>()
            })
            .collect()
    }

    /// Whether an older resource (the first to record it) already owns `instance_id`.
    fn claimed_by_older(&self, resource: &BeeosInstance, instance_id: &str) -> bool {
        let age = |r: &BeeosInstance| (r.metadata.creation_timestamp.clone(), r.name_any());
        self.other_resources(resource).iter().any(|other| {
            other
                .annotations()
                .get(INSTANCE_ID_ANNOTATION)
                .map(String::as_str)
                == Some(instance_id)
                && age(other) < age(resource)
        })
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
    let mut readers = Vec::new();
    let controllers = apis.into_iter().map(|api| {
        let (reader, writer) = reflector::store();
        readers.push(reader.clone());
        context
            .stores
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(reader.clone());
        // Our own status and bookkeeping writes do not wake the resource again (the reconcile
        // that made them asks for its own requeue); every user change does.
        let changes = watcher(api, watcher::Config::default().any_semantic())
            .default_backoff()
            .reflect(writer)
            .applied_objects()
            .predicate_filter(
                predicates::generation
                    .combine(user_annotations)
                    .combine(predicates::finalizers),
                Default::default(),
            );
        Controller::for_stream(changes, reader)
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
            })
    });
    let controllers: Vec<_> = controllers.collect();
    tokio::spawn(async move {
        for reader in readers {
            if reader.wait_until_ready().await.is_err() {
                return;
            }
        }
        synced();
    });
    futures::future::join_all(controllers).await;
}

/// A hash of the annotations users set (the operator's bookkeeping left out).
fn user_annotations(resource: &BeeosInstance) -> Option<u64> {
    use std::hash::{Hash, Hasher};
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    resource
        .annotations()
        .iter()
        .filter(|(key, _)| !BOOKKEEPING_ANNOTATIONS.contains(&key.as_str()))
        .for_each(|entry| entry.hash(&mut hasher));
    Some(hasher.finish())
}

/// Re-exported for the reconcile driver's return type.
pub(crate) type ReconcileResult = Result<Action, Error>;
