//! The BeeOS HTTP client: one method per API call, each waiting on the credential's rate limit,
//! sending one request with a timeout, and decoding the answer or classifying the error.
//!
//! It never retries (the controller owns retry policy and knows whether a call is safe to repeat)
//! and never logs bodies or the credential: spans carry only the operation, instance id,
//! credential fingerprint, HTTP status and BeeOS request id.

use std::collections::HashSet;
use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use reqwest::header::{ACCEPT, AUTHORIZATION, CONTENT_TYPE, HeaderMap, HeaderValue};
use reqwest::{Method, StatusCode, Url};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::Value;
use tracing::{Instrument, field};

use super::credential::Credential;
use super::error::{Error, Operation};
use super::ratelimit::{CredentialLimiter, RateLimiters};
use super::types::{DeployRequest, Instance, InstancePage, ListQuery, Model, Provider, Region};

/// Per-request timeout when [`ClientOptions::timeout`] is not changed.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

/// Longest success body read; a full page of 200 instances is far below this.
const MAX_RESPONSE_BYTES: usize = 16 * 1024 * 1024;

/// Longest instance id BeeOS accepts in a path.
const MAX_INSTANCE_ID_CHARS: usize = 128;

/// Told about every call, for metrics: the client knows no metrics library, the operator does.
pub trait CallObserver: Send + Sync {
    /// A call finished; `outcome` is the HTTP status, or a label such as `timeout` or
    /// `transport` (see [`Error::code_label`]).
    fn finished(&self, operation: Operation, outcome: &str);
    /// A call waited this long for the client-side rate limit before it went out.
    fn waited(&self, operation: Operation, waited: Duration);
}

/// How a [`BeeosClient`] is built.
#[derive(Clone)]
pub struct ClientOptions {
    /// Timeout of each request, from sending to the last body byte (rate-limit waits excluded).
    pub timeout: Duration,
    /// The rate-limit registry shared by all clients of the process; `None` means no client-side
    /// limit.
    pub rate_limiters: Option<RateLimiters>,
    /// The `User-Agent` header.
    pub user_agent: String,
    /// Told about every call and every rate-limit wait.
    pub observer: Option<Arc<dyn CallObserver>>,
}

impl Default for ClientOptions {
    fn default() -> Self {
        Self {
            timeout: DEFAULT_TIMEOUT,
            rate_limiters: None,
            user_agent: concat!("beeos-operator/", env!("CARGO_PKG_VERSION")).to_owned(),
            observer: None,
        }
    }
}

impl fmt::Debug for ClientOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientOptions")
            .field("timeout", &self.timeout)
            .field("rate_limiters", &self.rate_limiters)
            .field("user_agent", &self.user_agent)
            .field("observed", &self.observer.is_some())
            .finish()
    }
}

/// A client of the BeeOS public API for one credential. Cheap to clone.
#[derive(Clone)]
pub struct BeeosClient {
    inner: Arc<Inner>,
}

struct Inner {
    http: reqwest::Client,
    base_url: Url,
    credential: Credential,
    authorization: HeaderValue,
    limiter: Option<CredentialLimiter>,
    options: ClientOptions,
}

/// A success answer, before decoding.
struct Answer {
    status: StatusCode,
    request_id: Option<String>,
    body: Vec<u8>,
}

/// The `{success, data, total}` envelope of success answers.
#[derive(Deserialize)]
struct Envelope<T> {
    success: Option<bool>,
    data: Option<T>,
    total: Option<i64>,
}

impl BeeosClient {
    /// Builds a client for `base_url` (e.g. `https://openapi.beeos.ai`, a path prefix allowed).
    ///
    /// Fails with [`Error::Config`] when the URL is not an absolute http(s) URL, carries user
    /// info, a query or a fragment, or the TLS stack cannot be set up.
    pub fn new(
        base_url: &str,
        credential: Credential,
        options: ClientOptions,
    ) -> Result<Self, Error> {
        let base_url = parse_base_url(base_url)?;
        let http = reqwest::Client::builder()
            .timeout(options.timeout)
            .connect_timeout(options.timeout)
            // An API answer never redirects; following one could replay a POST as a GET.
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(options.user_agent.clone())
            .build()
            .map_err(|err| Error::Config {
                reason: format!("cannot build the HTTP client: {err}"),
            })?;
        Self::assemble(http, base_url, credential, options)
    }

