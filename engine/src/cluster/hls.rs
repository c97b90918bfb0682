//! HLS from any node: a node that does not own a stream serves the owner's playlist and segments, byte for byte.
//!
//! Playlists come from the owner's push (every owner pushes its playlist to every node at each new segment, see
//! [`super::export`]), so a poll makes no cluster call and every node shows exactly the owner's window, sequence
//! numbers and discontinuities; only before the first push reaches a node is the owner asked. Segments are
//! immutable: each is fetched once per node (concurrent requests for one segment share one transfer), in parts
//! of [`super::export::SEGMENT_PART`] (far below the cluster frame limit), and kept in a [`SegmentCache`] bounded
//! in entries and bytes, so a thousand HLS players on one node cost one transfer per segment.
//!
//! The part the owner's preload hint names is followed as it grows ([`SegmentCache::growing`]): one mirror per
//! part and node, fed by [`Request::Growing`] calls that each return the chunks made since the last one, so a
//! request for that part here is answered chunk by chunk as on the owner, and the whole part is cached when done.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use futures_util::future::{BoxFuture, FutureExt, Shared};
use ractor::ActorRef;
use tracing::debug;

use super::export::SEGMENT_PART;
use super::wire::{Request, Response};
use super::{call, RemoteMsg};
use crate::formats::StreamKey;
use crate::stream::cmaf_segmenter::{is_init_segment, GrowingPart, Growth};
use crate::stream::ports::{BoxFuture as PortFuture, RemoteHls};

/// Longest a whole segment transfer may take.
const SEGMENT_TIMEOUT: Duration = Duration::from_secs(10);
/// Segments kept per node.
const CACHE_ENTRIES: usize = 256;
/// Bytes kept per node.
const CACHE_BYTES: usize = 256 << 20;
/// Largest segment accepted from an owner.
const MAX_SEGMENT: u32 = 256 << 20;

/// Recently fetched remote segments (see the module docs), and the transfers under way.
#[derive(Default)]
pub struct SegmentCache {
    inner: Mutex<(VecDeque<Cached>, usize)>,
    /// One transfer per (stream, segment) at a time: later requests wait for it.
    inflight: Mutex<HashMap<(StreamKey, String), Transfer>>,
    /// The owners' growing parts followed from this node: one mirror per part, while it is read.
    mirrors: Mutex<HashMap<(StreamKey, String), std::sync::Weak<GrowingPart>>>,
}

/// A segment transfer that every request for it awaits.
type Transfer = Shared<BoxFuture<'static, Option<Bytes>>>;

/// Stream, segment name, bytes.
type Cached = (StreamKey, String, Bytes);

impl SegmentCache {
    /// A cached segment.
    pub fn get(&self, key: &StreamKey, name: &str) -> Option<Bytes> {
        let g = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        g.0.iter().find(|(k, n, _)| k == key && n == name).map(|(_, _, b)| b.clone())
    }

    /// `name` of `key` from this cache, or else from the first of `sources` that has it (export actors of the
    /// stream on other nodes), joining a transfer of it already under way; kept here once fetched.
    pub async fn get_or_fetch(
        self: &Arc<Self>,
        key: &StreamKey,
        name: &str,
        sources: Vec<ActorRef<RemoteMsg>>,
    ) -> Option<Bytes> {
        if let Some(b) = self.get(key, name) {
            return Some(b);
        }
        if sources.is_empty() {
            // No node to ask: only a transfer already under way (a copy started while one was there) can bring it.
            let under_way = {
                let inflight = self.inflight.lock().unwrap_or_else(|e| e.into_inner());
                inflight.get(&(key.clone(), name.to_string())).cloned()
            };
            return under_way?.await;
        }
        self.transfer(key, name, sources).await
    }

