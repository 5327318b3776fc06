//! Token buckets per bearer token and endpoint ("per `oag_` × endpoint", as BeeOS words its
//! quotas): a burst on one route leaves the others' budgets alone. Pure: the caller passes the
//! time, the rate and the burst, so a change of settings takes effect on the next call and tests
//! need no clock.

use std::collections::HashMap;
use std::time::Instant;

use crate::route::Route;

/// One bucket per bearer token and route.
#[derive(Debug, Default)]
pub struct Buckets {
    buckets: HashMap<Route, HashMap<String, Bucket>>,
}

#[derive(Debug)]
struct Bucket {
    tokens: f64,
    last: Instant,
}

impl Buckets {
    /// Takes one token from the bucket of `key` on `route` (refilled at `per_second`, holding at
    /// most `burst`). `Err(secs)` when empty: the whole seconds (at least 1) until a token is back.
    /// A rate of zero or less means no limit.
    pub fn take(
        &mut self,
        key: &str,
        route: Route,
        now: Instant,
        per_second: f64,
        burst: u32,
    ) -> Result<(), u64> {
        if per_second <= 0.0 {
            return Ok(());
        }
        let capacity = f64::from(burst.max(1));
        let per_token = self.buckets.entry(route).or_default();
        // Looked up by &str first: no allocation for a token seen before.
        let bucket = match per_token.get_mut(key) {
            Some(bucket) => bucket,
            None => per_token.entry(key.to_owned()).or_insert(Bucket {
                tokens: capacity,
                last: now,
            }),
        };
        let elapsed = now.saturating_duration_since(bucket.last).as_secs_f64();
        bucket.tokens = (bucket.tokens + elapsed * per_second).min(capacity);
        bucket.last = now;
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            Ok(())
        } else {
            let wait = (1.0 - bucket.tokens) / per_second;
            // Rounded up: a client that waits exactly Retry-After must find a token.
            Err((wait.ceil() as u64).max(1))
        }
    }

    /// Forgets every bucket.
    pub fn clear(&mut self) {
        self.buckets.clear();
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn burst_is_served_then_refused_with_retry_after() {
        let mut b = Buckets::default();
        let t0 = Instant::now();
        assert!(b.take("t", Route::Get, t0, 1.0, 2).is_ok());
        assert!(b.take("t", Route::Get, t0, 1.0, 2).is_ok());
        assert_eq!(b.take("t", Route::Get, t0, 1.0, 2), Err(1));
        // Other tokens have their own bucket.
        assert!(b.take("u", Route::Get, t0, 1.0, 2).is_ok());
    }

    #[test]
    fn a_burst_on_one_route_leaves_the_other_routes_budgets_alone() {
        let mut b = Buckets::default();
        let t0 = Instant::now();
        assert!(b.take("t", Route::List, t0, 1.0, 1).is_ok());
        assert_eq!(b.take("t", Route::List, t0, 1.0, 1), Err(1));
        for route in Route::ALL.into_iter().filter(|r| *r != Route::List) {
            assert!(b.take("t", route, t0, 1.0, 1).is_ok(), "{route:?}");
            assert_eq!(b.take("t", route, t0, 1.0, 1), Err(1), "{route:?}");
        }
        // And the exhausted route refills on its own clock.
        assert!(
            b.take("t", Route::List, t0 + Duration::from_secs(1), 1.0, 1)
                .is_ok()
        );
    }

    #[test]
    fn tokens_come_back_at_the_rate() {
        let mut b = Buckets::default();
        let t0 = Instant::now();
        assert!(b.take("t", Route::Get, t0, 0.2, 1).is_ok());
        assert_eq!(b.take("t", Route::Get, t0, 0.2, 1), Err(5));
        assert_eq!(
            b.take("t", Route::Get, t0 + Duration::from_secs(3), 0.2, 1),
            Err(2)
        );
        assert!(
            b.take("t", Route::Get, t0 + Duration::from_secs(5), 0.2, 1)
                .is_ok()
        );
    }

    #[test]
    fn zero_rate_means_unlimited() {
        let mut b = Buckets::default();
        let t0 = Instant::now();
        for _ in 0..100 {
            assert!(b.take("t", Route::Get, t0, 0.0, 1).is_ok());
        }
    }
}
