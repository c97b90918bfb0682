//! HTTP (axum): HLS, HTTP-FLV, the JSON API, Prometheus metrics and probes.
//!
//! | route | what |
//! |---|---|
//! | `GET /{app}/{name}.flv` | HTTP-FLV live: header, metadata, sequence headers, GOP cache, then live tags (a plain `GET` of a live stream is played by the listener itself, see [`flv`]) |
//! | `GET /{app}/{name}/index.m3u8` | HLS media playlist (waits briefly for the first segment); from the owner node. With an ABR ladder: the master playlist (see [`crate::transcode::master`]) |
//! | `GET /{app}/{name}/source.m3u8` | HLS media playlist of the published stream itself (the ladder's top variant) |
//! | `GET /{app}/{name}/index.m3u8?_HLS_msn=M&_HLS_part=P&_HLS_skip=YES` | LL-HLS blocking playlist reload: held until part P of segment M exists (at most 3 target durations, then 503; 400 if too far ahead); `_HLS_skip=YES`: a delta update |
//! | `GET /{app}/{name}/{file}.m4s`, `.mp4`, `.ts` | HLS segment, LL-HLS part (a preload-hinted part asked for early is sent as it is produced), init segment; MPEG-TS segment with `hls.format = "ts"` |
//! | `GET /api/v1/streams` | streams on this node (JSON; relays of other nodes' streams carry `relay_from`); `?scope=cluster`: every stream of the cluster, from its owner, each with its `node` |
//! | `GET /api/v1/cluster` | membership: peers, their state, heartbeat RTT and load (JSON) |
//! | `DELETE /api/v1/streams/{app}/{name}/publisher` | disconnect the publisher and end the stream, on whichever node owns it |
//! | `POST /api/v1/sign` | a signed play token for `{"path": "/live/NAME" or "/vod/ID", "ttl", "ip"}` (admin token) |
//! | `GET /api/v1/events` | the console's live feed (Server-Sent Events, admin token; see [`events`]) |
//! | `GET /console/` | the web console (see [`console`]) |
//! | `POST`/`DELETE /api/v1/streams/{app}/{name}/record`, `GET /api/v1/vod[/{id}]`, `DELETE /api/v1/vod/{id}`, `GET /vod/{id}/index.m3u8`, `GET /vod/{id}.mp4` | recordings and VOD (see [`vod`]); the application name `vod` is taken by these |
//! | `GET /metrics` | Prometheus text format (with `http.metrics_listen` set: on that address only, see [`metrics_router`]) |
//! | `GET /healthz`, `GET /readyz` | liveness (the stream registry answers within 1 s); readiness (listeners up, not draining) |
//!
//! Media and API responses carry CORS headers; playlists are not cached, segments are. Paths longer than
//! `http.max_path_len` get 414; invalid stream names 400. See [`listener`] for the connection limit, the
//! write timeout that disconnects stalled players, and the HTTP-FLV fast path; [`direct`] for live HLS answered
//! on keep-alive connections without hyper.

pub mod console;
pub mod direct;
pub mod events;
pub mod flv;
pub mod listener;
pub mod upload;
pub mod vod;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Path, Query, Request, State};
use axum::http::{header, HeaderValue, Method, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};

use crate::formats::playlist::last_part_in;
use crate::servers::hooks::{HookCall, HookEvent};
use crate::servers::NodeContext;
use crate::stream::segmenter::Blocking;
use crate::stream::HlsSource;
use crate::stream::StreamKey;

/// Builds the router.
pub fn router(node: Arc<NodeContext>) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route("/api/v1/streams", get(streams))
        .route("/api/v1/cluster", get(cluster))
        .route("/api/v1/events", get(events::events))
        .route("/api/v1/sign", post(sign))
        .route("/console", get(console::redirect))
        .route("/console/", get(console::index))
        .route("/console/{*file}", get(console::asset))
        .route("/api/v1/streams/{app}/{name}/record", post(vod::record_start).delete(vod::record_stop))
        .route("/api/v1/streams/{app}/{name}/publisher", axum::routing::delete(disconnect))
        .route("/api/v1/vod", get(vod::list).post(upload::post).layer(axum::extract::DefaultBodyLimit::disable()))
        .route(
            "/api/v1/vod/upload/{name}",
            axum::routing::put(upload::put).layer(axum::extract::DefaultBodyLimit::disable()),
        )
        .route("/api/v1/jobs", get(upload::list))
        .route("/api/v1/jobs/{id}", get(upload::get))
        .route("/api/v1/jobs/{id}/{action}", post(upload::action))
        .route("/api/v1/vod/{id}", get(vod::get).delete(vod::delete))
        .route("/vod/{file}", get(vod::mp4))
        .route("/vod/{id}/{file}", get(vod::top))
        .route("/vod/{id}/{rendition}/{file}", get(vod::file))
        .route("/{app}/{file}", get(flv::serve))
        .route("/{app}/{name}/{file}", get(hls))
        .merge(test_hooks())
        .fallback(|| async { (StatusCode::NOT_FOUND, "not found\n") })
        .layer(middleware::from_fn_with_state(node.clone(), edge))
        .with_state(node)
}

