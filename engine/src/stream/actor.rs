//! The stream actor: one per live stream key, owner of everything about that stream on this node.
//!
//! It owns: the publisher slot, metadata, AVC/AAC sequence headers, the GOP cache (from the last keyframe), the
//! fan-out ring, the stream's timeline (continuous across publisher reconnects), counters, and its segmenter actor
//! (spawned linked: a segmenter failure ends this stream, logged by the registry, and nothing else).
//!
//! Lifecycle: `Live` (a publisher) → publisher leaves → `Waiting` for `stream.reconnect_grace_secs` (a publisher
//! coming back resumes: HLS gets a DISCONTINUITY, the media sequence goes on; RTMP and HTTP-FLV players stay
//! attached and go on with the new publisher's frames, and players may join in the gap) → `Ended` (players get
//! end-of-stream, HLS gets ENDLIST) for `stream.ended_linger_secs` → the actor asks the registry to retire it
//! (then HLS is a 404).

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort, SupervisionEvent};
use rml_rtmp::sessions::StreamMetadata;
use tracing::{info, warn};

use super::fanout::{FanoutSender, Protocol, StreamEvent, Subscription, ViewerCounts, ViewerGuard};
use super::ports::Resume;
use super::queue::QueueBudget;
use super::registry::{PublishError, RegistryMsg, StreamInfo};
use crate::config::Config;
use crate::formats::StreamKey;
use crate::formats::{MediaFrame, MediaKind};
use crate::metrics::Metrics;
use crate::stream::segmenter::{HlsReader, Segmenter, SegmenterArgs, SegmenterMsg};

/// Limits of the GOP cache: a source with absurdly long GOPs stops being cached rather than growing memory.
const GOP_MAX_FRAMES: usize = 4096;
const GOP_MAX_BYTES: usize = 48 << 20;

/// Messages to a stream actor.
pub enum StreamMsg {
    /// A publisher asks to take the stream.
    Publish {
        /// The publisher's unique id.
        publisher: u64,
        /// Refused when another publisher is live or the stream has ended.
        reply: RpcReplyPort<Result<(), PublishError>>,
    },
    /// The publisher's `@setDataFrame onMetaData`.
    Metadata {
        /// The publisher's id.
        publisher: u64,
        /// Parsed metadata.
        meta: Box<StreamMetadata>,
    },
    /// Metadata already encoded as an `onMetaData` AMF0 body (relayed from another node).
    MetadataRaw {
        /// The publisher's id.
        publisher: u64,
        /// The AMF0 body.
        body: Bytes,
    },
    /// One frame from the publisher (timestamps on the publisher's own timeline).
    Media {
        /// The publisher's id.
        publisher: u64,
        /// The frame.
        frame: MediaFrame,
    },
    /// The publisher's own source left and waits to come back (a relay: the owner's publisher); the publisher
    /// stays. Players stay attached, encoders end.
    UpstreamLeft {
        /// The publisher's id.
        publisher: u64,
    },
    /// A relay stream becomes this node's own (a publisher of the key landed here): it gets a segmenter
    /// (continuing the HLS playlist at `resume`), drops the relay's publisher and waits for the local one. Its
    /// players stay attached. Answers the segmenter's readers' side; `None` if it is no relay (or is over).
    Promote {
        /// Where the HLS playlist continues (see [`SegmenterArgs::resume`]).
        resume: Option<Resume>,
        /// The segmenter's readers' side.
        reply: RpcReplyPort<Option<HlsReader>>,
    },
    /// A relay stream's feed now comes from `node` (the relay followed the stream to its next owner).
    RelayMoved {
        /// The publisher's id (the relay sink's).
        publisher: u64,
        /// The owner node the relay now comes from.
        node: String,
    },
    /// The publisher left (or its connection died).
    Unpublish {
        /// The publisher's id.
        publisher: u64,
        /// An encoder in the field went without ending the stream (see [`super::registry::Publisher::input`]).
        input_lost: bool,
    },
    /// A player attaches; `None` when no publisher is live.
    Subscribe {
        /// For viewer counts.
        protocol: Protocol,
        /// The subscription.
        reply: RpcReplyPort<Option<Subscription>>,
    },
    /// A snapshot for `/api/v1/streams`.
    Info(RpcReplyPort<StreamInfo>),
    /// A stream waiting for its publisher ends now, without the rest of its grace (HLS gets ENDLIST). Ignored
    /// while a publisher is live.
    EndIfWaiting,
    /// Timer: the reconnect grace period of publisher session `epoch` ran out.
    GraceExpired {
        /// Publisher session the timer belongs to.
        epoch: u64,
    },
    /// Timer: the linger period after the end ran out.
    LingerExpired {
        /// Publisher session the timer belongs to.
        epoch: u64,
    },
    /// Timer: the next repeat of the last picture while publisher session `epoch` is away (see `Filler`).
    Fill {
        /// Publisher session the timer belongs to.
        epoch: u64,
    },
    /// Another node claims the stream (its publisher reconnected there): the picture is no longer repeated, so
    /// the playlist this node shared is the one the other node continues. Answers once done.
    StopRepeating(RpcReplyPort<()>),
    /// The node is shutting down: end the stream now.
    Shutdown,
    /// The API disconnects the publisher: end the stream now, as if its grace had run out (players get `End`,
    /// HLS `EXT-X-ENDLIST`, a recording ends `done`). The publisher learns it at its next frame (see
    /// [`super::registry::StreamHandle::disconnect`]).
    Disconnect,
    /// Handle nothing for this long, here or (`segmenter`) in the segmenter (`STROM_TEST_HOOKS=1` only: the
    /// backpressure tests' stalled consumers).
    Stall {
        /// Stall the segmenter instead of this actor.
        segmenter: bool,
        /// For how long.
        duration: Duration,
    },
}

