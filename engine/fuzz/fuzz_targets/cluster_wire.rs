//! The cluster wire format (`strom_engine::cluster::wire`): decoding arbitrary bytes as a cast, a request or a
//! response never panics and never allocates beyond the input; whatever decodes re-encodes to the same bytes,
//! except a `Pong` of an earlier release (no ladder load, no VOD load, or no egress), which re-encodes as today's
//! with the missing loads appended as defaults, a `Claim` answer or an `HlsState` cast of an earlier release
//! (no claim epoch), which re-encodes with epoch 0 appended, and an `HlsState` cast of a later release (bytes after
//! its stream time), which re-encodes without what this release skips. (`Media`'s optional send time and
//! `HlsState`'s stream time are `Option`s, so a message with or without them re-encodes as it came.)
#![no_main]

use libfuzzer_sys::fuzz_target;
use strom_engine::cluster::wire::{Cast, Request, Response};

/// Bytes a `Pong` of the current release adds to one without ladder load: ratio (f32 0.0), encoders, slots; then
/// VOD chunks and slots.
const PONG_LADDER_LOAD: [u8; 12] = [0; 12];
/// Bytes a `Pong` of the current release adds to one without VOD load: VOD chunks and slots.
const PONG_VOD_LOAD: [u8; 8] = [0; 8];
/// Bytes a `Pong` of the current release adds to one without egress: egress bits per second (u64).
const PONG_EGRESS: [u8; 8] = [0; 8];
/// Bytes the current release adds to a `Claim` answer or an `HlsState` cast without a claim epoch (u64 0).
const NO_EPOCH: [u8; 8] = [0; 8];

/// `encoded` is `data` with a missing trailing epoch added as 0.
fn epoch_added(data: &[u8], encoded: &[u8]) -> bool {
    encoded.len() == data.len() + NO_EPOCH.len() && encoded.starts_with(data) && encoded.ends_with(&NO_EPOCH)
}

fuzz_target!(|data: &[u8]| {
    if let Ok(c) = Cast::decode(data.to_vec()) {
        let bytes = c.encode();
        if bytes != data {
            let old_state = matches!(c, Cast::HlsState { .. }) && epoch_added(data, &bytes);
            let newer_state = matches!(c, Cast::HlsState { timeline_ms: Some(_), .. }) && data.starts_with(&bytes);
            assert!(old_state || newer_state, "cast re-encodes to the same bytes: {data:?} -> {bytes:?}");
        }
    }
    if let Ok(r) = Request::decode(data.to_vec()) {
        assert_eq!(r.encode(), data, "request re-encodes to the same bytes");
    }
    if let Ok(r) = Response::decode(data.to_vec()) {
        // Compared as bytes: f32 load values with NaN payloads are not PartialEq to themselves, bytes are.
        let bytes = r.encode();
        if bytes != data && !(matches!(r, Response::Claim { .. }) && epoch_added(data, &bytes)) {
            let tail = bytes.get(data.len()..).unwrap_or_default();
            let old_pong = matches!(r, Response::Pong { .. })
                && bytes.starts_with(data)
                && tail.iter().all(|b| *b == 0)
                && [
                    PONG_EGRESS.len(),
                    PONG_VOD_LOAD.len() + PONG_EGRESS.len(),
                    PONG_LADDER_LOAD.len() + PONG_VOD_LOAD.len() + PONG_EGRESS.len(),
                ]
                .contains(&tail.len());
            assert!(old_pong, "response re-encodes to the same bytes: {data:?} -> {bytes:?}");
        }
    }
});
