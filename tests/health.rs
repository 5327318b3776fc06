//! What Argo CD, kstatus and Flux show for a BeeosInstance, state by state, on live objects.
//!
//! Each state is driven with the real operator, control plane and simulator; the live object is
//! then judged by `tools/health-check` (Argo CD's Lua VM running `health.lua`, kstatus, and Flux's
//! CEL status reader with the README's healthCheckExprs) against the table in
//! `tools/health-check/verdicts.yaml`, and its conditions against the operator's contract.
//! A test reports every difference it finds at once. With `BEEOS_CAPTURE_TESTDATA=1` each object
//! is also written, normalised, to Argo CD's `testdata/`, which `go test` in
//! `tools/health-check` judges offline.

mod support;

use std::path::PathBuf;
use std::process::{Command, Stdio};

use anyhow::{Context, Result, ensure};
use beeos_operator::beeos::{BeeosClient, ClientOptions, Credential, DeployRequest};
use beeos_operator::crd::{
    BeeosInstance, INSTANCE_ID_ANNOTATION, PAUSED_ANNOTATION, condition, reason,
};
use k8s_openapi::api::core::v1::Secret;
use kube::Resource;
use kube::api::{Api, ApiResource, DeleteParams, DynamicObject, Patch, PatchParams, PostParams};
use serde::Deserialize;
use serde_json::{Value, json};
use support::{Env, TEAM_A_TOKEN, TEAM_B_TOKEN, has_condition, instance_id, is_ready, repo_path};

const HEALTH_DIR: &str = "argocd/resource_customizations/beeos.ai/BeeosInstance";

/// One row of `verdicts.yaml`.
#[derive(Debug, Deserialize)]
struct Expected {
    state: String,
    file: String,
    argocd: String,
    kstatus: String,
    flux: String,
}

fn expected(state: &str) -> Result<Expected> {
    #[derive(Deserialize)]
    struct Table {
        states: Vec<Expected>,
    }
    let text = std::fs::read_to_string(repo_path("tools/health-check/verdicts.yaml"))?;
    let table: Table = serde_yaml_ng::from_str(&text)?;
    table
        .states
        .into_iter()
        .find(|row| row.state == state)
        .with_context(|| format!("verdicts.yaml has no state {state}"))
}

/// What `health-check verdict` prints.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Verdicts {
    argocd: Verdict,
    argocd_built_in: Verdict,
    kstatus: Verdict,
    flux: Verdict,
}

#[derive(Debug, Deserialize)]
struct Verdict {
    status: String,
    #[serde(default)]
    message: String,
}

/// The `health-check` binary that `make health-check` builds (the Makefile passes it as
/// `HEALTH_CHECK`).
fn health_check_binary() -> Result<PathBuf> {
    let binary = std::env::var_os("HEALTH_CHECK")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo_path(".tools/bin/health-check"));
    ensure!(
        binary.is_file(),
        "{} is missing: run `make health-check` (or set HEALTH_CHECK)",
        binary.display()
    );
    Ok(binary)
}

