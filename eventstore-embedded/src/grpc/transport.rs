//! Accepted TCP connections tuned for request/response latency.
//!
//! The 4.0 Rust client does not set `TCP_NODELAY`, so its small HTTP/2 writes
//! are held by Nagle's algorithm until the previous segment is acknowledged.
//! A peer that delays its ACKs (Linux does, up to 40 ms) then stalls every
//! append. This side therefore disables Nagle for its own writes and re-arms
//! `TCP_QUICKACK` after every read (the kernel clears it again by itself), so
//! the client's segments are acknowledged at once.
//!
//! TLS, when on, runs over these tuned connections (`Conn::Tls`); the
//! certificate is set up in `tls.rs`.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use futures::Stream;
use socket2::SockRef;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;
use tonic::transport::server::{Connected, TcpConnectInfo};

/// Longest a client may take to complete its TLS handshake.
const HANDSHAKE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// How accepted connections are set up.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TcpTuning {
    /// `TCP_NODELAY`, and `TCP_QUICKACK` re-armed after every read (the default).
    #[default]
    LowLatency,
    /// The operating system's defaults; only useful as a benchmark baseline.
    SystemDefault,
}

/// A TCP connection that acknowledges reads immediately.
#[derive(Debug)]
pub(crate) struct QuickAckStream {
    inner: TcpStream,
    quickack: bool,
}

impl QuickAckStream {
    pub(crate) fn new(inner: TcpStream, tuning: TcpTuning) -> Self {
        let quickack = tuning == TcpTuning::LowLatency;
        if quickack {
            if let Err(e) = inner.set_nodelay(true) {
                tracing::debug!(error = %e, "cannot set TCP_NODELAY");
            }
        }
        let stream = QuickAckStream { inner, quickack };
        stream.rearm_quickack();
        stream
    }

    fn rearm_quickack(&self) {
        if self.quickack {
            // Best effort: failure only costs latency.
            let _ = SockRef::from(&self.inner).set_quickack(true);
        }
    }
}

impl AsyncRead for QuickAckStream {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let polled = Pin::new(&mut this.inner).poll_read(cx, buf);
        if matches!(polled, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            this.rearm_quickack();
        }
        polled
    }
}

impl AsyncWrite for QuickAckStream {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

impl Connected for QuickAckStream {
    type ConnectInfo = TcpConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.inner.connect_info()
    }
}

/// An accepted connection: plaintext or after a TLS handshake.
#[derive(Debug)]
pub(crate) enum Conn {
    Plain(QuickAckStream),
    Tls(Box<TlsStream<QuickAckStream>>),
}

impl AsyncRead for Conn {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Conn::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Conn::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Conn {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Conn::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Conn::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Conn::Plain(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            Conn::Tls(s) => Pin::new(s.as_mut()).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            Conn::Plain(s) => s.is_write_vectored(),
            Conn::Tls(s) => s.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Conn::Plain(s) => Pin::new(s).poll_flush(cx),
            Conn::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Conn::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Conn::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}

impl Connected for Conn {
    type ConnectInfo = TcpConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        match self {
            Conn::Plain(s) => s.connect_info(),
            Conn::Tls(s) => s.get_ref().0.connect_info(),
        }
    }
}

/// Accepted connections from `listener`, each through a TLS handshake when
/// `tls` is given. Handshakes run concurrently (a slow or silent client
/// holds up no one else) and fail after [`HANDSHAKE_TIMEOUT`]; a failed one
/// only drops that connection. Accept errors (e.g. out of file descriptors)
/// are logged and retried after a short pause rather than ending the server.
pub(crate) fn incoming(
    listener: TcpListener,
    tuning: TcpTuning,
    tls: Option<TlsAcceptor>,
) -> impl Stream<Item = io::Result<Conn>> {
    futures::stream::unfold((listener, JoinSet::new()), move |(listener, mut handshakes)| {
        let tls = tls.clone();
        async move {
            loop {
                tokio::select! {
                    accepted = listener.accept() => match accepted {
                        Ok((stream, _)) => {
                            let stream = QuickAckStream::new(stream, tuning);
                            let Some(acceptor) = tls.clone() else {
                                return Some((Ok(Conn::Plain(stream)), (listener, handshakes)));
                            };
                            handshakes.spawn(tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)));
                        }
                        Err(e) => {
                            tracing::warn!(error = %e, "accept failed; retrying");
                            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                        }
                    },
                    Some(done) = handshakes.join_next(), if !handshakes.is_empty() => match done {
                        Ok(Ok(Ok(stream))) => return Some((Ok(Conn::Tls(Box::new(stream))), (listener, handshakes))),
                        Ok(Ok(Err(e))) => tracing::debug!(error = %e, "TLS handshake failed"),
                        Ok(Err(_)) => tracing::debug!("TLS handshake timed out"),
                        Err(e) => tracing::debug!(error = %e, "TLS handshake task failed"),
                    },
                }
            }
        }
    })
}
