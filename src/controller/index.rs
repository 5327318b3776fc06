//! Indexes over the watched resources, kept up to date from the watch events: who names each
//! BeeOS instance id, and which resources read each Secret. They turn "does another resource own
//! this id?" and "who uses this Secret?" into lookups instead of scans of every resource, which
//! at 10,000 resources made each reconcile quadratic.
//!
//! Who owns an instance is decided here, purely, from the resources' own annotations: the
//! resource that recorded the id (its `beeos.ai/claim` names itself and the id) owns it; a copy
//! of that resource, or a resource that had the id written into its annotation by hand, owns it
//! only once it claimed it, and may claim it only when nobody else has.

use std::collections::{BTreeSet, HashMap, HashSet};

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::ResourceExt;
use kube::runtime::reflector::ObjectRef;
use kube::runtime::watcher;

use crate::crd::{
    BeeosInstance, CLAIM_ANNOTATION, INSTANCE_ID_ANNOTATION, REPLACEMENT_ID_ANNOTATION,
    RETIRING_ID_ANNOTATION,
};

/// A Secret in a namespace.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SecretRef {
    pub namespace: String,
    pub name: String,
}

/// The operator's record of which instance a resource owns, parsed from `beeos.ai/claim`
/// (`<namespace>/<name>/<instance-id>`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Claim {
    pub namespace: String,
    pub name: String,
    /// Empty while the resource has no current instance (between Recreate's destroy and deploy).
    pub instance_id: String,
}

impl Claim {
    pub fn parse(value: &str) -> Option<Claim> {
        let mut parts = value.splitn(3, '/');
        let (namespace, name, instance_id) = (parts.next()?, parts.next()?, parts.next()?);
        (!namespace.is_empty() && !name.is_empty()).then(|| Claim {
            namespace: namespace.to_owned(),
            name: name.to_owned(),
            instance_id: instance_id.to_owned(),
        })
    }

    /// The annotation value recording that `namespace/name` owns `instance_id`.
    pub fn value(namespace: &str, name: &str, instance_id: Option<&str>) -> String {
        format!("{namespace}/{name}/{}", instance_id.unwrap_or_default())
    }

    fn is_for(&self, key: &Key) -> bool {
        self.namespace == key.namespace && self.name == key.name
    }
}

/// A resource, by namespace and name (a claim names resources this way, so a restore from a
/// backup, which changes the uid, keeps its claims).
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Key {
    pub namespace: String,
    pub name: String,
}

impl Key {
    pub fn of(resource: &BeeosInstance) -> Key {
        Key {
            namespace: resource.namespace().unwrap_or_default(),
            name: resource.name_any(),
        }
    }

    pub fn object_ref(&self) -> ObjectRef<BeeosInstance> {
        ObjectRef::new(&self.name).within(&self.namespace)
    }
}

impl std::fmt::Display for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

/// What one resource says about ownership and Secrets, from its metadata and spec.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Entry {
    pub created: Option<Time>,
    /// `beeos.ai/instance-id`.
    pub current: Option<String>,
    pub claim: Option<Claim>,
    /// `beeos.ai/replacement-id` and `beeos.ai/retiring-id`.
    pub spares: Vec<String>,
    pub credentials: Option<String>,
    pub injections: BTreeSet<String>,
}

fn annotation(resource: &BeeosInstance, key: &str) -> Option<String> {
    resource
        .annotations()
        .get(key)
        .filter(|value| !value.is_empty())
        .cloned()
}

impl Entry {
    pub fn of(resource: &BeeosInstance) -> Entry {
        Entry {
            created: resource.metadata.creation_timestamp.clone(),
            current: annotation(resource, INSTANCE_ID_ANNOTATION),
            claim: annotation(resource, CLAIM_ANNOTATION).and_then(|v| Claim::parse(&v)),
            spares: [REPLACEMENT_ID_ANNOTATION, RETIRING_ID_ANNOTATION]
                .into_iter()
                .filter_map(|key| annotation(resource, key))
                .collect(),
            credentials: resource.spec.credentials.as_ref().map(|c| c.name.clone()),
            injections: resource
                .spec
                .secret_injections
                .iter()
                .map(|i| i.secret_key_ref.name.clone())
                .collect(),
        }
    }

