//! End-to-end robustness: hostile or broken peers against a real `strom` process.
//!
//! Every bad-input case asserts what a peer sees: the offending connection ends (or the request gets a 4xx), the
//! node stays up (`/healthz`, process alive), another stream (`live/good`, published by ffmpeg) still decodes
//! afterwards, the refusal is counted in `strom_connections_rejected_total{reason}` and logged once.

#[path = "common/abuse.rs"]
mod abuse;
mod common;

use std::net::TcpStream;
use std::time::{Duration, Instant};

use abuse::*;
use bytes::Bytes;
use common::rtmp::RtmpClient;
use common::*;
use rml_rtmp::sessions::ClientSessionEvent;

const GOOD: &str = "live/good";
/// Short RTMP timeouts so the timeout cases run in seconds.
const HS_TIMEOUT: f64 = 2.0;
const IDLE_TIMEOUT: f64 = 2.0;

/// A node with `env` and an ffmpeg publisher on `live/good`, live.
fn node_with_good_stream(env: &[(&str, &str)], src: Source) -> (Strom, Proc) {
    let s = Strom::with_env(env);
    let p = publish(&s.rtmp_url(GOOD), &src);
    s.wait_live(GOOD, Duration::from_secs(20));
    (s, p)
}

fn good_source() -> Source {
    Source { seconds: 90.0, ..Source::default() }
}

/// The node is alive and healthy, the good publisher is still connected, and the good stream decodes via `via`
/// ("rtmp" or "flv").
fn assert_good_stream_plays(s: &mut Strom, good: &mut Proc, via: &str) {
    assert!(s.is_running(), "strom exited:\n{}", s.log_tail(40));
    assert_eq!(s.get("/healthz").status, 200, "/healthz");
    assert!(good.is_running(), "the good publisher was disconnected: {}", good.log_text());
    let info = s.stream_info(GOOD).expect("good stream listed");
    assert_eq!(info["state"], "live", "{info}");
    let url = match via {
        "rtmp" => s.rtmp_url(GOOD),
        _ => s.http_url(&format!("/{GOOD}.flv")),
    };
    let (frames, stderr) = probe_video(&url, 2.0);
    assert_playable(via, &frames, 45, 426, 240, &stderr);
}

