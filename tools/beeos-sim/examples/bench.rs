//! Throughput of the simulator over loopback: starts it in-process, then a few concurrent
//! clients deploy, get and list for a fixed number of calls per round; prints each round and the
//! medians. Then the operator's scale case: one owner with `--scale-instances` (10,000)
//! instances, listed 200 a page from the first page to the last, one page at a time; prints the
//! median and 90th percentile latency of a page. Bounded in calls and in time (it gives up after
//! `--max-seconds`).
//!
//! `cargo run --release -p beeos-sim --example bench [-- --clients 4 --rounds 5]`

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};
use beeos_sim::{SimConfig, Simulator};
use clap::Parser;
use serde_json::{Value, json};

const TOKEN: &str = "oag_bench";

#[derive(Debug, Parser)]
struct Args {
    /// Concurrent clients.
    #[arg(long, default_value_t = 4)]
    clients: usize,
    /// Deploys per round (also the table size the gets and lists run against).
    #[arg(long, default_value_t = 2000)]
    deploys: usize,
    /// Gets per round.
    #[arg(long, default_value_t = 10000)]
    gets: usize,
    /// Lists (pageSize 200) per round.
    #[arg(long, default_value_t = 500)]
    lists: usize,
    /// Rounds; medians are over these.
    #[arg(long, default_value_t = 5)]
    rounds: usize,
    /// Instances of the one owner in the scale case (0 skips it).
    #[arg(long, default_value_t = 10_000)]
    scale_instances: usize,
    /// Times the scale case lists every page.
    #[arg(long, default_value_t = 5)]
    scale_sweeps: usize,
    /// Give up when the whole run takes longer than this.
    #[arg(long, default_value_t = 180)]
    max_seconds: u64,
}

#[derive(Clone)]
struct Bench {
    http: reqwest::Client,
    base: String,
}

impl Bench {
    async fn deploy(&self, n: usize) -> anyhow::Result<String> {
        let response = self
            .http
            .post(format!("{}/api/v1/instances", self.base))
            .bearer_auth(TOKEN)
            .json(&json!({"name": format!("bench-{n}"), "variantId": "beeos-claw-small"}))
            .send()
            .await?;
        ensure!(
            response.status() == 201,
            "deploy answered {}",
            response.status()
        );
        let body: Value = response.json().await?;
        body["data"]["id"]
            .as_str()
            .map(str::to_owned)
            .context("no id")
    }

    async fn get(&self, path: &str) -> anyhow::Result<()> {
        let response = self
            .http
            .get(format!("{}{path}", self.base))
            .bearer_auth(TOKEN)
            .send()
            .await?;
        ensure!(
            response.status() == 200,
            "{path} answered {}",
            response.status()
        );
        response.bytes().await?;
        Ok(())
    }
}

/// Runs `calls` calls of `call(i)` on `clients` tasks; returns calls per second.
async fn rate<F, Fut>(clients: usize, calls: usize, call: F) -> anyhow::Result<f64>
where
    F: Fn(usize) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = anyhow::Result<()>> + Send,
{
    let call = Arc::new(call);
    let began = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for worker in 0..clients {
        let call = call.clone();
        tasks.spawn(async move {
            for i in (worker..calls).step_by(clients) {
                call(i).await?;
            }
            anyhow::Ok(())
        });
    }
    while let Some(done) = tasks.join_next().await {
        done??;
    }
    Ok(calls as f64 / began.elapsed().as_secs_f64())
}

fn median(values: &mut [f64]) -> f64 {
    percentile(values, 50)
}

fn percentile(values: &mut [f64], pct: usize) -> f64 {
    values.sort_by(f64::total_cmp);
    values[(values.len() * pct / 100).min(values.len() - 1)]
}