impl ractor::Message for StreamMsg {}

/// Arguments of a stream actor.
pub struct StreamArgs {
    /// The stream's key.
    pub key: StreamKey,
    /// Bytes publishers have queued for this actor (see [`super::queue`]).
    pub inbox: Arc<QueueBudget>,
    /// Node configuration.
    pub config: Arc<Config>,
    /// Node metrics.
    pub metrics: Arc<Metrics>,
    /// The registry, to retire this stream when it is over.
    pub registry: ActorRef<RegistryMsg>,
    /// Filled in `pre_start` with the segmenter's readers' side, for the registry's handle.
    pub hls_slot: Arc<std::sync::OnceLock<HlsReader>>,
    /// Viewer counts shared with players.
    pub viewers: Arc<ViewerCounts>,
    /// A relay stream: fed by a relay from the named owner node; it has no segmenter (HLS is served from the
    /// owner) and ends as soon as its relay does.
    pub relay_from: Option<String>,
    /// Continue the HLS playlist another node had for this key (see [`SegmenterArgs::resume`]).
    pub hls_resume: Option<Resume>,
}

/// The stream actor (see the module docs).
pub struct StreamActor;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Live,
    Waiting,
    Ended,
}

/// Repeats the last picture (the last keyframe, as it came) with silent audio while the publisher is away, for up to
/// `stream.repeat_frame_secs`, on the stream's clock: players see a still picture instead of stalling, and the
/// returning publisher's frames follow on the timeline (HLS starts them with a discontinuity, as after any gap).
struct Filler {
    /// When the publisher left: the repeats are timed from here.
    left: Instant,
    /// The stream time of the last frame before it left.
    from_ts: u32,
    /// The stream's frame interval (ms): the first repeat comes this long after the last frame.
    step_ms: u32,
    /// The keyframe repeated.
    picture: MediaFrame,
    /// A silent AAC frame (its FLV tag body) and its duration in ms; `None` without AAC audio.
    silence: Option<(Bytes, f64)>,
    /// Stream time (ms) of the next silent frame.
    next_audio_ms: f64,
    /// Repeats so far: repeat `k` is at `from_ts + step_ms + k × grid_ms`, on a fixed grid (parts of even
    /// length, whatever the timer's jitter).
    repeats: u32,
    /// Milliseconds between repeats: [`FILL_INTERVAL`], or the part target if shorter (no part is longer).
    grid_ms: u32,
}

/// How often the picture is repeated while the publisher is away.
const FILL_INTERVAL: Duration = Duration::from_millis(200);

/// How far beyond the hand-over the picture of a stream another node takes over is repeated (see
/// `StreamMsg::StopRepeating`): the next owner's first part comes about 0.4 s after its claim (150 ms of claim
/// settling, the publisher's first frames, one 200 ms part). What it adds to the stall-free gap (~0.2 s) is
/// latency that players keep after the hand-over (hls.js does not speed up to catch up): 0.6 s added 0.4 s.
const HANDOVER_LEAD: Duration = Duration::from_millis(400);

/// Maps a publisher's timestamps onto the stream's continuous timeline.
///
/// A local publisher's session starts one frame interval after the last frame out (or after the time another
/// node's stream had reached, for a stream taken over from it: see [`Resume::timeline_ms`]), so players and HLS
/// see timestamps go on across reconnects and hand-overs. A relay's session keeps its upstream's timestamps as
/// they are while they go forward from there: a relay stream runs on its owner's timeline, so when a local
/// publisher takes it over (see `StreamMsg::Promote`), the playlist it continues goes on in the owner's time.
#[derive(Debug, Default)]
struct Timeline {
    first_in: Option<u32>,
    session_base: u32,
    last_out: Option<u32>,
    last_video_delta: u32,
    /// Where another node's stream of this key had reached: sessions start after it (and after `last_out`).
    after: Option<u32>,
}

/// Whether stream time `a` is after `b` (wrapping, as 32-bit millisecond timestamps do).
fn later(a: u32, b: u32) -> bool {
    (a.wrapping_sub(b) as i32) > 0
}

impl Timeline {
    /// A timeline whose first session continues after `after` (another node's stream time).
    fn after(after: Option<u32>) -> Timeline {
        Timeline { after, ..Default::default() }
    }

    /// Sessions from now on also continue after `t` (another node's stream time), if it is later.
    fn continue_after(&mut self, t: Option<u32>) {
        if let Some(t) = t {
            self.after = Some(self.after.filter(|&a| later(a, t)).unwrap_or(t));
        }
    }

    fn new_session(&mut self) {
        self.first_in = None;
        // Continue 1 frame interval (default ~40 ms) after the last output.
        let last = match (self.last_out, self.after) {
            (Some(o), Some(a)) => Some(if later(a, o) { a } else { o }),
            (o, a) => o.or(a),
        };
        self.session_base = last.map(|t| t.wrapping_add(self.last_video_delta.clamp(1, 1000).max(40))).unwrap_or(0);
    }

