//! The instance table and the lifecycle. Each instance keeps a timeline of `(status, entered at)`
//! entries, some of them in the future; its status at any moment is read from the timeline, so
//! transitions need no background task. Every function takes `now`; nothing here reads a clock.
//! The table keeps each owner's instances in list order, so a page costs one pass over that
//! owner's instances and no sort.
//!
//! Transition rules (the real API documents none; these are the simulator's):
//! - deploy: `pending` → `provisioning` → `running`, desired `running`.
//! - stop, only when settled `running`: desired `stopped`, `stopped` after `stopMs`.
//! - start, only when settled `stopped`: desired `running`, `provisioning` at once, `running` after `startMs`.
//! - restart, only when settled `running`: `provisioning` at once, `running` after `restartMs`.
//! - destroy, only when settled `running` or `stopped`: desired `terminated`, `terminated` after
//!   `destroyMs`; visible to get/list for `terminatedRetentionMs` after that, then gone (404).
//! - any other call is 409 `conflict`, except destroy of an instance already being destroyed or
//!   terminated, which is 404: it is gone as far as the caller is concerned.
//! - a trial instance not being destroyed at its `expiresAt` is stopped then (desired `stopped`,
//!   `haltReason` `trial_expired`), and can never be started again. The end is read from the
//!   timestamps like everything else, and written into the timeline by the next call that changes
//!   the instance.
//! - another owner's instance is 403; an unknown id, or one past its retention, is 404 for all.

use std::collections::HashMap;
use std::fmt;
use std::time::{Duration, SystemTime};

use crate::config::Settings;
use crate::deploy::NewInstance;

/// The `status` of an instance.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Status {
    /// Accepted, not yet scheduled.
    Pending,
    /// Being started.
    Provisioning,
    /// Up.
    Running,
    /// Stopped by request.
    Stopped,
    /// Destroyed.
    Terminated,
}

impl Status {
    /// The wire string.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Pending => "pending",
            Status::Provisioning => "provisioning",
            Status::Running => "running",
            Status::Stopped => "stopped",
            Status::Terminated => "terminated",
        }
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The `desiredStatus` of an instance.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Desired {
    /// Wants to run.
    Running,
    /// Wants to be stopped.
    Stopped,
    /// Being destroyed.
    Terminated,
}

impl Desired {
    /// The wire string.
    pub fn as_str(self) -> &'static str {
        match self {
            Desired::Running => "running",
            Desired::Stopped => "stopped",
            Desired::Terminated => "terminated",
        }
    }

    /// The status an instance reaches when this desire is met.
    fn met_by(self) -> Status {
        match self {
            Desired::Running => Status::Running,
            Desired::Stopped => Status::Stopped,
            Desired::Terminated => Status::Terminated,
        }
    }
}

/// A lifecycle call.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    /// `POST …/start`
    Start,
    /// `POST …/stop`
    Stop,
    /// `POST …/restart`
    Restart,
    /// `DELETE …`
    Destroy,
}

impl Action {
    fn verb(self) -> &'static str {
        match self {
            Action::Start => "start",
            Action::Stop => "stop",
            Action::Restart => "restart",
            Action::Destroy => "destroy",
        }
    }
}

/// Why an instance cannot be used by a caller.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Denied {
    /// 404: no such id, or terminated for longer than the retention (for every caller).
    NotFound,
    /// 403: it exists, but another owner's.
    Forbidden,
}

/// The `haltReason` of a trial instance stopped at its `expiresAt`.
pub const TRIAL_EXPIRED: &str = "trial_expired";

/// Why a lifecycle call was refused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// 409: the state does not allow the call; the text says why.
    Conflict(String),
    /// 404: destroy of an instance already destroyed.
    Gone,
}

