//! The codec work of one ladder (blocking; runs on the encoder's own OS thread, never on the tokio reactor):
//! decode the source once (FFmpeg's H.264 decoder, fed AVCC samples with the `AVCDecoderConfigurationRecord` as
//! extradata), scale per rung (swscale, bilinear) and encode each rung with libx264.
//!
//! **Alignment.** A rung picture is forced to be an IDR exactly where the source has a keyframe (the source
//! frame's presentation time is remembered when its keyframe packet goes in), and x264 inserts none of its own
//! (scene-cut detection off, no keyframe interval of its own). So every rung has keyframes at the same
//! presentation times as the source, and HLS cuts segment N of every variant at the same instant.
//!
//! **Timestamps** are milliseconds on the source's timeline: a rung picture carries its source picture's PTS.
//! Rungs have no B-frames, so their DTS equals their PTS and FLV composition offsets are zero.
//!
//! **Corrupt input.** FFmpeg's H.264 decoder rejects some damage (an unreadable slice header: `AVERROR_INVALIDDATA`
//! from `send_packet`) but conceals the rest: garbage inside a slice decodes to a picture patched up from its
//! neighbours, flagged in `decode_error_flags`. Both are a [`PipelineError`]: a concealed picture is never encoded
//! into the rungs, the encoder restarts under supervision and starts again from a keyframe. A picture whose only
//! flaw is a missing reference (a source starting on a non-IDR keyframe) is not corrupt.
//!
//! Codec threads are set explicitly on the decoder and every encoder (libavcodec defaults to one).

//!
//! The FFmpeg side lives in `pipeline/ffmpeg.rs`, built with the `transcode` cargo feature (on by default). Without
//! it the engine builds and tests without FFmpeg, [`Pipeline::new`] fails with a clear error, and the
//! configuration refuses a `transcode.mode` other than `off`.

#[cfg(feature = "transcode")]
mod ffmpeg;
#[cfg(feature = "transcode")]
pub use ffmpeg::{init, Pipeline};
#[cfg(not(feature = "transcode"))]
pub use unavailable::{init, Pipeline};

/// One rung's encoder settings.
#[derive(Debug, Clone, PartialEq)]
pub struct RungSpec {
    /// Output width (even).
    pub width: u32,
    /// Output height (even).
    pub height: u32,
    /// Target bitrate, kbit/s.
    pub bitrate_kbps: u32,
    /// VBV maxrate, kbit/s.
    pub maxrate_kbps: u32,
    /// VBV buffer, kbit.
    pub bufsize_kbits: u32,
    /// x264 preset.
    pub preset: String,
    /// H.264 profile.
    pub profile: String,
}

/// One encoded rung picture.
#[derive(Debug, Clone)]
pub struct Encoded {
    /// Index of the rung (order of the specs given to [`Pipeline::new`]).
    pub rung: usize,
    /// Presentation (= decode) time, ms on the source's timeline.
    pub pts: i64,
    /// An IDR picture.
    pub keyframe: bool,
    /// AVCC NAL units (4-byte lengths), parameter sets excluded.
    pub avcc: Vec<u8>,
}

/// A decoding, scaling or encoding failure; the encoder actor restarts on it.
#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    /// FFmpeg refused something.
    #[error("{what}: {message}")]
    Ffmpeg {
        /// What was being done.
        what: &'static str,
        /// FFmpeg's error message.
        message: String,
    },
    /// The decoder concealed damage in a source picture (its `decode_error_flags`).
    #[error("corrupt source picture at {pts} ms (decoder error flags {flags:#x})")]
    Corrupt {
        /// The picture's presentation time, ms.
        pts: i64,
        /// FFmpeg's `FF_DECODE_ERROR_*` bits.
        flags: i32,
    },
    /// The source's pictures changed size or format mid-stream (a new configuration without a new header).
    #[error("{0}")]
    SourceChanged(String),
    /// Anything else (missing codec, out of memory, a strom built without the `transcode` feature).
    #[error("{0}")]
    Other(String),
}

/// The pipeline of a strom built without the `transcode` feature: it cannot be opened.
#[cfg(not(feature = "transcode"))]
mod unavailable {
    use super::{Encoded, PipelineError, RungSpec};

    /// Does nothing (there is no FFmpeg to set up).
    pub fn init() {}

    /// Never opened: see [`Pipeline::new`].
    pub struct Pipeline(());

    impl Pipeline {
        /// Fails: this strom was built without FFmpeg.
        pub fn new(_: &[u8], _: &[RungSpec], _: f64, _: usize) -> Result<Pipeline, PipelineError> {
            Err(PipelineError::Other("this strom was built without the `transcode` feature (no FFmpeg)".into()))
        }

        /// No rungs.
        pub fn config_record(&self, _: usize) -> Option<&[u8]> {
            None
        }

        /// No keyframes to force.
        pub fn force_keyframes(&mut self, _: impl IntoIterator<Item = i64>) {}

        /// No window.
        pub fn set_window(&mut self, _: i64, _: i64) {}

        /// Nothing to pause.
        pub fn pause(&mut self, _: usize) {}

        /// Nothing to resume.
        pub fn resume(&mut self, _: usize) {}

        /// Nothing to decode.
        pub fn push(&mut self, _: &[u8], _: i64, _: i64, _: bool, _: &mut Vec<Encoded>) -> Result<(), PipelineError> {
            Ok(())
        }

        /// Nothing to flush.
        pub fn finish(&mut self, _: &mut Vec<Encoded>) -> Result<(), PipelineError> {
            Ok(())
        }
    }
}
