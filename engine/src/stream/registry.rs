//! [`Streams`]: the one lookup API. Every protocol finds, claims and lists streams through it, never by holding
//! actor references of its own across calls.
//!
//! Behind it, the registry actor maps [`StreamKey`]s to stream actors it spawns and supervises: a stream actor
//! that fails is logged with its key, counted (`strom_stream_failures_total`) and removed; the node and the other
//! streams go on. The cluster layer will make `find`/`publish` cluster-wide behind this same API.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use dashmap::DashMap;
use ractor::{Actor, ActorCell, ActorId, ActorProcessingErr, ActorRef, RpcReplyPort, SupervisionEvent};
use rml_rtmp::sessions::StreamMetadata;
use serde::Serialize;
use tracing::{error, info, warn};

use super::actor::{StreamActor, StreamArgs, StreamMsg};
use super::fanout::{Protocol, Subscription, ViewerCounts};
use super::ports::{Claim, DvrStore, Ownership, RelaySource, RemoteHls, Takeover};
use super::queue::QueueBudget;
use super::segmenter::{Blocking, HlsReader};
use crate::config::Config;
use crate::formats::MediaFrame;
use crate::formats::StreamKey;
use crate::memory::MemoryBudget;
use crate::metrics::Metrics;

/// How long an RPC to a stream actor may take before the caller gives up.
const CALL_TIMEOUT: Duration = Duration::from_secs(5);

/// Why a publish was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PublishError {
    /// Another publisher is live on this key.
    #[error("stream is already being published")]
    Busy,
    /// The stream has ended and is being retired (transient; [`Streams::publish`] retries it).
    #[error("stream has ended")]
    Ended,
    /// The node is shutting down.
    #[error("node is shutting down")]
    ShuttingDown,
    /// The node carries `limits.max_streams` streams already.
    #[error("this node carries its maximum of {0} streams (limits.max_streams)")]
    TooManyStreams(usize),
    /// The node is over its memory budget (`limits.memory_budget_mb`).
    #[error("this node is over its memory budget ({rss_mib} MiB resident of {budget_mib} MiB); try another node")]
    OverMemoryBudget {
        /// Resident memory, MiB.
        rss_mib: u64,
        /// The budget, MiB.
        budget_mib: u64,
    },
    /// An internal failure (actor gone).
    #[error("internal error: {0}")]
    Internal(String),
}

/// What `/api/v1/streams` reports about one stream.
#[derive(Debug, Clone, Serialize, Default)]
pub struct StreamInfo {
    /// `app/name`.
    pub key: String,
    /// `live`, `waiting` (publisher gone, within the reconnect grace) or `ended`.
    pub state: String,
    /// RFC 6381 codec string of the video, e.g. `avc1.64001f`.
    pub video_codec: Option<String>,
    /// RFC 6381 codec string of the audio, e.g. `mp4a.40.2`.
    pub audio_codec: Option<String>,
    /// Picture width from the SPS (or metadata).
    pub width: Option<u32>,
    /// Picture height from the SPS (or metadata).
    pub height: Option<u32>,
    /// Measured video frames per second.
    pub fps: Option<f64>,
    /// Audio sample rate.
    pub audio_sample_rate: Option<u32>,
    /// Measured ingest bitrate in bits per second.
    pub ingest_bitrate: u64,
    /// Media bytes received since the stream started.
    pub ingest_bytes: u64,
    /// RTMP players.
    pub viewers_rtmp: i64,
    /// HTTP-FLV players.
    pub viewers_flv: i64,
    /// HLS players (estimated from playlist polling).
    pub viewers_hls: i64,
    /// Seconds since the current publisher started.
    pub uptime_secs: f64,
    /// Seconds since the stream was created.
    pub age_secs: f64,
    /// The publisher's encoder, from its metadata.
    pub encoder: Option<String>,
    /// For a relay of another node's stream: that node.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub relay_from: Option<String>,
    /// Seconds between the last two keyframes (the GOP length), once two were seen.
    pub keyframe_interval_secs: Option<f64>,
    /// Seconds of media the GOP cache holds (what a new player starts with).
    pub gop_cache_secs: f64,
    /// Video has come without a keyframe for longer than `stream.keyframe_timeout_secs` (players are waiting).
    pub keyframe_missing: bool,
    /// The publisher is away and its last picture is being repeated (`stream.repeat_frame_secs`).
    pub repeating: bool,
}

/// A cheap, clonable handle on one stream of this node (owned here, or a relay of another node's stream).
#[derive(Clone)]
pub struct StreamHandle {
    key: StreamKey,
    actor: ActorRef<StreamMsg>,
    /// The segmenter's published playlist and segments (owned streams; a relay has none).
    hls: Option<HlsReader>,
    relay_from: Option<String>,
    /// This node's claim of the key (a relay's is unused).
    claim: Claim,
    /// When HLS was last asked of this stream here (unix ms; 0: never), for on-demand transcoding.
    hls_asked_ms: Arc<AtomicU64>,
    /// The API disconnected the publisher ([`StreamHandle::disconnect`]): its next frame fails.
    disconnected: Arc<std::sync::atomic::AtomicBool>,
    /// Where segments older than the segmenter holds come from (DVR), once the node attached it.
    dvr: DvrSlot,
    /// Bytes the publisher has queued for the stream actor (see [`super::queue`]).
    inbox: Arc<QueueBudget>,
}

