//! H.264 / AVC helpers for the ingest → HLS path.
//!
//! * [`AvcConfig::parse`] decodes an `AVCDecoderConfigurationRecord`
//!   (ISO/IEC 14496-15 §5.3.3.1) — the payload of an FLV "AVC sequence header"
//!   after its 5-byte FLV video tag header — and derives the coded picture size
//!   from the first sequence parameter set (ITU-T H.264 §7.3.2.1.1).
//! * [`avcc_to_annexb`] rewrites a length-prefixed ("AVCC") sample into an
//!   Annex B byte stream with 4-byte start codes, summarising the NAL unit
//!   types it saw.
//! * [`write_annexb_parameter_sets`] and [`AUD_NAL`] provide the in-band
//!   parameter sets and access unit delimiter an HLS segmenter places in front
//!   of access units.
//!
//! Everything here is pure and I/O free. All input is treated as untrusted:
//! malformed data produces an [`AvcError`] naming the field and byte (or bit)
//! offset at fault, never a panic.

use std::fmt;

use bytes::Bytes;

/// Annex B start code written in front of every NAL unit by this module.
pub const START_CODE: [u8; 4] = [0, 0, 0, 1];

/// An Annex B access unit delimiter NAL unit (`nal_unit_type` 9) with its start
/// code; `primary_pic_type` 7 ("any slice type"), followed by the RBSP stop bit.
pub const AUD_NAL: [u8; 6] = [0, 0, 0, 1, 0x09, 0xF0];

/// `nal_unit_type` of a coded slice of an IDR picture.
pub const NAL_TYPE_IDR: u8 = 5;
/// `nal_unit_type` of a sequence parameter set.
pub const NAL_TYPE_SPS: u8 = 7;
/// `nal_unit_type` of a picture parameter set.
pub const NAL_TYPE_PPS: u8 = 8;
/// `nal_unit_type` of an access unit delimiter.
pub const NAL_TYPE_AUD: u8 = 9;

/// Profiles whose SPS carries `chroma_format_idc`, bit depths and scaling
/// matrices (H.264 §7.3.2.1.1).
const HIGH_PROFILES: [u8; 13] = [100, 110, 122, 244, 44, 83, 86, 118, 128, 138, 139, 134, 135];

/// Errors produced while parsing H.264 configuration data or samples.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AvcError {
    /// The input ended before `field` could be read; `offset` is the byte
    /// offset of `field` in the input and `needed` the number of bytes it
    /// requires.
    Truncated {
        /// Name of the field that could not be read.
        field: &'static str,
        /// Byte offset of the field in the input.
        offset: usize,
        /// Bytes required for the field.
        needed: usize,
        /// Bytes actually available from `offset`.
        available: usize,
    },
    /// `configurationVersion` of the decoder configuration record is not 1.
    UnsupportedVersion {
        /// The version byte found at offset 0.
        version: u8,
    },
    /// The record lists no sequence parameter set, so no picture size can be
    /// derived.
    MissingSps,
    /// A parameter set entry in the record has length zero.
    EmptyParameterSet {
        /// `"sps"` or `"pps"`.
        kind: &'static str,
        /// Byte offset of the entry's 16-bit length field.
        offset: usize,
    },
    /// The first SPS entry is not a NAL unit of type 7.
    NotAnSps {
        /// The `nal_unit_type` that was found.
        nal_unit_type: u8,
        /// Byte offset of the NAL header in the record.
        offset: usize,
    },
    /// The SPS ended before `field` could be decoded. `bit_offset` counts bits
    /// from the start of the SPS RBSP (the NAL unit with its one-byte header,
    /// after emulation-prevention bytes are removed).
    SpsTruncated {
        /// SPS syntax element being read.
        field: &'static str,
        /// Bit offset of the element in the SPS RBSP.
        bit_offset: usize,
    },
    /// An SPS syntax element holds a value outside its legal range or one that
    /// produces an impossible picture size.
    SpsInvalid {
        /// SPS syntax element at fault.
        field: &'static str,
        /// Bit offset of the element in the SPS RBSP.
        bit_offset: usize,
        /// The decoded value.
        value: i64,
    },
    /// `nal_length_size` is not in `1..=4`.
    InvalidNalLengthSize {
        /// The rejected size.
        size: u8,
    },
    /// A NAL unit length prefix points past the end of the sample.
    NalOverrun {
        /// Byte offset of the length prefix in the sample.
        offset: usize,
        /// Length announced by the prefix.
        length: usize,
        /// Bytes remaining after the prefix.
        remaining: usize,
    },
}

impl fmt::Display for AvcError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AvcError::Truncated { field, offset, needed, available } => {
                write!(f, "truncated AVC data: {field} at byte {offset} needs {needed} bytes, {available} available")
            }
            AvcError::UnsupportedVersion { version } => {
                write!(f, "unsupported AVCDecoderConfigurationRecord version {version} at byte 0 (expected 1)")
            }
            AvcError::MissingSps => {
                write!(f, "AVCDecoderConfigurationRecord contains no SPS")
            }
            AvcError::EmptyParameterSet { kind, offset } => {
                write!(f, "empty {kind} entry at byte {offset}")
            }
            AvcError::NotAnSps { nal_unit_type, offset } => {
                write!(f, "first SPS entry at byte {offset} has nal_unit_type {nal_unit_type} (expected 7)")
            }
            AvcError::SpsTruncated { field, bit_offset } => {
                write!(f, "SPS truncated while reading {field} at bit {bit_offset}")
            }
            AvcError::SpsInvalid { field, bit_offset, value } => {
                write!(f, "SPS field {field} at bit {bit_offset} has invalid value {value}")
            }
            AvcError::InvalidNalLengthSize { size } => {
                write!(f, "invalid NAL length size {size} (expected 1..=4)")
            }
            AvcError::NalOverrun { offset, length, remaining } => {
                write!(f, "NAL unit length {length} at byte {offset} exceeds the {remaining} bytes remaining")
            }
        }
    }
}

impl std::error::Error for AvcError {}

