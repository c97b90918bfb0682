//! Writes media messages to RTMP players with one shared body per frame.
//!
//! RTMP splits a message into chunks of the negotiated size; every chunk after the first carries only a one-byte
//! type-3 header (for chunk stream ids below 64). The split depends on nothing per player but the chunk size, so
//! the first player that writes a frame chunks it ([`body`]), every other player shares that body, and each writes
//! a 12-byte type-0 header of its own (its timestamp and message stream id) followed by it. Media uses chunk stream ids that
//! `rml_rtmp`'s session never uses, so its header compression state is never disturbed.
//!
//! Timestamps at or above 0xFFFFFF need an extended timestamp after every chunk header; those (rare: a player's
//! rebased clock passes 4.6 hours) are written whole per player by [`write_message`].

use bytes::{BufMut, Bytes, BytesMut};

use crate::formats::{MediaFrame, MediaKind};

/// Chunk stream of video messages.
pub const VIDEO_CSID: u8 = 7;
/// Chunk stream of audio messages.
pub const AUDIO_CSID: u8 = 8;
/// Chunk stream of data and status messages strom writes itself (onMetaData, UnpublishNotify, stream EOF).
pub const DATA_CSID: u8 = 9;

/// RTMP message type of audio.
pub const MSG_AUDIO: u8 = 8;
/// RTMP message type of video.
pub const MSG_VIDEO: u8 = 9;
/// RTMP message type of AMF0 data.
pub const MSG_DATA_AMF0: u8 = 18;

const EXTENDED: u32 = 0x00ff_ffff;

/// The chunk stream id and message type for a frame kind.
pub fn route(kind: MediaKind) -> (u8, u8) {
    match kind {
        MediaKind::Video => (VIDEO_CSID, MSG_VIDEO),
        MediaKind::Audio => (AUDIO_CSID, MSG_AUDIO),
    }
}

/// The frame's body split into RTMP chunks of `chunk_size`: made by the first RTMP player that writes the frame
/// and shared by every other ([`MediaFrame::rtmp_chunked`]).
pub fn body(frame: &MediaFrame, chunk_size: usize) -> Bytes {
    let csid = route(frame.kind).0;
    frame.rtmp_chunked(chunk_size, |payload| chunk_body(payload, chunk_size, csid))
}

/// [`body`] by reference: the shared rendering, `None` when it was made for another chunk size.
pub fn body_shared(frame: &MediaFrame, chunk_size: usize) -> Option<&Bytes> {
    let csid = route(frame.kind).0;
    frame.rtmp_chunked_shared(chunk_size, |payload| chunk_body(payload, chunk_size, csid))
}

/// Splits `payload` into chunks with type-3 headers between them. No copy when it fits in one chunk.
pub fn chunk_body(payload: &Bytes, chunk_size: usize, csid: u8) -> Bytes {
    let chunk_size = chunk_size.max(1);
    if payload.len() <= chunk_size {
        return payload.clone();
    }
    let mut out = BytesMut::with_capacity(payload.len() + payload.len() / chunk_size + 1);
    for (i, c) in payload.chunks(chunk_size).enumerate() {
        if i > 0 {
            out.put_u8(0xc0 | (csid & 0x3f));
        }
        out.extend_from_slice(c);
    }
    out.freeze()
}

/// Appends a type-0 chunk header (basic header + 11-byte message header) for a message whose timestamp is
/// below 0xFFFFFF. Returns `false` (and writes nothing) when the timestamp needs the extended form.
pub fn put_header(out: &mut impl BufMut, csid: u8, timestamp: u32, len: usize, type_id: u8, stream_id: u32) -> bool {
    if timestamp >= EXTENDED {
        return false;
    }
    out.put_u8(csid & 0x3f);
    out.put_uint(u64::from(timestamp), 3);
    out.put_uint(len as u64, 3);
    out.put_u8(type_id);
    out.put_u32_le(stream_id);
    true
}