/// The node's [`DvrStore`], once attached ([`Streams::attach_dvr`]).
pub type DvrSlot = Arc<std::sync::OnceLock<Arc<dyn DvrStore>>>;

impl StreamHandle {
    /// For a relay of another node's stream: that node.
    pub fn relay_from(&self) -> Option<&str> {
        self.relay_from.as_deref()
    }

    /// How long ago a player last asked this node for the stream's HLS (playlist or segment, directly or through
    /// another node); `None`: never.
    pub fn hls_idle(&self) -> Option<Duration> {
        match self.hls_asked_ms.load(Ordering::Relaxed) {
            0 => None,
            t => Some(Duration::from_millis(crate::clock::unix_ms().saturating_sub(t))),
        }
    }

    /// The stream's key.
    pub fn key(&self) -> &StreamKey {
        &self.key
    }

    /// When this node created the stream (Unix ms): which of this node's claims of the key it is.
    pub fn claimed_ms(&self) -> u64 {
        self.claim.since_ms
    }

    /// This node's claim of the key: its epoch and time, which rank it against another node's claim.
    pub fn claim(&self) -> Claim {
        self.claim
    }

    /// Attaches a player; `None` if the stream has no live publisher (or is gone).
    pub async fn subscribe(&self, protocol: Protocol) -> Option<Subscription> {
        call(&self.actor, |reply| StreamMsg::Subscribe { protocol, reply }).await.flatten()
    }

    /// The HLS media playlist; waits up to `wait` for the first segment. `None` if there is none (yet), or for a
    /// relay (HLS comes from the owner, see [`Streams::hls`]).
    pub async fn playlist(&self, wait: Duration) -> Option<Bytes> {
        let hls = self.hls.as_ref()?;
        self.hls_asked_ms.store(crate::clock::unix_ms(), Ordering::Relaxed);
        hls.playlist(wait).await
    }

    /// One HLS segment by file name (read from what the segmenter published, no message to it); one older than
    /// it holds, from the DVR store.
    pub async fn segment(&self, name: &str) -> Option<Bytes> {
        self.hls_asked_ms.store(crate::clock::unix_ms(), Ordering::Relaxed);
        match self.hls.as_ref()?.view().segment(name) {
            Some(b) => Some(b),
            None => self.dvr_file(name).await,
        }
    }

    /// The preload-hinted part `name` while the segmenter produces it (see
    /// [`super::segmenter::HlsReader::growing`]).
    pub fn growing(&self, name: &str) -> Option<tokio::sync::watch::Receiver<super::cmaf_segmenter::Growth>> {
        self.hls.as_ref()?.growing(name)
    }

    /// The media playlist as the segmenter published it last (no wait, no viewer counted).
    pub fn playlist_now(&self) -> Option<Bytes> {
        self.hls.as_ref()?.view().playlist.clone()
    }

    /// A file the segmenter no longer holds, from the DVR store: only one the playlist still lists (a DVR
    /// window's entry), so a request for any other name costs no storage read or cluster call.
    async fn dvr_file(&self, name: &str) -> Option<Bytes> {
        let store = self.dvr.get()?;
        let view = self.hls.as_ref()?.view();
        let text = std::str::from_utf8(view.playlist.as_deref()?).ok()?;
        let listed = text.lines().any(|l| l == name) || text.contains(&format!("#EXT-X-MAP:URI=\"{name}\""));
        if !listed {
            return None;
        }
        store.file(&self.key, name).await
    }

    /// A snapshot for the API.
    pub async fn info(&self) -> Option<StreamInfo> {
        let mut info = call(&self.actor, StreamMsg::Info).await?;
        if let Some(hls) = &self.hls {
            info.viewers_hls = hls.viewers();
        }
        Some(info)
    }

    /// Stops repeating the publisher's last picture (another node is about to take the stream over: what this
    /// node shared so far is what it continues). Returns once the stream actor has stopped.
    pub async fn stop_repeating(&self) {
        let _ = call(&self.actor, StreamMsg::StopRepeating).await;
    }

    /// Every new HLS view of the stream as the segmenter publishes it (`None` for a relay).
    pub fn hls_watch(&self) -> Option<tokio::sync::watch::Receiver<Arc<super::segmenter::HlsView>>> {
        Some(self.hls.as_ref()?.watch())
    }

    /// Ends the stream now if it is waiting for a publisher to come back (HLS gets `EXT-X-ENDLIST`); a live
    /// stream is left alone.
    pub fn end_if_waiting(&self) {
        let _ = self.actor.cast(StreamMsg::EndIfWaiting);
    }

    /// Disconnects the publisher and ends the stream as if its reconnect grace had run out: players get
    /// end-of-stream, HLS `EXT-X-ENDLIST`, a recording ends `done`; the publisher's connection is closed at its next
    /// frame ([`Publisher::send`] fails). A new publish of the name starts a new stream. `reason` is logged.
    pub fn disconnect(&self, reason: &str) {
        info!(stream = %self.key, reason, "disconnecting the publisher");
        self.disconnected.store(true, Ordering::Relaxed);
        let _ = self.actor.cast(StreamMsg::Disconnect);
    }

