//! The recordings API from any node of a cluster.
//!
//! - Starting or stopping a recording runs on the stream's owner: a node that does not own the stream asks every
//!   other node ([`VodRequest::Record`]); the owner answers, the others say 404.
//! - With a local volume per node, an asset lives on the node that recorded it. A node lists every node's assets
//!   (its own and [`VodRequest::List`] of each other), and reads an asset it does not hold from its holder
//!   ([`VodRequest::File`], in parts of at most [`FILE_PART`]), learnt once by asking every node
//!   ([`VodRequest::Asset`]). With S3 every node reads the store itself and asks no other node.
//!
//! - DVR: a rung's owner whose segments of a DVR window are recorded on the source's owner (the ladder runs on
//!   another node than the source) reads them from the node recording them ([`VodRequest::Dvr`]).
//!
//! Answers are HTTP answers ([`ApiAnswer`]: status and JSON), made where the data is and passed on unchanged.

use std::time::Duration;

use bytes::Bytes;
use ractor::ActorRef;
use serde::Serialize;

use super::recorder::{RecordError, Recordings};
use crate::cluster::wire::{Request, Response, VodRequest};
use crate::cluster::{call, RemoteMsg};
use crate::formats::StreamKey;

/// Largest part of a file one cluster answer carries.
pub const FILE_PART: u32 = 1 << 20;
/// How long one cluster request may take.
const CALL_TIMEOUT: Duration = Duration::from_secs(15);
/// Largest file read from another node.
const MAX_FILE: u32 = 512 << 20;

/// An HTTP answer: status and JSON body (empty for 204).
#[derive(Debug, Clone, PartialEq)]
pub struct ApiAnswer {
    /// HTTP status.
    pub status: u16,
    /// JSON.
    pub body: Bytes,
}

impl ApiAnswer {
    fn json(status: u16, v: &impl Serialize) -> ApiAnswer {
        ApiAnswer { status, body: Bytes::from(serde_json::to_vec(v).unwrap_or_default()) }
    }

    /// A recording error as the API answers it.
    pub fn error(e: &RecordError) -> ApiAnswer {
        let status = match e {
            RecordError::NoStorage(_) => 503,
            RecordError::NotLive(_) | RecordError::NotRecording(_) => 404,
            RecordError::Already(_) => 409,
            RecordError::Storage(_) => 502,
        };
        ApiAnswer::json(status, &serde_json::json!({ "error": e.to_string() }))
    }

    fn not_found(what: &str) -> ApiAnswer {
        ApiAnswer::json(404, &serde_json::json!({ "error": what }))
    }
}

impl Recordings {
    /// `POST` (`on`) or `DELETE /api/v1/streams/{app}/{name}/record`: here if this node owns the stream, else on
    /// the node that does.
    pub async fn record_api(&self, key: &StreamKey, on: bool) -> ApiAnswer {
        let here = self.record_here(key, on).await;
        if here.status != 404 || self.cluster().is_none() {
            return here;
        }
        let req = Request::Vod(VodRequest::Record { key: key.to_string(), on });
        self.ask_others(&req).await.into_iter().find_map(|(_, r)| api(r).filter(|a| a.status != 404)).unwrap_or(here)
    }

    async fn record_here(&self, key: &StreamKey, on: bool) -> ApiAnswer {
        let r = if on { self.start(key).await } else { self.stop(key).await };
        match r {
            Ok(a) => ApiAnswer::json(if on { 201 } else { 200 }, &a),
            Err(e) => ApiAnswer::error(&e),
        }
    }

    /// `GET /api/v1/vod`: every asset, newest first (with local volumes, every node's).
    pub async fn list_api(&self) -> ApiAnswer {
        let mut assets = match self.list().await {
            Ok(a) => a,
            Err(e) => return ApiAnswer::error(&e),
        };
        if self.cluster().is_some() && !self.shared_storage() {
            for (_, r) in self.ask_others(&Request::Vod(VodRequest::List)).await {
                if let Some(a) = api(r).filter(|a| a.status == 200) {
                    if let Ok(more) = serde_json::from_slice::<Vec<super::asset::Asset>>(&a.body) {
                        for m in more {
                            if !assets.iter().any(|x| x.id == m.id) {
                                assets.push(m);
                            }
                        }
                    }
                }
            }
            assets.sort_by(|a, b| b.started.cmp(&a.started).then_with(|| a.id.cmp(&b.id)));
        }
        ApiAnswer::json(200, &serde_json::json!({ "assets": assets }))
    }

