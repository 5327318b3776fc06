//! The reconcile driver: gathers what is true in Kubernetes and at BeeOS, takes the one step
//! [`next_step`] chooses, records the outcome in annotations, status and events, and says when
//! to look again. Decisions live in `plan` and `status`; this file only does I/O.
//!
//! Crash safety rests on ordering. Every deploy is preceded by a pending mark written with
//! optimistic concurrency (so of two operator processes only one deploys), and followed by
//! recording the instance id. Whenever a mark is found without an id the deploy may have
//! happened unseen, and the step is to look for it by name and adopt it.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::runtime::events::{Event, EventType};
use kube::runtime::reflector::ObjectRef;
use kube::{Resource, ResourceExt};
use serde_json::{Value, json};

use super::plan::{Found, Observation, Remote, Slot, Step, Which, find_deployed, next_step};
use super::request::{deploy_request, digest, inject};
use super::snapshot::get_if_exists;
use super::status::{Problem, StatusInput, Update, desired_status, observed_instance};
use super::{Context, ReconcileResult};
use crate::beeos::{BeeosClient, Credential, DeployRequest, ErrorClass, Instance, ListQuery};
use crate::crd::{
    BeeosInstance, DEPLOY_STARTED_AT_ANNOTATION, DEPLOYED_DIGEST_ANNOTATION, DeletionPolicy,
    FINALIZER, INSTANCE_ID_ANNOTATION, PAUSED_ANNOTATION, REPLACEMENT_DIGEST_ANNOTATION,
    REPLACEMENT_ID_ANNOTATION, REPLACEMENT_STARTED_AT_ANNOTATION, RESTART_REQUESTED_AT_ANNOTATION,
    RETIRING_ID_ANNOTATION, UpdateStrategy, condition, reason,
};
use crate::error::Error;

/// The field manager of every write the operator makes.
const MANAGER: &str = "beeos-operator";

/// Instances created up to this long before a pending mark still count as its deploy: the
/// mark uses the operator's clock, `createdAt` BeeOS's.
const CLOCK_SKEW_ALLOWANCE: SignedDuration = SignedDuration::from_secs(60);

/// The annotations of one slot.
struct SlotKeys {
    id: &'static str,
    started_at: Option<&'static str>,
    digest: Option<&'static str>,
}

fn keys(which: Which) -> SlotKeys {
    match which {
        Which::Current => SlotKeys {
            id: INSTANCE_ID_ANNOTATION,
            started_at: Some(DEPLOY_STARTED_AT_ANNOTATION),
            digest: Some(DEPLOYED_DIGEST_ANNOTATION),
        },
        Which::Replacement => SlotKeys {
            id: REPLACEMENT_ID_ANNOTATION,
            started_at: Some(REPLACEMENT_STARTED_AT_ANNOTATION),
            digest: Some(REPLACEMENT_DIGEST_ANNOTATION),
        },
        Which::Retiring => SlotKeys {
            id: RETIRING_ID_ANNOTATION,
            started_at: None,
            digest: None,
        },
    }
}

fn annotation<'a>(resource: &'a BeeosInstance, key: Option<&str>) -> Option<&'a str> {
    resource
        .annotations()
        .get(key?)
        .map(String::as_str)
        .filter(|value| !value.is_empty())
}

/// A slot as recorded in the resource's annotations (not yet looked up at BeeOS).
fn recorded_slot(resource: &BeeosInstance, which: Which) -> Slot<'_> {
    let keys = keys(which);
    Slot {
        id: annotation(resource, Some(keys.id)),
        deploy_started: annotation(resource, keys.started_at).is_some(),
        digest: annotation(resource, keys.digest),
        remote: Remote::NotLooked,
    }
}

