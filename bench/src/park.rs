//! `strom-load park`: the cost of parked LL-HLS blocking reloads.
//!
//! Publishes the stream, then opens K connections, measures the server's RSS, sends on each a blocking playlist
//! reload (`_HLS_msn`/`_HLS_part`) for a part about 2.5 s in the future, waits until the server's
//! `strom_hls_parked_requests` gauge says all K are parked, measures the RSS again, and when the part appears
//! takes the instant each answer's first byte arrives: the kernel's receive timestamp of that data on the tool's
//! socket (`SO_TIMESTAMPNS`; on loopback, the instant strom's write completed), so the tool's own scheduling of K
//! sockets on 2 threads stays out of it (the tool-side instant is kept too). strom-load cannot see the instant the
//! part completes inside the server; the reference is the first answer to arrive (a request that was parked like
//! every other): the figures are how much later than the first one each parked request got its answer.

use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};
use std::os::fd::AsRawFd;

use tokio::io::{AsyncReadExt, AsyncWriteExt, Interest};
use tokio::net::TcpStream;
use tokio::sync::Semaphore;

use crate::http::{self, HttpUrl};
use crate::stats::{now_ns, quantile};
use crate::{procstat, rtmp, source};

#[derive(clap::Args, Clone)]
pub struct ParkArgs {
    /// Name of the server under test.
    #[arg(long, default_value = "strom")]
    pub server: String,
    /// FLV file to publish.
    #[arg(long)]
    pub publish: std::path::PathBuf,
    /// RTMP URL to publish to.
    #[arg(long)]
    pub publish_url: String,
    /// LL-HLS playlist URL.
    #[arg(long)]
    pub hls_url: String,
    /// Prometheus metrics URL (default: /metrics on the playlist's host).
    #[arg(long)]
    pub metrics_url: Option<String>,
    /// Blocking reloads to park.
    #[arg(long)]
    pub parked: usize,
    /// Connections opened at once while connecting.
    #[arg(long, default_value_t = 200)]
    pub connect_concurrency: usize,
    /// Seconds of publishing before the baseline (the HLS window fills).
    #[arg(long, default_value_t = 14.0)]
    pub preroll_secs: f64,
    /// Server process id; repeatable.
    #[arg(long = "server-pid")]
    pub server_pids: Vec<u32>,
    /// Append the JSON line to this file too.
    #[arg(long)]
    pub json_out: Option<std::path::PathBuf>,
}

type Res<T> = Result<T, String>;

/// Reads one HTTP response (Content-Length body); returns (status, instant of its first byte, the body).
async fn response(sock: &mut TcpStream) -> Res<(u16, u64, Vec<u8>)> {
    let mut buf = Vec::with_capacity(8 * 1024);
    let mut tmp = [0u8; 8 * 1024];
    let mut first = 0;
    loop {
        let n = sock.read(&mut tmp).await.map_err(|e| format!("read: {e}"))?;
        if n == 0 {
            return Err("closed before the answer".into());
        }
        if first == 0 {
            first = now_ns();
        }
        buf.extend_from_slice(&tmp[..n]);
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
            let status = head.split_whitespace().nth(1).and_then(|s| s.parse().ok()).ok_or("bad status line")?;
            let len: usize = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:").and_then(|v| v.trim().parse().ok()))
                .unwrap_or(0);
            if buf.len() >= end + 4 + len {
                return Ok((status, first, buf[end + 4..end + 4 + len].to_vec()));
            }
        }
    }
}

