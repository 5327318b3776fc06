//! Spec changes and Secret value changes under each update strategy, and secret injection.
//! BeeOS has no update call, so a change means a new instance (Replace, Recreate) or a drift
//! report (OnDelete); the simulator's table shows which instances existed and when.

mod support;

use anyhow::{Context, Result};
use beeos_operator::crd::{BeeosInstance, condition, reason};
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, Patch, PatchParams};
use serde_json::{Value, json};
use support::{Env, has_condition, instance_id, is_ready};

const FIRST_KEY: &str = "sk-first-0123456789";
const SECOND_KEY: &str = "sk-second-9876543210";

async fn put_secret(env: &Env, value: &str) -> Result<()> {
    put_secret_data(env, json!({"openai": value})).await
}

async fn put_secret_data(env: &Env, string_data: Value) -> Result<()> {
    let secret: Secret = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Secret",
        "metadata": {"name": "provider-keys"},
        "stringData": string_data,
    }))?;
    Api::<Secret>::namespaced(env.client.clone(), &env.namespace)
        .patch(
            "provider-keys",
            &PatchParams::apply("beeos-tests").force(),
            &Patch::Apply(&secret),
        )
        .await?;
    Ok(())
}

async fn apply_agent(env: &Env, strategy: &str, prompt: &str) -> Result<()> {
    env.apply(serde_json::from_value(json!({
        "apiVersion": "beeos.ai/v1alpha1", "kind": "BeeosInstance",
        "metadata": {"name": "agent"},
        "spec": {
            "agentFramework": "beeos-claw",
            "systemPrompt": prompt,
            "updateStrategy": strategy,
            "secretInjections": [{
                "path": "providerConfig.apiKeys.openai",
                "secretKeyRef": {"name": "provider-keys", "key": "openai"},
            }],
        },
    }))?)
    .await
}

/// Waits until the resource is Ready on an instance other than `old`, and returns it.
async fn wait_replaced(env: &Env, old: &str) -> Result<(BeeosInstance, String)> {
    let old = old.to_owned();
    let resource = env
        .wait_for("agent", "Ready on a new instance", |r| {
            is_ready(r) && instance_id(r).is_some_and(|id| id != old)
        })
        .await?;
    let id = instance_id(&resource).context("recorded")?;
    Ok((resource, id))
}

fn deploy_body(instance: &Value) -> &Value {
    &instance["deployRequest"]
}

/// The secret value reached BeeOS, and nowhere else: not in the resource, its events, or the
/// operator's log.
async fn assert_secret_only_at_beeos(env: &Env, value: &str, instance: &Value) -> Result<()> {
    assert_eq!(
        deploy_body(instance)["providerConfig"]["apiKeys"]["openai"],
        value
    );
    let resource = env.api().get("agent").await?;
    assert!(!serde_json::to_string(&resource)?.contains(value));
    let events =
        Api::<k8s_openapi::api::core::v1::Event>::namespaced(env.client.clone(), &env.namespace)
            .list(&Default::default())
            .await?;
    assert!(!serde_json::to_string(&events.items)?.contains(value));
    assert!(!env.operator_log().contains(value));
    Ok(())
}

#[tokio::test]
async fn replace_deploys_the_new_instance_before_destroying_the_old() -> Result<()> {
    let env = Env::start("update-replace").await?;
    put_secret(&env, FIRST_KEY).await?;
    apply_agent(&env, "Replace", "v1").await?;
    let first = env.wait_for("agent", "Ready", is_ready).await?;
    let first_id = instance_id(&first).context("recorded")?;
    assert_secret_only_at_beeos(&env, FIRST_KEY, &env.sim_instance(&first_id).await?).await?;

    // A spec change. Slow provisioning leaves time to see both instances in the status.
    env.set_sim_settings(json!({"provisioningMs": 2000}))
        .await?;
    apply_agent(&env, "Replace", "v2").await?;
    let replacing = env
        .wait_for("agent", "showing its replacement", |r| {
            r.status.as_ref().is_some_and(|s| s.replacement.is_some())
        })
        .await?;
    let ready = support::condition(&replacing, condition::READY).context("Ready")?;
    assert_eq!(
        (ready.status.as_str(), ready.reason.as_str()),
        ("False", reason::REPLACING),
        "{ready:?}"
    );
    let status = replacing.status.context("status")?;
    assert_eq!(status.instance.map(|i| i.id), Some(first_id.clone()));
    let (_, second_id) = wait_replaced(&env, &first_id).await?;
    let old = env.sim_instance(&first_id).await?;
    let new = env.sim_instance(&second_id).await?;
    assert_eq!(deploy_body(&new)["systemPrompt"], "v2");
    assert_eq!(old["desiredStatus"], "terminated");
    assert!(
        new["createdAt"].as_str() < old["destroyedAt"].as_str(),
        "the new instance existed before the old one went: {new} {old}"
    );

    // A Secret value change is a change too.
    env.set_sim_settings(json!({"provisioningMs": 300})).await?;
    put_secret(&env, SECOND_KEY).await?;
    let (_, third_id) = wait_replaced(&env, &second_id).await?;
    let third = env.sim_instance(&third_id).await?;
    assert_secret_only_at_beeos(&env, SECOND_KEY, &third).await?;
    assert_eq!(env.sim_instances().await?.len(), 3);
    Ok(())
}

