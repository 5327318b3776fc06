//! What Prometheus, Grafana and a log reader get: the chart's alerting rules pass promtool's
//! check and unit tests, the dashboard and the alerts query only metrics the operator exports,
//! the dashboard's ConfigMap is what Grafana's sidecar picks up, and text logs written to a file
//! carry no colour codes.
//!
//! helm, promtool and health-check run as child processes, off the test's runtime.

mod support;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, ensure};
use beeos_operator::metrics::Metrics;
use serde_json::Value;
use support::{Env, is_ready, repo_path};

/// A binary the Makefile builds into `.tools/bin` and passes in `variable`.
fn tool(variable: &str, name: &str, target: &str) -> Result<PathBuf> {
    let path = std::env::var_os(variable)
        .map(PathBuf::from)
        .unwrap_or_else(|| repo_path(&format!(".tools/bin/{name}")));
    ensure!(
        path.is_file(),
        "{} is missing: run `make {target}` (or set {variable})",
        path.display()
    );
    Ok(path)
}

/// Runs `program args` in `dir` and returns its stdout, failing with its output if it fails.
async fn run(program: PathBuf, args: Vec<String>, dir: PathBuf) -> Result<String> {
    let command = format!("{} {}", program.display(), args.join(" "));
    let output = tokio::task::spawn_blocking(move || {
        Command::new(&program).args(&args).current_dir(dir).output()
    })
    .await?
    .with_context(|| format!("running `{command}`"))?;
    ensure!(
        output.status.success(),
        "`{command}` failed:\n{}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    Ok(String::from_utf8(output.stdout)?)
}

/// A scratch directory of this test binary's control plane directory, removed with it.
fn scratch(name: &str) -> Result<PathBuf> {
    let dir = testenv::shared().dir().join(name);
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}

/// The chart rendered by the pinned Helm with the alerts and the dashboard on, as objects.
async fn rendered_observability() -> Result<Vec<Value>> {
    let helm = tool("HELM", "helm", "helm")?;
    let out = run(
        helm,
        [
            "template",
            "beeos-operator",
            &repo_path("charts/beeos-operator").display().to_string(),
            "--namespace",
            "beeos-system",
            "--set",
            "metrics.prometheusRule.enabled=true",
            "--set",
            "metrics.dashboard.enabled=true",
        ]
        .map(String::from)
        .to_vec(),
        repo_path("."),
    )
    .await?;
    let mut objects = Vec::new();
    for document in serde_yaml_ng::Deserializer::from_str(&out) {
        let object: Value = serde::Deserialize::deserialize(document)?;
        if !object.is_null() {
            objects.push(object);
        }
    }
    Ok(objects)
}

fn one<'a>(objects: &'a [Value], kind: &str) -> Result<&'a Value> {
    let found: Vec<&Value> = objects.iter().filter(|o| o["kind"] == kind).collect();
    ensure!(
        found.len() == 1,
        "expected one {kind}, rendered {}",
        found.len()
    );
    Ok(found[0])
}

/// Writes the PrometheusRule's groups as a Prometheus rule file and the dashboard's JSON, into
/// `dir`, and returns their paths.
fn write_rules_and_dashboard(objects: &[Value], dir: &Path) -> Result<(PathBuf, PathBuf)> {
    let rule = one(objects, "PrometheusRule")?;
    ensure!(rule["apiVersion"] == "monitoring.coreos.com/v1", "{rule}");
    let rules = dir.join("beeos-operator-rules.yaml");
    std::fs::write(&rules, serde_yaml_ng::to_string(&rule["spec"])?)?;
    let config_map = objects
        .iter()
        .find(|o| o["kind"] == "ConfigMap" && o["metadata"]["name"] == "beeos-operator-dashboard")
        .context("no dashboard ConfigMap")?;
    let dashboard = dir.join("beeos-operator.json");
    std::fs::write(
        &dashboard,
        config_map["data"]["beeos-operator.json"]
            .as_str()
            .context("the ConfigMap has no beeos-operator.json")?,
    )?;
    Ok((rules, dashboard))
}

#[tokio::test]
async fn alerting_rules_pass_promtool_check_and_their_unit_tests() -> Result<()> {
    let promtool = tool("PROMTOOL", "promtool", "promtool")?;
    let dir = scratch("promtool")?;
    let (rules, _) = write_rules_and_dashboard(&rendered_observability().await?, &dir)?;
    let checked = run(
        promtool.clone(),
        vec!["check".into(), "rules".into(), rules.display().to_string()],
        dir.clone(),
    )
    .await?;
    ensure!(checked.contains("SUCCESS: 4 rules found"), "{checked}");

    std::fs::copy(
        repo_path("tests/prometheus/alerts_test.yaml"),
        dir.join("alerts_test.yaml"),
    )?;
    run(
        promtool,
        vec!["test".into(), "rules".into(), "alerts_test.yaml".into()],
        dir,
    )
    .await?;
    Ok(())
}

