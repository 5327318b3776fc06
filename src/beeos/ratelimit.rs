//! The client-side rate limit: one GCRA bucket (governor) per credential, shared by every
//! [`super::BeeosClient`] that uses that credential, so the operator stays inside BeeOS's
//! per-key quota however many clients it builds.
//!
//! Calls wait for their turn; the limiter never fails a call. It must not hold a token: buckets
//! are keyed by the credential's fingerprint.

use std::collections::HashMap;
use std::fmt;
use std::num::NonZeroU32;
use std::sync::{Arc, Mutex, PoisonError, Weak};

use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};

use super::credential::{Credential, Fingerprint};

/// A registry of rate limiters, one per credential, all with the same quota. Cheap to clone;
/// clones share the buckets.
#[derive(Clone)]
pub struct RateLimiters {
    inner: Arc<Registry>,
}

struct Registry {
    quota: Quota,
    // Weak: a bucket lives as long as a client uses its credential, so rotated credentials
    // do not accumulate.
    limiters: Mutex<HashMap<Fingerprint, Weak<DefaultDirectRateLimiter>>>,
}

impl RateLimiters {
    /// A registry handing out buckets with `quota`.
    pub fn new(quota: Quota) -> Self {
        Self {
            inner: Arc::new(Registry {
                quota,
                limiters: Mutex::new(HashMap::new()),
            }),
        }
    }

    /// A registry allowing `per_second` calls per second per credential, in bursts of `burst`.
    pub fn per_second(per_second: NonZeroU32, burst: NonZeroU32) -> Self {
        Self::new(Quota::per_second(per_second).allow_burst(burst))
    }

    /// The quota of every bucket.
    pub fn quota(&self) -> Quota {
        self.inner.quota
    }

    /// The bucket of `credential`, created on first use and shared while anyone holds it.
    pub(crate) fn limiter_for(&self, credential: &Credential) -> CredentialLimiter {
        let mut limiters = self
            .inner
            .limiters
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let fingerprint = *credential.fingerprint();
        if let Some(limiter) = limiters.get(&fingerprint).and_then(Weak::upgrade) {
            return CredentialLimiter(limiter);
        }
        limiters.retain(|_, limiter| limiter.strong_count() > 0);
        let limiter = Arc::new(RateLimiter::direct(self.inner.quota));
        limiters.insert(fingerprint, Arc::downgrade(&limiter));
        CredentialLimiter(limiter)
    }

    /// How many credentials currently have a bucket.
    pub fn len(&self) -> usize {
        self.inner
            .limiters
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .values()
            .filter(|limiter| limiter.strong_count() > 0)
            .count()
    }

    /// Whether no credential has a bucket.
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

/// One credential's bucket.
#[derive(Clone)]
pub(crate) struct CredentialLimiter(Arc<DefaultDirectRateLimiter>);

impl CredentialLimiter {
    /// Waits until a call may go out; returns whether it had to wait.
    pub(crate) async fn acquire(&self) -> bool {
        if self.0.check().is_ok() {
            return false;
        }
        self.0.until_ready().await;
        true
    }

    /// Whether two handles share one bucket.
    #[cfg(test)]
    pub(crate) fn same_bucket(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn slow_quota(burst: u32) -> Quota {
        // One cell a minute: nothing refills during a test, so counts are exact.
        Quota::with_period(Duration::from_secs(60))
            .unwrap()
            .allow_burst(NonZeroU32::new(burst).unwrap())
    }

    #[test]
    fn one_credential_shares_one_bucket() {
        let limiters = RateLimiters::new(slow_quota(2));
        let credential = Credential::new("oag_a").unwrap();
        let first = limiters.limiter_for(&credential);
        let second = limiters.limiter_for(&Credential::new("oag_a").unwrap());
        assert!(first.same_bucket(&second));
        assert!(first.0.check().is_ok());
        assert!(second.0.check().is_ok());
        assert!(
            first.0.check().is_err(),
            "burst of 2 shared by both handles"
        );
        assert_eq!(limiters.len(), 1);
    }

    #[test]
    fn different_credentials_have_separate_buckets() {
        let limiters = RateLimiters::new(slow_quota(1));
        let a = limiters.limiter_for(&Credential::new("oag_a").unwrap());
        let b = limiters.limiter_for(&Credential::new("oag_b").unwrap());
        assert!(!a.same_bucket(&b));
        assert!(a.0.check().is_ok());
        assert!(a.0.check().is_err());
        assert!(b.0.check().is_ok());
        assert_eq!(limiters.len(), 2);
    }

    #[test]
    fn buckets_go_when_no_client_holds_them() {
        let limiters = RateLimiters::new(slow_quota(1));
        let a = limiters.limiter_for(&Credential::new("oag_a").unwrap());
        drop(a);
        assert!(limiters.is_empty());
        let again = limiters.limiter_for(&Credential::new("oag_a").unwrap());
        assert!(
            again.0.check().is_ok(),
            "a fresh bucket after the old one went"
        );
    }

    #[tokio::test]
    async fn acquire_does_not_wait_within_the_burst() {
        let limiters = RateLimiters::new(slow_quota(2));
        let limiter = limiters.limiter_for(&Credential::new("oag_a").unwrap());
        assert!(!limiter.acquire().await);
        assert!(!limiter.acquire().await);
        assert!(limiter.0.check().is_err());
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