    /// Part `name` of `key` as `owner` produces it: this node's mirror of it, started by the first reader and
    /// fed until the part is complete (then cached whole) or nobody reads it; each call to the owner waits up to
    /// `wait` for a chunk. A mirror that stops early (the owner is gone) ends its readers' transfer.
    pub fn growing(
        self: &Arc<Self>,
        key: &StreamKey,
        name: &str,
        owner: ActorRef<RemoteMsg>,
        wait: Duration,
    ) -> tokio::sync::watch::Receiver<Growth> {
        let id = (key.clone(), name.to_string());
        let mut g = self.mirrors.lock().unwrap_or_else(|e| e.into_inner());
        g.retain(|_, m| m.strong_count() > 0);
        if let Some(part) = g.get(&id).and_then(std::sync::Weak::upgrade) {
            return part.subscribe();
        }
        let part = GrowingPart::new(name.to_string());
        g.insert(id, Arc::downgrade(&part));
        let rx = part.subscribe();
        let (cache, key) = (self.clone(), key.clone());
        tokio::spawn(async move {
            let wait_ms = wait.as_millis().min(u128::from(u32::MAX)) as u32;
            let mut from = 0u32;
            let mut empty = 0;
            while part.is_read() && empty < 2 {
                let req = Request::Growing { name: part.name.clone(), from, wait_ms };
                let Some(Response::Growing(Some((data, done)))) = call(&owner, &req, wait + SEGMENT_TIMEOUT).await
                else {
                    debug!(stream = %key, part = %part.name, from, "the owner's growing part is not there any more");
                    break;
                };
                if data.is_empty() {
                    // Nothing new for a whole wait (the publisher stalls): once more, then its readers give up too.
                    empty += 1;
                } else {
                    empty = 0;
                    from = from.saturating_add(data.len() as u32);
                    part.push(data);
                }
                if done {
                    part.finish();
                    let whole = part.subscribe().borrow().chunks.concat();
                    cache.put(&key, &part.name, Bytes::from(whole));
                    break;
                }
            }
        });
        rx
    }

    /// Starts fetching each of `names` of `key` from `sources` (see [`SegmentCache::get_or_fetch`]), in turn, in
    /// the background: what a new owner copies of the previous owner's window while that owner is still there.
    pub fn copy(self: &Arc<Self>, key: &StreamKey, names: Vec<String>, sources: Vec<ActorRef<RemoteMsg>>) {
        if names.is_empty() || sources.is_empty() {
            return;
        }
        let (cache, key) = (self.clone(), key.clone());
        tokio::spawn(async move {
            let started = std::time::Instant::now();
            let mut copied = 0;
            for name in &names {
                copied += usize::from(cache.get_or_fetch(&key, name, sources.clone()).await.is_some());
            }
            debug!(stream = %key, copied, of = names.len(), took = ?started.elapsed(), "copied the previous owner's window");
        });
    }

    /// The transfer of `name` under way, or a new one from `sources` (tried in turn).
    fn transfer(self: &Arc<Self>, key: &StreamKey, name: &str, sources: Vec<ActorRef<RemoteMsg>>) -> Transfer {
        let id = (key.clone(), name.to_string());
        let mut g = self.inflight.lock().unwrap_or_else(|e| e.into_inner());
        g.entry(id)
            .or_insert_with(|| {
                let (key, name, cache) = (key.clone(), name.to_string(), self.clone());
                async move {
                    let mut data = None;
                    for source in &sources {
                        data = tokio::time::timeout(SEGMENT_TIMEOUT, fetch(source, &key, &name)).await.ok().flatten();
                        if data.is_some() {
                            break;
                        }
                    }
                    if let Some(d) = &data {
                        cache.put(&key, &name, d.clone());
                    }
                    // Done either way: a failed or timed-out transfer leaves room for a new one.
                    cache.inflight.lock().unwrap_or_else(|e| e.into_inner()).remove(&(key, name));
                    data
                }
                .boxed()
                .shared()
            })
            .clone()
    }

