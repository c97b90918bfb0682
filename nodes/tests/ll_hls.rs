//! LL-HLS in fMP4 from a real strom and a real publisher (ffmpeg), checked the way a strict player would:
//! playlist rules (rfc8216bis), blocking playlist reload and preload hints, delta updates, and decoding of what the
//! parts carry (ffprobe).

mod common;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use common::*;

/// A part: (uri, duration, independent).
type Part = (String, f64, bool);
/// A segment: (msn, its parts, its uri; `None` for the open segment).
type Seg = (u64, Vec<Part>, Option<String>);

/// One LL-HLS media playlist, parsed strictly.
#[derive(Debug, Default)]
struct Ll {
    target: f64,
    media_sequence: u64,
    part_target: f64,
    part_hold_back: f64,
    can_skip_until: f64,
    can_block: bool,
    skipped: u64,
    map: Option<String>,
    segments: Vec<Seg>,
    preload: Option<String>,
}

fn attr<'a>(line: &'a str, name: &str) -> Option<&'a str> {
    line.split([':', ',']).find_map(|kv| kv.strip_prefix(name)?.strip_prefix('=')).map(|v| v.trim_matches('"'))
}

fn parse_ll(text: &str) -> Ll {
    let mut p = Ll::default();
    let mut parts = Vec::new();
    let mut msn = None;
    for line in text.lines() {
        if let Some(v) = line.strip_prefix("#EXT-X-TARGETDURATION:") {
            p.target = v.parse().unwrap();
        } else if let Some(v) = line.strip_prefix("#EXT-X-MEDIA-SEQUENCE:") {
            p.media_sequence = v.parse().unwrap();
        } else if line.starts_with("#EXT-X-SERVER-CONTROL:") {
            p.can_block = attr(line, "CAN-BLOCK-RELOAD") == Some("YES");
            p.part_hold_back = attr(line, "PART-HOLD-BACK").unwrap().parse().unwrap();
            p.can_skip_until = attr(line, "CAN-SKIP-UNTIL").unwrap().parse().unwrap();
        } else if line.starts_with("#EXT-X-PART-INF:") {
            p.part_target = attr(line, "PART-TARGET").unwrap().parse().unwrap();
        } else if line.starts_with("#EXT-X-SKIP:") {
            p.skipped = attr(line, "SKIPPED-SEGMENTS").unwrap().parse().unwrap();
        } else if line.starts_with("#EXT-X-MAP:") {
            p.map = attr(line, "URI").map(String::from);
        } else if line.starts_with("#EXT-X-PART:") {
            let d: f64 = attr(line, "DURATION").unwrap().parse().unwrap();
            parts.push((attr(line, "URI").unwrap().to_string(), d, line.contains("INDEPENDENT=YES")));
        } else if line.starts_with("#EXT-X-PRELOAD-HINT:") {
            assert_eq!(attr(line, "TYPE"), Some("PART"), "{line}");
            p.preload = attr(line, "URI").map(String::from);
        } else if !line.starts_with('#') && !line.is_empty() {
            let n = *msn.get_or_insert(p.media_sequence + p.skipped);
            p.segments.push((n, std::mem::take(&mut parts), Some(line.to_string())));
            msn = Some(n + 1);
        }
    }
    let open = msn.unwrap_or(p.media_sequence + p.skipped);
    p.segments.push((open, parts, None));
    p
}

impl Ll {
    /// (msn, part) of the first part not in this playlist.
    fn next_part(&self) -> (u64, u64) {
        let (msn, parts, uri) = self.segments.last().unwrap();
        assert!(uri.is_none());
        (*msn, parts.len() as u64)
    }

