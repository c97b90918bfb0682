//! VOD jobs: an uploaded file becomes an ABR HLS VOD asset.
//!
//! - [`plan`] (pure): chunks at the source's keyframes, equal segments inside each chunk, the job manifest
//!   (`vod/<id>/job.json`), upload names and ids.
//! - `source` (FFmpeg): probing the source (every packet's time and keyframe flag, no decoding) and reading
//!   one chunk's packets from its keyframe, by URL: a local file, or a presigned S3 URL read with range requests.
//! - `chunk` (FFmpeg, blocking): one chunk decoded once and encoded into every rung (the live ladder's
//!   pipeline, IDRs forced on the planned segment starts), packaged as fMP4 segments and written as they
//!   complete.
//! - [`job`]: the job actor: probe → plan → chunks on worker threads (retries with backoff) → join (a VOD
//!   playlist per rung, the asset's renditions) → `done`.
//! - [`Jobs`]: this node's jobs: uploads, the jobs API, resuming unfinished jobs at start.
//!
//! Storage layout of an upload (beside a recording's, see [`crate::storage::asset`]):
//!
//! | object | what |
//! |---|---|
//! | `vod/<id>/asset.json` | the asset (`kind: "upload"`, `state: "processing"` until its job is done) |
//! | `vod/<id>/job.json` | the job manifest (versioned, a revision bumped at each write) |
//! | `vod/<id>/original.<ext>` | the uploaded file |
//! | `vod/<id>/<rung>/init1.mp4`, `seg<N>-<µs>-i1.m4s`, `index.m3u8` | each rung's HLS VOD |
//!
//! The asset plays at `/vod/{id}/index.m3u8` (a master over the rungs) once the job is done, from every node,
//! like a recording.

#[cfg(feature = "transcode")]
pub mod chunk;
pub mod job;
pub mod plan;
pub mod remote;
#[cfg(feature = "transcode")]
pub mod source;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use futures_util::StreamExt;
use prometheus::{IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts};
use ractor::{Actor, ActorRef};
use serde::Serialize;
use tracing::{info, warn};

use crate::cluster::wire::JobRequest;
use crate::config::{Config, VodConfig};
use crate::formats::playlist::rfc3339_millis;
use crate::metrics::Metrics;
use crate::storage::asset::{asset_dir, asset_json, valid_id, Asset, AssetState};
use crate::storage::recorder::Recordings;
use job::{JobActor, JobArgs, JobMsg};
use plan::{ChunkOutput, ChunkPlan, ChunkState, Job, JobRung, JobSource, JobState, MANIFEST_VERSION};

/// `vod/<id>/job.json`.
pub fn job_json(id: &str) -> String {
    format!("{}/job.json", asset_dir(id))
}

/// What a chunk worker needs: all of it travels to another node as JSON ([`crate::cluster::wire::JobRequest`]).
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub struct ChunkTask {
    /// The job.
    pub job: String,
    /// The chunk's index.
    pub index: u32,
    /// The attempt (from 1): a worker's answer for an older attempt is ignored.
    pub attempt: u32,
    /// The job's node: with local volumes the worker reads the source from it and writes the output to it.
    pub owner: String,
    /// The asset its segments go to.
    pub asset: String,
    /// The source's storage key.
    pub object: String,
    /// The chunk.
    pub plan: ChunkPlan,
    /// The probe's timeline offset.
    pub offset_ms: i64,
    /// The source's frame rate.
    pub fps: f64,
    /// The rungs.
    pub rungs: Vec<JobRung>,
}

/// An upload on storage, not yet a job ([`Jobs::store`]).
pub struct Stored {
    id: String,
    name: String,
    object: String,
    bytes: u64,
    at: SystemTime,
    /// The stream it was recorded from (a recording transcoded), else empty.
    stream: String,
}

/// Why an upload was refused.
#[derive(Debug, thiserror::Error)]
pub enum UploadError {
    /// The body passed `vod.max_upload_bytes` (413).
    #[error("the upload is larger than vod.max_upload_bytes ({0} bytes)")]
    TooLarge(u64),
    /// A file name that is not plain (400).
    #[error("bad file name {0:?}: use 1..200 letters, digits, '.', '-', '_' or spaces, not starting with a dot")]
    BadName(String),
    /// Nothing was sent (400).
    #[error("the upload is empty")]
    Empty,
    /// A ladder that cannot be made (400).
    #[error("{0}")]
    BadLadder(String),
    /// The request itself is malformed (400).
    #[error("{0}")]
    BadRequest(String),
    /// No storage (503).
    #[error("no storage: {0}")]
    NoStorage(String),
    /// No such source (404).
    #[error("{0}")]
    NotFound(String),
    /// The source is not ready (409).
    #[error("{0}")]
    Conflict(String),
    /// Storage failed, or the body broke off (502 / 400).
    #[error("{0}")]
    Storage(String),
}

impl UploadError {
    /// The HTTP status it is answered with.
    pub fn status(&self) -> u16 {
        match self {
            UploadError::TooLarge(_) => 413,
            UploadError::BadName(_) | UploadError::Empty | UploadError::BadLadder(_) | UploadError::BadRequest(_) => {
                400
            }
            UploadError::NoStorage(_) => 503,
            UploadError::NotFound(_) => 404,
            UploadError::Conflict(_) => 409,
            UploadError::Storage(_) => 502,
        }
    }
}

