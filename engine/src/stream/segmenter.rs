//! The segmenter actor: one per stream, fed every frame by its stream actor, cutting segments on keyframes into
//! an in-memory [`Playlist`]: CMAF (fMP4) segments with LL-HLS parts by default
//! ([`super::cmaf_segmenter::CmafSegmenter`]), or MPEG-TS segments (`hls.format = "ts"`, this file).
//!
//! Segments start at a keyframe once the open one reaches `hls.segment_duration_secs`, and every one begins with
//! PAT/PMT, an AUD and the SPS/PPS, so each is independently decodable. A publisher reconnect or a codec change
//! opens the next segment with a discontinuity. Playlist requests that arrive before the first segment exists
//! wait for it (bounded by the caller), so a player that starts with the publisher just sees a slower first load.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use ractor::{Actor, ActorProcessingErr, ActorRef};
use tokio::sync::watch;
use tracing::{debug, warn};

use super::cmaf_segmenter::CmafSegmenter;
use super::hls_viewers::PollMeter;
use super::ports::Resume;
use super::queue::QueueBudget;
use crate::config::{HlsConfig, HlsFormat};
use crate::formats::aac::AacConfig;
use crate::formats::avc::{self, AvcConfig};
use crate::formats::playlist::{Playlist, Segment};
use crate::formats::ts::TsMuxer;
use crate::formats::StreamKey;
use crate::formats::{Codec, MediaFrame, MediaKind};
use crate::metrics::Metrics;

/// 90 kHz offset added to every timestamp so PCR (slightly before DTS) never goes negative.
const TS_OFFSET_90K: u64 = 90_000;
/// A keyframe this close to the target still closes the segment (timestamp jitter of ms-precision sources).
const CUT_TOLERANCE_MS: u64 = 100;
/// AAC frames per audio PES.
const AUDIO_FRAMES_PER_PES: usize = 5;
/// Without a keyframe for this many target durations, cut anyway (the segment will not start with an IDR).
const FORCED_CUT_TARGETS: u64 = 10;
/// A segment larger than this is cut anyway.
const MAX_SEGMENT_BYTES: usize = 64 << 20;
/// Audio frames seen without any video before the stream is treated as audio-only.
const AUDIO_ONLY_AFTER_FRAMES: u32 = 50;

/// Messages to a segmenter.
pub enum SegmenterMsg {
    /// A frame on the stream's timeline.
    Frame(MediaFrame),
    /// The publisher left: close the open segment.
    PublisherLeft,
    /// The next segment starts a new discontinuity (publisher reconnected).
    Discontinuity,
    /// The stream ended for good: close the open segment, add `EXT-X-ENDLIST`.
    EndList,
    /// Handle nothing for this long (`STROM_TEST_HOOKS=1` only: the backpressure test's stalled segmenter).
    Stall(Duration),
    /// Answered once every message before it is handled (and what it changed published).
    Sync(ractor::RpcReplyPort<()>),
}

/// What a segmenter publishes for its readers, replaced whole (never changed in place) each time a segment is
/// added or the playlist ends: HTTP handlers and the cluster export read it without a message to the segmenter,
/// so a playlist poll or a segment fetch never queues behind the frames in its mailbox.
#[derive(Debug, Default)]
pub struct HlsView {
    /// The media playlist text; `None` until the first segment.
    pub playlist: Option<Bytes>,
    /// `EXT-X-ENDLIST` is set.
    pub ended: bool,
    /// The media sequence number the next segment gets.
    pub next_msn: u64,
    /// The discontinuity number of the newest segment.
    pub discontinuity: u64,
    /// The delta update of the playlist (`_HLS_skip=YES`), when it has segments to skip.
    pub playlist_skip: Option<Bytes>,
    /// LL-HLS: `(msn, part)` of the first part not complete yet (`None`: no parts, MPEG-TS).
    pub next_part: Option<(u64, u64)>,
    /// The playlist's target duration, seconds.
    pub target_secs: u64,
    /// Every file held (segments listed and retained, parts, init segments), by name.
    segments: Vec<(String, Bytes)>,
    /// The finished segments held (listed and retained), oldest first, as a recorder reads them: it catches up
    /// by media sequence number, so it misses none unless it falls a whole window behind.
    pub finished: Arc<[Arc<FinishedSegment>]>,
    /// The stream time (ms) of the newest media frame the segmenter had taken when it published this view: at or
    /// past the end of everything listed. A node that takes the stream over continues its timeline after it.
    pub timeline_ms: Option<u32>,
    /// The part the preload hint names, while it is produced (CMAF with `hls.stream_hinted_parts` only; another
    /// node follows it from the owner, see `cluster::hls`).
    pub growing: Option<Arc<super::cmaf_segmenter::GrowingPart>>,
}

