//! A real browser plays strom's output: hls.js (HLS) and mpegts.js (HTTP-FLV) in Debian's headless Chromium,
//! driven by `browser/play.mjs` (playwright-core). Requires `nodes/tests/browser/setup.sh` to have run (the test
//! scripts do it); set `STROM_SKIP_BROWSER=1` to skip on a machine without Chromium.

mod common;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use common::*;

/// Each test runs a Chromium that decodes video next to strom (and, for the ladder, its encoders): on a 2-core
/// machine two of them at once starve the ladder, which then sheds a rung the player is meant to switch to.
static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn alone() -> std::sync::MutexGuard<'static, ()> {
    ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner())
}

fn play(kind: &str, url: &str) -> (bool, String, String) {
    play_with(kind, url, &[])
}

fn play_with(kind: &str, url: &str, extra: &[&str]) -> (bool, String, String) {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/browser/play.mjs");
    let out = run_with_timeout(
        Command::new("node")
            .arg(script)
            .args(["--kind", kind, "--url", url, "--seconds", "15", "--expect-width", "640", "--expect-height", "360"])
            .args(["--wait-ready", "15"])
            .args(extra),
        Duration::from_secs(150),
    );
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    if out.status.code() == Some(2) {
        panic!("browser harness not set up (run nodes/tests/browser/setup.sh): {stderr}");
    }
    (out.status.success(), stdout, stderr)
}

/// `n` namespaced nodes with a 640x360 stream `key` of `seconds` published on strom-0, once `viewer` lists its
/// segments (its HLS comes from strom-0).
fn cluster_with_stream(
    n: usize,
    cookie: &str,
    key: &str,
    seconds: f64,
    viewer: usize,
) -> (common::netns::Net, Vec<common::netns::NetNode>, Proc) {
    cluster_with_stream_env(n, cookie, key, seconds, viewer, &[])
}

/// [`cluster_with_stream`] with `STROM_*` settings on every node.
fn cluster_with_stream_env(
    n: usize,
    cookie: &str,
    key: &str,
    seconds: f64,
    viewer: usize,
    env: &[(&str, &str)],
) -> (common::netns::Net, Vec<common::netns::NetNode>, Proc) {
    let net = common::netns::Net::new(n);
    let nodes: Vec<_> = (0..n).map(|i| net.spawn_cluster_with(i, cookie, &[], env)).collect();
    let t = Instant::now();
    while !nodes[viewer].get("/api/v1/cluster").text().contains("\"strom-0\"") {
        let tail = nodes[viewer].log_tail(20);
        assert!(t.elapsed() < Duration::from_secs(15), "strom-{viewer} never saw strom-0\n{tail}");
        std::thread::sleep(Duration::from_millis(100));
    }
    let src = Source { width: 640, height: 360, seconds, bitrate_k: 800, ..Source::default() };
    let p = publish(&nodes[0].rtmp_url(key), &src);
    while !nodes[viewer].get(&format!("/{key}/index.m3u8")).text().contains("#EXTINF") {
        assert!(t.elapsed() < Duration::from_secs(40), "no HLS on strom-{viewer}\n{}", nodes[viewer].log_tail(20));
        std::thread::sleep(Duration::from_millis(200));
    }
    (net, nodes, p)
}

/// Whether browser tests are skipped (`STROM_SKIP_BROWSER=1`).
/// `play.mjs --switch-levels` showed every level of `want` (sorted by size): hls.js switched to each, and the
/// video element itself reported each size (its `resize` events), not only the player's level list.
fn assert_every_level_shown(v: &serde_json::Value, want: &[(u64, u64)]) {
    let mut shown: Vec<(u64, u64)> = v["levels"]
        .as_array()
        .expect("levels")
        .iter()
        .map(|l| {
            assert_eq!(l["shown"], true, "{l}");
            (l["width"].as_u64().unwrap_or(0), l["height"].as_u64().unwrap_or(0))
        })
        .collect();
    shown.sort();
    assert_eq!(shown, want, "{v}");
    let sizes: Vec<(u64, u64)> = v["sizes_shown"]
        .as_array()
        .expect("sizes")
        .iter()
        .map(|s| (s[1].as_u64().unwrap_or(0), s[2].as_u64().unwrap_or(0)))
        .collect();
    for size in &shown {
        assert!(sizes.contains(size), "the video never showed {size:?}: {sizes:?}");
    }
}

