//! Test fixtures for the reconcile driver (after kube-rs/controller-rs): readable builders for
//! resources, the BeeOS simulator in-process, and a fake API server that keeps one
//! `BeeosInstance` (and some Secrets), applies the driver's patches to it the way the real one
//! does (resourceVersion guards, JSON-patch `test`), and records every request. A driver test
//! then reads as "given this resource, and this happening meanwhile, the driver made these
//! calls, and BeeOS saw these".

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use http::{Method, Request, Response, StatusCode};
use kube::Client;
use kube::client::Body;
use kube::runtime::controller::Action;
use kube::runtime::events::Reporter;
use kube::runtime::watcher;
use serde_json::{Value, json};

use super::{BeeosClients, Context, Intervals};
use crate::beeos::{BeeosClient, ClientOptions, Credential, DeployRequest};
use crate::crd::{BeeosInstance, BeeosInstanceSpec, FINALIZER};
use crate::metrics::Metrics;

pub const TOKEN: &str = "oag_00000000000000000000000000000000000000000000000000000000000000a1";
pub const OTHER_TOKEN: &str =
    "oag_00000000000000000000000000000000000000000000000000000000000000b2";
pub const NAMESPACE: &str = "team-a";

/// A catalog resource named `name` in [`NAMESPACE`], as the API server would hand it out.
pub fn resource(name: &str) -> BeeosInstance {
    let mut resource = BeeosInstance::new(
        name,
        BeeosInstanceSpec {
            variant_id: Some("beeos-claw-small".into()),
            ..BeeosInstanceSpec::default()
        },
    );
    resource.metadata.namespace = Some(NAMESPACE.into());
    resource.metadata.uid = Some(format!("uid-{name}"));
    resource.metadata.generation = Some(1);
    resource.metadata.resource_version = Some("1".into());
    resource.metadata.creation_timestamp =
        Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
            "2026-12-01T10:00:00Z".parse().expect("a valid timestamp"),
        ));
    resource
}

/// Builder methods for test resources.
pub trait Build {
    fn finalized(self) -> Self;
    fn annotated(self, key: &str, value: &str) -> Self;
    fn deleting(self) -> Self;
}

impl Build for BeeosInstance {
    fn finalized(mut self) -> Self {
        self.metadata
            .finalizers
            .get_or_insert_with(Vec::new)
            .push(FINALIZER.into());
        self
    }

    fn annotated(mut self, key: &str, value: &str) -> Self {
        self.metadata
            .annotations
            .get_or_insert_with(Default::default)
            .insert(key.into(), value.into());
        self
    }

    fn deleting(mut self) -> Self {
        self.metadata.deletion_timestamp =
            Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
                "2026-12-01T11:00:00Z".parse().expect("a valid timestamp"),
            ));
        self
    }
}

/// One request the driver made.
#[derive(Clone, Debug)]
pub struct Recorded {
    pub method: Method,
    pub path: String,
    pub content_type: String,
    pub body: Value,
}

impl Recorded {
    /// A write to the resource's metadata (not its status).
    pub fn is_metadata_patch(&self) -> bool {
        self.method == Method::PATCH
            && self.path.contains("/beeosinstances/")
            && !self.path.ends_with("/status")
    }

    /// A JSON patch (a list of operations, with a `test`).
    pub fn is_json_patch(&self) -> bool {
        self.content_type.contains("json-patch")
    }
}

/// Something that happens to the stored resource just before the driver's n-th request of a
/// kind is answered (e.g. another process replacing the pending mark).
type Meanwhile = Box<dyn FnOnce(&mut Value) + Send>;

struct State {
    resource: Value,
    secrets: HashMap<String, Value>,
    version: u64,
    requests: Vec<Recorded>,
    /// Before the first JSON patch is answered.
    before_json_patch: Option<Meanwhile>,
    /// Status codes for the next metadata patches, in order (else they are applied).
    metadata_patch_answers: Vec<u16>,
}

/// A fake API server holding one resource.
#[derive(Clone)]
pub struct FakeApiServer {
    state: Arc<Mutex<State>>,
}

fn status_error(code: u16, reason: &str, message: &str) -> (u16, Value) {
    (
        code,
        json!({"kind": "Status", "apiVersion": "v1", "status": "Failure",
               "message": message, "reason": reason, "code": code}),
    )
}

impl FakeApiServer {
    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Every request so far.
    pub fn requests(&self) -> Vec<Recorded> {
        self.state().requests.clone()
    }

    /// The stored resource now.
    pub fn resource(&self) -> BeeosInstance {
        serde_json::from_value(self.state().resource.clone()).expect("the stored resource parses")
    }

    /// Replaces the stored resource (as another client would).
    pub fn set_resource(&self, resource: &BeeosInstance) {
        let mut state = self.state();
        state.version += 1;
        let mut value = serde_json::to_value(resource).expect("serializes");
        value["metadata"]["resourceVersion"] = json!(state.version.to_string());
        state.resource = value;
    }

