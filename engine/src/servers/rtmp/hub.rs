//! The writer hub: one task per stream writes every caught-up RTMP player's batches.
//!
//! A player's own task costs a wake-up, a scheduler pass, a doorbell registration and a read-readiness poll per
//! send, on top of the send itself. A player that is in step with the stream (its last batch went out whole and
//! nothing more is ready) therefore *parks*: it hands its [`PlayerFeed`] and its socket's write half to the
//! stream's hub, which, each time the doorbell rings, takes every parked player's complete batch, renders it and
//! writes it with one non-blocking vectored write, one player after the other (like the fan-out floor's loop).
//!
//! A write that would block or is cut short hands the player back, with what is left of the batch, to its own
//! task, which finishes it under `stream.slow_player_timeout_secs` and goes on as before: a slow player still
//! lags and skips to the next keyframe on its own, and one that stops reading is still disconnected. So does the
//! end of the stream, and a player's task can recall its player at any time (input to answer, the player left,
//! shutdown). The hub lives while it has players; its handle is kept in the stream's
//! [`crate::stream::SharedSlot`].

use std::io::{ErrorKind, IoSlice};
use std::os::fd::{AsRawFd, RawFd};
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Buf;
use prometheus::IntCounter;
use tokio::net::tcp::OwnedWriteHalf;
use tokio::sync::{mpsc, oneshot, watch};

use super::server::{render_batch, INLINE_BODY};
use crate::bufqueue::BufQueue;
use crate::formats::rtmp_chunk;
use crate::stream::{PlayerFeed, PlayerItem, SharedSlot};

/// Items per rendered batch at most (as a player's own task).
const BATCH_ITEMS: usize = 64;
/// Slices per vectored write.
const MAX_SLICES: usize = 64;

/// A player handed to the hub.
pub struct Parked {
    /// Identifies the player for [`recall`] (unique per node).
    pub id: u64,
    /// Its feed, in step with the stream.
    pub feed: PlayerFeed,
    /// Its socket's write half.
    pub wr: OwnedWriteHalf,
    /// The RTMP message stream it plays on.
    pub stream_id: u32,
    /// Its outgoing chunk size.
    pub chunk_size: usize,
    /// Where the player goes back to.
    pub back: oneshot::Sender<Returned>,
}

/// A player back from the hub.
pub struct Returned {
    /// The feed, positioned after what `rest` carries.
    pub feed: PlayerFeed,
    /// The socket's write half.
    pub wr: OwnedWriteHalf,
    /// The unsent rest of the last batch (empty when the player was recalled between batches).
    pub rest: BufQueue,
    /// The last batch carried the stream's end: close once `rest` is written.
    pub ended: bool,
}

/// A new player id for [`Parked::id`].
pub fn next_id() -> u64 {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    NEXT.fetch_add(1, Ordering::Relaxed)
}

enum Cmd {
    Park(Box<Seat>),
    Recall(u64),
}

/// A parked player and its socket's descriptor, read once at parking: the socket object behind the write half is
/// a separate allocation, cold by the next batch (a cache miss per player and batch if read there).
struct Seat {
    fd: RawFd,
    p: Parked,
}

impl Seat {
    fn new(p: Parked) -> Seat {
        Seat { fd: AsRef::<tokio::net::TcpStream>::as_ref(&p.wr).as_raw_fd(), p }
    }
}

/// The handle kept in a stream's [`SharedSlot`].
struct HubHandle(mpsc::UnboundedSender<Cmd>);

/// Hands `p` to its stream's hub, starting one if the stream has none.
pub fn park(p: Parked, egress: &IntCounter) {
    let slot = p.feed.shared_slot().clone();
    let mut slot = slot.lock().unwrap_or_else(|e| e.into_inner());
    let mut cmd = Cmd::Park(Box::new(Seat::new(p)));
    if let Some(hub) = slot.as_ref().and_then(|b| b.downcast_ref::<HubHandle>()) {
        match hub.0.send(cmd) {
            Ok(()) => return,
            Err(mpsc::error::SendError(c)) => cmd = c, // that hub has ended: start another
        }
    }
    let Cmd::Park(p) = cmd else { unreachable!("a park command") };
    let (tx, rx) = mpsc::unbounded_channel();
    let bell = p.p.feed.doorbell();
    let _ = tx.send(Cmd::Park(p));
    *slot = Some(Box::new(HubHandle(tx)));
    tokio::spawn(run(rx, bell, egress.clone()));
}

