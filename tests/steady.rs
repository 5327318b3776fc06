//! Idle when nothing changes, every change seen within one listing — the scale design's guard,
//! on counts, with a few hundred resources (some with credentials Secrets, some publishing a
//! connection ConfigMap): across several listings of a steady fleet the operator reconciles
//! nothing, reads no Secret or ConfigMap and writes nothing; an instance stopped behind its back
//! shows in status after at most one further listing.

mod support;

use std::collections::BTreeMap;

use anyhow::{Context, Result, ensure};
use beeos_operator::crd::BeeosInstance;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, Patch, PatchParams};
use serde_json::json;
use support::{DEADLINE, Env, TEAM_A_TOKEN, catalog_instance, instance_id, is_ready};

const RESOURCES: usize = 200;

/// `apiserver_request_total` summed by "VERB resource[/subresource]".
async fn api_requests(env: &Env) -> Result<BTreeMap<String, u64>> {
    let text = env
        .client
        .request_text(http::Request::get("/metrics").body(Vec::new())?)
        .await?;
    let mut requests = BTreeMap::new();
    for line in text
        .lines()
        .filter(|l| l.starts_with("apiserver_request_total{"))
    {
        let label = |name: &str| {
            line.split(&format!("{name}=\""))
                .nth(1)
                .and_then(|rest| rest.split('"').next())
                .unwrap_or_default()
                .to_owned()
        };
        let value: f64 = line.rsplit(' ').next().unwrap_or("0").parse()?;
        let subresource = label("subresource");
        let target = if subresource.is_empty() {
            label("resource")
        } else {
            format!("{}/{subresource}", label("resource"))
        };
        *requests
            .entry(format!("{} {target}", label("verb")))
            .or_insert(0) += value as u64;
    }
    Ok(requests)
}

fn delta(after: &BTreeMap<String, u64>, before: &BTreeMap<String, u64>, key: &str) -> u64 {
    after.get(key).copied().unwrap_or(0) - before.get(key).copied().unwrap_or(0)
}

async fn reconciles(env: &Env, probe: &str) -> Result<u64> {
    let text = env
        .http
        .get(format!("{probe}/metrics"))
        .send()
        .await?
        .text()
        .await?;
    let value = text
        .lines()
        .find(|l| l.starts_with("beeos_operator_reconciles_total"))
        .and_then(|l| l.rsplit(' ').next())
        .context("the reconcile counter")?;
    Ok(value.parse::<f64>()? as u64)
}

