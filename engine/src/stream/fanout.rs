//! Player fan-out: one shared, bounded ring per stream; each player reads it at its own pace.
//!
//! The stream actor pushes every frame once into a `tokio::sync::broadcast` ring (capacity
//! `stream.player_queue_frames`). A player holds a [`Subscription`]: a start snapshot (metadata, sequence headers,
//! the GOP cache) taken atomically with its ring receiver, so it misses and repeats nothing. Frames are
//! [`MediaFrame`]s whose payloads are `Bytes`: a thousand players cost a thousand reference counts, not copies.
//!
//! A player that falls more than a ring behind gets `Lagged`: [`PlayerFeed`] counts the lost frames
//! (`strom_frames_dropped_total{reason="slow_player"}`; `reason="slow_relay"` for a relay sender feeding another
//! cluster node, `slow_encoder` for a ladder's encoder) and skips to the next keyframe. The publisher never waits.
//! [`PlayerFeed`] also rebases timestamps so every player's timeline starts near zero.
//!
//! Writers cost per write, not per byte (a loopback or NIC send is mostly fixed cost), so a feed can coalesce
//! ([`PlayerFeed::coalesce_audio`]): audio that arrives between two video frames is held until the next video
//! frame and goes out in the same write; audio waits at most one video frame interval (bounded by
//! [`AUDIO_HOLD_MS`] of stream time). [`PlayerFeed::hold_video`] goes further: a write waits until it spans a
//! hold time (RTMP and HTTP-FLV players: `stream.player_write_hold_ms`, 33 ms by default, two frames per send),
//! trading that much live delay for fewer sends.

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use tokio::sync::broadcast::{self, error::RecvError, error::TryRecvError};

use crate::media::{MediaFrame, MediaKind};
use crate::metrics::Metrics;

/// With [`PlayerFeed::coalesce_audio`], held audio is released once it spans this much stream time even without a
/// video frame (a video stall, or video below ~20 fps).
pub const AUDIO_HOLD_MS: u32 = 50;

/// A `pending` queue larger than this is released once drained (the GOP burst of a join is a one-off).
const PENDING_KEEP: usize = 16;

/// What the stream actor broadcasts to its players.
#[derive(Debug, Clone)]
pub enum StreamEvent {
    /// A media frame (including sequence headers when they change).
    Frame(MediaFrame),
    /// New `onMetaData` (AMF0 body).
    Metadata(Bytes),
    /// The publisher left: players finish.
    End,
}

/// Player protocols, for viewer counts and egress metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    /// RTMP play.
    Rtmp,
    /// HTTP-FLV.
    Flv,
    /// A relay feeding another cluster node (not a viewer of this node).
    Relay,
    /// The stream's ABR encoder (not a viewer).
    Encoder,
}

impl Protocol {
    /// The metric label.
    pub fn label(self) -> &'static str {
        match self {
            Protocol::Rtmp => crate::metrics::protocol::RTMP,
            Protocol::Flv => crate::metrics::protocol::FLV,
            Protocol::Relay => crate::metrics::protocol::RELAY,
            Protocol::Encoder => crate::metrics::protocol::ENCODER,
        }
    }

    fn index(self) -> usize {
        match self {
            Protocol::Rtmp => 0,
            Protocol::Flv => 1,
            Protocol::Relay => 2,
            Protocol::Encoder => 3,
        }
    }
}

/// Per-stream viewer counts, shared by the stream actor and its players.
#[derive(Debug, Default)]
pub struct ViewerCounts {
    counts: [AtomicI64; 4],
}

impl ViewerCounts {
    /// Players currently attached over `protocol`.
    pub fn get(&self, protocol: Protocol) -> i64 {
        self.counts[protocol.index()].load(Ordering::Relaxed)
    }
}

/// Counts a player while it lives (stream and node gauges).
pub struct ViewerGuard {
    counts: Arc<ViewerCounts>,
    metrics: Arc<Metrics>,
    protocol: Protocol,
}

