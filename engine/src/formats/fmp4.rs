//! Fragmented MP4 (ISO/IEC 14496-12, CMAF) as HLS and LL-HLS carry it: an init segment (`ftyp` + `moov`, one
//! track per codec, no samples) and fragments (`moof` + `mdat`), one per LL-HLS part.
//!
//! Pure and small on purpose: about twenty fixed boxes, written with a size-patching [`BoxWriter`]. The layout is
//! what hls.js, Safari, ffmpeg and VLC read (and what MediaMTX serves): in a fragment, one `traf` per track with
//! samples, each with `tfhd` (default-base-is-moof), `tfdt` version 1 and `trun` version 1 (signed composition
//! offsets); the tracks' samples back to back in one `mdat`, in `traf` order.
//!
//! Codec-generic in structure: a [`TrackKind`] says how its sample entry is written. H.264 (`avc1` + `avcC`) and
//! AAC (`mp4a` + `esds`) today; HEVC, AV1 and Opus add a variant each. Timescales: 90 kHz for video, the sample
//! rate for audio (CMAF's choice), so audio durations are whole samples.

use bytes::{BufMut, Bytes, BytesMut};

/// Video timescale (ticks per second).
pub const VIDEO_TIMESCALE: u32 = 90_000;

/// Sample flags of a sync sample (`sample_depends_on` = 2: depends on no other sample).
const SYNC: u32 = 0x0200_0000;
/// Sample flags of a non-sync sample (`sample_depends_on` = 1, `sample_is_non_sync_sample`).
const NON_SYNC: u32 = 0x0101_0000;

/// What a track carries, with what its sample entry needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TrackKind {
    /// H.264: the `AVCDecoderConfigurationRecord` (an FLV AVC sequence header's payload) and the picture size.
    Avc {
        /// The `avcC` record, as is.
        record: Bytes,
        /// Picture width in pixels.
        width: u16,
        /// Picture height in pixels.
        height: u16,
    },
    /// AAC: the `AudioSpecificConfig` (an FLV AAC sequence header's payload).
    Aac {
        /// The AudioSpecificConfig, as is.
        config: Bytes,
        /// Sampling rate in Hz (also the track's timescale).
        sample_rate: u32,
        /// Channel count.
        channels: u16,
    },
}

/// One track of an init segment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Track {
    /// Track id (1-based, unique in the init segment).
    pub id: u32,
    /// Codec and parameters.
    pub kind: TrackKind,
}

impl Track {
    /// Ticks per second of the track's media time.
    pub fn timescale(&self) -> u32 {
        match &self.kind {
            TrackKind::Avc { .. } => VIDEO_TIMESCALE,
            TrackKind::Aac { sample_rate, .. } => (*sample_rate).max(1),
        }
    }

    fn is_video(&self) -> bool {
        matches!(self.kind, TrackKind::Avc { .. })
    }
}

/// One sample of a fragment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sample {
    /// Duration in the track's timescale.
    pub duration: u32,
    /// Composition offset (PTS − DTS) in the track's timescale.
    pub cts_offset: i32,
    /// A sync sample (an IDR picture; every audio sample).
    pub sync: bool,
    /// The sample's bytes (H.264: AVCC length-prefixed NAL units; AAC: one raw frame).
    pub data: Bytes,
}

/// One track's run of samples in a fragment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Run {
    /// The track.
    pub track_id: u32,
    /// Decode time of the first sample, in the track's timescale.
    pub base_decode_time: u64,
    /// The samples, in decode order.
    pub samples: Vec<Sample>,
}

/// Writes boxes into a buffer, patching each box's size when it is closed.
pub struct BoxWriter {
    buf: BytesMut,
    open: Vec<usize>,
}

impl Default for BoxWriter {
    fn default() -> Self {
        BoxWriter::new()
    }
}

impl BoxWriter {
    /// An empty writer.
    pub fn new() -> BoxWriter {
        BoxWriter { buf: BytesMut::with_capacity(1024), open: Vec::new() }
    }