    /// Stalls the stream actor, or its segmenter, for `duration` (`STROM_TEST_HOOKS=1` only: the backpressure
    /// tests).
    pub fn stall_for_test(&self, segmenter: bool, duration: Duration) {
        let _ = self.actor.cast(StreamMsg::Stall { segmenter, duration });
    }

    /// Ends the stream at once (its publisher is disconnected, its players get end-of-stream); `reason` is logged.
    pub fn evict(&self, reason: &str) {
        info!(stream = %self.key, reason, "stream evicted");
        self.actor.stop(Some(format!("evicted: {reason}")));
    }
}

fn success<T>(r: ractor::rpc::CallResult<T>) -> Option<T> {
    match r {
        ractor::rpc::CallResult::Success(t) => Some(t),
        _ => None,
    }
}

async fn call<M: ractor::Message, T: Send + 'static>(
    actor: &ActorRef<M>,
    msg: impl FnOnce(RpcReplyPort<T>) -> M,
) -> Option<T> {
    actor.call(msg, Some(CALL_TIMEOUT)).await.ok().and_then(success)
}

/// Publisher ids, unique in the process.
static NEXT_PUBLISHER: AtomicU64 = AtomicU64::new(1);

/// A claimed stream: the publisher's side. Dropping it unpublishes.
pub struct Publisher {
    handle: StreamHandle,
    id: u64,
    /// An encoder in the field (RTMP ingest): losing it without its ending the stream is input loss, and the
    /// stream repeats its last picture meanwhile (`stream.repeat_frame_secs`). Relays and ladder rungs are not.
    input: bool,
}

/// The stream's actor is gone (it failed or the node is stopping): the publisher should disconnect.
#[derive(Debug, Clone, thiserror::Error)]
#[error("stream {0} is gone")]
pub struct StreamGone(pub String);

impl Publisher {
    /// Marks an encoder in the field (RTMP ingest): if it goes without ending the stream (its connection drops,
    /// or this node stops), the stream repeats its last picture while it reconnects (`stream.repeat_frame_secs`).
    pub fn input(mut self) -> Publisher {
        self.input = true;
        self
    }

    /// The publisher ended the stream itself (RTMP `deleteStream`, as OBS's "Stop Streaming" sends): no picture
    /// is repeated.
    pub fn finish(mut self) {
        self.input = false;
    }

    /// The stream's key.
    pub fn key(&self) -> &StreamKey {
        &self.handle.key
    }

    /// Sends one frame (publisher timeline); fails once the stream actor is gone or the publisher was
    /// disconnected ([`StreamHandle::disconnect`]).
    pub fn send(&self, frame: MediaFrame) -> Result<(), StreamGone> {
        if self.handle.disconnected.load(Ordering::Relaxed) {
            return Err(StreamGone(self.handle.key.to_string()));
        }
        self.handle
            .actor
            .cast(StreamMsg::Media {
                publisher: self.id,
                frame: {
                    self.handle.inbox.add(frame.flv_body().len());
                    frame
                },
            })
            .map_err(|_| StreamGone(self.handle.key.to_string()))
    }

    /// The stream actor is not more than `stream.queue_max_bytes` behind.
    pub fn has_room(&self) -> bool {
        !self.handle.inbox.over()
    }

    /// Waits while the stream actor is behind by more than `stream.queue_max_bytes` (see [`super::queue`]): a
    /// publisher's connection calls it before reading more from its socket.
    pub async fn room(&self) {
        self.handle.inbox.room().await
    }

    /// Sends new metadata.
    pub fn metadata(&self, meta: StreamMetadata) -> Result<(), StreamGone> {
        self.handle
            .actor
            .cast(StreamMsg::Metadata { publisher: self.id, meta: Box::new(meta) })
            .map_err(|_| StreamGone(self.handle.key.to_string()))
    }

    /// The publisher upstream of this one left (a relay: the owner's publisher) and the stream waits for it:
    /// players stay attached, encoders end.
    pub fn upstream_left(&self) -> Result<(), StreamGone> {
        self.handle
            .actor
            .cast(StreamMsg::UpstreamLeft { publisher: self.id })
            .map_err(|_| StreamGone(self.handle.key.to_string()))
    }

    /// A relay stream's feed now comes from owner `node` (`/api/v1/streams` shows it as `relay_from`).
    pub fn relay_moved(&self, node: &str) -> Result<(), StreamGone> {
        self.handle
            .actor
            .cast(StreamMsg::RelayMoved { publisher: self.id, node: node.to_string() })
            .map_err(|_| StreamGone(self.handle.key.to_string()))
    }

    /// Sends metadata already encoded as an `onMetaData` body (a relay).
    pub fn metadata_raw(&self, body: Bytes) -> Result<(), StreamGone> {
        self.handle
            .actor
            .cast(StreamMsg::MetadataRaw { publisher: self.id, body })
            .map_err(|_| StreamGone(self.handle.key.to_string()))
    }
}

impl Drop for Publisher {
    fn drop(&mut self) {
        let _ = self.handle.actor.cast(StreamMsg::Unpublish { publisher: self.id, input_lost: self.input });
    }
}

