//! RTMPS and HTTPS with a test CA made by openssl: ffmpeg publishes over `rtmps://` and plays it back verifying
//! the certificate; curl fetches HLS over HTTP/2 and HTTP/1.1; hls.js in headless Chromium plays over `https://`
//! with the CA in its NSS database (certutil); replacing the certificate files gives new connections the new
//! certificate without a restart; a stalled TLS handshake costs only its own connection.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::*;

fn run(cmd: &mut Command) -> Vec<u8> {
    let out = run_with_timeout(cmd, Duration::from_secs(60));
    assert!(out.status.success(), "{cmd:?}: {}", String::from_utf8_lossy(&out.stderr));
    out.stdout
}

/// A CA and two server certificates (`one`, `two`) for 127.0.0.1 and localhost, in `dir`.
fn make_certs(dir: &Path) {
    let p = |f: &str| dir.join(f).to_str().unwrap().to_string();
    run(Command::new("openssl").args(["req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256"]).args([
        "-nodes",
        "-keyout",
        &p("ca.key"),
        "-out",
        &p("ca.pem"),
        "-days",
        "2",
        "-subj",
        "/CN=strom test CA",
    ]));
    for name in ["one", "two"] {
        let ext = dir.join(format!("{name}.ext"));
        std::fs::write(
            &ext,
            "subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n",
        )
        .unwrap();
        run(Command::new("openssl")
            .args(["req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes"])
            .args([
                "-keyout",
                &p(&format!("{name}.key")),
                "-out",
                &p(&format!("{name}.csr")),
                "-subj",
                &format!("/CN={name}"),
            ]));
        run(Command::new("openssl").args(["x509", "-req", "-days", "2", "-CAcreateserial"]).args([
            "-in",
            &p(&format!("{name}.csr")),
            "-CA",
            &p("ca.pem"),
            "-CAkey",
            &p("ca.key"),
            "-out",
            &p(&format!("{name}.pem")),
            "-extfile",
            ext.to_str().unwrap(),
        ]));
    }
}

