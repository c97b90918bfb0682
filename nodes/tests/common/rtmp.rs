//! A blocking RTMP client over rml_rtmp for tests: handshake, connect, play or publish, raw bytes.

use std::collections::VecDeque;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use bytes::Bytes;
use rml_rtmp::handshake::{Handshake, HandshakeProcessResult, PeerType};
use rml_rtmp::sessions::{
    ClientSession, ClientSessionConfig, ClientSessionEvent, ClientSessionResult, PublishRequestType, StreamMetadata,
};
use rml_rtmp::time::RtmpTimestamp;

pub struct RtmpClient {
    pub stream: TcpStream,
    pub session: ClientSession,
    events: VecDeque<ClientSessionEvent>,
    /// onStatus codes the session did not handle (e.g. refusals, UnpublishNotify).
    pub status_codes: Vec<String>,
    pub closed: bool,
}

impl RtmpClient {
    /// TCP connect and handshake only.
    pub fn handshake(addr: SocketAddr) -> std::io::Result<(TcpStream, Vec<u8>)> {
        let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
        s.set_nodelay(true)?;
        s.set_read_timeout(Some(Duration::from_secs(10)))?;
        let mut hs = Handshake::new(PeerType::Client);
        let p0p1 = hs.generate_outbound_p0_and_p1().map_err(|e| std::io::Error::other(format!("{e:?}")))?;
        s.write_all(&p0p1)?;
        let mut buf = [0u8; 4096];
        loop {
            let n = s.read(&mut buf)?;
            if n == 0 {
                return Err(std::io::Error::other("closed during handshake"));
            }
            match hs.process_bytes(&buf[..n]).map_err(|e| std::io::Error::other(format!("{e:?}")))? {
                HandshakeProcessResult::InProgress { response_bytes } => s.write_all(&response_bytes)?,
                HandshakeProcessResult::Completed { response_bytes, remaining_bytes } => {
                    s.write_all(&response_bytes)?;
                    return Ok((s, remaining_bytes));
                }
            }
        }
    }

    /// Handshake + `connect` to `app`.
    pub fn connect(addr: SocketAddr, app: &str) -> Result<RtmpClient, String> {
        let (stream, rest) = Self::handshake(addr).map_err(|e| e.to_string())?;
        let (session, results) = ClientSession::new(ClientSessionConfig::new()).map_err(|e| format!("{e:?}"))?;
        let mut c = RtmpClient { stream, session, events: VecDeque::new(), status_codes: Vec::new(), closed: false };
        c.apply(results)?;
        if !rest.is_empty() {
            let r = c.session.handle_input(&rest).map_err(|e| format!("{e:?}"))?;
            c.apply(r)?;
        }
        let r = c.session.request_connection(app.to_string()).map_err(|e| format!("{e:?}"))?;
        c.apply(vec![r])?;
        c.wait_for(Duration::from_secs(5), |e| matches!(e, ClientSessionEvent::ConnectionRequestAccepted))?;
        Ok(c)
    }

    fn apply(&mut self, results: Vec<ClientSessionResult>) -> Result<(), String> {
        for r in results {
            match r {
                ClientSessionResult::OutboundResponse(p) => {
                    self.stream.write_all(&p.bytes).map_err(|e| e.to_string())?
                }
                ClientSessionResult::RaisedEvent(ClientSessionEvent::UnhandleableOnStatusCode { code }) => {
                    self.status_codes.push(code);
                }
                ClientSessionResult::RaisedEvent(e) => self.events.push_back(e),
                ClientSessionResult::UnhandleableMessageReceived(_) => {}
            }
        }
        Ok(())
    }

    /// Reads until an event is available or `timeout`; `None` on timeout or close.
    pub fn next_event(&mut self, timeout: Duration) -> Option<ClientSessionEvent> {
        let deadline = Instant::now() + timeout;
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            if let Some(e) = self.events.pop_front() {
                return Some(e);
            }
            let left = deadline.checked_duration_since(Instant::now())?;
            let _ = self.stream.set_read_timeout(Some(left.max(Duration::from_millis(1))));
            match self.stream.read(&mut buf) {
                Ok(0) => {
                    self.closed = true;
                    return None;
                }
                Ok(n) => {
                    let r = self.session.handle_input(&buf[..n]).ok()?;
                    self.apply(r).ok()?;
                }
                Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {
                    return None
                }
                Err(_) => {
                    self.closed = true;
                    return None;
                }
            }
        }
    }

    fn wait_for(&mut self, timeout: Duration, f: impl Fn(&ClientSessionEvent) -> bool) -> Result<(), String> {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            match self.next_event(deadline - Instant::now()) {
                Some(e) if f(&e) => return Ok(()),
                Some(_) => {}
                None if !self.status_codes.is_empty() => return Err(self.status_codes.join(",")),
                None if self.closed => return Err(format!("closed; status codes {:?}", self.status_codes)),
                None => {}
            }
        }
        Err(format!("timed out; status codes {:?}", self.status_codes))
    }

    /// Requests playback of `name`; Err carries the status codes on refusal.
    pub fn play(&mut self, name: &str) -> Result<(), String> {
        let r = self.session.request_playback(name.to_string()).map_err(|e| format!("{e:?}"))?;
        self.apply(vec![r])?;
        self.wait_for(Duration::from_secs(5), |e| matches!(e, ClientSessionEvent::PlaybackRequestAccepted))
    }

    /// Requests publishing on `name`; Err carries the status codes on refusal.
    pub fn publish(&mut self, name: &str) -> Result<(), String> {
        let r = self
            .session
            .request_publishing(name.to_string(), PublishRequestType::Live)
            .map_err(|e| format!("{e:?}"))?;
        self.apply(vec![r])?;
        self.wait_for(Duration::from_secs(5), |e| matches!(e, ClientSessionEvent::PublishRequestAccepted))
    }

    pub fn send_metadata(&mut self, meta: &StreamMetadata) -> Result<(), String> {
        let p = self.session.publish_metadata(meta).map_err(|e| format!("{e:?}"))?;
        self.apply(vec![p])
    }

    pub fn send_video(&mut self, data: Bytes, ts: u32) -> Result<(), String> {
        let p = self.session.publish_video_data(data, RtmpTimestamp::new(ts), false).map_err(|e| format!("{e:?}"))?;
        self.apply(vec![p])
    }

    pub fn send_audio(&mut self, data: Bytes, ts: u32) -> Result<(), String> {
        let p = self.session.publish_audio_data(data, RtmpTimestamp::new(ts), false).map_err(|e| format!("{e:?}"))?;
        self.apply(vec![p])
    }
}
