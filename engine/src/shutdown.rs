//! Graceful shutdown: a broadcast to every task, and a completion channel that closes when the last task is done
//! (the pattern of tokio's mini-redis).
//!
//! Every long-lived task holds a [`ShutdownSignal`] clone. It awaits [`ShutdownSignal::recv`] to learn that the
//! node is stopping; dropping its signal tells [`Shutdown::wait`] that it has finished.

use std::time::Duration;

use tokio::sync::{mpsc, watch};

/// The sending side, held by the node.
pub struct Shutdown {
    tx: watch::Sender<bool>,
    done_tx: Option<mpsc::Sender<()>>,
    done_rx: mpsc::Receiver<()>,
}

/// A task's view of shutdown. Clone it into each task; drop it when the task ends.
#[derive(Clone)]
pub struct ShutdownSignal {
    rx: watch::Receiver<bool>,
    _done: mpsc::Sender<()>,
}

impl Shutdown {
    /// A fresh, untriggered shutdown.
    pub fn new() -> Shutdown {
        let (tx, _) = watch::channel(false);
        let (done_tx, done_rx) = mpsc::channel(1);
        Shutdown { tx, done_tx: Some(done_tx), done_rx }
    }

    /// A signal for a new task.
    pub fn signal(&self) -> ShutdownSignal {
        ShutdownSignal { rx: self.tx.subscribe(), _done: self.done_tx.clone().unwrap_or_else(|| mpsc::channel(1).0) }
    }

    /// Tells every task to stop.
    pub fn trigger(&self) {
        self.tx.send_replace(true);
    }

    /// Waits until every task has dropped its signal, or `timeout`. Returns whether all finished.
    pub async fn wait(&mut self, timeout: Duration) -> bool {
        self.done_tx.take();
        tokio::time::timeout(timeout, self.done_rx.recv()).await.is_ok()
    }
}

impl Default for Shutdown {
    fn default() -> Self {
        Shutdown::new()
    }
}

impl ShutdownSignal {
    /// Resolves once shutdown has been triggered (at once if it already was).
    pub async fn recv(&mut self) {
        let _ = self.rx.wait_for(|stop| *stop).await;
    }

    /// Whether shutdown has been triggered.
    pub fn is_triggered(&self) -> bool {
        *self.rx.borrow()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn waits_for_tasks() {
        let mut s = Shutdown::new();
        let mut sig = s.signal();
        let task = tokio::spawn(async move {
            sig.recv().await;
            tokio::time::sleep(Duration::from_millis(20)).await;
        });
        s.trigger();
        assert!(s.wait(Duration::from_secs(2)).await);
        task.await.unwrap();
    }
}
