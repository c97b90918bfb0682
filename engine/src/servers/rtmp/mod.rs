//! RTMP: publish (OBS, ffmpeg) and play (ffplay, VLC, ffmpeg).
//!
//! - [`server`]: the listener and the per-connection tokio shell around `rml_rtmp`'s sans-IO handshake and
//!   `ServerSession` (connect, createStream, publish, play, acknowledgements).
//! - [`handshake`]: the server side of the handshake, sans-IO, under a byte budget.
//! - [`chunk_guard`]: a sans-IO follower of the inbound chunk stream that enforces chunk- and message-size limits
//!   before bytes reach the session.
//!
//! - [`hub`]: one writer task per stream for the RTMP players in step with it: one non-blocking `writev` per player
//!   per batch, no wake-up per player; a player that would block goes back to its own task.
//!
//! Media output is chunked by [`crate::formats::rtmp_chunk`], once per frame and chunk size, shared by players.

pub mod chunk_guard;
pub mod handshake;
pub mod hub;
pub mod rtmps;
pub mod server;
