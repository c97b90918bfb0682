//! The RTMP listener and the per-connection shell.
//!
//! Each connection is one task: handshake (bounded by `rtmp.handshake_timeout_secs`), then a loop that reads
//! bytes, passes them through the [`ChunkGuard`] into `rml_rtmp`'s `ServerSession`, and acts on its events.
//! A publishing connection forwards frames to its stream through a [`Publisher`]; a playing connection drains a
//! [`PlayerFeed`] in batches written with one vectored write, bounded by `stream.slow_player_timeout_secs`.
//! Every refusal or protocol error ends only this connection, is counted in
//! `strom_connections_rejected_total{reason}` and logged once with the connection's span (id, peer, node).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use rml_amf0::Amf0Value;
use rml_rtmp::messages::{RtmpMessage, UserControlEventType};
use rml_rtmp::sessions::{ServerSession, ServerSessionConfig, ServerSessionEvent, ServerSessionResult};
use rml_rtmp::time::RtmpTimestamp;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tracing::{debug, info, info_span, warn, Instrument};

use super::chunk_guard::{ChunkGuard, GuardLimits, GuardViolation};
use super::handshake::{ServerHandshake, Step};
use super::hub;
use crate::bufqueue::BufQueue;
use crate::config::secs;
use crate::formats::rtmp_chunk::{self, DATA_CSID, MSG_DATA_AMF0};
use crate::formats::{MediaFrame, MediaKind};
use crate::metrics::protocol;
use crate::servers::hooks::{HookCall, HookEvent};
use crate::servers::NodeContext;
use crate::shutdown::ShutdownSignal;
use crate::stream::{PlayerFeed, PlayerItem, Protocol, PublishError, Publisher, SharedSlot, StreamKey};
use prometheus::IntCounter;

/// The largest message a connection may send before it publishes (commands are far smaller; media comes after).
const PRE_PUBLISH_MAX_MESSAGE: u32 = 64 * 1024;
/// Read buffer of a publishing connection.
const PUBLISHER_READ_BUFFER: usize = 64 * 1024;
/// Read buffer of a playing connection (it only receives acks and pings).
const PLAYER_READ_BUFFER: usize = 1024;
/// Frames written to a player per vectored write at most.
const PLAYER_BATCH: usize = 64;
/// Payload bytes per vectored write at most (a join's GOP burst goes out in a few writes of this size).
const PLAYER_BATCH_BYTES: usize = 256 * 1024;
/// Frame bodies up to this size (audio) are copied next to their chunk header rather than sent as their own
/// buffer: fewer, larger iovecs.
pub(super) const INLINE_BODY: usize = 1024;
/// A batch vector grown beyond this (a join's GOP burst) is released after its write.
const PLAYER_BATCH_KEEP: usize = 8;
/// The message stream a publisher publishes on (see `on_publish`).
const PUBLISH_STREAM_ID: u32 = 1;
/// The chunk stream rml_rtmp's session writes AMF0 data messages on (types 18 and 19; see `accept_play`).
const SESSION_DATA_CSID: u8 = 3;

