//! The encoder's dedicated OS thread: everything blocking about one stream's ladder.
//!
//! It receives the source's frames (timestamps already on the encoder's feed timeline) from a bounded channel,
//! probes the frame rate from the first video timestamps, opens the [`Pipeline`], and then, per source frame:
//! video goes through the pipeline; audio (AAC) is passed through to every rung unchanged (the same `Bytes`),
//! queued per rung and released once that rung's video has reached its time, so each rung stream is interleaved
//! by timestamp like a publisher's. A rung starts with its sequence headers and an IDR.
//!
//! Every 2 s the worker measures its real-time ratio and the longest wait of a source frame; when it falls behind
//! it sheds the costliest rung and later restores it ([`super::shed`] decides). A shed rung's publisher is
//! released (its stream waits for a publisher, players stay) and it leaves the master playlist; on restore the
//! rung is claimed again and starts with its sequence headers and an IDR at a source keyframe, so its HLS playlist
//! continues after a discontinuity.
//!
//! A rung whose stream went away is dropped (logged, the others go on). A decoder or encoder error, or a new
//! source video configuration, ends the thread with an error: the encoder actor fails and its supervisor
//! restarts it.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::mpsc;
use tracing::{info, warn};

use super::encoder::EncoderError;
use super::ladder::RungPlan;
use super::pipeline::{Encoded, Pipeline, RungSpec};
use super::shed::{RungLoad, ShedAction, ShedPolicy, Window};
use super::{lock, Ladders, RungInfo, TranscodeMetrics};
use crate::formats::aac::AacConfig;
use crate::formats::avc::AvcConfig;
use crate::formats::{Codec, MediaFrame, MediaKind};
use crate::stream::{Publisher, StreamKey, Streams};

/// Video frames looked at to estimate the frame rate before the encoders open.
const PROBE_FRAMES: usize = 10;
/// Or this much video time, whichever comes first.
const PROBE_MS: i64 = 1000;
/// Source frames buffered while probing, at most (a source without video gives up here).
const PROBE_MAX_ITEMS: usize = 2000;
/// Audio frames queued per rung before its first picture, at most.
const MAX_EARLY_AUDIO: usize = 1000;
/// Period of the real-time ratio measurement.
const RATIO_WINDOW: Duration = Duration::from_secs(2);
/// Arrival times kept to measure the latency of encoded pictures.
const MAX_ARRIVALS: usize = 256;

/// Everything the worker needs.
pub struct WorkerCtx {
    /// The source stream.
    pub key: StreamKey,
    /// The source's `AVCDecoderConfigurationRecord`.
    pub record: Vec<u8>,
    /// The rungs and their (already claimed) streams.
    pub rungs: Vec<(RungPlan, Publisher)>,
    /// Codec threads per decoder/encoder.
    pub threads: usize,
    /// Metrics.
    pub metrics: Arc<TranscodeMetrics>,
    /// The ladder table (codecs, rates) for the master playlist.
    pub ladders: Ladders,
    /// The lookup API, to claim a shed rung's stream again.
    pub streams: Streams,
    /// The node's runtime (the worker is not on it; it blocks on a claim).
    pub rt: tokio::runtime::Handle,
}

/// One source frame for the worker.
#[derive(Debug)]
pub struct Input {
    /// The frame.
    pub frame: MediaFrame,
    /// Its timestamp on the encoder feed's timeline (ms).
    pub ts: u32,
    /// When the encoder received it (latency and falling-behind measurements).
    pub at: Instant,
}

/// Estimates frames per second from video decode timestamps (ms), snapped to the common rates.
pub fn estimate_fps(ts: &[i64]) -> f64 {
    let (Some(first), Some(last)) = (ts.first(), ts.last()) else { return 30.0 };
    if ts.len() < 2 || last <= first {
        return 30.0;
    }
    let fps = (ts.len() - 1) as f64 * 1000.0 / (last - first) as f64;
    let nearest = [23.976, 24.0, 25.0, 29.97, 30.0, 48.0, 50.0, 59.94, 60.0]
        .into_iter()
        .min_by(|a: &f64, b: &f64| (fps - a).abs().total_cmp(&(fps - b).abs()))
        .unwrap_or(30.0);
    if (fps - nearest).abs() / nearest < 0.03 {
        return nearest;
    }
    (fps * 100.0).round().clamp(100.0, 24_000.0) / 100.0
}

