//! VOD jobs as users see them: a file made by ffmpeg is uploaded with curl (`curl -F file=@...`), strom splits it
//! at keyframes, encodes the chunks into every rung and serves an ABR HLS VOD; ffprobe checks every rung against
//! the source (frame counts, segment boundaries, seamless joins). Bad uploads get clear answers while a live
//! stream plays on; a job is cancelled and retried; a job whose node is SIGKILLed finishes when the node comes
//! back with its volume.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::*;

/// A node the helpers talk to: a local [`Strom`] or a namespaced cluster node.
trait Node {
    fn http_url(&self, path: &str) -> String;
    fn rtmp_url(&self, key: &str) -> String;
    fn get(&self, path: &str) -> HttpResponse;
    fn log_tail(&self, n: usize) -> String;
}

impl Node for Strom {
    fn http_url(&self, path: &str) -> String {
        Strom::http_url(self, path)
    }
    fn rtmp_url(&self, key: &str) -> String {
        Strom::rtmp_url(self, key)
    }
    fn get(&self, path: &str) -> HttpResponse {
        Strom::get(self, path)
    }
    fn log_tail(&self, n: usize) -> String {
        Strom::log_tail(self, n)
    }
}

impl Node for common::netns::NetNode {
    fn http_url(&self, path: &str) -> String {
        common::netns::NetNode::http_url(self, path)
    }
    fn rtmp_url(&self, key: &str) -> String {
        common::netns::NetNode::rtmp_url(self, key)
    }
    fn get(&self, path: &str) -> HttpResponse {
        common::netns::NetNode::get(self, path)
    }
    fn log_tail(&self, n: usize) -> String {
        common::netns::NetNode::log_tail(self, n)
    }
}

/// Fast rungs for 2 cores (the default ladder uses `veryfast`).
const VOD_RUNGS: &str = "[{height = 1080, bitrate_kbps = 3000, preset = \"ultrafast\", profile = \"high\"}, \
                         {height = 720, bitrate_kbps = 1500, preset = \"ultrafast\", profile = \"high\"}, \
                         {height = 360, bitrate_kbps = 600, preset = \"ultrafast\", profile = \"main\"}, \
                         {height = 144, bitrate_kbps = 150, preset = \"ultrafast\", profile = \"baseline\"}]";

fn vod_node(storage: &Path, extra: &[(&str, &str)]) -> Strom {
    let mut env = vec![
        ("STROM_STORAGE_PATH", storage.to_str().unwrap()),
        ("STROM_VOD_RUNGS", VOD_RUNGS),
        ("STROM_VOD_CHUNK_SECS", "10"),
    ];
    env.extend_from_slice(extra);
    Strom::with_env(&env)
}

/// A `seconds` long `width`x`height`@30 H.264 (B-frames, ffmpeg's default GOP) + AAC MP4 file, made once.
fn media_file(width: u32, height: u32, seconds: u32) -> PathBuf {
    media_file_as(width, height, seconds, "mp4")
}

/// [`media_file`] in the container of extension `ext` (`ts`: MPEG-TS, Annex B H.264 and ADTS AAC).
fn media_file_as(width: u32, height: u32, seconds: u32, ext: &str) -> PathBuf {
    let path = std::env::temp_dir().join(format!("strom-vod-src-{width}x{height}-{seconds}s.{ext}"));
    if path.exists() {
        return path;
    }
    // Tests made in parallel may make the same file: each writes its own, the rename is atomic.
    static MADE: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = MADE.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let tmp = path.with_extension(format!("{}-{n}.{ext}", std::process::id()));
    let out = run_with_timeout(
        Command::new("ffmpeg")
            .args(["-hide_banner", "-nostdin", "-loglevel", "error", "-y", "-f", "lavfi", "-i"])
            .arg(format!("testsrc2=size={width}x{height}:rate=30"))
            .args(["-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000", "-t", &seconds.to_string()])
            .args(["-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p", "-bf", "2", "-c:a", "aac"])
            .args(["-b:a", "96k"])
            .arg(&tmp),
        Duration::from_secs(300),
    );
    assert!(out.status.success(), "ffmpeg: {}", String::from_utf8_lossy(&out.stderr));
    std::fs::rename(&tmp, &path).expect("rename");
    path
}

/// The admin token the cluster tests' nodes get (a local node has none: its API answers loopback clients).
const ADMIN: &str = "vod-test-admin-token";

/// `curl` with `args` against `s` (with the admin token, which a node without one ignores); (status, body).
fn curl(s: &impl Node, args: &[&str], path: &str) -> (u16, String) {
    let bearer = format!("Authorization: Bearer {ADMIN}");
    let out = run_with_timeout(
        Command::new("curl")
            .args(["-sS", "-o", "-", "-w", "\n%{http_code}", "-H", &bearer])
            .args(args)
            .arg(s.http_url(path)),
        Duration::from_secs(120),
    );
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", "0"));
    (code.trim().parse().unwrap_or(0), body.to_string())
}

fn json(text: &str) -> serde_json::Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
}

/// `curl -F file=@PATH [-F rungs=..]`: the accepted job's id.
fn upload(s: &impl Node, file: &Path, rungs: Option<&str>) -> String {
    let form = format!("file=@{}", file.display());
    let mut args = vec!["-F", form.as_str()];
    let r = rungs.map(|r| format!("rungs={r}"));
    if let Some(r) = &r {
        args.extend(["-F", r.as_str()]);
    }
    args.extend(["-D", "/dev/stderr"]);
    let (status, body) = curl(s, &args, "/api/v1/vod");
    assert_eq!(status, 202, "{body}");
    let v = json(&body);
    assert_eq!(v["asset"]["state"], "processing", "{v}");
    assert_eq!(v["job_id"], v["asset_id"], "{v}");
    v["job_id"].as_str().expect("job id").to_string()
}