impl ViewerGuard {
    /// Registers one viewer.
    pub fn new(counts: Arc<ViewerCounts>, metrics: Arc<Metrics>, protocol: Protocol) -> ViewerGuard {
        counts.counts[protocol.index()].fetch_add(1, Ordering::Relaxed);
        metrics.viewers.with_label_values(&[protocol.label()]).inc();
        ViewerGuard { counts, metrics, protocol }
    }
}

impl Drop for ViewerGuard {
    fn drop(&mut self) {
        self.counts.counts[self.protocol.index()].fetch_sub(1, Ordering::Relaxed);
        self.metrics.viewers.with_label_values(&[self.protocol.label()]).dec();
    }
}

/// A player's attachment to a stream: where to start, and the live ring.
pub struct Subscription {
    /// `onMetaData` body, if the publisher sent one.
    pub metadata: Option<Bytes>,
    /// AVC sequence header, if any.
    pub video_header: Option<MediaFrame>,
    /// AAC sequence header, if any.
    pub audio_header: Option<MediaFrame>,
    /// The GOP cache: frames from the last keyframe on (empty if disabled or no keyframe yet).
    pub gop: Vec<MediaFrame>,
    /// Whether the stream carries video (a lagging player then waits for a keyframe).
    pub has_video: bool,
    /// The live ring, positioned right after the snapshot.
    pub rx: broadcast::Receiver<StreamEvent>,
    /// Keeps the viewer counted.
    pub guard: ViewerGuard,
}

/// One item for a player's writer, timestamps already rebased for this player.
#[derive(Debug, Clone)]
pub enum PlayerItem {
    /// `onMetaData` body.
    Metadata(Bytes),
    /// A frame and the player's timestamp for it.
    Frame(MediaFrame, u32),
    /// End of stream.
    End,
}

/// Turns a [`Subscription`] into an ordered sequence of [`PlayerItem`]s for one player.
pub struct PlayerFeed {
    rx: broadcast::Receiver<StreamEvent>,
    pending: std::collections::VecDeque<PlayerItem>,
    base: Option<u32>,
    waiting_keyframe: bool,
    /// Frames skipped while waiting count as drops only after a lag (not while a new player waits to start).
    lagged: bool,
    /// The `strom_frames_dropped_total` reason of this feed's skips ([`PlayerFeed::drop_reason`]).
    drop_reason: &'static str,
    has_video: bool,
    metrics: Arc<Metrics>,
    ended: bool,
    /// Hold audio for the next video frame (see [`PlayerFeed::coalesce_audio`]).
    hold_audio: bool,
    /// Hold video until a batch spans this much stream time (see [`PlayerFeed::hold_video`]); 0: never.
    hold_video_ms: u32,
    /// Stop taking items once a batch carries this many payload bytes.
    max_bytes: usize,
    _guard: ViewerGuard,
}

impl PlayerFeed {
    /// Starts a feed: metadata, sequence headers, then the GOP cache, then live frames.
    pub fn new(sub: Subscription, metrics: Arc<Metrics>) -> PlayerFeed {
        let mut feed = PlayerFeed {
            rx: sub.rx,
            pending: Default::default(),
            base: sub.gop.first().map(|f| f.timestamp),
            // Without a cached GOP (disabled, or no keyframe yet) a player starts at the next keyframe.
            waiting_keyframe: sub.has_video && sub.gop.is_empty(),
            lagged: false,
            drop_reason: Self::drop_reason(sub.guard.protocol),
            has_video: sub.has_video,
            metrics,
            ended: false,
            hold_audio: false,
            hold_video_ms: 0,
            max_bytes: usize::MAX,
            _guard: sub.guard,
        };
        if let Some(m) = sub.metadata {
            feed.pending.push_back(PlayerItem::Metadata(m));
        }
        for h in [sub.video_header, sub.audio_header].into_iter().flatten() {
            feed.pending.push_back(PlayerItem::Frame(h, 0));
        }
        for f in sub.gop {
            feed.push_frame(f);
        }
        feed
    }

