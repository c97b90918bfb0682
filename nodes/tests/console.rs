//! The web console (`/console/`) driven in Debian's headless Chromium by `browser/console.mjs` (playwright-core),
//! as an operator would use it: log in with the admin token, watch a stream published by ffmpeg appear and play,
//! record it, disconnect its publisher, upload a file and play the VOD, on one node and on a 3-node cluster;
//! refusals without the token; screenshots of every view at desktop and phone sizes (none blank); axe-core finds
//! no serious or critical violation. Requires `nodes/tests/browser/setup.sh` (the test scripts run it); set
//! `STROM_SKIP_BROWSER=1` to skip on a machine without Chromium. `STROM_CONSOLE_SHOTS=DIR` keeps the screenshots
//! there (the committed ones are in `docs/console/`).

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::*;

/// The nodes' admin token.
const TOKEN: &str = "console-test-admin-token-5f0c2a9e7d4b4c1e";

/// One Chromium at a time next to strom and its encoders on a 2-core machine.
static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn skipped() -> bool {
    let skip = std::env::var("STROM_SKIP_BROWSER").is_ok_and(|v| v == "1");
    if skip {
        eprintln!("STROM_SKIP_BROWSER=1: skipped");
    }
    skip
}

/// Runs `console.mjs` against `base` (`http://host:port`) with `args`; panics with its output on failure.
fn console(base: &str, args: &[&str]) -> String {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/browser/console.mjs");
    let out = run_with_timeout(
        Command::new("node").arg(script).args(["--url", base, "--token", TOKEN]).args(args),
        Duration::from_secs(480),
    );
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    eprintln!("console.mjs {}:\n{stdout}{stderr}", args.join(" "));
    if out.status.code() == Some(2) {
        panic!("browser harness not set up (run nodes/tests/browser/setup.sh): {stderr}");
    }
    assert!(out.status.success(), "the console check failed:\n{stdout}\n{stderr}");
    stdout
}

/// Where the screenshots go: `STROM_CONSOLE_SHOTS` (`sub` under it, when given), or a scratch directory.
fn shots_dir(sub: &str) -> PathBuf {
    match std::env::var_os("STROM_CONSOLE_SHOTS") {
        Some(d) => PathBuf::from(d).join(sub),
        None => scratch(&format!("console-shots-{}", if sub.is_empty() { "single" } else { sub })),
    }
}

/// A `seconds` long 640x360 H.264 + AAC MP4 file.
fn media_file(seconds: u32) -> PathBuf {
    let path = scratch("console-upload").join("upload.mp4");
    let out = run_with_timeout(
        Command::new("ffmpeg")
            .args(["-hide_banner", "-nostdin", "-loglevel", "error", "-y", "-f", "lavfi", "-i"])
            .arg("testsrc2=size=640x360:rate=30")
            .args(["-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000", "-t", &seconds.to_string()])
            .args(["-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p", "-c:a", "aac"])
            .arg(&path),
        Duration::from_secs(120),
    );
    assert!(out.status.success(), "ffmpeg: {}", String::from_utf8_lossy(&out.stderr));
    path
}

/// `GET path` with the admin token (reads are private on a node with a token).
fn api(addr: std::net::SocketAddr, path: &str) -> serde_json::Value {
    serde_json::from_slice(&request(addr, "GET", path, Some(TOKEN)).body).unwrap_or(serde_json::Value::Null)
}

/// The stream `key` as `/api/v1/streams` lists it (`Null` if it does not).
fn stream(addr: std::net::SocketAddr, key: &str) -> serde_json::Value {
    let v = api(addr, "/api/v1/streams");
    v["streams"].as_array().and_then(|a| a.iter().find(|s| s["key"] == key)).cloned().unwrap_or_default()
}

