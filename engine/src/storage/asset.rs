//! A recording on storage, as pure data: object names, the VOD playlist and `asset.json` (no I/O, unit-tested).
//!
//! Layout under the storage root:
//!
//! | object | what |
//! |---|---|
//! | `vod/<id>/asset.json` | the [`Asset`]: stream, node, times, duration, bytes, renditions, state |
//! | `vod/<id>/<rendition>/init<N>.mp4` | fMP4 init segments (a new one after a codec change) |
//! | `vod/<id>/<rendition>/seg<I>-<µs>-i<N>[-d].<m4s\|ts>` | segment `I` of the recording: its duration in µs, the init segment it needs (0: none, MPEG-TS) and `-d` when a discontinuity precedes it |
//! | `vod/<id>/<rendition>/index.m3u8` | the VOD playlist (`EVENT` while recording, then `VOD` with `EXT-X-ENDLIST`) |
//!
//! A segment's name carries everything its playlist line needs, so a recording cut short (its node killed) is
//! listed again from its objects alone ([`SegmentEntry::parse`], [`render_playlist`]): what was written plays,
//! even if the playlist object is older than the last segment.

use std::fmt::Write;
use std::time::SystemTime;

use serde::{Deserialize, Serialize};

use crate::formats::master::{render, Variant};
pub use crate::formats::playlist::parse_rfc3339;
use crate::formats::playlist::rfc3339_millis;
use crate::formats::StreamKey;

/// Where every asset lives on storage.
pub const ROOT: &str = "vod";

/// A recording's state (see [`Asset::state`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AssetState {
    /// Being written now.
    Recording,
    /// Complete.
    Done,
    /// Cut short (its node stopped, or segments could not be stored): what was written plays.
    Partial,
    /// Nothing usable was written.
    Failed,
    /// An upload whose VOD job is still making its renditions.
    Processing,
}

/// One rendition of an asset.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Rendition {
    /// Folder name under the asset: `source`, or the rung's name (`480p`).
    pub name: String,
    /// Picture size, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub width: Option<u32>,
    /// Picture height, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub height: Option<u32>,
    /// Segments written.
    pub segments: u64,
    /// Bytes written (segments and init segments).
    pub bytes: u64,
    /// Seconds of media written.
    pub duration: f64,
    /// RFC 6381 codecs, e.g. `avc1.64001f,mp4a.40.2`, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub codecs: Option<String>,
    /// Frames per second, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub frame_rate: Option<f64>,
    /// The highest bitrate of one segment, bits per second (the master playlist's `BANDWIDTH`).
    #[serde(default)]
    pub peak_bps: u64,
}

impl Rendition {
    /// An empty rendition named `name`.
    pub fn new(name: &str) -> Rendition {
        Rendition {
            name: name.into(),
            width: None,
            height: None,
            segments: 0,
            bytes: 0,
            duration: 0.0,
            codecs: None,
            frame_rate: None,
            peak_bps: 0,
        }
    }
}

/// The master playlist of an asset with several renditions (the source first, where players start): each
/// rendition's playlist is `<name>/index.m3u8` beside it. Renditions without a segment are left out.
pub fn render_master(renditions: &[Rendition]) -> String {
    let variants: Vec<Variant> = renditions
        .iter()
        .filter(|r| r.segments > 0)
        .map(|r| {
            let average = if r.duration > 0.0 { (r.bytes as f64 * 8.0 / r.duration) as u64 } else { 0 };
            Variant {
                uri: format!("{}/index.m3u8", r.name),
                bandwidth: r.peak_bps.max(average),
                average_bandwidth: average,
                width: r.width.unwrap_or(0),
                height: r.height.unwrap_or(0),
                frame_rate: r.frame_rate.unwrap_or(0.0),
                codecs: r.codecs.clone().unwrap_or_default(),
            }
        })
        .collect();
    render(&variants)
}

