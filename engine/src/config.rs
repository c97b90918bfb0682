//! Configuration: one TOML file, every key also settable through a `STROM_*` environment variable.
//!
//! Precedence, lowest first: embedded defaults, the TOML file, `STROM_*` variables, command-line flags (applied
//! by the binary). A key `hls.segment_duration_secs` is `STROM_HLS_SEGMENT_DURATION_SECS` in the environment; a
//! top-level key `node_name` is `STROM_NODE_NAME`. Values in the environment are read as TOML values where they
//! parse (numbers, booleans, arrays), otherwise as strings. Every error names the key (and the variable or file)
//! that caused it.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// An invalid configuration: the message names the offending key and where it came from.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ConfigError(pub String);

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line (for log shippers).
    Json,
}

/// The whole node configuration.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// This node's name in logs, metrics and (later) the cluster. Defaults to the hostname.
    pub node_name: String,
    /// Log format: "text" or "json".
    pub log_format: LogFormat,
    /// Seconds a shutdown (SIGTERM/SIGINT) may take before the process exits anyway.
    pub shutdown_timeout_secs: f64,
    /// On SIGTERM, seconds to keep serving publishers (readiness already false, so new players and publishers go
    /// to other nodes) until they leave, before streams are ended. 0: end them at once. In Kubernetes, keep it
    /// below `terminationGracePeriodSeconds` minus `shutdown_timeout_secs`.
    pub drain_secs: f64,
    /// RTMP listener.
    pub rtmp: RtmpConfig,
    /// HTTP listener (HLS, HTTP-FLV, API, metrics, probes).
    pub http: HttpConfig,
    /// HLS segmenting.
    pub hls: HlsConfig,
    /// Live stream behaviour: GOP cache, reconnect grace, slow players.
    pub stream: StreamConfig,
    /// Node-wide limits.
    pub limits: LimitsConfig,
    /// Publish authorisation.
    pub auth: AuthConfig,
    /// Clustering (on when a cookie is configured).
    pub cluster: ClusterConfig,
    /// The ABR ladder: encoders that turn each published stream into renditions (off by default).
    pub transcode: TranscodeConfig,
    /// Where recordings (VOD assets) are kept: a local directory or S3-compatible object storage.
    pub storage: StorageConfig,
    /// Recording live streams to storage (off by default).
    pub record: RecordConfig,
    /// VOD jobs: uploaded files transcoded into an ABR ladder (`POST /api/v1/vod`).
    pub vod: VodConfig,
    /// HTTP hooks: an outside service allows or denies publishes and plays and hears about ends.
    pub hooks: HooksConfig,
    /// The certificate of the RTMPS and HTTPS listeners.
    pub tls: TlsConfig,
    /// The RTMPS listener (off unless `rtmps.listen` is set).
    pub rtmps: TlsListenConfig,
    /// The HTTPS listener (HTTP/1.1 and HTTP/2; off unless `https.listen` is set).
    pub https: TlsListenConfig,
    /// The cluster cookie, from `STROM_CLUSTER_COOKIE` or `cluster.cookie_file`; never printed.
    #[serde(skip)]
    pub cluster_cookie: Option<String>,
}

/// RTMP listener settings.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RtmpConfig {
    /// Address to listen on.
    pub listen: SocketAddr,
    /// Outbound chunk size strom announces to peers.
    pub chunk_size: u32,
    /// Largest inbound chunk size a peer may set (SetChunkSize above it ends the connection).
    pub max_chunk_size: u32,
    /// Largest inbound RTMP message (a larger declared length ends the connection).
    pub max_message_size: u32,
    /// Largest inbound AMF command or data message (connect, publish, onMetaData, ...).
    pub max_command_size: u32,
    /// Seconds a client has to complete the handshake.
    pub handshake_timeout_secs: f64,
    /// Seconds without any byte from a client before its connection is closed.
    pub idle_timeout_secs: f64,
    /// Seconds one write of control or command answers (not media: players have
    /// `stream.slow_player_timeout_secs`) may stay blocked before the connection is closed: a peer that sends and
    /// never reads (pings, commands) cannot hold its connection and task forever.
    pub write_timeout_secs: f64,
}

/// HTTP listener settings.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HttpConfig {
    /// Address to listen on.
    pub listen: SocketAddr,
    /// Longest request path accepted (longer ones get 414).
    pub max_path_len: usize,
    /// Value of `Access-Control-Allow-Origin` on media and API responses.
    pub cors_origin: String,
    /// Seconds a new connection has to send its whole first request head (a head dribbled slower is closed).
    pub header_timeout_secs: f64,
    /// Seconds a connection may stay silent: a keep-alive connection waiting for its next request (whose head
    /// must then come within it), or a request body that stalls. Responses being written are not idle.
    pub idle_timeout_secs: f64,
    /// Serve `/metrics` on this address of its own instead (with `/healthz` and `/readyz`), e.g. `0.0.0.0:9090`:
    /// Prometheus scrapes a port players cannot reach, and the public listener answers `/metrics` with 404.
    /// Unset: `/metrics` is on `listen`.
    pub metrics_listen: Option<SocketAddr>,
}

/// HLS settings.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HlsConfig {
    /// Target segment duration in seconds; segments are cut at the first keyframe at or after it.
    pub segment_duration_secs: f64,
    /// Segments listed in the live playlist.
    pub window: usize,
    /// Segments kept in memory after they leave the playlist, for players still fetching them.
    pub retained_segments: usize,
    /// `fmp4` (the default): CMAF segments and LL-HLS parts (`EXT-X-PART`, blocking playlist reload, delta
    /// updates); players that do not know LL-HLS play the whole segments. `ts`: MPEG-TS segments, as old set-top
    /// boxes need.
    pub format: HlsFormat,
    /// LL-HLS part target in milliseconds (`EXT-X-PART-INF:PART-TARGET`): no part is longer. Players stay about
    /// three parts behind live (`PART-HOLD-BACK`). The default, 200 ms (as MediaMTX), put hls.js 1.3 s behind live
    /// where 333 ms put it 2.4 s behind (same run, `lowLatencyMode` on; 6.8 s without it).
    pub part_target_ms: u32,
    /// LL-HLS: a part asked for by its preload hint before it is complete is sent as it is produced, in chunks
    /// of a quarter of the part target (chunked transfer), so its first frames leave ~2/3 of a part earlier
    /// (true, the default). `false`: such a request is held and the part sent whole, at link speed, once
    /// complete, as Apple's origin does for players that measure bandwidth per part; parts are then one fragment
    /// each instead of a fragment per chunk (about 13 kb/s less `moof` at 30 fps and 200 ms parts: 0.5 % of a
    /// 2.5 Mb/s stream, 3 % of a 400 kb/s rung).
    pub stream_hinted_parts: bool,
    /// DVR: seconds of history a live playlist lists, so players can seek back while the stream is live (0, the
    /// default: off). The node keeps only `window + retained_segments` segments in memory; older ones are
    /// served from the stream's recording, so a DVR window records every stream (to `[storage]`, as a VOD asset
    /// under `record.max_age`/`max_bytes` retention).
    pub dvr_window_secs: f64,
    /// Per application: `[hls.apps.<app>] format = "ts"` (what is left out comes from `[hls]`).
    pub apps: std::collections::BTreeMap<String, AppHls>,
}

/// How HLS is packaged (see [`HlsConfig::format`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum HlsFormat {
    /// CMAF (fMP4) segments with LL-HLS parts.
    Fmp4,
    /// MPEG-TS segments, no parts.
    Ts,
}

/// One application's HLS settings (see [`HlsConfig::apps`]).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AppHls {
    /// The format of this application's streams.
    pub format: Option<HlsFormat>,
}

impl HlsConfig {
    /// The HLS format of streams of `app`.
    pub fn format_for(&self, app: &str) -> HlsFormat {
        self.apps.get(app).and_then(|a| a.format).unwrap_or(self.format)
    }
}

