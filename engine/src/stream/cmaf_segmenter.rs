//! The segmenter's CMAF backend (`hls.format = "fmp4"`, the default): LL-HLS parts and fMP4 segments.
//!
//! The [`Packager`] turns frames into init segments and parts; this state names them, groups parts into segments,
//! keeps the [`Playlist`] (with its parts, `EXT-X-MAP` and preload hint) and publishes an [`HlsView`] at every
//! part, so blocking playlist requests wake as soon as the part they wait for exists.
//!
//! With `hls.stream_hinted_parts` (the default), parts are made of chunks of a quarter of the part target
//! ([`Packager::with_chunks`]) and the part the preload hint names is a [`GrowingPart`] while it is produced, so
//! a request for it is answered chunk by chunk as the publisher's frames arrive, not only once it is complete.
//!
//! Names (unique per stream incarnation, identical on every node since non-owners serve the owner's):
//! `<inc>-init<N>.mp4` (init segments), `<inc>-<msn>.m4s` (segments), `<inc>-p<seq>.m4s` (parts, numbered across
//! segments, so the preload hint names the next part before it is known which segment it opens).

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::{Bytes, BytesMut};
use tokio::sync::watch;
use tracing::warn;

use super::hls_viewers::PollMeter;
use super::ports::Resume;
use super::segmenter::{finished_of, FinishedSegment, HlsView, TimestampJumps};
use crate::config::HlsConfig;
use crate::formats::cmaf::{CmafTargets, Output, Packager};
use crate::formats::playlist::{PartInfo, Playlist, Segment};
use crate::formats::{MediaFrame, MediaKind, StreamKey};
use crate::metrics::Metrics;

/// The part the preload hint names, while it is produced: the chunks made so far (the part is their
/// concatenation) and whether it is complete. Published in [`HlsView::growing`].
#[derive(Debug)]
pub struct GrowingPart {
    /// Its file name (the preload hint's URI).
    pub name: String,
    growth: watch::Sender<Growth>,
}

/// A [`GrowingPart`]'s state.
#[derive(Debug, Clone, Default)]
pub struct Growth {
    /// The part's chunks so far, in order.
    pub chunks: Vec<Bytes>,
    /// Complete: no chunk follows.
    pub done: bool,
}

impl GrowingPart {
    /// An empty part `name` (another node's mirror of its owner's starts this way too).
    pub fn new(name: String) -> Arc<GrowingPart> {
        Arc::new(GrowingPart { name, growth: watch::Sender::new(Growth::default()) })
    }

    /// Its chunks so far and each one to come.
    pub fn subscribe(&self) -> watch::Receiver<Growth> {
        self.growth.subscribe()
    }

    /// Appends the part's next chunk.
    pub fn push(&self, chunk: Bytes) {
        self.growth.send_modify(|g| g.chunks.push(chunk));
    }

    /// The part is complete.
    pub fn finish(&self) {
        self.growth.send_modify(|g| g.done = true);
    }

    /// Whether anyone still reads it.
    pub fn is_read(&self) -> bool {
        self.growth.receiver_count() > 0
    }
}

/// Init segments kept (the current one and those the listed segments still need).
const INITS_KEPT: usize = 4;

struct Open {
    msn: u64,
    parts: Vec<(PartInfo, Bytes)>,
    pdt: SystemTime,
    discontinuity: bool,
    map: Option<String>,
}

/// How a live stream's init segment names end (its media segments and parts end in `.m4s` or `.ts`).
const INIT_SUFFIX: &str = ".mp4";

/// Whether `name`, a live HLS file of a stream, is an init segment.
pub fn is_init_segment(name: &str) -> bool {
    name.ends_with(INIT_SUFFIX)
}

/// State of a CMAF segmenter (see the module docs).
pub struct CmafSegmenter {
    key: StreamKey,
    metrics: Arc<Metrics>,
    playlist: Playlist,
    incarnation: String,
    next_msn: u64,
    part_seq: u64,
    packager: Packager,
    targets: CmafTargets,
    /// The packager's chunk target (0: parts are not sent before they are complete).
    chunk_ms: u32,
    inits: VecDeque<(String, Bytes)>,
    init_count: u32,
    open: Option<Open>,
    pending_discontinuity: bool,
    /// Wall clock at a stream timestamp (ms), for PROGRAM-DATE-TIME.
    anchor: Option<(SystemTime, u64)>,
    /// Parts of completed segments still served (by name), oldest first.
    parts: VecDeque<(u64, String, Bytes)>,
    /// The finished segments for recorders (see [`HlsView::finished`]).
    finished: Arc<[Arc<FinishedSegment>]>,
    view: watch::Sender<Arc<HlsView>>,
    meter: PollMeter,
    warned: bool,
    /// Jumps in the publisher's timestamps (see [`TimestampJumps`]), and the sequence headers to give the packager
    /// that starts after one.
    jumps: TimestampJumps,
    headers: [Option<MediaFrame>; 2],
    jump_warned: bool,
    /// The stream time of the newest media frame taken (see [`HlsView::timeline_ms`]); a resumed playlist starts
    /// from the previous owner's.
    newest_ts: Option<u32>,
    /// The part the preload hint names, as it grows.
    growing: Option<Arc<GrowingPart>>,
}