/// Runs `health-check args` with `input` on stdin, off this runtime (which serves the simulator).
async fn health_check(args: Vec<String>, input: Vec<u8>) -> Result<String> {
    let binary = health_check_binary()?;
    tokio::task::spawn_blocking(move || {
        let mut child = Command::new(&binary)
            .args(&args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .with_context(|| format!("running {}", binary.display()))?;
        std::io::Write::write_all(&mut child.stdin.take().context("stdin")?, &input)?;
        let output = child.wait_with_output()?;
        ensure!(
            output.status.success(),
            "health-check {} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&output.stderr)
        );
        Ok(String::from_utf8(output.stdout)?)
    })
    .await?
}

/// Every difference between what a state should look like and what it does, across states.
#[derive(Default)]
struct Findings(Vec<String>);

impl Findings {
    /// Judges the live `name` as `state`: its verdicts against `verdicts.yaml`, its conditions
    /// against `contract`; and captures it when asked to.
    async fn judge(&mut self, env: &Env, state: &str, name: &str, contract: &[Rule]) -> Result<()> {
        let expected = expected(state)?;
        let api: Api<DynamicObject> = Api::namespaced_with(
            env.client.clone(),
            &env.namespace,
            &ApiResource::erase::<BeeosInstance>(&()),
        );
        let live = serde_json::to_vec(&api.get(name).await?)?;
        let typed: BeeosInstance = serde_json::from_slice(&live)?;

        let repo = repo_path(".").display().to_string();
        let verdicts: Verdicts = serde_json::from_str(
            &health_check(vec!["verdict".into(), "--repo".into(), repo], live.clone()).await?,
        )?;
        for (tool, verdict, want) in [
            ("Argo CD", &verdicts.argocd, &expected.argocd),
            (
                "Argo CD (built in)",
                &verdicts.argocd_built_in,
                &expected.argocd,
            ),
            ("kstatus", &verdicts.kstatus, &expected.kstatus),
            ("Flux healthCheckExprs", &verdicts.flux, &expected.flux),
        ] {
            if &verdict.status != want {
                self.0.push(format!(
                    "{state}: {tool} says {} ({}), expected {want}",
                    verdict.status, verdict.message
                ));
            }
        }
        for rule in contract {
            if let Some(difference) = rule.check(&typed) {
                self.0.push(format!("{state}: {difference}"));
            }
        }

        if std::env::var_os("BEEOS_CAPTURE_TESTDATA").is_some() {
            let normalised = health_check(
                vec![
                    "normalise".into(),
                    "--namespace".into(),
                    env.namespace.clone(),
                ],
                live,
            )
            .await?;
            std::fs::write(
                repo_path(&format!("{HEALTH_DIR}/testdata/{}", expected.file)),
                normalised,
            )?;
        }
        Ok(())
    }

    fn assert_none(self) {
        assert!(
            self.0.is_empty(),
            "{} difference(s):\n{}",
            self.0.len(),
            self.0.join("\n")
        );
    }
}

/// One thing the contract says about a state's conditions.
enum Rule {
    /// A condition's status and, unless empty, its reason (one of).
    Condition(&'static str, &'static str, &'static [&'static str]),
    /// Every condition and `status.observedGeneration` describe the current generation.
    Observed,
    /// `Reconciling=True` with the `Ready` condition's reason and message.
    ReconcilingLikeReady,
    /// `Ready` carries the `Stalled` condition's reason, and the message says something.
    ReadyLikeStalled,
    /// `metadata.deletionTimestamp` is set.
    Deleting,
}

impl Rule {
    fn check(&self, resource: &BeeosInstance) -> Option<String> {
        let find = |type_: &str| support::condition(resource, type_);
        match self {
            Rule::Condition(type_, status, reasons) => match find(type_) {
                Some(c)
                    if c.status == *status
                        && (reasons.is_empty() || reasons.contains(&c.reason.as_str())) =>
                {
                    None
                }
                Some(c) => Some(format!(
                    "{type_} is {} ({}: {}), the contract says {status}{}",
                    c.status,
                    c.reason,
                    c.message,
                    if reasons.is_empty() {
                        String::new()
                    } else {
                        format!(" ({})", reasons.join(" or "))
                    }
                )),
                None => Some(format!("there is no {type_} condition")),
            },
            Rule::Observed => {
                let generation = resource.meta().generation;
                let Some(status) = resource.status.as_ref() else {
                    return Some("there is no status".into());
                };
                let stale: Vec<&str> = status
                    .conditions
                    .iter()
                    .filter(|c| c.observed_generation != generation)
                    .map(|c| c.type_.as_str())
                    .collect();
                (status.observed_generation != generation || !stale.is_empty()).then(|| {
                    format!(
                        "generation {generation:?} is not observed (status {:?}, stale conditions {stale:?})",
                        status.observed_generation
                    )
                })
            }
            Rule::ReconcilingLikeReady => {
                let (Some(ready), Some(reconciling)) =
                    (find(condition::READY), find(condition::RECONCILING))
                else {
                    return Some("Ready or Reconciling is missing".into());
                };
                (reconciling.status != "True"
                    || reconciling.reason != ready.reason
                    || reconciling.message != ready.message)
                    .then(|| {
                        format!(
                            "Reconciling is {} ({}) while Ready is False ({}): the contract says True with Ready's reason and message",
                            reconciling.status, reconciling.reason, ready.reason
                        )
                    })
            }
            Rule::ReadyLikeStalled => {
                let (Some(ready), Some(stalled)) =
                    (find(condition::READY), find(condition::STALLED))
                else {
                    return Some("Ready or Stalled is missing".into());
                };
                if stalled.message.is_empty() {
                    return Some("Stalled has no message".into());
                }
                (ready.status != "False" || ready.reason != stalled.reason).then(|| {
                    format!(
                        "Ready is {} ({}) while Stalled is {}: the contract says False with Stalled's reason",
                        ready.status, ready.reason, stalled.reason
                    )
                })
            }
            Rule::Deleting => resource
                .meta()
                .deletion_timestamp
                .is_none()
                .then(|| "metadata.deletionTimestamp is not set".to_owned()),
        }
    }
}

