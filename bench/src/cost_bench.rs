//! `bench cost`: what running projections costs in memory and disk.
//!
//! Memory: the host's resident set (this process, with the store in it) with
//! 1, 10 and 50 deployed projections, each caught up over the same small
//! history, and the increase per additional projection. Disk: bytes of the
//! event log per million events and of the `user-directory` read model built
//! from them.

use std::path::Path;
use std::time::Duration;

use anyhow::Context;
use projector::settings::DeployOptions;

use crate::projections_bench::preload;
use crate::report::{mib, Row, Table, Target};
use crate::stack::{start_store, RunningHost};

/// Flags of `bench cost`.
#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// Events in the history the disk figures are measured on.
    #[arg(long, default_value_t = 1_000_000)]
    events: u64,
    /// Tiny sizes: checks that every measurement produces a number.
    #[arg(long)]
    quick: bool,
}

pub(crate) async fn run(args: Args) -> anyhow::Result<Table> {
    let mut table = Table::default();
    memory_rows(args.quick, &mut table).await?;
    disk_rows(if args.quick { 20_000 } else { args.events }, &mut table).await?;
    Ok(table)
}

/// The resident set of this process, in bytes (Linux).
pub(crate) fn rss_bytes() -> anyhow::Result<u64> {
    let status = std::fs::read_to_string("/proc/self/status")?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).context("no VmRSS in /proc/self/status")?;
    let kib: u64 = line.split_whitespace().nth(1).context("VmRSS without a value")?.parse()?;
    Ok(kib * 1024)
}

async fn memory_rows(quick: bool, table: &mut Table) -> anyhow::Result<()> {
    let counts: &[usize] = if quick { &[1, 3] } else { &[1, 10, 50] };
    let history = 10_000;
    let dir = tempfile::tempdir()?;
    let server = start_store(dir.path()).await?;
    let client = server.client()?;
    let last = preload(&client, history).await?;
    let running = RunningHost::start(&server, projector::HostConfig::new(dir.path().join("host"))).await?;
    let host = &running.host;
    let bytes = std::fs::read(projector_tests::modules::USER_DIRECTORY)?;
    let before = rss_bytes()?;
    table.push(Row::new("cost: host + store resident set, no projection", mib(before), "MiB"));
    let mut deployed = 0;
    let mut previous: Option<(usize, u64)> = None;
    for &count in counts {
        while deployed < count {
            let name = format!("directory-{deployed}");
            host.deployments().deploy(&name, bytes.clone(), DeployOptions::default()).await?;
            let projection = host.deployments().get(&name).context("deployed")?;
            projection.wait_for(last).await.map_err(|s| anyhow::anyhow!("{name} stopped: {s:?}"))?;
            projection.wait_until_running().await.map_err(|s| anyhow::anyhow!("{name} stopped: {s:?}"))?;
            deployed += 1;
        }
        // Let the allocator settle after the catch-ups' transient buffers.
        tokio::time::sleep(Duration::from_secs(1)).await;
        let rss = rss_bytes()?;
        match previous {
            Some((n, earlier)) => {
                let per = rss.saturating_sub(earlier) / (count - n) as u64;
                table.push(
                    Row::new(format!("cost: resident set per additional projection, {n} -> {count}"), mib(per), "MiB")
                        .target(Target::AtMost(10.0))
                        .detail(format!("{:.1} MiB with {count} ({history} events each, caught up)", mib(rss))),
                );
            }
            None => table.push(
                Row::new(format!("cost: resident set with {count} projection"), mib(rss), "MiB").detail(format!(
                    "the first costs {:.1} MiB (engine, compiled code, threads)",
                    mib(rss.saturating_sub(before))
                )),
            ),
        }
        previous = Some((count, rss));
    }
    running.stop().await?;
    server.shutdown().await?;
    Ok(())
}

fn size_of(path: &Path) -> u64 {
    std::fs::metadata(path).map_or(0, |m| m.len())
}

/// Bytes of every file under `dir` whose name starts with `prefix`.
fn files_bytes(dir: &Path, prefix: &str) -> anyhow::Result<u64> {
    let mut total = 0;
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        if entry.file_name().to_string_lossy().starts_with(prefix) {
            total += entry.metadata()?.len();
        }
    }
    Ok(total)
}

async fn disk_rows(total: u64, table: &mut Table) -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let server = start_store(dir.path()).await?;
    let last = preload(&server.client()?, total).await?;
    let log = size_of(&dir.path().join("es/events.log"));
    table.push(
        Row::new("cost: event log on disk per event (registrations, ~300 B of JSON)", log as f64 / total as f64, "B")
            .detail(format!("{:.1} MiB for {total} events", mib(log))),
    );
    let running = RunningHost::start(&server, projector::HostConfig::new(dir.path().join("host"))).await?;
    let host = &running.host;
    let bytes = std::fs::read(projector_tests::modules::USER_DIRECTORY)?;
    host.deployments().deploy("user-directory", bytes, DeployOptions::default()).await?;
    let projection = host.deployments().get("user-directory").context("deployed")?;
    projection.wait_for(last).await.map_err(|s| anyhow::anyhow!("projection stopped: {s:?}"))?;
    projection.wait_until_running().await.map_err(|s| anyhow::anyhow!("projection stopped: {s:?}"))?;
    let file = projection.db().path().context("a SQLite read model has a file")?.to_path_buf();
    let parent = file.parent().context("read model file without a directory")?.to_path_buf();
    let stem = file.file_name().context("read model file without a name")?.to_string_lossy().into_owned();
    let on_disk = files_bytes(&parent, &stem)?;
    let main = size_of(&file);
    table.push(
        Row::new(
            "cost: user-directory read model on disk per event (users + emails, 2 indexes)",
            on_disk as f64 / total as f64,
            "B",
        )
        .detail(format!(
            "{:.1} MiB for {total} events while running: database {:.1} MiB, WAL and shared memory {:.1} MiB",
            mib(on_disk),
            mib(main),
            mib(on_disk - main)
        )),
    );
    drop(projection);
    running.stop().await?;
    server.shutdown().await?;
    Ok(())
}