/// Asks the hub of `slot` to hand player `id` back (through its [`Parked::back`]) at once. A player the hub is
/// already handing back comes back anyway.
pub fn recall(slot: &SharedSlot, id: u64) {
    let slot = slot.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(hub) = slot.as_ref().and_then(|b| b.downcast_ref::<HubHandle>()) {
        let _ = hub.0.send(Cmd::Recall(id));
    }
}

fn give_back(p: Parked, rest: BufQueue, ended: bool) {
    let Parked { feed, wr, back, .. } = p;
    // A player whose task is gone is dropped here (its feed detaches, its socket closes).
    let _ = back.send(Returned { feed, wr, rest, ended });
}

/// A hub's reusable buffers.
#[derive(Default)]
struct Scratch {
    batch: Vec<PlayerItem>,
    /// Per-player bytes of a batch written directly: chunk headers and small bodies.
    hdr: Vec<u8>,
    segs: Vec<Seg>,
    /// Players to hand back after a round: index, unsent rest, ended.
    gone: Vec<(usize, BufQueue, bool)>,
}

/// A piece of a batch written directly: a range of [`Scratch::hdr`], or the shared chunked body of the batch's
/// item at an index.
#[derive(Clone, Copy)]
enum Seg {
    Hdr(usize, usize),
    Body(usize),
}

async fn run(mut rx: mpsc::UnboundedReceiver<Cmd>, mut bell: watch::Receiver<u64>, egress: IntCounter) {
    let mut players: Vec<Seat> = Vec::new();
    let mut scratch = Scratch::default();
    let mut round: usize = 0;
    loop {
        let mut sent = 0u64;
        tokio::select! {
            biased;
            cmd = rx.recv() => match cmd {
                Some(Cmd::Park(p)) => {
                    // Something may have become ready between its last batch and now.
                    let mut p = *p;
                    match serve(&mut p, &mut scratch, &mut sent) {
                        None => players.push(p),
                        Some((rest, ended)) => give_back(p.p, rest, ended),
                    }
                }
                Some(Cmd::Recall(id)) => {
                    if let Some(i) = players.iter().position(|s| s.p.id == id) {
                        give_back(players.swap_remove(i).p, BufQueue::new(), false);
                    }
                }
                None => break,
            },
            r = bell.changed() => {
                if r.is_err() {
                    // The stream is gone: every player takes its end on its own task.
                    break;
                }
                // Start at a different player each round: none is always served last.
                round = round.wrapping_add(1);
                let n = players.len();
                for k in 0..n {
                    let i = (round + k) % n;
                    if let Some((rest, ended)) = serve(&mut players[i], &mut scratch, &mut sent) {
                        scratch.gone.push((i, rest, ended));
                    }
                }
                // Highest index first: a swap_remove moves only players already served.
                scratch.gone.sort_unstable_by_key(|g| std::cmp::Reverse(g.0));
                for (i, rest, ended) in scratch.gone.drain(..) {
                    give_back(players.swap_remove(i).p, rest, ended);
                }
            }
        }
        if sent > 0 {
            egress.inc_by(sent);
        }
        if players.is_empty() {
            break;
        }
    }
    // Closed to new players: a park that races with the end finds the channel closed and starts a new hub.
    rx.close();
    for s in players.drain(..) {
        give_back(s.p, BufQueue::new(), false);
    }
    while let Ok(cmd) = rx.try_recv() {
        if let Cmd::Park(p) = cmd {
            give_back(p.p, BufQueue::new(), false);
        }
    }
}

/// Writes what `p` has ready. `None`: the hub keeps it; else it is to be handed back with the unsent rest of its
/// last batch (a write would block or failed) and whether that batch ended the stream.
fn serve(seat: &mut Seat, scratch: &mut Scratch, sent: &mut u64) -> Option<(BufQueue, bool)> {
    let Seat { fd, p } = seat;
    loop {
        let more = p.feed.try_next_batch(&mut scratch.batch, BATCH_ITEMS)?;
        if !more {
            // The feed ended without an End item to write (torn down): its task closes the connection.
            scratch.batch.clear();
            return Some((BufQueue::new(), true));
        }
        match write_direct(*fd, p, scratch) {
            Ok(n) => {
                scratch.batch.clear();
                *sent += n as u64;
            }
            Err(Some((rest, n))) => {
                scratch.batch.clear();
                *sent += n as u64;
                return Some((rest, false));
            }
            Err(None) => {
                // Metadata, the end, a join's burst, extended timestamps: the general rendering.
                let (mut q, ended) = render_batch(&mut scratch.batch, p.stream_id, p.chunk_size);
                while !q.is_empty() {
                    let mut io = [IoSlice::new(&[]); MAX_SLICES];
                    let cnt = q.chunks_vectored(&mut io);
                    match writev(*fd, &io[..cnt]) {
                        Ok(n) => {
                            q.advance(n);
                            *sent += n as u64;
                        }
                        Err(e) if e.kind() == ErrorKind::Interrupted => {}
                        // Would block (or failed): its task finishes the batch (or meets the error) itself.
                        Err(_) => break,
                    }
                }
                if !q.is_empty() || ended {
                    return Some((q, ended));
                }
            }
        }
    }
}