    /// As [`Timeline::map`], for a relay: the upstream's own timestamps, unless they would go back (the upstream
    /// is another owner's, behind this stream's time), then continued as a new session is. Sequence headers do
    /// not start a session: their timestamps say nothing of where media is.
    fn map_relayed(&mut self, ts: u32, kind: MediaKind, header: bool) -> u32 {
        if self.first_in.is_none() {
            if header {
                return self.session_base;
            }
            // `session_base` is where a continued session would start: the upstream keeps its timestamps if they
            // are not before it.
            if self.last_out.or(self.after).is_none() || !later(self.session_base, ts) {
                self.session_base = ts;
            }
        }
        self.map(ts, kind)
    }

    /// A frame made here (a repeated picture) at `ts`: the next session continues after it.
    fn advance(&mut self, ts: u32) {
        if self.last_out.is_none_or(|p| (ts.wrapping_sub(p) as i32) > 0) {
            self.last_out = Some(ts);
        }
    }

    fn map(&mut self, ts: u32, kind: MediaKind) -> u32 {
        let first = *self.first_in.get_or_insert(ts);
        let delta = (ts.wrapping_sub(first) as i32).max(0) as u32;
        let out = self.session_base.wrapping_add(delta);
        if kind == MediaKind::Video {
            if let Some(prev) = self.last_out {
                let d = out.wrapping_sub(prev);
                if d > 0 && d < 1000 {
                    self.last_video_delta = d;
                }
            }
        }
        if self.last_out.is_none_or(|p| (out.wrapping_sub(p) as i32) > 0) {
            self.last_out = Some(out);
        }
        out
    }
}

/// The actor's state.
pub struct StreamState {
    key: StreamKey,
    config: Arc<Config>,
    metrics: Arc<Metrics>,
    registry: ActorRef<RegistryMsg>,
    segmenter: Option<ActorRef<SegmenterMsg>>,
    /// Bytes queued for the segmenter, and whether it is skipping frames to catch up (see [`super::queue`]).
    seg_queue: Arc<QueueBudget>,
    seg_behind: bool,
    /// Bytes publishers have queued for this actor.
    inbox: Arc<QueueBudget>,
    relay_from: Option<String>,
    fanout: FanoutSender,
    viewers: Arc<ViewerCounts>,
    phase: Phase,
    publisher: Option<u64>,
    epoch: u64,
    metadata: Option<Bytes>,
    meta: Option<StreamMetadata>,
    video_header: Option<MediaFrame>,
    audio_header: Option<MediaFrame>,
    /// The GOP cache, shared as it is with every subscriber (a subscribe is O(1)); appended to in place when no
    /// subscriber still holds it.
    gop: Arc<Vec<MediaFrame>>,
    gop_bytes: usize,
    timeline: Timeline,
    /// The last keyframe and the time of the last audio frame (what a [`Filler`] repeats and continues).
    last_idr: Option<MediaFrame>,
    last_audio_ts: Option<u32>,
    filler: Option<Filler>,
    /// The segmenter was told the publisher's session is over (its segment closed) since the last publish.
    segmenter_left: bool,
    created: Instant,
    publish_started: Option<Instant>,
    ingest_bytes: u64,
    rate: RateMeter,
    video_frames: u64,
    /// When the last keyframe came (wall clock) and its timestamp; the interval between the last two (ms).
    last_keyframe: Option<(Instant, u32)>,
    keyframe_interval_ms: Option<u32>,
    /// A keyframe timeout was reported and no keyframe came since.
    keyframe_missing: bool,
    /// The GOP being long: caching stopped until the next keyframe.
    gop_over: bool,
}

/// Ingest bitrate and frame rate over a sliding second.
#[derive(Debug, Default)]
struct RateMeter {
    window_start: Option<Instant>,
    bytes: u64,
    frames: u64,
    bitrate: f64,
    fps: f64,
}

impl RateMeter {
    fn add(&mut self, bytes: usize, video_frame: bool) {
        let now = Instant::now();
        let start = *self.window_start.get_or_insert(now);
        self.bytes += bytes as u64;
        self.frames += u64::from(video_frame);
        let el = now.duration_since(start);
        if el >= Duration::from_secs(2) {
            self.bitrate = self.bytes as f64 * 8.0 / el.as_secs_f64();
            self.fps = self.frames as f64 / el.as_secs_f64();
            self.window_start = Some(now);
            self.bytes = 0;
            self.frames = 0;
        }
    }
}