    fn put(&self, key: &StreamKey, name: &str, data: Bytes) {
        let mut g = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        if g.0.iter().any(|(k, n, _)| k == key && n == name) {
            return;
        }
        g.1 += data.len();
        g.0.push_back((key.clone(), name.to_string(), data));
        // The oldest go first, init segments last: one init serves every segment listed after it, and parts
        // (many, short-lived) would otherwise push a stream's init out while its segments are still listed.
        while g.0.len() > CACHE_ENTRIES || g.1 > CACHE_BYTES {
            let at = g.0.iter().position(|(_, n, _)| !is_init_segment(n)).unwrap_or(0);
            match g.0.remove(at) {
                Some((_, _, b)) => g.1 -= b.len(),
                None => break,
            }
        }
    }
}

/// A stream's HLS at its owner.
pub struct OwnerHls {
    key: StreamKey,
    owner: ActorRef<RemoteMsg>,
    cache: Arc<SegmentCache>,
    pushed: Option<Bytes>,
}

impl OwnerHls {
    /// HLS of `key` from `owner`'s export actor; `pushed`: the playlist that owner pushed at its last segment.
    pub fn new(
        key: StreamKey,
        owner: ActorRef<RemoteMsg>,
        cache: Arc<SegmentCache>,
        pushed: Option<Bytes>,
    ) -> OwnerHls {
        OwnerHls { key, owner, cache, pushed }
    }

    /// The owner's media playlist: the one it pushed, else (before its first segment reached this node) asked of
    /// it, waiting up to `wait` for the first segment.
    pub async fn playlist(&self, wait: Duration) -> Option<Bytes> {
        if let Some(p) = &self.pushed {
            return Some(p.clone());
        }
        let req = Request::Playlist { wait_ms: wait.as_millis().min(u32::MAX as u128) as u32 };
        match call(&self.owner, &req, wait + Duration::from_secs(2)).await? {
            Response::Playlist(p) => p,
            _ => None,
        }
    }

    /// One segment, from the cache or the owner (one transfer per segment and node, shared by every request
    /// that arrives while it runs).
    pub async fn segment(&self, name: &str) -> Option<Bytes> {
        if let Some(b) = self.cache.get(&self.key, name) {
            return Some(b);
        }
        self.transfer(name).await
    }

    /// The preload-hinted part `name` followed from the owner as it grows (see [`SegmentCache::growing`]); `None`
    /// once it is here whole.
    pub fn growing(&self, name: &str, wait: Duration) -> Option<tokio::sync::watch::Receiver<Growth>> {
        if self.cache.get(&self.key, name).is_some() {
            return None;
        }
        Some(self.cache.growing(&self.key, name, self.owner.clone(), wait))
    }

    /// Starts fetching `name` from the owner unless it is cached or already coming (LL-HLS: the part a player
    /// will ask for next, fetched while the playlist that lists it travels to the player).
    pub fn prefetch(&self, name: &str) {
        if self.cache.get(&self.key, name).is_none() {
            tokio::spawn(self.transfer(name));
        }
    }

    /// The transfer of `name` under way, or a new one: from the owner, else from the other nodes exporting the
    /// stream (this node's view of the owner may be a hand-over behind, and a new owner lists files of the
    /// previous one).
    fn transfer(&self, name: &str) -> Transfer {
        let mut sources = vec![self.owner.clone()];
        let owner = self.owner.get_id();
        sources
            .extend(super::remote_members(&super::stream_group(&self.key)).into_iter().filter(|a| a.get_id() != owner));
        self.cache.transfer(&self.key, name, sources)
    }
}

impl RemoteHls for OwnerHls {
    fn playlist(&self, wait: Duration) -> PortFuture<'_, Option<Bytes>> {
        Box::pin(OwnerHls::playlist(self, wait))
    }

    fn segment<'a>(&'a self, name: &'a str) -> PortFuture<'a, Option<Bytes>> {
        Box::pin(OwnerHls::segment(self, name))
    }

    fn prefetch(&self, name: &str) {
        OwnerHls::prefetch(self, name);
    }

    fn growing(&self, name: &str, wait: Duration) -> Option<tokio::sync::watch::Receiver<Growth>> {
        OwnerHls::growing(self, name, wait)
    }
}

