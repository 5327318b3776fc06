//! The simulator's shared state behind one lock (table, settings, faults, call counters and
//! rate-limit buckets) and the admission every contract call passes first: count the call and
//! decide its route fault (both as it arrives, so counted faults hit calls in arrival order), hold
//! it (global and route latency), answer an injected error, check the bearer token, take from the
//! rate limit of the token and route — in that order, so injected faults stand for failures in
//! front of the real service's authentication.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use axum::http::{HeaderMap, header};

use crate::config::{Settings, SimConfig};
use crate::errors::ApiError;
use crate::faults::Faults;
use crate::ratelimit::Buckets;
use crate::route::Route;
use crate::store::Store;

/// State shared by all handlers.
#[derive(Debug)]
pub struct App {
    tokens: HashMap<String, String>,
    inner: Mutex<Inner>,
}

/// What the lock guards.
#[derive(Debug)]
pub struct Inner {
    /// Every instance.
    pub store: Store,
    /// Current timings and rate limit.
    pub settings: Settings,
    /// Current faults, with their counts left.
    pub faults: Faults,
    /// Calls received per route.
    pub calls: BTreeMap<Route, u64>,
    /// Calls admitted per known token and route (so tests can tell which credential a client
    /// used; the tokens are the simulator's own test tokens).
    pub calls_by_token: BTreeMap<(String, Route), u64>,
    /// Rate-limit buckets per token and route.
    pub buckets: Buckets,
}

/// An authenticated caller.
#[derive(Clone, Debug)]
pub struct Caller {
    /// The owner the token maps to.
    pub owner: String,
}

impl App {
    /// State for `config`.
    pub fn new(config: SimConfig) -> Arc<Self> {
        Arc::new(Self {
            tokens: config.tokens.into_iter().collect(),
            inner: Mutex::new(Inner {
                store: Store::default(),
                settings: config.settings,
                faults: config.faults,
                calls: BTreeMap::new(),
                calls_by_token: BTreeMap::new(),
                buckets: Buckets::default(),
            }),
        })
    }

    /// Locks the state. No `.await` may happen while the guard lives.
    pub fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding the lock leaves plain data behind, still usable.
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Admits one call of `route`, or gives the error to answer with.
    pub async fn admit(&self, route: Route, headers: &HeaderMap) -> Result<Caller, ApiError> {
        let (hold, injected_error) = {
            let mut inner = self.lock();
            *inner.calls.entry(route).or_default() += 1;
            let latency = Duration::from_millis(inner.faults.latency_ms);
            match inner.faults.take_route_fault(route, rand::random::<f64>()) {
                Some(injected) => (latency + injected.hold, injected.error),
                None => (latency, None),
            }
        };
        if !hold.is_zero() {
            tokio::time::sleep(hold).await;
        }
        if let Some(error) = injected_error {
            return Err(error);
        }
        let token = bearer_token(headers)?;
        let owner = self.tokens.get(token).ok_or_else(ApiError::invalid_token)?;
        let mut inner = self.lock();
        *inner
            .calls_by_token
            .entry((token.to_owned(), route))
            .or_default() += 1;
        let (rate, burst) = (
            inner.settings.rate_limit_per_second,
            inner.settings.rate_limit_burst,
        );
        inner
            .buckets
            .take(token, route, Instant::now(), rate, burst)
            .map_err(ApiError::rate_limited)?;
        Ok(Caller {
            owner: owner.clone(),
        })
    }
}

/// The token of an `Authorization: Bearer <token>` header.
fn bearer_token(headers: &HeaderMap) -> Result<&str, ApiError> {
    let Some(value) = headers.get(header::AUTHORIZATION) else {
        return Err(ApiError::missing_token());
    };
    let value = value
        .to_str()
        .map_err(|_| ApiError::invalid_token())?
        .trim();
    let (scheme, token) = value.split_once(' ').unwrap_or((value, ""));
    if !scheme.eq_ignore_ascii_case("bearer") {
        return Err(ApiError::invalid_token());
    }
    match token.trim() {
        "" => Err(ApiError::missing_token()),
        token => Ok(token),
    }
}

#[cfg(test)]
mod tests {
    use axum::http::HeaderValue;

    use super::*;

    fn auth(value: &'static str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(header::AUTHORIZATION, HeaderValue::from_static(value));
        h
    }

    #[test]
    fn bearer_tokens_are_read_and_bad_headers_named() {
        assert_eq!(bearer_token(&auth("Bearer oag_1")).unwrap(), "oag_1");
        assert_eq!(bearer_token(&auth("bearer  oag_1 ")).unwrap(), "oag_1");
        assert_eq!(
            bearer_token(&HeaderMap::new()).unwrap_err().code,
            "missing_token"
        );
        assert_eq!(
            bearer_token(&auth("Bearer ")).unwrap_err().code,
            "missing_token"
        );
        assert_eq!(
            bearer_token(&auth("Basic abc")).unwrap_err().code,
            "invalid_token"
        );
    }
}