    /// Every rule a strict checker applies to one playlist.
    fn check(&self, text: &str) {
        assert!(text.contains("#EXT-X-VERSION:9\n"), "{text}");
        assert!(self.can_block, "CAN-BLOCK-RELOAD=YES: {text}");
        assert!(self.part_target > 0.0 && self.part_target <= 0.5, "PART-TARGET {}", self.part_target);
        assert!(self.part_hold_back >= 3.0 * self.part_target - 1e-9, "PART-HOLD-BACK ≥ 3 × PART-TARGET: {text}");
        assert!(self.can_skip_until >= 6.0 * self.target - 1e-9, "CAN-SKIP-UNTIL ≥ 6 × TARGETDURATION: {text}");
        assert!(self.map.is_some() || self.skipped > 0, "EXT-X-MAP in a full playlist: {text}");
        assert!(self.preload.is_some(), "a preload hint: {text}");
        for (msn, parts, uri) in &self.segments {
            for (i, (name, d, independent)) in parts.iter().enumerate() {
                assert!(*d <= self.part_target + 1e-9, "part {name} of {d} s > PART-TARGET {}", self.part_target);
                // The test stream's GOP is the segment: a keyframe starts each segment, and only there.
                assert_eq!(*independent, i == 0, "segment {msn} part {i} ({name}): INDEPENDENT={independent}\n{text}");
            }
            if let Some(uri) = uri {
                if !parts.is_empty() {
                    let sum: f64 = parts.iter().map(|p| p.1).sum();
                    let extinf = extinf_of(text, uri);
                    assert!((sum - extinf).abs() < 0.002, "segment {uri}: parts sum {sum} vs EXTINF {extinf}");
                }
            }
        }
    }
}

fn extinf_of(text: &str, uri: &str) -> f64 {
    let lines: Vec<&str> = text.lines().collect();
    let i = lines.iter().position(|l| *l == uri).unwrap();
    lines[i - 1].trim_start_matches("#EXTINF:").trim_end_matches(',').parse().unwrap()
}

