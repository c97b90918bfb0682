//! [`MediaFrame`]: one audio or video frame of a live stream, parsed once.
//!
//! A frame is parsed where it enters the node (RTMP ingest, a cluster relay, the ladder's encoder builds its own):
//! [`MediaFrame::parse`] reads the FLV tag header once, and what consumers need is in fields: kind, codec, keyframe,
//! codec configuration or samples, decode time and composition offset, and the codec payload as a slice of the
//! tag body ([`MediaFrame::payload`]). The fan-out, the segmenter, the encoder and the relay read those fields;
//! the tag header parser is private to this module, so nothing parses a frame twice, and a frame cannot be built
//! without being parsed.
//!
//! Protocol renderings are made lazily, once per frame, by the first consumer that needs them, and shared by
//! every clone of the frame: the FLV tag body is the frame's own bytes (HTTP-FLV and relays write it as it is);
//! the RTMP chunked body for the node's chunk size ([`MediaFrame::rtmp_chunked`], see
//! [`crate::formats::rtmp_chunk::body`]) is split by the first RTMP player that writes the frame and shared by the
//! others. A protocol nobody plays costs nothing.

use std::sync::{Arc, OnceLock};

use bytes::{BufMut, Bytes, BytesMut};

use super::flv::FlvError;

/// What a frame carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MediaKind {
    /// Video.
    Video,
    /// Audio.
    Audio,
}

/// The frame's codec, from its FLV tag header.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Codec {
    /// H.264 (FLV video codec id 7).
    Avc,
    /// AAC (FLV sound format 10).
    Aac,
    /// Any other FLV codec id (video) or sound format (audio): passed through RTMP and HTTP-FLV as it is.
    Other(u8),
}

/// Lazily made protocol renderings of one frame, shared by its clones.
#[derive(Debug, Default)]
struct Rendered {
    /// The RTMP chunked body and the chunk size it was split for.
    rtmp: OnceLock<(usize, Bytes)>,
}

/// One audio or video frame on the stream's timeline (see the module docs).
#[derive(Debug, Clone)]
pub struct MediaFrame {
    /// Audio or video.
    pub kind: MediaKind,
    /// The codec.
    pub codec: Codec,
    /// Decode timestamp in milliseconds on the stream's own timeline (continuous across publisher reconnects).
    pub timestamp: u32,
    /// Composition time offset in milliseconds (PTS − DTS; H.264 only, else 0).
    pub cts: i32,
    /// A video keyframe (IDR): a player may start here.
    pub keyframe: bool,
    /// A codec configuration record (AVC sequence header or AAC AudioSpecificConfig), not a sample.
    pub header: bool,
    /// Coded samples (H.264 NAL units, an AAC frame, or any other codec's data); false for configuration records
    /// and for H.264 end-of-sequence packets.
    pub samples: bool,
    /// The FLV tag body: codec header byte(s) and payload.
    body: Bytes,
    /// Where the codec payload starts in `body`.
    payload_at: u8,
    rendered: Arc<Rendered>,
}

