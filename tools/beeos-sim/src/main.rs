//! The `beeos-sim` binary: reads flags, binds, prints `listening on http://ADDR` on stdout once
//! bound (tests read that line), logs to stderr, and stops on SIGTERM or SIGINT.

use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context;
use beeos_sim::{
    DEFAULT_HOLD_MS, DropDeployResponse, DropMode, Faults, Route, RouteFault, Settings,
    SettingsPatch, SimConfig, parse_fault_flag, parse_token_pair, parse_tokens_file, serve,
};
use clap::Parser;
use tokio::net::TcpListener;
use tracing_subscriber::EnvFilter;

/// A BeeOS public API simulator (instances and deploy catalog) with a test admin API under /_sim/.
#[derive(Debug, Parser)]
#[command(name = "beeos-sim", version)]
struct Args {
    /// Address to listen on; port 0 picks a free one (see the printed URL).
    #[arg(long, default_value = "127.0.0.1:8095")]
    listen: SocketAddr,
    /// A bearer token and the owner it authenticates as; repeatable.
    #[arg(long = "token", value_name = "TOKEN=OWNER", value_parser = parse_token_pair)]
    tokens: Vec<(String, String)>,
    /// A file of TOKEN=OWNER lines (# comments and blank lines allowed).
    #[arg(long, value_name = "PATH")]
    tokens_file: Option<PathBuf>,
    /// Time in `pending` after a deploy.
    #[arg(long, value_name = "MS")]
    pending_ms: Option<u64>,
    /// Time in `provisioning` after `pending`.
    #[arg(long, value_name = "MS")]
    provisioning_ms: Option<u64>,
    /// Time from stop to `stopped`.
    #[arg(long, value_name = "MS")]
    stop_ms: Option<u64>,
    /// Time from start to `running`.
    #[arg(long, value_name = "MS")]
    start_ms: Option<u64>,
    /// Time from restart to `running`.
    #[arg(long, value_name = "MS")]
    restart_ms: Option<u64>,
    /// Time from destroy to `terminated`.
    #[arg(long, value_name = "MS")]
    destroy_ms: Option<u64>,
    /// How long `terminated` instances stay visible before 404.
    #[arg(long, value_name = "MS")]
    terminated_retention_ms: Option<u64>,
    /// Requests per second per token and endpoint (0 = off, the default).
    #[arg(long, value_name = "N")]
    rate_limit_per_second: Option<f64>,
    /// Burst per token and endpoint.
    #[arg(long, value_name = "N")]
    rate_limit_burst: Option<u32>,
    /// Lifetime of a trial instance (default 72 h).
    #[arg(long, value_name = "MS")]
    trial_ms: Option<u64>,
    /// Faults to start with, as JSON in the shape of PUT /_sim/faults; the flags below add to it.
    #[arg(long, value_name = "PATH")]
    faults_file: Option<PathBuf>,
    /// Latency added to every contract route.
    #[arg(long, value_name = "MS")]
    latency_ms: Option<u64>,
    /// Fail a route (deploy, list, get, start, stop, restart, destroy, providers, regions,
    /// models) with STATUS (429, 500, 502, 503, 504) for a share RATE of calls, COUNT times.
    #[arg(long = "fault", value_name = "ROUTE:STATUS[:RATE[:COUNT]]", value_parser = parse_fault_flag)]
    route_faults: Vec<(Route, RouteFault)>,
    /// Commit deploys but lose the answer: `reset` closes the connection, `timeout` holds it.
    #[arg(long, value_name = "MODE", value_parser = parse_drop_mode)]
    fault_drop_deploy: Option<DropMode>,
    /// Drop only this many deploy answers (default: all).
    #[arg(long, value_name = "N", requires = "fault_drop_deploy")]
    fault_drop_deploy_count: Option<u32>,
    /// How long `timeout` holds a dropped deploy before closing the connection.
    #[arg(long, value_name = "MS", default_value_t = DEFAULT_HOLD_MS)]
    fault_drop_deploy_hold_ms: u64,
}

