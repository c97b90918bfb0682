//! The viewer side of a relay: one [`RelaySink`] per (stream, node), in group `strom.relay.v1:<key>@<node>`.
//!
//! A node that is asked to play a stream another node owns creates a local *relay stream* (a stream actor without
//! a segmenter) and a sink that holds its publisher slot. The sink subscribes at the owner's
//! [`super::export::StreamExport`], feeds every relayed item into the local stream and grants credit back as the
//! local stream takes them (held back while its actor is more than `stream.queue_max_bytes` behind). Local players attach to the relay stream like to any other, so however many viewers a node has, the
//! stream crosses the network to it once.
//!
//! Each batch carries the owner's send time: the sink observes how far behind the owner it is
//! (`strom_cluster_relay_lag_seconds`, see [`relay_lag_seconds`]).
//!
//! When the owner's publisher leaves, the relay stream passes that on ([`crate::stream::StreamEvent::PublisherLeft`]):
//! its players stay attached until the publisher returns or the owner's grace runs out, as the owner's own do.
//!
//! When the owner leaves the stream's group (its node drained, died, hung past the heartbeat deadline, or was cut
//! off), the relay stream passes that on as a publisher leaving, and the sink looks for the stream's next owner
//! (its publisher reconnecting to another node, as OBS does through the Service) for up to the reconnect grace:
//! when a live owner appears, the sink subscribes there and its players go on, as through a publisher blip on
//! the owner (the relay stream's timeline continues across the change).
//!
//! The relay ends (local players get end-of-stream) when the owner says the stream ended, when no new owner
//! appears within the grace, or when nothing read the relay stream (no local player, no hosted ladder's encoder)
//! for `cluster.relay_idle_secs`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use ractor::{pg, Actor, ActorProcessingErr, ActorRef};
use tracing::{debug, info, warn};

use super::wire::{Cast, RelayItem};
use super::{relay_group, stream_group, ClusterHandle, RemoteMsg};
use crate::stream::{Publisher, ViewerCounts};

/// How often the sink checks its owner and its viewers.
const CHECK: Duration = Duration::from_millis(500);
/// A local relay stream that takes no frames for this long ends the relay.
const STALLED_LOCAL: Duration = Duration::from_secs(20);

/// Arguments of a [`RelaySink`].
pub struct RelayArgs {
    /// The local relay stream's publisher slot.
    pub publisher: Publisher,
    /// The owner's export actor.
    pub owner: ActorRef<RemoteMsg>,
    /// The owner's node name (for logs).
    pub owner_node: String,
    /// Viewer counts of the local relay stream.
    pub viewers: Arc<ViewerCounts>,
    /// The cluster.
    pub cluster: ClusterHandle,
    /// How long the relay waits for the stream's next owner when its owner goes.
    pub grace: Duration,
}

/// State of a [`RelaySink`].
pub struct RelayState {
    args: RelayArgs,
    unacked: u32,
    /// Credit was held back once (logged once per relay).
    held_credit: bool,
    last_seq: u64,
    idle_since: Option<Instant>,
    /// The owner left the stream's group at this time; no new owner yet.
    orphaned_since: Option<Instant>,
}

/// The lag of a relay batch sent at `sent_ms` and received at `now_ms` (Unix ms, each node's own clock), in
/// seconds. It includes the clock skew between the nodes; a batch that seems to arrive before it was sent (the
/// owner's clock is ahead) counts as no lag.
pub fn relay_lag_seconds(sent_ms: u64, now_ms: u64) -> f64 {
    now_ms.saturating_sub(sent_ms) as f64 / 1000.0
}

/// The viewer-side relay actor (see the module docs).
pub struct RelaySink;

impl Actor for RelaySink {
    type Msg = RemoteMsg;
    type State = RelayState;
    type Arguments = RelayArgs;

    async fn pre_start(&self, myself: ActorRef<RemoteMsg>, args: RelayArgs) -> Result<RelayState, ActorProcessingErr> {
        let key = args.publisher.key().clone();
        pg::join(relay_group(&key, &args.cluster.node), vec![myself.get_cell()]);
        let window = args.cluster.config.relay_window_bytes;
        if !super::cast(&args.owner, &Cast::Subscribe { node: args.cluster.node.clone(), credit: window }) {
            return Err(format!("owner of {key} on {} is gone", args.owner_node).into());
        }
        args.cluster.metrics.relays.with_label_values(&["in"]).inc();
        info!(stream = %key, owner = %args.owner_node, "relaying stream from its owner");
        myself.send_interval(CHECK, || RemoteMsg::Cast(Cast::Tick.encode()));
        Ok(RelayState { args, unacked: 0, held_credit: false, last_seq: 0, idle_since: None, orphaned_since: None })
    }

    async fn post_stop(&self, _: ActorRef<RemoteMsg>, st: &mut RelayState) -> Result<(), ActorProcessingErr> {
        st.args.cluster.metrics.relays.with_label_values(&["in"]).dec();
        // Tell the owner (if it is still there) so it stops sending.
        super::cast(&st.args.owner, &Cast::Unsubscribe { node: st.args.cluster.node.clone() });
        Ok(())
    }

