//! Storage: recordings that outlive the live window, on a local directory or S3-compatible object storage.
//!
//! - [`Storage`] is the one interface, over the `object_store` crate: `storage.path` (a local directory, the
//!   default) or `storage.url = "s3://bucket/prefix"`. Every put is atomic (a local file is written aside and
//!   renamed; an S3 object appears whole), retried with backoff, timed (`strom_storage_seconds{op}`) and its
//!   failures counted (`strom_storage_errors_total{op}`).
//! - [`asset`] (pure): what a recording is on storage: its object names, its VOD playlist and its
//!   `asset.json`, and how a recording cut short is listed again from its objects alone.
//! - [`recorder`]: the recordings of this node: one tokio task per recorded stream that follows the segmenter's
//!   published view and writes each finished segment; the asset API's reads; retention.
//! - [`api`]: the same API from any node of a cluster: recordings started on the stream's owner, assets on
//!   local volumes listed from every node and read through the node holding them.
//!
//! A recording never touches the live path: it reads segments the segmenter has already published (shared
//! `Bytes`), so a slow or unreachable store delays nothing but the recording itself.

pub mod api;
pub mod asset;
pub mod recorder;

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::StreamExt;
use object_store::path::Path as ObjectPath;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};
use prometheus::{HistogramOpts, HistogramVec, IntCounterVec, Opts};
use tracing::{debug, info};

use crate::config::StorageConfig;
use crate::metrics::Metrics;

/// Attempts per write before it counts as failed (the caller keeps the data and tries again later).
const PUT_ATTEMPTS: u32 = 3;
/// Longest one storage operation may take.
const OP_TIMEOUT: Duration = Duration::from_secs(20);
/// Part size of a streamed upload ([`Storage::put_stream`]).
pub const PART_SIZE: usize = 8 << 20;
/// Parts of one streamed upload sent at once.
pub const PARTS_IN_FLIGHT: usize = 2;

/// A storage failure, with the operation and object it concerns.
#[derive(Debug, Clone, thiserror::Error)]
#[error("storage {op} {object}: {reason}")]
pub struct StorageError {
    /// `put`, `get`, `list` or `delete`.
    pub op: &'static str,
    /// The object (or prefix).
    pub object: String,
    /// What went wrong.
    pub reason: String,
}

/// Storage metrics: registered when the node starts (every series is there for Prometheus from the first
/// scrape, storage used or not), shared by the [`Storage`] opened later.
#[derive(Clone)]
pub struct StorageMetrics {
    seconds: HistogramVec,
    errors: IntCounterVec,
}

impl StorageMetrics {
    /// Registers `strom_storage_seconds{op}` and `strom_storage_errors_total{op}`.
    pub fn new(metrics: &Metrics) -> StorageMetrics {
        let seconds = metrics.register(
            HistogramVec::new(
                HistogramOpts::new("strom_storage_seconds", "Storage operations' latency, by operation.")
                    .buckets(vec![0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0]),
                &["op"],
            )
            .expect("valid metric"),
        );
        let errors = metrics.register(
            IntCounterVec::new(
                Opts::new("strom_storage_errors_total", "Storage operations that failed, by operation."),
                &["op"],
            )
            .expect("valid metric"),
        );
        for op in ["put", "get", "list", "delete"] {
            errors.with_label_values(&[op]);
            seconds.with_label_values(&[op]);
        }
        StorageMetrics { seconds, errors }
    }
}

/// The node's storage (see the module docs); cheap to clone.
#[derive(Clone)]
pub struct Storage {
    store: Arc<dyn ObjectStore>,
    /// Key prefix inside the store (the S3 URL's path), without slashes at either end; may be empty.
    prefix: String,
    /// For logs: the directory or URL.
    describe: String,
    metrics: StorageMetrics,
    /// Where objects are read from outside object_store ([`Storage::read_url`]).
    reader: Reader,
}

/// How FFmpeg (or any reader outside object_store) reaches an object.
#[derive(Clone)]
enum Reader {
    /// A local directory: the file itself.
    Local(std::path::PathBuf),
    /// S3: a presigned GET URL (range requests read only what is needed).
    S3(Arc<object_store::aws::AmazonS3>),
}

