//! What a node reads from another node's pushed playlist text (`formats::playlist`): the segments it lists (a
//! recording of a rung running elsewhere follows them), the delta update made from it, where its parts stand, and
//! the text it serves while the stream has no owner (its open segment closed). Never panics; every segment listed
//! has a URI and a finite, non-negative duration; a closed text has nothing open left to close.
#![no_main]

use libfuzzer_sys::fuzz_target;
use strom_engine::formats::playlist::{close_open_segment, last_part_in, next_part_in, segments_in, skip_of};

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let (segments, _ended) = segments_in(&text);
    assert!(segments.iter().all(|s| s.duration.is_finite() && s.duration >= 0.0 && !s.uri.starts_with('#')));
    let _ = next_part_in(&text);
    let _ = last_part_in(&text);
    if let Some(delta) = skip_of(&text) {
        let _ = segments_in(&delta);
    }
    if let Some(closed) = close_open_segment(&text) {
        assert!(!closed.lines().any(|l| l.starts_with("#EXT-X-PRELOAD-HINT:")), "{closed:?}");
        assert_eq!(close_open_segment(&closed), None, "{closed:?}");
        let _ = segments_in(&closed);
    }
});
