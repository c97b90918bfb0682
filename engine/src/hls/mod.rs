//! HLS: MPEG-TS segments cut on keyframes, and live media playlists, all in memory.
//!
//! - [`ts`]: the MPEG-TS muxer (pure).
//! - [`playlist`]: the segment window and playlist rendering (pure): TARGETDURATION, MEDIA-SEQUENCE,
//!   DISCONTINUITY(-SEQUENCE), PROGRAM-DATE-TIME, ENDLIST.
//! - [`segmenter`]: the segmenter actor (one per stream) that turns frames into segments.

pub mod playlist;
pub mod segmenter;
pub mod ts;
