//! The HTTP listener: a node-wide connection limit, `TCP_NODELAY`, a write timeout, and the HTTP-FLV fast path;
//! and the HTTPS listener over the same guards ([`serve_tls`]).
//!
//! Every accepted connection is sniffed first: its request head is read (within `http.header_timeout_secs`, at most
//! [`SNIFF_MAX`] bytes) and parsed with httparse, hyper's own parser ([`classify`]). A plain `GET
//! /{app}/{name}.flv` of a live stream is then played right here ([`crate::servers::http::flv::play_direct`]): a
//! long-lived player costs its feed and socket, not hyper's connection buffers (two fixed 8 KiB buffers) and an
//! axum request too. Every other connection (and an `.flv` of a stream that is not live: axum answers 404) goes
//! to axum, the bytes already read replayed in front of the socket. A plain `GET /{app}/{name}/{file}` of live HLS
//! is answered by [`super::direct`]'s keep-alive loop, which hands the connection to axum the same way at its
//! first request of another kind.
//!
//! A player that stops reading leaves its socket's send buffer full; every write then stays pending. The write
//! timeout (`stream.slow_player_timeout_secs`) turns that into an error, so hyper closes the connection and the
//! player's feed is dropped. Its frames never queued anywhere but in the shared ring, which it has left.
//!
//! Time limits on what a client sends: the first request head within `http.header_timeout_secs` (the sniffer's
//! deadline, however slowly it is dribbled); then, for a connection served by hyper ([`serve`]), every later
//! request head within `http.idle_timeout_secs` of the connection going idle (hyper's header timer, which axum's
//! own `serve` leaves without a timer), and no silence in either direction longer than that (a request body
//! that stalls; a response being written is activity).

use std::collections::HashMap;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::time::Sleep;
use tracing::{debug, warn};

use crate::servers::hooks::HookEvent;
use crate::servers::{ConnectionSlot, NodeContext};
use crate::shutdown::ShutdownSignal;
use crate::stream::{Protocol, StreamKey};

/// Bytes of a request head the sniffer reads at most before it leaves the connection to axum.
pub const SNIFF_MAX: usize = 8 * 1024;
/// Sniffed connections waiting for axum to take them.
const HANDOVER_QUEUE: usize = 256;

/// An axum [`axum::serve::Listener`] that enforces the connection limit and plays HTTP-FLV itself (see the
/// module docs). Accepting and sniffing run in their own tasks; axum takes the connections meant for it.
pub struct LimitedListener {
    rx: mpsc::Receiver<(GuardedStream, std::net::SocketAddr)>,
    local: Option<std::net::SocketAddr>,
}

impl LimitedListener {
    /// Starts accepting on a bound listener, until `shutdown`.
    pub fn new(
        inner: TcpListener,
        node: Arc<NodeContext>,
        write_timeout: Duration,
        shutdown: ShutdownSignal,
    ) -> LimitedListener {
        let local = inner.local_addr().ok();
        let (tx, rx) = mpsc::channel(HANDOVER_QUEUE);
        tokio::spawn(accept_loop(inner, node, write_timeout, tx, shutdown));
        LimitedListener { rx, local }
    }
}

impl axum::serve::Listener for LimitedListener {
    type Io = GuardedStream;
    type Addr = std::net::SocketAddr;

