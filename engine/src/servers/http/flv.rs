//! HTTP-FLV: `GET /{app}/{name}.flv` streams the live FLV: file header, `onMetaData`, sequence headers, the GOP
//! cache, then live tags — each tag a small per-player header plus the frame's shared payload.
//!
//! Two ways in. A plain `GET` of a live stream is recognised by the listener before hyper sees the connection
//! ([`crate::servers::http::listener`]) and played by [`play_direct`]: a chunked response written straight to the socket,
//! one vectored write per batch, so a player costs its feed and its socket (~10 KiB), not hyper's connection
//! buffers and an axum request as well (~30 KiB). Everything else — `HEAD`, percent-encoded names, a head that
//! arrives in pieces past the sniffer's limit, unknown streams (404) — reaches [`serve`] through axum, which
//! streams the same bytes.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use bytes::{Buf, BufMut, Bytes, BytesMut};
use prometheus::IntCounter;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tracing::{debug, info, info_span, Instrument};

use crate::bufqueue::BufQueue;
use crate::formats::flv::{file_header, previous_tag_size, tag_header, TAG_AUDIO, TAG_SCRIPT, TAG_VIDEO};
use crate::formats::MediaKind;
use crate::metrics::protocol;
use crate::servers::NodeContext;
use crate::shutdown::ShutdownSignal;
use crate::stream::{PlayerFeed, PlayerItem, Protocol, StreamKey, Subscription};

/// Items per batch at most.
const BATCH: usize = 64;
/// Payload bytes per batch at most (a join's GOP burst goes out in a few batches).
const BATCH_BYTES: usize = 256 * 1024;
/// Payloads up to this size are copied next to their tag header instead of being sent as their own chunk.
const INLINE_PAYLOAD: usize = 1024;
/// Queues grown beyond this (a join's GOP burst) are released once drained.
const KEEP: usize = 8;

/// How long an HTTP-FLV request for a stream that has no owner right now, but had one moments ago, waits for it.
const OWNERLESS_WAIT: Duration = Duration::from_secs(10);

/// Whether `key` was live in the cluster moments ago (its last playlist is still served) or this node has just
/// joined the cluster and does not know yet.
async fn recently_live(node: &NodeContext, key: &StreamKey) -> bool {
    node.cluster.as_ref().is_some_and(|c| c.warming_up()) || node.streams.hls(key).await.is_some()
}

/// The HTTP-FLV handler.
pub async fn serve(
    State(node): State<Arc<NodeContext>>,
    Path((app, file)): Path<(String, String)>,
    peer: Option<axum::Extension<super::PeerAddr>>,
    axum::extract::RawQuery(query): axum::extract::RawQuery,
) -> Response {
    let Some(name) = file.strip_suffix(".flv") else {
        return (StatusCode::NOT_FOUND, "not found\n").into_response();
    };
    let key = match StreamKey::new(&app, name) {
        Ok(k) => k,
        Err(e) => return (StatusCode::BAD_REQUEST, format!("{e}\n")).into_response(),
    };
    let mut sub = match node.streams.find(&key).await {
        Some(h) => h.subscribe(Protocol::Flv).await,
        None => None,
    };
    if sub.is_none() && recently_live(&node, &key).await {
        // The stream has no owner right now (its node went; its publisher is reconnecting to another) or this node
        // has just joined: a player reconnecting now waits for the stream to be back, as it would on the owner
        // during the reconnect grace, instead of being told it does not exist.
        let t = tokio::time::Instant::now();
        while sub.is_none() && t.elapsed() < OWNERLESS_WAIT {
            tokio::time::sleep(Duration::from_millis(250)).await;
            if let Some(h) = node.streams.find(&key).await {
                sub = h.subscribe(Protocol::Flv).await;
            }
        }
    }
    let Some(sub) = sub else {
        return (StatusCode::NOT_FOUND, "no such live stream\n").into_response();
    };
    let span = info_span!("flv", stream = %key, node = %node.config.node_name);
    span.in_scope(|| debug!("HTTP-FLV player attached"));
    let state = FlvBody::new(sub, &node);
    let queue = VecDeque::from([state.file_header()]);
    // The on_stop hook hears when the body is dropped: the player left or the stream ended.
    let call = crate::servers::hooks::HookCall {
        app: key.app().to_string(),
        stream: key.name().to_string(),
        client: peer.map(|p| p.0 .0),
        protocol: "flv",
        query,
        extra: None,
    };
    let stop = node.hooks.on_drop(crate::servers::hooks::HookEvent::Stop, call);
    let stream = futures_util::stream::unfold((state, queue, stop), |(mut st, mut q, stop)| async move {
        loop {
            if let Some(b) = q.pop_front() {
                st.egress.inc_by(b.len() as u64);
                return Some((Ok::<Bytes, std::io::Error>(b), (st, q, stop)));
            }
            if q.capacity() > KEEP {
                q = VecDeque::new(); // a join's GOP burst: do not keep its capacity per player
            }
            if !st.next_batch(|b| q.push_back(b)).await {
                return None;
            }
        }
    });
    ([(header::CONTENT_TYPE, "video/x-flv"), (header::CACHE_CONTROL, "no-cache, no-store")], Body::from_stream(stream))
        .into_response()
}