/// Decoded `AVCDecoderConfigurationRecord` plus the picture size from its
/// first SPS.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AvcConfig {
    /// `AVCProfileIndication` (e.g. 66 baseline, 77 main, 100 high).
    pub profile_idc: u8,
    /// `profile_compatibility` (the SPS constraint_set flags byte).
    pub profile_compat: u8,
    /// `AVCLevelIndication` (e.g. 31 for level 3.1).
    pub level_idc: u8,
    /// Size in bytes of the NAL unit length prefix in samples (1, 2 or 4;
    /// 3 is accepted although ISO/IEC 14496-15 does not allow it).
    pub nal_length_size: u8,
    /// Sequence parameter set NAL units (with NAL header, without start code).
    pub sps: Vec<Bytes>,
    /// Picture parameter set NAL units (with NAL header, without start code).
    pub pps: Vec<Bytes>,
    /// Displayed picture width in pixels (after frame cropping).
    pub width: u32,
    /// Displayed picture height in pixels (after frame cropping).
    pub height: u32,
}

impl AvcConfig {
    /// Parses an `AVCDecoderConfigurationRecord`.
    ///
    /// `record` starts at `configurationVersion`, i.e. it is the FLV AVC
    /// sequence header with the 5-byte FLV video header already stripped.
    /// Trailing bytes after the PPS list (the optional high-profile extension
    /// fields) are ignored. Only the first SPS is decoded (for width/height)
    /// and must be a NAL unit of type 7; other entries are stored verbatim.
    pub fn parse(record: &[u8]) -> Result<AvcConfig, AvcError> {
        let mut r = ByteReader::new(record);
        let version = r.u8("configurationVersion")?;
        if version != 1 {
            return Err(AvcError::UnsupportedVersion { version });
        }
        let profile_idc = r.u8("AVCProfileIndication")?;
        let profile_compat = r.u8("profile_compatibility")?;
        let level_idc = r.u8("AVCLevelIndication")?;
        let nal_length_size = (r.u8("lengthSizeMinusOne")? & 0x03) + 1;
        let num_sps = usize::from(r.u8("numOfSequenceParameterSets")? & 0x1F);

        let mut sps = Vec::with_capacity(num_sps);
        let mut first_sps_offset = 0;
        for _ in 0..num_sps {
            let (offset, nal) = r.parameter_set("sps", "sequenceParameterSetLength")?;
            if sps.is_empty() {
                first_sps_offset = offset;
            }
            sps.push(Bytes::copy_from_slice(nal));
        }

        let num_pps = usize::from(r.u8("numOfPictureParameterSets")?);
        let mut pps = Vec::with_capacity(num_pps);
        for _ in 0..num_pps {
            let (_, nal) = r.parameter_set("pps", "pictureParameterSetLength")?;
            pps.push(Bytes::copy_from_slice(nal));
        }

        let first = sps.first().ok_or(AvcError::MissingSps)?;
        let nal_unit_type = first.first().map_or(0, |b| b & 0x1F);
        if nal_unit_type != NAL_TYPE_SPS {
            return Err(AvcError::NotAnSps { nal_unit_type, offset: first_sps_offset });
        }
        let (width, height) = parse_sps_dimensions(first)?;

        Ok(AvcConfig { profile_idc, profile_compat, level_idc, nal_length_size, sps, pps, width, height })
    }

    /// RFC 6381 codec string, e.g. `avc1.64001f`: profile, compatibility and
    /// level as two lowercase hex digits each.
    pub fn codec_string(&self) -> String {
        format!("avc1.{:02x}{:02x}{:02x}", self.profile_idc, self.profile_compat, self.level_idc)
    }
}

/// Splits an Annex B byte stream (`00 00 01` / `00 00 00 01` start codes) into NAL units (without start codes;
/// trailing zero bytes of a unit are dropped). Bytes before the first start code are ignored.
pub fn annexb_nal_units(data: &[u8]) -> Vec<&[u8]> {
    let mut starts = Vec::new();
    let mut i = 0;
    while i + 3 <= data.len() {
        if data[i] == 0 && data[i + 1] == 0 && data[i + 2] == 1 {
            starts.push(i + 3);
            i += 3;
        } else {
            i += 1;
        }
    }
    let mut out = Vec::with_capacity(starts.len());
    for (n, &start) in starts.iter().enumerate() {
        let end = starts.get(n + 1).map_or(data.len(), |&next| next - 3);
        let mut unit = &data[start..end];
        while let Some((0, rest)) = unit.split_last() {
            unit = rest;
        }
        if !unit.is_empty() {
            out.push(unit);
        }
    }
    out
}

/// Converts Annex B NAL units to AVCC samples with 4-byte lengths, dropping access unit delimiters and parameter
/// sets (they travel in the decoder configuration record). Appends to `out`; returns whether an IDR slice was seen.
pub fn annexb_to_avcc(data: &[u8], out: &mut Vec<u8>) -> bool {
    let mut idr = false;
    for nal in annexb_nal_units(data) {
        match nal[0] & 0x1f {
            NAL_TYPE_AUD | NAL_TYPE_SPS | NAL_TYPE_PPS => continue,
            NAL_TYPE_IDR => idr = true,
            _ => {}
        }
        out.extend_from_slice(&(nal.len() as u32).to_be_bytes());
        out.extend_from_slice(nal);
    }
    idr
}

/// Builds an `AVCDecoderConfigurationRecord` (4-byte NAL lengths) from the SPS and PPS found in Annex B
/// parameter sets (e.g. an encoder's global header). `None` without an SPS (of at least 4 bytes) or a PPS.
pub fn decoder_config_record(annexb: &[u8]) -> Option<Vec<u8>> {
    let nals = annexb_nal_units(annexb);
    let sps = nals.iter().find(|n| n[0] & 0x1f == NAL_TYPE_SPS && n.len() >= 4)?;
    let pps = nals.iter().find(|n| n[0] & 0x1f == NAL_TYPE_PPS)?;
    let mut rec = vec![1, sps[1], sps[2], sps[3], 0xff, 0xe1];
    rec.extend_from_slice(&u16::try_from(sps.len()).ok()?.to_be_bytes());
    rec.extend_from_slice(sps);
    rec.push(1);
    rec.extend_from_slice(&u16::try_from(pps.len()).ok()?.to_be_bytes());
    rec.extend_from_slice(pps);
    Some(rec)
}

/// What [`avcc_to_annexb`] found in a sample.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct NalSummary {
    /// At least one IDR slice (`nal_unit_type` 5) was present.
    pub has_idr: bool,
    /// At least one SPS (`nal_unit_type` 7) was present.
    pub has_sps: bool,
    /// At least one PPS (`nal_unit_type` 8) was present.
    pub has_pps: bool,
    /// At least one access unit delimiter (`nal_unit_type` 9) was present.
    pub has_aud: bool,
    /// Number of (non-empty) NAL units converted.
    pub nal_count: usize,
}

