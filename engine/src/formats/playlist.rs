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
//!
//! With parts on ([`Playlist::enable_parts`]: LL-HLS, draft-pantos-hls-rfc8216bis), in fMP4:
//! - `EXT-X-MAP` names the init segment, again after a discontinuity that changed it;
//! - `EXT-X-SERVER-CONTROL` (`CAN-BLOCK-RELOAD=YES`, `PART-HOLD-BACK` = 3 × PART-TARGET, `CAN-SKIP-UNTIL` =
//!   6 × TARGETDURATION) and `EXT-X-PART-INF`;
//! - `EXT-X-PART` for the segments of the last three target durations and for the segment being made, then
//!   `EXT-X-PRELOAD-HINT` for the next part;
//! - a delta update ([`Playlist::render_skip`]) replaces the segments older than CAN-SKIP-UNTIL with
//!   `EXT-X-SKIP`.
//!
//! With a DVR window ([`Playlist::set_dvr`]: `hls.dvr_window_secs`), the playlist lists that much history: the
//! segments beyond the window and the retained ones keep their entry (name, duration, date, discontinuity) but
//! not their bytes, which the recording serves from storage ([`crate::stream::ports::DvrStore`]).

use std::collections::VecDeque;
use std::fmt::Write;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

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
    /// The segment's bytes (MPEG-TS, or the fMP4 fragments of its parts).
    pub data: Bytes,
    /// Its parts (LL-HLS), in order.
    pub parts: Vec<PartInfo>,
    /// The init segment it needs (fMP4).
    pub map: Option<String>,
    /// `EXT-X-GAP`: listed, but not to be loaded (the segment a node that went away had open, closed by the next
    /// owner; see [`close_open_segment`]).
    pub gap: bool,
}

/// One partial segment as a playlist lists it.
#[derive(Debug, Clone, PartialEq)]
pub struct PartInfo {
    /// File name (relative URI).
    pub name: String,
    /// Duration in seconds.
    pub duration: f64,
    /// Starts with a keyframe.
    pub independent: bool,
}

/// The segment being made, with the parts it has so far (LL-HLS).
#[derive(Debug, Clone)]
struct OpenSegment {
    msn: u64,
    discontinuity: bool,
    map: Option<String>,
    program_date_time: SystemTime,
    parts: Vec<PartInfo>,
}

/// The segment window of one stream.
#[derive(Debug)]
pub struct Playlist {
    window: usize,
    retained: usize,
    target: u64,
    /// The configured target duration (the least `target` may be).
    min_target: u64,
    segments: VecDeque<Segment>,
    /// Discontinuities (on segments) that left the playlist window.
    discontinuity_sequence: u64,
    ended: bool,
    independent: bool,
    /// PART-TARGET in seconds when parts are on.
    part_target: Option<f64>,
    open: Option<OpenSegment>,
    preload: Option<String>,
    /// DVR: seconds of history listed (0: off).
    dvr_secs: f64,
}

impl Playlist {
    /// An empty playlist listing `window` segments and keeping `retained` more for late fetches.
    pub fn new(window: usize, retained: usize, target_secs: f64) -> Playlist {
        let min_target = target_secs.round().max(1.0) as u64;
        Playlist {
            window: window.max(1),
            retained,
            target: min_target,
            min_target,
            segments: VecDeque::new(),
            discontinuity_sequence: 0,
            ended: false,
            independent: true,
            part_target: None,
            open: None,
            preload: None,
            dvr_secs: 0.0,
        }
    }

    /// Lists `secs` of history (DVR, see the module docs); 0 turns it off.
    pub fn set_dvr(&mut self, secs: f64) {
        self.dvr_secs = secs.max(0.0);
    }

    /// Lists parts of `part_target` seconds (LL-HLS).
    pub fn enable_parts(&mut self, part_target: f64) {
        self.part_target = Some(part_target);
    }

    /// The segment `msn` is being made (its parts follow with [`Playlist::push_part`]).
    pub fn open_segment(&mut self, msn: u64, discontinuity: bool, map: Option<String>, program_date_time: SystemTime) {
        self.open = Some(OpenSegment { msn, discontinuity, map, program_date_time, parts: Vec::new() });
    }

    /// A part of the open segment is complete.
    pub fn push_part(&mut self, part: PartInfo) {
        if let Some(o) = self.open.as_mut() {
            o.parts.push(part);
        }
    }

    /// The part a player may ask for next, before it exists (`EXT-X-PRELOAD-HINT`); `None` once the stream ends.
    pub fn set_preload_hint(&mut self, name: Option<String>) {
        self.preload = name;
    }

    /// Where the newest part stands: `(msn, part index)` of the part after the last complete one. A blocking
    /// request for `(msn, part)` can be answered once it is below this.
    pub fn next_part(&self) -> Option<(u64, u64)> {
        match &self.open {
            Some(o) => Some((o.msn, o.parts.len() as u64)),
            None => self.segments.back().map(|s| (s.msn + 1, 0)),
        }
    }

    /// Appends a finished segment (closing the open one), slides the window and recomputes the target duration.
    pub fn push(&mut self, seg: Segment) {
        self.open = None;
        self.segments.push_back(seg);
        self.slide();
        // The longest listed segment, rounded, and at least the configured target: what players rely on (RFC 8216
        // 4.3.3.1: every EXTINF, rounded, at most the target). Recomputed from the listed segments, as nginx-rtmp
        // and MediaMTX do, so one long GOP does not slow every player's reloads (and lengthen its hold-back) for
        // the rest of the stream; the draft's "MUST NOT change" is broken either way once a segment outgrows the
        // configured target.
        let start = self.segments.len().saturating_sub(self.listed_max());
        // As written (`EXTINF:{:.3}`), then rounded: 2.4996 is written 2.500 and rounds to 3.
        let rounded = |d: f64| ((d * 1000.0).round() / 1000.0).round().max(1.0) as u64;
        let longest = self.segments.iter().skip(start).map(|s| rounded(s.duration)).max();
        self.target = self.min_target.max(longest.unwrap_or(0));
    }