/// The address a TLS listener logged (`RTMPS listening rtmps=...`).
fn logged_addr(s: &Strom, field: &str) -> std::net::SocketAddr {
    let t = Instant::now();
    loop {
        let log = s.log_text();
        if let Some(rest) = log.split(&format!("{field}=")).nth(1) {
            return rest.split_whitespace().next().unwrap().parse().unwrap();
        }
        assert!(t.elapsed() < Duration::from_secs(10), "no {field} address in the log");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The subject CN of the certificate `addr` presents (verified against the CA).
fn served_cn(addr: std::net::SocketAddr, ca: &Path) -> String {
    let out = run_with_timeout(
        Command::new("openssl")
            .args(["s_client", "-connect", &addr.to_string(), "-verify_return_error", "-CAfile"])
            .arg(ca),
        Duration::from_secs(20),
    );
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(text.contains("Verify return code: 0 (ok)"), "certificate not verified: {text}");
    text.lines().find_map(|l| l.strip_prefix("subject=CN = ")).unwrap_or_default().trim().to_string()
}

fn curl(ca: &Path, args: &[&str], url: &str) -> (String, String) {
    let out = run_with_timeout(
        Command::new("curl").args(["-sS", "--cacert"]).arg(ca).args(args).args([
            "-w",
            "\n%{http_code} %{http_version}",
            url,
        ]),
        Duration::from_secs(20),
    );
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let (body, status) = text.rsplit_once('\n').unwrap_or(("", ""));
    (body.to_string(), status.to_string())
}

#[test]
fn rtmps_and_https_serve_with_the_configured_certificate_and_reload_it() {
    let dir = scratch("tls");
    make_certs(&dir);
    let (cert, key, ca) = (dir.join("cert.pem"), dir.join("key.pem"), dir.join("ca.pem"));
    std::fs::copy(dir.join("one.pem"), &cert).unwrap();
    std::fs::copy(dir.join("one.key"), &key).unwrap();
    let s = Strom::with_env(&[
        ("STROM_TLS_CERT_FILE", cert.to_str().unwrap()),
        ("STROM_TLS_KEY_FILE", key.to_str().unwrap()),
        ("STROM_RTMPS_LISTEN", "127.0.0.1:0"),
        ("STROM_HTTPS_LISTEN", "127.0.0.1:0"),
    ]);
    let rtmps = logged_addr(&s, "rtmps");
    let https = logged_addr(&s, "https");

    // ffmpeg publishes over RTMPS, verifying the certificate against the test CA.
    let flog = dir.join("ffmpeg.log");
    let mut publisher = Command::new("ffmpeg")
        .args(["-hide_banner", "-nostdin", "-loglevel", "warning", "-re", "-f", "lavfi", "-i"])
        .arg("testsrc2=size=640x360:rate=30")
        .args(["-f", "lavfi", "-i", "sine=frequency=440", "-t", "90", "-c:v", "libx264", "-preset", "veryfast"])
        .args(["-g", "60", "-c:a", "aac", "-f", "flv", "-tls_verify", "1", "-ca_file"])
        .arg(&ca)
        .arg(format!("rtmps://{rtmps}/live/secure"))
        .stdin(std::process::Stdio::null())
        .stderr(std::fs::File::create(&flog).unwrap())
        .spawn()
        .expect("ffmpeg");
    s.wait_live("live/secure", Duration::from_secs(20));
    // The RTMP side saw the client, not the loopback relay: the RTMPS session's peer port is the publisher's.
    let log = s.log_text();
    let tls_peer = log.lines().find(|l| l.contains("rtmps{") && l.contains("RTMPS session")).expect("an RTMPS session");
    let port = tls_peer.split("peer=127.0.0.1:").nth(1).unwrap().split([' ', '}']).next().unwrap().to_string();
    assert!(
        log.lines().any(|l| l.contains(&format!("rtmp{{conn=1 peer=127.0.0.1:{port}")) && l.contains("publishing")),
        "the RTMP side logs the client's own address (port {port}):\n{}",
        s.log_tail(20)
    );

    // ffprobe plays it back over RTMPS (certificate verified).
    let out = run_with_timeout(
        Command::new("ffprobe")
            .args(["-v", "error", "-tls_verify", "1", "-ca_file"])
            .arg(&ca)
            .args(["-select_streams", "v", "-show_entries", "stream=width,height", "-of", "csv=p=0"])
            .arg(format!("rtmps://{rtmps}/live/secure")),
        Duration::from_secs(30),
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "640,360", "{}", String::from_utf8_lossy(&out.stderr));

    // HTTPS: HTTP/2 by ALPN, HTTP/1.1 when asked; segments too.
    let url = format!("https://{https}/live/secure/index.m3u8");
    let t = Instant::now();
    while !curl(&ca, &[], &url).0.contains("#EXTINF") {
        assert!(t.elapsed() < Duration::from_secs(20), "no HLS over HTTPS");
        std::thread::sleep(Duration::from_millis(200));
    }
    let (playlist, status) = curl(&ca, &["--http2"], &url);
    assert_eq!(status, "200 2", "HTTP/2 over TLS");
    assert_eq!(curl(&ca, &["--http1.1"], &url).1, "200 1.1");
    let segment = playlist.lines().find(|l| !l.starts_with('#') && !l.is_empty()).unwrap();
    assert_eq!(
        curl(&ca, &["--http2", "-o", "/dev/null"], &format!("https://{https}/live/secure/{segment}")).1,
        "200 2"
    );

    // The certificate files are replaced: new connections get the new one, without a restart.
    assert_eq!(served_cn(https, &ca), "one");
    assert_eq!(served_cn(rtmps, &ca), "one");
    std::fs::copy(dir.join("two.key"), &key).unwrap();
    std::fs::copy(dir.join("two.pem"), &cert).unwrap();
    let t = Instant::now();
    while served_cn(https, &ca) != "two" {
        assert!(t.elapsed() < Duration::from_secs(10), "the new certificate was not taken");
        std::thread::sleep(Duration::from_millis(300));
    }
    assert_eq!(served_cn(rtmps, &ca), "two");
    assert!(s.log_text().contains("TLS certificate reloaded"));
    // The publisher's session, opened under the old certificate, goes on.
    assert!(publisher.try_wait().unwrap().is_none(), "{}", std::fs::read_to_string(&flog).unwrap_or_default());

    // Stalled TLS handshakes (a TCP connection that never says hello) cost only themselves.
    let stalled: Vec<_> = (0..50).map(|_| std::net::TcpStream::connect(https).unwrap()).collect();
    let t = Instant::now();
    assert_eq!(curl(&ca, &["--http2"], &url).1, "200 2");
    assert!(t.elapsed() < Duration::from_secs(3), "a request behind 50 stalled handshakes took {:?}", t.elapsed());
    drop(stalled);
    let _ = publisher.kill();
    let _ = publisher.wait();
}

/// hls.js in headless Chromium plays the stream over `https://`, the test CA trusted through Chromium's NSS
/// database (no certificate errors ignored).
#[test]
fn hls_js_plays_over_https_with_the_test_ca_trusted() {
    if std::env::var("STROM_SKIP_BROWSER").is_ok_and(|v| v == "1") {
        eprintln!("STROM_SKIP_BROWSER=1: skipped");
        return;
    }
    let dir = scratch("tls-browser");
    make_certs(&dir);
    let ca = dir.join("ca.pem");
    let home = dir.join("home");
    let nssdb = home.join(".pki/nssdb");
    std::fs::create_dir_all(&nssdb).unwrap();
    let db = format!("sql:{}", nssdb.display());
    run(Command::new("certutil").args(["-N", "-d", &db, "--empty-password"]));
    run(Command::new("certutil").args(["-A", "-d", &db, "-t", "C,,", "-n", "strom-test-ca", "-i"]).arg(&ca));
    let s = Strom::with_env(&[
        ("STROM_TLS_CERT_FILE", dir.join("one.pem").to_str().unwrap()),
        ("STROM_TLS_KEY_FILE", dir.join("one.key").to_str().unwrap()),
        ("STROM_HTTPS_LISTEN", "127.0.0.1:0"),
    ]);
    let https = logged_addr(&s, "https");
    let _p = publish(
        &s.rtmp_url("live/secure"),
        &Source { width: 640, height: 360, seconds: 60.0, bitrate_k: 800, ..Source::default() },
    );
    s.wait_live("live/secure", Duration::from_secs(15));
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/browser/play.mjs");
    let out = run_with_timeout(
        Command::new("node")
            .arg(script)
            .args(["--kind", "hls", "--url", &format!("https://{https}/live/secure/index.m3u8")])
            .args(["--seconds", "10", "--expect-width", "640", "--expect-height", "360", "--wait-ready", "15"])
            .env("HOME", &home)
            .env("NODE_EXTRA_CA_CERTS", &ca),
        Duration::from_secs(150),
    );
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    assert_ne!(out.status.code(), Some(2), "browser harness not set up: {}", String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "hls.js over HTTPS failed: {stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    let v: serde_json::Value = serde_json::from_str(stdout.trim().lines().last().unwrap_or("{}")).unwrap();
    assert!(v["played_seconds"].as_f64().unwrap_or(0.0) > 7.0, "{v}");
}
