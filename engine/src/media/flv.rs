//! FLV: the container of HTTP-FLV and the payload format of RTMP audio/video messages.
//!
//! Pure functions: parse the headers of audio/video tag bodies (what the HLS segmenter needs), write the FLV file
//! header and per-tag headers (what HTTP-FLV players need), and encode `onMetaData`.

use std::collections::HashMap;

use bytes::Bytes;
use rml_amf0::Amf0Value;
use rml_rtmp::sessions::StreamMetadata;

/// FLV tag type of audio tags.
pub const TAG_AUDIO: u8 = 8;
/// FLV tag type of video tags.
pub const TAG_VIDEO: u8 = 9;
/// FLV tag type of script data (onMetaData).
pub const TAG_SCRIPT: u8 = 18;

/// Errors from parsing an FLV tag body; each names the field and the byte offset inside the body.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FlvError {
    /// The body ended before the named field.
    #[error("FLV {what} tag body truncated: {field} needs {needed} bytes at offset {offset}, body has {len}")]
    Truncated {
        /// "video" or "audio".
        what: &'static str,
        /// The field being read.
        field: &'static str,
        /// Offset of the field in the body.
        offset: usize,
        /// Bytes the field needs.
        needed: usize,
        /// Length of the body.
        len: usize,
    },
}

/// The parsed header of an AVC video tag body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AvcTag {
    /// FLV frame type (1 = keyframe, 2 = inter frame, 5 = info/command).
    pub frame_type: u8,
    /// AVCPacketType: 0 = sequence header, 1 = NAL units, 2 = end of sequence.
    pub packet_type: u8,
    /// Composition time offset in ms (PTS − DTS).
    pub composition_time: i32,
    /// The payload after the 5-byte header (decoder config record or AVCC NAL units).
    pub payload: Bytes,
}

impl AvcTag {
    /// Parses the header of an FLV video tag body whose codec id is 7 (AVC). Returns `Ok(None)` for other codecs.
    pub fn parse(body: &Bytes) -> Result<Option<AvcTag>, FlvError> {
        let first = *body.first().ok_or(FlvError::Truncated {
            what: "video",
            field: "frame type/codec id",
            offset: 0,
            needed: 1,
            len: body.len(),
        })?;
        if first & 0x0f != 7 {
            return Ok(None);
        }
        if body.len() < 5 {
            return Err(FlvError::Truncated {
                what: "video",
                field: "AVC packet type and composition time",
                offset: 1,
                needed: 4,
                len: body.len(),
            });
        }
        let raw = (u32::from(body[2]) << 16) | (u32::from(body[3]) << 8) | u32::from(body[4]);
        // Sign-extend the 24-bit composition time.
        let composition_time = ((raw << 8) as i32) >> 8;
        Ok(Some(AvcTag { frame_type: first >> 4, packet_type: body[1], composition_time, payload: body.slice(5..) }))
    }
}

/// The parsed header of an AAC audio tag body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AacTag {
    /// AACPacketType: 0 = AudioSpecificConfig, 1 = raw AAC frame.
    pub packet_type: u8,
    /// The payload after the 2-byte header.
    pub payload: Bytes,
}

impl AacTag {
    /// Parses the header of an FLV audio tag body whose sound format is 10 (AAC). Returns `Ok(None)` for others.
    pub fn parse(body: &Bytes) -> Result<Option<AacTag>, FlvError> {
        let first = *body.first().ok_or(FlvError::Truncated {
            what: "audio",
            field: "sound format",
            offset: 0,
            needed: 1,
            len: body.len(),
        })?;
        if first >> 4 != 10 {
            return Ok(None);
        }
        let packet_type = *body.get(1).ok_or(FlvError::Truncated {
            what: "audio",
            field: "AAC packet type",
            offset: 1,
            needed: 1,
            len: body.len(),
        })?;
        Ok(Some(AacTag { packet_type, payload: body.slice(2..) }))
    }
}

/// The 9-byte FLV file header followed by PreviousTagSize0 (13 bytes in all).
pub fn file_header(has_audio: bool, has_video: bool) -> [u8; 13] {
    let flags = (u8::from(has_audio) << 2) | u8::from(has_video);
    [b'F', b'L', b'V', 1, flags, 0, 0, 0, 9, 0, 0, 0, 0]
}

/// An 11-byte FLV tag header for a body of `data_size` bytes at `timestamp` ms.
pub fn tag_header(tag_type: u8, data_size: u32, timestamp: u32) -> [u8; 11] {
    let ds = data_size.to_be_bytes();
    let ts = timestamp.to_be_bytes();
    [tag_type, ds[1], ds[2], ds[3], ts[1], ts[2], ts[3], ts[0], 0, 0, 0]
}