/// Waits until `key` is live on the node at `addr`.
fn wait_live(addr: std::net::SocketAddr, key: &str) {
    let t = Instant::now();
    while stream(addr, key)["state"] != "live" {
        assert!(t.elapsed() < Duration::from_secs(20), "{key} never went live");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn the_console_shows_a_live_stream_records_it_disconnects_it_and_uploads_a_file_that_plays() {
    let _alone = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    if skipped() {
        return;
    }
    let data = scratch("console-data");
    // Signed play: the console asks the API for a token before each preview and VOD play.
    let s = Strom::with_env(&[
        ("STROM_AUTH_ADMIN_TOKEN", TOKEN),
        ("STROM_AUTH_PLAY_KEY", "console-play-key"),
        ("STROM_STORAGE_PATH", data.to_str().unwrap()),
        (
            "STROM_VOD_RUNGS",
            "[{height = 360, bitrate_kbps = 600, preset = \"ultrafast\"}, \
             {height = 240, bitrate_kbps = 400, preset = \"ultrafast\"}, \
             {height = 144, bitrate_kbps = 200, preset = \"ultrafast\"}]",
        ),
        ("STROM_VOD_CHUNK_SECS", "10"),
    ]);
    let file = media_file(20);
    let key = "live/console";
    let _p = publish(
        &s.rtmp_url(key),
        &Source { width: 640, height: 360, seconds: 300.0, bitrate_k: 800, ..Source::default() },
    );
    wait_live(s.http, key);
    let base = s.http_url("");
    let shots = shots_dir("");
    let shots_arg = shots.to_str().unwrap();

    // Refusals first (no token, a wrong one), then the views with the stream live, screenshots and axe-core.
    console(
        &base,
        &[
            "--check",
            "refusals,login,streams,record,shots,axe",
            "--stream",
            key,
            "--protocols",
            "llhls,hls,flv",
            "--shots",
            shots_arg,
        ],
    );
    for view in ["overview", "streams", "vod", "cluster"] {
        for size in ["desktop", "phone"] {
            let png = shots.join(format!("{view}-{size}.png"));
            let len = std::fs::metadata(&png).map(|m| m.len()).unwrap_or(0);
            assert!(len > 8 * 1024, "{} is missing or blank ({len} bytes)", png.display());
        }
    }
    let assets = api(s.http, "/api/v1/vod");
    assert!(
        assets["assets"].as_array().is_some_and(|a| a.iter().any(|x| x["stream"] == key && x["kind"] == "recording")),
        "starting a recording in the console made no asset: {assets}"
    );

    // Disconnect through the console: the stream is gone from the API too. Then an upload that plays.
    let t = Instant::now();
    console(
        &base,
        &["--check", "login,streams,disconnect,upload", "--stream", key, "--upload", file.to_str().unwrap()],
    );
    assert_ne!(stream(s.http, key)["state"], "live", "the stream is still live after disconnect");
    assert!(s.log_text().contains("publisher disconnected through the API"), "{}", s.log_tail(30));
    let jobs = api(s.http, "/api/v1/jobs");
    let done = jobs["jobs"].as_array().is_some_and(|j| j.iter().any(|x| x["state"] == "done"));
    assert!(done, "no VOD job reached done: {jobs}");
    eprintln!("disconnect + upload through the console: {:.1} s", t.elapsed().as_secs_f64());
}

/// Every node's console shows the whole cluster: its three nodes and a stream another node owns.
#[test]
fn every_node_of_a_three_node_cluster_shows_all_nodes_and_a_stream_another_node_owns() {
    let _alone = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    if skipped() {
        return;
    }
    let net = common::netns::Net::new(3);
    let env = [("STROM_AUTH_ADMIN_TOKEN", TOKEN)];
    let nodes: Vec<_> = (0..3).map(|i| net.spawn_cluster_with(i, "console-cookie", &[], &env)).collect();
    let t = Instant::now();
    while !nodes.iter().all(|n| api(n.http, "/api/v1/cluster").to_string().matches("\"state\":\"up\"").count() >= 2) {
        assert!(t.elapsed() < Duration::from_secs(20), "the nodes never met");
        std::thread::sleep(Duration::from_millis(100));
    }
    let key = "live/elsewhere";
    let src = Source { width: 640, height: 360, seconds: 300.0, bitrate_k: 800, ..Source::default() };
    let _p = net.publish(1, &nodes[1].rtmp_url(key), &src);
    while !api(nodes[0].http, "/api/v1/streams?scope=cluster").to_string().contains("\"live/elsewhere\"") {
        assert!(t.elapsed() < Duration::from_secs(40), "strom-0 never listed the stream\n{}", nodes[1].log_tail(20));
        std::thread::sleep(Duration::from_millis(200));
    }
    let shots = shots_dir("cluster");
    for (i, n) in nodes.iter().enumerate() {
        let base = n.http_url("");
        let mut args = vec![
            "--check",
            "login,cluster",
            "--expect-nodes",
            "strom-0,strom-1,strom-2",
            "--expect-remote-stream",
            "live/elsewhere@strom-1",
        ];
        // One set of screenshots of the cluster views, from a node that does not own the stream.
        if i == 0 {
            args[1] = "login,cluster,shots";
            args.extend(["--stream", key, "--shots", shots.to_str().unwrap()]);
        }
        console(base.trim_end_matches('/'), &args);
    }
}

/// The console's feed, read with curl (`-N`: as it arrives): `(event, data)` pairs on a channel.
struct Feed {
    child: std::process::Child,
    rx: std::sync::mpsc::Receiver<(String, serde_json::Value)>,
}

impl Feed {
    fn open(url: &str) -> Feed {
        let mut child = Command::new("curl")
            .args(["-sN", "-H", &format!("Authorization: Bearer {TOKEN}"), url])
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("curl");
        let out = child.stdout.take().expect("stdout");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            use std::io::BufRead;
            let mut event = String::new();
            for line in std::io::BufReader::new(out).lines().map_while(Result::ok) {
                if let Some(e) = line.strip_prefix("event: ") {
                    event = e.to_string();
                } else if let Some(d) = line.strip_prefix("data: ") {
                    let v = serde_json::from_str(d).unwrap_or(serde_json::Value::Null);
                    if tx.send((std::mem::take(&mut event), v)).is_err() {
                        return;
                    }
                }
            }
        });
        Feed { child, rx }
    }

    /// The next event `name` whose data satisfies `pred`, within `timeout`.
    fn until(&self, name: &str, timeout: Duration, pred: impl Fn(&serde_json::Value) -> bool) -> serde_json::Value {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.rx.recv_timeout(left) {
                Ok((e, v)) if e == name && pred(&v) => return v,
                Ok(_) => {}
                Err(_) => panic!("no {name} event as expected within {timeout:?}"),
            }
        }
    }
}