    /// `GET /api/v1/vod/{id}`.
    pub async fn asset_api(&self, id: &str) -> ApiAnswer {
        match self.get(id).await {
            Ok(Some(a)) => return ApiAnswer::json(200, &a),
            Ok(None) => {}
            Err(e) => return ApiAnswer::error(&e),
        }
        match self.holder_of(id).await {
            Some(agent) => match call(&agent, &Request::Vod(VodRequest::Asset { id: id.into() }), CALL_TIMEOUT).await {
                Some(Response::Api { status, body }) => ApiAnswer { status, body },
                _ => ApiAnswer::json(502, &serde_json::json!({ "error": "the node holding the asset did not answer" })),
            },
            None => ApiAnswer::not_found(&format!("no asset {:?}", id.chars().take(64).collect::<String>())),
        }
    }

    /// `DELETE /api/v1/vod/{id}`.
    pub async fn delete_api(&self, id: &str) -> ApiAnswer {
        match self.delete(id).await {
            Ok(true) => return ApiAnswer { status: 204, body: Bytes::new() },
            Ok(false) => {}
            Err(e) => return ApiAnswer::error(&e),
        }
        match self.holder_of(id).await {
            Some(agent) => {
                let answer = call(&agent, &Request::Vod(VodRequest::Delete { id: id.into() }), CALL_TIMEOUT).await;
                self.set_holder(id, None);
                match answer {
                    Some(Response::Api { status, body }) => ApiAnswer { status, body },
                    _ => ApiAnswer::json(
                        502,
                        &serde_json::json!({ "error": "the node holding the asset did not answer" }),
                    ),
                }
            }
            None => ApiAnswer::not_found(&format!("no asset {:?}", id.chars().take(64).collect::<String>())),
        }
    }

    /// A file of an asset: `index.m3u8` (its playlist), `<rendition>/<file>`, or `mp4` (the MP4 export's parts, as
    /// JSON). From this node's storage, else from the node holding the asset.
    pub async fn vod_file(&self, id: &str, path: &str) -> Result<Option<Bytes>, RecordError> {
        if let Some(b) = self.file_here(id, path).await? {
            return Ok(Some(b));
        }
        if self.cluster().is_none() || self.shared_storage() {
            return Ok(None);
        }
        let Some(agent) = self.holder_of(id).await else { return Ok(None) };
        let got = fetch(&agent, id, path).await;
        if got.is_none() {
            self.set_holder(id, None); // gone, or the node restarted: ask again next time
        }
        Ok(got)
    }

    async fn file_here(&self, id: &str, path: &str) -> Result<Option<Bytes>, RecordError> {
        match path {
            "index.m3u8" => self.playlist(id).await,
            "mp4" => {
                Ok(self.mp4_parts(id).await?.map(|parts| Bytes::from(serde_json::to_vec(&parts).unwrap_or_default())))
            }
            p => match p.split_once('/') {
                Some((rendition, name)) => self.file(id, rendition, name).await,
                None => Ok(None),
            },
        }
    }

    /// Another node's request about this node's recordings.
    pub(super) async fn answer(&self, req: VodRequest) -> Response {
        let api = |a: ApiAnswer| Response::Api { status: a.status, body: a.body };
        match req {
            VodRequest::Record { key, on } => match StreamKey::parse(&key) {
                Ok(k) => api(self.record_here(&k, on).await),
                Err(e) => api(ApiAnswer::json(400, &serde_json::json!({ "error": e.to_string() }))),
            },
            VodRequest::List => match self.list().await {
                Ok(a) => api(ApiAnswer::json(200, &a)),
                Err(e) => api(ApiAnswer::error(&e)),
            },
            VodRequest::Asset { id } => match self.get(&id).await {
                Ok(Some(a)) => api(ApiAnswer::json(200, &a)),
                Ok(None) => api(ApiAnswer::not_found("no such asset here")),
                Err(e) => api(ApiAnswer::error(&e)),
            },
            VodRequest::Delete { id } => match self.delete(&id).await {
                Ok(true) => api(ApiAnswer { status: 204, body: Bytes::new() }),
                Ok(false) => api(ApiAnswer::not_found("no such asset here")),
                Err(e) => api(ApiAnswer::error(&e)),
            },
            VodRequest::File { id, path, offset, max } => {
                Response::Segment(part_of(self.file_here(&id, &path).await.ok().flatten(), offset, max))
            }
            VodRequest::Dvr { key, name, offset, max } => {
                let data = match StreamKey::parse(&key) {
                    Ok(k) => self.dvr_here(&k, &name).await,
                    Err(_) => None,
                };
                Response::Segment(part_of(data, offset, max))
            }
        }
    }

