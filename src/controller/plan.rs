//! What to do next for one resource: a pure function of what was observed.
//!
//! No I/O and no clock here, so every branch is a plain unit test. The reconcile driver
//! gathers an [`Observation`], asks [`next_step`], performs the one step it gets, and comes back.
//!
//! A resource can hold up to three instances, each recorded in annotations: the current one,
//! a replacement being deployed (update strategy Replace) and a replaced one still to be
//! destroyed (retiring). A deploy is bracketed by a pending mark: while a slot has a mark but
//! no id, a deploy may have happened unseen, so the step is to look for it, never to deploy
//! again blindly.

use super::index::{Key, Ownership};
use crate::beeos::{Connectivity, DesiredStatus, Instance, InstanceStatus};
use crate::crd::{DeletionPolicy, ObservedInstance, PowerState, UpdateStrategy};

/// What the reconcile driver saw of a resource and its instances.
#[derive(Clone, Debug)]
pub struct Observation<'a> {
    /// `metadata.deletionTimestamp` is set.
    pub deleting: bool,
    /// Our finalizer is on the resource.
    pub has_finalizer: bool,
    /// `beeos.ai/paused` is `"true"`.
    pub paused: bool,
    pub deletion_policy: DeletionPolicy,
    pub power_state: PowerState,
    pub update_strategy: UpdateStrategy,
    /// A `beeos.ai/restart-requested-at` value not acted on yet.
    pub restart_requested: bool,
    /// The digest of what a deploy would send now; `None` while deleting.
    pub desired_digest: Option<&'a str>,
    /// The instance the resource owns.
    pub current: Slot<'a>,
    /// The instance deployed to replace it (update strategy Replace).
    pub replacement: Slot<'a>,
    /// A replaced instance still to be destroyed.
    pub retiring: Slot<'a>,
    /// Who owns the instance `current` names.
    pub ownership: Ownership,
    /// The operator's bookkeeping (marks, spares, digests) was written for this resource, not
    /// copied along with another resource's annotations.
    pub bookkeeping_own: bool,
    /// An instance another record (the claim, the status) names while `beeos.ai/instance-id` is
    /// missing: it was lost, and must be restored rather than deployed again.
    pub lost: Slot<'a>,
}

impl<'a> Observation<'a> {
    /// The slot `which`.
    pub fn slot(&self, which: Which) -> Slot<'a> {
        match which {
            Which::Current => self.current,
            Which::Replacement => self.replacement,
            Which::Retiring => self.retiring,
        }
    }

    /// The slot `which`, to fill in what BeeOS reported.
    pub fn slot_mut(&mut self, which: Which) -> &mut Slot<'a> {
        match which {
            Which::Current => &mut self.current,
            Which::Replacement => &mut self.replacement,
            Which::Retiring => &mut self.retiring,
        }
    }

    /// Nothing was ever recorded for this resource: no instance, no mark, no spare.
    fn untouched(&self) -> bool {
        [self.current, self.replacement, self.retiring, self.lost]
            .iter()
            .all(|slot| slot.id.is_none() && !slot.deploy_started)
    }
}

/// One instance slot of a resource, as recorded in its annotations and seen at BeeOS.
#[derive(Clone, Copy, Debug, Default)]
pub struct Slot<'a> {
    pub id: Option<&'a str>,
    /// A deploy into this slot started and its id was not recorded yet.
    pub deploy_started: bool,
    /// What the instance was (or is being) deployed with.
    pub digest: Option<&'a str>,
    pub remote: Remote<'a>,
    /// The instance has been in transition (or running but not online) longer than the
    /// operator waits.
    pub stuck: bool,
}

/// The instance at BeeOS, as far as this reconcile knows.
#[derive(Clone, Copy, Debug, Default)]
pub enum Remote<'a> {
    /// Not looked up (there is no id).
    #[default]
    NotLooked,
    /// BeeOS answered 404, or the instance is terminated.
    Gone,
    /// BeeOS answered 403: it exists, but not for these credentials. Never "gone".
    Forbidden,
    /// BeeOS reported it.
    Found(&'a ObservedInstance),
}

/// Which instance of a resource a step is about.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Which {
    Current,
    Replacement,
    Retiring,
}