fn skipped() -> bool {
    let skip = std::env::var("STROM_SKIP_BROWSER").is_ok_and(|v| v == "1");
    if skip {
        eprintln!("STROM_SKIP_BROWSER=1: skipped");
    }
    skip
}

#[test]
fn hls_js_and_mpegts_js_play_the_live_stream_in_chromium() {
    let _alone = alone();
    if skipped() {
        return;
    }
    let s = Strom::start();
    let _p = publish(
        &s.rtmp_url("live/browser"),
        &Source { width: 640, height: 360, seconds: 60.0, bitrate_k: 800, ..Source::default() },
    );
    s.wait_live("live/browser", Duration::from_secs(15));
    let hls_url = s.http_url("/live/browser/index.m3u8");
    let flv_url = s.http_url("/live/browser.flv");
    let hls = std::thread::spawn(move || play("hls", &hls_url));
    let flv = std::thread::spawn(move || play("flv", &flv_url));
    for (what, h) in [("hls.js", hls), ("mpegts.js", flv)] {
        let (ok, stdout, stderr) = h.join().unwrap();
        eprintln!("{what}: {}", stdout.trim());
        assert!(ok, "{what} playback failed: {stdout}\n{stderr}");
        let v: serde_json::Value = serde_json::from_str(stdout.trim().lines().last().unwrap_or("{}")).unwrap();
        assert_eq!(v["ok"], true);
        assert!(v["played_seconds"].as_f64().unwrap() > 10.0, "{what}: {v}");
        assert!(v["hash_changes"].as_u64().unwrap() >= 8, "{what}: frames keep changing: {v}");
    }
}

/// hls.js on a cluster node that does not own the stream (the StatefulSet case: the player's pod is not the
/// publisher's): ffmpeg publishes to strom-0, Chromium plays HLS from strom-1 (playlist and segments from the owner).
#[test]
fn hls_js_plays_from_a_cluster_node_that_does_not_own_the_stream() {
    let _alone = alone();
    if skipped() {
        return;
    }
    let key = "live/clustered";
    let (_net, nodes, _p) = cluster_with_stream(2, "browser-cookie", key, 60.0, 1);
    let (ok, stdout, stderr) = play("hls", &nodes[1].http_url(&format!("/{key}/index.m3u8")));
    eprintln!("hls.js on strom-1: {}", stdout.trim());
    assert!(ok, "hls.js playback from strom-1 failed: {stdout}\n{stderr}");
    let v: serde_json::Value = serde_json::from_str(stdout.trim().lines().last().unwrap_or("{}")).unwrap();
    assert!(v["played_seconds"].as_f64().unwrap_or(0.0) > 10.0, "{v}");
    assert!(v["hash_changes"].as_u64().unwrap_or(0) >= 8, "frames keep changing: {v}");
}

/// LL-HLS as a viewer sees it: hls.js with `lowLatencyMode` in Chromium, 60 s on the owner and 60 s on a node
/// that does not own the stream, in a 3-node cluster. Live latency is the wall clock minus the PROGRAM-DATE-TIME
/// of the frame on screen (`hls.playingDate`; PDT is strom's ingest wall clock). hls.js may catch up at 1.5×
/// (`maxLiveSyncPlaybackRate`, as LL deployments set it): with hls.js's default of 1× a player keeps whatever
/// latency its start-up left it with (1.1–1.6 s measured on this VM).
#[test]
fn hls_js_low_latency_is_under_one_and_a_half_seconds_on_the_owner_and_on_another_node() {
    let _alone = alone();
    if skipped() {
        return;
    }
    let key = "live/low";
    let (_net, nodes, _p) = cluster_with_stream(3, "ll-cookie", key, 170.0, 1);
    for (what, node) in [("owner strom-0", &nodes[0]), ("strom-1, not the owner", &nodes[1])] {
        let url = node.http_url(&format!("/{key}/index.m3u8"));
        let (ok, stdout, stderr) =
            play_with("hls", &url, &["--seconds", "60", "--low-latency", "on", "--catch-up", "1.5"]);
        eprintln!("hls.js LL on {what}: {}", stdout.trim());
        assert!(ok, "{what}: playback failed: {stdout}\n{stderr}");
        let v: serde_json::Value = serde_json::from_str(stdout.trim().lines().last().unwrap_or("{}")).unwrap();
        let (p50, p99) =
            (v["latency_p50_ms"].as_f64().unwrap_or(f64::MAX), v["latency_p99_ms"].as_f64().unwrap_or(f64::MAX));
        assert!(v["latency_samples"].as_u64().unwrap_or(0) >= 50, "{what}: {v}");
        // On a miss, stderr carries the player's fragment trace (what was loaded, what was buffered, each playlist).
        assert!(p50 <= 1500.0 && p99 <= 2500.0, "{what}: live latency p50 {p50} ms, p99 {p99} ms: {v}\n{stderr}");
        assert_eq!(v["stalls"], 0, "{what}: {v}\n{stderr}");
    }
}