impl CmafSegmenter {
    /// A CMAF segmenter publishing on `view`; `resume`: continue another node's playlist (see
    /// [`super::segmenter::SegmenterArgs::resume`]).
    pub fn new(
        key: StreamKey,
        hls: &HlsConfig,
        metrics: Arc<Metrics>,
        resume: Option<Resume>,
        view: watch::Sender<Arc<HlsView>>,
        meter: PollMeter,
    ) -> CmafSegmenter {
        let now_ms = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default().as_millis();
        let mut playlist = Playlist::new(hls.window, hls.retained_segments, hls.segment_duration_secs);
        playlist.enable_parts(f64::from(hls.part_target_ms) / 1000.0);
        playlist.set_dvr(hls.dvr_window_secs);
        if let Some(r) = &resume {
            playlist.resume_with(r.discontinuity, &r.window);
        }
        let targets = CmafTargets {
            segment_ms: (hls.segment_duration_secs * 1000.0).round() as u32,
            part_ms: hls.part_target_ms,
        };
        // Chunks of a quarter of the part target: a preload-hinted part goes out in three or four pieces as it is
        // produced, for ~100 bytes of `moof` per chunk and track (about 13 kb/s more than a fragment per part at
        // 30 fps and the default 200 ms parts).
        let chunk_ms = if hls.stream_hinted_parts { (targets.part_ms / 4).max(1) } else { 0 };
        let seeded = resume.as_ref().is_some_and(|r| !r.window.is_empty());
        let mut segmenter = CmafSegmenter {
            key,
            metrics,
            playlist,
            incarnation: format!("{now_ms:x}"),
            next_msn: resume.as_ref().map_or(0, |r| r.next_msn),
            part_seq: 0,
            packager: Packager::new(targets).with_chunks(chunk_ms),
            targets,
            chunk_ms,
            inits: VecDeque::new(),
            init_count: 0,
            open: None,
            pending_discontinuity: resume.is_some(),
            anchor: None,
            parts: VecDeque::new(),
            finished: Arc::new([]),
            view,
            meter,
            warned: false,
            jumps: TimestampJumps::default(),
            headers: [None, None],
            jump_warned: false,
            newest_ts: resume.as_ref().and_then(|r| r.timeline_ms),
            growing: None,
        };
        if seeded {
            // The previous owner's segments are this node's playlist until its own first part joins them.
            segmenter.publish();
        }
        segmenter
    }

    /// The stream is gone here: its HLS viewers leave the metric.
    pub fn clear_meter(&self) {
        self.meter.clear();
    }

    /// A frame on the stream's timeline.
    pub fn on_frame(&mut self, f: &MediaFrame) {
        if !f.header {
            self.newest_ts = Some(f.timestamp);
        }
        if f.header {
            self.headers[usize::from(f.kind == MediaKind::Audio)] = Some(f.clone());
        } else if self.jumps.jumped(f.timestamp) {
            self.metrics.hls_timestamp_jumps.inc();
            if !std::mem::replace(&mut self.jump_warned, true) {
                warn!(stream = %self.key, timestamp = f.timestamp, "publisher timestamps jumped: segment closed, next one starts a discontinuity (logged once per stream)");
            }
            self.publisher_left();
            self.restart_timeline();
        }
        // PROGRAM-DATE-TIME is the wall clock at which frames reach the segmenter (not when their part is done).
        self.anchor.get_or_insert((SystemTime::now(), u64::from(f.timestamp)));
        let mut out = Vec::new();
        if let Err(d) = self.packager.push(f, &mut out) {
            self.metrics.frames_dropped.with_label_values(&[d.reason]).inc();
            if !self.warned {
                self.warned = true;
                warn!(stream = %self.key, reason = d.reason, detail = %d.detail, "HLS segmenter dropped a frame (logged once per stream)");
            }
        }
        self.take(out);
    }

