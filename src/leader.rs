//! Leader election on a `coordination.k8s.io` Lease (kube-lease-manager): of several replicas,
//! only the one holding the Lease runs the controller; the others stand by, Ready, serving
//! probes and metrics.
//!
//! - A standby is Ready once it has read (or created) the Lease: it reaches the API server and
//!   may use the Lease. It checks every retry period whether the holder released the Lease, so
//!   a rollout or a deleted Pod hands over in seconds; a holder that vanished without releasing
//!   is replaced when its Lease expires.
//! - The leader is not Ready until its watches have synced (the controller says so).
//! - Asked to stop, the leader stops the controller (in-flight reconciles get a few seconds to
//!   finish, still under the renewed Lease), then releases the Lease.
//! - A leader that loses the Lease (taken by another replica, or renewal failed) stops
//!   reconciling at once — the controller future is dropped mid-flight — and the process exits
//!   non-zero, to start clean as a standby.
//!
//! It decides nothing about resources: the controller runs unchanged under it.

use std::future::Future;
use std::pin::Pin;
use std::time::{Duration, SystemTime};

use anyhow::{Context as _, Result, bail};
use k8s_openapi::api::coordination::v1::Lease;
use kube::{Api, Client};
use kube_lease_manager::{DurationSeconds, LeaseManager, LeaseManagerBuilder};
use tokio::sync::watch;

use beeos_operator::config::RunArgs;
use beeos_operator::server::Health;

/// Where the Lease is, who we are, and its timing.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Settings {
    pub namespace: String,
    pub lease_name: String,
    pub identity: String,
    /// Seconds the Lease holds without renewal.
    pub duration: DurationSeconds,
    /// Seconds before expiry at which the leader renews (duration − renew interval).
    pub grace: DurationSeconds,
    pub retry_period: Duration,
}

impl Settings {
    /// The settings from the flags. `default_namespace` is the client's (the ServiceAccount's
    /// in a Pod); `pod_name` names the replica, and a random suffix tells apart two processes
    /// that share it (a restarted container).
    pub fn new(
        args: &RunArgs,
        default_namespace: &str,
        pod_name: Option<String>,
        suffix: u32,
    ) -> Result<Self> {
        let duration = whole_seconds(args.leader_election_lease_duration, "lease duration")?;
        let renew = whole_seconds(args.leader_election_renew_interval, "renew interval")?;
        if renew >= duration {
            bail!(
                "the leader election renew interval ({renew}s) must be shorter than the lease \
                 duration ({duration}s)"
            );
        }
        if args.leader_election_retry_period.is_zero() {
            bail!("the leader election retry period must not be zero");
        }
        let replica = pod_name
            .filter(|name| !name.is_empty())
            .unwrap_or_else(hostname);
        Ok(Self {
            namespace: args
                .leader_election_namespace
                .clone()
                .filter(|ns| !ns.is_empty())
                .unwrap_or_else(|| default_namespace.to_owned()),
            lease_name: args.leader_election_lease_name.clone(),
            identity: format!("{replica}_{suffix:08x}"),
            duration,
            grace: duration - renew,
            retry_period: args.leader_election_retry_period,
        })
    }
}

fn whole_seconds(duration: Duration, what: &str) -> Result<DurationSeconds> {
    if duration.subsec_nanos() != 0 || duration.as_secs() == 0 {
        bail!("the leader election {what} must be a whole number of seconds, at least 1s");
    }
    Ok(duration.as_secs())
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|name| name.trim().to_owned())
        .unwrap_or_else(|_| "beeos-operator".to_owned())
}

/// How a run under leader election ended.
#[derive(Debug)]
pub enum Outcome {
    /// Asked to stop: the controller (if it ran) has stopped and the Lease was released.
    Stopped,
    /// The Lease was lost while leading; the controller was dropped at once.
    Lost(String),
}

/// How long a leader asked to stop lets in-flight reconciles finish before it drops them and
/// releases the Lease anyway: within the kubelet's default 30s grace period, and a release
/// hands over far sooner than the Lease's expiry would.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);

/// The future that tells the controller to stop.
pub type Stop = Pin<Box<dyn Future<Output = ()> + Send + Sync>>;

