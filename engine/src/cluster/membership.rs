//! Membership: who is in the cluster, are they alive, how loaded are they.
//!
//! [`Cluster::start`] runs a ractor_cluster `NodeServer` (Transitive mode: a node that joins one peer learns the
//! others) and the [`Membership`] actor, which
//! - dials the configured seeds and the addresses of `cluster.dns` (re-resolved every `cluster.dns_interval_secs`,
//!   so new StatefulSet pods are found), each with a connect timeout and an authentication deadline;
//! - closes an incoming session that has not authenticated within 1.5 s (a stranger on the cluster port, silent or
//!   announcing a huge frame: counted in `strom_cluster_auth_failures_total{direction="in"}`, logged once per 10 s);
//! - re-dials a lost peer with backoff (200 ms doubling to 5 s): ractor_cluster does not reconnect by itself;
//! - pings every peer's [`NodeAgent`] every `cluster.heartbeat_interval_secs` and stops the session of a peer that
//!   has not answered for `cluster.heartbeat_deadline_secs`: ractor_cluster alone never notices a hung (SIGSTOPped)
//!   node. The session's end makes every actor of that node leave its process groups, so its streams vanish from
//!   lookups and relays from it end;
//! - keeps [`ClusterStatus`] (peers, state, heartbeat RTT, load) for `/api/v1/cluster` and the metrics.
//!
//! A peer presenting the wrong cookie fails ractor_cluster's challenge; its session ends unauthenticated, which is
//! logged here with the address.
//!
//! With node-to-node TLS (`cluster.tls_*`), the cluster port is served by [`super::transport`] (mutual TLS, each
//! handshake in its own task under a deadline) and ractor_cluster runs in isolated mode: membership asks each peer
//! for its peers ([`Request::Peers`]) every 5 s and dials the ones it does not know, over TLS.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use prometheus::{Histogram, HistogramOpts, IntCounterVec, IntGauge, IntGaugeVec, Opts};
use ractor::{pg, Actor, ActorId, ActorProcessingErr, ActorRef};
use ractor_cluster::node::{NodeConnectionMode, NodeServerSessionInformation};
use ractor_cluster::{
    IncomingEncryptionMode, NodeEventSubscription, NodeServer, NodeServerMessage, NodeSessionMessage,
};
use serde::Serialize;
use tracing::{debug, info, warn};

use super::claims::{Claims, OwnerState};
use super::wire::{Cast, JobRequest, Load, Request, Response, VodRequest};
use super::{call, RemoteMsg, NODE_GROUP};
use crate::config::{ClusterConfig, Config};
use crate::metrics::Metrics;
use crate::stream::segmenter::HlsPosition;
use crate::stream::StreamKey;
use crate::tls::ClusterTls;
use bytes::Bytes;

/// Largest inbound cluster frame. Relay batches stay far below it (a frame is at most `rtmp.max_message_size`,
/// under 16 MiB); one frame above it would tear down the whole link, so leave room.
const MAX_FRAME: u64 = 64 << 20;
/// A dial's TCP connect (ractor_cluster has no timeout of its own).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// A dialed peer must authenticate within this (a SIGSTOPped peer accepts TCP in the backlog and never answers).
const AUTH_DEADLINE: Duration = Duration::from_secs(3);
/// An incoming session must authenticate within this: a silent socket, or one announcing a huge frame before
/// the cookie exchange, is closed (and counted) instead of holding a session actor.
const INBOUND_AUTH_DEADLINE: Duration = Duration::from_millis(1500);

/// With node-to-node TLS: how often each peer is asked for its peers.
const DISCOVER_EVERY: Duration = Duration::from_secs(5);

fn backoff(attempt: u32) -> Duration {
    Duration::from_millis((200u64 << attempt.min(5)).min(5000))
}

/// One peer as `/api/v1/cluster` shows it.
#[derive(Debug, Clone, Serialize)]
pub struct PeerStatus {
    /// The peer's node name.
    pub name: String,
    /// Where it is dialed (`host:port`).
    pub address: String,
    /// `up` (heartbeats answered) or `suspect` (a heartbeat is late).
    pub state: String,
    /// Last heartbeat round trip in milliseconds.
    pub rtt_ms: Option<f64>,
    /// Its load, from its last heartbeat answer.
    pub load: Option<Load>,
    /// Seconds since the session was authenticated.
    pub connected_secs: f64,
    /// ractor_cluster's id of the peer's session (finds its actors in process groups).
    #[serde(skip)]
    pub node_id: u64,
}

/// `/api/v1/cluster`.
#[derive(Debug, Clone, Serialize)]
pub struct ClusterStatus {
    /// Clustering is on (a cookie is configured).
    pub enabled: bool,
    /// This node's name.
    pub node: String,
    /// The cluster listener.
    pub listen: Option<String>,
    /// The `host:port` other nodes dial to reach this one.
    pub advertise: Option<String>,
    /// This node's load.
    pub load: Load,
    /// Connected peers, by name.
    pub peers: Vec<PeerStatus>,
}

/// Cluster metrics (registered into the node's registry).
#[derive(Clone)]
pub struct ClusterMetrics {
    /// Nodes in the cluster as this node sees it, itself included.
    pub nodes: IntGauge,
    /// Heartbeat round trip per peer, microseconds.
    pub heartbeat_rtt_us: IntGaugeVec,
    /// Peers lost, by reason (`closed`, `heartbeat_deadline`).
    pub peers_lost: IntCounterVec,
    /// Cluster sessions that failed to authenticate (wrong cookie, deadline).
    pub auth_failures: IntCounterVec,
    /// Relays by direction: `out` (this node owns the stream and feeds another node), `in`.
    pub relays: IntGaugeVec,
    /// Relayed media bytes by direction.
    pub relay_bytes: IntCounterVec,
    /// Publishes refused because another node owns the key, or lost in a race.
    pub ownership_conflicts: IntCounterVec,
    /// How far behind its owner a stream relayed to this node is: per relay batch received, this node's clock
    /// minus the owner's send time (seconds; see [`RELAY_LAG_BUCKETS`]). It includes the clock skew between the
    /// two nodes (NTP-synced pods keep that to milliseconds); a negative difference (skew) counts as 0.
    pub relay_lag: Histogram,
    /// `strom_cluster_requests_total{request}`: cluster requests this node sent, by kind (see
    /// [`super::call`]; a playlist poll of a stream another node owns sends none once the owner is known).
    pub requests: IntCounterVec,
}

/// The requests counter of this process's cluster (set once, by the first [`ClusterMetrics`]), for [`super::call`].
pub(super) static REQUESTS: std::sync::OnceLock<IntCounterVec> = std::sync::OnceLock::new();

