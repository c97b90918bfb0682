//! Helpers for hostile peers: raw RTMP chunks, deterministic garbage, "is this socket closed yet", metric waits
//! and log counting. Used by `robustness.rs` only.

#![allow(dead_code)]

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use crate::common::Strom;

/// xorshift64*: deterministic "random" bytes, so a failing case can be replayed.
pub struct Rng(pub u64);

impl Rng {
    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    pub fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| (self.next_u64() >> 56) as u8).collect()
    }
}

/// A type 0 chunk on chunk stream `csid` (2..=63): timestamp 0, the *declared* message length `declared`,
/// `type_id`, message stream `msid`, followed by `payload` (which may be shorter than declared: a truncated chunk).
pub fn chunk0(csid: u8, type_id: u8, msid: u32, declared: u32, payload: &[u8]) -> Vec<u8> {
    assert!((2..=63).contains(&csid));
    let mut v = vec![csid];
    v.extend_from_slice(&[0, 0, 0]);
    v.extend_from_slice(&declared.to_be_bytes()[1..]);
    v.push(type_id);
    v.extend_from_slice(&msid.to_le_bytes());
    v.extend_from_slice(payload);
    v
}

/// A whole message, split into chunks of `chunk_size` (type 0 then type 3 continuation chunks).
pub fn message(csid: u8, type_id: u8, msid: u32, payload: &[u8], chunk_size: usize) -> Vec<u8> {
    let mut parts = payload.chunks(chunk_size.max(1));
    let first = parts.next().unwrap_or(&[]);
    let mut v = chunk0(csid, type_id, msid, payload.len() as u32, first);
    for p in parts {
        v.push(0xC0 | csid);
        v.extend_from_slice(p);
    }
    v
}

/// The `SetChunkSize` protocol control message (type 1, chunk stream 2, message stream 0).
pub fn set_chunk_size(size: u32) -> Vec<u8> {
    chunk0(2, 1, 0, 4, &size.to_be_bytes())
}

/// TCP connection to `addr` with short timeouts.
pub fn tcp(addr: SocketAddr) -> TcpStream {
    let s = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).expect("tcp connect");
    s.set_nodelay(true).unwrap();
    s.set_write_timeout(Some(Duration::from_secs(5))).unwrap();
    s
}

/// Writes, ignoring errors (the server may have closed already: that is often the point).
pub fn send(s: &mut TcpStream, bytes: &[u8]) {
    let _ = s.write_all(bytes);
    let _ = s.flush();
}

/// Reads and discards until the peer closes (EOF or reset); returns how long that took from now, or `None` if
/// the socket is still open after `timeout`.
pub fn wait_closed(s: &mut TcpStream, timeout: Duration) -> Option<Duration> {
    let t = Instant::now();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let left = (t + timeout).checked_duration_since(Instant::now())?;
        let _ = s.set_read_timeout(Some(left.clamp(Duration::from_millis(1), Duration::from_millis(200))));
        match s.read(&mut buf) {
            Ok(0) => return Some(t.elapsed()),
            Ok(_) => {}
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut | ErrorKind::Interrupted) => {}
            Err(_) => return Some(t.elapsed()),
        }
    }
}

/// Whether the peer has closed `s` yet, without waiting (reads whatever is buffered).
pub fn is_open(s: &mut TcpStream) -> bool {
    wait_closed(s, Duration::from_millis(50)).is_none()
}