/// Heights of the ladder a request asks for: `rungs=1080,720,...`, or `profile=<name>` from `vod.profiles`, or
/// the default `vod.rungs`.
pub fn ladder_of(rungs: Option<&str>, profile: Option<&str>, vod: &VodConfig) -> Result<Vec<u32>, UploadError> {
    let mut heights = match (rungs.map(str::trim).filter(|r| !r.is_empty()), profile) {
        (Some(list), _) => {
            let mut out = Vec::new();
            for part in list.split(',') {
                let h: u32 = part.trim().parse().map_err(|_| {
                    UploadError::BadLadder(format!("rungs: {part:?} is not a height (e.g. rungs=1080,720,480)"))
                })?;
                if !(64..=4320).contains(&h) || h % 2 != 0 {
                    return Err(UploadError::BadLadder(format!("rungs: {h} must be even and 64..4320")));
                }
                out.push(h);
            }
            out
        }
        (None, Some(p)) => vod
            .profiles
            .get(p)
            .ok_or_else(|| UploadError::BadLadder(format!("no profile {p:?} in vod.profiles")))?
            .iter()
            .map(|r| r.height)
            .collect(),
        (None, None) => vod.rungs.iter().map(|r| r.height).collect(),
    };
    heights.sort_unstable_by(|a, b| b.cmp(a));
    heights.dedup();
    if heights.is_empty() || heights.len() > 8 {
        return Err(UploadError::BadLadder("a ladder has 1..8 rungs".into()));
    }
    Ok(heights)
}

/// The VOD metrics.
pub struct VodMetrics {
    jobs: IntGaugeVec,
    chunks: IntCounterVec,
    queued: IntGauge,
    /// Source pictures encoded into every rung by this node's chunks (its rate is the VOD encode fps).
    pub frames: IntCounter,
    /// Per job this node ran since it started: its state and queued chunks.
    known: Mutex<HashMap<String, (JobState, usize)>>,
}

const STATES: [(JobState, &str); 6] = [
    (JobState::Pending, "pending"),
    (JobState::Probing, "probing"),
    (JobState::Running, "running"),
    (JobState::Done, "done"),
    (JobState::Failed, "failed"),
    (JobState::Cancelled, "cancelled"),
];

impl VodMetrics {
    fn new(metrics: &Metrics) -> VodMetrics {
        let m = VodMetrics {
            jobs: metrics.register(
                IntGaugeVec::new(
                    Opts::new("strom_vod_jobs", "VOD jobs this node ran since it started, by their state."),
                    &["state"],
                )
                .expect("valid metric"),
            ),
            chunks: metrics.register(
                IntCounterVec::new(
                    Opts::new("strom_vod_chunks_total", "VOD chunk attempts by outcome: done, failed."),
                    &["outcome"],
                )
                .expect("valid metric"),
            ),
            queued: metrics.register(
                IntGauge::new("strom_vod_chunks_queued", "VOD chunks waiting to be encoded by this node's jobs.")
                    .expect("valid metric"),
            ),
            frames: metrics.register(
                IntCounter::new(
                    "strom_vod_frames_total",
                    "Source pictures encoded into every rung by VOD chunks on this node (rate(): the VOD encode fps).",
                )
                .expect("valid metric"),
            ),
            known: Mutex::new(HashMap::new()),
        };
        for (_, s) in STATES {
            m.jobs.with_label_values(&[s]);
        }
        for o in ["done", "failed"] {
            m.chunks.with_label_values(&[o]);
        }
        m
    }

    fn update(&self, id: &str, f: impl FnOnce(&mut (JobState, usize))) {
        let mut known = self.known.lock().unwrap_or_else(|e| e.into_inner());
        if known.len() > 10_000 {
            known.retain(|_, (s, _)| !s.finished());
        }
        f(known.entry(id.to_string()).or_insert((JobState::Pending, 0)));
        for (state, label) in STATES {
            self.jobs.with_label_values(&[label]).set(known.values().filter(|(s, _)| *s == state).count() as i64);
        }
        self.queued.set(known.values().map(|(_, q)| *q as i64).sum());
    }

    fn set_job(&self, id: &str, state: JobState) {
        self.update(id, |e| e.0 = state);
    }

    pub(crate) fn set_queued(&self, id: &str, queued: usize) {
        self.update(id, |e| e.1 = queued);
    }

    pub(crate) fn moved(&self, _before: JobState, _after: JobState) {}

    pub(crate) fn chunk(&self, outcome: &str) {
        self.chunks.with_label_values(&[outcome]).inc();
    }
}

struct Running {
    status: Arc<Mutex<Job>>,
    actor: ActorRef<JobMsg>,
}

/// A chunk this node encodes (for one of its jobs or another node's).
struct Worked {
    attempt: u32,
    cancel: Arc<AtomicBool>,
    progress: Arc<AtomicU64>,
}

