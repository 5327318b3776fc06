//! BeeOS's instances as an informer. BeeOS pushes nothing, so the operator polls; this module
//! makes that polling cheap and prompt, the way a Kubernetes informer makes watching cheap:
//!
//! - One loop per BeeOS account (per owner: several tokens of one owner share it) lists every
//!   instance every `steady_poll`, 200 a page, and wakes only the resources whose instance
//!   changed — or whose status no longer matches what BeeOS reports (a resync for free).
//!   Steady resources are otherwise left alone: no per-resource work while nothing changes.
//! - Instances in transition are "hot": polled every `transition_poll` at first and more slowly
//!   the longer the transition lasts, by GET each, or by one listing when that is cheaper.
//! - Reconciles read instances from here; only an id the listing does not show is fetched
//!   directly (it may be newer than the listing, or gone).
//!
//! It keeps only what the status mirrors (never providerConfig, systemPrompt or mcpServers).
//! It must not decide anything about a resource: it tells the controller what changed.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::time::{Duration, Instant};

use futures::StreamExt;
use kube::runtime::reflector::ObjectRef;
use tokio::sync::{Notify, mpsc};

use super::index::Key;
use super::status::observed_instance;
use super::{Intervals, Resources};
use crate::beeos::{BeeosClient, Connectivity, Error, Fingerprint, Instance, InstanceStatus};
use crate::beeos::{ListQuery, MAX_PAGE_SIZE};
use crate::crd::{BeeosInstance, ObservedInstance};

/// GETs of hot instances in flight at once, per account.
const POLL_CONCURRENCY: usize = 8;

/// What BeeOS last reported of an instance.
#[derive(Clone, Debug, PartialEq)]
pub struct Seen {
    /// The fields the status mirrors.
    pub observed: ObservedInstance,
    /// Seconds the instance has run, as BeeOS counts them.
    pub total_run_seconds: i64,
    /// The agent framework, a label of the run-time metric.
    pub agent_framework: String,
}

impl Seen {
    pub fn of(instance: &Instance) -> Seen {
        Seen {
            observed: observed_instance(instance),
            total_run_seconds: instance.total_run_seconds,
            agent_framework: instance.agent_framework.clone(),
        }
    }
}

/// A [`Seen`] in one allocation. The fleet keeps every listed instance between polls; unpacked,
/// each costs about 1 KiB (nineteen optional strings, most of them short or absent), packed
/// about a third of that.
///
/// Layout: the run seconds (8 bytes, little-endian), the agent framework, then the observed
/// instance: `is_trial` (0 none, 1 false, 2 true), the id and the optional strings in the order
/// of [`Packed::unpack`]. Equal observed instances pack to equal bytes, so a listing compares
/// them without unpacking.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Packed(Box<[u8]>);

impl Packed {
    fn of(seen: &Seen) -> Packed {
        let o = &seen.observed;
        let mut out = Vec::with_capacity(256);
        out.extend_from_slice(&seen.total_run_seconds.to_le_bytes());
        put(&mut out, Some(&seen.agent_framework));
        out.push(match o.is_trial {
            None => 0,
            Some(false) => 1,
            Some(true) => 2,
        });
        put(&mut out, Some(&o.id));
        // The order of `unpack`, whose struct literal names every field: a field added to
        // ObservedInstance does not compile there, and the round-trip test fails until it is
        // packed here too.
        for field in [
            &o.status,
            &o.desired_status,
            &o.endpoint,
            &o.connectivity,
            &o.connectivity_reason,
            &o.halt_reason,
            &o.error_message,
            &o.region,
            &o.cluster_id,
            &o.public_ip,
            &o.image_id,
            &o.image_ref,
            &o.expires_at,
            &o.started_at,
            &o.stopped_at,
            &o.status_entered_at,
            &o.created_at,
        ] {
            put(&mut out, field.as_ref());
        }
        Packed(out.into_boxed_slice())
    }

    fn total_run_seconds(&self) -> i64 {
        let mut bytes = [0; 8];
        bytes.copy_from_slice(&self.0[..8]);
        i64::from_le_bytes(bytes)
    }

    /// The packed agent framework and the observed instance after it.
    fn framework_and_observed(&self) -> (Option<&[u8]>, &[u8]) {
        let mut rest = &self.0[8..];
        let framework = take(&mut rest);
        (framework, rest)
    }