/// One instance as the simulator holds it, secrets included.
#[derive(Clone, Debug)]
pub struct Instance {
    /// `id`.
    pub id: String,
    /// `ownerId`: the owner of the token that deployed it.
    pub owner: String,
    /// What was asked for, resolved against the catalog.
    pub spec: NewInstance,
    /// `createdAt`.
    pub created_at: SystemTime,
    /// When destroy was accepted.
    pub destroyed_at: Option<SystemTime>,
    /// `expiresAt` of a trial instance.
    pub expires_at: Option<SystemTime>,
    /// The name lower-cased once, for `search`.
    folded_name: String,
    desired: Desired,
    desired_at: SystemTime,
    /// Whether the trial's end is written into the timeline (see [`Instance::due_trial_end`]).
    trial_ended: bool,
    timeline: Vec<Entry>,
}

/// A timeline entry: a status and when it is (or was) entered.
type Entry = (Status, SystemTime);

fn after(t: SystemTime, ms: u64) -> SystemTime {
    t + Duration::from_millis(ms)
}

impl Instance {
    /// A freshly deployed instance: `pending` now, `provisioning` and `running` later; a trial
    /// one expires `trialMs` after now.
    pub fn deployed(
        id: String,
        owner: String,
        spec: NewInstance,
        now: SystemTime,
        s: &Settings,
    ) -> Self {
        let provisioning = after(now, s.pending_ms);
        Self {
            id,
            owner,
            expires_at: spec.is_trial.then(|| after(now, s.trial_ms)),
            folded_name: spec.name.to_lowercase(),
            spec,
            created_at: now,
            destroyed_at: None,
            desired: Desired::Running,
            desired_at: now,
            trial_ended: false,
            timeline: vec![
                (Status::Pending, now),
                (Status::Provisioning, provisioning),
                (Status::Running, after(provisioning, s.provisioning_ms)),
            ],
        }
    }

    /// The id without its `inst_` prefix, reused in the other generated ids.
    fn suffix(&self) -> &str {
        self.id.strip_prefix("inst_").unwrap_or(&self.id)
    }

    /// `externalId`.
    pub fn external_id(&self) -> String {
        format!("ext_{}", self.suffix())
    }

    /// `identityId`.
    pub fn identity_id(&self) -> String {
        format!("ident_{}", self.suffix())
    }

    /// `endpoint`: a runtime URL under the reserved `.invalid` domain, so nothing can reach it.
    pub fn endpoint(&self) -> String {
        format!("https://rt-{}.sim.invalid", self.suffix())
    }

    /// The trial's end, when it is due at `now` but not yet written into the timeline. An
    /// instance whose destroy was accepted first is not stopped by its trial's end.
    fn due_trial_end(&self, now: SystemTime) -> Option<SystemTime> {
        self.expires_at
            .filter(|end| !self.trial_ended && *end <= now && self.desired != Desired::Terminated)
    }

    /// The timeline as it stands at `now`: the stored entries, or, once a trial's end is due,
    /// those up to the end and `stopped` at the end (unless it was stopped already).
    fn timeline(&self, now: SystemTime) -> (&[Entry], Option<Entry>) {
        let Some(end) = self.due_trial_end(now) else {
            return (&self.timeline, None);
        };
        let kept = &self.timeline[..self.timeline.partition_point(|(_, at)| *at <= end)];
        // A `stopped` entry is only ever reached with stopped desired: it is settled.
        let stopped = kept.last().is_some_and(|(s, _)| *s == Status::Stopped);
        (kept, (!stopped).then_some((Status::Stopped, end)))
    }