/// Buckets of `strom_cluster_relay_lag_seconds`: 1 ms (same host) to 10 s (a relay stuck behind its window).
pub const RELAY_LAG_BUCKETS: [f64; 14] =
    [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 7.5, 10.0];

impl ClusterMetrics {
    fn new(m: &Metrics) -> ClusterMetrics {
        let g = |n: &str, h: &str| m.register(IntGauge::new(n, h).expect("valid metric"));
        let gv = |n: &str, h: &str, l: &[&str]| m.register(IntGaugeVec::new(Opts::new(n, h), l).expect("valid metric"));
        let cv =
            |n: &str, h: &str, l: &[&str]| m.register(IntCounterVec::new(Opts::new(n, h), l).expect("valid metric"));
        let c = ClusterMetrics {
            nodes: g("strom_cluster_nodes", "Nodes in the cluster as this node sees it (itself included)."),
            heartbeat_rtt_us: gv(
                "strom_cluster_heartbeat_rtt_microseconds",
                "Last heartbeat round trip to each peer.",
                &["peer"],
            ),
            peers_lost: cv("strom_cluster_peers_lost_total", "Peers lost, by reason.", &["reason"]),
            auth_failures: cv(
                "strom_cluster_auth_failures_total",
                "Cluster sessions that ended before authenticating (wrong cookie, deadline).",
                &["direction"],
            ),
            relays: gv("strom_cluster_relays", "Cross-node stream relays, by direction.", &["direction"]),
            relay_bytes: cv("strom_cluster_relay_bytes_total", "Relayed media bytes, by direction.", &["direction"]),
            ownership_conflicts: cv(
                "strom_cluster_ownership_conflicts_total",
                "Publishes refused or ended because another node owns the key.",
                &["outcome"],
            ),
            relay_lag: m.register(
                Histogram::with_opts(
                    HistogramOpts::new(
                        "strom_cluster_relay_lag_seconds",
                        "Per relay batch received: this node's clock minus the owner's send time (includes clock skew \
                         between the nodes; negative skew counts as 0).",
                    )
                    .buckets(RELAY_LAG_BUCKETS.to_vec()),
                )
                .expect("valid metric"),
            ),
            requests: cv("strom_cluster_requests_total", "Cluster requests this node sent, by kind.", &["request"]),
        };
        let _ = REQUESTS.set(c.requests.clone());
        c.nodes.set(1);
        for d in ["in", "out"] {
            c.relays.with_label_values(&[d]).set(0);
            c.relay_bytes.with_label_values(&[d]);
        }
        c
    }
}

/// The cluster side of a node (see the module docs). Shared as [`super::ClusterHandle`].
pub struct Cluster {
    /// This node's name (unique in the cluster).
    pub node: String,
    /// Cluster metrics.
    pub metrics: ClusterMetrics,
    /// Configuration.
    pub config: ClusterConfig,
    /// Remote HLS segments fetched by this node.
    pub segments: Arc<super::hls::SegmentCache>,
    listen: SocketAddr,
    advertise: String,
    node_server: ActorRef<NodeServerMessage>,
    membership: ActorRef<MembershipMsg>,
    agent: ActorRef<RemoteMsg>,
    shared: Arc<Shared>,
    /// The cluster port's accept loop with node-to-node TLS (see [`super::transport`]).
    tls_listener: Option<tokio::task::JoinHandle<()>>,
    /// When this node joined (started its cluster side).
    started: Instant,
}

struct Shared {
    peers: Mutex<BTreeMap<String, PeerStatus>>,
    load: Mutex<Load>,
    /// The claims and last HLS positions other owners shared, by stream key ([`super::claims`]).
    hls: Mutex<Claims>,
    /// Woken whenever a stream's HLS state arrives: blocking LL-HLS requests for streams other nodes own park
    /// here, so they need no cluster call of their own.
    hls_waiters: Mutex<HashMap<String, Arc<tokio::sync::Notify>>>,
    /// Peers declared down by the heartbeat deadline (not seen to close their session: perhaps alive behind a
    /// partition), until they join again or `SUSPECT_TTL` passes: a takeover meanwhile is fenced
    /// ([`super::claims`]).
    suspects: Mutex<HashMap<String, Instant>>,
    /// A peer has passed this node the HLS states it knows (see [`Cluster::warming_up`]).
    heard: std::sync::atomic::AtomicBool,
    /// This node has left the cluster (it is shutting down).
    left: std::sync::atomic::AtomicBool,
    /// When this node last answered another node's request for a segment or part ([`crate::clock::unix_ms`]).
    segment_served_ms: std::sync::atomic::AtomicU64,
    /// Takes a ladder another node asks this one to run ([`Request::StartEncoder`]).
    encoder_host: std::sync::OnceLock<EncoderHost>,
    /// Answers other nodes' requests about this node's recordings and assets ([`Request::Vod`]).
    vod_host: std::sync::OnceLock<VodHost>,
    /// Does VOD job work for other nodes ([`Request::Job`]).
    job_host: std::sync::OnceLock<JobHost>,
}

/// Answers a [`JobRequest`] (set by the VOD jobs, see [`Cluster::set_job_host`]).
pub type JobHost = Arc<dyn Fn(JobRequest) -> futures_util::future::BoxFuture<'static, Response> + Send + Sync>;

/// Answers a [`VodRequest`] from this node's recordings (set by the storage layer, see [`Cluster::set_vod_host`]).
pub type VodHost = Arc<dyn Fn(VodRequest) -> futures_util::future::BoxFuture<'static, Response> + Send + Sync>;

pub use crate::stream::ports::EncoderHost;

/// HLS positions older than this are forgotten.
const HLS_STATE_TTL: Duration = Duration::from_secs(600);
/// HLS states passed on to a peer that joins: those pushed within this.
const SYNC_MAX_AGE: Duration = Duration::from_secs(60);
/// How long a peer declared down by the heartbeat deadline (and not back) fences takeovers.
const SUSPECT_TTL: Duration = Duration::from_secs(600);

/// Errors starting the cluster side.
#[derive(Debug, thiserror::Error)]
#[error("cluster: {0}")]
pub struct ClusterError(pub String);