/// LL-HLS failover as a viewer on another pod sees it: hls.js (lowLatencyMode) plays from strom-2 while the owner,
/// strom-0, is SIGKILLed mid-stream and the publisher comes back on strom-1. hls.js must report no fatal error and
/// play on, stalling no longer than the publisher is away (about 2 s here) plus slack for a loaded machine; every
/// playlist strom-2 serves keeps its media sequence monotonic, with a discontinuity at the new owner. (While no
/// node owns the stream, strom-2 serves the last playlist with its open segment closed, and the new owner numbers
/// on from it, so hls.js joins the two playlists exactly.)
#[test]
fn hls_js_on_another_node_plays_through_an_owner_kill() {
    let _alone = alone();
    if skipped() {
        return;
    }
    let key = "live/failover";
    let (_net, mut nodes, p0) = cluster_with_stream(3, "failover-cookie", key, 120.0, 2);
    let src = Source { width: 640, height: 360, seconds: 120.0, bitrate_k: 800, ..Source::default() };
    let url = nodes[2].http_url(&format!("/{key}/index.m3u8"));
    let player = std::thread::spawn(move || {
        play_with("hls", &url, &["--seconds", "40", "--low-latency", "on", "--max-stall", "15"])
    });
    // Watch strom-2's playlist throughout: the media sequence never goes back.
    let mut sequences: Vec<(u64, bool)> = Vec::new();
    let mut watch = |nodes: &[common::netns::NetNode], until: Duration| {
        let start = Instant::now();
        while start.elapsed() < until {
            let text = nodes[2].get(&format!("/{key}/index.m3u8")).text();
            if let Some(msn) = text.lines().find_map(|l| l.strip_prefix("#EXT-X-MEDIA-SEQUENCE:")) {
                sequences.push((msn.trim().parse().unwrap_or(0), text.contains("#EXT-X-DISCONTINUITY")));
            }
            std::thread::sleep(Duration::from_millis(250));
        }
    };
    watch(&nodes, Duration::from_secs(14));
    drop(p0);
    nodes[0].kill();
    std::thread::sleep(Duration::from_secs(1));
    let _p1 = publish(&nodes[1].rtmp_url(key), &src);
    watch(&nodes, Duration::from_secs(20));
    let (ok, stdout, stderr) = player.join().unwrap();
    eprintln!("hls.js through the failover: {}", stdout.trim());
    assert!(ok, "hls.js on strom-2 failed through the owner kill: {stdout}\n{stderr}");
    let v: serde_json::Value = serde_json::from_str(stdout.trim().lines().last().unwrap_or("{}")).unwrap();
    assert!(v["errors"].as_array().is_some_and(|e| e.is_empty()), "no fatal error: {v}");
    assert!(v["played_seconds"].as_f64().unwrap_or(0.0) > 25.0, "played on after the failover: {v}");
    let stall = v["longest_stall_seconds"].as_f64().unwrap_or(f64::MAX);
    assert!(stall <= 5.0, "hls.js stalled {stall} s through the failover (the publisher is away ~2 s): {v}");
    let back = sequences.windows(2).filter(|w| w[1].0 < w[0].0).count();
    assert_eq!(back, 0, "MEDIA-SEQUENCE went back on strom-2: {sequences:?}");
    assert!(sequences.iter().any(|s| s.1), "a discontinuity at the new owner: {sequences:?}");
}

