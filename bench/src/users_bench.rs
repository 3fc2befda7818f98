//! `bench users`: registrations through `POST /users` at 16 concurrent
//! clients, beside what hashing the password alone costs, so the cost of the
//! rest of the path (validation, reservations, appends, HTTP) is visible.
//!
//! The event store and the host run in this process, over loopback, as
//! `projector serve` runs them.

use std::time::{Duration, Instant};

use anyhow::bail;
use projector::users::{Argon2Settings, Hasher, RegistrationConfig};

use crate::report::{millis, percentile, Row, Table};
use crate::stack::{start_store, RunningHost};

/// Flags of `bench users`.
#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// Concurrent clients, each sending one registration at a time.
    #[arg(long, default_value_t = 16)]
    clients: usize,
    /// How long each load runs, in seconds.
    #[arg(long, default_value_t = 20)]
    seconds: u64,
    /// Tiny sizes: checks that every measurement produces a number.
    #[arg(long)]
    quick: bool,
}

pub(crate) async fn run(args: Args) -> anyhow::Result<Table> {
    let mut table = Table::default();
    let duration = Duration::from_secs(if args.quick { 1 } else { args.seconds });
    let defaults = Argon2Settings::default();

    let (one, hashes_per_second) = tokio::task::block_in_place(|| hashing_alone(defaults, args.quick))?;
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    table.push(Row::new(
        format!(
            "users: hashing alone, argon2id m={} KiB t={} p={}, one hash",
            defaults.memory_kib, defaults.iterations, defaults.parallelism
        ),
        millis(one),
        "ms",
    ));
    table.push(
        Row::new(format!("users: hashing alone, {cores} threads without pause"), hashes_per_second, "hashes/s")
            .detail("the ceiling for registrations"),
    );

    let load = register_under_load(RegistrationConfig::default(), args.clients, duration).await?;
    let clients = args.clients;
    table.push(
        Row::new(format!("users: registrations, {clients} clients, default argon2"), load.rate, "registrations/s")
            .detail(format!(
                "{:.0}% of the hashing ceiling; {} registered, {} failed",
                load.rate / hashes_per_second * 100.0,
                load.latencies.len(),
                load.failures
            )),
    );
    table.push(Row::new(
        "users: latency request -> 201, default argon2, p50",
        millis(percentile(&load.latencies, 0.5)),
        "ms",
    ));
    table.push(Row::new(
        "users: latency request -> 201, default argon2, p99",
        millis(percentile(&load.latencies, 0.99)),
        "ms",
    ));

    let cheap = Argon2Settings { memory_kib: 64, iterations: 1, parallelism: 1 };
    let config = RegistrationConfig { argon2: cheap, ..RegistrationConfig::default() };
    let rest = register_under_load(config, args.clients, duration).await?;
    table.push(
        Row::new(
            format!("users: the rest of the path, {clients} clients, near-free hash (m=64 KiB t=1)"),
            rest.rate,
            "registrations/s",
        )
        .detail(format!("{} registered, {} failed", rest.latencies.len(), rest.failures)),
    );
    table.push(Row::new(
        "users: latency request -> 201, near-free hash, p50",
        millis(percentile(&rest.latencies, 0.5)),
        "ms",
    ));
    table.push(Row::new(
        "users: latency request -> 201, near-free hash, p99",
        millis(percentile(&rest.latencies, 0.99)),
        "ms",
    ));
    Ok(table)
}

/// The median time of one hash on an idle machine, and how many hashes per
/// second every core together manages.
fn hashing_alone(settings: Argon2Settings, quick: bool) -> anyhow::Result<(Duration, f64)> {
    let hasher = Hasher::new(settings)?;
    let rounds = if quick { 3 } else { 30 };
    let mut times = Vec::new();
    for _ in 0..rounds {
        let started = Instant::now();
        hasher.hash_now("correct horse battery staple")?;
        times.push(started.elapsed());
    }
    times.sort();
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let started = Instant::now();
    std::thread::scope(|scope| {
        let workers: Vec<_> = (0..cores)
            .map(|_| {
                scope.spawn(|| -> anyhow::Result<()> {
                    for _ in 0..rounds {
                        hasher.hash_now("correct horse battery staple")?;
                    }
                    Ok(())
                })
            })
            .collect();
        workers.into_iter().try_for_each(|w| w.join().map_err(|_| anyhow::anyhow!("a hashing thread panicked"))?)
    })?;
    let rate = (rounds * cores) as f64 / started.elapsed().as_secs_f64();
    Ok((percentile(&times, 0.5), rate))
}

struct Load {
    rate: f64,
    latencies: Vec<Duration>,
    failures: usize,
}

/// A fresh store and host; `clients` tasks register distinct users for `duration`.
async fn register_under_load(
    registration: RegistrationConfig,
    clients: usize,
    duration: Duration,
) -> anyhow::Result<Load> {
    let dir = tempfile::tempdir()?;
    let server = start_store(dir.path()).await?;
    let config = projector::HostConfig { registration, ..projector::HostConfig::new(dir.path().join("host")) };
    let running = RunningHost::start(&server, config).await?;
    let host = &running.host;
    let url = format!("http://{}/users", host.local_addr());
    let http = reqwest::Client::new();
    // One registration first, so connection set-up is not in the figures.
    let warm = http.post(&url).json(&body(usize::MAX, 0)).send().await?;
    if warm.status() != reqwest::StatusCode::CREATED {
        bail!("the warm-up registration failed: {} {}", warm.status(), warm.text().await?);
    }
    let started = Instant::now();
    let mut tasks = Vec::new();
    for client in 0..clients {
        let (http, url) = (http.clone(), url.clone());
        tasks.push(tokio::spawn(async move {
            let (mut latencies, mut failures) = (Vec::new(), 0usize);
            let mut n = 0;
            while started.elapsed() < duration {
                let sent = Instant::now();
                let response = http.post(&url).json(&body(client, n)).send().await?;
                if response.status() == reqwest::StatusCode::CREATED {
                    latencies.push(sent.elapsed());
                } else {
                    failures += 1;
                }
                n += 1;
            }
            anyhow::Ok((latencies, failures))
        }));
    }
    let mut load = Load { rate: 0.0, latencies: Vec::new(), failures: 0 };
    for task in tasks {
        let (latencies, failures) = task.await??;
        load.latencies.extend(latencies);
        load.failures += failures;
    }
    load.rate = load.latencies.len() as f64 / started.elapsed().as_secs_f64();
    load.latencies.sort();
    running.stop().await?;
    server.shutdown().await?;
    Ok(load)
}

fn body(client: usize, n: usize) -> serde_json::Value {
    serde_json::json!({
        "email": format!("user{client}.{n}@example.com"),
        "username": format!("user{client}-{n}"),
        "password": "correct horse battery staple",
    })
}
