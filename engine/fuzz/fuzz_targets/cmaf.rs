//! CMAF packaging of whatever a publisher sends: a sequence of FLV tags (kind, timestamp, body) from the input
//! never panics the packager, every chunk and every part it makes is a run of `moof` + `mdat` pairs whose sizes
//! add up, and a chunked part is exactly the chunks emitted before it.
#![no_main]

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use strom_engine::formats::cmaf::{CmafTargets, Output, Packager};
use strom_engine::formats::frame::{MediaFrame, MediaKind};

/// Asserts that `data` is one or more `moof` + `mdat` pairs, nothing else.
fn fragments(data: &[u8]) {
    let mut at = 0;
    assert!(!data.is_empty());
    while at < data.len() {
        let size = |at: usize| u32::from_be_bytes([data[at], data[at + 1], data[at + 2], data[at + 3]]) as usize;
        let moof = size(at);
        assert_eq!(&data[at + 4..at + 8], b"moof");
        let mdat = size(at + moof);
        assert_eq!(&data[at + moof + 4..at + moof + 8], b"mdat");
        at += moof + mdat;
        assert!(at <= data.len());
    }
}

fuzz_target!(|data: &[u8]| {
    // The first byte picks the chunk target: 0 (a part is one fragment) or 1..255 ms.
    let Some((&chunk_ms, data)) = data.split_first() else { return };
    let mut packager = Packager::new(CmafTargets { segment_ms: 1000, part_ms: 200 }).with_chunks(u32::from(chunk_ms));
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
    let mut chunks: Vec<u8> = Vec::new();
    for o in &out {
        match o {
            Output::Chunk(c) => {
                assert!(chunk_ms > 0, "chunks only when asked for");
                fragments(c);
                chunks.extend_from_slice(c);
            }
            Output::Part(p) => {
                fragments(&p.data);
                if chunk_ms > 0 {
                    assert_eq!(&p.data[..], &chunks[..], "a chunked part is its chunks");
                }
                chunks.clear();
                assert!(p.duration >= 0.0);
            }
            Output::Init(_) => {}
        }
    }
    assert!(chunks.is_empty(), "every chunk ends up in a part");
});
