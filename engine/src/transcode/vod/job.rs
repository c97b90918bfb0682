//! The job actor: one per VOD job, on the node that accepted it (see [`super`]).
//!
//! It probes the source (on a thread of its own), plans the chunks, runs each chunk on a worker thread of its
//! own (at lower CPU priority than live encoders, at most `vod.parallel_chunks` at once on the node), retries a
//! failed chunk with backoff, and joins the outputs: one VOD playlist per rung, the asset's renditions, state
//! `done`. Every change of state is written to `vod/<id>/job.json` (a versioned manifest with a revision), so a
//! job whose node restarts goes on from its done chunks.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use ractor::{Actor, ActorProcessingErr, ActorRef};
use tracing::{info, warn, Instrument};

use super::plan::{fit_chunk_ms, plan_chunks, ChunkOutput, ChunkState, ChunkStatus, Job, JobRung, JobState};
use super::JobsInner;
use crate::cluster::wire::Load;
use crate::formats::playlist::rfc3339_millis;
use crate::storage::asset::{render_playlist, AssetState, Rendition, SegmentEntry};
use crate::transcode::ladder::scaled_width;

/// Progress is refreshed this often.
const TICK: Duration = Duration::from_secs(1);

/// What a job actor is told.
pub enum JobMsg {
    /// The probe ended: the source's summary and chunk plan, or why the source is unusable.
    Probed(Result<Box<Probed>, String>),
    /// A chunk attempt ended (here or on another node).
    ChunkEnded {
        /// The chunk.
        index: u32,
        /// The attempt.
        attempt: u32,
        /// Its result.
        result: Result<ChunkOutput, String>,
    },
    /// Pictures done by chunks on other nodes, per (chunk, attempt); `None`: the node did not answer.
    Progress(Vec<(u32, u32, Option<u64>)>),
    /// Start what may start (a retry's backoff is over, a node may have room).
    Dispatch,
    /// Refresh progress, check time limits.
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

/// A chunk attempt under way.
struct Inflight {
    node: String,
    attempt: u32,
    started: Instant,
    /// When its picture count last grew.
    moved: Instant,
    frames: u64,
    /// Progress polls in a row its node did not answer.
    misses: u32,
    task: tokio::task::AbortHandle,
}

/// The job actor's state.
pub struct JobRun {
    jobs: Arc<JobsInner>,
    job: Job,
    status: Arc<Mutex<Job>>,
    /// Chunk attempts under way, by chunk index.
    inflight: HashMap<u32, Inflight>,
    /// Per chunk: the most pictures any attempt reported (progress never goes backwards).
    best: Vec<u64>,
    /// Chunks waiting for their retry's backoff.
    backoff: HashMap<u32, Instant>,
    /// Seconds of encoding per second of media, the slowest done chunk's: the time limit of a chunk.
    speed: Option<f64>,
    /// A progress poll of other nodes is under way.
    polling: bool,
    /// When the lease was last renewed.
    renewed: Instant,
    /// Nodes that handed a chunk back because they drain, and when (they get no chunk for a while, even before
    /// their heartbeat says they drain).
    drained: HashMap<String, Instant>,
    started: Instant,
    frames_at_start: u64,
}

/// No picture for this long from a chunk that had started encoding: it is stuck.
const STALL: Duration = Duration::from_secs(60);
/// A node that handed a chunk back (it drains) gets none for this long.
const DRAINED: Duration = Duration::from_secs(30);
/// A node that misses this many progress polls in a row has lost the chunk.
const MISSES: u32 = 3;

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
            inflight: HashMap::new(),
            best: vec![0; n],
            backoff: HashMap::new(),
            speed: None,
            polling: false,
            renewed: Instant::now(),
            drained: HashMap::new(),
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
            JobMsg::ChunkEnded { index, attempt, result } => run.chunk_ended(&myself, index, attempt, result).await,
            JobMsg::Progress(polled) => run.polled(&myself, polled).await,
            JobMsg::Dispatch => run.dispatch(&myself).await,
            JobMsg::Tick => run.tick(&myself).await,
            JobMsg::Cancel => {
                run.stop_chunks();
                run.asset_state(AssetState::Failed, Some("its job was cancelled".into())).await;
                run.set_state(JobState::Cancelled, Some("cancelled through the API".into()));
                run.persist().await;
                run.jobs.finished(&run.job);
                myself.stop(None);
            }
        }
        Ok(())
    }

    async fn post_stop(&self, _: ActorRef<JobMsg>, run: &mut JobRun) -> Result<(), ActorProcessingErr> {
        run.stop_chunks();
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

    /// Writes `job.json` (a failure is logged; the job goes on, and the next change writes it again), renewing
    /// the lease.
    async fn persist(&mut self) {
        self.job.revision += 1;
        self.job.lease_until_ms = super::unix_ms() + super::LEASE.as_millis() as u64;
        self.renewed = Instant::now();
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
        // The chunk slots of the nodes that may take chunks now: a short source is cut to fill them.
        let slots = self.candidates().iter().map(|c| c.1).sum::<u32>();
        let me = myself.clone();
        let spawned = std::thread::Builder::new().name("vod-probe".into()).spawn(move || {
            let r = probe(&url, &vod, slots);
            let _ = me.cast(JobMsg::Probed(r.map(Box::new)));
        });
        if let Err(e) = spawned {
            self.fail(myself, format!("cannot start a thread: {e}")).await;
        }
    }

    async fn source_url(&self) -> Result<String, String> {
        let storage = self.jobs.recordings.store().map_err(|e| e.to_string())?;
        storage.read_url(&self.job.source.object, super::URL_VALID).await.map_err(|e| e.to_string())
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
        self.best = vec![0; p.chunks.len()];
        self.job.chunks = p.chunks;
        info!(job = %self.job.id, chunks = self.job.chunks.len(), frames = info.frames,
              rungs = ?heights, "source probed and planned");
        self.job.info = Some(info);
    }

    /// Where chunks may run now: this node (unless it drains) and every peer that is up, not draining, and not
    /// behind an open breaker; each with its chunk slots and load.
    fn candidates(&self) -> Vec<(String, u32, Load)> {
        let me = &self.jobs.config.node_name;
        let local_slots = self.jobs.config.vod.parallel_chunks() as u32;
        let draining = self.jobs.draining.load(std::sync::atomic::Ordering::Relaxed);
        let nodes = match self.jobs.cluster.get() {
            Some(c) => c.nodes_with_load(),
            None => vec![(me.clone(), Load::default())],
        };
        nodes
            .into_iter()
            .filter(|(n, l)| if n == me { !draining } else { !l.draining })
            .filter(|(n, _)| self.jobs.breakers.closed(n))
            .filter(|(n, _)| self.drained.get(n).is_none_or(|t| t.elapsed() > DRAINED))
            .map(|(n, l)| {
                let slots = if n == *me || l.vod_slots == 0 { local_slots } else { l.vod_slots };
                (n, slots.max(1), l)
            })
            .collect()
    }

    /// The node for the next chunk: one with a free slot for this job, the fewest of this job's chunks per slot
    /// first, then the least live work (ladders: live comes first), then the least other VOD work, then CPU;
    /// never `avoid` (where the chunk just failed) while another node can take it.
    fn pick(&self, candidates: &[(String, u32, Load)], avoid: Option<&str>) -> Option<String> {
        type Rank = (u64, u32, u32, u32);
        let mut best: Option<(Rank, &str)> = None;
        let mut fallback = None;
        for (node, slots, load) in candidates {
            let mine = self.inflight.values().filter(|f| f.node == *node).count() as u32;
            if mine >= *slots {
                continue;
            }
            if Some(node.as_str()) == avoid {
                fallback = Some(node.clone());
                continue;
            }
            let key = (
                (u64::from(mine) << 16) / u64::from(*slots),
                load.encoders,
                load.vod_chunks,
                (load.ratio * 100.0) as u32,
            );
            if best.as_ref().is_none_or(|(k, _)| key < *k) {
                best = Some((key, node));
            }
        }
        best.map(|(_, n)| n.to_string()).or(fallback)
    }

    /// Starts pending chunks on the nodes that have room for them.
    async fn dispatch(&mut self, myself: &ActorRef<JobMsg>) {
        if self.job.state != JobState::Running {
            return;
        }
        let Some(info) = self.job.info.clone() else { return };
        let now = Instant::now();
        let candidates = self.candidates();
        let me = self.jobs.config.node_name.clone();
        let mut waiting = false;
        for i in 0..self.job.chunks.len() {
            let index = i as u32;
            if self.job.chunk_status[i].state != ChunkState::Pending || self.inflight.contains_key(&index) {
                continue;
            }
            if self.backoff.get(&index).is_some_and(|t| *t > now) {
                continue;
            }
            let status = &self.job.chunk_status[i];
            let avoid = status.error.as_ref().and(status.node.clone());
            let Some(node) = self.pick(&candidates, avoid.as_deref()) else {
                waiting = true;
                break;
            };
            self.backoff.remove(&index);
            let status = &mut self.job.chunk_status[i];
            status.state = ChunkState::Running;
            status.attempts += 1;
            status.node = Some(node.clone());
            status.error = None;
            let attempt = status.attempts;
            let task = super::ChunkTask {
                job: self.job.id.clone(),
                index,
                attempt,
                owner: me.clone(),
                asset: self.job.asset.clone(),
                object: self.job.source.object.clone(),
                plan: self.job.chunks[i].clone(),
                offset_ms: info.offset_ms,
                fps: info.fps,
                rungs: self.job.rungs.clone(),
            };
            let limit = self.limit(i);
            let (jobs, me_ref) = (self.jobs.clone(), myself.clone());
            let span = tracing::info_span!(parent: None, "vod_chunk", job = %self.job.id, chunk = i, attempt,
                                           worker = %node, node = %me);
            let target = node.clone();
            let local = node == me;
            let task = tokio::spawn(
                async move {
                    let result = if local {
                        jobs.run_chunk(task).await
                    } else {
                        match jobs.cluster.get() {
                            Some(c) => super::remote::send_chunk(c, &target, &task, limit).await,
                            None => Err("clustering is off".into()),
                        }
                    };
                    let _ = me_ref.cast(JobMsg::ChunkEnded { index, attempt, result });
                }
                .instrument(span),
            );
            info!(job = %self.job.id, chunk = index, attempt, worker = %node, "chunk dispatched");
            let now = Instant::now();
            let f =
                Inflight { node, attempt, started: now, moved: now, frames: 0, misses: 0, task: task.abort_handle() };
            self.inflight.insert(index, f);
        }
        if waiting && self.inflight.is_empty() {
            // No node can take a chunk now (breakers open, every node draining): look again shortly.
            myself.send_after(Duration::from_secs(1), || JobMsg::Dispatch);
        }
        self.persist().await;
    }

    /// The time limit of chunk `i`: six times what the slowest done chunk took per media second (at least 2
    /// minutes); before any chunk is done, 30 times its media duration (at least 10 minutes).
    fn limit(&self, i: usize) -> Duration {
        let plan = &self.job.chunks[i];
        let media = (plan.end_ms - plan.start_ms).max(1) as f64 / 1000.0;
        match self.speed {
            Some(s) => Duration::from_secs_f64((6.0 * s * media).max(120.0)),
            None => Duration::from_secs_f64((30.0 * media).max(600.0)),
        }
    }

    async fn chunk_ended(
        &mut self,
        myself: &ActorRef<JobMsg>,
        index: u32,
        attempt: u32,
        result: Result<ChunkOutput, String>,
    ) {
        let i = index as usize;
        if self.inflight.get(&index).is_none_or(|f| f.attempt != attempt) {
            return; // an attempt given up on already
        }
        let Some(f) = self.inflight.remove(&index) else { return };
        if self.job.state != JobState::Running || i >= self.job.chunk_status.len() {
            return;
        }
        match result {
            Ok(out) => {
                self.jobs.metrics.chunk("done");
                self.jobs.breakers.success(&f.node);
                let plan = &self.job.chunks[i];
                let media = (plan.end_ms - plan.start_ms).max(1) as f64 / 1000.0;
                self.speed = Some(self.speed.unwrap_or(0.0).max(out.seconds / media));
                self.best[i] = self.job.chunks[i].frames;
                let status = &mut self.job.chunk_status[i];
                status.state = ChunkState::Done;
                status.error = None;
                info!(job = %self.job.id, chunk = index, worker = %f.node, seconds = out.seconds, frames = out.frames, "chunk done");
                status.output = Some(out);
                self.persist().await;
                if self.job.chunk_status.iter().all(|c| c.state == ChunkState::Done) {
                    self.join(myself).await;
                    return;
                }
            }
            Err(why) => {
                if !self.failed(myself, index, &f.node, why).await {
                    return;
                }
            }
        }
        self.dispatch(myself).await;
    }

    /// A chunk attempt on `node` failed (or was lost): back to pending with backoff, on another node if one can
    /// take it; the job fails when the chunk has no attempt left. `false` when the job ended.
    async fn failed(&mut self, myself: &ActorRef<JobMsg>, index: u32, node: &str, why: String) -> bool {
        let i = index as usize;
        let status = &mut self.job.chunk_status[i];
        if why == super::remote::DRAINING {
            // Handed back by a node shutting down: not the chunk's fault nor the node's.
            info!(job = %self.job.id, chunk = index, worker = node, "chunk handed back by a draining node");
            self.drained.insert(node.to_string(), Instant::now());
            status.state = ChunkState::Pending;
            status.attempts = status.attempts.saturating_sub(1);
            return true;
        }
        self.jobs.metrics.chunk("failed");
        let vod = &self.jobs.config.vod;
        self.jobs.breakers.failure(node, vod.breaker_failures, Duration::from_secs_f64(vod.breaker_secs), &why);
        let max = vod.chunk_attempts;
        status.error = Some(why.clone());
        warn!(job = %self.job.id, chunk = index, worker = node, attempt = status.attempts, error = %why, "chunk failed");
        if status.attempts >= max {
            status.state = ChunkState::Failed;
            let reason = format!("chunk {index} failed {max} times; last, on {node}: {why}");
            self.fail(myself, reason).await;
            return false;
        }
        status.state = ChunkState::Pending;
        let wait = Duration::from_millis(500 * 2u64.pow(status.attempts.min(6)));
        self.backoff.insert(index, Instant::now() + wait);
        myself.send_after(wait, || JobMsg::Dispatch);
        self.persist().await;
        true
    }

    /// Gives up on the running attempt of chunk `index` (its node is lost, or it ran past its time limit).
    async fn lost(&mut self, myself: &ActorRef<JobMsg>, index: u32, why: String) -> bool {
        let Some(f) = self.inflight.remove(&index) else { return true };
        f.task.abort();
        self.stop_on(&f.node, index);
        self.failed(myself, index, &f.node, why).await
    }

    /// Stops chunk `index` on `node` (best effort).
    fn stop_on(&self, node: &str, index: u32) {
        if node == self.jobs.config.node_name {
            self.jobs.cancel_chunk(&self.job.id, index);
        } else if let Some(c) = self.jobs.cluster.get().cloned() {
            let (node, job) = (node.to_string(), self.job.id.clone());
            tokio::spawn(async move { super::remote::cancel_on(&c, &node, &job, index).await });
        }
    }

    /// Stops every running chunk (the job ended).
    fn stop_chunks(&mut self) {
        for (index, f) in std::mem::take(&mut self.inflight) {
            f.task.abort();
            self.stop_on(&f.node, index);
        }
    }

    /// With shared storage, a third of the lease after the last write: is the job still ours (another node
    /// takes over a job whose lease ran out)? If so, renew the lease; if not, stop (no write: the job is theirs).
    async fn renew(&mut self, myself: &ActorRef<JobMsg>) -> bool {
        if self.jobs.config.storage.url.is_none() || self.renewed.elapsed() < super::LEASE / 3 {
            return true;
        }
        let Ok(storage) = self.jobs.recordings.store() else { return true };
        if let Ok(Some(bytes)) = storage.get(&super::job_json(&self.job.id)).await {
            if let Ok(stored) = serde_json::from_slice::<Job>(&bytes) {
                if stored.node != self.job.node && stored.revision >= self.job.revision {
                    warn!(job = %self.job.id, node = %stored.node, "the job was taken over by another node; stopping here");
                    self.stop_chunks();
                    self.jobs.forget(&self.job.id);
                    myself.stop(None);
                    return false;
                }
            }
        }
        self.persist().await;
        true
    }

    /// Every second: the lease; local progress, a poll of other nodes' chunks, time limits.
    async fn tick(&mut self, myself: &ActorRef<JobMsg>) {
        if self.job.state.finished() || !self.renew(myself).await || self.job.state != JobState::Running {
            return;
        }
        let me = self.jobs.config.node_name.clone();
        let mut remote = Vec::new();
        for (index, f) in &mut self.inflight {
            if f.node == me {
                if let Some(n) = self.jobs.progress_of(&self.job.id, *index, f.attempt) {
                    if n > f.frames {
                        (f.frames, f.moved) = (n, Instant::now());
                    }
                }
            } else {
                remote.push((*index, f.attempt, f.node.clone()));
            }
        }
        if !remote.is_empty() && !self.polling {
            if let Some(c) = self.jobs.cluster.get().cloned() {
                self.polling = true;
                let (job, me_ref) = (self.job.id.clone(), myself.clone());
                tokio::spawn(async move {
                    let polls =
                        remote.into_iter().map(|(index, attempt, node)| {
                            let (c, job) = (c.clone(), job.clone());
                            async move {
                                (index, attempt, super::remote::progress_on(&c, &node, &job, index, attempt).await)
                            }
                        });
                    let _ = me_ref.cast(JobMsg::Progress(futures_util::future::join_all(polls).await));
                });
            }
        }
        let mut over = Vec::new();
        for (index, f) in &self.inflight {
            let limit = self.limit(*index as usize);
            if f.started.elapsed() > limit {
                over.push((*index, format!("no result from {} within the chunk's time limit of {limit:?}", f.node)));
            } else if f.frames > 0 && f.moved.elapsed() > STALL {
                over.push((*index, format!("stuck on {}: no picture for {STALL:?}", f.node)));
            }
        }
        for (index, why) in over {
            if !self.lost(myself, index, why).await {
                return;
            }
        }
        self.refresh();
    }

    /// The answers of a progress poll.
    async fn polled(&mut self, myself: &ActorRef<JobMsg>, polled: Vec<(u32, u32, Option<u64>)>) {
        self.polling = false;
        let mut lost = Vec::new();
        for (index, attempt, frames) in polled {
            let Some(f) = self.inflight.get_mut(&index).filter(|f| f.attempt == attempt) else { continue };
            match frames {
                Some(n) => {
                    f.misses = 0;
                    if n > f.frames {
                        (f.frames, f.moved) = (n, Instant::now());
                    }
                }
                None => {
                    f.misses += 1;
                    if f.misses >= MISSES {
                        lost.push((index, format!("node {} lost the chunk (no answer to {MISSES} polls)", f.node)));
                    }
                }
            }
        }
        let any = !lost.is_empty();
        for (index, why) in lost {
            if !self.lost(myself, index, why).await {
                return;
            }
        }
        if any {
            self.dispatch(myself).await;
        }
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
        self.stop_chunks();
        // The asset first, as for a done job: whoever sees the job failed finds its asset failed too.
        self.asset_state(AssetState::Failed, Some(reason.clone())).await;
        self.set_state(JobState::Failed, Some(reason));
        self.persist().await;
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
        for (index, f) in &self.inflight {
            let i = *index as usize;
            self.best[i] = self.best[i].max(f.frames.min(self.job.chunks[i].frames));
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

/// Probes the source at `url` and plans its chunks (blocking) for `slots` chunk slots.
fn probe(url: &str, vod: &crate::config::VodConfig, slots: u32) -> Result<Probed, String> {
    #[cfg(feature = "transcode")]
    {
        let mut source = super::source::Source::open(super::source::SourceAt::Url(url.into()))?;
        let p = source.probe()?;
        let segment_ms = (vod.segment_secs * 1000.0) as i64;
        let duration_ms = (p.info.duration * 1000.0) as i64;
        // Chunks no shorter than a segment.
        let chunk_ms = fit_chunk_ms(duration_ms, (vod.chunk_secs * 1000.0) as i64, slots, segment_ms);
        let chunks = plan_chunks(&p.pictures, p.end_ms, chunk_ms, segment_ms);
        Ok(Probed { info: p.info, chunks })
    }
    #[cfg(not(feature = "transcode"))]
    {
        let _ = (url, vod, slots, plan_chunks, fit_chunk_ms);
        Err("this strom was built without the `transcode` feature (no FFmpeg)".into())
    }
}
