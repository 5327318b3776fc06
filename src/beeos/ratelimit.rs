//! The client-side rate limit: one GCRA bucket (governor) per credential and endpoint, shared by
//! every [`super::BeeosClient`] that uses that credential, so the operator stays inside BeeOS's
//! quota however many clients it builds. BeeOS counts "per `oag_` key × endpoint", so a burst of
//! deploys never delays the reads that tell whether they worked, and the other way round.
//!
//! Calls wait for their turn; the limiter never fails a call. It must not hold a token: buckets
//! are keyed by the credential's fingerprint.

use std::collections::HashMap;
use std::fmt;
use std::num::NonZeroU32;
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::time::{Duration, Instant};

use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};

use super::credential::{Credential, Fingerprint};
use super::error::Operation;

/// A registry of rate limiters, one per credential and endpoint, all with the same quota. Cheap
/// to clone; clones share the buckets.
#[derive(Clone)]
pub struct RateLimiters {
    inner: Arc<Registry>,
}

struct Registry {
    quota: Quota,
    // Weak: a credential's buckets live as long as a client uses the credential, so rotated
    // credentials do not accumulate.
    credentials: Mutex<HashMap<Fingerprint, Weak<Buckets>>>,
}

/// One credential's buckets, one per endpoint, made on first use.
struct Buckets {
    quota: Quota,
    by_operation: Mutex<HashMap<Operation, Arc<DefaultDirectRateLimiter>>>,
}

impl RateLimiters {
    /// A registry handing out buckets with `quota`.
    pub fn new(quota: Quota) -> Self {
        Self {
            inner: Arc::new(Registry {
                quota,
                credentials: Mutex::new(HashMap::new()),
            }),
        }
    }

    /// A registry allowing `per_second` calls per second per credential and endpoint, in bursts
    /// of `burst`.
    pub fn per_second(per_second: NonZeroU32, burst: NonZeroU32) -> Self {
        Self::new(Quota::per_second(per_second).allow_burst(burst))
    }

    /// The quota of every bucket.
    pub fn quota(&self) -> Quota {
        self.inner.quota
    }

    /// The buckets of `credential`, created on first use and shared while anyone holds them.
    pub(crate) fn limiter_for(&self, credential: &Credential) -> CredentialLimiter {
        let mut credentials = self
            .inner
            .credentials
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let fingerprint = *credential.fingerprint();
        if let Some(buckets) = credentials.get(&fingerprint).and_then(Weak::upgrade) {
            return CredentialLimiter(buckets);
        }
        credentials.retain(|_, buckets| buckets.strong_count() > 0);
        let buckets = Arc::new(Buckets {
            quota: self.inner.quota,
            by_operation: Mutex::new(HashMap::new()),
        });
        credentials.insert(fingerprint, Arc::downgrade(&buckets));
        CredentialLimiter(buckets)
    }

    /// How many credentials currently have buckets.
    pub fn len(&self) -> usize {
        self.inner
            .credentials
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .values()
            .filter(|buckets| buckets.strong_count() > 0)
            .count()
    }

    /// Whether no credential has buckets.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl fmt::Debug for RateLimiters {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RateLimiters")
            .field("quota", &self.inner.quota)
            .field("credentials", &self.len())
            .finish()
    }
}

/// One credential's buckets.
#[derive(Clone)]
pub(crate) struct CredentialLimiter(Arc<Buckets>);

impl CredentialLimiter {
    fn bucket(&self, operation: Operation) -> Arc<DefaultDirectRateLimiter> {
        self.0
            .by_operation
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .entry(operation)
            .or_insert_with(|| Arc::new(RateLimiter::direct(self.0.quota)))
            .clone()
    }

    /// Waits until a call to `operation` may go out; returns how long it waited.
    pub(crate) async fn acquire(&self, operation: Operation) -> Duration {
        let bucket = self.bucket(operation);
        if bucket.check().is_ok() {
            return Duration::ZERO;
        }
        let started = Instant::now();
        bucket.until_ready().await;
        started.elapsed()
    }

    /// Whether two handles share one set of buckets.
    #[cfg(test)]
    pub(crate) fn same_buckets(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }

    /// Takes a cell from `operation`'s bucket without waiting, if there is one.
    #[cfg(test)]
    pub(crate) fn try_take(&self, operation: Operation) -> bool {
        self.bucket(operation).check().is_ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn slow_quota(burst: u32) -> Quota {
        // One cell a minute: nothing refills during a test, so counts are exact.
        Quota::with_period(Duration::from_secs(60))
            .unwrap()
            .allow_burst(NonZeroU32::new(burst).unwrap())
    }

    #[test]
    fn one_credential_shares_its_buckets() {
        let limiters = RateLimiters::new(slow_quota(2));
        let credential = Credential::new("oag_a").unwrap();
        let first = limiters.limiter_for(&credential);
        let second = limiters.limiter_for(&Credential::new("oag_a").unwrap());
        assert!(first.same_buckets(&second));
        assert!(first.try_take(Operation::Get));
        assert!(second.try_take(Operation::Get));
        assert!(
            !first.try_take(Operation::Get),
            "burst of 2 shared by both handles"
        );
        assert_eq!(limiters.len(), 1);
    }

    #[test]
    fn each_endpoint_has_its_own_bucket() {
        let limiters = RateLimiters::new(slow_quota(1));
        let limiter = limiters.limiter_for(&Credential::new("oag_a").unwrap());
        assert!(limiter.try_take(Operation::Deploy));
        assert!(!limiter.try_take(Operation::Deploy));
        assert!(
            limiter.try_take(Operation::List),
            "a burst of deploys leaves the list budget alone"
        );
    }

    #[test]
    fn different_credentials_have_separate_buckets() {
        let limiters = RateLimiters::new(slow_quota(1));
        let a = limiters.limiter_for(&Credential::new("oag_a").unwrap());
        let b = limiters.limiter_for(&Credential::new("oag_b").unwrap());
        assert!(!a.same_buckets(&b));
        assert!(a.try_take(Operation::Get));
        assert!(!a.try_take(Operation::Get));
        assert!(b.try_take(Operation::Get));
        assert_eq!(limiters.len(), 2);
    }

    #[test]
    fn buckets_go_when_no_client_holds_them() {
        let limiters = RateLimiters::new(slow_quota(1));
        let a = limiters.limiter_for(&Credential::new("oag_a").unwrap());
        assert!(a.try_take(Operation::Get));
        drop(a);
        assert!(limiters.is_empty());
        let again = limiters.limiter_for(&Credential::new("oag_a").unwrap());
        assert!(
            again.try_take(Operation::Get),
            "a fresh bucket after the old one went"
        );
    }

    #[tokio::test]
    async fn acquire_does_not_wait_within_the_burst() {
        let limiters = RateLimiters::new(slow_quota(2));
        let limiter = limiters.limiter_for(&Credential::new("oag_a").unwrap());
        assert_eq!(limiter.acquire(Operation::Get).await, Duration::ZERO);
        assert_eq!(limiter.acquire(Operation::Get).await, Duration::ZERO);
        assert!(!limiter.try_take(Operation::Get));
    }

    #[test]
    fn debug_shows_no_fingerprints_or_tokens() {
        let limiters =
            RateLimiters::per_second(NonZeroU32::new(5).unwrap(), NonZeroU32::new(10).unwrap());
        let _held = limiters.limiter_for(&Credential::new("oag_secret").unwrap());
        let shown = format!("{limiters:?}");
        assert!(!shown.contains("oag_secret"), "{shown}");
        assert!(shown.contains("credentials: 1"), "{shown}");
    }
}