/// Live stream behaviour.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StreamConfig {
    /// Start new players from the last keyframe (instant picture) instead of waiting for the next one.
    pub gop_cache: bool,
    /// The GOP cache holds at most this many seconds: a stream whose keyframes are further apart is not cached
    /// past it, and a new player starts at the live edge and waits for the next keyframe (as nginx-rtmp does),
    /// instead of getting a burst of a whole long GOP.
    pub gop_cache_max_secs: f64,
    /// A stream that sends video without a keyframe for this long is reported: logged, counted
    /// (`strom_keyframe_timeouts_total`) and flagged in the API (`keyframe_missing`); its players are waiting.
    pub keyframe_timeout_secs: f64,
    /// Seconds a stream survives its publisher leaving: a publisher back within it resumes the same stream
    /// (HLS continues with a discontinuity). After it the stream ends for good.
    pub reconnect_grace_secs: f64,
    /// While an RTMP publisher is away without having ended its stream (its connection dropped, or this node is
    /// stopping; not after `deleteStream`), its last picture is repeated, with silent audio, for up to this many
    /// seconds (within the reconnect grace), so players keep playing (a still picture) instead of stalling: a
    /// publisher's reconnect, or a rolling restart of the node it published to, is not a rebuffering spinner. 0
    /// turns it off.
    pub repeat_frame_secs: f64,
    /// Seconds an ended stream's HLS playlist (with `EXT-X-ENDLIST`) stays served before it is a 404.
    pub ended_linger_secs: f64,
    /// Frames a stream's fan-out ring holds; a player further behind skips to the next keyframe.
    pub player_queue_frames: usize,
    /// Seconds a player's socket may block a write before the player is disconnected.
    pub slow_player_timeout_secs: f64,
    /// RTMP and HTTP-FLV players: a write waits until the batch's video spans this many milliseconds of stream
    /// time. The default gives three frames per write at 30 fps: about a quarter less CPU per delivered GB than two
    /// (33) and half that of one (0), for up to 66 ms more live delay (p99 70 ms in `bench/README.md`); 0: one write
    /// per video frame, the lowest delay.
    pub player_write_hold_ms: u32,
    /// Kernel send buffer of player connections (RTMP and HTTP listeners), KiB; Linux doubles it for bookkeeping
    /// and caps it at `net.core.wmem_max`. Bounds how much a slow reader can have queued in the kernel (~1.5 s of
    /// a 2.5 Mb/s stream at the default) before its writes block and it starts skipping to keyframes; without it
    /// autotuning grows to `tcp_wmem`'s maximum (4 MiB: 12 s of that stream, per player). 0: kernel autotuning.
    pub player_send_buffer_kib: u32,
    /// Bytes of frames one stream may have queued on each internal hop (publisher → stream actor, stream actor →
    /// segmenter; see `strom_engine::stream::queue`). Over it, the publisher's socket is no longer read, or the
    /// segmenter skips to a later keyframe; memory stays bounded when a consumer stalls.
    pub queue_max_bytes: usize,
}

/// Storage for recordings (see `strom_engine::storage`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StorageConfig {
    /// The local directory, the default backend (created when missing). In Kubernetes: the StatefulSet's
    /// persistent volume.
    pub path: PathBuf,
    /// S3-compatible object storage instead of `path`: `s3://bucket/prefix`. Endpoint, region and credentials come
    /// from the environment (`AWS_ENDPOINT`, `AWS_REGION`, `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`;
    /// `AWS_ALLOW_HTTP=true` for a plain-HTTP endpoint), e.g. from a mounted Secret.
    pub url: Option<String>,
}

/// Recording: every rendition of a stream is written to storage as fMP4 (or MPEG-TS) segments with a VOD
/// playlist, and listed as a VOD asset (`/api/v1/vod`).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RecordConfig {
    /// Record every stream published to this node (per application: `[record.apps.<app>] enabled`). Recordings
    /// can also be started and stopped through the API (`POST`/`DELETE /api/v1/streams/{app}/{key}/record`).
    pub enabled: bool,
    /// Finished recordings older than this are deleted, oldest first: e.g. `"30d"`, `"12h"`, `"90m"`, `"3600s"`.
    /// Empty: kept until deleted.
    pub max_age: String,
    /// When the recordings on storage hold more than this many bytes, the oldest finished ones are deleted.
    /// 0: no limit.
    pub max_bytes: u64,
    /// Per application: `[record.apps.<app>] enabled = true` (what is left out comes from `[record]`).
    pub apps: std::collections::BTreeMap<String, AppRecord>,
}

/// One application's recording settings (see [`RecordConfig::apps`]).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AppRecord {
    /// Record this application's streams.
    pub enabled: Option<bool>,
}

impl RecordConfig {
    /// Whether streams of `app` are recorded from their publish on.
    pub fn enabled_for(&self, app: &str) -> bool {
        self.apps.get(app).and_then(|a| a.enabled).unwrap_or(self.enabled)
    }

    /// `max_age` as a duration (`None`: no limit).
    pub fn max_age(&self) -> Option<Duration> {
        parse_age(&self.max_age).ok().flatten()
    }
}

/// `"30d"`, `"12h"`, `"90m"`, `"3600s"` or `"3600"` as a duration; empty: `None`.
fn parse_age(v: &str) -> Result<Option<Duration>, String> {
    let v = v.trim();
    if v.is_empty() {
        return Ok(None);
    }
    let (num, unit) = match v.find(|c: char| !c.is_ascii_digit()) {
        Some(i) => v.split_at(i),
        None => (v, "s"),
    };
    let n: u64 = num.parse().map_err(|_| format!("`{v}` is not a duration like 30d, 12h, 90m or 3600s"))?;
    let mult = match unit.trim() {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => return Err(format!("`{v}` is not a duration like 30d, 12h, 90m or 3600s")),
    };
    Ok(Some(Duration::from_secs(n.saturating_mul(mult))))
}

/// VOD jobs: an uploaded file is split at keyframes into chunks, each chunk encoded into every rung, and the
/// outputs joined into an HLS VOD (see `strom_engine::transcode::vod`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct VodConfig {
    /// Largest upload in bytes; a larger body is refused with 413.
    pub max_upload_bytes: u64,
    /// Target chunk length in seconds: chunks start at the source's keyframes, the first keyframe at least this
    /// long after the chunk's start ends it.
    pub chunk_secs: f64,
    /// Target segment length of the output in seconds (a chunk is cut into equal segments near this length, with
    /// keyframes forced at the same instants in every rung).
    pub segment_secs: f64,
    /// Chunks encoded at once on this node; 0: one per available core.
    pub parallel_chunks: usize,
    /// Attempts per chunk before the job fails.
    pub chunk_attempts: u32,
    /// The circuit breaker: a node whose chunks fail this many times in a row gets none for `breaker_secs`.
    pub breaker_failures: u32,
    /// How long a node whose breaker opened gets no chunks, in seconds.
    pub breaker_secs: f64,
    /// The default ladder of an upload, by height (a rung above the source's height is skipped; a source lower
    /// than every rung gets one rung at its own height).
    pub rungs: Vec<RungConfig>,
    /// Named ladders an upload may ask for (`profile=<name>`), e.g. `[[vod.profiles.mobile]] height = 360 ...`.
    pub profiles: std::collections::BTreeMap<String, Vec<RungConfig>>,
}

impl Default for VodConfig {
    fn default() -> Self {
        VodConfig {
            max_upload_bytes: 8 << 30,
            chunk_secs: 10.0,
            segment_secs: 4.0,
            parallel_chunks: 0,
            chunk_attempts: 3,
            breaker_failures: 3,
            breaker_secs: 60.0,
            rungs: vec![
                RungConfig::new(1080, 5000, "high"),
                RungConfig::new(720, 2800, "high"),
                RungConfig::new(480, 1400, "main"),
                RungConfig::new(360, 800, "main"),
                RungConfig::new(240, 400, "baseline"),
                RungConfig::new(144, 200, "baseline"),
            ],
            profiles: Default::default(),
        }
    }
}

impl VodConfig {
    /// `parallel_chunks` with 0 resolved: the available cores.
    pub fn parallel_chunks(&self) -> usize {
        match self.parallel_chunks {
            0 => std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1),
            n => n,
        }
    }

    /// The rung config for `height`: from the default ladder or a profile when one has it, else a bitrate scaled
    /// from the nearest configured rung by pixels.
    pub fn rung_for_height(&self, height: u32) -> RungConfig {
        let all = self.rungs.iter().chain(self.profiles.values().flatten());
        if let Some(r) = all.clone().find(|r| r.height == height) {
            return r.clone();
        }
        let nearest = all.min_by_key(|r| r.height.abs_diff(height));
        let (h0, kbps0) = nearest.map_or((720, 2800), |r| (r.height, r.bitrate_kbps));
        let scale = (f64::from(height) / f64::from(h0)).powi(2);
        let kbps = ((f64::from(kbps0) * scale) as u32).clamp(100, 50_000);
        let profile = if height <= 240 {
            "baseline"
        } else if height <= 480 {
            "main"
        } else {
            "high"
        };
        RungConfig::new(height, kbps, profile)
    }

    fn validate(&self) -> Result<(), ConfigError> {
        let err = |k: &str, why: String| Err(ConfigError(format!("invalid config key `{k}`: {why}")));
        if !(1.0..=600.0).contains(&self.chunk_secs) {
            return err("vod.chunk_secs", "must be 1..600".into());
        }
        if !(1.0..=60.0).contains(&self.segment_secs) {
            return err("vod.segment_secs", "must be 1..60".into());
        }
        if self.parallel_chunks > 256 {
            return err("vod.parallel_chunks", "must be at most 256".into());
        }
        if !(1..=20).contains(&self.chunk_attempts) {
            return err("vod.chunk_attempts", "must be 1..20".into());
        }
        if self.breaker_failures == 0 {
            return err("vod.breaker_failures", "must be at least 1".into());
        }
        if !(self.breaker_secs >= 0.0 && self.breaker_secs <= 86_400.0) {
            return err("vod.breaker_secs", "must be 0..86400".into());
        }
        if self.max_upload_bytes == 0 {
            return err("vod.max_upload_bytes", "must be above 0".into());
        }
        if self.rungs.is_empty() {
            return err("vod.rungs", "needs at least one rung".into());
        }
        validate_rungs("vod.rungs", &self.rungs)?;
        for (name, rungs) in &self.profiles {
            let ok = !name.is_empty() && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
            if !ok || rungs.is_empty() {
                return err(&format!("vod.profiles.{name}"), "a name of letters, digits, - or _, and rungs".into());
            }
            validate_rungs(&format!("vod.profiles.{name}"), rungs)?;
        }
        Ok(())
    }
}

