//! The steps that call BeeOS to change an instance: deploying (bracketed by a pending mark and
//! fenced), finding a deploy whose answer was lost, starting, stopping, restarting and
//! destroying.
//!
//! BeeOS takes no idempotency key, so a deploy is made safe around the call:
//! 1. a pending mark (a timestamp) is written first, guarded by the resourceVersion, so of two
//!    processes racing only one deploys; the instance's name carries a suffix derived from the
//!    mark, unique to this deploy;
//! 2. the deploy is sent only while the mark is younger than half of `--deploy-grace` (a
//!    process that stalled in the rate limiter never sends a deploy on a mark another process
//!    may already have given up on);
//! 3. the id is recorded only if the mark is still the current one (a JSON-patch `test`). A
//!    process that finds itself fenced out destroys what it just deployed, unless another
//!    process adopted it meanwhile: nobody else can ever record it, since only a search for
//!    this mark's name finds it and that search adopts only while the mark is current.

use std::time::{Duration, Instant};

use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::ResourceExt;
use kube::runtime::events::EventType;

use super::bookkeeping::{Fenced, is_stale_write};
use super::index::Claim;
use super::plan::{Found, Step, Which, find_deployed};
use super::reconcile::{Driver, annotation, keys};
use super::request::{digest, display_name, instance_name};
use super::status::{Problem, observed_instance};
use crate::beeos::{BeeosClient, DeployRequest, ErrorClass, Instance, ListQuery};
use crate::crd::{
    CLAIM_ANNOTATION, INSTANCE_ID_ANNOTATION, REPLACEMENT_ID_ANNOTATION,
    RESTART_REQUESTED_AT_ANNOTATION, RETIRING_ID_ANNOTATION, reason,
};
use crate::error::Error;

/// Instances created up to this long before a pending mark still count as its deploy: the
/// mark uses the operator's clock, `createdAt` BeeOS's.
const CLOCK_SKEW_ALLOWANCE: SignedDuration = SignedDuration::from_secs(60);

/// Attempts to destroy an instance a fenced-out deploy made, before giving up (with an error
/// in the log and an event): by then BeeOS has refused for several minutes.
const SUPERSEDED_DESTROY_ATTEMPTS: u32 = 8;

