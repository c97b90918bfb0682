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
//! [`PlayerFeed`] also rebases timestamps so every player's timeline starts near zero (a relay's keeps the stream's).
//!
//! Writers cost per write and per wake-up, not per byte (a loopback or NIC send is mostly fixed cost), so viewers
//! write in batches ([`PlayerFeed::coalesce`]). The stream decides once for all of them when a batch is complete
//! (a [`FanoutSender`]'s batch clock): when its video spans the hold time (`stream.player_write_hold_ms`, 66 ms
//! by default: three video frames per send at 30 fps), at once for metadata, sequence headers and the end, and,
//! when video stalls, once held audio spans the hold time plus [`AUDIO_HOLD_MS`]. It then rings a doorbell (a
//! `watch` channel carrying the ring's event count) that wakes the coalescing players, which take exactly the
//! complete batches from the ring and write each with one send. A viewer task is woken once per send instead of
//! once per frame; the ring's own per-frame wake-ups remain for the feeds that want every frame at once (relays
//! and encoders).

use std::any::Any;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use tokio::sync::broadcast::{self, error::RecvError, error::TryRecvError};
use tokio::sync::watch;

use crate::formats::{MediaFrame, MediaKind};
use crate::metrics::Metrics;

/// With [`PlayerFeed::coalesce`], held audio is released once it spans the hold time plus this much stream time
/// without a video frame completing the batch (a video stall, or very low frame rates).
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
    /// The publisher left and the stream waits `stream.reconnect_grace_secs` for it. Players stay attached (their
    /// next frames come from the returning publisher, after its sequence headers, at a keyframe), and so do relays
    /// (they pass it on); encoders end here, as at [`StreamEvent::End`].
    PublisherLeft,
    /// The stream is over (the grace ran out, the node shuts down): players finish.
    End,
}

/// The sending side of a stream's fan-out: the ring every frame goes into once, and the doorbell that tells
/// coalescing players a batch is complete. Owned by the stream actor.
pub struct FanoutSender {
    // Declared before the bell so the ring closes first when the sender is dropped: a player woken by the bell's
    // closing then finds the ring closed too.
    tx: broadcast::Sender<StreamEvent>,
    /// Rung with the number of events sent so far: a player takes exactly the events before it from the ring and
    /// never asks an empty ring (which takes the ring's shared lock).
    bell: watch::Sender<u64>,
    clock: BatchClock,
    sent: u64,
    slot: SharedSlot,
}

/// Per-stream state a protocol keeps next to the fan-out, shared by every receiver of the stream (the RTMP
/// writer hub, `crate::servers::rtmp::hub`, keeps its handle here). The fan-out itself never looks inside.
pub type SharedSlot = Arc<Mutex<Option<Box<dyn Any + Send>>>>;

impl FanoutSender {
    /// A ring of `capacity` events; coalescing players write once their batch spans `hold_ms` of stream time.
    pub fn new(capacity: usize, hold_ms: u32) -> FanoutSender {
        let (tx, _) = broadcast::channel(capacity);
        let (bell, _) = watch::channel(0);
        FanoutSender {
            tx,
            bell,
            clock: BatchClock { hold_ms, ..Default::default() },
            sent: 0,
            slot: Default::default(),
        }
    }

    /// Puts `ev` into the ring (no receivers is fine) and rings the doorbell if it completes a batch.
    pub fn send(&mut self, ev: StreamEvent) {
        let ring = self.clock.completes(&ev);
        let _ = self.tx.send(ev);
        self.sent += 1;
        if ring {
            self.bell.send_replace(self.sent);
        }
    }

    /// A receiver positioned at the next event.
    pub fn subscribe(&self) -> FanoutReceiver {
        FanoutReceiver {
            rx: self.tx.subscribe(),
            bell: self.bell.subscribe(),
            start: self.sent,
            slot: self.slot.clone(),
        }
    }
}