/// Node-wide limits.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LimitsConfig {
    /// Open connections (RTMP and HTTP together) beyond which new ones are refused.
    pub max_connections: usize,
    /// Open connections (RTMP and HTTP together) from one IP address beyond which its new ones are refused, so
    /// one client cannot take the node's slots from everyone else (or from the kubelet's probes).
    pub max_connections_per_ip: usize,
    /// Streams this node carries at most (published here, relayed from other nodes, ladder rungs); the next
    /// publish is refused with a clear error, the next relay is not made (its players get 404). 0: no limit.
    pub max_streams: usize,
    /// Resident memory (MiB) above which new streams are refused and readiness goes false (see
    /// `strom_engine::memory`). 0: 85 % of the container's memory limit (cgroup), off without one.
    pub memory_budget_mb: u64,
    /// CPU cores this node may use (its container's CPU limit): the CPU side of `strom_load_ratio`.
    pub capacity_cores: f64,
    /// Egress this node is sized for, in Mb/s: the network side of `strom_load_ratio`.
    pub capacity_egress_mbps: f64,
}

/// The certificate of the TLS listeners (`[tls]`): PEM files, re-read when they change (cert-manager rotating a
/// mounted Secret), so new connections get the new certificate without a restart.
#[derive(Debug, Clone, Serialize, Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
pub struct TlsConfig {
    /// The certificate chain, PEM (the server's certificate first).
    pub cert_file: Option<PathBuf>,
    /// Its private key, PEM (PKCS#8, PKCS#1 or SEC1).
    pub key_file: Option<PathBuf>,
}

/// A TLS listener (`[rtmps]`, `[https]`).
#[derive(Debug, Clone, Serialize, Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
pub struct TlsListenConfig {
    /// Address to listen on, e.g. `0.0.0.0:443`; unset: off.
    pub listen: Option<SocketAddr>,
}

/// HTTP hooks (`[hooks]`): each event is a `POST` of JSON (`event`, `app`, `stream`, `client`, `protocol`, `node`,
/// `query`, `time`, and per event more) to its URL. `on_publish` and `on_play` decide: a 2xx answer allows, any
/// other answer denies; a hook that cannot be reached (or answers 5xx) is retried, then
/// `publish_when_down`/`play_when_down` decide. The other events are notices.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HooksConfig {
    /// Asked before a publish is accepted (RTMP).
    pub on_publish: Option<String>,
    /// Told when a publisher leaves.
    pub on_unpublish: Option<String>,
    /// Asked before a play is accepted (RTMP, HTTP-FLV, HLS playlists; HLS segments ride on the cached answer).
    pub on_play: Option<String>,
    /// Told when an RTMP or HTTP-FLV player leaves (HLS players have no connection to leave).
    pub on_stop: Option<String>,
    /// Told when a recording is finished (its asset `done`, `partial` or `failed`).
    pub on_record_done: Option<String>,
    /// Time limit of one attempt, milliseconds.
    pub timeout_ms: u64,
    /// Attempts after the first when the hook cannot be reached or answers 5xx.
    pub retries: u32,
    /// How long an `on_play` answer is reused for the same client, stream and query (HLS polls), seconds.
    pub cache_secs: f64,
    /// A publish when `on_publish` cannot be reached: `deny` (the default: fail closed) or `allow`.
    pub publish_when_down: HookFallback,
    /// A play when `on_play` cannot be reached: `allow` (the default) or `deny`.
    pub play_when_down: HookFallback,
}

/// What an unreachable deciding hook means ([`HooksConfig::publish_when_down`], [`HooksConfig::play_when_down`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum HookFallback {
    /// Allow.
    Allow,
    /// Deny.
    Deny,
}

impl Default for HooksConfig {
    fn default() -> Self {
        HooksConfig {
            on_publish: None,
            on_unpublish: None,
            on_play: None,
            on_stop: None,
            on_record_done: None,
            timeout_ms: 2000,
            retries: 2,
            cache_secs: 10.0,
            publish_when_down: HookFallback::Deny,
            play_when_down: HookFallback::Allow,
        }
    }
}

/// Publish authorisation.
#[derive(Debug, Clone, Serialize, Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
pub struct AuthConfig {
    /// Stream names (the RTMP stream key, e.g. `KEY`, or `app/KEY`) allowed to publish. Empty and no file: anyone.
    pub publish_keys: Vec<String>,
    /// A file with one allowed stream name per line (`#` comments), re-read at each publish.
    pub publish_keys_file: Option<PathBuf>,
    /// Publish secrets, `"app/name" = "secret"`: a publish of a listed stream must show its secret (OBS's
    /// Stream Key `name?secret=SECRET`); once any secret is configured, unlisted streams are refused too. Env:
    /// `STROM_AUTH_PUBLISH_SECRETS='{"live/cam" = "..."}'`. Never printed.
    #[serde(skip_serializing)]
    pub publish_secrets: std::collections::BTreeMap<String, String>,
    /// A file with one `app/name secret` pair per line (`#` comments), re-read at each publish (rotation
    /// without a restart; a Kubernetes Secret mount).
    pub publish_secrets_file: Option<PathBuf>,
    /// The bearer token of the mutating API endpoints (`Authorization: Bearer TOKEN`; env
    /// `STROM_AUTH_ADMIN_TOKEN`). Unset: they answer only to loopback clients. Never printed.
    #[serde(skip_serializing)]
    pub admin_token: Option<String>,
    /// The HMAC key of signed play URLs for every application (`?token=`, see
    /// `strom_engine::formats::token`); unset: playing is open. Never printed.
    #[serde(skip_serializing)]
    pub play_key: Option<String>,
    /// A file holding the play key instead (a mounted Secret; re-read within a second of a change).
    pub play_key_file: Option<PathBuf>,
    /// Per application: `[auth.apps.<app>] play = "key"`, that application's play key (over `play_key`).
    pub apps: std::collections::BTreeMap<String, AppAuth>,
    /// A JWKS file (an identity provider's public keys): playing then needs a JWT signed by one of them, passed
    /// as `?token=` (see `strom_engine::formats::jwt`), or a signed URL where a play key is set too. Re-read
    /// within a second of a change.
    pub jwks_file: Option<PathBuf>,
    /// Who may read the API (`GET /api/...`: the stream list, cluster, assets, jobs): `public` (anyone) or
    /// `private` (the admin token, as for the mutating calls). Unset: `private` when `admin_token` is set, else
    /// `public`. `/api/v1/events` (the console's feed) always needs the admin token (with none set: a
    /// same-origin request from this host).
    pub read_api: Option<ReadApi>,
}

/// Who may read the API ([`AuthConfig::read_api`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum ReadApi {
    /// Anyone.
    #[default]
    Public,
    /// Holders of the admin token (loopback clients when none is set).
    Private,
}

/// One application's access settings (`[auth.apps.<app>]`).
#[derive(Debug, Clone, Serialize, Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
pub struct AppAuth {
    /// The HMAC key of this application's signed play URLs. Never printed.
    #[serde(skip_serializing)]
    pub play: Option<String>,
}

impl AuthConfig {
    /// The play key of `app` as configured (the file read now): `Ok(None)` when playing it is open.
    pub fn play_key_for(&self, app: &str) -> Result<Option<Vec<u8>>, String> {
        if let Some(k) = self.apps.get(app).and_then(|a| a.play.as_ref()) {
            return Ok(Some(k.as_bytes().to_vec()));
        }
        if let Some(path) = &self.play_key_file {
            let k = std::fs::read_to_string(path).map_err(|e| format!("auth.play_key_file {}: {e}", path.display()))?;
            return Ok(Some(k.trim().as_bytes().to_vec()));
        }
        Ok(self.play_key.as_ref().map(|k| k.as_bytes().to_vec()))
    }

    /// Reading the API needs the admin token ([`AuthConfig::read_api`]).
    pub fn read_api_private(&self) -> bool {
        match self.read_api {
            Some(r) => r == ReadApi::Private,
            None => self.admin_token.is_some(),
        }
    }

    /// Publishing needs a secret.
    pub fn secrets_on(&self) -> bool {
        !self.publish_secrets.is_empty() || self.publish_secrets_file.is_some()
    }
}

