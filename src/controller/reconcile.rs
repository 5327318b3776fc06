//! The reconcile driver: gathers what is true in Kubernetes and at BeeOS, takes the one step
//! [`next_step`] chooses, records the outcome in the resource's status and events, and says when
//! to look again. Decisions live in `plan` and `status`; this file only does I/O.

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::runtime::events::{Event, EventType};
use kube::runtime::reflector::ObjectRef;
use kube::{Resource, ResourceExt};
use serde_json::json;

use super::plan::{Observation, Remote, Step, next_step};
use super::request::deploy_request;
use super::status::{Problem, StatusInput, desired_status, observed_instance};
use super::{Context, ReconcileResult};
use crate::beeos::{BeeosClient, Credential, ErrorClass, Instance};
use crate::crd::{
    BeeosInstance, DeletionPolicy, FINALIZER, INSTANCE_ID_ANNOTATION, PAUSED_ANNOTATION,
    RESTART_REQUESTED_AT_ANNOTATION, reason,
};
use crate::error::Error;

/// The field manager of every write the operator makes.
const MANAGER: &str = "beeos-operator";

pub async fn reconcile(resource: Arc<BeeosInstance>, ctx: Arc<Context>) -> ReconcileResult {
    let namespace = resource.namespace().ok_or(Error::NotNamespaced)?;
    let api: Api<BeeosInstance> = Api::namespaced(ctx.client.clone(), &namespace);
    let _timer = ctx.metrics.reconcile_started();
    let object = ObjectRef::from_obj(&*resource);

    let annotations = resource.annotations();
    let instance_id = annotations
        .get(INSTANCE_ID_ANNOTATION)
        .map(String::as_str)
        .filter(|id| !id.is_empty());
    let restart_value = annotations.get(RESTART_REQUESTED_AT_ANNOTATION).cloned();
    let last_restart = resource
        .status
        .as_ref()
        .and_then(|s| s.last_restart_requested_at.clone());
    let mut observation = Observation {
        deleting: resource.meta().deletion_timestamp.is_some(),
        has_finalizer: resource.finalizers().iter().any(|f| f == FINALIZER),
        paused: annotations.get(PAUSED_ANNOTATION).map(String::as_str) == Some("true"),
        deletion_policy: resource.spec.deletion_policy,
        power_state: resource.spec.power_state,
        instance_id,
        instance: Remote::NotLooked,
        restart_requested: restart_value.is_some() && restart_value != last_restart,
    };
    let mut driver = Driver {
        api: &api,
        ctx: &ctx,
        resource: &resource,
        instance: None,
        last_restart,
    };

    // Steps that need no BeeOS call come first, so that a resource without credentials can
    // still be paused, get its finalizer, or be deleted when nothing was ever deployed.
    match next_step(&observation) {
        Step::Paused => return driver.finish(Step::Paused, None).await,
        Step::AddFinalizer => {
            driver.set_finalizer(true).await?;
            // The finalizer change wakes the resource again; deploy happens then.
            return Ok(Action::await_change());
        }
        Step::RemoveFinalizer => return driver.release(observation.deletion_policy).await,
        Step::Steady if observation.deleting => return Ok(Action::await_change()),
        _ => {}
    }

    let beeos = match driver.beeos_client(&namespace).await? {
        Ok(beeos) => beeos,
        Err(problem) => return driver.finish(Step::Steady, Some(problem)).await,
    };
    if let Some(instance_id) = instance_id {
        match beeos.get(instance_id).await {
            Ok(instance) if instance.is_terminated() => observation.instance = Remote::Gone,
            Ok(instance) => driver.instance = Some(instance),
            Err(err) if err.is_not_found() => observation.instance = Remote::Gone,
            Err(err) => return driver.failed(Step::AwaitTransition, err, &object).await,
        }
    }
    if let Some(instance) = &driver.instance {
        observation.instance = Remote::Found(instance);
    }

    let step = next_step(&observation);
    let outcome = match step {
        Step::Deploy => driver.deploy(&beeos).await,
        Step::Start | Step::Stop | Step::Restart => {
            let id = instance_id.unwrap_or_default();
            driver
                .power(&beeos, step, id, restart_value.as_deref())
                .await
        }
        Step::Destroy => {
            driver
                .destroy(&beeos, instance_id.unwrap_or_default())
                .await
        }
        Step::RemoveFinalizer => return driver.release(observation.deletion_policy).await,
        Step::InstanceGone => Ok(Some(Problem::NeedsAction {
            reason: reason::INSTANCE_GONE,
            message: format!(
                "instance {} no longer exists at BeeOS; remove the {INSTANCE_ID_ANNOTATION} \
                 annotation to deploy a new one",
                instance_id.unwrap_or_default()
            ),
        })),
        Step::AwaitTransition | Step::AwaitDestroyed | Step::Steady => Ok(None),
        Step::Paused | Step::AddFinalizer => Ok(None),
    };
    match outcome {
        Ok(problem) => {
            ctx.clear_backoff(&object);
            driver.finish(step, problem).await
        }
        Err(err) => driver.failed(step, err, &object).await,
    }
}

