//! The live segment window of one stream and its media playlist (RFC 8216), as a pure data structure.
//!
//! Rules kept here (see `hls-checklist.md`):
//! - `EXT-X-TARGETDURATION` is never below any listed `EXTINF` rounded to the nearest integer, and never
//!   decreases during a stream (players must not see it change downwards).
//! - `EXT-X-MEDIA-SEQUENCE` only grows; segment names embed the stream incarnation and the sequence number, so
//!   a name is never reused for different content.
//! - `EXT-X-DISCONTINUITY` precedes the first segment after a publisher reconnect or a codec change;
//!   `EXT-X-DISCONTINUITY-SEQUENCE` counts the discontinuities that slid out of the window.
//! - `EXT-X-PROGRAM-DATE-TIME` on every segment; `EXT-X-ENDLIST` once the stream has ended for good.

use std::collections::VecDeque;
use std::fmt::Write;
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;

/// One finished segment.
#[derive(Debug, Clone)]
pub struct Segment {
    /// Media sequence number.
    pub msn: u64,
    /// File name (relative URI).
    pub name: String,
    /// Duration in seconds.
    pub duration: f64,
    /// Wall-clock time of its first frame.
    pub program_date_time: SystemTime,
    /// A discontinuity precedes it.
    pub discontinuity: bool,
    /// The MPEG-TS bytes.
    pub data: Bytes,
}

/// The segment window of one stream.
#[derive(Debug)]
pub struct Playlist {
    window: usize,
    retained: usize,
    target: u64,
    segments: VecDeque<Segment>,
    /// Discontinuities (on segments) that left the playlist window.
    discontinuity_sequence: u64,
    ended: bool,
    independent: bool,
}

impl Playlist {
    /// An empty playlist listing `window` segments and keeping `retained` more for late fetches.
    pub fn new(window: usize, retained: usize, target_secs: f64) -> Playlist {
        let min_target = target_secs.round().max(1.0) as u64;
        Playlist {
            window: window.max(1),
            retained,
            target: min_target,
            segments: VecDeque::new(),
            discontinuity_sequence: 0,
            ended: false,
            independent: true,
        }
    }

    /// Appends a finished segment and slides the window.
    pub fn push(&mut self, seg: Segment) {
        self.target = self.target.max(seg.duration.round().max(1.0) as u64);
        self.segments.push_back(seg);
        while self.segments.len() > self.window + self.retained {
            self.pop_front();
        }
    }

    /// Marks whether every segment starts with a keyframe (`EXT-X-INDEPENDENT-SEGMENTS`).
    pub fn set_independent(&mut self, independent: bool) {
        self.independent = independent;
    }

    /// Marks the stream ended (adds `EXT-X-ENDLIST`).
    pub fn set_ended(&mut self, ended: bool) {
        self.ended = ended;
    }

    /// Whether the stream has ended.
    pub fn ended(&self) -> bool {
        self.ended
    }

    /// Number of segments listed.
    pub fn listed(&self) -> usize {
        self.segments.len().min(self.window)
    }

    /// Every segment held (listed and retained), oldest first.
    pub fn segments(&self) -> impl Iterator<Item = &Segment> {
        self.segments.iter()
    }

    /// Looks up a segment (listed or retained) by file name.
    pub fn segment(&self, name: &str) -> Option<&Segment> {
        self.segments.iter().find(|s| s.name == name)
    }

    /// The most recent segment.
    pub fn last(&self) -> Option<&Segment> {
        self.segments.back()
    }

    /// The current target duration in whole seconds.
    pub fn target_duration(&self) -> u64 {
        self.target
    }

    /// Renders the media playlist; `None` while no segment exists.
    pub fn render(&self) -> Option<String> {
        if self.segments.is_empty() {
            return None;
        }
        let start = self.segments.len().saturating_sub(self.window);
        let listed: Vec<&Segment> = self.segments.iter().skip(start).collect();
        let first = listed.first()?;
        // Discontinuities before the first listed segment: those already dropped plus those retained but unlisted.
        let disc_seq =
            self.discontinuity_sequence + self.segments.iter().take(start).filter(|s| s.discontinuity).count() as u64;
        let mut out = String::with_capacity(256 + listed.len() * 96);
        let _ = write!(
            out,
            "#EXTM3U\n#EXT-X-VERSION:3\n#EXT-X-TARGETDURATION:{}\n#EXT-X-MEDIA-SEQUENCE:{}\n",
            self.target, first.msn
        );
        if disc_seq > 0 {
            let _ = writeln!(out, "#EXT-X-DISCONTINUITY-SEQUENCE:{disc_seq}");
        }
        if self.independent {
            out.push_str("#EXT-X-INDEPENDENT-SEGMENTS\n");
        }
        for s in listed {
            if s.discontinuity {
                out.push_str("#EXT-X-DISCONTINUITY\n");
            }
            let _ = write!(
                out,
                "#EXT-X-PROGRAM-DATE-TIME:{}\n#EXTINF:{:.3},\n{}\n",
                rfc3339_millis(s.program_date_time),
                s.duration,
                s.name
            );
        }
        if self.ended {
            out.push_str("#EXT-X-ENDLIST\n");
        }
        Some(out)
    }