/// Hooks for tests that break the node on purpose, only with `STROM_TEST_HOOKS=1` in the environment (and, as
/// mutating calls, the admin token): `POST /api/v1/test/kill-registry` stops the stream registry as a crash would;
/// `POST /api/v1/test/stall/{app}/{name}?what=segmenter|stream&secs=N` stalls a stream's segmenter or its actor.
fn test_hooks() -> Router<Arc<NodeContext>> {
    if !std::env::var("STROM_TEST_HOOKS").is_ok_and(|v| v == "1") {
        return Router::new();
    }
    tracing::warn!("STROM_TEST_HOOKS=1: test hooks that break this node are enabled");
    Router::new()
        .route(
            "/api/v1/test/kill-registry",
            post(|State(node): State<Arc<NodeContext>>| async move {
                node.streams.kill_registry_for_test();
                "registry stopped\n"
            }),
        )
        .route(
            "/api/v1/test/stall/{app}/{name}",
            post(
                |State(node): State<Arc<NodeContext>>,
                 Path((app, name)): Path<(String, String)>,
                 Query(q): Query<HashMap<String, String>>| async move {
                    let secs: f64 = q.get("secs").and_then(|s| s.parse().ok()).unwrap_or(10.0);
                    let segmenter = q.get("what").map(String::as_str) != Some("stream");
                    let Ok(key) = crate::formats::StreamKey::new(&app, &name) else {
                        return (StatusCode::BAD_REQUEST, "bad key\n");
                    };
                    match node.streams.find_local(&key).await {
                        Some(h) => {
                            h.stall_for_test(segmenter, Duration::from_secs_f64(secs.clamp(0.0, 600.0)));
                            (StatusCode::OK, "stalled\n")
                        }
                        None => (StatusCode::NOT_FOUND, "no such stream here\n"),
                    }
                },
            ),
        )
}

/// How long the liveness probe waits for the core actors.
pub const LIVENESS_DEADLINE: Duration = Duration::from_secs(1);

/// `GET /healthz`: 200 while the stream registry answers within [`LIVENESS_DEADLINE`]; 503 saying why otherwise,
/// so the kubelet restarts a node whose core is gone.
async fn healthz(State(node): State<Arc<NodeContext>>) -> Response {
    match node.streams.alive(LIVENESS_DEADLINE).await {
        Ok(()) => "ok\n".into_response(),
        Err(why) => (StatusCode::SERVICE_UNAVAILABLE, format!("{why}\n")).into_response(),
    }
}

/// A request to play a live stream (`GET /APP/NAME/FILE`, `GET /APP/NAME.flv`) or a VOD asset (`GET /vod/...`,
/// application `vod`): its application and `token`.
fn live_play(req: &Request) -> Option<(String, Option<String>)> {
    if !matches!(*req.method(), Method::GET | Method::HEAD) {
        return None;
    }
    let path = req.uri().path();
    let mut parts = path.trim_start_matches('/').split('/');
    let app = parts.next()?;
    let second = parts.next()?;
    let third = parts.next();
    let fourth = parts.next();
    // VOD assets (`/vod/ID.mp4`, `/vod/ID/index.m3u8`, `/vod/ID/RENDITION/FILE`) are played as application `vod`.
    let vod = app == "vod" && parts.next().is_none() && (third.is_some() || second.ends_with(".mp4"));
    let live =
        fourth.is_none() && !matches!(app, "api" | "vod" | "console") && (third.is_some() || second.ends_with(".flv"));
    if !(vod || live) {
        return None;
    }
    let token =
        req.uri().query().and_then(|q| q.split('&').find_map(|kv| kv.strip_prefix("token=")).map(str::to_string));
    Some((app.to_string(), token))
}

/// A path outside the API and the console with a percent-escape: refused (see `edge`).
fn encoded_media_path(req: &Request) -> bool {
    let path = req.uri().path();
    path.contains('%') && !path.starts_with("/api/") && !path.starts_with("/console/")
}

