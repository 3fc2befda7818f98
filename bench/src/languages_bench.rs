//! `bench languages`: projections written in TypeScript and Python beside
//! their Rust twins, over the same registrations.
//!
//! For each module: compile time (without the compiled-function cache, with
//! it cold, and for a second module of the same toolchain with it warm), the
//! catch-up rate through a host to the head, committed, the host's resident
//! set added by the projection (settled, and at its peak during the
//! catch-up), the restart of a host holding a TypeScript projection (loaded
//! from the artifact cache), and a `continue` swap from the Rust
//! `user-directory` to the TypeScript one under a query loop.
//!
//! The TypeScript and Python modules are the examples' builds (`npm run
//! build` in `projections/user-directory-ts`, `python -m
//! projector_guest.build` in `projections/signup-stats-py`; `cargo xtask
//! test` makes both).

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use projector::runtime::{Limits, Runtime};
use projector::settings::{DeployOptions, Mode};

use crate::cost_bench::rss_bytes;
use crate::projections_bench::{metric_sum, preload};
use crate::report::{mib, Row, Table, Target};
use crate::stack::{start_store, RunningHost};

/// Flags of `bench languages`.
#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// Registrations in the history each projection catches up on.
    #[arg(long, default_value_t = 100_000)]
    events: u64,
    /// Tiny sizes: checks that every measurement produces a number.
    #[arg(long)]
    quick: bool,
    /// One part in this process (internal): `compile`, or `twin-N`.
    #[arg(long, hide = true)]
    part: Option<String>,
}

fn built(path: &str) -> anyhow::Result<PathBuf> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(path);
    anyhow::ensure!(
        path.is_file(),
        "{} is missing: build the examples first (cargo xtask test builds them)",
        path.display()
    );
    Ok(path)
}

/// The twins: (projection, language, module).
fn twins() -> anyhow::Result<Vec<(&'static str, &'static str, PathBuf)>> {
    Ok(vec![
        ("user-directory", "Rust", PathBuf::from(projector_tests::modules::USER_DIRECTORY)),
        ("user-directory", "TypeScript", built("projections/user-directory-ts/dist/user_directory_ts.wasm")?),
        ("signup-stats", "Rust", PathBuf::from(projector_tests::modules::SIGNUP_STATS)),
        ("signup-stats", "Python", built("projections/signup-stats-py/dist/signup_stats_py.wasm")?),
    ])
}

/// Runs each part in a child process of its own, so one part's freed memory
/// does not hide what the next one adds to the resident set.
pub(crate) async fn run(args: Args) -> anyhow::Result<Table> {
    let events = if args.quick { 2_000 } else { args.events };
    match args.part.as_deref() {
        Some("compile") => {
            let mut table = Table::default();
            compile_rows(&mut table)?;
            return Ok(table);
        }
        Some(twin) => {
            let index: usize = twin.strip_prefix("twin-").and_then(|n| n.parse().ok()).context("--part twin-N")?;
            return twin_rows(index, events).await;
        }
        None => {}
    }
    let mut table = Table::default();
    let mut parts = vec!["compile".to_owned()];
    parts.extend((0..twins()?.len()).map(|i| format!("twin-{i}")));
    for part in parts {
        let mut command = tokio::process::Command::new(std::env::current_exe()?);
        command
            .args(["languages", "--events", &events.to_string(), "--part", &part])
            .env(crate::all_bench::JSON_OUTPUT, "1")
            .stdin(std::process::Stdio::null())
            .stderr(std::process::Stdio::inherit());
        let output = command.output().await?;
        anyhow::ensure!(output.status.success(), "part {part} exited with {}", output.status);
        let stdout = String::from_utf8(output.stdout)?;
        let line = stdout.lines().last().context("printed no table")?;
        let part_table: Table = serde_json::from_str(line).with_context(|| format!("printed {line:?}"))?;
        table.extend(part_table);
    }
    for (name, language) in [("user-directory", "TypeScript"), ("signup-stats", "Python")] {
        let rate = |language: &str| {
            table
                .value(&format!("languages: {name} in {language}, catch-up of {events} registrations"))
                .unwrap_or(f64::NAN)
        };
        let (theirs, rust) = (rate(language), rate("Rust"));
        table.push(
            Row::new(format!("languages: {name} in {language} against Rust"), theirs / rust, "x")
                .target(Target::AtLeast(0.25))
                .detail(format!("{theirs:.0} against {rust:.0} events/s")),
        );
    }
    Ok(table)
}