/// The ABR ladder as a viewer's player uses it: ffmpeg publishes 1280x720@30 with 2 s GOPs, strom builds the
/// 480p/360p/240p rungs, hls.js plays the master playlist and is forced through every level (`hls.nextLevel`).
/// The `<video>` must show each level's size, `currentTime` must keep advancing through every switch, and hls.js
/// must report no fatal error.
#[test]
fn hls_js_switches_through_every_level_of_the_abr_ladder() {
    let _alone = alone();
    if skipped() {
        return;
    }
    let s = ladder_node();
    let key = "live/abr";
    let src = Source { width: 1280, height: 720, seconds: 90.0, bitrate_k: 2000, ..Source::default() };
    let _p = publish(&s.rtmp_url(key), &src);
    s.wait_live(key, Duration::from_secs(15));
    // Every variant has segments before the player loads the master (which it reads once).
    let deadline = Instant::now() + Duration::from_secs(40);
    let paths = [
        "/live/abr/source.m3u8",
        "/live/abr_480p/index.m3u8",
        "/live/abr_360p/index.m3u8",
        "/live/abr_240p/index.m3u8",
    ];
    loop {
        let master = s.get(&format!("/{key}/index.m3u8")).text();
        let ready = master.matches("#EXT-X-STREAM-INF").count() == 4
            && paths.iter().all(|p| s.get(p).text().matches("#EXTINF").count() >= 2);
        if ready {
            break;
        }
        assert!(Instant::now() < deadline, "the ladder is not ready:\n{master}\n{}", s.log_tail(30));
        std::thread::sleep(Duration::from_millis(250));
    }

    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/browser/play.mjs");
    let started = Instant::now();
    let out = run_with_timeout(
        Command::new("node")
            .arg(script)
            .args(["--kind", "hls", "--url"])
            .arg(s.http_url(&format!("/{key}/index.m3u8")))
            .args(["--switch-levels", "--level-timeout", "20", "--max-stall", "1.5", "--min-play-ratio", "0.8"]),
        Duration::from_secs(240),
    );
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    assert_ne!(out.status.code(), Some(2), "browser harness not set up (run nodes/tests/browser/setup.sh): {stderr}");
    eprintln!("hls.js through the ladder ({:.1} s): {}", started.elapsed().as_secs_f64(), stdout.trim());
    assert!(out.status.success(), "playback failed: {stdout}\n{stderr}\n{}", s.log_tail(20));
    let v: serde_json::Value = serde_json::from_str(stdout.trim().lines().last().unwrap_or("{}")).unwrap();
    assert_eq!(v["ok"], true);
    assert!(v["errors"].as_array().is_some_and(|e| e.is_empty()), "{v}");
    assert_every_level_shown(&v, &[(426, 240), (640, 360), (854, 480), (1280, 720)]);
    assert!(v["longest_stall_seconds"].as_f64().is_some_and(|x| x <= 1.5), "{v}");
    assert!(v["play_ratio"].as_f64().is_some_and(|x| x >= 0.8), "{v}");
    assert_eq!(s.metric("strom_encoder_restarts_total"), 0.0);
}

/// A recording as a viewer sees it: 60 s of a stream recorded to storage (published faster than real time), then
/// hls.js plays its VOD playlist, seeks to 50 % of it and plays on from there; on a local directory and on S3 (a
/// real `s3s-fs` process).
#[test]
fn hls_js_plays_a_recording_and_seeks_to_the_middle() {
    let _alone = alone();
    if skipped() {
        return;
    }
    let dir = scratch("vod-browser");
    let local = [("STROM_STORAGE_PATH".to_string(), dir.to_str().unwrap().to_string())];
    vod_play_and_seek("local", &local);
    if common::s3::S3::skip("the S3 part") {
        return;
    }
    let root = scratch("vod-browser-s3");
    let s3 = common::s3::S3::start(&root, common::s3::free_port());
    vod_play_and_seek("S3", &s3.env());
}

