//! strom-load: the benchmark load tool (see bench/README.md).
//!
//! `strom-load run` publishes a stream from an FLV file (real time, looped), holds many RTMP / HTTP-FLV / HLS
//! players at once on one tokio runtime, samples the server's CPU and RSS from /proc, and prints one JSON line.
//! `strom-load report` turns those JSON lines into the markdown tables of bench/README.md.

mod http;
mod media;
mod park;
mod procstat;
mod report;
mod rtmp;
mod source;
mod stats;

use std::path::PathBuf;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use serde_json::{json, Value};

use crate::stats::{now_ns, quantile, Hist, PlayerStats, FAILED};

#[derive(Parser)]
#[command(about = "Load tool for strom and peers (RTMP, HTTP-FLV and HLS players)")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Publish, play, measure; print one JSON line.
    Run(Box<RunArgs>),
    /// LL-HLS: park K blocking playlist reloads, measure RSS per parked request and how fast all are answered.
    Park(Box<park::ParkArgs>),
    /// Drain N plain TCP connections the way `run`'s raw readers drain their players (same runtime, reads of at
    /// most 64 KiB as soon as readable): the reader of the fan-out floor, so the floor faces the readers the
    /// servers face.
    Drain {
        /// Address to connect to.
        #[arg(long)]
        connect: String,
        /// Connections.
        #[arg(long)]
        sockets: usize,
        /// Seconds to drain before exiting.
        #[arg(long)]
        secs: f64,
        /// Tokio worker threads (as `run`'s default).
        #[arg(long, default_value_t = 2)]
        threads: usize,
    },
    /// Markdown tables (and target ratios) from JSON lines.
    Report {
        /// Files of JSON lines written by `run`.
        files: Vec<PathBuf>,
    },
    /// The fan-out rounds of `bench/run --rounds K`: each round's strom runs against the floor and nginx-rtmp of
    /// the same round, and the median ratios against issue 11's targets.
    Rounds {
        /// One directory per round, each holding `results.jsonl` and `floor.jsonl`.
        dirs: Vec<PathBuf>,
    },
}

#[derive(Args, Clone)]
struct RunArgs {
    /// Name of the server under test (strom, nginx-rtmp, ...).
    #[arg(long)]
    server: String,
    /// Scenario name written to the result (fanout, latency, ...).
    #[arg(long, default_value = "fanout")]
    scenario: String,
    /// FLV file to publish (pre-encoded tags, replayed in real time and looped).
    #[arg(long)]
    publish: PathBuf,
    /// RTMP URL to publish to.
    #[arg(long)]
    publish_url: String,
    /// RTMP play URL.
    #[arg(long)]
    rtmp_url: Option<String>,
    /// HTTP-FLV URL.
    #[arg(long)]
    flv_url: Option<String>,
    /// HLS playlist URL.
    #[arg(long)]
    hls_url: Option<String>,
    /// RTMP players; a comma list (50,200,500) is a ladder: players are added step by step on the same server and
    /// stream, and each step is measured (one JSON line per step).
    #[arg(long, default_value = "0")]
    rtmp_players: String,
    /// HTTP-FLV players (count or ladder, as --rtmp-players).
    #[arg(long, default_value = "0")]
    flv_players: String,
    /// HLS players (count or ladder, as --rtmp-players): plain playlist polling, whole segments.
    #[arg(long, default_value = "0")]
    hls_players: String,
    /// LL-HLS players (count or ladder): blocking playlist reloads and parts, like hls.js in lowLatencyMode. They
    /// use --llhls-url, or --hls-url when that is not given.
    #[arg(long, default_value = "0")]
    llhls_players: String,
    /// LL-HLS playlist URL (default: --hls-url).
    #[arg(long)]
    llhls_url: Option<String>,
    /// Players started per second.
    #[arg(long, default_value_t = 200.0)]
    ramp_per_sec: f64,
    /// RTMP, HTTP-FLV and LL-HLS probe players per protocol: K players spread evenly over the first step's join
    /// order (every N/K-th) parse every frame (media rate, join, live delay); the others read like real players and
    /// count bytes only (as soon as readable, reads of at most 64 KiB, no parsing: the tool's CPU stays out of the
    /// server's way). Spread, not the first K: a server that writes its players in a fixed order (by join time)
    /// would give the probes the same place in every burst, first or last, and their delay would be its best or
    /// its worst, not its typical. Default: every player is a probe.
    #[arg(long)]
    probe_players: Option<usize>,
    /// Seconds of publishing before the first player (the server's RSS baseline is taken after it: strom keeps
    /// its HLS window in memory, which takes (window + retained) × segment duration to fill).
    #[arg(long, default_value_t = 3.0)]
    preroll_secs: f64,
    /// Seconds after the last player started before measuring.
    #[arg(long, default_value_t = 3.0)]
    settle_secs: f64,
    /// Measurement window, seconds.
    #[arg(long, default_value_t = 20.0)]
    duration_secs: f64,
    /// HLS playlist poll interval, ms.
    #[arg(long, default_value_t = 200)]
    hls_poll_ms: u64,
    /// Server process id (its children are included); repeatable.
    #[arg(long = "server-pid")]
    server_pids: Vec<u32>,
    /// Tokio worker threads of the tool.
    #[arg(long, default_value_t = 2)]
    threads: usize,
    /// Append the JSON line to this file too.
    #[arg(long)]
    json_out: Option<PathBuf>,
}

