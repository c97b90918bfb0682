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
    let mut p = 5;
    while p + 5 <= body.len() {
        let n = u32::from_be_bytes([body[p], body[p + 1], body[p + 2], body[p + 3]]) as usize;
        p += 4;
        if n == 0 {
            return None;
        }
        let t = body[p] & 0x1f;
        if t == 1 || t == 5 {
            let end = (p + n).min(body.len());
            return key_of_nal(&body[p..end], n);
        }
        p += n;
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
    }
}