/// What the `on_play` hook is told about a live GET.
fn play_call(req: &Request, app: &str) -> HookCall {
    let path = req.uri().path().trim_start_matches('/');
    let rest = path.strip_prefix(app).unwrap_or(path).trim_start_matches('/');
    let (stream, protocol) = match rest.strip_suffix(".flv") {
        Some(name) => (name, "flv"),
        None => (rest.split('/').next().unwrap_or(rest), "hls"),
    };
    HookCall {
        app: app.to_string(),
        stream: stream.to_string(),
        client: req.extensions().get::<PeerAddr>().map(|p| p.0),
        protocol,
        // Bounded: the hook hears at most 2 KiB of query.
        query: req.uri().query().map(|q| q.get(..2048).unwrap_or(q).to_string()),
        extra: None,
    }
}

/// Asks the `on_play` hook (its answer is cached: an HLS player is asked about once, not per poll).
async fn play_hook(node: &NodeContext, call: HookCall) -> Result<(), String> {
    let r = node.hooks.decide(HookEvent::Play, &call).await;
    if let Err(why) = &r {
        tracing::info!(app = %call.app, stream = %call.stream, protocol = call.protocol, reason = %why,
            "play refused by the on_play hook");
    }
    r
}

/// A playlist answered to a signed request lists its URIs with the same token, so the player needs nothing else.
async fn sign_playlist(resp: Response, token: &str) -> Response {
    let is_playlist = resp
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/vnd.apple.mpegurl"));
    if !is_playlist || !resp.status().is_success() {
        return resp;
    }
    let (mut parts, body) = resp.into_parts();
    let Ok(bytes) = axum::body::to_bytes(body, 16 << 20).await else {
        return (StatusCode::INTERNAL_SERVER_ERROR, "playlist too large\n").into_response();
    };
    let text = crate::formats::playlist::with_query(&String::from_utf8_lossy(&bytes), &format!("token={token}"));
    parts.headers.remove(header::CONTENT_LENGTH);
    Response::from_parts(parts, Body::from(text))
}

/// The client's address, set on every request by the listener.
#[derive(Debug, Clone, Copy)]
pub struct PeerAddr(pub std::net::SocketAddr);

fn peer_ip(req: &Request) -> Option<std::net::IpAddr> {
    req.extensions().get::<PeerAddr>().map(|p| p.0.ip())
}

/// `POST /api/v1/sign` (admin token): `{"path": "/live/NAME" | "/vod/ID", "ttl": 3600, "ip": "203.0.113.7"}` →
/// `{"token", "query", "expires"}`, a play token made with the application's key, as `strom sign` prints it
/// (the console uses it to play signed streams). 404 when the application has no play key.
async fn sign(State(node): State<Arc<NodeContext>>, Json(q): Json<SignRequest>) -> Response {
    let mut parts = q.path.trim_start_matches('/').split('/');
    let (Some(app), Some(name), None) = (parts.next(), parts.next(), parts.next()) else {
        return bad_request(format!("path must be /APP/NAME or /vod/ID, not {:?}", q.path));
    };
    if let Err(e) = StreamKey::new(app, name) {
        return bad_request(e.to_string());
    }
    let Some(key) = node.play_key(app) else {
        let why = format!("playing {app} is not signed: no play key for it");
        return (StatusCode::NOT_FOUND, Json(serde_json::json!({ "error": why }))).into_response();
    };
    let ttl = q.ttl.unwrap_or(3600).clamp(1, 7 * 86_400);
    let expires = crate::clock::unix_ms() / 1000 + ttl;
    let token = crate::formats::token::sign(&key, &format!("/{app}/{name}"), expires, q.ip);
    Json(serde_json::json!({ "token": token, "query": format!("token={token}"), "expires": expires })).into_response()
}

/// The body of `POST /api/v1/sign`.
#[derive(serde::Deserialize)]
struct SignRequest {
    path: String,
    ttl: Option<u64>,
    ip: Option<std::net::IpAddr>,
}

