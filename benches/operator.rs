//! End-to-end figures of the operator against the real control plane and the simulator
//! (`make bench`): BeeOS calls and Kubernetes writes per instance from apply to Ready, the time
//! for 100 resources applied at once to be Ready, and what the crash-safety guard costs.
//!
//! Timings depend on the simulator's lifecycle delays (pending 100 ms, provisioning 300 ms) and
//! the operator's intervals, which are printed with the results.

#[path = "../tests/support/mod.rs"]
mod support;

use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use futures::{StreamExt, TryStreamExt};
use kube::api::{WatchEvent, WatchParams};
use serde_json::json;
use support::{Env, catalog_instance, is_ready};

/// The operator's defaults, except a 1 s transition poll (3 s by default).
const OPERATOR_FLAGS: [&str; 4] = ["--transition-poll", "1s", "--steady-poll", "60s"];

const ROUTES: [&str; 7] = [
    "deploy", "get", "list", "start", "stop", "restart", "destroy",
];

/// One resource from apply to Ready: BeeOS calls by route and writes to the resource.
async fn calls_and_writes_for_one() -> Result<()> {
    let mut env = Env::without_operator("bench-one").await?;
    env.start_operator(&OPERATOR_FLAGS)?;
    let mut writes = env
        .api()
        .watch(&WatchParams::default().fields("metadata.name=agent"), "0")
        .await?
        .boxed();
    env.apply(catalog_instance("agent")?).await?;
    let mut count = 0;
    let started = Instant::now();
    while let Some(event) = tokio::time::timeout(support::DEADLINE, writes.try_next()).await?? {
        if let WatchEvent::Added(resource) | WatchEvent::Modified(resource) = event {
            count += 1;
            if is_ready(&resource) {
                break;
            }
        }
    }
    let elapsed = started.elapsed();
    let mut calls = Vec::new();
    for route in ROUTES {
        let n = env.sim_calls(route).await?;
        if n > 0 {
            calls.push(format!("{route} {n}"));
        }
    }
    let events = kube::Api::<k8s_openapi::api::events::v1::Event>::namespaced(
        env.client.clone(),
        &env.namespace,
    )
    .list(&Default::default())
    .await?
    .items
    .len();
    println!(
        "apply to Ready, one instance: {elapsed:.2?}; BeeOS calls: {} (total {}); \
         writes to the resource: {} (apply included) + {events} Events",
        calls.join(", "),
        env.sim_total_calls().await?,
        count
    );
    Ok(())
}

/// 100 resources applied at once; seconds until all are Ready.
async fn hundred_at_once(run: usize) -> Result<f64> {
    let mut env = Env::without_operator(&format!("bench-100-{run}")).await?;
    env.start_operator(&OPERATOR_FLAGS)?;
    let names: Vec<String> = (0..100).map(|i| format!("agent-{i:03}")).collect();
    let started = Instant::now();
    futures::future::try_join_all(
        names
            .iter()
            .map(|n| async { env.apply(catalog_instance(n)?).await }),
    )
    .await?;
    loop {
        let list = env.api().list(&Default::default()).await?;
        let ready = list.items.iter().filter(|r| is_ready(r)).count();
        if ready == names.len() {
            break;
        }
        anyhow::ensure!(
            started.elapsed() < Duration::from_secs(180),
            "only {ready} Ready"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let seconds = started.elapsed().as_secs_f64();
    let deploys = env.sim_calls("deploy").await?;
    let total = env.sim_total_calls().await?;
    println!(
        "run {run}: 100 Ready after {seconds:.2}s; BeeOS calls {total} ({:.1} per instance, {deploys} deploys)",
        total as f64 / 100.0
    );
    Ok(seconds)
}

/// A deploy whose answer is lost while the operator is SIGKILLed: seconds from the restart to
/// Ready, and whether exactly one instance exists.
async fn converge_after_kill(run: usize) -> Result<f64> {
    let mut env = Env::without_operator(&format!("bench-kill-{run}")).await?;
    env.set_sim_faults(
        json!({"dropDeployResponse": {"mode": "timeout", "count": 1, "holdMs": 30000}}),
    )
    .await?;
    env.start_operator(&OPERATOR_FLAGS)?;
    env.apply(catalog_instance("agent")?).await?;
    env.wait_for_deploy_at_beeos().await?;
    env.kill_operator()?;
    let restarted = Instant::now();
    env.start_operator(&OPERATOR_FLAGS)?;
    env.wait_for("agent", "Ready", is_ready).await?;
    let seconds = restarted.elapsed().as_secs_f64();
    let instances = env.sim_instances().await?.len();
    println!("run {run}: Ready {seconds:.2}s after the restart; {instances} instance(s) at BeeOS");
    anyhow::ensure!(instances == 1, "a duplicate was deployed");
    Ok(seconds)
}

/// BeeOS calls per second while `count` instances are steady, with a 5 s steady poll.
async fn steady_calls_per_second(count: usize) -> Result<f64> {
    let mut env = Env::without_operator("bench-steady").await?;
    env.start_operator(&["--transition-poll", "1s", "--steady-poll", "5s"])?;
    let names: Vec<String> = (0..count).map(|i| format!("steady-{i:03}")).collect();
    futures::future::try_join_all(
        names
            .iter()
            .map(|n| async { env.apply(catalog_instance(n)?).await }),
    )
    .await?;
    for name in &names {
        env.wait_for(name, "Ready", is_ready).await?;
    }
    // Let every resource settle into its steady cycle, then count over three cycles.
    tokio::time::sleep(Duration::from_secs(6)).await;
    let before = env.sim_total_calls().await?;
    let window = Duration::from_secs(15);
    tokio::time::sleep(window).await;
    let calls = env.sim_total_calls().await? - before;
    Ok(calls as f64 / window.as_secs_f64())
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<()> {
    println!(
        "simulator: pending 100 ms, provisioning 300 ms; operator: defaults (rate limit 10/s, \
         burst 20, concurrency 16) with {OPERATOR_FLAGS:?}"
    );
    calls_and_writes_for_one().await.context("one instance")?;
    let mut runs = Vec::new();
    for run in 1..=3 {
        runs.push(hundred_at_once(run).await?);
    }
    println!(
        "100 resources applied at once, all Ready: median {:.2}s over 3 runs",
        median(runs)
    );
    let per_second = steady_calls_per_second(200).await?;
    println!(
        "200 steady instances, 5 s steady poll: {per_second:.2} BeeOS calls/s \
         (one GET each would be 40/s)"
    );
    let mut runs = Vec::new();
    for run in 1..=3 {
        runs.push(converge_after_kill(run).await?);
    }
    println!(
        "lost deploy answer + SIGKILL: Ready after the restart in median {:.2}s over 3 runs",
        median(runs)
    );
    Ok(())
}
