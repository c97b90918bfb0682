//! The FFmpeg side of [`super::Pipeline`] (the `transcode` feature): H.264 decoder, swscale, libx264.

use std::collections::VecDeque;

use ff::codec::{self, threading};
use ff::software::scaling;
use ff::util::format::Pixel;
use ff::util::frame;
use ff::{picture, Dictionary, Packet};
use ffmpeg_next as ff;

use super::{Encoded, PipelineError, RungSpec};
use crate::formats::avc;

/// `decode_error_flags` bits that mean the picture is not what the source encoded (everything but a missing
/// reference, which a source starting on a non-IDR keyframe has without being damaged).
const CORRUPT_FLAGS: i32 = ff::ffi::FF_DECODE_ERROR_INVALID_BITSTREAM
    | ff::ffi::FF_DECODE_ERROR_CONCEALMENT_ACTIVE
    | ff::ffi::FF_DECODE_ERROR_DECODE_SLICES;

fn ffe(what: &'static str) -> impl FnOnce(ff::Error) -> PipelineError {
    move |source| PipelineError::Ffmpeg { what, message: source.to_string() }
}

fn again(e: &ff::Error) -> bool {
    matches!(e, ff::Error::Other { errno } if *errno == ff::util::error::EAGAIN) || matches!(e, ff::Error::Eof)
}

struct Rung {
    spec: RungSpec,
    scaler: Option<scaling::Context>,
    encoder: ff::encoder::Video,
    record: Vec<u8>,
    scaled: frame::Video,
    packet: Packet,
    /// Shed: not scaled or encoded.
    paused: bool,
    /// Paused, and to be resumed at the next source keyframe.
    resuming: bool,
    /// Pictures before this time still inside the encoder when it was paused are dropped on resume.
    min_pts: Option<i64>,
}

/// Decoder + per-rung scalers and encoders for one source configuration.
pub struct Pipeline {
    decoder: ff::decoder::Video,
    rungs: Vec<Rung>,
    decoded: frame::Video,
    /// Presentation times of source keyframes not yet decoded.
    key_pts: VecDeque<i64>,
    /// Keyframes are where [`Pipeline::force_keyframes`] says, not where the source has them.
    explicit_keys: bool,
    /// Only pictures presenting in `[start, end)` are encoded ([`Pipeline::set_window`]).
    window: Option<(i64, i64)>,
    source_size: Option<(u32, u32, Pixel)>,
}

/// Quiets FFmpeg's own logging to errors (it writes to stderr, not through tracing) and loads FFmpeg's error
/// messages (without them an [`ff::Error`] displays as an empty string).
pub fn init() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        ff::util::log::set_level(ff::util::log::Level::Fatal);
        ff::util::error::register_all();
    });
}

