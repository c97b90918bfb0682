//! The traits the core calls out through. The core (streams, fan-out, segmenter) knows nothing of ractor_cluster
//! or FFmpeg: [`crate::cluster`] implements [`Ownership`], [`RelaySource`] and [`RemoteHls`];
//! [`crate::transcode`] provides the [`EncoderHost`]; [`crate::storage`] the [`DvrStore`]; [`crate::node`] wires them together. A node without
//! clustering has no [`Ownership`] at all, and everything stays local.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use ractor::ActorCell;

use super::fanout::ViewerCounts;
use super::registry::{Publisher, StreamHandle};
use super::segmenter::Blocking;
use crate::formats::StreamKey;

/// A boxed future, as the traits here return (they are used as trait objects).
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Cluster-wide ownership of stream keys, as the registry ([`super::Streams`]) needs it.
pub trait Ownership: Send + Sync + 'static {
    /// Another node holding a live publisher of `key`, if any (a publish here is then refused).
    fn live_elsewhere<'a>(&'a self, key: &'a StreamKey) -> BoxFuture<'a, Option<String>>;

    /// Called right after this node claimed `key` (`claim`: its epoch and Unix ms): waits until a racing claim on
    /// another node would be visible, and returns the node whose claim wins, if any (this node's claim then ends).
    fn older_claim<'a>(&'a self, key: &'a StreamKey, claim: Claim) -> BoxFuture<'a, Option<String>>;

    /// A claim of `key` by this node, made now: its epoch, and where the HLS playlist of `key` stood when another
    /// node had the stream moments ago (within `grace`): the first media sequence number and discontinuity
    /// sequence, so a new owner continues the same playlist (under numbers no other owner uses).
    fn takeover(&self, key: &StreamKey, grace: Duration) -> Takeover;

    /// Makes a stream owned here known to the cluster (claims, relays and HLS for other nodes). The actor
    /// returned is stopped with the stream.
    fn export(&self, handle: StreamHandle) -> BoxFuture<'_, Option<ActorCell>>;

    /// The live owner of `key` on another node, to relay the stream from.
    fn relay_source<'a>(&'a self, key: &'a StreamKey) -> BoxFuture<'a, Option<Box<dyn RelaySource>>>;

    /// The HLS of `key` when another node owns it, or owned it within `grace` (its last playlist, without
    /// `EXT-X-ENDLIST`, so players wait for the stream to come back).
    fn remote_hls<'a>(&'a self, key: &'a StreamKey, grace: Duration) -> BoxFuture<'a, Option<Box<dyn RemoteHls>>>;
}

/// A claim of a key by this node: what ranks it against other nodes' claims (see [`crate::cluster::claims`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Claim {
    /// One more than the highest epoch this node had seen for the key (0 without clustering).
    pub epoch: u64,
    /// When it was made (Unix ms).
    pub since_ms: u64,
}

/// What [`Ownership::takeover`] answers.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Takeover {
    /// The new claim's epoch.
    pub epoch: u64,
    /// Continue another owner's playlist.
    pub resume: Option<Resume>,
}

/// Where a new owner continues the HLS playlist another node had for the stream.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Resume {
    /// The first media sequence number here (above every number another owner used).
    pub next_msn: u64,
    /// The discontinuity number of the previous owner's newest segment: the first segment here, which starts
    /// with a discontinuity, gets the next one.
    pub discontinuity: u64,
    /// The previous owner's segments, listed first here (without their bytes; see
    /// [`crate::formats::playlist::resumable_window`]); empty when they cannot be continued exactly.
    pub window: Vec<crate::formats::playlist::ListedSegment>,
    /// The stream time (ms) the previous owner had reached (see
    /// [`crate::stream::segmenter::HlsView::timeline_ms`]): the stream's timeline continues after it, so players
    /// see timestamps go on across the hand-over instead of starting over; `None` from a node of an earlier
    /// release.
    pub timeline_ms: Option<u32>,
}

/// A live stream on another node that this node can relay.
pub trait RelaySource: Send + Sync + 'static {
    /// The owner's node name.
    fn node(&self) -> &str;

    /// Starts relaying into `publisher` (a local relay stream); `viewers` are the relay stream's players. The
    /// actor returned feeds it and is stopped with the relay stream. When the owner goes, the relay waits up to
    /// `grace` (the publisher reconnecting to another node) for the stream's next owner and follows it.
    fn start(
        self: Box<Self>,
        publisher: Publisher,
        viewers: Arc<ViewerCounts>,
        grace: Duration,
    ) -> BoxFuture<'static, Result<ActorCell, String>>;
}

/// The HLS of a stream another node owns, served from this node.
pub trait RemoteHls: Send + Sync {
    /// The media playlist; waits up to `wait` for a first segment.
    fn playlist(&self, wait: Duration) -> BoxFuture<'_, Option<Bytes>>;

    /// One segment by file name.
    fn segment<'a>(&'a self, name: &'a str) -> BoxFuture<'a, Option<Bytes>>;

    /// A blocking playlist reload (LL-HLS `_HLS_msn`, `_HLS_part`, `_HLS_skip`; see
    /// [`super::segmenter::HlsReader::playlist_blocking`]: `quiet` as there). Without parts: the playlist as it is.
    fn playlist_blocking(
        &self,
        _msn: u64,
        _part: Option<u64>,
        _skip: bool,
        wait: Duration,
        _quiet: Duration,
    ) -> BoxFuture<'_, Result<Bytes, Blocking>> {
        Box::pin(async move { self.playlist(wait).await.ok_or(Blocking::NotFound) })
    }

    /// Starts bringing file `name` to this node before a player asks for it (LL-HLS: the newest part). Nothing by
    /// default.
    fn prefetch(&self, _name: &str) {}

    /// The playlist as this node last learnt it, without waiting and without counting a viewer (rendition
    /// reports of other renditions); `None` if there is none here yet.
    fn current(&self) -> Option<Bytes> {
        None
    }

    /// The preload-hinted part `name` while the owner produces it, followed from this node (each chunk due within
    /// `wait` of the one before). `None` by default: the part is served once complete.
    fn growing(
        &self,
        _name: &str,
        _wait: Duration,
    ) -> Option<tokio::sync::watch::Receiver<super::cmaf_segmenter::Growth>> {
        None
    }

    /// A file by name; a preload-hinted part is waited for up to `wait`. Without parts: [`RemoteHls::segment`].
    fn file<'a>(&'a self, name: &'a str, _wait: Duration) -> BoxFuture<'a, Option<Bytes>> {
        self.segment(name)
    }
}

/// Where the segments of a DVR window that the segmenter no longer holds come from: the stream's recording
/// ([`crate::storage`] provides it). The stream's owner asks it; other nodes fetch from the owner as usual.
pub trait DvrStore: Send + Sync + 'static {
    /// The file `name` (a live segment or init segment name) of stream `key`, if its recording has it.
    fn file<'a>(&'a self, key: &'a StreamKey, name: &'a str) -> BoxFuture<'a, Option<Bytes>>;
}

/// Starts the ladder of stream `key` (owned by node `owner`) on this node; false if it cannot take it. The
/// cluster calls it when another node places a ladder here; [`crate::transcode`] provides it.
pub type EncoderHost = Arc<dyn Fn(StreamKey, String) -> bool + Send + Sync>;
