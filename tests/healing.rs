//! A fix made outside the resource heals it without anyone touching the resource: the missing
//! credentials Secret created, a wrong token corrected, a missing injected Secret created. The
//! operator runs with a ten-minute `--stalled-retry`, so only the Secret watch and the
//! missing-Secret retry can heal within the test's deadline; BeeOS is not called while it waits.

mod support;

use anyhow::{Context, Result};
use beeos_operator::crd::{condition, reason};
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, Patch, PatchParams};
use serde_json::{Value, json};
use support::{Env, TEAM_A_TOKEN, catalog_instance, events_with_reason, has_condition, is_ready};

const WRONG_TOKEN: &str = "oag_0000000000000000000000000000000000000000000000000000000000000bad";

async fn put_secret(env: &Env, name: &str, data: Value) -> Result<()> {
    let secret: Secret = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Secret", "metadata": {"name": name}, "stringData": data,
    }))?;
    Api::<Secret>::namespaced(env.client.clone(), &env.namespace)
        .patch(
            name,
            &PatchParams::apply("beeos-tests").force(),
            &Patch::Apply(&secret),
        )
        .await?;
    Ok(())
}

async fn stalled_env(name: &str) -> Result<Env> {
    let mut env = Env::without_operator(name).await?;
    env.start_operator(&["--stalled-retry", "10m"])?;
    Ok(env)
}

fn stalled_for(reason: &'static str) -> impl Fn(&beeos_operator::crd::BeeosInstance) -> bool {
    move |r| {
        support::condition(r, condition::STALLED)
            .is_some_and(|c| c.status == "True" && c.reason == reason)
    }
}

#[tokio::test]
async fn creating_the_missing_credentials_secret_heals_without_beeos_calls_meanwhile() -> Result<()>
{
    let env = stalled_env("heal-missing-credentials").await?;
    let mut agent = catalog_instance("agent")?;
    agent.data["spec"]["credentials"] = json!({"name": "team-token"});
    env.apply(agent).await?;
    env.wait_for(
        "agent",
        "Stalled",
        stalled_for(reason::CREDENTIALS_UNAVAILABLE),
    )
    .await?;
    assert_eq!(
        env.sim_total_calls().await?,
        0,
        "no BeeOS call without credentials"
    );
    assert_eq!(
        events_with_reason(&env, reason::CREDENTIALS_UNAVAILABLE).await?,
        1
    );

    let fixed = std::time::Instant::now();
    put_secret(&env, "team-token", json!({"token": TEAM_A_TOKEN})).await?;
    env.wait_for("agent", "Ready", is_ready).await?;
    println!(
        "missing credentials: Ready {:?} after the fix",
        fixed.elapsed()
    );
    assert_eq!(env.sim_calls("deploy").await?, 1);
    Ok(())
}

#[tokio::test]
async fn correcting_a_wrong_token_heals_at_once() -> Result<()> {
    let env = stalled_env("heal-wrong-token").await?;
    put_secret(&env, "team-token", json!({"token": WRONG_TOKEN})).await?;
    let mut agent = catalog_instance("agent")?;
    agent.data["spec"]["credentials"] = json!({"name": "team-token"});
    env.apply(agent).await?;
    let stalled = env
        .wait_for("agent", "Stalled", stalled_for("BeeosUnauthorized"))
        .await?;
    assert!(has_condition(&stalled, condition::READY, "False"));
    // While it waits, nothing keeps calling BeeOS with the refused token. (A window to watch,
    // not a synchronisation: a slower machine only makes fewer calls.)
    let calls_when_stalled = env.sim_total_calls().await?;
    tokio::time::sleep(std::time::Duration::from_secs(3)).await;
    assert_eq!(
        env.sim_total_calls().await?,
        calls_when_stalled,
        "calls while waiting"
    );

    let fixed = std::time::Instant::now();
    put_secret(&env, "team-token", json!({"token": TEAM_A_TOKEN})).await?;
    env.wait_for("agent", "Ready", is_ready).await?;
    println!("wrong token: Ready {:?} after the fix", fixed.elapsed());
    Ok(())
}

#[tokio::test]
async fn creating_a_missing_injected_secret_heals_without_beeos_calls_meanwhile() -> Result<()> {
    let env = stalled_env("heal-missing-injection").await?;
    let agent = serde_json::from_value(json!({
        "apiVersion": "beeos.ai/v1alpha1", "kind": "BeeosInstance",
        "metadata": {"name": "agent"},
        "spec": {
            "agentFramework": "beeos-claw",
            "secretInjections": [{"path": "providerConfig.apiKeys.openai",
                                  "secretKeyRef": {"name": "provider-keys", "key": "openai"}}],
        },
    }))?;
    env.apply(agent).await?;
    env.wait_for("agent", "Stalled", stalled_for(reason::SECRET_UNAVAILABLE))
        .await?;
    assert_eq!(env.sim_total_calls().await?, 0);

    let fixed = std::time::Instant::now();
    put_secret(&env, "provider-keys", json!({"openai": "sk-test-value"})).await?;
    let ready = env.wait_for("agent", "Ready", is_ready).await?;
    println!(
        "missing injected Secret: Ready {:?} after the fix",
        fixed.elapsed()
    );
    let id = support::instance_id(&ready).context("deployed")?;
    assert_eq!(
        env.sim_instance(&id).await?["deployRequest"]["providerConfig"]["apiKeys"]["openai"],
        "sk-test-value"
    );
    Ok(())
}
