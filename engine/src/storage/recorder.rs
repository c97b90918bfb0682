//! The recordings of one node, and the VOD assets on storage.
//!
//! A recording is a tokio task per recorded stream (not an actor: it owns nothing another part of strom sends
//! to; it only reads). It follows the stream's published [`HlsView`] from the segment being made when it
//! starts, and writes every finished segment (and each new init segment) to storage under the names of
//! [`super::asset`]. Its VOD playlist is rewritten as segments land (less often once it is long: at most 2 % of
//! the media bytes), its `asset.json` at least every [`ASSET_EVERY`]. A reconnect within the grace is the same
//! stream, so the same recording goes on, with a discontinuity.
//!
//! Faults: a write that fails after its retries leaves the segment queued ([`MAX_PENDING_BYTES`] at most; the
//! oldest are dropped beyond that and the asset ends `partial`, with the reason); the queue is retried every
//! [`RETRY_EVERY`], so recording resumes when storage comes back. The live stream never waits for any of this.
//! A recording whose node died stays `recording` in its `asset.json`; readers list it as `partial` (its node is
//! this one and it is not running, or it has not written for [`STALE_AFTER`]) and its playlist is rebuilt from
//! the segment objects.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use prometheus::{IntCounter, IntCounterVec, IntGauge, Opts};
use ractor::ActorRef;
use tokio::sync::watch;
use tracing::{info, warn, Instrument};

use super::asset::{
    self, asset_dir, asset_json, entries_of, init_name, parse_rfc3339, render_playlist, Asset, AssetState, Rendition,
    SegmentEntry,
};
use super::{Storage, StorageError};
use crate::cluster::{ClusterHandle, RemoteMsg};
use crate::config::Config;
use crate::formats::playlist::rfc3339_millis;
use crate::formats::StreamKey;
use crate::metrics::Metrics;
use crate::stream::segmenter::{FinishedSegment, HlsView};
use crate::stream::{StreamHandle, Streams};

/// Segment bytes a recording may hold while storage fails; beyond it the oldest are dropped.
pub const MAX_PENDING_BYTES: usize = 64 << 20;
/// How often queued segments are tried again while storage fails.
pub const RETRY_EVERY: Duration = Duration::from_secs(2);
/// How often a recording rewrites its `asset.json` (duration, bytes) at the least.
pub const ASSET_EVERY: Duration = Duration::from_secs(10);
/// A `recording` asset that has not been written for this long (on another node) is listed as `partial`.
pub const STALE_AFTER: Duration = Duration::from_secs(60);
/// The playlist is rewritten once the media written since its last write is this many times its size.
const PLAYLIST_RATIO: usize = 50;
/// The one rendition recorded so far.
const SOURCE: &str = "source";