/// Stands by until this replica holds the Lease, then runs `lead(stop)` (the controller) while
/// it does. Returns when `shutdown` completes (after stopping the controller and releasing the
/// Lease) or when the Lease is lost.
pub async fn run<F, Fut>(
    client: Client,
    settings: &Settings,
    health: &Health,
    shutdown: impl Future<Output = ()>,
    lead: F,
) -> Result<Outcome>
where
    F: FnOnce(Stop) -> Fut,
    Fut: Future<Output = ()>,
{
    tokio::pin!(shutdown);
    let leases: Api<Lease> = Api::namespaced(client.clone(), &settings.namespace);
    let mut manager = tokio::select! {
        _ = &mut shutdown => return Ok(Outcome::Stopped),
        manager = build_with_retry(&client, settings) => manager,
    };
    tracing::info!(
        lease = %settings.lease_name,
        namespace = %settings.namespace,
        identity = %settings.identity,
        "standing by for the Lease"
    );
    health.set_ready(true);

    let mut poll = tokio::time::interval(settings.retry_period);
    poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let next = {
            let changed = manager.changed();
            tokio::pin!(changed);
            loop {
                tokio::select! {
                    _ = &mut shutdown => return Ok(Outcome::Stopped),
                    result = &mut changed => break match result {
                        Ok(true) => Standby::Leading,
                        Ok(false) => Standby::Again,
                        Err(err) => {
                            tracing::warn!(error = %err, "watching the Lease failed; starting over");
                            Standby::Rebuild
                        }
                    },
                    // The manager sleeps until the holder's Lease would expire; a released
                    // Lease is free at once, which only a fresh manager notices.
                    _ = poll.tick() => match leases.get_opt(&settings.lease_name).await {
                        Ok(Some(lease)) if is_released(&lease) => break Standby::Rebuild,
                        Ok(_) => {}
                        Err(err) => tracing::debug!(error = %err, "reading the Lease failed"),
                    },
                }
            }
        };
        match next {
            Standby::Leading => break,
            Standby::Again => {}
            Standby::Rebuild => {
                manager = tokio::select! {
                    _ = &mut shutdown => return Ok(Outcome::Stopped),
                    manager = build_with_retry(&client, settings) => manager,
                };
            }
        }
    }

    tracing::info!(identity = %settings.identity, "leading: starting the controller");
    health.set_ready(false);
    health.set_leader(true);
    let (stop_tx, mut stop_rx) = watch::channel(false);
    let stop: Stop = Box::pin(async move {
        let _ = stop_rx.wait_for(|stop| *stop).await;
    });
    {
        let controller = lead(stop);
        tokio::pin!(controller);
        let renewing = manager.changed();
        tokio::pin!(renewing);
        let drained = tokio::time::sleep(Duration::MAX);
        tokio::pin!(drained);
        let mut stopping = false;
        loop {
            tokio::select! {
                _ = &mut shutdown, if !stopping => {
                    tracing::info!("stopping the controller, then releasing the Lease");
                    stopping = true;
                    let _ = stop_tx.send(true);
                    drained.as_mut().reset(tokio::time::Instant::now() + DRAIN_TIMEOUT);
                }
                _ = &mut controller => break,
                // Dropping the controller stops its reconciles where they are, before the
                // Lease is released: never two leaders at work.
                _ = &mut drained, if stopping => {
                    tracing::warn!(timeout = ?DRAIN_TIMEOUT, "reconciles still running; stopping them");
                    break;
                }
                result = &mut renewing => match result {
                    // Returned only on a change: still ours would be no change.
                    Ok(true) => renewing.set(manager.changed()),
                    Ok(false) => {
                        health.set_ready(false);
                        health.set_leader(false);
                        return Ok(Outcome::Lost("another replica holds the Lease".into()));
                    }
                    Err(err) => {
                        health.set_ready(false);
                        health.set_leader(false);
                        return Ok(Outcome::Lost(format!("renewing the Lease failed: {err}")));
                    }
                },
            }
        }
    }
    health.set_ready(false);
    health.set_leader(false);
    manager.release().await.context("releasing the Lease")?;
    tracing::info!("released the Lease");
    Ok(Outcome::Stopped)
}

enum Standby {
    Leading,
    Again,
    Rebuild,
}