    async fn accept(&mut self) -> (GuardedStream, std::net::SocketAddr) {
        match self.rx.recv().await {
            Some(conn) => conn,
            // The accept loop has stopped (shutdown): nothing more will come.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> io::Result<std::net::SocketAddr> {
        self.local.ok_or_else(|| io::Error::other("listener has no local address"))
    }
}

async fn accept_loop(
    inner: TcpListener,
    node: Arc<NodeContext>,
    write_timeout: Duration,
    tx: mpsc::Sender<(GuardedStream, std::net::SocketAddr)>,
    mut shutdown: ShutdownSignal,
) {
    loop {
        let (stream, addr) = tokio::select! {
            _ = shutdown.recv() => return,
            r = inner.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    warn!(error = %e, "http accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let Some(permit) = node.try_http_connection(addr.ip()) else { continue };
        let _ = stream.set_nodelay(true);
        let conn = GuardedStream::new(stream, permit, &node, "http", write_timeout);
        tokio::spawn(sniff(conn, addr, node.clone(), tx.clone(), shutdown.clone()));
    }
}

/// Reads a connection's request head; plays a live HTTP-FLV request itself, hands everything else to axum.
async fn sniff(
    mut conn: GuardedStream,
    addr: std::net::SocketAddr,
    node: Arc<NodeContext>,
    tx: mpsc::Sender<(GuardedStream, std::net::SocketAddr)>,
    mut shutdown: ShutdownSignal,
) {
    let mut head = BytesMut::with_capacity(2048);
    let head_timeout = crate::config::secs(node.config.http.header_timeout_secs);
    let deadline = tokio::time::Instant::now() + head_timeout;
    let verdict = loop {
        if head.len() == head.capacity() {
            head.reserve(2048);
        }
        let read = tokio::select! {
            _ = shutdown.recv() => return,
            r = tokio::time::timeout_at(deadline, conn.inner.read_buf(&mut head)) => r,
        };
        match read {
            Err(_) => {
                debug!(peer = %addr, timeout = ?head_timeout, "http connection closed: no request head in time");
                return;
            }
            Ok(Ok(0)) | Ok(Err(_)) => return,
            Ok(Ok(_)) => {}
        }
        match classify(&head, node.config.http.max_path_len) {
            Sniffed::Partial if head.len() < SNIFF_MAX => continue,
            v => break v,
        }
    };
    if conn._permit.probe_only {
        // Admitted past limits.max_connections for a probe only: answered here, then closed.
        let path = head[..].split(|b| *b == b' ').nth(1).unwrap_or_default();
        let ready = node.readiness().is_ok();
        let alive = path != b"/healthz" || node.streams.alive(super::LIVENESS_DEADLINE).await.is_ok();
        let answer: &[u8] = match path {
            b"/healthz" if alive => b"HTTP/1.1 200 OK\r\ncontent-length: 3\r\nconnection: close\r\n\r\nok\n",
            b"/healthz" => {
                b"HTTP/1.1 503 Service Unavailable\r\ncontent-length: 9\r\nconnection: close\r\n\r\nnot live\n"
            }
            b"/readyz" if ready => b"HTTP/1.1 200 OK\r\ncontent-length: 6\r\nconnection: close\r\n\r\nready\n",
            b"/readyz" => {
                b"HTTP/1.1 503 Service Unavailable\r\ncontent-length: 10\r\nconnection: close\r\n\r\nnot ready\n"
            }
            _ => {
                node.refused(addr.ip(), "http", "max_connections");
                b"HTTP/1.1 503 Service Unavailable\r\nretry-after: 1\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
            }
        };
        let _ =
            tokio::time::timeout(Duration::from_secs(2), tokio::io::AsyncWriteExt::write_all(&mut conn.inner, answer))
                .await;
        return;
    }
    // Signed play and play hooks are checked by the axum handlers: such a request takes the usual path.
    let (mut conn, head) = match verdict {
        Sniffed::Flv { key, chunked } if !checked_play(&node, key.app()) => {
            let sub = match node.streams.find(&key).await {
                Some(h) => h.subscribe(Protocol::Flv).await,
                None => None,
            };
            if let Some(sub) = sub {
                drop(head);
                // Boxed, here and below: the sniffer's own future (what every connection holds while its first head
                // comes) stays small whatever the path taken needs.
                Box::pin(crate::servers::http::flv::play_direct(conn, sub, key, chunked, node, shutdown)).await;
                return;
            }
            (conn, head)
        }
        Sniffed::Hls(req) if !checked_play(&node, &req.app) => {
            drop(head);
            // Served here while its requests are live HLS; the first other request goes to axum, with its head.
            match Box::pin(super::direct::serve(conn, req, &node, &mut shutdown)).await {
                Some(rest) => rest,
                None => return,
            }
        }
        _ => (conn, head),
    };
    drop(shutdown);
    conn.prefix = head.freeze();
    let idle = crate::config::secs(node.config.http.idle_timeout_secs);
    conn.idle = Some((idle, Box::pin(tokio::time::sleep(idle))));
    let _ = tx.send((conn, addr)).await;
}

/// Whether playing `app` needs checks only the axum route makes (a signed play URL, a play or stop hook).
pub(super) fn checked_play(node: &NodeContext, app: &str) -> bool {
    node.play_signed(app) || node.hooks.has(HookEvent::Play) || node.hooks.has(HookEvent::Stop)
}

/// Serves `app` on the connections `listener` hands over, with hyper's HTTP/1.1 (keep-alive), every request head
/// after the first due within `http.idle_timeout_secs` of the connection going idle (see the module docs). At
/// `shutdown` the listener stops accepting, every connection finishes the response it is writing and closes, and
/// this returns once all have.
pub async fn serve(mut listener: LimitedListener, app: axum::Router, idle: Duration, mut shutdown: ShutdownSignal) {
    use axum::serve::Listener;
    let (close_tx, close_rx) = tokio::sync::watch::channel(());
    let (open_tx, open_rx) = tokio::sync::watch::channel(());
    loop {
        let (io, peer) = tokio::select! {
            _ = shutdown.recv() => break,
            c = listener.accept() => c,
        };
        let busy = io.busy.clone();
        let service = Counted { inner: hyper_util::service::TowerToHyperService::new(app.clone()), busy, peer };
        let (mut close, open) = (close_rx.clone(), open_rx.clone());
        tokio::spawn(async move {
            let mut builder = hyper::server::conn::http1::Builder::new();
            builder.timer(hyper_util::rt::TokioTimer::new()).header_read_timeout(idle).keep_alive(true);
            let conn = builder.serve_connection(hyper_util::rt::TokioIo::new(io), service);
            tokio::pin!(conn);
            drive(conn, &mut close, |c| c.graceful_shutdown(), "http").await;
            drop(open);
        });
    }
    drop((close_tx, open_rx));
    open_tx.closed().await;
}

/// Drives a hyper connection to its end; when `close` changes (shutdown), asks it once to finish what it writes
/// and close (`graceful`).
async fn drive<C, E>(
    mut conn: Pin<&mut C>,
    close: &mut tokio::sync::watch::Receiver<()>,
    graceful: impl Fn(Pin<&mut C>),
    what: &str,
) where
    C: Future<Output = Result<(), E>>,
    E: std::fmt::Display,
{
    let mut closing = false;
    loop {
        tokio::select! {
            r = conn.as_mut() => {
                if let Err(e) = r {
                    debug!(error = %e, listener = what, "connection ended");
                }
                return;
            }
            _ = close.changed(), if !closing => {
                closing = true;
                graceful(conn.as_mut());
            }
        }
    }
}

/// A connection's service: it gives each request the client's address ([`super::PeerAddr`], in the request's
/// extensions: the router itself is shared, not re-layered per connection) and counts the requests being handled
/// (see [`GuardedStream`]'s `busy`).
struct Counted<S> {
    inner: S,
    busy: Arc<AtomicUsize>,
    peer: std::net::SocketAddr,
}

/// Uncounts a request when its handling ends (or is dropped).
struct Handling(Arc<AtomicUsize>);

impl Drop for Handling {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

impl<S, B> hyper::service::Service<hyper::Request<B>> for Counted<S>
where
    S: hyper::service::Service<hyper::Request<B>>,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<S::Response, S::Error>> + Send>>;

    fn call(&self, mut req: hyper::Request<B>) -> Self::Future {
        req.extensions_mut().insert(super::PeerAddr(self.peer));
        self.busy.fetch_add(1, Ordering::Relaxed);
        let handling = Handling(self.busy.clone());
        let fut = self.inner.call(req);
        Box::pin(async move {
            let r = fut.await;
            drop(handling);
            r
        })
    }
}

/// What a connection's first bytes are.
#[derive(Debug, PartialEq, Eq)]
pub enum Sniffed {
    /// A complete head of a plain `GET /{app}/{name}.flv` (valid key, no body, no upgrade, path within the
    /// limit, nothing percent-encoded); `chunked`: HTTP/1.1 (HTTP/1.0 gets a body delimited by the close).
    Flv {
        /// The stream.
        key: StreamKey,
        /// Whether the response may be chunked.
        chunked: bool,
    },
    /// A complete head of a plain `GET /{app}/{name}/{file}` of live HLS (a valid key, an application other than
    /// `api`, `vod` and `console`, no body, no upgrade, path within the limit, nothing percent-encoded): answered
    /// by the listener's own keep-alive loop ([`super::direct`]).
    Hls(HlsRequest),
    /// Anything else: for axum (which also answers malformed requests).
    Other,
    /// An incomplete head.
    Partial,
}

/// A live HLS request, as [`classify`] read it.
#[derive(Debug, PartialEq, Eq)]
pub struct HlsRequest {
    /// The stream's application.
    pub app: String,
    /// The stream's name.
    pub name: String,
    /// The file: a playlist, a segment, a part or an init segment.
    pub file: String,
    /// The query's pairs, decoded as axum's `Query` decodes them (`_HLS_msn`, `_HLS_part`, `_HLS_skip`).
    pub query: HashMap<String, String>,
    /// The connection closes after the answer (HTTP/1.0, or `Connection: close`).
    pub close: bool,
}

/// Classifies the bytes a connection has sent so far (see [`Sniffed`]). Pure: no I/O, so it is fuzzed.
pub fn classify(head: &[u8], max_path_len: usize) -> Sniffed {
    let mut headers = [httparse::EMPTY_HEADER; 64];
    let mut req = httparse::Request::new(&mut headers);
    let len = match req.parse(head) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) => return Sniffed::Partial,
        Err(_) => return Sniffed::Other,
    };
    // Bytes after the head (a pipelined request, a body) are for hyper to judge.
    if len != head.len() || req.method != Some("GET") {
        return Sniffed::Other;
    }
    let Some(target) = req.path else { return Sniffed::Other };
    let path = target.split('?').next().unwrap_or_default();
    if path.len() > max_path_len || path.contains('%') {
        return Sniffed::Other;
    }
    let Some(path) = path.strip_prefix('/') else { return Sniffed::Other };
    // A body, an upgrade or an expectation is for hyper to handle.
    let for_hyper = |h: &httparse::Header| {
        (h.name.eq_ignore_ascii_case("content-length") && h.value != b"0")
            || ["transfer-encoding", "upgrade", "expect"].iter().any(|n| h.name.eq_ignore_ascii_case(n))
    };
    if req.headers.iter().any(for_hyper) {
        return Sniffed::Other;
    }
    let mut parts = path.split('/');
    match (parts.next(), parts.next(), parts.next(), parts.next()) {
        (Some(app), Some(file), None, _) => {
            let Some(name) = file.strip_suffix(".flv") else { return Sniffed::Other };
            let Ok(key) = StreamKey::new(app, name) else { return Sniffed::Other };
            Sniffed::Flv { key, chunked: req.version == Some(1) }
        }
        (Some(app), Some(name), Some(file), None) => {
            if matches!(app, "api" | "vod" | "console") || file.is_empty() || StreamKey::new(app, name).is_err() {
                return Sniffed::Other;
            }
            // The query as the axum route reads it; one axum would refuse is left to axum to answer.
            let Ok(uri) = axum::http::Uri::try_from(target) else { return Sniffed::Other };
            let Ok(axum::extract::Query(query)) = axum::extract::Query::<HashMap<String, String>>::try_from_uri(&uri)
            else {
                return Sniffed::Other;
            };
            let close_asked = req.headers.iter().any(|h| {
                h.name.eq_ignore_ascii_case("connection")
                    && h.value.split(|b| *b == b',').any(|t| t.trim_ascii().eq_ignore_ascii_case(b"close"))
            });
            Sniffed::Hls(HlsRequest {
                app: app.to_string(),
                name: name.to_string(),
                file: file.to_string(),
                query,
                close: req.version != Some(1) || close_asked,
            })
        }
        _ => Sniffed::Other,
    }
}

/// A TCP stream holding a connection permit, with a write timeout.
pub struct GuardedStream {
    inner: TcpStream,
    _permit: ConnectionSlot,
    open: prometheus::IntGauge,
    write_timeout: Duration,
    stalled: Option<Pin<Box<Sleep>>>,
    /// Bytes the sniffer read, replayed before the socket's.
    prefix: Bytes,
    /// For a connection served by hyper: the longest silence (no byte read or written) allowed while a read
    /// waits, and its timer.
    idle: Option<(Duration, Pin<Box<Sleep>>)>,
    /// Requests of this connection being handled (set by [`serve`]): a handler that waits (a blocking playlist
    /// reload, a storage read) is not a silent client, though hyper reads meanwhile to notice a close.
    busy: Arc<AtomicUsize>,
}

impl Drop for GuardedStream {
    fn drop(&mut self) {
        self.open.dec();
    }
}

impl GuardedStream {
    /// An accepted connection of `listener` (`http`, `https`), counted in `strom_connections_open` while it lives.
    fn new(
        inner: TcpStream,
        permit: ConnectionSlot,
        node: &NodeContext,
        listener: &str,
        write_timeout: Duration,
    ) -> GuardedStream {
        let open = node.metrics.connections_open.with_label_values(&[listener]);
        open.inc();
        GuardedStream {
            inner,
            _permit: permit,
            open,
            write_timeout,
            stalled: None,
            prefix: Bytes::new(),
            idle: None,
            busy: Arc::default(),
        }
    }

