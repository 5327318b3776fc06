//! Fixtures for end-to-end tests: the shared control plane with our CRD, a BeeOS simulator per
//! test, and the real operator binary watching only the test's namespace.
// Each test binary uses its own subset of these helpers.
#![allow(dead_code)]

use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use beeos_operator::crd::{BeeosInstance, condition};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::api::{Api, DynamicObject, Patch, PatchParams};
use kube::runtime::wait::{await_condition, conditions};
use kube::{Client, ResourceExt};
use serde_json::Value;
use testenv::{ControlPlane, Supervised};
use tokio::sync::OnceCell;

/// The default credential the operator gets in tests (owner `team-a` in the simulator).
pub const TEAM_A_TOKEN: &str =
    "oag_00000000000000000000000000000000000000000000000000000000000000a1";
/// A second token of owner `team-a` (several keys of one BeeOS account).
pub const TEAM_A_SECOND_TOKEN: &str =
    "oag_00000000000000000000000000000000000000000000000000000000000000a2";
/// The token in `examples/namespace-credentials.yaml` (owner `team-b`).
pub const TEAM_B_TOKEN: &str =
    "oag_00000000000000000000000000000000000000000000000000000000000000b2";

/// How long any single wait may take before the test fails.
pub const DEADLINE: Duration = Duration::from_secs(60);

pub fn repo_path(relative: &str) -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(relative)
}

/// Applies `crds/` to the shared control plane once per test binary.
pub async fn ensure_crd(client: &Client) -> Result<()> {
    static APPLIED: OnceCell<()> = OnceCell::const_new();
    APPLIED
        .get_or_try_init(|| async {
            let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
            let yaml = std::fs::read_to_string(repo_path("crds/beeos.ai_beeosinstances.yaml"))?;
            let crd: CustomResourceDefinition = serde_yaml_ng::from_str(&yaml)?;
            let name = crd.name_any();
            crds.patch(
                &name,
                &PatchParams::apply("beeos-tests").force(),
                &Patch::Apply(&crd),
            )
            .await?;
            tokio::time::timeout(
                DEADLINE,
                await_condition(crds, &name, conditions::is_crd_established()),
            )
            .await
            .context("the CRD was not established in time")??;
            anyhow::Ok(())
        })
        .await?;
    Ok(())
}

/// One test's world: a namespace, a simulator and (usually) an operator.
pub struct Env {
    pub control_plane: &'static ControlPlane,
    pub client: Client,
    pub namespace: String,
    pub sim: beeos_sim::Simulator,
    pub http: reqwest::Client,
    operator: Option<Supervised>,
}

impl Env {
    /// A namespace and a simulator knowing `team-a` and `team-b`, with the operator running.
    pub async fn start(name: &str) -> Result<Env> {
        let mut env = Env::without_operator(name).await?;
        env.start_operator(&[])?;
        Ok(env)
    }

    /// Like [`Env::start`], but the operator is left to the test.
    pub async fn without_operator(name: &str) -> Result<Env> {
        let control_plane = testenv::shared();
        let client = control_plane.admin_client();
        ensure_crd(&client).await?;
        let namespace = control_plane.namespace(name).await?;
        let sim = beeos_sim::Simulator::start(
            beeos_sim::SimConfig::default()
                .with_token(TEAM_A_TOKEN, "team-a")
                .with_token(TEAM_A_SECOND_TOKEN, "team-a")
                .with_token(TEAM_B_TOKEN, "team-b"),
        )
        .await?;
        Ok(Env {
            control_plane,
            client,
            namespace,
            sim,
            http: reqwest::Client::new(),
            operator: None,
        })
    }

    /// Starts the operator binary on this namespace with fast test intervals; `extra` flags
    /// replace the defaults they name.
    pub fn start_operator(&mut self, extra: &[&str]) -> Result<()> {
        let kubeconfig = self.control_plane.kubeconfig_path();
        self.operator = Some(self.spawn_operator(&kubeconfig, extra)?);
        Ok(())
    }

