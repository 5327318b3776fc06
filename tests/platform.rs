//! What platform teams build on: the connection ConfigMap applications load, run time per
//! resource for charge-back, and trial expiry before it bites — on the real control plane (its
//! garbage collector included) with the simulator.

mod support;

use std::time::Duration;

use anyhow::{Context, Result, ensure};
use beeos_operator::crd::{BeeosInstance, condition, reason};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::ResourceExt;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use serde_json::json;
use support::{DEADLINE, Env, events_with_reason, instance_id, is_ready};

fn config_maps(env: &Env) -> Api<ConfigMap> {
    Api::namespaced(env.client.clone(), &env.namespace)
}

async fn connection(env: &Env, name: &str) -> Result<Option<ConfigMap>> {
    Ok(config_maps(env).get_opt(name).await?)
}

fn connection_id(config_map: &ConfigMap) -> Option<String> {
    config_map.data.as_ref()?.get("BEEOS_INSTANCE_ID").cloned()
}

/// Waits until the connection ConfigMap `name` satisfies `check`.
async fn wait_for_connection(
    env: &Env,
    name: &str,
    what: &str,
    check: impl Fn(&ConfigMap) -> bool,
) -> Result<ConfigMap> {
    let started = tokio::time::Instant::now();
    loop {
        if let Some(config_map) = connection(env, name).await?
            && check(&config_map)
        {
            return Ok(config_map);
        }
        ensure!(
            started.elapsed() < DEADLINE,
            "ConfigMap {name} was not {what}\n{}",
            support::tail(&env.operator_log(), 30)
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn the_connection_configmap_follows_the_current_instance_and_goes_with_the_resource()
-> Result<()> {
    let env = Env::start("platform-connection").await?;
    env.apply_example("connection-configmap.yaml").await?;
    let ready = env.wait_for("support-agent", "Ready", is_ready).await?;
    let first = instance_id(&ready).context("recorded")?;
    let config_map = wait_for_connection(&env, "support-agent-connection", "written", |cm| {
        connection_id(cm).as_deref() == Some(first.as_str())
    })
    .await?;
    let data = config_map.data.clone().unwrap_or_default();
    assert_eq!(
        data.keys().map(String::as_str).collect::<Vec<_>>(),
        [
            "BEEOS_CONNECTIVITY",
            "BEEOS_ENDPOINT",
            "BEEOS_INSTANCE_ID",
            "BEEOS_REGION",
            "BEEOS_STATUS"
        ]
    );
    assert!(data["BEEOS_ENDPOINT"].starts_with("https://"));
    let owner = &config_map.owner_references()[0];
    assert_eq!(Some(&owner.uid), ready.metadata.uid.as_ref());
    assert_eq!(owner.controller, Some(true));
    // The application that loads it, as the example shows.
    let deployments: Api<Deployment> = Api::namespaced(env.client.clone(), &env.namespace);
    let bot = deployments.get("support-bot").await?;
    let env_from = serde_json::to_value(&bot.spec)?;
    assert_eq!(
        env_from["template"]["spec"]["containers"][0]["envFrom"][0]["configMapRef"]["name"],
        "support-agent-connection"
    );

    // A Replace: the ConfigMap keeps the old instance until the new one is running and online.
    env.set_sim_settings(json!({"provisioningMs": 3000}))
        .await?;
    env.api()
        .patch(
            "support-agent",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"modelPrimary": "gpt-4o"}})),
        )
        .await?;
    env.wait_for("support-agent", "replacing", |r| {
        r.status.as_ref().is_some_and(|s| s.replacement.is_some())
    })
    .await?;
    let during = connection(&env, "support-agent-connection")
        .await?
        .context("kept")?;
    assert_eq!(
        connection_id(&during),
        Some(first.clone()),
        "not switched before ready"
    );
    let replaced = env
        .wait_for("support-agent", "Ready on a new instance", |r| {
            is_ready(r) && instance_id(r).is_some_and(|id| id != first)
        })
        .await?;
    let second = instance_id(&replaced).context("recorded")?;
    wait_for_connection(&env, "support-agent-connection", "switched", |cm| {
        connection_id(cm).as_deref() == Some(second.as_str())
            && cm
                .data
                .as_ref()
                .is_some_and(|d| d["BEEOS_STATUS"] == "running")
    })
    .await?;

    // Deleted with the resource, by the garbage collector.
    env.api()
        .delete("support-agent", &DeleteParams::default())
        .await?;
    env.wait_gone("support-agent").await?;
    let started = tokio::time::Instant::now();
    while connection(&env, "support-agent-connection")
        .await?
        .is_some()
    {
        ensure!(
            started.elapsed() < DEADLINE,
            "the ConfigMap outlived its resource"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    Ok(())
}

#[tokio::test]
async fn a_configmap_of_that_name_owned_by_someone_else_is_never_overwritten() -> Result<()> {
    let env = Env::start("platform-taken").await?;
    let taken: ConfigMap = serde_json::from_value(json!({
        "metadata": {"name": "taken"}, "data": {"owner": "someone else"},
    }))?;
    config_maps(&env)
        .create(&PostParams::default(), &taken)
        .await?;
    env.apply(serde_json::from_value(json!({
        "apiVersion": "beeos.ai/v1alpha1", "kind": "BeeosInstance",
        "metadata": {"name": "agent"},
        "spec": {"variantId": "beeos-claw-small", "writeConnectionConfigMapToRef": {"name": "taken"}},
    }))?)
    .await?;
    let stalled = env
        .wait_for("agent", "Stalled", |r| {
            support::condition(r, condition::STALLED).is_some_and(|c| {
                c.status == "True" && c.reason == reason::CONNECTION_CONFIG_MAP_NOT_OWNED
            })
        })
        .await?;
    let message = support::condition(&stalled, condition::STALLED)
        .map(|c| c.message.clone())
        .unwrap_or_default();
    assert!(
        message.contains("taken") && message.contains("not owned"),
        "{message}"
    );
    let kept = config_maps(&env).get("taken").await?;
    assert_eq!(
        kept.data
            .unwrap_or_default()
            .get("owner")
            .map(String::as_str),
        Some("someone else")
    );
    assert!(kept.metadata.owner_references.is_none());
    Ok(())
}

/// `beeos_operator_run_seconds_total` of one resource, with its labels.
async fn run_seconds(env: &Env, probe: &str, name: &str) -> Result<Option<(String, f64)>> {
    let text = env
        .http
        .get(format!("{probe}/metrics"))
        .send()
        .await?
        .text()
        .await?;
    Ok(text
        .lines()
        .filter(|l| l.starts_with("beeos_operator_run_seconds_total{"))
        .find(|l| l.contains(&format!("name=\"{name}\"")))
        .and_then(|l| {
            let (labels, value) = l.rsplit_once(' ')?;
            Some((labels.to_owned(), value.parse().ok()?))
        }))
}

#[tokio::test]
async fn run_time_is_exported_per_resource_and_never_goes_back_across_a_replace() -> Result<()> {
    let mut env = Env::without_operator("platform-run-time").await?;
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let probe = format!("http://127.0.0.1:{port}");
    env.start_operator(&["--probe-address", &format!("127.0.0.1:{port}")])?;
    env.apply(support::catalog_instance("agent")?).await?;
    let first = instance_id(&env.wait_for("agent", "Ready", is_ready).await?).context("id")?;
    // The instance runs; its seconds show (the gauges refresh every 10 s).
    let started = tokio::time::Instant::now();
    let before = loop {
        if let Some((labels, seconds)) = run_seconds(&env, &probe, "agent").await?
            && seconds >= 1.0
        {
            assert!(
                labels.contains(&format!("instance_id=\"{first}\"")),
                "{labels}"
            );
            assert!(
                labels.contains(&format!("namespace=\"{}\"", env.namespace)),
                "{labels}"
            );
            break seconds;
        }
        ensure!(started.elapsed() < DEADLINE, "no run time exported");
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    env.api()
        .patch(
            "agent",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"modelPrimary": "gpt-4o"}})),
        )
        .await?;
    let second = instance_id(
        &env.wait_for("agent", "Ready on a new instance", |r| {
            is_ready(r) && instance_id(r).is_some_and(|id| id != first)
        })
        .await?,
    )
    .context("id")?;
    // After the old one is destroyed, the series is the new instance's and has not gone back.
    env.wait_for("agent", "the old instance retired", |r| {
        !r.annotations().contains_key("beeos.ai/retiring-id")
    })
    .await?;
    let started = tokio::time::Instant::now();
    loop {
        if let Some((labels, seconds)) = run_seconds(&env, &probe, "agent").await?
            && labels.contains(&format!("instance_id=\"{second}\""))
        {
            ensure!(
                seconds >= before,
                "{seconds} < {before}: the run time went back"
            );
            break;
        }
        ensure!(
            started.elapsed() < DEADLINE,
            "the series never moved to the new instance"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let retired = env
        .api()
        .get("agent")
        .await?
        .status
        .and_then(|s| s.retired_run_seconds)
        .unwrap_or(0);
    assert!(
        retired as f64 >= before,
        "the replaced instance's {before} s are kept: {retired}"
    );
    Ok(())
}

#[tokio::test]
async fn a_trial_warns_once_within_the_window_and_an_expired_trial_stalls_as_such() -> Result<()> {
    let mut env = Env::without_operator("platform-trial").await?;
    env.set_sim_settings(json!({"trialMs": 15000})).await?;
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    env.start_operator(&[
        "--trial-expiry-warning",
        "1h",
        "--probe-address",
        &format!("127.0.0.1:{port}"),
    ])?;
    env.apply(serde_json::from_value(json!({
        "apiVersion": "beeos.ai/v1alpha1", "kind": "BeeosInstance",
        "metadata": {"name": "trial"},
        "spec": {"variantId": "beeos-claw-trial"},
    }))?)
    .await?;
    let ready = env.wait_for("trial", "Ready", is_ready).await?;
    let expires = ready
        .status
        .as_ref()
        .and_then(|s| s.instance.as_ref())
        .and_then(|i| i.expires_at.clone())
        .context("expiresAt mirrored (the Expires column)")?;
    env.wait_for("trial", "warned", |r: &BeeosInstance| {
        r.status
            .as_ref()
            .and_then(|s| s.trial_expiry_warned.as_deref())
            == Some(expires.as_str())
    })
    .await?;
    assert_eq!(events_with_reason(&env, reason::TRIAL_EXPIRING).await?, 1);

    let expired = env
        .wait_for("trial", "Stalled TrialExpired", |r| {
            support::condition(r, condition::STALLED)
                .is_some_and(|c| c.status == "True" && c.reason == reason::TRIAL_EXPIRED)
        })
        .await?;
    let message = support::condition(&expired, condition::STALLED)
        .map(|c| c.message.clone())
        .unwrap_or_default();
    assert!(message.contains("expired"), "{message}");
    assert_eq!(
        env.sim_calls("start").await?,
        0,
        "an expired trial is not started again"
    );
    assert_eq!(
        events_with_reason(&env, reason::TRIAL_EXPIRING).await?,
        1,
        "warned once"
    );
    let metrics = env
        .http
        .get(format!("http://127.0.0.1:{port}/metrics"))
        .send()
        .await?
        .text()
        .await?;
    assert!(
        metrics.contains("beeos_operator_trial_expiry_timestamp_seconds{"),
        "{metrics}"
    );
    Ok(())
}
