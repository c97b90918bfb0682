//! CMAF packaging: a stream's frames into an init segment and parts (one fMP4 fragment each), grouped into
//! segments that start on keyframes. Pure and deterministic, like the TS muxer: frames in, [`Output`]s out; the
//! segmenter decides what to publish.
//!
//! - **Segments** start at a video keyframe once the open segment spans the target duration (audio-only: at any
//!   frame), so every segment is independently decodable, as with MPEG-TS.
//! - **Parts** close before they would exceed the part target: a video frame whose (expected) end lies beyond it
//!   starts the next part. A part that starts with a keyframe is *independent* (LL-HLS `INDEPENDENT=YES`).
//! - **Durations.** A video frame's duration is known when the next one arrives (the next DTS), so the newest
//!   video frame stays pending and parts close on the arrival of the frame after them. AAC frames are 1024 samples
//!   each in a track whose timescale is the sample rate; their decode times follow the stream's timestamps.
//! - **Chunks** ([`Packager::with_chunks`]): a part is then a sequence of fragments (CMAF chunks) of about a
//!   given duration, each emitted as [`Output::Chunk`] as soon as its samples are known, so a part can be sent
//!   while it is being produced (an LL-HLS preload hint); the part is their concatenation. Without chunks a part
//!   is one fragment.
//! - **Configuration.** The init segment holds a track per sequence header seen before the first sample. A
//!   changed or new sequence header ends the segment; the next segment (at a keyframe) comes with a new init
//!   segment (a discontinuity for HLS).

use bytes::Bytes;

use super::aac::AacConfig;
use super::avc::AvcConfig;
use super::fmp4::{self, Run, Sample, Track, TrackKind, VIDEO_TIMESCALE};
use super::{Codec, MediaFrame, MediaKind};

/// Track id of video in strom's init segments.
pub const VIDEO_TRACK: u32 = 1;
/// Track id of audio in strom's init segments.
pub const AUDIO_TRACK: u32 = 2;

/// Samples per AAC frame.
const AAC_FRAME: u32 = 1024;

/// Targets of a [`Packager`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CmafTargets {
    /// Segment target duration in milliseconds: a segment closes at the first keyframe past it.
    pub segment_ms: u32,
    /// Part target in milliseconds: no part is longer, unless one frame alone is (a gap in the source).
    pub part_ms: u32,
}

/// What the packager produced.
#[derive(Debug, Clone, PartialEq)]
pub enum Output {
    /// A new init segment: the parts that follow use it (after the first one: a discontinuity).
    Init(Bytes),
    /// The next chunk of the open part (only with [`Packager::with_chunks`]): a `moof` + `mdat` fragment. The
    /// chunks before a [`Output::Part`] are that part's bytes, in order.
    Chunk(Bytes),
    /// A finished part.
    Part(Part),
}

/// A frame the packager could not use: `reason` is the `strom_frames_dropped_total` label.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{reason}: {detail}")]
pub struct Dropped {
    /// `malformed`, `no_sequence_header` or `unsupported_codec`.
    pub reason: &'static str,
    /// What was wrong.
    pub detail: String,
}

impl Dropped {
    fn new(reason: &'static str, detail: impl Into<String>) -> Dropped {
        Dropped { reason, detail: detail.into() }
    }
}

/// Checks that an AVC sample's NAL units, each behind a `len`-byte length prefix, fill it exactly: a sample that
/// does not would reach every player's decoder as garbage.
fn check_avcc(sample: &[u8], len: u8) -> Result<(), Dropped> {
    let len = usize::from(len);
    let mut at = 0;
    while at < sample.len() {
        if at + len > sample.len() {
            return Err(Dropped::new("malformed", format!("NAL length prefix cut short at byte {at}")));
        }
        let n = sample[at..at + len].iter().fold(0usize, |acc, b| (acc << 8) | usize::from(*b));
        at += len;
        if n == 0 || at + n > sample.len() {
            return Err(Dropped::new("malformed", format!("NAL unit of {n} bytes at byte {at} overruns the sample")));
        }
        at += n;
    }
    if sample.is_empty() {
        return Err(Dropped::new("malformed", "empty AVC sample"));
    }
    Ok(())
}

/// One part: an fMP4 fragment (`moof` + `mdat`), or its chunks' fragments one after the other.
#[derive(Debug, Clone, PartialEq)]
pub struct Part {
    /// The fragment (or fragments).
    pub data: Bytes,
    /// Duration in seconds (of the video track, or of audio in an audio-only stream).
    pub duration: f64,
    /// Starts with a keyframe (every part of an audio-only stream does).
    pub independent: bool,
    /// The first part of a new segment.
    pub segment_start: bool,
    /// Stream timestamp (ms) of the part's first frame.
    pub start_ms: u64,
}

#[derive(Debug, Clone)]
struct Pending {
    dts: u64,
    cts: i32,
    sync: bool,
    data: Bytes,
}

