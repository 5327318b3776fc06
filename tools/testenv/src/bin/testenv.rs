//! `testenv`: the test control plane from the command line.
//!
//! - `testenv up [KUBECONFIG]` starts a control plane, copies its admin kubeconfig to KUBECONFIG
//!   (default `./.tools/kubeconfig`) and runs until interrupted (used by the demo).
//! - `testenv start-time [RUNS]` starts and stops a control plane RUNS times (default 5) and
//!   prints the median start-to-ready time (used by `make bench`).
//! - `testenv node [IMAGE.tar]...` starts a real node (tools/node) with those images imported,
//!   prints `node ready: STATE_DIR` and runs until killed, however (used by the node's cleanup
//!   test).

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, Result, bail};

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("up") => up(args.get(1).map(PathBuf::from)),
        Some("start-time") => start_time(match args.get(1) {
            Some(runs) => runs.parse().context("RUNS must be a number")?,
            None => 5,
        }),
        Some("node") => node(args[1..].iter().map(PathBuf::from).collect()),
        _ => bail!(
            "usage: testenv up [KUBECONFIG] | testenv start-time [RUNS] | testenv node [IMAGE]..."
        ),
    }
}

fn up(kubeconfig: Option<PathBuf>) -> Result<()> {
    let kubeconfig = kubeconfig.unwrap_or_else(|| PathBuf::from(".tools/kubeconfig"));
    let control_plane = testenv::ControlPlane::start()?;
    if let Some(parent) = kubeconfig.parent() {
        std::fs::create_dir_all(parent)?;
    }
    std::fs::copy(control_plane.kubeconfig_path(), &kubeconfig)?;
    println!(
        "control plane ready at {}; kubeconfig: {}; state: {}",
        control_plane.server_url(),
        kubeconfig.display(),
        control_plane.dir().display()
    );
    // The supervisors stop the servers when this process ends, however it ends: park until a
    // signal (Ctrl-C, SIGTERM) ends it.
    loop {
        std::thread::park();
    }
}

fn node(images: Vec<PathBuf>) -> Result<()> {
    if let Some(reason) = testenv::node::node_unavailable() {
        bail!("{reason}");
    }
    let node = testenv::node::Node::start(&testenv::node::NodeOptions {
        images,
        simulator: None,
    })?;
    println!("node ready: {}", node.dir().display());
    // node.sh removes the node when its stdin (held by this process) closes.
    loop {
        std::thread::park();
    }
}

fn start_time(runs: usize) -> Result<()> {
    anyhow::ensure!(runs > 0, "RUNS must be at least 1");
    let mut seconds = Vec::with_capacity(runs);
    for run in 1..=runs {
        let started = Instant::now();
        let control_plane = testenv::ControlPlane::start()?;
        let elapsed = started.elapsed().as_secs_f64();
        drop(control_plane);
        println!("run {run}: ready after {elapsed:.2}s");
        seconds.push(elapsed);
    }
    seconds.sort_by(f64::total_cmp);
    println!(
        "control plane start-to-ready: median {:.2}s over {runs} runs (min {:.2}s, max {:.2}s)",
        seconds[runs / 2],
        seconds[0],
        seconds[runs - 1]
    );
    Ok(())
}
