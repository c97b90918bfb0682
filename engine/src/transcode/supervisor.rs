//! The encoder supervisor: starts one [`EncoderActor`] per published stream and restarts failed ones.
//!
//! With `transcode.mode = "always"`, every stream published from outside (RTMP) gets an encoder, up to
//! `transcode.max_streams` at once (further streams are served as published, logged). A failed encoder (decoder
//! or encoder error, corrupt input, a new source configuration) is counted (`strom_encoder_restarts_total`),
//! logged with the stream key and restarted after a backoff (0.5 s doubling to 10 s; reset after 30 s of good
//! work) while its source is live. The source stream and every other stream go on.
//!
//! With `transcode.mode = "on-demand"`, a stream's encoder starts when HLS is asked of it (its playlists or
//! segments, or a rung's: [`SupervisorMsg::Demand`] from this node's HTTP server, and a once-a-second look at
//! [`crate::stream::StreamHandle::hls_idle`], which also sees requests other nodes forward to this owner), and
//! stops after `transcode.idle_secs` without one (its rungs' streams then end like any stream whose publisher
//! left).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ractor::{Actor, ActorProcessingErr, ActorRef, SupervisionEvent};
use tracing::{error, info, warn};

use super::encoder::{EncoderActor, EncoderArgs, EncoderMsg};
use super::{ladder, lock, LadderInfo, Ladders, TranscodeMetrics};
use crate::config::{Config, TranscodeMode};
use crate::metrics::Metrics;
use crate::stream::{StreamHandle, StreamKey, Streams};

/// An encoder that ran this long before failing restarts without delay (its backoff is reset).
const GOOD_RUN: Duration = Duration::from_secs(30);
/// Period of the on-demand checks.
const TICK: Duration = Duration::from_secs(1);

/// Messages to the supervisor.
pub enum SupervisorMsg {
    /// A stream was published: start its encoder (if there is room and none runs).
    Start(StreamKey),
    /// HLS was asked of this source stream (or of one of its rungs): on-demand, start its encoder.
    Demand(StreamKey),
    /// Once a second (on-demand): start encoders of streams with HLS requests, stop idle ones.
    Tick,
    /// Timer: restart the encoder of a stream after a failure.
    Restart {
        /// The source stream.
        key: StreamKey,
        /// Consecutive failures so far.
        attempt: u32,
    },
}

impl ractor::Message for SupervisorMsg {}

/// Supervisor arguments.
pub struct SupervisorArgs {
    /// Node configuration.
    pub config: Arc<Config>,
    /// The lookup API.
    pub streams: Streams,
    /// Node metrics.
    pub metrics: Arc<Metrics>,
    /// Encoder metrics.
    pub tmetrics: Arc<TranscodeMetrics>,
    /// The ladder table.
    pub ladders: Ladders,
}

/// The supervisor actor.
pub struct Supervisor;

struct Running {
    actor: ActorRef<EncoderMsg>,
    attempt: u32,
    started: Instant,
}

/// Supervisor state.
pub struct SupervisorState {
    args: SupervisorArgs,
    encoders: HashMap<StreamKey, Running>,
}

impl SupervisorState {
    async fn spawn(&mut self, myself: &ActorRef<SupervisorMsg>, key: StreamKey, attempt: u32) {
        if self.encoders.contains_key(&key) {
            return;
        }
        let max = self.args.config.transcode.max_streams();
        if self.encoders.len() >= max {
            warn!(stream = %key, max_streams = max, "transcode.max_streams reached: this stream gets no ladder");
            return;
        }
        // An undecided entry: the master playlist waits for the ladder instead of answering too early.
        lock(&self.args.ladders).insert(key.clone(), LadderInfo::default());
        let args = EncoderArgs {
            key: key.clone(),
            streams: self.args.streams.clone(),
            config: self.args.config.clone(),
            metrics: self.args.metrics.clone(),
            tmetrics: self.args.tmetrics.clone(),
            ladders: self.args.ladders.clone(),
        };
        match Actor::spawn_linked(None, EncoderActor, args, myself.get_cell()).await {
            Ok((actor, _)) => {
                self.encoders.insert(key, Running { actor, attempt, started: Instant::now() });
            }
            Err(e) => {
                lock(&self.args.ladders).remove(&key);
                error!(stream = %key, error = %e, "cannot start the encoder");
            }
        }
    }

    /// The handle of `key` if this node owns it (not a relay) and it is live.
    async fn owned_live(&self, key: &StreamKey) -> Option<StreamHandle> {
        let h = self.args.streams.find_local(key).await.filter(|h| h.relay_from().is_none())?;
        h.info().await.is_some_and(|i| i.state == "live").then_some(h)
    }

