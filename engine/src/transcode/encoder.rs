//! The encoder actor: one per transcoded stream, supervised by [`super::supervisor::Supervisor`].
//!
//! It runs a pump task that subscribes to the source like a player (`Protocol::Encoder`: metadata, sequence
//! headers, GOP cache, then live frames; a pump that falls a whole ring behind skips to the next keyframe like
//! a slow player), waits for the AVC sequence header, plans the rungs (never upscale), claims each rung's stream
//! through [`Streams::publish`], and hands frames to the worker thread ([`super::worker`]) through a bounded
//! channel. When the source ends the worker flushes its encoders and the rungs' publishers drop (the rung streams
//! end like any stream whose publisher left). A failure of the worker fails this actor: its supervisor counts
//! and restarts it; the source stream and its players are not affected.

use std::sync::Arc;
use std::time::Duration;

use ractor::{Actor, ActorProcessingErr, ActorRef};
use tokio::sync::{mpsc, oneshot};
use tracing::{info, warn, Instrument};

use super::pipeline::PipelineError;
use super::worker::{self, Input, WorkerCtx};
use super::{ladder, lock, Ladders, TranscodeMetrics};
use crate::config::Config;
use crate::formats::avc::AvcConfig;
use crate::formats::Codec;
use crate::metrics::Metrics;
use crate::stream::{PlayerFeed, PlayerItem, Protocol, PublishError, StreamKey, Streams};

/// Frames in flight between the pump and the worker thread (about two seconds of a 30 fps stream with audio).
const CHANNEL_FRAMES: usize = 128;
/// How long a rung claim is retried while another node still holds the rung (a ladder moving here).
const RUNG_CLAIM_WAIT: Duration = Duration::from_secs(3);
/// Source frames looked at for a video sequence header before the stream is taken as audio-only.
const MAX_FRAMES_BEFORE_VIDEO: usize = 500;

/// Messages to an encoder actor.
pub enum EncoderMsg {
    /// The pump finished: `Ok` when the source ended (or needs no ladder), `Err` on a failure.
    Done(Result<(), EncoderError>),
}

impl ractor::Message for EncoderMsg {}

/// Why an encoder failed; the actor fails with it, so its supervisor can tell the kinds apart.
#[derive(Debug, Clone)]
pub struct EncoderError {
    /// The source's video configuration or picture size changed: a restart must start from the stream's cached
    /// GOP (it holds the new configuration). Otherwise (corrupt input, codec failure) a restart skips the cache,
    /// which may hold the very pictures that failed, and waits for the next live keyframe.
    pub source_changed: bool,
    /// What happened.
    pub message: String,
}

impl EncoderError {
    /// A failure other than a source change.
    pub fn failed(message: impl Into<String>) -> EncoderError {
        EncoderError { source_changed: false, message: message.into() }
    }

    /// The source changed configuration.
    pub fn source_changed(message: impl Into<String>) -> EncoderError {
        EncoderError { source_changed: true, message: message.into() }
    }
}

impl std::fmt::Display for EncoderError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for EncoderError {}

impl From<&str> for EncoderError {
    fn from(m: &str) -> EncoderError {
        EncoderError::failed(m)
    }
}

impl From<String> for EncoderError {
    fn from(m: String) -> EncoderError {
        EncoderError::failed(m)
    }
}

impl From<PipelineError> for EncoderError {
    fn from(e: PipelineError) -> EncoderError {
        EncoderError { source_changed: matches!(e, PipelineError::SourceChanged(_)), message: e.to_string() }
    }
}

/// Arguments of an encoder actor.
pub struct EncoderArgs {
    /// The source stream.
    pub key: StreamKey,
    /// The lookup API (subscribe to the source, publish the rungs).
    pub streams: Streams,
    /// Node configuration.
    pub config: Arc<Config>,
    /// Node metrics (player feed drops).
    pub metrics: Arc<Metrics>,
    /// Encoder metrics.
    pub tmetrics: Arc<TranscodeMetrics>,
    /// The ladder table.
    pub ladders: Ladders,
    /// Start at the next live keyframe, not from the stream's cached GOP (a restart after corrupt input).
    pub skip_cached_gop: bool,
}

