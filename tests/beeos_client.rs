//! The BeeOS client against the simulator, in process: every call's happy path, every error class
//! and every fault mode, the client-side rate limit, and that the credential never shows in
//! `Debug`, `Display`, errors or traces. Each test starts its own simulator.

use std::io;
use std::num::NonZeroU32;
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::time::{Duration, Instant};

use beeos_operator::beeos::{
    BeeosClient, ClientOptions, Connectivity, Credential, DeployRequest, DesiredStatus, Error,
    ErrorClass, Instance, InstanceStatus, ListQuery, Operation, RateLimiters,
};
use beeos_sim::{SimConfig, Simulator};
use governor::Quota;
use serde_json::{Value, json};

const ALICE: &str = "oag_a11ce00000000000000000000000000000000000000000000000000000a11ce";
const BOB: &str = "oag_b0b0000000000000000000000000000000000000000000000000000000000b0b";
const STRANGER: &str = "oag_5742a46e700000000000000000000000000000000000000000000005742a46e7";
const VARIANT: &str = "beeos-claw-small";

/// How long any condition may take before a test fails.
const DEADLINE: Duration = Duration::from_secs(10);

async fn simulator() -> Simulator {
    traces();
    Simulator::start(
        SimConfig::default()
            .with_token(ALICE, "alice")
            .with_token(BOB, "bob"),
    )
    .await
    .expect("simulator starts")
}

fn client(sim: &Simulator, token: &str) -> BeeosClient {
    client_with(sim, token, ClientOptions::default())
}

fn client_with(sim: &Simulator, token: &str, options: ClientOptions) -> BeeosClient {
    BeeosClient::new(&sim.base_url(), Credential::new(token).unwrap(), options).unwrap()
}

fn variant_request(name: &str) -> DeployRequest {
    DeployRequest {
        name: name.to_owned(),
        variant_id: Some(VARIANT.to_owned()),
        ..DeployRequest::default()
    }
}

async fn admin_put(sim: &Simulator, path: &str, body: Value) {
    let response = reqwest::Client::new()
        .put(format!("{}/_sim/{path}", sim.base_url()))
        .json(&body)
        .send()
        .await
        .unwrap();
    assert!(
        response.status().is_success(),
        "PUT /_sim/{path}: {}",
        response.text().await.unwrap()
    );
}

