//! Encoding one chunk of a VOD job into every rung (blocking: runs on a worker thread of its own).
//!
//! The chunk's packets are read from its keyframe ([`super::source::Source::read_chunk`]) and decoded once;
//! every rung is scaled and encoded by the live ladder's [`Pipeline`], with IDRs forced on the chunk's planned
//! segment starts and only the chunk's own pictures kept (its window). The source's AAC frames go to every rung
//! unchanged, interleaved by time (a picture is packaged once the audio read has passed it). Each rung's
//! [`Packager`] makes one fragment per segment; a segment is written the moment it is complete, named by its
//! job-wide number and duration ([`SegmentEntry`]), so a retried chunk writes the same objects again. The last
//! picture lasts until the chunk's end (the next chunk's start): joins have no gap and no overlap.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Instant;

use bytes::{Bytes, BytesMut};

use super::plan::{fnv1a, ChunkOutput, ChunkPlan, JobRung, RungOutput, INIT};
use crate::formats::aac::AacConfig;
use crate::formats::avc::AvcConfig;
use crate::formats::cmaf::{CmafTargets, Output, Packager};
use crate::formats::{MediaFrame, MediaKind};
use crate::storage::asset::{init_name, SegmentEntry};
use crate::transcode::pipeline::{Encoded, Pipeline, RungSpec};

/// Where a chunk's output goes: `(path under the asset, bytes)`, e.g. `("720p/seg3-3333000-i1.m4s", ...)`.
pub type Write<'a> = dyn FnMut(String, Bytes) -> Result<(), String> + 'a;

/// One rung's packaging state within a chunk.
struct RungOut {
    name: String,
    packager: Packager,
    /// Next audio frame of the chunk's audio to package.
    audio_at: usize,
    parts: Vec<Bytes>,
    seconds: f64,
    out: RungOutput,
    init: Option<Bytes>,
    frames: u64,
    first_segment: u64,
    write_init: bool,
}

impl RungOut {
    fn take(&mut self, outputs: Vec<Output>, write: &mut Write<'_>) -> Result<(), String> {
        for o in outputs {
            match o {
                Output::Init(b) => {
                    if self.init.as_ref().is_some_and(|i| i != &b) {
                        return Err(format!("rung {}: the configuration changed within the chunk", self.name));
                    }
                    if self.init.is_none() {
                        self.out.init_hash = fnv1a(&b);
                        if self.write_init {
                            self.out.bytes += b.len() as u64;
                            write(format!("{}/{}", self.name, init_name(INIT)), b.clone())?;
                        }
                        self.init = Some(b);
                    }
                }
                Output::Chunk(_) => {} // not asked for: a VOD part is one fragment
                Output::Part(p) => {
                    if p.segment_start && !self.parts.is_empty() {
                        self.finish_segment(write)?;
                    }
                    self.parts.push(p.data);
                    self.seconds += p.duration;
                }
            }
        }
        Ok(())
    }

    fn finish_segment(&mut self, write: &mut Write<'_>) -> Result<(), String> {
        if self.parts.is_empty() {
            return Ok(());
        }
        let mut data = BytesMut::with_capacity(self.parts.iter().map(Bytes::len).sum());
        for p in self.parts.drain(..) {
            data.extend_from_slice(&p);
        }
        let duration_us = (self.seconds * 1e6).round() as u64;
        self.seconds = 0.0;
        let index = self.first_segment + self.out.durations_us.len() as u64;
        let entry = SegmentEntry { index, duration_us, init: INIT, discontinuity: false };
        let len = data.len() as u64;
        write(format!("{}/{}", self.name, entry.name()), data.freeze())?;
        self.out.durations_us.push(duration_us);
        self.out.bytes += len;
        if let Some(bps) = (len * 8 * 1_000_000).checked_div(duration_us) {
            self.out.peak_bps = self.out.peak_bps.max(bps);
        }
        Ok(())
    }

    /// Packages audio up to (not including) `until` ms, then (if any) the picture.
    fn push(
        &mut self,
        audio: &[(i64, MediaFrame)],
        until: i64,
        picture: Option<&MediaFrame>,
        write: &mut Write<'_>,
    ) -> Result<(), String> {
        let mut outputs = Vec::new();
        while let Some((ts, frame)) = audio.get(self.audio_at) {
            if *ts >= until {
                break;
            }
            self.packager.push(frame, &mut outputs).map_err(|d| format!("packaging audio: {d}"))?;
            self.audio_at += 1;
        }
        if let Some(p) = picture {
            self.packager.push(p, &mut outputs).map_err(|d| format!("packaging video: {d}"))?;
            self.frames += 1;
        }
        self.take(outputs, write)
    }
}

fn spec(r: &JobRung) -> RungSpec {
    RungSpec {
        width: r.width,
        height: r.height,
        bitrate_kbps: r.bitrate_kbps,
        maxrate_kbps: r.maxrate_kbps,
        bufsize_kbits: r.bufsize_kbits,
        preset: r.preset.clone(),
        profile: r.profile.clone(),
    }
}

