//! Servers: the listeners players and publishers talk to. They find streams through the core's
//! [`crate::stream::Streams`] and render them in their protocol.
//!
//! - [`rtmp`]: RTMP publish and play.
//! - [`http`]: HLS, HTTP-FLV, the JSON API, metrics and probes (axum).
//!
//! [`NodeContext`] is what every connection handler shares; [`crate::node`] builds it.

pub mod hooks;
pub mod http;
pub mod rtmp;

use std::net::IpAddr;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use dashmap::DashMap;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tracing::warn;

use crate::cluster::ClusterHandle;
use crate::config::Config;
use crate::metrics::Metrics;
use crate::storage::recorder::Recordings;
use crate::stream::{StreamKey, Streams};
use crate::transcode::Transcoder;

/// What every connection handler shares.
pub struct NodeContext {
    /// Configuration.
    pub config: Arc<Config>,
    /// Metrics.
    pub metrics: Arc<Metrics>,
    /// The lookup API.
    pub streams: Streams,
    /// The ABR ladder (encoders, master playlists).
    pub transcode: Transcoder,
    /// Listeners are up.
    pub ready: AtomicBool,
    /// Shutdown has begun (shared with the cluster's load report).
    pub draining: Arc<AtomicBool>,
    /// Shutting down, this node has left the cluster: its streams go on elsewhere, so it no longer answers their
    /// HLS (503, which a balancer retries on another node) rather than the end of them it is about to write.
    pub left_cluster: AtomicBool,
    /// The cluster, when clustering is on.
    pub cluster: Option<ClusterHandle>,
    /// Connection slots (`limits.max_connections`).
    pub connections: Arc<Semaphore>,
    /// HTTP connections admitted past `limits.max_connections` that may only ask `/healthz` or `/readyz`
    /// ([`PROBE_SLOTS`]): a flood cannot fail the kubelet's probes.
    pub probe_connections: Arc<Semaphore>,
    /// Open connections per client address (`limits.max_connections_per_ip`).
    pub per_ip: Arc<DashMap<IpAddr, u32>>,
    /// When a refused connection was last logged (Unix ms): a flood is logged once per [`REFUSAL_LOG_EVERY_MS`].
    pub refusal_logged_ms: AtomicU64,
    /// Recordings and VOD assets.
    pub recordings: Recordings,
    /// VOD jobs (uploads transcoded into a ladder).
    pub jobs: crate::transcode::vod::Jobs,
    /// `auth.play_key_file`'s key and when it was read.
    pub play_key_cache: std::sync::Mutex<Option<(std::time::Instant, Vec<u8>)>>,
    /// `auth.jwks_file`'s keys (`None`: unreadable or invalid, which refuses JWTs) and when they were read.
    pub jwks_cache: std::sync::Mutex<Option<(std::time::Instant, Option<Arc<crate::formats::jwt::Jwks>>)>>,
    /// This node's load, measured every second.
    pub load: crate::load::LoadShared,
    /// Every node's load over the last 15 minutes (the console's sparklines).
    pub history: Arc<crate::load::History>,
    /// Where the RTMP listener is bound.
    pub rtmp_addr: std::net::SocketAddr,
    /// Where the HTTP listener is bound.
    pub http_addr: std::net::SocketAddr,
    /// HTTP hooks (`[hooks]`).
    pub hooks: Arc<hooks::Hooks>,
    /// RTMPS connections on their way to the RTMP listener: the loopback port each comes from → the client's
    /// real address (see [`rtmp::rtmps`]).
    pub rtmps_peers: DashMap<u16, std::net::SocketAddr>,
}

/// HTTP connections kept for probes when `limits.max_connections` is reached (see
/// [`NodeContext::probe_connections`]).
pub const PROBE_SLOTS: usize = 32;

/// A refused connection is logged at most this often (every one is counted).
pub const REFUSAL_LOG_EVERY_MS: u64 = 10_000;