fn ts32(ms: i64) -> u32 {
    (ms.max(0) as u64 & 0xffff_ffff) as u32
}

struct Out {
    plan: RungPlan,
    publisher: Option<Publisher>,
    /// Shed for lack of CPU (its publisher released; may come back).
    shed: bool,
    header: MediaFrame,
    started: bool,
    last_ts: i64,
    audio: VecDeque<MediaFrame>,
    frames: prometheus::IntCounter,
    latency: prometheus::Histogram,
}

struct State {
    ctx: WorkerCtx,
    pipeline: Pipeline,
    outs: Vec<Out>,
    audio_header: Option<MediaFrame>,
    encoded: Vec<Encoded>,
    busy: Duration,
    window_start: Instant,
    window_media_ms: i64,
    window_pictures: u64,
    max_wait: Duration,
    /// Wait of the window's latest frame so far.
    end_wait: Duration,
    last_video_ts: Option<i64>,
    /// (PTS, arrival) of recent source pictures.
    arrivals: VecDeque<(i64, Instant)>,
    policy: ShedPolicy,
    source_pixels: u64,
}

/// Runs the ladder of one stream until the channel closes (the source ended) or something fails.
pub fn run(mut ctx: WorkerCtx, mut rx: mpsc::Receiver<Input>) -> Result<(), EncoderError> {
    // Probe the frame rate.
    let mut pending = Vec::new();
    let mut video_ts = Vec::new();
    while let Some(input) = rx.blocking_recv() {
        if input.frame.kind == MediaKind::Video && !input.frame.header {
            video_ts.push(i64::from(input.ts));
        }
        pending.push(input);
        let span = video_ts.last().zip(video_ts.first()).map_or(0, |(l, f)| l - f);
        if video_ts.len() >= PROBE_FRAMES || span >= PROBE_MS || pending.len() >= PROBE_MAX_ITEMS {
            break;
        }
    }
    if video_ts.is_empty() {
        return Ok(()); // ended (or no video) before a picture: nothing to encode
    }
    let fps = estimate_fps(&video_ts);
    let specs: Vec<RungSpec> = ctx.rungs.iter().map(|(p, _)| p.spec()).collect();
    let pipeline = Pipeline::new(&ctx.record, &specs, fps, ctx.threads).map_err(EncoderError::from)?;
    let mut outs = Vec::new();
    let mut infos = Vec::new();
    for (i, (plan, publisher)) in std::mem::take(&mut ctx.rungs).into_iter().enumerate() {
        let record = pipeline.config_record(i).unwrap_or_default();
        let codec = AvcConfig::parse(record).ok().map(|c| c.codec_string());
        infos.push(RungInfo { plan: plan.clone(), codec, rate: Default::default(), active: true });
        ctx.metrics.rungs_active.inc();
        outs.push(Out {
            frames: ctx.metrics.frames.with_label_values(&[&plan.name]),
            latency: ctx.metrics.latency.with_label_values(&[&plan.name]),
            plan,
            publisher: Some(publisher),
            shed: false,
            header: MediaFrame::avc(0, true, false, record),
            started: false,
            last_ts: 0,
            audio: VecDeque::new(),
        });
    }
    if let Some(l) = lock(&ctx.ladders).get_mut(&ctx.key) {
        l.fps = fps;
        l.rungs = infos;
    }
    info!(stream = %ctx.key, fps, rungs = ?outs.iter().map(|o| o.plan.name.as_str()).collect::<Vec<_>>(), "encoders open");
    let source_pixels = AvcConfig::parse(&ctx.record).map_or(0, |c| u64::from(c.width) * u64::from(c.height));
    let mut st = State {
        ctx,
        pipeline,
        outs,
        audio_header: None,
        encoded: Vec::new(),
        busy: Duration::ZERO,
        window_start: Instant::now(),
        window_media_ms: 0,
        window_pictures: 0,
        max_wait: Duration::ZERO,
        end_wait: Duration::ZERO,
        last_video_ts: None,
        arrivals: VecDeque::new(),
        policy: ShedPolicy::default(),
        source_pixels,
    };
    for input in pending {
        st.input(input)?;
    }
    while let Some(input) = rx.blocking_recv() {
        st.input(input)?;
        if st.outs.iter().all(|o| o.publisher.is_none() && !o.shed) {
            return Err(EncoderError::failed("every rung's stream is gone"));
        }
    }
    st.pipeline.finish(&mut st.encoded).map_err(EncoderError::from)?;
    st.emit();
    for i in 0..st.outs.len() {
        st.flush_audio(i, i64::MAX);
    }
    Ok(())
}