    /// The entries of [`Instance::timeline`], oldest first.
    fn entries(&self, now: SystemTime) -> impl DoubleEndedIterator<Item = Entry> + Clone + '_ {
        let (kept, end) = self.timeline(now);
        kept.iter().copied().chain(end)
    }

    /// Writes a due trial end into the timeline, so calls from now on see a stopped instance.
    fn end_trial_if_due(&mut self, now: SystemTime) {
        let Some(end) = self.due_trial_end(now) else {
            return;
        };
        let (kept, stop) = self.timeline(now);
        let kept = kept.len();
        self.timeline.truncate(kept);
        self.timeline.extend(stop);
        self.desired = Desired::Stopped;
        self.desired_at = end;
        self.trial_ended = true;
    }

    /// The timeline entry in force at `now`.
    fn current(&self, now: SystemTime) -> (Status, SystemTime) {
        self.entries(now)
            .rev()
            .find(|(_, at)| *at <= now)
            .or(self.timeline.first().copied())
            .unwrap_or((Status::Pending, self.created_at))
    }

    /// `status` at `now`.
    pub fn status(&self, now: SystemTime) -> Status {
        self.current(now).0
    }

    /// `desiredStatus` at `now`.
    pub fn desired(&self, now: SystemTime) -> Desired {
        if self.due_trial_end(now).is_some() {
            Desired::Stopped
        } else {
            self.desired
        }
    }

    /// `haltReason` at `now`: set from a trial's end on.
    pub fn halt_reason(&self, now: SystemTime) -> Option<&'static str> {
        (self.trial_ended || self.due_trial_end(now).is_some()).then_some(TRIAL_EXPIRED)
    }

    /// `statusEnteredAt` at `now`.
    pub fn status_entered_at(&self, now: SystemTime) -> SystemTime {
        self.current(now).1
    }

    /// When `status` was last entered, up to `now`.
    pub fn last_entered(&self, status: Status, now: SystemTime) -> Option<SystemTime> {
        self.entries(now)
            .rev()
            .find(|(s, at)| *s == status && *at <= now)
            .map(|(_, at)| at)
    }

    /// `updatedAt`: the latest of the last status change, the last accepted call and a trial's end.
    pub fn updated_at(&self, now: SystemTime) -> SystemTime {
        let desired_at = self.due_trial_end(now).unwrap_or(self.desired_at);
        self.status_entered_at(now).max(desired_at)
    }

    /// `totalRunSeconds`: whole seconds spent `running` up to `now`.
    pub fn total_run_seconds(&self, now: SystemTime) -> u64 {
        let ends = self.entries(now).skip(1).map(|(_, at)| at).chain([now]);
        let run: Duration = self
            .entries(now)
            .zip(ends)
            .filter(|((s, _), _)| *s == Status::Running)
            .map(|((_, start), end)| end.min(now).duration_since(start).unwrap_or_default())
            .sum();
        run.as_secs()
    }

    /// Whether get/list no longer show it: terminated for longer than `retention`.
    pub fn expired(&self, now: SystemTime, retention: Duration) -> bool {
        self.last_entered(Status::Terminated, now)
            .is_some_and(|at| now >= at + retention)
    }

    /// Applies a lifecycle call at `now`, or says why not.
    pub fn apply(&mut self, action: Action, now: SystemTime, s: &Settings) -> Result<(), Refusal> {
        self.end_trial_if_due(now);
        let status = self.status(now);
        if self.desired == Desired::Terminated {
            return Err(match action {
                Action::Destroy => Refusal::Gone,
                _ => Refusal::Conflict(format!(
                    "cannot {} an instance that is being destroyed or terminated",
                    action.verb()
                )),
            });
        }
        if self.trial_ended && action == Action::Start {
            return Err(Refusal::Conflict(
                "cannot start a trial instance that has expired".to_owned(),
            ));
        }
        let settled = status == self.desired.met_by();
        match (action, status, settled) {
            (Action::Start, Status::Stopped, true) => {
                self.desired = Desired::Running;
                self.timeline.push((Status::Provisioning, now));
                self.timeline
                    .push((Status::Running, after(now, s.start_ms)));
            }
            (Action::Stop, Status::Running, true) => {
                self.desired = Desired::Stopped;
                self.timeline.push((Status::Stopped, after(now, s.stop_ms)));
            }
            (Action::Restart, Status::Running, true) => {
                self.timeline.push((Status::Provisioning, now));
                self.timeline
                    .push((Status::Running, after(now, s.restart_ms)));
            }
            (Action::Destroy, Status::Running | Status::Stopped, true) => {
                self.desired = Desired::Terminated;
                self.destroyed_at = Some(now);
                self.timeline
                    .push((Status::Terminated, after(now, s.destroy_ms)));
            }
            _ => {
                return Err(Refusal::Conflict(format!(
                    "cannot {} an instance whose status is {} (desired {})",
                    action.verb(),
                    status,
                    self.desired.as_str()
                )));
            }
        }
        self.desired_at = now;
        Ok(())
    }
}

