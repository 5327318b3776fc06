//! A node must not outlive the process that started it, however that process ends, and must
//! leave the machine as it found it: here its owner is SIGKILLed, so no destructor or signal
//! handler of the owner runs. Skipped loudly (failed when `CI=true`) where no node can run.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// The kernel-wide sysctls the kubelet changes.
const SYSCTLS: [&str; 4] = [
    "vm/overcommit_memory",
    "vm/panic_on_oom",
    "kernel/panic",
    "kernel/panic_on_oops",
];

fn sysctls() -> Vec<String> {
    SYSCTLS
        .iter()
        .map(|key| std::fs::read_to_string(format!("/proc/sys/{key}")).unwrap_or_default())
        .collect()
}

fn kubepods_cgroups() -> Vec<PathBuf> {
    let mut found = Vec::new();
    for hierarchy in std::fs::read_dir("/sys/fs/cgroup")
        .into_iter()
        .flatten()
        .flatten()
    {
        let kubepods = hierarchy.path().join("kubepods");
        if kubepods.is_dir() {
            found.push(kubepods);
        }
    }
    if Path::new("/sys/fs/cgroup/kubepods").is_dir() {
        found.push("/sys/fs/cgroup/kubepods".into());
    }
    found
}

/// Processes whose command line names `dir` (every server of the node does).
fn processes_naming(dir: &Path) -> Vec<String> {
    let needle = dir.display().to_string();
    std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| {
            let cmdline = std::fs::read(entry.path().join("cmdline")).ok()?;
            let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
            cmdline
                .contains(&needle)
                .then(|| format!("{}: {cmdline}", entry.file_name().to_string_lossy()))
        })
        .collect()
}

#[test]
fn node_and_its_changes_go_when_the_owner_is_killed() {
    if let Some(reason) = testenv::node::node_unavailable() {
        assert!(std::env::var("CI").as_deref() != Ok("true"), "{reason}");
        eprintln!("SKIPPED (not in CI): {reason}");
        return;
    }
    let before = sysctls();
    let mut owner = Command::new(env!("CARGO_BIN_EXE_testenv"))
        .arg("node")
        .stdout(Stdio::piped())
        .spawn()
        .expect("testenv starts");
    let mut line = String::new();
    BufReader::new(owner.stdout.take().expect("piped"))
        .read_line(&mut line)
        .expect("testenv reports");
    let state = PathBuf::from(
        line.trim()
            .strip_prefix("node ready: ")
            .unwrap_or_else(|| panic!("unexpected: {line}")),
    );
    assert!(state.join("kubeconfig").is_file(), "{line}");
    assert!(!processes_naming(&state).is_empty(), "the node runs");
    assert!(
        !kubepods_cgroups().is_empty(),
        "the kubelet made its cgroups"
    );

    owner.kill().expect("SIGKILL");
    owner.wait().expect("reaped");

    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let left = processes_naming(&state);
        let cgroups = kubepods_cgroups();
        let done = left.is_empty()
            && !state.exists()
            && cgroups.is_empty()
            && sysctls() == before
            && !Path::new("/var/tmp/beeos-node.restore").exists();
        if done {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "left behind: processes {left:?}, state dir {}, cgroups {cgroups:?}, sysctls {:?} \
             (before {before:?})",
            state.exists(),
            sysctls()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}
