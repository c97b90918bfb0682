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
        ("DELETE", "/api/v1/streams/live/x/publisher"),
    ] {
        let r = request(&s, method, path, None);
        assert_eq!(r.status, 401, "{method} {path}: {}", r.text());
        assert_eq!(r.header("www-authenticate"), Some("Bearer realm=\"strom\""), "{method} {path}");
        assert_eq!(request(&s, method, path, Some("wrong")).status, 401, "{method} {path}");
    }
    assert_eq!(request(&s, "POST", "/api/v1/streams/live/x/record", Some("admin-token-for-tests")).status, 404);
    assert_eq!(request(&s, "POST", "/api/v1/jobs/x/cancel", Some("admin-token-for-tests")).status, 404);
    // With a token set, reading the API (stream names included) needs it too (`auth.read_api` unset).
    assert_eq!(s.get("/api/v1/vod").status, 401, "reading is private once a token is set");
    assert_eq!(s.get("/api/v1/streams").status, 401);
    assert_eq!(request(&s, "GET", "/api/v1/jobs", Some("admin-token-for-tests")).status, 200);
    assert_eq!(rejected(&s, "unauthorized"), 18.0);
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

    // No token, loopback: a page of another origin in a browser on this host is refused; the same origin and
    // non-browser clients are not.
    let local = Strom::start();
    let call = |origin: Option<&str>| {
        let origin = origin.map(|o| format!("Origin: {o}\r\n")).unwrap_or_default();
        let raw = format!(
            "POST /api/v1/streams/live/x/record HTTP/1.1\r\nHost: {}\r\n{origin}Content-Length: 0\r\n\
             Connection: close\r\n\r\n",
            local.http
        );
        http_request(local.http, &raw).unwrap().status
    };
    assert_eq!(call(Some("http://evil.example")), 403, "a cross-origin page");
    assert_eq!(call(Some(&format!("http://{}", local.http))), 404, "the console's own origin");
    assert_eq!(call(None), 404, "curl");
}

/// A token for `prefix` valid until `expires`, made the way the README tells a backend to (openssl).
fn openssl_token(key: &str, prefix: &str, expires: u64) -> String {
    let out = run_with_timeout(
        std::process::Command::new("sh").arg("-c").arg(format!(
            "printf '%s\\n%s' '{prefix}' '{expires}' | openssl dgst -sha256 -hmac '{key}' | sed 's/^.*= //'"
        )),
        Duration::from_secs(20),
    );
    assert!(out.status.success(), "openssl: {}", String::from_utf8_lossy(&out.stderr));
    format!("{expires}.{}", String::from_utf8_lossy(&out.stdout).trim())
}

