//! Several hosts over one PostgreSQL (issue 18, ADR 0012): what keeping the
//! read models in PostgreSQL costs beside SQLite, how long a projection goes
//! without progress when the host running it is killed, and what one, two
//! and three hosts sharing one database do with the same work.
//!
//! - Catch-up of the mixed history (the one `bench projections` reads) by the
//!   example projections into PostgreSQL and into SQLite, same machine, same
//!   run, measured as `bench projections` measures it (an in-process host,
//!   deploy -> every projection at the head and running).
//! - GET by key and a filtered list (an indexed field) at 16 keep-alive
//!   clients against the host that just caught up, PostgreSQL beside SQLite.
//! - Takeover after `kill -9`: three host processes, one PostgreSQL, one event
//!   store (in this process); `user-directory` deployed and live under a
//!   trickle of appends. The host running it (its status' `host` field) is
//!   killed; the figure is the time until another host's status shows a
//!   different host AND a checkpoint past an event appended after the kill:
//!   the time a user sees no progress. The killed host is started again each
//!   time.
//! - One, two and three host processes sharing one PostgreSQL, three
//!   projections deployed: the time until all three are at the head.
//!
//! The host processes run `projector serve` from this same binary (it calls
//! `projector::main`, which is all the `projector` binary's `main` does), so
//! they are always the build of the sources the bench was built from;
//! `--projector PATH` runs another binary instead (e.g.
//! `target/release/projector`).
//!
//! PostgreSQL is a real server started for the run in a temporary directory
//! (`projector_tests::PostgresServer`: `pg_config --bindir` or
//! `PROJECTOR_PG_BINDIR`), with its default durability (`fsync` on).
#![allow(clippy::print_stdout, clippy::print_stderr)] // the table is the output; progress goes to stderr

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use eventstore::{AppendToStreamOptions, Client};
use projector_tests::{LoggedProcess, PostgresServer, Seeded};
use serde_json::Value;
use tempfile::TempDir;

use crate::projections_bench::{
    catch_up_with, http_load_answers, metric_sum, preload, preload_blocks, registration, user_by_key, users_named,
    PathOf, EXAMPLES,
};
use crate::report::{millis, ms, percentile, Row, Table, Target};
use crate::stack::start_store;

/// Flags of `bench cluster`.
#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// Events in the mixed history of the catch-up and query figures.
    #[arg(long, default_value_t = 1_000_000)]
    events: u64,
    /// Events in the mixed history one, two and three hosts catch up with.
    #[arg(long, default_value_t = 200_000)]
    scale_events: u64,
    /// `kill -9`s of the host running the projection, each measured.
    #[arg(long, default_value_t = 10)]
    kills: u64,
    /// The hosts' lease (`projector serve --lease-ms`).
    #[arg(long, default_value_t = 3000)]
    lease_ms: u64,
    /// How long each query figure is measured, in seconds.
    #[arg(long, default_value_t = 5)]
    query_seconds: u64,
    /// The binary the host processes run [default: this binary as `projector`].
    #[arg(long)]
    projector: Option<PathBuf>,
    /// Tiny sizes: checks that every measurement produces a number.
    #[arg(long)]
    quick: bool,
}

/// Set in the environment of a child of this binary that is to run as
/// `projector` (`main` hands it to `projector::main`).
pub(crate) const AS_PROJECTOR: &str = "PROJECTOR_BENCH_AS_PROJECTOR";

/// The admin token every host process is started with.
const TOKEN: &str = "cluster-bench-admin-token";

/// The host processes' names, by index.
const IDS: [&str; 3] = ["host-1", "host-2", "host-3"];

/// Appends per second of the trickle that keeps the projection live during the kills.
const TRICKLE_PER_SECOND: u64 = 100;

pub(crate) async fn run(args: Args) -> anyhow::Result<Table> {
    // On a worker of the runtime, as a request to `projector serve` runs: the
    // in-process hosts' PostgreSQL calls block in `block_in_place`, which
    // hands the worker's other tasks to another thread only when called on a
    // worker. Called from the thread of `Runtime::block_on` instead, a deploy
    // holding the registry's lock across a round trip to PostgreSQL waited
    // forever on a worker that was itself waiting for that lock.
    tokio::spawn(measure(args)).await?
}

