//! The projection runtime benchmark: the Wasm boundary, the same projection
//! native and in Wasm; catch-up of a large mixed history (user registrations
//! and stock movements) by `user-directory`, `signup-stats` and `inventory`,
//! alone, together and as 20 projections deployed at once, beside the
//! ceiling of a subscription that does nothing; live append-to-queryable lag
//! with those three and with the 20 deployed; reads by key and filtered
//! lists over HTTP at 1, 16 and 64 clients; hot swaps.
//!
//! Everything runs in this process, as `projector serve` does: the embedded
//! event store on a loopback port, the host talking to it through the
//! official client, the HTTP API on another loopback port. The load
//! generators share the machine's two cores with what they measure.
#![allow(clippy::print_stdout)] // the table is the output

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use eventstore::{AppendToStreamOptions, Client, EventData, SubscribeToAllOptions, SubscriptionEvent};
use projector::deployments::Deployment;
use projector::runtime::{DocumentSource, Event, Limits, Runtime};
use projector::settings::DeployOptions;
use projector_guest_sdk::{ReadModel, WriteError};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};

use crate::report::{millis, ms, percentile, Row, Table, Target};
use crate::stack::{start_store, RunningHost};

/// Flags of `bench projections`.
#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// Events in the history the catch-up figures read.
    #[arg(long, default_value_t = 1_000_000)]
    events: u64,
    /// How long the live lag is measured, in seconds.
    #[arg(long, default_value_t = 30)]
    lag_seconds: u64,
    /// Tiny sizes: checks that every measurement produces a number.
    #[arg(long)]
    quick: bool,
}

/// Events are appended in blocks of this many, one stream per block.
const BLOCK: u64 = 1000;

/// In the mixed history every third block is stock movements, the rest registrations.
fn is_stock_block(n: u64) -> bool {
    (n / BLOCK) % 3 == 2
}

/// A registered user's number near `n` in the mixed history.
fn user_near(n: u64) -> u64 {
    if is_stock_block(n) {
        n - BLOCK
    } else {
        n
    }
}

const WAREHOUSES: [&str; 8] = [
    "warehouse-eu-west-paris",
    "warehouse-eu-central-frankfurt",
    "warehouse-eu-north-stockholm",
    "warehouse-us-east-virginia",
    "warehouse-us-west-oregon",
    "warehouse-ap-south-mumbai",
    "warehouse-ap-northeast-tokyo",
    "warehouse-sa-east-sao-paulo",
];

const CATEGORIES: [&str; 5] =
    ["ELECTRONICS-AUDIO", "HOME-KITCHEN", "GARDEN-TOOLS", "SPORTS-OUTDOOR", "BOOKS-PAPERBACK"];

/// A stock movement for the `inventory` projection: 5,000 SKUs in 8
/// warehouses; mostly receipts and shipments, some corrections.
fn stock_movement(n: u64) -> anyhow::Result<EventData> {
    let sku = format!("SKU-{}-{:05}", CATEGORIES[(n % 5) as usize], (n / 5) % 1000);
    let warehouse = WAREHOUSES[((n / 7) % 8) as usize];
    let (event_type, quantity) = match n % 20 {
        0 => ("StockAdjusted", -((n % 3) as i64) - 1),
        1..=9 => ("StockShipped", (n % 4) as i64 + 1),
        _ => ("StockReceived", (n % 12) as i64 + 1),
    };
    let data = serde_json::json!({ "sku": sku, "warehouse": warehouse, "quantity": quantity });
    let metadata = serde_json::json!({ "schemaVersion": 1 });
    Ok(EventData::json(event_type, &data)?.metadata_as_json(&metadata)?.id(uuid::Uuid::new_v4()))
}

/// A user-registration event as the command API writes it (schema v2), about 300 bytes.
fn registration_payload(n: u64) -> String {
    format!(
        r#"{{"userId":"u{n}","email":"user{n}@example.com","username":"user_{n}","passwordHash":"$argon2id$v=19$m=19456,t=2,p=1$c2FsdHNhbHRzYWx0$aGFzaGhhc2hoYXNoaGFzaGhhc2hoYXNoaGFzaA","registeredAt":"2026-11-23T12:00:00Z"}}"#
    )
}

const METADATA: &str = r#"{"schemaVersion":2}"#;

/// Stored as JSON (content type `application/json`), as the command API and
/// the Node.js client write it, so every client decodes it as JSON.
pub(crate) fn registration(n: u64) -> anyhow::Result<EventData> {
    let metadata: serde_json::Value = serde_json::from_str(METADATA)?;
    let data = serde_json::value::RawValue::from_string(registration_payload(n))?;
    Ok(EventData::json("UserRegistered", &data)?.metadata_as_json(&metadata)?.id(uuid::Uuid::new_v4()))
}

