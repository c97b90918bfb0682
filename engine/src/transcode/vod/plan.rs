//! A VOD job as pure data: how the source is cut into chunks and segments, and the job manifest that
//! `vod/<id>/job.json` holds (no I/O, unit-tested).
//!
//! - **Chunks** start at the source's keyframes: a chunk ends at the first keyframe at least
//!   `vod.chunk_secs` after its start (a last chunk shorter than half of that joins the one before); a short
//!   source's chunks are shortened ([`fit_chunk_ms`]) so they come in whole rounds of the cluster's slots. Every
//!   picture presenting in `[start_ms, end_ms)` belongs to exactly one chunk, so the chunks' frame counts add up
//!   to the source's.
//! - **Segments** cut each chunk into equal parts near `vod.segment_secs`, each starting on a source picture;
//!   every rung gets an IDR on exactly those pictures, so segment `N` has the same boundaries in every rung.
//!   Segments are numbered across the whole job (a chunk knows its first number), so chunks can be encoded in any
//!   order, on any node, and a retried chunk writes the same objects again.

use serde::{Deserialize, Serialize};

/// What probing the source found.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SourceInfo {
    /// FFmpeg's name of the container (`mov,mp4,m4a,3gp,3g2,mj2`, `flv`, `matroska,webm`).
    pub container: String,
    /// Seconds, from the first picture to the end of the last one.
    pub duration: f64,
    /// Picture width.
    pub width: u32,
    /// Picture height.
    pub height: u32,
    /// Frames per second.
    pub fps: f64,
    /// Video codec (FFmpeg's name).
    pub video_codec: String,
    /// Audio codec (FFmpeg's name), if the source has audio.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub audio_codec: Option<String>,
    /// Decodable pictures (from the first keyframe on).
    pub frames: u64,
    /// Added to every source timestamp (ms) so that the timeline starts at 0 (an AAC priming frame has a
    /// negative time; MPEG-TS usually starts later).
    pub offset_ms: i64,
}

/// One chunk of the source.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChunkPlan {
    /// Its place in the job, from 0.
    pub index: u32,
    /// Presentation time (ms, shifted by `offset_ms`) of the keyframe it starts at.
    pub start_ms: i64,
    /// Where the next chunk starts, or the end of the last picture.
    pub end_ms: i64,
    /// Pictures in `[start_ms, end_ms)`.
    pub frames: u64,
    /// The job-wide number of its first segment.
    pub first_segment: u64,
    /// Its segments' start times (ms; the first is `start_ms`).
    pub segments: Vec<i64>,
}

/// The chunk length for a source of `duration_ms` when `slots` chunks can run at once: `chunk_ms`, shortened so
/// the chunks fill whole rounds of the slots (a short file's last round would leave slots idle: 3 chunks on 2
/// slots take two rounds, 4 shorter ones take two half-rounds), or, when that would make chunks shorter than
/// `min_ms`, so there are as many chunks of at least `min_ms` as fit. Never longer than `chunk_ms`.
pub fn fit_chunk_ms(duration_ms: i64, chunk_ms: i64, slots: u32, min_ms: i64) -> i64 {
    let (chunk_ms, min_ms, slots) = (chunk_ms.max(1), min_ms.clamp(1, chunk_ms.max(1)), i64::from(slots.max(1)));
    if duration_ms <= 0 {
        return chunk_ms;
    }
    // About what `plan_chunks` makes: a tail under half a chunk joins the chunk before.
    let n = ((duration_ms + chunk_ms / 2) / chunk_ms).max(1);
    let whole_rounds = (n + slots - 1) / slots * slots;
    let most = (duration_ms / min_ms).max(1);
    let n = if whole_rounds <= most { whole_rounds } else { n.max(most.min(slots)) };
    (duration_ms / n).min(chunk_ms)
}