/// Converts a length-prefixed (AVCC) sample to Annex B, appending to `out`.
///
/// Each NAL unit is written as `00 00 00 01` followed by the unit. Zero-length
/// NAL units are skipped (they are not counted in
/// [`NalSummary::nal_count`]). On error `out` is restored to its length on
/// entry, so a failed sample never leaves partial data behind.
///
/// # Errors
///
/// * [`AvcError::InvalidNalLengthSize`] if `nal_length_size` is not `1..=4`;
/// * [`AvcError::Truncated`] if fewer than `nal_length_size` bytes remain
///   for a length prefix;
/// * [`AvcError::NalOverrun`] if a length prefix runs past the end of `data`.
pub fn avcc_to_annexb(data: &[u8], nal_length_size: u8, out: &mut Vec<u8>) -> Result<NalSummary, AvcError> {
    if !(1..=4).contains(&nal_length_size) {
        return Err(AvcError::InvalidNalLengthSize { size: nal_length_size });
    }
    let start_len = out.len();
    // Exact for 4-byte prefixes (the common case); shorter prefixes grow.
    out.reserve(data.len());
    match convert_avcc(data, usize::from(nal_length_size), out) {
        Ok(summary) => Ok(summary),
        Err(e) => {
            out.truncate(start_len);
            Err(e)
        }
    }
}

fn convert_avcc(data: &[u8], nls: usize, out: &mut Vec<u8>) -> Result<NalSummary, AvcError> {
    let mut summary = NalSummary::default();
    let mut pos = 0usize;
    while pos < data.len() {
        let rest = data.get(pos..).unwrap_or_default();
        let prefix = rest.get(..nls).ok_or(AvcError::Truncated {
            field: "NAL length prefix",
            offset: pos,
            needed: nls,
            available: rest.len(),
        })?;
        let length = prefix.iter().fold(0usize, |acc, &b| (acc << 8) | usize::from(b));
        let body = rest.get(nls..).unwrap_or_default();
        let nal = body.get(..length).ok_or(AvcError::NalOverrun { offset: pos, length, remaining: body.len() })?;
        pos += nls + length;
        let Some(&header) = nal.first() else {
            continue;
        };
        match header & 0x1F {
            NAL_TYPE_IDR => summary.has_idr = true,
            NAL_TYPE_SPS => summary.has_sps = true,
            NAL_TYPE_PPS => summary.has_pps = true,
            NAL_TYPE_AUD => summary.has_aud = true,
            _ => {}
        }
        summary.nal_count += 1;
        out.extend_from_slice(&START_CODE);
        out.extend_from_slice(nal);
    }
    Ok(summary)
}

/// Appends every SPS and then every PPS of `cfg`, each preceded by a 4-byte
/// start code, to `out`. HLS segmenters place this before each IDR picture.
pub fn write_annexb_parameter_sets(cfg: &AvcConfig, out: &mut Vec<u8>) {
    let total: usize = cfg.sps.iter().chain(cfg.pps.iter()).map(|n| n.len() + START_CODE.len()).sum();
    out.reserve(total);
    for nal in cfg.sps.iter().chain(cfg.pps.iter()) {
        out.extend_from_slice(&START_CODE);
        out.extend_from_slice(nal);
    }
}

/// Byte cursor over the configuration record.
struct ByteReader<'a> {
    data: &'a [u8],
    pos: usize,
}

impl<'a> ByteReader<'a> {
    fn new(data: &'a [u8]) -> Self {
        ByteReader { data, pos: 0 }
    }

    fn take(&mut self, field: &'static str, n: usize) -> Result<&'a [u8], AvcError> {
        let rest = self.data.get(self.pos..).unwrap_or_default();
        let bytes =
            rest.get(..n).ok_or(AvcError::Truncated { field, offset: self.pos, needed: n, available: rest.len() })?;
        self.pos += n;
        Ok(bytes)
    }

    fn u8(&mut self, field: &'static str) -> Result<u8, AvcError> {
        let b = self.take(field, 1)?;
        Ok(b.first().copied().unwrap_or_default())
    }

    fn u16(&mut self, field: &'static str) -> Result<u16, AvcError> {
        let b = self.take(field, 2)?;
        match b {
            [hi, lo] => Ok(u16::from_be_bytes([*hi, *lo])),
            _ => Ok(0),
        }
    }

    /// Reads a 16-bit length followed by that many bytes; returns the offset
    /// of the NAL unit and the unit.
    fn parameter_set(&mut self, kind: &'static str, length_field: &'static str) -> Result<(usize, &'a [u8]), AvcError> {
        let length_offset = self.pos;
        let len = usize::from(self.u16(length_field)?);
        if len == 0 {
            return Err(AvcError::EmptyParameterSet { kind, offset: length_offset });
        }
        let offset = self.pos;
        let nal =
            self.take(if kind == "sps" { "sequenceParameterSetNALUnit" } else { "pictureParameterSetNALUnit" }, len)?;
        Ok((offset, nal))
    }
}

/// Removes emulation-prevention bytes (`00 00 03` → `00 00`) from a NAL unit.
fn nal_to_rbsp(nal: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(nal.len());
    let mut zeros = 0usize;
    for &b in nal {
        if zeros >= 2 && b == 0x03 {
            zeros = 0;
            continue;
        }
        if b == 0 {
            zeros += 1;
        } else {
            zeros = 0;
        }
        out.push(b);
    }
    out
}

/// MSB-first bit reader with Exp-Golomb support over an RBSP.
struct BitReader<'a> {
    data: &'a [u8],
    bit: usize,
}

impl<'a> BitReader<'a> {
    fn new(data: &'a [u8]) -> Self {
        BitReader { data, bit: 0 }
    }

    fn bit(&mut self, field: &'static str) -> Result<u32, AvcError> {
        let byte = self.data.get(self.bit / 8).ok_or(AvcError::SpsTruncated { field, bit_offset: self.bit })?;
        let v = (byte >> (7 - (self.bit % 8))) & 1;
        self.bit += 1;
        Ok(u32::from(v))
    }

    fn flag(&mut self, field: &'static str) -> Result<bool, AvcError> {
        Ok(self.bit(field)? == 1)
    }

    /// Reads `n` (≤ 32) bits.
    fn bits(&mut self, field: &'static str, n: u32) -> Result<u32, AvcError> {
        let start = self.bit;
        let mut v: u64 = 0;
        for _ in 0..n {
            v = (v << 1) | u64::from(self.bit(field).map_err(|_| AvcError::SpsTruncated { field, bit_offset: start })?);
        }
        Ok(u32::try_from(v).unwrap_or(u32::MAX))
    }