async fn measure(args: Args) -> anyhow::Result<Table> {
    let quick = args.quick;
    let events = if quick { 2_000 } else { args.events };
    let scale_events = if quick { 2_000 } else { args.scale_events };
    let kills = if quick { 2 } else { args.kills.max(1) };
    let query = if quick { Duration::from_millis(300) } else { Duration::from_secs(args.query_seconds) };
    let mut table = Table::default();

    // Its calls block (in `block_in_place`); a start takes a second or two.
    let postgres = PostgresServer::start();
    let version = postgres.psql("postgres", "SHOW server_version");

    progress(&format!("catch-up of {events} events and queries, SQLite and PostgreSQL {version}"));
    catch_up_and_query_rows(&postgres, &version, events, query, &mut table).await?;
    let launcher = Launcher { binary: args.projector.clone(), lease_ms: args.lease_ms };
    progress(&format!("{kills} kills of the host running user-directory"));
    takeover_rows(&postgres, &launcher, kills, &mut table).await?;
    progress(&format!("one, two and three hosts catching up with {scale_events} events"));
    scale_rows(&postgres, &launcher, scale_events, &mut table).await?;
    tokio::task::block_in_place(move || drop(postgres));
    Ok(table)
}

/// Figures 1 and 2: catch-up and queries, PostgreSQL beside SQLite, in-process hosts.
async fn catch_up_and_query_rows(
    postgres: &PostgresServer,
    version: &str,
    total: u64,
    query: Duration,
    table: &mut Table,
) -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let server = start_store(dir.path()).await?;
    let started = Instant::now();
    let last = preload_blocks(&server.client()?, total, true).await?;
    table.push(
        Row::new(
            "cluster: mixed history preload (blocks of 1000, 4 writers)",
            rate(total, started.elapsed()),
            "events/s",
        )
        .detail(format!("{total} events, 2/3 registrations and 1/3 stock movements, as in `bench projections`")),
    );

    let user_directory = [EXAMPLES[0]];
    let runs: [(&str, &[(&str, &str)]); 2] =
        [("user-directory alone", &user_directory), ("all three together, until the last is at the head", &EXAMPLES)];
    for (index, (what, projections)) in runs.into_iter().enumerate() {
        let mut rates = Vec::new();
        for backend in [Backend::Sqlite, Backend::Postgres] {
            let name = format!("catchup_{index}");
            let config = backend.config(postgres, &dir.path().join(format!("{name}-{}", backend.label())), &name)?;
            progress(&format!("catch-up: {what}, into {}", backend.label()));
            let (running, took) = catch_up_with(&server, config, projections, last).await?;
            let metrics = running.host.deployments().metrics().render(&[]);
            let module = metric_sum(&metrics, "projection_event_processing_seconds_sum");
            let commit = metric_sum(&metrics, "projector_batch_commit_seconds_sum");
            let events_per_second = rate(total, took);
            table.push(
                Row::new(format!("cluster catch-up: {what}, into {}", backend.label()), events_per_second, "events/s")
                    .detail(format!(
                        "{total} events in {:.1} s: module {module:.1} s, commit {commit:.1} s{}",
                        took.as_secs_f64(),
                        backend.context(version)
                    )),
            );
            rates.push(events_per_second);
            // The host that caught up with all three answers the queries.
            if projections.len() == EXAMPLES.len() {
                query_rows(running.host.local_addr(), backend, total, query, table).await?;
            }
            running.stop().await?;
        }
        table.push(
            Row::new(format!("cluster catch-up: {what}, PostgreSQL over SQLite"), rates[1] / rates[0] * 100.0, "%")
                .target(Target::AtLeast(50.0))
                .detail(format!("{:.0} against {:.0} events/s", rates[1], rates[0])),
        );
    }
    server.shutdown().await?;
    Ok(())
}

/// Where an in-process host keeps its read models.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Backend {
    Sqlite,
    Postgres,
}