/// Why a connection ended early. `reason()` is the metric label.
#[derive(Debug, thiserror::Error)]
pub enum ConnError {
    /// Socket error.
    #[error("i/o error while {what}: {source}")]
    Io {
        /// What the connection was doing.
        what: &'static str,
        /// The error.
        source: std::io::Error,
    },
    /// The handshake did not finish in time.
    #[error("handshake not completed within {0:?}")]
    HandshakeTimeout(Duration),
    /// The handshake bytes were invalid.
    #[error("handshake failed: {0}")]
    Handshake(String),
    /// The peer broke a chunk limit.
    #[error("{0}")]
    Guard(#[from] GuardViolation),
    /// The session could not parse what the peer sent.
    #[error("protocol error: {0}")]
    Protocol(String),
    /// Nothing received for too long.
    #[error("idle for {0:?}")]
    Idle(Duration),
    /// A player could not keep up.
    #[error("player blocked a write for {0:?}: disconnected as too slow")]
    SlowPlayer(Duration),
    /// The peer does not read what it is answered.
    #[error("a write stayed blocked for {0:?}: the peer does not read")]
    WriteTimeout(Duration),
    /// The stream it publishes ended under it (disconnected through the API, evicted, or the node stopping).
    #[error("{0}: publisher disconnected")]
    StreamGone(#[from] crate::stream::registry::StreamGone),
}

impl ConnError {
    /// Metric label for `strom_connections_rejected_total`.
    pub fn reason(&self) -> &'static str {
        match self {
            ConnError::Io { .. } => "io",
            ConnError::HandshakeTimeout(_) => "handshake_timeout",
            ConnError::Handshake(_) => "handshake",
            ConnError::Guard(g) => g.reason(),
            ConnError::Protocol(_) => "protocol",
            ConnError::Idle(_) => "idle_timeout",
            ConnError::SlowPlayer(_) => "slow_player",
            ConnError::WriteTimeout(_) => "write_timeout",
            ConnError::StreamGone(_) => "stream_gone",
        }
    }
}

/// Accepts RTMP connections until shutdown.
pub async fn serve(listener: TcpListener, node: Arc<NodeContext>, mut shutdown: ShutdownSignal) {
    let mut next_id: u64 = 0;
    loop {
        let (socket, peer) = tokio::select! {
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    warn!(error = %e, "rtmp accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = shutdown.recv() => break,
        };
        next_id += 1;
        // An RTMPS connection, decrypted by this node: the client is the one the TLS side accepted.
        let peer = match peer.ip().is_loopback() {
            true => node.rtmps_peers.remove(&peer.port()).map_or(peer, |(_, real)| real),
            false => peer,
        };
        let Some(permit) = node.try_connection(peer.ip(), "rtmp") else { continue };
        let node = node.clone();
        let signal = shutdown.clone();
        let span = info_span!("rtmp", conn = next_id, %peer, node = %node.config.node_name);
        tokio::spawn(
            async move {
                let _permit = permit;
                let open = node.metrics.connections_open.with_label_values(&["rtmp"]);
                open.inc();
                let mut conn = Connection::new(node.clone(), peer);
                let result = conn.run(socket, signal).await;
                conn.role = Role::Idle; // unpublish / unsubscribe before logging the end
                match result {
                    Ok(()) => debug!("connection closed"),
                    Err(e) => {
                        // A publisher whose stream ended under it was not refused.
                        if !matches!(e, ConnError::Io { .. } | ConnError::StreamGone(_)) {
                            node.metrics.connections_rejected.with_label_values(&[e.reason()]).inc();
                        }
                        if matches!(e, ConnError::SlowPlayer(_)) {
                            node.metrics.slow_player_disconnects.inc();
                        }
                        info!(reason = e.reason(), error = %e, "connection ended");
                    }
                }
                open.dec();
            }
            .instrument(span),
        );
    }
}

enum Role {
    Idle,
    Publishing { publisher: Publisher },
    Playing { stream_id: u32 },
}

struct Connection {
    node: Arc<NodeContext>,
    peer: SocketAddr,
    /// Tells the `on_unpublish` or `on_stop` hook when the publish or play ends (dropped).
    hook_end: Option<crate::servers::hooks::HookOnDrop>,
    session: Option<ServerSession>,
    guard: ChunkGuard,
    out: BytesMut,
    role: Role,
    feed: Option<PlayerFeed>,
    /// The player while its stream's writer hub writes for it (`feed` is then `None`).
    parked: Option<ParkedIn>,
    chunk_size: usize,
    close_after_flush: bool,
}

/// What a connection keeps of its player while the hub has it.
struct ParkedIn {
    id: u64,
    back: tokio::sync::oneshot::Receiver<hub::Returned>,
    slot: SharedSlot,
}

fn io(what: &'static str) -> impl FnOnce(std::io::Error) -> ConnError {
    move |source| ConnError::Io { what, source }
}

impl Connection {
    fn new(node: Arc<NodeContext>, peer: SocketAddr) -> Connection {
        let guard = ChunkGuard::new(GuardLimits {
            max_chunk_size: node.config.rtmp.max_chunk_size,
            // Until the connection publishes, no message may exceed 64 KiB: a peer that never authenticates
            // cannot make the session reserve megabytes (the full limit is for publishers' keyframes).
            max_message_size: node.config.rtmp.max_message_size.min(PRE_PUBLISH_MAX_MESSAGE),
            max_command_size: node.config.rtmp.max_command_size,
        });
        Connection {
            chunk_size: node.config.rtmp.chunk_size as usize,
            node,
            peer,
            session: None,
            guard,
            out: BytesMut::new(),
            role: Role::Idle,
            hook_end: None,
            feed: None,
            parked: None,
            close_after_flush: false,
        }
    }

    async fn run(&mut self, socket: TcpStream, mut shutdown: ShutdownSignal) -> Result<(), ConnError> {
        let _ = socket.set_nodelay(true);
        let (mut rd, wr) = socket.into_split();
        // `None` while the player is parked in its stream's writer hub.
        let mut wr = Some(wr);
        let hs_timeout = secs(self.node.config.rtmp.handshake_timeout_secs);
        // Boxed, like the other rare paths below (session input, shutdown): the connection's future then holds
        // only what a playing connection needs per frame, not the handshake's 1.5 KiB state for its lifetime.
        let leftover = Box::pin(tokio::time::timeout(hs_timeout, handshake(&mut rd, wr.as_mut().expect("own"))))
            .await
            .map_err(|_| ConnError::HandshakeTimeout(hs_timeout))??;

        let mut cfg = ServerSessionConfig::new();
        cfg.chunk_size = self.node.config.rtmp.chunk_size;
        cfg.fms_version = "FMS/3,5,7,7009".into();
        let (session, results) = ServerSession::new(cfg).map_err(|e| ConnError::Protocol(e.to_string()))?;
        self.session = Some(session);
        Box::pin(self.on_results(results)).await?;
        Box::pin(self.input(&leftover)).await?;
        self.flush(wr.as_mut().expect("own")).await?;

        let idle = secs(self.node.config.rtmp.idle_timeout_secs);
        let slow = secs(self.node.config.stream.slow_player_timeout_secs);
        let egress = self.node.metrics.egress_bytes.with_label_values(&[protocol::RTMP]);
        // Players send almost nothing (acks): a small read buffer keeps their memory low; a publisher gets a
        // large one once it publishes.
        let mut buf = vec![0u8; PLAYER_READ_BUFFER];
        let mut batch: Vec<PlayerItem> = Vec::new();
        // The shutdown future lives across iterations and is polled only when the signal is set (or once, to
        // register): polling a waiting `Notified` takes the node-wide notify lock, and players wake per frame.
        let probe = shutdown.clone();
        let stop = shutdown.recv();
        tokio::pin!(stop);
        let mut stop_armed = false;
        loop {
            if self.close_after_flush {
                self.unpark(&mut wr, slow, &egress).await?;
                let w = wr.as_mut().expect("unparked");
                self.flush(w).await?;
                let _ = w.shutdown().await;
                return Ok(());
            }
            let playing = self.feed.is_some();
            let parked = self.parked.is_some();
            tokio::select! {
                biased;
                _ = &mut stop, if !stop_armed || probe.is_triggered() => {
                    if self.unpark(&mut wr, slow, &egress).await.is_ok() {
                        Box::pin(self.end_for_shutdown(wr.as_mut().expect("unparked"))).await;
                    }
                    return Ok(());
                }
                back = async { (&mut self.parked.as_mut().expect("guarded by parked").back).await }, if parked => {
                    self.parked = None;
                    Box::pin(self.returned(back, &mut wr, slow, &egress)).await?;
                }
                more = async { self.feed.as_mut().expect("guarded by playing").next_batch(&mut batch, PLAYER_BATCH).await }, if playing => {
                    if !more {
                        self.feed = None;
                        self.close_after_flush = true;
                        continue;
                    }
                    let q = self.render_batch(&mut batch);
                    let n = bytes::Buf::remaining(&q);
                    write_queue(wr.as_mut().expect("not parked while playing"), q, slow).await?;
                    egress.inc_by(n as u64);
                    if batch.capacity() > PLAYER_BATCH_KEEP {
                        batch = Vec::new(); // a join's GOP burst: do not keep its capacity per player
                    }
                    // In step with the stream again: the hub writes its next batches.
                    self.park(&mut wr, &egress);
                }
                r = rd.read(&mut buf) => {
                    let n = r.map_err(io("reading"))?;
                    // The session may answer, or stop the play: the player comes back from the hub first.
                    self.unpark(&mut wr, slow, &egress).await?;
                    if n == 0 {
                        return Ok(());
                    }
                    Box::pin(self.input(&buf[..n])).await?;
                    self.flush(wr.as_mut().expect("unparked")).await?;
                    if let Role::Publishing { publisher } = &self.role {
                        // The stream actor is behind by more than stream.queue_max_bytes: read no more until it
                        // catches up (TCP slows this publisher down); a stream stuck for the idle timeout ends.
                        if !publisher.has_room() {
                            self.node.metrics.publisher_backpressure.inc();
                            tokio::time::timeout(idle, publisher.room()).await.map_err(|_| ConnError::Idle(idle))?;
                        }
                    }
                    if buf.len() < PUBLISHER_READ_BUFFER && matches!(self.role, Role::Publishing { .. }) {
                        buf.resize(PUBLISHER_READ_BUFFER, 0);
                    }
                }
                _ = tokio::time::sleep(idle), if !playing && !parked => return Err(ConnError::Idle(idle)),
            }
            stop_armed = true;
        }
    }

    /// Hands a caught-up player (its last batch written whole, nothing written or pending besides) to its
    /// stream's writer hub.
    fn park(&mut self, wr: &mut Option<OwnedWriteHalf>, egress: &IntCounter) {
        let Role::Playing { stream_id } = self.role else { return };
        if self.close_after_flush || !self.out.is_empty() || wr.is_none() {
            return;
        }
        let Some(feed) = self.feed.take() else { return };
        let slot = feed.shared_slot().clone();
        let (back, rx) = tokio::sync::oneshot::channel();
        let id = hub::next_id();
        let w = wr.take().expect("checked");
        hub::park(hub::Parked { id, feed, wr: w, stream_id, chunk_size: self.chunk_size, back }, egress);
        self.parked = Some(ParkedIn { id, back: rx, slot });
    }

    /// Takes the player back from the hub (if it is there).
    async fn unpark(
        &mut self,
        wr: &mut Option<OwnedWriteHalf>,
        slow: Duration,
        egress: &IntCounter,
    ) -> Result<(), ConnError> {
        let Some(p) = self.parked.take() else { return Ok(()) };
        hub::recall(&p.slot, p.id);
        Box::pin(self.returned(p.back.await, wr, slow, egress)).await
    }

    /// A player back from the hub: the rest of its last batch is written here, under the slow-player timeout.
    async fn returned(
        &mut self,
        back: Result<hub::Returned, tokio::sync::oneshot::error::RecvError>,
        wr: &mut Option<OwnedWriteHalf>,
        slow: Duration,
        egress: &IntCounter,
    ) -> Result<(), ConnError> {
        let Ok(r) = back else {
            return Err(ConnError::Io { what: "writing media", source: std::io::Error::other("writer hub ended") });
        };
        let w = wr.insert(r.wr);
        self.feed = Some(r.feed);
        if r.ended {
            self.close_after_flush = true;
        }
        let n = bytes::Buf::remaining(&r.rest);
        if n > 0 {
            write_queue(w, r.rest, slow).await?;
            egress.inc_by(n as u64);
        }
        Ok(())
    }

    /// [`render_batch`] for this connection (an `End` item closes it once written).
    fn render_batch(&mut self, batch: &mut Vec<PlayerItem>) -> BufQueue {
        let Role::Playing { stream_id, .. } = self.role else {
            batch.clear();
            return BufQueue::new();
        };
        let (q, ended) = render_batch(batch, stream_id, self.chunk_size);
        self.close_after_flush |= ended;
        q
    }

    async fn end_for_shutdown(&mut self, wr: &mut OwnedWriteHalf) {
        if let Role::Playing { stream_id, .. } = self.role {
            let mut b = BytesMut::new();
            write_end_of_stream(&mut b, stream_id, self.chunk_size);
            self.out.extend_from_slice(&b);
        }
        let _ = tokio::time::timeout(Duration::from_secs(1), self.flush(wr)).await;
        let _ = wr.shutdown().await;
    }

    async fn input(&mut self, bytes: &[u8]) -> Result<(), ConnError> {
        if bytes.is_empty() {
            return Ok(());
        }
        self.guard.inspect(bytes)?;
        let Some(session) = self.session.as_mut() else {
            return Err(ConnError::Protocol("no session".into()));
        };
        // rml_rtmp 0.8 panics on some malformed AMF0 commands (e.g. a command with fewer than three values):
        // contain it to this connection, which ends with a protocol error.
        let results = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| session.handle_input(bytes)))
            .map_err(|_| {
                self.session = None;
                ConnError::Protocol("malformed RTMP message (rejected by the session parser)".into())
            })?
            .map_err(|e| ConnError::Protocol(e.to_string()))?;
        self.on_results(results).await
    }

