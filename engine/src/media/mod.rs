//! The media model: frames as they move through strom, and the pure (I/O-free) codec and container helpers.
//!
//! - [`frame`]: [`MediaFrame`], the unit every actor and player queue carries (an FLV tag body in shared `Bytes`).
//! - [`flv`]: FLV tag parsing and writing (HTTP-FLV output, RTMP payloads), `onMetaData` encoding.
//! - [`avc`]: H.264 decoder configuration, SPS (resolution, profile/level), AVCC → Annex B.
//! - [`aac`]: AAC AudioSpecificConfig and ADTS headers.

pub mod aac;
pub mod avc;
pub mod flv;
pub mod frame;

pub use frame::{MediaFrame, MediaKind};
