//! `bench peer`: our `user-directory` catch-up against the design the source
//! articles build, the official Node.js client applying the same logic in
//! JavaScript to an in-memory Map, on the same events in the same store.
//!
//! The store runs in this process; the peer runs as `node bench/node/peer.mjs`,
//! whose dependencies this command installs with `npm ci` when they are
//! missing. The peer keeps nothing durable; we commit every batch to SQLite.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Instant;

use anyhow::{bail, Context};
use projector::settings::DeployOptions;

use crate::projections_bench::{plain_subscription_rate, preload};
use crate::report::{Row, Table, Target};
use crate::stack::{start_store, RunningHost};

/// Flags of `bench peer`.
#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// Registrations in the history both read.
    #[arg(long, default_value_t = 1_000_000)]
    events: u64,
    /// Tiny sizes: checks that every measurement produces a number.
    #[arg(long)]
    quick: bool,
}

#[derive(Debug, serde::Deserialize)]
struct PeerRun {
    events: u64,
    seconds: f64,
    users: u64,
}

pub(crate) async fn run(args: Args) -> anyhow::Result<Table> {
    let total = if args.quick { 20_000 } else { args.events };
    let node_dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("node");
    install_peer(&node_dir).await?;

    let dir = tempfile::tempdir()?;
    let server = start_store(dir.path()).await?;
    let client = server.client()?;
    let last = preload(&client, total).await?;
    let mut table = Table::default();
    let ceiling = plain_subscription_rate(&client, total).await?;
    table.push(Row::new("peer: ceiling, the same subscription doing nothing (Rust client)", ceiling, "events/s"));

    let connection = format!("esdb://{}?tls=false", server.local_addr());
    let peer = run_peer(&node_dir, &connection, total).await?;
    if peer.events != total || peer.users != total {
        bail!("the peer applied {} events into {} users, expected {total}", peer.events, peer.users);
    }
    let peer_rate = total as f64 / peer.seconds;
    table.push(
        Row::new("peer: Node.js, @eventstore/db-client 6.2.1 -> in-memory Map", peer_rate, "events/s")
            .detail(format!("{total} events in {:.1} s; keeps nothing durable", peer.seconds)),
    );

    let running = RunningHost::start(&server, projector::HostConfig::new(dir.path().join("host"))).await?;
    let host = &running.host;
    let bytes = std::fs::read(projector_tests::modules::USER_DIRECTORY)?;
    let started = Instant::now();
    host.deployments().deploy("user-directory", bytes, DeployOptions::default()).await?;
    let projection = host.deployments().get("user-directory").context("deployed")?;
    projection.wait_for(last).await.map_err(|s| anyhow::anyhow!("projection stopped: {s:?}"))?;
    // Caught up means its declared indexes are built too.
    projection.wait_until_running().await.map_err(|s| anyhow::anyhow!("projection stopped: {s:?}"))?;
    let ours = total as f64 / started.elapsed().as_secs_f64();
    table.push(Row::new("peer: Projector, user-directory in Wasm -> SQLite, committed", ours, "events/s"));
    table.push(
        Row::new("peer: Projector's events/s over the Node.js peer's", ours / peer_rate, "x")
            .target(Target::AtLeast(3.0)),
    );
    running.stop().await?;
    server.shutdown().await?;
    Ok(table)
}

/// `npm ci` in the peer's directory unless its client is installed already.
async fn install_peer(node_dir: &Path) -> anyhow::Result<()> {
    if node_dir.join("node_modules/@eventstore/db-client").is_dir() {
        return Ok(());
    }
    let status = tokio::process::Command::new("npm")
        .current_dir(node_dir)
        .args(["ci", "--no-audit", "--no-fund", "--loglevel=error"])
        .status()
        .await
        .context("cannot run npm (the Node.js peer needs Node.js and npm)")?;
    if !status.success() {
        bail!("npm ci in {} failed: {status}", node_dir.display());
    }
    Ok(())
}

async fn run_peer(node_dir: &Path, connection: &str, total: u64) -> anyhow::Result<PeerRun> {
    let script: PathBuf = node_dir.join("peer.mjs");
    let output = tokio::process::Command::new("node")
        .arg(&script)
        .arg(connection)
        .arg(total.to_string())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .output()
        .await
        .context("cannot run node")?;
    if !output.status.success() {
        bail!("{} failed: {}", script.display(), output.status);
    }
    let text = String::from_utf8(output.stdout)?;
    let line = text.lines().last().context("the peer printed nothing")?;
    serde_json::from_str(line).with_context(|| format!("the peer printed {line:?}"))
}
