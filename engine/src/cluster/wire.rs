//! The cross-node wire format: every message one node sends another, as bytes, with no I/O.
//!
//! ractor_cluster carries a remote actor's message as `Vec<u8>` fields ([`super::RemoteMsg`]); this module turns
//! those bytes into typed [`Cast`]s, [`Request`]s and [`Response`]s and back. Decoding never panics and never
//! trusts a length: a malformed message is a [`WireError`] naming the field and byte offset, and the receiver drops
//! it (one bad message, not a torn-down link). Media payloads are slices of the received buffer (`Bytes`), so a
//! relayed frame is not copied again on the receiving node. Fuzzed by `engine/fuzz/fuzz_targets/cluster_wire.rs`.
//!
//! Layout: a version byte ([`VERSION`]), a tag byte, then fields: integers big-endian, strings and byte strings as
//! a `u32` length + bytes.

use bytes::{Buf, BufMut, Bytes};

use crate::formats::{MediaFrame, MediaKind};

/// Wire version; a node refuses messages of another version (mixed-version clusters are not supported yet).
pub const VERSION: u8 = 1;

/// Longest string field accepted (stream keys, node names, segment names, reasons).
const MAX_STRING: usize = 4096;

/// A malformed message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("malformed cluster message: {what} at byte {offset}")]
pub struct WireError {
    /// What was being read.
    pub what: &'static str,
    /// Where.
    pub offset: usize,
}

/// One item of relayed media, in stream order.
#[derive(Debug, Clone, PartialEq)]
pub enum RelayItem {
    /// An `onMetaData` AMF0 body.
    Metadata(Bytes),
    /// A frame: kind, timestamp (ms, the relay's own timeline) and the FLV tag body.
    Frame {
        /// Audio or video.
        kind: MediaKind,
        /// Milliseconds.
        timestamp: u32,
        /// FLV tag body.
        data: Bytes,
    },
    /// The owner's publisher left; the stream waits for it to come back (players stay, encoders end). A node of
    /// the previous release does not know this item and drops the batch that carries it.
    PublisherLeft,
}

impl RelayItem {
    /// Bytes this item occupies on the wire (for credits).
    pub fn wire_len(&self) -> usize {
        match self {
            RelayItem::Metadata(b) => 5 + b.len(),
            RelayItem::Frame { data, .. } => 10 + data.len(),
            RelayItem::PublisherLeft => 5,
        }
    }

    /// The item as a frame for the local stream actor (`None` for metadata, and for a tag body too short to
    /// parse, which an owner never sends).
    pub fn to_frame(&self) -> Option<MediaFrame> {
        match self {
            RelayItem::Frame { kind, timestamp, data } => MediaFrame::parse(*kind, *timestamp, data.clone()).ok(),
            RelayItem::Metadata(_) | RelayItem::PublisherLeft => None,
        }
    }
}

/// One-way messages.
#[derive(Debug, Clone, PartialEq)]
pub enum Cast {
    /// To a stream's owner: node `node` wants a relay, starting with `credit` bytes of window.
    Subscribe {
        /// The subscribing node's name.
        node: String,
        /// Initial window in bytes.
        credit: u32,
    },
    /// To a stream's owner: node `node` consumed `bytes` more.
    Credit {
        /// The subscribing node's name.
        node: String,
        /// Bytes granted.
        bytes: u32,
    },
    /// To a stream's owner: node `node` no longer wants the relay.
    Unsubscribe {
        /// The subscribing node's name.
        node: String,
    },
    /// To a relay sink: the next batch of media; `seq` counts batches from 1 per subscription.
    Media {
        /// Batch number.
        seq: u64,
        /// Items in order.
        items: Vec<RelayItem>,
        /// When the owner sent the batch (Unix ms, the owner's clock), for the receiver's relay lag. A trailing
        /// field: `None` from a node of the previous release, which does not send it.
        sent_ms: Option<u64>,
    },
    /// To a relay sink: the stream ended at the owner (or the owner dropped this relay).
    End {
        /// Why.
        reason: String,
    },
    /// A local timer tick (never sent across nodes; harmless if it is).
    Tick,
    /// To every node agent: where the HLS playlist of a stream this node owns stands, so any node can continue it
    /// (new owner) or keep serving its last playlist while the stream has no owner.
    HlsState {
        /// The stream key.
        key: String,
        /// The owner's claim time (Unix ms): a newer claim's state replaces an older one's.
        since_ms: u64,
        /// Media sequence number of the next segment.
        next_msn: u64,
        /// Discontinuity number of the newest segment.
        discontinuity: u64,
        /// `EXT-X-ENDLIST` is set.
        ended: bool,
        /// The playlist text.
        playlist: Option<Bytes>,
        /// The owner's claim epoch (see [`Response::Claim`]); a trailing field, 0 from a node that sends none.
        epoch: u64,
        /// The stream time (ms) the owner's segmenter had reached (see
        /// [`crate::stream::segmenter::HlsView::timeline_ms`]); a trailing field, `None` from a node that sends
        /// none. Fields added after it are skipped by this release.
        timeline_ms: Option<u32>,
    },
    /// To a node agent that just joined: the sender has passed on every HLS state it knows (each as an
    /// [`Cast::HlsState`], before this). A node of the previous release drops it (unknown tag) with a warning.
    Synced,
}

/// Load a node shares with its heartbeat.
#[derive(Debug, Clone, Copy, PartialEq, Default, serde::Serialize)]
pub struct Load {
    /// CPU use of the process over the last second, in cores (1.0 = one core busy).
    pub cpu: f32,
    /// Streams this node owns (publishers).
    pub streams: u32,
    /// Players connected to this node.
    pub players: u32,
    /// Relays this node sends to other nodes.
    pub relays_out: u32,
    /// The node is draining (shutting down): give it no new work.
    pub draining: bool,
    /// `strom_load_ratio`: the busiest resource (CPU, egress) against the node's capacity.
    pub ratio: f32,
    /// Ladders (encoders) this node runs.
    pub encoders: u32,
    /// Ladders it could still take (`transcode.max_streams` minus running; 0 with transcoding off).
    pub encoder_slots: u32,
    /// VOD chunks it encodes or has queued (a trailing field: 0 from a node of an earlier release).
    pub vod_chunks: u32,
    /// VOD chunks it encodes at once (`vod.parallel_chunks`; 0 from a node of an earlier release).
    pub vod_slots: u32,
    /// Bits per second it sent to players and other nodes over the last second (0 from a node of an earlier
    /// release).
    pub egress_bps: u64,
}

