//! Access control as users meet it: publish secrets apart from the public stream name (OBS's Stream Key
//! `name?secret=SECRET`), secrets rotated in a file without a restart, a reconnect grace nobody can hijack, and
//! the admin token on the API's mutating calls.

mod common;

use std::time::{Duration, Instant};

use common::rtmp::RtmpClient;
use common::*;

fn rejected(s: &Strom, reason: &str) -> f64 {
    s.metric(&format!("strom_connections_rejected_total{{reason=\"{reason}\"}}"))
}

fn log_count(s: &Strom, needle: &str) -> usize {
    s.log_text().lines().filter(|l| l.contains(needle)).count()
}

fn publish_as(s: &Strom, name: &str) -> Result<RtmpClient, String> {
    let mut c = RtmpClient::connect(s.rtmp, "live")?;
    c.publish(name)?;
    Ok(c)
}

/// A stream listed with a secret takes only publishes that show it; an unlisted stream is refused once secrets
/// are on; a publisher gone within the grace cannot be replaced by one without the secret, and comes back with
/// it; the file's secrets rotate without a restart; players and the public API never see a secret.
#[test]
fn publishing_needs_the_stream_s_secret() {
    let dir = scratch("access-secrets");
    let file = dir.join("secrets");
    std::fs::write(&file, "# app/name secret\nlive/studio old-secret-1\n").unwrap();
    let s = Strom::with_env(&[
        ("STROM_AUTH_PUBLISH_SECRETS", "{\"live/cam\" = \"s3cr3t-cam\"}"),
        ("STROM_AUTH_PUBLISH_SECRETS_FILE", file.to_str().unwrap()),
    ]);
    assert!(!s.log_text().contains("publishing is open"), "secrets are on: no open-publishing warning");

    for refused in ["cam", "cam?secret=wrong", "cam?secret=s3cr3t-ca", "other?secret=s3cr3t-cam", "studio"] {
        let err = publish_as(&s, refused).err().unwrap_or_else(|| panic!("{refused}: accepted"));
        assert!(err.contains("Unauthorized"), "{refused}: {err}");
    }
    // OBS's way (ffmpeg as its stand-in): the secret in the stream key; players use the name alone.
    let src = Source { seconds: 60.0, ..Source::default() };
    let obs = publish(&s.rtmp_url("live/cam?secret=s3cr3t-cam"), &src);
    s.wait_live("live/cam", Duration::from_secs(15));
    let (frames, stderr) = probe_video(&s.http_url("/live/cam.flv"), 2.0);
    assert_playable("live/cam", &frames, 30, 426, 240, &stderr);
    assert!(!s.get("/api/v1/streams").text().contains("s3cr3t"), "the public API never shows a secret");

    // The publisher drops: within the grace, a publish without the secret does not take the name; with it, the
    // stream goes on.
    drop(obs);
    let t = Instant::now();
    while s.stream_info("live/cam").is_some_and(|i| i["state"] == "live") {
        assert!(t.elapsed() < Duration::from_secs(10), "the publisher never left");
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(publish_as(&s, "cam").is_err(), "no secret, no takeover during the grace");
    assert!(publish_as(&s, "cam?secret=guess").is_err());
    let back = publish_as(&s, "cam?secret=s3cr3t-cam").expect("the right secret resumes the stream");
    drop(back);

    // Rotation: the file changes, the old secret stops working and the new one works, without a restart.
    let studio = publish_as(&s, "studio?secret=old-secret-1").expect("the file's secret");
    drop(studio);
    std::fs::write(&file, "live/studio new-secret-2\n").unwrap();
    std::thread::sleep(Duration::from_millis(300));
    assert!(publish_as(&s, "studio?secret=old-secret-1").is_err(), "the rotated-out secret");
    publish_as(&s, "studio?secret=new-secret-2").expect("the rotated-in secret");
    assert!(log_count(&s, "publish refused: stream key or secret not authorised") >= 8);

    // A node with no secrets says at start that anyone may publish.
    let open = Strom::start();
    let t = Instant::now();
    while !open.log_text().contains("publishing is open") {
        assert!(t.elapsed() < Duration::from_secs(5), "no warning about open publishing");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn request(s: &Strom, method: &str, path: &str, auth: Option<&str>) -> HttpResponse {
    let auth = auth.map(|t| format!("Authorization: Bearer {t}\r\n")).unwrap_or_default();
    let raw = format!("{method} {path} HTTP/1.1\r\nHost: x\r\n{auth}Content-Length: 0\r\nConnection: close\r\n\r\n");
    http_request(s.http, &raw).unwrap_or_else(|e| panic!("{method} {path}: {e}"))
}

/// With `auth.admin_token` set, every mutating API call needs it (401 with `WWW-Authenticate` otherwise, also
/// from this host); read-only calls stay public. Without a token, mutating calls are answered only on loopback:
/// a client on another address gets 403 saying how to allow it.
#[test]
fn the_admin_token_guards_mutating_calls() {
    let s = Strom::with_env(&[("STROM_AUTH_ADMIN_TOKEN", "admin-token-for-tests")]);
    for (method, path) in [
        ("POST", "/api/v1/streams/live/x/record"),
        ("DELETE", "/api/v1/streams/live/x/record"),
        ("DELETE", "/api/v1/vod/some-asset"),
        ("POST", "/api/v1/vod"),
        ("PUT", "/api/v1/vod/upload/a.mp4"),
        ("POST", "/api/v1/jobs/x/cancel"),
        ("POST", "/api/v1/jobs/x/retry"),
    ] {
        let r = request(&s, method, path, None);
        assert_eq!(r.status, 401, "{method} {path}: {}", r.text());
        assert_eq!(r.header("www-authenticate"), Some("Bearer realm=\"strom\""), "{method} {path}");
        assert_eq!(request(&s, method, path, Some("wrong")).status, 401, "{method} {path}");
    }
    assert_eq!(request(&s, "POST", "/api/v1/streams/live/x/record", Some("admin-token-for-tests")).status, 404);
    assert_eq!(request(&s, "POST", "/api/v1/jobs/x/cancel", Some("admin-token-for-tests")).status, 404);
    assert_eq!(s.get("/api/v1/vod").status, 200, "reading stays public");
    assert_eq!(s.get("/api/v1/jobs").status, 200);
    assert_eq!(rejected(&s, "unauthorized"), 14.0);
    // A preflight lets a browser send the token.
    let r = request(&s, "OPTIONS", "/api/v1/vod", None);
    assert!(r.header("access-control-allow-headers").is_some_and(|h| h.contains("Authorization")), "{:?}", r.text());

    // No token: another address gets 403 (a namespaced node, asked from the host's bridge address).
    let net = common::netns::Net::new(1);
    let n = net.spawn(0, &[], &[]);
    let raw =
        "POST /api/v1/streams/live/x/record HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\nConnection: close\r\n\r\n";
    let r = http_request(n.http, raw).expect("an answer");
    assert_eq!(r.status, 403, "{}", r.text());
    assert!(r.text().contains("auth.admin_token"), "says how to allow it: {}", r.text());
    assert_eq!(n.get("/api/v1/streams").status, 200);
}