/// The PreviousTagSize field that follows a tag with a body of `data_size` bytes.
pub fn previous_tag_size(data_size: u32) -> [u8; 4] {
    (data_size + 11).to_be_bytes()
}

/// Builds the `onMetaData` properties advertised to players from what the publisher sent.
pub fn metadata_properties(meta: &StreamMetadata) -> HashMap<String, Amf0Value> {
    let mut p = HashMap::new();
    let mut num = |k: &str, v: Option<f64>| {
        if let Some(v) = v {
            p.insert(k.to_string(), Amf0Value::Number(v));
        }
    };
    num("width", meta.video_width.map(f64::from));
    num("height", meta.video_height.map(f64::from));
    num("videocodecid", meta.video_codec_id.map(f64::from));
    num("framerate", meta.video_frame_rate.map(f64::from));
    num("videodatarate", meta.video_bitrate_kbps.map(f64::from));
    num("audiocodecid", meta.audio_codec_id.map(f64::from));
    num("audiodatarate", meta.audio_bitrate_kbps.map(f64::from));
    num("audiosamplerate", meta.audio_sample_rate.map(f64::from));
    num("audiochannels", meta.audio_channels.map(f64::from));
    if let Some(stereo) = meta.audio_is_stereo {
        p.insert("stereo".into(), Amf0Value::Boolean(stereo));
    }
    p.insert("server".into(), Amf0Value::Utf8String(concat!("strom ", env!("CARGO_PKG_VERSION")).into()));
    if let Some(enc) = &meta.encoder {
        p.insert("encoder".into(), Amf0Value::Utf8String(enc.clone()));
    }
    p
}

/// Encodes an FLV script tag body / RTMP data message: `"onMetaData"` followed by the properties object.
pub fn encode_on_metadata(meta: &StreamMetadata) -> Bytes {
    let values = vec![Amf0Value::Utf8String("onMetaData".into()), Amf0Value::Object(metadata_properties(meta))];
    // Serialization only fails for strings over 64 KiB; the encoder name is the only free-form one: drop it then.
    match rml_amf0::serialize(&values) {
        Ok(bytes) => Bytes::from(bytes),
        Err(_) => {
            let mut props = metadata_properties(meta);
            props.remove("encoder");
            let values = vec![Amf0Value::Utf8String("onMetaData".into()), Amf0Value::Object(props)];
            Bytes::from(rml_amf0::serialize(&values).unwrap_or_default())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn avc_tag_parses_negative_composition_time() {
        let body = Bytes::from_static(&[0x27, 1, 0xff, 0xff, 0xdf, 0, 0, 0, 1, 0x41]);
        let tag = AvcTag::parse(&body).unwrap().unwrap();
        assert_eq!(tag.composition_time, -33);
        assert_eq!(tag.frame_type, 2);
        assert_eq!(tag.payload.len(), 5);
    }

    #[test]
    fn truncated_and_foreign_bodies() {
        assert!(AvcTag::parse(&Bytes::new()).is_err());
        assert!(AvcTag::parse(&Bytes::from_static(&[0x17, 1])).is_err());
        assert_eq!(AvcTag::parse(&Bytes::from_static(&[0x12])).unwrap(), None);
        assert!(AacTag::parse(&Bytes::from_static(&[0xaf])).is_err());
        assert_eq!(AacTag::parse(&Bytes::from_static(&[0x2f, 1])).unwrap(), None);
    }

    #[test]
    fn headers_are_well_formed() {
        assert_eq!(&file_header(true, true)[..5], b"FLV\x01\x05");
        let h = tag_header(TAG_VIDEO, 0x010203, 0x0a0b0c0d);
        assert_eq!(h, [9, 1, 2, 3, 0x0b, 0x0c, 0x0d, 0x0a, 0, 0, 0]);
        assert_eq!(previous_tag_size(100), [0, 0, 0, 111]);
    }

    #[test]
    fn metadata_round_trips_through_amf0() {
        let mut meta = StreamMetadata::new();
        meta.video_width = Some(1280);
        meta.video_height = Some(720);
        meta.encoder = Some("obs".into());
        let body = encode_on_metadata(&meta);
        let values = rml_amf0::deserialize(&mut &body[..]).unwrap();
        assert_eq!(values[0], Amf0Value::Utf8String("onMetaData".into()));
        let props = values[1].clone().get_object_properties().unwrap();
        assert_eq!(props["width"], Amf0Value::Number(1280.0));
        assert_eq!(props["encoder"], Amf0Value::Utf8String("obs".into()));
    }
}