impl Actor for StreamActor {
    type Msg = StreamMsg;
    type State = StreamState;
    type Arguments = StreamArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<StreamMsg>,
        args: StreamArgs,
    ) -> Result<StreamState, ActorProcessingErr> {
        let timeline = Timeline::after(args.hls_resume.as_ref().and_then(|r| r.timeline_ms));
        let seg_queue = QueueBudget::new(args.config.stream.queue_max_bytes);
        let segmenter = match args.relay_from {
            Some(_) => None,
            None => {
                let (segmenter, _) = Actor::spawn_linked(
                    None,
                    Segmenter,
                    SegmenterArgs {
                        key: args.key.clone(),
                        queue: seg_queue.clone(),
                        hls: args.config.hls.clone(),
                        metrics: args.metrics.clone(),
                        resume: args.hls_resume,
                        reader: args.hls_slot.clone(),
                    },
                    myself.get_cell(),
                )
                .await?;
                Some(segmenter)
            }
        };
        let fanout = FanoutSender::new(args.config.stream.player_queue_frames, args.config.stream.player_write_hold_ms);
        args.metrics.streams_active.inc();
        Ok(StreamState {
            key: args.key,
            config: args.config,
            metrics: args.metrics,
            registry: args.registry,
            segmenter,
            seg_queue,
            seg_behind: false,
            inbox: args.inbox,
            relay_from: args.relay_from,
            fanout,
            viewers: args.viewers,
            phase: Phase::Waiting,
            publisher: None,
            epoch: 0,
            metadata: None,
            meta: None,
            video_header: None,
            audio_header: None,
            gop: Arc::default(),
            gop_bytes: 0,
            timeline,
            last_idr: None,
            last_audio_ts: None,
            filler: None,
            segmenter_left: false,
            created: Instant::now(),
            publish_started: None,
            ingest_bytes: 0,
            rate: RateMeter::default(),
            video_frames: 0,
            last_keyframe: None,
            keyframe_interval_ms: None,
            keyframe_missing: false,
            gop_over: false,
        })
    }

    async fn post_stop(&self, _myself: ActorRef<StreamMsg>, state: &mut StreamState) -> Result<(), ActorProcessingErr> {
        state.metrics.streams_active.dec();
        if state.publisher.take().is_some() {
            state.metrics.publishers.dec();
        }
        state.fanout.send(StreamEvent::End);
        // Children are not stopped with their supervisor in ractor: end the segmenter explicitly.
        if let Some(s) = &state.segmenter {
            s.stop(Some("stream ended".into()));
        }
        Ok(())
    }

    async fn handle(
        &self,
        myself: ActorRef<StreamMsg>,
        msg: StreamMsg,
        st: &mut StreamState,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            StreamMsg::Publish { publisher, reply } => {
                let result = match st.phase {
                    Phase::Live => Err(PublishError::Busy),
                    Phase::Ended => Err(PublishError::Ended),
                    Phase::Waiting => {
                        let resumed = st.timeline.last_out.is_some();
                        if st.end_filler() && st.phase == Phase::Waiting {
                            // The repeated picture ends here: what follows is a new session.
                            st.publisher_gap();
                        } else if st.phase == Phase::Waiting && !st.segmenter_left {
                            // The repeats stopped for another node's claim: the segmenter closes what it had.
                            st.to_segmenter(SegmenterMsg::PublisherLeft);
                        }
                        st.segmenter_left = false;
                        st.phase = Phase::Live;
                        st.publisher = Some(publisher);
                        st.epoch += 1;
                        st.timeline.new_session();
                        st.reset_gop();
                        st.video_header = None;
                        st.audio_header = None;
                        st.metadata = None;
                        st.publish_started = Some(Instant::now());
                        st.last_keyframe = None;
                        st.keyframe_missing = false;
                        st.gop_over = false;
                        st.metrics.publishers.inc();
                        if resumed {
                            info!(stream = %st.key, "publisher resumed the stream");
                            st.to_segmenter(SegmenterMsg::Discontinuity);
                        } else {
                            info!(stream = %st.key, "stream started");
                        }
                        Ok(())
                    }
                };
                let _ = reply.send(result);
            }
            StreamMsg::Metadata { publisher, meta } => {
                if st.publisher == Some(publisher) {
                    let body = crate::formats::flv::encode_on_metadata(&meta);
                    st.metadata = Some(body.clone());
                    st.meta = Some(*meta);
                    st.fanout.send(StreamEvent::Metadata(body));
                }
            }
            StreamMsg::MetadataRaw { publisher, body } => {
                if st.publisher == Some(publisher) {
                    st.metadata = Some(body.clone());
                    st.fanout.send(StreamEvent::Metadata(body));
                }
            }
            StreamMsg::Media { publisher, mut frame } => {
                st.inbox.done(frame.flv_body().len());
                if st.publisher != Some(publisher) {
                    return Ok(());
                }
                frame.timestamp = if st.relay_from.is_some() {
                    st.timeline.map_relayed(frame.timestamp, frame.kind, frame.header)
                } else {
                    st.timeline.map(frame.timestamp, frame.kind)
                };
                st.ingest_bytes += frame.flv_body().len() as u64;
                st.metrics.ingest_bytes.inc_by(frame.flv_body().len() as u64);
                st.rate.add(frame.flv_body().len(), frame.kind == MediaKind::Video && !frame.header);
                st.ingest(frame);
            }
            StreamMsg::UpstreamLeft { publisher } => {
                if st.publisher == Some(publisher) {
                    st.fanout.send(StreamEvent::PublisherLeft);
                    st.reset_gop();
                    // What comes next may be another owner's timeline (a relay that followed the stream to its
                    // next owner): continue this stream's timeline from where it is, whatever the upstream's.
                    st.timeline.new_session();
                }
            }
            StreamMsg::Promote { resume, reply } => {
                if st.relay_from.is_none() || st.phase == Phase::Ended {
                    let _ = reply.send(None);
                    return Ok(());
                }
                // The relay ran on the owner's timeline; the owner may have listed a little more than it relayed.
                st.timeline.continue_after(resume.as_ref().and_then(|r| r.timeline_ms));
                let slot = Arc::new(std::sync::OnceLock::new());
                let args = SegmenterArgs {
                    key: st.key.clone(),
                    queue: st.seg_queue.clone(),
                    hls: st.config.hls.clone(),
                    metrics: st.metrics.clone(),
                    resume,
                    reader: slot.clone(),
                };
                let segmenter = match Actor::spawn_linked(None, Segmenter, args, myself.get_cell()).await {
                    Ok((segmenter, _)) => segmenter,
                    Err(e) => {
                        warn!(stream = %st.key, error = %e, "cannot start a segmenter for the relayed stream");
                        let _ = reply.send(None);
                        return Ok(());
                    }
                };
                st.segmenter = Some(segmenter);
                st.relay_from = None;
                if st.publisher.take().is_some() {
                    st.metrics.publishers.dec();
                }
                if st.phase == Phase::Live {
                    st.fanout.send(StreamEvent::PublisherLeft);
                    st.reset_gop();
                }
                st.phase = Phase::Waiting;
                info!(stream = %st.key, "the relayed stream is this node's now: its players wait for the local publisher");
                // The local publisher is on its way; if it never comes, the stream ends after the grace.
                let epoch = st.epoch;
                myself.send_after(st.config.reconnect_grace(), move || StreamMsg::GraceExpired { epoch });
                let _ = reply.send(slot.get().cloned());
            }
            StreamMsg::RelayMoved { publisher, node } => {
                if st.publisher == Some(publisher) && st.relay_from.is_some() {
                    st.relay_from = Some(node);
                }
            }
            StreamMsg::Unpublish { publisher, input_lost } => {
                if st.publisher == Some(publisher) {
                    st.publisher = None;
                    st.phase = Phase::Waiting;
                    st.metrics.publishers.dec();
                    if st.relay_from.is_some() {
                        // A relay stream has nothing to wait for: it is over.
                        st.fanout.send(StreamEvent::End);
                        st.phase = Phase::Ended;
                        let _ = st.registry.cast(RegistryMsg::Retire { key: st.key.clone(), id: myself.get_id() });
                        return Ok(());
                    }
                    let epoch = st.epoch;
                    info!(stream = %st.key, grace_secs = st.config.stream.reconnect_grace_secs, "publisher left");
                    myself.send_after(st.config.reconnect_grace(), move || StreamMsg::GraceExpired { epoch });
                    if input_lost && st.start_filler() {
                        // The stream goes on with its last picture, frame after frame (see `Filler`): players,
                        // relays, encoders and the segmenter see no gap until the repeats end.
                        if st.fill() {
                            myself.send_after(FILL_INTERVAL, move || StreamMsg::Fill { epoch });
                        } else {
                            st.publisher_gap();
                        }
                    } else {
                        st.publisher_gap();
                    }
                }
            }
            StreamMsg::Subscribe { protocol, reply } => {
                // A player may also join while the stream waits for its publisher to come back (it starts when
                // the publisher does); relays and encoders need a live source.
                let player = matches!(protocol, Protocol::Rtmp | Protocol::Flv);
                let open = st.phase == Phase::Live || (player && st.phase == Phase::Waiting && st.epoch > 0);
                let sub = open.then(|| Subscription {
                    metadata: st.metadata.clone(),
                    video_header: st.video_header.clone(),
                    audio_header: st.audio_header.clone(),
                    gop: if st.config.stream.gop_cache { st.gop.clone() } else { Arc::default() },
                    has_video: st.video_header.is_some() || st.video_frames > 0,
                    rx: st.fanout.subscribe(),
                    guard: ViewerGuard::new(st.viewers.clone(), st.metrics.clone(), protocol),
                });
                let _ = reply.send(sub);
            }
            StreamMsg::Info(reply) => {
                let _ = reply.send(st.info());
            }
            StreamMsg::Disconnect => {
                if st.phase != Phase::Ended {
                    if st.publisher.take().is_some() {
                        st.metrics.publishers.dec();
                    }
                    st.reset_gop();
                    st.to_segmenter(SegmenterMsg::PublisherLeft);
                    info!(stream = %st.key, "publisher disconnected: the stream ends");
                    st.end(&myself);
                }
            }
            StreamMsg::EndIfWaiting => {
                if st.phase == Phase::Waiting {
                    st.end(&myself);
                }
            }
            StreamMsg::GraceExpired { epoch } => {
                if epoch == st.epoch && st.phase == Phase::Waiting {
                    st.end(&myself);
                }
            }
            StreamMsg::LingerExpired { epoch } => {
                if epoch == st.epoch && st.phase == Phase::Ended {
                    let _ = st.registry.cast(RegistryMsg::Retire { key: st.key.clone(), id: myself.get_id() });
                }
            }
            StreamMsg::Stall { segmenter: true, duration } => st.to_segmenter(SegmenterMsg::Stall(duration)),
            StreamMsg::Stall { segmenter: false, duration } => tokio::time::sleep(duration).await,
            StreamMsg::Fill { epoch } => {
                if epoch == st.epoch && st.phase == Phase::Waiting && st.filler.is_some() {
                    if st.fill() {
                        myself.send_after(FILL_INTERVAL, move || StreamMsg::Fill { epoch });
                    } else {
                        st.publisher_gap();
                    }
                }
            }
            StreamMsg::StopRepeating(reply) => {
                if st.filler.is_some() && st.phase == Phase::Waiting {
                    info!(stream = %st.key, "another node takes the stream over: its last picture is no longer repeated here");
                    // The picture goes on for HANDOVER_LEAD beyond now, in the segment closed here: it covers the
                    // time until the next owner's first part (its claim settling, the publisher's first frames, a
                    // part's worth of them), so players at the live edge see a still picture instead of a stall.
                    st.fill_ahead(HANDOVER_LEAD);
                    st.end_filler();
                    // Players wait for what comes next; the segment closes, and it is shared before the answer, so
                    // the next owner numbers on from it (the caller pushes the final playlist, then answers).
                    st.publisher_gap();
                    if let Some(s) = &st.segmenter {
                        let _ = s.call(SegmenterMsg::Sync, Some(Duration::from_secs(1))).await;
                    }
                }
                let _ = reply.send(());
            }
            StreamMsg::Shutdown => {
                if st.publisher.take().is_some() {
                    st.metrics.publishers.dec();
                }
                st.fanout.send(StreamEvent::End);
                st.to_segmenter(SegmenterMsg::EndList);
                st.phase = Phase::Ended;
            }
        }
        Ok(())
    }

    async fn handle_supervisor_evt(
        &self,
        myself: ActorRef<StreamMsg>,
        evt: SupervisionEvent,
        st: &mut StreamState,
    ) -> Result<(), ActorProcessingErr> {
        match evt {
            SupervisionEvent::ActorFailed(_, err) => {
                warn!(stream = %st.key, error = %err, "segmenter failed: ending the stream");
                myself.stop(Some(format!("segmenter failed: {err}")));
            }
            SupervisionEvent::ActorTerminated(_, _, reason) if myself.get_status() == ractor::ActorStatus::Running => {
                myself.stop(Some(format!("segmenter stopped: {}", reason.unwrap_or_default())));
            }
            _ => {}
        }
        Ok(())
    }
}