/// A stream no node owns right now, but one did moments ago (it died, or its publisher is reconnecting
/// elsewhere): its last playlist, without `EXT-X-ENDLIST`, so players wait instead of failing; segments from this
/// node's cache.
pub struct StaleHls {
    key: StreamKey,
    playlist: Bytes,
    cache: Arc<SegmentCache>,
}

impl StaleHls {
    /// The last `playlist` of `key`; segments from `cache`.
    pub fn new(key: StreamKey, playlist: Bytes, cache: Arc<SegmentCache>) -> StaleHls {
        StaleHls { key, playlist, cache }
    }
}

impl RemoteHls for StaleHls {
    fn playlist(&self, _wait: Duration) -> PortFuture<'_, Option<Bytes>> {
        let p = self.playlist.clone();
        Box::pin(async move { Some(p) })
    }

    fn segment<'a>(&'a self, name: &'a str) -> PortFuture<'a, Option<Bytes>> {
        let s = self.cache.get(&self.key, name);
        Box::pin(async move { s })
    }
}

/// Fetches a segment from its owner, part by part.
async fn fetch(owner: &ActorRef<RemoteMsg>, key: &StreamKey, name: &str) -> Option<Bytes> {
    let request = |offset| Request::Segment { name: name.to_string(), offset, max: SEGMENT_PART };
    let got = super::fetch_in_parts(owner, SEGMENT_TIMEOUT, MAX_SEGMENT, request).await;
    if got.is_none() {
        debug!(stream = %key, segment = name, "no segment from the owner (none by that name, no answer, or unusable)");
    }
    got
}

#[cfg(test)]
mod tests {
    use super::*;
    use ractor::{Actor, ActorProcessingErr};
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// A node that answers segment requests slowly and counts them: with the segment when it `has` it, else
    /// with none (any name).
    struct SlowOwner {
        calls: Arc<AtomicUsize>,
        has: bool,
    }

    impl Actor for SlowOwner {
        type Msg = RemoteMsg;
        type State = ();
        type Arguments = ();

        async fn pre_start(&self, _: ActorRef<RemoteMsg>, _: ()) -> Result<(), ActorProcessingErr> {
            Ok(())
        }

        async fn handle(&self, _: ActorRef<RemoteMsg>, msg: RemoteMsg, _: &mut ()) -> Result<(), ActorProcessingErr> {
            if let RemoteMsg::Call(bytes, reply) = msg {
                if let Ok(Request::Segment { .. }) = Request::decode(bytes) {
                    if !self.has {
                        let _ = reply.send(Response::Segment(None).encode());
                        return Ok(());
                    }
                    self.calls.fetch_add(1, Ordering::Relaxed);
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    let seg = Bytes::from_static(b"segment bytes");
                    let _ = reply.send(Response::Segment(Some((seg.len() as u32, seg))).encode());
                }
            }
            Ok(())
        }
    }

    #[tokio::test]
    async fn concurrent_requests_for_one_segment_share_one_transfer() {
        let calls = Arc::new(AtomicUsize::new(0));
        let (owner, _) = Actor::spawn(None, SlowOwner { calls: calls.clone(), has: true }, ()).await.unwrap();
        let cache = Arc::new(SegmentCache::default());
        let key = StreamKey::parse("live/a").unwrap();
        let hls = Arc::new(OwnerHls::new(key.clone(), owner.clone(), cache.clone(), None));
        let mut tasks = tokio::task::JoinSet::new();
        for _ in 0..20 {
            let hls = hls.clone();
            tasks.spawn(async move { hls.segment("a-1.ts").await });
        }
        while let Some(r) = tasks.join_next().await {
            assert_eq!(r.unwrap().as_deref(), Some(&b"segment bytes"[..]));
        }
        assert_eq!(calls.load(Ordering::Relaxed), 1, "one transfer for twenty requests");
        assert_eq!(hls.segment("a-1.ts").await.as_deref(), Some(&b"segment bytes"[..]), "then from the cache");
        assert_eq!(calls.load(Ordering::Relaxed), 1);
        assert!(cache.inflight.lock().unwrap().is_empty(), "nothing left in flight");
        owner.stop(None);
    }

