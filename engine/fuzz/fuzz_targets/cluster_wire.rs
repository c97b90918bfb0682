//! The cluster wire format (`strom_engine::cluster::wire`): decoding arbitrary bytes as a cast, a request or a
//! response never panics and never allocates beyond the input; whatever decodes re-encodes to the same bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use strom_engine::cluster::wire::{Cast, Request, Response};

fuzz_target!(|data: &[u8]| {
    if let Ok(c) = Cast::decode(data.to_vec()) {
        assert_eq!(c.encode(), data, "cast re-encodes to the same bytes");
    }
    if let Ok(r) = Request::decode(data.to_vec()) {
        assert_eq!(r.encode(), data, "request re-encodes to the same bytes");
    }
    if let Ok(r) = Response::decode(data.to_vec()) {
        // f32 load values: NaN payloads may not round-trip bit-exactly through PartialEq, bytes do.
        assert_eq!(r.encode(), data, "response re-encodes to the same bytes");
    }
});