    /// The publisher left: the open part and segment close.
    pub fn publisher_left(&mut self) {
        let mut out = Vec::new();
        self.packager.flush(&mut out);
        self.take(out);
        self.close_segment();
        self.publish();
    }

    /// The next segment starts a discontinuity (the publisher came back).
    pub fn discontinuity(&mut self) {
        // The returning publisher's sequence headers follow (they replace these if they differ).
        self.restart_timeline();
        self.jumps.reset();
    }

    fn restart_timeline(&mut self) {
        // A part some of whose chunks went out is finished, on the old timeline, whatever comes next (none is open
        // here as a rule: the publisher left, and that closed it).
        let mut out = Vec::new();
        self.packager.flush(&mut out);
        self.take(out);
        self.pending_discontinuity = true;
        self.anchor = None;
        // A returning publisher's (or a jumped) timeline is continuous from here, but its encoder may start over:
        // a fresh packager starts at its first keyframe with a new init segment.
        self.packager = Packager::new(self.targets).with_chunks(self.chunk_ms);
        let mut out = Vec::new();
        for h in self.headers.clone().into_iter().flatten() {
            let _ = self.packager.push(&h, &mut out);
        }
        self.take(out);
    }

    /// The stream ended for good.
    pub fn end_list(&mut self) {
        self.publisher_left();
        self.playlist.set_preload_hint(None);
        self.playlist.set_ended(true);
        // No part comes: a request waiting for the hinted one ends (it has no chunk: the publisher left and that
        // closed the last part).
        self.growing = None;
        self.publish();
    }

    fn take(&mut self, out: Vec<Output>) {
        for o in out {
            match o {
                Output::Init(data) => {
                    self.init_count += 1;
                    let name = format!("{}-init{}{INIT_SUFFIX}", self.incarnation, self.init_count);
                    if self.init_count > 1 {
                        self.pending_discontinuity = true;
                    }
                    self.inits.push_back((name, data));
                    while self.inits.len() > INITS_KEPT {
                        self.inits.pop_front();
                    }
                }
                Output::Chunk(data) => {
                    if let Some(g) = &self.growing {
                        g.push(data);
                    }
                }
                Output::Part(p) => {
                    if p.segment_start || self.open.is_none() {
                        self.close_segment();
                        self.open_segment(p.start_ms);
                    }
                    self.part_seq += 1;
                    let info = PartInfo {
                        name: format!("{}-p{}.m4s", self.incarnation, self.part_seq),
                        duration: p.duration,
                        independent: p.independent,
                    };
                    self.playlist.push_part(info.clone());
                    let hint = format!("{}-p{}.m4s", self.incarnation, self.part_seq + 1);
                    self.playlist.set_preload_hint(Some(hint.clone()));
                    if let Some(o) = self.open.as_mut() {
                        o.parts.push((info, p.data));
                    }
                    self.metrics.hls_parts.inc();
                    // The view listing the part is out before its growing form says it is complete, so a request
                    // that saw the part grow finds it whole from then on.
                    let next = (self.chunk_ms > 0).then(|| GrowingPart::new(hint));
                    let done = std::mem::replace(&mut self.growing, next);
                    self.publish();
                    if let Some(g) = done {
                        g.finish();
                    }
                }
            }
        }
    }

    fn open_segment(&mut self, start_ms: u64) {
        let discontinuity = std::mem::take(&mut self.pending_discontinuity) && self.next_msn > 0;
        let (wall, at) = *self.anchor.get_or_insert((SystemTime::now(), start_ms));
        let pdt = if start_ms >= at {
            wall + Duration::from_millis(start_ms - at)
        } else {
            wall - Duration::from_millis(at - start_ms)
        };
        let map = self.inits.back().map(|(n, _)| n.clone());
        let msn = self.next_msn;
        self.playlist.open_segment(msn, discontinuity, map.clone(), pdt);
        self.open = Some(Open { msn, parts: Vec::new(), pdt, discontinuity, map });
    }

