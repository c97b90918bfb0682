//! `TsMuxer`: a fuzzer-chosen sequence of `write_tables` / `write_video` / `write_audio` calls with
//! arbitrary timestamps and payloads, each call's output demuxed by a strict TS parser below.
//!
//! Checked per call: whole 188-byte packets with sync byte 0x47 on the expected PID, continuity
//! counters +1 per PID across calls (starting at 0), payload_unit_start only on the first packet,
//! well-formed adaptation fields (PCR = DTS on the PCR PID only, random_access_indicator on
//! keyframes/audio, 0xFF stuffing, only the last packet padded), PAT/PMT with valid CRC-32 and the
//! announced streams, PES headers with the masked PTS/DTS and PES_packet_length, and PES payload
//! bytes that reassemble to exactly the bytes written.
#![no_main]

use std::collections::HashMap;

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use strom_engine::formats::ts::{
    TsMuxer, PID_AUDIO, PID_NULL, PID_PAT, PID_PMT, PID_VIDEO, STREAM_ID_AUDIO, STREAM_ID_VIDEO, STREAM_TYPE_AAC_ADTS,
    STREAM_TYPE_H264, TIMESTAMP_MASK, TS_PACKET_SIZE,
};

/// Bytes of payload one input may make the muxer write in all (keeps an execution fast).
const MAX_TOTAL_PAYLOAD: usize = 256 << 10;

#[derive(Arbitrary, Debug)]
struct Payload {
    /// Leading bytes, as given.
    head: Vec<u8>,
    /// Further bytes (a pattern): `extra & 0x3ff` of them, or, with the top bit set, `(extra & 0x7fff) * 4`
    /// (up to 128 KiB: multi-packet PES and audio PES over 64 KiB without a long input).
    extra: u16,
}

impl Payload {
    fn bytes(&self) -> Vec<u8> {
        let extra = if self.extra & 0x8000 != 0 {
            usize::from(self.extra & 0x7fff) * 4
        } else {
            usize::from(self.extra & 0x3ff)
        };
        let n = self.head.len() + extra;
        let mut v = self.head.clone();
        v.extend((self.head.len()..n).map(|i| (i.wrapping_mul(31) ^ (i >> 8)) as u8));
        v
    }
}

#[derive(Arbitrary, Debug)]
enum Op {
    Tables,
    Video {
        pts: u64,
        dts: u64,
        keyframe: bool,
        payload: Payload,
    },
    /// Video with DTS = PTS - small offset and small timestamps (the common shape).
    VideoNear {
        dts: u32,
        cto: u16,
        keyframe: bool,
        payload: Payload,
    },
    Audio {
        pts: u64,
        payload: Payload,
    },
}

#[derive(Arbitrary, Debug)]
struct Input {
    has_video: bool,
    has_audio: bool,
    ops: Vec<Op>,
}

/// One parsed TS packet.
struct Packet<'a> {
    pid: u16,
    pusi: bool,
    /// Adaptation field length byte (None: no adaptation field).
    af_len: Option<usize>,
    rai: bool,
    pcr: Option<u64>,
    payload: &'a [u8],
}