impl Drop for Feed {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn request(addr: std::net::SocketAddr, method: &str, path: &str, auth: Option<&str>) -> HttpResponse {
    let auth = auth.map(|t| format!("Authorization: Bearer {t}\r\n")).unwrap_or_default();
    let raw = format!("{method} {path} HTTP/1.1\r\nHost: x\r\n{auth}Content-Length: 0\r\nConnection: close\r\n\r\n");
    http_request(addr, &raw).unwrap_or_else(|e| panic!("{method} {path}: {e}"))
}

fn has_stream(v: &serde_json::Value, key: &str) -> bool {
    v["streams"].as_array().is_some_and(|a| a.iter().any(|s| s["key"] == key && s["state"] == "live"))
}

/// `/api/v1/events` needs the admin token; it says hello, then pushes nodes, history, streams, jobs and assets;
/// a published stream appears in it within 3 s, and disappears once the API disconnects its publisher.
#[test]
fn the_event_feed_needs_the_token_and_pushes_a_stream_as_it_comes_and_goes() {
    let data = scratch("console-feed");
    let s = Strom::with_env(&[("STROM_AUTH_ADMIN_TOKEN", TOKEN), ("STROM_STORAGE_PATH", data.to_str().unwrap())]);
    assert_eq!(request(s.http, "GET", "/api/v1/events", None).status, 401);
    assert_eq!(request(s.http, "GET", "/api/v1/events", Some("wrong")).status, 401);
    assert_eq!(s.get("/api/v1/streams").status, 401, "with a token set, reading the API needs it too");
    assert_eq!(request(s.http, "GET", "/api/v1/streams", Some(TOKEN)).status, 200);

    let feed = Feed::open(&s.http_url("/api/v1/events"));
    let hello = feed.until("hello", Duration::from_secs(5), |_| true);
    assert_eq!(hello["node"], "test-node");
    assert_eq!(hello["rtmp_port"], s.rtmp.port(), "the console's empty state names the real RTMP port");
    assert_eq!(hello["auth"]["admin_token"], true);
    let nodes = feed.until("nodes", Duration::from_secs(5), |_| true);
    assert_eq!(nodes["nodes"][0]["name"], "test-node");
    assert_eq!(nodes["nodes"][0]["self"], true);
    assert!(nodes["nodes"][0]["load"]["egress_bps"].is_u64(), "{nodes}");
    feed.until("streams", Duration::from_secs(5), |_| true);
    feed.until("jobs", Duration::from_secs(5), |_| true);
    feed.until("assets", Duration::from_secs(5), |_| true);
    let history = feed.until("history", Duration::from_secs(12), |_| true);
    assert_eq!(history["interval_secs"], 5);
    assert!(history["nodes"]["test-node"].as_array().is_some_and(|a| !a.is_empty()), "{history}");

    let key = "live/feed";
    let started = Instant::now();
    let mut p = publish(&s.rtmp_url(key), &Source { seconds: 60.0, ..Source::default() });
    let v = feed.until("streams", Duration::from_secs(10), |v| has_stream(v, key));
    let shown = started.elapsed();
    eprintln!("the feed showed the stream {:.2} s after ffmpeg started", shown.as_secs_f64());
    assert!(shown < Duration::from_secs(3), "the stream took {shown:?} to appear in the feed");
    let entry = v["streams"].as_array().unwrap().iter().find(|e| e["key"] == key).unwrap().clone();
    assert_eq!(entry["node"], "test-node");
    assert_eq!(entry["relays"], serde_json::json!([]));

    // Disconnect: no token → 401; an unknown stream → 404; then the stream leaves the feed and ffmpeg is cut off.
    assert_eq!(request(s.http, "DELETE", "/api/v1/streams/live/feed/publisher", None).status, 401);
    assert_eq!(request(s.http, "DELETE", "/api/v1/streams/live/nobody/publisher", Some(TOKEN)).status, 404);
    let r = request(s.http, "DELETE", "/api/v1/streams/live/feed/publisher", Some(TOKEN));
    assert_eq!(r.status, 200, "{}", r.text());
    let t = Instant::now();
    feed.until("streams", Duration::from_secs(5), |v| !has_stream(v, key));
    let again = request(s.http, "DELETE", "/api/v1/streams/live/feed/publisher", Some(TOKEN));
    assert_eq!(again.status, 404, "an ended (lingering) stream has no publisher to disconnect: {}", again.text());
    eprintln!("gone from the feed {:.2} s after the disconnect", t.elapsed().as_secs_f64());
    assert!(p.wait(Duration::from_secs(10)).is_some(), "ffmpeg was not disconnected");
}

/// `auth.read_api = "private"`: reading the API needs the token too; playing and probes stay public.
/// `public` opens the reads again on a node with a token.
#[test]
fn a_private_read_api_needs_the_token() {
    let open = Strom::with_env(&[("STROM_AUTH_ADMIN_TOKEN", TOKEN), ("STROM_AUTH_READ_API", "public")]);
    assert_eq!(open.get("/api/v1/streams").status, 200);
    assert_eq!(request(open.http, "GET", "/api/v1/events", None).status, 401, "the console's feed stays private");
    drop(open);
    let s = Strom::with_env(&[("STROM_AUTH_ADMIN_TOKEN", TOKEN), ("STROM_AUTH_READ_API", "private")]);
    for path in ["/api/v1/streams", "/api/v1/cluster", "/api/v1/vod", "/api/v1/jobs", "/api/v1/events"] {
        assert_eq!(request(s.http, "GET", path, None).status, 401, "{path}");
    }
    assert_eq!(request(s.http, "GET", "/api/v1/streams", Some(TOKEN)).status, 200);
    assert_eq!(s.get("/healthz").status, 200);
    assert_eq!(s.get("/metrics").status, 200);
    assert_eq!(s.get("/live/none/index.m3u8").status, 404, "playing is not the API");
    let page = s.get("/console/");
    assert_eq!(page.status, 200, "the page itself is public: it asks for the token");
}

/// The console is served from the binary, with a CSP; `/console` redirects; unknown files are 404.
#[test]
fn the_console_is_served_from_the_binary() {
    let s = Strom::start();
    let page = s.get("/console/");
    assert_eq!(page.status, 200);
    assert!(page.header("content-type").is_some_and(|c| c.starts_with("text/html")));
    assert!(page.header("content-security-policy").is_some_and(|c| c.contains("frame-ancestors 'none'")));
    assert!(page.text().contains("./app.js"));
    for (path, kind) in [
        ("/console/app.js", "text/javascript"),
        ("/console/style.css", "text/css"),
        ("/console/vendor/hls.min.js", "text/javascript"),
        ("/console/vendor/mpegts.min.js", "text/javascript"),
    ] {
        let r = s.get(path);
        assert_eq!(r.status, 200, "{path}");
        assert!(r.header("content-type").is_some_and(|c| c.starts_with(kind)), "{path}");
        assert!(r.body.len() > 100, "{path}");
    }
    let r = s.get("/console");
    assert_eq!(r.status, 308);
    assert_eq!(r.header("location"), Some("/console/"));
    assert_eq!(s.get("/console/nope.js").status, 404);
    assert_eq!(s.get("/console/../metrics").status, 404, "no path outside the console");
}

/// A stream owned by another node: its relays are listed, and disconnecting it through any node ends it on its
/// owner and cuts its publisher off.
#[test]
fn a_stream_owned_elsewhere_lists_its_relays_and_is_disconnected_through_any_node() {
    let net = common::netns::Net::new(2);
    let env = [("STROM_AUTH_ADMIN_TOKEN", TOKEN)];
    let nodes: Vec<_> = (0..2).map(|i| net.spawn_cluster_with(i, "console-disc", &[], &env)).collect();
    let t = Instant::now();
    while !nodes.iter().all(|n| api(n.http, "/api/v1/cluster").to_string().contains("\"state\":\"up\"")) {
        assert!(t.elapsed() < Duration::from_secs(20), "the nodes never met");
        std::thread::sleep(Duration::from_millis(100));
    }
    let key = "live/owned1";
    let mut p = net.publish(1, &nodes[1].rtmp_url(key), &Source { seconds: 120.0, ..Source::default() });
    while stream(nodes[1].http, key)["state"] != "live" {
        assert!(t.elapsed() < Duration::from_secs(30), "never live\n{}", nodes[1].log_tail(20));
        std::thread::sleep(Duration::from_millis(100));
    }
    // A player on strom-0 makes strom-0 relay the stream.
    let mut player = Command::new("curl")
        .args(["-s", "-o", "/dev/null", "--max-time", "60", &nodes[0].http_url(&format!("/{key}.flv"))])
        .spawn()
        .expect("curl");
    let relays_of = |n: &common::netns::NetNode| -> serde_json::Value {
        let v = api(n.http, "/api/v1/streams?scope=cluster");
        v["streams"].as_array().and_then(|a| a.iter().find(|s| s["key"] == key)).map(|s| s["relays"].clone()).into()
    };
    while relays_of(&nodes[0]) != serde_json::json!(["strom-0"]) {
        assert!(t.elapsed() < Duration::from_secs(40), "relays: {}", relays_of(&nodes[0]));
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(relays_of(&nodes[1]), serde_json::json!(["strom-0"]), "the owner lists the same");

    let r = request(nodes[0].http, "DELETE", &format!("/api/v1/streams/{key}/publisher"), Some(TOKEN));
    assert_eq!(r.status, 200, "{}\nstrom-0:\n{}\nstrom-1:\n{}", r.text(), nodes[0].log_tail(15), nodes[1].log_tail(15));
    assert!(p.wait(Duration::from_secs(10)).is_some(), "the publisher on strom-1 was not cut off");
    assert!(nodes[1].log().contains("asked by another node"), "{}", nodes[1].log_tail(20));
    assert!(nodes[1].log().contains("publisher disconnected: the stream ends"), "{}", nodes[1].log_tail(20));
    let state = |n: &common::netns::NetNode| -> serde_json::Value {
        let v = api(n.http, "/api/v1/streams?scope=cluster");
        v["streams"].as_array().and_then(|a| a.iter().find(|s| s["key"] == key)).map(|s| s["state"].clone()).into()
    };
    // Ended (it lingers as `ended` for `stream.ended_linger_secs`, then goes).
    while state(&nodes[0]) == "live" {
        assert!(t.elapsed() < Duration::from_secs(60), "the stream is still live");
        std::thread::sleep(Duration::from_millis(200));
    }
    let _ = player.kill();
    let _ = player.wait();
}