impl Pipeline {
    /// Opens the decoder for `avc_record` (an `AVCDecoderConfigurationRecord`) and one libx264 encoder per spec,
    /// at `fps` frames per second, each with `threads` codec threads.
    pub fn new(avc_record: &[u8], specs: &[RungSpec], fps: f64, threads: usize) -> Result<Pipeline, PipelineError> {
        init();
        let h264 = ff::decoder::find(codec::Id::H264).ok_or_else(|| PipelineError::Other("no H.264 decoder".into()))?;
        let mut ctx = codec::Context::new_with_codec(h264);
        // SAFETY: the context was just allocated and is not opened yet; extradata is allocated with av_mallocz
        // (padding included), so avcodec_free_context frees it.
        unsafe {
            let p = ff::ffi::av_mallocz(avc_record.len() + ff::ffi::AV_INPUT_BUFFER_PADDING_SIZE as usize) as *mut u8;
            if p.is_null() {
                return Err(PipelineError::Other("out of memory".into()));
            }
            std::ptr::copy_nonoverlapping(avc_record.as_ptr(), p, avc_record.len());
            (*ctx.as_mut_ptr()).extradata = p;
            (*ctx.as_mut_ptr()).extradata_size = avc_record.len() as i32;
        }
        ctx.set_threading(threading::Config {
            kind: threading::Type::Frame,
            count: threads.max(1),
            ..Default::default()
        });
        let decoder = ctx.decoder().video().map_err(ffe("opening the H.264 decoder"))?;
        let x264 = ff::encoder::find_by_name("libx264")
            .ok_or_else(|| PipelineError::Other("FFmpeg has no libx264 encoder".into()))?;
        let fps_q = ff::Rational::new((fps * 1000.0).round().max(1.0) as i32, 1000);
        let mut rungs = Vec::with_capacity(specs.len());
        for spec in specs {
            let mut enc = codec::Context::new_with_codec(x264).encoder().video().map_err(ffe("libx264 context"))?;
            enc.set_width(spec.width);
            enc.set_height(spec.height);
            enc.set_format(Pixel::YUV420P);
            enc.set_time_base(ff::Rational::new(1, 1000));
            enc.set_frame_rate(Some(fps_q));
            enc.set_flags(codec::Flags::GLOBAL_HEADER);
            let mut opts = Dictionary::new();
            opts.set("preset", &spec.preset);
            opts.set("profile", &spec.profile);
            opts.set("b", &format!("{}k", spec.bitrate_kbps));
            opts.set("maxrate", &format!("{}k", spec.maxrate_kbps));
            opts.set("bufsize", &format!("{}k", spec.bufsize_kbits));
            opts.set("threads", &threads.max(1).to_string());
            // Keyframes only where the source has them: forced IDRs, no interval or scene cuts of x264's own.
            opts.set("g", "1000000");
            opts.set("bf", "0");
            opts.set("forced-idr", "1");
            opts.set("x264-params", "scenecut=0:open-gop=0");
            let encoder = enc.open_as_with(x264, opts).map_err(ffe("opening libx264"))?;
            // SAFETY: an opened encoder context; extradata is owned by it and valid for extradata_size bytes.
            let global = unsafe {
                let c = encoder.as_ptr();
                if (*c).extradata.is_null() || (*c).extradata_size <= 0 {
                    &[][..]
                } else {
                    std::slice::from_raw_parts((*c).extradata, (*c).extradata_size as usize)
                }
            };
            let record = avc::decoder_config_record(global)
                .ok_or_else(|| PipelineError::Other("libx264 gave no SPS/PPS".into()))?;
            rungs.push(Rung {
                spec: spec.clone(),
                scaler: None,
                encoder,
                record,
                scaled: frame::Video::empty(),
                packet: Packet::empty(),
                paused: false,
                resuming: false,
                min_pts: None,
            });
        }
        Ok(Pipeline {
            decoder,
            rungs,
            decoded: frame::Video::empty(),
            key_pts: VecDeque::new(),
            explicit_keys: false,
            window: None,
            source_size: None,
        })
    }

    /// The `AVCDecoderConfigurationRecord` of rung `i` (its FLV sequence header payload).
    pub fn config_record(&self, i: usize) -> Option<&[u8]> {
        self.rungs.get(i).map(|r| r.record.as_slice())
    }

    /// Forces IDRs on the pictures presenting at exactly these times (ms, ascending) instead of at the source's
    /// keyframes (a VOD chunk's segment starts: every rung cuts at the same instants).
    pub fn force_keyframes(&mut self, pts: impl IntoIterator<Item = i64>) {
        self.explicit_keys = true;
        self.key_pts.extend(pts);
    }

    /// Encodes only the pictures presenting in `[start, end)` ms: a VOD chunk decodes from its keyframe and past
    /// its end (pictures a later keyframe's references need), and keeps its own pictures.
    pub fn set_window(&mut self, start: i64, end: i64) {
        self.window = Some((start, end));
    }

    /// Stops scaling and encoding rung `i` (it was shed): the rest of the ladder goes on.
    pub fn pause(&mut self, i: usize) {
        if let Some(r) = self.rungs.get_mut(i) {
            r.paused = true;
            r.resuming = false;
        }
    }

    /// Encodes rung `i` again from the next source keyframe on (its first picture is an IDR).
    pub fn resume(&mut self, i: usize) {
        if let Some(r) = self.rungs.get_mut(i) {
            r.resuming = r.paused;
        }
    }

    /// Decodes one source sample (AVCC NAL units) with its DTS and PTS in ms, and encodes whatever pictures come
    /// out on every rung; the encoded pictures are appended to `out`.
    pub fn push(
        &mut self,
        avcc: &[u8],
        dts: i64,
        pts: i64,
        keyframe: bool,
        out: &mut Vec<Encoded>,
    ) -> Result<(), PipelineError> {
        if keyframe && !self.explicit_keys {
            self.key_pts.push_back(pts);
            if self.key_pts.len() > 64 {
                self.key_pts.pop_front();
            }
        }
        let mut packet = Packet::copy(avcc);
        packet.set_dts(Some(dts));
        packet.set_pts(Some(pts));
        if keyframe {
            packet.set_flags(ff::packet::Flags::KEY);
        }
        self.decoder.send_packet(&packet).map_err(ffe("decoding"))?;
        self.drain_decoder(out)
    }

