//! The event store benchmark: each figure beside the target the project set
//! for a 2-core machine. Throughput rows also show the server's share of one
//! core, since the client runs on the same two cores.
#![allow(clippy::print_stdout)] // the table is the output

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use eventstore::{
    AppendToStreamOptions, Client, EventData, ExpectedRevision, ReadAllOptions, StreamPosition, SubscribeToAllOptions,
    SubscriptionEvent,
};
use tokio::sync::Mutex;

use crate::report::{mib, millis, ms, percentile, Row, Table, Target};

/// Flags of `bench eventstore`.
#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// Events preloaded for the read, catch-up, memory and startup figures.
    #[arg(long, default_value_t = 1_000_000)]
    events: u64,
    /// Tiny sizes: checks that every measurement produces a number.
    #[arg(long)]
    quick: bool,
}

/// Runs the store in this process until stdin closes, printing `READY <addr>`
/// once the log is open and the port is served.
pub(crate) async fn serve(listen: SocketAddr, data: PathBuf, plain_tcp: bool, secure: bool) -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind(listen).await?;
    let mut config = eventstore_embedded::Config::new(data);
    if plain_tcp {
        config.tcp_tuning = eventstore_embedded::TcpTuning::SystemDefault;
    }
    if secure {
        config.security = eventstore_embedded::Security::secure(&config.data_dir)?;
    }
    let server = eventstore_embedded::EmbeddedServer::start(listener, config).await?;
    println!("READY {}", server.local_addr());
    // The parent closes our stdin to stop us.
    tokio::task::spawn_blocking(|| {
        let mut sink = String::new();
        while std::io::stdin().read_line(&mut sink).map(|n| n > 0).unwrap_or(false) {}
    })
    .await?;
    server.shutdown().await?;
    Ok(())
}

pub(crate) struct ServerProcess {
    child: Child,
    addr: SocketAddr,
    started_in: Duration,
    /// `user:pass@` and the TLS query of a `--secure` server.
    secure: Option<(String, String)>,
}

impl ServerProcess {
    pub(crate) fn start(data: &Path) -> anyhow::Result<ServerProcess> {
        Self::start_with(data, &[])
    }

    pub(crate) fn start_with(data: &Path, extra: &[&str]) -> anyhow::Result<ServerProcess> {
        let started = Instant::now();
        let mut child = Command::new(std::env::current_exe()?)
            .args(["serve", "--listen", "127.0.0.1:0", "--data"])
            .arg(data)
            .args(extra)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .env("RUST_LOG", "warn")
            .spawn()
            .context("cannot start the server process")?;
        let stdout = child.stdout.take().context("no stdout")?;
        let mut line = String::new();
        BufReader::new(stdout).read_line(&mut line)?;
        let Some(addr) = line.trim().strip_prefix("READY ") else { bail!("server did not start: {line:?}") };
        let secure = if extra.contains(&"--secure") {
            let password = std::fs::read_to_string(data.join(eventstore_embedded::PASSWORD_FILE))?;
            let ca = data.join(eventstore_embedded::TLS_DIR).join("ca.crt");
            Some((format!("admin:{}@", password.trim()), format!("tls=true&tlsCAFile={}", ca.display())))
        } else {
            None
        };
        Ok(ServerProcess { addr: addr.parse()?, started_in: started.elapsed(), child, secure })
    }

    pub(crate) fn client(&self) -> anyhow::Result<Client> {
        let (user, tls) = self.secure.clone().unwrap_or_else(|| (String::new(), "tls=false".to_owned()));
        Ok(Client::new(format!("esdb://{user}{}?{tls}", self.addr).parse()?)?)
    }

    /// CPU time (user + system) the server has used so far.
    fn cpu_time(&self) -> anyhow::Result<Duration> {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.child.id()))?;
        // Fields after the command name, which is in parentheses.
        let after = stat.rsplit_once(')').context("bad stat")?.1;
        let fields: Vec<&str> = after.split_whitespace().collect();
        let ticks: u64 = fields[11].parse::<u64>()? + fields[12].parse::<u64>()?;
        // USER_HZ is 100 on Linux.
        Ok(Duration::from_millis(ticks * 10))
    }

    pub(crate) fn rss_bytes(&self) -> anyhow::Result<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))?;
        let kb: u64 = status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.split_whitespace().next())
            .context("no VmRSS")?
            .parse()?;
        Ok(kb * 1024)
    }

    pub(crate) fn stop(mut self) -> anyhow::Result<()> {
        drop(self.child.stdin.take());
        self.child.wait()?;
        Ok(())
    }
}

/// A realistic ~300-byte JSON event (sent as bytes: the store does not parse payloads).
pub(crate) fn event(n: u64) -> EventData {
    let payload = payload(n);
    EventData::binary("UserRegistered", payload.into_bytes().into()).id(uuid::Uuid::new_v4())
}

