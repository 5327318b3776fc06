//! Errors of the BeeOS client: one enum, built from the HTTP status first and the BeeOS error
//! envelope second, that knows its class (retryable, transition, permanent), its `Retry-After` and
//! a static CamelCase reason for conditions and metric labels.
//!
//! Classification is pure (status, headers, body in; error out) so it is unit-tested without a
//! server. Errors must never carry the credential or a request body.

use std::collections::BTreeMap;
use std::fmt;
use std::time::{Duration, SystemTime};

use reqwest::StatusCode;
use reqwest::header::{HeaderMap, RETRY_AFTER};
use serde_json::Value;

/// Longest server-provided text kept in an error (a non-JSON body, e.g. a proxy's HTML page).
const MAX_MESSAGE_CHARS: usize = 256;

/// The client call that failed; a label for errors, spans and metrics.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Operation {
    /// `POST /api/v1/instances`.
    Deploy,
    /// `GET /api/v1/instances/{id}`.
    Get,
    /// `GET /api/v1/instances`.
    List,
    /// `POST /api/v1/instances/{id}/start`.
    Start,
    /// `POST /api/v1/instances/{id}/stop`.
    Stop,
    /// `POST /api/v1/instances/{id}/restart`.
    Restart,
    /// `DELETE /api/v1/instances/{id}`.
    Destroy,
    /// `GET /api/v1/providers`.
    Providers,
    /// `GET /api/v1/deploy/regions`.
    Regions,
    /// `GET /api/v1/deploy/models`.
    Models,
}

impl Operation {
    /// The lower-case label, e.g. `deploy`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Deploy => "deploy",
            Self::Get => "get",
            Self::List => "list",
            Self::Start => "start",
            Self::Stop => "stop",
            Self::Restart => "restart",
            Self::Destroy => "destroy",
            Self::Providers => "providers",
            Self::Regions => "regions",
            Self::Models => "models",
        }
    }
}

impl fmt::Display for Operation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How a caller should react to an error.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ErrorClass {
    /// Transient (429, 5xx, timeout, transport): back off (honour `retry_after`) and retry.
    Retryable,
    /// The instance's state does not allow the call yet (409): retry after the transition.
    Transition,
    /// Retrying the same call will fail the same way (400, 401, 403, 404, 413, decode, input).
    Permanent,
}

/// An error answer from BeeOS: the HTTP status plus what its error envelope said.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ApiError {
    /// The call that failed.
    pub operation: Operation,
    /// HTTP status code.
    pub status: u16,
    /// Stable BeeOS error code, e.g. `invalid_param`; `None` when the body had none.
    pub code: Option<String>,
    /// Human-readable message (for display only, never branch on it).
    pub message: Option<String>,
    /// Correlation id, from the envelope or the `X-Request-Id` header.
    pub request_id: Option<String>,
    /// Offending field for `invalid_param` / `missing_param`.
    pub param: Option<String>,
    /// RFC 9457-style type slug, e.g. `invalid_request_error`.
    pub error_type: Option<String>,
    /// String hints from `metadata` (or the older `details`).
    pub metadata: BTreeMap<String, String>,
    /// Parsed `Retry-After` header, when present and valid.
    pub retry_after: Option<Duration>,
}

impl fmt::Display for ApiError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "HTTP {}", self.status)?;
        if let Some(code) = &self.code {
            write!(f, " {code}")?;
        }
        if let Some(param) = &self.param {
            write!(f, " (param {param})")?;
        }
        if let Some(message) = &self.message {
            write!(f, ": {message}")?;
        }
        if let Some(request_id) = &self.request_id {
            write!(f, " [request_id {request_id}]")?;
        }
        Ok(())
    }
}