    /// Flushes the decoder and every encoder at the end of the source.
    pub fn finish(&mut self, out: &mut Vec<Encoded>) -> Result<(), PipelineError> {
        self.decoder.send_eof().map_err(ffe("flushing the decoder"))?;
        self.drain_decoder(out)?;
        for (i, rung) in self.rungs.iter_mut().enumerate().filter(|(_, r)| !r.paused) {
            rung.encoder.send_eof().map_err(ffe("flushing an encoder"))?;
            drain_encoder(i, rung, out)?;
        }
        Ok(())
    }

    fn drain_decoder(&mut self, out: &mut Vec<Encoded>) -> Result<(), PipelineError> {
        loop {
            match self.decoder.receive_frame(&mut self.decoded) {
                Ok(()) => {
                    // SAFETY: `decoded` holds the frame just received; reading a plain field.
                    let flags = unsafe { (*self.decoded.as_ptr()).decode_error_flags };
                    if flags & CORRUPT_FLAGS != 0 {
                        let pts = self.decoded.pts().or(self.decoded.timestamp()).unwrap_or(-1);
                        return Err(PipelineError::Corrupt { pts, flags });
                    }
                    self.encode_decoded(out)?
                }
                Err(e) if again(&e) => return Ok(()),
                Err(e) => return Err(PipelineError::Ffmpeg { what: "decoding", message: e.to_string() }),
            }
        }
    }

    fn encode_decoded(&mut self, out: &mut Vec<Encoded>) -> Result<(), PipelineError> {
        let f = &self.decoded;
        let size = (f.width(), f.height(), f.format());
        match self.source_size {
            None => self.source_size = Some(size),
            Some(s) if s != size => {
                return Err(PipelineError::SourceChanged(format!(
                    "the source picture changed from {}x{} to {}x{}",
                    s.0, s.1, size.0, size.1
                )))
            }
            Some(_) => {}
        }
        let Some(pts) = f.pts().or(f.timestamp()) else {
            return Ok(()); // a picture without a time cannot be placed: skip it
        };
        if self.window.is_some_and(|(start, end)| pts < start || pts >= end) {
            return Ok(());
        }
        while self.key_pts.front().is_some_and(|&k| k < pts) {
            self.key_pts.pop_front();
        }
        let force_key = self.key_pts.front() == Some(&pts);
        if force_key {
            self.key_pts.pop_front();
        }
        for (i, rung) in self.rungs.iter_mut().enumerate() {
            if rung.paused {
                if !(rung.resuming && force_key) {
                    continue;
                }
                rung.paused = false;
                rung.resuming = false;
                rung.min_pts = Some(pts);
            }
            if rung.scaler.is_none() {
                let s = scaling::Context::get(
                    size.2,
                    size.0,
                    size.1,
                    Pixel::YUV420P,
                    rung.spec.width,
                    rung.spec.height,
                    scaling::Flags::BILINEAR,
                )
                .map_err(ffe("creating a scaler"))?;
                rung.scaler = Some(s);
            }
            if let Some(scaler) = rung.scaler.as_mut() {
                scaler.run(f, &mut rung.scaled).map_err(ffe("scaling"))?;
            }
            rung.scaled.set_pts(Some(pts));
            rung.scaled.set_kind(if force_key { picture::Type::I } else { picture::Type::None });
            rung.encoder.send_frame(&rung.scaled).map_err(ffe("encoding"))?;
            drain_encoder(i, rung, out)?;
        }
        Ok(())
    }
}

