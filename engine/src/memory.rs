//! The node's memory budget (`limits.memory_budget_mb`): above it, new streams are refused (publishes get a clear
//! error, relays are not made) and readiness goes false, so the Service sends new clients to other pods before the
//! kernel's OOM killer ends this one with all its streams.
//!
//! The budget defaults to 85 % of the container's memory limit (cgroup v2 `memory.max`, or v1
//! `memory.limit_in_bytes`), leaving room for what is in flight when the check passes; with no limit it is off.
//! Resident memory comes from `/proc/self/stat`, read at most every [`REFRESH`]. Leaving the over-budget state
//! needs RSS under 90 % of the budget, so readiness does not flap at the line.
//!
//! Code and read-only data the node does not run ([`release_unused_file_pages`]): most of an idle node's resident
//! memory is clean pages of its executable and of the libraries FFmpeg links (codecs, TLS, XML, SVG...), mapped
//! at start-up and by the kernel's fault-around (64 KiB around each page touched). Once the node is up it asks
//! the kernel to take those back and to map only pages that are touched from then on (`MADV_PAGEOUT`,
//! `MADV_RANDOM`): an idle node holds ~11 MiB instead of ~39 (`bench/idle`). Both advices keep every byte's content; a page used
//! again is read back on its first touch.

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

/// A read-only file mapping of this process (`/proc/self/maps`): code or read-only data of the executable or a
/// library.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileMapping {
    /// First address.
    pub start: usize,
    /// One past the last address.
    pub end: usize,
}

/// The read-only file mappings in a `/proc/self/maps` text: not writable, backed by a file (a path, a non-zero
/// inode), not a device. Lines that do not parse are skipped. Pure: no I/O.
pub fn file_mappings(maps: &str) -> Vec<FileMapping> {
    maps.lines()
        .filter_map(|line| {
            let mut f = line.split_ascii_whitespace();
            let (range, perms, _offset, _dev, inode) = (f.next()?, f.next()?, f.next()?, f.next()?, f.next()?);
            let path = f.next()?;
            if perms.contains('w') || inode == "0" || !path.starts_with('/') || path.starts_with("/dev/") {
                return None;
            }
            let (start, end) = range.split_once('-')?;
            let (start, end) = (usize::from_str_radix(start, 16).ok()?, usize::from_str_radix(end, 16).ok()?);
            (start < end).then_some(FileMapping { start, end })
        })
        .collect()
}

/// Returns the pages of this process's read-only file mappings (code, read-only data) to the kernel and stops
/// fault-around on them, so only pages touched from now on come back (see the module docs). Returns the resident
/// bytes it freed (by `/proc/self/status`; 0 where the kernel lacks `MADV_PAGEOUT`, Linux < 5.4).
///
/// Both advices keep contents: `MADV_RANDOM` only changes how pages are read in, and `MADV_PAGEOUT` reclaims
/// what it can (a clean file page is read again on its next touch; a private copy, such as relocated read-only
/// data, stays without swap and is swapped, not lost, with it).
pub fn release_unused_file_pages() -> u64 {
    let rss_file = || {
        let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
        status
            .lines()
            .find_map(|l| l.strip_prefix("RssFile:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            .map_or(0, |kib| kib << 10)
    };
    let Ok(maps) = std::fs::read_to_string("/proc/self/maps") else { return 0 };
    let before = rss_file();
    for m in file_mappings(&maps) {
        let (addr, len) = (m.start as *mut libc::c_void, m.end - m.start);
        // SAFETY: the range is a mapping of this process as the kernel listed it; neither advice changes what
        // its pages hold (see above). A range unmapped meanwhile gets ENOMEM, an unsupported advice EINVAL:
        // both are harmless, and ignored.
        unsafe {
            libc::madvise(addr, len, libc::MADV_RANDOM);
            libc::madvise(addr, len, libc::MADV_PAGEOUT);
        }
    }
    before.saturating_sub(rss_file())
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
    fn read_only_file_mappings_are_found() {
        let maps = "\
55d0c0000000-55d0c0400000 r--p 00000000 08:01 1234 /usr/bin/strom
55d0c0400000-55d0c1400000 r-xp 00400000 08:01 1234 /usr/bin/strom
55d0c1400000-55d0c1500000 rw-p 01400000 08:01 1234 /usr/bin/strom
55d0c2000000-55d0c2100000 rw-p 00000000 00:00 0 [heap]
7f0000000000-7f0000001000 r--p 00000000 00:05 77 /dev/dri/card0
7f0000001000-7f0000002000 r-xp 00000000 00:00 0 [vdso]
7f0000002000-7f0000003000 r--p 00000000 00:00 0
7f0000003000-7f0000004000 r-xp 00000000 08:01 99 /usr/lib/x86_64-linux-gnu/libc.so.6 (deleted)
garbage line
7f0000005000-7f0000004000 r-xp 00000000 08:01 99 /backwards
";
        let got = file_mappings(maps);
        let want =
            [(0x55d0c0000000, 0x55d0c0400000), (0x55d0c0400000, 0x55d0c1400000), (0x7f0000003000, 0x7f0000004000)];
        assert_eq!(got, want.map(|(start, end)| FileMapping { start, end }));
    }

    #[test]
    fn released_file_pages_leave_the_process_working() {
        let own = file_mappings(&std::fs::read_to_string("/proc/self/maps").unwrap());
        assert!(!own.is_empty(), "a test binary maps its own code");
        let freed = release_unused_file_pages();
        // Code runs on: pages come back as they are touched.
        let mut v: Vec<u64> = (0..10_000).rev().collect();
        v.sort_unstable();
        assert_eq!(v[9_999], 9_999);
        // Read-only data reads back the same.
        assert_eq!(parse_limit("2147483648\n"), Some(2 << 30));
        eprintln!("released {} KiB of file pages", freed >> 10);
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
