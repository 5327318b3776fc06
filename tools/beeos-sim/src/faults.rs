//! Injected faults: per-route faults (an error answer, a hold before the call is served, or both;
//! with a rate and an optional count), added latency on every contract route, and "drop the deploy
//! response" after the instance is committed. Holds the admin JSON shape and the pure decisions;
//! the random roll and the sleeping are the caller's.

use std::collections::BTreeMap;
use std::time::Duration;

use axum::http::StatusCode;
use serde::{Deserialize, Serialize};

use crate::errors::ApiError;
use crate::route::Route;

/// The statuses a route fault may answer with.
pub const FAULT_STATUSES: [u16; 5] = [429, 500, 502, 503, 504];

/// How long a `timeout` drop holds the response by default: longer than any sane client timeout.
pub const DEFAULT_HOLD_MS: u64 = 60_000;

/// All active faults; the body of `GET`/`PUT /_sim/faults`. A PUT replaces the whole value.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Faults {
    /// Milliseconds added before every contract route answers.
    #[serde(default)]
    pub latency_ms: u64,
    /// Faults per route; routes not listed behave normally.
    #[serde(default)]
    pub routes: BTreeMap<Route, RouteFault>,
    /// Commit deploys but never answer them.
    #[serde(default)]
    pub drop_deploy_response: Option<DropDeployResponse>,
}

/// For a share `error_rate` of a route's calls, `count` times (unlimited if `None`): hold the call
/// `latency_ms` before serving it, then fail it with `status` if given. At least one of the two.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RouteFault {
    /// Share of calls the fault fires on, 0.0..=1.0 (default 1.0).
    #[serde(default = "always")]
    pub error_rate: f64,
    /// One of [`FAULT_STATUSES`]; without it the held call is then served normally.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<u16>,
    /// Milliseconds the call is held when the fault fires, before anything else happens to it
    /// (before its token is checked, before a deploy is committed).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub latency_ms: u64,
    /// Times left to fire; `None` is unlimited. Counts down as the fault fires, when the call
    /// arrives (not when its hold ends).
    #[serde(default)]
    pub count: Option<u32>,
    /// Overrides the error code (e.g. `auth_transient` for a 503).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code: Option<String>,
    /// `Retry-After` seconds for an injected 429 (default 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_after_seconds: Option<u64>,
}

fn always() -> f64 {
    1.0
}

fn is_zero(ms: &u64) -> bool {
    *ms == 0
}

/// What a fired route fault does to one call.
#[derive(Clone, Debug, PartialEq)]
pub struct Injected {
    /// How long to hold the call first.
    pub hold: Duration,
    /// The answer to give after the hold, instead of serving the call.
    pub error: Option<ApiError>,
}

/// Commit the deploy, then give the client no answer at all.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DropDeployResponse {
    /// How the answer is lost.
    pub mode: DropMode,
    /// Deploys left to drop; `None` is unlimited.
    #[serde(default)]
    pub count: Option<u32>,
    /// For `timeout`: how long to hold the connection before closing it without an answer.
    #[serde(default = "default_hold_ms")]
    pub hold_ms: u64,
}

fn default_hold_ms() -> u64 {
    DEFAULT_HOLD_MS
}

/// How a dropped deploy answer is lost.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DropMode {
    /// Close the connection at once without a response.
    Reset,
    /// Hold the connection silently for `holdMs`, then close it without a response.
    Timeout,
}

/// What to do with a committed deploy whose answer is to be lost.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DeployDrop {
    /// How.
    pub mode: DropMode,
    /// How long to wait before closing (zero for `reset`).
    pub hold: Duration,
}

impl Faults {
    /// Checks ranges and statuses; the message says what is wrong.
    pub fn validate(&self) -> Result<(), String> {
        for (route, fault) in &self.routes {
            let key = route.key();
            match fault.status {
                Some(status) if !FAULT_STATUSES.contains(&status) => {
                    return Err(format!(
                        "routes.{key}.status must be one of {FAULT_STATUSES:?}"
                    ));
                }
                Some(_) => {}
                None if fault.latency_ms == 0 => {
                    return Err(format!("routes.{key} needs a status, a latencyMs or both"));
                }
                None if fault.code.is_some() || fault.retry_after_seconds.is_some() => {
                    return Err(format!(
                        "routes.{key}: code and retryAfterSeconds need a status"
                    ));
                }
                None => {}
            }
            if !(0.0..=1.0).contains(&fault.error_rate) {
                return Err(format!(
                    "routes.{}.errorRate must be within 0..=1",
                    route.key()
                ));
            }
        }
        Ok(())
    }

