//! End-to-end tests of the ABR ladder: ffmpeg publishes, strom's encoders build the rungs, ffprobe checks what a
//! player gets from every variant (resolution, bitrate, keyframes at segment starts, aligned segments) and the
//! master playlist.

mod common;

use std::collections::BTreeMap;
use std::process::Command;
use std::time::{Duration, Instant};

use common::*;

/// A fast ladder for tests: ultrafast presets (2 cores run the publisher, the encoders and the probes).
const RUNGS: &str = "[{height = 720, bitrate_kbps = 1500, preset = \"ultrafast\", profile = \"high\"}, \
                      {height = 480, bitrate_kbps = 900, preset = \"ultrafast\", profile = \"high\"}, \
                      {height = 360, bitrate_kbps = 600, preset = \"ultrafast\", profile = \"main\"}, \
                      {height = 240, bitrate_kbps = 300, preset = \"ultrafast\", profile = \"baseline\"}]";

fn ladder_node() -> Strom {
    Strom::with_env(&[
        ("STROM_TRANSCODE_MODE", "always"),
        ("STROM_TRANSCODE_RUNGS", RUNGS),
        ("STROM_TRANSCODE_THREADS", "2"),
    ])
}

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
        seconds: 40.0,
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
    let base = |path: &str| path.rsplit_once('/').map(|(b, _)| b.to_string()).unwrap_or_default();
    let source_starts: BTreeMap<u64, f64> = {
        let (path, pl) = &playlists[0];
        pl.segments
            .iter()
            .enumerate()
            .filter_map(|(i, seg)| {
                let (_, f) = probe_segment(&s.http_url(&format!("{}/{}", base(path), seg.uri)));
                Some((pl.media_sequence + i as u64, f?.pts))
            })
            .collect()
    };
    for ((path, pl), (w, h, kbps)) in
        playlists[1..].iter().zip([(854, 480, 900.0), (640, 360, 600.0), (426, 240, 300.0)])
    {
        let (mut bytes, mut secs) = (0u64, 0.0);
        for (i, seg) in pl.segments.iter().enumerate() {
            let msn = pl.media_sequence + i as u64;
            let (b, first) = probe_segment(&s.http_url(&format!("{}/{}", base(path), seg.uri)));
            let first = first.unwrap_or_else(|| panic!("{path}: segment {msn} has no video"));
            assert!(first.key, "{path}: segment {msn} does not start with a keyframe");
            assert_eq!((first.width, first.height), (w, h), "{path}: segment {msn}");
            if let Some(src_pts) = source_starts.get(&msn) {
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
    let (_, first) = probe_segment(&s.http_url(&format!("/live/small_240p/{}", pl.segments[0].uri)));
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