/// What this node's jobs share.
pub struct JobsInner {
    pub(crate) config: Arc<Config>,
    pub(crate) recordings: Recordings,
    pub(crate) metrics: VodMetrics,
    /// The node's chunk slots (`vod.parallel_chunks`), shared by its jobs and other nodes' chunks.
    slots: Arc<tokio::sync::Semaphore>,
    running: Mutex<HashMap<String, Running>>,
    salt: AtomicU64,
    /// The cluster, when clustering is on: chunks go to other nodes.
    pub(crate) cluster: std::sync::OnceLock<crate::cluster::ClusterHandle>,
    /// The chunks this node encodes, by (job, chunk index).
    worked: Mutex<HashMap<(String, u32), Worked>>,
    /// Chunks encoding or waiting for a slot here.
    busy: std::sync::atomic::AtomicUsize,
    /// The circuit breaker: per node, chunk failures in a row and until when it gets none.
    pub(crate) breakers: remote::Breakers,
    /// The node is shutting down: it takes no chunk, and its running ones are handed back.
    pub(crate) draining: AtomicBool,
}

/// This node's VOD jobs (cheap to clone).
#[derive(Clone)]
pub struct Jobs {
    inner: Arc<JobsInner>,
}

impl Jobs {
    /// The node's jobs; nothing runs until an upload or [`Jobs::resume`].
    pub fn new(config: Arc<Config>, recordings: Recordings, metrics: &Metrics) -> Jobs {
        let slots = Arc::new(tokio::sync::Semaphore::new(config.vod.parallel_chunks()));
        Jobs {
            inner: Arc::new(JobsInner {
                metrics: VodMetrics::new(metrics),
                config,
                recordings,
                slots,
                running: Mutex::new(HashMap::new()),
                salt: AtomicU64::new(0),
                cluster: std::sync::OnceLock::new(),
                worked: Mutex::new(HashMap::new()),
                busy: Default::default(),
                breakers: remote::Breakers::new(metrics),
                draining: AtomicBool::new(false),
            }),
        }
    }

    /// Goes on with the jobs this node left unfinished (its pod restarted with its volume).
    pub async fn resume(&self) {
        let storage_config = &self.inner.config.storage;
        if storage_config.url.is_none() && !storage_config.path.exists() {
            return; // nothing was ever stored here (and no directory is made for it)
        }
        let Ok(storage) = self.inner.recordings.store() else { return };
        let Ok(ids) = storage.folders(crate::storage::asset::ROOT).await else { return };
        for id in ids {
            let Some(mut job) = self.read(&id).await else { continue };
            if job.state.finished() || job.node != self.inner.config.node_name {
                continue;
            }
            job.attempts += 1;
            for c in &mut job.chunk_status {
                if c.state != ChunkState::Done {
                    c.state = ChunkState::Pending;
                }
            }
            info!(job = %id, chunks_done = job.chunk_status.iter().filter(|c| c.state == ChunkState::Done).count(),
                  "resuming a job this node left unfinished");
            self.spawn(job).await;
        }
    }

    async fn spawn(&self, job: Job) {
        let id = job.id.clone();
        self.inner.metrics.set_job(&id, job.state);
        let status = Arc::new(Mutex::new(job.clone()));
        let args = JobArgs { jobs: self.inner.clone(), job, status: status.clone() };
        match Actor::spawn(None, JobActor, args).await {
            Ok((actor, _)) => {
                self.inner.running.lock().unwrap_or_else(|e| e.into_inner()).insert(id, Running { status, actor });
            }
            Err(e) => warn!(job = %id, error = %e, "cannot start the job actor"),
        }
    }

    /// Stores an upload: `body` streamed to `vod/<id>/original.<ext>` (at most `vod.max_upload_bytes`). Then
    /// [`Jobs::accept`] makes its asset and job (the ladder may be known only after the body, as with a form
    /// field after the file).
    pub async fn store<S, E>(&self, name: &str, body: S) -> Result<Stored, UploadError>
    where
        S: futures_util::Stream<Item = Result<Bytes, E>> + Send,
        E: std::fmt::Display,
    {
        if !plan::valid_upload_name(name) {
            return Err(UploadError::BadName(name.chars().take(100).collect()));
        }
        let storage = self.inner.recordings.store().map_err(|e| UploadError::NoStorage(e.to_string()))?;
        let now = SystemTime::now();
        let salt = {
            use std::hash::{BuildHasher, Hasher};
            let mut h = std::collections::hash_map::RandomState::new().build_hasher();
            h.write_u64(self.inner.salt.fetch_add(1, Ordering::Relaxed));
            h.finish() as u32
        };
        let id = plan::upload_id(name, now, salt);
        let ext: String = name
            .rsplit_once('.')
            .map(|(_, e)| e.to_ascii_lowercase())
            .filter(|e| (1..=8).contains(&e.len()) && e.bytes().all(|b| b.is_ascii_alphanumeric()))
            .unwrap_or_else(|| "bin".into());
        let object = format!("{}/original.{ext}", asset_dir(&id));
        let max = self.inner.config.vod.max_upload_bytes;
        let mut body = Box::pin(body);
        let mut seen = 0u64;
        let capped = body.as_mut().map(|item| {
            let b = item.map_err(|e| e.to_string())?;
            seen += b.len() as u64;
            if seen > max {
                return Err(format!("more than {max} bytes"));
            }
            Ok(b)
        });
        let bytes = match storage.put_stream(&object, capped).await {
            Ok(n) => n,
            Err(_) if seen > max => {
                linger(body.as_mut()).await;
                return Err(UploadError::TooLarge(max));
            }
            Err(e) => return Err(UploadError::Storage(e.to_string())),
        };
        if bytes == 0 {
            let _ = storage.delete_prefix(&asset_dir(&id)).await;
            return Err(UploadError::Empty);
        }
        Ok(Stored { id, name: name.into(), object, bytes, at: now, stream: String::new() })
    }

