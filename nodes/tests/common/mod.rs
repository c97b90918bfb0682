//! Test harness: real `strom` processes, ffmpeg publishers, ffprobe players, a tiny HTTP client and a blocking
//! RTMP client (rml_rtmp), so tests assert on what real peers see.

#![allow(dead_code)]

pub mod flv;
pub mod netns;
pub mod rtmp;
pub mod s3;
pub mod ts;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// A scratch directory for one test.
pub fn scratch(name: &str) -> PathBuf {
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let dir = std::env::temp_dir().join(format!("strom-test-{}-{n}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("scratch dir");
    dir
}

/// The value of one metric series (`name{labels}`) in a `/metrics` text; 0 when absent, NaN when unreadable.
pub fn metric_in(body: &str, series: &str) -> f64 {
    body.lines()
        .find_map(|l| l.strip_prefix(series).and_then(|r| r.strip_prefix(' ')))
        .map(|v| v.trim().parse().unwrap_or(f64::NAN))
        .unwrap_or(0.0)
}

/// A running `strom` process on ephemeral loopback ports.
pub struct Strom {
    child: Option<Child>,
    pub rtmp: SocketAddr,
    pub http: SocketAddr,
    pub log: PathBuf,
    pub dir: PathBuf,
}

impl Strom {
    /// Starts strom with default configuration.
    pub fn start() -> Strom {
        Strom::with_env(&[])
    }

    /// Starts strom with extra `STROM_*` variables.
    pub fn with_env(env: &[(&str, &str)]) -> Strom {
        Strom::with_args(&[], env)
    }

    /// Starts strom with extra arguments and variables; waits until it serves.
    pub fn with_args(args: &[&str], env: &[(&str, &str)]) -> Strom {
        let dir = scratch("node");
        let log = dir.join("strom.log");
        let logf = std::fs::File::create(&log).expect("log file");
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_strom"));
        // The node sees only the variables a test gives it, not whatever `STROM_*` the runner's shell exports.
        for (k, _) in std::env::vars_os() {
            if k.to_string_lossy().starts_with("STROM_") {
                cmd.env_remove(k);
            }
        }
        cmd.args(["--rtmp-listen", "127.0.0.1:0", "--http-listen", "127.0.0.1:0", "--node-name", "test-node"])
            .args(args)
            .env("STROM_LOG", "info,strom_engine=debug")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(logf);
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("spawn strom");
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            if let Some(line) = text.lines().find(|l| l.contains("strom is serving")) {
                let addr = |k: &str| -> SocketAddr {
                    let start = line.find(k).expect("addr field") + k.len();
                    let rest = &line[start..];
                    let end = rest.find(' ').unwrap_or(rest.len());
                    rest[..end].trim().parse().expect("socket addr")
                };
                return Strom { rtmp: addr("rtmp="), http: addr("http="), child: Some(child), log, dir };
            }
            if Instant::now() > deadline || !matches!(child.try_wait(), Ok(None)) {
                let _ = child.kill();
                let _ = child.wait();
                panic!("strom did not start:\n{text}");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().map(|c| c.id()).unwrap_or(0)
    }

    pub fn rtmp_url(&self, key: &str) -> String {
        format!("rtmp://{}/{key}", self.rtmp)
    }

    pub fn http_url(&self, path: &str) -> String {
        format!("http://{}{path}", self.http)
    }

    pub fn get(&self, path: &str) -> HttpResponse {
        http_get(self.http, path).unwrap_or_else(|e| panic!("GET {path}: {e}"))
    }

    /// Reads one sample of a metric from `/metrics` (exact series text, e.g. `strom_viewers{protocol="rtmp"}`).
    pub fn metric(&self, series: &str) -> f64 {
        metric_in(&self.get("/metrics").text(), series)
    }

    /// The `/api/v1/streams` entry of `key`, if any.
    pub fn stream_info(&self, key: &str) -> Option<serde_json::Value> {
        let v: serde_json::Value = serde_json::from_slice(&self.get("/api/v1/streams").body).ok()?;
        v["streams"].as_array()?.iter().find(|s| s["key"] == key).cloned()
    }

    /// Waits until `key` is live with a known video codec.
    pub fn wait_live(&self, key: &str, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(s) = self.stream_info(key) {
                if s["state"] == "live" && !s["video_codec"].is_null() {
                    return;
                }
            }
            assert!(Instant::now() < deadline, "stream {key} not live in {timeout:?}\n{}", self.log_tail(40));
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Waits until the HLS playlist of `key` lists at least `n` segments; returns its text.
    pub fn wait_segments(&self, key: &str, n: usize, timeout: Duration) -> String {
        let deadline = Instant::now() + timeout;
        loop {
            let r = self.get(&format!("/{key}/index.m3u8"));
            if r.status == 200 && r.text().matches("#EXTINF").count() >= n {
                return r.text();
            }
            assert!(Instant::now() < deadline, "{key}: fewer than {n} segments after {timeout:?}");
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn log_tail(&self, n: usize) -> String {
        let t = self.log_text();
        let lines: Vec<&str> = t.lines().collect();
        lines[lines.len().saturating_sub(n)..].join("\n")
    }

    pub fn is_running(&mut self) -> bool {
        matches!(self.child.as_mut().map(|c| c.try_wait()), Some(Ok(None)))
    }

    /// Resident memory in bytes, from /proc.
    pub fn rss(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid())).unwrap_or_default();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            .unwrap_or(0)
            * 1024
    }

    /// Sends SIGTERM and waits up to `timeout` for the exit.
    pub fn terminate(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let pid = self.pid();
        let _ = Command::new("kill").args(["-TERM", &pid.to_string()]).status();
        let child = self.child.as_mut()?;
        let deadline = Instant::now() + timeout;
        loop {
            if let Ok(Some(st)) = child.try_wait() {
                return Some(st);
            }
            if Instant::now() > deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Strom {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        if std::thread::panicking() {
            eprintln!("---- strom log (tail) ----\n{}\n----", self.log_tail(60));
        } else {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

/// Options of a generated test stream.
#[derive(Clone, Debug)]
pub struct Source {
    pub width: u32,
    pub height: u32,
    pub fps: u32,
    pub gop_secs: f64,
    pub audio: bool,
    pub seconds: f64,
    pub bitrate_k: u32,
}

impl Default for Source {
    fn default() -> Self {
        Source { width: 426, height: 240, fps: 30, gop_secs: 2.0, audio: true, seconds: 30.0, bitrate_k: 600 }
    }
}

/// A fast ABR ladder for tests: ultrafast presets (2 cores run the publisher, the encoders and the players).
pub const TEST_RUNGS: &str = "[{height = 720, bitrate_kbps = 1500, preset = \"ultrafast\", profile = \"high\"}, \
                              {height = 480, bitrate_kbps = 900, preset = \"ultrafast\", profile = \"high\"}, \
                              {height = 360, bitrate_kbps = 600, preset = \"ultrafast\", profile = \"main\"}, \
                              {height = 240, bitrate_kbps = 300, preset = \"ultrafast\", profile = \"baseline\"}]";

/// A node that builds the [`TEST_RUNGS`] ladder for every published stream.
pub fn ladder_node() -> Strom {
    Strom::with_env(&[
        ("STROM_TRANSCODE_MODE", "always"),
        ("STROM_TRANSCODE_RUNGS", TEST_RUNGS),
        ("STROM_TRANSCODE_THREADS", "2"),
    ])
}

/// A child process killed on drop (ffmpeg publishers and readers).
pub struct Proc {
    pub child: Child,
    pub log: PathBuf,
}

impl Proc {
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    pub fn wait(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Ok(Some(st)) = self.child.try_wait() {
                return Some(st);
            }
            if Instant::now() > deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The ffmpeg inputs and encoder options that make `src` (testsrc2, a sine, x264 with fixed GOPs, AAC); the
/// caller adds the output.
pub fn source_args(cmd: &mut Command, src: &Source) {
    cmd.args(["-f", "lavfi", "-i"]).arg(format!("testsrc2=size={}x{}:rate={}", src.width, src.height, src.fps));
    if src.audio {
        cmd.args(["-f", "lavfi", "-i", "sine=frequency=440:sample_rate=44100"]);
    }
    let gop = ((src.fps as f64) * src.gop_secs).round() as u32;
    cmd.args(["-t", &src.seconds.to_string()])
        .args(["-c:v", "libx264", "-preset", "ultrafast", "-tune", "zerolatency", "-pix_fmt", "yuv420p"])
        .args(["-g", &gop.to_string(), "-keyint_min", &gop.to_string(), "-sc_threshold", "0"])
        .args(["-b:v", &format!("{}k", src.bitrate_k), "-threads", "1"]);
    if src.audio {
        cmd.args(["-c:a", "aac", "-b:a", "64k"]);
    }
}

/// ffmpeg publishing a generated H.264 (+ AAC) stream in real time — the OBS stand-in.
pub fn publish(url: &str, src: &Source) -> Proc {
    publish_with(Command::new("ffmpeg"), url, src)
}

/// [`publish`] through a prepared `ffmpeg` command (e.g. one run inside a network namespace).
pub fn publish_with(mut cmd: Command, url: &str, src: &Source) -> Proc {
    let dir = scratch("ffmpeg");
    let log = dir.join("ffmpeg.log");
    cmd.args(["-hide_banner", "-nostdin", "-loglevel", "warning", "-re"]);
    source_args(&mut cmd, src);
    cmd.args(["-f", "flv", url]).stdin(Stdio::null()).stdout(Stdio::null());
    cmd.stderr(std::fs::File::create(&log).expect("log"));
    Proc { child: cmd.spawn().expect("spawn ffmpeg (is it installed?)"), log }
}

/// One decoded frame as ffprobe reports it.
#[derive(Debug, Clone)]
pub struct Frame {
    pub pts: f64,
    pub key: bool,
    pub width: u32,
    pub height: u32,
}

/// Runs a command with a deadline (killed past it).
pub fn run_with_timeout(cmd: &mut Command, timeout: Duration) -> Output {
    let mut child = cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().expect("spawn");
    let mut stdout = child.stdout.take().expect("stdout");
    let mut stderr = child.stderr.take().expect("stderr");
    let out_t = std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = stdout.read_to_end(&mut v);
        v
    });
    let err_t = std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = stderr.read_to_end(&mut v);
        v
    });
    let deadline = Instant::now() + timeout;
    let status = loop {
        if let Ok(Some(st)) = child.try_wait() {
            break st;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            break child.wait().expect("wait");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    Output { status, stdout: out_t.join().unwrap_or_default(), stderr: err_t.join().unwrap_or_default() }
}

/// Decodes `seconds` of the video of `url` with ffprobe and returns every frame.
pub fn probe_video(url: &str, seconds: f64) -> (Vec<Frame>, String) {
    let out = run_with_timeout(
        Command::new("ffprobe")
            .args(["-v", "error", "-rw_timeout", "15000000", "-select_streams", "v:0"])
            .args(["-show_entries", "frame=pts_time,best_effort_timestamp_time,key_frame,width,height"])
            .args(["-of", "json", "-read_intervals", &format!("%+{seconds}")])
            .arg(url),
        Duration::from_secs_f64(seconds + 25.0),
    );
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
    let frames = v["frames"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|f| Frame {
                    pts: f["pts_time"]
                        .as_str()
                        .or(f["best_effort_timestamp_time"].as_str())
                        .and_then(|s| s.parse().ok())
                        .unwrap_or(f64::NAN),
                    key: f["key_frame"] == 1,
                    width: f["width"].as_u64().unwrap_or(0) as u32,
                    height: f["height"].as_u64().unwrap_or(0) as u32,
                })
                .collect()
        })
        .unwrap_or_default();
    (frames, stderr)
}

/// Lists the codec names of the streams of `url` (streams without one, such as data, are left out), with ffprobe.
pub fn probe_streams(url: &str) -> Vec<String> {
    probe_stream_field(url, "codec_name")
}

/// Lists the kinds of the streams of `url` (`video`, `audio`, `data`, `subtitle`) as ffprobe sees them, in order.
pub fn probe_stream_types(url: &str) -> Vec<String> {
    probe_stream_field(url, "codec_type")
}

/// One field of every stream of `url`, as ffprobe's `-show_entries stream=FIELD` reports it.
fn probe_stream_field(url: &str, field: &str) -> Vec<String> {
    let out = run_with_timeout(
        Command::new("ffprobe")
            .args(["-v", "error", "-rw_timeout", "15000000", "-show_entries", &format!("stream={field}")])
            .args(["-of", "json"])
            .arg(url),
        Duration::from_secs(30),
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
    v["streams"]
        .as_array()
        .map(|a| a.iter().filter_map(|s| s[field].as_str().map(String::from)).collect())
        .unwrap_or_default()
}

/// Decodes the video of `url` with ffprobe until the stream ends (or `timeout`): every frame's pts, in order.
pub fn probe_until_end(url: &str, timeout: Duration) -> (Vec<f64>, String) {
    let out = run_with_timeout(
        Command::new("ffprobe")
            .args(["-v", "error", "-rw_timeout", "30000000", "-select_streams", "v:0"])
            .args(["-show_entries", "frame=pts_time,best_effort_timestamp_time", "-of", "csv=p=0"])
            .arg(url),
        timeout,
    );
    let pts = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split(',').find_map(|v| v.trim().parse::<f64>().ok()))
        .collect();
    (pts, String::from_utf8_lossy(&out.stderr).to_string())
}

/// Asserts what a viewer needs: enough frames, the right size, a keyframe first, timestamps that advance.
pub fn assert_playable(what: &str, frames: &[Frame], min_frames: usize, width: u32, height: u32, stderr: &str) {
    assert!(
        frames.len() >= min_frames,
        "{what}: {} frames decoded, expected >= {min_frames}; stderr: {stderr}",
        frames.len()
    );
    assert!(frames[0].key, "{what}: first decoded frame is not a keyframe");
    for f in frames {
        assert_eq!((f.width, f.height), (width, height), "{what}: wrong resolution");
    }
    for w in frames.windows(2) {
        assert!(w[1].pts > w[0].pts, "{what}: timestamps do not advance: {} then {}", w[0].pts, w[1].pts);
    }
}

/// A parsed HTTP response.
#[derive(Debug)]
pub struct HttpResponse {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl HttpResponse {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).to_string()
    }
}

/// A minimal HTTP/1.1 GET (Connection: close), enough for playlists, segments, API and metrics.
pub fn http_get(addr: SocketAddr, path: &str) -> std::io::Result<HttpResponse> {
    http_request(addr, &format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"))
}

/// An answer's status, headers (names in lower case), and body chunks with the instants they arrived.
pub type Chunked = (u16, std::collections::HashMap<String, String>, Vec<(Vec<u8>, Instant)>);

/// Reads an HTTP/1.1 answer from `c`, noting when each chunk of a chunked body arrived (no chunks when the body
/// is not chunked; it is then left unread).
pub fn read_chunked(c: &mut TcpStream) -> Chunked {
    let mut r = BufReader::new(c);
    let mut head = String::new();
    loop {
        let mut line = String::new();
        r.read_line(&mut line).expect("an answer head");
        if line == "\r\n" {
            break;
        }
        head.push_str(&line);
    }
    let mut lines = head.split("\r\n");
    let status = lines.next().and_then(|l| l.split(' ').nth(1)).and_then(|s| s.parse().ok()).unwrap_or(0);
    let headers: std::collections::HashMap<String, String> =
        lines.filter_map(|l| l.split_once(": ")).map(|(n, v)| (n.to_ascii_lowercase(), v.to_string())).collect();
    let mut chunks = Vec::new();
    if headers.get("transfer-encoding").map(String::as_str) != Some("chunked") {
        return (status, headers, chunks);
    }
    loop {
        let mut size = String::new();
        r.read_line(&mut size).expect("a chunk size");
        let n = usize::from_str_radix(size.trim(), 16).expect("a hex chunk size");
        let mut data = vec![0u8; n + 2];
        r.read_exact(&mut data).expect("a chunk");
        assert_eq!(&data[n..], b"\r\n", "a chunk ends with CRLF");
        if n == 0 {
            return (status, headers, chunks);
        }
        data.truncate(n);
        chunks.push((data, Instant::now()));
    }
}

/// Sends a raw request and parses the response (chunked bodies are decoded).
pub fn http_request(addr: SocketAddr, raw: &str) -> std::io::Result<HttpResponse> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
    s.set_read_timeout(Some(Duration::from_secs(20)))?;
    s.write_all(raw.as_bytes())?;
    let mut r = BufReader::new(s);
    let mut line = String::new();
    r.read_line(&mut line)?;
    let status: u16 = line.split_whitespace().nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    let mut headers = Vec::new();
    loop {
        line.clear();
        r.read_line(&mut line)?;
        let l = line.trim_end();
        if l.is_empty() {
            break;
        }
        if let Some((k, v)) = l.split_once(':') {
            headers.push((k.trim().to_string(), v.trim().to_string()));
        }
    }
    let chunked = headers.iter().any(|(k, v)| k.eq_ignore_ascii_case("transfer-encoding") && v.contains("chunked"));
    let mut body = Vec::new();
    if chunked {
        loop {
            line.clear();
            r.read_line(&mut line)?;
            let n = usize::from_str_radix(line.trim(), 16).unwrap_or(0);
            if n == 0 {
                break;
            }
            let mut chunk = vec![0; n + 2];
            r.read_exact(&mut chunk)?;
            body.extend_from_slice(&chunk[..n]);
        }
    } else {
        r.read_to_end(&mut body)?;
    }
    Ok(HttpResponse { status, headers, body })
}

/// The `#EXTINF`/segment entries and header tags of a media playlist.
#[derive(Debug, Default)]
pub struct MediaPlaylist {
    pub target_duration: u64,
    pub media_sequence: u64,
    pub discontinuity_sequence: u64,
    pub segments: Vec<PlaylistSegment>,
    pub ended: bool,
    pub version: u32,
    pub independent: bool,
    /// `EXT-X-MAP` (fMP4 init segment), the last one listed.
    pub map: Option<String>,
}

#[derive(Debug, Default, Clone)]
pub struct PlaylistSegment {
    pub uri: String,
    pub duration: f64,
    pub discontinuity: bool,
    pub program_date_time: Option<String>,
    /// The init segment (`EXT-X-MAP`) this segment needs (fMP4).
    pub map: Option<String>,
}

/// Where a player tool can read one segment of a media playlist at `playlist_path` (e.g. `/live/a/index.m3u8`)
/// on its own: its URL for MPEG-TS; for fMP4, a scratch file holding the init segment (`EXT-X-MAP`) and the segment.
pub fn segment_source(s: &Strom, playlist_path: &str, pl: &MediaPlaylist, uri: &str) -> String {
    let base = playlist_path.rsplit_once('/').map(|(b, _)| b.to_string()).unwrap_or_default();
    let map = pl.segments.iter().find(|seg| seg.uri == uri).and_then(|seg| seg.map.clone()).or(pl.map.clone());
    let Some(map) = map else {
        return s.http_url(&format!("{base}/{uri}"));
    };
    let init = s.get(&format!("{base}/{map}"));
    let seg = s.get(&format!("{base}/{uri}"));
    let mut data = init.body;
    data.extend_from_slice(&seg.body);
    let dir = scratch("segments");
    let file = dir.join(format!("{}-{}", base.replace('/', "_"), uri.replace(".m4s", ".mp4")));
    std::fs::write(&file, &data).expect("segment file");
    file.to_string_lossy().into_owned()
}

pub fn parse_playlist(text: &str) -> MediaPlaylist {
    let mut p = MediaPlaylist::default();
    let mut cur = PlaylistSegment::default();
    assert!(text.starts_with("#EXTM3U"), "not a playlist: {text}");
    for line in text.lines() {
        if let Some(v) = line.strip_prefix("#EXT-X-TARGETDURATION:") {
            p.target_duration = v.parse().expect("target duration");
        } else if let Some(v) = line.strip_prefix("#EXT-X-MEDIA-SEQUENCE:") {
            p.media_sequence = v.parse().expect("media sequence");
        } else if let Some(v) = line.strip_prefix("#EXT-X-DISCONTINUITY-SEQUENCE:") {
            p.discontinuity_sequence = v.parse().expect("discontinuity sequence");
        } else if let Some(v) = line.strip_prefix("#EXT-X-VERSION:") {
            p.version = v.parse().expect("version");
        } else if line == "#EXT-X-DISCONTINUITY" {
            cur.discontinuity = true;
        } else if line == "#EXT-X-ENDLIST" {
            p.ended = true;
        } else if let Some(v) = line.strip_prefix("#EXT-X-MAP:URI=") {
            p.map = Some(v.trim_matches('"').to_string());
            cur.map = p.map.clone();
        } else if line == "#EXT-X-INDEPENDENT-SEGMENTS" {
            p.independent = true;
        } else if let Some(v) = line.strip_prefix("#EXT-X-PROGRAM-DATE-TIME:") {
            cur.program_date_time = Some(v.to_string());
        } else if let Some(v) = line.strip_prefix("#EXTINF:") {
            cur.duration = v.trim_end_matches(',').split(',').next().and_then(|d| d.parse().ok()).expect("extinf");
        } else if !line.starts_with('#') && !line.is_empty() {
            cur.uri = line.to_string();
            cur.map = p.map.clone();
            p.segments.push(std::mem::take(&mut cur));
        }
    }
    p
}
