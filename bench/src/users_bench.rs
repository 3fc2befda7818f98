//! `bench users`: registrations through `POST /users` at 16 concurrent
//! clients, beside what hashing the password alone costs, so the cost of the
//! rest of the path (validation, reservations, appends, HTTP) is visible;
//! and one legitimate client's registrations per second while 60 clients
//! hammer with duplicate-email requests, beside its idle rate (issue 17).
//!
//! The event store and the host run in this process, over loopback, as
//! `projector serve` runs them.

use std::time::{Duration, Instant};

use anyhow::bail;
use projector::users::{Argon2Settings, Hasher, RegistrationConfig};

use crate::report::{millis, percentile, Row, Table, Target};
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
    /// Clients sending duplicate-email registrations without pause, beside
    /// the one legitimate client.
    #[arg(long, default_value_t = 60)]
    duplicates: usize,
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

    let duplicates = args.duplicates;
    let default_rate = std::num::NonZeroU32::new(projector::DEFAULT_USERS_RATE_PER_MINUTE);
    for (attackers, rate) in
        [("from many addresses, no rate limit", None), ("from one address, default rate limit", default_rate)]
    {
        let hammered = under_duplicates(duplicates, duration, rate).await?;
        table.push(
            Row::new(format!("users: legitimate sign-ups alone ({attackers})"), hammered.idle, "registrations/s")
                .detail("one request at a time, each from its own address: the baseline of the next figure"),
        );
        table.push(
            Row::new(
                format!("users: legitimate sign-ups while {duplicates} clients send duplicate emails {attackers}"),
                hammered.loaded,
                "registrations/s",
            )
            .target(Target::AtLeast(hammered.idle * 0.5))
            .detail(format!(
                "{:.0}% of alone; p99 {:.0} ms; duplicates answered at {:.0}/s: {} with 409, {} with 429; {} hashes for them",
                hammered.loaded / hammered.idle * 100.0,
                millis(hammered.loaded_p99),
                hammered.duplicates_answered as f64 / duration.as_secs_f64(),
                hammered.duplicates_refused,
                hammered.duplicates_limited,
                hammered.duplicate_hashes,
            )),
        );
    }
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
    // Every client here shares 127.0.0.1: no per-client limit.
    let config = projector::HostConfig {
        registration,
        users_rate_per_minute: None,
        ..projector::HostConfig::new(dir.path().join("host"))
    };
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

/// One client's registrations alone, then beside `duplicates` clients.
struct Hammered {
    idle: f64,
    loaded: f64,
    loaded_p99: Duration,
    duplicates_answered: u64,
    duplicates_refused: u64,
    duplicates_limited: u64,
    /// Password hashes the host computed beyond the legitimate client's.
    duplicate_hashes: u64,
}

/// A fresh store and host (default argon2, `rate` per client per minute).
/// One email is taken; `duplicates` clients send registrations of it
/// without pause from 127.0.0.1, while legitimate sign-ups register
/// distinct users one at a time, each from its own loopback address
/// (127.1.x.y), as people signing up do. Without a rate the figure is what
/// the cheap check and the queue bound give alone (an attacker with as many
/// addresses as clients).
async fn under_duplicates(
    duplicates: usize,
    duration: Duration,
    rate: Option<std::num::NonZeroU32>,
) -> anyhow::Result<Hammered> {
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
    use std::sync::Arc;

    let dir = tempfile::tempdir()?;
    let server = start_store(dir.path()).await?;
    let config =
        projector::HostConfig { users_rate_per_minute: rate, ..projector::HostConfig::new(dir.path().join("host")) };
    let running = RunningHost::start(&server, config).await?;
    let base = format!("http://{}", running.host.local_addr());
    let url = format!("{base}/users");
    let http = reqwest::Client::new();
    let taken = body(usize::MAX, 0);
    let first = http.post(&url).json(&taken).send().await?;
    if first.status() != reqwest::StatusCode::CREATED {
        bail!("the first registration failed: {} {}", first.status(), first.text().await?);
    }

    let one_client = |client: usize| {
        let url = url.clone();
        async move {
            let started = Instant::now();
            let mut latencies = Vec::new();
            let mut n = 0;
            while started.elapsed() < duration {
                let address = std::net::Ipv4Addr::new(127, 1, (n / 250 % 256) as u8, (n % 250 + 1) as u8);
                let http = reqwest::Client::builder().local_address(std::net::IpAddr::V4(address)).build()?;
                let sent = Instant::now();
                let response = http.post(&url).json(&body(client, n)).send().await?;
                if response.status() != reqwest::StatusCode::CREATED {
                    bail!("a legitimate registration failed: {} {}", response.status(), response.text().await?);
                }
                latencies.push(sent.elapsed());
                n += 1;
            }
            latencies.sort();
            anyhow::Ok((latencies.len() as f64 / started.elapsed().as_secs_f64(), latencies))
        }
    };
    let (idle, _) = one_client(0).await?;
    let hashes_before = hashes(&http, &base).await?;

    let stop = Arc::new(AtomicBool::new(false));
    let counts = Arc::new([AtomicU64::new(0), AtomicU64::new(0), AtomicU64::new(0)]);
    let mut hammers = Vec::new();
    for d in 0..duplicates {
        let (http, url, stop, counts) = (http.clone(), url.clone(), stop.clone(), counts.clone());
        let mut duplicate = taken.clone();
        duplicate["username"] = format!("copycat{d}").into();
        hammers.push(tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                let response = http.post(&url).json(&duplicate).send().await?;
                counts[0].fetch_add(1, Ordering::Relaxed);
                match response.status() {
                    reqwest::StatusCode::CONFLICT => counts[1].fetch_add(1, Ordering::Relaxed),
                    reqwest::StatusCode::TOO_MANY_REQUESTS => counts[2].fetch_add(1, Ordering::Relaxed),
                    _ => 0,
                };
            }
            anyhow::Ok(())
        }));
    }
    let (loaded, latencies) = one_client(1).await?;
    stop.store(true, Ordering::Relaxed);
    for hammer in hammers {
        hammer.await??;
    }
    let legitimate = latencies.len() as u64;
    let duplicate_hashes = hashes(&http, &base).await?.saturating_sub(hashes_before + legitimate);
    running.stop().await?;
    server.shutdown().await?;
    Ok(Hammered {
        idle,
        loaded,
        loaded_p99: percentile(&latencies, 0.99),
        duplicates_answered: counts[0].load(Ordering::Relaxed),
        duplicates_refused: counts[1].load(Ordering::Relaxed),
        duplicates_limited: counts[2].load(Ordering::Relaxed),
        duplicate_hashes,
    })
}

/// `projector_password_hashes_total` on the host's `/metrics`.
async fn hashes(http: &reqwest::Client, base: &str) -> anyhow::Result<u64> {
    let text = http.get(format!("{base}/metrics")).send().await?.text().await?;
    let value = text.lines().find_map(|l| l.strip_prefix("projector_password_hashes_total ")).unwrap_or("0");
    Ok(value.trim().parse::<f64>()? as u64)
}

fn body(client: usize, n: usize) -> serde_json::Value {
    serde_json::json!({
        "email": format!("user{client}.{n}@example.com"),
        "username": format!("user{client}-{n}"),
        "password": "correct horse battery staple",
    })
}