    /// Opens a box of type `kind`; close it with [`BoxWriter::end`].
    pub fn start(&mut self, kind: &[u8; 4]) {
        self.open.push(self.buf.len());
        self.buf.put_u32(0);
        self.buf.put_slice(kind);
    }

    /// Opens a full box (with version and flags).
    pub fn start_full(&mut self, kind: &[u8; 4], version: u8, flags: u32) {
        self.start(kind);
        self.buf.put_u32((u32::from(version) << 24) | (flags & 0x00ff_ffff));
    }

    /// Closes the innermost open box.
    pub fn end(&mut self) {
        if let Some(at) = self.open.pop() {
            let size = (self.buf.len() - at) as u32;
            self.buf[at..at + 4].copy_from_slice(&size.to_be_bytes());
        }
    }

    /// The buffer being written.
    pub fn buf(&mut self) -> &mut BytesMut {
        &mut self.buf
    }

    /// Bytes written so far.
    pub fn len(&self) -> usize {
        self.buf.len()
    }

    /// Whether nothing was written.
    pub fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }

    /// The boxes (every box must be closed).
    pub fn finish(self) -> Bytes {
        debug_assert!(self.open.is_empty(), "unclosed box");
        self.buf.freeze()
    }
}

const MATRIX: [u32; 9] = [0x0001_0000, 0, 0, 0, 0x0001_0000, 0, 0, 0, 0x4000_0000];

/// The init segment of `tracks`: `ftyp` and a `moov` without samples, with `mvex` (the samples come in
/// fragments).
pub fn init_segment(tracks: &[Track]) -> Bytes {
    let mut w = BoxWriter::new();
    w.start(b"ftyp");
    w.buf().put_slice(b"iso6");
    w.buf().put_u32(0);
    for brand in [b"iso6", b"cmfc", b"isom", b"mp41", b"hlsf"] {
        w.buf().put_slice(brand);
    }
    w.end();
    w.start(b"moov");
    w.start_full(b"mvhd", 0, 0);
    let b = w.buf();
    b.put_u32(0); // creation time
    b.put_u32(0); // modification time
    b.put_u32(1000); // timescale
    b.put_u32(0); // duration: unknown (fragmented)
    b.put_u32(0x0001_0000); // rate 1.0
    b.put_u16(0x0100); // volume 1.0
    b.put_bytes(0, 10);
    MATRIX.iter().for_each(|m| b.put_u32(*m));
    b.put_bytes(0, 24);
    b.put_u32(tracks.iter().map(|t| t.id).max().unwrap_or(0) + 1);
    w.end();
    for t in tracks {
        trak(&mut w, t);
    }
    w.start(b"mvex");
    for t in tracks {
        w.start_full(b"trex", 0, 0);
        let b = w.buf();
        b.put_u32(t.id);
        b.put_u32(1); // default sample description index
        b.put_u32(0); // default duration
        b.put_u32(0); // default size
        b.put_u32(0); // default flags
        w.end();
    }
    w.end();
    w.end();
    w.finish()
}

