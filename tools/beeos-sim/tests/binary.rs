//! The `beeos-sim` binary: prints its URL once bound, takes tokens from flags and a file,
//! applies fault and timing flags, and exits cleanly on SIGTERM.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::Client;
use reqwest::{Method, StatusCode};
use serde_json::json;

/// A running binary, killed on drop if a test fails before stopping it.
struct Running {
    child: Child,
    url: String,
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn spawn(args: &[&str]) -> Running {
    let mut child = Command::new(env!("CARGO_BIN_EXE_beeos-sim"))
        .args(["--listen", "127.0.0.1:0"])
        .args(args)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("beeos-sim starts");
    let stdout = child.stdout.take().expect("stdout");
    let mut line = String::new();
    BufReader::new(stdout)
        .read_line(&mut line)
        .expect("a line on stdout");
    let url = line
        .trim()
        .strip_prefix("listening on ")
        .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
        .to_owned();
    Running { child, url }
}

fn terminate(running: &mut Running) -> std::process::ExitStatus {
    let status = Command::new("kill")
        .args(["-TERM", &running.child.id().to_string()])
        .status()
        .expect("kill runs");
    assert!(status.success());
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        if let Some(exit) = running.child.try_wait().expect("try_wait") {
            return exit;
        }
        assert!(
            Instant::now() < deadline,
            "beeos-sim did not exit on SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[tokio::test]
async fn the_binary_serves_flags_and_a_tokens_file_and_stops_on_sigterm() {
    let dir = std::env::temp_dir().join(format!("beeos-sim-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let tokens = dir.join("tokens");
    std::fs::write(&tokens, "# owners\noag_file = carol\n").unwrap();

    let mut running = spawn(&[
        "--token",
        "oag_flag=dave",
        "--tokens-file",
        tokens.to_str().unwrap(),
        "--pending-ms",
        "60000",
        "--fault",
        "providers:502:1.0:1",
        "--fault-drop-deploy",
        "reset",
        "--fault-drop-deploy-count",
        "1",
    ]);
    assert!(
        running.url.starts_with("http://127.0.0.1:"),
        "{}",
        running.url
    );
    let client = Client::new(running.url.clone());

    client
        .get("/api/v1/providers", "oag_flag")
        .await
        .assert_error(502, "bad_gateway");
    assert_eq!(
        client.get("/api/v1/providers", "oag_file").await.status,
        StatusCode::OK
    );
    let lost = client
        .try_call(
            Method::POST,
            "/api/v1/instances",
            Some("oag_file"),
            Some(json!({"name": "c", "variantId": "beeos-claw-small"})),
        )
        .await;
    assert!(lost.is_err());
    let listed = client.get("/api/v1/instances", "oag_file").await;
    assert_eq!(listed.body["total"], 1);
    assert_eq!(listed.data()[0]["ownerId"], "carol");
    assert_eq!(listed.data()[0]["status"], "pending");
    let settings = client.admin(Method::GET, "/_sim/settings", None).await.body;
    assert_eq!(settings["pendingMs"], 60000);

    let exit = terminate(&mut running);
    assert!(exit.success(), "{exit:?}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn bad_flags_are_refused_before_binding() {
    for args in [
        &["--token", "no-equals-sign"][..],
        &["--fault", "deploy:404"][..],
        &["--fault-drop-deploy", "explode"][..],
        &["--tokens-file", "/nonexistent/tokens"][..],
    ] {
        let output = Command::new(env!("CARGO_BIN_EXE_beeos-sim"))
            .args(["--listen", "127.0.0.1:0"])
            .args(args)
            .output()
            .expect("runs");
        assert!(!output.status.success(), "{args:?} was accepted");
        assert!(
            output.stdout.is_empty(),
            "{args:?} printed {:?}",
            String::from_utf8_lossy(&output.stdout)
        );
    }
}
