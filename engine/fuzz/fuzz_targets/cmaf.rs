//! CMAF packaging of whatever a publisher sends: a sequence of FLV tags (kind, timestamp, body) from the input
//! never panics the packager, and every part it makes is a `moof` + `mdat` whose sizes add up.
#![no_main]

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use strom_engine::formats::cmaf::{CmafTargets, Output, Packager};
use strom_engine::formats::frame::{MediaFrame, MediaKind};

fuzz_target!(|data: &[u8]| {
    let mut packager = Packager::new(CmafTargets { segment_ms: 1000, part_ms: 200 });
    let mut out = Vec::new();
    let mut rest = data;
    let mut ts = 0u32;
    // Each record: kind (1: odd = video), timestamp step in ms (1), body length (1), body.
    while rest.len() >= 3 {
        let (kind, step, len) = (rest[0], rest[1], usize::from(rest[2]));
        rest = &rest[3..];
        let body = &rest[..len.min(rest.len())];
        rest = &rest[body.len()..];
        ts = ts.wrapping_add(u32::from(step));
        let kind = if kind & 1 == 1 { MediaKind::Video } else { MediaKind::Audio };
        if let Ok(frame) = MediaFrame::parse(kind, ts, Bytes::copy_from_slice(body)) {
            let _ = packager.push(&frame, &mut out);
        }
    }
    packager.flush(&mut out);
    for o in &out {
        if let Output::Part(p) = o {
            let moof = u32::from_be_bytes([p.data[0], p.data[1], p.data[2], p.data[3]]) as usize;
            assert_eq!(&p.data[4..8], b"moof");
            let mdat = u32::from_be_bytes([p.data[moof], p.data[moof + 1], p.data[moof + 2], p.data[moof + 3]]) as usize;
            assert_eq!(&p.data[moof + 4..moof + 8], b"mdat");
            assert_eq!(moof + mdat, p.data.len());
            assert!(p.duration >= 0.0);
        }
    }
});