/// Cuts a source into chunks and segments. `pictures`: every video picture's presentation time (ms, shifted)
/// and whether it is a keyframe, in presentation order; `end_ms`: the end of the last picture. Pictures before
/// the first keyframe cannot be decoded and are left out.
pub fn plan_chunks(pictures: &[(i64, bool)], end_ms: i64, chunk_ms: i64, segment_ms: i64) -> Vec<ChunkPlan> {
    let Some(first) = pictures.iter().position(|p| p.1) else { return Vec::new() };
    let pictures = &pictures[first..];
    let chunk_ms = chunk_ms.max(1);
    let mut starts: Vec<i64> = Vec::new();
    for &(pts, key) in pictures {
        if key && starts.last().is_none_or(|&s| pts - s >= chunk_ms) {
            starts.push(pts);
        }
    }
    // A short tail joins the chunk before it.
    if starts.len() > 1 && starts.last().is_some_and(|&s| end_ms - s < chunk_ms / 2) {
        starts.pop();
    }
    let mut out = Vec::with_capacity(starts.len());
    let mut first_segment = 0;
    for (i, &start) in starts.iter().enumerate() {
        let end = starts.get(i + 1).copied().unwrap_or(end_ms).max(start + 1);
        let mine: Vec<i64> = pictures.iter().map(|p| p.0).filter(|&p| p >= start && p < end).collect();
        let n = (((end - start) as f64 / segment_ms.max(1) as f64).round() as i64).max(1);
        let mut segments: Vec<i64> = Vec::new();
        for k in 0..n {
            let target = start + (end - start) * k / n;
            if let Some(&p) = mine.iter().find(|&&p| p >= target) {
                if segments.last() != Some(&p) {
                    segments.push(p);
                }
            }
        }
        if segments.is_empty() {
            segments.push(start);
        }
        out.push(ChunkPlan {
            index: i as u32,
            start_ms: start,
            end_ms: end,
            frames: mine.len() as u64,
            first_segment,
            segments: segments.clone(),
        });
        first_segment += segments.len() as u64;
    }
    out
}

/// A job's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum JobState {
    /// Accepted, not started.
    Pending,
    /// Reading the source.
    Probing,
    /// Encoding chunks.
    Running,
    /// Every rung written: the asset plays.
    Done,
    /// A chunk ran out of attempts, or the source is unusable (see `reason`).
    Failed,
    /// Cancelled through the API.
    Cancelled,
}

impl JobState {
    /// Done, failed or cancelled: nothing runs.
    pub fn finished(self) -> bool {
        matches!(self, JobState::Done | JobState::Failed | JobState::Cancelled)
    }
}

/// A chunk's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ChunkState {
    /// Waiting for a slot (or for its retry's backoff).
    Pending,
    /// Being encoded.
    Running,
    /// Every rung's segments written.
    Done,
    /// Out of attempts.
    Failed,
}

/// What a chunk wrote for one rung.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RungOutput {
    /// Its segments' durations, µs, in order (numbered from the chunk's `first_segment`).
    pub durations_us: Vec<u64>,
    /// Bytes written (segments, and the init segment for chunk 0).
    pub bytes: u64,
    /// The highest bitrate of one segment, bits per second.
    pub peak_bps: u64,
    /// A hash of the init segment the chunk's packager made: every chunk of a rung must make the same one.
    pub init_hash: u64,
    /// RFC 6381 codecs of the rung (`avc1.64001f,mp4a.40.2`).
    pub codecs: String,
}

/// What a finished chunk reports.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChunkOutput {
    /// Pictures encoded (per rung).
    pub frames: u64,
    /// Seconds the encode took.
    pub seconds: f64,
    /// Per rung, in the job's rung order.
    pub rungs: Vec<RungOutput>,
}

/// A chunk's progress in the job manifest.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChunkStatus {
    /// Its state.
    pub state: ChunkState,
    /// Attempts started.
    pub attempts: u32,
    /// The node of the last attempt.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
    /// The last attempt's error.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// What it wrote, once done.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output: Option<ChunkOutput>,
}

impl ChunkStatus {
    /// A chunk not started.
    pub fn new() -> ChunkStatus {
        ChunkStatus { state: ChunkState::Pending, attempts: 0, node: None, error: None, output: None }
    }
}

impl Default for ChunkStatus {
    fn default() -> Self {
        ChunkStatus::new()
    }
}