#[derive(Clone, Copy, PartialEq)]
enum Proto {
    Rtmp,
    Flv,
    Hls,
    LlHls,
}

impl Proto {
    fn name(self) -> &'static str {
        match self {
            Proto::Rtmp => "rtmp",
            Proto::Flv => "flv",
            Proto::Hls => "hls",
            Proto::LlHls => "llhls",
        }
    }
}

const PROTOS: [Proto; 4] = [Proto::Rtmp, Proto::Flv, Proto::Hls, Proto::LlHls];

struct Player {
    proto: Proto,
    /// Reads bytes only (see `--probe-players`): its rate is counted from wire bytes.
    raw: bool,
    stats: Arc<PlayerStats>,
    error: Arc<std::sync::Mutex<Option<String>>>,
}

fn main() {
    let cli = Cli::parse();
    match cli.cmd {
        Cmd::Report { files } => match report::report(&files) {
            Ok(text) => print!("{text}"),
            Err(e) => {
                eprintln!("strom-load report: {e}");
                std::process::exit(2);
            }
        },
        Cmd::Rounds { dirs } => match report::rounds(&dirs) {
            Ok(text) => print!("{text}"),
            Err(e) => {
                eprintln!("strom-load rounds: {e}");
                std::process::exit(2);
            }
        },
        Cmd::Drain { connect, sockets, secs, threads } => {
            let rt = runtime(threads.max(1));
            let result = rt.block_on(rtmp::drain_tcp(&connect, sockets, Duration::from_secs_f64(secs)));
            rt.shutdown_timeout(Duration::from_secs(2));
            match result {
                Ok(bytes) => eprintln!("strom-load drain: {bytes} bytes from {sockets} connections"),
                Err(e) => {
                    eprintln!("strom-load drain: {e}");
                    std::process::exit(1);
                }
            }
        }
        Cmd::Park(args) => {
            let rt = runtime(2);
            let result = rt.block_on(park::run(&args));
            rt.shutdown_timeout(Duration::from_secs(2));
            match result {
                Ok(line) => {
                    println!("{line}");
                    if let Some(path) = &args.json_out {
                        append(path, &line);
                    }
                }
                Err(e) => {
                    eprintln!("strom-load park: {e}");
                    std::process::exit(1);
                }
            }
        }
        Cmd::Run(args) => {
            let rt = runtime(args.threads.max(1));
            let result = rt.block_on(run(*args));
            rt.shutdown_timeout(Duration::from_secs(2));
            if let Err(e) = result {
                eprintln!("strom-load run: {e}");
                std::process::exit(1);
            }
        }
    }
}

/// The tool's runtime: `threads` worker threads.
fn runtime(threads: usize) -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread().worker_threads(threads).enable_all().build().expect("tokio runtime")
}

fn ladder(s: &str) -> Result<Vec<usize>, String> {
    s.split(',').map(|x| x.trim().parse::<usize>().map_err(|e| format!("bad player count {x:?}: {e}"))).collect()
}

fn emit(a: &RunArgs, line: &Value) {
    println!("{line}");
    if let Some(path) = &a.json_out {
        append(path, line);
    }
}