/// Signed play URLs: with a play key for the application, a valid token (from `strom sign`, or minted by a
/// backend with openssl) plays HLS (the playlist lists its segments with the token), HTTP-FLV and RTMP; no token,
/// an expired one, a tampered one and one for another stream get 403 (RTMP: a refusal).
#[test]
fn signed_play_urls_play_and_bad_tokens_are_refused() {
    let apps = "{live = {play = \"play-key-for-tests\"}}";
    let s = Strom::with_env(&[("STROM_AUTH_APPS", apps)]);
    let _p = publish(&s.rtmp_url("live/cam"), &Source { seconds: 60.0, ..Source::default() });
    s.wait_live("live/cam", Duration::from_secs(15));

    let out = run_with_timeout(
        std::process::Command::new(env!("CARGO_BIN_EXE_strom")).env("STROM_AUTH_APPS", apps).args([
            "sign",
            "--path",
            "/live/cam",
            "--ttl",
            "600",
        ]),
        Duration::from_secs(20),
    );
    assert!(out.status.success(), "strom sign: {}", String::from_utf8_lossy(&out.stderr));
    let query = String::from_utf8_lossy(&out.stdout).trim().to_string();
    let token = query.strip_prefix("token=").expect("token=...").to_string();
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
    let minted = openssl_token("play-key-for-tests", "/live/cam", now + 600);
    let t = Instant::now();
    while s.get(&format!("/live/cam/index.m3u8?{query}")).text().matches("#EXTINF").count() < 2 {
        assert!(t.elapsed() < Duration::from_secs(20), "no segments");
        std::thread::sleep(Duration::from_millis(200));
    }

    // HLS: the playlist lists its URIs with the token; ffprobe plays it; no token: 403 on playlist and segment.
    assert_eq!(s.get("/live/cam/index.m3u8").status, 403);
    let signed = s.get(&format!("/live/cam/index.m3u8?{query}"));
    assert_eq!(signed.status, 200);
    let text = signed.text();
    let segment = text.lines().find(|l| l.ends_with(&format!("?token={token}")) && !l.starts_with('#'));
    let segment = segment.unwrap_or_else(|| panic!("segments carry the token:\n{text}"));
    assert!(text.contains(&format!("init1.mp4?token={token}\"")), "the init segment too: {text}");
    assert_eq!(s.get(&format!("/live/cam/{segment}")).status, 200);
    let bare = segment.split('?').next().unwrap();
    assert_eq!(s.get(&format!("/live/cam/{bare}")).status, 403, "a segment without the token");
    let (frames, stderr) = probe_video(&s.http_url(&format!("/live/cam/index.m3u8?token={minted}")), 2.0);
    assert_playable("signed HLS (openssl-minted token)", &frames, 30, 426, 240, &stderr);

    // HTTP-FLV and RTMP.
    assert_eq!(s.get("/live/cam.flv").status, 403);
    let (frames, stderr) = probe_video(&s.http_url(&format!("/live/cam.flv?{query}")), 2.0);
    assert_playable("signed HTTP-FLV", &frames, 30, 426, 240, &stderr);
    let mut c = RtmpClient::connect(s.rtmp, "live").unwrap();
    assert!(c.play("cam").is_err(), "RTMP without a token");
    let mut c = RtmpClient::connect(s.rtmp, "live").unwrap();
    c.play(&format!("cam?{query}")).expect("RTMP with the token");

    // Expired, tampered, another stream's: 403.
    let expired = openssl_token("play-key-for-tests", "/live/cam", now - 1);
    let mut tampered = token.clone();
    let last = tampered.pop().unwrap();
    tampered.push(if last == '0' { '1' } else { '0' });
    let other = openssl_token("play-key-for-tests", "/live/other", now + 600);
    for bad in [&expired, &tampered, &other] {
        for path in ["/live/cam/index.m3u8", "/live/cam.flv"] {
            let r = s.get(&format!("{path}?token={bad}"));
            assert_eq!(r.status, 403, "{path} with {bad}: {}", r.text());
        }
    }
    assert!(s.get(&format!("/live/cam.flv?token={expired}")).text().contains("expired"));
    // Percent-encoded media paths would reach a handler under another name than the checks saw: refused.
    for path in ["/live/cam%2Eflv", "/l%69ve/cam/index.m3u8", "/live/cam/index%2Em3u8"] {
        assert_eq!(s.get(path).status, 400, "{path}");
    }
    assert!(rejected(&s, "play_token") >= 10.0);
}