/// Requests (remote procedure calls).
#[derive(Debug, Clone, PartialEq)]
pub enum Request {
    /// Heartbeat: echo `nonce`, tell your load.
    Ping {
        /// Echoed.
        nonce: u64,
        /// The asker's name.
        from: String,
    },
    /// To a stream's owner: who are you, is a publisher live, since when.
    Claim,
    /// To a stream's owner: the HLS media playlist, waiting up to `wait_ms` for the first segment.
    Playlist {
        /// Milliseconds.
        wait_ms: u32,
    },
    /// To a stream's owner: up to `max` bytes of HLS segment `name` from `offset`.
    Segment {
        /// File name, e.g. `seg-12.ts`.
        name: String,
        /// Byte offset.
        offset: u32,
        /// Most bytes wanted.
        max: u32,
    },
    /// To a stream's owner: the bytes of LL-HLS part `name` (the one its preload hint names) past the first
    /// `from`, waiting up to `wait_ms` for more than `from` to exist: [`Response::Growing`]. A node follows the
    /// part as the owner produces it this way, to send it on as it grows.
    Growing {
        /// The part's file name.
        name: String,
        /// Bytes the asking node has.
        from: u32,
        /// Milliseconds.
        wait_ms: u32,
    },
    /// To a stream's owner: the `/api/v1/streams` entry, as JSON.
    Info,
    /// To a node agent, from the owner of stream `key`: run its ladder (encoders) on your node.
    StartEncoder {
        /// The source stream.
        key: String,
        /// The owner's node name.
        owner: String,
    },
    /// To the node running a stream's ladder: its HLS master playlist, waiting up to `wait_ms` for it.
    Master {
        /// Milliseconds.
        wait_ms: u32,
    },
    /// To a node agent: recordings and VOD assets of that node (see `crate::storage`).
    Vod(VodRequest),
    /// To a node agent: VOD job work (see `crate::transcode::vod`).
    Job(JobRequest),
    /// To a stream's owner: disconnect the publisher and end the stream now (the API's
    /// `DELETE /api/v1/streams/{app}/{name}/publisher`): [`Response::Api`], 200 or 404.
    Disconnect,
    /// To a node agent: the addresses (`host:port`) of the peers it is connected to, as [`Response::Api`] with a
    /// JSON array. With node-to-node TLS, membership finds the rest of the cluster this way (ractor_cluster's
    /// transitive mode would dial in plain TCP).
    Peers,
}

/// What [`Request::Job`] asks: a job's node sends chunks to workers; a worker reads the job's source from it and,
/// with local volumes, writes the chunk's output to it.
#[derive(Debug, Clone, PartialEq)]
pub enum JobRequest {
    /// To a worker: encode a chunk (`task`: the JSON `ChunkTask`). Answered when it is done, with
    /// [`Response::Api`]: 200 and the chunk's outputs (JSON), or an error status and why.
    Chunk {
        /// JSON.
        task: Bytes,
    },
    /// To a worker: pictures done by attempt `attempt` of chunk `index` of job `job`: [`Response::Api`] with
    /// `{"frames": N}`, 404 when the worker does not run it.
    Progress {
        /// Job id.
        job: String,
        /// Chunk index.
        index: u32,
        /// Attempt number.
        attempt: u32,
    },
    /// To a worker: stop that chunk (the job was cancelled or gave the chunk to another node).
    Cancel {
        /// Job id.
        job: String,
        /// Chunk index.
        index: u32,
    },
    /// To the job's node: up to `max` bytes from `offset` of the source object of a job it runs:
    /// [`Response::Range`].
    Read {
        /// The source's storage key (`vod/<id>/original.<ext>`).
        object: String,
        /// Byte offset.
        offset: u64,
        /// Most bytes wanted.
        max: u32,
    },
    /// To every node: job `id` as this node knows it: [`Response::Api`] with `{"live": bool, "job": {...}}` (live:
    /// it runs here), 404 when it neither runs it nor holds its manifest.
    Get {
        /// Job id.
        id: String,
    },
    /// To every node: the jobs it runs or holds: [`Response::Api`] with a JSON array of `{"live", "job"}`.
    List,
    /// To every node: `cancel` or `retry` job `id` if it runs it (cancel) or holds it (retry): [`Response::Api`]
    /// with the HTTP answer; 404 when it does not.
    Action {
        /// Job id.
        id: String,
        /// `cancel` or `retry`.
        action: String,
    },
    /// To the job's node: store a chunk's output object (`vod/<id>/<rung>/<file>` of a job it runs) on its
    /// storage: [`Response::Api`].
    Put {
        /// Storage key.
        object: String,
        /// The object.
        data: Bytes,
    },
    /// To every node: transcode recording `id` into the rungs `ladder` (heights) if this node's storage holds
    /// it (a local volume): [`Response::Api`] with 202 and `{"asset", "job"}`, or the refusal; 404 when it does
    /// not hold it. The job runs where the recording is.
    FromRecording {
        /// The recording's asset id.
        id: String,
        /// Rung heights.
        ladder: Vec<u32>,
    },
}