    /// The operator's bookkeeping (marks, spares, digests) was written for this resource, not
    /// copied from another one. Without a claim (nothing recorded yet, or written by an operator
    /// version that did not claim) it is taken as the resource's own.
    pub fn bookkeeping_is_own(&self, key: &Key) -> bool {
        self.claim.as_ref().is_none_or(|claim| claim.is_for(key))
    }

    /// The claim records the current id for this very resource.
    fn claims_current(&self, key: &Key) -> bool {
        match (&self.claim, &self.current) {
            (Some(claim), Some(current)) => claim.is_for(key) && &claim.instance_id == current,
            _ => false,
        }
    }

    /// Every instance id this resource validly holds: its recorded current instance and, when its
    /// bookkeeping is its own, its spares.
    fn held_ids(&self, key: &Key) -> impl Iterator<Item = &str> {
        let current = self.claims_current(key).then_some(self.current.as_deref());
        let spares = self
            .bookkeeping_is_own(key)
            .then_some(self.spares.iter().map(String::as_str));
        current
            .flatten()
            .into_iter()
            .chain(spares.into_iter().flatten())
    }

    fn secrets(&self) -> impl Iterator<Item = &String> {
        self.credentials.iter().chain(&self.injections)
    }
}

/// Whether a resource owns the instance its `beeos.ai/instance-id` names.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Ownership {
    /// It recorded the id for itself: its instance.
    Owned,
    /// Set by hand (an adoption, or a resource from before claims) and nobody else holds it:
    /// the resource may claim it.
    Free,
    /// Another resource recorded it first (or this resource is a copy of that one).
    ClaimedBy(Key),
}

/// Decides who owns `me`'s current id, given the other resources that name the same id.
pub fn ownership<'a>(
    key: &Key,
    me: &Entry,
    others: impl IntoIterator<Item = (&'a Key, &'a Entry)>,
) -> Ownership {
    let Some(id) = me.current.as_deref() else {
        return Ownership::Free;
    };
    let others: Vec<(&Key, &Entry)> = others
        .into_iter()
        .filter(|(other, _)| *other != key)
        .collect();
    let holds = |other: &Key, entry: &Entry| entry.held_ids(other).any(|held| held == id);
    if me.claims_current(key) {
        // Two valid claims only come from a race between two processes; both sides must reach
        // the same verdict, so the smaller key wins.
        let rival = others
            .iter()
            .filter(|(other, entry)| holds(other, entry))
            .map(|(k, _)| *k)
            .min();
        return match rival {
            Some(other) if other < key => Ownership::ClaimedBy(other.clone()),
            _ => Ownership::Owned,
        };
    }
    if let Some(claim) = &me.claim
        && !claim.is_for(key)
        && claim.instance_id == id
    {
        // A copy of another resource, annotations and all: the original owns the instance,
        // whether or not this operator can see it.
        return Ownership::ClaimedBy(Key {
            namespace: claim.namespace.clone(),
            name: claim.name.clone(),
        });
    }
    if let Some((other, _)) = others.iter().find(|(other, entry)| holds(other, entry)) {
        return Ownership::ClaimedBy((*other).clone());
    }
    // Unclaimed on every side (resources from before claims): the older one keeps it, as before.
    let age = |key: &Key, entry: &Entry| (entry.created.clone(), key.clone());
    let older = others
        .iter()
        .filter(|(_, entry)| entry.current.as_deref() == Some(id) && entry.claim.is_none())
        .filter(|(other, entry)| age(other, entry) < age(key, me))
        .map(|(other, _)| (*other).clone())
        .min();
    match older {
        Some(other) => Ownership::ClaimedBy(other),
        None => Ownership::Free,
    }
}

