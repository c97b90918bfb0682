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
//!
//! **Placement** (clustering on, `mode = "always"`): for a stream published here, `SupervisorState::place` picks
//! the least-loaded node that has a free slot and is not draining (see [`crate::transcode`]); another node is
//! asked with [`crate::cluster::wire::Request::StartEncoder`] and its ladder is then *hosted* there
//! ([`SupervisorMsg::Host`]). Every second the owner checks that each ladder it placed elsewhere is still in its
//! process group ([`super::remote`]); one that vanished (node killed, hung, cut off, drained, ladder failed) is
//! placed again, not on the node that lost it. A hosted ladder that fails is not restarted where it ran: its
//! owner places it again. On drain ([`SupervisorMsg::Drain`]) hosted ladders stop (their owners move them) and
//! this node's own streams' ladders move to other nodes.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ractor::{Actor, ActorProcessingErr, ActorRef, SupervisionEvent};
use tracing::{debug, error, info, warn};

use super::encoder::{EncoderActor, EncoderArgs, EncoderError, EncoderMsg};
use super::remote::{LadderExport, LadderExportArgs};
use super::{ladder, lock, LadderInfo, Ladders, TranscodeMetrics};
use crate::cluster::wire::{Request, Response};
use crate::cluster::{call, encoder_group, remote_members, RemoteMsg};
use crate::config::{Config, TranscodeMode};
use crate::metrics::Metrics;
use crate::stream::{StreamHandle, StreamKey, Streams};

/// An encoder that ran this long before failing restarts without delay (its backoff is reset).
const GOOD_RUN: Duration = Duration::from_secs(30);
/// Period of the on-demand checks and of the watch over placed ladders.
const TICK: Duration = Duration::from_secs(1);
/// How long another node has to answer a placement.
const PLACE_TIMEOUT: Duration = Duration::from_secs(1);
/// A placed ladder that never shows up in its group within this time is placed again.
const PLACE_CONFIRM: Duration = Duration::from_secs(5);
/// Placements this recent count as load on their node (heartbeats have not shown them yet).
const RECENT: Duration = Duration::from_secs(3);

/// Messages to the supervisor.
pub enum SupervisorMsg {
    /// A stream was published: start its encoder (if there is room and none runs).
    Start(StreamKey),
    /// HLS was asked of this source stream (or of one of its rungs): on-demand, start its encoder.
    Demand(StreamKey),
    /// Once a second (on-demand): start encoders of streams with HLS requests, stop idle ones.
    Tick,
    /// Another node (`owner`, which owns the source) placed the ladder of `key` here.
    Host {
        /// The source stream.
        key: StreamKey,
        /// The owner's node name.
        owner: String,
    },
    /// The node is draining: hand every ladder over to other nodes; answers when done.
    Drain(ractor::RpcReplyPort<()>),
    /// Timer: restart the encoder of a stream after a failure.
    Restart {
        /// The source stream.
        key: StreamKey,
        /// Consecutive failures so far.
        attempt: u32,
        /// Start at the next live keyframe instead of the cached GOP (the failure was not a source change).
        skip_cache: bool,
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
    /// Ladders running here (the node's load, shared with the cluster).
    pub running: Arc<AtomicU32>,
    /// The cluster, once clustering is on.
    pub cluster: super::ClusterSlot,
}

/// The supervisor actor.
pub struct Supervisor;

struct Running {
    actor: ActorRef<EncoderMsg>,
    attempt: u32,
    started: Instant,
    /// Run for another node's stream (that node re-places it on failure).
    hosted_for: Option<String>,
    /// Its cluster face (clustering on).
    export: Option<ActorRef<RemoteMsg>>,
}

/// A ladder this node placed on another node.
struct Placed {
    node: String,
    at: Instant,
    /// Its export has been seen in the group (so an empty group now means it was lost).
    seen: bool,
}

/// Supervisor state.
pub struct SupervisorState {
    args: SupervisorArgs,
    encoders: HashMap<StreamKey, Running>,
    placed: HashMap<StreamKey, Placed>,
    /// Placements made in the last seconds, by node (their load does not show them yet).
    recent: Vec<(String, Instant)>,
    /// Streams owned here whose ladder no node could take (every slot taken): placed again every tick, so a
    /// ladder lost with its node comes back as soon as any node has a free slot.
    unplaced: HashSet<StreamKey>,
    draining: bool,
}

impl SupervisorState {
    async fn spawn(&mut self, myself: &ActorRef<SupervisorMsg>, key: StreamKey, attempt: u32) {
        self.spawn_for(myself, key, attempt, None, false).await;
    }

