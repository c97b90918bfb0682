//! The job actor: one per VOD job, on the node that accepted it (see [`super`]).
//!
//! It probes the source (on a thread of its own), plans the chunks, runs each chunk on a worker thread of its
//! own (at lower CPU priority than live encoders, at most `vod.parallel_chunks` at once on the node), retries a
//! failed chunk with backoff, and joins the outputs: one VOD playlist per rung, the asset's renditions, state
//! `done`. Every change of state is written to `vod/<id>/job.json` (a versioned manifest with a revision), so a
//! job whose node restarts goes on from its done chunks.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use ractor::{Actor, ActorProcessingErr, ActorRef};
use tracing::{info, warn, Instrument};

use super::plan::{plan_chunks, ChunkOutput, ChunkState, ChunkStatus, Job, JobRung, JobState};
use super::JobsInner;
use crate::formats::playlist::rfc3339_millis;
use crate::storage::asset::{render_playlist, AssetState, Rendition, SegmentEntry};
use crate::transcode::ladder::scaled_width;

/// How long FFmpeg may read the source through one presigned URL.
const URL_VALID: Duration = Duration::from_secs(6 * 3600);
/// Progress is refreshed this often.
const TICK: Duration = Duration::from_secs(1);

/// What a job actor is told.
pub enum JobMsg {
    /// The probe ended: the source's summary and chunk plan, or why the source is unusable.
    Probed(Result<Box<Probed>, String>),
    /// A chunk attempt ended.
    ChunkEnded {
        /// The chunk.
        index: u32,
        /// Its result.
        result: Result<ChunkOutput, String>,
    },
    /// Start what may start (a retry's backoff is over).
    Dispatch,
    /// Refresh progress.
    Tick,
    /// Stop the job (`POST /api/v1/jobs/{id}/cancel`).
    Cancel,
}

impl ractor::Message for JobMsg {}

/// What probing gives the job.
pub struct Probed {
    info: super::plan::SourceInfo,
    chunks: Vec<super::plan::ChunkPlan>,
}

/// The job actor.
pub struct JobActor;

/// The job actor's start: the shared state of the node's jobs, and the job (new, or read back to go on).
pub struct JobArgs {
    pub(super) jobs: Arc<JobsInner>,
    pub(super) job: Job,
    pub(super) status: Arc<Mutex<Job>>,
}

/// The job actor's state.
pub struct JobRun {
    jobs: Arc<JobsInner>,
    job: Job,
    status: Arc<Mutex<Job>>,
    cancel: Arc<AtomicBool>,
    /// Per chunk: pictures done by the running attempt.
    progress: Vec<Arc<AtomicU64>>,
    /// Per chunk: the most pictures any attempt reported (progress never goes backwards).
    best: Vec<u64>,
    running: usize,
    /// Chunks waiting for their retry's backoff.
    backoff: HashMap<u32, Instant>,
    started: Instant,
    frames_at_start: u64,
}

impl Actor for JobActor {
    type Msg = JobMsg;
    type State = JobRun;
    type Arguments = JobArgs;

    async fn pre_start(&self, myself: ActorRef<JobMsg>, args: JobArgs) -> Result<JobRun, ActorProcessingErr> {
        myself.send_interval(TICK, || JobMsg::Tick);
        let n = args.job.chunks.len();
        let mut run = JobRun {
            jobs: args.jobs,
            frames_at_start: 0,
            job: args.job,
            status: args.status,
            cancel: Arc::new(AtomicBool::new(false)),
            progress: (0..n).map(|_| Arc::new(AtomicU64::new(0))).collect(),
            best: vec![0; n],
            running: 0,
            backoff: HashMap::new(),
            started: Instant::now(),
        };
        for (i, (plan, status)) in run.job.chunks.iter().zip(&run.job.chunk_status).enumerate() {
            if status.state == ChunkState::Done {
                run.best[i] = plan.frames;
            }
        }
        run.frames_at_start = run.best.iter().sum();
        if run.job.info.is_none() {
            run.set_state(JobState::Probing, None);
            run.persist().await;
            run.probe(&myself).await;
        } else {
            run.set_state(JobState::Running, None);
            run.persist().await;
            run.dispatch(&myself).await;
        }
        Ok(run)
    }