/// An error of a BeeOS client call.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// 400 (or 422): the request was malformed or failed validation; `param` names the field.
    #[error("BeeOS {op} rejected the request: {api}", op = .0.operation, api = .0)]
    InvalidRequest(Box<ApiError>),
    /// 401: the credential is missing, unknown or expired.
    #[error("BeeOS {op} refused the credential: {api}", op = .0.operation, api = .0)]
    Unauthorized(Box<ApiError>),
    /// 403: the caller may not do this (e.g. a resource of another owner, a quota).
    #[error("BeeOS {op} forbidden: {api}", op = .0.operation, api = .0)]
    Forbidden(Box<ApiError>),
    /// 404: no such instance for this credential (keyed on the status; the code is often
    /// `agent_not_found`).
    #[error("BeeOS {op} found no such resource: {api}", op = .0.operation, api = .0)]
    NotFound(Box<ApiError>),
    /// 409: the instance's current state does not allow the call.
    #[error("BeeOS {op} conflicts with the current state: {api}", op = .0.operation, api = .0)]
    Conflict(Box<ApiError>),
    /// 413: the body is over BeeOS's 64 KiB limit.
    #[error("BeeOS {op} payload too large: {api}", op = .0.operation, api = .0)]
    PayloadTooLarge(Box<ApiError>),
    /// 429: over BeeOS's quota; `retry_after` says when to come back, when BeeOS said so.
    #[error("BeeOS {op} rate limited{after}: {api}", op = .api.operation, after = retry_after_label(.retry_after))]
    RateLimited {
        /// Parsed `Retry-After`.
        retry_after: Option<Duration>,
        /// The answer.
        api: Box<ApiError>,
    },
    /// 5xx: a server-side fault.
    #[error("BeeOS {op} server error: {api}", op = .0.operation, api = .0)]
    Server(Box<ApiError>),
    /// Any other non-success status (e.g. a redirect or 405): permanent unless it is 408.
    #[error("BeeOS {op} unexpected answer: {api}", op = .0.operation, api = .0)]
    UnexpectedStatus(Box<ApiError>),
    /// No complete answer within the per-request timeout. The call may have taken effect.
    #[error("BeeOS {operation} timed out")]
    Timeout {
        /// The call that failed.
        operation: Operation,
    },
    /// The connection failed (refused, reset, TLS, …).
    #[error("BeeOS {operation} transport error: {detail}")]
    Transport {
        /// The call that failed.
        operation: Operation,
        /// Whether the failure was in connecting, so the request was never sent.
        connect: bool,
        /// The error and its causes, joined.
        detail: String,
        /// The underlying error.
        #[source]
        source: reqwest::Error,
    },
    /// A success answer whose body was not what the contract describes.
    #[error("BeeOS {operation} answered HTTP {status} with an undecodable body: {detail}")]
    Decode {
        /// The call that failed.
        operation: Operation,
        /// HTTP status code of the answer.
        status: u16,
        /// Correlation id from the `X-Request-Id` header.
        request_id: Option<String>,
        /// What was wrong.
        detail: String,
    },
    /// The caller's input cannot make a valid request (e.g. an empty instance id); nothing was sent.
    #[error("invalid input for BeeOS {operation}: {reason}")]
    InvalidInput {
        /// The call that was not made.
        operation: Operation,
        /// What is wrong.
        reason: String,
    },
    /// The call was not sent: its deadline passed while it waited for the client-side rate
    /// limit. It cannot have taken effect.
    #[error("BeeOS {operation} not sent: its deadline passed while it waited for the rate limit")]
    DeadlinePassed {
        /// The call that was not made.
        operation: Operation,
    },
    /// The client cannot be built (base URL, credential, TLS setup).
    #[error("invalid BeeOS client configuration: {reason}")]
    Config {
        /// What is wrong.
        reason: String,
    },
}

fn retry_after_label(retry_after: &Option<Duration>) -> String {
    retry_after.map_or_else(String::new, |after| {
        format!(" (retry after {}s)", after.as_secs_f64())
    })
}

