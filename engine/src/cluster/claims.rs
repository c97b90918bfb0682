//! What a node knows of the claims other nodes hold on stream keys, and the fencing rules built on it. Pure: no
//! I/O, no clock of its own (every method takes `now`), unit-tested here.
//!
//! - **Ranks.** A claim is ranked by `(epoch, since_ms, node)`; the lower rank wins a conflict ([`ClaimRank`]).
//!   A node claiming a key takes one more than the highest epoch it has seen for it ([`Claims::next_epoch`]):
//!   from the claims other nodes answered and the HLS states owners pushed. A claim made on one side of a
//!   partition has seen the owner on the other side, so its epoch is higher and it loses at the heal whatever
//!   the two wall clocks say; wall-clock time only orders claims of the same epoch (a race).
//! - **Numbering.** A node taking a stream over from another owner ([`Claims::takeover`]) continues its
//!   playlist right after the highest number any owner pushed (one number skipped: the last push may be a
//!   segment behind), so players align the new playlist with the old one. When the previous owner may still be
//!   alive (a peer was declared down by the heartbeat deadline, not seen to close its session: a partition looks
//!   like that), the takeover is *fenced*: it numbers in a band of its own, `max next MSN + band(node) × BAND`.
//!   Two owners that both continue from what they saw (the previous owner behind a partition, and this node)
//!   then number disjoint ranges, so a media sequence number never names two segments, as long as neither cuts
//!   `BAND` (1,048,576) segments before the partition heals: 12 days of 1 s segments. The price: a player
//!   cannot align a playlist that jumped that far and starts it again at the live edge.
//! - **Leases.** An owner's pushes are its lease: while an owner that does not answer claims pushed a live
//!   (not ended) position less than the lease ago, a publish elsewhere waits ([`Claims::lease_remaining`]). An
//!   owner stalled for a few seconds (CPU starvation, a GC-like pause, a slow link) keeps its stream; an owner
//!   that is really gone delays a takeover by at most the lease.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use bytes::Bytes;

/// Media sequence numbers in one takeover band.
pub const BAND: u64 = 1 << 20;
/// Bands a node name maps onto.
const BANDS: u64 = 64;
/// Owners remembered per key (a heal can leave two; a few more for handovers in flight).
const OWNERS_PER_KEY: usize = 4;
/// Keys remembered at most (the least recently heard of is forgotten first).
const MAX_KEYS: usize = 16_384;

/// A claim's rank: the lower one wins (see the module docs).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct ClaimRank {
    /// One more than the highest epoch the claiming node had seen for the key.
    pub epoch: u64,
    /// When the claim was made (Unix ms, the claiming node's clock).
    pub since_ms: u64,
    /// The claiming node.
    pub node: String,
}

/// The band a node's takeovers number in: the StatefulSet ordinal (`strom-3` → 4), else a hash of the name.
pub fn band(node: &str) -> u64 {
    let ordinal = node.rsplit_once('-').and_then(|(_, n)| n.parse::<u64>().ok());
    let n = ordinal.unwrap_or_else(|| {
        // FNV-1a: stable across releases and platforms.
        node.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3))
    });
    1 + n % BANDS
}

/// Where a new owner continues a stream's HLS: first media sequence number, discontinuity number, and the stream
/// time (ms) the previous owner had reached (see [`Claims::takeover`]).
pub type HlsResume = (u64, u64, Option<u32>);

/// An owner's pushed HLS position (see [`crate::cluster::wire::Cast::HlsState`]).
#[derive(Debug, Clone)]
pub struct OwnerState {
    /// The owner's claim epoch.
    pub epoch: u64,
    /// The owner's claim time (Unix ms): which owner this is.
    pub since_ms: u64,
    /// Media sequence number of its next segment.
    pub next_msn: u64,
    /// Discontinuity number of its newest segment.
    pub discontinuity: u64,
    /// Its playlist ended.
    pub ended: bool,
    /// Its playlist text.
    pub playlist: Option<Bytes>,
    /// The stream time (ms) its segmenter had reached (`None` from a node of an earlier release).
    pub timeline_ms: Option<u32>,
    /// When it arrived.
    pub at: Instant,
}

