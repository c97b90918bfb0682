//! End-to-end tests of the ABR ladder: ffmpeg publishes, strom's encoders build the rungs, ffprobe checks what a
//! player gets from every variant (resolution, bitrate, keyframes at segment starts, aligned segments) and the
//! master playlist.

mod common;

use std::collections::BTreeMap;
use std::process::Command;
use std::time::{Duration, Instant};

use common::*;

/// One `EXT-X-STREAM-INF` entry: its attributes and URI.
#[derive(Debug)]
struct Variant {
    attrs: BTreeMap<String, String>,
    uri: String,
}

fn parse_master(text: &str) -> Vec<Variant> {
    let mut out = Vec::new();
    let mut lines = text.lines();
    while let Some(line) = lines.next() {
        let Some(rest) = line.strip_prefix("#EXT-X-STREAM-INF:") else { continue };
        let mut attrs = BTreeMap::new();
        let mut key = String::new();
        let mut val = String::new();
        let (mut in_key, mut quoted) = (true, false);
        for c in rest.chars().chain(std::iter::once(',')) {
            match c {
                '=' if in_key => in_key = false,
                '"' => quoted = !quoted,
                ',' if !quoted => {
                    attrs.insert(std::mem::take(&mut key), std::mem::take(&mut val));
                    in_key = true;
                }
                c if in_key => key.push(c),
                c => val.push(c),
            }
        }
        out.push(Variant { attrs, uri: lines.next().unwrap_or_default().to_string() });
    }
    out
}

