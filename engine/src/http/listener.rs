//! The HTTP listener: a node-wide connection limit, `TCP_NODELAY`, and a write timeout.
//!
//! A player that stops reading leaves its socket's send buffer full; every write then stays pending. The write
//! timeout (`stream.slow_player_timeout_secs`) turns that into an error, so hyper closes the connection and the
//! player's feed is dropped. Its frames never queued anywhere but in the shared ring, which it has left.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::OwnedSemaphorePermit;
use tokio::time::Sleep;
use tracing::warn;

use crate::node::NodeContext;

/// An axum [`axum::serve::Listener`] that enforces the connection limit.
pub struct LimitedListener {
    inner: TcpListener,
    node: Arc<NodeContext>,
    write_timeout: Duration,
}

impl LimitedListener {
    /// Wraps a bound listener.
    pub fn new(inner: TcpListener, node: Arc<NodeContext>, write_timeout: Duration) -> LimitedListener {
        LimitedListener { inner, node, write_timeout }
    }
}

impl axum::serve::Listener for LimitedListener {
    type Io = GuardedStream;
    type Addr = std::net::SocketAddr;

    async fn accept(&mut self) -> (GuardedStream, std::net::SocketAddr) {
        loop {
            let (stream, addr) = match self.inner.accept().await {
                Ok(x) => x,
                Err(e) => {
                    warn!(error = %e, "http accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            let Some(permit) = self.node.try_connection() else {
                warn!(peer = %addr, "http connection refused: limits.max_connections reached");
                continue;
            };
            let _ = stream.set_nodelay(true);
            let open = self.node.metrics.connections_open.with_label_values(&["http"]);
            open.inc();
            return (
                GuardedStream {
                    inner: stream,
                    _permit: permit,
                    open,
                    write_timeout: self.write_timeout,
                    stalled: None,
                },
                addr,
            );
        }
    }

    fn local_addr(&self) -> io::Result<std::net::SocketAddr> {
        self.inner.local_addr()
    }
}

/// A TCP stream holding a connection permit, with a write timeout.
pub struct GuardedStream {
    inner: TcpStream,
    _permit: OwnedSemaphorePermit,
    open: prometheus::IntGauge,
    write_timeout: Duration,
    stalled: Option<Pin<Box<Sleep>>>,
}

impl Drop for GuardedStream {
    fn drop(&mut self) {
        self.open.dec();
    }
}

impl GuardedStream {
    fn check_stall(&mut self, cx: &mut Context<'_>) -> Poll<io::Error> {
        let timeout = self.write_timeout;
        let sleep = self.stalled.get_or_insert_with(|| Box::pin(tokio::time::sleep(timeout)));
        match sleep.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(io::Error::new(
                io::ErrorKind::TimedOut,
                format!("write blocked for {timeout:?}: slow player disconnected"),
            )),
            Poll::Pending => Poll::Pending,
        }
    }
}

use std::future::Future;

impl AsyncRead for GuardedStream {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for GuardedStream {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        match Pin::new(&mut self.inner).poll_write(cx, buf) {
            Poll::Ready(r) => {
                self.stalled = None;
                Poll::Ready(r)
            }
            Poll::Pending => self.check_stall(cx).map(Err),
        }
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match Pin::new(&mut self.inner).poll_write_vectored(cx, bufs) {
            Poll::Ready(r) => {
                self.stalled = None;
                Poll::Ready(r)
            }
            Poll::Pending => self.check_stall(cx).map(Err),
        }
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}
