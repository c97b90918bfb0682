//! A small MPEG-TS reader for assertions on HLS segments (independent of the engine's muxer).

/// One TS packet's header facts.
#[derive(Debug, Clone)]
pub struct Packet {
    pub pid: u16,
    pub start: bool,
    pub cc: u8,
    pub has_payload: bool,
    pub payload: Vec<u8>,
    pub discontinuity_indicator: bool,
}

/// Splits a segment into packets; panics on a bad sync byte or length.
pub fn packets(data: &[u8]) -> Vec<Packet> {
    assert_eq!(data.len() % 188, 0, "segment length {} is not a multiple of 188", data.len());
    data.chunks(188)
        .enumerate()
        .map(|(i, p)| {
            assert_eq!(p[0], 0x47, "packet {i}: bad sync byte");
            let pid = (u16::from(p[1] & 0x1f) << 8) | u16::from(p[2]);
            let afc = (p[3] >> 4) & 3;
            let mut off = 4;
            let mut disc = false;
            if afc & 2 != 0 {
                let len = p[4] as usize;
                if len > 0 {
                    disc = p[5] & 0x80 != 0;
                }
                off = 5 + len;
            }
            Packet {
                pid,
                start: p[1] & 0x40 != 0,
                cc: p[3] & 0x0f,
                has_payload: afc & 1 != 0,
                payload: if afc & 1 != 0 && off <= 188 { p[off..].to_vec() } else { Vec::new() },
                discontinuity_indicator: disc,
            }
        })
        .collect()
}

/// Checks continuity counters across a sequence of packets; returns a description of the first break.
pub fn continuity_error(pkts: &[Packet]) -> Option<String> {
    let mut last: std::collections::HashMap<u16, u8> = Default::default();
    for (i, p) in pkts.iter().enumerate() {
        if !p.has_payload || p.pid == 0x1fff {
            continue;
        }
        if let Some(prev) = last.get(&p.pid) {
            if (prev + 1) % 16 != p.cc && !p.discontinuity_indicator {
                return Some(format!("packet {i} pid {:#x}: cc {} after {}", p.pid, p.cc, prev));
            }
        }
        last.insert(p.pid, p.cc);
    }
    None
}

/// PES packets of `pid`: (pts, dts, payload).
pub fn pes(pkts: &[Packet], pid: u16) -> Vec<(u64, u64, Vec<u8>)> {
    let mut out: Vec<(u64, u64, Vec<u8>)> = Vec::new();
    let mut cur: Option<Vec<u8>> = None;
    let flush = |buf: Vec<u8>, out: &mut Vec<(u64, u64, Vec<u8>)>| {
        if buf.len() < 9 || buf[0..3] != [0, 0, 1] {
            return;
        }
        let flags = buf[7];
        let hlen = buf[8] as usize;
        let ts = |b: &[u8]| -> u64 {
            (u64::from(b[0] >> 1 & 7) << 30)
                | (u64::from(b[1]) << 22)
                | (u64::from(b[2] >> 1) << 15)
                | (u64::from(b[3]) << 7)
                | u64::from(b[4] >> 1)
        };
        let pts = if flags & 0x80 != 0 { ts(&buf[9..14]) } else { 0 };
        let dts = if flags & 0x40 != 0 { ts(&buf[14..19]) } else { pts };
        out.push((pts, dts, buf[9 + hlen..].to_vec()));
    };
    for p in pkts.iter().filter(|p| p.pid == pid && p.has_payload) {
        if p.start {
            if let Some(b) = cur.take() {
                flush(b, &mut out);
            }
            cur = Some(p.payload.clone());
        } else if let Some(b) = cur.as_mut() {
            b.extend_from_slice(&p.payload);
        }
    }
    if let Some(b) = cur.take() {
        flush(b, &mut out);
    }
    out
}

/// NAL unit types in an Annex B access unit.
pub fn nal_types(annexb: &[u8]) -> Vec<u8> {
    let mut types = Vec::new();
    let mut i = 0;
    while i + 3 < annexb.len() {
        if annexb[i] == 0 && annexb[i + 1] == 0 && annexb[i + 2] == 1 {
            types.push(annexb[i + 3] & 0x1f);
            i += 3;
        } else {
            i += 1;
        }
    }
    types
}