/// The scale case: `instances` instances of one owner, every page of 200 listed `sweeps` times,
/// one call at a time so each latency is the server's alone. Returns page latencies in ms.
async fn page_latencies(
    bench: &Bench,
    clients: usize,
    instances: usize,
    sweeps: usize,
) -> anyhow::Result<Vec<f64>> {
    bench
        .http
        .post(format!("{}/_sim/reset", bench.base))
        .send()
        .await?;
    let b = bench.clone();
    rate(clients, instances, move |n| {
        let b = b.clone();
        async move { b.deploy(n).await.map(drop) }
    })
    .await?;
    let pages = instances.div_ceil(200);
    let mut latencies = Vec::with_capacity(pages * sweeps);
    for _ in 0..sweeps {
        for page in 0..pages {
            let began = Instant::now();
            bench
                .get(&format!("/api/v1/instances?page={page}&pageSize=200"))
                .await?;
            latencies.push(began.elapsed().as_secs_f64() * 1000.0);
        }
    }
    Ok(latencies)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    ensure!(
        args.clients > 0 && args.rounds > 0 && args.deploys > 0,
        "counts must be positive"
    );
    let sim = Simulator::start(SimConfig::default().with_token(TOKEN, "bench")).await?;
    let bench = Bench {
        http: reqwest::Client::builder()
            .pool_max_idle_per_host(args.clients)
            .build()?,
        base: sim.base_url(),
    };
    println!(
        "beeos-sim bench: {} clients; per round {} deploys, {} gets, {} lists (pageSize 200); {} rounds",
        args.clients, args.deploys, args.gets, args.lists, args.rounds
    );
    let deadline = Instant::now() + Duration::from_secs(args.max_seconds);
    let (mut deploys, mut gets, mut lists) = (Vec::new(), Vec::new(), Vec::new());
    for round in 1..=args.rounds {
        if Instant::now() > deadline {
            bail!("gave up after {} s", args.max_seconds);
        }
        // Same table size every round.
        bench
            .http
            .post(format!("{}/_sim/reset", bench.base))
            .send()
            .await?;

        let ids = Arc::new(std::sync::Mutex::new(Vec::with_capacity(args.deploys)));
        let (b, sink) = (bench.clone(), ids.clone());
        let deploy_rate = rate(args.clients, args.deploys, move |n| {
            let (b, sink) = (b.clone(), sink.clone());
            async move {
                let id = b.deploy(n).await?;
                sink.lock()
                    .map_err(|_| anyhow::anyhow!("poisoned"))?
                    .push(id);
                Ok(())
            }
        })
        .await?;
        let ids: Arc<Vec<String>> = Arc::new(std::mem::take(
            &mut *ids.lock().map_err(|_| anyhow::anyhow!("poisoned"))?,
        ));

        let b = bench.clone();
        let get_rate = rate(args.clients, args.gets, move |n| {
            let (b, ids) = (b.clone(), ids.clone());
            async move {
                b.get(&format!("/api/v1/instances/{}", ids[n % ids.len()]))
                    .await
            }
        })
        .await?;

        let b = bench.clone();
        let list_rate = rate(args.clients, args.lists, move |n| {
            let b = b.clone();
            async move {
                b.get(&format!("/api/v1/instances?page={}&pageSize=200", n % 2))
                    .await
            }
        })
        .await?;

        println!(
            "round {round}: {deploy_rate:8.0} deploys/s {get_rate:8.0} gets/s {list_rate:8.0} lists/s"
        );
        deploys.push(deploy_rate);
        gets.push(get_rate);
        lists.push(list_rate);
    }
    println!(
        "median:  {:8.0} deploys/s {:8.0} gets/s {:8.0} lists/s",
        median(&mut deploys),
        median(&mut gets),
        median(&mut lists)
    );
    if args.scale_instances > 0 {
        if Instant::now() > deadline {
            bail!("gave up after {} s", args.max_seconds);
        }
        let mut latencies = page_latencies(
            &bench,
            args.clients,
            args.scale_instances,
            args.scale_sweeps,
        )
        .await?;
        println!(
            "list at {} instances (one owner, pageSize 200, {} pages x {} sweeps): \
             median {:.2} ms, p90 {:.2} ms per page",
            args.scale_instances,
            args.scale_instances.div_ceil(200),
            args.scale_sweeps,
            median(&mut latencies),
            percentile(&mut latencies, 90)
        );
    }
    Ok(())
}