/// A finished segment with what a recording needs to list it (see [`HlsView::finished`]).
#[derive(Debug)]
pub struct FinishedSegment {
    /// Media sequence number.
    pub msn: u64,
    /// Its live file name.
    pub name: String,
    /// Duration in seconds.
    pub duration: f64,
    /// Wall-clock time of its first frame.
    pub program_date_time: SystemTime,
    /// A discontinuity precedes it (publisher reconnect, codec change).
    pub discontinuity: bool,
    /// Its bytes: fMP4 fragments or MPEG-TS.
    pub data: Bytes,
    /// The file extension its bytes need (`m4s` or `ts`).
    pub ext: &'static str,
    /// The init segment it needs (fMP4): name and bytes.
    pub init: Option<(String, Bytes)>,
}

/// The finished segments of `playlist` for a view; `init` looks up an init segment by name.
pub fn finished_of(playlist: &Playlist, init: impl Fn(&str) -> Option<Bytes>) -> Arc<[Arc<FinishedSegment>]> {
    playlist
        .segments()
        .map(|s| {
            Arc::new(FinishedSegment {
                msn: s.msn,
                name: s.name.clone(),
                duration: s.duration,
                program_date_time: s.program_date_time,
                discontinuity: s.discontinuity,
                data: s.data.clone(),
                ext: if s.map.is_some() { "m4s" } else { "ts" },
                init: s.map.as_ref().and_then(|m| Some((m.clone(), init(m)?))),
            })
        })
        .collect()
}

impl HlsView {
    /// A view of what a segmenter holds.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        playlist: Option<Bytes>,
        playlist_skip: Option<Bytes>,
        ended: bool,
        next_msn: u64,
        discontinuity: u64,
        next_part: Option<(u64, u64)>,
        target_secs: u64,
        files: Vec<(String, Bytes)>,
        finished: Arc<[Arc<FinishedSegment>]>,
        timeline_ms: Option<u32>,
    ) -> HlsView {
        HlsView {
            playlist,
            ended,
            next_msn,
            discontinuity,
            playlist_skip,
            next_part,
            target_secs,
            segments: files,
            finished,
            timeline_ms,
            growing: None,
        }
    }

    /// A segment's (or part's, or init segment's) bytes by file name.
    pub fn segment(&self, name: &str) -> Option<Bytes> {
        self.segments.iter().find(|(n, _)| n == name).map(|(_, b)| b.clone())
    }

    /// Whether a blocking playlist request for `(msn, part)` can be answered (rfc8216bis 6.2.5.2: the playlist
    /// holds that part, or that segment when `part` is `None`, or a later one).
    pub fn has(&self, msn: u64, part: Option<u64>) -> bool {
        if self.ended {
            return true;
        }
        match (self.next_part, part) {
            (Some(next), Some(p)) => (msn, p) < next,
            (Some((open, _)), None) => msn < open,
            (None, _) => msn < self.next_msn,
        }
    }
}

/// Why a blocking playlist request gets no playlist.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Blocking {
    /// No playlist (yet): the stream has no segment.
    NotFound,
    /// The request is too far ahead of the live edge (answered with 400).
    TooFarAhead,
    /// The part did not appear within the wait (answered with 503).
    Timeout,
    /// The request waited on another node's playlist, and the stream became this node's own meanwhile (its
    /// publisher came here): ask again, of this node's segmenter.
    Moved,
}

