//! The test-only admin API under `/_sim/` (outside the contract, no authentication): reset,
//! faults, settings, call counters, the whole instance table (expired instances included), and
//! stop, start and destroy behind the operator's back — by the lifecycle's rules, as the owner
//! would, but never counted as API calls, rate limited or faulted.

use std::sync::Arc;
use std::time::SystemTime;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::{Extension, Json, Router};
use serde_json::{Map, Value, json};

use crate::api::refused;
use crate::app::{App, Inner};
use crate::config::SettingsPatch;
use crate::dto::AdminInstance;
use crate::errors::{ApiError, RequestId, finish, no_content};
use crate::faults::Faults;
use crate::route::Route;
use crate::store::{Action, retention};

/// The admin routes.
pub fn router(app: Arc<App>) -> Router {
    Router::new()
        .route("/_sim/reset", post(reset))
        .route("/_sim/faults", get(get_faults).put(put_faults))
        .route("/_sim/settings", get(get_settings).put(put_settings))
        .route("/_sim/calls", get(calls))
        .route("/_sim/instances", get(instances))
        .route("/_sim/instances/{id}", delete(destroy))
        .route("/_sim/instances/{id}/stop", post(stop))
        .route("/_sim/instances/{id}/start", post(start))
        .with_state(app)
}

/// Empties the table, the call counters, the faults and the rate-limit buckets; settings stay.
async fn reset(State(app): State<Arc<App>>) -> Response {
    let mut inner = app.lock();
    inner.store.clear();
    inner.calls.clear();
    inner.calls_by_token.clear();
    inner.faults = Faults::default();
    inner.buckets.clear();
    tracing::info!("reset");
    no_content()
}

async fn get_faults(State(app): State<Arc<App>>) -> Response {
    Json(app.lock().faults.clone()).into_response()
}

/// Replaces all faults; answers with them.
async fn put_faults(
    State(app): State<Arc<App>>,
    Extension(rid): Extension<RequestId>,
    body: Bytes,
) -> Response {
    let parsed = serde_json::from_slice::<Faults>(&body)
        .map_err(|e| e.to_string())
        .and_then(|f| f.validate().map(|()| f));
    match parsed {
        Ok(faults) => {
            tracing::info!(?faults, "faults replaced");
            app.lock().faults = faults.clone();
            Json(faults).into_response()
        }
        Err(message) => ApiError::invalid_body(message).into_response_with(&rid),
    }
}

async fn get_settings(State(app): State<Arc<App>>) -> Response {
    Json(app.lock().settings.clone()).into_response()
}

/// Applies a partial settings update; answers with the full settings.
async fn put_settings(
    State(app): State<Arc<App>>,
    Extension(rid): Extension<RequestId>,
    body: Bytes,
) -> Response {
    let mut inner = app.lock();
    let updated = serde_json::from_slice::<SettingsPatch>(&body)
        .map_err(|e| e.to_string())
        .and_then(|patch| patch.applied_to(&inner.settings));
    match updated {
        Ok(settings) => {
            tracing::info!(?settings, "settings changed");
            inner.settings = settings.clone();
            Json(settings).into_response()
        }
        Err(message) => ApiError::invalid_body(message).into_response_with(&rid),
    }
}

/// `{"total": N, "routes": {"deploy": n, …}}` with every route listed.
async fn calls(State(app): State<Arc<App>>) -> Response {
    let inner = app.lock();
    let routes: Map<String, Value> = Route::ALL
        .into_iter()
        .map(|r| {
            (
                r.key().to_owned(),
                json!(inner.calls.get(&r).copied().unwrap_or(0)),
            )
        })
        .collect();
    let total: u64 = inner.calls.values().sum();
    let mut by_token: Map<String, Value> = Map::new();
    for ((token, route), count) in &inner.calls_by_token {
        let entry = by_token
            .entry(token.clone())
            .or_insert_with(|| Value::Object(Map::new()));
        if let Some(routes) = entry.as_object_mut() {
            routes.insert(route.key().to_owned(), json!(count));
        }
    }
    Json(json!({ "total": total, "routes": routes, "byToken": by_token })).into_response()
}

/// `{"instances": [...]}`: every instance ever deployed, in deploy order.
async fn instances(State(app): State<Arc<App>>) -> Response {
    let now = SystemTime::now();
    let inner = app.lock();
    let keep = retention(&inner.settings);
    let rows: Vec<AdminInstance> = inner
        .store
        .all()
        .iter()
        .map(|i| AdminInstance::of(i, now, i.expired(now, keep)))
        .collect();
    Json(json!({ "instances": rows })).into_response()
}

async fn stop(
    State(app): State<Arc<App>>,
    Extension(rid): Extension<RequestId>,
    Path(id): Path<String>,
) -> Response {
    act(&app, Action::Stop, &rid, &id)
}

async fn start(
    State(app): State<Arc<App>>,
    Extension(rid): Extension<RequestId>,
    Path(id): Path<String>,
) -> Response {
    act(&app, Action::Start, &rid, &id)
}

async fn destroy(
    State(app): State<Arc<App>>,
    Extension(rid): Extension<RequestId>,
    Path(id): Path<String>,
) -> Response {
    act(&app, Action::Destroy, &rid, &id)
}

/// Applies `action` to instance `id` whoever owns it, with the contract's 404 and 409; answers
/// with the instance's admin row afterwards.
fn act(app: &App, action: Action, rid: &RequestId, id: &str) -> Response {
    let now = SystemTime::now();
    let mut inner = app.lock();
    let Inner {
        store, settings, ..
    } = &mut *inner;
    let result = store
        .any_mut(id, now, settings)
        .ok_or_else(ApiError::instance_not_found)
        .and_then(|instance| {
            instance.apply(action, now, settings).map_err(refused)?;
            tracing::info!(id, ?action, "admin changed an instance");
            Ok((
                StatusCode::OK,
                Json(AdminInstance::of(instance, now, false)),
            )
                .into_response())
        });
    finish(result, rid)
}