/// The same event as the runtime receives it.
fn runtime_event(n: u64) -> Event {
    Event {
        stream_id: format!("user-u{n}"),
        event_type: "UserRegistered".into(),
        event_id: format!("00000000-0000-4000-8000-{n:012x}"),
        stream_revision: 0,
        commit_position: n * 512,
        created_ms: 1_795_000_000_000,
        content_type: "application/json".into(),
        data: registration_payload(n).into_bytes(),
        metadata: METADATA.as_bytes().to_vec(),
    }
}

/// Committed documents in memory: what a batch reads besides its own writes.
#[derive(Default)]
struct Memory(parking_lot::Mutex<BTreeMap<(String, String), String>>);

impl DocumentSource for Memory {
    fn get(&self, collection: &str, key: &str) -> anyhow::Result<Option<String>> {
        Ok(self.0.lock().get(&(collection.to_owned(), key.to_owned())).cloned())
    }
}

/// The native side: the SDK's `ReadModel` over an in-memory overlay, as the
/// host's overlay is for the Wasm side (documents kept as JSON text).
#[derive(Default)]
struct NativeOverlay {
    writes: BTreeMap<(String, String), Option<String>>,
}

impl projector_guest_sdk::model_backend::Backend for NativeOverlay {
    fn get(&mut self, collection: &str, key: &str) -> Option<String> {
        self.writes.get(&(collection.to_owned(), key.to_owned())).cloned().flatten()
    }

    fn put(&mut self, collection: &str, key: &str, document: String) -> Result<(), WriteError> {
        self.writes.insert((collection.to_owned(), key.to_owned()), Some(document));
        Ok(())
    }

    fn delete(&mut self, collection: &str, key: &str) {
        self.writes.insert((collection.to_owned(), key.to_owned()), None);
    }
}

/// Events per second through `user-directory`, natively, in batches of `batch`.
fn native_rate(events: &[Event], batch: usize) -> anyhow::Result<f64> {
    let started = Instant::now();
    for chunk in events.chunks(batch) {
        let mut overlay = NativeOverlay::default();
        let mut model = ReadModel::new(&mut overlay);
        projector_guest_sdk::apply_batch::<user_directory::UserDirectory>(chunk, &mut model)
            .map_err(|e| anyhow::anyhow!("native batch failed: {e:?}"))?;
        std::hint::black_box(&overlay.writes);
    }
    Ok(events.len() as f64 / started.elapsed().as_secs_f64())
}

/// Events per second through a module, and the time per call, in batches of `batch`.
fn wasm_rate(runtime: &Runtime, module: &str, events: &[Event], batch: usize) -> anyhow::Result<(f64, Duration)> {
    let bytes = std::fs::read(module).with_context(|| format!("cannot read {module}"))?;
    let module = runtime.compile(&bytes)?;
    let mut instance = runtime.instantiate(&module).map_err(|f| anyhow::anyhow!("{f}"))?;
    let source = Arc::new(Memory::default());
    // Warm up: the first calls grow the guest's memory.
    for chunk in events.chunks(batch).take(4) {
        instance.handle_batch(chunk, source.clone()).map_err(|f| anyhow::anyhow!("{f}"))?;
    }
    let started = Instant::now();
    let mut calls = 0u32;
    for chunk in events.chunks(batch) {
        let writes = instance.handle_batch(chunk, source.clone()).map_err(|f| anyhow::anyhow!("{f}"))?;
        std::hint::black_box(writes);
        calls += 1;
    }
    let took = started.elapsed();
    Ok((events.len() as f64 / took.as_secs_f64(), took / calls.max(1)))
}

fn boundary_and_native_rows(quick: bool, table: &mut Table) -> anyhow::Result<()> {
    let count = if quick { 4_096 } else { 262_144 };
    let events: Vec<Event> = (0..count).map(runtime_event).collect();
    let runtime = Runtime::new(Limits::default())?;

    for batch in [1, 16, 256, 1024] {
        let events = if batch == 1 { &events[..count as usize / 8] } else { &events[..] };
        let (rate, per_call) = wasm_rate(&runtime, projector_tests::modules::NOOP, events, batch)?;
        table.push(Row::new(format!("boundary: empty guest, batch {batch}"), rate, "events/s").detail(format!(
            "{:.2} µs/event, {:.1} µs/call",
            1e6 / rate,
            per_call.as_secs_f64() * 1e6
        )));
    }

    let native = native_rate(&events, 512)?;
    let (wasm, _) = wasm_rate(&runtime, projector_tests::modules::USER_DIRECTORY, &events, 512)?;
    table.push(Row::new("guest compute: user-directory native, batch 512", native, "events/s"));
    table.push(Row::new("guest compute: user-directory in Wasm, batch 512", wasm, "events/s"));
    table.push(Row::new("guest compute: Wasm over native", wasm / native, "x").target(Target::AtLeast(0.5)));
    Ok(())
}

