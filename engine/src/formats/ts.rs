//! MPEG-2 transport stream muxer for HLS segments (ISO/IEC 13818-1).
//!
//! [`TsMuxer`] produces a single-program transport stream with at most one
//! H.264 and one AAC (ADTS) elementary stream:
//!
//! | PID      | content                                   |
//! |----------|-------------------------------------------|
//! | `0x0000` | PAT (program 1 → PMT PID)                 |
//! | `0x1000` | PMT                                       |
//! | `0x0100` | H.264 video, stream_type `0x1B`           |
//! | `0x0101` | AAC audio in ADTS, stream_type `0x0F`     |
//!
//! The PCR travels on the video PID when there is video, otherwise on the
//! audio PID, in the adaptation field of the first TS packet of every PES
//! packet on that PID. **PCR = DTS** (the PCR base is the access unit's DTS,
//! extension 0, no offset): HLS clients schedule playback from PTS and do not
//! model the T-STD buffer, and using no offset avoids a PCR that wraps below
//! zero at stream start. A caller that needs decoder buffer headroom can shift
//! all PTS/DTS it passes forward by a constant (nginx-rtmp uses 63 000 ticks).
//!
//! The muxer is I/O free: every `write_*` method appends whole 188-byte
//! packets to a caller-supplied `Vec<u8>` without intermediate allocations.
//! Continuity counters live in the muxer and continue from one segment to the
//! next; call [`TsMuxer::write_tables`] at the start of each segment.
//!
//! The muxer does not inspect the elementary streams: video must already be
//! Annex B (with AUD / parameter sets as the caller wants them), audio must be
//! one or more complete ADTS frames.

/// Size of one transport stream packet.
pub const TS_PACKET_SIZE: usize = 188;
/// PID of the program association table.
pub const PID_PAT: u16 = 0x0000;
/// PID of the program map table.
pub const PID_PMT: u16 = 0x1000;
/// PID of the H.264 elementary stream.
pub const PID_VIDEO: u16 = 0x0100;
/// PID of the AAC elementary stream.
pub const PID_AUDIO: u16 = 0x0101;
/// PID used as PCR_PID when the program has no elementary stream at all.
pub const PID_NULL: u16 = 0x1FFF;
/// PMT stream_type for H.264 video.
pub const STREAM_TYPE_H264: u8 = 0x1B;
/// PMT stream_type for AAC audio with ADTS transport syntax.
pub const STREAM_TYPE_AAC_ADTS: u8 = 0x0F;
/// PES stream_id used for the video stream.
pub const STREAM_ID_VIDEO: u8 = 0xE0;
/// PES stream_id used for the audio stream.
pub const STREAM_ID_AUDIO: u8 = 0xC0;
/// Mask applied to every PTS/DTS/PCR: timestamps are 33-bit, 90 kHz.
pub const TIMESTAMP_MASK: u64 = (1 << 33) - 1;

/// program_number used in PAT and PMT.
const PROGRAM_NUMBER: u16 = 1;
/// transport_stream_id written in the PAT.
const TRANSPORT_STREAM_ID: u16 = 1;
/// Payload bytes available in a TS packet after the 4-byte header.
const TS_PAYLOAD_SIZE: usize = TS_PACKET_SIZE - 4;
/// Largest PES header this muxer writes (PTS and DTS present).
const MAX_PES_HEADER: usize = 19;

/// Slots in [`TsMuxer::cc`].
const CC_PAT: usize = 0;
const CC_PMT: usize = 1;
const CC_VIDEO: usize = 2;
const CC_AUDIO: usize = 3;

/// Stateful MPEG-TS muxer for one HLS rendition.
///
/// Holds only the continuity counters and the stream layout, so it is cheap
/// to create and to keep for the lifetime of a stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TsMuxer {
    has_video: bool,
    has_audio: bool,
    /// Next continuity_counter per PID: PAT, PMT, video, audio.
    cc: [u8; 4],
}

impl TsMuxer {
    /// Creates a muxer announcing an H.264 stream (`has_video`) and/or an AAC
    /// stream (`has_audio`) in its PMT. All continuity counters start at 0.
    ///
    /// With neither stream the PMT is empty and its PCR_PID is `0x1FFF`.
    pub fn new(has_video: bool, has_audio: bool) -> TsMuxer {
        TsMuxer { has_video, has_audio, cc: [0; 4] }
    }

    /// Whether the PMT announces the video stream.
    pub fn has_video(&self) -> bool {
        self.has_video
    }

    /// Whether the PMT announces the audio stream.
    pub fn has_audio(&self) -> bool {
        self.has_audio
    }

    /// The PID carrying the PCR: video if present, else audio, else `0x1FFF`.
    pub fn pcr_pid(&self) -> u16 {
        if self.has_video {
            PID_VIDEO
        } else if self.has_audio {
            PID_AUDIO
        } else {
            PID_NULL
        }
    }

    /// Appends one PAT packet and one PMT packet (version 0, CRC-32/MPEG-2).
    /// Call at the start of every segment.
    pub fn write_tables(&mut self, out: &mut Vec<u8>) {
        out.reserve(2 * TS_PACKET_SIZE);

        // PAT: one program.
        let mut pat = [0u8; 16];
        let pmt_pid = PID_PMT.to_be_bytes();
        let body = [(PROGRAM_NUMBER >> 8) as u8, PROGRAM_NUMBER as u8, 0xE0 | (pmt_pid[0] & 0x1F), pmt_pid[1]];
        let pat_len = build_section(0x00, TRANSPORT_STREAM_ID, &[&body], &mut pat);
        self.write_psi(PID_PAT, CC_PAT, pat.get(..pat_len).unwrap_or_default(), out);

        // PMT: PCR PID, no program descriptors, up to two streams.
        let pcr = self.pcr_pid().to_be_bytes();
        let head = [0xE0 | (pcr[0] & 0x1F), pcr[1], 0xF0, 0x00];
        let video = es_entry(STREAM_TYPE_H264, PID_VIDEO);
        let audio = es_entry(STREAM_TYPE_AAC_ADTS, PID_AUDIO);
        let streams: [&[u8]; 3] =
            [&head, if self.has_video { &video } else { &[] }, if self.has_audio { &audio } else { &[] }];
        let mut pmt = [0u8; 32];
        let pmt_len = build_section(0x02, PROGRAM_NUMBER, &streams, &mut pmt);
        self.write_psi(PID_PMT, CC_PMT, pmt.get(..pmt_len).unwrap_or_default(), out);
    }