#[derive(Debug)]
struct KeyState {
    /// Owners heard of, oldest push first.
    owners: Vec<OwnerState>,
    /// The highest epoch seen (claims and pushes).
    max_epoch: u64,
    /// The highest next MSN and discontinuity number any owner pushed.
    max_next_msn: u64,
    max_discontinuity: u64,
    /// Last news of the key.
    at: Instant,
}

/// Claims and HLS positions of keys other nodes own or owned (see the module docs).
#[derive(Debug)]
pub struct Claims {
    keys: HashMap<String, KeyState>,
    /// Positions older than this are forgotten.
    ttl: Duration,
}

impl Claims {
    /// An empty table forgetting what it has not heard of for `ttl`.
    pub fn new(ttl: Duration) -> Claims {
        Claims { keys: HashMap::new(), ttl }
    }

    fn entry(&mut self, key: &str, now: Instant) -> &mut KeyState {
        if !self.keys.contains_key(key) && self.keys.len() >= MAX_KEYS {
            let ttl = self.ttl;
            self.keys.retain(|_, k| now.saturating_duration_since(k.at) < ttl);
            if self.keys.len() >= MAX_KEYS {
                if let Some(oldest) = self.keys.iter().min_by_key(|(_, k)| k.at).map(|(k, _)| k.clone()) {
                    self.keys.remove(&oldest);
                }
            }
        }
        let e = self.keys.entry(key.to_string()).or_insert_with(|| KeyState {
            owners: Vec::new(),
            max_epoch: 0,
            max_next_msn: 0,
            max_discontinuity: 0,
            at: now,
        });
        e.at = now;
        e
    }

    /// Records an owner's push (replacing that owner's previous one).
    pub fn pushed(&mut self, key: &str, state: OwnerState) {
        let now = state.at;
        let ttl = self.ttl;
        let e = self.entry(key, now);
        e.owners.retain(|o| now.saturating_duration_since(o.at) < ttl);
        e.max_epoch = e.max_epoch.max(state.epoch);
        e.max_next_msn = e.max_next_msn.max(state.next_msn);
        e.max_discontinuity = e.max_discontinuity.max(state.discontinuity);
        if let Some(i) = e.owners.iter().position(|o| o.since_ms == state.since_ms && o.epoch == state.epoch) {
            if e.owners[i].next_msn > state.next_msn {
                // Older than what the owner itself pushed (another node's copy, passed on at a join).
                return;
            }
            e.owners.remove(i);
        } else if e.owners.len() >= OWNERS_PER_KEY {
            e.owners.remove(0);
        }
        e.owners.push(state);
    }

    /// Records an epoch another node answered a claim with.
    pub fn note_epoch(&mut self, key: &str, epoch: u64, now: Instant) {
        let e = self.entry(key, now);
        e.max_epoch = e.max_epoch.max(epoch);
    }

    /// The epoch a claim of `key` made here now takes.
    pub fn next_epoch(&self, key: &str) -> u64 {
        self.keys.get(key).map_or(0, |k| k.max_epoch) + 1
    }

    /// The owner that pushed last, if within `max_age`.
    fn newest(&self, key: &str, max_age: Duration, now: Instant) -> Option<&OwnerState> {
        let k = self.keys.get(key)?;
        k.owners.iter().max_by_key(|o| o.at).filter(|o| now.saturating_duration_since(o.at) <= max_age)
    }