/// The packager (see the module docs).
#[derive(Debug)]
pub struct Packager {
    targets: CmafTargets,
    video_config: Option<(Bytes, u16, u16)>,
    /// The NAL unit length prefix size of the AVC configuration.
    nal_length_size: u8,
    audio_config: Option<(Bytes, u32, u16)>,
    /// The configuration the current init segment was made from; `None` until the first init.
    init_made_of: Option<(Option<Bytes>, Option<Bytes>)>,
    /// A sequence header changed: the next segment needs a new init segment.
    config_changed: bool,
    /// Video samples of the open part (durations known), and the newest frame (duration not yet known).
    video: Vec<Sample>,
    video_base: Option<u64>,
    video_last: Option<Pending>,
    /// The last video frame duration seen (90 kHz).
    video_step: u64,
    /// The recent video frame durations, to predict the next one by their mean (timestamps in ms make 30 fps
    /// alternate between 33 and 34 ms, but six frames are always 200 ms).
    recent_steps: [u64; 8],
    step_at: usize,
    audio: Vec<Sample>,
    audio_base: Option<u64>,
    /// Decode time (sample-rate ticks) of the next AAC frame.
    audio_next: Option<u64>,
    /// Start of the open part and segment (90 kHz, or audio ticks for audio-only), and its first frame's ms.
    part_start: Option<u64>,
    part_start_ms: u64,
    part_independent: bool,
    segment_start: Option<u64>,
    new_segment: bool,
    sequence: u32,
    started: bool,
    /// Chunk target, ms; 0: a part is one fragment.
    chunk_ms: u32,
    /// The chunks of the open part so far.
    chunks: Vec<Bytes>,
}

impl Packager {
    /// A packager for `targets`.
    pub fn new(targets: CmafTargets) -> Packager {
        Packager {
            targets,
            video_config: None,
            nal_length_size: 4,
            audio_config: None,
            init_made_of: None,
            config_changed: false,
            video: Vec::new(),
            video_base: None,
            video_last: None,
            video_step: u64::from(VIDEO_TIMESCALE / 30),
            recent_steps: [0; 8],
            step_at: 0,
            audio: Vec::new(),
            audio_base: None,
            audio_next: None,
            part_start: None,
            part_start_ms: 0,
            part_independent: false,
            segment_start: None,
            new_segment: true,
            sequence: 0,
            started: false,
            chunk_ms: 0,
            chunks: Vec::new(),
        }
    }

    /// Parts made of chunks: a chunk closes once its video spans `chunk_ms` (audio-only: its audio), and is
    /// emitted at once ([`Output::Chunk`]). 0: no chunks.
    pub fn with_chunks(mut self, chunk_ms: u32) -> Packager {
        self.chunk_ms = chunk_ms;
        self
    }

    fn has_video(&self) -> bool {
        self.video_config.is_some()
    }

    /// Takes one frame of the stream (timestamps continuous, decode order). A frame HLS cannot carry is dropped,
    /// and the error says why.
    pub fn push(&mut self, frame: &MediaFrame, out: &mut Vec<Output>) -> Result<(), Dropped> {
        match (frame.kind, frame.codec) {
            (MediaKind::Video, Codec::Avc) if frame.header => {
                if !self.has_video() {
                    // An audio-only stream gains video: its open part, on the audio clock, closes first (the
                    // next part starts at a keyframe, in a new segment with a new init).
                    if let (Some(_), Some(end)) = (self.part_start, self.audio_next) {
                        self.close_part(end, out);
                    }
                }
                self.video_header(frame.payload())?
            }
            (MediaKind::Audio, Codec::Aac) if frame.header => self.audio_header(frame.payload())?,
            (MediaKind::Video, Codec::Avc) if frame.samples => match self.video_config.is_some() {
                true => {
                    check_avcc(&frame.payload(), self.nal_length_size)?;
                    self.video_frame(frame, out)
                }
                false => return Err(Dropped::new("no_sequence_header", "AVC frame before its sequence header")),
            },
            (MediaKind::Audio, Codec::Aac) if frame.samples => match self.audio_config.is_some() {
                true => self.audio_frame(frame, out),
                false => return Err(Dropped::new("no_sequence_header", "AAC frame before its AudioSpecificConfig")),
            },
            (MediaKind::Video, Codec::Other(_)) => {
                return Err(Dropped::new("unsupported_codec", "video codec is not H.264"));
            }
            (MediaKind::Audio, Codec::Other(_)) => {
                return Err(Dropped::new("unsupported_codec", "audio codec is not AAC"));
            }
            _ => {}
        }
        Ok(())
    }

    /// The stream ended (or its publisher left): the open part is closed with what it has.
    pub fn flush(&mut self, out: &mut Vec<Output>) {
        self.flush_until(None, out)
    }

    /// Like [`Packager::flush`], with the last video frame lasting until `end_ms` (a VOD chunk knows where the
    /// next chunk starts, so the join has no gap and no overlap).
    pub fn flush_at(&mut self, end_ms: u64, out: &mut Vec<Output>) {
        self.flush_until(Some(end_ms), out)
    }

    fn flush_until(&mut self, end_ms: Option<u64>, out: &mut Vec<Output>) {
        if let Some(last) = self.video_last.take() {
            // The last frame's duration is not known: up to `end_ms`, else the mean of the recent ones, in whole
            // ms.
            let tick = u64::from(VIDEO_TIMESCALE / 1000);
            let step = match end_ms.map(|e| e * tick) {
                Some(end) if end > last.dts => end - last.dts,
                _ => (self.predicted_step() + tick / 2) / tick * tick,
            };
            self.video.push(Sample { duration: step as u32, cts_offset: last.cts, sync: last.sync, data: last.data });
            let end = last.dts + step;
            self.close_part(end, out);
        } else if !self.has_video() {
            if let Some(end) = self.audio_next {
                self.close_part(end, out);
            }
        }
        self.new_segment = true;
    }