/// What [`Request::Vod`] asks of a node's recordings: the API of a recording runs on the stream's owner, and a
/// recording on a node's local volume is read through that node.
#[derive(Debug, Clone, PartialEq)]
pub enum VodRequest {
    /// Start (`on`) or stop recording stream `key`, if this node owns it: answered with [`Response::Api`].
    Record {
        /// `app/name`.
        key: String,
        /// Start or stop.
        on: bool,
    },
    /// The assets this node holds: [`Response::Api`] with a JSON array.
    List,
    /// One asset: [`Response::Api`] (404 if this node does not hold it).
    Asset {
        /// Asset id.
        id: String,
    },
    /// Up to `max` bytes from `offset` of an asset's file: [`Response::Segment`]. `path`: `index.m3u8` (the
    /// asset's playlist), `<rendition>/<file>`, or `mp4` (a JSON list of the MP4 export's parts and sizes).
    File {
        /// Asset id.
        id: String,
        /// The file (see above).
        path: String,
        /// Byte offset.
        offset: u32,
        /// Most bytes wanted.
        max: u32,
    },
    /// Delete an asset this node holds: [`Response::Api`].
    Delete {
        /// Asset id.
        id: String,
    },
    /// Up to `max` bytes from `offset` of a DVR window's file that this node's recording of stream `key` holds
    /// (`name`: the live segment or init segment name): [`Response::Segment`]. Asked by the owner of a rung whose
    /// recording runs on the source's owner.
    Dvr {
        /// `app/name`.
        key: String,
        /// The live file name.
        name: String,
        /// Byte offset.
        offset: u32,
        /// Most bytes wanted.
        max: u32,
    },
}

/// Replies to [`Request`]s.
#[derive(Debug, Clone, PartialEq)]
pub enum Response {
    /// To [`Request::Ping`].
    Pong {
        /// The request's nonce.
        nonce: u64,
        /// The answering node's name.
        node: String,
        /// Its load.
        load: Load,
    },
    /// To [`Request::Claim`].
    Claim {
        /// The owner's node name.
        node: String,
        /// A publisher is live.
        live: bool,
        /// When this node claimed the key (Unix ms): among claims of the same epoch, the earlier wins.
        since_ms: u64,
        /// The claim's epoch: one more than the highest epoch the claiming node had seen for the key (from
        /// claims and pushed HLS states). A lower epoch wins over a higher one whatever the clocks say, so a
        /// claim made during a partition never beats the owner it could not see. A trailing field: 0 from a
        /// node that sends none.
        epoch: u64,
    },
    /// To [`Request::Playlist`]: the playlist text, if there is one.
    Playlist(Option<Bytes>),
    /// To [`Request::Segment`]: total size and the requested part; `None` if there is no such segment.
    Segment(Option<(u32, Bytes)>),
    /// To [`Request::Info`]: JSON, if the stream exists.
    Info(Option<Bytes>),
    /// To [`Request::StartEncoder`]: whether the node took the ladder.
    Started(bool),
    /// To [`Request::Master`]: the master playlist, if the ladder has one.
    Master(Option<Bytes>),
    /// An HTTP API answer made on another node: status and JSON body.
    Api {
        /// HTTP status.
        status: u16,
        /// JSON.
        body: Bytes,
    },
    /// To [`JobRequest::Read`]: the object's total size and the bytes asked for; `None` if there is no such
    /// object.
    Range(Option<(u64, Bytes)>),
    /// To [`Request::Growing`]: the part's bytes past `from` (empty if none came in time) and whether that is the
    /// rest of it (the part is complete); `None` if the owner has no such part, growing or complete.
    Growing(Option<(Bytes, bool)>),
}

// ---- encoding ---------------------------------------------------------------------------------------------------

fn put_bytes(out: &mut Vec<u8>, b: &[u8]) {
    out.put_u32(b.len() as u32);
    out.put_slice(b);
}

fn put_opt(o: &mut Vec<u8>, b: &Option<Bytes>) {
    match b {
        Some(b) => {
            o.put_u8(1);
            put_bytes(o, b);
        }
        None => o.put_u8(0),
    }
}

/// A message buffer sized for its fields, so encoding copies each payload once, into the buffer ractor sends.
fn header(tag: u8, capacity: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(2 + capacity);
    out.put_u8(VERSION);
    out.put_u8(tag);
    out
}

fn kind_byte(k: MediaKind) -> u8 {
    match k {
        MediaKind::Video => 9,
        MediaKind::Audio => 8,
    }
}

impl Cast {
    /// Encodes the message.
    pub fn encode(&self) -> Vec<u8> {
        match self {
            Cast::Subscribe { node, credit } => {
                let mut o = header(1, 8 + node.len());
                put_bytes(&mut o, node.as_bytes());
                o.put_u32(*credit);
                o
            }
            Cast::Credit { node, bytes } => {
                let mut o = header(2, 8 + node.len());
                put_bytes(&mut o, node.as_bytes());
                o.put_u32(*bytes);
                o
            }
            Cast::Unsubscribe { node } => {
                let mut o = header(3, 4 + node.len());
                put_bytes(&mut o, node.as_bytes());
                o
            }
            Cast::Media { seq, items, sent_ms } => {
                let len: usize = items.iter().map(RelayItem::wire_len).sum();
                let mut o = header(4, 20 + len);
                o.put_u64(*seq);
                o.put_u32(items.len() as u32);
                for item in items {
                    match item {
                        RelayItem::Metadata(b) => {
                            o.put_u8(0);
                            put_bytes(&mut o, b);
                        }
                        RelayItem::Frame { kind, timestamp, data } => {
                            o.put_u8(kind_byte(*kind));
                            o.put_u32(*timestamp);
                            put_bytes(&mut o, data);
                        }
                        RelayItem::PublisherLeft => {
                            // Kind 1 and four reserved bytes: every item stays at least 5 bytes long.
                            o.put_u8(1);
                            o.put_u32(0);
                        }
                    }
                }
                if let Some(ms) = sent_ms {
                    o.put_u64(*ms);
                }
                o
            }
            Cast::End { reason } => {
                let mut o = header(5, 4 + reason.len());
                put_bytes(&mut o, reason.as_bytes());
                o
            }
            Cast::Tick => header(6, 0),
            Cast::HlsState { key, since_ms, next_msn, discontinuity, ended, playlist, epoch, timeline_ms } => {
                let mut o = header(7, 52 + key.len() + playlist.as_ref().map_or(0, Bytes::len));
                put_bytes(&mut o, key.as_bytes());
                o.put_u64(*since_ms);
                o.put_u64(*next_msn);
                o.put_u64(*discontinuity);
                o.put_u8(*ended as u8);
                put_opt(&mut o, playlist);
                o.put_u64(*epoch);
                if let Some(ms) = timeline_ms {
                    o.put_u32(*ms);
                }
                o
            }
            Cast::Synced => header(8, 0),
        }
    }