impl StreamState {
    /// Empties the GOP cache (in place, keeping its capacity, unless a subscriber still holds the snapshot).
    fn reset_gop(&mut self) {
        match Arc::get_mut(&mut self.gop) {
            Some(gop) => gop.clear(),
            None => self.gop = Arc::default(),
        }
        self.gop_bytes = 0;
    }

    fn to_segmenter(&self, msg: SegmenterMsg) {
        if let Some(s) = &self.segmenter {
            let _ = s.cast(msg);
        }
    }

    fn ingest(&mut self, frame: MediaFrame) {
        if frame.header {
            match frame.kind {
                MediaKind::Video => self.video_header = Some(frame.clone()),
                MediaKind::Audio => self.audio_header = Some(frame.clone()),
            }
        } else if frame.kind == MediaKind::Audio {
            self.last_audio_ts = Some(frame.timestamp);
        } else if frame.kind == MediaKind::Video {
            self.video_frames += 1;
            if frame.keyframe {
                self.last_idr = Some(frame.clone());
                self.reset_gop();
                self.gop_over = false;
                if let Some((_, ts)) = self.last_keyframe {
                    self.keyframe_interval_ms = Some((frame.timestamp.wrapping_sub(ts) as i32).max(0) as u32);
                }
                self.last_keyframe = Some((Instant::now(), frame.timestamp));
                if std::mem::take(&mut self.keyframe_missing) {
                    info!(stream = %self.key, "keyframes are back");
                }
            } else {
                self.check_keyframe_timeout();
            }
        }
        if !frame.header
            && !self.gop_over
            && (!self.gop.is_empty() || (frame.kind == MediaKind::Video && frame.keyframe))
        {
            // Signed: an audio frame may be stamped a little before the keyframe that opened the GOP.
            let span_ms =
                self.gop.first().map_or(0, |first| (frame.timestamp.wrapping_sub(first.timestamp) as i32).max(0));
            let too_long = f64::from(span_ms) > self.config.stream.gop_cache_max_secs * 1000.0;
            if too_long || self.gop.len() >= GOP_MAX_FRAMES || self.gop_bytes + frame.flv_body().len() > GOP_MAX_BYTES {
                // An overlong GOP: stop caching until the next keyframe rather than grow; a player joining now
                // starts at the live edge and waits for that keyframe.
                self.reset_gop();
                self.gop_over = true;
            } else {
                self.gop_bytes += frame.flv_body().len();
                Arc::make_mut(&mut self.gop).push(frame.clone());
            }
        }
        self.feed_segmenter(&frame);
        // No receivers is fine: nobody is watching over RTMP/FLV right now.
        self.fanout.send(StreamEvent::Frame(frame));
    }

