//! Command-line flags, parsed once into typed settings. Every flag has a
//! matching `PROJECTOR_*` environment variable and a default.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use crate::users::{Argon2Settings, RegistrationConfig};

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
    Serve(Box<ServeArgs>),
    /// Run the embedded EventStoreDB-compatible event store on its own.
    Eventstore(EventstoreArgs),
    /// Create a projection project of your own (Rust, TypeScript or Python), ready to test, build and deploy.
    New(NewArgs),
    /// Commands that talk to a running host.
    #[command(flatten)]
    Client(ClientCommand),
}

/// Where the host is and how to authenticate, for the client commands.
#[derive(Debug, Args)]
pub struct Connection {
    /// The host's API.
    #[arg(long, env = "PROJECTOR_URL", default_value = "http://127.0.0.1:8080")]
    pub url: String,

    /// Admin token (read from `--token-file`, else `DATA/admin-token`, when not given).
    #[arg(long, env = "PROJECTOR_ADMIN_TOKEN", hide_env_values = true)]
    pub token: Option<String>,

    /// A file holding the admin token (keeps it out of `ps` and shell history).
    #[arg(long, env = "PROJECTOR_ADMIN_TOKEN_FILE", conflicts_with = "token")]
    pub token_file: Option<PathBuf>,

    /// A PEM CA certificate to trust for an `https://` URL besides the
    /// system's roots (e.g. for a self-signed host certificate).
    #[arg(long, env = "PROJECTOR_CA_CERT")]
    pub ca_cert: Option<PathBuf>,

    /// The host's data directory, to find its admin token.
    #[arg(long, env = "PROJECTOR_DATA", default_value = "data")]
    pub data: PathBuf,

    /// Print the API's JSON answer instead of text (for scripts).
    #[arg(long)]
    pub json: bool,
}

/// A command about one projection.
#[derive(Debug, Args)]
pub struct NameArgs {
    /// The projection.
    pub name: String,
    #[command(flatten)]
    #[allow(missing_docs)]
    pub connection: Connection,
}

/// Client commands.
#[derive(Debug, Subcommand)]
pub enum ClientCommand {
    /// Deploy a module: a new projection, a `continue` swap or a blue/green rebuild.
    Deploy(DeployArgs),
    /// List the projections.
    List(Connection),
    /// Show one projection's status.
    Status(NameArgs),
    /// Stop following events (queries keep working).
    Stop(NameArgs),
    /// Start a stopped projection from its checkpoint.
    Start(NameArgs),
    /// Rebuild the read model from scratch under the same version.
    Reset(NameArgs),
    /// Restart a faulted projection from its checkpoint.
    Retry(NameArgs),
    /// Return to the previous version (cancels a rebuild in progress).
    Rollback(NameArgs),
    /// Delete a projection, its read models and its module.
    Rm(NameArgs),
    /// Read documents from a read model.
    Query(QueryArgs),
    /// Run a module over recent events in the sandbox: what it would write and log (nothing committed).
    Try(TryArgs),
}

/// Flags of `projector try`.
#[derive(Debug, Args)]
pub struct TryArgs {
    /// A projection: its read model is read (written nowhere) and its module tried unless FILE is given.
    pub name: String,
    /// The module to try (`.wasm`).
    pub file: Option<PathBuf>,
    /// Run over the last N events of `$all` (system events aside).
    #[arg(long, default_value_t = 100, conflicts_with = "events")]
    pub last: usize,
    /// Run over the events in this JSON file: `[{"stream", "type", "data", "metadata"}]`.
    #[arg(long)]
    pub events: Option<PathBuf>,
    /// Read from an empty read model instead of the projection's.
    #[arg(long)]
    pub empty: bool,
    #[command(flatten)]
    #[allow(missing_docs)]
    pub connection: Connection,
}