    /// The discontinuity number of the newest segment (discontinuities since the stream began).
    pub fn discontinuity_count(&self) -> u64 {
        self.discontinuity_sequence + self.segments.iter().filter(|s| s.discontinuity).count() as u64
    }

    /// Continues another playlist of the same stream (a new owner node): the next segment, which must carry a
    /// discontinuity, gets discontinuity number `count + 1`.
    pub fn resume_after(&mut self, count: u64) {
        self.discontinuity_sequence = count;
    }

    /// Drops the oldest segment, keeping the discontinuity count right.
    fn pop_front(&mut self) -> Option<Segment> {
        let s = self.segments.pop_front()?;
        if s.discontinuity {
            self.discontinuity_sequence += 1;
        }
        Some(s)
    }
}

/// Formats a time as `YYYY-MM-DDTHH:MM:SS.mmmZ` (UTC).
pub fn rfc3339_millis(t: SystemTime) -> String {
    let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = d.as_secs() as i64;
    let millis = d.subsec_millis();
    let days = secs.div_euclid(86_400);
    let sod = secs.rem_euclid(86_400);
    // Civil-from-days (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = if month <= 2 { y + 1 } else { y };
    format!("{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{millis:03}Z", sod / 3600, (sod % 3600) / 60, sod % 60)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn seg(msn: u64, dur: f64, disc: bool) -> Segment {
        Segment {
            msn,
            name: format!("x-{msn}.ts"),
            duration: dur,
            program_date_time: UNIX_EPOCH + Duration::from_secs(1_700_000_000 + msn * 2),
            discontinuity: disc,
            data: Bytes::new(),
        }
    }

    #[test]
    fn formats_dates() {
        assert_eq!(rfc3339_millis(UNIX_EPOCH), "1970-01-01T00:00:00.000Z");
        let t = UNIX_EPOCH + Duration::from_millis(1_795_651_200_123);
        assert_eq!(rfc3339_millis(t), "2026-11-26T00:00:00.123Z");
        let leap = UNIX_EPOCH + Duration::from_secs(951_782_400); // 2000-02-29
        assert_eq!(rfc3339_millis(leap), "2000-02-29T00:00:00.000Z");
    }

    #[test]
    fn window_slides_and_counts_discontinuities() {
        let mut p = Playlist::new(3, 2, 2.0);
        assert!(p.render().is_none());
        for i in 0..4 {
            p.push(seg(i, 2.0, i == 2));
        }
        let text = p.render().unwrap();
        assert!(text.contains("#EXT-X-MEDIA-SEQUENCE:1\n"), "{text}");
        assert!(!text.contains("DISCONTINUITY-SEQUENCE"));
        assert_eq!(text.matches("#EXT-X-DISCONTINUITY\n").count(), 1);
        for i in 4..8 {
            p.push(seg(i, 2.0, false));
        }
        let text = p.render().unwrap();
        assert!(text.contains("#EXT-X-MEDIA-SEQUENCE:5\n"), "{text}");
        assert!(text.contains("#EXT-X-DISCONTINUITY-SEQUENCE:1\n"), "{text}");
        assert!(!text.contains("#EXT-X-DISCONTINUITY\n"));
        // Retained but unlisted segments are still served.
        assert!(p.segment("x-3.ts").is_some());
        assert!(p.segment("x-0.ts").is_none());
        assert_eq!(text.matches("#EXT-X-PROGRAM-DATE-TIME:").count(), 3);
    }

    #[test]
    fn a_new_owner_continues_the_discontinuity_numbering() {
        // The old owner: one discontinuity among its segments, one already dropped from its window.
        let mut old = Playlist::new(2, 0, 2.0);
        for (i, d) in [(0, false), (1, true), (2, false), (3, true), (4, false)] {
            old.push(seg(i, 2.0, d));
        }
        assert_eq!(old.discontinuity_count(), 2);
        // The new owner resumes after it: its first segment carries the tag, the sequence says where it starts.
        let mut new = Playlist::new(2, 0, 2.0);
        new.resume_after(old.discontinuity_count());
        new.push(seg(6, 2.0, true));
        let text = new.render().unwrap();
        assert!(text.contains("#EXT-X-MEDIA-SEQUENCE:6\n#EXT-X-DISCONTINUITY-SEQUENCE:2\n"), "{text}");
        assert!(text.contains("#EXT-X-DISCONTINUITY\n"), "{text}");
        new.push(seg(7, 2.0, false));
        new.push(seg(8, 2.0, false));
        assert!(new.render().unwrap().contains("#EXT-X-DISCONTINUITY-SEQUENCE:3\n"));
    }

    #[test]
    fn target_duration_covers_rounded_extinf_and_never_shrinks() {
        let mut p = Playlist::new(3, 0, 2.0);
        p.push(seg(0, 2.4, false));
        assert_eq!(p.target_duration(), 2);
        p.push(seg(1, 4.6, false));
        assert_eq!(p.target_duration(), 5);
        for i in 2..6 {
            p.push(seg(i, 2.0, false));
        }
        assert_eq!(p.target_duration(), 5);
        p.set_ended(true);
        assert!(p.render().unwrap().ends_with("#EXT-X-ENDLIST\n"));
    }
}
