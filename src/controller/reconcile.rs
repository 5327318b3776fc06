//! The reconcile driver: gathers what is true in Kubernetes and at BeeOS, takes the one step
//! [`next_step`] chooses, and hands the outcome to `report`. Decisions live in `plan` and
//! `status`; the steps live beside this file: metadata writes in `bookkeeping`, deploying and
//! finding deploys in `deploy`, Secrets in `secrets`, the connection ConfigMap in
//! `connection`, status, events and requeues in `report`.
//!
//! Crash safety rests on ordering: every deploy is preceded by a pending mark and followed by
//! recording the id, only by the process whose mark is still current; whenever a mark is
//! found without an id, the deploy may have happened unseen and the step is to look for it.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::jiff::Timestamp;
use kube::api::Api;
use kube::runtime::controller::Action;
use kube::runtime::reflector::ObjectRef;
use kube::{Resource, ResourceExt};

use super::fleet::{Account, Lookup};
use super::index::{Claim, Entry, Key};
use super::plan::{Observation, Remote, Slot, Step, Which, next_step, transition_exceeded};
use super::request::digest;
use super::status::{Problem, Update, observed_instance};
use super::{Context, ReconcileResult};
use crate::beeos::BeeosClient;
use crate::crd::{
    BeeosInstance, CLAIM_ANNOTATION, DEPLOY_STARTED_AT_ANNOTATION, DEPLOYED_DIGEST_ANNOTATION,
    FINALIZER, INSTANCE_ID_ANNOTATION, ObservedInstance, PAUSED_ANNOTATION,
    REPLACEMENT_DIGEST_ANNOTATION, REPLACEMENT_ID_ANNOTATION, REPLACEMENT_STARTED_AT_ANNOTATION,
    RESTART_REQUESTED_AT_ANNOTATION, RETIRING_ID_ANNOTATION, UpdateStrategy, condition, reason,
};
use crate::error::Error;

/// The field manager of every write the operator makes.
pub(super) const MANAGER: &str = "beeos-operator";

/// The annotations of one slot.
pub(super) struct SlotKeys {
    pub id: &'static str,
    pub started_at: Option<&'static str>,
    pub digest: Option<&'static str>,
}

pub(super) fn keys(which: Which) -> SlotKeys {
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

pub(super) fn annotation<'a>(resource: &'a BeeosInstance, key: Option<&str>) -> Option<&'a str> {
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
        stuck: false,
    }
}

/// The instance another record names while `beeos.ai/instance-id` is missing: the claim, when
/// it is this resource's own, else the status (which survives a metadata rewrite, not a restore).
fn lost_id<'a>(resource: &'a BeeosInstance, key: &Key, claim: Option<&'a str>) -> Option<&'a str> {
    if annotation(resource, Some(INSTANCE_ID_ANNOTATION)).is_some()
        || annotation(resource, Some(DEPLOY_STARTED_AT_ANNOTATION)).is_some()
    {
        return None;
    }
    let claimed = claim.and_then(|value| {
        let parsed = Claim::parse(value)?;
        let own = parsed.namespace == key.namespace && parsed.name == key.name;
        let id_at = value.len() - parsed.instance_id.len();
        (own && !parsed.instance_id.is_empty()).then(|| &value[id_at..])
    });
    claimed.or_else(|| {
        resource
            .status
            .as_ref()
            .and_then(|s| s.instance.as_ref())
            .map(|i| i.id.as_str())
            .filter(|id| !id.is_empty())
    })
}

pub async fn reconcile(resource: Arc<BeeosInstance>, ctx: Arc<Context>) -> ReconcileResult {
    let key = Key::of(&resource);
    if ctx.first_look(&key) && looks_settled(&resource) {
        // After a restart every resource arrives at once; one that was settled waits a random
        // part of a poll, so the checks spread out instead of running in lockstep. The fleet's
        // first listing wakes at once any whose instance changed meanwhile.
        let delay = ctx.intervals.steady_poll.mul_f64(rand::random::<f64>());
        return Ok(Action::requeue(delay));
    }
    let _timer = ctx.metrics.reconcile_started();
    let mut driver = Driver::new(&ctx, resource)?;
    driver.run().await
}

/// Transient Kubernetes failures: back off, per resource, like BeeOS failures.
pub fn error_policy(resource: Arc<BeeosInstance>, err: &Error, ctx: Arc<Context>) -> Action {
    tracing::warn!(error = %err, "reconcile failed");
    ctx.metrics.reconcile_failed(err.reason());
    Action::requeue(ctx.backoff(ObjectRef::from_obj(&*resource), None))
}

