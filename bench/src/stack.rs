//! The store and the host as the benchmarks start them: in this process,
//! on loopback ports, as `projector serve` runs them.

use std::path::Path;

use eventstore_embedded::{Config, EmbeddedServer};
use projector::{Host, HostConfig};
use tokio::net::TcpListener;
use tokio::sync::oneshot;

/// The embedded store on a loopback port, its data under `dir/es`.
pub(crate) async fn start_store(dir: &Path) -> anyhow::Result<EmbeddedServer> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    Ok(EmbeddedServer::start(listener, Config::new(dir.join("es"))).await?)
}

/// A host following `server`, serving its API on a loopback port.
pub(crate) struct RunningHost {
    pub(crate) host: Host,
    stop: oneshot::Sender<()>,
}

impl RunningHost {
    pub(crate) async fn start(server: &EmbeddedServer, config: HostConfig) -> anyhow::Result<RunningHost> {
        let api = TcpListener::bind("127.0.0.1:0").await?;
        let (stop, stopped) = oneshot::channel::<()>();
        let host = Host::start(api, server.client()?, config, async move {
            let _ = stopped.await;
        })
        .await?;
        Ok(RunningHost { host, stop })
    }

    /// Stops the host and waits until it has.
    pub(crate) async fn stop(self) -> anyhow::Result<()> {
        let _ = self.stop.send(());
        self.host.stopped().await
    }
}