/// One twin's figures: its catch-up and memory; for the TypeScript one also
/// a restart and a swap.
async fn twin_rows(index: usize, events: u64) -> anyhow::Result<Table> {
    let mut table = Table::default();
    let (name, language, module) = twins()?.into_iter().nth(index).context("no such twin")?;
    let dir = tempfile::tempdir()?;
    let server = start_store(dir.path()).await?;
    let last = preload(&server.client()?, events).await?;
    let host_dir = dir.path().join("host");
    let figures = catch_up(&server, &host_dir, name, &module, last).await?;
    let rate = events as f64 / figures.catch_up.as_secs_f64();
    let mut rate_row =
        Row::new(format!("languages: {name} in {language}, catch-up of {events} registrations"), rate, "events/s")
            .detail(format!(
                "{:.1} s: in the module {:.1} s, committing {:.1} s; deploy (compile) {:.2} s; module {:.1} MiB",
                figures.catch_up.as_secs_f64(),
                figures.module_seconds,
                figures.commit_seconds,
                figures.deploy.as_secs_f64(),
                figures.module_mib
            ));
    let mut memory_row = Row::new(
        format!("languages: resident set added by {name} in {language}, settled"),
        mib(figures.settled),
        "MiB",
    )
    .detail(format!("peak during its deploy and catch-up +{:.1} MiB", mib(figures.peak)));
    if language == "TypeScript" {
        rate_row = rate_row.target(Target::AtLeast(30_000.0));
        memory_row = memory_row.target(Target::AtMost(100.0));
    }
    table.push(rate_row);
    table.push(memory_row);
    if language == "TypeScript" {
        let restart = restart(&server, &host_dir, last).await?;
        table.push(
            Row::new(
                "languages: restart of a host with the TypeScript projection, until it runs",
                restart.as_secs_f64() * 1000.0,
                "ms",
            )
            .target(Target::AtMost(1000.0))
            .detail("its module loaded from the artifact cache"),
        );
        let earlier = built("tests/guests-ts/dist/throwing.wasm")?;
        let rust = Path::new(projector_tests::modules::USER_DIRECTORY);
        let (swap, queries) =
            swap_from_rust(&server, &dir.path().join("swap"), (name, rust, "users"), &module, Some(&earlier), last)
                .await?;
        table.push(
            Row::new(
                "languages: continue swap from Rust to the TypeScript user-directory",
                swap.as_secs_f64() * 1000.0,
                "ms",
            )
            .target(Target::AtMost(10_000.0))
            .detail(format!(
                "its functions cached by another TypeScript module deployed before; {queries} queries meanwhile, none failed"
            )),
        );
    }
    if language == "Python" {
        let rust = Path::new(projector_tests::modules::SIGNUP_STATS);
        let (swap, queries) =
            swap_from_rust(&server, &dir.path().join("swap"), (name, rust, "domains"), &module, None, last).await?;
        table.push(
            Row::new(
                "languages: continue swap from Rust to the Python signup-stats",
                swap.as_secs_f64() * 1000.0,
                "ms",
            )
            .detail(format!(
                "compiled from scratch (no Python module before); {queries} queries meanwhile, none failed"
            )),
        );
    }
    server.shutdown().await?;
    Ok(table)
}

/// Compile times of the TypeScript and Python modules through the runtime:
/// without the function cache, with it cold, and (TypeScript) a second
/// module of the same toolchain with it warm.
fn compile_rows(table: &mut Table) -> anyhow::Result<()> {
    let ts = std::fs::read(built("projections/user-directory-ts/dist/user_directory_ts.wasm")?)?;
    let ts_other = std::fs::read(built("tests/guests-ts/dist/throwing.wasm")?)?;
    let python = std::fs::read(built("projections/signup-stats-py/dist/signup_stats_py.wasm")?)?;
    let timed = |runtime: &Runtime, bytes: &[u8]| -> anyhow::Result<Duration> {
        let started = Instant::now();
        runtime.compile(bytes).map_err(|e| anyhow::anyhow!("{e}"))?;
        Ok(started.elapsed())
    };
    for (language, bytes) in [("TypeScript", &ts), ("Python", &python)] {
        let plain = timed(&Runtime::new(Limits::default())?, bytes)?;
        table.push(
            Row::new(format!("languages: compile a {language} module, no function cache"), plain.as_secs_f64(), "s")
                .detail(format!("{:.1} MiB", mib(bytes.len() as u64))),
        );
        let cache = tempfile::tempdir()?;
        let runtime = Runtime::with_function_cache(Limits::default(), &cache.path().join("functions.sqlite"))?;
        let cold = timed(&runtime, bytes)?;
        table.push(Row::new(
            format!("languages: compile a {language} module, function cache cold"),
            cold.as_secs_f64(),
            "s",
        ));
        if language == "TypeScript" {
            let warm = timed(&runtime, &ts_other)?;
            table.push(
                Row::new("languages: compile another TypeScript module, function cache warm", warm.as_secs_f64(), "s")
                    .detail("same toolchain, other projection"),
            );
        }
    }
    Ok(())
}

struct CatchUp {
    /// Seconds in the module and in commits, from the host's metrics.
    module_seconds: f64,
    commit_seconds: f64,
    deploy: Duration,
    catch_up: Duration,
    module_mib: f64,
    settled: u64,
    peak: u64,
}