/// The instance works towards the spec: `Ready=False` for one of `reasons`, `Reconciling=True`
/// alike, nothing stalled.
fn working(reasons: &'static [&'static str]) -> Vec<Rule> {
    vec![
        Rule::Observed,
        Rule::Condition(condition::READY, "False", reasons),
        Rule::ReconcilingLikeReady,
        Rule::Condition(condition::STALLED, "False", &[]),
    ]
}

/// Settled as asked.
fn settled(ready_reason: &'static [&'static str]) -> Vec<Rule> {
    vec![
        Rule::Observed,
        Rule::Condition(condition::READY, "True", ready_reason),
        Rule::Condition(condition::RECONCILING, "False", &[]),
        Rule::Condition(condition::STALLED, "False", &[]),
    ]
}

/// A person must act, for `reason`.
fn stalled(reasons: &'static [&'static str]) -> Vec<Rule> {
    vec![
        Rule::Observed,
        Rule::Condition(condition::STALLED, "True", reasons),
        Rule::ReadyLikeStalled,
        Rule::Condition(condition::RECONCILING, "False", &[]),
    ]
}

fn paused() -> Vec<Rule> {
    vec![
        Rule::Observed,
        Rule::Condition(condition::READY, "False", &[reason::PAUSED]),
        Rule::Condition(condition::RECONCILING, "False", &[]),
        Rule::Condition(condition::STALLED, "True", &[reason::PAUSED]),
        Rule::Condition(condition::SYNCED, "False", &[reason::PAUSED]),
    ]
}

fn instance(name: &str, spec: Value, annotations: Value) -> Result<DynamicObject> {
    Ok(serde_json::from_value(json!({
        "apiVersion": "beeos.ai/v1alpha1", "kind": "BeeosInstance",
        "metadata": {"name": name, "annotations": annotations},
        "spec": spec,
    }))?)
}

fn catalog() -> Value {
    json!({"variantId": "beeos-claw-small"})
}

async fn create_secret(env: &Env, name: &str, data: Value) -> Result<()> {
    let secret: Secret = serde_json::from_value(json!({
        "metadata": {"name": name}, "stringData": data,
    }))?;
    Api::<Secret>::namespaced(env.client.clone(), &env.namespace)
        .create(&PostParams::default(), &secret)
        .await?;
    Ok(())
}

async fn patch(env: &Env, name: &str, patch: Value) -> Result<()> {
    env.api()
        .patch(name, &PatchParams::default(), &Patch::Merge(&patch))
        .await?;
    Ok(())
}

fn ready_reason(resource: &BeeosInstance) -> &str {
    support::condition(resource, condition::READY).map_or("", |c| c.reason.as_str())
}

