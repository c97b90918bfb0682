//! Minimal HTTP/1.1 over tokio: the HTTP-FLV player (chunked body, FLV tag headers only) and the HLS poller.

use std::collections::HashSet;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::media;
use crate::source::Source;
use crate::stats::{now_ns, Hist, PlayerStats};

type Res<T> = Result<T, String>;

/// `http://host:port/path`
#[derive(Clone, Debug)]
pub struct HttpUrl {
    pub addr: String,
    pub host: String,
    pub path: String,
}

impl std::str::FromStr for HttpUrl {
    type Err = String;
    fn from_str(s: &str) -> Res<Self> {
        let rest = s.strip_prefix("http://").ok_or_else(|| format!("not an http:// URL: {s}"))?;
        let (host, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, "/"),
        };
        let addr = if host.contains(':') { host.to_string() } else { format!("{host}:80") };
        Ok(HttpUrl { addr, host: host.into(), path: path.into() })
    }
}

impl HttpUrl {
    /// Resolves a playlist entry against this URL.
    fn join(&self, uri: &str) -> String {
        if let Some(rest) = uri.strip_prefix("http://") {
            return rest.find('/').map(|i| rest[i..].to_string()).unwrap_or_else(|| "/".into());
        }
        if uri.starts_with('/') {
            return uri.into();
        }
        let dir = &self.path[..self.path.rfind('/').map(|i| i + 1).unwrap_or(0)];
        format!("{dir}{uri}")
    }
}

/// Incremental `Transfer-Encoding: chunked` decoder.
#[derive(Default)]
pub struct Dechunker {
    state: CState,
    size: u64,
}

#[derive(Default, PartialEq)]
enum CState {
    #[default]
    Size,
    Ext,
    Lf,
    Data,
    DataCr,
    DataLf,
    Done,
}

impl Dechunker {
    /// Feeds raw bytes; calls `out` with each run of body bytes. Returns Err on malformed input.
    pub fn feed(&mut self, mut input: &[u8], mut out: impl FnMut(&[u8])) -> Res<()> {
        while !input.is_empty() {
            match self.state {
                CState::Data => {
                    let n = (self.size as usize).min(input.len());
                    out(&input[..n]);
                    input = &input[n..];
                    self.size -= n as u64;
                    if self.size == 0 {
                        self.state = CState::DataCr;
                    }
                    continue;
                }
                CState::Done => return Ok(()),
                _ => {}
            }
            let b = input[0];
            input = &input[1..];
            self.state = match (&self.state, b) {
                (CState::Size, b'0'..=b'9' | b'a'..=b'f' | b'A'..=b'F') => {
                    self.size = self.size * 16 + (b as char).to_digit(16).unwrap_or(0) as u64;
                    CState::Size
                }
                (CState::Size, b';' | b' ') | (CState::Ext, _) if b != b'\r' => CState::Ext,
                (CState::Size | CState::Ext, b'\r') => CState::Lf,
                (CState::Lf, b'\n') => {
                    if self.size == 0 {
                        CState::Done
                    } else {
                        CState::Data
                    }
                }
                (CState::DataCr, b'\r') => CState::DataLf,
                (CState::DataLf, b'\n') => {
                    self.size = 0;
                    CState::Size
                }
                _ => return Err("bad chunked encoding".into()),
            };
        }
        Ok(())
    }

    pub fn done(&self) -> bool {
        self.state == CState::Done
    }
}

/// Incremental FLV parser that keeps only tag headers and the first bytes of video bodies.
#[derive(Default)]
pub struct FlvParser {
    hdr: [u8; 13],
    hdr_got: usize,
    tag: [u8; 11],
    tag_got: usize,
    body_left: usize,
    kind: u8,
    head: Vec<u8>,
    prev_left: usize,
}

const VIDEO_HEAD: usize = 1024;