/// Ready for its current generation on its recorded instance with nothing in flight: the kind
/// of resource whose first check after a restart can wait.
fn looks_settled(resource: &BeeosInstance) -> bool {
    let Some(status) = resource.status.as_ref() else {
        return false;
    };
    let ready = status.conditions.iter().any(|c| {
        c.type_ == condition::READY
            && c.status == "True"
            && c.observed_generation == resource.metadata.generation
    });
    let recorded = annotation(resource, Some(INSTANCE_ID_ANNOTATION));
    let same_instance = status
        .instance
        .as_ref()
        .is_some_and(|instance| Some(instance.id.as_str()) == recorded);
    let in_flight = [
        DEPLOY_STARTED_AT_ANNOTATION,
        REPLACEMENT_ID_ANNOTATION,
        REPLACEMENT_STARTED_AT_ANNOTATION,
        RETIRING_ID_ANNOTATION,
    ]
    .iter()
    .any(|key| annotation(resource, Some(key)).is_some());
    ready
        && same_instance
        && !in_flight
        && resource.meta().deletion_timestamp.is_none()
        && annotation(resource, Some(RESTART_REQUESTED_AT_ANNOTATION))
            == status.last_restart_requested_at.as_deref()
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

/// What a lookup at BeeOS found.
enum Looked {
    Found(Box<ObservedInstance>),
    Gone,
    Forbidden,
}

/// Every lookup of one reconcile; the observation borrows from it.
#[derive(Default)]
struct LookedUp {
    slots: BTreeMap<Which, Looked>,
    lost: Option<Looked>,
}

impl LookedUp {
    /// Puts what BeeOS reported into the observation's slots, and whether a transition has
    /// lasted longer than `limit`.
    fn fill_in<'a>(&'a self, observation: &mut Observation<'a>, limit: Duration) {
        let now = Timestamp::now();
        for which in [Which::Current, Which::Replacement, Which::Retiring] {
            let slot = observation.slot_mut(which);
            if let Some(found) = self.slots.get(&which) {
                slot.remote = remote(found);
                if let Looked::Found(instance) = found {
                    slot.stuck = transition_exceeded(instance, now, limit);
                }
            }
        }
        if let Some(found) = &self.lost {
            observation.lost.remote = remote(found);
        }
    }
}

pub(super) struct Driver<'a> {
    pub(super) api: Api<BeeosInstance>,
    pub(super) ctx: &'a Context,
    pub(super) resource: Arc<BeeosInstance>,
    pub(super) key: Key,
    pub(super) object: ObjectRef<BeeosInstance>,
    /// Secrets read in this reconcile, by name (`None`: not found).
    pub(super) secrets_read: Mutex<HashMap<String, Option<Secret>>>,
    /// Instances as BeeOS last answered in this reconcile, by slot.
    pub(super) instances: BTreeMap<Which, ObservedInstance>,
    pub(super) last_restart: Option<String>,
    /// The BeeOS account the resource's credentials belong to.
    pub(super) account: Option<Arc<Account>>,
    /// This reconcile changed an instance at BeeOS. Its status is written after the fleet's
    /// next poll of it, not now: most transitions are over by then, which saves a write.
    pub(super) mutated: bool,
    /// A step asks to look again this soon (rather than when something changes).
    pub(super) requeue: Option<Duration>,
    /// Status bookkeeping, as read and as changed by this reconcile.
    pub(super) connection_config_map: Option<String>,
    pub(super) retired_run_seconds: Option<i64>,
    pub(super) trial_expiry_warned: Option<String>,
}

