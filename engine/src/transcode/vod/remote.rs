//! VOD jobs across the cluster: chunks encoded on other nodes ([`JobRequest`] over ractor_cluster).
//!
//! - **The job's node** sends a chunk ([`JobRequest::Chunk`], answered when it is encoded), asks its progress every
//!   second ([`JobRequest::Progress`]: also how a lost worker is noticed), and stops it ([`JobRequest::Cancel`]).
//! - **A worker** encodes it like a chunk of its own. With S3 it reads the source by a presigned URL and writes the
//!   output to the bucket itself. With local volumes it reads the source from the job's node in ranges
//!   ([`OwnerFile`], [`JobRequest::Read`]: only what FFmpeg asks for, the chunk's bytes and the container's index,
//!   never a whole copy) and puts each output object there ([`JobRequest::Put`]).
//! - **The circuit breaker** ([`Breakers`]): a node whose chunks fail `vod.breaker_failures` times in a row gets
//!   none for `vod.breaker_secs`.
//!
//! A node answers only for the jobs it runs: a read is of a running job's source, a put under a running job's
//! rungs.

use std::collections::HashMap;
use std::io::{Read, Seek, SeekFrom};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use prometheus::{IntCounter, IntGauge};
use tracing::{info, warn, Instrument};

use super::plan::ChunkOutput;
use super::{ChunkTask, Jobs, JobsInner, UploadError};
use crate::cluster::wire::{JobRequest, Request, Response};
use crate::cluster::{call, ClusterHandle};
use crate::metrics::Metrics;
use crate::storage::asset::Asset;

/// The error of a chunk handed back by a node that is shutting down (not counted against the chunk or the node).
pub const DRAINING: &str = "the node is shutting down";
/// Bytes asked per [`JobRequest::Read`].
const READ_PART: u32 = 1 << 20;
/// The largest object a [`JobRequest::Put`] carries (cluster frames are at most 64 MiB).
const MAX_PUT: usize = 48 << 20;
/// How long a read or put over the cluster may take.
const IO_TIMEOUT: Duration = Duration::from_secs(20);
/// How long the node holding a recording may take to remux it for a job asked for through another node.
const RECORDING_REMUX_TIMEOUT: Duration = Duration::from_secs(600);

fn api(status: u16, body: serde_json::Value) -> Response {
    Response::Api { status, body: Bytes::from(body.to_string()) }
}

fn error(status: u16, why: impl std::fmt::Display) -> Response {
    api(status, serde_json::json!({ "error": why.to_string() }))
}

impl Jobs {
    /// Clustering is on: chunks may go to other nodes, and this node encodes theirs.
    pub fn attach_cluster(&self, cluster: ClusterHandle) {
        let inner = self.inner.clone();
        cluster.set_job_host(Arc::new(move |req| {
            let inner = inner.clone();
            Box::pin(async move { inner.answer(req).await })
        }));
        let _ = self.inner.cluster.set(cluster);
    }

    /// The VOD side of this node's load: chunks encoding, waiting or not yet started by its jobs; its slots.
    pub fn load(&self) -> (u32, u32) {
        self.inner.vod_load()
    }