impl FlvParser {
    /// Feeds body bytes; `on_tag(kind, body_size, body_prefix)` for each complete tag.
    pub fn feed(&mut self, mut data: &[u8], on_tag: &mut impl FnMut(u8, usize, &[u8])) -> Res<()> {
        while !data.is_empty() {
            if self.hdr_got < 13 {
                let n = (13 - self.hdr_got).min(data.len());
                self.hdr[self.hdr_got..self.hdr_got + n].copy_from_slice(&data[..n]);
                self.hdr_got += n;
                data = &data[n..];
                if self.hdr_got == 13 && &self.hdr[..3] != b"FLV" {
                    return Err("not FLV".into());
                }
            } else if self.prev_left > 0 {
                let n = self.prev_left.min(data.len());
                self.prev_left -= n;
                data = &data[n..];
            } else if self.tag_got < 11 {
                let n = (11 - self.tag_got).min(data.len());
                self.tag[self.tag_got..self.tag_got + n].copy_from_slice(&data[..n]);
                self.tag_got += n;
                data = &data[n..];
                if self.tag_got == 11 {
                    self.kind = self.tag[0] & 0x1f;
                    self.body_left = u32::from_be_bytes([0, self.tag[1], self.tag[2], self.tag[3]]) as usize;
                    self.head.clear();
                    if self.body_left == 0 {
                        self.finish(on_tag);
                    }
                }
            } else {
                let n = self.body_left.min(data.len());
                let keep = if self.kind == 9 { VIDEO_HEAD } else { 2 };
                if self.head.len() < keep {
                    let k = (keep - self.head.len()).min(n);
                    self.head.extend_from_slice(&data[..k]);
                }
                self.body_left -= n;
                data = &data[n..];
                if self.body_left == 0 {
                    self.finish(on_tag);
                }
            }
        }
        Ok(())
    }

    fn finish(&mut self, on_tag: &mut impl FnMut(u8, usize, &[u8])) {
        let size = u32::from_be_bytes([0, self.tag[1], self.tag[2], self.tag[3]]) as usize;
        on_tag(self.kind, size, &self.head);
        self.tag_got = 0;
        self.prev_left = 4;
    }
}

/// Reads a response head; returns (status, chunked, content_length, body bytes already read).
async fn read_head(sock: &mut TcpStream, buf: &mut Vec<u8>) -> Res<(u16, bool, Option<usize>, Vec<u8>)> {
    let mut tmp = [0u8; 4096];
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
            let rest = buf[end + 4..].to_vec();
            buf.clear();
            let status = head.split_whitespace().nth(1).and_then(|s| s.parse().ok()).ok_or("bad status line")?;
            let mut chunked = false;
            let mut len = None;
            for line in head.lines().skip(1) {
                if let Some((k, v)) = line.split_once(':') {
                    match k.trim() {
                        "transfer-encoding" => chunked |= v.contains("chunked"),
                        "content-length" => len = v.trim().parse().ok(),
                        _ => {}
                    }
                }
            }
            return Ok((status, chunked, len, rest));
        }
        if buf.len() > 64 * 1024 {
            return Err("response head too large".into());
        }
        let n = sock.read(&mut tmp).await.map_err(|e| format!("read: {e}"))?;
        if n == 0 {
            return Err("closed before response".into());
        }
        buf.extend_from_slice(&tmp[..n]);
    }
}

/// Connects and GETs `url`; on 200, the socket, whether the body is chunked, and the body bytes read with the head
/// (counted as read).
async fn get_stream(url: &HttpUrl, stats: &PlayerStats) -> Res<(TcpStream, bool, Vec<u8>)> {
    let mut sock = TcpStream::connect(&url.addr).await.map_err(|e| format!("connect: {e}"))?;
    sock.set_nodelay(true).map_err(|e| format!("nodelay: {e}"))?;
    let req =
        format!("GET {} HTTP/1.1\r\nHost: {}\r\nUser-Agent: strom-load\r\nAccept: */*\r\n\r\n", url.path, url.host);
    sock.write_all(req.as_bytes()).await.map_err(|e| format!("write: {e}"))?;
    let mut head = Vec::new();
    let (status, chunked, _len, rest) = read_head(&mut sock, &mut head).await?;
    if status != 200 {
        return Err(format!("HTTP {status}"));
    }
    stats.wire.fetch_add(rest.len() as u64, Relaxed);
    Ok((sock, chunked, rest))
}

/// One HTTP-FLV player that reads like the many players of a fan-out (see [`crate::rtmp::drain`]): request, then
/// count what arrives, in reads of at most [`crate::rtmp::READ_BYTES`], without parsing it.
pub async fn drain_flv(url: HttpUrl, stats: Arc<PlayerStats>) -> Res<()> {
    let t0 = now_ns();
    let (mut sock, _, _) = get_stream(&url, &stats).await?;
    let mut buf = vec![0u8; crate::rtmp::READ_BYTES];
    loop {
        let n = sock.read(&mut buf).await.map_err(|e| format!("read: {e}"))?;
        if n == 0 {
            return Err("closed by server".into());
        }
        stats.joined(t0);
        stats.wire.fetch_add(n as u64, Relaxed);
    }
}

