//! The contract routes: deploy, list, get, start, stop, restart, destroy and the deploy catalog.
//! Each handler admits the call (see `app`), does its one thing on the table under the lock and
//! renders the contract's envelope; errors carry the request id. Calls that change the table run
//! in a task of their own, so a change still happens when the client hangs up while the call is
//! held (a real server does not undo work because a socket closed).

use std::sync::Arc;
use std::time::SystemTime;

use axum::body::{Body, Bytes};
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::Response;
use axum::routing::{get, post};
use axum::{Extension, Router};

use crate::app::{App, Inner};
use crate::catalog;
use crate::deploy::{self, BODY_LIMIT};
use crate::dto::InstanceDto;
use crate::errors::{ApiError, RequestId, finish, page, success};
use crate::faults::{DeployDrop, DropMode};
use crate::route::Route;
use crate::server::ConnectionCloser;
use crate::store::{Action, Denied, Filter, Instance, Refusal};

/// `pageSize` used when the caller sends none or 0 (the contract leaves the default open).
pub const DEFAULT_PAGE_SIZE: u64 = 20;

/// Largest `pageSize` the contract allows.
pub const MAX_PAGE_SIZE: u64 = 200;

/// The contract routes.
pub fn router(app: Arc<App>) -> Router {
    Router::new()
        .route("/api/v1/instances", get(list).post(deploy))
        .route("/api/v1/instances/{id}", get(get_one).delete(destroy))
        .route("/api/v1/instances/{id}/start", post(start))
        .route("/api/v1/instances/{id}/stop", post(stop))
        .route("/api/v1/instances/{id}/restart", post(restart))
        .route("/api/v1/providers", get(providers))
        .route("/api/v1/deploy/regions", get(regions))
        .route("/api/v1/deploy/models", get(models))
        .with_state(app)
}

async fn deploy(
    State(app): State<Arc<App>>,
    Extension(rid): Extension<RequestId>,
    closer: Option<Extension<ConnectionCloser>>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    // Read first, while the client is surely there; a refusal of the body (413) is still given
    // only after admission, as the order of checks says.
    let bytes = read_body(&headers, body).await;
    let result = detached(async move {
        let caller = app.admit(Route::Deploy, &headers).await?;
        let spec = deploy::parse(&bytes?)?;
        let now = SystemTime::now();
        let mut inner = app.lock();
        let Inner {
            store,
            settings,
            faults,
            ..
        } = &mut *inner;
        let id = loop {
            let id = format!("inst_{:016x}", rand::random::<u64>());
            if !store.contains(&id) {
                break id;
            }
        };
        let instance = store.insert(Instance::deployed(id, caller.owner, spec, now, settings));
        tracing::debug!(id = %instance.id, owner = %instance.owner, "deployed");
        let response = success(StatusCode::CREATED, InstanceDto::of(instance, now));
        Ok::<_, ApiError>((response, faults.take_drop_deploy()))
    })
    .await;
    match result {
        Err(e) => e.into_response_with(&rid),
        Ok((response, None)) => response,
        Ok((_, Some(drop))) => lose_answer(drop, closer.map(|Extension(c)| c)).await,
    }
}

/// Runs `work` in a task of its own and waits for it: if the client hangs up, this future is
/// dropped but `work` goes on to the end.
async fn detached<T: Send + 'static>(
    work: impl Future<Output = Result<T, ApiError>> + Send + 'static,
) -> Result<T, ApiError> {
    tokio::spawn(work).await.unwrap_or_else(|e| {
        tracing::error!(error = %e, "a handler task failed");
        Err(ApiError::internal())
    })
}

/// The error answer for an instance the caller may not use.
fn denied(denied: Denied) -> ApiError {
    match denied {
        Denied::NotFound => ApiError::instance_not_found(),
        Denied::Forbidden => ApiError::forbidden(),
    }
}

/// Never answers: waits `drop.hold`, then closes the connection under the pending request.
async fn lose_answer(drop: DeployDrop, closer: Option<ConnectionCloser>) -> Response {
    tracing::info!(mode = ?drop.mode, "dropping the deploy response on purpose");
    if drop.mode == DropMode::Timeout {
        tokio::time::sleep(drop.hold).await;
    }
    match closer {
        Some(closer) => closer.close(),
        None => tracing::warn!("no connection to close; holding the request forever"),
    }
    // The connection task drops this future together with the connection.
    std::future::pending().await
}

