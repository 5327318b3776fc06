//! The reconcile driver against a fake API server and the simulator: each path of a deploy and
//! of ownership, with the requests it makes and what BeeOS sees.

use std::num::NonZeroU32;
use std::time::Duration;

use kube::ResourceExt;
use serde_json::Value;

use super::fixtures::{Build, Fixture, NAMESPACE, OTHER_TOKEN, TOKEN, intervals, resource};
use crate::beeos::{ClientOptions, RateLimiters};
use crate::crd::{
    CLAIM_ANNOTATION, DEPLOY_STARTED_AT_ANNOTATION, FINALIZER, INSTANCE_ID_ANNOTATION,
    SECRET_IN_USE_FINALIZER, SECRET_REFERENCED_LABEL, SecretKeyRef, condition, reason,
};

const GRACE: Duration = Duration::from_secs(120);

fn alive(table: &[Value]) -> Vec<&Value> {
    table
        .iter()
        .filter(|i| i["status"] != "terminated" && i["desiredStatus"] != "terminated")
        .collect()
}

/// The digest a resource's instance has when it was deployed with the current spec.
fn up_to_date_digest(resource: &crate::crd::BeeosInstance) -> String {
    super::request::digest(&super::request::deploy_request(
        &resource.spec,
        &resource.name_any(),
    ))
}

fn stalled_reason(resource: &crate::crd::BeeosInstance) -> Option<String> {
    resource
        .status
        .as_ref()?
        .conditions
        .iter()
        .find(|c| c.type_ == condition::STALLED && c.status == "True")
        .map(|c| c.reason.clone())
}

#[tokio::test]
async fn a_first_reconcile_marks_with_its_finalizer_deploys_once_and_records_behind_a_fence() {
    let fixture = Fixture::new(
        &resource("agent"),
        intervals(GRACE),
        ClientOptions::default(),
    )
    .await;
    fixture.reconcile().await;

    let writes: Vec<_> = fixture
        .api
        .requests()
        .into_iter()
        .filter(|r| r.is_metadata_patch())
        .collect();
    assert_eq!(writes.len(), 2, "{writes:#?}");
    // One guarded write puts the finalizer and the pending mark on together.
    let mark = &writes[0].body["metadata"];
    assert_eq!(mark["resourceVersion"], "1");
    assert_eq!(mark["finalizers"], serde_json::json!([FINALIZER]));
    let mark_value = mark["annotations"][DEPLOY_STARTED_AT_ANNOTATION].clone();
    assert!(mark_value.is_string());
    // The id is recorded only while that mark is current.
    assert!(writes[1].is_json_patch());
    assert_eq!(writes[1].body[0]["op"], "test");
    assert_eq!(writes[1].body[0]["value"], mark_value);

    let table = fixture.table().await;
    assert_eq!(table.len(), 1);
    let stored = fixture.api.resource();
    assert_eq!(
        stored
            .annotations()
            .get(INSTANCE_ID_ANNOTATION)
            .map(String::as_str),
        table[0]["id"].as_str()
    );
    assert!(
        !stored
            .annotations()
            .contains_key(DEPLOY_STARTED_AT_ANNOTATION)
    );
    let claim = stored
        .annotations()
        .get(CLAIM_ANNOTATION)
        .cloned()
        .unwrap_or_default();
    assert_eq!(
        claim,
        format!(
            "{NAMESPACE}/agent/{}",
            table[0]["id"].as_str().unwrap_or_default()
        )
    );
    let name = table[0]["name"].as_str().unwrap_or_default();
    assert!(
        name.starts_with("agent-") && name.len() == "agent-".len() + 8,
        "{name}"
    );
    // The status waits for the first poll of the new instance: no write yet.
    assert!(
        fixture
            .api
            .requests()
            .iter()
            .all(|r| !r.path.ends_with("/status"))
    );
}

#[tokio::test]
async fn a_mark_write_that_conflicts_sends_no_deploy() {
    let fixture = Fixture::new(
        &resource("agent"),
        intervals(GRACE),
        ClientOptions::default(),
    )
    .await;
    fixture.api.fail_next_metadata_patch(409);
    fixture.reconcile().await;
    assert_eq!(fixture.calls("deploy").await, 0);
    assert!(
        !fixture
            .api
            .resource()
            .annotations()
            .contains_key(DEPLOY_STARTED_AT_ANNOTATION)
    );
}