    /// Makes a stored upload's asset (`processing`) and job, and starts the job.
    pub async fn accept(&self, stored: Stored, ladder: Vec<u32>) -> Result<(Asset, Job), UploadError> {
        let storage = self.inner.recordings.store().map_err(|e| UploadError::NoStorage(e.to_string()))?;
        let Stored { id, name, object, bytes, at, stream } = stored;
        let node = self.inner.config.node_name.clone();
        let mut asset = Asset::upload(&id, &name, &node, at);
        asset.bytes = bytes;
        asset.stream = stream;
        storage
            .put(&asset_json(&id), Bytes::from(asset.to_json()))
            .await
            .map_err(|e| UploadError::Storage(e.to_string()))?;
        let job = Job {
            version: MANIFEST_VERSION,
            revision: 0,
            id: id.clone(),
            asset: id.clone(),
            node,
            lease_until_ms: 0,
            state: JobState::Pending,
            reason: None,
            attempts: 1,
            created: rfc3339_millis(at),
            updated: rfc3339_millis(at),
            source: JobSource { object, name: name.clone(), bytes },
            info: None,
            ladder,
            rungs: Vec::new(),
            chunks_done: 0,
            chunks_total: 0,
            frames_done: 0,
            frames_total: 0,
            fps: None,
            eta_secs: None,
            chunks: Vec::new(),
            chunk_status: Vec::new(),
        };
        storage
            .put(&job_json(&id), Bytes::from(serde_json::to_vec_pretty(&job).unwrap_or_default()))
            .await
            .map_err(|e| UploadError::Storage(e.to_string()))?;
        info!(job = %id, name, bytes, "upload stored; job accepted");
        self.spawn(job.clone()).await;
        Ok((asset, job))
    }

    /// Transcodes recording `id` (`POST /api/v1/vod` with `{"source": "recording:<id>"}`): its source rendition,
    /// remuxed into one fragmented MP4 (the `GET /vod/{id}.mp4` export, a copy without re-encoding) as the new
    /// asset's original, then a job like an upload's. The recording must be finished. A recording on another
    /// node's local volume is transcoded by that node (asked over the cluster: the job runs where the recording
    /// is), so any pod takes the request.
    pub async fn from_recording(&self, id: &str, ladder: Vec<u32>) -> Result<(Asset, Job), UploadError> {
        match self.transcode_recording_here(id, ladder.clone()).await {
            Err(UploadError::NotFound(why)) => match remote::from_recording_elsewhere(&self.inner, id, ladder).await {
                Some(answer) => answer,
                None => Err(UploadError::NotFound(why)),
            },
            answer => answer,
        }
    }

    /// [`Jobs::from_recording`] of a recording on this node's storage (404 when it is not there).
    pub(crate) async fn transcode_recording_here(
        &self,
        id: &str,
        ladder: Vec<u32>,
    ) -> Result<(Asset, Job), UploadError> {
        let not_found = || UploadError::NotFound(format!("no recording {:?}", id.chars().take(64).collect::<String>()));
        if !valid_id(id) {
            return Err(not_found());
        }
        let recordings = &self.inner.recordings;
        let rec = recordings.get(id).await.map_err(|e| UploadError::Storage(e.to_string()))?.ok_or_else(not_found)?;
        if rec.kind != "recording" {
            return Err(UploadError::BadRequest(format!("{id} is an upload, not a recording: its job made its rungs")));
        }
        if rec.state == AssetState::Recording {
            return Err(UploadError::Conflict(format!("{id} is still recording: stop it first")));
        }
        let export = match recordings.mp4_parts(id).await.map_err(|e| UploadError::Storage(e.to_string()))? {
            Some(Ok(e)) => e,
            Some(Err(why)) => {
                return Err(UploadError::BadRequest(format!("recording {id} cannot be transcoded: {why}")))
            }
            None => return Err(not_found()),
        };
        let storage = recordings.store().map_err(|e| UploadError::NoStorage(e.to_string()))?;
        let dir = asset_dir(id);
        let duration = export.duration;
        let body = futures_util::stream::iter(export.parts.into_iter().enumerate()).then(move |(i, (name, _))| {
            let (storage, key) = (storage.clone(), format!("{dir}/{name}"));
            async move {
                let data = storage.get(&key).await.map_err(|e| e.to_string())?.ok_or(format!("{key} is gone"))?;
                Ok::<Bytes, String>(if i == 0 {
                    crate::formats::fmp4::with_duration(&data, duration).unwrap_or(data)
                } else {
                    data
                })
            }
        });
        let mut stored = self.store(&format!("{id}.mp4"), Box::pin(body)).await?;
        stored.stream = rec.stream;
        self.accept(stored, ladder).await
    }