pub async fn reconcile(resource: Arc<BeeosInstance>, ctx: Arc<Context>) -> ReconcileResult {
    let namespace = resource.namespace().ok_or(Error::NotNamespaced)?;
    let api: Api<BeeosInstance> = Api::namespaced(ctx.client.clone(), &namespace);
    let _timer = ctx.metrics.reconcile_started();
    let object = ObjectRef::from_obj(&*resource);

    let restart_value = resource
        .annotations()
        .get(RESTART_REQUESTED_AT_ANNOTATION)
        .cloned();
    let last_restart = resource
        .status
        .as_ref()
        .and_then(|s| s.last_restart_requested_at.clone());
    let deleting = resource.meta().deletion_timestamp.is_some();
    let mut observation = Observation {
        deleting,
        has_finalizer: resource.finalizers().iter().any(|f| f == FINALIZER),
        paused: annotation(&resource, Some(PAUSED_ANNOTATION)) == Some("true"),
        deletion_policy: resource.spec.deletion_policy,
        power_state: resource.spec.power_state,
        update_strategy: resource.spec.update_strategy,
        restart_requested: restart_value.is_some() && restart_value != last_restart,
        desired_digest: None,
        current: recorded_slot(&resource, Which::Current),
        replacement: recorded_slot(&resource, Which::Replacement),
        retiring: recorded_slot(&resource, Which::Retiring),
        claimed_by_other: false,
    };
    let mut driver = Driver {
        api: &api,
        ctx: &ctx,
        resource: &resource,
        namespace: &namespace,
        secrets_read: Mutex::default(),
        instances: BTreeMap::new(),
        last_restart,
    };

    // Steps that need no BeeOS call come first, so that a resource without credentials can
    // still be paused, get its finalizer, or be deleted when nothing was ever deployed.
    match next_step(&observation) {
        Step::Paused => return driver.finish(Step::Paused, None, Update::None).await,
        Step::AddFinalizer => {
            driver.set_finalizer(true).await?;
            // The finalizer change wakes the resource again; the deploy happens then.
            return Ok(Action::await_change());
        }
        Step::RemoveFinalizer => return driver.release().await,
        Step::Steady if deleting => return Ok(Action::await_change()),
        _ => {}
    }

    let beeos = match driver.beeos_client().await? {
        Ok(beeos) => beeos,
        Err(problem) => {
            return driver
                .finish(Step::Steady, Some(problem), Update::None)
                .await;
        }
    };
    let request = if deleting {
        None
    } else {
        match driver.desired_request().await? {
            Ok(request) => Some(request),
            Err(problem) => {
                return driver
                    .finish(Step::Steady, Some(problem), Update::None)
                    .await;
            }
        }
    };
    let desired_digest = request.as_ref().map(digest);
    observation.desired_digest = desired_digest.as_deref();
    // Known from annotations alone, so a failed lookup below reports it too.
    let update = update_progress(&observation);

    // The instances as BeeOS reports them now; the observation borrows them. A steady
    // instance comes from its credential's batched listing, anything else from a direct GET.
    let steady = was_steady(&resource, &observation);
    let mut looked_up: BTreeMap<Which, Instance> = BTreeMap::new();
    for which in [Which::Current, Which::Replacement, Which::Retiring] {
        let Some(id) = observation.slot(which).id else {
            continue;
        };
        let found = if which == Which::Current && steady {
            ctx.snapshots
                .get(&beeos, id, ctx.intervals.steady_poll)
                .await
        } else {
            get_if_exists(&beeos, id).await
        };
        match found {
            Ok(Some(instance)) if !instance.is_terminated() => {
                looked_up.insert(which, instance);
            }
            Ok(_) => {}
            Err(err) => {
                return driver
                    .failed(Step::AwaitTransition, err, &object, update)
                    .await;
            }
        }
    }
    for which in [Which::Current, Which::Replacement, Which::Retiring] {
        let slot = observation.slot_mut(which);
        if slot.id.is_some() {
            slot.remote = match looked_up.get(&which) {
                Some(instance) => Remote::Found(instance),
                None => Remote::Gone,
            };
        }
    }
    observation.claimed_by_other = observation
        .current
        .id
        .is_some_and(|id| ctx.claimed_by_older(&resource, id));

    let step = next_step(&observation);
    tracing::debug!(?step, ?update, "planned");
    let outcome = match step {
        Step::Deploy(which) => {
            let request = request.unwrap_or_default();
            driver.deploy(&beeos, which, &request).await
        }
        Step::FindDeployed(which) => {
            let name = deploy_request(&resource.spec, &resource.name_any()).name;
            driver
                .find_deployed(&beeos, which, &name, &observation)
                .await
        }
        Step::RecordDigest => {
            let id = observation.current.id.unwrap_or_default();
            driver
                .record_digest(id, desired_digest.as_deref())
                .await
                .map(|()| None)
        }
        Step::Start | Step::Stop | Step::Restart => {
            let id = observation.current.id.unwrap_or_default();
            driver
                .power(&beeos, step, id, restart_value.as_deref())
                .await
        }
        Step::Destroy(which) => {
            let id = observation.slot(which).id.unwrap_or_default();
            driver.destroy(&beeos, id).await
        }
        Step::Forget(which) => driver.forget(which, &observation).await.map(|()| None),
        Step::PromoteReplacement => driver.promote(&observation).await.map(|()| None),
        Step::RetireForRecreate => driver
            .retire_for_recreate(&observation)
            .await
            .map(|()| None),
        Step::RemoveFinalizer => return driver.release().await,
        Step::InstanceGone => Ok(Some(Problem::NeedsAction {
            reason: reason::INSTANCE_GONE,
            message: format!(
                "instance {} does not exist at BeeOS or is not visible with these credentials; \
                 remove the {INSTANCE_ID_ANNOTATION} annotation to deploy a new one",
                observation.current.id.unwrap_or_default()
            ),
        })),
        Step::InstanceClaimed => Ok(Some(Problem::NeedsAction {
            reason: reason::INSTANCE_CLAIMED,
            message: format!(
                "instance {} is already owned by another BeeosInstance; give this one another \
                 {INSTANCE_ID_ANNOTATION} or remove the annotation to deploy a new instance",
                observation.current.id.unwrap_or_default()
            ),
        })),
        Step::AwaitTransition | Step::Steady | Step::Paused | Step::AddFinalizer => Ok(None),
    };
    // Answers from the step itself are newer than the lookups.
    for (which, instance) in looked_up {
        driver.instances.entry(which).or_insert(instance);
    }
    match outcome {
        Ok(problem) => {
            ctx.clear_backoff(&object);
            driver.finish(step, problem, update).await
        }
        Err(Error::Beeos(err)) => driver.failed(step, err, &object, update).await,
        Err(err) => Err(err),
    }
}

