//! The segmenter actor: one per stream, fed every frame by its stream actor, cutting MPEG-TS segments on
//! keyframes into an in-memory [`Playlist`].
//!
//! Segments start at a keyframe once the open one reaches `hls.segment_duration_secs`, and every one begins with
//! PAT/PMT, an AUD and the SPS/PPS, so each is independently decodable. A publisher reconnect or a codec change
//! opens the next segment with a discontinuity. Playlist requests that arrive before the first segment exists
//! wait for it (bounded by the caller), so a player that starts with the publisher just sees a slower first load.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use tracing::{debug, warn};

use super::playlist::{Playlist, Segment};
use super::ts::TsMuxer;
use crate::config::HlsConfig;
use crate::media::aac::AacConfig;
use crate::media::avc::{self, AvcConfig};
use crate::media::flv::{AacTag, AvcTag};
use crate::media::{MediaFrame, MediaKind};
use crate::metrics::Metrics;
use crate::stream::StreamKey;

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
/// Playlist requests parked while waiting for the first segment.
const MAX_WAITERS: usize = 10_000;

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
    /// The media playlist (waits for the first segment).
    Playlist(RpcReplyPort<Option<Bytes>>),
    /// A segment by file name.
    Segment(String, RpcReplyPort<Option<Bytes>>),
    /// Estimated HLS viewers.
    Viewers(RpcReplyPort<i64>),
    /// Where the playlist stands (shared with the cluster, so another node can continue it).
    Position(RpcReplyPort<HlsPosition>),
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
    /// Continue the playlist another node had (its `next_msn` and discontinuity number): the first segment here
    /// starts with a discontinuity, media sequence numbers go on increasing.
    pub resume: Option<(u64, u64)>,
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
    last_ms: u64,
    frame_interval_ms: u64,
    audio_buf: Vec<u8>,
    audio_pts: u64,
    audio_frames: usize,
    audio_without_video: u32,
    scratch: Vec<u8>,
    waiters: Vec<RpcReplyPort<Option<Bytes>>>,
    polls: VecDeque<Instant>,
    viewers_reported: i64,
    warned: bool,
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

impl Actor for Segmenter {
    type Msg = SegmenterMsg;
    type State = SegmenterState;
    type Arguments = SegmenterArgs;

    async fn pre_start(
        &self,
        _: ActorRef<SegmenterMsg>,
        args: SegmenterArgs,
    ) -> Result<SegmenterState, ActorProcessingErr> {
        let now_ms = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default().as_millis();
        let mut playlist = Playlist::new(args.hls.window, args.hls.retained_segments, args.hls.segment_duration_secs);
        if let Some((_, discontinuity)) = args.resume {
            playlist.resume_after(discontinuity);
        }
        Ok(SegmenterState {
            playlist,
            key: args.key,
            hls: args.hls,
            metrics: args.metrics,
            incarnation: format!("{now_ms:x}"),
            next_msn: args.resume.map_or(0, |(msn, _)| msn),
            muxer: None,
            muxer_layout: (false, false),
            avc: None,
            aac: None,
            current: None,
            pending_discontinuity: args.resume.is_some(),
            anchor: None,
            clock: Unwrap::default(),
            last_ms: 0,
            frame_interval_ms: 33,
            audio_buf: Vec::new(),
            audio_pts: 0,
            audio_frames: 0,
            audio_without_video: 0,
            scratch: Vec::new(),
            waiters: Vec::new(),
            polls: VecDeque::new(),
            viewers_reported: 0,
            warned: false,
        })
    }

    async fn post_stop(&self, _: ActorRef<SegmenterMsg>, st: &mut SegmenterState) -> Result<(), ActorProcessingErr> {
        st.metrics.viewers.with_label_values(&[crate::metrics::protocol::HLS]).sub(st.viewers_reported);
        Ok(())
    }