fn append(path: &std::path::Path, line: &Value) {
    use std::io::Write;
    match std::fs::OpenOptions::new().create(true).append(true).open(path) {
        Ok(mut f) => {
            let _ = writeln!(f, "{line}");
        }
        Err(e) => eprintln!("strom-load: {}: {e}", path.display()),
    }
}

async fn run(a: RunArgs) -> Result<(), String> {
    now_ns();
    let src = Arc::new(source::Source::load(&a.publish)?);
    let lists = [ladder(&a.rtmp_players)?, ladder(&a.flv_players)?, ladder(&a.hls_players)?, ladder(&a.llhls_players)?];
    let steps = lists.iter().map(Vec::len).max().unwrap_or(1);
    // Per step: (rtmp, flv, hls, llhls) totals; a shorter list holds its last value.
    let plan: Vec<[usize; 4]> =
        (0..steps).map(|k| [0, 1, 2, 3].map(|p| lists[p].get(k).or(lists[p].last()).copied().unwrap_or(0))).collect();
    let total = plan.last().map(|c| c.iter().sum::<usize>()).unwrap_or(0);
    let ramp_secs = total as f64 / a.ramp_per_sec.max(0.1);
    // Hard bound on the whole run.
    let bound = a.preroll_secs + ramp_secs + steps as f64 * (a.settle_secs + a.duration_secs + 5.0) + 30.0;
    tokio::time::timeout(Duration::from_secs_f64(bound), run_inner(&a, src, &plan))
        .await
        .map_err(|_| format!("run exceeded its {bound:.0} s bound"))?
}

async fn run_inner(a: &RunArgs, src: Arc<source::Source>, plan: &[[usize; 4]]) -> Result<(), String> {
    let pids = procstat::family(&a.server_pids);
    let (tx, rx) = tokio::sync::oneshot::channel();
    let publish_url: rtmp::RtmpUrl = a.publish_url.parse()?;
    let publisher = tokio::spawn(rtmp::publish(publish_url, src.clone(), tx));
    match tokio::time::timeout(Duration::from_secs(10), rx).await {
        Ok(Ok(())) => {}
        _ => {
            let why = if publisher.is_finished() {
                publisher.await.map_err(|e| e.to_string())?.err().unwrap_or_default()
            } else {
                publisher.abort();
                "no answer to publish".into()
            };
            return Err(format!("publish failed: {why}"));
        }
    }
    tokio::time::sleep(Duration::from_secs_f64(a.preroll_secs)).await;
    let base = procstat::sample(&pids);

    let delay: Vec<Arc<Hist>> = (0..PROTOS.len()).map(|_| Arc::new(Hist::default())).collect();
    let rtmp_url: Option<rtmp::RtmpUrl> = a.rtmp_url.as_deref().map(str::parse).transpose()?;
    let flv_url: Option<http::HttpUrl> = a.flv_url.as_deref().map(str::parse).transpose()?;
    let hls_url: Option<http::HttpUrl> = a.hls_url.as_deref().map(str::parse).transpose()?;
    let llhls_url: Option<http::HttpUrl> = a.llhls_url.as_deref().map(str::parse).transpose()?.or(hls_url.clone());
    let mut players: Vec<Player> = Vec::new();
    let mut tasks = Vec::new();
    let mut have = [0usize; 4];
    for (step, want) in plan.iter().enumerate() {
        // Interleave protocols so each sees the same load while joining.
        let mut order = Vec::new();
        let mut left = [0, 1, 2, 3].map(|p| want[p].saturating_sub(have[p]));
        while left.iter().sum::<usize>() > 0 {
            for (p, proto) in PROTOS.into_iter().enumerate() {
                if left[p] > 0 {
                    left[p] -= 1;
                    order.push(proto);
                }
            }
        }
        have = [0, 1, 2, 3].map(|p| have[p].max(want[p]));
        let interval = Duration::from_secs_f64(1.0 / a.ramp_per_sec.max(0.1));
        let mut tick = tokio::time::interval(interval);
        for proto in order {
            tick.tick().await;
            let stats = Arc::new(PlayerStats::default());
            let error = Arc::new(std::sync::Mutex::new(None));
            let (s, e, src) = (stats.clone(), error.clone(), src.clone());
            let probes = players.iter().filter(|p| p.proto == proto && !p.raw).count();
            // This player's place among its protocol's, and the stride that spreads K probes over this step's.
            let place = players.iter().filter(|p| p.proto == proto).count();
            let of = PROTOS.iter().position(|p| *p == proto).map_or(1, |i| want[i]);
            let raw = proto != Proto::Hls
                && a.probe_players.is_some_and(|k| probes >= k || place % (of / k.max(1)).max(1) != 0);
            let fut: std::pin::Pin<Box<dyn std::future::Future<Output = Result<(), String>> + Send>> = match proto {
                Proto::Rtmp => {
                    let url = rtmp_url.clone().ok_or("--rtmp-url needed")?;
                    match raw {
                        true => Box::pin(rtmp::drain(url, s.clone())),
                        false => Box::pin(rtmp::play(url, s.clone(), src, delay[0].clone())),
                    }
                }
                Proto::Flv => {
                    let url = flv_url.clone().ok_or("--flv-url needed")?;
                    match raw {
                        true => Box::pin(http::drain_flv(url, s.clone())),
                        false => Box::pin(http::play_flv(url, s.clone(), src, delay[1].clone())),
                    }
                }
                Proto::Hls => {
                    let url = hls_url.clone().ok_or("--hls-url needed")?;
                    let poll = Duration::from_millis(a.hls_poll_ms);
                    Box::pin(http::play_hls(url, poll, s.clone(), src, delay[2].clone()))
                }
                Proto::LlHls => {
                    let url = llhls_url.clone().ok_or("--llhls-url or --hls-url needed")?;
                    Box::pin(http::play_llhls(url, s.clone(), src, delay[3].clone(), !raw))
                }
            };
            tasks.push(tokio::spawn(async move {
                if let Err(msg) = fut.await {
                    s.state.store(FAILED, Relaxed);
                    *e.lock().unwrap_or_else(|p| p.into_inner()) = Some(msg);
                }
            }));
            players.push(Player { proto, raw, stats, error });
        }
        tokio::time::sleep(Duration::from_secs_f64(a.settle_secs)).await;
        let line = measure(a, &src, &pids, base, &players, &delay).await;
        emit(
            a,
            &line.map(|mut v| {
                v["step"] = json!(step);
                v
            })?,
        );
    }
    for t in &tasks {
        t.abort();
    }
    publisher.abort();
    Ok(())
}

