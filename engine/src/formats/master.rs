//! The HLS master (multivariant) playlist, as pure rendering: a live ladder's ([`crate::transcode`]) and a
//! recording's with several renditions ([`crate::storage`]) both come out of [`render`].

use std::fmt::Write;

/// One `EXT-X-STREAM-INF` entry.
#[derive(Debug, Clone, PartialEq)]
pub struct Variant {
    /// The media playlist's URI, relative to the master playlist.
    pub uri: String,
    /// Peak bits per second (video + audio).
    pub bandwidth: u64,
    /// Average bits per second (video + audio).
    pub average_bandwidth: u64,
    /// Picture width.
    pub width: u32,
    /// Picture height.
    pub height: u32,
    /// Frames per second.
    pub frame_rate: f64,
    /// RFC 6381 codecs, e.g. `avc1.4d401e,mp4a.40.2`.
    pub codecs: String,
}

/// Renders a master playlist listing `variants` in the given order (the first is where players start). An
/// attribute not known (a size or frame rate of 0, no codecs) is left out rather than written wrong.
pub fn render(variants: &[Variant]) -> String {
    let mut out = String::from("#EXTM3U\n#EXT-X-VERSION:3\n#EXT-X-INDEPENDENT-SEGMENTS\n");
    for v in variants {
        let _ = write!(
            out,
            "#EXT-X-STREAM-INF:BANDWIDTH={},AVERAGE-BANDWIDTH={}",
            v.bandwidth.max(1),
            v.average_bandwidth.max(1)
        );
        if v.width > 0 && v.height > 0 {
            let _ = write!(out, ",RESOLUTION={}x{}", v.width, v.height);
        }
        if v.frame_rate > 0.0 {
            let _ = write!(out, ",FRAME-RATE={:.3}", v.frame_rate);
        }
        if !v.codecs.is_empty() {
            let _ = write!(out, ",CODECS=\"{}\"", v.codecs);
        }
        let _ = write!(out, "\n{}\n", v.uri);
    }
    out
}
