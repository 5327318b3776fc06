//! The contract's response envelopes: `{success:true,data}` for results and
//! `{success:false,error:{type,code,message,request_id,param?}}` with an `X-Request-Id`
//! header for errors, plus one constructor per error the simulator can give. Messages never carry
//! request values, so secrets in a body (systemPrompt, mcpServers, apiKeys) cannot leak through them.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::{Json, body::Body};
use serde::Serialize;
use serde_json::json;

/// The header carrying the request id on every response.
pub const REQUEST_ID_HEADER: &str = "x-request-id";

/// The id of one request: the caller's `X-Request-Id` when it sent a usable one, else a new one.
#[derive(Clone, Debug)]
pub struct RequestId(pub String);

impl RequestId {
    /// A fresh random id such as `req_3f9c0a1b2c3d4e5f`.
    pub fn generate() -> Self {
        RequestId(format!("req_{:016x}", rand::random::<u64>()))
    }

    /// Keeps a caller-supplied id when it is short, printable ASCII; otherwise generates one.
    pub fn from_header(value: Option<&HeaderValue>) -> Self {
        match value.and_then(|v| v.to_str().ok()) {
            Some(v)
                if !v.is_empty() && v.len() <= 128 && v.bytes().all(|b| b.is_ascii_graphic()) =>
            {
                RequestId(v.to_owned())
            }
            _ => RequestId::generate(),
        }
    }
}

/// An error answer of the public API, rendered as the contract's `ErrorResponse`.
#[derive(Clone, Debug, PartialEq)]
pub struct ApiError {
    /// HTTP status.
    pub status: StatusCode,
    /// The RFC 9457-style `type` slug.
    pub kind: &'static str,
    /// The stable `code`.
    pub code: String,
    /// Human-readable text; never contains request values.
    pub message: String,
    /// The offending field for `missing_param` / `invalid_param`.
    pub param: Option<String>,
    /// Seconds for the `Retry-After` header (429 only).
    pub retry_after: Option<u64>,
}

impl ApiError {
    fn new(status: StatusCode, kind: &'static str, code: &str, message: impl Into<String>) -> Self {
        Self {
            status,
            kind,
            code: code.to_owned(),
            message: message.into(),
            param: None,
            retry_after: None,
        }
    }

    fn with_param(mut self, param: &str) -> Self {
        self.param = Some(param.to_owned());
        self
    }