/// Flags of `projector deploy`.
#[derive(Debug, Args)]
pub struct DeployArgs {
    /// The projection's name (`[a-z0-9][a-z0-9-]{0,62}`).
    pub name: String,
    /// The module (`.wasm`).
    pub file: PathBuf,
    /// How to replace a running version: `continue` (default) or `rebuild`.
    #[arg(long)]
    pub mode: Option<String>,
    /// What to do with an event the module fails on: `fault` (default) or `skip`.
    #[arg(long)]
    pub on_error: Option<String>,
    /// Memory limit of the module, in MiB.
    #[arg(long)]
    pub memory_mb: Option<u64>,
    /// Longest a batch may run, in milliseconds.
    #[arg(long)]
    pub batch_timeout_ms: Option<u64>,
    #[command(flatten)]
    #[allow(missing_docs)]
    pub connection: Connection,
}

/// Flags of `projector query`.
#[derive(Debug, Args)]
pub struct QueryArgs {
    /// The projection.
    pub name: String,
    /// The collection.
    pub collection: String,
    /// One document's key (a listing without it).
    pub key: Option<String>,
    /// `path<op>value` with `=`, `!=`, `<`, `<=`, `>`, `>=` (repeatable).
    #[arg(long)]
    pub filter: Vec<String>,
    /// `field` or `-field` (descending); `--order-by -total` works as written.
    #[arg(long, allow_hyphen_values = true)]
    pub order_by: Option<String>,
    /// Most documents in the answer (1-1000).
    #[arg(long)]
    pub limit: Option<u32>,
    /// Wait until the projection has applied this commit position.
    #[arg(long)]
    pub at_least: Option<u64>,
    /// Count the matching documents instead of listing them.
    #[arg(long)]
    pub count: bool,
    #[command(flatten)]
    #[allow(missing_docs)]
    pub connection: Connection,
}

/// Flags of `projector new`.
#[derive(Debug, Args)]
pub struct NewArgs {
    /// The projection's name, also its package's (`[a-z][a-z0-9-]{0,62}`).
    pub name: String,
    /// Where to create the crate (default: a directory named after it).
    #[arg(long)]
    pub dir: Option<PathBuf>,
    /// The language: `rust`, `ts` (TypeScript) or `python`.
    #[arg(long, value_enum, default_value_t = Lang::Rust)]
    pub lang: Lang,
    /// The SDK's directory for that language (default: the one in the
    /// source tree this binary was built from).
    #[arg(long)]
    pub sdk: Option<PathBuf>,
}

/// A language projections are written in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Lang {
    /// Rust, with `guest-sdk`.
    Rust,
    /// TypeScript, with `guest-sdk-ts`.
    Ts,
    /// Python, with `guest-sdk-py`.
    Python,
}