#[tokio::test]
async fn settled_and_stalled_states_read_as_healthy_or_degraded_everywhere() -> Result<()> {
    let mut env = Env::start("health-settled").await?;
    let mut findings = Findings::default();

    // Another BeeOS owner's instance, made outside Kubernetes.
    let foreign = BeeosClient::new(
        &env.sim.base_url(),
        Credential::new(TEAM_B_TOKEN)?,
        ClientOptions::default(),
    )?
    .deploy(&DeployRequest {
        name: "team-b-agent".into(),
        variant_id: Some("beeos-claw-small".into()),
        ..DeployRequest::default()
    })
    .await?
    .instance_id;
    create_secret(&env, "wrong-key", json!({"other": TEAM_A_TOKEN})).await?;
    // Well formed, but not a token BeeOS knows.
    let unknown_token = format!("oag_{}", "f".repeat(64));
    create_secret(&env, "rejected-token", json!({"token": unknown_token})).await?;

    let none = json!({});
    for (name, spec, annotations) in [
        ("ready", catalog(), none.clone()),
        (
            "stopped",
            json!({"variantId": "beeos-claw-small", "powerState": "Stopped"}),
            none.clone(),
        ),
        (
            "drifted",
            json!({"variantId": "beeos-claw-small", "updateStrategy": "OnDelete"}),
            none.clone(),
        ),
        ("paused", catalog(), none.clone()),
        (
            "paused-early",
            catalog(),
            json!({PAUSED_ANNOTATION: "true"}),
        ),
        (
            "no-secret",
            json!({"variantId": "beeos-claw-small", "credentials": {"name": "missing-token"}}),
            none.clone(),
        ),
        (
            "no-key",
            json!({"variantId": "beeos-claw-small", "credentials": {"name": "wrong-key"}}),
            none.clone(),
        ),
        (
            "bad-token",
            json!({"variantId": "beeos-claw-small", "credentials": {"name": "rejected-token"}}),
            none.clone(),
        ),
        (
            "no-injected",
            json!({"variantId": "beeos-claw-small", "secretInjections": [
                {"path": "providerConfig.apiKeys.openai", "secretKeyRef": {"name": "provider-keys", "key": "openai"}},
            ]}),
            none.clone(),
        ),
        (
            "rejected",
            json!({"variantId": "no-such-variant"}),
            none.clone(),
        ),
        (
            "unknown-id",
            catalog(),
            json!({INSTANCE_ID_ANNOTATION: "inst_00000000deadbeef"}),
        ),
        (
            "foreign-id",
            catalog(),
            json!({INSTANCE_ID_ANNOTATION: foreign}),
        ),
    ] {
        env.apply(instance(name, spec, annotations)?).await?;
    }

    let ready = env.wait_for("ready", "Ready", is_ready).await?;
    findings
        .judge(&env, "ready", "ready", &settled(&[reason::RUNNING]))
        .await?;
    let id = instance_id(&ready).context("a Ready resource records its instance")?;
    env.apply(instance(
        "copycat",
        catalog(),
        json!({INSTANCE_ID_ANNOTATION: id}),
    )?)
    .await?;

    env.wait_for("stopped", "Ready", is_ready).await?;
    findings
        .judge(&env, "stopped", "stopped", &settled(&[reason::STOPPED]))
        .await?;

    env.wait_for("drifted", "Ready", is_ready).await?;
    patch(
        &env,
        "drifted",
        json!({"spec": {"systemPrompt": "A new prompt."}}),
    )
    .await?;
    env.wait_for("drifted", "reporting drift", |r| {
        is_ready(r)
            && support::condition(r, condition::SYNCED)
                .is_some_and(|c| c.reason == reason::SPEC_DRIFT)
    })
    .await?;
    let mut drift = settled(&[reason::RUNNING]);
    drift.push(Rule::Condition(
        condition::SYNCED,
        "False",
        &[reason::SPEC_DRIFT],
    ));
    findings
        .judge(&env, "spec-drift", "drifted", &drift)
        .await?;

    env.wait_for("paused", "Ready", is_ready).await?;
    patch(
        &env,
        "paused",
        json!({"metadata": {"annotations": {PAUSED_ANNOTATION: "true"}}}),
    )
    .await?;
    let paused_seen = |r: &BeeosInstance| {
        support::condition(r, condition::SYNCED).is_some_and(|c| c.reason == reason::PAUSED)
    };
    env.wait_for("paused", "paused", paused_seen).await?;
    findings.judge(&env, "paused", "paused", &paused()).await?;
    env.wait_for("paused-early", "paused", paused_seen).await?;
    findings
        .judge(&env, "paused-before-deploy", "paused-early", &paused())
        .await?;

    for (state, name, reasons) in [
        (
            "stalled-credentials-secret-missing",
            "no-secret",
            &[reason::CREDENTIALS_UNAVAILABLE][..],
        ),
        (
            "stalled-credentials-key-missing",
            "no-key",
            &[reason::CREDENTIALS_UNAVAILABLE],
        ),
        (
            "stalled-token-rejected",
            "bad-token",
            &["BeeosUnauthorized"],
        ),
        (
            "stalled-injected-secret-missing",
            "no-injected",
            &[reason::SECRET_UNAVAILABLE],
        ),
        (
            "stalled-spec-rejected",
            "rejected",
            &["BeeosInvalidRequest"],
        ),
        (
            "stalled-instance-unknown",
            "unknown-id",
            &[reason::INSTANCE_GONE],
        ),
        (
            "stalled-instance-of-another-owner",
            "foreign-id",
            &["InstanceForbidden"],
        ),
        (
            "stalled-instance-claimed",
            "copycat",
            &[reason::INSTANCE_CLAIMED],
        ),
    ] {
        env.wait_for(name, "Stalled", |r| {
            has_condition(r, condition::STALLED, "True")
        })
        .await?;
        findings.judge(&env, state, name, &stalled(reasons)).await?;
    }

    // Without an operator: a brand-new resource, and a spec change nobody has observed yet.
    env.kill_operator()?;
    env.apply(instance("new", catalog(), none)?).await?;
    findings.judge(&env, "new", "new", &[]).await?;
    patch(
        &env,
        "ready",
        json!({"spec": {"systemPrompt": "Observe me."}}),
    )
    .await?;
    findings
        .judge(&env, "spec-change-not-observed", "ready", &[])
        .await?;

    findings.assert_none();
    Ok(())
}

