//! Writes the seed corpora under `engine/fuzz/corpus/<target>/`.
//!
//! Run from `engine/fuzz/seeds`: `cargo run --release -- ../corpus` (deterministic; rewrites the files).
//!
//! The RTMP seeds are real client streams: an `rml_rtmp` `ClientSession` talks to a `ServerSession`
//! in memory (connect, createStream, publish or play, metadata, AVC/AAC sequence headers and
//! frames), and every byte the client sends after the handshake is recorded.

use std::fs;
use std::path::{Path, PathBuf};

use bytes::Bytes;
use rml_amf0::Amf0Value;
use rml_rtmp::sessions::{
    ClientSession, ClientSessionConfig, ClientSessionEvent, ClientSessionResult, PublishRequestType, ServerSession,
    ServerSessionConfig, ServerSessionEvent, ServerSessionResult, StreamMetadata,
};
use rml_rtmp::time::RtmpTimestamp;

fn hex(s: &str) -> Vec<u8> {
    (0..s.len()).step_by(2).map(|i| u8::from_str_radix(&s[i..i + 2], 16).expect("hex")).collect()
}

/// x264 parameter sets (the same as in `engine/src/formats/avc.rs` tests).
const HIGH_720_SPS: &str = "6764001facd9405005bb011000000300100000030320f1831960";
const HIGH_720_PPS: &str = "68ebe3cb22c0";
const BASE_360_SPS: &str = "6742c01ed900a02ff97011000003000100000300320f162e48";
const BASE_360_PPS: &str = "68cb83cb20";
const INTERLACED_1080_SPS: &str = "67640028acd94078044fde0220000003002000000643e2c5b2c0";
const HIGH444_720_SPS: &str = "67f4001f919b280a00b76022000003000200000300641e30632c";
const HIGH422_854_SPS: &str = "677a001ebcd940d83de6f011000003000100000300320f162d96";

/// An AVCDecoderConfigurationRecord.
fn record(sps: &[u8], pps: &[u8], nal_length_size: u8) -> Vec<u8> {
    let mut v = vec![1, sps[1], sps[2], sps[3], 0xfc | (nal_length_size - 1), 0xe1];
    v.extend_from_slice(&(sps.len() as u16).to_be_bytes());
    v.extend_from_slice(sps);
    v.push(1);
    v.extend_from_slice(&(pps.len() as u16).to_be_bytes());
    v.extend_from_slice(pps);
    v
}

/// An AVCC sample with `nls`-byte length prefixes.
fn avcc(nals: &[&[u8]], nls: usize) -> Vec<u8> {
    let mut v = Vec::new();
    for nal in nals {
        v.extend_from_slice(&(nal.len() as u32).to_be_bytes()[4 - nls..]);
        v.extend_from_slice(nal);
    }
    v
}

fn video_seq_header() -> Vec<u8> {
    let mut v = vec![0x17, 0, 0, 0, 0];
    v.extend(record(&hex(HIGH_720_SPS), &hex(HIGH_720_PPS), 4));
    v
}

fn video_frame(key: bool, cto: u32, len: usize) -> Vec<u8> {
    let nal_type = if key { 0x65 } else { 0x41 };
    let mut nal = vec![nal_type];
    nal.extend((0..len).map(|i| (i * 7 + 3) as u8));
    let mut v = vec![if key { 0x17 } else { 0x27 }, 1];
    v.extend_from_slice(&cto.to_be_bytes()[1..]);
    v.extend(avcc(&[&[0x09, 0xf0], &nal], 4));
    v
}

fn audio_seq_header() -> Vec<u8> {
    vec![0xaf, 0, 0x12, 0x10]
}

fn audio_frame(len: usize) -> Vec<u8> {
    let mut v = vec![0xaf, 1];
    v.extend((0..len).map(|i| (i * 13 + 1) as u8));
    v
}

/// Client ↔ server in memory; collects every client→server send (one entry per packet).
struct Link {
    client: ClientSession,
    server: ServerSession,
    sent: Vec<Vec<u8>>,
}

impl Link {
    fn new() -> Link {
        let (mut client, _) = ClientSession::new(ClientSessionConfig::new()).expect("client");
        let (server, initial) = ServerSession::new(ServerSessionConfig::new()).expect("server");
        // The server's opening messages (chunk size, window ack size, ...) set up header compression.
        for r in initial {
            if let ServerSessionResult::OutboundResponse(p) = r {
                client.handle_input(&p.bytes).expect("client accepts the server's opening messages");
            }
        }
        Link { client, server, sent: Vec::new() }
    }