/// A rough strength of a shared secret in bits: its length times the bits of the character classes it uses
/// (lower case, upper case, digits, others), and no more than a string of its distinct characters could hold.
pub fn secret_bits(secret: &str) -> f64 {
    let mut alphabet = 0u32;
    for (present, size) in [
        (secret.bytes().any(|b| b.is_ascii_lowercase()), 26),
        (secret.bytes().any(|b| b.is_ascii_uppercase()), 26),
        (secret.bytes().any(|b| b.is_ascii_digit()), 10),
        (secret.bytes().any(|b| !b.is_ascii_alphanumeric()), 33),
    ] {
        if present {
            alphabet += size;
        }
    }
    let distinct = secret.bytes().collect::<std::collections::BTreeSet<u8>>().len() as f64;
    let per_char = f64::from(alphabet.max(1)).log2().min(distinct.max(1.0).log2() * 1.5);
    secret.len() as f64 * per_char.max(0.0)
}

/// The least [`secret_bits`] a cluster cookie must have.
pub const MIN_COOKIE_BITS: f64 = 128.0;

/// Clustering: the nodes find each other and act as one server (see `strom_engine::cluster`).
///
/// Clustering is on when a cookie is configured (`STROM_CLUSTER_COOKIE` or `cluster.cookie_file`); without one
/// the node is standalone and opens no cluster port.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ClusterConfig {
    /// Where other nodes connect.
    pub listen: SocketAddr,
    /// The host other nodes dial to reach this one (with `listen`'s port). Empty: the node name. In Kubernetes:
    /// `$(POD_NAME).<headless service>`.
    pub advertise: String,
    /// Peers to join, `host:port`.
    pub seeds: Vec<String>,
    /// A DNS name (`host:port`) resolving to every node (a StatefulSet's headless Service); re-resolved
    /// periodically so new nodes are found. Empty: off.
    pub dns: String,
    /// Seconds between resolutions of `dns`.
    pub dns_interval_secs: f64,
    /// A file holding the cluster cookie (shared secret), instead of `STROM_CLUSTER_COOKIE`.
    pub cookie_file: Option<PathBuf>,
    /// Seconds between heartbeats to each peer.
    pub heartbeat_interval_secs: f64,
    /// A peer silent for this long is declared down (its streams end on this node) and re-dialed.
    pub heartbeat_deadline_secs: f64,
    /// Bytes of relayed media in flight per (stream, node) before the owner waits for credit.
    pub relay_window_bytes: u32,
    /// Seconds a relay with no players is kept before it is dropped.
    pub relay_idle_secs: f64,
    /// Milliseconds a new publish waits for a racing claim on another node to become visible.
    pub claim_settle_ms: u64,
    /// Node-to-node TLS: this node's certificate chain (PEM), issued by the cluster CA. With `tls_key_file` and
    /// `tls_ca_file` set, every cluster connection, in and out, is mutual TLS and plaintext peers are refused.
    /// Re-read when the files change (cert-manager rotation).
    pub tls_cert_file: Option<PathBuf>,
    /// Node-to-node TLS: this node's private key (PEM).
    pub tls_key_file: Option<PathBuf>,
    /// Node-to-node TLS: the cluster CA (PEM); a peer must present a certificate it issued.
    pub tls_ca_file: Option<PathBuf>,
}

/// When the ABR ladder runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum TranscodeMode {
    /// No encoders: every stream is served as published (the default; see [`TranscodeConfig`]).
    #[default]
    Off,
    /// Every published stream gets its ladder from the start (up to `transcode.max_streams` streams).
    Always,
    /// A stream's encoders start at its first HLS request (its master or media playlist, a rung's, a segment; on
    /// any node of a cluster) and stop after `transcode.idle_secs` without one.
    OnDemand,
}

/// The ABR ladder (see `strom_engine::transcode`).
///
/// Off by default: a ladder costs roughly one CPU core per 720p30 source with the default rungs (decode, scale,
/// three x264 encodes), while a node is sized for fan-out (`limits.capacity_*`); a node that hosts many streams
/// would be overloaded by a ladder it did not ask for. `mode = "always"` turns it on; `max_streams` bounds how
/// many streams are transcoded at once (further streams are served as published).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TranscodeConfig {
    /// `off`, `always` or `on-demand`.
    pub mode: TranscodeMode,
    /// `on-demand`: seconds without an HLS request (source or rung) after which a stream's encoders stop.
    pub idle_secs: f64,
    /// Streams transcoded at once on this node; 0: one per two available cores (at least one).
    pub max_streams: usize,
    /// Codec threads of the decoder and of each rung's encoder; 0: the available cores.
    pub threads: usize,
    /// The rungs, by height. A rung at or above the source's height is skipped (never upscale).
    pub rungs: Vec<RungConfig>,
    /// Per application (the `app` of `rtmp://host/app/KEY`): its own `mode` and/or `rungs`, overriding the ones
    /// above for its streams (e.g. `[transcode.apps.live] mode = "always"` with `mode = "off"` for the rest).
    pub apps: std::collections::BTreeMap<String, AppTranscode>,
}

/// One application's ladder settings (see [`TranscodeConfig::apps`]); what is left out comes from `[transcode]`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AppTranscode {
    /// `off`, `always` or `on-demand` for this application's streams.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mode: Option<TranscodeMode>,
    /// This application's rungs.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rungs: Option<Vec<RungConfig>>,
}

/// One rung of the ladder: an H.264 rendition (libx264) at a height, with the source's frame rate and audio.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RungConfig {
    /// Picture height in pixels (even); the width follows the source's aspect ratio.
    pub height: u32,
    /// Target video bitrate, kbit/s.
    pub bitrate_kbps: u32,
    /// Peak video bitrate (VBV maxrate), kbit/s; default 1.1 × `bitrate_kbps`.
    #[serde(default)]
    pub maxrate_kbps: Option<u32>,
    /// VBV buffer, kbit; default 1.5 × `bitrate_kbps`.
    #[serde(default)]
    pub bufsize_kbits: Option<u32>,
    /// x264 preset (`ultrafast` … `veryslow`).
    #[serde(default = "default_preset")]
    pub preset: String,
    /// Highest H.264 profile: `baseline`, `main` or `high` (a ceiling: the `ultrafast` preset uses no tool beyond
    /// Constrained Baseline; the master playlist's CODECS come from the rung's real SPS).
    #[serde(default = "default_profile")]
    pub profile: String,
}

fn default_preset() -> String {
    "veryfast".into()
}

fn default_profile() -> String {
    "main".into()
}

impl RungConfig {
    fn new(height: u32, bitrate_kbps: u32, profile: &str) -> RungConfig {
        RungConfig {
            height,
            bitrate_kbps,
            maxrate_kbps: None,
            bufsize_kbits: None,
            preset: default_preset(),
            profile: profile.into(),
        }
    }

    /// The peak video bitrate in kbit/s.
    pub fn maxrate(&self) -> u32 {
        self.maxrate_kbps.unwrap_or(self.bitrate_kbps.saturating_mul(11) / 10)
    }

    /// The VBV buffer in kbit.
    pub fn bufsize(&self) -> u32 {
        self.bufsize_kbits.unwrap_or(self.bitrate_kbps.saturating_mul(3) / 2)
    }
}

/// x264's presets.
pub const X264_PRESETS: &[&str] =
    &["ultrafast", "superfast", "veryfast", "faster", "fast", "medium", "slow", "slower", "veryslow"];

impl Default for TranscodeConfig {
    fn default() -> Self {
        TranscodeConfig {
            mode: TranscodeMode::Off,
            idle_secs: 30.0,
            max_streams: 0,
            threads: 0,
            rungs: vec![
                RungConfig::new(720, 2800, "high"),
                RungConfig::new(480, 1400, "main"),
                RungConfig::new(360, 800, "main"),
                RungConfig::new(240, 400, "baseline"),
            ],
            apps: Default::default(),
        }
    }
}

impl TranscodeConfig {
    /// `max_streams` with 0 resolved: one per two available cores, at least one.
    pub fn max_streams(&self) -> usize {
        match self.max_streams {
            0 => (std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1) / 2).max(1),
            n => n,
        }
    }

    /// When streams of application `app` get a ladder.
    pub fn mode_for(&self, app: &str) -> TranscodeMode {
        self.apps.get(app).and_then(|a| a.mode).unwrap_or(self.mode)
    }

    /// The rungs of application `app`.
    pub fn rungs_for(&self, app: &str) -> &[RungConfig] {
        self.apps.get(app).and_then(|a| a.rungs.as_deref()).unwrap_or(&self.rungs)
    }

    /// Whether any application may get a ladder (the encoder supervisor runs).
    pub fn enabled(&self) -> bool {
        self.mode != TranscodeMode::Off || self.apps.values().any(|a| a.mode.is_some_and(|m| m != TranscodeMode::Off))
    }

    /// Whether any application transcodes in `mode`.
    pub fn any_mode(&self, mode: TranscodeMode) -> bool {
        self.mode == mode || self.apps.values().any(|a| a.mode == Some(mode))
    }

    /// `threads` with 0 resolved to the available cores.
    pub fn threads(&self) -> usize {
        match self.threads {
            0 => std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1),
            n => n,
        }
    }

    fn validate(&self) -> Result<(), ConfigError> {
        let err = |k: &str, why: String| Err(ConfigError(format!("invalid config key `{k}`: {why}")));
        if !cfg!(feature = "transcode") && self.enabled() {
            return err("transcode.mode", "this strom was built without the `transcode` feature (no FFmpeg)".into());
        }
        if !(self.idle_secs.is_finite() && (1.0..=86_400.0).contains(&self.idle_secs)) {
            return err("transcode.idle_secs", "must be 1..86400".into());
        }
        if self.threads > 64 {
            return err("transcode.threads", "must be at most 64".into());
        }
        validate_rungs("transcode.rungs", &self.rungs)?;
        for (app, a) in &self.apps {
            if crate::formats::StreamKey::new(app, "x").is_err() {
                return err(&format!("transcode.apps.{app}"), "not a valid application name".into());
            }
            if let Some(rungs) = &a.rungs {
                validate_rungs(&format!("transcode.apps.{app}.rungs"), rungs)?;
            }
        }
        Ok(())
    }
}

