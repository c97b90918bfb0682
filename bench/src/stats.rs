//! Counters shared between player tasks and the run loop: per-player atomics, a lock-free latency histogram,
//! and the process clock.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, Ordering::Relaxed};
use std::sync::OnceLock;
use std::time::Instant;

static EPOCH: OnceLock<Instant> = OnceLock::new();

/// Nanoseconds since the tool started (monotonic).
pub fn now_ns() -> u64 {
    EPOCH.get_or_init(Instant::now).elapsed().as_nanos() as u64
}

/// Player life states.
// 0: connecting (the default).
pub const PLAYING: u8 = 1;
pub const FAILED: u8 = 2;

/// What one player has seen so far (updated by its task, read by the run loop).
#[derive(Default)]
pub struct PlayerStats {
    /// Bytes read from the socket (protocol framing included).
    pub wire: AtomicU64,
    /// Media payload bytes (FLV tag bodies / RTMP message bodies / TS segment bytes).
    pub media: AtomicU64,
    /// Audio + video frames (HLS: segments).
    pub frames: AtomicU64,
    /// Request → first IDR (HLS: playlist request → first segment downloaded), ns; 0 = not yet.
    pub join_ns: AtomicU64,
    pub state: AtomicU8,
    /// LL-HLS: blocking reloads answered 503 (the part did not appear within the hold).
    pub unavailable: AtomicU64,
    /// LL-HLS: blocking reloads answered 400 (too far ahead of the live edge).
    pub bad_reloads: AtomicU64,
}

impl PlayerStats {
    pub fn joined(&self, since_ns: u64) {
        if self.join_ns.load(Relaxed) == 0 {
            self.join_ns.store((now_ns() - since_ns).max(1), Relaxed);
            self.state.store(PLAYING, Relaxed);
        }
    }
}

/// Log-linear histogram of microsecond values (128 sub-buckets per power of two: < 1% resolution).
pub struct Hist {
    buckets: Vec<AtomicU64>,
    /// Only values recorded while this is set count (the measurement window).
    pub enabled: AtomicBool,
}

const SUB_BITS: u32 = 7;
const SUB: u64 = 1 << SUB_BITS;

fn index(v: u64) -> usize {
    if v < SUB {
        v as usize
    } else {
        let msb = 63 - v.leading_zeros();
        let shift = msb - SUB_BITS;
        (shift as u64 * SUB + (v >> shift)) as usize
    }
}

fn lower_bound(i: usize) -> u64 {
    let i = i as u64;
    if i < 2 * SUB {
        i
    } else {
        let shift = i / SUB - 1;
        (i - shift * SUB) << shift
    }
}

impl Default for Hist {
    fn default() -> Self {
        Hist {
            buckets: (0..index(u64::MAX >> 8) + 1).map(|_| AtomicU64::new(0)).collect(),
            enabled: AtomicBool::new(false),
        }
    }
}

impl Hist {
    pub fn record_us(&self, us: u64) {
        if self.enabled.load(Relaxed) {
            let i = index(us.min(u64::MAX >> 8));
            self.buckets[i].fetch_add(1, Relaxed);
        }
    }

    pub fn reset(&self) {
        for b in &self.buckets {
            b.store(0, Relaxed);
        }
    }

    pub fn count(&self) -> u64 {
        self.buckets.iter().map(|b| b.load(Relaxed)).sum()
    }

    /// Value at quantile `q` (0..=1), microseconds (bucket midpoint); None when empty.
    pub fn quantile_us(&self, q: f64) -> Option<f64> {
        let total = self.count();
        if total == 0 {
            return None;
        }
        let rank = ((q * total as f64).ceil() as u64).clamp(1, total);
        let mut seen = 0;
        for (i, b) in self.buckets.iter().enumerate() {
            seen += b.load(Relaxed);
            if seen >= rank {
                let lo = lower_bound(i);
                let hi = lower_bound(i + 1);
                return Some((lo + hi) as f64 / 2.0);
            }
        }
        None
    }
}

/// Quantile of a sorted slice (nearest rank).
pub fn quantile(sorted: &[f64], q: f64) -> Option<f64> {
    if sorted.is_empty() {
        return None;
    }
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    Some(sorted[rank - 1])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_contiguous_and_cover() {
        for v in [0u64, 1, 31, 32, 63, 64, 65, 127, 128, 1000, 123_456, 10_000_000] {
            let i = index(v);
            assert!(lower_bound(i) <= v && v < lower_bound(i + 1), "v={v} i={i}");
        }
    }

    #[test]
    fn quantiles() {
        let h = Hist::default();
        h.enabled.store(true, Relaxed);
        for v in 1..=1000 {
            h.record_us(v * 1000);
        }
        let p50 = h.quantile_us(0.5).unwrap();
        assert!((p50 - 500_000.0).abs() < 20_000.0, "{p50}");
        let p99 = h.quantile_us(0.99).unwrap();
        assert!((p99 - 990_000.0).abs() < 40_000.0, "{p99}");
    }
}
