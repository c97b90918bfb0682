//! RTMP over tokio with rml_rtmp's sans-IO client: the publisher and the RTMP player.

use std::sync::Arc;
use std::time::Duration;

use rml_rtmp::handshake::{Handshake, HandshakeProcessResult, PeerType};
use rml_rtmp::sessions::{
    ClientSession, ClientSessionConfig, ClientSessionEvent, ClientSessionResult, PublishRequestType, StreamMetadata,
};
use rml_rtmp::time::RtmpTimestamp;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;

use crate::media;
use crate::source::Source;
use crate::stats::{now_ns, Hist, PlayerStats};

type Res<T> = Result<T, String>;

/// `rtmp://host:port/app/key`
#[derive(Clone, Debug)]
pub struct RtmpUrl {
    pub addr: String,
    pub app: String,
    pub key: String,
    pub tc_url: String,
}

impl std::str::FromStr for RtmpUrl {
    type Err = String;
    fn from_str(s: &str) -> Res<Self> {
        let rest = s.strip_prefix("rtmp://").ok_or_else(|| format!("not an rtmp:// URL: {s}"))?;
        let (hostport, path) = rest.split_once('/').ok_or("rtmp URL needs /app/key")?;
        let (app, key) = path.split_once('/').ok_or("rtmp URL needs /app/key")?;
        let addr = if hostport.contains(':') { hostport.to_string() } else { format!("{hostport}:1935") };
        Ok(RtmpUrl { tc_url: format!("rtmp://{hostport}/{app}"), addr, app: app.into(), key: key.into() })
    }
}

fn err<E: std::fmt::Display>(what: &'static str) -> impl Fn(E) -> String {
    move |e| format!("{what}: {e}")
}

/// Connects, handshakes and runs `connect(app)`. Returns the socket and a connected session.
async fn connect(url: &RtmpUrl, buf: &mut [u8]) -> Res<(TcpStream, ClientSession)> {
    let mut sock = TcpStream::connect(&url.addr).await.map_err(err("connect"))?;
    sock.set_nodelay(true).map_err(err("nodelay"))?;
    let mut hs = Handshake::new(PeerType::Client);
    let p0p1 = hs.generate_outbound_p0_and_p1().map_err(err("handshake"))?;
    sock.write_all(&p0p1).await.map_err(err("write"))?;
    let leftover = loop {
        let n = sock.read(buf).await.map_err(err("read"))?;
        if n == 0 {
            return Err("closed during handshake".into());
        }
        match hs.process_bytes(&buf[..n]).map_err(err("handshake"))? {
            HandshakeProcessResult::InProgress { response_bytes } => {
                sock.write_all(&response_bytes).await.map_err(err("write"))?;
            }
            HandshakeProcessResult::Completed { response_bytes, remaining_bytes } => {
                sock.write_all(&response_bytes).await.map_err(err("write"))?;
                break remaining_bytes;
            }
        }
    };
    let mut config = ClientSessionConfig::new();
    config.tc_url = Some(url.tc_url.clone());
    config.chunk_size = 4096;
    let (mut session, initial) = ClientSession::new(config).map_err(err("session"))?;
    let mut out = Vec::new();
    for r in initial {
        if let ClientSessionResult::OutboundResponse(p) = r {
            out.extend_from_slice(&p.bytes);
        }
    }
    if let ClientSessionResult::OutboundResponse(p) =
        session.request_connection(url.app.clone()).map_err(err("connect"))?
    {
        out.extend_from_slice(&p.bytes);
    }
    sock.write_all(&out).await.map_err(err("write"))?;
    let mut first = Some(leftover);
    wait_for(&mut sock, &mut session, buf, &mut first, |e| matches!(e, ClientSessionEvent::ConnectionRequestAccepted))
        .await?;
    Ok((sock, session))
}