/// Waits until the simulator has answered `listings` more list calls than `from`.
async fn wait_for_listings(env: &Env, from: u64, listings: u64) -> Result<u64> {
    let started = tokio::time::Instant::now();
    loop {
        let lists = env.sim_calls("list").await?;
        if lists >= from + listings {
            return Ok(lists);
        }
        ensure!(started.elapsed() < DEADLINE, "the operator stopped listing");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn a_steady_fleet_costs_no_reconcile_no_secret_read_and_a_change_shows_within_one_listing()
-> Result<()> {
    let mut env = Env::without_operator("steady").await?;
    let secret: Secret = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Secret", "metadata": {"name": "beeos-token"},
        "stringData": {"token": TEAM_A_TOKEN},
    }))?;
    Api::<Secret>::namespaced(env.client.clone(), &env.namespace)
        .patch(
            "beeos-token",
            &PatchParams::apply("beeos-tests").force(),
            &Patch::Apply(&secret),
        )
        .await?;
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let probe = format!("http://127.0.0.1:{port}");
    env.start_operator(&[
        "--steady-poll",
        "2s",
        "--probe-address",
        &format!("127.0.0.1:{port}"),
    ])?;
    let names: Vec<String> = (0..RESOURCES).map(|i| format!("agent-{i:03}")).collect();
    for (i, name) in names.iter().enumerate() {
        let mut resource = catalog_instance(name)?;
        if i % 10 == 0 {
            resource.data["spec"]["credentials"] = json!({"name": "beeos-token"});
        }
        if i % 10 == 5 {
            resource.data["spec"]["writeConnectionConfigMapToRef"] =
                json!({"name": format!("{name}-connection")});
        }
        env.apply(resource).await?;
    }
    let api: Api<BeeosInstance> = env.api();
    let started = tokio::time::Instant::now();
    loop {
        let listed = api.list(&Default::default()).await?;
        if listed.items.iter().filter(|r| is_ready(r)).count() == RESOURCES {
            break;
        }
        ensure!(
            started.elapsed() < DEADLINE * 3,
            "not every resource got Ready"
        );
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    }
    // Two listings for the last transitions to be seen and written.
    let lists = env.sim_calls("list").await?;
    wait_for_listings(&env, lists, 2).await?;

    // The steady window: three complete listings (one page each at 200 resources).
    let reconciles_before = reconciles(&env, &probe).await?;
    let requests_before = api_requests(&env).await?;
    let calls_before = env.sim_total_calls().await?;
    let lists = env.sim_calls("list").await?;
    let lists_after = wait_for_listings(&env, lists, 3).await?;
    let reconciled = reconciles(&env, &probe).await? - reconciles_before;
    let requests_after = api_requests(&env).await?;
    let calls = env.sim_total_calls().await? - calls_before;
    assert_eq!(reconciled, 0, "an unchanged resource was reconciled");
    assert_eq!(
        delta(&requests_after, &requests_before, "GET secrets"),
        0,
        "a Secret was read"
    );
    for write in [
        "PATCH beeosinstances",
        "APPLY beeosinstances/status",
        "POST events",
        "APPLY configmaps",
        "PATCH configmaps",
        "GET configmaps",
    ] {
        assert_eq!(
            delta(&requests_after, &requests_before, write),
            0,
            "{write} while steady"
        );
    }
    assert!(
        calls <= lists_after - lists + 1,
        "only listings while steady: {calls} calls for {} listings",
        lists_after - lists
    );

    // An instance stopped behind the operator's back: seen by the next listing.
    let victim = api.get(&names[7]).await?;
    let id = instance_id(&victim).context("recorded")?;
    let lists_at_stop = env.sim_calls("list").await?;
    env.http
        .post(format!("{}/_sim/instances/{id}/stop", env.sim.base_url()))
        .send()
        .await?
        .error_for_status()?;
    env.wait_for(&names[7], "showing the stop", |r| {
        r.status
            .as_ref()
            .and_then(|s| s.instance.as_ref())
            .and_then(|i| i.status.as_deref())
            != Some("running")
    })
    .await?;
    let listings_needed = env.sim_calls("list").await? - lists_at_stop;
    // One listing may have been under way when the instance stopped; the next one shows it.
    assert!(
        listings_needed <= 2,
        "{listings_needed} listings before the stop showed"
    );
    Ok(())
}

/// Several tokens of one BeeOS owner are one account: one listing serves them all.
#[tokio::test]
async fn tokens_of_one_owner_share_one_listing() -> Result<()> {
    let mut env = Env::without_operator("steady-one-owner").await?;
    let secret: Secret = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Secret", "metadata": {"name": "second-key"},
        "stringData": {"token": support::TEAM_A_SECOND_TOKEN},
    }))?;
    Api::<Secret>::namespaced(env.client.clone(), &env.namespace)
        .patch(
            "second-key",
            &PatchParams::apply("beeos-tests").force(),
            &Patch::Apply(&secret),
        )
        .await?;
    env.start_operator(&["--steady-poll", "1s"])?;
    let mut second = catalog_instance("second")?;
    second.data["spec"]["credentials"] = json!({"name": "second-key"});
    env.apply(catalog_instance("first")?).await?;
    env.apply(second).await?;
    env.wait_for("first", "Ready", is_ready).await?;
    env.wait_for("second", "Ready", is_ready).await?;

    // Over the next six listings, one key does the listing; the other lists at most once
    // (a listing under way when the two accounts merged).
    let keys = [TEAM_A_TOKEN, support::TEAM_A_SECOND_TOKEN];
    let mut before = Vec::new();
    for key in keys {
        before.push(env.sim_calls_with(key, "list").await?);
    }
    let lists = env.sim_calls("list").await?;
    wait_for_listings(&env, lists, 6).await?;
    let mut grew = Vec::new();
    for (key, before) in keys.iter().zip(&before) {
        grew.push(env.sim_calls_with(key, "list").await? - before);
    }
    ensure!(
        grew.iter().min().copied().unwrap_or(0) <= 1,
        "both keys kept listing the same fleet: {grew:?} lists each"
    );
    Ok(())
}