    /// Decides whether the route fault of `route` fires on this call, as it arrives. `roll` is
    /// uniform in `0.0..1.0`; a fault fires when `roll < errorRate` and its count is not used up,
    /// and then uses one from the count.
    pub fn take_route_fault(&mut self, route: Route, roll: f64) -> Option<Injected> {
        let fault = self.routes.get_mut(&route)?;
        if fault.count == Some(0) || roll >= fault.error_rate {
            return None;
        }
        if let Some(n) = fault.count.as_mut() {
            *n -= 1;
        }
        let error = fault.status.map(|status| {
            // `validate` admits only FAULT_STATUSES, all valid status codes.
            let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            if status == StatusCode::TOO_MANY_REQUESTS {
                let mut e = ApiError::rate_limited(fault.retry_after_seconds.unwrap_or(1));
                if let Some(code) = &fault.code {
                    e.code.clone_from(code);
                }
                e
            } else {
                ApiError::server_fault(status, fault.code.as_deref())
            }
        });
        Some(Injected {
            hold: Duration::from_millis(fault.latency_ms),
            error,
        })
    }

    /// Decides whether this committed deploy loses its answer, using one from the count.
    pub fn take_drop_deploy(&mut self) -> Option<DeployDrop> {
        let drop = self.drop_deploy_response.as_mut()?;
        if drop.count == Some(0) {
            return None;
        }
        if let Some(n) = drop.count.as_mut() {
            *n -= 1;
        }
        Some(DeployDrop {
            mode: drop.mode,
            hold: match drop.mode {
                DropMode::Reset => Duration::ZERO,
                DropMode::Timeout => Duration::from_millis(drop.hold_ms),
            },
        })
    }
}

