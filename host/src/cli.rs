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
    /// Run the host: projections over the event store, queried over HTTP.
    Serve(ServeArgs),
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

/// Flags of `projector serve`.
#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Address of the HTTP API.
    #[arg(long, env = "PROJECTOR_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,

    /// Directory for read models (and the embedded event store's log).
    #[arg(long, env = "PROJECTOR_DATA", default_value = "data")]
    pub data: PathBuf,

    /// Connection string of an EventStoreDB/KurrentDB to follow, e.g.
    /// `esdb://localhost:2113?tls=false`. Without it the embedded event store runs in-process.
    #[arg(long, env = "PROJECTOR_EVENTSTORE")]
    pub eventstore: Option<String>,

    /// Where the embedded event store serves gRPC to other clients (when `--eventstore` is not given).
    #[arg(long, env = "PROJECTOR_EVENTSTORE_LISTEN", default_value = "127.0.0.1:2113")]
    pub eventstore_listen: SocketAddr,

    /// Bearer token for deploys and lifecycle changes. Without it, a token is
    /// generated at the first start and kept in `DATA/admin-token` (owner-only).
    #[arg(long, env = "PROJECTOR_ADMIN_TOKEN", hide_env_values = true)]
    pub admin_token: Option<String>,

    /// Bearer token queries and status reads require (open when not given).
    #[arg(long, env = "PROJECTOR_QUERY_TOKEN", hide_env_values = true)]
    pub query_token: Option<String>,

    /// Deploy a module at startup: `NAME=PATH` (repeatable). An existing
    /// projection of that name gets the module by a `continue` swap (a no-op
    /// for the same bytes).
    #[arg(long = "deploy", value_name = "NAME=PATH")]
    pub deploy: Vec<String>,
}
