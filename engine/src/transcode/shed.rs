//! Falling behind real time: which rung to shed, and when to bring one back. Pure (no I/O, no clock of its own),
//! so the rules are unit-tested.
//!
//! The worker measures its ladder every window (2 s): the **real-time ratio** (media seconds encoded per second
//! the encoder thread spent in the codecs) and the **longest wait** of a source frame between the encoder's
//! subscription and the codecs. A window is *behind* when the ratio is under 1, or when a frame waited over
//! [`MAX_WAIT`] and the backlog did not shrink by [`RECOVERING`] by the window's end (the wait of its last frame):
//! a backlog left by a starvation that has ended drains at a ratio over 1, and shedding for it would measure the
//! shed rung's share on a machine whose load just changed. Then:
//!
//! - **Shed**: after [`BAD_WINDOWS`] behind windows in a row, and at least [`SHED_SPACING`] after the last
//!   change, the costliest active rung (most pixels) is shed: it stops being encoded and leaves the master
//!   playlist. One rung at a time, so the ladder loses no more than it must.
//! - **Restore**: after [`GOOD_WINDOWS`] windows in a row in which the ladder would still keep real time with a
//!   [`HEADROOM`] margin *with* the cheapest shed rung added back (its cost estimated from pixels), and at least
//!   the restore wait after the last change, that rung comes back.
//! - **No flapping**: a rung shed again within [`FLAP`] of its return doubles the restore wait (from
//!   [`RESTORE_WAIT`] up to [`MAX_RESTORE_WAIT`]).
//!
//! Cost model, to predict whether a restore would fit: a shed rung's *share* of the ladder's work is measured
//! (codec seconds per media second before its shed minus after it, over before, taken on the first window after
//! the shed). A share, not seconds: under CPU contention both sides stretch alike, so a share measured on a
//! starved machine still holds once the CPU is back. Restoring a rung of share `s` turns a ratio `r` into about
//! `r × (1 − s)`. Until a share is measured it is estimated from pixels (a rung costs its pixel count, decoding
//! the source half the source's). A wrong guess is corrected by the next shed, and the flap rule keeps it from
//! repeating. A measured share is trusted for [`SHARE_TTL`], then the estimate from pixels applies again: a share
//! measured while the contention changed (a CPU spike that ends just after the shed makes the rung look like
//! nearly all the work) would otherwise keep the rung shed for the rest of the stream.

use std::time::{Duration, Instant};

/// A source frame that waited longer than this before the codecs makes the window "behind".
pub const MAX_WAIT: Duration = Duration::from_secs(2);
/// A window whose last frame waited this much less than its longest wait is draining a backlog, not behind.
pub const RECOVERING: Duration = Duration::from_millis(500);
/// Behind windows in a row before a rung is shed.
pub const BAD_WINDOWS: u32 = 2;
/// Good windows in a row before a rung is restored.
pub const GOOD_WINDOWS: u32 = 5;
/// Minimum time between a change and the next shed (the previous shed must show its effect first).
pub const SHED_SPACING: Duration = Duration::from_secs(4);
/// First wait after a change before a restore.
pub const RESTORE_WAIT: Duration = Duration::from_secs(10);
/// Longest restore wait.
pub const MAX_RESTORE_WAIT: Duration = Duration::from_secs(300);
/// A restore that gets shed again within this time was a mistake: the restore wait doubles.
pub const FLAP: Duration = Duration::from_secs(60);
/// A restore must leave this margin over real time (predicted ratio).
pub const HEADROOM: f64 = 1.25;
/// How long a measured share of a shed rung is trusted before the estimate from pixels applies again.
pub const SHARE_TTL: Duration = Duration::from_secs(60);

/// One measurement window of the ladder.
#[derive(Debug, Clone, Copy)]
pub struct Window {
    /// Media seconds encoded per second spent in the codecs.
    pub ratio: f64,
    /// Longest wait of a source frame before the codecs.
    pub max_wait: Duration,
    /// Wait of the window's last frame before the codecs (the backlog at the window's end).
    pub end_wait: Duration,
}

impl Window {
    /// Whether the ladder fell behind real time in this window.
    pub fn behind(&self) -> bool {
        self.ratio < 1.0 || (self.max_wait > MAX_WAIT && self.end_wait + RECOVERING > self.max_wait)
    }
}

