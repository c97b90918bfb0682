//! HTTP-FLV: `GET /{app}/{name}.flv` streams the live FLV: file header, `onMetaData`, sequence headers, the GOP
//! cache, then live tags — each tag a small per-player header plus the frame's shared payload.

use std::collections::VecDeque;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use bytes::{BufMut, Bytes, BytesMut};
use tracing::{debug, info_span};

use crate::media::flv::{file_header, previous_tag_size, tag_header, TAG_AUDIO, TAG_SCRIPT, TAG_VIDEO};
use crate::media::MediaKind;
use crate::metrics::{protocol, Metrics};
use crate::node::NodeContext;
use crate::stream::{PlayerFeed, PlayerItem, Protocol, StreamKey};

const BATCH: usize = 64;

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
    let feed = PlayerFeed::new(sub, node.metrics.clone());
    let span = info_span!("flv", stream = %key, node = %node.config.node_name);
    span.in_scope(|| debug!("HTTP-FLV player attached"));
    let state = FlvBody {
        feed,
        queue: VecDeque::from([Bytes::copy_from_slice(&file_header(has_audio, has_video))]),
        batch: Vec::with_capacity(BATCH),
        metrics: node.metrics.clone(),
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
    metrics: Arc<Metrics>,
    done: bool,
}

impl FlvBody {
    async fn next(&mut self) -> Option<Bytes> {
        loop {
            if let Some(b) = self.queue.pop_front() {
                self.metrics.egress_bytes.with_label_values(&[protocol::FLV]).inc_by(b.len() as u64);
                return Some(b);
            }
            if self.done || !self.feed.next_batch(&mut self.batch, BATCH).await {
                return None;
            }
            self.render();
        }
    }

    /// Tag headers of the whole batch go in one buffer; payloads are the shared frame bytes.
    fn render(&mut self) {
        let mut hdr = BytesMut::with_capacity(self.batch.len() * 15);
        let mut pieces: Vec<(usize, usize, Option<Bytes>)> = Vec::with_capacity(self.batch.len() * 2);
        for item in self.batch.drain(..) {
            let start = hdr.len();
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
            pieces.push((start, hdr.len(), Some(body)));
            let s = hdr.len();
            hdr.put_slice(&previous_tag_size(len));
            pieces.push((s, hdr.len(), None));
        }
        let hdr = hdr.freeze();
        for (a, b, body) in pieces {
            // Header, payload, previous-tag-size: adjacent header pieces are merged into one slice.
            self.queue.push_back(hdr.slice(a..b));
            if let Some(body) = body {
                self.queue.push_back(body);
            }
        }
    }
}