#[test]
fn ll_hls_playlists_parts_and_blocking_reloads_follow_the_spec() {
    // A window longer than CAN-SKIP-UNTIL (12 s), so delta updates have something to skip.
    let s = Strom::with_env(&[("STROM_HLS_WINDOW", "10")]);
    let key = "live/ll";
    let _p = publish(&s.rtmp_url(key), &Source { seconds: 60.0, ..Source::default() });
    s.wait_live(key, Duration::from_secs(15));
    s.wait_segments(key, 2, Duration::from_secs(20));
    let path = format!("/{key}/index.m3u8");

    // Follow the stream with blocking reloads for 20 s, as an LL-HLS client does.
    let first = s.get(&path);
    assert_eq!(first.status, 200);
    assert_eq!(first.header("content-type"), Some("application/vnd.apple.mpegurl"));
    assert!(first.header("cache-control").is_some_and(|c| c.contains("no-cache")), "a plain playlist is not cached");
    let mut pl = parse_ll(&first.text());
    pl.check(&first.text());
    let mut parts_seen: HashMap<String, f64> = HashMap::new();
    let mut waits = Vec::new();
    let mut last_msn = pl.media_sequence;
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(20) {
        let (msn, part) = pl.next_part();
        let t = Instant::now();
        let r = s.get(&format!("{path}?_HLS_msn={msn}&_HLS_part={part}"));
        waits.push(t.elapsed());
        assert_eq!(r.status, 200, "blocking reload for {msn}.{part}: {}", r.text());
        assert_eq!(r.header("cache-control"), Some("public, max-age=12"), "a blocking answer stays true: cacheable");
        let text = r.text();
        let next = parse_ll(&text);
        next.check(&text);
        assert!(next.media_sequence >= last_msn, "MEDIA-SEQUENCE never goes back");
        last_msn = next.media_sequence;
        assert!(next.next_part() > (msn, part), "the answer holds {msn}.{part}: {text}");
        for (_, parts, _) in &next.segments {
            for (name, d, _) in parts {
                if let Some(old) = parts_seen.insert(name.clone(), *d) {
                    assert_eq!(old, *d, "part {name} changed its duration");
                }
            }
        }
        pl = next;
    }
    let n = waits.len();
    waits.sort();
    eprintln!("{n} blocking reloads in 20 s; wait p50 {:?}, max {:?}", waits[n / 2], waits[n - 1]);
    assert!(n >= 50, "a part every ~200 ms: {n} reloads");
    assert!(waits[n - 1] < Duration::from_secs(2), "no reload held longer than a part or two: {:?}", waits[n - 1]);

    // A preload-hinted part and the blocking reload that lists it come back together, when the part is done.
    let (msn, part) = pl.next_part();
    let hint = pl.preload.clone().unwrap();
    let hint_path = format!("/{key}/{hint}");
    let addr = s.http_url("");
    let t0 = Instant::now();
    let fetch_hint = std::thread::spawn(move || {
        let r = http_get(addr.trim_start_matches("http://").parse().unwrap(), &hint_path).unwrap();
        (r, t0.elapsed())
    });
    let r = s.get(&format!("{path}?_HLS_msn={msn}&_HLS_part={part}"));
    let playlist_at = t0.elapsed();
    let (hinted, hint_at) = fetch_hint.join().unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(hinted.status, 200, "the preload-hinted part is served once complete");
    assert_eq!(hinted.header("content-type"), Some("video/iso.segment"));
    assert!(parse_ll(&r.text()).segments.iter().any(|(_, p, _)| p.iter().any(|(n, _, _)| *n == hint)));
    let gap = playlist_at.abs_diff(hint_at);
    assert!(gap < Duration::from_millis(50), "part and playlist answered {gap:?} apart");

    // Too far ahead: 400 at once. A delta update skips what is older than CAN-SKIP-UNTIL and keeps the rest.
    let t = Instant::now();
    assert_eq!(s.get(&format!("{path}?_HLS_msn={}", msn + 5)).status, 400);
    assert!(t.elapsed() < Duration::from_millis(500));
    assert_eq!(s.get(&format!("{path}?_HLS_part=1")).status, 400);
    assert_eq!(s.get(&format!("{path}?_HLS_msn=x")).status, 400);
    let full = s.get(&path).text();
    let delta = s.get(&format!("{path}?_HLS_skip=YES")).text();
    let d = parse_ll(&delta);
    d.check(&delta);
    assert!(d.skipped > 0, "a 20 s window skips segments in a delta update:\n{delta}");
    let f = parse_ll(&full);
    let tail = |p: &Ll| p.segments.iter().filter_map(|(m, _, u)| u.clone().map(|u| (*m, u))).collect::<Vec<_>>();
    let (ft, dt) = (tail(&f), tail(&d));
    assert!(ft.ends_with(&dt[..dt.len().saturating_sub(1)]) || dt.ends_with(&ft[ft.len().saturating_sub(dt.len())..]));

    // What the parts carry decodes: init + the parts of two whole segments, to ffprobe.
    let pl = parse_ll(&s.get(&path).text());
    let init = s.get(&format!("/{key}/{}", pl.map.clone().unwrap()));
    assert_eq!(init.status, 200);
    assert_eq!(init.header("content-type"), Some("video/mp4"));
    let mut file = init.body.clone();
    let mut frames_expected = 0.0;
    for (_, parts, uri) in pl.segments.iter().rev().skip(1).take(2).collect::<Vec<_>>().into_iter().rev() {
        assert!(uri.is_some());
        for (name, d, _) in parts {
            let r = s.get(&format!("/{key}/{name}"));
            assert_eq!(r.status, 200, "{name}");
            assert!(r.header("cache-control").is_some_and(|c| c.contains("immutable")));
            file.extend_from_slice(&r.body);
            frames_expected += d * 30.0;
        }
    }
    let dir = scratch("ll_hls_parts");
    let f = dir.join("parts.mp4");
    std::fs::write(&f, &file).unwrap();
    let out = run_with_timeout(
        std::process::Command::new("ffprobe")
            .args(["-v", "error", "-count_frames", "-select_streams", "v:0", "-show_entries"])
            .args(["stream=codec_name,nb_read_frames", "-of", "csv=p=0"])
            .arg(&f),
        Duration::from_secs(30),
    );
    let stdout = String::from_utf8_lossy(&out.stdout).trim().to_string();
    assert!(
        String::from_utf8_lossy(&out.stderr).trim().is_empty(),
        "ffprobe: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let n: f64 = stdout.rsplit(',').next().unwrap().parse().unwrap();
    assert!(stdout.starts_with("h264,") && (n - frames_expected).abs() <= 2.0, "{stdout}: expected ~{frames_expected}");
    // The metrics say what happened.
    assert!(s.metric("strom_hls_parts_total") >= 100.0);
    assert!(s.metric("strom_hls_block_wait_seconds_count") >= 50.0);
}

#[test]
fn legacy_mpeg_ts_per_app_and_players_that_ignore_parts() {
    let s = Strom::with_env(&[("STROM_HLS_APPS", "{ legacy = { format = \"ts\" } }")]);
    let ts = "legacy/box";
    let ll = "live/any";
    let _a = publish(&s.rtmp_url(ts), &Source { seconds: 30.0, ..Source::default() });
    let _b = publish(&s.rtmp_url(ll), &Source { seconds: 30.0, ..Source::default() });
    let text = s.wait_segments(ts, 2, Duration::from_secs(20));
    assert!(text.contains(".ts\n") && !text.contains("#EXT-X-PART"), "{text}");
    assert_eq!(s.get(&format!("/{ts}/index.m3u8?_HLS_msn=999")).status, 400, "TS: too far ahead, too");
    s.wait_segments(ll, 2, Duration::from_secs(20));
    // ffmpeg's HLS demuxer knows no LL-HLS: it plays the whole fMP4 segments.
    for key in [ts, ll] {
        let (frames, stderr) = probe_video(&s.http_url(&format!("/{key}/index.m3u8")), 4.0);
        assert_playable(key, &frames, 60, 426, 240, &stderr);
    }
}

/// The strict checker on a ladder for two minutes: the source's LL-HLS playlist followed with blocking reloads, every
/// answer checked; every few seconds each rung's playlist is checked too, and every rendition report is
/// followed to the part it names, which must exist (a blocking reload for it answers at once).
#[test]
fn a_ladder_under_the_strict_checker_for_two_minutes() {
    let s = ladder_node();
    let key = "live/llabr";
    let src = Source { width: 854, height: 480, seconds: 150.0, bitrate_k: 900, ..Source::default() };
    let _p = publish(&s.rtmp_url(key), &src);
    s.wait_live(key, Duration::from_secs(15));
    let renditions = ["/live/llabr/source.m3u8", "/live/llabr_360p/index.m3u8", "/live/llabr_240p/index.m3u8"];
    let t = Instant::now();
    for r in renditions {
        while !(s.get(r).status == 200 && s.get(r).text().contains("#EXT-X-RENDITION-REPORT")) {
            assert!(t.elapsed() < Duration::from_secs(40), "{r}: no LL-HLS playlist with reports");
            std::thread::sleep(Duration::from_millis(200));
        }
    }
    let source = renditions[0];
    let mut pl = parse_ll(&s.get(source).text());
    let (mut reloads, mut reports_followed, mut last_check) = (0, 0, Instant::now());
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(120) {
        let (msn, part) = pl.next_part();
        let r = s.get(&format!("{source}?_HLS_msn={msn}&_HLS_part={part}"));
        assert_eq!(r.status, 200, "{source} {msn}.{part}: {}", r.text());
        let text = r.text();
        let next = parse_ll(&text);
        next.check(&text);
        assert!(next.next_part() > (msn, part));
        assert!(next.media_sequence >= pl.media_sequence, "MEDIA-SEQUENCE never goes back");
        reloads += 1;
        if last_check.elapsed() > Duration::from_secs(5) {
            last_check = Instant::now();
            for rung in &renditions[1..] {
                let text = s.get(rung).text();
                parse_ll(&text).check(&text);
            }
            for report in text.lines().filter(|l| l.starts_with("#EXT-X-RENDITION-REPORT:")) {
                let uri = attr(report, "URI").unwrap();
                let other = format!("/live/{}", uri.trim_start_matches("../"));
                let (m, p) = (attr(report, "LAST-MSN").unwrap(), attr(report, "LAST-PART").unwrap());
                let t = Instant::now();
                let r = s.get(&format!("{other}?_HLS_msn={m}&_HLS_part={p}"));
                assert_eq!(r.status, 200, "{report}: {}", r.text());
                assert!(t.elapsed() < Duration::from_millis(300), "{report} names a part {other} does not have yet");
                reports_followed += 1;
            }
        }
        pl = next;
    }
    eprintln!("{reloads} blocking reloads of the source over 120 s, {reports_followed} rendition reports followed");
    assert!(reloads >= 400, "a part every ~200 ms: {reloads}");
    assert!(reports_followed >= 40);
}

#[test]
fn a_blocking_reload_while_the_publisher_is_away_is_answered_before_a_player_gives_up() {
    let s = Strom::start();
    let key = "live/away";
    let mut p = publish(&s.rtmp_url(key), &Source { seconds: 8.0, ..Source::default() });
    s.wait_live(key, Duration::from_secs(15));
    s.wait_segments(key, 2, Duration::from_secs(20));
    // The publisher goes (OBS reconnecting): the stream waits out its reconnect grace with no new part.
    assert!(p.wait(Duration::from_secs(30)).is_some(), "the publisher ends");
    std::thread::sleep(Duration::from_millis(500));
    let path = format!("/{key}/index.m3u8");
    let pl = parse_ll(&s.get(&path).text());
    let (msn, part) = pl.next_part();
    for _ in 0..2 {
        let t = Instant::now();
        let r = s.get(&format!("{path}?_HLS_msn={msn}&_HLS_part={part}"));
        let took = t.elapsed();
        // hls.js gives a blocking reload max(3 × PART-TARGET, 0.8 × TARGETDURATION) = 1.6 s here; a 503 after
        // 3 target durations would count as an error in the player.
        assert_eq!(r.status, 200, "{}", r.text());
        assert!(took < Duration::from_millis(1500), "answered after {took:?}");
        assert!(took >= Duration::from_millis(900), "held while the playlist was quiet: {took:?}");
        let now = parse_ll(&r.text());
        assert_eq!(now.next_part(), (msn, part), "the playlist as it is: the player asks again");
    }
}

#[test]
fn a_delta_update_asked_before_the_first_segment_waits_for_it_like_a_plain_playlist() {
    let s = Strom::start();
    let key = "live/early";
    let _p = publish(&s.rtmp_url(key), &Source { seconds: 30.0, ..Source::default() });
    s.wait_live(key, Duration::from_secs(15));
    // A player that reloads with `_HLS_skip=YES` right away (a new owner's playlist before its first part): held
    // until the first segment, not a 404.
    let r = s.get(&format!("/{key}/index.m3u8?_HLS_skip=YES"));
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(r.text().contains("#EXTINF"), "{}", r.text());
}

/// One answer read off a raw keep-alive connection: status, headers (lower-case names), body.
fn read_answer(c: &mut std::net::TcpStream) -> (u16, HashMap<String, String>, Vec<u8>) {
    use std::io::Read;
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        c.read_exact(&mut byte).expect("an answer head");
        head.push(byte[0]);
    }
    let text = String::from_utf8(head).unwrap();
    let mut lines = text.split("\r\n");
    let status = lines.next().unwrap().split(' ').nth(1).unwrap().parse().unwrap();
    let headers: HashMap<String, String> =
        lines.filter_map(|l| l.split_once(": ")).map(|(n, v)| (n.to_ascii_lowercase(), v.to_string())).collect();
    let len: usize = headers["content-length"].parse().unwrap();
    let mut body = vec![0u8; len];
    c.read_exact(&mut body).unwrap();
    (status, headers, body)
}