    /// Appends one PES packet (stream_id `0xE0`, PES_packet_length 0) holding
    /// the Annex B access unit `annexb`.
    ///
    /// `pts`/`dts` are 90 kHz and masked to 33 bits; only the PTS is written
    /// when both are equal after masking. If video is the PCR stream the first
    /// TS packet carries PCR = DTS; keyframes set random_access_indicator.
    /// Data is written even if the muxer was created without video (players
    /// ignore the unannounced PID).
    pub fn write_video(&mut self, pts: u64, dts: u64, keyframe: bool, annexb: &[u8], out: &mut Vec<u8>) {
        let pts = pts & TIMESTAMP_MASK;
        let dts = dts & TIMESTAMP_MASK;
        let mut header = [0u8; MAX_PES_HEADER];
        let header_len = pes_header(STREAM_ID_VIDEO, pts, (dts != pts).then_some(dts), 0, &mut header);
        let pcr = (self.pcr_pid() == PID_VIDEO).then_some(dts);
        self.write_pes(PID_VIDEO, CC_VIDEO, header.get(..header_len).unwrap_or_default(), annexb, pcr, keyframe, out);
    }

    /// Appends one PES packet (stream_id `0xC0`) holding one or more complete
    /// ADTS frames.
    ///
    /// `pts` is 90 kHz, masked to 33 bits. PES_packet_length is set when it
    /// fits 16 bits, else 0. random_access_indicator is set (every PES starts
    /// on an ADTS frame). If the muxer has no video, the first TS packet also
    /// carries PCR = PTS.
    pub fn write_audio(&mut self, pts: u64, adts: &[u8], out: &mut Vec<u8>) {
        let pts = pts & TIMESTAMP_MASK;
        // Bytes following PES_packet_length: flags (3) + PTS (5) + payload.
        let pes_len = u16::try_from(8 + adts.len()).unwrap_or(0);
        let mut header = [0u8; MAX_PES_HEADER];
        let header_len = pes_header(STREAM_ID_AUDIO, pts, None, pes_len, &mut header);
        let pcr = (self.pcr_pid() == PID_AUDIO).then_some(pts);
        self.write_pes(PID_AUDIO, CC_AUDIO, header.get(..header_len).unwrap_or_default(), adts, pcr, true, out);
    }

    /// Returns the continuity counter for `slot` and advances it.
    fn next_cc(&mut self, slot: usize) -> u8 {
        match self.cc.get_mut(slot) {
            Some(cc) => {
                let v = *cc;
                *cc = (v + 1) & 0x0F;
                v
            }
            None => 0,
        }
    }

    /// Writes a PSI section as a single TS packet (pointer_field 0, stuffed
    /// with 0xFF).
    fn write_psi(&mut self, pid: u16, slot: usize, section: &[u8], out: &mut Vec<u8>) {
        let start = out.len();
        let cc = self.next_cc(slot);
        push_ts_header(out, pid, true, false, cc);
        out.push(0); // pointer_field
        out.extend_from_slice(section);
        out.resize(start + TS_PACKET_SIZE, 0xFF);
    }

    /// Splits `header ++ payload` into TS packets on `pid`. The first packet
    /// has payload_unit_start_indicator and, if requested, a PCR and/or
    /// random_access_indicator in its adaptation field. The last packet is
    /// padded with adaptation field stuffing.
    #[allow(clippy::too_many_arguments)]
    fn write_pes(
        &mut self,
        pid: u16,
        slot: usize,
        header: &[u8],
        payload: &[u8],
        pcr: Option<u64>,
        random_access: bool,
        out: &mut Vec<u8>,
    ) {
        let total = header.len() + payload.len();
        out.reserve((total / TS_PAYLOAD_SIZE + 2) * TS_PACKET_SIZE);
        let mut written = 0usize;
        let mut first = true;
        while first || written < total {
            let packet_start = out.len();
            let pcr = if first { pcr } else { None };
            let rai = first && random_access;
            // Adaptation field bytes that must be present (length + flags [+ PCR]).
            let af_min = match (pcr.is_some(), rai) {
                (true, _) => 8,
                (false, true) => 2,
                (false, false) => 0,
            };
            let space = TS_PAYLOAD_SIZE - af_min;
            let take = space.min(total - written);
            let af_total = if take < space { TS_PAYLOAD_SIZE - take } else { af_min };

            let cc = self.next_cc(slot);
            push_ts_header(out, pid, first, af_total > 0, cc);
            if af_total > 0 {
                // af_total ≤ 184, so the length byte fits.
                out.push((af_total - 1) as u8);
                if af_total > 1 {
                    let mut flags = 0u8;
                    if rai {
                        flags |= 0x40;
                    }
                    if pcr.is_some() {
                        flags |= 0x10;
                    }
                    out.push(flags);
                    if let Some(pcr) = pcr {
                        out.extend_from_slice(&encode_pcr(pcr & TIMESTAMP_MASK));
                    }
                    let stuffing_end = packet_start + 4 + af_total;
                    out.resize(stuffing_end, 0xFF);
                }
            }
            copy_span(header, payload, written, take, out);
            written += take;
            first = false;
        }
    }
}

/// Appends `len` bytes starting at `offset` of the concatenation
/// `header ++ payload`.
fn copy_span(header: &[u8], payload: &[u8], offset: usize, len: usize, out: &mut Vec<u8>) {
    let end = offset + len;
    if offset < header.len() {
        out.extend_from_slice(header.get(offset..end.min(header.len())).unwrap_or_default());
    }
    let p_start = offset.saturating_sub(header.len());
    let p_end = end.saturating_sub(header.len());
    if p_end > p_start {
        out.extend_from_slice(payload.get(p_start..p_end).unwrap_or_default());
    }
}