    /// Like [`Env::start_operator`], but the operator acts as whoever `kubeconfig` names (e.g. a
    /// ServiceAccount, see [`service_account_kubeconfig`]) instead of the cluster admin.
    pub fn start_operator_with_kubeconfig(
        &mut self,
        kubeconfig: &Path,
        extra: &[&str],
    ) -> Result<()> {
        self.operator = Some(self.spawn_operator(kubeconfig, extra)?);
        Ok(())
    }

    /// Another operator process on the same namespace, stopped when the handle drops. All
    /// operators of a test log to the same file.
    pub fn spawn_operator(&self, kubeconfig: &Path, extra: &[&str]) -> Result<Supervised> {
        let mut args: Vec<String> = [
            "--beeos-url",
            &self.sim.base_url(),
            "--namespaces",
            &self.namespace,
            "--transition-poll",
            "200ms",
            "--steady-poll",
            "5s",
            "--min-backoff",
            "200ms",
            "--max-backoff",
            "2s",
            "--stalled-retry",
            "60s",
            "--probe-address",
            "127.0.0.1:0",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        // A flag in `extra` replaces the default (clap refuses a flag given twice).
        for pair in extra.chunks(2) {
            if let Some(at) = args.iter().position(|a| a == pair[0]) {
                args.drain(at..at + 2);
            }
        }
        args.extend(extra.iter().map(|s| s.to_string()));
        // BEEOS_OPERATOR_BIN runs the tests against another build (e.g. an older one, to see a
        // test fail without the change it covers).
        let binary = std::env::var_os("BEEOS_OPERATOR_BIN")
            .map(std::path::PathBuf::from)
            .unwrap_or_else(|| env!("CARGO_BIN_EXE_beeos-operator").into());
        Supervised::spawn(
            &binary,
            &args,
            &[
                ("KUBECONFIG", &kubeconfig.display().to_string()),
                ("BEEOS_TOKEN", TEAM_A_TOKEN),
                (
                    "RUST_LOG",
                    "info,beeos_operator=debug,beeos_operator::controller::fleet=trace",
                ),
            ],
            &self.operator_log_path(),
            None,
        )
    }

    /// Sends signal `name` (`STOP`, `CONT`, …) to the operator.
    pub fn signal_operator(&self, name: &str) -> Result<()> {
        self.operator
            .as_ref()
            .context("no operator is running")?
            .signal(name)
    }

    pub fn stop_operator(&mut self) {
        self.operator = None;
    }

    /// SIGKILLs the operator, as a crash would, and forgets it.
    pub fn kill_operator(&mut self) -> Result<()> {
        if let Some(operator) = self.operator.take() {
            operator.kill_hard()?;
        }
        Ok(())
    }

    pub fn operator_log_path(&self) -> std::path::PathBuf {
        self.control_plane
            .dir()
            .join(format!("operator-{}.log", self.namespace))
    }

    pub fn operator_log(&self) -> String {
        std::fs::read_to_string(self.operator_log_path()).unwrap_or_default()
    }

    pub fn api(&self) -> Api<BeeosInstance> {
        Api::namespaced(self.client.clone(), &self.namespace)
    }

    /// Server-side applies every document of an example file into the test namespace.
    pub async fn apply_example(&self, file: &str) -> Result<()> {
        let yaml = std::fs::read_to_string(repo_path(&format!("examples/{file}")))?;
        for document in serde_yaml_ng::Deserializer::from_str(&yaml) {
            let object: DynamicObject = serde::Deserialize::deserialize(document)?;
            self.apply(object).await?;
        }
        Ok(())
    }

    /// Server-side applies one object (of any kind) into the test namespace.
    pub async fn apply(&self, object: DynamicObject) -> Result<()> {
        let types = object
            .types
            .clone()
            .context("the object has no apiVersion/kind")?;
        let (group, version) = match types.api_version.split_once('/') {
            Some((group, version)) => (group, version),
            None => ("", types.api_version.as_str()),
        };
        let gvk = kube::api::GroupVersionKind::gvk(group, version, &types.kind);
        let (resource, _) = kube::discovery::pinned_kind(&self.client, &gvk).await?;
        let api: Api<DynamicObject> =
            Api::namespaced_with(self.client.clone(), &self.namespace, &resource);
        api.patch(
            &object.name_any(),
            &PatchParams::apply("beeos-tests").force(),
            &Patch::Apply(&object),
        )
        .await?;
        Ok(())
    }

    /// Waits until `name` satisfies `check`, or fails after [`DEADLINE`] with the last state
    /// and the operator's log.
    pub async fn wait_for(
        &self,
        name: &str,
        what: &str,
        check: impl Fn(&BeeosInstance) -> bool,
    ) -> Result<BeeosInstance> {
        let api = self.api();
        let started = tokio::time::Instant::now();
        let mut last = None;
        while started.elapsed() < DEADLINE {
            if let Some(resource) = api.get_opt(name).await? {
                if check(&resource) {
                    return Ok(resource);
                }
                last = Some(resource);
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        bail!(
            "{name} was not {what} within {DEADLINE:?}; last seen: {}\n--- operator log ---\n{}",
            serde_json::to_string_pretty(&last).unwrap_or_default(),
            tail(&self.operator_log(), 40)
        )
    }

    /// Waits until `name` no longer exists.
    pub async fn wait_gone(&self, name: &str) -> Result<()> {
        let api = self.api();
        let started = tokio::time::Instant::now();
        while started.elapsed() < DEADLINE {
            if api.get_opt(name).await?.is_none() {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        bail!(
            "{name} still exists after {DEADLINE:?}\n--- operator log ---\n{}",
            tail(&self.operator_log(), 40)
        )
    }

    async fn sim_admin(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> Result<Value> {
        let mut request = self
            .http
            .request(method, format!("{}/_sim/{path}", self.sim.base_url()));
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await?.error_for_status()?;
        let text = response.text().await?;
        Ok(if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text)?
        })
    }

    /// Waits until a deploy has reached the simulator (whether or not it answered).
    pub async fn wait_for_deploy_at_beeos(&self) -> Result<()> {
        let started = tokio::time::Instant::now();
        while self.sim_instances().await?.is_empty() {
            if started.elapsed() > DEADLINE {
                bail!("no deploy reached BeeOS within {DEADLINE:?}");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Ok(())
    }

    /// The simulator's whole instance table (terminated ones included).
    pub async fn sim_instances(&self) -> Result<Vec<Value>> {
        let table = self
            .sim_admin(reqwest::Method::GET, "instances", None)
            .await?;
        Ok(table["instances"].as_array().cloned().unwrap_or_default())
    }

    /// The simulator's instance with `id`.
    pub async fn sim_instance(&self, id: &str) -> Result<Value> {
        self.sim_instances()
            .await?
            .into_iter()
            .find(|i| i["id"] == id)
            .with_context(|| format!("the simulator has no instance {id}"))
    }

    /// Calls the simulator received, by route (`deploy`, `get`, `start`, …).
    pub async fn sim_calls(&self, route: &str) -> Result<u64> {
        let calls = self.sim_admin(reqwest::Method::GET, "calls", None).await?;
        Ok(calls["routes"][route].as_u64().unwrap_or(0))
    }

    /// Calls the simulator admitted with `token` on `route`.
    pub async fn sim_calls_with(&self, token: &str, route: &str) -> Result<u64> {
        let calls = self.sim_admin(reqwest::Method::GET, "calls", None).await?;
        Ok(calls["byToken"][token][route].as_u64().unwrap_or(0))
    }

    pub async fn sim_total_calls(&self) -> Result<u64> {
        let calls = self.sim_admin(reqwest::Method::GET, "calls", None).await?;
        Ok(calls["total"].as_u64().unwrap_or(0))
    }

    pub async fn set_sim_faults(&self, faults: Value) -> Result<()> {
        self.sim_admin(reqwest::Method::PUT, "faults", Some(faults))
            .await
            .map(drop)
    }

    pub async fn set_sim_settings(&self, settings: Value) -> Result<()> {
        self.sim_admin(reqwest::Method::PUT, "settings", Some(settings))
            .await
            .map(drop)
    }
}

/// The ownership judge, from the simulator's table: every resource owns exactly one alive
/// instance (none destroyed that a resource owns), no alive instance is unowned, and no two
/// resources record the same one.
pub async fn assert_exactly_one_instance_each(env: &Env, names: &[String]) -> Result<()> {
    let mut owned = std::collections::BTreeMap::new();
    for name in names {
        let resource = env.api().get(name).await?;
        let id = instance_id(&resource).with_context(|| format!("{name} has no instance id"))?;
        anyhow::ensure!(
            owned.insert(id.clone(), name.clone()).is_none(),
            "{id} owned twice"
        );
    }
    let table = env.sim_instances().await?;
    let is_alive = |i: &Value| i["status"] != "terminated" && i["desiredStatus"] != "terminated";
    for (id, name) in &owned {
        let instance = table
            .iter()
            .find(|i| i["id"] == id.as_str())
            .with_context(|| format!("{name}'s instance {id} is not in the table"))?;
        anyhow::ensure!(
            is_alive(instance),
            "{name}'s instance {id} was destroyed: {instance}"
        );
    }
    let alive: Vec<&Value> = table.iter().filter(|i| is_alive(i)).collect();
    for instance in &alive {
        let id = instance["id"].as_str().unwrap_or_default();
        anyhow::ensure!(
            owned.contains_key(id),
            "instance {id} ({}) is alive but no resource owns it",
            instance["name"]
        );
    }
    anyhow::ensure!(
        alive.len() == names.len(),
        "{} alive instances for {} resources",
        alive.len(),
        names.len()
    );
    Ok(())
}

/// Events in the test namespace with `reason`.
pub async fn events_with_reason(env: &Env, reason: &str) -> Result<usize> {
    let events = kube::Api::<k8s_openapi::api::events::v1::Event>::namespaced(
        env.client.clone(),
        &env.namespace,
    )
    .list(&Default::default())
    .await?;
    Ok(events
        .items
        .iter()
        .filter(|e| e.reason.as_deref() == Some(reason))
        .count())
}

/// A catalog `BeeosInstance` named `name`, ready to apply.
pub fn catalog_instance(name: &str) -> Result<DynamicObject> {
    Ok(serde_json::from_value(serde_json::json!({
        "apiVersion": "beeos.ai/v1alpha1", "kind": "BeeosInstance",
        "metadata": {"name": name},
        "spec": {"variantId": "beeos-claw-small"},
    }))?)
}

pub fn condition<'a>(resource: &'a BeeosInstance, type_: &str) -> Option<&'a Condition> {
    resource
        .status
        .as_ref()?
        .conditions
        .iter()
        .find(|c| c.type_ == type_)
}

pub fn has_condition(resource: &BeeosInstance, type_: &str, status: &str) -> bool {
    condition(resource, type_).is_some_and(|c| c.status == status)
}

/// Ready=True for the resource's current generation.
pub fn is_ready(resource: &BeeosInstance) -> bool {
    condition(resource, condition::READY).is_some_and(|c| {
        c.status == "True" && c.observed_generation == resource.metadata.generation
    })
}

pub fn instance_id(resource: &BeeosInstance) -> Option<String> {
    resource
        .annotations()
        .get(beeos_operator::crd::INSTANCE_ID_ANNOTATION)
        .cloned()
}

pub fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// Writes a kubeconfig for the control plane that acts as ServiceAccount `namespace/name` (a
/// fresh token from the TokenRequest API) and returns its path, for the operator binary and
/// kubectl. The ServiceAccount must exist.
pub async fn service_account_kubeconfig(
    control_plane: &ControlPlane,
    namespace: &str,
    name: &str,
) -> Result<std::path::PathBuf> {
    let token = control_plane.service_account_token(namespace, name).await?;
    // The admin kubeconfig with the token swapped: same server, same CA.
    let mut kubeconfig: Value =
        serde_json::from_str(&std::fs::read_to_string(control_plane.kubeconfig_path())?)?;
    kubeconfig["users"] = serde_json::json!([{"name": name, "user": {"token": token}}]);
    kubeconfig["contexts"][0]["context"]["user"] = Value::from(name);
    kubeconfig["contexts"][0]["context"]["namespace"] = Value::from(namespace);
    let path = control_plane
        .dir()
        .join(format!("kubeconfig-{namespace}-{name}"));
    std::fs::write(&path, kubeconfig.to_string())?;
    Ok(path)
}
