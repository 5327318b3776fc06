//! testenv: a real etcd, kube-apiserver and kube-controller-manager on loopback, for the
//! operator's tests and the demo.
//!
//! The binaries come from `tools/k8s-testbins` (built by `make testbins`). A control plane is
//! started with the flags controller-runtime's envtest uses: generated serving certificates,
//! a service-account signing key and issuer, RBAC authorization and a static admin token. The
//! controller-manager beside it makes namespaces finish deleting, collects garbage through owner
//! references and gives every namespace its `default` ServiceAccount and `kube-root-ca.crt`.
//! Test binaries share one control plane ([`shared`]) and give each test its own namespace.
//!
//! It must never leave processes or files behind, even when a test panics or the run is killed:
//! every server runs under a small supervisor shell that holds a pipe from this process and
//! stops the server (and removes the state directory) when that pipe closes, which the kernel
//! does however this process ends. Nothing here is shipped with the operator.

mod certs;
pub mod node;
mod process;

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use k8s_openapi::api::authentication::v1::{TokenRequest, TokenRequestSpec};
use k8s_openapi::api::core::v1::{Namespace, ServiceAccount};
use kube::api::{Api, DeleteParams, ObjectMeta, PostParams};
use kube::{Client, Config};

pub use process::Supervised;

/// How long a cold control plane may take to answer `/readyz` with `ok`, and then its
/// controller-manager to report healthy and run its controllers.
const READY_TIMEOUT: Duration = Duration::from_secs(120);

/// How long a deleted namespace may take to go (its finalizer empties it first).
const NAMESPACE_GONE_TIMEOUT: Duration = Duration::from_secs(90);

/// The binaries a control plane runs, all from `tools/k8s-testbins`.
const BINARIES: [&str; 3] = ["etcd", "kube-apiserver", "kube-controller-manager"];

/// A running kube-apiserver backed by its own etcd, with a kube-controller-manager.
pub struct ControlPlane {
    dir: PathBuf,
    server_url: String,
    controller_manager_url: String,
    ca_der: Vec<u8>,
    admin_token: String,
    // Dropping these closes the supervisors' pipes, which stops the servers.
    _servers: Vec<Supervised>,
}

/// The control plane shared by every test of one test binary, started on first use.
///
/// Panics with the reason (and the server's log tail) when it cannot start: no test of the
/// binary can run without it.
pub fn shared() -> &'static ControlPlane {
    static SHARED: OnceLock<ControlPlane> = OnceLock::new();
    SHARED.get_or_init(|| match ControlPlane::start() {
        Ok(control_plane) => control_plane,
        Err(err) => panic!("testenv: the control plane did not start: {err:#}"),
    })
}

/// Where the etcd, kube-apiserver and kube-controller-manager binaries are: `$TESTENV_BIN_DIR`,
/// or the build output of `tools/k8s-testbins`.
pub fn bin_dir() -> PathBuf {
    match std::env::var_os("TESTENV_BIN_DIR") {
        Some(dir) => PathBuf::from(dir),
        None => Path::new(env!("CARGO_MANIFEST_DIR")).join("../k8s-testbins/bin"),
    }
}

