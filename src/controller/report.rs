//! What a reconcile reports: the status (written only when it changes, and not right after
//! the operator's own call — the next poll shows how it went), Warning events once per cause,
//! the trial-expiry warning, and when to look again. Decisions about the wording of conditions
//! live in `status`; this file only does the writing and the timing.

use std::time::Duration;

use k8s_openapi::api::events::v1::Event as K8sEvent;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;
use kube::{Resource, ResourceExt};
use serde_json::json;

use super::ReconcileResult;
use super::plan::{Step, Which};
use super::reconcile::{Driver, MANAGER, annotation, keys};
use super::status::{Problem, StatusInput, Update, desired_status};
use crate::beeos::ErrorClass;
use crate::crd::{ObservedInstance, condition, reason};
use crate::error::Error;

impl Driver<'_> {
    /// Folds a BeeOS failure into the status: permanent ones stall (retried slowly, and at once
    /// on any change to the resource), transient ones back off with jitter.
    pub(super) async fn failed(
        &mut self,
        step: Step,
        err: crate::beeos::Error,
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
                self.ctx.backoff(self.object.clone(), err.retry_after()),
            ),
        };
        self.announce(&problem).await;
        self.write_status(&step, Some(&problem), update).await?;
        Ok(Action::requeue(requeue))
    }

    /// Writes the status (when it changed) and picks when to look again.
    pub(super) async fn finish(
        &mut self,
        step: Step,
        problem: Option<Problem>,
        update: Update,
    ) -> ReconcileResult {
        match &problem {
            Some(problem) => self.announce(problem).await,
            None => self.ctx.clear_warning(&self.key, "stalled"),
        }
        self.warn_of_trial_expiry().await;
        let intervals = &self.ctx.intervals;
        // After our own call the next poll shows how it went; writing now would only show that
        // it started — unless the resource was Ready (the news is that it no longer is: a stop
        // behind the operator's back, a spec change), or bookkeeping kept in status changed.
        let status = self.resource.status.as_ref();
        let bookkeeping_recorded = status.is_some_and(|s| {
            s.last_restart_requested_at == self.last_restart
                && s.connection_config_map == self.connection_config_map
                && s.retired_run_seconds == self.retired_run_seconds
                && s.trial_expiry_warned == self.trial_expiry_warned
        }) || (status.is_none()
            && self.last_restart.is_none()
            && self.connection_config_map.is_none());
        let was_ready = status.is_some_and(|s| {
            s.conditions
                .iter()
                .any(|c| c.type_ == condition::READY && c.status == "True")
        });
        // The same holds while a transition our own call started is young: its progress is not
        // worth a write when it is likely over by the next poll.
        let young = self.young_transition();
        if young && problem.is_none() && !self.mutated {
            self.requeue = Some(self.ctx.intervals.transition_poll * 2);
        }
        if !((self.mutated || young) && problem.is_none() && bookkeeping_recorded && !was_ready) {
            self.write_status(&step, problem.as_ref(), update).await?;
        }
        let after = match (&problem, &step) {
            (_, Step::Paused) => None,
            (Some(Problem::NeedsAction { reason, .. }), _)
                if *reason == reason::CREDENTIALS_UNAVAILABLE
                    || *reason == reason::SECRET_UNAVAILABLE =>
            {
                Some(intervals.missing_secret_retry)
            }
            (Some(Problem::NeedsAction { .. }), _) => Some(intervals.stalled_retry),
            (Some(Problem::Retrying { .. }), _) => {
                Some(self.ctx.backoff(self.object.clone(), None))
            }
            (None, _) if self.requeue.is_some() => self.requeue,
            // Watches and the fleet wake the resource when anything changes.
            (None, Step::Steady) => None,
            // The fleet wakes it when the instance moves; the requeue is a backstop.
            (None, _) => Some(intervals.steady_poll),
        };
        // Time alone brings a trial into its warning window: look again then.
        let after = match (after, self.trial_warning_due_in()) {
            (Some(after), Some(due)) => Some(after.min(due)),
            (after, due) => after.or(due),
        };
        Ok(after.map_or_else(Action::await_change, Action::requeue))
    }

    /// Whether an instance of this resource is in a transition the operator's own call started
    /// less than two transition polls ago.
    fn young_transition(&self) -> bool {
        let Some(account) = &self.account else {
            return false;
        };
        let within = self.ctx.intervals.transition_poll * 2;
        [Which::Current, Which::Replacement]
            .iter()
            .filter_map(|which| self.instances.get(which))
            .any(|instance| {
                let settling = super::plan::is_transitioning(instance)
                    || (super::plan::status(instance)
                        == Some(crate::beeos::InstanceStatus::Running)
                        && !super::plan::is_ready_to_serve(instance));
                settling && account.mutated_within(&instance.id, within)
            })
    }

    /// The current instance as this reconcile knows it.
    fn current_instance(&self) -> Option<ObservedInstance> {
        self.instances.get(&Which::Current).cloned().or_else(|| {
            self.resource
                .status
                .as_ref()
                .and_then(|s| s.instance.clone())
        })
    }

    /// How long until the current trial instance enters its warning window (`None`: not a
    /// trial, or already in it).
    fn trial_warning_due_in(&self) -> Option<Duration> {
        let instance = self.current_instance()?;
        let expires = trial_expiry(&instance)?;
        let window = SignedDuration::try_from(self.ctx.intervals.trial_expiry_warning).ok()?;
        let due = expires.checked_sub(window).ok()?;
        Duration::try_from(due.duration_since(Timestamp::now())).ok()
    }

    /// A Warning event once the current trial instance expires within the window: once per
    /// expiry (recorded in status), not per reconcile.
    async fn warn_of_trial_expiry(&mut self) {
        let Some(instance) = self.current_instance() else {
            return;
        };
        let Some(expires) = trial_expiry(&instance) else {
            return;
        };
        let expires_at = instance.expires_at.clone().unwrap_or_default();
        let left = expires.duration_since(Timestamp::now());
        let window = SignedDuration::try_from(self.ctx.intervals.trial_expiry_warning)
            .unwrap_or(SignedDuration::MAX);
        if left > window
            || left.is_negative()
            || self.trial_expiry_warned.as_deref() == Some(expires_at.as_str())
        {
            return;
        }
        // Recorded in status either way; announced once even if this reconcile runs on a cache
        // that does not show the record yet.
        self.trial_expiry_warned = Some(expires_at.clone());
        if !self.ctx.warn_once(&self.key, "trial", &expires_at) {
            return;
        }
        let left = humantime::format_duration(Duration::from_secs(
            u64::try_from(left.as_secs()).unwrap_or(0),
        ));
        self.publish(
            EventType::Warning,
            reason::TRIAL_EXPIRING,
            "Warn",
            format!(
                "trial instance {} expires at {expires_at} (in {left}); BeeOS stops it then",
                instance.id
            ),
        )
        .await;
    }

    /// A Warning event for a problem a person must fix — once per cause: not again while the
    /// status already shows the same reason and message (retries would repeat it every time).
    async fn announce(&self, problem: &Problem) {
        let Problem::NeedsAction { reason, message } = problem else {
            return;
        };
        let already_shown = self.resource.status.as_ref().is_some_and(|status| {
            status.conditions.iter().any(|c| {
                c.type_ == condition::STALLED
                    && c.status == "True"
                    && c.reason == *reason
                    && c.message == *message
            })
        });
        let first = self
            .ctx
            .warn_once(&self.key, "stalled", &format!("{reason}: {message}"));
        if !already_shown && first {
            self.publish(EventType::Warning, reason, "Reconcile", message.clone())
                .await;
        }
    }

    pub(super) async fn write_status(
        &self,
        step: &Step,
        problem: Option<&Problem>,
        update: Update,
    ) -> Result<(), Error> {
        let current = self.resource.status.as_ref();
        let looked_up = |which: Which| self.instances.get(&which).cloned();
        let has_id = |which: Which| annotation(&self.resource, Some(keys(which).id)).is_some();
        let not_ours = matches!(
            step,
            Step::InstanceGone | Step::InstanceClaimed(_) | Step::InstanceForbidden(Which::Current)
        );
        let instance = match looked_up(Which::Current) {
            _ if not_ours => None,
            Some(instance) => Some(instance),
            None if !has_id(Which::Current) => None,
            None => current.and_then(|s| s.instance.clone()),
        };
        let replacement = match looked_up(Which::Replacement) {
            Some(instance) => Some(instance),
            None if !has_id(Which::Replacement) => None,
            None => current.and_then(|s| s.replacement.as_deref().cloned()),
        };
        let input = StatusInput {
            generation: self.resource.meta().generation,
            power_state: self.resource.spec.power_state,
            deleting: self.resource.meta().deletion_timestamp.is_some(),
            step: step.clone(),
            instance,
            replacement,
            update,
            problem,
            last_restart_requested_at: self.last_restart.clone(),
            connection_config_map: self.connection_config_map.clone(),
            retired_run_seconds: self.retired_run_seconds,
            trial_expiry_warned: self.trial_expiry_warned.clone(),
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

    /// Publishes one event about the resource (events.k8s.io/v1). Repeats are kept out by the
    /// callers (a Stalled cause is announced once), so no series is kept: kube-runtime's
    /// Recorder caches every event it sent until its next publish, which at 10,000 resources
    /// held tens of megabytes and made each publish scan them all.
    pub(super) async fn publish(&self, type_: EventType, reason: &str, action: &str, note: String) {
        let regarding = self.resource.object_ref(&());
        let reporter = &self.ctx.reporter;
        let now = Timestamp::now();
        let event = K8sEvent {
            metadata: ObjectMeta {
                name: Some(format!(
                    "{}.{:x}",
                    regarding.name.as_deref().unwrap_or("beeosinstance"),
                    now.as_nanosecond()
                )),
                namespace: regarding.namespace.clone(),
                ..ObjectMeta::default()
            },
            action: Some(action.to_owned()),
            reason: Some(reason.to_owned()),
            note: Some(note),
            type_: Some(
                match type_ {
                    EventType::Normal => "Normal",
                    EventType::Warning => "Warning",
                }
                .to_owned(),
            ),
            event_time: Some(MicroTime(now)),
            reporting_controller: Some(reporter.controller.clone()),
            reporting_instance: Some(
                reporter
                    .instance
                    .clone()
                    .unwrap_or_else(|| reporter.controller.clone()),
            ),
            regarding: Some(regarding),
            ..K8sEvent::default()
        };
        let events: Api<K8sEvent> = Api::namespaced(self.ctx.client.clone(), self.namespace());
        if let Err(err) = events.create(&PostParams::default(), &event).await {
            tracing::warn!(error = %err, "publishing an event failed");
        }
    }
}

/// When a trial instance expires (`None` for others, or an unreadable time).
fn trial_expiry(instance: &ObservedInstance) -> Option<Timestamp> {
    if instance.is_trial != Some(true) {
        return None;
    }
    instance.expires_at.as_deref()?.parse().ok()
}