    #[tokio::test]
    async fn a_copied_window_comes_from_whichever_node_has_it_and_is_served_after_they_are_gone() {
        let calls = Arc::new(AtomicUsize::new(0));
        let (empty, _) = Actor::spawn(None, SlowOwner { calls: Arc::default(), has: false }, ()).await.unwrap();
        let (owner, _) = Actor::spawn(None, SlowOwner { calls: calls.clone(), has: true }, ()).await.unwrap();
        let cache = Arc::new(SegmentCache::default());
        let key = StreamKey::parse("live/a").unwrap();
        cache.copy(&key, vec!["a-1.m4s".into(), "a-2.m4s".into()], vec![empty.clone(), owner.clone()]);
        tokio::time::sleep(Duration::from_millis(20)).await;
        // A player asking while the copy runs joins its transfer, even with no node left to ask.
        assert_eq!(cache.get_or_fetch(&key, "a-1.m4s", vec![]).await.as_deref(), Some(&b"segment bytes"[..]));
        for _ in 0..100 {
            if cache.get(&key, "a-2.m4s").is_some() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(calls.load(Ordering::Relaxed), 2, "one transfer per file");
        empty.stop(None);
        owner.stop(None);
        assert_eq!(cache.get_or_fetch(&key, "a-2.m4s", vec![]).await.as_deref(), Some(&b"segment bytes"[..]));
        assert_eq!(cache.get_or_fetch(&key, "a-3.m4s", vec![]).await, None, "nothing else, and no one to ask");
        assert!(cache.inflight.lock().unwrap().is_empty(), "nothing left in flight");
    }

    #[test]
    fn the_cache_drops_the_oldest_media_first_and_init_segments_last() {
        let cache = SegmentCache::default();
        let key = StreamKey::parse("live/a").unwrap();
        let bytes = Bytes::from_static(b"x");
        cache.put(&key, "init-1.mp4", bytes.clone());
        for i in 0..CACHE_ENTRIES {
            cache.put(&key, &format!("a-{i}.m4s"), bytes.clone());
        }
        // One past the limit: the oldest media file went, the older init stayed.
        assert!(cache.get(&key, "init-1.mp4").is_some());
        assert!(cache.get(&key, "a-0.m4s").is_none());
        assert!(cache.get(&key, "a-1.m4s").is_some());
        // A second put of a cached name changes nothing.
        cache.put(&key, "a-1.m4s", bytes.clone());
        assert_eq!(cache.inner.lock().unwrap().0.len(), CACHE_ENTRIES);
        // Only inits left to drop: the oldest of them goes.
        let inits = SegmentCache::default();
        for i in 0..=CACHE_ENTRIES {
            inits.put(&key, &format!("init-{i}.mp4"), bytes.clone());
        }
        assert!(inits.get(&key, "init-0.mp4").is_none());
        assert!(inits.get(&key, "init-1.mp4").is_some());
        // The byte bound drops media to make room, and keeps the count of bytes true.
        let big = SegmentCache::default();
        big.put(&key, "init-1.mp4", Bytes::from(vec![0; 1 << 20]));
        for i in 0..3 {
            big.put(&key, &format!("a-{i}.m4s"), Bytes::from(vec![0; CACHE_BYTES / 2]));
        }
        let g = big.inner.lock().unwrap();
        let names: Vec<&str> = g.0.iter().map(|(_, n, _)| n.as_str()).collect();
        assert_eq!(names, ["init-1.mp4", "a-2.m4s"]);
        assert_eq!(g.1, (1 << 20) + CACHE_BYTES / 2);
    }
}