fn drain_encoder(i: usize, rung: &mut Rung, out: &mut Vec<Encoded>) -> Result<(), PipelineError> {
    loop {
        match rung.encoder.receive_packet(&mut rung.packet) {
            Ok(()) => {
                let data = rung.packet.data().unwrap_or_default();
                let mut avcc = Vec::with_capacity(data.len() + 16);
                let idr = avc::annexb_to_avcc(data, &mut avcc);
                let pts = rung.packet.pts().or(rung.packet.dts()).unwrap_or(0);
                if rung.min_pts.is_some_and(|m| pts < m) {
                    continue; // encoded before the rung was shed: stale
                }
                out.push(Encoded { rung: i, pts, keyframe: idr || rung.packet.is_key(), avcc });
            }
            Err(e) if again(&e) => return Ok(()),
            Err(e) => return Err(PipelineError::Ffmpeg { what: "encoding", message: e.to_string() }),
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A source sample: AVCC data, PTS (ms), keyframe.
    pub(crate) type Sample = (Vec<u8>, i64, bool);

    /// A libx264 encoder of `w`×`h` at 30 fps (ms time base, global headers) with `opts`, as a source's, and its
    /// AVC record.
    fn source_encoder(w: u32, h: u32, opts: &[(&str, &str)]) -> (ff::encoder::Video, Vec<u8>) {
        init();
        let x264 = ff::encoder::find_by_name("libx264").expect("libx264");
        let mut enc = codec::Context::new_with_codec(x264).encoder().video().unwrap();
        enc.set_width(w);
        enc.set_height(h);
        enc.set_format(Pixel::YUV420P);
        enc.set_time_base(ff::Rational::new(1, 1000));
        enc.set_frame_rate(Some(ff::Rational::new(30, 1)));
        enc.set_flags(codec::Flags::GLOBAL_HEADER);
        let mut dict = Dictionary::new();
        for (k, v) in opts {
            dict.set(k, v);
        }
        let enc = enc.open_as_with(x264, dict).unwrap();
        // SAFETY: an opened encoder with GLOBAL_HEADER has its extradata.
        let global = unsafe {
            let c = enc.as_ptr();
            std::slice::from_raw_parts((*c).extradata, (*c).extradata_size as usize).to_vec()
        };
        let record = avc::decoder_config_record(&global).unwrap();
        (enc, record)
    }

    /// Encodes `n` synthetic 4:2:0 pictures of `w`×`h` with libx264 (keyframe every `gop`), as a source would:
    /// returns the AVC record and (avcc, pts ms, keyframe) samples at 30 fps.
    pub(crate) fn synthetic_source(w: u32, h: u32, n: usize, gop: usize) -> (Vec<u8>, Vec<Sample>) {
        let gop = gop.to_string();
        let (mut enc, record) =
            source_encoder(w, h, &[("preset", "ultrafast"), ("g", &gop), ("bf", "0"), ("x264-params", "scenecut=0")]);
        let mut frame = frame::Video::new(Pixel::YUV420P, w, h);
        let mut samples = Vec::new();
        let mut pkt = Packet::empty();
        let mut collect = |enc: &mut ff::encoder::Video, samples: &mut Vec<Sample>| {
            while enc.receive_packet(&mut pkt).is_ok() {
                let mut avcc = Vec::new();
                let idr = avc::annexb_to_avcc(pkt.data().unwrap_or_default(), &mut avcc);
                samples.push((avcc, pkt.pts().unwrap_or(0), idr));
            }
        };
        for i in 0..n {
            for p in 0..3 {
                let stride = frame.stride(p);
                let data = frame.data_mut(p);
                for (j, b) in data.iter_mut().enumerate() {
                    *b = ((j % stride) as u8).wrapping_add((i * 3 + j / stride) as u8);
                }
            }
            frame.set_pts(Some((i as i64 * 1000) / 30));
            enc.send_frame(&frame).unwrap();
            collect(&mut enc, &mut samples);
        }
        enc.send_eof().unwrap();
        collect(&mut enc, &mut samples);
        (record, samples)
    }

    /// A small test rung of `w`×`h` at 200 kb/s.
    fn small_rung(h: u32, w: u32, preset: &str, profile: &str) -> RungSpec {
        RungSpec {
            width: w,
            height: h,
            bitrate_kbps: 200,
            maxrate_kbps: 220,
            bufsize_kbits: 300,
            preset: preset.into(),
            profile: profile.into(),
        }
    }

    #[test]
    fn decodes_once_scales_and_keeps_keyframes_aligned() {
        let (record, samples) = synthetic_source(320, 240, 45, 15);
        let keys: Vec<i64> = samples.iter().filter(|s| s.2).map(|s| s.1).collect();
        assert_eq!(keys, vec![0, 500, 1000], "source keyframes every 15 frames");
        let spec = |h, w| small_rung(h, w, "ultrafast", "baseline");
        let mut p = Pipeline::new(&record, &[spec(180, 240), spec(120, 160)], 30.0, 2).unwrap();
        for i in 0..2 {
            let cfg = avc::AvcConfig::parse(p.config_record(i).unwrap()).unwrap();
            assert_eq!((cfg.width, cfg.height), [(240, 180), (160, 120)][i]);
            assert_eq!(cfg.profile_idc, 66, "baseline profile");
        }
        let mut out = Vec::new();
        for (avcc, pts, key) in &samples {
            p.push(avcc, *pts, *pts, *key, &mut out).unwrap();
        }
        p.finish(&mut out).unwrap();
        for rung in 0..2 {
            let pics: Vec<&Encoded> = out.iter().filter(|e| e.rung == rung).collect();
            assert_eq!(pics.len(), 45, "every source picture encoded on rung {rung}");
            let rung_keys: Vec<i64> = pics.iter().filter(|e| e.keyframe).map(|e| e.pts).collect();
            assert_eq!(rung_keys, keys, "rung {rung} keyframes exactly at the source's");
            assert!(pics.windows(2).all(|w| w[1].pts > w[0].pts), "increasing timestamps");
        }
        // Garbage where a picture should be: the decoder either rejects it or conceals it, never panics.
        let _ = p.push(&[0, 0, 0, 4, 0x65, 0xff, 0xff, 0xff], 2000, 2000, true, &mut out);
    }

    #[test]
    fn a_paused_rung_resumes_on_a_source_keyframe_without_stale_pictures() {
        let (record, samples) = synthetic_source(320, 240, 60, 15);
        let spec = |h, w| small_rung(h, w, "veryfast", "main");
        let mut p = Pipeline::new(&record, &[spec(180, 240), spec(120, 160)], 30.0, 2).unwrap();
        let mut out = Vec::new();
        for (n, (avcc, pts, key)) in samples.iter().enumerate() {
            if n == 10 {
                p.pause(0);
            }
            if n == 20 {
                p.resume(0); // the next source keyframe is at 1000 ms (frame 30)
            }
            p.push(avcc, *pts, *pts, *key, &mut out).unwrap();
        }
        p.finish(&mut out).unwrap();
        let shed: Vec<&Encoded> = out.iter().filter(|e| e.rung == 0).collect();
        let other = out.iter().filter(|e| e.rung == 1).count();
        assert_eq!(other, 60, "the other rung is untouched");
        let after: Vec<&&Encoded> = shed.iter().filter(|e| e.pts >= 1000).collect();
        assert_eq!(after.len(), 30, "every picture from the resume keyframe on");
        assert!(after[0].keyframe && after[0].pts == 1000, "resumes with an IDR at the source keyframe");
        assert!(shed.iter().all(|e| e.pts < 1000 / 3 || e.pts >= 1000), "nothing encoded while shed");
        assert!(shed.windows(2).all(|w| w[1].pts > w[0].pts), "increasing timestamps");
    }

    /// Overwrites every NAL unit of `avcc` past its first `keep` bytes with pseudo-random bytes (the AVCC lengths
    /// stay valid).
    fn garble(avcc: &[u8], keep: usize, seed: &mut u64) -> Vec<u8> {
        let mut out = avcc.to_vec();
        let mut i = 0;
        while let Some(len) = out.get(i..i + 4).map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]) as usize) {
            let end = (i + 4 + len).min(out.len());
            for b in out[i + 4..end].iter_mut().skip(keep) {
                *seed ^= *seed << 13;
                *seed ^= *seed >> 7;
                *seed ^= *seed << 17;
                *b = *seed as u8;
            }
            i = end;
        }
        out
    }

    /// Feeds a clean GOP, then garbled pictures: returns the error and the last rung picture's PTS before it.
    fn push_garbled(keep: usize) -> (PipelineError, i64) {
        let (record, samples) = synthetic_source(320, 240, 60, 30);
        let spec = small_rung(120, 160, "ultrafast", "baseline");
        let mut p = Pipeline::new(&record, &[spec], 30.0, 2).unwrap();
        let mut out = Vec::new();
        let mut seed = 0x5eed_u64;
        for (i, (avcc, pts, key)) in samples.iter().enumerate() {
            let data = if i >= 40 { garble(avcc, keep, &mut seed) } else { avcc.clone() };
            if let Err(e) = p.push(&data, *pts, *pts, *key, &mut out) {
                return (e, out.iter().map(|e| e.pts).max().unwrap_or(-1));
            }
        }
        panic!("{} garbled pictures (keeping {keep} bytes of each NAL unit) went through", samples.len() - 40);
    }

    #[test]
    fn clean_sources_with_b_frames_and_open_gops_are_not_taken_for_corrupt() {
        // B-frames (DTS != PTS) and open GOPs (keyframes that are recovery-point I pictures, not IDRs, with
        // leading B-frames that reference the previous GOP), decoded from the second keyframe on as an encoder
        // starting from a stream's GOP cache does: no picture is flagged as damaged.
        let (w, h, n) = (320u32, 180u32, 100usize);
        let opts = [("preset", "veryfast"), ("g", "30"), ("bf", "3"), ("x264-params", "open-gop=1:scenecut=0")];
        let (mut enc, record) = source_encoder(w, h, &opts);
        let mut frame = frame::Video::new(Pixel::YUV420P, w, h);
        let mut samples = Vec::new(); // (avcc, dts, pts, keyframe, idr)
        let mut pkt = Packet::empty();
        for i in 0..=n {
            if i < n {
                for p in 0..3 {
                    let stride = frame.stride(p);
                    for (j, b) in frame.data_mut(p).iter_mut().enumerate() {
                        *b = ((j % stride) as u8).wrapping_mul(3).wrapping_add((i * 5 + (j / stride) * (i % 7)) as u8);
                    }
                }
                frame.set_pts(Some((i as i64 * 1000) / 30));
                enc.send_frame(&frame).unwrap();
            } else {
                enc.send_eof().unwrap();
            }
            while enc.receive_packet(&mut pkt).is_ok() {
                let mut avcc = Vec::new();
                let idr = avc::annexb_to_avcc(pkt.data().unwrap_or_default(), &mut avcc);
                samples.push((avcc, pkt.dts().unwrap_or(0), pkt.pts().unwrap_or(0), pkt.is_key(), idr));
            }
        }
        assert!(samples.iter().any(|s| s.1 != s.2), "the source has B-frames");
        let second_key = samples.iter().skip(1).position(|s| s.3).map(|i| i + 1).expect("a second keyframe");
        assert!(!samples[second_key].4, "the second keyframe is an open-GOP I picture, not an IDR");
        let spec = RungSpec {
            width: 160,
            height: 90,
            bitrate_kbps: 100,
            maxrate_kbps: 110,
            bufsize_kbits: 150,
            preset: "ultrafast".into(),
            profile: "baseline".into(),
        };
        for from in [0, second_key] {
            let mut p = Pipeline::new(&record, std::slice::from_ref(&spec), 30.0, 2).unwrap();
            let mut out = Vec::new();
            for (i, (avcc, dts, pts, key, _)) in samples.iter().enumerate().skip(from) {
                if let Err(e) = p.push(avcc, *dts, *pts, *key, &mut out) {
                    panic!("starting at sample {from}: sample {i}: {e}");
                }
            }
            p.finish(&mut out).unwrap();
            assert!(out.len() + 3 >= samples.len() - from, "starting at {from}: {} pictures", out.len());
        }
    }

    #[test]
    fn garbage_inside_a_picture_fails_the_pipeline_and_is_never_encoded() {
        // Whole slices of garbage: the decoder refuses them (AVERROR_INVALIDDATA, with FFmpeg's message).
        let (e, last) = push_garbled(1);
        let invalid = ff::Error::InvalidData.to_string();
        assert!(matches!(&e, PipelineError::Ffmpeg { message, .. } if *message == invalid), "{e:?}");
        assert!(e.to_string().contains("Invalid data"), "{e}");
        assert!(last < 40 * 1000 / 30, "a garbled picture was encoded: {last}");
        // A readable slice header, garbage after it: the decoder conceals, the pipeline refuses the picture.
        let (e, last) = push_garbled(4);
        assert!(matches!(e, PipelineError::Corrupt { flags, .. } if flags & CORRUPT_FLAGS != 0), "{e:?}");
        assert!(last < 40 * 1000 / 30, "a concealed picture was encoded: {last}");
    }
}
