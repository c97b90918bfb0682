//! The HLS master (multivariant) playlist of a stream with a ladder, and the bitrate figures it advertises.
//!
//! With a ladder on, `/live/KEY/index.m3u8` is this master playlist; the source's own media playlist moves to
//! `/live/KEY/source.m3u8` (same segments), and each rung's media playlist is its stream's own,
//! `/live/KEY_480p/index.m3u8`, referenced relatively as `../KEY_480p/index.m3u8`. Every variant carries
//! `BANDWIDTH` (peak), `AVERAGE-BANDWIDTH`, `RESOLUTION`, `FRAME-RATE` and `CODECS` (from the real SPS profile and
//! level, and the AAC object type). Segments start with an IDR in every variant, hence
//! `EXT-X-INDEPENDENT-SEGMENTS`.

pub use crate::formats::master::{render, Variant};

/// Length of the windows over which the peak bitrate is taken (media time).
const PEAK_WINDOW_MS: i64 = 2000;

/// Bitrate of a media flow measured on its own timestamps: the average since the start and the peak over
/// `PEAK_WINDOW_MS` windows.
#[derive(Debug, Clone, Default)]
pub struct RateStats {
    first_ms: Option<i64>,
    last_ms: i64,
    total_bytes: u64,
    window_start: i64,
    window_bytes: u64,
    peak_bps: u64,
}

impl RateStats {
    /// Counts `bytes` of media at timestamp `ms`.
    pub fn add(&mut self, ms: i64, bytes: usize) {
        let first = *self.first_ms.get_or_insert(ms);
        if self.total_bytes == 0 {
            self.window_start = first;
        }
        self.total_bytes += bytes as u64;
        self.last_ms = self.last_ms.max(ms);
        if ms - self.window_start >= PEAK_WINDOW_MS {
            let bps = self.window_bytes * 8 * 1000 / (ms - self.window_start) as u64;
            self.peak_bps = self.peak_bps.max(bps);
            self.window_start = ms;
            self.window_bytes = 0;
        }
        self.window_bytes += bytes as u64;
    }

    /// Media milliseconds measured.
    pub fn span_ms(&self) -> i64 {
        self.first_ms.map_or(0, |f| self.last_ms - f)
    }

    /// Average bits per second, once at least one peak window was measured.
    pub fn average(&self) -> Option<u64> {
        (self.span_ms() >= PEAK_WINDOW_MS).then(|| self.total_bytes * 8 * 1000 / self.span_ms() as u64)
    }

    /// Peak bits per second over the completed windows (at least the average).
    pub fn peak(&self) -> Option<u64> {
        self.average().map(|a| a.max(self.peak_bps))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_every_attribute() {
        let text = render(&[
            Variant {
                uri: "source.m3u8".into(),
                bandwidth: 3_200_000,
                average_bandwidth: 2_900_000,
                width: 1280,
                height: 720,
                frame_rate: 30.0,
                codecs: "avc1.64001f,mp4a.40.2".into(),
            },
            Variant {
                uri: "../cam_360p/index.m3u8".into(),
                bandwidth: 950_000,
                average_bandwidth: 860_000,
                width: 640,
                height: 360,
                frame_rate: 29.97,
                codecs: "avc1.4d401e".into(),
            },
        ]);
        assert!(text.starts_with("#EXTM3U\n#EXT-X-VERSION:3\n#EXT-X-INDEPENDENT-SEGMENTS\n"));
        assert!(text.contains(
            "#EXT-X-STREAM-INF:BANDWIDTH=3200000,AVERAGE-BANDWIDTH=2900000,RESOLUTION=1280x720,\
             FRAME-RATE=30.000,CODECS=\"avc1.64001f,mp4a.40.2\"\nsource.m3u8\n"
        ));
        assert!(text.contains("RESOLUTION=640x360,FRAME-RATE=29.970,CODECS=\"avc1.4d401e\"\n../cam_360p/index.m3u8\n"));
    }

    #[test]
    fn rates_average_and_peak() {
        let mut r = RateStats::default();
        assert_eq!(r.average(), None);
        // 1 s at 1000 bytes per 100 ms (80 kb/s), then 2 s at 2000 bytes per 100 ms (160 kb/s).
        for i in 0..10 {
            r.add(i * 100, 1000);
        }
        for i in 10..=30 {
            r.add(i * 100, 2000);
        }
        let avg = r.average().unwrap();
        assert!((120_000..=140_000).contains(&avg), "{avg}");
        let peak = r.peak().unwrap();
        assert!(peak >= avg && peak <= 170_000, "{peak}");
    }
}
