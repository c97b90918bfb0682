//! AAC helpers for the ingest → HLS path.
//!
//! * [`AacConfig::parse`] decodes the leading fields of an MPEG-4
//!   `AudioSpecificConfig` (ISO/IEC 14496-3 §1.6.2.1) — the payload of an FLV
//!   "AAC sequence header" after its 2-byte FLV audio tag header.
//! * [`AacConfig::adts_header`] builds the 7-byte ADTS header (ISO/IEC 13818-7
//!   / 14496-3 §1.A.2) that turns a raw AAC frame into the self-describing form
//!   carried in MPEG-TS (stream_type 0x0F).
//!
//! Decisions worth knowing:
//!
//! * **Explicit sampling frequency** (`samplingFrequencyIndex` 15): if the
//!   24-bit frequency equals one of the 13 table rates, the config is
//!   normalised to that index. Otherwise `sample_rate_index` stays 15 and
//!   [`AacConfig::adts_header`] returns [`AacError::ExplicitSampleRate`]:
//!   ADTS can only carry a table index, and rounding to the nearest rate would
//!   make players resample/play at the wrong speed, so this is refused rather
//!   than silently mapped.
//! * **HE-AAC / HE-AACv2 with explicit signalling** (object type 5 or 29):
//!   `object_type` keeps the signalled 5/29 (so [`AacConfig::codec_string`]
//!   yields `mp4a.40.5` / `mp4a.40.29`), while `sample_rate_index` and
//!   `sample_rate` describe the AAC-LC *core* (the extension rate is parsed and
//!   discarded). ADTS headers are then written as AAC-LC at the core rate,
//!   i.e. implicit SBR/PS signalling, as ffmpeg does. The underlying object
//!   type must be AAC-LC (2); anything else is rejected.
//!
//! Everything here is pure and I/O free; malformed input yields an
//! [`AacError`] carrying the field and bit offset, never a panic.

use std::fmt;

/// MPEG-4 audio sampling frequencies indexed by `samplingFrequencyIndex`.
pub const SAMPLE_RATES: [u32; 13] =
    [96000, 88200, 64000, 48000, 44100, 32000, 24000, 22050, 16000, 12000, 11025, 8000, 7350];

/// `samplingFrequencyIndex` value announcing an explicit 24-bit frequency.
pub const EXPLICIT_SAMPLE_RATE_INDEX: u8 = 15;

/// Length of an ADTS header without CRC.
pub const ADTS_HEADER_LEN: usize = 7;

/// Largest `aac_frame_length` (header + payload) an ADTS header can carry.
pub const MAX_ADTS_FRAME_LEN: usize = (1 << 13) - 1;

/// Object type: SBR (HE-AAC v1).
const AOT_SBR: u8 = 5;
/// Object type: parametric stereo (HE-AAC v2).
const AOT_PS: u8 = 29;
/// Object type: AAC low complexity.
const AOT_AAC_LC: u8 = 2;