impl State {
    fn input(&mut self, input: Input) -> Result<(), EncoderError> {
        let Input { frame, ts, at } = input;
        match frame.kind {
            MediaKind::Video => self.video(frame, ts, at),
            MediaKind::Audio => {
                self.audio(frame, ts);
                Ok(())
            }
        }
    }

    fn video(&mut self, f: MediaFrame, ts: u32, at: Instant) -> Result<(), EncoderError> {
        if f.codec != Codec::Avc {
            return Ok(()); // not H.264: nothing to decode
        }
        if f.header {
            if f.payload()[..] != self.ctx.record[..] {
                return Err(EncoderError::source_changed(
                    "the source's video configuration changed: restarting with the new one",
                ));
            }
            return Ok(());
        }
        if !f.samples {
            return Ok(());
        }
        let dts = i64::from(ts);
        let pts = dts + i64::from(f.cts);
        self.rate(|l| l.source_rate.add(dts, f.flv_body().len()));
        if let Some(prev) = self.last_video_ts {
            self.window_media_ms += (dts - prev).clamp(0, 1000);
        }
        self.last_video_ts = Some(dts);
        self.window_pictures += 1;
        self.end_wait = at.elapsed();
        self.max_wait = self.max_wait.max(self.end_wait);
        self.arrivals.push_back((pts, at));
        if self.arrivals.len() > MAX_ARRIVALS {
            self.arrivals.pop_front();
        }
        let t0 = Instant::now();
        let r = self.pipeline.push(&f.payload(), dts, pts, f.keyframe, &mut self.encoded);
        self.busy += t0.elapsed();
        r.map_err(EncoderError::from)?;
        self.emit();
        self.report_ratio();
        Ok(())
    }

    fn audio(&mut self, f: MediaFrame, ts: u32) {
        let ms = i64::from(ts);
        let mut frame = f;
        frame.timestamp = ts;
        if frame.header {
            let codec = (frame.codec == Codec::Aac)
                .then(|| AacConfig::parse(&frame.payload()).ok())
                .flatten()
                .map(|c| c.codec_string());
            if let Some(l) = super::lock(&self.ctx.ladders).get_mut(&self.ctx.key) {
                l.audio_codec = codec;
            }
            self.audio_header = Some(frame.clone());
        } else {
            let len = frame.flv_body().len();
            self.rate(|l| {
                l.source_rate.add(ms, len);
                l.audio_rate.add(ms, len);
            });
        }
        for o in &mut self.outs {
            if o.publisher.is_some() && (o.started || o.audio.len() < MAX_EARLY_AUDIO) {
                o.audio.push_back(frame.clone());
            }
        }
    }

    fn rate(&self, f: impl FnOnce(&mut super::LadderInfo)) {
        if let Some(l) = lock(&self.ctx.ladders).get_mut(&self.ctx.key) {
            f(l);
        }
    }