    /// The `strom_frames_dropped_total` reason of frames a feed of `protocol` skips when it falls a ring behind:
    /// `slow_relay` for a relay sender (another cluster node fell behind this owner), `slow_encoder` for a ladder's
    /// encoder (its codecs fell behind the source), else `slow_player`.
    pub fn drop_reason(protocol: Protocol) -> &'static str {
        match protocol {
            Protocol::Relay => "slow_relay",
            Protocol::Encoder => "slow_encoder",
            Protocol::Rtmp | Protocol::Flv => "slow_player",
        }
    }

    fn rebase(&mut self, ts: u32) -> u32 {
        let base = *self.base.get_or_insert(ts);
        let delta = ts.wrapping_sub(base) as i32;
        delta.max(0) as u32
    }

    fn push_frame(&mut self, f: MediaFrame) {
        if f.header {
            // Sequence headers always pass: they configure the decoder for what follows.
            let ts = self.base.map(|_| self.rebase(f.timestamp)).unwrap_or(0);
            self.pending.push_back(PlayerItem::Frame(f, ts));
            return;
        }
        if self.waiting_keyframe {
            if f.kind == MediaKind::Video && f.keyframe {
                self.waiting_keyframe = false;
            } else {
                if self.lagged {
                    self.metrics.frames_dropped.with_label_values(&[self.drop_reason]).inc();
                }
                return;
            }
        }
        let ts = self.rebase(f.timestamp);
        self.pending.push_back(PlayerItem::Frame(f, ts));
    }

    fn accept(&mut self, ev: StreamEvent) {
        match ev {
            StreamEvent::Frame(f) => self.push_frame(f),
            StreamEvent::Metadata(m) => self.pending.push_back(PlayerItem::Metadata(m)),
            StreamEvent::End => {
                self.ended = true;
                self.pending.push_back(PlayerItem::End);
            }
        }
    }

    fn lagged(&mut self, n: u64) {
        self.metrics.frames_dropped.with_label_values(&[self.drop_reason]).inc_by(n);
        self.waiting_keyframe = self.has_video;
        self.lagged = true;
    }

    /// Coalesce writes: while the stream has video, a batch of only audio frames is not returned; it waits for
    /// the next video frame (or metadata, end of stream, or [`AUDIO_HOLD_MS`] of held audio), so a player gets
    /// one write per video frame instead of one per frame. Off by default.
    pub fn coalesce_audio(&mut self, on: bool) {
        self.hold_audio = on;
    }

    /// With [`PlayerFeed::coalesce_audio`] on, also hold video: a batch of frames goes out once it spans `ms` of
    /// stream time (with `ms` about one frame interval, two video frames per write), trading up to `ms` of live
    /// delay for half the writes. 0 (the feed's default): video is never held.
    pub fn hold_video(&mut self, ms: u32) {
        self.hold_video_ms = ms;
    }

    /// Caps a batch at about `bytes` of payload (the item that crosses it is still taken). Default: no cap.
    pub fn set_batch_bytes(&mut self, bytes: usize) {
        self.max_bytes = bytes.max(1);
    }

    fn item_len(item: &PlayerItem) -> usize {
        match item {
            PlayerItem::Frame(f, _) => f.data.len(),
            PlayerItem::Metadata(m) => m.len(),
            PlayerItem::End => 0,
        }
    }

    /// Moves pending items into `out` within the count and byte limits; returns the bytes now in `out`.
    fn drain_pending(&mut self, out: &mut Vec<PlayerItem>, max: usize, mut bytes: usize) -> usize {
        while out.len() < max && bytes < self.max_bytes {
            match self.pending.pop_front() {
                Some(item) => {
                    bytes += Self::item_len(&item);
                    out.push(item);
                }
                None => break,
            }
        }
        if self.pending.is_empty() && self.pending.capacity() > PENDING_KEEP {
            self.pending = Default::default();
        }
        bytes
    }

    /// Whether `out` should wait for more: a batch of audio only waits for the next video frame; with
    /// [`PlayerFeed::hold_video`], a batch of frames waits until it spans the hold time.
    fn holding(&self, out: &[PlayerItem], max: usize, bytes: usize) -> bool {
        if !self.hold_audio || !self.has_video || self.ended || out.len() >= max || bytes >= self.max_bytes {
            return false;
        }
        let mut first = None;
        let mut last = 0;
        let mut video = false;
        for item in out {
            match item {
                PlayerItem::Frame(f, ts) if !f.header && (f.kind == MediaKind::Audio || self.hold_video_ms > 0) => {
                    video |= f.kind == MediaKind::Video;
                    first.get_or_insert(*ts);
                    last = *ts;
                }
                _ => return false,
            }
        }
        let limit = if video { self.hold_video_ms } else { AUDIO_HOLD_MS };
        first.is_some_and(|first| last.wrapping_sub(first) < limit)
    }

    /// Waits for at least one item, then takes every item already available, up to `max`, into `out`.
    /// Returns `false` once the stream has ended (after the `End` item was delivered) or was torn down.
    ///
    /// Cancel-safe: items are moved into `out` before any await, so a dropped call loses nothing as long as the
    /// caller keeps `out` (a held batch simply continues in the next call).
    pub async fn next_batch(&mut self, out: &mut Vec<PlayerItem>, max: usize) -> bool {
        let mut bytes: usize = out.iter().map(Self::item_len).sum();
        loop {
            bytes = self.drain_pending(out, max, bytes);
            if (!out.is_empty() && !self.holding(out, max, bytes)) || self.ended {
                break;
            }
            match self.rx.recv().await {
                Ok(ev) => self.accept(ev),
                Err(RecvError::Lagged(n)) => self.lagged(n),
                Err(RecvError::Closed) => {
                    self.ended = true;
                    out.push(PlayerItem::End);
                    return true;
                }
            }
        }
        // Take what is already queued without waiting: fewer, larger writes.
        while out.len() < max && bytes < self.max_bytes && !self.ended {
            match self.rx.try_recv() {
                Ok(ev) => {
                    self.accept(ev);
                    bytes = self.drain_pending(out, max, bytes);
                }
                Err(TryRecvError::Lagged(n)) => self.lagged(n),
                Err(TryRecvError::Closed) => {
                    self.ended = true;
                    out.push(PlayerItem::End);
                }
                Err(TryRecvError::Empty) => break,
            }
        }
        !(out.is_empty() && self.ended)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn frame(kind: MediaKind, ts: u32, key: bool) -> MediaFrame {
        let b0 = match kind {
            MediaKind::Video if key => 0x17,
            MediaKind::Video => 0x27,
            MediaKind::Audio => 0xaf,
        };
        MediaFrame::from_flv_body(kind, ts, Bytes::from(vec![b0, 1, 0, 0, 0]))
    }

    fn sub(tx: &broadcast::Sender<StreamEvent>, gop: Vec<MediaFrame>, m: &Arc<Metrics>) -> Subscription {
        sub_of(tx, gop, m, Protocol::Flv)
    }

    fn sub_of(
        tx: &broadcast::Sender<StreamEvent>,
        gop: Vec<MediaFrame>,
        m: &Arc<Metrics>,
        protocol: Protocol,
    ) -> Subscription {
        Subscription {
            metadata: Some(Bytes::from_static(b"meta")),
            video_header: None,
            audio_header: None,
            gop,
            has_video: true,
            rx: tx.subscribe(),
            guard: ViewerGuard::new(Arc::default(), m.clone(), protocol),
        }
    }

    #[tokio::test]
    async fn starts_with_snapshot_rebased() {
        let m = Arc::new(Metrics::new());
        let (tx, _) = broadcast::channel(16);
        let gop = vec![frame(MediaKind::Video, 5000, true), frame(MediaKind::Audio, 5010, false)];
        let mut feed = PlayerFeed::new(sub(&tx, gop, &m), m.clone());
        tx.send(StreamEvent::Frame(frame(MediaKind::Video, 5033, false))).unwrap();
        let mut out = Vec::new();
        assert!(feed.next_batch(&mut out, 64).await);
        let ts: Vec<u32> = out
            .iter()
            .filter_map(|i| match i {
                PlayerItem::Frame(_, ts) => Some(*ts),
                _ => None,
            })
            .collect();
        assert!(matches!(out[0], PlayerItem::Metadata(_)));
        assert_eq!(ts, vec![0, 10, 33]);
        assert_eq!(m.viewers.with_label_values(&["flv"]).get(), 1);
        drop(feed);
        assert_eq!(m.viewers.with_label_values(&["flv"]).get(), 0);
    }

    #[tokio::test]
    async fn lagging_player_skips_to_keyframe() {
        let m = lag_and_skip(Protocol::Flv).await;
        assert!(m.frames_dropped.with_label_values(&["slow_player"]).get() >= 24);
        assert_eq!(m.frames_dropped.with_label_values(&["slow_relay"]).get(), 0);
    }

    #[test]
    fn each_kind_of_feed_has_its_drop_reason() {
        assert_eq!(PlayerFeed::drop_reason(Protocol::Rtmp), "slow_player");
        assert_eq!(PlayerFeed::drop_reason(Protocol::Flv), "slow_player");
        assert_eq!(PlayerFeed::drop_reason(Protocol::Relay), "slow_relay");
        assert_eq!(PlayerFeed::drop_reason(Protocol::Encoder), "slow_encoder");
    }

    #[tokio::test]
    async fn a_lagging_relay_sender_counts_its_skips_as_slow_relay() {
        let m = lag_and_skip(Protocol::Relay).await;
        assert!(m.frames_dropped.with_label_values(&["slow_relay"]).get() >= 24);
        assert_eq!(m.frames_dropped.with_label_values(&["slow_player"]).get(), 0);
    }

    /// A feed of `protocol` falls a ring behind and must skip to the next keyframe; returns the metrics.
    async fn lag_and_skip(protocol: Protocol) -> Arc<Metrics> {
        let m = Arc::new(Metrics::new());
        let (tx, _) = broadcast::channel(16);
        let mut feed = PlayerFeed::new(sub_of(&tx, vec![], &m, protocol), m.clone());
        let mut out = Vec::new();
        feed.next_batch(&mut out, 64).await; // metadata
        for i in 0..40 {
            tx.send(StreamEvent::Frame(frame(MediaKind::Video, i * 33, i == 0))).unwrap();
        }
        // The ring (16) overflowed: the player must skip everything up to the next keyframe.
        for i in 40..45 {
            tx.send(StreamEvent::Frame(frame(MediaKind::Video, i * 33, i == 42))).unwrap();
        }
        tx.send(StreamEvent::End).unwrap();
        let mut got = Vec::new();
        loop {
            let mut out = Vec::new();
            if !feed.next_batch(&mut out, 64).await {
                break;
            }
            let end = out.iter().any(|i| matches!(i, PlayerItem::End));
            got.extend(out);
            if end {
                break;
            }
        }
        let frames: Vec<&MediaFrame> = got
            .iter()
            .filter_map(|i| match i {
                PlayerItem::Frame(f, _) => Some(f),
                _ => None,
            })
            .collect();
        assert!(frames[0].keyframe, "first frame after lag must be a keyframe");
        assert_eq!(frames[0].timestamp, 42 * 33);
        assert!(matches!(got.last(), Some(PlayerItem::End)));
        m
    }

    /// A feed past its start (metadata and a first keyframe taken), coalescing audio.
    async fn started_coalescing(tx: &broadcast::Sender<StreamEvent>, m: &Arc<Metrics>) -> PlayerFeed {
        let mut feed = PlayerFeed::new(sub(tx, vec![], m), m.clone());
        feed.coalesce_audio(true);
        tx.send(StreamEvent::Frame(frame(MediaKind::Video, 0, true))).unwrap();
        let mut out = Vec::new();
        while out.len() < 2 {
            assert!(feed.next_batch(&mut out, 64).await);
        }
        feed
    }

    fn kinds(out: &[PlayerItem]) -> Vec<Option<MediaKind>> {
        out.iter()
            .map(|i| match i {
                PlayerItem::Frame(f, _) => Some(f.kind),
                _ => None,
            })
            .collect()
    }

    #[tokio::test]
    async fn coalescing_holds_audio_for_the_next_video_frame() {
        let m = Arc::new(Metrics::new());
        let (tx, _) = broadcast::channel(16);
        let mut feed = started_coalescing(&tx, &m).await;
        tx.send(StreamEvent::Frame(frame(MediaKind::Audio, 10, false))).unwrap();
        tx.send(StreamEvent::Frame(frame(MediaKind::Audio, 30, false))).unwrap();
        let mut out = Vec::new();
        let held = tokio::time::timeout(Duration::from_millis(50), feed.next_batch(&mut out, 64)).await;
        assert!(held.is_err(), "audio alone must wait for video");
        assert_eq!(out.len(), 2, "held audio stays in the caller's batch when the call is dropped");
        tx.send(StreamEvent::Frame(frame(MediaKind::Video, 33, false))).unwrap();
        assert!(feed.next_batch(&mut out, 64).await);
        use MediaKind::{Audio, Video};
        assert_eq!(kinds(&out), vec![Some(Audio), Some(Audio), Some(Video)]);
    }

    #[tokio::test]
    async fn coalescing_releases_audio_after_the_hold_limit_and_at_the_end() {
        let m = Arc::new(Metrics::new());
        let (tx, _) = broadcast::channel(16);
        let mut feed = started_coalescing(&tx, &m).await;
        // Video stalls: audio goes out once it spans AUDIO_HOLD_MS.
        for ts in [100, 123, 146, 169] {
            tx.send(StreamEvent::Frame(frame(MediaKind::Audio, ts, false))).unwrap();
        }
        let mut out = Vec::new();
        assert!(feed.next_batch(&mut out, 64).await);
        assert_eq!(out.len(), 4);
        // The end of the stream releases held audio.
        tx.send(StreamEvent::Frame(frame(MediaKind::Audio, 190, false))).unwrap();
        tx.send(StreamEvent::End).unwrap();
        let mut out = Vec::new();
        assert!(feed.next_batch(&mut out, 64).await);
        assert_eq!(out.len(), 2);
        assert!(matches!(out[1], PlayerItem::End));
    }

    #[tokio::test]
    async fn holding_video_sends_two_frames_per_write() {
        let m = Arc::new(Metrics::new());
        let (tx, _) = broadcast::channel(16);
        let mut feed = started_coalescing(&tx, &m).await;
        feed.hold_video(30);
        use MediaKind::{Audio, Video};
        tx.send(StreamEvent::Frame(frame(Audio, 20, false))).unwrap();
        tx.send(StreamEvent::Frame(frame(Video, 33, false))).unwrap();
        let mut out = Vec::new();
        let held = tokio::time::timeout(Duration::from_millis(50), feed.next_batch(&mut out, 64)).await;
        assert!(held.is_err(), "one video frame waits for the next");
        tx.send(StreamEvent::Frame(frame(Audio, 43, false))).unwrap();
        tx.send(StreamEvent::Frame(frame(Video, 66, false))).unwrap();
        assert!(feed.next_batch(&mut out, 64).await);
        assert_eq!(kinds(&out), vec![Some(Audio), Some(Video), Some(Audio), Some(Video)]);
        // Metadata is never held.
        tx.send(StreamEvent::Frame(frame(Video, 100, false))).unwrap();
        tx.send(StreamEvent::Metadata(Bytes::from_static(b"m"))).unwrap();
        let mut out = Vec::new();
        assert!(feed.next_batch(&mut out, 64).await);
        assert_eq!(kinds(&out), vec![Some(Video), None]);
    }

    #[tokio::test]
    async fn batch_byte_budget_splits_bursts() {
        let m = Arc::new(Metrics::new());
        let (tx, _) = broadcast::channel(16);
        let gop: Vec<MediaFrame> = (0..6).map(|i| frame(MediaKind::Video, i * 33, i == 0)).collect();
        let mut feed = PlayerFeed::new(sub(&tx, gop, &m), m.clone());
        feed.set_batch_bytes(10); // frames are 5 bytes: two per batch (after the 4-byte metadata, three)
        let mut sizes = Vec::new();
        loop {
            let mut out = Vec::new();
            let got = tokio::time::timeout(Duration::from_millis(20), feed.next_batch(&mut out, 64)).await;
            match got {
                Ok(true) => sizes.push(out.len()),
                _ => break,
            }
        }
        assert_eq!(sizes, vec![3, 2, 2]);
    }
}
