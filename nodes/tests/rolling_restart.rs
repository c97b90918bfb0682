//! The rolling restart (issue 17, *Hardening*): three clustered nodes (network namespaces) behind one non-sticky
//! nginx — HTTP round robin with `proxy_next_upstream`, RTMP over the `stream` module — a publisher that reconnects
//! through it the way OBS does, and a browser player (hls.js, or mpegts.js for HTTP-FLV) in Debian's headless
//! Chromium playing through the balancer while every node, the stream's owner included, is SIGTERMed and restarted
//! in turn.
//!
//! - hls.js: no hls.js ERROR event at all (fatal or not), no stall over 1 s (sampled every 200 ms), playback
//!   advancing across the whole roll.
//! - HTTP-FLV (mpegts.js): one reconnect is allowed — the node a player is connected to must close its response
//!   when it goes — and nothing else: no other player error, and the same 1 s stall bound. The node serving the
//!   player is rolled last, so that one reconnect (to a node already restarted) is all the roll needs; the owner's
//!   restarts before it must not cost the player anything.
//!
//! What makes it pass: the node going away cuts its publisher at once, repeats the stream's last picture
//! (`stream.repeat_frame_secs`, 5 s by default) until the node the publisher reconnects to has taken the stream
//! over, and 0.4 s beyond (the new owner's claim settling and first part), then answers HLS with 503 (nginx
//! retries elsewhere); the new owner lists the old one's segments first, and copies them, so players everywhere
//! see one playlist going on.
//!
//! Needs root (namespaces), nginx with its `stream` module (`NGINX_TEST_PACKAGES` in `nodes/scripts/packages.sh`),
//! Chromium and `nodes/tests/browser/setup.sh` (skipped with `STROM_SKIP_BROWSER=1`), ffmpeg.
//!
//! On a failure (and with `STROM_ROLL_KEEP=1` always) the evidence is copied to a directory printed at the end:
//! nginx's access logs (every request with the node(s) it went to and their statuses), each node's logs (every
//! run), the publisher's runs, the player's events (`STROM_PLAY_DEBUG=1` output) and the test's timeline; a digest
//! of the failed requests, set against the timeline, is printed. `STROM_ROLL_DRAIN_SECS` sets the nodes'
//! `drain_secs` (default 0, strom's default).

mod common;

use std::fmt::Write as _;
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::netns::{Net, NetNode};
use common::*;

const COOKIE: &str = "rolling-cookie";
const KEY: &str = "live/roll";
/// How long the player watches after each node has rejoined, before the next node goes.
const SETTLE: Duration = Duration::from_secs(8);
/// How long the player watches after the last node has rejoined.
const TAIL: Duration = Duration::from_secs(10);
/// The longest stall allowed (seconds), for both players.
const MAX_STALL: f64 = 1.0;
/// OBS's reconnect delay (it waits, then dials again through the balancer).
const RECONNECT_DELAY: Duration = Duration::from_millis(1500);

/// Each run is three strom nodes, ffmpeg, nginx and a Chromium on a 2-core machine: one at a time.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

#[test]
fn hls_js_plays_through_a_rolling_restart_behind_nginx() {
    roll(Player::Hls);
}

#[test]
fn http_flv_plays_through_a_rolling_restart_behind_nginx_with_one_reconnect() {
    roll(Player::Flv);
}

#[derive(Clone, Copy, PartialEq, Debug)]
enum Player {
    Hls,
    Flv,
}