    async fn handle(
        &self,
        myself: ActorRef<RemoteMsg>,
        msg: RemoteMsg,
        st: &mut RelayState,
    ) -> Result<(), ActorProcessingErr> {
        let RemoteMsg::Cast(bytes) = msg else { return Ok(()) };
        let key = st.args.publisher.key().clone();
        match Cast::decode(bytes) {
            Ok(Cast::Media { seq, items, sent_ms }) => {
                if let Some(sent) = sent_ms {
                    st.args.cluster.metrics.relay_lag.observe(relay_lag_seconds(sent, super::unix_ms()));
                }
                if seq != st.last_seq + 1 {
                    debug!(stream = %key, expected = st.last_seq + 1, got = seq, "relay batch out of sequence");
                }
                st.last_seq = seq;
                let mut size = 0usize;
                for item in items {
                    size += item.wire_len();
                    let sent = match item {
                        RelayItem::Metadata(m) => st.args.publisher.metadata_raw(m),
                        // The owner's publisher left: the relay stream keeps its players, as the owner does.
                        RelayItem::PublisherLeft => st.args.publisher.upstream_left(),
                        frame => match frame.to_frame() {
                            Some(f) => st.args.publisher.send(f),
                            None => Ok(()),
                        },
                    };
                    if sent.is_err() {
                        info!(stream = %key, "local relay stream is gone; ending relay");
                        myself.stop(Some("local stream gone".into()));
                        return Ok(());
                    }
                }
                st.args.cluster.metrics.relay_bytes.with_label_values(&["in"]).inc_by(size as u64);
                st.unacked = st.unacked.saturating_add(size as u32);
                if st.unacked >= st.args.cluster.config.relay_window_bytes / 4 {
                    // Credit follows consumption: while the local relay stream's actor is more than
                    // `stream.queue_max_bytes` behind, no credit goes back, so the owner holds (and, for a slow
                    // relay, skips) frames instead of this node queueing them. Stuck for long: the relay ends.
                    if !st.args.publisher.has_room() {
                        if !std::mem::replace(&mut st.held_credit, true) {
                            warn!(stream = %key, "local relay stream is behind: credit to the owner held back");
                        }
                        if tokio::time::timeout(STALLED_LOCAL, st.args.publisher.room()).await.is_err() {
                            warn!(stream = %key, "local relay stream stalled; ending relay");
                            myself.stop(Some("local stream stalled".into()));
                            return Ok(());
                        }
                    }
                    let grant = std::mem::take(&mut st.unacked);
                    super::cast(&st.args.owner, &Cast::Credit { node: st.args.cluster.node.clone(), bytes: grant });
                }
            }
            Ok(Cast::End { reason }) => {
                info!(stream = %key, owner = %st.args.owner_node, reason = %reason, "relayed stream ended at its owner");
                myself.stop(Some(reason));
            }
            Ok(Cast::Tick) => {
                let owner_id = st.args.owner.get_id();
                let orphaned = st.orphaned_since.is_some();
                if !orphaned && !pg::get_members(&stream_group(&key)).iter().any(|c| c.get_id() == owner_id) {
                    warn!(stream = %key, owner = %st.args.owner_node, "owner left the cluster; waiting for the stream's next owner");
                    st.orphaned_since = Some(Instant::now());
                    if st.args.publisher.upstream_left().is_err() {
                        myself.stop(Some("local stream gone".into()));
                        return Ok(());
                    }
                }
                if let Some(since) = st.orphaned_since {
                    if follow_next_owner(st, owner_id).await {
                        info!(stream = %key, owner = %st.args.owner_node, after = ?since.elapsed(), "relay follows the stream to its next owner");
                        st.orphaned_since = None;
                    } else if since.elapsed() >= st.args.grace {
                        info!(stream = %key, "no next owner within the reconnect grace; ending relay");
                        myself.stop(Some("owner gone".into()));
                        return Ok(());
                    }
                }
                // Players, and a ladder hosted here for the owner (its encoder reads this relay): a relay is idle
                // only when nothing reads it.
                if st.args.viewers.attached() > 0 {
                    st.idle_since = None;
                } else {
                    let since = *st.idle_since.get_or_insert_with(Instant::now);
                    if since.elapsed().as_secs_f64() >= st.args.cluster.config.relay_idle_secs {
                        info!(stream = %key, "relay has had no players for a while; dropping it");
                        myself.stop(Some("idle".into()));
                    }
                }
            }
            Ok(other) => debug!(stream = %key, cast = ?other, "relay: unexpected cast"),
            Err(e) => warn!(stream = %key, error = %e, "dropped a malformed relay message"),
        }
        Ok(())
    }
}

/// Subscribes to a live owner of the relayed stream other than `old` if one is there (asked with a claim).
async fn follow_next_owner(st: &mut RelayState, old: ractor::ActorId) -> bool {
    let key = st.args.publisher.key().clone();
    for owner in super::remote_members(&stream_group(&key)).into_iter().filter(|o| o.get_id() != old) {
        let live = super::call(&owner, &super::wire::Request::Claim, Duration::from_secs(1)).await;
        let Some(super::wire::Response::Claim { node, live: true, .. }) = live else { continue };
        let window = st.args.cluster.config.relay_window_bytes;
        if !super::cast(&owner, &Cast::Subscribe { node: st.args.cluster.node.clone(), credit: window }) {
            continue;
        }
        let _ = st.args.publisher.relay_moved(&node);
        st.args.owner = owner;
        st.args.owner_node = node;
        st.last_seq = 0;
        st.unacked = 0;
        return true;
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relay_lag_is_receive_minus_send_time_and_never_negative() {
        assert_eq!(relay_lag_seconds(1_700_000_000_000, 1_700_000_000_250), 0.25);
        assert_eq!(relay_lag_seconds(1_700_000_000_000, 1_700_000_000_000), 0.0);
        // The owner's clock is ahead of this node's: skew, not negative lag.
        assert_eq!(relay_lag_seconds(1_700_000_000_040, 1_700_000_000_000), 0.0);
        assert_eq!(relay_lag_seconds(u64::MAX, 0), 0.0);
    }
}
