//! The operator as users run it. Leader election between operator processes, on the test
//! control plane; then its image and its chart on a real node (`tools/node`): the image agrees
//! with the Dockerfile and builds reproducibly; installed with Helm in a namespace enforcing
//! restricted Pod Security, two replicas become Ready (one leads, one stands by) and serve an
//! example; the leader's Pod deleted during a burst of deploys hands over without a duplicate or
//! a leak; `helm upgrade` rolls both Pods and the Lease moves to a new one in seconds; the
//! PodDisruptionBudget turns away an eviction; and each test ends by checking the containers'
//! memory (their cgroups) and that none restarted.
//!
//! Node tests need a machine that can run a node (root, overlay, the Debian packages, the node
//! binaries and the image: `make node-test` prepares them). Elsewhere they fail naming what is
//! missing when `CI=true`, and skip loudly otherwise. One node runs per machine, so they run
//! one at a time.

mod support;

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{Context, Result, bail, ensure};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Namespace, Pod};
use kube::api::{Api, DeleteParams, EvictParams, ListParams, Patch, PatchParams, PostParams};
use kube::{Client, ResourceExt};
use serde_json::{Value, json};
use support::{DEADLINE, Env, TEAM_A_TOKEN, catalog_instance, instance_id, is_ready, repo_path};
use testenv::node::{Node, NodeOptions};
use tokio::sync::Mutex;
use tokio::time::Instant;

const RELEASE: &str = "beeos-operator";
const LEASE: &str = "beeos-operator";
/// Node tests share one node and its CPU: one at a time.
static ON_THE_NODE: Mutex<()> = Mutex::const_new(());
/// How long a Pod may take to start and become Ready on a loaded machine.
const POD_DEADLINE: Duration = Duration::from_secs(180);

// ---------------------------------------------------------------------------------------------
// Leader election between operator processes (the test control plane; no node needed)

/// An operator process started directly, so its exit status can be read; killed when dropped.
struct Operator {
    child: Child,
    probe: String,
    log: PathBuf,
}

impl Drop for Operator {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Operator {
    fn start(env: &Env, name: &str, extra: &[&str]) -> Result<Operator> {
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        let probe = format!("127.0.0.1:{port}");
        let log = env
            .control_plane
            .dir()
            .join(format!("operator-{}-{name}.log", env.namespace));
        let child = Command::new(env!("CARGO_BIN_EXE_beeos-operator"))
            .args([
                "--beeos-url",
                &env.sim.base_url(),
                "--namespaces",
                &env.namespace,
                "--transition-poll",
                "200ms",
                "--steady-poll",
                "5s",
                "--min-backoff",
                "200ms",
                "--max-backoff",
                "2s",
                "--probe-address",
                &probe,
                "--leader-elect",
                "--leader-election-namespace",
                &env.namespace,
                "--leader-election-lease-duration",
                "10s",
                "--leader-election-renew-interval",
                "2s",
                "--leader-election-retry-period",
                "500ms",
            ])
            .args(extra)
            .env("KUBECONFIG", env.control_plane.kubeconfig_path())
            .env("BEEOS_TOKEN", TEAM_A_TOKEN)
            .env("POD_NAME", name)
            .env("RUST_LOG", "info,beeos_operator=debug")
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(&log)?)
            .stderr(std::fs::File::options().append(true).open(&log)?)
            .spawn()?;
        Ok(Operator { child, probe, log })
    }