    /// The bytes of the observed instance: equal exactly when the observed instances are.
    fn observed_bytes(&self) -> &[u8] {
        self.framework_and_observed().1
    }

    fn unpack(&self) -> Seen {
        let (framework, observed) = self.framework_and_observed();
        let (is_trial, mut rest) = observed.split_first().unwrap_or((&0, &[]));
        let mut next = || take(&mut rest).map(|bytes| String::from_utf8_lossy(bytes).into_owned());
        Seen {
            observed: ObservedInstance {
                id: next().unwrap_or_default(),
                status: next(),
                desired_status: next(),
                endpoint: next(),
                connectivity: next(),
                connectivity_reason: next(),
                halt_reason: next(),
                error_message: next(),
                region: next(),
                cluster_id: next(),
                public_ip: next(),
                image_id: next(),
                image_ref: next(),
                is_trial: match is_trial {
                    0 => None,
                    flag => Some(*flag == 2),
                },
                expires_at: next(),
                started_at: next(),
                stopped_at: next(),
                status_entered_at: next(),
                created_at: next(),
            },
            total_run_seconds: self.total_run_seconds(),
            // Packed from Strings, so always UTF-8.
            agent_framework: framework
                .map(|bytes| String::from_utf8_lossy(bytes).into_owned())
                .unwrap_or_default(),
        }
    }
}

/// Appends an optional string: its length plus one as a LEB128 varint (0 for none), then its
/// bytes.
fn put(out: &mut Vec<u8>, value: Option<&String>) {
    let mut len = value.map_or(0, |v| v.len() as u64 + 1);
    loop {
        let byte = (len & 0x7f) as u8;
        len >>= 7;
        if len == 0 {
            out.push(byte);
            break;
        }
        out.push(byte | 0x80);
    }
    if let Some(value) = value {
        out.extend_from_slice(value.as_bytes());
    }
}

/// Reads what [`put`] wrote and moves past it: the string's bytes, `None` for none.
fn take<'a>(rest: &mut &'a [u8]) -> Option<&'a [u8]> {
    let (mut len, mut shift) = (0u64, 0);
    loop {
        let (&byte, tail) = rest.split_first()?;
        *rest = tail;
        len |= u64::from(byte & 0x7f) << shift;
        shift += 7;
        if byte & 0x80 == 0 {
            break;
        }
    }
    let len = usize::try_from(len.checked_sub(1)?).ok()?;
    let (value, tail) = rest.split_at_checked(len)?;
    *rest = tail;
    Some(value)
}

/// Where an account's instances are listed from.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
enum AccountKey {
    /// A credential whose owner is not known yet (it has listed no instance).
    Credential(Fingerprint),
    /// A BeeOS owner (`ownerId`), however many of its tokens are in use.
    Owner(String),
}

/// Every account the operator polls.
pub struct Fleet {
    shared: Arc<Shared>,
}

struct Shared {
    intervals: Intervals,
    resources: Arc<Resources>,
    wake: mpsc::UnboundedSender<ObjectRef<BeeosInstance>>,
    accounts: Mutex<Accounts>,
}

#[derive(Default)]
struct Accounts {
    by_key: HashMap<AccountKey, Arc<Account>>,
    /// Which account a credential lists with.
    by_credential: HashMap<Fingerprint, AccountKey>,
    /// Which account each resource's instances live in (set by its reconciles).
    users: HashMap<Key, AccountKey>,
}

/// One BeeOS account: its instances as last seen, and which of them are in transition.
pub struct Account {
    key: Mutex<AccountKey>,
    /// When an instance is first polled after it turned hot.
    first_poll: Duration,
    /// Clients of the account's credentials; the loop lists with the newest.
    clients: Mutex<Vec<BeeosClient>>,
    state: Mutex<State>,
    changed: Notify,
}

#[derive(Default)]
struct State {
    instances: HashMap<String, Packed>,
    /// When the last complete listing started; `None` before the first one.
    listed_at: Option<Instant>,
    hot: HashMap<String, Hot>,
    /// When our own calls last changed an instance.
    mutated: HashMap<String, Instant>,
    /// Consecutive failed polls, for backoff.
    failures: u32,
    retry_at: Option<Instant>,
}