/// The readers' side of a segmenter (cheap to clone): its latest [`HlsView`] and the HLS viewer estimate.
#[derive(Clone)]
pub struct HlsReader {
    view: watch::Receiver<Arc<HlsView>>,
    meter: PollMeter,
}

impl HlsReader {
    /// The media playlist; waits up to `wait` for the first segment (`None` if there is none by then, or the
    /// stream ended without one). Counts the poll for the viewer estimate.
    pub async fn playlist(&self, wait: Duration) -> Option<Bytes> {
        self.meter.poll();
        let mut rx = self.view.clone();
        let ready = tokio::time::timeout(wait, rx.wait_for(|v| v.playlist.is_some() || v.ended)).await;
        let view = match ready {
            Ok(Ok(v)) => v.clone(),
            _ => return None,
        };
        view.playlist.clone()
    }

    /// A blocking playlist reload (`_HLS_msn`, `_HLS_part`, `_HLS_skip`): waits until the playlist holds that part
    /// (or segment), for at most `wait`. Requests more than two segments (or three parts) ahead of the live edge
    /// are refused at once, as rfc8216bis asks. When the playlist does not change at all for `quiet` (the
    /// publisher is away: reconnecting, or its node went), the playlist as it is is answered: the player asks
    /// again, instead of its request timing out (hls.js gives a blocking reload `max(3 × part target, 0.8 ×
    /// target duration)`) and counting as an error.
    pub async fn playlist_blocking(
        &self,
        msn: u64,
        part: Option<u64>,
        skip: bool,
        wait: Duration,
        quiet: Duration,
        metrics: &Metrics,
    ) -> Result<Bytes, Blocking> {
        self.meter.poll();
        let mut now = self.view();
        if now.playlist.is_none() && !now.ended {
            // No segment yet (a stream that has just started, or a new owner continuing another node's
            // playlist): its first part comes within moments; wait for it up to `quiet`.
            let mut rx = self.view.clone();
            let first = tokio::time::timeout(quiet.min(wait), rx.wait_for(|v| v.playlist.is_some() || v.ended)).await;
            now = match first {
                Ok(Ok(v)) => v.clone(),
                _ => return Err(Blocking::NotFound),
            };
        }
        if too_far_ahead(&now, msn, part) {
            return Err(Blocking::TooFarAhead);
        }
        let mut rx = self.view.clone();
        let started = std::time::Instant::now();
        let deadline = tokio::time::Instant::now() + wait;
        metrics.hls_parked.inc();
        let ready = loop {
            let view = rx.borrow_and_update().clone();
            if view.has(msn, part) {
                break Ok(view);
            }
            let now = tokio::time::Instant::now();
            if now >= deadline {
                break Err(Blocking::Timeout);
            }
            match tokio::time::timeout_at(deadline.min(now + quiet), rx.changed()).await {
                Ok(Ok(())) => {}
                // Quiet (or the stream is gone): the playlist as it is.
                Ok(Err(_)) => break Ok(view),
                Err(_) if tokio::time::Instant::now() < deadline => break Ok(view),
                Err(_) => break Err(Blocking::Timeout),
            }
        };
        metrics.hls_parked.dec();
        metrics.hls_block_wait.observe(started.elapsed().as_secs_f64());
        let view = ready?;
        let text = if skip { view.playlist_skip.clone().or(view.playlist.clone()) } else { view.playlist.clone() };
        text.ok_or(Blocking::NotFound)
    }

    /// A file by name; a part named by the preload hint (not complete yet) is waited for, up to `wait`.
    pub async fn file(&self, name: &str, wait: Duration, metrics: &Metrics) -> Option<Bytes> {
        if let Some(b) = self.view().segment(name) {
            return Some(b);
        }
        let hinted = |v: &HlsView| {
            v.playlist.as_ref().is_some_and(|p| {
                std::str::from_utf8(p)
                    .is_ok_and(|t| t.contains(&format!("#EXT-X-PRELOAD-HINT:TYPE=PART,URI=\"{name}\"")))
            })
        };
        if !hinted(&self.view()) {
            return None;
        }
        let mut rx = self.view.clone();
        let started = std::time::Instant::now();
        metrics.hls_parked.inc();
        let got = match tokio::time::timeout(wait, rx.wait_for(|v| v.segment(name).is_some() || v.ended)).await {
            Ok(Ok(v)) => v.segment(name),
            _ => None,
        };
        metrics.hls_parked.dec();
        metrics.hls_block_wait.observe(started.elapsed().as_secs_f64());
        got
    }

