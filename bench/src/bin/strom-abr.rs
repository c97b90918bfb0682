//! `strom-abr`: strom's own ABR ladder code run over a file as fast as it goes, for `bench/abr`.
//!
//! It drives the engine's [`Pipeline`] exactly as the encoder worker (`strom_engine::transcode::worker`) does:
//! the rungs are planned from the source's `AVCDecoderConfigurationRecord` with [`ladder::plan`] over strom's
//! default `[transcode]` rungs (filtered to the heights asked for), each rung's settings are [`RungPlan::spec`],
//! the frame rate is estimated from the first video timestamps with [`estimate_fps`], the codec threads are
//! `transcode.threads` resolved like the node does, and every AVC sample goes to [`Pipeline::push`] with its DTS,
//! PTS (DTS + composition time) and keyframe flag, then [`Pipeline::finish`]. There is no real-time pacing.
//! Audio is skipped: the worker passes it through without codec work. What the worker does with an encoded
//! picture after the pipeline (an FLV body, RTMP chunking, publishing) is not part of this measurement.
//!
//! Output: one JSON line on stdout (and appended to `--json-out`): frames, wall and CPU seconds (utime + stime of
//! the whole process from `/proc/self/stat`, every codec thread included) of the decode/scale/encode loop,
//! frames per second, real-time factor (media seconds ÷ wall seconds), and per rung the pictures, keyframes,
//! bytes and bitrate, and whether its keyframes sit exactly on the source's.

use std::collections::BTreeSet;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

use bytes::Bytes;
use clap::Parser;
use serde_json::{json, Value};
use strom_engine::config::TranscodeConfig;
use strom_engine::formats::avc::AvcConfig;
use strom_engine::formats::{Codec, MediaFrame, MediaKind};
use strom_engine::stream::StreamKey;
use strom_engine::transcode::ladder::{self, RungPlan};
use strom_engine::transcode::pipeline::{Encoded, Pipeline};
use strom_engine::transcode::worker::estimate_fps;

/// Video samples the worker looks at to estimate the frame rate (its `PROBE_FRAMES`).
const PROBE_FRAMES: usize = 10;

/// Runs strom's ABR ladder (decode once, swscale, libx264 per rung) over an FLV file, unpaced.
#[derive(Parser, Debug)]
#[command(name = "strom-abr", version)]
struct Args {
    /// FLV file with H.264 video (e.g. `bench/work/bench.flv`).
    #[arg(long)]
    input: PathBuf,
    /// Rung heights out of strom's default `[transcode]` rungs (720, 480, 360, 240), comma-separated; `none`:
    /// decode only.
    #[arg(long, default_value = "480,360,240")]
    rungs: String,
    /// Override every rung's x264 preset (default: the configured one, `veryfast`).
    #[arg(long)]
    preset: Option<String>,
    /// Codec threads per decoder/encoder, as `transcode.threads` (0: the available cores, strom's default).
    #[arg(long, default_value_t = 0)]
    threads: usize,
    /// Free text copied to the JSON line (`label`).
    #[arg(long, default_value = "")]
    label: String,
    /// Only print the plan (source, threads, every rung's settings) as JSON; encode nothing.
    #[arg(long)]
    plan: bool,
    /// Also append the JSON line to this file.
    #[arg(long)]
    json_out: Option<PathBuf>,
}

/// One video sample of the file: DTS (ms), the FLV tag body.
struct Sample {
    dts: u32,
    body: Bytes,
}

/// The AVC sequence header payload and the video samples (AVC NAL-unit tags) of an FLV file, in file order.
fn read_flv(path: &Path) -> Result<(Bytes, Vec<Sample>), String> {
    let file = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
    if file.len() < 13 || &file[..3] != b"FLV" {
        return Err(format!("{}: not an FLV file", path.display()));
    }
    let all = Bytes::from(file);
    let mut p = u32::from_be_bytes([all[5], all[6], all[7], all[8]]) as usize + 4;
    let mut record = None;
    let mut samples = Vec::new();
    while p + 11 <= all.len() {
        let h = &all[p..p + 11];
        let kind = h[0] & 0x1f;
        let size = u32::from_be_bytes([0, h[1], h[2], h[3]]) as usize;
        let dts = u32::from_be_bytes([h[7], h[4], h[5], h[6]]);
        if p + 11 + size > all.len() {
            break; // a truncated last tag: ignore it, as a player would
        }
        let body = all.slice(p + 11..p + 11 + size);
        p += 11 + size + 4;
        if kind != 9 {
            continue;
        }
        let Ok(frame) = MediaFrame::parse(MediaKind::Video, dts, body.clone()) else {
            continue; // a malformed tag header: the node drops it at ingest
        };
        if frame.codec != Codec::Avc {
            continue;
        }
        if frame.header {
            if record.is_none() {
                record = Some(frame.payload());
            }
        } else if frame.samples {
            samples.push(Sample { dts, body }); // pictures only: the worker skips end-of-sequence and the like
        }
    }
    let record = record.ok_or_else(|| format!("{}: no AVC sequence header", path.display()))?;
    if samples.is_empty() {
        return Err(format!("{}: no video samples", path.display()));
    }
    Ok((record, samples))
}