impl ControlPlane {
    /// Starts etcd, kube-apiserver and kube-controller-manager in a fresh temporary directory
    /// and waits until the API server reports ready and the controller-manager healthy. Blocking; safe to call from inside or outside a tokio runtime.
    pub fn start() -> Result<Self> {
        let bin_dir = bin_dir();
        for binary in BINARIES {
            let path = bin_dir.join(binary);
            if !path.is_file() {
                bail!(
                    "{} is missing: run `make testbins` (or set TESTENV_BIN_DIR)",
                    path.display()
                );
            }
        }
        let dir = tempfile::Builder::new()
            .prefix("beeos-testenv-")
            .tempdir()
            .context("creating the control plane's directory")?
            // The etcd supervisor removes it, after etcd has stopped.
            .keep();
        let keep_dir = std::env::var_os("TESTENV_KEEP").is_some();

        let files = certs::write_all(&dir).context("writing certificates and keys")?;
        let admin_token = random_token();
        // The controller-manager's own identity, which the API server's bootstrap RBAC knows;
        // with --use-service-account-credentials each controller then acts as its own
        // ServiceAccount in kube-system, as in a kubeadm cluster.
        let controller_manager_token = random_token();
        std::fs::write(
            dir.join("tokens.csv"),
            format!(
                "{admin_token},testenv-admin,testenv-admin,\"system:masters\"\n\
                 {controller_manager_token},system:kube-controller-manager,kube-controller-manager\n"
            ),
        )?;

        let [
            etcd_client_port,
            etcd_peer_port,
            secure_port,
            controller_manager_port,
        ] = free_ports()?;
        let etcd_url = format!("http://127.0.0.1:{etcd_client_port}");
        let server_url = format!("https://127.0.0.1:{secure_port}");
        let controller_manager_url = format!("https://127.0.0.1:{controller_manager_port}");
        write_kubeconfig(
            &dir.join("kube-controller-manager.kubeconfig"),
            &server_url,
            &dir.join("ca.crt"),
            &controller_manager_token,
        )?;
        let path = |name: &str| dir.join(name).display().to_string();

        let etcd = Supervised::spawn(
            &bin_dir.join("etcd"),
            &[
                format!("--data-dir={}", path("etcd-data")),
                format!("--listen-client-urls={etcd_url}"),
                format!("--advertise-client-urls={etcd_url}"),
                format!("--listen-peer-urls=http://127.0.0.1:{etcd_peer_port}"),
                format!("--initial-advertise-peer-urls=http://127.0.0.1:{etcd_peer_port}"),
                format!("--initial-cluster=default=http://127.0.0.1:{etcd_peer_port}"),
                "--unsafe-no-fsync=true".into(),
                "--log-level=warn".into(),
            ],
            &[],
            &dir.join("etcd.log"),
            (!keep_dir).then_some(dir.as_path()),
        )?;
        let apiserver = Supervised::spawn(
            &bin_dir.join("kube-apiserver"),
            &[
                format!("--etcd-servers={etcd_url}"),
                "--bind-address=127.0.0.1".into(),
                // Avoids a default-route lookup, which fails on machines without a network.
                "--advertise-address=127.0.0.1".into(),
                format!("--secure-port={secure_port}"),
                format!("--cert-dir={}", path("apiserver-certs")),
                format!("--tls-cert-file={}", files.serving_cert.display()),
                format!("--tls-private-key-file={}", files.serving_key.display()),
                format!("--client-ca-file={}", files.ca_cert.display()),
                format!("--token-auth-file={}", path("tokens.csv")),
                format!("--service-account-issuer={server_url}"),
                format!("--service-account-key-file={}", files.sa_public.display()),
                format!(
                    "--service-account-signing-key-file={}",
                    files.sa_private.display()
                ),
                "--authorization-mode=RBAC".into(),
                // The controller-manager creates each namespace's `default` ServiceAccount a
                // moment after the namespace, and this admission plugin would reject a Pod
                // created in that moment. No Pod runs here, so tests need not wait for it.
                "--disable-admission-plugins=ServiceAccount".into(),
                "--service-cluster-ip-range=10.0.0.0/24".into(),
                "--allow-privileged=true".into(),
                "--enable-priority-and-fairness=false".into(),
            ],
            &[],
            &dir.join("kube-apiserver.log"),
            None,
        )?;

        let mut control_plane = ControlPlane {
            dir,
            server_url,
            controller_manager_url,
            ca_der: files.ca_der,
            admin_token,
            _servers: vec![apiserver, etcd],
        };
        write_kubeconfig(
            &control_plane.kubeconfig_path(),
            &control_plane.server_url,
            &control_plane.dir.join("ca.crt"),
            &control_plane.admin_token,
        )?;
        let deadline = Instant::now() + READY_TIMEOUT;
        control_plane.wait_until(deadline, ReadyCheck::ApiServer)?;

        // Only now: the controller-manager gives up at once when the API server's bootstrap
        // RBAC (its own permissions) is not there yet, and `/readyz` waits for that.
        let kubeconfig = control_plane
            .dir
            .join("kube-controller-manager.kubeconfig")
            .display()
            .to_string();
        let path = |name: &str| control_plane.dir.join(name).display().to_string();
        let controller_manager = Supervised::spawn(
            &bin_dir.join("kube-controller-manager"),
            &[
                format!("--kubeconfig={kubeconfig}"),
                format!("--authentication-kubeconfig={kubeconfig}"),
                format!("--authorization-kubeconfig={kubeconfig}"),
                "--bind-address=127.0.0.1".into(),
                format!("--secure-port={controller_manager_port}"),
                // Serves /healthz with the API server's certificate (valid for 127.0.0.1), so
                // the readiness check can verify it against the control plane's CA.
                format!("--tls-cert-file={}", files.serving_cert.display()),
                format!("--tls-private-key-file={}", files.serving_key.display()),
                format!("--cert-dir={}", path("kube-controller-manager-certs")),
                // One controller-manager per control plane: nothing to elect.
                "--leader-elect=false".into(),
                "--use-service-account-credentials=true".into(),
                // The token controller signs legacy ServiceAccount token Secrets with the API
                // server's key, and every namespace gets the CA in `kube-root-ca.crt`.
                format!(
                    "--service-account-private-key-file={}",
                    files.sa_private.display()
                ),
                format!("--root-ca-file={}", files.ca_cert.display()),
                "--service-cluster-ip-range=10.0.0.0/24".into(),
                "--allocate-node-cidrs=false".into(),
            ],
            &[],
            &control_plane.dir.join("kube-controller-manager.log"),
            None,
        )?;
        control_plane._servers.insert(0, controller_manager);
        control_plane.wait_until(deadline, ReadyCheck::ControllerManager)?;
        Ok(control_plane)
    }

