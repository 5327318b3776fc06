//! The Helm chart on the real control plane. It lints; with default and other values it renders
//! objects the API server accepts (server-side dry run, restricted Pod Security); its schema
//! turns bad values away with messages that name them; it installs and uninstalls; and the
//! ServiceAccount it creates lets the operator binary, run outside the cluster with that
//! account's token, take instances through their life, and no more than the operator needs.
//!
//! helm and kubectl run as child processes off the test's runtime, which serves the simulator.

mod support;

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use anyhow::{Context, Result, bail, ensure};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::authorization::v1::{
    ResourceAttributes, SelfSubjectAccessReview, SelfSubjectAccessReviewSpec,
};
use k8s_openapi::api::core::v1::{Namespace, Pod, Secret, Service, ServiceAccount};
use k8s_openapi::api::events::v1::Event;
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, Role, RoleBinding};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::runtime::wait::{await_condition, conditions};
use kube::{Client, ResourceExt};
use serde_json::{Value, json};
use support::{
    DEADLINE, Env, TEAM_A_TOKEN, instance_id, is_ready, repo_path, service_account_kubeconfig, tail,
};
use tokio::sync::{Mutex, OnceCell};

const CHART: &str = "charts/beeos-operator";
/// Every release is called this, so its objects are simply `beeos-operator`.
const RELEASE: &str = "beeos-operator";
const CRD_NAME: &str = "beeosinstances.beeos.ai";

/// Held by every test that creates BeeosInstances: while the cluster-wide test's operator runs
/// it watches every namespace, and would take theirs too.
static INSTANCES: Mutex<()> = Mutex::const_new(());

/// The RBAC rules the operator needs, exactly: what its controller calls (watch and get, merge
/// and JSON patches of finalizer and annotations, server-side apply of status, Secrets read by
/// name, their metadata watched and their protection patched, and events).
fn operator_rules() -> Value {
    json!([
        {"apiGroups": ["beeos.ai"], "resources": ["beeosinstances"],
         "verbs": ["get", "list", "watch", "patch"]},
        {"apiGroups": ["beeos.ai"], "resources": ["beeosinstances/status"], "verbs": ["patch"]},
        {"apiGroups": [""], "resources": ["secrets"], "verbs": ["get", "list", "watch", "patch"]},
        {"apiGroups": [""], "resources": ["configmaps"], "verbs": ["get", "create", "patch", "delete"]},
        {"apiGroups": ["events.k8s.io"], "resources": ["events"], "verbs": ["create"]},
    ])
}

/// The leader-election Role's rules: the one Lease, in the release namespace.
fn leader_election_rules() -> Value {
    json!([
        {"apiGroups": ["coordination.k8s.io"], "resources": ["leases"], "verbs": ["create"]},
        {"apiGroups": ["coordination.k8s.io"], "resources": ["leases"],
         "resourceNames": ["beeos-operator"], "verbs": ["get", "patch"]},
    ])
}

fn is_leader_election(object: &Value) -> bool {
    object["metadata"]["name"]
        .as_str()
        .is_some_and(|name| name.ends_with("-leader-election"))
}

// ---------------------------------------------------------------------------------------------
// helm and kubectl

/// What a child process printed, and whether it succeeded.
struct Run {
    command: String,
    success: bool,
    stdout: String,
    stderr: String,
}

impl Run {
    fn ok(self) -> Result<Run> {
        ensure!(
            self.success,
            "`{}` failed:\n{}\n{}",
            self.command,
            self.stdout,
            self.stderr
        );
        Ok(self)
    }

    fn failed(self) -> Result<Run> {
        ensure!(
            !self.success,
            "`{}` succeeded but should have failed:\n{}",
            self.command,
            self.stdout
        );
        Ok(self)
    }
}

/// The pinned Helm that `make helm` builds (the Makefile passes it as `HELM`).
fn helm_binary() -> Result<PathBuf> {
    let helm = std::env::var_os("HELM")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo_path(".tools/bin/helm"));
    ensure!(
        helm.is_file(),
        "{} is missing: run `make helm` (or set HELM to a Helm 3 binary)",
        helm.display()
    );
    Ok(helm)
}

/// Runs `program args` as the cluster admin against the shared control plane, off this runtime.
/// Helm keeps its cache and configuration in the control plane's directory, not the user's.
async fn run(program: PathBuf, args: &[&str]) -> Result<Run> {
    let control_plane = testenv::shared();
    let kubeconfig = control_plane.kubeconfig_path();
    let helm_home = control_plane.dir().join("helm");
    let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
    let command = format!(
        "{} {}",
        program.file_name().unwrap_or_default().to_string_lossy(),
        args.join(" ")
    );
    let output = tokio::task::spawn_blocking(move || {
        Command::new(&program)
            .args(&args)
            .env("KUBECONFIG", kubeconfig)
            .env("HELM_CACHE_HOME", helm_home.join("cache"))
            .env("HELM_CONFIG_HOME", helm_home.join("config"))
            .env("HELM_DATA_HOME", helm_home.join("data"))
            .output()
    })
    .await?
    .with_context(|| format!("running `{command}`"))?;
    Ok(Run {
        command,
        success: output.status.success(),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    })
}

async fn helm(args: &[&str]) -> Result<Run> {
    run(helm_binary()?, args).await
}

async fn kubectl(args: &[&str]) -> Result<Run> {
    run(testenv::bin_dir().join("kubectl"), args).await
}

fn chart_path() -> String {
    repo_path(CHART).display().to_string()
}

/// Writes `values` (JSON is YAML) where helm can read it.
fn values_file(name: &str, values: &Value) -> Result<String> {
    let path = testenv::shared().dir().join(format!("values-{name}.json"));
    std::fs::write(&path, values.to_string())?;
    Ok(path.display().to_string())
}

/// The chart rendered by `helm template`, as a file and as objects.
struct Rendered {
    path: PathBuf,
    objects: Vec<Value>,
}

impl Rendered {
    fn all(&self, kind: &str) -> Vec<&Value> {
        self.objects.iter().filter(|o| o["kind"] == kind).collect()
    }

    fn one(&self, kind: &str) -> Result<&Value> {
        match self.all(kind).as_slice() {
            [object] => Ok(object),
            found => bail!("expected one {kind}, rendered {}", found.len()),
        }
    }