/// Messages to the registry actor.
pub enum RegistryMsg {
    /// Get the stream's handle, creating the stream (owned by this node) if it does not exist. A relay of the key
    /// is replaced.
    GetOrCreate(StreamKey, RpcReplyPort<Result<StreamHandle, PublishError>>),
    /// Get a local relay of `key` from `source`, creating it (a relay stream and the actor feeding it) if needed.
    GetOrCreateRelay {
        /// The stream.
        key: StreamKey,
        /// The owner on another node.
        source: Box<dyn RelaySource>,
        /// The handle of the local relay stream (or of a stream this node owns after all).
        reply: RpcReplyPort<Result<StreamHandle, PublishError>>,
    },
    /// A stream actor is over: remove and stop it (only if `id` is still the registered actor).
    Retire {
        /// The stream.
        key: StreamKey,
        /// The actor that asked.
        id: ActorId,
    },
    /// Clustering is on: export owned streams from now on.
    AttachCluster(Arc<dyn Ownership>),
    /// End every stream (node shutdown); replies when all were told.
    Shutdown(RpcReplyPort<usize>),
    /// Liveness: answers at once with the number of streams (the liveness probe asks it).
    Ping(RpcReplyPort<usize>),
}

impl ractor::Message for RegistryMsg {}

/// The registry actor.
pub struct Registry;

/// Registry arguments.
pub struct RegistryArgs {
    /// Node configuration.
    pub config: Arc<Config>,
    /// Node metrics.
    pub metrics: Arc<Metrics>,
    /// The read side of the registry's map, shared with [`Streams`].
    pub index: Index,
    /// The DVR store, shared with [`Streams`] and every handle.
    pub dvr: DvrSlot,
    /// The node's memory budget, shared with [`Streams`].
    pub memory: Arc<MemoryBudget>,
}

/// Every stream of this node by key: written only by the registry actor (in step with its own map), read by
/// connections and HTTP handlers directly, without a message to the actor.
pub type Index = Arc<DashMap<StreamKey, StreamHandle>>;

struct Entry {
    handle: StreamHandle,
    /// The actor that makes an owned stream known to the cluster, or that feeds a relay, when clustering is on
    /// ([`Ownership::export`], [`RelaySource::start`]).
    cluster_actor: Option<ActorCell>,
}

impl Entry {
    fn stop(self, reason: &str) {
        if let Some(a) = self.cluster_actor {
            a.stop(Some(reason.into()));
        }
        self.handle.actor.stop(Some(reason.into()));
    }
}

/// Registry state.
pub struct RegistryState {
    config: Arc<Config>,
    metrics: Arc<Metrics>,
    ownership: Option<Arc<dyn Ownership>>,
    streams: HashMap<StreamKey, Entry>,
    index: Index,
    dvr: DvrSlot,
    memory: Arc<MemoryBudget>,
    shutting_down: bool,
}

impl RegistryState {
    /// Registers a stream (the index gets its handle).
    fn put(&mut self, key: StreamKey, entry: Entry) {
        self.index.insert(key.clone(), entry.handle.clone());
        self.streams.insert(key, entry);
    }

    /// A new stream would pass `limits.max_streams` (relays and ladder rungs count too), or the node is over its
    /// memory budget.
    fn full(&self, key: &StreamKey) -> Result<(), PublishError> {
        let max = self.config.limits.max_streams;
        if max > 0 && self.streams.len() >= max {
            self.metrics.connections_rejected.with_label_values(&["max_streams"]).inc();
            warn!(stream = %key, max, "stream refused: limits.max_streams reached");
            return Err(PublishError::TooManyStreams(max));
        }
        if self.memory.over() {
            self.metrics.connections_rejected.with_label_values(&["memory_budget"]).inc();
            let (rss_mib, budget_mib) = (self.memory.rss() >> 20, self.memory.limit() >> 20);
            warn!(stream = %key, rss_mib, budget_mib, "stream refused: over the memory budget");
            return Err(PublishError::OverMemoryBudget { rss_mib, budget_mib });
        }
        Ok(())
    }

    /// Unregisters a stream (and removes it from the index).
    fn take(&mut self, key: &StreamKey) -> Option<Entry> {
        self.index.remove(key);
        self.streams.remove(key)
    }

    async fn spawn_stream(
        &mut self,
        myself: &ActorRef<RegistryMsg>,
        key: &StreamKey,
        relay_from: Option<String>,
        viewers: Arc<ViewerCounts>,
        takeover: Takeover,
    ) -> Result<StreamHandle, PublishError> {
        let slot = Arc::new(std::sync::OnceLock::new());
        let relay = relay_from.is_some();
        let inbox = QueueBudget::new(self.config.stream.queue_max_bytes);
        let (actor, _) = Actor::spawn_linked(
            None,
            StreamActor,
            StreamArgs {
                key: key.clone(),
                inbox: inbox.clone(),
                config: self.config.clone(),
                metrics: self.metrics.clone(),
                registry: myself.clone(),
                hls_slot: slot.clone(),
                viewers,
                relay_from: relay_from.clone(),
                hls_resume: takeover.resume,
            },
            myself.get_cell(),
        )
        .await
        .map_err(|e| PublishError::Internal(format!("spawning stream actor: {e}")))?;
        let hls = slot.get().cloned();
        if hls.is_none() && !relay {
            actor.stop(None);
            return Err(PublishError::Internal("segmenter missing".into()));
        }
        Ok(StreamHandle {
            key: key.clone(),
            actor,
            hls,
            relay_from,
            claim: Claim { epoch: takeover.epoch, since_ms: crate::clock::unix_ms() },
            hls_asked_ms: Arc::default(),
            disconnected: Arc::default(),
            dvr: self.dvr.clone(),
            inbox,
        })
    }