    /// Hands a frame to the segmenter, unless it is more than `stream.queue_max_bytes` behind: then it gets no
    /// frames (its open segment closed) until it is under half of that and a keyframe comes, which starts the next
    /// segment with a discontinuity (see [`super::queue`]). Sequence headers always go.
    fn feed_segmenter(&mut self, frame: &MediaFrame) {
        let Some(s) = &self.segmenter else { return };
        if !frame.header {
            if self.seg_behind {
                let start = frame.kind == MediaKind::Video && frame.keyframe || self.video_header.is_none();
                if start && self.seg_queue.drained() {
                    self.seg_behind = false;
                    info!(stream = %self.key, "HLS segmenter caught up: segments resume with a discontinuity");
                    let _ = s.cast(SegmenterMsg::Discontinuity);
                }
            } else if self.seg_queue.over() {
                self.seg_behind = true;
                warn!(stream = %self.key, queued = self.seg_queue.queued(), "HLS segmenter is behind by more than stream.queue_max_bytes: skipping frames until it catches up (RTMP and HTTP-FLV go on)");
                let _ = s.cast(SegmenterMsg::PublisherLeft);
            }
            if self.seg_behind {
                self.metrics.frames_dropped.with_label_values(&["segmenter_behind"]).inc();
                return;
            }
        }
        self.seg_queue.add(frame.flv_body().len());
        let _ = s.cast(SegmenterMsg::Frame(frame.clone()));
    }

    /// The publisher's session is over for the stream's consumers: players and relays stay attached through the
    /// grace (they get `End` when it runs out) and wait for the next keyframe; encoders end; the segmenter closes
    /// its segment. Nothing of the old session is served to a player joining in the gap: it starts at the
    /// returning publisher's first keyframe.
    fn publisher_gap(&mut self) {
        self.fanout.send(StreamEvent::PublisherLeft);
        self.reset_gop();
        self.to_segmenter(SegmenterMsg::PublisherLeft);
        self.segmenter_left = true;
    }

