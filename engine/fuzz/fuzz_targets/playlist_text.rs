//! What a node reads from another node's pushed playlist text (`formats::playlist`): the segments it lists (a
//! recording of a rung running elsewhere follows them), the delta update made from it, and where its parts stand.
//! Never panics; every segment listed has a URI and a finite, non-negative duration.
#![no_main]

use libfuzzer_sys::fuzz_target;
use strom_engine::formats::playlist::{last_part_in, next_part_in, segments_in, skip_of};

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let (segments, _ended) = segments_in(&text);
    assert!(segments.iter().all(|s| s.duration.is_finite() && s.duration >= 0.0 && !s.uri.starts_with('#')));
    let _ = next_part_in(&text);
    let _ = last_part_in(&text);
    if let Some(delta) = skip_of(&text) {
        let _ = segments_in(&delta);
    }
});