fn vod_play_and_seek(backend: &str, storage: &[(String, String)]) {
    let mut env: Vec<(&str, &str)> = storage.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    env.extend([("STROM_RECORD_ENABLED", "true"), ("STROM_STREAM_RECONNECT_GRACE_SECS", "1")]);
    let s = Strom::with_env(&env);
    // Not `publish`: without -re ffmpeg sends the 60 s as fast as it encodes them.
    let src = Source { width: 640, height: 360, seconds: 60.0, bitrate_k: 800, ..Source::default() };
    let mut cmd = Command::new("ffmpeg");
    cmd.args(["-hide_banner", "-nostdin", "-loglevel", "warning"]);
    source_args(&mut cmd, &src);
    let out = run_with_timeout(cmd.args(["-f", "flv"]).arg(s.rtmp_url("live/vod")), Duration::from_secs(120));
    assert!(out.status.success(), "ffmpeg: {}", String::from_utf8_lossy(&out.stderr));
    let t = Instant::now();
    let id = loop {
        let v: serde_json::Value = serde_json::from_slice(&s.get("/api/v1/vod").body).unwrap_or_default();
        if let Some(a) = v["assets"].as_array().and_then(|a| a.first()).filter(|a| a["state"] == "done") {
            break a["id"].as_str().unwrap().to_string();
        }
        assert!(t.elapsed() < Duration::from_secs(30), "{backend}: no finished recording: {v}");
        std::thread::sleep(Duration::from_millis(200));
    };
    let url = s.http_url(&format!("/vod/{id}/index.m3u8"));
    let (ok, stdout, stderr) = play_with("hls", &url, &["--seconds", "8", "--seek", "0.5", "--low-latency", "off"]);
    eprintln!("hls.js VOD ({backend}): {}", stdout.trim());
    assert!(ok, "{backend}: VOD playback failed: {stdout}\n{stderr}");
    let v: serde_json::Value = serde_json::from_str(stdout.trim().lines().last().unwrap_or("{}")).unwrap();
    let duration = v["duration_seconds"].as_f64().unwrap_or(0.0);
    assert!((duration - 60.0).abs() < 0.5, "{backend}: the player sees the whole recording: {v}");
    assert!(v["seek_target_seconds"].as_f64().unwrap_or(0.0) >= 29.0, "{backend}: {v}");
    assert_eq!(v["stalls"], 0, "{backend}: {v}\n{stderr}");
}

/// DVR as a viewer sees it: with `hls.dvr_window_secs = 300`, a stream live for 80 s on strom-0 lists its whole
/// history; hls.js on strom-1 (which does not own the stream) seeks back 60 s and plays on from there. Those
/// segments left strom-0's memory long ago: they come from its recording on storage, through the cluster.
#[test]
fn hls_js_seeks_back_a_minute_in_a_live_stream_with_a_dvr_window_from_a_node_that_does_not_own_it() {
    let _alone = alone();
    if skipped() {
        return;
    }
    let dir = scratch("dvr-browser");
    let (dirs, key) = ([dir.join("0"), dir.join("1")], "live/dvr");
    let env0 = [("STROM_HLS_DVR_WINDOW_SECS", "300"), ("STROM_STORAGE_PATH", dirs[0].to_str().unwrap())];
    let net = common::netns::Net::new(2);
    let mut nodes = vec![net.spawn_cluster_with(0, "dvr-cookie", &[], &env0)];
    let env1 = [("STROM_HLS_DVR_WINDOW_SECS", "300"), ("STROM_STORAGE_PATH", dirs[1].to_str().unwrap())];
    nodes.push(net.spawn_cluster_with(1, "dvr-cookie", &[], &env1));
    let t = Instant::now();
    while !nodes[1].get("/api/v1/cluster").text().contains("\"strom-0\"") {
        assert!(t.elapsed() < Duration::from_secs(15), "strom-1 never saw strom-0\n{}", nodes[1].log_tail(20));
        std::thread::sleep(Duration::from_millis(100));
    }
    let src = Source { width: 640, height: 360, seconds: 150.0, bitrate_k: 800, ..Source::default() };
    let _p = publish(&nodes[0].rtmp_url(key), &src);
    // 80 s of history listed on strom-1 (the owner's playlist, pushed to it).
    let listed = |text: &str| -> f64 {
        text.lines()
            .filter_map(|l| l.strip_prefix("#EXTINF:"))
            .filter_map(|v| v.trim_end_matches(',').parse::<f64>().ok())
            .sum()
    };
    loop {
        let secs = listed(&nodes[1].get(&format!("/{key}/index.m3u8")).text());
        if secs >= 80.0 {
            break;
        }
        assert!(t.elapsed() < Duration::from_secs(120), "the playlist lists only {secs} s\n{}", nodes[1].log_tail(20));
        std::thread::sleep(Duration::from_millis(500));
    }
    let gets_before = nodes[0].metric("strom_storage_seconds_count{op=\"get\"}");
    let url = nodes[1].http_url(&format!("/{key}/index.m3u8"));
    let (ok, stdout, stderr) = play_with("hls", &url, &["--seconds", "10", "--seek-back", "60"]);
    eprintln!("hls.js DVR on strom-1: {}", stdout.trim());
    assert!(ok, "DVR playback failed: {stdout}\n{stderr}");
    let v: serde_json::Value = serde_json::from_str(stdout.trim().lines().last().unwrap_or("{}")).unwrap();
    assert!(
        v["seekable_start_seconds"].as_f64().unwrap_or(f64::MAX) <= v["seek_target_seconds"].as_f64().unwrap_or(0.0)
    );
    // The frames on screen are a minute old (wall clock minus their PROGRAM-DATE-TIME), and stay so.
    assert!(v["latency_p50_ms"].as_u64().unwrap_or(0) >= 55_000, "{v}");
    assert!(
        v["end_current_time"].as_f64().unwrap_or(0.0) < v["seek_from_seconds"].as_f64().unwrap_or(0.0) - 40.0,
        "{v}"
    );
    assert!(
        nodes[0].metric("strom_storage_seconds_count{op=\"get\"}") > gets_before,
        "the old segments came from strom-0's storage"
    );
}