fn roll(kind: Player) {
    let _alone = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    if std::env::var("STROM_SKIP_BROWSER").is_ok_and(|v| v == "1") {
        eprintln!("STROM_SKIP_BROWSER=1: skipped");
        return;
    }
    let timeline = Timeline::new();
    let drain = std::env::var("STROM_ROLL_DRAIN_SECS").unwrap_or_else(|_| "0".into());
    let env = [("STROM_DRAIN_SECS", drain.as_str()), ("STROM_STREAM_REPEAT_FRAME_SECS", "5")];
    let net = Net::new(3);
    let mut nodes: Vec<NetNode> = (0..3).map(|i| net.spawn_cluster_with(i, COOKIE, &[], &env)).collect();
    for node in &nodes {
        node.wait_peers(2, Duration::from_secs(20));
    }
    timeline.note(format!("3 nodes up and joined (drain_secs {drain})"));
    let nginx = Nginx::start(&net);
    timeline.note(format!("nginx: HTTP {} RTMP {}", nginx.http, nginx.rtmp));

    let publisher = Publisher::start(format!("rtmp://{}/{KEY}", nginx.rtmp), timeline.clone());
    let t = Instant::now();
    loop {
        let listed = http_get(nginx.http, &format!("/{KEY}/index.m3u8"))
            .map(|r| r.status == 200 && r.text().matches("#EXTINF").count() >= 2)
            .unwrap_or(false);
        if listed {
            break;
        }
        assert!(t.elapsed() < Duration::from_secs(40), "no HLS through nginx\n{}", nginx.access_tail(20));
        std::thread::sleep(Duration::from_millis(250));
    }
    let monitor = Monitor::start(&nodes, timeline.clone());
    timeline.note(format!("the stream plays through nginx; owner {:?}", owner(&nodes)));

    let scratch_dir = scratch("rolling-player");
    let stop_file = scratch_dir.join("stop");
    let mut player = BrowserPlayer::start(kind, &nginx, &scratch_dir, &stop_file);
    let player_started = Instant::now();
    timeline.note(format!("{kind:?} player started"));

    // The player is playing before the roll starts (first frame, a few seconds watched).
    let order: Vec<usize> = match kind {
        Player::Hls => {
            std::thread::sleep(Duration::from_secs(12));
            vec![0, 1, 2]
        }
        Player::Flv => {
            let t = Instant::now();
            let serving = loop {
                let found = (0..3).find(|&i| nodes[i].metric("strom_viewers{protocol=\"flv\"}") >= 1.0);
                if let Some(i) = found {
                    break i;
                }
                assert!(!player.finished(), "the FLV player ended before it played: {}", player.report());
                assert!(t.elapsed() < Duration::from_secs(40), "no FLV viewer on any node: {}", player.report());
                std::thread::sleep(Duration::from_millis(250));
            };
            timeline.note(format!("the FLV player is on strom-{serving}: it is rolled last"));
            std::thread::sleep(Duration::from_secs(8));
            let mut order: Vec<usize> = (0..3).filter(|&i| i != serving).collect();
            order.push(serving);
            order
        }
    };
    assert!(!player.finished(), "the player ended before the roll: {}", player.report());
    // The player's clock starts when its page loads, a moment after it was started: events stamped from here on
    // (less that moment) happened during the roll.
    let roll_from_ms = player_started.elapsed().as_millis().saturating_sub(2000) as u64;

    let mut owners_rolled = Vec::new();
    for &i in &order {
        let owner_now = owner(&nodes);
        if owner_now.as_deref() == Some(nodes[i].name().as_str()) {
            owners_rolled.push(nodes[i].name());
        }
        timeline.note(format!("SIGTERM {} (owner: {owner_now:?})", nodes[i].name()));
        let t = Instant::now();
        let status = nodes[i].term(Duration::from_secs(30));
        timeline.note(format!("{} exited after {:.2} s: {status:?}", nodes[i].name(), t.elapsed().as_secs_f64()));
        assert!(status.is_some(), "{} did not exit within 30 s of SIGTERM\n{}", nodes[i].name(), nodes[i].log_tail(40));
        nodes[i].restart();
        timeline.note(format!("{} restarted (serving)", nodes[i].name()));
        nodes[i].wait_peers(2, Duration::from_secs(30));
        for other in nodes.iter().filter(|n| n.index() != i) {
            other.wait_peers(2, Duration::from_secs(30));
        }
        timeline.note(format!("{} rejoined; owner now {:?}", nodes[i].name(), owner(&nodes)));
        std::thread::sleep(SETTLE);
    }
    std::thread::sleep(TAIL);
    timeline.note("the roll is over: stopping the player");
    std::fs::write(&stop_file, b"stop").expect("stop file");
    let result = player.wait(Duration::from_secs(90));
    timeline.note("player done");
    let states = monitor.stop();
    let runs = publisher.stop();

    // ---- what happened
    let v: serde_json::Value =
        serde_json::from_str(result.stdout.trim().lines().last().unwrap_or("{}")).unwrap_or_default();
    let mut summary = String::new();
    let _ = writeln!(summary, "player ({kind:?}): exit {:?}\n{}", result.code, result.stdout.trim());
    let _ = writeln!(summary, "roll order {:?}; owners SIGTERMed: {owners_rolled:?}", order);
    let _ = writeln!(summary, "publisher runs ({} reconnects):", runs.len().saturating_sub(1));
    for r in &runs {
        let _ = writeln!(summary, "  {r}");
    }
    let _ = writeln!(summary, "timeline:\n{}", timeline.render());
    let _ = writeln!(summary, "stream on each node (changes):\n{states}");
    let _ = writeln!(summary, "nginx HTTP requests that failed or failed over:\n{}", nginx.failures());
    let _ = writeln!(summary, "nginx RTMP sessions:\n{}", nginx.rtmp_sessions());

    // ---- verdict
    let mut failures: Vec<String> = Vec::new();
    if result.code == Some(2) {
        panic!("browser harness not set up (run nodes/tests/browser/setup.sh): {}", result.stderr_tail(20));
    }
    let f = |k: &str| v[k].as_f64();
    // Error events during the roll (those of the player's start, before any node went, are not the roll's).
    let stamp = |e: &serde_json::Value| e.as_str().and_then(|t| t.split("ms ").next()?.parse::<u64>().ok());
    let all_events = v["error_events"].as_array().cloned().unwrap_or_default();
    let events: Vec<_> = all_events.iter().filter(|e| stamp(e).is_none_or(|ms| ms >= roll_from_ms)).cloned().collect();
    let event_count = match v["error_event_count"].as_u64() {
        Some(n) if n as usize == all_events.len() => events.len() as u64,
        _ => u64::MAX,
    };
    let reconnects = v["reconnects"].as_u64().unwrap_or(0);
    if result.code != Some(0) {
        failures.push(format!("play.mjs failed: {}", v["reason"]));
    }
    match kind {
        Player::Hls => {
            if event_count != 0 {
                failures.push(format!("{event_count} hls.js error event(s): {events:?}"));
            }
        }
        Player::Flv => {
            if reconnects > 1 {
                failures.push(format!("{reconnects} reconnects (one allowed)"));
            }
            // The error that made the one allowed reconnect is the only error event allowed.
            if event_count > reconnects {
                failures
                    .push(format!("{event_count} mpegts.js error event(s) for {reconnects} reconnect(s): {events:?}"));
            }
        }
    }
    if !v["errors"].as_array().is_some_and(|e| e.is_empty()) {
        failures.push(format!("player errors: {}", v["errors"]));
    }
    let stall = f("longest_stall_seconds").unwrap_or(f64::MAX);
    if stall > MAX_STALL {
        failures.push(format!("longest stall {stall} s (> {MAX_STALL} s)"));
    }
    if v["stopped_by_file"] != true {
        failures.push("the player did not watch the whole roll".into());
    }
    // Not `played_seconds` (end minus start currentTime): a new owner's timestamps may make currentTime jump.
    let (played, wall) = (f("advanced_seconds").unwrap_or(0.0), f("wall_seconds").unwrap_or(f64::MAX));
    if played < 0.9 * wall {
        failures.push(format!("playback advanced {played} s in {wall} s of the roll"));
    }
    if owners_rolled.is_empty() {
        failures.push("the stream's owner was never among the nodes SIGTERMed".into());
    }

    let keep = !failures.is_empty() || std::env::var("STROM_ROLL_KEEP").is_ok_and(|v| v == "1");
    if keep {
        let dir = keep_evidence(kind, &net, &nginx, &result, &runs, &timeline, &summary);
        let _ = writeln!(summary, "evidence kept in {}", dir.display());
    }
    eprintln!("{summary}");
    if failures.is_empty() {
        let _ = std::fs::remove_dir_all(&scratch_dir);
        let _ = std::fs::remove_dir_all(&nginx.dir);
    }
    assert!(
        failures.is_empty(),
        "{kind:?} through the rolling restart:\n- {}\n(player stderr tail)\n{}",
        failures.join("\n- "),
        result.stderr_tail(80)
    );
}