/// A VOD asset: what `GET /api/v1/vod/{id}` returns and `asset.json` holds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Asset {
    /// `<app>-<name>-<UTC start, yyyymmddThhmmssmmmZ>`: unique per stream and start, URL-safe.
    pub id: String,
    /// `recording` or `upload`.
    pub kind: String,
    /// The recorded stream, `app/name` (empty for an upload).
    #[serde(default)]
    pub stream: String,
    /// The node that recorded it.
    pub node: String,
    /// When recording started (RFC 3339).
    pub started: String,
    /// When the recording last wrote this file (RFC 3339): a recording whose node stopped is told by it.
    pub updated: String,
    /// Seconds of media (the source rendition).
    pub duration: f64,
    /// Bytes on storage, every rendition.
    pub bytes: u64,
    /// The renditions, the source first.
    pub renditions: Vec<Rendition>,
    /// `recording`, `done`, `partial` or `failed`.
    pub state: AssetState,
    /// Why a recording is `partial` or `failed`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// An upload's file name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// The VOD job making an upload's renditions (`/api/v1/jobs/{job}`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job: Option<String>,
}

impl Asset {
    /// A new recording of `key` by `node`, starting at `started`.
    pub fn new(key: &StreamKey, node: &str, started: SystemTime) -> Asset {
        Asset {
            id: asset_id(key, started),
            kind: "recording".into(),
            stream: key.to_string(),
            node: node.into(),
            started: rfc3339_millis(started),
            updated: rfc3339_millis(started),
            duration: 0.0,
            bytes: 0,
            renditions: Vec::new(),
            state: AssetState::Recording,
            reason: None,
            name: None,
            job: None,
        }
    }

    /// A new upload of file `name` as asset `id` on `node`, to be made playable by job `id`.
    pub fn upload(id: &str, name: &str, node: &str, started: SystemTime) -> Asset {
        Asset {
            id: id.into(),
            kind: "upload".into(),
            stream: String::new(),
            node: node.into(),
            started: rfc3339_millis(started),
            updated: rfc3339_millis(started),
            duration: 0.0,
            bytes: 0,
            renditions: Vec::new(),
            state: AssetState::Processing,
            reason: None,
            name: Some(name.into()),
            job: Some(id.into()),
        }
    }

    /// `asset.json`'s bytes.
    pub fn to_json(&self) -> Vec<u8> {
        serde_json::to_vec_pretty(self).unwrap_or_default()
    }
}

/// `app-name-yyyymmddThhmmssmmmZ`.
pub fn asset_id(key: &StreamKey, started: SystemTime) -> String {
    let t = rfc3339_millis(started); // 2026-12-05T07:23:44.123Z
    let compact: String = t.chars().filter(|c| c.is_ascii_alphanumeric()).collect();
    format!("{}-{}-{compact}", key.app(), key.name())
}

/// Whether `id` can name an asset (what [`asset_id`] makes: letters, digits, `-`, `_`; no path tricks).
pub fn valid_id(id: &str) -> bool {
    (1..=200).contains(&id.len()) && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// `vod/<id>`.
pub fn asset_dir(id: &str) -> String {
    format!("{ROOT}/{id}")
}

/// `vod/<id>/asset.json`.
pub fn asset_json(id: &str) -> String {
    format!("{ROOT}/{id}/asset.json")
}

/// One recorded segment, as its object name says (see the module docs).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SegmentEntry {
    /// Its place in the recording, from 0.
    pub index: u64,
    /// Duration in microseconds.
    pub duration_us: u64,
    /// The init segment it needs (`init<N>.mp4`); 0 for MPEG-TS.
    pub init: u32,
    /// A discontinuity precedes it.
    pub discontinuity: bool,
}

impl SegmentEntry {
    /// Its object name inside the rendition's folder.
    pub fn name(&self) -> String {
        let ext = if self.init == 0 { "ts" } else { "m4s" };
        let d = if self.discontinuity { "-d" } else { "" };
        format!("seg{}-{}-i{}{d}.{ext}", self.index, self.duration_us, self.init)
    }

