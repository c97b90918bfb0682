//! FLV tag body header parsing (`AvcTag::parse`, `AacTag::parse`) and `MediaFrame::from_flv_body`
//! classification: never panics, and the three agree with each other and with the FLV layout.
#![no_main]

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use strom_engine::media::flv::{AacTag, AvcTag};
use strom_engine::media::frame::{MediaFrame, MediaKind};

fuzz_target!(|data: &[u8]| {
    let body = Bytes::copy_from_slice(data);
    let timestamp = data.iter().take(4).fold(0u32, |acc, &b| (acc << 8) | u32::from(b));

    let avc = AvcTag::parse(&body);
    match &avc {
        Ok(Some(tag)) => {
            assert!(data.len() >= 5);
            assert_eq!(data[0] & 0x0f, 7);
            assert_eq!(tag.frame_type, data[0] >> 4);
            assert_eq!(tag.packet_type, data[1]);
            assert!((-(1 << 23)..(1 << 23)).contains(&tag.composition_time));
            assert_eq!(&tag.payload[..], &data[5..]);
        }
        Ok(None) => assert_ne!(data[0] & 0x0f, 7),
        Err(e) => {
            assert!(data.len() < 5, "AvcTag error on a {}-byte body: {e}", data.len());
            let _ = e.to_string();
        }
    }

    let aac = AacTag::parse(&body);
    match &aac {
        Ok(Some(tag)) => {
            assert!(data.len() >= 2);
            assert_eq!(data[0] >> 4, 10);
            assert_eq!(tag.packet_type, data[1]);
            assert_eq!(&tag.payload[..], &data[2..]);
        }
        Ok(None) => assert_ne!(data[0] >> 4, 10),
        Err(e) => {
            assert!(data.len() < 2, "AacTag error on a {}-byte body: {e}", data.len());
            let _ = e.to_string();
        }
    }

    let video = MediaFrame::from_flv_body(MediaKind::Video, timestamp, body.clone());
    assert_eq!(video.data, body);
    assert_eq!(video.rtmp_body, body);
    assert_eq!(video.timestamp, timestamp);
    assert!(!(video.keyframe && video.header), "a frame is never both keyframe and sequence header");
    if video.header {
        assert!(video.is_avc());
    }
    if let Ok(Some(tag)) = &avc {
        assert!(video.is_avc());
        assert_eq!(video.header, tag.packet_type == 0);
        assert_eq!(video.keyframe, tag.frame_type == 1 && tag.packet_type != 0);
    }

    let audio = MediaFrame::from_flv_body(MediaKind::Audio, timestamp, body.clone());
    assert_eq!(audio.data, body);
    assert!(!audio.keyframe);
    assert!(!audio.is_avc() && !video.is_aac());
    if audio.header {
        assert!(audio.is_aac());
    }
    if let Ok(Some(tag)) = &aac {
        assert!(audio.is_aac());
        assert_eq!(audio.header, tag.packet_type == 0);
    }
});