// ------------------------------------------------------------------------------------------------ cluster helpers

fn json(node: &NetNode, path: &str) -> serde_json::Value {
    node.try_get(path, Duration::from_secs(3))
        .ok()
        .filter(|(status, _)| *status == 200)
        .and_then(|(_, body)| serde_json::from_str(&body).ok())
        .unwrap_or_default()
}

/// The node that owns the stream (its own entry: live, not a relay), asking every node.
fn owner(nodes: &[NetNode]) -> Option<String> {
    nodes.iter().find_map(|n| {
        let v = json(n, "/api/v1/streams");
        let own = v["streams"]
            .as_array()?
            .iter()
            .any(|s| s["key"] == KEY && s["relay_from"].is_null() && s["state"] == "live");
        own.then(|| n.name())
    })
}

// ------------------------------------------------------------------------------------------------ timeline

fn unix_now() -> f64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs_f64()).unwrap_or(0.0)
}

/// `HH:MM:SS.mmm` (UTC) of a Unix time: the nodes' log timestamps and nginx's `$msec` are set against it.
fn hms(unix: f64) -> String {
    let ms = (unix * 1000.0).round() as u64;
    let s = ms / 1000;
    format!("{:02}:{:02}:{:02}.{:03}", (s / 3600) % 24, (s / 60) % 60, s % 60, ms % 1000)
}

