//! The recordings of one node, and the VOD assets on storage.
//!
//! A recording is a tokio task per recorded stream (not an actor: it owns nothing another part of strom sends
//! to; it only reads), with one *track* per rendition: the source, and each rung of the stream's ladder that runs
//! on this node (found as the rung streams appear, `app/KEY_<h>p`; a rung that comes back after a shed continues
//! its rendition with a discontinuity). A rung's track starts at its segment of the instant the source's first
//! recorded segment began, so every rendition covers the same time; with several renditions
//! `/vod/{id}/index.m3u8` is a master playlist over `<rendition>/index.m3u8`.
//!
//! A track follows its stream's published [`HlsView`] from the segment being made when it starts: a collector
//! task copies every finished segment into the track's queue (never waiting for storage), and the track writes
//! from it, under the names of [`super::asset`]. Each rendition's VOD playlist is rewritten as segments land (less
//! often once it is long: at most 2 % of the media bytes), `asset.json` at least every [`ASSET_EVERY`]. A
//! reconnect within the grace is the same stream, so the same recording goes on, with a discontinuity.
//!
//! Faults: a write that fails after its retries (or hangs) leaves the segment queued ([`MAX_PENDING_BYTES`] at
//! most; the oldest are dropped beyond that and the asset ends `partial`, with the reason); the queue is retried
//! every [`RETRY_EVERY`], so recording resumes when storage comes back. The live stream never waits for any of
//! this. A recording whose node died stays `recording` in its `asset.json`; readers list it as `partial` (its
//! node is this one and it is not running, or it has not written for [`STALE_AFTER`]) and its playlist is
//! rebuilt from the segment objects.
//!
//! DVR (`hls.dvr_window_secs`): the live playlist lists that much history, and every stream is recorded; the
//! tracks remember which object each live file name became, and serve as the registry's
//! [`DvrStore`] for the segments the segmenter no longer holds.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use futures_util::FutureExt;
use prometheus::{IntCounter, IntCounterVec, IntGauge, Opts};
use ractor::ActorRef;
use tokio::sync::watch;
use tracing::{info, warn, Instrument};

use super::asset::{
    self, asset_dir, asset_json, entries_of, init_name, parse_rfc3339, render_master, render_playlist, Asset,
    AssetState, Rendition, SegmentEntry,
};
use super::{Storage, StorageError, StorageMetrics};
use crate::cluster::wire::{Request, Response};
use crate::cluster::{call, remote_members, stream_group, ClusterHandle, RemoteMsg};
use crate::config::Config;
use crate::formats::playlist::{rfc3339_millis, segments_in};
use crate::formats::StreamKey;
use crate::metrics::Metrics;
use crate::stream::ports::{BoxFuture as PortFuture, DvrStore};
use crate::stream::segmenter::{FinishedSegment, HlsView};
use crate::stream::{StreamHandle, StreamInfo, Streams};

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
    storage_metrics: StorageMetrics,
    node_metrics: Arc<Metrics>,
    config: Arc<Config>,
    streams: Streams,
    metrics: RecordMetrics,
    active: Mutex<HashMap<StreamKey, Active>>,
    /// The cluster, when clustering is on (see [`super::api`]).
    cluster: std::sync::OnceLock<ClusterHandle>,
    /// Which node's agent holds an asset on its local volume (learnt by asking every node).
    holders: Mutex<HashMap<String, ActorRef<RemoteMsg>>>,
    /// The recorded streams' live names → objects, for DVR windows.
    dvr: Mutex<HashMap<StreamKey, Arc<Mutex<DvrNames>>>>,
    /// Told each finished recording's asset (the `on_record_done` hook; see [`Recordings::on_finished`]).
    finished: std::sync::OnceLock<FinishedHook>,
}