impl Backend {
    fn label(self) -> &'static str {
        match self {
            Backend::Sqlite => "SQLite",
            Backend::Postgres => "PostgreSQL",
        }
    }

    /// A host's configuration: files under `dir`, or a new database `database`.
    fn config(self, postgres: &PostgresServer, dir: &Path, database: &str) -> anyhow::Result<projector::HostConfig> {
        let mut config = projector::HostConfig::new(dir.to_path_buf());
        if self == Backend::Postgres {
            let url = postgres.create_database(database);
            let listen = "127.0.0.1:0".parse()?;
            config.storage = projector::Storage::parse(&url, Some("bench-in-process".into()), listen, 3000)?;
        }
        Ok(config)
    }

    fn context(self, version: &str) -> String {
        match self {
            Backend::Sqlite => String::new(),
            Backend::Postgres => format!("; PostgreSQL {version} on loopback, fsync on"),
        }
    }
}

/// GET by key and a filtered list at 16 keep-alive clients (`bench projections`' load).
async fn query_rows(
    addr: std::net::SocketAddr,
    backend: Backend,
    keys: u64,
    duration: Duration,
    table: &mut Table,
) -> anyhow::Result<()> {
    let clients = 16;
    let kinds: [(&str, PathOf); 2] =
        [("GET by key", user_by_key), ("filtered list (username = ?, indexed)", users_named)];
    for (kind, path) in kinds {
        let (requests_per_second, latencies, busy) =
            http_load_answers(addr, keys, clients, duration, path, true).await?;
        let name = format!("cluster queries: {kind}, {clients} clients, {}", backend.label());
        table.push(Row::new(name.clone(), requests_per_second, "requests/s").detail(format!(
            "{} answered (200), p50 {}; {busy} refused 503 (no scan turn within the 3 s query limit)",
            latencies.len(),
            ms(percentile(&latencies, 0.5))
        )));
        table.push(Row::new(format!("{name}, p99"), millis(percentile(&latencies, 0.99)), "ms"));
    }
    Ok(())
}

/// A line on stderr saying what the bench does now.
fn progress(what: &str) {
    eprintln!("bench cluster: {what}");
}

fn rate(events: u64, took: Duration) -> f64 {
    events as f64 / took.as_secs_f64()
}

/// How host processes are started.
struct Launcher {
    /// The `projector` binary; `None`: this binary as `projector`.
    binary: Option<PathBuf>,
    lease_ms: u64,
}

impl Launcher {
    /// `projector serve` as host `id` on `data`, sharing `url`, following `eventstore`.
    fn command(&self, id: &str, data: &Path, eventstore: &str, url: &str) -> anyhow::Result<Command> {
        let mut command = match &self.binary {
            Some(binary) => Command::new(binary),
            None => {
                let mut command = Command::new(std::env::current_exe()?);
                command.env(AS_PROJECTOR, "1");
                command
            }
        };
        command
            .args(["serve", "--eventstore", eventstore, "--readmodels", url, "--host-id", id])
            .args(["--lease-ms", &self.lease_ms.to_string()])
            .arg("--data")
            .arg(data)
            .env("PROJECTOR_LISTEN", "127.0.0.1:0")
            .env("PROJECTOR_ADMIN_TOKEN", TOKEN)
            .env("PROJECTOR_LOG", "info")
            .env_remove("RUST_LOG");
        Ok(command)
    }
}

/// Host processes sharing one database, each restartable on its own data directory.
struct Cluster<'a> {
    launcher: &'a Launcher,
    eventstore: String,
    url: String,
    dirs: Vec<TempDir>,
    hosts: Vec<Option<(LoggedProcess, String)>>,
    http: reqwest::Client,
}

impl<'a> Cluster<'a> {
    /// `count` hosts, each started and listening.
    async fn start(launcher: &'a Launcher, count: usize, eventstore: String, url: String) -> anyhow::Result<Self> {
        let dirs = (0..count).map(|_| tempfile::tempdir()).collect::<Result<_, _>>()?;
        let mut cluster = Cluster {
            launcher,
            eventstore,
            url,
            dirs,
            hosts: (0..count).map(|_| None).collect(),
            http: reqwest::Client::new(),
        };
        for i in 0..count {
            cluster.spawn(i).await?;
        }
        Ok(cluster)
    }