/// Appends `total` registrations in blocks of 1000 from 4 writers; the last commit position.
pub(crate) async fn preload(client: &Client, total: u64) -> anyhow::Result<u64> {
    preload_blocks(client, total, false).await
}

/// Appends `total` events in blocks of 1000 (one stream each) from 4
/// writers: registrations, or with `mixed` every third block stock
/// movements. The last commit position.
pub(crate) async fn preload_blocks(client: &Client, total: u64, mixed: bool) -> anyhow::Result<u64> {
    let writers = 4;
    let blocks = total.div_ceil(BLOCK);
    let mut tasks = Vec::new();
    for writer in 0..writers {
        let client = client.clone();
        tasks.push(tokio::spawn(async move {
            let mut last = 0;
            for block in (writer..blocks).step_by(writers as usize) {
                let numbers = block * BLOCK..((block + 1) * BLOCK).min(total);
                let stock = mixed && is_stock_block(block * BLOCK);
                let events: Vec<EventData> = if stock {
                    numbers.map(stock_movement).collect::<Result<_, _>>()?
                } else {
                    numbers.map(registration).collect::<Result<_, _>>()?
                };
                let stream = if stock { format!("stock-b{block}") } else { format!("user-b{block}") };
                let written = client.append_to_stream(stream, &AppendToStreamOptions::default(), events).await?;
                last = last.max(written.position.commit);
            }
            anyhow::Ok(last)
        }));
    }
    let mut last = 0;
    for task in tasks {
        last = last.max(task.await??);
    }
    Ok(last)
}

/// The ceiling: a catch-up subscription with user-directory's filter that does nothing.
pub(crate) async fn plain_subscription_rate(client: &Client, total: u64) -> anyhow::Result<f64> {
    subscription_rate(client, total, eventstore::SubscriptionFilter::on_stream_name().add_prefix("user-")).await
}

/// Events per second of a catch-up subscription with `filter` that does
/// nothing, until it has seen `total` events.
async fn subscription_rate(client: &Client, total: u64, filter: eventstore::SubscriptionFilter) -> anyhow::Result<f64> {
    let options = SubscribeToAllOptions::default().position(eventstore::StreamPosition::Start).filter(filter);
    let started = Instant::now();
    let mut subscription = client.subscribe_to_all(&options).await;
    let mut seen = 0u64;
    while seen < total {
        if let SubscriptionEvent::EventAppeared(_) = subscription.next_subscription_event().await? {
            seen += 1;
        }
    }
    Ok(seen as f64 / started.elapsed().as_secs_f64())
}

/// The live lags of one window.
struct Lags {
    /// From the store's acknowledgement until the projection has committed it, sorted.
    lags: Vec<Duration>,
    /// The appends themselves, sorted.
    appends: Vec<Duration>,
    /// When the events that took over 50 ms were sent, into the window.
    slow_at: Vec<Duration>,
}

impl Lags {
    /// Where the slow events fell, e.g. "3 over 50 ms, sent at 0.0-0.1 s".
    fn slow(&self) -> String {
        match (self.slow_at.first(), self.slow_at.last()) {
            (Some(first), Some(last)) => format!(
                "{} over 50 ms, sent at {:.1}-{:.1} s into the window",
                self.slow_at.len(),
                first.as_secs_f64(),
                last.as_secs_f64()
            ),
            _ => "none over 50 ms".to_owned(),
        }
    }
}