impl Error {
    /// Builds the error for a non-success answer: the status decides the variant, the envelope
    /// (parsed leniently; non-JSON bodies tolerated) fills in the details.
    pub(crate) fn from_response(
        operation: Operation,
        status: StatusCode,
        headers: &HeaderMap,
        body: &[u8],
        now: SystemTime,
    ) -> Self {
        let mut api = parse_envelope(operation, status, body);
        if api.request_id.is_none() {
            api.request_id = header_request_id(headers);
        }
        api.retry_after = headers
            .get(RETRY_AFTER)
            .and_then(|value| value.to_str().ok())
            .and_then(|value| parse_retry_after(value, now));
        let api = Box::new(api);
        match status.as_u16() {
            400 | 422 => Self::InvalidRequest(api),
            401 => Self::Unauthorized(api),
            403 => Self::Forbidden(api),
            404 => Self::NotFound(api),
            409 => Self::Conflict(api),
            413 => Self::PayloadTooLarge(api),
            429 => Self::RateLimited {
                retry_after: api.retry_after,
                api,
            },
            500..=599 => Self::Server(api),
            _ => Self::UnexpectedStatus(api),
        }
    }

    /// Maps a reqwest failure (sending, or reading the body) to `Timeout` or `Transport`.
    pub(crate) fn from_reqwest(operation: Operation, source: reqwest::Error) -> Self {
        if source.is_timeout() {
            return Self::Timeout { operation };
        }
        let mut detail = source.to_string();
        let mut cause = std::error::Error::source(&source);
        while let Some(inner) = cause {
            detail.push_str(": ");
            detail.push_str(&inner.to_string());
            cause = inner.source();
        }
        Self::Transport {
            operation,
            connect: source.is_connect(),
            detail,
            source,
        }
    }

    /// The BeeOS answer behind this error, for errors that have one.
    pub fn api(&self) -> Option<&ApiError> {
        match self {
            Self::InvalidRequest(api)
            | Self::Unauthorized(api)
            | Self::Forbidden(api)
            | Self::NotFound(api)
            | Self::Conflict(api)
            | Self::PayloadTooLarge(api)
            | Self::RateLimited { api, .. }
            | Self::Server(api)
            | Self::UnexpectedStatus(api) => Some(api),
            _ => None,
        }
    }

    /// The call that failed (`None` only for [`Error::Config`]).
    pub fn operation(&self) -> Option<Operation> {
        match self {
            Self::Timeout { operation }
            | Self::Transport { operation, .. }
            | Self::Decode { operation, .. }
            | Self::DeadlinePassed { operation }
            | Self::InvalidInput { operation, .. } => Some(*operation),
            Self::Config { .. } => None,
            other => other.api().map(|api| api.operation),
        }
    }

    /// The HTTP status, when BeeOS answered.
    pub fn status(&self) -> Option<u16> {
        match self {
            Self::Decode { status, .. } => Some(*status),
            other => other.api().map(|api| api.status),
        }
    }

    /// The BeeOS error code, e.g. `invalid_param`.
    pub fn code(&self) -> Option<&str> {
        self.api().and_then(|api| api.code.as_deref())
    }

    /// The BeeOS error message (display only).
    pub fn message(&self) -> Option<&str> {
        self.api().and_then(|api| api.message.as_deref())
    }

    /// The offending field of a validation error.
    pub fn param(&self) -> Option<&str> {
        self.api().and_then(|api| api.param.as_deref())
    }

    /// The BeeOS request id, to quote when reporting a problem.
    pub fn request_id(&self) -> Option<&str> {
        match self {
            Self::Decode { request_id, .. } => request_id.as_deref(),
            other => other.api().and_then(|api| api.request_id.as_deref()),
        }
    }