    async fn handle(
        &self,
        _: ActorRef<SegmenterMsg>,
        msg: SegmenterMsg,
        st: &mut SegmenterState,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            SegmenterMsg::Frame(f) => st.on_frame(&f),
            SegmenterMsg::PublisherLeft => {
                let end = st.last_ms + st.frame_interval_ms;
                st.close(end);
            }
            SegmenterMsg::Discontinuity => {
                st.pending_discontinuity = true;
                st.anchor = None;
                st.clock = Unwrap::default();
            }
            SegmenterMsg::EndList => {
                let end = st.last_ms + st.frame_interval_ms;
                st.close(end);
                st.playlist.set_ended(true);
                st.wake_waiters();
            }
            SegmenterMsg::Playlist(reply) => {
                st.count_poll();
                match st.playlist.render() {
                    Some(text) => {
                        let _ = reply.send(Some(Bytes::from(text)));
                    }
                    None if st.playlist.ended() || st.waiters.len() >= MAX_WAITERS => {
                        let _ = reply.send(None);
                    }
                    None => st.waiters.push(reply),
                }
            }
            SegmenterMsg::Segment(name, reply) => {
                let _ = reply.send(st.playlist.segment(&name).map(|s| s.data.clone()));
            }
            SegmenterMsg::Position(reply) => {
                let _ = reply.send(HlsPosition {
                    next_msn: st.next_msn,
                    discontinuity: st.playlist.discontinuity_count(),
                    ended: st.playlist.ended(),
                    playlist: st.playlist.render().map(Bytes::from),
                });
            }
            SegmenterMsg::Viewers(reply) => {
                let v = st.update_viewers();
                let _ = reply.send(v);
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
        let tag = match AvcTag::parse(&f.data) {
            Ok(Some(tag)) => tag,
            Ok(None) => return self.drop_frame("unsupported_codec", &"video codec is not H.264"),
            Err(e) => return self.drop_frame("malformed", &e),
        };
        match tag.packet_type {
            0 => match AvcConfig::parse(&tag.payload) {
                Ok(cfg) => {
                    if self.avc.as_ref().is_some_and(|old| old.sps != cfg.sps || old.pps != cfg.pps) {
                        debug!(stream = %self.key, "new AVC configuration: next segment is a discontinuity");
                        self.pending_discontinuity = true;
                    }
                    self.avc = Some(cfg);
                }
                Err(e) => self.drop_frame("malformed", &e),
            },
            1 => self.on_avc_nalus(f, &tag),
            _ => {}
        }
    }

    fn on_avc_nalus(&mut self, f: &MediaFrame, tag: &AvcTag) {
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
        let summary = match avc::avcc_to_annexb(&tag.payload, nal_len, &mut self.scratch) {
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
        let pts = (ms as i64 + i64::from(tag.composition_time)).max(ms as i64) as u64 * 90 + TS_OFFSET_90K;
        if let (Some(cur), Some(mux)) = (self.current.as_mut(), self.muxer.as_mut()) {
            if self.muxer_layout.0 {
                mux.write_video(pts, dts, f.keyframe, &self.scratch, &mut cur.buf);
            }
        }
    }

    fn on_audio(&mut self, f: &MediaFrame) {
        let tag = match AacTag::parse(&f.data) {
            Ok(Some(tag)) => tag,
            Ok(None) => return self.drop_frame("unsupported_codec", &"audio codec is not AAC"),
            Err(e) => return self.drop_frame("malformed", &e),
        };
        if tag.packet_type == 0 {
            match AacConfig::parse(&tag.payload) {
                Ok(cfg) => self.aac = Some(cfg),
                Err(e) => self.drop_frame("malformed", &e),
            }
            return;
        }
        let Some(aac) = self.aac.as_ref() else {
            return self.drop_frame("no_sequence_header", &"AAC frame before its AudioSpecificConfig");
        };
        let header = match aac.adts_header(tag.payload.len()) {
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
        self.audio_buf.extend_from_slice(&tag.payload);
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
        });
        self.metrics.hls_segments.inc();
        self.update_viewers();
        self.wake_waiters();
    }

    fn wake_waiters(&mut self) {
        if self.waiters.is_empty() {
            return;
        }
        let text = self.playlist.render().map(Bytes::from);
        for w in self.waiters.drain(..) {
            let _ = w.send(text.clone());
        }
    }

    fn count_poll(&mut self) {
        self.polls.push_back(Instant::now());
        if self.polls.len() > 100_000 {
            self.polls.pop_front();
        }
        self.update_viewers();
    }

    /// HLS is stateless: a player polls the playlist about once per target duration, so the polls seen in the
    /// last two target durations, halved, estimate the players.
    fn update_viewers(&mut self) -> i64 {
        let window = Duration::from_secs(self.playlist.target_duration().max(1) * 2);
        while self.polls.front().is_some_and(|t| t.elapsed() > window) {
            self.polls.pop_front();
        }
        let v = (self.polls.len() as i64 + 1) / 2;
        let delta = v - self.viewers_reported;
        if delta != 0 {
            self.metrics.viewers.with_label_values(&[crate::metrics::protocol::HLS]).add(delta);
            self.viewers_reported = v;
        }
        v
    }
}