/// Errors produced while parsing an `AudioSpecificConfig` or building ADTS
/// headers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AacError {
    /// The config ended before `field` could be read.
    Truncated {
        /// Syntax element being read.
        field: &'static str,
        /// Bit offset of the element from the start of the config.
        bit_offset: usize,
        /// Total bits available in the input.
        available_bits: usize,
    },
    /// `audioObjectType` 0 ("null object") is not a codec.
    NullObjectType {
        /// Bit offset of the object type field.
        bit_offset: usize,
    },
    /// A reserved `samplingFrequencyIndex` (13 or 14) was found.
    ReservedSampleRateIndex {
        /// Which frequency index field (`samplingFrequencyIndex` or
        /// `extensionSamplingFrequencyIndex`).
        field: &'static str,
        /// The index value.
        index: u8,
        /// Bit offset of the field.
        bit_offset: usize,
    },
    /// An explicit sampling frequency of 0 Hz.
    ZeroSampleRate {
        /// Bit offset of the 24-bit frequency field.
        bit_offset: usize,
    },
    /// HE-AAC (object type 5/29) whose core object type is not AAC-LC.
    UnsupportedCoreObjectType {
        /// The signalled extension object type (5 or 29).
        extension: u8,
        /// The core object type found after the extension.
        core: u8,
        /// Bit offset of the core object type.
        bit_offset: usize,
    },
    /// ADTS can only carry object types 1..=4 (its 2-bit profile field).
    ObjectTypeNotAdts {
        /// The configured object type.
        object_type: u8,
    },
    /// ADTS requires a table sampling-frequency index; this config uses an
    /// explicit frequency that matches none of them.
    ExplicitSampleRate {
        /// The explicit frequency in Hz.
        sample_rate: u32,
    },
    /// ADTS carries channel configurations 1..=7 only (0 needs an in-band
    /// program config element, which this writer does not produce).
    ChannelConfigNotAdts {
        /// The configured channel configuration.
        channel_config: u8,
    },
    /// Payload plus the 7-byte header does not fit the 13-bit
    /// `aac_frame_length`.
    FrameTooLong {
        /// The payload length that was requested.
        payload_len: usize,
        /// The largest payload length allowed.
        max_payload_len: usize,
    },
    /// Bytes that are not a run of whole ADTS frames (see [`split_adts`]).
    BadAdts {
        /// Byte offset of the frame in the input.
        byte_offset: usize,
        /// What is wrong with it.
        why: &'static str,
    },
}

impl fmt::Display for AacError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AacError::Truncated { field, bit_offset, available_bits } => write!(
                f,
                "AudioSpecificConfig truncated reading {field} at bit {bit_offset} ({available_bits} bits available)"
            ),
            AacError::NullObjectType { bit_offset } => {
                write!(f, "audioObjectType 0 (null) at bit {bit_offset}")
            }
            AacError::ReservedSampleRateIndex { field, index, bit_offset } => {
                write!(f, "reserved {field} {index} at bit {bit_offset}")
            }
            AacError::ZeroSampleRate { bit_offset } => {
                write!(f, "explicit sampling frequency of 0 Hz at bit {bit_offset}")
            }
            AacError::UnsupportedCoreObjectType { extension, core, bit_offset } => write!(
                f,
                "object type {extension} with core object type {core} at bit {bit_offset} is unsupported (expected 2)"
            ),
            AacError::ObjectTypeNotAdts { object_type } => write!(
                f,
                "AAC object type {object_type} cannot be carried in ADTS (allowed: 1..=4, 5 and 29 as AAC-LC)"
            ),
            AacError::ExplicitSampleRate { sample_rate } => {
                write!(f, "explicit sample rate {sample_rate} Hz has no ADTS sampling frequency index")
            }
            AacError::ChannelConfigNotAdts { channel_config } => {
                write!(f, "channel configuration {channel_config} cannot be carried in ADTS (allowed: 1..=7)")
            }
            AacError::FrameTooLong { payload_len, max_payload_len } => {
                write!(f, "AAC payload of {payload_len} bytes exceeds the ADTS maximum of {max_payload_len}")
            }
            AacError::BadAdts { byte_offset, why } => write!(f, "ADTS frame at byte {byte_offset}: {why}"),
        }
    }
}

impl std::error::Error for AacError {}

/// The leading fields of an MPEG-4 `AudioSpecificConfig`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AacConfig {
    /// `audioObjectType` (2 = AAC-LC, 5 = HE-AAC, 29 = HE-AACv2, …), with the
    /// escape value 31 already resolved (32 + 6-bit extension).
    pub object_type: u8,
    /// `samplingFrequencyIndex` (0..=12), or 15 when the frequency is explicit
    /// and matches no table entry. For HE-AAC this is the core rate.
    pub sample_rate_index: u8,
    /// Sampling frequency in Hz (the core rate for HE-AAC).
    pub sample_rate: u32,
    /// `channelConfiguration` (0 = defined by a program config element).
    pub channel_config: u8,
}