    async fn get(&self, path: &str) -> Result<(u16, String)> {
        let response = reqwest::get(format!("http://{}{path}", self.probe)).await?;
        Ok((response.status().as_u16(), response.text().await?))
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn terminate(&self) -> Result<()> {
        let status = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()?;
        ensure!(status.success(), "kill -TERM failed");
        Ok(())
    }

    /// Waits until the process has exited and returns its exit code.
    async fn exited(&mut self, within: Duration) -> Result<Option<i32>> {
        let deadline = Instant::now() + within;
        loop {
            if let Some(status) = self.child.try_wait()? {
                return Ok(status.code());
            }
            ensure!(
                Instant::now() < deadline,
                "still running after {within:?}:\n{}",
                support::tail(&self.log(), 30)
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// Polls `check` until it yields a value, failing with `what` after `within`.
async fn eventually<T, F, Fut>(what: &str, within: Duration, mut check: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<Option<T>>>,
{
    let deadline = Instant::now() + within;
    loop {
        if let Some(value) = check().await? {
            return Ok(value);
        }
        ensure!(
            Instant::now() < deadline,
            "{what} did not happen within {within:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn lease_holder(client: &Client, namespace: &str) -> Result<Option<String>> {
    let lease = Api::<Lease>::namespaced(client.clone(), namespace)
        .get_opt(LEASE)
        .await?;
    Ok(lease
        .and_then(|lease| lease.spec?.holder_identity)
        .filter(|holder| !holder.is_empty()))
}

/// The replica (Pod or process name) a Lease holder identity names.
fn replica(holder: &str) -> &str {
    holder
        .rsplit_once('_')
        .map_or(holder, |(replica, _)| replica)
}

#[tokio::test]
async fn standby_is_ready_and_takes_over_at_once_when_the_leader_stops() -> Result<()> {
    let env = Env::without_operator("leader-handover").await?;
    let first = Operator::start(&env, "first", &[])?;
    let leader = eventually("the first operator leading", DEADLINE, || async {
        lease_holder(&env.client, &env.namespace).await
    })
    .await?;
    assert_eq!(replica(&leader), "first");
    let second = Operator::start(&env, "second", &[])?;

    // Both Ready: the leader once synced, the standby once it reads the Lease.
    for operator in [&first, &second] {
        eventually("/readyz answering 200", DEADLINE, || async {
            Ok(matches!(operator.get("/readyz").await, Ok((200, _))).then_some(()))
        })
        .await?;
    }
    let (_, metrics) = first.get("/metrics").await?;
    assert!(metrics.contains("beeos_operator_leader 1\n"), "{metrics}");
    let (_, metrics) = second.get("/metrics").await?;
    assert!(metrics.contains("beeos_operator_leader 0\n"), "{metrics}");

    env.apply(catalog_instance("before")?).await?;
    env.wait_for("before", "Ready", is_ready).await?;

    // SIGTERM: the leader stops its controller and releases the Lease, so the standby takes
    // over well before the 10s Lease would have expired.
    let stopped = Instant::now();
    first.terminate()?;
    let mut first = first;
    assert_eq!(first.exited(DEADLINE).await?, Some(0), "a clean stop");
    let taken = eventually("the standby leading", DEADLINE, || async {
        Ok(lease_holder(&env.client, &env.namespace)
            .await?
            .filter(|holder| replica(holder) == "second"))
    })
    .await
    .map(|_| stopped.elapsed())?;
    println!("handover after SIGTERM: {taken:?}");
    assert!(
        taken < Duration::from_secs(10),
        "the Lease was not released: taken after {taken:?}"
    );
    assert!(
        first.log().contains("released the Lease"),
        "{}",
        first.log()
    );
    eventually("the new leader's metric", DEADLINE, || async {
        let (_, metrics) = second.get("/metrics").await?;
        Ok(metrics.contains("beeos_operator_leader 1\n").then_some(()))
    })
    .await?;

    env.apply(catalog_instance("after")?).await?;
    let after = env.wait_for("after", "Ready", is_ready).await?;
    let before = env.api().get("before").await?;
    // One instance each: the handover deployed nothing twice.
    let mut live: Vec<String> = env
        .sim_instances()
        .await?
        .iter()
        .filter(|i| i["desiredStatus"] != "terminated")
        .filter_map(|i| i["id"].as_str().map(str::to_owned))
        .collect();
    live.sort();
    let mut recorded = vec![
        instance_id(&before).context("before has its instance")?,
        instance_id(&after).context("after has its instance")?,
    ];
    recorded.sort();
    assert_eq!(live, recorded);
    Ok(())
}

#[tokio::test]
async fn leader_that_loses_its_lease_exits_non_zero_at_once() -> Result<()> {
    let env = Env::without_operator("leader-lost").await?;
    let mut operator = Operator::start(&env, "victim", &[])?;
    eventually("the operator leading", DEADLINE, || async {
        lease_holder(&env.client, &env.namespace).await
    })
    .await?;
    eventually("/readyz answering 200", DEADLINE, || async {
        Ok(matches!(operator.get("/readyz").await, Ok((200, _))).then_some(()))
    })
    .await?;

    // Another holder takes the Lease, as a replica would after a partition.
    let now = k8s_openapi::jiff::Timestamp::now();
    Api::<Lease>::namespaced(env.client.clone(), &env.namespace)
        .patch(
            LEASE,
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {
                "holderIdentity": "intruder",
                "renewTime": k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime(now),
                "leaseDurationSeconds": 60,
            }})),
        )
        .await?;
    // The next renewal (every 2s) finds it gone.
    let code = operator.exited(Duration::from_secs(30)).await?;
    assert_ne!(code, Some(0), "{}", support::tail(&operator.log(), 20));
    assert!(
        operator.log().contains("lost leadership"),
        "{}",
        support::tail(&operator.log(), 20)
    );
    assert_eq!(
        lease_holder(&env.client, &env.namespace).await?.as_deref(),
        Some("intruder"),
        "a lost Lease is not released"
    );
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// The image

fn image_dir() -> PathBuf {
    repo_path("target/image")
}

/// `None` with a loud message when the image is not built, outside CI.
fn image_or_skip() -> Option<PathBuf> {
    let archive = image_dir().join("beeos-operator.tar");
    if archive.is_file() {
        return Some(archive);
    }
    let reason = format!("{} is missing: run `make image`", archive.display());
    assert!(std::env::var("CI").as_deref() != Ok("true"), "{reason}");
    eprintln!("SKIPPED (not in CI): {reason}");
    None
}

/// The members of a tar archive.
fn tar_members(bytes: &[u8]) -> Result<Vec<(String, Vec<u8>)>> {
    // A minimal ustar/pax reader: the archives are ours (tools/image/oci.py).
    let mut members = Vec::new();
    let mut at = 0;
    let mut long_name: Option<String> = None;
    while at + 512 <= bytes.len() {
        let header = &bytes[at..at + 512];
        if header.iter().all(|b| *b == 0) {
            break;
        }
        let field = |from: usize, len: usize| -> String {
            String::from_utf8_lossy(&header[from..from + len])
                .trim_end_matches('\0')
                .trim()
                .to_owned()
        };
        let size = usize::from_str_radix(&field(124, 12), 8).context("tar size")?;
        let kind = header[156];
        let name = long_name.take().unwrap_or_else(|| {
            let prefix = field(345, 155);
            let name = field(0, 100);
            if prefix.is_empty() {
                name
            } else {
                format!("{prefix}/{name}")
            }
        });
        let data = bytes[at + 512..at + 512 + size].to_vec();
        if kind == b'x' {
            let text = String::from_utf8_lossy(&data);
            long_name = text
                .lines()
                .find_map(|line| line.split_once(" path=").map(|(_, p)| p.to_owned()));
        } else {
            members.push((name, data));
        }
        at += 512 + size.div_ceil(512) * 512;
    }
    Ok(members)
}

fn member<'a>(members: &'a [(String, Vec<u8>)], name: &str) -> Result<&'a [u8]> {
    members
        .iter()
        .find(|(n, _)| n == name)
        .map(|(_, data)| data.as_slice())
        .with_context(|| format!("{name} is not in the archive"))
}

fn blob<'a>(members: &'a [(String, Vec<u8>)], digest: &str) -> Result<&'a [u8]> {
    member(
        members,
        &format!("blobs/sha256/{}", digest.trim_start_matches("sha256:")),
    )
}

/// What the Dockerfile's final stage says: USER, ENTRYPOINT, EXPOSE and LABELs.
fn dockerfile_final_stage() -> Result<Value> {
    let dockerfile = std::fs::read_to_string(repo_path("Dockerfile"))?;
    let joined = dockerfile.replace("\\\n", " ");
    let stage = joined
        .rsplit_once("\nFROM ")
        .map(|(_, stage)| stage)
        .context("no FROM")?;
    let mut labels = serde_json::Map::new();
    let (mut user, mut entrypoint, mut ports) = (Value::Null, Value::Null, serde_json::Map::new());
    for line in stage.lines().map(str::trim) {
        if let Some(rest) = line.strip_prefix("LABEL ") {
            // key="value" pairs
            let mut rest = rest.trim();
            while let Some((key, after)) = rest.split_once("=\"") {
                let (value, tail) = after.split_once('"').context("unterminated label")?;
                labels.insert(key.trim().to_owned(), Value::from(value));
                rest = tail.trim();
            }
        } else if let Some(rest) = line.strip_prefix("USER ") {
            user = Value::from(rest.trim());
        } else if let Some(rest) = line.strip_prefix("ENTRYPOINT ") {
            entrypoint = serde_json::from_str(rest.trim())?;
        } else if let Some(rest) = line.strip_prefix("EXPOSE ") {
            for port in rest.split_whitespace() {
                let port = if port.contains('/') {
                    port.to_owned()
                } else {
                    format!("{port}/tcp")
                };
                ports.insert(port, json!({}));
            }
        }
    }
    Ok(json!({"User": user, "Entrypoint": entrypoint, "ExposedPorts": ports, "Labels": labels}))
}

#[test]
fn image_agrees_with_the_dockerfile_and_holds_no_shell() -> Result<()> {
    let Some(archive) = image_or_skip() else {
        return Ok(());
    };
    let members = tar_members(&std::fs::read(&archive)?)?;
    let index: Value = serde_json::from_slice(member(&members, "index.json")?)?;
    let manifest: Value = serde_json::from_slice(blob(
        &members,
        index["manifests"][0]["digest"].as_str().context("digest")?,
    )?)?;
    let config: Value = serde_json::from_slice(blob(
        &members,
        manifest["config"]["digest"].as_str().context("config")?,
    )?)?;
    let expected = dockerfile_final_stage()?;
    for key in ["User", "Entrypoint", "ExposedPorts", "Labels"] {
        assert_eq!(config["config"][key], expected[key], "{key} differs");
    }
    assert_eq!(config["config"]["User"], "65532:65532");

    let layer = tar_members(blob(
        &members,
        manifest["layers"][0]["digest"].as_str().context("layer")?,
    )?)?;
    let names: Vec<&str> = layer.iter().map(|(name, _)| name.as_str()).collect();
    for needed in [
        "usr/local/bin/beeos-operator",
        "etc/ssl/certs/ca-certificates.crt",
        "etc/passwd",
    ] {
        assert!(names.contains(&needed), "{needed} missing from {names:?}");
    }
    for shell in ["bin/sh", "bin/bash", "usr/bin/sh", "bin/busybox"] {
        assert!(!names.contains(&shell), "{shell} in the image");
    }
    let passwd = String::from_utf8_lossy(member(&layer, "etc/passwd")?).into_owned();
    assert!(passwd.contains(":65532:65532:"), "{passwd}");
    Ok(())
}

#[test]
fn image_builds_to_the_same_digest_twice() -> Result<()> {
    let Some(_) = image_or_skip() else {
        return Ok(());
    };
    let again = tempfile::tempdir()?;
    // The same build as the archive under test (`make test` builds the dev profile's image).
    let profile = std::fs::read_to_string(image_dir().join("beeos-operator.profile"))
        .unwrap_or_else(|_| "release".into());
    let output = Command::new(repo_path("tools/image/build.sh"))
        .arg(again.path())
        .env("IMAGE_PROFILE", profile.trim())
        .output()?;
    ensure!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let first = std::fs::read_to_string(image_dir().join("beeos-operator.digest"))?;
    let second = std::fs::read_to_string(again.path().join("beeos-operator.digest"))?;
    assert_eq!(first.trim(), second.trim());
    assert_eq!(
        std::fs::read(image_dir().join("beeos-operator.tar"))?,
        std::fs::read(again.path().join("beeos-operator.tar"))?
    );
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// The chart on the node

/// The shared node with the image and the simulator, or `None` (skipped loudly) outside CI.
fn node() -> Option<&'static Node> {
    let image = image_or_skip()?;
    let simulator = std::env::current_exe()
        .ok()
        .and_then(|test| Some(test.parent()?.parent()?.join("beeos-sim")))
        .filter(|path| path.is_file());
    let options = NodeOptions {
        images: vec![image],
        simulator: Some((
            simulator.unwrap_or_else(|| repo_path("target/debug/beeos-sim")),
            vec![
                "--token".into(),
                format!("{TEAM_A_TOKEN}=team-a"),
                "--pending-ms".into(),
                "300".into(),
                "--provisioning-ms".into(),
                "700".into(),
                "--destroy-ms".into(),
                "200".into(),
            ],
        )),
    };
    match testenv::node::shared_node(&options) {
        Ok(node) => Some(node),
        Err(reason) => {
            assert!(std::env::var("CI").as_deref() != Ok("true"), "{reason}");
            eprintln!("SKIPPED (not in CI): {reason}");
            None
        }
    }
}

/// One Helm release of the chart on the node: its namespace (restricted Pod Security) and the
/// namespace its operator watches.
struct Release {
    node: &'static Node,
    client: Client,
    namespace: String,
    instances: String,
}

static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);

impl Release {
    async fn install(node: &'static Node, name: &str, values: Value) -> Result<Release> {
        // Helm installs the CRD from the chart (support::ensure_crd is for the test control
        // plane, once per binary: calling it here would skip it there).
        let client = node.admin_client().await?;
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let namespace = format!("{name}-{n}");
        let instances = format!("{name}-{n}-agents");
        let namespaces: Api<Namespace> = Api::all(client.clone());
        for (ns, restricted) in [(&namespace, true), (&instances, false)] {
            let mut object = json!({"metadata": {"name": ns}});
            if restricted {
                object["metadata"]["labels"] = json!({
                    "pod-security.kubernetes.io/enforce": "restricted",
                    "pod-security.kubernetes.io/enforce-version": "latest",
                });
            }
            namespaces
                .create(&PostParams::default(), &serde_json::from_value(object)?)
                .await?;
        }
        let release = Release {
            node,
            client,
            namespace,
            instances,
        };
        let mut all = release.values();
        merge(&mut all, values);
        let file = node
            .dir()
            .join(format!("values-{}.json", release.namespace));
        std::fs::write(&file, all.to_string())?;
        release
            .helm(&[
                "install",
                RELEASE,
                &repo_path("charts/beeos-operator").display().to_string(),
                "--namespace",
                &release.namespace,
                "--values",
                &file.display().to_string(),
            ])
            .await?;
        Ok(release)
    }