    /// Where `node` continues the playlist of `key` if another node had it live within `max_age`: the first
    /// media sequence number (above every number any owner used; `fenced`: in `node`'s band), the
    /// discontinuity number, and the stream time the newest owner had reached.
    pub fn takeover(&self, key: &str, node: &str, fenced: bool, max_age: Duration, now: Instant) -> Option<HlsResume> {
        let newest = self.newest(key, max_age, now)?;
        if newest.ended {
            return None;
        }
        let k = &self.keys[key];
        let timeline_ms = newest.timeline_ms;
        if fenced {
            return Some((k.max_next_msn + band(node) * BAND, k.max_discontinuity, timeline_ms));
        }
        // The number after the last one any owner used: the next MSN itself when the newest owner had nothing
        // open under it (its publisher left, its last segment closed: no part of that number exists), else one
        // more (the open segment's parts were listed; that number is never reused). A skipped number would leave
        // players (hls.js) unable to join the two playlists.
        let open_parts = newest
            .playlist
            .as_ref()
            .and_then(|t| crate::formats::playlist::next_part_in(&String::from_utf8_lossy(t)))
            .map(|((msn, parts), _)| (msn, parts));
        let first = match open_parts {
            Some((msn, 0)) if msn == k.max_next_msn => k.max_next_msn,
            _ => k.max_next_msn + 1,
        };
        Some((first, k.max_discontinuity, timeline_ms))
    }

    /// The playlist the owner whose claim dates from `since_ms` pushed last.
    pub fn pushed_playlist(&self, key: &str, since_ms: u64) -> Option<Bytes> {
        let k = self.keys.get(key)?;
        k.owners.iter().rev().find(|o| o.since_ms == since_ms).and_then(|o| o.playlist.clone())
    }

    /// Every owner's last push within `max_age`, with its key (what a node passes on to a peer that joins).
    pub fn recent(&self, max_age: Duration, now: Instant) -> Vec<(String, OwnerState)> {
        let fresh = |o: &&OwnerState| now.saturating_duration_since(o.at) <= max_age;
        self.keys.iter().flat_map(|(k, s)| s.owners.iter().filter(fresh).map(|o| (k.clone(), o.clone()))).collect()
    }

    /// The playlist pushed last by any owner, if within `max_age`.
    pub fn last_playlist(&self, key: &str, max_age: Duration, now: Instant) -> Option<Bytes> {
        self.newest(key, max_age, now)?.playlist.clone()
    }

    /// How long a publish of `key` here must still wait for the lease of an owner that does not answer: the
    /// owners whose claims did answer (`answered`, by claim time) hold none; an ended playlist holds none.
    pub fn lease_remaining(&self, key: &str, answered: &[u64], lease: Duration, now: Instant) -> Option<Duration> {
        let k = self.keys.get(key)?;
        k.owners
            .iter()
            .filter(|o| !o.ended && !answered.contains(&o.since_ms))
            .filter_map(|o| lease.checked_sub(now.saturating_duration_since(o.at)))
            .filter(|d| !d.is_zero())
            .max()
    }

    /// Forgets keys not heard of for the TTL.
    pub fn expire(&mut self, now: Instant) {
        let ttl = self.ttl;
        self.keys.retain(|_, k| now.saturating_duration_since(k.at) < ttl);
    }