    /// The part `name` while it is produced (the preload hint's, not complete yet): its chunks so far and each
    /// one to come. `None` when `name` is not that part (complete already, or another file).
    pub fn growing(&self, name: &str) -> Option<watch::Receiver<super::cmaf_segmenter::Growth>> {
        let view = self.view();
        let g = view.growing.as_ref().filter(|g| g.name == name)?;
        let rx = g.subscribe();
        // Complete and listed meanwhile: the whole part is the answer.
        (view.segment(name).is_none()).then_some(rx)
    }

    /// The latest view.
    pub fn view(&self) -> Arc<HlsView> {
        self.view.borrow().clone()
    }

    /// A receiver of every new view (the cluster export pushes each to the other nodes).
    pub fn watch(&self) -> watch::Receiver<Arc<HlsView>> {
        self.view.clone()
    }

    /// Estimated HLS players.
    pub fn viewers(&self) -> i64 {
        self.meter.viewers()
    }
}

/// rfc8216bis 6.2.5.2: `_HLS_msn` more than two segments past the last one, or `_HLS_part` more than the
/// Advance Part Limit (3 parts, for part targets under a second) past the newest part.
pub fn too_far_ahead(v: &HlsView, msn: u64, part: Option<u64>) -> bool {
    match v.next_part {
        Some((open, parts)) => msn > open + 1 || (msn == open && part.is_some_and(|p| p > parts + 3)),
        None => msn > v.next_msn + 1,
    }
}

impl HlsView {
    /// The names of the init segments held (for diagnostics).
    pub fn init_names(&self) -> Vec<String> {
        self.segments.iter().map(|(n, _)| n.clone()).filter(|n| super::cmaf_segmenter::is_init_segment(n)).collect()
    }

    /// Where this view stands, for another node.
    pub fn position(&self) -> HlsPosition {
        HlsPosition {
            next_msn: self.next_msn,
            discontinuity: self.discontinuity,
            ended: self.ended,
            playlist: self.playlist.clone(),
            timeline_ms: self.timeline_ms,
        }
    }
}

/// Where a stream's HLS stands: what another node needs to continue it at the same URL.
#[derive(Debug, Clone, PartialEq)]
pub struct HlsPosition {
    /// The media sequence number the next segment gets.
    pub next_msn: u64,
    /// The discontinuity number of the newest segment.
    pub discontinuity: u64,
    /// `EXT-X-ENDLIST` is set.
    pub ended: bool,
    /// The playlist text, if there is a segment.
    pub playlist: Option<Bytes>,
    /// The stream time (ms) of the newest media frame taken (see [`HlsView::timeline_ms`]).
    pub timeline_ms: Option<u32>,
}

impl ractor::Message for SegmenterMsg {}

/// Segmenter arguments.
pub struct SegmenterArgs {
    /// The stream (for logs).
    pub key: StreamKey,
    /// HLS settings.
    pub hls: HlsConfig,
    /// Node metrics.
    pub metrics: Arc<Metrics>,
    /// Continue the playlist another node had (its `next_msn`, discontinuity number and segments): the first
    /// segment here starts with a discontinuity, media sequence numbers go on increasing.
    pub resume: Option<Resume>,
    /// Filled in `pre_start` with the readers' side, for the stream's handle.
    pub reader: Arc<std::sync::OnceLock<HlsReader>>,
    /// Bytes of frames the stream actor has queued here (see [`super::queue`]); subtracted as they are taken.
    pub queue: Arc<QueueBudget>,
}

/// The segmenter actor.
pub struct Segmenter;

struct OpenSegment {
    buf: Vec<u8>,
    start_ms: u64,
    pdt: SystemTime,
    discontinuity: bool,
}

