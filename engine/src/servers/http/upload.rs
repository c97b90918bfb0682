//! VOD uploads and the jobs API over HTTP (see [`crate::transcode::vod`]).
//!
//! | route | what |
//! |---|---|
//! | `POST /api/v1/vod` | `multipart/form-data` with a field `file` (`curl -F file=@bunny.mp4`); text fields `rungs` (`1080,720,480`) or `profile`, or the same as query parameters: 202, the asset and the job, `Location: /api/v1/jobs/{id}`; or JSON `{"source": "recording:<id>", "rungs": ...}`: a recording transcoded the same way |
//! | `PUT /api/v1/vod/upload/{name}` | the file as the raw body (`curl -T bunny.mp4`), `?rungs=` or `?profile=`: the same answer |
//! | `GET /api/v1/jobs`, `GET /api/v1/jobs/{id}` | the jobs (newest first, without chunk tables); one job with its chunks |
//! | `POST /api/v1/jobs/{id}/cancel`, `POST /api/v1/jobs/{id}/retry` | stop a running job; start a failed or cancelled one again |
//!
//! Bodies are streamed to storage as they arrive (memory stays at a few multipart parts, see
//! [`crate::storage::Storage::put_stream`]); a body over `vod.max_upload_bytes` is refused with 413, before a
//! byte is read when its `Content-Length` says so.

use std::collections::HashMap;
use std::sync::Arc;