fn payload(n: u64) -> String {
    format!(
        r#"{{"userId":"{:032x}","email":"user{n}@example.com","username":"user_{n}","registeredAt":"2026-11-23T12:00:00Z","passwordHash":"$argon2id$v=19$m=19456,t=2,p=1$c2FsdHNhbHRzYWx0$aGFzaGhhc2hoYXNoaGFzaGhhc2hoYXNoaGFzaA","source":"bench","n":{n}}}"#,
        n
    )
}

/// Wall time and server CPU time since the last reading.
pub(crate) struct Meter {
    wall: Instant,
    cpu: Duration,
}

impl Meter {
    pub(crate) fn start(server: &ServerProcess) -> anyhow::Result<Meter> {
        Ok(Meter { wall: Instant::now(), cpu: server.cpu_time()? })
    }

    /// The server's CPU share over the period, as a detail; restarts.
    pub(crate) fn cpu(&mut self, server: &ServerProcess) -> anyhow::Result<String> {
        let cpu = server.cpu_time()?;
        let share = (cpu - self.cpu).as_secs_f64() / self.wall.elapsed().as_secs_f64();
        *self = Meter::start(server)?;
        Ok(format!("server CPU {:.0}% of a core", share * 100.0))
    }
}

/// Appends `total` events in batches of `batch` from `concurrency` tasks; events/s.
/// Single-append latencies against a server whose sockets are left at the OS defaults.
async fn single_append_latencies(data: &Path, samples: u64) -> anyhow::Result<Vec<Duration>> {
    let server = ServerProcess::start_with(data, &["--plain-tcp"])?;
    let client = server.client()?;
    client.append_to_stream("warmup", &AppendToStreamOptions::default(), event(0)).await?;
    let mut latencies = Vec::new();
    for n in 0..samples {
        let started = Instant::now();
        client.append_to_stream("single", &AppendToStreamOptions::default(), event(n)).await?;
        latencies.push(started.elapsed());
    }
    server.stop()?;
    latencies.sort();
    Ok(latencies)
}

pub(crate) async fn append_throughput(
    client: &Client,
    total: u64,
    batch: u64,
    concurrency: u64,
) -> anyhow::Result<f64> {
    let started = Instant::now();
    let per_task = total / concurrency;
    let mut tasks = Vec::new();
    for task in 0..concurrency {
        let client = client.clone();
        tasks.push(tokio::spawn(async move {
            let stream = format!("bench-{batch}-{task}-{}", uuid::Uuid::new_v4().simple());
            let mut written = 0;
            while written < per_task {
                let n = batch.min(per_task - written);
                let events: Vec<EventData> = (written..written + n).map(event).collect();
                client.append_to_stream(stream.as_str(), &AppendToStreamOptions::default(), events).await?;
                written += n;
            }
            anyhow::Ok(written)
        }));
    }
    let mut appended = 0;
    for task in tasks {
        appended += task.await??;
    }
    Ok(appended as f64 / started.elapsed().as_secs_f64())
}