/// A mutating API call (`POST`, `PUT`, `DELETE`, `PATCH` under `/api/`), the console's feed
/// (`/api/v1/events`) and, when reads are private (`auth.read_api`; by default when a token is set), every API
/// read, need `Authorization: Bearer
/// <auth.admin_token>`: 401 without it or with another. With no token configured, only loopback clients may
/// make them (403 for others, saying how to allow them).
#[allow(clippy::result_large_err)]
fn admin(node: &NodeContext, req: &Request) -> Result<(), Response> {
    let path = req.uri().path();
    let mutating = matches!(*req.method(), Method::POST | Method::PUT | Method::DELETE | Method::PATCH);
    let private = mutating || path == "/api/v1/events" || node.config.auth.read_api_private();
    if !private || !path.starts_with("/api/") {
        return Ok(());
    }
    let deny = |status: StatusCode, why: &str| {
        node.metrics.connections_rejected.with_label_values(&["unauthorized"]).inc();
        let mut r = (status, Json(serde_json::json!({ "error": why }))).into_response();
        if status == StatusCode::UNAUTHORIZED {
            r.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer realm=\"strom\""));
        }
        Err(r)
    };
    match &node.config.auth.admin_token {
        Some(token) => {
            let given = req
                .headers()
                .get(header::AUTHORIZATION)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.strip_prefix("Bearer "))
                .map(str::trim);
            match given {
                Some(g) if crate::servers::constant_time_eq(g.as_bytes(), token.as_bytes()) => Ok(()),
                Some(_) => deny(StatusCode::UNAUTHORIZED, "wrong admin token"),
                None => deny(StatusCode::UNAUTHORIZED, "this call needs Authorization: Bearer <auth.admin_token>"),
            }
        }
        None => {
            let loopback = req.extensions().get::<PeerAddr>().is_some_and(|p| p.0.ip().is_loopback());
            // A page of another origin open in a browser on this host is not the operator: with no token, only
            // same-origin (or non-browser) loopback requests are trusted.
            let host = req.headers().get(header::HOST).and_then(|h| h.to_str().ok()).unwrap_or("");
            let foreign = req.headers().get(header::ORIGIN).and_then(|o| o.to_str().ok()).is_some_and(|o| {
                o.strip_prefix("http://").or_else(|| o.strip_prefix("https://")).is_none_or(|rest| rest != host)
            });
            if loopback && !foreign {
                Ok(())
            } else if loopback {
                deny(StatusCode::FORBIDDEN, "a cross-origin page may not call this API without auth.admin_token")
            } else {
                deny(
                    StatusCode::FORBIDDEN,
                    "no auth.admin_token is set: this call is only accepted from this host (set auth.admin_token, \
                     STROM_AUTH_ADMIN_TOKEN, to call it from elsewhere with Authorization: Bearer)",
                )
            }
        }
    }
}

/// The `Access-Control-Allow-Origin` value of every answer: `http.cors_origin`, or `*` when it is not a valid
/// header value (the edge, and the listener's own HTTP-FLV and live HLS answers).
pub fn cors_origin(configured: &str) -> &str {
    if HeaderValue::from_str(configured).is_ok() {
        configured
    } else {
        "*"
    }
}

/// Path length limit, CORS, preflight answers and the admin check, for every request.
async fn edge(State(node): State<Arc<NodeContext>>, req: Request, next: Next) -> Response {
    let origin =
        HeaderValue::from_str(cors_origin(&node.config.http.cors_origin)).unwrap_or(HeaderValue::from_static("*"));
    let mut resp = if req.uri().path().len() > node.config.http.max_path_len {
        node.metrics.connections_rejected.with_label_values(&["path_too_long"]).inc();
        tracing::info!(
            len = req.uri().path().len(),
            limit = node.config.http.max_path_len,
            "request refused: path too long"
        );
        (StatusCode::URI_TOO_LONG, "path too long\n").into_response()
    } else if encoded_media_path(&req) {
        // Stream names, asset ids and segment names never need percent-encoding; a decoded path would reach a
        // handler under another name than the play checks saw.
        (StatusCode::BAD_REQUEST, "percent-encoded media paths are not accepted\n").into_response()
    } else if req.method() == Method::OPTIONS {
        let mut r = StatusCode::NO_CONTENT.into_response();
        let h = r.headers_mut();
        h.insert(
            header::ACCESS_CONTROL_ALLOW_METHODS,
            HeaderValue::from_static("GET, HEAD, POST, PUT, DELETE, OPTIONS"),
        );
        // `*` does not cover Authorization (Fetch spec): it is named.
        h.insert(header::ACCESS_CONTROL_ALLOW_HEADERS, HeaderValue::from_static("Authorization, *"));
        h.insert(header::ACCESS_CONTROL_MAX_AGE, HeaderValue::from_static("86400"));
        r
    } else if let Err(refused) = admin(&node, &req) {
        refused
    } else {
        match live_play(&req) {
            Some((app, token)) => match node.play_allowed(&app, req.uri().path(), token.as_deref(), peer_ip(&req)) {
                Err(e) => (StatusCode::FORBIDDEN, format!("{e}\n")).into_response(),
                Ok(()) if node.hooks.has(HookEvent::Play) && play_hook(&node, play_call(&req, &app)).await.is_err() => {
                    (StatusCode::FORBIDDEN, "refused by the on_play hook\n").into_response()
                }
                Ok(()) => {
                    let resp = next.run(req).await;
                    match token {
                        Some(t) if node.play_signed(&app) => sign_playlist(resp, &t).await,
                        _ => resp,
                    }
                }
            },
            None => next.run(req).await,
        }
    };
    resp.headers_mut().insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin);
    resp
}