    /// Decodes a message.
    pub fn decode(bytes: Vec<u8>) -> Result<Cast, WireError> {
        let mut r = Reader::new(bytes)?;
        let c = match r.tag {
            1 => Cast::Subscribe { node: r.string("node")?, credit: r.u32("credit")? },
            2 => Cast::Credit { node: r.string("node")?, bytes: r.u32("bytes")? },
            3 => Cast::Unsubscribe { node: r.string("node")? },
            4 => {
                let seq = r.u64("seq")?;
                let n = r.u32("item count")? as usize;
                // Each item takes at least 5 bytes: a count beyond what remains is a lie.
                if n > r.buf.remaining() / 5 {
                    return Err(r.error("item count"));
                }
                let mut items = Vec::with_capacity(n);
                for _ in 0..n {
                    let item = match r.u8("item kind")? {
                        0 => RelayItem::Metadata(r.bytes("metadata")?),
                        1 => match r.u32("reserved")? {
                            0 => RelayItem::PublisherLeft,
                            _ => return Err(r.error("reserved")),
                        },
                        k @ (8 | 9) => {
                            let kind = if k == 9 { MediaKind::Video } else { MediaKind::Audio };
                            RelayItem::Frame { kind, timestamp: r.u32("timestamp")?, data: r.bytes("frame")? }
                        }
                        _ => return Err(r.error("item kind")),
                    };
                    items.push(item);
                }
                // Added later: a node of the previous release sends no send time.
                let sent_ms = if r.buf.has_remaining() { Some(r.u64("sent_ms")?) } else { None };
                Cast::Media { seq, items, sent_ms }
            }
            5 => Cast::End { reason: r.string("reason")? },
            6 => Cast::Tick,
            7 => {
                let state = Cast::HlsState {
                    key: r.string("key")?,
                    since_ms: r.u64("since_ms")?,
                    next_msn: r.u64("next_msn")?,
                    discontinuity: r.u64("discontinuity")?,
                    ended: r.bool("ended")?,
                    playlist: r.opt_bytes("playlist")?,
                    // Added later: a node of an earlier release sends no epoch, or no stream time.
                    epoch: if r.buf.has_remaining() { r.u64("epoch")? } else { 0 },
                    timeline_ms: if r.buf.has_remaining() { Some(r.u32("timeline_ms")?) } else { None },
                };
                // What a later release adds after these is not this release's to read.
                r.buf.advance(r.buf.remaining());
                state
            }
            8 => Cast::Synced,
            _ => return Err(r.error("cast tag")),
        };
        r.finish(c)
    }
}