    fn values(&self) -> Value {
        let version = env!("CARGO_PKG_VERSION");
        json!({
            "image": {"repository": "localhost/beeos-operator", "tag": version, "pullPolicy": "Never"},
            "beeos": {"url": self.node.simulator_url_in_cluster().unwrap_or_default(), "token": TEAM_A_TOKEN},
            "watchNamespaces": [self.instances],
            "poll": {"transition": "300ms", "steady": "5s"},
            "backoff": {"min": "200ms", "max": "2s"},
            "logLevel": "info,beeos_operator=debug",
            "leaderElection": {"leaseDuration": "15s", "renewInterval": "5s", "retryPeriod": "1s"},
        })
    }

    async fn helm(&self, args: &[&str]) -> Result<String> {
        let helm = std::env::var_os("HELM")
            .map(PathBuf::from)
            .unwrap_or_else(|| repo_path(".tools/bin/helm"));
        let home = self.node.dir().join("helm");
        let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
        let kubeconfig = self.node.kubeconfig_path();
        let output = tokio::task::spawn_blocking(move || {
            Command::new(&helm)
                .args(&args)
                .env("KUBECONFIG", kubeconfig)
                .env("HELM_CACHE_HOME", home.join("cache"))
                .env("HELM_CONFIG_HOME", home.join("config"))
                .env("HELM_DATA_HOME", home.join("data"))
                .output()
        })
        .await??;
        ensure!(
            output.status.success(),
            "helm failed:\n{}",
            String::from_utf8_lossy(&output.stderr)
        );
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    }