impl<'a> Driver<'a> {
    fn new(ctx: &'a Context, resource: Arc<BeeosInstance>) -> Result<Driver<'a>, Error> {
        let namespace = resource.namespace().ok_or(Error::NotNamespaced)?;
        let status = resource.status.clone().unwrap_or_default();
        Ok(Driver {
            connection_config_map: status.connection_config_map,
            retired_run_seconds: status.retired_run_seconds,
            trial_expiry_warned: status.trial_expiry_warned,
            api: Api::namespaced(ctx.client.clone(), &namespace),
            ctx,
            key: Key::of(&resource),
            object: ObjectRef::from_obj(&*resource),
            last_restart: resource
                .status
                .as_ref()
                .and_then(|s| s.last_restart_requested_at.clone()),
            resource,
            secrets_read: Mutex::default(),
            instances: BTreeMap::new(),
            account: None,
            mutated: false,
            requeue: None,
        })
    }

    pub(super) fn namespace(&self) -> &str {
        &self.key.namespace
    }

    /// Observe, plan, act, report: one pass of the reconcile.
    async fn run(&mut self) -> ReconcileResult {
        let resource = self.resource.clone();
        let deleting = resource.meta().deletion_timestamp.is_some();
        let mut observation = self.recorded(&resource);

        // Steps that need no BeeOS call come first, so that a resource without credentials can
        // still be paused, claimed or let go when nothing of its own was ever deployed.
        if let Some(done) = self.without_beeos(&observation, deleting).await {
            return done;
        }

        let beeos = match self.beeos_client().await? {
            Ok(beeos) => beeos,
            Err(problem) => return self.finish(Step::Steady, Some(problem), Update::None).await,
        };
        let request = if deleting {
            None
        } else {
            match self.desired_request().await? {
                Ok(request) => Some(request),
                Err(problem) => {
                    return self.finish(Step::Steady, Some(problem), Update::None).await;
                }
            }
        };
        // Only a resource that can act keeps its account polled (a missing Secret costs no call).
        self.account = Some(self.ctx.fleet.account(&beeos, &self.key));
        let desired_digest = request.as_ref().map(digest);
        observation.desired_digest = desired_digest.as_deref();
        // Known from annotations alone, so a failed lookup below reports it too.
        let update = update_progress(&observation);

        // The instances as BeeOS reports them now; the observation borrows them.
        let looked_up = match self.look_up_all(&beeos, &observation).await {
            Ok(looked_up) => looked_up,
            Err(err) => return self.failed(Step::AwaitTransition, err, update).await,
        };
        looked_up.fill_in(&mut observation, self.ctx.intervals.transition_timeout);

        let step = next_step(&observation);
        tracing::debug!(?step, ?update, current = ?observation.current,
            replacement = ?observation.replacement, retiring = ?observation.retiring, "planned");
        let restart_value = resource
            .annotations()
            .get(RESTART_REQUESTED_AT_ANNOTATION)
            .cloned();
        let outcome = self
            .take_step(&step, &observation, &beeos, request.as_ref(), restart_value)
            .await;
        // Answers from the step itself are newer than the lookups.
        for (which, found) in looked_up.slots {
            if let Looked::Found(instance) = found {
                self.instances.entry(which).or_insert(*instance);
            }
        }
        let outcome = match outcome {
            // Applications learn where the instance is from the connection ConfigMap.
            Ok(None) if !deleting => self.publish_connection().await,
            other => other,
        };
        match outcome {
            Ok(problem) => {
                if problem.is_none() {
                    self.ctx.clear_backoff(&self.object);
                }
                self.finish(step, problem, update).await
            }
            Err(Error::Beeos(err)) => self.failed(step, err, update).await,
            Err(err) => Err(err),
        }
    }

    /// The resource as its own records tell it: annotations, claim, finalizer, spec, status.
    fn recorded<'r>(&self, resource: &'r BeeosInstance) -> Observation<'r> {
        let restart_value = resource.annotations().get(RESTART_REQUESTED_AT_ANNOTATION);
        let claim = annotation(resource, Some(CLAIM_ANNOTATION));
        Observation {
            deleting: resource.meta().deletion_timestamp.is_some(),
            has_finalizer: resource.finalizers().iter().any(|f| f == FINALIZER),
            paused: annotation(resource, Some(PAUSED_ANNOTATION)) == Some("true"),
            deletion_policy: resource.spec.deletion_policy,
            power_state: resource.spec.power_state,
            update_strategy: resource.spec.update_strategy,
            restart_requested: restart_value.is_some()
                && restart_value != self.last_restart.as_ref(),
            desired_digest: None,
            current: recorded_slot(resource, Which::Current),
            replacement: recorded_slot(resource, Which::Replacement),
            retiring: recorded_slot(resource, Which::Retiring),
            ownership: self.ctx.resources.index().ownership(resource),
            bookkeeping_own: Entry::of(resource).bookkeeping_is_own(&self.key),
            lost: Slot {
                id: lost_id(resource, &self.key, claim),
                ..Slot::default()
            },
        }
    }

    /// Takes a step that needs no BeeOS call, if the records alone decide one.
    async fn without_beeos(
        &mut self,
        observation: &Observation<'_>,
        deleting: bool,
    ) -> Option<ReconcileResult> {
        let step = next_step(observation);
        Some(match step {
            Step::Paused => self.finish(Step::Paused, None, Update::None).await,
            Step::AddFinalizer => self
                .set_finalizer(true)
                .await
                .map(|()| Action::requeue(Duration::ZERO)),
            Step::RemoveFinalizer => self.release().await,
            Step::InstanceClaimed(ref owner) => {
                let problem = claimed_problem(observation.current.id, owner);
                self.finish(step, Some(problem), Update::None).await
            }
            Step::Claim if !observation.bookkeeping_own => self
                .claim(observation, None)
                .await
                .map(|()| Action::requeue(Duration::ZERO)),
            Step::Steady if deleting => Ok(Action::await_change()),
            _ => return None,
        })
    }

    /// Looks up every recorded instance (and a lost one) at BeeOS, through the fleet.
    async fn look_up_all(
        &mut self,
        beeos: &BeeosClient,
        observation: &Observation<'_>,
    ) -> Result<LookedUp, crate::beeos::Error> {
        let mut looked_up = LookedUp::default();
        for which in [Which::Current, Which::Replacement, Which::Retiring] {
            if let Some(id) = observation.slot(which).id {
                let found = self.look_up(beeos, id).await?;
                looked_up.slots.insert(which, found);
            }
        }
        if let Some(id) = observation.lost.id {
            looked_up.lost = Some(self.look_up(beeos, id).await?);
        }
        Ok(looked_up)
    }

    /// Takes one step; `Ok(Some(problem))` when it found something a person must fix.
    async fn take_step(
        &mut self,
        step: &Step,
        o: &Observation<'_>,
        beeos: &BeeosClient,
        request: Option<&crate::beeos::DeployRequest>,
        restart_value: Option<String>,
    ) -> Result<Option<Problem>, Error> {
        let id = |which: Which| o.slot(which).id.unwrap_or_default().to_owned();
        match step {
            Step::Deploy(which) => {
                let request = request.cloned().unwrap_or_default();
                self.deploy(beeos, *which, &request).await
            }
            Step::FindDeployed(which) => self.find_deployed(beeos, *which).await,
            Step::Claim => {
                let digest = o.desired_digest;
                self.claim(o, digest).await.map(|()| None)
            }
            Step::RestoreId => self.restore_id(o).await.map(|()| None),
            Step::RecordDigest => self
                .record_digest(&id(Which::Current), o.desired_digest)
                .await
                .map(|()| None),
            Step::Start | Step::Stop | Step::Restart => {
                self.power(beeos, step, &id(Which::Current), restart_value.as_deref())
                    .await
            }
            Step::Destroy(which) => {
                let instance_id = id(*which);
                let ran = self
                    .account
                    .as_ref()
                    .and_then(|a| a.run_seconds(&instance_id));
                let outcome = self.destroy(beeos, &instance_id).await;
                if *which == Which::Retiring && self.mutated {
                    // The replaced instance's run time stays the resource's (the run-time
                    // metric must never go back).
                    self.retired_run_seconds =
                        Some(self.retired_run_seconds.unwrap_or(0) + ran.unwrap_or(0));
                }
                outcome
            }
            Step::Forget(which) => self.forget(*which, o).await.map(|()| None),
            Step::PromoteReplacement => self.promote(o).await.map(|()| None),
            Step::RetireForRecreate => self.retire_for_recreate(o).await.map(|()| None),
            Step::RemoveFinalizer => {
                self.release().await?;
                Ok(None)
            }
            Step::InstanceGone => Ok(Some(Problem::NeedsAction {
                reason: reason::INSTANCE_GONE,
                message: format!(
                    "instance {} does not exist at BeeOS; remove the {INSTANCE_ID_ANNOTATION} \
                     annotation to deploy a new one",
                    id(Which::Current)
                ),
            })),
            Step::InstanceClaimed(owner) => Ok(Some(claimed_problem(o.current.id, owner))),
            Step::InstanceForbidden(which) => Ok(Some(Problem::NeedsAction {
                reason: reason::INSTANCE_FORBIDDEN,
                message: format!(
                    "BeeOS refuses these credentials access to instance {} (403 forbidden): it \
                     belongs to another BeeOS account. Fix spec.credentials (or the operator's \
                     default credentials); the instance is left as it is until then",
                    id(*which)
                ),
            })),
            Step::TransitionTimeout(which) => {
                let instance = o.slot(*which).remote;
                let state = match instance {
                    Remote::Found(i) => format!(
                        "{} (desired {}, connectivity {})",
                        i.status.as_deref().unwrap_or("unknown"),
                        i.desired_status.as_deref().unwrap_or("unknown"),
                        i.connectivity.as_deref().unwrap_or("unknown"),
                    ),
                    _ => "unknown".to_owned(),
                };
                Ok(Some(Problem::NeedsAction {
                    reason: reason::TRANSITION_TIMEOUT,
                    message: format!(
                        "instance {} has been {state} for longer than {} \
                         (--transition-timeout); check it in BeeOS",
                        id(*which),
                        humantime::format_duration(self.ctx.intervals.transition_timeout)
                    ),
                }))
            }
            Step::TrialExpired => {
                let expired_at = match o.current.remote {
                    Remote::Found(i) => i.expires_at.clone().unwrap_or_else(|| "its expiry".into()),
                    _ => "its expiry".into(),
                };
                Ok(Some(Problem::NeedsAction {
                    reason: reason::TRIAL_EXPIRED,
                    message: format!(
                        "trial instance {} expired at {expired_at} and BeeOS stopped it \
                         (haltReason trial_expired); deploy a non-trial variant or delete this \
                         resource",
                        id(Which::Current)
                    ),
                }))
            }
            Step::AwaitTransition | Step::Steady | Step::Paused | Step::AddFinalizer => Ok(None),
        }
    }

    /// The instance as the fleet last saw it, else as BeeOS answers a direct GET.
    async fn look_up(
        &mut self,
        beeos: &BeeosClient,
        instance_id: &str,
    ) -> Result<Looked, crate::beeos::Error> {
        let account = self.account.clone();
        if let Some(account) = &account
            && let Lookup::Seen(seen) = account.lookup(instance_id)
        {
            return Ok(found_or_gone(seen.observed.clone()));
        }
        match beeos.get(instance_id).await {
            Ok(instance) => {
                if let Some(account) = &account {
                    account.record(&instance, false);
                }
                Ok(found_or_gone(observed_instance(&instance)))
            }
            Err(err) if err.is_not_found() => {
                if let Some(account) = &account {
                    account.forget(instance_id);
                }
                Ok(Looked::Gone)
            }
            Err(err) if err.is_forbidden() => Ok(Looked::Forbidden),
            Err(err) => Err(err),
        }
    }
}