/// Appends single events at `rate` per second for `duration` (open loop:
/// sends are scheduled, not paced by replies), and measures each one's lag.
async fn live_lags(
    client: &Client,
    projection: &Arc<Deployment>,
    first: u64,
    rate: u64,
    duration: Duration,
) -> anyhow::Result<Lags> {
    let count = rate * duration.as_millis() as u64 / 1000;
    let interval = Duration::from_secs(1) / rate as u32;
    let started = tokio::time::Instant::now();
    let mut tasks = Vec::with_capacity(count as usize);
    for i in 0..count {
        tokio::time::sleep_until(started + interval * i as u32).await;
        let (client, projection) = (client.clone(), projection.clone());
        tasks.push(tokio::spawn(async move {
            let sent = Instant::now();
            let n = first + i;
            let written = client
                .append_to_stream(format!("user-live-{n}"), &AppendToStreamOptions::default(), registration(n)?)
                .await?;
            let appended = Instant::now();
            projection
                .wait_for(written.position.commit)
                .await
                .map_err(|s| anyhow::anyhow!("projection stopped: {s:?}"))?;
            anyhow::Ok((appended.elapsed(), appended - sent))
        }));
    }
    let mut lags = Vec::with_capacity(tasks.len());
    let mut appends = Vec::with_capacity(tasks.len());
    let mut slow_at = Vec::new();
    for (i, task) in tasks.into_iter().enumerate() {
        let (lag, append) = task.await??;
        if lag > Duration::from_millis(50) {
            slow_at.push(interval * i as u32);
        }
        lags.push(lag);
        appends.push(append);
    }
    lags.sort();
    appends.sort();
    Ok(Lags { lags, appends, slow_at })
}

/// Sends `GET {path(n)}` for pseudo-random `n` in `0..keys` over
/// `connections` keep-alive HTTP/1.1 connections for `duration`, each
/// answer checked for 200; requests per second and sorted latencies.
pub(crate) async fn http_load(
    addr: std::net::SocketAddr,
    keys: u64,
    connections: u64,
    duration: Duration,
    path: PathOf,
) -> anyhow::Result<(f64, Vec<Duration>)> {
    let (rate, latencies, _) = http_load_answers(addr, keys, connections, duration, path, false).await?;
    Ok((rate, latencies))
}

/// `http_load`, and with `busy_ok` a 503 (the host too busy: no scan turn
/// within the query time limit) is counted instead of failing the load.
/// Requests per second and sorted latencies of the 200s, and the 503s.
pub(crate) async fn http_load_answers(
    addr: std::net::SocketAddr,
    keys: u64,
    connections: u64,
    duration: Duration,
    path: PathOf,
    busy_ok: bool,
) -> anyhow::Result<(f64, Vec<Duration>, u64)> {
    let started = Instant::now();
    let mut tasks = Vec::new();
    for connection in 0..connections {
        tasks.push(tokio::spawn(async move {
            let stream = tokio::net::TcpStream::connect(addr).await?;
            stream.set_nodelay(true)?;
            let (read, mut write) = stream.into_split();
            let mut read = BufReader::new(read);
            let mut latencies = Vec::new();
            let mut busy = 0u64;
            let mut n = connection * 7919;
            let mut line = String::new();
            let mut body = Vec::new();
            while started.elapsed() < duration {
                n = (n * 48271 + 11) % keys;
                let path = path(n);
                let request = format!("GET {path} HTTP/1.1\r\nHost: localhost\r\n\r\n");
                let sent = Instant::now();
                write.write_all(request.as_bytes()).await?;
                line.clear();
                read.read_line(&mut line).await?;
                let refused = busy_ok && line.starts_with("HTTP/1.1 503");
                if !line.starts_with("HTTP/1.1 200") && !refused {
                    bail!("GET {path}: {line:?}");
                }
                let mut length = 0usize;
                loop {
                    line.clear();
                    read.read_line(&mut line).await?;
                    if line == "\r\n" {
                        break;
                    }
                    if let Some((name, value)) = line.split_once(':') {
                        if name.eq_ignore_ascii_case("content-length") {
                            length = value.trim().parse()?;
                        }
                    }
                }
                body.resize(length, 0);
                read.read_exact(&mut body).await?;
                if refused {
                    busy += 1;
                } else {
                    latencies.push(sent.elapsed());
                }
            }
            anyhow::Ok((latencies, busy))
        }));
    }
    let mut latencies = Vec::new();
    let mut busy = 0;
    for task in tasks {
        let (answered, refused) = task.await??;
        latencies.extend(answered);
        busy += refused;
    }
    let rate = latencies.len() as f64 / started.elapsed().as_secs_f64();
    latencies.sort();
    Ok((rate, latencies, busy))
}

/// The request path for the `n`th pseudo-random pick.
pub(crate) type PathOf = fn(u64) -> String;

/// A user document by key.
pub(crate) fn user_by_key(n: u64) -> String {
    format!("/projections/user-directory/collections/users/u{}", user_near(n))
}

/// A filtered list: the users with a username (an indexed field), at most 20.
pub(crate) fn users_named(n: u64) -> String {
    format!("/projections/user-directory/collections/users?filter=username=user_{}&limit=20", user_near(n))
}

