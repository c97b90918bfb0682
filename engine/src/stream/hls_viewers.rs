//! HLS viewers, estimated. HLS is stateless: a player polls the playlist about once per target duration, so the
//! polls seen in the last two target durations, halved, estimate the players. Every node counts the polls it
//! answers (its own streams' and, in a cluster, those of streams other nodes own) in
//! `strom_viewers{protocol="hls"}`, as it counts its RTMP and HTTP-FLV players.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use crate::metrics::Metrics;

/// Polls remembered at most (a flood must not grow memory).
const MAX_POLLS: usize = 100_000;

/// A poll counter whose estimate is reported in `strom_viewers{protocol="hls"}` (cheap to clone, shared).
#[derive(Clone)]
pub struct PollMeter(Arc<Mutex<Inner>>);

struct Inner {
    polls: VecDeque<Instant>,
    target_secs: u64,
    reported: i64,
    metrics: Arc<Metrics>,
}

impl PollMeter {
    /// A meter for a playlist of target duration `target_secs`.
    pub fn new(target_secs: u64, metrics: Arc<Metrics>) -> PollMeter {
        PollMeter(Arc::new(Mutex::new(Inner { polls: VecDeque::new(), target_secs, reported: 0, metrics })))
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Counts one playlist poll.
    pub fn poll(&self) {
        let mut m = self.lock();
        m.polls.push_back(Instant::now());
        if m.polls.len() > MAX_POLLS {
            m.polls.pop_front();
        }
        m.update();
    }

    /// The estimate now (also brings the metric up to date).
    pub fn viewers(&self) -> i64 {
        self.lock().update()
    }

    /// The playlist's target duration changed.
    pub fn set_target(&self, target_secs: u64) {
        let mut m = self.lock();
        m.target_secs = target_secs;
        m.update();
    }

    /// The stream is gone here: its viewers leave the metric.
    pub fn clear(&self) {
        let mut m = self.lock();
        m.polls.clear();
        m.report(0);
    }
}

impl Inner {
    fn update(&mut self) -> i64 {
        let window = Duration::from_secs(self.target_secs.max(1) * 2);
        while self.polls.front().is_some_and(|t| t.elapsed() > window) {
            self.polls.pop_front();
        }
        let v = (self.polls.len() as i64 + 1) / 2;
        self.report(v);
        v
    }

    fn report(&mut self, v: i64) {
        let delta = v - self.reported;
        if delta != 0 {
            self.metrics.viewers.with_label_values(&[crate::metrics::protocol::HLS]).add(delta);
            self.reported = v;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hls_gauge(m: &Metrics) -> i64 {
        m.viewers.with_label_values(&[crate::metrics::protocol::HLS]).get()
    }

    #[test]
    fn polls_estimate_viewers_and_clear_takes_them_back() {
        let metrics = Arc::new(Metrics::new());
        let a = PollMeter::new(2, metrics.clone());
        let b = PollMeter::new(2, metrics.clone());
        for _ in 0..4 {
            a.poll();
        }
        b.poll();
        assert_eq!(a.viewers(), 2);
        assert_eq!(b.viewers(), 1);
        assert_eq!(hls_gauge(&metrics), 3, "the node's gauge sums every meter");
        a.clear();
        assert_eq!(hls_gauge(&metrics), 1);
    }
}
