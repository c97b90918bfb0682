//! One strom node: binds the listeners, starts the registry, serves until shutdown, then drains.
//!
//! [`Node::start`] returns once both listeners are bound (so the bound addresses are known, even for port 0);
//! [`Node::shutdown`] runs the graceful stop: readiness false, ladders (encoders) move to other cluster nodes,
//! publishers may finish for up to `drain_secs`, then the RTMP listeners and connections close (publishers
//! reconnect to another node while this one still shares their streams' HLS state), the node leaves the cluster,
//! the other listeners stop accepting, every stream ends
//! (players get end-of-stream, HLS gets ENDLIST), then it waits for connections to finish, bounded by
//! `shutdown_timeout_secs`.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tracing::{info, warn};

use crate::cluster::ownership::ClusterOwnership;
use crate::cluster::{Cluster, ClusterHandle};
use crate::config::{secs, Config};
use crate::metrics::Metrics;
use crate::servers::hooks::{HookCall, HookEvent};
pub use crate::servers::NodeContext;
use crate::shutdown::Shutdown;
use crate::storage::recorder::Recordings;
use crate::stream::Streams;
use crate::transcode::Transcoder;

/// Longest a stopping node stays, after handing its streams over, while the nodes that took them over copy the
/// segments and parts they list of it ([`Cluster::copy_earlier`]).
const HANDOVER_COPY: Duration = Duration::from_secs(2);

/// Binds a listener (address reuse, a backlog of 1024, as `TcpListener::bind`) whose accepted connections get a
/// kernel send buffer of `send_buffer` bytes (inherited from the listening socket; 0: kernel autotuning).
pub fn listen(addr: SocketAddr, send_buffer: usize) -> std::io::Result<TcpListener> {
    let socket = if addr.is_ipv4() { tokio::net::TcpSocket::new_v4()? } else { tokio::net::TcpSocket::new_v6()? };
    socket.set_reuseaddr(true)?;
    if send_buffer > 0 {
        socket.set_send_buffer_size(send_buffer.min(u32::MAX as usize) as u32)?;
    }
    socket.bind(addr)?;
    socket.listen(1024)
}

/// Errors starting a node.
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    /// A listener could not be bound.
    #[error("cannot listen on {addr} ({what}): {source}")]
    Bind {
        /// Which listener.
        what: &'static str,
        /// The address.
        addr: SocketAddr,
        /// The error.
        source: std::io::Error,
    },
    /// The actor system failed to start.
    #[error("starting actors: {0}")]
    Actors(String),
    /// The TLS certificate could not be loaded.
    #[error("TLS: {0}")]
    Tls(String),
}