    async fn get_or_create(
        &mut self,
        myself: &ActorRef<RegistryMsg>,
        key: StreamKey,
    ) -> Result<StreamHandle, PublishError> {
        if let Some(e) = self.streams.get(&key) {
            if e.handle.relay_from.is_none() {
                return Ok(e.handle.clone());
            }
            // A publisher here, while this node relays the key from another: the caller checked that the owner is
            // no longer live. The relay stream becomes ours, its players staying attached; if it cannot, the relay
            // ends and a new stream starts.
            let relayed = e.handle.clone();
            let takeover =
                self.ownership.as_ref().map(|c| c.takeover(&key, self.config.reconnect_grace())).unwrap_or_default();
            let resume = takeover.resume.clone();
            let promoted = call(&relayed.actor, move |reply| StreamMsg::Promote { resume, reply }).await;
            if let Some(hls) = promoted.flatten() {
                if let Some(sink) = self.streams.get_mut(&key).and_then(|e| e.cluster_actor.take()) {
                    sink.stop(Some("replaced by a local publisher".into()));
                }
                if let Some(r) = &takeover.resume {
                    info!(stream = %key, next_msn = r.next_msn, discontinuity = r.discontinuity, listed = r.window.len(), epoch = takeover.epoch, "continuing the HLS playlist of the previous owner");
                }
                info!(stream = %key, "a local publisher takes the relayed stream over; its players stay");
                let handle = StreamHandle {
                    hls: Some(hls),
                    relay_from: None,
                    claim: Claim { epoch: takeover.epoch, since_ms: crate::clock::unix_ms() },
                    ..relayed
                };
                let export = match &self.ownership {
                    Some(o) => o.export(handle.clone()).await,
                    None => None,
                };
                self.put(key, Entry { handle: handle.clone(), cluster_actor: export });
                return Ok(handle);
            }
            if let Some(e) = self.take(&key) {
                info!(stream = %key, "a local publisher replaces the relay of this stream");
                e.stop("replaced by a local publisher");
            }
        }
        self.full(&key)?;
        // The stream was live on another node moments ago (that node died or the publisher moved): continue its
        // HLS playlist, so players keep the same URL and see a discontinuity.
        let takeover =
            self.ownership.as_ref().map(|c| c.takeover(&key, self.config.reconnect_grace())).unwrap_or_default();
        if let Some(r) = &takeover.resume {
            info!(stream = %key, next_msn = r.next_msn, discontinuity = r.discontinuity, listed = r.window.len(), epoch = takeover.epoch, "continuing the HLS playlist of the previous owner");
        }
        let handle = self.spawn_stream(myself, &key, None, Arc::new(ViewerCounts::default()), takeover).await?;
        let export = match &self.ownership {
            Some(o) => o.export(handle.clone()).await,
            None => None,
        };
        self.put(key, Entry { handle: handle.clone(), cluster_actor: export });
        Ok(handle)
    }

    async fn get_or_create_relay(
        &mut self,
        myself: &ActorRef<RegistryMsg>,
        key: StreamKey,
        source: Box<dyn RelaySource>,
    ) -> Result<StreamHandle, PublishError> {
        if let Some(e) = self.streams.get(&key) {
            return Ok(e.handle.clone());
        }
        self.full(&key)?;
        let viewers = Arc::new(ViewerCounts::default());
        let handle = self
            .spawn_stream(myself, &key, Some(source.node().to_string()), viewers.clone(), Takeover::default())
            .await?;
        let id = NEXT_PUBLISHER.fetch_add(1, Ordering::Relaxed);
        match call(&handle.actor, |reply| StreamMsg::Publish { publisher: id, reply }).await {
            Some(Ok(())) => {}
            other => {
                handle.actor.stop(None);
                return Err(other.and_then(Result::err).unwrap_or(PublishError::Internal("relay stream".into())));
            }
        }
        let publisher = Publisher { handle: handle.clone(), id, input: false };
        let sink = match source.start(publisher, viewers, self.config.reconnect_grace()).await {
            Ok(a) => a,
            Err(e) => {
                handle.actor.stop(None);
                return Err(PublishError::Internal(e));
            }
        };
        self.put(key, Entry { handle: handle.clone(), cluster_actor: Some(sink) });
        Ok(handle)
    }
}

impl Actor for Registry {
    type Msg = RegistryMsg;
    type State = RegistryState;
    type Arguments = RegistryArgs;

    async fn pre_start(
        &self,
        _: ActorRef<RegistryMsg>,
        args: RegistryArgs,
    ) -> Result<RegistryState, ActorProcessingErr> {
        Ok(RegistryState {
            config: args.config,
            metrics: args.metrics,
            ownership: None,
            streams: HashMap::new(),
            index: args.index,
            dvr: args.dvr,
            memory: args.memory,
            shutting_down: false,
        })
    }

