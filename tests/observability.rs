//! What Prometheus, Grafana, Helm's notes and a log reader get: the chart's alerting rules pass
//! promtool's check and unit tests, the dashboard and the alerts query only metrics the operator
//! exports, both objects are what the API server (and Grafana's sidecar) take, the values that
//! turn them on are checked by the schema, the install notes carry the Argo CD health check, and
//! text logs written to a file carry no colour codes.
//!
//! helm, promtool and health-check run as child processes, off the test's runtime.

mod support;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, ensure};
use beeos_operator::metrics::Metrics;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::ResourceExt;
use kube::api::{Api, DynamicObject, Patch, PatchParams};
use kube::runtime::wait::{await_condition, conditions};
use serde_json::{Value, json};
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

/// What a child process printed, and whether it succeeded.
struct Output {
    success: bool,
    stdout: String,
    stderr: String,
}

/// Runs `program args` in `dir`, as the admin of this binary's control plane; Helm keeps its
/// files in the control plane's directory.
async fn output(program: PathBuf, args: Vec<String>, dir: PathBuf) -> Result<Output> {
    let command = format!("{} {}", program.display(), args.join(" "));
    let control_plane = testenv::shared();
    let kubeconfig = control_plane.kubeconfig_path();
    let helm_home = control_plane.dir().join("helm");
    let output = tokio::task::spawn_blocking(move || {
        Command::new(&program)
            .args(&args)
            .current_dir(dir)
            .env("KUBECONFIG", kubeconfig)
            .env("HELM_CACHE_HOME", helm_home.join("cache"))
            .env("HELM_CONFIG_HOME", helm_home.join("config"))
            .env("HELM_DATA_HOME", helm_home.join("data"))
            .output()
    })
    .await?
    .with_context(|| format!("running `{command}`"))?;
    Ok(Output {
        success: output.status.success(),
        stdout: String::from_utf8(output.stdout)?,
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    })
}

/// Like [`output`], and returns stdout, failing with the output if the program fails.
async fn run(program: PathBuf, args: Vec<String>, dir: PathBuf) -> Result<String> {
    let command = format!("{} {}", program.display(), args.join(" "));
    let out = output(program, args, dir).await?;
    ensure!(
        out.success,
        "`{command}` failed:\n{}\n{}",
        out.stdout,
        out.stderr
    );
    Ok(out.stdout)
}

fn chart() -> String {
    repo_path("charts/beeos-operator").display().to_string()
}

/// `helm args` with the pinned Helm, in the repository.
async fn helm(args: &[&str]) -> Result<Output> {
    let args = args.iter().map(|a| a.to_string()).collect();
    output(tool("HELM", "helm", "helm")?, args, repo_path(".")).await
}

const WITH_ALERTS_AND_DASHBOARD: [&str; 4] = [
    "--set",
    "metrics.prometheusRule.enabled=true",
    "--set",
    "metrics.dashboard.enabled=true",
];

/// A scratch directory of this test binary's control plane directory, removed with it.
fn scratch(name: &str) -> Result<PathBuf> {
    let dir = testenv::shared().dir().join(name);
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}