    /// Deletes a stored upload that will get no job (the request turned out bad after its body).
    pub async fn discard(&self, stored: Stored) {
        if let Ok(storage) = self.inner.recordings.store() {
            let _ = storage.delete_prefix(&asset_dir(&stored.id)).await;
        }
    }

    async fn read(&self, id: &str) -> Option<Job> {
        if !valid_id(id) {
            return None;
        }
        let storage = self.inner.recordings.store().ok()?;
        let bytes = storage.get(&job_json(id)).await.ok()??;
        serde_json::from_slice(&bytes).ok()
    }

    fn live(&self, id: &str) -> Option<(Job, ActorRef<JobMsg>)> {
        let running = self.inner.running.lock().unwrap_or_else(|e| e.into_inner());
        running.get(id).map(|r| (r.status.lock().unwrap_or_else(|e| e.into_inner()).clone(), r.actor.clone()))
    }

    /// One job as this node knows it: (it runs here, the job), live from its actor or from its manifest.
    pub(crate) async fn local_get(&self, id: &str) -> Option<(bool, Job)> {
        match self.live(id) {
            Some((job, _)) => Some((true, job)),
            None => self.read(id).await.map(|j| (false, j)),
        }
    }

    /// One job, from any node: live from the node running it, else its manifest (here, or on the node holding
    /// it with local volumes).
    pub async fn get(&self, id: &str) -> Option<Job> {
        if let Some((true, job)) = self.local_get(id).await {
            return Some(job);
        }
        let remote = remote::ask_all(&self.inner, JobRequest::Get { id: id.to_string() }).await;
        let mut found: Vec<(bool, Job)> = remote.iter().filter_map(|(_, body)| remote::live_job(body)).collect();
        if let Some(local) = self.local_get(id).await {
            found.push(local);
        }
        found.sort_by_key(|(live, j)| (!*live, std::cmp::Reverse(j.revision)));
        found.into_iter().next().map(|(_, j)| j)
    }

    /// The jobs this node runs or holds: (runs here, summary).
    pub(crate) async fn local_list(&self) -> Result<Vec<(bool, Job)>, UploadError> {
        let storage = self.inner.recordings.store().map_err(|e| UploadError::NoStorage(e.to_string()))?;
        let ids =
            storage.folders(crate::storage::asset::ROOT).await.map_err(|e| UploadError::Storage(e.to_string()))?;
        let mut out = Vec::new();
        for id in ids {
            if let Some((live, j)) = self.local_get(&id).await {
                out.push((live, j.summary()));
            }
        }
        Ok(out)
    }

    /// Every job of the cluster (summaries, without chunk tables), newest first: each as the node running it
    /// sees it, else from its manifest.
    pub async fn list(&self) -> Result<Vec<Job>, UploadError> {
        let mut all = self.local_list().await?;
        for (_, body) in remote::ask_all(&self.inner, JobRequest::List).await {
            if let Ok(v) = serde_json::from_slice::<Vec<serde_json::Value>>(&body) {
                all.extend(v.iter().filter_map(|e| remote::live_job(&Bytes::from(e.to_string()))));
            }
        }
        all.sort_by(|(la, a), (lb, b)| a.id.cmp(&b.id).then(lb.cmp(la)).then(b.revision.cmp(&a.revision)));
        all.dedup_by(|b, a| a.1.id == b.1.id);
        let mut out: Vec<Job> = all.into_iter().map(|(_, j)| j).collect();
        out.sort_by(|a, b| b.created.cmp(&a.created).then_with(|| a.id.cmp(&b.id)));
        Ok(out)
    }

    /// Cancels a running job, on whichever node runs it: `Ok` with the job once cancelled; `Err` with the status
    /// and why not.
    pub async fn cancel(&self, id: &str) -> Result<Job, (u16, String)> {
        if self.live(id).is_none() {
            if let Some(r) = remote::act_elsewhere(&self.inner, id, "cancel").await {
                return r;
            }
        }
        self.local_cancel(id).await
    }

    /// Cancels a job running here.
    pub(crate) async fn local_cancel(&self, id: &str) -> Result<Job, (u16, String)> {
        let Some((_, actor)) = self.live(id) else {
            return match self.read(id).await {
                Some(j) => Err((409, format!("job {id} is {:?}, not running", j.state).to_lowercase())),
                None => Err((404, format!("no job {:?}", id.chars().take(64).collect::<String>()))),
            };
        };
        let _ = actor.cast(JobMsg::Cancel);
        for _ in 0..100 {
            tokio::time::sleep(Duration::from_millis(20)).await;
            if let Some(j) = self.read(id).await.filter(|j| j.state == JobState::Cancelled) {
                return Ok(j);
            }
        }
        Err((504, "the job did not confirm the cancel in time".into()))
    }

    /// Cancels the job if it runs on this node (its asset is being deleted).
    pub async fn cancel_if_running(&self, id: &str) {
        if self.live(id).is_some() {
            let _ = self.cancel(id).await;
        }
    }