/// Sum of `strom_connections_rejected_total` over every reason.
fn rejected_total(s: &Strom) -> f64 {
    s.get("/metrics")
        .text()
        .lines()
        .filter(|l| l.starts_with("strom_connections_rejected_total{"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

fn port(s: &TcpStream) -> u16 {
    s.local_addr().unwrap().port()
}

/// Sends `bytes` on `conn`, then asserts that the server closes it within `within`,
/// counts exactly one more `reason` and logs it once for this connection. Returns the time to close.
fn expect_refused(
    s: &Strom,
    what: &str,
    mut conn: TcpStream,
    bytes: &[u8],
    reason: &str,
    within: Duration,
) -> Duration {
    let before = rejected(s, reason);
    let p = port(&conn);
    send(&mut conn, bytes);
    let took =
        wait_closed(&mut conn, within).unwrap_or_else(|| panic!("{what}: connection still open after {within:?}"));
    let after = wait_metric(
        s,
        &format!("strom_connections_rejected_total{{reason=\"{reason}\"}}"),
        before + 1.0,
        Duration::from_secs(5),
    );
    assert_eq!(after, before + 1.0, "{what}: rejected{{reason={reason}}} {before} -> {after}");
    assert_logged_once(s, p, reason);
    eprintln!("{what}: closed after {took:?} (reason {reason})");
    took
}

/// Status line and headers of a streaming response (the body is not read).
fn response_head(s: &Strom, path: &str) -> (u16, String) {
    use std::io::Read;
    let mut c = tcp(s.http);
    send(&mut c, format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes());
    c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut head = Vec::new();
    let mut b = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") && c.read(&mut b).map(|n| n == 1).unwrap_or(false) {
        head.push(b[0]);
    }
    let text = String::from_utf8_lossy(&head).to_string();
    (text.split_whitespace().nth(1).and_then(|c| c.parse().ok()).unwrap_or(0), text)
}

/// Handshake + connect (a legitimate session). The client announced chunk size 4096, so raw messages written to
/// `.stream` afterwards are framed at up to 4096 bytes a chunk.
fn connected(s: &Strom) -> RtmpClient {
    RtmpClient::connect(s.rtmp, "live").expect("rtmp connect")
}

// ---------------------------------------------------------------------------------------------------------------
// 1. RTMP
// ---------------------------------------------------------------------------------------------------------------

#[test]
fn rtmp_bad_or_stalled_handshakes_end_only_that_connection() {
    let hs = HS_TIMEOUT.to_string();
    let (mut s, mut good) = node_with_good_stream(&[("STROM_RTMP_HANDSHAKE_TIMEOUT_SECS", &hs)], good_source());
    let total_before = rejected_total(&s);

    // Random bytes instead of a handshake: a TLS ClientHello (rtmps:// at the plain port), an HTTP request, noise.
    let mut rng = Rng(0x5EED_0001);
    let mut tls = vec![0x16, 0x03, 0x01, 0x02, 0x00, 0x01];
    tls.extend(rng.bytes(2000));
    expect_refused(&s, "TLS hello as handshake", tcp(s.rtmp), &tls, "handshake", Duration::from_secs(5));
    let http = b"GET /live/good.flv HTTP/1.1\r\nHost: x\r\n\r\n".repeat(60);
    expect_refused(&s, "HTTP request as handshake", tcp(s.rtmp), &http, "handshake", Duration::from_secs(5));
    let mut noise = rng.bytes(4096);
    noise[0] = 0x07; // not version 3
    expect_refused(&s, "random bytes as handshake", tcp(s.rtmp), &noise, "handshake", Duration::from_secs(5));

    // Handshakes that never complete: silence, C0+C1 without C2, and a slow drip of C0+C1+C2 (1 byte / 200 ms) —
    // the timeout bounds the whole handshake, not each read.
    let before = rejected(&s, "handshake_timeout");
    let mut silent = tcp(s.rtmp);
    let mut half = tcp(s.rtmp);
    let mut c0c1 = vec![3u8];
    c0c1.extend(rng.bytes(1536));
    send(&mut half, &c0c1);
    let drip_addr = s.rtmp;
    let drip = std::thread::spawn(move || {
        let mut d = tcp(drip_addr);
        let p = port(&d);
        let t = Instant::now();
        let mut bytes = vec![3u8];
        bytes.extend(Rng(7).bytes(3072));
        for b in bytes {
            use std::io::Write;
            if d.write_all(&[b]).is_err() || !is_open(&mut d) {
                break;
            }
            std::thread::sleep(Duration::from_millis(150));
        }
        (t.elapsed(), p, is_open(&mut d))
    });
    let t0 = Instant::now();
    let limit = Duration::from_secs_f64(HS_TIMEOUT + 5.0);
    let silent_took = wait_closed(&mut silent, limit).expect("silent connection closed by the handshake timeout");
    let half_took = wait_closed(&mut half, limit.saturating_sub(t0.elapsed())).map(|_| t0.elapsed());
    let half_took = half_took.expect("C0+C1-only connection closed by the handshake timeout");
    let (drip_took, drip_port, drip_open) = drip.join().unwrap();
    eprintln!("handshake timeout {HS_TIMEOUT}s: silent closed after {silent_took:?}, C0C1-only {half_took:?}, drip {drip_took:?}");
    for (what, took) in [("silent", silent_took), ("C0+C1 only", half_took), ("drip", drip_took)] {
        assert!(
            took >= Duration::from_secs_f64(HS_TIMEOUT * 0.75) && took <= limit,
            "{what}: closed after {took:?}, handshake timeout is {HS_TIMEOUT}s"
        );
    }
    assert!(!drip_open, "drip connection still open");
    let after = wait_metric(
        &s,
        "strom_connections_rejected_total{reason=\"handshake_timeout\"}",
        before + 3.0,
        Duration::from_secs(5),
    );
    assert_eq!(after, before + 3.0, "handshake_timeout counted once per connection");
    assert_logged_once(&s, port(&silent), "handshake_timeout");
    assert_logged_once(&s, port(&half), "handshake_timeout");
    assert_logged_once(&s, drip_port, "handshake_timeout");
    assert_eq!(rejected_total(&s), total_before + 6.0, "nothing else was refused");

    assert_good_stream_plays(&mut s, &mut good, "rtmp");
    assert_eq!(s.metric("strom_connections_open{listener=\"rtmp\"}"), 1.0, "only the good publisher is left");
}

#[test]
fn rtmp_garbage_truncated_and_oversized_chunks_end_only_that_connection() {
    let idle = IDLE_TIMEOUT.to_string();
    let (mut s, mut good) = node_with_good_stream(
        &[
            ("STROM_RTMP_IDLE_TIMEOUT_SECS", &idle),
            ("STROM_RTMP_MAX_CHUNK_SIZE", "65536"),
            ("STROM_RTMP_MAX_MESSAGE_SIZE", "1048576"),
        ],
        good_source(),
    );
    let quick = Duration::from_secs(5);

    // Random bytes right after a valid handshake (fixed seeds: replayable). Each must be refused by the chunk
    // guard or the session parser — not left to the idle timeout.
    for seed in 1..=6u64 {
        let (mut c, _) = RtmpClient::handshake(s.rtmp).unwrap();
        let p = port(&c);
        let total = rejected_total(&s);
        let garbage = Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15)).bytes(4096);
        send(&mut c, &garbage);
        let took = wait_closed(&mut c, quick).unwrap_or_else(|| panic!("seed {seed}: still open"));
        let deadline = Instant::now() + Duration::from_secs(5);
        while rejected_total(&s) < total + 1.0 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
        assert_eq!(rejected_total(&s), total + 1.0, "seed {seed}: one refusal counted");
        let line = log_lines(&s, &[&format!("peer=127.0.0.1:{p}"), "connection ended"]);
        assert_eq!(line.len(), 1, "seed {seed}: logged once: {line:?}");
        assert!(
            ["malformed", "message_size", "chunk_size", "protocol"]
                .iter()
                .any(|r| line[0].contains(&format!("reason=\"{r}\"")) || line[0].contains(&format!("reason={r} "))),
            "seed {seed}: garbage must be refused by the parser, not by a timeout: {}",
            line[0]
        );
        eprintln!(
            "garbage seed {seed}: closed after {took:?}: {}",
            line[0].split("connection ended").nth(1).unwrap_or("")
        );
    }

    // A chunk header promising 200 bytes, 50 sent, then close: the connection task ends, nothing is counted.
    let total = rejected_total(&s);
    {
        let (mut c, _) = RtmpClient::handshake(s.rtmp).unwrap();
        send(&mut c, &chunk0(3, 20, 0, 200, &[0x05; 50]));
        std::thread::sleep(Duration::from_millis(100));
    }
    let open = wait_metric_at_most(&s, "strom_connections_open{listener=\"rtmp\"}", 1.0, quick);
    assert_eq!(open, 1.0, "the truncated connection's task ended");
    assert_eq!(rejected_total(&s), total, "a peer that simply leaves is not a refusal");

    // Stalling mid-message on a connected session: closed by rtmp.idle_timeout_secs.
    let mut c = connected(&s);
    let before = rejected(&s, "idle_timeout");
    send(&mut c.stream, &chunk0(3, 20, 0, 200, &[0x05; 50]));
    let took =
        wait_closed(&mut c.stream, Duration::from_secs_f64(IDLE_TIMEOUT + 6.0)).expect("stalled connection closed");
    eprintln!("stalled mid-message: closed after {took:?} (idle timeout {IDLE_TIMEOUT}s)");
    assert!(took >= Duration::from_secs_f64(IDLE_TIMEOUT * 0.75), "closed too early: {took:?}");
    assert_eq!(
        wait_metric(&s, "strom_connections_rejected_total{reason=\"idle_timeout\"}", before + 1.0, quick),
        before + 1.0
    );
    assert_logged_once(&s, port(&c.stream), "idle_timeout");

    // SetChunkSize above rtmp.max_chunk_size; 0 is invalid too. Exactly the limit is accepted.
    let c = connected(&s);
    expect_refused(&s, "SetChunkSize 65537", c.stream, &set_chunk_size(65_537), "chunk_size", quick);
    let c = connected(&s);
    expect_refused(&s, "SetChunkSize 0", c.stream, &set_chunk_size(0), "chunk_size", quick);
    let mut c = connected(&s);
    send(&mut c.stream, &set_chunk_size(65_536));
    let err = c.play("nope").unwrap_err();
    assert!(err.contains("NetStream.Play.StreamNotFound"), "session alive after SetChunkSize at the limit: {err}");

    // A declared message length above rtmp.max_message_size: refused from the header alone.
    let c = connected(&s);
    expect_refused(
        &s,
        "1 MiB + 1 video message",
        c.stream,
        &chunk0(6, 9, 1, 1_048_577, &[0x17, 1]),
        "message_size",
        quick,
    );
    // An AMF command above rtmp.max_command_size (16 KiB).
    let c = connected(&s);
    expect_refused(&s, "20 KiB AMF command", c.stream, &chunk0(3, 20, 0, 20 * 1024, &[2, 0, 1]), "message_size", quick);
    // Before it publishes, a connection may send no message over 64 KiB (an unauthenticated peer cannot make the
    // session reserve the publishers' limit).
    let c = connected(&s);
    expect_refused(
        &s,
        "64 KiB + 1 before publish",
        c.stream,
        &chunk0(6, 9, 1, 65_537, &[0x17, 1]),
        "message_size",
        quick,
    );
    let c = connected(&s);
    expect_refused(
        &s,
        "8 MiB video before publish",
        c.stream,
        &chunk0(6, 9, 1, 8 << 20, &[0x17, 1]),
        "message_size",
        quick,
    );
    // A publisher may send exactly the limit.
    let mut c = connected(&s);
    c.publish("at-the-limit").expect("publish");
    let refused = rejected(&s, "message_size");
    let mut big = vec![0x27, 1, 0, 0, 0];
    big.resize(1_048_576, 0xAB);
    send(&mut c.stream, &message(6, 9, 1, &big, 4096));
    assert!(wait_closed(&mut c.stream, Duration::from_millis(700)).is_none(), "a publisher's message at the limit");
    assert_eq!(rejected(&s, "message_size"), refused);

    // Interleaved chunks of two messages (rml_rtmp's single reassembly buffer would panic): refused as malformed.
    let (c, _) = RtmpClient::handshake(s.rtmp).unwrap();
    let mut bytes = chunk0(4, 9, 1, 300, &[1; 128]);
    bytes.extend(chunk0(5, 8, 1, 10, &[2; 10]));
    bytes.extend([0u8; 64]);
    expect_refused(&s, "interleaved chunks", c, &bytes, "malformed", quick);

    assert_good_stream_plays(&mut s, &mut good, "flv");
}

