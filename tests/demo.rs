//! `make demo-on-cluster` against a cluster that stands in for yours (the test control plane,
//! reached through a kubeconfig whose current context names it): the demo says which cluster it
//! touches, uses that context and no other, brings every example to Ready with the operator and
//! the simulator running here, and leaves nothing behind — its namespace is deleted, and the CRD
//! too when the demo had to install it.

mod support;

use std::path::Path;
use std::process::{Command, Stdio};

use anyhow::{Context, Result, ensure};
use k8s_openapi::api::core::v1::Namespace;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::Api;
use serde_json::json;
use support::{ensure_crd, repo_path};

const CRD: &str = "beeosinstances.beeos.ai";

/// A kubeconfig like a user's: the current context is the test control plane, and another
/// context points at a server that does not exist, which the demo must not use.
fn users_kubeconfig(dir: &Path) -> Result<std::path::PathBuf> {
    let control_plane = testenv::shared();
    let mut kubeconfig: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(control_plane.kubeconfig_path())?)?;
    let cluster = kubeconfig["clusters"][0]["cluster"].clone();
    let user = kubeconfig["users"][0]["name"].clone();
    kubeconfig["clusters"] = json!([
        {"name": "elsewhere", "cluster": {"server": "https://127.0.0.1:1"}},
        {"name": "your-cluster", "cluster": cluster},
    ]);
    kubeconfig["contexts"] = json!([
        {"name": "elsewhere", "context": {"cluster": "elsewhere", "user": user}},
        {"name": "your-cluster", "context": {"cluster": "your-cluster", "user": user}},
    ]);
    kubeconfig["current-context"] = json!("your-cluster");
    let path = dir.join("users-kubeconfig");
    std::fs::write(&path, kubeconfig.to_string())?;
    Ok(path)
}

/// Runs `tools/demo.sh --on-cluster --check` without a terminal, as the user whose kubeconfig
/// is `kubeconfig`, and returns what it printed.
async fn demo_on_cluster(kubeconfig: &Path) -> Result<String> {
    let kubeconfig = kubeconfig.to_owned();
    let output = tokio::task::spawn_blocking(move || {
        // The kubectl `make testbins` built (make puts it first on PATH too).
        let path = format!(
            "{}:{}",
            testenv::bin_dir().display(),
            std::env::var("PATH").unwrap_or_default()
        );
        Command::new(repo_path("tools/demo.sh"))
            .args(["--on-cluster", "--check"])
            .env("KUBECONFIG", kubeconfig)
            .env("PATH", path)
            .stdin(Stdio::null())
            .output()
    })
    .await?
    .context("running tools/demo.sh")?;
    let printed = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    ensure!(
        output.status.success(),
        "demo-on-cluster failed:\n{printed}"
    );
    Ok(printed)
}

/// The namespace the demo said it would create.
fn demo_namespace(printed: &str) -> Result<String> {
    printed
        .lines()
        .find_map(|line| line.split("namespace ").nth(1)?.split_whitespace().next())
        .map(str::to_owned)
        .context("the demo did not name its namespace")
}

/// Gone, or on its way (a control plane without a namespace controller keeps it Terminating).
async fn assert_namespace_deleted(name: &str) -> Result<()> {
    let namespaces: Api<Namespace> = Api::all(testenv::shared().admin_client());
    if let Some(namespace) = namespaces.get_opt(name).await? {
        ensure!(
            namespace.metadata.deletion_timestamp.is_some(),
            "namespace {name} was left behind"
        );
    }
    Ok(())
}

#[tokio::test]
async fn demo_on_cluster_uses_the_current_context_and_leaves_nothing_behind() -> Result<()> {
    let control_plane = testenv::shared();
    let client = control_plane.admin_client();
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    let kubeconfig = users_kubeconfig(control_plane.dir())?;

    // A cluster without the CRD: the demo installs it, and removes it on exit.
    ensure!(crds.get_opt(CRD).await?.is_none(), "the CRD exists already");
    let printed = demo_on_cluster(&kubeconfig).await?;
    assert!(
        printed.contains(&format!(
            "context 'your-cluster' at {}",
            control_plane.server_url()
        )),
        "the demo did not say which cluster it touches:\n{printed}"
    );
    assert!(printed.contains("every example is Ready"), "{printed}");
    for example in [
        "catalog-agent",
        "research-agent",
        "standby-agent",
        "team-agent",
    ] {
        assert!(printed.contains(example), "{example} missing:\n{printed}");
    }
    let first_ready = printed
        .lines()
        .find(|line| line.contains("first BeeosInstance Ready"))
        .context("no time to the first Ready instance")?;
    println!("{first_ready}");
    assert_namespace_deleted(&demo_namespace(&printed)?).await?;
    ensure!(
        crds.get_opt(CRD)
            .await?
            .is_none_or(|crd| crd.metadata.deletion_timestamp.is_some()),
        "the CRD the demo installed is still there"
    );

    // A cluster that has the CRD already (say, with the operator installed): it stays.
    let started = tokio::time::Instant::now();
    while crds.get_opt(CRD).await?.is_some() {
        ensure!(
            started.elapsed() < support::DEADLINE,
            "the CRD was never removed"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    ensure_crd(&client).await?;
    let printed = demo_on_cluster(&kubeconfig).await?;
    let namespace = demo_namespace(&printed)?;
    assert_namespace_deleted(&namespace).await?;
    ensure!(
        crds.get_opt(CRD)
            .await?
            .is_some_and(|crd| crd.metadata.deletion_timestamp.is_none()),
        "the demo removed a CRD it did not install"
    );
    let left = Api::<beeos_operator::crd::BeeosInstance>::namespaced(client, &namespace)
        .list(&Default::default())
        .await?;
    ensure!(
        left.items.is_empty(),
        "BeeosInstances left behind: {}",
        left.items.len()
    );
    Ok(())
}