    /// How long BeeOS asked us to wait (`Retry-After` on 429, or on a 5xx that sent one).
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            Self::RateLimited { retry_after, .. } => *retry_after,
            other => other.api().and_then(|api| api.retry_after),
        }
    }

    /// Whether the instance does not exist for this credential (404).
    pub fn is_not_found(&self) -> bool {
        matches!(self, Self::NotFound(_))
    }

    /// Whether the credential was refused (401): missing, unknown, revoked or expired.
    pub fn is_unauthorized(&self) -> bool {
        matches!(self, Self::Unauthorized(_))
    }

    /// Whether the caller may not touch the resource (403: another owner's instance, or a
    /// credential without the right). Never "gone".
    pub fn is_forbidden(&self) -> bool {
        matches!(self, Self::Forbidden(_))
    }

    /// Whether the instance's state did not allow the call (409).
    pub fn is_conflict(&self) -> bool {
        matches!(self, Self::Conflict(_))
    }

    /// Whether the same call may succeed later without any change: 429, 5xx, 408, timeout,
    /// transport.
    pub fn is_retryable(&self) -> bool {
        self.class() == ErrorClass::Retryable
    }

    /// How a caller should react.
    pub fn class(&self) -> ErrorClass {
        match self {
            Self::RateLimited { .. }
            | Self::Server(_)
            | Self::Timeout { .. }
            | Self::Transport { .. }
            | Self::DeadlinePassed { .. } => ErrorClass::Retryable,
            Self::UnexpectedStatus(api) if api.status == 408 => ErrorClass::Retryable,
            Self::Conflict(_) => ErrorClass::Transition,
            Self::InvalidRequest(_)
            | Self::Unauthorized(_)
            | Self::Forbidden(_)
            | Self::NotFound(_)
            | Self::PayloadTooLarge(_)
            | Self::UnexpectedStatus(_)
            | Self::Decode { .. }
            | Self::InvalidInput { .. }
            | Self::Config { .. } => ErrorClass::Permanent,
        }
    }

    /// Whether the call may have taken effect on the server although it failed here: a timeout,
    /// a transport failure after connecting, a 5xx, or an undecodable success. For a deploy this
    /// means "an instance may exist: look for it before deploying again".
    pub fn may_have_taken_effect(&self) -> bool {
        match self {
            Self::Timeout { .. } | Self::Server(_) => true,
            Self::Transport { connect, .. } => !connect,
            Self::Decode { status, .. } => (200..300).contains(status),
            _ => false,
        }
    }

    /// A static CamelCase reason for conditions and metric labels, e.g. `BeeosNotFound`.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::InvalidRequest(_) => "BeeosInvalidRequest",
            Self::Unauthorized(_) => "BeeosUnauthorized",
            Self::Forbidden(_) => "BeeosForbidden",
            Self::NotFound(_) => "BeeosNotFound",
            Self::Conflict(_) => "BeeosConflict",
            Self::PayloadTooLarge(_) => "BeeosPayloadTooLarge",
            Self::RateLimited { .. } => "BeeosRateLimited",
            Self::Server(_) => "BeeosServerError",
            Self::UnexpectedStatus(_) => "BeeosUnexpectedStatus",
            Self::Timeout { .. } => "BeeosTimeout",
            Self::Transport { .. } => "BeeosTransportError",
            Self::Decode { .. } => "BeeosDecodeError",
            Self::InvalidInput { .. } => "BeeosInvalidInput",
            Self::DeadlinePassed { .. } => "BeeosDeadlinePassed",
            Self::Config { .. } => "BeeosClientConfig",
        }
    }

    /// A short label of the outcome for metrics: the HTTP status when BeeOS answered, else
    /// `timeout`, `transport`, `decode`, `not_sent` or `invalid_input`.
    pub fn code_label(&self) -> String {
        match self {
            Self::Timeout { .. } => "timeout".to_owned(),
            Self::Transport { .. } => "transport".to_owned(),
            Self::DeadlinePassed { .. } | Self::Config { .. } => "not_sent".to_owned(),
            Self::InvalidInput { .. } => "invalid_input".to_owned(),
            other => other
                .status()
                .map_or_else(|| "decode".to_owned(), |status| status.to_string()),
        }
    }

    /// Replaces the credential in server-provided text (see [`super::Credential`]).
    pub(crate) fn scrubbed(mut self, scrub: impl Fn(&str) -> String) -> Self {
        let api = match &mut self {
            Self::InvalidRequest(api)
            | Self::Unauthorized(api)
            | Self::Forbidden(api)
            | Self::NotFound(api)
            | Self::Conflict(api)
            | Self::PayloadTooLarge(api)
            | Self::RateLimited { api, .. }
            | Self::Server(api)
            | Self::UnexpectedStatus(api) => api,
            _ => return self,
        };
        for text in [
            &mut api.code,
            &mut api.message,
            &mut api.param,
            &mut api.request_id,
            &mut api.error_type,
        ]
        .into_iter()
        .flatten()
        {
            *text = scrub(text);
        }
        for value in api.metadata.values_mut() {
            *value = scrub(value);
        }
        self
    }
}