/// Live HLS is answered by the listener's own keep-alive loop: on one connection, a playlist, a blocking reload, a
/// part, a segment, an init segment and a bad name, each with the route's headers and the edge's CORS header;
/// then a request of another kind (the API) and two pipelined ones, which hyper answers on the same connection;
/// `Connection: close` is honoured.
#[test]
fn one_keep_alive_connection_carries_live_hls_and_hands_other_requests_to_hyper() {
    use std::io::Write;
    let s = Strom::start();
    let key = "live/keep";
    let _p = publish(&s.rtmp_url(key), &Source { seconds: 30.0, ..Source::default() });
    s.wait_live(key, Duration::from_secs(15));
    s.wait_segments(key, 2, Duration::from_secs(20));
    let mut c = std::net::TcpStream::connect(s.http).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let ask = |c: &mut std::net::TcpStream, target: &str, extra: &str| {
        write!(c, "GET {target} HTTP/1.1\r\nHost: x\r\n{extra}\r\n").unwrap();
        read_answer(c)
    };
    let (status, h, body) = ask(&mut c, &format!("/{key}/index.m3u8"), "");
    assert_eq!(status, 200);
    assert_eq!(h["content-type"], "application/vnd.apple.mpegurl");
    assert_eq!(h["cache-control"], "no-cache, no-store");
    assert_eq!(h["access-control-allow-origin"], "*");
    assert!(h.contains_key("date"), "{h:?}");
    let pl = parse_ll(&String::from_utf8(body).unwrap());
    let (msn, part) = pl.next_part();
    let (status, h, body) = ask(&mut c, &format!("/{key}/index.m3u8?_HLS_msn={msn}&_HLS_part={part}"), "");
    assert_eq!((status, h["cache-control"].as_str()), (200, "public, max-age=12"));
    let text = String::from_utf8(body).unwrap();
    let part_line = text.lines().rfind(|l| l.starts_with("#EXT-X-PART:")).expect("parts");
    let part_uri = attr(part_line, "URI").unwrap().to_string();
    let segment_uri = text.lines().rfind(|l| l.ends_with(".m4s") && !l.starts_with('#')).unwrap().to_string();
    let init_uri = attr(text.lines().find(|l| l.starts_with("#EXT-X-MAP:")).unwrap(), "URI").unwrap().to_string();
    for uri in [&part_uri, &segment_uri, &init_uri] {
        let (status, h, body) = ask(&mut c, &format!("/{key}/{uri}"), "");
        assert_eq!(status, 200, "{uri}");
        assert_eq!(h["cache-control"], "public, max-age=3600, immutable", "{uri}");
        assert!(!body.is_empty(), "{uri}");
        let want = s.get(&format!("/{key}/{uri}")).body;
        assert_eq!(body, want, "{uri}: the same bytes as a fresh connection's");
    }
    assert_eq!(ask(&mut c, &format!("/{key}/bad_name!.m4s"), "").0, 400);
    assert_eq!(ask(&mut c, &format!("/{key}/nothing-7.m4s"), "").0, 404);
    // Another kind of request: hyper takes the connection over, and keeps answering live HLS on it.
    let (status, h, _) = ask(&mut c, "/api/v1/streams", "");
    assert_eq!((status, h["content-type"].as_str()), (200, "application/json"));
    assert_eq!(ask(&mut c, &format!("/{key}/index.m3u8"), "").0, 200);
    // Pipelined requests on a fresh connection: both answered, in order.
    let mut p = std::net::TcpStream::connect(s.http).unwrap();
    p.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let one = format!("GET /{key}/index.m3u8 HTTP/1.1\r\nHost: x\r\n\r\n");
    let two = format!("GET /{key}/{init_uri} HTTP/1.1\r\nHost: x\r\n\r\n");
    p.write_all(format!("{one}{two}").as_bytes()).unwrap();
    let (a, b) = (read_answer(&mut p), read_answer(&mut p));
    assert_eq!((a.0, a.1["content-type"].as_str()), (200, "application/vnd.apple.mpegurl"));
    assert_eq!((b.0, b.1["content-type"].as_str()), (200, "video/mp4"));
    // `Connection: close`: answered, then closed.
    let mut d = std::net::TcpStream::connect(s.http).unwrap();
    d.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let (status, h, _) = ask(&mut d, &format!("/{key}/index.m3u8"), "Connection: close\r\n");
    assert_eq!((status, h.get("connection").map(String::as_str)), (200, Some("close")));
    let mut rest = Vec::new();
    assert_eq!(std::io::Read::read_to_end(&mut d, &mut rest).unwrap(), 0, "closed after the answer");
}

