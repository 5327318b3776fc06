//! What a resource's status should say: a pure function of the observation, the step taken and
//! any problem met, so the driver writes status only when this result differs from what is there.
//!
//! The conditions follow kstatus: `Ready` (the instance is what the spec asks for), `Reconciling`
//! (the operator is getting there), `Stalled` (a person must act) and `Synced` (the last BeeOS
//! call worked). Only values that change meaningfully go in; counters BeeOS bumps on its own do
//! not, so a steady instance causes no writes.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};

use super::plan::Step;
use crate::beeos::{Connectivity, Instance, InstanceStatus};
use crate::crd::{BeeosInstanceStatus, ObservedInstance, PowerState, condition, reason};

const PAUSED_MESSAGE: &str = "beeos.ai/paused is \"true\": the operator makes no BeeOS calls and \
                              changes nothing until the annotation is removed";

/// Something that kept the last reconcile from succeeding.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Problem {
    /// It will not go away by retrying: a person must act (`Stalled=True`).
    NeedsAction {
        reason: &'static str,
        message: String,
    },
    /// It may go away by itself; the operator retries with backoff (`Synced=False`).
    Retrying {
        reason: &'static str,
        message: String,
    },
}

/// A spec change on its way to BeeOS (or deliberately not).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Update {
    None,
    /// A replacement is being deployed; the current instance serves until it is ready.
    Replacing,
    /// The instance is being destroyed so a new one can be deployed.
    Recreating,
    /// The spec changed but the update strategy is OnDelete.
    DriftLeftAlone,
}

/// Everything the status is derived from.
#[derive(Clone, Debug)]
pub struct StatusInput<'a> {
    pub generation: Option<i64>,
    pub power_state: PowerState,
    pub deleting: bool,
    pub step: Step,
    /// The instance as last seen (this reconcile, or the previous status when not looked up).
    pub instance: Option<ObservedInstance>,
    /// The replacement being deployed, if any.
    pub replacement: Option<ObservedInstance>,
    pub update: Update,
    pub problem: Option<&'a Problem>,
    pub last_restart_requested_at: Option<String>,
    /// Bookkeeping kept in status as is: see the fields of `BeeosInstanceStatus`.
    pub connection_config_map: Option<String>,
    pub retired_run_seconds: Option<i64>,
    pub trial_expiry_warned: Option<String>,
}

/// The status fields worth showing from a BeeOS instance: never providerConfig, systemPrompt or
/// mcpServers (they may hold secrets), never counters or timestamps that move on their own.
pub fn observed_instance(instance: &Instance) -> ObservedInstance {
    let text = |value: &str| (!value.is_empty()).then(|| value.to_owned());
    ObservedInstance {
        id: instance.instance_id.clone(),
        status: instance.status.as_ref().map(|s| s.as_str().to_owned()),
        desired_status: instance
            .desired_status
            .as_ref()
            .map(|s| s.as_str().to_owned()),
        endpoint: text(&instance.endpoint),
        connectivity: instance
            .connectivity
            .as_ref()
            .map(|c| c.as_str().to_owned()),
        connectivity_reason: instance
            .connectivity_reason
            .clone()
            .filter(|r| !r.is_empty()),
        halt_reason: instance.halt_reason.clone().filter(|r| !r.is_empty()),
        error_message: instance.error_message.clone().filter(|m| !m.is_empty()),
        region: instance.region.clone(),
        cluster_id: instance.cluster_id.clone(),
        public_ip: instance.public_ip.clone(),
        image_id: instance.image_id.clone(),
        image_ref: instance.image_ref.clone(),
        is_trial: instance.is_trial,
        expires_at: instance.expires_at.clone(),
        started_at: instance.started_at.clone(),
        stopped_at: instance.stopped_at.clone(),
        status_entered_at: instance.status_entered_at.clone(),
        created_at: instance.created_at.clone(),
    }
}