/// An init segment that declares the whole presentation's `duration` (a recording exported as one fragmented MP4
/// file): the durations of `mvhd`, of each track's `tkhd` and `mdhd` (in their timescales), and a `mehd` in
/// `mvex`, so players and ffprobe show the length and can seek without reading every fragment. `None` when `init` is not an init segment this can edit (no
/// `moov`/`mvhd`/`mvex`, 64-bit box sizes, a `mehd` already there).
pub fn with_duration(init: &[u8], duration_secs: f64) -> Option<Bytes> {
    /// (offset, size, type) of the boxes in `data[from..to]`.
    fn children(data: &[u8], from: usize, to: usize) -> Option<Vec<(usize, usize, [u8; 4])>> {
        let mut out = Vec::new();
        let mut at = from;
        while at < to {
            let size = u32::from_be_bytes(data.get(at..at + 4)?.try_into().ok()?) as usize;
            let kind: [u8; 4] = data.get(at + 4..at + 8)?.try_into().ok()?;
            if size < 8 || at + size > to {
                return None;
            }
            out.push((at, size, kind));
            at += size;
        }
        Some(out)
    }
    let top = children(init, 0, init.len())?;
    let &(moov, moov_size, _) = top.iter().find(|(_, _, k)| k == b"moov")?;
    let inner = children(init, moov + 8, moov + moov_size)?;
    let &(mvhd, _, _) = inner.iter().find(|(_, _, k)| k == b"mvhd")?;
    let &(mvex, mvex_size, _) = inner.iter().find(|(_, _, k)| k == b"mvex")?;
    if children(init, mvex + 8, mvex + mvex_size)?.iter().any(|(_, _, k)| k == b"mehd") {
        return None;
    }
    // (offset of the duration field, its width, timescale) of a version 0/1 `mvhd`/`mdhd` or `tkhd` at `at`.
    let field = |at: usize, tkhd: bool, timescale: Option<u32>| -> Option<(usize, usize, u32)> {
        let v1 = match *init.get(at + 8)? {
            0 => false,
            1 => true,
            _ => return None,
        };
        let times = if v1 { 16 } else { 8 }; // creation and modification times
        if tkhd {
            // tkhd: times, track id, reserved, then the duration in the movie timescale.
            return Some((at + 12 + times + 8, if v1 { 8 } else { 4 }, timescale?));
        }
        let ts_at = at + 12 + times;
        let ts = u32::from_be_bytes(init.get(ts_at..ts_at + 4)?.try_into().ok()?);
        Some((ts_at + 4, if v1 { 8 } else { 4 }, ts))
    };
    let (mvhd_duration, mvhd_width, movie_ts) = field(mvhd, false, None)?;
    let mut patches = vec![(mvhd_duration, mvhd_width, movie_ts)];
    for &(trak, size, _) in inner.iter().filter(|(_, _, k)| k == b"trak") {
        let in_trak = children(init, trak + 8, trak + size)?;
        let &(tkhd, _, _) = in_trak.iter().find(|(_, _, k)| k == b"tkhd")?;
        patches.push(field(tkhd, true, Some(movie_ts))?);
        let &(mdia, mdia_size, _) = in_trak.iter().find(|(_, _, k)| k == b"mdia")?;
        let &(mdhd, _, _) = children(init, mdia + 8, mdia + mdia_size)?.iter().find(|(_, _, k)| k == b"mdhd")?;
        patches.push(field(mdhd, false, None)?);
    }
    let ticks = |ts: u32| (duration_secs.max(0.0) * f64::from(ts)).round() as u64;
    const MEHD: usize = 20; // a version-1 full box: size, type, version and flags, a 64-bit duration
    let mut out = BytesMut::with_capacity(init.len() + MEHD);
    out.put_slice(&init[..mvex + 8]);
    out.put_u32(MEHD as u32);
    out.put_slice(b"mehd");
    out.put_u32(0x0100_0000);
    out.put_u64(ticks(movie_ts));
    out.put_slice(&init[mvex + 8..]);
    let grow = |out: &mut BytesMut, at: usize, size: usize| {
        out[at..at + 4].copy_from_slice(&((size + MEHD) as u32).to_be_bytes());
    };
    grow(&mut out, moov, moov_size);
    grow(&mut out, mvex, mvex_size);
    // Every patched field lies before mvex (mvhd and the traks precede it in a moov this writes), so the
    // inserted mehd has not moved them; one that does not is refused.
    for (at, width, ts) in patches {
        if at + width > mvex {
            return None;
        }
        match width {
            4 => out[at..at + 4].copy_from_slice(&(ticks(ts).min(u64::from(u32::MAX)) as u32).to_be_bytes()),
            _ => out[at..at + 8].copy_from_slice(&ticks(ts).to_be_bytes()),
        }
    }
    Some(out.freeze())
}

