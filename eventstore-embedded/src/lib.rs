//! A single-node server that speaks the EventStoreDB gRPC protocol.
//!
//! Projector always reads and writes events through the official clients.
//! Where no EventStoreDB/KurrentDB cluster is at hand (a laptop, CI, a small
//! deployment), this crate is the server they talk to: streams with optimistic
//! concurrency, `$all`, catch-up and live subscriptions with server-side
//! filters, persistent subscriptions (consumer groups), soft and hard
//! deletes, `$tb`, `$maxCount` and `$maxAge`, all durable in one append-only log.
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use eventstore_embedded::{Config, EmbeddedServer};
//!
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
//! let server = EmbeddedServer::start(listener, Config::new("./data")).await?;
//! let client = server.client()?; // an `eventstore::Client`
//! # drop(client);
//! server.shutdown().await?;
//! # Ok(()) }
//! ```
//!
//! Security is EventStoreDB's, in the forms the official clients speak (see
//! [`Security`]): TLS with the operator's certificate or one generated into
//! the data directory, and one user (`admin`) whose `user:pass` every streams
//! call must carry. [`Config::new`] is the insecure development mode
//! (plaintext, no authentication), which only serves a loopback address unless
//! [`Security::allow_unauthenticated_network`] says otherwise.
//!
//! What it deliberately does not do: clustering, users beyond one and access
//! lists, client certificates, server-side projections and scavenging. Those
//! RPCs answer `UNIMPLEMENTED`, which the clients report as an unsupported
//! feature.
#![deny(missing_docs)]

mod filter;
mod grpc;
mod persistent;
mod proto;
mod security;
pub mod storage;

use std::future::Future;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

pub use grpc::TcpTuning;
pub use security::{Credentials, Security, TlsSettings, DEFAULT_USER, PASSWORD_FILE, TLS_DIR};
pub use storage::{Store, StoreError};

/// The default largest append: 1 MiB, as in EventStoreDB.
pub const DEFAULT_MAX_APPEND_SIZE: usize = 1024 * 1024;

/// How long a shutdown waits for open calls before cutting them off.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

/// The EventStoreDB version the server reports to clients.
pub const SERVER_VERSION: &str = grpc::SERVER_VERSION;

/// Server settings.
#[derive(Debug, Clone)]
pub struct Config {
    /// Directory for the event log; created if missing.
    pub data_dir: PathBuf,
    /// Largest append accepted, counting event data, metadata and type.
    pub max_append_size: usize,
    /// Socket options of accepted connections.
    pub tcp_tuning: TcpTuning,
    /// TLS and authentication (none by default: the insecure mode).
    pub security: Security,
}

impl Config {
    /// Settings with defaults for everything but the data directory.
    pub fn new(data_dir: impl Into<PathBuf>) -> Self {
        Config {
            data_dir: data_dir.into(),
            max_append_size: DEFAULT_MAX_APPEND_SIZE,
            tcp_tuning: TcpTuning::default(),
            security: Security::default(),
        }
    }
}

/// Errors starting or stopping the server.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The store could not be opened (see [`StoreError`]).
    #[error("cannot open the event store: {0}")]
    Store(#[from] StoreError),
    /// The listener or the gRPC transport failed.
    #[error("event store transport: {0}")]
    Transport(String),
    /// The client could not be built from the server's address.
    #[error("cannot build an eventstore client: {0}")]
    Client(String),
    /// The certificate or key could not be read or generated.
    #[error("event store TLS: {0}")]
    Tls(String),
    /// The password file could not be read or written.
    #[error("event store credentials: {0}")]
    Credentials(#[from] std::io::Error),
    /// A listener beyond loopback without authentication, not explicitly allowed.
    #[error(
        "refusing to serve the event store on {0} without authentication: anyone who can reach it could read \
         and append every event; turn authentication on, listen on loopback, or explicitly allow it"
    )]
    Unprotected(SocketAddr),
    /// The persistent subscriptions' configuration could not be read.
    #[error("event store persistent subscriptions: {0}")]
    Persistent(String),
}

