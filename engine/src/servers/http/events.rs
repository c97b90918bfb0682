//! `GET /api/v1/events`: the console's live feed, as Server-Sent Events (`text/event-stream`).
//!
//! One feed per connection (at most [`MAX_FEEDS`] at once; 503 past them). It needs the admin token (see
//! `auth.admin_token`; with none set, only a same-origin request from this host). At connect it sends every event once, then each one again whenever its JSON changed,
//! checked every second (`assets` every 3 s: it lists storage), so the console polls nothing:
//!
//! | event | data |
//! |---|---|
//! | `hello` | this node: `node`, `version`, `rtmp_port`, `http_port`, `apps`, `auth` (which protections are on) |
//! | `nodes` | every node of the cluster, this one first-class (`self`): address, state, readiness, heartbeat RTT, load (with egress) |
//! | `history` | the last 15 minutes of every node's load, every 5 s ([`crate::load::History`]) |
//! | `streams` | every stream of the cluster from its owner (`node`, `relays`, ladder rungs with `rung_of`), see [`super::stream_list`] |
//! | `jobs` | the VOD jobs (`GET /api/v1/jobs`) |
//! | `assets` | the VOD assets (`GET /api/v1/vod`) |
//!
//! A comment line keeps the connection open through proxies when nothing changed for 15 s. The feed ends when
//! the node drains, so a graceful shutdown does not wait for consoles.

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use serde_json::{json, Value};
use tokio::sync::{mpsc, Semaphore};

use crate::servers::NodeContext;

/// Feeds open at once on one node.
pub const MAX_FEEDS: usize = 32;

static FEEDS: Semaphore = Semaphore::const_new(MAX_FEEDS);

/// A comment is sent after this long without an event.
const KEEPALIVE: Duration = Duration::from_secs(15);

/// `GET /api/v1/events`.
pub async fn events(State(node): State<Arc<NodeContext>>) -> Response {
    let Ok(permit) = FEEDS.try_acquire() else {
        let why = format!("at most {MAX_FEEDS} event feeds at once");
        return (StatusCode::SERVICE_UNAVAILABLE, axum::Json(json!({ "error": why }))).into_response();
    };
    let (tx, rx) = mpsc::channel::<Bytes>(8);
    tokio::spawn(async move {
        let _permit = permit;
        feed(node, tx).await;
    });
    let body = Body::from_stream(futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|b| (Ok::<_, Infallible>(b), rx))
    }));
    (
        [
            (header::CONTENT_TYPE, "text/event-stream"),
            (header::CACHE_CONTROL, "no-cache, no-store"),
            (header::HeaderName::from_static("x-accel-buffering"), "no"),
        ],
        body,
    )
        .into_response()
}

/// One SSE event.
pub fn frame(event: &str, data: &str) -> Bytes {
    // `data` is one line of JSON (serde_json never writes a raw newline).
    Bytes::from(format!("event: {event}\ndata: {data}\n\n"))
}

async fn feed(node: Arc<NodeContext>, tx: mpsc::Sender<Bytes>) {
    if tx.send(frame("hello", &hello(&node).to_string())).await.is_err() {
        return;
    }
    let mut last: HashMap<&'static str, String> = HashMap::new();
    let mut last_history = u64::MAX;
    let mut quiet_since = Instant::now();
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    for n in 0u64.. {
        tick.tick().await;
        if tx.is_closed() || node.draining.load(Ordering::Relaxed) {
            return;
        }
        let mut topics: Vec<(&'static str, Value)> = vec![
            ("nodes", nodes(&node)),
            ("streams", json!({ "streams": super::stream_list(&node, true).await })),
            ("jobs", jobs(&node).await),
        ];
        if n % 3 == 0 {
            topics.push(("assets", assets(&node).await));
        }
        let newest = node.history.newest();
        if newest != last_history {
            last_history = newest;
            let interval = crate::load::History::INTERVAL.as_secs();
            topics.push(("history", json!({ "interval_secs": interval, "nodes": node.history.snapshot() })));
        }
        for (event, value) in topics {
            let text = value.to_string();
            if last.get(event) == Some(&text) {
                continue;
            }
            if tx.send(frame(event, &text)).await.is_err() {
                return;
            }
            last.insert(event, text);
            quiet_since = Instant::now();
        }
        if quiet_since.elapsed() >= KEEPALIVE {
            if tx.send(Bytes::from_static(b": keepalive\n\n")).await.is_err() {
                return;
            }
            quiet_since = Instant::now();
        }
    }
}

fn hello(node: &NodeContext) -> Value {
    let auth = &node.config.auth;
    json!({
        "node": node.config.node_name,
        "version": env!("CARGO_PKG_VERSION"),
        "rtmp_port": node.rtmp_addr.port(),
        "http_port": node.http_addr.port(),
        "apps": ["live"],
        "clustered": node.cluster.is_some(),
        "auth": {
            "admin_token": auth.admin_token.is_some(),
            "publish_secrets": auth.secrets_on(),
            "signed_play": auth.play_key.is_some() || auth.play_key_file.is_some() || !auth.apps.is_empty(),
            "jwt_play": auth.jwks_file.is_some(),
            "read_api": if auth.read_api_private() { "private" } else { "public" },
        },
    })
}

/// Every node of the cluster, this one included, by name.
fn nodes(node: &NodeContext) -> Value {
    let draining = node.draining.load(Ordering::Relaxed);
    let own = node.own_load();
    let mut out = vec![json!({
        "name": node.config.node_name,
        "self": true,
        "address": node.cluster.as_ref().and_then(|c| c.status().advertise).unwrap_or_else(|| node.http_addr.to_string()),
        "state": "up",
        "ready": node.readiness().is_ok(),
        "draining": draining,
        "rtt_ms": null,
        "connected_secs": null,
        "load": own,
    })];
    if let Some(c) = &node.cluster {
        let mut peers = c.status().peers;
        peers.sort_by(|a, b| a.name.cmp(&b.name));
        for p in peers {
            let draining = p.load.is_some_and(|l| l.draining);
            out.push(json!({
                "name": p.name,
                "self": false,
                "address": p.address,
                "state": p.state,
                "ready": p.state == "up" && !draining,
                "draining": draining,
                // Rounded: the feed sends `nodes` again only when something a reader sees changed.
                "rtt_ms": p.rtt_ms.map(|r| (r * 10.0).round() / 10.0),
                "connected_secs": p.connected_secs.floor(),
                "load": p.load,
            }));
        }
    }
    json!({ "nodes": out })
}

async fn jobs(node: &NodeContext) -> Value {
    match node.jobs.list().await {
        Ok(jobs) => json!({ "jobs": jobs }),
        Err(e) => json!({ "jobs": [], "error": e.to_string() }),
    }
}

async fn assets(node: &NodeContext) -> Value {
    let a = node.recordings.list_api().await;
    match serde_json::from_slice::<Value>(&a.body) {
        Ok(v) if a.status == 200 => v,
        Ok(v) => json!({ "assets": [], "error": v["error"] }),
        Err(e) => json!({ "assets": [], "error": e.to_string() }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_event_is_one_sse_frame() {
        let v = json!({ "a": "line\nbreak" });
        let f = frame("streams", &v.to_string());
        let text = std::str::from_utf8(&f).unwrap();
        assert_eq!(text, "event: streams\ndata: {\"a\":\"line\\nbreak\"}\n\n");
        assert_eq!(text.matches('\n').count(), 3, "one data line whatever the JSON holds");
    }
}