impl Request {
    /// The request's kind, for `strom_cluster_requests_total{request}`.
    pub fn label(&self) -> &'static str {
        match self {
            Request::Ping { .. } => "ping",
            Request::Claim => "claim",
            Request::Playlist { .. } => "playlist",
            Request::Segment { .. } => "segment",
            Request::Growing { .. } => "growing",
            Request::Info => "info",
            Request::StartEncoder { .. } => "start_encoder",
            Request::Master { .. } => "master",
            Request::Vod(VodRequest::Record { .. }) => "vod_record",
            Request::Vod(VodRequest::List) => "vod_list",
            Request::Vod(VodRequest::Asset { .. }) => "vod_asset",
            Request::Vod(VodRequest::File { .. }) => "vod_file",
            Request::Vod(VodRequest::Delete { .. }) => "vod_delete",
            Request::Vod(VodRequest::Dvr { .. }) => "vod_dvr",
            Request::Job(JobRequest::Chunk { .. }) => "job_chunk",
            Request::Job(JobRequest::Progress { .. }) => "job_progress",
            Request::Job(JobRequest::Cancel { .. }) => "job_cancel",
            Request::Job(JobRequest::Read { .. }) => "job_read",
            Request::Job(JobRequest::Put { .. }) => "job_put",
            Request::Job(JobRequest::Get { .. }) => "job_get",
            Request::Job(JobRequest::List) => "job_list",
            Request::Job(JobRequest::Action { .. }) => "job_action",
            Request::Job(JobRequest::FromRecording { .. }) => "job_from_recording",
            Request::Disconnect => "disconnect",
            Request::Peers => "peers",
        }
    }

    /// Encodes the request.
    pub fn encode(&self) -> Vec<u8> {
        match self {
            Request::Ping { nonce, from } => {
                let mut o = header(1, 12 + from.len());
                o.put_u64(*nonce);
                put_bytes(&mut o, from.as_bytes());
                o
            }
            Request::Claim => header(2, 0),
            Request::Playlist { wait_ms } => {
                let mut o = header(3, 4);
                o.put_u32(*wait_ms);
                o
            }
            Request::Segment { name, offset, max } => {
                let mut o = header(4, 12 + name.len());
                put_bytes(&mut o, name.as_bytes());
                o.put_u32(*offset);
                o.put_u32(*max);
                o
            }
            Request::Info => header(5, 0),
            Request::StartEncoder { key, owner } => {
                let mut o = header(6, 8 + key.len() + owner.len());
                put_bytes(&mut o, key.as_bytes());
                put_bytes(&mut o, owner.as_bytes());
                o
            }
            Request::Master { wait_ms } => {
                let mut o = header(7, 4);
                o.put_u32(*wait_ms);
                o
            }
            Request::Vod(v) => {
                let mut o = header(8, 32);
                match v {
                    VodRequest::Record { key, on } => {
                        o.put_u8(1);
                        put_bytes(&mut o, key.as_bytes());
                        o.put_u8(*on as u8);
                    }
                    VodRequest::List => o.put_u8(2),
                    VodRequest::Asset { id } => {
                        o.put_u8(3);
                        put_bytes(&mut o, id.as_bytes());
                    }
                    VodRequest::File { id, path, offset, max } => {
                        o.put_u8(4);
                        put_bytes(&mut o, id.as_bytes());
                        put_bytes(&mut o, path.as_bytes());
                        o.put_u32(*offset);
                        o.put_u32(*max);
                    }
                    VodRequest::Delete { id } => {
                        o.put_u8(5);
                        put_bytes(&mut o, id.as_bytes());
                    }
                    VodRequest::Dvr { key, name, offset, max } => {
                        o.put_u8(6);
                        put_bytes(&mut o, key.as_bytes());
                        put_bytes(&mut o, name.as_bytes());
                        o.put_u32(*offset);
                        o.put_u32(*max);
                    }
                }
                o
            }
            Request::Job(j) => {
                let size = match j {
                    JobRequest::Chunk { task } => task.len(),
                    JobRequest::Put { object, data } => object.len() + data.len(),
                    _ => 0,
                };
                let mut o = header(9, 32 + size);
                match j {
                    JobRequest::Chunk { task } => {
                        o.put_u8(1);
                        put_bytes(&mut o, task);
                    }
                    JobRequest::Progress { job, index, attempt } => {
                        o.put_u8(2);
                        put_bytes(&mut o, job.as_bytes());
                        o.put_u32(*index);
                        o.put_u32(*attempt);
                    }
                    JobRequest::Cancel { job, index } => {
                        o.put_u8(3);
                        put_bytes(&mut o, job.as_bytes());
                        o.put_u32(*index);
                    }
                    JobRequest::Read { object, offset, max } => {
                        o.put_u8(4);
                        put_bytes(&mut o, object.as_bytes());
                        o.put_u64(*offset);
                        o.put_u32(*max);
                    }
                    JobRequest::Put { object, data } => {
                        o.put_u8(5);
                        put_bytes(&mut o, object.as_bytes());
                        put_bytes(&mut o, data);
                    }
                    JobRequest::Get { id } => {
                        o.put_u8(6);
                        put_bytes(&mut o, id.as_bytes());
                    }
                    JobRequest::List => o.put_u8(7),
                    JobRequest::Action { id, action } => {
                        o.put_u8(8);
                        put_bytes(&mut o, id.as_bytes());
                        put_bytes(&mut o, action.as_bytes());
                    }
                    JobRequest::FromRecording { id, ladder } => {
                        o.put_u8(9);
                        put_bytes(&mut o, id.as_bytes());
                        o.put_u32(ladder.len() as u32);
                        for h in ladder {
                            o.put_u32(*h);
                        }
                    }
                }
                o
            }
            Request::Disconnect => header(10, 0),
            Request::Peers => header(11, 0),
            Request::Growing { name, from, wait_ms } => {
                let mut o = header(12, 12 + name.len());
                put_bytes(&mut o, name.as_bytes());
                o.put_u32(*from);
                o.put_u32(*wait_ms);
                o
            }
        }
    }

    /// Decodes a request.
    pub fn decode(bytes: Vec<u8>) -> Result<Request, WireError> {
        let mut r = Reader::new(bytes)?;
        let q = match r.tag {
            1 => Request::Ping { nonce: r.u64("nonce")?, from: r.string("from")? },
            2 => Request::Claim,
            3 => Request::Playlist { wait_ms: r.u32("wait_ms")? },
            4 => Request::Segment { name: r.string("name")?, offset: r.u32("offset")?, max: r.u32("max")? },
            5 => Request::Info,
            6 => Request::StartEncoder { key: r.string("key")?, owner: r.string("owner")? },
            7 => Request::Master { wait_ms: r.u32("wait_ms")? },
            8 => Request::Vod(match r.u8("vod op")? {
                1 => VodRequest::Record { key: r.string("key")?, on: r.bool("on")? },
                2 => VodRequest::List,
                3 => VodRequest::Asset { id: r.string("id")? },
                4 => VodRequest::File {
                    id: r.string("id")?,
                    path: r.string("path")?,
                    offset: r.u32("offset")?,
                    max: r.u32("max")?,
                },
                5 => VodRequest::Delete { id: r.string("id")? },
                6 => VodRequest::Dvr {
                    key: r.string("key")?,
                    name: r.string("name")?,
                    offset: r.u32("offset")?,
                    max: r.u32("max")?,
                },
                _ => return Err(WireError { what: "vod op", offset: 2 }),
            }),
            9 => Request::Job(match r.u8("job op")? {
                1 => JobRequest::Chunk { task: r.bytes("task")? },
                2 => JobRequest::Progress { job: r.string("job")?, index: r.u32("index")?, attempt: r.u32("attempt")? },
                3 => JobRequest::Cancel { job: r.string("job")?, index: r.u32("index")? },
                4 => JobRequest::Read { object: r.string("object")?, offset: r.u64("offset")?, max: r.u32("max")? },
                5 => JobRequest::Put { object: r.string("object")?, data: r.bytes("data")? },
                6 => JobRequest::Get { id: r.string("id")? },
                7 => JobRequest::List,
                8 => JobRequest::Action { id: r.string("id")?, action: r.string("action")? },
                9 => {
                    let id = r.string("id")?;
                    let n = r.u32("rungs")?;
                    if n > 64 {
                        return Err(r.error("rungs"));
                    }
                    let ladder = (0..n).map(|_| r.u32("rung")).collect::<Result<Vec<_>, _>>()?;
                    JobRequest::FromRecording { id, ladder }
                }
                _ => return Err(WireError { what: "job op", offset: 2 }),
            }),
            10 => Request::Disconnect,
            11 => Request::Peers,
            12 => Request::Growing { name: r.string("name")?, from: r.u32("from")?, wait_ms: r.u32("wait_ms")? },
            _ => return Err(r.error("request tag")),
        };
        r.finish(q)
    }
}