    /// The socket, for a loop that waits for a request head without a read buffer ([`super::direct`]).
    pub(super) fn tcp(&self) -> &TcpStream {
        &self.inner
    }

    /// Bytes moved: the silence starts again.
    fn active(&mut self) {
        if let Some((limit, timer)) = self.idle.as_mut() {
            timer.as_mut().reset(tokio::time::Instant::now() + *limit);
        }
    }

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
        if !self.prefix.is_empty() {
            let n = self.prefix.len().min(buf.remaining());
            buf.put_slice(&self.prefix[..n]);
            self.prefix.advance(n);
            if self.prefix.is_empty() {
                self.prefix = Bytes::new(); // release the sniffed head
            }
            self.active();
            return Poll::Ready(Ok(()));
        }
        let before = buf.filled().len();
        match Pin::new(&mut self.inner).poll_read(cx, buf) {
            Poll::Ready(r) => {
                if buf.filled().len() > before {
                    self.active();
                }
                Poll::Ready(r)
            }
            Poll::Pending => {
                if self.busy.load(Ordering::Relaxed) > 0 {
                    self.active();
                    return Poll::Pending;
                }
                let Some((limit, timer)) = self.idle.as_mut() else { return Poll::Pending };
                match timer.as_mut().poll(cx) {
                    Poll::Ready(()) => Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        format!("nothing sent or received for {limit:?}: idle connection closed"),
                    ))),
                    Poll::Pending => Poll::Pending,
                }
            }
        }
    }
}