/// One non-blocking `writev` on socket `fd`, as `try_write_vectored` but without tokio's readiness check: that
/// reads the socket's registration, a separate allocation per socket that is cold by the next batch (one cache
/// miss per player and batch: ~4 % of strom's CPU samples at 1000 players). Nothing is lost by skipping it: a write
/// that would block hands the player back to its task, whose next write finds out again through tokio and waits
/// for writability as usual.
fn writev(fd: RawFd, io: &[IoSlice<'_>]) -> std::io::Result<usize> {
    let cnt = io.len().min(libc::c_int::MAX as usize) as libc::c_int;
    // SAFETY: `IoSlice` is ABI-compatible with `iovec` on Unix (std documents it), every slice borrows memory that
    // lives across the call, and `fd` is the open socket of a parked player's write half, which the hub holds
    // across the call.
    let n = unsafe { libc::writev(fd, io.as_ptr().cast::<libc::iovec>(), cnt) };
    if n < 0 {
        Err(std::io::Error::last_os_error())
    } else {
        Ok(n as usize)
    }
}

/// Writes a batch of media frames with one `writev` of this player's chunk headers (with small bodies inline)
/// between the frames' shared chunked bodies, nothing allocated or reference-counted. `Ok`: all written (bytes).
/// `Err(Some)`: the unsent rest and the bytes written. `Err(None)`: the batch needs [`render_batch`] (it has other
/// items, too many pieces, or extended timestamps); nothing was written and the batch is untouched.
fn write_direct(fd: RawFd, p: &mut Parked, scratch: &mut Scratch) -> Result<usize, Option<(BufQueue, usize)>> {
    let Scratch { batch, hdr, segs, .. } = scratch;
    hdr.clear();
    segs.clear();
    let mut mark = 0;
    for (i, item) in batch.iter().enumerate() {
        let PlayerItem::Frame(f, ts) = item else { return Err(None) };
        let (csid, type_id) = rtmp_chunk::route(f.kind);
        let flv = f.flv_body();
        if !rtmp_chunk::put_header(hdr, csid, *ts, flv.len(), type_id, p.stream_id) {
            return Err(None);
        }
        if flv.len() <= INLINE_BODY.min(p.chunk_size) {
            hdr.extend_from_slice(flv);
        } else {
            if rtmp_chunk::body_shared(f, p.chunk_size).is_none() {
                return Err(None);
            }
            segs.push(Seg::Hdr(mark, hdr.len()));
            segs.push(Seg::Body(i));
            mark = hdr.len();
        }
    }
    if hdr.len() > mark {
        segs.push(Seg::Hdr(mark, hdr.len()));
    }
    if segs.len() > MAX_SLICES {
        return Err(None);
    }
    let piece = |seg: Seg| -> &[u8] {
        match seg {
            Seg::Hdr(a, b) => &hdr[a..b],
            Seg::Body(i) => match &batch[i] {
                PlayerItem::Frame(f, _) => rtmp_chunk::body_shared(f, p.chunk_size).map_or(&[][..], |b| &b[..]),
                _ => &[],
            },
        }
    };
    let mut io = [IoSlice::new(&[]); MAX_SLICES];
    let mut total = 0;
    for (slot, seg) in io.iter_mut().zip(segs.iter()) {
        let b = piece(*seg);
        total += b.len();
        *slot = IoSlice::new(b);
    }
    let written = loop {
        match writev(fd, &io[..segs.len()]) {
            Ok(n) => break n,
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(_) => break 0,
        }
    };
    if written == total {
        return Ok(written);
    }
    // Cut short: the rest goes to the player's task.
    let mut rest = BufQueue::new();
    let mut skip = written;
    for seg in segs.iter() {
        let b = piece(*seg);
        if skip >= b.len() {
            skip -= b.len();
            continue;
        }
        match *seg {
            Seg::Hdr(..) => rest.push(bytes::Bytes::copy_from_slice(&b[skip..])),
            Seg::Body(i) => {
                if let PlayerItem::Frame(f, _) = &batch[i] {
                    rest.push(rtmp_chunk::body(f, p.chunk_size).slice(skip..));
                }
            }
        }
        skip = 0;
    }
    Err(Some((rest, written)))
}