/// Checks a ladder's rungs; errors name the key under `prefix`.
fn validate_rungs(prefix: &str, rungs: &[RungConfig]) -> Result<(), ConfigError> {
    let err = |k: &str, why: String| Err(ConfigError(format!("invalid config key `{k}`: {why}")));
    if rungs.len() > 8 {
        return err(prefix, "at most 8 rungs".into());
    }
    let mut heights = Vec::new();
    for (i, r) in rungs.iter().enumerate() {
        let k = format!("{prefix}[{i}]");
        if !(64..=4320).contains(&r.height) || r.height % 2 != 0 {
            return err(&format!("{k}.height"), format!("{} must be even and 64..4320", r.height));
        }
        if heights.contains(&r.height) {
            return err(&format!("{k}.height"), format!("{} appears twice", r.height));
        }
        heights.push(r.height);
        if !(50..=100_000).contains(&r.bitrate_kbps) {
            return err(&format!("{k}.bitrate_kbps"), "must be 50..100000".into());
        }
        if r.maxrate() < r.bitrate_kbps || r.maxrate() > 200_000 {
            return err(&format!("{k}.maxrate_kbps"), "must be at least bitrate_kbps (and at most 200000)".into());
        }
        if !(50..=400_000).contains(&r.bufsize()) {
            return err(&format!("{k}.bufsize_kbits"), "must be 50..400000".into());
        }
        if !X264_PRESETS.contains(&r.preset.as_str()) {
            return err(&format!("{k}.preset"), format!("{:?} is not one of {}", r.preset, X264_PRESETS.join(", ")));
        }
        if !["baseline", "main", "high"].contains(&r.profile.as_str()) {
            return err(&format!("{k}.profile"), format!("{:?} is not baseline, main or high", r.profile));
        }
    }
    Ok(())
}

impl Default for ClusterConfig {
    fn default() -> Self {
        ClusterConfig {
            listen: SocketAddr::from(([0, 0, 0, 0], 4697)),
            advertise: String::new(),
            seeds: Vec::new(),
            dns: String::new(),
            dns_interval_secs: 10.0,
            cookie_file: None,
            heartbeat_interval_secs: 0.5,
            heartbeat_deadline_secs: 2.0,
            relay_window_bytes: 4 << 20,
            relay_idle_secs: 10.0,
            claim_settle_ms: 150,
            tls_cert_file: None,
            tls_key_file: None,
            tls_ca_file: None,
        }
    }
}

impl Default for Config {
    fn default() -> Self {
        Config {
            node_name: default_node_name(),
            log_format: LogFormat::Text,
            shutdown_timeout_secs: 10.0,
            drain_secs: 0.0,
            rtmp: RtmpConfig::default(),
            http: HttpConfig::default(),
            hls: HlsConfig::default(),
            stream: StreamConfig::default(),
            limits: LimitsConfig::default(),
            auth: AuthConfig::default(),
            transcode: TranscodeConfig::default(),
            cluster: ClusterConfig::default(),
            storage: StorageConfig::default(),
            record: RecordConfig::default(),
            vod: VodConfig::default(),
            hooks: HooksConfig::default(),
            tls: TlsConfig::default(),
            rtmps: TlsListenConfig::default(),
            https: TlsListenConfig::default(),
            cluster_cookie: None,
        }
    }
}

impl Default for RtmpConfig {
    fn default() -> Self {
        RtmpConfig {
            listen: SocketAddr::from(([0, 0, 0, 0], 1935)),
            chunk_size: 4096,
            max_chunk_size: 1 << 20,
            max_message_size: 8 << 20,
            max_command_size: 16 << 10,
            handshake_timeout_secs: 10.0,
            idle_timeout_secs: 30.0,
            write_timeout_secs: 10.0,
        }
    }
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig {
            listen: SocketAddr::from(([0, 0, 0, 0], 8080)),
            max_path_len: 1024,
            cors_origin: "*".into(),
            header_timeout_secs: 10.0,
            idle_timeout_secs: 60.0,
            metrics_listen: None,
        }
    }
}

impl Default for HlsConfig {
    fn default() -> Self {
        HlsConfig {
            segment_duration_secs: 2.0,
            window: 6,
            retained_segments: 4,
            format: HlsFormat::Fmp4,
            part_target_ms: 200,
            stream_hinted_parts: true,
            dvr_window_secs: 0.0,
            apps: Default::default(),
        }
    }
}

impl Default for StorageConfig {
    fn default() -> Self {
        StorageConfig { path: PathBuf::from("./data"), url: None }
    }
}

impl Default for StreamConfig {
    fn default() -> Self {
        StreamConfig {
            gop_cache: true,
            gop_cache_max_secs: 10.0,
            keyframe_timeout_secs: 10.0,
            reconnect_grace_secs: 30.0,
            repeat_frame_secs: 5.0,
            ended_linger_secs: 30.0,
            player_queue_frames: 1024,
            slow_player_timeout_secs: 10.0,
            player_write_hold_ms: 66,
            player_send_buffer_kib: 256,
            queue_max_bytes: 8 << 20,
        }
    }
}

impl Default for LimitsConfig {
    fn default() -> Self {
        LimitsConfig {
            max_connections: 20_000,
            max_connections_per_ip: 1000,
            max_streams: 1000,
            memory_budget_mb: 0,
            capacity_cores: std::thread::available_parallelism().map(|n| n.get() as f64).unwrap_or(1.0),
            capacity_egress_mbps: 1000.0,
        }
    }
}

/// The sections of [`Config`]; an environment variable `STROM_<SECTION>_<KEY>` maps into one of them.
const SECTIONS: &[&str] = &[
    "rtmp",
    "http",
    "hls",
    "stream",
    "limits",
    "auth",
    "cluster",
    "transcode",
    "storage",
    "record",
    "vod",
    "hooks",
    "tls",
    "rtmps",
    "https",
];

fn default_node_name() -> String {
    std::env::var("HOSTNAME")
        .ok()
        .filter(|h| !h.is_empty())
        .or_else(|| std::fs::read_to_string("/etc/hostname").ok().map(|s| s.trim().to_string()))
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "strom".into())
}