    /// Sends the rungs' new pictures, each after the audio up to its time.
    fn emit(&mut self) {
        let encoded = std::mem::take(&mut self.encoded);
        for e in &encoded {
            let Some(o) = self.outs.get_mut(e.rung) else { continue };
            if o.publisher.is_none() {
                continue;
            }
            if !o.started {
                if !e.keyframe {
                    continue; // a rung starts on an IDR
                }
                o.started = true;
                o.last_ts = e.pts;
                // Audio from before the first picture cannot be played with it.
                o.audio.retain(|a| a.header || i64::from(a.timestamp) >= e.pts);
                let mut header = o.header.clone();
                header.timestamp = ts32(e.pts);
                let mut frames = vec![header];
                if let Some(h) = &self.audio_header {
                    let mut h = h.clone();
                    h.timestamp = ts32(e.pts);
                    frames.push(h);
                }
                o.audio.retain(|a| !a.header);
                self.send(e.rung, frames);
            }
            self.flush_audio(e.rung, e.pts);
            let frame = MediaFrame::avc(ts32(e.pts), false, e.keyframe, &e.avcc);
            let len = frame.flv_body().len();
            self.send(e.rung, vec![frame]);
            let arrived = self.arrivals.iter().rev().find(|(p, _)| *p == e.pts).map(|(_, at)| *at);
            if let Some(o) = self.outs.get_mut(e.rung) {
                o.frames.inc();
                o.last_ts = o.last_ts.max(e.pts);
                if let Some(at) = arrived {
                    o.latency.observe(at.elapsed().as_secs_f64());
                }
            }
            let (rung, pts) = (e.rung, e.pts);
            self.rate(|l| {
                if let Some(r) = l.rungs.get_mut(rung) {
                    r.rate.add(pts, len);
                }
            });
        }
        self.encoded = encoded;
        self.encoded.clear();
    }

    /// Sends rung `i`'s queued audio up to `until` (ms).
    fn flush_audio(&mut self, i: usize, until: i64) {
        let Some(o) = self.outs.get_mut(i) else { return };
        if !o.started {
            return;
        }
        let mut frames = Vec::new();
        let mut bytes = Vec::new();
        while o.audio.front().is_some_and(|a| i64::from(a.timestamp) <= until) {
            if let Some(a) = o.audio.pop_front() {
                bytes.push((i64::from(a.timestamp), a.flv_body().len()));
                frames.push(a);
            }
        }
        if frames.is_empty() {
            return;
        }
        self.send(i, frames);
        self.rate(|l| {
            if let Some(r) = l.rungs.get_mut(i) {
                for (ms, len) in bytes {
                    r.rate.add(ms, len);
                }
            }
        });
    }

    fn send(&mut self, i: usize, frames: Vec<MediaFrame>) {
        let Some(o) = self.outs.get_mut(i) else { return };
        let Some(p) = &o.publisher else { return };
        for f in frames {
            if p.send(f).is_err() {
                warn!(stream = %self.ctx.key, rung = %o.plan.key, "rung stream is gone: dropping the rung; the others go on");
                o.publisher = None;
                o.audio.clear();
                self.ctx.metrics.rungs_active.dec();
                self.pipeline.pause(i);
                set_active(&self.ctx.ladders, &self.ctx.key, i, false);
                return;
            }
        }
    }

    fn report_ratio(&mut self) {
        let el = self.window_start.elapsed();
        if el < RATIO_WINDOW {
            return;
        }
        let busy = self.busy.as_secs_f64().max(1e-3);
        let ratio = (self.window_media_ms as f64 / 1000.0 / busy).min(1000.0);
        let key = self.ctx.key.to_string();
        self.ctx.metrics.realtime_ratio.with_label_values(&[&key]).set(ratio);
        self.ctx.metrics.fps.with_label_values(&[&key]).set(self.window_pictures as f64 / el.as_secs_f64());
        let window = Window { ratio, max_wait: self.max_wait, end_wait: self.end_wait };
        self.window_start = Instant::now();
        self.window_media_ms = 0;
        self.window_pictures = 0;
        self.max_wait = Duration::ZERO;
        self.end_wait = Duration::ZERO;
        self.busy = Duration::ZERO;
        // Rungs whose stream went away are not the policy's business.
        let (index, loads): (Vec<usize>, Vec<RungLoad>) = self
            .outs
            .iter()
            .enumerate()
            .filter(|(_, o)| o.publisher.is_some() || o.shed)
            .map(|(i, o)| {
                let pixels = u64::from(o.plan.width) * u64::from(o.plan.height);
                (i, RungLoad { pixels, active: o.publisher.is_some() })
            })
            .unzip();
        match self.policy.observe(Instant::now(), window, self.source_pixels, &loads) {
            Some(ShedAction::Shed(i)) => {
                if let Some(&j) = index.get(i) {
                    self.shed(j, window);
                }
            }
            Some(ShedAction::Restore(i)) => {
                if let Some(&j) = index.get(i) {
                    self.restore(j, window);
                }
            }
            None => {}
        }
    }