/// Polls `series` until it is at least `min`; returns the last value (the caller asserts).
pub fn wait_metric(s: &Strom, series: &str, min: f64, timeout: Duration) -> f64 {
    let deadline = Instant::now() + timeout;
    loop {
        let v = s.metric(series);
        if v >= min || Instant::now() > deadline {
            return v;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Polls `series` until it is at most `max`; returns the last value.
pub fn wait_metric_at_most(s: &Strom, series: &str, max: f64, timeout: Duration) -> f64 {
    let deadline = Instant::now() + timeout;
    loop {
        let v = s.metric(series);
        if v <= max || Instant::now() > deadline {
            return v;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// `strom_connections_rejected_total{reason="..."}`.
pub fn rejected(s: &Strom, reason: &str) -> f64 {
    s.metric(&format!("strom_connections_rejected_total{{reason=\"{reason}\"}}"))
}

/// Log lines containing every one of `needles`.
pub fn log_lines(s: &Strom, needles: &[&str]) -> Vec<String> {
    s.log_text().lines().filter(|l| needles.iter().all(|n| l.contains(n))).map(String::from).collect()
}

/// Waits until exactly one "connection ended" line names this client port and `reason`, and no other
/// "connection ended" line names the port; panics otherwise. Returns the line.
pub fn assert_logged_once(s: &Strom, local_port: u16, reason: &str) -> String {
    let peer = format!("peer=127.0.0.1:{local_port}");
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let lines = log_lines(s, &[&peer, "connection ended"]);
        if !lines.is_empty() || Instant::now() > deadline {
            // Give a duplicate a moment to show up before judging.
            std::thread::sleep(Duration::from_millis(100));
            let lines = log_lines(s, &[&peer, "connection ended"]);
            assert_eq!(lines.len(), 1, "one 'connection ended' line for {peer}, got {lines:#?}");
            assert!(
                lines[0].contains(&format!("reason=\"{reason}\"")) || lines[0].contains(&format!("reason={reason}")),
                "expected reason {reason}: {}",
                lines[0]
            );
            return lines[0].clone();
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A TCP connection to `addr` whose receive buffer (`rcvbuf`, doubled by the kernel) and MSS (1400) are set
/// *before* connecting (plain libc calls,
/// no extra crates): a peer that stops reading then fills both ends' buffers within a few hundred KiB, as a
/// phone on a bad network does, instead of the megabytes a loopback connection would otherwise absorb.
pub fn small_window_tcp(addr: SocketAddr, rcvbuf: i32) -> TcpStream {
    raw_tcp(addr, None, Some(rcvbuf))
}

/// A TCP connection to `addr` from the local address `src` (any 127.x.y.z is loopback on Linux): a client at
/// another address, for per-address limits.
pub fn tcp_from(src: std::net::Ipv4Addr, addr: SocketAddr) -> TcpStream {
    raw_tcp(addr, Some(src), None)
}

fn raw_tcp(addr: SocketAddr, src: Option<std::net::Ipv4Addr>, rcvbuf: Option<i32>) -> TcpStream {
    use std::os::fd::FromRawFd;
    #[repr(C)]
    struct SockAddrIn {
        family: u16,
        port: u16,
        addr: u32,
        zero: [u8; 8],
    }
    extern "C" {
        fn socket(domain: i32, ty: i32, protocol: i32) -> i32;
        fn setsockopt(fd: i32, level: i32, name: i32, value: *const std::ffi::c_void, len: u32) -> i32;
        fn bind(fd: i32, addr: *const SockAddrIn, len: u32) -> i32;
        fn connect(fd: i32, addr: *const SockAddrIn, len: u32) -> i32;
    }
    const AF_INET: i32 = 2;
    const SOCK_STREAM: i32 = 1;
    const SOL_SOCKET: i32 = 1;
    const SO_RCVBUF: i32 = 8;
    const IPPROTO_TCP: i32 = 6;
    const TCP_MAXSEG: i32 = 2;
    let SocketAddr::V4(v4) = addr else { panic!("IPv4 only") };
    let sockaddr = |ip: std::net::Ipv4Addr, port: u16| SockAddrIn {
        family: AF_INET as u16,
        port: port.to_be(),
        addr: u32::from(ip).to_be(),
        zero: [0; 8],
    };
    let len = std::mem::size_of::<SockAddrIn>() as u32;
    // SAFETY: plain socket syscalls on a descriptor this function owns; the address structs outlive the calls.
    unsafe {
        let fd = socket(AF_INET, SOCK_STREAM, 0);
        assert!(fd >= 0, "socket() failed");
        let stream = TcpStream::from_raw_fd(fd);
        if let Some(rcvbuf) = rcvbuf {
            let mss: i32 = 1400;
            let int = std::mem::size_of::<i32>() as u32;
            assert_eq!(setsockopt(fd, SOL_SOCKET, SO_RCVBUF, (&rcvbuf as *const i32).cast(), int), 0);
            assert_eq!(setsockopt(fd, IPPROTO_TCP, TCP_MAXSEG, (&mss as *const i32).cast(), int), 0);
        }
        if let Some(src) = src {
            assert_eq!(bind(fd, &sockaddr(src, 0), len), 0, "bind() to {src} failed");
        }
        assert_eq!(connect(fd, &sockaddr(*v4.ip(), v4.port()), len), 0, "connect() failed");
        stream.set_nodelay(true).unwrap();
        stream.set_write_timeout(Some(Duration::from_secs(5))).unwrap();
        stream
    }
}

/// Runs handshake, `connect` to `app` and `play` of `name` over `s` (e.g. a [`small_window_tcp`] socket), then
/// returns the socket without reading any further: the stream's media is left to pile up.
pub fn rtmp_play_then_stall(mut s: TcpStream, app: &str, name: &str) -> Result<TcpStream, String> {
    use rml_rtmp::handshake::{Handshake, HandshakeProcessResult, PeerType};
    use rml_rtmp::sessions::{ClientSession, ClientSessionConfig, ClientSessionEvent, ClientSessionResult};
    let e = |e: &dyn std::fmt::Debug| format!("{e:?}");
    s.set_read_timeout(Some(Duration::from_secs(5))).map_err(|x| e(&x))?;
    let mut hs = Handshake::new(PeerType::Client);
    s.write_all(&hs.generate_outbound_p0_and_p1().map_err(|x| e(&x))?).map_err(|x| e(&x))?;
    let mut buf = vec![0u8; 16 * 1024];
    let rest = loop {
        let n = s.read(&mut buf).map_err(|x| e(&x))?;
        if n == 0 {
            return Err("closed during handshake".into());
        }
        match hs.process_bytes(&buf[..n]).map_err(|x| e(&x))? {
            HandshakeProcessResult::InProgress { response_bytes } => s.write_all(&response_bytes).map_err(|x| e(&x))?,
            HandshakeProcessResult::Completed { response_bytes, remaining_bytes } => {
                s.write_all(&response_bytes).map_err(|x| e(&x))?;
                break remaining_bytes;
            }
        }
    };
    let (mut session, mut results) = ClientSession::new(ClientSessionConfig::new()).map_err(|x| e(&x))?;
    results.extend(session.handle_input(&rest).map_err(|x| e(&x))?);
    results.push(session.request_connection(app.to_string()).map_err(|x| e(&x))?);
    let mut connected = false;
    let mut codes = Vec::new();
    loop {
        for r in results.drain(..) {
            match r {
                ClientSessionResult::OutboundResponse(p) => s.write_all(&p.bytes).map_err(|x| e(&x))?,
                ClientSessionResult::RaisedEvent(ClientSessionEvent::ConnectionRequestAccepted) => connected = true,
                ClientSessionResult::RaisedEvent(ClientSessionEvent::PlaybackRequestAccepted) => return Ok(s),
                // NetStream.Play.Reset and friends: informational; a refusal shows as the close that follows.
                ClientSessionResult::RaisedEvent(ClientSessionEvent::UnhandleableOnStatusCode { code }) => {
                    codes.push(code)
                }
                _ => {}
            }
        }
        if connected {
            connected = false;
            results.push(session.request_playback(name.to_string()).map_err(|x| e(&x))?);
            continue;
        }
        let n = s.read(&mut buf).map_err(|x| e(&x))?;
        if n == 0 {
            return Err(format!("closed before play was accepted; status codes {codes:?}"));
        }
        results.extend(session.handle_input(&buf[..n]).map_err(|x| e(&x))?);
    }
}

/// Reads from `s` at about `bytes_per_sec` (in 50 ms steps) for `secs`; returns the bytes read and whether the
/// peer closed the connection meanwhile.
pub fn paced_read(s: &mut TcpStream, bytes_per_sec: usize, secs: f64) -> (usize, bool) {
    let t0 = Instant::now();
    let step = Duration::from_millis(50);
    let per_step = (bytes_per_sec / 20).max(1);
    let mut buf = vec![0u8; per_step];
    let mut total = 0usize;
    let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
    let mut n_step = 0u32;
    while t0.elapsed() < Duration::from_secs_f64(secs) {
        let mut want = per_step;
        while want > 0 {
            match s.read(&mut buf[..want]) {
                Ok(0) => return (total, true),
                Ok(n) => {
                    total += n;
                    want -= n;
                }
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => break,
                Err(_) => return (total, true),
            }
        }
        n_step += 1;
        if let Some(d) = (t0 + step * n_step).checked_duration_since(Instant::now()) {
            std::thread::sleep(d);
        }
    }
    (total, false)
}
