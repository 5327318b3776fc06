//! Never a duplicate, never a leak: the operator killed mid-deploy, lost deploy answers, two
//! operators at once, deletion during a deploy. The simulator's instance table is the judge.

mod support;

use std::time::Duration;

use anyhow::Result;
use beeos_operator::crd::reason;
use kube::api::DeleteParams;
use serde_json::json;
use support::{
    Env, assert_exactly_one_instance_each, catalog_instance, events_with_reason, instance_id,
    is_ready,
};

#[tokio::test]
async fn lost_deploy_answer_with_the_operator_killed_is_adopted_not_repeated() -> Result<()> {
    let mut env = Env::without_operator("crash-lost-answer").await?;
    // BeeOS commits the deploy and never answers; the operator dies while it waits.
    env.set_sim_faults(
        json!({"dropDeployResponse": {"mode": "timeout", "count": 1, "holdMs": 30000}}),
    )
    .await?;
    env.start_operator(&[])?;
    env.apply(catalog_instance("agent")?).await?;
    env.wait_for_deploy_at_beeos().await?;
    env.kill_operator()?;
    let killed_at = tokio::time::Instant::now();

    env.start_operator(&[])?;
    let ready = env.wait_for("agent", "Ready", is_ready).await?;
    let converged = killed_at.elapsed();
    println!("converged {converged:?} after the kill");

    let table = env.sim_instances().await?;
    assert_eq!(table.len(), 1, "exactly one deploy ever: {table:?}");
    assert_eq!(instance_id(&ready).as_deref(), table[0]["id"].as_str());
    assert_eq!(env.sim_calls("deploy").await?, 1);
    assert!(events_with_reason(&env, reason::ADOPTED).await? >= 1);
    Ok(())
}

#[tokio::test]
async fn reset_deploy_answer_is_found_by_name_without_a_second_deploy() -> Result<()> {
    let mut env = Env::without_operator("crash-reset").await?;
    env.set_sim_faults(json!({"dropDeployResponse": {"mode": "reset", "count": 3}}))
        .await?;
    env.start_operator(&[])?;
    let names: Vec<String> = (0..3).map(|i| format!("agent-{i}")).collect();
    for name in &names {
        env.apply(catalog_instance(name)?).await?;
    }
    for name in &names {
        env.wait_for(name, "Ready", is_ready).await?;
    }
    assert_eq!(
        env.sim_calls("deploy").await?,
        3,
        "every lost answer was adopted"
    );
    assert_exactly_one_instance_each(&env, &names).await
}

#[tokio::test]
async fn operator_killed_at_random_points_in_a_burst_of_50_converges_without_duplicates()
-> Result<()> {
    let mut env = Env::without_operator("crash-burst").await?;
    // Some answers are lost too, and latency widens the windows a kill can land in.
    env.set_sim_faults(json!({
        "latencyMs": 30,
        "dropDeployResponse": {"mode": "reset", "count": 5},
    }))
    .await?;
    let flags = ["--deploy-grace", "3s", "--concurrency", "8"];
    env.start_operator(&flags)?;
    let names: Vec<String> = (0..50).map(|i| format!("burst-{i:02}")).collect();
    for name in &names {
        env.apply(catalog_instance(name)?).await?;
    }
    // Chaos, not synchronisation: kill at pseudo-random moments while the burst is deployed.
    let mut seed = std::process::id() as u64;
    for _ in 0..4 {
        seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        tokio::time::sleep(Duration::from_millis(200 + (seed >> 33) % 800)).await;
        env.kill_operator()?;
        env.start_operator(&flags)?;
    }
    let killed_at = tokio::time::Instant::now();
    for name in &names {
        env.wait_for(name, "Ready", is_ready).await?;
    }
    println!(
        "burst converged {:?} after the last kill; {} deploy calls for {} resources",
        killed_at.elapsed(),
        env.sim_calls("deploy").await?,
        names.len()
    );
    assert_exactly_one_instance_each(&env, &names).await
}

#[tokio::test]
async fn two_operators_at_once_never_deploy_twice() -> Result<()> {
    let mut env = Env::start("crash-two-operators").await?;
    let kubeconfig = env.control_plane.kubeconfig_path();
    let _second = env.spawn_operator(&kubeconfig, &[])?;
    let names: Vec<String> = (0..20).map(|i| format!("twin-{i:02}")).collect();
    for name in &names {
        env.apply(catalog_instance(name)?).await?;
    }
    for name in &names {
        env.wait_for(name, "Ready", is_ready).await?;
    }
    assert_exactly_one_instance_each(&env, &names).await?;
    let table = env.sim_instances().await?;
    assert_eq!(table.len(), names.len(), "no duplicate was ever deployed");
    env.stop_operator();
    Ok(())
}

#[tokio::test]
async fn resource_deleted_while_its_deploy_is_in_flight_leaks_nothing() -> Result<()> {
    let mut env = Env::without_operator("crash-delete-in-flight").await?;
    // The deploy is committed, then its answer is held for 3 s and the connection closed.
    env.set_sim_faults(
        json!({"dropDeployResponse": {"mode": "timeout", "count": 1, "holdMs": 3000}}),
    )
    .await?;
    env.start_operator(&[])?;
    env.apply(catalog_instance("doomed")?).await?;
    env.wait_for_deploy_at_beeos().await?;
    env.api().delete("doomed", &DeleteParams::default()).await?;
    env.wait_gone("doomed").await?;

    let table = env.sim_instances().await?;
    assert_eq!(table.len(), 1, "{table:?}");
    assert_eq!(table[0]["desiredStatus"], "terminated", "{}", table[0]);
    Ok(())
}