    async fn handle(
        &self,
        myself: ActorRef<RegistryMsg>,
        msg: RegistryMsg,
        st: &mut RegistryState,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            RegistryMsg::GetOrCreate(key, reply) => {
                let result = match st.shutting_down {
                    true => Err(PublishError::ShuttingDown),
                    false => st.get_or_create(&myself, key).await,
                };
                let _ = reply.send(result);
            }
            RegistryMsg::GetOrCreateRelay { key, source, reply } => {
                let result = match st.shutting_down {
                    true => Err(PublishError::ShuttingDown),
                    false => st.get_or_create_relay(&myself, key, source).await,
                };
                let _ = reply.send(result);
            }
            RegistryMsg::Retire { key, id } => {
                if st.streams.get(&key).is_some_and(|e| e.handle.actor.get_id() == id) {
                    if let Some(e) = st.take(&key) {
                        info!(stream = %key, "stream retired");
                        e.stop("retired");
                    }
                }
            }
            RegistryMsg::AttachCluster(ownership) => st.ownership = Some(ownership),
            RegistryMsg::Shutdown(reply) => {
                st.shutting_down = true;
                for e in st.streams.values() {
                    let _ = e.handle.actor.cast(StreamMsg::Shutdown);
                }
                let _ = reply.send(st.streams.len());
            }
            RegistryMsg::Ping(reply) => {
                let _ = reply.send(st.streams.len());
            }
        }
        Ok(())
    }

    async fn handle_supervisor_evt(
        &self,
        _myself: ActorRef<RegistryMsg>,
        evt: SupervisionEvent,
        st: &mut RegistryState,
    ) -> Result<(), ActorProcessingErr> {
        let (id, failure) = match &evt {
            SupervisionEvent::ActorFailed(cell, err) => (cell.get_id(), Some(err.to_string())),
            SupervisionEvent::ActorTerminated(cell, _, reason) => (
                cell.get_id(),
                reason
                    .clone()
                    .filter(|r| r != "retired" && !r.starts_with("evicted") && !r.starts_with("replaced"))
                    .map(|r| format!("stopped: {r}")),
            ),
            _ => return Ok(()),
        };
        let key = st.streams.iter().find(|(_, e)| e.handle.actor.get_id() == id).map(|(k, _)| k.clone());
        if let Some(key) = key {
            if let Some(e) = st.take(&key) {
                if let Some(a) = e.cluster_actor {
                    a.stop(Some("stream ended".into()));
                }
            }
            if let Some(why) = failure {
                st.metrics.stream_failures.inc();
                error!(stream = %key, error = %why, "stream failed and was ended; other streams are unaffected");
            }
        }
        Ok(())
    }
}

/// The lookup API (see the module docs). Cheap to clone.
#[derive(Clone)]
pub struct Streams {
    registry: ActorRef<RegistryMsg>,
    index: Index,
    grace: Duration,
    ownership: Arc<std::sync::OnceLock<Arc<dyn Ownership>>>,
    dvr: DvrSlot,
    memory: Arc<MemoryBudget>,
}

/// Where a stream's HLS comes from: this node's segmenter, or another node's over the cluster.
pub enum HlsSource {
    /// The stream is owned here.
    Local(StreamHandle),
    /// Another node owns it, or did moments ago (see [`Ownership::remote_hls`]).
    Remote(Box<dyn RemoteHls>),
}

impl HlsSource {
    /// The media playlist (see [`StreamHandle::playlist`]).
    pub async fn playlist(&self, wait: Duration) -> Option<Bytes> {
        match self {
            HlsSource::Local(h) => h.playlist(wait).await,
            HlsSource::Remote(r) => r.playlist(wait).await,
        }
    }

    /// One segment by file name.
    pub async fn segment(&self, name: &str) -> Option<Bytes> {
        match self {
            HlsSource::Local(h) => h.segment(name).await,
            HlsSource::Remote(r) => r.segment(name).await,
        }
    }

    /// A blocking playlist reload (LL-HLS, see [`super::segmenter::HlsReader::playlist_blocking`]).
    pub async fn playlist_blocking(
        &self,
        msn: u64,
        part: Option<u64>,
        skip: bool,
        wait: Duration,
        quiet: Duration,
        metrics: &Metrics,
    ) -> Result<Bytes, Blocking> {
        match self {
            HlsSource::Local(h) => match &h.hls {
                Some(hls) => {
                    h.hls_asked_ms.store(crate::clock::unix_ms(), Ordering::Relaxed);
                    hls.playlist_blocking(msn, part, skip, wait, quiet, metrics).await
                }
                None => Err(Blocking::NotFound),
            },
            HlsSource::Remote(r) => r.playlist_blocking(msn, part, skip, wait, quiet).await,
        }
    }

    /// The media playlist as it is now, without waiting and without counting a viewer (for the rendition reports
    /// of the other renditions of a ladder).
    pub fn current(&self) -> Option<Bytes> {
        match self {
            HlsSource::Local(h) => h.hls.as_ref()?.view().playlist.clone(),
            HlsSource::Remote(r) => r.current(),
        }
    }