/// Deploys `module` as `name` into a fresh host and waits until it has reached `last`.
async fn catch_up(
    server: &eventstore_embedded::EmbeddedServer,
    dir: &Path,
    name: &str,
    module: &Path,
    last: u64,
) -> anyhow::Result<CatchUp> {
    let bytes = std::fs::read(module).with_context(|| format!("cannot read {}", module.display()))?;
    let module_mib = mib(bytes.len() as u64);
    let running = RunningHost::start(server, projector::HostConfig::new(dir.to_path_buf())).await?;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let before = rss_bytes()?;
    reset_peak();
    let started = Instant::now();
    running.host.deployments().deploy(name, bytes, DeployOptions::default()).await?;
    let deploy = started.elapsed();
    let projection = running.host.deployments().get(name).context("deployed")?;
    projection.wait_for(last).await.map_err(|s| anyhow::anyhow!("{name} stopped: {s:?}"))?;
    projection.wait_until_running().await.map_err(|s| anyhow::anyhow!("{name} stopped: {s:?}"))?;
    let catch_up = started.elapsed() - deploy;
    let metrics = running.host.deployments().metrics().render(&[]);
    let module_seconds = metric_sum(&metrics, "projection_event_processing_seconds_sum");
    let commit_seconds = metric_sum(&metrics, "projector_batch_commit_seconds_sum");
    let peak = peak_bytes()?.saturating_sub(before);
    // Let the allocator settle after the compile's and the catch-up's
    // transient buffers: the host hands free heap back every 10 s.
    tokio::time::sleep(Duration::from_secs(11)).await;
    let settled = rss_bytes()?.saturating_sub(before);
    running.stop().await?;
    Ok(CatchUp { module_seconds, commit_seconds, deploy, catch_up, module_mib, settled, peak })
}

/// Starts a host again on `dir` and waits until its projection runs.
async fn restart(server: &eventstore_embedded::EmbeddedServer, dir: &Path, last: u64) -> anyhow::Result<Duration> {
    let started = Instant::now();
    let running = RunningHost::start(server, projector::HostConfig::new(dir.to_path_buf())).await?;
    let projection = running.host.deployments().get("user-directory").context("restored")?;
    projection.wait_for(last).await.map_err(|s| anyhow::anyhow!("stopped: {s:?}"))?;
    projection.wait_until_running().await.map_err(|s| anyhow::anyhow!("stopped: {s:?}"))?;
    let took = started.elapsed();
    running.stop().await?;
    Ok(took)
}

/// A host that once ran the module `earlier` (so its compiled-function cache
/// holds that toolchain's runtime, as a host running such projections does)
/// and now runs the Rust twin `name` at `rust`, caught up; the time a
/// `continue` swap to `module` takes, and the queries on `collection`
/// answered meanwhile (every one must succeed).
async fn swap_from_rust(
    server: &eventstore_embedded::EmbeddedServer,
    dir: &Path,
    (name, rust, collection): (&str, &Path, &str),
    module: &Path,
    earlier: Option<&Path>,
    last: u64,
) -> anyhow::Result<(Duration, usize)> {
    let running = RunningHost::start(server, projector::HostConfig::new(dir.to_path_buf())).await?;
    if let Some(earlier) = earlier {
        running.host.deployments().deploy("earlier", std::fs::read(earlier)?, DeployOptions::default()).await?;
        running.host.deployments().delete("earlier").await?;
    }
    running.host.deployments().deploy(name, std::fs::read(rust)?, DeployOptions::default()).await?;
    let projection = running.host.deployments().get(name).context("deployed")?;
    projection.wait_for(last).await.map_err(|s| anyhow::anyhow!("stopped: {s:?}"))?;
    let url = format!("http://{}/projections/{name}/collections/{collection}?limit=10", running.host.local_addr());
    let stop = Arc::new(AtomicBool::new(false));
    let querying = stop.clone();
    let queries = tokio::spawn(async move {
        let http = reqwest::Client::new();
        let mut answered = 0;
        while !querying.load(Ordering::Relaxed) {
            let response = http.get(&url).send().await?;
            anyhow::ensure!(response.status().is_success(), "a query failed during the swap: {}", response.status());
            answered += 1;
        }
        anyhow::Ok(answered)
    });
    let bytes = std::fs::read(module)?;
    let started = Instant::now();
    let options = DeployOptions { mode: Some(Mode::Continue), ..DeployOptions::default() };
    running.host.deployments().deploy(name, bytes, options).await?;
    let took = started.elapsed();
    stop.store(true, Ordering::Relaxed);
    let answered = queries.await??;
    running.stop().await?;
    Ok((took, answered))
}

/// Resets the kernel's peak resident set of this process (VmHWM).
fn reset_peak() {
    let _ = std::fs::write("/proc/self/clear_refs", "5");
}

/// The peak resident set since the last reset, in bytes (Linux).
fn peak_bytes() -> anyhow::Result<u64> {
    let status = std::fs::read_to_string("/proc/self/status")?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:")).context("no VmHWM in /proc/self/status")?;
    let kib: u64 = line.split_whitespace().nth(1).context("VmHWM without a value")?.parse()?;
    Ok(kib * 1024)
}
