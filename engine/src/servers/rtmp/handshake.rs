//! The server side of the RTMP handshake without I/O: `rml_rtmp`'s handshake state machine behind a byte budget,
//! so a peer that never completes it cannot make the connection buffer without end. The connection task
//! (`server::handshake`) feeds it what it reads and writes what it answers; fuzzed by `rtmp_handshake`.

use rml_rtmp::handshake::{Handshake, HandshakeProcessResult, PeerType};

/// Largest handshake input accepted (C0+C1+C2 are 3073 bytes; anything after them is the session's).
pub const MAX_HANDSHAKE_BYTES: usize = 64 * 1024;

/// What the handshake does with the bytes read.
#[derive(Debug, PartialEq, Eq)]
pub enum Step {
    /// Not complete: write `reply` (may be empty) and read more.
    Continue {
        /// Bytes for the peer (S0, S1, S2).
        reply: Vec<u8>,
    },
    /// Complete: write `reply`; `rest` is what the peer sent after its C2 (the session's first bytes).
    Done {
        /// Bytes for the peer.
        reply: Vec<u8>,
        /// Bytes after the handshake.
        rest: Vec<u8>,
    },
}

/// A failed handshake (the connection ends), with why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct HandshakeError(pub String);

/// The server side of one connection's handshake.
pub struct ServerHandshake {
    hs: Handshake,
    fed: usize,
    done: bool,
}

impl Default for ServerHandshake {
    fn default() -> Self {
        ServerHandshake { hs: Handshake::new(PeerType::Server), fed: 0, done: false }
    }
}

impl ServerHandshake {
    /// A handshake waiting for C0+C1.
    pub fn new() -> ServerHandshake {
        ServerHandshake::default()
    }

    /// Bytes received so far.
    pub fn fed(&self) -> usize {
        self.fed
    }

    /// Takes the bytes of one read.
    pub fn feed(&mut self, bytes: &[u8]) -> Result<Step, HandshakeError> {
        if self.done {
            return Err(HandshakeError("handshake already complete".into()));
        }
        self.fed += bytes.len();
        if self.fed > MAX_HANDSHAKE_BYTES {
            return Err(HandshakeError(format!("more than {MAX_HANDSHAKE_BYTES} bytes without completing")));
        }
        match self.hs.process_bytes(bytes).map_err(|e| HandshakeError(format!("{e:?}")))? {
            HandshakeProcessResult::InProgress { response_bytes } => Ok(Step::Continue { reply: response_bytes }),
            HandshakeProcessResult::Completed { response_bytes, remaining_bytes } => {
                self.done = true;
                Ok(Step::Done { reply: response_bytes, rest: remaining_bytes })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A client's C0+C1, then its C2 (the echo of S1) with session bytes behind it.
    #[test]
    fn completes_with_a_client_and_hands_over_what_follows() {
        let mut client = Handshake::new(PeerType::Client);
        let c0c1 = client.generate_outbound_p0_and_p1().unwrap();
        let mut server = ServerHandshake::new();
        let Step::Continue { reply } = server.feed(&c0c1).unwrap() else { panic!("done too early") };
        let c2 = match client.process_bytes(&reply).unwrap() {
            HandshakeProcessResult::Completed { response_bytes, .. } => response_bytes,
            HandshakeProcessResult::InProgress { .. } => panic!("client not complete"),
        };
        let mut tail = c2.clone();
        tail.extend_from_slice(b"session");
        match server.feed(&tail).unwrap() {
            Step::Done { rest, .. } => assert_eq!(rest, b"session"),
            other => panic!("{other:?}"),
        }
        assert!(server.feed(b"x").is_err());
    }

    /// rml_rtmp does not check C2 (like nginx-rtmp): the handshake is complete after exactly C0+C1+C2, whatever
    /// C2 holds, and every byte after it belongs to the session, however the reads split it.
    #[test]
    fn completes_after_exactly_c0_c1_c2_in_any_split() {
        let mut input = vec![3u8];
        input.extend((0..1536 + 1536 + 100).map(|i| i as u8));
        for split in [1usize, 7, 1000, 1537, 3073, 5000] {
            let mut server = ServerHandshake::new();
            let (mut replied, mut done) = (0usize, None);
            for chunk in input.chunks(split) {
                match server.feed(chunk).unwrap() {
                    Step::Continue { reply } => replied += reply.len(),
                    Step::Done { reply, rest } => {
                        replied += reply.len();
                        done = Some((server.fed() - rest.len(), rest));
                        break;
                    }
                }
            }
            let (consumed, rest) = done.expect("complete");
            assert_eq!(consumed, 3073, "split {split}");
            assert_eq!(rest, input[3073..3073 + rest.len()], "split {split}");
            assert_eq!(replied, 3073, "S0+S1+S2, split {split}");
        }
    }
}