    /// The preload-hinted part `name` while it is produced: this node's own stream's, or (another node's stream)
    /// the owner's followed from here, each chunk due within `wait` of the one before. `None` when `name` is not
    /// that part.
    pub fn growing(
        &self,
        name: &str,
        wait: Duration,
    ) -> Option<tokio::sync::watch::Receiver<super::cmaf_segmenter::Growth>> {
        match self {
            HlsSource::Local(h) => {
                h.hls_asked_ms.store(crate::clock::unix_ms(), Ordering::Relaxed);
                h.growing(name)
            }
            HlsSource::Remote(r) => r.growing(name, wait),
        }
    }

    /// A segment, part or init segment by file name; a preload-hinted part is waited for up to `wait`.
    pub async fn file(&self, name: &str, wait: Duration, metrics: &Metrics) -> Option<Bytes> {
        match self {
            HlsSource::Local(h) => {
                h.hls_asked_ms.store(crate::clock::unix_ms(), Ordering::Relaxed);
                match h.hls.as_ref()?.file(name, wait, metrics).await {
                    Some(b) => Some(b),
                    None => h.dvr_file(name).await,
                }
            }
            HlsSource::Remote(r) => r.file(name, wait).await,
        }
    }
}

impl Streams {
    /// The registry actor answers within `deadline` (the liveness probe): `Err` says what is wrong.
    pub async fn alive(&self, deadline: Duration) -> Result<(), String> {
        match self.registry.call(RegistryMsg::Ping, Some(deadline)).await {
            Ok(ractor::rpc::CallResult::Success(_)) => Ok(()),
            Ok(ractor::rpc::CallResult::Timeout) => {
                Err(format!("the stream registry did not answer within {deadline:?}"))
            }
            _ => Err("the stream registry is not running".into()),
        }
    }

    /// Stops the registry actor, as a crash would (`STROM_TEST_HOOKS=1` only: the liveness test's hook).
    pub fn kill_registry_for_test(&self) {
        self.registry.stop(Some("killed by a test hook".into()));
    }

    /// Starts the registry actor.
    pub async fn start(config: Arc<Config>, metrics: Arc<Metrics>) -> Result<Streams, ActorProcessingErr> {
        let grace = config.reconnect_grace();
        let index = Index::default();
        let dvr = DvrSlot::default();
        let memory = Arc::new(MemoryBudget::new(config.limits.memory_budget_mb));
        metrics.memory_budget.set(memory.limit() as i64);
        let args = RegistryArgs { config, metrics, index: index.clone(), dvr: dvr.clone(), memory: memory.clone() };
        let (registry, _) = Actor::spawn(None, Registry, args).await?;
        Ok(Streams { registry, index, grace, ownership: Arc::new(std::sync::OnceLock::new()), dvr, memory })
    }

    /// The node's memory budget (for readiness and the API).
    pub fn memory(&self) -> &Arc<MemoryBudget> {
        &self.memory
    }

    /// Serves the segments of DVR windows that the segmenters no longer hold (called once, by the node).
    pub fn attach_dvr(&self, dvr: Arc<dyn DvrStore>) {
        let _ = self.dvr.set(dvr);
    }

    /// Makes lookups and claims cluster-wide (called once, when clustering starts).
    pub fn attach_ownership(&self, ownership: Arc<dyn Ownership>) {
        let _ = self.ownership.set(ownership.clone());
        let _ = self.registry.cast(RegistryMsg::AttachCluster(ownership));
    }

    /// Whether lookups and claims are cluster-wide.
    pub fn clustered(&self) -> bool {
        self.ownership.get().is_some()
    }

    /// Claims `key` for a publisher. Exactly one publisher holds a key at a time, cluster-wide; a publisher
    /// returning within the reconnect grace resumes the same stream.
    pub async fn publish(&self, key: &StreamKey) -> Result<Publisher, PublishError> {
        if let Some(o) = self.ownership.get() {
            if o.live_elsewhere(key).await.is_some() {
                return Err(PublishError::Busy);
            }
        }
        let publisher = self.claim_local(key).await?;
        if let Some(o) = self.ownership.get() {
            if let Some(winner) = o.older_claim(key, publisher.handle.claim).await {
                publisher.handle.evict(&format!("node {winner} claimed the stream first"));
                return Err(PublishError::Busy);
            }
        }
        Ok(publisher)
    }

    async fn claim_local(&self, key: &StreamKey) -> Result<Publisher, PublishError> {
        let id = NEXT_PUBLISHER.fetch_add(1, Ordering::Relaxed);
        // An ended stream is being retired: wait for it to go, then create a fresh one.
        for attempt in 0..50 {
            let handle = call(&self.registry, |r| RegistryMsg::GetOrCreate(key.clone(), r))
                .await
                .ok_or_else(|| PublishError::Internal("registry unavailable".into()))??;
            match call(&handle.actor, |reply| StreamMsg::Publish { publisher: id, reply }).await {
                Some(Ok(())) => return Ok(Publisher { handle, id, input: false }),
                Some(Err(PublishError::Ended)) => {
                    let _ = self.registry.cast(RegistryMsg::Retire { key: key.clone(), id: handle.actor.get_id() });
                }
                // The actor died under us: its supervision event removes it; look again shortly.
                None if attempt < 49 => tokio::time::sleep(Duration::from_millis(20)).await,
                None => break,
                Some(Err(e)) => return Err(e),
            }
        }
        Err(PublishError::Internal("stream could not be recreated".into()))
    }