/// The one step the driver takes next.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Step {
    /// `beeos.ai/paused` is set: no BeeOS calls.
    Paused,
    /// Put the finalizer on before anything is claimed or changed at BeeOS.
    AddFinalizer,
    /// Mark the slot as deploying (and put the finalizer on, if missing), deploy, record the id.
    Deploy(Which),
    /// The slot was marked but has no id: look for an instance deployed unseen, adopt it, or
    /// (after a grace period with nothing found) clear the mark.
    FindDeployed(Which),
    /// Record that this resource owns the instance its annotation names (set by hand, and held
    /// by nobody else), with the digest it now counts as deployed with.
    Claim,
    /// Write `beeos.ai/instance-id` back from the record that still names the live instance.
    RestoreId,
    /// Record the digest of an instance claimed before digests were kept.
    RecordDigest,
    /// Destroy an instance (deletion, or a retired or unwanted one).
    Destroy(Which),
    /// Forget a slot whose instance is gone.
    Forget(Which),
    /// The replacement is ready: make it current and retire the old one.
    PromoteReplacement,
    /// Recreate: retire the current instance so a new one is deployed once it is gone.
    RetireForRecreate,
    Start,
    Stop,
    Restart,
    /// BeeOS is moving an instance between states; look again when it changes.
    AwaitTransition,
    /// The recorded instance does not exist: a person must decide.
    InstanceGone,
    /// The recorded instance is owned by another resource: a person must decide.
    InstanceClaimed(Key),
    /// BeeOS refuses these credentials access to the instance (403): wrong credentials.
    InstanceForbidden(Which),
    /// An instance has been in transition longer than the operator waits.
    TransitionTimeout(Which),
    /// BeeOS stopped a trial instance at its expiry: starting it again would be refused.
    TrialExpired,
    /// Nothing (more) to clean up at BeeOS: let the resource go.
    RemoveFinalizer,
    /// Everything matches the spec (or the drift is left alone under OnDelete).
    Steady,
}

/// Decides the next step. Deletion wins over everything but pause; a transition under way is
/// never interrupted by another call (BeeOS would answer 409).
pub fn next_step(observation: &Observation<'_>) -> Step {
    let o = observation;
    if o.paused {
        return Step::Paused;
    }
    if o.deleting {
        return deletion_step(o);
    }
    if let Ownership::ClaimedBy(owner) = &o.ownership {
        return Step::InstanceClaimed(owner.clone());
    }
    if !o.has_finalizer {
        // A first deploy writes the finalizer with its mark, in one write.
        return if o.untouched() {
            Step::Deploy(Which::Current)
        } else {
            Step::AddFinalizer
        };
    }
    if !o.bookkeeping_own {
        // Copied from another resource: its marks and spares are not this resource's.
        return Step::Claim;
    }
    // A replaced instance is billed until destroyed: clean it up first.
    if o.retiring.id.is_some() {
        match o.retiring.remote {
            Remote::Gone => return Step::Forget(Which::Retiring),
            Remote::Forbidden => return Step::InstanceForbidden(Which::Retiring),
            Remote::Found(instance) if !being_destroyed(instance) => {
                return if is_transitioning(instance) {
                    await_or_timeout(o.retiring, Which::Retiring)
                } else {
                    Step::Destroy(Which::Retiring)
                };
            }
            // Being destroyed: Recreate waits for it below, Replace need not.
            _ => {}
        }
    }

    let Some(_) = o.current.id else {
        if o.retiring.id.is_some() {
            // Recreate: the old instance goes before the new one comes.
            return Step::AwaitTransition;
        }
        if o.current.deploy_started {
            return Step::FindDeployed(Which::Current);
        }
        return match (o.lost.id, o.lost.remote) {
            (Some(_), Remote::Found(instance)) if is_alive(instance) => Step::RestoreId,
            (Some(_), Remote::Forbidden) => Step::InstanceForbidden(Which::Current),
            (Some(_), Remote::NotLooked) => Step::AwaitTransition,
            _ => Step::Deploy(Which::Current),
        };
    };
    let instance = match o.current.remote {
        Remote::Found(instance) => instance,
        Remote::Gone => return Step::InstanceGone,
        Remote::Forbidden => return Step::InstanceForbidden(Which::Current),
        // The driver looks every recorded id up before planning.
        Remote::NotLooked => return Step::AwaitTransition,
    };
    if o.ownership == Ownership::Free {
        return Step::Claim;
    }
    if trial_expired(instance) {
        return Step::TrialExpired;
    }
    let Some(digest) = o.current.digest else {
        return Step::RecordDigest;
    };
    let drifted = o.desired_digest.is_some_and(|desired| desired != digest);
    if !(drifted && o.update_strategy == UpdateStrategy::Replace) {
        // The spec went back, or the strategy changed, mid-replacement: the replacement is
        // no longer wanted, and it is billed like any instance.
        if let Some(step) = unwanted_replacement_step(&o.replacement) {
            return step;
        }
    }
    if drifted {
        match o.update_strategy {
            UpdateStrategy::Replace => return replace_step(o),
            UpdateStrategy::Recreate if !is_transitioning(instance) => {
                return Step::RetireForRecreate;
            }
            UpdateStrategy::Recreate => return await_or_timeout(o.current, Which::Current),
            UpdateStrategy::OnDelete => {}
        }
    }
    if is_transitioning(instance) {
        return await_or_timeout(o.current, Which::Current);
    }
    match (o.power_state, status(instance)) {
        (PowerState::Running, Some(InstanceStatus::Stopped)) => Step::Start,
        (PowerState::Stopped, Some(InstanceStatus::Running)) => Step::Stop,
        (PowerState::Running, Some(InstanceStatus::Running)) if o.restart_requested => {
            Step::Restart
        }
        // Running but never online.
        _ if o.current.stuck => Step::TransitionTimeout(Which::Current),
        _ => Step::Steady,
    }
}