/// Asks the kernel for receive timestamps on `sock` (`SO_TIMESTAMPNS`).
fn rx_timestamps(sock: &TcpStream) -> Res<()> {
    let one: libc::c_int = 1;
    // SAFETY: a valid fd and a c_int option value of the size given.
    let r = unsafe {
        libc::setsockopt(
            sock.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_TIMESTAMPNS,
            (&one as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    match r {
        0 => Ok(()),
        _ => Err(format!("SO_TIMESTAMPNS: {}", std::io::Error::last_os_error())),
    }
}

/// One `recvmsg`: bytes read and the kernel's receive timestamp (CLOCK_REALTIME, ns) of the data, if given.
fn recv_ts(fd: i32, buf: &mut [u8]) -> std::io::Result<(usize, Option<u64>)> {
    let mut iov = libc::iovec { iov_base: buf.as_mut_ptr().cast(), iov_len: buf.len() };
    let mut control = [0u64; 16];
    // SAFETY: msghdr is plain data; zeroed is its empty value.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.as_mut_ptr().cast();
    msg.msg_controllen = std::mem::size_of_val(&control) as _;
    // SAFETY: msg points at live buffers of the lengths it states.
    let n = unsafe { libc::recvmsg(fd, &mut msg, libc::MSG_DONTWAIT) };
    if n < 0 {
        return Err(std::io::Error::last_os_error());
    }
    let mut ts = None;
    // SAFETY: the CMSG macros walk the control buffer the kernel filled, within msg_controllen.
    unsafe {
        let mut c = libc::CMSG_FIRSTHDR(&msg);
        while !c.is_null() {
            if (*c).cmsg_level == libc::SOL_SOCKET && (*c).cmsg_type == libc::SCM_TIMESTAMPNS {
                let t: libc::timespec = std::ptr::read_unaligned(libc::CMSG_DATA(c).cast());
                ts = Some(t.tv_sec as u64 * 1_000_000_000 + t.tv_nsec as u64);
            }
            c = libc::CMSG_NXTHDR(&msg, c);
        }
    }
    Ok((n as usize, ts))
}

/// The first bytes of an answer on a parked connection: (tool-side instant, kernel receive timestamp, bytes).
async fn first_bytes(sock: &TcpStream) -> Res<(u64, Option<u64>, Vec<u8>)> {
    let mut tmp = vec![0u8; 8 * 1024];
    loop {
        sock.readable().await.map_err(|e| format!("readable: {e}"))?;
        match sock.try_io(Interest::READABLE, || recv_ts(sock.as_raw_fd(), &mut tmp)) {
            Ok((0, _)) => return Err("closed before the answer".into()),
            Ok((n, ts)) => return Ok((now_ns(), ts, tmp[..n].to_vec())),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
            Err(e) => return Err(format!("recvmsg: {e}")),
        }
    }
}

/// The rest of an answer whose first bytes are `got`: (status, body).
async fn rest(sock: &mut TcpStream, mut got: Vec<u8>) -> Res<(u16, Vec<u8>)> {
    let mut tmp = [0u8; 8 * 1024];
    loop {
        if let Some(end) = got.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&got[..end]).to_ascii_lowercase();
            let status = head.split_whitespace().nth(1).and_then(|s| s.parse().ok()).ok_or("bad status line")?;
            let len: usize = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:").and_then(|v| v.trim().parse().ok()))
                .unwrap_or(0);
            if got.len() >= end + 4 + len {
                return Ok((status, got[end + 4..end + 4 + len].to_vec()));
            }
        }
        let n = sock.read(&mut tmp).await.map_err(|e| format!("read: {e}"))?;
        if n == 0 {
            return Err("closed mid-answer".into());
        }
        got.extend_from_slice(&tmp[..n]);
    }
}

/// One GET on a fresh connection.
async fn get(url: &HttpUrl, path: &str) -> Res<(u16, Vec<u8>)> {
    let mut sock = TcpStream::connect(&url.addr).await.map_err(|e| format!("connect: {e}"))?;
    let req = format!("GET {path} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n", url.host);
    sock.write_all(req.as_bytes()).await.map_err(|e| format!("write: {e}"))?;
    let (status, _, body) = response(&mut sock).await?;
    Ok((status, body))
}

async fn gauge(url: &HttpUrl, name: &str) -> Option<f64> {
    let (_, body) = get(url, &url.path).await.ok()?;
    let text = String::from_utf8_lossy(&body);
    text.lines().find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
}

pub async fn run(a: &ParkArgs) -> Res<Value> {
    now_ns();
    let src = Arc::new(source::Source::load(&a.publish)?);
    let url: HttpUrl = a.hls_url.parse()?;
    let metrics: HttpUrl = match &a.metrics_url {
        Some(m) => m.parse()?,
        None => format!("http://{}/metrics", url.host).parse()?,
    };
    let (tx, rx) = tokio::sync::oneshot::channel();
    let publisher = tokio::spawn(rtmp::publish(a.publish_url.parse()?, src.clone(), tx));
    if !matches!(tokio::time::timeout(Duration::from_secs(10), rx).await, Ok(Ok(()))) {
        publisher.abort();
        return Err("publish failed".into());
    }
    tokio::time::sleep(Duration::from_secs_f64(a.preroll_secs)).await;
    let pids = procstat::family(&a.server_pids);
    let rss = || procstat::sample(&pids).rss_kib;
    let b0 = rss();

    // K idle connections first, so the request's own cost can be told from the connection's.
    let gate = Arc::new(Semaphore::new(a.connect_concurrency.max(1)));
    let mut connecting = tokio::task::JoinSet::new();
    for _ in 0..a.parked {
        let (gate, addr) = (gate.clone(), url.addr.clone());
        connecting.spawn(async move {
            let _permit = gate.acquire_owned().await.map_err(|e| e.to_string())?;
            let s = TcpStream::connect(&addr).await.map_err(|e| format!("connect: {e}"))?;
            s.set_nodelay(true).map_err(|e| e.to_string())?;
            rx_timestamps(&s)?;
            Ok::<_, String>(s)
        });
    }
    let c0 = now_ns();
    let mut socks = Vec::with_capacity(a.parked);
    let mut connect_errors = 0;
    let mut first_connect_error = None;
    while let Some(r) = connecting.join_next().await {
        match r.map_err(|e| e.to_string()).and_then(|r| r) {
            Ok(s) => socks.push(s),
            Err(e) => {
                connect_errors += 1;
                first_connect_error.get_or_insert(e);
            }
        }
    }
    let connect_secs = (now_ns() - c0) as f64 / 1e9;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let b1 = rss();
    let parked_before = gauge(&metrics, "strom_hls_parked_requests").await;

    // Target: part 4 of the next segment, asked for just after a segment opened (≤ 3 parts made): it appears
    // ~2.4-3 s later, inside the server's hold (3 target durations) and after every request is parked.
    let t_wait = now_ns();
    let target = loop {
        let (status, body) = get(&url, &url.path).await?;
        let pl = http::parse_playlist(&String::from_utf8_lossy(&body));
        match (status, pl.next_part) {
            (200, Some((open, parts))) if parts <= 3 => break (open + 1, 4),
            (200, None) => return Err("not an LL-HLS playlist".into()),
            _ => {}
        }
        if now_ns() - t_wait > 10_000_000_000 {
            return Err("no segment start seen in 10 s".into());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let path = format!("{}?_HLS_msn={}&_HLS_part={}", url.path, target.0, target.1);
    let req: Arc<[u8]> =
        format!("GET {path} HTTP/1.1\r\nHost: {}\r\nUser-Agent: strom-load\r\n\r\n", url.host).into_bytes().into();
    let cpu0 = procstat::sample(&pids).cpu_s;
    let s0 = now_ns();
    let mut waiting = tokio::task::JoinSet::new();
    for mut sock in socks {
        let req = req.clone();
        waiting.spawn(async move {
            sock.write_all(&req).await.map_err(|e| format!("write: {e}"))?;
            let sent = now_ns();
            // Nothing but the read between readiness and the timestamps; parsing waits until every answer is in.
            let (first, kernel, got) = first_bytes(&sock).await?;
            let (status, body) = rest(&mut sock, got).await?;
            Ok::<_, String>((status, sent, first, kernel, body))
        });
    }
    // All parked? The server's gauge says so; then the RSS with K parked requests (peak of a few samples).
    let mut parked_seen = 0.0f64;
    let mut all_parked_ns = None;
    let mut b2 = 0;
    // CPU while all K are parked (from the first to the last sample that still saw K parked: the server's cost
    // of holding them, e.g. waking them at every new part) and from then until every answer is in.
    let mut held: Option<((u64, f64), (u64, f64))> = None;
    while now_ns() - s0 < 8_000_000_000 {
        let g = gauge(&metrics, "strom_hls_parked_requests").await.unwrap_or(0.0);
        let (t, cpu) = (now_ns(), procstat::sample(&pids).cpu_s);
        parked_seen = parked_seen.max(g);
        if g >= a.parked as f64 {
            all_parked_ns.get_or_insert(t);
            held = Some((held.map_or((t, cpu), |h| h.0), (t, cpu)));
            b2 = b2.max(rss());
        } else if all_parked_ns.is_some() {
            break; // answers began
        } else {
            b2 = b2.max(rss());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mut answers = Vec::new();
    let mut kernel_answers = Vec::new();
    let mut statuses = std::collections::BTreeMap::<String, usize>::new();
    let mut errors = 0;
    let mut first_error = None;
    let mut last_sent = 0;
    let mut listed = 0;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    while let Ok(Some(r)) = tokio::time::timeout_at(deadline, waiting.join_next()).await {
        match r.map_err(|e| e.to_string()).and_then(|r| r) {
            Ok((status, sent, first, kernel, body)) => {
                *statuses.entry(status.to_string()).or_default() += 1;
                last_sent = last_sent.max(sent);
                if status == 200 {
                    answers.push(first);
                    kernel_answers.extend(kernel);
                    let pl = http::parse_playlist(&String::from_utf8_lossy(&body));
                    listed += usize::from(pl.next_part.is_some_and(|n| n > target));
                }
            }
            Err(e) => {
                errors += 1;
                first_error.get_or_insert(e);
            }
        }
    }
    let unanswered = waiting.len();
    waiting.abort_all();
    let cpu_end = procstat::sample(&pids).cpu_s;
    let cpu_wake = cpu_end - cpu0;
    publisher.abort();
    answers.sort_unstable();
    let first = answers.first().copied().unwrap_or(0);
    let tool_spread: Vec<f64> = answers.iter().map(|&t| (t - first) as f64 / 1e6).collect();
    kernel_answers.sort_unstable();
    let kfirst = kernel_answers.first().copied().unwrap_or(0);
    let spread: Vec<f64> = kernel_answers.iter().map(|&t| (t - kfirst) as f64 / 1e6).collect();
    let k = a.parked.max(1) as f64;
    Ok(json!({
        "server": a.server,
        "scenario": "park",
        "unix_time": std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0),
        "parked": a.parked,
        "connected": a.parked - connect_errors,
        "connect_errors": connect_errors,
        "first_connect_error": first_connect_error,
        "connect_secs": connect_secs,
        "target": [target.0, target.1],
        "parked_gauge_before": parked_before,
        "parked_gauge_max": parked_seen,
        "rss_base_kib": b0,
        "rss_connected_kib": b1,
        "rss_parked_kib": b2,
        "rss_per_parked_kib": (b2 as f64 - b0 as f64) / k,
        "rss_per_request_over_idle_connection_kib": (b2 as f64 - b1 as f64) / k,
        "send_all_ms": (last_sent.saturating_sub(s0)) as f64 / 1e6,
        "all_parked_to_first_answer_ms": all_parked_ns.map(|p| (first as f64 - p as f64) / 1e6),
        "statuses": statuses,
        "errors": errors,
        "first_error": first_error,
        "unanswered": unanswered,
        "answers_listing_target": listed,
        "answer_after_first_ms_p50": quantile(&spread, 0.5),
        "answer_after_first_ms_p99": quantile(&spread, 0.99),
        "answer_after_first_ms_max": spread.last(),
        "answers_kernel_timestamped": kernel_answers.len(),
        "tool_answer_after_first_ms_p50": quantile(&tool_spread, 0.5),
        "tool_answer_after_first_ms_p99": quantile(&tool_spread, 0.99),
        "tool_answer_after_first_ms_max": tool_spread.last(),
        "server_cpu_s_send_and_wake": cpu_wake,
        "server_cpu_util_holding": held.and_then(|((t0, c0), (t1, c1))| (t1 > t0).then(|| (c1 - c0) / ((t1 - t0) as f64 / 1e9))),
        "holding_secs": held.map(|((t0, _), (t1, _))| (t1 - t0) as f64 / 1e9),
        "server_cpu_s_answering": held.map(|(_, (_, c1))| cpu_end - c1),
    }))
}
