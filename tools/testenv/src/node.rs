//! A real node for tests: `tools/node/node.sh` runs etcd, kube-apiserver, the controllers, the
//! kubelet with containerd, and kube-proxy inside namespaces of its own, and this module starts
//! it, reads where it listens and hands out clients.
//!
//! Like the control plane, the node cannot outlive the test process: node.sh holds a pipe from
//! us and removes everything when it closes. One node runs per machine (node.sh serialises runs
//! on a lock), so a test binary shares one ([`shared_node`]). Where a machine cannot run a node
//! (not root, no overlay filesystem, missing packages or binaries), [`shared_node`] says what is
//! missing: tests fail with that when `CI=true` and skip loudly otherwise.

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::OnceLock;

use anyhow::{Context, Result, bail};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Client, Config};

/// What to run on the node.
#[derive(Clone, Debug, Default)]
pub struct NodeOptions {
    /// OCI image archives to import into the node's containerd.
    pub images: Vec<PathBuf>,
    /// The BeeOS simulator binary to run in the node, and its flags.
    pub simulator: Option<(PathBuf, Vec<String>)>,
}

/// A running node.
pub struct Node {
    dir: PathBuf,
    env: HashMap<String, String>,
    // Closing our end of its stdin stops the node; the child is kept to be reaped.
    _stdin: ChildStdin,
    _process: Child,
}

/// The script that runs a node.
pub fn node_script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../node/node.sh")
}

/// Why this machine cannot run a node, or `None` when it can.
pub fn node_unavailable() -> Option<String> {
    match Command::new("bash")
        .arg(node_script())
        .arg("check")
        .stdin(Stdio::null())
        .output()
    {
        Ok(output) if output.status.success() => None,
        Ok(output) => Some(format!(
            "this machine cannot run a node; missing:\n{}",
            String::from_utf8_lossy(&output.stdout).trim_end()
        )),
        Err(err) => Some(format!("running {}: {err}", node_script().display())),
    }
}

/// The node shared by every test of one test binary, started on first use with `options`
/// (later calls get the same node). `Err` says why there is none.
pub fn shared_node(options: &NodeOptions) -> Result<&'static Node, String> {
    static SHARED: OnceLock<Result<Node, String>> = OnceLock::new();
    SHARED
        .get_or_init(|| {
            if let Some(reason) = node_unavailable() {
                return Err(reason);
            }
            Node::start(options).map_err(|err| format!("the node did not start: {err:#}"))
        })
        .as_ref()
        .map_err(Clone::clone)
}

impl Node {
    /// Starts a node and waits until it is Ready (blocking; node.sh waits for the machine's
    /// node lock first, when another run holds it).
    pub fn start(options: &NodeOptions) -> Result<Node> {
        let mut command = Command::new("bash");
        command.arg(node_script()).arg("up");
        for image in &options.images {
            command.arg("--image").arg(image);
        }
        if let Some((binary, args)) = &options.simulator {
            command.arg("--sim").arg(binary);
            for arg in args {
                command.arg("--sim-arg").arg(arg);
            }
        }
        let mut process = command
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .with_context(|| format!("starting {}", node_script().display()))?;
        let stdin = process
            .stdin
            .take()
            .context("node.sh's stdin was not piped")?;
        let stdout = process
            .stdout
            .take()
            .context("node.sh's stdout was not piped")?;
        let mut lines = BufReader::new(stdout).lines();
        let dir = loop {
            match lines.next() {
                Some(line) => {
                    let line = line?;
                    if let Some(dir) = line.strip_prefix("node ready: ") {
                        break PathBuf::from(dir);
                    }
                }
                None => bail!("node.sh ended before the node was ready (its messages are above)"),
            }
        };
        let env = std::fs::read_to_string(dir.join("node.env"))
            .context("reading node.env")?
            .lines()
            .filter_map(|line| line.split_once('='))
            .map(|(key, value)| (key.to_owned(), value.to_owned()))
            .collect();
        Ok(Node {
            dir,
            env,
            _stdin: stdin,
            _process: process,
        })
    }

    /// A value node.sh wrote to `node.env` (`KUBECONFIG`, `NODE_SIM_URL`, …).
    pub fn env(&self, key: &str) -> Option<&str> {
        self.env
            .get(key)
            .map(String::as_str)
            .filter(|v| !v.is_empty())
    }

    /// The admin kubeconfig, for kubectl and helm (the API server through a loopback port).
    pub fn kubeconfig_path(&self) -> PathBuf {
        PathBuf::from(self.env("KUBECONFIG").unwrap_or_default())
    }

    /// The node's state directory (logs in `log/`).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The simulator's URL from this machine (its admin API), if the node runs one.
    pub fn simulator_url(&self) -> Option<&str> {
        self.env("NODE_SIM_URL")
    }

    /// The simulator's URL from the node's Pods.
    pub fn simulator_url_in_cluster(&self) -> Option<&str> {
        self.env("NODE_SIM_URL_IN_CLUSTER")
    }

    /// The seconds node.sh took from its start to a Ready node.
    pub fn start_seconds(&self) -> Option<u64> {
        self.env("NODE_START_SECONDS")?.parse().ok()
    }

    /// A client acting as the node's admin. Build it in the runtime that uses it.
    pub async fn admin_client(&self) -> Result<Client> {
        Ok(Client::try_from(self.admin_config().await?)?)
    }

    /// The admin client's configuration, to adjust (e.g. `default_retry = false`, so that a
    /// test sees a 429 instead of the client retrying it).
    pub async fn admin_config(&self) -> Result<Config> {
        let kubeconfig = Kubeconfig::read_from(self.kubeconfig_path())?;
        Ok(Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default()).await?)
    }

    /// The last lines of a component's log (`kubelet`, `kube-apiserver`, `beeos-sim`, …).
    pub fn log_tail(&self, component: &str, lines: usize) -> String {
        let log = std::fs::read_to_string(self.dir.join("log").join(format!("{component}.log")))
            .unwrap_or_default();
        let tail: Vec<&str> = log.lines().rev().take(lines).collect();
        tail.into_iter().rev().collect::<Vec<_>>().join("\n")
    }
}