#[derive(Clone, Copy, Debug)]
struct Hot {
    since: Instant,
    next: Instant,
    /// Wake the owner after the next poll even when nothing changed: our own call started this
    /// transition and the reconcile that made it left the status to be written then.
    wake_after_poll: bool,
}

/// What the fleet knows of an instance.
#[derive(Clone, Debug, PartialEq)]
pub enum Lookup {
    Seen(Box<Seen>),
    /// Not in the account's last listing (or nothing listed yet): ask BeeOS directly.
    NotListed,
}

impl Fleet {
    pub fn new(
        intervals: Intervals,
        resources: Arc<Resources>,
        wake: mpsc::UnboundedSender<ObjectRef<BeeosInstance>>,
    ) -> Fleet {
        Fleet {
            shared: Arc::new(Shared {
                intervals,
                resources,
                wake,
                accounts: Mutex::new(Accounts::default()),
            }),
        }
    }

    /// The account `client`'s credential belongs to, with `resource` recorded as using it;
    /// starts polling the account if nobody did yet. Call from inside a tokio runtime.
    pub fn account(&self, client: &BeeosClient, resource: &Key) -> Arc<Account> {
        let fingerprint = *client.credential().fingerprint();
        let mut accounts = self
            .shared
            .accounts
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let key = accounts
            .by_credential
            .get(&fingerprint)
            .cloned()
            .unwrap_or(AccountKey::Credential(fingerprint));
        let account = match accounts.by_key.get(&key) {
            Some(account) => account.clone(),
            None => {
                let account = Arc::new(Account {
                    key: Mutex::new(key.clone()),
                    first_poll: self.shared.intervals.transition_poll,
                    clients: Mutex::new(vec![client.clone()]),
                    state: Mutex::new(State::default()),
                    changed: Notify::new(),
                });
                accounts.by_key.insert(key.clone(), account.clone());
                accounts.by_credential.insert(fingerprint, key.clone());
                tokio::spawn(run(Arc::downgrade(&self.shared), account.clone()));
                account
            }
        };
        account.add_client(client);
        accounts.users.insert(resource.clone(), key);
        account
    }

    /// What the fleet last saw of `instance_id`, in whichever account holds it.
    pub fn seen(&self, instance_id: &str) -> Option<Seen> {
        let accounts: Vec<Arc<Account>> = self
            .shared
            .accounts
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .by_key
            .values()
            .cloned()
            .collect();
        accounts.iter().find_map(|account| {
            account
                .state()
                .instances
                .get(instance_id)
                .map(Packed::unpack)
        })
    }

    /// `resource` is gone: it no longer keeps its account polled.
    pub fn release(&self, resource: &Key) {
        self.shared
            .accounts
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .users
            .remove(resource);
    }
}

impl Account {
    fn add_client(&self, client: &BeeosClient) {
        let mut clients = self.clients.lock().unwrap_or_else(PoisonError::into_inner);
        let fingerprint = client.credential().fingerprint();
        clients.retain(|c| c.credential().fingerprint() != fingerprint);
        clients.push(client.clone());
    }