    /// Unsigned Exp-Golomb `ue(v)`; codes longer than 32 bits are rejected.
    fn ue(&mut self, field: &'static str) -> Result<u32, AvcError> {
        let start = self.bit;
        let truncated = AvcError::SpsTruncated { field, bit_offset: start };
        let mut leading = 0u32;
        loop {
            match self.bit(field) {
                Ok(0) => leading += 1,
                Ok(_) => break,
                Err(_) => return Err(truncated),
            }
            if leading > 31 {
                return Err(AvcError::SpsInvalid { field, bit_offset: start, value: i64::from(leading) });
            }
        }
        let suffix = self.bits(field, leading).map_err(|_| truncated)?;
        let value = (1u64 << leading) - 1 + u64::from(suffix);
        u32::try_from(value).map_err(|_| AvcError::SpsInvalid {
            field,
            bit_offset: start,
            value: i64::try_from(value).unwrap_or(i64::MAX),
        })
    }

    /// Signed Exp-Golomb `se(v)`.
    fn se(&mut self, field: &'static str) -> Result<i64, AvcError> {
        let k = i64::from(self.ue(field)?);
        Ok(if k % 2 == 1 { (k + 1) / 2 } else { -(k / 2) })
    }

    /// `ue(v)` that must not exceed `max`.
    fn ue_max(&mut self, field: &'static str, max: u32) -> Result<u32, AvcError> {
        let bit_offset = self.bit;
        let v = self.ue(field)?;
        if v > max {
            return Err(AvcError::SpsInvalid { field, bit_offset, value: i64::from(v) });
        }
        Ok(v)
    }
}

/// Skips a `scaling_list()` of `size` coefficients (H.264 §7.3.2.1.1.1).
fn skip_scaling_list(r: &mut BitReader<'_>, size: usize) -> Result<(), AvcError> {
    let mut last_scale: i64 = 8;
    let mut next_scale: i64 = 8;
    for _ in 0..size {
        if next_scale != 0 {
            let bit_offset = r.bit;
            let delta = r.se("delta_scale")?;
            if !(-128..=127).contains(&delta) {
                return Err(AvcError::SpsInvalid { field: "delta_scale", bit_offset, value: delta });
            }
            next_scale = (last_scale + delta + 256).rem_euclid(256);
        }
        if next_scale != 0 {
            last_scale = next_scale;
        }
    }
    Ok(())
}

/// Decodes the displayed (cropped) picture size from an SPS NAL unit
/// (including its one-byte NAL header, possibly with emulation prevention).
fn parse_sps_dimensions(nal: &[u8]) -> Result<(u32, u32), AvcError> {
    let rbsp = nal_to_rbsp(nal);
    let mut r = BitReader::new(&rbsp);
    r.bits("nal_unit_header", 8)?;
    let profile_idc = r.bits("profile_idc", 8)?;
    r.bits("constraint_set_flags", 8)?;
    r.bits("level_idc", 8)?;
    r.ue_max("seq_parameter_set_id", 31)?;

    let mut chroma_format_idc = 1u32;
    let mut separate_colour_plane = false;
    if HIGH_PROFILES.iter().any(|&p| u32::from(p) == profile_idc) {
        chroma_format_idc = r.ue_max("chroma_format_idc", 3)?;
        if chroma_format_idc == 3 {
            separate_colour_plane = r.flag("separate_colour_plane_flag")?;
        }
        r.ue_max("bit_depth_luma_minus8", 6)?;
        r.ue_max("bit_depth_chroma_minus8", 6)?;
        r.flag("qpprime_y_zero_transform_bypass_flag")?;
        if r.flag("seq_scaling_matrix_present_flag")? {
            let lists = if chroma_format_idc == 3 { 12 } else { 8 };
            for i in 0..lists {
                if r.flag("seq_scaling_list_present_flag")? {
                    skip_scaling_list(&mut r, if i < 6 { 16 } else { 64 })?;
                }
            }
        }
    }

    r.ue_max("log2_max_frame_num_minus4", 12)?;
    match r.ue_max("pic_order_cnt_type", 2)? {
        0 => {
            r.ue_max("log2_max_pic_order_cnt_lsb_minus4", 12)?;
        }
        1 => {
            r.flag("delta_pic_order_always_zero_flag")?;
            r.se("offset_for_non_ref_pic")?;
            r.se("offset_for_top_to_bottom_field")?;
            let n = r.ue_max("num_ref_frames_in_pic_order_cnt_cycle", 255)?;
            for _ in 0..n {
                r.se("offset_for_ref_frame")?;
            }
        }
        _ => {}
    }
    r.ue("max_num_ref_frames")?;
    r.flag("gaps_in_frame_num_value_allowed_flag")?;
    let width_offset = r.bit;
    let width_mbs = u64::from(r.ue("pic_width_in_mbs_minus1")?) + 1;
    let height_offset = r.bit;
    let height_map_units = u64::from(r.ue("pic_height_in_map_units_minus1")?) + 1;
    let frame_mbs_only = r.flag("frame_mbs_only_flag")?;
    if !frame_mbs_only {
        r.flag("mb_adaptive_frame_field_flag")?;
    }
    r.flag("direct_8x8_inference_flag")?;

    let field_factor: u64 = if frame_mbs_only { 1 } else { 2 };
    let chroma_array_type = if separate_colour_plane { 0 } else { chroma_format_idc };
    let (sub_width_c, sub_height_c): (u64, u64) = match chroma_array_type {
        1 => (2, 2),
        2 => (2, 1),
        _ => (1, 1), // 4:4:4, or monochrome / separate planes (ChromaArrayType 0)
    };
    let crop_unit_x = sub_width_c;
    let crop_unit_y = sub_height_c * field_factor;

    let (mut crop_x, mut crop_y) = (0u64, 0u64);
    let mut crop_offset = r.bit;
    if r.flag("frame_cropping_flag")? {
        crop_offset = r.bit;
        let left = u64::from(r.ue("frame_crop_left_offset")?);
        let right = u64::from(r.ue("frame_crop_right_offset")?);
        let top = u64::from(r.ue("frame_crop_top_offset")?);
        let bottom = u64::from(r.ue("frame_crop_bottom_offset")?);
        crop_x = (left + right) * crop_unit_x;
        crop_y = (top + bottom) * crop_unit_y;
    }

    let coded_width = width_mbs * 16;
    let coded_height = height_map_units * 16 * field_factor;
    let width = dimension(coded_width, crop_x, "pic_width_in_mbs_minus1", width_offset)?;
    let height = dimension(coded_height, crop_y, "pic_height_in_map_units_minus1", height_offset)?;
    if width == 0 || height == 0 {
        return Err(AvcError::SpsInvalid {
            field: "frame_crop_offsets",
            bit_offset: crop_offset,
            value: i64::try_from(crop_x.max(crop_y)).unwrap_or(i64::MAX),
        });
    }
    Ok((width, height))
}

