//! Ownership without holes, as platform teams run clusters day to day: a paused process, a
//! copied manifest, one name in two namespaces, a namespace deleted, another account's
//! credentials, a lost annotation, Orphan mid-replacement, a transition that never ends. The
//! simulator's instance table is the judge: exactly one alive instance per resource, none alive
//! that no resource owns, none destroyed that a resource owns.

mod support;

use anyhow::{Context, Result, ensure};
use beeos_operator::crd::{CLAIM_ANNOTATION, INSTANCE_ID_ANNOTATION, condition, reason};
use k8s_openapi::api::core::v1::{Namespace, Secret};
use kube::ResourceExt;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use serde_json::{Value, json};
use support::{
    DEADLINE, Env, TEAM_B_TOKEN, assert_exactly_one_instance_each, catalog_instance,
    events_with_reason, has_condition, instance_id, is_ready,
};

fn names(names: &[&str]) -> Vec<String> {
    names.iter().map(|n| (*n).to_owned()).collect()
}

async fn merge(env: &Env, name: &str, patch: Value) -> Result<()> {
    env.api()
        .patch(name, &PatchParams::default(), &Patch::Merge(patch))
        .await?;
    Ok(())
}

fn stalled_with(resource: &beeos_operator::crd::BeeosInstance, why: &str) -> bool {
    support::condition(resource, condition::STALLED)
        .is_some_and(|c| c.status == "True" && c.reason == why)
}

async fn put_secret(env: &Env, namespace: &str, name: &str, data: Value) -> Result<()> {
    let secret: Secret = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Secret",
        "metadata": {"name": name},
        "stringData": data,
    }))?;
    Api::<Secret>::namespaced(env.client.clone(), namespace)
        .patch(
            name,
            &PatchParams::apply("beeos-tests").force(),
            &Patch::Apply(&secret),
        )
        .await?;
    Ok(())
}

