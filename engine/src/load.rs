//! This node's load, measured every second: what the HorizontalPodAutoscaler scales on and what the cluster
//! shares with its heartbeats.
//!
//! `strom_load_ratio` is the busiest of the node's resources against its configured capacity:
//! `max(CPU cores used / limits.capacity_cores, egress bits per second / limits.capacity_egress_mbps)`.
//! 1.0 means "at capacity"; an HPA targeting 0.7 adds pods before viewers notice. VOD work joins the maximum as
//! chunks (encoding, waiting, or not yet started by this node's jobs) per chunk slot, so a backlog scales out.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use prometheus::{Gauge, IntGauge};

use crate::cluster::wire::Load;
use crate::config::Config;
use crate::metrics::{protocol, Metrics, ProcessStats};

/// Load gauges (registered in the node's registry).
#[derive(Clone)]
pub struct LoadMetrics {
    /// `strom_load_ratio`.
    pub ratio: Gauge,
    /// `strom_cpu_cores_used`.
    pub cpu: Gauge,
    /// `strom_egress_bits_per_second`.
    pub egress_bps: IntGauge,
}

/// The latest measurement, shared with the cluster.
#[derive(Clone, Default)]
pub struct LoadShared(Arc<Mutex<Load>>);

impl LoadShared {
    /// The latest load.
    pub fn get(&self) -> Load {
        *self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The VOD side of the load: chunks encoding, waiting for a slot or not yet started; the node's chunk slots.
pub type VodLoad = Box<dyn Fn() -> (u32, u32) + Send>;

/// Starts the once-a-second measurement; stops when the returned handle is aborted.
pub fn start(
    config: &Config,
    metrics: Arc<Metrics>,
    draining: Arc<AtomicBool>,
    vod: VodLoad,
) -> (LoadShared, tokio::task::JoinHandle<()>) {
    let lm = LoadMetrics {
        ratio: metrics.register(
            Gauge::new("strom_load_ratio", "Busiest resource against capacity (CPU, egress); 1.0 = at capacity.")
                .expect("valid metric"),
        ),
        cpu: metrics.register(
            Gauge::new("strom_cpu_cores_used", "CPU cores this process used over the last second.")
                .expect("valid metric"),
        ),
        egress_bps: metrics.register(
            IntGauge::new("strom_egress_bits_per_second", "Bits per second sent to players and other nodes.")
                .expect("valid metric"),
        ),
    };
    let shared = LoadShared::default();
    let out = shared.clone();
    let cores = config.limits.capacity_cores;
    let egress_cap = config.limits.capacity_egress_mbps * 1e6;
    let task = tokio::spawn(async move {
        let egress = || -> u64 {
            [protocol::RTMP, protocol::FLV, protocol::HLS, protocol::RELAY]
                .iter()
                .map(|p| metrics.egress_bytes.with_label_values(&[p]).get())
                .sum()
        };
        let mut last = (Instant::now(), ProcessStats::read().map(|p| p.cpu_seconds).unwrap_or(0.0), egress());
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tick.tick().await; // the first tick is immediate: measure over a whole second
        loop {
            tick.tick().await;
            let now = (Instant::now(), ProcessStats::read().map(|p| p.cpu_seconds).unwrap_or(last.1), egress());
            let secs = now.0.duration_since(last.0).as_secs_f64().max(0.001);
            let cpu = ((now.1 - last.1) / secs).max(0.0);
            let bps = (now.2.saturating_sub(last.2) as f64 * 8.0 / secs).max(0.0);
            last = now;
            // VOD work counts as its chunks per slot: a backlog (more chunks than slots) reads above 1.0, so the
            // HPA adds pods for it, which then take chunks.
            let (vod_chunks, vod_slots) = vod();
            let backlog = if vod_slots > 0 { f64::from(vod_chunks) / f64::from(vod_slots) } else { 0.0 };
            let ratio = (cpu / cores).max(bps / egress_cap).max(backlog);
            lm.cpu.set((cpu * 1000.0).round() / 1000.0);
            lm.egress_bps.set(bps as i64);
            lm.ratio.set((ratio * 1000.0).round() / 1000.0);
            let viewers = |p: &str| metrics.viewers.with_label_values(&[p]).get().max(0) as u32;
            *shared.0.lock().unwrap_or_else(|e| e.into_inner()) = Load {
                cpu: cpu as f32,
                streams: metrics.publishers.get().max(0) as u32,
                players: viewers(protocol::RTMP) + viewers(protocol::FLV) + viewers(protocol::HLS),
                relays_out: viewers(protocol::RELAY),
                draining: draining.load(Ordering::Relaxed),
                ratio: ratio as f32,
                // Filled in by the transcoder's view (see `Node::start`).
                encoders: 0,
                encoder_slots: 0,
                vod_chunks,
                vod_slots,
            };
        }
    });
    (out, task)
}