    fn pods_api(&self) -> Api<Pod> {
        Api::namespaced(self.client.clone(), &self.namespace)
    }

    /// The operator's Pods that are not terminating.
    async fn pods(&self) -> Result<Vec<Pod>> {
        let pods = self
            .pods_api()
            .list(&ListParams::default().labels(&format!("app.kubernetes.io/instance={RELEASE}")))
            .await?;
        Ok(pods
            .items
            .into_iter()
            .filter(|pod| pod.metadata.deletion_timestamp.is_none())
            .collect())
    }

    /// Waits until the Deployment has rolled out completely: every replica updated and Ready,
    /// no old Pod left.
    async fn rolled_out(&self) -> Result<Duration> {
        let started = Instant::now();
        let deployments: Api<Deployment> = Api::namespaced(self.client.clone(), &self.namespace);
        let result = eventually("the rollout", POD_DEADLINE, || async {
            let deployment = deployments.get(RELEASE).await?;
            let want = deployment
                .spec
                .as_ref()
                .and_then(|s| s.replicas)
                .unwrap_or(1);
            let status = deployment.status.unwrap_or_default();
            let done = status.observed_generation >= deployment.metadata.generation
                && status.updated_replicas == Some(want)
                && status.ready_replicas == Some(want)
                && status.replicas == Some(want)
                && self.pods().await?.len() == want as usize;
            Ok(done.then_some(()))
        })
        .await;
        if let Err(err) = result {
            bail!(
                "{err}\n--- pods ---\n{}\n--- kubelet ---\n{}",
                serde_json::to_string_pretty(
                    &self
                        .pods()
                        .await
                        .unwrap_or_default()
                        .iter()
                        .map(|p| &p.status)
                        .collect::<Vec<_>>()
                )?,
                self.node.log_tail("kubelet", 20)
            );
        }
        Ok(started.elapsed())
    }