impl MediaFrame {
    /// Parses an FLV audio or video tag body (an RTMP audio/video message) at `timestamp`. The body is kept as it
    /// is (zero-copy); the error names the field and byte offset of a truncated header.
    pub fn parse(kind: MediaKind, timestamp: u32, body: Bytes) -> Result<MediaFrame, FlvError> {
        let truncated = |field, offset, needed| FlvError::Truncated {
            what: match kind {
                MediaKind::Video => "video",
                MediaKind::Audio => "audio",
            },
            field,
            offset,
            needed,
            len: body.len(),
        };
        let first = *body.first().ok_or_else(|| truncated("codec header", 0, 1))?;
        let mut frame = MediaFrame {
            kind,
            codec: Codec::Other(0),
            timestamp,
            cts: 0,
            keyframe: false,
            header: false,
            samples: true,
            payload_at: 1,
            body: Bytes::new(),
            rendered: Arc::default(),
        };
        match kind {
            MediaKind::Video => {
                frame.keyframe = first >> 4 == 1;
                frame.codec = Codec::Other(first & 0x0f);
                if first & 0x0f == 7 {
                    if body.len() < 5 {
                        return Err(truncated("AVC packet type and composition time", 1, 4));
                    }
                    let raw = (u32::from(body[2]) << 16) | (u32::from(body[3]) << 8) | u32::from(body[4]);
                    frame.codec = Codec::Avc;
                    // Sign-extend the 24-bit composition time.
                    frame.cts = ((raw << 8) as i32) >> 8;
                    frame.header = body[1] == 0;
                    frame.samples = body[1] == 1;
                    frame.keyframe &= frame.samples;
                    frame.payload_at = 5;
                }
            }
            MediaKind::Audio => {
                frame.codec = Codec::Other(first >> 4);
                if first >> 4 == 10 {
                    let packet_type = *body.get(1).ok_or_else(|| truncated("AAC packet type", 1, 1))?;
                    frame.codec = Codec::Aac;
                    frame.header = packet_type == 0;
                    frame.samples = packet_type == 1;
                    frame.payload_at = 2;
                }
            }
        }
        frame.body = body;
        Ok(frame)
    }

    /// An H.264 frame made by strom itself (the ladder's encoders): the AVC decoder configuration record
    /// (`config`) or AVCC NAL units, keyframe or not, without a composition offset.
    pub fn avc(timestamp: u32, config: bool, keyframe: bool, payload: &[u8]) -> MediaFrame {
        let mut body = BytesMut::with_capacity(5 + payload.len());
        body.put_u8(if keyframe || config { 0x17 } else { 0x27 });
        body.put_u8(u8::from(!config));
        body.put_uint(0, 3);
        body.extend_from_slice(payload);
        MediaFrame {
            kind: MediaKind::Video,
            codec: Codec::Avc,
            timestamp,
            cts: 0,
            keyframe: keyframe && !config,
            header: config,
            samples: !config,
            body: body.freeze(),
            payload_at: 5,
            rendered: Arc::default(),
        }
    }

    /// The FLV tag body (codec header byte(s) and payload): what HTTP-FLV and RTMP players and relays carry.
    pub fn flv_body(&self) -> &Bytes {
        &self.body
    }

    /// The codec payload: the decoder configuration record, AVCC NAL units or a raw AAC frame (a zero-copy slice).
    pub fn payload(&self) -> Bytes {
        self.body.slice(usize::from(self.payload_at).min(self.body.len())..)
    }

    /// The frame's RTMP chunked body for `chunk_size`: `split` makes it the first time, and every clone of this
    /// frame shares that rendering afterwards (a node writes one chunk size; another size is split each time).
    pub fn rtmp_chunked(&self, chunk_size: usize, split: impl Fn(&Bytes) -> Bytes) -> Bytes {
        match self.rtmp_chunked_shared(chunk_size, &split) {
            Some(body) => body.clone(),
            None => split(&self.body),
        }
    }

