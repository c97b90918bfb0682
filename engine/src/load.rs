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
                egress_bps: bps as u64,
            };
        }
    });
    (out, task)
}

/// One sample of a node's load, for the console's sparklines.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct Sample {
    /// When it was taken (Unix ms).
    pub t: u64,
    /// `strom_load_ratio`.
    pub ratio: f32,
    /// CPU cores used.
    pub cpu: f32,
    /// Bits per second sent.
    pub egress_bps: u64,
    /// Streams owned.
    pub streams: u32,
    /// Players connected.
    pub players: u32,
}

impl Sample {
    /// The sample of `load` at `t` (Unix ms).
    pub fn of(t: u64, load: &Load) -> Sample {
        Sample {
            t,
            ratio: load.ratio,
            cpu: load.cpu,
            egress_bps: load.egress_bps,
            streams: load.streams,
            players: load.players,
        }
    }
}

/// The last 15 minutes of every node's load as this node heard it (its own measurement, its peers' heartbeats),
/// sampled every [`History::INTERVAL`]: what the console draws its sparklines from, with no Prometheus. In
/// memory only; a node that starts has no history of the time before.
#[derive(Default)]
pub struct History {
    rings: Mutex<std::collections::BTreeMap<String, std::collections::VecDeque<Sample>>>,
}

impl History {
    /// Time between two samples.
    pub const INTERVAL: Duration = Duration::from_secs(5);
    /// Samples kept per node: 15 minutes.
    pub const LEN: usize = 180;

    /// Adds one sample per node (`(name, load)`) at `t` (Unix ms); forgets nodes last heard of more than 15
    /// minutes ago.
    pub fn push<'a>(&self, t: u64, loads: impl IntoIterator<Item = (&'a str, Load)>) {
        let mut rings = self.rings.lock().unwrap_or_else(|e| e.into_inner());
        for (name, load) in loads {
            let ring = rings.entry(name.to_string()).or_default();
            if ring.len() == Self::LEN {
                ring.pop_front();
            }
            ring.push_back(Sample::of(t, &load));
        }
        let horizon = Self::INTERVAL.as_millis() as u64 * Self::LEN as u64;
        rings.retain(|_, r| r.back().is_some_and(|s| t.saturating_sub(s.t) <= horizon));
    }

    /// Every node's samples, oldest first.
    pub fn snapshot(&self) -> std::collections::BTreeMap<String, Vec<Sample>> {
        let rings = self.rings.lock().unwrap_or_else(|e| e.into_inner());
        rings.iter().map(|(k, v)| (k.clone(), v.iter().copied().collect())).collect()
    }

    /// When the newest sample was taken (Unix ms; 0: none yet).
    pub fn newest(&self) -> u64 {
        let rings = self.rings.lock().unwrap_or_else(|e| e.into_inner());
        rings.values().filter_map(|r| r.back().map(|s| s.t)).max().unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn history_keeps_fifteen_minutes_per_node_and_forgets_gone_nodes() {
        let h = History::default();
        let step = History::INTERVAL.as_millis() as u64;
        for i in 0..200u64 {
            let mut loads = vec![("a", Load { streams: i as u32, ..Load::default() })];
            if i < 5 {
                loads.push(("b", Load::default()));
            }
            h.push(1_000_000 + i * step, loads);
        }
        let snap = h.snapshot();
        let a = &snap["a"];
        assert_eq!(a.len(), History::LEN);
        assert_eq!(a.first().map(|s| s.streams), Some(20), "the oldest 20 fell out");
        assert_eq!(a.last().map(|s| s.streams), Some(199));
        assert!(a.windows(2).all(|w| w[0].t < w[1].t), "oldest first");
        assert!(!snap.contains_key("b"), "a node unheard of for 15 minutes is forgotten");
        assert_eq!(h.newest(), 1_000_000 + 199 * step);
    }
}
