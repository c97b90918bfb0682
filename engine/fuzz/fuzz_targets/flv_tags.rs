//! FLV tag body parsing (`MediaFrame::parse`, the one parser of audio/video tag headers): never panics, errors
//! only on a header too short for its codec, and every field agrees with the FLV layout.
#![no_main]

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use strom_engine::formats::frame::{Codec, MediaFrame, MediaKind};

fuzz_target!(|data: &[u8]| {
    let body = Bytes::copy_from_slice(data);
    let timestamp = data.iter().take(4).fold(0u32, |acc, &b| (acc << 8) | u32::from(b));

    match MediaFrame::parse(MediaKind::Video, timestamp, body.clone()) {
        Ok(video) => {
            assert_eq!(video.flv_body(), &body);
            assert_eq!(video.timestamp, timestamp);
            assert!(!(video.keyframe && video.header), "a frame is never both keyframe and sequence header");
            assert!(!(video.header && video.samples));
            if data[0] & 0x0f == 7 {
                assert!(data.len() >= 5);
                assert_eq!(video.codec, Codec::Avc);
                assert_eq!(video.header, data[1] == 0);
                assert_eq!(video.samples, data[1] == 1);
                assert_eq!(video.keyframe, data[0] >> 4 == 1 && data[1] == 1);
                assert!((-(1 << 23)..(1 << 23)).contains(&video.cts));
                assert_eq!(&video.payload()[..], &data[5..]);
            } else {
                assert_eq!(video.codec, Codec::Other(data[0] & 0x0f));
                assert!(!video.header && video.samples && video.cts == 0);
                assert_eq!(&video.payload()[..], &data[1..]);
            }
        }
        Err(e) => {
            assert!(data.is_empty() || (data[0] & 0x0f == 7 && data.len() < 5), "video error on {data:?}: {e}");
            let _ = e.to_string();
        }
    }

    match MediaFrame::parse(MediaKind::Audio, timestamp, body.clone()) {
        Ok(audio) => {
            assert_eq!(audio.flv_body(), &body);
            assert!(!audio.keyframe && audio.cts == 0);
            if data[0] >> 4 == 10 {
                assert_eq!(audio.codec, Codec::Aac);
                assert_eq!(audio.header, data[1] == 0);
                assert_eq!(&audio.payload()[..], &data[2..]);
            } else {
                assert_eq!(audio.codec, Codec::Other(data[0] >> 4));
                assert!(!audio.header);
            }
        }
        Err(e) => {
            assert!(data.is_empty() || (data[0] >> 4 == 10 && data.len() < 2), "audio error on {data:?}: {e}");
            let _ = e.to_string();
        }
    }
});