/// One HTTP-FLV player: GET, then count tags until aborted.
pub async fn play_flv(url: HttpUrl, stats: Arc<PlayerStats>, src: Arc<Source>, delay: Arc<Hist>) -> Res<()> {
    let t0 = now_ns();
    let (mut sock, chunked, rest) = get_stream(&url, &stats).await?;
    let mut dechunk = Dechunker::default();
    let mut flv = FlvParser::default();
    let now = std::sync::atomic::AtomicU64::new(now_ns());
    let mut on_tag = |kind: u8, size: usize, head: &[u8]| {
        if (kind != 8 && kind != 9) || media::is_sequence_header(kind, head) {
            return;
        }
        stats.media.fetch_add(size as u64, Relaxed);
        stats.frames.fetch_add(1, Relaxed);
        if kind == 9 {
            if media::is_flv_keyframe(head) {
                stats.joined(t0);
            }
            if let Some(d) = media::key_from_flv_video(head).and_then(|k| src.delay_us(k, now.load(Relaxed))) {
                delay.record_us(d);
            }
        }
    };
    let mut feed = |bytes: &[u8], on_tag: &mut _| -> Res<()> {
        if chunked {
            let mut r = Ok(());
            dechunk.feed(bytes, |b| {
                if r.is_ok() {
                    r = flv.feed(b, on_tag);
                }
            })?;
            r?;
            if dechunk.done() {
                return Err("stream ended".into());
            }
            Ok(())
        } else {
            flv.feed(bytes, on_tag)
        }
    };
    feed(&rest, &mut on_tag)?;
    let mut buf = vec![0u8; crate::rtmp::READ_BYTES];
    loop {
        let n = sock.read(&mut buf).await.map_err(|e| format!("read: {e}"))?;
        if n == 0 {
            return Err("closed by server".into());
        }
        now.store(now_ns(), Relaxed);
        stats.wire.fetch_add(n as u64, Relaxed);
        feed(&buf[..n], &mut on_tag)?;
    }
}

/// A keep-alive HTTP/1.1 connection for small GETs.
struct Conn {
    url: HttpUrl,
    sock: Option<TcpStream>,
}

impl Conn {
    async fn get(&mut self, path: &str, wire: &mut u64) -> Res<(u16, Vec<u8>)> {
        for attempt in 0..2 {
            if self.sock.is_none() {
                let s = TcpStream::connect(&self.url.addr).await.map_err(|e| format!("connect: {e}"))?;
                s.set_nodelay(true).map_err(|e| format!("nodelay: {e}"))?;
                self.sock = Some(s);
            }
            match self.get_once(path, wire).await {
                Ok(r) => return Ok(r),
                Err(e) => {
                    self.sock = None;
                    if attempt == 1 {
                        return Err(e);
                    }
                }
            }
        }
        unreachable!()
    }

    async fn get_once(&mut self, path: &str, wire: &mut u64) -> Res<(u16, Vec<u8>)> {
        let sock = self.sock.as_mut().ok_or("no socket")?;
        let req = format!("GET {path} HTTP/1.1\r\nHost: {}\r\nUser-Agent: strom-load\r\n\r\n", self.url.host);
        sock.write_all(req.as_bytes()).await.map_err(|e| format!("write: {e}"))?;
        let mut head = Vec::new();
        let (status, chunked, len, rest) = read_head(sock, &mut head).await?;
        let mut body = Vec::with_capacity(len.unwrap_or(0));
        let mut dechunk = Dechunker::default();
        let mut take = |bytes: &[u8], body: &mut Vec<u8>| -> Res<bool> {
            *wire += bytes.len() as u64;
            if chunked {
                dechunk.feed(bytes, |b| body.extend_from_slice(b))?;
                Ok(dechunk.done())
            } else {
                body.extend_from_slice(bytes);
                Ok(len.is_some_and(|l| body.len() >= l))
            }
        };
        let mut done = take(&rest, &mut body)? || (!chunked && len == Some(0));
        let mut buf = vec![0u8; 64 * 1024];
        while !done {
            let n = sock.read(&mut buf).await.map_err(|e| format!("read: {e}"))?;
            if n == 0 {
                if !chunked && len.is_none() {
                    self.sock = None;
                    break;
                }
                return Err("closed mid-body".into());
            }
            done = take(&buf[..n], &mut body)?;
        }
        Ok((status, body))
    }
}