/// Parses one packet strictly; panics on anything the muxer must never produce. Checks and advances the
/// continuity counter of its PID.
fn parse_packet<'a>(p: &'a [u8], cc: &mut HashMap<u16, u8>) -> Packet<'a> {
    assert_eq!(p.len(), TS_PACKET_SIZE);
    assert_eq!(p[0], 0x47, "sync byte");
    assert_eq!(p[1] & 0x80, 0, "transport_error_indicator");
    assert_eq!(p[1] & 0x20, 0, "transport_priority");
    let pid = (u16::from(p[1] & 0x1f) << 8) | u16::from(p[2]);
    let pusi = p[1] & 0x40 != 0;
    assert_eq!(p[3] & 0xc0, 0, "scrambling");
    let afc = (p[3] >> 4) & 3;
    assert!(afc == 1 || afc == 3, "adaptation_field_control {afc}: every packet must carry payload");
    let counter = p[3] & 0x0f;
    let expected = cc.entry(pid).or_insert(0);
    assert_eq!(counter, *expected, "continuity_counter on PID {pid:#x}");
    *expected = (*expected + 1) & 0x0f;

    let mut rai = false;
    let mut pcr = None;
    let mut af_len = None;
    let mut start = 4;
    if afc == 3 {
        let len = usize::from(p[4]);
        assert!(len <= 182, "adaptation field of {len} bytes leaves no payload");
        af_len = Some(len);
        if len > 0 {
            let flags = p[5];
            assert_eq!(flags & 0x80, 0, "discontinuity_indicator");
            assert_eq!(flags & 0x2f, 0, "unexpected adaptation flags {flags:#x}");
            rai = flags & 0x40 != 0;
            let mut i = 6;
            if flags & 0x10 != 0 {
                assert!(len >= 7, "PCR does not fit the adaptation field");
                let b = &p[6..12];
                let base = (u64::from(b[0]) << 25)
                    | (u64::from(b[1]) << 17)
                    | (u64::from(b[2]) << 9)
                    | (u64::from(b[3]) << 1)
                    | u64::from(b[4] >> 7);
                assert_eq!(b[4] & 0x7e, 0x7e, "PCR reserved bits");
                let ext = (u16::from(b[4] & 1) << 8) | u16::from(b[5]);
                assert_eq!(ext, 0, "PCR extension");
                pcr = Some(base);
                i = 12;
            }
            assert!(p[i..5 + len].iter().all(|&b| b == 0xff), "adaptation stuffing must be 0xFF");
        }
        start = 5 + len;
    }
    Packet { pid, pusi, af_len, rai, pcr, payload: &p[start..] }
}

fn crc32_mpeg2(data: &[u8]) -> u32 {
    let mut crc = 0xffff_ffffu32;
    for &b in data {
        crc ^= u32::from(b) << 24;
        for _ in 0..8 {
            crc = if crc & 0x8000_0000 != 0 { (crc << 1) ^ 0x04c1_1db7 } else { crc << 1 };
        }
    }
    crc
}

/// Checks a PSI packet's payload and returns the section body (after the 8-byte long header, before the CRC).
fn psi_section(payload: &[u8], table_id: u8, id_ext: u16) -> Vec<u8> {
    assert_eq!(payload[0], 0, "pointer_field");
    let s = &payload[1..];
    assert_eq!(s[0], table_id);
    assert_eq!(s[1] & 0xf0, 0xb0, "section_syntax_indicator, '0', reserved");
    let section_length = (usize::from(s[1] & 0x0f) << 8) | usize::from(s[2]);
    let total = 3 + section_length;
    assert!(total <= s.len() && section_length >= 9);
    assert_eq!(u16::from_be_bytes([s[3], s[4]]), id_ext);
    assert_eq!(s[5], 0xc1, "version 0, current");
    assert_eq!((s[6], s[7]), (0, 0), "section 0 of 0");
    assert_eq!(crc32_mpeg2(&s[..total]), 0, "CRC-32");
    assert!(s[total..].iter().all(|&b| b == 0xff), "PSI stuffing");
    s[8..total - 4].to_vec()
}

fn decode_ts(b: &[u8], prefix: u8) -> u64 {
    assert_eq!(b[0] >> 4, prefix, "PTS/DTS prefix");
    assert!(b[0] & 1 == 1 && b[2] & 1 == 1 && b[4] & 1 == 1, "marker bits");
    (u64::from((b[0] >> 1) & 7) << 30)
        | (u64::from(b[1]) << 22)
        | (u64::from(b[2] >> 1) << 15)
        | (u64::from(b[3]) << 7)
        | u64::from(b[4] >> 1)
}