/// Metric names as Prometheus stores them, from the `# TYPE` lines of the operator's registry:
/// counters as `_total`, histograms as `_bucket`, `_sum` and `_count`.
fn exported_metric_names() -> Result<BTreeSet<String>> {
    let metrics = Metrics::default();
    // prometheus-client leaves a labelled family out of the exposition until it has a series,
    // so each one gets a sample first.
    metrics.reconcile_failed("Example");
    metrics.beeos_mutation("deploy");
    metrics.beeos_error("Example");
    let text = metrics.encode()?;
    let mut names = BTreeSet::new();
    for line in text.lines() {
        let Some(rest) = line.strip_prefix("# TYPE ") else {
            continue;
        };
        let mut words = rest.split_whitespace();
        let (Some(name), Some(kind)) = (words.next(), words.next()) else {
            continue;
        };
        let suffixes: &[&str] = match kind {
            "counter" => &["_total"],
            "histogram" => &["_bucket", "_sum", "_count"],
            "summary" => &["", "_sum", "_count"],
            _ => &[""],
        };
        for suffix in suffixes {
            names.insert(format!("{name}{suffix}"));
        }
    }
    Ok(names)
}

#[tokio::test]
async fn dashboard_and_alerts_query_only_metrics_the_operator_exports() -> Result<()> {
    let dir = scratch("promql")?;
    let (rules, dashboard) = write_rules_and_dashboard(&rendered_observability().await?, &dir)?;
    let queried = run(
        tool("HEALTH_CHECK", "health-check", "health-check")?,
        vec![
            "promql-metrics".into(),
            "--rules".into(),
            rules.display().to_string(),
            "--dashboard".into(),
            dashboard.display().to_string(),
        ],
        dir,
    )
    .await?;
    let queried: BTreeSet<&str> = queried.lines().filter(|l| !l.is_empty()).collect();
    // The families the dashboard and the alerts are built on; an empty extraction proves nothing.
    for family in [
        "beeos_operator_resources",
        "beeos_operator_beeos_requests_total",
        "beeos_operator_reconcile_backlog",
    ] {
        ensure!(
            queried.contains(family),
            "{family} is not queried: {queried:?}"
        );
    }
    let exported = exported_metric_names()?;
    let unknown: Vec<&&str> = queried
        .iter()
        .filter(|name| !exported.contains(**name))
        .collect();
    ensure!(
        unknown.is_empty(),
        "the dashboard or the alerts query metrics the operator does not export: {unknown:?}\n\
         exported: {exported:?}"
    );
    Ok(())
}

#[tokio::test]
async fn dashboard_configmap_is_what_grafanas_sidecar_loads_and_the_api_server_accepts()
-> Result<()> {
    let objects = rendered_observability().await?;
    let config_map = objects
        .iter()
        .find(|o| o["kind"] == "ConfigMap" && o["metadata"]["name"] == "beeos-operator-dashboard")
        .context("no dashboard ConfigMap")?;
    assert_eq!(config_map["metadata"]["labels"]["grafana_dashboard"], "1");
    let dashboard: Value = serde_json::from_str(
        config_map["data"]["beeos-operator.json"]
            .as_str()
            .context("no dashboard JSON")?,
    )
    .context("the dashboard is not JSON")?;
    assert_eq!(dashboard["uid"], "beeos-operator");
    let panels = dashboard["panels"].as_array().context("no panels")?;
    assert!(panels.len() > 10, "{} panels", panels.len());

    // The API server takes the ConfigMap as rendered (server-side dry run).
    let control_plane = testenv::shared();
    let namespace = control_plane.namespace("observability").await?;
    let mut config_map: k8s_openapi::api::core::v1::ConfigMap =
        serde_json::from_value(config_map.clone())?;
    config_map.metadata.namespace = Some(namespace.clone());
    kube::Api::<k8s_openapi::api::core::v1::ConfigMap>::namespaced(
        control_plane.admin_client(),
        &namespace,
    )
    .create(
        &kube::api::PostParams {
            dry_run: true,
            ..Default::default()
        },
        &config_map,
    )
    .await?;

    // Off by default: a default install renders neither.
    let helm = tool("HELM", "helm", "helm")?;
    let default = run(
        helm,
        vec![
            "template".into(),
            "beeos-operator".into(),
            repo_path("charts/beeos-operator").display().to_string(),
        ],
        repo_path("."),
    )
    .await?;
    assert!(!default.contains("kind: PrometheusRule"));
    assert!(!default.contains("grafana_dashboard"));
    Ok(())
}

#[tokio::test]
async fn text_logs_written_to_a_file_carry_no_colour_codes() -> Result<()> {
    let env = Env::start("observability-logs").await?;
    env.apply(support::catalog_instance("plain-logs")?).await?;
    env.wait_for("plain-logs", "Ready", is_ready).await?;
    let log = env.operator_log();
    // The operator logged its start and its work: the file is not empty for another reason.
    assert!(log.contains("starting"), "{log}");
    assert!(log.contains("INFO"), "{log}");
    assert!(
        !log.contains('\u{1b}'),
        "escape codes in the log file:\n{}",
        support::tail(&log, 5)
    );
    Ok(())
}