    /// A DVR file of stream `key` from the node whose recording holds it (clustering on, local volumes or S3
    /// alike: only that node knows which object a live name became). The node is remembered per stream.
    pub(super) async fn dvr_elsewhere(&self, key: &StreamKey, name: &str) -> Option<Bytes> {
        self.cluster()?;
        let request =
            |offset| Request::Vod(VodRequest::Dvr { key: key.to_string(), name: name.into(), offset, max: FILE_PART });
        let remembered = format!("dvr:{key}");
        if let Some(agent) = self.holder(&remembered) {
            if let Some(b) = crate::cluster::fetch_in_parts(&agent, CALL_TIMEOUT, MAX_FILE, request).await {
                return Some(b);
            }
        }
        let agent = self
            .ask_others(&request(0))
            .await
            .into_iter()
            .find_map(|(agent, r)| matches!(r, Some(Response::Segment(Some(_)))).then_some(agent))?;
        self.set_holder(&remembered, Some(agent.clone()));
        crate::cluster::fetch_in_parts(&agent, CALL_TIMEOUT, MAX_FILE, request).await
    }

    /// The node agent holding asset `id` (not this node): remembered, else asked of every node.
    async fn holder_of(&self, id: &str) -> Option<ActorRef<RemoteMsg>> {
        if self.cluster().is_none() || self.shared_storage() || !super::asset::valid_id(id) {
            return None;
        }
        if let Some(a) = self.holder(id) {
            return Some(a);
        }
        let req = Request::Vod(VodRequest::Asset { id: id.into() });
        let found = self
            .ask_others(&req)
            .await
            .into_iter()
            .find_map(|(agent, r)| api(r).filter(|a| a.status == 200).map(|_| agent))?;
        self.set_holder(id, Some(found.clone()));
        Some(found)
    }

    /// `req` to every other node at once: their agents and answers.
    async fn ask_others(&self, req: &Request) -> Vec<(ActorRef<RemoteMsg>, Option<Response>)> {
        let Some(cluster) = self.cluster() else { return Vec::new() };
        let mut tasks = tokio::task::JoinSet::new();
        for agent in cluster.agents() {
            let req = req.clone();
            tasks.spawn(async move {
                let r = call(&agent, &req, CALL_TIMEOUT).await;
                (agent, r)
            });
        }
        let mut out = Vec::new();
        while let Some(r) = tasks.join_next().await {
            if let Ok(x) = r {
                out.push(x);
            }
        }
        out
    }
}

/// Up to `max` bytes (at most [`FILE_PART`]) of `data` from `offset`, with its whole length.
fn part_of(data: Option<Bytes>, offset: u32, max: u32) -> Option<(u32, Bytes)> {
    let data = data?;
    let start = (offset as usize).min(data.len());
    let end = start.saturating_add(max.min(FILE_PART) as usize).min(data.len());
    Some((u32::try_from(data.len()).ok()?, data.slice(start..end)))
}

fn api(r: Option<Response>) -> Option<ApiAnswer> {
    match r? {
        Response::Api { status, body } => Some(ApiAnswer { status, body }),
        _ => None,
    }
}

/// A whole file from the node holding it, part by part.
async fn fetch(agent: &ActorRef<RemoteMsg>, id: &str, path: &str) -> Option<Bytes> {
    let request = |offset| Request::Vod(VodRequest::File { id: id.into(), path: path.into(), offset, max: FILE_PART });
    crate::cluster::fetch_in_parts(agent, CALL_TIMEOUT, MAX_FILE, request).await
}