/// GETs user documents by key for `duration`; requests per second and sorted latencies.
pub(crate) async fn get_by_key(
    addr: std::net::SocketAddr,
    keys: u64,
    connections: u64,
    duration: Duration,
) -> anyhow::Result<(f64, Vec<Duration>)> {
    http_load(addr, keys, connections, duration, user_by_key).await
}

/// The sum of every sample of `name` in a Prometheus exposition.
pub(crate) fn metric_sum(text: &str, name: &str) -> f64 {
    text.lines()
        .filter(|line| line.starts_with(name))
        .filter_map(|line| line.rsplit_once(' ')?.1.parse::<f64>().ok())
        .sum()
}

/// The example projections the catch-up figures run.
pub(crate) const EXAMPLES: [(&str, &str); 3] = [
    ("user-directory", projector_tests::modules::USER_DIRECTORY),
    ("signup-stats", projector_tests::modules::SIGNUP_STATS),
    ("inventory", projector_tests::modules::INVENTORY),
];

/// Deploys `projections` into a fresh host and waits until every one has
/// reached `last` and is running (declared indexes built). The host and
/// how long it took.
async fn catch_up(
    server: &eventstore_embedded::EmbeddedServer,
    dir: &std::path::Path,
    projections: &[(&str, &str)],
    last: u64,
) -> anyhow::Result<(RunningHost, Duration)> {
    catch_up_with(server, projector::HostConfig::new(dir.to_path_buf()), projections, last).await
}

/// `catch_up` with a host started with `config` (its storage, say).
pub(crate) async fn catch_up_with(
    server: &eventstore_embedded::EmbeddedServer,
    config: projector::HostConfig,
    projections: &[(&str, &str)],
    last: u64,
) -> anyhow::Result<(RunningHost, Duration)> {
    let running = RunningHost::start(server, config).await?;
    let started = Instant::now();
    for (name, module) in projections {
        let bytes = std::fs::read(module).with_context(|| format!("cannot read {module}"))?;
        running.host.deployments().deploy(name, bytes, DeployOptions::default()).await?;
    }
    for (name, _) in projections {
        let projection = running.host.deployments().get(name).context("deployed")?;
        projection.wait_for(last).await.map_err(|s| anyhow::anyhow!("{name} stopped: {s:?}"))?;
        // Caught up means its declared indexes are built too.
        projection.wait_until_running().await.map_err(|s| anyhow::anyhow!("{name} stopped: {s:?}"))?;
    }
    Ok((running, started.elapsed()))
}

/// Catch-up of the mixed history by each example alone, by the crowd
/// (20 projections at once) and by all three together, beside the ceiling.
/// Leaves the host with all three running.
async fn catch_up_rows(
    server: &eventstore_embedded::EmbeddedServer,
    dir: &std::path::Path,
    total: u64,
    last: u64,
    table: &mut Table,
) -> anyhow::Result<RunningHost> {
    let ceiling = subscription_rate(
        &server.client()?,
        total,
        eventstore::SubscriptionFilter::on_event_type().exclude_system_events(),
    )
    .await?;
    table.push(
        Row::new("catch-up ceiling: subscription to $all doing nothing", ceiling, "events/s")
            .detail(format!("{total} events")),
    );
    let mut user_directory_alone = None;
    for (index, example) in EXAMPLES.iter().enumerate() {
        let (running, took) = catch_up(server, &dir.join(format!("alone-{index}")), &[*example], last).await?;
        let rate = total as f64 / took.as_secs_f64();
        let metrics = running.host.deployments().metrics().render(&[]);
        let module = metric_sum(&metrics, "projection_event_processing_seconds_sum");
        let commit = metric_sum(&metrics, "projector_batch_commit_seconds_sum");
        let processed = metric_sum(&metrics, "projector_events_processed_total");
        running.stop().await?;
        let name = example.0;
        if name == "user-directory" {
            user_directory_alone = Some(took);
        }
        table.push(
            Row::new(format!("catch-up: {name} alone, {total} events to the head, committed"), rate, "events/s")
                .target(Target::AtLeast(100_000.0))
                .detail(format!(
                    "{:.1} s: module {module:.1} s, commit {commit:.1} s; {processed:.0} events were its own",
                    took.as_secs_f64()
                )),
        );
        table.push(
            Row::new(format!("catch-up: {name} alone, share of the ceiling"), rate / ceiling * 100.0, "%")
                .target(Target::AtLeast(40.0)),
        );
    }
    let alone = user_directory_alone.context("user-directory is one of the examples")?;
    crowd_catch_up_rows(server, &dir.join(CROWD_DIR), total, last, alone, ceiling, table).await?;
    let (running, took) = catch_up(server, &dir.join("together"), &EXAMPLES, last).await?;
    let rate = total as f64 / took.as_secs_f64();
    table.push(
        Row::new("catch-up: all three together, until the last is at the head", rate, "events/s").detail(format!(
            "{:.1} s = {:.0}% of the ceiling",
            took.as_secs_f64(),
            rate / ceiling * 100.0
        )),
    );
    Ok(running)
}

