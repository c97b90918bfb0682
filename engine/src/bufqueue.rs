//! [`BufQueue`]: a queue of `Bytes` that writes as one vectored write (`writev`), so a batch of frames for one
//! player goes out in few syscalls without being copied together.

use std::collections::VecDeque;
use std::io::IoSlice;

use bytes::{Buf, Bytes};

/// A FIFO of byte buffers implementing [`Buf`] with vectored chunks.
#[derive(Debug, Default)]
pub struct BufQueue {
    bufs: VecDeque<Bytes>,
    remaining: usize,
}

impl BufQueue {
    /// An empty queue.
    pub fn new() -> BufQueue {
        BufQueue::default()
    }

    /// Appends a buffer (empty ones are skipped).
    pub fn push(&mut self, b: Bytes) {
        if !b.is_empty() {
            self.remaining += b.len();
            self.bufs.push_back(b);
        }
    }

    /// Puts a buffer in front of the others (empty ones are skipped).
    pub fn push_front(&mut self, b: Bytes) {
        if !b.is_empty() {
            self.remaining += b.len();
            self.bufs.push_front(b);
        }
    }

    /// Whether nothing is left.
    pub fn is_empty(&self) -> bool {
        self.remaining == 0
    }
}

impl Buf for BufQueue {
    fn remaining(&self) -> usize {
        self.remaining
    }

    fn chunk(&self) -> &[u8] {
        self.bufs.front().map(|b| &b[..]).unwrap_or(&[])
    }

    fn advance(&mut self, mut cnt: usize) {
        while cnt > 0 {
            let Some(front) = self.bufs.front_mut() else { break };
            let n = cnt.min(front.len());
            front.advance(n);
            self.remaining -= n;
            cnt -= n;
            if front.is_empty() {
                self.bufs.pop_front();
            }
        }
    }

    fn chunks_vectored<'a>(&'a self, dst: &mut [IoSlice<'a>]) -> usize {
        let mut n = 0;
        for (slot, b) in dst.iter_mut().zip(self.bufs.iter()) {
            *slot = IoSlice::new(b);
            n += 1;
        }
        n
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn advances_across_buffers() {
        let mut q = BufQueue::new();
        q.push(Bytes::from_static(b"abc"));
        q.push(Bytes::new());
        q.push(Bytes::from_static(b"defg"));
        q.push_front(Bytes::from_static(b">"));
        q.advance(1);
        assert_eq!(q.remaining(), 7);
        let mut io = [IoSlice::new(&[]); 4];
        assert_eq!(q.chunks_vectored(&mut io), 2);
        q.advance(4);
        assert_eq!(q.chunk(), b"efg");
        q.advance(3);
        assert!(q.is_empty());
    }
}