/// Why a recording could not start or stop.
#[derive(Debug, thiserror::Error)]
pub enum RecordError {
    /// Storage could not be opened.
    #[error("storage is unavailable: {0}")]
    NoStorage(String),
    /// No live stream of that key is owned by this node.
    #[error("no live stream {0} on this node")]
    NotLive(String),
    /// It is being recorded already.
    #[error("{} is being recorded already (asset {})", .0.stream, .0.id)]
    Already(Box<Asset>),
    /// It is not being recorded.
    #[error("{0} is not being recorded")]
    NotRecording(String),
    /// Storage failed.
    #[error(transparent)]
    Storage(#[from] StorageError),
}

/// Recording metrics.
struct RecordMetrics {
    bytes: IntCounter,
    segments: IntCounterVec,
    active: IntGauge,
}

/// A recording running on this node.
struct Active {
    asset: Arc<Mutex<Asset>>,
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

struct Inner {
    /// Opened at the first use (at start when recording is configured), so a node that never records creates
    /// no directory.
    storage: std::sync::OnceLock<Result<Storage, String>>,
    node_metrics: Arc<Metrics>,
    config: Arc<Config>,
    streams: Streams,
    metrics: RecordMetrics,
    active: Mutex<HashMap<StreamKey, Active>>,
    /// The cluster, when clustering is on (see [`super::api`]).
    cluster: std::sync::OnceLock<ClusterHandle>,
    /// Which node's agent holds an asset on its local volume (learnt by asking every node).
    holders: Mutex<HashMap<String, ActorRef<RemoteMsg>>>,
}

/// The recordings of this node and its view of the assets on storage (cheap to clone).
#[derive(Clone)]
pub struct Recordings {
    inner: Arc<Inner>,
}

impl Recordings {
    /// The node's recordings. Storage is opened now when recording is configured (a failure is logged and
    /// reported by every recording request; the node runs on), else at its first use. The retention sweep runs
    /// when `record.max_age` or `record.max_bytes` is set.
    pub fn new(config: Arc<Config>, streams: Streams, metrics: Arc<Metrics>) -> Recordings {
        let counter_vec = |n: &str, h: &str, l: &[&str]| {
            metrics.register(IntCounterVec::new(Opts::new(n, h), l).expect("valid metric"))
        };
        let m = RecordMetrics {
            bytes: metrics.register(
                IntCounter::new("strom_record_bytes_total", "Bytes recorded to storage.").expect("valid metric"),
            ),
            segments: counter_vec(
                "strom_record_segments_total",
                "Recorded segments by result: written, failed (a write that failed, retried later), lost (dropped \
                 while storage failed).",
                &["result"],
            ),
            active: metrics
                .register(IntGauge::new("strom_recordings_active", "Recordings running.").expect("valid metric")),
        };
        for r in ["written", "failed", "lost"] {
            m.segments.with_label_values(&[r]);
        }
        let rec = Recordings {
            inner: Arc::new(Inner {
                storage: std::sync::OnceLock::new(),
                node_metrics: metrics,
                config,
                streams,
                metrics: m,
                active: Mutex::new(HashMap::new()),
                cluster: std::sync::OnceLock::new(),
                holders: Mutex::new(HashMap::new()),
            }),
        };
        let record = &rec.inner.config.record;
        if record.enabled || record.apps.values().any(|a| a.enabled == Some(true)) {
            let _ = rec.storage();
        }
        if rec.inner.config.record.max_age().is_some() || rec.inner.config.record.max_bytes > 0 {
            let r = rec.clone();
            tokio::spawn(async move {
                let mut tick = tokio::time::interval(Duration::from_secs(60));
                loop {
                    tick.tick().await;
                    r.sweep().await;
                }
            });
        }
        rec
    }

    /// Clustering is on: other nodes' API requests and VOD reads are answered from here, and this node's go to
    /// the stream's owner or the asset's holder.
    pub fn attach_cluster(&self, cluster: ClusterHandle) {
        let me = self.clone();
        cluster.set_vod_host(Arc::new(move |req| {
            let me = me.clone();
            Box::pin(async move { me.answer(req).await })
        }));
        let _ = self.inner.cluster.set(cluster);
    }

    /// The cluster, if clustering is on.
    pub(super) fn cluster(&self) -> Option<&ClusterHandle> {
        self.inner.cluster.get()
    }

    /// Every node reads the same store (S3): no node needs another to read an asset.
    pub(super) fn shared_storage(&self) -> bool {
        self.inner.config.storage.url.is_some()
    }

    /// The holder of an asset learnt earlier.
    pub(super) fn holder(&self, id: &str) -> Option<ActorRef<RemoteMsg>> {
        self.inner.holders.lock().unwrap_or_else(|e| e.into_inner()).get(id).cloned()
    }

    /// Remembers (or, with `None`, forgets) the node holding an asset.
    pub(super) fn set_holder(&self, id: &str, agent: Option<ActorRef<RemoteMsg>>) {
        let mut h = self.inner.holders.lock().unwrap_or_else(|e| e.into_inner());
        match agent {
            Some(a) => {
                if h.len() > 10_000 {
                    h.clear();
                }
                h.insert(id.to_string(), a);
            }
            None => {
                h.remove(id);
            }
        }
    }

    fn storage(&self) -> Result<&Storage, RecordError> {
        let inner = &self.inner;
        let opened = inner.storage.get_or_init(|| {
            Storage::open(&inner.config.storage, &inner.node_metrics).map_err(|e| {
                warn!(error = %e, "storage unavailable: recording and VOD are off");
                e.to_string()
            })
        });
        opened.as_ref().map_err(|e| RecordError::NoStorage(e.clone()))
    }