/// List filters; all given ones must match.
#[derive(Clone, Debug, Default)]
pub struct Filter {
    /// Exact `status`.
    pub status: Option<String>,
    /// Exact `providerId`.
    pub provider_id: Option<String>,
    /// Exact `agentFramework`.
    pub agent_framework: Option<String>,
    /// Exact `clusterId`.
    pub cluster_id: Option<String>,
    /// Case-insensitive substring of `name`.
    pub search: Option<String>,
}

impl Filter {
    /// Whether `i` matches at `now`; `search` is the lower-cased [`Filter::search`].
    fn matches(&self, i: &Instance, search: Option<&str>, now: SystemTime) -> bool {
        let eq = |want: &Option<String>, have: &str| want.as_deref().is_none_or(|w| w == have);
        eq(&self.provider_id, &i.spec.provider_id)
            && eq(&self.agent_framework, &i.spec.agent_framework)
            && eq(&self.cluster_id, &i.spec.cluster_id)
            && search.is_none_or(|q| i.folded_name.contains(q))
            && eq(&self.status, i.status(now).as_str())
    }
}

/// Every instance ever deployed, in deploy order, with an index by id and each owner's list order.
#[derive(Debug, Default)]
pub struct Store {
    instances: Vec<Instance>,
    by_id: HashMap<String, usize>,
    /// Positions in `instances` of each owner's instances, ordered by `createdAt`, then `id`.
    by_owner: HashMap<String, Vec<usize>>,
}

impl Store {
    /// Adds an instance and returns it.
    pub fn insert(&mut self, instance: Instance) -> &Instance {
        let at = self.instances.len();
        let Self {
            instances,
            by_id,
            by_owner,
        } = self;
        let order = by_owner.entry(instance.owner.clone()).or_default();
        // Deploys come in creation order nearly always, so this is the end of the list; two
        // deploys racing for the lock may come swapped.
        let key = (instance.created_at, &instance.id);
        let position =
            order.partition_point(|&i| (instances[i].created_at, &instances[i].id) < key);
        order.insert(position, at);
        by_id.insert(instance.id.clone(), at);
        instances.push(instance);
        &self.instances[at]
    }

    /// Whether an instance with `id` was ever deployed.
    pub fn contains(&self, id: &str) -> bool {
        self.by_id.contains_key(id)
    }

    /// The position of instance `id`, unless it is unknown or past its retention.
    fn position(&self, id: &str, now: SystemTime, s: &Settings) -> Option<usize> {
        let at = *self.by_id.get(id)?;
        (!self.instances[at].expired(now, retention(s))).then_some(at)
    }

    /// The position of `owner`'s instance `id`, or why the owner may not use it.
    fn owned(&self, owner: &str, id: &str, now: SystemTime, s: &Settings) -> Result<usize, Denied> {
        let at = self.position(id, now, s).ok_or(Denied::NotFound)?;
        if self.instances[at].owner == owner {
            Ok(at)
        } else {
            Err(Denied::Forbidden)
        }
    }

    /// `owner`'s instance `id`.
    pub fn visible(
        &self,
        owner: &str,
        id: &str,
        now: SystemTime,
        s: &Settings,
    ) -> Result<&Instance, Denied> {
        let at = self.owned(owner, id, now, s)?;
        Ok(&self.instances[at])
    }

    /// Like [`Store::visible`], for a change.
    pub fn visible_mut(
        &mut self,
        owner: &str,
        id: &str,
        now: SystemTime,
        s: &Settings,
    ) -> Result<&mut Instance, Denied> {
        let at = self.owned(owner, id, now, s)?;
        Ok(&mut self.instances[at])
    }