/// Segmenter state (see the module docs).
pub struct SegmenterState {
    key: StreamKey,
    hls: HlsConfig,
    metrics: Arc<Metrics>,
    playlist: Playlist,
    incarnation: String,
    next_msn: u64,
    muxer: Option<TsMuxer>,
    muxer_layout: (bool, bool),
    avc: Option<AvcConfig>,
    aac: Option<AacConfig>,
    current: Option<OpenSegment>,
    pending_discontinuity: bool,
    anchor: Option<(SystemTime, u64)>,
    clock: Unwrap,
    jumps: TimestampJumps,
    last_ms: u64,
    frame_interval_ms: u64,
    audio_buf: Vec<u8>,
    audio_pts: u64,
    audio_frames: usize,
    audio_without_video: u32,
    scratch: Vec<u8>,
    finished: Arc<[Arc<FinishedSegment>]>,
    view: watch::Sender<Arc<HlsView>>,
    meter: PollMeter,
    warned: bool,
    /// The stream time of the newest media frame taken (see [`HlsView::timeline_ms`]).
    newest_ts: Option<u32>,
}

/// A forward step of a publisher's timestamps beyond this is a jump, not media.
pub const JUMP_FORWARD_MS: u32 = 10_000;
/// A step back beyond this (past the newest timestamp seen) is a jump; less is interleaving jitter.
pub const JUMP_BACK_MS: u32 = 5_000;

/// Notices jumps in a publisher's timeline (a hostile or broken encoder, a clock reset, wrap-around): both
/// segmenters close the open segment there and start the next one with a discontinuity, instead of writing a
/// segment hours long (which would make the target duration, and every player's reload interval, hours long).
#[derive(Debug, Default)]
pub struct TimestampJumps {
    newest: Option<u32>,
}

impl TimestampJumps {
    /// Whether `ts` jumps away from the timeline so far (the timeline then continues from `ts`).
    pub fn jumped(&mut self, ts: u32) -> bool {
        let Some(newest) = self.newest else {
            self.newest = Some(ts);
            return false;
        };
        let jump = if ts >= newest { ts - newest > JUMP_FORWARD_MS } else { newest - ts > JUMP_BACK_MS };
        if jump || ts > newest {
            self.newest = Some(ts);
        }
        jump
    }

    /// A new timeline (the publisher came back).
    pub fn reset(&mut self) {
        self.newest = None;
    }
}

/// Extends 32-bit millisecond timestamps to 64 bits across wrap-around.
#[derive(Debug, Default)]
struct Unwrap {
    last: Option<u32>,
    high: u64,
}

impl Unwrap {
    fn ms(&mut self, ts: u32) -> u64 {
        if let Some(last) = self.last {
            if ts < last && last - ts > u32::MAX / 2 {
                self.high += 1 << 32;
            }
        }
        self.last = Some(ts);
        self.high + u64::from(ts)
    }
}

/// A segmenter's state: one of its two backends.
pub enum Backend {
    /// MPEG-TS segments (`hls.format = "ts"`).
    Ts(Box<SegmenterState>),
    /// CMAF segments and LL-HLS parts.
    Cmaf(Box<CmafSegmenter>),
}

impl Segmenter {
    fn backend(args: SegmenterArgs) -> Backend {
        let next_msn = args.resume.as_ref().map_or(0, |r| r.next_msn);
        let (view, rx) = watch::channel(Arc::new(HlsView { next_msn, ..Default::default() }));
        let target = args.hls.segment_duration_secs.round().max(1.0) as u64;
        let meter = PollMeter::new(target, args.metrics.clone());
        let _ = args.reader.set(HlsReader { view: rx, meter: meter.clone() });
        if args.hls.format_for(args.key.app()) == HlsFormat::Fmp4 {
            let cmaf = CmafSegmenter::new(args.key, &args.hls, args.metrics, args.resume, view, meter);
            return Backend::Cmaf(Box::new(cmaf));
        }
        let now_ms = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default().as_millis();
        let mut playlist = Playlist::new(args.hls.window, args.hls.retained_segments, args.hls.segment_duration_secs);
        playlist.set_dvr(args.hls.dvr_window_secs);
        if let Some(r) = &args.resume {
            playlist.resume_with(r.discontinuity, &r.window);
        }
        Backend::Ts(Box::new(SegmenterState {
            playlist,
            key: args.key,
            hls: args.hls,
            metrics: args.metrics,
            incarnation: format!("{now_ms:x}"),
            next_msn,
            muxer: None,
            muxer_layout: (false, false),
            avc: None,
            aac: None,
            current: None,
            pending_discontinuity: args.resume.is_some(),
            anchor: None,
            clock: Unwrap::default(),
            jumps: TimestampJumps::default(),
            last_ms: 0,
            frame_interval_ms: 33,
            audio_buf: Vec::new(),
            audio_pts: 0,
            audio_frames: 0,
            audio_without_video: 0,
            scratch: Vec::new(),
            finished: Arc::new([]),
            view,
            meter,
            warned: false,
            newest_ts: args.resume.as_ref().and_then(|r| r.timeline_ms),
        }))
    }
}