    async fn on_results(&mut self, results: Vec<ServerSessionResult>) -> Result<(), ConnError> {
        for r in results {
            match r {
                ServerSessionResult::OutboundResponse(p) => self.out.extend_from_slice(&p.bytes),
                ServerSessionResult::RaisedEvent(ev) => self.on_event(ev).await?,
                ServerSessionResult::UnhandleableMessageReceived(p) => {
                    debug!(type_id = p.type_id, "ignoring unhandled RTMP message");
                }
            }
        }
        Ok(())
    }

    fn session(&mut self) -> Result<&mut ServerSession, ConnError> {
        self.session.as_mut().ok_or_else(|| ConnError::Protocol("no session".into()))
    }

    fn accept(&mut self, request_id: u32) -> Result<(), ConnError> {
        let results = self.session()?.accept_request(request_id).map_err(|e| ConnError::Protocol(e.to_string()))?;
        for r in results {
            if let ServerSessionResult::OutboundResponse(p) = r {
                self.out.extend_from_slice(&p.bytes);
            }
        }
        Ok(())
    }

    /// Accepts a play request: `NetStream.Play.Reset`, StreamBegin and `NetStream.Play.Start` from the session,
    /// then `|RtmpSampleAccess` at timestamp 0. rml_rtmp's own answer also carries two AMF0 data messages that
    /// players turn into streams of their own: `|RtmpSampleAccess` stamped with the session's clock (ffmpeg's FLV
    /// demuxer, in ffprobe and VLC, makes a nonzero-timestamp script tag a subtitle stream) and an `onStatus`
    /// *data* message `NetStream.Data.Start` (a data stream). They are left out; nginx-rtmp sends neither.
    /// Leaving them out is safe: the session writes AMF0 data only on its chunk stream
    /// [`SESSION_DATA_CSID`], and only here (strom writes metadata on its own chunk stream).
    fn accept_play(&mut self, request_id: u32, stream_id: u32) -> Result<(), ConnError> {
        let results = self.session()?.accept_request(request_id).map_err(|e| ConnError::Protocol(e.to_string()))?;
        for r in results {
            if let ServerSessionResult::OutboundResponse(p) = r {
                if p.bytes.first().map(|b| b & 0x3f) != Some(SESSION_DATA_CSID) {
                    self.out.extend_from_slice(&p.bytes);
                }
            }
        }
        let access = RtmpMessage::Amf0Data {
            values: vec![
                Amf0Value::Utf8String("|RtmpSampleAccess".into()),
                Amf0Value::Boolean(true),
                Amf0Value::Boolean(true),
            ],
        };
        if let Ok(p) = access.into_message_payload(RtmpTimestamp::new(0), stream_id) {
            rtmp_chunk::write_message(&mut self.out, DATA_CSID, 0, p.type_id, stream_id, &p.data, self.chunk_size);
        }
        Ok(())
    }