    /// Starts repeating the last picture (see [`Filler`]) if `stream.repeat_frame_secs` asks for it and there is
    /// one; whether it started.
    fn start_filler(&mut self) -> bool {
        self.filler = None;
        let (Some(picture), Some(from_ts)) = (self.last_idr.clone(), self.timeline.last_out) else { return false };
        if self.config.stream.repeat_frame_secs <= 0.0 {
            return false;
        }
        let silence = self.audio_header.as_ref().and_then(|h| {
            let cfg = crate::formats::aac::AacConfig::parse(&h.payload()).ok()?;
            let raw = cfg.silent_frame()?;
            // The publisher's own FLV sound header byte, then AAC raw data (packet type 1).
            let mut body = Vec::with_capacity(raw.len() + 2);
            body.extend_from_slice(&[*h.flv_body().first()?, 1]);
            body.extend_from_slice(&raw);
            Some((Bytes::from(body), 1_024_000.0 / f64::from(cfg.sample_rate.max(1))))
        });
        let next_audio_ms = match (&silence, self.last_audio_ts) {
            (Some((_, step)), Some(ts)) => f64::from(ts) + step,
            _ => f64::from(from_ts),
        };
        let step_ms = self.timeline.last_video_delta.clamp(1, 1000);
        let grid_ms = (FILL_INTERVAL.as_millis() as u32).min(self.config.hls.part_target_ms.max(1));
        let left = Instant::now();
        self.filler = Some(Filler { left, from_ts, step_ms, picture, silence, next_audio_ms, repeats: 0, grid_ms });
        true
    }

    /// The repeats end (the publisher is back, another node takes the stream over, or their time is up): silence
    /// up to the end of the last picture, so the audio does not end a picture's length before the video (a hole a
    /// player would stall at, where the next session joins). Whether there were repeats.
    fn end_filler(&mut self) -> bool {
        let Some(mut f) = self.filler.take() else { return false };
        if let (Some((body, step)), Some(k)) = (&f.silence, f.repeats.checked_sub(1)) {
            let end = f64::from(f.from_ts) + f64::from(f.step_ms) + f64::from(k + 1) * f64::from(f.grid_ms);
            while f.next_audio_ms < end {
                let at = (f.next_audio_ms.round() as u64 % (1u64 << 32)) as u32;
                if let Ok(frame) = MediaFrame::parse(MediaKind::Audio, at, body.clone()) {
                    self.timeline.advance(frame.timestamp);
                    self.ingest(frame);
                }
                f.next_audio_ms += step;
            }
        }
        true
    }

    /// The repeats due by now (see [`StreamState::fill_ahead`]). False once `stream.repeat_frame_secs` has passed
    /// (the repeats end; players wait, as without them).
    fn fill(&mut self) -> bool {
        let limit = self.config.stream.repeat_frame_secs;
        let Some(f) = self.filler.as_ref() else { return false };
        if f.left.elapsed().as_secs_f64() > limit {
            info!(stream = %self.key, repeat_frame_secs = limit, "the publisher is still away: its last picture is no longer repeated");
            self.end_filler();
            return false;
        }
        self.fill_ahead(Duration::ZERO)
    }

    /// The repeats of the last picture (each with the silence up to it) due by `ahead` beyond now on the stream's
    /// clock: the first follows the last frame by one frame interval (at once), the next ones keep the grid.
    fn fill_ahead(&mut self, ahead: Duration) -> bool {
        let Some(f) = self.filler.as_mut() else { return false };
        let due_ms = (f.left.elapsed() + ahead).as_millis().min(u128::from(u32::MAX)) as u32;
        let due_ms = due_ms.max(f.step_ms);
        let mut frames = Vec::new();
        loop {
            let since_ms = f.step_ms.saturating_add(f.repeats.saturating_mul(f.grid_ms));
            if since_ms > due_ms {
                break;
            }
            let end = f64::from(f.from_ts) + f64::from(since_ms);
            if let Some((body, step)) = &f.silence {
                while f.next_audio_ms <= end {
                    let at = (f.next_audio_ms.round() as u64 % (1u64 << 32)) as u32;
                    frames.extend(MediaFrame::parse(MediaKind::Audio, at, body.clone()).ok());
                    f.next_audio_ms += step;
                }
            }
            let ts = f.from_ts.wrapping_add(since_ms);
            frames.extend(MediaFrame::parse(MediaKind::Video, ts, f.picture.flv_body().clone()).ok());
            f.repeats += 1;
        }
        for frame in frames {
            if frame.kind == MediaKind::Video {
                self.metrics.repeated_frames.inc();
            }
            self.timeline.advance(frame.timestamp);
            self.ingest(frame);
        }
        true
    }

    /// Video without a keyframe for longer than `stream.keyframe_timeout_secs` (since the last one, or since the
    /// publish started): reported once per spell.
    fn check_keyframe_timeout(&mut self) {
        if self.keyframe_missing {
            return;
        }
        let since = match (self.last_keyframe, self.publish_started) {
            (Some((at, _)), _) => at,
            (None, Some(at)) => at,
            (None, None) => return,
        };
        let limit = self.config.stream.keyframe_timeout_secs;
        if since.elapsed().as_secs_f64() > limit {
            self.keyframe_missing = true;
            self.metrics.keyframe_timeouts.inc();
            warn!(stream = %self.key, timeout_secs = limit, "no keyframe for too long: new players are waiting");
        }
    }

