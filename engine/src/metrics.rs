//! Prometheus metrics of one node (text exposition at `GET /metrics`).
//!
//! Names follow Prometheus conventions (`_total` counters, base units). Process CPU and resident memory are read
//! from `/proc/self` at scrape time.

use prometheus::{
    Encoder, Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry, TextEncoder,
};

/// Protocol label values.
pub mod protocol {
    /// RTMP players.
    pub const RTMP: &str = "rtmp";
    /// HTTP-FLV players.
    pub const FLV: &str = "flv";
    /// HLS (playlists and segments).
    pub const HLS: &str = "hls";
    /// Relays to other cluster nodes.
    pub const RELAY: &str = "relay";
    /// The ABR ladder's encoders (one per transcoded stream).
    pub const ENCODER: &str = "encoder";
}

/// Every metric strom exports.
pub struct Metrics {
    registry: Registry,
    /// Live streams (with or without a publisher, inside their grace period).
    pub streams_active: IntGauge,
    /// Connected publishers.
    pub publishers: IntGauge,
    /// Times a publisher's connection stopped reading because its stream actor was behind (`stream::queue`).
    pub publisher_backpressure: IntCounter,
    /// Jumps in publishers' timestamps that closed an HLS segment (see `stream::segmenter::TimestampJumps`).
    pub hls_timestamp_jumps: IntCounter,
    /// The node's memory budget in bytes (0: off; see `crate::memory`).
    pub memory_budget: IntGauge,
    /// Connected players by protocol (HLS: estimated from playlist polling).
    pub viewers: IntGaugeVec,
    /// Bytes of media received from publishers.
    pub ingest_bytes: IntCounter,
    /// Bytes sent to players by protocol.
    pub egress_bytes: IntCounterVec,
    /// Frames not delivered, by reason (`slow_player`, `malformed`, ...).
    pub frames_dropped: IntCounterVec,
    /// HLS segments completed.
    pub hls_segments: IntCounter,
    /// LL-HLS parts completed.
    pub hls_parts: IntCounter,
    /// Blocking HLS requests (playlist reloads, preload-hinted parts) waiting right now.
    pub hls_parked: IntGauge,
    /// How long blocking HLS requests waited, in seconds.
    pub hls_block_wait: Histogram,
    /// Connections or requests refused, by reason.
    pub connections_rejected: IntCounterVec,
    /// Open connections by listener (`rtmp`, `http`).
    pub connections_open: IntGaugeVec,
    /// Players disconnected for being too slow.
    pub slow_player_disconnects: IntCounter,
    /// Streams ended by a failure inside their actors.
    pub stream_failures: IntCounter,
    /// Streams that sent video without a keyframe for longer than `stream.keyframe_timeout_secs` (once per spell).
    pub keyframe_timeouts: IntCounter,
    /// Pictures repeated while publishers were away (`stream.repeat_frame_secs`).
    pub repeated_frames: IntCounter,
}