    /// A Secret `name` with `data` (plain strings) in the resource's namespace.
    pub fn put_secret(&self, name: &str, data: &[(&str, &str)]) {
        use base64::Engine as _;
        let data: serde_json::Map<String, Value> = data
            .iter()
            .map(|(k, v)| {
                (
                    (*k).to_owned(),
                    json!(base64::engine::general_purpose::STANDARD.encode(v)),
                )
            })
            .collect();
        self.state().secrets.insert(
            name.to_owned(),
            json!({"apiVersion": "v1", "kind": "Secret",
                   "metadata": {"name": name, "namespace": NAMESPACE, "resourceVersion": "1"},
                   "data": data}),
        );
    }

    /// The stored Secret `name`.
    pub fn secret(&self, name: &str) -> Option<Value> {
        self.state().secrets.get(name).cloned()
    }

    /// Runs `meanwhile` on the stored resource right before the first JSON patch is answered.
    pub fn before_json_patch(&self, meanwhile: impl FnOnce(&mut Value) + Send + 'static) {
        self.state().before_json_patch = Some(Box::new(meanwhile));
    }

    /// Answers the next metadata merge patch with `code` instead of applying it.
    pub fn fail_next_metadata_patch(&self, code: u16) {
        self.state().metadata_patch_answers.push(code);
    }

    fn answer(&self, recorded: Recorded) -> (u16, Value) {
        let mut state = self.state();
        state.requests.push(recorded.clone());
        let path = recorded.path.as_str();
        let method = &recorded.method;
        if path.contains("/events") {
            return (201, recorded.body);
        }
        if let Some(name) = path.split("/secrets/").nth(1) {
            let name = name.to_owned();
            return match *method {
                Method::GET => match state.secrets.get(&name) {
                    Some(secret) => (200, secret.clone()),
                    None => status_error(404, "NotFound", "secret not found"),
                },
                Method::PATCH => {
                    let Some(secret) = state.secrets.get_mut(&name) else {
                        return status_error(404, "NotFound", "secret not found");
                    };
                    let mut patch = recorded.body.clone();
                    if let Some(meta) = patch.get_mut("metadata").and_then(Value::as_object_mut) {
                        meta.remove("resourceVersion");
                    }
                    json_patch::merge(secret, &patch);
                    (200, secret.clone())
                }
                _ => status_error(405, "MethodNotAllowed", "not here"),
            };
        }
        if !path.contains("/beeosinstances/") {
            return status_error(404, "NotFound", "not served by the fake");
        }
        let current_version = state.version.to_string();
        match (method.clone(), path.ends_with("/status")) {
            (Method::GET, _) => (200, state.resource.clone()),
            (Method::PATCH, true) => {
                state.resource["status"] = recorded.body["status"].clone();
                state.bump()
            }
            (Method::PATCH, false) if recorded.is_json_patch() => {
                if let Some(meanwhile) = state.before_json_patch.take() {
                    meanwhile(&mut state.resource);
                    state.version += 1;
                    let version = state.version.to_string();
                    state.resource["metadata"]["resourceVersion"] = json!(version);
                }
                let patch: json_patch::Patch = match serde_json::from_value(recorded.body.clone()) {
                    Ok(patch) => patch,
                    Err(err) => return status_error(400, "BadRequest", &err.to_string()),
                };
                let mut patched = state.resource.clone();
                match json_patch::patch(&mut patched, &patch) {
                    Ok(()) => {
                        state.resource = patched;
                        state.bump()
                    }
                    Err(err) => status_error(422, "Invalid", &err.to_string()),
                }
            }
            (Method::PATCH, false) => {
                if !state.metadata_patch_answers.is_empty() {
                    let code = state.metadata_patch_answers.remove(0);
                    return status_error(code, "Conflict", "injected by the test");
                }
                let mut patch = recorded.body.clone();
                let guard = patch["metadata"]
                    .as_object_mut()
                    .and_then(|meta| meta.remove("resourceVersion"));
                if let Some(Value::String(guard)) = guard
                    && guard != current_version
                {
                    return status_error(409, "Conflict", "the object has been modified");
                }
                json_patch::merge(&mut state.resource, &patch);
                state.bump()
            }
            _ => status_error(405, "MethodNotAllowed", "not here"),
        }
    }
}

impl State {
    fn bump(&mut self) -> (u16, Value) {
        self.version += 1;
        self.resource["metadata"]["resourceVersion"] = json!(self.version.to_string());
        (200, self.resource.clone())
    }
}

/// A driver under test: its context, the fake API server and the simulator.
pub struct Fixture {
    pub context: Arc<Context>,
    pub api: FakeApiServer,
    pub sim: beeos_sim::Simulator,
}