/// What the test did and saw, with wall-clock times.
#[derive(Clone)]
struct Timeline {
    start: f64,
    entries: Arc<Mutex<Vec<(f64, String)>>>,
}

impl Timeline {
    fn new() -> Timeline {
        Timeline { start: unix_now(), entries: Arc::new(Mutex::new(Vec::new())) }
    }

    fn note(&self, what: impl Into<String>) {
        let what = what.into();
        let now = unix_now();
        eprintln!("[{} +{:7.3}] {what}", hms(now), now - self.start);
        self.entries.lock().unwrap().push((now, what));
    }

    fn render(&self) -> String {
        let mut out = String::new();
        for (t, what) in self.entries.lock().unwrap().iter() {
            let _ = writeln!(out, "  {} +{:7.3}  {what}", hms(*t), t - self.start);
        }
        out
    }
}

/// Polls every node's view of the stream every 500 ms (directly, not through nginx) and keeps the changes.
struct Monitor {
    stop: Arc<AtomicBool>,
    thread: std::thread::JoinHandle<String>,
}

impl Monitor {
    fn start(nodes: &[NetNode], timeline: Timeline) -> Monitor {
        let addrs: Vec<(String, SocketAddr)> = nodes.iter().map(|n| (n.name(), n.http)).collect();
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            let mut last = vec![String::new(); addrs.len()];
            let mut out = String::new();
            while !flag.load(Ordering::Relaxed) {
                for (k, (name, addr)) in addrs.iter().enumerate() {
                    let state = state_at(*addr);
                    if state != last[k] {
                        let now = unix_now();
                        let _ = writeln!(out, "  {} +{:7.3}  {name}: {state}", hms(now), now - timeline.start);
                        last[k] = state;
                    }
                }
                std::thread::sleep(Duration::from_millis(500));
            }
            out
        });
        Monitor { stop, thread }
    }

    fn stop(self) -> String {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.join().unwrap_or_default()
    }
}

/// The stream's state on the node at `addr`, as the monitor prints it: its own, a relay (from which node), or none.
fn state_at(addr: SocketAddr) -> String {
    match common::netns::get_with_timeout(addr, "/api/v1/streams", Duration::from_secs(1)) {
        Err(e) => format!("no answer ({})", e.kind()),
        Ok((status, _)) if status != 200 => format!("HTTP {status}"),
        Ok((_, body)) => {
            let v: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
            match v["streams"].as_array().and_then(|a| a.iter().find(|s| s["key"] == KEY)) {
                None => "-".into(),
                Some(s) => match s["relay_from"].as_str() {
                    Some(from) => format!("{} (relay from {from})", s["state"].as_str().unwrap_or("?")),
                    None => format!("{} (own)", s["state"].as_str().unwrap_or("?")),
                },
            }
        }
    }
}

