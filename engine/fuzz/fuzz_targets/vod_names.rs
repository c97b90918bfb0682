//! What a recording reads back from storage (`storage::asset`): object names listed from a store (a cut
//! recording's playlist is rebuilt from them), `asset.json` and its times. Never panics; a segment name that
//! parses renders back to the same name; a rebuilt playlist lists exactly the parsed segments, in order.
#![no_main]

use libfuzzer_sys::fuzz_target;
use strom_engine::storage::asset::{entries_of, parse_rfc3339, render_playlist, Asset, SegmentEntry};

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    for name in text.split('\n') {
        if let Some(e) = SegmentEntry::parse(name) {
            assert_eq!(e.name(), name, "a parsed name renders back to itself");
        }
        let _ = parse_rfc3339(name);
    }
    let entries = entries_of(text.split('\n'));
    assert!(entries.windows(2).all(|w| w[0].index < w[1].index), "in order, without repeats");
    let playlist = render_playlist(&entries, true, "source/", None);
    assert_eq!(playlist.matches("#EXTINF:").count(), entries.len());
    let _ = serde_json::from_slice::<Asset>(data);
});