    async fn leader(&self) -> Result<String> {
        let holder = eventually("a leader", POD_DEADLINE, || async {
            lease_holder(&self.client, &self.namespace).await
        })
        .await?;
        Ok(replica(&holder).to_owned())
    }

    /// `/metrics` of a Pod, through the API server's Pod proxy.
    async fn metrics(&self, pod: &str) -> Result<String> {
        let request = http::Request::get(format!(
            "/api/v1/namespaces/{}/pods/{pod}:8080/proxy/metrics",
            self.namespace
        ))
        .body(Vec::new())?;
        Ok(self.client.request_text(request).await?)
    }

    fn instances_api(&self) -> Api<kube::api::DynamicObject> {
        Api::namespaced_with(
            self.client.clone(),
            &self.instances,
            &kube::api::ApiResource::erase::<beeos_operator::crd::BeeosInstance>(&()),
        )
    }

    async fn wait_ready(&self, name: &str, within: Duration) -> Result<String> {
        let api: Api<beeos_operator::crd::BeeosInstance> =
            Api::namespaced(self.client.clone(), &self.instances);
        eventually(&format!("{name} Ready"), within, || async {
            Ok(api
                .get_opt(name)
                .await?
                .filter(is_ready)
                .and_then(|r| instance_id(&r)))
        })
        .await
    }

    async fn sim_instances(&self) -> Result<Vec<Value>> {
        let url = self
            .node
            .simulator_url()
            .context("the node runs no simulator")?;
        let body: Value = reqwest::get(format!("{url}/_sim/instances"))
            .await?
            .json()
            .await?;
        Ok(body["instances"].as_array().cloned().unwrap_or_default())
    }

    /// The containers' memory (from their cgroups) and restarts; fails on a restart unless
    /// `restarts_allowed`, or on a container above its memory limit.
    async fn check_containers(&self, restarts_allowed: bool) -> Result<()> {
        for pod in self.pods().await? {
            let name = pod.name_any();
            let status = pod.status.clone().unwrap_or_default();
            for container in status.container_statuses.unwrap_or_default() {
                let id = container
                    .container_id
                    .as_deref()
                    .and_then(|id| id.rsplit_once("://"))
                    .map(|(_, id)| id.to_owned())
                    .context("a running container has an id")?;
                let memory = container_memory(&id)?;
                println!(
                    "{name}: restarts {}, cgroup memory working set {:.1} MiB (usage {:.1} MiB, \
                     peak {:.1} MiB), process RSS {:.1} MiB",
                    container.restart_count,
                    mib(memory.working_set),
                    mib(memory.usage),
                    mib(memory.peak),
                    mib(memory.rss)
                );
                ensure!(
                    memory.working_set < 256 * 1024 * 1024,
                    "{name} uses {} bytes",
                    memory.working_set
                );
                if !restarts_allowed {
                    ensure!(
                        container.restart_count == 0,
                        "{name} restarted: {:?}",
                        container.last_state
                    );
                }
            }
        }
        Ok(())
    }

    /// Deletes the instances (while the operator runs, so BeeOS destroys them), then the release.
    async fn uninstall(self) -> Result<()> {
        let api = self.instances_api();
        api.delete_collection(&DeleteParams::default(), &ListParams::default())
            .await?;
        eventually("the instances gone", POD_DEADLINE, || async {
            Ok(api
                .list(&ListParams::default())
                .await?
                .items
                .is_empty()
                .then_some(()))
        })
        .await?;
        self.helm(&[
            "uninstall",
            RELEASE,
            "--namespace",
            &self.namespace,
            "--wait",
        ])
        .await?;
        let namespaces: Api<Namespace> = Api::all(self.client.clone());
        for ns in [&self.namespace, &self.instances] {
            namespaces.delete(ns, &DeleteParams::default()).await?;
        }
        Ok(())
    }
}

fn merge(base: &mut Value, overlay: Value) {
    match (base, overlay) {
        (Value::Object(base), Value::Object(overlay)) => {
            for (key, value) in overlay {
                merge(base.entry(key).or_insert(Value::Null), value);
            }
        }
        (base, overlay) => *base = overlay,
    }
}

struct Memory {
    usage: u64,
    working_set: u64,
    peak: u64,
    /// The process's resident set, which also counts the shared pages of the binary and its
    /// libraries that the cgroup does not (they were charged to whoever read them first).
    rss: u64,
}

/// VmRSS of the first process in a cgroup directory.
fn resident_set(cgroup: &std::path::Path) -> u64 {
    let pid = std::fs::read_to_string(cgroup.join("cgroup.procs")).unwrap_or_default();
    let Some(pid) = pid.lines().next() else {
        return 0;
    };
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|kb| kb.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024)
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / 1024.0 / 1024.0
}