/// A manager for the Lease (creating the Lease if it is missing), retried until it works:
/// the API server may not answer yet, or RBAC may lag behind a fresh install.
async fn build_with_retry(client: &Client, settings: &Settings) -> LeaseManager {
    loop {
        match LeaseManagerBuilder::new(client.clone(), &settings.lease_name)
            .with_namespace(&settings.namespace)
            .with_identity(&settings.identity)
            .with_duration(settings.duration)
            .with_grace(settings.grace)
            .with_field_manager(format!("beeos-operator/{}", settings.identity))
            .build()
            .await
        {
            Ok(manager) => return manager,
            Err(err) => {
                tracing::warn!(error = %err, lease = %settings.lease_name, "cannot use the Lease yet");
                tokio::time::sleep(settings.retry_period).await;
            }
        }
    }
}

/// Whether the Lease has no holder (released), or its holder stopped renewing it.
fn is_released(lease: &Lease) -> bool {
    is_released_at(lease, SystemTime::now())
}

fn is_released_at(lease: &Lease, now: SystemTime) -> bool {
    let Some(spec) = &lease.spec else {
        return true;
    };
    if spec
        .holder_identity
        .as_deref()
        .unwrap_or_default()
        .is_empty()
    {
        return true;
    }
    match (&spec.renew_time, spec.lease_duration_seconds) {
        (Some(renewed), Some(seconds)) => {
            let renewed: SystemTime = renewed.0.into();
            renewed + Duration::from_secs(u64::try_from(seconds).unwrap_or_default()) < now
        }
        _ => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;
    use k8s_openapi::api::coordination::v1::LeaseSpec;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;

    fn args(flags: &[&str]) -> RunArgs {
        let mut argv = vec!["beeos-operator"];
        argv.extend_from_slice(flags);
        beeos_operator::config::Cli::parse_from(argv).run
    }

    fn lease(holder: Option<&str>, renewed: Option<SystemTime>, seconds: Option<i32>) -> Lease {
        Lease {
            spec: Some(LeaseSpec {
                holder_identity: holder.map(str::to_owned),
                renew_time: renewed.map(|t| MicroTime(t.try_into().unwrap())),
                lease_duration_seconds: seconds,
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn settings_renew_the_lease_every_renew_interval_and_name_the_replica() {
        let settings = Settings::new(
            &args(&[
                "--leader-election-lease-duration",
                "20s",
                "--leader-election-renew-interval",
                "4s",
            ]),
            "beeos-system",
            Some("beeos-operator-7d9f-abcde".into()),
            0xbee,
        )
        .unwrap();
        assert_eq!(settings.duration, 20);
        assert_eq!(settings.grace, 16, "renewed 4s after the last renewal");
        assert_eq!(settings.namespace, "beeos-system");
        assert_eq!(settings.lease_name, "beeos-operator");
        assert_eq!(settings.identity, "beeos-operator-7d9f-abcde_00000bee");
    }

    #[test]
    fn settings_take_the_namespace_flag_over_the_default() {
        let settings = Settings::new(
            &args(&["--leader-election-namespace", "ops"]),
            "default",
            None,
            1,
        )
        .unwrap();
        assert_eq!(settings.namespace, "ops");
        assert!(settings.identity.ends_with("_00000001"));
        assert!(
            settings.identity.len() > "_00000001".len(),
            "names the host"
        );
    }

    #[test]
    fn settings_refuse_a_renew_interval_not_shorter_than_the_lease() {
        let err = Settings::new(
            &args(&[
                "--leader-election-lease-duration",
                "5s",
                "--leader-election-renew-interval",
                "5s",
            ]),
            "default",
            None,
            1,
        )
        .unwrap_err();
        assert!(err.to_string().contains("must be shorter"), "{err}");
        let err = Settings::new(
            &args(&["--leader-election-lease-duration", "1500ms"]),
            "default",
            None,
            1,
        )
        .unwrap_err();
        assert!(err.to_string().contains("whole number of seconds"), "{err}");
    }

    #[test]
    fn lease_is_released_without_a_holder_or_once_expired() {
        let now = SystemTime::now();
        let ago = |seconds| now - Duration::from_secs(seconds);
        assert!(is_released_at(&lease(None, None, None), now));
        assert!(is_released_at(
            &lease(Some(""), Some(ago(1)), Some(15)),
            now
        ));
        assert!(!is_released_at(
            &lease(Some("a"), Some(ago(10)), Some(15)),
            now
        ));
        assert!(is_released_at(
            &lease(Some("a"), Some(ago(16)), Some(15)),
            now
        ));
        assert!(is_released_at(&lease(Some("a"), None, Some(15)), now));
        assert!(is_released_at(&Lease::default(), now));
    }
}
