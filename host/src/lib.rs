//! The Projector host as a library: the `projector` binary is a thin wrapper
//! around [`run`], so tests can start exactly what users run, in-process.
//!
//! `projector serve` runs the host (projections over the event store, an HTTP
//! API over their read models); `projector eventstore` runs the embedded event
//! store alone.

pub mod cli;
mod client;
pub mod cluster;
mod data_dir;
pub mod deployments;
pub mod feed;
mod http;
pub mod metrics;
pub mod network;
pub mod pg;
pub mod readmodel;
mod registry;
mod runner;
pub mod runtime;
mod scaffold;
pub mod settings;
pub mod status;
mod store_connection;
pub mod users;

use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context;
use tokio::net::TcpListener;

use cli::{Command, EventstoreArgs, ServeArgs};
pub use cluster::Storage;
use data_dir::DataDir;
use deployments::{BatchConfig, Deployments};
use runtime::{Limits, Runtime};

/// Runs `command` until `shutdown` resolves, then stops cleanly.
pub async fn run(command: Command, shutdown: impl Future<Output = ()> + Send + 'static) -> anyhow::Result<()> {
    match command {
        Command::Eventstore(args) => run_eventstore(args, shutdown).await,
        Command::Serve(args) => run_serve(*args, shutdown).await,
        Command::Client(args) => client::run(args).await,
        Command::New(args) => scaffold::run(args),
    }
}

/// How a host is set up.
#[derive(Debug, Clone)]
pub struct HostConfig {
    /// Where the registry, modules, artifacts and read models live.
    pub data_dir: PathBuf,
    /// The token mutating endpoints require. When not given, the one stored
    /// under the data dir is used, generated at the first start.
    pub admin_token: Option<String>,
    /// The token read endpoints require, if any.
    pub query_token: Option<String>,
    /// Longest a query with `at_least` waits for its position (then 504).
    pub at_least_wait: std::time::Duration,
    /// Largest module a deploy accepts (then 413).
    pub max_module_bytes: usize,
    /// How `POST /users` registers users and where `GET /users/{id}` reads them.
    pub registration: users::RegistrationConfig,
    /// Longest a listing or count may run before it is stopped (then 503).
    pub query_time_limit: std::time::Duration,
    /// TLS, read access, allowed `Host` names and connection limits.
    pub network: network::NetworkConfig,
    /// Where read models, the registry and modules live.
    pub storage: Storage,
    /// Most `POST /users` requests one client (IP address; IPv6: its /64)
    /// may send per minute, all at once after a quiet minute; beyond, 429
    /// (`None`: no limit).
    pub users_rate_per_minute: Option<std::num::NonZeroU32>,
}

/// The default of [`HostConfig::users_rate_per_minute`]: far above what a
/// person signing up sends, and above the tests' bursts (60 at once).
pub const DEFAULT_USERS_RATE_PER_MINUTE: u32 = 600;

impl HostConfig {
    /// Everything under `data_dir`, the admin token included; reads open.
    pub fn new(data_dir: PathBuf) -> Self {
        HostConfig {
            data_dir,
            admin_token: None,
            query_token: None,
            at_least_wait: std::time::Duration::from_secs(5),
            max_module_bytes: DEFAULT_MAX_MODULE_MB << 20,
            registration: Default::default(),
            query_time_limit: http::DEFAULT_QUERY_TIME_LIMIT,
            network: network::NetworkConfig::default(),
            users_rate_per_minute: std::num::NonZeroU32::new(DEFAULT_USERS_RATE_PER_MINUTE),
            storage: Storage::Sqlite,
        }
    }
}

/// The default of the largest module a deploy accepts, in MiB: room for a
/// TypeScript module (componentize-js embeds the SpiderMonkey engine and a
/// snapshot of the initialised heap: 12-17 MiB) and a Python one
/// (componentize-py embeds CPython: ~18.5 MiB), about twice the largest,
/// while still refusing an upload far beyond any projection.
pub const DEFAULT_MAX_MODULE_MB: usize = 32;

/// The file holding the generated admin token, readable by its owner only.
pub fn admin_token_path(data_dir: &Path) -> PathBuf {
    DataDir::new(data_dir).admin_token()
}

/// The admin token stored under `data`, created (owner-only) if there is none.
fn stored_admin_token(data: &DataDir) -> anyhow::Result<String> {
    let path = data.admin_token();
    let generate = || format!("{}{}", uuid::Uuid::new_v4().simple(), uuid::Uuid::new_v4().simple());
    let (token, generated) = stored_secret(data, &path, "token", generate)?;
    network::check_token("admin token", &token).with_context(|| format!("in {}", path.display()))?;
    if generated {
        tracing::info!(path = %path.display(), "generated an admin token for the API; it is stored in this file");
    }
    Ok(token)
}