    async fn handle(&self, myself: ActorRef<JobMsg>, msg: JobMsg, run: &mut JobRun) -> Result<(), ActorProcessingErr> {
        match msg {
            JobMsg::Probed(Err(why)) => run.fail(&myself, format!("the source cannot be used: {why}")).await,
            JobMsg::Probed(Ok(p)) => {
                run.planned(*p);
                if run.job.chunks.is_empty() {
                    run.fail(&myself, "the source has no decodable picture".into()).await;
                    return Ok(());
                }
                run.set_state(JobState::Running, None);
                run.persist().await;
                run.dispatch(&myself).await;
            }
            JobMsg::ChunkEnded { index, result } => run.chunk_ended(&myself, index, result).await,
            JobMsg::Dispatch => run.dispatch(&myself).await,
            JobMsg::Tick => run.refresh(),
            JobMsg::Cancel => {
                run.cancel.store(true, Ordering::Relaxed);
                run.set_state(JobState::Cancelled, Some("cancelled through the API".into()));
                run.persist().await;
                run.asset_state(AssetState::Failed, Some("its job was cancelled".into())).await;
                run.jobs.finished(&run.job);
                myself.stop(None);
            }
        }
        Ok(())
    }

    async fn post_stop(&self, _: ActorRef<JobMsg>, run: &mut JobRun) -> Result<(), ActorProcessingErr> {
        // Running chunk threads see this and end at their next packet.
        run.cancel.store(true, Ordering::Relaxed);
        Ok(())
    }
}

impl JobRun {
    fn set_state(&mut self, state: JobState, reason: Option<String>) {
        let before = self.job.state;
        self.job.state = state;
        self.job.reason = reason;
        self.jobs.metrics.moved(before, state);
        self.publish();
    }

    fn publish(&mut self) {
        self.job.recount();
        self.job.frames_done = self.job.frames_done.max(self.best.iter().sum());
        *self.status.lock().unwrap_or_else(|e| e.into_inner()) = self.job.clone();
        let queued = self.job.chunk_status.iter().filter(|c| c.state == ChunkState::Pending).count();
        self.jobs.metrics.set_queued(&self.job.id, if self.job.state.finished() { 0 } else { queued });
    }

    /// Writes `job.json` (a failure is logged; the job goes on, and the next change writes it again).
    async fn persist(&mut self) {
        self.job.revision += 1;
        self.job.updated = rfc3339_millis(SystemTime::now());
        self.publish();
        let Ok(storage) = self.jobs.recordings.store() else { return };
        let data = Bytes::from(serde_json::to_vec_pretty(&self.job).unwrap_or_default());
        if let Err(e) = storage.put(&super::job_json(&self.job.id), data).await {
            warn!(job = %self.job.id, error = %e, "cannot write the job manifest");
        }
    }

    async fn probe(&mut self, myself: &ActorRef<JobMsg>) {
        let url = match self.source_url().await {
            Ok(u) => u,
            Err(e) => {
                self.fail(myself, e).await;
                return;
            }
        };
        let vod = self.jobs.config.vod.clone();
        let me = myself.clone();
        let spawned = std::thread::Builder::new().name("vod-probe".into()).spawn(move || {
            let r = probe(&url, &vod);
            let _ = me.cast(JobMsg::Probed(r.map(Box::new)));
        });
        if let Err(e) = spawned {
            self.fail(myself, format!("cannot start a thread: {e}")).await;
        }
    }

    async fn source_url(&self) -> Result<String, String> {
        let storage = self.jobs.recordings.store().map_err(|e| e.to_string())?;
        storage.read_url(&self.job.source.object, URL_VALID).await.map_err(|e| e.to_string())
    }

    /// The probe's summary and plan, and the rungs that fit the source.
    fn planned(&mut self, p: Probed) {
        let info = p.info;
        let vod = &self.jobs.config.vod;
        let mut heights: Vec<u32> = self.job.ladder.iter().copied().filter(|h| *h <= info.height).collect();
        if heights.is_empty() {
            heights.push((info.height.max(2)) & !1);
        }
        heights.sort_unstable_by(|a, b| b.cmp(a));
        heights.dedup();
        self.job.rungs = heights
            .iter()
            .map(|&h| {
                let c = vod.rung_for_height(h);
                JobRung {
                    name: format!("{h}p"),
                    width: scaled_width(info.width, info.height, h),
                    height: h,
                    bitrate_kbps: c.bitrate_kbps,
                    maxrate_kbps: c.maxrate(),
                    bufsize_kbits: c.bufsize(),
                    preset: c.preset.clone(),
                    profile: c.profile.clone(),
                }
            })
            .collect();
        self.job.chunk_status = p.chunks.iter().map(|_| ChunkStatus::new()).collect();
        self.progress = p.chunks.iter().map(|_| Arc::new(AtomicU64::new(0))).collect();
        self.best = vec![0; p.chunks.len()];
        self.job.chunks = p.chunks;
        info!(job = %self.job.id, chunks = self.job.chunks.len(), frames = info.frames,
              rungs = ?heights, "source probed and planned");
        self.job.info = Some(info);
    }