/// A running server. Dropping it starts a shutdown; [`EmbeddedServer::shutdown`]
/// also waits for it to finish.
#[derive(Debug)]
pub struct EmbeddedServer {
    addr: SocketAddr,
    store: Arc<Store>,
    subsystem: Arc<persistent::Subsystem>,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<Result<(), tonic::transport::Error>>>,
    in_flight: grpc::InFlight,
    user: Option<Credentials>,
    tls: Option<grpc::ServerTls>,
}

/// How long [`EmbeddedServer::client`]'s client waits between two
/// attempts to connect (the official client's default is 500 ms).
const CLIENT_DISCOVERY_INTERVAL: std::time::Duration = std::time::Duration::from_millis(20);

impl EmbeddedServer {
    /// Opens the store in `config.data_dir` (recovering it after a crash) and
    /// serves it on `listener` in the background.
    pub async fn start(listener: TcpListener, config: Config) -> Result<EmbeddedServer, Error> {
        let addr = listener.local_addr().map_err(|e| Error::Transport(e.to_string()))?;
        if !config.security.permits(addr) {
            return Err(Error::Unprotected(addr));
        }
        let store_config =
            storage::StoreConfig { data_dir: config.data_dir.clone(), max_append_size: config.max_append_size };
        let store = tokio::task::spawn_blocking(move || Store::open(&store_config))
            .await
            .map_err(|e| Error::Transport(e.to_string()))??;
        let store = Arc::new(store);
        let subsystem = persistent::Subsystem::start(store.clone()).await.map_err(Error::Persistent)?;
        let advertised =
            if addr.ip().is_unspecified() { SocketAddr::from((Ipv4Addr::LOCALHOST, addr.port())) } else { addr };
        let tls = match &config.security.tls {
            Some(settings) => Some(grpc::ServerTls::load(settings, &config.data_dir, addr)?),
            None => None,
        };
        let user = config.security.user.clone();
        let front = grpc::Front {
            tuning: config.tcp_tuning,
            tls: tls.as_ref().map(|tls| tls.acceptor.clone()),
            authenticator: grpc::Authenticator::new(user.as_ref()),
        };
        let (stop, stopped) = oneshot::channel::<()>();
        let in_flight = grpc::InFlight::new();
        let serving = grpc::serve(
            listener,
            grpc::Backend {
                store: store.clone(),
                subsystem: subsystem.clone(),
                max_append_size: config.max_append_size,
            },
            advertised,
            in_flight.clone(),
            front,
            async move {
                let _ = stopped.await;
            },
        );
        let task = tokio::spawn(serving);
        let ca = tls.as_ref().and_then(|tls| tls.ca_file.as_ref()).map(|ca| ca.display().to_string());
        tracing::info!(
            %addr,
            data_dir = %config.data_dir.display(),
            tls = tls.is_some(),
            authentication = user.is_some(),
            ca = ca.as_deref().unwrap_or("-"),
            "event store listening"
        );
        Ok(EmbeddedServer { addr, store, subsystem, stop: Some(stop), task: Some(task), in_flight, user, tls })
    }

    /// The address the server listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// A connection string for the official clients, e.g.
    /// `esdb://127.0.0.1:2113?tls=false`, or with security on
    /// `esdb://admin:PASSWORD@127.0.0.1:2113?tls=true&tlsCAFile=DATA/tls/ca.crt`.
    ///
    /// It holds the password when authentication is on: never log it.
    /// Certificates from files without a known CA are not verified
    /// (`tlsVerifyCert=false`): the client connects to the address this
    /// process bound.
    pub fn connection_string(&self) -> String {
        let host = if self.addr.ip().is_unspecified() { Ipv4Addr::LOCALHOST.into() } else { self.addr.ip() };
        let user = match &self.user {
            Some(user) => format!("{}:{}@", user.username(), user.password()),
            None => String::new(),
        };
        let tls = match &self.tls {
            None => "tls=false".to_owned(),
            Some(grpc::ServerTls { ca_file: Some(ca), .. }) => format!("tls=true&tlsCAFile={}", ca.display()),
            Some(_) => "tls=true&tlsVerifyCert=false".to_owned(),
        };
        format!("esdb://{user}{}?{tls}", SocketAddr::new(host, self.addr.port()))
    }