    /// Starts host `i` and waits until its API listens.
    async fn spawn(&mut self, i: usize) -> anyhow::Result<()> {
        let command = self.launcher.command(IDS[i], self.dirs[i].path(), &self.eventstore, &self.url)?;
        let process = tokio::task::spawn_blocking(move || LoggedProcess::start(command, "projector API listening"))
            .await
            .with_context(|| format!("{} did not start", IDS[i]))?;
        let base = format!("http://{}", process.addr.replace("0.0.0.0", "127.0.0.1"));
        self.hosts[i] = Some((process, base));
        Ok(())
    }

    /// `kill -9` of host `i`.
    fn kill(&mut self, i: usize) -> anyhow::Result<()> {
        let (process, _) = self.hosts[i].take().context("the host runs")?;
        process.kill();
        Ok(())
    }

    fn base(&self, i: usize) -> anyhow::Result<&str> {
        Ok(&self.hosts[i].as_ref().context("the host runs")?.1)
    }

    /// The hosts running now, by index.
    fn running(&self) -> Vec<usize> {
        (0..self.hosts.len()).filter(|&i| self.hosts[i].is_some()).collect()
    }

    /// Deploys `module` as `name` through host `i`.
    async fn deploy(&self, i: usize, name: &str, module: &str) -> anyhow::Result<()> {
        let bytes = std::fs::read(module).with_context(|| format!("cannot read {module}"))?;
        let url = format!("{}/projections/{name}", self.base(i)?);
        let response = self.http.put(url).bearer_auth(TOKEN).body(bytes).send().await?;
        if !response.status().is_success() {
            bail!("deploying {name} answered {}: {}", response.status(), response.text().await?);
        }
        Ok(())
    }

    /// `GET path` on host `i`, as JSON; `None` for a 404.
    async fn get_known(&self, i: usize, path: &str) -> anyhow::Result<Option<Value>> {
        let response = self.http.get(format!("{}{path}", self.base(i)?)).send().await?;
        if response.status() == reqwest::StatusCode::NOT_FOUND {
            return Ok(None);
        }
        if !response.status().is_success() {
            bail!("GET {path} on {} answered {}", IDS[i], response.status());
        }
        Ok(Some(response.json().await?))
    }

    /// `GET path` on host `i`, as JSON.
    async fn get(&self, i: usize, path: &str) -> anyhow::Result<Value> {
        let response = self.http.get(format!("{}{path}", self.base(i)?)).send().await?;
        if !response.status().is_success() {
            bail!("GET {path} on {} answered {}", IDS[i], response.status());
        }
        Ok(response.json().await?)
    }
}

/// Single registrations appended at a steady rate, each remembered with the
/// moment its append was sent and its commit position.
struct Trickle {
    appended: Arc<parking_lot::Mutex<Vec<(Instant, u64)>>>,
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
}

impl Trickle {
    fn start(client: Client) -> Trickle {
        let appended = Arc::new(parking_lot::Mutex::new(Vec::new()));
        let log = appended.clone();
        let task = tokio::spawn(async move {
            let mut ticks = tokio::time::interval(Duration::from_secs(1) / TRICKLE_PER_SECOND as u32);
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            for n in 10_000_000u64.. {
                ticks.tick().await;
                let sent = Instant::now();
                let written = client
                    .append_to_stream(format!("user-trickle-{n}"), &AppendToStreamOptions::default(), registration(n)?)
                    .await?;
                log.lock().push((sent, written.position.commit));
            }
            Ok(())
        });
        Trickle { appended, task }
    }

    /// The position of the first event whose append was sent at or after `since`.
    fn first_after(&self, since: Instant) -> Option<u64> {
        let appended = self.appended.lock();
        let index = appended.partition_point(|(sent, _)| *sent < since);
        appended.get(index).map(|(_, position)| *position)
    }