/// Pumps the session until an event matches `done`.
async fn wait_for(
    sock: &mut TcpStream,
    session: &mut ClientSession,
    buf: &mut [u8],
    first: &mut Option<Vec<u8>>,
    done: impl Fn(&ClientSessionEvent) -> bool,
) -> Res<()> {
    loop {
        let results = if let Some(bytes) = first.take() {
            session.handle_input(&bytes).map_err(err("rtmp"))?
        } else {
            let n = sock.read(buf).await.map_err(err("read"))?;
            if n == 0 {
                return Err("closed by server".into());
            }
            session.handle_input(&buf[..n]).map_err(err("rtmp"))?
        };
        let mut out = Vec::new();
        let mut hit = false;
        for r in results {
            match r {
                ClientSessionResult::OutboundResponse(p) => out.extend_from_slice(&p.bytes),
                ClientSessionResult::RaisedEvent(ClientSessionEvent::ConnectionRequestRejected { description }) => {
                    return Err(format!("connect rejected: {description}"));
                }
                ClientSessionResult::RaisedEvent(e) => hit |= done(&e),
                _ => {}
            }
        }
        if !out.is_empty() {
            sock.write_all(&out).await.map_err(err("write"))?;
        }
        if hit {
            return Ok(());
        }
    }
}

/// Publishes `src` in real time, looping, until the task is aborted.
pub async fn publish(url: RtmpUrl, src: Arc<Source>, accepted: tokio::sync::oneshot::Sender<()>) -> Res<()> {
    let mut buf = vec![0u8; 16 * 1024];
    let (mut sock, mut session) = connect(&url, &mut buf).await?;
    if let ClientSessionResult::OutboundResponse(p) =
        session.request_publishing(url.key.clone(), PublishRequestType::Live).map_err(err("publish"))?
    {
        sock.write_all(&p.bytes).await.map_err(err("write"))?;
    }
    wait_for(&mut sock, &mut session, &mut buf, &mut None, |e| matches!(e, ClientSessionEvent::PublishRequestAccepted))
        .await?;
    let _ = accepted.send(());
    let mut md = StreamMetadata::new();
    md.video_width = Some(1280);
    md.video_height = Some(720);
    md.video_codec_id = Some(7);
    md.video_frame_rate = Some(30.0);
    md.audio_codec_id = Some(10);
    md.encoder = Some("strom-load".into());
    if let ClientSessionResult::OutboundResponse(p) = session.publish_metadata(&md).map_err(err("metadata"))? {
        sock.write_all(&p.bytes).await.map_err(err("write"))?;
    }
    let start = Instant::now();
    let mut pass: u64 = 0;
    loop {
        for (i, tag) in src.tags.iter().enumerate() {
            if tag.kind == 18 || (tag.seq_header && pass > 0) {
                continue;
            }
            let ts = pass * src.loop_ms as u64 + tag.ts_ms as u64;
            let due = start + Duration::from_millis(ts);
            // Keep reading (acks, pings) while waiting for the frame's due time.
            loop {
                tokio::select! {
                    _ = tokio::time::sleep_until(due) => break,
                    r = sock.read(&mut buf) => {
                        let n = r.map_err(err("read"))?;
                        if n == 0 {
                            return Err("publisher closed by server".into());
                        }
                        let mut out = Vec::new();
                        for r in session.handle_input(&buf[..n]).map_err(err("rtmp"))? {
                            if let ClientSessionResult::OutboundResponse(p) = r {
                                out.extend_from_slice(&p.bytes);
                            }
                        }
                        sock.write_all(&out).await.map_err(err("write"))?;
                    }
                }
            }
            let stamp = RtmpTimestamp::new(ts as u32);
            let r = if tag.kind == 9 {
                session.publish_video_data(tag.data.clone(), stamp, false)
            } else {
                session.publish_audio_data(tag.data.clone(), stamp, false)
            };
            if let ClientSessionResult::OutboundResponse(p) = r.map_err(err("publish"))? {
                src.sent_ns[i].store(now_ns(), std::sync::atomic::Ordering::Relaxed);
                sock.write_all(&p.bytes).await.map_err(err("write"))?;
            }
        }
        pass += 1;
    }
}

/// Bytes a player reads at most per read: what ffmpeg's and VLC's readers ask of a socket.
pub const READ_BYTES: usize = 64 * 1024;

