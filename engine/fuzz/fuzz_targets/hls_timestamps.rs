//! The HLS segmenter and its playlist (`stream::cmaf_segmenter::CmafSegmenter`, `formats::playlist`) driven by a
//! publisher with hostile timestamps: jumps forward and back, repeats, wrap-around near `u32::MAX`, keyframes at
//! random, publisher reconnects (discontinuities) and new sequence headers, then the end of the stream.
//!
//! Input: records of 3 bytes `[op, a, b]`: `op & 7` picks the event (0–2: an inter frame, 3: a keyframe, 4: audio,
//! 5: a timestamp jump to `(a << 24) | (b << 8)`, 6: the publisher leaves and comes back, 7: a new AVC sequence
//! header), `op >> 3` and `a`/`b` set the timestamp step (`i16`, so it may go back).
//!
//! After every event, what players would see must hold (a finding otherwise):
//! - every `EXTINF` is finite, not negative, and rounded at most `EXT-X-TARGETDURATION` (RFC 8216 4.3.3.1);
//! - `EXT-X-MEDIA-SEQUENCE` never goes back; a media sequence number always names the same URI;
//! - `EXT-X-DISCONTINUITY-SEQUENCE` never goes back;
//! - the playlist's segments read back with consecutive numbers.
#![no_main]

use std::collections::HashMap;
use std::sync::Arc;

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use strom_engine::config::HlsConfig;
use strom_engine::formats::frame::{MediaFrame, MediaKind};
use strom_engine::formats::playlist::segments_in;
use strom_engine::formats::StreamKey;
use strom_engine::metrics::Metrics;
use strom_engine::stream::cmaf_segmenter::CmafSegmenter;
use strom_engine::stream::hls_viewers::PollMeter;
use strom_engine::stream::segmenter::HlsView;

const SPS: &[u8] = &[
    0x67, 0x64, 0x00, 0x0d, 0xac, 0xd9, 0x41, 0x41, 0xfb, 0x01, 0x10, 0x00, 0x00, 0x03, 0x00, 0x10, 0x00, 0x00, 0x03,
    0x03, 0xc0, 0xf1, 0x42, 0x99, 0x60,
];
const PPS: &[u8] = &[0x68, 0xeb, 0xe3, 0xcb, 0x22, 0xc0];

fn avc_header(ts: u32) -> MediaFrame {
    let mut v = vec![0x17, 0, 0, 0, 0, 1, SPS[1], SPS[2], SPS[3], 0xff, 0xe1];
    v.extend_from_slice(&(SPS.len() as u16).to_be_bytes());
    v.extend_from_slice(SPS);
    v.push(1);
    v.extend_from_slice(&(PPS.len() as u16).to_be_bytes());
    v.extend_from_slice(PPS);
    MediaFrame::parse(MediaKind::Video, ts, Bytes::from(v)).expect("valid header")
}

fn video(ts: u32, key: bool) -> MediaFrame {
    let mut b = vec![if key { 0x17 } else { 0x27 }, 1, 0, 0, 0];
    b.extend_from_slice(&[0, 0, 0, 2, if key { 0x65 } else { 0x41 }, ts as u8]);
    MediaFrame::parse(MediaKind::Video, ts, Bytes::from(b)).expect("valid frame")
}

fn audio(ts: u32) -> MediaFrame {
    MediaFrame::parse(MediaKind::Audio, ts, Bytes::from(vec![0xaf, 1, 0x21, ts as u8])).expect("valid frame")
}

#[derive(Default)]
struct Seen {
    msn: u64,
    disc: u64,
    uris: HashMap<u64, String>,
}

fn check(view: &HlsView, seen: &mut Seen) {
    let Some(text) = view.playlist.as_ref() else { return };
    let text = std::str::from_utf8(text).expect("UTF-8 playlist");
    let num = |tag: &str| -> Option<u64> {
        text.lines().find_map(|l| l.strip_prefix(tag)).map(|v| v.trim().parse().expect("a number"))
    };
    let target = num("#EXT-X-TARGETDURATION:").expect("a target duration");
    let msn = num("#EXT-X-MEDIA-SEQUENCE:").expect("a media sequence");
    let disc = num("#EXT-X-DISCONTINUITY-SEQUENCE:").unwrap_or(0);
    assert!(msn >= seen.msn, "media sequence went back: {} -> {msn}\n{text}", seen.msn);
    assert!(disc >= seen.disc, "discontinuity sequence went back: {} -> {disc}\n{text}", seen.disc);
    (seen.msn, seen.disc) = (msn, disc);
    for line in text.lines() {
        if let Some(v) = line.strip_prefix("#EXTINF:") {
            let d: f64 = v.split(',').next().and_then(|d| d.parse().ok()).expect("EXTINF number");
            assert!(d.is_finite() && d >= 0.0, "EXTINF {d}\n{text}");
            assert!(d.round() as u64 <= target, "EXTINF {d} over TARGETDURATION {target}\n{text}");
        }
    }
    let (segments, _) = segments_in(text);
    for (i, s) in segments.iter().enumerate() {
        assert_eq!(s.msn, msn + i as u64, "segment numbers are consecutive\n{text}");
        let uri = seen.uris.entry(s.msn).or_insert_with(|| s.uri.clone());
        assert_eq!(*uri, s.uri, "media sequence {} renamed\n{text}", s.msn);
    }
}

fuzz_target!(|data: &[u8]| {
    let hls = HlsConfig { segment_duration_secs: 1.0, window: 4, retained_segments: 2, part_target_ms: 200, ..HlsConfig::default() };
    let metrics = Arc::new(Metrics::new());
    let (tx, rx) = tokio::sync::watch::channel(Arc::new(HlsView::default()));
    let meter = PollMeter::new(1, metrics.clone());
    let key = StreamKey::new("live", "fuzz").expect("valid key");
    let mut seg = CmafSegmenter::new(key, &hls, metrics, None, tx, meter);
    let mut seen = Seen::default();
    let mut ts = 0u32;
    seg.on_frame(&avc_header(0));
    seg.on_frame(&MediaFrame::parse(MediaKind::Audio, 0, Bytes::from_static(&[0xaf, 0, 0x12, 0x10])).expect("aac"));
    for r in data.chunks_exact(3) {
        let (op, a, b) = (r[0], r[1], r[2]);
        let step = i16::from_be_bytes([a, b]) >> (op >> 3).min(8);
        match op & 7 {
            5 => ts = (u32::from(a) << 24) | (u32::from(b) << 8),
            6 => {
                seg.publisher_left();
                seg.discontinuity();
                seg.on_frame(&avc_header(ts));
            }
            7 => seg.on_frame(&avc_header(ts)),
            kind => {
                ts = ts.wrapping_add_signed(i32::from(step));
                let f = match kind {
                    3 => video(ts, true),
                    4 => audio(ts),
                    _ => video(ts, false),
                };
                seg.on_frame(&f);
            }
        }
        check(&rx.borrow(), &mut seen);
    }
    seg.end_list();
    check(&rx.borrow(), &mut seen);
});