/// How many projections the crowd figures deploy.
const CROWD: usize = 20;

/// The crowd's host directory, under the benchmark's own.
const CROWD_DIR: &str = "crowd";

/// The crowd: the examples under distinct names, taking turns
/// (`user-directory-0`, `signup-stats-0`, `inventory-0`, `user-directory-1`,
/// ...): 7 `user-directory`, 7 `signup-stats` and 6 `inventory`.
fn crowd() -> Vec<(String, &'static str)> {
    (0..CROWD)
        .map(|n| {
            let (name, module) = EXAMPLES[n % EXAMPLES.len()];
            (format!("{name}-{}", n / EXAMPLES.len()), module)
        })
        .collect()
}

/// The crowd deployed at once into a fresh host at `dir`, until the last is
/// at the head (as "together" is measured), beside `user-directory` alone
/// (it took `alone`) and the `ceiling`. Stops the host; [`crowd_lag_rows`]
/// starts it again from `dir`.
async fn crowd_catch_up_rows(
    server: &eventstore_embedded::EmbeddedServer,
    dir: &std::path::Path,
    total: u64,
    last: u64,
    alone: Duration,
    ceiling: f64,
    table: &mut Table,
) -> anyhow::Result<()> {
    let crowd = crowd();
    let projections: Vec<(&str, &str)> = crowd.iter().map(|(name, module)| (name.as_str(), *module)).collect();
    let (running, took) = catch_up(server, dir, &projections, last).await?;
    running.stop().await?;
    let rate = total as f64 / took.as_secs_f64();
    table.push(
        Row::new(
            format!("catch-up: {CROWD} projections deployed at once, until the last is at the head"),
            took.as_secs_f64(),
            "s",
        )
        .detail(format!("{total} events; 7 user-directory, 7 signup-stats and 6 inventory, each under its own name")),
    );
    table.push(
        Row::new(format!("catch-up: {CROWD} projections deployed at once, rate over the history"), rate, "events/s")
            .detail(format!("{:.0}% of the ceiling", rate / ceiling * 100.0)),
    );
    table.push(
        Row::new(
            format!("catch-up: {CROWD} projections at once over user-directory alone, time"),
            took.as_secs_f64() / alone.as_secs_f64(),
            "x",
        )
        .detail(format!(
            "{:.1} s for the {CROWD} against {:.1} s for user-directory alone",
            took.as_secs_f64(),
            alone.as_secs_f64()
        )),
    );
    Ok(())
}

/// Starts the crowd's host at `dir` again (every projection restored at its
/// checkpoint), waits until all have caught up with what was appended since
/// [`crowd_catch_up_rows`], then measures the live lag at 2k events/s
/// through `user-directory-0` while all of them follow the store. Events
/// are numbered from `first` (after those of the earlier live lag).
async fn crowd_lag_rows(
    server: &eventstore_embedded::EmbeddedServer,
    dir: &std::path::Path,
    first: u64,
    duration: Duration,
    table: &mut Table,
) -> anyhow::Result<()> {
    let running = RunningHost::start(server, projector::HostConfig::new(dir.to_path_buf())).await?;
    for (name, _) in crowd() {
        let projection = running.host.deployments().get(&name).context("restored")?;
        projection.wait_until_running().await.map_err(|s| anyhow::anyhow!("{name} stopped: {s:?}"))?;
    }
    let projection = running.host.deployments().get("user-directory-0").context("restored")?;
    let measured = live_lags(&server.client()?, &projection, first, 2_000, duration).await?;
    let lags = &measured.lags;
    table.push(
        Row::new(
            format!("live lag at 2k events/s with {CROWD} projections deployed: acknowledged -> queryable, p99"),
            millis(percentile(lags, 0.99)),
            "ms",
        )
        .target(Target::AtMost(50.0))
        .detail(format!(
            "{} events over {} s through user-directory-0; p50 {}",
            lags.len(),
            duration.as_secs(),
            ms(percentile(lags, 0.5))
        )),
    );
    table.push(
        Row::new(
            format!("live lag at 2k events/s with {CROWD} projections deployed: acknowledged -> queryable, max"),
            millis(percentile(lags, 1.0)),
            "ms",
        )
        .target(Target::AtMost(100.0))
        .detail(measured.slow()),
    );
    drop(projection);
    running.stop().await
}

