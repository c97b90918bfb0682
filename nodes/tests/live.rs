//! End-to-end tests of one node with real peers: ffmpeg publishes, ffprobe/ffmpeg and an RTMP client play.

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::rtmp::RtmpClient;
use common::*;
use rml_rtmp::sessions::ClientSessionEvent;

const KEY: &str = "live/test";

/// The URLs of `KEY` over RTMP, HTTP-FLV and HLS, each with its protocol's name.
fn player_urls(s: &Strom) -> [(&'static str, String); 3] {
    [
        ("rtmp", s.rtmp_url(KEY)),
        ("flv", s.http_url(&format!("/{KEY}.flv"))),
        ("hls", s.http_url(&format!("/{KEY}/index.m3u8"))),
    ]
}

#[test]
fn rtmp_flv_and_hls_players_decode_the_published_stream() {
    let s = Strom::start();
    let _p = publish(&s.rtmp_url(KEY), &Source::default());
    s.wait_live(KEY, Duration::from_secs(15));
    s.wait_segments(KEY, 2, Duration::from_secs(20));
    let urls = player_urls(&s);
    let handles: Vec<_> = urls
        .into_iter()
        .map(|(what, url)| {
            std::thread::spawn(move || (what, probe_video(&url, 4.0), probe_streams(&url), probe_stream_types(&url)))
        })
        .collect();
    for h in handles {
        let (what, (frames, stderr), streams, mut types) = h.join().unwrap();
        // 4 s at 30 fps; allow for the read interval's edges.
        assert_playable(what, &frames, 100, 426, 240, &stderr);
        assert!(streams.contains(&"h264".to_string()) && streams.contains(&"aac".to_string()), "{what}: {streams:?}");
        // Exactly one video and one audio stream: no data or subtitle stream made of status or script messages
        // (VLC shows no picture with them).
        types.sort();
        assert_eq!(types, ["audio", "video"], "{what}: ffprobe's streams");
    }
    let info = s.stream_info(KEY).unwrap();
    assert_eq!(info["video_codec"].as_str().unwrap().get(..5), Some("avc1."), "{info}");
    assert_eq!(info["audio_codec"], "mp4a.40.2");
    assert_eq!(info["width"], 426);
    assert_eq!(info["height"], 240);
    assert!(info["ingest_bitrate"].as_u64().unwrap() > 100_000, "{info}");
    let fps = info["fps"].as_f64().unwrap();
    assert!((25.0..35.0).contains(&fps), "{info}");
    // Metrics saw the players.
    assert!(s.metric("strom_egress_bytes_total{protocol=\"rtmp\"}") > 0.0);
    assert!(s.metric("strom_egress_bytes_total{protocol=\"flv\"}") > 0.0);
    assert!(s.metric("strom_egress_bytes_total{protocol=\"hls\"}") > 0.0);
    assert!(s.metric("strom_hls_segments_total") >= 2.0);
    assert_eq!(s.metric("strom_publishers"), 1.0);
    assert_eq!(s.metric("strom_streams_active"), 1.0);
    assert!(s.metric("process_resident_memory_bytes") > 0.0);
}

#[test]
fn hls_playlist_and_segments_follow_the_checklist() {
    // The MPEG-TS flavour (`hls.format = "ts"`): its muxer is checked packet by packet here; LL-HLS in fMP4, the
    // default, in ll_hls.rs.
    let s = Strom::with_env(&[("STROM_HLS_WINDOW", "4"), ("STROM_HLS_FORMAT", "ts")]);
    let _p = publish(&s.rtmp_url(KEY), &Source { seconds: 40.0, ..Source::default() });
    s.wait_segments(KEY, 4, Duration::from_secs(30));
    let r = s.get(&format!("/{KEY}/index.m3u8"));
    assert_eq!(r.header("content-type"), Some("application/vnd.apple.mpegurl"));
    assert!(r.header("cache-control").unwrap_or("").contains("no-cache"));
    assert_eq!(r.header("access-control-allow-origin"), Some("*"));
    let pl = parse_playlist(&r.text());
    assert_eq!(pl.segments.len(), 4, "window of 4:\n{}", r.text());
    assert!(pl.independent);
    assert!(!pl.ended);
    let mut all = Vec::new();
    let mut first_pts = Vec::new();
    for seg in &pl.segments {
        assert!(seg.program_date_time.is_some(), "PDT on every segment");
        assert!(
            seg.duration.round() as u64 <= pl.target_duration,
            "EXTINF {} > target {}",
            seg.duration,
            pl.target_duration
        );
        assert!((seg.duration - 2.0).abs() < 0.05, "2 s GOP → 2 s segments, got {}", seg.duration);
        let r = s.get(&format!("/{KEY}/{}", seg.uri));
        assert_eq!(r.status, 200);
        assert_eq!(r.header("content-type"), Some("video/mp2t"));
        assert!(r.header("cache-control").unwrap_or("").contains("max-age"));
        let pkts = ts::packets(&r.body);
        assert_eq!(pkts[0].pid, 0, "PAT first");
        assert_eq!(pkts[1].pid, 0x1000, "PMT second");
        let video = ts::pes(&pkts, 0x100);
        assert!(!video.is_empty());
        let types = ts::nal_types(&video[0].2);
        assert!(
            types.contains(&5) && types.contains(&7) && types.contains(&8),
            "IDR+SPS+PPS at segment start: {types:?}"
        );
        assert!(!ts::pes(&pkts, 0x101).is_empty(), "audio in every segment");
        first_pts.push(video.iter().map(|v| v.1).min().unwrap());
        all.extend(pkts);
    }
    assert_eq!(ts::continuity_error(&all), None, "continuity counters across consecutive segments");
    // EXTINF matches the media: the DTS distance between segment starts.
    for (i, w) in first_pts.windows(2).enumerate() {
        let media = (w[1] - w[0]) as f64 / 90_000.0;
        assert!(
            (media - pl.segments[i].duration).abs() < 0.034,
            "segment {i}: EXTINF {} vs media {media}",
            pl.segments[i].duration
        );
    }
    // The media sequence advances as the window slides.
    std::thread::sleep(Duration::from_millis(2500));
    let later = parse_playlist(&s.get(&format!("/{KEY}/index.m3u8")).text());
    assert!(later.media_sequence > pl.media_sequence);
    // Unknown segment and stream: 404.
    assert_eq!(s.get(&format!("/{KEY}/nope-1.ts")).status, 404);
    assert_eq!(s.get("/live/other/index.m3u8").status, 404);
}

#[test]
fn late_joiners_start_on_a_keyframe_at_once() {
    let s = Strom::start();
    let _p = publish(&s.rtmp_url(KEY), &Source::default());
    s.wait_live(KEY, Duration::from_secs(15));
    std::thread::sleep(Duration::from_millis(3100)); // mid-GOP
                                                     // RTMP: from play request to the first video frame.
    let mut worst_rtmp = Duration::ZERO;
    for _ in 0..3 {
        let mut c = RtmpClient::connect(s.rtmp, "live").unwrap();
        let asked = Instant::now();
        c.play("test").unwrap();
        let (first, ts) = loop {
            match c.next_event(Duration::from_secs(5)) {
                Some(ClientSessionEvent::VideoDataReceived { data, timestamp }) if data.get(1) == Some(&1) => {
                    break (data, timestamp.value)
                }
                Some(_) => {}
                None => panic!("no video"),
            }
        };
        let took = asked.elapsed();
        worst_rtmp = worst_rtmp.max(took);
        assert_eq!(first[0] >> 4, 1, "first RTMP video frame must be a keyframe");
        assert!(ts < 100, "late joiner's timestamps start near zero, got {ts}");
        std::thread::sleep(Duration::from_millis(400));
    }
    assert!(worst_rtmp < Duration::from_millis(100), "RTMP join took {worst_rtmp:?}");
    // HTTP-FLV: from request to the first video tag.
    let mut worst_flv = Duration::ZERO;
    for _ in 0..3 {
        let (took, key, ts) = flv_first_video(&s);
        worst_flv = worst_flv.max(took);
        assert!(key, "first FLV video tag must be a keyframe");
        assert!(ts < 100, "FLV timestamps start near zero, got {ts}");
        std::thread::sleep(Duration::from_millis(400));
    }
    assert!(worst_flv < Duration::from_millis(100), "HTTP-FLV join took {worst_flv:?}");
    eprintln!("join latency: rtmp worst {worst_rtmp:?}, flv worst {worst_flv:?}");
}

/// Time to the first non-header video tag of an HTTP-FLV response, whether it is a keyframe, its timestamp.
fn flv_first_video(s: &Strom) -> (Duration, bool, u32) {
    use std::io::{Read, Write};
    let mut c = std::net::TcpStream::connect(s.http).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let asked = Instant::now();
    c.write_all(format!("GET /{KEY}.flv HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes()).unwrap();
    let mut buf = Vec::new();
    let mut tmp = [0u8; 65536];
    loop {
        let n = c.read(&mut tmp).unwrap();
        assert!(n > 0, "closed");
        buf.extend_from_slice(&tmp[..n]);
        // Undo chunked transfer framing lazily: search the raw bytes for the FLV header, then walk tags inside
        // the de-chunked body.
        if let Some(body) = dechunk(&buf) {
            if let Some(pos) = body.windows(3).position(|w| w == b"FLV") {
                let mut i = pos + 13;
                while i + 11 <= body.len() {
                    let t = body[i];
                    let size = u32::from_be_bytes([0, body[i + 1], body[i + 2], body[i + 3]]) as usize;
                    let ts = u32::from_be_bytes([body[i + 7], body[i + 4], body[i + 5], body[i + 6]]);
                    if i + 11 + size > body.len() {
                        break;
                    }
                    if t == 9 && body[i + 12] == 1 {
                        return (asked.elapsed(), body[i + 11] >> 4 == 1, ts);
                    }
                    i += 11 + size + 4;
                }
            }
        }
    }
}

/// Sends a request in `pieces` (100 ms apart) and reads until the body holds `want` bytes; returns the response
/// head (lowercased) and the raw body bytes.
fn flv_response(s: &Strom, pieces: &[&str], want: usize) -> (String, Vec<u8>) {
    use std::io::{Read, Write};
    let mut c = std::net::TcpStream::connect(s.http).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    for (i, p) in pieces.iter().enumerate() {
        if i > 0 {
            std::thread::sleep(Duration::from_millis(100));
        }
        c.write_all(p.as_bytes()).unwrap();
    }
    let mut raw = Vec::new();
    let mut tmp = [0u8; 65536];
    loop {
        if let Some(end) = raw.windows(4).position(|w| w == b"\r\n\r\n") {
            if raw.len() >= end + 4 + want {
                let head = String::from_utf8_lossy(&raw[..end]).to_lowercase();
                return (head, raw[end + 4..].to_vec());
            }
        }
        let n = c.read(&mut tmp).unwrap();
        assert!(n > 0, "closed after {} bytes: {:?}", raw.len(), String::from_utf8_lossy(&raw));
        raw.extend_from_slice(&tmp[..n]);
    }
}

#[test]
fn http_flv_framing_cors_http_1_0_query_strings_and_split_heads() {
    let s = Strom::start();
    let p = publish(&s.rtmp_url(KEY), &Source { seconds: 30.0, ..Source::default() });
    s.wait_live(KEY, Duration::from_secs(15));
    let get = format!("GET /{KEY}.flv HTTP/1.1\r\nHost: x\r\nOrigin: http://player.example\r\n\r\n");
    // HTTP/1.1: chunked, with the content type and CORS of every media response; the body is FLV.
    let (head, body) = flv_response(&s, &[&get], 4096);
    assert!(head.starts_with("http/1.1 200 ok"), "{head}");
    for h in ["transfer-encoding: chunked", "content-type: video/x-flv", "access-control-allow-origin: *"] {
        assert!(head.contains(h), "{h} missing:\n{head}");
    }
    assert!(dechunk(&[b"\r\n\r\n".as_slice(), &body].concat()).unwrap().starts_with(b"FLV\x01"), "FLV body");
    // HTTP/1.0 (no chunked encoding there): the body is the FLV itself, ended by the close.
    let (head, body) = flv_response(&s, &[&format!("GET /{KEY}.flv HTTP/1.0\r\n\r\n")], 4096);
    assert!(head.starts_with("http/1.1 200 ok") && !head.contains("transfer-encoding"), "{head}");
    assert!(body.starts_with(b"FLV\x01"), "HTTP/1.0 body is raw FLV");
    // A query string (players add tokens) and a head that arrives in pieces.
    let (a, b) = get.split_at(9);
    let (b, c) = b.split_at(12);
    for pieces in
        [vec![format!("GET /{KEY}.flv?token=abc&t=1 HTTP/1.1\r\nHost: x\r\n\r\n")], vec![a.into(), b.into(), c.into()]]
    {
        let pieces: Vec<&str> = pieces.iter().map(String::as_str).collect();
        let (head, body) = flv_response(&s, &pieces, 4096);
        assert!(head.starts_with("http/1.1 200 ok"), "{pieces:?}: {head}");
        assert!(dechunk(&[b"\r\n\r\n".as_slice(), &body].concat()).unwrap().starts_with(b"FLV\x01"));
    }
    // HEAD and unknown streams are axum's: the same headers, no body; 404 with CORS.
    let (head, _) = flv_response(&s, &[&format!("HEAD /{KEY}.flv HTTP/1.1\r\nHost: x\r\n\r\n")], 0);
    assert!(head.starts_with("http/1.1 200 ok") && head.contains("content-type: video/x-flv"), "{head}");
    let r = s.get("/live/nope.flv");
    assert_eq!((r.status, r.header("access-control-allow-origin")), (404, Some("*")));
    // Every one of those players has left: none is still counted.
    let deadline = Instant::now() + Duration::from_secs(10);
    while s.metric("strom_viewers{protocol=\"flv\"}") > 0.0 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(s.metric("strom_viewers{protocol=\"flv\"}"), 0.0);
    drop(p);
}

/// Decodes as much of a chunked HTTP response body as has arrived.
fn dechunk(raw: &[u8]) -> Option<Vec<u8>> {
    let head_end = raw.windows(4).position(|w| w == b"\r\n\r\n")? + 4;
    let mut out = Vec::new();
    let mut i = head_end;
    loop {
        let line_end = raw[i..].windows(2).position(|w| w == b"\r\n")? + i;
        let n = usize::from_str_radix(std::str::from_utf8(&raw[i..line_end]).ok()?.trim(), 16).ok()?;
        let start = line_end + 2;
        if start + n > raw.len() {
            out.extend_from_slice(&raw[start..]);
            return Some(out);
        }
        out.extend_from_slice(&raw[start..start + n]);
        i = start + n + 2;
        if i >= raw.len() {
            return Some(out);
        }
    }
}

#[test]
fn publisher_reconnect_continues_hls_with_a_discontinuity() {
    let s = Strom::start();
    let mut first = publish(&s.rtmp_url(KEY), &Source { seconds: 7.0, ..Source::default() });
    s.wait_segments(KEY, 1, Duration::from_secs(20));
    // An ffmpeg HLS reader that must keep going across the reconnect.
    let dir = scratch("reader");
    let progress = dir.join("progress");
    let mut reader = Proc {
        child: Command::new("ffmpeg")
            .args(["-hide_banner", "-nostdin", "-loglevel", "error", "-i"])
            .arg(s.http_url(&format!("/{KEY}/index.m3u8")))
            .args(["-map", "0:v", "-f", "null", "-", "-progress"])
            .arg(&progress)
            .stderr(std::fs::File::create(dir.join("reader.log")).unwrap())
            .spawn()
            .unwrap(),
        log: dir.join("reader.log"),
    };
    let frames_read = || -> u64 {
        std::fs::read_to_string(&progress)
            .unwrap_or_default()
            .lines()
            .rev()
            .find_map(|l| l.strip_prefix("frame="))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0)
    };
    let mut sequences = Vec::new();
    let mut saw_discontinuity = false;
    let poll = |sequences: &mut Vec<u64>, saw: &mut bool| {
        let r = s.get(&format!("/{KEY}/index.m3u8"));
        if r.status == 200 {
            let pl = parse_playlist(&r.text());
            sequences.push(pl.media_sequence);
            *saw |= pl.segments.iter().any(|x| x.discontinuity);
        }
    };
    first.wait(Duration::from_secs(20)).expect("first publisher ends");
    let gap = Instant::now();
    while gap.elapsed() < Duration::from_millis(1500) {
        poll(&mut sequences, &mut saw_discontinuity);
        std::thread::sleep(Duration::from_millis(200));
    }
    let before = frames_read();
    let _second = publish(&s.rtmp_url(KEY), &Source { seconds: 30.0, ..Source::default() });
    let t = Instant::now();
    while t.elapsed() < Duration::from_secs(12) {
        poll(&mut sequences, &mut saw_discontinuity);
        std::thread::sleep(Duration::from_millis(300));
    }
    assert!(saw_discontinuity, "EXT-X-DISCONTINUITY after the reconnect");
    assert!(sequences.windows(2).all(|w| w[1] >= w[0]), "media sequence went back: {sequences:?}");
    assert!(reader.is_running(), "the HLS reader stopped: {}", reader.log_text());
    let after = frames_read();
    assert!(after > before + 120, "reader decoded {before} then {after} frames: it did not go on");
    let log = s.log_text();
    assert!(log.contains("publisher resumed the stream"), "resume logged");
}

#[test]
fn rtmp_and_http_flv_players_stay_attached_through_a_publisher_reconnect() {
    let s = Strom::with_env(&[("STROM_STREAM_RECONNECT_GRACE_SECS", "4")]);
    let (fps, secs) = (30.0, 7.0);
    let mut first = publish(&s.rtmp_url(KEY), &Source { seconds: secs, ..Source::default() });
    s.wait_live(KEY, Duration::from_secs(15));
    // Readers until the end of the stream, each on one connection: ffmpeg's RTMP and HTTP readers do not
    // reconnect by themselves.
    let reader = |url: String| std::thread::spawn(move || probe_until_end(&url, Duration::from_secs(60)));
    let rtmp = reader(s.rtmp_url(KEY));
    let flv = reader(s.http_url(&format!("/{KEY}.flv")));
    first.wait(Duration::from_secs(20)).expect("the first publisher ends");
    let gap = Instant::now();
    std::thread::sleep(Duration::from_millis(500));
    // A player that arrives while the publisher is away is attached and starts when it returns.
    let late = reader(s.http_url(&format!("/{KEY}.flv")));
    while gap.elapsed() < Duration::from_secs(2) {
        std::thread::sleep(Duration::from_millis(50));
    }
    let mut second = publish(&s.rtmp_url(KEY), &Source { seconds: secs, ..Source::default() });
    second.wait(Duration::from_secs(30)).expect("the second publisher ends");
    for (what, r, min) in [
        ("rtmp", rtmp, (2.0 * secs - 3.0) * fps),
        ("flv", flv, (2.0 * secs - 3.0) * fps),
        ("flv joined in the gap", late, (secs - 1.5) * fps),
    ] {
        let (pts, stderr) = r.join().expect("reader");
        assert!(pts.len() as f64 >= min, "{what}: {} frames decoded, expected >= {min}; {stderr}", pts.len());
        let back = pts.windows(2).filter(|w| w[1] <= w[0]).count();
        assert_eq!(back, 0, "{what}: timestamps went back or stood still {back} times");
    }
    assert!(s.log_text().contains("publisher resumed the stream"), "resume logged");
}

#[test]
fn a_publisher_gap_is_filled_with_its_last_picture_for_players_and_hls() {
    let s = Strom::with_env(&[("STROM_STREAM_RECONNECT_GRACE_SECS", "6")]);
    let first = publish(&s.rtmp_url(KEY), &Source { seconds: 60.0, ..Source::default() });
    s.wait_live(KEY, Duration::from_secs(15));
    let flv_url = s.http_url(&format!("/{KEY}.flv"));
    let flv = std::thread::spawn(move || probe_until_end(&flv_url, Duration::from_secs(60)));
    // The publisher's connection drops (killed: no deleteStream), as when OBS loses its network.
    let secs = 5.0;
    std::thread::sleep(Duration::from_secs_f64(secs));
    drop(first);
    let gap = Instant::now();
    let next_part = || {
        let text = s.get(&format!("/{KEY}/index.m3u8")).text();
        strom_engine::formats::playlist::next_part_in(&text).map(|(at, _)| at)
    };
    std::thread::sleep(Duration::from_millis(300));
    let before = next_part().expect("an LL-HLS playlist");
    std::thread::sleep(Duration::from_millis(1200));
    let during = next_part().expect("an LL-HLS playlist");
    assert!(during > before, "HLS goes on while the publisher is away: {before:?} then {during:?}");
    assert!(s.metric("strom_repeated_frames_total") >= 5.0, "the picture is repeated");
    let v: serde_json::Value = serde_json::from_slice(&s.get("/api/v1/streams").body).unwrap_or_default();
    assert_eq!(v["streams"][0]["repeating"], true, "{v}");
    while gap.elapsed() < Duration::from_millis(2500) {
        std::thread::sleep(Duration::from_millis(50));
    }
    let mut second = publish(&s.rtmp_url(KEY), &Source { seconds: 4.0, ..Source::default() });
    second.wait(Duration::from_secs(30)).expect("the second publisher ends");
    let (pts, stderr) = flv.join().expect("reader");
    // The player decoded a picture at least every half second through the gap (no stall), in order.
    let longest = pts.windows(2).map(|w| w[1] - w[0]).fold(0.0, f64::max);
    assert!(longest < 0.5, "longest step between pictures {longest} s; {stderr}");
    assert!(pts.windows(2).all(|w| w[1] > w[0]), "timestamps advance");
    assert!(pts.len() as f64 >= (secs + 4.0 - 2.0) * 30.0, "{} frames; {stderr}", pts.len());
    assert!(s.log_text().contains("publisher resumed the stream"), "resume logged");
}

#[test]
fn a_publisher_that_ends_its_stream_gets_no_repeated_picture() {
    let s = Strom::with_env(&[("STROM_STREAM_RECONNECT_GRACE_SECS", "3")]);
    let mut p = publish(&s.rtmp_url(KEY), &Source { seconds: 3.0, ..Source::default() });
    s.wait_live(KEY, Duration::from_secs(15));
    // ffmpeg ends its stream (deleteStream), as OBS's "Stop Streaming" does: the stream waits, nothing repeats.
    p.wait(Duration::from_secs(20)).expect("the publisher ends");
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(s.metric("strom_repeated_frames_total"), 0.0);
    let v: serde_json::Value = serde_json::from_slice(&s.get("/api/v1/streams").body).unwrap_or_default();
    assert_eq!(v["streams"][0]["state"], "waiting", "{v}");
    assert_eq!(v["streams"][0]["repeating"], false, "{v}");
}

#[test]
fn stream_end_notifies_players_then_endlist_then_404() {
    let s = Strom::with_env(&[("STROM_STREAM_RECONNECT_GRACE_SECS", "1"), ("STROM_STREAM_ENDED_LINGER_SECS", "3")]);
    let mut p = publish(&s.rtmp_url(KEY), &Source { seconds: 6.0, ..Source::default() });
    s.wait_live(KEY, Duration::from_secs(15));
    let mut player = RtmpClient::connect(s.rtmp, "live").unwrap();
    player.play("test").unwrap();
    let flv_url = s.http_url(&format!("/{KEY}.flv"));
    let flv = std::thread::spawn(move || {
        let t = Instant::now();
        let out = run_with_timeout(
            Command::new("ffmpeg").args([
                "-hide_banner",
                "-nostdin",
                "-loglevel",
                "error",
                "-i",
                &flv_url,
                "-f",
                "null",
                "-",
            ]),
            Duration::from_secs(30),
        );
        (out.status.code(), t.elapsed())
    });
    p.wait(Duration::from_secs(20)).expect("publisher ends");
    // The RTMP player is told: UnpublishNotify, then the connection closes.
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline && !player.closed {
        player.next_event(Duration::from_millis(200));
    }
    assert!(player.status_codes.iter().any(|c| c == "NetStream.Play.UnpublishNotify"), "{:?}", player.status_codes);
    assert!(player.closed, "player connection closed after the end");
    // The HTTP-FLV player (ffmpeg) finished by itself.
    let (code, took) = flv.join().unwrap();
    assert_eq!(code, Some(0), "ffmpeg HTTP-FLV reader exits cleanly at the end");
    assert!(took < Duration::from_secs(15));
    // After the reconnect grace: ENDLIST; after the linger: 404.
    std::thread::sleep(Duration::from_millis(1500));
    let pl = s.get(&format!("/{KEY}/index.m3u8"));
    assert_eq!(pl.status, 200);
    assert!(parse_playlist(&pl.text()).ended, "ENDLIST after the grace period:\n{}", pl.text());
    std::thread::sleep(Duration::from_millis(3500));
    assert_eq!(s.get(&format!("/{KEY}/index.m3u8")).status, 404);
    assert_eq!(s.metric("strom_streams_active"), 0.0);
    // The same key can be published again afterwards.
    let mut again = RtmpClient::connect(s.rtmp, "live").unwrap();
    again.publish("test").unwrap();
}

#[test]
fn a_second_publisher_on_a_live_key_is_refused() {
    let s = Strom::start();
    let _p = publish(&s.rtmp_url(KEY), &Source::default());
    s.wait_live(KEY, Duration::from_secs(15));
    let mut c = RtmpClient::connect(s.rtmp, "live").unwrap();
    let err = c.publish("test").unwrap_err();
    assert!(err.contains("NetStream.Publish.BadName"), "{err}");
    assert!(s.metric("strom_connections_rejected_total{reason=\"busy\"}") >= 1.0);
    // The first publisher is untouched.
    let (frames, stderr) = probe_video(&s.http_url(&format!("/{KEY}.flv")), 2.0);
    assert_playable("flv", &frames, 45, 426, 240, &stderr);
}

#[test]
fn publish_auth_refuses_unknown_keys() {
    let dir = scratch("keys");
    let keys = dir.join("keys.txt");
    std::fs::write(&keys, "# allowed\nfromfile\n").unwrap();
    let s = Strom::with_env(&[
        ("STROM_AUTH_PUBLISH_KEYS", "[\"good\"]"),
        ("STROM_AUTH_PUBLISH_KEYS_FILE", keys.to_str().unwrap()),
    ]);
    let mut bad = RtmpClient::connect(s.rtmp, "live").unwrap();
    let err = bad.publish("wrong").unwrap_err();
    assert!(err.contains("NetStream.Publish.Unauthorized"), "{err}");
    assert!(s.log_text().contains("not authorised"), "refusal logged");
    let mut good = RtmpClient::connect(s.rtmp, "live").unwrap();
    good.publish("good").unwrap();
    let mut from_file = RtmpClient::connect(s.rtmp, "live").unwrap();
    from_file.publish("fromfile").unwrap();
    assert!(s.metric("strom_connections_rejected_total{reason=\"unauthorized\"}") >= 1.0);
}

#[test]
fn invalid_config_is_one_line_naming_the_key_and_exit_2() {
    for (env, key) in [
        (("STROM_HLS_WINDOW", "many"), "hls.window"),
        (("STROM_RTMP_LISTEN", "not-an-address"), "rtmp.listen"),
        (("STROM_STREAM_GRACE", "1"), "stream.grace"),
    ] {
        let out =
            run_with_timeout(Command::new(env!("CARGO_BIN_EXE_strom")).env(env.0, env.1), Duration::from_secs(10));
        assert_eq!(out.status.code(), Some(2), "{env:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(err.trim().lines().count(), 1, "one line: {err}");
        assert!(err.contains(key) && err.contains(env.0), "{err}");
    }
    let dir = scratch("cfg");
    let f = dir.join("strom.toml");
    std::fs::write(&f, "[hls]\nsegment_duration_secs = -1\n").unwrap();
    let out =
        run_with_timeout(Command::new(env!("CARGO_BIN_EXE_strom")).arg("--config").arg(&f), Duration::from_secs(10));
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("hls.segment_duration_secs"));
    // --print-config shows the effective configuration (file < env < flags).
    std::fs::write(&f, "node_name = \"from-file\"\n[hls]\nwindow = 5\n").unwrap();
    let out = run_with_timeout(
        Command::new(env!("CARGO_BIN_EXE_strom"))
            .args(["--print-config", "--http-listen", "127.0.0.1:9999", "--config"])
            .arg(&f)
            .env("STROM_HLS_WINDOW", "7"),
        Duration::from_secs(10),
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("node_name = \"from-file\"") && text.contains("window = 7") && text.contains("127.0.0.1:9999"),
        "{text}"
    );
}

#[test]
fn sigterm_drains_and_exits_cleanly() {
    let mut s = Strom::start();
    let _p = publish(&s.rtmp_url(KEY), &Source::default());
    s.wait_live(KEY, Duration::from_secs(15));
    assert_eq!(s.get("/readyz").status, 200);
    assert_eq!(s.get("/healthz").status, 200);
    let mut player = RtmpClient::connect(s.rtmp, "live").unwrap();
    player.play("test").unwrap();
    let t = Instant::now();
    let status = s.terminate(Duration::from_secs(15)).expect("exits within the bound");
    assert!(status.success(), "{status:?}");
    assert!(t.elapsed() < Duration::from_secs(12));
    while !player.closed && t.elapsed() < Duration::from_secs(15) {
        player.next_event(Duration::from_millis(200));
    }
    assert!(player.closed);
    assert!(player.status_codes.iter().any(|c| c == "NetStream.Play.UnpublishNotify"), "{:?}", player.status_codes);
    let log = s.log_text();
    assert!(log.contains("shutting down") && log.contains("shutdown complete"), "{log}");
}

/// VLC 3 (Debian's `cvlc`, headless: dummy video and audio output) plays `url` for `secs` seconds; returns the
/// `frames displayed` counter of its statistics and its output. Debian's VLC refuses to run as root: as root it
/// runs as `nobody`.
fn vlc_frames_displayed(url: &str, secs: f64) -> (u64, String) {
    use std::io::Write as _;
    let home = scratch("vlc");
    let _ = Command::new("chmod").arg("777").arg(&home).status();
    let root = Command::new("id").arg("-u").output().map(|o| o.stdout.starts_with(b"0")).unwrap_or(false);
    let mut cmd = if root {
        let mut c = Command::new("runuser");
        c.args(["-u", "nobody", "--", "cvlc"]);
        c
    } else {
        Command::new("cvlc")
    };
    cmd.env("HOME", &home)
        .args(["-I", "rc", "--rc-fake-tty", "--vout", "dummy", "--aout", "dummy", "--no-video-title-show", "--stats"])
        .arg(url)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null());
    let mut child = cmd.spawn().expect("spawn cvlc (is vlc-bin installed?)");
    let mut stdin = child.stdin.take().expect("stdin");
    std::thread::sleep(Duration::from_secs_f64(secs));
    let _ = stdin.write_all(b"stats\n");
    std::thread::sleep(Duration::from_millis(500));
    let _ = stdin.write_all(b"quit\n");
    drop(stdin);
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline && matches!(child.try_wait(), Ok(None)) {
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    let out = child.wait_with_output().map(|o| String::from_utf8_lossy(&o.stdout).to_string()).unwrap_or_default();
    let displayed = out
        .lines()
        .find_map(|l| l.split_once("frames displayed").map(|(_, v)| v.trim_start_matches([' ', ':']).trim()))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    (displayed, out)
}

#[test]
fn vlc_displays_rtmp_http_flv_and_hls() {
    let s = Strom::start();
    let _p = publish(&s.rtmp_url(KEY), &Source { seconds: 40.0, ..Source::default() });
    s.wait_live(KEY, Duration::from_secs(15));
    // VLC starts a live HLS playlist three segments from its end: with fewer listed it waits for more.
    s.wait_segments(KEY, 4, Duration::from_secs(30));
    let urls = player_urls(&s);
    let runs: Vec<_> = urls
        .into_iter()
        .map(|(what, url)| std::thread::spawn(move || (what, vlc_frames_displayed(&url, 8.0))))
        .collect();
    for r in runs {
        let (what, (displayed, out)) = r.join().expect("vlc run");
        assert!(displayed >= 150, "{what}: VLC displayed {displayed} frames in 8 s, expected >= 150\n{out}");
        eprintln!("VLC over {what}: {displayed} frames displayed in 8 s");
    }
}