async fn readyz(State(node): State<Arc<NodeContext>>) -> Response {
    match node.readiness() {
        Ok(()) => (StatusCode::OK, "ready\n").into_response(),
        Err(why) => (StatusCode::SERVICE_UNAVAILABLE, why).into_response(),
    }
}

async fn metrics(State(node): State<Arc<NodeContext>>) -> Response {
    if let Some(addr) = node.config.http.metrics_listen {
        return (StatusCode::NOT_FOUND, format!("metrics are served on http.metrics_listen ({addr})\n"))
            .into_response();
    }
    render_metrics(&node)
}

fn render_metrics(node: &NodeContext) -> Response {
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], node.metrics.render()).into_response()
}

/// The router of `http.metrics_listen`: `/metrics`, `/healthz` and `/readyz` only.
pub fn metrics_router(node: Arc<NodeContext>) -> Router {
    Router::new()
        .route("/metrics", get(|State(node): State<Arc<NodeContext>>| async move { render_metrics(&node) }))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .fallback(|| async { (StatusCode::NOT_FOUND, "not found\n") })
        .with_state(node)
}

async fn streams(State(node): State<Arc<NodeContext>>, Query(q): Query<HashMap<String, String>>) -> Response {
    let cluster_wide = match q.get("scope").map(String::as_str) {
        None | Some("node") => false,
        Some("cluster") => true,
        Some(other) => return bad_request(format!("unknown scope {:?}: `node` or `cluster`", other)),
    };
    let out = stream_list(&node, cluster_wide).await;
    Json(serde_json::json!({ "node": node.config.node_name, "streams": out })).into_response()
}

/// The `/api/v1/streams` entries: this node's streams (relays of other nodes' streams carry `relay_from`), or,
/// `cluster_wide`, every stream of the cluster from its owner, each with its `node` and the nodes relaying it
/// (`relays`). A rung of an ABR ladder carries its source's key (`rung_of`) and its name (`rung`, e.g. `720p`).
pub async fn stream_list(node: &NodeContext, cluster_wide: bool) -> Vec<serde_json::Value> {
    let mut out = Vec::new();
    if cluster_wide && node.cluster.is_some() {
        // Every owner answers for its stream (this node's through its own export).
        out = crate::cluster::cluster_streams(Duration::from_secs(2)).await;
    } else {
        for h in node.streams.list().await {
            // Cluster-wide, a relay is listed by its owner instead.
            if cluster_wide && h.relay_from().is_some() {
                continue;
            }
            if let Some(mut info) = h.info().await.and_then(|i| serde_json::to_value(i).ok()) {
                if cluster_wide {
                    info["node"] = serde_json::Value::String(node.config.node_name.clone());
                    info["relays"] = serde_json::json!([]);
                }
                out.push(info);
            }
        }
    }
    for v in out.iter_mut() {
        let Some(key) = v["key"].as_str().and_then(|k| StreamKey::parse(k).ok()) else { continue };
        if !node.transcode.reserved(&key) {
            continue;
        }
        if let Some(source) = crate::transcode::ladder::source_of(&key, node.config.transcode.rungs_for(key.app())) {
            let rung = key.name().strip_prefix(source.name()).unwrap_or_default().trim_start_matches('_');
            v["rung"] = serde_json::Value::String(rung.to_string());
            v["rung_of"] = serde_json::Value::String(source.to_string());
        }
    }
    if cluster_wide {
        out.sort_by(|a, b| (a["key"].as_str(), a["node"].as_str()).cmp(&(b["key"].as_str(), b["node"].as_str())));
    }
    out
}

/// `DELETE /api/v1/streams/{app}/{name}/publisher`: disconnects the publisher and ends the stream now (players
/// get end-of-stream, HLS `EXT-X-ENDLIST`), on whichever node owns it. 200, or 404 if no node has it live.
async fn disconnect(State(node): State<Arc<NodeContext>>, Path((app, name)): Path<(String, String)>) -> Response {
    let key = match StreamKey::new(&app, &name) {
        Ok(k) => k,
        Err(e) => return bad_request(e.to_string()),
    };
    let local = match node.streams.find_local(&key).await.filter(|h| h.relay_from().is_none()) {
        // An ended stream lingering here is not what the caller means: its publisher may be live elsewhere now.
        Some(h) if h.info().await.is_some_and(|i| i.state != "ended") => Some(h),
        _ => None,
    };
    if let Some(h) = local {
        h.disconnect("publisher disconnected through the API");
        return Json(serde_json::json!({ "disconnected": key.to_string(), "node": node.config.node_name }))
            .into_response();
    }
    if node.cluster.is_some() && crate::cluster::disconnect(&key, Duration::from_secs(2)).await {
        return Json(serde_json::json!({ "disconnected": key.to_string() })).into_response();
    }
    (StatusCode::NOT_FOUND, Json(serde_json::json!({ "error": format!("no live stream {key} in the cluster") })))
        .into_response()
}

