//! The Projector host as a library: the `projector` binary is a thin wrapper
//! around [`run`], so tests can start exactly what users run, in-process.
//!
//! `projector serve` runs the host (projections over the event store, an HTTP
//! API over their read models); `projector eventstore` runs the embedded event
//! store alone.

pub mod cli;
pub mod head;
pub mod http;
pub mod metrics;
pub mod projections;
pub mod readmodel;
pub mod runtime;

use std::future::Future;
use std::sync::Arc;

use anyhow::Context;
use tokio::net::TcpListener;

use cli::{Command, EventstoreArgs, ServeArgs};
use projections::{BatchConfig, Projections};
use runtime::{Limits, Runtime};

/// Runs `command` until `shutdown` resolves, then stops cleanly.
pub async fn run(command: Command, shutdown: impl Future<Output = ()> + Send + 'static) -> anyhow::Result<()> {
    match command {
        Command::Eventstore(args) => run_eventstore(args, shutdown).await,
        Command::Serve(args) => run_serve(args, shutdown).await,
    }
}

/// A running host: the HTTP API over deployed projections.
#[derive(Debug)]
pub struct Host {
    addr: std::net::SocketAddr,
    projections: Arc<Projections>,
    task: tokio::task::JoinHandle<std::io::Result<()>>,
}

impl Host {
    /// Serves the API on `listener`, following events through `client`, with
    /// read models under `data_dir`, until `shutdown` resolves.
    pub fn start(
        listener: TcpListener,
        client: eventstore::Client,
        data_dir: std::path::PathBuf,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<Host> {
        let addr = listener.local_addr()?;
        let runtime = Arc::new(Runtime::new(Limits::default())?.with_artifact_cache(data_dir.join("artifacts")));
        let head = Arc::new(head::Head::follow(client.clone()));
        let metrics = Arc::new(metrics::Metrics::new());
        let projections = Arc::new(Projections::new(runtime, client, data_dir, BatchConfig::default(), head, metrics));
        let app = http::router(projections.clone(), http::HttpConfig::default());
        let stopping = projections.clone();
        let shutdown = async move {
            shutdown.await;
            stopping.stop_all();
        };
        let task = tokio::spawn(async move { axum::serve(listener, app).with_graceful_shutdown(shutdown).await });
        tracing::info!(%addr, "projector API listening");
        Ok(Host { addr, projections, task })
    }

    /// The API's address.
    pub fn local_addr(&self) -> std::net::SocketAddr {
        self.addr
    }

    /// The deployed projections.
    pub fn projections(&self) -> &Arc<Projections> {
        &self.projections
    }

    /// Waits for the API to stop (after the shutdown future resolves).
    pub async fn stopped(self) -> anyhow::Result<()> {
        self.task.await??;
        Ok(())
    }
}

async fn run_serve(args: ServeArgs, shutdown: impl Future<Output = ()> + Send + 'static) -> anyhow::Result<()> {
    let (embedded, client) = match &args.eventstore {
        Some(connection) => {
            let settings: eventstore::ClientSettings =
                connection.parse().with_context(|| format!("invalid --eventstore connection string '{connection}'"))?;
            (None, eventstore::Client::new(settings)?)
        }
        None => {
            let listener = TcpListener::bind(args.eventstore_listen)
                .await
                .with_context(|| format!("cannot listen on {}", args.eventstore_listen))?;
            let server = eventstore_embedded::EmbeddedServer::start(
                listener,
                eventstore_embedded::Config::new(args.data.join("eventstore")),
            )
            .await?;
            let client = server.client()?;
            (Some(server), client)
        }
    };
    let listener = TcpListener::bind(args.listen).await.with_context(|| format!("cannot listen on {}", args.listen))?;
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let host = Host::start(listener, client, args.data.clone(), async move {
        let _ = stop_rx.await;
    })?;
    for spec in &args.deploy {
        let (name, path) = spec.split_once('=').with_context(|| format!("--deploy '{spec}' is not NAME=PATH"))?;
        let bytes = std::fs::read(path).with_context(|| format!("cannot read {path}"))?;
        let module = host.projections().runtime().compile(&bytes).with_context(|| format!("cannot deploy {path}"))?;
        host.projections().deploy(name, &projections::module_id(&bytes), module)?;
        tracing::info!("deployed {name}: http://{}/projections/{name}", host.local_addr());
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
    let config = eventstore_embedded::Config {
        max_append_size: args.max_append_size,
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
