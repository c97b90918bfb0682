//! Formats, the bottom layer: what bytes mean, with no I/O, no actors and no knowledge of streams or nodes. Every
//! parser here is pure and fuzzed.
//!
//! - [`frame`]: [`MediaFrame`], the unit every actor and player queue carries: parsed once at ingest (codec, kind,
//!   keyframe, times, payload slice), its FLV tag body in shared `Bytes`, its RTMP rendering made once and shared.
//! - [`flv`]: FLV writing (HTTP-FLV file and tag headers), `onMetaData` encoding, tag parse errors.
//! - [`avc`]: H.264 decoder configuration, SPS (resolution, profile/level), AVCC → Annex B.
//! - [`aac`]: AAC AudioSpecificConfig and ADTS headers.
//! - [`rtmp_chunk`]: media chunked for RTMP players without a copy per player: each frame is chunked once per chunk
//!   size, and a player adds only its own 12-byte message header.
//! - [`ts`]: the MPEG-TS muxer.
//! - [`playlist`]: the HLS segment window and media playlist rendering: TARGETDURATION, MEDIA-SEQUENCE,
//!   DISCONTINUITY(-SEQUENCE), PROGRAM-DATE-TIME, ENDLIST.
//! - [`master`]: the HLS master (multivariant) playlist.
//! - [`key`]: [`StreamKey`], a validated `app/name`.
//! - [`token`]: signed play URLs (HMAC-SHA256 over a stream's path prefix and an expiry).

pub mod aac;
pub mod avc;
pub mod cmaf;
pub mod flv;
pub mod fmp4;
pub mod frame;
pub mod jwt;
pub mod key;
pub mod master;
pub mod playlist;
pub mod rtmp_chunk;
pub mod token;
pub mod ts;

pub use frame::{Codec, MediaFrame, MediaKind};
pub use key::StreamKey;