impl Cluster {
    /// Starts the node server, the node agent and membership. `load` is called every second for this node's load.
    pub async fn start(
        config: &Config,
        cookie: String,
        metrics: &Metrics,
        load: Box<dyn Fn() -> Load + Send + Sync>,
    ) -> Result<Arc<Cluster>, ClusterError> {
        let c = &config.cluster;
        let node = config.node_name.clone();
        let advertise_host = if c.advertise.is_empty() { node.clone() } else { c.advertise.clone() };
        let mut listen = c.listen;
        let tls = match (&c.tls_cert_file, &c.tls_key_file, &c.tls_ca_file) {
            (Some(cert), Some(key), Some(ca)) => {
                let (tls, certs) = ClusterTls::load(cert, key, ca).map_err(ClusterError)?;
                certs.watch();
                Some(tls)
            }
            _ => None,
        };
        let cm = ClusterMetrics::new(metrics);
        let (node_server, tls_listener) = if let Some(tls) = &tls {
            let listener = tokio::net::TcpListener::bind(listen)
                .await
                .map_err(|e| ClusterError(format!("cannot listen on {listen} (cluster.listen): {e}")))?;
            if let Ok(a) = listener.local_addr() {
                listen = a;
            }
            // ractor_cluster always runs a listener of its own: a dead end on loopback behind the same mutual TLS
            // (see `transport`). Peers learn this node's real port from the connection string set below.
            let server = NodeServer::new(
                0,
                cookie,
                node.clone(),
                advertise_host.clone(),
                Some(IncomingEncryptionMode::Tls(tls.acceptor())),
                Some(NodeConnectionMode::Isolated),
            )
            .with_listen_addr(std::net::Ipv4Addr::LOCALHOST.into())
            .with_max_inbound_frame_size(MAX_FRAME);
            let (ns, _) =
                Actor::spawn(None, server, ()).await.map_err(|e| ClusterError(format!("node server: {e}")))?;
            ns.cast(NodeServerMessage::PortChanged { port: listen.port() })
                .map_err(|e| ClusterError(format!("node server: {e}")))?;
            let failures = cm.auth_failures.with_label_values(&["in"]);
            let task = tokio::spawn(super::transport::serve(listener, tls.acceptor(), ns.clone(), failures));
            (ns, Some(task))
        } else {
            // Bind first so a busy port is a clear error (ractor's listener would only log it).
            drop(
                std::net::TcpListener::bind(listen)
                    .map_err(|e| ClusterError(format!("cannot listen on {listen} (cluster.listen): {e}")))?,
            );
            let server = NodeServer::new(
                listen.port(),
                cookie,
                node.clone(),
                advertise_host.clone(),
                None,
                Some(NodeConnectionMode::Transitive),
            )
            .with_listen_addr(listen.ip())
            .with_max_inbound_frame_size(MAX_FRAME);
            let (ns, _) =
                Actor::spawn(None, server, ()).await.map_err(|e| ClusterError(format!("node server: {e}")))?;
            (ns, None)
        };
        let shared = Arc::new(Shared {
            peers: Mutex::new(BTreeMap::new()),
            load: Mutex::new(Load::default()),
            hls: Mutex::new(Claims::new(HLS_STATE_TTL)),
            hls_waiters: Mutex::new(HashMap::new()),
            suspects: Mutex::new(HashMap::new()),
            heard: std::sync::atomic::AtomicBool::new(false),
            left: std::sync::atomic::AtomicBool::new(false),
            segment_served_ms: std::sync::atomic::AtomicU64::new(0),
            encoder_host: std::sync::OnceLock::new(),
            vod_host: std::sync::OnceLock::new(),
            job_host: std::sync::OnceLock::new(),
        });
        let (agent, _) = Actor::spawn(None, NodeAgent, AgentArgs { node: node.clone(), shared: shared.clone() })
            .await
            .map_err(|e| ClusterError(format!("node agent: {e}")))?;
        let advertise = format!("{advertise_host}:{}", listen.port());
        let (membership, _) = Actor::spawn(
            None,
            Membership,
            MembershipArgs {
                node: node.clone(),
                advertise: advertise.clone(),
                config: c.clone(),
                node_server: node_server.clone(),
                shared: shared.clone(),
                metrics: cm.clone(),
                load,
                tls: tls.as_ref().map(|t| t.connector()),
            },
        )
        .await
        .map_err(|e| ClusterError(format!("membership: {e}")))?;
        info!(node = %node, listen = %listen, advertise = %advertise, seeds = ?c.seeds, dns = %c.dns, tls = tls.is_some(), "cluster node started");
        Ok(Arc::new(Cluster {
            node,
            metrics: cm,
            config: c.clone(),
            segments: Default::default(),
            listen,
            advertise,
            node_server,
            membership,
            agent,
            shared,
            tls_listener,
            started: Instant::now(),
        }))
    }

    /// Whether this node has just started and not yet learnt the cluster's streams: until a peer has passed on
    /// the HLS states it knows (at its first heartbeat to this node), or for the heartbeat deadline + 1 s when
    /// none does (a first node, or a cluster with no stream). Meanwhile the node is not ready (`/readyz`), and a
    /// playlist it does not know is answered 503 with `Retry-After` instead of 404 (a balancer tries another
    /// node; a player asks again): a restarted pod must not tell players that a live stream does not exist.
    pub fn warming_up(&self) -> bool {
        let limit = Duration::from_secs_f64(self.config.heartbeat_deadline_secs + 1.0);
        !self.shared.heard.load(std::sync::atomic::Ordering::Relaxed) && self.started.elapsed() < limit
    }

    /// Membership and load, for `/api/v1/cluster`.
    pub fn status(&self) -> ClusterStatus {
        ClusterStatus {
            enabled: true,
            node: self.node.clone(),
            listen: Some(self.listen.to_string()),
            advertise: Some(self.advertise.clone()),
            load: *lock(&self.shared.load),
            peers: lock(&self.shared.peers).values().cloned().collect(),
        }
    }

    /// Shares where the HLS playlist of a stream this node owns (its claim: `since_ms`, `epoch`) stands with every
    /// other node.
    pub fn share_hls(&self, key: &StreamKey, since_ms: u64, epoch: u64, pos: &HlsPosition) {
        let msg = Cast::HlsState {
            key: key.to_string(),
            since_ms,
            next_msn: pos.next_msn,
            discontinuity: pos.discontinuity,
            ended: pos.ended,
            playlist: pos.playlist.clone(),
            epoch,
            timeline_ms: pos.timeline_ms,
        };
        let bytes = msg.encode();
        for agent in super::remote_members(NODE_GROUP) {
            let _ = agent.cast(RemoteMsg::Cast(bytes.clone()));
        }
        // Requests parked here on another node's playlist of this stream (before it became this node's own) ask
        // this node's segmenter again.
        if let Some(w) = lock(&self.shared.hls_waiters).get(&key.to_string()) {
            w.notify_waiters();
        }
    }

    /// What wakes when the HLS state of `key` arrives from its owner (see [`Cluster::pushed_playlist`]).
    pub fn hls_waiter(&self, key: &StreamKey) -> Arc<tokio::sync::Notify> {
        lock(&self.shared.hls_waiters).entry(key.to_string()).or_default().clone()
    }

