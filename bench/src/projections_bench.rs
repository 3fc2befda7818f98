//! The projection runtime benchmark: the Wasm boundary, the same projection
//! native and in Wasm, catch-up of a large history into a committed read
//! model beside the ceiling of a subscription that does nothing, live
//! append-to-queryable lag, and document reads over HTTP.
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
use projector::projections::{DeployOptions, Projection};
use projector::runtime::{DocumentSource, Event, Limits, Runtime};
use projector_guest_sdk::{ReadModel, WriteError};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};

use crate::report::{ms, percentile, Row, Table};

/// Flags of `bench projections`.
#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// Events in the history the catch-up figure reads.
    #[arg(long, default_value_t = 1_000_000)]
    events: u64,
    /// Tiny sizes: checks that every measurement produces a number.
    #[arg(long)]
    quick: bool,
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
fn registration(n: u64) -> anyhow::Result<EventData> {
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
        table.push(Row::figure(
            format!("boundary: empty guest, batch {batch}"),
            format!("{:.2} µs/event, {:.1} µs/call ({rate:.0} events/s)", 1e6 / rate, per_call.as_secs_f64() * 1e6),
        ));
    }

    let native = native_rate(&events, 512)?;
    let (wasm, _) = wasm_rate(&runtime, projector_tests::modules::USER_DIRECTORY, &events, 512)?;
    table.push(Row::figure("user-directory native, batch 512 (baseline)", format!("{native:.0} events/s")));
    table.push(Row::checked(
        "user-directory in Wasm, batch 512",
        format!("{wasm:.0} events/s = {:.0}% of native", wasm / native * 100.0),
        ">= 50% of native",
        wasm >= native * 0.5,
    ));
    Ok(())
}