impl std::fmt::Display for Lang {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Lang::Rust => "Rust",
            Lang::Ts => "TypeScript",
            Lang::Python => "Python",
        })
    }
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

    /// Development mode: plaintext and no authentication (loopback only,
    /// unless `--dangerously-allow-unauthenticated-network`). Without it the
    /// store serves TLS and requires the `admin` user's password.
    #[arg(long, env = "PROJECTOR_EVENTSTORE_INSECURE")]
    pub insecure: bool,

    /// File holding the `admin` password (generated at the first start when
    /// missing; default `DATA/admin-password`, owner-only).
    #[arg(long, env = "PROJECTOR_EVENTSTORE_PASSWORD_FILE")]
    pub password_file: Option<PathBuf>,

    /// PEM certificate chain to serve (with `--tls-key`); without it a CA and a
    /// certificate are generated into `DATA/tls/` and clients trust `DATA/tls/ca.crt`.
    #[arg(long, env = "PROJECTOR_EVENTSTORE_TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,

    /// PEM private key of `--tls-cert`.
    #[arg(long, env = "PROJECTOR_EVENTSTORE_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,

    /// With `--insecure`: serve a non-loopback address without authentication,
    /// letting anyone who reaches it read and append every event.
    #[arg(long, env = "PROJECTOR_EVENTSTORE_DANGEROUSLY_ALLOW_UNAUTHENTICATED_NETWORK")]
    pub dangerously_allow_unauthenticated_network: bool,
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

    /// Where read models, the registry and the modules live: `sqlite` (files
    /// under `--data`, the default) or a PostgreSQL URL
    /// (`postgres://user:PASSWORD@host:5432/db`), which several hosts can
    /// share: each projection then runs on one of them and every host
    /// answers its queries. Never logged with its password.
    #[arg(long, env = "PROJECTOR_READMODELS", hide_env_values = true, default_value = "sqlite")]
    pub readmodels: String,

    /// The name this host goes by among the hosts sharing a PostgreSQL
    /// (status shows which host runs each projection). Default: the machine's
    /// name and the API's port.
    #[arg(long, env = "PROJECTOR_HOST_ID")]
    pub host_id: Option<String>,

    /// How long a host's claim on a projection lasts without renewal, in
    /// milliseconds (PostgreSQL only): another host takes the projection over
    /// once it runs out. Renewed every third of it.
    #[arg(long, env = "PROJECTOR_LEASE_MS", default_value_t = 3000,
          value_parser = clap::value_parser!(u64).range(500..=600_000))]
    pub lease_ms: u64,

    /// Connection string of an EventStoreDB/KurrentDB to follow, e.g.
    /// `esdb://admin:PASSWORD@localhost:2113?tls=true&tlsCAFile=ca.crt`. Without it the
    /// embedded event store runs in-process. Never logged.
    #[arg(long, env = "PROJECTOR_EVENTSTORE", hide_env_values = true)]
    pub eventstore: Option<String>,

    /// Where the embedded event store serves gRPC to other clients (when `--eventstore` is not given).
    #[arg(long, env = "PROJECTOR_EVENTSTORE_LISTEN", default_value = "127.0.0.1:2113")]
    pub eventstore_listen: SocketAddr,

    /// The event store's `admin` password, in a file: for `--eventstore`, the
    /// credentials to connect with (instead of `user:pass@` in the connection
    /// string); for the embedded store, its password (default
    /// `DATA/eventstore/admin-password`, generated owner-only when missing).
    #[arg(long, env = "PROJECTOR_EVENTSTORE_PASSWORD_FILE")]
    pub eventstore_password_file: Option<PathBuf>,

    /// Serve the embedded event store over TLS (a generated certificate; clients
    /// trust `DATA/eventstore/tls/ca.crt`). On by itself when
    /// `--eventstore-listen` is not a loopback address.
    #[arg(long, env = "PROJECTOR_EVENTSTORE_TLS")]
    pub eventstore_tls: bool,

    /// Development mode for the embedded event store: no authentication
    /// (loopback only). The host then connects without credentials.
    #[arg(long, env = "PROJECTOR_EVENTSTORE_INSECURE")]
    pub eventstore_insecure: bool,

    /// Bearer token for deploys and lifecycle changes (at least 16
    /// characters). Without it, a token is generated at the first start and
    /// kept in `DATA/admin-token` (owner-only). Prefer `--admin-token-file` or
    /// the environment: a command line shows in `ps`.
    #[arg(long, env = "PROJECTOR_ADMIN_TOKEN", hide_env_values = true)]
    pub admin_token: Option<String>,

    /// A file holding the admin token.
    #[arg(long, env = "PROJECTOR_ADMIN_TOKEN_FILE", conflicts_with = "admin_token")]
    pub admin_token_file: Option<PathBuf>,

    /// Bearer token queries and status reads require (at least 16 characters).
    #[arg(long, env = "PROJECTOR_QUERY_TOKEN", hide_env_values = true)]
    pub query_token: Option<String>,

    /// A file holding the query token.
    #[arg(long, env = "PROJECTOR_QUERY_TOKEN_FILE", conflicts_with = "query_token")]
    pub query_token_file: Option<PathBuf>,

    #[command(flatten)]
    #[allow(missing_docs)]
    pub network: NetworkArgs,

    /// Longest a query with `at_least` waits for the projection to reach
    /// that position before answering 504, in milliseconds.
    #[arg(long, env = "PROJECTOR_AT_LEAST_WAIT_MS", default_value_t = 5000)]
    pub at_least_wait_ms: u64,

    /// Largest module a deploy accepts, in MiB (larger ones get 413).
    #[arg(long, env = "PROJECTOR_MAX_MODULE_MB", default_value_t = crate::DEFAULT_MAX_MODULE_MB,
          value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..=1024))]
    pub max_module_mb: usize,

    #[command(flatten)]
    #[allow(missing_docs)]
    pub registration: RegistrationArgs,

    /// Deploy a module at startup: `NAME=PATH` (repeatable). An existing
    /// projection of that name gets the module by a `continue` swap (a no-op
    /// for the same bytes).
    #[arg(long = "deploy", value_name = "NAME=PATH")]
    pub deploy: Vec<String>,
}