/// `coded - crop` as a `u32`, rejecting sizes beyond 32 bits and crops that
/// remove the whole picture.
fn dimension(coded: u64, crop: u64, field: &'static str, bit_offset: usize) -> Result<u32, AvcError> {
    let coded32 = u32::try_from(coded).map_err(|_| AvcError::SpsInvalid {
        field,
        bit_offset,
        value: i64::try_from(coded).unwrap_or(i64::MAX),
    })?;
    let crop32 = u32::try_from(crop).unwrap_or(u32::MAX);
    Ok(coded32.saturating_sub(crop32))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(s: &str) -> Vec<u8> {
        let s: Vec<u8> = s.bytes().filter(|b| !b.is_ascii_whitespace()).collect();
        s.chunks(2).map(|c| u8::from_str_radix(std::str::from_utf8(c).expect("ascii"), 16).expect("hex")).collect()
    }

    /// Builds an AVCDecoderConfigurationRecord the way FLV/MP4 muxers do.
    fn record(sps: &[&[u8]], pps: &[&[u8]], nal_length_size: u8) -> Vec<u8> {
        let first = sps.first().copied().unwrap_or_default();
        let at = |i: usize| first.get(i).copied().unwrap_or(0);
        let mut v = vec![1, at(1), at(2), at(3), 0xFC | (nal_length_size - 1), 0xE0 | sps.len() as u8];
        for s in sps {
            v.extend_from_slice(&(s.len() as u16).to_be_bytes());
            v.extend_from_slice(s);
        }
        v.push(pps.len() as u8);
        for p in pps {
            v.extend_from_slice(&(p.len() as u16).to_be_bytes());
            v.extend_from_slice(p);
        }
        v
    }

    // Real parameter sets produced by x264 via
    // `ffmpeg -f lavfi -i testsrc2=size=WxH -frames:v 1 -c:v libx264 [opts] -f h264`.
    const HIGH_720_SPS: &str = "6764001facd9405005bb011000000300100000030320f1831960";
    const HIGH_720_PPS: &str = "68ebe3cb22c0";
    const BASE_360_SPS: &str = "6742c01ed900a02ff97011000003000100000300320f162e48";
    const BASE_360_PPS: &str = "68cb83cb20";
    const HIGH_1080_SPS: &str = "67640028acd940780227e5c044000003000400000300c83c60c658";
    const HIGH_854_SPS: &str = "6764001eacd940d83de6f011000003000100000300320f162d96";
    /// 1920x1080 interlaced (`-flags +ildct+ilme -x264-params tff=1`).
    const INTERLACED_1080_SPS: &str = "67640028acd94078044fde0220000003002000000643e2c5b2c0";
    /// High 4:4:4 Predictive (244), yuv444p 1280x720.
    const HIGH444_720_SPS: &str = "67f4001f919b280a00b76022000003000200000300641e30632c";
    /// High 4:2:2 (122), yuv422p 854x480 (crop unit x = 2, y = 1).
    const HIGH422_854_SPS: &str = "677a001ebcd940d83de6f011000003000100000300320f162d96";
    /// High 4:4:4 (244), yuv444p 322x242 (crop unit 1x1, odd crop).
    const HIGH444_322_SPS: &str = "67f4000d919b282a10f1f1f808800000030080000019078a14cb";

    #[test]
    fn annexb_to_avcc_and_config_record() {
        let sps = hex(HIGH_720_SPS);
        let pps = hex(HIGH_720_PPS);
        let mut global = vec![0, 0, 0, 1];
        global.extend_from_slice(&sps);
        global.extend_from_slice(&[0, 0, 1]);
        global.extend_from_slice(&pps);
        let rec = decoder_config_record(&global).expect("record");
        let cfg = AvcConfig::parse(&rec).expect("parses");
        assert_eq!((cfg.width, cfg.height, cfg.nal_length_size), (1280, 720, 4));
        assert_eq!(cfg.codec_string(), "avc1.64001f");
        assert!(decoder_config_record(&[0, 0, 1, 0x68, 1]).is_none(), "no SPS");

        // AUD + SPS + PPS + IDR + trailing zeros: only the IDR remains, length-prefixed.
        let mut au = vec![0, 0, 0, 1, 0x09, 0xf0, 0, 0, 1];
        au.extend_from_slice(&sps);
        au.extend_from_slice(&[0, 0, 1]);
        au.extend_from_slice(&pps);
        au.extend_from_slice(&[0, 0, 0, 1, 0x65, 0x88, 0x84, 0, 0]);
        let mut out = Vec::new();
        assert!(annexb_to_avcc(&au, &mut out));
        assert_eq!(out, vec![0, 0, 0, 3, 0x65, 0x88, 0x84]);
        let mut out = Vec::new();
        assert!(!annexb_to_avcc(&[0, 0, 1, 0x41, 0x9a, 0, 0, 1, 0x41, 0x9b], &mut out));
        assert_eq!(out, vec![0, 0, 0, 2, 0x41, 0x9a, 0, 0, 0, 2, 0x41, 0x9b]);
        assert!(annexb_nal_units(&[1, 2, 3]).is_empty());
    }

    fn parse_sps_hex(sps: &str) -> AvcConfig {
        let sps = hex(sps);
        let rec = record(&[&sps], &[&hex(HIGH_720_PPS)], 4);
        AvcConfig::parse(&rec).expect("valid record")
    }

    #[test]
    fn parses_x264_high_720p() {
        let sps = hex(HIGH_720_SPS);
        let pps = hex(HIGH_720_PPS);
        let rec = record(&[&sps], &[&pps], 4);
        let cfg = AvcConfig::parse(&rec).expect("valid record");
        assert_eq!(cfg.profile_idc, 100);
        assert_eq!(cfg.profile_compat, 0);
        assert_eq!(cfg.level_idc, 31);
        assert_eq!(cfg.nal_length_size, 4);
        assert_eq!((cfg.width, cfg.height), (1280, 720));
        assert_eq!(cfg.sps, vec![Bytes::from(sps)]);
        assert_eq!(cfg.pps, vec![Bytes::from(pps)]);
        assert_eq!(cfg.codec_string(), "avc1.64001f");
    }

    #[test]
    fn parses_x264_baseline_360p() {
        let rec = record(&[&hex(BASE_360_SPS)], &[&hex(BASE_360_PPS)], 4);
        let cfg = AvcConfig::parse(&rec).expect("valid record");
        assert_eq!(cfg.profile_idc, 66);
        assert_eq!((cfg.width, cfg.height), (640, 360));
        assert_eq!(cfg.codec_string(), "avc1.42c01e");
    }

    #[test]
    fn parses_cropped_and_odd_sizes() {
        let cases = [
            (HIGH_1080_SPS, 1920, 1080),
            (HIGH_854_SPS, 854, 480),
            (INTERLACED_1080_SPS, 1920, 1080),
            (HIGH444_720_SPS, 1280, 720),
            (HIGH422_854_SPS, 854, 480),
            (HIGH444_322_SPS, 322, 242),
        ];
        for (sps, w, h) in cases {
            let cfg = parse_sps_hex(sps);
            assert_eq!((cfg.width, cfg.height), (w, h), "sps {sps}");
        }
        assert_eq!(parse_sps_hex(HIGH444_720_SPS).codec_string(), "avc1.f4001f");
        assert_eq!(parse_sps_hex(HIGH422_854_SPS).codec_string(), "avc1.7a001e");
    }

    #[test]
    fn keeps_all_parameter_sets_and_nal_length_size() {
        let sps1 = hex(HIGH_720_SPS);
        let sps2 = hex(HIGH_1080_SPS);
        let pps1 = hex(HIGH_720_PPS);
        let pps2 = hex(BASE_360_PPS);
        let rec = record(&[&sps1, &sps2], &[&pps1, &pps2], 2);
        let cfg = AvcConfig::parse(&rec).expect("valid");
        assert_eq!(cfg.nal_length_size, 2);
        assert_eq!(cfg.sps.len(), 2);
        assert_eq!(cfg.pps.len(), 2);
        // Size comes from the first SPS.
        assert_eq!((cfg.width, cfg.height), (1280, 720));

        let mut out = Vec::new();
        write_annexb_parameter_sets(&cfg, &mut out);
        let mut expected = Vec::new();
        for nal in [&sps1, &sps2, &pps1, &pps2] {
            expected.extend_from_slice(&START_CODE);
            expected.extend_from_slice(nal);
        }
        assert_eq!(out, expected);
    }

    #[test]
    fn trailing_high_profile_extension_is_ignored() {
        let mut rec = record(&[&hex(HIGH_720_SPS)], &[&hex(HIGH_720_PPS)], 4);
        rec.extend_from_slice(&[0xFD, 0xF8, 0xF8, 0x00]);
        let cfg = AvcConfig::parse(&rec).expect("valid");
        assert_eq!((cfg.width, cfg.height), (1280, 720));
    }

    #[test]
    fn record_errors_carry_context() {
        let mut rec = record(&[&hex(HIGH_720_SPS)], &[&hex(HIGH_720_PPS)], 4);
        rec[0] = 2;
        assert_eq!(AvcConfig::parse(&rec), Err(AvcError::UnsupportedVersion { version: 2 }));

        let rec = record(&[], &[&hex(HIGH_720_PPS)], 4);
        assert_eq!(AvcConfig::parse(&rec), Err(AvcError::MissingSps));

        let rec = record(&[&hex(HIGH_720_PPS)], &[], 4);
        assert_eq!(AvcConfig::parse(&rec), Err(AvcError::NotAnSps { nal_unit_type: 8, offset: 8 }));

        let rec = record(&[&[]], &[], 4);
        assert_eq!(AvcConfig::parse(&rec), Err(AvcError::EmptyParameterSet { kind: "sps", offset: 6 }));

        let rec = record(&[&hex(HIGH_720_SPS)], &[&hex(HIGH_720_PPS)], 4);
        let cut = &rec[..rec.len() - 2];
        match AvcConfig::parse(cut) {
            Err(AvcError::Truncated { field: "pictureParameterSetNALUnit", needed: 6, available: 4, .. }) => {}
            other => panic!("unexpected {other:?}"),
        }
        assert_eq!(
            AvcConfig::parse(&[]),
            Err(AvcError::Truncated { field: "configurationVersion", offset: 0, needed: 1, available: 0 })
        );
        // Display strings mention the field.
        let msg = AvcConfig::parse(cut).expect_err("truncated").to_string();
        assert!(msg.contains("pictureParameterSetNALUnit"), "{msg}");
    }

    #[test]
    fn truncated_sps_reports_field() {
        let sps = hex(HIGH_720_SPS);
        let rec = record(&[&sps[..6]], &[], 4);
        match AvcConfig::parse(&rec) {
            Err(AvcError::SpsTruncated { .. }) => {}
            other => panic!("unexpected {other:?}"),
        }
        let err = AvcConfig::parse(&record(&[&sps[..4]], &[], 4)).expect_err("short");
        assert_eq!(err, AvcError::SpsTruncated { field: "seq_parameter_set_id", bit_offset: 32 });
    }

    #[test]
    fn every_truncation_of_a_valid_record_fails_cleanly() {
        let rec = record(&[&hex(HIGH_720_SPS)], &[&hex(HIGH_720_PPS)], 4);
        for len in 0..rec.len() {
            assert!(AvcConfig::parse(&rec[..len]).is_err(), "len {len}");
        }
        assert!(AvcConfig::parse(&rec).is_ok());
    }

    struct XorShift(u64);
    impl XorShift {
        fn next(&mut self) -> u64 {
            let mut x = self.0;
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            self.0 = x;
            x
        }
        fn bytes(&mut self, max_len: usize) -> Vec<u8> {
            let len = (self.next() % (max_len as u64 + 1)) as usize;
            (0..len).map(|_| self.next() as u8).collect()
        }
    }

    #[test]
    fn random_inputs_never_panic() {
        let mut rng = XorShift(0x9E37_79B9_7F4A_7C15);
        let valid = record(&[&hex(HIGH_1080_SPS)], &[&hex(HIGH_720_PPS)], 4);
        for i in 0..4000 {
            // Pure garbage, garbage behind a plausible header, and bit-flipped
            // valid records.
            let input = match i % 3 {
                0 => rng.bytes(64),
                1 => {
                    let mut v = vec![1, 100, 0, 31, 0xFF, 0xE1, 0x00, 0x20, 0x67];
                    v.extend(rng.bytes(40));
                    v
                }
                _ => {
                    let mut v = valid.clone();
                    let idx = (rng.next() as usize) % v.len();
                    v[idx] ^= 1 << (rng.next() % 8);
                    v
                }
            };
            if let Ok(cfg) = AvcConfig::parse(&input) {
                assert!(cfg.width > 0 && cfg.height > 0);
            }
            let mut out = Vec::new();
            for nls in 0..=5 {
                if avcc_to_annexb(&input, nls, &mut out).is_err() {
                    assert!(out.is_empty());
                }
                out.clear();
            }
        }
    }

    #[test]
    fn avcc_to_annexb_converts_and_summarises() {
        let sps = hex(HIGH_720_SPS);
        let pps = hex(HIGH_720_PPS);
        let idr = [0x65, 0x88, 0x84, 0x00, 0x33];
        let aud = [0x09, 0xF0];
        for nls in 1..=4u8 {
            let mut sample = Vec::new();
            for nal in [&aud[..], &sps, &pps, &idr] {
                let len = (nal.len() as u32).to_be_bytes();
                sample.extend_from_slice(&len[4 - nls as usize..]);
                sample.extend_from_slice(nal);
            }
            let mut out = vec![0xAA]; // existing content must be kept
            let s = avcc_to_annexb(&sample, nls, &mut out).expect("valid");
            assert_eq!(s, NalSummary { has_idr: true, has_sps: true, has_pps: true, has_aud: true, nal_count: 4 });
            let mut expected = vec![0xAA];
            for nal in [&aud[..], &sps, &pps, &idr] {
                expected.extend_from_slice(&START_CODE);
                expected.extend_from_slice(nal);
            }
            assert_eq!(out, expected, "nls {nls}");
        }
    }

    #[test]
    fn avcc_to_annexb_non_idr_and_empty_nals() {
        let sample = [0, 0, 0, 0, 0, 0, 0, 3, 0x41, 0x9A, 0x02];
        let mut out = Vec::new();
        let s = avcc_to_annexb(&sample, 4, &mut out).expect("valid");
        assert_eq!(s, NalSummary { nal_count: 1, ..NalSummary::default() });
        assert_eq!(out, [0, 0, 0, 1, 0x41, 0x9A, 0x02]);

        let s = avcc_to_annexb(&[], 4, &mut out).expect("empty sample");
        assert_eq!(s.nal_count, 0);
    }

    #[test]
    fn avcc_to_annexb_errors() {
        let mut out = vec![1, 2, 3];
        assert_eq!(avcc_to_annexb(&[0, 0, 0, 1, 0x65], 0, &mut out), Err(AvcError::InvalidNalLengthSize { size: 0 }));
        assert_eq!(avcc_to_annexb(&[0, 0, 0, 1, 0x65], 5, &mut out), Err(AvcError::InvalidNalLengthSize { size: 5 }));
        // Second NAL overruns: the first one must not be left in `out`.
        let sample = [0, 0, 0, 1, 0x65, 0, 0, 0, 9, 0x41, 0x00];
        assert_eq!(
            avcc_to_annexb(&sample, 4, &mut out),
            Err(AvcError::NalOverrun { offset: 5, length: 9, remaining: 2 })
        );
        assert_eq!(out, [1, 2, 3]);
        // Dangling partial length prefix.
        assert_eq!(
            avcc_to_annexb(&[0, 1, 0x65, 0], 2, &mut out),
            Err(AvcError::Truncated { field: "NAL length prefix", offset: 3, needed: 2, available: 1 })
        );
        assert_eq!(out, [1, 2, 3]);
        let msg = avcc_to_annexb(&sample, 4, &mut out).expect_err("overrun").to_string();
        assert!(msg.contains("byte 5"), "{msg}");
    }

    #[test]
    fn emulation_prevention_is_removed() {
        assert_eq!(nal_to_rbsp(&[0, 0, 3, 1, 0, 0, 3]), [0, 0, 1, 0, 0]);
        assert_eq!(nal_to_rbsp(&[0, 0, 3, 0, 0, 3, 0]), [0, 0, 0, 0, 0]);
        assert_eq!(nal_to_rbsp(&[0, 3, 0, 0, 0, 3]), [0, 3, 0, 0, 0]);
    }

    /// Minimal Exp-Golomb writer to build synthetic SPS NAL units.
    #[derive(Default)]
    struct BitWriter {
        bytes: Vec<u8>,
        bits: usize,
    }

    impl BitWriter {
        fn bit(&mut self, b: bool) {
            if self.bits & 7 == 0 {
                self.bytes.push(0);
            }
            if b {
                let last = self.bytes.last_mut().expect("pushed");
                *last |= 0x80 >> (self.bits % 8);
            }
            self.bits += 1;
        }
        fn bits(&mut self, v: u64, n: u32) {
            for i in (0..n).rev() {
                self.bit((v >> i) & 1 == 1);
            }
        }
        fn ue(&mut self, v: u64) {
            let x = v + 1;
            let n = 64 - x.leading_zeros();
            self.bits(0, n - 1);
            self.bits(x, n);
        }
        fn se(&mut self, v: i64) {
            self.ue(if v > 0 { (2 * v - 1) as u64 } else { (-2 * v) as u64 });
        }
        /// RBSP trailing bits, then emulation prevention.
        fn finish(mut self) -> Vec<u8> {
            self.bit(true);
            while self.bits & 7 != 0 {
                self.bit(false);
            }
            let mut out = Vec::new();
            let mut zeros = 0;
            for b in self.bytes {
                if zeros >= 2 && b <= 3 {
                    out.push(3);
                    zeros = 0;
                }
                zeros = if b == 0 { zeros + 1 } else { 0 };
                out.push(b);
            }
            out
        }
    }

    struct SynthSps {
        profile_idc: u8,
        chroma_format_idc: u64,
        separate_colour_plane: bool,
        scaling_lists: bool,
        poc_type: u64,
        width_mbs: u64,
        height_map_units: u64,
        frame_mbs_only: bool,
        crop: Option<[u64; 4]>,
    }

    fn synth_sps(s: &SynthSps) -> Vec<u8> {
        let mut w = BitWriter::default();
        w.bits(0x67, 8);
        w.bits(u64::from(s.profile_idc), 8);
        w.bits(0, 8);
        w.bits(40, 8);
        w.ue(0);
        if HIGH_PROFILES.contains(&s.profile_idc) {
            w.ue(s.chroma_format_idc);
            if s.chroma_format_idc == 3 {
                w.bit(s.separate_colour_plane);
            }
            w.ue(2); // bit_depth_luma_minus8
            w.ue(2); // bit_depth_chroma_minus8
            w.bit(false);
            w.bit(s.scaling_lists);
            if s.scaling_lists {
                let lists = if s.chroma_format_idc == 3 { 12 } else { 8 };
                for i in 0..lists {
                    let present = i % 3 != 1;
                    w.bit(present);
                    if present {
                        let size = if i < 6 { 16 } else { 64 };
                        if i == 0 {
                            // "use default" marker: first delta makes nextScale 0.
                            w.se(-8);
                        } else {
                            // Wild deltas exercising the modulo arithmetic,
                            // never hitting nextScale == 0 early.
                            let mut last = 8i64;
                            for j in 0..size {
                                let target = 1 + ((j * 37 + i * 11) % 250) as i64;
                                let mut delta = target - last;
                                if delta > 127 {
                                    delta -= 256;
                                } else if delta < -128 {
                                    delta += 256;
                                }
                                w.se(delta);
                                last = target;
                            }
                        }
                    }
                }
            }
        }
        w.ue(4); // log2_max_frame_num_minus4
        w.ue(s.poc_type);
        match s.poc_type {
            0 => w.ue(5),
            1 => {
                w.bit(false);
                w.se(-3);
                w.se(7);
                w.ue(3);
                w.se(1);
                w.se(-200);
                w.se(12345);
            }
            _ => {}
        }
        w.ue(4); // max_num_ref_frames
        w.bit(false);
        w.ue(s.width_mbs - 1);
        w.ue(s.height_map_units - 1);
        w.bit(s.frame_mbs_only);
        if !s.frame_mbs_only {
            w.bit(true);
        }
        w.bit(true); // direct_8x8_inference_flag
        match s.crop {
            Some(c) => {
                w.bit(true);
                for v in c {
                    w.ue(v);
                }
            }
            None => w.bit(false),
        }
        w.bit(false); // vui_parameters_present_flag
        w.finish()
    }

    fn synth_dims(s: &SynthSps) -> Result<(u32, u32), AvcError> {
        let sps = synth_sps(s);
        AvcConfig::parse(&record(&[&sps], &[], 4)).map(|c| (c.width, c.height))
    }

    fn base() -> SynthSps {
        SynthSps {
            profile_idc: 100,
            chroma_format_idc: 1,
            separate_colour_plane: false,
            scaling_lists: false,
            poc_type: 0,
            width_mbs: 120,
            height_map_units: 68,
            frame_mbs_only: true,
            crop: Some([0, 0, 0, 4]),
        }
    }

    #[test]
    fn synthetic_sps_variants() {
        // The synthetic writer agrees with the x264 SPS layout.
        assert_eq!(synth_dims(&base()), Ok((1920, 1080)));
        // Scaling matrices (4:2:0 → 8 lists) are skipped correctly.
        let s = SynthSps { scaling_lists: true, ..base() };
        assert_eq!(synth_dims(&s), Ok((1920, 1080)));
        // 4:4:4 → 12 lists, crop unit 1.
        let s = SynthSps {
            profile_idc: 244,
            chroma_format_idc: 3,
            scaling_lists: true,
            crop: Some([1, 2, 3, 5]),
            ..base()
        };
        assert_eq!(synth_dims(&s), Ok((1917, 1080)));
        // separate_colour_plane → ChromaArrayType 0: unit x 1, y 1 (frames).
        let s = SynthSps {
            profile_idc: 244,
            chroma_format_idc: 3,
            separate_colour_plane: true,
            crop: Some([0, 1, 0, 8]),
            ..base()
        };
        assert_eq!(synth_dims(&s), Ok((1919, 1080)));
        // Monochrome (chroma_format_idc 0): unit x 1, y 2 for fields.
        let s = SynthSps {
            chroma_format_idc: 0,
            frame_mbs_only: false,
            height_map_units: 34,
            crop: Some([0, 3, 0, 4]),
            ..base()
        };
        assert_eq!(synth_dims(&s), Ok((1917, 1080)));
        // 4:2:2 field coding: unit x 2, y 2.
        let s = SynthSps {
            profile_idc: 122,
            chroma_format_idc: 2,
            frame_mbs_only: false,
            height_map_units: 34,
            crop: Some([1, 1, 0, 4]),
            ..base()
        };
        assert_eq!(synth_dims(&s), Ok((1916, 1080)));
        // pic_order_cnt_type 1 and 2, main profile (no chroma fields).
        for poc_type in [1, 2] {
            let s = SynthSps { profile_idc: 77, poc_type, crop: None, ..base() };
            assert_eq!(synth_dims(&s), Ok((1920, 1088)), "poc {poc_type}");
        }
    }

    #[test]
    fn synthetic_sps_rejects_bad_values() {
        // Crop removes the whole picture.
        let s = SynthSps { crop: Some([0, 0, 0, 544]), ..base() };
        assert!(matches!(synth_dims(&s), Err(AvcError::SpsInvalid { field: "frame_crop_offsets", .. })));
        // chroma_format_idc out of range.
        let s = SynthSps { chroma_format_idc: 4, ..base() };
        assert!(matches!(synth_dims(&s), Err(AvcError::SpsInvalid { field: "chroma_format_idc", value: 4, .. })));
        // pic_order_cnt_type out of range.
        let s = SynthSps { poc_type: 3, ..base() };
        assert!(matches!(synth_dims(&s), Err(AvcError::SpsInvalid { field: "pic_order_cnt_type", .. })));
        // An absurd width that does not fit 32 bits after * 16.
        let s = SynthSps { width_mbs: 1 << 30, crop: None, ..base() };
        assert!(matches!(synth_dims(&s), Err(AvcError::SpsInvalid { field: "pic_width_in_mbs_minus1", .. })));
        // Exp-Golomb code with too many leading zeros.
        let mut sps = vec![0x67, 66, 0, 30];
        sps.extend_from_slice(&[0, 0, 0, 0, 0x01, 0xFF]);
        assert!(matches!(
            AvcConfig::parse(&record(&[&sps], &[], 4)),
            Err(AvcError::SpsInvalid { field: "seq_parameter_set_id", bit_offset: 32, .. })
        ));
    }

    #[test]
    fn constants() {
        assert_eq!(AUD_NAL, [0, 0, 0, 1, 0x09, 0xF0]);
        assert_eq!(AUD_NAL[4] & 0x1F, NAL_TYPE_AUD);
    }
}