impl Storage {
    /// Opens the configured backend (creating the local directory when missing).
    pub fn open(config: &StorageConfig, metrics: StorageMetrics) -> Result<Storage, StorageError> {
        let fail =
            |object: String, e: &dyn std::fmt::Display| StorageError { op: "open", object, reason: e.to_string() };
        let (store, prefix, describe, reader): (Arc<dyn ObjectStore>, String, String, Reader) = match &config.url {
            Some(url) => {
                let rest = url.strip_prefix("s3://").unwrap_or(url);
                let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
                let retry = object_store::RetryConfig {
                    max_retries: 2,
                    retry_timeout: Duration::from_secs(10),
                    backoff: object_store::BackoffConfig::default(),
                };
                // These options replace the ones `from_env` read, so `AWS_ALLOW_HTTP` is applied here again.
                let allow_http =
                    std::env::var("AWS_ALLOW_HTTP").is_ok_and(|v| v.eq_ignore_ascii_case("true") || v == "1");
                let options = object_store::ClientOptions::new()
                    .with_allow_http(allow_http)
                    .with_timeout(Duration::from_secs(15))
                    .with_connect_timeout(Duration::from_secs(3));
                let s3 = object_store::aws::AmazonS3Builder::from_env()
                    .with_bucket_name(bucket)
                    .with_retry(retry)
                    .with_client_options(options)
                    .build()
                    .map_err(|e| fail(url.clone(), &e))?;
                let s3 = Arc::new(s3);
                (s3.clone(), prefix.trim_matches('/').to_string(), url.clone(), Reader::S3(s3))
            }
            None => {
                std::fs::create_dir_all(&config.path).map_err(|e| fail(config.path.display().to_string(), &e))?;
                let local = object_store::local::LocalFileSystem::new_with_prefix(&config.path)
                    .map_err(|e| fail(config.path.display().to_string(), &e))?
                    .with_automatic_cleanup(true);
                let base = std::fs::canonicalize(&config.path).unwrap_or_else(|_| config.path.clone());
                (Arc::new(local), String::new(), config.path.display().to_string(), Reader::Local(base))
            }
        };
        info!(storage = %describe, "storage opened");
        Ok(Storage { store, prefix, describe, metrics, reader })
    }

    /// The directory or URL, for logs and the API.
    pub fn describe(&self) -> &str {
        &self.describe
    }

    /// What a reader outside object_store (FFmpeg) opens to read `key`: the local file's path, or a presigned
    /// S3 URL valid for `valid_for` (FFmpeg reads it with range requests, so a reader of one chunk fetches
    /// that chunk's bytes, not the object).
    pub async fn read_url(&self, key: &str, valid_for: Duration) -> Result<String, StorageError> {
        let path = self.path(key)?;
        match &self.reader {
            Reader::Local(base) => Ok(base.join(path.as_ref()).display().to_string()),
            Reader::S3(s3) => {
                use object_store::signer::Signer;
                let url = s3
                    .signed_url(object_store::signer::Method::GET, &path, valid_for)
                    .await
                    .map_err(|e| StorageError { op: "sign", object: key.into(), reason: e.to_string() })?;
                Ok(url.to_string())
            }
        }
    }

    fn path(&self, key: &str) -> Result<ObjectPath, StorageError> {
        let full = if self.prefix.is_empty() { key.to_string() } else { format!("{}/{key}", self.prefix) };
        ObjectPath::parse(&full).map_err(|e| StorageError { op: "path", object: key.into(), reason: e.to_string() })
    }

    fn timed<T>(&self, op: &'static str, started: Instant, r: &Result<T, StorageError>) {
        self.metrics.seconds.with_label_values(&[op]).observe(started.elapsed().as_secs_f64());
        if r.is_err() {
            self.metrics.errors.with_label_values(&[op]).inc();
        }
    }