/// The memory of a container from its cgroup (v1: memory controller; v2: unified).
fn container_memory(id: &str) -> Result<Memory> {
    fn find(dir: &std::path::Path, name: &str, depth: usize) -> Option<PathBuf> {
        for entry in std::fs::read_dir(dir).ok()?.flatten() {
            let path = entry.path();
            if !path.is_dir() {
                continue;
            }
            if path
                .file_name()
                .is_some_and(|n| n.to_string_lossy().contains(name))
            {
                return Some(path);
            }
            if depth > 0
                && let Some(found) = find(&path, name, depth - 1)
            {
                return Some(found);
            }
        }
        None
    }
    let read = |path: PathBuf| -> Result<String> {
        std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))
    };
    let stat_value = |stat: &str, key: &str| -> u64 {
        stat.lines()
            .find_map(|line| line.strip_prefix(key)?.trim().parse().ok())
            .unwrap_or(0)
    };
    for root in ["/sys/fs/cgroup/memory/kubepods", "/sys/fs/cgroup/kubepods"] {
        let Some(cgroup) = find(std::path::Path::new(root), id, 4) else {
            continue;
        };
        if cgroup.join("memory.usage_in_bytes").exists() {
            let usage: u64 = read(cgroup.join("memory.usage_in_bytes"))?.trim().parse()?;
            let stat = read(cgroup.join("memory.stat"))?;
            let inactive = stat_value(&stat, "total_inactive_file ");
            let peak = read(cgroup.join("memory.max_usage_in_bytes"))?
                .trim()
                .parse()?;
            return Ok(Memory {
                usage,
                working_set: usage.saturating_sub(inactive),
                peak,
                rss: resident_set(&cgroup),
            });
        }
        let usage: u64 = read(cgroup.join("memory.current"))?.trim().parse()?;
        let stat = read(cgroup.join("memory.stat"))?;
        let peak = read(cgroup.join("memory.peak"))
            .ok()
            .and_then(|p| p.trim().parse().ok())
            .unwrap_or(usage);
        return Ok(Memory {
            usage,
            working_set: usage.saturating_sub(stat_value(&stat, "inactive_file ")),
            peak,
            rss: resident_set(&cgroup),
        });
    }
    bail!("no cgroup found for container {id}")
}

#[tokio::test]
async fn chart_on_the_node_runs_a_leader_and_a_standby_that_serve_an_example() -> Result<()> {
    let Some(node) = node() else { return Ok(()) };
    let _one_at_a_time = ON_THE_NODE.lock().await;
    if let Some(seconds) = node.start_seconds() {
        println!("node start to Ready (node.sh): {seconds}s");
    }
    let started = Instant::now();
    let release = Release::install(node, "install", json!({})).await?;
    release.rolled_out().await?;
    println!("helm install to 2/2 Ready: {:?}", started.elapsed());

    let pods = release.pods().await?;
    assert_eq!(pods.len(), 2);
    let leader = release.leader().await?;
    let names: Vec<String> = pods.iter().map(ResourceExt::name_any).collect();
    assert!(names.contains(&leader), "{leader} is not one of {names:?}");
    for pod in &names {
        let metrics = release.metrics(pod).await?;
        let expected = if *pod == leader { 1 } else { 0 };
        assert!(
            metrics.contains(&format!("beeos_operator_leader {expected}\n")),
            "{pod}: {metrics}"
        );
    }
    // The Pods run as the image and the restricted namespace demand.
    let spec = pods[0].spec.clone().context("a Pod has a spec")?;
    assert_eq!(
        spec.containers[0].image.as_deref(),
        Some("localhost/beeos-operator:0.1.0")
    );

    let mut example = catalog_instance("catalog-agent")?;
    example.metadata.namespace = Some(release.instances.clone());
    release
        .instances_api()
        .create(&PostParams::default(), &example)
        .await?;
    let id = release.wait_ready("catalog-agent", POD_DEADLINE).await?;
    let instance = release
        .sim_instances()
        .await?
        .into_iter()
        .find(|i| i["id"] == id.as_str())
        .context("the instance is at BeeOS")?;
    assert_eq!(
        instance["ownerId"], "team-a",
        "deployed with the chart's token"
    );

    release.check_containers(false).await?;
    release.uninstall().await
}