    fn video_header(&mut self, record: Bytes) -> Result<(), Dropped> {
        let cfg = AvcConfig::parse(&record).map_err(|e| Dropped::new("malformed", e.to_string()))?;
        let changed = self.video_config.as_ref().map(|c| &c.0) != Some(&record);
        if changed {
            let (w, h) = (cfg.width.min(u32::from(u16::MAX)) as u16, cfg.height.min(u32::from(u16::MAX)) as u16);
            self.video_config = Some((record, w, h));
            self.nal_length_size = cfg.nal_length_size;
            self.config_changed |= self.init_made_of.is_some();
        }
        Ok(())
    }

    fn audio_header(&mut self, asc: Bytes) -> Result<(), Dropped> {
        let cfg = AacConfig::parse(&asc).map_err(|e| Dropped::new("malformed", e.to_string()))?;
        let changed = self.audio_config.as_ref().map(|c| &c.0) != Some(&asc);
        if changed {
            let channels = match cfg.channel_config {
                7 => 8,
                c => u16::from(c.max(1)),
            };
            self.audio_config = Some((asc, cfg.sample_rate.max(1), channels));
            self.config_changed |= self.init_made_of.is_some();
        }
        Ok(())
    }

    fn init(&mut self, out: &mut Vec<Output>) {
        let mut tracks = Vec::new();
        if let Some((record, width, height)) = &self.video_config {
            tracks.push(Track {
                id: VIDEO_TRACK,
                kind: TrackKind::Avc { record: record.clone(), width: *width, height: *height },
            });
        }
        if let Some((config, sample_rate, channels)) = &self.audio_config {
            tracks.push(Track {
                id: AUDIO_TRACK,
                kind: TrackKind::Aac { config: config.clone(), sample_rate: *sample_rate, channels: *channels },
            });
        }
        self.init_made_of =
            Some((self.video_config.as_ref().map(|c| c.0.clone()), self.audio_config.as_ref().map(|c| c.0.clone())));
        self.config_changed = false;
        out.push(Output::Init(fmp4::init_segment(&tracks)));
    }

    fn audio_rate(&self) -> u64 {
        self.audio_config.as_ref().map_or(48_000, |c| u64::from(c.1))
    }

    fn video_frame(&mut self, frame: &MediaFrame, out: &mut Vec<Output>) {
        let dts = u64::from(frame.timestamp) * u64::from(VIDEO_TIMESCALE / 1000);
        if !self.started {
            if !frame.keyframe {
                return; // a stream starts at a keyframe
            }
            self.started = true;
        }
        if let Some(last) = self.video_last.take() {
            let step = dts.saturating_sub(last.dts).max(1);
            self.video_step = step;
            // A step above a second is a gap in the source, not the frame rate.
            if step < u64::from(VIDEO_TIMESCALE) {
                self.recent_steps[self.step_at % 8] = step;
                self.step_at += 1;
            }
            // Whether it fits was decided on a predicted duration; one that turns out longer (the frame rate
            // dropped, or a repeated picture follows live frames) would carry the part past its target, so it
            // starts a part of its own instead (alone it may still be longer: nothing can split one frame).
            let tick = u64::from(VIDEO_TIMESCALE / 1000);
            if let Some(start) = self.part_start.filter(|s| last.dts > *s) {
                if (last.dts + step - start + tick / 2) / tick > u64::from(self.targets.part_ms) {
                    self.close_part(last.dts, out);
                    self.open_part(last.dts, last.dts / tick, last.sync, out);
                }
            }
            self.video_base.get_or_insert(last.dts);
            self.video.push(Sample {
                duration: step.min(u64::from(u32::MAX)) as u32,
                cts_offset: last.cts,
                sync: last.sync,
                data: last.data,
            });
            let span: u64 = self.video.iter().map(|s| u64::from(s.duration)).sum();
            if self.chunk_ms > 0 && span >= u64::from(self.chunk_ms) * tick {
                self.flush_chunk(out);
            }
        }
        // Where does this frame go: a new segment, a new part, or the open part?
        let seg_elapsed = self.segment_start.map_or(0, |s| dts.saturating_sub(s));
        let seg_due = frame.keyframe
            && (self.segment_start.is_none()
                || self.config_changed
                || seg_elapsed >= u64::from(self.targets.segment_ms) * u64::from(VIDEO_TIMESCALE / 1000));
        let part_len = self.part_start.map_or(0, |s| dts.saturating_sub(s));
        let next_step = self.predicted_step();
        // The part would end at the next frame after this one: in whole ms, as the timestamps are.
        let tick = u64::from(VIDEO_TIMESCALE / 1000);
        let predicted_end_ms = (part_len + next_step + tick / 2) / tick;
        let part_due = predicted_end_ms > u64::from(self.targets.part_ms);
        if self.part_start.is_some() && (seg_due || part_due) {
            self.close_part(dts, out);
        }
        if seg_due {
            self.new_segment = true;
        }
        if self.part_start.is_none() {
            self.open_part(dts, u64::from(frame.timestamp), frame.keyframe, out);
        }
        self.video_last = Some(Pending { dts, cts: frame.cts * 90, sync: frame.keyframe, data: frame.payload() });
    }