fn trak(w: &mut BoxWriter, t: &Track) {
    let video = t.is_video();
    w.start(b"trak");
    w.start_full(b"tkhd", 0, 3); // enabled, in movie
    let (width, height) = match &t.kind {
        TrackKind::Avc { width, height, .. } => (*width, *height),
        TrackKind::Aac { .. } => (0, 0),
    };
    let b = w.buf();
    b.put_u32(0);
    b.put_u32(0);
    b.put_u32(t.id);
    b.put_u32(0); // reserved
    b.put_u32(0); // duration
    b.put_bytes(0, 8);
    b.put_u16(0); // layer
    b.put_u16(if video { 0 } else { 1 }); // alternate group
    b.put_u16(if video { 0 } else { 0x0100 }); // volume
    b.put_u16(0);
    MATRIX.iter().for_each(|m| b.put_u32(*m));
    b.put_u32(u32::from(width) << 16);
    b.put_u32(u32::from(height) << 16);
    w.end();
    w.start(b"mdia");
    w.start_full(b"mdhd", 0, 0);
    let b = w.buf();
    b.put_u32(0);
    b.put_u32(0);
    b.put_u32(t.timescale());
    b.put_u32(0);
    b.put_u16(0x55c4); // language "und"
    b.put_u16(0);
    w.end();
    w.start_full(b"hdlr", 0, 0);
    let b = w.buf();
    b.put_u32(0);
    b.put_slice(if video { b"vide" } else { b"soun" });
    b.put_bytes(0, 12);
    b.put_slice(if video { b"VideoHandler\0" } else { b"SoundHandler\0" });
    w.end();
    w.start(b"minf");
    if video {
        w.start_full(b"vmhd", 0, 1);
        w.buf().put_bytes(0, 8);
    } else {
        w.start_full(b"smhd", 0, 0);
        w.buf().put_u32(0);
    }
    w.end();
    w.start(b"dinf");
    w.start_full(b"dref", 0, 0);
    w.buf().put_u32(1);
    w.start_full(b"url ", 0, 1); // media in the same file
    w.end();
    w.end();
    w.end();
    w.start(b"stbl");
    w.start_full(b"stsd", 0, 0);
    w.buf().put_u32(1);
    sample_entry(w, &t.kind);
    w.end();
    for kind in [b"stts", b"stsc", b"stco"] {
        w.start_full(kind, 0, 0);
        w.buf().put_u32(0);
        w.end();
    }
    w.start_full(b"stsz", 0, 0);
    w.buf().put_u32(0);
    w.buf().put_u32(0);
    w.end();
    w.end(); // stbl
    w.end(); // minf
    w.end(); // mdia
    w.end(); // trak
}

fn sample_entry(w: &mut BoxWriter, kind: &TrackKind) {
    match kind {
        TrackKind::Avc { record, width, height } => {
            w.start(b"avc1");
            let b = w.buf();
            b.put_bytes(0, 6);
            b.put_u16(1); // data reference index
            b.put_bytes(0, 16); // pre_defined, reserved
            b.put_u16(*width);
            b.put_u16(*height);
            b.put_u32(0x0048_0000); // 72 dpi
            b.put_u32(0x0048_0000);
            b.put_u32(0);
            b.put_u16(1); // frame count
            b.put_bytes(0, 32); // compressor name
            b.put_u16(0x0018); // depth
            b.put_i16(-1);
            w.start(b"avcC");
            w.buf().put_slice(record);
            w.end();
            w.end();
        }
        TrackKind::Aac { config, sample_rate, channels } => {
            w.start(b"mp4a");
            let b = w.buf();
            b.put_bytes(0, 6);
            b.put_u16(1);
            b.put_bytes(0, 8);
            b.put_u16(*channels);
            b.put_u16(16); // sample size
            b.put_u32(0);
            // 16.16 fixed point; rates above 65535 Hz do not fit (the esds's config is what decoders use).
            b.put_u32((*sample_rate).min(0xffff) << 16);
            w.start_full(b"esds", 0, 0);
            esds(w.buf(), config);
            w.end();
            w.end();
        }
    }
}