/// An uploaded file as a viewer sees it once its VOD job is done: a 40 s 1280x720 H.264/AAC MP4 made by ffmpeg,
/// uploaded with curl and transcoded to 720p/360p/144p; hls.js plays the asset's master playlist and is forced
/// through every level: the `<video>` shows each rung's size, playback keeps advancing, no fatal error.
#[test]
fn hls_js_switches_through_every_level_of_an_uploaded_vod() {
    let _alone = alone();
    if skipped() {
        return;
    }
    let dir = scratch("vod-upload-browser");
    let rungs = "[{height = 720, bitrate_kbps = 1500, preset = \"ultrafast\"}, \
                 {height = 360, bitrate_kbps = 600, preset = \"ultrafast\"}, \
                 {height = 144, bitrate_kbps = 150, preset = \"ultrafast\"}]";
    let s = Strom::with_env(&[("STROM_STORAGE_PATH", dir.to_str().unwrap()), ("STROM_VOD_RUNGS", rungs)]);
    let file = dir.join("clip.mp4");
    let out = run_with_timeout(
        Command::new("ffmpeg")
            .args(["-hide_banner", "-nostdin", "-loglevel", "error", "-y"])
            .args(["-f", "lavfi", "-i", "testsrc2=size=1280x720:rate=30", "-f", "lavfi", "-i", "sine=frequency=440"])
            .args(["-t", "40", "-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p", "-c:a", "aac"])
            .arg(&file),
        Duration::from_secs(120),
    );
    assert!(out.status.success(), "ffmpeg: {}", String::from_utf8_lossy(&out.stderr));
    let out = run_with_timeout(
        Command::new("curl")
            .args(["-sS", "-F"])
            .arg(format!("file=@{}", file.display()))
            .arg(s.http_url("/api/v1/vod")),
        Duration::from_secs(60),
    );
    let accepted: serde_json::Value = serde_json::from_slice(&out.stdout).expect("a JSON answer");
    let id = accepted["job_id"].as_str().unwrap_or_else(|| panic!("no job: {accepted}")).to_string();
    let t = Instant::now();
    loop {
        let job: serde_json::Value = serde_json::from_slice(&s.get(&format!("/api/v1/jobs/{id}")).body).unwrap();
        match job["state"].as_str() {
            Some("done") => break,
            Some("failed" | "cancelled") => panic!("the job ended: {job}"),
            _ => {}
        }
        assert!(t.elapsed() < Duration::from_secs(180), "the job is not done: {job}");
        std::thread::sleep(Duration::from_millis(250));
    }
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/browser/play.mjs");
    let out = run_with_timeout(
        Command::new("node")
            .arg(script)
            .args(["--kind", "hls", "--url"])
            .arg(s.http_url(&format!("/vod/{id}/index.m3u8")))
            .args(["--switch-levels", "--level-timeout", "12", "--low-latency", "off", "--max-stall", "1.5"]),
        Duration::from_secs(180),
    );
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    assert_ne!(out.status.code(), Some(2), "browser harness not set up (run nodes/tests/browser/setup.sh): {stderr}");
    eprintln!("hls.js through an uploaded VOD's levels: {}", stdout.trim());
    assert!(out.status.success(), "playback failed: {stdout}\n{stderr}\n{}", s.log_tail(20));
    let v: serde_json::Value = serde_json::from_str(stdout.trim().lines().last().unwrap_or("{}")).unwrap();
    assert!(v["errors"].as_array().is_some_and(|e| e.is_empty()), "{v}");
    assert_every_level_shown(&v, &[(256, 144), (640, 360), (1280, 720)]);
}