/// One rung of a job's ladder.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobRung {
    /// Folder name under the asset: `720p`.
    pub name: String,
    /// Picture width (even).
    pub width: u32,
    /// Picture height (even).
    pub height: u32,
    /// Target bitrate, kbit/s.
    pub bitrate_kbps: u32,
    /// VBV maxrate, kbit/s.
    pub maxrate_kbps: u32,
    /// VBV buffer, kbit.
    pub bufsize_kbits: u32,
    /// x264 preset.
    pub preset: String,
    /// H.264 profile ceiling.
    pub profile: String,
}

/// The uploaded file a job reads.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobSource {
    /// Its object on storage (`vod/<id>/original/<name>`).
    pub object: String,
    /// The file name it was uploaded as.
    pub name: String,
    /// Its size.
    pub bytes: u64,
}

/// The init segment every segment of a job's rung refers to (`init1.mp4`): written by chunk 0, the same in
/// every chunk.
pub const INIT: u32 = 1;

/// Version of the `job.json` layout.
pub const MANIFEST_VERSION: u32 = 1;

/// A VOD job: what `GET /api/v1/jobs/{id}` returns and `vod/<id>/job.json` holds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Job {
    /// Layout version ([`MANIFEST_VERSION`]).
    pub version: u32,
    /// Bumped at every write: a newer manifest has a higher revision.
    pub revision: u64,
    /// The job's id (the asset's id: one job makes one asset).
    pub id: String,
    /// The asset it makes.
    pub asset: String,
    /// The node running it.
    pub node: String,
    /// Until when (Unix ms) `node` holds the job: it renews this while it runs the job. With shared storage (S3),
    /// another node takes over an unfinished job whose lease ran out while `node` is gone from the cluster.
    #[serde(default)]
    pub lease_until_ms: u64,
    /// Its state.
    pub state: JobState,
    /// Why it failed or was cancelled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Times the job was started (1, then one more per retry or resume).
    pub attempts: u32,
    /// When it was accepted (RFC 3339).
    pub created: String,
    /// When it last changed (RFC 3339).
    pub updated: String,
    /// The file it reads.
    pub source: JobSource,
    /// What probing found.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub info: Option<SourceInfo>,
    /// The heights asked for (the ladder before the source's height is known).
    pub ladder: Vec<u32>,
    /// The rungs made (after probing).
    #[serde(default)]
    pub rungs: Vec<JobRung>,
    /// Chunks done.
    pub chunks_done: u32,
    /// Chunks in all.
    pub chunks_total: u32,
    /// Source pictures encoded into every rung.
    pub frames_done: u64,
    /// Source pictures in all.
    pub frames_total: u64,
    /// Source pictures per second, over the running time so far.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fps: Option<f64>,
    /// Seconds left at that speed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub eta_secs: Option<f64>,
    /// The chunks.
    #[serde(default)]
    pub chunks: Vec<ChunkPlan>,
    /// Their progress, by index.
    #[serde(default)]
    pub chunk_status: Vec<ChunkStatus>,
}

impl Job {
    /// The job without its chunk tables (what the job list shows).
    pub fn summary(&self) -> Job {
        Job { chunks: Vec::new(), chunk_status: Vec::new(), ..self.clone() }
    }

    /// Recounts `chunks_done` and the frames of done chunks.
    pub fn recount(&mut self) {
        self.chunks_total = self.chunks.len() as u32;
        self.chunks_done = self.chunk_status.iter().filter(|c| c.state == ChunkState::Done).count() as u32;
        self.frames_total = self.chunks.iter().map(|c| c.frames).sum();
    }

    /// Every segment of rung `r` in order, as (job-wide number, duration µs), from the done chunks.
    pub fn segments_of(&self, r: usize) -> Vec<(u64, u64)> {
        let mut out = Vec::new();
        for (plan, status) in self.chunks.iter().zip(&self.chunk_status) {
            if let Some(o) = status.output.as_ref().and_then(|o| o.rungs.get(r)) {
                out.extend(o.durations_us.iter().enumerate().map(|(k, d)| (plan.first_segment + k as u64, *d)));
            }
        }
        out
    }
}

/// FNV-1a, 64 bits: a stable hash for comparing init segments across chunks and nodes.
pub fn fnv1a(data: &[u8]) -> u64 {
    data.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, b| (h ^ u64::from(*b)).wrapping_mul(0x100_0000_01b3))
}