#[tokio::test]
async fn a_process_fenced_out_after_its_deploy_destroys_what_it_deployed() {
    let fixture = Fixture::new(
        &resource("agent"),
        intervals(GRACE),
        ClientOptions::default(),
    )
    .await;
    // While the deploy is in flight, another process gives up on this mark and marks anew.
    fixture.api.before_json_patch(|resource| {
        resource["metadata"]["annotations"][DEPLOY_STARTED_AT_ANNOTATION] =
            Value::from("2026-12-01T12:00:00.000000001Z");
    });
    fixture.reconcile().await;

    let stored = fixture.api.resource();
    assert!(
        !stored.annotations().contains_key(INSTANCE_ID_ANNOTATION),
        "a fenced-out process records nothing"
    );
    assert_eq!(
        stored
            .annotations()
            .get(DEPLOY_STARTED_AT_ANNOTATION)
            .map(String::as_str),
        Some("2026-12-01T12:00:00.000000001Z"),
        "the other process's mark stays"
    );
    fixture
        .wait_for_table("the superseded instance destroyed", |table| {
            table.len() == 1 && alive(table).is_empty()
        })
        .await;
}

#[tokio::test]
async fn a_deploy_stalled_in_the_rate_limit_past_half_the_grace_is_never_sent() {
    let limiters = RateLimiters::per_second(
        NonZeroU32::new(1).expect("nonzero"),
        NonZeroU32::new(1).expect("nonzero"),
    );
    let options = ClientOptions {
        rate_limiters: Some(limiters),
        ..ClientOptions::default()
    };
    // Half of this grace is well inside the one-second wait the rate limit will impose.
    let fixture = Fixture::new(
        &resource("agent"),
        intervals(Duration::from_millis(400)),
        options.clone(),
    )
    .await;
    let same_bucket = crate::beeos::BeeosClient::new(
        &fixture.sim.base_url(),
        crate::beeos::Credential::new(TOKEN).expect("valid"),
        options,
    )
    .expect("a client");
    same_bucket
        .deploy(&crate::beeos::DeployRequest {
            name: "someone-else".into(),
            variant_id: Some("beeos-claw-small".into()),
            ..Default::default()
        })
        .await
        .expect("deploys");

    fixture.reconcile().await;
    assert_eq!(
        fixture.calls("deploy").await,
        1,
        "only the deploy that used up the bucket"
    );
    let stored = fixture.api.resource();
    assert!(
        !stored
            .annotations()
            .contains_key(DEPLOY_STARTED_AT_ANNOTATION),
        "the mark is cleared: nothing was sent, the next attempt need not look"
    );
}

#[tokio::test]
async fn deleting_a_copy_calls_beeos_never_and_only_lets_go_of_its_finalizer() {
    let original = resource("original")
        .finalized()
        .annotated(INSTANCE_ID_ANNOTATION, "inst_original")
        .annotated(
            CLAIM_ANNOTATION,
            &format!("{NAMESPACE}/original/inst_original"),
        );
    let copy = resource("copy")
        .finalized()
        .annotated(INSTANCE_ID_ANNOTATION, "inst_original")
        .annotated(
            CLAIM_ANNOTATION,
            &format!("{NAMESPACE}/original/inst_original"),
        )
        .deleting();
    let fixture = Fixture::new(&copy, intervals(GRACE), ClientOptions::default()).await;
    fixture.watched(&original);
    fixture.watched(&copy);
    fixture.reconcile().await;

    let calls: u64 = futures::future::join_all(
        ["get", "list", "destroy", "stop"].map(|route| fixture.calls(route)),
    )
    .await
    .into_iter()
    .sum();
    assert_eq!(
        calls, 0,
        "no BeeOS call for an instance the copy does not own"
    );
    assert!(fixture.api.resource().finalizers().is_empty());
}

#[tokio::test]
async fn another_accounts_instance_stalls_and_holds_the_deletion_instead_of_counting_as_gone() {
    let placeholder = resource("agent");
    let fixture = Fixture::new(&placeholder, intervals(GRACE), ClientOptions::default()).await;
    let foreign = fixture.deploy_directly(OTHER_TOKEN, "team-b-agent").await;
    let pointed = resource("agent")
        .finalized()
        .annotated(INSTANCE_ID_ANNOTATION, &foreign)
        .annotated(CLAIM_ANNOTATION, &format!("{NAMESPACE}/agent/{foreign}"))
        .deleting();
    fixture.api.set_resource(&pointed);
    fixture.watched(&pointed);
    fixture.reconcile().await;

    let stored = fixture.api.resource();
    assert_eq!(
        stalled_reason(&stored).as_deref(),
        Some(reason::INSTANCE_FORBIDDEN)
    );
    assert!(
        stored.finalizers().contains(&FINALIZER.to_owned()),
        "not let go"
    );
    assert_eq!(
        alive(&fixture.table().await).len(),
        1,
        "the instance lives on"
    );
}