/// Parses a `Retry-After` value: delay seconds, or an HTTP date (a date in the past means now).
///
/// `now` is an argument so the date form is testable; invalid values give `None`.
pub fn parse_retry_after(value: &str, now: SystemTime) -> Option<Duration> {
    let value = value.trim();
    if let Ok(seconds) = value.parse::<u64>() {
        return Some(Duration::from_secs(seconds));
    }
    let at = httpdate::parse_http_date(value).ok()?;
    Some(at.duration_since(now).unwrap_or(Duration::ZERO))
}

fn header_request_id(headers: &HeaderMap) -> Option<String> {
    headers
        .get("x-request-id")
        .and_then(|value| value.to_str().ok())
        .map(str::trim)
        .filter(|value| !value.is_empty())
        .map(str::to_owned)
}

/// Reads what it can from an error body: `{success:false, error:{…}}` per the contract, the bare
/// error object, `details` instead of `param`/`metadata`, or plain text.
fn parse_envelope(operation: Operation, status: StatusCode, body: &[u8]) -> ApiError {
    let mut api = ApiError {
        operation,
        status: status.as_u16(),
        code: None,
        message: None,
        request_id: None,
        param: None,
        error_type: None,
        metadata: BTreeMap::new(),
        retry_after: None,
    };
    let Ok(value) = serde_json::from_slice::<Value>(body) else {
        api.message = text_snippet(&String::from_utf8_lossy(body));
        return api;
    };
    let error = match value.get("error") {
        Some(Value::Object(_)) => &value["error"],
        // Some gateways answer `{"error": "text"}`.
        Some(Value::String(text)) => {
            api.message = text_snippet(text);
            return api;
        }
        _ => &value,
    };
    let text = |key: &str| {
        error
            .get(key)
            .and_then(Value::as_str)
            .and_then(text_snippet)
    };
    api.code = text("code");
    api.message = text("message");
    api.request_id = text("request_id").or_else(|| text("requestId"));
    api.param = text("param");
    api.error_type = text("type");
    for key in ["details", "metadata"] {
        if let Some(Value::Object(map)) = error.get(key) {
            for (name, value) in map {
                let value = match value {
                    Value::String(text) => text.clone(),
                    other => other.to_string(),
                };
                api.metadata.insert(name.clone(), value);
            }
        }
    }
    if api.param.is_none() {
        api.param = api
            .metadata
            .get("param")
            .or_else(|| api.metadata.get("field"))
            .cloned();
    }
    api
}

/// Trimmed, bounded text; `None` when empty.
fn text_snippet(text: &str) -> Option<String> {
    let text = text.trim();
    if text.is_empty() {
        return None;
    }
    let mut snippet: String = text.chars().take(MAX_MESSAGE_CHARS).collect();
    if snippet.len() < text.len() {
        snippet.push('…');
    }
    Some(snippet)
}

#[cfg(test)]
mod tests {
    use reqwest::header::HeaderValue;
    use serde_json::json;

    use super::*;

    fn error(status: u16, body: Value) -> Error {
        error_with_headers(status, body, HeaderMap::new())
    }

