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

use crate::beeos::{Connectivity, DesiredStatus, Instance, InstanceStatus};
use crate::crd::{DeletionPolicy, PowerState, UpdateStrategy};

/// What the reconcile driver saw of a resource and its instances.
#[derive(Clone, Copy, Debug)]
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
    /// Another resource already owns the current instance (an adoption that must not happen).
    pub claimed_by_other: bool,
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
}

/// The instance at BeeOS, as far as this reconcile knows.
#[derive(Clone, Copy, Debug, Default)]
pub enum Remote<'a> {
    /// Not looked up (there is no id).
    #[default]
    NotLooked,
    /// BeeOS answered 404, or the instance is terminated.
    Gone,
    /// BeeOS reported it.
    Found(&'a Instance),
}

/// Which instance of a resource a step is about.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Which {
    Current,
    Replacement,
    Retiring,
}

/// The one step the driver takes next.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Step {
    /// `beeos.ai/paused` is set: no BeeOS calls.
    Paused,
    /// Put the finalizer on before anything can be deployed.
    AddFinalizer,
    /// Mark the slot as deploying, deploy, record the id.
    Deploy(Which),
    /// The slot was marked but has no id: look for an instance deployed unseen, adopt it, or
    /// (after a grace period with nothing found) clear the mark.
    FindDeployed(Which),
    /// Record the digest of an instance adopted through its annotation.
    RecordDigest,
    /// Destroy an instance (deletion, or a retired one).
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
    /// BeeOS is moving an instance between states; look again soon.
    AwaitTransition,
    /// The recorded instance does not exist (or is not ours): a person must decide.
    InstanceGone,
    /// The recorded instance is owned by another resource: a person must decide.
    InstanceClaimed,
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
    if !o.has_finalizer {
        return Step::AddFinalizer;
    }
    // A replaced instance is billed until destroyed: clean it up first.
    if o.retiring.id.is_some() {
        match o.retiring.remote {
            Remote::Gone => return Step::Forget(Which::Retiring),
            Remote::Found(instance) if !being_destroyed(instance) => {
                return if instance.is_transitioning() {
                    Step::AwaitTransition
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
        return if o.current.deploy_started {
            Step::FindDeployed(Which::Current)
        } else {
            Step::Deploy(Which::Current)
        };
    };
    let instance = match o.current.remote {
        Remote::Found(instance) => instance,
        Remote::Gone => return Step::InstanceGone,
        // The driver looks every recorded id up before planning.
        Remote::NotLooked => return Step::AwaitTransition,
    };
    if o.claimed_by_other {
        return Step::InstanceClaimed;
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
            UpdateStrategy::Recreate if !instance.is_transitioning() => {
                return Step::RetireForRecreate;
            }
            UpdateStrategy::Recreate => return Step::AwaitTransition,
            UpdateStrategy::OnDelete => {}
        }
    }
    if instance.is_transitioning() {
        return Step::AwaitTransition;
    }
    match (o.power_state, instance.status.as_ref()) {
        (PowerState::Running, Some(InstanceStatus::Stopped)) => Step::Start,
        (PowerState::Stopped, Some(InstanceStatus::Running)) => Step::Stop,
        (PowerState::Running, Some(InstanceStatus::Running)) if o.restart_requested => {
            Step::Restart
        }
        _ => Step::Steady,
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
        Remote::Found(_) | Remote::NotLooked => Step::AwaitTransition,
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
        (None, _) if replacement.deploy_started => Some(Step::FindDeployed(Which::Replacement)),
        _ => None,
    }
}

fn deletion_step(o: &Observation<'_>) -> Step {
    if !o.has_finalizer {
        return Step::Steady;
    }
    if o.deletion_policy == DeletionPolicy::Orphan {
        return Step::RemoveFinalizer;
    }
    let mut waiting = false;
    for which in [Which::Retiring, Which::Replacement, Which::Current] {
        let slot = o.slot(which);
        match (slot.id, slot.remote) {
            (Some(_), Remote::Found(instance)) if being_destroyed(instance) => waiting = true,
            (Some(_), Remote::Found(instance)) if instance.is_transitioning() => waiting = true,
            (Some(_), Remote::Found(_)) => return Step::Destroy(which),
            (Some(_), Remote::NotLooked) => waiting = true,
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

fn being_destroyed(instance: &Instance) -> bool {
    instance.desired_status == Some(DesiredStatus::Terminated)
}

/// Running and online: what a replacement must be before it takes over.
pub fn is_ready_to_serve(instance: &Instance) -> bool {
    instance.status == Some(InstanceStatus::Running)
        && instance.connectivity == Some(Connectivity::Online)
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

/// Picks among instances listed by name: exact name, created no earlier than the mark (less an
/// allowance for clock skew), alive, and not recorded by any resource.
pub fn find_deployed<'a>(
    candidates: impl IntoIterator<Item = &'a Instance>,
    name: &str,
    not_before: k8s_openapi::jiff::Timestamp,
    claimed: &[&str],
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
        .filter(|instance| !claimed.contains(&instance.instance_id.as_str()))
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

    fn instance(status: InstanceStatus, desired: DesiredStatus) -> Instance {
        Instance {
            instance_id: "inst-1".into(),
            status: Some(status),
            desired_status: Some(desired),
            connectivity: Some(Connectivity::Online),
            ..Instance::default()
        }
    }

    fn slot<'a>(id: &'a str, remote: Remote<'a>) -> Slot<'a> {
        Slot {
            id: Some(id),
            deploy_started: false,
            digest: Some("d1"),
            remote,
        }
    }

    fn observation<'a>(current: Remote<'a>) -> Observation<'a> {
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
            claimed_by_other: false,
        }
    }

    fn fresh<'a>() -> Observation<'a> {
        Observation {
            current: Slot::default(),
            ..observation(Remote::NotLooked)
        }
    }

    #[test]
    fn finalizer_goes_on_before_the_first_deploy() {
        let o = Observation {
            has_finalizer: false,
            ..fresh()
        };
        assert_eq!(next_step(&o), Step::AddFinalizer);
        assert_eq!(next_step(&fresh()), Step::Deploy(Which::Current));
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
    fn transition_under_way_is_awaited_not_interrupted() {
        let pending = instance(InstanceStatus::Provisioning, DesiredStatus::Running);
        let o = Observation {
            power_state: PowerState::Stopped,
            restart_requested: true,
            ..observation(Remote::Found(&pending))
        };
        assert_eq!(next_step(&o), Step::AwaitTransition);
    }

    #[test]
    fn power_state_maps_to_start_and_stop() {
        let stopped = instance(InstanceStatus::Stopped, DesiredStatus::Stopped);
        assert_eq!(
            next_step(&observation(Remote::Found(&stopped))),
            Step::Start
        );
        let running = instance(InstanceStatus::Running, DesiredStatus::Running);
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
        let running = instance(InstanceStatus::Running, DesiredStatus::Running);
        let o = Observation {
            restart_requested: true,
            ..observation(Remote::Found(&running))
        };
        assert_eq!(next_step(&o), Step::Restart);
        let stopped = instance(InstanceStatus::Stopped, DesiredStatus::Stopped);
        let o = Observation {
            restart_requested: true,
            power_state: PowerState::Stopped,
            ..observation(Remote::Found(&stopped))
        };
        assert_eq!(next_step(&o), Step::Steady);
    }

    #[test]
    fn vanished_or_claimed_instance_is_reported_not_redeployed() {
        assert_eq!(next_step(&observation(Remote::Gone)), Step::InstanceGone);
        let running = instance(InstanceStatus::Running, DesiredStatus::Running);
        let o = Observation {
            claimed_by_other: true,
            ..observation(Remote::Found(&running))
        };
        assert_eq!(next_step(&o), Step::InstanceClaimed);
    }

    #[test]
    fn an_adopted_instance_gets_its_digest_recorded() {
        let running = instance(InstanceStatus::Running, DesiredStatus::Running);
        let mut o = observation(Remote::Found(&running));
        o.current.digest = None;
        assert_eq!(next_step(&o), Step::RecordDigest);
    }

    #[test]
    fn drift_under_replace_deploys_waits_promotes_then_retires() {
        let running = instance(InstanceStatus::Running, DesiredStatus::Running);
        let mut o = observation(Remote::Found(&running));
        o.desired_digest = Some("d2");
        assert_eq!(next_step(&o), Step::Deploy(Which::Replacement));

        o.replacement.deploy_started = true;
        assert_eq!(next_step(&o), Step::FindDeployed(Which::Replacement));

        let provisioning = instance(InstanceStatus::Provisioning, DesiredStatus::Running);
        o.replacement = slot("inst-2", Remote::Found(&provisioning));
        assert_eq!(next_step(&o), Step::AwaitTransition);
        let ready = instance(InstanceStatus::Running, DesiredStatus::Running);
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
        let running = instance(InstanceStatus::Running, DesiredStatus::Running);
        let provisioning = instance(InstanceStatus::Provisioning, DesiredStatus::Running);
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
        let running = instance(InstanceStatus::Running, DesiredStatus::Running);
        let mut o = observation(Remote::Found(&running));
        o.desired_digest = Some("d2");
        o.update_strategy = UpdateStrategy::Recreate;
        assert_eq!(next_step(&o), Step::RetireForRecreate);

        let terminating = instance(InstanceStatus::Running, DesiredStatus::Terminated);
        let mut retired = fresh();
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
        let running = instance(InstanceStatus::Running, DesiredStatus::Running);
        let mut o = observation(Remote::Found(&running));
        o.desired_digest = Some("d2");
        o.update_strategy = UpdateStrategy::OnDelete;
        assert_eq!(next_step(&o), Step::Steady);
    }

    #[test]
    fn deletion_destroys_every_instance_then_lets_go() {
        let running = instance(InstanceStatus::Running, DesiredStatus::Running);
        let terminating = instance(InstanceStatus::Running, DesiredStatus::Terminated);
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
    fn orphan_policy_and_never_deployed_let_go_without_calls() {
        let running = instance(InstanceStatus::Running, DesiredStatus::Running);
        let o = Observation {
            deleting: true,
            deletion_policy: DeletionPolicy::Orphan,
            ..observation(Remote::Found(&running))
        };
        assert_eq!(next_step(&o), Step::RemoveFinalizer);
        let o = Observation {
            deleting: true,
            ..fresh()
        };
        assert_eq!(next_step(&o), Step::RemoveFinalizer);
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
            find_deployed(&candidates, "agent", mark, &["e"], false),
            Found::One("a".into())
        );
        assert_eq!(
            find_deployed(&candidates, "agent", mark, &[], false),
            Found::Several(vec!["a".into(), "e".into()])
        );
        assert_eq!(
            find_deployed(&candidates, "other", mark, &[], false),
            Found::NothingYet
        );
        assert_eq!(
            find_deployed(&candidates, "other", mark, &[], true),
            Found::Nothing
        );
    }
}