    /// A client for another credential that shares this one's connection pool, base URL,
    /// options and rate-limit registry.
    pub fn with_credential(&self, credential: Credential) -> Result<Self, Error> {
        Self::assemble(
            self.inner.http.clone(),
            self.inner.base_url.clone(),
            credential,
            self.inner.options.clone(),
        )
    }

    fn assemble(
        http: reqwest::Client,
        base_url: Url,
        credential: Credential,
        options: ClientOptions,
    ) -> Result<Self, Error> {
        let authorization = credential.authorization()?;
        let limiter = options
            .rate_limiters
            .as_ref()
            .map(|limiters| limiters.limiter_for(&credential));
        Ok(Self {
            inner: Arc::new(Inner {
                http,
                base_url,
                credential,
                authorization,
                limiter,
                options,
            }),
        })
    }

    /// The base URL calls go to.
    pub fn base_url(&self) -> &str {
        self.inner.base_url.as_str()
    }

    /// The credential calls carry.
    pub fn credential(&self) -> &Credential {
        &self.inner.credential
    }

    /// Deploys a new instance (`POST /api/v1/instances`, 201).
    ///
    /// Not idempotent: when the error [`may have taken effect`](Error::may_have_taken_effect),
    /// an instance may exist; look for it (by name, with [`Self::list`]) before deploying again.
    pub async fn deploy(&self, request: &DeployRequest) -> Result<Instance, Error> {
        self.deploy_unless_late(request, None).await
    }

    /// Like [`Self::deploy`], but the call is not sent when `not_after` has passed by the time the
    /// rate limit lets it go ([`Error::DeadlinePassed`], which never took effect). A caller
    /// that marked a deploy as pending uses this so a long wait never sends a deploy on a mark
    /// others may already consider stale.
    pub async fn deploy_unless_late(
        &self,
        request: &DeployRequest,
        not_after: Option<Instant>,
    ) -> Result<Instance, Error> {
        let operation = Operation::Deploy;
        let body = serde_json::to_vec(request).map_err(|err| Error::InvalidInput {
            operation,
            reason: format!("cannot encode the deploy request: {err}"),
        })?;
        let url = self.url(&["api", "v1", "instances"], &[]);
        let answer = self
            .call_unless_late(operation, None, Method::POST, url, Some(body), not_after)
            .await?;
        let instance: Instance = required_data(operation, &answer)?;
        tracing::debug!(instance_id = %instance.instance_id, "deployed");
        Ok(instance)
    }

    /// Reads one instance (`GET /api/v1/instances/{id}`). Another owner's instance is a 403
    /// ([`Error::Forbidden`]), an unknown one a 404.
    pub async fn get(&self, instance_id: &str) -> Result<Instance, Error> {
        self.instance_call(Operation::Get, Method::GET, instance_id, None)
            .await
    }

    /// Reads one page of the caller's instances (`GET /api/v1/instances`), always sending
    /// `pageSize` explicitly.
    pub async fn list(&self, query: &ListQuery) -> Result<InstancePage, Error> {
        let operation = Operation::List;
        let pairs = query.to_pairs();
        let url = self.url(&["api", "v1", "instances"], &pairs);
        let answer = self.call(operation, None, Method::GET, url, None).await?;
        let envelope: Envelope<Vec<Instance>> = decode(operation, &answer)?;
        Ok(InstancePage {
            // `data: null` on an empty result is read as an empty page.
            instances: envelope.data.unwrap_or_default(),
            total: envelope
                .total
                .map(|total| u64::try_from(total).unwrap_or(0)),
            page: query.page,
            page_size: query.effective_page_size(),
        })
    }

    /// Reads every page from `query.page` on, until `(page + 1) * pageSize >= total` or a page
    /// is empty. Instances that move between pages while listing are returned once (first seen).
    pub async fn list_all(&self, query: &ListQuery) -> Result<Vec<Instance>, Error> {
        let mut query = query.clone();
        let mut seen = HashSet::new();
        let mut instances = Vec::new();
        loop {
            let page = self.list(&query).await?;
            let last = page.is_last();
            for instance in page.instances {
                // An instance without an id cannot be a duplicate we could recognise.
                if instance.instance_id.is_empty() || seen.insert(instance.instance_id.clone()) {
                    instances.push(instance);
                }
            }
            match query.page.checked_add(1) {
                Some(next) if !last => query.page = next,
                _ => return Ok(instances),
            }
        }
    }