/// Transient Kubernetes failures: retry soon. BeeOS failures never get here; they are folded
/// into the status by the driver.
pub fn error_policy(_resource: Arc<BeeosInstance>, err: &Error, ctx: Arc<Context>) -> Action {
    tracing::warn!(error = %err, "reconcile failed");
    ctx.metrics.reconcile_failed(err.reason());
    Action::requeue(ctx.intervals.min_backoff.max(Duration::from_secs(5)))
}

struct Driver<'a> {
    api: &'a Api<BeeosInstance>,
    ctx: &'a Context,
    resource: &'a BeeosInstance,
    /// The instance as BeeOS last answered in this reconcile.
    instance: Option<Instance>,
    last_restart: Option<String>,
}

impl Driver<'_> {
    /// The BeeOS client for the resource's credentials, or the problem that keeps it from one.
    async fn beeos_client(&self, namespace: &str) -> Result<Result<BeeosClient, Problem>, Error> {
        let credential = match &self.resource.spec.credentials {
            Some(reference) => {
                let secrets: Api<Secret> = Api::namespaced(self.ctx.client.clone(), namespace);
                let secret = secrets
                    .get_opt(&reference.name)
                    .await
                    .map_err(Error::ReadCredentials)?;
                let key = reference.key();
                let value = secret
                    .as_ref()
                    .and_then(|s| s.data.as_ref())
                    .and_then(|data| data.get(key))
                    .map(|bytes| bytes.0.clone());
                let problem = |what: String| Problem::NeedsAction {
                    reason: reason::CREDENTIALS_UNAVAILABLE,
                    message: what,
                };
                let Some(secret) = secret else {
                    return Ok(Err(problem(format!(
                        "credentials Secret {namespace}/{} not found",
                        reference.name
                    ))));
                };
                let Some(value) = value else {
                    return Ok(Err(problem(format!(
                        "credentials Secret {namespace}/{} has no key {key:?}",
                        secret.name_any()
                    ))));
                };
                match String::from_utf8(value)
                    .ok()
                    .and_then(|token| Credential::new(token).ok())
                {
                    Some(credential) => credential,
                    None => {
                        return Ok(Err(problem(format!(
                            "key {key:?} of credentials Secret {namespace}/{} does not hold a \
                             BeeOS token",
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

    async fn deploy(
        &mut self,
        beeos: &BeeosClient,
    ) -> Result<Option<Problem>, crate::beeos::Error> {
        let request = deploy_request(&self.resource.spec, &self.resource.name_any());
        let instance = beeos.deploy(&request).await?;
        self.ctx.metrics.beeos_call("deploy");
        // Recorded at once: the annotation, not status, is the source of truth for the id.
        if let Err(err) = self
            .annotate(&[(INSTANCE_ID_ANNOTATION, Some(&instance.instance_id))])
            .await
        {
            tracing::error!(instance_id = %instance.instance_id, error = %err,
                "deployed, but recording the instance id failed");
        }
        self.publish(
            EventType::Normal,
            reason::DEPLOYED,
            "Deploy",
            format!("deployed BeeOS instance {}", instance.instance_id),
        )
        .await;
        // A restart asked for before the deploy is satisfied by the deploy itself.
        self.last_restart = self
            .resource
            .annotations()
            .get(RESTART_REQUESTED_AT_ANNOTATION)
            .cloned();
        self.instance = Some(instance);
        Ok(None)
    }

    async fn power(
        &mut self,
        beeos: &BeeosClient,
        step: Step,
        instance_id: &str,
        restart_value: Option<&str>,
    ) -> Result<Option<Problem>, crate::beeos::Error> {
        let (result, reason, action) = match step {
            Step::Start => (beeos.start(instance_id).await, reason::STARTING, "Start"),
            Step::Stop => (beeos.stop(instance_id).await, reason::STOPPING, "Stop"),
            _ => (
                beeos.restart(instance_id).await,
                reason::RESTARTING,
                "Restart",
            ),
        };
        match result {
            Ok(instance) => {
                self.publish(
                    EventType::Normal,
                    reason,
                    action,
                    format!("{} BeeOS instance {instance_id}", action.to_lowercase()),
                )
                .await;
                if step == Step::Restart {
                    self.last_restart = restart_value.map(str::to_owned);
                }
                self.instance = Some(instance);
                Ok(None)
            }
            // The instance moved under us; look again after the transition.
            Err(err) if err.class() == ErrorClass::Transition => Ok(None),
            Err(err) => Err(err),
        }
    }

    async fn destroy(
        &mut self,
        beeos: &BeeosClient,
        instance_id: &str,
    ) -> Result<Option<Problem>, crate::beeos::Error> {
        match beeos.destroy(instance_id).await {
            Ok(()) => {
                self.publish(
                    EventType::Normal,
                    reason::DELETING,
                    "Destroy",
                    format!("destroying BeeOS instance {instance_id}"),
                )
                .await;
                Ok(None)
            }
            Err(err) if err.is_not_found() => Ok(None),
            // 409: a transition is under way; destroy again after it.
            Err(err) if err.class() == ErrorClass::Transition => Ok(None),
            Err(err) => Err(err),
        }
    }

    /// Lets the resource go: the instance is destroyed, orphaned, or never existed.
    async fn release(&self, policy: DeletionPolicy) -> ReconcileResult {
        self.set_finalizer(false).await?;
        let (reason, message) = match (
            policy,
            self.resource.annotations().get(INSTANCE_ID_ANNOTATION),
        ) {
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
        self.write_status(step, Some(&problem)).await?;
        Ok(Action::requeue(requeue))
    }

    /// Writes the status (when it changed) and picks when to look again.
    async fn finish(&self, step: Step, problem: Option<Problem>) -> ReconcileResult {
        self.write_status(step, problem.as_ref()).await?;
        let intervals = &self.ctx.intervals;
        Ok(match (&problem, step) {
            (_, Step::Paused) => Action::await_change(),
            (Some(Problem::NeedsAction { .. }), _) => Action::requeue(intervals.stalled_retry),
            (Some(Problem::Retrying { .. }), _) => Action::requeue(intervals.min_backoff),
            (None, Step::Steady) => Action::requeue(intervals.steady_poll),
            (None, _) => Action::requeue(intervals.transition_poll),
        })
    }

    async fn write_status(&self, step: Step, problem: Option<&Problem>) -> Result<(), Error> {
        let current = self.resource.status.as_ref();
        let instance = match &self.instance {
            Some(instance) => Some(observed_instance(instance)),
            None if step == Step::InstanceGone => None,
            None => current.and_then(|s| s.instance.clone()),
        };
        let input = StatusInput {
            generation: self.resource.meta().generation,
            power_state: self.resource.spec.power_state,
            deleting: self.resource.meta().deletion_timestamp.is_some(),
            step,
            instance,
            problem,
            last_restart_requested_at: self.last_restart.clone(),
        };
        let now = Time(k8s_openapi::jiff::Timestamp::now());
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

    async fn annotate(&self, annotations: &[(&str, Option<&str>)]) -> Result<(), Error> {
        let annotations: serde_json::Map<String, serde_json::Value> = annotations
            .iter()
            .map(|(key, value)| ((*key).to_owned(), json!(value)))
            .collect();
        let patch = json!({"metadata": {"annotations": annotations}});
        self.api
            .patch(
                &self.resource.name_any(),
                &PatchParams::default(),
                &Patch::Merge(&patch),
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