    fn stop(self) -> anyhow::Result<()> {
        if !self.task.is_finished() {
            self.task.abort();
            return Ok(());
        }
        // It ended by itself: an append failed.
        match futures::FutureExt::now_or_never(self.task) {
            Some(Ok(result)) => result.context("the trickle of appends stopped"),
            Some(Err(e)) => Err(e).context("the trickle of appends stopped"),
            None => Ok(()),
        }
    }
}

/// What the running hosts show of `user-directory` from `since` on: the
/// moment one of them shows a host other than `not` running it, and the
/// moment one also shows a checkpoint past the first event appended at or
/// after `since`. Returns both (from `since`) and that host's index. Every
/// running host is asked (a host's view of a lane it runs itself may lack
/// its own name for a while; the others name it).
async fn progress_seen(
    cluster: &Cluster<'_>,
    trickle: &Trickle,
    since: Instant,
    not: Option<&str>,
) -> anyhow::Result<(Duration, Duration, usize)> {
    let mut changed = None;
    loop {
        if since.elapsed() > Duration::from_secs(120) {
            bail!("no host showed progress of user-directory within 120 s");
        }
        for i in cluster.running() {
            // A host just started (or told of the deploy) may not know it yet: 404.
            let Some(status) = cluster.get_known(i, "/projections/user-directory").await? else { continue };
            let seen = since.elapsed();
            let Some(host) = status["host"].as_str().filter(|host| Some(*host) != not) else { continue };
            let changed = *changed.get_or_insert(seen);
            let checkpoint = status["checkpoint"].as_u64();
            let first = trickle.first_after(since);
            if let (Some(checkpoint), Some(first)) = (checkpoint, first) {
                if checkpoint >= first {
                    let index = IDS.iter().position(|id| *id == host).context("a known host")?;
                    return Ok((changed, seen, index));
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Figure 3: takeover after `kill -9` of the host running `user-directory`.
async fn takeover_rows(
    postgres: &PostgresServer,
    launcher: &Launcher,
    kills: u64,
    table: &mut Table,
) -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let server = start_store(dir.path()).await?;
    let client = server.client()?;
    preload(&client, 1_000).await?;
    let url = postgres.create_database("takeover");
    let mut cluster = Cluster::start(launcher, IDS.len(), server.connection_string(), url).await?;
    cluster.deploy(0, "user-directory", projector_tests::modules::USER_DIRECTORY).await?;
    let trickle = Trickle::start(client);
    let mut random = Seeded::new(18);

    let mut unseen = Vec::new();
    let mut shown = Vec::new();
    let mut attempts = 0;
    while (unseen.len() as u64) < kills {
        attempts += 1;
        if attempts > kills * 3 {
            bail!("user-directory kept moving between hosts before a kill ({} kills measured)", unseen.len());
        }
        // Live on its owner, then a point anywhere in the renewal cycle.
        let owner = progress_seen(&cluster, &trickle, Instant::now(), None).await?.2;
        tokio::time::sleep(Duration::from_millis(random.below(launcher.lease_ms / 3 + 1))).await;
        let watcher = cluster.running().into_iter().find(|&i| i != owner).context("another host runs")?;
        let status = cluster.get_known(watcher, "/projections/user-directory").await?;
        if status.is_none_or(|status| status["host"].as_str() != Some(IDS[owner])) {
            continue; // It moved meanwhile; try again.
        }
        cluster.kill(owner)?;
        let killed = Instant::now();
        let (changed, progressed, successor) = progress_seen(&cluster, &trickle, killed, Some(IDS[owner])).await?;
        progress(&format!(
            "kill {}: {} killed, {} ran it {} ms later",
            unseen.len() + 1,
            IDS[owner],
            IDS[successor],
            progressed.as_millis()
        ));
        unseen.push(progressed);
        shown.push(changed);
        cluster.spawn(owner).await?;
    }
    trickle.stop()?;
    drop(cluster);
    server.shutdown().await?;

    unseen.sort();
    shown.sort();
    let context = format!(
        "{} kills of the host running user-directory; 3 host processes, lease {} ms, {TRICKLE_PER_SECOND} appends/s",
        unseen.len(),
        launcher.lease_ms
    );
    table.push(
        Row::new("cluster takeover after kill -9: no progress seen, median", millis(percentile(&unseen, 0.5)), "ms")
            .target(Target::AtMost(5000.0))
            .detail(context),
    );
    table.push(
        Row::new("cluster takeover after kill -9: no progress seen, max", millis(percentile(&unseen, 1.0)), "ms")
            .target(Target::AtMost(5000.0))
            .detail(format!("min {}", ms(unseen[0]))),
    );
    table.push(
        Row::new(
            "cluster takeover after kill -9: another host shows the new owner, median",
            millis(percentile(&shown, 0.5)),
            "ms",
        )
        .detail(format!("min {}, max {}", ms(shown[0]), ms(shown[shown.len() - 1]))),
    );
    Ok(())
}

/// Figure 4: one, two and three host processes catching up with three projections.
async fn scale_rows(
    postgres: &PostgresServer,
    launcher: &Launcher,
    total: u64,
    table: &mut Table,
) -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let server = start_store(dir.path()).await?;
    let last = preload_blocks(&server.client()?, total, true).await?;
    let mut rates = Vec::new();
    for count in 1..=IDS.len() {
        let url = postgres.create_database(&format!("scale_{count}"));
        let cluster = Cluster::start(launcher, count, server.connection_string(), url).await?;
        let started = Instant::now();
        for (name, module) in EXAMPLES {
            cluster.deploy(0, name, module).await?;
        }
        let runners = all_at_head(&cluster, total, last, started).await?;
        let took = started.elapsed();
        drop(cluster);
        let events_per_second = rate(total, took);
        rates.push(events_per_second);
        let ran: Vec<String> = runners.iter().map(|(name, host)| format!("{name} on {host}")).collect();
        table.push(
            Row::new(
                format!(
                    "cluster scale: {count} host{}, three projections, until the last is at the head",
                    if count == 1 { "" } else { "s" }
                ),
                events_per_second,
                "events/s",
            )
            .detail(format!("{total} events in {:.1} s; {}", took.as_secs_f64(), ran.join(", "))),
        );
    }
    server.shutdown().await?;
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    table.push(Row::new("cluster scale: three hosts over one", rates[2] / rates[0], "x").detail(format!(
        "{cores} cores shared by every host process, PostgreSQL and the event store: no gain expected here; \
             two hosts {:.2} x",
        rates[1] / rates[0]
    )));
    Ok(())
}

/// Waits until some host shows each example projection at `last` and
/// running (a host shows a lane run elsewhere as its owner published it);
/// which host ran each.
async fn all_at_head(
    cluster: &Cluster<'_>,
    events: u64,
    last: u64,
    started: Instant,
) -> anyhow::Result<BTreeMap<String, String>> {
    // Generous: the bench is not meant to judge, only to end.
    let give_up = Duration::from_secs(120 + events / 500);
    let mut done: BTreeMap<String, String> = BTreeMap::new();
    loop {
        for i in cluster.running() {
            let list = cluster.get(i, "/projections").await?;
            for status in list.as_array().context("a list")? {
                let Some(name) = status["name"].as_str() else { continue };
                let at_head = status["checkpoint"].as_u64().is_some_and(|c| c >= last);
                if at_head && status["state"] == "running" {
                    let host = status["host"].as_str().unwrap_or("");
                    let known = done.entry(name.to_owned()).or_default();
                    if known.is_empty() {
                        host.clone_into(known);
                    }
                }
            }
        }
        if done.len() == EXAMPLES.len() {
            // Name the host of any whose view left it out.
            for i in cluster.running() {
                for status in cluster.get(i, "/projections").await?.as_array().context("a list")? {
                    let (Some(name), Some(host)) = (status["name"].as_str(), status["host"].as_str()) else { continue };
                    if let Some(known) = done.get_mut(name).filter(|known| known.is_empty()) {
                        host.clone_into(known);
                    }
                }
            }
            return Ok(done);
        }
        if started.elapsed() > give_up {
            bail!("the projections did not catch up within {} s: {done:?}", give_up.as_secs());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
