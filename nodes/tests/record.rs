//! Recording and VOD as users see them: ffmpeg publishes, strom records to a real local directory or to a real
//! S3 server (`s3s-fs`, a separate process), and ffprobe plays the asset's playlist and its MP4 export.
//!
//! `STROM_TEST_RECORD_SECS` sets the length of the main recordings (default 60, as the acceptance asks).

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::s3::{free_port, S3};
use common::*;

fn record_secs() -> f64 {
    std::env::var("STROM_TEST_RECORD_SECS").ok().and_then(|v| v.parse().ok()).unwrap_or(60.0)
}

fn source(seconds: f64) -> Source {
    Source { width: 1280, height: 720, fps: 30, seconds, bitrate_k: 1500, ..Source::default() }
}

fn request(s: &Strom, method: &str, path: &str) -> HttpResponse {
    let raw = format!("{method} {path} HTTP/1.1\r\nHost: {}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n", s.http);
    http_request(s.http, &raw).unwrap_or_else(|e| panic!("{method} {path}: {e}"))
}

fn json(r: &HttpResponse) -> serde_json::Value {
    serde_json::from_slice(&r.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", r.text()))
}

/// The assets of `stream` on `s`.
fn assets(s: &Strom, stream: &str) -> Vec<serde_json::Value> {
    let r = s.get("/api/v1/vod");
    assert_eq!(r.status, 200, "{}", r.text());
    json(&r)["assets"].as_array().cloned().unwrap_or_default().into_iter().filter(|a| a["stream"] == stream).collect()
}

/// Waits until `stream`'s newest asset is in `state`; returns it.
fn wait_asset(s: &Strom, stream: &str, state: &str, timeout: Duration) -> serde_json::Value {
    let deadline = Instant::now() + timeout;
    loop {
        let list = assets(s, stream);
        if let Some(a) = list.first().filter(|a| a["state"] == state) {
            return a.clone();
        }
        assert!(Instant::now() < deadline, "{stream}: no asset in state {state} after {timeout:?}: {list:?}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Video frames ffprobe decodes from `url`.
fn count_frames(url: &str) -> u64 {
    let out = run_with_timeout(
        Command::new("ffprobe").args([
            "-v",
            "error",
            "-count_frames",
            "-select_streams",
            "v:0",
            "-show_entries",
            "stream=nb_read_frames",
            "-of",
            "csv=p=0",
            url,
        ]),
        Duration::from_secs(120),
    );
    let text = String::from_utf8_lossy(&out.stdout);
    // HLS input: the stream is printed once per program and once on its own.
    let first = text.lines().map(|l| l.trim().trim_end_matches(',')).find(|l| !l.is_empty()).unwrap_or("");
    first.parse().unwrap_or_else(|_| {
        panic!("ffprobe {url}: {text} {}", String::from_utf8_lossy(&out.stderr));
    })
}

/// Publishes `secs` of 720p30 to `live/KEY` on `s` (recorded, by config or API), waits for the asset to be done,
/// and checks it as a player would: duration, every frame over HLS and in the MP4 export.
fn record_and_check(s: &Strom, name: &str, secs: f64) -> serde_json::Value {
    let stream = format!("live/{name}");
    let mut publisher = publish(&s.rtmp_url(&stream), &source(secs));
    assert!(
        publisher.wait(Duration::from_secs_f64(secs + 60.0)).is_some_and(|st| st.success()),
        "ffmpeg: {}",
        publisher.log_text()
    );
    let asset = wait_asset(s, &stream, "done", Duration::from_secs(30));
    let id = asset["id"].as_str().unwrap().to_string();
    let frames = (secs * 30.0).round() as u64;
    let duration = asset["duration"].as_f64().unwrap();
    assert!((duration - secs).abs() <= 0.1, "duration {duration} s of {secs} s published: {asset}");
    assert_eq!(asset["renditions"][0]["width"], 1280, "{asset}");
    let playlist = s.get(&format!("/vod/{id}/index.m3u8"));
    assert_eq!(playlist.status, 200);
    let text = playlist.text();
    assert!(text.contains("#EXT-X-PLAYLIST-TYPE:VOD") && text.contains("#EXT-X-ENDLIST"), "{text}");
    assert_eq!(count_frames(&s.http_url(&format!("/vod/{id}/index.m3u8"))), frames, "every published frame over HLS");
    let mp4 = s.http_url(&format!("/vod/{id}.mp4"));
    assert_eq!(count_frames(&mp4), frames, "every published frame in the MP4 export");
    // The export declares its length (mvhd and mehd), as a player shows it before reading the fragments.
    let out = run_with_timeout(
        Command::new("ffprobe").args(["-v", "error", "-show_entries", "format=duration", "-of", "csv=p=0", &mp4]),
        Duration::from_secs(60),
    );
    let probed: f64 = String::from_utf8_lossy(&out.stdout).trim().parse().unwrap_or(0.0);
    assert!((probed - secs).abs() <= 0.1, "the MP4 export says it lasts {probed} s of {secs} s");
    asset
}

/// 60 s of 720p30 recorded to a local directory: a `done` asset whose duration is what was published, every
/// frame decodable from its playlist and from its MP4 export; the metrics count it.
#[test]
fn a_recording_on_a_local_directory_is_a_vod_asset_with_every_frame() {
    let dir = scratch("rec-local");
    let s = Strom::with_env(&[
        ("STROM_RECORD_ENABLED", "true"),
        ("STROM_STORAGE_PATH", dir.to_str().unwrap()),
        ("STROM_STREAM_RECONNECT_GRACE_SECS", "1"),
    ]);
    let secs = record_secs();
    let asset = record_and_check(&s, "local", secs);
    let id = asset["id"].as_str().unwrap();
    assert!(dir.join(format!("vod/{id}/asset.json")).is_file());
    let bytes = asset["bytes"].as_f64().unwrap();
    assert!(s.metric("strom_record_bytes_total") >= bytes - 1.0 && bytes > 0.0, "{asset}");
    assert!(s.metric("strom_record_segments_total{result=\"written\"}") >= (secs / 2.0).floor());
    assert_eq!(s.metric("strom_storage_errors_total{op=\"put\"}"), 0.0);
    // Write amplification: what landed on disk against what the segments hold (playlist, asset.json, init).
    let on_disk = du(&dir.join(format!("vod/{id}")));
    let ratio = on_disk as f64 / bytes;
    eprintln!("recorded {bytes} B of media, {on_disk} B on disk: {ratio:.4}x");
    assert!(ratio < 1.05, "write amplification {ratio}");
}

fn du(dir: &Path) -> u64 {
    let mut n = 0;
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = e.path();
        n += if p.is_dir() { du(&p) } else { p.metadata().map(|m| m.len()).unwrap_or(0) };
    }
    n
}

/// The same recording on S3 (a real server process, the production client code path). The S3 server is killed
/// for 6 s in the middle: the live stream plays on, the asset says why it is behind, and recording resumes when
/// the server is back, with nothing lost.
#[test]
fn a_recording_on_s3_survives_the_server_going_away_for_a_while() {
    if S3::skip("this test") {
        return;
    }
    let root = scratch("s3");
    let port = free_port();
    let mut s3 = S3::start(&root, port);
    let env = s3.env();
    let mut vars: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    vars.extend([("STROM_RECORD_ENABLED", "true"), ("STROM_STREAM_RECONNECT_GRACE_SECS", "1")]);
    let s = Strom::with_env(&vars);
    let secs = record_secs().max(24.0);
    let stream = "live/s3";
    let checker = std::thread::scope(|scope| {
        let h = scope.spawn(|| record_and_check(&s, "s3", secs));
        s.wait_live(stream, Duration::from_secs(20));
        std::thread::sleep(Duration::from_secs_f64(secs * 0.3));
        let id = assets(&s, stream).first().and_then(|a| a["id"].as_str().map(String::from)).expect("an asset");
        s3.kill();
        let down = Instant::now();
        // While the store is gone: the live playlist goes on, and the asset says why it is behind (the list of
        // assets needs the store; a recording running here is answered from memory).
        let mut said = String::new();
        while down.elapsed() < Duration::from_secs(6) {
            let a = json(&s.get(&format!("/api/v1/vod/{id}")));
            if let Some(r) = a["reason"].as_str() {
                said = r.to_string();
            }
            std::thread::sleep(Duration::from_millis(500));
        }
        assert_eq!(s.get("/api/v1/vod").status, 502, "listing needs the store");
        let live = s.get(&format!("/{stream}/index.m3u8"));
        assert_eq!(live.status, 200, "live HLS while storage is down");
        s3 = S3::start(&root, port);
        (h.join(), said)
    });
    let (result, said) = checker;
    let asset = result.unwrap_or_else(|e| std::panic::resume_unwind(e));
    assert!(said.contains("storage failing"), "while the S3 server was down the asset said: {said:?}");
    assert!(s.metric("strom_storage_errors_total{op=\"put\"}") > 0.0);
    assert!(asset["reason"].is_null(), "nothing lost: {asset}");
    // The objects are on the S3 server's disk, under the URL's prefix.
    let id = asset["id"].as_str().unwrap();
    assert!(root.join(format!("strom/recordings/vod/{id}/asset.json")).is_file());
    drop(s3);
}

/// A store that hangs (the S3 server frozen for 30 s, longer than the segments the live window holds) only
/// delays the recording: its segments wait in the recording's queue, nothing is lost, and the asset ends `done`
/// with every frame.
#[test]
fn a_hanging_s3_server_delays_the_recording_and_loses_nothing() {
    if S3::skip("this test") {
        return;
    }
    let root = scratch("s3-hang");
    let s3 = S3::start(&root, free_port());
    let env = s3.env();
    let mut vars: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    vars.extend([("STROM_RECORD_ENABLED", "true"), ("STROM_STREAM_RECONNECT_GRACE_SECS", "1")]);
    let s = Strom::with_env(&vars);
    let asset = std::thread::scope(|scope| {
        let h = scope.spawn(|| record_and_check(&s, "hang", 50.0));
        s.wait_live("live/hang", Duration::from_secs(20));
        std::thread::sleep(Duration::from_secs(6));
        s3.freeze(true);
        std::thread::sleep(Duration::from_secs(30));
        assert_eq!(s.get("/live/hang/index.m3u8").status, 200, "live HLS while storage hangs");
        s3.freeze(false);
        h.join()
    })
    .unwrap_or_else(|e| std::panic::resume_unwind(e));
    assert!(asset["reason"].is_null(), "nothing lost: {asset}");
    assert_eq!(s.metric("strom_record_segments_total{result=\"lost\"}"), 0.0);
}

/// Recording through the API: start, a second start refused, stop (the asset is done at its last finished
/// segment), delete; bad requests get a clear 4xx.
#[test]
fn the_api_starts_stops_and_deletes_recordings() {
    let dir = scratch("rec-api");
    let s = Strom::with_env(&[("STROM_STORAGE_PATH", dir.to_str().unwrap())]);
    // Every recording and storage series is there from the first scrape, before storage is ever used.
    let metrics = s.get("/metrics").text();
    for series in [
        "strom_storage_errors_total{op=\"put\"} 0",
        "strom_storage_seconds_count{op=\"get\"} 0",
        "strom_record_segments_total{result=\"lost\"} 0",
        "strom_record_bytes_total 0",
        "strom_recordings_active 0",
    ] {
        assert!(metrics.lines().any(|l| l == series), "{series} missing");
    }
    assert!(std::fs::read_dir(&dir).unwrap().next().is_none(), "a node that has not recorded writes nothing");
    assert_eq!(request(&s, "POST", "/api/v1/streams/live/nobody/record").status, 404, "no such stream");
    assert_eq!(request(&s, "POST", "/api/v1/streams/live/bad%20name/record").status, 400);
    assert_eq!(request(&s, "DELETE", "/api/v1/streams/live/api/record").status, 404, "not recording");
    assert_eq!(s.get("/api/v1/vod/..%2F..%2Fetc").status, 404);
    assert_eq!(s.get("/vod/nothing/index.m3u8").status, 404);
    assert_eq!(s.get("/vod/nothing.mp4").status, 404);
    let _publisher = publish(&s.rtmp_url("live/api"), &Source { seconds: 30.0, ..Source::default() });
    s.wait_live("live/api", Duration::from_secs(20));
    let started = request(&s, "POST", "/api/v1/streams/live/api/record");
    assert_eq!(started.status, 201, "{}", started.text());
    let id = json(&started)["id"].as_str().unwrap().to_string();
    assert_eq!(json(&started)["state"], "recording");
    let again = request(&s, "POST", "/api/v1/streams/live/api/record");
    assert_eq!(again.status, 409, "{}", again.text());
    std::thread::sleep(Duration::from_secs(7));
    let live = json(&s.get(&format!("/api/v1/vod/{id}")));
    assert_eq!(live["state"], "recording", "{live}");
    let growing = s.get(&format!("/vod/{id}/index.m3u8")).text();
    assert!(growing.contains("#EXT-X-PLAYLIST-TYPE:EVENT") && !growing.contains("ENDLIST"), "{growing}");
    let stopped = request(&s, "DELETE", "/api/v1/streams/live/api/record");
    assert_eq!(stopped.status, 200, "{}", stopped.text());
    let a = json(&stopped);
    assert_eq!(a["state"], "done", "{a}");
    assert!(a["duration"].as_f64().unwrap() >= 4.0, "{a}");
    let frames = count_frames(&s.http_url(&format!("/vod/{id}/index.m3u8")));
    assert_eq!(frames as f64, (a["duration"].as_f64().unwrap() * 30.0).round(), "{a}");
    assert_eq!(request(&s, "DELETE", &format!("/api/v1/vod/{id}")).status, 204);
    assert_eq!(s.get(&format!("/api/v1/vod/{id}")).status, 404);
    assert!(!dir.join(format!("vod/{id}")).join("asset.json").exists());
}

/// A publisher reconnect within the grace continues the same recording: one asset, a discontinuity, the frames
/// of both publishes.
#[test]
fn a_reconnect_within_the_grace_is_one_asset_with_a_discontinuity() {
    let dir = scratch("rec-reconnect");
    let s = Strom::with_env(&[
        ("STROM_RECORD_ENABLED", "true"),
        ("STROM_STORAGE_PATH", dir.to_str().unwrap()),
        ("STROM_STREAM_RECONNECT_GRACE_SECS", "4"),
    ]);
    for _ in 0..2 {
        let mut p = publish(&s.rtmp_url("live/again"), &Source { seconds: 6.0, ..Source::default() });
        assert!(p.wait(Duration::from_secs(40)).is_some_and(|st| st.success()), "{}", p.log_text());
        std::thread::sleep(Duration::from_secs(2));
    }
    let asset = wait_asset(&s, "live/again", "done", Duration::from_secs(30));
    assert_eq!(assets(&s, "live/again").len(), 1, "one asset");
    let id = asset["id"].as_str().unwrap();
    let text = s.get(&format!("/vod/{id}/index.m3u8")).text();
    assert_eq!(text.matches("#EXT-X-DISCONTINUITY\n").count(), 1, "{text}");
    let duration = asset["duration"].as_f64().unwrap();
    assert!((duration - 12.0).abs() <= 0.1, "{asset}");
    assert_eq!(count_frames(&s.http_url(&format!("/vod/{id}/index.m3u8"))), 360);
}

/// The recording node is SIGKILLed mid-stream; restarted on the same storage, it lists the asset as `partial`
/// and everything up to the last segment written plays.
#[test]
fn a_killed_recording_node_leaves_a_partial_asset_that_plays() {
    let dir = scratch("rec-kill");
    let env = [("STROM_RECORD_ENABLED", "true"), ("STROM_STORAGE_PATH", dir.to_str().unwrap())];
    let s = Strom::with_env(&env);
    let _publisher = publish(&s.rtmp_url("live/kill"), &Source { seconds: 30.0, ..Source::default() });
    s.wait_live("live/kill", Duration::from_secs(20));
    std::thread::sleep(Duration::from_secs(9));
    let _ = Command::new("kill").args(["-KILL", &s.pid().to_string()]).status();
    drop(s);
    let s = Strom::with_env(&env);
    let list = assets(&s, "live/kill");
    assert_eq!(list.len(), 1, "{list:?}");
    let a = &list[0];
    assert_eq!(a["state"], "partial", "{a}");
    assert!(a["reason"].as_str().unwrap_or("").contains("stopped"), "{a}");
    let id = a["id"].as_str().unwrap();
    let text = s.get(&format!("/vod/{id}/index.m3u8")).text();
    assert!(text.contains("#EXT-X-ENDLIST"), "a cut recording plays as VOD: {text}");
    let segments = text.matches("#EXTINF").count() as u64;
    assert!(segments >= 3, "{text}");
    assert_eq!(count_frames(&s.http_url(&format!("/vod/{id}/index.m3u8"))), segments * 60, "{text}");
}

/// Storage full (a 1 MiB tmpfs): live HLS plays on, the asset says why it is behind; once the filesystem is
/// grown the queued segments land and the recording is complete.
#[test]
fn a_full_disk_leaves_live_untouched_and_recording_resumes_when_space_returns() {
    if !nix_is_root() {
        eprintln!("skipped: mounting a tmpfs needs root");
        return;
    }
    let dir = scratch("rec-full");
    let mounted = Command::new("mount").args(["-t", "tmpfs", "-o", "size=1m", "tmpfs"]).arg(&dir).status();
    assert!(mounted.is_ok_and(|st| st.success()), "mount tmpfs");
    struct Unmount(PathBuf);
    impl Drop for Unmount {
        fn drop(&mut self) {
            let _ = Command::new("umount").arg("-l").arg(&self.0).status();
        }
    }
    let _unmount = Unmount(dir.clone());
    let s = Strom::with_env(&[
        ("STROM_RECORD_ENABLED", "true"),
        ("STROM_STORAGE_PATH", dir.to_str().unwrap()),
        ("STROM_STREAM_RECONNECT_GRACE_SECS", "1"),
    ]);
    let src = Source { seconds: 20.0, bitrate_k: 1500, ..Source::default() };
    let mut publisher = publish(&s.rtmp_url("live/full"), &src);
    s.wait_live("live/full", Duration::from_secs(20));
    let deadline = Instant::now() + Duration::from_secs(15);
    let said = loop {
        let a = assets(&s, "live/full");
        if let Some(r) = a.first().and_then(|a| a["reason"].as_str()) {
            break r.to_string();
        }
        assert!(Instant::now() < deadline, "the asset never said storage is failing: {a:?}\n{}", s.log_tail(30));
        std::thread::sleep(Duration::from_millis(300));
    };
    assert!(said.contains("storage failing"), "{said}");
    // Live is untouched: its playlist advances and its newest segment plays.
    let before = s.wait_segments("live/full", 1, Duration::from_secs(5));
    std::thread::sleep(Duration::from_secs(3));
    let after = s.get("/live/full/index.m3u8").text();
    assert_ne!(before, after, "the live playlist advances while storage is full");
    let grown = Command::new("mount").args(["-o", "remount,size=256m"]).arg(&dir).status();
    assert!(grown.is_ok_and(|st| st.success()));
    assert!(publisher.wait(Duration::from_secs(60)).is_some_and(|st| st.success()));
    let asset = wait_asset(&s, "live/full", "done", Duration::from_secs(30));
    assert!((asset["duration"].as_f64().unwrap() - 20.0).abs() <= 0.1, "{asset}");
    let id = asset["id"].as_str().unwrap();
    assert_eq!(count_frames(&s.http_url(&format!("/vod/{id}/index.m3u8"))), 600);
}

fn nix_is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|t| t.lines().find_map(|l| l.strip_prefix("Uid:")).map(|v| v.split_whitespace().next() == Some("0")))
        .unwrap_or(false)
}

/// A cluster with a local volume per node, as the StatefulSet runs it: the API of any node starts and stops a
/// recording of a stream another node owns, lists every node's assets, plays them (playlist, segments, MP4)
/// through the node holding them, and deletes them there.
#[test]
fn in_a_cluster_any_node_records_lists_plays_and_deletes_another_node_s_recording() {
    use common::netns::Net;
    let net = Net::new(2);
    let (d0, d1) = (scratch("cluster-rec-0"), scratch("cluster-rec-1"));
    let admin = ("STROM_AUTH_ADMIN_TOKEN", "rec-admin-token");
    let public = ("STROM_AUTH_READ_API", "public"); // the test reads the API without the token
    let n0 =
        net.spawn_cluster_with(0, "rec-cookie", &[], &[("STROM_STORAGE_PATH", d0.to_str().unwrap()), admin, public]);
    let n1 =
        net.spawn_cluster_with(1, "rec-cookie", &[], &[("STROM_STORAGE_PATH", d1.to_str().unwrap()), admin, public]);
    let t = Instant::now();
    while !n1.get("/api/v1/cluster").text().contains("\"strom-0\"")
        || !n0.get("/api/v1/cluster").text().contains("\"strom-1\"")
    {
        assert!(t.elapsed() < Duration::from_secs(15), "the nodes never met");
        std::thread::sleep(Duration::from_millis(100));
    }
    let req = |node: &common::netns::NetNode, method: &str, path: &str| {
        let raw = format!(
            "{method} {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer rec-admin-token\r\nContent-Length: 0\r\n\
             Connection: close\r\n\r\n"
        );
        http_request(node.http, &raw).unwrap_or_else(|e| panic!("{method} {path}: {e}"))
    };
    let _publisher = publish(&n0.rtmp_url("live/c"), &Source { seconds: 40.0, ..Source::default() });
    let t = Instant::now();
    while !n0.get("/api/v1/streams").text().contains("\"live\"") {
        assert!(t.elapsed() < Duration::from_secs(20), "not live on strom-0");
        std::thread::sleep(Duration::from_millis(100));
    }
    // Started through strom-1: it runs on strom-0, the owner.
    let started = req(&n1, "POST", "/api/v1/streams/live/c/record");
    assert_eq!(started.status, 201, "{}", started.text());
    let asset = json(&started);
    assert_eq!(asset["node"], "strom-0", "{asset}");
    let id = asset["id"].as_str().unwrap().to_string();
    assert_eq!(req(&n1, "POST", "/api/v1/streams/live/c/record").status, 409);
    std::thread::sleep(Duration::from_secs(7));
    let stopped = req(&n1, "DELETE", "/api/v1/streams/live/c/record");
    assert_eq!(stopped.status, 200, "{}", stopped.text());
    let done = json(&stopped);
    assert_eq!(done["state"], "done", "{done}");
    // strom-1 lists, describes and plays what strom-0's volume holds.
    let list = json(&n1.get("/api/v1/vod"));
    assert!(list["assets"].as_array().unwrap().iter().any(|a| a["id"] == id), "{list}");
    assert_eq!(n1.get(&format!("/api/v1/vod/{id}")).status, 200);
    let frames = (done["duration"].as_f64().unwrap() * 30.0).round() as u64;
    assert!(frames >= 120, "{done}");
    assert_eq!(count_frames(&n1.http_url(&format!("/vod/{id}/index.m3u8"))), frames, "HLS through strom-1");
    assert_eq!(count_frames(&n1.http_url(&format!("/vod/{id}.mp4"))), frames, "MP4 through strom-1");
    assert!(!d1.join("vod").exists(), "nothing was stored on strom-1");
    assert!(d0.join(format!("vod/{id}/asset.json")).is_file());
    // Deleted through strom-1, gone from strom-0.
    assert_eq!(req(&n1, "DELETE", &format!("/api/v1/vod/{id}")).status, 204);
    assert_eq!(n0.get(&format!("/api/v1/vod/{id}")).status, 404);
    assert_eq!(n1.get(&format!("/api/v1/vod/{id}")).status, 404);
}

/// An application set to MPEG-TS HLS records MPEG-TS segments: a VOD playlist without `EXT-X-MAP` that plays every
/// frame; its MP4 export is refused with a reason (there is no fMP4 to remux).
#[test]
fn an_mpeg_ts_application_records_mpeg_ts() {
    let dir = scratch("rec-ts");
    let s = Strom::with_env(&[
        ("STROM_RECORD_ENABLED", "true"),
        ("STROM_STORAGE_PATH", dir.to_str().unwrap()),
        ("STROM_STREAM_RECONNECT_GRACE_SECS", "1"),
        ("STROM_HLS_APPS", "{legacy = {format = \"ts\"}}"),
    ]);
    let mut p = publish(&s.rtmp_url("legacy/box"), &Source { seconds: 8.0, ..Source::default() });
    assert!(p.wait(Duration::from_secs(40)).is_some_and(|st| st.success()), "{}", p.log_text());
    let asset = wait_asset(&s, "legacy/box", "done", Duration::from_secs(30));
    let id = asset["id"].as_str().unwrap();
    let text = s.get(&format!("/vod/{id}/index.m3u8")).text();
    assert!(!text.contains("#EXT-X-MAP") && text.contains(".ts\n") && text.contains("#EXT-X-ENDLIST"), "{text}");
    assert_eq!(count_frames(&s.http_url(&format!("/vod/{id}/index.m3u8"))), 240);
    let mp4 = s.get(&format!("/vod/{id}.mp4"));
    assert_eq!(mp4.status, 409, "{}", mp4.text());
    assert!(mp4.text().contains("MPEG-TS"), "{}", mp4.text());
}

/// A stream with a ladder records every rendition into one asset: `/vod/{id}/index.m3u8` is a master playlist
/// over the source and its rung (the source first), and each rendition plays at its own size over the same time.
#[test]
fn a_ladder_is_recorded_rendition_by_rendition_behind_a_master_playlist() {
    let dir = scratch("rec-ladder");
    let s = Strom::with_env(&[
        ("STROM_RECORD_ENABLED", "true"),
        ("STROM_STORAGE_PATH", dir.to_str().unwrap()),
        ("STROM_STREAM_RECONNECT_GRACE_SECS", "1"),
        ("STROM_TRANSCODE_MODE", "off"),
        (
            "STROM_TRANSCODE_APPS",
            "{live = {mode = \"always\", rungs = [{height = 160, bitrate_kbps = 200, preset = \"ultrafast\"}]}}",
        ),
        ("STROM_TRANSCODE_THREADS", "1"),
    ]);
    let secs = 20.0;
    let mut publisher = publish(&s.rtmp_url("live/ladder"), &Source { seconds: secs, ..Source::default() });
    assert!(publisher.wait(Duration::from_secs(90)).is_some_and(|st| st.success()), "{}", publisher.log_text());
    let asset = wait_asset(&s, "live/ladder", "done", Duration::from_secs(40));
    let id = asset["id"].as_str().unwrap();
    let renditions = asset["renditions"].as_array().unwrap();
    let names: Vec<&str> = renditions.iter().filter_map(|r| r["name"].as_str()).collect();
    assert_eq!(names, ["source", "160p"], "{asset}");
    let master = s.get(&format!("/vod/{id}/index.m3u8")).text();
    assert_eq!(master.matches("#EXT-X-STREAM-INF:").count(), 2, "{master}");
    let source_at = master.find("\nsource/index.m3u8\n").expect("the source variant");
    let rung_at = master.find("\n160p/index.m3u8\n").expect("the rung variant");
    assert!(source_at < rung_at, "players start with the source: {master}");
    assert!(master.contains("RESOLUTION=284x160") && master.contains("CODECS=\"avc1."), "{master}");
    // Every source frame; the rung over the same time (it starts at the source's first segment).
    let frames = (secs * 30.0).round() as u64;
    assert_eq!(count_frames(&s.http_url(&format!("/vod/{id}/source/index.m3u8"))), frames);
    let rung_url = s.http_url(&format!("/vod/{id}/160p/index.m3u8"));
    let rung_frames = count_frames(&rung_url);
    assert!(rung_frames + 60 >= frames && rung_frames <= frames + 2, "rung {rung_frames} frames, source {frames}");
    let d = |r: &serde_json::Value| r["duration"].as_f64().unwrap_or(0.0);
    assert!((d(&renditions[0]) - d(&renditions[1])).abs() <= 2.1, "{asset}");
    assert_eq!(renditions[1]["height"], 160, "{asset}");
    let probe = run_with_timeout(
        Command::new("ffprobe")
            .args(["-v", "error", "-select_streams", "v:0", "-show_entries", "stream=height"])
            .args(["-of", "csv=p=0", &rung_url]),
        Duration::from_secs(60),
    );
    assert!(String::from_utf8_lossy(&probe.stdout).lines().any(|l| l.trim().trim_end_matches(',') == "160"));
    // The whole asset plays as a player picks it: through the master playlist.
    assert!(count_frames(&s.http_url(&format!("/vod/{id}/index.m3u8"))) >= frames - 60);
}

/// In a cluster the ladder may run on another node than the stream's owner: the owner still records every
/// rendition into its asset, the rung read from the playlist that node pushes and its segments fetched as any
/// player's through the owner would be. Nothing is written on the ladder's node. With a DVR window, the rung's
/// old segments (gone from the ladder node's memory) are served from that recording, through the cluster.
#[test]
fn in_a_cluster_a_ladder_running_on_another_node_is_recorded_by_the_owner_with_its_rung() {
    use common::netns::Net;
    let net = Net::new(2);
    let (d0, d1) = (scratch("cluster-ladder-0"), scratch("cluster-ladder-1"));
    let rungs = "[{height = 160, bitrate_kbps = 200, preset = \"ultrafast\"}]";
    let env = |dir: &Path| -> Vec<(&'static str, String)> {
        let mut e: Vec<(&'static str, String)> = [
            ("STROM_RECORD_ENABLED", "true"),
            ("STROM_STREAM_RECONNECT_GRACE_SECS", "1"),
            ("STROM_TRANSCODE_MODE", "always"),
            ("STROM_TRANSCODE_RUNGS", rungs),
            ("STROM_TRANSCODE_THREADS", "1"),
            ("STROM_TRANSCODE_MAX_STREAMS", "1"),
            ("STROM_HLS_DVR_WINDOW_SECS", "120"),
        ]
        .into_iter()
        .map(|(k, v)| (k, v.to_string()))
        .collect();
        e.push(("STROM_STORAGE_PATH", dir.to_str().unwrap().to_string()));
        e
    };
    let (e0, e1) = (env(&d0), env(&d1));
    let e0: Vec<(&str, &str)> = e0.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let e1: Vec<(&str, &str)> = e1.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let n0 = net.spawn_cluster_with(0, "ladder-rec", &[], &e0);
    let n1 = net.spawn_cluster_with(1, "ladder-rec", &[], &e1);
    let t = Instant::now();
    // Both nodes know each other's load (placement skips a peer whose load it does not know).
    while !json(&n0.get("/api/v1/cluster"))["peers"]
        .as_array()
        .is_some_and(|p| p.len() == 1 && p[0]["load"].is_object())
    {
        assert!(t.elapsed() < Duration::from_secs(20), "the nodes never met");
        std::thread::sleep(Duration::from_millis(100));
    }
    // One ladder per node: a first stream's ladder fills a node, so the next stream published to that node gets
    // its ladder on the other one.
    let nodes = [&n0, &n1];
    let dirs = [&d0, &d1];
    let _warm = publish(&n0.rtmp_url("live/warm"), &Source { seconds: 120.0, ..Source::default() });
    let full = loop {
        if let Some(i) = (0..2).find(|&i| nodes[i].metric("strom_encoder_rungs_active") >= 1.0) {
            break i;
        }
        assert!(t.elapsed() < Duration::from_secs(40), "no ladder for live/warm\n{}", n0.log_tail(20));
        std::thread::sleep(Duration::from_millis(200));
    };
    let (owner, host) = (nodes[full], nodes[1 - full]);
    let secs = 30.0;
    let mut publisher = publish(&owner.rtmp_url("live/lr"), &Source { seconds: secs, ..Source::default() });
    while host.metric("strom_encoder_rungs_active") < 1.0 {
        assert!(t.elapsed() < Duration::from_secs(60), "no ladder on {}\n{}", host.name(), owner.log_tail(20));
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(owner.log().contains("placed the ladder on another node"), "{}", owner.log_tail(20));
    // The owner records the rung from the other node's playlist.
    let t = Instant::now();
    while !owner.log().contains("recording the rung too rung=live/lr_160p remote=true") {
        assert!(t.elapsed() < Duration::from_secs(20), "{}", owner.log_tail(20));
        std::thread::sleep(Duration::from_millis(200));
    }
    // DVR: once the rung lists 12 segments, its first left the ladder node's memory (window 6 + retained 4): asked
    // of the owner, which fetches it from the ladder node, which reads it from the owner's recording.
    let rung_playlist = loop {
        let text = owner.get("/live/lr_160p/index.m3u8").text();
        if text.matches("#EXTINF:").count() >= 12 {
            break text;
        }
        assert!(t.elapsed() < Duration::from_secs(90), "the rung lists {text}");
        std::thread::sleep(Duration::from_millis(300));
    };
    let oldest = rung_playlist.lines().find(|l| !l.starts_with('#') && !l.is_empty()).unwrap();
    for node in [owner, host] {
        let got = node.get(&format!("/live/lr_160p/{oldest}"));
        assert_eq!(got.status, 200, "{oldest} from {}\n{}", node.name(), host.log_tail(20));
        assert!(got.body.len() > 1000 && got.body.windows(4).any(|w| w == b"moof"), "a media segment");
    }
    assert!(host.metric("strom_cluster_requests_total{request=\"vod_dvr\"}") >= 1.0, "read from the recording");
    assert!(publisher.wait(Duration::from_secs(90)).is_some_and(|st| st.success()), "{}", publisher.log_text());
    let deadline = Instant::now() + Duration::from_secs(40);
    let asset = loop {
        let list = json(&owner.get("/api/v1/vod"));
        let lr = list["assets"].as_array().and_then(|a| a.iter().find(|a| a["stream"] == "live/lr").cloned());
        if let Some(a) = lr.filter(|a| a["state"] == "done") {
            break a;
        }
        assert!(Instant::now() < deadline, "no finished asset: {list}\n{}", owner.log_tail(20));
        std::thread::sleep(Duration::from_millis(200));
    };
    let id = asset["id"].as_str().unwrap();
    let names: Vec<&str> = asset["renditions"].as_array().unwrap().iter().filter_map(|r| r["name"].as_str()).collect();
    assert_eq!(names, ["source", "160p"], "{asset}");
    assert_eq!(asset["renditions"][1]["height"], 160, "{asset}");
    let frames = (secs * 30.0).round() as u64;
    let rung = count_frames(&owner.http_url(&format!("/vod/{id}/160p/index.m3u8")));
    assert!(rung + 90 >= frames && rung <= frames + 2, "rung {rung} frames of {frames}");
    let master = host.get(&format!("/vod/{id}/index.m3u8")).text();
    assert_eq!(master.matches("#EXT-X-STREAM-INF:").count(), 2, "the master through the other node: {master}");
    let (owner_dir, host_dir) = (dirs[full], dirs[1 - full]);
    assert!(owner_dir.join(format!("vod/{id}/160p/init1.mp4")).is_file());
    assert!(!host_dir.join(format!("vod/{id}")).exists(), "nothing of it was stored on the ladder's node");
}