impl AsyncWrite for GuardedStream {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        match Pin::new(&mut self.inner).poll_write(cx, buf) {
            Poll::Ready(r) => {
                self.stalled = None;
                self.active();
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
                self.active();
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

/// Serves `app` over TLS (`https.listen`): HTTP/1.1 and HTTP/2 by ALPN, with the same connection limits, write
/// timeout and silence limit as the plain listener (the TLS session runs over a [`GuardedStream`]); the TLS
/// handshake is due within `http.header_timeout_secs`. HTTP-FLV is played through axum here (no fast path). At
/// `shutdown` it stops accepting, and every connection finishes what it writes and closes.
pub async fn serve_tls(
    inner: TcpListener,
    node: Arc<NodeContext>,
    app: axum::Router,
    acceptor: tokio_rustls::TlsAcceptor,
    mut shutdown: ShutdownSignal,
) {
    let write_timeout = crate::config::secs(node.config.stream.slow_player_timeout_secs);
    let idle = crate::config::secs(node.config.http.idle_timeout_secs);
    let handshake = crate::config::secs(node.config.http.header_timeout_secs);
    let (close_tx, close_rx) = tokio::sync::watch::channel(());
    let (open_tx, open_rx) = tokio::sync::watch::channel(());
    loop {
        let (stream, addr) = tokio::select! {
            _ = shutdown.recv() => break,
            r = inner.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    warn!(error = %e, "https accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let Some(permit) = node.try_connection(addr.ip(), "https") else { continue };
        let _ = stream.set_nodelay(true);
        let mut conn = GuardedStream::new(stream, permit, &node, "https", write_timeout);
        conn.idle = Some((idle, Box::pin(tokio::time::sleep(idle))));
        let busy = conn.busy.clone();
        let service = Counted { inner: hyper_util::service::TowerToHyperService::new(app.clone()), busy, peer: addr };
        let acceptor = acceptor.clone();
        let (mut close, open) = (close_rx.clone(), open_rx.clone());
        tokio::spawn(async move {
            let tls = match tokio::time::timeout(handshake, acceptor.accept(conn)).await {
                Ok(Ok(tls)) => tls,
                Ok(Err(e)) => return debug!(peer = %addr, error = %e, "TLS handshake failed"),
                Err(_) => return debug!(peer = %addr, "TLS handshake not completed in time"),
            };
            let mut builder = hyper_util::server::conn::auto::Builder::new(hyper_util::rt::TokioExecutor::new());
            builder.http1().timer(hyper_util::rt::TokioTimer::new()).header_read_timeout(idle).keep_alive(true);
            // No HTTP/2 pings: their answers would count as activity and keep an idle connection past the
            // silence limit. At most 100 requests at once on one connection (LL-HLS needs a handful).
            builder.http2().timer(hyper_util::rt::TokioTimer::new()).max_concurrent_streams(100);
            let conn = builder.serve_connection_with_upgrades(hyper_util::rt::TokioIo::new(tls), service);
            tokio::pin!(conn);
            drive(conn, &mut close, |c| c.graceful_shutdown(), "https").await;
            drop(open);
        });
    }
    drop((close_tx, open_rx));
    open_tx.closed().await;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn flv(app: &str, name: &str, chunked: bool) -> Sniffed {
        Sniffed::Flv { key: StreamKey::new(app, name).unwrap(), chunked }
    }

    #[test]
    fn a_plain_get_of_an_flv_is_played_directly() {
        let c = |h: &str| classify(h.as_bytes(), 1024);
        assert_eq!(c("GET /live/test.flv HTTP/1.1\r\nHost: x\r\n\r\n"), flv("live", "test", true));
        assert_eq!(c("GET /live/test.flv?token=abc HTTP/1.1\r\nHost: x\r\n\r\n"), flv("live", "test", true));
        assert_eq!(c("GET /live/test.flv HTTP/1.0\r\n\r\n"), flv("live", "test", false));
        assert_eq!(c("GET /live/test.flv HTTP/1.1\r\nContent-Length: 0\r\n\r\n"), flv("live", "test", true));
    }

    fn hls(file: &str, query: &[(&str, &str)], close: bool) -> Sniffed {
        Sniffed::Hls(HlsRequest {
            app: "live".into(),
            name: "test".into(),
            file: file.into(),
            query: query.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
            close,
        })
    }

    #[test]
    fn a_plain_get_of_live_hls_is_answered_directly() {
        let c = |h: &str| classify(h.as_bytes(), 1024);
        assert_eq!(c("GET /live/test/index.m3u8 HTTP/1.1\r\nHost: x\r\n\r\n"), hls("index.m3u8", &[], false));
        assert_eq!(
            c("GET /live/test/index.m3u8?_HLS_msn=12&_HLS_part=3&_HLS_skip=YES HTTP/1.1\r\n\r\n"),
            hls("index.m3u8", &[("_HLS_msn", "12"), ("_HLS_part", "3"), ("_HLS_skip", "YES")], false)
        );
        // Decoded as axum's `Query` decodes it.
        assert_eq!(c("GET /live/test/a.m4s?x=a%20b+c HTTP/1.1\r\n\r\n"), hls("a.m4s", &[("x", "a b c")], false));
        assert_eq!(c("GET /live/test/a-1.m4s HTTP/1.0\r\n\r\n"), hls("a-1.m4s", &[], true));
        assert_eq!(
            c("GET /live/test/a-1.m4s HTTP/1.1\r\nConnection: keep-alive, Close\r\n\r\n"),
            hls("a-1.m4s", &[], true)
        );
        // Any file name: the route answers a bad one (400) as it would through axum.
        assert_eq!(c("GET /live/test/..x HTTP/1.1\r\n\r\n"), hls("..x", &[], false));
    }

    #[test]
    fn everything_else_goes_to_axum() {
        let c = |h: &str| classify(h.as_bytes(), 64);
        for head in [
            "HEAD /live/test.flv HTTP/1.1\r\n\r\n",
            "POST /live/test.flv HTTP/1.1\r\nContent-Length: 1\r\n\r\nx",
            "GET /live/test.flv HTTP/1.1\r\nContent-Length: 3\r\n\r\n",
            "GET /live/test.flv HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n",
            "GET /live/test.flv HTTP/1.1\r\nUpgrade: websocket\r\nConnection: upgrade\r\n\r\n",
            "GET /live/test.flv HTTP/1.1\r\nExpect: 100-continue\r\n\r\n",
            "GET /live/test.flv HTTP/1.1\r\n\r\nGET /live/test.flv HTTP/1.1\r\n\r\n",
            "GET /live/a%20b.flv HTTP/1.1\r\n\r\n",
            "GET /live/.hidden.flv HTTP/1.1\r\n\r\n",
            "GET /live/test.mp4 HTTP/1.1\r\n\r\n",
            "GET /test.flv HTTP/1.1\r\n\r\n",
            "GET http://host/live/test.flv HTTP/1.1\r\n\r\n",
            "GET /live/aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa.flv HTTP/1.1\r\n\r\n",
            "\x16\x03\x01\x02\x00\x01\x00\x01\x7c\x03\x03",
            "GET /live/test.flv HTTP/2.0\r\n\r\n",
            "HEAD /live/test/index.m3u8 HTTP/1.1\r\n\r\n",
            "GET /api/v1/streams HTTP/1.1\r\n\r\n",
            "GET /vod/abc/index.m3u8 HTTP/1.1\r\n\r\n",
            "GET /console/app/x.js HTTP/1.1\r\n\r\n",
            "GET /live/te%73t/index.m3u8 HTTP/1.1\r\n\r\n",
            "GET /live/.x/index.m3u8 HTTP/1.1\r\n\r\n",
            "GET /live/test/ HTTP/1.1\r\n\r\n",
            "GET /live/test/a/b.m4s HTTP/1.1\r\n\r\n",
            "GET /live/test/index.m3u8 HTTP/1.1\r\nContent-Length: 5\r\n\r\n",
            "GET /live/test/index.m3u8 HTTP/1.1\r\n\r\nGET /live/test/index.m3u8 HTTP/1.1\r\n\r\n",
        ] {
            assert_eq!(c(head), Sniffed::Other, "{head:?}");
        }
        assert_eq!(c("GET /live/test.flv HTTP/1.1\r\nHost: x\r\n"), Sniffed::Partial);
        assert_eq!(c("GET /live/te"), Sniffed::Partial);
        assert_eq!(c(""), Sniffed::Partial);
    }

    #[tokio::test]
    async fn axum_reads_the_sniffed_bytes_first() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let client = tokio::spawn(async move {
            use tokio::io::AsyncWriteExt;
            let mut c = TcpStream::connect(addr).await.unwrap();
            c.write_all(b"world").await.unwrap();
        });
        let (inner, _) = listener.accept().await.unwrap();
        let mut conn = GuardedStream {
            inner,
            _permit: ConnectionSlot::detached(Arc::new(tokio::sync::Semaphore::new(1)).try_acquire_owned().unwrap()),
            open: prometheus::IntGauge::new("open", "open").unwrap(),
            write_timeout: Duration::from_secs(1),
            stalled: None,
            prefix: Bytes::from_static(b"hello "),
            idle: None,
            busy: Arc::default(),
        };
        client.await.unwrap();
        let mut got = Vec::new();
        conn.read_to_end(&mut got).await.unwrap();
        assert_eq!(got, b"hello world");
    }
}