impl Actor for Segmenter {
    type Msg = SegmenterMsg;
    type State = (Backend, Arc<QueueBudget>);
    type Arguments = SegmenterArgs;

    async fn pre_start(
        &self,
        _: ActorRef<SegmenterMsg>,
        args: SegmenterArgs,
    ) -> Result<(Backend, Arc<QueueBudget>), ActorProcessingErr> {
        let queue = args.queue.clone();
        Ok((Self::backend(args), queue))
    }
    async fn post_stop(
        &self,
        _: ActorRef<SegmenterMsg>,
        (st, _): &mut (Backend, Arc<QueueBudget>),
    ) -> Result<(), ActorProcessingErr> {
        match st {
            Backend::Ts(st) => st.meter.clear(),
            Backend::Cmaf(st) => st.clear_meter(),
        }
        Ok(())
    }

    async fn handle(
        &self,
        _: ActorRef<SegmenterMsg>,
        msg: SegmenterMsg,
        (st, queue): &mut (Backend, Arc<QueueBudget>),
    ) -> Result<(), ActorProcessingErr> {
        if let SegmenterMsg::Frame(f) = &msg {
            queue.done(f.flv_body().len());
        }
        if let SegmenterMsg::Stall(d) = &msg {
            tokio::time::sleep(*d).await;
        }
        let st = match st {
            Backend::Ts(st) => st,
            Backend::Cmaf(c) => {
                match msg {
                    SegmenterMsg::Frame(f) => c.on_frame(&f),
                    SegmenterMsg::PublisherLeft => c.publisher_left(),
                    SegmenterMsg::Discontinuity => c.discontinuity(),
                    SegmenterMsg::EndList => c.end_list(),
                    SegmenterMsg::Stall(_) => {}
                    SegmenterMsg::Sync(reply) => {
                        let _ = reply.send(());
                    }
                }
                return Ok(());
            }
        };
        match msg {
            SegmenterMsg::Frame(f) => {
                if !f.header {
                    st.newest_ts = Some(f.timestamp);
                }
                if !f.header && st.jumps.jumped(f.timestamp) {
                    st.metrics.hls_timestamp_jumps.inc();
                    warn!(stream = %st.key, timestamp = f.timestamp, last = st.last_ms, "publisher timestamps jumped: segment closed, next one starts a discontinuity");
                    let end = st.last_ms + st.frame_interval_ms;
                    st.close(end);
                    st.pending_discontinuity = true;
                    st.anchor = None;
                    st.clock = Unwrap::default();
                }
                st.on_frame(&f)
            }
            SegmenterMsg::PublisherLeft => {
                let end = st.last_ms + st.frame_interval_ms;
                st.close(end);
            }
            SegmenterMsg::Discontinuity => {
                st.pending_discontinuity = true;
                st.anchor = None;
                st.clock = Unwrap::default();
                st.jumps.reset();
            }
            SegmenterMsg::EndList => {
                let end = st.last_ms + st.frame_interval_ms;
                st.close(end);
                st.playlist.set_ended(true);
                st.publish();
            }
            SegmenterMsg::Stall(_) => {}
            SegmenterMsg::Sync(reply) => {
                let _ = reply.send(());
            }
        }
        Ok(())
    }
}