/// The body, or 413 when it is larger than [`BODY_LIMIT`]; the declared length is checked first
/// so an oversized body is refused before it is read.
async fn read_body(headers: &HeaderMap, body: Body) -> Result<Bytes, ApiError> {
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > BODY_LIMIT as u64) {
        return Err(ApiError::payload_too_large(BODY_LIMIT));
    }
    axum::body::to_bytes(body, BODY_LIMIT).await.map_err(|e| {
        let inner = e.into_inner();
        if inner
            .downcast_ref::<http_body_util::LengthLimitError>()
            .is_some()
        {
            ApiError::payload_too_large(BODY_LIMIT)
        } else {
            ApiError::invalid_body("could not read the request body")
        }
    })
}

async fn list(
    State(app): State<Arc<App>>,
    Extension(rid): Extension<RequestId>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> Response {
    let result = async {
        let caller = app.admit(Route::List, &headers).await?;
        let (filter, page_no, page_size) = list_query(query.as_deref().unwrap_or(""))?;
        let now = SystemTime::now();
        let inner = app.lock();
        let (items, total) = inner.store.list(
            &caller.owner,
            &filter,
            page_no,
            page_size,
            now,
            &inner.settings,
        );
        let data: Vec<InstanceDto> = items.into_iter().map(|i| InstanceDto::of(i, now)).collect();
        // Serialized under the lock from borrowed views: cheaper than copying the page out.
        Ok(page(data, total))
    }
    .await;
    finish(result, &rid)
}

/// Parses the list query: zero-based `page`, `pageSize` 0..=200 (0 or absent = default) and the
/// filters. Unknown parameters are ignored; empty values count as absent.
fn list_query(query: &str) -> Result<(Filter, u64, u64), ApiError> {
    let mut filter = Filter::default();
    let (mut page_no, mut page_size) = (0, DEFAULT_PAGE_SIZE);
    for (key, value) in form_urlencoded::parse(query.as_bytes()) {
        if value.is_empty() {
            continue;
        }
        let value = value.into_owned();
        match &*key {
            "page" => page_no = int_param("page", &value, u64::from(i32::MAX.unsigned_abs()))?,
            "pageSize" => {
                page_size = match int_param("pageSize", &value, MAX_PAGE_SIZE)? {
                    0 => DEFAULT_PAGE_SIZE,
                    n => n,
                }
            }
            "status" => filter.status = Some(value),
            "providerId" => filter.provider_id = Some(value),
            "agentFramework" => filter.agent_framework = Some(value),
            "clusterId" => filter.cluster_id = Some(value),
            "search" => filter.search = Some(value),
            _ => {}
        }
    }
    Ok((filter, page_no, page_size))
}

fn int_param(param: &str, value: &str, max: u64) -> Result<u64, ApiError> {
    value
        .parse::<u64>()
        .ok()
        .filter(|n| *n <= max)
        .ok_or_else(|| {
            ApiError::invalid_param(param, format!("{param} must be an integer in 0..={max}"))
        })
}

async fn get_one(
    State(app): State<Arc<App>>,
    Extension(rid): Extension<RequestId>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    let result = async {
        let caller = app.admit(Route::Get, &headers).await?;
        let now = SystemTime::now();
        let inner = app.lock();
        let instance = inner
            .store
            .visible(&caller.owner, &id, now, &inner.settings)
            .map_err(denied)?;
        Ok(success(StatusCode::OK, InstanceDto::of(instance, now)))
    }
    .await;
    finish(result, &rid)
}

async fn start(
    State(app): State<Arc<App>>,
    Extension(rid): Extension<RequestId>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    lifecycle(app, Route::Start, Action::Start, &rid, headers, id).await
}

async fn stop(
    State(app): State<Arc<App>>,
    Extension(rid): Extension<RequestId>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    lifecycle(app, Route::Stop, Action::Stop, &rid, headers, id).await
}

async fn restart(
    State(app): State<Arc<App>>,
    Extension(rid): Extension<RequestId>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    lifecycle(app, Route::Restart, Action::Restart, &rid, headers, id).await
}

async fn destroy(
    State(app): State<Arc<App>>,
    Extension(rid): Extension<RequestId>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    lifecycle(app, Route::Destroy, Action::Destroy, &rid, headers, id).await
}

/// Start, stop, restart and destroy: 404 for unknown instances, 403 for another owner's, 409
/// when the state does not allow the call; destroy answers `"destroyed"`, the others the instance
/// afterwards.
async fn lifecycle(
    app: Arc<App>,
    route: Route,
    action: Action,
    rid: &RequestId,
    headers: HeaderMap,
    id: String,
) -> Response {
    let result = detached(async move {
        let caller = app.admit(route, &headers).await?;
        let now = SystemTime::now();
        let mut inner = app.lock();
        let Inner {
            store, settings, ..
        } = &mut *inner;
        let instance = store
            .visible_mut(&caller.owner, &id, now, settings)
            .map_err(denied)?;
        instance.apply(action, now, settings).map_err(refused)?;
        tracing::debug!(id, ?action, "lifecycle call accepted");
        Ok(match action {
            Action::Destroy => success(StatusCode::OK, "destroyed"),
            _ => success(StatusCode::OK, InstanceDto::of(instance, now)),
        })
    })
    .await;
    finish(result, rid)
}

/// The error answer for a lifecycle call the instance's state does not allow.
pub fn refused(refusal: Refusal) -> ApiError {
    match refusal {
        Refusal::Conflict(message) => ApiError::conflict(message),
        Refusal::Gone => ApiError::instance_not_found(),
    }
}

async fn providers(
    State(app): State<Arc<App>>,
    Extension(rid): Extension<RequestId>,
    headers: HeaderMap,
) -> Response {
    let result = async {
        app.admit(Route::Providers, &headers).await?;
        let data: Vec<_> = catalog::PROVIDERS
            .iter()
            .map(catalog::Provider::to_json)
            .collect();
        Ok(success(StatusCode::OK, data))
    }
    .await;
    finish(result, &rid)
}

async fn regions(
    State(app): State<Arc<App>>,
    Extension(rid): Extension<RequestId>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> Response {
    let result = async {
        app.admit(Route::Regions, &headers).await?;
        let provider = match query_value(query.as_deref(), "providerId") {
            None => None,
            Some(id) => Some(
                catalog::provider(&id)
                    .ok_or_else(|| ApiError::invalid_param("providerId", "unknown providerId"))?,
            ),
        };
        Ok(success(StatusCode::OK, catalog::regions_json(provider)))
    }
    .await;
    finish(result, &rid)
}

async fn models(
    State(app): State<Arc<App>>,
    Extension(rid): Extension<RequestId>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> Response {
    let result = async {
        app.admit(Route::Models, &headers).await?;
        let framework = query_value(query.as_deref(), "agentFramework");
        Ok(success(
            StatusCode::OK,
            catalog::models_json(framework.as_deref()),
        ))
    }
    .await;
    finish(result, &rid)
}

/// The first non-empty value of `key` in a query string.
fn query_value(query: Option<&str>, key: &str) -> Option<String> {
    form_urlencoded::parse(query.unwrap_or("").as_bytes())
        .find(|(k, v)| k == key && !v.is_empty())
        .map(|(_, v)| v.into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn list_query_defaults_and_limits() {
        let (_, p, s) = list_query("").unwrap();
        assert_eq!((p, s), (0, DEFAULT_PAGE_SIZE));
        let (_, p, s) = list_query("page=3&pageSize=200").unwrap();
        assert_eq!((p, s), (3, 200));
        assert_eq!(list_query("pageSize=0").unwrap().2, DEFAULT_PAGE_SIZE);
        for bad in ["pageSize=201", "pageSize=-1", "pageSize=x"] {
            assert_eq!(
                list_query(bad).unwrap_err().param.as_deref(),
                Some("pageSize"),
                "{bad}"
            );
        }
        for bad in ["page=-1", "page=1.5", "page=3000000000"] {
            assert_eq!(
                list_query(bad).unwrap_err().param.as_deref(),
                Some("page"),
                "{bad}"
            );
        }
    }

    #[test]
    fn list_query_reads_filters_and_decodes_them() {
        let (f, _, _) =
            list_query("status=running&providerId=default&search=my%20agent&clusterId=&x=1")
                .unwrap();
        assert_eq!(f.status.as_deref(), Some("running"));
        assert_eq!(f.provider_id.as_deref(), Some("default"));
        assert_eq!(f.search.as_deref(), Some("my agent"));
        assert_eq!(f.cluster_id, None);
    }
}