/// The encoder actor (see the module docs).
pub struct EncoderActor;

/// Its state: the pump task.
pub struct EncoderState {
    key: StreamKey,
    pump: tokio::task::JoinHandle<()>,
}

impl Actor for EncoderActor {
    type Msg = EncoderMsg;
    type State = EncoderState;
    type Arguments = EncoderArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<EncoderMsg>,
        args: EncoderArgs,
    ) -> Result<EncoderState, ActorProcessingErr> {
        let key = args.key.clone();
        let span = tracing::info_span!("encoder", stream = %key);
        let pump = tokio::spawn(
            async move {
                let result = pump(args).await;
                let _ = myself.cast(EncoderMsg::Done(result));
            }
            .instrument(span),
        );
        Ok(EncoderState { key, pump })
    }

    async fn post_stop(&self, _: ActorRef<EncoderMsg>, st: &mut EncoderState) -> Result<(), ActorProcessingErr> {
        st.pump.abort();
        Ok(())
    }

    async fn handle(
        &self,
        myself: ActorRef<EncoderMsg>,
        msg: EncoderMsg,
        st: &mut EncoderState,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            EncoderMsg::Done(Ok(())) => {
                info!(stream = %st.key, "encoder finished");
                myself.stop(Some("source ended".into()));
                Ok(())
            }
            EncoderMsg::Done(Err(e)) => Err(Box::new(e)),
        }
    }
}

