//! Cluster: the nodes form one ractor_cluster and act as one server, with no broker or database.
//!
//! ## Map
//! - [`wire`]: the bytes of every cross-node message (sans-IO, fuzzed).
//! - [`claims`]: what a node knows of other owners' claims (pure): claim ranks and epochs, takeover numbering
//!   bands, owner leases.
//! - [`membership`]: joins peers (seeds, DNS), keeps an own heartbeat with a deadline, re-dials with backoff,
//!   shares load; [`membership::NodeAgent`] answers heartbeats.
//! - [`export`]: the owner side of a stream: claims, relays to other nodes with credits, serves HLS to them.
//! - [`hls`]: HLS from any node (the owner's playlist and segments, segments cached per node).
//! - [`relay`]: the viewer side: one relay per (stream, node), feeding a local relay stream that local players
//!   attach to like any other.
//!
//! ## Names (ractor process groups)
//! - `strom.node.v1`: every node's [`membership::NodeAgent`].
//! - `strom.stream.v1:<app/name>`: the [`export::StreamExport`] of the node owning that stream.
//! - `strom.relay.v1:<app/name>@<node>`: the [`relay::RelaySink`] of a relay on node `<node>`.
//! - `strom.encoder.v1:<app/name>`: the [`crate::transcode::remote::LadderExport`] of the node running that
//!   stream's ladder (answers [`wire::Request::Master`]; the owner watches it to re-place a lost ladder).
//!
//! Remote actor references are never cached across calls: they are looked up in their group each time, because
//! they change on every reconnect.
//!
//! ## Ownership rule
//! A key has one owner: the node whose publisher claimed it. A publish is refused while another node has a live
//! publisher on the key, and waits while an owner that does not answer still holds its lease (it pushed a live
//! HLS position within the heartbeat deadline + 3 s): a stalled owner keeps its stream. Two publishers racing on
//! two nodes (or both live after a partition heals): the lower claim rank wins ([`claims::ClaimRank`]: the epoch,
//! which a claim made behind a partition has higher, then Unix ms, then the node name), whatever the clocks say;
//! the other node ends its stream (its publisher is disconnected, its players get end-of-stream). A node taking
//! a stream over continues its numbering; while a peer declared down by the heartbeat deadline may be alive behind
//! a partition, it numbers in a band of its own ([`claims`]), so two owners never give one media sequence number
//! to two segments.

pub mod claims;
pub mod export;
pub mod hls;
pub mod membership;
pub mod ownership;
pub mod relay;
pub mod transport;
pub mod wire;

use std::sync::Arc;
use std::time::Duration;

use ractor::{pg, ActorRef, RpcReplyPort};
use ractor_cluster::RactorClusterMessage;

use crate::stream::StreamKey;
use wire::{Request, Response};

pub use membership::{Cluster, ClusterStatus, PeerStatus};

/// The message of every remote-capable actor: opaque [`wire`] bytes. Casts are [`wire::Cast`]s; calls carry a
/// [`wire::Request`] and answer a [`wire::Response`].
#[derive(RactorClusterMessage)]
pub enum RemoteMsg {
    /// A one-way [`wire::Cast`].
    Cast(Vec<u8>),
    /// A [`wire::Request`] answered with a [`wire::Response`].
    #[rpc]
    Call(Vec<u8>, RpcReplyPort<Vec<u8>>),
}

/// Process group of every node agent.
pub const NODE_GROUP: &str = "strom.node.v1";

/// Process group of the owner of `key`.
pub fn stream_group(key: &StreamKey) -> String {
    format!("strom.stream.v1:{key}")
}

/// Process group of the relay of `key` on `node`.
pub fn relay_group(key: &StreamKey, node: &str) -> String {
    format!("strom.relay.v1:{key}@{node}")
}

/// Process group of the node running the ladder of `key`.
pub fn encoder_group(key: &StreamKey) -> String {
    format!("strom.encoder.v1:{key}")
}