impl SegmenterState {
    fn target_ms(&self) -> u64 {
        (self.hls.segment_duration_secs * 1000.0).round() as u64
    }

    fn on_frame(&mut self, f: &MediaFrame) {
        match f.kind {
            MediaKind::Video => self.on_video(f),
            MediaKind::Audio => self.on_audio(f),
        }
    }

    fn drop_frame(&mut self, reason: &str, detail: &dyn std::fmt::Display) {
        self.metrics.frames_dropped.with_label_values(&[reason]).inc();
        if !self.warned {
            self.warned = true;
            warn!(stream = %self.key, reason, %detail, "HLS segmenter dropped a frame (logged once per stream)");
        }
    }

    fn on_video(&mut self, f: &MediaFrame) {
        if f.codec != Codec::Avc {
            return self.drop_frame("unsupported_codec", &"video codec is not H.264");
        }
        if f.header {
            match AvcConfig::parse(&f.payload()) {
                Ok(cfg) => {
                    if self.avc.as_ref().is_some_and(|old| old.sps != cfg.sps || old.pps != cfg.pps) {
                        debug!(stream = %self.key, "new AVC configuration: next segment is a discontinuity");
                        self.pending_discontinuity = true;
                    }
                    self.avc = Some(cfg);
                }
                Err(e) => self.drop_frame("malformed", &e),
            }
        } else if f.samples {
            self.on_avc_nalus(f);
        }
    }

    fn on_avc_nalus(&mut self, f: &MediaFrame) {
        let Some(nal_len) = self.avc.as_ref().map(|c| c.nal_length_size) else {
            return self.drop_frame("no_sequence_header", &"AVC frame before its sequence header");
        };
        let ms = self.clock.ms(f.timestamp);
        if ms > self.last_ms && ms - self.last_ms < 1000 {
            self.frame_interval_ms = ms - self.last_ms;
        }
        let target = self.target_ms();
        let due = match &self.current {
            None => f.keyframe,
            Some(cur) => {
                let elapsed = ms.saturating_sub(cur.start_ms);
                (f.keyframe && (self.pending_discontinuity || elapsed + CUT_TOLERANCE_MS >= target))
                    || elapsed >= target * FORCED_CUT_TARGETS
                    || cur.buf.len() >= MAX_SEGMENT_BYTES
            }
        };
        if due {
            if !f.keyframe {
                self.playlist.set_independent(false);
            }
            self.close(ms);
            self.open(ms);
        }
        self.last_ms = self.last_ms.max(ms);
        if self.current.is_none() {
            return; // waiting for the first keyframe
        }
        self.scratch.clear();
        self.scratch.extend_from_slice(&avc::AUD_NAL);
        let at = self.scratch.len();
        let summary = match avc::avcc_to_annexb(&f.payload(), nal_len, &mut self.scratch) {
            Ok(s) => s,
            Err(e) => return self.drop_frame("malformed", &e),
        };
        if f.keyframe && !summary.has_sps {
            if let Some(cfg) = &self.avc {
                let mut ps = Vec::new();
                avc::write_annexb_parameter_sets(cfg, &mut ps);
                self.scratch.splice(at..at, ps);
            }
        }
        let dts = ms * 90 + TS_OFFSET_90K;
        let pts = (ms as i64 + i64::from(f.cts)).max(ms as i64) as u64 * 90 + TS_OFFSET_90K;
        if let (Some(cur), Some(mux)) = (self.current.as_mut(), self.muxer.as_mut()) {
            if self.muxer_layout.0 {
                mux.write_video(pts, dts, f.keyframe, &self.scratch, &mut cur.buf);
            }
        }
    }

