//! Helpers shared by the simulator's integration tests: a started simulator with two owners, a
//! small HTTP client returning status, headers and JSON, and a deadline-bound wait.
#![allow(dead_code)] // each test binary uses a different part

use std::future::Future;
use std::time::{Duration, Instant};

use beeos_sim::{Settings, SimConfig, Simulator};
use reqwest::header::HeaderMap;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

pub const ALICE: &str = "oag_alice";
pub const BOB: &str = "oag_bob";

/// A simulator with tokens for alice and bob and `settings`, plus a client for it.
pub struct Harness {
    pub sim: Simulator,
    pub client: Client,
}

pub async fn start() -> Harness {
    start_with(Settings::default()).await
}

pub async fn start_with(settings: Settings) -> Harness {
    let config = SimConfig::default()
        .with_token(ALICE, "alice")
        .with_token(BOB, "bob")
        .with_settings(settings);
    let sim = Simulator::start(config).await.expect("simulator starts");
    let client = Client::new(sim.base_url());
    Harness { sim, client }
}

/// One answer: status, headers and the body as JSON (`Null` when empty or not JSON).
#[derive(Debug)]
pub struct Answer {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Value,
}

impl Answer {
    /// `error.code` of an error envelope.
    pub fn code(&self) -> &str {
        self.body["error"]["code"].as_str().unwrap_or_default()
    }

    /// `error.param` of an error envelope.
    pub fn param(&self) -> Option<&str> {
        self.body["error"]["param"].as_str()
    }

    /// `data` of a success envelope.
    pub fn data(&self) -> &Value {
        &self.body["data"]
    }

    /// Asserts an error envelope with `status` and `code`, and that its request id matches the header.
    pub fn assert_error(&self, status: u16, code: &str) {
        assert_eq!(self.status.as_u16(), status, "{:#}", self.body);
        assert_eq!(self.body["success"], false, "{:#}", self.body);
        assert_eq!(self.code(), code, "{:#}", self.body);
        assert!(self.body["error"]["message"].is_string());
        assert!(self.body["error"]["type"].is_string());
        let header = self
            .headers
            .get("x-request-id")
            .expect("X-Request-Id header");
        assert_eq!(self.body["error"]["request_id"], header.to_str().unwrap());
    }
}

#[derive(Clone)]
pub struct Client {
    pub http: reqwest::Client,
    pub base: String,
}

impl Client {
    pub fn new(base: String) -> Self {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .build()
            .expect("client");
        Self { http, base }
    }

    pub async fn call(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> Answer {
        self.try_call(method, path, token, body)
            .await
            .expect("request completes")
    }

    pub async fn try_call(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> reqwest::Result<Answer> {
        let mut request = self.http.request(method, format!("{}{path}", self.base));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await?;
        let status = response.status();
        let headers = response.headers().clone();
        let bytes = response.bytes().await?;
        let body = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        Ok(Answer {
            status,
            headers,
            body,
        })
    }

    pub async fn get(&self, path: &str, token: &str) -> Answer {
        self.call(Method::GET, path, Some(token), None).await
    }

    pub async fn post(&self, path: &str, token: &str) -> Answer {
        self.call(Method::POST, path, Some(token), None).await
    }

    /// Deploys `beeos-claw-small` named `name`; asserts 201 and returns `data`.
    pub async fn deploy(&self, token: &str, name: &str) -> Value {
        let answer = self
            .deploy_body(
                token,
                json!({"name": name, "variantId": "beeos-claw-small"}),
            )
            .await;
        assert_eq!(answer.status, StatusCode::CREATED, "{:#}", answer.body);
        answer.data().clone()
    }

    pub async fn deploy_body(&self, token: &str, body: Value) -> Answer {
        self.call(Method::POST, "/api/v1/instances", Some(token), Some(body))
            .await
    }

    pub async fn instance(&self, token: &str, id: &str) -> Answer {
        self.get(&format!("/api/v1/instances/{id}"), token).await
    }

    /// `status` of instance `id` as `token` sees it (panics unless 200).
    pub async fn status(&self, token: &str, id: &str) -> String {
        let answer = self.instance(token, id).await;
        assert_eq!(answer.status, StatusCode::OK, "{:#}", answer.body);
        answer.data()["status"].as_str().unwrap().to_owned()
    }

    pub async fn admin(&self, method: Method, path: &str, body: Option<Value>) -> Answer {
        self.call(method, path, None, body).await
    }

    /// Every row of `GET /_sim/instances`.
    pub async fn admin_instances(&self) -> Vec<Value> {
        let answer = self.admin(Method::GET, "/_sim/instances", None).await;
        assert_eq!(answer.status, StatusCode::OK);
        answer.body["instances"].as_array().unwrap().clone()
    }

    pub async fn put_faults(&self, faults: Value) {
        let answer = self.admin(Method::PUT, "/_sim/faults", Some(faults)).await;
        assert_eq!(answer.status, StatusCode::OK, "{:#}", answer.body);
    }

    pub async fn put_settings(&self, settings: Value) -> Value {
        let answer = self
            .admin(Method::PUT, "/_sim/settings", Some(settings))
            .await;
        assert_eq!(answer.status, StatusCode::OK, "{:#}", answer.body);
        answer.body
    }
}

/// Polls `check` every 10 ms until it gives `Some`, failing the test after `within`.
pub async fn wait_until<T, F, Fut>(what: &str, within: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + within;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {within:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Parses an RFC 3339 timestamp of a response.
pub fn time(value: &Value) -> std::time::SystemTime {
    humantime::parse_rfc3339(value.as_str().expect("timestamp string")).expect("RFC 3339")
}