    /// [`MediaFrame::rtmp_chunked`] without a reference count: the shared rendering, `None` when it was made for
    /// another chunk size.
    pub fn rtmp_chunked_shared(&self, chunk_size: usize, split: impl Fn(&Bytes) -> Bytes) -> Option<&Bytes> {
        let (size, body) = self.rendered.rtmp.get_or_init(|| (chunk_size, split(&self.body)));
        (*size == chunk_size).then_some(body)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    fn parse(kind: MediaKind, body: &'static [u8]) -> Result<MediaFrame, FlvError> {
        MediaFrame::parse(kind, 0, Bytes::from_static(body))
    }

    #[test]
    fn classifies_video() {
        let key = parse(MediaKind::Video, &[0x17, 1, 0, 0, 0, 9]).unwrap();
        assert!(key.keyframe && !key.header && key.samples && key.codec == Codec::Avc);
        assert_eq!(&key.payload()[..], &[9]);
        let seq = parse(MediaKind::Video, &[0x17, 0, 0, 0, 0, 1]).unwrap();
        assert!(!seq.keyframe && seq.header && !seq.samples);
        let inter = parse(MediaKind::Video, &[0x27, 1, 0, 0, 0]).unwrap();
        assert!(!inter.keyframe && !inter.header && inter.payload().is_empty());
        let eos = parse(MediaKind::Video, &[0x17, 2, 0, 0, 0]).unwrap();
        assert!(!eos.header && !eos.samples && !eos.keyframe);
        let other = parse(MediaKind::Video, &[0x22, 0xaa]).unwrap();
        assert_eq!(other.codec, Codec::Other(2));
        assert!(other.samples && !other.keyframe);
        assert!(parse(MediaKind::Video, &[0x12]).unwrap().keyframe, "a keyframe of another codec");
    }

    #[test]
    fn reads_negative_composition_time() {
        let f = parse(MediaKind::Video, &[0x27, 1, 0xff, 0xff, 0xdf, 0, 0, 0, 1, 0x41]).unwrap();
        assert_eq!(f.cts, -33);
        assert_eq!(f.payload().len(), 5);
    }

    #[test]
    fn classifies_audio() {
        let asc = parse(MediaKind::Audio, &[0xaf, 0, 0x12, 0x10]).unwrap();
        assert!(asc.header && asc.codec == Codec::Aac);
        assert_eq!(&asc.payload()[..], &[0x12, 0x10]);
        let raw = parse(MediaKind::Audio, &[0xaf, 1, 0x21]).unwrap();
        assert!(!raw.header && raw.samples);
        let mp3 = parse(MediaKind::Audio, &[0x2f, 1]).unwrap();
        assert_eq!(mp3.codec, Codec::Other(2));
    }

    #[test]
    fn truncated_headers_name_the_field() {
        for (kind, body, field) in [
            (MediaKind::Video, &[][..], "codec header"),
            (MediaKind::Video, &[0x17, 1][..], "AVC packet type and composition time"),
            (MediaKind::Audio, &[0xaf][..], "AAC packet type"),
        ] {
            match MediaFrame::parse(kind, 0, Bytes::copy_from_slice(body)) {
                Err(FlvError::Truncated { field: f, .. }) => assert_eq!(f, field),
                other => panic!("{body:?}: {other:?}"),
            }
        }
    }

    #[test]
    fn frames_made_by_strom_read_like_parsed_ones() {
        let cfg = MediaFrame::avc(40, true, false, &[1, 2, 3]);
        let parsed = MediaFrame::parse(MediaKind::Video, 40, cfg.flv_body().clone()).unwrap();
        assert!(cfg.header && parsed.header && !parsed.keyframe);
        assert_eq!(cfg.payload(), parsed.payload());
        let key = MediaFrame::avc(80, false, true, &[0, 0, 0, 1, 0x65]);
        let parsed = MediaFrame::parse(MediaKind::Video, 80, key.flv_body().clone()).unwrap();
        assert!(key.keyframe && parsed.keyframe && parsed.samples && parsed.cts == 0);
        assert_eq!(key.payload(), parsed.payload());
    }

    #[test]
    fn clones_share_one_rtmp_rendering() {
        let f = parse(MediaKind::Video, &[0x17, 1, 0, 0, 0, 9, 9, 9]).unwrap();
        let splits = AtomicUsize::new(0);
        let split = |b: &Bytes| {
            splits.fetch_add(1, Ordering::Relaxed);
            Bytes::from([&b[..4], &[0xc7], &b[4..]].concat())
        };
        let a = f.rtmp_chunked(4, split);
        let mut later = f.clone();
        later.timestamp = 1234; // a player's own timestamp does not change the body
        let b = later.rtmp_chunked(4, split);
        assert_eq!(a.as_ptr(), b.as_ptr(), "one rendering, shared");
        assert_eq!(splits.load(Ordering::Relaxed), 1);
        f.rtmp_chunked(2, split);
        assert_eq!(splits.load(Ordering::Relaxed), 2, "another chunk size is split on its own");
    }
}