    fn client(&self) -> Option<BeeosClient> {
        self.clients
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .last()
            .cloned()
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The instance as last listed or polled.
    pub fn lookup(&self, instance_id: &str) -> Lookup {
        match self.state().instances.get(instance_id) {
            Some(seen) => Lookup::Seen(Box::new(seen.unpack())),
            None => Lookup::NotListed,
        }
    }

    /// Records an answer BeeOS gave a reconcile (a GET, or the instance after a deploy, start,
    /// stop or restart). `ours` says our own call just changed it: it is polled soon, and its
    /// resource is woken after that poll whatever it shows.
    pub fn record(&self, instance: &Instance, ours: bool) {
        let now = Instant::now();
        let seen = Seen::of(instance);
        let id = instance.instance_id.clone();
        {
            let mut state = self.state();
            if ours {
                state.mutated.insert(id.clone(), now);
            }
            if ours || needs_watching(&seen.observed) {
                let first = Hot {
                    since: now,
                    next: now + self.first_poll,
                    wake_after_poll: ours,
                };
                let hot = state.hot.entry(id.clone()).or_insert(first);
                if ours {
                    *hot = first;
                }
            }
            state.instances.insert(id, Packed::of(&seen));
        }
        self.changed.notify_one();
    }

    /// The seconds `instance_id` has run, as last seen.
    pub fn run_seconds(&self, instance_id: &str) -> Option<i64> {
        self.state()
            .instances
            .get(instance_id)
            .map(Packed::total_run_seconds)
    }

    /// Whether our own call changed `instance_id` less than `within` ago.
    pub fn mutated_within(&self, instance_id: &str, within: Duration) -> bool {
        self.state()
            .mutated
            .get(instance_id)
            .is_some_and(|at| at.elapsed() < within)
    }

    /// Our own call (a destroy) started a change BeeOS answered without the instance: poll it
    /// soon, and wake its resource after that poll.
    pub fn expect_change(&self, instance_id: &str) {
        let now = Instant::now();
        {
            let mut state = self.state();
            state.mutated.insert(instance_id.to_owned(), now);
            state.hot.insert(
                instance_id.to_owned(),
                Hot {
                    since: now,
                    next: now + self.first_poll,
                    wake_after_poll: true,
                },
            );
        }
        self.changed.notify_one();
    }

    /// BeeOS answered 404: forget the instance.
    pub fn forget(&self, instance_id: &str) {
        let mut state = self.state();
        state.instances.remove(instance_id);
        state.hot.remove(instance_id);
        state.mutated.remove(instance_id);
    }
}

/// An instance between states, or running but not online yet: someone is waiting for it.
fn needs_watching(observed: &ObservedInstance) -> bool {
    let status = observed.status.as_deref().map(InstanceStatus::from);
    let settled = match (&status, observed.desired_status.as_deref()) {
        (Some(status), Some(desired)) => status.matches(&desired.into()),
        _ => false,
    };
    let online =
        observed.connectivity.as_deref().map(Connectivity::from) == Some(Connectivity::Online);
    !settled || (status == Some(InstanceStatus::Running) && !online)
}

/// How long to wait before polling a hot instance again: the transition poll at first, then a
/// quarter of the time it has been hot, up to the steady poll — a transition that lasts polls
/// ever more slowly instead of every few seconds forever.
fn hot_interval(age: Duration, intervals: &Intervals) -> Duration {
    (age / 4).clamp(
        intervals.transition_poll,
        intervals.steady_poll.max(intervals.transition_poll),
    )
}

/// The account's loop: list or poll whatever is due, sleep until the next thing is.
async fn run(shared: Weak<Shared>, account: Arc<Account>) {
    loop {
        let Some(shared) = shared.upgrade() else {
            return;
        };
        if !shared.in_use(&account) {
            shared.retire(&account);
            return;
        }
        let now = Instant::now();
        let (listing_due, due, next) = {
            let state = account.state();
            let listing_due = state
                .listed_at
                .is_none_or(|at| now.saturating_duration_since(at) >= shared.intervals.steady_poll);
            let due: Vec<String> = state
                .hot
                .iter()
                .filter(|(_, hot)| hot.next <= now)
                .map(|(id, _)| id.clone())
                .collect();
            let next_listing = state
                .listed_at
                .map_or(now, |at| at + shared.intervals.steady_poll);
            let next_hot = state.hot.values().map(|hot| hot.next).min();
            let mut next = next_hot.map_or(next_listing, |hot| hot.min(next_listing));
            if let Some(retry_at) = state.retry_at {
                next = next.max(retry_at);
            }
            let backing_off = state.retry_at.is_some_and(|at| at > now);
            if backing_off {
                (false, Vec::new(), next)
            } else {
                (listing_due, due, next)
            }
        };
        let pages = account
            .state()
            .instances
            .len()
            .div_ceil(MAX_PAGE_SIZE as usize)
            .max(1);
        let outcome = if listing_due || due.len() > pages {
            shared.list(&account).await
        } else if !due.is_empty() {
            shared.poll(&account, due).await
        } else {
            let sleep = tokio::time::sleep_until(next.into());
            tokio::select! {
                () = sleep => {}
                () = account.changed.notified() => {}
            }
            continue;
        };
        let mut state = account.state();
        match outcome {
            Ok(()) => {
                state.failures = 0;
                state.retry_at = None;
            }
            Err(err) if err.is_unauthorized() => {
                // A revoked or wrong token: never call with it again. The account goes on with
                // another token of the owner, or ends until a reconcile brings a working one.
                drop(state);
                let failed = account.client();
                account
                    .clients
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .retain(|c| {
                        Some(c.credential().fingerprint())
                            != failed.as_ref().map(|f| f.credential().fingerprint())
                    });
                tracing::info!(error = %err, "BeeOS refused a credential; no longer listing with it");
                if account.client().is_none() {
                    shared.retire(&account);
                    return;
                }
            }
            Err(err) => {
                state.failures = state.failures.saturating_add(1);
                let backoff = shared
                    .intervals
                    .min_backoff
                    .saturating_mul(1 << (state.failures - 1).min(16))
                    .min(shared.intervals.steady_poll)
                    .max(err.retry_after().unwrap_or_default());
                state.retry_at = Some(Instant::now() + backoff);
                tracing::info!(error = %err, retry_in = ?backoff, "polling BeeOS failed");
            }
        }
    }
}

impl Shared {
    /// Whether any resource still uses the account.
    fn in_use(&self, account: &Account) -> bool {
        let key = account
            .key
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        let accounts = self.accounts.lock().unwrap_or_else(PoisonError::into_inner);
        accounts
            .by_key
            .get(&key)
            .is_some_and(|a| std::ptr::eq(&**a, account))
            && accounts.users.values().any(|used| *used == key)
    }