/// utime + stime of this process (all threads, finished ones included), seconds.
fn process_cpu_s() -> f64 {
    /// USER_HZ: the unit of /proc/*/stat times on every mainstream Linux architecture.
    const TICKS_PER_SEC: f64 = 100.0;
    let Ok(s) = std::fs::read_to_string("/proc/self/stat") else { return f64::NAN };
    let Some(after) = s.rfind(')').and_then(|i| s.get(i + 2..)) else { return f64::NAN };
    let f: Vec<&str> = after.split_whitespace().collect();
    let tick = |i: usize| f.get(i).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
    (tick(11) + tick(12)) as f64 / TICKS_PER_SEC
}

/// strom's default rungs at the heights asked for (`none`: no rung), the preset overridden if asked.
fn rung_configs(args: &Args) -> Result<Vec<strom_engine::config::RungConfig>, String> {
    let defaults = TranscodeConfig::default().rungs;
    if args.rungs.trim() == "none" {
        return Ok(Vec::new());
    }
    let mut out = Vec::new();
    for h in args.rungs.split(',') {
        let h: u32 = h.trim().parse().map_err(|e| format!("--rungs: bad height {h:?}: {e}"))?;
        let mut r = defaults.iter().find(|r| r.height == h).cloned().ok_or_else(|| {
            let known: Vec<String> = defaults.iter().map(|r| r.height.to_string()).collect();
            format!("--rungs: strom has no default rung at {h}p (it has {})", known.join(", "))
        })?;
        if let Some(p) = &args.preset {
            r.preset = p.clone();
        }
        out.push(r);
    }
    Ok(out)
}

/// Everything derived from the file and the arguments before any codec opens.
struct Setup {
    record: Bytes,
    samples: Vec<Sample>,
    cfg: AvcConfig,
    threads: usize,
    plans: Vec<RungPlan>,
    fps: f64,
    media_s: f64,
}

impl Setup {
    fn new(args: &Args) -> Result<Setup, String> {
        let (record, samples) = read_flv(&args.input)?;
        let cfg = AvcConfig::parse(&record).map_err(|e| format!("{}: AVC configuration: {e}", args.input.display()))?;
        let threads = TranscodeConfig { threads: args.threads, ..Default::default() }.threads();
        let key = StreamKey::parse("live/bench").map_err(|e| e.to_string())?;
        let plans = ladder::plan(&key, cfg.width, cfg.height, &rung_configs(args)?);
        let probe: Vec<i64> = samples.iter().take(PROBE_FRAMES).map(|s| i64::from(s.dts)).collect();
        let fps = estimate_fps(&probe);
        let first = samples.first().map_or(0, |s| s.dts);
        let last = samples.last().map_or(0, |s| s.dts);
        let media_s = (f64::from(last.saturating_sub(first)) + 1000.0 / fps) / 1000.0;
        Ok(Setup { record, samples, cfg, threads, plans, fps, media_s })
    }

    /// The source, the codec threads and every rung's settings, as JSON ([`run`] adds the measurements).
    fn describe(&self, args: &Args) -> Value {
        let rungs: Vec<Value> = self
            .plans
            .iter()
            .map(|p| {
                let s = p.spec();
                json!({
                    "name": p.name, "width": s.width, "height": s.height, "preset": s.preset, "profile": s.profile,
                    "bitrate_kbps": s.bitrate_kbps, "maxrate_kbps": s.maxrate_kbps, "bufsize_kbits": s.bufsize_kbits,
                })
            })
            .collect();
        json!({
            "tool": "strom", "label": args.label, "input": args.input.display().to_string(),
            "source": { "width": self.cfg.width, "height": self.cfg.height, "fps": self.fps,
                        "frames": self.samples.len(), "media_s": self.media_s },
            "threads": self.threads, "rungs": rungs,
        })
    }
}