fn bad_request(msg: String) -> Response {
    (StatusCode::BAD_REQUEST, msg + "\n").into_response()
}

/// LL-HLS: a media playlist of a ladder's rendition (the source's `source.m3u8` or a rung's `index.m3u8`) gets an
/// `EXT-X-RENDITION-REPORT` for every other rendition (its newest part), so a player switches without a
/// round trip. Read from what this node holds of each rendition: no wait, no cluster call.
async fn with_rendition_reports(node: &NodeContext, key: &StreamKey, file: &str, text: bytes::Bytes) -> bytes::Bytes {
    let is_ll = text.windows(16).any(|w| w == b"#EXT-X-PART-INF:");
    if !is_ll || text.windows(13).any(|w| w == b"#EXT-X-ENDLIST") {
        return text;
    }
    let rungs = node.config.transcode.rungs_for(key.app());
    let source = match node.transcode.reserved(key) {
        true => match crate::transcode::ladder::source_of(key, rungs) {
            Some(s) => s,
            None => return text,
        },
        false => key.clone(),
    };
    let Some(master) = node.transcode.master(&source, Duration::ZERO).await else {
        return text;
    };
    let mut out = String::from_utf8_lossy(&text).into_owned();
    for uri in master.lines().filter(|l| !l.starts_with('#') && !l.trim().is_empty()) {
        // Variant URIs are relative to the source's directory: `source.m3u8` or `../NAME/index.m3u8`.
        let (name, f) = match uri.strip_prefix("../").and_then(|r| r.split_once('/')) {
            Some((name, f)) => (name.to_string(), f.to_string()),
            None => (source.name().to_string(), uri.to_string()),
        };
        let Ok(other) = StreamKey::new(key.app(), &name) else { continue };
        if other == *key && (f == file || (f == "source.m3u8" && file == "index.m3u8")) {
            continue;
        }
        let Some(hls) = node.streams.hls(&other).await else { continue };
        let Some((msn, part)) = hls.current().and_then(|t| last_part_in(&String::from_utf8_lossy(&t))) else {
            continue;
        };
        out.push_str(&format!("#EXT-X-RENDITION-REPORT:URI=\"../{name}/{f}\",LAST-MSN={msn},LAST-PART={part}\n"));
    }
    bytes::Bytes::from(out)
}

/// A live HLS request to a node that has left the cluster on its way down: 503, which a balancer retries on
/// another node (the stream goes on there).
fn handed_over() -> Response {
    let why = "this node is shutting down and its streams go on on other nodes: retry\n";
    (StatusCode::SERVICE_UNAVAILABLE, [(header::RETRY_AFTER, "1")], why).into_response()
}

fn not_found() -> Response {
    (StatusCode::NOT_FOUND, "not found\n").into_response()
}

async fn hls(
    State(node): State<Arc<NodeContext>>,
    Path((app, name, file)): Path<(String, String, String)>,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    hls_answer(&node, &app, &name, &file, &query).await
}