    /// Stops encoding rung `i` for lack of CPU: its stream is released and it leaves the master playlist.
    fn shed(&mut self, i: usize, w: Window) {
        let Some(o) = self.outs.get_mut(i) else { return };
        if o.publisher.is_none() {
            return;
        }
        // Logged before anything else shows the shed (the rung's stream, the metrics), so whoever sees those
        // finds the reason in the log.
        warn!(
            stream = %self.ctx.key,
            rung = %o.plan.name,
            realtime_ratio = format!("{:.2}", w.ratio),
            max_wait_ms = w.max_wait.as_millis() as u64,
            end_wait_ms = w.end_wait.as_millis() as u64,
            "the ladder is behind real time: shedding its costliest rung"
        );
        o.publisher = None;
        o.shed = true;
        o.started = false;
        o.audio.clear();
        self.pipeline.pause(i);
        self.ctx.metrics.rungs_active.dec();
        self.ctx.metrics.rungs_shed.inc();
        set_active(&self.ctx.ladders, &self.ctx.key, i, false);
    }

    /// Encodes shed rung `i` again: claims its stream back; it starts at the next source keyframe.
    fn restore(&mut self, i: usize, w: Window) {
        let Some(o) = self.outs.get_mut(i) else { return };
        if !o.shed {
            return;
        }
        let key = o.plan.key.clone();
        match self.ctx.rt.block_on(self.ctx.streams.publish(&key)) {
            Ok(p) => {
                // Logged before the metrics and the master playlist show it (as a shed is).
                info!(
                    stream = %self.ctx.key,
                    rung = %o.plan.name,
                    realtime_ratio = format!("{:.2}", w.ratio),
                    "the ladder has room again: restoring a shed rung"
                );
                o.publisher = Some(p);
                o.shed = false;
                self.pipeline.resume(i);
                self.ctx.metrics.rungs_active.inc();
                self.ctx.metrics.rungs_shed.dec();
                set_active(&self.ctx.ladders, &self.ctx.key, i, true);
            }
            Err(e) => warn!(stream = %self.ctx.key, rung = %key, error = %e, "cannot claim the shed rung back"),
        }
    }
}

/// Marks rung `i` of `key` in or out of the master playlist.
fn set_active(ladders: &Ladders, key: &StreamKey, i: usize, active: bool) {
    if let Some(r) = lock(ladders).get_mut(key).and_then(|l| l.rungs.get_mut(i)) {
        r.active = active;
    }
}

impl Drop for State {
    fn drop(&mut self) {
        let active = self.outs.iter().filter(|o| o.publisher.is_some()).count();
        let shed = self.outs.iter().filter(|o| o.shed).count();
        self.ctx.metrics.rungs_active.sub(active as i64);
        self.ctx.metrics.rungs_shed.sub(shed as i64);
        let key = self.ctx.key.to_string();
        let _ = self.ctx.metrics.realtime_ratio.remove_label_values(&[&key]);
        let _ = self.ctx.metrics.fps.remove_label_values(&[&key]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frame_rate_estimates() {
        let at = |step: f64, n: usize| (0..n).map(|i| (i as f64 * step).round() as i64).collect::<Vec<_>>();
        assert_eq!(estimate_fps(&at(1000.0 / 30.0, 10)), 30.0);
        assert_eq!(estimate_fps(&at(40.0, 10)), 25.0);
        assert_eq!(estimate_fps(&at(1001.0 / 60.0, 100)), 59.94);
        assert_eq!(estimate_fps(&at(100.0, 10)), 10.0);
        assert_eq!(estimate_fps(&[5]), 30.0);
        assert_eq!(estimate_fps(&[]), 30.0);
    }
}