/// Polls the job until it is finished; asserts its progress never goes backwards; returns it.
fn wait_job(s: &impl Node, id: &str, timeout: Duration) -> serde_json::Value {
    let deadline = Instant::now() + timeout;
    let (mut frames, mut chunks) = (0u64, 0u64);
    loop {
        let r = s.get(&format!("/api/v1/jobs/{id}"));
        assert_eq!(r.status, 200, "{}", r.text());
        let j = json(&r.text());
        let (f, c) = (j["frames_done"].as_u64().unwrap_or(0), j["chunks_done"].as_u64().unwrap_or(0));
        assert!(f >= frames && c >= chunks, "progress went backwards: {frames}/{chunks} then {f}/{c}: {j}");
        (frames, chunks) = (f, c);
        if ["done", "failed", "cancelled"].contains(&j["state"].as_str().unwrap_or("")) {
            return j;
        }
        assert!(Instant::now() < deadline, "job {id} not finished after {timeout:?}: {j}\n{}", s.log_tail(30));
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Waits until job `id` has a chunk done (and not all of them): the moment the fault tests strike.
fn wait_first_chunk(s: &impl Node, id: &str) {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let j = json(&s.get(&format!("/api/v1/jobs/{id}")).text());
        if j["chunks_done"].as_u64().unwrap_or(0) >= 1 {
            assert!(j["chunks_done"].as_u64() < j["chunks_total"].as_u64(), "{j}");
            return;
        }
        assert!(Instant::now() < deadline, "no chunk done: {j}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn ffprobe(args: &[&str], url: &str) -> String {
    let out =
        run_with_timeout(Command::new("ffprobe").args(["-v", "error"]).args(args).arg(url), Duration::from_secs(120));
    assert!(out.status.success(), "ffprobe {url}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).to_string()
}

fn numbers(text: &str) -> Vec<f64> {
    text.split_whitespace().filter_map(|l| l.trim_end_matches(',').parse().ok()).collect()
}

/// The EXTINF durations of a media playlist.
fn extinfs(text: &str) -> Vec<String> {
    text.lines().filter_map(|l| l.strip_prefix("#EXTINF:")).map(String::from).collect()
}

/// Checks every rung of a done job against its source file: frame count, size, identical segment boundaries,
/// continuous video timestamps, audio joins within one AAC frame.
fn check_rungs(s: &impl Node, job: &serde_json::Value, source: &Path, want: &[(u64, u64)]) {
    let id = job["id"].as_str().unwrap();
    let src_frames = ffprobe(
        &["-count_frames", "-select_streams", "v:0", "-show_entries", "stream=nb_read_frames", "-of", "csv=p=0"],
        source.to_str().unwrap(),
    );
    let src_frames = numbers(&src_frames)[0] as u64;
    let src_audio = numbers(&ffprobe(
        &["-count_packets", "-select_streams", "a:0", "-show_entries", "stream=nb_read_packets", "-of", "csv=p=0"],
        source.to_str().unwrap(),
    ))[0] as u64;
    assert_eq!(job["frames_total"].as_u64(), Some(src_frames), "{job}");
    let master = s.get(&format!("/vod/{id}/index.m3u8")).text();
    let rungs: Vec<&str> = master.lines().filter(|l| l.ends_with("/index.m3u8")).collect();
    let sizes: Vec<(u64, u64)> = job["rungs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| (r["width"].as_u64().unwrap(), r["height"].as_u64().unwrap()))
        .collect();
    assert_eq!(sizes, want, "{job}");
    assert_eq!(rungs.len(), want.len(), "the master lists every rung:\n{master}");
    let chunks = job["chunks_total"].as_u64().unwrap();
    let mut boundaries = None;
    for (rung, (w, h)) in rungs.iter().zip(want) {
        let url = s.http_url(&format!("/vod/{id}/{rung}"));
        let playlist = s.get(&format!("/vod/{id}/{rung}")).text();
        assert!(playlist.contains("#EXT-X-PLAYLIST-TYPE:VOD") && playlist.contains("#EXT-X-ENDLIST"), "{playlist}");
        let durations = extinfs(&playlist);
        match &boundaries {
            None => boundaries = Some(durations),
            Some(b) => assert_eq!(b, &durations, "{rung}: segment boundaries differ from the first rung's"),
        }
        let frames = ffprobe(
            &["-count_frames", "-select_streams", "v:0", "-show_entries", "stream=nb_read_frames,width,height"],
            &url,
        );
        assert!(frames.contains(&format!("width={w}")) && frames.contains(&format!("height={h}")), "{rung}: {frames}");
        assert!(frames.contains(&format!("nb_read_frames={src_frames}")), "{rung}: every source picture: {frames}");
        // Video: one picture every 33 or 34 ms across every join (no gap, no duplicate).
        let pts =
            numbers(&ffprobe(&["-select_streams", "v:0", "-show_entries", "frame=pts_time", "-of", "csv=p=0"], &url));
        for w in pts.windows(2) {
            let d = w[1] - w[0];
            assert!((0.032..=0.035).contains(&d), "{rung}: video jumps {d:.4} s at {:.3}", w[0]);
        }
        // Audio: 1024 samples apart, a join within one AAC frame; every source frame but at most one per chunk.
        let apts =
            numbers(&ffprobe(&["-select_streams", "a:0", "-show_entries", "packet=pts", "-of", "csv=p=0"], &url));
        let odd: Vec<f64> = apts.windows(2).map(|w| w[1] - w[0]).filter(|d| *d != 1024.0).collect();
        assert!(odd.len() as u64 <= chunks, "{rung}: {} audio joins for {chunks} chunks: {odd:?}", odd.len());
        assert!(odd.iter().all(|d| (*d - 1024.0).abs() < 1024.0), "{rung}: audio join off by a frame: {odd:?}");
        assert!(src_audio.abs_diff(apts.len() as u64) <= chunks, "{rung}: {} of {src_audio} AAC frames", apts.len());
    }
}

/// The acceptance's main case on one node: a 60 s 720p30 H.264/AAC file and a 1080p one, uploaded with curl,
/// end `done`; every rung has every source picture, the same segment boundaries, seamless joins.
#[test]
fn uploads_become_abr_vods_whose_rungs_match_the_source() {
    let storage = scratch("vod-store");
    let s = vod_node(&storage, &[]);
    let src = media_file(1280, 720, 60);
    let started = Instant::now();
    let id = upload(&s, &src, None);
    let job = wait_job(&s, &id, Duration::from_secs(300));
    eprintln!("720p 60 s job: {:.1} s, {} chunks", started.elapsed().as_secs_f64(), job["chunks_total"]);
    assert_eq!(job["state"], "done", "{job}");
    assert!(job["chunks_total"].as_u64().unwrap() >= 4, "60 s in chunks of about 10 s: {job}");
    assert_eq!(job["frames_done"], job["frames_total"], "{job}");
    // The default ladder below the source's height: 720, 360 and 144 (1080 would upscale).
    check_rungs(&s, &job, &src, &[(1280, 720), (640, 360), (256, 144)]);
    let asset = json(&s.get(&format!("/api/v1/vod/{id}")).text());
    assert_eq!((asset["kind"].as_str(), asset["state"].as_str()), (Some("upload"), Some("done")), "{asset}");
    assert!((asset["duration"].as_f64().unwrap() - 60.0).abs() < 0.1, "{asset}");
    assert_eq!(asset["renditions"].as_array().map(Vec::len), Some(3), "{asset}");
    // Chunks ran here; the metrics say so.
    assert!(job["chunk_status"].as_array().unwrap().iter().all(|c| c["node"] == "test-node"), "{job}");
    assert_eq!(s.metric("strom_vod_jobs{state=\"done\"}"), 1.0);
    assert_eq!(s.metric("strom_vod_chunks_total{outcome=\"done\"}"), job["chunks_total"].as_f64().unwrap());
    assert_eq!(s.metric("strom_vod_frames_total"), 1800.0);

    // 1080p, with a ladder asked for by the request (a form field after the file, as curl users write it).
    let src = media_file(1920, 1080, 20);
    let id = upload(&s, &src, Some("1080,360"));
    let job = wait_job(&s, &id, Duration::from_secs(300));
    assert_eq!(job["state"], "done", "{job}");
    check_rungs(&s, &job, &src, &[(1920, 1080), (640, 360)]);
    let list = json(&s.get("/api/v1/jobs").text());
    assert_eq!(list["jobs"].as_array().map(Vec::len), Some(2), "{list}");
    assert_eq!(list["jobs"][0]["id"], id, "newest first: {list}");
}

/// Bad uploads each get a clear answer (a 4xx, or a failed job that says why); a live stream published meanwhile
/// plays on without a gap.
#[test]
fn bad_uploads_get_clear_answers_while_a_live_stream_plays_on() {
    let storage = scratch("vod-bad");
    let s = vod_node(&storage, &[("STROM_VOD_MAX_UPLOAD_BYTES", "3000000")]);
    let key = "live/during";
    let src = Source { seconds: 60.0, ..Source::default() };
    let _p = publish(&s.rtmp_url(key), &src);
    s.wait_live(key, Duration::from_secs(15));
    let dir = scratch("vod-bad-files");

    // Not a media file: accepted (it is bytes), then the job fails and says why.
    let text = dir.join("notes.mp4");
    std::fs::write(&text, "this is not a video\n".repeat(500)).unwrap();
    let id = upload(&s, &text, None);
    let job = wait_job(&s, &id, Duration::from_secs(30));
    assert_eq!(job["state"], "failed", "{job}");
    assert!(job["reason"].as_str().unwrap().contains("not a readable media file"), "{job}");
    let asset = json(&s.get(&format!("/api/v1/vod/{id}")).text());
    assert_eq!(asset["state"], "failed", "{asset}");
    assert_eq!(s.get(&format!("/vod/{id}/index.m3u8")).status, 404);

    // A truncated file (its first half: no index) and an unsupported codec: failed jobs with their reasons.
    let good = media_file(426, 240, 8);
    let bytes = std::fs::read(&good).unwrap();
    let cut = dir.join("cut.mp4");
    std::fs::write(&cut, &bytes[..bytes.len() / 2]).unwrap();
    let job = wait_job(&s, &upload(&s, &cut, None), Duration::from_secs(30));
    assert_eq!(job["state"], "failed", "{job}");
    let mpeg4 = dir.join("mpeg4.mp4");
    let out = run_with_timeout(
        Command::new("ffmpeg")
            .args(["-hide_banner", "-loglevel", "error", "-f", "lavfi", "-i", "testsrc2=size=320x240:rate=25"])
            .args(["-t", "2", "-c:v", "mpeg4"])
            .arg(&mpeg4),
        Duration::from_secs(60),
    );
    assert!(out.status.success());
    let job = wait_job(&s, &upload(&s, &mpeg4, None), Duration::from_secs(30));
    assert_eq!(job["state"], "failed", "{job}");
    assert!(job["reason"].as_str().unwrap().contains("unsupported video codec"), "{job}");

    // Zero bytes, a body over vod.max_upload_bytes, names with ../ or odd bytes, a bad ladder: 4xx at once.
    let empty = dir.join("empty.mp4");
    std::fs::write(&empty, b"").unwrap();
    let (status, body) = curl(&s, &["-F", &format!("file=@{}", empty.display())], "/api/v1/vod");
    assert_eq!(status, 400, "{body}");
    let big = dir.join("big.mp4");
    std::fs::write(&big, vec![0u8; 4_000_000]).unwrap();
    let (status, body) = curl(&s, &["-F", &format!("file=@{}", big.display())], "/api/v1/vod");
    assert_eq!(status, 413, "{body}");
    let (status, body) = curl(&s, &["-T", big.to_str().unwrap()], "/api/v1/vod/upload/big.mp4");
    assert_eq!(status, 413, "{body}");
    // Chunked, so no Content-Length gives it away: refused once past the limit.
    let (status, body) =
        curl(&s, &["-T", big.to_str().unwrap(), "-H", "Transfer-Encoding: chunked"], "/api/v1/vod/upload/big.mp4");
    assert_eq!(status, 413, "{body}");
    let (status, body) = curl(&s, &["-T", good.to_str().unwrap()], "/api/v1/vod/upload/..%2F..%2Fetc%2Fpasswd");
    assert_eq!(status, 400, "{body}");
    let (status, body) = curl(&s, &["-F", &format!("file=@{};filename=../../x.mp4", good.display())], "/api/v1/vod");
    assert_eq!(status, 400, "{body}");
    let (status, body) =
        curl(&s, &["-F", &format!("file=@{};filename=caf\u{e9}\u{1}.mp4", good.display())], "/api/v1/vod");
    assert_eq!(status, 400, "{body}");
    let (status, body) = curl(&s, &["-F", &format!("file=@{}", good.display()), "-F", "rungs=abc"], "/api/v1/vod");
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("rungs"), "{body}");
    let (status, _) = curl(&s, &["-X", "POST", "-H", "Content-Type: text/plain", "-d", "x"], "/api/v1/vod");
    assert_eq!(status, 415);
    // Nothing of the refused uploads is left on storage: only the three failed jobs' assets.
    let assets = json(&s.get("/api/v1/vod").text());
    assert_eq!(assets["assets"].as_array().map(Vec::len), Some(3), "{assets}");

    // A good upload by PUT still works, and the live stream played on throughout.
    let id = {
        let (status, body) = curl(&s, &["-T", good.to_str().unwrap()], "/api/v1/vod/upload/good.mp4?rungs=240");
        assert_eq!(status, 202, "{body}");
        json(&body)["job_id"].as_str().unwrap().to_string()
    };
    assert_eq!(wait_job(&s, &id, Duration::from_secs(60))["state"], "done");
    let (frames, stderr) = probe_video(&s.http_url("/live/during.flv"), 3.0);
    assert_playable("live during bad uploads", &frames, 60, 426, 240, &stderr);
    assert_eq!(s.metric("strom_stream_failures_total"), 0.0);
}

/// A running job is cancelled (its asset says so), then retried: it ends `done`, every picture in every rung.
#[test]
fn a_cancelled_job_is_retried_to_done() {
    let storage = scratch("vod-cancel");
    let s = vod_node(&storage, &[("STROM_VOD_PARALLEL_CHUNKS", "1")]);
    let src = media_file(1280, 720, 60);
    let id = upload(&s, &src, Some("720,144"));
    let deadline = Instant::now() + Duration::from_secs(60);
    while json(&s.get(&format!("/api/v1/jobs/{id}")).text())["state"] != "running" {
        assert!(Instant::now() < deadline, "the job never ran");
        std::thread::sleep(Duration::from_millis(100));
    }
    let (status, body) = curl(&s, &["-X", "POST"], &format!("/api/v1/jobs/{id}/cancel"));
    assert_eq!(status, 200, "{body}");
    assert_eq!(json(&body)["state"], "cancelled");
    let asset = json(&s.get(&format!("/api/v1/vod/{id}")).text());
    assert_eq!(asset["state"], "failed", "{asset}");
    let (status, _) = curl(&s, &["-X", "POST"], &format!("/api/v1/jobs/{id}/cancel"));
    assert_eq!(status, 409, "a cancelled job is not running");
    let (status, body) = curl(&s, &["-X", "POST"], &format!("/api/v1/jobs/{id}/retry"));
    assert_eq!(status, 202, "{body}");
    let job = wait_job(&s, &id, Duration::from_secs(300));
    assert_eq!(job["state"], "done", "{job}");
    assert_eq!(job["attempts"], 2, "{job}");
    check_rungs(&s, &job, &src, &[(1280, 720), (256, 144)]);
    let (status, _) = curl(&s, &["-X", "POST"], &format!("/api/v1/jobs/{id}/retry"));
    assert_eq!(status, 409, "a done job is not retried");
    let (status, _) = curl(&s, &["-X", "POST"], "/api/v1/jobs/nope/cancel");
    assert_eq!(status, 404);
}

/// With local storage, a job whose node is SIGKILLed mid-job goes on when the node comes back with its volume,
/// from the chunks it had done, and ends `done` with every picture.
#[test]
fn a_job_resumes_when_its_node_returns_after_a_kill() {
    let storage = scratch("vod-resume");
    let extra = [("STROM_VOD_PARALLEL_CHUNKS", "1")];
    let s = vod_node(&storage, &extra);
    let src = media_file(1280, 720, 60);
    let id = upload(&s, &src, Some("720,144"));
    wait_first_chunk(&s, &id);
    let _ = Command::new("kill").args(["-9", &s.pid().to_string()]).status();
    std::thread::sleep(Duration::from_millis(300));
    let s = vod_node(&storage, &extra);
    let job = wait_job(&s, &id, Duration::from_secs(300));
    assert_eq!(job["state"], "done", "{job}");
    assert_eq!(job["attempts"], 2, "resumed once: {job}");
    check_rungs(&s, &job, &src, &[(1280, 720), (256, 144)]);
}

/// Three namespaced VOD nodes with the admin token and one chunk slot each, on `s3` (its `STROM_STORAGE_URL` and
/// `AWS_*` variables) or else each on a local volume (`vod-<tag>-<i>`); returns once they all see each other.
fn vod_cluster(
    net: &common::netns::Net,
    tag: &str,
    s3: Option<&[(String, String)]>,
) -> (Vec<common::netns::NetNode>, Vec<PathBuf>) {
    let dirs: Vec<PathBuf> = (0..3).map(|i| scratch(&format!("vod-{tag}-{i}"))).collect();
    let nodes = (0..3)
        .map(|i| {
            let mut env: Vec<(&str, &str)> = match s3 {
                Some(vars) => vars.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect(),
                None => vec![("STROM_STORAGE_PATH", dirs[i].to_str().unwrap())],
            };
            env.extend([
                ("STROM_VOD_RUNGS", VOD_RUNGS),
                ("STROM_VOD_CHUNK_SECS", "10"),
                ("STROM_VOD_PARALLEL_CHUNKS", "1"),
                ("STROM_AUTH_ADMIN_TOKEN", ADMIN),
                // The tests read the API without the token.
                ("STROM_AUTH_READ_API", "public"),
                // Recordings (of the streams a test publishes) on the node's storage.
                ("STROM_RECORD_ENABLED", "true"),
                ("STROM_STREAM_RECONNECT_GRACE_SECS", "1"),
            ]);
            net.spawn_cluster_with(i, &format!("vod-{tag}"), &[], &env)
        })
        .collect::<Vec<_>>();
    met(&nodes);
    (nodes, dirs)
}

/// Waits until every node sees the two others up, then a second for their loads to travel.
fn met(nodes: &[common::netns::NetNode]) {
    let t = Instant::now();
    while !nodes.iter().all(|n| n.get("/api/v1/cluster").text().matches("\"state\":\"up\"").count() >= 2) {
        assert!(t.elapsed() < Duration::from_secs(20), "the nodes never met");
        std::thread::sleep(Duration::from_millis(100));
    }
    std::thread::sleep(Duration::from_secs(1));
}

/// Three namespaced nodes with a local volume each, as the StatefulSet runs them: an upload to one node is
/// encoded on all three (each worker reads only its chunks' ranges of the source from the job's node and writes
/// its segments back there); a recording held by one node is transcoded through another; an MPEG-TS file and a
/// 1080p file uploaded to the other nodes are spread too; then a worker SIGKILLed mid-job loses its chunks to the
/// others, and the job still ends `done` with every picture in every rung.
#[test]
fn in_a_cluster_chunks_run_on_every_node_and_survive_a_worker_kill() {
    let net = common::netns::Net::new(3);
    let (mut nodes, dirs) = vod_cluster(&net, "cluster", None);
    let src = media_file(1280, 720, 60);
    let size = std::fs::metadata(&src).unwrap().len();

    // The API's mutating calls need the admin token.
    let no_token = run_with_timeout(
        Command::new("curl")
            .args(["-sS", "-o", "/dev/null", "-w", "%{http_code}", "-F"])
            .arg(format!("file=@{}", src.display()))
            .arg(nodes[0].http_url("/api/v1/vod")),
        Duration::from_secs(60),
    );
    assert_eq!(String::from_utf8_lossy(&no_token.stdout), "401", "an upload without the admin token");
    let wrong = run_with_timeout(
        Command::new("curl")
            .args(["-sS", "-o", "/dev/null", "-w", "%{http_code}", "-X", "POST", "-H", "Authorization: Bearer nope"])
            .arg(nodes[0].http_url("/api/v1/jobs/x/cancel")),
        Duration::from_secs(60),
    );
    assert_eq!(String::from_utf8_lossy(&wrong.stdout), "401", "a wrong admin token");
    assert_eq!(nodes[0].metric("strom_connections_rejected_total{reason=\"unauthorized\"}"), 2.0);

    // One upload to strom-0: its chunks run on all three nodes.
    let id = upload(&nodes[0], &src, Some("720,360,144"));
    let job = wait_job(&nodes[0], &id, Duration::from_secs(300));
    assert_eq!(job["state"], "done", "{job}");
    let ran: std::collections::BTreeSet<&str> =
        job["chunk_status"].as_array().unwrap().iter().filter_map(|c| c["node"].as_str()).collect();
    assert_eq!(ran.len(), 3, "chunks ran on all 3 nodes: {ran:?}");
    check_rungs(&nodes[0], &job, &src, &[(1280, 720), (640, 360), (256, 144)]);
    // Another node serves the same master (through strom-0's volume).
    assert_eq!(
        nodes[1].get(&format!("/vod/{id}/index.m3u8")).text(),
        nodes[0].get(&format!("/vod/{id}/index.m3u8")).text()
    );
    // Workers read their chunks' ranges, never a whole copy, and kept nothing on their own volumes.
    for n in &nodes[1..] {
        let reads = n.metric("strom_cluster_requests_total{request=\"job_read\"}");
        assert!(
            reads >= 1.0 && reads * 1048576.0 < 0.8 * size as f64,
            "{}: {reads} MiB read of {size} bytes",
            n.name()
        );
        assert!(n.metric("strom_cluster_requests_total{request=\"job_put\"}") >= 1.0);
    }
    assert!(dirs[1..].iter().all(|d| !d.join("vod").exists()), "nothing stored on the workers");
    // Behind a load balancer any node answers for the job: the others ask the node holding it.
    let via_2 = json(&nodes[2].get(&format!("/api/v1/jobs/{id}")).text());
    assert_eq!((via_2["state"].as_str(), via_2["revision"].as_u64()), (Some("done"), job["revision"].as_u64()));
    let list = json(&nodes[1].get("/api/v1/jobs").text());
    assert!(list["jobs"].as_array().unwrap().iter().any(|j| j["id"] == id), "{list}");
    let (status, _) = curl(&nodes[2], &["-X", "POST"], &format!("/api/v1/jobs/{id}/retry"));
    assert_eq!(status, 409, "a done job is not retried, whichever node is asked");

    // A recording on strom-0's volume, transcoded through strom-1: the job runs where the recording is. strom-2 is
    // frozen meanwhile: strom-1 asks every node which holds the recording and takes strom-0's answer; the node
    // that does not answer holds neither the request nor the job (declared down, it gets no chunk).
    let clip = Source { width: 640, height: 360, seconds: 12.0, bitrate_k: 800, ..Source::default() };
    let (rec, frames) = record(&nodes[0], "live/clip", &clip);
    nodes[2].stop();
    let (job, accepted_after) = transcode_recording(&nodes[1], &nodes[0], &rec, frames, "live/clip");
    nodes[2].cont();
    assert!(accepted_after < Duration::from_secs(30), "accepted after {accepted_after:?} with strom-2 frozen");
    eprintln!("recording transcoded through strom-1 with strom-2 frozen: accepted after {accepted_after:?}");
    assert_eq!(job["node"], "strom-0", "{job}");
    assert!(!dirs[1].join("vod").exists(), "nothing stored on strom-1");

    // An MPEG-TS file (Annex B video, ADTS audio, a timeline starting at 1.4 s) uploaded to strom-1: its chunks,
    // read over the cluster by the other nodes, hold every picture.
    let ts = media_file_as(640, 360, 30, "ts");
    let id = upload(&nodes[1], &ts, Some("360,144"));
    let job = wait_job(&nodes[1], &id, Duration::from_secs(300));
    assert_eq!(job["state"], "done", "{job}");
    assert_eq!(job["info"]["container"], "mpegts", "{job}");
    let ran: std::collections::BTreeSet<&str> =
        job["chunk_status"].as_array().unwrap().iter().filter_map(|c| c["node"].as_str()).collect();
    assert!(ran.len() >= 2, "the TS chunks ran on several nodes: {ran:?}");
    check_rungs(&nodes[1], &job, &ts, &[(640, 360), (256, 144)]);
    let rung = nodes[1].http_url(&format!("/vod/{id}/360p/index.m3u8"));
    let start =
        numbers(&ffprobe(&["-select_streams", "v:0", "-show_entries", "stream=start_time", "-of", "csv=p=0"], &rung));
    assert!(start[0] < 0.1, "the timeline starts at 0, not at the source's 1.4 s: {start:?}");

    // The 1080p source on the cluster too, uploaded to strom-2.
    let hd = media_file(1920, 1080, 20);
    let id = upload(&nodes[2], &hd, Some("1080,360"));
    let job = wait_job(&nodes[2], &id, Duration::from_secs(300));
    assert_eq!(job["state"], "done", "{job}");
    let ran: std::collections::BTreeSet<&str> =
        job["chunk_status"].as_array().unwrap().iter().filter_map(|c| c["node"].as_str()).collect();
    assert!(ran.len() >= 2, "the 1080p chunks ran on several nodes: {ran:?}");
    check_rungs(&nodes[0], &job, &hd, &[(1920, 1080), (640, 360)]);

    // A worker SIGKILLed while it encodes a chunk: the chunk is sent elsewhere, the job ends done.
    let mut nodes = nodes;
    let id = upload(&nodes[0], &src, Some("720,144"));
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let j = json(&nodes[0].get(&format!("/api/v1/jobs/{id}")).text());
        let on_2 = j["chunk_status"]
            .as_array()
            .is_some_and(|c| c.iter().any(|c| c["state"] == "running" && c["node"] == "strom-2"));
        if on_2 {
            break;
        }
        assert!(Instant::now() < deadline, "strom-2 never got a chunk: {j}");
        std::thread::sleep(Duration::from_millis(50));
    }
    std::thread::sleep(Duration::from_millis(500));
    nodes[2].kill();
    let killed_at = Instant::now();
    let job = wait_job(&nodes[0], &id, Duration::from_secs(300));
    assert_eq!(job["state"], "done", "{job}");
    eprintln!("done {:.1} s after the kill", killed_at.elapsed().as_secs_f64());
    let chunks = job["chunk_status"].as_array().unwrap();
    assert!(chunks.iter().all(|c| c["node"] != "strom-2"), "every chunk ended on a live node: {job}");
    assert!(chunks.iter().any(|c| c["attempts"].as_u64() >= Some(2)), "a chunk was sent again: {job}");
    check_rungs(&nodes[0], &job, &src, &[(1280, 720), (256, 144)]);
    assert!(nodes[0].metric("strom_vod_chunks_total{outcome=\"failed\"}") >= 1.0);
}

/// With S3 storage, the job's own node SIGKILLed mid-job: once its lease runs out, another node takes the job
/// over (it is gone from the cluster) and finishes it from the chunks done; the asset plays from any node.
#[test]
fn with_s3_another_node_takes_over_the_job_of_a_killed_node() {
    use common::s3::S3;
    if S3::skip("this test") {
        return;
    }
    let net = common::netns::Net::new(3);
    let s3 = S3::start_on(&scratch("vod-s3"), &net.host_ip().to_string(), common::s3::free_port());
    let (mut nodes, _) = vod_cluster(&net, "s3", Some(&s3.env()));
    let src = media_file(1280, 720, 60);
    let id = upload(&nodes[0], &src, Some("720,144"));
    wait_first_chunk(&nodes[0], &id);
    nodes[0].kill();
    let killed = Instant::now();
    // Any node reads the job from the bucket.
    let job = wait_job(&nodes[1], &id, Duration::from_secs(300));
    eprintln!("taken over and done {:.1} s after the kill", killed.elapsed().as_secs_f64());
    assert_eq!(job["state"], "done", "{job}");
    assert_ne!(job["node"], "strom-0", "{job}");
    assert_eq!(job["attempts"], 2, "taken over once: {job}");
    check_rungs(&nodes[2], &job, &src, &[(1280, 720), (256, 144)]);
    let asset = json(&nodes[1].get(&format!("/api/v1/vod/{id}")).text());
    assert_eq!(asset["state"], "done", "{asset}");
}

/// Publishes `src` to `key` on `s` (recording on) as fast as ffmpeg encodes it and waits for the finished
/// recording: (its asset id, its picture count).
fn record(s: &impl Node, key: &str, src: &Source) -> (String, u64) {
    // Not `publish`: without -re ffmpeg sends the clip as fast as it encodes it.
    let mut cmd = Command::new("ffmpeg");
    cmd.args(["-hide_banner", "-nostdin", "-loglevel", "warning"]);
    source_args(&mut cmd, src);
    let out = run_with_timeout(cmd.args(["-f", "flv"]).arg(s.rtmp_url(key)), Duration::from_secs(120));
    assert!(out.status.success(), "ffmpeg: {}", String::from_utf8_lossy(&out.stderr));
    let t = Instant::now();
    let rec = loop {
        let v = json(&s.get("/api/v1/vod").text());
        let done = v["assets"].as_array().and_then(|a| a.iter().find(|a| a["stream"] == key && a["state"] == "done"));
        if let Some(a) = done {
            break a["id"].as_str().unwrap().to_string();
        }
        assert!(t.elapsed() < Duration::from_secs(30), "no finished recording of {key}: {v}");
        std::thread::sleep(Duration::from_millis(200));
    };
    let frames = numbers(&ffprobe(
        &["-count_frames", "-select_streams", "v:0", "-show_entries", "stream=nb_read_frames", "-of", "csv=p=0"],
        &s.http_url(&format!("/vod/{rec}.mp4")),
    ))[0] as u64;
    (rec, frames)
}

/// Asks `via` to transcode recording `rec` (of `key`, `frames` pictures) into 360p and 144p; waits for the job on
/// `holder` (the node whose storage holds the recording) and checks that both rungs hold every picture, aligned.
/// Also returns how long `via` took to accept the job.
fn transcode_recording(
    via: &impl Node,
    holder: &impl Node,
    rec: &str,
    frames: u64,
    key: &str,
) -> (serde_json::Value, Duration) {
    let body = format!("{{\"source\": \"recording:{rec}\", \"rungs\": [360, 144]}}");
    let asked = Instant::now();
    let (status, body) = curl(via, &["-X", "POST", "-H", "Content-Type: application/json", "-d", &body], "/api/v1/vod");
    let accepted_after = asked.elapsed();
    assert_eq!(status, 202, "{body}");
    let accepted = json(&body);
    assert_eq!(accepted["asset"]["stream"], key, "{accepted}");
    let id = accepted["job_id"].as_str().unwrap().to_string();
    let job = wait_job(holder, &id, Duration::from_secs(300));
    assert_eq!(job["state"], "done", "{job}");
    assert_eq!(job["frames_total"].as_u64(), Some(frames), "{job}");
    let master = via.get(&format!("/vod/{id}/index.m3u8")).text();
    let rungs: Vec<&str> = master.lines().filter(|l| l.ends_with("/index.m3u8")).collect();
    assert_eq!(rungs.len(), 2, "{master}");
    let mut boundaries = None;
    for rung in rungs {
        let url = via.http_url(&format!("/vod/{id}/{rung}"));
        let got = ffprobe(&["-count_frames", "-select_streams", "v:0", "-show_entries", "stream=nb_read_frames"], &url);
        assert!(got.contains(&format!("nb_read_frames={frames}")), "{rung}: {got}");
        let durations = extinfs(&via.get(&format!("/vod/{id}/{rung}")).text());
        match &boundaries {
            None => boundaries = Some(durations),
            Some(b) => assert_eq!(b, &durations, "{rung}: segment boundaries differ"),
        }
    }
    (job, accepted_after)
}

/// A recording transcoded (`POST /api/v1/vod` with `{"source": "recording:<id>"}`): the new asset's rungs hold
/// every picture of the recording, with aligned segments; a recording that does not exist is a 404, a body
/// without a source a 400.
#[test]
fn a_recording_is_transcoded_into_a_ladder() {
    let storage = scratch("vod-from-rec");
    let s = vod_node(&storage, &[("STROM_RECORD_ENABLED", "true"), ("STROM_STREAM_RECONNECT_GRACE_SECS", "1")]);
    let src = Source { width: 1280, height: 720, seconds: 30.0, bitrate_k: 1500, ..Source::default() };
    let (rec, rec_frames) = record(&s, "live/rec", &src);
    assert!(rec_frames >= 600, "{rec_frames}");
    transcode_recording(&s, &s, &rec, rec_frames, "live/rec");

    let post =
        |body: &str| curl(&s, &["-X", "POST", "-H", "Content-Type: application/json", "-d", body], "/api/v1/vod");
    let (status, body) = post("{\"source\": \"recording:live-nope-20260101T000000000Z\"}");
    assert_eq!(status, 404, "{body}");
    let (status, body) = post("{\"url\": \"http://example.invalid/x.mp4\"}");
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("recording:"), "{body}");
    let (status, body) = post("{not json");
    assert_eq!(status, 400, "{body}");
}

/// The cluster's other faults, with local volumes: a worker shut down (SIGTERM) while it encodes hands its chunk
/// back at once (not a failure: the chunk's attempt is not counted), and the job's own node SIGKILLed mid-job
/// finishes the job when it restarts with its volume, using the other nodes again. A job cancelled through a node
/// that does not run it is cancelled on its node.
#[test]
fn in_a_cluster_a_draining_worker_hands_chunks_back_and_a_killed_job_node_resumes() {
    let net = common::netns::Net::new(3);
    let (mut nodes, _dirs) = vod_cluster(&net, "drain", None);
    let src = media_file(1280, 720, 60);
    let running_on = |n: &common::netns::NetNode, id: &str, worker: &str| {
        let j = json(&n.get(&format!("/api/v1/jobs/{id}")).text());
        j["chunk_status"].as_array().is_some_and(|c| c.iter().any(|c| c["state"] == "running" && c["node"] == worker))
    };

    // A worker drains while it encodes a chunk.
    let id = upload(&nodes[0], &src, Some("720,144"));
    let deadline = Instant::now() + Duration::from_secs(120);
    while !running_on(&nodes[0], &id, "strom-1") {
        assert!(Instant::now() < deadline, "strom-1 never got a chunk");
        std::thread::sleep(Duration::from_millis(50));
    }
    std::thread::sleep(Duration::from_millis(500));
    let failed_before = nodes[0].metric("strom_vod_chunks_total{outcome=\"failed\"}");
    assert!(nodes[1].term(Duration::from_secs(20)).is_some(), "strom-1 did not stop");
    let job = wait_job(&nodes[0], &id, Duration::from_secs(300));
    assert_eq!(job["state"], "done", "{job}");
    let chunks = job["chunk_status"].as_array().unwrap();
    assert!(
        chunks.iter().all(|c| c["node"] != "strom-1" && c["attempts"] == 1),
        "handed back, not failed: {job}\n{}\n{}",
        nodes[0].log_tail(40),
        nodes[1].log_tail(40)
    );
    assert_eq!(nodes[0].metric("strom_vod_chunks_total{outcome=\"failed\"}"), failed_before);
    check_rungs(&nodes[0], &job, &src, &[(1280, 720), (256, 144)]);

    // Cancelled through strom-2 (strom-0 runs the job), then retried through strom-2: done on strom-0.
    nodes[1].restart();
    met(&nodes);
    let id = upload(&nodes[0], &src, Some("720,144"));
    let deadline = Instant::now() + Duration::from_secs(60);
    while json(&nodes[2].get(&format!("/api/v1/jobs/{id}")).text())["state"] != "running" {
        assert!(Instant::now() < deadline, "the job never ran");
        std::thread::sleep(Duration::from_millis(100));
    }
    let (status, body) = curl(&nodes[2], &["-X", "POST"], &format!("/api/v1/jobs/{id}/cancel"));
    assert_eq!(status, 200, "{body}");
    assert_eq!(json(&body)["state"], "cancelled", "{body}");
    let (status, body) = curl(&nodes[2], &["-X", "POST"], &format!("/api/v1/jobs/{id}/retry"));
    assert_eq!(status, 202, "{body}");
    assert_eq!(json(&body)["node"], "strom-0", "retried where its manifest is: {body}");

    // The job's node SIGKILLed once a chunk is done, then restarted with its volume: the job resumes.
    wait_first_chunk(&nodes[0], &id);
    nodes[0].kill();
    std::thread::sleep(Duration::from_millis(500));
    nodes[0].restart();
    let job = wait_job(&nodes[0], &id, Duration::from_secs(300));
    assert_eq!(job["state"], "done", "{job}");
    assert_eq!(job["attempts"], 3, "retried once, resumed once: {job}");
    check_rungs(&nodes[0], &job, &src, &[(1280, 720), (256, 144)]);
}
