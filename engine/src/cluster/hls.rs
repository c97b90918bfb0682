//! HLS from any node: a node that does not own a stream serves the owner's playlist and segments, byte for byte.
//!
//! Playlists are fetched per request (a cluster call is ~0.1 ms; every node then shows exactly the owner's
//! window, sequence numbers and discontinuities). Segments are immutable: each is fetched once per node, in parts
//! of [`super::export::SEGMENT_PART`] (far below the cluster frame limit), and kept in a [`SegmentCache`] bounded
//! in entries and bytes, so a thousand HLS players on one node cost one transfer per segment.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use ractor::ActorRef;
use tracing::warn;

use super::export::SEGMENT_PART;
use super::wire::{Request, Response};
use super::{call, RemoteMsg};
use crate::stream::StreamKey;

/// Longest a whole segment transfer may take.
const SEGMENT_TIMEOUT: Duration = Duration::from_secs(10);
/// Segments kept per node.
const CACHE_ENTRIES: usize = 256;
/// Bytes kept per node.
const CACHE_BYTES: usize = 256 << 20;
/// Largest segment accepted from an owner.
const MAX_SEGMENT: u32 = 256 << 20;

/// Recently fetched remote segments (see the module docs).
#[derive(Default)]
pub struct SegmentCache {
    inner: Mutex<(VecDeque<Cached>, usize)>,
}

/// Stream, segment name, bytes.
type Cached = (StreamKey, String, Bytes);

impl SegmentCache {
    /// A cached segment.
    pub fn get(&self, key: &StreamKey, name: &str) -> Option<Bytes> {
        let g = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        g.0.iter().find(|(k, n, _)| k == key && n == name).map(|(_, _, b)| b.clone())
    }

    fn put(&self, key: &StreamKey, name: &str, data: Bytes) {
        let mut g = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        if g.0.iter().any(|(k, n, _)| k == key && n == name) {
            return;
        }
        g.1 += data.len();
        g.0.push_back((key.clone(), name.to_string(), data));
        while g.0.len() > CACHE_ENTRIES || g.1 > CACHE_BYTES {
            match g.0.pop_front() {
                Some((_, _, b)) => g.1 -= b.len(),
                None => break,
            }
        }
    }
}

/// A stream's HLS at its owner.
pub struct RemoteHls {
    key: StreamKey,
    owner: ActorRef<RemoteMsg>,
    cache: Arc<SegmentCache>,
}

impl RemoteHls {
    /// HLS of `key` from `owner`'s export actor.
    pub fn new(key: StreamKey, owner: ActorRef<RemoteMsg>, cache: Arc<SegmentCache>) -> RemoteHls {
        RemoteHls { key, owner, cache }
    }

    /// The owner's media playlist.
    pub async fn playlist(&self, wait: Duration) -> Option<Bytes> {
        let req = Request::Playlist { wait_ms: wait.as_millis().min(u32::MAX as u128) as u32 };
        match call(&self.owner, &req, wait + Duration::from_secs(2)).await? {
            Response::Playlist(p) => p,
            _ => None,
        }
    }

    /// One segment, from the cache or the owner.
    pub async fn segment(&self, name: &str) -> Option<Bytes> {
        if let Some(b) = self.cache.get(&self.key, name) {
            return Some(b);
        }
        let data = tokio::time::timeout(SEGMENT_TIMEOUT, self.fetch(name)).await.ok()??;
        self.cache.put(&self.key, name, data.clone());
        Some(data)
    }

    async fn fetch(&self, name: &str) -> Option<Bytes> {
        let mut out = BytesMut::new();
        loop {
            let req = Request::Segment { name: name.to_string(), offset: out.len() as u32, max: SEGMENT_PART };
            let (total, part) = match call(&self.owner, &req, SEGMENT_TIMEOUT).await? {
                Response::Segment(s) => s?,
                _ => return None,
            };
            if total > MAX_SEGMENT || part.is_empty() && (out.len() as u32) < total {
                warn!(stream = %self.key, segment = name, total, "owner sent an unusable segment");
                return None;
            }
            if out.is_empty() && part.len() as u32 == total {
                return Some(part); // one part: no copy
            }
            out.extend_from_slice(&part);
            if out.len() as u32 >= total {
                return Some(out.freeze());
            }
        }
    }
}