impl AacConfig {
    /// Parses an `AudioSpecificConfig` (the FLV AAC sequence header payload).
    ///
    /// Only the object type, sampling frequency and channel configuration are
    /// decoded (plus the HE-AAC extension fields that precede the core object
    /// type); the remaining codec-specific config is ignored.
    pub fn parse(asc: &[u8]) -> Result<AacConfig, AacError> {
        let mut r = BitReader::new(asc);
        let ot_offset = r.pos;
        let object_type = read_object_type(&mut r)?;
        if object_type == 0 {
            return Err(AacError::NullObjectType { bit_offset: ot_offset });
        }
        let (sample_rate_index, sample_rate) = read_sample_rate(&mut r, "samplingFrequencyIndex")?;
        let channel_config = r.bits("channelConfiguration", 4)? as u8;

        if object_type == AOT_SBR || object_type == AOT_PS {
            read_sample_rate(&mut r, "extensionSamplingFrequencyIndex")?;
            let core_offset = r.pos;
            let core = read_object_type(&mut r)?;
            if core != AOT_AAC_LC {
                return Err(AacError::UnsupportedCoreObjectType {
                    extension: object_type,
                    core,
                    bit_offset: core_offset,
                });
            }
        }

        Ok(AacConfig { object_type, sample_rate_index, sample_rate, channel_config })
    }

    /// RFC 6381 codec string, `mp4a.40.<object type in decimal>`, e.g.
    /// `mp4a.40.2` for AAC-LC.
    pub fn codec_string(&self) -> String {
        format!("mp4a.40.{}", self.object_type)
    }

    /// One raw AAC frame of silence for this configuration (an AAC-LC core: every channel element with no
    /// spectral data), as a publisher's gap is filled with ([`crate::stream`]'s repeated frames); `None` for an
    /// object type other than AAC-LC (or HE-AAC over it) or a channel configuration defined by a program config
    /// element.
    pub fn silent_frame(&self) -> Option<Vec<u8>> {
        if ![AOT_AAC_LC, AOT_SBR, AOT_PS].contains(&self.object_type) {
            return None;
        }
        // The syntactic elements of each channel configuration (ISO/IEC 14496-3, table 1.19).
        const SCE: u32 = 0;
        const CPE: u32 = 1;
        const LFE: u32 = 3;
        let elements: &[u32] = match self.channel_config {
            1 => &[SCE],
            2 => &[CPE],
            3 => &[SCE, CPE],
            4 => &[SCE, CPE, SCE],
            5 => &[SCE, CPE, CPE],
            6 => &[SCE, CPE, CPE, LFE],
            7 => &[SCE, CPE, CPE, CPE, LFE],
            _ => return None,
        };
        let mut w = BitWriter::default();
        // individual_channel_stream without a common window: a global gain, a long window with max_sfb 0 (no
        // sections, scale factors or spectral data), no pulse, TNS or gain control data.
        let ics = |w: &mut BitWriter| {
            w.put(100, 8); // global_gain
            w.put(0, 1); // ics_reserved_bit
            w.put(0, 2); // window_sequence: ONLY_LONG_SEQUENCE
            w.put(0, 1); // window_shape
            w.put(0, 6); // max_sfb
            w.put(0, 1); // predictor_data_present
            w.put(0, 3); // pulse, tns and gain control data present: no
        };
        let mut tags = [0u32; 4];
        for &id in elements {
            w.put(id, 3);
            let tag = &mut tags[id as usize];
            w.put(*tag, 4);
            *tag += 1;
            if id == CPE {
                w.put(0, 1); // common_window
                ics(&mut w);
            }
            ics(&mut w);
        }
        w.put(7, 3); // ID_END
        Some(w.finish())
    }

    /// PCM samples per AAC frame at [`AacConfig::sample_rate`] (always 1024:
    /// the 960-sample frame length is not used by AAC in RTMP/HLS, and for
    /// HE-AAC the core rate is reported, at which a frame is 1024 samples).
    pub fn samples_per_frame(&self) -> u32 {
        1024
    }