/// Transient Kubernetes failures: retry soon. BeeOS failures never get here; they are folded
/// into the status by the driver.
pub fn error_policy(_resource: Arc<BeeosInstance>, err: &Error, ctx: Arc<Context>) -> Action {
    tracing::warn!(error = %err, "reconcile failed");
    ctx.metrics.reconcile_failed(err.reason());
    Action::requeue(ctx.intervals.min_backoff.max(Duration::from_secs(1)))
}

/// Whether the resource was steady when last reconciled (Ready for this generation on the
/// recorded instance, with nothing deployed, replaced, retired or restarted), so its instance
/// may be read from the batched listing.
fn was_steady(resource: &BeeosInstance, o: &Observation<'_>) -> bool {
    let Some(status) = resource.status.as_ref() else {
        return false;
    };
    let ready = status.conditions.iter().any(|c| {
        c.type_ == condition::READY
            && c.status == "True"
            && c.observed_generation == resource.metadata.generation
    });
    let same_instance = status
        .instance
        .as_ref()
        .is_some_and(|instance| Some(instance.id.as_str()) == o.current.id);
    let up_to_date = o.desired_digest.is_some() && o.desired_digest == o.current.digest;
    ready
        && same_instance
        && up_to_date
        && !o.deleting
        && !o.restart_requested
        && !o.current.deploy_started
        && o.replacement.id.is_none()
        && !o.replacement.deploy_started
        && o.retiring.id.is_none()
}

/// What the status should say about a spec change in progress.
fn update_progress(o: &Observation<'_>) -> Update {
    let drifted = match (o.desired_digest, o.current.digest) {
        (Some(desired), Some(deployed)) => desired != deployed,
        _ => false,
    };
    match (drifted, o.update_strategy) {
        (true, UpdateStrategy::Replace) => Update::Replacing,
        (true, UpdateStrategy::Recreate) => Update::Recreating,
        (true, UpdateStrategy::OnDelete) => Update::DriftLeftAlone,
        // Recreate, after the old instance was retired and before the new one is recorded.
        (false, _) if o.current.id.is_none() && o.retiring.id.is_some() => Update::Recreating,
        (false, _) => Update::None,
    }
}

