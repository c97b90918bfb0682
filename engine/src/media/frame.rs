//! [`MediaFrame`]: one audio or video message of a live stream.
//!
//! A frame carries its FLV tag body (`data`) exactly as RTMP delivers it, so RTMP and HTTP-FLV players receive the
//! very same bytes with only a small per-player header in front. `rtmp_body` is the same payload already split
//! into RTMP chunks (computed once per frame by the publisher's connection), so an RTMP player costs a header and a
//! reference count, never a copy.

use bytes::Bytes;

/// What a frame carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MediaKind {
    /// An FLV video tag body (H.264 in this version).
    Video,
    /// An FLV audio tag body (AAC in this version; other codecs pass through RTMP/FLV).
    Audio,
}

/// One audio or video message on the stream's timeline.
#[derive(Debug, Clone)]
pub struct MediaFrame {
    /// Audio or video.
    pub kind: MediaKind,
    /// Decode timestamp in milliseconds on the stream's own timeline (continuous across publisher reconnects).
    pub timestamp: u32,
    /// A video keyframe (IDR): a player may start here.
    pub keyframe: bool,
    /// A codec configuration record (AVC sequence header or AAC AudioSpecificConfig), not a sample.
    pub header: bool,
    /// The FLV tag body (codec header byte(s) + payload).
    pub data: Bytes,
    /// `data` pre-split into RTMP chunks for the chunk stream of this kind (see [`crate::rtmp::chunk_writer`]).
    pub rtmp_body: Bytes,
}

impl MediaFrame {
    /// Builds a frame from an FLV tag body, classifying it (keyframe, sequence header) from its first bytes.
    /// `rtmp_body` starts equal to `data`; [`crate::rtmp::chunk_writer::prepare`] fills it for RTMP output.
    pub fn from_flv_body(kind: MediaKind, timestamp: u32, data: Bytes) -> MediaFrame {
        let (keyframe, header) = match kind {
            MediaKind::Video => {
                let b0 = data.first().copied().unwrap_or(0);
                let frame_type = b0 >> 4;
                let codec = b0 & 0x0f;
                let is_seq = codec == 7 && data.get(1).copied() == Some(0);
                (frame_type == 1 && !is_seq, is_seq)
            }
            MediaKind::Audio => {
                let b0 = data.first().copied().unwrap_or(0);
                let is_aac = b0 >> 4 == 10;
                (false, is_aac && data.get(1).copied() == Some(0))
            }
        };
        MediaFrame { kind, timestamp, keyframe, header, rtmp_body: data.clone(), data }
    }

    /// True for a video frame carrying AVC (H.264) data.
    pub fn is_avc(&self) -> bool {
        self.kind == MediaKind::Video && self.data.first().map(|b| b & 0x0f) == Some(7)
    }

    /// True for an audio frame carrying AAC data.
    pub fn is_aac(&self) -> bool {
        self.kind == MediaKind::Audio && self.data.first().map(|b| b >> 4) == Some(10)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classifies_video() {
        let key = MediaFrame::from_flv_body(MediaKind::Video, 0, Bytes::from_static(&[0x17, 1, 0, 0, 0, 9]));
        assert!(key.keyframe && !key.header && key.is_avc());
        let seq = MediaFrame::from_flv_body(MediaKind::Video, 0, Bytes::from_static(&[0x17, 0, 0, 0, 0, 1]));
        assert!(!seq.keyframe && seq.header);
        let inter = MediaFrame::from_flv_body(MediaKind::Video, 0, Bytes::from_static(&[0x27, 1, 0, 0, 0]));
        assert!(!inter.keyframe && !inter.header);
        let empty = MediaFrame::from_flv_body(MediaKind::Video, 0, Bytes::new());
        assert!(!empty.keyframe && !empty.header);
    }

    #[test]
    fn classifies_audio() {
        let asc = MediaFrame::from_flv_body(MediaKind::Audio, 0, Bytes::from_static(&[0xaf, 0, 0x12, 0x10]));
        assert!(asc.header && asc.is_aac());
        let raw = MediaFrame::from_flv_body(MediaKind::Audio, 0, Bytes::from_static(&[0xaf, 1, 0x21]));
        assert!(!raw.header);
    }
}