    /// On-demand: starts the encoders of owned live streams HLS was asked of (through any node) and stops those
    /// whose source and rungs went `idle_secs` without an HLS request.
    async fn on_demand_tick(&mut self, myself: &ActorRef<SupervisorMsg>) {
        let idle = Duration::from_secs_f64(self.args.config.transcode.idle_secs);
        let config = self.args.config.clone();
        let rungs = &config.transcode.rungs;
        for h in self.args.streams.list().await {
            let key = h.key().clone();
            let asked = h.hls_idle().is_some_and(|d| d < TICK * 2);
            if asked
                && h.relay_from().is_none()
                && !ladder::is_rung_name(&key, rungs)
                && !self.encoders.contains_key(&key)
                && self.owned_live(&key).await.is_some()
            {
                info!(stream = %key, "HLS requested: starting the on-demand ladder");
                self.spawn(myself, key, 0).await;
            }
        }
        let mut stop = Vec::new();
        for (key, r) in &self.encoders {
            if r.started.elapsed() < idle {
                continue;
            }
            let mut keys = vec![key.clone()];
            if let Some(l) = lock(&self.args.ladders).get(key) {
                keys.extend(l.rungs.iter().map(|r| r.plan.key.clone()));
            }
            let mut last = None::<Duration>;
            for k in keys {
                if let Some(d) = self.args.streams.find_local(&k).await.and_then(|h| h.hls_idle()) {
                    last = Some(last.map_or(d, |l| l.min(d)));
                }
            }
            if last.is_none_or(|d| d >= idle) {
                stop.push((key.clone(), r.actor.clone()));
            }
        }
        for (key, actor) in stop {
            info!(stream = %key, idle_secs = idle.as_secs_f64(), "no HLS request for the idle time: stopping the on-demand ladder");
            actor.stop(Some("on-demand ladder idle".into()));
        }
    }

    fn key_of(&self, id: ractor::ActorId) -> Option<StreamKey> {
        self.encoders.iter().find(|(_, r)| r.actor.get_id() == id).map(|(k, _)| k.clone())
    }
}

impl Actor for Supervisor {
    type Msg = SupervisorMsg;
    type State = SupervisorState;
    type Arguments = SupervisorArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<SupervisorMsg>,
        args: SupervisorArgs,
    ) -> Result<SupervisorState, ActorProcessingErr> {
        if args.config.transcode.mode == TranscodeMode::OnDemand {
            myself.send_interval(TICK, || SupervisorMsg::Tick);
        }
        Ok(SupervisorState { args, encoders: HashMap::new() })
    }

    async fn handle(
        &self,
        myself: ActorRef<SupervisorMsg>,
        msg: SupervisorMsg,
        st: &mut SupervisorState,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            SupervisorMsg::Start(key) => st.spawn(&myself, key, 0).await,
            SupervisorMsg::Demand(key) => {
                if !st.encoders.contains_key(&key) && st.owned_live(&key).await.is_some() {
                    info!(stream = %key, "HLS requested: starting the on-demand ladder");
                    st.spawn(&myself, key, 0).await;
                }
            }
            SupervisorMsg::Tick => st.on_demand_tick(&myself).await,
            SupervisorMsg::Restart { key, attempt } => {
                let live = match st.args.streams.find_local(&key).await {
                    Some(h) => h.info().await.is_some_and(|i| i.state == "live"),
                    None => false,
                };
                if live {
                    info!(stream = %key, attempt, "restarting the encoder");
                    st.spawn(&myself, key, attempt).await;
                } else {
                    lock(&st.args.ladders).remove(&key);
                }
            }
        }
        Ok(())
    }

    async fn handle_supervisor_evt(
        &self,
        myself: ActorRef<SupervisorMsg>,
        evt: SupervisionEvent,
        st: &mut SupervisorState,
    ) -> Result<(), ActorProcessingErr> {
        match evt {
            SupervisionEvent::ActorFailed(cell, err) => {
                let Some(key) = st.key_of(cell.get_id()) else { return Ok(()) };
                let Some(r) = st.encoders.remove(&key) else { return Ok(()) };
                let attempt = if r.started.elapsed() > GOOD_RUN { 0 } else { r.attempt };
                st.args.tmetrics.restarts.inc();
                let backoff = Duration::from_millis(500 << attempt.min(5)).min(Duration::from_secs(10));
                error!(stream = %key, error = %err, attempt, backoff_ms = backoff.as_millis() as u64, "encoder failed: restarting it; the stream goes on");
                let next = attempt + 1;
                myself.send_after(backoff, move || SupervisorMsg::Restart { key, attempt: next });
            }
            SupervisionEvent::ActorTerminated(cell, _, _) => {
                if let Some(key) = st.key_of(cell.get_id()) {
                    st.encoders.remove(&key);
                    lock(&st.args.ladders).remove(&key);
                }
            }
            _ => {}
        }
        Ok(())
    }
}
