//! The contract surface over HTTP: envelopes and required fields, validation, 413, 401, owner
//! isolation, pagination and search, the catalog, the admin views, and the vendored contract.

mod common;

use std::path::Path;

use beeos_sim::Settings;
use common::{ALICE, BOB, start, start_with};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// `InstanceDataDTO.required`, read from the vendored contract so the list cannot drift from it.
fn required_instance_fields() -> Vec<String> {
    let contract = include_str!("../contract/beeos-platform-v1.yaml");
    let contract: Value = serde_yaml_ng::from_str(contract).expect("the contract parses");
    let required = &contract["components"]["schemas"]["InstanceDataDTO"]["required"];
    serde_json::from_value(required.clone()).expect("a list of field names")
}

fn assert_instance_dto(data: &Value) {
    let required = required_instance_fields();
    assert!(required.len() >= 19, "{required:?}");
    for field in &required {
        assert!(
            data.get(field).is_some_and(|v| !v.is_null()),
            "{field} missing in {data:#}"
        );
    }
    for field in [
        "id",
        "ownerId",
        "name",
        "status",
        "desiredStatus",
        "endpoint",
        "connectivity",
    ] {
        assert!(data[field].is_string(), "{field} is not a string");
    }
    assert!(data["totalRunSeconds"].is_u64());
    assert!(data["models"].is_array());
    assert!(data["providerConfig"].is_object());
    for field in ["createdAt", "updatedAt", "statusEnteredAt"] {
        let text = data[field].as_str().unwrap_or_default();
        assert!(
            text.ends_with('Z') && humantime::parse_rfc3339(text).is_ok(),
            "{field}: {text}"
        );
    }
}

#[tokio::test]
async fn deploy_answers_201_with_the_envelope_and_every_required_field() {
    let h = start().await;
    let answer = h
        .client
        .deploy_body(
            ALICE,
            json!({
                "name": "my-agent", "variantId": "beeos-claw-small",
                "config": {"apiKeys": {"anthropic": "sk-secret"}, "apiBaseUrls": {"x": "y"}},
                "systemPrompt": "be brief", "bridgeId": "bridge_1",
            }),
        )
        .await;
    assert_eq!(answer.status, StatusCode::CREATED);
    assert_eq!(answer.body["success"], true);
    assert!(answer.headers.contains_key("x-request-id"));
    let data = answer.data();
    assert_instance_dto(data);
    assert_eq!(data["ownerId"], "alice");
    assert_eq!(data["status"], "pending");
    assert_eq!(data["desiredStatus"], "running");
    assert_eq!(data["agentFramework"], "beeos-claw");
    assert_eq!(data["providerId"], "default");
    assert_eq!(data["bridgeId"], "bridge_1");
    assert_eq!(data["region"], "us-east-1");
    // apiKeys are stripped from the answer, other user keys and the catalog's stay.
    assert!(data["providerConfig"].get("apiKeys").is_none());
    assert_eq!(data["providerConfig"]["apiBaseUrls"]["x"], "y");
    assert_eq!(data["providerConfig"]["size"], "small");

    let id = data["id"].as_str().unwrap();
    let got = h.client.instance(ALICE, id).await;
    assert_eq!(got.status, StatusCode::OK);
    assert_instance_dto(got.data());
    assert!(got.data()["providerConfig"].get("apiKeys").is_none());

    // The table keeps the secret for tests of secret injection.
    let rows = h.client.admin_instances().await;
    assert_eq!(rows.len(), 1);
    assert_eq!(
        rows[0]["deployRequest"]["config"]["apiKeys"]["anthropic"],
        "sk-secret"
    );
    assert!(rows[0]["providerConfig"].get("apiKeys").is_none());
}

#[tokio::test]
async fn request_ids_are_echoed_or_generated() {
    let h = start().await;
    let answer = h
        .client
        .http
        .get(format!("{}/api/v1/providers", h.client.base))
        .bearer_auth(ALICE)
        .header("X-Request-Id", "trace-42")
        .send()
        .await
        .unwrap();
    assert_eq!(answer.headers()["x-request-id"], "trace-42");
    let missing = h.client.get("/api/v1/instances/inst_nope", ALICE).await;
    missing.assert_error(404, "agent_not_found");
    assert!(
        missing.body["error"]["request_id"]
            .as_str()
            .unwrap()
            .starts_with("req_")
    );
}

