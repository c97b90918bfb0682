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
use ractor::{Actor, ActorId, ActorProcessingErr, ActorRef, RpcReplyPort, SupervisionEvent};
use rml_rtmp::sessions::StreamMetadata;
use serde::Serialize;
use tracing::{error, info};

use super::actor::{StreamActor, StreamArgs, StreamMsg};
use super::fanout::{Protocol, Subscription, ViewerCounts};
use super::key::StreamKey;
use crate::config::Config;
use crate::hls::segmenter::SegmenterMsg;
use crate::media::MediaFrame;
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
}

/// A cheap, clonable handle on one stream.
#[derive(Clone)]
pub struct StreamHandle {
    key: StreamKey,
    actor: ActorRef<StreamMsg>,
    segmenter: ActorRef<SegmenterMsg>,
}

impl StreamHandle {
    /// The stream's key.
    pub fn key(&self) -> &StreamKey {
        &self.key
    }

    /// Attaches a player; `None` if the stream has no live publisher (or is gone).
    pub async fn subscribe(&self, protocol: Protocol) -> Option<Subscription> {
        call(&self.actor, |reply| StreamMsg::Subscribe { protocol, reply }).await.flatten()
    }

    /// The HLS media playlist; waits up to `wait` for the first segment. `None` if there is none (yet).
    pub async fn playlist(&self, wait: Duration) -> Option<Bytes> {
        self.segmenter.call(SegmenterMsg::Playlist, Some(wait)).await.ok().and_then(success).flatten()
    }

    /// One HLS segment by file name.
    pub async fn segment(&self, name: &str) -> Option<Bytes> {
        let name = name.to_string();
        call(&self.segmenter, |reply| SegmenterMsg::Segment(name, reply)).await.flatten()
    }