/// How `POST /users` registers users.
#[derive(Debug, Args)]
pub struct RegistrationArgs {
    /// Memory of one argon2id password hash, in KiB.
    #[arg(long, env = "PROJECTOR_ARGON2_MEMORY_KIB", default_value_t = Argon2Settings::default().memory_kib)]
    pub argon2_memory_kib: u32,

    /// Passes of one argon2id password hash.
    #[arg(long, env = "PROJECTOR_ARGON2_ITERATIONS", default_value_t = Argon2Settings::default().iterations)]
    pub argon2_iterations: u32,

    /// Lanes of one argon2id password hash.
    #[arg(long, env = "PROJECTOR_ARGON2_PARALLELISM", default_value_t = Argon2Settings::default().parallelism)]
    pub argon2_parallelism: u32,

    /// The projection `GET /users/{id}` reads users from.
    #[arg(long, env = "PROJECTOR_USERS_PROJECTION", default_value = "user-directory")]
    pub users_projection: String,

    /// Longest one event-store operation of a registration may take before
    /// the request is answered 503, in milliseconds.
    #[arg(long, env = "PROJECTOR_REGISTRATION_TIMEOUT_MS", default_value_t = 5000)]
    pub registration_timeout_ms: u64,

    /// Password hashes computed at once [default: one per core].
    #[arg(long, env = "PROJECTOR_HASH_THREADS", value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..=1024))]
    pub hash_threads: Option<usize>,

    /// Registrations that may wait for a hashing thread beyond those
    /// hashing; one more is answered 503 with Retry-After, without a hash
    /// [default: 16 per core].
    #[arg(long, env = "PROJECTOR_HASH_QUEUE")]
    pub hash_queue: Option<usize>,

    /// `POST /users` requests one client (IP address; IPv6: its /64) may
    /// send per minute, all at once after a quiet minute; beyond, 429 with
    /// Retry-After. 0 turns the limit off.
    #[arg(long, env = "PROJECTOR_USERS_RATE_PER_MINUTE", default_value_t = crate::DEFAULT_USERS_RATE_PER_MINUTE)]
    pub users_rate_per_minute: u32,
}

impl RegistrationArgs {
    /// The settings these flags describe.
    pub fn config(&self) -> RegistrationConfig {
        let defaults = RegistrationConfig::default();
        RegistrationConfig {
            argon2: Argon2Settings {
                memory_kib: self.argon2_memory_kib,
                iterations: self.argon2_iterations,
                parallelism: self.argon2_parallelism,
            },
            store_timeout: std::time::Duration::from_millis(self.registration_timeout_ms),
            directory: self.users_projection.clone(),
            hash_threads: self.hash_threads.unwrap_or(defaults.hash_threads),
            hash_queue: self.hash_queue.unwrap_or(defaults.hash_queue),
            ..defaults
        }
    }
}

