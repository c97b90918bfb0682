//! HTTP hooks (`[hooks]`, see [`HooksConfig`]): an outside service decides publishes and plays, and hears about
//! ends, as nginx-rtmp's `on_publish`/`on_play` and SRS's HTTP hooks do.
//!
//! Each event is a `POST` of one JSON object:
//! `{"event": "on_publish", "app": "live", "stream": "cam", "client": "203.0.113.7:51234", "protocol": "rtmp",
//! "node": "strom-0", "query": "secret=...", "time": "2026-12-06T01:02:03Z"}` (`on_record_done` adds `asset`,
//! `state`, `duration` and `playlist`). The stream is its name (the publish secret, if any, is in `query`).
//!
//! - **Deciding** (`on_publish`, `on_play`, [`Hooks::decide`]): a 2xx answer allows; any other answer (401, 403,
//!   404, ...) denies. A hook that cannot be reached, times out (`hooks.timeout_ms`) or answers 5xx is tried again
//!   (`hooks.retries`, 100 ms then 200 ms ... apart); then `hooks.publish_when_down` (default `deny`: fail
//!   closed) or `hooks.play_when_down` (default `allow`) decides. A play's answer is kept `hooks.cache_secs` for
//!   that client, stream, protocol and `token` (the rest of the query, such as LL-HLS's `_HLS_msn`, is left out), so
//!   an HLS player is asked about once, not per playlist poll.
//! - **Notices** (`on_unpublish`, `on_stop`, `on_record_done`, [`Hooks::notify`]): sent from their own task,
//!   with the same retries; nothing waits for them.
//!
//! Every attempt's outcome is counted in `strom_hook_requests_total{event, result}` (`allow`, `deny`, `error`,
//! `sent`).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use dashmap::DashMap;
use prometheus::{IntCounterVec, Opts};
use serde_json::{json, Value};
use tracing::{debug, warn};

use crate::config::{HookFallback, HooksConfig};
use crate::metrics::Metrics;

/// Cached play answers kept at most (expired ones are dropped first, then all).
const CACHE_MAX: usize = 10_000;

/// A hook event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HookEvent {
    /// A publish is asked for (decides).
    Publish,
    /// A publisher left.
    Unpublish,
    /// A play is asked for (decides).
    Play,
    /// A player left.
    Stop,
    /// A recording finished.
    RecordDone,
}

impl HookEvent {
    /// The event's name in the JSON and the metrics.
    pub fn name(self) -> &'static str {
        match self {
            HookEvent::Publish => "on_publish",
            HookEvent::Unpublish => "on_unpublish",
            HookEvent::Play => "on_play",
            HookEvent::Stop => "on_stop",
            HookEvent::RecordDone => "on_record_done",
        }
    }

    fn url(self, c: &HooksConfig) -> Option<&str> {
        match self {
            HookEvent::Publish => c.on_publish.as_deref(),
            HookEvent::Unpublish => c.on_unpublish.as_deref(),
            HookEvent::Play => c.on_play.as_deref(),
            HookEvent::Stop => c.on_stop.as_deref(),
            HookEvent::RecordDone => c.on_record_done.as_deref(),
        }
    }
}

/// What a hook is told about: the stream, the client and how it came.
#[derive(Debug, Clone, Default)]
pub struct HookCall {
    /// Application.
    pub app: String,
    /// Stream name (no query).
    pub stream: String,
    /// The client's address (none for events without one, such as a finished recording).
    pub client: Option<SocketAddr>,
    /// `rtmp`, `flv` or `hls` (empty for a recording).
    pub protocol: &'static str,
    /// The query string the client gave (`secret=...`, `token=...`), if any.
    pub query: Option<String>,
    /// More fields for this event.
    pub extra: Option<Value>,
}