impl Metrics {
    /// Creates and registers all metrics in a fresh registry.
    pub fn new() -> Metrics {
        let registry = Registry::new();
        fn reg<T: prometheus::core::Collector + Clone + 'static>(r: &Registry, c: T) -> T {
            // Registration only fails on duplicate names, which this constructor cannot produce.
            let _ = r.register(Box::new(c.clone()));
            c
        }
        let gauge = |n: &str, h: &str| reg(&registry, IntGauge::new(n, h).expect("valid metric"));
        let counter = |n: &str, h: &str| reg(&registry, IntCounter::new(n, h).expect("valid metric"));
        let gauge_vec =
            |n: &str, h: &str, l: &[&str]| reg(&registry, IntGaugeVec::new(Opts::new(n, h), l).expect("valid metric"));
        let counter_vec = |n: &str, h: &str, l: &[&str]| {
            reg(&registry, IntCounterVec::new(Opts::new(n, h), l).expect("valid metric"))
        };
        let m = Metrics {
            streams_active: gauge("strom_streams_active", "Live streams on this node."),
            publishers: gauge("strom_publishers", "Connected publishers."),
            publisher_backpressure: counter(
                "strom_publisher_backpressure_total",
                "Times a publisher's socket was left unread because its stream actor was behind (stream.queue_max_bytes).",
            ),
            hls_timestamp_jumps: counter(
                "strom_hls_timestamp_jumps_total",
                "Jumps in publishers' timestamps that closed an HLS segment and started a discontinuity.",
            ),
            memory_budget: gauge(
                "strom_memory_budget_bytes",
                "Resident memory above which new streams are refused and readiness is false (0: no budget).",
            ),
            viewers: gauge_vec("strom_viewers", "Connected players by protocol (HLS estimated).", &["protocol"]),
            ingest_bytes: counter("strom_ingest_bytes_total", "Media bytes received from publishers."),
            egress_bytes: counter_vec("strom_egress_bytes_total", "Bytes sent to players.", &["protocol"]),
            frames_dropped: counter_vec("strom_frames_dropped_total", "Frames not delivered, by reason.", &["reason"]),
            hls_segments: counter("strom_hls_segments_total", "HLS segments completed."),
            hls_parts: counter("strom_hls_parts_total", "LL-HLS parts completed."),
            hls_parked: gauge("strom_hls_parked_requests", "Blocking HLS requests waiting for a part or segment."),
            hls_block_wait: reg(
                &registry,
                Histogram::with_opts(
                    HistogramOpts::new(
                        "strom_hls_block_wait_seconds",
                        "How long blocking HLS requests (playlist reloads, preload-hinted parts) waited.",
                    )
                    .buckets(vec![0.001, 0.005, 0.02, 0.05, 0.1, 0.2, 0.35, 0.5, 1.0, 2.0, 4.0, 8.0]),
                )
                .expect("valid metric"),
            ),
            connections_rejected: counter_vec(
                "strom_connections_rejected_total",
                "Connections or requests refused, by reason.",
                &["reason"],
            ),
            connections_open: gauge_vec("strom_connections_open", "Open connections by listener.", &["listener"]),
            slow_player_disconnects: counter(
                "strom_slow_player_disconnects_total",
                "Players disconnected because they fell too far behind.",
            ),
            stream_failures: counter("strom_stream_failures_total", "Streams ended by a failure in their actors."),
            keyframe_timeouts: counter(
                "strom_keyframe_timeouts_total",
                "Streams that sent video without a keyframe for longer than stream.keyframe_timeout_secs.",
            ),
            repeated_frames: counter(
                "strom_repeated_frames_total",
                "Pictures repeated, with silent audio, while publishers were away (stream.repeat_frame_secs).",
            ),
            registry,
        };
        for p in [protocol::RTMP, protocol::FLV, protocol::HLS] {
            m.viewers.with_label_values(&[p]).set(0);
            m.egress_bytes.with_label_values(&[p]);
        }
        m
    }

    /// Registers another collector (e.g. the cluster's metrics) in this node's registry and returns it.
    pub fn register<T: prometheus::core::Collector + Clone + 'static>(&self, c: T) -> T {
        // Registration only fails on a duplicate name: the metric then still works, it is just not exported twice.
        let _ = self.registry.register(Box::new(c.clone()));
        c
    }

    /// Renders all metrics plus process CPU/memory in the Prometheus text format.
    pub fn render(&self) -> String {
        let mut buf = Vec::new();
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut buf);
        let mut text = String::from_utf8(buf).unwrap_or_default();
        if let Some(p) = ProcessStats::read() {
            text.push_str(&format!(
                "# HELP process_cpu_seconds_total Total user and system CPU time spent in seconds.\n\
                 # TYPE process_cpu_seconds_total counter\nprocess_cpu_seconds_total {}\n\
                 # HELP process_resident_memory_bytes Resident memory size in bytes.\n\
                 # TYPE process_resident_memory_bytes gauge\nprocess_resident_memory_bytes {}\n\
                 # HELP process_threads Number of OS threads.\n\
                 # TYPE process_threads gauge\nprocess_threads {}\n",
                p.cpu_seconds, p.rss_bytes, p.threads
            ));
        }
        if let Ok(fds) = std::fs::read_dir("/proc/self/fd") {
            text.push_str(&format!(
                "# HELP process_open_fds Number of open file descriptors.\n# TYPE process_open_fds gauge\nprocess_open_fds {}\n",
                fds.count()
            ));
        }
        // Tasks alive on the runtime (a leak shows as a slope under churn; bench/soak watches it).
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            text.push_str(&format!(
                "# HELP strom_tokio_tasks Tasks alive on the async runtime.\n# TYPE strom_tokio_tasks gauge\nstrom_tokio_tasks {}\n",
                rt.metrics().num_alive_tasks()
            ));
        }
        text
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

/// CPU time, resident memory and threads of this process, from `/proc/self`.
#[derive(Debug, Clone, Copy)]
pub struct ProcessStats {
    /// User + system CPU seconds.
    pub cpu_seconds: f64,
    /// Resident set size in bytes.
    pub rss_bytes: u64,
    /// OS threads.
    pub threads: u64,
}

impl ProcessStats {
    /// Reads the stats; `None` where `/proc` is not available.
    pub fn read() -> Option<ProcessStats> {
        Self::read_pid("self")
    }

    /// Reads the stats of another process (used by tests and benchmarks).
    pub fn read_pid(pid: &str) -> Option<ProcessStats> {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        // Fields after the command name (which may contain spaces) start after the last ')'.
        let rest = &stat[stat.rfind(')')? + 2..];
        let f: Vec<&str> = rest.split_whitespace().collect();
        // rest[0] is field 3 (state); utime = field 14, stime = 15, num_threads = 20, rss pages = 24.
        let utime: f64 = f.get(11)?.parse().ok()?;
        let stime: f64 = f.get(12)?.parse().ok()?;
        let threads: u64 = f.get(17)?.parse().ok()?;
        let rss_pages: u64 = f.get(21)?.parse().ok()?;
        let tick = 100.0; // USER_HZ is 100 on every Linux platform strom targets
        Some(ProcessStats { cpu_seconds: (utime + stime) / tick, rss_bytes: rss_pages * 4096, threads })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_required_names() {
        let m = Metrics::new();
        m.frames_dropped.with_label_values(&["slow_player"]).inc();
        m.connections_rejected.with_label_values(&["max_connections"]).inc();
        let text = m.render();
        for name in [
            "strom_streams_active",
            "strom_publishers",
            "strom_viewers{protocol=\"rtmp\"}",
            "strom_ingest_bytes_total",
            "strom_egress_bytes_total{protocol=\"flv\"}",
            "strom_frames_dropped_total{reason=\"slow_player\"}",
            "strom_hls_segments_total",
            "strom_connections_rejected_total{reason=\"max_connections\"}",
            "process_cpu_seconds_total",
            "process_resident_memory_bytes",
        ] {
            assert!(text.contains(name), "missing {name}");
        }
    }
}
