//! The media model: frames as they move through strom, and the pure (I/O-free) codec and container helpers.
//!
//! - [`frame`]: [`MediaFrame`], the unit every actor and player queue carries: parsed once at ingest (codec, kind,
//!   keyframe, times, payload slice), its FLV tag body in shared `Bytes`, its RTMP rendering made once and shared.
//! - [`flv`]: FLV writing (HTTP-FLV file and tag headers), `onMetaData` encoding, tag parse errors.
//! - [`avc`]: H.264 decoder configuration, SPS (resolution, profile/level), AVCC → Annex B.
//! - [`aac`]: AAC AudioSpecificConfig and ADTS headers.

pub mod aac;
pub mod avc;
pub mod flv;
pub mod frame;

pub use frame::{Codec, MediaFrame, MediaKind};
