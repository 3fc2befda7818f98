//! The gRPC front: wires the services onto a tonic server over tuned TCP.
//!
//! Protocol details (error shapes, feature negotiation, subscriptions) live in
//! the submodules; this file only assembles them.

// `tonic::Status` is large by design and is what every handler returns.
#![allow(clippy::result_large_err)]

mod auth;
mod cluster;
mod convert;
mod filter;
mod persistent;
mod read;
mod streams;
mod tls;
mod transport;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio::sync::watch;
use tonic::service::interceptor::InterceptedService;

use crate::proto::event_store::client::gossip::gossip_server::GossipServer;
use crate::proto::event_store::client::persistent_subscriptions::persistent_subscriptions_server::PersistentSubscriptionsServer;
use crate::proto::event_store::client::server_features::server_features_server::ServerFeaturesServer;
use crate::proto::event_store::client::streams::streams_server::StreamsServer;
use crate::storage::Store;

pub(crate) use auth::Authenticator;
pub(crate) use cluster::SERVER_VERSION;
pub(crate) use tls::ServerTls;
pub use transport::TcpTuning;

/// Counts calls that are still doing work (a handler, a read loop, a batch
/// append session), so a shutdown can wait for them and no longer: idle
/// HTTP/2 connections would otherwise hold a graceful shutdown open.
#[derive(Debug, Clone)]
pub(crate) struct InFlight(Arc<watch::Sender<usize>>);

/// Held while a call is in flight.
#[derive(Debug)]
pub(crate) struct InFlightGuard(Arc<watch::Sender<usize>>);

impl InFlight {
    pub(crate) fn new() -> Self {
        InFlight(Arc::new(watch::channel(0).0))
    }

    pub(crate) fn enter(&self) -> InFlightGuard {
        self.0.send_modify(|n| *n += 1);
        InFlightGuard(self.0.clone())
    }

    /// Resolves once no call is in flight.
    pub(crate) async fn idle(&self) {
        let mut count = self.0.subscribe();
        let _ = count.wait_for(|n| *n == 0).await;
    }
}

impl Drop for InFlightGuard {
    fn drop(&mut self) {
        self.0.send_modify(|n| *n -= 1);
    }
}

/// How calls reach the services: the socket tuning, TLS on every
/// connection (when set) and the credentials check on every streams call.
#[derive(Clone)]
pub(crate) struct Front {
    pub(crate) tuning: TcpTuning,
    pub(crate) tls: Option<tokio_rustls::TlsAcceptor>,
    pub(crate) authenticator: Authenticator,
}

impl std::fmt::Debug for Front {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Front")
            .field("tuning", &self.tuning)
            .field("tls", &self.tls.is_some())
            .field("authenticator", &self.authenticator)
            .finish()
    }
}

/// What the services serve: the store, its consumer groups, and the largest append.
#[derive(Debug, Clone)]
pub(crate) struct Backend {
    pub(crate) store: Arc<Store>,
    pub(crate) subsystem: Arc<crate::persistent::Subsystem>,
    pub(crate) max_append_size: usize,
}

/// Serves the event store on `listener` until `shutdown` resolves.
///
/// On shutdown, new connections are refused, open subscriptions and batch
/// append calls end with `UNAVAILABLE`, and in-flight requests complete.
pub(crate) async fn serve(
    listener: TcpListener,
    backend: Backend,
    advertised: SocketAddr,
    in_flight: InFlight,
    front: Front,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), tonic::transport::Error> {
    let Backend { store, subsystem, max_append_size } = backend;
    let (closing_tx, closing) = watch::channel(false);
    let persistent = persistent::PersistentService { subsystem, in_flight: in_flight.clone() };
    let streams = streams::StreamsService { store, max_append_size, closing, in_flight };
    // Room for the largest append in one message, plus framing.
    let max_message = max_append_size.max(4 << 20) + (64 << 10);
    let gossip = cluster::Gossip { instance_id: uuid::Uuid::new_v4(), advertised };
    tonic::transport::Server::builder()
        .add_service(InterceptedService::new(
            StreamsServer::new(streams).max_decoding_message_size(max_message),
            front.authenticator.clone(),
        ))
        .add_service(InterceptedService::new(PersistentSubscriptionsServer::new(persistent), front.authenticator))
        .add_service(ServerFeaturesServer::new(cluster::Features))
        .add_service(GossipServer::new(gossip))
        .serve_with_incoming_shutdown(transport::incoming(listener, front.tuning, front.tls), async move {
            shutdown.await;
            closing_tx.send_replace(true);
        })
        .await
}