    /// Starts a failed or cancelled job again (chunks already done are kept), here if this node holds its
    /// manifest (any node with S3), else on the node holding it.
    pub async fn retry(&self, id: &str) -> Result<Job, (u16, String)> {
        if self.live(id).is_some() {
            return Err((409, format!("job {id} is running")));
        }
        let remote = remote::ask_all(&self.inner, JobRequest::Get { id: id.to_string() }).await;
        if remote.iter().filter_map(|(_, b)| remote::live_job(b)).any(|(live, _)| live) {
            return Err((409, format!("job {id} is running on another node")));
        }
        if self.read(id).await.is_none() {
            if let Some(r) = remote::act_elsewhere(&self.inner, id, "retry").await {
                return r;
            }
        }
        self.local_retry(id).await
    }

    /// Retries a job whose manifest this node holds.
    pub(crate) async fn local_retry(&self, id: &str) -> Result<Job, (u16, String)> {
        if self.live(id).is_some() {
            return Err((409, format!("job {id} is running")));
        }
        let Some(mut job) = self.read(id).await else {
            return Err((404, format!("no job {:?}", id.chars().take(64).collect::<String>())));
        };
        if !matches!(job.state, JobState::Failed | JobState::Cancelled) {
            return Err((409, format!("job {id} is {:?}: only a failed or cancelled job is retried", job.state)));
        }
        job.attempts += 1;
        job.state = JobState::Pending;
        job.reason = None;
        job.node = self.inner.config.node_name.clone();
        for c in &mut job.chunk_status {
            if c.state != ChunkState::Done {
                c.state = ChunkState::Pending;
                c.attempts = 0;
            }
        }
        if job.info.is_some() && job.chunks.is_empty() {
            job.info = None; // probed, but nothing planned: probe again
        }
        let _ = self
            .inner
            .update_asset(&job.asset, |a| {
                a.state = AssetState::Processing;
                a.reason = None;
            })
            .await;
        info!(job = %id, attempt = job.attempts, "job retried");
        self.spawn(job.clone()).await;
        Ok(job)
    }
}

/// How long a job's lease lasts without renewal (its node renews it every third of this).
pub(crate) const LEASE: Duration = Duration::from_secs(15);
/// How often a node with shared storage looks for jobs to take over.
const TAKEOVER_SCAN: Duration = Duration::from_secs(5);

/// Now, in Unix ms.
pub(crate) fn unix_ms() -> u64 {
    SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

impl Jobs {
    /// With shared storage (S3) and clustering on: every few seconds, take over the unfinished jobs whose node is
    /// gone from the cluster and whose lease ran out. Of the nodes that are up, one takes each job (the same
    /// choice on every node: by the job id's hash), writes itself into the manifest, reads it back a second
    /// later, and goes on from the chunks done.
    pub fn start_takeover(&self) {
        if self.inner.config.storage.url.is_none() {
            return;
        }
        let jobs = self.clone();
        tokio::spawn(async move {
            let mut finished = std::collections::HashSet::new();
            let mut tick = tokio::time::interval(TAKEOVER_SCAN);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                if jobs.inner.draining.load(Ordering::Relaxed) {
                    return;
                }
                jobs.takeover_scan(&mut finished).await;
            }
        });
    }

    async fn takeover_scan(&self, finished: &mut std::collections::HashSet<String>) {
        let Some(cluster) = self.inner.cluster.get() else { return };
        let Ok(storage) = self.inner.recordings.store() else { return };
        let Ok(ids) = storage.folders(crate::storage::asset::ROOT).await else { return };
        let me = self.inner.config.node_name.clone();
        let mut up: Vec<String> =
            cluster.nodes_with_load().into_iter().filter(|(n, l)| *n == me || !l.draining).map(|(n, _)| n).collect();
        up.sort();
        for id in ids {
            if finished.contains(&id) || self.live(&id).is_some() {
                continue;
            }
            let Some(job) = self.read(&id).await else {
                finished.insert(id); // a recording, or an asset without a job
                continue;
            };
            if job.state.finished() {
                finished.insert(id);
                continue;
            }
            if job.node == me || up.contains(&job.node) || job.lease_until_ms > unix_ms() || up.is_empty() {
                continue;
            }
            let chosen = &up[(plan::fnv1a(id.as_bytes()) % up.len() as u64) as usize];
            if *chosen != me {
                continue;
            }
            self.take_over(job).await;
        }
    }

    async fn take_over(&self, mut job: Job) {
        let Ok(storage) = self.inner.recordings.store() else { return };
        let from = std::mem::replace(&mut job.node, self.inner.config.node_name.clone());
        job.attempts += 1;
        job.revision += 1;
        job.lease_until_ms = unix_ms() + LEASE.as_millis() as u64;
        for c in &mut job.chunk_status {
            if c.state != ChunkState::Done {
                c.state = ChunkState::Pending;
            }
        }
        let data = Bytes::from(serde_json::to_vec_pretty(&job).unwrap_or_default());
        if storage.put(&job_json(&job.id), data).await.is_err() {
            return;
        }
        // Another node that chose differently (it saw other members) may have written too: the manifest read a
        // second later says who has it.
        tokio::time::sleep(Duration::from_secs(1)).await;
        match self.read(&job.id).await {
            Some(j) if j.node == job.node && j.revision == job.revision => {
                warn!(job = %job.id, from = %from, chunks_done = job.chunk_status.iter().filter(|c| c.state == ChunkState::Done).count(),
                      "taking over a job whose node is gone and whose lease ran out");
                self.spawn(job).await;
            }
            _ => info!(job = %job.id, "another node took the job over"),
        }
    }
}