/// The ES descriptor of an AAC track (ISO/IEC 14496-1): ES_Descriptor ⊃ DecoderConfigDescriptor ⊃
/// DecoderSpecificInfo (the AudioSpecificConfig), then SLConfigDescriptor.
fn esds(b: &mut BytesMut, config: &[u8]) {
    let dcd = 13 + descriptor_size(config.len());
    let es = 3 + descriptor_size(dcd) + descriptor_size(1);
    put_descriptor(b, 0x03, es);
    b.put_u16(0); // ES_ID
    b.put_u8(0); // flags
    put_descriptor(b, 0x04, dcd);
    b.put_u8(0x40); // Audio ISO/IEC 14496-3
    b.put_u8(0x15); // audio stream
    b.put_bytes(0, 3); // buffer size
    b.put_u32(0); // max bitrate
    b.put_u32(0); // average bitrate
    put_descriptor(b, 0x05, config.len());
    b.put_slice(config);
    put_descriptor(b, 0x06, 1);
    b.put_u8(0x02); // SL predefined: MP4
}

/// Size of a descriptor whose payload is `len` bytes (tag, length, payload).
fn descriptor_size(len: usize) -> usize {
    1 + length_bytes(len) + len
}

fn length_bytes(len: usize) -> usize {
    match len {
        0..=0x7f => 1,
        0x80..=0x3fff => 2,
        0x4000..=0x1f_ffff => 3,
        _ => 4,
    }
}

fn put_descriptor(b: &mut BytesMut, tag: u8, len: usize) {
    b.put_u8(tag);
    let n = length_bytes(len);
    for i in (0..n).rev() {
        let more = if i > 0 { 0x80 } else { 0 };
        b.put_u8(more | ((len >> (7 * i)) & 0x7f) as u8);
    }
}

/// One fragment: `moof` (`mfhd` with `sequence`, a `traf` per run with samples) and the `mdat` with every run's
/// samples in order. Sample bytes are copied once, into the fragment.
pub fn fragment(sequence: u32, runs: &[Run]) -> Bytes {
    let mut w = BoxWriter::new();
    w.start(b"moof");
    w.start_full(b"mfhd", 0, 0);
    w.buf().put_u32(sequence);
    w.end();
    let mut offsets = Vec::new();
    for run in runs.iter().filter(|r| !r.samples.is_empty()) {
        w.start(b"traf");
        w.start_full(b"tfhd", 0, 0x02_0000); // default-base-is-moof
        w.buf().put_u32(run.track_id);
        w.end();
        w.start_full(b"tfdt", 1, 0);
        w.buf().put_u64(run.base_decode_time);
        w.end();
        let cts = run.samples.iter().any(|s| s.cts_offset != 0);
        let flags = 0x001 | 0x100 | 0x200 | 0x400 | if cts { 0x800 } else { 0 };
        w.start_full(b"trun", 1, flags);
        w.buf().put_u32(run.samples.len() as u32);
        offsets.push(w.len());
        w.buf().put_u32(0); // data offset, patched below
        for s in &run.samples {
            let b = w.buf();
            b.put_u32(s.duration);
            b.put_u32(s.data.len() as u32);
            b.put_u32(if s.sync { SYNC } else { NON_SYNC });
            if cts {
                b.put_i32(s.cts_offset);
            }
        }
        w.end();
        w.end();
    }
    w.end();
    let moof_len = w.len();
    let media: usize = runs.iter().flat_map(|r| &r.samples).map(|s| s.data.len()).sum();
    // The mdat's payload starts after its 8-byte header; each run's offset is from the moof's first byte.
    let mut at = moof_len + 8;
    for (run, offset) in runs.iter().filter(|r| !r.samples.is_empty()).zip(offsets) {
        w.buf()[offset..offset + 4].copy_from_slice(&(at as u32).to_be_bytes());
        at += run.samples.iter().map(|s| s.data.len()).sum::<usize>();
    }
    let b = w.buf();
    b.reserve(8 + media);
    b.put_u32((8 + media) as u32);
    b.put_slice(b"mdat");
    for s in runs.iter().flat_map(|r| &r.samples) {
        b.put_slice(&s.data);
    }
    w.finish()
}