#[derive(Default)]
pub struct Playlist {
    /// (media sequence number, uri)
    pub segments: Vec<(u64, String)>,
    /// LL-HLS parts: (msn, part index in its segment, uri)
    pub parts: Vec<(u64, u64, String)>,
    /// The newest `EXT-X-MAP` URI.
    pub map: Option<String>,
    /// `(msn, part)` of the first part not listed yet (what a blocking reload asks for), if the playlist has parts.
    pub next_part: Option<(u64, u64)>,
}

pub fn parse_playlist(text: &str) -> Playlist {
    let mut pl = Playlist::default();
    let mut seq = 0u64;
    let mut part = 0u64;
    let mut has_parts = false;
    for line in text.lines().map(str::trim) {
        if let Some(v) = line.strip_prefix("#EXT-X-MEDIA-SEQUENCE:") {
            seq = v.trim().parse().unwrap_or(0);
        } else if let Some(v) = line.strip_prefix("#EXT-X-SKIP:SKIPPED-SEGMENTS=") {
            seq += v.split(',').next().and_then(|n| n.trim().parse::<u64>().ok()).unwrap_or(0);
        } else if line.starts_with("#EXT-X-PART-INF:") {
            has_parts = true;
        } else if let Some(v) = line.strip_prefix("#EXT-X-MAP:") {
            pl.map = attr(v, "URI");
        } else if let Some(v) = line.strip_prefix("#EXT-X-PART:") {
            if let Some(uri) = attr(v, "URI") {
                pl.parts.push((seq, part, uri));
            }
            part += 1;
        } else if !line.is_empty() && !line.starts_with('#') {
            pl.segments.push((seq, line.to_string()));
            seq += 1;
            part = 0;
        }
    }
    pl.next_part = has_parts.then_some((seq, part));
    pl
}

/// A quoted or plain attribute of an HLS tag's attribute list.
fn attr(list: &str, name: &str) -> Option<String> {
    let at = list.find(&format!("{name}="))? + name.len() + 1;
    let rest = &list[at..];
    match rest.strip_prefix('"') {
        Some(q) => q.split('"').next().map(str::to_string),
        None => rest.split(',').next().map(str::to_string),
    }
}

/// The first video access unit of a segment or part: fMP4 (moof/mdat, AVCC samples) or MPEG-TS (Annex B).
fn first_video_key(data: &[u8], video_track: u32) -> Option<u64> {
    if data.first() == Some(&0x47) {
        media::key_from_annexb(&media::first_video_es(data))
    } else {
        media::key_from_avcc(media::fmp4_first_sample(data, video_track)?)
    }
}

/// Fetches an fMP4 init segment (`EXT-X-MAP`) and returns its video track id (CMAF's 1 when unknown).
async fn video_track(conn: &mut Conn, url: &HttpUrl, map: Option<&str>, stats: &PlayerStats) -> Res<u32> {
    let Some(map) = map else { return Ok(1) };
    let mut wire = 0;
    let (status, init) = conn.get(&url.join(map), &mut wire).await?;
    stats.wire.fetch_add(wire, Relaxed);
    if status != 200 {
        return Err(format!("init segment HTTP {status}"));
    }
    Ok(media::fmp4_video_track(&init).unwrap_or(1))
}