    fn end(&mut self, myself: &ActorRef<StreamMsg>) {
        self.phase = Phase::Ended;
        self.fanout.send(StreamEvent::End);
        self.to_segmenter(SegmenterMsg::EndList);
        info!(stream = %self.key, linger_secs = self.config.stream.ended_linger_secs, "stream ended");
        let epoch = self.epoch;
        myself.send_after(Duration::from_secs_f64(self.config.stream.ended_linger_secs), move || {
            StreamMsg::LingerExpired { epoch }
        });
    }

    fn info(&self) -> StreamInfo {
        let meta = self.meta.clone().unwrap_or_else(StreamMetadata::new);
        let video = self.video_header.as_ref().and_then(|h| crate::formats::avc::AvcConfig::parse(&h.payload()).ok());
        let audio = self.audio_header.as_ref().and_then(|h| crate::formats::aac::AacConfig::parse(&h.payload()).ok());
        StreamInfo {
            key: self.key.to_string(),
            state: match self.phase {
                Phase::Live => "live",
                Phase::Waiting => "waiting",
                Phase::Ended => "ended",
            }
            .into(),
            video_codec: video.as_ref().map(|v| v.codec_string()),
            audio_codec: audio.as_ref().map(|a| a.codec_string()),
            width: video.as_ref().map(|v| v.width).or(meta.video_width),
            height: video.as_ref().map(|v| v.height).or(meta.video_height),
            fps: if self.rate.fps > 0.0 {
                Some((self.rate.fps * 100.0).round() / 100.0)
            } else {
                meta.video_frame_rate.map(f64::from)
            },
            audio_sample_rate: audio.as_ref().map(|a| a.sample_rate),
            ingest_bitrate: self.rate.bitrate.round() as u64,
            ingest_bytes: self.ingest_bytes,
            viewers_rtmp: self.viewers.get(Protocol::Rtmp),
            viewers_flv: self.viewers.get(Protocol::Flv),
            viewers_hls: 0,
            uptime_secs: self.publish_started.map(|t| t.elapsed().as_secs_f64()).unwrap_or(0.0).round(),
            age_secs: self.created.elapsed().as_secs_f64().round(),
            encoder: meta.encoder,
            relay_from: self.relay_from.clone(),
            keyframe_interval_secs: self.keyframe_interval_ms.map(|ms| f64::from(ms) / 1000.0),
            gop_cache_secs: match (self.gop.first(), self.gop.last()) {
                (Some(a), Some(b)) => f64::from((b.timestamp.wrapping_sub(a.timestamp) as i32).max(0)) / 1000.0,
                _ => 0.0,
            },
            keyframe_missing: self.keyframe_missing,
            repeating: self.filler.is_some() && self.phase == Phase::Waiting,
        }
    }
}

impl std::fmt::Debug for StreamState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StreamState").field("key", &self.key).field("phase", &self.phase).finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timeline_is_continuous_across_sessions() {
        let mut t = Timeline::default();
        t.new_session();
        assert_eq!(t.map(1000, MediaKind::Video), 0);
        assert_eq!(t.map(1033, MediaKind::Video), 33);
        assert_eq!(t.map(1020, MediaKind::Audio), 20);
        t.new_session();
        let first = t.map(0, MediaKind::Video);
        assert!(first > 33 && first <= 33 + 1000, "{first}");
        assert_eq!(t.map(33, MediaKind::Video), first + 33);
    }

    #[test]
    fn a_stream_taken_over_continues_the_time_the_previous_owner_had_reached() {
        // The previous owner's segmenter had reached 20.7 s; the new publisher starts at 0.
        let mut t = Timeline::after(Some(20_700));
        t.new_session();
        let first = t.map(0, MediaKind::Video);
        assert!(first > 20_700 && first <= 20_700 + 1000, "{first}");
        assert_eq!(t.map(33, MediaKind::Video), first + 33);
        // Without a previous owner's time: from zero.
        let mut t = Timeline::after(None);
        t.new_session();
        assert_eq!(t.map(500, MediaKind::Video), 0);
    }

    #[test]
    fn a_relay_keeps_its_owner_s_time_and_a_promoted_relay_continues_it() {
        let mut t = Timeline::default();
        t.new_session();
        // The owner is 60 s into its stream: the relay keeps its timestamps (headers do not start the session).
        assert_eq!(t.map_relayed(0, MediaKind::Video, true), 0);
        assert_eq!(t.map_relayed(60_000, MediaKind::Video, false), 60_000);
        assert_eq!(t.map_relayed(60_033, MediaKind::Video, false), 60_033);
        // The owner's publisher leaves; its next owner goes on in the same time: still kept.
        t.new_session();
        assert_eq!(t.map_relayed(62_000, MediaKind::Video, false), 62_000);
        // A next owner behind this stream's time (an earlier release's, from zero): continued instead.
        t.new_session();
        let cont = t.map_relayed(100, MediaKind::Video, false);
        assert!(cont > 62_000 && cont <= 63_000, "{cont}");
        assert_eq!(t.map_relayed(133, MediaKind::Video, false), cont + 33);
        // Promoted: the owner had listed up to 70 s (it relayed less); the local publisher continues after that.
        t.continue_after(Some(70_000));
        t.continue_after(Some(69_000));
        t.new_session();
        let local = t.map(0, MediaKind::Video);
        assert!(local > 70_000 && local <= 71_000, "{local}");
    }
}