    fn slide(&mut self) {
        let held = self.window + self.retained;
        if self.dvr_secs <= 0.0 {
            while self.segments.len() > held {
                self.pop_front();
            }
            return;
        }
        // DVR: the segment that just left the held ones keeps its entry, not its bytes; entries go once the rest
        // still covers the DVR window.
        if let Some(old) = self.segments.len().checked_sub(held + 1).and_then(|i| self.segments.get_mut(i)) {
            old.data = Bytes::new();
            old.parts = Vec::new();
        }
        let mut listed_secs: f64 = self.segments.iter().map(|s| s.duration).sum();
        while self.segments.len() > held {
            let Some(front) = self.segments.front() else { break };
            if listed_secs - front.duration < self.dvr_secs {
                break;
            }
            listed_secs -= front.duration;
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
        self.segments.len().min(self.listed_max())
    }

    /// How many segments may be listed: the window, or every entry held with a DVR window.
    fn listed_max(&self) -> usize {
        if self.dvr_secs > 0.0 {
            usize::MAX
        } else {
            self.window
        }
    }

    /// Every segment held with its bytes (listed and retained), oldest first (DVR entries without bytes are not).
    pub fn segments(&self) -> impl Iterator<Item = &Segment> {
        self.segments.iter().filter(|s| !s.data.is_empty())
    }

    /// Looks up a segment held with its bytes (listed or retained) by file name.
    pub fn segment(&self, name: &str) -> Option<&Segment> {
        self.segments.iter().find(|s| s.name == name && !s.data.is_empty())
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
        self.render_with(false)
    }

    /// Renders the delta update of the media playlist (`_HLS_skip=YES`): the segments older than CAN-SKIP-UNTIL
    /// become `EXT-X-SKIP`. `None` when there is nothing to skip (the full playlist is the answer) or parts are
    /// off.
    pub fn render_skip(&self) -> Option<String> {
        self.part_target?;
        self.render_with(true).filter(|t| t.contains("#EXT-X-SKIP:"))
    }

    fn render_with(&self, skip: bool) -> Option<String> {
        if self.segments.is_empty() {
            return None;
        }
        let start = self.segments.len().saturating_sub(self.listed_max());
        let listed: Vec<&Segment> = self.segments.iter().skip(start).collect();
        let first = listed.first()?;
        // Discontinuities before the first listed segment: those already dropped plus those retained but unlisted.
        let disc_seq =
            self.discontinuity_sequence + self.segments.iter().take(start).filter(|s| s.discontinuity).count() as u64;
        let ll = self.part_target;
        let target = self.target as f64;
        let version = if ll.is_some() {
            9
        } else if first.map.is_some() {
            7
        } else {
            3
        };
        let mut out = String::with_capacity(512 + listed.len() * 96 * if ll.is_some() { 8 } else { 1 });
        let _ = write!(out, "#EXTM3U\n#EXT-X-VERSION:{version}\n#EXT-X-TARGETDURATION:{}\n", self.target);
        if let Some(pt) = ll {
            let _ = write!(
                out,
                "#EXT-X-SERVER-CONTROL:CAN-BLOCK-RELOAD=YES,CAN-SKIP-UNTIL={:.1},PART-HOLD-BACK={:.3}\n\
                 #EXT-X-PART-INF:PART-TARGET={pt:.3}\n",
                6.0 * target,
                3.0 * pt
            );
        }
        let _ = writeln!(out, "#EXT-X-MEDIA-SEQUENCE:{}", first.msn);
        if disc_seq > 0 {
            let _ = writeln!(out, "#EXT-X-DISCONTINUITY-SEQUENCE:{disc_seq}");
        }
        if self.independent {
            out.push_str("#EXT-X-INDEPENDENT-SEGMENTS\n");
        }
        // Seconds from each listed segment's start to the live edge (the open segment's parts included).
        let open_secs: f64 = self.open.as_ref().map_or(0.0, |o| o.parts.iter().map(|p| p.duration).sum());
        let mut to_edge = Vec::with_capacity(listed.len());
        let mut acc = open_secs;
        for s in listed.iter().rev() {
            acc += s.duration;
            to_edge.push(acc);
        }
        to_edge.reverse();
        // Skipped: segments that end more than CAN-SKIP-UNTIL before the live edge.
        let skipped = match skip {
            true => listed.iter().zip(&to_edge).take_while(|(s, &d)| d - s.duration > 6.0 * target).count(),
            false => 0,
        };
        if skipped > 0 {
            let _ = writeln!(out, "#EXT-X-SKIP:SKIPPED-SEGMENTS={skipped}");
        }
        let mut map = if skipped > 0 { listed[skipped - 1].map.as_ref() } else { None };
        for (s, edge) in listed.iter().zip(&to_edge).skip(skipped) {
            if s.discontinuity {
                out.push_str("#EXT-X-DISCONTINUITY\n");
            }
            if s.map.is_some() && s.map.as_ref() != map {
                let _ = writeln!(out, "#EXT-X-MAP:URI=\"{}\"", s.map.as_deref().unwrap_or_default());
                map = s.map.as_ref();
            }
            let _ = writeln!(out, "#EXT-X-PROGRAM-DATE-TIME:{}", rfc3339_millis(s.program_date_time));
            // Parts are listed for the last three target durations only.
            if ll.is_some() && *edge - s.duration < 3.0 * target {
                write_parts(&mut out, &s.parts);
            }
            let gap = if s.gap { "#EXT-X-GAP\n" } else { "" };
            let _ = write!(out, "#EXTINF:{:.3},\n{gap}{}\n", s.duration, s.name);
        }
        let open_listed = self.open.as_ref().is_some_and(|o| !o.parts.is_empty() || self.preload.is_some());
        if let (Some(_), false, false, Some(last)) = (ll, open_listed, self.ended, listed.last()) {
            // Nothing open (the publisher left): the next segment's date, where it would start. hls.js (1.7) takes a
            // playlist that ends right at a segment URI as if that segment were still open, and refuses the next
            // playlist (the following segment) as "media sequence mismatch", a fatal error.
            let next = last.program_date_time + Duration::from_secs_f64(last.duration);
            let _ = writeln!(out, "#EXT-X-PROGRAM-DATE-TIME:{}", rfc3339_millis(next));
        }
        if let (Some(_), Some(o)) = (ll, &self.open) {
            if !o.parts.is_empty() || self.preload.is_some() {
                if o.discontinuity {
                    out.push_str("#EXT-X-DISCONTINUITY\n");
                }
                if o.map.is_some() && o.map.as_ref() != map {
                    let _ = writeln!(out, "#EXT-X-MAP:URI=\"{}\"", o.map.as_deref().unwrap_or_default());
                }
                let _ = writeln!(out, "#EXT-X-PROGRAM-DATE-TIME:{}", rfc3339_millis(o.program_date_time));
                write_parts(&mut out, &o.parts);
            }
        }
        if let (Some(_), Some(hint), false) = (ll, &self.preload, self.ended) {
            let _ = writeln!(out, "#EXT-X-PRELOAD-HINT:TYPE=PART,URI=\"{hint}\"");
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

    /// Like [`Playlist::resume_after`], listing the previous owner's `window` first (see [`resumable_window`]):
    /// entries without bytes here (a request for one finds none), so that players polling any node see one
    /// playlist going on — the segments they have, then the new owner's after a discontinuity — and a playlist
    /// exists from the new owner's first part instead of its first whole segment.
    pub fn resume_with(&mut self, count: u64, window: &[ListedSegment]) {
        let flagged = window.iter().filter(|s| s.discontinuity).count() as u64;
        self.discontinuity_sequence = count.saturating_sub(flagged);
        for s in window {
            self.segments.push_back(Segment {
                msn: s.msn,
                name: s.uri.clone(),
                duration: s.duration,
                program_date_time: s.program_date_time.unwrap_or(UNIX_EPOCH),
                discontinuity: s.discontinuity,
                data: Bytes::new(),
                parts: s.parts.clone(),
                map: s.map.clone(),
                gap: s.gap,
            });
        }
        self.slide();
        let rounded = |d: f64| ((d * 1000.0).round() / 1000.0).round().max(1.0) as u64;
        let longest = self.segments.iter().map(|s| rounded(s.duration)).max();
        self.target = self.min_target.max(longest.unwrap_or(0));
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

/// Where an LL-HLS playlist text stands: `(msn, part)` of the first part it does not list yet, and whether it
/// has ended. What a node that serves another node's playlist needs to hold blocking requests; `None` for a
/// playlist without parts.
pub fn next_part_in(text: &str) -> Option<((u64, u64), bool)> {
    let mut msn = None;
    let mut skipped = 0;
    let mut parts = 0u64;
    let mut has_parts = false;
    for line in text.lines() {
        if let Some(v) = line.strip_prefix("#EXT-X-MEDIA-SEQUENCE:") {
            msn = v.trim().parse::<u64>().ok();
        } else if let Some(v) = line.strip_prefix("#EXT-X-SKIP:SKIPPED-SEGMENTS=") {
            skipped = v.split(',').next()?.trim().parse::<u64>().ok()?;
        } else if line.starts_with("#EXT-X-PART-INF:") {
            has_parts = true;
        } else if line.starts_with("#EXT-X-PART:") {
            parts += 1;
        } else if !line.starts_with('#') && !line.trim().is_empty() {
            msn = msn.map(|m| m + 1);
            parts = 0;
        }
    }
    has_parts.then_some(((msn? + skipped, parts), text.contains("#EXT-X-ENDLIST")))
}

/// The last playlist of a stream that has no owner right now (its node died or drained; the publisher is on
/// its way to another node), as other nodes serve it meanwhile: the open segment is closed — its listed parts
/// stay, an `EXTINF` of their sum and `EXT-X-GAP` mark it complete but not to be loaded whole (its node is gone)
/// — and the preload hint goes (that part will never exist). The text ends with the next segment's date, as
/// [`Playlist::render`] ends a playlist with nothing open. A player then holds the open segment's number as the
/// playlist's last, so the next owner's first segment (that number + 1, after a discontinuity) joins it exactly
/// instead of leaving a hole in the player's timeline. `None` when nothing is open (nothing to change).
pub fn close_open_segment(text: &str) -> Option<String> {
    if text.contains("#EXT-X-ENDLIST") || !text.contains("#EXT-X-PART-INF:") {
        return None;
    }
    let lines: Vec<&str> = text.lines().collect();
    let is_uri = |l: &str| !l.starts_with('#') && !l.trim().is_empty();
    let after_last_uri = lines.iter().rposition(|l| is_uri(l)).map_or(0, |i| i + 1);
    let open = &lines[after_last_uri..];
    let parts: Vec<&str> = open.iter().copied().filter(|l| l.starts_with("#EXT-X-PART:")).collect();
    let hint = open.iter().any(|l| l.starts_with("#EXT-X-PRELOAD-HINT:"));
    if parts.is_empty() {
        // At most a hint open: the hint goes; the open segment's date stays as the text's end.
        return hint.then(|| {
            let kept: Vec<&str> = lines.iter().copied().filter(|l| !l.starts_with("#EXT-X-PRELOAD-HINT:")).collect();
            kept.join("\n") + "\n"
        });
    }
    let duration: f64 = parts
        .iter()
        .filter_map(|l| l.strip_prefix("#EXT-X-PART:DURATION="))
        .filter_map(|v| v.split(',').next()?.parse::<f64>().ok())
        .sum();
    // The segment's name as its owner would have given it: `<prefix>-<msn>.m4s`, the prefix of its parts'.
    let msn = next_part_in(text).map(|((msn, _), _)| msn)?;
    let part_uri = parts[0].split("URI=\"").nth(1)?.split('"').next()?;
    let prefix = part_uri.rsplit_once("-p")?.0;
    let pdt = open.iter().find_map(|l| l.strip_prefix("#EXT-X-PROGRAM-DATE-TIME:")).and_then(parse_rfc3339);
    let mut out: Vec<String> = lines[..after_last_uri].iter().map(|l| l.to_string()).collect();
    out.extend(open.iter().filter(|l| !l.starts_with("#EXT-X-PRELOAD-HINT:")).map(|l| l.to_string()));
    out.push(format!("#EXTINF:{duration:.3},"));
    out.push("#EXT-X-GAP".into());
    out.push(format!("{prefix}-{msn}.m4s"));
    if let Some(pdt) = pdt {
        out.push(format!("#EXT-X-PROGRAM-DATE-TIME:{}", rfc3339_millis(pdt + Duration::from_secs_f64(duration))));
    }
    Some(out.join("\n") + "\n")
}

/// The delta update (`_HLS_skip=YES`) of a full LL-HLS playlist text, made from the text alone, as
/// [`Playlist::render_skip`] makes it from the segments: a node serving another node's playlist answers delta
/// requests with the same bytes as the owner (up to the rounding of durations to milliseconds at the very
/// boundary). `None` when there is nothing to skip, or the text is not an LL-HLS playlist with CAN-SKIP-UNTIL.
pub fn skip_of(full: &str) -> Option<String> {
    let until: f64 = full
        .lines()
        .find_map(|l| l.strip_prefix("#EXT-X-SERVER-CONTROL:"))?
        .split(',')
        .find_map(|kv| kv.strip_prefix("CAN-SKIP-UNTIL="))?
        .parse()
        .ok()?;
    let lines: Vec<&str> = full.lines().collect();
    // Each segment's block: from the line after the previous segment's URI to its own URI.
    let is_uri = |l: &str| !l.starts_with('#') && !l.trim().is_empty();
    let first_block = lines.iter().position(|l| {
        *l == "#EXT-X-DISCONTINUITY"
            || l.starts_with("#EXT-X-MAP:")
            || l.starts_with("#EXT-X-PROGRAM-DATE-TIME:")
            || l.starts_with("#EXT-X-PART:")
            || l.starts_with("#EXTINF:")
    })?;
    let mut blocks = Vec::new(); // (start, end inclusive, duration)
    let mut start = first_block;
    let mut duration = None;
    for (i, l) in lines.iter().enumerate().skip(first_block) {
        if let Some(v) = l.strip_prefix("#EXTINF:") {
            duration = v.split(',').next()?.trim().parse::<f64>().ok();
        } else if is_uri(l) {
            blocks.push((start, i, duration.take()?));
            start = i + 1;
        }
    }
    // The open segment's parts count towards the live edge.
    let open: f64 = lines[start..]
        .iter()
        .filter_map(|l| l.strip_prefix("#EXT-X-PART:DURATION="))
        .filter_map(|v| v.split(',').next()?.parse::<f64>().ok())
        .sum();
    let mut acc = open;
    let mut to_edge = vec![0.0; blocks.len()];
    for (i, b) in blocks.iter().enumerate().rev() {
        acc += b.2;
        to_edge[i] = acc;
    }
    let skipped = blocks.iter().zip(&to_edge).take_while(|(b, &d)| d - b.2 > until).count();
    if skipped == 0 {
        return None;
    }
    let mut out = String::with_capacity(full.len());
    for l in &lines[..first_block] {
        out.push_str(l);
        out.push('\n');
    }
    let _ = writeln!(out, "#EXT-X-SKIP:SKIPPED-SEGMENTS={skipped}");
    // The init segment in force stays implied (the player has it from its last full playlist), as the owner's
    // delta does: a MAP line is kept only where it changes after the skipped segments.
    let map_of = |upto: usize| lines[first_block..upto].iter().rev().find(|l| l.starts_with("#EXT-X-MAP:")).copied();
    let mut map = map_of(blocks[skipped - 1].1);
    for l in &lines[blocks[skipped - 1].1 + 1..] {
        if l.starts_with("#EXT-X-MAP:") {
            if Some(*l) == map {
                continue;
            }
            map = Some(l);
        }
        out.push_str(l);
        out.push('\n');
    }
    Some(out)
}

/// The newest part an LL-HLS playlist text lists, as `(msn, part index)` (`EXT-X-RENDITION-REPORT`'s LAST-MSN and
/// LAST-PART); `None` without parts.
pub fn last_part_in(text: &str) -> Option<(u64, u64)> {
    let mut msn = None;
    let mut part = 0u64;
    let mut last = None;
    for line in text.lines() {
        if let Some(v) = line.strip_prefix("#EXT-X-MEDIA-SEQUENCE:") {
            msn = v.trim().parse::<u64>().ok();
        } else if let Some(v) = line.strip_prefix("#EXT-X-SKIP:SKIPPED-SEGMENTS=") {
            let skipped = v.split(',').next()?.trim().parse::<u64>().ok()?;
            msn = msn.map(|m| m + skipped);
        } else if line.starts_with("#EXT-X-PART:") {
            last = Some((msn?, part));
            part += 1;
        } else if !line.starts_with('#') && !line.trim().is_empty() {
            msn = msn.map(|m| m + 1);
            part = 0;
        }
    }
    last
}

/// Whether media playlist `text` names `file`: a segment line, or a `URI="..."` attribute (an init segment, a part,
/// the preload hint).
pub fn names_file(text: &[u8], file: &str) -> bool {
    let text = String::from_utf8_lossy(text);
    text.lines().any(|l| l == file) || text.contains(&format!("URI=\"{file}\""))
}

/// One segment a media playlist text lists (see [`segments_in`]).
#[derive(Debug, Clone, PartialEq)]
pub struct ListedSegment {
    /// Media sequence number.
    pub msn: u64,
    /// Its URI.
    pub uri: String,
    /// `EXTINF` seconds.
    pub duration: f64,
    /// Its `EXT-X-PROGRAM-DATE-TIME`, when the playlist gives one.
    pub program_date_time: Option<SystemTime>,
    /// An `EXT-X-DISCONTINUITY` precedes it.
    pub discontinuity: bool,
    /// The `EXT-X-MAP` URI in force for it.
    pub map: Option<String>,
    /// Marked `EXT-X-GAP`.
    pub gap: bool,
    /// Its parts as listed (LL-HLS; only the newest segments list theirs).
    pub parts: Vec<PartInfo>,
}

/// The whole segments a media playlist text lists, with their sequence numbers (after `EXT-X-SKIP`, too), and
/// whether it has ended (`EXT-X-ENDLIST`); parts of the segment being made are not segments. What a node recording
/// a stream that another node owns reads from the owner's pushed playlist. A segment without `EXTINF` or with a
/// malformed one is left out.
pub fn segments_in(text: &str) -> (Vec<ListedSegment>, bool) {
    let mut out = Vec::new();
    let mut msn = 0u64;
    let (mut duration, mut pdt, mut discontinuity, mut map) = (None, None, false, None::<String>);
    let (mut gap, mut parts) = (false, Vec::new());
    for line in text.lines() {
        let line = line.trim_end();
        if let Some(v) = line.strip_prefix("#EXT-X-MEDIA-SEQUENCE:") {
            msn = v.trim().parse().unwrap_or(0);
        } else if let Some(v) = line.strip_prefix("#EXT-X-SKIP:SKIPPED-SEGMENTS=") {
            msn = msn.saturating_add(v.split(',').next().and_then(|n| n.trim().parse().ok()).unwrap_or(0));
        } else if let Some(v) = line.strip_prefix("#EXTINF:") {
            duration =
                v.split(',').next().and_then(|d| d.trim().parse::<f64>().ok()).filter(|d| d.is_finite() && *d >= 0.0);
        } else if let Some(v) = line.strip_prefix("#EXT-X-PROGRAM-DATE-TIME:") {
            pdt = parse_rfc3339(v.trim());
        } else if line == "#EXT-X-DISCONTINUITY" {
            discontinuity = true;
        } else if let Some(v) = line.strip_prefix("#EXT-X-MAP:URI=\"") {
            map = v.split('"').next().map(String::from);
        } else if line == "#EXT-X-GAP" {
            gap = true;
        } else if let Some(v) = line.strip_prefix("#EXT-X-PART:") {
            parts.extend(part_of(v));
        } else if !line.starts_with('#') && !line.is_empty() {
            if let Some(d) = duration.take() {
                out.push(ListedSegment {
                    msn,
                    uri: line.to_string(),
                    duration: d,
                    program_date_time: pdt,
                    discontinuity,
                    map: map.clone(),
                    gap,
                    parts: std::mem::take(&mut parts),
                });
            }
            msn = msn.saturating_add(1);
            (pdt, discontinuity, gap) = (None, false, false);
            parts.clear();
        }
    }
    (out, text.contains("#EXT-X-ENDLIST"))
}

/// An `EXT-X-PART` tag's attributes (after the colon) as [`write_parts`] writes them.
fn part_of(attrs: &str) -> Option<PartInfo> {
    let mut duration = None;
    let mut name = None;
    let mut independent = false;
    let mut rest = attrs;
    while !rest.is_empty() {
        let (k, after) = rest.split_once('=')?;
        let (v, next) = match after.strip_prefix('"') {
            Some(q) => {
                let (v, n) = q.split_once('"')?;
                (v, n.strip_prefix(',').unwrap_or(n))
            }
            None => after.split_once(',').unwrap_or((after, "")),
        };
        match k {
            "DURATION" => duration = v.parse::<f64>().ok().filter(|d| d.is_finite() && *d >= 0.0),
            "URI" => name = Some(v.to_string()),
            "INDEPENDENT" => independent = v == "YES",
            _ => {}
        }
        rest = next;
    }
    Some(PartInfo { name: name?, duration: duration?, independent })
}

/// The segments of `text` (the playlist the previous owner pushed last, its open segment closed) that a new
/// owner continuing it at `next_msn` after discontinuity number `discontinuity` lists first
/// ([`Playlist::resume_with`]): every listed segment, when they run without a hole up to `next_msn - 1`, each has
/// its date, and their discontinuities add up to `discontinuity`; else none (the new owner's playlist starts
/// with its own first segment, as without a previous owner).
pub fn resumable_window(text: &str, next_msn: u64, discontinuity: u64) -> Vec<ListedSegment> {
    let (segments, ended) = segments_in(text);
    let sequence: u64 = text
        .lines()
        .find_map(|l| l.strip_prefix("#EXT-X-DISCONTINUITY-SEQUENCE:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0);
    let flagged = segments.iter().filter(|s| s.discontinuity).count() as u64;
    let joins = segments.last().is_some_and(|s| s.msn.checked_add(1) == Some(next_msn));
    let contiguous = segments.windows(2).all(|w| w[0].msn + 1 == w[1].msn);
    let dated = segments.iter().all(|s| s.program_date_time.is_some());
    let skipped = text.contains("#EXT-X-SKIP:");
    if ended || skipped || !joins || !contiguous || !dated || sequence + flagged != discontinuity {
        return Vec::new();
    }
    segments
}

/// Seconds since the Unix epoch of an RFC 3339 time as [`rfc3339_millis`] writes it (`None` for anything else).
pub fn parse_rfc3339(t: &str) -> Option<SystemTime> {
    // 2026-12-05T07:23:44.123Z
    let b = t.as_bytes();
    if b.len() != 24 || b[4] != b'-' || b[7] != b'-' || b[10] != b'T' || b[19] != b'.' || b[23] != b'Z' {
        return None;
    }
    let n = |r: std::ops::Range<usize>| t.get(r)?.parse::<i64>().ok();
    let (y, mo, d) = (n(0..4)?, n(5..7)?, n(8..10)?);
    let (h, mi, s, ms) = (n(11..13)?, n(14..16)?, n(17..19)?, n(20..23)?);
    if !(1..=12).contains(&mo) || !(1..=31).contains(&d) || h > 23 || mi > 59 || s > 60 {
        return None;
    }
    // Days from civil (Howard Hinnant's algorithm).
    let y2 = if mo <= 2 { y - 1 } else { y };
    let era = if y2 >= 0 { y2 } else { y2 - 399 } / 400;
    let yoe = y2 - era * 400;
    let mp = (mo + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    let ms_total = ((days * 86_400 + h * 3600 + mi * 60 + s) * 1000 + ms).max(0) as u64;
    Some(UNIX_EPOCH + std::time::Duration::from_millis(ms_total))
}

fn write_parts(out: &mut String, parts: &[PartInfo]) {
    for p in parts {
        let _ = write!(out, "#EXT-X-PART:DURATION={:.3},URI=\"{}\"", p.duration, p.name);
        if p.independent {
            out.push_str(",INDEPENDENT=YES");
        }
        out.push('\n');
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

/// `text` (a media or master playlist) with `query` (e.g. `token=...`) added to every URI it lists: URI lines
/// and `URI="..."` attributes (`EXT-X-MAP`, `EXT-X-PART`, `EXT-X-PRELOAD-HINT`, `EXT-X-RENDITION-REPORT`,
/// `EXT-X-MEDIA`), so a player that got a signed playlist fetches everything it lists with the same token.
pub fn with_query(text: &str, query: &str) -> String {
    fn add(uri: &str, query: &str) -> String {
        let sep = if uri.contains('?') { '&' } else { '?' };
        format!("{uri}{sep}{query}")
    }
    let mut out = String::with_capacity(text.len() + text.len() / 4);
    for line in text.split_inclusive('\n') {
        let (body, end) = match line.strip_suffix('\n') {
            Some(b) => (b, "\n"),
            None => (line, ""),
        };
        if body.is_empty() {
            out.push_str(line);
        } else if !body.starts_with('#') {
            out.push_str(&add(body, query));
            out.push_str(end);
        } else {
            let mut rest = body;
            while let Some(at) = rest.find("URI=\"") {
                let (head, tail) = rest.split_at(at + 5);
                out.push_str(head);
                match tail.find('"') {
                    Some(close) => {
                        out.push_str(&add(&tail[..close], query));
                        rest = &tail[close..];
                    }
                    None => {
                        rest = tail;
                        break;
                    }
                }
            }
            out.push_str(rest);
            out.push_str(end);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn an_ownerless_playlist_closes_its_open_segment_as_a_gap_and_drops_the_hint() {
        let open = "#EXTM3U\n#EXT-X-TARGETDURATION:2\n#EXT-X-PART-INF:PART-TARGET=0.200\n#EXT-X-MEDIA-SEQUENCE:3\n\
                    #EXT-X-MAP:URI=\"ab-init1.mp4\"\n#EXT-X-PROGRAM-DATE-TIME:2026-12-06T20:21:44.155Z\n\
                    #EXT-X-PART:DURATION=0.200,URI=\"ab-p31.m4s\",INDEPENDENT=YES\n#EXTINF:2.000,\nab-3.m4s\n\
                    #EXT-X-PROGRAM-DATE-TIME:2026-12-06T20:21:46.155Z\n\
                    #EXT-X-PART:DURATION=0.200,URI=\"ab-p41.m4s\",INDEPENDENT=YES\n\
                    #EXT-X-PART:DURATION=0.199,URI=\"ab-p42.m4s\"\n\
                    #EXT-X-PRELOAD-HINT:TYPE=PART,URI=\"ab-p43.m4s\"\n";
        assert_eq!(next_part_in(open), Some(((4, 2), false)));
        let closed = close_open_segment(open).unwrap();
        let tail = "URI=\"ab-p42.m4s\"\n#EXTINF:0.399,\n#EXT-X-GAP\nab-4.m4s\n\
                    #EXT-X-PROGRAM-DATE-TIME:2026-12-06T20:21:46.554Z\n";
        assert!(closed.ends_with(tail), "{closed}");
        assert!(!closed.contains("PRELOAD-HINT"));
        // The next owner's first segment (5) comes next; delta updates still work on the text.
        assert_eq!(next_part_in(&closed), Some(((5, 0), false)));
        assert_eq!(close_open_segment(&closed), None);
        // Only a hint open: the hint goes; the open segment's date ends the text.
        let hint_only = "#EXTM3U\n#EXT-X-PART-INF:PART-TARGET=0.200\n#EXT-X-MEDIA-SEQUENCE:3\n#EXTINF:2.000,\n\
                         ab-3.m4s\n#EXT-X-PROGRAM-DATE-TIME:2026-12-06T20:21:46.155Z\n\
                         #EXT-X-PRELOAD-HINT:TYPE=PART,URI=\"ab-p41.m4s\"\n";
        assert_eq!(
            close_open_segment(hint_only).unwrap(),
            "#EXTM3U\n#EXT-X-PART-INF:PART-TARGET=0.200\n#EXT-X-MEDIA-SEQUENCE:3\n#EXTINF:2.000,\nab-3.m4s\n\
             #EXT-X-PROGRAM-DATE-TIME:2026-12-06T20:21:46.155Z\n"
        );
        // Ended, or no parts at all: unchanged.
        assert_eq!(close_open_segment("#EXTM3U\n#EXTINF:2.000,\na.ts\n#EXT-X-ENDLIST\n"), None);
    }

    use super::*;

    #[test]
    fn a_query_goes_on_every_uri() {
        let text =
            "#EXTM3U\n#EXT-X-MAP:URI=\"init-1.mp4\"\n#EXT-X-PART:DURATION=0.2,URI=\"p-3.0.m4s\",INDEPENDENT=YES\n\
                    #EXTINF:2.0,\nseg-3.m4s\n#EXT-X-PRELOAD-HINT:TYPE=PART,URI=\"p-4.1.m4s\"\n\
                    #EXT-X-RENDITION-REPORT:URI=\"../cam_480p/index.m3u8?x=1\",LAST-MSN=3\n";
        let out = with_query(text, "token=T");
        assert_eq!(
            out,
            "#EXTM3U\n#EXT-X-MAP:URI=\"init-1.mp4?token=T\"\n\
             #EXT-X-PART:DURATION=0.2,URI=\"p-3.0.m4s?token=T\",INDEPENDENT=YES\n#EXTINF:2.0,\nseg-3.m4s?token=T\n\
             #EXT-X-PRELOAD-HINT:TYPE=PART,URI=\"p-4.1.m4s?token=T\"\n\
             #EXT-X-RENDITION-REPORT:URI=\"../cam_480p/index.m3u8?x=1&token=T\",LAST-MSN=3\n"
        );
        assert_eq!(with_query("#EXTM3U\nlast", "a=b"), "#EXTM3U\nlast?a=b", "no final newline");
        assert_eq!(with_query("#X:URI=\"unclosed", "a=b"), "#X:URI=\"unclosed");
    }
    use std::time::Duration;

    fn seg(msn: u64, dur: f64, disc: bool) -> Segment {
        Segment {
            msn,
            name: format!("x-{msn}.ts"),
            duration: dur,
            program_date_time: UNIX_EPOCH + Duration::from_secs(1_700_000_000 + msn * 2),
            discontinuity: disc,
            data: Bytes::from_static(b"media"),
            parts: Vec::new(),
            map: None,
            gap: false,
        }
    }

    #[test]
    fn the_segments_of_a_rendered_playlist_read_back_from_its_text() {
        let mut p = ll_playlist(8);
        p.segments
            .iter_mut()
            .for_each(|s| s.program_date_time = UNIX_EPOCH + Duration::from_secs(1_700_000_000 + s.msn * 2));
        p.segments[5].discontinuity = true;
        p.segments.iter_mut().skip(5).for_each(|s| s.map = Some("x-init1.mp4".into()));
        p.open_segment(8, false, Some("x-init1.mp4".into()), UNIX_EPOCH);
        p.push_part(PartInfo { name: "x-8.0.m4s".into(), duration: 0.5, independent: true });
        let full = p.render().unwrap();
        let (listed, ended) = segments_in(&full);
        assert!(!ended);
        let msns: Vec<u64> = listed.iter().map(|s| s.msn).collect();
        assert_eq!(msns, (0..8).collect::<Vec<_>>(), "the open segment's part is not a segment:\n{full}");
        for s in &listed {
            assert_eq!(s.uri, format!("x-{}.m4s", s.msn));
            assert_eq!(s.duration, 2.0);
            assert_eq!(s.discontinuity, s.msn == 5);
            assert_eq!(s.map.as_deref(), Some(if s.msn >= 5 { "x-init1.mp4" } else { "x-init0.mp4" }));
            assert_eq!(s.program_date_time, Some(UNIX_EPOCH + Duration::from_secs(1_700_000_000 + s.msn * 2)));
        }
        // A delta update numbers its segments after the skipped ones.
        let (delta, _) = segments_in(&p.render_skip().unwrap());
        assert_eq!(delta.first().map(|s| s.msn), listed.iter().rev().nth(delta.len() - 1).map(|s| s.msn));
        p.set_ended(true);
        assert!(segments_in(&p.render().unwrap()).1);
        // Garbage lists nothing and does not panic.
        assert_eq!(segments_in("#EXTINF:nan,\nx.ts\n#EXTINF:-1,\ny.ts\nz.ts\n").0, vec![]);
    }

    #[test]
    fn a_dvr_window_lists_its_history_without_holding_its_bytes() {
        let mut p = Playlist::new(3, 2, 2.0);
        p.set_dvr(20.0);
        for i in 0..30 {
            p.push(seg(i, 2.0, i == 4));
        }
        let text = p.render().unwrap();
        // 20 s of history: the ten newest segments are listed, the oldest of them first.
        assert!(text.contains("#EXT-X-MEDIA-SEQUENCE:20\n"), "{text}");
        assert_eq!(text.matches("#EXTINF:").count(), 10, "{text}");
        assert!(text.contains("#EXT-X-DISCONTINUITY-SEQUENCE:1\n"), "{text}");
        // Only the window and the retained segments keep their bytes (the rest is served from storage).
        let held: Vec<u64> = p.segments().map(|s| s.msn).collect();
        assert_eq!(held, vec![25, 26, 27, 28, 29]);
        assert!(p.segment("x-24.ts").is_none() && p.segment("x-25.ts").is_some());
        // Never fewer than the window, even with a DVR window shorter than it.
        let mut short = Playlist::new(3, 0, 2.0);
        short.set_dvr(1.0);
        for i in 0..6 {
            short.push(seg(i, 2.0, false));
        }
        assert_eq!(short.render().unwrap().matches("#EXTINF:").count(), 3);
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
    fn a_new_owner_lists_the_previous_owner_s_window_first() {
        // The old owner: segments 0..5 (a discontinuity among them), segment 5 open with one part; its node went,
        // and the other nodes serve its playlist with segment 5 closed (EXT-X-GAP).
        let mut old = ll_playlist(5);
        old.segments[2].discontinuity = true;
        // Part names as segmenters give them (`<prefix>-p<n>.m4s`): the closed segment is named after them.
        if let Some(o) = old.open.as_mut() {
            o.parts[0].name = "x-p21.m4s".into();
        }
        let closed = close_open_segment(&old.render().unwrap()).unwrap();
        let window = resumable_window(&closed, 6, old.discontinuity_count());
        assert_eq!(window.iter().map(|s| s.msn).collect::<Vec<_>>(), vec![0, 1, 2, 3, 4, 5]);
        assert!(window[5].gap && !window[4].gap);
        assert_eq!(window[4].parts.len(), 4);
        assert_eq!(window[4].parts[0], PartInfo { name: "x-4.0.m4s".into(), duration: 0.5, independent: true });
        assert_eq!(window[5].uri, "x-5.m4s");
        // The new owner lists them, then its own first segment after a discontinuity: what players had goes on.
        let mut new = Playlist::new(10, 0, 2.0);
        new.enable_parts(0.5);
        new.resume_with(old.discontinuity_count(), &window);
        let seeded = new.render().unwrap();
        assert_eq!(segments_in(&seeded).0, segments_in(&closed).0, "{seeded}\n---\n{closed}");
        assert_eq!(next_part_in(&seeded), Some(((6, 0), false)));
        assert!(new.segment("x-4.m4s").is_none(), "no bytes here for the previous owner's segments");
        new.open_segment(6, true, Some("y-init1.mp4".into()), UNIX_EPOCH + Duration::from_secs(1_800_000_000));
        new.push_part(PartInfo { name: "y-p1.m4s".into(), duration: 0.5, independent: true });
        let text = new.render().unwrap();
        assert!(text.contains("#EXT-X-MEDIA-SEQUENCE:0\n"), "{text}");
        assert!(
            text.contains("#EXTINF:0.500,\n#EXT-X-GAP\nx-5.m4s\n#EXT-X-DISCONTINUITY\n#EXT-X-MAP:URI=\"y-init1.mp4\"")
        );
        assert_eq!(next_part_in(&text), Some(((6, 1), false)));
        let mut done = seg(6, 0.5, true);
        done.map = Some("y-init1.mp4".into());
        new.push(done);
        assert_eq!(new.discontinuity_count(), old.discontinuity_count() + 1);
        // A window that does not join the new numbering, or whose discontinuities do not add up, is not listed.
        assert!(resumable_window(&closed, 7, old.discontinuity_count()).is_empty());
        assert!(resumable_window(&closed, 6, old.discontinuity_count() + 1).is_empty());
        assert!(resumable_window(&(closed.clone() + "#EXT-X-ENDLIST\n"), 6, old.discontinuity_count()).is_empty());
    }

    #[test]
    fn target_duration_covers_rounded_extinf_of_the_listed_segments() {
        let mut p = Playlist::new(3, 2, 2.0);
        p.push(seg(0, 2.4, false));
        assert_eq!(p.target_duration(), 2);
        p.push(seg(1, 4.6, false));
        assert_eq!(p.target_duration(), 5);
        for i in 2..4 {
            p.push(seg(i, 2.0, false));
            assert_eq!(p.target_duration(), 5, "segment 1 is still listed");
        }
        // Segment 1 left the listed window (it is only retained): back to the configured target, never below it.
        p.push(seg(4, 1.2, false));
        assert_eq!(p.target_duration(), 2);
        assert!(p.render().unwrap().contains("#EXT-X-TARGETDURATION:2\n"));
        p.set_ended(true);
        assert!(p.render().unwrap().ends_with("#EXT-X-ENDLIST\n"));
    }

    fn ll_playlist(segments: u64) -> Playlist {
        let mut p = Playlist::new(10, 0, 2.0);
        p.enable_parts(0.5);
        let part = |msn: u64, i: u64| PartInfo { name: format!("x-{msn}.{i}.m4s"), duration: 0.5, independent: i == 0 };
        for msn in 0..segments {
            p.open_segment(msn, false, Some("x-init0.mp4".into()), UNIX_EPOCH);
            for i in 0..4 {
                p.push_part(part(msn, i));
            }
            let mut s = seg(msn, 2.0, false);
            s.name = format!("x-{msn}.m4s");
            s.parts = (0..4).map(|i| part(msn, i)).collect();
            s.map = Some("x-init0.mp4".into());
            p.push(s);
        }
        p.open_segment(segments, false, Some("x-init0.mp4".into()), UNIX_EPOCH);
        p.push_part(part(segments, 0));
        p.set_preload_hint(Some(format!("x-{segments}.1.m4s")));
        p
    }

    #[test]
    fn a_playlist_with_nothing_open_ends_with_the_next_segment_s_date() {
        // The publisher left: the last segment is closed, no part is open and there is no hint. hls.js would take
        // the last segment for an open one and refuse the next playlist; the next segment's date ends the text.
        let mut p = Playlist::new(10, 0, 2.0);
        p.enable_parts(0.5);
        for msn in 0..3 {
            p.open_segment(msn, false, Some("x-init0.mp4".into()), UNIX_EPOCH);
            let mut s = seg(msn, 2.0, false);
            s.name = format!("x-{msn}.m4s");
            s.map = Some("x-init0.mp4".into());
            p.push(s);
        }
        let text = p.render().unwrap();
        assert!(text.ends_with("x-2.m4s\n#EXT-X-PROGRAM-DATE-TIME:2023-11-14T22:13:26.000Z\n"), "{text}");
        assert_eq!(next_part_in(&text), Some(((3, 0), false)));
        assert_eq!(close_open_segment(&text), None);
    }

    #[test]
    fn a_delta_update_made_from_the_text_is_the_owner_s() {
        for n in [3, 7, 8, 10, 14] {
            let p = ll_playlist(n);
            let full = p.render().unwrap();
            assert_eq!(skip_of(&full), p.render_skip(), "{n} segments:\n{full}");
        }
        // A discontinuity with a new init segment among the skipped and the kept ones.
        let mut p = ll_playlist(9);
        let mut s = seg(9, 2.0, true);
        s.name = "y-9.m4s".into();
        s.map = Some("y-init1.mp4".into());
        p.push(s);
        let mut s = seg(10, 2.0, false);
        s.name = "y-10.m4s".into();
        s.map = Some("y-init1.mp4".into());
        p.push(s);
        let full = p.render().unwrap();
        assert!(p.render_skip().is_some());
        assert_eq!(skip_of(&full), p.render_skip(), "{full}");
        assert_eq!(skip_of("#EXTM3U\n#EXTINF:2.000,\na.ts\n"), None, "not LL-HLS");
        assert_eq!(skip_of("#EXTM3U\n#EXT-X-SERVER-CONTROL:CAN-SKIP-UNTIL=x\n"), None);
    }

    #[test]
    fn low_latency_playlists_list_recent_parts_a_preload_hint_and_server_control() {
        let p = ll_playlist(8);
        let text = p.render().unwrap();
        assert!(text.contains("#EXT-X-VERSION:9\n"), "{text}");
        assert!(
            text.contains("#EXT-X-SERVER-CONTROL:CAN-BLOCK-RELOAD=YES,CAN-SKIP-UNTIL=12.0,PART-HOLD-BACK=1.500\n"),
            "{text}"
        );
        assert!(text.contains("#EXT-X-PART-INF:PART-TARGET=0.500\n"));
        assert_eq!(text.matches("#EXT-X-MAP:URI=\"x-init0.mp4\"").count(), 1);
        // Parts of the last three target durations (6 s): the open segment's 0.5 s, then 3 whole segments.
        assert!(text.contains("x-7.0.m4s") && text.contains("x-5.3.m4s") && !text.contains("x-4.3.m4s"), "{text}");
        assert!(text.contains("#EXT-X-PART:DURATION=0.500,URI=\"x-8.0.m4s\",INDEPENDENT=YES\n"));
        assert!(text.ends_with("#EXT-X-PRELOAD-HINT:TYPE=PART,URI=\"x-8.1.m4s\"\n"), "{text}");
        assert_eq!(p.next_part(), Some((8, 1)));
    }

    #[test]
    fn delta_updates_skip_what_is_older_than_can_skip_until_and_keep_the_rest() {
        let p = ll_playlist(10);
        assert!(ll_playlist(5).render_skip().is_none(), "nothing older than 12 s: no delta update");
        let full = p.render().unwrap();
        let delta = p.render_skip().unwrap();
        // 10 segments of 2 s plus 0.5 s open: the first 4 end more than 12 s before the edge.
        assert!(delta.contains("#EXT-X-SKIP:SKIPPED-SEGMENTS=4\n"), "{delta}");
        assert!(!delta.contains("x-3.m4s") && delta.contains("x-4.m4s"), "{delta}");
        assert!(!delta.contains("#EXT-X-MAP"), "the map of skipped segments is not repeated");
        // What follows the skipped segments is the full playlist's tail, line for line.
        let tail = |t: &str| t.lines().skip_while(|l| !l.contains("x-4.m4s")).collect::<Vec<_>>().join("\n");
        assert_eq!(tail(&full), tail(&delta));
    }

    #[test]
    fn the_last_part_reads_back_for_rendition_reports() {
        let p = ll_playlist(8);
        assert_eq!(last_part_in(&p.render().unwrap()), Some((8, 0)), "the open segment's one part");
        let mut q = ll_playlist(3);
        q.open_segment(3, false, None, UNIX_EPOCH);
        assert_eq!(last_part_in(&q.render().unwrap()), Some((2, 3)), "no part yet in the open segment");
        assert_eq!(last_part_in(&ll_playlist(10).render_skip().unwrap()), Some((10, 0)));
    }

    #[test]
    fn the_position_of_a_rendered_playlist_reads_back_from_its_text() {
        let p = ll_playlist(8);
        let text = p.render().unwrap();
        assert_eq!(next_part_in(&text), Some((p.next_part().unwrap(), false)));
        let p = ll_playlist(10);
        assert_eq!(next_part_in(&p.render_skip().unwrap()), Some((p.next_part().unwrap(), false)));
        let mut ts = Playlist::new(3, 0, 2.0);
        ts.push(seg(0, 2.0, false));
        assert_eq!(next_part_in(&ts.render().unwrap()), None, "no parts: not LL-HLS");
    }
}
