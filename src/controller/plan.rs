//! What to do next for one resource: a pure function of what was observed.
//!
//! No I/O and no clock here, so every branch is a plain unit test. The reconcile driver
//! gathers an [`Observation`], asks [`next_step`], performs the one step it gets, and comes back.

use crate::beeos::{DesiredStatus, Instance, InstanceStatus};
use crate::crd::{DeletionPolicy, PowerState};

/// What the reconcile driver saw of a resource and its instance.
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
    /// The instance the resource owns, from the `beeos.ai/instance-id` annotation.
    pub instance_id: Option<&'a str>,
    /// The instance as BeeOS reports it; `Gone` after a 404 or once it is terminated.
    pub instance: Remote<'a>,
    /// A `beeos.ai/restart-requested-at` value not acted on yet.
    pub restart_requested: bool,
}

/// The instance at BeeOS, as far as this reconcile knows.
#[derive(Clone, Copy, Debug)]
pub enum Remote<'a> {
    /// Not looked up (there is no instance id).
    NotLooked,
    /// BeeOS answered 404, or the instance is terminated.
    Gone,
    /// BeeOS reported it.
    Found(&'a Instance),
}

/// The one step the driver takes next.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Step {
    /// `beeos.ai/paused` is set: no BeeOS calls.
    Paused,
    /// Put the finalizer on before anything can be deployed.
    AddFinalizer,
    /// Deploy a new instance.
    Deploy,
    /// Destroy the instance (deletion with policy `Delete`).
    Destroy,
    /// The destroy was accepted; wait until BeeOS reports the instance terminated or gone.
    AwaitDestroyed,
    /// Nothing (more) to clean up at BeeOS: let the resource go.
    RemoveFinalizer,
    Start,
    Stop,
    Restart,
    /// BeeOS is moving the instance between states; look again soon.
    AwaitTransition,
    /// The recorded instance no longer exists: a person must decide (never redeploy blindly).
    InstanceGone,
    /// Everything matches the spec.
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
    if o.instance_id.is_none() {
        return Step::Deploy;
    }
    let instance = match o.instance {
        Remote::Found(instance) => instance,
        Remote::Gone => return Step::InstanceGone,
        // The driver always looks an id up before planning; treat a miss as a transition.
        Remote::NotLooked => return Step::AwaitTransition,
    };
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

fn deletion_step(o: &Observation<'_>) -> Step {
    if !o.has_finalizer {
        return Step::Steady;
    }
    if o.deletion_policy == DeletionPolicy::Orphan || o.instance_id.is_none() {
        return Step::RemoveFinalizer;
    }
    match o.instance {
        Remote::Gone => Step::RemoveFinalizer,
        Remote::Found(instance) if instance.desired_status == Some(DesiredStatus::Terminated) => {
            Step::AwaitDestroyed
        }
        Remote::Found(_) | Remote::NotLooked => Step::Destroy,
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
            ..Instance::default()
        }
    }

    fn observation<'a>(instance: Remote<'a>) -> Observation<'a> {
        Observation {
            deleting: false,
            has_finalizer: true,
            paused: false,
            deletion_policy: DeletionPolicy::Delete,
            power_state: PowerState::Running,
            instance_id: Some("inst-1"),
            instance,
            restart_requested: false,
        }
    }

    #[test]
    fn finalizer_goes_on_before_the_first_deploy() {
        let o = Observation {
            has_finalizer: false,
            instance_id: None,
            ..observation(Remote::NotLooked)
        };
        assert_eq!(next_step(&o), Step::AddFinalizer);
        let o = Observation {
            has_finalizer: true,
            ..o
        };
        assert_eq!(next_step(&o), Step::Deploy);
    }

    #[test]
    fn paused_resource_makes_no_calls_even_when_deleted() {
        let o = Observation {
            paused: true,
            deleting: true,
            ..observation(Remote::NotLooked)
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
    fn vanished_instance_is_reported_not_redeployed() {
        assert_eq!(next_step(&observation(Remote::Gone)), Step::InstanceGone);
    }

    #[test]
    fn deletion_destroys_then_waits_then_lets_go() {
        let running = instance(InstanceStatus::Running, DesiredStatus::Running);
        let deleting = |remote| Observation {
            deleting: true,
            ..observation(remote)
        };
        assert_eq!(next_step(&deleting(Remote::Found(&running))), Step::Destroy);
        let terminating = instance(InstanceStatus::Running, DesiredStatus::Terminated);
        assert_eq!(
            next_step(&deleting(Remote::Found(&terminating))),
            Step::AwaitDestroyed
        );
        assert_eq!(next_step(&deleting(Remote::Gone)), Step::RemoveFinalizer);
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
            instance_id: None,
            ..observation(Remote::NotLooked)
        };
        assert_eq!(next_step(&o), Step::RemoveFinalizer);
    }
}