    /// Finds a stream to play: one on this node, or (clustering on) a relay of the live stream another node owns,
    /// created on first use and shared by every player of this node.
    pub async fn find(&self, key: &StreamKey) -> Option<StreamHandle> {
        if let Some(h) = self.find_local(key).await {
            return Some(h);
        }
        let source = self.ownership.get()?.relay_source(key).await?;
        let owner = source.node().to_string();
        let handle = call(&self.registry, |reply| RegistryMsg::GetOrCreateRelay { key: key.clone(), source, reply })
            .await?
            .inspect_err(|e| warn!(stream = %key, owner = %owner, error = %e, "cannot relay the stream"))
            .ok()?;
        // A new relay: let the owner's start (metadata, sequence headers, GOP) arrive so players begin at once.
        let t = std::time::Instant::now();
        while t.elapsed() < RELAY_START_WAIT {
            match handle.info().await {
                Some(i) if i.video_codec.is_some() || i.audio_codec.is_some() || i.ingest_bytes > 0 => break,
                Some(i) if i.state == "live" => tokio::time::sleep(Duration::from_millis(10)).await,
                _ => return None,
            }
        }
        Some(handle)
    }

    /// Finds a stream on this node only (a map read: no message to the registry actor).
    pub async fn find_local(&self, key: &StreamKey) -> Option<StreamHandle> {
        self.index.get(key).map(|h| h.value().clone())
    }

    /// Where to get a stream's HLS: from this node when it owns the stream, else (clustering on) from the owner,
    /// so every node serves the same playlist and segments.
    pub async fn hls(&self, key: &StreamKey) -> Option<HlsSource> {
        if let Some(h) = self.find_local(key).await.filter(|h| h.relay_from.is_none()) {
            return Some(HlsSource::Local(h));
        }
        Some(HlsSource::Remote(self.ownership.get()?.remote_hls(key, self.grace).await?))
    }

    /// All streams on this node (owned and relayed), sorted by key (a map read).
    pub async fn list(&self) -> Vec<StreamHandle> {
        let mut all: Vec<StreamHandle> = self.index.iter().map(|e| e.value().clone()).collect();
        all.sort_by(|a, b| a.key.cmp(&b.key));
        all
    }

    /// Ends every stream (node shutdown). Returns how many there were.
    pub async fn shutdown(&self) -> usize {
        call(&self.registry, RegistryMsg::Shutdown).await.unwrap_or(0)
    }
}

/// How long a new relay may take to deliver the stream's start before its first player is attached anyway.
const RELAY_START_WAIT: Duration = Duration::from_secs(3);

#[cfg(test)]
mod tests {
    use super::*;
    use crate::formats::MediaKind;
    use bytes::Bytes;

    async fn start() -> (Streams, Arc<Metrics>) {
        let metrics = Arc::new(Metrics::new());
        let streams = Streams::start(Arc::new(Config::default()), metrics.clone()).await.unwrap();
        (streams, metrics)
    }

    #[tokio::test]
    async fn one_publisher_per_key() {
        let (streams, _) = start().await;
        let key = StreamKey::parse("live/a").unwrap();
        let p = streams.publish(&key).await.unwrap();
        assert_eq!(streams.publish(&key).await.err(), Some(PublishError::Busy));
        drop(p);
        // The key is free again once the publisher left (the stream waits for a reconnect).
        tokio::time::sleep(Duration::from_millis(50)).await;
        let _again = streams.publish(&key).await.unwrap();
    }

    #[tokio::test]
    async fn a_failing_stream_ends_alone() {
        let (streams, metrics) = start().await;
        let a = StreamKey::parse("live/a").unwrap();
        let b = StreamKey::parse("live/b").unwrap();
        let pa = streams.publish(&a).await.unwrap();
        let pb = streams.publish(&b).await.unwrap();
        // Kill stream a's segmenter: its stream actor must end, and only it.
        let ha = streams.find(&a).await.unwrap();
        ha.actor.get_children().first().expect("owned stream has a segmenter").kill();
        for _ in 0..100 {
            if streams.find(&a).await.is_none() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert!(streams.find(&a).await.is_none(), "failed stream removed");
        assert_eq!(metrics.stream_failures.get(), 1);
        let frame = MediaFrame::parse(MediaKind::Video, 0, Bytes::from_static(&[0x17, 1, 0, 0, 0])).unwrap();
        assert!(pa.send(frame.clone()).is_err(), "the failed stream's publisher learns it is gone");
        // Stream b goes on: it still takes frames and players.
        let hb = streams.find(&b).await.expect("other stream unaffected");
        let sub = hb.subscribe(Protocol::Flv).await.expect("subscribe to b");
        let mut feed = crate::stream::PlayerFeed::new(sub, metrics.clone());
        pb.send(frame).unwrap();
        let mut out = Vec::new();
        let got = tokio::time::timeout(Duration::from_secs(2), feed.next_batch(&mut out, 8)).await.unwrap();
        assert!(got && !out.is_empty());
        assert_eq!(metrics.streams_active.get(), 1);
    }
}