impl HookCall {
    /// The JSON body for `event` from `node`.
    pub fn body(&self, event: HookEvent, node: &str) -> Value {
        let mut v = json!({
            "event": event.name(),
            "app": self.app,
            "stream": self.stream,
            "client": self.client.map(|c| c.to_string()),
            "protocol": self.protocol,
            "node": node,
            "query": self.query,
            "time": crate::formats::playlist::rfc3339_millis(std::time::SystemTime::now()),
        });
        if let (Some(Value::Object(extra)), Value::Object(out)) = (&self.extra, &mut v) {
            for (k, x) in extra {
                out.insert(k.clone(), x.clone());
            }
        }
        v
    }
}

/// What one hook request came to.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Answer {
    /// 2xx.
    Allow,
    /// Another status below 500.
    Deny(u16),
    /// Unreachable, timed out, or 5xx, after every retry.
    Down(String),
}

/// The node's hooks (see the module docs).
pub struct Hooks {
    config: HooksConfig,
    node: String,
    client: reqwest::Client,
    /// `on_play` answers: `app/stream|protocol|client ip|token` → (when, allowed).
    cache: DashMap<String, (Instant, bool)>,
    requests: IntCounterVec,
}

impl Hooks {
    /// The hooks of `config`, for node `node`.
    pub fn new(config: &HooksConfig, node: &str, metrics: &Metrics) -> Result<Arc<Hooks>, String> {
        let requests = metrics.register(
            IntCounterVec::new(
                Opts::new("strom_hook_requests_total", "HTTP hook requests by event and outcome."),
                &["event", "result"],
            )
            .expect("valid metric"),
        );
        let client = reqwest::Client::builder()
            .timeout(Duration::from_millis(config.timeout_ms))
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| format!("the hooks' HTTP client: {e}"))?;
        Ok(Arc::new(Hooks { config: config.clone(), node: node.to_string(), client, cache: DashMap::new(), requests }))
    }

    /// A URL is configured for `event`.
    pub fn has(&self, event: HookEvent) -> bool {
        event.url(&self.config).is_some()
    }

    /// Asks the `on_publish` or `on_play` hook; `Err(why)` when the answer (or, unreachable, the fallback)
    /// denies. Allowed without a request when no hook is configured.
    pub async fn decide(&self, event: HookEvent, call: &HookCall) -> Result<(), String> {
        let Some(url) = event.url(&self.config) else { return Ok(()) };
        let cache_key = (event == HookEvent::Play && self.config.cache_secs > 0.0).then(|| {
            let ip = call.client.map(|c| c.ip().to_string()).unwrap_or_default();
            // The token is what a decision can depend on; LL-HLS's `_HLS_msn`/`_HLS_part` change at every poll.
            let token =
                call.query.as_deref().and_then(|q| q.split('&').find_map(|kv| kv.strip_prefix("token="))).unwrap_or("");
            format!("{}/{}|{}|{ip}|{}", call.app, call.stream, call.protocol, token.get(..512).unwrap_or(token))
        });
        if let Some(k) = &cache_key {
            if let Some(hit) = self.cache.get(k) {
                if hit.0.elapsed().as_secs_f64() < self.config.cache_secs {
                    return if hit.1 { Ok(()) } else { Err(format!("{} denied (cached answer)", event.name())) };
                }
            }
        }
        let verdict = match self.post(event, url, &call.body(event, &self.node)).await {
            Answer::Allow => Ok(()),
            Answer::Deny(status) => Err(format!("{} denied (HTTP {status})", event.name())),
            Answer::Down(why) => {
                let fallback = if event == HookEvent::Publish {
                    self.config.publish_when_down
                } else {
                    self.config.play_when_down
                };
                warn!(event = event.name(), error = %why, ?fallback, "hook unreachable: its fallback decides");
                match fallback {
                    HookFallback::Allow => Ok(()),
                    HookFallback::Deny => Err(format!("{} unreachable ({why}): refused", event.name())),
                }
            }
        };
        if let Some(k) = cache_key {
            if self.cache.len() >= CACHE_MAX {
                let ttl = self.config.cache_secs;
                self.cache.retain(|_, v| v.0.elapsed().as_secs_f64() < ttl);
                if self.cache.len() >= CACHE_MAX {
                    self.cache.clear();
                }
            }
            self.cache.insert(k, (Instant::now(), verdict.is_ok()));
        }
        verdict
    }

    /// Tells the `on_unpublish`, `on_stop` or `on_record_done` hook, from its own task.
    pub fn notify(self: &Arc<Self>, event: HookEvent, call: HookCall) {
        let Some(url) = event.url(&self.config).map(str::to_string) else { return };
        let Ok(rt) = tokio::runtime::Handle::try_current() else { return };
        let hooks = self.clone();
        rt.spawn(async move {
            let body = call.body(event, &hooks.node);
            if let Answer::Down(why) = hooks.post(event, &url, &body).await {
                warn!(event = event.name(), error = %why, "hook notice not delivered");
            }
        });
    }

    /// A guard that sends `event` (a notice) about `call` when dropped; `None` when that hook is not configured.
    pub fn on_drop(self: &Arc<Self>, event: HookEvent, call: HookCall) -> Option<HookOnDrop> {
        self.has(event).then(|| HookOnDrop { hooks: self.clone(), event, call: Some(call) })
    }

    /// Posts `body`, retrying an unreachable hook or a 5xx.
    async fn post(&self, event: HookEvent, url: &str, body: &Value) -> Answer {
        let bytes = body.to_string();
        let mut last = String::new();
        for attempt in 0..=self.config.retries {
            if attempt > 0 {
                tokio::time::sleep(Duration::from_millis(100 << (attempt - 1).min(5))).await;
            }
            let r = self
                .client
                .post(url)
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .body(bytes.clone())
                .send()
                .await;
            let result = match r {
                Ok(resp) if resp.status().is_success() => {
                    let decides = matches!(event, HookEvent::Publish | HookEvent::Play);
                    self.count(event, if decides { "allow" } else { "sent" });
                    debug!(event = event.name(), status = resp.status().as_u16(), "hook answered");
                    return Answer::Allow;
                }
                Ok(resp) if resp.status().as_u16() < 500 => {
                    self.count(event, "deny");
                    return Answer::Deny(resp.status().as_u16());
                }
                Ok(resp) => format!("HTTP {}", resp.status().as_u16()),
                Err(e) if e.is_timeout() => format!("no answer within {} ms", self.config.timeout_ms),
                Err(e) => format!("{e}"),
            };
            self.count(event, "error");
            last = result;
        }
        Answer::Down(last)
    }

    fn count(&self, event: HookEvent, result: &str) {
        self.requests.with_label_values(&[event.name(), result]).inc();
    }
}