    /// The CA certificate clients should trust, when TLS is on and it is known
    /// (always for a generated certificate).
    pub fn ca_file(&self) -> Option<&std::path::Path> {
        self.tls.as_ref()?.ca_file.as_deref()
    }

    /// An official Rust client connected to this server.
    ///
    /// It waits `CLIENT_DISCOVERY_INTERVAL` between connection attempts
    /// instead of the client's default 500 ms, a pause meant for finding a
    /// cluster's nodes that the client also makes before its very first
    /// connection: with the default, every new client's first call took
    /// half a second. It tries as long as the default client does (10
    /// attempts 500 ms apart) before it reports the server away.
    pub fn client(&self) -> Result<eventstore::Client, Error> {
        let interval = CLIENT_DISCOVERY_INTERVAL.as_millis();
        let attempts = 5000 / interval;
        let connection =
            format!("{}&discoveryInterval={interval}&maxDiscoverAttempts={attempts}", self.connection_string());
        // The parse error may quote the string, and with it the password.
        let settings: eventstore::ClientSettings = connection
            .parse()
            .map_err(|_| Error::Client(format!("the connection string for {} does not parse", self.addr)))?;
        eventstore::Client::new(settings).map_err(|e| Error::Client(format!("{e}")))
    }

    /// The store behind the server, for in-process inspection.
    pub fn store(&self) -> &Arc<Store> {
        &self.store
    }

    /// Stops accepting connections, ends open subscriptions, waits for
    /// in-flight requests (at most a few seconds), then closes the log.
    pub async fn shutdown(mut self) -> Result<(), Error> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        // Consumer groups write their checkpoints and drop their consumers.
        self.subsystem.shutdown().await;
        // Subscriptions and batch-append sessions end on the stop signal;
        // wait for the calls still doing work, then drop idle connections.
        if tokio::time::timeout(SHUTDOWN_GRACE, self.in_flight.idle()).await.is_err() {
            tracing::warn!("calls still running after {SHUTDOWN_GRACE:?}; cutting them off");
        }
        let mut result = Ok(());
        if let Some(task) = self.task.take() {
            if task.is_finished() {
                match task.await {
                    Ok(Ok(())) => {}
                    Ok(Err(e)) => result = Err(Error::Transport(e.to_string())),
                    Err(e) => result = Err(Error::Transport(e.to_string())),
                }
            } else {
                // Awaiting the aborted task makes sure its future, and with it
                // the listening socket, is dropped before we return: a server
                // restarted at once on the same address must be able to bind.
                task.abort();
                let _ = task.await;
            }
        }
        let store = self.store.clone();
        let _ = tokio::task::spawn_blocking(move || store.close()).await;
        tracing::info!("event store stopped");
        result
    }
}

impl Drop for EmbeddedServer {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
            // Without `shutdown`, the groups would go on holding the store (and consumers open).
            if let Ok(runtime) = tokio::runtime::Handle::try_current() {
                let subsystem = self.subsystem.clone();
                runtime.spawn(async move { subsystem.shutdown().await });
            }
        }
    }
}

/// Runs the server on `listener` until `shutdown` resolves, then stops it cleanly.
pub async fn serve(listener: TcpListener, config: Config, shutdown: impl Future<Output = ()>) -> Result<(), Error> {
    let server = EmbeddedServer::start(listener, config).await?;
    shutdown.await;
    server.shutdown().await
}