    fn error_with_headers(status: u16, body: Value, headers: HeaderMap) -> Error {
        Error::from_response(
            Operation::Deploy,
            StatusCode::from_u16(status).unwrap(),
            &headers,
            body.to_string().as_bytes(),
            SystemTime::UNIX_EPOCH,
        )
    }

    fn envelope(code: &str, message: &str) -> Value {
        json!({"success": false, "error": {"code": code, "message": message, "request_id": "req_1"}})
    }

    #[test]
    fn statuses_map_to_variants_classes_and_reasons() {
        let cases = [
            (
                400,
                "invalid_param",
                ErrorClass::Permanent,
                "BeeosInvalidRequest",
            ),
            (
                401,
                "invalid_token",
                ErrorClass::Permanent,
                "BeeosUnauthorized",
            ),
            (403, "forbidden", ErrorClass::Permanent, "BeeosForbidden"),
            (
                404,
                "agent_not_found",
                ErrorClass::Permanent,
                "BeeosNotFound",
            ),
            (409, "conflict", ErrorClass::Transition, "BeeosConflict"),
            (
                413,
                "payload_too_large",
                ErrorClass::Permanent,
                "BeeosPayloadTooLarge",
            ),
            (
                429,
                "rate_limited",
                ErrorClass::Retryable,
                "BeeosRateLimited",
            ),
            (
                500,
                "internal_error",
                ErrorClass::Retryable,
                "BeeosServerError",
            ),
            (
                503,
                "auth_transient",
                ErrorClass::Retryable,
                "BeeosServerError",
            ),
            (
                504,
                "service_timeout",
                ErrorClass::Retryable,
                "BeeosServerError",
            ),
            (
                405,
                "method_not_allowed",
                ErrorClass::Permanent,
                "BeeosUnexpectedStatus",
            ),
            (
                408,
                "request_timeout",
                ErrorClass::Retryable,
                "BeeosUnexpectedStatus",
            ),
        ];
        for (status, code, class, reason) in cases {
            let err = error(status, envelope(code, "msg"));
            assert_eq!(err.class(), class, "{status}");
            assert_eq!(err.reason(), reason, "{status}");
            assert_eq!(
                err.is_retryable(),
                class == ErrorClass::Retryable,
                "{status}"
            );
            assert_eq!(err.status(), Some(status));
            assert_eq!(err.code(), Some(code));
            assert_eq!(err.message(), Some("msg"));
            assert_eq!(err.request_id(), Some("req_1"));
            assert_eq!(err.operation(), Some(Operation::Deploy));
        }
    }

    #[test]
    fn not_found_is_keyed_on_the_status_not_the_code() {
        let err = error(404, envelope("agent_not_found", "agent not found"));
        assert!(err.is_not_found());
        let odd = error(404, envelope("something_else", "gone"));
        assert!(odd.is_not_found());
        let not_404 = error(400, envelope("agent_not_found", "??"));
        assert!(!not_404.is_not_found());
    }

    #[test]
    fn validation_errors_carry_code_param_type_and_metadata() {
        let err = error(
            400,
            json!({"success": false, "error": {
                "type": "invalid_request_error", "code": "missing_param",
                "message": "variantId or agentFramework is required", "param": "variantId",
                "request_id": "req_9", "metadata": {"hint": "send one"},
            }}),
        );
        let Error::InvalidRequest(api) = &err else {
            panic!("{err:?}")
        };
        assert_eq!(api.code.as_deref(), Some("missing_param"));
        assert_eq!(api.param.as_deref(), Some("variantId"));
        assert_eq!(api.error_type.as_deref(), Some("invalid_request_error"));
        assert_eq!(
            api.metadata.get("hint").map(String::as_str),
            Some("send one")
        );
        assert_eq!(err.param(), Some("variantId"));
        let shown = err.to_string();
        assert!(shown.contains("deploy"), "{shown}");
        assert!(shown.contains("missing_param"), "{shown}");
        assert!(shown.contains("variantId"), "{shown}");
        assert!(shown.contains("req_9"), "{shown}");
    }