    /// Refuses a publish or play request with `onStatus` level "error" (what OBS, ffmpeg and VLC act on), then
    /// closes the connection.
    fn reject(&mut self, msid: u32, code: &str, description: &str, reason: &'static str) -> Result<(), ConnError> {
        self.node.metrics.connections_rejected.with_label_values(&[reason]).inc();
        let mut b = BytesMut::new();
        write_status(&mut b, self.chunk_size, msid, "error", code, description);
        self.out.extend_from_slice(&b);
        self.close_after_flush = true;
        Ok(())
    }

    async fn on_event(&mut self, ev: ServerSessionEvent) -> Result<(), ConnError> {
        match ev {
            ServerSessionEvent::ConnectionRequested { request_id, app_name } => {
                debug!(app = %app_name, "connect");
                self.accept(request_id)?;
            }
            ServerSessionEvent::PublishStreamRequested { request_id, app_name, stream_key, .. } => {
                self.on_publish(request_id, &app_name, &stream_key).await?
            }
            ServerSessionEvent::PublishStreamFinished { .. } => {
                if let Role::Publishing { publisher } = std::mem::replace(&mut self.role, Role::Idle) {
                    info!(stream = %publisher.key(), "publisher finished");
                    publisher.finish();
                }
                self.hook_end = None;
            }
            ServerSessionEvent::StreamMetadataChanged { metadata, .. } => {
                if let Role::Publishing { publisher } = &self.role {
                    if publisher.metadata(metadata).is_err() {
                        return Err(ConnError::Protocol("stream ended under the publisher".into()));
                    }
                }
            }
            ServerSessionEvent::VideoDataReceived { data, timestamp, .. } => {
                self.on_media(MediaKind::Video, data, timestamp)?
            }
            ServerSessionEvent::AudioDataReceived { data, timestamp, .. } => {
                self.on_media(MediaKind::Audio, data, timestamp)?
            }
            ServerSessionEvent::PlayStreamRequested { request_id, app_name, stream_key, stream_id, .. } => {
                self.on_play(request_id, &app_name, &stream_key, stream_id).await?
            }
            ServerSessionEvent::PlayStreamFinished { .. } => {
                self.feed = None;
                self.role = Role::Idle;
                self.hook_end = None;
            }
            ServerSessionEvent::UnhandleableAmf0Command { command_name, .. } => {
                // releaseStream, FCPublish, FCUnpublish, _checkbw, getStreamLength: nothing to do, no reply needed
                // by OBS or ffmpeg.
                debug!(command = %command_name, "ignoring AMF0 command");
            }
            _ => {}
        }
        Ok(())
    }