/// A running node.
pub struct Node {
    /// Shared context (for tests and embedding).
    pub context: Arc<NodeContext>,
    /// Bound RTMP address.
    pub rtmp_addr: SocketAddr,
    /// Bound HTTP address.
    pub http_addr: SocketAddr,
    /// The cluster side, when clustering is on.
    pub cluster: Option<ClusterHandle>,
    shutdown: Shutdown,
    /// The RTMP and RTMPS listeners and connections: stopped first (see [`Node::shutdown`]).
    rtmp_shutdown: Shutdown,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Node {
    /// Binds the listeners and starts serving.
    pub async fn start(config: Config) -> Result<Node, NodeError> {
        let config = Arc::new(config);
        let metrics = Arc::new(Metrics::new());
        let streams =
            Streams::start(config.clone(), metrics.clone()).await.map_err(|e| NodeError::Actors(e.to_string()))?;
        let auth = &config.auth;
        if !auth.secrets_on() && auth.publish_keys.is_empty() && auth.publish_keys_file.is_none() {
            warn!(
                "publishing is open: anyone who reaches rtmp.listen may publish any stream name (set \
                 auth.publish_secrets or auth.publish_secrets_file to require a secret per stream)"
            );
        }
        let draining = Arc::new(AtomicBool::new(false));
        // The VOD jobs are made once storage is; the load reads their backlog from then on.
        let vod: Arc<std::sync::OnceLock<crate::transcode::vod::Jobs>> = Default::default();
        let vod_load = {
            let vod = vod.clone();
            Box::new(move || vod.get().map_or((0, 0), |j| j.load()))
        };
        let (load, load_task) = crate::load::start(&config, metrics.clone(), draining.clone(), vod_load);
        let own_load = load.clone();
        let transcode = Transcoder::start(config.clone(), streams.clone(), metrics.clone())
            .await
            .map_err(|e| NodeError::Actors(e.to_string()))?;
        let cluster = match &config.cluster_cookie {
            Some(cookie) => {
                let t = transcode.clone();
                let load = Box::new(move || {
                    let mut l = load.get();
                    (l.encoders, l.encoder_slots) = t.encoder_load();
                    l
                });
                let c = Cluster::start(&config, cookie.clone(), &metrics, load)
                    .await
                    .map_err(|e| NodeError::Actors(e.to_string()))?;
                let target = u64::from(config.hls.segment_duration_secs.ceil() as u32);
                streams.attach_ownership(ClusterOwnership::new(c.clone(), metrics.clone(), target));
                transcode.attach_cluster(c.clone());
                c.set_encoder_host(transcode.encoder_host());
                Some(c)
            }
            None => {
                info!("clustering off (no STROM_CLUSTER_COOKIE or cluster.cookie_file): standalone node");
                None
            }
        };
        let send_buffer = config.stream.player_send_buffer_kib as usize * 1024;
        let rtmp = listen(config.rtmp.listen, send_buffer).map_err(|source| NodeError::Bind {
            what: "rtmp.listen",
            addr: config.rtmp.listen,
            source,
        })?;
        let http = listen(config.http.listen, send_buffer).map_err(|source| NodeError::Bind {
            what: "http.listen",
            addr: config.http.listen,
            source,
        })?;
        let rtmp_addr = rtmp.local_addr().unwrap_or(config.rtmp.listen);
        let http_addr = http.local_addr().unwrap_or(config.http.listen);
        let recordings = Recordings::new(config.clone(), streams.clone(), metrics.clone());
        streams.attach_dvr(Arc::new(recordings.clone()));
        if let Some(c) = &cluster {
            recordings.attach_cluster(c.clone());
        }
        let jobs = crate::transcode::vod::Jobs::new(config.clone(), recordings.clone(), &metrics);
        let _ = vod.set(jobs.clone());
        if let Some(c) = &cluster {
            jobs.attach_cluster(c.clone());
            jobs.start_takeover();
        }
        {
            let jobs = jobs.clone();
            tokio::spawn(async move { jobs.resume().await });
        }
        let hooks =
            crate::servers::hooks::Hooks::new(&config.hooks, &config.node_name, &metrics).map_err(NodeError::Actors)?;
        if hooks.has(HookEvent::RecordDone) {
            let hooks = hooks.clone();
            recordings.on_finished(Box::new(move |key, asset| {
                let extra = serde_json::json!({
                    "asset": asset.id,
                    "state": asset.state,
                    "reason": asset.reason,
                    "duration": asset.duration,
                    "bytes": asset.bytes,
                    "playlist": format!("/vod/{}/index.m3u8", asset.id),
                });
                let call = HookCall {
                    app: key.app().to_string(),
                    stream: key.name().to_string(),
                    extra: Some(extra),
                    ..HookCall::default()
                };
                hooks.notify(HookEvent::RecordDone, call);
            }));
        }
        let context = Arc::new(NodeContext {
            jobs,
            recordings,
            connections: Arc::new(Semaphore::new(config.limits.max_connections)),
            probe_connections: Arc::new(Semaphore::new(crate::servers::PROBE_SLOTS)),
            play_key_cache: Default::default(),
            jwks_cache: Default::default(),
            per_ip: Default::default(),
            refusal_logged_ms: Default::default(),
            config: config.clone(),
            metrics,
            streams,
            transcode,
            cluster: cluster.clone(),
            ready: AtomicBool::new(false),
            left_cluster: AtomicBool::new(false),
            draining,
            load: own_load,
            history: Default::default(),
            rtmp_addr,
            http_addr,
            hooks,
            rtmps_peers: Default::default(),
        });
        let shutdown = Shutdown::new();
        let rtmp_shutdown = Shutdown::new();
        let mut tasks = vec![load_task, context.start_history()];
        tasks.push(tokio::spawn(crate::servers::rtmp::server::serve(rtmp, context.clone(), rtmp_shutdown.signal())));
        let listener = crate::servers::http::listener::LimitedListener::new(
            http,
            context.clone(),
            secs(config.stream.slow_player_timeout_secs),
            shutdown.signal(),
        );
        let app = crate::servers::http::router(context.clone());
        let idle = secs(config.http.idle_timeout_secs);
        tasks.push(tokio::spawn(crate::servers::http::listener::serve(listener, app, idle, shutdown.signal())));
        if config.rtmps.listen.is_some() || config.https.listen.is_some() {
            let (cert, key) = match (&config.tls.cert_file, &config.tls.key_file) {
                (Some(c), Some(k)) => (c, k),
                _ => return Err(NodeError::Tls("tls.cert_file and tls.key_file are needed".into())),
            };
            let certs = crate::tls::Certificates::load(cert, key).map_err(NodeError::Tls)?;
            tasks.push(certs.watch());
            if let Some(addr) = config.rtmps.listen {
                let l = listen(addr, send_buffer).map_err(|source| NodeError::Bind {
                    what: "rtmps.listen",
                    addr,
                    source,
                })?;
                info!(rtmps = %l.local_addr().unwrap_or(addr), "RTMPS listening");
                let acceptor = certs.acceptor(&[]).map_err(NodeError::Tls)?;
                let serve =
                    crate::servers::rtmp::rtmps::serve(l, rtmp_addr, acceptor, context.clone(), rtmp_shutdown.signal());
                tasks.push(tokio::spawn(serve));
            }
            if let Some(addr) = config.https.listen {
                let l = listen(addr, send_buffer).map_err(|source| NodeError::Bind {
                    what: "https.listen",
                    addr,
                    source,
                })?;
                info!(https = %l.local_addr().unwrap_or(addr), "HTTPS listening (HTTP/2 and HTTP/1.1)");
                let acceptor = certs.acceptor(&[b"h2", b"http/1.1"]).map_err(NodeError::Tls)?;
                let app = crate::servers::http::router(context.clone());
                let serve =
                    crate::servers::http::listener::serve_tls(l, context.clone(), app, acceptor, shutdown.signal());
                tasks.push(tokio::spawn(serve));
            }
        }
        if let Some(addr) = config.http.metrics_listen {
            let l = TcpListener::bind(addr).await.map_err(|source| NodeError::Bind {
                what: "http.metrics_listen",
                addr,
                source,
            })?;
            info!(metrics = %l.local_addr().unwrap_or(addr), "metrics on their own listener");
            let app = crate::servers::http::metrics_router(context.clone());
            let mut stop = shutdown.signal();
            tasks.push(tokio::spawn(async move {
                let served = axum::serve(l, app).with_graceful_shutdown(async move { stop.recv().await });
                if let Err(e) = served.await {
                    warn!(error = %e, "the metrics listener failed");
                }
            }));
        }
        context.ready.store(true, Ordering::Relaxed);
        info!(node = %config.node_name, rtmp = %rtmp_addr, http = %http_addr, "strom is serving");
        // Start-up has touched code and read-only data an idle node never runs again: give it back (see
        // crate::memory), once the first moments (a cluster join, the first scrape) have passed, and only while
        // no stream runs (a busy node's pages are in use).
        let idle_check = context.clone();
        tasks.push(tokio::spawn(async move {
            tokio::time::sleep(Duration::from_secs(2)).await;
            if !idle_check.streams.list().await.is_empty() {
                return;
            }
            if let Ok(freed) = tokio::task::spawn_blocking(crate::memory::release_unused_file_pages).await {
                info!(freed_mib = freed >> 20, "unused code pages returned to the kernel");
            }
        }));
        Ok(Node { context, rtmp_addr, http_addr, cluster, shutdown, rtmp_shutdown, tasks })
    }

    /// Graceful stop (see the module docs). Returns whether everything finished within the timeout.
    pub async fn shutdown(mut self) -> bool {
        let ctx = &self.context;
        ctx.draining.store(true, Ordering::Relaxed);
        ctx.ready.store(false, Ordering::Relaxed);
        info!("shutting down: readiness off");
        // Ladders this node runs move to other nodes now, while the cluster is still up.
        ctx.transcode.drain().await;
        ctx.jobs.drain().await;
        let drain = Duration::from_secs_f64(ctx.config.drain_secs);
        let started = std::time::Instant::now();
        while ctx.metrics.publishers.get() > 0 && started.elapsed() < drain {
            if started.elapsed().as_millis() % 5000 < 200 {
                info!(publishers = ctx.metrics.publishers.get(), left = ?drain.saturating_sub(started.elapsed()), "draining: waiting for publishers to leave");
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        // The publishers go first, while the cluster is up: OBS starts its reconnect delay now rather than after
        // the rest of the stop, and each stream's segmenter shares its closed segment, which the node the
        // publisher lands on continues. RTMP players go with them (they reconnect to another node).
        self.rtmp_shutdown.trigger();
        if !self.rtmp_shutdown.wait(Duration::from_secs(2)).await {
            warn!("RTMP connections still open 2 s after they were told to close");
        }
        if let Some(c) = &self.cluster {
            tokio::time::sleep(Duration::from_millis(100)).await;
            // A stream whose last picture is repeated stays with the cluster until the node its publisher
            // reconnects to has taken it over (its export joined the stream's group), for as long as the repeats
            // last: players everywhere see a still picture, then the new owner's, and no stall.
            let limit = Duration::from_secs_f64(ctx.config.stream.repeat_frame_secs);
            let started = std::time::Instant::now();
            let mut handing = Vec::new();
            for h in ctx.streams.list().await {
                if h.relay_from().is_none() && h.info().await.is_some_and(|i| i.repeating) {
                    handing.push(h.key().clone());
                }
            }
            let handed = !handing.is_empty();
            loop {
                handing.retain(|k| !c.exported_elsewhere(k));
                let waiting: Vec<String> = handing.iter().map(|k| k.to_string()).collect();
                if waiting.is_empty() {
                    break;
                }
                if started.elapsed() >= limit {
                    warn!(streams = ?waiting, "no node took these streams over while their picture was repeated");
                    break;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            // The nodes that took them over copy the windows they list first (this node's segments and parts):
            // stay while they do, for at most HANDOVER_COPY, answering their fetches; players already go
            // elsewhere (HLS here is 503: this node's view of its streams is no longer the one going on).
            ctx.left_cluster.store(true, Ordering::Relaxed);
            let copying = std::time::Instant::now();
            while handed
                && copying.elapsed() < HANDOVER_COPY
                && (copying.elapsed() < Duration::from_millis(300)
                    || c.segments_fetched_within(Duration::from_millis(300)))
            {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            if started.elapsed() > Duration::from_millis(200) {
                info!(waited = ?started.elapsed(), "streams handed over to the nodes their publishers reconnected to");
            }
        }
        // Then leave the cluster: other nodes then see this node's streams as ownerless, not ended, so a
        // publisher reconnecting to another node continues the same HLS playlist.
        if let Some(c) = &self.cluster {
            ctx.left_cluster.store(true, Ordering::Relaxed);
            c.shutdown().await;
        }
        info!("ending streams");
        let n = ctx.streams.shutdown().await;
        // Recordings write their last segments, playlists and states (the streams just ended).
        ctx.recordings.finish(secs(ctx.config.shutdown_timeout_secs) / 2).await;
        // Give players a moment to receive end-of-stream before listeners and connections are told to stop.
        tokio::time::sleep(Duration::from_millis(if n > 0 { 200 } else { 0 })).await;
        self.shutdown.trigger();
        let timeout = secs(ctx.config.shutdown_timeout_secs);
        let clean = self.shutdown.wait(timeout).await;
        for t in self.tasks.drain(..) {
            t.abort();
        }
        if clean {
            info!("shutdown complete");
        } else {
            warn!(timeout = ?timeout, "shutdown timed out; closing remaining connections");
        }
        clean
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Accepted connections inherit the listener's send buffer (Linux reports twice the size asked for).
    #[tokio::test]
    async fn accepted_connections_get_the_send_buffer_cap() {
        for asked in [256 * 1024, 64 * 1024] {
            let listener = listen("127.0.0.1:0".parse().unwrap(), asked).unwrap();
            let addr = listener.local_addr().unwrap();
            let _client = tokio::net::TcpStream::connect(addr).await.unwrap();
            let (conn, _) = listener.accept().await.unwrap();
            let size = tokio::net::TcpSocket::from_std_stream(conn.into_std().unwrap()).send_buffer_size().unwrap();
            assert_eq!(size as usize, 2 * asked, "the cap is inherited");
        }
        // 0 leaves the kernel's autotuning alone.
        assert!(listen("127.0.0.1:0".parse().unwrap(), 0).is_ok());
    }
}