impl Driver<'_> {
    /// The display name and the uid that instance names of this resource derive from.
    fn name_parts(&self) -> (String, String) {
        (
            display_name(&self.resource.spec, &self.resource.name_any()),
            self.resource.uid().unwrap_or_default(),
        )
    }

    /// Marks the slot as deploying, deploys while the mark is fresh, and records the id if the
    /// mark is still current.
    pub(super) async fn deploy(
        &mut self,
        beeos: &BeeosClient,
        which: Which,
        request: &DeployRequest,
    ) -> Result<Option<Problem>, Error> {
        let keys = keys(which);
        let Some(started_at) = keys.started_at else {
            return Ok(None);
        };
        let mark = Timestamp::now().to_string();
        let request_digest = digest(request);
        let fresh_claim = self.claim_value(None);
        let mut marking = vec![(keys.id, None), (started_at, Some(mark.as_str()))];
        marking.extend(keys.digest.map(|k| (k, Some(request_digest.as_str()))));
        if which == Which::Current {
            marking.push((CLAIM_ANNOTATION, Some(fresh_claim.as_str())));
        }
        match self.annotate(&marking, true).await {
            Ok(()) => {}
            // Someone else changed the resource first (maybe another operator marking it):
            // start again from what is there now.
            Err(err) if is_stale_write(&err) => {
                self.requeue = Some(Duration::ZERO);
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
        let not_after = Instant::now() + self.ctx.intervals.deploy_grace / 2;
        let (display, uid) = self.name_parts();
        let mut body = request.clone();
        body.name = instance_name(&display, &uid, &mark);

        let instance = match beeos.deploy_unless_late(&body, Some(not_after)).await {
            Ok(instance) => instance,
            Err(err) => {
                if !err.may_have_taken_effect() {
                    // Nothing was created: clear the mark so the next attempt need not look.
                    let mut clear = vec![started_at];
                    clear.extend(keys.digest);
                    if let Err(clear_err) = self
                        .annotate_if_marked(started_at, &mark, &[], &clear)
                        .await
                    {
                        tracing::warn!(error = %clear_err, "clearing the deploy mark failed");
                    }
                }
                // Else the mark stays: the next reconcile looks for the instance.
                return Err(err.into());
            }
        };
        self.ctx.metrics.beeos_mutation("deploy");
        self.mutated = true;
        if let Some(account) = &self.account {
            account.record(&instance, true);
        }
        let id = instance.instance_id.clone();
        let claim = self.claim_value(Some(&id));
        let mut record = vec![(keys.id, id.as_str())];
        if which == Which::Current {
            record.push((CLAIM_ANNOTATION, claim.as_str()));
        }
        match self
            .annotate_if_marked(started_at, &mark, &record, &[started_at])
            .await
        {
            Ok(Ok(())) => {}
            Ok(Err(Fenced)) => return self.superseded(beeos, &instance).await,
            Err(err) => {
                // The mark stays: the next reconcile finds the instance by its name.
                tracing::error!(instance_id = %id, error = %err,
                    "deployed, but recording the instance id failed; it will be looked up");
                self.requeue = Some(self.ctx.intervals.transition_poll);
                return Ok(None);
            }
        }
        let what = match which {
            Which::Replacement => "replacement ",
            _ => "",
        };
        self.publish(
            EventType::Normal,
            reason::DEPLOYED,
            "Deploy",
            format!("deployed {what}BeeOS instance {id} ({})", instance.name),
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
        self.instances.insert(which, observed_instance(&instance));
        Ok(None)
    }

    /// Our deploy landed after another process took the deploy over: unless that process
    /// adopted it, nobody will ever own it, so it goes.
    async fn superseded(
        &mut self,
        beeos: &BeeosClient,
        instance: &Instance,
    ) -> Result<Option<Problem>, Error> {
        let id = instance.instance_id.clone();
        let fresh = self
            .api
            .get(&self.resource.name_any())
            .await
            .map_err(Error::WriteAnnotations)?;
        let recorded = [
            INSTANCE_ID_ANNOTATION,
            REPLACEMENT_ID_ANNOTATION,
            RETIRING_ID_ANNOTATION,
        ]
        .iter()
        .any(|key| annotation(&fresh, Some(key)) == Some(id.as_str()));
        self.resource = std::sync::Arc::new(fresh);
        self.requeue = Some(Duration::ZERO);
        if recorded {
            return Ok(None);
        }
        tracing::warn!(instance_id = %id, "deploy superseded by another operator process; destroying it");
        self.publish(
            EventType::Warning,
            reason::SUPERSEDED,
            "Destroy",
            format!(
                "BeeOS instance {id} was deployed under a deploy mark that another operator \
                 process had replaced meanwhile; destroying it so only one instance remains"
            ),
        )
        .await;
        let beeos = beeos.clone();
        let min_backoff = self.ctx.intervals.min_backoff;
        // Retried apart from the reconcile: the resource no longer points at it, so no later
        // reconcile would.
        tokio::spawn(async move {
            let mut wait = min_backoff;
            for attempt in 1..=SUPERSEDED_DESTROY_ATTEMPTS {
                match beeos.destroy(&id).await {
                    Ok(()) => return,
                    Err(err) if err.is_not_found() => return,
                    Err(err) if attempt == SUPERSEDED_DESTROY_ATTEMPTS => {
                        tracing::error!(instance_id = %id, error = %err,
                            "could not destroy a superseded deploy; destroy it by hand");
                    }
                    Err(err) => {
                        tracing::info!(instance_id = %id, error = %err, "destroying a superseded deploy failed; retrying");
                        tokio::time::sleep(wait.max(err.retry_after().unwrap_or_default())).await;
                        wait = wait.saturating_mul(2);
                    }
                }
            }
        });
        Ok(None)
    }

    /// Looks for an instance a marked deploy may have created unseen, by the name unique to
    /// that mark, and adopts it while the mark is still current.
    pub(super) async fn find_deployed(
        &mut self,
        beeos: &BeeosClient,
        which: Which,
    ) -> Result<Option<Problem>, Error> {
        let keys = keys(which);
        let Some(started_at) = keys.started_at else {
            return Ok(None);
        };
        let Some(mark) = annotation(&self.resource, Some(started_at)).map(str::to_owned) else {
            return Ok(None);
        };
        let marked_at = mark
            .parse::<Timestamp>()
            .ok()
            // An unreadable mark: assume the worst (just now) so the grace period applies.
            .unwrap_or_else(Timestamp::now);
        let (display, uid) = self.name_parts();
        let name = instance_name(&display, &uid, &mark);
        let listed = beeos.list_all(&ListQuery::search(name.clone())).await?;
        let grace = SignedDuration::try_from(self.ctx.intervals.deploy_grace)
            .unwrap_or(SignedDuration::MAX);
        let grace_over = Timestamp::now().duration_since(marked_at) > grace;
        let not_before = marked_at
            .checked_sub(CLOCK_SKEW_ALLOWANCE)
            .unwrap_or(marked_at);
        let index = &self.ctx.resources;
        let claimed = |id: &str| !index.naming(id).is_empty();
        match find_deployed(&listed, &name, not_before, claimed, grace_over) {
            Found::One(id) => {
                let claim = Claim::value(&self.key.namespace, &self.key.name, Some(&id));
                let mut record = vec![(keys.id, id.as_str())];
                if which == Which::Current {
                    record.push((CLAIM_ANNOTATION, claim.as_str()));
                }
                if let Err(Fenced) = self
                    .annotate_if_marked(started_at, &mark, &record, &[started_at])
                    .await?
                {
                    // Another process acted on the mark meanwhile; see what it did.
                    self.requeue = Some(Duration::ZERO);
                    return Ok(None);
                }
                self.publish(
                    EventType::Normal,
                    reason::ADOPTED,
                    "Adopt",
                    format!("found BeeOS instance {id}, deployed by an earlier attempt whose answer was lost"),
                )
                .await;
                if let Some(instance) = listed.iter().find(|i| i.instance_id == id) {
                    if let Some(account) = &self.account {
                        account.record(instance, false);
                    }
                    self.instances.insert(which, observed_instance(instance));
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
            Found::NothingYet => {
                self.requeue = Some(self.ctx.intervals.transition_poll);
                Ok(None)
            }
            Found::Nothing => {
                // The deploy never happened: clear the mark (only if it is still this one) so
                // the next reconcile deploys.
                let mut clear = vec![started_at];
                clear.extend(keys.digest);
                if let Err(err) = self
                    .annotate_if_marked(started_at, &mark, &[], &clear)
                    .await
                {
                    tracing::info!(error = %err, "clearing a stale deploy mark failed");
                }
                self.requeue = Some(Duration::ZERO);
                Ok(None)
            }
        }
    }

    pub(super) async fn power(
        &mut self,
        beeos: &BeeosClient,
        step: &Step,
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
                self.mutated = true;
                if let Some(account) = &self.account {
                    account.record(&instance, true);
                }
                self.publish(
                    EventType::Normal,
                    reason,
                    action,
                    format!("{operation} BeeOS instance {instance_id}"),
                )
                .await;
                if *step == Step::Restart {
                    self.last_restart = restart_value.map(str::to_owned);
                }
                self.instances
                    .insert(Which::Current, observed_instance(&instance));
                Ok(None)
            }
            // The instance moved under us; look again after the transition.
            Err(err) if err.class() == ErrorClass::Transition => {
                self.requeue = Some(self.ctx.intervals.transition_poll);
                Ok(None)
            }
            Err(err) => Err(err.into()),
        }
    }

    pub(super) async fn destroy(
        &mut self,
        beeos: &BeeosClient,
        instance_id: &str,
    ) -> Result<Option<Problem>, Error> {
        match beeos.destroy(instance_id).await {
            Ok(()) => {
                self.ctx.metrics.beeos_mutation("destroy");
                self.mutated = true;
                if let Some(account) = &self.account {
                    account.expect_change(instance_id);
                }
                self.publish(
                    EventType::Normal,
                    reason::DELETING,
                    "Destroy",
                    format!("destroying BeeOS instance {instance_id}"),
                )
                .await;
                Ok(None)
            }
            // Gone already: look again now, the slot can be forgotten.
            Err(err) if err.is_not_found() => {
                if let Some(account) = &self.account {
                    account.forget(instance_id);
                }
                self.requeue = Some(Duration::ZERO);
                Ok(None)
            }
            // Mid-transition (409): look again soon.
            Err(err) if err.class() == ErrorClass::Transition => {
                self.requeue = Some(self.ctx.intervals.transition_poll);
                Ok(None)
            }
            Err(err) => Err(err.into()),
        }
    }
}
