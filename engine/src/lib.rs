//! # strom-engine
//!
//! The library behind the `strom` live-streaming server: OBS publishes RTMP; players pull HLS, HTTP-FLV and RTMP.
//! Every live stream is an actor (ractor); media moves as shared `bytes::Bytes`.
//!
//! ## Layers
//! Each layer depends only on the ones before it (`nodes/scripts/layers.sh` checks this in CI):
//!
//! 1. [`formats`]: what bytes mean: frames, FLV, AVC, AAC, RTMP chunks, MPEG-TS, playlists, stream keys (pure,
//!    fuzzed). With the plumbing: [`config`], [`metrics`], [`clock`], [`shutdown`], [`bufqueue`], [`tls`]
//!    (certificates reloaded from their files, for RTMPS/HTTPS and node-to-node TLS), [`memory`] (the node's
//!    memory budget).
//! 2. [`stream`], the core: the stream actor, its segmenter, the registry ([`stream::Streams`], the one lookup
//!    API) and player fan-out. It calls out only through the traits in [`stream::ports`].
//! 3. [`cluster`]: membership, cluster-wide ownership, relays and HLS from any node (ractor_cluster); it
//!    implements [`stream::ports::Ownership`].
//!    Beside it, [`storage`]: recordings and VOD assets on a local directory or S3-compatible object storage
//!    (`object_store`).
//! 4. [`transcode`]: the ABR ladder: encoder actors (FFmpeg, behind the `transcode` cargo feature) whose rungs are
//!    streams of their own; the HLS master playlist; ladders placed across the cluster. It provides the
//!    [`stream::ports::EncoderHost`] the cluster calls. Its [`transcode::vod`] jobs turn uploaded files into
//!    ABR VOD assets in [`storage`].
//! 5. [`servers`]: RTMP and HTTP (HLS, HTTP-FLV, API, metrics, probes); [`load`]: the node's load
//!    (`strom_load_ratio`, for the HPA and the cluster).
//! 6. [`node`]: wires one node together: listeners, registry, cluster, transcoder, graceful shutdown.
//!
//! See `ARCHITECTURE.md` at the repository root for actors, ownership and messages.

#![warn(missing_docs)]

pub mod bufqueue;
pub mod clock;
pub mod cluster;
pub mod config;
pub mod formats;
pub mod load;
pub mod memory;
pub mod metrics;
pub mod node;
pub mod servers;
pub mod shutdown;
pub mod storage;
pub mod stream;
pub mod tls;
pub mod transcode;

pub use config::Config;
pub use node::Node;
