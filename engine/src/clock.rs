//! Wall-clock time as strom exchanges it between nodes and writes it into playlists.
//!
//! With `STROM_TEST_HOOKS=1`, `STROM_TEST_CLOCK_SKEW_MS` (a signed number of milliseconds) shifts this node's
//! wall clock: the clock-skew tests run nodes whose clocks disagree on one machine.

use std::sync::OnceLock;

/// Unix time in milliseconds (0 if the clock is before 1970).
pub fn unix_ms() -> u64 {
    let now =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0);
    now.saturating_add_signed(skew_ms())
}

/// The test skew of this node's clock (0 unless test hooks are on).
fn skew_ms() -> i64 {
    static SKEW: OnceLock<i64> = OnceLock::new();
    *SKEW.get_or_init(|| {
        if !std::env::var("STROM_TEST_HOOKS").is_ok_and(|v| v == "1") {
            return 0;
        }
        std::env::var("STROM_TEST_CLOCK_SKEW_MS").ok().and_then(|v| v.trim().parse().ok()).unwrap_or(0)
    })
}
