//! HTTP-FLV: `GET /{app}/{name}.flv` streams the live FLV: file header, `onMetaData`, sequence headers, the GOP
//! cache, then live tags — each tag a small per-player header plus the frame's shared payload.

use std::collections::VecDeque;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use bytes::{BufMut, Bytes, BytesMut};
use prometheus::IntCounter;
use tracing::{debug, info_span};

use crate::media::flv::{file_header, previous_tag_size, tag_header, TAG_AUDIO, TAG_SCRIPT, TAG_VIDEO};
use crate::media::MediaKind;
use crate::metrics::protocol;
use crate::node::NodeContext;
use crate::stream::{PlayerFeed, PlayerItem, Protocol, StreamKey};

/// Items per batch at most.
const BATCH: usize = 64;
/// Payload bytes per batch at most (a join's GOP burst goes out in a few batches).
const BATCH_BYTES: usize = 256 * 1024;
/// Payloads up to this size are copied next to their tag header instead of being sent as their own chunk.
const INLINE_PAYLOAD: usize = 1024;
/// Queues grown beyond this (a join's GOP burst) are released once drained.
const KEEP: usize = 8;

/// The HTTP-FLV handler.
pub async fn serve(State(node): State<Arc<NodeContext>>, Path((app, file)): Path<(String, String)>) -> Response {
    let Some(name) = file.strip_suffix(".flv") else {
        return (StatusCode::NOT_FOUND, "not found\n").into_response();
    };
    let key = match StreamKey::new(&app, name) {
        Ok(k) => k,
        Err(e) => return (StatusCode::BAD_REQUEST, format!("{e}\n")).into_response(),
    };
    let sub = match node.streams.find(&key).await {
        Some(h) => h.subscribe(Protocol::Flv).await,
        None => None,
    };
    let Some(sub) = sub else {
        return (StatusCode::NOT_FOUND, "no such live stream\n").into_response();
    };
    let has_video = sub.has_video;
    let has_audio = sub.audio_header.is_some();
    let mut feed = PlayerFeed::new(sub, node.metrics.clone());
    feed.coalesce();
    feed.set_batch_bytes(BATCH_BYTES);
    let span = info_span!("flv", stream = %key, node = %node.config.node_name);
    span.in_scope(|| debug!("HTTP-FLV player attached"));
    let state = FlvBody {
        feed,
        queue: VecDeque::from([Bytes::copy_from_slice(&file_header(has_audio, has_video))]),
        batch: Vec::new(),
        egress: node.metrics.egress_bytes.with_label_values(&[protocol::FLV]),
        done: false,
    };
    let stream = futures_util::stream::unfold(state, |mut st| async move {
        let item = st.next().await?;
        Some((Ok::<Bytes, std::io::Error>(item), st))
    });
    ([(header::CONTENT_TYPE, "video/x-flv"), (header::CACHE_CONTROL, "no-cache, no-store")], Body::from_stream(stream))
        .into_response()
}

struct FlvBody {
    feed: PlayerFeed,
    queue: VecDeque<Bytes>,
    batch: Vec<PlayerItem>,
    /// `strom_egress_bytes_total{protocol="flv"}`, looked up once.
    egress: IntCounter,
    done: bool,
}

impl FlvBody {
    async fn next(&mut self) -> Option<Bytes> {
        loop {
            if let Some(b) = self.queue.pop_front() {
                self.egress.inc_by(b.len() as u64);
                return Some(b);
            }
            if self.queue.capacity() > KEEP {
                self.queue = VecDeque::new(); // a join's GOP burst: do not keep its capacity per player
            }
            if self.done || !self.feed.next_batch(&mut self.batch, BATCH).await {
                return None;
            }
            self.render();
            if self.batch.capacity() > KEEP {
                self.batch = Vec::new();
            }
        }
    }

    /// Renders a batch as few body chunks as possible (hyper frames every chunk): per-player bytes (tag headers,
    /// previous-tag-sizes, small payloads such as audio) are written into one buffer, and only large payloads are
    /// passed as their shared `Bytes` between slices of it.
    fn render(&mut self) {
        let mut hdr = BytesMut::with_capacity(self.batch.len() * 15 + INLINE_PAYLOAD);
        let mut pieces: Vec<(usize, Bytes)> = Vec::new();
        let mut cut = 0;
        for item in self.batch.drain(..) {
            let (tag_type, ts, body) = match item {
                PlayerItem::Frame(f, ts) => {
                    let t = if f.kind == MediaKind::Video { TAG_VIDEO } else { TAG_AUDIO };
                    (t, ts, f.data)
                }
                PlayerItem::Metadata(m) => (TAG_SCRIPT, 0, m),
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
                self.queue.push_back(hdr.slice(cut..at));
            }
            self.queue.push_back(body);
            cut = at;
        }
        if hdr.len() > cut {
            self.queue.push_back(hdr.slice(cut..));
        }
    }
}