    /// Writes `data` at `key` atomically, retrying with backoff (0.25 s, then 1 s) before it gives up.
    pub async fn put(&self, key: &str, data: Bytes) -> Result<(), StorageError> {
        let path = self.path(key)?;
        let mut attempt = 0;
        loop {
            let started = Instant::now();
            let r = match tokio::time::timeout(OP_TIMEOUT, self.store.put(&path, PutPayload::from_bytes(data.clone())))
                .await
            {
                Ok(Ok(_)) => Ok(()),
                Ok(Err(e)) => Err(StorageError { op: "put", object: key.into(), reason: e.to_string() }),
                Err(_) => Err(StorageError { op: "put", object: key.into(), reason: "timed out".into() }),
            };
            self.timed("put", started, &r);
            attempt += 1;
            match r {
                Err(e) if attempt < PUT_ATTEMPTS => {
                    debug!(error = %e, attempt, "storage put failed; retrying");
                    tokio::time::sleep(Duration::from_millis(250 * 4u64.pow(attempt - 1))).await;
                }
                r => return r,
            }
        }
    }

    /// Writes a large object streamed from `body` as a multipart upload: parts of [`PART_SIZE`], at most
    /// [`PARTS_IN_FLIGHT`] sent at once, so memory stays at a few parts whatever the object's size. Atomic: the
    /// object appears whole when the upload completes (a local file is written aside and renamed); a body that
    /// fails (an `Err` item: a client gone, a size cap passed) or a failed part aborts it and leaves nothing.
    /// Not retried (the body cannot be read twice): the caller reports the error. Returns the bytes written.
    pub async fn put_stream<S, E>(&self, key: &str, mut body: S) -> Result<u64, StorageError>
    where
        S: futures_util::Stream<Item = Result<Bytes, E>> + Unpin,
        E: std::fmt::Display,
    {
        let path = self.path(key)?;
        let started = Instant::now();
        let fail = |reason: String| StorageError { op: "put", object: key.into(), reason };
        let r = async {
            let upload = match tokio::time::timeout(OP_TIMEOUT, self.store.put_multipart(&path)).await {
                Ok(r) => r.map_err(|e| fail(e.to_string()))?,
                Err(_) => return Err(fail("timed out".into())),
            };
            let mut writer = object_store::WriteMultipart::new_with_chunk_size(upload, PART_SIZE);
            let mut total = 0u64;
            loop {
                let item = match tokio::time::timeout(OP_TIMEOUT, body.next()).await {
                    Ok(Some(Ok(b))) => b,
                    Ok(None) => break,
                    Ok(Some(Err(e))) => {
                        let _ = writer.abort().await;
                        return Err(fail(format!("the body failed after {total} bytes: {e}")));
                    }
                    Err(_) => {
                        let _ = writer.abort().await;
                        return Err(fail(format!("the body stalled after {total} bytes")));
                    }
                };
                if let Err(e) = tokio::time::timeout(OP_TIMEOUT, writer.wait_for_capacity(PARTS_IN_FLIGHT)).await {
                    let _ = writer.abort().await;
                    return Err(fail(format!("a part timed out: {e}")));
                }
                total += item.len() as u64;
                writer.put(item);
            }
            match tokio::time::timeout(OP_TIMEOUT, writer.finish()).await {
                Ok(Ok(_)) => Ok(total),
                Ok(Err(e)) => Err(fail(e.to_string())),
                Err(_) => Err(fail("completing the upload timed out".into())),
            }
        }
        .await;
        self.timed("put", started, &r);
        r
    }

    /// The object at `key`; `Ok(None)` when there is none.
    pub async fn get(&self, key: &str) -> Result<Option<Bytes>, StorageError> {
        let path = self.path(key)?;
        let started = Instant::now();
        let fetch = async {
            match self.store.get(&path).await {
                Ok(r) => r.bytes().await.map(Some),
                Err(object_store::Error::NotFound { .. }) => Ok(None),
                Err(e) => Err(e),
            }
        };
        let r = match tokio::time::timeout(OP_TIMEOUT, fetch).await {
            Ok(r) => r.map_err(|e| StorageError { op: "get", object: key.into(), reason: e.to_string() }),
            Err(_) => Err(StorageError { op: "get", object: key.into(), reason: "timed out".into() }),
        };
        self.timed("get", started, &r);
        r
    }

