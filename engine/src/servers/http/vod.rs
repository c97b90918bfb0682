//! Recordings and VOD over HTTP (see [`crate::storage`]).
//!
//! | route | what |
//! |---|---|
//! | `POST /api/v1/streams/{app}/{name}/record` | start recording a live stream of this node: 201 and the asset; 409 if it is recorded already |
//! | `DELETE /api/v1/streams/{app}/{name}/record` | stop it at its last finished segment: 200 and the asset |
//! | `GET /api/v1/vod` | every asset on storage, newest first |
//! | `GET /api/v1/vod/{id}`, `DELETE /api/v1/vod/{id}` | one asset; delete it (stopping its recording) |
//! | `GET /vod/{id}/index.m3u8` | its playlist (`EVENT` while recording, `VOD` once done) |
//! | `GET /vod/{id}/{rendition}/{file}` | its segments and init segments |
//! | `GET /vod/{id}.mp4` | the recording as one fragmented MP4 file (remuxed, not re-encoded) |

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use bytes::Bytes;

use crate::servers::NodeContext;
use crate::storage::api::ApiAnswer;
use crate::storage::recorder::{Mp4Export, RecordError};
use crate::stream::StreamKey;

fn error(status: StatusCode, msg: String) -> Response {
    (status, Json(serde_json::json!({ "error": msg }))).into_response()
}

fn record_error(e: RecordError) -> Response {
    answer(ApiAnswer::error(&e))
}