/// One HLS player: loads the playlist, starts 3 segments from the live edge (like hls.js), then polls the playlist
/// every `poll` and downloads each new segment. A segment's live delay is the time it was first seen listed minus
/// the publish instant of its first frame (segment availability).
pub async fn play_hls(
    url: HttpUrl,
    poll: Duration,
    stats: Arc<PlayerStats>,
    src: Arc<Source>,
    delay: Arc<Hist>,
) -> Res<()> {
    let t0 = now_ns();
    let mut conn = Conn { url: url.clone(), sock: None };
    let mut seen: HashSet<u64> = HashSet::new();
    let mut first_load = true;
    let mut track: Option<(String, u32)> = None;
    loop {
        let mut wire = 0;
        let (status, body) = conn.get(&url.path, &mut wire).await?;
        let listed_at = now_ns();
        stats.wire.fetch_add(wire, Relaxed);
        if status == 200 {
            let pl = parse_playlist(&String::from_utf8_lossy(&body));
            // fMP4: the init segment names the video track (fetched again only when EXT-X-MAP changes).
            if let Some(map) = &pl.map {
                if track.as_ref().is_none_or(|(m, _)| m != map) {
                    let id = video_track(&mut conn, &url, Some(map), &stats).await?;
                    track = Some((map.clone(), id));
                }
            }
            let video = track.as_ref().map_or(1, |t| t.1);
            let start = if first_load { pl.segments.len().saturating_sub(3) } else { 0 };
            for (i, (seq, uri)) in pl.segments.iter().enumerate() {
                if !seen.insert(*seq) || i < start {
                    continue;
                }
                let mut wire = 0;
                let (status, seg) = conn.get(&url.join(uri), &mut wire).await?;
                stats.wire.fetch_add(wire, Relaxed);
                if status != 200 {
                    continue;
                }
                stats.media.fetch_add(seg.len() as u64, Relaxed);
                stats.frames.fetch_add(1, Relaxed);
                stats.joined(t0);
                if !first_load {
                    if let Some(d) = first_video_key(&seg, video).and_then(|k| src.delay_us(k, listed_at)) {
                        delay.record_us(d);
                    }
                }
            }
            if !pl.segments.is_empty() {
                first_load = false;
            }
        } else if status != 404 {
            return Err(format!("playlist HTTP {status}"));
        }
        tokio::time::sleep(poll).await;
    }
}

