//! # strom-engine
//!
//! The library behind the `strom` live-streaming server: OBS publishes RTMP; players pull HLS, HTTP-FLV and RTMP.
//! Every live stream is an actor (ractor); media moves as shared `bytes::Bytes`.
//!
//! ## Map of the crate
//! - [`config`]: TOML + `STROM_*` configuration with key-naming errors.
//! - [`node`]: one node: listeners, the registry, graceful shutdown.
//! - [`stream`]: the stream actor, the registry ([`stream::Streams`], the one lookup API) and player fan-out.
//! - [`rtmp`]: RTMP publish/play over `rml_rtmp`'s sans-IO session; chunk limits; zero-copy media chunking.
//! - [`hls`]: MPEG-TS muxer, playlist model and the segmenter actor.
//! - [`http`]: axum routes for HLS, HTTP-FLV, API, metrics and probes.
//! - [`media`]: frames, FLV, AVC and AAC parsing (pure, fuzzed).
//! - [`metrics`]: Prometheus metrics; [`load`]: the node's load (`strom_load_ratio`, for the HPA and the cluster).
//! - [`transcode`]: the ABR ladder: encoder actors (FFmpeg) whose rungs are streams of their own; the HLS
//!   master playlist.
//! - [`cluster`]: membership, cluster-wide ownership, relays and HLS from any node (ractor_cluster).
//! - [`shutdown`], [`bufqueue`]: plumbing.
//!
//! See `ARCHITECTURE.md` at the repository root for actors, ownership and messages.

#![warn(missing_docs)]

pub mod bufqueue;
pub mod cluster;
pub mod config;
pub mod hls;
pub mod http;
pub mod load;
pub mod media;
pub mod metrics;
pub mod node;
pub mod rtmp;
pub mod shutdown;
pub mod stream;
pub mod transcode;

pub use config::Config;
pub use node::Node;