#[tokio::test]
async fn validation_errors_carry_the_contract_codes_and_params() {
    let h = start().await;
    let cases = [
        (
            json!({"variantId": "beeos-claw-small"}),
            "missing_param",
            Some("name"),
        ),
        (json!({"name": "a"}), "missing_param", Some("variantId")),
        (
            json!({"name": "a", "variantId": "beeos-claw-small", "agentFramework": "x"}),
            "invalid_param",
            Some("agentFramework"),
        ),
        (
            json!({"name": "a", "variantId": "no-such-variant"}),
            "invalid_param",
            Some("variantId"),
        ),
        (
            json!({"name": "x".repeat(129), "agentFramework": "x"}),
            "invalid_param",
            Some("name"),
        ),
        (
            json!({"name": "a", "agentFramework": "x".repeat(65)}),
            "invalid_param",
            Some("agentFramework"),
        ),
        (
            json!({"name": "a", "agentFramework": "x", "systemPrompt": "s".repeat(8193)}),
            "invalid_param",
            Some("systemPrompt"),
        ),
        (
            json!({"name": "a", "agentFramework": "x", "mcpServers": []}),
            "invalid_param",
            Some("mcpServers"),
        ),
        (
            json!({"name": "a", "variantId": "beeos-claw-small", "maxPricePerHour": 1.5}),
            "invalid_param",
            Some("maxPricePerHour"),
        ),
        (
            json!({"name": "a", "variantId": "beeos-claw-small", "ownershipPreference": "own"}),
            "invalid_param",
            Some("ownershipPreference"),
        ),
        (
            json!({"name": "a", "variantId": "beeos-claw-small", "resourceTypeHint": "gpu"}),
            "invalid_param",
            Some("resourceTypeHint"),
        ),
        (json!([1, 2]), "invalid_body", None),
    ];
    for (body, code, param) in cases {
        let answer = h.client.deploy_body(ALICE, body).await;
        answer.assert_error(400, code);
        assert_eq!(answer.param(), param, "{:#}", answer.body);
        assert_eq!(answer.body["error"]["type"], "invalid_request_error");
    }
    let not_json = h
        .client
        .http
        .post(format!("{}/api/v1/instances", h.client.base))
        .bearer_auth(ALICE)
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(not_json.status(), StatusCode::BAD_REQUEST);
    let body: Value = not_json.json().await.unwrap();
    assert_eq!(body["error"]["code"], "invalid_json");
    // Nothing was created by any of them.
    assert!(h.client.admin_instances().await.is_empty());
}

#[tokio::test]
async fn secrets_never_appear_in_error_messages() {
    let h = start().await;
    let answer = h
        .client
        .deploy_body(
            ALICE,
            json!({"name": "a", "agentFramework": "x", "systemPrompt": "SECRET-PROMPT".repeat(700),
                   "mcpServers": {"s": {"env": {"TOKEN": "SECRET-MCP"}}}}),
        )
        .await;
    answer.assert_error(400, "invalid_param");
    let text = answer.body.to_string();
    assert!(
        !text.contains("SECRET-PROMPT") && !text.contains("SECRET-MCP"),
        "{text}"
    );
}

fn padded_body(len: usize) -> Vec<u8> {
    let head = br#"{"name":"big","variantId":"beeos-claw-small","pad":""#;
    let tail = br#""}"#;
    let mut body = head.to_vec();
    body.resize(len - tail.len(), b'x');
    body.extend_from_slice(tail);
    body
}

#[tokio::test]
async fn bodies_over_64_kib_get_413_and_64_kib_exactly_is_accepted() {
    let h = start().await;
    let post = |body: Vec<u8>| {
        h.client
            .http
            .post(format!("{}/api/v1/instances", h.client.base))
            .bearer_auth(ALICE)
            .header("content-type", "application/json")
            .body(body)
            .send()
    };
    let exact = post(padded_body(64 * 1024)).await.unwrap();
    assert_eq!(exact.status(), StatusCode::CREATED);
    let over = post(padded_body(64 * 1024 + 1)).await.unwrap();
    assert_eq!(over.status(), StatusCode::PAYLOAD_TOO_LARGE);
    let body: Value = over.json().await.unwrap();
    assert_eq!(body["error"]["code"], "payload_too_large");
    assert_eq!(h.client.admin_instances().await.len(), 1);
}