    fn on_audio(&mut self, f: &MediaFrame) {
        if f.codec != Codec::Aac {
            return self.drop_frame("unsupported_codec", &"audio codec is not AAC");
        }
        if f.header {
            match AacConfig::parse(&f.payload()) {
                Ok(cfg) => self.aac = Some(cfg),
                Err(e) => self.drop_frame("malformed", &e),
            }
            return;
        }
        if !f.samples {
            return;
        }
        let payload = f.payload();
        let Some(aac) = self.aac.as_ref() else {
            return self.drop_frame("no_sequence_header", &"AAC frame before its AudioSpecificConfig");
        };
        let header = match aac.adts_header(payload.len()) {
            Ok(h) => h,
            Err(e) => return self.drop_frame("malformed", &e),
        };
        let ms = self.clock.ms(f.timestamp);
        if self.avc.is_none() {
            self.audio_without_video = self.audio_without_video.saturating_add(1);
            if self.audio_without_video > AUDIO_ONLY_AFTER_FRAMES {
                // Audio-only stream: cut on time.
                let due = match &self.current {
                    None => true,
                    Some(cur) => ms.saturating_sub(cur.start_ms) + CUT_TOLERANCE_MS >= self.target_ms(),
                };
                if due {
                    self.close(ms);
                    self.open(ms);
                }
            }
        }
        self.last_ms = self.last_ms.max(ms);
        if self.current.is_none() || !self.muxer_layout.1 {
            return;
        }
        if self.audio_frames == 0 {
            self.audio_pts = ms * 90 + TS_OFFSET_90K;
        }
        self.audio_buf.extend_from_slice(&header);
        self.audio_buf.extend_from_slice(&payload);
        self.audio_frames += 1;
        if self.audio_frames >= AUDIO_FRAMES_PER_PES {
            self.flush_audio();
        }
    }

    fn flush_audio(&mut self) {
        if self.audio_frames > 0 {
            if let (Some(cur), Some(mux)) = (self.current.as_mut(), self.muxer.as_mut()) {
                mux.write_audio(self.audio_pts, &self.audio_buf, &mut cur.buf);
            }
        }
        self.audio_buf.clear();
        self.audio_frames = 0;
    }

    fn open(&mut self, ms: u64) {
        let layout = (self.avc.is_some(), self.aac.is_some());
        let mut discontinuity = std::mem::take(&mut self.pending_discontinuity);
        if self.muxer.is_none() || self.muxer_layout != layout {
            // New elementary streams: new PMT and continuity counters, which players must see as a discontinuity.
            discontinuity |= self.muxer.is_some();
            self.muxer = Some(TsMuxer::new(layout.0, layout.1));
            self.muxer_layout = layout;
        }
        if discontinuity {
            self.anchor = None;
        }
        let (wall, at) = *self.anchor.get_or_insert((SystemTime::now(), ms));
        let pdt = wall + Duration::from_millis(ms.saturating_sub(at));
        let mut buf = Vec::with_capacity(512 * 1024);
        if let Some(mux) = self.muxer.as_mut() {
            mux.write_tables(&mut buf);
        }
        self.current = Some(OpenSegment { buf, start_ms: ms, pdt, discontinuity: discontinuity && self.next_msn > 0 });
    }

    fn close(&mut self, end_ms: u64) {
        self.flush_audio();
        let Some(cur) = self.current.take() else { return };
        let duration = end_ms.saturating_sub(cur.start_ms).max(1) as f64 / 1000.0;
        let msn = self.next_msn;
        self.next_msn += 1;
        self.playlist.push(Segment {
            msn,
            name: format!("{}-{msn}.ts", self.incarnation),
            duration,
            program_date_time: cur.pdt,
            discontinuity: cur.discontinuity,
            data: Bytes::from(cur.buf),
            parts: Vec::new(),
            map: None,
            gap: false,
        });
        self.metrics.hls_segments.inc();
        self.finished = finished_of(&self.playlist, |_| None);
        self.publish();
    }

    /// Publishes the playlist and segments as they are now (a new [`HlsView`]), and refreshes the viewer estimate.
    fn publish(&mut self) {
        let view = HlsView::new(
            self.playlist.render().map(Bytes::from),
            None,
            self.playlist.ended(),
            self.next_msn,
            self.playlist.discontinuity_count(),
            None,
            self.playlist.target_duration(),
            self.playlist.segments().map(|s| (s.name.clone(), s.data.clone())).collect(),
            self.finished.clone(),
            self.newest_ts,
        );
        self.view.send_replace(Arc::new(view));
        self.meter.set_target(self.playlist.target_duration());
    }
}