    /// Builds the 7-byte ADTS header (MPEG-4 ID, no CRC) for one raw AAC frame
    /// of `payload_len` bytes.
    ///
    /// The profile field is `object_type - 1`; HE-AAC (5) and HE-AACv2 (29)
    /// are written as AAC-LC at the core rate (implicit signalling).
    ///
    /// # Errors
    ///
    /// [`AacError::ObjectTypeNotAdts`], [`AacError::ExplicitSampleRate`],
    /// [`AacError::ChannelConfigNotAdts`] or [`AacError::FrameTooLong`] when
    /// the frame cannot be expressed in ADTS.
    pub fn adts_header(&self, payload_len: usize) -> Result<[u8; ADTS_HEADER_LEN], AacError> {
        let profile = match self.object_type {
            1..=4 => self.object_type - 1,
            AOT_SBR | AOT_PS => AOT_AAC_LC - 1,
            other => return Err(AacError::ObjectTypeNotAdts { object_type: other }),
        };
        if self.sample_rate_index > 12 {
            return Err(AacError::ExplicitSampleRate { sample_rate: self.sample_rate });
        }
        if !(1..=7).contains(&self.channel_config) {
            return Err(AacError::ChannelConfigNotAdts { channel_config: self.channel_config });
        }
        let max_payload_len = MAX_ADTS_FRAME_LEN - ADTS_HEADER_LEN;
        if payload_len > max_payload_len {
            return Err(AacError::FrameTooLong { payload_len, max_payload_len });
        }
        let frame_len = payload_len + ADTS_HEADER_LEN; // ≤ 0x1FFF
        let sfi = self.sample_rate_index;
        let ch = self.channel_config;
        // All shifted values below are masked to their field widths, so the
        // `as u8` conversions are exact.
        Ok([
            0xFF,
            // syncword low nibble, ID = 0 (MPEG-4), layer = 00, protection_absent = 1
            0xF1,
            (profile << 6) | (sfi << 2) | ((ch >> 2) & 0x01),
            ((ch & 0x03) << 6) | ((frame_len >> 11) & 0x03) as u8,
            ((frame_len >> 3) & 0xFF) as u8,
            // frame length low bits, buffer fullness 0x7FF (VBR) high bits
            (((frame_len & 0x07) as u8) << 5) | 0x1F,
            // buffer fullness low bits, number_of_raw_data_blocks_in_frame = 0
            0xFC,
        ])
    }
}

impl AacConfig {
    /// The two-byte `AudioSpecificConfig` of an ADTS stream's config (object type 1..=4, a table sampling
    /// frequency): what an MP4 `esds` or an FLV sequence header carries.
    pub fn to_audio_specific_config(&self) -> [u8; 2] {
        let (ot, sfi, ch) = (self.object_type & 0x1f, self.sample_rate_index & 0x0f, self.channel_config & 0x0f);
        [(ot << 3) | (sfi >> 1), ((sfi & 1) << 7) | (ch << 3)]
    }
}

/// Splits a run of ADTS frames (MPEG-TS audio, stream_type 0x0F) into each frame's config and raw payload (the
/// header, and its CRC when present, removed). Refused: a bad syncword or layer, a reserved sampling
/// frequency, a frame longer than the input or shorter than its header, and frames of several raw data blocks.
pub fn split_adts(data: &[u8]) -> Result<Vec<(AacConfig, &[u8])>, AacError> {
    let mut out = Vec::new();
    let mut at = 0;
    while at < data.len() {
        let bad = |why| AacError::BadAdts { byte_offset: at, why };
        let h = data.get(at..at + ADTS_HEADER_LEN).ok_or(bad("shorter than an ADTS header"))?;
        if h[0] != 0xff || h[1] & 0xf0 != 0xf0 {
            return Err(bad("no ADTS syncword"));
        }
        if h[1] & 0x06 != 0 {
            return Err(bad("layer is not 0"));
        }
        let header_len = if h[1] & 0x01 == 1 { ADTS_HEADER_LEN } else { ADTS_HEADER_LEN + 2 };
        let object_type = (h[2] >> 6) + 1;
        let sample_rate_index = (h[2] >> 2) & 0x0f;
        let sample_rate =
            *SAMPLE_RATES.get(usize::from(sample_rate_index)).ok_or(bad("reserved sampling frequency"))?;
        let channel_config = ((h[2] & 0x01) << 2) | (h[3] >> 6);
        let frame_len = (usize::from(h[3] & 0x03) << 11) | (usize::from(h[4]) << 3) | usize::from(h[5] >> 5);
        if h[6] & 0x03 != 0 {
            return Err(bad("several raw data blocks in one frame"));
        }
        if frame_len < header_len {
            return Err(bad("frame length shorter than its header"));
        }
        let payload = data.get(at + header_len..at + frame_len).ok_or(bad("frame longer than the data"))?;
        out.push((AacConfig { object_type, sample_rate_index, sample_rate, channel_config }, payload));
        at += frame_len;
    }
    Ok(out)
}

