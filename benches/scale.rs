//! `make bench-scale`: the operator at N resources (default 10,000; `N=` to change) on this
//! machine — the real kube-apiserver and etcd, the simulator and a release-built operator — and
//! the whole table of what it costs: creating N resources until all are Ready, a steady window,
//! instances stopped behind the operator's back, and an operator restart.
//!
//! Counts come from the simulator's call counters, the API server's own
//! `apiserver_request_total`, the operator's `/metrics` and `/proc`. Times are medians where
//! several were taken. Not part of `make test`: it takes a quarter of an hour.
//!
//! Settings (environment): `N` resources (10000), `RATE` the operator's `--rate-limit` (0),
//! `STEADY_POLL` (60s), `WINDOW` the steady window (180s), `PHASES` `all` or `create`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use beeos_operator::crd::{BeeosInstance, INSTANCE_ID_ANNOTATION, condition};
use futures::StreamExt;
use k8s_openapi::api::core::v1::{Namespace, Secret};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, ResourceExt};
use serde_json::{Value, json};
use testenv::{ControlPlane, Supervised};

const TOKEN: &str = "oag_00000000000000000000000000000000000000000000000000000000000000a1";
const NAMESPACES: usize = 10;
/// Instances stopped behind the operator's back to time how fast status shows it.
const STOPPED_BEHIND: usize = 20;

struct Settings {
    n: usize,
    rate: u32,
    steady_poll: Duration,
    window: Duration,
    all_phases: bool,
}

impl Settings {
    fn from_env() -> Result<Settings> {
        let var =
            |name: &str, default: &str| std::env::var(name).unwrap_or_else(|_| default.into());
        Ok(Settings {
            n: var("N", "10000").parse().context("N")?,
            rate: var("RATE", "0").parse().context("RATE")?,
            steady_poll: humantime::parse_duration(&var("STEADY_POLL", "60s"))?,
            window: humantime::parse_duration(&var("WINDOW", "180s"))?,
            all_phases: var("PHASES", "all") == "all",
        })
    }
}

fn release_binary(name: &str) -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("target"));
    target.join("release").join(name)
}

fn free_port() -> Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// Counters read at one moment.
#[derive(Clone, Debug, Default)]
struct Counters {
    /// BeeOS calls by route.
    calls: BTreeMap<String, u64>,
    /// Kubernetes requests by "verb resource[/subresource]".
    requests: BTreeMap<String, u64>,
    reconciles: u64,
    /// Operator CPU seconds (user + system).
    cpu: f64,
    at: Option<Instant>,
}

impl Counters {
    fn delta(&self, before: &Counters) -> Counters {
        let diff = |a: &BTreeMap<String, u64>, b: &BTreeMap<String, u64>| {
            a.iter()
                .map(|(k, v)| (k.clone(), v.saturating_sub(*b.get(k).unwrap_or(&0))))
                .filter(|(_, v)| *v > 0)
                .collect()
        };
        Counters {
            calls: diff(&self.calls, &before.calls),
            requests: diff(&self.requests, &before.requests),
            reconciles: self.reconciles.saturating_sub(before.reconciles),
            cpu: self.cpu - before.cpu,
            at: None,
        }
    }

    fn calls_total(&self) -> u64 {
        self.calls.values().sum()
    }

    /// Writes to BeeosInstances (metadata and status) and Events.
    fn writes(&self, resource: &str) -> u64 {
        self.requests
            .iter()
            .filter(|(k, _)| {
                let mut parts = k.split(' ');
                let verb = parts.next().unwrap_or_default();
                let target = parts.next().unwrap_or_default();
                matches!(verb, "POST" | "PUT" | "PATCH" | "APPLY" | "DELETE")
                    && target.starts_with(resource)
            })
            .map(|(_, v)| v)
            .sum()
    }

    fn requests_of(&self, verb: &str, resource: &str) -> u64 {
        self.requests
            .get(&format!("{verb} {resource}"))
            .copied()
            .unwrap_or(0)
    }
}

struct Bench {
    settings: Settings,
    control_plane: ControlPlane,
    client: Client,
    http: reqwest::Client,
    sim_url: String,
    _sim: Supervised,
    operator: Option<Supervised>,
    probe: String,
    operator_log: PathBuf,
    resources: Store<BeeosInstance>,
}

