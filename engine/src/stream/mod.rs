//! Live streams: the stream actor, the registry (the one lookup API), and player fan-out.
//!
//! - [`key`]: [`StreamKey`], a validated `app/name`.
//! - [`registry`]: [`Streams`], the only way code finds or claims a stream; owns and supervises stream actors.
//! - [`actor`]: the stream actor: metadata, sequence headers, GOP cache, timeline, subscribers, its segmenter.
//! - [`fanout`]: what a player reads: a start snapshot plus a bounded shared ring, with skip-to-keyframe and
//!   per-player timestamp rebasing.

pub mod actor;
pub mod fanout;
pub mod key;
pub mod registry;

pub use fanout::{
    FanoutReceiver, FanoutSender, PlayerFeed, PlayerItem, Protocol, StreamEvent, Subscription, ViewerCounts,
};
pub use key::StreamKey;
pub use registry::{HlsSource, PublishError, Publisher, StreamHandle, StreamInfo, Streams};
