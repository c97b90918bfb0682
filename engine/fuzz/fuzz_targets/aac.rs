//! `AacConfig::parse` on arbitrary AudioSpecificConfig bytes, then `adts_header` for a few payload
//! lengths and `codec_string`: never panics, and every ADTS header written is well formed. The same bytes as
//! ADTS frames (an uploaded MPEG-TS file's audio): `split_adts` never panics, its payloads lie inside the input
//! and add up with their headers to it, and each frame's config survives `to_audio_specific_config`.
#![no_main]

use libfuzzer_sys::fuzz_target;
use strom_engine::formats::aac::{split_adts, AacConfig};

/// Largest `frame_length` an ADTS header can express (13 bits).
const MAX_ADTS_FRAME: usize = 0x1FFF;

fuzz_target!(|data: &[u8]| {
    match split_adts(data) {
        Ok(frames) => {
            let mut total = 0;
            for (cfg, payload) in &frames {
                let start = payload.as_ptr() as usize - data.as_ptr() as usize;
                assert!(start + payload.len() <= data.len(), "a payload outside the input");
                total += payload.len() + 7;
                assert!((1..=4).contains(&cfg.object_type) && cfg.sample_rate_index <= 12);
                assert_eq!(AacConfig::parse(&cfg.to_audio_specific_config()).as_ref(), Ok(cfg));
            }
            assert!(total <= data.len() && data.len() <= total + 2 * frames.len(), "headers and payloads");
        }
        Err(e) => {
            let _ = e.to_string();
        }
    }
    let cfg = match AacConfig::parse(data) {
        Ok(cfg) => cfg,
        Err(e) => {
            let _ = e.to_string();
            return;
        }
    };
    assert!(cfg.object_type > 0);
    assert!(cfg.sample_rate > 0);
    let codec = cfg.codec_string();
    assert_eq!(codec, format!("mp4a.40.{}", cfg.object_type));
    assert_eq!(cfg.samples_per_frame(), 1024);

    let from_input = data.iter().rev().take(2).fold(0usize, |acc, &b| (acc << 8) | usize::from(b));
    for len in
        [0, 1, 7, 371, 2048, MAX_ADTS_FRAME - 7, MAX_ADTS_FRAME - 6, 1 << 16, usize::MAX - 6, usize::MAX, from_input]
    {
        match cfg.adts_header(len) {
            Ok(h) => {
                assert!(len + 7 <= MAX_ADTS_FRAME, "ADTS header for an inexpressible length {len}");
                assert_eq!(h[0], 0xFF);
                assert_eq!(h[1], 0xF1, "MPEG-4, layer 0, no CRC");
                let bits = h.iter().fold(0u64, |acc, &b| (acc << 8) | u64::from(b));
                let get = |start: u32, n: u32| (bits >> (56 - start - n)) & ((1 << n) - 1);
                assert_eq!(get(18, 4), u64::from(cfg.sample_rate_index));
                assert_eq!(get(23, 3), u64::from(cfg.channel_config));
                assert_eq!(get(30, 13), (len + 7) as u64, "frame_length");
                assert_eq!(get(43, 11), 0x7FF, "buffer fullness");
                assert_eq!(get(54, 2), 0, "one raw data block");
                let profile = get(16, 2) as u8 + 1;
                match cfg.object_type {
                    1..=4 => assert_eq!(profile, cfg.object_type),
                    _ => assert_eq!(profile, 2, "HE-AAC is written as AAC-LC"),
                }
            }
            Err(e) => {
                let _ = e.to_string();
            }
        }
    }
});