    /// The entry an object name describes; `None` for any other name.
    pub fn parse(name: &str) -> Option<SegmentEntry> {
        let (stem, ext) = name.strip_prefix("seg")?.rsplit_once('.')?;
        let (stem, discontinuity) = match stem.strip_suffix("-d") {
            Some(s) => (s, true),
            None => (stem, false),
        };
        // Plain decimal numbers only (no sign, no leading zero): one name per entry.
        fn num<T: std::str::FromStr>(s: &str) -> Option<T> {
            let plain = !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) && (s == "0" || !s.starts_with('0'));
            plain.then(|| s.parse().ok()).flatten()
        }
        let mut f = stem.split('-');
        let index = num(f.next()?)?;
        let duration_us = num(f.next()?)?;
        let init: u32 = num(f.next()?.strip_prefix('i')?)?;
        if f.next().is_some() || (ext == "ts") != (init == 0) || !matches!(ext, "ts" | "m4s") {
            return None;
        }
        Some(SegmentEntry { index, duration_us, init, discontinuity })
    }
}

/// `init<N>.mp4`.
pub fn init_name(n: u32) -> String {
    format!("init{n}.mp4")
}

/// The recording's media playlist: `EVENT` while it grows, `VOD` with `EXT-X-ENDLIST` once `ended`. URIs are
/// `uri_prefix` + object name (empty: the playlist sits beside its segments). `started`: the wall clock of the
/// first segment, for `EXT-X-PROGRAM-DATE-TIME`.
pub fn render_playlist(entries: &[SegmentEntry], ended: bool, uri_prefix: &str, started: Option<SystemTime>) -> String {
    let target = entries.iter().map(|e| (e.duration_us as f64 / 1e6).round() as u64).max().unwrap_or(1).max(1);
    let mut out = String::with_capacity(128 + entries.len() * 64);
    let _ = write!(
        out,
        "#EXTM3U\n#EXT-X-VERSION:6\n#EXT-X-TARGETDURATION:{target}\n#EXT-X-PLAYLIST-TYPE:{}\n\
         #EXT-X-MEDIA-SEQUENCE:0\n#EXT-X-INDEPENDENT-SEGMENTS\n",
        if ended { "VOD" } else { "EVENT" }
    );
    let mut map = 0;
    for (i, e) in entries.iter().enumerate() {
        if e.discontinuity && i > 0 {
            out.push_str("#EXT-X-DISCONTINUITY\n");
        }
        if e.init != 0 && e.init != map {
            map = e.init;
            let _ = writeln!(out, "#EXT-X-MAP:URI=\"{uri_prefix}{}\"", init_name(e.init));
        }
        if i == 0 {
            if let Some(t) = started {
                let _ = writeln!(out, "#EXT-X-PROGRAM-DATE-TIME:{}", rfc3339_millis(t));
            }
        }
        let _ = write!(out, "#EXTINF:{:.6},\n{uri_prefix}{}\n", e.duration_us as f64 / 1e6, e.name());
    }
    if ended {
        out.push_str("#EXT-X-ENDLIST\n");
    }
    out
}