    /// The next video frame's duration, predicted: the mean of the recent ones (90 kHz).
    fn predicted_step(&self) -> u64 {
        let known = self.recent_steps.iter().filter(|s| **s > 0);
        match known.clone().count() {
            0 => self.video_step,
            n => known.sum::<u64>() / n as u64,
        }
    }

    fn audio_frame(&mut self, frame: &MediaFrame, out: &mut Vec<Output>) {
        let rate = self.audio_rate();
        let at = u64::from(frame.timestamp) * rate / 1000;
        if self.has_video() {
            if self.part_start.is_none() {
                return; // audio joins the first video part
            }
        } else {
            self.started = true;
            let part_len = self.part_start.map_or(0, |s| at.saturating_sub(s));
            let seg_elapsed = self.segment_start.map_or(0, |s| at.saturating_sub(s));
            let seg_due = self.segment_start.is_none()
                || self.config_changed
                || seg_elapsed >= u64::from(self.targets.segment_ms) * rate / 1000;
            let part_due = part_len + u64::from(AAC_FRAME) > u64::from(self.targets.part_ms) * rate / 1000;
            if self.part_start.is_some() && (seg_due || part_due) {
                let end = self.audio_next.unwrap_or(at);
                self.close_part(end, out);
            }
            if seg_due {
                self.new_segment = true;
            }
            if self.part_start.is_none() {
                self.open_part(at, u64::from(frame.timestamp), frame.keyframe, out);
            }
        }
        // Decode times follow the frame count, re-anchored on the stream's clock when they drift a frame apart
        // (a gap in the source).
        let next = match self.audio_next {
            Some(n) if n.abs_diff(at) < u64::from(AAC_FRAME) => n,
            _ => at,
        };
        self.audio_base.get_or_insert(next);
        self.audio.push(Sample { duration: AAC_FRAME, cts_offset: 0, sync: true, data: frame.payload() });
        self.audio_next = Some(next + u64::from(AAC_FRAME));
        let span = self.audio.len() as u64 * u64::from(AAC_FRAME);
        if !self.has_video() && self.chunk_ms > 0 && span >= u64::from(self.chunk_ms) * rate / 1000 {
            self.flush_chunk(out);
        }
    }

    /// Opens a part at `at` (part clock) whose first frame has timestamp `ms` and is a keyframe or not.
    fn open_part(&mut self, at: u64, ms: u64, keyframe: bool, out: &mut Vec<Output>) {
        if self.new_segment && (self.init_made_of.is_none() || self.config_changed) {
            self.init(out);
        }
        if self.new_segment {
            self.segment_start = Some(at);
        }
        self.part_start = Some(at);
        self.part_start_ms = ms;
        self.part_independent = !self.has_video() || keyframe;
    }

    /// Emits the samples taken since the last chunk as the open part's next chunk (if there are any).
    fn flush_chunk(&mut self, out: &mut Vec<Output>) {
        let mut runs = Vec::new();
        if !self.video.is_empty() {
            runs.push(Run {
                track_id: VIDEO_TRACK,
                base_decode_time: self.video_base.take().unwrap_or(0),
                samples: std::mem::take(&mut self.video),
            });
        }
        if !self.audio.is_empty() {
            runs.push(Run {
                track_id: AUDIO_TRACK,
                base_decode_time: self.audio_base.take().unwrap_or(0),
                samples: std::mem::take(&mut self.audio),
            });
        }
        self.video_base = None;
        self.audio_base = None;
        if runs.is_empty() {
            return;
        }
        self.sequence = self.sequence.wrapping_add(1);
        let data = fmp4::fragment(self.sequence, &runs);
        if self.chunk_ms > 0 {
            out.push(Output::Chunk(data.clone()));
        }
        self.chunks.push(data);
    }