struct Checker {
    has_video: bool,
    has_audio: bool,
    cc: HashMap<u16, u8>,
}

impl Checker {
    fn pcr_pid(&self) -> u16 {
        if self.has_video {
            PID_VIDEO
        } else if self.has_audio {
            PID_AUDIO
        } else {
            PID_NULL
        }
    }

    fn tables(&mut self, out: &[u8]) {
        assert_eq!(out.len(), 2 * TS_PACKET_SIZE, "PAT + PMT");
        let pat = parse_packet(&out[..TS_PACKET_SIZE], &mut self.cc);
        assert!(pat.pid == PID_PAT && pat.pusi && pat.af_len.is_none());
        let body = psi_section(pat.payload, 0x00, 1);
        assert_eq!(body, [0x00, 0x01, 0xe0 | (PID_PMT >> 8) as u8, PID_PMT as u8]);

        let pmt = parse_packet(&out[TS_PACKET_SIZE..], &mut self.cc);
        assert!(pmt.pid == PID_PMT && pmt.pusi && pmt.af_len.is_none());
        let body = psi_section(pmt.payload, 0x02, 1);
        let pcr = self.pcr_pid();
        let mut expected = vec![0xe0 | (pcr >> 8) as u8, pcr as u8, 0xf0, 0x00];
        if self.has_video {
            expected.extend_from_slice(&[STREAM_TYPE_H264, 0xe0 | (PID_VIDEO >> 8) as u8, PID_VIDEO as u8, 0xf0, 0]);
        }
        if self.has_audio {
            expected.extend_from_slice(&[
                STREAM_TYPE_AAC_ADTS,
                0xe0 | (PID_AUDIO >> 8) as u8,
                PID_AUDIO as u8,
                0xf0,
                0,
            ]);
        }
        assert_eq!(body, expected, "PMT body");
    }

    /// Demuxes one PES written on `pid`; returns its bytes (header + payload). Checks the packet-level layout.
    fn pes(&mut self, out: &[u8], pid: u16, pcr: Option<u64>, rai: bool) -> Vec<u8> {
        assert!(!out.is_empty(), "a PES always takes at least one packet");
        assert_eq!(out.len() % TS_PACKET_SIZE, 0, "whole packets only");
        let n = out.len() / TS_PACKET_SIZE;
        let mut pes = Vec::with_capacity(n * TS_PACKET_SIZE);
        for (i, p) in out.chunks(TS_PACKET_SIZE).enumerate() {
            let first = i == 0;
            let last = i + 1 == n;
            let pkt = parse_packet(p, &mut self.cc);
            assert_eq!(pkt.pid, pid, "packet {i} on the wrong PID");
            assert_eq!(pkt.pusi, first, "payload_unit_start_indicator on packet {i}");
            assert_eq!(pkt.pcr, if first { pcr } else { None }, "PCR on packet {i}");
            assert_eq!(pkt.rai, first && rai, "random_access_indicator on packet {i}");
            if !last {
                // Only the last packet may be padded: the adaptation field is exactly what flags need.
                let needed = match (first && pcr.is_some(), first && rai) {
                    (true, _) => Some(7),
                    (false, true) => Some(1),
                    (false, false) => None,
                };
                assert_eq!(pkt.af_len, needed, "packet {i} of {n} padded");
            }
            pes.extend_from_slice(pkt.payload);
        }
        pes
    }