/// A connection's slots: one of `limits.max_connections` and one of its address's
/// `limits.max_connections_per_ip`, given back when it is dropped.
pub struct ConnectionSlot {
    _permit: OwnedSemaphorePermit,
    _ip: IpSlot,
    /// A probe slot: the connection may only ask `/healthz` or `/readyz`.
    pub probe_only: bool,
}

/// One of an address's connection slots.
struct IpSlot {
    ip: IpAddr,
    per_ip: Arc<DashMap<IpAddr, u32>>,
}

impl Drop for IpSlot {
    fn drop(&mut self) {
        if let Some(mut n) = self.per_ip.get_mut(&self.ip) {
            *n = n.saturating_sub(1);
        }
        self.per_ip.remove_if(&self.ip, |_, n| *n == 0);
    }
}

impl ConnectionSlot {
    /// A slot outside any node's accounting (tests).
    pub fn detached(permit: OwnedSemaphorePermit) -> ConnectionSlot {
        ConnectionSlot {
            _permit: permit,
            _ip: IpSlot { ip: IpAddr::from([0, 0, 0, 0]), per_ip: Arc::default() },
            probe_only: false,
        }
    }
}

impl NodeContext {
    /// Readiness: `Err(why)` while starting, draining or over the memory budget.
    pub fn readiness(&self) -> Result<(), &'static str> {
        if !self.ready.load(std::sync::atomic::Ordering::Relaxed) {
            Err("not ready: starting\n")
        } else if self.draining.load(std::sync::atomic::Ordering::Relaxed) {
            Err("not ready: draining\n")
        } else if self.cluster.as_ref().is_some_and(|c| c.warming_up()) {
            Err("not ready: learning the cluster's streams from its peers\n")
        } else if self.streams.memory().over() {
            Err("not ready: over the memory budget (limits.memory_budget_mb)\n")
        } else {
            Ok(())
        }
    }

    /// This node's load as it shares it with the cluster (with its ladders).
    pub fn own_load(&self) -> crate::cluster::wire::Load {
        let mut l = self.load.get();
        (l.encoders, l.encoder_slots) = self.transcode.encoder_load();
        l
    }

    /// Samples every node's load into [`NodeContext::history`] every [`crate::load::History::INTERVAL`]: its own
    /// and, clustering on, each peer's from its last heartbeat.
    pub fn start_history(self: &Arc<Self>) -> tokio::task::JoinHandle<()> {
        let node = self.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(crate::load::History::INTERVAL);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                let peers = node.cluster.as_ref().map(|c| c.status().peers).unwrap_or_default();
                let own = node.own_load();
                let loads = std::iter::once((node.config.node_name.as_str(), own))
                    .chain(peers.iter().filter_map(|p| Some((p.name.as_str(), p.load?))));
                node.history.push(crate::clock::unix_ms(), loads);
            }
        })
    }

    /// Takes a connection slot for a client at `peer`; `None` (counted as a rejection, logged at most every
    /// [`REFUSAL_LOG_EVERY_MS`]) when its address has `limits.max_connections_per_ip` open or the node
    /// `limits.max_connections`.
    pub fn try_connection(&self, peer: IpAddr, listener: &str) -> Option<ConnectionSlot> {
        self.try_slot(peer, listener, false)
    }

    /// [`NodeContext::try_connection`] for HTTP: past `limits.max_connections`, one of the [`PROBE_SLOTS`]
    /// (a connection that may only ask `/healthz` or `/readyz`).
    pub fn try_http_connection(&self, peer: IpAddr) -> Option<ConnectionSlot> {
        self.try_slot(peer, "http", true)
    }

    fn try_slot(&self, peer: IpAddr, listener: &str, probes: bool) -> Option<ConnectionSlot> {
        let max_per_ip = self.config.limits.max_connections_per_ip as u32;
        let admitted = {
            let mut n = self.per_ip.entry(peer).or_insert(0);
            let ok = *n < max_per_ip;
            if ok {
                *n += 1;
            }
            ok
        };
        if !admitted {
            self.refused(peer, listener, "max_connections_per_ip");
            return None;
        }
        let ip = IpSlot { ip: peer, per_ip: self.per_ip.clone() };
        match self.connections.clone().try_acquire_owned() {
            Ok(permit) => Some(ConnectionSlot { _permit: permit, _ip: ip, probe_only: false }),
            Err(_) if probes && self.probe_connections.available_permits() > 0 => {
                let permit = self.probe_connections.clone().try_acquire_owned().ok()?;
                Some(ConnectionSlot { _permit: permit, _ip: ip, probe_only: true })
            }
            Err(_) => {
                self.refused(peer, listener, "max_connections");
                None
            }
        }
    }

    fn refused(&self, peer: IpAddr, listener: &str, reason: &str) {
        self.metrics.connections_rejected.with_label_values(&[reason]).inc();
        let now = crate::clock::unix_ms();
        let last = self.refusal_logged_ms.load(Ordering::Relaxed);
        if now.saturating_sub(last) >= REFUSAL_LOG_EVERY_MS
            && self.refusal_logged_ms.compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed).is_ok()
        {
            warn!(%peer, listener, reason, "connection refused: limits.{reason} reached (further refusals are counted in strom_connections_rejected_total, logged every 10 s)");
        }
    }

    /// The play key of application `app` (`auth.apps.<app>.play`, else `auth.play_key_file`, else
    /// `auth.play_key`): `None` when playing it is open.
    pub fn play_key(&self, app: &str) -> Option<Vec<u8>> {
        let auth = &self.config.auth;
        if let Some(k) = auth.apps.get(app).and_then(|a| a.play.as_ref()) {
            return Some(k.as_bytes().to_vec());
        }
        if let Some(path) = &auth.play_key_file {
            let mut cached = self.play_key_cache.lock().unwrap_or_else(|e| e.into_inner());
            let fresh = cached.as_ref().is_some_and(|(at, _)| at.elapsed() < std::time::Duration::from_secs(1));
            if !fresh {
                let key = std::fs::read_to_string(path).map(|k| k.trim().as_bytes().to_vec()).unwrap_or_else(|e| {
                    // Fail closed: a key no token matches.
                    warn!(file = %path.display(), error = %e, "cannot read auth.play_key_file: refusing plays");
                    crate::clock::unix_ms().to_be_bytes().to_vec()
                });
                *cached = Some((std::time::Instant::now(), key));
            }
            return cached.as_ref().map(|(_, k)| k.clone());
        }
        auth.play_key.as_ref().map(|k| k.as_bytes().to_vec())
    }

    /// Playing `app` needs a token: it has a play key, or a JWKS file is set.
    pub fn play_signed(&self, app: &str) -> bool {
        self.config.auth.jwks_file.is_some() || self.play_key(app).is_some()
    }

    /// `auth.jwks_file`'s keys, re-read at most once a second; `None` when unset, unreadable or invalid (logged).
    fn jwks(&self) -> Option<Arc<crate::formats::jwt::Jwks>> {
        let path = self.config.auth.jwks_file.as_ref()?;
        let mut cached = self.jwks_cache.lock().unwrap_or_else(|e| e.into_inner());
        let fresh = cached.as_ref().is_some_and(|(at, _)| at.elapsed() < std::time::Duration::from_secs(1));
        if !fresh {
            let keys = std::fs::read_to_string(path)
                .map_err(|e| e.to_string())
                .and_then(|text| crate::formats::jwt::Jwks::parse(&text))
                .map(Arc::new)
                .inspect_err(|e| warn!(file = %path.display(), error = %e, "cannot use auth.jwks_file: refusing JWTs"))
                .ok();
            *cached = Some((std::time::Instant::now(), keys));
        }
        cached.as_ref().and_then(|(_, k)| k.clone())
    }

    /// Whether playing `path` (`/APP/NAME/...`, `/APP/NAME.flv`, `/vod/ID/...`; the query may follow) from
    /// `client` is allowed: open apps always, signed ones with a valid `token`: a signed URL's (see
    /// [`crate::formats::token`]) or, with `auth.jwks_file`, a JWT (see [`crate::formats::jwt`]).
    pub fn play_allowed(
        &self,
        app: &str,
        path: &str,
        token: Option<&str>,
        client: Option<IpAddr>,
    ) -> Result<(), crate::formats::token::TokenError> {
        use crate::formats::token::TokenError;
        let key = self.play_key(app);
        if key.is_none() && self.config.auth.jwks_file.is_none() {
            return Ok(());
        }
        let now = crate::clock::unix_ms() / 1000;
        let verdict = match (token, key) {
            (Some(t), _) if crate::formats::jwt::looks_like_jwt(t) && self.config.auth.jwks_file.is_some() => {
                match self.jwks() {
                    Some(jwks) => crate::formats::jwt::verify(&jwks, t, path, now),
                    None => Err(TokenError::BadSignature),
                }
            }
            (_, Some(key)) => crate::formats::token::verify(&key, token, path, now, client),
            (None, None) => Err(TokenError::Missing),
            (Some(_), None) => Err(TokenError::Malformed),
        };
        verdict.inspect_err(|_| {
            self.metrics.connections_rejected.with_label_values(&["play_token"]).inc();
        })
    }

    /// Whether `key` may be published with `secret` (from `name?secret=`) under the `auth` settings: with
    /// publish secrets configured, only a listed stream with its secret (compared in constant time).
    pub fn publish_allowed(&self, key: &StreamKey, secret: Option<&str>) -> bool {
        let auth = &self.config.auth;
        if auth.secrets_on() {
            let full = key.to_string();
            let mut expected = auth.publish_secrets.get(&full).cloned();
            if let Some(path) = &auth.publish_secrets_file {
                if let Some(s) = read_secrets(path).remove(&full) {
                    expected = Some(s); // the file wins: it is what rotation changes
                }
            }
            let ok = matches!((expected, secret), (Some(e), Some(s)) if constant_time_eq(e.as_bytes(), s.as_bytes()));
            if !ok {
                return false;
            }
        }
        if auth.publish_keys.is_empty() && auth.publish_keys_file.is_none() {
            return true;
        }
        let full = key.to_string();
        let matches = |k: &str| k == key.name() || k == full;
        if auth.publish_keys.iter().any(|k| matches(k)) {
            return true;
        }
        match &auth.publish_keys_file {
            Some(path) => read_keys(path).iter().any(|k| matches(k)),
            None => false,
        }
    }
}

/// Compares two secrets without leaking through timing where they differ (only whether their lengths do).
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |d, (x, y)| d | (x ^ y)) == 0
}

/// `auth.publish_secrets_file`: `app/name secret` per line, `#` comments. Unreadable: no secret (every publish of
/// a stream it should list is refused, and said so).
fn read_secrets(path: &Path) -> std::collections::HashMap<String, String> {
    match std::fs::read_to_string(path) {
        Ok(text) => text
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
            .filter_map(|l| l.split_once(char::is_whitespace).map(|(k, v)| (k.to_string(), v.trim().to_string())))
            .collect(),
        Err(e) => {
            warn!(file = %path.display(), error = %e, "cannot read auth.publish_secrets_file: its streams are refused");
            Default::default()
        }
    }
}

fn read_keys(path: &Path) -> Vec<String> {
    match std::fs::read_to_string(path) {
        Ok(text) => {
            text.lines().map(str::trim).filter(|l| !l.is_empty() && !l.starts_with('#')).map(String::from).collect()
        }
        Err(e) => {
            warn!(file = %path.display(), error = %e, "cannot read auth.publish_keys_file: refusing publishes");
            Vec::new()
        }
    }
}