/// GET by key and a filtered list at 1, 16 and 64 keep-alive clients.
async fn query_rows(
    addr: std::net::SocketAddr,
    keys: u64,
    duration: Duration,
    table: &mut Table,
) -> anyhow::Result<()> {
    let kinds: [(&str, PathOf); 2] =
        [("GET by key", user_by_key), ("filtered list (username = ?, indexed)", users_named)];
    for (kind, path) in kinds {
        for clients in [1, 16, 64] {
            let (rate, latencies) = http_load(addr, keys, clients, duration, path).await?;
            let p99 = millis(percentile(&latencies, 0.99));
            let mut throughput = Row::new(format!("queries: {kind}, {clients} clients"), rate, "requests/s");
            let mut tail = Row::new(format!("queries: {kind}, {clients} clients, p99"), p99, "ms");
            if kind == "GET by key" && clients == 16 {
                throughput = throughput.target(Target::AtLeast(20_000.0));
                tail = tail.target(Target::AtMost(5.0));
            }
            table.push(throughput.detail(format!("{} requests", latencies.len())));
            table.push(tail.detail(format!("p50 {}", ms(percentile(&latencies, 0.5)))));
        }
    }
    Ok(())
}

pub(crate) async fn run(args: Args) -> anyhow::Result<Table> {
    let mut table = Table::default();
    let quick = args.quick;
    let total = if quick { 20_000 } else { args.events };

    tokio::task::block_in_place(|| boundary_and_native_rows(quick, &mut table))?;

    let dir = tempfile::tempdir()?;
    let server = start_store(dir.path()).await?;
    let client = server.client()?;
    let started = Instant::now();
    let last = preload_blocks(&client, total, true).await?;
    let log = std::fs::metadata(dir.path().join("es/events.log"))?.len();
    table.push(
        Row::new(
            "mixed history: preload (blocks of 1000, 4 writers)",
            total as f64 / started.elapsed().as_secs_f64(),
            "events/s",
        )
        .detail(format!(
            "{total} events, 2/3 registrations and 1/3 stock movements; {:.0} B per event in the log",
            log as f64 / total as f64
        )),
    );

    let running = catch_up_rows(&server, dir.path(), total, last, &mut table).await?;
    let host = &running.host;
    let projection = host.deployments().get("user-directory").context("deployed")?;

    let lag_window = Duration::from_secs(if quick { 1 } else { args.lag_seconds });
    let measured = live_lags(&client, &projection, total, 2_000, lag_window).await?;
    let (lags, appends) = (&measured.lags, &measured.appends);
    let detail = format!("{} events over {} s, 3 projections deployed", lags.len(), lag_window.as_secs());
    table.push(
        Row::new("live lag at 2k events/s: acknowledged -> queryable, p50", millis(percentile(lags, 0.5)), "ms")
            .detail(detail),
    );
    table.push(
        Row::new("live lag at 2k events/s: acknowledged -> queryable, p99", millis(percentile(lags, 0.99)), "ms")
            .target(Target::AtMost(50.0)),
    );
    table.push(
        Row::new("live lag at 2k events/s: acknowledged -> queryable, max", millis(percentile(lags, 1.0)), "ms")
            .detail(measured.slow()),
    );
    table.push(
        Row::new("live lag: the append before it (durable in the store), p99", millis(percentile(appends, 0.99)), "ms")
            .detail(format!("p50 {}", ms(percentile(appends, 0.5)))),
    );

    let duration = if quick { Duration::from_millis(300) } else { Duration::from_secs(5) };
    query_rows(host.local_addr(), total, duration, &mut table).await?;
    crate::hostile_bench::hostile_query_rows(host.local_addr(), total, duration, &mut table).await?;

    let bytes = std::fs::read(projector_tests::modules::USER_DIRECTORY)?;
    swap_rows(host, &bytes, total, quick, &mut table).await?;

    drop(projection);
    running.stop().await?;
    // The crowd's live lag comes last, on its host started again: measured
    // right after its catch-up, its appends would lengthen the history that
    // all three together catch up with.
    let first = total + lags.len() as u64;
    crowd_lag_rows(&server, &dir.path().join(CROWD_DIR), first, lag_window, &mut table).await?;
    server.shutdown().await?;
    Ok(table)
}

