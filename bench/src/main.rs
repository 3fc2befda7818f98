//! Benchmarks that print figures beside their targets.
//!
//! `cargo run --release -p bench -- all` runs every benchmark below three
//! times, interleaved, and writes the median, min and max of every figure,
//! with the machine's facts, into `BENCHMARKS.md`; `all --quick` is the
//! smoke test the suite runs (tiny sizes; it checks that every figure is a
//! number, never a time).
//!
//! `cargo run --release -p bench -- eventstore` measures the embedded event
//! store through the official Rust client over loopback. The server runs in a
//! child process (this same binary, hidden `serve` subcommand) so that its
//! memory and startup time are measured alone.
//!
//! `cargo run --release -p bench -- projections` measures the projection
//! runtime: the Wasm boundary, Wasm against native, catch-up of a mixed
//! history by the three examples alone and together, live lag, queries over
//! HTTP at 1, 16 and 64 clients, lookups by key while hostile listings run,
//! hot swaps.
//!
//! `cargo run --release -p bench -- peer` compares the `user-directory`
//! catch-up with the Node.js design of the source articles on the same events.
//!
//! `cargo run --release -p bench -- cost` measures memory per deployed
//! projection and bytes on disk per event.
//!
//! `cargo run --release -p bench -- users` measures registrations through
//! `POST /users` beside the cost of hashing the password alone.
//!
//! `cargo run --release -p bench -- sandbox` measures a healthy projection's
//! catch-up beside modules that always run into their limits.
//!
//! `cargo run --release -p bench -- cluster` measures several hosts over one
//! PostgreSQL: catch-up and queries with PostgreSQL read models beside
//! SQLite, the takeover after `kill -9` of the host running a projection,
//! and one, two and three host processes sharing the work.
//!
//! `cargo run --release -p bench -- languages` measures the TypeScript and
//! Python examples beside their Rust twins (compile, catch-up, memory,
//! restart, a swap); the examples must be built first (`cargo xtask test`).
//!
//! Figures, not assertions: the test suite never checks timings.

mod all_bench;
mod cluster_bench;
mod cost_bench;
mod eventstore_bench;
mod eventstore_persistent_bench;
mod eventstore_security_bench;
mod hostile_bench;
mod languages_bench;
mod peer_bench;
mod projections_bench;
mod report;
mod sandbox_bench;
mod stack;
mod users_bench;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Projector benchmarks.
#[derive(Debug, Parser)]
#[command(name = "bench")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Every benchmark below, several runs, medians written into BENCHMARKS.md.
    All(all_bench::Args),
    /// Append, read, subscription, latency, memory and startup figures of the embedded event store.
    Eventstore(eventstore_bench::Args),
    /// Wasm boundary, Wasm vs native, catch-up, live lag and HTTP read figures of the projection runtime.
    Projections(projections_bench::Args),
    /// Resident memory with 1, 10 and 50 projections; bytes on disk per event.
    Cost(cost_bench::Args),
    /// Our user-directory catch-up beside the Node.js peer (official client, in-memory Map).
    Peer(peer_bench::Args),
    /// Registrations per second and latency at 16 concurrent clients, beside the hashing cost alone.
    Users(users_bench::Args),
    /// A healthy projection's catch-up beside modules that always run into their limits.
    Sandbox(sandbox_bench::Args),
    /// TypeScript and Python projections beside their Rust twins: compile, catch-up, memory, restart, swap.
    Languages(languages_bench::Args),
    /// Several hosts over one PostgreSQL: catch-up and queries beside SQLite, takeover after kill -9, 1/2/3 hosts.
    Cluster(cluster_bench::Args),
    /// Runs an event store for the benchmark (internal).
    #[command(hide = true)]
    Serve {
        #[arg(long)]
        listen: SocketAddr,
        #[arg(long)]
        data: PathBuf,
        /// Leave accepted sockets at the OS defaults (the latency baseline).
        #[arg(long)]
        plain_tcp: bool,
        /// TLS with a generated certificate and the admin password in DATA.
        #[arg(long)]
        secure: bool,
    },
}

fn main() -> ExitCode {
    // A host process of `bench cluster`: this binary is `projector` (the
    // `projector` binary's `main` is this same call).
    if std::env::var_os(cluster_bench::AS_PROJECTOR).is_some() {
        return projector::main();
    }
    let cli = Cli::parse();
    // The host's process settings, so the figures are those of `projector serve`.
    projector::tune_process();
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    // `bench all` runs each benchmark as a child process (so none inherits
    // another's heap) and reads its table as JSON.
    let print = |table: anyhow::Result<report::Table>| {
        let table = table?;
        if std::env::var_os(all_bench::JSON_OUTPUT).is_some() {
            table.print_json()?;
        } else {
            table.print();
        }
        Ok(())
    };
    let result = match cli.command {
        Command::All(args) => runtime.block_on(all_bench::run(args)),
        Command::Eventstore(args) => print(runtime.block_on(eventstore_bench::run(args))),
        Command::Projections(args) => print(runtime.block_on(projections_bench::run(args))),
        Command::Users(args) => print(runtime.block_on(users_bench::run(args))),
        Command::Sandbox(args) => print(runtime.block_on(sandbox_bench::run(args))),
        Command::Peer(args) => print(runtime.block_on(peer_bench::run(args))),
        Command::Cost(args) => print(runtime.block_on(cost_bench::run(args))),
        Command::Languages(args) => print(runtime.block_on(languages_bench::run(args))),
        Command::Cluster(args) => print(runtime.block_on(cluster_bench::run(args))),
        Command::Serve { listen, data, plain_tcp, secure } => {
            runtime.block_on(eventstore_bench::serve(listen, data, plain_tcp, secure))
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