/// Short intervals; `deploy_grace` as given.
pub fn intervals(deploy_grace: Duration) -> Intervals {
    Intervals {
        transition_poll: Duration::from_millis(100),
        steady_poll: Duration::from_secs(60),
        deploy_grace,
        ..Intervals::default()
    }
}

impl Fixture {
    /// A fixture whose stored resource is `resource`; the operator's default credential is
    /// [`TOKEN`] (owner `team-a`; [`OTHER_TOKEN`] is owner `team-b`).
    pub async fn new(
        resource: &BeeosInstance,
        intervals: Intervals,
        options: ClientOptions,
    ) -> Fixture {
        let sim = beeos_sim::Simulator::start(
            beeos_sim::SimConfig::default()
                .with_token(TOKEN, "team-a")
                .with_token(OTHER_TOKEN, "team-b"),
        )
        .await
        .expect("the simulator starts");
        let (service, handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
        let mut resource_value = serde_json::to_value(resource).expect("serializes");
        resource_value["metadata"]["resourceVersion"] = json!("1");
        let api = FakeApiServer {
            state: Arc::new(Mutex::new(State {
                resource: resource_value,
                secrets: HashMap::new(),
                version: 1,
                requests: Vec::new(),
                before_json_patch: None,
                metadata_patch_answers: Vec::new(),
            })),
        };
        tokio::spawn(serve(handle, api.clone()));
        let client = Client::new(service, NAMESPACE);
        let beeos = BeeosClients::new(
            sim.base_url(),
            options,
            Some(Credential::new(TOKEN).expect("a valid token")),
        );
        let context = Arc::new(Context::new(
            client,
            beeos,
            intervals,
            Arc::new(Metrics::default()),
            Reporter {
                controller: "beeos-operator-test".into(),
                instance: None,
            },
        ));
        Fixture { context, api, sim }
    }

    /// Lets the driver's indexes know of `resource` (another resource in the cluster, or the
    /// one under test), as the watch would.
    pub fn watched(&self, resource: &BeeosInstance) {
        self.context
            .observe_event(&watcher::Event::Apply(resource.clone()));
    }

    /// One reconcile of the stored resource, as the controller would run it for a resource it
    /// has looked at before.
    pub async fn reconcile(&self) -> Action {
        let resource = Arc::new(self.api.resource());
        self.context.first_look(&super::Key::of(&resource));
        super::reconcile::reconcile(resource, self.context.clone())
            .await
            .expect("the reconcile completes")
    }

    /// A client of the simulator as `token`.
    pub fn beeos(&self, token: &str) -> BeeosClient {
        BeeosClient::new(
            &self.sim.base_url(),
            Credential::new(token).expect("a valid token"),
            ClientOptions::default(),
        )
        .expect("a client")
    }

    /// Deploys an instance straight at BeeOS as `token`, as someone outside would.
    pub async fn deploy_directly(&self, token: &str, name: &str) -> String {
        self.beeos(token)
            .deploy(&DeployRequest {
                name: name.into(),
                variant_id: Some("beeos-claw-small".into()),
                ..DeployRequest::default()
            })
            .await
            .expect("the deploy succeeds")
            .instance_id
    }

    /// The simulator's instance table.
    pub async fn table(&self) -> Vec<Value> {
        let answer: Value = reqwest::get(format!("{}/_sim/instances", self.sim.base_url()))
            .await
            .expect("the admin API answers")
            .json()
            .await
            .expect("JSON");
        answer["instances"].as_array().cloned().unwrap_or_default()
    }

    /// Calls the simulator received on `route`.
    pub async fn calls(&self, route: &str) -> u64 {
        let answer: Value = reqwest::get(format!("{}/_sim/calls", self.sim.base_url()))
            .await
            .expect("the admin API answers")
            .json()
            .await
            .expect("JSON");
        answer["routes"][route].as_u64().unwrap_or(0)
    }

    /// Waits (bounded) until `check` holds for the simulator's table.
    pub async fn wait_for_table(&self, what: &str, check: impl Fn(&[Value]) -> bool) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            let table = self.table().await;
            if check(&table) {
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "{what} did not happen; table: {table:?}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

async fn serve(
    mut handle: tower_test::mock::Handle<Request<Body>, Response<Body>>,
    api: FakeApiServer,
) {
    while let Some((request, send)) = handle.next_request().await {
        let method = request.method().clone();
        let path = request.uri().path().to_owned();
        let content_type = request
            .headers()
            .get(http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        let bytes = request
            .into_body()
            .collect_bytes()
            .await
            .unwrap_or_default();
        let body = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        let (code, answer) = api.answer(Recorded {
            method,
            path,
            content_type,
            body,
        });
        let response = Response::builder()
            .status(StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR))
            .header(http::header::CONTENT_TYPE, "application/json")
            .body(Body::from(serde_json::to_vec(&answer).unwrap_or_default()))
            .expect("a response");
        send.send_response(response);
    }
}
