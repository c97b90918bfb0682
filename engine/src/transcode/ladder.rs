//! Ladder planning (pure): which rungs a source gets, their picture sizes and their stream keys.
//!
//! **Rung keys.** A rung of stream `app/KEY` is the stream `app/KEY_<height>p` (e.g. `live/KEY_480p`): a stream
//! of its own, served over RTMP (`rtmp://host/live/KEY_480p`), HTTP-FLV (`/live/KEY_480p.flv`) and HLS
//! (`/live/KEY_480p/index.m3u8`), and relayed by the cluster like any stream. The name stays inside
//! [`StreamKey`]'s rules (`[A-Za-z0-9_.-]`, at most 128 characters); a source whose name is too long for the
//! suffix gets no ladder. While transcoding is on, names ending in `_<height>p` for a configured height are
//! reserved: an outside publisher cannot take them (see [`is_rung_name`]).
//!
//! **Never upscale.** A rung at or above the source's height is skipped (the source itself is the top variant).
//! Widths follow the source's aspect ratio, rounded to an even number (4:2:0 chroma).

use super::pipeline::RungSpec;
use crate::config::RungConfig;
use crate::stream::StreamKey;

/// One planned rung for a given source.
#[derive(Debug, Clone, PartialEq)]
pub struct RungPlan {
    /// Short name, e.g. `480p` (metric label and key suffix).
    pub name: String,
    /// The rung's own stream key (`app/KEY_480p`).
    pub key: StreamKey,
    /// Picture width (even).
    pub width: u32,
    /// Picture height (even).
    pub height: u32,
    /// Its configuration (bitrates, preset, profile).
    pub config: RungConfig,
}

impl RungPlan {
    /// The encoder settings of this rung: its size, bitrates (maxrate and bufsize with their defaults resolved),
    /// preset and profile; what the encoder worker gives [`super::pipeline::Pipeline::new`] for it.
    pub fn spec(&self) -> RungSpec {
        RungSpec {
            width: self.width,
            height: self.height,
            bitrate_kbps: self.config.bitrate_kbps,
            maxrate_kbps: self.config.maxrate(),
            bufsize_kbits: self.config.bufsize(),
            preset: self.config.preset.clone(),
            profile: self.config.profile.clone(),
        }
    }
}

/// The stream key of `source`'s rung at `height`, if the name fits [`StreamKey`]'s rules.
pub fn rung_key(source: &StreamKey, height: u32) -> Option<StreamKey> {
    source.rung(height)
}

/// Whether `key` names a rung of some source under `rungs` (reserved for the ladder while transcoding is on).
pub fn is_rung_name(key: &StreamKey, rungs: &[RungConfig]) -> bool {
    key.is_rung_at(rungs.iter().map(|r| r.height))
}

/// The source of rung `key` under `rungs` (`live/KEY_480p` → `live/KEY`), if `key` names a rung.
pub fn source_of(key: &StreamKey, rungs: &[RungConfig]) -> Option<StreamKey> {
    rungs
        .iter()
        .filter_map(|r| key.name().strip_suffix(&format!("_{}p", r.height)))
        .find(|base| !base.is_empty())
        .and_then(|base| StreamKey::new(key.app(), base).ok())
}

/// The even width for `height` that keeps the source's aspect ratio.
pub fn scaled_width(src_width: u32, src_height: u32, height: u32) -> u32 {
    if src_height == 0 {
        return 2;
    }
    let exact = u64::from(src_width) * u64::from(height) * 2 / u64::from(src_height);
    // `exact` is twice the width: round to the nearest even width.
    let w = (exact + 2) / 4 * 2;
    (w as u32).max(2)
}

/// The rungs `source` (of `src_width`×`src_height`) gets: every configured rung below the source's height,
/// tallest first.
pub fn plan(source: &StreamKey, src_width: u32, src_height: u32, rungs: &[RungConfig]) -> Vec<RungPlan> {
    let mut out: Vec<RungPlan> = rungs
        .iter()
        .filter(|r| r.height < src_height)
        .filter_map(|r| {
            Some(RungPlan {
                name: format!("{}p", r.height),
                key: rung_key(source, r.height)?,
                width: scaled_width(src_width, src_height, r.height),
                height: r.height,
                config: r.clone(),
            })
        })
        .collect();
    out.sort_by_key(|r| std::cmp::Reverse(r.height));
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::TranscodeConfig;

    fn key(s: &str) -> StreamKey {
        StreamKey::parse(s).unwrap()
    }

    #[test]
    fn never_upscales_and_keeps_the_aspect_ratio() {
        let rungs = TranscodeConfig::default().rungs;
        let p = plan(&key("live/cam"), 1280, 720, &rungs);
        let got: Vec<(String, u32, u32)> = p.iter().map(|r| (r.key.to_string(), r.width, r.height)).collect();
        assert_eq!(
            got,
            vec![
                ("live/cam_480p".to_string(), 854, 480),
                ("live/cam_360p".to_string(), 640, 360),
                ("live/cam_240p".to_string(), 426, 240),
            ]
        );
        let p = plan(&key("live/cam"), 1920, 1080, &rungs);
        assert_eq!(p.iter().map(|r| r.width).collect::<Vec<_>>(), vec![1280, 854, 640, 426]);
        assert_eq!(plan(&key("live/cam"), 854, 480, &rungs).len(), 2, "480p source: 360p and 240p");
        let s = p[1].spec();
        assert_eq!((s.width, s.height, s.bitrate_kbps, s.maxrate_kbps, s.bufsize_kbits), (854, 480, 1400, 1540, 2100));
        assert_eq!((s.preset.as_str(), s.profile.as_str()), ("veryfast", "main"));
        assert!(plan(&key("live/cam"), 426, 240, &rungs).is_empty(), "240p source: no ladder");
        // 4:3 and odd results round to even.
        assert_eq!(scaled_width(640, 480, 240), 320);
        assert_eq!(scaled_width(1000, 562, 360) % 2, 0);
    }

    #[test]
    fn rung_names_and_reservation() {
        let rungs = TranscodeConfig::default().rungs;
        assert!(is_rung_name(&key("live/cam_480p"), &rungs));
        assert!(!is_rung_name(&key("live/cam_481p"), &rungs));
        assert!(!is_rung_name(&key("live/cam"), &rungs));
        assert!(!is_rung_name(&key("live/_480p"), &rungs), "a bare suffix is an ordinary name");
        let long = "k".repeat(126);
        assert!(rung_key(&key(&format!("live/{long}")), 480).is_none(), "name too long for the suffix");
        assert!(plan(&key(&format!("live/{long}")), 1280, 720, &rungs).is_empty());
        assert_eq!(source_of(&key("live/cam_480p"), &rungs), Some(key("live/cam")));
        assert_eq!(source_of(&key("live/a_b_240p"), &rungs), Some(key("live/a_b")));
        assert_eq!(source_of(&key("live/cam"), &rungs), None);
        assert_eq!(source_of(&key("live/_480p"), &rungs), None);
    }
}