/// Whether `name` can be an uploaded file's name: 1..=200 bytes of letters, digits, `.`, `-`, `_` and spaces,
/// not starting with a dot (no path, no hidden file, nothing a shell or a URL would need to escape oddly).
pub fn valid_upload_name(name: &str) -> bool {
    (1..=200).contains(&name.len())
        && !name.starts_with('.')
        && !name.starts_with(' ')
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_' | b' '))
}

/// An asset id for an upload of `name` at `now_ms` (Unix ms), with `salt` (e.g. random bits) to tell apart
/// two uploads of one name in the same millisecond: `<stem>-<yyyymmddThhmmssmmmZ>-<salt hex>`.
pub fn upload_id(name: &str, started: std::time::SystemTime, salt: u32) -> String {
    let stem = name.rsplit_once('.').map_or(name, |(s, _)| s);
    let mut clean: String = stem
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() || c == '-' || c == '_' { c } else { '_' })
        .take(48)
        .collect();
    if clean.is_empty() {
        clean.push_str("upload");
    }
    let t = crate::formats::playlist::rfc3339_millis(started);
    let compact: String = t.chars().filter(|c| c.is_ascii_alphanumeric()).collect();
    format!("{clean}-{compact}-{:04x}", salt & 0xffff)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 30 fps in ms (33/34 steps), keyframes every `gop` pictures.
    fn pictures(n: usize, gop: usize) -> Vec<(i64, bool)> {
        (0..n).map(|i| ((i as i64 * 1000 + 15) / 30, i % gop == 0)).collect()
    }

    #[test]
    fn chunks_start_at_keyframes_and_cover_every_picture_once() {
        let p = pictures(1800, 60); // 60 s, a keyframe every 2 s
        let end = 60_000;
        let chunks = plan_chunks(&p, end, 10_000, 4_000);
        assert_eq!(chunks.len(), 6);
        assert_eq!(chunks.iter().map(|c| c.frames).sum::<u64>(), 1800);
        for w in chunks.windows(2) {
            assert_eq!(w[0].end_ms, w[1].start_ms, "no gap, no overlap");
            assert_eq!(w[1].first_segment, w[0].first_segment + w[0].segments.len() as u64);
        }
        for c in &chunks {
            assert!(p.iter().any(|&(t, k)| k && t == c.start_ms), "chunk {} starts on a keyframe", c.index);
            assert_eq!(c.segments[0], c.start_ms);
            assert!(c.segments.iter().all(|s| p.iter().any(|&(t, _)| t == *s)), "segments start on pictures");
        }
        // 10 s chunks in segments near 4 s: 3 of 3.33 s.
        assert_eq!(chunks[0].segments.len(), 3);
        assert_eq!(chunks[0].segments, vec![0, 3333, 6667]);
        assert_eq!(chunks.last().unwrap().end_ms, end);
    }

    #[test]
    fn short_sources_get_chunks_in_whole_rounds_of_the_slots() {
        let fit = |secs: i64, slots| fit_chunk_ms(secs * 1000, 10_000, slots, 4_000);
        assert_eq!(fit(60, 2), 10_000, "6 chunks on 2 slots: unchanged");
        assert_eq!(fit(60, 3), 10_000);
        assert_eq!(fit(30, 2), 7_500, "3 chunks on 2 slots become 4");
        assert_eq!(fit(10, 2), 5_000, "1 chunk on 2 slots becomes 2");
        assert_eq!(fit(10, 6), 5_000, "chunks of at least 4 s: 2 of 6 slots busy, not 1");
        assert_eq!(fit(3, 2), 3_000, "too short to split");
        assert_eq!(fit(70, 2), 8_750, "7 chunks become 8");
        assert_eq!(fit(3600, 2), 10_000);
        assert_eq!(fit(3610, 2), 3_610_000 / 362, "361 chunks become 362");
        assert_eq!(fit(14, 1), 10_000, "one slot: as configured");
        assert_eq!(fit_chunk_ms(0, 10_000, 2, 4_000), 10_000);
        // Planned with keyframes every 2 s: the 30 s source in 4 chunks, the 10 s one in 2.
        for (secs, want) in [(30i64, 4), (10, 2), (60, 6)] {
            let p = pictures(secs as usize * 30, 60);
            assert_eq!(plan_chunks(&p, secs * 1000, fit(secs, 2), 4_000).len(), want, "{secs} s");
        }
    }

    #[test]
    fn a_short_tail_joins_the_chunk_before_and_odd_sources_still_plan() {
        let p = pictures(330, 30); // 11 s, keyframe every second
        let chunks = plan_chunks(&p, 11_000, 10_000, 4_000);
        assert_eq!(chunks.len(), 1, "a 1 s tail is not a chunk of its own");
        assert_eq!(chunks[0].frames, 330);
        // One keyframe only: one chunk, however long.
        let one_key: Vec<(i64, bool)> = (0..900).map(|i| (i * 33, i == 0)).collect();
        let c = plan_chunks(&one_key, 900 * 33, 10_000, 4_000);
        assert_eq!((c.len(), c[0].frames), (1, 900));
        assert_eq!(c[0].segments.len(), 7);
        // Pictures before the first keyframe are not decodable: left out.
        let late: Vec<(i64, bool)> = (0..100).map(|i| (i * 40, i == 10)).collect();
        let c = plan_chunks(&late, 4000, 10_000, 4_000);
        assert_eq!((c[0].start_ms, c[0].frames), (400, 90));
        assert!(plan_chunks(&[(0, false), (40, false)], 80, 10_000, 4_000).is_empty(), "no keyframe: nothing");
        assert!(plan_chunks(&[], 0, 10_000, 4_000).is_empty());
    }

    #[test]
    fn names_and_ids_are_safe() {
        for ok in ["bunny.mp4", "My Video_1-final.mkv", "a"] {
            assert!(valid_upload_name(ok), "{ok}");
        }
        for bad in ["", "../etc/passwd", "a/b.mp4", ".hidden", "x\u{0}.mp4", "caf\u{e9}.mp4", "a\\b", " lead"] {
            assert!(!valid_upload_name(bad), "{bad:?}");
        }
        let t = std::time::UNIX_EPOCH + std::time::Duration::from_millis(1_764_919_424_123);
        let id = upload_id("My Video.final.mp4", t, 0xabcd);
        assert_eq!(id, "My_Video_final-20251205T072344123Z-abcd");
        assert!(crate::storage::asset::valid_id(&id));
        assert_eq!(fnv1a(b""), 0xcbf2_9ce4_8422_2325);
        assert_ne!(fnv1a(b"a"), fnv1a(b"b"));
    }

    #[test]
    fn a_job_lists_its_segments_across_chunks() {
        let chunks = plan_chunks(&pictures(600, 60), 20_000, 10_000, 4_000);
        let out = |n: usize| ChunkOutput {
            frames: 300,
            seconds: 1.0,
            rungs: vec![RungOutput {
                durations_us: vec![3_333_000; n],
                bytes: 10,
                peak_bps: 1,
                init_hash: 7,
                codecs: "avc1.64001f".into(),
            }],
        };
        let mut status = vec![ChunkStatus::new(), ChunkStatus::new()];
        status[1].state = ChunkState::Done;
        status[1].output = Some(out(3));
        let mut job = Job {
            version: MANIFEST_VERSION,
            revision: 0,
            id: "x".into(),
            asset: "x".into(),
            node: "n".into(),
            lease_until_ms: 0,
            state: JobState::Running,
            reason: None,
            attempts: 1,
            created: String::new(),
            updated: String::new(),
            source: JobSource { object: "o".into(), name: "n.mp4".into(), bytes: 1 },
            info: None,
            ladder: vec![720],
            rungs: Vec::new(),
            chunks_done: 0,
            chunks_total: 0,
            frames_done: 0,
            frames_total: 0,
            fps: None,
            eta_secs: None,
            chunks,
            chunk_status: status,
        };
        job.recount();
        assert_eq!((job.chunks_done, job.chunks_total, job.frames_total), (1, 2, 600));
        assert_eq!(job.segments_of(0).iter().map(|s| s.0).collect::<Vec<_>>(), vec![3, 4, 5]);
        let back: Job = serde_json::from_slice(&serde_json::to_vec(&job).unwrap()).unwrap();
        assert_eq!(back, job);
        assert!(job.summary().chunks.is_empty());
    }
}