/// The registration secret stored under `data`, created (owner-only) if there is none.
fn stored_registration_secret(data: &DataDir) -> anyhow::Result<users::RegistrationSecret> {
    let path = data.registration_secret();
    let (text, generated) = stored_secret(data, &path, "secret", || users::RegistrationSecret::generate().to_hex())?;
    if generated {
        tracing::info!(path = %path.display(), "generated the registration secret (user ids and request digests)");
    }
    users::RegistrationSecret::from_hex(&text)
        .with_context(|| format!("{} is not a registration secret", path.display()))
}

/// The text stored at `path` under `data`, or `generate`d and stored there
/// readable by its owner only (then `true`).
fn stored_secret(
    data: &DataDir,
    path: &Path,
    what: &str,
    generate: impl FnOnce() -> String,
) -> anyhow::Result<(String, bool)> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let data_dir = data.root();
    match std::fs::read_to_string(path) {
        Ok(text) if !text.trim().is_empty() => return Ok((text.trim().to_owned(), false)),
        Ok(_) => anyhow::bail!("{} is empty; delete it to generate a new {what}", path.display()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e).with_context(|| format!("cannot read {}", path.display())),
    }
    std::fs::create_dir_all(data_dir).with_context(|| format!("cannot create {}", data_dir.display()))?;
    let text = generate();
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("cannot create {}", path.display()))?;
    file.write_all(text.as_bytes())?;
    file.sync_all()?;
    Ok((text, true))
}

/// A running host: the HTTP API over deployed projections.
#[derive(Debug)]
pub struct Host {
    addr: std::net::SocketAddr,
    deployments: Arc<Deployments>,
    admin_token: String,
    task: tokio::task::JoinHandle<std::io::Result<()>>,
}