/// Appends the 4-byte TS packet header.
fn push_ts_header(out: &mut Vec<u8>, pid: u16, pusi: bool, adaptation: bool, cc: u8) {
    let [pid_hi, pid_lo] = pid.to_be_bytes();
    out.push(0x47);
    out.push(if pusi { 0x40 } else { 0x00 } | (pid_hi & 0x1F));
    out.push(pid_lo);
    // adaptation_field_control: 01 payload only, 11 adaptation + payload.
    out.push(if adaptation { 0x30 } else { 0x10 } | (cc & 0x0F));
}

/// Encodes a 6-byte PCR field (base = `base`, extension 0).
fn encode_pcr(base: u64) -> [u8; 6] {
    [
        (base >> 25) as u8,
        (base >> 17) as u8,
        (base >> 9) as u8,
        (base >> 1) as u8,
        (((base & 1) as u8) << 7) | 0x7E,
        0x00,
    ]
}

/// Encodes a 5-byte PTS/DTS field with the given 4-bit prefix.
fn encode_timestamp(prefix: u8, ts: u64) -> [u8; 5] {
    [
        (prefix << 4) | ((((ts >> 30) & 0x07) as u8) << 1) | 1,
        (ts >> 22) as u8,
        ((((ts >> 15) & 0x7F) as u8) << 1) | 1,
        (ts >> 7) as u8,
        (((ts & 0x7F) as u8) << 1) | 1,
    ]
}

/// Writes a PES header into `buf` and returns its length (14 or 19).
fn pes_header(
    stream_id: u8,
    pts: u64,
    dts: Option<u64>,
    pes_packet_length: u16,
    buf: &mut [u8; MAX_PES_HEADER],
) -> usize {
    let [len_hi, len_lo] = pes_packet_length.to_be_bytes();
    // '10', not scrambled, no priority, data_alignment_indicator = 1.
    let fixed = [0x00, 0x00, 0x01, stream_id, len_hi, len_lo, 0x84];
    let (flags, data_len) = if dts.is_some() { (0xC0, 10) } else { (0x80, 5) };
    let mut n = 0;
    let mut put = |bytes: &[u8]| {
        for &b in bytes {
            if let Some(slot) = buf.get_mut(n) {
                *slot = b;
                n += 1;
            }
        }
    };
    put(&fixed);
    put(&[flags, data_len]);
    match dts {
        Some(dts) => {
            put(&encode_timestamp(0x3, pts));
            put(&encode_timestamp(0x1, dts));
        }
        None => put(&encode_timestamp(0x2, pts)),
    }
    n
}

/// PMT elementary stream entry without descriptors.
fn es_entry(stream_type: u8, pid: u16) -> [u8; 5] {
    let [hi, lo] = pid.to_be_bytes();
    [stream_type, 0xE0 | (hi & 0x1F), lo, 0xF0, 0x00]
}

/// Builds a long-form PSI section (version 0, current, section 0 of 0) with
/// `table_id`, `id_ext` and the concatenated `parts` as body, followed by the
/// CRC. Returns the section length in bytes; parts that do not fit `buf` are
/// dropped (cannot happen with this module's tables).
fn build_section(table_id: u8, id_ext: u16, parts: &[&[u8]], buf: &mut [u8]) -> usize {
    let body_len: usize = parts.iter().map(|p| p.len()).sum();
    // section_length counts from after itself: 5 header bytes + body + CRC.
    let section_length = 5 + body_len + 4;
    let total = 3 + section_length;
    if total > buf.len() {
        return 0;
    }
    let [ext_hi, ext_lo] = id_ext.to_be_bytes();
    let head = [
        table_id,
        0xB0 | ((section_length >> 8) as u8 & 0x0F),
        section_length as u8,
        ext_hi,
        ext_lo,
        0xC1, // reserved '11', version 0, current_next_indicator 1
        0x00, // section_number
        0x00, // last_section_number
    ];
    let mut n = 0;
    for &b in head.iter().chain(parts.iter().flat_map(|p| p.iter())) {
        if let Some(slot) = buf.get_mut(n) {
            *slot = b;
            n += 1;
        }
    }
    let crc = crc32_mpeg2(buf.get(..n).unwrap_or_default());
    for b in crc.to_be_bytes() {
        if let Some(slot) = buf.get_mut(n) {
            *slot = b;
            n += 1;
        }
    }
    n
}

/// CRC-32/MPEG-2 lookup table (poly 0x04C11DB7, MSB first).
const CRC_TABLE: [u32; 256] = {
    let mut table = [0u32; 256];
    let mut i = 0;
    while i < 256 {
        let mut crc = (i as u32) << 24;
        let mut bit = 0;
        while bit < 8 {
            crc = if crc & 0x8000_0000 != 0 { (crc << 1) ^ 0x04C1_1DB7 } else { crc << 1 };
            bit += 1;
        }
        table[i] = crc;
        i += 1;
    }
    table
};