impl Response {
    /// Encodes the response.
    pub fn encode(&self) -> Vec<u8> {
        let opt = put_opt;
        match self {
            Response::Pong { nonce, node, load } => {
                let mut o = header(1, 40 + node.len());
                o.put_u64(*nonce);
                put_bytes(&mut o, node.as_bytes());
                o.put_f32(load.cpu);
                o.put_u32(load.streams);
                o.put_u32(load.players);
                o.put_u32(load.relays_out);
                o.put_u8(load.draining as u8);
                o.put_f32(load.ratio);
                o.put_u32(load.encoders);
                o.put_u32(load.encoder_slots);
                o.put_u32(load.vod_chunks);
                o.put_u32(load.vod_slots);
                o.put_u64(load.egress_bps);
                o
            }
            Response::Claim { node, live, since_ms, epoch } => {
                let mut o = header(2, 24 + node.len());
                put_bytes(&mut o, node.as_bytes());
                o.put_u8(*live as u8);
                o.put_u64(*since_ms);
                o.put_u64(*epoch);
                o
            }
            Response::Playlist(p) => {
                let mut o = header(3, 8 + p.as_ref().map_or(0, Bytes::len));
                opt(&mut o, p);
                o
            }
            Response::Segment(s) => {
                let mut o = header(4, 12 + s.as_ref().map_or(0, |(_, b)| b.len()));
                match s {
                    Some((total, part)) => {
                        o.put_u8(1);
                        o.put_u32(*total);
                        put_bytes(&mut o, part);
                    }
                    None => o.put_u8(0),
                }
                o
            }
            Response::Info(j) => {
                let mut o = header(5, 8 + j.as_ref().map_or(0, Bytes::len));
                opt(&mut o, j);
                o
            }
            Response::Started(ok) => {
                let mut o = header(6, 1);
                o.put_u8(*ok as u8);
                o
            }
            Response::Master(m) => {
                let mut o = header(7, 8 + m.as_ref().map_or(0, Bytes::len));
                opt(&mut o, m);
                o
            }
            Response::Api { status, body } => {
                let mut o = header(8, 6 + body.len());
                o.put_u16(*status);
                put_bytes(&mut o, body);
                o
            }
            Response::Range(r) => {
                let mut o = header(9, 16 + r.as_ref().map_or(0, |(_, b)| b.len()));
                match r {
                    Some((total, data)) => {
                        o.put_u8(1);
                        o.put_u64(*total);
                        put_bytes(&mut o, data);
                    }
                    None => o.put_u8(0),
                }
                o
            }
            Response::Growing(g) => {
                let mut o = header(10, 10 + g.as_ref().map_or(0, |(b, _)| b.len()));
                match g {
                    Some((data, done)) => {
                        o.put_u8(1);
                        put_bytes(&mut o, data);
                        o.put_u8(*done as u8);
                    }
                    None => o.put_u8(0),
                }
                o
            }
        }
    }

    /// Decodes a response.
    pub fn decode(bytes: Vec<u8>) -> Result<Response, WireError> {
        let mut r = Reader::new(bytes)?;
        let s = match r.tag {
            1 => {
                let (nonce, node) = (r.u64("nonce")?, r.string("node")?);
                let mut load = Load {
                    cpu: r.f32("cpu")?,
                    streams: r.u32("streams")?,
                    players: r.u32("players")?,
                    relays_out: r.u32("relays_out")?,
                    draining: r.bool("draining")?,
                    ..Load::default()
                };
                // Added later: a node of the previous release sends none of these.
                if r.buf.has_remaining() {
                    load.ratio = r.f32("ratio")?;
                    load.encoders = r.u32("encoders")?;
                    load.encoder_slots = r.u32("encoder_slots")?;
                }
                if r.buf.has_remaining() {
                    load.vod_chunks = r.u32("vod_chunks")?;
                    load.vod_slots = r.u32("vod_slots")?;
                }
                if r.buf.has_remaining() {
                    load.egress_bps = r.u64("egress_bps")?;
                }
                Response::Pong { nonce, node, load }
            }
            2 => Response::Claim {
                node: r.string("node")?,
                live: r.bool("live")?,
                since_ms: r.u64("since_ms")?,
                // Added later: a node of the previous release sends no epoch.
                epoch: if r.buf.has_remaining() { r.u64("epoch")? } else { 0 },
            },
            3 => Response::Playlist(r.opt_bytes("playlist")?),
            4 => Response::Segment(match r.bool("segment present")? {
                true => Some((r.u32("total")?, r.bytes("part")?)),
                false => None,
            }),
            5 => Response::Info(r.opt_bytes("info")?),
            6 => Response::Started(r.bool("started")?),
            7 => Response::Master(r.opt_bytes("master")?),
            8 => Response::Api { status: r.u16("status")?, body: r.bytes("body")? },
            9 => Response::Range(match r.bool("range present")? {
                true => Some((r.u64("total")?, r.bytes("data")?)),
                false => None,
            }),
            10 => Response::Growing(match r.bool("part present")? {
                true => Some((r.bytes("data")?, r.bool("done")?)),
                false => None,
            }),
            _ => return Err(r.error("response tag")),
        };
        r.finish(s)
    }
}

// ---- decoding ---------------------------------------------------------------------------------------------------

struct Reader {
    buf: Bytes,
    len: usize,
    tag: u8,
}

impl Reader {
    fn new(bytes: Vec<u8>) -> Result<Reader, WireError> {
        let len = bytes.len();
        let mut buf = Bytes::from(bytes);
        if buf.remaining() < 2 {
            return Err(WireError { what: "header", offset: 0 });
        }
        let version = buf.get_u8();
        if version != VERSION {
            return Err(WireError { what: "version", offset: 0 });
        }
        let tag = buf.get_u8();
        Ok(Reader { buf, len, tag })
    }

    fn offset(&self) -> usize {
        self.len - self.buf.remaining()
    }

    fn error(&self, what: &'static str) -> WireError {
        WireError { what, offset: self.offset() }
    }

    fn need(&self, n: usize, what: &'static str) -> Result<(), WireError> {
        if self.buf.remaining() < n {
            return Err(self.error(what));
        }
        Ok(())
    }

    fn u8(&mut self, what: &'static str) -> Result<u8, WireError> {
        self.need(1, what)?;
        Ok(self.buf.get_u8())
    }

    fn bool(&mut self, what: &'static str) -> Result<bool, WireError> {
        match self.u8(what)? {
            0 => Ok(false),
            1 => Ok(true),
            _ => Err(WireError { what, offset: self.offset() - 1 }),
        }
    }

    fn u16(&mut self, what: &'static str) -> Result<u16, WireError> {
        self.need(2, what)?;
        Ok(self.buf.get_u16())
    }

    fn u32(&mut self, what: &'static str) -> Result<u32, WireError> {
        self.need(4, what)?;
        Ok(self.buf.get_u32())
    }

    fn f32(&mut self, what: &'static str) -> Result<f32, WireError> {
        self.need(4, what)?;
        Ok(self.buf.get_f32())
    }