#[tokio::test]
async fn a_chunked_body_without_length_is_measured_as_it_is_read() {
    let h = start().await;
    let body = padded_body(70 * 1024);
    let mut stream = tokio::net::TcpStream::connect(h.sim.addr()).await.unwrap();
    let head = format!(
        "POST /api/v1/instances HTTP/1.1\r\nhost: sim\r\nauthorization: Bearer {ALICE}\r\n\
         content-type: application/json\r\ntransfer-encoding: chunked\r\nconnection: close\r\n\r\n"
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    for chunk in body.chunks(8 * 1024) {
        stream
            .write_all(format!("{:x}\r\n", chunk.len()).as_bytes())
            .await
            .unwrap();
        stream.write_all(chunk).await.unwrap();
        stream.write_all(b"\r\n").await.unwrap();
    }
    stream.write_all(b"0\r\n\r\n").await.unwrap();
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer).await.unwrap();
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    assert!(answer.contains("payload_too_large"), "{answer}");
    assert!(h.client.admin_instances().await.is_empty());
}

#[tokio::test]
async fn missing_and_unknown_tokens_get_401() {
    let h = start().await;
    let missing = h
        .client
        .call(Method::GET, "/api/v1/instances", None, None)
        .await;
    missing.assert_error(401, "missing_token");
    assert_eq!(missing.body["error"]["type"], "authentication_error");
    assert_eq!(missing.headers["www-authenticate"], "Bearer");
    let unknown = h.client.get("/api/v1/instances", "oag_nobody").await;
    unknown.assert_error(401, "invalid_token");
    let deploy = h
        .client
        .call(
            Method::POST,
            "/api/v1/instances",
            Some("oag_nobody"),
            Some(json!({"name": "a"})),
        )
        .await;
    deploy.assert_error(401, "invalid_token");
    for path in [
        "/api/v1/providers",
        "/api/v1/deploy/regions",
        "/api/v1/deploy/models",
    ] {
        h.client
            .call(Method::GET, path, None, None)
            .await
            .assert_error(401, "missing_token");
    }
}

#[tokio::test]
async fn another_owners_instance_is_forbidden_on_every_call_and_never_listed() {
    // Instant transitions and no retention: a destroyed instance is gone as soon as destroyed.
    let h = start_with(Settings {
        pending_ms: 0,
        provisioning_ms: 0,
        destroy_ms: 0,
        terminated_retention_ms: 0,
        ..Settings::default()
    })
    .await;
    let id = h.client.deploy(ALICE, "alices").await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    h.client.deploy(BOB, "bobs").await;
    let path = format!("/api/v1/instances/{id}");
    let mut answers = vec![h.client.get(&path, BOB).await];
    for action in ["start", "stop", "restart"] {
        answers.push(h.client.post(&format!("{path}/{action}"), BOB).await);
    }
    answers.push(h.client.call(Method::DELETE, &path, Some(BOB), None).await);
    for answer in &answers {
        answer.assert_error(403, "forbidden");
        assert_eq!(answer.body["error"]["type"], "permission_error");
        assert_eq!(
            answer.body["error"]["message"],
            "Caller doesn't own the resource"
        );
    }
    // An id nobody has is still 404.
    h.client
        .get("/api/v1/instances/inst_nobodys", BOB)
        .await
        .assert_error(404, "agent_not_found");
    let bobs = h.client.get("/api/v1/instances?search=alices", BOB).await;
    assert_eq!(bobs.body["total"], 0);
    let bobs = h.client.get("/api/v1/instances", BOB).await;
    assert_eq!(bobs.body["total"], 1);
    assert_eq!(bobs.data()[0]["ownerId"], "bob");
    // Alice still sees hers, untouched by bob's calls.
    let hers = h.client.instance(ALICE, &id).await;
    assert_eq!(
        (
            hers.status,
            &hers.data()["status"],
            &hers.data()["desiredStatus"]
        ),
        (StatusCode::OK, &json!("running"), &json!("running"))
    );

    // Past its retention, it is 404 for everyone: its owner and the others alike.
    let destroyed = h
        .client
        .call(Method::DELETE, &path, Some(ALICE), None)
        .await;
    assert_eq!(destroyed.status, StatusCode::OK);
    for token in [ALICE, BOB] {
        h.client
            .get(&path, token)
            .await
            .assert_error(404, "agent_not_found");
        h.client
            .post(&format!("{path}/start"), token)
            .await
            .assert_error(404, "agent_not_found");
    }
}