fn await_or_timeout(slot: Slot<'_>, which: Which) -> Step {
    if slot.stuck {
        Step::TransitionTimeout(which)
    } else {
        Step::AwaitTransition
    }
}

/// Update strategy Replace, with the current instance out of date.
fn replace_step(o: &Observation<'_>) -> Step {
    let replacement = &o.replacement;
    if replacement.id.is_none() {
        return if replacement.deploy_started {
            Step::FindDeployed(Which::Replacement)
        } else {
            Step::Deploy(Which::Replacement)
        };
    }
    match replacement.remote {
        Remote::Found(instance) if is_ready_to_serve(instance) => Step::PromoteReplacement,
        Remote::Found(_) => await_or_timeout(*replacement, Which::Replacement),
        Remote::NotLooked => Step::AwaitTransition,
        Remote::Forbidden => Step::InstanceForbidden(Which::Replacement),
        // It vanished before it was promoted: forget it and deploy another.
        Remote::Gone => Step::Forget(Which::Replacement),
    }
}

fn unwanted_replacement_step(replacement: &Slot<'_>) -> Option<Step> {
    match (replacement.id, replacement.remote) {
        (Some(_), Remote::Found(instance)) if !being_destroyed(instance) => {
            Some(Step::Destroy(Which::Replacement))
        }
        (Some(_), Remote::Gone) => Some(Step::Forget(Which::Replacement)),
        (Some(_), Remote::Forbidden) => Some(Step::InstanceForbidden(Which::Replacement)),
        (None, _) if replacement.deploy_started => Some(Step::FindDeployed(Which::Replacement)),
        _ => None,
    }
}

/// Deleting: destroy what the resource owns — or, under `Orphan`, only the operator's own
/// spares, leaving the current instance to the user — then let go. An instance the resource
/// does not own (another resource's, or one the credentials may not touch) is never destroyed:
/// a 403 stalls the deletion until the credentials are fixed, since the instance is not gone.
fn deletion_step(o: &Observation<'_>) -> Step {
    if !o.has_finalizer {
        return Step::Steady;
    }
    let orphan = o.deletion_policy == DeletionPolicy::Orphan;
    let owns_current = match &o.ownership {
        Ownership::Owned => true,
        Ownership::Free => {
            if !orphan && o.current.id.is_some() && matches!(o.current.remote, Remote::Found(_)) {
                return Step::Claim;
            }
            false
        }
        Ownership::ClaimedBy(_) => false,
    };
    if !orphan && o.current.id.is_none() && !o.current.deploy_started && o.bookkeeping_own {
        // The id annotation was lost but a record still names the live instance.
        if let (Some(_), Remote::Found(instance)) = (o.lost.id, o.lost.remote)
            && is_alive(instance)
        {
            return Step::RestoreId;
        }
    }
    let mut waiting = false;
    for which in [Which::Retiring, Which::Replacement, Which::Current] {
        let slot = o.slot(which);
        let owned = match which {
            Which::Current => o.bookkeeping_own && (owns_current || slot.id.is_none()),
            Which::Replacement | Which::Retiring => o.bookkeeping_own,
        };
        if !owned {
            continue;
        }
        if which == Which::Current && orphan {
            // The user's to keep; only a deploy in flight is looked for, so it is recorded.
            if slot.id.is_none() && slot.deploy_started {
                return Step::FindDeployed(which);
            }
            continue;
        }
        match (slot.id, slot.remote) {
            (Some(_), Remote::Found(instance)) if being_destroyed(instance) => waiting = true,
            (Some(_), Remote::Found(instance)) if is_transitioning(instance) => waiting = true,
            (Some(_), Remote::Found(_)) => return Step::Destroy(which),
            (Some(_), Remote::NotLooked) => waiting = true,
            (Some(_), Remote::Forbidden) => return Step::InstanceForbidden(which),
            (Some(_), Remote::Gone) => {}
            // A deploy may have happened unseen: find it so it can be destroyed too.
            (None, _) if slot.deploy_started => return Step::FindDeployed(which),
            (None, _) => {}
        }
    }
    if waiting {
        Step::AwaitTransition
    } else {
        Step::RemoveFinalizer
    }
}