    fn kinds(&self) -> BTreeSet<String> {
        self.objects
            .iter()
            .map(|o| o["kind"].as_str().unwrap_or_default().to_owned())
            .collect()
    }

    /// The operator container of the Deployment.
    fn container(&self) -> Result<&Value> {
        Ok(&self.one("Deployment")?["spec"]["template"]["spec"]["containers"][0])
    }

    /// The value of the operator's environment variable `name`, if it is set to a value.
    fn env(&self, name: &str) -> Result<Option<String>> {
        Ok(env_value(self.container()?, name))
    }
}

fn env_value(container: &Value, name: &str) -> Option<String> {
    container["env"]
        .as_array()?
        .iter()
        .find(|e| e["name"] == name)?
        .get("value")?
        .as_str()
        .map(str::to_owned)
}

/// `helm template` of the chart (CRDs included) into `namespace` with `values`.
async fn render(namespace: &str, values: &Value) -> Result<Rendered> {
    let values = values_file(namespace, values)?;
    let run = helm(&[
        "template",
        RELEASE,
        &chart_path(),
        "--namespace",
        namespace,
        "--values",
        &values,
        "--include-crds",
    ])
    .await?
    .ok()?;
    let path = testenv::shared()
        .dir()
        .join(format!("rendered-{namespace}.yaml"));
    std::fs::write(&path, &run.stdout)?;
    let mut objects = Vec::new();
    for document in serde_yaml_ng::Deserializer::from_str(&run.stdout) {
        let object: Value = serde::Deserialize::deserialize(document)?;
        if !object.is_null() {
            objects.push(object);
        }
    }
    Ok(Rendered { path, objects })
}

/// `kubectl apply --dry-run=server` of what was rendered: the API server validates every object
/// (unknown fields are errors) and, in a restricted namespace, warns about Pod Security.
async fn server_dry_run(rendered: &Rendered) -> Result<()> {
    let run = kubectl(&[
        "apply",
        "--dry-run=server",
        "--filename",
        &rendered.path.display().to_string(),
    ])
    .await?
    .ok()?;
    ensure!(
        !run.stderr.contains("would violate PodSecurity"),
        "the Deployment is not Pod Security restricted:\n{}",
        run.stderr
    );
    Ok(())
}

/// A fresh namespace that enforces (for Pods) and warns about (for workloads) the restricted
/// Pod Security Standard.
async fn restricted_namespace(prefix: &str) -> Result<String> {
    let control_plane = testenv::shared();
    let namespace = control_plane.namespace(prefix).await?;
    let labels = json!({"metadata": {"labels": {
        "pod-security.kubernetes.io/enforce": "restricted",
        "pod-security.kubernetes.io/warn": "restricted",
    }}});
    Api::<Namespace>::all(control_plane.admin_client())
        .patch(&namespace, &PatchParams::default(), &Patch::Merge(&labels))
        .await?;
    Ok(namespace)
}

async fn helm_install(namespace: &str, values: &Value) -> Result<Run> {
    let values = values_file(namespace, values)?;
    // A bare API server runs no Pods, so there is nothing to wait for.
    helm(&[
        "install",
        RELEASE,
        &chart_path(),
        "--namespace",
        namespace,
        "--values",
        &values,
        "--wait=false",
    ])
    .await?
    .ok()
}

/// The cluster-wide install (default values), made once per test binary. It is the first
/// install of this control plane, so Helm creates the CRD from the chart's crds/.
async fn cluster_install() -> Result<&'static str> {
    static NAMESPACE: OnceCell<String> = OnceCell::const_new();
    let namespace = NAMESPACE
        .get_or_try_init(|| async {
            let crds: Api<CustomResourceDefinition> = Api::all(testenv::shared().admin_client());
            ensure!(
                crds.get_opt(CRD_NAME).await?.is_none(),
                "{CRD_NAME} exists before the first install: only Helm may create it here"
            );
            let namespace = restricted_namespace("chart-cluster").await?;
            let install = helm_install(&namespace, &json!({})).await?;
            for next_step in ["apply -f -", "get bi", "wait --for=condition=Ready"] {
                ensure!(
                    install.stdout.contains(next_step),
                    "NOTES.txt does not show `kubectl … {next_step}`:\n{}",
                    install.stdout
                );
            }
            tokio::time::timeout(
                DEADLINE,
                await_condition(crds, CRD_NAME, conditions::is_crd_established()),
            )
            .await
            .context("the CRD Helm installed was not established in time")??;
            anyhow::Ok(namespace)
        })
        .await?;
    Ok(namespace)
}

// ---------------------------------------------------------------------------------------------
// Access checks

/// `resource` as kubectl writes it: `secrets`, `beeosinstances.beeos.ai`,
/// `beeosinstances.beeos.ai/status`; `namespace` "" means every namespace.
fn attributes(verb: &str, resource: &str, namespace: &str) -> ResourceAttributes {
    let (resource, subresource) = match resource.split_once('/') {
        Some((resource, subresource)) => (resource, Some(subresource.to_owned())),
        None => (resource, None),
    };
    let (resource, group) = resource.split_once('.').unwrap_or((resource, ""));
    ResourceAttributes {
        verb: Some(verb.to_owned()),
        group: Some(group.to_owned()),
        resource: Some(resource.to_owned()),
        subresource,
        namespace: Some(namespace.to_owned()),
        ..Default::default()
    }
}

/// Asks the API server what `client` may do; fails listing every answer that differs from the
/// expected one.
async fn assert_access(client: &Client, expected: &[(bool, &str, &str, &str)]) -> Result<()> {
    let reviews: Api<SelfSubjectAccessReview> = Api::all(client.clone());
    let mut wrong = Vec::new();
    for &(allowed, verb, resource, namespace) in expected {
        let review = SelfSubjectAccessReview {
            spec: SelfSubjectAccessReviewSpec {
                resource_attributes: Some(attributes(verb, resource, namespace)),
                ..Default::default()
            },
            ..Default::default()
        };
        let answer = reviews.create(&PostParams::default(), &review).await?;
        let actual = answer.status.is_some_and(|s| s.allowed);
        if actual != allowed {
            let scope = if namespace.is_empty() {
                "all namespaces".to_owned()
            } else {
                format!("namespace {namespace}")
            };
            wrong.push(format!(
                "{verb} {resource} in {scope}: {} but should be {}",
                if actual { "allowed" } else { "denied" },
                if allowed { "allowed" } else { "denied" },
            ));
        }
    }
    ensure!(wrong.is_empty(), "wrong access:\n{}", wrong.join("\n"));
    Ok(())
}