/// CRC-32/MPEG-2: init 0xFFFFFFFF, no reflection, no final xor.
fn crc32_mpeg2(data: &[u8]) -> u32 {
    data.iter().fold(0xFFFF_FFFF, |crc, &b| {
        let idx = usize::from(((crc >> 24) as u8) ^ b);
        (crc << 8) ^ CRC_TABLE.get(idx).copied().unwrap_or(0)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    // ---------------------------------------------------------------------
    // A small, strict demuxer used to check the muxer's output.
    // ---------------------------------------------------------------------

    #[derive(Debug, Clone)]
    struct Packet {
        pid: u16,
        pusi: bool,
        cc: u8,
        has_payload: bool,
        rai: bool,
        pcr: Option<u64>,
        payload: Vec<u8>,
    }

    fn parse_packets(ts: &[u8]) -> Vec<Packet> {
        assert_eq!(ts.len() % TS_PACKET_SIZE, 0, "stream not a multiple of 188");
        ts.chunks(TS_PACKET_SIZE)
            .map(|p| {
                assert_eq!(p.len(), 188);
                assert_eq!(p[0], 0x47, "sync byte");
                assert_eq!(p[1] & 0x80, 0, "transport_error_indicator");
                let pid = (u16::from(p[1] & 0x1F) << 8) | u16::from(p[2]);
                let pusi = p[1] & 0x40 != 0;
                assert_eq!(p[3] & 0xC0, 0, "scrambling");
                let afc = (p[3] >> 4) & 0x03;
                assert_ne!(afc, 0, "reserved adaptation_field_control");
                let cc = p[3] & 0x0F;
                let mut pos = 4;
                let (mut rai, mut pcr) = (false, None);
                if afc & 0x2 != 0 {
                    let len = usize::from(p[4]);
                    pos = 5 + len;
                    assert!(pos <= 188, "adaptation field overruns packet");
                    if afc == 0x3 {
                        assert!(len <= 183);
                    }
                    if len > 0 {
                        let flags = p[5];
                        rai = flags & 0x40 != 0;
                        let mut q = 6;
                        if flags & 0x10 != 0 {
                            let b = &p[q..q + 6];
                            let base = (u64::from(b[0]) << 25)
                                | (u64::from(b[1]) << 17)
                                | (u64::from(b[2]) << 9)
                                | (u64::from(b[3]) << 1)
                                | u64::from(b[4] >> 7);
                            assert_eq!(b[4] & 0x7E, 0x7E, "PCR reserved bits");
                            let ext = (u16::from(b[4] & 1) << 8) | u16::from(b[5]);
                            assert_eq!(ext, 0);
                            pcr = Some(base);
                            q += 6;
                        }
                        // Everything else in the adaptation field is stuffing.
                        assert!(p[q..pos].iter().all(|&b| b == 0xFF), "stuffing");
                    }
                }
                Packet { pid, pusi, cc, has_payload: afc & 0x1 != 0, rai, pcr, payload: p[pos..].to_vec() }
            })
            .collect()
    }

    fn crc_ok(section: &[u8]) -> bool {
        // Running the CRC over a section including its CRC yields 0.
        crc32_mpeg2(section) == 0
    }

    /// Extracts the PSI section from a PUSI packet payload and checks its CRC.
    fn psi_section(payload: &[u8]) -> Vec<u8> {
        let pointer = usize::from(payload[0]);
        let s = &payload[1 + pointer..];
        let section_length = (usize::from(s[1] & 0x0F) << 8) | usize::from(s[2]);
        assert_eq!(s[1] & 0xC0, 0x80, "section_syntax_indicator/zero bit");
        let section = s[..3 + section_length].to_vec();
        assert!(crc_ok(&section), "CRC mismatch");
        assert!(s[3 + section_length..].iter().all(|&b| b == 0xFF));
        section
    }

    #[derive(Debug, PartialEq, Eq)]
    struct Pmt {
        pcr_pid: u16,
        streams: Vec<(u8, u16)>,
    }

    fn parse_pat(section: &[u8]) -> Vec<(u16, u16)> {
        assert_eq!(section[0], 0x00);
        let body = &section[8..section.len() - 4];
        body.chunks(4).map(|c| (u16::from_be_bytes([c[0], c[1]]), u16::from_be_bytes([c[2] & 0x1F, c[3]]))).collect()
    }

    fn parse_pmt(section: &[u8]) -> Pmt {
        assert_eq!(section[0], 0x02);
        assert_eq!(u16::from_be_bytes([section[3], section[4]]), PROGRAM_NUMBER);
        let pcr_pid = u16::from_be_bytes([section[8] & 0x1F, section[9]]);
        let info_len = usize::from(u16::from_be_bytes([section[10] & 0x0F, section[11]]));
        let mut pos = 12 + info_len;
        let end = section.len() - 4;
        let mut streams = Vec::new();
        while pos < end {
            let st = section[pos];
            let pid = u16::from_be_bytes([section[pos + 1] & 0x1F, section[pos + 2]]);
            let es_len = usize::from(u16::from_be_bytes([section[pos + 3] & 0x0F, section[pos + 4]]));
            streams.push((st, pid));
            pos += 5 + es_len;
        }
        Pmt { pcr_pid, streams }
    }

    #[derive(Debug, Clone)]
    struct Pes {
        pid: u16,
        stream_id: u8,
        packet_length: u16,
        pts: Option<u64>,
        dts: Option<u64>,
        data_alignment: bool,
        payload: Vec<u8>,
        /// PCR / RAI of the first TS packet of this PES.
        pcr: Option<u64>,
        rai: bool,
    }

    fn parse_timestamp(b: &[u8], prefix: u8) -> u64 {
        assert_eq!(b[0] >> 4, prefix, "timestamp prefix");
        assert_eq!(b[0] & 1, 1);
        assert_eq!(b[2] & 1, 1);
        assert_eq!(b[4] & 1, 1);
        (u64::from((b[0] >> 1) & 0x07) << 30)
            | (u64::from(b[1]) << 22)
            | (u64::from(b[2] >> 1) << 15)
            | (u64::from(b[3]) << 7)
            | u64::from(b[4] >> 1)
    }

    fn finish_pes(pid: u16, data: Vec<u8>, pcr: Option<u64>, rai: bool) -> Pes {
        assert_eq!(&data[..3], &[0, 0, 1], "PES start code");
        let stream_id = data[3];
        let packet_length = u16::from_be_bytes([data[4], data[5]]);
        assert_eq!(data[6] & 0xC0, 0x80);
        let flags = data[7] >> 6;
        let header_len = usize::from(data[8]);
        let (pts, dts) = match flags {
            0b10 => (Some(parse_timestamp(&data[9..14], 0x2)), None),
            0b11 => (Some(parse_timestamp(&data[9..14], 0x3)), Some(parse_timestamp(&data[14..19], 0x1))),
            other => panic!("unexpected PTS_DTS_flags {other}"),
        };
        if packet_length != 0 {
            assert_eq!(usize::from(packet_length), data.len() - 6, "PES_packet_length");
        }
        Pes {
            pid,
            stream_id,
            packet_length,
            pts,
            dts,
            data_alignment: data[6] & 0x04 != 0,
            payload: data[9 + header_len..].to_vec(),
            pcr,
            rai,
        }
    }

    struct Demuxed {
        pat: Vec<Vec<u8>>,
        pmt: Vec<Vec<u8>>,
        pes: Vec<Pes>,
        packets: Vec<Packet>,
    }

    fn demux(ts: &[u8]) -> Demuxed {
        let packets = parse_packets(ts);
        let mut pat = Vec::new();
        let mut pmt = Vec::new();
        let mut pes = Vec::new();
        let mut open: HashMap<u16, (Vec<u8>, Option<u64>, bool)> = HashMap::new();
        for p in &packets {
            match p.pid {
                PID_PAT => {
                    assert!(p.pusi);
                    pat.push(psi_section(&p.payload));
                }
                PID_PMT => {
                    assert!(p.pusi);
                    pmt.push(psi_section(&p.payload));
                }
                pid => {
                    if p.pusi {
                        if let Some((data, pcr, rai)) = open.remove(&pid) {
                            pes.push(finish_pes(pid, data, pcr, rai));
                        }
                        open.insert(pid, (p.payload.clone(), p.pcr, p.rai));
                    } else {
                        assert!(p.pcr.is_none(), "PCR only on the first packet of a PES");
                        assert!(!p.rai, "RAI only on the first packet of a PES");
                        open.get_mut(&pid).expect("continuation without start").0.extend_from_slice(&p.payload);
                    }
                }
            }
        }
        let mut rest: Vec<_> = open.into_iter().collect();
        rest.sort_by_key(|(pid, _)| *pid);
        for (pid, (data, pcr, rai)) in rest {
            pes.push(finish_pes(pid, data, pcr, rai));
        }
        Demuxed { pat, pmt, pes, packets }
    }

    /// Checks that CCs increment by one (mod 16) per PID over the whole stream.
    fn assert_cc_continuous(packets: &[Packet]) {
        let mut last: HashMap<u16, u8> = HashMap::new();
        for (i, p) in packets.iter().enumerate() {
            assert!(p.has_payload, "every packet we write carries payload");
            if let Some(prev) = last.insert(p.pid, p.cc) {
                assert_eq!(p.cc, (prev + 1) & 0x0F, "CC jump on PID {:#x} at packet {i}", p.pid);
            }
        }
    }

    fn pattern(len: usize, seed: u8) -> Vec<u8> {
        (0..len).map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed)).collect()
    }

    // ---------------------------------------------------------------------
    // Unit tests
    // ---------------------------------------------------------------------

    #[test]
    fn crc32_mpeg2_check_value() {
        assert_eq!(crc32_mpeg2(b"123456789"), 0x0376_E6E7);
        assert_eq!(crc32_mpeg2(&[]), 0xFFFF_FFFF);
    }

    #[test]
    fn tables_for_each_layout() {
        let layouts = [
            (true, true, PID_VIDEO, vec![(0x1B, PID_VIDEO), (0x0F, PID_AUDIO)]),
            (true, false, PID_VIDEO, vec![(0x1B, PID_VIDEO)]),
            (false, true, PID_AUDIO, vec![(0x0F, PID_AUDIO)]),
            (false, false, PID_NULL, vec![]),
        ];
        for (v, a, pcr_pid, streams) in layouts {
            let mut mux = TsMuxer::new(v, a);
            assert_eq!((mux.has_video(), mux.has_audio()), (v, a));
            assert_eq!(mux.pcr_pid(), pcr_pid);
            let mut out = Vec::new();
            mux.write_tables(&mut out);
            assert_eq!(out.len(), 2 * TS_PACKET_SIZE);
            let d = demux(&out);
            assert_eq!(d.pat.len(), 1);
            assert_eq!(parse_pat(&d.pat[0]), vec![(PROGRAM_NUMBER, PID_PMT)]);
            assert_eq!(d.pmt.len(), 1);
            assert_eq!(parse_pmt(&d.pmt[0]), Pmt { pcr_pid, streams });
            // version 0, current_next 1, section 0/0.
            for s in [&d.pat[0], &d.pmt[0]] {
                assert_eq!(&s[5..8], &[0xC1, 0, 0]);
            }
        }
    }

    #[test]
    fn pat_bytes_match_reference() {
        // Reference PAT as written by ffmpeg/most muxers for program 1 → 0x1000.
        let mut mux = TsMuxer::new(true, true);
        let mut out = Vec::new();
        mux.write_tables(&mut out);
        assert_eq!(
            &out[..21],
            &[
                0x47, 0x40, 0x00, 0x10, 0x00, 0x00, 0xB0, 0x0D, 0x00, 0x01, 0xC1, 0x00, 0x00, 0x00, 0x01, 0xF0, 0x00,
                0x2A, 0xB1, 0x04, 0xB2
            ]
        );
    }

    #[test]
    fn pes_round_trip_many_sizes() {
        // Sizes around every boundary: first packet payload space is
        // 184 - 8 (PCR AF) - 19 (PES header) for keyframes with DTS.
        let sizes = [
            0usize, 1, 2, 155, 156, 157, 158, 159, 160, 164, 165, 166, 170, 171, 176, 183, 184, 185, 339, 340, 341,
            342, 343, 1000, 65535, 65536, 200_000,
        ];
        for &keyframe in &[true, false] {
            for &size in &sizes {
                for (pts, dts) in [(9000u64, 9000u64), (12_000, 9000)] {
                    let mut mux = TsMuxer::new(true, true);
                    let mut out = Vec::new();
                    let data = pattern(size, 7);
                    mux.write_video(pts, dts, keyframe, &data, &mut out);
                    let d = demux(&out);
                    assert_cc_continuous(&d.packets);
                    assert_eq!(d.pes.len(), 1);
                    let pes = &d.pes[0];
                    assert_eq!(pes.pid, PID_VIDEO);
                    assert_eq!(pes.stream_id, 0xE0);
                    assert_eq!(pes.packet_length, 0);
                    assert!(pes.data_alignment);
                    assert_eq!(pes.payload, data, "size {size}");
                    assert_eq!(pes.pts, Some(pts));
                    assert_eq!(pes.dts, if pts == dts { None } else { Some(dts) });
                    assert_eq!(pes.pcr, Some(dts), "PCR = DTS");
                    assert_eq!(pes.rai, keyframe);
                    assert_eq!(out.len() / 188, d.packets.len());
                    let expected_packets = (19.min(14 + 5 * usize::from(pts != dts)) + 8 + size).div_ceil(184).max(1);
                    assert_eq!(d.packets.len(), expected_packets, "size {size}: no wasted packets");
                }

                let mut mux = TsMuxer::new(true, true);
                let mut out = Vec::new();
                let data = pattern(size, 3);
                mux.write_audio(123_456, &data, &mut out);
                let d = demux(&out);
                let pes = &d.pes[0];
                assert_eq!((pes.pid, pes.stream_id), (PID_AUDIO, 0xC0));
                assert_eq!(pes.payload, data);
                assert_eq!(pes.pts, Some(123_456));
                assert_eq!(pes.dts, None);
                assert_eq!(pes.pcr, None, "audio carries no PCR when video exists");
                assert!(pes.rai);
                let expected_len = if size + 8 <= 0xFFFF { size + 8 } else { 0 };
                assert_eq!(usize::from(pes.packet_length), expected_len);
            }
        }
    }

    #[test]
    fn single_byte_stuffing_uses_empty_adaptation_field() {
        // Non-keyframe, PTS==DTS, with PCR: first packet carries
        // 184 - 8 - 14 = 162 bytes; a second packet with 183 bytes needs
        // exactly one byte of stuffing.
        let mut mux = TsMuxer::new(true, false);
        let mut out = Vec::new();
        let data = pattern(162 + 183, 1);
        mux.write_video(0, 0, false, &data, &mut out);
        assert_eq!(out.len(), 2 * 188);
        let second = &out[188..];
        assert_eq!(second[3] & 0x30, 0x30);
        assert_eq!(second[4], 0, "adaptation_field_length 0");
        assert_eq!(demux(&out).pes[0].payload, data);
    }

    #[test]
    fn continuity_across_segments() {
        let mut mux = TsMuxer::new(true, true);
        let mut out = Vec::new();
        let mut inputs = Vec::new();
        let mut ts = 0u64;
        for segment in 0..2 {
            mux.write_tables(&mut out);
            for frame in 0..40u64 {
                let key = frame == 0;
                let v = pattern(300 + (frame as usize * 97) % 5000, frame as u8);
                mux.write_video(ts + 6000, ts, key, &v, &mut out);
                inputs.push((PID_VIDEO, ts + 6000, v));
                if frame % 2 == 0 {
                    let a = pattern(200 + frame as usize * 13, 0x55);
                    mux.write_audio(ts, &a, &mut out);
                    inputs.push((PID_AUDIO, ts, a));
                }
                ts += 3000;
            }
            let _ = segment;
        }
        let d = demux(&out);
        assert_cc_continuous(&d.packets);
        assert_eq!(d.pat.len(), 2);
        assert_eq!(d.pmt.len(), 2);
        // PAT/PMT are the first two packets of each segment.
        assert_eq!(d.packets[0].pid, PID_PAT);
        assert_eq!(d.packets[1].pid, PID_PMT);
        // Video and audio PES come out in order, byte exact.
        let mut by_pid: HashMap<u16, Vec<&Pes>> = HashMap::new();
        for p in &d.pes {
            by_pid.entry(p.pid).or_default().push(p);
        }
        for pid in [PID_VIDEO, PID_AUDIO] {
            let expected: Vec<_> = inputs.iter().filter(|i| i.0 == pid).collect();
            let got = &by_pid[&pid];
            assert_eq!(got.len(), expected.len());
            for (g, e) in got.iter().zip(expected) {
                assert_eq!(g.pts, Some(e.1));
                assert_eq!(g.payload, e.2);
            }
        }
        // CC wrapped several times on the video PID.
        assert!(d.packets.iter().filter(|p| p.pid == PID_VIDEO).count() > 32);
    }

    #[test]
    fn timestamps_are_masked_to_33_bits() {
        let mut mux = TsMuxer::new(true, true);
        let mut out = Vec::new();
        let wrap = 1u64 << 33;
        mux.write_video(wrap + 100, wrap - 50, true, b"x", &mut out);
        // Equal after masking → PTS only.
        mux.write_video(wrap + 7, 7, false, b"y", &mut out);
        mux.write_audio(u64::MAX, b"z", &mut out);
        let d = demux(&out);
        assert_eq!(d.pes[0].pts, Some(100));
        assert_eq!(d.pes[0].dts, Some(wrap - 50));
        assert_eq!(d.pes[0].pcr, Some(wrap - 50));
        assert_eq!((d.pes[1].pts, d.pes[1].dts), (Some(7), None));
        assert_eq!(d.pes[2].pts, Some(TIMESTAMP_MASK));
    }

    #[test]
    fn audio_only_carries_pcr() {
        let mut mux = TsMuxer::new(false, true);
        let mut out = Vec::new();
        mux.write_tables(&mut out);
        for i in 0..5u64 {
            mux.write_audio(i * 1920, &pattern(400, i as u8), &mut out);
        }
        let d = demux(&out);
        assert_eq!(parse_pmt(&d.pmt[0]).pcr_pid, PID_AUDIO);
        for (i, pes) in d.pes.iter().enumerate() {
            assert_eq!(pes.pcr, Some(i as u64 * 1920));
        }
    }

    #[test]
    fn pcr_on_every_video_pes_and_keyframe_rai() {
        let mut mux = TsMuxer::new(true, true);
        let mut out = Vec::new();
        mux.write_tables(&mut out);
        for i in 0..10u64 {
            mux.write_video(i * 3000 + 3000, i * 3000, i % 5 == 0, &pattern(1000, 0), &mut out);
        }
        let d = demux(&out);
        let video: Vec<_> = d.pes.iter().filter(|p| p.pid == PID_VIDEO).collect();
        assert_eq!(video.len(), 10);
        for (i, p) in video.iter().enumerate() {
            assert_eq!(p.pcr, Some(i as u64 * 3000));
            assert_eq!(p.rai, i % 5 == 0);
        }
        // Exactly one PCR per PES (only on PUSI packets).
        let pcr_packets = d.packets.iter().filter(|p| p.pcr.is_some()).count();
        assert_eq!(pcr_packets, 10);
    }

    #[test]
    fn pes_header_layout() {
        let mut buf = [0u8; MAX_PES_HEADER];
        let n = pes_header(0xE0, 0x1_2345_6789, Some(0x0_8765_4321), 0, &mut buf);
        assert_eq!(n, 19);
        assert_eq!(&buf[..9], &[0, 0, 1, 0xE0, 0, 0, 0x84, 0xC0, 10]);
        assert_eq!(parse_timestamp(&buf[9..14], 3), 0x1_2345_6789);
        assert_eq!(parse_timestamp(&buf[14..19], 1), 0x0_8765_4321);
        let n = pes_header(0xC0, 0, None, 300, &mut buf);
        assert_eq!(n, 14);
        assert_eq!(&buf[..9], &[0, 0, 1, 0xC0, 0x01, 0x2C, 0x84, 0x80, 5]);
        assert_eq!(&buf[9..14], &[0x21, 0x00, 0x01, 0x00, 0x01]);
    }

    // ---------------------------------------------------------------------
    // End-to-end check against the real ffprobe.
    // ---------------------------------------------------------------------

    use std::path::{Path, PathBuf};
    use std::process::Command;

    fn run(cmd: &mut Command) -> Option<std::process::Output> {
        match cmd.output() {
            Ok(o) if o.status.success() => Some(o),
            Ok(o) => panic!("{cmd:?} failed: {}", String::from_utf8_lossy(&o.stderr)),
            Err(_) => None,
        }
    }

    /// Splits an Annex B stream into NAL units (without start codes).
    fn annexb_nals(data: &[u8]) -> Vec<&[u8]> {
        let mut starts = Vec::new(); // (start code position, nal start)
        let mut i = 0;
        while i + 3 <= data.len() {
            if data[i] == 0 && data[i + 1] == 0 && data[i + 2] == 1 {
                let sc = if i > 0 && data[i - 1] == 0 { i - 1 } else { i };
                starts.push((sc, i + 3));
                i += 3;
            } else {
                i += 1;
            }
        }
        let mut nals = Vec::new();
        for (k, &(_, nal_start)) in starts.iter().enumerate() {
            let end = starts.get(k + 1).map_or(data.len(), |s| s.0);
            nals.push(&data[nal_start..end]);
        }
        nals
    }

    struct AccessUnit {
        data: Vec<u8>,
        idr: bool,
    }

    /// Groups NAL units into access units (H.264 §7.4.1.2.3): a new AU starts
    /// at an AUD/SPS/PPS/SEI or a slice with first_mb_in_slice == 0 once the
    /// current AU has a slice. Each AU gets an AUD if it lacks one.
    fn split_access_units(data: &[u8]) -> Vec<AccessUnit> {
        let mut aus: Vec<AccessUnit> = Vec::new();
        let mut cur: Vec<&[u8]> = Vec::new();
        let mut cur_has_vcl = false;
        let flush = |cur: &mut Vec<&[u8]>, aus: &mut Vec<AccessUnit>| {
            if cur.is_empty() {
                return;
            }
            let mut au = Vec::new();
            if cur[0][0] & 0x1F != 9 {
                au.extend_from_slice(&[0, 0, 0, 1, 0x09, 0xF0]);
            }
            let mut idr = false;
            for nal in cur.drain(..) {
                idr |= nal[0] & 0x1F == 5;
                au.extend_from_slice(&[0, 0, 0, 1]);
                au.extend_from_slice(nal);
            }
            aus.push(AccessUnit { data: au, idr });
        };
        for nal in annexb_nals(data) {
            let t = nal[0] & 0x1F;
            let vcl = t == 1 || t == 5;
            let starts_au = matches!(t, 6..=9) || (vcl && nal.get(1).is_some_and(|b| b & 0x80 != 0));
            if starts_au && cur_has_vcl {
                flush(&mut cur, &mut aus);
                cur_has_vcl = false;
            }
            cur_has_vcl |= vcl;
            cur.push(nal);
        }
        flush(&mut cur, &mut aus);
        aus
    }

    /// Splits an ADTS stream into frames using the 13-bit frame length.
    fn split_adts(data: &[u8]) -> Vec<&[u8]> {
        let mut frames = Vec::new();
        let mut pos = 0;
        while pos + 7 <= data.len() {
            assert_eq!(data[pos], 0xFF);
            assert_eq!(data[pos + 1] & 0xF0, 0xF0);
            let len = (usize::from(data[pos + 3] & 0x03) << 11)
                | (usize::from(data[pos + 4]) << 3)
                | usize::from(data[pos + 5] >> 5);
            frames.push(&data[pos..pos + len]);
            pos += len;
        }
        assert_eq!(pos, data.len());
        frames
    }

    /// `(pts, dts)` of every packet of one stream, in 90 kHz (MPEG-TS input).
    fn packet_times(ffprobe: &str, src: &Path, stream: &str) -> Vec<(u64, u64)> {
        let out = run(Command::new(ffprobe)
            .args(["-v", "error", "-select_streams", stream, "-show_entries", "packet=pts,dts", "-of", "csv=p=0"])
            .arg(src))
        .expect("ffprobe ran before");
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(|l| {
                let mut it = l.split(',').map(|v| v.trim().parse::<u64>().expect("ts"));
                let pts = it.next().expect("pts");
                let dts = it.next().unwrap_or(pts);
                (pts, dts)
            })
            .collect()
    }

    /// Runs `ffprobe -v error -count_frames -show_streams` and returns stderr
    /// and one key=value map per stream.
    fn probe(ffprobe: &str, file: &Path) -> (String, Vec<HashMap<String, String>>) {
        let out = Command::new(ffprobe)
            .args(["-v", "error", "-count_frames", "-show_streams"])
            .arg(file)
            .output()
            .expect("ffprobe");
        assert!(out.status.success());
        let mut streams = Vec::new();
        for line in String::from_utf8_lossy(&out.stdout).lines() {
            if line == "[STREAM]" {
                streams.push(HashMap::new());
            } else if let (Some((k, v)), Some(s)) = (line.split_once('='), streams.last_mut()) {
                s.insert(k.to_string(), v.to_string());
            }
        }
        (String::from_utf8_lossy(&out.stderr).into_owned(), streams)
    }

    #[test]
    fn ffprobe_accepts_segments() {
        let (ffmpeg, ffprobe) = ("ffmpeg", "ffprobe");
        if Command::new(ffprobe).arg("-version").output().is_err()
            || Command::new(ffmpeg).arg("-version").output().is_err()
        {
            println!("SKIPPED: ffmpeg/ffprobe not installed");
            return;
        }
        let dir: PathBuf = std::env::temp_dir().join(format!("strom_ts_test_{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("tmp dir");
        let src = dir.join("src.ts");
        let h264 = dir.join("v.264");
        let aac = dir.join("a.aac");
        run(Command::new(ffmpeg)
            .args(["-v", "error", "-y", "-f", "lavfi", "-i", "testsrc2=size=320x240:rate=30"])
            .args(["-f", "lavfi", "-i", "sine=frequency=440:sample_rate=44100"])
            .args(["-t", "2", "-c:v", "libx264", "-g", "30", "-bf", "2", "-pix_fmt", "yuv420p"])
            .args(["-c:a", "aac", "-b:a", "96k", "-f", "mpegts"])
            .arg(&src))
        .expect("ffmpeg");
        run(Command::new(ffmpeg)
            .args(["-v", "error", "-y", "-i"])
            .arg(&src)
            .args(["-map", "0:v", "-c", "copy", "-f", "h264"])
            .arg(&h264))
        .expect("ffmpeg");
        run(Command::new(ffmpeg)
            .args(["-v", "error", "-y", "-i"])
            .arg(&src)
            .args(["-map", "0:a", "-c", "copy", "-f", "adts"])
            .arg(&aac))
        .expect("ffmpeg");

        let video_bytes = std::fs::read(&h264).expect("h264");
        let audio_bytes = std::fs::read(&aac).expect("aac");
        let aus = split_access_units(&video_bytes);
        let frames = split_adts(&audio_bytes);
        let vtimes = packet_times(ffprobe, &src, "v:0");
        let atimes = packet_times(ffprobe, &src, "a:0");
        assert_eq!(aus.len(), 60);
        assert_eq!(aus.len(), vtimes.len());
        assert_eq!(frames.len(), atimes.len());
        assert!(aus[0].idr);
        assert!(vtimes.iter().any(|(p, d)| p != d), "B-frames give PTS != DTS");

        // Segment boundary at the IDR closest to the middle.
        let split = (1..aus.len())
            .filter(|&i| aus[i].idr)
            .min_by_key(|&i| i.abs_diff(aus.len() / 2))
            .expect("a second IDR (-g 30)");

        // Interleave by decode time; audio in PES of up to 3 ADTS frames.
        let mut mux = TsMuxer::new(true, true);
        let mut segments: Vec<Vec<u8>> = vec![Vec::new(), Vec::new()];
        let mut counts = [(0usize, 0usize); 2];
        let mut a = 0;
        for (i, au) in aus.iter().enumerate() {
            let seg = usize::from(i >= split);
            if i == 0 || i == split {
                mux.write_tables(&mut segments[seg]);
            }
            let (pts, dts) = vtimes[i];
            let limit = if i + 1 == aus.len() { u64::MAX } else { dts };
            while a < frames.len() && atimes[a].0 <= limit {
                let group_end = (a + 3).min(frames.len());
                let mut buf = Vec::new();
                for f in &frames[a..group_end] {
                    buf.extend_from_slice(f);
                }
                mux.write_audio(atimes[a].0, &buf, &mut segments[seg]);
                counts[seg].1 += group_end - a;
                a = group_end;
            }
            mux.write_video(pts, dts, au.idr, &au.data, &mut segments[seg]);
            counts[seg].0 += 1;
        }
        assert_eq!(a, frames.len());

        // CCs are continuous across the two segment files.
        let mut all = segments[0].clone();
        all.extend_from_slice(&segments[1]);
        assert_cc_continuous(&demux(&all).packets);

        let mut files = Vec::new();
        for (k, seg) in segments.iter().enumerate() {
            let path = dir.join(format!("seg{k}.ts"));
            std::fs::write(&path, seg).expect("write segment");
            files.push((path, counts[k]));
        }
        let joined = dir.join("joined.ts");
        std::fs::write(&joined, &all).expect("write joined");
        files.push((joined, (aus.len(), frames.len())));

        for (path, (n_video, n_audio)) in &files {
            let (stderr, streams) = probe(ffprobe, path);
            assert!(stderr.trim().is_empty(), "{}: ffprobe stderr: {stderr}", path.display());
            assert_eq!(streams.len(), 2, "{}", path.display());
            let video = streams
                .iter()
                .find(|s| s.get("codec_type").map(String::as_str) == Some("video"))
                .expect("video stream");
            let audio = streams
                .iter()
                .find(|s| s.get("codec_type").map(String::as_str) == Some("audio"))
                .expect("audio stream");
            assert_eq!(video["codec_name"], "h264");
            assert_eq!(video["width"], "320");
            assert_eq!(video["height"], "240");
            assert_eq!(video["nb_read_frames"], n_video.to_string(), "{}", path.display());
            assert_eq!(audio["codec_name"], "aac");
            assert_eq!(audio["sample_rate"], "44100");
            assert_eq!(audio["nb_read_frames"], n_audio.to_string(), "{}", path.display());
            println!(
                "ffprobe {}: video {}x{} {} frames, audio {} frames, no errors",
                path.display(),
                video["width"],
                video["height"],
                video["nb_read_frames"],
                audio["nb_read_frames"]
            );
        }
        let _ = std::fs::remove_dir_all(&dir);
    }
}