/// The indexes, rebuilt from a relist and updated per event.
#[derive(Default)]
pub struct Index {
    entries: HashMap<Key, Entry>,
    /// Instance id → resources that name it in any slot.
    by_instance: HashMap<String, HashSet<Key>>,
    /// Secret → resources that read it.
    by_secret: HashMap<SecretRef, HashSet<Key>>,
    /// Entries of a relist in progress.
    relisting: Option<HashMap<Key, Entry>>,
}

impl Index {
    /// Applies one watch event; returns the Secrets whose set of users may have changed.
    pub fn apply(&mut self, event: &watcher::Event<BeeosInstance>) -> Vec<SecretRef> {
        match event {
            watcher::Event::Apply(resource) => self.upsert(Key::of(resource), Entry::of(resource)),
            watcher::Event::Delete(resource) => self.remove(&Key::of(resource)),
            watcher::Event::Init => {
                self.relisting = Some(HashMap::new());
                Vec::new()
            }
            watcher::Event::InitApply(resource) => {
                self.relisting
                    .get_or_insert_with(HashMap::new)
                    .insert(Key::of(resource), Entry::of(resource));
                Vec::new()
            }
            watcher::Event::InitDone => {
                let listed = self.relisting.take().unwrap_or_default();
                let gone: Vec<Key> = self
                    .entries
                    .keys()
                    .filter(|key| !listed.contains_key(*key))
                    .cloned()
                    .collect();
                let mut changed: Vec<SecretRef> = Vec::new();
                for key in gone {
                    changed.extend(self.remove(&key));
                }
                for (key, entry) in listed {
                    changed.extend(self.upsert(key, entry));
                }
                changed
            }
        }
    }

    fn upsert(&mut self, key: Key, entry: Entry) -> Vec<SecretRef> {
        if self.entries.get(&key) == Some(&entry) {
            return Vec::new();
        }
        let mut changed = self.remove(&key);
        for id in entry.current.iter().chain(&entry.spares) {
            self.by_instance
                .entry(id.clone())
                .or_default()
                .insert(key.clone());
        }
        for secret in entry.secrets() {
            let secret = SecretRef {
                namespace: key.namespace.clone(),
                name: secret.clone(),
            };
            self.by_secret
                .entry(secret.clone())
                .or_default()
                .insert(key.clone());
            changed.push(secret);
        }
        self.entries.insert(key, entry);
        changed.sort();
        changed.dedup();
        changed
    }

    fn remove(&mut self, key: &Key) -> Vec<SecretRef> {
        let Some(entry) = self.entries.remove(key) else {
            return Vec::new();
        };
        for id in entry.current.iter().chain(&entry.spares) {
            if let Some(keys) = self.by_instance.get_mut(id) {
                keys.remove(key);
                if keys.is_empty() {
                    self.by_instance.remove(id);
                }
            }
        }
        let mut changed = Vec::new();
        for secret in entry.secrets() {
            let secret = SecretRef {
                namespace: key.namespace.clone(),
                name: secret.clone(),
            };
            if let Some(keys) = self.by_secret.get_mut(&secret) {
                keys.remove(key);
                if keys.is_empty() {
                    self.by_secret.remove(&secret);
                }
            }
            changed.push(secret);
        }
        changed
    }

    /// Who owns the current instance of `resource` (as it is now, not as last indexed).
    pub fn ownership(&self, resource: &BeeosInstance) -> Ownership {
        let key = Key::of(resource);
        let me = Entry::of(resource);
        let others = me
            .current
            .as_ref()
            .and_then(|id| self.by_instance.get(id))
            .into_iter()
            .flatten()
            .filter_map(|other| self.entries.get(other).map(|entry| (other, entry)));
        ownership(&key, &me, others)
    }