    /// Sends client packets to the server and pumps both ways until quiet; returns the client's events.
    fn send(&mut self, results: Vec<ClientSessionResult>) -> Vec<ClientSessionEvent> {
        let mut events = Vec::new();
        let mut to_server: Vec<Vec<u8>> = Vec::new();
        let push_client = |rs: Vec<ClientSessionResult>, to_server: &mut Vec<Vec<u8>>, ev: &mut Vec<_>| {
            for r in rs {
                match r {
                    ClientSessionResult::OutboundResponse(p) => to_server.push(p.bytes.to_vec()),
                    ClientSessionResult::RaisedEvent(e) => ev.push(e),
                    _ => {}
                }
            }
        };
        push_client(results, &mut to_server, &mut events);
        while !to_server.is_empty() {
            let batch = std::mem::take(&mut to_server);
            let mut to_client: Vec<Vec<u8>> = Vec::new();
            for bytes in batch {
                self.sent.push(bytes.clone());
                let results = self.server.handle_input(&bytes).expect("server accepts the client's bytes");
                for r in results {
                    match r {
                        ServerSessionResult::OutboundResponse(p) => to_client.push(p.bytes.to_vec()),
                        ServerSessionResult::RaisedEvent(
                            ServerSessionEvent::ConnectionRequested { request_id, .. }
                            | ServerSessionEvent::PublishStreamRequested { request_id, .. }
                            | ServerSessionEvent::PlayStreamRequested { request_id, .. },
                        ) => {
                            for r in self.server.accept_request(request_id).expect("accept") {
                                if let ServerSessionResult::OutboundResponse(p) = r {
                                    to_client.push(p.bytes.to_vec());
                                }
                            }
                        }
                        _ => {}
                    }
                }
            }
            for bytes in to_client {
                let rs = self.client.handle_input(&bytes).expect("client accepts the server's bytes");
                push_client(rs, &mut to_server, &mut events);
            }
        }
        events
    }

    fn connect(&mut self, app: &str) {
        let r = self.client.request_connection(app.into()).expect("connect");
        let ev = self.send(vec![r]);
        assert!(ev.contains(&ClientSessionEvent::ConnectionRequestAccepted), "{ev:?}");
    }
}

/// `[u16 length][bytes]` records: the `rtmp_session` input format (one record per socket read).
fn framed(reads: &[Vec<u8>]) -> Vec<u8> {
    let mut v = Vec::new();
    for r in reads {
        for piece in r.chunks(0xffff) {
            v.extend_from_slice(&(piece.len() as u16).to_be_bytes());
            v.extend_from_slice(piece);
        }
    }
    v
}

fn publish_session(media_rounds: usize, big_frame: usize) -> Vec<Vec<u8>> {
    let mut link = Link::new();
    link.connect("live");
    let r = link.client.request_publishing("stream1".into(), PublishRequestType::Live).expect("publish");
    let ev = link.send(vec![r]);
    assert!(ev.contains(&ClientSessionEvent::PublishRequestAccepted), "{ev:?}");

    let mut meta = StreamMetadata::new();
    meta.video_width = Some(1280);
    meta.video_height = Some(720);
    meta.video_codec_id = Some(7);
    meta.video_frame_rate = Some(30.0);
    meta.audio_codec_id = Some(10);
    meta.audio_sample_rate = Some(44100);
    meta.audio_channels = Some(2);
    meta.audio_is_stereo = Some(true);
    meta.encoder = Some("obs-output module (libobs version 30.0.0)".into());
    let r = link.client.publish_metadata(&meta).expect("metadata");
    link.send(vec![r]);

    let ts = RtmpTimestamp::new;
    let r = link.client.publish_video_data(Bytes::from(video_seq_header()), ts(0), false).expect("video");
    link.send(vec![r]);
    let r = link.client.publish_audio_data(Bytes::from(audio_seq_header()), ts(0), false).expect("audio");
    link.send(vec![r]);
    for i in 0..media_rounds {
        let t = (i * 33) as u32;
        let len = if i == 0 { big_frame } else { 40 + i * 5 };
        let r = link.client.publish_video_data(Bytes::from(video_frame(i % 4 == 0, 66, len)), ts(t), i % 4 != 0);
        link.send(vec![r.expect("video")]);
        let r = link.client.publish_audio_data(Bytes::from(audio_frame(20 + i)), ts(t + 10), true).expect("audio");
        link.send(vec![r]);
    }
    let r = link.client.stop_publishing().expect("unpublish");
    link.send(r);
    link.sent
}