async fn wait_for_table(env: &Env, what: &str, check: impl Fn(&[Value]) -> bool) -> Result<()> {
    let started = tokio::time::Instant::now();
    loop {
        let table = env.sim_instances().await?;
        if check(&table) {
            return Ok(());
        }
        ensure!(
            started.elapsed() < DEADLINE,
            "{what} did not happen within {DEADLINE:?}; table: {table:#?}\n--- operator log ---\n{}",
            support::tail(&env.operator_log(), 60)
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}

fn alive(table: &[Value]) -> Vec<&Value> {
    table
        .iter()
        .filter(|i| i["status"] != "terminated" && i["desiredStatus"] != "terminated")
        .collect()
}

/// Point 1: a process that pauses between its mark and its id (SIGSTOP while its deploy is held
/// by BeeOS) must not record over the deploy of the process that took over.
#[tokio::test]
async fn a_process_paused_past_the_grace_cannot_record_over_the_deploy_that_replaced_it()
-> Result<()> {
    let mut env = Env::without_operator("own-stalled").await?;
    // The first deploy is held 10 s before BeeOS commits it; later ones are not.
    env.set_sim_faults(json!({"routes": {"deploy": {"latencyMs": 10000, "count": 1}}}))
        .await?;
    let flags = ["--deploy-grace", "2s", "--beeos-timeout", "120s"];
    env.start_operator(&flags)?;
    env.apply(catalog_instance("agent")?).await?;
    // The paused process's deploy has reached BeeOS (and is held there).
    let started = tokio::time::Instant::now();
    while env.sim_calls("deploy").await? == 0 {
        ensure!(
            started.elapsed() < DEADLINE,
            "the deploy never reached BeeOS"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    env.signal_operator("STOP")?;

    // Another process sees the mark outlive the grace, finds nothing, and deploys.
    let kubeconfig = env.control_plane.kubeconfig_path();
    let second = env.spawn_operator(&kubeconfig, &flags)?;
    env.wait_for("agent", "recorded by the second process", |r| {
        instance_id(r).is_some()
    })
    .await?;
    // The held deploy lands too; only then does the paused process wake up.
    wait_for_table(&env, "the held deploy committed", |table| table.len() == 2).await?;
    env.signal_operator("CONT")?;

    wait_for_table(&env, "one instance left", |table| alive(table).len() == 1).await?;
    let resource = env.wait_for("agent", "Ready", is_ready).await?;
    assert_exactly_one_instance_each(&env, &names(&["agent"])).await?;
    let kept = instance_id(&resource).context("recorded")?;
    let table = env.sim_instances().await?;
    assert!(
        table
            .iter()
            .any(|i| i["id"] != kept.as_str() && i["desiredStatus"] == "terminated"),
        "the superseded deploy was destroyed: {table:#?}"
    );
    assert!(events_with_reason(&env, reason::SUPERSEDED).await? >= 1);
    drop(second);
    Ok(())
}

/// Point 2: a copy of a manifest that carries the instance id owns nothing; deleting it leaves
/// the original's instance alone.
#[tokio::test]
async fn deleting_a_copy_leaves_the_original_instance_running() -> Result<()> {
    let env = Env::start("own-copy").await?;
    env.apply(catalog_instance("original")?).await?;
    let original = env.wait_for("original", "Ready", is_ready).await?;
    let id = instance_id(&original).context("recorded")?;

    // `kubectl get -o yaml`, renamed, applied: every annotation comes along.
    let mut copy = catalog_instance("copy")?;
    copy.metadata.annotations = Some(original.annotations().clone());
    env.apply(copy).await?;
    let stalled = env
        .wait_for("copy", "Stalled InstanceClaimed", |r| {
            stalled_with(r, reason::INSTANCE_CLAIMED)
        })
        .await?;
    let message = support::condition(&stalled, condition::STALLED)
        .map(|c| c.message.clone())
        .unwrap_or_default();
    assert!(message.contains("original"), "{message}");

    env.api().delete("copy", &DeleteParams::default()).await?;
    env.wait_gone("copy").await?;
    assert_eq!(
        env.sim_instance(&id).await?["desiredStatus"],
        "running",
        "the original's instance lives"
    );
    assert!(is_ready(&env.api().get("original").await?));
    assert_exactly_one_instance_each(&env, &names(&["original"])).await?;
    assert_eq!(env.sim_calls("destroy").await?, 0);
    Ok(())
}

/// Point 2: the resource that recorded an id first owns it, not the older one.
#[tokio::test]
async fn an_older_resource_pointed_at_a_newer_ones_instance_does_not_take_it() -> Result<()> {
    let env = Env::start("own-repoint").await?;
    // Named so that the older one also sorts first: the order an operator without claims used
    // to break ties of equal creation seconds by.
    env.apply(catalog_instance("a-older")?).await?;
    env.wait_for("a-older", "Ready", is_ready).await?;
    env.apply(catalog_instance("b-newer")?).await?;
    let newer = env.wait_for("b-newer", "Ready", is_ready).await?;
    let newer_id = instance_id(&newer).context("recorded")?;

    merge(
        &env,
        "a-older",
        json!({"metadata": {"annotations": {INSTANCE_ID_ANNOTATION: newer_id}}}),
    )
    .await?;
    env.wait_for("a-older", "Stalled InstanceClaimed", |r| {
        stalled_with(r, reason::INSTANCE_CLAIMED)
    })
    .await?;
    let newer = env.api().get("b-newer").await?;
    assert!(is_ready(&newer), "the newer one keeps its instance");
    assert!(!has_condition(&newer, condition::STALLED, "True"));
    assert_eq!(
        env.sim_instance(&newer_id).await?["desiredStatus"],
        "running"
    );
    Ok(())
}

/// Point 3: one name in two namespaces, both deploys' answers lost: each resource finds its own
/// instance, never the other namespace's (which carries that namespace's secrets).
#[tokio::test]
async fn the_same_name_in_two_namespaces_never_adopts_the_other_namespaces_instance() -> Result<()>
{
    let mut env = Env::without_operator("own-ns-a").await?;
    let other = env.control_plane.namespace("own-ns-b").await?;
    let both = format!("{},{other}", env.namespace);
    env.set_sim_faults(json!({"dropDeployResponse": {"mode": "reset", "count": 2}}))
        .await?;
    for (namespace, value) in [
        (env.namespace.clone(), "sk-team-a"),
        (other.clone(), "sk-team-b"),
    ] {
        put_secret(&env, &namespace, "provider-keys", json!({"openai": value})).await?;
        let agent: beeos_operator::crd::BeeosInstance = serde_json::from_value(json!({
            "apiVersion": "beeos.ai/v1alpha1", "kind": "BeeosInstance",
            "metadata": {"name": "agent", "namespace": namespace},
            "spec": {
                "agentFramework": "beeos-claw",
                "secretInjections": [{"path": "providerConfig.apiKeys.openai",
                                      "secretKeyRef": {"name": "provider-keys", "key": "openai"}}],
            },
        }))?;
        let api: Api<beeos_operator::crd::BeeosInstance> =
            Api::namespaced(env.client.clone(), &namespace);
        api.create(&PostParams::default(), &agent).await?;
    }
    env.start_operator(&["--namespaces", &both])?;

    let mut ids = Vec::new();
    for (namespace, value) in [
        (env.namespace.clone(), "sk-team-a"),
        (other.clone(), "sk-team-b"),
    ] {
        let api: Api<beeos_operator::crd::BeeosInstance> =
            Api::namespaced(env.client.clone(), &namespace);
        let started = tokio::time::Instant::now();
        let id = loop {
            let resource = api.get("agent").await?;
            if is_ready(&resource) {
                break instance_id(&resource).context("recorded")?;
            }
            ensure!(
                started.elapsed() < DEADLINE,
                "{namespace}/agent not Ready: {:?}\n{}",
                resource.status,
                support::tail(&env.operator_log(), 40)
            );
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        };
        let instance = env.sim_instance(&id).await?;
        assert_eq!(
            instance["deployRequest"]["providerConfig"]["apiKeys"]["openai"], value,
            "{namespace}/agent adopted its own instance"
        );
        ids.push(id);
    }
    assert_ne!(ids[0], ids[1]);
    let table = env.sim_instances().await?;
    assert_eq!(
        table.len(),
        2,
        "each lost deploy adopted, none repeated: {table:#?}"
    );
    assert_ne!(
        table[0]["name"], table[1]["name"],
        "names are unique per resource"
    );
    Ok(())
}

/// Point 4: deleting a namespace destroys its instances and lets the namespace finish, although
/// the namespace controller deletes the credentials Secret at the same time.
#[tokio::test]
async fn deleting_a_namespace_destroys_its_instances_and_the_namespace_finishes() -> Result<()> {
    let env = Env::start("own-ns-delete").await?;
    put_secret(
        &env,
        &env.namespace,
        "beeos-team",
        json!({"token": TEAM_B_TOKEN}),
    )
    .await?;
    let mut agent = catalog_instance("agent")?;
    agent.data["spec"]["credentials"] = json!({"name": "beeos-team"});
    env.apply(agent).await?;
    let id = instance_id(&env.wait_for("agent", "Ready", is_ready).await?).context("id")?;

    let namespaces: Api<Namespace> = Api::all(env.client.clone());
    namespaces
        .delete(&env.namespace, &DeleteParams::default())
        .await?;
    let started = tokio::time::Instant::now();
    while namespaces.get_opt(&env.namespace).await?.is_some() {
        ensure!(
            started.elapsed() < DEADLINE * 2,
            "namespace {} still exists\n{}",
            env.namespace,
            support::tail(&env.operator_log(), 40)
        );
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    let instance = env.sim_instance(&id).await?;
    assert_eq!(instance["desiredStatus"], "terminated", "{instance}");
    Ok(())
}

/// Point 5: another account's instance is not gone — switching to its credentials stalls, and
/// a deletion waits until the credentials are right instead of leaking the instance.
#[tokio::test]
async fn credentials_of_another_account_stall_and_never_count_the_instance_as_gone() -> Result<()> {
    let env = Env::start("own-forbidden").await?;
    put_secret(
        &env,
        &env.namespace,
        "team-b",
        json!({"token": TEAM_B_TOKEN}),
    )
    .await?;
    env.apply(catalog_instance("agent")?).await?;
    let id = instance_id(&env.wait_for("agent", "Ready", is_ready).await?).context("id")?;

    merge(
        &env,
        "agent",
        json!({"spec": {"credentials": {"name": "team-b"}}}),
    )
    .await?;
    env.wait_for("agent", "Stalled InstanceForbidden", |r| {
        stalled_with(r, reason::INSTANCE_FORBIDDEN)
    })
    .await?;
    env.api().delete("agent", &DeleteParams::default()).await?;
    let held = env
        .wait_for("agent", "deleting and still Stalled", |r| {
            r.metadata.deletion_timestamp.is_some() && stalled_with(r, reason::INSTANCE_FORBIDDEN)
        })
        .await?;
    assert!(held.finalizers().contains(&"beeos.ai/cleanup".to_owned()));
    assert_eq!(env.sim_instance(&id).await?["desiredStatus"], "running");

    // The right credentials again: the deletion completes and the instance goes.
    merge(&env, "agent", json!({"spec": {"credentials": null}})).await?;
    env.wait_gone("agent").await?;
    assert_eq!(env.sim_instance(&id).await?["desiredStatus"], "terminated");
    Ok(())
}

/// Point 6: a lost id annotation is written back from the records that still name the live
/// instance (the claim; else the status), never replaced by a second deploy.
#[tokio::test]
async fn a_lost_id_annotation_is_restored_not_deployed_again() -> Result<()> {
    let env = Env::start("own-lost-id").await?;
    for name in ["claimed", "status-only"] {
        env.apply(catalog_instance(name)?).await?;
    }
    let mut ids = Vec::new();
    for name in ["claimed", "status-only"] {
        ids.push(instance_id(&env.wait_for(name, "Ready", is_ready).await?).context("id")?);
    }
    // A tool that rewrites metadata drops the annotation; the other also loses the claim.
    merge(
        &env,
        "claimed",
        json!({"metadata": {"annotations": {INSTANCE_ID_ANNOTATION: null}}}),
    )
    .await?;
    merge(
        &env,
        "status-only",
        json!({"metadata": {"annotations": {INSTANCE_ID_ANNOTATION: null, CLAIM_ANNOTATION: null}}}),
    )
    .await?;
    for (name, id) in ["claimed", "status-only"].iter().zip(&ids) {
        let restored = env
            .wait_for(name, "its id restored", |r| instance_id(r).is_some())
            .await?;
        assert_eq!(instance_id(&restored).as_ref(), Some(id));
    }
    assert_eq!(env.sim_calls("deploy").await?, 2, "no second deploy");
    assert_exactly_one_instance_each(&env, &names(&["claimed", "status-only"])).await?;
    assert!(events_with_reason(&env, reason::RESTORED).await? >= 2);
    Ok(())
}

/// Point 7: Orphan keeps the user's current instance only; the operator's replacement goes.
#[tokio::test]
async fn orphan_mid_replacement_keeps_the_current_instance_and_destroys_the_replacement()
-> Result<()> {
    let env = Env::start("own-orphan").await?;
    env.apply(catalog_instance("agent")?).await?;
    let current = instance_id(&env.wait_for("agent", "Ready", is_ready).await?).context("id")?;
    // The replacement takes 20 s to get ready; the resource is paused as soon as it exists, so
    // it is deleted mid-replacement whatever the machine's load.
    env.set_sim_settings(json!({"provisioningMs": 20000}))
        .await?;
    merge(&env, "agent", json!({"spec": {"modelPrimary": "gpt-4o"}})).await?;
    let replacing = env
        .wait_for("agent", "replacing", |r| {
            r.annotations().contains_key("beeos.ai/replacement-id")
        })
        .await?;
    let replacement = replacing
        .annotations()
        .get("beeos.ai/replacement-id")
        .cloned()
        .unwrap_or_default();
    let pause =
        |value: Option<&str>| json!({"metadata": {"annotations": {"beeos.ai/paused": value}}});
    merge(&env, "agent", pause(Some("true"))).await?;
    merge(&env, "agent", json!({"spec": {"deletionPolicy": "Orphan"}})).await?;
    env.api().delete("agent", &DeleteParams::default()).await?;
    let held = env.api().get("agent").await?;
    assert_eq!(
        held.annotations().get("beeos.ai/replacement-id"),
        Some(&replacement),
        "deleted while the replacement was still pending"
    );
    merge(&env, "agent", pause(None)).await?;
    env.wait_gone("agent").await?;

    assert_eq!(
        env.sim_instance(&current).await?["desiredStatus"],
        "running"
    );
    assert_eq!(
        env.sim_instance(&replacement).await?["desiredStatus"],
        "terminated",
        "the operator's own spare is destroyed"
    );
    Ok(())
}

/// Point 8: an instance that never leaves its transition is not polled every few seconds
/// forever: after `--transition-timeout` its resource stalls with a reason that says so, once,
/// and the instance is left as it is (it is still the resource's own).
#[tokio::test]
async fn an_instance_stuck_provisioning_stalls_after_the_transition_timeout() -> Result<()> {
    let mut env = Env::without_operator("own-stuck").await?;
    // Provisioning outlasts any test deadline.
    env.set_sim_settings(json!({"provisioningMs": 3_600_000}))
        .await?;
    env.start_operator(&["--transition-timeout", "4s", "--transition-poll", "1s"])?;
    env.apply(catalog_instance("stuck")?).await?;
    let stalled = env
        .wait_for("stuck", "Stalled (TransitionTimeout)", |r| {
            stalled_with(r, reason::TRANSITION_TIMEOUT)
        })
        .await?;
    let id = instance_id(&stalled).context("the stuck instance is still recorded")?;
    assert!(has_condition(&stalled, condition::READY, "False"));
    assert_eq!(env.sim_calls("deploy").await?, 1, "stuck is not redeployed");
    assert_eq!(env.sim_instance(&id).await?["status"], "provisioning");
    assert_eq!(
        events_with_reason(&env, reason::TRANSITION_TIMEOUT).await?,
        1,
        "warned once"
    );
    assert_exactly_one_instance_each(&env, &names(&["stuck"])).await
}