    /// Starts an instance (`POST /api/v1/instances/{id}/start`); 409 when its state forbids it.
    pub async fn start(&self, instance_id: &str) -> Result<Instance, Error> {
        self.instance_call(Operation::Start, Method::POST, instance_id, Some("start"))
            .await
    }

    /// Stops an instance (`POST /api/v1/instances/{id}/stop`); 409 when its state forbids it.
    pub async fn stop(&self, instance_id: &str) -> Result<Instance, Error> {
        self.instance_call(Operation::Stop, Method::POST, instance_id, Some("stop"))
            .await
    }

    /// Restarts an instance (`POST /api/v1/instances/{id}/restart`); 409 when its state forbids it.
    pub async fn restart(&self, instance_id: &str) -> Result<Instance, Error> {
        self.instance_call(
            Operation::Restart,
            Method::POST,
            instance_id,
            Some("restart"),
        )
        .await
    }

    /// Destroys an instance (`DELETE /api/v1/instances/{id}`, data `"destroyed"`). A 404 comes
    /// back as [`Error::NotFound`]; callers deleting treat it as done.
    pub async fn destroy(&self, instance_id: &str) -> Result<(), Error> {
        let operation = Operation::Destroy;
        let url = self.instance_url(operation, instance_id, None)?;
        let answer = self
            .call(operation, Some(instance_id), Method::DELETE, url, None)
            .await?;
        // Any success means destroyed; the body (`"destroyed"`) is informational.
        if !answer.body.is_empty() {
            let envelope: Envelope<Value> = decode(operation, &answer)?;
            if let Some(data) = envelope.data.as_ref().and_then(Value::as_str)
                && data != "destroyed"
            {
                tracing::debug!(data, "destroy answered with unexpected data");
            }
        }
        Ok(())
    }

    /// Lists the deploy providers (`GET /api/v1/providers`).
    pub async fn providers(&self) -> Result<Vec<Provider>, Error> {
        let url = self.url(&["api", "v1", "providers"], &[]);
        self.catalog(Operation::Providers, url).await
    }

    /// Lists the deploy regions, optionally of one provider (`GET /api/v1/deploy/regions`).
    pub async fn regions(&self, provider_id: Option<&str>) -> Result<Vec<Region>, Error> {
        let pairs: Vec<_> = provider_id
            .map(|id| ("providerId", id.to_owned()))
            .into_iter()
            .collect();
        let url = self.url(&["api", "v1", "deploy", "regions"], &pairs);
        self.catalog(Operation::Regions, url).await
    }

    /// Lists the deploy models, optionally of one agent framework (`GET /api/v1/deploy/models`).
    pub async fn models(&self, agent_framework: Option<&str>) -> Result<Vec<Model>, Error> {
        let pairs: Vec<_> = agent_framework
            .map(|framework| ("agentFramework", framework.to_owned()))
            .into_iter()
            .collect();
        let url = self.url(&["api", "v1", "deploy", "models"], &pairs);
        self.catalog(Operation::Models, url).await
    }

    async fn catalog<T: DeserializeOwned>(
        &self,
        operation: Operation,
        url: Url,
    ) -> Result<Vec<T>, Error> {
        let answer = self.call(operation, None, Method::GET, url, None).await?;
        let envelope: Envelope<Vec<T>> = decode(operation, &answer)?;
        Ok(envelope.data.unwrap_or_default())
    }

    async fn instance_call(
        &self,
        operation: Operation,
        method: Method,
        instance_id: &str,
        action: Option<&str>,
    ) -> Result<Instance, Error> {
        let url = self.instance_url(operation, instance_id, action)?;
        let answer = self
            .call(operation, Some(instance_id), method, url, None)
            .await?;
        required_data(operation, &answer)
    }

