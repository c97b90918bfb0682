//! The owner side of a stream: a [`StreamExport`] per stream this node owns, in group `strom.stream.v1:<key>`.
//!
//! It answers other nodes: [`Request::Claim`] (who owns this key, is a publisher live, since when),
//! [`Request::Playlist`] and [`Request::Segment`] (HLS from the owner's segmenter, so every node serves the same
//! playlist text, segment names and sequence numbers), [`Request::Info`]. Calls are answered on their own tasks
//! so a long playlist wait never blocks relays.
//!
//! On [`Cast::Subscribe`] from node N it starts one relay sender for (stream, N): a player of the local stream
//! (a [`PlayerFeed`], so it starts with metadata, sequence headers and the GOP cache and skips to keyframes when
//! it falls behind) whose items go to N's [`super::relay::RelaySink`] in [`Cast::Media`] batches. The sender
//! only sends while it has credit ([`Cast::Credit`], bytes); without credit it stops reading its feed, so a slow
//! node loses frames to the next keyframe like a slow player and never slows the owner.
//!
//! It pushes the stream's HLS position and playlist to every node the moment the segmenter publishes a new one
//! ([`Cast::HlsState`]): other nodes serve the playlist from it without a request per poll, and a node that takes
//! the stream over continues its numbering.
//!
//! Every few seconds it checks the group for a second live owner of its key (a race, or a healed partition) and
//! ends its own stream if the other claim ranks lower (see the ownership rule in [`super`]).

use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use ractor::{pg, Actor, ActorProcessingErr, ActorRef};
use tokio::sync::Notify;
use tracing::{debug, info, warn, Instrument};

use super::claims::ClaimRank;
use super::wire::{Cast, RelayItem, Request, Response};
use super::{call, relay_group, remote_members, stream_group, ClusterHandle, RemoteMsg};
use crate::formats::playlist::names_file;
use crate::metrics::Metrics;
use crate::stream::{PlayerFeed, PlayerItem, Protocol, StreamHandle};

/// Largest HLS segment part per call (far below the cluster frame limit).
pub const SEGMENT_PART: u32 = 1 << 20;
/// Longest playlist wait a remote node may ask for.
const MAX_PLAYLIST_WAIT: Duration = Duration::from_secs(10);
/// Frames per relay batch at most (a batch holds only what is already queued).
const BATCH_FRAMES: usize = 64;
/// How long a subscribing node's sink may take to appear in its group.
const SINK_WAIT: Duration = Duration::from_secs(3);
/// How often the export checks for a competing owner and forgets finished relay senders.
const TICK: Duration = Duration::from_millis(500);
/// Ticks between checks for a competing owner.
const CONFLICT_CHECK_TICKS: u64 = 4;

/// Credit (bytes) a relay sender may still send.
struct Credit {
    bytes: AtomicI64,
    notify: Notify,
}

impl Credit {
    fn add(&self, n: i64) {
        self.bytes.fetch_add(n, Ordering::AcqRel);
        self.notify.notify_one();
    }

    async fn wait(&self) {
        while self.bytes.load(Ordering::Acquire) <= 0 {
            self.notify.notified().await;
        }
    }
}

struct Sender {
    credit: Arc<Credit>,
    task: tokio::task::JoinHandle<()>,
}

/// Arguments of a [`StreamExport`].
pub struct ExportArgs {
    /// The local stream.
    pub handle: StreamHandle,
    /// The cluster.
    pub cluster: ClusterHandle,
    /// Node metrics.
    pub metrics: Arc<Metrics>,
    /// This node's claim of the key (epoch and Unix ms).
    pub claim: crate::stream::ports::Claim,
}

/// State of a [`StreamExport`].
pub struct ExportState {
    args: ExportArgs,
    senders: HashMap<String, Sender>,
    ticks: u64,
    /// Pushes every new HLS view to the other nodes.
    hls_pusher: Option<tokio::task::JoinHandle<()>>,
}

/// The owner-side actor of one stream (see the module docs).
pub struct StreamExport;