/// `strom sign` with the environment a test gives it.
fn strom_sign(env: &[(&str, &str)], args: &[&str]) -> String {
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_strom"));
    for (k, _) in std::env::vars_os() {
        if k.to_string_lossy().starts_with("STROM_") {
            cmd.env_remove(k);
        }
    }
    let out = run_with_timeout(cmd.envs(env.iter().copied()).arg("sign").args(args), Duration::from_secs(20));
    assert!(out.status.success(), "strom sign: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// `GET` from a chosen loopback source address (`curl --interface`): (status, body).
fn get_from(source: &str, url: &str) -> (u16, String) {
    let out = run_with_timeout(
        std::process::Command::new("curl").args(["-sS", "--interface", source, "-o", "-", "-w", "\n%{http_code}", url]),
        Duration::from_secs(20),
    );
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", "0"));
    (code.trim().parse().unwrap_or(0), body.to_string())
}

/// A token bound to a client address plays from that address only; VOD assets (`/vod/ID`) are signed like live
/// streams, their playlists list their URIs with the token; `POST /api/v1/sign` makes the same tokens.
#[test]
fn bound_tokens_play_from_their_address_only_and_vod_assets_are_signed() {
    let data = scratch("signed-vod");
    let env = [("STROM_AUTH_PLAY_KEY", "play-key-for-vod"), ("STROM_STORAGE_PATH", data.to_str().unwrap())];
    let s = Strom::with_env(&env);
    let _p = publish(&s.rtmp_url("live/cam"), &Source { seconds: 60.0, ..Source::default() });
    let query = strom_sign(&env, &["--path", "/live/cam"]);
    let t = Instant::now();
    while s.get(&format!("/live/cam/index.m3u8?{query}")).text().matches("#EXTINF").count() < 2 {
        assert!(t.elapsed() < Duration::from_secs(20), "no segments");
        std::thread::sleep(Duration::from_millis(200));
    }

    // Bound to 127.0.0.2: refused from 127.0.0.1, played from 127.0.0.2.
    let bound = strom_sign(&env, &["--path", "/live/cam", "--ip", "127.0.0.2"]);
    let url = s.http_url(&format!("/live/cam/index.m3u8?{bound}"));
    assert_eq!(get_from("127.0.0.1", &url).0, 403, "a bound token from another address");
    let (status, playlist) = get_from("127.0.0.2", &url);
    assert_eq!(status, 200, "{playlist}");
    let segment = playlist.lines().find(|l| !l.starts_with('#') && !l.is_empty()).expect("a segment");
    assert_eq!(get_from("127.0.0.2", &s.http_url(&format!("/live/cam/{segment}"))).0, 200);
    assert_eq!(get_from("127.0.0.1", &s.http_url(&format!("/live/cam/{segment}"))).0, 403);

    // A recording: its VOD playlist, rendition playlist, segments and MP4 need a token for /vod/ID.
    let r = http_request(
        s.http,
        "POST /api/v1/streams/live/cam/record HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
    )
    .unwrap();
    assert_eq!(r.status, 201, "{}", r.text());
    let id = serde_json::from_slice::<serde_json::Value>(&r.body).unwrap()["id"].as_str().unwrap().to_string();
    std::thread::sleep(Duration::from_secs(5));
    let r = http_request(
        s.http,
        "DELETE /api/v1/streams/live/cam/record HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
    )
    .unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(s.get(&format!("/vod/{id}/index.m3u8")).status, 403);
    assert_eq!(s.get(&format!("/vod/{id}.mp4")).status, 403);
    let vod = strom_sign(&env, &["--path", &format!("/vod/{id}")]);
    let r = s.get(&format!("/vod/{id}/index.m3u8?{vod}"));
    assert_eq!(r.status, 200, "{}", r.text());
    let text = r.text();
    let uri = text.lines().find(|l| !l.starts_with('#') && !l.is_empty()).expect("a URI").to_string();
    assert!(uri.ends_with(&vod), "the VOD playlist lists its URIs with the token: {text}");
    let first = s.get(&format!("/vod/{id}/{uri}"));
    assert_eq!(first.status, 200, "{}", first.text());
    assert_eq!(s.get(&format!("/vod/{id}.mp4?{vod}")).status, 200);
    let other = strom_sign(&env, &["--path", "/vod/another-asset"]);
    assert_eq!(s.get(&format!("/vod/{id}/index.m3u8?{other}")).status, 403, "another asset's token");

    // The API makes the same tokens (loopback: no admin token configured).
    let body = format!("{{\"path\": \"/vod/{id}\", \"ttl\": 60}}");
    let raw = format!(
        "POST /api/v1/sign HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\
         Connection: close\r\n\r\n{body}",
        body.len()
    );
    let r = http_request(s.http, &raw).unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    let q = serde_json::from_slice::<serde_json::Value>(&r.body).unwrap()["query"].as_str().unwrap().to_string();
    assert_eq!(s.get(&format!("/vod/{id}/index.m3u8?{q}")).status, 200);
}

/// `http.metrics_listen`: `/metrics` moves to a listener of its own (with the probes); the public one answers 404.
#[test]
fn metrics_move_to_their_own_listener() {
    let free = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = free.local_addr().unwrap();
    drop(free);
    let s = Strom::with_env(&[("STROM_HTTP_METRICS_LISTEN", addr.to_string().as_str())]);
    let public = s.get("/metrics");
    assert_eq!(public.status, 404);
    assert!(public.text().contains("http.metrics_listen"), "{}", public.text());
    let m = http_get(addr, "/metrics").expect("the metrics listener answers");
    assert_eq!(m.status, 200);
    assert!(m.text().contains("strom_load_ratio"), "{}", m.text());
    assert_eq!(http_get(addr, "/healthz").unwrap().status, 200);
    assert_eq!(http_get(addr, "/readyz").unwrap().status, 200);
    assert_eq!(http_get(addr, "/api/v1/streams").unwrap().status, 404, "nothing else there");
    assert_eq!(s.get("/healthz").status, 200, "the public probes stay");
}

fn base64url(bytes: &[u8]) -> String {
    const A: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let n = chunk.iter().enumerate().fold(0u32, |acc, (i, b)| acc | (u32::from(*b) << (16 - 8 * i)));
        for i in 0..=chunk.len() {
            out.push(A[((n >> (18 - 6 * i)) & 63) as usize] as char);
        }
    }
    out
}

/// An Ed25519 key made by openssl: (private key file, JWK of its public half).
fn ed25519_key(dir: &std::path::Path, name: &str) -> (std::path::PathBuf, String) {
    let pem = dir.join(format!("{name}.pem"));
    let run = |args: &[&str]| {
        let out = run_with_timeout(std::process::Command::new("openssl").args(args), Duration::from_secs(20));
        assert!(out.status.success(), "openssl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        out.stdout
    };
    run(&["genpkey", "-algorithm", "ed25519", "-out", pem.to_str().unwrap()]);
    let der = run(&["pkey", "-in", pem.to_str().unwrap(), "-pubout", "-outform", "DER"]);
    let x = base64url(&der[der.len() - 32..]);
    (pem, format!(r#"{{"kty":"OKP","crv":"Ed25519","x":"{x}","kid":"{name}"}}"#))
}

/// A JWT with `claims`, signed by `pem` (openssl, EdDSA).
fn jwt(pem: &std::path::Path, kid: &str, claims: &serde_json::Value) -> String {
    let header = serde_json::json!({ "alg": "EdDSA", "typ": "JWT", "kid": kid });
    let signing = format!("{}.{}", base64url(header.to_string().as_bytes()), base64url(claims.to_string().as_bytes()));
    let msg = pem.with_extension("msg");
    std::fs::write(&msg, &signing).unwrap();
    let out = run_with_timeout(
        std::process::Command::new("openssl").args([
            "pkeyutl",
            "-sign",
            "-rawin",
            "-inkey",
            pem.to_str().unwrap(),
            "-in",
            msg.to_str().unwrap(),
        ]),
        Duration::from_secs(20),
    );
    assert!(out.status.success(), "openssl pkeyutl: {}", String::from_utf8_lossy(&out.stderr));
    format!("{signing}.{}", base64url(&out.stdout))
}

/// `auth.jwks_file`: a JWT signed by a key of the set plays HLS (its playlists carry it), HTTP-FLV and RTMP; one
/// signed by another key, for another stream, expired, or none, is refused; replacing the file rotates the keys.
#[test]
fn jwts_from_the_jwks_keys_play_and_others_do_not() {
    let dir = scratch("jwks");
    let (good, good_jwk) = ed25519_key(&dir, "idp-1");
    let (other, other_jwk) = ed25519_key(&dir, "idp-2");
    let jwks = dir.join("jwks.json");
    std::fs::write(&jwks, format!(r#"{{"keys":[{good_jwk}]}}"#)).unwrap();
    let s = Strom::with_env(&[("STROM_AUTH_JWKS_FILE", jwks.to_str().unwrap())]);
    let _p = publish(&s.rtmp_url("live/cam"), &Source { seconds: 60.0, ..Source::default() });
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
    let claims = serde_json::json!({ "exp": now + 600, "path": "/live/cam" });
    let token = jwt(&good, "idp-1", &claims);
    let t = Instant::now();
    while s.get(&format!("/live/cam/index.m3u8?token={token}")).text().matches("#EXTINF").count() < 2 {
        assert!(t.elapsed() < Duration::from_secs(20), "no segments: {}", s.log_tail(10));
        std::thread::sleep(Duration::from_millis(200));
    }
    let text = s.get(&format!("/live/cam/index.m3u8?token={token}")).text();
    let segment = text.lines().find(|l| !l.starts_with('#') && !l.is_empty()).expect("a segment").to_string();
    assert!(segment.ends_with(&format!("token={token}")), "the playlist carries the JWT: {text}");
    assert_eq!(s.get(&format!("/live/cam/{segment}")).status, 200);
    let (frames, stderr) = probe_video(&s.http_url(&format!("/live/cam.flv?token={token}")), 2.0);
    assert!(!frames.is_empty(), "HTTP-FLV with the JWT: {stderr}");
    let mut c = RtmpClient::connect(s.rtmp, "live").unwrap();
    c.play(&format!("cam?token={token}")).expect("RTMP with the JWT");

    let forged = jwt(&other, "idp-1", &claims);
    let elsewhere = jwt(&good, "idp-1", &serde_json::json!({ "exp": now + 600, "path": "/live/other" }));
    let expired = jwt(&good, "idp-1", &serde_json::json!({ "exp": now - 5, "path": "/live/cam" }));
    for bad in [&forged, &elsewhere, &expired] {
        assert_eq!(s.get(&format!("/live/cam/index.m3u8?token={bad}")).status, 403);
        assert_eq!(s.get(&format!("/live/cam.flv?token={bad}")).status, 403);
    }
    assert_eq!(s.get("/live/cam/index.m3u8").status, 403);
    let mut c = RtmpClient::connect(s.rtmp, "live").unwrap();
    assert!(c.play(&format!("cam?token={forged}")).is_err(), "RTMP with another key's JWT");

    // Rotation: the file now holds the second key only.
    std::fs::write(&jwks, format!(r#"{{"keys":[{other_jwk}]}}"#)).unwrap();
    let rotated = jwt(&other, "idp-2", &claims);
    let t = Instant::now();
    while s.get(&format!("/live/cam/index.m3u8?token={rotated}")).status != 200 {
        assert!(t.elapsed() < Duration::from_secs(5), "the new key never took effect");
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(s.get(&format!("/live/cam/index.m3u8?token={token}")).status, 403, "the old key is gone");
}