// ------------------------------------------------------------------------------------------------ nginx

/// nginx in the test's namespace, its upstreams the three nodes' HTTP and RTMP addresses on the bridge.
struct Nginx {
    child: Child,
    dir: PathBuf,
    http: SocketAddr,
    rtmp: SocketAddr,
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).expect("a free port")
}

impl Nginx {
    fn start(net: &Net) -> Nginx {
        let nginx = ["/usr/sbin/nginx", "/usr/bin/nginx"].into_iter().find(|p| Path::new(p).exists()).unwrap_or_else(
            || panic!("nginx is not installed: install NGINX_TEST_PACKAGES of nodes/scripts/packages.sh (nginx-light, libnginx-mod-stream)"),
        );
        assert!(
            Path::new("/usr/lib/nginx/modules/ngx_stream_module.so").exists(),
            "nginx's stream module is missing: install libnginx-mod-stream (NGINX_TEST_PACKAGES, nodes/scripts/packages.sh)"
        );
        let dir = scratch("nginx");
        for sub in ["client_body", "proxy", "fastcgi", "uwsgi", "scgi"] {
            std::fs::create_dir_all(dir.join(sub)).expect("nginx temp dir");
        }
        let http = SocketAddr::from(([127, 0, 0, 1], free_port()));
        let rtmp = SocketAddr::from(([127, 0, 0, 1], free_port()));
        let servers = |port: u16, opts: &str| -> String {
            (0..net.len()).map(|i| format!("        server {}:{port}{opts};\n", net.ip(i))).collect()
        };
        let conf = include_str!("rolling/nginx.conf")
            .replace("@DIR@", dir.to_str().expect("utf-8 path"))
            .replace("@HTTP_LISTEN@", &http.to_string())
            .replace("@RTMP_LISTEN@", &rtmp.to_string())
            .replace("@HTTP_SERVERS@\n", &servers(common::netns::HTTP_PORT, " max_fails=1 fail_timeout=2s"))
            .replace("@RTMP_SERVERS@\n", &servers(common::netns::RTMP_PORT, " max_fails=1 fail_timeout=2s"));
        let conf_path = dir.join("nginx.conf");
        std::fs::write(&conf_path, conf).expect("nginx.conf");
        let prefix = format!("{}/", dir.display());
        let child = Command::new(nginx)
            .args(["-p", &prefix, "-c", conf_path.to_str().unwrap(), "-g", "daemon off;"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.join("stderr.log")).expect("nginx stderr"))
            .spawn()
            .expect("spawn nginx");
        let mut n = Nginx { child, dir, http, rtmp };
        let t = Instant::now();
        while std::net::TcpStream::connect_timeout(&n.rtmp, Duration::from_millis(200)).is_err()
            || std::net::TcpStream::connect_timeout(&n.http, Duration::from_millis(200)).is_err()
        {
            let log = std::fs::read_to_string(n.dir.join("error.log")).unwrap_or_default();
            let err = std::fs::read_to_string(n.dir.join("stderr.log")).unwrap_or_default();
            assert!(matches!(n.child.try_wait(), Ok(None)), "nginx exited:\n{err}\n{log}");
            assert!(t.elapsed() < Duration::from_secs(10), "nginx does not listen:\n{err}\n{log}");
            std::thread::sleep(Duration::from_millis(50));
        }
        n
    }

    fn access_log(&self) -> String {
        std::fs::read_to_string(self.dir.join("access.log")).unwrap_or_default()
    }

    fn access_tail(&self, n: usize) -> String {
        let t = self.access_log();
        let lines: Vec<&str> = t.lines().collect();
        lines[lines.len().saturating_sub(n)..].join("\n")
    }

    /// The HTTP requests that did not end in a 200 (or 206) or that nginx sent to more than one node, with the
    /// time each one ended in the timeline's clock.
    fn failures(&self) -> String {
        let mut out = String::new();
        for line in self.access_log().lines() {
            let status = line.split('"').nth(2).and_then(|r| r.split_whitespace().next()).unwrap_or("");
            let failed_over =
                line.split("us=[").nth(1).is_some_and(|u| u.split(']').next().unwrap_or("").contains(','));
            if (status != "200" && status != "206") || failed_over {
                let t: f64 = line.split_whitespace().next().and_then(|t| t.parse().ok()).unwrap_or(0.0);
                let _ = writeln!(out, "  {} {line}", hms(t));
            }
        }
        if out.is_empty() {
            out.push_str("  (none)\n");
        }
        out
    }