    fn instance_url(
        &self,
        operation: Operation,
        instance_id: &str,
        action: Option<&str>,
    ) -> Result<Url, Error> {
        // An empty id would turn `GET /instances/{id}` into a list call; dot segments would be
        // resolved away by URL normalisation.
        if instance_id.is_empty() || instance_id == "." || instance_id == ".." {
            return Err(Error::InvalidInput {
                operation,
                reason: format!("instance id {instance_id:?} is not a valid id"),
            });
        }
        if instance_id.chars().count() > MAX_INSTANCE_ID_CHARS {
            return Err(Error::InvalidInput {
                operation,
                reason: format!("instance id is longer than {MAX_INSTANCE_ID_CHARS} characters"),
            });
        }
        let mut segments = vec!["api", "v1", "instances", instance_id];
        segments.extend(action);
        Ok(self.url(&segments, &[]))
    }

    /// The URL of `segments` (each percent-encoded) under the base URL, with `query`.
    fn url(&self, segments: &[&str], query: &[(&str, String)]) -> Url {
        let mut url = self.inner.base_url.clone();
        // `parse_base_url` admits only URLs that can be a base, so this always applies.
        if let Ok(mut path) = url.path_segments_mut() {
            path.pop_if_empty().extend(segments);
        }
        if !query.is_empty() {
            url.query_pairs_mut().extend_pairs(query);
        }
        url
    }

    /// Sends one request and returns the success answer or the classified error, inside a span.
    async fn call(
        &self,
        operation: Operation,
        instance_id: Option<&str>,
        method: Method,
        url: Url,
        body: Option<Vec<u8>>,
    ) -> Result<Answer, Error> {
        self.call_unless_late(operation, instance_id, method, url, body, None)
            .await
    }

    /// [`Self::call`], not sent when `not_after` has passed once the rate limit lets it go.
    async fn call_unless_late(
        &self,
        operation: Operation,
        instance_id: Option<&str>,
        method: Method,
        url: Url,
        body: Option<Vec<u8>>,
        not_after: Option<Instant>,
    ) -> Result<Answer, Error> {
        let span = tracing::info_span!(
            "beeos",
            operation = operation.as_str(),
            instance_id,
            credential = %self.inner.credential.fingerprint(),
            status = field::Empty,
            request_id = field::Empty,
        );
        async move {
            let observer = self.inner.options.observer.as_deref();
            if let Some(limiter) = &self.inner.limiter {
                let waited = limiter.acquire(operation).await;
                if !waited.is_zero() {
                    tracing::debug!(waited_ms = waited.as_millis(), "waited for the client-side rate limit");
                }
                if let Some(observer) = observer {
                    observer.waited(operation, waited);
                }
            }
            if not_after.is_some_and(|deadline| Instant::now() > deadline) {
                let err = Error::DeadlinePassed { operation };
                if let Some(observer) = observer {
                    observer.finished(operation, &err.code_label());
                }
                return Err(err);
            }
            let started = Instant::now();
            let result = self.exchange(operation, method, url, body).await;
            if let Some(observer) = observer {
                let outcome = match &result {
                    Ok(answer) => answer.status.as_u16().to_string(),
                    Err(err) => err.code_label(),
                };
                observer.finished(operation, &outcome);
            }
            let elapsed_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
            let span = tracing::Span::current();
            match &result {
                Ok(answer) => {
                    span.record("status", answer.status.as_u16());
                    if let Some(request_id) = &answer.request_id {
                        span.record("request_id", request_id.as_str());
                    }
                    tracing::debug!(elapsed_ms, "BeeOS call succeeded");
                }
                Err(err) => {
                    if let Some(status) = err.status() {
                        span.record("status", status);
                    }
                    if let Some(request_id) = err.request_id() {
                        span.record("request_id", request_id);
                    }
                    tracing::debug!(elapsed_ms, reason = err.reason(), error = %err, "BeeOS call failed");
                }
            }
            result
        }
        .instrument(span)
        .await
    }