/// The response head of [`play_direct`]: what [`serve`] answers through axum (content type, no caching, the CORS
/// origin), framed by hand. HTTP/1.1 gets a chunked body, so a player can tell the stream's end (the last chunk)
/// from a broken connection; HTTP/1.0 a body that ends with the connection.
pub fn direct_head(cors_origin: &str, chunked: bool) -> String {
    let origin = super::cors_origin(cors_origin);
    format!(
        "HTTP/1.1 200 OK\r\ncontent-type: video/x-flv\r\ncache-control: no-cache, no-store\r\n\
         access-control-allow-origin: {origin}\r\n{}connection: close\r\n\r\n",
        if chunked { "transfer-encoding: chunked\r\n" } else { "" }
    )
}

/// Plays `sub` to a player whose request the listener has already read (see the module docs): the response head,
/// then the FLV, one vectored write per batch, until the stream ends (then the last chunk), the player leaves, a
/// write stalls for the player timeout (`io` enforces it), or the node shuts down.
pub async fn play_direct<S>(
    mut io: S,
    sub: Subscription,
    key: StreamKey,
    chunked: bool,
    node: Arc<NodeContext>,
    shutdown: ShutdownSignal,
) where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let span = info_span!("flv", stream = %key, node = %node.config.node_name);
    async move {
        debug!("HTTP-FLV player attached");
        match direct_loop(&mut io, sub, chunked, &node, shutdown).await {
            Ok(()) => debug!("HTTP-FLV player finished"),
            // The listener's write timeout: the player stopped reading (as an RTMP player's `slow_player`).
            Err(e) if e.kind() == std::io::ErrorKind::TimedOut => {
                node.metrics.slow_player_disconnects.inc();
                info!(reason = "slow_player", error = %e, "HTTP-FLV player disconnected");
            }
            Err(e) => debug!(error = %e, "HTTP-FLV player left"),
        }
        let _ = tokio::time::timeout(Duration::from_secs(1), io.shutdown()).await;
    }
    .instrument(span)
    .await
}

async fn direct_loop<S>(
    io: &mut S,
    sub: Subscription,
    chunked: bool,
    node: &NodeContext,
    shutdown: ShutdownSignal,
) -> std::io::Result<()>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let mut body = FlvBody::new(sub, node);
    // One queue, written out whole after each batch: the batch is rendered into it, then framed as one chunk.
    let mut q = BufQueue::new();
    q.push(body.file_header());
    let n = frame_chunk(&mut q, chunked);
    q.push_front(Bytes::from(direct_head(&node.config.http.cors_origin, chunked)));
    write_all(io, &mut q).await?;
    body.egress.inc_by(n as u64);
    // As for RTMP players: the shutdown future is polled only once armed or when the signal is set.
    let probe = shutdown.clone();
    let mut shutdown = shutdown;
    let stop = shutdown.recv();
    tokio::pin!(stop);
    let mut stop_armed = false;
    let mut scratch = [0u8; 64];
    loop {
        tokio::select! {
            biased;
            _ = &mut stop, if !stop_armed || probe.is_triggered() => return Ok(()),
            more = body.next_batch(|b| q.push(b)) => {
                let ended = !more || body.done;
                let n = frame_chunk(&mut q, chunked);
                if ended && chunked {
                    q.push(Bytes::from_static(b"0\r\n\r\n"));
                }
                write_all(io, &mut q).await?;
                body.egress.inc_by(n as u64);
                if ended {
                    return Ok(());
                }
            }
            // A player sends nothing after its request: anything is ignored, the end of input ends the player.
            r = io.read(&mut scratch) => {
                if r? == 0 {
                    return Ok(());
                }
            }
        }
        stop_armed = true;
    }
}