/// Appends `total` registrations in batches of 1000 from 4 writers; the last commit position.
pub(crate) async fn preload(client: &Client, total: u64) -> anyhow::Result<u64> {
    let writers = 4;
    let mut tasks = Vec::new();
    for writer in 0..writers {
        let client = client.clone();
        tasks.push(tokio::spawn(async move {
            let mut last = 0;
            let mut n = writer;
            let mut chunk = 0;
            while n < total {
                let events: Vec<EventData> =
                    (n..total).step_by(writers as usize).take(1000).map(registration).collect::<Result<_, _>>()?;
                n += events.len() as u64 * writers;
                let written = client
                    .append_to_stream(format!("user-w{writer}-{chunk}"), &AppendToStreamOptions::default(), events)
                    .await?;
                last = last.max(written.position.commit);
                chunk += 1;
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
    let filter = eventstore::SubscriptionFilter::on_stream_name().add_prefix("user-");
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

/// Appends single events at `rate` per second for `duration` (open loop:
/// sends are scheduled, not paced by replies). For each event: the time from
/// the store's acknowledgement until the projection has committed it (sorted),
/// and the time the append itself took (sorted).
async fn live_lags(
    client: &Client,
    projection: &Arc<Projection>,
    first: u64,
    rate: u64,
    duration: Duration,
) -> anyhow::Result<(Vec<Duration>, Vec<Duration>)> {
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
    for task in tasks {
        let (lag, append) = task.await??;
        lags.push(lag);
        appends.push(append);
    }
    lags.sort();
    appends.sort();
    Ok((lags, appends))
}

/// GETs documents by key over `connections` keep-alive HTTP/1.1 connections for `duration`;
/// requests per second and sorted latencies.
async fn get_by_key(
    addr: std::net::SocketAddr,
    keys: u64,
    connections: u64,
    duration: Duration,
) -> anyhow::Result<(f64, Vec<Duration>)> {
    let started = Instant::now();
    let mut tasks = Vec::new();
    for connection in 0..connections {
        tasks.push(tokio::spawn(async move {
            let stream = tokio::net::TcpStream::connect(addr).await?;
            stream.set_nodelay(true)?;
            let (read, mut write) = stream.into_split();
            let mut read = BufReader::new(read);
            let mut latencies = Vec::new();
            let mut n = connection * 7919;
            let mut line = String::new();
            let mut body = Vec::new();
            while started.elapsed() < duration {
                n = (n * 48271 + 11) % keys;
                let request =
                    format!("GET /projections/user-directory/collections/users/u{n} HTTP/1.1\r\nHost: bench\r\n\r\n");
                let sent = Instant::now();
                write.write_all(request.as_bytes()).await?;
                line.clear();
                read.read_line(&mut line).await?;
                if !line.starts_with("HTTP/1.1 200") {
                    bail!("GET u{n}: {line:?}");
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
                latencies.push(sent.elapsed());
            }
            anyhow::Ok(latencies)
        }));
    }
    let mut latencies = Vec::new();
    for task in tasks {
        latencies.extend(task.await??);
    }
    let rate = latencies.len() as f64 / started.elapsed().as_secs_f64();
    latencies.sort();
    Ok((rate, latencies))
}

/// The sum of every sample of `name` in a Prometheus exposition.
fn metric_sum(text: &str, name: &str) -> f64 {
    text.lines()
        .filter(|line| line.starts_with(name))
        .filter_map(|line| line.rsplit_once(' ')?.1.parse::<f64>().ok())
        .sum()
}

pub(crate) async fn run(args: Args) -> anyhow::Result<()> {
    let mut table = Table::default();
    let quick = args.quick;
    let total = if quick { 20_000 } else { args.events };

    tokio::task::block_in_place(|| boundary_and_native_rows(quick, &mut table))?;

    let dir = tempfile::tempdir()?;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let server =
        eventstore_embedded::EmbeddedServer::start(listener, eventstore_embedded::Config::new(dir.path().join("es")))
            .await?;
    let client = server.client()?;
    let started = Instant::now();
    let last = preload(&client, total).await?;
    table.push(Row::figure(
        "preload (batches of 1000, 4 writers)",
        format!("{total} events in {:.1} s", started.elapsed().as_secs_f64()),
    ));

    let ceiling = plain_subscription_rate(&client, total).await?;
    table.push(Row::figure("ceiling: filtered catch-up subscription doing nothing", format!("{ceiling:.0} events/s")));

    let api = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let config = projector::HostConfig::new(dir.path().join("host"));
    let host = projector::Host::start(api, server.client()?, config, async move {
        let _ = stopped.await;
    })
    .await?;
    let bytes = std::fs::read(projector_tests::modules::USER_DIRECTORY)?;
    let started = Instant::now();
    host.projections().deploy("user-directory", bytes.clone(), DeployOptions::default()).await?;
    let projection = host.projections().get("user-directory").context("deployed")?;
    projection.wait_for(last).await.map_err(|s| anyhow::anyhow!("projection stopped: {s:?}"))?;
    // Caught up means its declared indexes are built too.
    projection.wait_until_running().await.map_err(|s| anyhow::anyhow!("projection stopped: {s:?}"))?;
    let took = started.elapsed();
    let rate = total as f64 / took.as_secs_f64();
    table.push(Row::checked(
        format!("catch-up of {total} events into the committed read model"),
        format!("{rate:.0} events/s = {:.0}% of the ceiling", rate / ceiling * 100.0),
        ">= 100k events/s",
        rate >= 100_000.0,
    ));
    let metrics = host.projections().metrics().render(&[]);
    let module = metric_sum(&metrics, "projection_event_processing_seconds_sum");
    let commit = metric_sum(&metrics, "projector_batch_commit_seconds_sum");
    let batches = metric_sum(&metrics, "projector_batch_commit_seconds_count");
    table.push(Row::figure(
        "catch-up breakdown (from /metrics)",
        format!("{:.1} s in all: module {module:.1} s, commit {commit:.1} s, {batches:.0} batches", took.as_secs_f64()),
    ));

    let duration = if quick { Duration::from_secs(1) } else { Duration::from_secs(10) };
    let (lags, appends) = live_lags(&client, &projection, total, 2_000, duration).await?;
    let p99 = percentile(&lags, 0.99);
    table.push(Row::checked(
        "live lag at 2k events/s: append acknowledged -> queryable, p99",
        format!("{} (p50 {}, {} events)", ms(p99), ms(percentile(&lags, 0.5)), lags.len()),
        "<= 50 ms",
        p99 <= Duration::from_millis(50),
    ));
    table.push(Row::figure(
        "  the append before it (durable in the store)",
        format!("p50 {}, p99 {}", ms(percentile(&appends, 0.5)), ms(percentile(&appends, 0.99))),
    ));
    let duration = if quick { Duration::from_millis(500) } else { Duration::from_secs(10) };
    let (rate, latencies) = get_by_key(host.local_addr(), total, 16, duration).await?;
    let p99 = percentile(&latencies, 0.99);
    table.push(Row::checked(
        "GET document by key (16 keep-alive connections)",
        format!("{rate:.0} requests/s",),
        ">= 20k requests/s",
        rate >= 20_000.0,
    ));
    table.push(Row::checked(
        "GET document by key p99",
        format!("{} (p50 {})", ms(p99), ms(percentile(&latencies, 0.5))),
        "<= 5 ms",
        p99 <= Duration::from_millis(5),
    ));

    swap_rows(&host, &bytes, total, quick, &mut table).await?;

    let _ = stop.send(());
    host.stopped().await?;
    server.shutdown().await?;
    table.print();
    Ok(())
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
        host.projections().compile(bytes).await?;
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
    table.push(Row::checked(
        format!("continue swap of a {} KB module: request -> new code live (median of {swaps})", module.len() / 1024),
        format!(
            "{} (min {}, max {}), {} queries meanwhile, 0 failed",
            ms(took[took.len() / 2]),
            ms(took[0]),
            ms(took[took.len() - 1]),
            during.len()
        ),
        "<= 250 ms",
        took[took.len() / 2] <= Duration::from_millis(250),
    ));
    table.push(Row::figure(
        "  of which: validating and compiling the new module (median of 3)",
        format!("{} (min {}, max {})", ms(compiles[1]), ms(compiles[0]), ms(compiles[2])),
    ));

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
    let projection = host.projections().get("user-directory").context("deployed")?;
    let mut answered = 0usize;
    let mut window_time = Duration::ZERO;
    while host.projections().status(&projection).rebuild.is_some() {
        let window_started = Instant::now();
        let (_, latencies) = get_by_key(addr, keys, 16, window).await?;
        answered += latencies.len();
        window_time += window_started.elapsed();
    }
    let rebuilt = started.elapsed();
    let during_rate = answered as f64 / window_time.as_secs_f64().max(1e-9);
    let ratio = during_rate / baseline_rate;
    table.push(Row::figure(
        format!("rebuild of the {keys}-event read model (blue/green) until the switch"),
        format!("{:.1} s = {:.0} events/s", rebuilt.as_secs_f64(), keys as f64 / rebuilt.as_secs_f64()),
    ));
    table.push(Row::checked(
        "GET by key during the rebuild, vs just before it (1 s windows, 16 connections)",
        format!(
            "{during_rate:.0} requests/s = {:.0}% of {baseline_rate:.0}, {answered} queries, 0 failed",
            ratio * 100.0
        ),
        ">= 80%",
        ratio >= 0.8,
    ));
    Ok(())
}