/// The `/api/v1/streams` entries of every stream of the cluster, this node's included (each with its owner's
/// `node` and the nodes it is relayed to, `relays`), asked of their owners' exports concurrently; an owner that
/// does not answer within `timeout` is left out.
pub async fn cluster_streams(timeout: Duration) -> Vec<serde_json::Value> {
    let prefix = "strom.stream.v1:";
    let mut tasks = tokio::task::JoinSet::new();
    for group in pg::which_groups().into_iter().filter(|g| g.starts_with(prefix)) {
        for owner in pg::get_members(&group).into_iter().map(ActorRef::<RemoteMsg>::from) {
            tasks.spawn(async move {
                match call(&owner, &Request::Info, timeout).await {
                    Some(Response::Info(Some(json))) => serde_json::from_slice::<serde_json::Value>(&json).ok(),
                    _ => None,
                }
            });
        }
    }
    let mut out = Vec::new();
    while let Some(r) = tasks.join_next().await {
        if let Ok(Some(v)) = r {
            out.push(v);
        }
    }
    out
}

/// Asks the owner of `key` on another node to disconnect its publisher and end the stream: `false` when no other
/// node owns it (or none answered within `timeout`).
pub async fn disconnect(key: &StreamKey, timeout: Duration) -> bool {
    let mut done = false;
    for owner in remote_members(&stream_group(key)) {
        done |= matches!(call(&owner, &Request::Disconnect, timeout).await, Some(Response::Api { status: 200, .. }));
    }
    done
}

/// Remote (other nodes') members of a group.
pub fn remote_members(group: &str) -> Vec<ActorRef<RemoteMsg>> {
    pg::get_members(&group.to_string()).into_iter().filter(|c| !c.get_id().is_local()).map(ActorRef::from).collect()
}

/// Whether a group has a member on this node.
pub fn has_local_member(group: &str) -> bool {
    !pg::get_local_members(&group.to_string()).is_empty()
}

/// Calls a remote actor; `None` on timeout, a dead peer or a malformed answer (logged).
pub async fn call(actor: &ActorRef<RemoteMsg>, req: &Request, timeout: Duration) -> Option<Response> {
    if let Some(c) = membership::REQUESTS.get() {
        c.with_label_values(&[req.label()]).inc();
    }
    let bytes = req.encode();
    match actor.call(|reply| RemoteMsg::Call(bytes, reply), Some(timeout)).await {
        Ok(ractor::rpc::CallResult::Success(b)) => match Response::decode(b) {
            Ok(r) => Some(r),
            Err(e) => {
                tracing::warn!(actor = %actor.get_id(), error = %e, "bad cluster response");
                None
            }
        },
        _ => None,
    }
}

/// A file another node holds, fetched in parts: `request(offset)` asks for the part at `offset`, answered with
/// [`Response::Segment`] (total size and the part). `None` when the node has none, does not answer, or says the
/// file is larger than `max_total`.
pub async fn fetch_in_parts(
    actor: &ActorRef<RemoteMsg>,
    timeout: Duration,
    max_total: u32,
    request: impl Fn(u32) -> Request,
) -> Option<bytes::Bytes> {
    let mut out = bytes::BytesMut::new();
    loop {
        let (total, part) = match call(actor, &request(out.len() as u32), timeout).await? {
            Response::Segment(s) => s?,
            _ => return None,
        };
        if total > max_total || part.is_empty() && (out.len() as u32) < total {
            return None;
        }
        if out.is_empty() && part.len() as u32 == total {
            return Some(part); // one part: no copy
        }
        out.extend_from_slice(&part);
        if out.len() as u32 >= total {
            return Some(out.freeze());
        }
    }
}

/// Sends a cast; false if the actor is gone.
pub fn cast(actor: &ActorRef<RemoteMsg>, msg: &wire::Cast) -> bool {
    actor.cast(RemoteMsg::Cast(msg.encode())).is_ok()
}

pub use crate::clock::unix_ms;

/// A cheap handle on the cluster side of a node, shared by the registry and the HTTP API.
pub type ClusterHandle = Arc<Cluster>;