use axum::extract::{FromRequest, Path, Query, Request, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use futures_util::TryStreamExt;

use crate::servers::NodeContext;
use crate::transcode::vod::{ladder_of, UploadError};

fn error(status: u16, msg: String) -> Response {
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    (status, Json(serde_json::json!({ "error": msg }))).into_response()
}

fn upload_error(e: UploadError) -> Response {
    error(e.status(), e.to_string())
}

fn too_large(node: &NodeContext, req: &Request) -> Option<Response> {
    let max = node.config.vod.max_upload_bytes;
    let declared = req.headers().get(header::CONTENT_LENGTH)?.to_str().ok()?.parse::<u64>().ok()?;
    (declared > max).then(|| upload_error(UploadError::TooLarge(max)))
}

fn accepted(asset: crate::storage::asset::Asset, job: crate::transcode::vod::plan::Job) -> Response {
    let location = format!("/api/v1/jobs/{}", job.id);
    let body = serde_json::json!({
        "asset_id": asset.id,
        "job_id": job.id,
        "playlist": format!("/vod/{}/index.m3u8", asset.id),
        "asset": asset,
        "job": job.summary(),
    });
    (StatusCode::ACCEPTED, [(header::LOCATION, location)], Json(body)).into_response()
}

/// `PUT /api/v1/vod/upload/{name}`.
pub async fn put(
    State(node): State<Arc<NodeContext>>,
    Path(name): Path<String>,
    Query(q): Query<HashMap<String, String>>,
    req: Request,
) -> Response {
    if let Some(r) = too_large(&node, &req) {
        return r;
    }
    let ladder =
        match ladder_of(q.get("rungs").map(String::as_str), q.get("profile").map(String::as_str), &node.config.vod) {
            Ok(l) => l,
            Err(e) => return upload_error(e),
        };
    let body = req.into_body().into_data_stream();
    match node.jobs.store(&name, body).await {
        Ok(stored) => match node.jobs.accept(stored, ladder).await {
            Ok((asset, job)) => accepted(asset, job),
            Err(e) => upload_error(e),
        },
        Err(e) => upload_error(e),
    }
}

/// `POST /api/v1/vod`: a multipart upload.
pub async fn post(
    State(node): State<Arc<NodeContext>>,
    Query(q): Query<HashMap<String, String>>,
    req: Request,
) -> Response {
    if let Some(r) = too_large(&node, &req) {
        return r;
    }
    let content_type = req.headers().get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("");
    if content_type.starts_with("application/json") {
        return from_recording(&node, &q, req).await;
    }
    if !content_type.starts_with("multipart/form-data") {
        return error(415, "send multipart/form-data with a field `file` (curl -F file=@video.mp4)".into());
    }
    let mut multipart = match axum::extract::Multipart::from_request(req, &()).await {
        Ok(m) => m,
        Err(e) => return error(400, format!("not a multipart body: {e}")),
    };
    let (mut rungs, mut profile) = (q.get("rungs").cloned(), q.get("profile").cloned());
    let mut stored = None;
    let bad = |e: String| error(400, format!("malformed multipart body: {e}"));
    loop {
        let field = match multipart.next_field().await {
            Ok(Some(f)) => f,
            Ok(None) => break,
            Err(e) => {
                if let Some(s) = stored {
                    node.jobs.discard(s).await;
                }
                return bad(e.to_string());
            }
        };
        match field.name().unwrap_or("") {
            name @ ("rungs" | "profile") => {
                let is_rungs = name == "rungs";
                let text = match field.text().await {
                    Ok(t) if t.len() <= 256 => t,
                    Ok(_) => return error(400, "form field too long".into()),
                    Err(e) => return bad(e.to_string()),
                };
                if is_rungs {
                    rungs = Some(text);
                } else {
                    profile = Some(text);
                }
            }
            "file" if stored.is_none() => {
                let name = field.file_name().unwrap_or("upload.bin").to_string();
                let body = field.map_err(|e| e.to_string());
                match node.jobs.store(&name, body).await {
                    Ok(s) => stored = Some(s),
                    Err(e) => return upload_error(e),
                }
            }
            _ => {} // other fields are skipped
        }
    }
    let Some(stored) = stored else {
        return error(400, "no field `file` in the form (curl -F file=@video.mp4)".into());
    };
    let ladder = match ladder_of(rungs.as_deref(), profile.as_deref(), &node.config.vod) {
        Ok(l) => l,
        Err(e) => {
            node.jobs.discard(stored).await;
            return upload_error(e);
        }
    };
    match node.jobs.accept(stored, ladder).await {
        Ok((asset, job)) => accepted(asset, job),
        Err(e) => upload_error(e),
    }
}

/// `POST /api/v1/vod` with JSON `{"source": "recording:<id>", "rungs": "720,360" | [720, 360], "profile": ...}`.
async fn from_recording(node: &NodeContext, q: &HashMap<String, String>, req: Request) -> Response {
    let body = match axum::body::to_bytes(req.into_body(), 64 << 10).await {
        Ok(b) => b,
        Err(e) => return error(400, format!("the JSON body is unreadable or over 64 KiB: {e}")),
    };
    let v: serde_json::Value = match serde_json::from_slice(&body) {
        Ok(v) => v,
        Err(e) => return error(400, format!("not JSON: {e}")),
    };
    let Some(id) = v["source"].as_str().and_then(|s| s.strip_prefix("recording:")) else {
        return error(400, "give {\"source\": \"recording:<asset id>\"} (or upload a file as multipart)".into());
    };
    let rungs = match &v["rungs"] {
        serde_json::Value::String(s) => Some(s.clone()),
        serde_json::Value::Array(a) => Some(a.iter().map(|h| h.to_string()).collect::<Vec<_>>().join(",")),
        _ => q.get("rungs").cloned(),
    };
    let profile = v["profile"].as_str().map(str::to_string).or_else(|| q.get("profile").cloned());
    let ladder = match ladder_of(rungs.as_deref(), profile.as_deref(), &node.config.vod) {
        Ok(l) => l,
        Err(e) => return upload_error(e),
    };
    match node.jobs.from_recording(id, ladder).await {
        Ok((asset, job)) => accepted(asset, job),
        Err(e) => upload_error(e),
    }
}

/// `GET /api/v1/jobs`.
pub async fn list(State(node): State<Arc<NodeContext>>) -> Response {
    match node.jobs.list().await {
        Ok(jobs) => Json(serde_json::json!({ "jobs": jobs })).into_response(),
        Err(e) => upload_error(e),
    }
}

/// `GET /api/v1/jobs/{id}`.
pub async fn get(State(node): State<Arc<NodeContext>>, Path(id): Path<String>) -> Response {
    match node.jobs.get(&id).await {
        Some(job) => Json(job).into_response(),
        None => error(404, format!("no job {:?}", id.chars().take(64).collect::<String>())),
    }
}

/// `POST /api/v1/jobs/{id}/{action}`: `cancel` or `retry`.
pub async fn action(State(node): State<Arc<NodeContext>>, Path((id, action)): Path<(String, String)>) -> Response {
    let r = match action.as_str() {
        "cancel" => node.jobs.cancel(&id).await.map(|j| (StatusCode::OK, j)),
        "retry" => node.jobs.retry(&id).await.map(|j| (StatusCode::ACCEPTED, j)),
        _ => return (StatusCode::NOT_FOUND, "not found\n").into_response(),
    };
    match r {
        Ok((status, job)) => (status, Json(job.summary())).into_response(),
        Err((status, why)) => error(status, why),
    }
}