#[tokio::test]
async fn list_pages_count_the_total_and_search_names() {
    // A long pending phase keeps the status filter below stable however slow the machine is.
    let h = start_with(Settings {
        pending_ms: 60_000,
        ..Settings::default()
    })
    .await;
    let mut ids = Vec::new();
    for n in 0..7 {
        let name = if n % 2 == 0 {
            format!("Web-Agent-{n}")
        } else {
            format!("batch-{n}")
        };
        ids.push(
            h.client.deploy(ALICE, &name).await["id"]
                .as_str()
                .unwrap()
                .to_owned(),
        );
    }
    h.client.deploy(BOB, "web-agent-bob").await;

    let mut seen = Vec::new();
    for page in 0..3 {
        let answer = h
            .client
            .get(&format!("/api/v1/instances?page={page}&pageSize=3"), ALICE)
            .await;
        assert_eq!(answer.status, StatusCode::OK);
        assert_eq!(answer.body["success"], true);
        assert_eq!(answer.body["total"], 7);
        for item in answer.data().as_array().unwrap() {
            seen.push(item["id"].as_str().unwrap().to_owned());
        }
    }
    // Stable order: deploy order, every instance exactly once.
    assert_eq!(seen, ids);
    let beyond = h
        .client
        .get("/api/v1/instances?page=5&pageSize=3", ALICE)
        .await;
    assert_eq!(
        (
            beyond.data().as_array().unwrap().len(),
            &beyond.body["total"]
        ),
        (0, &json!(7))
    );

    let search = h
        .client
        .get("/api/v1/instances?search=WEB-agent&pageSize=200", ALICE)
        .await;
    assert_eq!(search.body["total"], 4);
    assert!(
        search
            .data()
            .as_array()
            .unwrap()
            .iter()
            .all(|i| i["name"].as_str().unwrap().starts_with("Web-Agent"))
    );

    let filtered = h
        .client
        .get("/api/v1/instances?status=pending&providerId=default&agentFramework=beeos-claw&clusterId=cl-us-east-1", ALICE)
        .await;
    assert_eq!(filtered.body["total"], 7);
    let none = h
        .client
        .get("/api/v1/instances?providerId=byod", ALICE)
        .await;
    assert_eq!(none.body["total"], 0);
    assert_eq!(none.data(), &json!([]));
}

#[tokio::test]
async fn bad_page_parameters_get_400_invalid_param() {
    let h = start().await;
    for (query, param) in [
        ("pageSize=201", "pageSize"),
        ("pageSize=-1", "pageSize"),
        ("page=-1", "page"),
        ("page=x", "page"),
    ] {
        let answer = h
            .client
            .get(&format!("/api/v1/instances?{query}"), ALICE)
            .await;
        answer.assert_error(400, "invalid_param");
        assert_eq!(answer.param(), Some(param));
    }
    let ok = h
        .client
        .get("/api/v1/instances?pageSize=200&page=0", ALICE)
        .await;
    assert_eq!(ok.status, StatusCode::OK);
}

#[tokio::test]
async fn the_catalog_answers_with_typed_items() {
    let h = start().await;
    let providers = h.client.get("/api/v1/providers", ALICE).await;
    assert_eq!(providers.status, StatusCode::OK);
    let first = &providers.data()[0];
    for field in ["id", "name", "description", "version"] {
        assert!(first["meta"][field].is_string(), "meta.{field}");
    }
    assert!(first["capabilities"]["longRunning"].is_boolean());
    assert!(first["capabilities"]["maxDurationSec"].is_i64());

    let regions = h
        .client
        .get("/api/v1/deploy/regions?providerId=byod", ALICE)
        .await;
    assert_eq!(
        regions.data(),
        &json!([{"id": "local", "name": "Local device", "available": true}])
    );
    let all = h.client.get("/api/v1/deploy/regions", ALICE).await;
    assert!(all.data().as_array().unwrap().len() > 1);
    let unknown = h
        .client
        .get("/api/v1/deploy/regions?providerId=nope", ALICE)
        .await;
    unknown.assert_error(400, "invalid_param");
    assert_eq!(unknown.param(), Some("providerId"));

    let models = h
        .client
        .get("/api/v1/deploy/models?agentFramework=device-agent", ALICE)
        .await;
    let items = models.data().as_array().unwrap();
    assert_eq!(items.len(), 1);
    for field in ["id", "name", "tier"] {
        assert!(items[0][field].is_string());
    }
    assert!(items[0]["reasoning"].is_boolean());
}