pub(crate) async fn run(args: Args) -> anyhow::Result<Table> {
    let events = if args.quick { 2_000 } else { args.events };
    let scale = |full: u64, quick: u64| if args.quick { quick } else { full };
    let dir = tempfile::tempdir()?;
    let data = dir.path().join("eventstore");
    let server = ServerProcess::start(&data)?;
    let client = server.client()?;
    client.append_to_stream("warmup", &AppendToStreamOptions::default(), event(0)).await?;
    let mut rows = Table::default();

    // Single-append latency: one client, one event at a time, durable.
    let mut latencies = Vec::new();
    for n in 0..scale(2_000, 50) {
        let started = Instant::now();
        client
            .append_to_stream(
                "single",
                &AppendToStreamOptions::default().expected_revision(ExpectedRevision::Any),
                event(n),
            )
            .await?;
        latencies.push(started.elapsed());
    }
    latencies.sort();
    let baseline = single_append_latencies(&dir.path().join("plain-tcp"), scale(100, 10)).await?;
    rows.push(
        Row::new("event store: single append latency p50", millis(percentile(&latencies, 0.5)), "ms")
            .target(Target::AtMost(2.0))
            .detail(format!(
                "baseline with server sockets at OS defaults: {} (why the server sets NODELAY/QUICKACK)",
                ms(percentile(&baseline, 0.5))
            )),
    );
    rows.push(
        Row::new("event store: single append latency p99", millis(percentile(&latencies, 0.99)), "ms")
            .detail(format!("at OS defaults: {}", ms(percentile(&baseline, 0.99)))),
    );

    let mut total = 1 + latencies.len() as u64;
    let mut meter = Meter::start(&server)?;
    let n = scale(50_000, 512);
    let rate = append_throughput(&client, n, 1, 64).await?;
    total += n;
    rows.push(
        Row::new("event store: append, batch 1 (64 concurrent writers)", rate, "events/s").detail(meter.cpu(&server)?),
    );

    let n = scale(200_000, 800);
    let rate = append_throughput(&client, n, 100, 8).await?;
    total += n;
    rows.push(
        Row::new("event store: append, batch 100 (8 writers)", rate, "events/s")
            .target(Target::AtLeast(200_000.0))
            .detail(meter.cpu(&server)?),
    );

    // Load up to `events` in batches of 1000: the batch-1000 figure.
    let n = events.saturating_sub(total).max(4_000) / 4000 * 4000;
    let rate = append_throughput(&client, n, 1000, 4).await?;
    total += n;
    rows.push(
        Row::new("event store: append, batch 1000 (4 writers)", rate, "events/s")
            .target(Target::AtLeast(200_000.0))
            .detail(meter.cpu(&server)?),
    );

    // read_all over everything.
    let (count, rate) = read_all(&client).await?;
    rows.push(
        Row::new(format!("event store: read_all of {count} events"), rate, "events/s")
            .target(Target::AtLeast(300_000.0))
            .detail(meter.cpu(&server)?),
    );

    // Catch-up subscription over everything.
    let started = Instant::now();
    let mut sub = client.subscribe_to_all(&SubscribeToAllOptions::default().position(StreamPosition::Start)).await;
    let mut count = 0u64;
    loop {
        match sub.next_subscription_event().await? {
            SubscriptionEvent::EventAppeared(_) => count += 1,
            SubscriptionEvent::CaughtUp => break,
            _ => {}
        }
    }
    let rate = count as f64 / started.elapsed().as_secs_f64();
    rows.push(
        Row::new("event store: catch-up subscription to $all", rate, "events/s")
            .target(Target::AtLeast(300_000.0))
            .detail(meter.cpu(&server)?),
    );
    drop(sub);
    crate::eventstore_persistent_bench::figures(&server, &client, count, rate, &mut rows).await?;

    // Live latency: append -> delivered to a live $all subscriber.
    let sent: Arc<Mutex<HashMap<uuid::Uuid, Instant>>> = Arc::default();
    let mut live = client.subscribe_to_all(&SubscribeToAllOptions::default().position(StreamPosition::End)).await;
    loop {
        if let SubscriptionEvent::CaughtUp = live.next_subscription_event().await? {
            break;
        }
    }
    let samples = scale(2_000, 50) as usize;
    let receiver = {
        let sent = sent.clone();
        tokio::spawn(async move {
            let mut delays = Vec::with_capacity(samples);
            while delays.len() < samples {
                if let SubscriptionEvent::EventAppeared(e) = live.next_subscription_event().await? {
                    let received = Instant::now();
                    if let Some(at) = sent.lock().await.remove(&e.get_original_event().id) {
                        delays.push(received - at);
                    }
                }
            }
            anyhow::Ok(delays)
        })
    };
    for n in 0..samples as u64 {
        let e = event(n);
        let id = uuid::Uuid::new_v4();
        sent.lock().await.insert(id, Instant::now());
        client.append_to_stream("live", &AppendToStreamOptions::default(), e.id(id)).await?;
    }
    let mut delays = receiver.await??;
    delays.sort();
    rows.push(Row::new("event store: live append -> subscriber p50", millis(percentile(&delays, 0.5)), "ms"));
    rows.push(Row::new("event store: live append -> subscriber p99", millis(percentile(&delays, 0.99)), "ms"));

    let rss = server.rss_bytes()?;
    let log_bytes = std::fs::metadata(data.join("events.log"))?.len();
    rows.push(
        Row::new("event store: server RSS after the load", mib(rss), "MiB")
            .target(Target::AtMost(1024.0))
            .detail(format!("{total} events of ~300 B")),
    );
    rows.push(Row::new("event store: log size per event", log_bytes as f64 / total.max(1) as f64, "B"));
    server.stop()?;

    let restarted = ServerProcess::start(&data)?;
    rows.push(
        Row::new("event store: startup (open + recover the index)", millis(restarted.started_in), "ms")
            .target(Target::AtMost(10_000.0))
            .detail(format!("{total} events")),
    );
    restarted.stop()?;

    crate::eventstore_security_bench::figures(&dir.path().join("security"), &mut rows, args.quick).await?;
    Ok(rows)
}

/// Reads all of `$all`: the number of events and events/s.
pub(crate) async fn read_all(client: &Client) -> anyhow::Result<(u64, f64)> {
    let started = Instant::now();
    let mut read = client.read_all(&ReadAllOptions::default().max_count(usize::MAX)).await?;
    let mut count = 0u64;
    while read.next().await?.is_some() {
        count += 1;
    }
    Ok((count, count as f64 / started.elapsed().as_secs_f64()))
}