fn found_or_gone(instance: ObservedInstance) -> Looked {
    if instance.status.as_deref() == Some("terminated") {
        Looked::Gone
    } else {
        Looked::Found(Box::new(instance))
    }
}

fn remote(found: &Looked) -> Remote<'_> {
    match found {
        Looked::Found(instance) => Remote::Found(instance),
        Looked::Gone => Remote::Gone,
        Looked::Forbidden => Remote::Forbidden,
    }
}

fn claimed_problem(instance_id: Option<&str>, owner: &Key) -> Problem {
    Problem::NeedsAction {
        reason: reason::INSTANCE_CLAIMED,
        message: format!(
            "instance {} is owned by BeeosInstance {owner}, which recorded it first (a copied \
             manifest carries its annotations); this resource will not start, stop, restart or \
             destroy it. Remove the {INSTANCE_ID_ANNOTATION} and {CLAIM_ANNOTATION} annotations \
             to deploy a new instance",
            instance_id.unwrap_or_default()
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::BeeosInstanceSpec;

    fn resource(annotations: &[(&str, &str)], status_id: Option<&str>) -> BeeosInstance {
        let mut resource = BeeosInstance::new("agent", BeeosInstanceSpec::default());
        resource.metadata.namespace = Some("team-a".into());
        resource.metadata.annotations = Some(
            annotations
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
        );
        resource.status = status_id.map(|id| crate::crd::BeeosInstanceStatus {
            instance: Some(ObservedInstance {
                id: id.into(),
                ..ObservedInstance::default()
            }),
            ..Default::default()
        });
        resource
    }

    #[test]
    fn a_lost_id_is_found_in_the_own_claim_or_else_the_status() {
        let key = Key {
            namespace: "team-a".into(),
            name: "agent".into(),
        };
        let claimed = resource(&[(CLAIM_ANNOTATION, "team-a/agent/inst-1")], Some("inst-0"));
        let claim = annotation(&claimed, Some(CLAIM_ANNOTATION));
        assert_eq!(lost_id(&claimed, &key, claim), Some("inst-1"));
        let copied = resource(
            &[(CLAIM_ANNOTATION, "team-a/original/inst-1")],
            Some("inst-0"),
        );
        let claim = annotation(&copied, Some(CLAIM_ANNOTATION));
        assert_eq!(lost_id(&copied, &key, claim), Some("inst-0"));
        let present = resource(
            &[
                (INSTANCE_ID_ANNOTATION, "inst-1"),
                (CLAIM_ANNOTATION, "team-a/agent/inst-1"),
            ],
            None,
        );
        assert_eq!(lost_id(&present, &key, None), None);
        let fresh = resource(&[], None);
        assert_eq!(lost_id(&fresh, &key, None), None);
    }
}