#[tokio::test]
async fn unknown_paths_and_methods_answer_with_the_error_envelope() {
    let h = start().await;
    h.client
        .get("/api/v1/nothing", ALICE)
        .await
        .assert_error(404, "not_found");
    h.client
        .call(Method::PATCH, "/api/v1/instances/inst_1", Some(ALICE), None)
        .await
        .assert_error(405, "method_not_allowed");
}

#[tokio::test]
async fn admin_calls_count_every_request_per_route() {
    let h = start().await;
    let id = h.client.deploy(ALICE, "a").await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    h.client.get("/api/v1/instances", ALICE).await;
    h.client.get("/api/v1/instances", "oag_nobody").await; // refused, still counted
    h.client.instance(ALICE, &id).await;
    h.client
        .post(&format!("/api/v1/instances/{id}/stop"), ALICE)
        .await; // 409, still counted
    h.client.get("/api/v1/providers", ALICE).await;
    let calls = h.client.admin(Method::GET, "/_sim/calls", None).await.body;
    assert_eq!(calls["total"], 6);
    assert_eq!(calls["routes"]["deploy"], 1);
    assert_eq!(calls["routes"]["list"], 2);
    assert_eq!(calls["routes"]["get"], 1);
    assert_eq!(calls["routes"]["stop"], 1);
    assert_eq!(calls["routes"]["providers"], 1);
    assert_eq!(calls["routes"]["models"], 0);
}

#[tokio::test]
async fn admin_reset_empties_the_table_counters_and_faults_but_keeps_settings() {
    let h = start().await;
    h.client.deploy(ALICE, "a").await;
    h.client
        .put_faults(json!({"latencyMs": 1, "routes": {"get": {"status": 500}}}))
        .await;
    let settings = h.client.put_settings(json!({"pendingMs": 5})).await;
    assert_eq!(settings["pendingMs"], 5);
    assert_eq!(settings["provisioningMs"], 300);

    let reset = h.client.admin(Method::POST, "/_sim/reset", None).await;
    assert_eq!(reset.status, StatusCode::NO_CONTENT);
    assert!(h.client.admin_instances().await.is_empty());
    let calls = h.client.admin(Method::GET, "/_sim/calls", None).await.body;
    assert_eq!(calls["total"], 0);
    let faults = h.client.admin(Method::GET, "/_sim/faults", None).await.body;
    assert_eq!(
        faults,
        json!({"latencyMs": 0, "routes": {}, "dropDeployResponse": null})
    );
    let settings = h
        .client
        .admin(Method::GET, "/_sim/settings", None)
        .await
        .body;
    assert_eq!(settings["pendingMs"], 5);
}

#[tokio::test]
async fn admin_refuses_malformed_faults_and_settings() {
    let h = start().await;
    for bad in [
        json!({"routes": {"update": {"status": 500}}}),
        json!({"routes": {"get": {"status": 404}}}),
        json!({"routes": {"get": {"status": 500, "errorRate": 1.5}}}),
        json!({"dropDeployResponse": {"mode": "explode"}}),
        json!({"latency": 5}),
    ] {
        let answer = h
            .client
            .admin(Method::PUT, "/_sim/faults", Some(bad.clone()))
            .await;
        assert_eq!(answer.status, StatusCode::BAD_REQUEST, "{bad}");
        assert_eq!(answer.code(), "invalid_body");
    }
    for bad in [
        json!({"pendingMillis": 5}),
        json!({"rateLimitPerSecond": -2}),
    ] {
        let answer = h
            .client
            .admin(Method::PUT, "/_sim/settings", Some(bad.clone()))
            .await;
        assert_eq!(answer.status, StatusCode::BAD_REQUEST, "{bad}");
    }
}

#[test]
fn the_vendored_contract_is_identical_to_the_shared_one() {
    let crate_dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    let vendored = std::fs::read(crate_dir.join("contract/beeos-platform-v1.yaml"))
        .expect("vendored contract");
    // The repository root is two levels up; shared/ sits beside it when present (CI and dev).
    let shared = crate_dir.join("../../../shared/contracts/beeos-platform-v1.yaml");
    match std::fs::read(&shared) {
        Ok(upstream) => assert!(
            vendored == upstream,
            "tools/beeos-sim/contract/beeos-platform-v1.yaml differs from {}; copy it again",
            shared.display()
        ),
        Err(_) => eprintln!(
            "{} not found; only the vendored copy is checked",
            shared.display()
        ),
    }
    let text = String::from_utf8(vendored).expect("UTF-8");
    assert!(text.contains("operationId: deployInstance"));
}