/// An answer made by the storage layer (here or on another node), sent as it is.
fn answer(a: ApiAnswer) -> Response {
    let status = StatusCode::from_u16(a.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    if a.body.is_empty() {
        return status.into_response();
    }
    (status, [(header::CONTENT_TYPE, "application/json")], Body::from(a.body)).into_response()
}

fn key_of(app: &str, name: &str) -> Result<StreamKey, Box<Response>> {
    StreamKey::new(app, name).map_err(|e| Box::new(error(StatusCode::BAD_REQUEST, e.to_string())))
}

/// `POST /api/v1/streams/{app}/{name}/record`.
pub async fn record_start(State(node): State<Arc<NodeContext>>, Path((app, name)): Path<(String, String)>) -> Response {
    match key_of(&app, &name) {
        Ok(key) => answer(node.recordings.record_api(&key, true).await),
        Err(r) => *r,
    }
}

/// `DELETE /api/v1/streams/{app}/{name}/record`.
pub async fn record_stop(State(node): State<Arc<NodeContext>>, Path((app, name)): Path<(String, String)>) -> Response {
    match key_of(&app, &name) {
        Ok(key) => answer(node.recordings.record_api(&key, false).await),
        Err(r) => *r,
    }
}

/// `GET /api/v1/vod`.
pub async fn list(State(node): State<Arc<NodeContext>>) -> Response {
    answer(node.recordings.list_api().await)
}

/// `GET /api/v1/vod/{id}`.
pub async fn get(State(node): State<Arc<NodeContext>>, Path(id): Path<String>) -> Response {
    answer(node.recordings.asset_api(&id).await)
}

/// `DELETE /api/v1/vod/{id}`.
pub async fn delete(State(node): State<Arc<NodeContext>>, Path(id): Path<String>) -> Response {
    // An upload whose job runs here: the job stops first (its chunks write nothing more).
    let _ = node.jobs.cancel_if_running(&id).await;
    answer(node.recordings.delete_api(&id).await)
}

fn media(content_type: &'static str, cache: &'static str, data: Bytes) -> Response {
    ([(header::CONTENT_TYPE, content_type), (header::CACHE_CONTROL, cache)], Body::from(data)).into_response()
}

/// `GET /vod/{id}/{file}`: the playlist (`index.m3u8`).
pub async fn top(State(node): State<Arc<NodeContext>>, Path((id, file)): Path<(String, String)>) -> Response {
    if file != "index.m3u8" {
        return (StatusCode::NOT_FOUND, "not found\n").into_response();
    }
    match node.recordings.vod_file(&id, "index.m3u8").await {
        // A growing recording's playlist changes with each segment; a finished one never does.
        Ok(Some(text)) => {
            let cache =
                if text.windows(14).any(|w| w == b"#EXT-X-ENDLIST") { "public, max-age=60" } else { "no-cache" };
            media("application/vnd.apple.mpegurl", cache, text)
        }
        Ok(None) => (StatusCode::NOT_FOUND, "not found\n").into_response(),
        Err(e) => record_error(e),
    }
}

/// `GET /vod/{id}/{rendition}/{file}`.
pub async fn file(
    State(node): State<Arc<NodeContext>>,
    Path((id, rendition, file)): Path<(String, String, String)>,
) -> Response {
    let content_type = match file.rsplit_once('.').map(|(_, e)| e) {
        Some("m4s") => "video/iso.segment",
        Some("mp4") => "video/mp4",
        Some("ts") => "video/mp2t",
        Some("m3u8") => "application/vnd.apple.mpegurl",
        _ => return (StatusCode::NOT_FOUND, "not found\n").into_response(),
    };
    let cache = if file.ends_with(".m3u8") { "no-cache" } else { "public, max-age=86400, immutable" };
    match node.recordings.vod_file(&id, &format!("{rendition}/{file}")).await {
        Ok(Some(data)) => {
            node.metrics.egress_bytes.with_label_values(&[crate::metrics::protocol::HLS]).inc_by(data.len() as u64);
            media(content_type, cache, data)
        }
        Ok(None) => (StatusCode::NOT_FOUND, "not found\n").into_response(),
        Err(e) => record_error(e),
    }
}

/// `GET /vod/{id}.mp4`: streamed object by object (memory stays at one segment).
pub async fn mp4(State(node): State<Arc<NodeContext>>, Path(file): Path<String>) -> Response {
    let Some(id) = file.strip_suffix(".mp4") else {
        return (StatusCode::NOT_FOUND, "not found\n").into_response();
    };
    // The parts, as JSON (made where the asset is, see `Recordings::vod_file`).
    let listed = match node.recordings.vod_file(id, "mp4").await {
        Ok(Some(json)) => serde_json::from_slice::<Result<Mp4Export, String>>(&json),
        Ok(None) => return (StatusCode::NOT_FOUND, "not found\n").into_response(),
        Err(e) => return record_error(e),
    };
    let export = match listed {
        Ok(Ok(p)) => p,
        Ok(Err(why)) => return error(StatusCode::CONFLICT, why),
        Err(e) => return error(StatusCode::BAD_GATEWAY, format!("unreadable MP4 part list: {e}")),
    };
    // The init segment goes first, made to declare the whole duration (players show it and seek at once).
    let Some((init_path, _)) = export.parts.first().cloned() else {
        return error(StatusCode::CONFLICT, "the recording has no segment".into());
    };
    let init = match node.recordings.vod_file(id, &init_path).await {
        Ok(Some(b)) => crate::formats::fmp4::with_duration(&b, export.duration).unwrap_or(b),
        Ok(None) => return (StatusCode::NOT_FOUND, "not found\n").into_response(),
        Err(e) => return record_error(e),
    };
    let total: u64 = init.len() as u64 + export.parts.iter().skip(1).map(|(_, s)| s).sum::<u64>();
    let mut rest = export.parts.into_iter().skip(1);
    let first = futures_util::stream::once(async move { Ok::<_, std::io::Error>(init) });
    let rec = node.recordings.clone();
    let id = id.to_string();
    let segments = futures_util::stream::unfold((), move |()| {
        let next = rest.next();
        let (rec, id) = (rec.clone(), id.clone());
        async move {
            let (path, _) = next?;
            let item = match rec.vod_file(&id, &path).await {
                Ok(Some(b)) => Ok(b),
                Ok(None) => Err(std::io::Error::other(format!("{path} is gone"))),
                Err(e) => Err(std::io::Error::other(e.to_string())),
            };
            Some((item, ()))
        }
    });
    let body = futures_util::StreamExt::chain(first, segments);
    (
        [
            (header::CONTENT_TYPE, "video/mp4".to_string()),
            (header::CONTENT_LENGTH, total.to_string()),
            (header::CACHE_CONTROL, "public, max-age=60".to_string()),
        ],
        Body::from_stream(body),
    )
        .into_response()
}
