//! What strom's RTMP connection does with the bytes a client sends after the handshake
//! (`engine/src/rtmp/server.rs`, `Connection::input` / `on_results` / `on_event`).
//!
//! The connection runs on a thread with an 8 MiB stack, like a tokio worker thread in strom (`nodes/src/main.rs`).
//!
//! Input format: a sequence of socket reads, each `[u16 big-endian length][that many bytes]`; a
//! record cut short by the end of the input is one last, shorter read. Each read is first inspected
//! by a `ChunkGuard` (65 536-byte chunks, 1 MiB messages); only if the guard accepts it does it reach
//! `ServerSession::handle_input`, inside `catch_unwind` as strom does. Between reads the connection
//! accepts connect/publish/play requests (as strom does for a valid stream key), turns media into
//! `MediaFrame`s chunked for players, and encodes `onMetaData` from published metadata.
//!
//! Fails (a finding) if: the guard panics, strom's own code panics (including `accept_request`, which
//! strom calls outside its `catch_unwind`), or memory is not bounded
//! (run with `-rss_limit_mb` / `-malloc_limit_mb`). A panic *inside* `rml_rtmp` is what strom
//! contains per connection, so it is not a failure here: it is recorded (first occurrence of each
//! message + location on stderr, a running count, and the input saved to `$FUZZ_SESSION_PANICS/`
//! when that variable names a directory) so we learn which inputs the session cannot take.
#![no_main]

use std::cell::Cell;
use std::collections::HashSet;
use std::panic::{self, AssertUnwindSafe};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, Once};

use libfuzzer_sys::fuzz_target;
use rml_rtmp::sessions::{ServerSession, ServerSessionConfig, ServerSessionEvent, ServerSessionResult};
use strom_engine::formats::flv::encode_on_metadata;
use strom_engine::formats::frame::{MediaFrame, MediaKind};
use strom_engine::servers::rtmp::chunk_guard::{ChunkGuard, GuardLimits};
use strom_engine::formats::rtmp_chunk;

const LIMITS: GuardLimits = GuardLimits { max_chunk_size: 65_536, max_message_size: 1024 * 1024, max_command_size: 16 * 1024 };
/// tokio's default worker thread stack size (strom does not change it: `nodes/src/main.rs`).
const WORKER_STACK: usize = 8 << 20;
/// strom's default `rtmp.chunk_size` (what players' frames are chunked with).
const PLAYER_CHUNK_SIZE: usize = 4096;

thread_local! {
    /// Set while `ServerSession` runs: a panic there is contained (recorded), not a crash.
    static IN_SESSION: Cell<bool> = const { Cell::new(false) };
}
static HOOK: Once = Once::new();
static RUNS: AtomicU64 = AtomicU64::new(0);
static SESSION_PANICS: AtomicU64 = AtomicU64::new(0);
static SEEN: Mutex<Option<HashSet<String>>> = Mutex::new(None);

/// Wraps libfuzzer-sys' panic hook (which aborts) so that panics inside the session unwind to
/// `catch_unwind` like in strom, and are logged once per distinct message/location.
fn install_hook() {
    HOOK.call_once(|| {
        let fuzzer_hook = panic::take_hook();
        panic::set_hook(Box::new(move |info| {
            if !IN_SESSION.with(Cell::get) {
                fuzzer_hook(info);
                return;
            }
            let msg = info
                .payload()
                .downcast_ref::<&str>()
                .map(|s| (*s).to_string())
                .or_else(|| info.payload().downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "<non-string panic>".into());
            let at = info.location().map(|l| format!("{}:{}", l.file(), l.line())).unwrap_or_default();
            // One report per site and message shape (digits folded: "len is 3" and "len is 4" are one).
            let shape: String = msg.chars().map(|c| if c.is_ascii_digit() { '#' } else { c }).collect();
            let key = format!("{at}: {shape}");
            let mut seen = SEEN.lock().unwrap_or_else(|e| e.into_inner());
            if seen.get_or_insert_with(HashSet::new).insert(key) {
                // The panic location is often inside core (slice indexing): name the rml_* frame that caused it.
                let bt = std::backtrace::Backtrace::force_capture().to_string();
                let culprit = bt
                    .lines()
                    .map(str::trim)
                    .find(|l| l.starts_with("at ") && (l.contains("/rml_rtmp-") || l.contains("/rml_amf0-")))
                    .and_then(|l| {
                        l.rsplit_once("/src/").map(|(crate_dir, file)| {
                            let krate = crate_dir.rsplit('/').next().unwrap_or("?");
                            format!("{krate}/src/{file}")
                        })
                    })
                    .unwrap_or_else(|| "?".into());
                eprintln!("rtmp_session: rml_rtmp panicked (contained by strom) in {culprit}: {msg} [at {at}]");
            }
        }));
    });
}

/// Splits the input into socket reads.
fn reads(mut data: &[u8]) -> Vec<&[u8]> {
    let mut out = Vec::new();
    while !data.is_empty() {
        if data.len() < 2 {
            out.push(data);
            break;
        }
        let len = usize::from(u16::from_be_bytes([data[0], data[1]]));
        let rest = &data[2..];
        let n = len.min(rest.len());
        if n > 0 {
            out.push(&rest[..n]);
        }
        data = &rest[n..];
    }
    out
}