    fn video(&mut self, out: &[u8], pts: u64, dts: u64, keyframe: bool, annexb: &[u8]) {
        let (pts, dts) = (pts & TIMESTAMP_MASK, dts & TIMESTAMP_MASK);
        let pcr = (self.pcr_pid() == PID_VIDEO).then_some(dts);
        let pes = self.pes(out, PID_VIDEO, pcr, keyframe);
        assert_eq!(&pes[..4], &[0, 0, 1, STREAM_ID_VIDEO]);
        assert_eq!(&pes[4..6], &[0, 0], "video PES_packet_length is 0 (unbounded)");
        assert_eq!(pes[6], 0x84, "'10', data_alignment_indicator");
        let header_len = if dts != pts {
            assert_eq!((pes[7], pes[8]), (0xc0, 10));
            assert_eq!(decode_ts(&pes[9..14], 3), pts, "PTS");
            assert_eq!(decode_ts(&pes[14..19], 1), dts, "DTS");
            19
        } else {
            assert_eq!((pes[7], pes[8]), (0x80, 5));
            assert_eq!(decode_ts(&pes[9..14], 2), pts, "PTS");
            14
        };
        assert!(
            pes[header_len..] == *annexb,
            "video payload differs from what was written ({} vs {} bytes)",
            pes.len() - header_len,
            annexb.len()
        );
    }

    fn audio(&mut self, out: &[u8], pts: u64, adts: &[u8]) {
        let pts = pts & TIMESTAMP_MASK;
        let pcr = (self.pcr_pid() == PID_AUDIO).then_some(pts);
        let pes = self.pes(out, PID_AUDIO, pcr, true);
        assert_eq!(&pes[..4], &[0, 0, 1, STREAM_ID_AUDIO]);
        let len = usize::from(u16::from_be_bytes([pes[4], pes[5]]));
        if 8 + adts.len() <= 0xffff {
            assert_eq!(len, 8 + adts.len(), "PES_packet_length");
        } else {
            assert_eq!(len, 0, "PES_packet_length for a PES over 64 KiB");
        }
        assert_eq!((pes[6], pes[7], pes[8]), (0x84, 0x80, 5));
        assert_eq!(decode_ts(&pes[9..14], 2), pts, "PTS");
        assert!(
            pes[14..] == *adts,
            "audio payload differs from what was written ({} vs {} bytes)",
            pes.len() - 14,
            adts.len()
        );
    }
}

fuzz_target!(|input: Input| {
    let mut muxer = TsMuxer::new(input.has_video, input.has_audio);
    assert_eq!((muxer.has_video(), muxer.has_audio()), (input.has_video, input.has_audio));
    let mut checker = Checker { has_video: input.has_video, has_audio: input.has_audio, cc: HashMap::new() };
    assert_eq!(muxer.pcr_pid(), checker.pcr_pid());
    let mut budget = MAX_TOTAL_PAYLOAD;
    let mut out = Vec::new();
    for op in &input.ops {
        // Output accumulates across calls (as in a segment); each call's bytes are checked on their own.
        let start = out.len();
        match op {
            Op::Tables => {
                muxer.write_tables(&mut out);
                checker.tables(&out[start..]);
            }
            Op::Video { pts, dts, keyframe, payload } => {
                let data = payload.bytes();
                let Some(rest) = budget.checked_sub(data.len()) else { break };
                budget = rest;
                muxer.write_video(*pts, *dts, *keyframe, &data, &mut out);
                checker.video(&out[start..], *pts, *dts, *keyframe, &data);
            }
            Op::VideoNear { dts, cto, keyframe, payload } => {
                let data = payload.bytes();
                let Some(rest) = budget.checked_sub(data.len()) else { break };
                budget = rest;
                let (dts, pts) = (u64::from(*dts), u64::from(*dts) + u64::from(*cto));
                muxer.write_video(pts, dts, *keyframe, &data, &mut out);
                checker.video(&out[start..], pts, dts, *keyframe, &data);
            }
            Op::Audio { pts, payload } => {
                let data = payload.bytes();
                let Some(rest) = budget.checked_sub(data.len()) else { break };
                budget = rest;
                muxer.write_audio(*pts, &data, &mut out);
                checker.audio(&out[start..], *pts, &data);
            }
        }
        if out.len() > 4 << 20 {
            out.clear(); // keep memory flat; counters continue (as across segments)
        }
    }
});