/// The status the resource should have. Conditions whose status, reason and message did not
/// change keep their `lastTransitionTime`, so an unchanged world yields an identical status.
pub fn desired_status(
    current: Option<&BeeosInstanceStatus>,
    input: &StatusInput<'_>,
    now: &Time,
) -> BeeosInstanceStatus {
    let ready = ready_condition(input);
    let stalled = match input.problem {
        Some(Problem::NeedsAction { reason, message }) => (true, *reason, message.clone()),
        // Nothing progresses until a person removes the annotation: stalled on purpose, so no
        // tool reads a paused resource as progressing forever (kstatus reads Ready=False alone
        // as InProgress).
        None if input.step == Step::Paused => (true, reason::PAUSED, PAUSED_MESSAGE.to_owned()),
        _ => (false, reason::NO_ISSUES, String::new()),
    };
    let synced = match input.problem {
        None if input.update == Update::DriftLeftAlone => (
            false,
            reason::SPEC_DRIFT,
            "the spec changed since the instance was deployed; updateStrategy is OnDelete, so \
             nothing changes until the resource is deleted and created again"
                .to_owned(),
        ),
        None if input.step == Step::Paused => (false, reason::PAUSED, PAUSED_MESSAGE.to_owned()),
        None => (true, reason::SYNCED, String::new()),
        Some(Problem::NeedsAction { reason, message } | Problem::Retrying { reason, message }) => {
            (false, *reason, message.clone())
        }
    };
    // kstatus: reconciling while not yet ready, unless stalled or deliberately paused.
    let reconciling = if ready.0 || stalled.0 || input.step == Step::Paused {
        (false, reason::NO_ISSUES, String::new())
    } else {
        (true, ready.1, ready.2.clone())
    };

    let previous = current.map(|s| s.conditions.as_slice()).unwrap_or_default();
    let conditions = [
        (condition::READY, ready),
        (condition::SYNCED, synced),
        (condition::RECONCILING, reconciling),
        (condition::STALLED, stalled),
    ]
    .into_iter()
    .map(|(type_, (status, reason, message))| {
        make_condition(
            previous,
            type_,
            status,
            reason,
            message,
            input.generation,
            now,
        )
    })
    .collect();

    BeeosInstanceStatus {
        observed_generation: input.generation,
        conditions,
        instance: input.instance.clone(),
        replacement: input.replacement.clone().map(Box::new),
        last_restart_requested_at: input.last_restart_requested_at.clone(),
        connection_config_map: input.connection_config_map.clone(),
        retired_run_seconds: input.retired_run_seconds,
        trial_expiry_warned: input.trial_expiry_warned.clone(),
    }
}

/// `(is ready, reason, message)` for the `Ready` condition.
fn ready_condition(input: &StatusInput<'_>) -> (bool, &'static str, String) {
    if let Some(Problem::NeedsAction { reason, message }) = input.problem {
        return (false, reason, message.clone());
    }
    if input.step == Step::Paused {
        // Nothing happens while paused, so nothing may read as progressing: kstatus and Argo CD
        // must not wait for a deploy or a stop that will not come.
        return (false, reason::PAUSED, PAUSED_MESSAGE.into());
    }
    if input.deleting {
        return (
            false,
            reason::DELETING,
            "the resource is being deleted".into(),
        );
    }
    match input.update {
        Update::Replacing => {
            let progress = match &input.replacement {
                Some(replacement) => format!(
                    "replacement {} is {}",
                    replacement.id,
                    replacement.status.as_deref().unwrap_or("being deployed")
                ),
                None => "the replacement is being deployed".to_owned(),
            };
            return (
                false,
                reason::REPLACING,
                format!(
                    "the spec changed: {progress}; the current instance serves until it is ready"
                ),
            );
        }
        Update::Recreating => {
            return (
                false,
                reason::RECREATING,
                "the spec changed: the instance is destroyed and deployed again".into(),
            );
        }
        Update::None | Update::DriftLeftAlone => {}
    }
    let Some(instance) = &input.instance else {
        return (
            false,
            reason::DEPLOYING,
            "the instance is being deployed".into(),
        );
    };
    let status = instance.status.as_deref().map(InstanceStatus::from);
    let online =
        instance.connectivity.as_deref().map(Connectivity::from) == Some(Connectivity::Online);
    match (input.power_state, status) {
        (PowerState::Running, Some(InstanceStatus::Running)) if online => (
            true,
            reason::RUNNING,
            "the instance is running and online".into(),
        ),
        (PowerState::Running, Some(InstanceStatus::Running)) => (
            false,
            reason::OFFLINE,
            match &instance.connectivity_reason {
                Some(why) => format!("the instance is running but not online: {why}"),
                None => "the instance is running but not online yet".into(),
            },
        ),
        (PowerState::Running, Some(InstanceStatus::Stopped)) => {
            (false, reason::STARTING, "the instance is starting".into())
        }
        (PowerState::Running, _) if input.step == Step::Restart => (
            false,
            reason::RESTARTING,
            "the instance is restarting".into(),
        ),
        (PowerState::Running, _) => (
            false,
            reason::PROVISIONING,
            format!(
                "the instance is {}",
                instance.status.as_deref().unwrap_or("being provisioned")
            ),
        ),
        (PowerState::Stopped, Some(InstanceStatus::Stopped)) => {
            (true, reason::STOPPED, "the instance is stopped".into())
        }
        (PowerState::Stopped, _) => (false, reason::STOPPING, "the instance is stopping".into()),
    }
}