    fn on_media(&mut self, kind: MediaKind, data: Bytes, ts: RtmpTimestamp) -> Result<(), ConnError> {
        let Role::Publishing { publisher } = &self.role else {
            return Ok(()); // media on a stream that is not publishing: ignore
        };
        let frame = match MediaFrame::parse(kind, ts.value, data) {
            Ok(f) => f,
            Err(e) => {
                // One bad tag is dropped (and counted); the publisher and its stream go on.
                self.node.metrics.frames_dropped.with_label_values(&["malformed"]).inc();
                debug!(stream = %publisher.key(), error = %e, "dropped a malformed media message");
                return Ok(());
            }
        };
        publisher.send(frame).map_err(ConnError::StreamGone)
    }

    async fn on_publish(&mut self, request_id: u32, app: &str, name: &str) -> Result<(), ConnError> {
        // rml_rtmp does not report the publish's message stream; it numbers streams from 1 and a publisher
        // creates one.
        let msid = PUBLISH_STREAM_ID;
        let key = match StreamKey::new(app, name) {
            Ok(k) => k,
            Err(e) => {
                warn!(error = %e, "publish refused: bad stream name");
                return self.reject(msid, "NetStream.Publish.BadName", &e.to_string(), "bad_name");
            }
        };
        if !matches!(self.role, Role::Idle) {
            return self.reject(msid, "NetStream.Publish.BadName", "connection already in use", "busy");
        }
        if self.node.transcode.reserved(&key) {
            warn!(stream = %key, peer = %self.peer, "publish refused: the name is reserved for an ABR rung");
            return self.reject(msid, "NetStream.Publish.BadName", "name reserved for the ABR ladder", "bad_name");
        }
        if !self.node.publish_allowed(&key, StreamKey::query_value(name, "secret")) {
            warn!(stream = %key, peer = %self.peer, "publish refused: stream key or secret not authorised");
            return self.reject(msid, "NetStream.Publish.Unauthorized", "stream key not authorised", "unauthorized");
        }
        let call = self.hook_call(&key, name);
        if let Err(why) = self.node.hooks.decide(HookEvent::Publish, &call).await {
            warn!(stream = %key, peer = %self.peer, reason = %why, "publish refused by the on_publish hook");
            return self.reject(msid, "NetStream.Publish.Unauthorized", &why, "hook");
        }
        match self.node.streams.publish(&key).await {
            Ok(publisher) => {
                info!(stream = %key, "publishing");
                self.accept(request_id)?;
                self.role = Role::Publishing { publisher: publisher.input() };
                self.hook_end = self.node.hooks.on_drop(HookEvent::Unpublish, call);
                self.guard.set_max_message_size(self.node.config.rtmp.max_message_size);
                self.node.transcode.source_published(&key);
                self.node.recordings.published(&key);
                Ok(())
            }
            Err(PublishError::Busy) => {
                warn!(stream = %key, "publish refused: stream already has a publisher");
                self.reject(msid, "NetStream.Publish.BadName", "stream is already being published", "busy")
            }
            Err(e) => {
                warn!(stream = %key, error = %e, "publish refused");
                self.reject(msid, "NetStream.Publish.Failed", &e.to_string(), "publish_failed")
            }
        }
    }