    fn retire(&self, account: &Account) {
        let key = account
            .key
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        let mut accounts = self.accounts.lock().unwrap_or_else(PoisonError::into_inner);
        if accounts
            .by_key
            .get(&key)
            .is_some_and(|a| std::ptr::eq(&**a, account))
        {
            accounts.by_key.remove(&key);
            accounts.by_credential.retain(|_, k| *k != key);
        }
    }

    /// Lists every instance of the account, page by page, and wakes whoever must hear of a
    /// change. Instances named by a resource but missing from a complete listing are dropped
    /// (their resources are woken and look them up).
    async fn list(&self, account: &Arc<Account>) -> Result<(), Error> {
        let Some(client) = account.client() else {
            return Ok(());
        };
        let started = Instant::now();
        let mut query = ListQuery::default();
        let mut listed: HashSet<String> = HashSet::new();
        let mut owner = None;
        loop {
            let page = client.list(&query).await?;
            let last = page.is_last();
            for instance in &page.instances {
                if instance.instance_id.is_empty() || !listed.insert(instance.instance_id.clone()) {
                    continue;
                }
                if owner.is_none() && !instance.owner_id.is_empty() {
                    owner = Some(instance.owner_id.clone());
                }
                self.observe(account, instance, started);
            }
            match query.page.checked_add(1) {
                Some(next) if !last => query.page = next,
                _ => break,
            }
        }
        let vanished: Vec<String> = {
            let mut state = account.state();
            // Recorded after this listing started (a fresh deploy): not missing, just newer.
            let keep = |id: &String, state: &State| {
                listed.contains(id) || state.mutated.get(id).is_some_and(|at| *at >= started)
            };
            let vanished: Vec<String> = state
                .instances
                .keys()
                .filter(|id| !keep(id, &state))
                .cloned()
                .collect();
            for id in &vanished {
                state.instances.remove(id);
                state.hot.remove(id);
                state.mutated.remove(id);
            }
            // Our own calls matter only until the next polls have seen their effect.
            let horizon = self.intervals.steady_poll * 2;
            state.mutated.retain(|_, at| at.elapsed() < horizon);
            state.listed_at = Some(started);
            vanished
        };
        for id in vanished {
            self.wake_naming(&id);
        }
        if let Some(owner) = owner {
            self.learn_owner(account, owner);
        }
        Ok(())
    }

