//! The Projector host as a library: the `projector` binary is a thin wrapper
//! around [`run`], so tests can start exactly what users run, in-process.
//!
//! This crate currently runs the embedded event store; the projection runtime
//! builds on it.

pub mod cli;
pub mod runtime;

use std::future::Future;

use anyhow::Context;
use tokio::net::TcpListener;

use cli::{Command, EventstoreArgs};

/// Runs `command` until `shutdown` resolves, then stops cleanly.
pub async fn run(command: Command, shutdown: impl Future<Output = ()>) -> anyhow::Result<()> {
    match command {
        Command::Eventstore(args) => run_eventstore(args, shutdown).await,
    }
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
