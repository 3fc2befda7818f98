//! Serving the API's router on a listener: plain HTTP/1.1 or TLS (rustls),
//! with the limits a server facing untrusted clients needs: a cap on open
//! connections, a time limit on reading a request's head (slowloris), a
//! time limit on reading its body, and the peer's address handed to the
//! handlers (`ConnectInfo`) for per-client limits.
//!
//! It decides nothing about requests: routing, auth and errors are the
//! router's. What it owns is connections, from accept to close.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use anyhow::Context as _;
use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::Router;
use bytes::Bytes;
use hyper::body::{Frame, Incoming};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tower::ServiceExt;

/// How connections are served.
#[derive(Debug, Clone)]
pub(crate) struct ServeConfig {
    /// TLS settings, for HTTPS; plain HTTP without.
    pub(crate) tls: Option<Arc<rustls::ServerConfig>>,
    /// Longest a client may take to send a request's line and headers
    /// (also how long an idle kept-alive connection stays open).
    pub(crate) header_read_timeout: Duration,
    /// Longest a client may take to send a request's body.
    pub(crate) body_read_timeout: Duration,
    /// Most connections open at once; more wait in the listen backlog.
    pub(crate) max_connections: usize,
    /// Most connections one client (IP address; IPv6: its /64) may hold
    /// open; more are closed at once, so one client cannot take every slot.
    pub(crate) max_connections_per_client: usize,
}

impl Default for ServeConfig {
    fn default() -> Self {
        ServeConfig {
            tls: None,
            header_read_timeout: Duration::from_secs(10),
            body_read_timeout: Duration::from_secs(60),
            max_connections: 1024,
            max_connections_per_client: 128,
        }
    }
}