fn is_forbidden<T>(result: &kube::Result<T>) -> bool {
    matches!(result, Err(kube::Error::Api(status)) if status.code == 403)
}

async fn create_secret(namespace: &str, name: &str) -> Result<()> {
    let secrets: Api<Secret> = Api::namespaced(testenv::shared().admin_client(), namespace);
    let secret: Secret = serde_json::from_value(json!({
        "metadata": {"name": name},
        "stringData": {"token": "not-for-the-operator"},
    }))?;
    secrets.create(&PostParams::default(), &secret).await?;
    Ok(())
}

fn catalog_instance() -> Result<kube::api::DynamicObject> {
    Ok(serde_json::from_value(json!({
        "apiVersion": "beeos.ai/v1alpha1", "kind": "BeeosInstance",
        "metadata": {"name": "not-yours"},
        "spec": {"variantId": "beeos-claw-small"},
    }))?)
}

fn beeos_instances(client: Client, namespace: &str) -> Api<kube::api::DynamicObject> {
    Api::namespaced_with(
        client,
        namespace,
        &kube::api::ApiResource::erase::<beeos_operator::crd::BeeosInstance>(&()),
    )
}

// ---------------------------------------------------------------------------------------------
// The operator end to end, as the chart's ServiceAccount

/// Runs the examples' happy path with the operator acting only as the chart's ServiceAccount:
/// a catalog instance on the default credentials and one on its namespace's Secret become
/// Ready, both are destroyed at BeeOS on delete, events are published, and nothing the
/// operator tried was forbidden.
async fn happy_path_as(env: &mut Env, release_namespace: &str, extra: &[&str]) -> Result<()> {
    let kubeconfig =
        service_account_kubeconfig(env.control_plane, release_namespace, RELEASE).await?;
    env.start_operator_with_kubeconfig(&kubeconfig, extra)?;
    env.apply_example("catalog-instance.yaml").await?;
    env.apply_example("namespace-credentials.yaml").await?;

    let mut ids = Vec::new();
    for name in ["catalog-agent", "team-agent"] {
        let ready = env.wait_for(name, "Ready", is_ready).await?;
        ids.push(instance_id(&ready).context("a Ready resource records its instance")?);
    }
    // The team's Secret, read with the ServiceAccount's `get secrets`, decided the owner.
    assert_eq!(env.sim_instance(&ids[1]).await?["ownerId"], "team-b");

    let events: Api<Event> = Api::namespaced(env.client.clone(), &env.namespace);
    let started = tokio::time::Instant::now();
    loop {
        let published = events.list(&ListParams::default()).await?.items;
        if published.iter().any(|e| {
            e.reporting_controller.as_deref() == Some("beeos-operator")
                && e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some("catalog-agent")
        }) {
            break;
        }
        ensure!(
            started.elapsed() < DEADLINE,
            "no event about catalog-agent from beeos-operator; events: {:?}\n--- operator log ---\n{}",
            published.iter().map(|e| &e.reason).collect::<Vec<_>>(),
            tail(&env.operator_log(), 40)
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    for name in ["catalog-agent", "team-agent"] {
        env.api().delete(name, &DeleteParams::default()).await?;
    }
    for name in ["catalog-agent", "team-agent"] {
        env.wait_gone(name).await?;
    }
    for id in &ids {
        let instance = env.sim_instance(id).await?;
        assert_eq!(instance["desiredStatus"], "terminated", "{instance}");
    }

    let log = env.operator_log();
    ensure!(
        !log.to_lowercase().contains("forbidden"),
        "the operator was refused something:\n{}",
        tail(&log, 60)
    );
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Tests: the chart's files

#[test]
fn chart_crds_are_an_exact_copy_of_crds() -> Result<()> {
    let files = |dir: &str| -> Result<Vec<(String, String)>> {
        let mut files = Vec::new();
        for entry in std::fs::read_dir(repo_path(dir))? {
            let path = entry?.path();
            let name = path
                .file_name()
                .unwrap_or_default()
                .to_string_lossy()
                .into();
            files.push((name, std::fs::read_to_string(&path)?));
        }
        files.sort();
        Ok(files)
    };
    assert!(
        files("crds")? == files(&format!("{CHART}/crds"))?,
        "{CHART}/crds differs from crds/: run `make chart-crds` and commit the result"
    );
    Ok(())
}

#[tokio::test]
async fn helm_lint_passes_with_default_and_other_values() -> Result<()> {
    helm(&["lint", "--strict", &chart_path()]).await?.ok()?;
    let other = json!({
        "watchNamespaces": ["team-a", "team-b"],
        "beeos": {"existingSecret": "beeos-credentials", "existingSecretKey": "api-key"},
        "metrics": {"serviceMonitor": {"enabled": true, "labels": {"release": "prometheus"}}},
        "logFormat": "json",
    });
    let values = values_file("lint", &other)?;
    helm(&["lint", "--strict", &chart_path(), "--values", &values])
        .await?
        .ok()?;
    Ok(())
}

#[tokio::test]
async fn default_values_render_a_cluster_wide_install_the_api_server_accepts() -> Result<()> {
    let namespace = restricted_namespace("chart-default").await?;
    let rendered = render(&namespace, &json!({})).await?;

    let kinds: Vec<&str> = vec![
        "ClusterRole",
        "ClusterRoleBinding",
        "CustomResourceDefinition",
        "Deployment",
        "PodDisruptionBudget",
        "Role",
        "RoleBinding",
        "Service",
        "ServiceAccount",
        "ValidatingAdmissionPolicy",
        "ValidatingAdmissionPolicyBinding",
    ];
    assert_eq!(
        rendered.kinds(),
        kinds
            .into_iter()
            .map(str::to_owned)
            .collect::<BTreeSet<_>>()
    );
    assert_eq!(rendered.one("ClusterRole")?["rules"], operator_rules());
    let binding = rendered.one("ClusterRoleBinding")?;
    assert_eq!(
        binding["subjects"],
        json!([{"kind": "ServiceAccount", "name": RELEASE, "namespace": namespace}])
    );

    // Two replicas, one leading: a rolling update keeps a Ready standby, a drain takes one.
    let deployment = rendered.one("Deployment")?;
    assert_eq!(deployment["spec"]["replicas"], 2);
    assert_eq!(
        deployment["spec"]["strategy"],
        json!({"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}})
    );
    assert_eq!(rendered.env("LEADER_ELECT")?.as_deref(), Some("true"));
    let role = rendered.one("Role")?;
    assert_eq!(role["metadata"]["namespace"], namespace.as_str());
    assert_eq!(role["rules"], leader_election_rules());
    let pdb = rendered.one("PodDisruptionBudget")?;
    assert_eq!(pdb["spec"]["maxUnavailable"], 1);
    assert_eq!(
        pdb["spec"]["selector"]["matchLabels"],
        deployment["spec"]["selector"]["matchLabels"]
    );

    let container = rendered.container()?;
    assert_eq!(container["livenessProbe"]["httpGet"]["path"], "/healthz");
    assert_eq!(container["readinessProbe"]["httpGet"]["path"], "/readyz");
    assert_eq!(
        container["securityContext"],
        json!({
            "allowPrivilegeEscalation": false,
            "readOnlyRootFilesystem": true,
            "capabilities": {"drop": ["ALL"]},
        })
    );
    let pod = &rendered.one("Deployment")?["spec"]["template"]["spec"];
    assert_eq!(pod["securityContext"]["runAsNonRoot"], true);
    assert_eq!(
        pod["securityContext"]["seccompProfile"]["type"],
        "RuntimeDefault"
    );
    assert_eq!(pod["serviceAccountName"], RELEASE);
    assert!(container["resources"]["requests"]["memory"].is_string());
    let pod_name = container["env"]
        .as_array()
        .and_then(|env| env.iter().find(|e| e["name"] == "POD_NAME"))
        .context("POD_NAME is set")?;
    assert_eq!(
        pod_name["valueFrom"]["fieldRef"]["fieldPath"],
        "metadata.name"
    );
    assert_eq!(rendered.env("WATCH_NAMESPACES")?.as_deref(), Some(""));
    assert_eq!(rendered.env("BEEOS_TOKEN_FILE")?, None, "no default token");
    assert_eq!(
        rendered.env("BEEOS_URL")?.as_deref(),
        Some("https://openapi.beeos.ai")
    );
    let service = rendered.one("Service")?;
    assert_eq!(service["spec"]["ports"][0]["targetPort"], "metrics");
    assert_eq!(container["ports"][0]["name"], "metrics");

    server_dry_run(&rendered).await
}

#[tokio::test]
async fn watch_namespaces_render_roles_there_and_nothing_cluster_wide() -> Result<()> {
    let control_plane = testenv::shared();
    let namespace = restricted_namespace("chart-scoped").await?;
    let team_a = control_plane.namespace("chart-team-a").await?;
    let team_b = control_plane.namespace("chart-team-b").await?;
    let rendered = render(&namespace, &json!({"watchNamespaces": [team_a, team_b]})).await?;

    assert!(rendered.all("ClusterRole").is_empty());
    assert!(rendered.all("ClusterRoleBinding").is_empty());
    for kind in ["Role", "RoleBinding"] {
        let namespaces: BTreeSet<&str> = rendered
            .all(kind)
            .iter()
            .filter(|o| !is_leader_election(o))
            .filter_map(|o| o["metadata"]["namespace"].as_str())
            .collect();
        assert_eq!(
            namespaces,
            BTreeSet::from([team_a.as_str(), team_b.as_str()]),
            "{kind}s"
        );
    }
    for role in rendered.all("Role") {
        if is_leader_election(role) {
            // The Lease lives in the release namespace, whatever is watched.
            assert_eq!(role["metadata"]["namespace"], namespace.as_str());
            assert_eq!(role["rules"], leader_election_rules());
        } else {
            assert_eq!(role["rules"], operator_rules());
        }
    }
    for binding in rendered.all("RoleBinding") {
        assert_eq!(
            binding["subjects"],
            json!([{"kind": "ServiceAccount", "name": RELEASE, "namespace": namespace}])
        );
    }
    assert_eq!(
        rendered.env("WATCH_NAMESPACES")?,
        Some(format!("{team_a},{team_b}"))
    );
    server_dry_run(&rendered).await
}

#[tokio::test]
async fn existing_secret_becomes_the_default_token_file() -> Result<()> {
    let namespace = restricted_namespace("chart-secret").await?;
    let rendered = render(
        &namespace,
        &json!({
            "beeos": {
                "url": "https://beeos.example.com",
                "existingSecret": "beeos-credentials",
                "existingSecretKey": "api-key",
            },
            "logFormat": "json",
            "concurrency": 4,
            "image": {"repository": "registry.example.com/platform/beeos-operator", "tag": "1.2.3"},
        }),
    )
    .await?;

    assert!(
        rendered.all("Secret").is_empty(),
        "the chart makes no Secret"
    );
    let pod = &rendered.one("Deployment")?["spec"]["template"]["spec"];
    assert_eq!(
        pod["volumes"],
        json!([{"name": "beeos-token", "secret": {
            "secretName": "beeos-credentials",
            "items": [{"key": "api-key", "path": "token"}],
            "defaultMode": 0o440,
        }}])
    );
    let container = rendered.container()?;
    assert_eq!(
        container["volumeMounts"][0]["mountPath"],
        "/var/run/secrets/beeos.ai"
    );
    assert_eq!(
        rendered.env("BEEOS_TOKEN_FILE")?.as_deref(),
        Some("/var/run/secrets/beeos.ai/token")
    );
    assert_eq!(
        rendered.env("BEEOS_URL")?.as_deref(),
        Some("https://beeos.example.com")
    );
    assert_eq!(rendered.env("LOG_FORMAT")?.as_deref(), Some("json"));
    assert_eq!(rendered.env("CONCURRENCY")?.as_deref(), Some("4"));
    assert_eq!(
        container["image"],
        "registry.example.com/platform/beeos-operator:1.2.3"
    );
    server_dry_run(&rendered).await
}

#[tokio::test]
async fn demo_token_value_becomes_a_secret_the_chart_owns() -> Result<()> {
    let namespace = restricted_namespace("chart-demo-token").await?;
    let rendered = render(&namespace, &json!({"beeos": {"token": TEAM_A_TOKEN}})).await?;

    let secret: Secret = serde_json::from_value(rendered.one("Secret")?.clone())?;
    let token = secret.data.unwrap_or_default().remove("token");
    assert_eq!(token.map(|t| t.0), Some(TEAM_A_TOKEN.as_bytes().to_vec()));
    let secret_name = secret.metadata.name.unwrap_or_default();
    let pod = &rendered.one("Deployment")?["spec"]["template"];
    assert_eq!(
        pod["spec"]["volumes"][0]["secret"]["secretName"],
        secret_name
    );
    assert!(
        pod["metadata"]["annotations"]["checksum/token"].is_string(),
        "a new token rolls the pod"
    );
    server_dry_run(&rendered).await
}

#[tokio::test]
async fn service_monitor_renders_for_the_metrics_service() -> Result<()> {
    // A stand-in for the Prometheus Operator's CRD (a bare API server has none): the same group,
    // kind and scope, and a schema for the fields the chart sets, so the server still rejects
    // unknown or misplaced fields. The real CRD's full schema is not checked here.
    let crd: CustomResourceDefinition = serde_json::from_value(json!({
        "apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
        "metadata": {"name": "servicemonitors.monitoring.coreos.com"},
        "spec": {
            "group": "monitoring.coreos.com",
            "names": {"kind": "ServiceMonitor", "listKind": "ServiceMonitorList",
                      "plural": "servicemonitors", "singular": "servicemonitor"},
            "scope": "Namespaced",
            "versions": [{"name": "v1", "served": true, "storage": true, "schema": {
                "openAPIV3Schema": {"type": "object", "properties": {"spec": {
                    "type": "object",
                    "required": ["selector"],
                    "properties": {
                        "selector": {"type": "object",
                                     "x-kubernetes-preserve-unknown-fields": true},
                        "namespaceSelector": {"type": "object", "properties": {
                            "any": {"type": "boolean"},
                            "matchNames": {"type": "array", "items": {"type": "string"}},
                        }},
                        "endpoints": {"type": "array", "items": {"type": "object", "properties": {
                            "port": {"type": "string"},
                            "path": {"type": "string"},
                            "honorLabels": {"type": "boolean"},
                            "interval": {"type": "string",
                                         "pattern": "^(0|(([0-9]+)y)?(([0-9]+)w)?(([0-9]+)d)?(([0-9]+)h)?(([0-9]+)m)?(([0-9]+)s)?(([0-9]+)ms)?)$"},
                            "scrapeTimeout": {"type": "string",
                                              "pattern": "^(0|(([0-9]+)y)?(([0-9]+)w)?(([0-9]+)d)?(([0-9]+)h)?(([0-9]+)m)?(([0-9]+)s)?(([0-9]+)ms)?)$"},
                        }}},
                    },
                }}},
            }}],
        },
    }))?;
    let crds: Api<CustomResourceDefinition> = Api::all(testenv::shared().admin_client());
    crds.patch(
        &crd.name_any(),
        &PatchParams::apply("beeos-chart-tests").force(),
        &Patch::Apply(&crd),
    )
    .await?;
    tokio::time::timeout(
        DEADLINE,
        await_condition(crds, &crd.name_any(), conditions::is_crd_established()),
    )
    .await
    .context("the ServiceMonitor CRD was not established in time")??;

    let namespace = restricted_namespace("chart-monitor").await?;
    let rendered = render(
        &namespace,
        &json!({"metrics": {"serviceMonitor": {
            "enabled": true, "interval": "15s", "labels": {"release": "prometheus"},
        }}}),
    )
    .await?;
    let monitor = rendered.one("ServiceMonitor")?;
    let service = rendered.one("Service")?;
    // The monitor selects the metrics Service, by labels it has, on the port it names.
    let selector = monitor["spec"]["selector"]["matchLabels"]
        .as_object()
        .context("a matchLabels selector")?;
    for (key, value) in selector {
        assert_eq!(&service["metadata"]["labels"][key], value, "label {key}");
    }
    assert_eq!(
        monitor["spec"]["endpoints"][0]["port"],
        service["spec"]["ports"][0]["name"]
    );
    assert_eq!(monitor["spec"]["endpoints"][0]["path"], "/metrics");
    assert_eq!(monitor["spec"]["endpoints"][0]["interval"], "15s");
    // The alerts and the dashboard group by the resources' namespace label, which the scrape
    // keeps only when it honours the target's labels.
    assert_eq!(monitor["spec"]["endpoints"][0]["honorLabels"], true);
    assert_eq!(monitor["metadata"]["labels"]["release"], "prometheus");
    server_dry_run(&rendered).await
}

#[tokio::test]
async fn network_policy_option_renders_a_policy_the_api_server_accepts() -> Result<()> {
    let namespace = restricted_namespace("chart-netpol").await?;
    let rendered = render(
        &namespace,
        &json!({"networkPolicy": {
            "enabled": true,
            "metricsFrom": [{"namespaceSelector": {"matchLabels": {"name": "monitoring"}}}],
            "apiServer": {"cidrs": ["10.200.0.1/32"], "port": 6443},
            "beeos": {"cidrs": ["0.0.0.0/0"], "port": 443},
        }}),
    )
    .await?;
    let policy = rendered.one("NetworkPolicy")?;
    assert_eq!(
        policy["spec"]["podSelector"]["matchLabels"],
        rendered.one("Deployment")?["spec"]["selector"]["matchLabels"]
    );
    assert_eq!(policy["spec"]["policyTypes"], json!(["Ingress", "Egress"]));
    // In: only the metrics and probe port, from the named peers.
    assert_eq!(
        policy["spec"]["ingress"],
        json!([{
            "ports": [{"port": "metrics", "protocol": "TCP"}],
            "from": [{"namespaceSelector": {"matchLabels": {"name": "monitoring"}}}],
        }])
    );
    // Out: the API server, BeeOS, DNS; nothing else.
    let egress = policy["spec"]["egress"].as_array().context("egress")?;
    assert_eq!(egress.len(), 3, "{egress:?}");
    assert_eq!(
        egress[0]["to"],
        json!([{"ipBlock": {"cidr": "10.200.0.1/32"}}])
    );
    assert_eq!(
        egress[0]["ports"],
        json!([{"port": 6443, "protocol": "TCP"}])
    );
    assert_eq!(
        egress[1]["ports"],
        json!([{"port": 443, "protocol": "TCP"}])
    );
    assert_eq!(egress[2]["ports"][0]["port"], 53);
    server_dry_run(&rendered).await?;

    // Without the API server's address the policy would cut the operator off: refused.
    let values = values_file(
        &format!("{namespace}-no-api"),
        &json!({"networkPolicy": {"enabled": true}}),
    )?;
    let refused = helm(&["template", RELEASE, &chart_path(), "--values", &values])
        .await?
        .failed()?;
    assert!(
        refused.stderr.contains("networkPolicy.apiServer.cidrs"),
        "{}",
        refused.stderr
    );
    Ok(())
}

#[tokio::test]
async fn several_replicas_need_leader_election_and_one_replica_gets_no_budget() -> Result<()> {
    let namespace = restricted_namespace("chart-replicas").await?;
    let values = values_file(
        &namespace,
        &json!({"replicas": 3, "leaderElection": {"enabled": false}}),
    )?;
    let refused = helm(&["template", RELEASE, &chart_path(), "--values", &values])
        .await?
        .failed()?;
    assert!(
        refused.stderr.contains("leaderElection.enabled"),
        "{}",
        refused.stderr
    );

    let single = render(
        &namespace,
        &json!({"replicas": 1, "leaderElection": {"enabled": false}}),
    )
    .await?;
    assert!(single.all("PodDisruptionBudget").is_empty());
    assert!(single.all("Role").is_empty(), "no Lease, no Role for it");
    assert_eq!(
        single.one("Deployment")?["spec"]["strategy"],
        json!({"type": "Recreate"})
    );
    assert_eq!(single.env("LEADER_ELECT")?, None);
    server_dry_run(&single).await
}

#[tokio::test]
async fn restricted_pod_security_admits_the_operator_pod_and_not_a_weakened_one() -> Result<()> {
    let namespace = restricted_namespace("chart-pss").await?;
    let pods: Api<Pod> = Api::namespaced(testenv::shared().admin_client(), &namespace);
    // Pod Security is enforced on Pods (workloads only get warnings), so the check makes the
    // Pod the Deployment would make, as a server-side dry run.
    let pod_from = |rendered: &Rendered| -> Result<Pod> {
        let template = &rendered.one("Deployment")?["spec"]["template"];
        Ok(serde_json::from_value(json!({
            "metadata": {"name": "operator", "labels": template["metadata"]["labels"]},
            "spec": template["spec"],
        }))?)
    };
    let dry_run = PostParams {
        dry_run: true,
        ..Default::default()
    };

    let rendered = render(&namespace, &json!({})).await?;
    pods.create(&dry_run, &pod_from(&rendered)?).await?;

    // The same check refuses the chart's Pod without its container security context.
    // (null removes a default in Helm; an empty map would merge with it.)
    let weakened = render(&namespace, &json!({"securityContext": null})).await?;
    match pods.create(&dry_run, &pod_from(&weakened)?).await {
        Err(kube::Error::Api(status)) if status.code == 403 => {
            assert!(status.message.contains("PodSecurity"), "{}", status.message);
        }
        Err(other) => bail!("expected 403 Forbidden by Pod Security, got {other}"),
        Ok(_) => bail!("the Pod without a container security context was admitted"),
    }
    Ok(())
}

#[tokio::test]
async fn values_schema_rejects_bad_values_with_messages_naming_them() -> Result<()> {
    let cases = [
        (
            json!({"logFormat": "xml"}),
            "at '/logFormat': value must be one of 'text', 'json'",
        ),
        (
            json!({"image": {"repository": ""}}),
            "at '/image/repository': minLength",
        ),
        (
            json!({"concurrency": "lots"}),
            "at '/concurrency': got string, want integer",
        ),
        (
            json!({"watchNamespaces": "team-a"}),
            "at '/watchNamespaces': got string, want array",
        ),
        (
            json!({"watchNamespaces": ["Team_A"]}),
            "at '/watchNamespaces/0': 'Team_A' does not match pattern",
        ),
        (
            json!({"poll": {"steady": "fast"}}),
            "at '/poll/steady': 'fast' does not match pattern",
        ),
        (
            json!({"metrics": {"serviceMonitor": {"enabled": "yes"}}}),
            "at '/metrics/serviceMonitor/enabled': got string, want boolean",
        ),
        (
            json!({"replicaCount": 2}),
            "additional properties 'replicaCount' not allowed",
        ),
        (
            json!({"beeos": {"existingSecret": "beeos-credentials", "token": TEAM_A_TOKEN}}),
            "beeos.existingSecret and beeos.token are both set",
        ),
    ];
    for (index, (values, message)) in cases.iter().enumerate() {
        let file = values_file(&format!("bad-{index}"), values)?;
        let run = helm(&["template", RELEASE, &chart_path(), "--values", &file])
            .await?
            .failed()?;
        assert!(
            run.stderr.contains(message),
            "values {values}: expected {message:?} in:\n{}",
            run.stderr
        );
        assert!(
            !run.stderr.contains(TEAM_A_TOKEN),
            "the error quotes the token"
        );
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Tests: installed

#[tokio::test]
async fn cluster_wide_install_creates_the_crd_and_the_operator_objects() -> Result<()> {
    let namespace = cluster_install().await?;
    let admin = testenv::shared().admin_client();

    let status = helm(&[
        "status",
        RELEASE,
        "--namespace",
        namespace,
        "--output",
        "json",
    ])
    .await?
    .ok()?;
    let status: Value = serde_json::from_str(&status.stdout)?;
    assert_eq!(status["info"]["status"], "deployed");

    // crds/ is not part of the release: Helm never upgrades or deletes it.
    let crd = Api::<CustomResourceDefinition>::all(admin.clone())
        .get(CRD_NAME)
        .await?;
    assert!(
        !crd.annotations().contains_key("meta.helm.sh/release-name"),
        "{:?}",
        crd.annotations()
    );

    let deployment = Api::<Deployment>::namespaced(admin.clone(), namespace)
        .get(RELEASE)
        .await?;
    let pod = deployment
        .spec
        .and_then(|s| s.template.spec)
        .context("a pod template")?;
    assert_eq!(pod.service_account_name.as_deref(), Some(RELEASE));
    let container = &pod.containers[0];
    let security = container.security_context.clone().unwrap_or_default();
    assert_eq!(security.read_only_root_filesystem, Some(true));
    assert_eq!(security.allow_privilege_escalation, Some(false));
    Api::<ServiceAccount>::namespaced(admin.clone(), namespace)
        .get(RELEASE)
        .await?;
    Api::<Service>::namespaced(admin.clone(), namespace)
        .get(&format!("{RELEASE}-metrics"))
        .await?;
    let role = Api::<ClusterRole>::all(admin.clone()).get(RELEASE).await?;
    assert_eq!(serde_json::to_value(&role.rules)?, operator_rules());
    let binding = Api::<ClusterRoleBinding>::all(admin.clone())
        .get(RELEASE)
        .await?;
    let subject = &binding.subjects.unwrap_or_default()[0];
    assert_eq!(
        (subject.name.as_str(), subject.namespace.as_deref()),
        (RELEASE, Some(namespace))
    );
    Ok(())
}

#[tokio::test]
async fn operator_with_the_cluster_wide_service_account_takes_instances_through_their_life()
-> Result<()> {
    let release_namespace = cluster_install().await?;
    let _instances = INSTANCES.lock().await;
    let mut env = Env::without_operator("chart-e2e-cluster").await?;
    // Watch every namespace, as the cluster-wide install does.
    happy_path_as(&mut env, release_namespace, &["--namespaces", ""]).await
}

#[tokio::test]
async fn operator_with_a_namespaced_service_account_takes_instances_through_their_life()
-> Result<()> {
    cluster_install().await?;
    let _instances = INSTANCES.lock().await;
    let mut env = Env::without_operator("chart-e2e-scoped").await?;
    let release_namespace = restricted_namespace("chart-scoped-system").await?;
    helm_install(
        &release_namespace,
        &json!({"watchNamespaces": [env.namespace]}),
    )
    .await?;
    assert!(
        Api::<Role>::namespaced(env.client.clone(), &env.namespace)
            .get_opt(RELEASE)
            .await?
            .is_some()
    );
    // The operator watches exactly the test's namespace, as WATCH_NAMESPACES would say.
    happy_path_as(&mut env, &release_namespace, &[]).await
}

#[tokio::test]
async fn cluster_wide_service_account_may_do_only_what_the_operator_does() -> Result<()> {
    let release_namespace = cluster_install().await?;
    let control_plane = testenv::shared();
    let operator = control_plane
        .service_account_client(release_namespace, RELEASE)
        .await?;
    let bi = "beeosinstances.beeos.ai";
    let any = "";
    let some = "team-x";
    assert_access(
        &operator,
        &[
            (true, "get", bi, some),
            (true, "list", bi, any),
            (true, "watch", bi, any),
            (true, "patch", bi, some),
            (true, "patch", "beeosinstances.beeos.ai/status", some),
            (true, "get", "secrets", some),
            (true, "list", "secrets", any),
            (true, "watch", "secrets", some),
            (true, "patch", "secrets", some),
            (true, "create", "events.events.k8s.io", some),
            (false, "patch", "events.events.k8s.io", some),
            // The operator never creates, replaces or deletes a BeeosInstance.
            (false, "create", bi, some),
            (false, "update", bi, some),
            (false, "delete", bi, some),
            (false, "deletecollection", bi, some),
            (false, "update", "beeosinstances.beeos.ai/status", some),
            // Secrets are never created, replaced or deleted (patches are confined by the
            // chart's admission policy, see the test below).
            (false, "create", "secrets", some),
            (false, "update", "secrets", some),
            (false, "delete", "secrets", some),
            (false, "list", "pods", any),
            (true, "get", "configmaps", some),
            (false, "list", "configmaps", any),
            (false, "create", "events", some),
            (false, "list", "namespaces", any),
            (
                false,
                "create",
                "customresourcedefinitions.apiextensions.k8s.io",
                any,
            ),
            (false, "create", "leases.coordination.k8s.io", some),
        ],
    )
    .await?;

    // And the API server refuses the calls themselves.
    let namespace = control_plane.namespace("chart-cluster-denied").await?;
    assert!(is_forbidden(
        &beeos_instances(operator.clone(), &namespace)
            .create(&PostParams::default(), &catalog_instance()?)
            .await
    ));
    Ok(())
}

/// RBAC can only grant "patch" on whole Secrets; the chart's ValidatingAdmissionPolicy confines
/// the operator's patches to its own label and in-use finalizer.
#[tokio::test]
async fn the_operator_may_change_nothing_on_a_secret_but_its_label_and_finalizer() -> Result<()> {
    let release_namespace = cluster_install().await?;
    let control_plane = testenv::shared();
    let namespace = control_plane.namespace("chart-secret-policy").await?;
    let admin: Api<Secret> = Api::namespaced(control_plane.admin_client(), &namespace);
    let secret: Secret = serde_json::from_value(json!({
        "metadata": {"name": "team-token", "labels": {"team": "a"}, "finalizers": ["example.com/keep"]},
        "stringData": {"token": "oag_value"},
    }))?;
    admin.create(&PostParams::default(), &secret).await?;
    let operator: Api<Secret> = Api::namespaced(
        control_plane
            .service_account_client(release_namespace, RELEASE)
            .await?,
        &namespace,
    );
    let patch = |value: Value| Patch::Merge(value);
    let params = PatchParams::default();
    // The policy reaches the API server a moment after the install: wait for its first denial.
    let deadline = tokio::time::Instant::now() + DEADLINE;
    loop {
        let changed_data = operator
            .patch(
                "team-token",
                &params,
                &patch(json!({"stringData": {"token": "oag_other"}})),
            )
            .await;
        match changed_data {
            Err(kube::Error::Api(status)) => {
                assert!(
                    status.message.contains("may not change a Secret's data"),
                    "{}",
                    status.message
                );
                break;
            }
            Err(err) => return Err(err.into()),
            Ok(_) => {
                // Not enforced yet: undo and look again.
                admin
                    .patch(
                        "team-token",
                        &params,
                        &patch(json!({"stringData": {"token": "oag_value"}})),
                    )
                    .await?;
                ensure!(
                    tokio::time::Instant::now() < deadline,
                    "the policy never denied"
                );
                tokio::time::sleep(std::time::Duration::from_millis(200)).await;
            }
        }
    }
    // Its own label and finalizer: allowed.
    operator
        .patch(
            "team-token",
            &params,
            &patch(json!({"metadata": {
                "labels": {"beeos.ai/referenced": "true"},
                "finalizers": ["example.com/keep", "beeos.ai/in-use"],
            }})),
        )
        .await?;
    // Anything else: denied.
    for (change, message) in [
        (
            json!({"metadata": {"labels": {"team": "b"}}}),
            "only its own label",
        ),
        (
            json!({"metadata": {"annotations": {"x": "y"}}}),
            "annotations",
        ),
        (
            json!({"metadata": {"finalizers": ["beeos.ai/in-use"]}}),
            "only its own finalizer",
        ),
    ] {
        let refused = operator.patch("team-token", &params, &patch(change)).await;
        match refused {
            Err(kube::Error::Api(status)) => {
                assert!(status.message.contains(message), "{}", status.message)
            }
            other => bail!("not refused: {other:?}"),
        }
    }
    let kept = admin.get("team-token").await?;
    assert_eq!(kept.labels().get("team").map(String::as_str), Some("a"));
    // Let the namespace go when the test control plane does.
    admin
        .patch(
            "team-token",
            &params,
            &patch(json!({"metadata": {"finalizers": null}})),
        )
        .await?;
    Ok(())
}

#[tokio::test]
async fn namespaced_service_account_cannot_reach_beyond_its_namespaces() -> Result<()> {
    cluster_install().await?;
    let control_plane = testenv::shared();
    let watched = control_plane.namespace("chart-watched").await?;
    let other = control_plane.namespace("chart-other").await?;
    let release_namespace = restricted_namespace("chart-least-system").await?;
    // With a demo token, so the release namespace holds a Secret the operator must not read.
    helm_install(
        &release_namespace,
        &json!({"watchNamespaces": [watched], "beeos": {"token": TEAM_A_TOKEN}}),
    )
    .await?;
    let operator = control_plane
        .service_account_client(&release_namespace, RELEASE)
        .await?;
    let bi = "beeosinstances.beeos.ai";
    let w = watched.as_str();
    let o = other.as_str();
    let r = release_namespace.as_str();
    assert_access(
        &operator,
        &[
            (true, "list", bi, w),
            (true, "watch", bi, w),
            (true, "patch", bi, w),
            (true, "patch", "beeosinstances.beeos.ai/status", w),
            (true, "get", "secrets", w),
            (true, "list", "secrets", w),
            (true, "watch", "secrets", w),
            (true, "patch", "secrets", w),
            (true, "create", "events.events.k8s.io", w),
            (false, "patch", "events.events.k8s.io", w),
            (false, "create", bi, w),
            (false, "delete", bi, w),
            (false, "delete", "secrets", w),
            (false, "list", "pods", w),
            // Nothing outside the watched namespaces: not the others, not its own, not all.
            (false, "list", bi, o),
            (false, "patch", bi, o),
            (false, "get", "secrets", o),
            (false, "list", "secrets", o),
            (false, "create", "events.events.k8s.io", o),
            (false, "get", "secrets", r),
            (false, "list", bi, r),
            (false, "list", bi, ""),
            (false, "get", "secrets", ""),
        ],
    )
    .await?;

    for namespace in [w, o] {
        create_secret(namespace, "team-token").await?;
    }
    let secrets = |namespace: &str| Api::<Secret>::namespaced(operator.clone(), namespace);
    secrets(w).get("team-token").await?;
    assert!(is_forbidden(&secrets(o).get("team-token").await));
    assert!(is_forbidden(
        &secrets(r).get(&format!("{RELEASE}-token")).await
    ));
    assert!(is_forbidden(&secrets(o).list(&ListParams::default()).await));
    assert!(is_forbidden(
        &Api::<Pod>::namespaced(operator.clone(), w)
            .list(&ListParams::default())
            .await
    ));
    assert!(is_forbidden(
        &beeos_instances(operator.clone(), w)
            .create(&PostParams::default(), &catalog_instance()?)
            .await
    ));
    beeos_instances(operator.clone(), w)
        .list(&ListParams::default())
        .await?;
    Ok(())
}

#[tokio::test]
async fn uninstall_removes_the_operator_and_keeps_the_crd_and_instances() -> Result<()> {
    cluster_install().await?;
    let _instances = INSTANCES.lock().await;
    let control_plane = testenv::shared();
    let admin = control_plane.admin_client();
    let watched = control_plane.namespace("chart-uninstall").await?;
    let release_namespace = restricted_namespace("chart-uninstall-system").await?;
    helm_install(&release_namespace, &json!({"watchNamespaces": [watched]})).await?;
    beeos_instances(admin.clone(), &watched)
        .create(&PostParams::default(), &catalog_instance()?)
        .await?;

    helm(&["uninstall", RELEASE, "--namespace", &release_namespace])
        .await?
        .ok()?;

    let deployments = Api::<Deployment>::namespaced(admin.clone(), &release_namespace);
    let accounts = Api::<ServiceAccount>::namespaced(admin.clone(), &release_namespace);
    let roles = Api::<Role>::namespaced(admin.clone(), &watched);
    let bindings = Api::<RoleBinding>::namespaced(admin.clone(), &watched);
    let started = tokio::time::Instant::now();
    loop {
        let left = [
            deployments.get_opt(RELEASE).await?.is_some(),
            accounts.get_opt(RELEASE).await?.is_some(),
            roles.get_opt(RELEASE).await?.is_some(),
            bindings.get_opt(RELEASE).await?.is_some(),
        ];
        if left == [false; 4] {
            break;
        }
        ensure!(
            started.elapsed() < DEADLINE,
            "still there after uninstall (Deployment, ServiceAccount, Role, RoleBinding): {left:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Api::<CustomResourceDefinition>::all(admin.clone())
        .get(CRD_NAME)
        .await
        .context("uninstall deleted the CRD")?;
    let instances = beeos_instances(admin, &watched);
    instances
        .get("not-yours")
        .await
        .context("uninstall deleted a BeeosInstance")?;
    instances
        .delete("not-yours", &DeleteParams::default())
        .await?;
    Ok(())
}