/// One rung as the policy sees it.
#[derive(Debug, Clone, Copy)]
pub struct RungLoad {
    /// Pixels per picture (cost).
    pub pixels: u64,
    /// Being encoded (not shed).
    pub active: bool,
}

/// What to do with a rung (an index into the rungs given to [`ShedPolicy::observe`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ShedAction {
    /// Stop encoding this rung.
    Shed(usize),
    /// Encode this rung again.
    Restore(usize),
}

/// The shedding state of one ladder.
#[derive(Debug, Clone)]
pub struct ShedPolicy {
    bad: u32,
    good: u32,
    last_change: Option<Instant>,
    last_restore: Option<Instant>,
    restore_wait: Duration,
    /// The last shed rung and the codec seconds per media second just before its shed.
    measuring: Option<(usize, f64)>,
    /// Measured share of the ladder's work of shed rungs (0..1), and when it was measured.
    shares: Vec<(usize, f64, Instant)>,
}

impl Default for ShedPolicy {
    fn default() -> Self {
        ShedPolicy {
            bad: 0,
            good: 0,
            last_change: None,
            last_restore: None,
            restore_wait: RESTORE_WAIT,
            measuring: None,
            shares: Vec::new(),
        }
    }
}

impl ShedPolicy {
    /// The current wait before a restore.
    pub fn restore_wait(&self) -> Duration {
        self.restore_wait
    }