    async fn on_play(&mut self, request_id: u32, app: &str, name: &str, stream_id: u32) -> Result<(), ConnError> {
        let key = match StreamKey::new(app, name) {
            Ok(k) => k,
            Err(e) => return self.reject(stream_id, "NetStream.Play.StreamNotFound", &e.to_string(), "bad_name"),
        };
        let path = format!("/{}/{}", key.app(), key.name());
        if let Err(e) =
            self.node.play_allowed(key.app(), &path, StreamKey::query_value(name, "token"), Some(self.peer.ip()))
        {
            warn!(stream = %key, peer = %self.peer, error = %e, "play refused: no valid token");
            return self.reject(stream_id, "NetStream.Play.Failed", &e.to_string(), "unauthorized");
        }
        let call = self.hook_call(&key, name);
        if let Err(why) = self.node.hooks.decide(HookEvent::Play, &call).await {
            warn!(stream = %key, peer = %self.peer, reason = %why, "play refused by the on_play hook");
            return self.reject(stream_id, "NetStream.Play.Failed", &why, "hook");
        }
        let sub = match self.node.streams.find(&key).await {
            Some(h) => h.subscribe(Protocol::Rtmp).await,
            None => None,
        };
        let Some(sub) = sub else {
            info!(stream = %key, "play refused: no such live stream");
            return self.reject(stream_id, "NetStream.Play.StreamNotFound", "no such live stream", "not_found");
        };
        self.accept_play(request_id, stream_id)?;
        info!(stream = %key, "playing");
        let mut feed = PlayerFeed::new(sub, self.node.metrics.clone());
        feed.coalesce();
        feed.set_batch_bytes(PLAYER_BATCH_BYTES);
        self.feed = Some(feed);
        self.role = Role::Playing { stream_id };
        self.hook_end = self.node.hooks.on_drop(HookEvent::Stop, call);
        Ok(())
    }