impl JobsInner {
    /// The job stopped running here without finishing (another node took it over).
    pub(crate) fn forget(&self, id: &str) {
        self.metrics.set_queued(id, 0);
        self.running.lock().unwrap_or_else(|e| e.into_inner()).remove(id);
    }

    /// A job ended (done, failed, cancelled): its actor is no longer asked.
    pub(crate) fn finished(&self, job: &Job) {
        self.metrics.set_job(&job.id, job.state);
        self.metrics.set_queued(&job.id, 0);
        self.running.lock().unwrap_or_else(|e| e.into_inner()).remove(&job.id);
    }

    /// Reads `asset.json`, changes it, writes it back.
    pub(crate) async fn update_asset(&self, id: &str, f: impl FnOnce(&mut Asset)) -> Result<(), String> {
        let storage = self.recordings.store().map_err(|e| e.to_string())?;
        let bytes = storage.get(&asset_json(id)).await.map_err(|e| e.to_string())?.ok_or("the asset is gone")?;
        let mut asset: Asset = serde_json::from_slice(&bytes).map_err(|e| e.to_string())?;
        f(&mut asset);
        asset.updated = rfc3339_millis(SystemTime::now());
        storage.put(&asset_json(id), Bytes::from(asset.to_json())).await.map_err(|e| e.to_string())
    }

    /// Chunks encoding or waiting here, and the chunks this node's jobs have not started yet: the VOD side of
    /// the node's load, and its chunk slots.
    pub(crate) fn vod_load(&self) -> (u32, u32) {
        let queued = self.metrics.queued.get().max(0) as usize;
        ((self.busy.load(Ordering::Relaxed) + queued) as u32, self.config.vod.parallel_chunks() as u32)
    }

    /// Pictures done by attempt `attempt` of chunk `index` of `job` on this node, if it encodes it.
    pub(crate) fn progress_of(&self, job: &str, index: u32, attempt: u32) -> Option<u64> {
        let worked = self.worked.lock().unwrap_or_else(|e| e.into_inner());
        worked
            .get(&(job.to_string(), index))
            .filter(|w| w.attempt == attempt)
            .map(|w| w.progress.load(Ordering::Relaxed))
    }

    /// Stops chunk `index` of `job` if this node encodes it.
    pub(crate) fn cancel_chunk(&self, job: &str, index: u32) {
        if let Some(w) = self.worked.lock().unwrap_or_else(|e| e.into_inner()).get(&(job.to_string(), index)) {
            w.cancel.store(true, Ordering::Relaxed);
        }
    }

    /// Hands back every chunk this node encodes for another node (it is shutting down): they end at once with
    /// [`remote::DRAINING`], and their jobs send them elsewhere.
    pub(crate) fn drain(&self) {
        self.draining.store(true, Ordering::Relaxed);
        for w in self.worked.lock().unwrap_or_else(|e| e.into_inner()).values() {
            w.cancel.store(true, Ordering::Relaxed);
        }
    }

    /// Encodes one chunk here, for this node's job or another node's, on a worker thread of its own (nice 10:
    /// live encoders come first), once a node slot is free. The source is read by URL (this node's storage: a
    /// local file or a presigned S3 URL) or, for another node's job with local volumes, from that node over the
    /// cluster; the segments go to storage as they complete (to the job's node, likewise).
    pub(crate) async fn run_chunk(self: &Arc<Self>, task: ChunkTask) -> Result<ChunkOutput, String> {
        let key = (task.job.clone(), task.index);
        let (cancel, progress) = (Arc::new(AtomicBool::new(false)), Arc::new(AtomicU64::new(0)));
        {
            let mut worked = self.worked.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(old) = worked.get(&key) {
                old.cancel.store(true, Ordering::Relaxed); // an older attempt still running here
            }
            let w = Worked { attempt: task.attempt, cancel: cancel.clone(), progress: progress.clone() };
            worked.insert(key.clone(), w);
        }
        self.busy.fetch_add(1, Ordering::Relaxed);
        let r = self.encode_here(task, cancel.clone(), progress).await;
        self.busy.fetch_sub(1, Ordering::Relaxed);
        let mut worked = self.worked.lock().unwrap_or_else(|e| e.into_inner());
        if worked.get(&key).is_some_and(|w| Arc::ptr_eq(&w.cancel, &cancel)) {
            worked.remove(&key);
        }
        match r {
            Err(_) if self.draining.load(Ordering::Relaxed) => Err(remote::DRAINING.into()),
            r => r,
        }
    }