#[tokio::test]
async fn a_lost_id_annotation_is_restored_from_the_claim_and_nothing_is_deployed() {
    let placeholder = resource("agent");
    let fixture = Fixture::new(&placeholder, intervals(GRACE), ClientOptions::default()).await;
    let id = fixture.deploy_directly(TOKEN, "agent-1234abcd").await;
    let stripped = resource("agent")
        .finalized()
        .annotated(CLAIM_ANNOTATION, &format!("{NAMESPACE}/agent/{id}"));
    fixture.api.set_resource(&stripped);
    fixture.watched(&stripped);
    fixture.reconcile().await;

    assert_eq!(
        fixture
            .api
            .resource()
            .annotations()
            .get(INSTANCE_ID_ANNOTATION),
        Some(&id)
    );
    assert_eq!(
        fixture.calls("deploy").await,
        1,
        "only the instance that was there"
    );
}

#[tokio::test]
async fn a_credentials_secret_is_labelled_and_protected_before_the_first_deploy() {
    let mut with_credentials = resource("agent");
    with_credentials.spec.credentials = Some(SecretKeyRef {
        name: "beeos-token".into(),
        key: None,
    });
    let fixture = Fixture::new(
        &with_credentials,
        intervals(GRACE),
        ClientOptions::default(),
    )
    .await;
    fixture.api.put_secret("beeos-token", &[("token", TOKEN)]);
    fixture.reconcile().await;

    let secret = fixture.api.secret("beeos-token").expect("the Secret");
    assert_eq!(
        secret["metadata"]["labels"][SECRET_REFERENCED_LABEL],
        "true"
    );
    assert_eq!(
        secret["metadata"]["finalizers"],
        serde_json::json!([SECRET_IN_USE_FINALIZER])
    );
    let requests = fixture.api.requests();
    let protected_at = requests
        .iter()
        .position(|r| r.path.contains("/secrets/") && r.method == http::Method::PATCH);
    let marked_at = requests.iter().position(|r| r.is_metadata_patch());
    assert!(
        protected_at < marked_at,
        "protected before the deploy is marked"
    );
    assert_eq!(fixture.calls("deploy").await, 1);
}

#[tokio::test]
async fn an_instance_stuck_in_transition_past_the_limit_stalls_with_a_reason() {
    let placeholder = resource("agent");
    let mut slow = intervals(GRACE);
    slow.transition_timeout = Duration::ZERO;
    let fixture = Fixture::new(&placeholder, slow, ClientOptions::default()).await;
    reqwest::Client::new()
        .put(format!("{}/_sim/settings", fixture.sim.base_url()))
        .json(&serde_json::json!({"provisioningMs": 3_600_000}))
        .send()
        .await
        .expect("settings");
    let id = fixture.deploy_directly(TOKEN, "slow").await;
    let adopted = resource("agent")
        .finalized()
        .annotated(INSTANCE_ID_ANNOTATION, &id)
        .annotated(CLAIM_ANNOTATION, &format!("{NAMESPACE}/agent/{id}"))
        .annotated(
            crate::crd::DEPLOYED_DIGEST_ANNOTATION,
            &up_to_date_digest(&placeholder),
        );
    fixture.api.set_resource(&adopted);
    fixture.watched(&adopted);
    // The instance must have been in its state for longer than zero.
    tokio::time::sleep(Duration::from_millis(10)).await;
    fixture.reconcile().await;
    let stored = fixture.api.resource();
    assert_eq!(
        stalled_reason(&stored).as_deref(),
        Some(reason::TRANSITION_TIMEOUT),
        "{:#?}\n{:#?}",
        stored.status,
        fixture.table().await
    );
}

#[tokio::test]
async fn kubernetes_errors_back_off_instead_of_retrying_every_second() {
    let fixture = Fixture::new(
        &resource("agent"),
        intervals(GRACE),
        ClientOptions::default(),
    )
    .await;
    let object = std::sync::Arc::new(fixture.api.resource());
    let forbidden = crate::error::Error::WriteStatus(kube::Error::Api(
        kube::core::Status::failure("forbidden", "Forbidden")
            .with_code(403)
            .boxed(),
    ));
    for _ in 0..4 {
        super::reconcile::error_policy(object.clone(), &forbidden, fixture.context.clone());
    }
    // Each failure doubled the wait: the fifth is at least 2^4 times the first.
    let fifth = fixture.context.backoff(
        kube::runtime::reflector::ObjectRef::from_obj(&*object),
        None,
    );
    assert!(
        fifth >= fixture.context.intervals.min_backoff * 16,
        "{fifth:?}"
    );
}