    /// The node is shutting down: chunks it encodes (for other nodes or its own jobs) are handed back, and it
    /// takes no more; waits (at most 3 s) until they have ended, so the answers reach their jobs before the
    /// node leaves the cluster.
    pub async fn drain(&self) {
        self.inner.drain();
        let started = Instant::now();
        while self.inner.busy.load(std::sync::atomic::Ordering::Relaxed) > 0
            && started.elapsed() < Duration::from_secs(3)
        {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        tokio::time::sleep(Duration::from_millis(100)).await; // the answers on their way out
    }
}

/// Asks every other node (concurrently, 3 s each); the 2xx answers' bodies, by node agent.
pub(super) async fn ask_all(inner: &JobsInner, req: JobRequest) -> Vec<(String, Bytes)> {
    let Some(cluster) = inner.cluster.get() else { return Vec::new() };
    let req = Request::Job(req);
    let asks = cluster.agents().into_iter().map(|agent| {
        let req = req.clone();
        async move {
            match call(&agent, &req, Duration::from_secs(3)).await {
                Some(Response::Api { status: 200..=299, body }) => Some((agent.get_id().to_string(), body)),
                _ => None,
            }
        }
    });
    futures_util::future::join_all(asks).await.into_iter().flatten().collect()
}

/// `{"live": bool, "job": {...}}` read back.
pub(super) fn live_job(body: &Bytes) -> Option<(bool, super::plan::Job)> {
    let v: serde_json::Value = serde_json::from_slice(body).ok()?;
    Some((v["live"].as_bool().unwrap_or(false), serde_json::from_value(v["job"].clone()).ok()?))
}

fn live_json(live: bool, job: &super::plan::Job) -> serde_json::Value {
    serde_json::json!({ "live": live, "job": job })
}

/// Sends `req` to every other node concurrently (each may take `timeout`) and returns the first API answer other
/// than 404 as soon as it comes: a node that stalls does not hold up the one that answered. `None` when every node
/// answered 404 or none answered.
async fn first_answer(cluster: &ClusterHandle, req: Request, timeout: Duration) -> Option<(u16, Bytes)> {
    use futures_util::StreamExt;
    let mut asks: futures_util::stream::FuturesUnordered<_> = cluster
        .agents()
        .into_iter()
        .map(|agent| {
            let req = req.clone();
            async move { call(&agent, &req, timeout).await }
        })
        .collect();
    while let Some(answer) = asks.next().await {
        match answer {
            Some(Response::Api { status, body }) if status != 404 => return Some((status, body)),
            _ => {}
        }
    }
    None
}

/// `cancel` or `retry` job `id` on the node that runs or holds it: `None` when no other node does.
pub(super) async fn act_elsewhere(
    inner: &JobsInner,
    id: &str,
    action: &str,
) -> Option<Result<super::plan::Job, (u16, String)>> {
    let cluster = inner.cluster.get()?;
    let req = Request::Job(JobRequest::Action { id: id.to_string(), action: action.to_string() });
    let (status, body) = first_answer(cluster, req, Duration::from_secs(5)).await?;
    Some(if (200..300).contains(&status) {
        serde_json::from_slice(&body).map_err(|e| (502, format!("a malformed answer from another node: {e}")))
    } else {
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
        Err((status, v["error"].as_str().unwrap_or("refused by another node").to_string()))
    })
}

/// Asks the other nodes to transcode recording `id` (held on one of their local volumes): the first answer other
/// than 404; `None` when no node holds it.
pub(super) async fn from_recording_elsewhere(
    inner: &JobsInner,
    id: &str,
    ladder: Vec<u32>,
) -> Option<Result<(Asset, super::plan::Job), UploadError>> {
    let cluster = inner.cluster.get()?;
    let req = Request::Job(JobRequest::FromRecording { id: id.to_string(), ladder });
    // The holder remuxes the recording before it answers (a copy, no re-encoding: a long recording takes a while,
    // as it would on this node); the others answer 404 at once, and one that stalls is not waited for.
    let (status, body) = first_answer(cluster, req, RECORDING_REMUX_TIMEOUT).await?;
    let v: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
    if (200..300).contains(&status) {
        let accepted = serde_json::from_value::<Asset>(v["asset"].clone())
            .and_then(|a| Ok((a, serde_json::from_value::<super::plan::Job>(v["job"].clone())?)));
        return Some(accepted.map_err(|e| UploadError::Storage(format!("a malformed answer from another node: {e}"))));
    }
    let why = v["error"].as_str().unwrap_or("refused by another node").to_string();
    Some(Err(match status {
        400 => UploadError::BadRequest(why),
        409 => UploadError::Conflict(why),
        _ => UploadError::Storage(why),
    }))
}

impl JobsInner {
    /// Answers another node's [`JobRequest`].
    async fn answer(self: Arc<Self>, req: JobRequest) -> Response {
        let jobs = Jobs { inner: self.clone() };
        match req {
            JobRequest::FromRecording { id, ladder } => match jobs.transcode_recording_here(&id, ladder).await {
                Ok((asset, job)) => api(202, serde_json::json!({ "asset": asset, "job": job.summary() })),
                Err(UploadError::NoStorage(_)) => error(404, "no storage here"),
                Err(e) => error(e.status(), e),
            },
            JobRequest::Get { id } => match jobs.local_get(&id).await {
                Some((live, job)) => api(200, live_json(live, &job)),
                None => error(404, "no such job here"),
            },
            JobRequest::List => match jobs.local_list().await {
                Ok(list) => api(200, serde_json::Value::Array(list.iter().map(|(l, j)| live_json(*l, j)).collect())),
                Err(e) => error(503, e),
            },
            JobRequest::Action { id, action } => {
                let r = match action.as_str() {
                    "cancel" if jobs.live(&id).is_some() => jobs.local_cancel(&id).await,
                    "retry" if jobs.live(&id).is_some() || jobs.read(&id).await.is_some() => {
                        jobs.local_retry(&id).await
                    }
                    _ => return error(404, "not here"),
                };
                match r {
                    Ok(job) => api(200, serde_json::to_value(job.summary()).unwrap_or_default()),
                    Err((status, why)) => error(status, why),
                }
            }
            JobRequest::Chunk { task } => {
                let task: ChunkTask = match serde_json::from_slice(&task) {
                    Ok(t) => t,
                    Err(e) => return error(400, format!("not a chunk task: {e}")),
                };
                if self.draining.load(std::sync::atomic::Ordering::Relaxed) {
                    return error(503, DRAINING);
                }
                let span = tracing::info_span!("vod_chunk", job = %task.job, chunk = task.index, attempt = task.attempt,
                                               owner = %task.owner, node = %self.config.node_name);
                info!(parent: &span, "encoding a chunk for another node");
                match self.run_chunk(task).instrument(span).await {
                    Ok(out) => api(200, serde_json::to_value(out).unwrap_or_default()),
                    Err(why) if why == DRAINING => error(503, why),
                    Err(why) => error(500, why),
                }
            }
            JobRequest::Progress { job, index, attempt } => match self.progress_of(&job, index, attempt) {
                Some(frames) => api(200, serde_json::json!({ "frames": frames })),
                None => error(404, "not encoding that chunk"),
            },
            JobRequest::Cancel { job, index } => {
                self.cancel_chunk(&job, index);
                api(200, serde_json::json!({}))
            }
            JobRequest::Read { object, offset, max } => {
                if !self.is_running_source(&object) {
                    return Response::Range(None);
                }
                let Ok(storage) = self.recordings.store() else { return Response::Range(None) };
                match storage.get_range(&object, offset, u64::from(max.min(READ_PART))).await {
                    Ok(r) => Response::Range(r),
                    Err(e) => {
                        warn!(object, error = %e, "cannot read a job's source for another node");
                        Response::Range(None)
                    }
                }
            }
            JobRequest::Put { object, data } => {
                if !self.is_running_output(&object) {
                    return error(404, format!("no running job writes {object:?} here"));
                }
                let Ok(storage) = self.recordings.store() else { return error(503, "no storage") };
                match storage.put(&object, data).await {
                    Ok(()) => api(200, serde_json::json!({})),
                    Err(e) => error(502, e),
                }
            }
        }
    }