    /// Takes one window's measurement at `now` for a source of `source_pixels` and its rungs; returns what to do.
    pub fn observe(&mut self, now: Instant, w: Window, source_pixels: u64, rungs: &[RungLoad]) -> Option<ShedAction> {
        let busy = 1.0 / w.ratio.max(1e-3);
        if let Some((i, before)) = self.measuring.take() {
            self.shares.retain(|(j, _, _)| *j != i);
            self.shares.push((i, ((before - busy) / before).clamp(0.0, 0.99), now));
        }
        let since_change = self.last_change.map_or(Duration::MAX, |t| now.saturating_duration_since(t));
        if w.behind() {
            self.good = 0;
            self.bad += 1;
            if self.bad < BAD_WINDOWS || since_change < SHED_SPACING {
                return None;
            }
            // The costliest active rung; among equals the first (the tallest).
            let (i, _) = rungs
                .iter()
                .enumerate()
                .filter(|(_, r)| r.active)
                .min_by_key(|(i, r)| (std::cmp::Reverse(r.pixels), *i))?;
            if self.last_restore.is_some_and(|t| now.saturating_duration_since(t) < FLAP) {
                self.restore_wait = (self.restore_wait * 2).min(MAX_RESTORE_WAIT);
            }
            self.bad = 0;
            self.last_change = Some(now);
            self.measuring = Some((i, busy));
            return Some(ShedAction::Shed(i));
        }
        self.bad = 0;
        let Some((i, cand)) =
            rungs.iter().enumerate().filter(|(_, r)| !r.active).min_by_key(|(i, r)| (r.pixels, std::cmp::Reverse(*i)))
        else {
            self.good = 0;
            return None;
        };
        let measured = self.shares.iter().find(|(j, _, at)| *j == i && now.saturating_duration_since(*at) < SHARE_TTL);
        let predicted = match measured {
            Some((_, share, _)) => w.ratio * (1.0 - share),
            None => {
                let active = rungs.iter().filter(|r| r.active).map(|r| r.pixels as f64).sum::<f64>();
                let now_cost = source_pixels as f64 / 2.0 + active;
                w.ratio * now_cost / (now_cost + cand.pixels as f64)
            }
        };
        if predicted < HEADROOM {
            self.good = 0;
            return None;
        }
        self.good += 1;
        if self.good < GOOD_WINDOWS || since_change < self.restore_wait {
            return None;
        }
        self.good = 0;
        self.last_change = Some(now);
        self.last_restore = Some(now);
        Some(ShedAction::Restore(i))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SRC: u64 = 1280 * 720;

    fn ladder() -> Vec<RungLoad> {
        [854 * 480, 640 * 360, 426 * 240].into_iter().map(|pixels| RungLoad { pixels, active: true }).collect()
    }

    fn win(ratio: f64) -> Window {
        Window { ratio, max_wait: Duration::from_millis(100), end_wait: Duration::from_millis(50) }
    }

    /// Feeds `n` windows 2 s apart from `*t`, applying actions to `rungs`; returns the actions.
    fn run(p: &mut ShedPolicy, t: &mut Instant, rungs: &mut [RungLoad], w: Window, n: usize) -> Vec<ShedAction> {
        let mut out = Vec::new();
        for _ in 0..n {
            *t += Duration::from_secs(2);
            if let Some(a) = p.observe(*t, w, SRC, rungs) {
                match a {
                    ShedAction::Shed(i) => rungs[i].active = false,
                    ShedAction::Restore(i) => rungs[i].active = true,
                }
                out.push(a);
            }
        }
        out
    }

    #[test]
    fn sheds_the_costliest_rung_after_two_behind_windows_one_at_a_time() {
        let (mut p, mut t, mut r) = (ShedPolicy::default(), Instant::now(), ladder());
        assert_eq!(run(&mut p, &mut t, &mut r, win(0.7), 1), vec![], "one bad window is not enough");
        assert_eq!(run(&mut p, &mut t, &mut r, win(0.7), 1), vec![ShedAction::Shed(0)]);
        // Still behind: the next shed waits for the spacing and two more bad windows.
        assert_eq!(run(&mut p, &mut t, &mut r, win(0.8), 1), vec![]);
        assert_eq!(run(&mut p, &mut t, &mut r, win(0.8), 1), vec![ShedAction::Shed(1)]);
        assert_eq!(run(&mut p, &mut t, &mut r, win(0.9), 2), vec![ShedAction::Shed(2)]);
        assert_eq!(run(&mut p, &mut t, &mut r, win(0.5), 10), vec![], "nothing left to shed");
    }

    #[test]
    fn a_long_wait_counts_as_behind_even_with_a_good_ratio() {
        let (mut p, mut t, mut r) = (ShedPolicy::default(), Instant::now(), ladder());
        let w = Window { ratio: 3.0, max_wait: Duration::from_secs(3), end_wait: Duration::from_millis(2900) };
        assert_eq!(run(&mut p, &mut t, &mut r, w, 2), vec![ShedAction::Shed(0)]);
    }

    #[test]
    fn a_backlog_draining_after_a_starvation_is_not_behind() {
        let (mut p, mut t, mut r) = (ShedPolicy::default(), Instant::now(), ladder());
        // Starved: 480p is shed.
        assert_eq!(run(&mut p, &mut t, &mut r, win(0.3), 2), vec![ShedAction::Shed(0)]);
        assert_eq!(run(&mut p, &mut t, &mut r, win(0.5), 1), vec![]);
        // The CPU comes back: frames queued during the starvation waited 4.7 s, the backlog drains (its last
        // frame waited 3 s) at 1.3x real time. Nothing more is shed, however long it takes.
        let draining = Window { ratio: 1.3, max_wait: Duration::from_millis(4700), end_wait: Duration::from_secs(3) };
        assert_eq!(run(&mut p, &mut t, &mut r, draining, 4), vec![]);
        // A backlog that stays as long is behind.
        let stuck = Window { ratio: 1.3, max_wait: Duration::from_millis(4700), end_wait: Duration::from_millis(4500) };
        assert_eq!(run(&mut p, &mut t, &mut r, stuck, 2), vec![ShedAction::Shed(1)]);
    }

    #[test]
    fn restores_the_cheapest_shed_rung_when_it_fits_with_headroom() {
        let (mut p, mut t, mut r) = (ShedPolicy::default(), Instant::now(), ladder());
        r[0].active = false;
        r[2].active = false;
        // Barely real time: adding 240p back would not leave the margin.
        assert_eq!(run(&mut p, &mut t, &mut r, win(1.1), 20), vec![]);
        // Plenty of room: 240p (the cheapest) comes back after 5 good windows.
        assert_eq!(run(&mut p, &mut t, &mut r, win(4.0), 4), vec![]);
        assert_eq!(run(&mut p, &mut t, &mut r, win(4.0), 1), vec![ShedAction::Restore(2)]);
        // Then 480p, after the restore wait (10 s) and 5 more good windows.
        assert_eq!(run(&mut p, &mut t, &mut r, win(4.0), 5), vec![ShedAction::Restore(0)]);
        assert!(r.iter().all(|r| r.active));
    }

    #[test]
    fn a_measured_cost_keeps_an_expensive_rung_shed() {
        let (mut p, mut t, mut r) = (ShedPolicy::default(), Instant::now(), ladder());
        // 480p is very costly (a slow preset): behind at 0.4, and at 5.0 once it is shed.
        assert_eq!(run(&mut p, &mut t, &mut r, win(0.4), 2), vec![ShedAction::Shed(0)]);
        // By pixels alone 5.0 would predict room for 480p; its measured share (92% of the work) says no, for as
        // long as it is trusted (then a restore that falls behind is shed again, and the flap rule spaces them).
        assert_eq!(run(&mut p, &mut t, &mut r, win(5.0), (SHARE_TTL.as_secs() / 2) as usize), vec![]);
    }

    #[test]
    fn a_share_measured_on_a_starved_machine_allows_the_restore_once_the_cpu_is_back() {
        let (mut p, mut t, mut r) = (ShedPolicy::default(), Instant::now(), ladder());
        // Another process takes most of the CPU: everything runs 8x slower; 480p is 40% of the work.
        assert_eq!(run(&mut p, &mut t, &mut r, win(0.3), 2), vec![ShedAction::Shed(0)]);
        assert_eq!(run(&mut p, &mut t, &mut r, win(0.5), 1), vec![]);
        // Just keeping up: 1.1 x 0.6 would not fit.
        assert_eq!(run(&mut p, &mut t, &mut r, win(1.1), 3), vec![]);
        // The CPU is back (4.0 without 480p): 4.0 x 0.6 = 2.4, it fits.
        assert_eq!(run(&mut p, &mut t, &mut r, win(4.0), 5), vec![ShedAction::Restore(0)]);
    }

    #[test]
    fn a_share_measured_while_a_cpu_spike_ended_expires() {
        let (mut p, mut t, mut r) = (ShedPolicy::default(), Instant::now(), ladder());
        // A spike: behind at 0.5, shed; the spike ends with the next window (5.0 without 480p), so 480p looks
        // like 90% of the work.
        assert_eq!(run(&mut p, &mut t, &mut r, win(0.5), 2), vec![ShedAction::Shed(0)]);
        let during = run(&mut p, &mut t, &mut r, win(5.0), (SHARE_TTL.as_secs() / 2) as usize);
        assert_eq!(during, vec![], "the measured share keeps 480p out while it is trusted");
        // Then the estimate from pixels applies: 5.0 leaves room, 480p is back after five good windows.
        assert_eq!(run(&mut p, &mut t, &mut r, win(5.0), 5), vec![ShedAction::Restore(0)]);
    }

    #[test]
    fn a_restore_that_is_shed_again_soon_doubles_the_wait() {
        let (mut p, mut t, mut r) = (ShedPolicy::default(), Instant::now(), ladder());
        // Shed at 0.8; the next window (1.25) measures 480p's share: (1.25 - 0.8) / 1.25 = 36% of the work.
        assert_eq!(run(&mut p, &mut t, &mut r, win(0.8), 2), vec![ShedAction::Shed(0)]);
        assert_eq!(run(&mut p, &mut t, &mut r, win(1.25), 1), vec![]);
        // The machine frees up: 10 × 0.64 = 6.4 leaves headroom; back after the 10 s wait.
        assert_eq!(run(&mut p, &mut t, &mut r, win(10.0), 5), vec![ShedAction::Restore(0)]);
        // Behind again at once: shed, and the restore wait doubles.
        assert_eq!(run(&mut p, &mut t, &mut r, win(0.8), 2), vec![ShedAction::Shed(0)]);
        assert_eq!(p.restore_wait(), RESTORE_WAIT * 2);
        assert_eq!(run(&mut p, &mut t, &mut r, win(1.25), 1), vec![]);
        // Room again: no restore before the doubled wait (20 s after the shed).
        assert_eq!(run(&mut p, &mut t, &mut r, win(10.0), 8), vec![]);
        assert_eq!(run(&mut p, &mut t, &mut r, win(10.0), 1), vec![ShedAction::Restore(0)]);
    }
}