    /// Closes the open part at `end` (its end time in the part clock) and emits it.
    fn close_part(&mut self, end: u64, out: &mut Vec<Output>) {
        let Some(start) = self.part_start.take() else { return };
        self.flush_chunk(out);
        let data = match self.chunks.len() {
            0 => return,
            1 => self.chunks.pop().unwrap_or_default(),
            _ => {
                let mut data = bytes::BytesMut::with_capacity(self.chunks.iter().map(Bytes::len).sum());
                for c in self.chunks.drain(..) {
                    data.extend_from_slice(&c);
                }
                data.freeze()
            }
        };
        let timescale = if self.has_video() { u64::from(VIDEO_TIMESCALE) } else { self.audio_rate() };
        out.push(Output::Part(Part {
            data,
            duration: end.saturating_sub(start) as f64 / timescale as f64,
            independent: self.part_independent,
            segment_start: std::mem::take(&mut self.new_segment),
            start_ms: self.part_start_ms,
        }));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    fn video(ts: u32, key: bool) -> MediaFrame {
        let mut b = vec![if key { 0x17 } else { 0x27 }, 1, 0, 0, 0];
        b.extend_from_slice(&[0, 0, 0, 2, 0x65, ts as u8]);
        MediaFrame::parse(MediaKind::Video, ts, Bytes::from(b)).unwrap()
    }

    fn audio(ts: u32) -> MediaFrame {
        MediaFrame::parse(MediaKind::Audio, ts, Bytes::from(vec![0xaf, 1, 0x21, ts as u8])).unwrap()
    }

    fn headers() -> Vec<MediaFrame> {
        let sps: &[u8] = &[
            0x67, 0x64, 0x00, 0x0d, 0xac, 0xd9, 0x41, 0x41, 0xfb, 0x01, 0x10, 0x00, 0x00, 0x03, 0x00, 0x10, 0x00, 0x00,
            0x03, 0x03, 0xc0, 0xf1, 0x42, 0x99, 0x60,
        ];
        let pps: &[u8] = &[0x68, 0xeb, 0xe3, 0xcb, 0x22, 0xc0];
        let mut v = vec![0x17, 0, 0, 0, 0, 1, sps[1], sps[2], sps[3], 0xff, 0xe1];
        v.extend_from_slice(&(sps.len() as u16).to_be_bytes());
        v.extend_from_slice(sps);
        v.push(1);
        v.extend_from_slice(&(pps.len() as u16).to_be_bytes());
        v.extend_from_slice(pps);
        vec![
            MediaFrame::parse(MediaKind::Video, 0, Bytes::from(v)).unwrap(),
            MediaFrame::parse(MediaKind::Audio, 0, Bytes::from_static(&[0xaf, 0, 0x12, 0x10])).unwrap(),
        ]
    }

    fn run(frames: impl IntoIterator<Item = MediaFrame>, targets: CmafTargets) -> Vec<Output> {
        let mut p = Packager::new(targets);
        let mut out = Vec::new();
        for f in frames {
            let _ = p.push(&f, &mut out);
        }
        p.flush(&mut out);
        out
    }

    /// 30 fps video with a keyframe every `gop` frames, and 44.1 kHz AAC, for `secs`.
    fn av(secs: u32, gop: u32) -> Vec<MediaFrame> {
        let mut frames = headers();
        let mut a = 0u32;
        for i in 0..secs * 30 {
            let ts = i * 1000 / 30;
            while a * 1024 * 1000 / 44_100 <= ts {
                frames.push(audio(a * 1024 * 1000 / 44_100));
                a += 1;
            }
            frames.push(video(ts, i % gop == 0));
        }
        frames
    }

    fn parts(out: &[Output]) -> Vec<&Part> {
        out.iter().filter_map(|o| if let Output::Part(p) = o { Some(p) } else { None }).collect()
    }

    #[test]
    fn parts_stay_within_the_target_and_segments_start_on_keyframes() {
        let out = run(av(10, 60), CmafTargets { segment_ms: 2000, part_ms: 500 });
        assert!(matches!(out[0], Output::Init(_)), "init first");
        assert_eq!(out.iter().filter(|o| matches!(o, Output::Init(_))).count(), 1);
        let parts = parts(&out);
        let mut segment = Vec::new();
        let mut segments = Vec::new();
        for p in &parts {
            assert!(p.duration <= 0.5 + 1e-9, "part of {} s exceeds the 0.5 s target", p.duration);
            if p.segment_start && !segment.is_empty() {
                segments.push(std::mem::take(&mut segment));
            }
            segment.push(*p);
            if p.segment_start {
                assert!(p.independent, "a segment starts with an independent part");
            }
        }
        segments.push(segment);
        assert_eq!(segments.len(), 5, "10 s at a 2 s GOP: five segments");
        for s in &segments[..4] {
            let d: f64 = s.iter().map(|p| p.duration).sum();
            assert!((d - 2.0).abs() < 0.01, "segment of {d} s");
            assert_eq!(s.len(), 4, "four 0.5 s parts per 2 s segment");
            assert!(s[1..].iter().all(|p| !p.independent), "no keyframe inside a GOP");
        }
        let total: f64 = parts.iter().map(|p| p.duration).sum();
        assert!((total - 10.0).abs() < 0.05, "{total}");
    }

    #[test]
    fn a_frame_longer_than_predicted_starts_a_part_of_its_own() {
        // 30 fps, then the same picture repeated every 200 ms (the stream's filler while its publisher is away):
        // the first long frame was predicted at 33 ms and would have carried its part to 367 ms.
        let mut frames = headers();
        let mut ts: Vec<u32> = (0..20u32).map(|i| (i * 1000 + 15) / 30).collect();
        let last = *ts.last().unwrap();
        ts.extend((1..=10).map(|k| last + 200 * k));
        frames.extend(ts.iter().enumerate().map(|(i, &t)| video(t, i == 0 || i >= 20)));
        let out = run(frames, CmafTargets { segment_ms: 2000, part_ms: 200 });
        let parts = parts(&out);
        for p in &parts {
            assert!(p.duration <= 0.2 + 1e-9, "part of {} s at {} ms exceeds the 0.2 s target", p.duration, p.start_ms);
        }
        let total: f64 = parts.iter().map(|p| p.duration).sum();
        assert!((total - 2.833).abs() < 0.01, "every frame is in a part (the last lasts the mean step): {total}");
        // The long frame (the last live one, 200 ms before the first repeat) starts a part of exactly 200 ms.
        let split = parts.iter().find(|p| p.start_ms == u64::from(last)).expect("a part starts at the long frame");
        assert!((split.duration - 0.2).abs() < 1e-9);
    }

    #[test]
    fn millisecond_timestamps_of_30_fps_make_parts_of_exactly_the_target() {
        // As FLV carries them: 0, 33, 67, 100, ... (rounded), so steps alternate between 33 and 34 ms.
        let mut frames = headers();
        frames.extend((0..300u32).map(|i| video((i * 1000 + 15) / 30, i % 60 == 0)));
        let out = run(frames, CmafTargets { segment_ms: 2000, part_ms: 200 });
        let parts = parts(&out);
        assert!(
            parts.iter().all(|p| p.duration <= 0.2 + 1e-9),
            "{:?}",
            parts.iter().map(|p| p.duration).collect::<Vec<_>>()
        );
        let full = parts.iter().filter(|p| (p.duration - 0.2).abs() < 1e-9).count();
        assert!(full + 1 >= parts.len(), "every part but the last is 200 ms: {full} of {}", parts.len());
    }

    #[test]
    fn every_frame_lands_in_a_fragment_with_continuous_decode_times() {
        use mp4_atom::{Any, Decode};
        let frames = av(4, 30);
        let out = run(frames.clone(), CmafTargets { segment_ms: 1000, part_ms: 300 });
        let (mut vt, mut at, mut vn, mut an) = (None::<u64>, None::<u64>, 0, 0);
        for p in parts(&out) {
            let mut b = &p.data[..];
            let Any::Moof(moof) = Any::decode(&mut b).unwrap() else { panic!("moof") };
            for traf in &moof.traf {
                let base = traf.tfdt.as_ref().unwrap().base_media_decode_time;
                let n: u64 = traf.trun[0].samples.iter().map(|s| u64::from(s.duration.unwrap())).sum();
                let (next, count) =
                    if traf.tfhd.track_id == VIDEO_TRACK { (&mut vt, &mut vn) } else { (&mut at, &mut an) };
                if let Some(expected) = *next {
                    assert_eq!(base, expected, "track {} continues where it left off", traf.tfhd.track_id);
                }
                *next = Some(base + n);
                *count += traf.trun[0].samples.len();
            }
        }
        let video_frames = frames.iter().filter(|f| f.kind == MediaKind::Video && f.samples).count();
        let audio_frames = frames.iter().filter(|f| f.kind == MediaKind::Audio && f.samples).count();
        assert_eq!(vn, video_frames);
        assert!(an + 2 >= audio_frames && an <= audio_frames, "{an} of {audio_frames} audio frames");
    }

    /// With chunks, each part is the chunks emitted before it, one after the other; every chunk is a `moof` +
    /// `mdat` an independent parser reads, with decode times that go on from chunk to chunk; the parts are those
    /// made without chunks (durations, flags), and a 200 ms part of 30 fps video comes in three chunks (two
    /// frames each, the chunk target being 50 ms). Audio-only streams are chunked by their audio.
    #[test]
    fn chunked_parts_are_their_chunks_one_after_the_other() {
        use mp4_atom::{Any, Decode};
        let targets = CmafTargets { segment_ms: 2000, part_ms: 200 };
        let chunked = |frames: Vec<MediaFrame>| {
            let mut p = Packager::new(targets).with_chunks(50);
            let mut out = Vec::new();
            for f in &frames {
                let _ = p.push(f, &mut out);
            }
            p.flush(&mut out);
            out
        };
        let frames = av(4, 30);
        let out = chunked(frames.clone());
        let plain = run(frames, targets);
        let (a, b) = (parts(&out), parts(&plain));
        assert_eq!(a.len(), b.len());
        // What chunks cost: the extra `moof`s, over the 4 s of 30 fps video and 44.1 kHz audio.
        let extra = a.iter().map(|p| p.data.len()).sum::<usize>() - b.iter().map(|p| p.data.len()).sum::<usize>();
        let kbps = extra as f64 * 8.0 / 4.0 / 1000.0;
        assert!(kbps < 16.0, "chunks add {kbps:.1} kb/s");
        for (x, y) in a.iter().zip(&b) {
            assert_eq!(
                (x.duration, x.independent, x.segment_start, x.start_ms),
                (y.duration, y.independent, y.segment_start, y.start_ms)
            );
        }
        let mut pending: Vec<u8> = Vec::new();
        let mut per_part = Vec::new();
        let (mut vt, mut at) = (None::<u64>, None::<u64>);
        for o in &out {
            match o {
                Output::Chunk(c) => {
                    let mut rest = &c[..];
                    let Any::Moof(moof) = Any::decode(&mut rest).unwrap() else { panic!("a chunk starts with a moof") };
                    let Any::Mdat(_) = Any::decode(&mut rest).unwrap() else { panic!("then its mdat") };
                    assert!(rest.is_empty(), "one moof + mdat per chunk");
                    for traf in &moof.traf {
                        let base = traf.tfdt.as_ref().unwrap().base_media_decode_time;
                        let n: u64 = traf.trun[0].samples.iter().map(|s| u64::from(s.duration.unwrap())).sum();
                        let next = if traf.tfhd.track_id == VIDEO_TRACK { &mut vt } else { &mut at };
                        if let Some(expected) = *next {
                            assert_eq!(base, expected, "track {} goes on across chunks", traf.tfhd.track_id);
                        }
                        *next = Some(base + n);
                    }
                    pending.extend_from_slice(c);
                    per_part.push(());
                }
                Output::Part(p) => {
                    assert_eq!(&p.data[..], &pending[..], "a part is its chunks");
                    if (p.duration - 0.2).abs() < 1e-9 {
                        assert_eq!(per_part.len(), 3, "a full part of 6 frames in chunks of 2");
                    }
                    pending.clear();
                    per_part.clear();
                }
                Output::Init(_) => {}
            }
        }
        assert!(pending.is_empty(), "no chunk is left outside a part");
        // Audio-only: chunks of three AAC frames (70 ms at 44.1 kHz), parts of four chunks at most.
        let mut frames = vec![headers().remove(1)];
        frames.extend((0..200u32).map(|i| audio(i * 1024 * 1000 / 44_100)));
        let out = chunked(frames);
        let chunks = out.iter().filter(|o| matches!(o, Output::Chunk(_))).count();
        assert!(
            parts(&out).len() >= 20 && chunks >= 2 * parts(&out).len(),
            "{chunks} chunks in {} parts",
            parts(&out).len()
        );
    }

    /// An audio-only stream that gains video: its open audio part closes (on the audio clock) before video
    /// starts, so no chunk is left outside a part and no part mixes the two clocks.
    #[test]
    fn an_audio_only_stream_that_gains_video_closes_its_audio_part_first() {
        let h = headers();
        let mut p = Packager::new(CmafTargets { segment_ms: 1000, part_ms: 200 }).with_chunks(50);
        let mut out = Vec::new();
        p.push(&h[1], &mut out).unwrap();
        for i in 0..4u32 {
            p.push(&audio(i * 1024 * 1000 / 44_100), &mut out).unwrap();
        }
        assert!(out.iter().any(|o| matches!(o, Output::Chunk(_))));
        p.push(&h[0], &mut out).unwrap();
        let audio_part = parts(&out).last().map(|p| p.duration).expect("the audio part closed");
        assert!((audio_part - 4.0 * 1024.0 / 44_100.0).abs() < 1e-6, "{audio_part}");
        for i in 0..30u32 {
            p.push(&video(100 + i * 33, i % 15 == 0), &mut out).unwrap();
        }
        p.flush(&mut out);
        let last_part = out.iter().rposition(|o| matches!(o, Output::Part(_))).unwrap();
        assert!(!out[last_part..].iter().any(|o| matches!(o, Output::Chunk(_))), "every chunk is in a part");
        assert!(parts(&out).iter().skip(1).all(|p| p.duration <= 0.2 + 1e-9));
    }

    #[test]
    fn a_new_sequence_header_makes_a_new_init_at_the_next_keyframe() {
        let mut frames = av(2, 30);
        let mut h = headers();
        // Same SPS, different PPS bytes: a changed record.
        let mut v = h.remove(0).flv_body().to_vec();
        *v.last_mut().unwrap() ^= 1;
        frames.push(MediaFrame::parse(MediaKind::Video, 2000, Bytes::from(v)).unwrap());
        frames.push(video(2010, false));
        frames.push(video(2033, true));
        frames.push(video(2066, false));
        let out = run(frames, CmafTargets { segment_ms: 2000, part_ms: 500 });
        let inits: Vec<usize> =
            out.iter().enumerate().filter(|(_, o)| matches!(o, Output::Init(_))).map(|(i, _)| i).collect();
        assert_eq!(inits.len(), 2, "a second init for the new configuration");
        match &out[inits[1] + 1] {
            Output::Part(p) => assert!(p.segment_start && p.independent, "it opens a new segment at a keyframe"),
            other => panic!("a part after the init: {other:?}"),
        }
    }

    #[test]
    fn audio_only_streams_make_independent_parts() {
        let mut frames = vec![headers().remove(1)];
        frames.extend((0..200).map(|i| audio(i * 1024 * 1000 / 44_100)));
        let out = run(frames, CmafTargets { segment_ms: 1000, part_ms: 250 });
        let parts = parts(&out);
        assert!(parts.len() >= 16, "{} parts", parts.len());
        assert!(parts.iter().all(|p| p.independent && p.duration <= 0.25 + 1e-9));
    }

    /// The tags of an FLV file as frames (a test's reader: header, then tag after tag).
    fn read_flv(data: &[u8]) -> Vec<MediaFrame> {
        let mut frames = Vec::new();
        let mut at = 13;
        while at + 11 <= data.len() {
            let kind = data[at];
            let size = (usize::from(data[at + 1]) << 16) | (usize::from(data[at + 2]) << 8) | usize::from(data[at + 3]);
            let ts = (u32::from(data[at + 7]) << 24)
                | (u32::from(data[at + 4]) << 16)
                | (u32::from(data[at + 5]) << 8)
                | u32::from(data[at + 6]);
            let body = Bytes::copy_from_slice(&data[at + 11..at + 11 + size]);
            let kind = match kind {
                8 => Some(MediaKind::Audio),
                9 => Some(MediaKind::Video),
                _ => None,
            };
            if let Some(kind) = kind {
                frames.push(MediaFrame::parse(kind, ts, body).unwrap());
            }
            at += 11 + size + 4;
        }
        frames
    }

    /// What ffmpeg makes of x264 with B-frames and AAC, packaged here, is decoded by ffprobe (every frame, no
    /// error) and played by ffmpeg's HLS demuxer from a playlist with `EXT-X-MAP`.
    #[test]
    fn ffmpeg_decodes_every_frame_of_the_packaged_stream() {
        use std::process::Command;
        if Command::new("ffprobe").arg("-version").output().is_err() {
            println!("SKIPPED: ffmpeg/ffprobe not installed");
            return;
        }
        let dir = std::env::temp_dir().join(format!("strom_cmaf_test_{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let src = dir.join("src.flv");
        let status = Command::new("ffmpeg")
            .args(["-v", "error", "-y", "-f", "lavfi", "-i", "testsrc2=size=320x240:rate=30", "-f", "lavfi"])
            .args(["-i", "sine=frequency=440:sample_rate=44100", "-t", "4", "-c:v", "libx264", "-bf", "2"])
            .args(["-g", "30", "-pix_fmt", "yuv420p", "-c:a", "aac", "-f", "flv"])
            .arg(&src)
            .status()
            .unwrap();
        assert!(status.success());
        let frames = read_flv(&std::fs::read(&src).unwrap());
        let n_video = frames.iter().filter(|f| f.kind == MediaKind::Video && f.samples).count();
        let n_audio = frames.iter().filter(|f| f.kind == MediaKind::Audio && f.samples).count();
        assert!(frames.iter().any(|f| f.cts != 0), "B-frames: composition offsets");
        // Parts in chunks, as live streams make them: a part of several fragments decodes as one of one.
        let mut packager = Packager::new(CmafTargets { segment_ms: 1000, part_ms: 300 }).with_chunks(75);
        let mut out = Vec::new();
        for f in &frames {
            packager.push(f, &mut out).unwrap();
        }
        packager.flush(&mut out);
        assert!(out.iter().filter(|o| matches!(o, Output::Chunk(_))).count() > 2 * parts(&out).len());
        let mut all = Vec::new();
        let mut playlist =
            String::from("#EXTM3U\n#EXT-X-VERSION:7\n#EXT-X-TARGETDURATION:2\n#EXT-X-MAP:URI=\"init.mp4\"\n");
        let mut segment: Vec<u8> = Vec::new();
        let mut seg_duration = 0.0;
        let mut n = 0;
        let mut flush = |segment: &mut Vec<u8>, d: &mut f64, playlist: &mut String| {
            if !segment.is_empty() {
                std::fs::write(dir.join(format!("s{n}.m4s")), &segment).unwrap();
                playlist.push_str(&format!("#EXTINF:{d:.3},\ns{n}.m4s\n"));
                n += 1;
                segment.clear();
                *d = 0.0;
            }
        };
        for o in &out {
            match o {
                Output::Init(b) => {
                    std::fs::write(dir.join("init.mp4"), b).unwrap();
                    all.extend_from_slice(b);
                }
                Output::Part(p) => {
                    if p.segment_start {
                        flush(&mut segment, &mut seg_duration, &mut playlist);
                    }
                    segment.extend_from_slice(&p.data);
                    seg_duration += p.duration;
                    all.extend_from_slice(&p.data);
                }
                Output::Chunk(_) => {}
            }
        }
        flush(&mut segment, &mut seg_duration, &mut playlist);
        playlist.push_str("#EXT-X-ENDLIST\n");
        std::fs::write(dir.join("index.m3u8"), &playlist).unwrap();
        let joined = dir.join("all.mp4");
        std::fs::write(&joined, &all).unwrap();
        let probe = Command::new("ffprobe")
            .args(["-v", "error", "-count_frames", "-select_streams", "v:0", "-show_entries"])
            .args(["stream=codec_name,width,height,nb_read_frames", "-of", "csv=p=0"])
            .arg(&joined)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&probe.stderr);
        assert!(stderr.trim().is_empty(), "ffprobe: {stderr}");
        assert_eq!(String::from_utf8_lossy(&probe.stdout).trim(), format!("h264,320,240,{n_video}"));
        let probe = Command::new("ffprobe")
            .args(["-v", "error", "-count_frames", "-select_streams", "a:0", "-show_entries"])
            .args(["stream=codec_name,sample_rate,nb_read_frames", "-of", "csv=p=0"])
            .arg(&joined)
            .output()
            .unwrap();
        let audio = String::from_utf8_lossy(&probe.stdout).trim().to_string();
        let decoded: usize = audio.rsplit(',').next().and_then(|n| n.parse().ok()).unwrap_or(0);
        assert!(audio.starts_with("aac,44100,") && decoded + 2 >= n_audio, "audio: {audio} of {n_audio} frames");
        let hls = Command::new("ffmpeg")
            .args(["-v", "error", "-i"])
            .arg(dir.join("index.m3u8"))
            .args(["-f", "null", "-"])
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&hls.stderr);
        assert!(hls.status.success() && stderr.trim().is_empty(), "ffmpeg over the HLS playlist: {stderr}");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