impl Actor for StreamExport {
    type Msg = RemoteMsg;
    type State = ExportState;
    type Arguments = ExportArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<RemoteMsg>,
        args: ExportArgs,
    ) -> Result<ExportState, ActorProcessingErr> {
        pg::join(stream_group(args.handle.key()), vec![myself.get_cell()]);
        myself.send_interval(TICK, || RemoteMsg::Cast(Cast::Tick.encode()));
        let hls_pusher = args.handle.hls_watch().map(|mut views| {
            let (cluster, key, claim) = (args.cluster.clone(), args.handle.key().clone(), args.claim);
            tokio::spawn(async move {
                // Ends when the segmenter is gone (its sender dropped) or the export stops (aborted).
                while views.changed().await.is_ok() {
                    let pos = views.borrow_and_update().position();
                    if pos.playlist.is_some() {
                        cluster.share_hls(&key, claim.since_ms, claim.epoch, &pos);
                    }
                }
            })
        });
        Ok(ExportState { args, senders: HashMap::new(), ticks: 0, hls_pusher })
    }

    async fn post_stop(&self, _: ActorRef<RemoteMsg>, st: &mut ExportState) -> Result<(), ActorProcessingErr> {
        for (_, s) in st.senders.drain() {
            s.task.abort();
        }
        if let Some(t) = st.hls_pusher.take() {
            t.abort();
        }
        Ok(())
    }

    async fn handle(
        &self,
        myself: ActorRef<RemoteMsg>,
        msg: RemoteMsg,
        st: &mut ExportState,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            RemoteMsg::Call(bytes, reply) => {
                let req = match Request::decode(bytes) {
                    Ok(r) => r,
                    Err(e) => {
                        warn!(stream = %st.args.handle.key(), error = %e, "dropped a malformed cluster request");
                        return Ok(());
                    }
                };
                let handle = st.args.handle.clone();
                let cluster = st.args.cluster.clone();
                let claim = st.args.claim;
                // The nodes this stream is relayed to, for `Info`.
                let mut relays: Vec<String> =
                    st.senders.iter().filter(|(_, s)| !s.task.is_finished()).map(|(n, _)| n.clone()).collect();
                relays.sort();
                tokio::spawn(async move {
                    let resp = answer(req, &handle, &cluster, claim, relays).await;
                    let _ = reply.send(resp.encode());
                });
            }
            RemoteMsg::Cast(bytes) => match Cast::decode(bytes) {
                Ok(Cast::Subscribe { node, credit }) => st.subscribe(node, credit),
                Ok(Cast::Credit { node, bytes }) => {
                    if let Some(s) = st.senders.get(&node) {
                        s.credit.add(bytes as i64);
                    }
                }
                Ok(Cast::Unsubscribe { node }) => {
                    if let Some(s) = st.senders.remove(&node) {
                        info!(stream = %st.args.handle.key(), node = %node, "relay to node ended (unsubscribed)");
                        s.task.abort();
                    }
                }
                Ok(Cast::Tick) => {
                    st.ticks += 1;
                    st.senders.retain(|_, s| !s.task.is_finished());
                    if st.ticks % CONFLICT_CHECK_TICKS == 0 {
                        st.check_conflict(&myself).await;
                    }
                }
                Ok(other) => debug!(stream = %st.args.handle.key(), cast = ?other, "export: unexpected cast"),
                Err(e) => warn!(stream = %st.args.handle.key(), error = %e, "dropped a malformed cluster message"),
            },
        }
        Ok(())
    }
}

