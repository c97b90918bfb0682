//! The cluster wire format (`strom_engine::cluster::wire`): decoding arbitrary bytes as a cast, a request or a
//! response never panics and never allocates beyond the input; whatever decodes re-encodes to the same bytes,
//! except a `Pong` of the previous release (no ladder load), which re-encodes as today's with a default ladder load
//! appended. (`Media`'s optional send time is an `Option`, so a batch with or without it re-encodes as it came.)
#![no_main]

use libfuzzer_sys::fuzz_target;
use strom_engine::cluster::wire::{Cast, Request, Response};

/// Bytes a `Pong` of the current release adds to one of the previous release: ratio (f32 0.0), encoders, slots.
const PONG_LADDER_LOAD: [u8; 12] = [0; 12];

fuzz_target!(|data: &[u8]| {
    if let Ok(c) = Cast::decode(data.to_vec()) {
        assert_eq!(c.encode(), data, "cast re-encodes to the same bytes");
    }
    if let Ok(r) = Request::decode(data.to_vec()) {
        assert_eq!(r.encode(), data, "request re-encodes to the same bytes");
    }
    if let Ok(r) = Response::decode(data.to_vec()) {
        // Compared as bytes: f32 load values with NaN payloads are not PartialEq to themselves, bytes are.
        let bytes = r.encode();
        if bytes != data {
            let old_pong = matches!(r, Response::Pong { .. })
                && bytes.len() == data.len() + PONG_LADDER_LOAD.len()
                && bytes.starts_with(data)
                && bytes[data.len()..] == PONG_LADDER_LOAD;
            assert!(old_pong, "response re-encodes to the same bytes: {data:?} -> {bytes:?}");
        }
    }
});