    #[test]
    fn details_instead_of_param_and_metadata_is_tolerated() {
        let err = error(
            400,
            json!({"success": false, "error": {
                "code": "invalid_param", "message": "bad", "details": {"param": "name", "max": 128},
            }}),
        );
        assert_eq!(err.param(), Some("name"));
        assert_eq!(
            err.api().unwrap().metadata.get("max").map(String::as_str),
            Some("128")
        );
        let empty_details = error(
            400,
            json!({"success": false, "error": {"code": "invalid_body", "message": "m", "details": {}}}),
        );
        assert_eq!(empty_details.code(), Some("invalid_body"));
        assert_eq!(empty_details.param(), None);
    }

    #[test]
    fn a_bare_error_object_or_an_error_string_is_tolerated() {
        let bare = error(409, json!({"code": "conflict", "message": "busy"}));
        assert!(bare.is_conflict());
        assert_eq!(bare.code(), Some("conflict"));
        let text = error(500, json!({"error": "upstream exploded"}));
        assert_eq!(text.message(), Some("upstream exploded"));
        assert_eq!(text.code(), None);
    }

    #[test]
    fn non_json_bodies_still_classify_by_status() {
        let err = Error::from_response(
            Operation::Get,
            StatusCode::BAD_GATEWAY,
            &HeaderMap::new(),
            b"<html><body>502 Bad Gateway</body></html>",
            SystemTime::UNIX_EPOCH,
        );
        assert!(err.is_retryable());
        assert_eq!(err.code(), None);
        assert!(err.message().unwrap().contains("502 Bad Gateway"));
        let empty = Error::from_response(
            Operation::Get,
            StatusCode::NOT_FOUND,
            &HeaderMap::new(),
            b"",
            SystemTime::UNIX_EPOCH,
        );
        assert!(empty.is_not_found());
        assert_eq!(empty.message(), None);
    }

    #[test]
    fn long_bodies_are_cut() {
        let long = "x".repeat(10_000);
        let err = Error::from_response(
            Operation::Get,
            StatusCode::INTERNAL_SERVER_ERROR,
            &HeaderMap::new(),
            long.as_bytes(),
            SystemTime::UNIX_EPOCH,
        );
        assert!(err.message().unwrap().chars().count() <= MAX_MESSAGE_CHARS + 1);
    }

    #[test]
    fn the_request_id_header_fills_in_when_the_envelope_has_none() {
        let mut headers = HeaderMap::new();
        headers.insert("x-request-id", HeaderValue::from_static("req_header"));
        let err = error_with_headers(
            500,
            json!({"success": false, "error": {"code": "internal_error", "message": "m"}}),
            headers.clone(),
        );
        assert_eq!(err.request_id(), Some("req_header"));
        let envelope_wins = error_with_headers(500, envelope("internal_error", "m"), headers);
        assert_eq!(envelope_wins.request_id(), Some("req_1"));
    }

    #[test]
    fn rate_limited_carries_retry_after_in_seconds_or_as_a_date() {
        let mut headers = HeaderMap::new();
        headers.insert(RETRY_AFTER, HeaderValue::from_static("7"));
        let err = error_with_headers(429, envelope("rate_limited", "slow down"), headers);
        assert!(matches!(
            err,
            Error::RateLimited {
                retry_after: Some(d),
                ..
            } if d == Duration::from_secs(7)
        ));
        assert_eq!(err.retry_after(), Some(Duration::from_secs(7)));
        assert!(err.to_string().contains("retry after 7s"), "{err}");

        let missing = error(429, envelope("rate_limited", "slow down"));
        assert_eq!(missing.retry_after(), None);
        assert!(missing.is_retryable());

        let mut headers = HeaderMap::new();
        headers.insert(RETRY_AFTER, HeaderValue::from_static("120"));
        let unavailable = error_with_headers(503, envelope("agent_offline", "m"), headers);
        assert_eq!(unavailable.retry_after(), Some(Duration::from_secs(120)));
    }