#[tokio::test]
async fn transitions_read_as_progressing_everywhere() -> Result<()> {
    let env = Env::start("health-transitions").await?;
    let mut findings = Findings::default();
    for (name, spec) in [
        ("stopping", catalog()),
        ("replacing", catalog()),
        (
            "recreating",
            json!({"variantId": "beeos-claw-small", "updateStrategy": "Recreate"}),
        ),
        ("deleting", catalog()),
    ] {
        env.apply(instance(name, spec, json!({}))?).await?;
    }
    for name in ["stopping", "replacing", "recreating", "deleting"] {
        env.wait_for(name, "Ready", is_ready).await?;
    }

    // From now on every transition at BeeOS takes an hour, so each state holds while judged
    // (the deleting resource keeps its finalizer while its instance is being destroyed).
    let hour = 3_600_000;
    env.set_sim_settings(json!({
        "pendingMs": hour, "stopMs": hour, "destroyMs": hour, "restartMs": hour,
    }))
    .await?;
    patch(&env, "stopping", json!({"spec": {"powerState": "Stopped"}})).await?;
    patch(
        &env,
        "replacing",
        json!({"spec": {"systemPrompt": "A new prompt."}}),
    )
    .await?;
    patch(
        &env,
        "recreating",
        json!({"spec": {"systemPrompt": "A new prompt."}}),
    )
    .await?;
    env.api()
        .delete("deleting", &DeleteParams::default())
        .await?;
    env.apply(instance("deploying", catalog(), json!({}))?)
        .await?;

    for (state, reasons) in [
        ("stopping", &[reason::STOPPING][..]),
        ("replacing", &[reason::REPLACING]),
        ("recreating", &[reason::RECREATING]),
        ("deploying", &[reason::DEPLOYING, reason::PROVISIONING]),
    ] {
        env.wait_for(state, "working", |r| {
            reasons.contains(&ready_reason(r))
                && r.status.as_ref().and_then(|s| s.observed_generation) == r.metadata.generation
        })
        .await?;
        findings
            .judge(&env, state, state, &working(reasons))
            .await?;
    }
    env.wait_for("deleting", "deleting", |r| {
        r.metadata.deletion_timestamp.is_some() && ready_reason(r) == reason::DELETING
    })
    .await?;
    let mut deleting = working(&[reason::DELETING]);
    deleting.push(Rule::Deleting);
    findings
        .judge(&env, "deleting", "deleting", &deleting)
        .await?;

    findings.assert_none();
    Ok(())
}

#[tokio::test]
async fn transient_beeos_errors_read_as_progressing_not_degraded() -> Result<()> {
    let env = Env::start("health-retrying").await?;
    let mut findings = Findings::default();
    env.set_sim_faults(json!({"routes": {"deploy": {"status": 503}}}))
        .await?;
    env.apply(instance("retrying", catalog(), json!({}))?)
        .await?;
    env.wait_for("retrying", "retrying", |r| {
        support::condition(r, condition::SYNCED).is_some_and(|c| c.reason == "BeeosServerError")
    })
    .await?;
    let mut retrying = working(&[reason::DEPLOYING]);
    retrying.push(Rule::Condition(
        condition::SYNCED,
        "False",
        &["BeeosServerError"],
    ));
    findings
        .judge(&env, "retrying", "retrying", &retrying)
        .await?;
    findings.assert_none();
    Ok(())
}