#[tokio::test]
async fn recreate_destroys_the_old_instance_before_deploying_the_new() -> Result<()> {
    let env = Env::start("update-recreate").await?;
    put_secret(&env, FIRST_KEY).await?;
    apply_agent(&env, "Recreate", "v1").await?;
    let first_id = instance_id(&env.wait_for("agent", "Ready", is_ready).await?).context("id")?;

    apply_agent(&env, "Recreate", "v2").await?;
    let (_, second_id) = wait_replaced(&env, &first_id).await?;
    let old = env.sim_instance(&first_id).await?;
    let new = env.sim_instance(&second_id).await?;
    assert_eq!(deploy_body(&new)["systemPrompt"], "v2");
    assert!(
        old["destroyedAt"].as_str() <= new["createdAt"].as_str(),
        "the old instance went before the new one came: {old} {new}"
    );

    put_secret(&env, SECOND_KEY).await?;
    let (_, third_id) = wait_replaced(&env, &second_id).await?;
    assert_secret_only_at_beeos(&env, SECOND_KEY, &env.sim_instance(&third_id).await?).await?;
    let alive = env
        .sim_instances()
        .await?
        .into_iter()
        .filter(|i| i["desiredStatus"] != "terminated")
        .count();
    assert_eq!(alive, 1);
    Ok(())
}

#[tokio::test]
async fn on_delete_reports_drift_and_changes_nothing() -> Result<()> {
    let env = Env::start("update-on-delete").await?;
    put_secret(&env, FIRST_KEY).await?;
    apply_agent(&env, "OnDelete", "v1").await?;
    let first_id = instance_id(&env.wait_for("agent", "Ready", is_ready).await?).context("id")?;

    apply_agent(&env, "OnDelete", "v2").await?;
    let drifted = env
        .wait_for("agent", "reporting spec drift", |r| {
            support::condition(r, condition::SYNCED).is_some_and(|c| {
                c.reason == reason::SPEC_DRIFT && c.observed_generation == r.metadata.generation
            })
        })
        .await?;
    assert!(
        has_condition(&drifted, condition::READY, "True"),
        "still serving"
    );
    assert_eq!(instance_id(&drifted), Some(first_id.clone()));

    // Back to what is deployed: the drift report goes away.
    apply_agent(&env, "OnDelete", "v1").await?;
    env.wait_for("agent", "in sync again", |r| {
        support::condition(r, condition::SYNCED).is_some_and(|c| c.status == "True")
            && support::condition(r, condition::SYNCED)
                .is_some_and(|c| c.observed_generation == r.metadata.generation)
    })
    .await?;

    put_secret(&env, SECOND_KEY).await?;
    env.wait_for("agent", "reporting drift from the Secret", |r| {
        support::condition(r, condition::SYNCED).is_some_and(|c| c.reason == reason::SPEC_DRIFT)
    })
    .await?;
    assert_eq!(
        env.sim_calls("deploy").await?,
        1,
        "OnDelete never deploys again"
    );
    assert_eq!(env.sim_calls("destroy").await?, 0);
    Ok(())
}

#[tokio::test]
async fn missing_injected_secret_stalls_naming_it_not_its_value() -> Result<()> {
    let env = Env::start("update-missing-secret").await?;
    apply_agent(&env, "Replace", "v1").await?;
    let stalled = env
        .wait_for("agent", "Stalled", |r| {
            has_condition(r, condition::STALLED, "True")
        })
        .await?;
    let stalled = support::condition(&stalled, condition::STALLED).context("Stalled")?;
    assert_eq!(stalled.reason, reason::SECRET_UNAVAILABLE);
    assert!(
        stalled.message.contains("provider-keys") && stalled.message.contains("not found"),
        "{}",
        stalled.message
    );
    assert_eq!(env.sim_total_calls().await?, 0);

    // The Secret without the key: named too.
    put_secret_data(&env, json!({"other": FIRST_KEY})).await?;
    apply_agent(&env, "Replace", "v1-retry").await?;
    env.wait_for("agent", "naming the missing key", |r| {
        support::condition(r, condition::STALLED)
            .is_some_and(|c| c.message.contains("no key \"openai\""))
    })
    .await?;
    let resource = env.api().get("agent").await?;
    assert!(!serde_json::to_string(&resource)?.contains(FIRST_KEY));
    Ok(())
}

#[tokio::test]
async fn reverting_the_spec_mid_replacement_destroys_the_replacement() -> Result<()> {
    let env = Env::start("update-revert").await?;
    put_secret(&env, FIRST_KEY).await?;
    apply_agent(&env, "Replace", "v1").await?;
    let first_id = instance_id(&env.wait_for("agent", "Ready", is_ready).await?).context("id")?;

    env.set_sim_settings(json!({"provisioningMs": 3000}))
        .await?;
    apply_agent(&env, "Replace", "v2").await?;
    let replacing = env
        .wait_for("agent", "showing its replacement", |r| {
            r.status.as_ref().is_some_and(|s| s.replacement.is_some())
        })
        .await?;
    let replacement_id = replacing
        .status
        .and_then(|s| s.replacement)
        .map(|r| r.id)
        .context("replacement")?;

    apply_agent(&env, "Replace", "v1").await?;
    let settled = env
        .wait_for("agent", "Ready on the original, replacement gone", |r| {
            is_ready(r) && r.status.as_ref().is_some_and(|s| s.replacement.is_none())
        })
        .await?;
    assert_eq!(instance_id(&settled), Some(first_id.clone()));
    assert_eq!(
        env.sim_instance(&replacement_id).await?["desiredStatus"],
        "terminated",
        "the unwanted replacement is not left running"
    );
    assert_eq!(
        env.sim_instance(&first_id).await?["desiredStatus"],
        "running"
    );
    Ok(())
}