    /// The epoch a claim of `key` made here now takes (see [`super::claims`]).
    pub fn next_epoch(&self, key: &StreamKey) -> u64 {
        lock(&self.shared.hls).next_epoch(&key.to_string())
    }

    /// Records the epoch another node answered a claim of `key` with.
    pub fn note_epoch(&self, key: &StreamKey, epoch: u64) {
        lock(&self.shared.hls).note_epoch(&key.to_string(), epoch, Instant::now());
    }

    /// Where this node continues the HLS playlist of `key` if it was live on another node within `max_age`:
    /// `(first msn, discontinuity, stream time reached)`, the numbers above every number another owner used; in
    /// this node's numbering band while a peer declared down by the heartbeat deadline may still be alive behind a
    /// partition (see [`super::claims`]), so two owners never give one number to two segments.
    pub fn hls_resume(&self, key: &StreamKey, max_age: Duration) -> Option<super::claims::HlsResume> {
        let now = Instant::now();
        let fenced = {
            let mut suspects = lock(&self.shared.suspects);
            suspects.retain(|_, at| now.saturating_duration_since(*at) < SUSPECT_TTL);
            !suspects.is_empty()
        };
        if fenced {
            info!(stream = %key, suspects = ?lock(&self.shared.suspects).keys().collect::<Vec<_>>(), "a peer declared down may be alive behind a partition: this takeover numbers in its own band");
        }
        lock(&self.shared.hls).takeover(&key.to_string(), &self.node, fenced, max_age, now)
    }

    /// How long a publish of `key` here must still wait for the lease of an owner that did not answer its claim
    /// (`answered`: the claim times of those that did; see [`super::claims`]).
    pub fn lease_remaining(&self, key: &StreamKey, answered: &[u64]) -> Option<Duration> {
        let lease = self.owner_lease();
        lock(&self.shared.hls).lease_remaining(&key.to_string(), answered, lease, Instant::now())
    }

    /// How long an owner's last push holds its claim when it does not answer: the heartbeat deadline plus 3 s, so
    /// an owner stalled past the deadline (declared down, then back) is heard from again within it.
    pub fn owner_lease(&self) -> Duration {
        Duration::from_secs_f64(self.config.heartbeat_deadline_secs + 3.0)
    }

    /// The playlist the owner whose claim of `key` dates from `since_ms` pushed last (owners push theirs at every
    /// new segment, see [`super::export`]): what that owner would answer now, without asking it.
    pub fn pushed_playlist(&self, key: &StreamKey, since_ms: u64) -> Option<Bytes> {
        lock(&self.shared.hls).pushed_playlist(&key.to_string(), since_ms)
    }