    /// `object` is the source of a job running here.
    fn is_running_source(&self, object: &str) -> bool {
        let running = self.running.lock().unwrap_or_else(|e| e.into_inner());
        running.values().any(|r| r.status.lock().unwrap_or_else(|e| e.into_inner()).source.object == object)
    }

    /// `object` is `vod/<asset>/<rung>/<file>` of a job running here, with a plain file name.
    fn is_running_output(&self, object: &str) -> bool {
        let mut parts = object.split('/');
        let (Some(root), Some(asset), Some(rung), Some(file), None) =
            (parts.next(), parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return false;
        };
        let plain = !file.starts_with('.')
            && file.len() <= 128
            && file.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b));
        if root != crate::storage::asset::ROOT || !plain {
            return false;
        }
        let running = self.running.lock().unwrap_or_else(|e| e.into_inner());
        running.values().any(|r| {
            let job = r.status.lock().unwrap_or_else(|e| e.into_inner());
            job.asset == asset && job.rungs.iter().any(|x| x.name == rung)
        })
    }
}

/// Sends chunk `task` to `node` and waits for its outputs (at most `timeout`; the job watches its progress
/// meanwhile and gives up on it sooner if the node is lost).
pub async fn send_chunk(
    cluster: &ClusterHandle,
    node: &str,
    task: &ChunkTask,
    timeout: Duration,
) -> Result<ChunkOutput, String> {
    let agent = cluster.agent_of(node).ok_or_else(|| format!("node {node} is not connected"))?;
    let json = serde_json::to_vec(task).map_err(|e| e.to_string())?;
    match call(&agent, &Request::Job(JobRequest::Chunk { task: Bytes::from(json) }), timeout).await {
        Some(Response::Api { status: 200, body }) => {
            serde_json::from_slice(&body).map_err(|e| format!("node {node} answered a malformed chunk output: {e}"))
        }
        Some(Response::Api { status: 503, .. }) => Err(DRAINING.into()),
        Some(Response::Api { body, .. }) => {
            let why = serde_json::from_slice::<serde_json::Value>(&body)
                .ok()
                .and_then(|v| v["error"].as_str().map(str::to_string))
                .unwrap_or_else(|| String::from_utf8_lossy(&body).into_owned());
            Err(format!("on {node}: {why}"))
        }
        _ => Err(format!("node {node} did not answer (lost, or past the chunk's time limit)")),
    }
}