/// Sends a notice when dropped (a publisher's or player's end, whichever way the connection ends).
pub struct HookOnDrop {
    hooks: Arc<Hooks>,
    event: HookEvent,
    call: Option<HookCall>,
}

impl Drop for HookOnDrop {
    fn drop(&mut self) {
        if let Some(call) = self.call.take() {
            self.hooks.notify(self.event, call);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_body_carries_every_field_and_the_extra_ones() {
        let call = HookCall {
            app: "live".into(),
            stream: "cam".into(),
            client: Some("203.0.113.7:51234".parse().unwrap()),
            protocol: "rtmp",
            query: Some("secret=s".into()),
            extra: Some(json!({ "asset": "a1" })),
        };
        let v = call.body(HookEvent::Publish, "strom-0");
        assert_eq!(v["event"], "on_publish");
        assert_eq!(v["app"], "live");
        assert_eq!(v["stream"], "cam");
        assert_eq!(v["client"], "203.0.113.7:51234");
        assert_eq!(v["protocol"], "rtmp");
        assert_eq!(v["node"], "strom-0");
        assert_eq!(v["query"], "secret=s");
        assert_eq!(v["asset"], "a1");
        assert!(v["time"].as_str().is_some_and(|t| t.ends_with('Z')), "{v}");
    }
}