    fn rtmp_sessions(&self) -> String {
        let mut out = String::new();
        for line in std::fs::read_to_string(self.dir.join("rtmp.log")).unwrap_or_default().lines() {
            let t: f64 = line.split_whitespace().next().and_then(|t| t.parse().ok()).unwrap_or(0.0);
            let _ = writeln!(out, "  {} (ended) {line}", hms(t));
        }
        out
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

// ------------------------------------------------------------------------------------------------ publisher

/// One ffmpeg run of the OBS stand-in.
struct Run {
    started: f64,
    ended: f64,
    status: String,
    log: String,
}

impl std::fmt::Display for Run {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} – {} ({:.1} s) {}: {}",
            hms(self.started),
            hms(self.ended),
            self.ended - self.started,
            self.status,
            self.log.trim().replace('\n', " | ")
        )
    }
}

/// ffmpeg publishing through nginx; whenever it exits (its node went away) it starts again after
/// [`RECONNECT_DELAY`], as OBS does, until stopped.
struct Publisher {
    stop: Arc<AtomicBool>,
    thread: std::thread::JoinHandle<Vec<Run>>,
}

impl Publisher {
    fn start(url: String, timeline: Timeline) -> Publisher {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            let src = Source { width: 640, height: 360, seconds: 3600.0, bitrate_k: 800, ..Source::default() };
            let mut runs = Vec::new();
            loop {
                let started = unix_now();
                let mut p = publish(&url, &src);
                while p.is_running() && !flag.load(Ordering::Relaxed) {
                    std::thread::sleep(Duration::from_millis(50));
                }
                let status = match p.child.try_wait() {
                    Ok(Some(st)) => format!("exited {st}"),
                    _ => "stopped by the test".to_string(),
                };
                let stopping = flag.load(Ordering::Relaxed);
                let log: String = p.log_text().lines().rev().take(3).collect::<Vec<_>>().join("\n");
                drop(p);
                if !stopping {
                    timeline.note(format!("publisher {status}; reconnecting in {RECONNECT_DELAY:?}"));
                }
                runs.push(Run { started, ended: unix_now(), status, log });
                if stopping {
                    return runs;
                }
                let t = Instant::now();
                while t.elapsed() < RECONNECT_DELAY && !flag.load(Ordering::Relaxed) {
                    std::thread::sleep(Duration::from_millis(50));
                }
                if flag.load(Ordering::Relaxed) {
                    return runs;
                }
            }
        });
        Publisher { stop, thread }
    }

    fn stop(self) -> Vec<Run> {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.join().unwrap_or_default()
    }
}

// ------------------------------------------------------------------------------------------------ the player

/// `play.mjs` in a thread of its own, watching until the stop file appears.
struct BrowserPlayer {
    thread: Option<std::thread::JoinHandle<PlayerResult>>,
}

struct PlayerResult {
    code: Option<i32>,
    stdout: String,
    stderr_file: PathBuf,
}

impl PlayerResult {
    fn stderr_tail(&self, n: usize) -> String {
        let t = std::fs::read_to_string(&self.stderr_file).unwrap_or_default();
        // The per-sample lines are many: the tail shows the events and the verdict.
        let lines: Vec<&str> = t.lines().filter(|l| !l.starts_with("[sample]")).collect();
        lines[lines.len().saturating_sub(n)..].join("\n")
    }
}