/// Parses the `--fault ROUTE:STATUS[:RATE[:COUNT]]` flag, e.g. `deploy:503:1.0:2`.
pub fn parse_fault_flag(text: &str) -> Result<(Route, RouteFault), String> {
    let mut parts = text.split(':');
    let route = parts.next().unwrap_or_default();
    let route = Route::from_key(route).ok_or_else(|| format!("unknown route {route:?}"))?;
    let status = parts
        .next()
        .ok_or("expected ROUTE:STATUS[:RATE[:COUNT]]")?
        .parse::<u16>()
        .map_err(|e| format!("status: {e}"))?;
    let error_rate = match parts.next() {
        Some(rate) => rate.parse::<f64>().map_err(|e| format!("rate: {e}"))?,
        None => 1.0,
    };
    let count = match parts.next() {
        Some(count) => Some(count.parse::<u32>().map_err(|e| format!("count: {e}"))?),
        None => None,
    };
    if parts.next().is_some() {
        return Err("expected ROUTE:STATUS[:RATE[:COUNT]]".to_owned());
    }
    let fault = RouteFault {
        error_rate,
        status: Some(status),
        latency_ms: 0,
        count,
        code: None,
        retry_after_seconds: None,
    };
    let mut check = Faults::default();
    check.routes.insert(route, fault.clone());
    check.validate()?;
    Ok((route, fault))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn faults(json: &str) -> Faults {
        let f: Faults = serde_json::from_str(json).unwrap();
        f.validate().unwrap();
        f
    }

    #[test]
    fn the_documented_admin_json_parses() {
        let f = faults(
            r#"{"latencyMs":0, "routes":{"deploy":{"errorRate":1.0,"status":503,"count":2}},
                "dropDeployResponse":{"mode":"reset","count":1}}"#,
        );
        assert_eq!(f.routes[&Route::Deploy].count, Some(2));
        assert_eq!(f.drop_deploy_response.unwrap().mode, DropMode::Reset);
    }

    fn error(injected: Option<Injected>) -> ApiError {
        injected
            .expect("the fault fires")
            .error
            .expect("with an error")
    }

    #[test]
    fn a_counted_fault_fires_count_times_then_stops() {
        let mut f = faults(r#"{"routes":{"get":{"status":500,"count":2}}}"#);
        assert!(f.take_route_fault(Route::Get, 0.5).is_some());
        assert!(f.take_route_fault(Route::List, 0.5).is_none());
        assert!(f.take_route_fault(Route::Get, 0.5).is_some());
        assert!(f.take_route_fault(Route::Get, 0.5).is_none());
        assert_eq!(f.routes[&Route::Get].count, Some(0));
    }

    #[test]
    fn error_rate_compares_with_the_roll_and_misses_do_not_use_the_count() {
        let mut f = faults(r#"{"routes":{"get":{"status":503,"errorRate":0.25,"count":1}}}"#);
        assert!(f.take_route_fault(Route::Get, 0.5).is_none());
        assert_eq!(f.routes[&Route::Get].count, Some(1));
        let e = error(f.take_route_fault(Route::Get, 0.1));
        assert_eq!(
            (e.status.as_u16(), e.code.as_str()),
            (503, "agent_service_unavailable")
        );
    }

    #[test]
    fn an_injected_429_carries_retry_after() {
        let mut f = faults(r#"{"routes":{"list":{"status":429,"retryAfterSeconds":3}}}"#);
        let e = error(f.take_route_fault(Route::List, 0.0));
        assert_eq!((e.code.as_str(), e.retry_after), ("rate_limited", Some(3)));
    }

    #[test]
    fn a_counted_latency_fault_holds_count_calls_and_answers_nothing_itself() {
        let mut f = faults(r#"{"routes":{"deploy":{"latencyMs":20000,"count":1}}}"#);
        let held = f.take_route_fault(Route::Deploy, 0.0).unwrap();
        assert_eq!(
            held,
            Injected {
                hold: Duration::from_secs(20),
                error: None
            }
        );
        assert_eq!(f.take_route_fault(Route::Deploy, 0.0), None);
        assert_eq!(f.take_route_fault(Route::Get, 0.0), None);
        // A hold and an error together: held, then failed.
        let mut f = faults(r#"{"routes":{"get":{"latencyMs":5,"status":504}}}"#);
        let both = f.take_route_fault(Route::Get, 0.0).unwrap();
        assert_eq!(both.hold, Duration::from_millis(5));
        assert_eq!(both.error.unwrap().code, "service_timeout");
        // Only the set fields are shown back.
        let shown = serde_json::to_value(&f).unwrap();
        assert_eq!(
            shown["routes"]["get"],
            serde_json::json!({"errorRate": 1.0, "status": 504, "latencyMs": 5, "count": null})
        );
    }

    #[test]
    fn invalid_faults_are_refused() {
        let bad_status: Faults =
            serde_json::from_str(r#"{"routes":{"get":{"status":418}}}"#).unwrap();
        assert!(bad_status.validate().is_err());
        let bad_rate: Faults =
            serde_json::from_str(r#"{"routes":{"get":{"status":500,"errorRate":2}}}"#).unwrap();
        assert!(bad_rate.validate().is_err());
        assert!(serde_json::from_str::<Faults>(r#"{"routes":{"update":{"status":500}}}"#).is_err());
        assert!(serde_json::from_str::<Faults>(r#"{"latency":5}"#).is_err());
        for idle in [
            r#"{"routes":{"get":{"count":1}}}"#,
            r#"{"routes":{"get":{"latencyMs":0}}}"#,
            r#"{"routes":{"get":{"latencyMs":5,"code":"x"}}}"#,
        ] {
            let f: Faults = serde_json::from_str(idle).unwrap();
            assert!(f.validate().is_err(), "{idle}");
        }
    }

    #[test]
    fn drop_deploy_counts_down_and_timeout_holds() {
        let mut f = faults(r#"{"dropDeployResponse":{"mode":"timeout","count":1,"holdMs":5}}"#);
        let d = f.take_drop_deploy().unwrap();
        assert_eq!(
            (d.mode, d.hold),
            (DropMode::Timeout, Duration::from_millis(5))
        );
        assert!(f.take_drop_deploy().is_none());
    }

    #[test]
    fn fault_flag_parses_with_defaults() {
        let (route, fault) = parse_fault_flag("deploy:503").unwrap();
        assert_eq!(
            (route, fault.status, fault.error_rate, fault.count),
            (Route::Deploy, Some(503), 1.0, None)
        );
        let (_, fault) = parse_fault_flag("get:500:0.5:3").unwrap();
        assert_eq!((fault.error_rate, fault.count), (0.5, Some(3)));
        assert!(parse_fault_flag("get:404").is_err());
        assert!(parse_fault_flag("nope:500").is_err());
    }
}