impl Config {
    /// Loads the configuration: defaults, then `file` (if any), then `STROM_*` variables from `env`.
    pub fn load(file: Option<&Path>, env: impl IntoIterator<Item = (String, String)>) -> Result<Config, ConfigError> {
        let mut table = match file {
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .map_err(|e| ConfigError(format!("config file {}: {e}", path.display())))?;
                text.parse::<toml::Table>()
                    .map_err(|e| ConfigError(format!("config file {}: {}", path.display(), one_line(&e.to_string()))))?
            }
            None => toml::Table::new(),
        };
        let source = file.map(|p| p.display().to_string()).unwrap_or_else(|| "defaults".into());
        let mut env_keys = Vec::new();
        let mut cookie = None;
        for (name, value) in env {
            let Some(rest) = name.strip_prefix("STROM_") else { continue };
            if rest == "CLUSTER_COOKIE" {
                cookie = Some(value.trim().to_string()).filter(|c| !c.is_empty());
                continue;
            }
            if is_foreign_variable(rest) {
                continue;
            }
            let rest = rest.to_ascii_lowercase();
            let (section, key) = match SECTIONS.iter().find(|s| rest.starts_with(&format!("{s}_"))) {
                Some(s) => (Some(*s), rest[s.len() + 1..].to_string()),
                None => (None, rest.clone()),
            };
            let parsed = parse_env_value(&value);
            let target = match section {
                Some(s) => {
                    let entry = table.entry(s.to_string()).or_insert_with(|| toml::Value::Table(Default::default()));
                    match entry {
                        toml::Value::Table(t) => t,
                        _ => return Err(ConfigError(format!("config key `{s}` must be a table ({source})"))),
                    }
                }
                None => &mut table,
            };
            target.insert(key.clone(), parsed);
            env_keys.push((section.map(|s| format!("{s}.{key}")).unwrap_or(key), name));
        }
        let mut config = Self::from_table(table, &source, &env_keys)?;
        config.cluster_cookie = match (&config.cluster.cookie_file, cookie) {
            (Some(path), _) => {
                let text = std::fs::read_to_string(path).map_err(|e| {
                    ConfigError(format!("invalid config key `cluster.cookie_file`: {}: {e}", path.display()))
                })?;
                Some(text.trim().to_string()).filter(|c| !c.is_empty())
            }
            (None, c) => c,
        };
        if let Some(c) = &config.cluster_cookie {
            let bits = secret_bits(c);
            if bits < MIN_COOKIE_BITS {
                return Err(ConfigError(format!(
                    "the cluster cookie (STROM_CLUSTER_COOKIE or cluster.cookie_file) is too weak: about {bits:.0} bits, \
                     at least {MIN_COOKIE_BITS:.0} needed (anyone who captures the cluster handshake could guess it); \
                     make one with `openssl rand -hex 32`"
                )));
            }
        }
        if config.cluster_cookie.is_none() && (!config.cluster.seeds.is_empty() || !config.cluster.dns.is_empty()) {
            return Err(ConfigError(
                "invalid config key `cluster.seeds`/`cluster.dns`: joining a cluster needs a cookie \
                 (STROM_CLUSTER_COOKIE or cluster.cookie_file)"
                    .into(),
            ));
        }
        Ok(config)
    }

    fn from_table(table: toml::Table, source: &str, env_keys: &[(String, String)]) -> Result<Config, ConfigError> {
        // Deserialize section by section so an error can name its key.
        let mut config = Config::default();
        for (key, value) in table {
            let origin = |k: &str| {
                env_keys
                    .iter()
                    .find(|(ek, _)| ek == k)
                    .map(|(_, var)| format!("environment variable {var}"))
                    .unwrap_or_else(|| source.to_string())
            };
            let bad = |k: &str, e: &dyn std::fmt::Display| {
                ConfigError(format!("invalid config key `{k}` ({}): {}", origin(k), one_line(&e.to_string())))
            };
            macro_rules! section {
                ($field:ident, $ty:ty) => {{
                    let t = match value {
                        toml::Value::Table(t) => t,
                        other => return Err(bad(&key, &format!("expected a table, found {}", other.type_str()))),
                    };
                    let mut base = toml::Table::try_from(&config.$field).map_err(|e| bad(&key, &e))?;
                    for (k, v) in t {
                        let full = format!("{key}.{k}");
                        if !base.contains_key(&k) && !optional_key(&full) {
                            return Err(bad(&full, &"unknown key"));
                        }
                        base.insert(k.clone(), v.clone());
                        <$ty>::deserialize(toml::Value::Table(base.clone())).map_err(|e| bad(&full, &e))?;
                    }
                    config.$field = <$ty>::deserialize(toml::Value::Table(base)).map_err(|e| bad(&key, &e))?;
                }};
            }
            match key.as_str() {
                "rtmp" => section!(rtmp, RtmpConfig),
                "http" => section!(http, HttpConfig),
                "hls" => section!(hls, HlsConfig),
                "stream" => section!(stream, StreamConfig),
                "limits" => section!(limits, LimitsConfig),
                "auth" => section!(auth, AuthConfig),
                "cluster" => section!(cluster, ClusterConfig),
                "transcode" => section!(transcode, TranscodeConfig),
                "storage" => section!(storage, StorageConfig),
                "record" => section!(record, RecordConfig),
                "vod" => section!(vod, VodConfig),
                "hooks" => section!(hooks, HooksConfig),
                "tls" => section!(tls, TlsConfig),
                "rtmps" => section!(rtmps, TlsListenConfig),
                "https" => section!(https, TlsListenConfig),
                "node_name" => config.node_name = String::deserialize(value).map_err(|e| bad(&key, &e))?,
                "log_format" => config.log_format = LogFormat::deserialize(value).map_err(|e| bad(&key, &e))?,
                "drain_secs" => config.drain_secs = f64::deserialize(value).map_err(|e| bad(&key, &e))?,
                "shutdown_timeout_secs" => {
                    config.shutdown_timeout_secs = f64::deserialize(value).map_err(|e| bad(&key, &e))?
                }
                _ => return Err(bad(&key, &"unknown key")),
            }
        }
        config.validate()?;
        Ok(config)
    }

    /// Checks value ranges; the error names the key.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let err = |k: &str, why: &str| Err(ConfigError(format!("invalid config key `{k}`: {why}")));
        let secs = |k: &str, v: f64, min: f64| -> Result<(), ConfigError> {
            if !v.is_finite() || v < min || v > 86_400.0 {
                return Err(ConfigError(format!("invalid config key `{k}`: {v} is out of range ({min}..86400 s)")));
            }
            Ok(())
        };
        if self.node_name.is_empty() || self.node_name.len() > 253 {
            return err("node_name", "must be 1..253 characters");
        }
        secs("shutdown_timeout_secs", self.shutdown_timeout_secs, 0.0)?;
        secs("drain_secs", self.drain_secs, 0.0)?;
        secs("hooks.cache_secs", self.hooks.cache_secs, 0.0)?;
        secs("stream.gop_cache_max_secs", self.stream.gop_cache_max_secs, 0.1)?;
        secs("stream.keyframe_timeout_secs", self.stream.keyframe_timeout_secs, 0.1)?;
        let tls_wanted = self.rtmps.listen.is_some() || self.https.listen.is_some();
        if tls_wanted && (self.tls.cert_file.is_none() || self.tls.key_file.is_none()) {
            return err("tls.cert_file", "rtmps.listen and https.listen need tls.cert_file and tls.key_file");
        }
        if !(1..=60_000).contains(&self.hooks.timeout_ms) {
            return err("hooks.timeout_ms", "must be 1..60000");
        }
        if self.hooks.retries > 10 {
            return err("hooks.retries", "must be at most 10");
        }
        let h = &self.hooks;
        for (k, url) in [
            ("hooks.on_publish", &h.on_publish),
            ("hooks.on_unpublish", &h.on_unpublish),
            ("hooks.on_play", &h.on_play),
            ("hooks.on_stop", &h.on_stop),
            ("hooks.on_record_done", &h.on_record_done),
        ] {
            if url.as_deref().is_some_and(|u| !(u.starts_with("http://") || u.starts_with("https://"))) {
                return err(k, "must be an http:// or https:// URL");
            }
        }
        secs("rtmp.handshake_timeout_secs", self.rtmp.handshake_timeout_secs, 0.1)?;
        secs("rtmp.idle_timeout_secs", self.rtmp.idle_timeout_secs, 0.1)?;
        secs("rtmp.write_timeout_secs", self.rtmp.write_timeout_secs, 0.1)?;
        secs("http.header_timeout_secs", self.http.header_timeout_secs, 0.1)?;
        secs("http.idle_timeout_secs", self.http.idle_timeout_secs, 0.1)?;
        secs("hls.segment_duration_secs", self.hls.segment_duration_secs, 0.1)?;
        if !(100..=5000).contains(&self.hls.part_target_ms)
            || f64::from(self.hls.part_target_ms) > self.hls.segment_duration_secs * 1000.0
        {
            return err("hls.part_target_ms", "must be 100..5000 and at most the segment duration");
        }
        for app in self.hls.apps.keys() {
            if crate::formats::StreamKey::new(app, "x").is_err() {
                return err(&format!("hls.apps.{app}"), "not a valid application name");
            }
        }
        secs("stream.reconnect_grace_secs", self.stream.reconnect_grace_secs, 0.0)?;
        secs("stream.ended_linger_secs", self.stream.ended_linger_secs, 0.0)?;
        secs("stream.repeat_frame_secs", self.stream.repeat_frame_secs, 0.0)?;
        secs("stream.slow_player_timeout_secs", self.stream.slow_player_timeout_secs, 0.1)?;
        if !(128..=16_777_215).contains(&self.rtmp.chunk_size) {
            return err("rtmp.chunk_size", "must be 128..16777215");
        }
        if self.rtmp.max_chunk_size < 128 {
            return err("rtmp.max_chunk_size", "must be at least 128");
        }
        if !(1024..=1 << 20).contains(&self.rtmp.max_command_size) {
            return err(
                "rtmp.max_command_size",
                "must be 1024..1048576 (deeply nested AMF0 in large commands can exhaust the stack)",
            );
        }
        if !(4096..=16_777_215).contains(&self.rtmp.max_message_size) {
            return err("rtmp.max_message_size", "must be 4096..16777215");
        }
        if !(3..=1000).contains(&self.hls.window) {
            return err("hls.window", "must be 3..1000 segments");
        }
        if self.hls.retained_segments > 1000 {
            return err("hls.retained_segments", "must be at most 1000");
        }
        if !(0.0..=86_400.0).contains(&self.hls.dvr_window_secs) {
            return err("hls.dvr_window_secs", "must be 0..86400 seconds (0: no DVR)");
        }
        if self.stream.player_send_buffer_kib > 65536 {
            return err("stream.player_send_buffer_kib", "must be at most 65536 (64 MiB)");
        }
        if self.stream.player_write_hold_ms > 1000 {
            return err("stream.player_write_hold_ms", "must be at most 1000");
        }
        if !(16..=1 << 20).contains(&self.stream.player_queue_frames) {
            return err("stream.player_queue_frames", "must be 16..1048576");
        }
        if !(self.limits.capacity_cores > 0.0 && self.limits.capacity_cores <= 4096.0) {
            return err("limits.capacity_cores", "must be more than 0 (and at most 4096)");
        }
        if !(self.limits.capacity_egress_mbps > 0.0 && self.limits.capacity_egress_mbps <= 1e7) {
            return err("limits.capacity_egress_mbps", "must be more than 0");
        }
        if self.limits.max_connections_per_ip == 0 {
            return err("limits.max_connections_per_ip", "must be at least 1");
        }
        if self.limits.max_connections == 0 {
            return err("limits.max_connections", "must be at least 1");
        }
        secs("cluster.dns_interval_secs", self.cluster.dns_interval_secs, 0.1)?;
        secs("cluster.heartbeat_interval_secs", self.cluster.heartbeat_interval_secs, 0.05)?;
        secs("cluster.heartbeat_deadline_secs", self.cluster.heartbeat_deadline_secs, 0.1)?;
        secs("cluster.relay_idle_secs", self.cluster.relay_idle_secs, 0.0)?;
        if self.cluster.heartbeat_deadline_secs <= self.cluster.heartbeat_interval_secs {
            return err("cluster.heartbeat_deadline_secs", "must be longer than cluster.heartbeat_interval_secs");
        }
        if !(64 << 10..=1 << 30).contains(&self.cluster.relay_window_bytes) {
            return err("cluster.relay_window_bytes", "must be 65536..1073741824");
        }
        if self.cluster.claim_settle_ms > 10_000 {
            return err("cluster.claim_settle_ms", "must be at most 10000");
        }
        let c = &self.cluster;
        let tls = [c.tls_cert_file.is_some(), c.tls_key_file.is_some(), c.tls_ca_file.is_some()];
        if tls.contains(&true) && tls.contains(&false) {
            return err(
                "cluster.tls_cert_file",
                "node-to-node TLS needs all three of cluster.tls_cert_file, cluster.tls_key_file and cluster.tls_ca_file",
            );
        }
        for s in &self.cluster.seeds {
            if s.rsplit_once(':').is_none_or(|(h, p)| h.is_empty() || p.parse::<u16>().is_err()) {
                return err("cluster.seeds", &format!("`{s}` is not host:port"));
            }
        }
        if !self.cluster.dns.is_empty()
            && self.cluster.dns.rsplit_once(':').is_none_or(|(h, p)| h.is_empty() || p.parse::<u16>().is_err())
        {
            return err("cluster.dns", &format!("`{}` is not host:port", self.cluster.dns));
        }
        if self.http.max_path_len < 64 {
            return err("http.max_path_len", "must be at least 64");
        }
        if let Err(why) = parse_age(&self.record.max_age) {
            return err("record.max_age", &why);
        }
        for app in self.record.apps.keys() {
            if crate::formats::StreamKey::new(app, "x").is_err() {
                return err(&format!("record.apps.{app}"), "not a valid application name");
            }
        }
        if let Some(url) = &self.storage.url {
            let rest = url.strip_prefix("s3://").unwrap_or("");
            if rest.split('/').next().is_none_or(str::is_empty) {
                return err("storage.url", &format!("`{url}` is not s3://bucket[/prefix]"));
            }
        }
        if self.storage.path.as_os_str().is_empty() {
            return err("storage.path", "must not be empty");
        }
        self.vod.validate()?;
        self.transcode.validate()
    }

    /// `stream.reconnect_grace_secs` as a duration.
    pub fn reconnect_grace(&self) -> Duration {
        Duration::from_secs_f64(self.stream.reconnect_grace_secs)
    }

    /// The configuration as TOML (what `strom --print-config` shows).
    pub fn to_toml(&self) -> String {
        toml::to_string_pretty(self).unwrap_or_default()
    }
}