fn make_condition(
    previous: &[Condition],
    type_: &str,
    status: bool,
    reason: &str,
    message: String,
    generation: Option<i64>,
    now: &Time,
) -> Condition {
    let status = if status { "True" } else { "False" }.to_owned();
    let last_transition_time = previous
        .iter()
        .find(|c| c.type_ == type_ && c.status == status)
        .map(|c| c.last_transition_time.clone())
        .unwrap_or_else(|| now.clone());
    Condition {
        type_: type_.to_owned(),
        status,
        reason: reason.to_owned(),
        message,
        observed_generation: generation,
        last_transition_time,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::beeos::DesiredStatus;

    fn now(seconds: i64) -> Time {
        Time(k8s_openapi::jiff::Timestamp::from_second(seconds).expect("a valid timestamp"))
    }

    fn running_online() -> ObservedInstance {
        observed_instance(&Instance {
            instance_id: "inst-1".into(),
            status: Some(InstanceStatus::Running),
            desired_status: Some(DesiredStatus::Running),
            connectivity: Some(Connectivity::Online),
            endpoint: "https://rt-1.example".into(),
            total_run_seconds: 42,
            ..Instance::default()
        })
    }

    fn input(instance: Option<ObservedInstance>) -> StatusInput<'static> {
        StatusInput {
            generation: Some(3),
            power_state: PowerState::Running,
            deleting: false,
            step: Step::Steady,
            instance,
            replacement: None,
            update: Update::None,
            problem: None,
            last_restart_requested_at: None,
            connection_config_map: None,
            retired_run_seconds: None,
            trial_expiry_warned: None,
        }
    }

    fn condition<'a>(status: &'a BeeosInstanceStatus, type_: &str) -> &'a Condition {
        status
            .conditions
            .iter()
            .find(|c| c.type_ == type_)
            .expect("every condition type is always present")
    }

    #[test]
    fn running_and_online_is_ready_and_not_reconciling() {
        let status = desired_status(None, &input(Some(running_online())), &now(1));
        assert_eq!(condition(&status, condition::READY).status, "True");
        assert_eq!(condition(&status, condition::RECONCILING).status, "False");
        assert_eq!(condition(&status, condition::STALLED).status, "False");
        assert_eq!(condition(&status, condition::SYNCED).status, "True");
        assert!(
            status
                .conditions
                .iter()
                .all(|c| c.observed_generation == Some(3))
        );
        assert_eq!(status.observed_generation, Some(3));
    }

    #[test]
    fn unchanged_world_gives_an_identical_status() {
        let first = desired_status(None, &input(Some(running_online())), &now(1));
        let second = desired_status(Some(&first), &input(Some(running_online())), &now(99));
        assert_eq!(first, second);
    }

    #[test]
    fn running_but_offline_is_not_ready_and_says_why() {
        let mut instance = running_online();
        instance.connectivity = Some("offline".into());
        instance.connectivity_reason = Some("instance_disconnected".into());
        let status = desired_status(None, &input(Some(instance)), &now(1));
        let ready = condition(&status, condition::READY);
        assert_eq!(
            (ready.status.as_str(), ready.reason.as_str()),
            ("False", reason::OFFLINE)
        );
        assert!(ready.message.contains("instance_disconnected"));
        assert_eq!(condition(&status, condition::RECONCILING).status, "True");
    }

    #[test]
    fn stopped_on_request_is_ready() {
        let mut instance = running_online();
        instance.status = Some("stopped".into());
        instance.desired_status = Some("stopped".into());
        instance.connectivity = Some("offline".into());
        let mut stopped = input(Some(instance));
        stopped.power_state = PowerState::Stopped;
        let status = desired_status(None, &stopped, &now(1));
        assert_eq!(condition(&status, condition::READY).reason, reason::STOPPED);
        assert_eq!(condition(&status, condition::READY).status, "True");
    }

    #[test]
    fn problem_needing_action_is_stalled_with_its_message() {
        let problem = Problem::NeedsAction {
            reason: "BeeosInvalidRequest",
            message: "deploy rejected: invalid_param (systemPrompt)".into(),
        };
        let mut stalled = input(None);
        stalled.problem = Some(&problem);
        let status = desired_status(None, &stalled, &now(1));
        let condition_stalled = condition(&status, condition::STALLED);
        assert_eq!(condition_stalled.status, "True");
        assert_eq!(condition_stalled.reason, "BeeosInvalidRequest");
        assert!(condition_stalled.message.contains("systemPrompt"));
        assert_eq!(condition(&status, condition::RECONCILING).status, "False");
        assert_eq!(condition(&status, condition::SYNCED).status, "False");
    }

    #[test]
    fn transient_problem_keeps_reconciling_and_unsyncs() {
        let problem = Problem::Retrying {
            reason: "BeeosRateLimited",
            message: "rate limited".into(),
        };
        let mut retrying = input(None);
        retrying.problem = Some(&problem);
        let status = desired_status(None, &retrying, &now(1));
        assert_eq!(
            condition(&status, condition::SYNCED).reason,
            "BeeosRateLimited"
        );
        assert_eq!(condition(&status, condition::STALLED).status, "False");
        assert_eq!(condition(&status, condition::RECONCILING).status, "True");
    }

    #[test]
    fn transition_time_moves_only_when_the_status_flips() {
        let deploying = desired_status(None, &input(None), &now(1));
        let ready = desired_status(Some(&deploying), &input(Some(running_online())), &now(50));
        assert_eq!(
            condition(&ready, condition::READY).last_transition_time,
            now(50)
        );
        assert_eq!(
            condition(&ready, condition::STALLED).last_transition_time,
            now(1)
        );
    }

    #[test]
    fn paused_says_so_and_stalls_on_purpose_instead_of_progressing() {
        for instance in [None, Some(running_online())] {
            let mut paused = input(instance);
            paused.step = Step::Paused;
            paused.power_state = PowerState::Stopped;
            let status = desired_status(None, &paused, &now(1));
            let ready = condition(&status, condition::READY);
            assert_eq!(
                (ready.status.as_str(), ready.reason.as_str()),
                ("False", reason::PAUSED)
            );
            assert!(ready.message.contains("paused"), "{}", ready.message);
            assert_eq!(condition(&status, condition::RECONCILING).status, "False");
            let stalled = condition(&status, condition::STALLED);
            assert_eq!(
                (stalled.status.as_str(), stalled.reason.as_str()),
                ("True", reason::PAUSED)
            );
            assert_eq!(condition(&status, condition::SYNCED).reason, reason::PAUSED);
            assert_eq!(status.observed_generation, Some(3));
        }
    }

    #[test]
    fn replacing_is_not_ready_and_names_the_replacement() {
        let mut replacing = input(Some(running_online()));
        replacing.update = Update::Replacing;
        let mut replacement = running_online();
        replacement.id = "inst-2".into();
        replacement.status = Some("provisioning".into());
        replacing.replacement = Some(replacement);
        let status = desired_status(None, &replacing, &now(1));
        let ready = condition(&status, condition::READY);
        assert_eq!(
            (ready.status.as_str(), ready.reason.as_str()),
            ("False", reason::REPLACING)
        );
        assert!(
            ready.message.contains("inst-2 is provisioning"),
            "{}",
            ready.message
        );
        assert_eq!(condition(&status, condition::RECONCILING).status, "True");
        assert_eq!(status.replacement.map(|r| r.id).as_deref(), Some("inst-2"));
    }

    #[test]
    fn drift_left_alone_stays_ready_but_not_synced() {
        let mut drifted = input(Some(running_online()));
        drifted.update = Update::DriftLeftAlone;
        let status = desired_status(None, &drifted, &now(1));
        assert_eq!(condition(&status, condition::READY).status, "True");
        assert_eq!(
            condition(&status, condition::SYNCED).reason,
            reason::SPEC_DRIFT
        );
        assert_eq!(condition(&status, condition::STALLED).status, "False");
    }

    #[test]
    fn secrets_and_counters_are_not_copied_into_status() {
        let instance = Instance {
            instance_id: "inst-1".into(),
            system_prompt: Some("sk-secret-in-prompt".into()),
            provider_config: Some(serde_json::json!({"apiKeys": {"openai": "sk-secret"}})),
            mcp_servers: Some(serde_json::json!({"x": {"env": {"TOKEN": "sk-secret"}}})),
            total_run_seconds: 7,
            updated_at: Some("2026-01-01T00:00:00Z".into()),
            ..Instance::default()
        };
        let json = serde_json::to_string(&observed_instance(&instance)).expect("serializes");
        assert!(!json.contains("sk-secret"), "{json}");
        assert!(!json.contains("2026-01-01"), "{json}");
    }
}