#[test]
fn rtmp_garbage_amf_commands_are_contained() {
    let (mut s, mut good) = node_with_good_stream(&[], good_source());
    let quick = Duration::from_secs(5);
    // rml_rtmp 0.8 panics on a type-20 command with an empty body; strom must contain it to the connection.
    let c = connected(&s);
    expect_refused(&s, "empty AMF0 command", c.stream, &[0x03, 0, 0, 0, 0, 0, 0, 20, 0, 0, 0, 0], "protocol", quick);
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("unknown AMF0 markers", vec![0xFF; 16]),
        ("truncated AMF0 string", vec![0x02, 0x00, 0x20, b'c', b'o']),
        ("command name only", vec![0x02, 0x00, 0x07, b'c', b'o', b'n', b'n', b'e', b'c', b't']),
        ("number as command name", vec![0x00, 0x40, 0, 0, 0, 0, 0, 0, 0, 0x05, 0x05]),
        (
            "invalid UTF-8 command name",
            vec![0x02, 0x00, 0x04, 0xFF, 0xFE, 0xFD, 0xFC, 0x00, 0, 0, 0, 0, 0, 0, 0, 0, 0x05],
        ),
        (
            "createStream without transaction",
            vec![0x02, 0x00, 0x0C, b'c', b'r', b'e', b'a', b't', b'e', b'S', b't', b'r', b'e', b'a', b'm'],
        ),
    ];
    for (what, body) in &cases {
        let c = connected(&s);
        expect_refused(&s, what, c.stream, &message(3, 20, 0, body, 4096), "protocol", quick);
    }
    // Deeply nested AMF0 filling rml_amf0's recursive parser up to rtmp.max_command_size (16 KiB): strict arrays
    // (5 bytes a level) and objects (4 bytes a level, three stack frames each). Must not overflow the stack,
    // which would abort the whole process.
    for (what, level) in
        [("nested strict arrays", &[0x0A, 0, 0, 0, 1][..]), ("nested objects", &[0x03, 0, 1, b'a'][..])]
    {
        let mut nested = vec![0x02, 0x00, 0x07];
        nested.extend_from_slice(b"connect");
        nested.extend_from_slice(&[0x00, 0x3F, 0xF0, 0, 0, 0, 0, 0, 0]);
        while nested.len() + level.len() <= 16 * 1024 {
            nested.extend_from_slice(level);
        }
        let c = connected(&s);
        expect_refused(&s, what, c.stream, &message(3, 20, 0, &nested, 4096), "protocol", quick);
        assert!(s.is_running(), "{what} killed the node:\n{}", s.log_tail(20));
    }
    assert_good_stream_plays(&mut s, &mut good, "rtmp");
}

#[test]
fn rtmp_malformed_sequence_headers_are_dropped_not_fatal() {
    let (mut s, mut good) = node_with_good_stream(&[("STROM_HLS_SEGMENT_DURATION_SECS", "1")], good_source());
    let malformed = "strom_frames_dropped_total{reason=\"malformed\"}";
    let before = s.metric(malformed);
    let mut bad = connected(&s);
    bad.publish("bad").expect("publish accepted");
    // AVC sequence header: configurationVersion 1 then nothing (no profile, no SPS/PPS).
    bad.send_video(Bytes::from_static(&[0x17, 0x00, 0, 0, 0, 0x01, 0x64]), 0).unwrap();
    // AAC AudioSpecificConfig: object type 31 (escape) with no bits left.
    bad.send_audio(Bytes::from_static(&[0xAF, 0x00, 0xFF]), 0).unwrap();
    // An AVC sequence header claiming 31 SPS of 0xFFFF bytes.
    bad.send_video(Bytes::from_static(&[0x17, 0x00, 0, 0, 0, 0x01, 0x64, 0x00, 0x1F, 0xFF, 0xFF, 0xFF, 0xFF]), 0)
        .unwrap();
    // Frames: keyframes whose NAL length prefix overruns the tag, tags too short for their header.
    for i in 0..60u32 {
        let ts = i * 33;
        bad.send_video(Bytes::from(vec![0x17, 0x01, 0, 0, 0, 0x00, 0x00, 0x40, 0x00, 0x65, 0x88]), ts).unwrap();
        bad.send_video(Bytes::from_static(&[0x17]), ts).unwrap();
        bad.send_audio(Bytes::from_static(&[0xAF, 0x01, 0x21]), ts).unwrap();
        bad.send_audio(Bytes::from_static(&[0xAF]), ts).unwrap();
    }
    let after = wait_metric(&s, malformed, before + 2.0, Duration::from_secs(5));
    eprintln!("frames_dropped{{malformed}}: {before} -> {after}");
    assert!(after >= before + 2.0, "malformed AVC and AAC configs are counted: {before} -> {after}");
    // The bad stream has no HLS segments (and the playlist request is a 404, not a 5xx).
    let hls = s.get("/live/bad/index.m3u8");
    assert!(
        hls.status == 404 || (hls.status == 200 && !hls.text().contains("#EXTINF")),
        "{} {}",
        hls.status,
        hls.text()
    );
    // The publish continues: the stream is listed, live, without a codec anyone could parse; HTTP-FLV still
    // answers for it.
    let info = s.stream_info("live/bad").expect("bad stream listed");
    assert_eq!(info["state"], "live", "{info}");
    assert!(info["video_codec"].is_null() && info["audio_codec"].is_null(), "{info}");
    assert_eq!(response_head(&s, "/live/bad.flv").0, 200);
    let warned = log_lines(&s, &["stream=live/bad", "HLS segmenter dropped a frame"]);
    assert_eq!(warned.len(), 1, "the drop is logged once per stream: {warned:?}");
    assert_good_stream_plays(&mut s, &mut good, "flv");
    // The good stream's HLS is unaffected.
    s.wait_segments(GOOD, 2, Duration::from_secs(10));
}

#[test]
fn rtmp_play_of_an_unknown_stream_is_refused_with_stream_not_found() {
    let s = Strom::start();
    let mut c = connected(&s);
    let err = c.play("nope").unwrap_err();
    assert!(err.contains("NetStream.Play.StreamNotFound"), "{err}");
    // Then the server closes the connection.
    let deadline = Instant::now() + Duration::from_secs(5);
    while !c.closed && Instant::now() < deadline {
        c.next_event(Duration::from_millis(200));
    }
    assert!(c.closed, "connection closed after StreamNotFound");
    assert_eq!(
        wait_metric(&s, "strom_connections_rejected_total{reason=\"not_found\"}", 1.0, Duration::from_secs(5)),
        1.0
    );
    // An invalid name is refused the same way (reason bad_name).
    let mut c = connected(&s);
    let err = c.play("../../etc/passwd").unwrap_err();
    assert!(err.contains("NetStream.Play.StreamNotFound"), "{err}");
    assert_eq!(
        wait_metric(&s, "strom_connections_rejected_total{reason=\"bad_name\"}", 1.0, Duration::from_secs(5)),
        1.0
    );
    assert_eq!(s.get("/healthz").status, 200);
}

/// A peer that sends pings and never reads the answers: once they fill the socket buffers, a write of them stays
/// blocked and `rtmp.write_timeout_secs` closes the connection (it used to hold its task forever, escaping the
/// idle timeout and shutdown). Counted as `write_timeout`; the node goes on.
#[test]
fn an_rtmp_peer_that_sends_pings_and_never_reads_is_closed_by_the_write_timeout() {
    let s = Strom::with_env(&[("STROM_RTMP_WRITE_TIMEOUT_SECS", "2"), ("STROM_RTMP_IDLE_TIMEOUT_SECS", "120")]);
    let (mut c, _) = RtmpClient::handshake(s.rtmp).expect("handshake");
    c.set_write_timeout(Some(Duration::from_millis(200))).unwrap();
    // 10,000 user control PingRequests (type 4, event 6) per write.
    let mut pings = Vec::new();
    for i in 0..10_000u32 {
        let t = i.to_be_bytes();
        pings.extend(message(2, 4, 0, &[0, 6, t[0], t[1], t[2], t[3]], 128));
    }
    let t0 = Instant::now();
    let (mut sent, mut off) = (0usize, 0usize);
    let closed_after = loop {
        match std::io::Write::write(&mut c, &pings[off..]) {
            Ok(0) => break t0.elapsed(),
            Ok(n) => {
                sent += n;
                off = (off + n) % pings.len();
            }
            Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {}
            Err(_) => break t0.elapsed(),
        }
        assert!(t0.elapsed() < Duration::from_secs(60), "still open after {sent} bytes of pings");
    };
    eprintln!("closed after {closed_after:?} and {sent} bytes of pings");
    assert_eq!(
        wait_metric(&s, "strom_connections_rejected_total{reason=\"write_timeout\"}", 1.0, Duration::from_secs(5)),
        1.0
    );
    wait_metric_at_most(&s, "strom_connections_open{listener=\"rtmp\"}", 0.0, Duration::from_secs(5));
    assert_eq!(s.get("/healthz").status, 200);
}