/// How the API faces the network (see `network::NetworkConfig`).
#[derive(Debug, Args)]
pub struct NetworkArgs {
    /// PEM certificate chain: the API serves HTTPS only (with `--tls-key`).
    #[arg(long, env = "PROJECTOR_TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,

    /// PEM private key of `--tls-cert`.
    #[arg(long, env = "PROJECTOR_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,

    /// Serve reads without a token even when listening beyond loopback.
    #[arg(long, env = "PROJECTOR_OPEN_READS", conflicts_with = "reads_need_token")]
    pub open_reads: bool,

    /// Require a token for reads even on loopback (the query token, or the admin token).
    #[arg(long, env = "PROJECTOR_READS_NEED_TOKEN")]
    pub reads_need_token: bool,

    /// A `Host` name the API answers for (repeatable, or comma-separated in
    /// the variable). On loopback, loopback names are always answered and no
    /// other unless listed; beyond loopback, any name unless some are listed.
    #[arg(long = "allowed-host", env = "PROJECTOR_ALLOWED_HOSTS", value_delimiter = ',')]
    pub allowed_hosts: Vec<String>,

    /// Longest a client may take to send a request's line and headers (and
    /// how long an idle connection is kept), in milliseconds.
    #[arg(long, env = "PROJECTOR_HEADER_READ_TIMEOUT_MS", default_value_t = 10_000)]
    pub header_read_timeout_ms: u64,

    /// Longest a client may take to send a request's body, in milliseconds.
    #[arg(long, env = "PROJECTOR_BODY_READ_TIMEOUT_MS", default_value_t = 60_000)]
    pub body_read_timeout_ms: u64,

    /// Most connections open at once; more wait to be accepted.
    #[arg(long, env = "PROJECTOR_MAX_CONNECTIONS", default_value_t = 1024)]
    pub max_connections: usize,

    /// Most connections one client (IP address; IPv6: its /64) may hold
    /// open; more are closed at once.
    #[arg(long, env = "PROJECTOR_MAX_CONNECTIONS_PER_CLIENT", default_value_t = 128)]
    pub max_connections_per_client: usize,

    /// Most queries (documents, listings, dead letters) one client (IP
    /// address) may send per minute, beyond which it gets 429 with
    /// `Retry-After`; 0 for no limit (the default: put it in front of a
    /// shared host, where one client should not starve the others).
    #[arg(long, env = "PROJECTOR_QUERY_RATE_PER_MINUTE", default_value_t = 0)]
    pub query_rate_per_minute: u32,

    /// Longest a listing or count may run before it is stopped with a 503, in milliseconds.
    #[arg(long, env = "PROJECTOR_QUERY_TIME_LIMIT_MS", default_value_t = 3000)]
    pub query_time_limit_ms: u64,
}

impl NetworkArgs {
    /// The settings these flags describe.
    pub fn config(&self) -> crate::network::NetworkConfig {
        use std::time::Duration;
        let reads_need_token = match (self.open_reads, self.reads_need_token) {
            (true, _) => Some(false),
            (false, true) => Some(true),
            (false, false) => None,
        };
        crate::network::NetworkConfig {
            tls: self
                .tls_cert
                .clone()
                .zip(self.tls_key.clone())
                .map(|(cert, key)| crate::network::TlsFiles { cert, key }),
            reads_need_token,
            allowed_hosts: self.allowed_hosts.clone(),
            header_read_timeout: Duration::from_millis(self.header_read_timeout_ms),
            body_read_timeout: Duration::from_millis(self.body_read_timeout_ms),
            max_connections: self.max_connections.max(1),
            max_connections_per_client: self.max_connections_per_client.max(1),
            query_rate_per_minute: std::num::NonZeroU32::new(self.query_rate_per_minute),
        }
    }
}