/// The answer to `GET /{app}/{name}/{file}?{query}` of live HLS (a playlist, a blocking reload, a segment, a part
/// or an init segment), without the edge's checks and headers: for the axum route and for the listener's own
/// keep-alive loop ([`direct`]).
pub(crate) async fn hls_answer(
    node: &Arc<NodeContext>,
    app: &str,
    name: &str,
    file: &str,
    query: &HashMap<String, String>,
) -> Response {
    let key = match StreamKey::new(app, name) {
        Ok(k) => k,
        Err(e) => return bad_request(e.to_string()),
    };
    if node.left_cluster.load(std::sync::atomic::Ordering::Relaxed) {
        return handed_over();
    }
    let Some(stream) = node.streams.hls(&key).await else {
        // A rung of a ladder that is not running (on-demand): it starts if the source exists, and the player's
        // retry finds the rung. Requests for streams that do not exist start nothing and leave nothing behind.
        if let Some(source) = node.transcode.on_demand_source(&key) {
            if source != key && node.streams.hls(&source).await.is_some() {
                node.transcode.hls_request(&key);
            }
        }
        if node.cluster.as_ref().is_some_and(|c| c.warming_up()) {
            let why = "this node has just joined the cluster and is still learning its streams: retry\n";
            return (StatusCode::SERVICE_UNAVAILABLE, [(header::RETRY_AFTER, "1")], why).into_response();
        }
        return not_found();
    };
    node.transcode.hls_request(&key);
    if file == "index.m3u8" || file == "source.m3u8" {
        let wait = Duration::from_secs_f64((node.config.hls.segment_duration_secs * 3.0 + 1.0).min(15.0));
        let target = node.config.hls.segment_duration_secs.ceil().max(1.0);
        // A plain playlist changes every part: never cached. The answer to a blocking reload is the playlist that
        // holds part P of segment M, which stays true: a CDN may keep it, keyed by the query, for as long as the
        // playlist could list that part.
        let cache_blocked = format!("public, max-age={}", (6.0 * target) as u64);
        let playlist = |text: bytes::Bytes, blocked: bool| {
            let cache = if blocked { cache_blocked.as_str() } else { "no-cache, no-store" };
            (
                [(header::CONTENT_TYPE, "application/vnd.apple.mpegurl"), (header::CACHE_CONTROL, cache)],
                Body::from(text),
            )
                .into_response()
        };
        // LL-HLS delivery directives (rfc8216bis 6.2.5): a blocking reload is held until the part exists.
        let msn = query.get("_HLS_msn").map(|v| v.parse::<u64>());
        let part = query.get("_HLS_part").map(|v| v.parse::<u64>());
        let skip = query.get("_HLS_skip").is_some_and(|v| v == "YES" || v == "v2");
        if let Some(msn) = msn {
            let (Ok(msn), Ok(part)) = (msn, part.transpose()) else {
                return bad_request("_HLS_msn and _HLS_part must be numbers".into());
            };
            let hold = Duration::from_secs_f64(3.0 * target);
            // Below hls.js's timeout for a blocking reload (0.8 × target duration at least), with room for the
            // network; no shorter: an answer without the part makes hls.js wait half a target duration before its
            // next reload (a publisher reconnecting keeps the part away for that long).
            let quiet = Duration::from_secs_f64(0.7 * node.config.hls.segment_duration_secs);
            let started = tokio::time::Instant::now();
            let mut answer = stream.playlist_blocking(msn, part, skip, hold, quiet, &node.metrics).await;
            if node.left_cluster.load(std::sync::atomic::Ordering::Relaxed) {
                // Answered while the node left the cluster: not this node's last word on the stream (an end).
                return handed_over();
            }
            // The stream's owner changed while the request waited (it became this node's own, or another node's):
            // ask again, of whoever owns it now, for the rest of the hold.
            for _ in 0..3 {
                if !matches!(answer, Err(Blocking::Moved))
                    || node.left_cluster.load(std::sync::atomic::Ordering::Relaxed)
                {
                    break;
                }
                let left = |d: Duration| d.saturating_sub(started.elapsed());
                answer = match node.streams.hls(&key).await {
                    // The quiet time counts from the request: the answer still comes before hls.js gives up on it.
                    Some(now) => now.playlist_blocking(msn, part, skip, left(hold), left(quiet), &node.metrics).await,
                    None => Err(Blocking::NotFound),
                };
            }
            if node.left_cluster.load(std::sync::atomic::Ordering::Relaxed) {
                return handed_over();
            }
            return match answer {
                Ok(text) => playlist(with_rendition_reports(node, &key, file, text).await, true),
                Err(Blocking::NotFound) => not_found(),
                Err(Blocking::TooFarAhead) => bad_request(format!("_HLS_msn={msn} is too far ahead of the live edge")),
                Err(Blocking::Timeout | Blocking::Moved) => {
                    (StatusCode::SERVICE_UNAVAILABLE, "the requested part did not appear in time\n").into_response()
                }
            };
        } else if part.is_some() {
            return bad_request("_HLS_part needs _HLS_msn".into());
        }
        let started = std::time::Instant::now();
        let text = match skip {
            true => stream.playlist_blocking(0, None, true, wait, wait, &node.metrics).await.ok(),
            false => stream.playlist(wait).await,
        };
        let Some(media) = text else {
            // A stream whose publisher sends no keyframe cannot start: tell the player so (it retries), instead of
            // a 404 that reads as "no such stream".
            if let Some(h) = node.streams.find_local(&key).await {
                if h.info().await.is_some_and(|i| i.keyframe_missing) {
                    let why = format!(
                        "the publisher has sent no keyframe for over {} s (stream.keyframe_timeout_secs): HLS starts at \
                         its first keyframe\n",
                        node.config.stream.keyframe_timeout_secs
                    );
                    return (StatusCode::SERVICE_UNAVAILABLE, [(header::RETRY_AFTER, "2")], why).into_response();
                }
            }
            return not_found();
        };
        // With a ladder, index.m3u8 is the master playlist and the source's media playlist is source.m3u8.
        if file == "index.m3u8" {
            if let Some(master) = node.transcode.master(&key, wait.saturating_sub(started.elapsed())).await {
                return playlist(master.into(), false);
            }
        }
        return playlist(with_rendition_reports(node, &key, file, media).await, false);
    }
    let content_type = match file.rsplit_once('.').map(|(_, ext)| ext) {
        Some("ts") => "video/mp2t",
        Some("m4s") => "video/iso.segment",
        Some("mp4") => "video/mp4",
        _ => "",
    };
    let valid = file.len() <= 96
        && !content_type.is_empty()
        && file.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.');
    if !valid {
        return bad_request(format!("invalid segment name {:?}", file.chars().take(64).collect::<String>()));
    }
    // A preload-hinted part goes out chunk by chunk as it is produced (on another node: as this node follows the
    // owner's); with `hls.stream_hinted_parts = false` it is held until it is complete (at most a few part targets).
    let wait = Duration::from_millis(u64::from(node.config.hls.part_target_ms) * 6);
    if let Some(body) = growing_part(&stream, file, wait, node).await {
        return (
            [(header::CONTENT_TYPE, content_type), (header::CACHE_CONTROL, "public, max-age=3600, immutable")],
            body,
        )
            .into_response();
    }
    let mut data = stream.file(file, wait, &node.metrics).await;
    if data.is_none() && node.left_cluster.load(std::sync::atomic::Ordering::Relaxed) {
        return handed_over();
    }
    if let (None, Some(c), HlsSource::Local(_)) = (&data, &node.cluster, &stream) {
        // A file of the previous owner's window, which this node lists first since it took the stream over: copied
        // from that owner when it did, or fetched now from whichever node still has it.
        if stream.current().is_some_and(|p| crate::formats::playlist::names_file(&p, file)) {
            data = c.earlier_file(&key, file).await;
        }
    }
    if data.is_none() && stream.current().is_some_and(|p| crate::formats::playlist::names_file(&p, file)) {
        // A player will fail on it (a 404 for what the playlist promised): worth an operator's look.
        tracing::warn!(stream = %key, file, owned_here = matches!(stream, HlsSource::Local(_)), "a file the playlist lists could not be served");
    }
    match data {
        Some(data) => {
            node.metrics.egress_bytes.with_label_values(&[crate::metrics::protocol::HLS]).inc_by(data.len() as u64);
            (
                [(header::CONTENT_TYPE, content_type), (header::CACHE_CONTROL, "public, max-age=3600, immutable")],
                Body::from(data),
            )
                .into_response()
        }
        None => not_found(),
    }
}