/// Subscribes, plans, publishes the rungs and feeds the worker until the source ends.
async fn pump(args: EncoderArgs) -> Result<(), EncoderError> {
    let key = args.key.clone();
    // The source: on this node, or (a ladder placed here by another node) relayed from its owner.
    let handle = args.streams.find(&key).await.ok_or("the source stream is gone")?;
    let mut sub = handle.subscribe(Protocol::Encoder).await.ok_or("the source stream has no publisher")?;
    if args.skip_cached_gop {
        // A restart after corrupt input: the cached GOP may hold the pictures that failed.
        sub.gop = Default::default();
    }
    let mut feed = PlayerFeed::new(sub, args.metrics.clone());
    // Until the AVC sequence header: keep what arrives (the worker gets it all, in order).
    let mut early: Vec<Input> = Vec::new();
    let mut batch = Vec::new();
    let record = 'header: loop {
        batch.clear();
        if !feed.next_batch(&mut batch, 64).await {
            return Ok(());
        }
        let mut found = None;
        for item in batch.drain(..) {
            match item {
                PlayerItem::Frame(f, ts) => {
                    if found.is_none() && f.codec == Codec::Avc && f.header {
                        found = Some(f.payload());
                    }
                    early.push(Input { frame: f, ts, at: std::time::Instant::now() });
                }
                // An encoder's feed ends when the publisher leaves (the ladder starts again with it).
                PlayerItem::PublisherLeft | PlayerItem::End => return Ok(()),
                PlayerItem::Metadata(_) => {}
            }
        }
        // The rest of the batch (e.g. the AAC header right after the AVC one) is kept in `early` too.
        if let Some(r) = found {
            break 'header r;
        }
        if early.len() > MAX_FRAMES_BEFORE_VIDEO {
            info!(stream = %key, "no H.264 video: no ladder");
            set_decided(&args.ladders, &key, None, 0);
            return Ok(());
        }
    };
    let cfg = AvcConfig::parse(&record).map_err(|e| format!("source AVC configuration: {e}"))?;
    let plans = ladder::plan(&key, cfg.width, cfg.height, args.config.transcode.rungs_for(key.app()));
    end_unplanned_rungs(&args, &plans).await;
    if plans.is_empty() {
        info!(stream = %key, width = cfg.width, height = cfg.height, "source at or below every rung: no ladder");
        set_decided(&args.ladders, &key, Some(&cfg), 0);
        return Ok(());
    }
    let mut rungs = Vec::new();
    for plan in plans {
        // A ladder moving here from another node: that node's rung streams may take a moment to let go.
        let deadline = std::time::Instant::now() + RUNG_CLAIM_WAIT;
        loop {
            match args.streams.publish(&plan.key).await {
                Ok(p) => rungs.push((plan, p)),
                Err(PublishError::Busy) if std::time::Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(250)).await;
                    continue;
                }
                Err(e) => warn!(stream = %key, rung = %plan.key, error = %e, "cannot publish the rung: skipped"),
            }
            break;
        }
    }
    if rungs.is_empty() {
        set_decided(&args.ladders, &key, Some(&cfg), 0);
        return Err("no rung stream could be published".into());
    }
    set_decided(&args.ladders, &key, Some(&cfg), rungs.len());
    info!(stream = %key, width = cfg.width, height = cfg.height, rungs = ?rungs.iter().map(|(p, _)| p.key.to_string()).collect::<Vec<_>>(), "ladder planned");
    let (tx, rx) = mpsc::channel::<Input>(CHANNEL_FRAMES);
    let (done_tx, done_rx) = oneshot::channel();
    let ctx = WorkerCtx {
        key: key.clone(),
        record: record.to_vec(),
        rungs,
        threads: args.config.transcode.threads(),
        metrics: args.tmetrics.clone(),
        ladders: args.ladders.clone(),
        streams: args.streams.clone(),
        rt: tokio::runtime::Handle::current(),
    };
    let span = tracing::Span::current();
    std::thread::Builder::new()
        .name(format!("enc-{}", key.name().chars().take(10).collect::<String>()))
        .spawn(move || {
            let _g = span.enter();
            let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| worker::run(ctx, rx)))
                .unwrap_or_else(|_| Err("the encoder thread panicked".into()));
            let _ = done_tx.send(r);
        })
        .map_err(|e| format!("cannot start the encoder thread: {e}"))?;
    'feed: {
        for item in early {
            if tx.send(item).await.is_err() {
                break 'feed;
            }
        }
        loop {
            batch.clear();
            if !feed.next_batch(&mut batch, 64).await {
                break 'feed;
            }
            for item in batch.drain(..) {
                match item {
                    PlayerItem::Frame(f, ts) => {
                        let input = Input { frame: f, ts, at: std::time::Instant::now() };
                        if tx.send(input).await.is_err() {
                            break 'feed;
                        }
                    }
                    PlayerItem::PublisherLeft | PlayerItem::End => break 'feed,
                    PlayerItem::Metadata(_) => {}
                }
            }
        }
    }
    drop(tx);
    drop(feed);
    done_rx.await.unwrap_or_else(|_| Err("the encoder thread vanished".into()))
}

/// Rungs of an earlier plan (a source that got smaller) end now, with ENDLIST, instead of waiting out the
/// reconnect grace: a player on such a variant learns it is over.
async fn end_unplanned_rungs(args: &EncoderArgs, plans: &[ladder::RungPlan]) {
    for r in args.config.transcode.rungs_for(args.key.app()) {
        let Some(k) = ladder::rung_key(&args.key, r.height) else { continue };
        if plans.iter().any(|p| p.key == k) {
            continue;
        }
        if let Some(h) = args.streams.find_local(&k).await.filter(|h| h.relay_from().is_none()) {
            info!(stream = %args.key, rung = %k, "the rung is no longer in the ladder: ending it");
            h.end_if_waiting();
        }
    }
}

fn set_decided(ladders: &Ladders, key: &StreamKey, cfg: Option<&AvcConfig>, planned: usize) {
    let mut t = lock(ladders);
    let l = t.entry(key.clone()).or_default();
    l.decided = true;
    l.planned = planned;
    if let Some(c) = cfg {
        l.width = c.width;
        l.height = c.height;
        l.video_codec = Some(c.codec_string());
    }
}
