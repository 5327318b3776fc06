//! What kubectl shows of a BeeosInstance: `get` says why a resource is not Ready (the reason,
//! and the message under `-o wide`), `explain` describes the kind and every status field.

mod support;

use anyhow::{Context, Result, ensure};
use beeos_operator::crd::{BeeosInstance, condition};
use kube::CustomResourceExt;
use serde_json::{Value, json};
use support::{Env, has_condition};

/// Runs the control plane's kubectl (built at the server's version) in the test's namespace.
/// Its discovery cache is the control plane's own: one in the user's home could hold what an
/// earlier control plane on the same port served.
async fn kubectl(env: &Env, args: &[&str]) -> Result<String> {
    let mut command = std::process::Command::new(testenv::bin_dir().join("kubectl"));
    command
        .args(args)
        .args(["--namespace", &env.namespace])
        .arg(format!(
            "--cache-dir={}",
            env.control_plane.dir().join("kubectl-cache").display()
        ))
        .env("KUBECONFIG", env.control_plane.kubeconfig_path());
    let output = tokio::task::spawn_blocking(move || command.output())
        .await?
        .context("running kubectl")?;
    ensure!(
        output.status.success(),
        "kubectl {} failed: {}",
        args.join(" "),
        String::from_utf8_lossy(&output.stderr)
    );
    Ok(String::from_utf8(output.stdout)?)
}

/// Every property under `schema`, as a dotted path, with whether it has a description.
fn properties(schema: &Value, path: &str, out: &mut Vec<(String, bool)>) {
    if let Some(properties) = schema["properties"].as_object() {
        for (name, property) in properties {
            let path = format!("{path}.{name}");
            out.push((path.clone(), property["description"].is_string()));
            properties_of(property, &path, out);
        }
    }
}

fn properties_of(schema: &Value, path: &str, out: &mut Vec<(String, bool)>) {
    properties(schema, path, out);
    if schema["items"].is_object() {
        properties(&schema["items"], &format!("{path}[]"), out);
    }
}

#[test]
fn every_status_field_and_the_kind_itself_have_a_description() -> Result<()> {
    let crd = serde_json::to_value(BeeosInstance::crd())?;
    let schema = &crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"];
    let kind = schema["description"].as_str().unwrap_or_default();
    assert!(
        kind.starts_with("A BeeOS AI-agent instance") && !kind.contains("Auto-generated"),
        "{kind}"
    );
    let mut fields = Vec::new();
    properties_of(&schema["properties"]["status"], "status", &mut fields);
    assert!(
        fields.len() > 40,
        "only {} status fields found",
        fields.len()
    );
    let undescribed: Vec<&String> = fields
        .iter()
        .filter(|(_, described)| !described)
        .map(|(path, _)| path)
        .collect();
    assert!(
        undescribed.is_empty(),
        "fields without a description: {undescribed:?}"
    );
    Ok(())
}

#[tokio::test]
async fn kubectl_get_shows_why_a_resource_is_stalled_and_wide_adds_the_message() -> Result<()> {
    let env = Env::start("kubectl-stalled").await?;
    env.apply(serde_json::from_value(json!({
        "apiVersion": "beeos.ai/v1alpha1", "kind": "BeeosInstance",
        "metadata": {"name": "bad-variant"},
        "spec": {"variantId": "no-such-variant"},
    }))?)
    .await?;
    let stalled = env
        .wait_for("bad-variant", "Stalled", |r| {
            has_condition(r, condition::STALLED, "True")
        })
        .await?;
    let ready = support::condition(&stalled, condition::READY).context("Ready")?;

    let table = kubectl(&env, &["get", "bi"]).await?;
    let mut lines = table.lines();
    let header: Vec<&str> = lines
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .collect();
    assert_eq!(
        header,
        [
            "NAME",
            "READY",
            "REASON",
            "STATUS",
            "CONNECTIVITY",
            "ENDPOINT",
            "REGION",
            "AGE",
            "EXPIRES"
        ],
        "{table}"
    );
    let row: Vec<&str> = lines
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .collect();
    assert_eq!(
        row[..3],
        ["bad-variant", "False", ready.reason.as_str()],
        "{table}"
    );
    assert!(
        !table.contains(&ready.message),
        "the message is for -o wide:\n{table}"
    );

    let wide = kubectl(&env, &["get", "bi", "-o", "wide"]).await?;
    let header = wide.lines().next().unwrap_or_default();
    assert!(header.trim_end().ends_with("MESSAGE"), "{wide}");
    assert!(wide.contains(&ready.message), "{wide}");
    assert!(ready.message.contains("variantId"), "{}", ready.message);
    Ok(())
}

#[tokio::test]
async fn kubectl_explain_describes_the_kind_and_its_status() -> Result<()> {
    let env = Env::without_operator("kubectl-explain").await?;
    // The API server publishes a new CRD's schema shortly after it is established.
    let started = tokio::time::Instant::now();
    let kind = loop {
        match kubectl(&env, &["explain", "bi"]).await {
            Ok(kind) => break kind,
            Err(_) if started.elapsed() < support::DEADLINE => {
                tokio::time::sleep(std::time::Duration::from_millis(200)).await;
            }
            Err(err) => return Err(err),
        }
    };
    assert!(kind.contains("A BeeOS AI-agent instance"), "{kind}");
    assert!(!kind.contains("Auto-generated"), "{kind}");
    let instance = kubectl(&env, &["explain", "bi.status.instance"]).await?;
    for field in ["region", "publicIp", "startedAt", "isTrial"] {
        let line = instance
            .lines()
            .position(|l| l.trim_start().starts_with(&format!("{field}\t")))
            .with_context(|| format!("{field} is not explained:\n{instance}"))?;
        let next = instance.lines().nth(line + 1).unwrap_or_default();
        assert!(
            !next.trim().is_empty() && !next.contains("<empty>"),
            "{field} has no description:\n{instance}"
        );
    }
    Ok(())
}