    /// GETs the hot instances that are due.
    async fn poll(&self, account: &Arc<Account>, due: Vec<String>) -> Result<(), Error> {
        let Some(client) = account.client() else {
            return Ok(());
        };
        let started = Instant::now();
        let results: Vec<(String, Result<Instance, Error>)> = futures::stream::iter(due)
            .map(|id| {
                let client = client.clone();
                async move {
                    let result = client.get(&id).await;
                    (id, result)
                }
            })
            .buffer_unordered(POLL_CONCURRENCY)
            .collect()
            .await;
        let mut first_error = None;
        for (id, result) in results {
            match result {
                Ok(instance) => self.observe(account, &instance, started),
                Err(err) if err.is_not_found() || err.is_forbidden() => {
                    account.forget(&id);
                    self.wake_naming(&id);
                }
                Err(err) => {
                    // Try again later, as if it had been polled.
                    let mut state = account.state();
                    if let Some(hot) = state.hot.get_mut(&id) {
                        hot.next = Instant::now() + self.intervals.transition_poll;
                    }
                    first_error.get_or_insert(err);
                }
            }
        }
        first_error.map_or(Ok(()), Err)
    }

    /// Takes in one instance as BeeOS reported it: updates the cache and the hot set, and wakes
    /// the resources that must hear of it.
    fn observe(&self, account: &Account, instance: &Instance, polled_at: Instant) {
        let id = &instance.instance_id;
        let naming = self.resources.naming(id);
        let seen = Seen::of(instance);
        let now = Instant::now();
        tracing::trace!(instance_id = %id, status = ?seen.observed.status, named = naming.len(), "observed");
        let (changed, wake_anyway) = {
            let mut state = account.state();
            if naming.is_empty() {
                // Our own fresh deploy, its id not recorded (or not yet indexed): keep watching
                // it, for the resource that will name it.
                if state.mutated.contains_key(id) {
                    state.instances.insert(id.clone(), Packed::of(&seen));
                    return;
                }
                // Nobody's instance: nothing to tell anyone, nothing to keep.
                state.instances.remove(id);
                state.hot.remove(id);
                return;
            }
            // A reconcile recorded a newer answer while this one was in flight.
            if state.mutated.get(id).is_some_and(|at| *at > polled_at) {
                return;
            }
            // Counters that move on their own (run seconds) are no change worth a reconcile. An
            // instance seen for the first time (the first listing after a restart) is news only
            // to a resource whose status does not show it already.
            let packed = Packed::of(&seen);
            let changed = state
                .instances
                .get(id)
                .is_some_and(|cached| cached.observed_bytes() != packed.observed_bytes());
            let mut wake_anyway = false;
            if needs_watching(&seen.observed) {
                let hot = state.hot.entry(id.clone()).or_insert(Hot {
                    since: now,
                    next: now,
                    wake_after_poll: false,
                });
                // A listing sees instances before their first poll is due: the wake our own
                // call asked for waits for that poll.
                if hot.next <= now {
                    wake_anyway = std::mem::take(&mut hot.wake_after_poll);
                    hot.next = now
                        + hot_interval(now.saturating_duration_since(hot.since), &self.intervals);
                }
            } else if let Some(hot) = state.hot.remove(id) {
                wake_anyway = hot.wake_after_poll;
            }
            state.instances.insert(id.clone(), packed);
            (changed, wake_anyway)
        };
        for key in naming {
            let stale =
                !changed && !wake_anyway && self.resources.status_differs(&key, &seen.observed);
            if changed || wake_anyway || stale {
                tracing::debug!(instance_id = %id, resource = %key, changed, wake_anyway, stale, "waking");
                let _ = self.wake.send(key.object_ref());
            }
        }
    }

    fn wake_naming(&self, instance_id: &str) {
        for key in self.resources.naming(instance_id) {
            let _ = self.wake.send(key.object_ref());
        }
    }

