//! Live streams, the core layer: the stream actor, its segmenter, the registry (the one lookup API) and player
//! fan-out. It depends on [`crate::formats`] and on nothing above it: what it needs from the cluster and from the
//! ABR ladder it asks through the small traits in [`ports`], which [`crate::cluster`] and [`crate::transcode`]
//! implement and [`crate::node`] wires in.
//!
//! - [`registry`]: [`Streams`], the only way code finds or claims a stream; owns and supervises stream actors.
//! - [`actor`]: the stream actor: metadata, sequence headers, GOP cache, timeline, subscribers, its segmenter.
//! - [`segmenter`]: one per owned stream: cuts MPEG-TS segments on keyframes and publishes its playlist and
//!   segments as an immutable [`segmenter::HlsView`] that readers take without a message to it.
//! - [`fanout`]: what a player reads: a start snapshot plus a bounded shared ring, with skip-to-keyframe and
//!   per-player timestamp rebasing.
//! - [`ports`]: the traits the core calls out through: [`ports::Ownership`] (cluster-wide claims, relays and HLS
//!   of streams owned elsewhere) and [`ports::EncoderHost`] (a ladder hosted for another node's stream).

pub mod actor;
pub mod cmaf_segmenter;
pub mod fanout;
pub mod hls_viewers;
pub mod ports;
pub mod queue;
pub mod registry;
pub mod segmenter;

pub use crate::formats::StreamKey;
pub use cmaf_segmenter::{GrowingPart, Growth};
pub use fanout::{
    FanoutReceiver, FanoutSender, PlayerFeed, PlayerItem, Protocol, SharedSlot, StreamEvent, Subscription, ViewerCounts,
};
pub use registry::{HlsSource, PublishError, Publisher, StreamHandle, StreamInfo, Streams};
