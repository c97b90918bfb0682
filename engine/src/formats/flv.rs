//! FLV: the container of HTTP-FLV and the payload format of RTMP audio/video messages.
//!
//! Pure functions: write the FLV file header and per-tag headers (what HTTP-FLV players need), and encode
//! `onMetaData`. Audio/video tag bodies are parsed in one place only, [`super::MediaFrame::parse`].

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

/// Errors from parsing an FLV tag body ([`super::MediaFrame::parse`]); each names the field and the byte offset
/// inside the body.
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