/// Appends a whole message (all chunks) — the per-player path for extended timestamps and small control data.
pub fn write_message(
    out: &mut BytesMut,
    csid: u8,
    timestamp: u32,
    type_id: u8,
    stream_id: u32,
    payload: &[u8],
    chunk_size: usize,
) {
    let chunk_size = chunk_size.max(1);
    let ext = timestamp >= EXTENDED;
    out.put_u8(csid & 0x3f);
    out.put_uint(u64::from(if ext { EXTENDED } else { timestamp }), 3);
    out.put_uint(payload.len() as u64, 3);
    out.put_u8(type_id);
    out.put_u32_le(stream_id);
    if ext {
        out.put_u32(timestamp);
    }
    for (i, c) in payload.chunks(chunk_size).enumerate() {
        if i > 0 {
            out.put_u8(0xc0 | (csid & 0x3f));
            if ext {
                out.put_u32(timestamp);
            }
        }
        out.extend_from_slice(c);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rml_rtmp::chunk_io::ChunkDeserializer;

    fn decode(bytes: &[u8], chunk_size: usize) -> Vec<(u32, u8, u32, Bytes)> {
        let mut d = ChunkDeserializer::new();
        d.set_max_chunk_size(chunk_size).unwrap();
        let mut out = Vec::new();
        let mut input = bytes;
        while let Some(m) = d.get_next_message(input).unwrap() {
            out.push((m.timestamp.value, m.type_id, m.message_stream_id, m.data));
            input = &[];
        }
        out
    }

    #[test]
    fn shared_body_plus_header_decodes_with_rml_rtmp() {
        let payload = Bytes::from((0..10_000u32).map(|i| i as u8).collect::<Vec<_>>());
        let body = chunk_body(&payload, 4096, VIDEO_CSID);
        let small = Bytes::from_static(&[0xaf, 1, 2, 3]);
        let small_body = chunk_body(&small, 4096, AUDIO_CSID);
        assert_eq!(small_body.as_ptr(), small.as_ptr(), "no copy for a single chunk");
        let mut wire = BytesMut::new();
        assert!(put_header(&mut wire, VIDEO_CSID, 1234, payload.len(), MSG_VIDEO, 1));
        wire.extend_from_slice(&body);
        assert!(put_header(&mut wire, AUDIO_CSID, 1240, small.len(), MSG_AUDIO, 1));
        wire.extend_from_slice(&small_body);
        write_message(&mut wire, VIDEO_CSID, 0x0100_0000, MSG_VIDEO, 1, &payload, 4096);
        let msgs = decode(&wire, 4096);
        assert_eq!(msgs.len(), 3);
        assert_eq!(msgs[0], (1234, MSG_VIDEO, 1, payload.clone()));
        assert_eq!(msgs[1], (1240, MSG_AUDIO, 1, small));
        assert_eq!(msgs[2], (0x0100_0000, MSG_VIDEO, 1, payload));
    }

    #[test]
    fn two_players_of_one_chunk_size_share_one_rendering() {
        let mut payload = vec![0x17, 1, 0, 0, 0];
        payload.extend((0..9000u32).map(|i| i as u8));
        let frame = MediaFrame::parse(MediaKind::Video, 0, Bytes::from(payload)).unwrap();
        let first = body(&frame, 4096);
        let second = body(&frame.clone(), 4096);
        assert_eq!(first.as_ptr(), second.as_ptr(), "the second player reuses the first one's chunks");
        assert_eq!(first.len(), frame.flv_body().len() + 2, "two type-3 headers");
        let small = MediaFrame::parse(MediaKind::Audio, 0, Bytes::from_static(&[0xaf, 1, 2])).unwrap();
        assert_eq!(body(&small, 4096).as_ptr(), small.flv_body().as_ptr(), "one chunk: the body itself");
    }

    #[test]
    fn extended_timestamps_refuse_the_shared_path() {
        let mut b = BytesMut::new();
        assert!(!put_header(&mut b, VIDEO_CSID, 0x00ff_ffff, 10, MSG_VIDEO, 1));
        assert!(b.is_empty());
    }
}
