//! `ChunkGuard`: never panics, and splitting the input in two (first byte = split point) never
//! changes the verdict, bytes/messages seen or chunk size (see `chunk_guard::fuzz_inspect`).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    strom_engine::servers::rtmp::chunk_guard::fuzz_inspect(data);
});
