//! The encoder supervisor: starts one [`EncoderActor`] per published stream and restarts failed ones.
//!
//! With `transcode.mode = "always"`, every stream published from outside (RTMP) gets an encoder, up to
//! `transcode.max_streams` at once (further streams are served as published, logged). A failed encoder (decoder
//! or encoder error, corrupt input, a new source configuration) is counted (`strom_encoder_restarts_total`),
//! logged with the stream key and restarted after a backoff (0.5 s doubling to 10 s; reset after 30 s of good
//! work) while its source is live. The source stream and every other stream go on.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ractor::{Actor, ActorProcessingErr, ActorRef, SupervisionEvent};
use tracing::{error, info, warn};

use super::encoder::{EncoderActor, EncoderArgs, EncoderMsg};
use super::{lock, LadderInfo, Ladders, TranscodeMetrics};
use crate::config::Config;
use crate::metrics::Metrics;
use crate::stream::{StreamKey, Streams};

/// An encoder that ran this long before failing restarts without delay (its backoff is reset).
const GOOD_RUN: Duration = Duration::from_secs(30);

/// Messages to the supervisor.
pub enum SupervisorMsg {
    /// A stream was published: start its encoder (if there is room and none runs).
    Start(StreamKey),
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
        _: ActorRef<SupervisorMsg>,
        args: SupervisorArgs,
    ) -> Result<SupervisorState, ActorProcessingErr> {
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