    /// Up to `max` bytes of the object at `key` from `offset`, with the object's size; `Ok(None)` when there is
    /// no such object. An offset at or past the end gives no bytes.
    pub async fn get_range(&self, key: &str, offset: u64, max: u64) -> Result<Option<(u64, Bytes)>, StorageError> {
        let path = self.path(key)?;
        let started = Instant::now();
        let fetch = async {
            let size = match self.store.head(&path).await {
                Ok(meta) => meta.size,
                Err(object_store::Error::NotFound { .. }) => return Ok(None),
                Err(e) => return Err(e),
            };
            let end = offset.saturating_add(max).min(size);
            if offset >= end {
                return Ok(Some((size, Bytes::new())));
            }
            self.store.get_range(&path, offset..end).await.map(|b| Some((size, b)))
        };
        let r = match tokio::time::timeout(OP_TIMEOUT, fetch).await {
            Ok(r) => r.map_err(|e| StorageError { op: "get", object: key.into(), reason: e.to_string() }),
            Err(_) => Err(StorageError { op: "get", object: key.into(), reason: "timed out".into() }),
        };
        self.timed("get", started, &r);
        r
    }

    /// Every object under `prefix` (a folder, without a trailing slash): names relative to it, and sizes.
    pub async fn list(&self, prefix: &str) -> Result<Vec<(String, u64)>, StorageError> {
        let path = self.path(prefix)?;
        let started = Instant::now();
        let strip = format!("{}/", path.as_ref());
        let collect = async {
            let mut out = Vec::new();
            let mut items = self.store.list(Some(&path));
            while let Some(item) = items.next().await {
                let meta = item?;
                let name = meta.location.as_ref().strip_prefix(&strip).unwrap_or(meta.location.as_ref()).to_string();
                out.push((name, meta.size));
            }
            Ok::<_, object_store::Error>(out)
        };
        let r = match tokio::time::timeout(OP_TIMEOUT, collect).await {
            Ok(r) => r.map_err(|e| StorageError { op: "list", object: prefix.into(), reason: e.to_string() }),
            Err(_) => Err(StorageError { op: "list", object: prefix.into(), reason: "timed out".into() }),
        };
        self.timed("list", started, &r);
        r
    }

    /// The folders directly under `prefix` (their names only).
    pub async fn folders(&self, prefix: &str) -> Result<Vec<String>, StorageError> {
        let path = self.path(prefix)?;
        let started = Instant::now();
        let r = match tokio::time::timeout(OP_TIMEOUT, self.store.list_with_delimiter(Some(&path))).await {
            Ok(Ok(l)) => {
                Ok(l.common_prefixes.iter().filter_map(|p| p.as_ref().rsplit('/').next().map(String::from)).collect())
            }
            Ok(Err(e)) => Err(StorageError { op: "list", object: prefix.into(), reason: e.to_string() }),
            Err(_) => Err(StorageError { op: "list", object: prefix.into(), reason: "timed out".into() }),
        };
        self.timed("list", started, &r);
        r
    }