    /// What the hooks are told about this connection's publish or play of `key` (named `name`, with its query).
    fn hook_call(&self, key: &StreamKey, name: &str) -> HookCall {
        HookCall {
            app: key.app().to_string(),
            stream: key.name().to_string(),
            client: Some(self.peer),
            protocol: "rtmp",
            query: name.split_once('?').map(|(_, q)| q.to_string()),
            extra: None,
        }
    }

    /// Writes what the session answered, within `rtmp.write_timeout_secs`.
    async fn flush(&mut self, wr: &mut OwnedWriteHalf) -> Result<(), ConnError> {
        if !self.out.is_empty() {
            // Take the buffer whole: an idle player keeps no output allocation.
            let data = std::mem::take(&mut self.out).freeze();
            let limit = secs(self.node.config.rtmp.write_timeout_secs);
            match tokio::time::timeout(limit, wr.write_all(&data)).await {
                Ok(r) => r.map_err(io("writing"))?,
                Err(_) => return Err(ConnError::WriteTimeout(limit)),
            }
        }
        Ok(())
    }
}

/// Builds the wire bytes of a batch: per-player bytes (chunk headers, small bodies such as audio, control
/// messages) go into one buffer; large bodies are the shared pre-chunked `Bytes`, between slices of it. One
/// vectored write then sends the whole batch.
/// Returns it and whether it ends with the stream's end (an `End` item: end-of-stream messages written).
pub(super) fn render_batch(batch: &mut Vec<PlayerItem>, stream_id: u32, chunk_size: usize) -> (BufQueue, bool) {
    let mut q = BufQueue::new();
    let mut ended = false;
    let mut hdr = BytesMut::with_capacity(batch.len() * 16 + INLINE_BODY);
    let mut pieces: Vec<(usize, Bytes)> = Vec::new();
    for item in batch.drain(..) {
        match item {
            PlayerItem::Frame(f, ts) => {
                let (csid, type_id) = rtmp_chunk::route(f.kind);
                let flv = f.flv_body();
                if rtmp_chunk::put_header(&mut hdr, csid, ts, flv.len(), type_id, stream_id) {
                    if flv.len() <= INLINE_BODY.min(chunk_size) {
                        hdr.extend_from_slice(flv); // one chunk: its body is the tag body
                    } else {
                        pieces.push((hdr.len(), rtmp_chunk::body(&f, chunk_size)));
                    }
                } else {
                    rtmp_chunk::write_message(&mut hdr, csid, ts, type_id, stream_id, flv, chunk_size);
                }
            }
            PlayerItem::Metadata(m) => {
                rtmp_chunk::write_message(&mut hdr, DATA_CSID, 0, MSG_DATA_AMF0, stream_id, &m, chunk_size);
            }
            PlayerItem::PublisherLeft => {} // a player's feed never yields it (only a relay's)
            PlayerItem::End => {
                write_end_of_stream(&mut hdr, stream_id, chunk_size);
                ended = true;
            }
        }
    }
    let hdr = hdr.freeze();
    let mut cut = 0;
    for (at, body) in pieces {
        if at > cut {
            q.push(hdr.slice(cut..at));
        }
        q.push(body);
        cut = at;
    }
    if hdr.len() > cut {
        q.push(hdr.slice(cut..));
    }
    (q, ended)
}