/// A stand-in for the Prometheus Operator's PrometheusRule CRD (a bare API server has none): the
/// same group, kind and scope, and the schema of the fields the chart sets, so the server still
/// rejects unknown or misplaced fields. The real CRD's full schema is not checked here.
async fn ensure_prometheus_rule_crd() -> Result<()> {
    static APPLIED: tokio::sync::OnceCell<()> = tokio::sync::OnceCell::const_new();
    APPLIED
        .get_or_try_init(|| async {
            let string_map = json!({"type": "object", "additionalProperties": {"type": "string"}});
            let rule = json!({
                "type": "object",
                "required": ["expr"],
                "properties": {
                    "alert": {"type": "string"},
                    "record": {"type": "string"},
                    "expr": {"x-kubernetes-int-or-string": true},
                    "for": {"type": "string"},
                    "keep_firing_for": {"type": "string"},
                    "labels": string_map,
                    "annotations": string_map,
                },
            });
            let group = json!({
                "type": "object",
                "required": ["name"],
                "properties": {
                    "name": {"type": "string", "minLength": 1},
                    "interval": {"type": "string"},
                    "rules": {"type": "array", "items": rule},
                },
            });
            let crd: CustomResourceDefinition = serde_json::from_value(json!({
                "apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
                "metadata": {"name": "prometheusrules.monitoring.coreos.com"},
                "spec": {
                    "group": "monitoring.coreos.com",
                    "names": {"kind": "PrometheusRule", "listKind": "PrometheusRuleList",
                              "plural": "prometheusrules", "singular": "prometheusrule"},
                    "scope": "Namespaced",
                    "versions": [{"name": "v1", "served": true, "storage": true, "schema": {
                        "openAPIV3Schema": {"type": "object", "properties": {"spec": {
                            "type": "object",
                            "properties": {"groups": {"type": "array", "items": group}},
                        }}},
                    }}],
                },
            }))?;
            let crds: Api<CustomResourceDefinition> = Api::all(testenv::shared().admin_client());
            crds.patch(
                &crd.name_any(),
                &PatchParams::apply("beeos-observability-tests").force(),
                &Patch::Apply(&crd),
            )
            .await?;
            tokio::time::timeout(
                support::DEADLINE,
                await_condition(crds, &crd.name_any(), conditions::is_crd_established()),
            )
            .await
            .context("the PrometheusRule CRD was not established in time")??;
            anyhow::Ok(())
        })
        .await?;
    Ok(())
}

