//! The listener's own HTTP/1.1 keep-alive loop for live HLS: playlists, blocking reloads, parts, segments and init
//! segments, answered on the connection that asked, without hyper.
//!
//! An LL-HLS player keeps one connection and parks a blocking playlist reload on it about every part (0.2 s), so a
//! node with many players holds about as many parked requests as players. Through hyper each costs its
//! connection's two fixed 8 KiB buffers, hyper's connection state and an axum request; here it costs the socket and
//! the answer's future: no read buffer while a request waits (the next head is read into a buffer allocated once
//! bytes are ready), none while the connection idles between requests.
//!
//! The answers are the axum route's (`hls_answer`), with the edge's CORS header, `content-length`, `date`
//! and `connection: close` when the connection ends. A connection stays here while its requests are plain `GET`s of
//! live HLS (see [`classify`]) of applications without signed play or play hooks (`checked_play`); the first
//! other request goes to hyper with its head, as a first request does. Time limits are hyper's: a later request
//! head is due within `http.idle_timeout_secs` of the previous answer, and a write blocked for
//! `stream.slow_player_timeout_secs` ends the connection. At shutdown, an idle connection closes at once, and one
//! being answered closes after its answer.

use std::sync::Arc;
use std::time::Duration;

use axum::http::{header, HeaderName};
use axum::response::Response;
use bytes::{Buf, BufMut, BytesMut};
use futures_util::StreamExt;
use tokio::io::AsyncWriteExt;
use tracing::debug;

use super::listener::{checked_play, classify, GuardedStream, HlsRequest, Sniffed, SNIFF_MAX};
use crate::servers::NodeContext;
use crate::shutdown::ShutdownSignal;

/// A body up to this size goes out in the same write as its head (one TCP segment for a playlist, with
/// `TCP_NODELAY`); a larger one follows it in a write of its own.
const COALESCE: usize = 16 * 1024;

/// Answers `req` and the live HLS requests that follow it on `conn`. `None` when the connection has ended;
/// otherwise the connection and the bytes read of its next request, which is for hyper.
pub(super) async fn serve(
    mut conn: GuardedStream,
    mut req: HlsRequest,
    node: &Arc<NodeContext>,
    shutdown: &mut ShutdownSignal,
) -> Option<(GuardedStream, BytesMut)> {
    let idle = crate::config::secs(node.config.http.idle_timeout_secs);
    loop {
        let resp = super::hls_answer(node, &req.app, &req.name, &req.file, &req.query).await;
        let close = req.close || shutdown.is_triggered();
        drop(req);
        if let Err(e) = answer(&mut conn, resp, close, node).await {
            debug!(error = %e, "http connection ended while answering live HLS");
            return None;
        }
        if close {
            return None;
        }
        let (head, verdict) = next_head(&conn, idle, node.config.http.max_path_len, shutdown).await?;
        match verdict {
            Sniffed::Hls(next) if !checked_play(node, &next.app) => req = next,
            _ => return Some((conn, head)),
        }
    }
}

/// Waits for the connection's next request head (within `idle`), reading nothing into memory until bytes are
/// there. `None` when the client closed, stayed silent or dribbled past `idle`, or the node is shutting down.
async fn next_head(
    conn: &GuardedStream,
    idle: Duration,
    max_path_len: usize,
    shutdown: &mut ShutdownSignal,
) -> Option<(BytesMut, Sniffed)> {
    let deadline = tokio::time::Instant::now() + idle;
    let mut head = BytesMut::new();
    loop {
        tokio::select! {
            _ = shutdown.recv() => return None,
            ready = tokio::time::timeout_at(deadline, conn.tcp().readable()) => match ready {
                Ok(Ok(())) => {}
                Ok(Err(_)) => return None,
                Err(_) => {
                    debug!(timeout = ?idle, "http connection closed: no next request head in time");
                    return None;
                }
            },
        }
        if head.capacity() - head.len() < 512 {
            head.reserve(2048);
        }
        match conn.tcp().try_read_buf(&mut head) {
            Ok(0) => return None,
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
            Err(_) => return None,
        }
        match classify(&head, max_path_len) {
            Sniffed::Partial if head.len() < SNIFF_MAX => continue,
            verdict => return Some((head, verdict)),
        }
    }
}

/// Writes `resp` as an HTTP/1.1 answer: its status and headers, the edge's CORS header, `content-length`, `date`,
/// `connection: close` when `close`; then its body. A body whose length is not known ahead (a preload-hinted part
/// sent as it is produced) goes out as it comes: chunked, or delimited by the connection's close when `close`.
async fn answer(conn: &mut GuardedStream, resp: Response, close: bool, node: &NodeContext) -> std::io::Result<()> {
    let (parts, body) = resp.into_parts();
    let streamed = axum::body::HttpBody::size_hint(&body).exact().is_none();
    let (body, mut rest) = match streamed {
        false => (axum::body::to_bytes(body, usize::MAX).await.map_err(std::io::Error::other)?, None),
        true => (bytes::Bytes::new(), Some(body.into_data_stream())),
    };
    let skip: [HeaderName; 5] = [
        header::CONTENT_LENGTH,
        header::CONNECTION,
        header::DATE,
        header::ACCESS_CONTROL_ALLOW_ORIGIN,
        header::TRANSFER_ENCODING,
    ];
    let mut out = BytesMut::with_capacity(256 + if body.len() <= COALESCE { body.len() } else { 0 });
    let reason = parts.status.canonical_reason().unwrap_or("");
    out.put_slice(format!("HTTP/1.1 {} {reason}\r\n", parts.status.as_u16()).as_bytes());
    for (name, value) in parts.headers.iter().filter(|(n, _)| !skip.contains(n)) {
        out.put_slice(name.as_str().as_bytes());
        out.put_slice(b": ");
        out.put_slice(value.as_bytes());
        out.put_slice(b"\r\n");
    }
    let origin = super::cors_origin(&node.config.http.cors_origin);
    let date = httpdate::fmt_http_date(std::time::SystemTime::now());
    out.put_slice(format!("access-control-allow-origin: {origin}\r\ndate: {date}\r\n").as_bytes());
    match (&rest, close) {
        (None, _) => out.put_slice(format!("content-length: {}\r\n", body.len()).as_bytes()),
        (Some(_), false) => out.put_slice(b"transfer-encoding: chunked\r\n"),
        (Some(_), true) => {} // the close ends the body
    }
    if close {
        out.put_slice(b"connection: close\r\n");
    }
    out.put_slice(b"\r\n");
    if let Some(data) = rest.as_mut() {
        conn.write_all(&out).await?;
        conn.flush().await?;
        while let Some(chunk) = data.next().await {
            let chunk = chunk.map_err(std::io::Error::other)?;
            if chunk.is_empty() {
                continue;
            }
            if close {
                conn.write_all(&chunk).await?;
            } else {
                // The chunk's frame around its shared bytes (no copy), in one vectored write where the socket has it.
                let size = bytes::Bytes::from(format!("{:x}\r\n", chunk.len()));
                let mut framed = size.chain(chunk).chain(&b"\r\n"[..]);
                conn.write_all_buf(&mut framed).await?;
            }
            conn.flush().await?;
        }
        if !close {
            conn.write_all(b"0\r\n\r\n").await?;
        }
    } else if body.len() <= COALESCE {
        out.put_slice(&body);
        conn.write_all(&out).await?;
    } else {
        conn.write_all(&out).await?;
        conn.write_all(&body).await?;
    }
    conn.flush().await
}
