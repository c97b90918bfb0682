//! Byte budgets on the two hops a frame takes inside a node: publisher → stream actor, and stream actor →
//! segmenter. ractor mailboxes are unbounded, so each hop counts the bytes it has queued (`stream.queue_max_bytes`
//! each):
//! - **publisher → stream actor:** [`super::registry::Publisher::send`] adds, the stream actor subtracts when it
//!   has taken the frame. Over the budget, the publisher's connection stops reading its socket
//!   ([`QueueBudget::room`]) until the actor is back under half of it: TCP pushes back on that one publisher, and
//!   nothing else waits.
//! - **stream actor → segmenter:** the stream actor adds, the segmenter subtracts. Over the budget, the stream
//!   actor stops feeding the segmenter (the open segment is closed; the frames are counted as dropped with reason
//!   `segmenter_behind`) and starts again at a keyframe once the segmenter is under half of it, with a
//!   discontinuity. RTMP and HTTP-FLV players never wait for HLS.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;

use tokio::sync::Notify;

/// Bytes queued on one hop, against its budget.
#[derive(Debug)]
pub struct QueueBudget {
    queued: AtomicUsize,
    max: usize,
    /// Someone waits in [`QueueBudget::room`] (so the consumer only notifies when it matters).
    waiting: AtomicBool,
    drained: Notify,
}

impl QueueBudget {
    /// A hop allowed `max` bytes in flight (at least 64 KiB).
    pub fn new(max: usize) -> Arc<QueueBudget> {
        Arc::new(QueueBudget {
            queued: AtomicUsize::new(0),
            max: max.max(64 << 10),
            waiting: AtomicBool::new(false),
            drained: Notify::new(),
        })
    }

    /// `n` more bytes are queued; returns the total.
    pub fn add(&self, n: usize) -> usize {
        self.queued.fetch_add(n, Ordering::Relaxed) + n
    }

    /// `n` bytes left the queue.
    pub fn done(&self, n: usize) {
        let left = self.queued.fetch_sub(n, Ordering::Relaxed).saturating_sub(n);
        if left <= self.max / 2 && self.waiting.load(Ordering::Relaxed) {
            self.waiting.store(false, Ordering::Relaxed);
            self.drained.notify_waiters();
        }
    }

    /// Bytes queued now.
    pub fn queued(&self) -> usize {
        self.queued.load(Ordering::Relaxed)
    }

    /// More than the budget is queued.
    pub fn over(&self) -> bool {
        self.queued() > self.max
    }

    /// Under half the budget (where a stopped hop starts again).
    pub fn drained(&self) -> bool {
        self.queued() <= self.max / 2
    }

    /// Waits until there is room: at once when under the budget, else until the consumer is under half of it.
    pub async fn room(&self) {
        while self.over() {
            let notified = self.drained.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            self.waiting.store(true, Ordering::Relaxed);
            if self.drained() {
                return;
            }
            notified.await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn room_waits_until_the_consumer_is_under_half() {
        let q = QueueBudget::new(100 << 10);
        q.add(50 << 10);
        tokio::time::timeout(Duration::from_millis(50), q.room()).await.expect("room under the budget");
        q.add(60 << 10);
        assert!(q.over());
        let waiter = {
            let q = q.clone();
            tokio::spawn(async move { q.room().await })
        };
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(!waiter.is_finished());
        q.done(40 << 10); // 70 KiB: under the budget, not under half
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(!waiter.is_finished());
        q.done(30 << 10); // 40 KiB
        tokio::time::timeout(Duration::from_secs(1), waiter).await.expect("woken").unwrap();
        assert_eq!(q.queued(), 40 << 10);
    }
}