    /// The account's first listing revealed its owner: from now on every token of that owner
    /// lists through one account.
    fn learn_owner(&self, account: &Arc<Account>, owner: String) {
        let owner_key = AccountKey::Owner(owner);
        let current = account
            .key
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        if current == owner_key {
            return;
        }
        let mut accounts = self.accounts.lock().unwrap_or_else(PoisonError::into_inner);
        let fingerprints: Vec<Fingerprint> = account
            .clients
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .map(|c| *c.credential().fingerprint())
            .collect();
        match accounts.by_key.get(&owner_key) {
            // Another token of this owner is polled already: hand everything over to it. This
            // account's loop then finds itself replaced and ends.
            Some(existing) => {
                let existing = existing.clone();
                for client in account
                    .clients
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .iter()
                {
                    existing.add_client(client);
                }
                existing.changed.notify_one();
                accounts.by_key.remove(&current);
            }
            None => {
                accounts.by_key.remove(&current);
                accounts.by_key.insert(owner_key.clone(), account.clone());
                *account.key.lock().unwrap_or_else(PoisonError::into_inner) = owner_key.clone();
            }
        }
        for fingerprint in fingerprints {
            accounts
                .by_credential
                .insert(fingerprint, owner_key.clone());
        }
        for used in accounts.users.values_mut() {
            if *used == current {
                *used = owner_key.clone();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn observed(status: &str, desired: &str, connectivity: &str) -> ObservedInstance {
        ObservedInstance {
            id: "inst-1".into(),
            status: Some(status.into()),
            desired_status: Some(desired.into()),
            connectivity: Some(connectivity.into()),
            ..ObservedInstance::default()
        }
    }

    #[test]
    fn a_packed_instance_unpacks_to_what_was_seen() {
        let full = Seen {
            observed: ObservedInstance {
                id: "inst-1".into(),
                status: Some("running".into()),
                desired_status: Some("running".into()),
                endpoint: Some("https://inst-1.example".into()),
                connectivity: Some("online".into()),
                connectivity_reason: Some(String::new()),
                halt_reason: Some("trial_expired".into()),
                error_message: Some("é".repeat(200)),
                region: Some("eu-west".into()),
                cluster_id: Some("c-1".into()),
                public_ip: Some("192.0.2.1".into()),
                image_id: Some("img-1".into()),
                image_ref: Some("registry/agent:1".into()),
                is_trial: Some(false),
                expires_at: Some("2026-01-01T00:00:00Z".into()),
                started_at: Some("2026-01-01T00:00:01Z".into()),
                stopped_at: Some("2026-01-01T00:00:02Z".into()),
                status_entered_at: Some("2026-01-01T00:00:03Z".into()),
                created_at: Some("2026-01-01T00:00:04Z".into()),
            },
            total_run_seconds: -3,
            agent_framework: "openclaw".into(),
        };
        let sparse = Seen {
            observed: ObservedInstance {
                is_trial: Some(true),
                ..observed("running", "running", "online")
            },
            total_run_seconds: i64::MAX,
            agent_framework: String::new(),
        };
        for seen in [&full, &sparse] {
            let packed = Packed::of(seen);
            assert_eq!(packed.unpack(), *seen);
            assert_eq!(packed.total_run_seconds(), seen.total_run_seconds);
        }
        // A listing compares the observed instance only: run seconds and framework aside.
        let counted_on = Seen {
            total_run_seconds: 7,
            agent_framework: "other".into(),
            ..full.clone()
        };
        assert_eq!(
            Packed::of(&full).observed_bytes(),
            Packed::of(&counted_on).observed_bytes()
        );
        let mut moved = full.clone();
        moved.observed.connectivity_reason = None;
        assert_ne!(
            Packed::of(&full).observed_bytes(),
            Packed::of(&moved).observed_bytes(),
            "an absent string differs from an empty one"
        );
        assert_eq!(
            Packed::of(&Seen {
                observed: ObservedInstance::default(),
                total_run_seconds: 0,
                agent_framework: String::new(),
            })
            .unpack()
            .observed,
            ObservedInstance::default()
        );
    }

    #[test]
    fn only_settled_instances_are_left_to_the_steady_listing() {
        assert!(!needs_watching(&observed("running", "running", "online")));
        assert!(!needs_watching(&observed("stopped", "stopped", "offline")));
        assert!(needs_watching(&observed(
            "provisioning",
            "running",
            "unknown"
        )));
        assert!(needs_watching(&observed("running", "stopped", "online")));
        assert!(needs_watching(&observed("running", "running", "offline")));
    }

    #[test]
    fn a_long_transition_is_polled_ever_more_slowly_up_to_the_steady_poll() {
        let intervals = Intervals::default();
        assert_eq!(
            hot_interval(Duration::ZERO, &intervals),
            intervals.transition_poll
        );
        assert_eq!(
            hot_interval(Duration::from_secs(120), &intervals),
            Duration::from_secs(30)
        );
        assert_eq!(
            hot_interval(Duration::from_secs(3600), &intervals),
            intervals.steady_poll
        );
    }
}