    /// The API server's URL (`https://127.0.0.1:PORT`).
    pub fn server_url(&self) -> &str {
        &self.server_url
    }

    /// A kubeconfig file with the admin identity, for kubectl and child processes.
    pub fn kubeconfig_path(&self) -> PathBuf {
        self.dir.join("kubeconfig")
    }

    /// The directory holding the control plane's state, certificates and logs.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// A client acting as the cluster admin (`system:masters`).
    ///
    /// Build a client in the runtime that uses it: a client's connections belong to the tokio
    /// runtime it was made in, and every `#[tokio::test]` has its own.
    pub fn admin_client(&self) -> Client {
        self.client_with_token(&self.admin_token)
    }

    /// A client acting as `system:serviceaccount:{namespace}:{name}` with a fresh token from the
    /// TokenRequest API, for least-privilege tests. The ServiceAccount must exist.
    pub async fn service_account_client(&self, namespace: &str, name: &str) -> Result<Client> {
        let token = self.service_account_token(namespace, name).await?;
        Ok(self.client_with_token(&token))
    }

    /// A token for a ServiceAccount from the TokenRequest API (valid for an hour).
    pub async fn service_account_token(&self, namespace: &str, name: &str) -> Result<String> {
        let accounts: Api<ServiceAccount> = Api::namespaced(self.admin_client(), namespace);
        let request = TokenRequest {
            spec: TokenRequestSpec {
                audiences: vec![self.server_url.clone()],
                expiration_seconds: Some(3600),
                ..Default::default()
            },
            ..Default::default()
        };
        let issued = accounts
            .create_token_request(name, &PostParams::default(), &request)
            .await
            .with_context(|| format!("requesting a token for ServiceAccount {namespace}/{name}"))?;
        Ok(issued
            .status
            .context("TokenRequest answered without a status")?
            .token)
    }