fn play_session() -> Vec<Vec<u8>> {
    let mut link = Link::new();
    link.connect("live/");
    let r = link.client.request_playback("stream1".into()).expect("play");
    let ev = link.send(vec![r]);
    assert!(ev.contains(&ClientSessionEvent::PlaybackRequestAccepted), "{ev:?}");
    let (ping, _) = link.client.send_ping_request().expect("ping");
    link.sent.push(ping.bytes.to_vec());
    let r = link.client.stop_playback().expect("stop");
    link.send(r);
    link.sent
}

/// SetChunkSize 4096, then a `connect` command (type 20) whose command object is `depth` nested objects
/// (`{"a": {"a": ...}}`), in 4096-byte chunks.
fn nested_connect(depth: usize) -> Vec<u8> {
    let mut payload = vec![0x02, 0x00, 0x07];
    payload.extend_from_slice(b"connect");
    payload.push(0x00);
    payload.extend_from_slice(&1f64.to_be_bytes());
    for _ in 0..depth {
        payload.extend_from_slice(&[0x03, 0x00, 0x01, b'a']);
    }
    payload.push(0x05);
    let mut out = vec![0x02, 0, 0, 0, 0, 0, 4, 0x01, 0, 0, 0, 0, 0, 0, 0x10, 0];
    let len = payload.len() as u32;
    for (i, c) in payload.chunks(4096).enumerate() {
        if i == 0 {
            out.extend_from_slice(&[0x03, 0, 0, 0]);
            out.extend_from_slice(&len.to_be_bytes()[1..]);
            out.extend_from_slice(&[20, 0, 0, 0, 0]);
        } else {
            out.push(0xc3);
        }
        out.extend_from_slice(c);
    }
    out
}

fn write(dir: &Path, target: &str, name: &str, data: &[u8]) {
    let d = dir.join(target);
    fs::create_dir_all(&d).expect("mkdir");
    fs::write(d.join(name), data).expect("write seed");
}