    /// Instance `id` whoever owns it, unless it is unknown or past its retention: the admin API
    /// acts as the owner.
    pub fn any_mut(&mut self, id: &str, now: SystemTime, s: &Settings) -> Option<&mut Instance> {
        let at = self.position(id, now, s)?;
        Some(&mut self.instances[at])
    }

    /// One page of `owner`'s visible instances matching `filter`, ordered by `createdAt` then
    /// `id`, and the number of all matches. One pass over the owner's instances, no sort.
    pub fn list(
        &self,
        owner: &str,
        filter: &Filter,
        page: u64,
        page_size: u64,
        now: SystemTime,
        s: &Settings,
    ) -> (Vec<&Instance>, usize) {
        let Some(order) = self.by_owner.get(owner) else {
            return (Vec::new(), 0);
        };
        let skip = usize::try_from(page.saturating_mul(page_size)).unwrap_or(usize::MAX);
        let take = usize::try_from(page_size).unwrap_or(usize::MAX);
        let keep = retention(s);
        let search = filter.search.as_deref().map(str::to_lowercase);
        let mut items = Vec::with_capacity(take.min(order.len()));
        let mut total = 0;
        for instance in order.iter().map(|&at| &self.instances[at]) {
            if instance.expired(now, keep) || !filter.matches(instance, search.as_deref(), now) {
                continue;
            }
            if total >= skip && items.len() < take {
                items.push(instance);
            }
            total += 1;
        }
        (items, total)
    }

    /// Every instance, expired ones included.
    pub fn all(&self) -> &[Instance] {
        &self.instances
    }

    /// Forgets everything.
    pub fn clear(&mut self) {
        self.instances.clear();
        self.by_id.clear();
        self.by_owner.clear();
    }
}

/// The retention of terminated instances.
pub fn retention(s: &Settings) -> Duration {
    Duration::from_millis(s.terminated_retention_ms)
}

#[cfg(test)]
mod tests {
    use super::*;

    const T0: SystemTime = SystemTime::UNIX_EPOCH;

    fn at(ms: u64) -> SystemTime {
        after(T0 + Duration::from_secs(1_800_000_000), ms)
    }