    /// Deletes every object under `prefix` (a folder).
    pub async fn delete_prefix(&self, prefix: &str) -> Result<(), StorageError> {
        let names = self.list(prefix).await?;
        for (name, _) in names {
            let key = format!("{prefix}/{name}");
            let path = self.path(&key)?;
            let started = Instant::now();
            let r = match tokio::time::timeout(OP_TIMEOUT, self.store.delete(&path)).await {
                Ok(Ok(())) | Ok(Err(object_store::Error::NotFound { .. })) => Ok(()),
                Ok(Err(e)) => Err(StorageError { op: "delete", object: key.clone(), reason: e.to_string() }),
                Err(_) => Err(StorageError { op: "delete", object: key.clone(), reason: "timed out".into() }),
            };
            self.timed("delete", started, &r);
            r?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn local(dir: &std::path::Path) -> Storage {
        let config = StorageConfig { path: dir.to_path_buf(), url: None };
        Storage::open(&config, StorageMetrics::new(&Metrics::new())).unwrap()
    }

    #[tokio::test]
    async fn put_get_list_delete_on_a_local_directory() {
        let dir = std::env::temp_dir().join(format!("strom-storage-{}", std::process::id()));
        let s = local(&dir);
        s.put("vod/a/asset.json", Bytes::from_static(b"{}")).await.unwrap();
        s.put("vod/a/source/seg0.m4s", Bytes::from(vec![7u8; 1000])).await.unwrap();
        s.put("vod/b/asset.json", Bytes::from_static(b"{}")).await.unwrap();
        let mut folders = s.folders("vod").await.unwrap();
        folders.sort();
        assert_eq!(folders, vec!["a".to_string(), "b".to_string()]);
        assert!(s.folders("nothing-here").await.unwrap().is_empty());
        assert_eq!(s.get("vod/a/asset.json").await.unwrap().as_deref(), Some(&b"{}"[..]));
        assert_eq!(s.get("vod/a/missing").await.unwrap(), None);
        let mut names = s.list("vod/a").await.unwrap();
        names.sort();
        assert_eq!(names, vec![("asset.json".to_string(), 2), ("source/seg0.m4s".to_string(), 1000)]);
        s.delete_prefix("vod/a").await.unwrap();
        assert!(s.list("vod/a").await.unwrap().is_empty());
        assert_eq!(s.list("vod/b").await.unwrap().len(), 1, "others are left alone");
        // No temporary file is left behind (puts are written aside and renamed).
        let leftovers: Vec<_> = walk(&dir).into_iter().filter(|p| !p.ends_with("asset.json")).collect();
        assert!(leftovers.is_empty(), "{leftovers:?}");
        let _ = std::fs::remove_dir_all(&dir);
    }

    fn walk(dir: &std::path::Path) -> Vec<String> {
        let mut out = Vec::new();
        for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
            let p = e.path();
            if p.is_dir() {
                out.extend(walk(&p));
            } else {
                out.push(p.display().to_string());
            }
        }
        out
    }

    #[tokio::test]
    async fn a_streamed_put_is_whole_or_nothing() {
        let dir = std::env::temp_dir().join(format!("strom-storage-stream-{}", std::process::id()));
        let s = local(&dir);
        // 20 MiB in 64 KiB pieces: three parts.
        let piece = |i: usize| Bytes::from(vec![(i % 251) as u8; 64 << 10]);
        let body = futures_util::stream::iter((0..320).map(|i| Ok::<_, String>(piece(i))));
        assert_eq!(s.put_stream("uploads/big.mp4", body).await.unwrap(), 320 * (64 << 10));
        let got = s.get("uploads/big.mp4").await.unwrap().unwrap();
        assert_eq!(got.len(), 320 * (64 << 10));
        assert!(got.chunks(64 << 10).enumerate().all(|(i, c)| c == &piece(i)[..]));
        // A body that fails half-way leaves no object (and no temporary file).
        let failing = futures_util::stream::iter((0..200).map(|i| match i {
            150 => Err("client went away".to_string()),
            i => Ok(piece(i)),
        }));
        let e = s.put_stream("uploads/cut.mp4", failing).await.unwrap_err();
        assert!(e.reason.contains("client went away") && e.object == "uploads/cut.mp4", "{e}");
        assert_eq!(s.get("uploads/cut.mp4").await.unwrap(), None);
        let names: Vec<String> = s.list("uploads").await.unwrap().into_iter().map(|(n, _)| n).collect();
        assert_eq!(names, vec!["big.mp4".to_string()]);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[tokio::test]
    async fn a_failing_put_says_which_object_and_why() {
        let dir = std::env::temp_dir().join(format!("strom-storage-ro-{}", std::process::id()));
        let s = local(&dir);
        // A file where a folder must go: every attempt fails.
        s.put("vod/x", Bytes::from_static(b"file")).await.unwrap();
        let e = s.put("vod/x/asset.json", Bytes::from_static(b"{}")).await.unwrap_err();
        assert_eq!(e.op, "put");
        assert_eq!(e.object, "vod/x/asset.json");
        assert!(!e.reason.is_empty());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