// ---------------------------------------------------------------------------------------------------------------
// 2. HTTP
// ---------------------------------------------------------------------------------------------------------------

/// Time limits on what HTTP clients send (`http.header_timeout_secs` 2 s, `http.idle_timeout_secs` 3 s here):
/// an idle keep-alive connection, a first head dribbled a byte a second, a later head dribbled the same way and a
/// request body that stalls are each closed within their limit, and `strom_connections_open{listener="http"}`
/// is back to 0 (before, the first three were held forever). A request whose handler waits longer than the idle
/// limit (a blocking LL-HLS reload held 4 s) is answered, not cut.
#[test]
fn http_connections_that_idle_dribble_or_stall_are_closed_within_their_timeouts() {
    let mut s = Strom::with_env(&[
        ("STROM_HTTP_HEADER_TIMEOUT_SECS", "2"),
        ("STROM_HTTP_IDLE_TIMEOUT_SECS", "3"),
        ("STROM_HLS_SEGMENT_DURATION_SECS", "2"),
    ]);
    let mut good = publish(&s.rtmp_url(GOOD), &good_source());
    s.wait_live(GOOD, Duration::from_secs(20));
    let head = b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n";
    let answered = |c: &mut TcpStream| {
        let mut buf = [0u8; 512];
        c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let n = std::io::Read::read(c, &mut buf).unwrap_or(0);
        assert!(buf[..n].starts_with(b"HTTP/1.1 200"), "{:?}", String::from_utf8_lossy(&buf[..n]));
    };
    // Each case on its own thread: (what, limit, how long it took to be closed).
    let dribble = |c: &mut TcpStream, bytes: &'static [u8]| {
        let mut w = c.try_clone().unwrap();
        std::thread::spawn(move || {
            for b in bytes {
                if std::io::Write::write_all(&mut w, &[*b]).is_err() {
                    return;
                }
                std::thread::sleep(Duration::from_secs(1));
            }
        });
    };
    let http = s.http;
    // Live HLS is answered by the listener's own keep-alive loop, not hyper: the same limits.
    let hls_head: &'static [u8] = format!("GET /{GOOD}/index.m3u8 HTTP/1.1\r\nHost: x\r\n\r\n").leak().as_bytes();
    let cases: Vec<std::thread::JoinHandle<(&str, f64, Option<Duration>)>> = vec![
        std::thread::spawn(move || {
            let mut c = tcp(http);
            send(&mut c, head);
            answered(&mut c);
            ("idle keep-alive", 3.0, wait_closed(&mut c, Duration::from_secs(20)))
        }),
        std::thread::spawn(move || {
            let mut c = tcp(http);
            send(&mut c, hls_head);
            answered(&mut c);
            ("idle keep-alive after live HLS", 3.0, wait_closed(&mut c, Duration::from_secs(20)))
        }),
        std::thread::spawn(move || {
            let mut c = tcp(http);
            send(&mut c, hls_head);
            answered(&mut c);
            dribble(&mut c, hls_head);
            ("later head dribbled after live HLS", 3.0, wait_closed(&mut c, Duration::from_secs(20)))
        }),
        std::thread::spawn(move || {
            let mut c = tcp(http);
            dribble(&mut c, b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n");
            ("first head dribbled", 2.0, wait_closed(&mut c, Duration::from_secs(20)))
        }),
        std::thread::spawn(move || {
            let mut c = tcp(http);
            send(&mut c, head);
            answered(&mut c);
            dribble(&mut c, b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n");
            ("later head dribbled", 3.0, wait_closed(&mut c, Duration::from_secs(20)))
        }),
        std::thread::spawn(move || {
            let mut c = tcp(http);
            send(
                &mut c,
                b"POST /api/v1/streams/live/x/record HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n0123456789",
            );
            ("stalled body", 3.0, wait_closed(&mut c, Duration::from_secs(20)))
        }),
    ];
    for case in cases {
        let (what, limit, closed) = case.join().unwrap();
        eprintln!("{what}: closed after {closed:?} (limit {limit} s)");
        let closed = closed.unwrap_or_else(|| panic!("{what}: still open after 20 s"));
        assert!(closed <= Duration::from_secs_f64(limit + 2.0), "{what}: closed after {closed:?}, limit {limit} s");
    }
    wait_metric_at_most(&s, "strom_connections_open{listener=\"http\"}", 0.0, Duration::from_secs(5));
    // A handler that waits past the idle limit: right after a segment opens, a blocking reload for the one after
    // it (about 4 s).
    let open = |s: &Strom| {
        let text = s.get(&format!("/{GOOD}/index.m3u8")).text();
        text.lines()
            .find_map(|l| l.strip_prefix("#EXT-X-MEDIA-SEQUENCE:"))
            .and_then(|v| v.parse::<u64>().ok())
            .map(|first| first + text.matches("#EXTINF").count() as u64)
            .expect("a media sequence")
    };
    let before = open(&s);
    while open(&s) == before {
        std::thread::sleep(Duration::from_millis(20));
    }
    let next = open(&s) + 1;
    let t = Instant::now();
    let r = s.get(&format!("/{GOOD}/index.m3u8?_HLS_msn={next}"));
    assert_eq!(r.status, 200, "held {:?}: {}", t.elapsed(), r.text());
    eprintln!("blocking reload answered after {:?}", t.elapsed());
    assert!(t.elapsed() > Duration::from_secs(3), "the reload waited past the idle limit");
    assert_good_stream_plays(&mut s, &mut good, "flv");
}

/// One address may hold `limits.max_connections_per_ip` connections (RTMP and HTTP together): its next one is
/// refused and counted, while another address plays and `/healthz` answers; its slots come back as its
/// connections close.
#[test]
fn one_address_is_capped_by_max_connections_per_ip_while_others_play() {
    let env = [
        ("STROM_LIMITS_MAX_CONNECTIONS_PER_IP", "20"),
        ("STROM_HTTP_HEADER_TIMEOUT_SECS", "60"),
        ("STROM_RTMP_HANDSHAKE_TIMEOUT_SECS", "60"),
    ];
    let (mut s, mut good) = node_with_good_stream(&env, good_source());
    // The good publisher and the players connect from 127.0.0.1; the flood comes from 127.0.0.2.
    let flood = std::net::Ipv4Addr::new(127, 0, 0, 2);
    let mut held: Vec<TcpStream> =
        (0..10).map(|_| tcp_from(flood, s.rtmp)).chain((0..10).map(|_| tcp_from(flood, s.http))).collect();
    std::thread::sleep(Duration::from_millis(300));
    assert!(held.iter_mut().all(is_open), "20 connections from one address are allowed");
    let before = rejected(&s, "max_connections_per_ip");
    for listener in [s.http, s.rtmp] {
        let mut extra = tcp_from(flood, listener);
        assert!(wait_closed(&mut extra, Duration::from_secs(5)).is_some(), "the 21st connection is refused");
    }
    let series = "strom_connections_rejected_total{reason=\"max_connections_per_ip\"}";
    assert_eq!(wait_metric(&s, series, before + 2.0, Duration::from_secs(5)), before + 2.0);
    assert_eq!(s.get("/healthz").status, 200);
    assert_good_stream_plays(&mut s, &mut good, "flv");
    // Closed: the address gets its slots back.
    // (Each slot returns when its connection's task sees the close: on a loaded machine, not at once.)
    drop(held);
    let t = Instant::now();
    loop {
        std::thread::sleep(Duration::from_millis(200));
        let mut again = tcp_from(flood, s.http);
        send(&mut again, b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
        let mut answer = String::new();
        let _ = std::io::Read::read_to_string(&mut again, &mut answer);
        if answer.starts_with("HTTP/1.1 200") {
            break;
        }
        assert!(t.elapsed() < Duration::from_secs(10), "the address never got its slots back: {answer:?}");
    }
}

#[test]
fn http_traversal_bad_names_and_overlong_paths_get_4xx() {
    let (mut s, mut good) = node_with_good_stream(&[], good_source());
    let leaked = |body: &[u8]| {
        let t = String::from_utf8_lossy(body);
        t.contains("root:") || t.contains("/bin/") || t.contains("[package]")
    };
    // (path, expected status)
    let long_ts = format!("/live/good/{}.ts", "a".repeat(200));
    let cases: Vec<(String, u16)> = [
        ("/live/../../etc/passwd", 404),
        ("/live/%2e%2e/x.flv", 400),
        // Percent-encoded media paths are refused outright (a decoded name would dodge the play checks).
        ("/live/%2e%2e/%2e%2e/x.flv", 400),
        ("/live/..%2f..%2fetc/index.m3u8", 400),
        ("/%2e%2e/%2e%2e/etc/passwd", 400),
        ("/live/%2e%2e%2f%2e%2e%2fetc%2fpasswd.flv", 400),
        ("/live/good/..%2f..%2f..%2fetc%2fpasswd", 400),
        ("/live/good/../../../etc/passwd", 404),
        ("/live/good/%2e%2e%2f%2e%2e%2fCargo.toml", 400),
        ("/live/a%20b.flv", 400),
        ("/live/a%00b.flv", 400),
        ("/live/good%00/index.m3u8", 400),
        ("/live/good/seg%00.ts", 400),
        ("/live/.hidden.flv", 400),
        ("/live/good/nope.txt", 400),
        ("/live/good/seg_1.ts", 400),
        ("/live/good/index.m3u8.ts", 404),
        (long_ts.as_str(), 400),
        ("/live/good/nope-99999.ts", 404),
        ("/live/other.flv", 404),
        ("/", 404),
        ("/nope", 404),
        ("/a/b/c/d", 404),
        ("/api/v2/streams", 404),
        ("/live/good.mp4", 404),
    ]
    .into_iter()
    .map(|(p, c)| (p.to_string(), c))
    .collect();
    for (path, want) in &cases {
        let r = s.get(path);
        assert_eq!(r.status, *want, "GET {path}: {}", r.text());
        assert!(!leaked(&r.body), "GET {path} leaked file contents: {}", r.text());
    }
    // Raw request lines with a space or a NUL in the path, and a non-GET method: 4xx from the HTTP layer.
    for raw in [
        "GET /live/a b.flv HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        "GET /live/a\0b.flv HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        "POST /live/good.flv HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
        "DELETE /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        "GET ../../etc/passwd HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    ] {
        match http_request(s.http, raw) {
            Ok(r) => {
                assert!((400..500).contains(&r.status), "{raw:?}: status {}", r.status);
                assert!(!leaked(&r.body), "{raw:?} leaked: {}", r.text());
            }
            // A request the parser cannot read may also just be closed; never answered with a 5xx or a file.
            Err(e) => eprintln!("{raw:?}: connection closed without a response ({e})"),
        }
    }
    // Overlong path: 414 at http.max_path_len + 1, counted and logged; exactly the limit is routed normally.
    let max = 1024;
    let at_limit = format!("/x/{}", "a".repeat(max - 3));
    assert_eq!(at_limit.len(), max);
    assert_eq!(s.get(&at_limit).status, 404, "a path of exactly http.max_path_len is routed");
    let before = rejected(&s, "path_too_long");
    for n in [max + 1, 8 * 1024] {
        let p = format!("/live/{}.flv", "a".repeat(n - 10));
        assert_eq!(p.len(), n);
        let r = s.get(&p);
        assert_eq!(r.status, 414, "path of {n} bytes");
    }
    assert_eq!(rejected(&s, "path_too_long"), before + 2.0);
    assert_eq!(log_lines(&s, &["request refused: path too long"]).len(), 2, "logged once per request");
    // Beyond hyper's own URI limit (64 KiB) hyper answers 414 itself (not counted by strom: see the report).
    let huge = format!("/live/{}.flv", "a".repeat(100 * 1024));
    assert_eq!(s.get(&huge).status, 414);
    // CORS preflight.
    let r = http_request(
        s.http,
        "OPTIONS /live/good.flv HTTP/1.1\r\nHost: x\r\nOrigin: https://example.com\r\nAccess-Control-Request-Method: GET\r\nConnection: close\r\n\r\n",
    )
    .unwrap();
    assert_eq!(r.status, 204);
    assert_eq!(r.header("access-control-allow-origin"), Some("*"));
    assert!(r.header("access-control-allow-methods").unwrap_or("").contains("GET"), "{:?}", r.headers);
    assert!(r.header("access-control-max-age").is_some());

    assert_good_stream_plays(&mut s, &mut good, "flv");
}

// ---------------------------------------------------------------------------------------------------------------
// 3. Slow readers
// ---------------------------------------------------------------------------------------------------------------

#[test]
fn slow_readers_are_disconnected_and_do_not_hurt_a_good_player() {
    const SLOW_TIMEOUT: f64 = 3.0;
    const N_RTMP: usize = 8;
    const N_FLV: usize = 8;
    /// How long the good player and the lagging reader run.
    const GOOD_SECS: f64 = 12.0;
    /// Node RSS bound with 16 stalled players (measured: ~12.5 MiB peak from an ~8.6 MiB base).
    const RSS_BOUND: u64 = 150 << 20;
    let t = SLOW_TIMEOUT.to_string();
    let (mut s, mut good) = node_with_good_stream(
        &[("STROM_STREAM_SLOW_PLAYER_TIMEOUT_SECS", &t), ("STROM_STREAM_PLAYER_QUEUE_FRAMES", "64")],
        Source { bitrate_k: 1500, ..good_source() },
    );
    let rss_base = s.rss();
    let dropped_before = s.metric("strom_frames_dropped_total{reason=\"slow_player\"}");

    // The good player: reads every frame as it comes, recording when each video frame arrived.
    let addr = s.rtmp;
    let player = std::thread::spawn(move || {
        let mut c = RtmpClient::connect(addr, "live").expect("good player connects");
        c.play("good").expect("good player plays");
        let t0 = Instant::now();
        let mut arrivals: Vec<(f64, u32)> = Vec::new();
        while t0.elapsed() < Duration::from_secs_f64(GOOD_SECS) && !c.closed {
            if let Some(ClientSessionEvent::VideoDataReceived { data, timestamp }) =
                c.next_event(Duration::from_millis(500))
            {
                if data.get(1) == Some(&1) {
                    arrivals.push((t0.elapsed().as_secs_f64(), timestamp.value));
                }
            }
        }
        (arrivals, c.closed)
    });
    // Slow players: they ask, then never read (small receive window and MSS, as on a congested mobile link).
    let opened = Instant::now();
    let mut slow_rtmp: Vec<TcpStream> = (0..N_RTMP)
        .map(|_| rtmp_play_then_stall(small_window_tcp(s.rtmp, 4096), "live", "good").expect("slow player plays"))
        .collect();
    let mut slow_flv: Vec<TcpStream> = (0..N_FLV)
        .map(|_| {
            let mut c = small_window_tcp(s.http, 4096);
            send(&mut c, format!("GET /{GOOD}.flv HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes());
            c
        })
        .collect();
    assert_eq!(
        wait_metric(&s, "strom_viewers{protocol=\"flv\"}", N_FLV as f64, Duration::from_secs(5)),
        N_FLV as f64,
        "every slow HTTP-FLV player attached"
    );

    let (mut rss_peak, mut fps_seen, mut rtmp_done, mut flv_done) = (0u64, Vec::new(), None, None);
    let deadline = opened + Duration::from_secs(30);
    let watch = Duration::from_secs_f64(GOOD_SECS);
    while (rtmp_done.is_none() || flv_done.is_none() || opened.elapsed() < watch) && Instant::now() < deadline {
        rss_peak = rss_peak.max(s.rss());
        if opened.elapsed() > Duration::from_secs(3) {
            if let Some(fps) = s.stream_info(GOOD).and_then(|i| i["fps"].as_f64()) {
                fps_seen.push(fps);
            }
        }
        if rtmp_done.is_none() && rejected(&s, "slow_player") >= N_RTMP as f64 {
            rtmp_done = Some(opened.elapsed());
        }
        // Only the metrics request itself is left open on HTTP once the slow FLV players are gone.
        if flv_done.is_none() && s.metric("strom_connections_open{listener=\"http\"}") <= 1.0 {
            flv_done = Some(opened.elapsed());
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    let dropped = s.metric("strom_frames_dropped_total{reason=\"slow_player\"}") - dropped_before;
    let (arrivals, good_closed) = player.join().unwrap();
    let ingest = s.stream_info(GOOD).map(|i| i["ingest_bitrate"].clone());
    eprintln!(
        "slow readers: {N_RTMP} rtmp disconnected after {rtmp_done:?}, {N_FLV} flv after {flv_done:?} (timeout \
         {SLOW_TIMEOUT}s); rss base {:.1} MiB peak {:.1} MiB; ingest fps {:?}..{:?} bitrate {ingest:?}; \
         frames_dropped{{slow_player}} +{dropped}",
        rss_base as f64 / 1048576.0,
        rss_peak as f64 / 1048576.0,
        fps_seen.iter().cloned().fold(f64::INFINITY, f64::min),
        fps_seen.iter().cloned().fold(0.0, f64::max),
    );
    let rtmp_done =
        rtmp_done.unwrap_or_else(|| panic!("slow RTMP players not all disconnected: {}", rejected(&s, "slow_player")));
    let flv_done = flv_done.unwrap_or_else(|| {
        panic!("slow HTTP-FLV players not all disconnected: {}", s.metric("strom_connections_open{listener=\"http\"}"))
    });
    let bound = Duration::from_secs_f64(SLOW_TIMEOUT + 7.0);
    assert!(rtmp_done <= bound && flv_done <= bound, "slow players must go within {bound:?}");
    assert!(rtmp_done >= Duration::from_secs_f64(SLOW_TIMEOUT), "disconnected before the timeout could elapse");
    assert!(flv_done >= Duration::from_secs_f64(SLOW_TIMEOUT), "disconnected before the timeout could elapse");
    let slow = (N_RTMP + N_FLV) as f64;
    assert_eq!(s.metric("strom_slow_player_disconnects_total"), slow, "every slow player, not the good one");
    assert_eq!(rejected(&s, "slow_player"), N_RTMP as f64);
    assert_eq!(log_lines(&s, &["connection ended", "slow_player"]).len(), N_RTMP, "each slow RTMP player logged once");
    // What the slow peers see when they finally read: the rest of their buffer, then EOF or a reset.
    for c in &mut slow_rtmp {
        assert!(wait_closed(c, Duration::from_secs(10)).is_some(), "slow RTMP socket closed");
    }
    for c in &mut slow_flv {
        assert!(wait_closed(c, Duration::from_secs(10)).is_some(), "slow HTTP-FLV socket closed");
    }
    assert_eq!(s.metric("strom_viewers{protocol=\"flv\"}"), 0.0);
    // The good player got every frame at the real-time rate.
    assert!(!good_closed, "the good player was disconnected");
    let steady = arrivals.iter().filter(|a| a.0 >= 2.0).count();
    let fps = steady as f64 / (GOOD_SECS - 2.0);
    let max_gap = arrivals.windows(2).map(|w| w[1].0 - w[0].0).fold(0.0, f64::max);
    eprintln!(
        "good player: {} video frames in {GOOD_SECS}s, steady {fps:.1} fps, largest gap {max_gap:.3}s",
        arrivals.len()
    );
    assert!((26.0..=34.0).contains(&fps), "good player received {fps:.1} fps while slow players stalled");
    assert!(max_gap < 1.0, "good player stalled for {max_gap:.3}s");
    for w in arrivals.windows(2) {
        assert!(w[1].1 > w[0].1, "good player timestamps advance");
    }
    // Ingest kept its rate, memory stayed bounded.
    assert!(fps_seen.len() >= 10, "{fps_seen:?}");
    assert!(fps_seen.iter().all(|f| (25.0..=35.0).contains(f)), "ingest fps {fps_seen:?}");
    assert!(rss_peak < RSS_BOUND, "RSS peaked at {} MiB", rss_peak >> 20);
    assert_good_stream_plays(&mut s, &mut good, "flv");
}

/// An HTTP-FLV player that keeps reading, only much slower than the stream (~16% of its rate), falls behind the
/// 64-frame ring and skips to keyframes (`frames_dropped{slow_player}` grows) while the node and other players are
/// unaffected. The player socket's send buffer is capped (`stream.player_send_buffer_kib`, here 32 KiB, a second of
/// this stream), so the kernel cannot absorb the lag instead of the ring. Whether the player is *also* disconnected later depends
/// on when Linux wakes the blocked writer, so that is not asserted.
#[test]
fn http_flv_player_reading_slower_than_the_stream_skips_frames() {
    const SECS: f64 = 10.0;
    /// ~16% of the ~190 kB/s stream, read in 50 ms steps.
    const BYTES_PER_SEC: usize = 30_000;
    let (mut s, mut good) = node_with_good_stream(
        &[
            ("STROM_STREAM_SLOW_PLAYER_TIMEOUT_SECS", "3"),
            ("STROM_STREAM_PLAYER_QUEUE_FRAMES", "64"),
            ("STROM_STREAM_PLAYER_SEND_BUFFER_KIB", "32"),
        ],
        Source { bitrate_k: 1500, ..good_source() },
    );
    let dropped = "strom_frames_dropped_total{reason=\"slow_player\"}";
    let before = s.metric(dropped);
    let mut c = small_window_tcp(s.http, 16 * 1024);
    send(&mut c, format!("GET /{GOOD}.flv HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes());
    let (read, closed) = paced_read(&mut c, BYTES_PER_SEC, SECS);
    let skipped = s.metric(dropped) - before;
    eprintln!(
        "flv: steady reader at {BYTES_PER_SEC} B/s read {read} B in {SECS}s, closed {closed}, skipped {skipped} frames"
    );
    assert!(read as f64 > BYTES_PER_SEC as f64 * SECS * 0.5, "the reader got data: {read} B");
    assert!(skipped > 0.0, "the slow reader skipped frames (closed: {closed})");
    assert_good_stream_plays(&mut s, &mut good, "flv");
}

// ---------------------------------------------------------------------------------------------------------------
// 4. Limits
// ---------------------------------------------------------------------------------------------------------------

#[test]
fn max_connections_refuses_the_sixth_and_recovers() {
    let (mut s, mut good) = node_with_good_stream(&[("STROM_LIMITS_MAX_CONNECTIONS", "5")], good_source());
    // Let the HTTP connections of wait_live release their permits.
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(rejected(&s, "max_connections"), 0.0);
    // The publisher holds one; four players fill the node.
    let mut held: Vec<RtmpClient> = (0..4).map(|_| connected(&s)).collect();
    // The sixth: TCP is accepted by the kernel, then closed at once without a handshake reply.
    let mut sixth = tcp(s.rtmp);
    let mut c0c1 = vec![3u8];
    c0c1.extend(Rng(3).bytes(1536));
    send(&mut sixth, &c0c1);
    let took = wait_closed(&mut sixth, Duration::from_secs(3)).expect("sixth connection closed");
    eprintln!("6th connection closed after {took:?}");
    assert!(took < Duration::from_secs(2), "closed at once, not after a timeout: {took:?}");
    assert!(RtmpClient::connect(s.rtmp, "live").is_err(), "a full RTMP session is refused too");
    // HTTP shares the limit, but probes have slots of their own: the kubelet's probes still pass, anything else
    // gets 503.
    for _ in 0..3 {
        assert_eq!(http_get(s.http, "/healthz").expect("healthz while full").status, 200);
        assert_eq!(http_get(s.http, "/readyz").expect("readyz while full").status, 200);
    }
    let r = http_get(s.http, "/api/v1/streams").expect("an answer while full");
    assert_eq!(r.status, 503, "not a probe: refused while full");
    // The held connections are unaffected: one still gets an answer to a play request (which then closes it).
    let err = held[0].play("nope").unwrap_err();
    assert!(err.contains("StreamNotFound"), "{err}");
    drop(held.drain(..2));
    std::thread::sleep(Duration::from_millis(300));
    let refused =
        wait_metric(&s, "strom_connections_rejected_total{reason=\"max_connections\"}", 3.0, Duration::from_secs(5));
    assert_eq!(refused, 3.0, "three refusals counted");
    // Logged once for the three (a flood is logged every 10 s; every refusal is counted).
    assert_eq!(log_lines(&s, &["connection refused: limits.max_connections reached"]).len(), 1, "logged once");
    // Capacity is back: a new RTMP session works, and so does a player of the good stream.
    let mut again = connected(&s);
    assert!(again.play("nope").unwrap_err().contains("StreamNotFound"));
    drop(again);
    drop(held);
    std::thread::sleep(Duration::from_millis(300));
    assert_good_stream_plays(&mut s, &mut good, "flv");
}

/// `limits.max_streams`: the stream one past the node's maximum is refused with a clear error (the publisher gets
/// `NetStream.Publish.Failed`, the log and `strom_connections_rejected_total{reason="max_streams"}` say why);
/// once a stream ends and is retired, a new one is accepted again.
#[test]
fn the_stream_one_past_max_streams_is_refused() {
    let s = Strom::with_env(&[
        ("STROM_LIMITS_MAX_STREAMS", "2"),
        ("STROM_STREAM_RECONNECT_GRACE_SECS", "0.2"),
        ("STROM_STREAM_ENDED_LINGER_SECS", "0.2"),
    ]);
    let mut a = connected(&s);
    a.publish("one").expect("first stream");
    let mut b = connected(&s);
    b.publish("two").expect("second stream");
    let mut c = connected(&s);
    let err = c.publish("three").unwrap_err();
    assert!(err.contains("NetStream.Publish.Failed"), "{err}");
    assert_eq!(rejected(&s, "max_streams"), 1.0);
    assert_eq!(log_lines(&s, &["limits.max_streams reached"]).len(), 1, "said once, with the limit");
    // The first two are untouched; when one ends, the third may publish.
    drop(a);
    let t = Instant::now();
    loop {
        let mut d = connected(&s);
        match d.publish("three") {
            Ok(()) => break,
            Err(e) => assert!(t.elapsed() < Duration::from_secs(10), "never admitted: {e}"),
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    drop(b);
}

/// Over its memory budget (`limits.memory_budget_mb`, here 1 MiB, so the node is over it from the start), a node
/// refuses new streams with a clear error and is not ready, while liveness stays 200 (the kubelet must not kill a
/// node for carrying what it has).
#[test]
fn over_the_memory_budget_new_streams_are_refused_and_readiness_is_false() {
    let s = Strom::with_env(&[("STROM_LIMITS_MEMORY_BUDGET_MB", "1")]);
    assert_eq!(s.metric("strom_memory_budget_bytes"), 1048576.0);
    let mut c = connected(&s);
    let err = c.publish("heavy").unwrap_err();
    assert!(err.contains("NetStream.Publish.Failed"), "{err}");
    assert_eq!(rejected(&s, "memory_budget"), 1.0);
    let said = log_lines(&s, &["stream refused: over the memory budget"]);
    assert_eq!(said.len(), 1, "{}", s.log_text());
    assert!(said[0].contains("budget_mib=1"), "{}", said[0]);
    let r = s.get("/readyz");
    assert!(r.status == 503 && r.text().contains("over the memory budget"), "{} {}", r.status, r.text());
    assert_eq!(s.get("/healthz").status, 200);
    // A node without a budget (no cgroup limit here, or 85 % of it) takes the same publish.
    let roomy = Strom::with_env(&[("STROM_LIMITS_MEMORY_BUDGET_MB", "65536")]);
    connected(&roomy).publish("heavy").expect("under the budget");
}

// ---------------------------------------------------------------------------------------------------------------
// GOP policy
// ---------------------------------------------------------------------------------------------------------------

/// A 30 s GOP: the GOP cache stays under `stream.gop_cache_max_secs` (10 s), and a player joining when the cache
/// has been dropped starts at the next keyframe, within 31 s of joining (nginx-rtmp's way), not never.
#[test]
fn a_thirty_second_gop_keeps_the_cache_under_its_cap_and_players_start_at_the_next_keyframe() {
    let s = Strom::start();
    let src = Source { gop_secs: 30.0, seconds: 75.0, audio: false, ..Source::default() };
    let _p = publish(&s.rtmp_url("live/longgop"), &src);
    s.wait_live("live/longgop", Duration::from_secs(20));
    // Past the cap: the cache has been dropped.
    let t = Instant::now();
    let mut max_cached = 0.0f64;
    while t.elapsed() < Duration::from_secs(13) {
        let info = s.stream_info("live/longgop").expect("listed");
        max_cached = max_cached.max(info["gop_cache_secs"].as_f64().unwrap_or(0.0));
        std::thread::sleep(Duration::from_millis(250));
    }
    assert!(max_cached <= 10.1, "the GOP cache held {max_cached} s (cap 10 s)");
    let info = s.stream_info("live/longgop").unwrap();
    assert_eq!(info["gop_cache_secs"], 0.0, "dropped past the cap: {info}");
    // A player joining now gets its first picture at the next keyframe (about 17 s away), within 31 s.
    let joined = Instant::now();
    let out = run_with_timeout(
        std::process::Command::new("ffmpeg")
            .args(["-hide_banner", "-nostdin", "-loglevel", "error", "-i", &s.rtmp_url("live/longgop")])
            .args(["-frames:v", "1", "-f", "null", "-"]),
        Duration::from_secs(45),
    );
    let waited = joined.elapsed();
    eprintln!("first picture {:.1} s after joining; cache peaked at {max_cached:.1} s", waited.as_secs_f64());
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(waited < Duration::from_secs(31), "the player waited {waited:?}");
    let info = s.stream_info("live/longgop").unwrap();
    assert!(
        (info["keyframe_interval_secs"].as_f64().unwrap_or(0.0) - 30.0).abs() < 0.5,
        "the GOP length is reported: {info}"
    );
    // With the default 10 s keyframe timeout, such a stream is flagged between its keyframes and cleared at each.
    assert_eq!(info["keyframe_missing"], false, "cleared by the keyframe at 30 s: {info}");
}

/// Video without any keyframe is reported within `stream.keyframe_timeout_secs`: the API flags it, the metric
/// counts it once, and a keyframe clears it.
#[test]
fn a_stream_without_keyframes_is_reported() {
    let s = Strom::with_env(&[("STROM_STREAM_KEYFRAME_TIMEOUT_SECS", "2")]);
    let mut c = connected(&s);
    c.publish("nokey").expect("publish");
    // Inter frames only (FLV frame type 2, AVC NALU, one non-IDR slice).
    let inter = Bytes::from_static(&[0x27, 0x01, 0, 0, 0, 0, 0, 0, 0x03, 0x41, 0x9a, 0x00]);
    let started = Instant::now();
    let mut ts = 0u32;
    let mut reported = None;
    while started.elapsed() < Duration::from_secs(8) {
        c.send_video(inter.clone(), ts).unwrap();
        ts += 33;
        if reported.is_none() && s.stream_info("live/nokey").is_some_and(|i| i["keyframe_missing"] == true) {
            reported = Some(started.elapsed());
        }
        std::thread::sleep(Duration::from_millis(33));
    }
    let at = reported.expect("the missing keyframes were never reported");
    eprintln!("no-keyframe stream reported after {:.1} s (timeout 2 s)", at.as_secs_f64());
    assert!(at < Duration::from_secs(4), "reported after {at:?}");
    assert_eq!(s.metric("strom_keyframe_timeouts_total"), 1.0, "counted once per spell");
    assert!(s.log_text().contains("no keyframe for too long"));
    // A waiting HLS player is told why (503, retry), not "no such stream".
    let r = s.get("/live/nokey/index.m3u8");
    assert_eq!(r.status, 503, "{}", r.text());
    assert!(r.text().contains("no keyframe") && r.header("retry-after") == Some("2"), "{}", r.text());
    // A keyframe clears it.
    c.send_video(Bytes::from_static(&[0x17, 0x01, 0, 0, 0, 0, 0, 0, 0x03, 0x65, 0x88, 0x80]), ts).unwrap();
    let t = Instant::now();
    while s.stream_info("live/nokey").is_some_and(|i| i["keyframe_missing"] == true) {
        assert!(t.elapsed() < Duration::from_secs(5), "a keyframe did not clear the report");
        c.send_video(inter.clone(), ts).unwrap();
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Liveness checks the core: with the stream registry gone (stopped by a test hook, as a crash would), `/healthz`
/// answers 503 within its 1 s deadline, so the kubelet restarts the pod; readiness is separate.
#[test]
fn liveness_fails_when_the_stream_registry_is_gone() {
    let s = Strom::with_env(&[("STROM_TEST_HOOKS", "1")]);
    assert_eq!(s.get("/healthz").status, 200);
    let r = http_request(
        s.http,
        "POST /api/v1/test/kill-registry HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
    )
    .unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    let t = Instant::now();
    let r = s.get("/healthz");
    assert_eq!(r.status, 503, "{}", r.text());
    assert!(t.elapsed() < Duration::from_millis(1500), "answered after {:?}", t.elapsed());
    assert!(r.text().contains("registry"), "{}", r.text());
    // Without the variable the hook does not exist.
    let plain = Strom::start();
    let r = http_request(
        plain.http,
        "POST /api/v1/test/kill-registry HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
    )
    .unwrap();
    assert_eq!(r.status, 404);
}

// ---------------------------------------------------------------------------------------------------------------
// Internal backpressure
// ---------------------------------------------------------------------------------------------------------------

fn stall(s: &Strom, key: &str, what: &str, secs: u32) {
    let req = format!(
        "POST /api/v1/test/stall/{key}?what={what}&secs={secs} HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\
         Connection: close\r\n\r\n"
    );
    let r = http_request(s.http, &req).unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
}

fn last_msn(s: &Strom, key: &str) -> Option<u64> {
    let text = s.get(&format!("/{key}/index.m3u8")).text();
    let (segments, _) = strom_engine::formats::playlist::segments_in(&text);
    segments.last().map(|seg| seg.msn)
}

/// A segmenter stalled for 10 s (a test hook) with `stream.queue_max_bytes` at 256 KiB: its stream stops feeding
/// it past the budget (frames counted as `segmenter_behind`) instead of queueing 10 s of video, RSS stays within a
/// few MiB, HTTP-FLV of the same stream plays on through the stall, another stream's HLS goes on, and HLS resumes
/// with a discontinuity once the segmenter is back.
#[test]
fn a_stalled_segmenter_costs_its_budget_only_and_other_players_go_on() {
    let s = Strom::with_env(&[("STROM_TEST_HOOKS", "1"), ("STROM_STREAM_QUEUE_MAX_BYTES", "262144")]);
    let (a, b) = ("live/stalled", "live/other");
    let _pa = publish(&s.rtmp_url(a), &Source { seconds: 90.0, bitrate_k: 2000, ..Source::default() });
    let _pb = publish(&s.rtmp_url(b), &Source { seconds: 90.0, ..Source::default() });
    s.wait_segments(a, 2, Duration::from_secs(30));
    s.wait_segments(b, 2, Duration::from_secs(30));
    let rss_base = s.rss();
    let other_before = last_msn(&s, b).unwrap();
    stall(&s, a, "segmenter", 10);
    let t = Instant::now();
    // HTTP-FLV of the stalled stream's own publisher plays on during the stall.
    let (frames, stderr) = probe_video(&s.http_url(&format!("/{a}.flv")), 3.0);
    assert_playable("flv during the segmenter stall", &frames, 45, 426, 240, &stderr);
    let mut rss_peak = 0;
    while t.elapsed() < Duration::from_secs(9) {
        rss_peak = rss_peak.max(s.rss());
        std::thread::sleep(Duration::from_millis(200));
    }
    let other_after = last_msn(&s, b).unwrap();
    assert!(other_after >= other_before + 3, "the other stream's HLS stalled too: {other_before} -> {other_after}");
    let dropped = s.metric("strom_frames_dropped_total{reason=\"segmenter_behind\"}");
    assert!(dropped > 0.0, "the stalled segmenter was fed without bound\n{}", s.log_tail(20));
    let growth = rss_peak.saturating_sub(rss_base) as f64 / 1048576.0;
    eprintln!(
        "segmenter stalled 10 s: {dropped} frames skipped, RSS {:.1} MiB -> peak +{growth:.1} MiB",
        rss_base as f64 / 1048576.0
    );
    assert!(growth < 16.0, "RSS grew {growth:.1} MiB during the stall");
    assert_eq!(log_lines(&s, &["HLS segmenter is behind"]).len(), 1, "{}", s.log_tail(20));
    // Back: HLS of the stalled stream goes on, with a discontinuity.
    let stalled_at = last_msn(&s, a).unwrap();
    let t = Instant::now();
    loop {
        let text = s.get(&format!("/{a}/index.m3u8")).text();
        let (segments, _) = strom_engine::formats::playlist::segments_in(&text);
        if segments.iter().any(|seg| seg.msn > stalled_at + 1 && seg.discontinuity)
            || segments.iter().filter(|seg| seg.msn > stalled_at).count() >= 2 && text.contains("#EXT-X-DISCONTINUITY")
        {
            break;
        }
        assert!(
            t.elapsed() < Duration::from_secs(20),
            "HLS did not resume after the stall:\n{text}\n{}",
            s.log_tail(20)
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(log_lines(&s, &["HLS segmenter caught up"]).len(), 1);
}

/// A stream actor stalled for 5 s (a test hook): its publisher's connection stops reading at
/// `stream.queue_max_bytes` (TCP pushes back on ffmpeg) instead of queueing frames, and the stream goes on after.
#[test]
fn a_stalled_stream_actor_pushes_back_on_its_publisher() {
    let s = Strom::with_env(&[("STROM_TEST_HOOKS", "1"), ("STROM_STREAM_QUEUE_MAX_BYTES", "262144")]);
    let key = "live/pushed";
    let mut p = publish(&s.rtmp_url(key), &Source { seconds: 90.0, bitrate_k: 2000, ..Source::default() });
    s.wait_segments(key, 2, Duration::from_secs(30));
    let rss_base = s.rss();
    let ingest_before = s.metric("strom_ingest_bytes_total");
    stall(&s, key, "stream", 5);
    let t = Instant::now();
    let mut rss_peak = 0;
    while t.elapsed() < Duration::from_millis(4500) {
        rss_peak = rss_peak.max(s.rss());
        std::thread::sleep(Duration::from_millis(200));
    }
    let growth = rss_peak.saturating_sub(rss_base) as f64 / 1048576.0;
    let waits = s.metric("strom_publisher_backpressure_total");
    eprintln!(
        "stream actor stalled 5 s: RSS {:.1} MiB -> peak +{growth:.1} MiB; publisher paused {waits} times",
        rss_base as f64 / 1048576.0
    );
    assert!(waits >= 1.0, "the publisher's socket was read on while its stream actor was stalled");
    assert!(growth < 16.0, "RSS grew {growth:.1} MiB during the stall");
    // After the stall the stream goes on: the same publisher, frames flowing, FLV plays.
    std::thread::sleep(Duration::from_secs(1));
    assert!(p.is_running(), "the publisher was dropped: {}", p.log_text());
    assert!(s.metric("strom_ingest_bytes_total") > ingest_before);
    let (frames, stderr) = probe_video(&s.http_url(&format!("/{key}.flv")), 2.0);
    assert_playable("flv after the stream actor stall", &frames, 30, 426, 240, &stderr);
}