impl Bench {
    async fn counters(&self) -> Result<Counters> {
        let calls: Value = self
            .http
            .get(format!("{}/_sim/calls", self.sim_url))
            .send()
            .await?
            .json()
            .await?;
        let calls = calls["routes"]
            .as_object()
            .map(|routes| {
                routes
                    .iter()
                    .map(|(k, v)| (k.clone(), v.as_u64().unwrap_or(0)))
                    .collect()
            })
            .unwrap_or_default();
        let metrics = self
            .client
            .request_text(http::Request::get("/metrics").body(Vec::new())?)
            .await?;
        let mut requests = BTreeMap::new();
        for line in metrics
            .lines()
            .filter(|l| l.starts_with("apiserver_request_total{"))
        {
            let label = |name: &str| {
                line.split(&format!("{name}=\""))
                    .nth(1)
                    .and_then(|rest| rest.split('"').next())
                    .unwrap_or_default()
                    .to_owned()
            };
            let value: f64 = line
                .rsplit(' ')
                .next()
                .unwrap_or("0")
                .parse()
                .unwrap_or(0.0);
            let subresource = label("subresource");
            let target = if subresource.is_empty() {
                label("resource")
            } else {
                format!("{}/{subresource}", label("resource"))
            };
            *requests
                .entry(format!("{} {target}", label("verb")))
                .or_insert(0) += value as u64;
        }
        let operator_metrics = self
            .http
            .get(format!("{}/metrics", self.probe))
            .send()
            .await?
            .text()
            .await?;
        let reconciles = operator_metrics
            .lines()
            .find(|l| l.starts_with("beeos_operator_reconciles_total"))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0) as u64;
        Ok(Counters {
            calls,
            requests,
            reconciles,
            cpu: self.operator_cpu().unwrap_or(0.0),
            at: Some(Instant::now()),
        })
    }

    fn operator_pid(&self) -> Option<String> {
        let operator = self.operator.as_ref()?;
        std::fs::read_to_string(operator.pid_file())
            .ok()
            .map(|pid| pid.trim().to_owned())
    }

    /// The operator's user + system CPU seconds.
    fn operator_cpu(&self) -> Option<f64> {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.operator_pid()?)).ok()?;
        let after_name = stat.rsplit(')').next()?;
        let fields: Vec<&str> = after_name.split_whitespace().collect();
        // Fields 14 and 15 of /proc/PID/stat; after the name, indexes 11 and 12.
        let ticks: f64 =
            fields.get(11)?.parse::<f64>().ok()? + fields.get(12)?.parse::<f64>().ok()?;
        Some(ticks / clock_ticks())
    }

    /// The operator's resident memory in MiB.
    fn operator_rss(&self) -> Option<f64> {
        let status =
            std::fs::read_to_string(format!("/proc/{}/status", self.operator_pid()?)).ok()?;
        let kib: f64 = status
            .lines()
            .find(|l| l.starts_with("VmRSS:"))?
            .split_whitespace()
            .nth(1)?
            .parse()
            .ok()?;
        Some(kib / 1024.0)
    }

    fn start_operator(&mut self) -> Result<()> {
        let port = free_port()?;
        self.probe = format!("http://127.0.0.1:{port}");
        let args: Vec<String> = [
            "--beeos-url",
            &self.sim_url,
            "--rate-limit",
            &self.settings.rate.to_string(),
            "--steady-poll",
            &humantime::format_duration(self.settings.steady_poll).to_string(),
            "--probe-address",
            &format!("127.0.0.1:{port}"),
            "--log-format",
            "json",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        self.operator = Some(Supervised::spawn(
            &release_binary("beeos-operator"),
            &args,
            &[
                (
                    "KUBECONFIG",
                    &self.control_plane.kubeconfig_path().display().to_string(),
                ),
                ("BEEOS_TOKEN", TOKEN),
                ("RUST_LOG", "info"),
            ],
            &self.operator_log,
            None,
        )?);
        Ok(())
    }

    fn ready_count(&self) -> usize {
        self.resources
            .state()
            .iter()
            .filter(|r| is_ready(r))
            .count()
    }
}

fn is_ready(resource: &BeeosInstance) -> bool {
    resource.status.as_ref().is_some_and(|s| {
        s.conditions.iter().any(|c| {
            c.type_ == condition::READY
                && c.status == "True"
                && c.observed_generation == resource.metadata.generation
        })
    })
}

