//! Adoption and import: a resource created with `beeos.ai/instance-id` takes over that
//! instance instead of deploying; an id that does not exist, belongs to another BeeOS owner or
//! is already owned by another resource stalls with a reason that says so.

mod support;

use anyhow::{Context, Result};
use beeos_operator::beeos::{BeeosClient, ClientOptions, Credential, DeployRequest};
use beeos_operator::crd::{INSTANCE_ID_ANNOTATION, condition, reason};
use kube::api::DynamicObject;
use serde_json::json;
use support::{Env, TEAM_A_TOKEN, TEAM_B_TOKEN, has_condition, instance_id, is_ready};

/// Deploys an instance straight at BeeOS, as someone outside Kubernetes would have.
async fn deploy_directly(env: &Env, token: &str, name: &str) -> Result<String> {
    let client = BeeosClient::new(
        &env.sim.base_url(),
        Credential::new(token)?,
        ClientOptions::default(),
    )?;
    let instance = client
        .deploy(&DeployRequest {
            name: name.into(),
            variant_id: Some("beeos-claw-small".into()),
            ..DeployRequest::default()
        })
        .await?;
    Ok(instance.instance_id)
}

fn adopting(name: &str, instance_id: &str) -> Result<DynamicObject> {
    Ok(serde_json::from_value(json!({
        "apiVersion": "beeos.ai/v1alpha1", "kind": "BeeosInstance",
        "metadata": {"name": name, "annotations": {INSTANCE_ID_ANNOTATION: instance_id}},
        "spec": {"variantId": "beeos-claw-small"},
    }))?)
}

#[tokio::test]
async fn annotated_resource_takes_over_an_existing_instance_without_deploying() -> Result<()> {
    let env = Env::start("adopt-existing").await?;
    let id = deploy_directly(&env, TEAM_A_TOKEN, "made-elsewhere").await?;
    env.apply(adopting("imported", &id)?).await?;
    let ready = env.wait_for("imported", "Ready", is_ready).await?;
    assert_eq!(instance_id(&ready), Some(id.clone()));
    let observed = ready.status.and_then(|s| s.instance).context("mirrored")?;
    assert_eq!(observed.id, id);
    assert_eq!(env.sim_calls("deploy").await?, 1, "only the direct deploy");
    Ok(())
}

#[tokio::test]
async fn unknown_or_foreign_instance_id_stalls_with_a_clear_reason() -> Result<()> {
    let env = Env::start("adopt-missing").await?;
    let foreign = deploy_directly(&env, TEAM_B_TOKEN, "team-b-agent").await?;
    env.apply(adopting("missing", "inst_does_not_exist")?)
        .await?;
    env.apply(adopting("foreign", &foreign)?).await?;
    for (name, id, expected_reason, says) in [
        (
            "missing",
            "inst_does_not_exist",
            reason::INSTANCE_GONE,
            "does not exist",
        ),
        // BeeOS answers 403 for another account's instance: it is not "gone".
        (
            "foreign",
            foreign.as_str(),
            reason::INSTANCE_FORBIDDEN,
            "another BeeOS account",
        ),
    ] {
        let stalled = env
            .wait_for(name, "Stalled", |r| {
                has_condition(r, condition::STALLED, "True")
            })
            .await?;
        let stalled = support::condition(&stalled, condition::STALLED).context("Stalled")?;
        assert_eq!(stalled.reason, expected_reason);
        assert!(
            stalled.message.contains(id) && stalled.message.contains(says),
            "{}",
            stalled.message
        );
    }
    assert_eq!(
        env.sim_calls("deploy").await?,
        1,
        "nothing deployed in their place"
    );
    // The foreign instance is untouched.
    assert_eq!(
        env.sim_instance(&foreign).await?["desiredStatus"],
        "running"
    );
    Ok(())
}

#[tokio::test]
async fn instance_owned_by_another_resource_is_not_taken_over() -> Result<()> {
    let env = Env::start("adopt-claimed").await?;
    env.apply_example("catalog-instance.yaml").await?;
    let first = env.wait_for("catalog-agent", "Ready", is_ready).await?;
    let id = instance_id(&first).context("recorded")?;

    env.apply(adopting("copycat", &id)?).await?;
    let stalled = env
        .wait_for("copycat", "Stalled", |r| {
            has_condition(r, condition::STALLED, "True")
        })
        .await?;
    let stalled = support::condition(&stalled, condition::STALLED).context("Stalled")?;
    assert_eq!(stalled.reason, reason::INSTANCE_CLAIMED);
    assert!(stalled.message.contains(&id), "{}", stalled.message);
    let first = env.api().get("catalog-agent").await?;
    assert!(is_ready(&first), "the owner keeps its instance");
    assert_eq!(env.sim_calls("deploy").await?, 1);
    Ok(())
}
