//! FLV files a test can doctor before publishing them: ffmpeg encodes a file (the same settings as [`publish`]),
//! the test reads its tags, changes them (a second stream spliced on with its own sequence headers, garbage NAL
//! units) and publishes them on one RTMP connection (rml_rtmp) in real time, as an encoder would send them.

use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use bytes::Bytes;

use super::rtmp::RtmpClient;
use super::{run_with_timeout, Source};

/// FLV tag types.
pub const AUDIO: u8 = 8;
pub const VIDEO: u8 = 9;

/// One FLV tag: type, timestamp (ms) and body.
#[derive(Debug, Clone)]
pub struct Tag {
    pub kind: u8,
    pub ts: u32,
    pub data: Vec<u8>,
}

impl Tag {
    /// An AVC sequence header.
    pub fn is_avc_header(&self) -> bool {
        self.kind == VIDEO && self.data.len() >= 2 && self.data[0] & 0x0f == 7 && self.data[1] == 0
    }

    /// An AVC picture (NAL units).
    pub fn is_avc_picture(&self) -> bool {
        self.kind == VIDEO && self.data.len() >= 5 && self.data[0] & 0x0f == 7 && self.data[1] == 1
    }

    /// A video keyframe.
    pub fn is_keyframe(&self) -> bool {
        self.kind == VIDEO && self.data.first().is_some_and(|b| b >> 4 == 1)
    }
}

/// Encodes `src` into an FLV file at `path` with ffmpeg (as fast as it can, not in real time).
pub fn encode(src: &Source, path: &Path) {
    let mut cmd = Command::new("ffmpeg");
    cmd.args(["-hide_banner", "-nostdin", "-loglevel", "error", "-y"]);
    super::source_args(&mut cmd, src);
    cmd.args(["-f", "flv"]).arg(path);
    let out = run_with_timeout(&mut cmd, Duration::from_secs(120));
    assert!(
        out.status.success(),
        "ffmpeg could not write {}: {}",
        path.display(),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The audio and video tags of an FLV file (script data and AVC end-of-sequence tags left out).
pub fn read_tags(path: &Path) -> Vec<Tag> {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    assert!(bytes.starts_with(b"FLV") && bytes.len() >= 13, "{}: not an FLV file", path.display());
    let header = u32::from_be_bytes([bytes[5], bytes[6], bytes[7], bytes[8]]) as usize;
    let mut at = header + 4;
    let mut tags = Vec::new();
    while at + 11 <= bytes.len() {
        let h = &bytes[at..at + 11];
        let size = u32::from_be_bytes([0, h[1], h[2], h[3]]) as usize;
        let ts = u32::from_be_bytes([h[7], h[4], h[5], h[6]]);
        let Some(data) = bytes.get(at + 11..at + 11 + size) else { break };
        let tag = Tag { kind: h[0] & 0x1f, ts, data: data.to_vec() };
        let eos = tag.kind == VIDEO && data.len() >= 2 && data[1] == 2;
        if matches!(tag.kind, AUDIO | VIDEO) && !eos {
            tags.push(tag);
        }
        at += 11 + size + 4;
    }
    assert!(tags.iter().any(Tag::is_avc_header), "{}: no AVC sequence header", path.display());
    tags
}

/// `first` then `second` as one stream: `second` (with its own sequence headers) starts one frame interval after
/// the last tag of `first`.
pub fn splice(first: &[Tag], second: &[Tag], frame_ms: u32) -> Vec<Tag> {
    let offset = first.iter().map(|t| t.ts).max().unwrap_or(0) + frame_ms;
    let mut out = first.to_vec();
    out.extend(second.iter().map(|t| Tag { ts: t.ts + offset, ..t.clone() }));
    out
}

/// xorshift64: reproducible garbage.
pub fn garbage(seed: &mut u64) -> u8 {
    *seed ^= *seed << 13;
    *seed ^= *seed >> 7;
    *seed ^= *seed << 17;
    *seed as u8
}

/// Overwrites every NAL unit of an AVC picture tag past its first `keep` bytes with garbage; the tag, its AVCC
/// length prefixes and the NAL headers stay valid.
pub fn garble(tag: &mut Tag, keep: usize, seed: &mut u64) {
    assert!(tag.is_avc_picture(), "not an AVC picture tag");
    let mut i = 5;
    while let Some(len) = tag.data.get(i..i + 4).map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]) as usize) {
        let end = (i + 4 + len).min(tag.data.len());
        for b in tag.data[i + 4..end].iter_mut().skip(keep) {
            *b = garbage(seed);
        }
        i = end;
    }
}

/// A publisher thread sending tags; [`TagPublisher::stop`] ends it early.
pub struct TagPublisher {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<Result<(), String>>>,
}

impl TagPublisher {
    /// Still sending (not done, not failed).
    pub fn is_running(&self) -> bool {
        self.thread.as_ref().is_some_and(|t| !t.is_finished())
    }

    /// Waits until every tag is sent (or `timeout`), then [`TagPublisher::stop`]s.
    pub fn stop_when_done(self, timeout: Duration) -> Result<(), String> {
        let deadline = Instant::now() + timeout;
        while self.is_running() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
        self.stop()
    }

    /// Stops sending, closes the connection and returns how the publish went (`Ok` if nothing failed).
    pub fn stop(mut self) -> Result<(), String> {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.take().map_or(Ok(()), |t| t.join().unwrap_or_else(|_| Err("publisher thread panicked".into())))
    }
}

impl Drop for TagPublisher {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// Publishes `tags` to `rtmp://addr/app/name` on one connection, paced on their timestamps (real time), until
/// the last tag or [`TagPublisher::stop`]; the connection closes when the thread ends.
pub fn publish_tags(addr: std::net::SocketAddr, app: &str, name: &str, tags: Vec<Tag>) -> TagPublisher {
    let (app, name) = (app.to_string(), name.to_string());
    let stop = Arc::new(AtomicBool::new(false));
    let flag = stop.clone();
    let thread = std::thread::spawn(move || {
        let mut c = RtmpClient::connect(addr, &app)?;
        c.publish(&name)?;
        let start = Instant::now();
        let base = tags.first().map_or(0, |t| t.ts);
        for t in tags {
            let due = start + Duration::from_millis(u64::from(t.ts - base));
            while let Some(wait) = due.checked_duration_since(Instant::now()) {
                if flag.load(Ordering::Relaxed) {
                    return Ok(());
                }
                std::thread::sleep(wait.min(Duration::from_millis(50)));
            }
            let data = Bytes::from(t.data);
            match t.kind {
                VIDEO => c.send_video(data, t.ts)?,
                _ => c.send_audio(data, t.ts)?,
            }
        }
        Ok(())
    });
    TagPublisher { stop, thread: Some(thread) }
}
