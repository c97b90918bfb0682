//! The node's memory budget (`limits.memory_budget_mb`): above it, new streams are refused (publishes get a clear
//! error, relays are not made) and readiness goes false, so the Service sends new clients to other pods before the
//! kernel's OOM killer ends this one with all its streams.
//!
//! The budget defaults to 85 % of the container's memory limit (cgroup v2 `memory.max`, or v1
//! `memory.limit_in_bytes`), leaving room for what is in flight when the check passes; with no limit it is off.
//! Resident memory comes from `/proc/self/stat`, read at most every [`REFRESH`]. Leaving the over-budget state
//! needs RSS under 90 % of the budget, so readiness does not flap at the line.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Instant;

use crate::metrics::ProcessStats;

/// How long a resident-memory reading is reused.
pub const REFRESH: std::time::Duration = std::time::Duration::from_millis(200);
/// The share of the container's memory limit the automatic budget takes.
pub const AUTO_SHARE: f64 = 0.85;

/// The node's memory budget and where its resident memory stands.
#[derive(Debug)]
pub struct MemoryBudget {
    /// Bytes; 0: off.
    limit: u64,
    /// Where the limit came from (`limits.memory_budget_mb`, `cgroup`, `off`).
    source: &'static str,
    epoch: Instant,
    /// Milliseconds since `epoch` of the last reading, and the reading.
    read_at_ms: AtomicU64,
    rss: AtomicU64,
    over: AtomicBool,
}

impl MemoryBudget {
    /// `budget_mb` from the configuration; 0: [`AUTO_SHARE`] of the container's memory limit, off without one.
    pub fn new(budget_mb: u64) -> MemoryBudget {
        let (limit, source) = if budget_mb > 0 {
            (budget_mb << 20, "limits.memory_budget_mb")
        } else {
            match container_limit() {
                Some(l) => ((l as f64 * AUTO_SHARE) as u64, "cgroup"),
                None => (0, "off"),
            }
        };
        MemoryBudget {
            limit,
            source,
            epoch: Instant::now(),
            read_at_ms: AtomicU64::new(u64::MAX),
            rss: AtomicU64::new(0),
            over: AtomicBool::new(false),
        }
    }

    /// The budget in bytes; 0 when off.
    pub fn limit(&self) -> u64 {
        self.limit
    }

    /// Where the budget came from: `limits.memory_budget_mb`, `cgroup` or `off`.
    pub fn source(&self) -> &'static str {
        self.source
    }

    /// Resident memory in bytes (at most [`REFRESH`] old).
    pub fn rss(&self) -> u64 {
        let now = self.epoch.elapsed().as_millis() as u64;
        let at = self.read_at_ms.load(Ordering::Relaxed);
        if at == u64::MAX || now.saturating_sub(at) >= REFRESH.as_millis() as u64 {
            if let Some(s) = ProcessStats::read() {
                self.rss.store(s.rss_bytes, Ordering::Relaxed);
            }
            self.read_at_ms.store(now, Ordering::Relaxed);
        }
        self.rss.load(Ordering::Relaxed)
    }

    /// Whether the node is over its budget (entered above the budget, left below 90 % of it).
    pub fn over(&self) -> bool {
        if self.limit == 0 {
            return false;
        }
        let rss = self.rss();
        let was = self.over.load(Ordering::Relaxed);
        let now = if was { rss > self.limit / 10 * 9 } else { rss > self.limit };
        if now != was {
            self.over.store(now, Ordering::Relaxed);
            if now {
                tracing::warn!(
                    rss_mib = rss >> 20,
                    budget_mib = self.limit >> 20,
                    source = self.source,
                    "over the memory budget: new streams are refused and readiness is false"
                );
            } else {
                tracing::info!(rss_mib = rss >> 20, budget_mib = self.limit >> 20, "back under the memory budget");
            }
        }
        now
    }
}

/// The container's memory limit: cgroup v2 `memory.max`, else cgroup v1 `memory.limit_in_bytes`; `None` when
/// unlimited or unknown.
fn container_limit() -> Option<u64> {
    let v2 = std::fs::read_to_string("/sys/fs/cgroup/memory.max").ok();
    let v1 = || std::fs::read_to_string("/sys/fs/cgroup/memory/memory.limit_in_bytes").ok();
    parse_limit(&v2.or_else(v1)?)
}

/// A cgroup memory limit file's value: `max` (v2) or a page-rounded huge number (v1) mean no limit.
fn parse_limit(text: &str) -> Option<u64> {
    let v: u64 = text.trim().parse().ok()?;
    (v > 0 && v < 1 << 60).then_some(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cgroup_values() {
        assert_eq!(parse_limit("max\n"), None);
        assert_eq!(parse_limit("2147483648\n"), Some(2 << 30));
        assert_eq!(parse_limit("9223372036854771712\n"), None); // v1's "unlimited"
        assert_eq!(parse_limit(""), None);
    }

    #[test]
    fn a_tiny_budget_is_over_and_a_huge_one_is_not() {
        let tiny = MemoryBudget::new(1);
        assert_eq!(tiny.limit(), 1 << 20);
        assert!(tiny.rss() > 1 << 20, "a test process holds more than 1 MiB");
        assert!(tiny.over());
        let huge = MemoryBudget::new(1 << 30);
        assert!(!huge.over());
        assert_eq!(huge.source(), "limits.memory_budget_mb");
    }
}