/// Frames everything in `q` as one HTTP chunk (nothing to do unchunked or empty); returns the payload length.
fn frame_chunk(q: &mut BufQueue, chunked: bool) -> usize {
    let n = q.remaining();
    if chunked && n > 0 {
        q.push_front(Bytes::from(format!("{n:x}\r\n")));
        q.push(Bytes::from_static(b"\r\n"));
    }
    n
}

async fn write_all<S: AsyncWrite + Unpin>(io: &mut S, q: &mut BufQueue) -> std::io::Result<()> {
    while q.has_remaining() {
        if io.write_buf(q).await? == 0 {
            return Err(std::io::ErrorKind::WriteZero.into());
        }
    }
    Ok(())
}

/// One player's FLV: its feed, rendered batch by batch.
struct FlvBody {
    feed: PlayerFeed,
    batch: Vec<PlayerItem>,
    /// `strom_egress_bytes_total{protocol="flv"}`, looked up once.
    egress: IntCounter,
    has_audio: bool,
    has_video: bool,
    done: bool,
}

impl FlvBody {
    fn new(sub: Subscription, node: &NodeContext) -> FlvBody {
        let (has_video, has_audio) = (sub.has_video, sub.audio_header.is_some());
        let mut feed = PlayerFeed::new(sub, node.metrics.clone());
        feed.coalesce();
        feed.set_batch_bytes(BATCH_BYTES);
        FlvBody {
            feed,
            batch: Vec::new(),
            egress: node.metrics.egress_bytes.with_label_values(&[protocol::FLV]),
            has_audio,
            has_video,
            done: false,
        }
    }

    fn file_header(&self) -> Bytes {
        Bytes::copy_from_slice(&file_header(self.has_audio, self.has_video))
    }

    /// Waits for the next batch and renders it into `push`; `false` once there is nothing more.
    async fn next_batch(&mut self, push: impl FnMut(Bytes)) -> bool {
        if self.done || !self.feed.next_batch(&mut self.batch, BATCH).await {
            return false;
        }
        self.render(push);
        if self.batch.capacity() > KEEP {
            self.batch = Vec::new(); // a join's GOP burst: do not keep its capacity per player
        }
        true
    }

    /// Renders a batch as few body chunks as possible (hyper frames every chunk): per-player bytes (tag headers,
    /// previous-tag-sizes, small payloads such as audio) are written into one buffer, and only large payloads are
    /// passed as their shared `Bytes` between slices of it.
    fn render(&mut self, mut push: impl FnMut(Bytes)) {
        let mut hdr = BytesMut::with_capacity(self.batch.len() * 15 + INLINE_PAYLOAD);
        let mut pieces: Vec<(usize, Bytes)> = Vec::new();
        let mut cut = 0;
        for item in self.batch.drain(..) {
            let (tag_type, ts, body) = match item {
                PlayerItem::Frame(f, ts) => {
                    let t = if f.kind == MediaKind::Video { TAG_VIDEO } else { TAG_AUDIO };
                    (t, ts, f.flv_body().clone())
                }
                PlayerItem::Metadata(m) => (TAG_SCRIPT, 0, m),
                PlayerItem::PublisherLeft => continue, // a player's feed never yields it (only a relay's)
                PlayerItem::End => {
                    self.done = true;
                    break;
                }
            };
            let len = body.len() as u32;
            hdr.put_slice(&tag_header(tag_type, len, ts));
            if body.len() <= INLINE_PAYLOAD {
                hdr.put_slice(&body);
            } else {
                pieces.push((hdr.len(), body));
            }
            hdr.put_slice(&previous_tag_size(len));
        }
        let hdr = hdr.freeze();
        for (at, body) in pieces {
            if at > cut {
                push(hdr.slice(cut..at));
            }
            push(body);
            cut = at;
        }
        if hdr.len() > cut {
            push(hdr.slice(cut..));
        }
    }
}
