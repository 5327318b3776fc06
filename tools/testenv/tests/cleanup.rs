//! A control plane must not outlive the process that started it, however that process ends:
//! here it is SIGKILLed, so no destructor or signal handler of its runs.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

#[test]
fn servers_and_files_go_when_the_owner_is_killed() {
    let kubeconfig = tempfile::NamedTempFile::new().expect("a temporary file");
    let mut owner = Command::new(env!("CARGO_BIN_EXE_testenv"))
        .arg("up")
        .arg(kubeconfig.path())
        .stdout(Stdio::piped())
        .spawn()
        .expect("testenv starts");
    let mut line = String::new();
    BufReader::new(owner.stdout.take().expect("piped"))
        .read_line(&mut line)
        .expect("testenv reports");
    let state = PathBuf::from(
        line.trim()
            .rsplit("state: ")
            .next()
            .expect("the line names the state directory"),
    );
    assert!(state.join("etcd-data").is_dir(), "{line}");
    let pids: Vec<String> = std::fs::read_dir(&state)
        .expect("readable")
        .filter_map(|entry| {
            let path = entry.ok()?.path();
            path.to_str()?
                .ends_with(".pid")
                .then(|| std::fs::read_to_string(&path).ok())?
        })
        .map(|pid| pid.trim().to_owned())
        .collect();
    assert_eq!(
        pids.len(),
        3,
        "etcd, kube-apiserver and kube-controller-manager are supervised"
    );

    owner.kill().expect("SIGKILL");
    owner.wait().expect("reaped");

    let alive = |pid: &str| {
        Command::new("kill")
            .args(["-0", pid])
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    while pids.iter().any(|pid| alive(pid)) || state.exists() {
        assert!(
            Instant::now() < deadline,
            "left behind: servers alive {:?}, state dir exists {}",
            pids.iter().filter(|pid| alive(pid)).collect::<Vec<_>>(),
            state.exists()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}