/// A preload-hinted part asked for before it is complete is sent as it is produced (rfc8216bis 6.2.6): chunked,
/// its first bytes well before its last, and the bytes are the part's, as served whole once it is complete. So
/// both from the listener's own keep-alive loop and from hyper (a connection hyper took over).
#[test]
fn a_preload_hinted_part_is_sent_as_it_is_produced() {
    use std::io::Write;
    let s = Strom::start();
    let key = "live/grow";
    let _p = publish(&s.rtmp_url(key), &Source { seconds: 40.0, ..Source::default() });
    s.wait_live(key, Duration::from_secs(15));
    s.wait_segments(key, 2, Duration::from_secs(20));
    let path = format!("/{key}/index.m3u8");
    for through_hyper in [false, true] {
        let mut spreads = Vec::new();
        for _ in 0..5 {
            let mut c = std::net::TcpStream::connect(s.http).unwrap();
            c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
            if through_hyper {
                // Another kind of request first: hyper takes the connection over.
                write!(c, "GET /api/v1/streams HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
                assert_eq!(read_answer(&mut c).0, 200);
            }
            // The newest playlist (a blocking reload for the next part), then at once the part it hints.
            let pl = parse_ll(&s.get(&path).text());
            let (msn, part) = pl.next_part();
            let text = s.get(&format!("{path}?_HLS_msn={msn}&_HLS_part={part}")).text();
            let hint = parse_ll(&text).preload.expect("a preload hint");
            let asked = Instant::now();
            write!(c, "GET /{key}/{hint} HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
            let (status, h, chunks) = read_chunked(&mut c);
            assert_eq!(status, 200);
            assert_eq!(h.get("transfer-encoding").map(String::as_str), Some("chunked"), "{h:?}");
            assert_eq!(h["content-type"], "video/iso.segment");
            assert_eq!(h["cache-control"], "public, max-age=3600, immutable");
            let body: Vec<u8> = chunks.iter().flat_map(|(d, _)| d.clone()).collect();
            assert_eq!(body, s.get(&format!("/{key}/{hint}")).body, "the streamed part is the part");
            assert_eq!(&body[4..8], b"moof");
            let (first, last) = (chunks[0].1, chunks[chunks.len() - 1].1);
            eprintln!(
                "hyper={through_hyper}: {} chunks, first after {:?}, last {:?} later",
                chunks.len(),
                first - asked,
                last - first
            );
            spreads.push((chunks.len(), last - first));
        }
        // A 200 ms part of 30 fps video comes in chunks of two frames (~67 ms apart): the first of them leaves
        // well before the part is complete. (Each try asks right after the previous part; the best of five is
        // kept, as a busy machine may hold a try's first chunk back.)
        let best = spreads.iter().max_by_key(|(_, d)| *d).unwrap();
        assert!(best.0 >= 2 && best.1 >= Duration::from_millis(60), "hyper={through_hyper}: {spreads:?}");
    }
}