    /// Creates a namespace named `{prefix}-{unique suffix}` and returns its name. Each test
    /// takes its own, so tests sharing the control plane never see each other's objects.
    ///
    /// Namespaces are not deleted afterwards unless a test does so ([`Self::delete_namespace`]):
    /// the whole control plane goes when the test binary ends.
    pub async fn namespace(&self, prefix: &str) -> Result<String> {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let prefix: String = prefix
            .to_ascii_lowercase()
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
            .take(40)
            .collect();
        let name = format!(
            "{}-{}-{}",
            prefix.trim_matches('-'),
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        let namespaces: Api<Namespace> = Api::all(self.admin_client());
        let namespace = Namespace {
            metadata: ObjectMeta {
                name: Some(name.clone()),
                ..Default::default()
            },
            ..Default::default()
        };
        namespaces
            .create(&PostParams::default(), &namespace)
            .await
            .with_context(|| format!("creating namespace {name}"))?;
        Ok(name)
    }

    /// Deletes a namespace and waits until it is gone: the controller-manager's namespace
    /// controller deletes everything in it first, and objects with finalizers hold it until
    /// those are removed. Fails after a deadline naming what still holds it.
    pub async fn delete_namespace(&self, name: &str) -> Result<()> {
        let namespaces: Api<Namespace> = Api::all(self.admin_client());
        match namespaces.delete(name, &DeleteParams::default()).await {
            Ok(_) => {}
            Err(kube::Error::Api(status)) if status.code == 404 => return Ok(()),
            Err(err) => return Err(err).with_context(|| format!("deleting namespace {name}")),
        }
        let deadline = Instant::now() + NAMESPACE_GONE_TIMEOUT;
        loop {
            let Some(namespace) = namespaces.get_opt(name).await? else {
                return Ok(());
            };
            if Instant::now() > deadline {
                let conditions: Vec<String> = namespace
                    .status
                    .and_then(|status| status.conditions)
                    .unwrap_or_default()
                    .into_iter()
                    .filter(|c| c.status == "True")
                    .map(|c| format!("{}: {}", c.type_, c.message.unwrap_or_default()))
                    .collect();
                bail!(
                    "namespace {name} still exists {NAMESPACE_GONE_TIMEOUT:?} after its deletion; {}",
                    conditions.join("; ")
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    fn client_with_token(&self, token: &str) -> Client {
        let mut config = Config::new(
            self.server_url
                .parse()
                .expect("the server URL is built from a loopback address and a port"),
        );
        config.root_cert = Some(vec![self.ca_der.clone()]);
        config.auth_info.token = Some(token.to_owned().into());
        config.default_namespace = "default".into();
        Client::try_from(config).expect("a token-and-CA config always makes a client")
    }

    /// Waits until `check` passes or `deadline`, failing early when a server has exited. The
    /// servers run in their own processes, so a private single-threaded runtime is enough and
    /// works whoever calls.
    fn wait_until(&self, deadline: Instant, check: ReadyCheck) -> Result<()> {
        let url = match check {
            ReadyCheck::ApiServer => self.server_url.clone(),
            ReadyCheck::ControllerManager => self.controller_manager_url.clone(),
        };
        let server = self.admin_client_config(&url)?;
        let exited = self.exited_check();
        let result = std::thread::spawn(move || -> Result<()> {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            runtime.block_on(async move {
                let server = Client::try_from(server)?;
                let mut last = String::new();
                loop {
                    let passed = match check {
                        ReadyCheck::ApiServer => answers_ok(&server, "/readyz", &mut last).await?,
                        // Healthy, not done: its controllers start one after the other over
                        // a few more seconds, and tests wait on their effects with deadlines.
                        ReadyCheck::ControllerManager => {
                            answers_ok(&server, "/healthz", &mut last).await?
                        }
                    };
                    if passed {
                        return Ok(());
                    }
                    if let Some(name) = exited() {
                        bail!("{name} exited while starting");
                    }
                    if Instant::now() > deadline {
                        bail!("{check:?} not ready within {READY_TIMEOUT:?}; last answer: {last}");
                    }
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            })
        })
        .join()
        .map_err(|_| anyhow::anyhow!("the readiness poller panicked"))?;
        result.with_context(|| self.log_tails())
    }

    fn admin_client_config(&self, url: &str) -> Result<Config> {
        let mut config = Config::new(url.parse()?);
        config.root_cert = Some(vec![self.ca_der.clone()]);
        config.auth_info.token = Some(self.admin_token.clone().into());
        config.connect_timeout = Some(Duration::from_secs(2));
        config.read_timeout = Some(Duration::from_secs(5));
        Ok(config)
    }

    /// A check, to run on another thread, naming the first server that has exited.
    fn exited_check(&self) -> impl Fn() -> Option<String> + Send + 'static {
        let servers: Vec<(String, PathBuf)> = self
            ._servers
            .iter()
            .map(|server| (server.name(), server.pid_file().to_owned()))
            .collect();
        move || {
            servers
                .iter()
                .find(|(_, pid_file)| process::exited(pid_file))
                .map(|(name, _)| name.clone())
        }
    }

    fn log_tails(&self) -> String {
        [
            "etcd.log",
            "kube-apiserver.log",
            "kube-controller-manager.log",
        ]
        .iter()
        .map(|name| {
            let log = std::fs::read_to_string(self.dir.join(name)).unwrap_or_default();
            let tail: Vec<&str> = log.lines().rev().take(15).collect();
            let tail: Vec<&str> = tail.into_iter().rev().collect();
            format!("--- {name} (last lines) ---\n{}", tail.join("\n"))
        })
        .collect::<Vec<_>>()
        .join("\n")
    }
}

/// What [`ControlPlane::wait_until`] waits for.
#[derive(Clone, Copy, Debug)]
enum ReadyCheck {
    ApiServer,
    ControllerManager,
}

/// Whether `path` answers `ok`; otherwise records the answer in `last`.
async fn answers_ok(client: &Client, path: &str, last: &mut String) -> Result<bool> {
    let request = http::Request::get(path).body(Vec::new())?;
    match client.request_text(request).await {
        Ok(body) if body.trim() == "ok" => return Ok(true),
        Ok(body) => *last = body,
        Err(err) => *last = err.to_string(),
    }
    Ok(false)
}

/// Writes a kubeconfig for `server` that trusts `ca` and authenticates with `token`.
fn write_kubeconfig(path: &Path, server: &str, ca: &Path, token: &str) -> Result<()> {
    let kubeconfig = serde_json::json!({
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "testenv", "cluster": {
            "server": server,
            "certificate-authority": ca,
        }}],
        "users": [{"name": "testenv-user", "user": {"token": token}}],
        "contexts": [{"name": "testenv", "context": {"cluster": "testenv", "user": "testenv-user"}}],
        "current-context": "testenv",
    });
    std::fs::write(path, kubeconfig.to_string())
        .with_context(|| format!("writing {}", path.display()))
}

/// Free loopback ports, found by binding port 0. They are released before the servers bind
/// them; on a test machine nothing else races for them in that instant.
fn free_ports<const N: usize>() -> Result<[u16; N]> {
    let listeners = (0..N)
        .map(|_| TcpListener::bind("127.0.0.1:0"))
        .collect::<std::io::Result<Vec<_>>>()?;
    let mut ports = [0; N];
    for (port, listener) in ports.iter_mut().zip(&listeners) {
        *port = listener.local_addr()?.port();
    }
    Ok(ports)
}

/// A random 32-byte admin token, hex-encoded.
fn random_token() -> String {
    use std::io::Read;
    let mut bytes = [0u8; 32];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut urandom| urandom.read_exact(&mut bytes))
        .expect("reading /dev/urandom");
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