#[cfg(test)]
mod tests {
    use super::*;
    use mp4_atom::{Any, Codec, Decode};

    /// x264's parameter sets for 320x240 (as in the avc tests), wrapped in an avcC record.
    fn avcc() -> Bytes {
        let sps: &[u8] = &[
            0x67, 0x64, 0x00, 0x0d, 0xac, 0xd9, 0x41, 0x41, 0xfb, 0x01, 0x10, 0x00, 0x00, 0x03, 0x00, 0x10, 0x00, 0x00,
            0x03, 0x03, 0xc0, 0xf1, 0x42, 0x99, 0x60,
        ];
        let pps: &[u8] = &[0x68, 0xeb, 0xe3, 0xcb, 0x22, 0xc0];
        let mut r = vec![1, sps[1], sps[2], sps[3], 0xff, 0xe1];
        r.extend_from_slice(&(sps.len() as u16).to_be_bytes());
        r.extend_from_slice(sps);
        r.push(1);
        r.extend_from_slice(&(pps.len() as u16).to_be_bytes());
        r.extend_from_slice(pps);
        Bytes::from(r)
    }

    fn tracks() -> Vec<Track> {
        vec![
            Track { id: 1, kind: TrackKind::Avc { record: avcc(), width: 320, height: 240 } },
            Track {
                id: 2,
                kind: TrackKind::Aac { config: Bytes::from_static(&[0x12, 0x10]), sample_rate: 44_100, channels: 2 },
            },
        ]
    }

    /// Every top-level box of `data`, decoded by an independent parser (mp4-atom).
    fn boxes(data: &[u8]) -> Vec<Any> {
        let mut b = data;
        let mut out = Vec::new();
        while !b.is_empty() {
            out.push(Any::decode(&mut b).expect("a box mp4-atom can decode"));
        }
        out
    }

    #[test]
    fn an_init_segment_can_declare_the_whole_duration() {
        let init = init_segment(&tracks());
        let long = with_duration(&init, 61.234).expect("our init segment");
        assert_eq!(long.len(), init.len() + 20);
        let all = boxes(&long);
        let Any::Moov(moov) = &all[1] else { panic!("moov second") };
        assert_eq!(moov.mvhd.duration, 61_234);
        for t in &moov.trak {
            assert_eq!(t.tkhd.duration, 61_234, "movie timescale");
            let ts = u64::from(t.mdia.mdhd.timescale);
            assert_eq!(t.mdia.mdhd.duration, (61.234 * ts as f64).round() as u64, "track timescale {ts}");
        }
        assert_eq!(moov.mvex.as_ref().and_then(|m| m.mehd.as_ref()).map(|m| m.fragment_duration), Some(61_234));
        assert_eq!(moov.trak.len(), 2, "the rest is intact");
        assert_eq!(with_duration(&long, 1.0), None, "a mehd is there already");
        assert_eq!(with_duration(&init[..init.len() - 3], 1.0), None, "cut short");
        assert_eq!(with_duration(b"not an mp4", 1.0), None);
    }