    async fn exchange(
        &self,
        operation: Operation,
        method: Method,
        url: Url,
        body: Option<Vec<u8>>,
    ) -> Result<Answer, Error> {
        let mut request = self
            .inner
            .http
            .request(method, url)
            .header(AUTHORIZATION, self.inner.authorization.clone())
            .header(ACCEPT, "application/json");
        if let Some(body) = body {
            request = request.header(CONTENT_TYPE, "application/json").body(body);
        }
        let mut response = request
            .send()
            .await
            .map_err(|err| Error::from_reqwest(operation, err))?;
        let status = response.status();
        let headers = response.headers().clone();
        if status.is_success() {
            let (body, complete) = read_body(&mut response)
                .await
                .map_err(|err| Error::from_reqwest(operation, err))?;
            let request_id = request_id(&headers);
            if !complete {
                return Err(Error::Decode {
                    operation,
                    status: status.as_u16(),
                    request_id,
                    detail: format!("the body is larger than {MAX_RESPONSE_BYTES} bytes"),
                });
            }
            return Ok(Answer {
                status,
                request_id,
                body,
            });
        }
        // The status alone classifies the error; a body cut short only loses details.
        let body = read_body(&mut response)
            .await
            .map(|(body, _)| body)
            .unwrap_or_default();
        let credential = &self.inner.credential;
        Err(
            Error::from_response(operation, status, &headers, &body, SystemTime::now())
                .scrubbed(|text| credential.scrub(text)),
        )
    }
}

impl fmt::Debug for BeeosClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BeeosClient")
            .field("base_url", &self.inner.base_url.as_str())
            .field("credential", &self.inner.credential)
            .field("timeout", &self.inner.options.timeout)
            .field("rate_limited", &self.inner.limiter.is_some())
            .finish()
    }
}

fn parse_base_url(raw: &str) -> Result<Url, Error> {
    let config = |reason: String| Error::Config { reason };
    let url = Url::parse(raw.trim()).map_err(|err| config(format!("invalid base URL: {err}")))?;
    if !matches!(url.scheme(), "http" | "https") || url.cannot_be_a_base() {
        return Err(config(format!("base URL {url} is not an http(s) URL")));
    }
    // Credentials belong in `Credential`; a URL is printed in logs and errors.
    if !url.username().is_empty() || url.password().is_some() {
        return Err(config("the base URL must not carry user info".to_owned()));
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err(config(format!(
            "base URL {} must not carry a query or fragment",
            url.origin().ascii_serialization()
        )));
    }
    Ok(url)
}

/// Reads the body up to [`MAX_RESPONSE_BYTES`]; the flag says whether it was complete.
async fn read_body(response: &mut reqwest::Response) -> Result<(Vec<u8>, bool), reqwest::Error> {
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await? {
        if body.len() + chunk.len() > MAX_RESPONSE_BYTES {
            return Ok((body, false));
        }
        body.extend_from_slice(&chunk);
    }
    Ok((body, true))
}

fn request_id(headers: &HeaderMap) -> Option<String> {
    headers
        .get("x-request-id")
        .and_then(|value| value.to_str().ok())
        .filter(|value| !value.is_empty())
        .map(str::to_owned)
}

fn decode<T: DeserializeOwned>(
    operation: Operation,
    answer: &Answer,
) -> Result<Envelope<T>, Error> {
    let decode_error = |detail: String| Error::Decode {
        operation,
        status: answer.status.as_u16(),
        request_id: answer.request_id.clone(),
        detail,
    };
    let envelope: Envelope<T> =
        serde_json::from_slice(&answer.body).map_err(|err| decode_error(err.to_string()))?;
    if envelope.success == Some(false) {
        return Err(decode_error(
            "a success status with `success: false`".to_owned(),
        ));
    }
    Ok(envelope)
}