fn main() {
    let dir = PathBuf::from(std::env::args().nth(1).unwrap_or_else(|| "../corpus".into()));

    // rtmp_session: framed reads; chunk_guard: split byte + the raw stream.
    let publish = publish_session(6, 6000);
    let small = publish_session(1, 100);
    let play = play_session();
    for (name, reads) in [("publish", &publish), ("publish-short", &small), ("play", &play)] {
        write(&dir, "rtmp_session", name, &framed(reads));
        let raw: Vec<u8> = reads.concat();
        // One read for the whole stream (all messages before any accept).
        write(&dir, "rtmp_session", &format!("{name}-one-read"), &framed(&[raw.clone()]));
        for split in [0u8, 17, 200] {
            let mut v = vec![split];
            v.extend_from_slice(&raw);
            write(&dir, "chunk_guard", &format!("{name}-split{split}"), &v);
        }
    }

    // amf0: command and data message bodies as strom receives them.
    let mut connect = std::collections::HashMap::new();
    connect.insert("app".to_string(), Amf0Value::Utf8String("live".into()));
    connect.insert("tcUrl".to_string(), Amf0Value::Utf8String("rtmp://localhost/live".into()));
    connect.insert("objectEncoding".to_string(), Amf0Value::Number(0.0));
    connect.insert("fpad".to_string(), Amf0Value::Boolean(false));
    let amf = [
        (
            "connect",
            vec![Amf0Value::Utf8String("connect".into()), Amf0Value::Number(1.0), Amf0Value::Object(connect.clone())],
        ),
        (
            "publish",
            vec![
                Amf0Value::Utf8String("publish".into()),
                Amf0Value::Number(5.0),
                Amf0Value::Null,
                Amf0Value::Utf8String("stream1".into()),
                Amf0Value::Utf8String("live".into()),
            ],
        ),
        (
            "setDataFrame",
            vec![
                Amf0Value::Utf8String("@setDataFrame".into()),
                Amf0Value::Utf8String("onMetaData".into()),
                Amf0Value::Object(connect),
            ],
        ),
        (
            "array",
            vec![Amf0Value::StrictArray(vec![Amf0Value::Number(f64::NAN), Amf0Value::Undefined, Amf0Value::Null])],
        ),
    ];
    for (name, values) in amf {
        write(&dir, "amf0", name, &rml_amf0::serialize(&values).expect("amf0"));
    }
    // An ECMA array (0x08), as ffmpeg sends onMetaData.
    write(
        &dir,
        "amf0",
        "ecma-array",
        &[0x08, 0, 0, 0, 1, 0, 5, b'w', b'i', b'd', b't', b'h', 0, 0x40, 0x94, 0, 0, 0, 0, 0, 0, 0, 0, 9],
    );

    // flv_tags: video and audio tag bodies.
    write(&dir, "flv_tags", "avc-seq", &video_seq_header());
    write(&dir, "flv_tags", "avc-key", &video_frame(true, 0, 32));
    write(&dir, "flv_tags", "avc-inter-negative-cto", &video_frame(false, 0xffffdf, 16));
    write(&dir, "flv_tags", "aac-asc", &audio_seq_header());
    write(&dir, "flv_tags", "aac-raw", &audio_frame(16));
    write(&dir, "flv_tags", "mp3", &[0x2f, 0xff, 0xfb]);

    // avc: configuration records, and [selector][AVCC sample].
    for (name, sps, pps, nls) in [
        ("high-720", HIGH_720_SPS, HIGH_720_PPS, 4),
        ("base-360", BASE_360_SPS, BASE_360_PPS, 4),
        ("interlaced-1080", INTERLACED_1080_SPS, HIGH_720_PPS, 2),
        ("high444-720", HIGH444_720_SPS, HIGH_720_PPS, 1),
        ("high422-854", HIGH422_854_SPS, HIGH_720_PPS, 3),
    ] {
        write(&dir, "avc", &format!("record-{name}"), &record(&hex(sps), &hex(pps), nls));
    }
    let sps = hex(HIGH_720_SPS);
    let pps = hex(HIGH_720_PPS);
    for nls in 1..=4usize {
        let mut v = vec![(nls - 1) as u8 | 0x40];
        v.extend(avcc(&[&[0x09, 0xf0], &sps, &pps, &[0x65, 0x88, 0x84, 0x00, 0x33], &[]], nls));
        write(&dir, "avc", &format!("sample-nls{nls}"), &v);
    }

    // aac: AudioSpecificConfigs (LC 44.1 kHz stereo, LC 48 kHz mono, HE-AAC, HE-AACv2, explicit 37800 Hz).
    write(&dir, "aac", "lc-44100-stereo", &[0x12, 0x10]);
    write(&dir, "aac", "lc-48000-mono", &[0x11, 0x88, 0x56, 0xe5, 0x00]);
    write(&dir, "aac", "he-aac", &[0x2b, 0x11, 0x88]);
    write(&dir, "aac", "he-aac-v2", &[0xeb, 0x09, 0x88]);
    write(&dir, "aac", "escape-34", &[0xf8, 0x46, 0x40]);
    write(&dir, "aac", "explicit-37800", &[0x17, 0x80, 0x04, 0x9d, 0x41, 0x00]);

    // ts_muxer: `arbitrary`-decoded; any bytes are a valid input. A few deterministic byte strings.
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    for (i, len) in [64usize, 256, 1024].into_iter().enumerate() {
        let v: Vec<u8> = (0..len)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect();
        write(&dir, "ts_muxer", &format!("random-{i}"), &v);
    }

    // Known finding (not a seed: it crashes strom, see ../README.md): an RTMP `connect` command whose
    // command object nests 3 200 AMF0 objects (12.9 KB) overflows a 2 MiB stack in rml_amf0's recursive
    // deserializer. Written to ../regressions/rtmp_session/ next to the corpus directory.
    let regressions = dir.parent().unwrap_or(Path::new(".")).join("regressions");
    write(&regressions, "rtmp_session", "amf0-nested-objects-3200", &framed(&[nested_connect(3200)]));

    let total: u64 = walk(&dir);
    println!("wrote seeds under {} ({} bytes)", dir.display(), total);
}

fn walk(dir: &Path) -> u64 {
    fs::read_dir(dir)
        .map(|rd| {
            rd.flatten()
                .map(|e| if e.path().is_dir() { walk(&e.path()) } else { e.metadata().map(|m| m.len()).unwrap_or(0) })
                .sum()
        })
        .unwrap_or(0)
}