    /// Starts pending chunks, up to `vod.parallel_chunks` of this job at once (the node's chunk slots are shared
    /// by its jobs).
    async fn dispatch(&mut self, myself: &ActorRef<JobMsg>) {
        if self.job.state != JobState::Running {
            return;
        }
        let limit = self.jobs.config.vod.parallel_chunks();
        let now = Instant::now();
        let Some(info) = self.job.info.clone() else { return };
        let mut url = None;
        for i in 0..self.job.chunks.len() {
            if self.running >= limit {
                break;
            }
            if self.job.chunk_status[i].state != ChunkState::Pending
                || self.backoff.get(&(i as u32)).is_some_and(|t| *t > now)
            {
                continue;
            }
            if url.is_none() {
                match self.source_url().await {
                    Ok(u) => url = Some(u),
                    Err(e) => {
                        warn!(job = %self.job.id, error = %e, "cannot reach the source; trying again");
                        myself.send_after(Duration::from_secs(2), || JobMsg::Dispatch);
                        return;
                    }
                }
            }
            self.backoff.remove(&(i as u32));
            let status = &mut self.job.chunk_status[i];
            status.state = ChunkState::Running;
            status.attempts += 1;
            status.node = Some(self.jobs.config.node_name.clone());
            status.error = None;
            self.running += 1;
            self.progress[i].store(0, Ordering::Relaxed);
            let task = super::ChunkTask {
                asset: self.job.asset.clone(),
                url: url.clone().unwrap_or_default(),
                plan: self.job.chunks[i].clone(),
                offset_ms: info.offset_ms,
                fps: info.fps,
                rungs: self.job.rungs.clone(),
            };
            let (jobs, me, cancel, progress) =
                (self.jobs.clone(), myself.clone(), self.cancel.clone(), self.progress[i].clone());
            let span = tracing::info_span!(parent: None, "vod_chunk", job = %self.job.id, chunk = i, node = %self.jobs.config.node_name);
            tokio::spawn(
                async move {
                    let result = jobs.run_chunk(task, cancel, progress).await;
                    let _ = me.cast(JobMsg::ChunkEnded { index: i as u32, result });
                }
                .instrument(span),
            );
        }
        self.publish();
    }

    async fn chunk_ended(&mut self, myself: &ActorRef<JobMsg>, index: u32, result: Result<ChunkOutput, String>) {
        let i = index as usize;
        self.running = self.running.saturating_sub(1);
        if self.job.state != JobState::Running || i >= self.job.chunk_status.len() {
            return;
        }
        match result {
            Ok(out) => {
                self.jobs.metrics.chunk("done");
                self.best[i] = self.job.chunks[i].frames;
                let status = &mut self.job.chunk_status[i];
                status.state = ChunkState::Done;
                status.error = None;
                info!(job = %self.job.id, chunk = index, seconds = out.seconds, frames = out.frames, "chunk done");
                status.output = Some(out);
                self.persist().await;
                if self.job.chunk_status.iter().all(|c| c.state == ChunkState::Done) {
                    self.join(myself).await;
                    return;
                }
            }
            Err(why) => {
                self.jobs.metrics.chunk("failed");
                let max = self.jobs.config.vod.chunk_attempts;
                let status = &mut self.job.chunk_status[i];
                status.error = Some(why.clone());
                warn!(job = %self.job.id, chunk = index, attempt = status.attempts, error = %why, "chunk failed");
                if status.attempts >= max {
                    status.state = ChunkState::Failed;
                    let reason = format!("chunk {index} failed {max} times; last: {why}");
                    self.fail(myself, reason).await;
                    return;
                }
                status.state = ChunkState::Pending;
                let wait = Duration::from_millis(500 * 2u64.pow(status.attempts.min(6)));
                self.backoff.insert(index, Instant::now() + wait);
                myself.send_after(wait, || JobMsg::Dispatch);
                self.persist().await;
            }
        }
        self.dispatch(myself).await;
    }

