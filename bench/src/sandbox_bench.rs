//! A healthy projection beside hostile ones: `inventory` catches up over a
//! mixed history alone, then again on a fresh host where two modules that
//! misbehave on every event run beside it (`looping` never returns and is
//! stopped by a 100 ms batch deadline; `hungry` allocates until its memory
//! limit traps it), both under `on_error=skip`, so they go on burning their
//! limits for the whole catch-up. The figure is the healthy projection's
//! rate beside them as a share of its rate alone.
//!
//! The sandbox bounds what each batch may take (time, memory, writes), not
//! a module's share of the CPU: on two cores, two modules that always run
//! to their limits take CPU the healthy one would otherwise have.

use std::time::{Duration, Instant};

use anyhow::Context;
use projector::settings::{DeployOptions, OnError, ProjectionLimits};
use projector::HostConfig;
use projector_tests::modules;

use crate::projections_bench::preload_blocks;
use crate::report::{Row, Table};
use crate::stack::{start_store, RunningHost};

/// Flags of `bench sandbox`.
#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// Events in the history.
    #[arg(long, default_value_t = 300_000)]
    events: u64,
    /// Tiny sizes: checks that every measurement produces a number.
    #[arg(long)]
    quick: bool,
}

/// `inventory`'s catch-up to `last` on a fresh host with `beside` deployed
/// first; the time it took.
async fn catch_up(
    server: &eventstore_embedded::EmbeddedServer,
    dir: &std::path::Path,
    beside: &[(&str, &str, ProjectionLimits)],
    last: u64,
) -> anyhow::Result<Duration> {
    let running = RunningHost::start(server, HostConfig::new(dir.to_path_buf())).await?;
    let projections = running.host.deployments();
    for (name, module, limits) in beside {
        let options = DeployOptions { on_error: Some(OnError::Skip), limits: Some(*limits), ..Default::default() };
        projections.deploy(name, std::fs::read(module)?, options).await?;
    }
    let started = Instant::now();
    projections.deploy("inventory", std::fs::read(modules::INVENTORY)?, DeployOptions::default()).await?;
    let inventory = projections.get("inventory").context("deployed")?;
    inventory.wait_for(last).await.map_err(|s| anyhow::anyhow!("inventory stopped: {s:?}"))?;
    let took = started.elapsed();
    running.stop().await?;
    Ok(took)
}

pub(crate) async fn run(args: Args) -> anyhow::Result<Table> {
    let total = if args.quick { 5_000 } else { args.events };
    let dir = tempfile::tempdir()?;
    let server = start_store(dir.path()).await?;
    let last = preload_blocks(&server.client()?, total, true).await?;

    let alone = catch_up(&server, &dir.path().join("alone"), &[], last).await?;
    let hostile = [
        ("looping", modules::LOOPING, ProjectionLimits { memory_mb: None, batch_timeout_ms: Some(100) }),
        ("hungry", modules::HUNGRY, ProjectionLimits::default()),
    ];
    let beside = catch_up(&server, &dir.path().join("beside"), &hostile, last).await?;
    server.shutdown().await?;

    let rate = |took: Duration| total as f64 / took.as_secs_f64();
    let mut table = Table::default();
    table.push(
        Row::new(format!("sandbox: inventory alone, {total} events to the head"), rate(alone), "events/s")
            .detail(format!("{:.1} s", alone.as_secs_f64())),
    );
    table.push(Row::new("sandbox: inventory beside a looping and a hungry module", rate(beside), "events/s").detail(
        format!("{:.1} s; both ran into their limits (100 ms, 64 MiB) on every event meanwhile", beside.as_secs_f64()),
    ));
    table.push(Row::new(
        "sandbox: inventory's rate beside them, share of alone",
        rate(beside) / rate(alone) * 100.0,
        "%",
    ));
    Ok(table)
}