fn clock_ticks() -> f64 {
    std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(100.0)
}

fn median(values: &mut [f64]) -> f64 {
    if values.is_empty() {
        return f64::NAN;
    }
    values.sort_by(|a, b| a.total_cmp(b));
    values[values.len() / 2]
}

fn fmt_map(map: &BTreeMap<String, u64>) -> String {
    map.iter()
        .map(|(k, v)| format!("{k} {v}"))
        .collect::<Vec<_>>()
        .join(", ")
}

#[tokio::main]
async fn main() -> Result<()> {
    let settings = Settings::from_env()?;
    println!(
        "# make bench-scale N={} RATE={} STEADY_POLL={} WINDOW={} PHASES={}",
        settings.n,
        settings.rate,
        humantime::format_duration(settings.steady_poll),
        humantime::format_duration(settings.window),
        if settings.all_phases { "all" } else { "create" }
    );
    for binary in ["beeos-operator", "beeos-sim"] {
        if !release_binary(binary).is_file() {
            bail!(
                "{} is missing: `make bench-scale` builds it",
                release_binary(binary).display()
            );
        }
    }
    let control_plane = tokio::task::spawn_blocking(ControlPlane::start).await??;
    let client = control_plane.admin_client();
    let crd: CustomResourceDefinition = serde_yaml_ng::from_str(&std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("crds/beeos.ai_beeosinstances.yaml"),
    )?)?;
    Api::<CustomResourceDefinition>::all(client.clone())
        .patch(
            &crd.name_any(),
            &PatchParams::apply("bench").force(),
            &Patch::Apply(&crd),
        )
        .await?;
    tokio::time::sleep(Duration::from_secs(2)).await;

    let sim_port = free_port()?;
    let sim_url = format!("http://127.0.0.1:{sim_port}");
    let sim = Supervised::spawn(
        &release_binary("beeos-sim"),
        &[
            "--listen".into(),
            format!("127.0.0.1:{sim_port}"),
            "--token".into(),
            format!("{TOKEN}=scale"),
            "--pending-ms".into(),
            "200".into(),
            "--provisioning-ms".into(),
            "1000".into(),
        ],
        &[],
        &control_plane.dir().join("sim.log"),
        None,
    )?;
    let http = reqwest::Client::new();
    let started = Instant::now();
    while http
        .get(format!("{sim_url}/_sim/calls"))
        .send()
        .await
        .is_err()
    {
        if started.elapsed() > Duration::from_secs(30) {
            bail!("the simulator did not start");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let namespaces: Vec<String> = (0..NAMESPACES).map(|i| format!("scale-{i}")).collect();
    for namespace in &namespaces {
        let ns: Namespace = serde_json::from_value(json!({"metadata": {"name": namespace}}))?;
        Api::<Namespace>::all(client.clone())
            .create(&PostParams::default(), &ns)
            .await?;
        let secret: Secret = serde_json::from_value(json!({
            "metadata": {"name": "beeos-token"}, "stringData": {"token": TOKEN},
        }))?;
        Api::<Secret>::namespaced(client.clone(), namespace)
            .create(&PostParams::default(), &secret)
            .await?;
    }

    // The bench's own view of every resource, from one watch (no polling of the API server).
    let (reader, writer) = reflector::store();
    let watch = watcher(
        Api::<BeeosInstance>::all(client.clone()),
        watcher::Config::default(),
    )
    .default_backoff()
    .reflect(writer)
    .for_each(|_| async {});
    tokio::spawn(watch);

    let operator_log = control_plane.dir().join("operator.log");
    let mut bench = Bench {
        settings,
        control_plane,
        client: client.clone(),
        http,
        sim_url,
        _sim: sim,
        operator: None,
        probe: String::new(),
        operator_log,
        resources: reader,
    };
    bench.start_operator()?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let n = bench.settings.n;

    // Create → all Ready.
    let before = bench.counters().await?;
    let created_at = Instant::now();
    let creates = futures::stream::iter(0..n).map(|i| {
        let client = client.clone();
        let namespace = namespaces[i % NAMESPACES].clone();
        async move {
            let mut spec = json!({"variantId": "beeos-claw-small"});
            if i % 10 == 0 {
                spec["credentials"] = json!({"name": "beeos-token"});
            }
            let resource: BeeosInstance = serde_json::from_value(json!({
                "apiVersion": "beeos.ai/v1alpha1", "kind": "BeeosInstance",
                "metadata": {"name": format!("agent-{i:05}")},
                "spec": spec,
            }))?;
            Api::<BeeosInstance>::namespaced(client, &namespace)
                .create(&PostParams::default(), &resource)
                .await?;
            anyhow::Ok(())
        }
    });
    let mut creates = creates.buffer_unordered(32);
    let mut peak_rss: f64 = 0.0;
    while let Some(created) = creates.next().await {
        created?;
    }
    let all_created = created_at.elapsed();
    loop {
        peak_rss = peak_rss.max(bench.operator_rss().unwrap_or(0.0));
        let ready = bench.ready_count();
        if ready >= n {
            break;
        }
        if created_at.elapsed() > Duration::from_secs(3600) {
            bail!("only {ready} of {n} Ready after an hour");
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    let all_ready = created_at.elapsed();
    let creation = bench.counters().await?.delta(&before);
    println!();
    println!("## Create {n} → all Ready");
    println!("| Figure | Value |");
    println!("|---|---|");
    println!(
        "| all created (by the bench, 32 at a time) | {:.1} s |",
        all_created.as_secs_f64()
    );
    println!("| all Ready | {:.1} s |", all_ready.as_secs_f64());
    println!(
        "| BeeOS calls per instance | {:.2} ({}) |",
        creation.calls_total() as f64 / n as f64,
        fmt_map(&creation.calls)
    );
    let rate_floor = creation
        .calls
        .values()
        .max()
        .map(|max| *max as f64 / f64::from(bench.settings.rate.max(1)))
        .unwrap_or(0.0);
    if bench.settings.rate > 0 {
        println!(
            "| rate-limit floor (busiest route / {} per s) | {:.1} s; all Ready = {:.2} × floor |",
            bench.settings.rate,
            rate_floor,
            all_ready.as_secs_f64() / rate_floor
        );
    }
    let bench_creates = creation.requests_of("POST", "beeosinstances");
    println!(
        "| operator writes per resource (metadata + status) | {:.2} ({} metadata, {} status) |",
        (creation.writes("beeosinstances") - bench_creates) as f64 / n as f64,
        creation.requests_of("PATCH", "beeosinstances"),
        creation.requests_of("APPLY", "beeosinstances/status")
    );
    println!(
        "| reconciles per resource | {:.2} |",
        creation.reconciles as f64 / n as f64
    );
    println!("| events written | {} |", creation.writes("events"));
    println!("| operator peak RSS | {peak_rss:.0} MiB |");
    if !bench.settings.all_phases {
        return Ok(());
    }

    // Settle: the last transitions are polled and written.
    tokio::time::sleep(Duration::from_secs(30)).await;
    // Steady window.
    let window = bench.settings.window;
    let before = bench.counters().await?;
    let mut rss = Vec::new();
    let window_started = Instant::now();
    while window_started.elapsed() < window {
        rss.push(bench.operator_rss().unwrap_or(f64::NAN));
        tokio::time::sleep(Duration::from_secs(5)).await;
    }
    let after = bench.counters().await?;
    let steady = after.delta(&before);
    let seconds = after
        .at
        .zip(before.at)
        .map(|(a, b)| a.duration_since(b).as_secs_f64())
        .unwrap_or(window.as_secs_f64());
    println!();
    println!("## Steady, {:.0} s window", seconds);
    println!("| Figure | Value |");
    println!("|---|---|");
    println!(
        "| BeeOS calls/s | {:.2} ({}) |",
        steady.calls_total() as f64 / seconds,
        fmt_map(&steady.calls)
    );
    println!(
        "| Kubernetes writes (BeeosInstances, Events, Secrets) | {} |",
        steady.writes("beeosinstances") + steady.writes("events") + steady.writes("secrets")
    );
    println!(
        "| Secret GETs/s | {:.2} |",
        steady.requests_of("GET", "secrets") as f64 / seconds
    );
    println!(
        "| reconciles/s | {:.2} |",
        steady.reconciles as f64 / seconds
    );
    println!(
        "| operator CPU | {:.2} % of one core |",
        100.0 * steady.cpu / seconds
    );
    println!(
        "| operator RSS, median / max | {:.0} MiB / {:.0} MiB (peak while creating {:.0} MiB) |",
        median(&mut rss.clone()),
        rss.iter().cloned().fold(0.0, f64::max),
        peak_rss
    );

    // Instances stopped behind the operator's back, spread over one poll.
    let picked: Vec<(String, String, String)> = bench
        .resources
        .state()
        .iter()
        .take(STOPPED_BEHIND)
        .filter_map(|r| {
            Some((
                r.namespace()?,
                r.name_any(),
                r.annotations().get(INSTANCE_ID_ANNOTATION)?.clone(),
            ))
        })
        .collect();
    let stops = futures::stream::iter(picked.into_iter().enumerate()).map(|(i, (ns, name, id))| {
        let bench = &bench;
        async move {
            let offset = bench.settings.steady_poll * i as u32 / STOPPED_BEHIND as u32;
            tokio::time::sleep(offset).await;
            bench
                .http
                .post(format!("{}/_sim/instances/{id}/stop", bench.sim_url))
                .send()
                .await?
                .error_for_status()?;
            let stopped_at = Instant::now();
            let key = kube::runtime::reflector::ObjectRef::<BeeosInstance>::new(&name).within(&ns);
            loop {
                let shows = bench.resources.get(&key).is_some_and(|r| {
                    r.status
                        .as_ref()
                        .and_then(|s| s.instance.as_ref())
                        .and_then(|i| i.status.as_deref())
                        != Some("running")
                });
                if shows {
                    return anyhow::Ok(stopped_at.elapsed().as_secs_f64());
                }
                if stopped_at.elapsed() > bench.settings.steady_poll * 3 {
                    bail!("{ns}/{name}: status never showed the stop");
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    });
    let mut freshness: Vec<f64> = stops
        .buffer_unordered(STOPPED_BEHIND)
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .collect::<Result<_>>()?;
    println!();
    println!(
        "## Stopped behind the operator's back → status shows it ({STOPPED_BEHIND} instances)"
    );
    println!(
        "| median {:.1} s, max {:.1} s (steady poll {}) |",
        median(&mut freshness),
        freshness.iter().cloned().fold(0.0, f64::max),
        humantime::format_duration(bench.settings.steady_poll)
    );

    // Restart with everything Ready.
    tokio::time::sleep(Duration::from_secs(30)).await;
    let before = bench.counters().await?;
    bench.operator = None;
    bench.start_operator()?;
    let restarted = Instant::now();
    let mut per_bucket = Vec::new();
    let mut last = 0;
    let mut restart_rss = Vec::new();
    tokio::time::sleep(Duration::from_secs(1)).await;
    while restarted.elapsed() < bench.settings.steady_poll + Duration::from_secs(30) {
        tokio::time::sleep(Duration::from_secs(5)).await;
        restart_rss.push(bench.operator_rss().unwrap_or(f64::NAN));
        if let Ok(now) = bench.counters().await {
            per_bucket.push(now.reconciles - last);
            last = now.reconciles;
        }
    }
    let after = bench.counters().await?;
    let restart = after.delta(&Counters {
        reconciles: 0,
        cpu: 0.0,
        ..before.clone()
    });
    let seconds = restarted.elapsed().as_secs_f64();
    println!();
    println!("## Restart with {n} Ready ({seconds:.0} s after the new process started)");
    println!("| Figure | Value |");
    println!("|---|---|");
    println!(
        "| deploys | {} |",
        restart.calls.get("deploy").copied().unwrap_or(0)
    );
    println!(
        "| Kubernetes writes (BeeosInstances, Events) | {} |",
        restart.writes("beeosinstances") + restart.writes("events")
    );
    println!(
        "| BeeOS calls/s | {:.2} ({}) |",
        restart.calls_total() as f64 / seconds,
        fmt_map(&restart.calls)
    );
    println!(
        "| RSS, max / at the end | {:.0} MiB / {:.0} MiB |",
        restart_rss.iter().cloned().fold(0.0, f64::max),
        restart_rss.last().copied().unwrap_or(f64::NAN)
    );
    println!("| reconciles per 5 s | {per_bucket:?} |");
    println!(
        "| operator CPU | {:.1} % of one core over the window |",
        100.0 * after.cpu / seconds
    );
    let _ = Arc::new(());
    Ok(())
}