/// One measurement window over the players started so far.
async fn measure(
    a: &RunArgs,
    src: &source::Source,
    pids: &[u32],
    base: procstat::Sample,
    players: &[Player],
    delay: &[Arc<Hist>],
) -> Result<Value, String> {
    let total = players.len();
    let bytes0: Vec<(u64, u64)> =
        players.iter().map(|p| (p.stats.wire.load(Relaxed), p.stats.media.load(Relaxed))).collect();
    let frames0: Vec<u64> = players.iter().map(|p| p.stats.frames.load(Relaxed)).collect();
    let s0 = procstat::sample(pids);
    let t0 = procstat::self_sample();
    let w0 = now_ns();
    for d in delay {
        d.reset();
        d.enabled.store(true, Relaxed);
    }
    // Peak RSS: sample a few times through the window.
    let mut rss_peak = 0;
    let steps = (a.duration_secs.ceil() as u64).max(1);
    for _ in 0..steps {
        tokio::time::sleep(Duration::from_secs_f64(a.duration_secs / steps as f64)).await;
        rss_peak = rss_peak.max(procstat::sample(pids).rss_kib);
    }
    for d in delay {
        d.enabled.store(false, Relaxed);
    }
    let secs = (now_ns() - w0) as f64 / 1e9;
    let s1 = procstat::sample(pids);
    let t1 = procstat::self_sample();
    let bytes1: Vec<(u64, u64)> =
        players.iter().map(|p| (p.stats.wire.load(Relaxed), p.stats.media.load(Relaxed))).collect();
    let frames1: Vec<u64> = players.iter().map(|p| p.stats.frames.load(Relaxed)).collect();

    let stream_kbps = src.payload_bps / 1000.0;
    let wire_total: u64 = bytes0.iter().zip(&bytes1).map(|(a, b)| b.0 - a.0).sum();
    let server_cpu = s1.cpu_s - s0.cpu_s;
    let tool_cpu = t1.cpu_s - t0.cpu_s;
    let gb = wire_total as f64 / 1e9;
    let mut protos = serde_json::Map::new();
    for (pi, proto) in PROTOS.into_iter().enumerate() {
        let idx: Vec<usize> = (0..players.len()).filter(|&i| players[i].proto == proto).collect();
        if idx.is_empty() {
            continue;
        }
        // Probes count media payload; raw readers count what they read (framing included, ~1% more).
        let got = |i: usize| match players[i].raw {
            true => bytes1[i].0 - bytes0[i].0,
            false => bytes1[i].1 - bytes0[i].1,
        };
        let mut kbps: Vec<f64> = idx.iter().map(|&i| got(i) as f64 * 8.0 / secs / 1000.0).collect();
        kbps.sort_by(f64::total_cmp);
        let probes: Vec<usize> = idx.iter().copied().filter(|&i| !players[i].raw).collect();
        let fps: f64 =
            probes.iter().map(|&i| (frames1[i] - frames0[i]) as f64 / secs).sum::<f64>() / probes.len().max(1) as f64;
        let mut joins: Vec<f64> = probes
            .iter()
            .filter_map(|&i| match players[i].stats.join_ns.load(Relaxed) {
                0 => None,
                ns => Some(ns as f64 / 1e6),
            })
            .collect();
        joins.sort_by(f64::total_cmp);
        let failed = idx.iter().filter(|&&i| players[i].stats.state.load(Relaxed) == FAILED).count();
        let first_error = idx.iter().find_map(|&i| players[i].error.lock().ok().and_then(|e| e.clone()));
        // HLS counts TS bytes (container overhead), so its "full rate" bar is the payload rate too.
        let full = kbps.iter().filter(|&&k| k >= 0.95 * stream_kbps).count();
        let mean = kbps.iter().sum::<f64>() / kbps.len() as f64;
        let h = &delay[pi];
        let ms = |q: f64| h.quantile_us(q).map(|us| us / 1000.0);
        protos.insert(
            proto.name().into(),
            json!({
                "players": idx.len(),
                "probes": probes.len(),
                "joined": joins.len(),
                "failed": failed,
                "first_error": first_error,
                "kbps_mean": mean,
                "kbps_min": kbps.first(),
                "kbps_p5": quantile(&kbps, 0.05),
                "rate_ratio_mean": mean / stream_kbps,
                "rate_ratio_min": kbps.first().map(|k| k / stream_kbps),
                "full_rate_fraction": full as f64 / idx.len() as f64,
                "frames_per_sec": fps,
                "join_ms_p50": quantile(&joins, 0.5),
                "join_ms_p99": quantile(&joins, 0.99),
                "join_ms_max": joins.last(),
                "delay_samples": h.count(),
                "delay_ms_p50": ms(0.5),
                "delay_ms_p99": ms(0.99),
                "delay_ms_max": ms(1.0),
                "status_503": idx.iter().map(|&i| players[i].stats.unavailable.load(Relaxed)).sum::<u64>(),
                "status_400": idx.iter().map(|&i| players[i].stats.bad_reloads.load(Relaxed)).sum::<u64>(),
            }),
        );
    }
    let rss_delta = rss_peak.max(s1.rss_kib).saturating_sub(base.rss_kib);
    Ok(json!({
        "server": a.server,
        "scenario": a.scenario,
        "unix_time": std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0),
        "players": total,
        "preroll_s": a.preroll_secs,
        "stream_kbps": stream_kbps,
        "window_s": secs,
        "ramp_per_sec": a.ramp_per_sec,
        "server_procs": s1.procs,
        "server_cpu_s": server_cpu,
        "server_cpu_util": server_cpu / secs,
        "delivered_bytes": wire_total,
        "server_cpu_s_per_gb": if gb > 0.0 { Some(server_cpu / gb) } else { None },
        "rss_base_kib": base.rss_kib,
        "rss_peak_kib": rss_peak.max(s1.rss_kib),
        "rss_per_player_kib": if total > 0 { Some(rss_delta as f64 / total as f64) } else { None },
        "tool_cpu_s": tool_cpu,
        "tool_cpu_util": tool_cpu / secs,
        "tool_cpu_s_per_gb": if gb > 0.0 { Some(tool_cpu / gb) } else { None },
        "protocols": protos,
    }))
}