async fn answer(
    req: Request,
    handle: &StreamHandle,
    cluster: &ClusterHandle,
    claim: crate::stream::ports::Claim,
    relays: Vec<String>,
) -> Response {
    let node = cluster.node.clone();
    match req {
        Request::Claim => {
            let info = handle.info().await;
            if info.as_ref().is_some_and(|i| i.repeating) {
                // A publish elsewhere asks (or a node learning the owner): the segment open here closes, and the
                // final playlist goes to every node before this answer (the same session carries both, in order),
                // so the node that continues it numbers on from what every node has seen.
                handle.stop_repeating().await;
                if let Some(view) = handle.hls_watch() {
                    let pos = view.borrow().position();
                    if pos.playlist.is_some() {
                        cluster.share_hls(handle.key(), claim.since_ms, claim.epoch, &pos);
                    }
                }
            }
            let live = info.is_some_and(|i| i.state == "live");
            Response::Claim { node, live, since_ms: claim.since_ms, epoch: claim.epoch }
        }
        Request::Playlist { wait_ms } => {
            let wait = Duration::from_millis(wait_ms as u64).min(MAX_PLAYLIST_WAIT);
            Response::Playlist(handle.playlist(wait).await)
        }
        Request::Growing { name, from, wait_ms } => {
            // The part the preload hint names, as it grows: what is there past `from`, once there is some (or it
            // is complete); the rest of it whole once it is listed.
            let wait = Duration::from_millis(u64::from(wait_ms)).min(MAX_PLAYLIST_WAIT);
            let from = from as usize;
            match handle.growing(&name) {
                Some(mut rx) => {
                    let more =
                        |g: &crate::stream::Growth| g.done || g.chunks.iter().map(Bytes::len).sum::<usize>() > from;
                    let _ = tokio::time::timeout(wait, rx.wait_for(more)).await;
                    let g = rx.borrow().clone();
                    let mut rest = bytes::BytesMut::new();
                    let mut at = 0;
                    for c in &g.chunks {
                        if at + c.len() > from {
                            rest.extend_from_slice(&c[from.saturating_sub(at)..]);
                        }
                        at += c.len();
                    }
                    let cut = rest.len() > SEGMENT_PART as usize;
                    rest.truncate(SEGMENT_PART as usize);
                    Response::Growing(Some((rest.freeze(), g.done && !cut)))
                }
                None => Response::Growing(handle.segment(&name).await.map(|whole| {
                    let start = from.min(whole.len());
                    let end = start.saturating_add(SEGMENT_PART as usize).min(whole.len());
                    (whole.slice(start..end), end == whole.len())
                })),
            }
        }
        Request::Segment { name, offset, max } => {
            // This node's own, or one of the previous owner's window that it lists: copied when it took the
            // stream over, being copied now, or (the stream live here, the name listed) fetched now from the node
            // that still has it. A stream that is not live here asks no one (no two nodes ask each other).
            let seg = match handle.segment(&name).await {
                Some(seg) => Some(seg),
                None => match cluster.segments.get_or_fetch(handle.key(), &name, Vec::new()).await {
                    Some(seg) => Some(seg),
                    None if handle.playlist_now().is_some_and(|p| names_file(&p, &name))
                        && handle.info().await.is_some_and(|i| i.state == "live") =>
                    {
                        cluster.earlier_file(handle.key(), &name).await
                    }
                    None => None,
                },
            };
            let part = seg.and_then(|seg| {
                let start = (offset as usize).min(seg.len());
                let end = start.saturating_add(max.min(SEGMENT_PART) as usize).min(seg.len());
                Some((u32::try_from(seg.len()).ok()?, seg.slice(start..end)))
            });
            if part.is_some() {
                cluster.note_segment_served();
            } else if handle.playlist_now().is_some_and(|p| names_file(&p, &name)) {
                let held = handle.hls_watch().map(|v| v.borrow().init_names()).unwrap_or_default();
                warn!(stream = %handle.key(), file = %name, ?held, "another node asked for a file this node's playlist lists, and it is not here");
            }
            Response::Segment(part)
        }
        Request::Info => {
            // The stream's entry as this owner sees it, with the owner's name and the nodes it relays it to.
            let info = handle.info().await.and_then(|i| serde_json::to_value(i).ok()).map(|mut v| {
                v["node"] = serde_json::Value::String(node);
                v["relays"] = serde_json::json!(relays);
                Bytes::from(v.to_string())
            });
            Response::Info(info)
        }
        // The stream ends and lingers (this export with it), so the answer reaches the asker.
        Request::Disconnect => match handle.info().await {
            Some(i) if i.state != "ended" => {
                handle.disconnect("publisher disconnected through the API (asked by another node)");
                Response::Api { status: 200, body: Bytes::from_static(b"{\"disconnected\":true}") }
            }
            _ => Response::Api { status: 404, body: Bytes::from_static(b"{\"error\":\"not live here\"}") },
        },
        Request::Ping { nonce, .. } => Response::Pong { nonce, node, load: Default::default() },
        // Asked of the node agent and of a ladder's export, not of a stream's owner.
        Request::StartEncoder { .. } => Response::Started(false),
        Request::Master { .. } => Response::Master(None),
        Request::Vod(_) | Request::Job(_) | Request::Peers => {
            Response::Api { status: 404, body: Bytes::from_static(b"{\"error\":\"not here\"}") }
        }
    }
}

impl ExportState {
    fn subscribe(&mut self, node: String, credit: u32) {
        let key = self.args.handle.key().clone();
        if let Some(old) = self.senders.remove(&node) {
            // The node re-subscribed (its relay restarted): start over from the GOP cache.
            old.task.abort();
        }
        info!(stream = %key, node = %node, "relaying stream to node");
        let credit = Arc::new(Credit { bytes: AtomicI64::new(credit as i64), notify: Notify::new() });
        let span = tracing::info_span!("relay_out", stream = %key, to = %node);
        let task = tokio::spawn(
            send_relay(
                self.args.handle.clone(),
                node.clone(),
                credit.clone(),
                self.args.metrics.clone(),
                self.args.cluster.clone(),
            )
            .instrument(span),
        );
        self.senders.insert(node, Sender { credit, task });
    }