    #[test]
    fn init_segment_declares_both_tracks_as_an_independent_parser_reads_them() {
        let init = init_segment(&tracks());
        let all = boxes(&init);
        assert_eq!(all.len(), 2, "ftyp + moov");
        let Any::Ftyp(ftyp) = &all[0] else { panic!("ftyp first: {:?}", all[0]) };
        assert_eq!(ftyp.major_brand.as_ref(), b"iso6");
        let Any::Moov(moov) = &all[1] else { panic!("moov second") };
        assert_eq!(moov.trak.len(), 2);
        assert_eq!(moov.mvex.as_ref().map(|m| m.trex.len()), Some(2));
        let video = &moov.trak[0];
        assert_eq!(video.tkhd.track_id, 1);
        assert_eq!(video.mdia.mdhd.timescale, VIDEO_TIMESCALE);
        match &video.mdia.minf.stbl.stsd.codecs[0] {
            Codec::Avc1(a) => {
                assert_eq!((a.visual.width, a.visual.height), (320, 240));
                assert_eq!(a.avcc.sequence_parameter_sets.len(), 1);
                assert_eq!(a.avcc.picture_parameter_sets.len(), 1);
                assert_eq!(a.avcc.avc_profile_indication, 0x64);
            }
            other => panic!("avc1 expected: {other:?}"),
        }
        let audio = &moov.trak[1];
        assert_eq!(audio.tkhd.track_id, 2);
        assert_eq!(audio.mdia.mdhd.timescale, 44_100);
        match &audio.mdia.minf.stbl.stsd.codecs[0] {
            Codec::Mp4a(m) => {
                assert_eq!(m.audio.channel_count, 2);
                let dsi = &m.esds.es_desc.dec_config.dec_specific;
                assert_eq!(dsi.as_ref().map(|d| d.profile), Some(2), "AAC-LC");
                assert_eq!(m.esds.es_desc.dec_config.object_type_indication, 0x40);
            }
            other => panic!("mp4a expected: {other:?}"),
        }
    }

    #[test]
    fn fragment_offsets_durations_flags_and_composition_times_read_back() {
        let v = |n: u8, sync: bool, cts: i32| Sample {
            duration: 3000,
            cts_offset: cts,
            sync,
            data: Bytes::from(vec![n; 100 + n as usize]),
        };
        let a = |n: u8| Sample { duration: 1024, cts_offset: 0, sync: true, data: Bytes::from(vec![0xa0 | n; 7]) };
        let runs = vec![
            Run { track_id: 1, base_decode_time: 90_000 * 5, samples: vec![v(1, true, 6000), v(2, false, -3000)] },
            Run { track_id: 2, base_decode_time: (1u64 << 33) + 3, samples: vec![a(1), a(2), a(3)] },
        ];
        let frag = fragment(42, &runs);
        let all = boxes(&frag);
        let Any::Moof(moof) = &all[0] else { panic!("moof first") };
        let Any::Mdat(mdat) = &all[1] else { panic!("mdat second") };
        assert_eq!(moof.mfhd.sequence_number, 42);
        assert_eq!(moof.traf.len(), 2);
        let mut expect_at = frag.len() - mdat.data.len();
        for (traf, run) in moof.traf.iter().zip(&runs) {
            assert_eq!(traf.tfhd.track_id, run.track_id);
            assert_eq!(traf.tfdt.as_ref().map(|t| t.base_media_decode_time), Some(run.base_decode_time));
            let trun = &traf.trun[0];
            assert_eq!(trun.data_offset, Some(expect_at as i32), "moof-relative data offset");
            for (e, s) in trun.samples.iter().zip(&run.samples) {
                assert_eq!(e.duration, Some(s.duration));
                assert_eq!(e.size, Some(s.data.len() as u32));
                let non_sync = e.flags.is_some_and(|f| f & 0x0001_0000 != 0);
                assert_eq!(non_sync, !s.sync);
                assert_eq!(e.cts.unwrap_or(0), i64::from(s.cts_offset));
                assert_eq!(&frag[expect_at..expect_at + s.data.len()], &s.data[..], "sample bytes where trun says");
                expect_at += s.data.len();
            }
        }
        assert_eq!(expect_at, frag.len());
    }

    #[test]
    fn descriptor_lengths_take_as_many_bytes_as_they_need() {
        for len in [0usize, 0x7f, 0x80, 0x3fff, 0x4000] {
            let mut b = BytesMut::new();
            put_descriptor(&mut b, 5, len);
            assert_eq!(b.len(), 1 + length_bytes(len));
            let mut v = 0usize;
            for byte in &b[1..] {
                v = (v << 7) | usize::from(byte & 0x7f);
            }
            assert_eq!(v, len);
        }
        let big = vec![0u8; 300];
        let mut b = BytesMut::new();
        esds(&mut b, &big);
        assert_eq!(b[1] & 0x80, 0x80, "a long ES descriptor uses a multi-byte length");
    }
}
