//! Command-line flags, parsed once into typed settings. Every flag has a
//! matching `PROJECTOR_*` environment variable and a default.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

/// Projector: a WebAssembly-hosted projection runtime for event sourcing.
#[derive(Debug, Parser)]
#[command(name = "projector", version, about)]
pub struct Cli {
    /// Log filter, in `tracing` syntax (RUST_LOG overrides it).
    #[arg(long, env = "PROJECTOR_LOG", default_value = "info", global = true)]
    pub log: String,

    /// What to run.
    #[command(subcommand)]
    pub command: Command,
}

/// The things `projector` can run.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the embedded EventStoreDB-compatible event store on its own.
    Eventstore(EventstoreArgs),
}

/// Flags of `projector eventstore`.
#[derive(Debug, Args)]
pub struct EventstoreArgs {
    /// Address to serve the EventStoreDB gRPC protocol on.
    #[arg(long, env = "PROJECTOR_EVENTSTORE_LISTEN", default_value = "127.0.0.1:2113")]
    pub listen: SocketAddr,

    /// Directory holding the event log.
    #[arg(long, env = "PROJECTOR_EVENTSTORE_DATA", default_value = "data/eventstore")]
    pub data: PathBuf,

    /// Largest accepted append in bytes (event data, metadata and type).
    #[arg(long, env = "PROJECTOR_MAX_APPEND_SIZE", default_value_t = eventstore_embedded::DEFAULT_MAX_APPEND_SIZE)]
    pub max_append_size: usize,
}
