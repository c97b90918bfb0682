//! Servers: the listeners players and publishers talk to. They find streams through the core's
//! [`crate::stream::Streams`] and render them in their protocol.
//!
//! - [`rtmp`]: RTMP publish and play.
//! - [`http`]: HLS, HTTP-FLV, the JSON API, metrics and probes (axum).
//!
//! [`NodeContext`] is what every connection handler shares; [`crate::node`] builds it.

pub mod http;
pub mod rtmp;

use std::path::Path;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tracing::warn;

use crate::cluster::ClusterHandle;
use crate::config::Config;
use crate::metrics::Metrics;
use crate::storage::recorder::Recordings;
use crate::stream::{StreamKey, Streams};
use crate::transcode::Transcoder;

/// What every connection handler shares.
pub struct NodeContext {
    /// Configuration.
    pub config: Arc<Config>,
    /// Metrics.
    pub metrics: Arc<Metrics>,
    /// The lookup API.
    pub streams: Streams,
    /// The ABR ladder (encoders, master playlists).
    pub transcode: Transcoder,
    /// Listeners are up.
    pub ready: AtomicBool,
    /// Shutdown has begun (shared with the cluster's load report).
    pub draining: Arc<AtomicBool>,
    /// The cluster, when clustering is on.
    pub cluster: Option<ClusterHandle>,
    /// Connection slots (`limits.max_connections`).
    pub connections: Arc<Semaphore>,
    /// Recordings and VOD assets.
    pub recordings: Recordings,
}

impl NodeContext {
    /// Takes a connection slot; `None` (counted as a rejection) when `limits.max_connections` is reached.
    pub fn try_connection(&self) -> Option<OwnedSemaphorePermit> {
        match self.connections.clone().try_acquire_owned() {
            Ok(p) => Some(p),
            Err(_) => {
                self.metrics.connections_rejected.with_label_values(&["max_connections"]).inc();
                None
            }
        }
    }

    /// Whether `key` may be published under the `auth` settings.
    pub fn publish_allowed(&self, key: &StreamKey) -> bool {
        let auth = &self.config.auth;
        if auth.publish_keys.is_empty() && auth.publish_keys_file.is_none() {
            return true;
        }
        let full = key.to_string();
        let matches = |k: &str| k == key.name() || k == full;
        if auth.publish_keys.iter().any(|k| matches(k)) {
            return true;
        }
        match &auth.publish_keys_file {
            Some(path) => read_keys(path).iter().any(|k| matches(k)),
            None => false,
        }
    }
}

fn read_keys(path: &Path) -> Vec<String> {
    match std::fs::read_to_string(path) {
        Ok(text) => {
            text.lines().map(str::trim).filter(|l| !l.is_empty() && !l.starts_with('#')).map(String::from).collect()
        }
        Err(e) => {
            warn!(file = %path.display(), error = %e, "cannot read auth.publish_keys_file: refusing publishes");
            Vec::new()
        }
    }
}