/// Reads `audioObjectType` including the escape (31 → 32 + 6 bits).
fn read_object_type(r: &mut BitReader<'_>) -> Result<u8, AacError> {
    let ot = r.bits("audioObjectType", 5)? as u8;
    if ot == 31 {
        let ext = r.bits("audioObjectTypeExt", 6)? as u8;
        return Ok(32 + ext);
    }
    Ok(ot)
}

/// Reads a 4-bit frequency index and, for index 15, the 24-bit explicit
/// frequency. Explicit frequencies equal to a table entry are normalised to
/// that entry's index.
fn read_sample_rate(r: &mut BitReader<'_>, field: &'static str) -> Result<(u8, u32), AacError> {
    let bit_offset = r.pos;
    let index = r.bits(field, 4)? as u8;
    if index == EXPLICIT_SAMPLE_RATE_INDEX {
        let freq_offset = r.pos;
        let rate = r.bits("samplingFrequency", 24)?;
        if rate == 0 {
            return Err(AacError::ZeroSampleRate { bit_offset: freq_offset });
        }
        let index = SAMPLE_RATES
            .iter()
            .position(|&s| s == rate)
            .and_then(|i| u8::try_from(i).ok())
            .unwrap_or(EXPLICIT_SAMPLE_RATE_INDEX);
        return Ok((index, rate));
    }
    match SAMPLE_RATES.get(usize::from(index)) {
        Some(&rate) => Ok((index, rate)),
        None => Err(AacError::ReservedSampleRateIndex { field, index, bit_offset }),
    }
}

/// MSB-first bit reader.
struct BitReader<'a> {
    data: &'a [u8],
    pos: usize,
}

impl<'a> BitReader<'a> {
    fn new(data: &'a [u8]) -> Self {
        BitReader { data, pos: 0 }
    }

    /// Reads `n` ≤ 32 bits.
    fn bits(&mut self, field: &'static str, n: usize) -> Result<u32, AacError> {
        let available_bits = self.data.len().saturating_mul(8);
        if available_bits.saturating_sub(self.pos) < n {
            return Err(AacError::Truncated { field, bit_offset: self.pos, available_bits });
        }
        let mut v = 0u32;
        for _ in 0..n {
            let byte = self.data.get(self.pos / 8).copied().unwrap_or(0);
            v = (v << 1) | u32::from((byte >> (7 - self.pos % 8)) & 1);
            self.pos += 1;
        }
        Ok(v)
    }
}

/// An MSB-first bit writer (for [`AacConfig::silent_frame`]).
#[derive(Default)]
struct BitWriter {
    out: Vec<u8>,
    bits: u32,
}

impl BitWriter {
    fn put(&mut self, value: u32, n: u32) {
        for i in (0..n).rev() {
            if self.bits % 8 == 0 {
                self.out.push(0);
            }
            if (value >> i) & 1 == 1 {
                if let Some(last) = self.out.last_mut() {
                    *last |= 0x80 >> (self.bits % 8);
                }
            }
            self.bits += 1;
        }
    }