struct Driver<'a> {
    api: &'a Api<BeeosInstance>,
    ctx: &'a Context,
    resource: &'a BeeosInstance,
    namespace: &'a str,
    /// Secrets read in this reconcile, by name (`None`: not found).
    secrets_read: Mutex<HashMap<String, Option<Secret>>>,
    /// Instances as BeeOS last answered in this reconcile, by slot.
    instances: BTreeMap<Which, Instance>,
    last_restart: Option<String>,
}

impl Driver<'_> {
    /// The BeeOS client for the resource's credentials, or the problem that keeps it from one.
    async fn beeos_client(&self) -> Result<Result<BeeosClient, Problem>, Error> {
        let credential = match &self.resource.spec.credentials {
            Some(reference) => {
                let problem = |what: String| Problem::NeedsAction {
                    reason: reason::CREDENTIALS_UNAVAILABLE,
                    message: what,
                };
                let token = match self.secret_value(&reference.name, reference.key()).await? {
                    Ok(token) => token,
                    Err(missing) => return Ok(Err(problem(format!("credentials {missing}")))),
                };
                match Credential::new(token) {
                    Ok(credential) => credential,
                    Err(_) => {
                        return Ok(Err(problem(format!(
                            "key {:?} of credentials Secret {}/{} does not hold a BeeOS token",
                            reference.key(),
                            self.namespace,
                            reference.name
                        ))));
                    }
                }
            }
            None => match self.ctx.beeos.default_credential() {
                Some(credential) => credential.clone(),
                None => {
                    return Ok(Err(Problem::NeedsAction {
                        reason: reason::CREDENTIALS_UNAVAILABLE,
                        message: "no BeeOS credentials: set spec.credentials or give the \
                                  operator default credentials"
                            .into(),
                    }));
                }
            },
        };
        Ok(self
            .ctx
            .beeos
            .client_for(&credential)
            .map_err(|err| Problem::NeedsAction {
                reason: err.reason(),
                message: err.to_string(),
            }))
    }

    /// Reads one key of a Secret in the resource's namespace. `Err` names what is missing,
    /// never a value.
    async fn secret_value(&self, name: &str, key: &str) -> Result<Result<String, String>, Error> {
        // Each Secret is read once per reconcile, however many keys are taken from it.
        let cached = self
            .secrets_read
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(name)
            .cloned();
        let secret = match cached {
            Some(secret) => secret,
            None => {
                let secrets: Api<Secret> = Api::namespaced(self.ctx.client.clone(), self.namespace);
                let secret = secrets.get_opt(name).await.map_err(Error::ReadSecret)?;
                self.secrets_read
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .insert(name.to_owned(), secret.clone());
                secret
            }
        };
        let where_ = format!("Secret {}/{name}", self.namespace);
        let Some(secret) = secret else {
            return Ok(Err(format!("{where_} not found")));
        };
        let value = secret
            .data
            .as_ref()
            .and_then(|data| data.get(key))
            .map(|bytes| bytes.0.clone());
        Ok(match value {
            None => Err(format!("{where_} has no key {key:?}")),
            Some(bytes) => String::from_utf8(bytes)
                .map_err(|_| format!("key {key:?} of {where_} is not UTF-8 text")),
        })
    }

    /// The deploy body the spec asks for now, Secret values injected.
    async fn desired_request(&self) -> Result<Result<DeployRequest, Problem>, Error> {
        let mut request = deploy_request(&self.resource.spec, &self.resource.name_any());
        for injection in &self.resource.spec.secret_injections {
            let reference = &injection.secret_key_ref;
            let problem = |message: String| Problem::NeedsAction {
                reason: reason::SECRET_UNAVAILABLE,
                message,
            };
            let value = match self.secret_value(&reference.name, &reference.key).await? {
                Ok(value) => value,
                Err(missing) => {
                    return Ok(Err(problem(format!(
                        "secretInjections {:?}: {missing}",
                        injection.path
                    ))));
                }
            };
            if let Err(message) = inject(&mut request, &injection.path, value) {
                return Ok(Err(problem(format!("secretInjections: {message}"))));
            }
        }
        Ok(Ok(request))
    }

    /// Marks the slot as deploying (guarded by the resourceVersion, so a second operator
    /// process racing for the same resource loses here), deploys, and records the id.
    async fn deploy(
        &mut self,
        beeos: &BeeosClient,
        which: Which,
        request: &DeployRequest,
    ) -> Result<Option<Problem>, Error> {
        let keys = keys(which);
        let now = Timestamp::now().to_string();
        let request_digest = digest(request);
        let mut mark = vec![(keys.id, None)];
        mark.extend(keys.started_at.map(|k| (k, Some(now.as_str()))));
        mark.extend(keys.digest.map(|k| (k, Some(request_digest.as_str()))));
        match self.annotate(&mark, true).await {
            Ok(()) => {}
            // Someone else changed the resource first (maybe another operator marking it):
            // start again from what is there now.
            Err(Error::WriteAnnotations(kube::Error::Api(status))) if status.code == 409 => {
                return Ok(None);
            }
            Err(err) => {
                tracing::warn!(error = %err, "marking the deploy failed");
                return Ok(Some(Problem::Retrying {
                    reason: err.reason(),
                    message: err.to_string(),
                }));
            }
        }

        let instance = match beeos.deploy(request).await {
            Ok(instance) => instance,
            Err(err) => {
                if !err.may_have_taken_effect() {
                    // Nothing was created: clear the mark so a retry need not look first.
                    let mut clear = vec![];
                    clear.extend(keys.started_at.map(|k| (k, None)));
                    clear.extend(keys.digest.map(|k| (k, None)));
                    if let Err(clear_err) = self.annotate(&clear, false).await {
                        tracing::warn!(error = %clear_err, "clearing the deploy mark failed");
                    }
                }
                // Else the mark stays: the next reconcile looks for the instance.
                return Err(err.into());
            }
        };
        self.ctx.metrics.beeos_mutation("deploy");
        let mut record = vec![(keys.id, Some(instance.instance_id.as_str()))];
        record.extend(keys.started_at.map(|k| (k, None)));
        // The id must land however the resource changed meanwhile: no resourceVersion guard.
        // Should this fail, the mark stays and the next reconcile adopts the instance by name.
        if let Err(err) = self.annotate(&record, false).await {
            tracing::error!(instance_id = %instance.instance_id, error = %err,
                "deployed, but recording the instance id failed; it will be looked up");
        }
        let what = match which {
            Which::Replacement => "replacement ",
            _ => "",
        };
        self.publish(
            EventType::Normal,
            reason::DEPLOYED,
            "Deploy",
            format!("deployed {what}BeeOS instance {}", instance.instance_id),
        )
        .await;
        if which == Which::Current {
            // A restart asked for before the deploy is satisfied by the deploy itself.
            self.last_restart = self
                .resource
                .annotations()
                .get(RESTART_REQUESTED_AT_ANNOTATION)
                .cloned();
        }
        self.instances.insert(which, instance);
        Ok(None)
    }

    /// Looks for an instance a marked deploy may have created unseen, and adopts it.
    async fn find_deployed(
        &mut self,
        beeos: &BeeosClient,
        which: Which,
        name: &str,
        observation: &Observation<'_>,
    ) -> Result<Option<Problem>, Error> {
        let keys = keys(which);
        let marked_at = annotation(self.resource, keys.started_at)
            .and_then(|at| at.parse::<Timestamp>().ok())
            // An unreadable mark: assume the worst (just now) so the grace period applies.
            .unwrap_or_else(Timestamp::now);
        let listed = beeos.list_all(&ListQuery::search(name)).await?;
        let mut claimed = self.ctx.claimed_ids(self.resource);
        claimed.extend(
            [
                observation.current.id,
                observation.replacement.id,
                observation.retiring.id,
            ]
            .into_iter()
            .flatten()
            .map(str::to_owned),
        );
        let claimed: Vec<&str> = claimed.iter().map(String::as_str).collect();
        let grace = SignedDuration::try_from(self.ctx.intervals.deploy_grace)
            .unwrap_or(SignedDuration::MAX);
        let grace_over = Timestamp::now().duration_since(marked_at) > grace;
        let not_before = marked_at
            .checked_sub(CLOCK_SKEW_ALLOWANCE)
            .unwrap_or(marked_at);
        match find_deployed(&listed, name, not_before, &claimed, grace_over) {
            Found::One(id) => {
                let mut record = vec![(keys.id, Some(id.as_str()))];
                record.extend(keys.started_at.map(|k| (k, None)));
                self.annotate(&record, true).await?;
                self.publish(
                    EventType::Normal,
                    reason::ADOPTED,
                    "Adopt",
                    format!("found BeeOS instance {id}, deployed by an earlier attempt whose answer was lost"),
                )
                .await;
                if let Some(instance) = listed.into_iter().find(|i| i.instance_id == id) {
                    self.instances.insert(which, instance);
                }
                Ok(None)
            }
            Found::Several(ids) => Ok(Some(Problem::NeedsAction {
                reason: reason::AMBIGUOUS_DEPLOY,
                message: format!(
                    "several BeeOS instances named {name:?} appeared after the deploy started \
                     ({}); set {} to the one to keep and destroy the others",
                    ids.join(", "),
                    keys.id
                ),
            })),
            Found::NothingYet => Ok(None),
            Found::Nothing => {
                // The deploy never happened: clear the mark (guarded, in case another process
                // just marked it again) so the next reconcile deploys.
                let mut clear = vec![];
                clear.extend(keys.started_at.map(|k| (k, None)));
                clear.extend(keys.digest.map(|k| (k, None)));
                if let Err(err) = self.annotate(&clear, true).await {
                    tracing::info!(error = %err, "clearing a stale deploy mark failed");
                }
                Ok(None)
            }
        }
    }

    async fn power(
        &mut self,
        beeos: &BeeosClient,
        step: Step,
        instance_id: &str,
        restart_value: Option<&str>,
    ) -> Result<Option<Problem>, Error> {
        let (result, reason, action, operation) = match step {
            Step::Start => (
                beeos.start(instance_id).await,
                reason::STARTING,
                "Start",
                "start",
            ),
            Step::Stop => (
                beeos.stop(instance_id).await,
                reason::STOPPING,
                "Stop",
                "stop",
            ),
            _ => (
                beeos.restart(instance_id).await,
                reason::RESTARTING,
                "Restart",
                "restart",
            ),
        };
        match result {
            Ok(instance) => {
                self.ctx.metrics.beeos_mutation(operation);
                self.publish(
                    EventType::Normal,
                    reason,
                    action,
                    format!("{operation} BeeOS instance {instance_id}"),
                )
                .await;
                if step == Step::Restart {
                    self.last_restart = restart_value.map(str::to_owned);
                }
                self.instances.insert(Which::Current, instance);
                Ok(None)
            }
            // The instance moved under us; look again after the transition.
            Err(err) if err.class() == ErrorClass::Transition => Ok(None),
            Err(err) => Err(err.into()),
        }
    }

    async fn destroy(
        &mut self,
        beeos: &BeeosClient,
        instance_id: &str,
    ) -> Result<Option<Problem>, Error> {
        match beeos.destroy(instance_id).await {
            Ok(()) => {
                self.ctx.metrics.beeos_mutation("destroy");
                self.publish(
                    EventType::Normal,
                    reason::DELETING,
                    "Destroy",
                    format!("destroying BeeOS instance {instance_id}"),
                )
                .await;
                Ok(None)
            }
            // Gone already, or mid-transition (409): look again soon.
            Err(err) if err.is_not_found() || err.class() == ErrorClass::Transition => Ok(None),
            Err(err) => Err(err.into()),
        }
    }

    /// Records what an instance adopted through its annotation counts as deployed with.
    async fn record_digest(&self, instance_id: &str, digest: Option<&str>) -> Result<(), Error> {
        self.annotate(&[(DEPLOYED_DIGEST_ANNOTATION, digest)], false)
            .await?;
        self.publish(
            EventType::Normal,
            reason::ADOPTED,
            "Adopt",
            format!("adopted BeeOS instance {instance_id}"),
        )
        .await;
        Ok(())
    }

    /// Drops a slot whose instance is gone.
    async fn forget(&self, which: Which, observation: &Observation<'_>) -> Result<(), Error> {
        let keys = keys(which);
        let mut clear = vec![(keys.id, None)];
        clear.extend(keys.digest.map(|k| (k, None)));
        self.annotate(&clear, true).await?;
        if which == Which::Retiring {
            let id = observation.retiring.id.unwrap_or_default();
            self.publish(
                EventType::Normal,
                reason::RETIRED,
                "Destroy",
                format!("replaced BeeOS instance {id} is gone"),
            )
            .await;
        }
        Ok(())
    }

    /// Makes the ready replacement current and retires the old instance, in one guarded write.
    async fn promote(&self, observation: &Observation<'_>) -> Result<(), Error> {
        let old = observation.current.id;
        let new = observation.replacement.id;
        self.annotate(
            &[
                (INSTANCE_ID_ANNOTATION, new),
                (DEPLOYED_DIGEST_ANNOTATION, observation.replacement.digest),
                (RETIRING_ID_ANNOTATION, old),
                (REPLACEMENT_ID_ANNOTATION, None),
                (REPLACEMENT_DIGEST_ANNOTATION, None),
            ],
            true,
        )
        .await?;
        self.publish(
            EventType::Normal,
            reason::REPLACING,
            "Replace",
            format!(
                "BeeOS instance {} replaces {} (the spec changed)",
                new.unwrap_or_default(),
                old.unwrap_or_default()
            ),
        )
        .await;
        Ok(())
    }

    /// Recreate: retire the current instance; a new one is deployed once it is gone.
    async fn retire_for_recreate(&self, observation: &Observation<'_>) -> Result<(), Error> {
        let old = observation.current.id;
        self.annotate(
            &[
                (RETIRING_ID_ANNOTATION, old),
                (INSTANCE_ID_ANNOTATION, None),
                (DEPLOYED_DIGEST_ANNOTATION, None),
            ],
            true,
        )
        .await?;
        self.publish(
            EventType::Normal,
            reason::RECREATING,
            "Recreate",
            format!(
                "destroying BeeOS instance {} to deploy the changed spec",
                old.unwrap_or_default()
            ),
        )
        .await;
        Ok(())
    }

    /// Lets the resource go: its instances are destroyed, orphaned, or never existed.
    async fn release(&self) -> ReconcileResult {
        self.set_finalizer(false).await?;
        let id = annotation(self.resource, Some(INSTANCE_ID_ANNOTATION));
        let (reason, message) = match (self.resource.spec.deletion_policy, id) {
            (DeletionPolicy::Orphan, Some(id)) => (
                reason::ORPHANED,
                format!("left BeeOS instance {id} running (deletionPolicy Orphan)"),
            ),
            (_, Some(id)) => (reason::DESTROYED, format!("BeeOS instance {id} is gone")),
            (_, None) => (reason::DESTROYED, "no BeeOS instance to destroy".to_owned()),
        };
        self.publish(EventType::Normal, reason, "Delete", message)
            .await;
        Ok(Action::await_change())
    }

    /// Folds a BeeOS failure into the status: permanent ones stall (retried slowly, and at once
    /// on any change to the resource), transient ones back off with jitter.
    async fn failed(
        &mut self,
        step: Step,
        err: crate::beeos::Error,
        object: &ObjectRef<BeeosInstance>,
        update: Update,
    ) -> ReconcileResult {
        self.ctx.metrics.beeos_error(err.reason());
        let message = err.to_string();
        tracing::info!(error = %message, "BeeOS call failed");
        let (problem, requeue) = match err.class() {
            ErrorClass::Permanent => (
                Problem::NeedsAction {
                    reason: err.reason(),
                    message: message.clone(),
                },
                self.ctx.intervals.stalled_retry,
            ),
            ErrorClass::Retryable | ErrorClass::Transition => (
                Problem::Retrying {
                    reason: err.reason(),
                    message: message.clone(),
                },
                self.ctx.backoff(object.clone(), err.retry_after()),
            ),
        };
        if matches!(problem, Problem::NeedsAction { .. }) {
            self.publish(EventType::Warning, err.reason(), "Reconcile", message)
                .await;
        }
        self.write_status(step, Some(&problem), update).await?;
        Ok(Action::requeue(requeue))
    }

    /// Writes the status (when it changed) and picks when to look again.
    async fn finish(
        &self,
        step: Step,
        problem: Option<Problem>,
        update: Update,
    ) -> ReconcileResult {
        self.write_status(step, problem.as_ref(), update).await?;
        let intervals = &self.ctx.intervals;
        Ok(match (&problem, step) {
            (_, Step::Paused) => Action::await_change(),
            (Some(Problem::NeedsAction { .. }), _) => Action::requeue(intervals.stalled_retry),
            (Some(Problem::Retrying { .. }), _) => Action::requeue(intervals.min_backoff),
            (None, Step::Steady) => Action::requeue(intervals.steady_poll),
            (None, _) => Action::requeue(intervals.transition_poll),
        })
    }

    async fn write_status(
        &self,
        step: Step,
        problem: Option<&Problem>,
        update: Update,
    ) -> Result<(), Error> {
        let current = self.resource.status.as_ref();
        let looked_up = |which: Which| self.instances.get(&which).map(observed_instance);
        let has_id = |which: Which| annotation(self.resource, Some(keys(which).id)).is_some();
        let instance = match looked_up(Which::Current) {
            Some(instance) => Some(instance),
            None if step == Step::InstanceGone || !has_id(Which::Current) => None,
            None => current.and_then(|s| s.instance.clone()),
        };
        let replacement = match looked_up(Which::Replacement) {
            Some(instance) => Some(instance),
            None if !has_id(Which::Replacement) => None,
            None => current.and_then(|s| s.replacement.clone()),
        };
        let input = StatusInput {
            generation: self.resource.meta().generation,
            power_state: self.resource.spec.power_state,
            deleting: self.resource.meta().deletion_timestamp.is_some(),
            step,
            instance,
            replacement,
            update,
            problem,
            last_restart_requested_at: self.last_restart.clone(),
        };
        let now = Time(Timestamp::now());
        let status = desired_status(current, &input, &now);
        if current == Some(&status) {
            return Ok(());
        }
        let patch = json!({
            "apiVersion": "beeos.ai/v1alpha1",
            "kind": "BeeosInstance",
            "status": status,
        });
        self.api
            .patch_status(
                &self.resource.name_any(),
                &PatchParams::apply(MANAGER).force(),
                &Patch::Apply(&patch),
            )
            .await
            .map_err(Error::WriteStatus)?;
        self.ctx.metrics.status_written();
        Ok(())
    }

    /// Adds or removes our finalizer, guarded by the resourceVersion it was read at.
    async fn set_finalizer(&self, present: bool) -> Result<(), Error> {
        let mut finalizers: Vec<String> = self
            .resource
            .finalizers()
            .iter()
            .filter(|f| *f != FINALIZER)
            .cloned()
            .collect();
        if present {
            finalizers.push(FINALIZER.to_owned());
        }
        let patch = json!({"metadata": {
            "resourceVersion": self.resource.resource_version(),
            "finalizers": finalizers,
        }});
        self.api
            .patch(
                &self.resource.name_any(),
                &PatchParams::default(),
                &Patch::Merge(&patch),
            )
            .await
            .map_err(Error::WriteFinalizer)?;
        Ok(())
    }

    /// Sets (`Some`) or removes (`None`) annotations in one merge patch; `guarded` makes it
    /// fail with a conflict when the resource changed since this reconcile read it.
    async fn annotate(
        &self,
        annotations: &[(&str, Option<&str>)],
        guarded: bool,
    ) -> Result<(), Error> {
        let annotations: serde_json::Map<String, Value> = annotations
            .iter()
            .map(|(key, value)| ((*key).to_owned(), json!(value)))
            .collect();
        let mut metadata = json!({"annotations": annotations});
        if guarded {
            metadata["resourceVersion"] = json!(self.resource.resource_version());
        }
        self.api
            .patch(
                &self.resource.name_any(),
                &PatchParams::default(),
                &Patch::Merge(&json!({"metadata": metadata})),
            )
            .await
            .map_err(Error::WriteAnnotations)?;
        Ok(())
    }

    async fn publish(&self, type_: EventType, reason: &str, action: &str, note: String) {
        let event = Event {
            type_,
            reason: reason.to_owned(),
            note: Some(note),
            action: action.to_owned(),
            secondary: None,
        };
        let reference = self.resource.object_ref(&());
        if let Err(err) = self.ctx.recorder.publish(&event, &reference).await {
            tracing::warn!(error = %err, "publishing an event failed");
        }
    }
}
