//! Server processes that cannot outlive the process that started them.
//!
//! Each server runs under a supervisor shell whose stdin is a pipe from us. The kernel closes
//! that pipe however we end (normal exit, panic, SIGINT, SIGKILL), and the supervisor then stops
//! the server and removes its state. Statics are never dropped in Rust, so a `Drop`-based cleanup
//! alone would leak the shared control plane on every run.

use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};

use anyhow::{Context, Result};

/// `$1` = log file, `$2` = directory to remove afterwards (may be empty), then the command.
///
/// SIGINT is ignored so that a Ctrl-C on the terminal stops the test process first; the
/// supervisor then sees the pipe close and shuts the server down in order (TERM, then KILL).
const SUPERVISOR: &str = r#"
trap '' INT
log=$1; remove=$2; shift 2
"$@" >>"$log" 2>&1 </dev/null &
server=$!
echo "$server" >"$log.$$.pid"
read -r _ || true
kill -TERM "$server" 2>/dev/null
for _ in $(seq 50); do kill -0 "$server" 2>/dev/null || break; sleep 0.1; done
kill -KILL "$server" 2>/dev/null
wait "$server" 2>/dev/null
if [ -n "$remove" ]; then rm -rf "$remove"; fi
"#;

/// A process under its supervisor. Dropping it (or exiting) stops the process.
pub struct Supervised {
    // Held only to keep the pipe open; closing it is the stop signal.
    _stdin: ChildStdin,
    _supervisor: Child,
    name: String,
    pid_file: PathBuf,
}

impl Supervised {
    /// Starts `binary args…` with `envs` added to the environment and its output in `log`;
    /// `remove_dir` is deleted after it stops.
    pub fn spawn(
        binary: &Path,
        args: &[String],
        envs: &[(&str, &str)],
        log: &Path,
        remove_dir: Option<&Path>,
    ) -> Result<Self> {
        let mut supervisor = Command::new("bash")
            .arg("-c")
            .arg(SUPERVISOR)
            .arg("testenv-supervisor")
            .arg(log)
            .arg(remove_dir.map(Path::as_os_str).unwrap_or_default())
            .arg(binary)
            .args(args)
            .envs(envs.iter().copied())
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .with_context(|| format!("starting {}", binary.display()))?;
        let stdin = supervisor
            .stdin
            .take()
            .context("the supervisor's stdin was not piped")?;
        // The supervisor names the file after its own pid (`$$`), so processes sharing a log
        // never share a pid file.
        let pid_file = PathBuf::from(format!("{}.{}.pid", log.display(), supervisor.id()));
        Ok(Supervised {
            _stdin: stdin,
            _supervisor: supervisor,
            name: binary
                .file_name()
                .unwrap_or_default()
                .to_string_lossy()
                .into_owned(),
            pid_file,
        })
    }

    /// The binary's file name, for messages.
    pub fn name(&self) -> String {
        self.name.clone()
    }

    /// The file where the supervisor records the process's pid.
    pub fn pid_file(&self) -> &Path {
        &self.pid_file
    }

    /// Kills the process at once with SIGKILL, as a crash or an OOM kill would: no cleanup
    /// runs in it. Waits (bounded) until the supervisor has recorded its pid.
    pub fn kill_hard(&self) -> Result<()> {
        self.signal("KILL")
    }

    /// Sends signal `name` (e.g. `STOP`, `CONT`, `KILL`) to the process. `STOP` freezes it as a
    /// long pause would (a node freeze, a stop-the-world stall), `CONT` lets it go on.
    pub fn signal(&self, name: &str) -> Result<()> {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        let pid = loop {
            match std::fs::read_to_string(&self.pid_file) {
                Ok(pid) if !pid.trim().is_empty() => break pid.trim().to_owned(),
                _ if std::time::Instant::now() > deadline => {
                    anyhow::bail!("{} never appeared", self.pid_file.display())
                }
                _ => std::thread::sleep(std::time::Duration::from_millis(20)),
            }
        };
        let status = Command::new("kill")
            .args([format!("-{name}"), pid.clone()])
            .status()?;
        anyhow::ensure!(status.success(), "kill -{name} {pid} failed");
        Ok(())
    }
}

/// Whether the process whose pid the supervisor recorded in `pid_file` has exited. Its
/// supervisor reaps it only when told to stop, so until then an exited server is a zombie.
pub fn exited(pid_file: &Path) -> bool {
    let Ok(pid) = std::fs::read_to_string(pid_file) else {
        return false; // not started yet
    };
    match std::fs::read_to_string(format!("/proc/{}/stat", pid.trim())) {
        // The state follows the command name in parentheses, which may itself hold spaces.
        Ok(stat) => stat
            .rsplit_once(')')
            .is_some_and(|(_, rest)| rest.trim_start().starts_with('Z')),
        Err(_) => true,
    }
}