    /// A snapshot for the API.
    pub async fn info(&self) -> Option<StreamInfo> {
        let mut info = call(&self.actor, StreamMsg::Info).await?;
        info.viewers_hls = call(&self.segmenter, SegmenterMsg::Viewers).await.unwrap_or(0);
        Some(info)
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

/// A claimed stream: the publisher's side. Dropping it unpublishes.
pub struct Publisher {
    handle: StreamHandle,
    id: u64,
}

/// The stream's actor is gone (it failed or the node is stopping): the publisher should disconnect.
#[derive(Debug, Clone, thiserror::Error)]
#[error("stream {0} is gone")]
pub struct StreamGone(pub String);

impl Publisher {
    /// The stream's key.
    pub fn key(&self) -> &StreamKey {
        &self.handle.key
    }

    /// Sends one frame (publisher timeline); fails once the stream actor is gone.
    pub fn send(&self, frame: MediaFrame) -> Result<(), StreamGone> {
        self.handle
            .actor
            .cast(StreamMsg::Media { publisher: self.id, frame })
            .map_err(|_| StreamGone(self.handle.key.to_string()))
    }

    /// Sends new metadata.
    pub fn metadata(&self, meta: StreamMetadata) -> Result<(), StreamGone> {
        self.handle
            .actor
            .cast(StreamMsg::Metadata { publisher: self.id, meta: Box::new(meta) })
            .map_err(|_| StreamGone(self.handle.key.to_string()))
    }
}

impl Drop for Publisher {
    fn drop(&mut self) {
        let _ = self.handle.actor.cast(StreamMsg::Unpublish { publisher: self.id });
    }
}

/// Messages to the registry actor.
pub enum RegistryMsg {
    /// Get the stream's handle, creating the stream if it does not exist.
    GetOrCreate(StreamKey, RpcReplyPort<Result<StreamHandle, PublishError>>),
    /// Get the stream's handle if it exists.
    Find(StreamKey, RpcReplyPort<Option<StreamHandle>>),
    /// All streams.
    List(RpcReplyPort<Vec<StreamHandle>>),
    /// A stream actor is over: remove and stop it (only if `id` is still the registered actor).
    Retire {
        /// The stream.
        key: StreamKey,
        /// The actor that asked.
        id: ActorId,
    },
    /// End every stream (node shutdown); replies when all were told.
    Shutdown(RpcReplyPort<usize>),
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
}

/// Registry state.
pub struct RegistryState {
    config: Arc<Config>,
    metrics: Arc<Metrics>,
    streams: HashMap<StreamKey, StreamHandle>,
    shutting_down: bool,
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
        Ok(RegistryState { config: args.config, metrics: args.metrics, streams: HashMap::new(), shutting_down: false })
    }

    async fn handle(
        &self,
        myself: ActorRef<RegistryMsg>,
        msg: RegistryMsg,
        st: &mut RegistryState,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            RegistryMsg::GetOrCreate(key, reply) => {
                if st.shutting_down {
                    let _ = reply.send(Err(PublishError::ShuttingDown));
                    return Ok(());
                }
                if let Some(h) = st.streams.get(&key) {
                    let _ = reply.send(Ok(h.clone()));
                    return Ok(());
                }
                let slot = Arc::new(std::sync::OnceLock::new());
                let spawned = Actor::spawn_linked(
                    None,
                    StreamActor,
                    StreamArgs {
                        key: key.clone(),
                        config: st.config.clone(),
                        metrics: st.metrics.clone(),
                        registry: myself.clone(),
                        segmenter_slot: slot.clone(),
                        viewers: Arc::new(ViewerCounts::default()),
                    },
                    myself.get_cell(),
                )
                .await;
                let result = match (spawned, slot.get()) {
                    (Ok((actor, _)), Some(segmenter)) => {
                        let h = StreamHandle { key: key.clone(), actor, segmenter: segmenter.clone() };
                        st.streams.insert(key, h.clone());
                        Ok(h)
                    }
                    (Err(e), _) => Err(PublishError::Internal(format!("spawning stream actor: {e}"))),
                    (Ok((actor, _)), None) => {
                        actor.stop(None);
                        Err(PublishError::Internal("segmenter missing".into()))
                    }
                };
                let _ = reply.send(result);
            }
            RegistryMsg::Find(key, reply) => {
                let _ = reply.send(st.streams.get(&key).cloned());
            }
            RegistryMsg::List(reply) => {
                let mut all: Vec<_> = st.streams.values().cloned().collect();
                all.sort_by(|a, b| a.key.cmp(&b.key));
                let _ = reply.send(all);
            }
            RegistryMsg::Retire { key, id } => {
                if st.streams.get(&key).is_some_and(|h| h.actor.get_id() == id) {
                    if let Some(h) = st.streams.remove(&key) {
                        info!(stream = %key, "stream retired");
                        h.actor.stop(Some("retired".into()));
                    }
                }
            }
            RegistryMsg::Shutdown(reply) => {
                st.shutting_down = true;
                for h in st.streams.values() {
                    let _ = h.actor.cast(StreamMsg::Shutdown);
                }
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
            SupervisionEvent::ActorTerminated(cell, _, reason) => {
                (cell.get_id(), reason.clone().filter(|r| r != "retired").map(|r| format!("stopped: {r}")))
            }
            _ => return Ok(()),
        };
        let key = st.streams.iter().find(|(_, h)| h.actor.get_id() == id).map(|(k, _)| k.clone());
        if let Some(key) = key {
            st.streams.remove(&key);
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
    next_publisher: Arc<AtomicU64>,
}

impl Streams {
    /// Starts the registry actor.
    pub async fn start(config: Arc<Config>, metrics: Arc<Metrics>) -> Result<Streams, ActorProcessingErr> {
        let (registry, _) = Actor::spawn(None, Registry, RegistryArgs { config, metrics }).await?;
        Ok(Streams { registry, next_publisher: Arc::new(AtomicU64::new(1)) })
    }

    /// Claims `key` for a publisher. Exactly one publisher holds a key at a time; a publisher returning within the
    /// reconnect grace resumes the same stream.
    pub async fn publish(&self, key: &StreamKey) -> Result<Publisher, PublishError> {
        let id = self.next_publisher.fetch_add(1, Ordering::Relaxed);
        // An ended stream is being retired: wait for it to go, then create a fresh one.
        for attempt in 0..50 {
            let handle = call(&self.registry, |r| RegistryMsg::GetOrCreate(key.clone(), r))
                .await
                .ok_or_else(|| PublishError::Internal("registry unavailable".into()))??;
            match call(&handle.actor, |reply| StreamMsg::Publish { publisher: id, reply }).await {
                Some(Ok(())) => return Ok(Publisher { handle, id }),
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

    /// Finds a stream on this node.
    pub async fn find(&self, key: &StreamKey) -> Option<StreamHandle> {
        call(&self.registry, |r| RegistryMsg::Find(key.clone(), r)).await.flatten()
    }

    /// All streams on this node, sorted by key.
    pub async fn list(&self) -> Vec<StreamHandle> {
        call(&self.registry, RegistryMsg::List).await.unwrap_or_default()
    }

    /// Ends every stream (node shutdown). Returns how many there were.
    pub async fn shutdown(&self) -> usize {
        call(&self.registry, RegistryMsg::Shutdown).await.unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::media::MediaKind;
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
        ha.segmenter.kill();
        for _ in 0..100 {
            if streams.find(&a).await.is_none() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert!(streams.find(&a).await.is_none(), "failed stream removed");
        assert_eq!(metrics.stream_failures.get(), 1);
        let frame = MediaFrame::from_flv_body(MediaKind::Video, 0, Bytes::from_static(&[0x17, 1, 0, 0, 0]));
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
