//! The published stream: FLV tags read once from a file, replayed in real time (looped, timestamps rewritten),
//! plus the table that maps a received frame back to the instant it was published.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use bytes::Bytes;

use crate::media;

pub struct Tag {
    /// 8 audio, 9 video, 18 script data.
    pub kind: u8,
    pub ts_ms: u32,
    pub data: Bytes,
    pub seq_header: bool,
}

pub struct Source {
    pub tags: Vec<Tag>,
    /// Length of one pass over the file; pass k is published at timestamps + k * loop_ms.
    pub loop_ms: u32,
    /// Media payload (audio + video tag bodies, sequence headers excluded) per second, in bits.
    pub payload_bps: f64,
    /// Frame key → tag index (ambiguous keys removed).
    pub keys: HashMap<u64, usize>,
    /// Per tag: when it was last handed to the publisher socket (ns since the tool started; 0 = never).
    pub sent_ns: Vec<AtomicU64>,
}

impl Source {
    pub fn load(path: &std::path::Path) -> Result<Source, String> {
        let file = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
        if file.len() < 13 || &file[..3] != b"FLV" {
            return Err(format!("{}: not an FLV file", path.display()));
        }
        let all = Bytes::from(file);
        let mut p = u32::from_be_bytes([all[5], all[6], all[7], all[8]]) as usize + 4;
        let mut tags = Vec::new();
        while p + 11 <= all.len() {
            let h = &all[p..p + 11];
            let kind = h[0] & 0x1f;
            let size = u32::from_be_bytes([0, h[1], h[2], h[3]]) as usize;
            let ts_ms = u32::from_be_bytes([h[7], h[4], h[5], h[6]]);
            if p + 11 + size > all.len() {
                break;
            }
            let data = all.slice(p + 11..p + 11 + size);
            if matches!(kind, 8 | 9 | 18) && !data.is_empty() {
                let seq_header = media::is_sequence_header(kind, &data);
                tags.push(Tag { kind, ts_ms, data, seq_header });
            }
            p += 11 + size + 4;
        }
        let videos: Vec<u32> = tags.iter().filter(|t| t.kind == 9 && !t.seq_header).map(|t| t.ts_ms).collect();
        if videos.len() < 2 {
            return Err(format!("{}: no video", path.display()));
        }
        let frame_ms = (videos[videos.len() - 1] - videos[0]) as f64 / (videos.len() - 1) as f64;
        let last = tags.iter().map(|t| t.ts_ms).max().unwrap_or(0);
        let loop_ms = last + frame_ms.round().max(1.0) as u32;
        let payload: usize = tags.iter().filter(|t| t.kind != 18 && !t.seq_header).map(|t| t.data.len()).sum();
        let payload_bps = payload as f64 * 8.0 * 1000.0 / loop_ms as f64;
        let mut keys = HashMap::new();
        let mut dup = Vec::new();
        for (i, t) in tags.iter().enumerate() {
            if t.kind == 9 {
                if let Some(k) = media::key_from_flv_video(&t.data) {
                    if keys.insert(k, i).is_some() {
                        dup.push(k);
                    }
                }
            }
        }
        for k in dup {
            keys.remove(&k);
        }
        let sent_ns = tags.iter().map(|_| AtomicU64::new(0)).collect();
        Ok(Source { tags, loop_ms, payload_bps, keys, sent_ns })
    }

    /// Live delay of a received frame (by key), in µs, if it was published by us.
    pub fn delay_us(&self, key: u64, arrival_ns: u64) -> Option<u64> {
        let i = *self.keys.get(&key)?;
        let sent = self.sent_ns[i].load(Relaxed);
        if sent == 0 || arrival_ns < sent {
            return None;
        }
        let d = (arrival_ns - sent) / 1000;
        // A frame of the previous pass over the file would look like a huge delay: ignore.
        (d < self.loop_ms as u64 * 1000 / 2).then_some(d)
    }
}