/// The chart rendered by the pinned Helm with the alerts and the dashboard on, as objects.
async fn rendered_observability() -> Result<Vec<Value>> {
    let chart = chart();
    let mut args = vec![
        "template",
        "beeos-operator",
        &chart,
        "--namespace",
        "beeos-system",
    ];
    args.extend(WITH_ALERTS_AND_DASHBOARD);
    let out = helm(&args).await?;
    ensure!(out.success, "helm template failed:\n{}", out.stderr);
    let mut objects = Vec::new();
    for document in serde_yaml_ng::Deserializer::from_str(&out.stdout) {
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
    ensure!(checked.contains("SUCCESS: 6 rules found"), "{checked}");

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
    let metrics = std::sync::Arc::new(Metrics::default());
    // prometheus-client leaves a labelled family out of the exposition until it has a series,
    // so each one gets a sample first.
    metrics.reconcile_failed("Example");
    metrics.beeos_mutation("deploy");
    metrics.beeos_error("Example");
    let resource: beeos_operator::crd::BeeosInstance = serde_json::from_value(json!({
        "apiVersion": "beeos.ai/v1alpha1", "kind": "BeeosInstance",
        "metadata": {"name": "example", "namespace": "example"},
        "spec": {"variantId": "beeos-claw-small"},
        "status": {"instance": {"id": "inst-1", "status": "running"}},
    }))?;
    metrics.set_resource_gauges(&[std::sync::Arc::new(resource)]);
    let calls = beeos_operator::metrics::BeeosCallMetrics(metrics.clone());
    use beeos_operator::beeos::{CallObserver, Operation};
    calls.finished(Operation::Get, "200");
    calls.waited(Operation::Get, std::time::Duration::ZERO);
    metrics.set_run_times(vec![beeos_operator::metrics::RunTime {
        namespace: "example".into(),
        name: "example".into(),
        instance_id: "inst-1".into(),
        agent_framework: "beeos-claw".into(),
        region: "eu".into(),
        seconds: 1,
    }]);
    metrics.set_trial_expiries(&[("example".into(), "example".into(), 1)]);
    let text = metrics.encode()?;
    // The operator's own list of what it exports must be what this finds.
    let families: BTreeSet<&str> = text
        .lines()
        .filter_map(|line| line.strip_prefix("# TYPE "))
        .filter_map(|rest| rest.split_whitespace().next())
        .collect();
    ensure!(
        families == beeos_operator::metrics::FAMILIES.iter().copied().collect(),
        "sampled {families:?}, FAMILIES lists {:?}",
        beeos_operator::metrics::FAMILIES
    );
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
async fn dashboard_configmap_is_what_grafanas_sidecar_loads_and_the_api_server_takes_both()
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

    // The API server takes both objects as rendered (server-side dry run, unknown fields refused).
    ensure_prometheus_rule_crd().await?;
    let control_plane = testenv::shared();
    let namespace = control_plane.namespace("observability").await?;
    for object in [config_map, one(&objects, "PrometheusRule")?] {
        let mut object: DynamicObject = serde_json::from_value(object.clone())?;
        object.metadata.namespace = Some(namespace.clone());
        let types = object.types.clone().context("no apiVersion/kind")?;
        let (group, version) = types
            .api_version
            .split_once('/')
            .unwrap_or(("", &types.api_version));
        let gvk = kube::api::GroupVersionKind::gvk(group, version, &types.kind);
        let (resource, _) =
            kube::discovery::pinned_kind(&control_plane.admin_client(), &gvk).await?;
        Api::<DynamicObject>::namespaced_with(control_plane.admin_client(), &namespace, &resource)
            .patch(
                &object.name_any(),
                &PatchParams::apply("beeos-observability-tests")
                    .dry_run()
                    .validation_strict(),
                &Patch::Apply(&object),
            )
            .await
            .with_context(|| format!("the API server refused the {}", types.kind))?;
    }

    // Off by default: a default install renders neither.
    let default = helm(&["template", "beeos-operator", &chart()]).await?;
    assert!(default.success, "{}", default.stderr);
    assert!(!default.stdout.contains("kind: PrometheusRule"));
    assert!(!default.stdout.contains("grafana_dashboard"));
    Ok(())
}

#[tokio::test]
async fn chart_with_alerts_and_dashboard_lints_and_its_schema_names_bad_values() -> Result<()> {
    let chart = chart();
    let mut lint = vec!["lint", "--strict", &chart];
    lint.extend(WITH_ALERTS_AND_DASHBOARD);
    let linted = helm(&lint).await?;
    assert!(linted.success, "{}{}", linted.stdout, linted.stderr);

    for (value, message) in [
        (
            "metrics.prometheusRule.stalledFor=\"soon\"",
            "at '/metrics/prometheusRule/stalledFor': 'soon' does not match pattern",
        ),
        (
            "metrics.prometheusRule.failingRatio=2",
            "at '/metrics/prometheusRule/failingRatio': maximum",
        ),
        (
            "metrics.dashboard.enabled=\"yes\"",
            "at '/metrics/dashboard/enabled': got string, want boolean",
        ),
        (
            "metrics.dashboard.folder=\"BeeOS\"",
            "additional properties 'folder' not allowed",
        ),
    ] {
        let out = helm(&["template", "beeos-operator", &chart, "--set-json", value]).await?;
        assert!(!out.success, "{value} was accepted");
        assert!(
            out.stderr.contains(message),
            "{value}: expected {message:?} in {}",
            out.stderr
        );
    }
    Ok(())
}

#[tokio::test]
async fn install_notes_show_the_argocd_health_check_and_the_options_that_are_on() -> Result<()> {
    ensure_prometheus_rule_crd().await?;
    let chart = chart();
    let namespace = testenv::shared().namespace("observability-notes").await?;
    let install = [
        "install",
        "beeos-operator",
        &chart,
        "--namespace",
        &namespace,
        "--dry-run=client",
    ];
    let plain = helm(&install).await?;
    assert!(plain.success, "{}", plain.stderr);
    let mut args = install.to_vec();
    args.extend(WITH_ALERTS_AND_DASHBOARD);
    let with_options = helm(&args).await?;
    assert!(with_options.success, "{}", with_options.stderr);

    let script = std::fs::read_to_string(repo_path(
        "argocd/resource_customizations/beeos.ai/BeeosInstance/health.lua",
    ))?;
    let indented: String = script
        .lines()
        .map(|line| {
            if line.is_empty() {
                "\n".to_owned()
            } else {
                format!("      {line}\n")
            }
        })
        .collect();
    for notes in [&plain.stdout, &with_options.stdout] {
        assert!(
            notes.contains(&format!(
                "    resource.customizations.health.beeos.ai_BeeosInstance: |\n{indented}"
            )),
            "the notes do not hold health.lua as an argocd-cm value:\n{notes}"
        );
    }
    assert!(!plain.stdout.contains("PrometheusRule"));
    assert!(
        with_options
            .stdout
            .contains("the PrometheusRule beeos-operator fires")
    );
    assert!(
        with_options
            .stdout
            .contains("beeos-operator-dashboard holds")
    );
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