    /// A publish of `key` started on this node: recorded when `record` says so for its application.
    pub fn published(&self, key: &StreamKey) {
        if !self.inner.config.record.enabled_for(key.app()) {
            return;
        }
        let r = self.clone();
        let key = key.clone();
        tokio::spawn(async move {
            match r.start(&key).await {
                Ok(a) => info!(stream = %key, asset = %a.id, "recording"),
                Err(RecordError::Already(_)) => {} // a reconnect within the grace: the recording goes on
                Err(e) => warn!(stream = %key, error = %e, "cannot record"),
            }
        });
    }

    /// Starts recording `key` (a live stream owned by this node) from the segment being made now.
    pub async fn start(&self, key: &StreamKey) -> Result<Asset, RecordError> {
        let storage = self.storage()?.clone();
        let handle = self.inner.streams.find_local(key).await.ok_or_else(|| RecordError::NotLive(key.to_string()))?;
        let view = handle.hls_watch().ok_or_else(|| RecordError::NotLive(key.to_string()))?;
        if view.borrow().ended {
            return Err(RecordError::NotLive(key.to_string()));
        }
        let mut active = self.inner.active.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(a) = active.get(key) {
            if !a.task.is_finished() {
                let asset = a.asset.lock().unwrap_or_else(|e| e.into_inner()).clone();
                return Err(RecordError::Already(Box::new(asset)));
            }
        }
        let mut asset = Asset::new(key, &self.inner.config.node_name, SystemTime::now());
        asset.renditions.push(Rendition {
            name: SOURCE.into(),
            width: None,
            height: None,
            segments: 0,
            bytes: 0,
            duration: 0.0,
        });
        let shared = Arc::new(Mutex::new(asset.clone()));
        let (stop, stop_rx) = watch::channel(false);
        let job = Job {
            storage,
            handle,
            asset: shared.clone(),
            metrics: RecordMetricsRef(self.inner.clone()),
            dir: format!("{}/{SOURCE}", asset_dir(&asset.id)),
        };
        let span = tracing::info_span!("record", stream = %key, asset = %asset.id, node = %self.inner.config.node_name);
        let task = tokio::spawn(job.run(view, stop_rx).instrument(span));
        active.insert(key.clone(), Active { asset: shared, stop, task });
        self.inner.metrics.active.inc();
        Ok(asset)
    }

    /// Stops recording `key` at its last finished segment; the asset once its playlist and state are written.
    pub async fn stop(&self, key: &StreamKey) -> Result<Asset, RecordError> {
        let a = self.inner.active.lock().unwrap_or_else(|e| e.into_inner()).remove(key);
        let Some(a) = a.filter(|a| !a.task.is_finished()) else {
            return Err(RecordError::NotRecording(key.to_string()));
        };
        let _ = a.stop.send(true);
        let _ = tokio::time::timeout(Duration::from_secs(30), a.task).await;
        let asset = a.asset.lock().unwrap_or_else(|e| e.into_inner()).clone();
        Ok(asset)
    }