#[tokio::test]
async fn deleting_the_leader_pod_mid_burst_hands_over_without_duplicates_or_leaks() -> Result<()> {
    let Some(node) = node() else { return Ok(()) };
    let _one_at_a_time = ON_THE_NODE.lock().await;
    let release = Release::install(node, "failover", json!({})).await?;
    release.rolled_out().await?;
    let leader = release.leader().await?;

    let api = release.instances_api();
    let names: Vec<String> = (0..30).map(|i| format!("burst-{i:02}")).collect();
    for (i, name) in names.iter().enumerate() {
        let mut resource = catalog_instance(name)?;
        resource.metadata.namespace = Some(release.instances.clone());
        api.create(&PostParams::default(), &resource).await?;
        if i == 10 {
            release
                .pods_api()
                .delete(&leader, &DeleteParams::default())
                .await?;
        }
    }
    let new_leader = release.leader_other_than(&leader).await?;
    assert_ne!(new_leader, leader);

    let mut recorded = Vec::new();
    for name in &names {
        recorded.push(release.wait_ready(name, POD_DEADLINE).await?);
    }
    recorded.sort();
    let mut live: Vec<String> = release
        .sim_instances()
        .await?
        .iter()
        .filter(|i| i["desiredStatus"] != "terminated")
        .filter_map(|i| i["id"].as_str().map(str::to_owned))
        .collect();
    live.sort();
    assert_eq!(live.len(), 30, "0 duplicates: one instance per resource");
    assert_eq!(live, recorded, "each resource records its own instance");

    // Failover after deleting the leader Pod, five times, once a standby is Ready each time.
    let mut failovers = Vec::new();
    for _ in 0..5 {
        release.rolled_out().await?;
        let leader = release.leader().await?;
        let deleted = Instant::now();
        release
            .pods_api()
            .delete(&leader, &DeleteParams::default())
            .await?;
        release.leader_other_than(&leader).await?;
        failovers.push(deleted.elapsed());
    }
    failovers.sort();
    println!(
        "leader failover after deleting its Pod: median {:?} (all {failovers:?})",
        failovers[2]
    );
    release.rolled_out().await?;
    release.check_containers(false).await?;

    // 0 leaks: deleting the resources destroys every instance.
    let ids = recorded;
    release.uninstall().await?;
    let table = Api::<Namespace>::all(node.admin_client().await?); // keep a client alive
    drop(table);
    let url = node.simulator_url().context("simulator")?;
    let body: Value = reqwest::get(format!("{url}/_sim/instances"))
        .await?
        .json()
        .await?;
    for id in &ids {
        let instance = body["instances"]
            .as_array()
            .and_then(|all| all.iter().find(|i| i["id"] == id.as_str()))
            .context("the instance is in the table")?;
        assert_eq!(instance["desiredStatus"], "terminated", "{instance}");
    }
    Ok(())
}

