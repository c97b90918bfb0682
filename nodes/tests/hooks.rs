//! HTTP hooks against a real HTTP server started by the test: `on_publish` and `on_play` decide (a deny refuses
//! the publish or the play over RTMP, HTTP-FLV and HLS; answers are cached for HLS polls), `on_unpublish`,
//! `on_stop` and `on_record_done` are told, every event with its fields; a hook server that is down refuses
//! publishes (fail closed) and gives the configured behaviour for plays.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::rtmp::RtmpClient;
use common::*;

/// A hook server: records every JSON body; answers 403 to `on_publish` of a stream named `blocked` and to
/// `on_play` with `token=deny` in its query, 200 to everything else.
struct HookServer {
    addr: SocketAddr,
    seen: Arc<Mutex<Vec<serde_json::Value>>>,
}

impl HookServer {
    fn start() -> HookServer {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let log = seen.clone();
        std::thread::spawn(move || {
            for conn in listener.incoming().map_while(Result::ok) {
                let log = log.clone();
                std::thread::spawn(move || {
                    let mut r = BufReader::new(conn.try_clone().unwrap());
                    let mut len = 0usize;
                    loop {
                        let mut line = String::new();
                        if r.read_line(&mut line).unwrap_or(0) == 0 {
                            return;
                        }
                        if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                            len = v.trim().parse().unwrap_or(0);
                        }
                        if line == "\r\n" {
                            break;
                        }
                    }
                    let mut body = vec![0u8; len];
                    if r.read_exact(&mut body).is_err() {
                        return;
                    }
                    let v: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
                    let deny = (v["event"] == "on_publish" && v["stream"] == "blocked")
                        || (v["event"] == "on_play" && v["query"].as_str().is_some_and(|q| q.contains("token=deny")));
                    log.lock().unwrap().push(v);
                    let status = if deny { "403 Forbidden" } else { "200 OK" };
                    let mut w = conn;
                    let _ = write!(w, "HTTP/1.1 {status}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
                });
            }
        });
        HookServer { addr, seen }
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    fn events(&self, name: &str) -> Vec<serde_json::Value> {
        self.seen.lock().unwrap().iter().filter(|v| v["event"] == name).cloned().collect()
    }

    fn wait_for(&self, what: &str, pred: impl Fn(&serde_json::Value) -> bool) -> serde_json::Value {
        let t = Instant::now();
        loop {
            if let Some(v) = self.seen.lock().unwrap().iter().find(|v| pred(v)) {
                return v.clone();
            }
            assert!(t.elapsed() < Duration::from_secs(30), "no {what}: {:?}", self.seen.lock().unwrap());
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// A port nothing listens on.
fn dead_url() -> String {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    drop(l);
    format!("http://{addr}/hook")
}

fn assert_fields(v: &serde_json::Value, event: &str, stream: &str, protocol: &str) {
    assert_eq!(v["event"], event, "{v}");
    assert_eq!(v["app"], "live", "{v}");
    assert_eq!(v["stream"], stream, "{v}");
    assert_eq!(v["protocol"], protocol, "{v}");
    assert_eq!(v["node"], "test-node", "{v}");
    assert!(v["client"].as_str().is_some_and(|c| c.starts_with("127.0.0.1:")), "{v}");
    assert!(v["time"].as_str().is_some_and(|t| t.ends_with('Z')), "{v}");
}

#[test]
fn hooks_decide_publishes_and_plays_and_hear_every_end() {
    let hooks = HookServer::start();
    let data = scratch("hooks-data");
    let (p, u, pl, st, rd) = (
        hooks.url("/publish"),
        hooks.url("/unpublish"),
        hooks.url("/play"),
        hooks.url("/stop"),
        hooks.url("/record_done"),
    );
    let s = Strom::with_env(&[
        ("STROM_HOOKS_ON_PUBLISH", p.as_str()),
        ("STROM_HOOKS_ON_UNPUBLISH", u.as_str()),
        ("STROM_HOOKS_ON_PLAY", pl.as_str()),
        ("STROM_HOOKS_ON_STOP", st.as_str()),
        ("STROM_HOOKS_ON_RECORD_DONE", rd.as_str()),
        ("STROM_STORAGE_PATH", data.to_str().unwrap()),
    ]);

    // A denied publish is refused.
    let mut denied = publish(&s.rtmp_url("live/blocked"), &Source { seconds: 10.0, ..Source::default() });
    assert!(denied.wait(Duration::from_secs(15)).is_some_and(|st| !st.success()), "a denied publish went on");
    assert!(s.stream_info("live/blocked").is_none());
    assert!(s.log_text().contains("publish refused by the on_publish hook"));

    // An allowed one: its event carries app, stream, client, protocol, node and the query (the secret).
    let mut publisher = publish(&s.rtmp_url("live/cam?secret=s1"), &Source { seconds: 60.0, ..Source::default() });
    s.wait_live("live/cam", Duration::from_secs(15));
    let v = hooks.wait_for("on_publish of cam", |v| v["event"] == "on_publish" && v["stream"] == "cam");
    assert_fields(&v, "on_publish", "cam", "rtmp");
    assert_eq!(v["query"], "secret=s1");

    // HLS: a denied play gets 403; an allowed one plays, and the polls that follow reuse the answer.
    let t = Instant::now();
    while s.get("/live/cam/index.m3u8").text().matches("#EXTINF").count() < 1 {
        assert!(t.elapsed() < Duration::from_secs(20), "no segment");
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(s.get("/live/cam/index.m3u8?token=deny").status, 403);
    for i in 0..5 {
        assert_eq!(s.get("/live/cam/index.m3u8").status, 200);
        // LL-HLS polls differ in their query at every request: still one question.
        let _ = s.get(&format!("/live/cam/index.m3u8?_HLS_msn={i}&_HLS_part=0"));
    }
    let hls: Vec<_> = hooks.events("on_play").into_iter().filter(|v| v["protocol"] == "hls").collect();
    assert_eq!(hls.len(), 2, "one question per client and query, not per poll: {hls:?}");
    assert_fields(&hls[0], "on_play", "cam", "hls");

    // HTTP-FLV: denied (403), then a player that leaves: on_play, then on_stop.
    assert_eq!(s.get("/live/cam.flv?token=deny").status, 403);
    let flv = run_with_timeout(
        std::process::Command::new("curl").args([
            "-s",
            "-o",
            "/dev/null",
            "--max-time",
            "2",
            &s.http_url("/live/cam.flv"),
        ]),
        Duration::from_secs(10),
    );
    assert!(!flv.status.success(), "curl ends at its --max-time");
    let v = hooks.wait_for("on_stop of flv", |v| v["event"] == "on_stop" && v["protocol"] == "flv");
    assert_fields(&v, "on_stop", "cam", "flv");

    // RTMP play: denied, then allowed and left.
    let mut c = RtmpClient::connect(s.rtmp, "live").unwrap();
    assert!(c.play("cam?token=deny").is_err(), "a denied RTMP play");
    let mut c = RtmpClient::connect(s.rtmp, "live").unwrap();
    c.play("cam").expect("an allowed RTMP play");
    drop(c);
    let v = hooks.wait_for("on_stop of rtmp", |v| v["event"] == "on_stop" && v["protocol"] == "rtmp");
    assert_fields(&v, "on_stop", "cam", "rtmp");
    let v = hooks.wait_for("on_play of rtmp", |v| v["event"] == "on_play" && v["protocol"] == "rtmp");
    assert_fields(&v, "on_play", "cam", "rtmp");

    // A recording, then the publisher leaves: on_unpublish, and on_record_done with the asset.
    let r = http_request(
        s.http,
        "POST /api/v1/streams/live/cam/record HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
    )
    .unwrap();
    assert_eq!(r.status, 201, "{}", r.text());
    std::thread::sleep(Duration::from_secs(3));
    let _ = publisher.child.kill();
    let v = hooks.wait_for("on_unpublish", |v| v["event"] == "on_unpublish");
    assert_fields(&v, "on_unpublish", "cam", "rtmp");
    assert_eq!(v["query"], "secret=s1");
    let v = hooks.wait_for("on_record_done", |v| v["event"] == "on_record_done");
    assert_eq!(v["app"], "live");
    assert_eq!(v["stream"], "cam");
    assert!(v["asset"].as_str().is_some_and(|a| a.starts_with("live-cam-")), "{v}");
    assert!(v["playlist"].as_str().is_some_and(|p| p.ends_with("/index.m3u8")), "{v}");
    assert!(v["state"] == "done" || v["state"] == "partial", "{v}");
    assert!(s.metric("strom_hook_requests_total{event=\"on_play\",result=\"deny\"}") >= 3.0);
}

#[test]
fn a_hook_server_that_is_down_refuses_publishes_and_plays_follow_the_setting() {
    let dead = dead_url();
    // on_publish down: refused (fail closed), after its retries.
    let s = Strom::with_env(&[("STROM_HOOKS_ON_PUBLISH", dead.as_str()), ("STROM_HOOKS_TIMEOUT_MS", "500")]);
    let mut p = publish(&s.rtmp_url("live/x"), &Source { seconds: 10.0, ..Source::default() });
    assert!(p.wait(Duration::from_secs(20)).is_some_and(|st| !st.success()), "a publish went on with the hook down");
    assert!(s.log_text().contains("hook unreachable"), "{}", s.log_tail(10));
    assert!(s.metric("strom_hook_requests_total{event=\"on_publish\",result=\"error\"}") >= 3.0, "retried");
    drop(s);

    // on_play down: allowed by default (404: past the hook, no such stream), refused with play_when_down = deny.
    let open = Strom::with_env(&[("STROM_HOOKS_ON_PLAY", dead.as_str())]);
    assert_eq!(open.get("/live/none/index.m3u8").status, 404);
    let closed = Strom::with_env(&[("STROM_HOOKS_ON_PLAY", dead.as_str()), ("STROM_HOOKS_PLAY_WHEN_DOWN", "deny")]);
    assert_eq!(closed.get("/live/none/index.m3u8").status, 403);
    assert_eq!(closed.get("/live/none.flv").status, 403);
}