/// The segments among a rendition folder's object names, in recording order.
pub fn entries_of<'a>(names: impl IntoIterator<Item = &'a str>) -> Vec<SegmentEntry> {
    let mut out: Vec<SegmentEntry> = names.into_iter().filter_map(SegmentEntry::parse).collect();
    out.sort_by_key(|e| e.index);
    out.dedup_by_key(|e| e.index);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, UNIX_EPOCH};

    #[test]
    fn segment_names_round_trip() {
        for e in [
            SegmentEntry { index: 0, duration_us: 2_000_000, init: 1, discontinuity: false },
            SegmentEntry { index: 41, duration_us: 1_966_667, init: 2, discontinuity: true },
            SegmentEntry { index: 7, duration_us: 33, init: 0, discontinuity: false },
        ] {
            assert_eq!(SegmentEntry::parse(&e.name()), Some(e), "{}", e.name());
        }
        for bad in [
            "index.m3u8",
            "init1.mp4",
            "seg1-2-i1.ts",
            "seg1-2-i0.m4s",
            "seg-1-2-i1.m4s",
            "seg1-2-i1-x.m4s",
            "seg01-2-i1.m4s",
            "seg+1-2-i1.m4s",
        ] {
            assert_eq!(SegmentEntry::parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn a_vod_playlist_lists_maps_discontinuities_and_ends() {
        let e = |index, init, discontinuity| SegmentEntry { index, duration_us: 2_000_000, init, discontinuity };
        let entries = [e(0, 1, false), e(1, 1, false), e(2, 2, true)];
        let started = UNIX_EPOCH + Duration::from_millis(1_764_919_424_123);
        let text = render_playlist(&entries, true, "source/", Some(started));
        let want = "#EXTM3U\n#EXT-X-VERSION:6\n#EXT-X-TARGETDURATION:2\n#EXT-X-PLAYLIST-TYPE:VOD\n\
            #EXT-X-MEDIA-SEQUENCE:0\n#EXT-X-INDEPENDENT-SEGMENTS\n#EXT-X-MAP:URI=\"source/init1.mp4\"\n\
            #EXT-X-PROGRAM-DATE-TIME:2025-12-05T07:23:44.123Z\n\
            #EXTINF:2.000000,\nsource/seg0-2000000-i1.m4s\n#EXTINF:2.000000,\nsource/seg1-2000000-i1.m4s\n\
            #EXT-X-DISCONTINUITY\n#EXT-X-MAP:URI=\"source/init2.mp4\"\n#EXTINF:2.000000,\nsource/seg2-2000000-i2-d.m4s\n\
            #EXT-X-ENDLIST\n";
        assert_eq!(text, want);
        let live = render_playlist(&entries[..1], false, "", None);
        assert!(live.contains("#EXT-X-PLAYLIST-TYPE:EVENT\n") && !live.contains("ENDLIST"), "{live}");
    }

    #[test]
    fn a_master_lists_the_renditions_that_have_segments_source_first() {
        let mut source = Rendition::new("source");
        (source.width, source.height, source.segments, source.bytes, source.duration) =
            (Some(1280), Some(720), 30, 7_500_000, 60.0);
        (source.codecs, source.frame_rate, source.peak_bps) =
            (Some("avc1.64001f,mp4a.40.2".into()), Some(30.0), 1_200_000);
        let mut r480 = Rendition::new("480p");
        (r480.width, r480.height, r480.segments, r480.bytes, r480.duration) =
            (Some(854), Some(480), 30, 3_750_000, 60.0);
        let empty = Rendition::new("240p");
        let text = render_master(&[source, r480, empty]);
        assert_eq!(
            text,
            "#EXTM3U\n#EXT-X-VERSION:3\n#EXT-X-INDEPENDENT-SEGMENTS\n\
             #EXT-X-STREAM-INF:BANDWIDTH=1200000,AVERAGE-BANDWIDTH=1000000,RESOLUTION=1280x720,FRAME-RATE=30.000,\
             CODECS=\"avc1.64001f,mp4a.40.2\"\nsource/index.m3u8\n\
             #EXT-X-STREAM-INF:BANDWIDTH=500000,AVERAGE-BANDWIDTH=500000,RESOLUTION=854x480\n480p/index.m3u8\n"
        );
    }

    #[test]
    fn entries_come_back_from_a_listing_in_order() {
        let names = ["seg10-1000-i1.m4s", "index.m3u8", "init1.mp4", "seg2-1000-i1.m4s", "seg9-1000-i1-d.m4s"];
        let idx: Vec<u64> = entries_of(names).iter().map(|e| e.index).collect();
        assert_eq!(idx, vec![2, 9, 10]);
    }

    #[test]
    fn ids_are_url_safe_and_times_parse_back() {
        let key = StreamKey::new("live", "cam_1").unwrap();
        let t = UNIX_EPOCH + Duration::from_millis(1_764_919_424_123);
        assert_eq!(asset_id(&key, t), "live-cam_1-20251205T072344123Z");
        assert!(valid_id(&asset_id(&key, t)));
        assert!(!valid_id("../etc") && !valid_id("a/b") && !valid_id(""));
        assert_eq!(parse_rfc3339(&rfc3339_millis(t)), Some(t));
        assert_eq!(parse_rfc3339("yesterday"), None);
    }
}