fn parse_drop_mode(text: &str) -> Result<DropMode, String> {
    match text {
        "reset" => Ok(DropMode::Reset),
        "timeout" => Ok(DropMode::Timeout),
        _ => Err("expected reset or timeout".to_owned()),
    }
}

impl Args {
    fn config(&self) -> anyhow::Result<SimConfig> {
        let mut tokens = self.tokens.clone();
        if let Some(path) = &self.tokens_file {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("reading {}", path.display()))?;
            let parsed =
                parse_tokens_file(&text).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
            tokens.extend(parsed);
        }
        let settings = SettingsPatch {
            pending_ms: self.pending_ms,
            provisioning_ms: self.provisioning_ms,
            stop_ms: self.stop_ms,
            start_ms: self.start_ms,
            restart_ms: self.restart_ms,
            destroy_ms: self.destroy_ms,
            terminated_retention_ms: self.terminated_retention_ms,
            rate_limit_per_second: self.rate_limit_per_second,
            rate_limit_burst: self.rate_limit_burst,
            trial_ms: self.trial_ms,
        }
        .applied_to(&Settings::default())
        .map_err(anyhow::Error::msg)?;
        let mut faults = match &self.faults_file {
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .with_context(|| format!("reading {}", path.display()))?;
                serde_json::from_str::<Faults>(&text)
                    .with_context(|| format!("parsing {}", path.display()))?
            }
            None => Faults::default(),
        };
        if let Some(ms) = self.latency_ms {
            faults.latency_ms = ms;
        }
        faults.routes.extend(self.route_faults.iter().cloned());
        if let Some(mode) = self.fault_drop_deploy {
            faults.drop_deploy_response = Some(DropDeployResponse {
                mode,
                count: self.fault_drop_deploy_count,
                hold_ms: self.fault_drop_deploy_hold_ms,
            });
        }
        faults.validate().map_err(anyhow::Error::msg)?;
        Ok(SimConfig {
            tokens,
            settings,
            faults,
        })
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .init();
    let args = Args::parse();
    let config = args.config()?;
    if config.tokens.is_empty() {
        tracing::warn!("no --token or --tokens-file: every API call will answer 401");
    }
    let listener = TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("binding {}", args.listen))?;
    let addr = listener.local_addr()?;
    let mut stdout = std::io::stdout();
    writeln!(stdout, "listening on http://{addr}")?;
    stdout.flush()?;
    tracing::info!(%addr, tokens = config.tokens.len(), "beeos-sim started");
    tokio::select! {
        result = serve(listener, config) => result?,
        signal = shutdown_signal() => {
            tracing::info!(signal = signal?, "shutting down");
        }
    }
    Ok(())
}

/// Waits for SIGTERM or SIGINT and names it.
async fn shutdown_signal() -> std::io::Result<&'static str> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    Ok(tokio::select! {
        _ = term.recv() => "SIGTERM",
        _ = int.recv() => "SIGINT",
    })
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::*;

    #[test]
    fn the_flags_are_consistent() {
        Args::command().debug_assert();
    }

    #[test]
    fn fault_flags_build_the_faults() {
        let args = Args::parse_from([
            "beeos-sim",
            "--latency-ms",
            "5",
            "--fault",
            "get:503:0.5:2",
            "--fault-drop-deploy",
            "timeout",
            "--fault-drop-deploy-hold-ms",
            "100",
            "--rate-limit-per-second",
            "3",
        ]);
        let config = args.config().unwrap();
        assert_eq!(config.faults.latency_ms, 5);
        assert_eq!(config.faults.routes[&Route::Get].count, Some(2));
        let drop = config.faults.drop_deploy_response.unwrap();
        assert_eq!(
            (drop.mode, drop.count, drop.hold_ms),
            (DropMode::Timeout, None, 100)
        );
        assert_eq!(config.settings.rate_limit_per_second, 3.0);
        assert_eq!(config.settings.pending_ms, Settings::default().pending_ms);
    }
}