    /// Whether anything is known of `key`.
    pub fn knows(&self, key: &str) -> bool {
        self.keys.contains_key(key)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state(epoch: u64, since_ms: u64, next_msn: u64, at: Instant) -> OwnerState {
        OwnerState {
            epoch,
            since_ms,
            next_msn,
            discontinuity: 1,
            ended: false,
            playlist: Some(Bytes::from(format!("#EXTM3U\n#{since_ms}\n"))),
            timeline_ms: None,
            at,
        }
    }

    #[test]
    fn ranks_order_by_epoch_before_wall_clock() {
        // strom-1 claimed during a partition with its clock 10 s behind: it still loses to the owner it saw.
        let owner = ClaimRank { epoch: 1, since_ms: 1_000_000, node: "strom-0".into() };
        let partitioned = ClaimRank { epoch: 2, since_ms: 990_000, node: "strom-1".into() };
        assert!(owner < partitioned);
        // A race (same epoch): the earlier claim, then the lower name.
        let a = ClaimRank { epoch: 2, since_ms: 5, node: "strom-2".into() };
        let b = ClaimRank { epoch: 2, since_ms: 5, node: "strom-1".into() };
        assert!(b < a);
    }

    #[test]
    fn bands_follow_statefulset_ordinals_and_hash_other_names() {
        assert_eq!(band("strom-0"), 1);
        assert_eq!(band("strom-2"), 3);
        assert_eq!(band("strom-66"), 3);
        assert_eq!(band("edge-a"), band("edge-a"));
        assert!((1..=BANDS).contains(&band("edge-a")));
        assert!((1..=BANDS).contains(&band("")));
    }

    #[test]
    fn takeovers_of_one_owner_by_two_nodes_number_disjoint_ranges() {
        let now = Instant::now();
        let mut c = Claims::new(Duration::from_secs(600));
        c.pushed("live/a", state(1, 100, 57, now));
        let (b, disc, _) = c.takeover("live/a", "strom-1", true, Duration::from_secs(15), now).unwrap();
        let (c2, _, _) = c.takeover("live/a", "strom-2", true, Duration::from_secs(15), now).unwrap();
        assert_eq!(disc, 1);
        // The old owner goes on from 57, strom-1 and strom-2 from their bands: no number is shared for BAND
        // segments.
        assert!(b >= 57 + BAND && c2 >= b + BAND, "{b} {c2}");
        // The next owner continues above every number pushed, its own included.
        c.pushed("live/a", state(2, 200, b + 10, now));
        let (next, _, _) = c.takeover("live/a", "strom-0", true, Duration::from_secs(15), now).unwrap();
        assert!(next > b + 10);
        assert_eq!(c.next_epoch("live/a"), 3);
    }

    #[test]
    fn a_takeover_after_a_closed_last_segment_takes_the_next_number_itself() {
        let now = Instant::now();
        let mut c = Claims::new(Duration::from_secs(600));
        let with = |next_msn: u64, text: &str| {
            let mut st = state(1, 100, next_msn, now);
            st.playlist = Some(Bytes::from(text.to_string()));
            st
        };
        // Segment 8 open with a part: 9 comes next.
        let open = "#EXTM3U\n#EXT-X-PART-INF:PART-TARGET=0.200\n#EXT-X-MEDIA-SEQUENCE:7\n#EXTINF:2.000,\na-7.m4s\n\
                    #EXT-X-PART:DURATION=0.200,URI=\"a-p81.m4s\"\n";
        c.pushed("live/a", with(8, open));
        assert_eq!(c.takeover("live/a", "strom-1", false, Duration::from_secs(15), now), Some((9, 1, None)));
        // Segment 8 closed (the publisher left) and nothing open: 9 itself.
        let closed = "#EXTM3U\n#EXT-X-PART-INF:PART-TARGET=0.200\n#EXT-X-MEDIA-SEQUENCE:7\n#EXTINF:2.000,\na-7.m4s\n\
                      #EXTINF:0.433,\na-8.m4s\n#EXT-X-PROGRAM-DATE-TIME:2026-12-06T20:28:54.483Z\n";
        c.pushed("live/a", with(9, closed));
        assert_eq!(c.takeover("live/a", "strom-1", false, Duration::from_secs(15), now), Some((9, 1, None)));
    }

    #[test]
    fn a_takeover_continues_the_stream_time_of_the_owner_that_pushed_last() {
        let now = Instant::now();
        let mut c = Claims::new(Duration::from_secs(600));
        let mut first = state(1, 100, 10, now);
        first.timeline_ms = Some(20_000);
        c.pushed("live/a", first);
        let mut second = state(2, 200, 12, now + Duration::from_secs(1));
        second.timeline_ms = Some(4_000);
        c.pushed("live/a", second);
        let later = now + Duration::from_secs(2);
        assert_eq!(c.takeover("live/a", "strom-1", false, Duration::from_secs(15), later), Some((13, 1, Some(4_000))));
        assert_eq!(
            c.takeover("live/a", "strom-1", true, Duration::from_secs(15), later).map(|t| t.2),
            Some(Some(4_000))
        );
    }

    #[test]
    fn an_unfenced_takeover_continues_right_after_the_last_number() {
        let now = Instant::now();
        let mut c = Claims::new(Duration::from_secs(600));
        c.pushed("live/a", state(1, 100, 57, now));
        assert_eq!(c.takeover("live/a", "strom-1", false, Duration::from_secs(15), now), Some((58, 1, None)));
        c.pushed("live/a", state(2, 200, 3 * BAND + 9, now));
        assert_eq!(
            c.takeover("live/a", "strom-0", false, Duration::from_secs(15), now),
            Some((3 * BAND + 10, 1, None))
        );
    }

    #[test]
    fn a_copy_passed_on_at_a_join_never_replaces_the_owner_s_newer_push() {
        let now = Instant::now();
        let mut c = Claims::new(Duration::from_secs(600));
        c.pushed("live/a", state(1, 100, 12, now));
        c.pushed("live/a", state(1, 100, 10, now + Duration::from_millis(5)));
        assert_eq!(c.recent(Duration::from_secs(1), now).len(), 1);
        assert_eq!(c.recent(Duration::from_secs(1), now)[0].1.next_msn, 12);
        assert!(c.recent(Duration::from_secs(1), now + Duration::from_secs(2)).is_empty());
    }

    #[test]
    fn nothing_to_take_over_when_the_stream_ended_or_is_old() {
        let t0 = Instant::now();
        let mut c = Claims::new(Duration::from_secs(600));
        c.pushed("live/a", state(1, 100, 5, t0));
        let later = t0 + Duration::from_secs(20);
        assert_eq!(c.takeover("live/a", "strom-1", true, Duration::from_secs(15), later), None);
        let mut ended = state(1, 100, 6, t0);
        ended.ended = true;
        c.pushed("live/a", ended);
        assert_eq!(c.takeover("live/a", "strom-1", true, Duration::from_secs(15), t0), None);
        assert_eq!(c.takeover("live/b", "strom-1", true, Duration::from_secs(15), t0), None);
        assert_eq!(c.next_epoch("live/b"), 1);
    }

    #[test]
    fn both_owners_of_a_heal_keep_their_own_playlists() {
        let now = Instant::now();
        let mut c = Claims::new(Duration::from_secs(600));
        c.pushed("live/a", state(1, 100, 10, now));
        c.pushed("live/a", state(2, 200, BAND + 10, now));
        // The older owner (the winner) goes on pushing: its playlist is still found by its claim.
        c.pushed("live/a", state(1, 100, 11, now + Duration::from_millis(10)));
        assert_eq!(c.pushed_playlist("live/a", 100).unwrap(), Bytes::from("#EXTM3U\n#100\n"));
        assert_eq!(c.pushed_playlist("live/a", 200).unwrap(), Bytes::from("#EXTM3U\n#200\n"));
        assert_eq!(c.last_playlist("live/a", Duration::from_secs(1), now).unwrap(), Bytes::from("#EXTM3U\n#100\n"));
        assert_eq!(c.pushed_playlist("live/a", 300), None);
    }

    #[test]
    fn a_silent_owner_holds_its_lease_an_answering_or_ended_one_does_not() {
        let t0 = Instant::now();
        let lease = Duration::from_secs(5);
        let mut c = Claims::new(Duration::from_secs(600));
        c.pushed("live/a", state(1, 100, 10, t0));
        let t = t0 + Duration::from_secs(2);
        assert_eq!(c.lease_remaining("live/a", &[], lease, t), Some(Duration::from_secs(3)));
        assert_eq!(c.lease_remaining("live/a", &[100], lease, t), None);
        assert_eq!(c.lease_remaining("live/a", &[], lease, t0 + lease), None);
        let mut ended = state(1, 100, 11, t);
        ended.ended = true;
        c.pushed("live/a", ended);
        assert_eq!(c.lease_remaining("live/a", &[], lease, t), None);
    }

    #[test]
    fn memory_is_bounded_per_key_and_in_keys() {
        let now = Instant::now();
        let mut c = Claims::new(Duration::from_secs(600));
        for i in 0..10 {
            c.pushed("live/a", state(i, i, i, now));
        }
        assert_eq!(c.keys["live/a"].owners.len(), OWNERS_PER_KEY);
        for i in 0..MAX_KEYS + 10 {
            c.note_epoch(&format!("live/{i}"), 1, now + Duration::from_millis(i as u64));
        }
        assert!(c.keys.len() <= MAX_KEYS);
        c.expire(now + Duration::from_secs(3600));
        assert!(c.keys.is_empty());
    }
}
