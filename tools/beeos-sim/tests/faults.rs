//! Faults and the rate limit over HTTP: route errors with counts and rates, injected 429 with
//! `Retry-After`, added latency (global, and per route with a count), the rate limit per token
//! and endpoint, and deploys whose answer is lost (`reset` and `timeout`) while the instance is
//! created all the same.

mod common;

use std::time::{Duration, Instant, SystemTime};

use beeos_sim::{Faults, Route, RouteFault, SimConfig, Simulator};
use common::{ALICE, BOB, Client, start, time, wait_until};
use reqwest::{Method, StatusCode};
use serde_json::json;
use tokio::io::AsyncWriteExt;

const WITHIN: Duration = Duration::from_secs(10);

/// Calls of `route` the simulator has counted.
async fn calls(client: &Client, route: &str) -> u64 {
    let calls = client.admin(Method::GET, "/_sim/calls", None).await.body;
    calls["routes"][route].as_u64().expect("a count")
}

fn retry_after(answer: &common::Answer) -> u64 {
    answer.headers["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .expect("integer seconds")
}

#[tokio::test]
async fn a_counted_route_fault_fails_exactly_count_calls_with_the_contract_code() {
    let h = start().await;
    h.client
        .put_faults(json!({"latencyMs": 0, "routes": {"deploy": {"errorRate": 1.0, "status": 503, "count": 2}}}))
        .await;
    for _ in 0..2 {
        let answer = h
            .client
            .deploy_body(ALICE, json!({"name": "a", "variantId": "beeos-claw-small"}))
            .await;
        answer.assert_error(503, "agent_service_unavailable");
        assert_eq!(answer.body["error"]["type"], "api_error");
    }
    h.client.deploy(ALICE, "a").await;
    // Only the third deploy created something; the fault shows its count used up.
    assert_eq!(h.client.admin_instances().await.len(), 1);
    let faults = h.client.admin(Method::GET, "/_sim/faults", None).await.body;
    assert_eq!(faults["routes"]["deploy"]["count"], 0);
    // Other routes were never affected.
    assert_eq!(
        h.client.get("/api/v1/instances", ALICE).await.status,
        StatusCode::OK
    );
}

#[tokio::test]
async fn each_fault_status_has_its_code_and_unlimited_faults_keep_failing() {
    let h = start().await;
    for (status, code) in [
        (500, "internal_error"),
        (502, "bad_gateway"),
        (503, "agent_service_unavailable"),
        (504, "service_timeout"),
    ] {
        h.client
            .put_faults(json!({"routes": {"providers": {"status": status}}}))
            .await;
        for _ in 0..3 {
            h.client
                .get("/api/v1/providers", ALICE)
                .await
                .assert_error(status, code);
        }
    }
    h.client
        .put_faults(json!({"routes": {"models": {"status": 503, "code": "auth_transient"}}}))
        .await;
    h.client
        .get("/api/v1/deploy/models", ALICE)
        .await
        .assert_error(503, "auth_transient");
    // A PUT replaces every fault: providers work again.
    assert_eq!(
        h.client.get("/api/v1/providers", ALICE).await.status,
        StatusCode::OK
    );
}

#[tokio::test]
async fn error_rate_zero_never_fires_and_a_partial_rate_fires_sometimes() {
    let h = start().await;
    h.client
        .put_faults(json!({"routes": {"list": {"status": 500, "errorRate": 0.0}}}))
        .await;
    for _ in 0..20 {
        assert_eq!(
            h.client.get("/api/v1/instances", ALICE).await.status,
            StatusCode::OK
        );
    }
    h.client
        .put_faults(json!({"routes": {"list": {"status": 500, "errorRate": 0.5}}}))
        .await;
    let mut failed = 0;
    for _ in 0..200 {
        if h.client.get("/api/v1/instances", ALICE).await.status
            == StatusCode::INTERNAL_SERVER_ERROR
        {
            failed += 1;
        }
    }
    // 200 draws at 0.5: outside 40..=160 has a probability far below 1e-15.
    assert!((40..=160).contains(&failed), "{failed} of 200 failed");
}

#[tokio::test]
async fn an_injected_429_carries_retry_after() {
    let h = start().await;
    h.client
        .put_faults(json!({"routes": {"get": {"status": 429, "count": 1, "retryAfterSeconds": 7}}}))
        .await;
    let answer = h.client.get("/api/v1/instances/inst_x", ALICE).await;
    answer.assert_error(429, "rate_limited");
    assert_eq!(answer.body["error"]["type"], "rate_limit_error");
    assert_eq!(retry_after(&answer), 7);
    h.client
        .get("/api/v1/instances/inst_x", ALICE)
        .await
        .assert_error(404, "agent_not_found");
}

#[tokio::test]
async fn added_latency_delays_every_contract_route_but_not_the_admin_api() {
    let h = start().await;
    h.client.put_faults(json!({"latencyMs": 300})).await;
    for path in ["/api/v1/providers", "/api/v1/instances"] {
        let began = Instant::now();
        assert_eq!(h.client.get(path, ALICE).await.status, StatusCode::OK);
        assert!(
            began.elapsed() >= Duration::from_millis(300),
            "{path} took {:?}",
            began.elapsed()
        );
    }
    // Ten minutes of latency: an admin call held by it would hit the client's 10 s timeout.
    h.client.put_faults(json!({"latencyMs": 600_000})).await;
    let calls = h.client.admin(Method::GET, "/_sim/calls", None).await;
    assert_eq!(calls.status, StatusCode::OK);
}

#[tokio::test]
async fn a_counted_deploy_hold_delays_only_the_first_deploy_and_nothing_else() {
    let h = start().await;
    h.client
        .put_faults(json!({"routes": {"deploy": {"latencyMs": 600_000, "count": 1}}}))
        .await;
    let client = h.client.clone();
    let held = tokio::spawn(async move {
        client
            .try_call(
                Method::POST,
                "/api/v1/instances",
                Some(ALICE),
                Some(json!({"name": "held", "variantId": "beeos-claw-small"})),
            )
            .await
    });
    wait_until("the first deploy to arrive", WITHIN, || async {
        (calls(&h.client, "deploy").await == 1).then_some(())
    })
    .await;

    // The count is used up: the second deploy, and every other call, is served at once (a hold
    // of ten minutes would run into the client's 10 s timeout).
    let second = h.client.deploy(ALICE, "second").await;
    let got = h
        .client
        .instance(ALICE, second["id"].as_str().unwrap())
        .await;
    assert_eq!(got.status, StatusCode::OK);
    let listed = h.client.get("/api/v1/instances", ALICE).await;
    assert_eq!(listed.body["total"], 1);
    // The held deploy is not committed yet: only the second is in the table.
    let rows = h.client.admin_instances().await;
    let names: Vec<_> = rows.iter().map(|r| r["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["second"]);
    assert!(!held.is_finished());
    let faults = h.client.admin(Method::GET, "/_sim/faults", None).await.body;
    assert_eq!(faults["routes"]["deploy"]["count"], 0);
    held.abort();
}

#[tokio::test]
async fn a_held_deploy_is_committed_after_its_hold_even_when_the_client_hung_up() {
    let h = start().await;
    h.client
        .put_faults(json!({"routes": {"deploy": {"latencyMs": 300, "count": 1}}}))
        .await;
    let body = json!({"name": "abandoned", "variantId": "beeos-claw-small"}).to_string();
    let sent = SystemTime::now();
    let mut stream = tokio::net::TcpStream::connect(h.sim.addr()).await.unwrap();
    let request = format!(
        "POST /api/v1/instances HTTP/1.1\r\nhost: sim\r\nauthorization: Bearer {ALICE}\r\n\
         content-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    // Counted means read and admitted to its hold; then the client goes away.
    wait_until("the deploy to arrive", WITHIN, || async {
        (calls(&h.client, "deploy").await == 1).then_some(())
    })
    .await;
    drop(stream);

    let row = wait_until("the held deploy to be committed", WITHIN, || async {
        h.client.admin_instances().await.first().cloned()
    })
    .await;
    assert_eq!(row["name"], "abandoned");
    // Committed after the hold, not when the call arrived.
    let held_for = time(&row["createdAt"]).duration_since(sent).unwrap();
    assert!(held_for >= Duration::from_millis(300), "{held_for:?}");
}

#[tokio::test]
async fn a_route_hold_can_end_in_an_error_and_other_routes_are_not_held() {
    let h = start().await;
    h.client
        .put_faults(json!({"routes": {"get": {"latencyMs": 300, "status": 504, "count": 1}}}))
        .await;
    let began = Instant::now();
    h.client
        .get("/api/v1/instances/inst_x", ALICE)
        .await
        .assert_error(504, "service_timeout");
    assert!(began.elapsed() >= Duration::from_millis(300));
    h.client
        .get("/api/v1/instances/inst_x", ALICE)
        .await
        .assert_error(404, "agent_not_found");
}

#[tokio::test]
async fn the_rate_limit_answers_429_with_retry_after_per_token() {
    let h = start().await;
    h.client
        .put_settings(json!({"rateLimitPerSecond": 0.5, "rateLimitBurst": 2}))
        .await;
    for _ in 0..2 {
        assert_eq!(
            h.client.get("/api/v1/providers", ALICE).await.status,
            StatusCode::OK
        );
    }
    let limited = h.client.get("/api/v1/providers", ALICE).await;
    limited.assert_error(429, "rate_limited");
    // One token comes back every 2 s; Retry-After is whole seconds, at least 1.
    let wait = retry_after(&limited);
    assert!((1..=2).contains(&wait), "Retry-After {wait}");
    // Bob has his own bucket.
    assert_eq!(
        h.client.get("/api/v1/providers", BOB).await.status,
        StatusCode::OK
    );
    wait_until("alice's bucket to refill", WITHIN, || async {
        (h.client.get("/api/v1/providers", ALICE).await.status == StatusCode::OK).then_some(())
    })
    .await;
    // Off again: no limit.
    h.client
        .put_settings(json!({"rateLimitPerSecond": 0}))
        .await;
    for _ in 0..10 {
        assert_eq!(
            h.client.get("/api/v1/providers", ALICE).await.status,
            StatusCode::OK
        );
    }
}

#[tokio::test]
async fn a_burst_on_one_endpoint_leaves_the_budget_of_the_others_alone() {
    let h = start().await;
    // One token back every 10,000 s: nothing refills during the test.
    h.client
        .put_settings(json!({"rateLimitPerSecond": 0.0001, "rateLimitBurst": 2}))
        .await;
    for _ in 0..2 {
        assert_eq!(
            h.client.get("/api/v1/instances", ALICE).await.status,
            StatusCode::OK
        );
    }
    let limited = h.client.get("/api/v1/instances", ALICE).await;
    limited.assert_error(429, "rate_limited");
    assert_eq!(retry_after(&limited), 10_000);
    // Every other endpoint still has its whole burst for alice.
    let id = h.client.deploy(ALICE, "a").await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    for path in [
        format!("/api/v1/instances/{id}"),
        "/api/v1/providers".to_owned(),
        "/api/v1/deploy/models".to_owned(),
    ] {
        for _ in 0..2 {
            assert_eq!(
                h.client.get(&path, ALICE).await.status,
                StatusCode::OK,
                "{path}"
            );
        }
        h.client
            .get(&path, ALICE)
            .await
            .assert_error(429, "rate_limited");
    }
    // And the list is still refused: its bucket did not borrow from the others.
    h.client
        .get("/api/v1/instances", ALICE)
        .await
        .assert_error(429, "rate_limited");
}

#[tokio::test]
async fn a_reset_drop_commits_the_deploy_but_the_client_gets_no_response() {
    let h = start().await;
    h.client
        .put_faults(json!({"dropDeployResponse": {"mode": "reset", "count": 1}}))
        .await;
    let lost = h
        .client
        .try_call(
            Method::POST,
            "/api/v1/instances",
            Some(ALICE),
            Some(json!({"name": "lost-one", "variantId": "beeos-claw-small"})),
        )
        .await;
    let err = lost.expect_err("the client must see no response");
    assert!(!err.is_timeout() && err.status().is_none(), "{err:?}");

    // The instance exists all the same: in the admin table and in the owner's list.
    let rows = h.client.admin_instances().await;
    assert_eq!(rows.len(), 1);
    assert_eq!(
        (rows[0]["name"].as_str(), rows[0]["ownerId"].as_str()),
        (Some("lost-one"), Some("alice"))
    );
    let found = h
        .client
        .get("/api/v1/instances?search=lost-one", ALICE)
        .await;
    assert_eq!(found.body["total"], 1);

    // count 1: the next deploy is answered.
    h.client.deploy(ALICE, "answered").await;
    assert_eq!(h.client.admin_instances().await.len(), 2);
}

#[tokio::test]
async fn a_timeout_drop_commits_the_deploy_and_holds_the_response_past_the_client_timeout() {
    let h = start().await;
    h.client
        .put_faults(json!({"dropDeployResponse": {"mode": "timeout", "count": 1}}))
        .await;
    let impatient = reqwest::Client::builder()
        .timeout(Duration::from_millis(500))
        .build()
        .unwrap();
    let began = Instant::now();
    let err = impatient
        .post(format!("{}/api/v1/instances", h.client.base))
        .bearer_auth(ALICE)
        .json(&json!({"name": "held", "variantId": "beeos-claw-small"}))
        .send()
        .await
        .expect_err("the response is held");
    assert!(err.is_timeout(), "{err:?}");
    assert!(began.elapsed() >= Duration::from_millis(500));
    let rows = h.client.admin_instances().await;
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0]["name"], "held");
    // The server keeps serving other connections meanwhile.
    assert_eq!(
        h.client.get("/api/v1/instances", ALICE).await.body["total"],
        1
    );
}

#[tokio::test]
async fn a_timeout_drop_closes_the_connection_after_hold_ms_without_a_response() {
    let h = start().await;
    h.client
        .put_faults(json!({"dropDeployResponse": {"mode": "timeout", "holdMs": 300}}))
        .await;
    let began = Instant::now();
    let err = h
        .client
        .try_call(
            Method::POST,
            "/api/v1/instances",
            Some(ALICE),
            Some(json!({"name": "x", "variantId": "beeos-claw-small"})),
        )
        .await
        .expect_err("no response");
    assert!(!err.is_timeout(), "{err:?}");
    assert!(began.elapsed() >= Duration::from_millis(300));
    // Unlimited count: every deploy is lost, each one committed.
    assert!(
        h.client
            .try_call(
                Method::POST,
                "/api/v1/instances",
                Some(ALICE),
                Some(json!({"name": "y", "variantId": "beeos-claw-small"}))
            )
            .await
            .is_err()
    );
    assert_eq!(h.client.admin_instances().await.len(), 2);
}

#[tokio::test]
async fn faults_given_in_the_config_are_active_from_the_start() {
    let mut faults = Faults::default();
    faults.routes.insert(
        Route::Get,
        RouteFault {
            error_rate: 1.0,
            status: Some(504),
            latency_ms: 0,
            count: Some(1),
            code: None,
            retry_after_seconds: None,
        },
    );
    let sim = Simulator::start(
        SimConfig::default()
            .with_token(ALICE, "alice")
            .with_faults(faults),
    )
    .await
    .unwrap();
    let client = Client::new(sim.base_url());
    client
        .get("/api/v1/instances/inst_x", ALICE)
        .await
        .assert_error(504, "service_timeout");
    client
        .get("/api/v1/instances/inst_x", ALICE)
        .await
        .assert_error(404, "agent_not_found");
}

#[tokio::test]
async fn dropping_the_simulator_stops_it() {
    let sim = Simulator::start(SimConfig::default()).await.unwrap();
    let addr = sim.addr();
    drop(sim);
    wait_until("the port to close", Duration::from_secs(5), || async {
        tokio::net::TcpStream::connect(addr)
            .await
            .is_err()
            .then_some(())
    })
    .await;
}