/// One RTMP player that reads like the many players of a fan-out: connect, play, then read what has arrived as
/// soon as the socket is readable, in reads of at most [`READ_BYTES`], and only count it (no parsing, no acks:
/// the cheapest reader, so the tool's own CPU stays out of the server's way). Probe players ([`play`]) measure the
/// delay and the media rate.
pub async fn drain(url: RtmpUrl, stats: Arc<PlayerStats>) -> Res<()> {
    let t0 = now_ns();
    let mut buf = vec![0u8; READ_BYTES];
    let (mut sock, mut session) = connect(&url, &mut buf).await?;
    if let ClientSessionResult::OutboundResponse(p) = session.request_playback(url.key.clone()).map_err(err("play"))? {
        sock.write_all(&p.bytes).await.map_err(err("write"))?;
    }
    // createStream, then play: the session drives both; from the play's acceptance on, raw reads.
    wait_for(&mut sock, &mut session, &mut buf, &mut None, |e| {
        matches!(e, ClientSessionEvent::PlaybackRequestAccepted)
    })
    .await?;
    drop(session);
    loop {
        let n = sock.read(&mut buf).await.map_err(err("read"))?;
        if n == 0 {
            return Err("closed by server".into());
        }
        stats.joined(t0);
        stats.wire.fetch_add(n as u64, std::sync::atomic::Ordering::Relaxed);
    }
}

/// `sockets` plain TCP connections to `addr` (connects retried for 5 s while the sender starts), each read as
/// [`drain`] reads a player once it plays, for `secs`; the bytes read in all.
pub async fn drain_tcp(addr: &str, sockets: usize, secs: Duration) -> Res<u64> {
    let total = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let mut conns = Vec::with_capacity(sockets);
    let deadline = Instant::now() + Duration::from_secs(5);
    while conns.len() < sockets {
        match TcpStream::connect(addr).await {
            Ok(s) => conns.push(s),
            Err(_) if Instant::now() < deadline => tokio::time::sleep(Duration::from_millis(20)).await,
            Err(e) => return Err(format!("connect {addr}: {e}")),
        }
    }
    let mut tasks = tokio::task::JoinSet::new();
    for mut sock in conns {
        let total = total.clone();
        tasks.spawn(async move {
            let mut buf = vec![0u8; READ_BYTES];
            while let Ok(n) = sock.read(&mut buf).await {
                if n == 0 {
                    break;
                }
                total.fetch_add(n as u64, std::sync::atomic::Ordering::Relaxed);
            }
        });
    }
    let _ = tokio::time::timeout(secs, async { while tasks.join_next().await.is_some() {} }).await;
    Ok(total.load(std::sync::atomic::Ordering::Relaxed))
}

/// One RTMP player: connect, play, then count (and time) every frame until aborted.
pub async fn play(url: RtmpUrl, stats: Arc<PlayerStats>, src: Arc<Source>, delay: Arc<Hist>) -> Res<()> {
    let t0 = now_ns();
    let mut buf = vec![0u8; READ_BYTES];
    let (mut sock, mut session) = connect(&url, &mut buf).await?;
    if let ClientSessionResult::OutboundResponse(p) = session.request_playback(url.key.clone()).map_err(err("play"))? {
        sock.write_all(&p.bytes).await.map_err(err("write"))?;
    }
    let mut out = Vec::new();
    loop {
        let n = sock.read(&mut buf).await.map_err(err("read"))?;
        if n == 0 {
            return Err("closed by server".into());
        }
        let now = now_ns();
        stats.wire.fetch_add(n as u64, std::sync::atomic::Ordering::Relaxed);
        out.clear();
        for r in session.handle_input(&buf[..n]).map_err(err("rtmp"))? {
            match r {
                ClientSessionResult::OutboundResponse(p) => out.extend_from_slice(&p.bytes),
                ClientSessionResult::RaisedEvent(ClientSessionEvent::VideoDataReceived { data, .. }) => {
                    if media::is_sequence_header(9, &data) {
                        continue;
                    }
                    stats.media.fetch_add(data.len() as u64, std::sync::atomic::Ordering::Relaxed);
                    stats.frames.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    if media::is_flv_keyframe(&data) {
                        stats.joined(t0);
                    }
                    if let Some(d) = media::key_from_flv_video(&data).and_then(|k| src.delay_us(k, now)) {
                        delay.record_us(d);
                    }
                }
                ClientSessionResult::RaisedEvent(ClientSessionEvent::AudioDataReceived { data, .. })
                    if !media::is_sequence_header(8, &data) =>
                {
                    stats.media.fetch_add(data.len() as u64, std::sync::atomic::Ordering::Relaxed);
                    stats.frames.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                }
                _ => {}
            }
        }
        if !out.is_empty() {
            sock.write_all(&out).await.map_err(err("write"))?;
        }
    }
}