/// The TLS settings for a PEM certificate chain and private key.
pub(crate) fn tls_config(cert: &std::path::Path, key: &std::path::Path) -> anyhow::Result<Arc<rustls::ServerConfig>> {
    let chain = rustls_pemfile::certs(&mut std::io::BufReader::new(
        std::fs::File::open(cert).with_context(|| format!("cannot read the TLS certificate {}", cert.display()))?,
    ))
    .collect::<Result<Vec<_>, _>>()
    .with_context(|| format!("{} is not a PEM certificate chain", cert.display()))?;
    anyhow::ensure!(!chain.is_empty(), "{} holds no PEM certificate", cert.display());
    let key = rustls_pemfile::private_key(&mut std::io::BufReader::new(
        std::fs::File::open(key).with_context(|| format!("cannot read the TLS key {}", key.display()))?,
    ))
    .with_context(|| format!("{} is not a PEM private key", key.display()))?
    .with_context(|| format!("{} holds no PEM private key", key.display()))?;
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .context("the TLS certificate and key do not make a usable pair")?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// Serves `app` on `listener` until `shutdown` resolves, then lets open
/// requests finish.
pub(crate) async fn serve(
    listener: TcpListener,
    app: Router,
    config: ServeConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let permits = Arc::new(Semaphore::new(config.max_connections));
    let tls = config.tls.clone().map(tokio_rustls::TlsAcceptor::from);
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let per_client = Arc::new(parking_lot::Mutex::new(std::collections::HashMap::<std::net::IpAddr, usize>::new()));
    tokio::pin!(shutdown);
    loop {
        let permit = tokio::select! {
            permit = permits.clone().acquire_owned() => permit.expect("the semaphore is never closed"),
            () = &mut shutdown => break,
        };
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    // Out of file descriptors and the like: wait a little rather than spin.
                    tracing::warn!(error = %e, "cannot accept a connection");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let Some(held) = ClientSlot::take(&per_client, peer.ip(), config.max_connections_per_client) else {
            tracing::debug!(%peer, "the client holds its most connections; closing the new one");
            continue;
        };
        let _ = stream.set_nodelay(true);
        let app = app.clone();
        let service = hyper::service::service_fn(move |mut request: hyper::Request<Incoming>| {
            request.extensions_mut().insert(ConnectInfo(peer));
            let deadline = tokio::time::Instant::now() + config.body_read_timeout;
            let request = request.map(|body| Body::new(DeadlineBody { inner: body, deadline, timer: None }));
            app.clone().oneshot(request)
        });
        let mut http = hyper::server::conn::http1::Builder::new();
        http.timer(TokioTimer::new()).header_read_timeout(config.header_read_timeout);
        let watcher = graceful.watcher();
        let tls = tls.clone();
        let handshake_timeout = config.header_read_timeout;
        tokio::spawn(async move {
            let (_permit, _held) = (permit, held);
            let served = match tls {
                None => watcher.watch(http.serve_connection(TokioIo::new(stream), service)).await,
                Some(acceptor) => match tokio::time::timeout(handshake_timeout, acceptor.accept(stream)).await {
                    Ok(Ok(stream)) => watcher.watch(http.serve_connection(TokioIo::new(stream), service)).await,
                    Ok(Err(e)) => return tracing::debug!(%peer, error = %e, "TLS handshake failed"),
                    Err(_) => return tracing::debug!(%peer, "TLS handshake timed out"),
                },
            };
            if let Err(e) = served {
                tracing::debug!(%peer, error = %e, "connection ended with an error");
            }
        });
    }
    drop(listener);
    // Connections finish their requests; one that does not within the grace
    // (a client not reading its answer) is left behind, not waited for.
    if tokio::time::timeout(SHUTDOWN_GRACE, graceful.shutdown()).await.is_err() {
        tracing::warn!(
            "some connections were still open {SHUTDOWN_GRACE:?} after the shutdown began; not waiting for them"
        );
    }
    Ok(())
}

/// How long a shutdown waits for open connections.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

/// One connection of a client, counted while it is open.
struct ClientSlot {
    table: Arc<parking_lot::Mutex<std::collections::HashMap<std::net::IpAddr, usize>>>,
    client: std::net::IpAddr,
}

impl ClientSlot {
    /// A slot for a connection from `peer`, unless its client already holds `most`.
    fn take(
        table: &Arc<parking_lot::Mutex<std::collections::HashMap<std::net::IpAddr, usize>>>,
        peer: std::net::IpAddr,
        most: usize,
    ) -> Option<ClientSlot> {
        let client = super::rate_limit::client(peer);
        let mut counts = table.lock();
        let held = counts.entry(client).or_default();
        if *held >= most {
            return None;
        }
        *held += 1;
        Some(ClientSlot { table: table.clone(), client })
    }
}

impl Drop for ClientSlot {
    fn drop(&mut self) {
        let mut counts = self.table.lock();
        if let Some(held) = counts.get_mut(&self.client) {
            *held -= 1;
            if *held == 0 {
                counts.remove(&self.client);
            }
        }
    }
}

/// A request body that fails once its deadline has passed, so a client
/// trickling a body cannot hold a connection and a handler forever. The
/// timer is armed when the body is first read: a request without one (most
/// GETs) costs no timer.
struct DeadlineBody {
    inner: Incoming,
    deadline: tokio::time::Instant,
    timer: Option<Pin<Box<tokio::time::Sleep>>>,
}

/// The error a body past its deadline reads as.
#[derive(Debug, thiserror::Error)]
#[error("the request body was not received in time")]
struct BodyTooSlow;

impl hyper::body::Body for DeadlineBody {
    type Data = Bytes;
    type Error = axum::BoxError;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let deadline = self.deadline;
        let timer = self.timer.get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
        if timer.as_mut().poll(cx).is_ready() {
            return Poll::Ready(Some(Err(BodyTooSlow.into())));
        }
        Pin::new(&mut self.inner).poll_frame(cx).map_err(Into::into)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.inner.size_hint()
    }
}