    async fn encode_here(
        self: &Arc<Self>,
        task: ChunkTask,
        cancel: Arc<AtomicBool>,
        progress: Arc<AtomicU64>,
    ) -> Result<ChunkOutput, String> {
        let _permit = self.slots.clone().acquire_owned().await.map_err(|_| remote::DRAINING)?;
        if self.draining.load(Ordering::Relaxed) {
            return Err(remote::DRAINING.into());
        }
        if cancel.load(Ordering::Relaxed) {
            return Err("cancelled".into());
        }
        let storage = self.recordings.store().map_err(|e| e.to_string())?;
        let mine = task.owner == self.config.node_name;
        let shared = self.config.storage.url.is_some();
        let io = if mine || shared {
            let url = storage.read_url(&task.object, URL_VALID).await.map_err(|e| e.to_string())?;
            ChunkIo::Storage { url, storage }
        } else {
            let cluster = self.cluster.get().cloned().ok_or("clustering is off on this node")?;
            ChunkIo::Owner { cluster, owner: task.owner.clone() }
        };
        let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
        let threads = (cores / self.config.vod.parallel_chunks()).max(1);
        let handle = tokio::runtime::Handle::current();
        let (tx, rx) = tokio::sync::oneshot::channel();
        let frames = self.metrics.frames.clone();
        let spawned = std::thread::Builder::new().name("vod-chunk".into()).spawn(move || {
            lower_priority();
            let r = encode(&task, io, &handle, threads, &cancel, &progress);
            if let Ok(o) = &r {
                frames.inc_by(o.frames);
            }
            let _ = tx.send(r);
        });
        spawned.map_err(|e| format!("cannot start a thread: {e}"))?;
        rx.await.unwrap_or_else(|_| Err("the chunk's worker thread panicked".into()))
    }
}

/// How long FFmpeg may read the source through one presigned URL.
pub(crate) const URL_VALID: Duration = Duration::from_secs(6 * 3600);

/// Where a chunk reads its source and writes its output.
#[cfg_attr(not(feature = "transcode"), allow(dead_code))]
enum ChunkIo {
    /// This node's storage: the source by URL (a local file or a presigned S3 URL), the output put there.
    Storage {
        /// The source.
        url: String,
        /// Where the output goes.
        storage: crate::storage::Storage,
    },
    /// The job's node, over the cluster (local volumes): its source by ranges, the output put to it.
    Owner {
        /// The cluster.
        cluster: crate::cluster::ClusterHandle,
        /// The job's node.
        owner: String,
    },
}

#[cfg(feature = "transcode")]
fn encode(
    task: &ChunkTask,
    io: ChunkIo,
    handle: &tokio::runtime::Handle,
    threads: usize,
    cancel: &AtomicBool,
    progress: &AtomicU64,
) -> Result<ChunkOutput, String> {
    let dir = asset_dir(&task.asset);
    let (source, mut write): (source::SourceAt, Box<chunk::Write<'_>>) = match io {
        ChunkIo::Storage { url, storage } => (
            source::SourceAt::Url(url),
            Box::new(move |path: String, data: Bytes| -> Result<(), String> {
                handle.block_on(storage.put(&format!("{dir}/{path}"), data)).map_err(|e| e.to_string())
            }),
        ),
        ChunkIo::Owner { cluster, owner } => {
            let file = remote::OwnerFile::new(cluster.clone(), owner.clone(), task.object.clone(), handle.clone());
            (
                source::SourceAt::Stream(Box::new(file)),
                Box::new(move |path: String, data: Bytes| -> Result<(), String> {
                    handle.block_on(remote::put_to(&cluster, &owner, format!("{dir}/{path}"), data))
                }),
            )
        }
    };
    chunk::encode_chunk(
        source,
        &task.plan,
        task.offset_ms,
        task.fps,
        &task.rungs,
        threads,
        cancel,
        progress,
        &mut *write,
    )
}

#[cfg(not(feature = "transcode"))]
fn encode(
    _: &ChunkTask,
    _: ChunkIo,
    _: &tokio::runtime::Handle,
    _: usize,
    _: &AtomicBool,
    _: &AtomicU64,
) -> Result<ChunkOutput, String> {
    Err("this strom was built without the `transcode` feature (no FFmpeg)".into())
}

/// Reads and drops what is left of a refused body, for at most [`LINGER`] and [`LINGER_BYTES`] (nginx's lingering
/// close): a client still sending when the 413 is answered would otherwise get a connection reset instead of it.
async fn linger<S, E>(mut body: std::pin::Pin<&mut S>)
where
    S: futures_util::Stream<Item = Result<Bytes, E>>,
{
    let mut left = LINGER_BYTES;
    let _ = tokio::time::timeout(LINGER, async {
        while let Some(Ok(b)) = body.next().await {
            left = left.saturating_sub(b.len() as u64);
            if left == 0 {
                break;
            }
        }
    })
    .await;
}

/// The longest a refused upload's rest is read and dropped.
const LINGER: Duration = Duration::from_secs(5);
/// The most of a refused upload's rest that is read and dropped.
const LINGER_BYTES: u64 = 64 << 20;

/// This thread yields the CPU to live work: nice 10 (Linux applies it to the calling thread only).
fn lower_priority() {
    // SAFETY: plain syscalls on the calling thread; failure only leaves the priority as it was.
    unsafe {
        let tid = libc::syscall(libc::SYS_gettid) as libc::id_t;
        let _ = libc::setpriority(libc::PRIO_PROCESS, tid, 10);
    }
}
