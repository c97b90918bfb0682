//! The ABR ladder: encoder actors turn a published stream into renditions ("rungs"), each a stream of its own.
//!
//! - [`ladder`]: which rungs a source gets (never upscale), their sizes and stream keys (`app/KEY_480p`).
//! - [`pipeline`]: the codec work: decode once (FFmpeg H.264), scale per rung (swscale), encode (libx264) with
//!   keyframes forced exactly where the source has them.
//! - [`worker`]: the encoder's dedicated OS thread: probes the frame rate, runs the pipeline, passes the source's
//!   AAC through to every rung (same frames, interleaved by time) and publishes the rungs.
//! - [`encoder`]: the encoder actor of one stream: subscribes to the source like a player and feeds the worker
//!   through a bounded channel.
//! - [`shed`]: when the ladder falls behind real time, which rung to shed and when to restore it (pure rules).
//! - [`supervisor`]: starts an encoder per published stream (`transcode.mode = "always"`, at most
//!   `transcode.max_streams`), restarts a failed one with backoff (`strom_encoder_restarts_total`).
//! - [`remote`]: the cluster face of a ladder (found by any node for the master playlist; watched by the owner).
//! - [`master`]: the HLS master playlist at `/live/KEY/index.m3u8` (the source's media playlist moves to
//!   `/live/KEY/source.m3u8`).
//!
//! Rungs go back in through [`Streams::publish`], so RTMP, HTTP-FLV and HLS serve them and the cluster relays them
//! like any stream. Codec work never runs on the tokio reactor.
//!
//! **In a cluster** (`mode = "always"`) the source's owner places each ladder on the least-loaded node (itself
//! included; load = `strom_load_ratio` + 0.25 per ladder already running, shared with heartbeats; draining nodes
//! and nodes without a free slot are skipped; among equals the node with the fewest streams, players and relays
//! wins, so a new, idle node takes new work first, then the lower name). The chosen node's encoder subscribes to the source through a relay and claims the rungs there; the
//! owner re-places a ladder whose node vanished within a second of noticing, and a draining node hands its
//! ladders over. Every node serves the same master playlist (asked of the ladder's node). Transcoding
//! settings should be the same on every node. On-demand ladders run on the owner.

pub mod encoder;
pub mod ladder;
pub mod master;
pub mod pipeline;
pub mod remote;
pub mod shed;
pub mod supervisor;
pub mod vod;
pub mod worker;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use prometheus::{GaugeVec, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, Opts};
use ractor::{Actor, ActorProcessingErr, ActorRef};

use crate::cluster::wire::{Request, Response};
use crate::cluster::{call, encoder_group, remote_members, ClusterHandle};
use crate::config::{Config, TranscodeMode};
use crate::metrics::Metrics;
use crate::stream::ports::EncoderHost;
use crate::stream::{StreamKey, Streams};
use ladder::RungPlan;
use master::{RateStats, Variant};
use supervisor::{Supervisor, SupervisorArgs, SupervisorMsg};

/// The encoders' metrics.
pub struct TranscodeMetrics {
    /// Media seconds encoded per second of encoder thread time, per source stream (below 1: behind real time).
    pub realtime_ratio: GaugeVec,
    /// Pictures encoded, per rung (`480p`, ...).
    pub frames: IntCounterVec,
    /// Encoders restarted after a failure.
    pub restarts: IntCounter,
    /// Rungs being produced on this node.
    pub rungs_active: IntGauge,
    /// Rungs shed on this node because their ladder fell behind real time.
    pub rungs_shed: IntGauge,
    /// Source pictures decoded per second (wall clock), per source stream.
    pub fps: GaugeVec,
    /// Source picture received by the encoder → the rung's picture encoded and published, per rung.
    pub latency: HistogramVec,
}