    /// 400 `invalid_json`: the body is not JSON.
    pub fn invalid_json() -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            "invalid_request_error",
            "invalid_json",
            "request body is not valid JSON",
        )
    }

    /// 400 `invalid_body`: JSON, but not the expected shape.
    pub fn invalid_body(message: impl Into<String>) -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            "invalid_request_error",
            "invalid_body",
            message,
        )
    }

    /// 400 `missing_param` naming `param`.
    pub fn missing_param(param: &str, message: impl Into<String>) -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            "invalid_request_error",
            "missing_param",
            message,
        )
        .with_param(param)
    }

    /// 400 `invalid_param` naming `param`.
    pub fn invalid_param(param: &str, message: impl Into<String>) -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            "invalid_request_error",
            "invalid_param",
            message,
        )
        .with_param(param)
    }

    /// 413 `payload_too_large`.
    pub fn payload_too_large(limit: usize) -> Self {
        Self::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "invalid_request_error",
            "payload_too_large",
            format!("request body exceeds {limit} bytes"),
        )
    }

    /// 401 `missing_token`: no bearer token at all.
    pub fn missing_token() -> Self {
        Self::new(
            StatusCode::UNAUTHORIZED,
            "authentication_error",
            "missing_token",
            "missing Authorization: Bearer token",
        )
    }

    /// 401 `invalid_token`: a token this server does not know, or a malformed header.
    pub fn invalid_token() -> Self {
        Self::new(
            StatusCode::UNAUTHORIZED,
            "authentication_error",
            "invalid_token",
            "invalid or unknown bearer token",
        )
    }

    /// 403 `forbidden` for an instance of another owner: the contract's `Forbidden` response.
    pub fn forbidden() -> Self {
        Self::new(
            StatusCode::FORBIDDEN,
            "permission_error",
            "forbidden",
            "Caller doesn't own the resource",
        )
    }

    /// 404 for an instance that does not exist (or no longer: past its retention); the code is
    /// `agent_not_found` like the real API's shared NotFound response.
    pub fn instance_not_found() -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            "not_found_error",
            "agent_not_found",
            "instance not found",
        )
    }

    /// 404 for a path the simulator does not serve.
    pub fn route_not_found() -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            "not_found_error",
            "not_found",
            "no such route",
        )
    }

    /// 405 for a known path with an unsupported method.
    pub fn method_not_allowed() -> Self {
        Self::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "invalid_request_error",
            "method_not_allowed",
            "method not allowed on this path",
        )
    }

    /// 409 `conflict`: the instance's state does not allow the operation.
    pub fn conflict(message: impl Into<String>) -> Self {
        Self::new(StatusCode::CONFLICT, "conflict_error", "conflict", message)
    }

    /// 429 `rate_limited` with `Retry-After: retry_after_secs` (at least 1).
    pub fn rate_limited(retry_after_secs: u64) -> Self {
        let mut e = Self::new(
            StatusCode::TOO_MANY_REQUESTS,
            "rate_limit_error",
            "rate_limited",
            "rate limit exceeded",
        );
        e.retry_after = Some(retry_after_secs.max(1));
        e
    }

    /// 500 `internal_error` for a failure of the simulator itself (a handler that panicked).
    pub fn internal() -> Self {
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "api_error",
            "internal_error",
            "internal error",
        )
    }

    /// An injected server-side failure with the contract's code for `status`
    /// (500 `internal_error`, 502 `bad_gateway`, 503 `agent_service_unavailable`,
    /// 504 `service_timeout`), or `code` when given.
    pub fn server_fault(status: StatusCode, code: Option<&str>) -> Self {
        let default_code = match status.as_u16() {
            502 => "bad_gateway",
            503 => "agent_service_unavailable",
            504 => "service_timeout",
            _ => "internal_error",
        };
        Self::new(
            status,
            "api_error",
            code.unwrap_or(default_code),
            "injected fault",
        )
    }

    /// Renders the error with `request_id` in the body and the `X-Request-Id` header.
    pub fn into_response_with(self, request_id: &RequestId) -> Response {
        #[derive(Serialize)]
        struct ErrorBody<'a> {
            #[serde(rename = "type")]
            kind: &'a str,
            code: &'a str,
            message: &'a str,
            request_id: &'a str,
            #[serde(skip_serializing_if = "Option::is_none")]
            param: Option<&'a str>,
        }
        let body = json!({
            "success": false,
            "error": ErrorBody {
                kind: self.kind,
                code: &self.code,
                message: &self.message,
                request_id: &request_id.0,
                param: self.param.as_deref(),
            },
        });
        let mut response = (self.status, Json(body)).into_response();
        if let Some(secs) = self.retry_after {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        if self.status == StatusCode::UNAUTHORIZED {
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        response
    }
}

/// `{success:true, data}` with `status`, serialized at once (`data` may borrow from the table).
pub fn success(status: StatusCode, data: impl Serialize) -> Response {
    #[derive(Serialize)]
    struct Envelope<T> {
        success: bool,
        data: T,
    }
    let body = Envelope {
        success: true,
        data,
    };
    (status, Json(body)).into_response()
}

/// `{success:true, data, total}` with 200, serialized at once.
pub fn page(data: impl Serialize, total: usize) -> Response {
    #[derive(Serialize)]
    struct Page<T> {
        success: bool,
        data: T,
        total: usize,
    }
    let body = Page {
        success: true,
        data,
        total,
    };
    Json(body).into_response()
}

/// Renders a handler's result, attaching the request id to errors.
pub fn finish(result: Result<Response, ApiError>, request_id: &RequestId) -> Response {
    result.unwrap_or_else(|e| e.into_response_with(request_id))
}

/// An empty 204 answer for admin calls with nothing to return.
pub fn no_content() -> Response {
    Response::builder()
        .status(StatusCode::NO_CONTENT)
        .body(Body::empty())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn caller_request_id_is_kept_only_when_printable_and_short() {
        let kept = RequestId::from_header(Some(&HeaderValue::from_static("trace-123")));
        assert_eq!(kept.0, "trace-123");
        let long = "x".repeat(200);
        let replaced = RequestId::from_header(Some(&HeaderValue::from_str(&long).unwrap()));
        assert!(replaced.0.starts_with("req_"));
        assert!(RequestId::from_header(None).0.starts_with("req_"));
    }

    #[test]
    fn rate_limited_never_says_retry_after_zero() {
        assert_eq!(ApiError::rate_limited(0).retry_after, Some(1));
    }

    #[test]
    fn server_faults_use_the_contract_codes() {
        let code = |s: u16| ApiError::server_fault(StatusCode::from_u16(s).unwrap(), None).code;
        assert_eq!(code(500), "internal_error");
        assert_eq!(code(503), "agent_service_unavailable");
        assert_eq!(code(504), "service_timeout");
        let custom =
            ApiError::server_fault(StatusCode::SERVICE_UNAVAILABLE, Some("auth_transient"));
        assert_eq!(custom.code, "auth_transient");
    }
}