    /// The resources that name `instance_id` in any slot: whom to wake when it changes.
    pub fn naming(&self, instance_id: &str) -> Vec<Key> {
        self.by_instance
            .get(instance_id)
            .map(|keys| keys.iter().cloned().collect())
            .unwrap_or_default()
    }

    /// The resources that read `secret`.
    pub fn readers(&self, secret: &SecretRef) -> Vec<Key> {
        self.by_secret
            .get(secret)
            .map(|keys| keys.iter().cloned().collect())
            .unwrap_or_default()
    }

    /// Whether a resource that names `secret` as its credentials still exists: it may yet need
    /// them to destroy its instance (a resource exists until its finalizer is removed).
    pub fn credentials_in_use(&self, secret: &SecretRef) -> bool {
        self.by_secret.get(secret).is_some_and(|keys| {
            keys.iter().any(|key| {
                self.entries
                    .get(key)
                    .is_some_and(|entry| entry.credentials.as_ref() == Some(&secret.name))
            })
        })
    }

    /// How many resources are indexed.
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether no resource is indexed.
    #[cfg(test)]
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::BeeosInstanceSpec;

    fn key(name: &str) -> Key {
        Key {
            namespace: "team-a".into(),
            name: name.into(),
        }
    }

    fn entry(current: Option<&str>, claim: Option<&str>, created: i64) -> Entry {
        Entry {
            created: Some(Time(
                k8s_openapi::jiff::Timestamp::from_second(created).expect("valid"),
            )),
            current: current.map(str::to_owned),
            claim: claim.and_then(Claim::parse),
            ..Entry::default()
        }
    }

    #[test]
    fn a_claim_parses_back_to_what_was_written() {
        let value = Claim::value("team-a", "agent", Some("inst-1"));
        assert_eq!(value, "team-a/agent/inst-1");
        let claim = Claim::parse(&value).expect("parses");
        assert_eq!(
            (
                claim.namespace.as_str(),
                claim.name.as_str(),
                claim.instance_id.as_str()
            ),
            ("team-a", "agent", "inst-1")
        );
        let empty = Claim::parse(&Claim::value("team-a", "agent", None)).expect("parses");
        assert_eq!(empty.instance_id, "");
        assert_eq!(Claim::parse("garbage"), None);
    }

    #[test]
    fn the_resource_that_recorded_an_id_owns_it() {
        let me = entry(Some("inst-1"), Some("team-a/agent/inst-1"), 10);
        assert_eq!(ownership(&key("agent"), &me, []), Ownership::Owned);
    }

    #[test]
    fn a_copy_carrying_the_original_claim_owns_nothing_even_unseen_original() {
        let copy = entry(Some("inst-1"), Some("team-a/agent/inst-1"), 20);
        assert_eq!(
            ownership(&key("agent-copy"), &copy, []),
            Ownership::ClaimedBy(key("agent"))
        );
        let mut copy_bookkeeping = copy.clone();
        copy_bookkeeping.spares = vec!["inst-2".into()];
        assert!(!copy_bookkeeping.bookkeeping_is_own(&key("agent-copy")));
    }

    #[test]
    fn recording_first_wins_over_being_older() {
        let newer = entry(Some("inst-1"), Some("team-a/newer/inst-1"), 20);
        // The older resource pointed its annotation at the newer one's instance by hand.
        let older = entry(Some("inst-1"), Some("team-a/older/inst-0"), 10);
        assert_eq!(
            ownership(&key("older"), &older, [(&key("newer"), &newer)]),
            Ownership::ClaimedBy(key("newer"))
        );
        assert_eq!(
            ownership(&key("newer"), &newer, [(&key("older"), &older)]),
            Ownership::Owned
        );
    }

    #[test]
    fn a_hand_set_id_nobody_holds_is_free_to_claim() {
        let adopting = entry(Some("inst-9"), None, 10);
        let unrelated = entry(Some("inst-1"), Some("team-a/other/inst-1"), 5);
        assert_eq!(
            ownership(&key("adopting"), &adopting, [(&key("other"), &unrelated)]),
            Ownership::Free
        );
    }

