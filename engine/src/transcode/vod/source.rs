//! Reading a VOD source with FFmpeg (the `transcode` feature): probing it, and reading one chunk's packets.
//!
//! The source is opened by URL: a local file path (local storage) or an HTTP(S) URL FFmpeg reads with range
//! requests (a presigned S3 URL); or through any `Read + Seek` (the job's node, over the cluster). A chunk reads
//! its own byte range (and the container's index), never a whole copy. H.264 and AAC (or no audio) are read:
//! with an `avcC` record and raw AAC (MP4, MOV, Matroska, FLV), or as Annex B and ADTS (MPEG-TS), which are
//! converted as they are read (the record made from the stream's SPS and PPS, the ADTS headers removed); anything
//! else is refused with the reason.

use ff::format::context::Input;
use ff::media::Type;
use ff::{Packet, Rational};
use ffmpeg_next as ff;

use super::plan::{ChunkPlan, SourceInfo};

/// Where a source is read.
pub enum SourceAt {
    /// A local path or an HTTP(S) URL.
    Url(String),
    /// A seekable byte stream (see [`super::remote::OwnerFile`]).
    Stream(Box<dyn ReadSeek>),
}

/// A seekable byte stream FFmpeg can read from another thread.
pub trait ReadSeek: std::io::Read + std::io::Seek + Send {}

impl<T: std::io::Read + std::io::Seek + Send> ReadSeek for T {}

/// What a chunk reads, in file order.
pub enum SourcePacket<'a> {
    /// A video sample (AVCC NAL units), DTS and PTS in ms on the shifted timeline.
    Video {
        /// The sample.
        data: &'a [u8],
        /// Decode time, ms.
        dts: i64,
        /// Presentation time, ms.
        pts: i64,
        /// A keyframe.
        key: bool,
    },
    /// An AAC frame (raw, no ADTS) at `ts` ms.
    Audio {
        /// The frame.
        data: &'a [u8],
        /// Its time, ms.
        ts: i64,
    },
}

/// What probing read: the summary, every picture's (PTS ms, keyframe) in presentation order, and the end.
pub struct Probe {
    /// The summary.
    pub info: SourceInfo,
    /// Pictures (shifted PTS in ms, keyframe), sorted by time.
    pub pictures: Vec<(i64, bool)>,
    /// The end of the last picture, ms.
    pub end_ms: i64,
}

/// An opened source.
pub struct Source {
    input: Input,
    video: usize,
    audio: Option<usize>,
    video_tb: Rational,
    audio_tb: Rational,
    /// The `AVCDecoderConfigurationRecord`.
    pub avc_record: Vec<u8>,
    /// The AAC `AudioSpecificConfig`, when there is audio.
    pub audio_config: Option<Vec<u8>>,
    /// The video is Annex B (MPEG-TS): each sample is converted to `avcC` form.
    annexb: bool,
    /// The audio is ADTS (MPEG-TS): each packet's headers are removed.
    adts: bool,
    fps: f64,
    width: u32,
    height: u32,
    container: String,
    audio_codec: Option<String>,
}

fn ms(ts: i64, tb: Rational) -> i64 {
    (ts as f64 * f64::from(tb.numerator()) * 1000.0 / f64::from(tb.denominator().max(1))).round() as i64
}

fn extradata(par: &ff::codec::Parameters) -> Vec<u8> {
    // SAFETY: reading the codec parameters' extradata, valid for extradata_size bytes while `par` lives.
    unsafe {
        let p = par.as_ptr();
        if (*p).extradata.is_null() || (*p).extradata_size <= 0 {
            Vec::new()
        } else {
            std::slice::from_raw_parts((*p).extradata, (*p).extradata_size as usize).to_vec()
        }
    }
}

fn size_of(par: &ff::codec::Parameters) -> (u32, u32) {
    // SAFETY: plain fields of valid codec parameters.
    unsafe {
        let p = par.as_ptr();
        ((*p).width.max(0) as u32, (*p).height.max(0) as u32)
    }
}

/// The `AudioSpecificConfig` of an ADTS audio stream: its first frame's header; the input is then rewound to
/// its first byte.
fn first_adts_config(input: &mut Input, stream: usize) -> Result<[u8; 2], String> {
    let mut packet = Packet::empty();
    for _ in 0..100_000 {
        match packet.read(input) {
            Ok(()) => {}
            Err(ff::Error::Eof) => break,
            Err(e) => return Err(format!("the file is damaged before its first AAC frame: {e}")),
        }
        if packet.stream() != stream {
            continue;
        }
        let frames = crate::formats::aac::split_adts(packet.data().unwrap_or_default())
            .map_err(|e| format!("the AAC stream has no config and is not ADTS: {e}"))?;
        let Some((config, _)) = frames.first() else { continue };
        // SAFETY: a byte seek on the open input context; FFmpeg flushes its packet queue.
        let r = unsafe { ff::ffi::av_seek_frame(input.as_mut_ptr(), -1, 0, ff::ffi::AVSEEK_FLAG_BYTE) };
        if r < 0 {
            return Err(format!("cannot rewind the file after its first AAC frame: {}", ff::Error::from(r)));
        }
        return Ok(config.to_audio_specific_config());
    }
    Err("the AAC stream has no frames".into())
}