/// Waits until `/{key}/index.m3u8` is a master playlist with `n` variants.
fn wait_master(s: &Strom, key: &str, n: usize, timeout: Duration) -> String {
    let deadline = Instant::now() + timeout;
    loop {
        let r = s.get(&format!("/{key}/index.m3u8"));
        let text = r.text();
        if r.status == 200 && text.matches("#EXT-X-STREAM-INF").count() >= n {
            return text;
        }
        assert!(
            Instant::now() < deadline,
            "{key}: no master playlist with {n} variants; last:\n{text}\n{}",
            s.log_tail(30)
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Waits until the media playlist at `path` lists at least `n` segments; returns it parsed.
fn wait_media(s: &Strom, path: &str, n: usize, timeout: Duration) -> MediaPlaylist {
    let deadline = Instant::now() + timeout;
    loop {
        let r = s.get(path);
        if r.status == 200 && r.text().matches("#EXTINF").count() >= n {
            return parse_playlist(&r.text());
        }
        assert!(Instant::now() < deadline, "{path}: fewer than {n} segments after {timeout:?}\n{}", s.log_tail(30));
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Resolves a variant URI against the master playlist's path.
fn resolve(master_path: &str, uri: &str) -> String {
    let mut parts: Vec<&str> = master_path.split('/').collect();
    parts.pop();
    for seg in uri.split('/') {
        match seg {
            ".." => {
                parts.pop();
            }
            s => parts.push(s),
        }
    }
    parts.join("/")
}

/// Video packet bytes of a segment (ffprobe), and the first video frame's (pts, key, width, height).
fn probe_segment(url: &str) -> (u64, Option<Frame>) {
    let out = run_with_timeout(
        Command::new("ffprobe")
            .args(["-v", "error", "-select_streams", "v:0", "-show_entries", "packet=size", "-of", "json"])
            .arg(url),
        Duration::from_secs(20),
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
    let bytes = v["packets"]
        .as_array()
        .map(|a| a.iter().filter_map(|p| p["size"].as_str()?.parse::<u64>().ok()).sum())
        .unwrap_or(0);
    let (frames, _) = probe_video(url, 0.05);
    (bytes, frames.first().cloned())
}

#[test]
fn a_720p_source_gets_an_aligned_ladder_and_a_master_playlist() {
    let s = ladder_node();
    let key = "live/abr";
    let src = Source {
        width: 1280,
        height: 720,
        fps: 30,
        gop_secs: 2.0,
        seconds: 60.0,
        bitrate_k: 2000,
        ..Source::default()
    };
    let _p = publish(&s.rtmp_url(key), &src);
    s.wait_live(key, Duration::from_secs(15));
    let master_path = format!("/{key}/index.m3u8");
    let master = wait_master(&s, key, 4, Duration::from_secs(30));
    assert!(master.starts_with("#EXTM3U\n"), "{master}");
    assert!(master.contains("#EXT-X-INDEPENDENT-SEGMENTS"), "{master}");
    let variants = parse_master(&master);
    assert_eq!(variants.len(), 4, "source + 480p + 360p + 240p, no 720p rung for a 720p source:\n{master}");
    let res: Vec<&str> = variants.iter().map(|v| v.attrs["RESOLUTION"].as_str()).collect();
    assert_eq!(res, vec!["1280x720", "854x480", "640x360", "426x240"], "{master}");
    let uris: Vec<&str> = variants.iter().map(|v| v.uri.as_str()).collect();
    assert_eq!(uris, vec!["source.m3u8", "../abr_480p/index.m3u8", "../abr_360p/index.m3u8", "../abr_240p/index.m3u8"]);
    assert_eq!(s.get("/live/abr_720p/index.m3u8").status, 404, "never upscale: no 720p rung");

    // CODECS from the real SPS (the rung streams' own sequence headers) and the AAC object type.
    let info = s.stream_info(key).unwrap();
    let source_codecs = format!("{},{}", info["video_codec"].as_str().unwrap(), info["audio_codec"].as_str().unwrap());
    assert_eq!(variants[0].attrs["CODECS"], source_codecs);
    // (x264's `profile` is a ceiling: with the ultrafast preset every rung comes out Constrained Baseline, and
    // CODECS says so because it is read from the rung's SPS.)
    for (v, name) in variants[1..].iter().zip(["abr_480p", "abr_360p", "abr_240p"]) {
        let rung = s.stream_info(&format!("live/{name}")).unwrap_or_else(|| panic!("rung stream {name} exists"));
        let codecs = &v.attrs["CODECS"];
        assert_eq!(codecs, &format!("{},mp4a.40.2", rung["video_codec"].as_str().unwrap()), "{name}");
        assert!(codecs.starts_with("avc1.42"), "{name}: {codecs}");
    }
    for v in &variants {
        assert_eq!(v.attrs["FRAME-RATE"], "30.000", "{v:?}");
        let peak: u64 = v.attrs["BANDWIDTH"].parse().unwrap();
        let avg: u64 = v.attrs["AVERAGE-BANDWIDTH"].parse().unwrap();
        assert!(avg > 50_000 && peak >= avg, "{v:?}");
    }

    // Every variant's media playlist: segment N has the same duration everywhere (same MSN, same EXTINF).
    let playlists: Vec<(String, MediaPlaylist)> = variants
        .iter()
        .map(|v| {
            let path = resolve(&master_path, &v.uri);
            let pl = wait_media(&s, &path, 5, Duration::from_secs(40));
            (path, pl)
        })
        .collect();
    // LL-HLS rendition reports: each rendition's playlist reports every other one, at a part that rendition lists.
    for (path, _) in &playlists {
        let text = s.get(path).text();
        let reports: Vec<&str> = text.lines().filter(|l| l.starts_with("#EXT-X-RENDITION-REPORT:")).collect();
        assert_eq!(reports.len(), 3, "{path}: a report for each other rendition:\n{text}");
        for r in reports {
            let uri = r.split("URI=\"").nth(1).and_then(|u| u.split('"').next()).unwrap();
            let other = resolve(path, uri);
            assert_ne!(&other, path, "{path} reports itself");
            let field = |f: &str| r.split(&format!("{f}=")).nth(1).and_then(|v| v.split(',').next()).unwrap();
            let (msn, part): (u64, u64) = (field("LAST-MSN").parse().unwrap(), field("LAST-PART").parse().unwrap());
            // That part exists: a blocking reload for it answers at once.
            let t = std::time::Instant::now();
            let r = s.get(&format!("{other}?_HLS_msn={msn}&_HLS_part={part}"));
            assert_eq!(r.status, 200, "{path} reports {other} at {msn}.{part}: {}", r.text());
            assert!(t.elapsed() < Duration::from_millis(500), "{other} {msn}.{part} was reported before it existed");
        }
    }
    // Take the playlists again at the same moment, now that every variant has segments.
    let playlists: Vec<(String, MediaPlaylist)> =
        playlists.into_iter().map(|(path, _)| (path.clone(), parse_playlist(&s.get(&path).text()))).collect();
    let durations = |pl: &MediaPlaylist| -> BTreeMap<u64, f64> {
        pl.segments.iter().enumerate().map(|(i, seg)| (pl.media_sequence + i as u64, seg.duration)).collect()
    };
    let source = durations(&playlists[0].1);
    for (path, pl) in &playlists[1..] {
        let rung = durations(pl);
        let common: Vec<u64> = rung.keys().filter(|k| source.contains_key(k)).copied().collect();
        assert!(common.len() >= 3, "{path}: too few segments in common with the source: {rung:?} vs {source:?}");
        for msn in &common {
            assert!(
                (rung[msn] - source[msn]).abs() < 0.002,
                "{path}: segment {msn} lasts {} but {} in the source\n{rung:?}\n{source:?}",
                rung[msn],
                source[msn]
            );
        }
        assert!(pl.independent, "{path}: EXT-X-INDEPENDENT-SEGMENTS");
    }

    // Each rung: keyframe and right size at every segment start, same start time as the source's segment,
    // and its video bitrate near the configured one.
    let source_starts: BTreeMap<u64, f64> = {
        let (path, pl) = &playlists[0];
        pl.segments
            .iter()
            .enumerate()
            .filter_map(|(i, seg)| {
                let (_, f) = probe_segment(&segment_source(&s, path, pl, &seg.uri));
                Some((pl.media_sequence + i as u64, f?.pts))
            })
            .collect()
    };
    let mut aligned = 0;
    for ((path, _), (w, h, kbps)) in
        playlists[1..].iter().zip([(854, 480, 900.0), (640, 360, 600.0), (426, 240, 300.0)])
    {
        // The rung's playlist as it is now: probing the earlier variants took a while on a loaded machine, and the
        // oldest segments of the earlier snapshot may have been retired since.
        let pl = parse_playlist(&s.get(path).text());
        let (mut bytes, mut secs) = (0u64, 0.0);
        for (i, seg) in pl.segments.iter().enumerate() {
            let msn = pl.media_sequence + i as u64;
            let (b, first) = probe_segment(&segment_source(&s, path, &pl, &seg.uri));
            let first = first.unwrap_or_else(|| panic!("{path}: segment {msn} has no video"));
            assert!(first.key, "{path}: segment {msn} does not start with a keyframe");
            assert_eq!((first.width, first.height), (w, h), "{path}: segment {msn}");
            if let Some(src_pts) = source_starts.get(&msn) {
                aligned += 1;
                assert!(
                    (first.pts - src_pts).abs() < 0.1,
                    "{path}: segment {msn} starts at {} vs source {src_pts}",
                    first.pts
                );
            }
            if msn > 0 {
                bytes += b;
                secs += seg.duration;
            }
        }
        let got = bytes as f64 * 8.0 / secs / 1000.0;
        eprintln!("{path}: {w}x{h}, video {got:.0} kb/s (configured {kbps}) over {secs:.1} s");
        assert!((got - kbps).abs() / kbps < 0.4, "{path}: video bitrate {got:.0} kb/s, configured {kbps}");
    }
    assert!(aligned >= 3, "too few rung segments compared with the source's start times: {aligned}");
    eprintln!("EXTINF source: {source:?}");

    // Every rung is a stream of its own: HTTP-FLV and RTMP play it too.
    let (frames, stderr) = probe_video(&s.http_url("/live/abr_360p.flv"), 2.0);
    assert_playable("flv 360p", &frames, 30, 640, 360, &stderr);
    let (frames, stderr) = probe_video(&s.rtmp_url("live/abr_240p"), 2.0);
    assert_playable("rtmp 240p", &frames, 30, 426, 240, &stderr);

    assert_eq!(s.metric("strom_encoder_rungs_active"), 3.0);
    assert!(s.metric("strom_encoder_frames_total{rung=\"480p\"}") > 200.0);
    let ratio = s.metric("strom_encoder_realtime_ratio{stream=\"live/abr\"}");
    eprintln!("strom_encoder_realtime_ratio = {ratio:.2}");
    assert!(ratio > 0.0, "ratio {ratio}");
    assert_eq!(s.metric("strom_encoder_restarts_total"), 0.0);
}

#[test]
fn a_480p_source_without_audio_gets_only_lower_rungs() {
    let s = ladder_node();
    let key = "live/small";
    let src = Source { width: 854, height: 480, audio: false, seconds: 30.0, bitrate_k: 1000, ..Source::default() };
    let _p = publish(&s.rtmp_url(key), &src);
    s.wait_live(key, Duration::from_secs(15));
    let master = wait_master(&s, key, 3, Duration::from_secs(30));
    let variants = parse_master(&master);
    let res: Vec<&str> = variants.iter().map(|v| v.attrs["RESOLUTION"].as_str()).collect();
    assert_eq!(res, vec!["854x480", "640x360", "428x240"], "{master}");
    for v in &variants {
        assert!(!v.attrs["CODECS"].contains("mp4a"), "no audio, no audio codec: {v:?}");
    }
    for name in ["small_720p", "small_480p"] {
        assert_eq!(s.get(&format!("/live/{name}/index.m3u8")).status, 404, "{name} would be an upscale");
    }
    let pl = wait_media(&s, "/live/small_240p/index.m3u8", 2, Duration::from_secs(30));
    let (_, first) = probe_segment(&segment_source(&s, "/live/small_240p/index.m3u8", &pl, &pl.segments[0].uri));
    let first = first.expect("video");
    assert!(first.key && (first.width, first.height) == (428, 240), "{first:?}");
    assert_eq!(probe_streams(&s.http_url("/live/small_360p.flv")), vec!["h264".to_string()]);
    assert_eq!(s.metric("strom_encoder_rungs_active"), 2.0);
}

#[test]
fn a_source_at_the_lowest_rung_is_served_as_published() {
    let s = ladder_node();
    let key = "live/tiny";
    let _p = publish(&s.rtmp_url(key), &Source { seconds: 20.0, ..Source::default() });
    let text = s.wait_segments(key, 1, Duration::from_secs(20));
    assert!(text.contains("#EXTINF") && !text.contains("#EXT-X-STREAM-INF"), "a media playlist:\n{text}");
    assert_eq!(s.metric("strom_encoder_rungs_active"), 0.0);
}

/// Ladders per application: `live` gets its own one-rung ladder, `studio` the node's default mode (off).
#[test]
fn each_application_gets_its_own_ladder_settings() {
    let s = Strom::with_env(&[
        ("STROM_TRANSCODE_MODE", "off"),
        (
            "STROM_TRANSCODE_APPS",
            "{live = {mode = \"always\", rungs = [{height = 160, bitrate_kbps = 200, preset = \"ultrafast\"}]}}",
        ),
        ("STROM_TRANSCODE_THREADS", "1"),
    ]);
    let src = Source { seconds: 30.0, ..Source::default() };
    let _live = publish(&s.rtmp_url("live/cam"), &src);
    let _studio = publish(&s.rtmp_url("studio/cam"), &src);
    let master = wait_master(&s, "live/cam", 2, Duration::from_secs(30));
    assert_eq!(resolutions(&master), ["426x240", "284x160"], "{master}");
    let text = s.wait_segments("studio/cam", 1, Duration::from_secs(20));
    assert!(!text.contains("#EXT-X-STREAM-INF"), "studio has no ladder: a media playlist\n{text}");
    assert_eq!(s.get("/studio/cam_160p/index.m3u8").status, 404);
    assert_eq!(s.metric("strom_encoder_rungs_active"), 1.0);
}

/// The RESOLUTION of every variant of a master playlist, in order.
fn resolutions(master: &str) -> Vec<String> {
    parse_master(master).iter().map(|v| v.attrs.get("RESOLUTION").cloned().unwrap_or_default()).collect()
}

/// Polls `/{key}/index.m3u8` until it is a master playlist whose variants have exactly these resolutions.
fn wait_master_sizes(s: &Strom, key: &str, sizes: &[&str], timeout: Duration) -> String {
    let deadline = Instant::now() + timeout;
    loop {
        let text = s.get(&format!("/{key}/index.m3u8")).text();
        if resolutions(&text) == sizes {
            return text;
        }
        assert!(
            Instant::now() < deadline,
            "{key}: no master playlist with {sizes:?}; last:\n{text}\n{}",
            s.log_tail(30)
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// The media sequence number of the newest segment of a playlist (0 when it has none).
fn last_msn(pl: &MediaPlaylist) -> u64 {
    (pl.media_sequence + pl.segments.len() as u64).saturating_sub(1)
}

/// Polls the media playlist at `path` until a segment numbered above `after_msn` starts a discontinuity and at
/// least `segments` segments (that one included) follow from it; returns the playlist and the index of that
/// segment. Asserts on every poll that the media sequence never goes back.
fn wait_discontinuity(
    s: &Strom,
    path: &str,
    after_msn: u64,
    segments: usize,
    timeout: Duration,
) -> (MediaPlaylist, usize) {
    let deadline = Instant::now() + timeout;
    let mut seen = 0;
    loop {
        let r = s.get(path);
        if r.status == 200 {
            let pl = parse_playlist(&r.text());
            assert!(pl.media_sequence >= seen, "{path}: media sequence went back from {seen} to {}", pl.media_sequence);
            seen = pl.media_sequence;
            let found = pl
                .segments
                .iter()
                .enumerate()
                .position(|(i, seg)| seg.discontinuity && pl.media_sequence + i as u64 > after_msn);
            if let Some(d) = found.filter(|d| pl.segments.len() - d >= segments) {
                return (pl, d);
            }
        }
        assert!(
            Instant::now() < deadline,
            "{path}: no discontinuity after segment {after_msn} followed by {segments} segments:\n{}\n{}",
            r.text(),
            s.log_tail(30)
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// The first video frame of every listed segment of the playlist at `path` from index `from` on.
fn first_frames(s: &Strom, path: &str, pl: &MediaPlaylist, from: usize) -> Vec<(u64, Frame)> {
    pl.segments[from..]
        .iter()
        .enumerate()
        .map(|(i, seg)| {
            let msn = pl.media_sequence + (from + i) as u64;
            let (_, f) = probe_segment(&segment_source(s, path, pl, &seg.uri));
            (msn, f.unwrap_or_else(|| panic!("{path}: segment {msn} has no video")))
        })
        .collect()
}

fn wait_metric(s: &Strom, series: &str, min: f64, timeout: Duration) -> f64 {
    let deadline = Instant::now() + timeout;
    loop {
        let v = s.metric(series);
        if v >= min || Instant::now() > deadline {
            return v;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// One publisher connection, one new AVC sequence header: 720p for 10 s, then 480p. The encoder fails on the new
/// configuration, its supervisor restarts it, and the ladder is planned again for the new size.
#[test]
fn a_new_sequence_header_mid_stream_restarts_the_ladder_at_the_new_size() {
    let s = ladder_node();
    let dir = scratch("seqhdr");
    let (big, small) = (dir.join("720p.flv"), dir.join("480p.flv"));
    flv::encode(&Source { width: 1280, height: 720, seconds: 10.0, bitrate_k: 1500, ..Source::default() }, &big);
    flv::encode(&Source { width: 854, height: 480, seconds: 30.0, bitrate_k: 900, ..Source::default() }, &small);
    let tags = flv::splice(&flv::read_tags(&big), &flv::read_tags(&small), 33);
    assert_eq!(tags.iter().filter(|t| t.is_avc_header()).count(), 2, "two AVC configurations on one connection");
    let key = "live/change";
    let publisher = flv::publish_tags(s.rtmp, "live", "change", tags);
    s.wait_live(key, Duration::from_secs(15));

    // Before the change: the source and three rungs, each with segments.
    let master = wait_master(&s, key, 4, Duration::from_secs(30));
    assert_eq!(resolutions(&master), ["1280x720", "854x480", "640x360", "426x240"], "{master}");
    let paths = [
        "/live/change/source.m3u8",
        "/live/change_480p/index.m3u8",
        "/live/change_360p/index.m3u8",
        "/live/change_240p/index.m3u8",
    ];
    let before: Vec<u64> = paths.iter().map(|p| last_msn(&wait_media(&s, p, 2, Duration::from_secs(30)))).collect();
    assert_eq!(s.metric("strom_encoder_restarts_total"), 0.0);
    let (frames, _) = probe_video(&s.http_url("/live/change.flv"), 0.2);
    assert!(frames.first().is_some_and(|f| (f.width, f.height) == (1280, 720)), "still the 720p part: {frames:?}");

    // After: the source is 480p, so the 480p rung would be as big as its source: the master drops it.
    let master = wait_master_sizes(&s, key, &["854x480", "640x360", "428x240"], Duration::from_secs(30));
    let uris: Vec<String> = parse_master(&master).into_iter().map(|v| v.uri).collect();
    assert_eq!(uris, ["source.m3u8", "../change_360p/index.m3u8", "../change_240p/index.m3u8"], "{master}");
    assert!(s.metric("strom_encoder_restarts_total") >= 1.0, "the new configuration restarted the encoder");

    // The source and each remaining rung: a discontinuity, the media sequence going on from where it was, and
    // every segment from the discontinuity on decoding at its new size, starting with a keyframe.
    let mut change_msn = 0;
    for (i, (w, h)) in [(0, (854, 480)), (2, (640, 360)), (3, (428, 240))] {
        let path = paths[i];
        let (pl, d) = wait_discontinuity(&s, path, before[i], 2, Duration::from_secs(30));
        let msn = pl.media_sequence + d as u64;
        change_msn = change_msn.max(msn);
        assert!(msn > before[i], "{path}: numbering goes on: discontinuity at {msn}, {} before", before[i]);
        for (msn, f) in first_frames(&s, path, &pl, d) {
            assert!(f.key, "{path}: segment {msn} does not start with a keyframe");
            assert_eq!((f.width, f.height), (w, h), "{path}: segment {msn}");
        }
        if d > 0 && i == 0 {
            let (msn, f) = first_frames(&s, path, &pl, d - 1).remove(0);
            assert_eq!((f.width, f.height), (1280, 720), "{path}: segment {msn}, before the change");
        }
        eprintln!("{path}: discontinuity at segment {msn} (last before the change: {})", before[i]);
    }

    // The 480p rung gets no segment after the change, and it ends at once (ENDLIST), so a player still on that
    // variant learns it is over instead of waiting out the reconnect grace.
    let pl480 = parse_playlist(&s.get(paths[1]).text());
    assert!(last_msn(&pl480) < change_msn, "480p rung after the change: {pl480:?}");
    assert!(pl480.ended, "480p rung ended with ENDLIST: {pl480:?}");
    let rung480 = s.stream_info("live/change_480p").expect("480p rung listed");
    assert_eq!(rung480["state"], "ended", "{rung480}");
    let (frames, _) = probe_video(&s.http_url("/live/change.flv"), 0.2);
    assert!(frames.first().is_some_and(|f| (f.width, f.height) == (854, 480)), "the 480p part: {frames:?}");
    assert_eq!(s.metric("strom_encoder_rungs_active"), 2.0);
    let info = s.stream_info(key).expect("source listed");
    assert_eq!(info["state"], "live", "one publish throughout: {info}");
    assert!(publisher.is_running(), "the publisher is still sending the 480p part");
    assert_eq!(publisher.stop(), Ok(()), "the publisher was never refused or cut");
}

/// Garbage inside valid FLV video tags for one second, mid-GOP: every NAL unit's bytes past its 16th (the slice
/// headers stay readable, the macroblocks are noise). FFmpeg's decoder conceals such damage rather than refusing
/// it; the encoder must not encode it into the rungs but fail and be restarted, while the source itself plays on
/// untouched.
#[test]
fn garbage_inside_video_tags_restarts_the_encoder_and_the_source_plays_on() {
    let s = ladder_node();
    let file = scratch("garbage").join("480p.flv");
    flv::encode(&Source { width: 854, height: 480, seconds: 30.0, bitrate_k: 900, ..Source::default() }, &file);
    let mut tags = flv::read_tags(&file);
    let mut seed = 0x5eed_u64;
    let garbled: Vec<u32> = tags
        .iter_mut()
        .filter(|t| t.is_avc_picture() && !t.is_keyframe() && (10_500..11_500).contains(&t.ts))
        .map(|t| {
            flv::garble(t, 16, &mut seed);
            t.ts
        })
        .collect();
    assert!(garbled.len() >= 25, "{garbled:?}");
    let key = "live/garbage";
    let started = Instant::now();
    let publisher = flv::publish_tags(s.rtmp, "live", "garbage", tags);
    s.wait_live(key, Duration::from_secs(15));
    let master = wait_master(&s, key, 3, Duration::from_secs(30));
    assert_eq!(resolutions(&master), ["854x480", "640x360", "428x240"], "{master}");
    let rungs = [("/live/garbage_360p/index.m3u8", (640, 360)), ("/live/garbage_240p/index.m3u8", (428, 240))];
    let before: Vec<u64> =
        rungs.iter().map(|(p, _)| last_msn(&wait_media(&s, p, 1, Duration::from_secs(30)))).collect();
    assert_eq!(s.metric("strom_encoder_restarts_total"), 0.0, "a clean source restarts nothing");

    // A viewer of the source (HTTP-FLV) from before the garbage until well after it.
    let lead = started.elapsed();
    assert!(lead < Duration::from_secs(9), "the setup took {lead:?}: the viewer would start after the garbage");
    let flv_url = s.http_url(&format!("/{key}.flv"));
    let viewer = std::thread::spawn(move || probe_video(&flv_url, 10.0));

    let restarts = wait_metric(&s, "strom_encoder_restarts_total", 1.0, Duration::from_secs(25));
    assert!(restarts >= 1.0, "the garbage did not restart the encoder\n{}", s.log_tail(30));
    let log = s.log_text();
    assert!(log.contains("corrupt source picture"), "the failure names the corruption:\n{}", s.log_tail(30));
    let source_path = format!("/{key}/source.m3u8");
    let source_pl = parse_playlist(&s.get(&source_path).text());

    // The rungs come back: a discontinuity, numbering going on, segments at their size from a keyframe.
    for ((path, (w, h)), before) in rungs.iter().zip(before) {
        let (pl, d) = wait_discontinuity(&s, path, before, 2, Duration::from_secs(30));
        for (msn, f) in first_frames(&s, path, &pl, d) {
            assert!(f.key && (f.width, f.height) == (*w, *h), "{path}: segment {msn}: {f:?}");
        }
        eprintln!("{path}: back at segment {} (last before: {before})", pl.media_sequence + d as u64);
    }
    let master = wait_master(&s, key, 3, Duration::from_secs(10));
    assert_eq!(resolutions(&master), ["854x480", "640x360", "428x240"], "{master}");

    // The viewer saw every picture: ten seconds at 30 fps, no gap, the garbled ones concealed by its decoder.
    let (frames, stderr) = viewer.join().expect("viewer");
    assert_playable("source flv", &frames, 280, 854, 480, &stderr);
    let gap = frames.windows(2).map(|w| w[1].pts - w[0].pts).fold(0.0, f64::max);
    assert!(gap < 0.1, "the source stalled for {gap:.3} s");
    // The source's HLS, as listed when the encoder failed: no discontinuity (its publisher never left), every
    // segment decodes whole, the garbled one included.
    assert!(source_pl.segments.iter().all(|seg| !seg.discontinuity), "{source_pl:?}");
    for (i, seg) in source_pl.segments.iter().enumerate() {
        let msn = source_pl.media_sequence + i as u64;
        let (frames, stderr) = probe_video(&segment_source(&s, "/live/garbage/index.m3u8", &source_pl, &seg.uri), 5.0);
        let want = (seg.duration * 30.0 * 0.9) as usize;
        assert_playable(&format!("source segment {msn}"), &frames, want, 854, 480, &stderr);
    }
    let now = parse_playlist(&s.get(&source_path).text());
    assert!(last_msn(&now) > last_msn(&source_pl), "the source's playlist goes on: {now:?}");
    assert!(publisher.is_running(), "the publisher is still sending: every check above ran on a live stream");
    assert_eq!(publisher.stop(), Ok(()));
    assert_eq!(s.metric("strom_encoder_rungs_active"), 2.0);
    for line in s.log_text().lines().filter(|l| l.contains("encoder failed")) {
        eprintln!("{}", line.split_once("error=").map_or(line, |(_, e)| e));
    }
    // The restarted encoder started at the next live keyframe, not from the cached (garbled) GOP: one restart.
    assert_eq!(s.metric("strom_encoder_restarts_total"), 1.0, "{}", s.log_tail(30));
}

/// A corpus of corrupt bitstreams fed to the ladder (FFmpeg decodes publishers' video in-process: strom's
/// isolation is the decoder's own hardening plus a contained encoder restart, not a child process; this is the
/// test of that choice). Seven mutations of one clean stream, each published while a clean stream keeps its
/// ladder: random bit flips, bogus NAL length prefixes, random NAL types, truncated tags, garbled sequence headers
/// sent again mid-stream, garbled keyframes, garbled AAC. The node never goes down, the clean stream and its rungs
/// play on, and each mutated stream fails only itself.
#[test]
fn a_corpus_of_corrupt_bitstreams_never_takes_the_node_down() {
    let rungs = "[{height = 240, bitrate_kbps = 300, preset = \"ultrafast\"}, \
                  {height = 160, bitrate_kbps = 200, preset = \"ultrafast\"}]";
    let mut s = Strom::with_env(&[
        ("STROM_TRANSCODE_MODE", "always"),
        ("STROM_TRANSCODE_RUNGS", rungs),
        ("STROM_TRANSCODE_THREADS", "1"),
        ("STROM_TRANSCODE_MAX_STREAMS", "4"),
    ]);
    let pid = s.pid();
    let clean = "live/clean";
    let _clean = publish(&s.rtmp_url(clean), &Source { width: 640, height: 360, seconds: 120.0, ..Source::default() });
    wait_master(&s, clean, 3, Duration::from_secs(30));
    let file = scratch("corpus").join("base.flv");
    flv::encode(&Source { width: 640, height: 360, seconds: 6.0, gop_secs: 1.0, ..Source::default() }, &file);
    let base = flv::read_tags(&file);
    let mut seed = 0xc0ffee_u64;
    let mut g = move || flv::garbage(&mut seed);
    type Mutation = fn(&mut Vec<flv::Tag>, &mut dyn FnMut() -> u8);
    let corpus: [(&str, Mutation); 7] = [
        ("bitflips", |tags, g| {
            for t in tags.iter_mut().filter(|t| t.is_avc_picture()) {
                for i in 5..t.data.len() {
                    if g() < 4 {
                        t.data[i] ^= g() | 1;
                    }
                }
            }
        }),
        ("lengths", |tags, g| {
            for t in tags.iter_mut().filter(|t| t.is_avc_picture() && t.data.len() >= 9) {
                for b in &mut t.data[5..9] {
                    *b = g();
                }
            }
        }),
        ("naltypes", |tags, g| {
            for t in tags.iter_mut().filter(|t| t.is_avc_picture() && t.data.len() > 9) {
                t.data[9] = g();
            }
        }),
        ("truncated", |tags, g| {
            for t in tags.iter_mut().filter(|t| t.is_avc_picture()) {
                let keep = 5 + usize::from(g()) * (t.data.len() - 5) / 256;
                t.data.truncate(keep);
            }
        }),
        ("headers", |tags, g| {
            let header = tags.iter().find(|t| t.is_avc_header()).cloned().expect("a sequence header");
            let mut out = Vec::new();
            for t in tags.drain(..) {
                if t.is_keyframe() && t.is_avc_picture() {
                    let mut h = flv::Tag { ts: t.ts, ..header.clone() };
                    for b in h.data.iter_mut().skip(6) {
                        if g() < 32 {
                            *b = g();
                        }
                    }
                    out.push(h);
                }
                out.push(t);
            }
            *tags = out;
        }),
        ("keyframes", |tags, g| {
            let mut seed = u64::from(g()) << 8 | 1;
            for t in tags.iter_mut().filter(|t| t.is_avc_picture()) {
                flv::garble(t, 0, &mut seed);
            }
        }),
        ("audio", |tags, g| {
            for t in tags.iter_mut().filter(|t| t.kind == flv::AUDIO) {
                for b in t.data.iter_mut().skip(2) {
                    *b = g();
                }
            }
        }),
    ];
    let names: Vec<&str> = corpus.iter().map(|(n, _)| *n).collect();
    for pair in corpus.chunks(2) {
        let publishers: Vec<_> = pair
            .iter()
            .map(|(name, mutate)| {
                let mut tags = base.clone();
                mutate(&mut tags, &mut g);
                flv::publish_tags(s.rtmp, "live", &format!("corrupt_{name}"), tags)
            })
            .collect();
        for p in publishers {
            let _ = p.stop_when_done(Duration::from_secs(20)); // a refusal or a cut is fine: it is that stream's own
        }
        assert!(s.is_running(), "strom went down on {pair:?}:\n{}", s.log_tail(40));
        assert_eq!(s.get("/healthz").status, 200);
    }
    assert_eq!(s.pid(), pid);
    assert!(s.is_running(), "{}", s.log_tail(40));
    let (frames, stderr) = probe_video(&s.http_url(&format!("/{clean}.flv")), 2.0);
    assert_playable("the clean stream after the corpus", &frames, 45, 640, 360, &stderr);
    let master = wait_master(&s, clean, 3, Duration::from_secs(10));
    let rung = s.wait_segments("live/clean_160p", 1, Duration::from_secs(10));
    assert!(!rung.is_empty(), "{master}");
    eprintln!(
        "corpus {names:?}: node up; encoder restarts {}, frames dropped as malformed {}",
        s.metric("strom_encoder_restarts_total"),
        s.metric("strom_frames_dropped_total{reason=\"malformed\"}")
    );
}