    fn close_segment(&mut self) {
        let Some(open) = self.open.take() else { return };
        if open.parts.is_empty() {
            return;
        }
        let duration: f64 = open.parts.iter().map(|(p, _)| p.duration).sum();
        let mut data = BytesMut::with_capacity(open.parts.iter().map(|(_, b)| b.len()).sum());
        for (_, b) in &open.parts {
            data.extend_from_slice(b);
        }
        for (info, bytes) in &open.parts {
            self.parts.push_back((open.msn, info.name.clone(), bytes.clone()));
        }
        self.next_msn = open.msn + 1;
        self.playlist.push(Segment {
            msn: open.msn,
            name: format!("{}-{}.m4s", self.incarnation, open.msn),
            duration: duration.max(0.001),
            program_date_time: open.pdt,
            discontinuity: open.discontinuity,
            data: data.freeze(),
            parts: open.parts.into_iter().map(|(p, _)| p).collect(),
            map: open.map,
            gap: false,
        });
        // Parts are served while their segment is listed with parts (three target durations) and a little longer.
        let keep_from = self.next_msn.saturating_sub(6);
        while self.parts.front().is_some_and(|(msn, _, _)| *msn < keep_from) {
            self.parts.pop_front();
        }
        self.metrics.hls_segments.inc();
        let inits = &self.inits;
        self.finished = finished_of(&self.playlist, |m| inits.iter().find(|(n, _)| n == m).map(|(_, b)| b.clone()));
        tracing::trace!(stream = %self.key, msn = self.next_msn - 1, "segment");
    }