    /// Waits (at most `within`) for every recording to write its last segments, playlist and state: the node's
    /// streams have ended (graceful shutdown).
    pub async fn finish(&self, within: Duration) {
        let deadline = Instant::now() + within;
        loop {
            let running = {
                let active = self.inner.active.lock().unwrap_or_else(|e| e.into_inner());
                active.values().filter(|a| !a.task.is_finished()).count()
            };
            if running == 0 || Instant::now() >= deadline {
                if running > 0 {
                    warn!(running, "shutdown: recordings still writing are left partial");
                }
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The asset a recording running here holds (fresher than its `asset.json`).
    fn running(&self, id: &str) -> Option<(StreamKey, Asset)> {
        let active = self.inner.active.lock().unwrap_or_else(|e| e.into_inner());
        active.iter().find_map(|(k, a)| {
            let asset = a.asset.lock().unwrap_or_else(|e| e.into_inner());
            (asset.id == id && !a.task.is_finished()).then(|| (k.clone(), asset.clone()))
        })
    }

    /// Every asset on storage, newest first.
    pub async fn list(&self) -> Result<Vec<Asset>, RecordError> {
        let storage = self.storage()?;
        let mut out = Vec::new();
        for id in storage.folders(asset::ROOT).await? {
            if let Some(a) = self.get(&id).await? {
                out.push(a);
            }
        }
        out.sort_by(|a, b| b.started.cmp(&a.started).then_with(|| a.id.cmp(&b.id)));
        Ok(out)
    }

    /// One asset; a recording cut short is listed as `partial` (see the module docs).
    pub async fn get(&self, id: &str) -> Result<Option<Asset>, RecordError> {
        if !asset::valid_id(id) {
            return Ok(None);
        }
        if let Some((_, a)) = self.running(id) {
            return Ok(Some(a));
        }
        let storage = self.storage()?;
        let Some(bytes) = storage.get(&asset_json(id)).await? else { return Ok(None) };
        let Ok(mut a) = serde_json::from_slice::<Asset>(&bytes) else {
            warn!(asset = id, "unreadable asset.json: skipped");
            return Ok(None);
        };
        if a.state == AssetState::Recording {
            let updated = parse_rfc3339(&a.updated).unwrap_or(SystemTime::UNIX_EPOCH);
            let stale = SystemTime::now().duration_since(updated).unwrap_or_default() > STALE_AFTER;
            if a.node == self.inner.config.node_name || stale {
                a.state = AssetState::Partial;
                a.reason = Some(format!("recording stopped at {} (its node {} stopped)", a.updated, a.node));
            }
        }
        Ok(Some(a))
    }

    /// Deletes an asset (stopping its recording first); `false` if there is none.
    pub async fn delete(&self, id: &str) -> Result<bool, RecordError> {
        if let Some((key, _)) = self.running(id) {
            let _ = self.stop(&key).await;
        }
        let Some(_) = self.get(id).await? else { return Ok(false) };
        self.storage()?.delete_prefix(&asset_dir(id)).await?;
        info!(asset = id, "asset deleted");
        Ok(true)
    }

    /// The playlist players load at `/vod/{id}/index.m3u8`: the source rendition's, with URIs into its folder;
    /// for a recording cut short, rebuilt from its segment objects and ended.
    pub async fn playlist(&self, id: &str) -> Result<Option<Bytes>, RecordError> {
        let Some(a) = self.get(id).await? else { return Ok(None) };
        let Some(r) = a.renditions.first() else { return Ok(None) };
        let storage = self.storage()?;
        let dir = format!("{}/{}", asset_dir(id), r.name);
        let prefix = format!("{}/", r.name);
        let started = parse_rfc3339(&a.started);
        let text = match a.state {
            AssetState::Recording | AssetState::Done => match storage.get(&format!("{dir}/index.m3u8")).await? {
                Some(t) => prefixed(&String::from_utf8_lossy(&t), &prefix),
                None if a.state == AssetState::Recording => render_playlist(&[], false, &prefix, started),
                None => return Ok(None),
            },
            AssetState::Partial | AssetState::Failed => {
                let names = storage.list(&dir).await?;
                render_playlist(&entries_of(names.iter().map(|(n, _)| n.as_str())), true, &prefix, started)
            }
        };
        Ok(Some(Bytes::from(text)))
    }

    /// A file of an asset's rendition (segment, init segment, playlist).
    pub async fn file(&self, id: &str, rendition: &str, name: &str) -> Result<Option<Bytes>, RecordError> {
        if !asset::valid_id(id) || !asset::valid_id(rendition) || !valid_file(name) {
            return Ok(None);
        }
        Ok(self.storage()?.get(&format!("{}/{rendition}/{name}", asset_dir(id))).await?)
    }

    /// The source rendition as one fragmented MP4 file (its init segment, then every segment: a remux, no
    /// re-encode), as the files to send in order (`<rendition>/<name>`) with their sizes; `Err` text when there is none to make (no
    /// segment, MPEG-TS, or codec changes that need several init segments).
    pub async fn mp4_parts(&self, id: &str) -> Result<Option<Result<Mp4Export, String>>, RecordError> {
        let Some(a) = self.get(id).await? else { return Ok(None) };
        let Some(r) = a.renditions.first() else { return Ok(None) };
        let dir = format!("{}/{}", asset_dir(id), r.name);
        let names = self.storage()?.list(&dir).await?;
        let size = |n: &str| names.iter().find(|(m, _)| m == n).map_or(0, |(_, s)| *s);
        let entries = entries_of(names.iter().map(|(n, _)| n.as_str()));
        let mut inits: Vec<u32> = entries.iter().map(|e| e.init).collect();
        inits.dedup();
        match inits.as_slice() {
            [] => Ok(Some(Err("the recording has no segment".into()))),
            [0] => Ok(Some(Err("an MPEG-TS recording has no MP4 export; play its playlist".into()))),
            [n] => {
                let init = init_name(*n);
                let mut parts = vec![(format!("{}/{init}", r.name), size(&init))];
                parts.extend(entries.iter().map(|e| (format!("{}/{}", r.name, e.name()), size(&e.name()))));
                let duration = entries.iter().map(|e| e.duration_us).sum::<u64>() as f64 / 1e6;
                Ok(Some(Ok(Mp4Export { parts, duration })))
            }
            _ => Ok(Some(Err(format!(
                "the recording changed codec configuration {} times; play its playlist instead",
                inits.len() - 1
            )))),
        }
    }

    /// Deletes finished assets older than `record.max_age`, then the oldest finished ones while all assets
    /// together hold more than `record.max_bytes`.
    pub async fn sweep(&self) {
        let Ok(assets) = self.list().await else { return };
        let record = &self.inner.config.record;
        let now = SystemTime::now();
        let mut total: u64 = assets.iter().map(|a| a.bytes).sum();
        // Oldest first.
        for a in assets.iter().rev() {
            if a.state == AssetState::Recording {
                continue;
            }
            let age = parse_rfc3339(&a.started).and_then(|t| now.duration_since(t).ok()).unwrap_or_default();
            let too_old = record.max_age().is_some_and(|max| age > max);
            let too_big = record.max_bytes > 0 && total > record.max_bytes;
            if too_old || too_big {
                match self.delete(&a.id).await {
                    Ok(_) => {
                        info!(asset = %a.id, too_old, too_big, "retention: asset deleted");
                        total = total.saturating_sub(a.bytes);
                    }
                    Err(e) => warn!(asset = %a.id, error = %e, "retention: cannot delete"),
                }
            }
        }
    }
}

/// What `GET /vod/{id}.mp4` sends: the files, in order (`<rendition>/<name>`, the init segment first), with their
/// sizes, and the duration the init segment is made to declare ([`crate::formats::fmp4::with_duration`]).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Mp4Export {
    /// Files and sizes.
    pub parts: Vec<(String, u64)>,
    /// Seconds.
    pub duration: f64,
}

/// File names a rendition folder holds.
fn valid_file(name: &str) -> bool {
    name == "index.m3u8"
        || name.starts_with("init") && name.ends_with(".mp4") && asset::valid_id(&name[..name.len() - 4])
        || SegmentEntry::parse(name).is_some()
}

/// A rendition's playlist with every URI (segment lines and `EXT-X-MAP`) under `prefix`.
fn prefixed(text: &str, prefix: &str) -> String {
    let mut out = String::with_capacity(text.len() + text.lines().count() * prefix.len());
    for line in text.lines() {
        if let Some(uri) = line.strip_prefix("#EXT-X-MAP:URI=\"") {
            out.push_str("#EXT-X-MAP:URI=\"");
            out.push_str(prefix);
            out.push_str(uri);
        } else if !line.starts_with('#') && !line.is_empty() {
            out.push_str(prefix);
            out.push_str(line);
        } else {
            out.push_str(line);
        }
        out.push('\n');
    }
    out
}

/// The recording metrics, reached through the node's recordings.
struct RecordMetricsRef(Arc<Inner>);

/// One recording's task state.
struct Job {
    storage: Storage,
    handle: StreamHandle,
    asset: Arc<Mutex<Asset>>,
    metrics: RecordMetricsRef,
    /// `vod/<id>/source`.
    dir: String,
}

/// What the task has written and what waits.
#[derive(Default)]
struct Progress {
    entries: Vec<SegmentEntry>,
    /// Init segments written: live name and bytes, with their number here.
    inits: Vec<(Bytes, u32)>,
    pending: VecDeque<Arc<FinishedSegment>>,
    pending_bytes: usize,
    /// The next segment written gets a discontinuity (segments were lost before it).
    gap: bool,
    lost: u64,
    last_error: Option<String>,
    bytes: u64,
    duration_us: u64,
    since_playlist: usize,
    playlist_len: usize,
}

impl Job {
    async fn run(self, mut view: watch::Receiver<Arc<HlsView>>, mut stop: watch::Receiver<bool>) {
        let mut p = Progress::default();
        let mut next_msn = view.borrow().next_msn;
        let mut asset_written = Instant::now() - ASSET_EVERY;
        let ended = loop {
            let now = view.borrow_and_update().clone();
            let from = next_msn;
            for f in now.finished.iter().filter(|f| f.msn >= from) {
                if f.msn > next_msn && !p.entries.is_empty() {
                    p.lost += f.msn - next_msn;
                    p.gap = true;
                    self.metrics.0.metrics.segments.with_label_values(&["lost"]).inc_by(f.msn - next_msn);
                }
                p.pending_bytes += f.data.len();
                p.pending.push_back(f.clone());
                next_msn = f.msn + 1;
            }
            self.flush(&mut p).await;
            if now.ended && p.pending.is_empty() {
                break true;
            }
            if asset_written.elapsed() >= ASSET_EVERY {
                self.write_asset(&p, AssetState::Recording, None).await;
                asset_written = Instant::now();
            }
            let wait = if p.pending.is_empty() { ASSET_EVERY } else { RETRY_EVERY };
            tokio::select! {
                r = view.changed() => if r.is_err() {
                    // The segmenter is gone (its stream stopped): what it finished is all there is.
                    break now.ended;
                },
                _ = stop.changed() => break true,
                _ = tokio::time::sleep(wait) => {}
            }
        };
        // A last try for what is queued, then the final playlist and state.
        for _ in 0..3 {
            self.flush(&mut p).await;
            if p.pending.is_empty() {
                break;
            }
            tokio::time::sleep(RETRY_EVERY).await;
        }
        let lost = p.lost + p.pending.len() as u64;
        let (state, reason) = if p.entries.is_empty() {
            (AssetState::Failed, Some(p.last_error.clone().unwrap_or_else(|| "no segment was finished".into())))
        } else if lost > 0 {
            let why = p.last_error.clone().unwrap_or_else(|| "the recording fell behind".into());
            (AssetState::Partial, Some(format!("{lost} segments not stored: {why}")))
        } else if !ended {
            (AssetState::Partial, Some("the stream stopped unexpectedly".into()))
        } else {
            (AssetState::Done, None)
        };
        if !p.entries.is_empty() {
            let text = render_playlist(&p.entries, true, "", self.started());
            if let Err(e) = self.storage.put(&format!("{}/index.m3u8", self.dir), Bytes::from(text)).await {
                warn!(error = %e, "cannot write the final playlist (readers rebuild it from the segments)");
            }
        }
        self.write_asset(&p, state, reason.clone()).await;
        self.metrics.0.metrics.active.dec();
        info!(state = ?state, reason = reason.as_deref().unwrap_or(""), segments = p.entries.len(), "recording finished");
    }

    fn started(&self) -> Option<SystemTime> {
        parse_rfc3339(&self.asset.lock().unwrap_or_else(|e| e.into_inner()).started)
    }

    /// Writes what is queued, oldest first; stops at the first failure (tried again later).
    async fn flush(&self, p: &mut Progress) {
        let m = &self.metrics.0.metrics;
        while p.pending_bytes > MAX_PENDING_BYTES {
            let Some(f) = p.pending.pop_front() else { break };
            p.pending_bytes -= f.data.len();
            p.lost += 1;
            p.gap = true;
            m.segments.with_label_values(&["lost"]).inc();
        }
        let mut wrote = false;
        while let Some(f) = p.pending.front().cloned() {
            match self.write_segment(p, &f).await {
                Ok(()) => {
                    p.pending.pop_front();
                    p.pending_bytes -= f.data.len();
                    m.segments.with_label_values(&["written"]).inc();
                    wrote = true;
                    if p.last_error.take().is_some() {
                        info!("storage is back: recording resumes");
                    }
                }
                Err(e) => {
                    m.segments.with_label_values(&["failed"]).inc();
                    if p.last_error.is_none() {
                        warn!(error = %e, queued = p.pending.len(), "cannot store a segment; it stays queued");
                    }
                    p.last_error = Some(e.to_string());
                    break;
                }
            }
        }
        // The playlist follows the segments (less often once it is long, see the module docs).
        if wrote && p.since_playlist >= p.playlist_len * PLAYLIST_RATIO {
            let text = render_playlist(&p.entries, false, "", self.started());
            let len = text.len();
            if self.storage.put(&format!("{}/index.m3u8", self.dir), Bytes::from(text)).await.is_ok() {
                p.since_playlist = 0;
                p.playlist_len = len;
            }
        }
        let mut a = self.asset.lock().unwrap_or_else(|e| e.into_inner());
        a.reason = p.last_error.as_ref().map(|e| format!("storage failing, {} segments queued: {e}", p.pending.len()));
    }

    async fn write_segment(&self, p: &mut Progress, f: &FinishedSegment) -> Result<(), StorageError> {
        // The init segment this one needs: the same bytes keep their number (a reconnect with the same encoder
        // settings needs no new EXT-X-MAP).
        let init = match &f.init {
            None => 0,
            Some((_, bytes)) => match p.inits.iter().find(|(b, _)| b == bytes) {
                Some((_, n)) => *n,
                None => {
                    let n = p.inits.len() as u32 + 1;
                    self.storage.put(&format!("{}/{}", self.dir, init_name(n)), bytes.clone()).await?;
                    p.bytes += bytes.len() as u64;
                    self.metrics.0.metrics.bytes.inc_by(bytes.len() as u64);
                    p.inits.push((bytes.clone(), n));
                    n
                }
            },
        };
        let entry = SegmentEntry {
            index: p.entries.len() as u64,
            duration_us: (f.duration * 1e6).round() as u64,
            init,
            discontinuity: (f.discontinuity || p.gap) && !p.entries.is_empty(),
        };
        self.storage.put(&format!("{}/{}", self.dir, entry.name()), f.data.clone()).await?;
        p.gap = false;
        p.entries.push(entry);
        p.bytes += f.data.len() as u64;
        p.duration_us += entry.duration_us;
        p.since_playlist += f.data.len();
        self.metrics.0.metrics.bytes.inc_by(f.data.len() as u64);
        let mut a = self.asset.lock().unwrap_or_else(|e| e.into_inner());
        let duration = p.duration_us as f64 / 1e6;
        a.duration = duration;
        a.bytes = p.bytes;
        if let Some(r) = a.renditions.first_mut() {
            r.segments = p.entries.len() as u64;
            r.bytes = p.bytes;
            r.duration = duration;
        }
        Ok(())
    }

    async fn write_asset(&self, p: &Progress, state: AssetState, reason: Option<String>) {
        let need_size =
            self.asset.lock().unwrap_or_else(|e| e.into_inner()).renditions.first().is_some_and(|r| r.width.is_none());
        let info = if need_size { self.handle.info().await } else { None };
        let json = {
            let mut a = self.asset.lock().unwrap_or_else(|e| e.into_inner());
            if let (Some(i), Some(r)) = (info, a.renditions.first_mut()) {
                (r.width, r.height) = (i.width, i.height);
            }
            a.updated = rfc3339_millis(SystemTime::now());
            if state != AssetState::Recording {
                a.state = state;
                a.reason = reason;
            } else if p.last_error.is_none() {
                a.reason = None;
            }
            a.to_json()
        };
        let id = self.asset.lock().unwrap_or_else(|e| e.into_inner()).id.clone();
        if let Err(e) = self.storage.put(&asset_json(&id), Bytes::from(json)).await {
            warn!(error = %e, "cannot write asset.json");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rendition_playlists_are_served_from_the_asset_folder() {
        let text = "#EXTM3U\n#EXT-X-MAP:URI=\"init1.mp4\"\n#EXTINF:2.000000,\nseg0-2000000-i1.m4s\n#EXT-X-ENDLIST\n";
        assert_eq!(
            prefixed(text, "source/"),
            "#EXTM3U\n#EXT-X-MAP:URI=\"source/init1.mp4\"\n#EXTINF:2.000000,\nsource/seg0-2000000-i1.m4s\n\
             #EXT-X-ENDLIST\n"
        );
    }

    #[test]
    fn only_a_rendition_folder_s_own_names_are_files() {
        for ok in ["index.m3u8", "init1.mp4", "seg3-2000000-i1.m4s", "seg3-2000000-i0.ts"] {
            assert!(valid_file(ok), "{ok}");
        }
        for bad in ["../asset.json", "asset.json", "init1.mp4/../x", "seg.m4s", "index.m3u8x", ""] {
            assert!(!valid_file(bad), "{bad}");
        }
    }
}