    /// Ends this stream if another node holds an older live claim on the key, or if the publisher moved to
    /// another node while this one waited for it.
    async fn check_conflict(&mut self, myself: &ActorRef<RemoteMsg>) {
        let key = self.args.handle.key().clone();
        let others = remote_members(&stream_group(&key));
        if others.is_empty() {
            return;
        }
        let me = ClaimRank {
            epoch: self.args.claim.epoch,
            since_ms: self.args.claim.since_ms,
            node: self.args.cluster.node.clone(),
        };
        for other in others {
            if let Some(Response::Claim { node, live: true, since_ms, epoch }) =
                call(&other, &Request::Claim, Duration::from_secs(1)).await
            {
                self.args.cluster.note_epoch(&key, epoch);
                // A stream actor too busy to answer says nothing about where the publisher is: decide at the next
                // check rather than hand a live stream over.
                let Some(here) = self.args.handle.info().await else { continue };
                if here.state != "live" {
                    info!(stream = %key, owner = %node, "the publisher moved to another node; handing the stream over");
                    self.args.cluster.metrics.ownership_conflicts.with_label_values(&["handed_over"]).inc();
                    self.args.handle.evict(&format!("moved to node {node}"));
                    myself.stop(Some("handed over".into()));
                    return;
                }
                if (ClaimRank { epoch, since_ms, node: node.clone() }) < me {
                    warn!(stream = %key, winner = %node, "another node owns this stream with an older claim; ending ours");
                    self.args.cluster.metrics.ownership_conflicts.with_label_values(&["evicted"]).inc();
                    self.args.handle.evict(&format!("evicted: node {node} owns the stream"));
                    myself.stop(Some("lost ownership".into()));
                    return;
                }
            }
        }
    }
}

/// Relays the local stream to `node` while there is credit (see the module docs).
async fn send_relay(
    handle: StreamHandle,
    node: String,
    credit: Arc<Credit>,
    metrics: Arc<Metrics>,
    cluster: ClusterHandle,
) {
    let key = handle.key().clone();
    let group = relay_group(&key, &node);
    let gauge = cluster.metrics.relays.with_label_values(&["out"]);
    let bytes_out = cluster.metrics.relay_bytes.with_label_values(&["out"]);
    let egress = metrics.egress_bytes.with_label_values(&[crate::metrics::protocol::RELAY]);
    let sink = || remote_members(&group).into_iter().next();
    // The sink joined its group before subscribing, but group changes and casts travel separately: give its
    // membership a moment to arrive.
    let t = std::time::Instant::now();
    while sink().is_none() {
        if t.elapsed() > SINK_WAIT {
            warn!("relay sink never appeared; not relaying");
            return;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let Some(sub) = handle.subscribe(Protocol::Relay).await else {
        if let Some(s) = sink() {
            super::cast(&s, &Cast::End { reason: "stream is not live".into() });
        }
        return;
    };
    gauge.inc();
    let mut feed = PlayerFeed::new(sub, metrics);
    let mut batch = Vec::with_capacity(BATCH_FRAMES);
    let mut seq = 0u64;
    loop {
        credit.wait().await;
        batch.clear();
        let more = feed.next_batch(&mut batch, BATCH_FRAMES).await;
        let mut items = Vec::with_capacity(batch.len());
        let mut ended = !more;
        for item in batch.drain(..) {
            match item {
                PlayerItem::Metadata(m) => items.push(RelayItem::Metadata(m)),
                PlayerItem::Frame(f, ts) => {
                    items.push(RelayItem::Frame { kind: f.kind, timestamp: ts, data: f.flv_body().clone() })
                }
                PlayerItem::PublisherLeft => items.push(RelayItem::PublisherLeft),
                PlayerItem::End => ended = true,
            }
        }
        // Look the sink up each time: it is gone when its node left or the relay was dropped.
        let Some(s) = sink() else {
            info!("relay sink gone; stopping");
            break;
        };
        if !items.is_empty() {
            let size: usize = items.iter().map(RelayItem::wire_len).sum();
            seq += 1;
            if !super::cast(&s, &Cast::Media { seq, items, sent_ms: Some(super::unix_ms()) }) {
                break;
            }
            credit.bytes.fetch_sub(size as i64, Ordering::AcqRel);
            bytes_out.inc_by(size as u64);
            egress.inc_by(size as u64);
        }
        if ended {
            super::cast(&s, &Cast::End { reason: "stream ended".into() });
            info!("stream ended; relay closed");
            break;
        }
    }
    gauge.dec();
}