/// Appends an `onStatus` command (`level` "status" or "error") on message stream `msid`.
fn write_status(out: &mut BytesMut, chunk_size: usize, msid: u32, level: &str, code: &str, description: &str) {
    let mut status = std::collections::HashMap::new();
    status.insert("level".to_string(), Amf0Value::Utf8String(level.into()));
    status.insert("code".to_string(), Amf0Value::Utf8String(code.into()));
    status.insert("description".to_string(), Amf0Value::Utf8String(description.into()));
    let msg = RtmpMessage::Amf0Command {
        command_name: "onStatus".into(),
        transaction_id: 0.0,
        command_object: Amf0Value::Null,
        additional_arguments: vec![Amf0Value::Object(status)],
    };
    if let Ok(p) = msg.into_message_payload(RtmpTimestamp::new(0), msid) {
        rtmp_chunk::write_message(out, DATA_CSID, 0, p.type_id, msid, &p.data, chunk_size);
    }
}

/// `onStatus NetStream.Play.UnpublishNotify` + stream EOF user control, as players expect when the publisher
/// leaves.
fn write_end_of_stream(out: &mut BytesMut, stream_id: u32, chunk_size: usize) {
    write_status(out, chunk_size, stream_id, "status", "NetStream.Play.UnpublishNotify", "The publisher has left.");
    let eof = RtmpMessage::UserControl {
        event_type: UserControlEventType::StreamEof,
        stream_id: Some(stream_id),
        buffer_length: None,
        timestamp: None,
    };
    if let Ok(p) = eof.into_message_payload(RtmpTimestamp::new(0), 0) {
        rtmp_chunk::write_message(out, DATA_CSID, 0, p.type_id, 0, &p.data, chunk_size);
    }
}

/// Writes the whole queue; a single write that makes no progress for `stall` means the player stopped reading
/// (the same rule as HTTP's write timeout in `http::listener`).
async fn write_queue(wr: &mut OwnedWriteHalf, mut q: BufQueue, stall: Duration) -> Result<(), ConnError> {
    while !q.is_empty() {
        match tokio::time::timeout(stall, wr.write_buf(&mut q)).await {
            Err(_) => return Err(ConnError::SlowPlayer(stall)),
            Ok(r) => {
                r.map_err(io("writing media"))?;
            }
        }
    }
    Ok(())
}

/// Runs the server side of the RTMP handshake ([`ServerHandshake`]); returns the bytes received after it.
async fn handshake(rd: &mut OwnedReadHalf, wr: &mut OwnedWriteHalf) -> Result<Vec<u8>, ConnError> {
    let mut hs = ServerHandshake::new();
    let mut buf = vec![0u8; 8192];
    loop {
        let n = rd.read(&mut buf).await.map_err(io("handshaking"))?;
        if n == 0 {
            return Err(ConnError::Handshake("peer closed during handshake".into()));
        }
        let (reply, rest) = match hs.feed(&buf[..n]).map_err(|e| ConnError::Handshake(e.0))? {
            Step::Continue { reply } => (reply, None),
            Step::Done { reply, rest } => (reply, Some(rest)),
        };
        if !reply.is_empty() {
            wr.write_all(&reply).await.map_err(io("handshaking"))?;
        }
        if let Some(rest) = rest {
            return Ok(rest);
        }
    }
}