#[tokio::test]
async fn helm_upgrade_rolls_both_pods_and_hands_the_lease_to_a_new_one_in_seconds() -> Result<()> {
    let Some(node) = node() else { return Ok(()) };
    let _one_at_a_time = ON_THE_NODE.lock().await;
    let release = Release::install(node, "upgrade", json!({})).await?;
    release.rolled_out().await?;
    let mut example = catalog_instance("steady")?;
    example.metadata.namespace = Some(release.instances.clone());
    release
        .instances_api()
        .create(&PostParams::default(), &example)
        .await?;
    let id = release.wait_ready("steady", POD_DEADLINE).await?;
    let old_pods: Vec<String> = release
        .pods()
        .await?
        .iter()
        .map(ResourceExt::name_any)
        .collect();
    let old_leader = release.leader().await?;
    let deploys_before = release.sim_instances().await?.len();

    // Watch the Lease while the rollout runs: every change of holder, and how long at a time
    // no running Pod held it (its holder terminating or gone, or no holder).
    let (done_tx, done_rx) = tokio::sync::watch::channel(false);
    let watcher = {
        let client = release.client.clone();
        let namespace = release.namespace.clone();
        let old_pods = old_pods.clone();
        tokio::spawn(async move {
            let pods: Api<Pod> = Api::namespaced(client.clone(), &namespace);
            let mut holders: Vec<String> = Vec::new();
            let mut leaderless_since: Option<Instant> = None;
            let mut longest = Duration::ZERO;
            let deadline = Instant::now() + POD_DEADLINE;
            while Instant::now() < deadline {
                let holder = lease_holder(&client, &namespace)
                    .await?
                    .map(|h| replica(&h).to_owned());
                let running = match &holder {
                    Some(holder) => pods
                        .get_opt(holder)
                        .await?
                        .is_some_and(|p| p.metadata.deletion_timestamp.is_none()),
                    None => false,
                };
                match (running, leaderless_since) {
                    (false, None) => leaderless_since = Some(Instant::now()),
                    (true, Some(since)) => {
                        longest = longest.max(since.elapsed());
                        leaderless_since = None;
                    }
                    _ => {}
                }
                if let Some(holder) = holder
                    && holders.last() != Some(&holder)
                {
                    holders.push(holder.clone());
                }
                let on_a_new_pod = holders.last().is_some_and(|h| !old_pods.contains(h));
                if *done_rx.borrow() && running && on_a_new_pod {
                    return anyhow::Ok((holders, longest));
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            bail!("the Lease did not end on a new Pod; holders: {holders:?}")
        })
    };
    release
        .helm(&[
            "upgrade",
            RELEASE,
            &repo_path("charts/beeos-operator").display().to_string(),
            "--namespace",
            &release.namespace,
            "--reuse-values",
            "--set",
            "poll.steady=7s",
        ])
        .await?;
    let rollout = release.rolled_out().await?;
    let _ = done_tx.send(true);
    let (holders, longest_leaderless) = watcher.await??;
    let new_leader = holders.last().cloned().context("a holder")?;
    println!(
        "rollout: {rollout:?}; holders {holders:?}; longest time without a running leader: \
         {longest_leaderless:?}"
    );
    // Released on SIGTERM: each handover takes a retry period or so, never the Lease's 15s.
    assert!(
        longest_leaderless < Duration::from_secs(10),
        "a handover took {longest_leaderless:?}"
    );
    assert_eq!(holders.first(), Some(&old_leader));
    assert!(
        holders.len() <= 3,
        "more handovers than old Pods: {holders:?}"
    );

    let new_pods = release.pods().await?;
    for pod in &new_pods {
        assert!(
            !old_pods.contains(&pod.name_any()),
            "{} was not replaced",
            pod.name_any()
        );
        let env = &pod.spec.as_ref().context("spec")?.containers[0].env;
        let steady = env
            .iter()
            .flatten()
            .find(|e| e.name == "STEADY_POLL")
            .and_then(|e| e.value.clone());
        assert_eq!(
            steady.as_deref(),
            Some("7s"),
            "the new value reached {}",
            pod.name_any()
        );
    }
    assert!(new_pods.iter().any(|p| p.name_any() == new_leader));
    assert_eq!(release.leader().await?, new_leader);
    // The instance went on untouched: same id, nothing deployed again.
    assert_eq!(release.wait_ready("steady", POD_DEADLINE).await?, id);
    assert_eq!(release.sim_instances().await?.len(), deploys_before);
    release.check_containers(false).await?;
    release.uninstall().await
}

#[tokio::test]
async fn pod_disruption_budget_turns_away_an_eviction_that_would_leave_no_replica() -> Result<()> {
    let Some(node) = node() else { return Ok(()) };
    let _one_at_a_time = ON_THE_NODE.lock().await;
    let release = Release::install(node, "pdb", json!({})).await?;
    release.rolled_out().await?;
    let pods: Vec<String> = release
        .pods()
        .await?
        .iter()
        .map(ResourceExt::name_any)
        .collect();
    // The budget has seen both replicas healthy (its controller lags the Deployment a moment).
    let budgets: Api<k8s_openapi::api::policy::v1::PodDisruptionBudget> =
        Api::namespaced(release.client.clone(), &release.namespace);
    eventually(
        "the budget allowing one disruption",
        POD_DEADLINE,
        || async {
            let budget = budgets.get(RELEASE).await?;
            let status = budget.status.unwrap_or_default();
            Ok((status.observed_generation == budget.metadata.generation
                && status.current_healthy == 2
                && status.disruptions_allowed == 1)
                .then_some(()))
        },
    )
    .await?;
    // A quota of two Pods keeps the evicted Pod's replacement from being created while the
    // evicted one still exists (it counts until it is gone), so the second eviction meets the
    // budget with one healthy Pod whatever the timing, not with a fresh standby.
    let quotas: Api<k8s_openapi::api::core::v1::ResourceQuota> =
        Api::namespaced(release.client.clone(), &release.namespace);
    quotas
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({
                "metadata": {"name": "two-pods"}, "spec": {"hard": {"pods": "2"}},
            }))?,
        )
        .await?;
    eventually("the quota counting the two Pods", POD_DEADLINE, || async {
        let used = quotas.get("two-pods").await?.status.and_then(|s| s.used);
        Ok(
            (used.and_then(|u| u.get("pods").cloned()).map(|q| q.0) == Some("2".into()))
                .then_some(()),
        )
    })
    .await?;
    // The client would retry a 429 for seconds, until a replacement is Ready: not here.
    let mut config = node.admin_config().await?;
    config.default_retry = false;
    let api: Api<Pod> = Api::namespaced(Client::try_from(config)?, &release.namespace);
    let params = EvictParams::default();
    let first = api.evict(&pods[0], &params).await;
    let second = api.evict(&pods[1], &params).await;
    first.context("the first eviction is within the budget")?;
    let refused = match second {
        Ok(_) => bail!(
            "the second eviction went through; budget {:?}; pods {:?}; lease {:?}",
            budgets.get(RELEASE).await?.status,
            api.list(&ListParams::default())
                .await?
                .items
                .iter()
                .map(|p| (
                    p.name_any(),
                    p.metadata.deletion_timestamp.clone(),
                    p.status.clone()
                ))
                .collect::<Vec<_>>(),
            lease_holder(&release.client, &release.namespace).await?
        ),
        Err(refused) => refused,
    };
    assert!(
        matches!(refused, kube::Error::Api(ref status) if status.code == 429),
        "{refused}"
    );
    assert!(
        api.get(&pods[1])
            .await?
            .metadata
            .deletion_timestamp
            .is_none(),
        "the refused Pod runs on"
    );
    release.rolled_out().await?;
    release.check_containers(false).await?;
    release.uninstall().await
}

impl Release {
    /// Waits until the Lease names a replica other than `old`.
    async fn leader_other_than(&self, old: &str) -> Result<String> {
        eventually("a new leader", POD_DEADLINE, || async {
            Ok(lease_holder(&self.client, &self.namespace)
                .await?
                .map(|holder| replica(&holder).to_owned())
                .filter(|holder| holder != old))
        })
        .await
    }
}