async fn admin_get(sim: &Simulator, path: &str) -> Value {
    reqwest::get(format!("{}/_sim/{path}", sim.base_url()))
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

async fn calls(sim: &Simulator, route: &str) -> u64 {
    admin_get(sim, "calls").await["routes"][route]
        .as_u64()
        .unwrap()
}

async fn sim_instances_named(sim: &Simulator, name: &str) -> Vec<Value> {
    admin_get(sim, "instances").await["instances"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|instance| instance["name"] == name)
        .cloned()
        .collect()
}

/// Polls `get` until `done` holds for the instance, failing after [`DEADLINE`].
async fn wait_for_instance(
    client: &BeeosClient,
    instance_id: &str,
    what: &str,
    done: impl Fn(&Instance) -> bool,
) -> Instance {
    let deadline = Instant::now() + DEADLINE;
    loop {
        let instance = client.get(instance_id).await.unwrap();
        if done(&instance) {
            return instance;
        }
        assert!(
            Instant::now() < deadline,
            "instance {instance_id} never became {what}: {instance:?}"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// Polls `condition` until it holds, failing after [`DEADLINE`].
async fn wait_until<F, Fut>(what: &str, condition: F)
where
    F: Fn() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = Instant::now() + DEADLINE;
    while !condition().await {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

fn is_settled(status: InstanceStatus) -> impl Fn(&Instance) -> bool {
    move |instance| instance.status.as_ref() == Some(&status) && !instance.is_transitioning()
}

/// Deploys a catalog instance named `name` and waits until it runs; returns its id.
async fn deploy_running(client: &BeeosClient, name: &str) -> String {
    let instance_id = client
        .deploy(&variant_request(name))
        .await
        .unwrap()
        .instance_id;
    wait_for_instance(
        client,
        &instance_id,
        "running",
        is_settled(InstanceStatus::Running),
    )
    .await;
    instance_id
}

#[tokio::test]
async fn deploy_then_drive_the_whole_lifecycle() {
    let sim = simulator().await;
    admin_put(&sim, "settings", json!({"terminatedRetentionMs": 300})).await;
    let alice = client(&sim, ALICE);

    let deployed = alice
        .deploy(&DeployRequest {
            preferred_region: Some("eu-west-1".into()),
            ..variant_request("lifecycle-1")
        })
        .await
        .unwrap();
    assert!(deployed.instance_id.starts_with("inst_"), "{deployed:?}");
    assert_eq!(deployed.name, "lifecycle-1");
    assert_eq!(deployed.owner_id, "alice");
    assert_eq!(deployed.desired_status, Some(DesiredStatus::Running));
    assert!(deployed.is_transitioning());
    let instance_id = deployed.instance_id.clone();

    let fetched = alice.get(&instance_id).await.unwrap();
    assert_eq!(fetched.instance_id, instance_id);

    let running = wait_for_instance(
        &alice,
        &instance_id,
        "running",
        is_settled(InstanceStatus::Running),
    )
    .await;
    assert_eq!(running.connectivity, Some(Connectivity::Online));

    let stopping = alice.stop(&instance_id).await.unwrap();
    assert_eq!(stopping.desired_status, Some(DesiredStatus::Stopped));
    wait_for_instance(
        &alice,
        &instance_id,
        "stopped",
        is_settled(InstanceStatus::Stopped),
    )
    .await;

    let starting = alice.start(&instance_id).await.unwrap();
    assert_eq!(starting.desired_status, Some(DesiredStatus::Running));
    wait_for_instance(
        &alice,
        &instance_id,
        "running again",
        is_settled(InstanceStatus::Running),
    )
    .await;

    alice.restart(&instance_id).await.unwrap();
    wait_for_instance(
        &alice,
        &instance_id,
        "running after restart",
        is_settled(InstanceStatus::Running),
    )
    .await;

    alice.destroy(&instance_id).await.unwrap();
    let deadline = Instant::now() + DEADLINE;
    loop {
        match alice.get(&instance_id).await {
            Ok(instance) => {
                assert!(
                    Instant::now() < deadline,
                    "destroyed instance never disappeared: {instance:?}"
                );
                tokio::time::sleep(Duration::from_millis(25)).await;
            }
            Err(err) => {
                assert!(err.is_not_found(), "{err:?}");
                break;
            }
        }
    }
    let again = alice.destroy(&instance_id).await.unwrap_err();
    assert!(again.is_not_found(), "{again:?}");
}

#[tokio::test]
async fn explicit_deploy_sends_every_field() {
    let sim = simulator().await;
    let alice = client(&sim, ALICE);
    let object = |value: Value| value.as_object().cloned();
    let request = DeployRequest {
        name: "explicit-1".into(),
        agent_framework: Some("openclaw".into()),
        provider_id: Some("openclaw-k8s".into()),
        provider_config: object(json!({"image": "custom"})),
        config: object(json!({"apiKeys": {"openai": "sk-test"}})),
        model_primary: Some("gpt-5-mini".into()),
        models: vec!["gpt-5-mini".into(), "deepseek-r1".into()],
        system_prompt: Some("be brief".into()),
        mcp_servers: object(json!({"files": {"url": "http://mcp.local"}})),
        bridge_id: Some("bridge_1".into()),
        cluster_id: Some("cl-east-1".into()),
        preferred_region: Some("us-east-1".into()),
        ..DeployRequest::default()
    };
    let deployed = alice.deploy(&request).await.unwrap();
    assert_eq!(deployed.agent_framework, "openclaw");
    assert_eq!(deployed.provider_id, "openclaw-k8s");
    assert_eq!(deployed.model_primary, "gpt-5-mini");
    assert_eq!(deployed.cluster_id.as_deref(), Some("cl-east-1"));
    assert_eq!(deployed.bridge_id, "bridge_1");

    let stored = sim_instances_named(&sim, "explicit-1").await;
    assert_eq!(stored.len(), 1);
    let sent = &stored[0]["deployRequest"];
    assert_eq!(sent, &serde_json::to_value(&request).unwrap());
}

#[tokio::test]
async fn list_pages_through_everything_and_filters() {
    let sim = simulator().await;
    let alice = client(&sim, ALICE);
    let bob = client(&sim, BOB);
    for n in 0..7 {
        alice
            .deploy(&variant_request(&format!("paged-{n}")))
            .await
            .unwrap();
    }
    for n in 0..2 {
        alice
            .deploy(&DeployRequest {
                name: format!("other-{n}"),
                agent_framework: Some("device-agent".into()),
                provider_id: Some("byod".into()),
                ..DeployRequest::default()
            })
            .await
            .unwrap();
    }
    bob.deploy(&variant_request("paged-bob")).await.unwrap();

    let page = alice
        .list(&ListQuery {
            page: 1,
            page_size: 4,
            ..ListQuery::default()
        })
        .await
        .unwrap();
    assert_eq!(page.instances.len(), 4);
    assert_eq!(page.total, Some(9));
    assert!(!page.is_last());

    let before = calls(&sim, "list").await;
    let everything = alice
        .list_all(&ListQuery {
            page_size: 3,
            ..ListQuery::default()
        })
        .await
        .unwrap();
    assert_eq!(everything.len(), 9);
    assert!(
        everything
            .iter()
            .all(|instance| instance.owner_id == "alice")
    );
    // 9 instances at 3 a page: pages 0, 1 and 2, and no empty fourth call.
    assert_eq!(calls(&sim, "list").await - before, 3);

    let searched = alice.list_all(&ListQuery::search("paged-")).await.unwrap();
    let mut names: Vec<_> = searched.iter().map(|i| i.name.clone()).collect();
    names.sort();
    assert_eq!(
        names,
        (0..7).map(|n| format!("paged-{n}")).collect::<Vec<_>>()
    );

    let by_framework = alice
        .list_all(&ListQuery {
            agent_framework: Some("device-agent".into()),
            ..ListQuery::default()
        })
        .await
        .unwrap();
    assert_eq!(by_framework.len(), 2);

    let nothing = alice
        .list(&ListQuery::search("no-such-name"))
        .await
        .unwrap();
    assert!(nothing.instances.is_empty());
    assert_eq!(nothing.total, Some(0));
    assert!(nothing.is_last());
}

#[tokio::test]
async fn list_status_filter_uses_the_wire_spelling() {
    let sim = simulator().await;
    let alice = client(&sim, ALICE);
    let instance_id = deploy_running(&alice, "status-filter").await;
    let running = alice
        .list(&ListQuery {
            status: Some(InstanceStatus::Running),
            ..ListQuery::default()
        })
        .await
        .unwrap();
    assert_eq!(running.instances.len(), 1);
    assert_eq!(running.instances[0].instance_id, instance_id);
    let stopped = alice
        .list(&ListQuery {
            status: Some(InstanceStatus::Stopped),
            ..ListQuery::default()
        })
        .await
        .unwrap();
    assert!(stopped.instances.is_empty());
}

#[tokio::test]
async fn catalog_calls_decode() {
    let sim = simulator().await;
    let alice = client(&sim, ALICE);
    let providers = alice.providers().await.unwrap();
    assert!(
        providers.iter().any(|p| p.meta.id == "default"),
        "{providers:?}"
    );
    let regions = alice.regions(Some("default")).await.unwrap();
    assert!(!regions.is_empty());
    assert!(regions.iter().all(|r| !r.id.is_empty()));
    let all_regions = alice.regions(None).await.unwrap();
    assert!(all_regions.len() >= regions.len());
    let models = alice.models(None).await.unwrap();
    assert!(models.iter().any(|m| m.id == "gpt-5-mini"), "{models:?}");

    let err = alice.regions(Some("no-such-provider")).await.unwrap_err();
    assert!(matches!(err, Error::InvalidRequest(_)), "{err:?}");
    assert_eq!(err.param(), Some("providerId"));
    assert_eq!(err.operation(), Some(Operation::Regions));
}

#[tokio::test]
async fn validation_errors_carry_code_param_and_request_id() {
    let sim = simulator().await;
    let alice = client(&sim, ALICE);

    let neither = alice
        .deploy(&DeployRequest {
            name: "neither".into(),
            ..DeployRequest::default()
        })
        .await
        .unwrap_err();
    assert!(matches!(neither, Error::InvalidRequest(_)), "{neither:?}");
    assert_eq!(neither.status(), Some(400));
    assert_eq!(neither.code(), Some("missing_param"));
    assert_eq!(neither.param(), Some("variantId"));
    assert_eq!(neither.class(), ErrorClass::Permanent);
    assert_eq!(neither.reason(), "BeeosInvalidRequest");
    assert_eq!(neither.operation(), Some(Operation::Deploy));
    assert!(neither.request_id().is_some_and(|id| !id.is_empty()));
    assert!(!neither.may_have_taken_effect());

    let both = alice
        .deploy(&DeployRequest {
            agent_framework: Some("openclaw".into()),
            ..variant_request("both")
        })
        .await
        .unwrap_err();
    assert_eq!(both.code(), Some("invalid_param"));
    assert_eq!(both.param(), Some("agentFramework"));

    let unknown_variant = alice
        .deploy(&DeployRequest {
            variant_id: Some("no-such-variant".into()),
            ..variant_request("unknown")
        })
        .await
        .unwrap_err();
    assert_eq!(unknown_variant.param(), Some("variantId"));

    assert!(sim_instances_named(&sim, "neither").await.is_empty());
}

#[tokio::test]
async fn unknown_token_is_unauthorized_on_every_call() {
    let sim = simulator().await;
    let stranger = client(&sim, STRANGER);
    let errors = [
        stranger.deploy(&variant_request("x")).await.unwrap_err(),
        stranger.list(&ListQuery::default()).await.unwrap_err(),
        stranger.get("inst_1").await.unwrap_err(),
        stranger.providers().await.unwrap_err(),
    ];
    for err in errors {
        assert!(matches!(err, Error::Unauthorized(_)), "{err:?}");
        assert_eq!(err.code(), Some("invalid_token"));
        assert_eq!(err.class(), ErrorClass::Permanent);
        assert_eq!(err.reason(), "BeeosUnauthorized");
        let shown = format!("{err} {err:?}");
        assert!(!shown.contains(STRANGER), "{shown}");
    }
}

#[tokio::test]
async fn another_owners_instance_is_forbidden_on_every_call() {
    let sim = simulator().await;
    let alice = client(&sim, ALICE);
    let bob = client(&sim, BOB);
    let instance_id = alice
        .deploy(&variant_request("alice-only"))
        .await
        .unwrap()
        .instance_id;

    let errors = [
        bob.get(&instance_id).await.unwrap_err(),
        bob.start(&instance_id).await.unwrap_err(),
        bob.stop(&instance_id).await.unwrap_err(),
        bob.restart(&instance_id).await.unwrap_err(),
        bob.destroy(&instance_id).await.unwrap_err(),
    ];
    for err in errors {
        // 403 means "not ours", never "gone": a finalizer must not take it for a destroyed instance.
        assert!(matches!(err, Error::Forbidden(_)), "{err:?}");
        assert!(!err.is_not_found(), "{err:?}");
        assert_eq!(err.status(), Some(403));
        assert_eq!(err.code(), Some("forbidden"));
        assert_eq!(err.class(), ErrorClass::Permanent);
        assert_eq!(err.reason(), "BeeosForbidden");
    }
    assert!(
        bob.list_all(&ListQuery::search("alice-only"))
            .await
            .unwrap()
            .is_empty()
    );
    // Still Alice's and untouched: running was asked for, and nobody stopped or destroyed it.
    let hers = alice.get(&instance_id).await.unwrap();
    assert_eq!(hers.desired_status, Some(DesiredStatus::Running));
}

#[tokio::test]
async fn disallowed_transitions_conflict() {
    let sim = simulator().await;
    let alice = client(&sim, ALICE);
    let instance_id = deploy_running(&alice, "conflicts").await;

    let err = alice.start(&instance_id).await.unwrap_err();
    assert!(err.is_conflict(), "{err:?}");
    assert_eq!(err.code(), Some("conflict"));
    assert_eq!(err.class(), ErrorClass::Transition);
    assert!(!err.is_retryable());
    assert_eq!(err.reason(), "BeeosConflict");
    assert_eq!(err.operation(), Some(Operation::Start));

    alice.stop(&instance_id).await.unwrap();
    let while_stopping = alice.restart(&instance_id).await.unwrap_err();
    assert!(while_stopping.is_conflict(), "{while_stopping:?}");
}

#[tokio::test]
async fn oversized_deploy_is_payload_too_large() {
    let sim = simulator().await;
    let alice = client(&sim, ALICE);
    let err = alice
        .deploy(&DeployRequest {
            config: json!({"blob": "x".repeat(70 * 1024)}).as_object().cloned(),
            ..variant_request("too-big")
        })
        .await
        .unwrap_err();
    assert!(matches!(err, Error::PayloadTooLarge(_)), "{err:?}");
    assert_eq!(err.code(), Some("payload_too_large"));
    assert_eq!(err.class(), ErrorClass::Permanent);
    assert_eq!(err.reason(), "BeeosPayloadTooLarge");
    assert!(sim_instances_named(&sim, "too-big").await.is_empty());
}

#[tokio::test]
async fn server_rate_limit_answers_429_with_retry_after() {
    let sim = simulator().await;
    admin_put(
        &sim,
        "settings",
        json!({"rateLimitPerSecond": 0.2, "rateLimitBurst": 1}),
    )
    .await;
    let alice = client(&sim, ALICE);
    alice.providers().await.unwrap();
    let err = alice.providers().await.unwrap_err();
    let Error::RateLimited { retry_after, .. } = &err else {
        panic!("expected 429, got {err:?}")
    };
    // One token every 5 s, just spent: BeeOS asks for up to 5 s.
    let retry_after = retry_after.expect("Retry-After is parsed");
    assert!(
        (Duration::from_secs(1)..=Duration::from_secs(5)).contains(&retry_after),
        "{retry_after:?}"
    );
    assert_eq!(err.retry_after(), Some(retry_after));
    assert_eq!(err.code(), Some("rate_limited"));
    assert_eq!(err.class(), ErrorClass::Retryable);
    assert_eq!(err.reason(), "BeeosRateLimited");
    assert!(!err.may_have_taken_effect());
}

#[tokio::test]
async fn injected_429_carries_its_retry_after() {
    let sim = simulator().await;
    admin_put(
        &sim,
        "faults",
        json!({"routes": {"list": {"status": 429, "count": 1, "retryAfterSeconds": 3}}}),
    )
    .await;
    let alice = client(&sim, ALICE);
    let err = alice.list(&ListQuery::default()).await.unwrap_err();
    assert_eq!(err.retry_after(), Some(Duration::from_secs(3)), "{err:?}");
    assert!(err.is_retryable());
    alice.list(&ListQuery::default()).await.unwrap();
}

#[tokio::test]
async fn every_route_fault_is_a_retryable_server_error_then_clears() {
    let sim = simulator().await;
    let alice = client(&sim, ALICE);
    let instance_id = deploy_running(&alice, "faulted").await;

    let statuses = [500_u16, 502, 503, 504];
    let routes = [
        "deploy",
        "list",
        "get",
        "start",
        "stop",
        "restart",
        "destroy",
        "providers",
        "regions",
        "models",
    ];
    let faults: serde_json::Map<String, Value> = routes
        .iter()
        .zip(statuses.iter().cycle())
        .map(|(route, status)| {
            (
                (*route).to_owned(),
                json!({"status": status, "count": 1, "errorRate": 1.0}),
            )
        })
        .collect();
    admin_put(&sim, "faults", json!({"routes": faults})).await;

    // Each call meets its route's one fault first, whatever the instance's state.
    let errors = [
        alice
            .deploy(&variant_request("faulted-2"))
            .await
            .unwrap_err(),
        alice.list(&ListQuery::default()).await.unwrap_err(),
        alice.get(&instance_id).await.unwrap_err(),
        alice.start(&instance_id).await.unwrap_err(),
        alice.stop(&instance_id).await.unwrap_err(),
        alice.restart(&instance_id).await.unwrap_err(),
        alice.destroy(&instance_id).await.unwrap_err(),
        alice.providers().await.unwrap_err(),
        alice.regions(None).await.unwrap_err(),
        alice.models(None).await.unwrap_err(),
    ];
    for ((err, route), status) in errors.iter().zip(routes).zip(statuses.iter().cycle()) {
        assert!(matches!(err, Error::Server(_)), "{route}: {err:?}");
        assert_eq!(err.status(), Some(*status), "{route}");
        assert_eq!(err.operation().map(Operation::as_str), Some(route));
        assert!(err.is_retryable(), "{route}");
        assert_eq!(err.reason(), "BeeosServerError");
        assert!(
            err.may_have_taken_effect(),
            "{route}: a 5xx leaves the outcome open"
        );
        assert!(err.request_id().is_some(), "{route}");
        assert!(err.code().is_some(), "{route}");
    }
    assert!(sim_instances_named(&sim, "faulted-2").await.is_empty());

    // The counts are spent: the same calls go through now.
    alice.get(&instance_id).await.unwrap();
    alice.providers().await.unwrap();
    alice.list(&ListQuery::default()).await.unwrap();
}

#[tokio::test]
async fn latency_beyond_the_client_timeout_is_a_timeout() {
    let sim = simulator().await;
    admin_put(&sim, "faults", json!({"latencyMs": 3000})).await;
    let alice = client_with(
        &sim,
        ALICE,
        ClientOptions {
            timeout: Duration::from_millis(300),
            ..ClientOptions::default()
        },
    );
    let started = Instant::now();
    let err = alice.list(&ListQuery::default()).await.unwrap_err();
    assert!(matches!(err, Error::Timeout { .. }), "{err:?}");
    assert!(started.elapsed() < Duration::from_secs(3), "gave up early");
    assert_eq!(err.class(), ErrorClass::Retryable);
    assert_eq!(err.reason(), "BeeosTimeout");
    assert_eq!(err.operation(), Some(Operation::List));
    assert!(err.may_have_taken_effect());
}

#[tokio::test]
async fn a_reset_deploy_response_is_a_transport_error_but_the_instance_exists() {
    let sim = simulator().await;
    admin_put(
        &sim,
        "faults",
        json!({"dropDeployResponse": {"mode": "reset", "count": 1}}),
    )
    .await;
    let alice = client(&sim, ALICE);
    let err = alice
        .deploy(&variant_request("lost-reset"))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Transport { .. }), "{err:?}");
    assert_eq!(err.class(), ErrorClass::Retryable);
    assert_eq!(err.reason(), "BeeosTransportError");
    assert!(err.may_have_taken_effect(), "sent, then lost: {err:?}");

    let stored = sim_instances_named(&sim, "lost-reset").await;
    assert_eq!(stored.len(), 1, "the deploy was committed");
    // The recovery the controller relies on: find it by name instead of deploying again.
    let found = alice
        .list_all(&ListQuery::search("lost-reset"))
        .await
        .unwrap();
    assert_eq!(found.len(), 1);
    assert_eq!(found[0].instance_id, stored[0]["id"].as_str().unwrap());
}

#[tokio::test]
async fn a_held_deploy_response_times_out_but_the_instance_exists() {
    let sim = simulator().await;
    admin_put(
        &sim,
        "faults",
        json!({"dropDeployResponse": {"mode": "timeout", "count": 1, "holdMs": 5000}}),
    )
    .await;
    let alice = client_with(
        &sim,
        ALICE,
        ClientOptions {
            timeout: Duration::from_millis(300),
            ..ClientOptions::default()
        },
    );
    let err = alice
        .deploy(&variant_request("lost-timeout"))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Timeout { .. }), "{err:?}");
    assert!(err.may_have_taken_effect());
    assert_eq!(sim_instances_named(&sim, "lost-timeout").await.len(), 1);
}

#[tokio::test]
async fn a_refused_connection_is_a_transport_error_that_never_took_effect() {
    let sim = simulator().await;
    let base_url = sim.base_url();
    drop(sim);
    let alice = BeeosClient::new(
        &base_url,
        Credential::new(ALICE).unwrap(),
        ClientOptions::default(),
    )
    .unwrap();
    let err = alice.deploy(&variant_request("nobody")).await.unwrap_err();
    assert!(
        matches!(err, Error::Transport { connect: true, .. }),
        "{err:?}"
    );
    assert!(err.is_retryable());
    assert!(!err.may_have_taken_effect());
}

fn slow_quota(burst: u32) -> Quota {
    // One cell a minute: nothing refills during the test, so what is let through is exact.
    Quota::with_period(Duration::from_secs(60))
        .unwrap()
        .allow_burst(NonZeroU32::new(burst).unwrap())
}

#[tokio::test]
async fn the_client_rate_limit_is_shared_per_credential_and_waits() {
    let sim = simulator().await;
    let limiters = RateLimiters::new(slow_quota(2));
    let options = ClientOptions {
        rate_limiters: Some(limiters.clone()),
        ..ClientOptions::default()
    };
    let alice_1 = client_with(&sim, ALICE, options.clone());
    let alice_2 = client_with(&sim, ALICE, options.clone());
    let bob = alice_1
        .with_credential(Credential::new(BOB).unwrap())
        .unwrap();

    let spawn = |client: &BeeosClient| {
        let client = client.clone();
        tokio::spawn(async move { client.providers().await })
    };
    let first = [spawn(&alice_1), spawn(&alice_1), spawn(&alice_1)];
    let finished = |handles: &[tokio::task::JoinHandle<_>]| {
        handles.iter().filter(|handle| handle.is_finished()).count()
    };
    wait_until("Alice's burst of two calls to finish", || async {
        finished(&first) >= 2
    })
    .await;
    let second_client = spawn(&alice_2);

    // Bob's bucket is his own: his call goes through while Alice's third call waits.
    bob.providers().await.unwrap();
    assert_eq!(
        calls(&sim, "providers").await,
        3,
        "two of Alice's and Bob's"
    );
    assert_eq!(finished(&first), 2, "Alice's burst is 2");
    assert!(
        !second_client.is_finished(),
        "Alice's second client shares her (empty) bucket"
    );
    assert_eq!(limiters.len(), 2);

    for handle in first {
        if handle.is_finished() {
            handle.await.unwrap().unwrap();
        } else {
            handle.abort();
        }
    }
    second_client.abort();
}

/// Client: one call per 250 ms after a burst of 2. BeeOS: the same rate, and a burst of 4.
const CLIENT_PERIOD: Duration = Duration::from_millis(250);

#[tokio::test]
async fn the_client_rate_limit_keeps_calls_inside_the_server_quota() {
    // Why no scheduling delay can make this fail: Bob's calls go one at a time, each after the
    // answer to the one before. So BeeOS checks call j before the client lets call j+1 out, and
    // between BeeOS's checks of calls j and k lie at least the client's gaps from j+1 to k.
    // The client (GCRA, burst 2) lets at most 2 + t/period calls out in any span t, so BeeOS
    // sees at most 3 + t/period calls in any span t of its own; a bucket refilling at the same
    // rate and holding 4 always has one to spare. A late wake-up or a slow answer only widens
    // the gaps, and so only adds to BeeOS's refill. Without the client-side limit the calls
    // would go out back to back, and the fifth would need a quarter of a second of refill.
    let sim = simulator().await;

    // BeeOS's burst binds: with (next to) no refill, 6 calls at once get exactly 2 refusals,
    // whatever their timing.
    admin_put(
        &sim,
        "settings",
        json!({"rateLimitPerSecond": 0.0001, "rateLimitBurst": 4}),
    )
    .await;
    let unlimited = client(&sim, ALICE);
    let results = futures::future::join_all((0..6).map(|_| unlimited.providers())).await;
    let refused = results
        .iter()
        .filter(|r| matches!(r, Err(Error::RateLimited { .. })))
        .count();
    assert_eq!(refused, 2, "{results:?}");
    assert_eq!(results.iter().filter(|r| r.is_ok()).count(), 4);

    admin_put(
        &sim,
        "settings",
        json!({"rateLimitPerSecond": 1.0 / CLIENT_PERIOD.as_secs_f64(), "rateLimitBurst": 4}),
    )
    .await;
    let limited = client_with(
        &sim,
        BOB,
        ClientOptions {
            rate_limiters: Some(RateLimiters::new(
                Quota::with_period(CLIENT_PERIOD)
                    .unwrap()
                    .allow_burst(NonZeroU32::new(2).unwrap()),
            )),
            ..ClientOptions::default()
        },
    );
    let started = Instant::now();
    for n in 0..8 {
        if let Err(err) = limited.providers().await {
            panic!("call {n} was refused: {err:?}");
        }
    }
    // The limit, not chance, spaced them: after the burst of 2, one call per period.
    assert!(
        started.elapsed() >= CLIENT_PERIOD * 6,
        "{:?}",
        started.elapsed()
    );
    assert_eq!(calls(&sim, "providers").await, 6 + 8);
}

#[tokio::test]
async fn invalid_input_is_refused_without_a_call() {
    let sim = simulator().await;
    let alice = client(&sim, ALICE);
    let err = alice.get("").await.unwrap_err();
    assert!(matches!(err, Error::InvalidInput { .. }), "{err:?}");
    assert_eq!(err.reason(), "BeeosInvalidInput");
    assert_eq!(calls(&sim, "get").await + calls(&sim, "list").await, 0);
}

/// A `MakeWriter` collecting everything a subscriber writes.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Captured {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap_or_else(PoisonError::into_inner)).into_owned()
    }
}