    #[test]
    fn a_spare_of_another_resource_is_held_by_it() {
        let mut owner = entry(Some("inst-1"), Some("team-a/owner/inst-1"), 5);
        owner.spares = vec!["inst-2".into()];
        let grabbing = entry(Some("inst-2"), None, 10);
        assert_eq!(
            ownership(&key("grabbing"), &grabbing, [(&key("owner"), &owner)]),
            Ownership::ClaimedBy(key("owner"))
        );
    }

    #[test]
    fn between_unclaimed_resources_the_older_keeps_the_instance() {
        let old = entry(Some("inst-1"), None, 5);
        let young = entry(Some("inst-1"), None, 10);
        assert_eq!(
            ownership(&key("young"), &young, [(&key("old"), &old)]),
            Ownership::ClaimedBy(key("old"))
        );
        assert_eq!(
            ownership(&key("old"), &old, [(&key("young"), &young)]),
            Ownership::Free
        );
    }

    #[test]
    fn two_valid_claims_resolve_the_same_way_on_both_sides() {
        let a = entry(Some("inst-1"), Some("team-a/a/inst-1"), 10);
        let b = entry(Some("inst-1"), Some("team-a/b/inst-1"), 5);
        assert_eq!(
            ownership(&key("a"), &a, [(&key("b"), &b)]),
            Ownership::Owned
        );
        assert_eq!(
            ownership(&key("b"), &b, [(&key("a"), &a)]),
            Ownership::ClaimedBy(key("a"))
        );
    }

    fn resource(name: &str, id: &str, claim: &str, credentials: Option<&str>) -> BeeosInstance {
        let mut resource = BeeosInstance::new(
            name,
            BeeosInstanceSpec {
                variant_id: Some("v".into()),
                credentials: credentials.map(|name| crate::crd::SecretKeyRef {
                    name: name.into(),
                    key: None,
                }),
                ..BeeosInstanceSpec::default()
            },
        );
        resource.metadata.namespace = Some("team-a".into());
        resource.metadata.annotations = Some(
            [
                (INSTANCE_ID_ANNOTATION.to_owned(), id.to_owned()),
                (CLAIM_ANNOTATION.to_owned(), claim.to_owned()),
            ]
            .into(),
        );
        resource
    }

    #[test]
    fn the_index_follows_applies_deletes_and_relists() {
        let mut index = Index::default();
        let owner = resource("owner", "inst-1", "team-a/owner/inst-1", Some("token"));
        let copy = resource("copy", "inst-1", "team-a/owner/inst-1", Some("token"));
        let token = SecretRef {
            namespace: "team-a".into(),
            name: "token".into(),
        };
        assert_eq!(
            index.apply(&watcher::Event::Apply(owner.clone())),
            vec![token.clone()]
        );
        index.apply(&watcher::Event::Apply(copy.clone()));
        assert_eq!(index.ownership(&owner), Ownership::Owned);
        assert_eq!(index.ownership(&copy), Ownership::ClaimedBy(key("owner")));
        assert_eq!(index.naming("inst-1").len(), 2);
        assert_eq!(index.readers(&token).len(), 2);
        assert!(index.credentials_in_use(&token));

        assert_eq!(
            index.apply(&watcher::Event::Delete(owner.clone())),
            vec![token.clone()]
        );
        assert_eq!(index.naming("inst-1"), vec![key("copy")]);
        // A relist that no longer shows the copy removes it too.
        index.apply(&watcher::Event::Init);
        index.apply(&watcher::Event::InitApply(owner.clone()));
        let changed = index.apply(&watcher::Event::InitDone);
        assert!(changed.contains(&token));
        assert_eq!(index.naming("inst-1"), vec![key("owner")]);
        assert_eq!(index.len(), 1);
        index.apply(&watcher::Event::Delete(owner));
        assert!(!index.credentials_in_use(&token));
        assert!(index.is_empty());
    }
}