    fn u64(&mut self, what: &'static str) -> Result<u64, WireError> {
        self.need(8, what)?;
        Ok(self.buf.get_u64())
    }

    fn bytes(&mut self, what: &'static str) -> Result<Bytes, WireError> {
        let n = self.u32(what)? as usize;
        self.need(n, what)?;
        Ok(self.buf.split_to(n))
    }

    fn opt_bytes(&mut self, what: &'static str) -> Result<Option<Bytes>, WireError> {
        match self.bool(what)? {
            true => self.bytes(what).map(Some),
            false => Ok(None),
        }
    }

    fn string(&mut self, what: &'static str) -> Result<String, WireError> {
        let at = self.offset();
        let b = self.bytes(what)?;
        if b.len() > MAX_STRING {
            return Err(WireError { what, offset: at });
        }
        String::from_utf8(b.to_vec()).map_err(|_| WireError { what, offset: at })
    }

    fn finish<T>(self, value: T) -> Result<T, WireError> {
        if self.buf.has_remaining() {
            return Err(self.error("trailing bytes"));
        }
        Ok(value)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn casts_round_trip() {
        let casts = vec![
            Cast::Subscribe { node: "strom-1".into(), credit: 1 << 21 },
            Cast::Credit { node: "strom-1".into(), bytes: 4096 },
            Cast::Unsubscribe { node: "strom-2".into() },
            Cast::Media {
                seq: 7,
                items: vec![
                    RelayItem::Metadata(Bytes::from_static(b"\x02\x00\x0aonMetaData")),
                    RelayItem::Frame { kind: MediaKind::Video, timestamp: 40, data: Bytes::from_static(&[0x17, 1]) },
                    RelayItem::Frame { kind: MediaKind::Audio, timestamp: 42, data: Bytes::from_static(&[0xaf, 1]) },
                    RelayItem::PublisherLeft,
                ],
                sent_ms: Some(1_700_000_000_123),
            },
            Cast::Media { seq: 8, items: vec![], sent_ms: None },
            Cast::End { reason: "publisher left".into() },
            Cast::Tick,
            Cast::Synced,
            Cast::HlsState {
                key: "live/a".into(),
                since_ms: 5,
                next_msn: 12,
                discontinuity: 1,
                ended: false,
                playlist: Some(Bytes::from_static(b"#EXTM3U\n")),
                epoch: 3,
                timeline_ms: Some(4_000_000_000),
            },
        ];
        for c in casts {
            assert_eq!(Cast::decode(c.encode()).unwrap(), c);
        }
    }

    #[test]
    fn requests_and_responses_round_trip() {
        for q in [
            Request::Ping { nonce: 9, from: "strom-0".into() },
            Request::Claim,
            Request::Playlist { wait_ms: 1500 },
            Request::Segment { name: "seg-3.ts".into(), offset: 10, max: 1 << 20 },
            Request::Info,
            Request::Disconnect,
            Request::Peers,
            Request::Growing { name: "19b-p40.m4s".into(), from: 2048, wait_ms: 600 },
            Request::StartEncoder { key: "live/a".into(), owner: "strom-2".into() },
            Request::Master { wait_ms: 900 },
            Request::Vod(VodRequest::Record { key: "live/a".into(), on: true }),
            Request::Vod(VodRequest::List),
            Request::Vod(VodRequest::Asset { id: "live-a-20261205T000000000Z".into() }),
            Request::Vod(VodRequest::File { id: "x".into(), path: "source/init1.mp4".into(), offset: 3, max: 9 }),
            Request::Vod(VodRequest::Delete { id: "x".into() }),
            Request::Vod(VodRequest::Dvr { key: "live/a_160p".into(), name: "a-3-17.m4s".into(), offset: 0, max: 9 }),
            Request::Job(JobRequest::Chunk { task: Bytes::from_static(b"{\"job\":\"x\"}") }),
            Request::Job(JobRequest::Progress { job: "x".into(), index: 3, attempt: 2 }),
            Request::Job(JobRequest::Cancel { job: "x".into(), index: 3 }),
            Request::Job(JobRequest::Get { id: "x".into() }),
            Request::Job(JobRequest::List),
            Request::Job(JobRequest::Action { id: "x".into(), action: "retry".into() }),
            Request::Job(JobRequest::FromRecording { id: "live-a-20261205T000000000Z".into(), ladder: vec![720, 144] }),
            Request::Job(JobRequest::Read { object: "vod/x/original.mp4".into(), offset: 5 << 32, max: 1 << 20 }),
            Request::Job(JobRequest::Put {
                object: "vod/x/720p/seg0-4000000-i1.m4s".into(),
                data: Bytes::from_static(b"moof"),
            }),
        ] {
            assert_eq!(Request::decode(q.encode()).unwrap(), q);
        }
        let load = Load {
            cpu: 0.5,
            streams: 2,
            players: 30,
            relays_out: 1,
            draining: true,
            ratio: 0.25,
            encoders: 1,
            encoder_slots: 2,
            vod_chunks: 4,
            vod_slots: 2,
            egress_bps: 12_000_000,
        };
        for s in [
            Response::Pong { nonce: 9, node: "strom-1".into(), load },
            Response::Claim { node: "strom-1".into(), live: true, since_ms: 1_700_000_000_000, epoch: 4 },
            Response::Playlist(Some(Bytes::from_static(b"#EXTM3U\n"))),
            Response::Playlist(None),
            Response::Segment(Some((100, Bytes::from_static(&[0x47; 10])))),
            Response::Segment(None),
            Response::Info(Some(Bytes::from_static(b"{}"))),
            Response::Started(true),
            Response::Master(Some(Bytes::from_static(b"#EXTM3U\n"))),
            Response::Api { status: 409, body: Bytes::from_static(b"{\"error\":\"x\"}") },
            Response::Range(Some((5 << 32, Bytes::from_static(b"mdat")))),
            Response::Range(None),
            Response::Growing(Some((Bytes::from_static(b"moof"), false))),
            Response::Growing(Some((Bytes::new(), true))),
            Response::Growing(None),
            Response::Master(None),
        ] {
            assert_eq!(Response::decode(s.encode()).unwrap(), s);
        }
    }

    #[test]
    fn a_pong_of_the_previous_release_decodes_with_a_default_ladder_load() {
        let load = Load { cpu: 0.5, streams: 2, players: 3, relays_out: 1, draining: false, ..Load::default() };
        let mut old = Response::Pong { nonce: 1, node: "n".into(), load }.encode();
        old.truncate(old.len() - 28);
        assert_eq!(Response::decode(old).unwrap(), Response::Pong { nonce: 1, node: "n".into(), load });
        // A node of the release before VOD jobs: its load has no VOD fields.
        let load = Load { ratio: 0.5, encoders: 1, encoder_slots: 2, ..load };
        let mut old =
            Response::Pong { nonce: 1, node: "n".into(), load: Load { vod_chunks: 3, vod_slots: 2, ..load } }.encode();
        old.truncate(old.len() - 8 - 8);
        assert_eq!(Response::decode(old).unwrap(), Response::Pong { nonce: 1, node: "n".into(), load });
        // A node of the release before the console: its load has no egress.
        let with_vod = Load { vod_chunks: 3, vod_slots: 2, ..load };
        let mut old = Response::Pong { nonce: 1, node: "n".into(), load: Load { egress_bps: 5, ..with_vod } }.encode();
        old.truncate(old.len() - 8);
        assert_eq!(Response::decode(old).unwrap(), Response::Pong { nonce: 1, node: "n".into(), load: with_vod });
    }

    #[test]
    fn claims_and_hls_states_of_the_previous_release_decode_with_epoch_zero() {
        let claim = Response::Claim { node: "strom-0".into(), live: true, since_ms: 7, epoch: 9 };
        let mut old = claim.encode();
        old.truncate(old.len() - 8);
        assert_eq!(
            Response::decode(old).unwrap(),
            Response::Claim { node: "strom-0".into(), live: true, since_ms: 7, epoch: 0 }
        );
        let state = Cast::HlsState {
            key: "live/a".into(),
            since_ms: 5,
            next_msn: 12,
            discontinuity: 1,
            ended: false,
            playlist: None,
            epoch: 2,
            timeline_ms: Some(90_000),
        };
        let mut old = state.encode();
        old.truncate(old.len() - 4);
        let Ok(Cast::HlsState { epoch, timeline_ms, .. }) = Cast::decode(old.clone()) else { panic!("no HlsState") };
        assert_eq!((epoch, timeline_ms), (2, None));
        old.truncate(old.len() - 8);
        let Ok(Cast::HlsState { epoch, next_msn, .. }) = Cast::decode(old) else { panic!("no HlsState") };
        assert_eq!((epoch, next_msn), (0, 12));
        // A later release's fields after these are skipped.
        let mut newer = state.encode();
        newer.extend_from_slice(&[1, 2, 3]);
        assert_eq!(Cast::decode(newer).unwrap(), state);
    }

    #[test]
    fn a_media_batch_of_the_previous_release_decodes_without_a_send_time() {
        let items = vec![RelayItem::Frame { kind: MediaKind::Video, timestamp: 40, data: Bytes::from_static(&[0x17]) }];
        let mut old = Cast::Media { seq: 3, items: items.clone(), sent_ms: Some(99) }.encode();
        old.truncate(old.len() - 8);
        assert_eq!(Cast::decode(old).unwrap(), Cast::Media { seq: 3, items, sent_ms: None });
    }

    #[test]
    fn malformed_messages_are_errors_with_offsets() {
        assert_eq!(Cast::decode(vec![]).unwrap_err().what, "header");
        assert_eq!(Cast::decode(vec![2, 1]).unwrap_err().what, "version");
        assert_eq!(Cast::decode(vec![VERSION, 99]).unwrap_err().what, "cast tag");
        // A length beyond the end.
        let e = Cast::decode(vec![VERSION, 3, 0xff, 0xff, 0xff, 0xff]).unwrap_err();
        assert_eq!((e.what, e.offset), ("node", 6));
        // An item count no buffer could hold does not allocate.
        let mut m = vec![VERSION, 4];
        m.extend_from_slice(&7u64.to_be_bytes());
        m.extend_from_slice(&u32::MAX.to_be_bytes());
        assert_eq!(Cast::decode(m).unwrap_err().what, "item count");
        // A send time cut short is not taken for an older batch.
        let mut m = Cast::Media { seq: 1, items: vec![], sent_ms: Some(5) }.encode();
        m.truncate(m.len() - 3);
        let e = Cast::decode(m).unwrap_err();
        assert_eq!((e.what, e.offset), ("sent_ms", 14));
        // Trailing garbage.
        let mut t = Cast::Tick.encode();
        t.push(0);
        assert_eq!(Cast::decode(t).unwrap_err().what, "trailing bytes");
        // Not UTF-8.
        assert_eq!(Cast::decode(vec![VERSION, 3, 0, 0, 0, 1, 0xff]).unwrap_err().what, "node");
        assert_eq!(Response::decode(vec![VERSION, 3, 7]).unwrap_err().what, "playlist");
    }

    #[test]
    fn a_publisher_left_item_has_zero_reserved_bytes() {
        let c = Cast::Media { seq: 1, items: vec![RelayItem::PublisherLeft], sent_ms: None };
        let mut bytes = c.encode();
        assert_eq!(Cast::decode(bytes.clone()).unwrap(), c);
        let last = bytes.len() - 1;
        bytes[last] = 1; // a nonzero reserved byte would not re-encode as it came
        assert_eq!(Cast::decode(bytes).unwrap_err().what, "reserved");
    }

    #[test]
    fn media_payloads_are_slices_of_the_received_buffer() {
        let data = Bytes::from(vec![0x27u8; 1000]);
        let c = Cast::Media {
            seq: 1,
            items: vec![RelayItem::Frame { kind: MediaKind::Video, timestamp: 0, data: data.clone() }],
            sent_ms: Some(1),
        };
        let Cast::Media { items, .. } = Cast::decode(c.encode()).unwrap() else { panic!() };
        let f = items[0].to_frame().unwrap();
        assert_eq!(f.flv_body(), &data);
        assert!(!f.keyframe && !f.header);
    }
}