/// A player's end of a [`FanoutSender`].
pub struct FanoutReceiver {
    rx: broadcast::Receiver<StreamEvent>,
    bell: watch::Receiver<u64>,
    /// Events sent before this receiver: its position in the ring.
    start: u64,
    slot: SharedSlot,
}

/// When a coalescing batch is complete: the stream-wide form of a per-player hold. Every coalescing player of a
/// stream holds for the same time, so one decision per frame serves them all.
///
/// A video frame completes a batch when the batch's video spans the hold time (from its first video frame to
/// this one): at 30 fps, a 33 ms hold makes batches of two video frames (with the audio between them), 66 ms
/// three, 0 one. Audio never completes a batch while video flows; it does when video stalls (the open batch spans
/// the hold time plus [`AUDIO_HOLD_MS`]), and every frame does until the stream has shown video.
#[derive(Debug, Default)]
struct BatchClock {
    hold_ms: u32,
    /// The stream carries video.
    has_video: bool,
    /// Timestamp of the first video frame of the open batch.
    first_video: Option<u32>,
    /// Timestamp of the first frame of the open batch.
    first: Option<u32>,
}

impl BatchClock {
    /// Whether `ev` completes the open batch. Metadata, sequence headers and the end always do.
    fn completes(&mut self, ev: &StreamEvent) -> bool {
        let done = match ev {
            StreamEvent::Frame(f) if !f.header => {
                let first = *self.first.get_or_insert(f.timestamp);
                let since = |t: u32| f.timestamp.wrapping_sub(t) as i32;
                if f.kind == MediaKind::Video {
                    self.has_video = true;
                    let first_video = *self.first_video.get_or_insert(f.timestamp);
                    since(first_video) >= self.hold_ms as i32 || since(first_video) < 0
                } else {
                    !self.has_video || since(first) >= (self.hold_ms + AUDIO_HOLD_MS) as i32 || since(first) < 0
                }
            }
            StreamEvent::Frame(f) => {
                self.has_video |= f.kind == MediaKind::Video;
                true
            }
            StreamEvent::Metadata(_) | StreamEvent::PublisherLeft | StreamEvent::End => true,
        };
        if done {
            self.first = None;
            self.first_video = None;
        }
        done
    }
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