/// Encodes chunk `plan` of the source at `source` into `rungs` (`fps`: the source's; `offset_ms`: the probe's),
/// writing every segment through `write`. `progress` counts the source pictures done; `cancel` stops it.
#[allow(clippy::too_many_arguments)]
pub fn encode_chunk(
    source: super::source::SourceAt,
    plan: &ChunkPlan,
    offset_ms: i64,
    fps: f64,
    rungs: &[JobRung],
    threads: usize,
    cancel: &AtomicBool,
    progress: &AtomicU64,
    write: &mut Write<'_>,
) -> Result<ChunkOutput, String> {
    let started = Instant::now();
    let mut source = super::source::Source::open(source)?;
    let specs: Vec<RungSpec> = rungs.iter().map(spec).collect();
    let mut pipeline = Pipeline::new(&source.avc_record, &specs, fps, threads).map_err(|e| e.to_string())?;
    pipeline.force_keyframes(plan.segments.iter().copied());
    pipeline.set_window(plan.start_ms, plan.end_ms);
    let audio_header = source
        .audio_config
        .as_ref()
        .map(|asc| {
            let mut body = vec![0xaf, 0];
            body.extend_from_slice(asc);
            MediaFrame::parse(MediaKind::Audio, 0, Bytes::from(body)).map_err(|e| format!("the AAC config: {e}"))
        })
        .transpose()?;
    let audio_codecs = match &source.audio_config {
        Some(asc) => Some(AacConfig::parse(asc).map_err(|e| format!("the AAC config: {e}"))?.codec_string()),
        None => None,
    };
    let targets = CmafTargets { segment_ms: 1, part_ms: 600_000 };
    let mut outs = Vec::with_capacity(rungs.len());
    for (i, r) in rungs.iter().enumerate() {
        let record = pipeline.config_record(i).ok_or("no rung configuration")?.to_vec();
        let video = AvcConfig::parse(&record).map_err(|e| format!("rung {}: {e}", r.name))?.codec_string();
        let codecs = match &audio_codecs {
            Some(a) => format!("{video},{a}"),
            None => video,
        };
        let mut packager = Packager::new(targets);
        let mut ignored = Vec::new();
        let header = MediaFrame::avc(0, true, false, &record);
        packager.push(&header, &mut ignored).map_err(|d| format!("rung {}: {d}", r.name))?;
        if let Some(h) = &audio_header {
            packager.push(h, &mut ignored).map_err(|d| format!("rung {}: {d}", r.name))?;
        }
        outs.push(RungOut {
            name: r.name.clone(),
            packager,
            audio_at: 0,
            parts: Vec::new(),
            seconds: 0.0,
            out: RungOutput { durations_us: Vec::new(), bytes: 0, peak_bps: 0, init_hash: 0, codecs },
            init: None,
            frames: 0,
            first_segment: plan.first_segment,
            write_init: plan.index == 0,
        });
    }
    let has_audio = source.audio_config.is_some();
    let mut audio: Vec<(i64, MediaFrame)> = Vec::new();
    let mut audio_until = i64::MIN;
    let mut held: VecDeque<Encoded> = VecDeque::new();
    let mut encoded = Vec::new();
    // Packages the held pictures the audio read has passed (all of them at the end).
    let release = |held: &mut VecDeque<Encoded>,
                   audio: &[(i64, MediaFrame)],
                   until: i64,
                   outs: &mut Vec<RungOut>,
                   write: &mut Write<'_>|
     -> Result<(), String> {
        while held.front().is_some_and(|e| e.pts < until) {
            let Some(e) = held.pop_front() else { break };
            let ts = u32::try_from(e.pts).map_err(|_| format!("picture time {} ms out of range", e.pts))?;
            let frame = MediaFrame::avc(ts, false, e.keyframe, &e.avcc);
            let rung = outs.get_mut(e.rung).ok_or("unknown rung")?;
            rung.push(audio, e.pts, Some(&frame), write)?;
            if e.rung == 0 {
                progress.fetch_add(1, Ordering::Relaxed);
            }
        }
        Ok(())
    };
    source.read_chunk(plan, offset_ms, &mut |p| {
        if cancel.load(Ordering::Relaxed) {
            return Err("cancelled".into());
        }
        match p {
            super::source::SourcePacket::Video { data, dts, pts, key } => {
                pipeline.push(data, dts, pts, key, &mut encoded).map_err(|e| format!("at {pts} ms: {e}"))?;
                held.extend(encoded.drain(..));
            }
            super::source::SourcePacket::Audio { data, ts } => {
                let mut body = Vec::with_capacity(data.len() + 2);
                body.extend_from_slice(&[0xaf, 1]);
                body.extend_from_slice(data);
                let ts32 = u32::try_from(ts).map_err(|_| format!("audio time {ts} ms out of range"))?;
                let frame = MediaFrame::parse(MediaKind::Audio, ts32, Bytes::from(body)).map_err(|e| e.to_string())?;
                audio.push((ts, frame));
                audio_until = audio_until.max(ts);
            }
        }
        let until = if has_audio { audio_until } else { i64::MAX };
        release(&mut held, &audio, until, &mut outs, write)
    })?;
    pipeline.finish(&mut encoded).map_err(|e| e.to_string())?;
    held.extend(encoded.drain(..));
    release(&mut held, &audio, i64::MAX, &mut outs, write)?;
    let mut out = ChunkOutput { frames: 0, seconds: 0.0, rungs: Vec::with_capacity(outs.len()) };
    for mut r in outs {
        r.push(&audio, plan.end_ms, None, write)?;
        let mut tail = Vec::new();
        r.packager.flush_at(u64::try_from(plan.end_ms).unwrap_or(0), &mut tail);
        r.take(tail, write)?;
        r.finish_segment(write)?;
        if r.frames != plan.frames {
            return Err(format!("rung {}: {} pictures encoded of the chunk's {}", r.name, r.frames, plan.frames));
        }
        if r.out.durations_us.len() != plan.segments.len() {
            return Err(format!(
                "rung {}: {} segments made where {} were planned",
                r.name,
                r.out.durations_us.len(),
                plan.segments.len()
            ));
        }
        out.frames = r.frames;
        out.rungs.push(r.out);
    }
    out.seconds = started.elapsed().as_secs_f64();
    Ok(out)
}