/// What is told about each finished recording (see [`Recordings::on_finished`]).
pub type FinishedHook = Box<dyn Fn(&StreamKey, &Asset) + Send + Sync>;

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
                storage_metrics: StorageMetrics::new(&metrics),
                node_metrics: metrics,
                config,
                streams,
                metrics: m,
                active: Mutex::new(HashMap::new()),
                cluster: std::sync::OnceLock::new(),
                holders: Mutex::new(HashMap::new()),
                dvr: Mutex::new(HashMap::new()),
                finished: std::sync::OnceLock::new(),
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

    /// Calls `hook` with the asset of every recording that finishes (`done`, `partial` or `failed`), once.
    pub fn on_finished(&self, hook: FinishedHook) {
        let _ = self.inner.finished.set(hook);
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

    /// The node's storage (opened at the first use), for the VOD jobs.
    pub fn store(&self) -> Result<Storage, RecordError> {
        self.storage().cloned()
    }

    fn storage(&self) -> Result<&Storage, RecordError> {
        let inner = &self.inner;
        let opened = inner.storage.get_or_init(|| {
            Storage::open(&inner.config.storage, inner.storage_metrics.clone()).map_err(|e| {
                warn!(error = %e, "storage unavailable: recording and VOD are off");
                e.to_string()
            })
        });
        opened.as_ref().map_err(|e| RecordError::NoStorage(e.clone()))
    }

    /// A publish of `key` started on this node: recorded when `record` says so for its application.
    pub fn published(&self, key: &StreamKey) {
        let dvr = self.inner.config.hls.dvr_window_secs > 0.0;
        if !self.inner.config.record.enabled_for(key.app()) && !dvr {
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
        asset.renditions.push(Rendition::new(SOURCE));
        let shared = Arc::new(Mutex::new(asset.clone()));
        let (stop, stop_rx) = watch::channel(false);
        let job = Job { storage, inner: self.inner.clone(), key: key.clone(), source: handle, asset: shared.clone() };
        let span = tracing::info_span!("record", stream = %key, asset = %asset.id, node = %self.inner.config.node_name);
        let task = tokio::spawn(job.run(stop_rx).instrument(span));
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

    /// The playlist players load at `/vod/{id}/index.m3u8`: a master playlist over the renditions when there
    /// are several with segments (the source first); else the source rendition's, with URIs into its folder.
    pub async fn playlist(&self, id: &str) -> Result<Option<Bytes>, RecordError> {
        let Some(a) = self.get(id).await? else { return Ok(None) };
        if a.renditions.iter().filter(|r| r.segments > 0).count() > 1 {
            return Ok(Some(Bytes::from(render_master(&a.renditions))));
        }
        let Some(r) = a.renditions.first() else { return Ok(None) };
        let text = self.rendition_playlist(&a, &r.name).await?;
        Ok(text.map(|t| Bytes::from(prefixed(&t, &format!("{}/", r.name)))))
    }

    /// A rendition's playlist (URIs beside it); for a recording cut short, rebuilt from its segment objects and
    /// ended.
    async fn rendition_playlist(&self, a: &Asset, rendition: &str) -> Result<Option<String>, RecordError> {
        if !a.renditions.iter().any(|r| r.name == rendition) {
            return Ok(None);
        }
        let storage = self.storage()?;
        let dir = format!("{}/{rendition}", asset_dir(&a.id));
        let started = parse_rfc3339(&a.started);
        Ok(match a.state {
            AssetState::Recording | AssetState::Done => match storage.get(&format!("{dir}/index.m3u8")).await? {
                Some(t) => Some(String::from_utf8_lossy(&t).into_owned()),
                None if a.state == AssetState::Recording => Some(render_playlist(&[], false, "", started)),
                None => None,
            },
            // An upload's renditions play once its job has written them all.
            AssetState::Processing => None,
            AssetState::Partial | AssetState::Failed => {
                let names = storage.list(&dir).await?;
                Some(render_playlist(&entries_of(names.iter().map(|(n, _)| n.as_str())), true, "", started))
            }
        })
    }

    /// A file of an asset's rendition (segment, init segment, playlist).
    pub async fn file(&self, id: &str, rendition: &str, name: &str) -> Result<Option<Bytes>, RecordError> {
        if !asset::valid_id(id) || !asset::valid_id(rendition) || !valid_file(name) {
            return Ok(None);
        }
        if name == "index.m3u8" {
            let Some(a) = self.get(id).await? else { return Ok(None) };
            return Ok(self.rendition_playlist(&a, rendition).await?.map(Bytes::from));
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
            // Retention is for recordings: uploads stay until deleted.
            if a.state == AssetState::Recording || a.kind != "recording" {
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

/// Live file names of a recorded stream → their objects, for its DVR window ([`DvrStore`]): the newest
/// [`DVR_NAMES`] only.
#[derive(Default)]
struct DvrNames {
    map: HashMap<String, String>,
    order: VecDeque<String>,
}

/// Live names remembered per recorded stream (a 24 h DVR window of 2 s segments, with their init segments).
const DVR_NAMES: usize = 50_000;

impl DvrNames {
    fn insert(&mut self, live: &str, object: String) {
        if self.map.insert(live.to_string(), object).is_none() {
            self.order.push_back(live.to_string());
        }
        while self.order.len() > DVR_NAMES {
            if let Some(old) = self.order.pop_front() {
                self.map.remove(&old);
            }
        }
    }
}

impl Recordings {
    /// Whether `key` names a rung of the ladder under the configuration (`app/KEY_<h>p`).
    fn is_rung(&self, key: &StreamKey) -> bool {
        key.is_rung_at(self.inner.config.transcode.rungs_for(key.app()).iter().map(|r| r.height))
    }

    /// A DVR file of stream `key` that a recording running here holds (see [`DvrStore`]).
    pub(super) async fn dvr_here(&self, key: &StreamKey, name: &str) -> Option<Bytes> {
        let names = self.inner.dvr.lock().unwrap_or_else(|e| e.into_inner()).get(key).cloned()?;
        let object = names.lock().unwrap_or_else(|e| e.into_inner()).map.get(name).cloned()?;
        self.storage().ok()?.get(&object).await.ok().flatten()
    }
}

impl DvrStore for Recordings {
    /// From a recording running here; else (clustering on) from the node recording the stream: the owner of a
    /// rung's source records the rung when the ladder runs on another node (see [`super::api`]).
    fn file<'a>(&'a self, key: &'a StreamKey, name: &'a str) -> PortFuture<'a, Option<Bytes>> {
        Box::pin(async move {
            match self.dvr_here(key, name).await {
                Some(b) => Some(b),
                // Only a rung is recorded elsewhere (by its source's owner, when its ladder runs here).
                None if self.is_rung(key) => self.dvr_elsewhere(key, name).await,
                None => None,
            }
        })
    }
}

/// One recording: its source track, and a track per rung of its ladder found on this node.
struct Job {
    storage: Storage,
    inner: Arc<Inner>,
    key: StreamKey,
    source: StreamHandle,
    asset: Arc<Mutex<Asset>>,
}

/// A rung of the ladder being recorded (or that was, until its stream went away).
struct RungTrack {
    height: u32,
    /// The rung stream's claim time: a new stream of the same rung (after a shed) is a new track.
    claimed_ms: u64,
    task: Option<tokio::task::JoinHandle<Progress>>,
    done: Option<Progress>,
}

impl Job {
    async fn run(self, mut stop: watch::Receiver<bool>) {
        let (track_stop, track_stop_rx) = watch::channel(false);
        let start: Arc<Mutex<Option<SystemTime>>> = Arc::default();
        let id = self.asset.lock().unwrap_or_else(|e| e.into_inner()).id.clone();
        let follow = Follow::Local(self.source.clone());
        let mut source_task = self.track(SOURCE, &self.key, follow, start.clone(), Progress::default(), &track_stop_rx);
        let mut rungs: Vec<RungTrack> = Vec::new();
        let mut asset_written = Instant::now() - ASSET_EVERY;
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        let mut source: Option<Progress> = None;
        let stopped = loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = stop.changed() => break true,
                p = &mut source_task => {
                    source = Some(p.unwrap_or_default());
                    break false;
                }
            }
            self.find_rungs(&mut rungs, &start, &track_stop_rx).await;
            if asset_written.elapsed() >= ASSET_EVERY {
                self.write_asset(&id, None).await;
                asset_written = Instant::now();
            }
        };
        if !stopped {
            // The source ended: its rungs end moments later (their encoder flushes); give them that long.
            let deadline = Instant::now() + Duration::from_secs(10);
            while Instant::now() < deadline && rungs.iter().any(|r| r.task.as_ref().is_some_and(|t| !t.is_finished())) {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
        let _ = track_stop.send(true);
        let source = match source {
            Some(p) => p,
            None => source_task.await.unwrap_or_default(),
        };
        let mut all = vec![source];
        for r in rungs {
            match (r.task, r.done) {
                (Some(t), _) => all.push(t.await.unwrap_or_default()),
                (None, Some(p)) => all.push(p),
                (None, None) => {}
            }
        }
        let lost: u64 = all.iter().map(|p| p.lost).sum();
        let last_error = all.iter().find_map(|p| p.last_error.clone());
        let (state, reason) = if all[0].entries.is_empty() {
            (AssetState::Failed, Some(last_error.unwrap_or_else(|| "no segment was finished".into())))
        } else if lost > 0 {
            let why = last_error.unwrap_or_else(|| "the recording fell behind".into());
            (AssetState::Partial, Some(format!("{lost} segments not stored: {why}")))
        } else if !all[0].ended {
            (AssetState::Partial, Some("the stream stopped unexpectedly".into()))
        } else {
            (AssetState::Done, None)
        };
        self.write_asset(&id, Some((state, reason.clone()))).await;
        self.inner.metrics.active.dec();
        if let Some(hook) = self.inner.finished.get() {
            let asset = self.asset.lock().unwrap_or_else(|e| e.into_inner()).clone();
            hook(&self.key, &asset);
        }
        let segments: usize = all.iter().map(|p| p.entries.len()).sum();
        info!(state = ?state, reason = reason.as_deref().unwrap_or(""), segments, renditions = all.len(), "recording finished");
    }

    /// Starts a track recording `follow`'s segments (stream `key`) as rendition `name`.
    fn track(
        &self,
        name: &str,
        key: &StreamKey,
        follow: Follow,
        start: Arc<Mutex<Option<SystemTime>>>,
        progress: Progress,
        stop: &watch::Receiver<bool>,
    ) -> tokio::task::JoinHandle<Progress> {
        let names = Arc::new(Mutex::new(DvrNames::default()));
        self.inner.dvr.lock().unwrap_or_else(|e| e.into_inner()).insert(key.clone(), names.clone());
        let id = self.asset.lock().unwrap_or_else(|e| e.into_inner()).id.clone();
        let track = Track {
            storage: self.storage.clone(),
            inner: self.inner.clone(),
            key: key.clone(),
            follow,
            asset: self.asset.clone(),
            rendition: name.to_string(),
            dir: format!("{}/{name}", asset_dir(&id)),
            names,
            start,
            source: name == SOURCE,
        };
        let span = tracing::info_span!("track", rendition = name);
        tokio::spawn(track.run(stop.clone(), progress).instrument(span))
    }

    /// Starts a track for every rung of the ladder that is not recorded yet: from this node's segmenter when the
    /// ladder runs here, else from the pushed playlist of the node running it (clustering on). A rung stream that
    /// comes back (after a shed, or its ladder moved) continues its rendition with a discontinuity.
    async fn find_rungs(
        &self,
        rungs: &mut Vec<RungTrack>,
        start: &Arc<Mutex<Option<SystemTime>>>,
        stop: &watch::Receiver<bool>,
    ) {
        // Tracks that ended keep their progress for the final state (and for a rung that comes back).
        for r in rungs.iter_mut() {
            if r.task.as_ref().is_some_and(|t| t.is_finished()) {
                r.done = r.task.take().and_then(|t| t.now_or_never()).and_then(Result::ok);
            }
        }
        for rung in self.inner.config.transcode.rungs_for(self.key.app()) {
            let Some(key) = self.key.rung(rung.height) else { continue };
            let existing = rungs.iter().position(|r| r.height == rung.height);
            if existing.is_some_and(|i| rungs[i].task.is_some()) {
                continue; // being recorded
            }
            let local = self.inner.streams.find_local(&key).await.filter(|h| h.relay_from().is_none());
            let (follow, claimed_ms) = match local {
                Some(h) if h.hls_watch().is_some() => {
                    if existing.is_some_and(|i| rungs[i].claimed_ms == h.claimed_ms()) {
                        continue; // the stream whose track ended: it ended, or lingers ended
                    }
                    let claimed = h.claimed_ms();
                    (Follow::Local(h), claimed)
                }
                Some(_) => continue,
                // Another node runs the ladder: its rung's playlist, while it is live.
                None => match self.inner.streams.hls(&key).await.and_then(|h| h.current()) {
                    Some(text) if !segments_in(&String::from_utf8_lossy(&text)).1 => (Follow::Remote, 0),
                    _ => continue,
                },
            };
            let name = format!("{}p", rung.height);
            let progress = match existing {
                Some(i) => {
                    let r = &mut rungs[i];
                    r.claimed_ms = claimed_ms;
                    let mut p = r.done.take().unwrap_or_default();
                    (p.gap, p.ended) = (true, false);
                    p
                }
                None => {
                    let mut a = self.asset.lock().unwrap_or_else(|e| e.into_inner());
                    if !a.renditions.iter().any(|r| r.name == name) {
                        a.renditions.push(Rendition::new(&name));
                        // The source first, then the rungs tallest first.
                        a.renditions[1..].sort_by_key(|r| std::cmp::Reverse(rendition_height(&r.name)));
                    }
                    Progress::default()
                }
            };
            let remote = matches!(follow, Follow::Remote);
            info!(rung = %key, remote, "recording the rung too");
            let task = self.track(&name, &key, follow, start.clone(), progress, stop);
            match existing {
                Some(i) => rungs[i].task = Some(task),
                None => rungs.push(RungTrack { height: rung.height, claimed_ms, task: Some(task), done: None }),
            }
        }
    }

    /// Writes `asset.json` (with its final state and reason, at the end).
    async fn write_asset(&self, id: &str, end: Option<(AssetState, Option<String>)>) {
        let json = {
            let mut a = self.asset.lock().unwrap_or_else(|e| e.into_inner());
            a.updated = rfc3339_millis(SystemTime::now());
            if let Some((state, reason)) = end {
                a.state = state;
                a.reason = reason;
            }
            a.to_json()
        };
        if let Err(e) = self.storage.put(&asset_json(id), Bytes::from(json)).await {
            warn!(error = %e, "cannot write asset.json");
        }
    }
}

/// `480p` → 480 (`source`: above every rung).
fn rendition_height(name: &str) -> u32 {
    name.strip_suffix('p').and_then(|h| h.parse().ok()).unwrap_or(u32::MAX)
}

/// Where a track's segments come from.
enum Follow {
    /// This node's segmenter (the stream is owned here).
    Local(StreamHandle),
    /// The playlist another node pushes (a rung of a ladder running there): see [`collect_remote`].
    Remote,
}

/// One rendition being recorded: a stream's finished segments into `vod/<id>/<rendition>/`. A collector task
/// follows the segmenter's view into a bounded queue ([`MAX_PENDING_BYTES`]) while the track writes from it, so a
/// store that hangs loses nothing that fits the queue: the collector never waits for storage.
struct Track {
    storage: Storage,
    inner: Arc<Inner>,
    key: StreamKey,
    follow: Follow,
    asset: Arc<Mutex<Asset>>,
    rendition: String,
    /// `vod/<id>/<rendition>`.
    dir: String,
    names: Arc<Mutex<DvrNames>>,
    /// When the source's first recorded segment began: a rung starts at its segment of that instant, so every
    /// rendition covers the same time.
    start: Arc<Mutex<Option<SystemTime>>>,
    source: bool,
}

/// What a track has written.
#[derive(Default)]
struct Progress {
    entries: Vec<SegmentEntry>,
    /// Init segments written: live name and bytes, with their number here.
    inits: Vec<(Bytes, u32)>,
    /// The next segment written gets a discontinuity (the rung's stream is new).
    gap: bool,
    /// Segments not stored (missed, dropped from a full queue, or still queued at the end).
    lost: u64,
    last_error: Option<String>,
    bytes: u64,
    duration_us: u64,
    peak_bps: u64,
    since_playlist: usize,
    playlist_len: usize,
    /// The stream ended (rather than the recording being stopped or the stream failing).
    ended: bool,
    /// Picture size, codecs and frame rate were read.
    described: bool,
}

/// Finished segments waiting to be written (shared by a track's collector and writer).
#[derive(Default)]
struct Queue {
    /// Each with whether segments are missing before it.
    pending: VecDeque<(Arc<FinishedSegment>, bool)>,
    bytes: usize,
    lost: u64,
    /// The collector stopped: `Some(whether the stream ended)`.
    closed: Option<bool>,
}

impl Queue {
    /// Queues `f` (`missed` segments were not seen before it), then drops the oldest beyond
    /// [`MAX_PENDING_BYTES`], marking the next one as following a gap. `lost` counts what was missed or dropped.
    fn push(&mut self, f: Arc<FinishedSegment>, missed: u64, lost: &IntCounter) {
        if missed > 0 {
            self.lost += missed;
            lost.inc_by(missed);
        }
        self.bytes += f.data.len();
        self.pending.push_back((f, missed > 0));
        while self.bytes > MAX_PENDING_BYTES {
            let Some((f, _)) = self.pending.pop_front() else { break };
            self.bytes -= f.data.len();
            self.lost += 1;
            lost.inc();
            if let Some(next) = self.pending.front_mut() {
                next.1 = true;
            }
        }
    }
}

type SharedQueue = Arc<(Mutex<Queue>, tokio::sync::Notify)>;

fn lock_queue(q: &SharedQueue) -> std::sync::MutexGuard<'_, Queue> {
    q.0.lock().unwrap_or_else(|e| e.into_inner())
}

impl Track {
    async fn run(self, stop: watch::Receiver<bool>, mut p: Progress) -> Progress {
        let queue: SharedQueue = Arc::default();
        let rung = (!self.source).then(|| self.start.clone());
        let (q, inner) = (queue.clone(), self.inner.clone());
        let collector = match &self.follow {
            Follow::Local(h) => match h.hls_watch() {
                Some(view) => tokio::spawn(collect(view, stop, q, rung, inner)),
                None => return p,
            },
            Follow::Remote => tokio::spawn(collect_remote(self.key.clone(), stop, q, rung, inner)),
        };
        let mut last_tries = 0;
        loop {
            self.flush(&mut p, &queue).await;
            let (closed, empty) = {
                let q = lock_queue(&queue);
                (q.closed, q.pending.is_empty())
            };
            if let Some(ended) = closed {
                // Closed: what is queued gets a few more tries.
                if empty || last_tries == 3 {
                    p.ended = ended;
                    break;
                }
                last_tries += 1;
                tokio::time::sleep(RETRY_EVERY).await;
                continue;
            }
            let wait = if p.last_error.is_some() { RETRY_EVERY } else { ASSET_EVERY };
            let _ = tokio::time::timeout(wait, queue.1.notified()).await;
        }
        let _ = collector.await;
        {
            let q = lock_queue(&queue);
            p.lost += q.lost + q.pending.len() as u64;
        }
        if !p.entries.is_empty() {
            let text = render_playlist(&p.entries, true, "", self.started());
            if let Err(e) = self.storage.put(&format!("{}/index.m3u8", self.dir), Bytes::from(text)).await {
                warn!(error = %e, "cannot write the final playlist (readers rebuild it from the segments)");
            }
        }
        let mut dvr = self.inner.dvr.lock().unwrap_or_else(|e| e.into_inner());
        if dvr.get(&self.key).is_some_and(|n| Arc::ptr_eq(n, &self.names)) {
            dvr.remove(&self.key);
        }
        p
    }

    fn started(&self) -> Option<SystemTime> {
        parse_rfc3339(&self.asset.lock().unwrap_or_else(|e| e.into_inner()).started)
    }

    /// Writes what is queued, oldest first; stops at the first failure (tried again later).
    async fn flush(&self, p: &mut Progress, queue: &SharedQueue) {
        let m = &self.inner.metrics;
        let mut wrote = false;
        loop {
            let Some((f, gap)) = lock_queue(queue).pending.front().cloned() else { break };
            match self.write_segment(p, &f, gap).await {
                Ok(()) => {
                    let mut q = lock_queue(queue);
                    // The collector may have dropped it meanwhile (a full queue).
                    if q.pending.front().is_some_and(|(g, _)| Arc::ptr_eq(g, &f)) {
                        q.pending.pop_front();
                        q.bytes -= f.data.len();
                    }
                    drop(q);
                    m.segments.with_label_values(&["written"]).inc();
                    wrote = true;
                    if p.last_error.take().is_some() {
                        info!("storage is back: recording resumes");
                    }
                }
                Err(e) => {
                    m.segments.with_label_values(&["failed"]).inc();
                    if p.last_error.is_none() {
                        let queued = lock_queue(queue).pending.len();
                        warn!(error = %e, queued, "cannot store a segment; it stays queued");
                    }
                    p.last_error = Some(e.to_string());
                    break;
                }
            }
        }
        if wrote && !p.described {
            p.described = true;
            let info = match &self.follow {
                Follow::Local(h) => h.info().await,
                Follow::Remote => remote_info(&self.key).await,
            };
            if let Some(i) = info {
                let mut a = self.asset.lock().unwrap_or_else(|e| e.into_inner());
                if let Some(r) = a.renditions.iter_mut().find(|r| r.name == self.rendition) {
                    (r.width, r.height, r.frame_rate) = (i.width, i.height, i.fps);
                    let codecs: Vec<String> = [i.video_codec, i.audio_codec].into_iter().flatten().collect();
                    r.codecs = (!codecs.is_empty()).then(|| codecs.join(","));
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
        let queued = lock_queue(queue).pending.len();
        let mut a = self.asset.lock().unwrap_or_else(|e| e.into_inner());
        a.reason = p.last_error.as_ref().map(|e| format!("storage failing, {queued} segments queued: {e}"));
    }

    async fn write_segment(&self, p: &mut Progress, f: &FinishedSegment, gap: bool) -> Result<(), StorageError> {
        // The init segment this one needs: the same bytes keep their number (a reconnect with the same encoder
        // settings needs no new EXT-X-MAP).
        let init = match &f.init {
            None => 0,
            Some((live, bytes)) => match p.inits.iter().find(|(b, _)| b == bytes) {
                Some((_, n)) => {
                    self.remember(live, init_name(*n));
                    *n
                }
                None => {
                    let n = p.inits.len() as u32 + 1;
                    self.storage.put(&format!("{}/{}", self.dir, init_name(n)), bytes.clone()).await?;
                    p.bytes += bytes.len() as u64;
                    self.inner.metrics.bytes.inc_by(bytes.len() as u64);
                    p.inits.push((bytes.clone(), n));
                    self.remember(live, init_name(n));
                    n
                }
            },
        };
        let entry = SegmentEntry {
            index: p.entries.len() as u64,
            duration_us: (f.duration * 1e6).round() as u64,
            init,
            discontinuity: (f.discontinuity || gap || p.gap) && !p.entries.is_empty(),
        };
        self.storage.put(&format!("{}/{}", self.dir, entry.name()), f.data.clone()).await?;
        self.remember(&f.name, entry.name());
        if self.source && p.entries.is_empty() {
            let mut start = self.start.lock().unwrap_or_else(|e| e.into_inner());
            start.get_or_insert(f.program_date_time);
        }
        p.gap = false;
        p.entries.push(entry);
        p.bytes += f.data.len() as u64;
        p.duration_us += entry.duration_us;
        p.since_playlist += f.data.len();
        if f.duration > 0.1 {
            p.peak_bps = p.peak_bps.max((f.data.len() as f64 * 8.0 / f.duration) as u64);
        }
        self.inner.metrics.bytes.inc_by(f.data.len() as u64);
        let mut a = self.asset.lock().unwrap_or_else(|e| e.into_inner());
        let duration = p.duration_us as f64 / 1e6;
        if let Some(r) = a.renditions.iter_mut().find(|r| r.name == self.rendition) {
            (r.segments, r.bytes, r.duration, r.peak_bps) = (p.entries.len() as u64, p.bytes, duration, p.peak_bps);
        }
        if self.source {
            a.duration = duration;
        }
        a.bytes = a.renditions.iter().map(|r| r.bytes).sum();
        Ok(())
    }

    /// The live file `live` is now the object `name` of this rendition (for the DVR window).
    fn remember(&self, live: &str, name: String) {
        self.names.lock().unwrap_or_else(|e| e.into_inner()).insert(live, format!("{}/{name}", self.dir));
    }
}

/// A track's collector: follows the segmenter's view into the queue (the oldest dropped beyond
/// [`MAX_PENDING_BYTES`]) until the stream ends, its segmenter goes, or the recording stops. `rung_at`: for a
/// rung, where the source's recording began (see [`start_at`]).
async fn collect(
    mut view: watch::Receiver<Arc<HlsView>>,
    mut stop: watch::Receiver<bool>,
    queue: SharedQueue,
    rung_at: Option<Arc<Mutex<Option<SystemTime>>>>,
    inner: Arc<Inner>,
) {
    let lost = inner.metrics.segments.with_label_values(&["lost"]);
    // The source from the segment being made now; a rung from its segment of the source's first instant.
    let mut next_msn = view.borrow().next_msn;
    let mut started = rung_at.is_none();
    let mut seen = false;
    let ended = loop {
        let now = view.borrow_and_update().clone();
        if !started {
            if let Some(at) = rung_at.as_ref().and_then(|s| *s.lock().unwrap_or_else(|e| e.into_inner())) {
                let times = now.finished.iter().map(|f| (f.msn, Some(f.program_date_time), f.duration));
                if let Some(msn) = start_at(times, now.next_msn, at) {
                    (next_msn, started) = (msn, true);
                }
            }
        }
        if started {
            let mut q = lock_queue(&queue);
            let from = next_msn;
            for f in now.finished.iter().filter(|f| f.msn >= from) {
                q.push(f.clone(), if seen { f.msn - next_msn } else { 0 }, &lost);
                (next_msn, seen) = (f.msn + 1, true);
            }
        }
        queue.1.notify_one();
        if now.ended {
            break true;
        }
        let wait = if started { Duration::from_secs(3600) } else { Duration::from_millis(500) };
        tokio::select! {
            r = view.changed() => if r.is_err() {
                // The segmenter is gone (its stream stopped): what it finished is all there is.
                break now.ended;
            },
            _ = stop.changed() => break true,
            // A rung waits for the source's first segment too.
            _ = tokio::time::sleep(wait) => {}
        }
    };
    lock_queue(&queue).closed = Some(ended);
    queue.1.notify_one();
}

/// How often a remote track reads the owner's pushed playlist.
const REMOTE_POLL: Duration = Duration::from_millis(500);
/// A remote track ends when the stream has had no playlist on any node for this long.
const REMOTE_GONE: Duration = Duration::from_secs(30);
/// Longest fetch of one segment or init segment from its owner.
const REMOTE_FETCH: Duration = Duration::from_secs(15);

/// A remote track's collector: reads the playlist the stream's owner pushes to this node (no cluster call per
/// poll), fetches each new segment (and init segment) from the owner as HLS players through this node do, and
/// queues it like [`collect`]. It follows the stream across an owner change (the ladder moved: a discontinuity,
/// the sequence goes on) and ends at `EXT-X-ENDLIST`, when no node has the stream for [`REMOTE_GONE`], or when
/// the recording stops. A fetch that fails is tried again at the next poll.
async fn collect_remote(
    key: StreamKey,
    mut stop: watch::Receiver<bool>,
    queue: SharedQueue,
    rung_at: Option<Arc<Mutex<Option<SystemTime>>>>,
    inner: Arc<Inner>,
) {
    let lost = inner.metrics.segments.with_label_values(&["lost"]);
    let mut next_msn: Option<u64> = None;
    let mut init: Option<(String, Bytes)> = None;
    let mut seen = false;
    let mut last_seen = Instant::now();
    let ended = 'follow: loop {
        let listed = match inner.streams.hls(&key).await {
            Some(hls) => hls.current().map(|text| (hls, segments_in(&String::from_utf8_lossy(&text)))),
            None => None,
        };
        if let Some((hls, (segments, ended))) = listed {
            last_seen = Instant::now();
            if next_msn.is_none() {
                let at = rung_at.as_ref().and_then(|s| *s.lock().unwrap_or_else(|e| e.into_inner()));
                next_msn = at.and_then(|at| {
                    let times = segments.iter().map(|s| (s.msn, s.program_date_time, s.duration));
                    start_at(times, segments.last().map_or(0, |s| s.msn + 1), at)
                });
            }
            if let Some(mut next) = next_msn {
                let from = next;
                // A gap (the segment a node that went away had open) has no bytes anywhere: it counts as lost.
                for s in segments.iter().filter(|s| s.msn >= from && !s.gap) {
                    let needs_init = s.map.as_ref().is_some_and(|m| init.as_ref().is_none_or(|(n, _)| n != m));
                    if needs_init {
                        let name = s.map.clone().unwrap_or_default();
                        match tokio::time::timeout(REMOTE_FETCH, hls.file(&name, Duration::ZERO, &inner.node_metrics))
                            .await
                        {
                            Ok(Some(b)) => init = Some((name, b)),
                            _ => break,
                        }
                    }
                    let Ok(Some(data)) = tokio::time::timeout(REMOTE_FETCH, hls.segment(&s.uri)).await else { break };
                    let f = FinishedSegment {
                        msn: s.msn,
                        name: s.uri.clone(),
                        duration: s.duration,
                        program_date_time: s.program_date_time.unwrap_or_else(SystemTime::now),
                        discontinuity: s.discontinuity,
                        data,
                        ext: if s.map.is_some() { "m4s" } else { "ts" },
                        init: s.map.as_ref().and(init.clone()),
                    };
                    lock_queue(&queue).push(Arc::new(f), if seen { s.msn - next } else { 0 }, &lost);
                    queue.1.notify_one();
                    (next, seen) = (s.msn + 1, true);
                }
                next_msn = Some(next);
                if ended && segments.last().is_none_or(|s| s.msn < next) {
                    break 'follow true;
                }
            }
        } else if last_seen.elapsed() > REMOTE_GONE {
            break false;
        }
        tokio::select! {
            _ = stop.changed() => break true,
            _ = tokio::time::sleep(REMOTE_POLL) => {}
        }
    };
    lock_queue(&queue).closed = Some(ended);
    queue.1.notify_one();
}

/// A stream's picture size, codecs and frame rate from the node that owns it.
async fn remote_info(key: &StreamKey) -> Option<StreamInfo> {
    let owner = remote_members(&stream_group(key)).into_iter().next()?;
    let Some(Response::Info(Some(json))) = call(&owner, &Request::Info, Duration::from_secs(2)).await else {
        return None;
    };
    let v: serde_json::Value = serde_json::from_slice(&json).ok()?;
    let num = |k: &str| v[k].as_u64().and_then(|n| u32::try_from(n).ok());
    let text = |k: &str| v[k].as_str().map(String::from);
    Some(StreamInfo {
        width: num("width"),
        height: num("height"),
        fps: v["fps"].as_f64(),
        video_codec: text("video_codec"),
        audio_codec: text("audio_codec"),
        ..StreamInfo::default()
    })
}

/// Where a rung's recording starts, from its segments' `(msn, start time, duration)`: its segment of the instant
/// `at` the source's recording began (the first whose middle is after it), or `next_msn` (the segment being made)
/// if none finished after it yet; `None` while the rung has not reached that instant.
fn start_at(
    segments: impl Iterator<Item = (u64, Option<SystemTime>, f64)>,
    next_msn: u64,
    at: SystemTime,
) -> Option<u64> {
    let mut last_ends_after = false;
    for (msn, start, duration) in segments {
        let Some(start) = start else { continue };
        let share = |k: f64| start + Duration::from_secs_f64((duration * k).clamp(0.0, 86_400.0));
        if share(0.5) > at {
            return Some(msn);
        }
        last_ends_after = share(1.0) > at;
    }
    last_ends_after.then_some(next_msn)
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
    fn a_rung_starts_at_its_segment_of_the_source_s_first_instant() {
        let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        let at = |s: f64| if s >= 0.0 { t0 + Duration::from_secs_f64(s) } else { t0 - Duration::from_secs_f64(-s) };
        // Rung segments of 2 s from t0 - 4 s; the encoder lags, so its times are 0.1 s late.
        let rung: Vec<(u64, Option<SystemTime>, f64)> =
            (0..6).map(|i| (10 + i, Some(at(i as f64 * 2.0 - 3.9)), 2.0)).collect();
        // The source's recording began at t0: the rung segment that starts 0.1 s after it.
        assert_eq!(start_at(rung.iter().copied(), 16, at(0.0)), Some(12));
        // Before any rung segment reached that instant: not yet.
        assert_eq!(start_at(rung[..1].iter().copied(), 11, at(0.0)), None);
        // The newest finished one ends after it but started well before: the segment being made.
        assert_eq!(start_at(rung[..2].iter().copied(), 12, at(-0.5)), Some(12));
        // Times unknown (a playlist without dates): not started.
        assert_eq!(start_at([(1, None, 2.0)].into_iter(), 2, at(0.0)), None);
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
