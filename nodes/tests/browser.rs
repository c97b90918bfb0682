//! A real browser plays strom's output: hls.js (HLS) and mpegts.js (HTTP-FLV) in Debian's headless Chromium,
//! driven by `browser/play.mjs` (playwright-core). Requires `nodes/tests/browser/setup.sh` to have run (the test
//! scripts do it); set `STROM_SKIP_BROWSER=1` to skip on a machine without Chromium.

mod common;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::*;

fn play(kind: &str, url: &str) -> (bool, String, String) {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/browser/play.mjs");
    let out = run_with_timeout(
        Command::new("node").arg(script).args([
            "--kind",
            kind,
            "--url",
            url,
            "--seconds",
            "15",
            "--expect-width",
            "640",
            "--expect-height",
            "360",
            "--wait-ready",
            "15",
        ]),
        Duration::from_secs(150),
    );
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    if out.status.code() == Some(2) {
        panic!("browser harness not set up (run nodes/tests/browser/setup.sh): {stderr}");
    }
    (out.status.success(), stdout, stderr)
}

#[test]
fn hls_js_and_mpegts_js_play_the_live_stream_in_chromium() {
    if std::env::var("STROM_SKIP_BROWSER").is_ok_and(|v| v == "1") {
        eprintln!("STROM_SKIP_BROWSER=1: skipped");
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