    /// Whether this node has left the cluster (see [`Cluster::shutdown`]).
    pub fn has_left(&self) -> bool {
        self.shared.left.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Whether another node exports `key` (owns it, or has just taken it over).
    pub fn exported_elsewhere(&self, key: &StreamKey) -> bool {
        !super::remote_members(&super::stream_group(key)).is_empty()
    }

    /// A new owner of `key` copies the files of the previous owner's window that it lists first (`names`:
    /// segments, parts, init segments) from the nodes exporting `key`, in the background, while the previous
    /// owner is still there (a stopping node hands its streams over before it leaves): afterwards this node
    /// serves them itself ([`Cluster::earlier_file`]), and so do the nodes that fetch them from it.
    pub fn copy_earlier(&self, key: &StreamKey, names: Vec<String>) {
        self.segments.copy(key, names, super::remote_members(&super::stream_group(key)));
    }

    /// A file of `key` that this node lists without having made it (the previous owner's window): copied
    /// already, or fetched now from another node exporting `key`.
    pub async fn earlier_file(&self, key: &StreamKey, name: &str) -> Option<Bytes> {
        self.segments.get_or_fetch(key, name, super::remote_members(&super::stream_group(key))).await
    }

    /// Notes that another node was just given a segment or part of this node's (see
    /// [`Cluster::segments_fetched_within`]).
    pub fn note_segment_served(&self) {
        self.shared.segment_served_ms.store(crate::clock::unix_ms(), std::sync::atomic::Ordering::Relaxed);
    }

    /// Whether another node fetched a segment or part from this one within `within`: a stopping node stays
    /// while the node that took its streams over copies their windows.
    pub fn segments_fetched_within(&self, within: Duration) -> bool {
        let at = self.shared.segment_served_ms.load(std::sync::atomic::Ordering::Relaxed);
        crate::clock::unix_ms().saturating_sub(at) < within.as_millis() as u64
    }

    /// Whether an owner of `key` pushed its HLS state within `within` (a live LL-HLS owner pushes at every part).
    pub fn pushed_within(&self, key: &StreamKey, within: Duration) -> bool {
        lock(&self.shared.hls).last_playlist(&key.to_string(), within, Instant::now()).is_some()
    }

    /// The last playlist of `key` an owner shared within `max_age`, to keep serving players until a publisher
    /// brings the stream back. `closed`: with its open segment closed
    /// ([`crate::formats::playlist::close_open_segment`]), so the next owner's first segment joins it in players'
    /// timelines; for a stream whose owner's node is gone. An owner that is still a member but does not answer
    /// right now gets its text as pushed: it may go on, and a closed segment it then continues would send
    /// players' media sequence back.
    pub fn last_playlist(&self, key: &StreamKey, max_age: Duration, closed: bool) -> Option<Bytes> {
        let text = lock(&self.shared.hls).last_playlist(&key.to_string(), max_age, Instant::now())?;
        if !closed {
            return Some(text);
        }
        match crate::formats::playlist::close_open_segment(&String::from_utf8_lossy(&text)) {
            Some(closed) => Some(Bytes::from(closed)),
            None => Some(text),
        }
    }

    /// Where ladders may run: this node and every peer that answers heartbeats, each with its last load.
    pub fn nodes_with_load(&self) -> Vec<(String, Load)> {
        let mut out = vec![(self.node.clone(), *lock(&self.shared.load))];
        out.extend(
            lock(&self.shared.peers)
                .values()
                .filter(|p| p.state == "up")
                .filter_map(|p| Some((p.name.clone(), p.load?))),
        );
        out
    }

    /// The node agent of peer `node`, if it is connected.
    pub fn agent_of(&self, node: &str) -> Option<ActorRef<RemoteMsg>> {
        let id = lock(&self.shared.peers).get(node)?.node_id;
        pg::get_members(&NODE_GROUP.to_string())
            .into_iter()
            .find(|c| matches!(c.get_id(), ActorId::Remote { node_id, .. } if node_id == id))
            .map(ActorRef::from)
    }

    /// Lets other nodes ask about this node's recordings (the storage layer registers itself once).
    pub fn set_vod_host(&self, host: VodHost) {
        let _ = self.shared.vod_host.set(host);
    }

    /// Lets other nodes send VOD job work here (the VOD jobs register themselves once).
    pub fn set_job_host(&self, host: JobHost) {
        let _ = self.shared.job_host.set(host);
    }

    /// Every other node's agent (connected now).
    pub fn agents(&self) -> Vec<ActorRef<RemoteMsg>> {
        super::remote_members(NODE_GROUP)
    }

    /// Lets other nodes place ladders here (the transcoder registers itself once).
    pub fn set_encoder_host(&self, host: EncoderHost) {
        let _ = self.shared.encoder_host.set(host);
    }

    /// Leaves the cluster: stops membership (no re-dials), the agent and the node server (closing every session).
    pub async fn shutdown(&self) {
        // Requests parked on other nodes' playlists here are released (this node hears no more pushes).
        self.shared.left.store(true, std::sync::atomic::Ordering::Relaxed);
        for w in lock(&self.shared.hls_waiters).values() {
            w.notify_waiters();
        }
        self.membership.stop(None);
        self.agent.stop(None);
        self.node_server.stop(None);
        if let Some(t) = &self.tls_listener {
            t.abort();
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

// ---- node agent -------------------------------------------------------------------------------------------------

/// Answers heartbeats for this node (group [`NODE_GROUP`]).
pub struct NodeAgent;

/// Arguments of the [`NodeAgent`].
pub struct AgentArgs {
    node: String,
    shared: Arc<Shared>,
}

impl Actor for NodeAgent {
    type Msg = RemoteMsg;
    type State = AgentArgs;
    type Arguments = AgentArgs;

    async fn pre_start(&self, myself: ActorRef<RemoteMsg>, args: AgentArgs) -> Result<AgentArgs, ActorProcessingErr> {
        pg::join(NODE_GROUP.to_string(), vec![myself.get_cell()]);
        Ok(args)
    }

    async fn handle(
        &self,
        _: ActorRef<RemoteMsg>,
        msg: RemoteMsg,
        st: &mut AgentArgs,
    ) -> Result<(), ActorProcessingErr> {
        if let RemoteMsg::Cast(bytes) = msg {
            match Cast::decode(bytes) {
                Ok(Cast::HlsState { key, since_ms, next_msn, discontinuity, ended, playlist, epoch, timeline_ms }) => {
                    let mut g = lock(&st.shared.hls);
                    // Every owner's state is kept by its claim (two owners push side by side until a heal settles).
                    let at = Instant::now();
                    let state =
                        OwnerState { epoch, since_ms, next_msn, discontinuity, ended, playlist, timeline_ms, at };
                    g.pushed(&key, state);
                    if let Some(w) = lock(&st.shared.hls_waiters).get(&key) {
                        w.notify_waiters();
                    }
                    g.expire(at);
                    lock(&st.shared.hls_waiters).retain(|k, w| g.knows(k) || Arc::strong_count(w) > 1);
                }
                Ok(Cast::Synced) => {
                    if !st.shared.heard.swap(true, std::sync::atomic::Ordering::Relaxed) {
                        info!("a peer passed on the cluster's HLS states: this node serves every stream's playlist");
                    }
                }
                Ok(other) => debug!(cast = ?other, "node agent: unexpected cast"),
                Err(e) => warn!(error = %e, "node agent: dropped a malformed message"),
            }
            return Ok(());
        }
        if let RemoteMsg::Call(bytes, reply) = msg {
            match Request::decode(bytes) {
                Ok(Request::Ping { nonce, .. }) => {
                    let load = *lock(&st.shared.load);
                    let _ = reply.send(Response::Pong { nonce, node: st.node.clone(), load }.encode());
                }
                Ok(Request::StartEncoder { key, owner }) => {
                    let ok = match (StreamKey::parse(&key), st.shared.encoder_host.get()) {
                        (Ok(k), Some(host)) => host(k, owner),
                        _ => false,
                    };
                    let _ = reply.send(Response::Started(ok).encode());
                }
                Ok(Request::Job(j)) => match st.shared.job_host.get() {
                    // A chunk is answered when it is encoded: off the agent's mailbox.
                    Some(host) => {
                        let answer = host(j);
                        tokio::spawn(async move {
                            let _ = reply.send(answer.await.encode());
                        });
                    }
                    None => {
                        let body = Bytes::from_static(b"{\"error\":\"VOD jobs are off on this node\"}");
                        let _ = reply.send(Response::Api { status: 503, body }.encode());
                    }
                },
                Ok(Request::Vod(v)) => match st.shared.vod_host.get() {
                    // Storage reads may take a while: answered off the agent's mailbox (heartbeats go on).
                    Some(host) => {
                        let answer = host(v);
                        tokio::spawn(async move {
                            let _ = reply.send(answer.await.encode());
                        });
                    }
                    None => {
                        let body = Bytes::from_static(b"{\"error\":\"recording is off on this node\"}");
                        let _ = reply.send(Response::Api { status: 404, body }.encode());
                    }
                },
                Ok(Request::Peers) => {
                    let addresses: Vec<String> =
                        lock(&st.shared.peers).values().map(|p| p.address.clone()).filter(|a| !a.is_empty()).collect();
                    let body = Bytes::from(serde_json::to_vec(&addresses).unwrap_or_default());
                    let _ = reply.send(Response::Api { status: 200, body }.encode());
                }
                Ok(other) => debug!(request = ?other, "node agent: unexpected request"),
                Err(e) => warn!(error = %e, "node agent: dropped a malformed request"),
            }
        }
        Ok(())
    }
}

// ---- membership -------------------------------------------------------------------------------------------------

struct Events(ActorRef<MembershipMsg>);

impl NodeEventSubscription for Events {
    fn node_session_opened(&self, ses: NodeServerSessionInformation) {
        let _ = self.0.cast(MembershipMsg::Opened(ses));
    }
    fn node_session_authenticated(&self, ses: NodeServerSessionInformation) {
        let _ = self.0.cast(MembershipMsg::Authenticated(ses));
    }
    fn node_session_disconnected(&self, ses: NodeServerSessionInformation) {
        let _ = self.0.cast(MembershipMsg::Disconnected(ses));
    }
}

/// Messages of the [`Membership`] actor (local only).
pub enum MembershipMsg {
    /// A session opened (incoming or outgoing).
    Opened(NodeServerSessionInformation),
    /// A session authenticated.
    Authenticated(NodeServerSessionInformation),
    /// A session ended.
    Disconnected(NodeServerSessionInformation),
    /// Dial `addr` (attempt number for backoff).
    Dial(String, u32),
    /// A dial's TCP connect finished.
    DialResult(String, u32, Result<SocketAddr, DialError>),
    /// The addresses a peer's (or this node's) advertised name resolves to.
    Learned(String, Vec<SocketAddr>),
    /// Resolve `cluster.dns` again.
    Resolve,
    /// Heartbeat timer.
    Tick,
    /// A heartbeat came back.
    Pong(u64, Duration, Load),
    /// A heartbeat failed.
    PingFailed(u64),
}

impl ractor::Message for MembershipMsg {}

/// Why a dial did not connect.
#[derive(Debug)]
pub enum DialError {
    /// The address is this node, or a peer already connected (found again through DNS or a seed).
    Known,
    /// Resolution or connection failed.
    Failed(String),
}

/// Arguments of [`Membership`].
pub struct MembershipArgs {
    node: String,
    advertise: String,
    config: ClusterConfig,
    node_server: ActorRef<NodeServerMessage>,
    shared: Arc<Shared>,
    metrics: ClusterMetrics,
    load: Box<dyn Fn() -> Load + Send + Sync>,
    /// Node-to-node TLS: dial with this (see [`super::transport`]).
    tls: Option<tokio_rustls::TlsConnector>,
}

struct Peer {
    name: String,
    address: String,
    session: ActorRef<NodeSessionMessage>,
    since: Instant,
    last_ok: Instant,
    rtt: Option<Duration>,
    load: Option<Load>,
    inflight: bool,
    /// This node's HLS states were passed on to the peer (at its first heartbeat).
    synced: bool,
}

struct PendingDial {
    addr: String,
    attempt: u32,
    started: Instant,
    session: Option<ActorRef<NodeSessionMessage>>,
    /// An incoming session (not a dial of ours).
    incoming: bool,
}

/// State of [`Membership`].
pub struct MembershipState {
    args: MembershipArgs,
    peers: HashMap<u64, Peer>,
    pending: HashMap<SocketAddr, PendingDial>,
    /// Addresses being dialed or waiting for a re-dial (no duplicate dials).
    dialing: HashSet<String>,
    /// Socket addresses of this node (`"self"`) and of connected peers (their names): never dialed again.
    known: Arc<Mutex<HashMap<SocketAddr, String>>>,
    nonce: u64,
    last_load: Instant,
    /// When an incoming session's authentication failure was last logged (Unix ms).
    auth_failure_logged_ms: u64,
    /// With node-to-node TLS: when peers were last asked for their peers.
    last_discover: Instant,
}

/// The membership actor (see the module docs).
pub struct Membership;

impl Actor for Membership {
    type Msg = MembershipMsg;
    type State = MembershipState;
    type Arguments = MembershipArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<MembershipMsg>,
        args: MembershipArgs,
    ) -> Result<MembershipState, ActorProcessingErr> {
        args.node_server.cast(NodeServerMessage::SubscribeToEvents {
            id: "strom-membership".into(),
            subscription: Box::new(Events(myself.clone())),
        })?;
        learn(&myself, "self".into(), args.advertise.clone());
        if !args.config.listen.ip().is_unspecified() {
            let _ = myself.cast(MembershipMsg::Learned("self".into(), vec![args.config.listen]));
        }
        for s in &args.config.seeds {
            if *s != args.advertise {
                myself.cast(MembershipMsg::Dial(s.clone(), 0))?;
            }
        }
        if !args.config.dns.is_empty() {
            myself.cast(MembershipMsg::Resolve)?;
        }
        let tick = Duration::from_secs_f64(args.config.heartbeat_interval_secs);
        myself.send_interval(tick, || MembershipMsg::Tick);
        let mut st = MembershipState {
            args,
            peers: HashMap::new(),
            pending: HashMap::new(),
            dialing: HashSet::new(),
            known: Arc::new(Mutex::new(HashMap::new())),
            nonce: 0,
            last_load: Instant::now(),
            auth_failure_logged_ms: 0,
            last_discover: Instant::now(),
        };
        // Measured now, before any peer can ask: the first heartbeats carry this node's load (its free ladder
        // slots), not an empty one that keeps a node that just joined out of ladder placement.
        st.update_load(Instant::now());
        Ok(st)
    }

    async fn handle(
        &self,
        myself: ActorRef<MembershipMsg>,
        msg: MembershipMsg,
        st: &mut MembershipState,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            MembershipMsg::Dial(addr, attempt) => {
                if st.peers.values().any(|p| p.address == addr) || !st.dialing.insert(addr.clone()) {
                    return Ok(());
                }
                let ns = st.args.node_server.clone();
                let me = myself.clone();
                let known = st.known.clone();
                let tls = st.args.tls.clone();
                let failures = st.args.metrics.auth_failures.with_label_values(&["out"]);
                tokio::spawn(async move {
                    let res = dial(&ns, &addr, &known, tls.as_ref(), &failures).await;
                    let _ = me.cast(MembershipMsg::DialResult(addr, attempt, res));
                });
            }
            MembershipMsg::DialResult(addr, attempt, res) => match res {
                Ok(sa) => {
                    debug!(peer = %addr, %sa, "cluster dial connected; authenticating");
                    st.dialing.remove(&addr);
                    let session = st.pending.get(&sa).and_then(|p| p.session.clone());
                    st.pending
                        .insert(sa, PendingDial { addr, attempt, started: Instant::now(), session, incoming: false });
                }
                Err(DialError::Known) => {
                    st.dialing.remove(&addr);
                }
                Err(DialError::Failed(e)) => {
                    let d = backoff(attempt);
                    if attempt == 0 || attempt % 10 == 9 {
                        warn!(peer = %addr, error = %e, retry_in = ?d, "cannot reach cluster peer");
                    } else {
                        debug!(peer = %addr, error = %e, retry_in = ?d, "cannot reach cluster peer");
                    }
                    st.retry(&myself, addr, attempt + 1);
                }
            },
            MembershipMsg::Opened(s) => {
                // Outgoing (a dial) and incoming sessions alike must authenticate in time (see `tick`).
                if let Ok(sa) = s.peer_addr.parse::<SocketAddr>() {
                    st.pending.entry(sa).and_modify(|p| p.session = Some(s.actor.clone())).or_insert(PendingDial {
                        addr: String::new(),
                        attempt: 0,
                        started: Instant::now(),
                        session: Some(s.actor.clone()),
                        incoming: s.is_server,
                    });
                }
            }
            MembershipMsg::Authenticated(s) => {
                if let Ok(sa) = s.peer_addr.parse::<SocketAddr>() {
                    st.pending.remove(&sa);
                }
                let (full, address) =
                    s.peer_name.as_ref().map(|n| (n.name.clone(), n.connection_string.clone())).unwrap_or_default();
                // ractor_cluster names a node `name@host`.
                let name = full.split('@').next().unwrap_or_default().to_string();
                info!(peer = %name, address = %address, from = %s.peer_addr, incoming = s.is_server, "cluster peer joined");
                lock(&st.args.shared.suspects).remove(&name);
                st.dialing.remove(&address);
                learn(&myself, name.clone(), address.clone());
                st.peers.insert(
                    s.node_id,
                    Peer {
                        name,
                        address,
                        session: s.actor.clone(),
                        since: Instant::now(),
                        last_ok: Instant::now(),
                        rtt: None,
                        load: None,
                        inflight: false,
                        synced: false,
                    },
                );
                st.publish();
                if st.args.tls.is_some() {
                    st.discover(&myself);
                }
            }
            MembershipMsg::Disconnected(s) => {
                if let Some(p) = st.peers.remove(&s.node_id) {
                    warn!(peer = %p.name, address = %p.address, "cluster peer lost; re-dialing");
                    lock(&st.known).retain(|_, n| *n != p.name);
                    st.args.metrics.peers_lost.with_label_values(&["closed"]).inc();
                    st.args.metrics.heartbeat_rtt_us.remove_label_values(&[&p.name]).ok();
                    // Whoever dialed before dials again; also dial if we only knew it from its incoming session,
                    // unless another session to it is still up (ractor_cluster keeps one per pair).
                    if !st.peers.values().any(|q| q.name == p.name) && !p.address.is_empty() {
                        st.retry(&myself, p.address, 0);
                    }
                    st.publish();
                } else if let Some(name) = s
                    .peer_name
                    .as_ref()
                    .map(|n| n.name.split('@').next().unwrap_or_default().to_string())
                    .filter(|n| st.peers.values().any(|p| p.name == *n))
                {
                    // ractor_cluster keeps one session per pair of nodes: the other one was closed.
                    debug!(peer = %name, "duplicate cluster session closed");
                    if let Ok(sa) = s.peer_addr.parse::<SocketAddr>() {
                        st.pending.remove(&sa);
                    }
                } else {
                    let sa = s.peer_addr.parse::<SocketAddr>().ok();
                    let pending = sa.and_then(|sa| st.pending.remove(&sa));
                    let direction = if s.is_server { "in" } else { "out" };
                    st.args.metrics.auth_failures.with_label_values(&[direction]).inc();
                    let why = "cluster session ended before authenticating (wrong cookie, self-dial, a duplicate \
                               session, or a stranger past the deadline)";
                    // A flood of strangers on the cluster port is counted, and logged once per 10 s.
                    let now_ms = crate::clock::unix_ms();
                    if !s.is_server || now_ms.saturating_sub(st.auth_failure_logged_ms) >= 10_000 {
                        st.auth_failure_logged_ms = now_ms;
                        warn!(from = %s.peer_addr, incoming = s.is_server, "{why}");
                    } else {
                        debug!(from = %s.peer_addr, incoming = s.is_server, "{why}");
                    }
                    if let Some(p) = pending.filter(|p| !p.addr.is_empty()) {
                        st.retry(&myself, p.addr, p.attempt + 1);
                    }
                }
            }
            MembershipMsg::Learned(name, addrs) => {
                // Only while that peer is still connected (or for this node itself).
                if name == "self" || st.peers.values().any(|p| p.name == name) {
                    let mut known = lock(&st.known);
                    for a in addrs {
                        known.insert(a, name.clone());
                    }
                }
            }
            MembershipMsg::Resolve => {
                learn(&myself, "self".into(), st.args.advertise.clone());
                let dns = st.args.config.dns.clone();
                let me = myself.clone();
                let advertise = st.args.advertise.clone();
                tokio::spawn(async move {
                    match tokio::net::lookup_host(&dns).await {
                        Ok(addrs) => {
                            for a in addrs {
                                let a = a.to_string();
                                if a != advertise {
                                    let _ = me.cast(MembershipMsg::Dial(a, 0));
                                }
                            }
                        }
                        Err(e) => debug!(dns = %dns, error = %e, "cluster.dns does not resolve (yet)"),
                    }
                });
                let every = Duration::from_secs_f64(st.args.config.dns_interval_secs);
                myself.send_after(every, || MembershipMsg::Resolve);
            }
            MembershipMsg::Tick => st.tick(&myself),
            MembershipMsg::Pong(id, rtt, load) => {
                if let Some(p) = st.peers.get_mut(&id) {
                    p.inflight = false;
                    p.last_ok = Instant::now();
                    p.rtt = Some(rtt);
                    p.load = Some(load);
                    st.args.metrics.heartbeat_rtt_us.with_label_values(&[&p.name]).set(rtt.as_micros() as i64);
                }
                st.publish();
            }
            MembershipMsg::PingFailed(id) => {
                if let Some(p) = st.peers.get_mut(&id) {
                    p.inflight = false;
                }
            }
        }
        Ok(())
    }
}

impl MembershipState {
    fn retry(&mut self, myself: &ActorRef<MembershipMsg>, addr: String, attempt: u32) {
        self.dialing.remove(&addr);
        let d = backoff(attempt);
        myself.send_after(d, move || MembershipMsg::Dial(addr, attempt));
    }

    fn tick(&mut self, myself: &ActorRef<MembershipMsg>) {
        let now = Instant::now();
        if now.duration_since(self.last_load) >= Duration::from_secs(1) {
            self.update_load(now);
        }
        if self.args.tls.is_some() && now.duration_since(self.last_discover) >= DISCOVER_EVERY {
            self.discover(myself);
        }
        for (sa, p) in &self.pending {
            let limit = if p.incoming { INBOUND_AUTH_DEADLINE } else { AUTH_DEADLINE };
            if now.duration_since(p.started) > limit {
                if let Some(sess) = &p.session {
                    // Incoming ones may be a flood of strangers: counted when they end, logged at debug here.
                    if p.incoming {
                        debug!(addr = %sa, "incoming cluster session did not authenticate in time; closing");
                    } else {
                        warn!(peer = %p.addr, addr = %sa, "cluster peer did not authenticate in time; closing");
                    }
                    sess.stop(Some("auth deadline".into()));
                }
            }
        }
        let deadline = Duration::from_secs_f64(self.args.config.heartbeat_deadline_secs);
        let agents = pg::get_members(&NODE_GROUP.to_string());
        for (id, p) in self.peers.iter_mut() {
            if now.duration_since(p.last_ok) > deadline {
                warn!(peer = %p.name, silent_for = ?now.duration_since(p.last_ok), "cluster peer missed its heartbeat deadline; declaring it down");
                self.args.metrics.peers_lost.with_label_values(&["heartbeat_deadline"]).inc();
                lock(&self.args.shared.suspects).insert(p.name.clone(), now);
                // Ending the session makes its actors leave every group; the disconnect event re-dials.
                p.session.stop(Some("heartbeat deadline".into()));
                p.last_ok = now;
                continue;
            }
            if p.inflight {
                continue;
            }
            let Some(agent) = agents
                .iter()
                .find(|c| matches!(c.get_id(), ActorId::Remote { node_id, .. } if node_id == *id))
                .map(|c| ActorRef::<RemoteMsg>::from(c.clone()))
            else {
                continue;
            };
            if !p.synced {
                // A peer that just joined (a restarted pod) learns every stream's playlist now, so it can serve
                // players while a stream has no owner (its publisher reconnecting), instead of a 404.
                p.synced = true;
                let states = lock(&self.args.shared.hls).recent(SYNC_MAX_AGE, now);
                debug!(peer = %p.name, states = states.len(), "passing the HLS states on to a peer that joined");
                for (key, s) in states {
                    let msg = Cast::HlsState {
                        key,
                        since_ms: s.since_ms,
                        next_msn: s.next_msn,
                        discontinuity: s.discontinuity,
                        ended: s.ended,
                        playlist: s.playlist,
                        epoch: s.epoch,
                        timeline_ms: s.timeline_ms,
                    };
                    let _ = agent.cast(RemoteMsg::Cast(msg.encode()));
                }
                let _ = agent.cast(RemoteMsg::Cast(Cast::Synced.encode()));
            }
            p.inflight = true;
            self.nonce += 1;
            let (nonce, id, me, from) = (self.nonce, *id, myself.clone(), self.args.node.clone());
            tokio::spawn(async move {
                let t = Instant::now();
                match call(&agent, &Request::Ping { nonce, from }, deadline).await {
                    Some(Response::Pong { nonce: n, load, .. }) if n == nonce => {
                        let _ = me.cast(MembershipMsg::Pong(id, t.elapsed(), load));
                    }
                    _ => {
                        let _ = me.cast(MembershipMsg::PingFailed(id));
                    }
                }
            });
        }
        let suspect_after = Duration::from_secs_f64(self.args.config.heartbeat_interval_secs * 2.5);
        let mut peers = lock(&self.args.shared.peers);
        for p in self.peers.values() {
            if let Some(s) = peers.get_mut(&p.name) {
                s.state = if now.duration_since(p.last_ok) > suspect_after { "suspect" } else { "up" }.into();
                s.connected_secs = p.since.elapsed().as_secs_f64().round();
            }
        }
    }

    /// Asks every peer for its peers and dials the ones not known yet (node-to-node TLS: see the module docs).
    fn discover(&mut self, myself: &ActorRef<MembershipMsg>) {
        self.last_discover = Instant::now();
        let advertise = self.args.advertise.clone();
        for agent in super::remote_members(NODE_GROUP) {
            let (me, advertise) = (myself.clone(), advertise.clone());
            tokio::spawn(async move {
                if let Some(Response::Api { status: 200, body }) =
                    call(&agent, &Request::Peers, Duration::from_secs(2)).await
                {
                    for addr in serde_json::from_slice::<Vec<String>>(&body).unwrap_or_default() {
                        if addr != advertise {
                            let _ = me.cast(MembershipMsg::Dial(addr, 0));
                        }
                    }
                }
            });
        }
    }

    fn update_load(&mut self, now: Instant) {
        let mut load = (self.args.load)();
        load.cpu = (load.cpu * 100.0).round() / 100.0;
        self.last_load = now;
        *lock(&self.args.shared.load) = load;
    }

    /// Copies the peer table into the shared status and the metrics.
    fn publish(&self) {
        let mut out = BTreeMap::new();
        for (id, p) in &self.peers {
            out.insert(
                p.name.clone(),
                PeerStatus {
                    name: p.name.clone(),
                    address: p.address.clone(),
                    state: "up".into(),
                    rtt_ms: p.rtt.map(|r| (r.as_secs_f64() * 1e5).round() / 100.0),
                    load: p.load,
                    connected_secs: p.since.elapsed().as_secs_f64().round(),
                    node_id: *id,
                },
            );
        }
        self.args.metrics.nodes.set(out.len() as i64 + 1);
        *lock(&self.args.shared.peers) = out;
    }
}

/// Resolves `address` in the background and tells membership which socket addresses belong to `name`.
fn learn(myself: &ActorRef<MembershipMsg>, name: String, address: String) {
    let me = myself.clone();
    tokio::spawn(async move {
        if let Ok(Ok(addrs)) = tokio::time::timeout(CONNECT_TIMEOUT, tokio::net::lookup_host(&address)).await {
            let _ = me.cast(MembershipMsg::Learned(name, addrs.collect()));
        }
    });
}

async fn dial(
    ns: &ActorRef<NodeServerMessage>,
    addr: &str,
    known: &Mutex<HashMap<SocketAddr, String>>,
    tls: Option<&tokio_rustls::TlsConnector>,
    failures: &prometheus::IntCounter,
) -> Result<SocketAddr, DialError> {
    let failed = |e: String| DialError::Failed(e);
    let sa = tokio::time::timeout(CONNECT_TIMEOUT, tokio::net::lookup_host(addr))
        .await
        .map_err(|_| failed("resolve timeout".into()))?
        .map_err(|e| failed(format!("resolve: {e}")))?
        .next()
        .ok_or_else(|| failed("resolve: no address".into()))?;
    if lock(known).contains_key(&sa) {
        return Err(DialError::Known);
    }
    if let Some(tls) = tls {
        return super::transport::dial(ns, tls, sa, CONNECT_TIMEOUT, failures).await.map(|()| sa).map_err(failed);
    }
    match tokio::time::timeout(CONNECT_TIMEOUT, ractor_cluster::client_connect(ns, sa)).await {
        Err(_) => Err(failed("connect timeout".into())),
        Ok(Err(e)) => Err(failed(e.to_string())),
        Ok(Ok(())) => Ok(sa),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relay_lag_is_exported_as_a_histogram_before_any_relay() {
        let m = Metrics::new();
        let c = ClusterMetrics::new(&m);
        let text = m.render();
        assert!(text.contains("# TYPE strom_cluster_relay_lag_seconds histogram"), "{text}");
        assert!(text.contains("strom_cluster_relay_lag_seconds_bucket{le=\"0.001\"} 0"), "{text}");
        assert!(text.contains("strom_cluster_relay_lag_seconds_bucket{le=\"10\"} 0"), "{text}");
        c.relay_lag.observe(0.003);
        let text = m.render();
        assert!(text.contains("strom_cluster_relay_lag_seconds_bucket{le=\"0.0025\"} 0"), "{text}");
        assert!(text.contains("strom_cluster_relay_lag_seconds_bucket{le=\"0.005\"} 1"), "{text}");
        assert!(text.contains("strom_cluster_relay_lag_seconds_count 1"), "{text}");
    }
}