    /// Every chunk is done: each rung's playlist, then the asset's renditions and state.
    async fn join(&mut self, myself: &ActorRef<JobMsg>) {
        let storage = match self.jobs.recordings.store() {
            Ok(s) => s,
            Err(e) => return self.fail(myself, e.to_string()).await,
        };
        let Some(info) = self.job.info.clone() else { return };
        let mut renditions = Vec::new();
        for (r, rung) in self.job.rungs.iter().enumerate() {
            let outs: Vec<_> = self.job.chunk_status.iter().filter_map(|c| c.output.as_ref()?.rungs.get(r)).collect();
            if outs.windows(2).any(|w| w[0].init_hash != w[1].init_hash) {
                let why = format!("rung {}: the chunks made different init segments", rung.name);
                return self.fail(myself, why).await;
            }
            let entries: Vec<SegmentEntry> = self
                .job
                .segments_of(r)
                .into_iter()
                .map(|(index, duration_us)| SegmentEntry {
                    index,
                    duration_us,
                    init: super::plan::INIT,
                    discontinuity: false,
                })
                .collect();
            let text = render_playlist(&entries, true, "", None);
            let key = format!("{}/{}/index.m3u8", crate::storage::asset::asset_dir(&self.job.asset), rung.name);
            if let Err(e) = storage.put(&key, Bytes::from(text)).await {
                return self.fail(myself, format!("writing a playlist: {e}")).await;
            }
            let mut rendition = Rendition::new(&rung.name);
            rendition.width = Some(rung.width);
            rendition.height = Some(rung.height);
            rendition.segments = entries.len() as u64;
            rendition.bytes = outs.iter().map(|o| o.bytes).sum();
            rendition.duration = entries.iter().map(|e| e.duration_us).sum::<u64>() as f64 / 1e6;
            rendition.codecs = outs.first().map(|o| o.codecs.clone());
            rendition.frame_rate = Some(info.fps);
            rendition.peak_bps = outs.iter().map(|o| o.peak_bps).max().unwrap_or(0);
            renditions.push(rendition);
        }
        if let Err(e) = self
            .jobs
            .update_asset(&self.job.asset, |a| {
                a.duration = renditions.first().map_or(0.0, |r| r.duration);
                a.bytes = renditions.iter().map(|r| r.bytes).sum::<u64>() + self.job.source.bytes;
                a.renditions = renditions.clone();
                a.state = AssetState::Done;
                a.reason = None;
            })
            .await
        {
            return self.fail(myself, format!("writing the asset: {e}")).await;
        }
        self.job.frames_done = self.job.frames_total;
        self.job.eta_secs = Some(0.0);
        self.set_state(JobState::Done, None);
        self.persist().await;
        info!(job = %self.job.id, rungs = self.job.rungs.len(), seconds = self.started.elapsed().as_secs_f64(), "job done");
        self.jobs.finished(&self.job);
        myself.stop(None);
    }

    async fn fail(&mut self, myself: &ActorRef<JobMsg>, reason: String) {
        warn!(job = %self.job.id, reason = %reason, "job failed");
        self.cancel.store(true, Ordering::Relaxed);
        self.set_state(JobState::Failed, Some(reason.clone()));
        self.persist().await;
        self.asset_state(AssetState::Failed, Some(reason)).await;
        self.jobs.finished(&self.job);
        myself.stop(None);
    }

    async fn asset_state(&self, state: AssetState, reason: Option<String>) {
        if let Err(e) = self
            .jobs
            .update_asset(&self.job.asset, |a| {
                a.state = state;
                a.reason = reason.clone();
            })
            .await
        {
            warn!(job = %self.job.id, error = %e, "cannot write the asset");
        }
    }

    /// Progress, speed and ETA from the running chunks (pictures per chunk never go backwards).
    fn refresh(&mut self) {
        if self.job.state != JobState::Running {
            return;
        }
        for (i, p) in self.progress.iter().enumerate() {
            if self.job.chunk_status[i].state == ChunkState::Running {
                let n = p.load(Ordering::Relaxed).min(self.job.chunks[i].frames);
                self.best[i] = self.best[i].max(n);
            }
        }
        let done: u64 = self.best.iter().sum();
        let secs = self.started.elapsed().as_secs_f64();
        let fps = done.saturating_sub(self.frames_at_start) as f64 / secs.max(0.001);
        if fps > 0.0 {
            self.job.fps = Some((fps * 10.0).round() / 10.0);
            self.job.eta_secs = Some(((self.job.frames_total.saturating_sub(done)) as f64 / fps).round());
        }
        self.publish();
    }
}

/// Probes the source at `url` and plans its chunks (blocking).
fn probe(url: &str, vod: &crate::config::VodConfig) -> Result<Probed, String> {
    #[cfg(feature = "transcode")]
    {
        let mut source = super::source::Source::open(url)?;
        let p = source.probe()?;
        let chunks =
            plan_chunks(&p.pictures, p.end_ms, (vod.chunk_secs * 1000.0) as i64, (vod.segment_secs * 1000.0) as i64);
        Ok(Probed { info: p.info, chunks })
    }
    #[cfg(not(feature = "transcode"))]
    {
        let _ = (url, vod, plan_chunks);
        Err("this strom was built without the `transcode` feature (no FFmpeg)".into())
    }
}