impl TranscodeMetrics {
    /// Creates the metrics and registers them with the node's registry.
    pub fn new(metrics: &Metrics) -> TranscodeMetrics {
        TranscodeMetrics {
            realtime_ratio: metrics.register(
                GaugeVec::new(
                    Opts::new(
                        "strom_encoder_realtime_ratio",
                        "Media seconds a stream's ladder encodes per second of encoder thread time (< 1: behind).",
                    ),
                    &["stream"],
                )
                .expect("valid metric"),
            ),
            frames: metrics.register(
                IntCounterVec::new(
                    Opts::new("strom_encoder_frames_total", "Pictures encoded by the ladder, per rung."),
                    &["rung"],
                )
                .expect("valid metric"),
            ),
            restarts: metrics.register(
                IntCounter::new("strom_encoder_restarts_total", "Encoders restarted after a failure.")
                    .expect("valid metric"),
            ),
            rungs_active: metrics.register(
                IntGauge::new("strom_encoder_rungs_active", "Ladder rungs being produced on this node.")
                    .expect("valid metric"),
            ),
            rungs_shed: metrics.register(
                IntGauge::new(
                    "strom_encoder_rungs_shed",
                    "Ladder rungs shed on this node because their encoder fell behind real time.",
                )
                .expect("valid metric"),
            ),
            fps: metrics.register(
                GaugeVec::new(
                    Opts::new("strom_encoder_fps", "Source pictures a stream's ladder decodes per second."),
                    &["stream"],
                )
                .expect("valid metric"),
            ),
            latency: metrics.register(
                HistogramVec::new(
                    HistogramOpts::new(
                        "strom_encoder_latency_seconds",
                        "From a source picture reaching the encoder to the rung's picture published, per rung.",
                    )
                    .buckets(vec![0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0]),
                    &["rung"],
                )
                .expect("valid metric"),
            ),
        }
    }
}

/// What the master playlist needs to know about one rung.
#[derive(Debug, Clone)]
pub struct RungInfo {
    /// The plan (key, size, configuration).
    pub plan: RungPlan,
    /// RFC 6381 video codec of the rung's real SPS (known once its encoder is open).
    pub codec: Option<String>,
    /// Measured output (video + audio) bitrate.
    pub rate: RateStats,
    /// Still being produced.
    pub active: bool,
}

/// A stream's ladder as its encoder knows it.
#[derive(Debug, Clone, Default)]
pub struct LadderInfo {
    /// The encoder has seen the source's video configuration and planned the rungs.
    pub decided: bool,
    /// Rungs planned (their details arrive in `rungs` once the worker has opened the encoders).
    pub planned: usize,
    /// Source picture size.
    pub width: u32,
    /// Source picture height.
    pub height: u32,
    /// Source video codec (RFC 6381).
    pub video_codec: Option<String>,
    /// Source audio codec (RFC 6381), passed through to every rung.
    pub audio_codec: Option<String>,
    /// Frames per second (of the source and every rung).
    pub fps: f64,
    /// Measured source bitrate (video + audio).
    pub source_rate: RateStats,
    /// Measured audio bitrate.
    pub audio_rate: RateStats,
    /// The rungs, tallest first.
    pub rungs: Vec<RungInfo>,
}

impl LadderInfo {
    /// The master playlist's variants: the source (`source.m3u8`), then every active rung whose codec is known.
    /// Empty without a rung.
    pub fn variants(&self, source_name: &str) -> Vec<Variant> {
        let rungs: Vec<&RungInfo> = self.rungs.iter().filter(|r| r.active && r.codec.is_some()).collect();
        let (Some(video), false) = (&self.video_codec, rungs.is_empty()) else {
            return Vec::new();
        };
        let codecs = |v: &str| match &self.audio_codec {
            Some(a) => format!("{v},{a}"),
            None => v.to_string(),
        };
        let audio = if self.audio_codec.is_some() { self.audio_rate.average().unwrap_or(128_000) } else { 0 };
        let top = rungs.first().map_or(0, |r| u64::from(r.plan.config.maxrate()) * 1000);
        let mut out = vec![Variant {
            uri: "source.m3u8".into(),
            bandwidth: self.source_rate.peak().unwrap_or(2 * top + audio),
            average_bandwidth: self.source_rate.average().unwrap_or(2 * top + audio),
            width: self.width,
            height: self.height,
            frame_rate: self.fps,
            codecs: codecs(video),
        }];
        for r in rungs {
            let c = &r.plan.config;
            out.push(Variant {
                uri: format!("../{}_{}p/index.m3u8", source_name, r.plan.height),
                bandwidth: r.rate.peak().unwrap_or(u64::from(c.maxrate()) * 1000 + audio),
                average_bandwidth: r.rate.average().unwrap_or(u64::from(c.bitrate_kbps) * 1000 + audio),
                width: r.plan.width,
                height: r.plan.height,
                frame_rate: self.fps,
                codecs: codecs(r.codec.as_deref().unwrap_or_default()),
            });
        }
        out
    }
}

/// Every stream's ladder on this node (shared by encoders and HTTP).
pub type Ladders = Arc<Mutex<HashMap<StreamKey, LadderInfo>>>;

