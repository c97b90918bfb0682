//! Frame identity across protocols: a frame is recognised by a hash of the first bytes of its first VCL NAL unit,
//! which is the same in FLV/RTMP (AVCC) and MPEG-TS (Annex B). Servers rebase timestamps (strom) or not
//! (nginx-rtmp); content does not change, so this works for both.

/// Bytes of the first slice NAL that identify a frame.
const KEY_BYTES: usize = 64;

fn fnv1a(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in bytes {
        h ^= b as u64;
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

/// `nal` may be a prefix of the NAL unit; `full_len` is its whole length (x264 often codes the top of testsrc2
/// IDR frames identically: the length tells them apart).
fn key_of_nal(nal: &[u8], full_len: usize) -> Option<u64> {
    let take = KEY_BYTES.min(full_len);
    if nal.len() < take || take < 8 {
        return None;
    }
    Some(fnv1a(&nal[..take]) ^ (full_len as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15))
}

/// Key of an FLV video tag body (AVC, 4-byte NAL lengths). `body` may be truncated (a prefix of the tag body).
pub fn key_from_flv_video(body: &[u8]) -> Option<u64> {
    if body.len() < 5 || body[0] & 0x0f != 7 || body[1] != 1 {
        return None;
    }
    key_from_avcc(&body[5..])
}

/// Key of an AVCC access unit (4-byte NAL lengths): an FLV video body after its 5-byte header, or an fMP4 sample.
pub fn key_from_avcc(au: &[u8]) -> Option<u64> {
    let mut p = 0;
    while p + 5 <= au.len() {
        let n = u32::from_be_bytes([au[p], au[p + 1], au[p + 2], au[p + 3]]) as usize;
        p += 4;
        if n == 0 {
            return None;
        }
        let t = au[p] & 0x1f;
        if t == 1 || t == 5 {
            let end = (p + n).min(au.len());
            return key_of_nal(&au[p..end], n);
        }
        p += n;
    }
    None
}

/// ISO BMFF boxes directly inside `data`: (type, body, offset of the box in `data`).
fn boxes(data: &[u8]) -> impl Iterator<Item = ([u8; 4], &[u8], usize)> {
    let mut p = 0usize;
    std::iter::from_fn(move || {
        if p + 8 > data.len() {
            return None;
        }
        let at = p;
        let size32 = u32::from_be_bytes(data[p..p + 4].try_into().ok()?) as usize;
        let kind: [u8; 4] = data[p + 4..p + 8].try_into().ok()?;
        let (head, size) = match size32 {
            0 => (8, data.len() - p),
            1 if p + 16 <= data.len() => (16, u64::from_be_bytes(data[p + 8..p + 16].try_into().ok()?) as usize),
            1 => return None,
            n => (8, n),
        };
        if size < head || p + size > data.len() {
            return None;
        }
        p += size;
        Some((kind, &data[at + head..at + size], at))
    })
}

fn be32(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_be_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

/// The track id of the video track (`hdlr` `vide`) in an fMP4 init segment (`ftyp` + `moov`).
pub fn fmp4_video_track(init: &[u8]) -> Option<u32> {
    let (_, moov, _) = boxes(init).find(|b| &b.0 == b"moov")?;
    for (_, trak, _) in boxes(moov).filter(|b| &b.0 == b"trak") {
        let mut id = None;
        let mut video = false;
        for (kind, body, _) in boxes(trak) {
            match &kind {
                // version 0: v/flags, creation, modification, track_id; version 1: 64-bit times.
                b"tkhd" => id = be32(body, if body.first() == Some(&1) { 20 } else { 12 }),
                b"mdia" => video |= boxes(body).any(|(k, b, _)| &k == b"hdlr" && b.get(8..12) == Some(b"vide")),
                _ => {}
            }
        }
        if video {
            return id;
        }
    }
    None
}

/// The first sample of track `track` in an fMP4 fragment sequence (`moof` + `mdat`, repeated): the `trun`'s first
/// sample size (or the `tfhd` default) at the `trun` data offset from the base (the `moof`, or `tfhd`'s explicit
/// base-data-offset). Enough of the box structure for what CMAF packagers write.
pub fn fmp4_first_sample(frag: &[u8], track: u32) -> Option<&[u8]> {
    for (_, moof, moof_at) in boxes(frag).filter(|b| &b.0 == b"moof") {
        for (_, traf, _) in boxes(moof).filter(|b| &b.0 == b"traf") {
            let (_, tfhd, _) = boxes(traf).find(|b| &b.0 == b"tfhd")?;
            let flags = be32(tfhd, 0)? & 0x00ff_ffff;
            if be32(tfhd, 4)? != track {
                continue;
            }
            let mut p = 8;
            let mut base = moof_at;
            if flags & 0x1 != 0 {
                base = u64::from_be_bytes(tfhd.get(p..p + 8)?.try_into().ok()?) as usize;
                p += 8;
            }
            p += if flags & 0x2 != 0 { 4 } else { 0 };
            p += if flags & 0x8 != 0 { 4 } else { 0 };
            let default_size = if flags & 0x10 != 0 { be32(tfhd, p) } else { None };
            for (_, trun, _) in boxes(traf).filter(|b| &b.0 == b"trun") {
                let tf = be32(trun, 0)? & 0x00ff_ffff;
                if be32(trun, 4)? == 0 {
                    continue;
                }
                let mut q = 8;
                let offset = if tf & 0x1 != 0 {
                    q += 4;
                    be32(trun, 8)? as i32 as i64
                } else {
                    0
                };
                q += if tf & 0x4 != 0 { 4 } else { 0 };
                q += if tf & 0x100 != 0 { 4 } else { 0 };
                let size = if tf & 0x200 != 0 { be32(trun, q)? } else { default_size? } as usize;
                let start = usize::try_from(base as i64 + offset).ok()?;
                return frag.get(start..start.checked_add(size)?);
            }
        }
    }
    None
}

/// Is this FLV video tag body an AVC keyframe (not a sequence header)?
pub fn is_flv_keyframe(body: &[u8]) -> bool {
    body.len() >= 2 && body[0] >> 4 == 1 && body[1] == 1
}

/// Is this FLV tag body a codec sequence header (AVC or AAC)?
pub fn is_sequence_header(kind: u8, body: &[u8]) -> bool {
    match kind {
        9 => body.len() >= 2 && body[0] & 0x0f == 7 && body[1] == 0,
        8 => body.len() >= 2 && body[0] >> 4 == 10 && body[1] == 0,
        _ => false,
    }
}

/// Key of the first slice NAL in an Annex B access unit (the whole PES payload: the NAL may end at its end).
pub fn key_from_annexb(es: &[u8]) -> Option<u64> {
    let mut i = 0;
    while i + 3 < es.len() {
        if es[i] == 0 && es[i + 1] == 0 && es[i + 2] == 1 {
            let start = i + 3;
            let t = es[start] & 0x1f;
            // find the end of this NAL (next start code) to know its length
            let mut j = start;
            let mut end = es.len();
            while j + 2 < es.len() {
                if es[j] == 0
                    && es[j + 1] == 0
                    && (es[j + 2] == 1 || (es[j + 2] == 0 && j + 3 < es.len() && es[j + 3] == 1))
                {
                    end = j;
                    break;
                }
                j += 1;
            }
            if t == 1 || t == 5 {
                let nal = &es[start..end];
                return key_of_nal(nal, nal.len());
            }
            i = end;
        } else {
            i += 1;
        }
    }
    None
}

/// The video elementary stream of the first video PES (one access unit) in an MPEG-TS segment.
pub fn first_video_es(ts: &[u8]) -> Vec<u8> {
    let mut pid: Option<u16> = None;
    let mut out = Vec::new();
    for pkt in ts.chunks_exact(188) {
        if pkt[0] != 0x47 {
            break;
        }
        let pusi = pkt[1] & 0x40 != 0;
        let this = (((pkt[1] & 0x1f) as u16) << 8) | pkt[2] as u16;
        let afc = (pkt[3] >> 4) & 3;
        let mut p = 4;
        if afc == 2 || afc == 0 {
            continue;
        }
        if afc == 3 {
            p += 1 + pkt[4] as usize;
        }
        if p >= 188 {
            continue;
        }
        let payload = &pkt[p..];
        match pid {
            None => {
                if pusi && payload.len() >= 9 && payload[..3] == [0, 0, 1] && payload[3] & 0xf0 == 0xe0 {
                    pid = Some(this);
                    let hdr = 9 + payload[8] as usize;
                    if hdr < payload.len() {
                        out.extend_from_slice(&payload[hdr..]);
                    }
                }
            }
            Some(v) if v == this => {
                if pusi {
                    break;
                }
                out.extend_from_slice(payload);
            }
            Some(_) => {}
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_key_in_avcc_and_annexb() {
        let slice: Vec<u8> = (0..200u32).map(|i| (i * 7 + 3) as u8 | 1).collect();
        let mut nal = vec![0x65];
        nal.extend_from_slice(&slice);
        let sei = vec![0x06, 5, 5, 5];
        let mut flv = vec![0x17, 1, 0, 0, 0];
        for n in [&sei, &nal] {
            flv.extend_from_slice(&(n.len() as u32).to_be_bytes());
            flv.extend_from_slice(n);
        }
        let mut es = vec![0, 0, 0, 1, 0x09, 0xf0, 0, 0, 0, 1, 0x67, 1, 2, 3, 0, 0, 1];
        es.extend_from_slice(&nal);
        let a = key_from_flv_video(&flv).unwrap();
        let b = key_from_annexb(&es).unwrap();
        assert_eq!(a, b);
        assert_eq!(key_from_flv_video(&flv[..60]), None);
        assert!(is_flv_keyframe(&flv));
        // The same frame as an fMP4 sample (strom's own packager), audio track first in the init segment.
        use bytes::Bytes;
        use strom_engine::formats::fmp4::{fragment, init_segment, Run, Sample, Track, TrackKind};
        let init = init_segment(&[
            Track {
                id: 2,
                kind: TrackKind::Aac { config: Bytes::from_static(&[0x12, 0x10]), sample_rate: 44_100, channels: 2 },
            },
            Track {
                id: 1,
                kind: TrackKind::Avc {
                    record: Bytes::from_static(&[
                        1, 0x64, 0, 0x1f, 0xff, 0xe1, 0, 4, 0x67, 0x64, 0, 0x1f, 1, 0, 1, 0x68,
                    ]),
                    width: 1280,
                    height: 720,
                },
            },
        ]);
        assert_eq!(fmp4_video_track(&init), Some(1));
        let sample =
            |data: &[u8], sync| Sample { duration: 3000, cts_offset: 0, sync, data: Bytes::copy_from_slice(data) };
        let frag = fragment(
            7,
            &[
                Run { track_id: 2, base_decode_time: 0, samples: vec![sample(&[0x21; 300], true)] },
                Run {
                    track_id: 1,
                    base_decode_time: 0,
                    samples: vec![sample(&flv[5..], true), sample(&[0; 40], false)],
                },
            ],
        );
        let mut two = frag.to_vec();
        two.extend_from_slice(&frag);
        assert_eq!(fmp4_first_sample(&two, 1), Some(&flv[5..]));
        assert_eq!(key_from_avcc(fmp4_first_sample(&two, 1).unwrap()), Some(a));
        assert_eq!(fmp4_first_sample(&two, 3), None);
    }
}
