//! RTMP: publish (OBS, ffmpeg) and play (ffplay, VLC, ffmpeg).
//!
//! - [`server`]: the listener and the per-connection tokio shell around `rml_rtmp`'s sans-IO handshake and
//!   `ServerSession` (connect, createStream, publish, play, acknowledgements).
//! - [`chunk_guard`]: a sans-IO follower of the inbound chunk stream that enforces chunk- and message-size limits
//!   before bytes reach the session.
//! - [`chunk_writer`]: media output to players without a copy per player: each frame is chunked once, and a
//!   player adds only its own 12-byte message header.

pub mod chunk_guard;
pub mod chunk_writer;
pub mod server;