impl Host {
    /// Restores the projections recorded under the data dir, then serves the
    /// API on `listener`, following events through `client`, until `shutdown` resolves.
    pub async fn start(
        listener: TcpListener,
        client: eventstore::Client,
        config: HostConfig,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<Host> {
        let addr = listener.local_addr()?;
        let data = DataDir::new(config.data_dir);
        data.create_private()?;
        let storage = match &config.storage {
            Storage::Sqlite => deployments::Storage::Files(data.clone()),
            Storage::Postgres(cluster) => {
                let scheme = if config.network.tls.is_some() { "https" } else { "http" };
                let joined = cluster::Cluster::join(cluster, format!("{scheme}://{addr}")).await?;
                tracing::info!(host = %cluster.host_id, database = %joined.pg.shown(), "sharing read models and deployments through PostgreSQL");
                deployments::Storage::Postgres(joined)
            }
        };
        let admin_token = match (config.admin_token, storage.cluster()) {
            (Some(token), _) => {
                network::check_token("admin token", &token)?;
                token
            }
            (None, None) => stored_admin_token(&data)?,
            // Every host accepts the same token; it is kept in each data dir for the CLI.
            (None, Some(cluster)) => {
                let generate = || format!("{}{}", uuid::Uuid::new_v4().simple(), uuid::Uuid::new_v4().simple());
                let token = cluster.shared_secret("admin-token", generate).await?;
                registry::write_private(&data.admin_token(), token.as_bytes())?;
                token
            }
        };
        if let Some(token) = &config.query_token {
            network::check_token("query token", token)?;
        }
        let tls = match &config.network.tls {
            Some(files) => Some(http::tls_config(&files.cert, &files.key)?),
            None => None,
        };
        let metrics = Arc::new(metrics::Metrics::new());
        let secret = match storage.cluster() {
            None => stored_registration_secret(&data)?,
            // Every host derives the same user ids and request digests.
            Some(cluster) => {
                let text =
                    cluster.shared_secret("registration", || users::RegistrationSecret::generate().to_hex()).await?;
                users::RegistrationSecret::from_hex(&text).context("the shared registration secret is not valid")?
            }
        };
        let registrations =
            Arc::new(users::Registrations::new(client.clone(), config.registration, secret, metrics.clone())?);
        let runtime = Arc::new(
            Runtime::with_function_cache(Limits::default(), &data.function_cache())?
                .with_artifact_cache(data.artifacts()),
        );
        let head = Arc::new(feed::Head::follow(client.clone()));
        let deployments = Arc::new(Deployments::new(runtime, client, storage, BatchConfig::default(), head, metrics)?);
        deployments.restore().await?;
        deployments.spawn_keeper();
        let http_config = http::HttpConfig {
            query_token: config.query_token,
            at_least_wait: config.at_least_wait,
            max_module_bytes: config.max_module_bytes,
            query_time_limit: config.query_time_limit,
            reads_need_token: config.network.reads_need_token(addr),
            allowed_hosts: config.network.allowed_hosts(addr),
            users_rate_per_minute: config.users_rate_per_minute,
            query_rate_per_minute: config.network.query_rate_per_minute,
            ..http::HttpConfig::new(admin_token.clone())
        };
        let serve_config = http::ServeConfig {
            tls,
            header_read_timeout: config.network.header_read_timeout,
            body_read_timeout: config.network.body_read_timeout,
            max_connections: config.network.max_connections,
            max_connections_per_client: config.network.max_connections_per_client,
        };
        let app = http::router(deployments.clone(), registrations, http_config);
        let stopping = deployments.clone();
        let shutdown = async move {
            shutdown.await;
            stopping.stop_all();
            if let Some(cluster) = stopping.cluster() {
                if let Err(e) = cluster.leave().await {
                    tracing::warn!(error = %format!("{e:#}"), "cannot tell the other hosts this one is leaving");
                }
            }
        };
        let scheme = if serve_config.tls.is_some() { "https" } else { "http" };
        let task = tokio::spawn(http::serve(listener, app, serve_config, shutdown));
        tracing::info!(%addr, "projector API listening on {scheme}://{addr}; the console: open {scheme}://{addr}/");
        Ok(Host { addr, deployments, admin_token, task })
    }

    /// The token the mutating endpoints accept.
    pub fn admin_token(&self) -> &str {
        &self.admin_token
    }

    /// The API's address.
    pub fn local_addr(&self) -> std::net::SocketAddr {
        self.addr
    }

    /// The deployed projections.
    pub fn deployments(&self) -> &Arc<Deployments> {
        &self.deployments
    }

    /// Waits for the API to stop (after the shutdown future resolves).
    pub async fn stopped(self) -> anyhow::Result<()> {
        self.task.await??;
        Ok(())
    }
}

async fn run_serve(args: ServeArgs, shutdown: impl Future<Output = ()> + Send + 'static) -> anyhow::Result<()> {
    let (embedded, client) = store_connection::connect(&args).await?;
    let listener = TcpListener::bind(args.listen).await.with_context(|| format!("cannot listen on {}", args.listen))?;
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    for flag in ["--admin-token", "--query-token"] {
        if std::env::args().any(|arg| arg == flag || arg.starts_with(&format!("{flag}="))) {
            tracing::warn!("{flag} on the command line shows in `ps` to every user; use {flag}-file or its variable");
        }
    }
    let admin_token = match &args.admin_token_file {
        Some(path) => Some(network::read_token_file("admin token", path)?),
        None => args.admin_token,
    };
    let query_token = match &args.query_token_file {
        Some(path) => Some(network::read_token_file("query token", path)?),
        None => args.query_token,
    };
    let config = HostConfig {
        data_dir: args.data.clone(),
        admin_token,
        query_token,
        query_time_limit: std::time::Duration::from_millis(args.network.query_time_limit_ms),
        network: args.network.config(),
        at_least_wait: std::time::Duration::from_millis(args.at_least_wait_ms),
        max_module_bytes: args.max_module_mb << 20,
        registration: args.registration.config(),
        users_rate_per_minute: std::num::NonZeroU32::new(args.registration.users_rate_per_minute),
        storage: Storage::parse(&args.readmodels, args.host_id.clone(), listener.local_addr()?, args.lease_ms)?,
    };
    let host = Host::start(listener, client, config, async move {
        let _ = stop_rx.await;
    })
    .await?;
    for spec in &args.deploy {
        let (name, path) = spec.split_once('=').with_context(|| format!("--deploy '{spec}' is not NAME=PATH"))?;
        let bytes = std::fs::read(path).with_context(|| format!("cannot read {path}"))?;
        let (deployed, _) = host
            .deployments()
            .deploy(name, bytes, settings::DeployOptions::default())
            .await
            .with_context(|| format!("cannot deploy {path} as '{name}'"))?;
        let scheme = if args.network.tls_cert.is_some() { "https" } else { "http" };
        tracing::info!(?deployed, "{name}: {scheme}://{}/projections/{name}", host.local_addr());
    }
    shutdown.await;
    let _ = stop_tx.send(());
    host.stopped().await?;
    if let Some(server) = embedded {
        server.shutdown().await?;
    }
    Ok(())
}

async fn run_eventstore(args: EventstoreArgs, shutdown: impl Future<Output = ()>) -> anyhow::Result<()> {
    let listener = TcpListener::bind(args.listen).await.with_context(|| format!("cannot listen on {}", args.listen))?;
    let security = if args.insecure {
        eventstore_embedded::Security {
            allow_unauthenticated_network: args.dangerously_allow_unauthenticated_network,
            ..eventstore_embedded::Security::default()
        }
    } else {
        let password_file =
            args.password_file.clone().unwrap_or_else(|| args.data.join(eventstore_embedded::PASSWORD_FILE));
        let user = eventstore_embedded::Credentials::admin_from_file(&password_file)
            .with_context(|| format!("cannot set up the event store's password in {}", password_file.display()))?;
        tracing::info!(user = user.username(), password_file = %password_file.display(), "event store authentication on");
        let tls = match (args.tls_cert, args.tls_key) {
            (Some(cert), Some(key)) => eventstore_embedded::TlsSettings::Files { cert, key, ca: None },
            _ => eventstore_embedded::TlsSettings::Generated,
        };
        eventstore_embedded::Security { tls: Some(tls), user: Some(user), allow_unauthenticated_network: false }
    };
    let config = eventstore_embedded::Config {
        max_append_size: args.max_append_size,
        security,
        ..eventstore_embedded::Config::new(args.data)
    };
    eventstore_embedded::serve(listener, config, shutdown).await.context("event store failed")
}

/// Resolves on the first SIGINT or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        if let Err(e) = tokio::signal::ctrl_c().await {
            tracing::error!("cannot listen for SIGINT: {e}");
            std::future::pending::<()>().await;
        }
    };
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(e) => {
                tracing::error!("cannot listen for SIGTERM: {e}");
                std::future::pending::<()>().await;
            }
        }
    };
    tokio::select! {
        () = ctrl_c => tracing::info!("SIGINT received; shutting down"),
        () = terminate => tracing::info!("SIGTERM received; shutting down"),
    }
}

