//! beeos-operator: parses the configuration, starts logging, the controller and the probe and
//! metrics server, and shuts them down cleanly on SIGTERM or Ctrl-C. With `--leader-elect`, the
//! controller runs only while this replica holds the Lease ([`leader`]).

mod leader;

use std::num::NonZeroU32;
use std::sync::Arc;

use anyhow::{Context as _, Result};
use clap::Parser;
use kube::CustomResourceExt;
use kube::runtime::events::Reporter;

use beeos_operator::beeos::{ClientOptions, Credential, RateLimiters};
use beeos_operator::config::{Cli, Command, RunArgs};
use beeos_operator::controller::{self, BeeosClients, Context};
use beeos_operator::crd::BeeosInstance;
use beeos_operator::metrics::{BeeosCallMetrics, Metrics};
use beeos_operator::server::{self, Health};
use beeos_operator::telemetry;

// jemalloc gives freed memory back to the system within seconds (its background threads
// purge it); glibc's malloc kept what the create burst had used, so at 10,000 resources the
// steady RSS was about twice the live heap. It also behaves the same in the glibc image and
// the musl one.
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

#[tokio::main]
async fn main() -> Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Some(Command::Crd) => {
            print!("{}", serde_yaml_ng::to_string(&BeeosInstance::crd())?);
            Ok(())
        }
        Some(Command::Run) | None => run(cli.run).await,
    }
}

async fn run(args: RunArgs) -> Result<()> {
    telemetry::init(args.log_format);
    let default_credential = default_credential(&args)?;
    let rate_limiters = match (
        NonZeroU32::new(args.rate_limit),
        NonZeroU32::new(args.rate_burst),
    ) {
        (Some(rate), Some(burst)) => Some(RateLimiters::per_second(rate, burst)),
        (Some(rate), None) => Some(RateLimiters::per_second(rate, rate)),
        (None, _) => None,
    };
    let metrics = Arc::new(Metrics::default());
    let options = ClientOptions {
        timeout: args.beeos_timeout,
        rate_limiters,
        observer: Some(Arc::new(BeeosCallMetrics(metrics.clone()))),
        ..ClientOptions::default()
    };
    let client = kube::Client::try_default()
        .await
        .context("connecting to Kubernetes")?;
    let health = Arc::new(Health::new(metrics.clone()));
    let reporter = Reporter {
        controller: "beeos-operator".into(),
        instance: std::env::var("POD_NAME").ok(),
    };
    let context = Arc::new(Context::new(
        client.clone(),
        BeeosClients::new(args.beeos_url.clone(), options, default_credential),
        args.intervals(),
        metrics.clone(),
        reporter,
    ));

    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let stopped = move || {
        let mut stop_rx = stop_rx.clone();
        async move {
            let _ = stop_rx.wait_for(|stop| *stop).await;
        }
    };
    let server = tokio::spawn(server::serve(
        args.probe_address,
        health.clone(),
        metrics,
        stopped(),
    ));
    tokio::spawn(async move {
        shutdown_signal().await;
        tracing::info!("shutting down");
        let _ = stop_tx.send(true);
    });

    tracing::info!(beeos_url = %args.beeos_url, namespaces = ?args.namespaces(), "starting");
    // Ready once the watches have listed: until then a reconcile would act on a partial cache.
    let synced = {
        let health = health.clone();
        move || health.set_ready(true)
    };
    let namespaces = args.namespaces();
    let concurrency = args.concurrency;
    if args.leader_elect {
        let settings = leader::Settings::new(
            &args,
            client.default_namespace(),
            std::env::var("POD_NAME").ok(),
            rand::random(),
        )?;
        let outcome = leader::run(client, &settings, &health, stopped(), move |stop| {
            controller::run(context, namespaces, concurrency, stop, synced)
        })
        .await?;
        if let leader::Outcome::Lost(reason) = outcome {
            // Whatever the controller was doing was dropped mid-flight; a fresh process starts
            // as a standby with clean caches.
            anyhow::bail!("lost leadership: {reason}; exiting to start clean");
        }
    } else {
        health.set_leader(true);
        controller::run(context, namespaces, concurrency, stopped(), synced).await;
        health.set_ready(false);
        health.set_leader(false);
    }
    server.await??;
    Ok(())
}

/// The default credential from `--beeos-token-file` or `BEEOS_TOKEN`, if either is set.
fn default_credential(args: &RunArgs) -> Result<Option<Credential>> {
    let token = match &args.beeos_token_file {
        Some(path) => Some(
            std::fs::read_to_string(path)
                .with_context(|| format!("reading the BeeOS token file {}", path.display()))?,
        ),
        None => std::env::var("BEEOS_TOKEN").ok(),
    };
    token
        .map(|token| Credential::new(token).context("the default BeeOS token"))
        .transpose()
}

async fn shutdown_signal() {
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("installing a SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = terminate.recv() => {}
    }
}