fn required_data<T: DeserializeOwned>(operation: Operation, answer: &Answer) -> Result<T, Error> {
    decode::<T>(operation, answer)?
        .data
        .ok_or_else(|| Error::Decode {
            operation,
            status: answer.status.as_u16(),
            request_id: answer.request_id.clone(),
            detail: "the answer has no `data`".to_owned(),
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn client(base_url: &str) -> BeeosClient {
        BeeosClient::new(
            base_url,
            Credential::new("oag_token").unwrap(),
            ClientOptions::default(),
        )
        .unwrap()
    }

    #[test]
    fn urls_keep_a_base_path_and_encode_ids() {
        let with_prefix = client("http://127.0.0.1:8095/gateway/");
        assert_eq!(
            with_prefix
                .instance_url(Operation::Start, "a b/c", Some("start"))
                .unwrap()
                .as_str(),
            "http://127.0.0.1:8095/gateway/api/v1/instances/a%20b%2Fc/start"
        );
        let plain = client("https://openapi.beeos.ai");
        let url = plain.url(
            &["api", "v1", "instances"],
            &ListQuery::search("my name&x").to_pairs(),
        );
        assert_eq!(
            url.as_str(),
            "https://openapi.beeos.ai/api/v1/instances?page=0&pageSize=200&search=my+name%26x"
        );
    }

    #[test]
    fn invalid_instance_ids_are_refused_before_sending() {
        let client = client("http://localhost:8095");
        for bad in ["", ".", ".."] {
            let err = client.instance_url(Operation::Get, bad, None).unwrap_err();
            assert!(matches!(err, Error::InvalidInput { .. }), "{bad:?}");
        }
        let long = "x".repeat(129);
        assert!(client.instance_url(Operation::Get, &long, None).is_err());
    }

    #[test]
    fn bad_base_urls_are_config_errors() {
        for bad in [
            "not a url",
            "ftp://example.com",
            "mailto:someone@example.com",
            "https://user:pass@example.com",
            "https://example.com/?x=1",
        ] {
            let err = BeeosClient::new(
                bad,
                Credential::new("oag_token").unwrap(),
                ClientOptions::default(),
            )
            .unwrap_err();
            assert_eq!(err.reason(), "BeeosClientConfig", "{bad}");
            assert!(!err.to_string().contains("pass"), "{err}");
        }
    }

    #[test]
    fn debug_shows_no_token() {
        let client = BeeosClient::new(
            "http://localhost:8095",
            Credential::new("oag_supersecret").unwrap(),
            ClientOptions::default(),
        )
        .unwrap();
        let shown = format!("{client:?} {client:#?}");
        assert!(!shown.contains("supersecret"), "{shown}");
        assert!(shown.contains("sha256:"), "{shown}");
    }

    #[test]
    fn clients_for_one_credential_share_a_rate_limit_bucket() {
        let limiters = RateLimiters::per_second(
            std::num::NonZeroU32::new(1).unwrap(),
            std::num::NonZeroU32::new(1).unwrap(),
        );
        let options = ClientOptions {
            rate_limiters: Some(limiters.clone()),
            ..ClientOptions::default()
        };
        let a = BeeosClient::new(
            "http://localhost:8095",
            Credential::new("oag_a").unwrap(),
            options.clone(),
        )
        .unwrap();
        let a_again = BeeosClient::new(
            "http://localhost:8095",
            Credential::new("oag_a").unwrap(),
            options,
        )
        .unwrap();
        let b = a
            .with_credential(Credential::new("oag_b").unwrap())
            .unwrap();
        let bucket = |client: &BeeosClient| client.inner.limiter.clone().unwrap();
        assert!(bucket(&a).same_buckets(&bucket(&a_again)));
        assert!(!bucket(&a).same_buckets(&bucket(&b)));
        assert_eq!(limiters.len(), 2);
    }

    fn answer(status: u16, body: &str) -> Answer {
        Answer {
            status: StatusCode::from_u16(status).unwrap(),
            request_id: Some("req_7".into()),
            body: body.as_bytes().to_vec(),
        }
    }

    #[test]
    fn success_bodies_without_data_or_with_success_false_are_decode_errors() {
        let missing =
            required_data::<Instance>(Operation::Get, &answer(200, r#"{"success":true}"#))
                .unwrap_err();
        assert_eq!(missing.reason(), "BeeosDecodeError");
        assert_eq!(missing.request_id(), Some("req_7"));
        let refused = required_data::<Instance>(
            Operation::Deploy,
            &answer(
                201,
                r#"{"success":false,"error":{"code":"x","message":"y"}}"#,
            ),
        )
        .unwrap_err();
        assert!(refused.may_have_taken_effect());
        let garbage =
            required_data::<Instance>(Operation::Deploy, &answer(201, "<html>")).unwrap_err();
        assert_eq!(garbage.status(), Some(201));
        assert!(garbage.may_have_taken_effect());
    }

    #[test]
    fn success_envelopes_decode_with_or_without_success_flag() {
        let instance: Instance =
            required_data(Operation::Get, &answer(200, r#"{"data":{"id":"i-1"}}"#)).unwrap();
        assert_eq!(instance.instance_id, "i-1");
        let envelope: Envelope<Vec<Instance>> = decode(
            Operation::List,
            &answer(200, r#"{"success":true,"data":null,"total":0}"#),
        )
        .unwrap();
        assert!(envelope.data.is_none());
        assert_eq!(envelope.total, Some(0));
    }
}