/// BeeOS halted the instance because its trial ran out.
pub fn trial_expired(instance: &ObservedInstance) -> bool {
    instance.halt_reason.as_deref() == Some("trial_expired")
}

/// The instance's lifecycle state.
pub fn status(instance: &ObservedInstance) -> Option<InstanceStatus> {
    instance.status.as_deref().map(InstanceStatus::from)
}

fn desired(instance: &ObservedInstance) -> Option<DesiredStatus> {
    instance.desired_status.as_deref().map(DesiredStatus::from)
}

/// BeeOS is moving the instance between states (or cannot say where it stands).
pub fn is_transitioning(instance: &ObservedInstance) -> bool {
    match (status(instance), desired(instance)) {
        (Some(status), Some(desired)) => !status.matches(&desired),
        _ => true,
    }
}

fn being_destroyed(instance: &ObservedInstance) -> bool {
    desired(instance) == Some(DesiredStatus::Terminated)
}

/// Exists and is not on its way out.
fn is_alive(instance: &ObservedInstance) -> bool {
    status(instance) != Some(InstanceStatus::Terminated) && !being_destroyed(instance)
}

/// Running and online: what a replacement must be before it takes over.
pub fn is_ready_to_serve(instance: &ObservedInstance) -> bool {
    status(instance) == Some(InstanceStatus::Running)
        && instance.connectivity.as_deref().map(Connectivity::from) == Some(Connectivity::Online)
}

/// Whether an instance in transition (or running but not online) has been so for longer than
/// `limit`, judged by BeeOS's `statusEnteredAt` (else `createdAt`) against `now`.
pub fn transition_exceeded(
    instance: &ObservedInstance,
    now: k8s_openapi::jiff::Timestamp,
    limit: std::time::Duration,
) -> bool {
    let waiting = is_transitioning(instance)
        || (status(instance) == Some(InstanceStatus::Running) && !is_ready_to_serve(instance));
    let since = instance
        .status_entered_at
        .as_deref()
        .or(instance.created_at.as_deref())
        .and_then(|at| at.parse::<k8s_openapi::jiff::Timestamp>().ok());
    let limit = k8s_openapi::jiff::SignedDuration::try_from(limit)
        .unwrap_or(k8s_openapi::jiff::SignedDuration::MAX);
    waiting && since.is_some_and(|since| now.duration_since(since) > limit)
}

/// What looking for an unseen deploy concluded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Found {
    /// Exactly one instance fits: adopt it.
    One(String),
    /// Several fit: a person must choose.
    Several(Vec<String>),
    /// Nothing yet; the deploy may still be in flight elsewhere.
    NothingYet,
    /// Nothing after the grace period: the deploy did not happen.
    Nothing,
}