/// Keys that are absent from a serialized default (optional values) but valid.
fn optional_key(full: &str) -> bool {
    matches!(
        full,
        "auth.publish_keys_file"
            | "auth.publish_secrets"
            | "auth.publish_secrets_file"
            | "auth.admin_token"
            | "auth.play_key"
            | "auth.play_key_file"
            | "auth.read_api"
            | "auth.jwks_file"
            | "http.metrics_listen"
            | "tls.cert_file"
            | "tls.key_file"
            | "rtmps.listen"
            | "https.listen"
            | "hooks.on_publish"
            | "hooks.on_unpublish"
            | "hooks.on_play"
            | "hooks.on_stop"
            | "hooks.on_record_done"
            | "cluster.cookie_file"
            | "cluster.tls_cert_file"
            | "cluster.tls_key_file"
            | "cluster.tls_ca_file"
            | "storage.url"
    )
}

/// `STROM_*` variables that are not configuration keys: the log filter, the cluster cookie, and the service
/// links Kubernetes injects for a Service named `strom…` (`STROM_PORT`, `STROM_HTTP_SERVICE_HOST`,
/// `STROM_PORT_1935_TCP_ADDR`, …).
fn is_foreign_variable(rest: &str) -> bool {
    if matches!(
        rest,
        "LOG" | "CHROMIUM" | "PLAY_DEBUG" | "SKIP_BROWSER" | "CONSOLE_SHOTS" | "TEST_HOOKS" | "TEST_CLOCK_SKEW_MS"
    ) {
        return true;
    }
    let parts: Vec<&str> = rest.split('_').collect();
    let is_port_link = |i: usize| {
        // PORT, or PORT_<n>_<proto>[_PROTO|_PORT|_ADDR]
        parts.get(i) == Some(&"PORT")
            && match parts.len() - i {
                1 => true,
                3 | 4 => {
                    parts[i + 1].bytes().all(|b| b.is_ascii_digit())
                        && matches!(parts[i + 2], "TCP" | "UDP" | "SCTP")
                        && parts.get(i + 3).is_none_or(|p| matches!(*p, "PROTO" | "PORT" | "ADDR"))
                }
                _ => false,
            }
    };
    (0..parts.len()).any(|i| {
        (parts[i] == "SERVICE" && matches!(parts.get(i + 1), Some(&"HOST") | Some(&"PORT"))) || is_port_link(i)
    })
}

fn parse_env_value(value: &str) -> toml::Value {
    let probe = format!("v = {value}");
    match probe.parse::<toml::Table>() {
        Ok(mut t) => t.remove("v").unwrap_or_else(|| toml::Value::String(value.to_string())),
        Err(_) => toml::Value::String(value.to_string()),
    }
}

fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Seconds (as configured) to a [`Duration`].
pub fn secs(v: f64) -> Duration {
    Duration::from_secs_f64(v.max(0.0))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs.iter().map(|(a, b)| (a.to_string(), b.to_string())).collect()
    }

    #[test]
    fn defaults_are_valid() {
        let c = Config::load(None, env(&[])).unwrap();
        assert_eq!(c.rtmp.listen.port(), 1935);
        assert_eq!(c.http.listen.port(), 8080);
        assert_eq!(c.hls.window, 6);
    }

    #[test]
    fn env_overrides_file() {
        let dir = std::env::temp_dir().join(format!("strom-cfg-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let f = dir.join("a.toml");
        std::fs::write(&f, "node_name = \"a\"\n[hls]\nwindow = 5\nsegment_duration_secs = 4\n").unwrap();
        let c = Config::load(
            Some(&f),
            env(&[("STROM_HLS_WINDOW", "8"), ("STROM_RTMP_LISTEN", "127.0.0.1:1936"), ("PATH", "/bin")]),
        )
        .unwrap();
        assert_eq!(c.node_name, "a");
        assert_eq!(c.hls.window, 8);
        assert_eq!(c.hls.segment_duration_secs, 4.0);
        assert_eq!(c.rtmp.listen.port(), 1936);
    }

    #[test]
    fn clustering_needs_a_cookie_and_keeps_it_secret() {
        const STRONG: &str = "from-file-5e884898da28047151d0e56f8dc6292773603d0d6aabbdd62a11ef721d1542d8";
        let c = Config::load(None, env(&[])).unwrap();
        assert!(c.cluster_cookie.is_none(), "standalone by default");
        let e = Config::load(None, env(&[("STROM_CLUSTER_SEEDS", "[\"strom-0:4697\"]")])).unwrap_err().0;
        assert!(e.contains("cluster.seeds") && e.contains("STROM_CLUSTER_COOKIE"), "{e}");
        let c = Config::load(
            None,
            env(&[
                ("STROM_CLUSTER_COOKIE", STRONG),
                ("STROM_CLUSTER_SEEDS", "[\"strom-0:4697\", \"strom-1:4697\"]"),
                ("STROM_CLUSTER_DNS", "strom-headless:4697"),
            ]),
        )
        .unwrap();
        assert_eq!(c.cluster_cookie.as_deref(), Some(STRONG));
        assert_eq!(c.cluster.seeds.len(), 2);
        assert!(!c.to_toml().contains(STRONG), "the cookie is never printed");
        // A weak cookie: refused with one clear line.
        for weak in ["change-me", "s3cret", "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa", "0123456789abcdef"] {
            let e = Config::load(None, env(&[("STROM_CLUSTER_COOKIE", weak)])).unwrap_err().0;
            assert!(e.contains("too weak") && e.contains("openssl rand -hex 32") && !e.contains(weak), "{e}");
        }
        // `openssl rand -hex 32` and `-base64 24` are strong enough.
        assert!(secret_bits("9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08") > 200.0);
        assert!(secret_bits("q3Kx8Z1vN0bT+d9L/eR2mW7yA4hC5jPf") >= MIN_COOKIE_BITS);
        let e = Config::load(None, env(&[("STROM_CLUSTER_COOKIE", STRONG), ("STROM_CLUSTER_SEEDS", "[\"nohost\"]")]))
            .unwrap_err()
            .0;
        assert!(e.contains("cluster.seeds") && e.contains("nohost"), "{e}");
        let e = Config::load(None, env(&[("STROM_CLUSTER_HEARTBEAT_DEADLINE_SECS", "0.2")])).unwrap_err().0;
        assert!(e.contains("cluster.heartbeat_deadline_secs"), "{e}");
        let dir = std::env::temp_dir().join(format!("strom-cookie-{}", std::process::id()));
        std::fs::write(&dir, format!("{STRONG}\n")).unwrap();
        let c = Config::load(None, env(&[("STROM_CLUSTER_COOKIE_FILE", dir.to_str().unwrap())])).unwrap();
        assert_eq!(c.cluster_cookie.as_deref(), Some(STRONG));
        let _ = std::fs::remove_file(&dir);
        let e = Config::load(None, env(&[("STROM_CLUSTER_COOKIE_FILE", "/nonexistent/cookie")])).unwrap_err().0;
        assert!(e.contains("cluster.cookie_file"), "{e}");
    }

    #[test]
    fn errors_name_the_key() {
        let e = Config::load(None, env(&[("STROM_HLS_WINDOW", "\"many\"")])).unwrap_err().0;
        assert!(e.contains("hls.window") && e.contains("STROM_HLS_WINDOW"), "{e}");
        let e = Config::load(None, env(&[("STROM_HLS_WINDOWS", "3")])).unwrap_err().0;
        assert!(e.contains("hls.windows") && e.contains("unknown"), "{e}");
        let e = Config::load(None, env(&[("STROM_RTMP_LISTEN", "nowhere")])).unwrap_err().0;
        assert!(e.contains("rtmp.listen"), "{e}");
        let e = Config::load(None, env(&[("STROM_HLS_WINDOW", "1")])).unwrap_err().0;
        assert!(e.contains("hls.window"), "{e}");
        let e = Config::load(None, env(&[("STROM_BOGUS", "1")])).unwrap_err().0;
        assert!(e.contains("bogus"), "{e}");
    }

    #[test]
    fn kubernetes_service_links_and_reserved_variables_are_ignored() {
        let vars = env(&[
            ("STROM_LOG", "debug"),
            ("STROM_PORT", "tcp://10.0.0.1:1935"),
            ("STROM_SERVICE_HOST", "10.0.0.1"),
            ("STROM_SERVICE_PORT_RTMP", "1935"),
            ("STROM_HTTP_SERVICE_HOST", "10.0.0.2"),
            ("STROM_HTTP_PORT", "tcp://10.0.0.2:8080"),
            ("STROM_HTTP_PORT_8080_TCP_ADDR", "10.0.0.2"),
            ("STROM_PORT_1935_TCP", "tcp://10.0.0.1:1935"),
        ]);
        let c = Config::load(None, vars).unwrap();
        assert_eq!(c.http.listen.port(), 8080);
        // A real key that merely contains PORT is still a key.
        let e = Config::load(None, env(&[("STROM_HTTP_PORTS", "1")])).unwrap_err().0;
        assert!(e.contains("http.ports"), "{e}");
    }

    #[test]
    #[cfg(not(feature = "transcode"))]
    fn a_build_without_transcoding_refuses_a_ladder() {
        let e = Config::load(None, env(&[("STROM_TRANSCODE_MODE", "always")])).unwrap_err().0;
        assert!(e.contains("transcode.mode") && e.contains("`transcode` feature"), "{e}");
        let off = Config::load(None, env(&[("STROM_TRANSCODE_MODE", "off")])).unwrap();
        assert!(!off.transcode.enabled());
    }

    #[test]
    #[cfg(feature = "transcode")]
    fn transcode_ladder_from_env_and_file() {
        let c = Config::load(None, env(&[])).unwrap();
        assert_eq!(c.transcode.mode, TranscodeMode::Off, "off by default");
        let heights: Vec<u32> = c.transcode.rungs.iter().map(|r| r.height).collect();
        assert_eq!(heights, vec![720, 480, 360, 240]);
        let c = Config::load(
            None,
            env(&[
                ("STROM_TRANSCODE_MODE", "always"),
                ("STROM_TRANSCODE_RUNGS", "[{height = 360, bitrate_kbps = 500, preset = \"ultrafast\"}]"),
            ]),
        )
        .unwrap();
        assert_eq!(c.transcode.mode, TranscodeMode::Always);
        assert_eq!(c.transcode.rungs.len(), 1);
        assert_eq!((c.transcode.rungs[0].maxrate(), c.transcode.rungs[0].bufsize()), (550, 750));
        assert_eq!(c.transcode.rungs[0].profile, "main");
        let dir = std::env::temp_dir().join(format!("strom-tc-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let f = dir.join("t.toml");
        std::fs::write(
            &f,
            "[transcode]\nmode = \"always\"\n[[transcode.rungs]]\nheight = 480\nbitrate_kbps = 900\n\
             maxrate_kbps = 1000\nbufsize_kbits = 1800\nprofile = \"high\"\n",
        )
        .unwrap();
        let c = Config::load(Some(&f), env(&[])).unwrap();
        assert_eq!(c.transcode.rungs[0].maxrate(), 1000);
        assert!(c.to_toml().contains("[[transcode.rungs]]"));
        // Per application: its own mode and rungs; the rest falls back to [transcode].
        let c = Config::load(
            None,
            env(&[(
                "STROM_TRANSCODE_APPS",
                "{live = {mode = \"always\", rungs = [{height = 160, bitrate_kbps = 200}]}, vod = {mode = \"on-demand\"}}",
            )]),
        )
        .unwrap();
        assert!(c.transcode.enabled());
        assert_eq!(c.transcode.mode_for("live"), TranscodeMode::Always);
        assert_eq!(c.transcode.mode_for("vod"), TranscodeMode::OnDemand);
        assert_eq!(c.transcode.mode_for("other"), TranscodeMode::Off);
        assert_eq!(c.transcode.rungs_for("live").len(), 1);
        assert_eq!(c.transcode.rungs_for("vod").len(), 4, "vod keeps the default rungs");
        assert!(c.transcode.any_mode(TranscodeMode::OnDemand) && c.transcode.any_mode(TranscodeMode::Always));
        let e = Config::load(
            None,
            env(&[("STROM_TRANSCODE_APPS", "{live = {rungs = [{height = 161, bitrate_kbps = 200}]}}")]),
        )
        .unwrap_err()
        .0;
        assert!(e.contains("transcode.apps.live.rungs[0].height"), "{e}");
        let e = Config::load(None, env(&[("STROM_TRANSCODE_APPS", "{live = {modes = \"always\"}}")])).unwrap_err().0;
        assert!(e.contains("transcode.apps"), "{e}");
        // Errors name the key.
        for (var, value, key) in [
            ("STROM_TRANSCODE_MODE", "sometimes", "transcode.mode"),
            ("STROM_TRANSCODE_IDLE_SECS", "0", "transcode.idle_secs"),
            ("STROM_TRANSCODE_BOGUS", "1", "transcode.bogus"),
            ("STROM_TRANSCODE_RUNGS", "[{height = 361, bitrate_kbps = 500}]", "transcode.rungs[0].height"),
            ("STROM_TRANSCODE_RUNGS", "[{height = 360, bitrate_kbps = 500, preset = \"warp\"}]", "preset"),
            ("STROM_TRANSCODE_RUNGS", "[{height = 360, bitrate_kbps = 500, profile = \"high10\"}]", "profile"),
            ("STROM_TRANSCODE_RUNGS", "[{height = 360, bitrate_kbps = 500, maxrate_kbps = 100}]", "maxrate_kbps"),
            ("STROM_TRANSCODE_RUNGS", "[{height = 360, bitrate_kbps = 500, fps = 3}]", "transcode.rungs"),
        ] {
            let e = Config::load(None, env(&[(var, value)])).unwrap_err().0;
            assert!(e.contains(key), "{var}={value}: {e}");
        }
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn auth_keys_from_env_array() {
        let c = Config::load(None, env(&[("STROM_AUTH_PUBLISH_KEYS", "[\"a\", \"b\"]")])).unwrap();
        assert_eq!(c.auth.publish_keys, vec!["a", "b"]);
        let c = Config::load(None, env(&[("STROM_AUTH_PUBLISH_KEYS_FILE", "/tmp/keys")])).unwrap();
        assert_eq!(c.auth.publish_keys_file.as_deref(), Some(Path::new("/tmp/keys")));
    }
}