    /// Everything attached to the stream: players, relay senders and encoders. A relay that feeds any of them
    /// (a hosted ladder's encoder too) is in use.
    pub fn attached(&self) -> i64 {
        self.counts.iter().map(|c| c.load(Ordering::Relaxed)).sum()
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
    pub gop: Arc<Vec<MediaFrame>>,
    /// Whether the stream carries video (a lagging player then waits for a keyframe).
    pub has_video: bool,
    /// The live ring, positioned right after the snapshot.
    pub rx: FanoutReceiver,
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
    /// The publisher left and the stream waits for it (only a relay feed gets this, to pass it on to the relay
    /// stream on the other node: players there stay attached too).
    PublisherLeft,
    /// End of stream.
    End,
}

/// Turns a [`Subscription`] into an ordered sequence of [`PlayerItem`]s for one player.
pub struct PlayerFeed {
    rx: broadcast::Receiver<StreamEvent>,
    bell: watch::Receiver<u64>,
    /// Events of the ring this feed has taken or skipped.
    position: u64,
    /// Events the ring held at the last ring of the bell this feed saw (`u64::MAX` once the stream is gone).
    complete: u64,
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
    /// Write when the stream's batch clock says so (see [`PlayerFeed::coalesce`]).
    coalesce: bool,
    /// Players (RTMP, HTTP-FLV) and relays stay attached while the publisher is away; encoders end.
    survives_reconnect: bool,
    /// A relay passes the publisher's leaving on ([`PlayerItem::PublisherLeft`]), and the stream's timestamps as
    /// they are (the relay stream on the other node runs on this stream's timeline; see
    /// `crate::stream::actor`'s `Timeline`).
    forwards_gaps: bool,
    /// Stop taking items once a batch carries this many payload bytes.
    max_bytes: usize,
    slot: SharedSlot,
    _guard: ViewerGuard,
}

impl PlayerFeed {
    /// Starts a feed: metadata, sequence headers, then the GOP cache, then live frames.
    pub fn new(sub: Subscription, metrics: Arc<Metrics>) -> PlayerFeed {
        let complete = *sub.rx.bell.borrow();
        let mut feed = PlayerFeed {
            rx: sub.rx.rx,
            complete,
            bell: sub.rx.bell,
            position: sub.rx.start,
            pending: Default::default(),
            base: sub.gop.first().map(|f| f.timestamp),
            // Without a cached GOP (disabled, or no keyframe yet) a player starts at the next keyframe.
            waiting_keyframe: sub.has_video && sub.gop.is_empty(),
            lagged: false,
            drop_reason: Self::drop_reason(sub.guard.protocol),
            has_video: sub.has_video,
            metrics,
            ended: false,
            coalesce: false,
            survives_reconnect: sub.guard.protocol != Protocol::Encoder,
            forwards_gaps: sub.guard.protocol == Protocol::Relay,
            max_bytes: usize::MAX,
            slot: sub.rx.slot,
            _guard: sub.guard,
        };
        if let Some(m) = sub.metadata {
            feed.pending.push_back(PlayerItem::Metadata(m));
        }
        for h in [sub.video_header, sub.audio_header].into_iter().flatten() {
            let ts = if feed.forwards_gaps { h.timestamp } else { 0 };
            feed.pending.push_back(PlayerItem::Frame(h, ts));
        }
        for f in sub.gop.iter() {
            if let Some(item) = feed.frame_item(f.clone()) {
                feed.pending.push_back(item);
            }
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
        if self.forwards_gaps {
            return ts;
        }
        let base = *self.base.get_or_insert(ts);
        let delta = ts.wrapping_sub(base) as i32;
        delta.max(0) as u32
    }

    /// The item a frame becomes for this player (its timestamp rebased), or none while it waits for a keyframe.
    fn frame_item(&mut self, f: MediaFrame) -> Option<PlayerItem> {
        if f.header {
            // Sequence headers always pass: they configure the decoder for what follows.
            let ts = match self.base {
                _ if self.forwards_gaps => f.timestamp,
                Some(_) => self.rebase(f.timestamp),
                None => 0,
            };
            return Some(PlayerItem::Frame(f, ts));
        }
        if self.waiting_keyframe {
            if f.kind == MediaKind::Video && f.keyframe {
                self.waiting_keyframe = false;
            } else {
                if self.lagged {
                    self.metrics.frames_dropped.with_label_values(&[self.drop_reason]).inc();
                }
                return None;
            }
        }
        let ts = self.rebase(f.timestamp);
        Some(PlayerItem::Frame(f, ts))
    }

    /// The item a ring event becomes for this player, if any (at most one per event).
    fn accept(&mut self, ev: StreamEvent) -> Option<PlayerItem> {
        match ev {
            StreamEvent::Frame(f) => self.frame_item(f),
            StreamEvent::Metadata(m) => Some(PlayerItem::Metadata(m)),
            StreamEvent::PublisherLeft if self.survives_reconnect => {
                // The returning publisher starts with its sequence headers and a keyframe; nothing of the old
                // session is pending any more, and a frame before the next keyframe is not counted as a drop.
                self.waiting_keyframe = self.has_video;
                self.lagged = false;
                self.forwards_gaps.then_some(PlayerItem::PublisherLeft)
            }
            StreamEvent::PublisherLeft | StreamEvent::End => {
                self.ended = true;
                Some(PlayerItem::End)
            }
        }
    }

    /// [`PlayerFeed::accept`] into the pending queue.
    fn accept_pending(&mut self, ev: StreamEvent) {
        if let Some(item) = self.accept(ev) {
            self.pending.push_back(item);
        }
    }

    fn lagged(&mut self, n: u64) {
        self.metrics.frames_dropped.with_label_values(&[self.drop_reason]).inc_by(n);
        self.waiting_keyframe = self.has_video;
        self.lagged = true;
    }

    /// Coalesce writes: a batch goes out when the stream's batch clock completes it (see the module docs), so the
    /// player is woken and writes once per batch: three video frames with their audio at the default 66 ms hold. Off
    /// by default (every frame is returned as soon as it is in the ring).
    pub fn coalesce(&mut self) {
        self.coalesce = true;
    }

    /// Caps a batch at about `bytes` of payload (the item that crosses it is still taken). Default: no cap.
    pub fn set_batch_bytes(&mut self, bytes: usize) {
        self.max_bytes = bytes.max(1);
    }

    fn item_len(item: &PlayerItem) -> usize {
        match item {
            PlayerItem::Frame(f, _) => f.flv_body().len(),
            PlayerItem::Metadata(m) => m.len(),
            PlayerItem::PublisherLeft | PlayerItem::End => 0,
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

    /// Moves what is ready (pending items, then the ring's events up to the last complete batch) into `out`,
    /// within the limits; returns the bytes now in `out`. Once the pending queue is drained, the ring's items go
    /// straight into `out`: a player in step with its stream never touches its own queue (its memory is cold by
    /// the next batch, and a thousand players' queues are a thousand cache misses per batch).
    fn take_ready(&mut self, out: &mut Vec<PlayerItem>, max: usize, mut bytes: usize) -> usize {
        loop {
            bytes = self.drain_pending(out, max, bytes);
            if out.len() >= max || bytes >= self.max_bytes || self.ended || self.position >= self.complete {
                return bytes;
            }
            // Room in `out` and, after the drain, nothing pending: no item can overtake another.
            let ev = match self.rx.try_recv() {
                Ok(ev) => {
                    self.position += 1;
                    ev
                }
                Err(TryRecvError::Lagged(n)) => {
                    self.position += n;
                    self.lagged(n);
                    continue;
                }
                Err(TryRecvError::Closed) => StreamEvent::End,
                Err(TryRecvError::Empty) => return bytes,
            };
            if let Some(item) = self.accept(ev) {
                bytes += Self::item_len(&item);
                out.push(item);
            }
        }
    }

    /// [`PlayerFeed::next_batch`] of a coalescing feed: waits on the doorbell, not on every frame, and takes the
    /// events of complete batches. Whatever it can take goes out at once: the start snapshot, complete batches,
    /// and the rest of a batch the count or byte limit cut.
    async fn next_coalesced(&mut self, out: &mut Vec<PlayerItem>, max: usize) -> bool {
        let mut bytes: usize = out.iter().map(Self::item_len).sum();
        // A ring not seen yet; a closed bell means the stream is gone (its ring is closed first, so the next take
        // ends the feed).
        match self.bell.has_changed() {
            Ok(true) => self.complete = *self.bell.borrow_and_update(),
            Ok(false) => {}
            Err(_) => self.complete = u64::MAX,
        }
        loop {
            bytes = self.take_ready(out, max, bytes);
            if !out.is_empty() || self.ended {
                break;
            }
            // Returns once the bell rang (and marks that ring seen), or at once if the stream is gone.
            self.complete = match self.bell.changed().await {
                Ok(()) => *self.bell.borrow(),
                Err(_) => u64::MAX,
            };
        }
        !(out.is_empty() && self.ended)
    }

    /// A coalescing feed's [`PlayerFeed::next_batch`] without waiting: takes what is ready into `out`; `None`
    /// when nothing is (the feed is then in step with the stream: its next items come with the next ring of the
    /// doorbell). `Some(false)` once the stream has ended (as `next_batch`).
    pub fn try_next_batch(&mut self, out: &mut Vec<PlayerItem>, max: usize) -> Option<bool> {
        debug_assert!(self.coalesce, "only a coalescing feed follows the doorbell");
        let bytes: usize = out.iter().map(Self::item_len).sum();
        match self.bell.has_changed() {
            Ok(true) => self.complete = *self.bell.borrow_and_update(),
            Ok(false) => {}
            Err(_) => self.complete = u64::MAX,
        }
        self.take_ready(out, max, bytes);
        if out.is_empty() && !self.ended {
            return None;
        }
        Some(!(out.is_empty() && self.ended))
    }

    /// A doorbell receiver of this feed's stream: it changes whenever a batch completes (and errs once the stream
    /// is gone).
    pub fn doorbell(&self) -> watch::Receiver<u64> {
        self.bell.clone()
    }

    /// The stream's [`SharedSlot`].
    pub fn shared_slot(&self) -> &SharedSlot {
        &self.slot
    }

    /// Waits for at least one item, then takes every item already available, up to `max`, into `out`.
    /// Returns `false` once the stream has ended (after the `End` item was delivered) or was torn down.
    ///
    /// Cancel-safe: items are moved into `out` before any await, so a dropped call loses nothing as long as the
    /// caller keeps `out` (a held batch simply continues in the next call).
    pub async fn next_batch(&mut self, out: &mut Vec<PlayerItem>, max: usize) -> bool {
        if self.coalesce {
            return self.next_coalesced(out, max).await;
        }
        let mut bytes: usize = out.iter().map(Self::item_len).sum();
        loop {
            bytes = self.drain_pending(out, max, bytes);
            if !out.is_empty() || self.ended {
                break;
            }
            match self.rx.recv().await {
                Ok(ev) => self.accept_pending(ev),
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
                    self.accept_pending(ev);
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
        MediaFrame::parse(kind, ts, Bytes::from(vec![b0, 1, 0, 0, 0])).unwrap()
    }

    fn sub(tx: &FanoutSender, gop: Vec<MediaFrame>, m: &Arc<Metrics>) -> Subscription {
        sub_of(tx, gop, m, Protocol::Flv)
    }

    fn sub_of(tx: &FanoutSender, gop: Vec<MediaFrame>, m: &Arc<Metrics>, protocol: Protocol) -> Subscription {
        Subscription {
            metadata: Some(Bytes::from_static(b"meta")),
            video_header: None,
            audio_header: None,
            gop: Arc::new(gop),
            has_video: true,
            rx: tx.subscribe(),
            guard: ViewerGuard::new(Arc::default(), m.clone(), protocol),
        }
    }

    #[tokio::test]
    async fn starts_with_snapshot_rebased() {
        let m = Arc::new(Metrics::new());
        let mut tx = FanoutSender::new(16, 30);
        let gop = vec![frame(MediaKind::Video, 5000, true), frame(MediaKind::Audio, 5010, false)];
        let mut feed = PlayerFeed::new(sub(&tx, gop, &m), m.clone());
        tx.send(StreamEvent::Frame(frame(MediaKind::Video, 5033, false)));
        let mut out = Vec::new();
        assert!(feed.next_batch(&mut out, 64).await);
        let ts = timestamps(&out);
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

    /// The player timestamps of the frames among `items`.
    fn timestamps(items: &[PlayerItem]) -> Vec<u32> {
        items
            .iter()
            .filter_map(|i| match i {
                PlayerItem::Frame(_, ts) => Some(*ts),
                _ => None,
            })
            .collect()
    }

    /// Every item a feed delivers until it ends (or has nothing more within 100 ms).
    async fn drain(feed: &mut PlayerFeed) -> Vec<PlayerItem> {
        let mut got = Vec::new();
        loop {
            let mut out = Vec::new();
            match tokio::time::timeout(Duration::from_millis(100), feed.next_batch(&mut out, 64)).await {
                Ok(true) => got.extend(out),
                _ => return got,
            }
        }
    }

    #[tokio::test]
    async fn players_and_relays_stay_attached_when_the_publisher_leaves_while_encoders_end() {
        let m = Arc::new(Metrics::new());
        let mut tx = FanoutSender::new(64, 0);
        let mut player = PlayerFeed::new(sub_of(&tx, vec![], &m, Protocol::Rtmp), m.clone());
        let mut relay = PlayerFeed::new(sub_of(&tx, vec![], &m, Protocol::Relay), m.clone());
        let mut encoder = PlayerFeed::new(sub_of(&tx, vec![], &m, Protocol::Encoder), m.clone());
        tx.send(StreamEvent::Frame(frame(MediaKind::Video, 0, true)));
        tx.send(StreamEvent::Frame(frame(MediaKind::Video, 33, false)));
        tx.send(StreamEvent::PublisherLeft);
        // The returning publisher: its first frame is not a keyframe (skipped), then a keyframe on the continuous
        // stream timeline.
        tx.send(StreamEvent::Frame(frame(MediaKind::Video, 80, false)));
        tx.send(StreamEvent::Frame(frame(MediaKind::Video, 113, true)));
        let got = drain(&mut encoder).await;
        assert!(matches!(got.last(), Some(PlayerItem::End)), "the encoder ends when the publisher leaves");
        assert_eq!(got.iter().filter(|i| matches!(i, PlayerItem::Frame(..))).count(), 2);
        // The relay passes the gap on, in order, and goes on with the returning publisher.
        let got = drain(&mut relay).await;
        let at = got.iter().position(|i| matches!(i, PlayerItem::PublisherLeft)).expect("the relay gets the gap");
        assert_eq!(timestamps(&got[..at]), vec![0, 33]);
        assert_eq!(timestamps(&got[at..]), vec![113]);
        assert!(!got.iter().any(|i| matches!(i, PlayerItem::End)), "the relay is still attached");
        let got = drain(&mut player).await;
        assert!(!got.iter().any(|i| matches!(i, PlayerItem::End)), "the player is still attached");
        let ts = timestamps(&got);
        assert_eq!(ts, vec![0, 33, 113], "the new session starts at its keyframe, timestamps go on");
        assert_eq!(m.frames_dropped.with_label_values(&["slow_player"]).get(), 0, "waiting for it is no drop");
        tx.send(StreamEvent::End);
        assert!(matches!(drain(&mut player).await[..], [PlayerItem::End]), "the end of the grace ends the player");
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
        let mut tx = FanoutSender::new(16, 30);
        let mut feed = PlayerFeed::new(sub_of(&tx, vec![], &m, protocol), m.clone());
        let mut out = Vec::new();
        feed.next_batch(&mut out, 64).await; // metadata
        for i in 0..40 {
            tx.send(StreamEvent::Frame(frame(MediaKind::Video, i * 33, i == 0)));
        }
        // The ring (16) overflowed: the player must skip everything up to the next keyframe.
        for i in 40..45 {
            tx.send(StreamEvent::Frame(frame(MediaKind::Video, i * 33, i == 42)));
        }
        tx.send(StreamEvent::End);
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

    /// A coalescing feed past its start (metadata and a first keyframe taken), with the stream's open batch closed
    /// (metadata completes a batch), so the tests below start in phase with the batch clock.
    async fn started_coalescing(tx: &mut FanoutSender, m: &Arc<Metrics>) -> PlayerFeed {
        let mut feed = PlayerFeed::new(sub(tx, vec![], m), m.clone());
        feed.coalesce();
        tx.send(StreamEvent::Frame(frame(MediaKind::Video, 0, true)));
        tx.send(StreamEvent::Metadata(Bytes::from_static(b"m")));
        let mut out = Vec::new();
        while out.len() < 3 {
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

    /// Which of `frames` (kind, timestamp) complete a batch of a clock holding `hold_ms`.
    fn rings(hold_ms: u32, frames: &[(MediaKind, u32)]) -> Vec<u32> {
        let mut clock = BatchClock { hold_ms, ..Default::default() };
        frames
            .iter()
            .filter(|(kind, ts)| clock.completes(&StreamEvent::Frame(frame(*kind, *ts, false))))
            .map(|(_, ts)| *ts)
            .collect()
    }

    #[test]
    fn the_batch_clock_completes_a_batch_every_two_video_frames_at_33_ms() {
        use MediaKind::{Audio, Video};
        // 30 fps video, ~43 fps audio (AAC at 44.1 kHz), as FLV timestamps.
        let mut frames = Vec::new();
        for i in 0..12u32 {
            frames.push((Video, i * 1000 / 30));
            frames.push((Audio, i * 1000 / 30 + 10));
            if i % 3 != 2 {
                frames.push((Audio, i * 1000 / 30 + 30));
            }
        }
        frames.sort_by_key(|f| f.1);
        assert_eq!(rings(33, &frames), vec![33, 100, 166, 233, 300, 366], "two video frames per batch");
        assert_eq!(rings(66, &frames), vec![66, 166, 266, 366], "three");
        assert_eq!(rings(0, &frames).len(), 12, "one: audio rides with the next video frame");
    }

    #[test]
    fn the_batch_clock_rings_at_once_for_headers_metadata_the_end_and_audio_only_streams() {
        let mut clock = BatchClock { hold_ms: 33, ..Default::default() };
        let mut ring = |ev: StreamEvent| clock.completes(&ev);
        let audio = |ts| StreamEvent::Frame(frame(MediaKind::Audio, ts, false));
        let video = |ts| StreamEvent::Frame(frame(MediaKind::Video, ts, false));
        assert!(ring(audio(0)), "no video yet: every frame");
        assert!(ring(audio(23)));
        let mut header = frame(MediaKind::Video, 40, true);
        header.header = true;
        assert!(ring(StreamEvent::Frame(header)));
        // From now on the stream has video: audio alone waits for it up to hold + AUDIO_HOLD_MS (a video stall).
        assert!(!ring(audio(46)));
        assert!(!ring(audio(69)));
        assert!(!ring(audio(96)));
        assert!(ring(audio(129)));
        assert!(!ring(video(140)));
        assert!(ring(video(173)));
        assert!(!ring(video(206)));
        assert!(ring(StreamEvent::Metadata(Bytes::from_static(b"m"))));
        assert!(!ring(video(239)));
        assert!(ring(StreamEvent::End));
    }

    #[tokio::test]
    async fn a_coalescing_player_waits_for_the_batch_to_complete() {
        let m = Arc::new(Metrics::new());
        let mut tx = FanoutSender::new(16, 33);
        let mut feed = started_coalescing(&mut tx, &m).await;
        use MediaKind::{Audio, Video};
        tx.send(StreamEvent::Frame(frame(Audio, 20, false)));
        tx.send(StreamEvent::Frame(frame(Video, 33, false)));
        let mut out = Vec::new();
        let held = tokio::time::timeout(Duration::from_millis(50), feed.next_batch(&mut out, 64)).await;
        assert!(held.is_err(), "one video frame waits for the next");
        assert!(out.is_empty(), "the frames of an open batch stay in the ring until it completes");
        tx.send(StreamEvent::Frame(frame(Audio, 43, false)));
        tx.send(StreamEvent::Frame(frame(Video, 66, false)));
        assert!(feed.next_batch(&mut out, 64).await);
        assert_eq!(kinds(&out), vec![Some(Audio), Some(Video), Some(Audio), Some(Video)]);
        // Metadata is never held.
        tx.send(StreamEvent::Frame(frame(Video, 100, false)));
        tx.send(StreamEvent::Metadata(Bytes::from_static(b"m")));
        let mut out = Vec::new();
        assert!(feed.next_batch(&mut out, 64).await);
        assert_eq!(kinds(&out), vec![Some(Video), None]);
    }

    #[tokio::test]
    async fn coalescing_holds_audio_for_the_next_video_frame_and_releases_it_after_the_hold_limit() {
        let m = Arc::new(Metrics::new());
        let mut tx = FanoutSender::new(16, 0);
        let mut feed = started_coalescing(&mut tx, &m).await;
        use MediaKind::{Audio, Video};
        tx.send(StreamEvent::Frame(frame(Audio, 10, false)));
        tx.send(StreamEvent::Frame(frame(Audio, 30, false)));
        let mut out = Vec::new();
        let held = tokio::time::timeout(Duration::from_millis(50), feed.next_batch(&mut out, 64)).await;
        assert!(held.is_err(), "audio alone must wait for video");
        tx.send(StreamEvent::Frame(frame(Video, 33, false)));
        assert!(feed.next_batch(&mut out, 64).await);
        assert_eq!(kinds(&out), vec![Some(Audio), Some(Audio), Some(Video)]);
        // Video stalls: audio goes out once it spans AUDIO_HOLD_MS.
        for ts in [100, 123, 146, 169] {
            tx.send(StreamEvent::Frame(frame(Audio, ts, false)));
        }
        let mut out = Vec::new();
        assert!(feed.next_batch(&mut out, 64).await);
        assert_eq!(out.len(), 4);
        // The end of the stream releases held audio.
        tx.send(StreamEvent::Frame(frame(Audio, 190, false)));
        tx.send(StreamEvent::End);
        let mut out = Vec::new();
        assert!(feed.next_batch(&mut out, 64).await);
        assert_eq!(out.len(), 2);
        assert!(matches!(out[1], PlayerItem::End));
        let mut out = Vec::new();
        assert!(!feed.next_batch(&mut out, 64).await, "the feed ends after its End item");
    }

    #[tokio::test]
    async fn a_coalescing_player_drains_a_cut_batch_without_waiting_and_ends_when_the_stream_is_dropped() {
        let m = Arc::new(Metrics::new());
        let mut tx = FanoutSender::new(64, 30);
        let mut feed = started_coalescing(&mut tx, &m).await;
        for i in 1..=10 {
            tx.send(StreamEvent::Frame(frame(MediaKind::Video, 100 * i, false)));
        }
        // Every frame completed a batch; the feed takes 4 per call and must not wait for a ring for the rest.
        let mut sizes = Vec::new();
        while sizes.iter().sum::<usize>() < 10 {
            let mut out = Vec::new();
            let got = tokio::time::timeout(Duration::from_millis(200), feed.next_batch(&mut out, 4)).await;
            assert_eq!(got.ok(), Some(true), "the rest of a cut batch goes at once: {sizes:?}");
            sizes.push(out.len());
        }
        assert_eq!(sizes, vec![4, 4, 2]);
        drop(tx);
        let mut out = Vec::new();
        let got = tokio::time::timeout(Duration::from_millis(200), feed.next_batch(&mut out, 4)).await;
        assert_eq!(got.ok(), Some(true));
        assert!(matches!(out[..], [PlayerItem::End]));
    }

    #[tokio::test]
    async fn batch_byte_budget_splits_bursts() {
        let m = Arc::new(Metrics::new());
        let tx = FanoutSender::new(16, 30);
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

    /// A live stream in real time: each batch reaches the player as soon as it is complete (two frames, so the
    /// older one waits one frame interval), never later.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_coalescing_player_gets_each_batch_when_it_completes() {
        let m = Arc::new(Metrics::new());
        let mut tx = FanoutSender::new(256, 33);
        let mut feed = PlayerFeed::new(sub(&tx, vec![], &m), m.clone());
        feed.coalesce();
        let t0 = tokio::time::Instant::now();
        let player = tokio::spawn(async move {
            let (mut out, mut worst, mut writes) = (Vec::new(), Duration::ZERO, 0);
            while feed.next_batch(&mut out, 64).await {
                writes += 1;
                for item in out.drain(..) {
                    if let PlayerItem::Frame(f, _) = item {
                        worst = worst.max(t0.elapsed().saturating_sub(Duration::from_millis(f.timestamp.into())));
                    }
                }
            }
            (worst, writes)
        });
        for i in 0..30u32 {
            let ts = i * 1000 / 30;
            tokio::time::sleep_until(t0 + Duration::from_millis(ts.into())).await;
            tx.send(StreamEvent::Frame(frame(MediaKind::Video, ts, i == 0)));
        }
        tx.send(StreamEvent::End);
        let (worst, writes) = player.await.unwrap();
        assert!(worst < Duration::from_millis(150), "a frame waited {worst:?}");
        assert!((14..=18).contains(&writes), "30 frames in batches of two (+ metadata, end): {writes} writes");
    }
}