fn rate(r: Rational) -> Option<f64> {
    (r.numerator() > 0 && r.denominator() > 0).then(|| f64::from(r.numerator()) / f64::from(r.denominator()))
}

impl Source {
    /// Opens the source and checks its streams: H.264 video with an `avcC` record, AAC or no audio.
    pub fn open(at: SourceAt) -> Result<Source, String> {
        crate::transcode::pipeline::init();
        let input = match at {
            SourceAt::Url(url) => ff::format::input(&url),
            SourceAt::Stream(stream) => ff::format::context::StreamIo::from_read_seek(stream)
                .and_then(|io| ff::format::input_from_stream(io, None, None)),
        };
        let mut input = input.map_err(|e| format!("not a readable media file: {e}"))?;
        let container = input.format().name().to_string();
        let v = input.streams().best(Type::Video).ok_or("the file has no video stream")?;
        let vpar = v.parameters();
        if vpar.id() != ff::codec::Id::H264 {
            return Err(format!("unsupported video codec {:?}: strom transcodes H.264 sources", vpar.id()));
        }
        let mut avc_record = extradata(&vpar);
        let annexb = avc_record.first() != Some(&1);
        if annexb {
            // MPEG-TS or raw H.264: FFmpeg's probe found the SPS and PPS in the stream.
            avc_record = crate::formats::avc::decoder_config_record(&avc_record)
                .ok_or("the H.264 stream has no SPS and PPS before its pictures")?;
        }
        let (width, height) = size_of(&vpar);
        if width == 0 || height == 0 {
            return Err("the video stream has no picture size".into());
        }
        let fps = rate(v.avg_frame_rate()).or(rate(v.rate())).filter(|f| (1.0..=240.0).contains(f)).unwrap_or(30.0);
        let (video, video_tb) = (v.index(), v.time_base());
        let (mut audio, mut audio_tb, mut audio_config, mut audio_codec) = (None, Rational::new(1, 1000), None, None);
        let mut adts = false;
        let best_audio = input.streams().best(Type::Audio).map(|a| (a.index(), a.time_base(), a.parameters()));
        if let Some((index, time_base, apar)) = best_audio {
            if apar.id() != ff::codec::Id::AAC {
                return Err(format!("unsupported audio codec {:?}: strom passes AAC audio through", apar.id()));
            }
            let mut asc = extradata(&apar);
            if asc.is_empty() {
                // ADTS (MPEG-TS): the config is in every frame's header; the first frame's is the stream's.
                asc = first_adts_config(&mut input, index)?.to_vec();
                adts = true;
            }
            if asc.len() < 2 {
                return Err("the AAC stream has no AudioSpecificConfig".into());
            }
            (audio, audio_tb, audio_config, audio_codec) = (Some(index), time_base, Some(asc), Some("aac".to_string()));
        }
        Ok(Source {
            input,
            video,
            audio,
            video_tb,
            audio_tb,
            avc_record,
            audio_config,
            fps,
            width,
            height,
            container,
            audio_codec,
            annexb,
            adts,
        })
    }

    /// Reads every packet once (no decoding): the pictures' times and keyframes, the timeline's offset.
    pub fn probe(&mut self) -> Result<Probe, String> {
        let mut pictures: Vec<(i64, bool)> = Vec::new();
        let mut last_duration = 0i64;
        let mut first_audio: Option<i64> = None;
        let mut packet = Packet::empty();
        loop {
            match packet.read(&mut self.input) {
                Ok(()) => {}
                Err(ff::Error::Eof) => break,
                Err(e) => {
                    return Err(format!("the file is damaged or cut short after {} pictures: {e}", pictures.len()))
                }
            }
            if packet.stream() == self.video {
                let Some(t) = packet.pts().or(packet.dts()) else { continue };
                pictures.push((ms(t, self.video_tb), packet.is_key()));
                last_duration = ms(packet.duration(), self.video_tb);
            } else if Some(packet.stream()) == self.audio {
                if let Some(t) = packet.pts().or(packet.dts()) {
                    let t = ms(t, self.audio_tb);
                    first_audio = Some(first_audio.map_or(t, |f: i64| f.min(t)));
                }
            }
        }
        if pictures.is_empty() {
            return Err("the video stream has no pictures".into());
        }
        pictures.sort_by_key(|p| p.0);
        let first_video = pictures[0].0;
        // The timeline starts at 0: negative starts (an MP4's edit list, audio priming) and MPEG-TS's late ones
        // (1.4 s from ffmpeg's muxer, hours into a capture) alike.
        let offset = -first_audio.map_or(first_video, |a| a.min(first_video));
        for p in &mut pictures {
            p.0 += offset;
        }
        let step = if last_duration > 0 { last_duration } else { (1000.0 / self.fps).round() as i64 };
        let end_ms = pictures.last().map_or(0, |p| p.0) + step;
        let first_key = pictures.iter().find(|p| p.1).map(|p| p.0).ok_or("the video has no keyframe")?;
        let frames = pictures.iter().filter(|p| p.0 >= first_key).count() as u64;
        let info = SourceInfo {
            container: self.container.clone(),
            duration: (end_ms - first_key) as f64 / 1000.0,
            width: self.width,
            height: self.height,
            fps: self.fps,
            video_codec: "h264".into(),
            audio_codec: self.audio_codec.clone(),
            frames,
            offset_ms: offset,
        };
        Ok(Probe { info, pictures, end_ms })
    }