    async fn spawn_for(
        &mut self,
        myself: &ActorRef<SupervisorMsg>,
        key: StreamKey,
        attempt: u32,
        hosted_for: Option<String>,
        skip_cache: bool,
    ) {
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
            skip_cached_gop: skip_cache,
        };
        match Actor::spawn_linked(None, EncoderActor, args, myself.get_cell()).await {
            Ok((actor, _)) => {
                let mut export = None;
                if self.args.cluster.get().is_some() {
                    let args = LadderExportArgs {
                        key: key.clone(),
                        ladders: self.args.ladders.clone(),
                        config: self.args.config.clone(),
                    };
                    match Actor::spawn(None, LadderExport, args).await {
                        Ok((a, _)) => export = Some(a),
                        Err(e) => warn!(stream = %key, error = %e, "cannot export the ladder to the cluster"),
                    }
                }
                self.encoders.insert(key, Running { actor, attempt, started: Instant::now(), hosted_for, export });
                self.args.running.store(self.encoders.len() as u32, Ordering::Relaxed);
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

    /// On-demand: starts the ladder of `key` if its application is on-demand, it has none yet, and this node
    /// owns the stream live.
    async fn start_on_demand(&mut self, myself: &ActorRef<SupervisorMsg>, key: StreamKey) {
        let on_demand = self.args.config.transcode.mode_for(key.app()) == TranscodeMode::OnDemand;
        if on_demand && !self.encoders.contains_key(&key) && self.owned_live(&key).await.is_some() {
            info!(stream = %key, "HLS requested: starting the on-demand ladder");
            self.spawn(myself, key, 0).await;
        }
    }

    /// On-demand: starts the encoders of owned live streams HLS was asked of (through any node) and stops those
    /// whose source and rungs went `idle_secs` without an HLS request.
    async fn on_demand_tick(&mut self, myself: &ActorRef<SupervisorMsg>) {
        let idle = Duration::from_secs_f64(self.args.config.transcode.idle_secs);
        let config = self.args.config.clone();
        for h in self.args.streams.list().await {
            let key = h.key().clone();
            let asked = h.hls_idle().is_some_and(|d| d < TICK * 2);
            if asked && h.relay_from().is_none() && !ladder::is_rung_name(&key, config.transcode.rungs_for(key.app())) {
                self.start_on_demand(myself, key).await;
            }
        }
        let mut stop = Vec::new();
        for (key, r) in &self.encoders {
            if config.transcode.mode_for(key.app()) != TranscodeMode::OnDemand || r.started.elapsed() < idle {
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

    /// Forgets an encoder that stopped (its export leaves the cluster with it).
    fn remove(&mut self, key: &StreamKey) -> Option<Running> {
        let r = self.encoders.remove(key)?;
        if let Some(e) = &r.export {
            e.stop(None);
        }
        self.args.running.store(self.encoders.len() as u32, Ordering::Relaxed);
        Some(r)
    }

    /// Runs the ladder of `key` (a stream this node owns) on the least-loaded node; never on `avoid`.
    async fn place(&mut self, myself: &ActorRef<SupervisorMsg>, key: StreamKey, avoid: Option<&str>) {
        if self.encoders.contains_key(&key) || self.placed.contains_key(&key) {
            return;
        }
        let cluster = match self.args.cluster.get() {
            Some(c) if self.args.config.transcode.mode_for(key.app()) == TranscodeMode::Always => c.clone(),
            _ => return self.spawn(myself, key, 0).await,
        };
        self.recent.retain(|(_, t)| t.elapsed() < RECENT);
        let me = cluster.node.clone();
        let mut candidates: Vec<(i64, u32, String)> = cluster
            .nodes_with_load()
            .into_iter()
            .filter(|(n, l)| {
                let mine = *n == me;
                Some(n.as_str()) != avoid && !(mine && self.draining) && (mine || (!l.draining && l.encoder_slots > 0))
            })
            .map(|(n, l)| {
                let pending = self.recent.iter().filter(|(r, _)| *r == n).count() as f32;
                let encoders = if n == me { self.encoders.len() as f32 } else { l.encoders as f32 + pending };
                let score = ((l.ratio + 0.25 * encoders) * 10.0).round() as i64;
                // Among equals, the node with the least other work (a new node) first, then by name.
                (score, l.streams + l.players + l.relays_out, n)
            })
            .collect();
        candidates.sort();
        debug!(stream = %key, ?candidates, "ladder placement candidates (score x10, other work, node)");
        for (score, _, node) in candidates {
            if node == me {
                if self.encoders.len() >= self.args.config.transcode.max_streams() {
                    continue;
                }
                info!(stream = %key, node = %node, score = score as f64 / 10.0, "placing the ladder on this node");
                self.unplaced.remove(&key);
                return self.spawn(myself, key, 0).await;
            }
            let Some(agent) = cluster.agent_of(&node) else { continue };
            let req = Request::StartEncoder { key: key.to_string(), owner: me.clone() };
            match call(&agent, &req, PLACE_TIMEOUT).await {
                Some(Response::Started(true)) => {
                    info!(stream = %key, node = %node, score = score as f64 / 10.0, "placed the ladder on another node");
                    self.recent.push((node.clone(), Instant::now()));
                    self.unplaced.remove(&key);
                    self.placed.insert(key, Placed { node, at: Instant::now(), seen: false });
                    return;
                }
                other => debug!(stream = %key, node = %node, answer = ?other, "node did not take the ladder"),
            }
        }
        if self.draining {
            warn!(stream = %key, "no other node can take the ladder: this stream is served without it");
        } else if self.encoders.len() < self.args.config.transcode.max_streams() {
            self.unplaced.remove(&key);
            self.spawn(myself, key, 0).await;
        } else if self.unplaced.insert(key.clone()) {
            warn!(stream = %key, "no node has a free ladder slot: the ladder is placed as soon as one has");
        }
    }

    /// Once a second in a cluster: places the ladders that found no free slot, while their sources are live here.
    async fn place_unplaced(&mut self, myself: &ActorRef<SupervisorMsg>) {
        let keys: Vec<StreamKey> = self.unplaced.iter().cloned().collect();
        for key in keys {
            if self.draining || self.owned_live(&key).await.is_none() {
                self.unplaced.remove(&key);
                continue;
            }
            self.place(myself, key, None).await;
        }
    }

    /// Once a second in a cluster: ladders placed elsewhere are still there, or placed again.
    async fn check_placed(&mut self, myself: &ActorRef<SupervisorMsg>) {
        let keys: Vec<StreamKey> = self.placed.keys().cloned().collect();
        for key in keys {
            if self.owned_live(&key).await.is_none() {
                // The source ended or moved: its remote encoder ends with the relay.
                self.placed.remove(&key);
                continue;
            }
            let present = !remote_members(&encoder_group(&key)).is_empty();
            let Some(p) = self.placed.get_mut(&key) else { continue };
            if present {
                p.seen = true;
                continue;
            }
            if p.seen || p.at.elapsed() > PLACE_CONFIRM {
                let lost = p.node.clone();
                warn!(stream = %key, node = %lost, "the ladder's node lost it (node gone, cut off, draining or failed): placing it again");
                self.placed.remove(&key);
                self.place(myself, key, Some(&lost)).await;
            }
        }
    }

    /// Drain: hosted ladders stop (their owners move them); this node's own ladders move to other nodes.
    async fn drain(&mut self, myself: &ActorRef<SupervisorMsg>) {
        self.draining = true;
        if self.args.cluster.get().is_none() {
            return; // nowhere to move them: ladders run until their streams end
        }
        let keys: Vec<StreamKey> = self.encoders.keys().cloned().collect();
        for key in keys {
            let hosted = self.encoders.get(&key).is_some_and(|r| r.hosted_for.is_some());
            if !hosted && self.args.config.transcode.mode_for(key.app()) != TranscodeMode::Always {
                continue; // on-demand ladders stay with their stream's owner
            }
            let Some(r) = self.remove(&key) else { continue };
            r.actor.stop(Some("node draining".into()));
            lock(&self.args.ladders).remove(&key);
            match &r.hosted_for {
                Some(owner) => {
                    info!(stream = %key, owner = %owner, "draining: stopping a hosted ladder (its owner moves it)")
                }
                None => {
                    info!(stream = %key, "draining: moving this stream's ladder to another node");
                    // The rungs' publishers must be gone before another node claims them.
                    tokio::time::sleep(Duration::from_millis(300)).await;
                    self.place(myself, key, None).await;
                }
            }
        }
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
        // On-demand checks, and (clustering on) the watch over ladders placed on other nodes.
        myself.send_interval(TICK, || SupervisorMsg::Tick);
        Ok(SupervisorState {
            args,
            encoders: HashMap::new(),
            placed: HashMap::new(),
            recent: Vec::new(),
            unplaced: HashSet::new(),
            draining: false,
        })
    }

    async fn handle(
        &self,
        myself: ActorRef<SupervisorMsg>,
        msg: SupervisorMsg,
        st: &mut SupervisorState,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            SupervisorMsg::Start(key) if st.draining => {
                info!(stream = %key, "draining: this node starts no ladder");
            }
            SupervisorMsg::Start(key) => st.place(&myself, key, None).await,
            SupervisorMsg::Host { key, owner } => {
                if st.draining {
                    return Ok(());
                }
                info!(stream = %key, owner = %owner, "hosting the ladder of another node's stream");
                st.spawn_for(&myself, key, 0, Some(owner), false).await;
            }
            SupervisorMsg::Drain(reply) => {
                st.drain(&myself).await;
                let _ = reply.send(());
            }
            SupervisorMsg::Demand(key) => st.start_on_demand(&myself, key).await,
            SupervisorMsg::Tick => {
                if st.args.config.transcode.any_mode(TranscodeMode::OnDemand) {
                    st.on_demand_tick(&myself).await;
                }
                if !st.placed.is_empty() {
                    st.check_placed(&myself).await;
                }
                if !st.unplaced.is_empty() {
                    st.place_unplaced(&myself).await;
                }
            }
            SupervisorMsg::Restart { key, attempt, skip_cache } => {
                if st.owned_live(&key).await.is_some() {
                    info!(stream = %key, attempt, "restarting the encoder");
                    st.spawn_for(&myself, key, attempt, None, skip_cache).await;
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
                let Some(r) = st.remove(&key) else { return Ok(()) };
                if let Some(owner) = &r.hosted_for {
                    st.args.tmetrics.restarts.inc();
                    lock(&st.args.ladders).remove(&key);
                    error!(stream = %key, owner = %owner, error = %err, "hosted encoder failed: its owner places it again");
                    return Ok(());
                }
                let attempt = if r.started.elapsed() > GOOD_RUN { 0 } else { r.attempt };
                st.args.tmetrics.restarts.inc();
                let backoff = Duration::from_millis(500 << attempt.min(5)).min(Duration::from_secs(10));
                error!(stream = %key, error = %err, attempt, backoff_ms = backoff.as_millis() as u64, "encoder failed: restarting it; the stream goes on");
                let next = attempt + 1;
                let skip_cache = !err.downcast_ref::<EncoderError>().is_some_and(|e| e.source_changed);
                // Until the new encoder decides, the master playlist waits rather than list the old ladder.
                lock(&st.args.ladders).insert(key.clone(), LadderInfo::default());
                myself.send_after(backoff, move || SupervisorMsg::Restart { key, attempt: next, skip_cache });
            }
            SupervisionEvent::ActorTerminated(cell, _, _) => {
                if let Some(key) = st.key_of(cell.get_id()) {
                    st.remove(&key);
                    lock(&st.args.ladders).remove(&key);
                }
            }
            _ => {}
        }
        Ok(())
    }
}