/// Pictures `node` has done of attempt `attempt` of chunk `index`: `None` when it does not answer or does not
/// run it.
pub async fn progress_on(cluster: &ClusterHandle, node: &str, job: &str, index: u32, attempt: u32) -> Option<u64> {
    let agent = cluster.agent_of(node)?;
    let req = Request::Job(JobRequest::Progress { job: job.into(), index, attempt });
    match call(&agent, &req, Duration::from_secs(2)).await? {
        Response::Api { status: 200, body } => {
            serde_json::from_slice::<serde_json::Value>(&body).ok()?["frames"].as_u64()
        }
        _ => None,
    }
}

/// Asks `node` to stop chunk `index` of `job` (best effort).
pub async fn cancel_on(cluster: &ClusterHandle, node: &str, job: &str, index: u32) {
    if let Some(agent) = cluster.agent_of(node) {
        let _ =
            call(&agent, &Request::Job(JobRequest::Cancel { job: job.into(), index }), Duration::from_secs(2)).await;
    }
}

/// Puts `data` at `object` on the job's node `owner`.
pub async fn put_to(cluster: &ClusterHandle, owner: &str, object: String, data: Bytes) -> Result<(), String> {
    if data.len() > MAX_PUT {
        return Err(format!("{object}: {} bytes, more than a cluster message carries ({MAX_PUT})", data.len()));
    }
    let agent = cluster.agent_of(owner).ok_or_else(|| format!("the job's node {owner} is not connected"))?;
    match call(&agent, &Request::Job(JobRequest::Put { object: object.clone(), data }), IO_TIMEOUT).await {
        Some(Response::Api { status: 200, .. }) => Ok(()),
        Some(Response::Api { status, body }) => {
            Err(format!("{owner} refused {object} ({status}): {}", String::from_utf8_lossy(&body)))
        }
        _ => Err(format!("{owner} did not store {object}")),
    }
}

/// The job's source on its node, read over the cluster in 1 MiB ranges as FFmpeg asks (`Read + Seek`, for
/// [`super::source::SourceAt::Stream`]); the last ranges read are kept, since demuxers read around one place.
pub struct OwnerFile {
    cluster: ClusterHandle,
    owner: String,
    object: String,
    handle: tokio::runtime::Handle,
    pos: u64,
    size: Option<u64>,
    /// Recently read ranges: (offset, bytes), newest last.
    cache: Vec<(u64, Bytes)>,
    /// Bytes fetched, for the log.
    fetched: u64,
}

impl OwnerFile {
    /// The source `object` of a job on node `owner`; reads block on `handle` (call from a plain thread).
    pub fn new(cluster: ClusterHandle, owner: String, object: String, handle: tokio::runtime::Handle) -> OwnerFile {
        OwnerFile { cluster, owner, object, handle, pos: 0, size: None, cache: Vec::new(), fetched: 0 }
    }

    fn fetch(&mut self, offset: u64) -> std::io::Result<(u64, Bytes)> {
        let io = |why: String| std::io::Error::other(why);
        let agent = self.cluster.agent_of(&self.owner).ok_or_else(|| io(format!("{} is not connected", self.owner)))?;
        let req = Request::Job(JobRequest::Read { object: self.object.clone(), offset, max: READ_PART });
        match self.handle.block_on(call(&agent, &req, IO_TIMEOUT)) {
            Some(Response::Range(Some((size, data)))) => {
                self.fetched += data.len() as u64;
                Ok((size, data))
            }
            Some(Response::Range(None)) => Err(io(format!("{} no longer has {}", self.owner, self.object))),
            _ => Err(io(format!("{} did not answer a read of {}", self.owner, self.object))),
        }
    }

    fn size(&mut self) -> std::io::Result<u64> {
        if let Some(s) = self.size {
            return Ok(s);
        }
        let (size, data) = self.fetch(0)?;
        self.size = Some(size);
        self.keep(0, data);
        Ok(size)
    }

