//! Command-line flags and their environment variables.
//!
//! The BeeOS token is never a flag value (flags are visible in the process list): it comes from
//! `BEEOS_TOKEN` or a file (`--beeos-token-file`, e.g. a mounted Secret).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

use crate::controller::{Intervals, Namespaces};
use crate::telemetry::LogFormat;

#[derive(Debug, Parser)]
#[command(
    name = "beeos-operator",
    version,
    about = "Runs BeeOS AI-agent instances from BeeosInstance resources"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
    #[command(flatten)]
    pub run: RunArgs,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the operator (the default).
    Run,
    /// Print the BeeosInstance CustomResourceDefinition as YAML.
    Crd,
}

#[derive(Debug, Args)]
pub struct RunArgs {
    /// BeeOS API base URL.
    #[arg(long, env = "BEEOS_URL", default_value = "https://openapi.beeos.ai")]
    pub beeos_url: String,

    /// File holding the default BeeOS token (else `BEEOS_TOKEN`); resources may bring their own.
    #[arg(long, env = "BEEOS_TOKEN_FILE")]
    pub beeos_token_file: Option<PathBuf>,

    /// Namespaces to watch, comma-separated; empty watches all.
    #[arg(
        long,
        env = "WATCH_NAMESPACES",
        value_delimiter = ',',
        default_value = ""
    )]
    pub namespaces: Vec<String>,

    /// Resources reconciled at once.
    #[arg(long, env = "CONCURRENCY", default_value_t = 16)]
    pub concurrency: u16,

    /// Poll interval while an instance changes state.
    #[arg(long, env = "TRANSITION_POLL", default_value = "3s", value_parser = humantime::parse_duration)]
    pub transition_poll: Duration,

    /// Poll interval while an instance is steady.
    #[arg(long, env = "STEADY_POLL", default_value = "60s", value_parser = humantime::parse_duration)]
    pub steady_poll: Duration,

    /// Retry interval for problems that need a person (changes to the resource retry at once).
    #[arg(long, env = "STALLED_RETRY", default_value = "10m", value_parser = humantime::parse_duration)]
    pub stalled_retry: Duration,

    /// First backoff after a transient BeeOS failure (doubles per failure, with jitter).
    #[arg(long, env = "MIN_BACKOFF", default_value = "1s", value_parser = humantime::parse_duration)]
    pub min_backoff: Duration,

    /// Longest backoff after transient BeeOS failures.
    #[arg(long, env = "MAX_BACKOFF", default_value = "5m", value_parser = humantime::parse_duration)]
    pub max_backoff: Duration,

    /// How long a deploy whose answer was lost may take to appear in BeeOS's list before it is
    /// deployed again.
    #[arg(long, env = "DEPLOY_GRACE", default_value = "2m", value_parser = humantime::parse_duration)]
    pub deploy_grace: Duration,

    /// How long an instance may stay in transition (or running but not online) before its
    /// resource is Stalled with reason TransitionTimeout.
    #[arg(long, env = "TRANSITION_TIMEOUT", default_value = "15m", value_parser = humantime::parse_duration)]
    pub transition_timeout: Duration,

    /// Retry interval while a Secret a resource names does not exist yet (a Secret read, no
    /// BeeOS call); a change to a Secret the operator already watches heals at once.
    #[arg(long, env = "MISSING_SECRET_RETRY", default_value = "10s", value_parser = humantime::parse_duration)]
    pub missing_secret_retry: Duration,

    /// How long before a trial instance expires its resource gets a TrialExpiring warning event.
    #[arg(long, env = "TRIAL_EXPIRY_WARNING", default_value = "72h", value_parser = humantime::parse_duration)]
    pub trial_expiry_warning: Duration,

    /// Timeout of each BeeOS request.
    #[arg(long, env = "BEEOS_TIMEOUT", default_value = "10s", value_parser = humantime::parse_duration)]
    pub beeos_timeout: Duration,

    /// BeeOS calls per second per credential and endpoint (client-side limit, as BeeOS counts
    /// its quota); 0 disables it.
    #[arg(long, env = "BEEOS_RATE_LIMIT", default_value_t = 10)]
    pub rate_limit: u32,

    /// Burst allowed above the rate limit.
    #[arg(long, env = "BEEOS_RATE_BURST", default_value_t = 20)]
    pub rate_burst: u32,

    /// Address of the /healthz, /readyz and /metrics server.
    #[arg(long, env = "PROBE_ADDRESS", default_value = "0.0.0.0:8080")]
    pub probe_address: SocketAddr,

    /// Log format.
    #[arg(long, env = "LOG_FORMAT", value_enum, default_value = "text")]
    pub log_format: LogFormat,

    /// Run the controller only while holding a Lease, so that of several replicas one works and
    /// the others stand by.
    #[arg(long, env = "LEADER_ELECT")]
    pub leader_elect: bool,

    /// Namespace of the Lease (default: the namespace of the operator's ServiceAccount, or of
    /// the kubeconfig's context).
    #[arg(long, env = "LEADER_ELECTION_NAMESPACE")]
    pub leader_election_namespace: Option<String>,

    /// Name of the Lease.
    #[arg(
        long,
        env = "LEADER_ELECTION_LEASE_NAME",
        default_value = "beeos-operator"
    )]
    pub leader_election_lease_name: String,

    /// How long the Lease holds without renewal: a leader that vanishes without releasing it is
    /// replaced after this long (whole seconds).
    #[arg(long, env = "LEADER_ELECTION_LEASE_DURATION", default_value = "15s", value_parser = humantime::parse_duration)]
    pub leader_election_lease_duration: Duration,

    /// How often the leader renews the Lease (whole seconds, shorter than the lease duration).
    #[arg(long, env = "LEADER_ELECTION_RENEW_INTERVAL", default_value = "5s", value_parser = humantime::parse_duration)]
    pub leader_election_renew_interval: Duration,

    /// How often a standby checks whether the Lease was released, to take over at once.
    #[arg(long, env = "LEADER_ELECTION_RETRY_PERIOD", default_value = "2s", value_parser = humantime::parse_duration)]
    pub leader_election_retry_period: Duration,
}

impl RunArgs {
    pub fn intervals(&self) -> Intervals {
        Intervals {
            transition_poll: self.transition_poll,
            steady_poll: self.steady_poll,
            stalled_retry: self.stalled_retry,
            missing_secret_retry: self.missing_secret_retry,
            transition_timeout: self.transition_timeout,
            trial_expiry_warning: self.trial_expiry_warning,
            min_backoff: self.min_backoff,
            max_backoff: self.max_backoff,
            deploy_grace: self.deploy_grace,
        }
    }

    pub fn namespaces(&self) -> Namespaces {
        let names: Vec<String> = self
            .namespaces
            .iter()
            .map(|ns| ns.trim().to_owned())
            .filter(|ns| !ns.is_empty())
            .collect();
        if names.is_empty() {
            Namespaces::All
        } else {
            Namespaces::Only(names)
        }
    }
}