/// One LL-HLS player, like hls.js in `lowLatencyMode`: loads the playlist and the init segment, starts at the part
/// PART-HOLD-BACK (3 parts) behind the live edge, then loops: a blocking reload for the next part
/// (`_HLS_msn`/`_HLS_part`, `_HLS_skip=YES` as hls.js asks for delta updates), then every newly listed part, all
/// over one keep-alive connection. A probe (`probe`) measures each new part's live delay: the part's arrival (its
/// download complete) − the publish instant of its first video frame; a reader only counts bytes.
pub async fn play_llhls(
    url: HttpUrl,
    stats: Arc<PlayerStats>,
    src: Arc<Source>,
    delay: Arc<Hist>,
    probe: bool,
) -> Res<()> {
    let t0 = now_ns();
    let mut conn = Conn { url: url.clone(), sock: None };
    let sep = if url.path.contains('?') { '&' } else { '?' };
    let mut next: Option<(u64, u64)> = None;
    // The newest part fetched, (msn, part index).
    let mut last: Option<(u64, u64)> = None;
    let mut track: Option<(String, u32)> = None;
    loop {
        let path = match next {
            Some((m, p)) => format!("{}{sep}_HLS_msn={m}&_HLS_part={p}&_HLS_skip=YES", url.path),
            None => url.path.clone(),
        };
        let mut wire = 0;
        let (status, body) = conn.get(&path, &mut wire).await?;
        stats.wire.fetch_add(wire, Relaxed);
        match status {
            200 => {}
            503 => {
                // The part did not appear within the hold: ask again.
                stats.unavailable.fetch_add(1, Relaxed);
                continue;
            }
            404 | 400 => {
                // No playlist yet, or we fell too far behind/ahead: start again from a plain reload.
                stats.bad_reloads.fetch_add(u64::from(status == 400), Relaxed);
                next = None;
                last = None;
                tokio::time::sleep(Duration::from_millis(200)).await;
                continue;
            }
            s => return Err(format!("playlist HTTP {s}")),
        }
        let pl = parse_playlist(&String::from_utf8_lossy(&body));
        if pl.next_part.is_none() {
            return Err("not an LL-HLS playlist (no EXT-X-PART-INF)".into());
        }
        if let Some(map) = &pl.map {
            if track.as_ref().is_none_or(|(m, _)| m != map) {
                let id = video_track(&mut conn, &url, Some(map), &stats).await?;
                track = Some((map.clone(), id));
            }
        }
        let video = track.as_ref().map_or(1, |t| t.1);
        let joining = last.is_none();
        let start = match last {
            None => pl.parts.len().saturating_sub(3),
            Some(l) => pl.parts.iter().position(|(m, p, _)| (*m, *p) > l).unwrap_or(pl.parts.len()),
        };
        for (m, p, uri) in &pl.parts[start..] {
            let mut wire = 0;
            let (status, part) = conn.get(&url.join(uri), &mut wire).await?;
            let arrived = now_ns();
            stats.wire.fetch_add(wire, Relaxed);
            last = Some((*m, *p));
            if status != 200 {
                continue;
            }
            stats.media.fetch_add(part.len() as u64, Relaxed);
            stats.frames.fetch_add(1, Relaxed);
            stats.joined(t0);
            if probe && !joining {
                if let Some(d) = first_video_key(&part, video).and_then(|k| src.delay_us(k, arrived)) {
                    delay.record_us(d);
                }
            }
        }
        next = pl.next_part;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dechunk_and_flv() {
        let mut flv = b"FLV\x01\x05\x00\x00\x00\x09\x00\x00\x00\x00".to_vec();
        for (kind, body) in [(9u8, vec![0x17, 1, 0, 0, 0, 1, 2, 3]), (8u8, vec![0xaf, 1, 9])] {
            let n = body.len() as u32;
            flv.extend_from_slice(&[kind, (n >> 16) as u8, (n >> 8) as u8, n as u8, 0, 0, 0, 0, 0, 0, 0]);
            flv.extend_from_slice(&body);
            flv.extend_from_slice(&(n + 11).to_be_bytes());
        }
        let mut wire = Vec::new();
        for c in flv.chunks(7) {
            wire.extend_from_slice(format!("{:x};x=y\r\n", c.len()).as_bytes());
            wire.extend_from_slice(c);
            wire.extend_from_slice(b"\r\n");
        }
        wire.extend_from_slice(b"0\r\n\r\n");
        let mut d = Dechunker::default();
        let mut p = FlvParser::default();
        let mut tags = Vec::new();
        let mut on_tag = |k: u8, s: usize, h: &[u8]| tags.push((k, s, h.len()));
        for c in wire.chunks(3) {
            d.feed(c, |b| p.feed(b, &mut on_tag).unwrap()).unwrap();
        }
        assert!(d.done());
        assert_eq!(tags, vec![(9, 8, 8), (8, 3, 2)]);
    }

    #[test]
    fn playlist_and_join() {
        let pl = parse_playlist("#EXTM3U\n#EXT-X-MEDIA-SEQUENCE:7\n#EXTINF:2.0,\na.ts\n#EXTINF:2.0,\nb.ts\n");
        assert_eq!(pl.segments, vec![(7, "a.ts".to_string()), (8, "b.ts".to_string())]);
        assert_eq!(pl.next_part, None);
        let ll = parse_playlist(
            "#EXTM3U\n#EXT-X-PART-INF:PART-TARGET=0.200\n#EXT-X-MEDIA-SEQUENCE:3\n#EXT-X-SKIP:SKIPPED-SEGMENTS=2\n\
             #EXT-X-MAP:URI=\"1-init0.mp4\"\n#EXT-X-PART:DURATION=0.200,URI=\"1-p1.m4s\",INDEPENDENT=YES\n\
             #EXT-X-PART:DURATION=0.200,URI=\"1-p2.m4s\"\n#EXTINF:0.400,\n1-5.m4s\n\
             #EXT-X-PART:DURATION=0.200,URI=\"1-p3.m4s\",INDEPENDENT=YES\n\
             #EXT-X-PRELOAD-HINT:TYPE=PART,URI=\"1-p4.m4s\"\n",
        );
        assert_eq!(ll.segments, vec![(5, "1-5.m4s".to_string())]);
        assert_eq!(ll.map.as_deref(), Some("1-init0.mp4"));
        assert_eq!(ll.parts, vec![(5, 0, "1-p1.m4s".into()), (5, 1, "1-p2.m4s".into()), (6, 0, "1-p3.m4s".into())]);
        assert_eq!(ll.next_part, Some((6, 1)));
        let u: HttpUrl = "http://127.0.0.1:8080/live/k/index.m3u8".parse().unwrap();
        assert_eq!(u.join("s1.ts"), "/live/k/s1.ts");
        assert_eq!(u.addr, "127.0.0.1:8080");
    }
}