    fn keep(&mut self, offset: u64, data: Bytes) {
        if self.cache.len() >= 4 {
            self.cache.remove(0);
        }
        self.cache.push((offset, data));
    }
}

impl Read for OwnerFile {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let pos = self.pos;
        let hit = self.cache.iter().find(|(o, d)| *o <= pos && pos < *o + d.len() as u64).cloned();
        let (start, data) = match hit {
            Some(h) => h,
            None => {
                if self.size.is_some_and(|s| pos >= s) {
                    return Ok(0);
                }
                let start = pos - pos % u64::from(READ_PART);
                let (size, data) = self.fetch(start)?;
                self.size = Some(size);
                if data.is_empty() || start + data.len() as u64 <= pos {
                    return Ok(0);
                }
                self.keep(start, data.clone());
                (start, data)
            }
        };
        let at = (pos - start) as usize;
        let n = buf.len().min(data.len() - at);
        buf[..n].copy_from_slice(&data[at..at + n]);
        self.pos += n as u64;
        Ok(n)
    }
}

impl Seek for OwnerFile {
    fn seek(&mut self, to: SeekFrom) -> std::io::Result<u64> {
        let target = match to {
            SeekFrom::Start(n) => Some(n),
            SeekFrom::Current(d) => self.pos.checked_add_signed(d),
            SeekFrom::End(d) => self.size()?.checked_add_signed(d),
        };
        self.pos = target.ok_or_else(|| std::io::Error::new(std::io::ErrorKind::InvalidInput, "seek before 0"))?;
        Ok(self.pos)
    }
}

impl Drop for OwnerFile {
    fn drop(&mut self) {
        tracing::debug!(owner = %self.owner, object = %self.object, fetched = self.fetched, size = ?self.size,
                        "source read over the cluster");
    }
}

/// One node's breaker.
#[derive(Default)]
struct Breaker {
    failures: u32,
    open_until: Option<Instant>,
}

/// The circuit breaker of the chunks this node's jobs send: per node, failures in a row; `vod.breaker_failures`
/// of them and the node gets no chunk for `vod.breaker_secs` (`strom_vod_breaker_trips_total`,
/// `strom_vod_breakers_open`).
pub struct Breakers {
    nodes: Mutex<HashMap<String, Breaker>>,
    trips: IntCounter,
    open: IntGauge,
}

impl Breakers {
    pub(super) fn new(metrics: &Metrics) -> Breakers {
        Breakers {
            nodes: Mutex::new(HashMap::new()),
            trips: metrics.register(
                IntCounter::new(
                    "strom_vod_breaker_trips_total",
                    "Times a node got no VOD chunks for vod.breaker_secs after vod.breaker_failures failures in a row.",
                )
                .expect("valid metric"),
            ),
            open: metrics.register(
                IntGauge::new("strom_vod_breakers_open", "Nodes this node's VOD jobs send no chunks to now.")
                    .expect("valid metric"),
            ),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Breaker>> {
        self.nodes.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn count_open(&self, nodes: &HashMap<String, Breaker>) {
        let now = Instant::now();
        self.open.set(nodes.values().filter(|b| b.open_until.is_some_and(|t| t > now)).count() as i64);
    }

    /// `node` may get chunks.
    pub fn closed(&self, node: &str) -> bool {
        let mut nodes = self.lock();
        let open = nodes.get(node).and_then(|b| b.open_until).is_some_and(|t| t > Instant::now());
        self.count_open(&nodes);
        if !open {
            if let Some(b) = nodes.get_mut(node) {
                b.open_until = None;
            }
        }
        !open
    }

    /// A chunk on `node` was done.
    pub fn success(&self, node: &str) {
        let mut nodes = self.lock();
        nodes.remove(node);
        self.count_open(&nodes);
    }

    /// A chunk on `node` failed: after `limit` in a row it gets none for `pause`.
    pub fn failure(&self, node: &str, limit: u32, pause: Duration, why: &str) {
        let mut nodes = self.lock();
        let b = nodes.entry(node.to_string()).or_default();
        b.failures += 1;
        if b.failures >= limit {
            b.failures = 0;
            b.open_until = Some(Instant::now() + pause);
            self.trips.inc();
            warn!(
                node,
                pause_secs = pause.as_secs_f64(),
                last_error = why,
                "VOD circuit breaker open: {limit} chunk failures in a row on this node; it gets no chunks for a while"
            );
        }
        self.count_open(&nodes);
    }
}