fn lock_demanded(m: &Mutex<HashMap<StreamKey, Instant>>) -> std::sync::MutexGuard<'_, HashMap<StreamKey, Instant>> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// The master playlist of `key` from this node's ladder table (see [`Transcoder::master`]).
pub async fn master_of(ladders: &Ladders, config: &Config, key: &StreamKey, wait: Duration) -> Option<String> {
    let started = Instant::now();
    let deadline = started + wait;
    // On-demand, the request that starts a ladder comes just before: give the supervisor a moment.
    let appear = match config.transcode.mode_for(key.app()) {
        TranscodeMode::OnDemand => Duration::from_millis(1500),
        _ => Duration::ZERO,
    };
    loop {
        let variants = match lock(ladders).get(key) {
            None if started.elapsed() < appear.min(wait) => None,
            None => return None,
            Some(l) if l.decided && l.planned == 0 => return None,
            Some(l) if l.decided => Some(l.variants(key.name())),
            Some(_) => None,
        };
        match variants {
            Some(v) if v.len() > 1 => return Some(master::render(&v)),
            // Rungs planned but none has produced its first picture yet: wait a little.
            _ if Instant::now() >= deadline => return None,
            _ => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
}

/// Locks the ladder table; a panic elsewhere while it was held does not make it unusable.
pub fn lock(ladders: &Ladders) -> std::sync::MutexGuard<'_, HashMap<StreamKey, LadderInfo>> {
    ladders.lock().unwrap_or_else(|e| e.into_inner())
}

/// The node's handle on transcoding. Cheap to clone.
#[derive(Clone)]
pub struct Transcoder {
    supervisor: Option<ActorRef<SupervisorMsg>>,
    config: Arc<Config>,
    ladders: Ladders,
    /// On-demand: when each source's demand was last passed to the supervisor.
    demanded: Arc<Mutex<HashMap<StreamKey, Instant>>>,
    /// Ladders running on this node.
    running: Arc<AtomicU32>,
    /// The cluster, once clustering is on ([`Transcoder::attach_cluster`]).
    cluster: ClusterSlot,
}

/// Where the transcoder finds the cluster once the node attached it.
pub type ClusterSlot = Arc<std::sync::OnceLock<ClusterHandle>>;

impl Transcoder {
    /// Starts the encoder supervisor (nothing when `transcode.mode` is `off`).
    pub async fn start(
        config: Arc<Config>,
        streams: Streams,
        metrics: Arc<Metrics>,
    ) -> Result<Transcoder, ActorProcessingErr> {
        let ladders: Ladders = Arc::default();
        let running = Arc::new(AtomicU32::new(0));
        let cluster = ClusterSlot::default();
        let supervisor = match config.transcode.enabled() {
            false => None,
            true => {
                let tmetrics = Arc::new(TranscodeMetrics::new(&metrics));
                let args = SupervisorArgs {
                    config: config.clone(),
                    streams: streams.clone(),
                    metrics,
                    tmetrics,
                    ladders: ladders.clone(),
                    running: running.clone(),
                    cluster: cluster.clone(),
                };
                let (a, _) = Actor::spawn(None, Supervisor, args).await?;
                tracing::info!(
                    max_streams = config.transcode.max_streams(),
                    rungs = config.transcode.rungs.len(),
                    apps = ?config.transcode.apps.keys().collect::<Vec<_>>(),
                    "ABR ladder on"
                );
                Some(a)
            }
        };
        Ok(Transcoder { supervisor, config, ladders, demanded: Arc::default(), running, cluster })
    }

    /// A publisher took `key` (from outside: RTMP): start its ladder (on-demand: only if HLS was asked of it
    /// within `transcode.idle_secs`, e.g. players waiting while the publisher reconnected).
    pub fn source_published(&self, key: &StreamKey) {
        let Some(s) = &self.supervisor else { return };
        match self.config.transcode.mode_for(key.app()) {
            TranscodeMode::Off => return,
            TranscodeMode::Always => {}
            TranscodeMode::OnDemand => {
                let idle = Duration::from_secs_f64(self.config.transcode.idle_secs);
                if lock_demanded(&self.demanded).get(key).is_none_or(|t| t.elapsed() >= idle) {
                    return;
                }
            }
        }
        let _ = s.cast(SupervisorMsg::Start(key.clone()));
    }

    /// On-demand transcoding for `key`'s application: the source whose ladder a request for `key` (a source or one
    /// of its rungs) would start; `None` when the ladder is not on demand there.
    pub fn on_demand_source(&self, key: &StreamKey) -> Option<StreamKey> {
        self.supervisor.as_ref()?;
        if self.config.transcode.mode_for(key.app()) != TranscodeMode::OnDemand {
            return None;
        }
        Some(ladder::source_of(key, self.config.transcode.rungs_for(key.app())).unwrap_or_else(|| key.clone()))
    }

    /// HLS was asked of `key` on this node (a playlist or segment of a source or of a rung; the caller checks that
    /// the source exists): on-demand, the source's ladder starts if it is not running.
    pub fn hls_request(&self, key: &StreamKey) {
        let Some(s) = &self.supervisor else { return };
        let source = ladder::source_of(key, self.config.transcode.rungs_for(key.app())).unwrap_or_else(|| key.clone());
        if self.config.transcode.mode_for(key.app()) != TranscodeMode::OnDemand {
            return;
        }
        let mut demanded = lock_demanded(&self.demanded);
        // Tell the supervisor at most once a second per stream (it ignores a running ladder anyway).
        if demanded.get(&source).is_some_and(|t| t.elapsed() < Duration::from_secs(1)) {
            return;
        }
        if demanded.len() > 10_000 {
            let idle = Duration::from_secs_f64(self.config.transcode.idle_secs);
            demanded.retain(|_, t| t.elapsed() < idle);
        }
        demanded.insert(source.clone(), Instant::now());
        let _ = s.cast(SupervisorMsg::Demand(source));
    }

    /// Whether `key` is reserved for a rung (an outside publisher may not take it).
    pub fn reserved(&self, key: &StreamKey) -> bool {
        self.supervisor.is_some()
            && self.config.transcode.mode_for(key.app()) != TranscodeMode::Off
            && ladder::is_rung_name(key, self.config.transcode.rungs_for(key.app()))
    }

    /// The master playlist of `key` when it has a ladder with at least one rung, from this node or (clustering
    /// on) from the node running the ladder; waits up to `wait` for a starting ladder. `None`: serve the media
    /// playlist.
    pub async fn master(&self, key: &StreamKey, wait: Duration) -> Option<String> {
        self.supervisor.as_ref()?;
        if self.cluster.get().is_some() && !lock(&self.ladders).contains_key(key) {
            if let Some(export) = remote_members(&encoder_group(key)).into_iter().next() {
                let wait_ms = wait.as_millis().min(15_000) as u32;
                let req = Request::Master { wait_ms };
                return match call(&export, &req, wait + Duration::from_secs(1)).await {
                    Some(Response::Master(m)) => m.and_then(|b| String::from_utf8(b.to_vec()).ok()),
                    _ => None,
                };
            }
        }
        master_of(&self.ladders, &self.config, key, wait).await
    }

    /// Ladders running on this node and how many more it could take (shared with the cluster as load).
    pub fn encoder_load(&self) -> (u32, u32) {
        if self.supervisor.is_none() {
            return (0, 0);
        }
        let running = self.running.load(Ordering::Relaxed);
        let max = self.config.transcode.max_streams() as u32;
        let hosts = self.config.transcode.any_mode(TranscodeMode::Always);
        (running, if hosts { max.saturating_sub(running) } else { 0 })
    }

    /// Clustering is on: ladders may be placed on other nodes, and found there.
    pub fn attach_cluster(&self, cluster: ClusterHandle) {
        let _ = self.cluster.set(cluster);
    }

    /// What the cluster calls when another node places a ladder here: accepts it if there is a free slot.
    pub fn encoder_host(&self) -> EncoderHost {
        let t = self.clone();
        Arc::new(move |key: StreamKey, owner: String| {
            let Some(s) = &t.supervisor else { return false };
            if t.encoder_load().1 == 0 {
                return false;
            }
            s.cast(SupervisorMsg::Host { key, owner }).is_ok()
        })
    }

    /// The node is draining: ladders it runs move to other nodes (those of its own streams too). Returns when
    /// they have been handed over (at most a few seconds).
    pub async fn drain(&self) {
        if let Some(s) = &self.supervisor {
            let _ = s.call(SupervisorMsg::Drain, Some(Duration::from_secs(10))).await;
        }
    }

    /// A copy of `key`'s ladder information (for the API and tests).
    pub fn ladder(&self, key: &StreamKey) -> Option<LadderInfo> {
        lock(&self.ladders).get(key).cloned()
    }
}