fn record_panic(data: &[u8]) {
    let n = SESSION_PANICS.fetch_add(1, Ordering::Relaxed) + 1;
    let runs = RUNS.load(Ordering::Relaxed);
    if n.is_power_of_two() {
        eprintln!("rtmp_session: {n} inputs so far made rml_rtmp panic (of {runs} runs)");
    }
    if let Some(dir) = std::env::var_os("FUZZ_SESSION_PANICS") {
        let name = format!("panic-{:016x}", fxhash(data));
        let _ = std::fs::write(std::path::Path::new(&dir).join(name), data);
    }
}

fn fxhash(data: &[u8]) -> u64 {
    data.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, &b| (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3))
}

/// strom's `on_media`: parse the FLV body (a malformed one is dropped), then chunk it for RTMP players as the first
/// player does; the chunked body must be the payload with one type-3 header byte between chunks.
fn on_media(kind: MediaKind, data: bytes::Bytes, ts: u32) {
    let Ok(frame) = MediaFrame::parse(kind, ts, data) else { return };
    let body = &rtmp_chunk::body(&frame, PLAYER_CHUNK_SIZE);
    let data = frame.flv_body();
    let chunks = data.len().div_ceil(PLAYER_CHUNK_SIZE).max(1);
    assert_eq!(body.len(), data.len() + chunks - 1, "one type-3 header byte between chunks");
    let mut payload = body[..PLAYER_CHUNK_SIZE.min(body.len())].to_vec();
    let mut pos = payload.len();
    while pos < body.len() {
        assert_eq!(body[pos] & 0xc0, 0xc0, "type-3 chunk header");
        let end = (pos + 1 + PLAYER_CHUNK_SIZE).min(body.len());
        payload.extend_from_slice(&body[pos + 1..end]);
        pos = end;
    }
    assert_eq!(payload, &data[..], "chunked body does not reassemble");
}

fuzz_target!(|data: &[u8]| {
    install_hook();
    RUNS.fetch_add(1, Ordering::Relaxed);
    // strom runs each connection on a tokio worker thread, whose stack strom sets to 8 MiB: run the session
    // on a thread of that size so that unbounded recursion overflows here as it would there.
    std::thread::scope(|s| {
        let worker = std::thread::Builder::new().name("rtmp-conn".into()).stack_size(WORKER_STACK);
        worker.spawn_scoped(s, || connection(data)).expect("spawn").join().expect("connection thread");
    });
});

/// One connection: strom's `Connection::input` / `on_results` / `on_event` for each read of `data`.
fn connection(data: &[u8]) {
    let mut guard = ChunkGuard::new(LIMITS);
    let Ok((mut session, _initial)) = ServerSession::new(ServerSessionConfig::new()) else {
        panic!("ServerSession::new failed");
    };
    let mut fed = 0u64;
    'reads: for read in reads(data) {
        // strom: `self.guard.inspect(bytes)?` ends the connection on a violation.
        if guard.inspect(read).is_err() {
            assert!(guard.bytes_seen() <= fed + read.len() as u64);
            break;
        }
        fed += read.len() as u64;
        assert_eq!(guard.bytes_seen(), fed, "an accepting guard consumed every byte");
        assert!(guard.peer_chunk_size() <= LIMITS.max_chunk_size);

        IN_SESSION.with(|f| f.set(true));
        let outcome = panic::catch_unwind(AssertUnwindSafe(|| session.handle_input(read)));
        IN_SESSION.with(|f| f.set(false));
        let results = match outcome {
            Err(_) => {
                record_panic(data);
                break; // strom drops the session and closes the connection
            }
            Ok(Err(_)) => break, // protocol error: connection closed
            Ok(Ok(results)) => results,
        };

        for r in results {
            let ServerSessionResult::RaisedEvent(ev) = r else { continue };
            match ev {
                // strom accepts as it meets each request (for a valid, authorised stream key), and calls
                // `accept_request` outside its `catch_unwind`: a panic there is not contained, so it is a
                // crash of this target, not a recorded session panic.
                ServerSessionEvent::ConnectionRequested { request_id, .. }
                | ServerSessionEvent::PublishStreamRequested { request_id, .. }
                | ServerSessionEvent::PlayStreamRequested { request_id, .. } => {
                    if session.accept_request(request_id).is_err() {
                        break 'reads;
                    }
                }
                ServerSessionEvent::StreamMetadataChanged { metadata, .. } => {
                    let body = encode_on_metadata(&metadata);
                    assert!(!body.is_empty(), "onMetaData always encodes");
                }
                ServerSessionEvent::VideoDataReceived { data, timestamp, .. } => {
                    on_media(MediaKind::Video, data, timestamp.value)
                }
                ServerSessionEvent::AudioDataReceived { data, timestamp, .. } => {
                    on_media(MediaKind::Audio, data, timestamp.value)
                }
                _ => {}
            }
        }
    }
}