    /// The bytes, the last one padded with zero bits (byte_alignment()).
    fn finish(self) -> Vec<u8> {
        self.out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn silent_frames_for_each_channel_configuration() {
        let cfg = |object_type, channel_config| AacConfig {
            object_type,
            sample_rate_index: 3,
            sample_rate: 48_000,
            channel_config,
        };
        // Checked by decoding 200 of each (in ADTS) with ffmpeg: 1024 samples per channel each, at -91 dB.
        assert_eq!(cfg(2, 1).silent_frame().unwrap(), [0x00, 0xc8, 0x00, 0x07]);
        assert_eq!(cfg(2, 2).silent_frame().unwrap(), [0x20, 0x64, 0x00, 0x01, 0x90, 0x00, 0x0e]);
        assert_eq!(cfg(5, 2).silent_frame(), cfg(2, 2).silent_frame(), "HE-AAC: its AAC-LC core");
        assert_eq!(cfg(2, 6).silent_frame().unwrap().len(), 21);
        assert_eq!(cfg(2, 0).silent_frame(), None, "a program config element");
        assert_eq!(cfg(1, 2).silent_frame(), None, "AAC Main");
    }

    /// Test-side ADTS header parser (independent of the writer).
    #[derive(Debug, PartialEq, Eq)]
    struct Adts {
        id: u8,
        layer: u8,
        protection_absent: u8,
        profile: u8,
        sfi: u8,
        private: u8,
        channels: u8,
        original_copy: u8,
        home: u8,
        frame_len: usize,
        fullness: u16,
        raw_blocks: u8,
    }

    #[test]
    fn adts_frames_split_back_into_configs_and_payloads() {
        let cfg = AacConfig::parse(&[0x11, 0x90]).unwrap(); // AAC-LC, 48 kHz, stereo
        assert_eq!(cfg.to_audio_specific_config(), [0x11, 0x90]);
        let mut run = Vec::new();
        for payload in [&b"abc"[..], &b""[..], &[7u8; 300][..]] {
            run.extend_from_slice(&cfg.adts_header(payload.len()).unwrap());
            run.extend_from_slice(payload);
        }
        let frames = split_adts(&run).unwrap();
        assert_eq!(frames.iter().map(|f| f.1.len()).collect::<Vec<_>>(), [3, 0, 300]);
        assert!(frames.iter().all(|f| f.0 == cfg));
        // With a CRC (protection_absent 0): two more header bytes.
        let mut crc = cfg.adts_header(2).unwrap().to_vec();
        crc[1] &= 0xfe;
        crc[5] = (crc[5] & 0x1f) | (((9 + 2) & 7) << 5) as u8;
        crc[4] = ((9 + 2) >> 3) as u8;
        crc.extend_from_slice(&[0xee, 0xee, b'h', b'i']);
        assert_eq!(split_adts(&crc).unwrap()[0].1, b"hi");
        // Hostile input: errors with the frame's offset, never a panic.
        let at = run.len();
        run.extend_from_slice(&[0xff, 0xf1, 0x50]);
        assert_eq!(split_adts(&run), Err(AacError::BadAdts { byte_offset: at, why: "shorter than an ADTS header" }));
        assert!(split_adts(b"not adts at all").is_err());
        let mut long = cfg.adts_header(100).unwrap().to_vec();
        long.extend_from_slice(&[0; 10]);
        assert!(matches!(split_adts(&long), Err(AacError::BadAdts { why: "frame longer than the data", .. })));
        let mut short = cfg.adts_header(0).unwrap();
        short[4] = 0;
        short[5] &= 0x1f;
        assert!(matches!(split_adts(&short), Err(AacError::BadAdts { byte_offset: 0, .. })));
    }

    fn parse_adts(h: &[u8; 7]) -> Adts {
        let bits = h.iter().fold(0u64, |acc, &b| (acc << 8) | u64::from(b));
        let get = |start: u32, len: u32| (bits >> (56 - start - len)) & ((1 << len) - 1);
        assert_eq!(get(0, 12), 0xFFF, "syncword");
        Adts {
            id: get(12, 1) as u8,
            layer: get(13, 2) as u8,
            protection_absent: get(15, 1) as u8,
            profile: get(16, 2) as u8,
            sfi: get(18, 4) as u8,
            private: get(22, 1) as u8,
            channels: get(23, 3) as u8,
            original_copy: get(26, 1) as u8,
            home: get(27, 1) as u8,
            frame_len: get(30, 13) as usize,
            fullness: get(43, 11) as u16,
            raw_blocks: get(54, 2) as u8,
        }
    }

    #[test]
    fn parses_lc_44100_stereo() {
        // What ffmpeg/OBS send for AAC-LC 44.1 kHz stereo.
        let cfg = AacConfig::parse(&[0x12, 0x10]).expect("valid");
        assert_eq!(cfg, AacConfig { object_type: 2, sample_rate_index: 4, sample_rate: 44100, channel_config: 2 });
        assert_eq!(cfg.codec_string(), "mp4a.40.2");
        assert_eq!(cfg.samples_per_frame(), 1024);
        // 48 kHz mono, with trailing GASpecificConfig bits / padding ignored.
        let cfg = AacConfig::parse(&[0x11, 0x88, 0x56, 0xE5, 0x00]).expect("valid");
        assert_eq!((cfg.object_type, cfg.sample_rate, cfg.channel_config), (2, 48000, 1));
    }

    #[test]
    fn parses_escape_object_type() {
        // 11111 000010 (=34) 0011 (48k) 0010
        let bits = "11111000010001100100000";
        let cfg = AacConfig::parse(&pack(bits)).expect("valid");
        assert_eq!(cfg.object_type, 34);
        assert_eq!(cfg.sample_rate, 48000);
        assert_eq!(cfg.channel_config, 2);
        assert_eq!(cfg.codec_string(), "mp4a.40.34");
        assert_eq!(cfg.adts_header(10), Err(AacError::ObjectTypeNotAdts { object_type: 34 }));
    }

    #[test]
    fn explicit_frequency_handling() {
        // AAC-LC, index 15, 44100 Hz explicit → normalised to index 4.
        let bits = format!("00010{}{:024b}0010", "1111", 44100);
        let cfg = AacConfig::parse(&pack(&bits)).expect("valid");
        assert_eq!((cfg.sample_rate_index, cfg.sample_rate), (4, 44100));
        assert!(cfg.adts_header(100).is_ok());

        // 37800 Hz has no index: parse keeps 15, ADTS refuses.
        let bits = format!("00010{}{:024b}0010", "1111", 37800);
        let cfg = AacConfig::parse(&pack(&bits)).expect("valid");
        assert_eq!((cfg.sample_rate_index, cfg.sample_rate), (15, 37800));
        assert_eq!(cfg.adts_header(100), Err(AacError::ExplicitSampleRate { sample_rate: 37800 }));

        let bits = format!("00010{}{:024b}0010", "1111", 0);
        assert_eq!(AacConfig::parse(&pack(&bits)), Err(AacError::ZeroSampleRate { bit_offset: 9 }));
    }

    #[test]
    fn he_aac_explicit_signalling() {
        // HE-AAC: AOT 5, core 24 kHz (6), stereo, ext 48 kHz (3), core AOT 2.
        let bits = "00101011000100011000100";
        let cfg = AacConfig::parse(&pack(bits)).expect("valid");
        assert_eq!(cfg, AacConfig { object_type: 5, sample_rate_index: 6, sample_rate: 24000, channel_config: 2 });
        assert_eq!(cfg.codec_string(), "mp4a.40.5");
        let h = parse_adts(&cfg.adts_header(200).expect("adts"));
        assert_eq!((h.profile, h.sfi, h.channels), (1, 6, 2));

        // HE-AACv2: AOT 29, mono core.
        let bits = "11101011000010011000100";
        let cfg = AacConfig::parse(&pack(bits)).expect("valid");
        assert_eq!((cfg.object_type, cfg.channel_config), (29, 1));
        assert_eq!(cfg.codec_string(), "mp4a.40.29");

        // Core object type other than AAC-LC.
        let bits = "001010110001000110001100";
        assert_eq!(
            AacConfig::parse(&pack(bits)),
            Err(AacError::UnsupportedCoreObjectType { extension: 5, core: 3, bit_offset: 17 })
        );
        // Truncated before the core object type.
        assert_eq!(
            AacConfig::parse(&pack("0010101100010001")),
            Err(AacError::Truncated { field: "extensionSamplingFrequencyIndex", bit_offset: 13, available_bits: 16 })
        );
    }

    #[test]
    fn parse_errors() {
        assert_eq!(
            AacConfig::parse(&[]),
            Err(AacError::Truncated { field: "audioObjectType", bit_offset: 0, available_bits: 0 })
        );
        assert_eq!(
            AacConfig::parse(&[0x12]),
            Err(AacError::Truncated { field: "samplingFrequencyIndex", bit_offset: 5, available_bits: 8 })
        );
        assert_eq!(AacConfig::parse(&[0x00, 0x10]), Err(AacError::NullObjectType { bit_offset: 0 }));
        // index 13 is reserved
        assert_eq!(
            AacConfig::parse(&pack("0001011010010")),
            Err(AacError::ReservedSampleRateIndex { field: "samplingFrequencyIndex", index: 13, bit_offset: 5 })
        );
        let msg = AacConfig::parse(&[0x12]).expect_err("short").to_string();
        assert!(msg.contains("samplingFrequencyIndex") && msg.contains("bit 5"), "{msg}");
    }

    #[test]
    fn adts_round_trip_all_fields() {
        for object_type in 1..=4u8 {
            for sfi in 0..=12u8 {
                for channel_config in 1..=7u8 {
                    let cfg = AacConfig {
                        object_type,
                        sample_rate_index: sfi,
                        sample_rate: SAMPLE_RATES[usize::from(sfi)],
                        channel_config,
                    };
                    for payload_len in [0usize, 1, 255, 256, 2041, 4096, 8184] {
                        let h = cfg.adts_header(payload_len).expect("adts");
                        assert_eq!(
                            parse_adts(&h),
                            Adts {
                                id: 0,
                                layer: 0,
                                protection_absent: 1,
                                profile: object_type - 1,
                                sfi,
                                private: 0,
                                channels: channel_config,
                                original_copy: 0,
                                home: 0,
                                frame_len: payload_len + 7,
                                fullness: 0x7FF,
                                raw_blocks: 0,
                            }
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn adts_known_bytes() {
        // ffmpeg writes FF F1 50 80 xx xx FC for LC 44.1 kHz stereo.
        let cfg = AacConfig::parse(&[0x12, 0x10]).expect("valid");
        let h = cfg.adts_header(371 - 7).expect("adts");
        assert_eq!(h, [0xFF, 0xF1, 0x50, 0x80, 0x2E, 0x7F, 0xFC]);
    }

    #[test]
    fn adts_errors() {
        let cfg = AacConfig::parse(&[0x12, 0x10]).expect("valid");
        assert_eq!(cfg.adts_header(8185), Err(AacError::FrameTooLong { payload_len: 8185, max_payload_len: 8184 }));
        assert!(cfg.adts_header(usize::MAX).is_err());
        let pce = AacConfig { channel_config: 0, ..cfg };
        assert_eq!(pce.adts_header(10), Err(AacError::ChannelConfigNotAdts { channel_config: 0 }));
        let wide = AacConfig { channel_config: 8, ..cfg };
        assert!(wide.adts_header(10).is_err());
        let er = AacConfig { object_type: 23, ..cfg };
        let err = er.adts_header(10).expect_err("not adts");
        assert_eq!(err, AacError::ObjectTypeNotAdts { object_type: 23 });
        assert!(err.to_string().contains("23"));
    }

    /// Packs a string of '0'/'1' into bytes, zero padded.
    fn pack(bits: &str) -> Vec<u8> {
        let mut out = vec![0u8; bits.len().div_ceil(8)];
        for (i, c) in bits.chars().enumerate() {
            if c == '1' {
                out[i / 8] |= 0x80 >> (i % 8);
            }
        }
        out
    }

    #[test]
    fn garbage_never_panics() {
        let mut x: u64 = 0x2545_F491_4F6C_DD1D;
        let mut next = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        for _ in 0..5000 {
            let len = (next() % 8) as usize;
            let input: Vec<u8> = (0..len).map(|_| next() as u8).collect();
            if let Ok(cfg) = AacConfig::parse(&input) {
                assert!(cfg.sample_rate > 0);
                assert!(cfg.object_type > 0);
                let _ = cfg.codec_string();
                if let Ok(h) = cfg.adts_header((next() % 9000) as usize) {
                    assert_eq!(parse_adts(&h).sfi, cfg.sample_rate_index);
                }
            }
        }
        // Every truncation of a valid HE-AAC config fails cleanly.
        let full = pack("00101011000100011000100");
        for len in 0..full.len() {
            assert!(AacConfig::parse(&full[..len]).is_err());
        }
    }
}