    /// Publishes the playlist and every file it may name (a new [`HlsView`]).
    fn publish(&mut self) {
        let mut files: Vec<(String, Bytes)> = self.inits.iter().cloned().collect();
        files.extend(self.playlist.segments().map(|s| (s.name.clone(), s.data.clone())));
        files.extend(self.parts.iter().map(|(_, n, b)| (n.clone(), b.clone())));
        if let Some(o) = &self.open {
            files.extend(o.parts.iter().map(|(p, b)| (p.name.clone(), b.clone())));
        }
        let view = HlsView::new(
            self.playlist.render().map(Bytes::from),
            self.playlist.render_skip().map(Bytes::from),
            self.playlist.ended(),
            self.next_msn,
            self.playlist.discontinuity_count(),
            self.playlist.next_part(),
            self.playlist.target_duration(),
            files,
            self.finished.clone(),
            self.newest_ts,
        );
        let mut view = view;
        view.growing = self.growing.clone();
        self.view.send_replace(Arc::new(view));
        self.meter.set_target(self.playlist.target_duration());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::formats::playlist::segments_in;

    const SPS: &[u8] = &[
        0x67, 0x64, 0x00, 0x0d, 0xac, 0xd9, 0x41, 0x41, 0xfb, 0x01, 0x10, 0x00, 0x00, 0x03, 0x00, 0x10, 0x00, 0x00,
        0x03, 0x03, 0xc0, 0xf1, 0x42, 0x99, 0x60,
    ];
    const PPS: &[u8] = &[0x68, 0xeb, 0xe3, 0xcb, 0x22, 0xc0];

    fn header() -> MediaFrame {
        let mut v = vec![0x17, 0, 0, 0, 0, 1, SPS[1], SPS[2], SPS[3], 0xff, 0xe1];
        v.extend_from_slice(&(SPS.len() as u16).to_be_bytes());
        v.extend_from_slice(SPS);
        v.push(1);
        v.extend_from_slice(&(PPS.len() as u16).to_be_bytes());
        v.extend_from_slice(PPS);
        MediaFrame::parse(MediaKind::Video, 0, Bytes::from(v)).unwrap()
    }

    fn video(ts: u32, key: bool) -> MediaFrame {
        let mut b = vec![if key { 0x17 } else { 0x27 }, 1, 0, 0, 0];
        b.extend_from_slice(&[0, 0, 0, 2, if key { 0x65 } else { 0x41 }, ts as u8]);
        MediaFrame::parse(MediaKind::Video, ts, Bytes::from(b)).unwrap()
    }

    /// A segmenter of stream `live/t` with `hls`, the receiver of its views, and its metrics.
    fn segmenter(hls: &HlsConfig) -> (CmafSegmenter, watch::Receiver<Arc<HlsView>>, Arc<Metrics>) {
        let metrics = Arc::new(Metrics::new());
        let (tx, rx) = watch::channel(Arc::new(HlsView::default()));
        let meter = PollMeter::new(1, metrics.clone());
        let seg = CmafSegmenter::new(StreamKey::new("live", "t").unwrap(), hls, metrics.clone(), None, tx, meter);
        (seg, rx, metrics)
    }

    /// The part the preload hint names grows in the view as frames arrive: its chunks come one by one, it is
    /// complete only once the view lists it, and its chunks are the listed part byte for byte.
    #[test]
    fn the_hinted_part_grows_chunk_by_chunk_and_ends_as_the_listed_part() {
        let hls = HlsConfig { segment_duration_secs: 1.0, part_target_ms: 200, ..HlsConfig::default() };
        let (mut seg, rx, _) = segmenter(&hls);
        seg.on_frame(&header());
        let mut i = 0u32;
        let mut frame = |seg: &mut CmafSegmenter| {
            seg.on_frame(&video((i * 1000 + 15) / 30, i % 30 == 0));
            i += 1;
        };
        while rx.borrow().playlist.is_none() {
            frame(&mut seg);
        }
        let view = rx.borrow().clone();
        let growing = view.growing.clone().expect("the hinted part grows in the view");
        let text = String::from_utf8(view.playlist.clone().unwrap().to_vec()).unwrap();
        assert!(text.contains(&format!("#EXT-X-PRELOAD-HINT:TYPE=PART,URI=\"{}\"", growing.name)), "{text}");
        assert!(view.segment(&growing.name).is_none());
        let mut growth = growing.subscribe();
        let mut seen = Vec::new();
        for _ in 0..20 {
            frame(&mut seg);
            let g = growth.borrow_and_update().clone();
            if g.chunks.len() > seen.len() {
                seen.push(rx.borrow().segment(&growing.name).is_some());
            }
            if g.done {
                let whole = rx.borrow().segment(&growing.name).expect("listed before it is said complete");
                assert_eq!(whole, g.chunks.concat(), "the part is its chunks");
                assert_eq!(g.chunks.len(), 3, "a 200 ms part in chunks of two frames");
                assert_eq!(seen, [false, false, true], "chunks came before the part was listed (the last with it)");
                let next = rx.borrow().growing.clone().unwrap();
                assert_ne!(next.name, growing.name, "the next hinted part grows now");
                return;
            }
        }
        panic!("the hinted part never completed");
    }

    /// With `hls.stream_hinted_parts = false` nothing grows: a part is one fragment, listed once complete.
    #[test]
    fn without_streamed_parts_a_part_is_one_fragment() {
        let (mut seg, rx, _) = segmenter(&HlsConfig { stream_hinted_parts: false, ..HlsConfig::default() });
        seg.on_frame(&header());
        for i in 0..90u32 {
            seg.on_frame(&video((i * 1000 + 15) / 30, i % 30 == 0));
        }
        let view = rx.borrow().clone();
        assert!(view.growing.is_none());
        let text = String::from_utf8(view.playlist.clone().unwrap().to_vec()).unwrap();
        let part = text.lines().rfind(|l| l.starts_with("#EXT-X-PART:")).unwrap();
        let name = part.split("URI=\"").nth(1).unwrap().trim_end_matches('"');
        let data = view.segment(name).unwrap();
        let moof = u32::from_be_bytes([data[0], data[1], data[2], data[3]]) as usize;
        let mdat = u32::from_be_bytes([data[moof], data[moof + 1], data[moof + 2], data[moof + 3]]) as usize;
        assert_eq!(moof + mdat, data.len(), "one moof + mdat");
    }

    /// A publisher whose timestamps jump an hour ahead, then wrap around `u32::MAX`: each jump closes the segment
    /// and opens the next with a discontinuity; no segment lasts longer than its GOP, and the target duration
    /// stays at the configured one.
    #[test]
    fn timestamp_jumps_start_a_discontinuity_instead_of_an_hour_long_segment() {
        let (mut seg, rx, metrics) =
            segmenter(&HlsConfig { segment_duration_secs: 1.0, window: 20, ..HlsConfig::default() });
        seg.on_frame(&header());
        for start in [0u32, 3_600_000, u32::MAX - 1500] {
            for i in 0..90u32 {
                seg.on_frame(&video(start.wrapping_add(i * 1000 / 30), i % 30 == 0));
            }
        }
        seg.end_list();
        let text = String::from_utf8(rx.borrow().playlist.clone().unwrap().to_vec()).unwrap();
        let (segments, ended) = segments_in(&text);
        assert!(ended);
        assert_eq!(segments.iter().filter(|s| s.discontinuity).count(), 3, "{text}"); // the hour, the wrap twice
        assert!(segments.iter().all(|s| s.duration < 1.5), "{text}");
        assert!(text.contains("#EXT-X-TARGETDURATION:1\n"), "{text}");
        assert_eq!(metrics.hls_timestamp_jumps.get(), 3);
    }
}
