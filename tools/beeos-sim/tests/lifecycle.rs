//! Lifecycle over HTTP: deploy, stop, start, restart and destroy move through the documented
//! statuses at the configured times; calls the state does not allow get 409; terminated
//! instances stay visible for the retention, then answer 404; trial instances stop at their
//! expiry; the admin API stops, starts and destroys behind the caller's back.

mod common;

use std::time::{Duration, Instant};

use beeos_sim::Settings;
use common::{ALICE, Client, start, start_with, time, wait_until};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

const WITHIN: Duration = Duration::from_secs(10);

async fn wait_for_status(client: &Client, id: &str, want: &str) -> Value {
    wait_until(&format!("{id} to be {want}"), WITHIN, || async {
        let answer = client.instance(ALICE, id).await;
        (answer.status == StatusCode::OK && answer.data()["status"] == want)
            .then(|| answer.data().clone())
    })
    .await
}

/// Statuses seen while polling until `last`, without repeats.
async fn statuses_until(client: &Client, id: &str, last: &str) -> Vec<String> {
    let deadline = Instant::now() + WITHIN;
    let mut seen: Vec<String> = Vec::new();
    loop {
        let status = client.status(ALICE, id).await;
        if seen.last() != Some(&status) {
            seen.push(status.clone());
        }
        if status == last {
            return seen;
        }
        assert!(
            Instant::now() < deadline,
            "{id} not {last} within {WITHIN:?}; saw {seen:?}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

fn is_in_order(seen: &[String], order: &[&str]) -> bool {
    let mut rest = order.iter();
    seen.iter().all(|s| rest.any(|o| o == s))
}

#[tokio::test]
async fn deploy_goes_pending_then_provisioning_then_running_and_online() {
    let h = start().await;
    let started = Instant::now();
    let data = h.client.deploy(ALICE, "a").await;
    let id = data["id"].as_str().unwrap();
    assert_eq!(
        (data["status"].as_str(), data["connectivity"].as_str()),
        (Some("pending"), Some("unknown"))
    );

    let seen = statuses_until(&h.client, id, "running").await;
    assert!(
        is_in_order(&seen, &["pending", "provisioning", "running"]),
        "{seen:?}"
    );
    assert!(
        started.elapsed() >= Duration::from_millis(400),
        "running too early"
    );

    let running = h.client.instance(ALICE, id).await.data().clone();
    assert_eq!(running["connectivity"], "online");
    assert!(running.get("connectivityReason").is_none());
    assert_eq!(running["desiredStatus"], "running");
    // The timeline is exact: running was entered pendingMs + provisioningMs after creation.
    let created = time(&running["createdAt"]);
    assert_eq!(
        time(&running["startedAt"]).duration_since(created).unwrap(),
        Duration::from_millis(400)
    );
    assert_eq!(running["statusEnteredAt"], running["startedAt"]);
}

#[tokio::test]
async fn stop_then_start_and_restart_follow_the_configured_timings() {
    let h = start_with(Settings {
        pending_ms: 0,
        provisioning_ms: 0,
        ..Settings::default()
    })
    .await;
    let id = h.client.deploy(ALICE, "a").await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    wait_for_status(&h.client, &id, "running").await;

    let stopping = h
        .client
        .post(&format!("/api/v1/instances/{id}/stop"), ALICE)
        .await;
    assert_eq!(stopping.status, StatusCode::OK);
    assert_eq!(stopping.data()["desiredStatus"], "stopped");
    assert_eq!(stopping.data()["status"], "running");
    let stopped = wait_for_status(&h.client, &id, "stopped").await;
    assert_eq!(stopped["connectivity"], "offline");
    assert_eq!(stopped["connectivityReason"], "instance_disconnected");
    let stop_took = time(&stopped["stoppedAt"])
        .duration_since(time(&stopping.data()["updatedAt"]))
        .unwrap();
    assert_eq!(stop_took, Duration::from_millis(200));

    let starting = h
        .client
        .post(&format!("/api/v1/instances/{id}/start"), ALICE)
        .await;
    assert_eq!(starting.status, StatusCode::OK);
    assert_eq!(
        (
            starting.data()["status"].as_str(),
            starting.data()["desiredStatus"].as_str()
        ),
        (Some("provisioning"), Some("running"))
    );
    let running = wait_for_status(&h.client, &id, "running").await;
    assert_eq!(running["connectivity"], "online");

    let restarting = h
        .client
        .post(&format!("/api/v1/instances/{id}/restart"), ALICE)
        .await;
    assert_eq!(restarting.status, StatusCode::OK);
    assert_eq!(restarting.data()["status"], "provisioning");
    let seen = statuses_until(&h.client, &id, "running").await;
    assert!(is_in_order(&seen, &["provisioning", "running"]), "{seen:?}");
}

#[tokio::test]
async fn calls_the_state_does_not_allow_get_409_conflict() {
    // A long pending phase makes "still pending" certain for the first checks.
    let h = start_with(Settings {
        pending_ms: 60_000,
        ..Settings::default()
    })
    .await;
    let id = h.client.deploy(ALICE, "a").await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let path = format!("/api/v1/instances/{id}");
    for action in ["start", "stop", "restart"] {
        let answer = h.client.post(&format!("{path}/{action}"), ALICE).await;
        answer.assert_error(409, "conflict");
        assert_eq!(answer.body["error"]["type"], "conflict_error");
    }
    h.client
        .call(Method::DELETE, &path, Some(ALICE), None)
        .await
        .assert_error(409, "conflict");

    h.client
        .put_settings(json!({"pendingMs": 0, "provisioningMs": 0}))
        .await;
    // The timeline was set at deploy time; a fresh instance follows the new settings.
    let id = h.client.deploy(ALICE, "b").await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let path = format!("/api/v1/instances/{id}");
    wait_for_status(&h.client, &id, "running").await;
    h.client
        .post(&format!("{path}/start"), ALICE)
        .await
        .assert_error(409, "conflict");
    assert_eq!(
        h.client.post(&format!("{path}/stop"), ALICE).await.status,
        StatusCode::OK
    );
    h.client
        .post(&format!("{path}/stop"), ALICE)
        .await
        .assert_error(409, "conflict");
    wait_for_status(&h.client, &id, "stopped").await;
    h.client
        .post(&format!("{path}/stop"), ALICE)
        .await
        .assert_error(409, "conflict");
    h.client
        .post(&format!("{path}/restart"), ALICE)
        .await
        .assert_error(409, "conflict");
}

#[tokio::test]
async fn destroy_terminates_keeps_the_instance_visible_for_the_retention_then_404() {
    let h = start_with(Settings {
        pending_ms: 0,
        provisioning_ms: 0,
        ..Settings::default()
    })
    .await;
    let id = h.client.deploy(ALICE, "doomed").await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let path = format!("/api/v1/instances/{id}");
    wait_for_status(&h.client, &id, "running").await;

    let destroyed = h
        .client
        .call(Method::DELETE, &path, Some(ALICE), None)
        .await;
    assert_eq!(destroyed.status, StatusCode::OK);
    assert_eq!(
        destroyed.body,
        json!({"success": true, "data": "destroyed"})
    );
    let during = h.client.instance(ALICE, &id).await;
    assert_eq!(during.data()["desiredStatus"], "terminated");
    // Already being destroyed: gone as far as the caller is concerned.
    h.client
        .call(Method::DELETE, &path, Some(ALICE), None)
        .await
        .assert_error(404, "agent_not_found");
    h.client
        .post(&format!("{path}/start"), ALICE)
        .await
        .assert_error(409, "conflict");

    let terminated = wait_for_status(&h.client, &id, "terminated").await;
    assert_eq!(terminated["connectivity"], "offline");
    let listed = h
        .client
        .get("/api/v1/instances?status=terminated", ALICE)
        .await;
    assert_eq!(listed.body["total"], 1);

    wait_until("the terminated instance to expire", WITHIN, || async {
        (h.client.instance(ALICE, &id).await.status == StatusCode::NOT_FOUND).then_some(())
    })
    .await;
    let terminated_at = time(&terminated["statusEnteredAt"]);
    assert!(
        terminated_at.elapsed().unwrap() >= Duration::from_millis(2000),
        "expired before the retention"
    );
    assert_eq!(
        h.client.get("/api/v1/instances", ALICE).await.body["total"],
        0
    );
    h.client
        .call(Method::DELETE, &path, Some(ALICE), None)
        .await
        .assert_error(404, "agent_not_found");

    // The admin view never forgets it.
    let rows = h.client.admin_instances().await;
    assert_eq!(rows.len(), 1);
    assert_eq!(
        (rows[0]["status"].as_str(), rows[0]["expired"].as_bool()),
        (Some("terminated"), Some(true))
    );
    assert!(rows[0]["destroyedAt"].is_string());
}

#[tokio::test]
async fn a_stopped_instance_can_be_destroyed() {
    let h = start_with(Settings {
        pending_ms: 0,
        provisioning_ms: 0,
        stop_ms: 0,
        ..Settings::default()
    })
    .await;
    let id = h.client.deploy(ALICE, "a").await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    wait_for_status(&h.client, &id, "running").await;
    h.client
        .post(&format!("/api/v1/instances/{id}/stop"), ALICE)
        .await;
    wait_for_status(&h.client, &id, "stopped").await;
    let answer = h
        .client
        .call(
            Method::DELETE,
            &format!("/api/v1/instances/{id}"),
            Some(ALICE),
            None,
        )
        .await;
    assert_eq!(answer.status, StatusCode::OK);
    wait_for_status(&h.client, &id, "terminated").await;
}

#[tokio::test]
async fn total_run_seconds_counts_only_running_time() {
    let h = start_with(Settings {
        pending_ms: 0,
        provisioning_ms: 0,
        stop_ms: 0,
        ..Settings::default()
    })
    .await;
    let id = h.client.deploy(ALICE, "a").await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let one_second = wait_until("a second of run time", WITHIN, || async {
        let data = h.client.instance(ALICE, &id).await.data().clone();
        (data["totalRunSeconds"].as_u64() >= Some(1)).then_some(data)
    })
    .await;
    let run_start = time(&one_second["startedAt"]);
    assert!(run_start.elapsed().unwrap() >= Duration::from_secs(1));
    h.client
        .post(&format!("/api/v1/instances/{id}/stop"), ALICE)
        .await;
    let stopped = wait_for_status(&h.client, &id, "stopped").await;
    let frozen = stopped["totalRunSeconds"].as_u64().unwrap();
    // Timestamps are cut to milliseconds, so the two may straddle a second boundary.
    let ran = time(&stopped["stoppedAt"])
        .duration_since(run_start)
        .unwrap()
        .as_secs();
    assert!(
        frozen >= 1 && frozen.abs_diff(ran) <= 1,
        "{frozen} vs {ran}"
    );
    // Letting time pass (not synchronising): a stopped instance accrues no run time.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let later = h.client.instance(ALICE, &id).await.data().clone();
    assert_eq!(later["totalRunSeconds"].as_u64(), Some(frozen));
}

/// Polls the admin table (which counts no calls) until instance `id` has `status`.
async fn wait_for_admin_status(client: &Client, id: &str, want: &str) -> Value {
    wait_until(&format!("{id} to be {want}"), WITHIN, || async {
        client
            .admin_instances()
            .await
            .into_iter()
            .find(|row| row["id"] == id && row["status"] == want)
    })
    .await
}

#[tokio::test]
async fn admin_stop_start_and_destroy_act_as_the_owner_without_counting_or_limits() {
    let h = start_with(Settings {
        pending_ms: 0,
        provisioning_ms: 0,
        ..Settings::default()
    })
    .await;
    let id = h.client.deploy(ALICE, "behind-its-back").await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    wait_for_admin_status(&h.client, &id, "running").await;
    // Everything that could stand in the way of an API call: ten minutes of latency, failing
    // lifecycle routes and a rate limit with nothing left to give.
    h.client
        .put_faults(json!({"latencyMs": 600_000, "routes": {
            "stop": {"status": 503}, "start": {"status": 503}, "destroy": {"status": 503}}}))
        .await;
    h.client
        .put_settings(json!({"rateLimitPerSecond": 0.0001, "rateLimitBurst": 1}))
        .await;
    let path = format!("/_sim/instances/{id}");

    let stopping = h
        .client
        .admin(Method::POST, &format!("{path}/stop"), None)
        .await;
    assert_eq!(stopping.status, StatusCode::OK, "{:#}", stopping.body);
    assert_eq!(stopping.body["desiredStatus"], "stopped");
    assert_eq!(stopping.body["ownerId"], "alice");
    wait_for_admin_status(&h.client, &id, "stopped").await;
    // The lifecycle's rules hold for the admin too.
    h.client
        .admin(Method::POST, &format!("{path}/stop"), None)
        .await
        .assert_error(409, "conflict");

    let starting = h
        .client
        .admin(Method::POST, &format!("{path}/start"), None)
        .await;
    assert_eq!(starting.status, StatusCode::OK, "{:#}", starting.body);
    assert_eq!(starting.body["desiredStatus"], "running");
    wait_for_admin_status(&h.client, &id, "running").await;

    let destroying = h.client.admin(Method::DELETE, &path, None).await;
    assert_eq!(destroying.status, StatusCode::OK, "{:#}", destroying.body);
    assert_eq!(destroying.body["desiredStatus"], "terminated");
    wait_for_admin_status(&h.client, &id, "terminated").await;
    h.client
        .admin(Method::DELETE, &path, None)
        .await
        .assert_error(404, "agent_not_found");
    h.client
        .admin(Method::POST, "/_sim/instances/inst_nobodys/stop", None)
        .await
        .assert_error(404, "agent_not_found");

    // Only the deploy ever counted as an API call.
    let calls = h.client.admin(Method::GET, "/_sim/calls", None).await.body;
    assert_eq!(calls["total"], 1, "{calls:#}");

    // The owner sees what the admin did.
    h.client.put_faults(json!({})).await;
    h.client
        .put_settings(json!({"rateLimitPerSecond": 0}))
        .await;
    let seen = h.client.instance(ALICE, &id).await;
    assert_eq!(
        (&seen.data()["status"], &seen.data()["desiredStatus"]),
        (&json!("terminated"), &json!("terminated"))
    );
    assert!(seen.data()["stoppedAt"].is_string());
}

#[tokio::test]
async fn a_trial_instance_stops_at_its_expiry_with_a_halt_reason_and_cannot_start() {
    let h = start_with(Settings {
        pending_ms: 0,
        provisioning_ms: 0,
        ..Settings::default()
    })
    .await;
    let defaults = h
        .client
        .admin(Method::GET, "/_sim/settings", None)
        .await
        .body;
    assert_eq!(defaults["trialMs"], 72 * 3600 * 1000);
    let settings = h.client.put_settings(json!({"trialMs": 500})).await;
    assert_eq!(settings["trialMs"], 500);

    let trial = h
        .client
        .deploy_body(
            ALICE,
            json!({"name": "trial", "variantId": "beeos-claw-trial"}),
        )
        .await;
    assert_eq!(trial.status, StatusCode::CREATED);
    let trial = trial.data().clone();
    assert_eq!(trial["isTrial"], true);
    assert_eq!(
        time(&trial["expiresAt"])
            .duration_since(time(&trial["createdAt"]))
            .unwrap(),
        Duration::from_millis(500)
    );
    assert!(trial.get("haltReason").is_none());
    let regular = h.client.deploy(ALICE, "regular").await;
    assert_eq!(regular["isTrial"], false);
    assert!(regular.get("expiresAt").is_none());

    let id = trial["id"].as_str().unwrap();
    let expired = wait_for_status(&h.client, id, "stopped").await;
    assert_eq!(expired["desiredStatus"], "stopped");
    assert_eq!(expired["connectivity"], "offline");
    assert_eq!(expired["haltReason"], "trial_expired");
    assert_eq!(expired["stoppedAt"], trial["expiresAt"]);
    let start = h
        .client
        .post(&format!("/api/v1/instances/{id}/start"), ALICE)
        .await;
    start.assert_error(409, "conflict");
    // A later read is the same: the end of the trial is now part of its history.
    let again = h.client.instance(ALICE, id).await.data().clone();
    assert_eq!(
        (
            &again["status"],
            &again["haltReason"],
            &again["totalRunSeconds"]
        ),
        (
            &json!("stopped"),
            &json!("trial_expired"),
            &expired["totalRunSeconds"]
        )
    );
    // The regular instance runs on.
    let regular = h
        .client
        .instance(ALICE, regular["id"].as_str().unwrap())
        .await;
    assert_eq!(regular.data()["status"], "running");
    assert!(regular.data().get("haltReason").is_none());
}
