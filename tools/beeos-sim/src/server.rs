//! The HTTP server: the whole router (contract routes, admin routes, request ids, contract-shaped
//! 404/405) and an accept loop serving each connection with hyper. The loop is ours rather than
//! `axum::serve` because a dropped deploy answer must close its connection with no response,
//! which needs a handle on the connection from inside the handler.

use std::io;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::Request;
use axum::http::HeaderValue;
use axum::middleware::{self, Next};
use axum::response::Response;
use axum::{Extension, Router};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper_util::rt::TokioIo;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Notify;
use tokio::task::JoinSet;
use tower::ServiceExt;

use crate::app::App;
use crate::config::SimConfig;
use crate::errors::{ApiError, REQUEST_ID_HEADER, RequestId};
use crate::{admin, api};

/// Closes the connection a request arrived on, without answering it. Every request carries one
/// in its extensions.
#[derive(Clone, Debug)]
pub struct ConnectionCloser(Arc<Notify>);

impl ConnectionCloser {
    /// Closes the connection; the pending handler is dropped with it.
    pub fn close(&self) {
        // notify_one keeps a permit, so a close before the connection task waits is not lost.
        self.0.notify_one();
    }
}

/// The full router over shared state `app`.
pub fn router(app: Arc<App>) -> Router {
    api::router(app.clone())
        .merge(admin::router(app))
        .fallback(route_not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(middleware::from_fn(request_id))
}

/// Gives every request a [`RequestId`] and every response the `X-Request-Id` header.
async fn request_id(mut request: Request, next: Next) -> Response {
    let rid = RequestId::from_header(request.headers().get(REQUEST_ID_HEADER));
    request.extensions_mut().insert(rid.clone());
    let mut response = next.run(request).await;
    if let Ok(value) = HeaderValue::from_str(&rid.0) {
        response.headers_mut().insert(REQUEST_ID_HEADER, value);
    }
    response
}

async fn route_not_found(Extension(rid): Extension<RequestId>) -> Response {
    ApiError::route_not_found().into_response_with(&rid)
}

async fn method_not_allowed(Extension(rid): Extension<RequestId>) -> Response {
    ApiError::method_not_allowed().into_response_with(&rid)
}

/// Serves the simulator on `listener` until the returned future is dropped; dropping it closes
/// the listener and every open connection.
pub async fn serve(listener: TcpListener, config: SimConfig) -> io::Result<()> {
    let router = router(App::new(config));
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    connections.spawn(serve_connection(stream, router.clone()));
                }
                Err(e) => {
                    // Usually out of file descriptors: back off instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
}

async fn serve_connection(stream: TcpStream, router: Router) {
    // Small request/response pairs: without this, Nagle adds 40 ms to keep-alive calls.
    if let Err(e) = stream.set_nodelay(true) {
        tracing::debug!(error = %e, "set_nodelay failed");
    }
    let notify = Arc::new(Notify::new());
    let closer = ConnectionCloser(notify.clone());
    let service = hyper::service::service_fn(move |mut request: hyper::Request<Incoming>| {
        request.extensions_mut().insert(closer.clone());
        router.clone().oneshot(request.map(Body::new))
    });
    let connection = http1::Builder::new().serve_connection(TokioIo::new(stream), service);
    tokio::select! {
        result = connection => {
            if let Err(e) = result {
                tracing::debug!(error = %e, "connection ended with an error");
            }
        }
        () = notify.notified() => {
            tracing::debug!("connection closed without a response, on purpose");
        }
    }
}