/// `bytes` with a custom section naming `variant` appended: a module that
/// behaves the same but has another hash, so the host compiles it afresh
/// like any new version.
fn variant(bytes: &[u8], variant: u32) -> Vec<u8> {
    let name = b"projector-bench";
    let payload = variant.to_le_bytes();
    let size = 1 + name.len() + payload.len();
    assert!(size < 128, "a one-byte LEB128 size");
    let mut out = bytes.to_vec();
    out.extend_from_slice(&[0, size as u8, name.len() as u8]);
    out.extend_from_slice(name);
    out.extend_from_slice(&payload);
    out
}

/// `continue` swaps (request -> new code live) and a blue/green rebuild of
/// the whole read model, each under a query load that must see no failure.
async fn swap_rows(
    host: &projector::Host,
    module: &[u8],
    keys: u64,
    quick: bool,
    table: &mut Table,
) -> anyhow::Result<()> {
    let http = reqwest::Client::new();
    let url = format!("http://{}/projections/user-directory", host.local_addr());
    let deploy = |bytes: Vec<u8>, mode: &'static str| {
        http.put(format!("{url}?mode={mode}")).bearer_auth(host.admin_token()).body(bytes).send()
    };

    let mut compiles = Vec::new();
    for n in 0..3 {
        let bytes = Arc::new(variant(module, 500 + n));
        let started = Instant::now();
        host.deployments().compile(bytes).await?;
        compiles.push(started.elapsed());
    }
    compiles.sort();

    let swaps = if quick { 2 } else { 7 };
    let addr = host.local_addr();
    let queries = tokio::spawn(get_by_key(addr, keys, 4, Duration::from_millis(700 * swaps + 500)));
    let mut took = Vec::new();
    for n in 0..swaps {
        let bytes = variant(module, n as u32);
        let started = Instant::now();
        let response = deploy(bytes, "continue").await?;
        took.push(started.elapsed());
        if response.status() != 200 {
            bail!("continue swap answered {}: {}", response.status(), response.text().await?);
        }
    }
    let (_, during) = queries.await??;
    took.sort();
    table.push(
        Row::new(
            format!("hot swap: continue, {} KB module, request -> new code live", module.len() / 1024),
            millis(took[took.len() / 2]),
            "ms",
        )
        .target(Target::AtMost(250.0))
        .detail(format!(
            "median of {swaps} swaps (min {}, max {}); {} queries meanwhile, 0 failed",
            ms(took[0]),
            ms(took[took.len() - 1]),
            during.len()
        )),
    );
    table.push(
        Row::new("hot swap: of which validating and compiling the new module", millis(compiles[1]), "ms")
            .detail(format!("median of 3 (min {}, max {})", ms(compiles[0]), ms(compiles[2]))),
    );

    // Queries before and during the rebuild are measured the same way: one
    // window after another of 16 fresh keep-alive connections for 1 s.
    let window = Duration::from_secs(1);
    let mut before = (0usize, Duration::ZERO);
    for _ in 0..if quick { 1 } else { 5 } {
        let started = Instant::now();
        before.0 += get_by_key(addr, keys, 16, window).await?.1.len();
        before.1 += started.elapsed();
    }
    let baseline_rate = before.0 as f64 / before.1.as_secs_f64();
    let started = Instant::now();
    let response = deploy(variant(module, 1_000), "rebuild").await?;
    if response.status() != 202 {
        bail!("rebuild answered {}: {}", response.status(), response.text().await?);
    }
    let projection = host.deployments().get("user-directory").context("deployed")?;
    let mut answered = 0usize;
    let mut window_time = Duration::ZERO;
    while host.deployments().status(&projection).rebuild.is_some() {
        let window_started = Instant::now();
        let (_, latencies) = get_by_key(addr, keys, 16, window).await?;
        answered += latencies.len();
        window_time += window_started.elapsed();
    }
    let rebuilt = started.elapsed();
    let during_rate = answered as f64 / window_time.as_secs_f64().max(1e-9);
    let ratio = during_rate / baseline_rate;
    table.push(
        Row::new(
            format!("hot swap: rebuild of user-directory over {keys} events (blue/green), until the switch"),
            keys as f64 / rebuilt.as_secs_f64(),
            "events/s",
        )
        .detail(format!("{:.1} s", rebuilt.as_secs_f64())),
    );
    table.push(
        Row::new("hot swap: GET by key during the rebuild, share of just before it", ratio * 100.0, "%")
            .target(Target::AtLeast(80.0))
            .detail(format!(
                "{during_rate:.0} against {baseline_rate:.0} requests/s (1 s windows, 16 clients); {answered} queries, 0 failed"
            )),
    );
    Ok(())
}