/// Picks among instances listed by name: exact name (unique to the deploy, see
/// `request::instance_name`), created no earlier than the mark (less an allowance for clock
/// skew), alive, and not recorded by any resource.
pub fn find_deployed<'a>(
    candidates: impl IntoIterator<Item = &'a Instance>,
    name: &str,
    not_before: k8s_openapi::jiff::Timestamp,
    claimed: impl Fn(&str) -> bool,
    grace_over: bool,
) -> Found {
    let ids: Vec<String> = candidates
        .into_iter()
        .filter(|instance| instance.name == name && !instance.is_terminated())
        .filter(|instance| {
            instance
                .created_at
                .as_deref()
                .and_then(|at| at.parse::<k8s_openapi::jiff::Timestamp>().ok())
                // No createdAt (it is optional in the contract): it cannot be excluded.
                .is_none_or(|created| created >= not_before)
        })
        .filter(|instance| !claimed(&instance.instance_id))
        .map(|instance| instance.instance_id.clone())
        .collect();
    match ids.len() {
        0 if grace_over => Found::Nothing,
        0 => Found::NothingYet,
        1 => Found::One(ids.into_iter().next().unwrap_or_default()),
        _ => Found::Several(ids),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn instance(status: &str, desired: &str) -> ObservedInstance {
        ObservedInstance {
            id: "inst-1".into(),
            status: Some(status.into()),
            desired_status: Some(desired.into()),
            connectivity: Some("online".into()),
            ..ObservedInstance::default()
        }
    }

    fn slot<'a>(id: &'a str, remote: Remote<'a>) -> Slot<'a> {
        Slot {
            id: Some(id),
            deploy_started: false,
            digest: Some("d1"),
            remote,
            stuck: false,
        }
    }

    fn observation(current: Remote<'_>) -> Observation<'_> {
        Observation {
            deleting: false,
            has_finalizer: true,
            paused: false,
            deletion_policy: DeletionPolicy::Delete,
            power_state: PowerState::Running,
            update_strategy: UpdateStrategy::Replace,
            restart_requested: false,
            desired_digest: Some("d1"),
            current: slot("inst-1", current),
            replacement: Slot::default(),
            retiring: Slot::default(),
            ownership: Ownership::Owned,
            bookkeeping_own: true,
            lost: Slot::default(),
        }
    }

    fn fresh<'a>() -> Observation<'a> {
        Observation {
            current: Slot::default(),
            ownership: Ownership::Free,
            ..observation(Remote::NotLooked)
        }
    }

    fn other() -> Key {
        Key {
            namespace: "team-a".into(),
            name: "original".into(),
        }
    }

    #[test]
    fn a_first_deploy_goes_with_the_finalizer_and_anything_else_waits_for_it() {
        let o = Observation {
            has_finalizer: false,
            ..fresh()
        };
        assert_eq!(next_step(&o), Step::Deploy(Which::Current));
        assert_eq!(next_step(&fresh()), Step::Deploy(Which::Current));
        let running = instance("running", "running");
        let adopting = Observation {
            has_finalizer: false,
            ownership: Ownership::Free,
            ..observation(Remote::Found(&running))
        };
        assert_eq!(next_step(&adopting), Step::AddFinalizer);
    }

    #[test]
    fn a_marked_deploy_without_an_id_is_looked_for_not_repeated() {
        let mut o = fresh();
        o.current.deploy_started = true;
        assert_eq!(next_step(&o), Step::FindDeployed(Which::Current));
        o.deleting = true;
        assert_eq!(next_step(&o), Step::FindDeployed(Which::Current));
    }

    #[test]
    fn paused_resource_makes_no_calls_even_when_deleted() {
        let o = Observation {
            paused: true,
            deleting: true,
            ..fresh()
        };
        assert_eq!(next_step(&o), Step::Paused);
    }

    #[test]
    fn transition_under_way_is_awaited_not_interrupted_until_it_takes_too_long() {
        let pending = instance("provisioning", "running");
        let mut o = Observation {
            power_state: PowerState::Stopped,
            restart_requested: true,
            ..observation(Remote::Found(&pending))
        };
        assert_eq!(next_step(&o), Step::AwaitTransition);
        o.current.stuck = true;
        assert_eq!(next_step(&o), Step::TransitionTimeout(Which::Current));
    }

    #[test]
    fn power_state_maps_to_start_and_stop() {
        let stopped = instance("stopped", "stopped");
        assert_eq!(
            next_step(&observation(Remote::Found(&stopped))),
            Step::Start
        );
        let running = instance("running", "running");
        let o = Observation {
            power_state: PowerState::Stopped,
            ..observation(Remote::Found(&running))
        };
        assert_eq!(next_step(&o), Step::Stop);
        assert_eq!(
            next_step(&observation(Remote::Found(&running))),
            Step::Steady
        );
    }

    #[test]
    fn restart_only_when_running_and_asked() {
        let running = instance("running", "running");
        let o = Observation {
            restart_requested: true,
            ..observation(Remote::Found(&running))
        };
        assert_eq!(next_step(&o), Step::Restart);
        let stopped = instance("stopped", "stopped");
        let o = Observation {
            restart_requested: true,
            power_state: PowerState::Stopped,
            ..observation(Remote::Found(&stopped))
        };
        assert_eq!(next_step(&o), Step::Steady);
    }

    #[test]
    fn vanished_claimed_or_forbidden_instances_are_reported_not_redeployed() {
        assert_eq!(next_step(&observation(Remote::Gone)), Step::InstanceGone);
        assert_eq!(
            next_step(&observation(Remote::Forbidden)),
            Step::InstanceForbidden(Which::Current)
        );
        let running = instance("running", "running");
        let o = Observation {
            ownership: Ownership::ClaimedBy(other()),
            ..observation(Remote::Found(&running))
        };
        assert_eq!(next_step(&o), Step::InstanceClaimed(other()));
    }

    #[test]
    fn a_hand_set_id_is_claimed_once_it_is_seen_and_an_old_claim_gets_its_digest() {
        let running = instance("running", "running");
        let o = Observation {
            ownership: Ownership::Free,
            ..observation(Remote::Found(&running))
        };
        assert_eq!(next_step(&o), Step::Claim);
        let o = Observation {
            ownership: Ownership::Free,
            ..observation(Remote::Gone)
        };
        assert_eq!(next_step(&o), Step::InstanceGone, "nothing to claim");
        let mut o = observation(Remote::Found(&running));
        o.current.digest = None;
        assert_eq!(next_step(&o), Step::RecordDigest);
    }

    #[test]
    fn copied_bookkeeping_is_replaced_by_a_claim_of_its_own() {
        let o = Observation {
            bookkeeping_own: false,
            ..fresh()
        };
        assert_eq!(next_step(&o), Step::Claim);
    }

    #[test]
    fn a_lost_id_annotation_is_restored_while_the_instance_lives_never_redeployed() {
        let running = instance("running", "running");
        let mut o = fresh();
        o.lost = slot("inst-1", Remote::Found(&running));
        assert_eq!(next_step(&o), Step::RestoreId);
        o.deleting = true;
        assert_eq!(next_step(&o), Step::RestoreId, "deleting destroys it");
        o.deleting = false;
        let gone = instance("terminated", "terminated");
        o.lost = slot("inst-1", Remote::Found(&gone));
        assert_eq!(next_step(&o), Step::Deploy(Which::Current));
        o.lost = slot("inst-1", Remote::Gone);
        assert_eq!(next_step(&o), Step::Deploy(Which::Current));
    }

    #[test]
    fn drift_under_replace_deploys_waits_promotes_then_retires() {
        let running = instance("running", "running");
        let mut o = observation(Remote::Found(&running));
        o.desired_digest = Some("d2");
        assert_eq!(next_step(&o), Step::Deploy(Which::Replacement));

        o.replacement.deploy_started = true;
        assert_eq!(next_step(&o), Step::FindDeployed(Which::Replacement));

        let provisioning = instance("provisioning", "running");
        o.replacement = slot("inst-2", Remote::Found(&provisioning));
        assert_eq!(next_step(&o), Step::AwaitTransition);
        o.replacement.stuck = true;
        assert_eq!(next_step(&o), Step::TransitionTimeout(Which::Replacement));
        let ready = instance("running", "running");
        o.replacement = slot("inst-2", Remote::Found(&ready));
        assert_eq!(next_step(&o), Step::PromoteReplacement);
        o.replacement = slot("inst-2", Remote::Gone);
        assert_eq!(next_step(&o), Step::Forget(Which::Replacement));

        // After promotion: the new one is current and up to date, the old one retires.
        let mut promoted = observation(Remote::Found(&ready));
        promoted.current.digest = Some("d2");
        promoted.desired_digest = Some("d2");
        promoted.retiring = slot("inst-1", Remote::Found(&running));
        assert_eq!(next_step(&promoted), Step::Destroy(Which::Retiring));
        promoted.retiring = slot("inst-1", Remote::Gone);
        assert_eq!(next_step(&promoted), Step::Forget(Which::Retiring));
    }

    #[test]
    fn a_replacement_no_longer_wanted_is_destroyed_then_forgotten() {
        let running = instance("running", "running");
        let provisioning = instance("provisioning", "running");
        // The spec went back to what is deployed.
        let mut o = observation(Remote::Found(&running));
        o.replacement = slot("inst-2", Remote::Found(&provisioning));
        assert_eq!(next_step(&o), Step::Destroy(Which::Replacement));
        o.replacement = slot("inst-2", Remote::Gone);
        assert_eq!(next_step(&o), Step::Forget(Which::Replacement));
        o.replacement = Slot {
            deploy_started: true,
            ..Slot::default()
        };
        assert_eq!(next_step(&o), Step::FindDeployed(Which::Replacement));
        // The strategy changed to Recreate mid-replacement.
        let mut o = observation(Remote::Found(&running));
        o.desired_digest = Some("d2");
        o.update_strategy = UpdateStrategy::Recreate;
        o.replacement = slot("inst-2", Remote::Found(&provisioning));
        assert_eq!(next_step(&o), Step::Destroy(Which::Replacement));
    }

    #[test]
    fn drift_under_recreate_retires_first_and_deploys_after_it_is_gone() {
        let running = instance("running", "running");
        let mut o = observation(Remote::Found(&running));
        o.desired_digest = Some("d2");
        o.update_strategy = UpdateStrategy::Recreate;
        assert_eq!(next_step(&o), Step::RetireForRecreate);

        let terminating = instance("running", "terminated");
        let mut retired = fresh();
        retired.ownership = Ownership::Owned;
        retired.update_strategy = UpdateStrategy::Recreate;
        retired.retiring = slot("inst-1", Remote::Found(&terminating));
        assert_eq!(next_step(&retired), Step::AwaitTransition);
        retired.retiring = slot("inst-1", Remote::Gone);
        assert_eq!(next_step(&retired), Step::Forget(Which::Retiring));
        retired.retiring = Slot::default();
        assert_eq!(next_step(&retired), Step::Deploy(Which::Current));
    }

    #[test]
    fn drift_under_on_delete_changes_nothing() {
        let running = instance("running", "running");
        let mut o = observation(Remote::Found(&running));
        o.desired_digest = Some("d2");
        o.update_strategy = UpdateStrategy::OnDelete;
        assert_eq!(next_step(&o), Step::Steady);
    }

    #[test]
    fn an_expired_trial_is_reported_not_started_again() {
        let mut expired = instance("stopped", "stopped");
        expired.halt_reason = Some("trial_expired".into());
        assert_eq!(
            next_step(&observation(Remote::Found(&expired))),
            Step::TrialExpired
        );
    }

    #[test]
    fn running_but_never_online_stalls_after_the_limit() {
        let mut offline = instance("running", "running");
        offline.connectivity = Some("offline".into());
        let mut o = observation(Remote::Found(&offline));
        assert_eq!(next_step(&o), Step::Steady);
        o.current.stuck = true;
        assert_eq!(next_step(&o), Step::TransitionTimeout(Which::Current));
    }

    #[test]
    fn deletion_destroys_every_instance_then_lets_go() {
        let running = instance("running", "running");
        let terminating = instance("running", "terminated");
        let mut o = Observation {
            deleting: true,
            ..observation(Remote::Found(&running))
        };
        o.replacement = slot("inst-2", Remote::Found(&running));
        assert_eq!(next_step(&o), Step::Destroy(Which::Replacement));
        o.replacement = slot("inst-2", Remote::Found(&terminating));
        assert_eq!(next_step(&o), Step::Destroy(Which::Current));
        o.current = slot("inst-1", Remote::Found(&terminating));
        assert_eq!(next_step(&o), Step::AwaitTransition);
        o.current = slot("inst-1", Remote::Gone);
        o.replacement = slot("inst-2", Remote::Gone);
        assert_eq!(next_step(&o), Step::RemoveFinalizer);
    }

    #[test]
    fn deleting_a_copy_destroys_nothing_it_does_not_own() {
        let running = instance("running", "running");
        let mut copy = Observation {
            deleting: true,
            ownership: Ownership::ClaimedBy(other()),
            bookkeeping_own: false,
            ..observation(Remote::Found(&running))
        };
        copy.replacement = slot("inst-2", Remote::Found(&running));
        copy.retiring = Slot {
            deploy_started: true,
            ..Slot::default()
        };
        assert_eq!(next_step(&copy), Step::RemoveFinalizer);
        // A hand-set id of another resource's instance, with bookkeeping of its own.
        let pointing = Observation {
            deleting: true,
            ownership: Ownership::ClaimedBy(other()),
            ..observation(Remote::Found(&running))
        };
        assert_eq!(next_step(&pointing), Step::RemoveFinalizer);
    }

    #[test]
    fn deleting_with_foreign_credentials_stalls_instead_of_letting_go() {
        let o = Observation {
            deleting: true,
            ..observation(Remote::Forbidden)
        };
        assert_eq!(next_step(&o), Step::InstanceForbidden(Which::Current));
    }

    #[test]
    fn orphan_keeps_only_the_current_instance_and_destroys_the_spares_first() {
        let running = instance("running", "running");
        let mut o = Observation {
            deleting: true,
            deletion_policy: DeletionPolicy::Orphan,
            ..observation(Remote::Found(&running))
        };
        o.replacement = slot("inst-2", Remote::Found(&running));
        o.retiring = slot("inst-0", Remote::Found(&running));
        assert_eq!(next_step(&o), Step::Destroy(Which::Retiring));
        o.retiring = slot("inst-0", Remote::Gone);
        assert_eq!(next_step(&o), Step::Destroy(Which::Replacement));
        o.replacement = Slot {
            deploy_started: true,
            ..Slot::default()
        };
        assert_eq!(next_step(&o), Step::FindDeployed(Which::Replacement));
        o.replacement = Slot::default();
        assert_eq!(next_step(&o), Step::RemoveFinalizer);
        let never = Observation {
            deleting: true,
            ..fresh()
        };
        assert_eq!(next_step(&never), Step::RemoveFinalizer);
    }

    #[test]
    fn an_instance_stuck_since_statusenteredat_beyond_the_limit_is_exceeded() {
        let now: k8s_openapi::jiff::Timestamp = "2026-11-29T11:00:00Z".parse().expect("valid");
        let limit = std::time::Duration::from_secs(15 * 60);
        let mut provisioning = instance("provisioning", "running");
        provisioning.status_entered_at = Some("2026-11-29T10:50:00Z".into());
        assert!(!transition_exceeded(&provisioning, now, limit));
        provisioning.status_entered_at = Some("2026-11-29T10:40:00Z".into());
        assert!(transition_exceeded(&provisioning, now, limit));
        let mut settled = instance("running", "running");
        settled.status_entered_at = Some("2026-11-29T08:00:00Z".into());
        assert!(!transition_exceeded(&settled, now, limit));
        settled.connectivity = Some("offline".into());
        assert!(transition_exceeded(&settled, now, limit));
    }

    fn listed(id: &str, name: &str, created_at: &str, status: InstanceStatus) -> Instance {
        Instance {
            instance_id: id.into(),
            name: name.into(),
            created_at: Some(created_at.into()),
            status: Some(status),
            ..Instance::default()
        }
    }

    #[test]
    fn finding_a_deploy_needs_exact_name_fresh_alive_and_unclaimed() {
        let mark: k8s_openapi::jiff::Timestamp = "2026-11-29T10:00:00Z".parse().expect("valid");
        let candidates = [
            listed(
                "a",
                "agent",
                "2026-11-29T10:00:05Z",
                InstanceStatus::Pending,
            ),
            listed(
                "b",
                "agent-2",
                "2026-11-29T10:00:05Z",
                InstanceStatus::Pending,
            ),
            listed(
                "c",
                "agent",
                "2026-11-29T09:00:00Z",
                InstanceStatus::Running,
            ),
            listed(
                "d",
                "agent",
                "2026-11-29T10:00:06Z",
                InstanceStatus::Terminated,
            ),
            listed(
                "e",
                "agent",
                "2026-11-29T10:00:07Z",
                InstanceStatus::Running,
            ),
        ];
        assert_eq!(
            find_deployed(&candidates, "agent", mark, |id| id == "e", false),
            Found::One("a".into())
        );
        assert_eq!(
            find_deployed(&candidates, "agent", mark, |_| false, false),
            Found::Several(vec!["a".into(), "e".into()])
        );
        assert_eq!(
            find_deployed(&candidates, "other", mark, |_| false, false),
            Found::NothingYet
        );
        assert_eq!(
            find_deployed(&candidates, "other", mark, |_| false, true),
            Found::Nothing
        );
    }
}