/// Per-rung output totals.
#[derive(Default)]
struct RungOut {
    pictures: u64,
    bytes: u64,
    key_pts: Vec<i64>,
}

/// Moves the pipeline's output into the per-rung totals.
fn collect(encoded: &mut Vec<Encoded>, outs: &mut [RungOut]) {
    for e in encoded.drain(..) {
        if let Some(o) = outs.get_mut(e.rung) {
            o.pictures += 1;
            o.bytes += e.avcc.len() as u64;
            if e.keyframe {
                o.key_pts.push(e.pts);
            }
        }
    }
}

/// Opens the ladder, pushes every sample through it and flushes it: the description plus the measurements.
fn run(args: &Args, setup: &Setup) -> Result<Value, String> {
    let specs: Vec<_> = setup.plans.iter().map(RungPlan::spec).collect();
    let (cpu0, t0) = (process_cpu_s(), Instant::now());
    let mut pipeline = Pipeline::new(&setup.record, &specs, setup.fps, setup.threads)
        .map_err(|e| format!("opening the ladder: {e}"))?;
    let open_s = t0.elapsed().as_secs_f64();
    let (cpu1, t1) = (process_cpu_s(), Instant::now());
    let mut outs: Vec<RungOut> = specs.iter().map(|_| RungOut::default()).collect();
    let mut encoded: Vec<Encoded> = Vec::new();
    let mut source_keys = BTreeSet::new();
    let mut frames = 0u64;
    for s in &setup.samples {
        // As the worker: an AVC NAL-unit packet goes in with DTS, PTS = DTS + composition time and the FLV
        // keyframe flag; anything else (end of sequence, other codecs, malformed headers) is skipped.
        let Ok(frame) = MediaFrame::parse(MediaKind::Video, s.dts, s.body.clone()) else { continue };
        if frame.codec != Codec::Avc || !frame.samples {
            continue;
        }
        let dts = i64::from(s.dts);
        let pts = dts + i64::from(frame.cts);
        if frame.keyframe {
            source_keys.insert(pts);
        }
        pipeline
            .push(&frame.payload(), dts, pts, frame.keyframe, &mut encoded)
            .map_err(|e| format!("frame at {dts} ms: {e}"))?;
        frames += 1;
        collect(&mut encoded, &mut outs);
    }
    pipeline.finish(&mut encoded).map_err(|e| format!("flushing the ladder: {e}"))?;
    collect(&mut encoded, &mut outs);
    let wall_s = t1.elapsed().as_secs_f64();
    let cpu_s = process_cpu_s() - cpu1;
    drop(pipeline);

    let media_s = setup.media_s;
    let mut v = setup.describe(args);
    v["source"]["frames"] = json!(frames);
    v["source"]["keyframes"] = json!(source_keys.len());
    if let Some(rungs) = v["rungs"].as_array_mut() {
        for (r, o) in rungs.iter_mut().zip(&outs) {
            r["out"] = json!({
                "pictures": o.pictures, "keyframes": o.key_pts.len(), "bytes": o.bytes,
                "kbps": o.bytes as f64 * 8.0 / 1000.0 / media_s,
                "keyframes_aligned": o.key_pts.iter().copied().eq(source_keys.iter().copied()),
            });
        }
    }
    for (k, x) in [
        ("open_s", open_s),
        ("open_cpu_s", cpu1 - cpu0),
        ("wall_s", wall_s),
        ("cpu_s", cpu_s),
        ("fps", frames as f64 / wall_s),
        ("realtime_factor", media_s / wall_s),
        ("cpu_per_media_s", cpu_s / media_s),
    ] {
        v[k] = json!(x);
    }
    Ok(v)
}

fn main() -> ExitCode {
    let args = Args::parse();
    let line =
        Setup::new(&args).and_then(|setup| if args.plan { Ok(setup.describe(&args)) } else { run(&args, &setup) });
    match line {
        Ok(line) => {
            println!("{line}");
            if let Some(path) = &args.json_out {
                let r = std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(path)
                    .and_then(|mut f| writeln!(f, "{line}"));
                if let Err(e) = r {
                    eprintln!("strom-abr: {}: {e}", path.display());
                    return ExitCode::FAILURE;
                }
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("strom-abr: {e}");
            ExitCode::FAILURE
        }
    }
}
