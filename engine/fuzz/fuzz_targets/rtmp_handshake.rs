//! The server side of the RTMP handshake (`servers::rtmp::handshake::ServerHandshake`) fed whatever a client sends,
//! split into reads however the input says.
//!
//! Input: a sequence of reads, each `[u8 length][that many bytes]` (a record cut short is one last, shorter read).
//!
//! Fails (a finding) if it panics, answers more than S0+S1+S2 (3073 bytes), completes after anything but exactly
//! C0+C1+C2 (3073 bytes), hands the session anything but the bytes after them, or takes more than its byte
//! budget without failing.
#![no_main]

use libfuzzer_sys::fuzz_target;
use strom_engine::servers::rtmp::handshake::{ServerHandshake, Step, MAX_HANDSHAKE_BYTES};

fuzz_target!(|data: &[u8]| {
    let mut hs = ServerHandshake::new();
    let mut fed: Vec<u8> = Vec::new();
    let mut replied = 0usize;
    let mut rest = data;
    while let Some((&len, tail)) = rest.split_first() {
        let read = &tail[..usize::from(len).min(tail.len())];
        rest = &tail[read.len()..];
        fed.extend_from_slice(read);
        match hs.feed(read) {
            Ok(Step::Continue { reply }) => {
                replied += reply.len();
                assert!(fed.len() < 3073 || read.is_empty(), "not complete after {} bytes", fed.len());
            }
            Ok(Step::Done { reply, rest: after }) => {
                replied += reply.len();
                assert_eq!(fed.len() - after.len(), 3073, "complete after C0+C1+C2 exactly");
                assert_eq!(after, fed[3073..], "the session gets the bytes after C2");
                assert!(hs.feed(b"x").is_err(), "a complete handshake takes no more");
                break;
            }
            Err(_) => {
                assert!(fed.len() <= MAX_HANDSHAKE_BYTES || fed.len() - read.len() <= MAX_HANDSHAKE_BYTES);
                break;
            }
        }
        assert!(replied <= 3073, "answered {replied} bytes");
    }
    assert!(replied <= 3073, "answered {replied} bytes");
});