    #[test]
    fn retry_after_parses_every_form() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(784_111_777);
        assert_eq!(parse_retry_after("0", now), Some(Duration::ZERO));
        assert_eq!(
            parse_retry_after(" 30 ", now),
            Some(Duration::from_secs(30))
        );
        // 1994-11-06T08:49:37Z is `now`; ten seconds later in each HTTP date format.
        for date in [
            "Sun, 06 Nov 1994 08:49:47 GMT",
            "Sunday, 06-Nov-94 08:49:47 GMT",
            "Sun Nov  6 08:49:47 1994",
        ] {
            assert_eq!(
                parse_retry_after(date, now),
                Some(Duration::from_secs(10)),
                "{date}"
            );
        }
        assert_eq!(
            parse_retry_after("Sun, 06 Nov 1994 08:00:00 GMT", now),
            Some(Duration::ZERO)
        );
        for bad in ["", "-1", "1.5", "soon", "Sun, 99 Nov 1994 08:49:37 GMT"] {
            assert_eq!(parse_retry_after(bad, now), None, "{bad:?}");
        }
    }

    #[test]
    fn may_have_taken_effect_only_when_the_outcome_is_unknown() {
        assert!(error(500, envelope("internal_error", "m")).may_have_taken_effect());
        assert!(error(504, envelope("service_timeout", "m")).may_have_taken_effect());
        assert!(
            Error::Timeout {
                operation: Operation::Deploy
            }
            .may_have_taken_effect()
        );
        assert!(
            Error::Decode {
                operation: Operation::Deploy,
                status: 201,
                request_id: None,
                detail: "eof".into()
            }
            .may_have_taken_effect()
        );
        for status in [400, 401, 403, 404, 409, 413, 429] {
            assert!(
                !error(status, envelope("x", "m")).may_have_taken_effect(),
                "{status}"
            );
        }
    }

    #[test]
    fn local_errors_are_permanent_and_have_reasons() {
        let input = Error::InvalidInput {
            operation: Operation::Get,
            reason: "empty instance id".into(),
        };
        assert_eq!(input.class(), ErrorClass::Permanent);
        assert_eq!(input.reason(), "BeeosInvalidInput");
        assert_eq!(input.operation(), Some(Operation::Get));
        let config = Error::Config {
            reason: "bad url".into(),
        };
        assert_eq!(config.operation(), None);
        assert_eq!(config.reason(), "BeeosClientConfig");
        let timeout = Error::Timeout {
            operation: Operation::List,
        };
        assert_eq!(timeout.class(), ErrorClass::Retryable);
        assert_eq!(timeout.reason(), "BeeosTimeout");
        assert_eq!(timeout.to_string(), "BeeOS list timed out");
    }

    #[test]
    fn scrubbed_removes_a_secret_from_every_server_text() {
        let err = error(
            400,
            json!({"success": false, "error": {
                "code": "invalid_token", "message": "bad Bearer oag_secret", "param": "oag_secret",
                "metadata": {"echo": "oag_secret"},
            }}),
        )
        .scrubbed(|text| text.replace("oag_secret", "<redacted>"));
        let shown = format!("{err} {err:?}");
        assert!(!shown.contains("oag_secret"), "{shown}");
        assert!(shown.contains("<redacted>"));
    }

    #[test]
    fn reasons_are_camel_case_and_prefixed() {
        let errors = [
            error(400, json!({})),
            error(429, json!({})),
            error(502, json!({})),
            Error::Timeout {
                operation: Operation::Stop,
            },
        ];
        for err in errors {
            let reason = err.reason();
            assert!(reason.starts_with("Beeos"), "{reason}");
            assert!(
                reason.chars().all(|c| c.is_ascii_alphanumeric()),
                "{reason}"
            );
        }
    }
}