/// The preload-hinted part `file`, answered while it is produced (on another node: followed from the owner): a
/// body of its chunks, each sent as the packager completes it, ending when the part is complete (chunked transfer
/// over HTTP/1.1, DATA frames over HTTP/2). `None` when `file` is not such a part, or when it completed (or did not
/// start) within `wait`: it is then served whole, or not found, as any file.
async fn growing_part(stream: &HlsSource, file: &str, wait: Duration, node: &NodeContext) -> Option<Body> {
    let mut rx = stream.growing(file, wait)?;
    let started = std::time::Instant::now();
    node.metrics.hls_parked.inc();
    let first =
        tokio::time::timeout(wait, rx.wait_for(|g| !g.chunks.is_empty() || g.done)).await.map(|g| g.map(|g| g.done));
    node.metrics.hls_parked.dec();
    node.metrics.hls_block_wait.observe(started.elapsed().as_secs_f64());
    if !matches!(first, Ok(Ok(false))) {
        return None; // complete already (listed whole), or never started (the publisher left, the stream ended)
    }
    let egress = node.metrics.egress_bytes.with_label_values(&[crate::metrics::protocol::HLS]);
    // Each chunk is due within `wait` of the one before it; a part that stops growing (its stream is gone) ends
    // the answer with an error, so the player sees a cut transfer rather than a short part.
    let chunks = futures_util::stream::unfold(Some((rx, 0usize)), move |state| {
        let egress = egress.clone();
        async move {
            let (mut rx, sent) = state?;
            loop {
                let (next, done) = {
                    let g = rx.borrow_and_update();
                    (g.chunks.get(sent).cloned(), g.done)
                };
                if let Some(chunk) = next {
                    egress.inc_by(chunk.len() as u64);
                    return Some((Ok(chunk), Some((rx, sent + 1))));
                }
                if done {
                    return None;
                }
                match tokio::time::timeout(wait, rx.changed()).await {
                    Ok(Ok(())) => {}
                    _ => return Some((Err(std::io::Error::other("the part stopped before it was complete")), None)),
                }
            }
        }
    });
    Some(Body::from_stream(chunks))
}

async fn cluster(State(node): State<Arc<NodeContext>>) -> Response {
    match &node.cluster {
        Some(c) => Json(c.status()).into_response(),
        None => Json(serde_json::json!({
            "enabled": false,
            "node": node.config.node_name,
            "peers": [],
        }))
        .into_response(),
    }
}