impl io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Captured {
    type Writer = Captured;

    fn make_writer(&'a self) -> Self::Writer {
        self.clone()
    }
}

/// Everything every test of this file traced, at TRACE level.
///
/// One global subscriber, installed by [`simulator`] before any test traces anything: a scoped
/// (thread-local) one can lose callsites to tracing's global interest cache when another test
/// thread registers them first.
fn traces() -> &'static Captured {
    static TRACES: OnceLock<Captured> = OnceLock::new();
    TRACES.get_or_init(|| {
        let captured = Captured::default();
        let subscriber = tracing_subscriber::fmt()
            .with_max_level(tracing::Level::TRACE)
            .with_span_events(tracing_subscriber::fmt::format::FmtSpan::CLOSE)
            .with_ansi(false)
            .with_writer(captured.clone())
            .finish();
        tracing::subscriber::set_global_default(subscriber).expect("the only global subscriber");
        captured
    })
}

#[tokio::test]
async fn the_token_never_shows_in_debug_display_errors_or_traces() {
    let sim = simulator().await;
    // Instances stay pending, so a start is refused with 409 however slow the machine is.
    admin_put(&sim, "settings", json!({"pendingMs": 600_000})).await;
    let alice = client(&sim, ALICE);
    let bob = client(&sim, BOB);
    let stranger = client(&sim, STRANGER);
    let mut errors: Vec<Error> = Vec::new();

    let instance_id = alice
        .deploy(&variant_request("secretive"))
        .await
        .unwrap()
        .instance_id;
    errors.push(stranger.get(&instance_id).await.unwrap_err()); // 401
    errors.push(bob.get(&instance_id).await.unwrap_err()); // 403
    errors.push(alice.get("inst_nobodys").await.unwrap_err()); // 404
    errors.push(alice.start(&instance_id).await.unwrap_err()); // 409 (pending)
    errors.push(
        alice
            .deploy(&DeployRequest {
                name: "invalid".into(),
                ..DeployRequest::default()
            })
            .await
            .unwrap_err(),
    ); // 400
    errors.push(
        alice
            .deploy(&DeployRequest {
                system_prompt: Some("y".repeat(70 * 1024)),
                ..variant_request("huge")
            })
            .await
            .unwrap_err(),
    ); // 413
    admin_put(&sim, "faults", json!({"routes": {"get": {"status": 503, "count": 1}, "list": {"status": 429, "count": 1}}})).await;
    errors.push(alice.get(&instance_id).await.unwrap_err()); // 503
    errors.push(alice.list(&ListQuery::default()).await.unwrap_err()); // 429
    admin_put(
        &sim,
        "faults",
        json!({"dropDeployResponse": {"mode": "reset", "count": 1}}),
    )
    .await;
    errors.push(alice.deploy(&variant_request("dropped")).await.unwrap_err()); // transport
    admin_put(&sim, "faults", json!({"latencyMs": 2000})).await;
    let impatient = client_with(
        &sim,
        ALICE,
        ClientOptions {
            timeout: Duration::from_millis(200),
            ..ClientOptions::default()
        },
    );
    errors.push(impatient.get(&instance_id).await.unwrap_err()); // timeout
    errors.push(Credential::new(format!("{ALICE} with spaces")).unwrap_err()); // config

    let reasons: Vec<&str> = errors.iter().map(Error::reason).collect();
    assert_eq!(
        reasons,
        [
            "BeeosUnauthorized",
            "BeeosForbidden",
            "BeeosNotFound",
            "BeeosConflict",
            "BeeosInvalidRequest",
            "BeeosPayloadTooLarge",
            "BeeosServerError",
            "BeeosRateLimited",
            "BeeosTransportError",
            "BeeosTimeout",
            "BeeosClientConfig",
        ]
    );

    let mut shown = String::new();
    for err in &errors {
        shown.push_str(&format!("{err}\n{err:?}\n{err:#?}\n"));
        let mut source = std::error::Error::source(err);
        while let Some(inner) = source {
            shown.push_str(&format!("{inner}\n{inner:?}\n"));
            source = inner.source();
        }
    }
    for client in [&alice, &bob, &stranger, &impatient] {
        shown.push_str(&format!(
            "{client:?}\n{client:#?}\n{:?}\n{}\n",
            client.credential(),
            client.credential()
        ));
    }
    // Every test's traces, so the calls of all of them are checked too.
    let traces = traces().text();
    for token in [ALICE, BOB, STRANGER] {
        // The random part of each token, so no prefix or encoding slips through.
        let secret = &token["oag_".len()..];
        assert!(!shown.contains(secret), "token in Debug/Display:\n{shown}");
        assert!(!traces.contains(secret), "token in traces:\n{traces}");
    }
    // The traces are not empty: each call left a span with its operation and status.
    assert!(
        traces.contains(&format!("instance_id=\"{instance_id}\"")),
        "this test's calls are missing from the traces"
    );
    for expected in [
        "operation=\"deploy\"",
        "operation=\"get\"",
        "status=404",
        "instance_id=",
    ] {
        assert!(
            traces.contains(expected),
            "{expected} missing from traces:\n{traces}"
        );
    }
}