impl BrowserPlayer {
    fn start(kind: Player, nginx: &Nginx, dir: &Path, stop_file: &Path) -> BrowserPlayer {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/browser/play.mjs");
        let (kind_arg, path) = match kind {
            Player::Hls => ("hls", format!("/{KEY}/index.m3u8")),
            Player::Flv => ("flv", format!("/{KEY}.flv")),
        };
        let url = format!("http://{}{path}", nginx.http);
        let mut cmd = Command::new("node");
        cmd.arg(script)
            .args(["--kind", kind_arg, "--url", &url, "--seconds", "400", "--sample-ms", "200"])
            .args(["--max-stall", &MAX_STALL.to_string(), "--wait-ready", "20", "--first-frame-timeout", "30"])
            .arg("--stop-file")
            .arg(stop_file)
            .env("STROM_PLAY_DEBUG", "1");
        if kind == Player::Flv {
            cmd.args(["--reconnect", "1"]);
        }
        let stdout_file = dir.join("player.stdout");
        let stderr_file = dir.join("player.stderr");
        cmd.stdin(Stdio::null())
            .stdout(std::fs::File::create(&stdout_file).expect("player stdout"))
            .stderr(std::fs::File::create(&stderr_file).expect("player stderr"));
        let thread = std::thread::spawn(move || {
            let mut child = cmd.spawn().expect("spawn node (nodes/tests/browser/setup.sh)");
            let t = Instant::now();
            let code = loop {
                if let Ok(Some(st)) = child.try_wait() {
                    break st.code();
                }
                if t.elapsed() > Duration::from_secs(600) {
                    let _ = child.kill();
                    let _ = child.wait();
                    break None;
                }
                std::thread::sleep(Duration::from_millis(100));
            };
            PlayerResult { code, stdout: std::fs::read_to_string(&stdout_file).unwrap_or_default(), stderr_file }
        });
        BrowserPlayer { thread: Some(thread) }
    }

    fn finished(&self) -> bool {
        self.thread.as_ref().is_none_or(|t| t.is_finished())
    }

    /// The result so far, for an early failure.
    fn report(&mut self) -> String {
        match self.thread.take() {
            Some(t) if t.is_finished() => {
                let r = t.join().expect("player thread");
                format!("exit {:?}: {}\n{}", r.code, r.stdout, r.stderr_tail(60))
            }
            other => {
                self.thread = other;
                "(still running)".into()
            }
        }
    }

    fn wait(&mut self, timeout: Duration) -> PlayerResult {
        let t = self.thread.take().expect("player already joined");
        let start = Instant::now();
        while !t.is_finished() {
            assert!(start.elapsed() < timeout, "the player did not finish within {timeout:?} of the stop file");
            std::thread::sleep(Duration::from_millis(100));
        }
        t.join().expect("player thread")
    }
}

// ------------------------------------------------------------------------------------------------ evidence

/// Copies every log of the run into a directory that outlives the test; returns it.
fn keep_evidence(
    kind: Player,
    net: &Net,
    nginx: &Nginx,
    player: &PlayerResult,
    runs: &[Run],
    timeline: &Timeline,
    summary: &str,
) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("strom-rolling-{}-{kind:?}", std::process::id()).to_lowercase());
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("evidence dir");
    for f in ["access.log", "rtmp.log", "error.log", "nginx.conf"] {
        let _ = std::fs::copy(nginx.dir.join(f), dir.join(format!("nginx-{f}")));
    }
    let _ = std::fs::copy(&player.stderr_file, dir.join("player.stderr"));
    let _ = std::fs::write(dir.join("player.stdout"), &player.stdout);
    let _ = std::fs::write(dir.join("timeline.txt"), timeline.render());
    let _ = std::fs::write(dir.join("summary.txt"), summary);
    let _ = std::fs::write(dir.join("publisher.txt"), runs.iter().map(|r| format!("{r}\n")).collect::<String>());
    // The nodes' logs, every run of each (strom-<i>.log per generation), from the net's scratch directory.
    let needle = format!("-net-{}", net.tag());
    if let Ok(entries) = std::fs::read_dir(std::env::temp_dir()) {
        for e in entries.flatten() {
            if !e.file_name().to_string_lossy().ends_with(&needle) {
                continue;
            }
            for i in 0..net.len() {
                if let Ok(logs) = std::fs::read_dir(e.path().join(format!("node-{i}"))) {
                    for log in logs.flatten() {
                        let _ = std::fs::copy(
                            log.path(),
                            dir.join(format!("node-{i}-{}", log.file_name().to_string_lossy())),
                        );
                    }
                }
            }
        }
    }
    dir
}