    /// Reads the packets chunk `plan` needs, in file order: video from its keyframe in decode order up to the
    /// first picture after the next chunk's keyframe that presents at or after `end_ms` (pictures of this chunk
    /// that follow that keyframe in decode order come along), audio presenting in `[start_ms, end_ms)`.
    /// `offset_ms`: the probe's. `f` may stop the read with an error (cancelled).
    pub fn read_chunk(
        &mut self,
        plan: &ChunkPlan,
        offset_ms: i64,
        f: &mut dyn FnMut(SourcePacket<'_>) -> Result<(), String>,
    ) -> Result<(), String> {
        if plan.index > 0 {
            // MP4/MOV: to the chunk's keyframe itself (the demuxer places every track there, audio included, so
            // the chunk reads its own bytes and not the GOP before it). Other containers seek by file position:
            // a second early, so the audio stored before the keyframe comes along.
            let early = if self.container.starts_with("mov") { 0 } else { 1000 };
            let at_us = (plan.start_ms - offset_ms - early).max(0) * 1000 + 999;
            self.input.seek(at_us, ..at_us).map_err(|e| format!("seeking to {} ms: {e}", plan.start_ms))?;
        }
        let (mut started, mut past_end_key, mut video_done, mut audio_done) =
            (false, false, false, self.audio.is_none());
        let mut packet = Packet::empty();
        let mut avcc = Vec::new();
        // ms per AAC frame (ADTS packets may hold several).
        let aac_frame_ms = match self.audio_config.as_deref().map(crate::formats::aac::AacConfig::parse) {
            Some(Ok(c)) if c.sample_rate > 0 => 1024.0 * 1000.0 / f64::from(c.sample_rate),
            _ => 0.0,
        };
        while !(video_done && audio_done) {
            match packet.read(&mut self.input) {
                Ok(()) => {}
                Err(ff::Error::Eof) => break,
                Err(e) => return Err(format!("reading chunk {}: {e}", plan.index)),
            }
            let data = packet.data().unwrap_or_default();
            if packet.stream() == self.video && !video_done {
                let (Some(pts), Some(dts)) = (packet.pts().or(packet.dts()), packet.dts().or(packet.pts())) else {
                    continue;
                };
                let (pts, dts) = (ms(pts, self.video_tb) + offset_ms, ms(dts, self.video_tb) + offset_ms);
                let key = packet.is_key();
                if !started {
                    if !(key && pts == plan.start_ms) {
                        if pts > plan.start_ms + 60_000 {
                            return Err(format!(
                                "chunk {}: its keyframe at {} ms was not found",
                                plan.index, plan.start_ms
                            ));
                        }
                        continue;
                    }
                    started = true;
                }
                if past_end_key && pts >= plan.end_ms {
                    video_done = true;
                    continue;
                }
                if key && pts >= plan.end_ms {
                    past_end_key = true;
                }
                let data = if self.annexb {
                    avcc.clear();
                    crate::formats::avc::annexb_to_avcc(data, &mut avcc);
                    &avcc[..]
                } else {
                    data
                };
                f(SourcePacket::Video { data, dts, pts, key })?;
            } else if Some(packet.stream()) == self.audio && !audio_done {
                let Some(t) = packet.pts().or(packet.dts()) else { continue };
                let ts = ms(t, self.audio_tb) + offset_ms;
                let frames = if self.adts {
                    match crate::formats::aac::split_adts(data) {
                        Ok(frames) => frames
                            .into_iter()
                            .enumerate()
                            .map(|(i, (_, raw))| (ts + (i as f64 * aac_frame_ms).round() as i64, raw))
                            .collect(),
                        Err(e) => {
                            // A damaged audio packet is left out, as a player would skip it; the chunk goes on.
                            tracing::debug!(chunk = plan.index, at_ms = ts, error = %e, "damaged ADTS audio skipped");
                            Vec::new()
                        }
                    }
                } else {
                    vec![(ts, data)]
                };
                for (ts, data) in frames {
                    if ts >= plan.end_ms {
                        audio_done = true;
                    } else if ts >= plan.start_ms {
                        f(SourcePacket::Audio { data, ts })?;
                    }
                }
            }
        }
        if !started {
            return Err(format!("chunk {}: its keyframe at {} ms was not found", plan.index, plan.start_ms));
        }
        Ok(())
    }
}