/// Process-wide settings the host runs under, made at the start of `main`
/// before any thread exists (benchmarks call it too, to measure the same
/// process): `SIGXFSZ` ignored, free heap memory returned to the system.
pub fn tune_process() {
    ignore_file_size_signal();
    return_free_memory_periodically();
}

/// A write past the process's file size limit (`RLIMIT_FSIZE`) then fails
/// with `EFBIG` and is handled like a full disk (the write is refused, the
/// service goes on) instead of the signal killing the process.
#[allow(unsafe_code)]
fn ignore_file_size_signal() {
    // SAFETY: installs the "ignore" disposition for one signal, before any thread is started.
    unsafe {
        libc::signal(libc::SIGXFSZ, libc::SIG_IGN);
    }
}

/// Hands memory that glibc's malloc holds free back to the system every
/// 10 s. glibc keeps up to eight arenas per core, one per thread that
/// allocates while another does, and an arena other than the main one only
/// returns its free pages when asked (`malloc_trim`). The host's blocking
/// threads (batches, queries, hashes) spread over all of them, so without
/// this the resident set of a host under steady load grew in steps of an
/// arena heap: 290 to 450 MiB in a 10-minute soak (RELIABILITY.md). Capping
/// the arenas instead kept it flat but cost up to a fifth of the catch-up
/// throughput (BENCHMARKS.md).
fn return_free_memory_periodically() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        let spawned = std::thread::Builder::new().name("malloc-trim".into()).spawn(|| {
            loop {
                std::thread::sleep(std::time::Duration::from_secs(10));
                // SAFETY: glibc's own call, safe from any thread at any time.
                #[allow(unsafe_code)]
                unsafe {
                    libc::malloc_trim(0);
                }
            }
        });
        if let Err(e) = spawned {
            tracing::warn!("cannot start the malloc-trim thread: {e}");
        }
    }
}

/// The `projector` binary: parses flags, sets up logging, and runs the
/// chosen command until SIGINT or SIGTERM. A test binary calls it too, so
/// process-level tests run exactly what users run.
pub fn main() -> std::process::ExitCode {
    use std::io::IsTerminal;
    use std::process::ExitCode;

    use clap::Parser;
    use tracing_subscriber::EnvFilter;

    let cli = cli::Cli::parse();
    tune_process();
    tracing_subscriber::fmt()
        .with_env_filter(EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(&cli.log)))
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(e) => {
            tracing::error!("cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli.command, shutdown_signal())) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // One line a person can act on, also for the client commands.
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