    fn spec(name: &str) -> NewInstance {
        crate::deploy::parse(
            format!(r#"{{"name":"{name}","variantId":"beeos-claw-small"}}"#).as_bytes(),
        )
        .unwrap()
    }

    fn settings() -> Settings {
        Settings {
            pending_ms: 100,
            provisioning_ms: 300,
            stop_ms: 200,
            start_ms: 200,
            restart_ms: 200,
            destroy_ms: 200,
            terminated_retention_ms: 2000,
            ..Settings::default()
        }
    }

    fn deployed() -> Instance {
        Instance::deployed(
            "inst_1".into(),
            "alice".into(),
            spec("a"),
            at(0),
            &settings(),
        )
    }

    fn conflict(r: Result<(), Refusal>) -> bool {
        matches!(r, Err(Refusal::Conflict(_)))
    }

    #[test]
    fn a_deploy_goes_pending_provisioning_running_at_the_set_times() {
        let i = deployed();
        assert_eq!(i.status(at(0)), Status::Pending);
        assert_eq!(i.status(at(99)), Status::Pending);
        assert_eq!(i.status(at(100)), Status::Provisioning);
        assert_eq!(i.status(at(399)), Status::Provisioning);
        assert_eq!(i.status(at(400)), Status::Running);
        assert_eq!(i.status_entered_at(at(5000)), at(400));
        assert_eq!(i.desired(at(0)), Desired::Running);
        assert_eq!(i.total_run_seconds(at(2399)), 1);
        assert_eq!(i.total_run_seconds(at(2400)), 2);
    }

    #[test]
    fn calls_during_a_deploy_conflict() {
        let s = settings();
        let mut i = deployed();
        for action in [
            Action::Start,
            Action::Stop,
            Action::Restart,
            Action::Destroy,
        ] {
            assert!(
                conflict(i.apply(action, at(50), &s)),
                "{action:?} while pending"
            );
            assert!(
                conflict(i.apply(action, at(200), &s)),
                "{action:?} while provisioning"
            );
        }
        // Start on running conflicts too: it is already what was asked for.
        assert!(conflict(i.apply(Action::Start, at(500), &s)));
    }

    #[test]
    fn stop_then_start_goes_through_provisioning() {
        let s = settings();
        let mut i = deployed();
        i.apply(Action::Stop, at(1000), &s).unwrap();
        assert_eq!(
            (i.status(at(1100)), i.desired(at(1100))),
            (Status::Running, Desired::Stopped)
        );
        assert!(
            conflict(i.apply(Action::Stop, at(1100), &s)),
            "stop while stopping"
        );
        assert_eq!(i.status(at(1200)), Status::Stopped);
        assert_eq!(i.last_entered(Status::Stopped, at(1300)), Some(at(1200)));
        assert!(
            conflict(i.apply(Action::Stop, at(1300), &s)),
            "stop on stopped"
        );
        assert!(
            conflict(i.apply(Action::Restart, at(1300), &s)),
            "restart on stopped"
        );
        i.apply(Action::Start, at(1300), &s).unwrap();
        assert_eq!(i.status(at(1300)), Status::Provisioning);
        assert_eq!(i.status(at(1500)), Status::Running);
        assert_eq!(i.last_entered(Status::Running, at(1600)), Some(at(1500)));
        // Run time stops counting while stopped: 400..1200 and 1500..2500.
        assert_eq!(i.total_run_seconds(at(2500)), 1);
        assert_eq!(i.total_run_seconds(at(2700)), 2);
    }

    #[test]
    fn restart_passes_through_provisioning() {
        let s = settings();
        let mut i = deployed();
        i.apply(Action::Restart, at(1000), &s).unwrap();
        assert_eq!(i.status(at(1000)), Status::Provisioning);
        assert!(conflict(i.apply(Action::Restart, at(1100), &s)));
        assert_eq!(i.status(at(1200)), Status::Running);
        assert_eq!(i.updated_at(at(1300)), at(1200));
    }

    #[test]
    fn destroy_terminates_then_expires_and_a_second_destroy_is_gone() {
        let s = settings();
        let mut i = deployed();
        i.apply(Action::Destroy, at(1000), &s).unwrap();
        assert_eq!(
            (i.status(at(1100)), i.desired(at(1100))),
            (Status::Running, Desired::Terminated)
        );
        assert_eq!(i.apply(Action::Destroy, at(1100), &s), Err(Refusal::Gone));
        assert!(conflict(i.apply(Action::Start, at(1100), &s)));
        assert_eq!(i.status(at(1200)), Status::Terminated);
        assert!(!i.expired(at(3199), retention(&s)));
        assert!(i.expired(at(3200), retention(&s)));
        assert_eq!(i.destroyed_at, Some(at(1000)));
    }

    #[test]
    fn a_stopped_instance_can_be_destroyed() {
        let s = settings();
        let mut i = deployed();
        i.apply(Action::Stop, at(1000), &s).unwrap();
        i.apply(Action::Destroy, at(1300), &s).unwrap();
        assert_eq!(i.status(at(1500)), Status::Terminated);
    }

    #[test]
    fn zero_delays_settle_at_once() {
        let s = Settings {
            pending_ms: 0,
            provisioning_ms: 0,
            restart_ms: 0,
            ..settings()
        };
        let mut i = Instance::deployed("inst_1".into(), "a".into(), spec("a"), at(0), &s);
        assert_eq!(i.status(at(0)), Status::Running);
        i.apply(Action::Restart, at(0), &s).unwrap();
        assert_eq!(i.status(at(0)), Status::Running);
    }

    #[test]
    fn another_owner_is_forbidden_and_unknown_or_expired_ids_are_not_found() {
        let s = settings();
        let mut store = Store::default();
        store.insert(deployed());
        assert!(store.visible("alice", "inst_1", at(0), &s).is_ok());
        assert_eq!(
            store.visible("bob", "inst_1", at(0), &s).err(),
            Some(Denied::Forbidden)
        );
        assert_eq!(
            store.visible("alice", "inst_2", at(0), &s).err(),
            Some(Denied::NotFound)
        );
        let i = store.visible_mut("alice", "inst_1", at(0), &s).unwrap();
        i.apply(Action::Destroy, at(1000), &s).unwrap();
        assert!(store.visible("alice", "inst_1", at(3199), &s).is_ok());
        assert_eq!(
            store.visible("bob", "inst_1", at(3199), &s).err(),
            Some(Denied::Forbidden)
        );
        // Past the retention it is gone for everyone, its owner and the others alike.
        for owner in ["alice", "bob"] {
            assert_eq!(
                store.visible(owner, "inst_1", at(3200), &s).err(),
                Some(Denied::NotFound)
            );
        }
        assert!(store.any_mut("inst_1", at(3199), &s).is_some());
        assert!(store.any_mut("inst_1", at(3200), &s).is_none());
        assert_eq!(store.all().len(), 1);
    }

    #[test]
    fn deploys_inserted_out_of_creation_order_are_listed_in_it() {
        let s = settings();
        let mut store = Store::default();
        for (id, created) in [
            ("inst_b", 10),
            ("inst_c", 30),
            ("inst_a", 10),
            ("inst_0", 5),
        ] {
            store.insert(Instance::deployed(
                id.into(),
                "alice".into(),
                spec(id),
                at(created),
                &s,
            ));
        }
        let (page, total) = store.list("alice", &Filter::default(), 0, 10, at(100), &s);
        let ids: Vec<_> = page.iter().map(|i| i.id.as_str()).collect();
        assert_eq!(
            (ids, total),
            (vec!["inst_0", "inst_a", "inst_b", "inst_c"], 4)
        );
        assert_eq!(
            store.list("bob", &Filter::default(), 0, 10, at(100), &s).1,
            0
        );
    }

    fn trial(s: &Settings) -> Instance {
        let spec = crate::deploy::parse(br#"{"name":"t","variantId":"beeos-claw-trial"}"#).unwrap();
        Instance::deployed("inst_t".into(), "alice".into(), spec, at(0), s)
    }

    fn trial_settings() -> Settings {
        Settings {
            trial_ms: 10_000,
            ..settings()
        }
    }

    #[test]
    fn a_running_trial_stops_at_its_expiry_and_cannot_be_started() {
        let s = trial_settings();
        let mut i = trial(&s);
        assert_eq!(i.expires_at, Some(at(10_000)));
        assert_eq!(
            (
                i.status(at(9_999)),
                i.desired(at(9_999)),
                i.halt_reason(at(9_999))
            ),
            (Status::Running, Desired::Running, None)
        );
        let ended = (
            i.status(at(10_000)),
            i.desired(at(10_000)),
            i.halt_reason(at(10_000)),
        );
        assert_eq!(
            ended,
            (Status::Stopped, Desired::Stopped, Some(TRIAL_EXPIRED))
        );
        assert_eq!(i.status_entered_at(at(20_000)), at(10_000));
        assert_eq!(i.updated_at(at(20_000)), at(10_000));
        // Ran from 400 ms to 10 s, then never again.
        assert_eq!(i.total_run_seconds(at(10_000)), 9);
        assert_eq!(i.total_run_seconds(at(50_000)), 9);
        // The next call writes the end into the timeline; the view stays the same.
        assert!(matches!(
            i.apply(Action::Start, at(20_000), &s),
            Err(Refusal::Conflict(m)) if m.contains("expired")
        ));
        assert!(conflict(i.apply(Action::Stop, at(20_000), &s)));
        assert_eq!(
            (
                i.status(at(20_000)),
                i.desired(at(20_000)),
                i.halt_reason(at(20_000))
            ),
            (Status::Stopped, Desired::Stopped, Some(TRIAL_EXPIRED))
        );
        assert_eq!(
            i.last_entered(Status::Stopped, at(20_000)),
            Some(at(10_000))
        );
        i.apply(Action::Destroy, at(20_000), &s).unwrap();
        assert_eq!(i.status(at(20_200)), Status::Terminated);
    }

    #[test]
    fn a_trial_ends_mid_transition_and_a_stopped_one_stays_as_it_was() {
        let s = trial_settings();
        // Stopping when the trial ends: stopped at the end, not at the stop's own time.
        let mut stopping = trial(&s);
        stopping.apply(Action::Stop, at(9_900), &s).unwrap();
        assert_eq!(stopping.status_entered_at(at(10_500)), at(10_000));
        // Already stopped: it keeps its stop time, and gains the halt reason.
        let mut stopped = trial(&s);
        stopped.apply(Action::Stop, at(5_000), &s).unwrap();
        assert_eq!(stopped.status_entered_at(at(10_500)), at(5_200));
        assert_eq!(stopped.halt_reason(at(10_500)), Some(TRIAL_EXPIRED));
        // Starting when the trial ends: the start is cut short.
        stopped.apply(Action::Start, at(9_900), &s).unwrap();
        assert_eq!(
            (stopped.status(at(10_050)), stopped.desired(at(10_050))),
            (Status::Stopped, Desired::Stopped)
        );
    }

    #[test]
    fn a_trial_destroyed_before_its_expiry_is_not_stopped_by_it() {
        let s = trial_settings();
        let mut i = trial(&s);
        i.apply(Action::Destroy, at(5_000), &s).unwrap();
        assert_eq!(
            (
                i.status(at(11_000)),
                i.desired(at(11_000)),
                i.halt_reason(at(11_000))
            ),
            (Status::Terminated, Desired::Terminated, None)
        );
    }

    #[test]
    fn instances_that_are_not_trials_never_expire() {
        let i = deployed();
        assert_eq!(i.expires_at, None);
        let much_later = at(1_000_000_000);
        assert_eq!(
            (i.status(much_later), i.halt_reason(much_later)),
            (Status::Running, None)
        );
    }

    #[test]
    fn list_filters_sorts_and_pages() {
        let s = settings();
        let mut store = Store::default();
        for (n, name) in ["Alpha", "beta", "alphabet", "gamma"].iter().enumerate() {
            let id = format!("inst_{n}");
            let created = at(n as u64 * 10);
            store.insert(Instance::deployed(
                id,
                "alice".into(),
                spec(name),
                created,
                &s,
            ));
        }
        store.insert(Instance::deployed(
            "inst_x".into(),
            "bob".into(),
            spec("alpha"),
            at(0),
            &s,
        ));
        let search = Filter {
            search: Some("ALPHA".into()),
            ..Filter::default()
        };
        let (page, total) = store.list("alice", &search, 0, 10, at(1000), &s);
        assert_eq!(total, 2);
        assert_eq!(
            page.iter().map(|i| i.id.as_str()).collect::<Vec<_>>(),
            ["inst_0", "inst_2"]
        );

        let (page, total) = store.list("alice", &Filter::default(), 1, 3, at(1000), &s);
        assert_eq!((page.len(), total, page[0].id.as_str()), (1, 4, "inst_3"));

        let pending = Filter {
            status: Some("pending".into()),
            ..Filter::default()
        };
        // At 115 ms the first two (created at 0 and 10) are provisioning, the others pending.
        assert_eq!(store.list("alice", &pending, 0, 10, at(115), &s).1, 2);
        let cluster = Filter {
            cluster_id: Some("cl-us-east-1".into()),
            agent_framework: Some("beeos-claw".into()),
            provider_id: Some("default".into()),
            ..Filter::default()
        };
        assert_eq!(store.list("alice", &cluster, 0, 10, at(25), &s).1, 4);
        let other = Filter {
            provider_id: Some("byod".into()),
            ..Filter::default()
        };
        assert_eq!(store.list("alice", &other, 0, 10, at(25), &s).1, 0);
    }
}
