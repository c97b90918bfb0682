//! Inbound RTMP chunk-stream guard.
//!
//! `rml_rtmp::sessions::ServerSession` buffers whatever the peer sends: it honours any
//! `SetChunkSize` up to 2^31 - 1 and any declared message length up to the 24-bit maximum
//! (16 MiB), and accumulates the whole message in memory. A hostile client can therefore pin many
//! megabytes per connection or make the session parse absurd chunks. Its deserializer also
//! panics on some framing: interleaved messages (an unchecked `usize` subtraction that panics
//! with overflow checks and otherwise asks `BytesMut` for ~2^63 bytes, a "capacity overflow"
//! panic in every build) and non-canonical extended timestamps (a `u32` underflow, panicking
//! with overflow checks as in strom's dev profile).
//!
//! [`ChunkGuard`] is a sans-IO state machine that follows the client→server chunk stream (all
//! bytes *after* the handshake, including any bytes the handshake handed back as "remaining") in
//! parallel with the session, **before** the bytes reach it. It frames the stream exactly as
//! `rml_rtmp` 0.8's `ChunkDeserializer` does, byte for byte, applies `SetChunkSize` messages at the
//! same point the `ServerSession` does, and reports a [`GuardViolation`] as soon as the peer
//! exceeds the configured [`GuardLimits`] or sends something the deserializer cannot handle
//! safely. It keeps constant memory: a few counters, a 4-byte `SetChunkSize` capture and at most
//! [`MAX_CHUNK_STREAMS`] small per-chunk-stream records; it never buffers payload.
//!
//! # Mirrored `rml_rtmp` behaviour
//!
//! The framing deliberately copies the deserializer, including its quirks, because the guard is
//! only useful if it sees the same message boundaries as the session:
//!
//! * There is **one** partially received message for the whole connection, not one per chunk
//!   stream: payload bytes of every chunk are appended to the same buffer, and a message completes
//!   when that buffer's length equals the length in the current chunk's header. Interleaving
//!   chunks of different messages therefore corrupts framing in `rml_rtmp`; the guard follows the
//!   same (deterministic) path and rejects the cases where the deserializer would underflow.
//! * The payload size of a chunk is `min(length - buffered, chunk_size)` only when the message
//!   length exceeds the chunk size; otherwise it is the full message length.
//! * A type 3 chunk carries a 4-byte extended timestamp whenever the chunk stream's last 24-bit
//!   timestamp field was `0xFFFFFF`, whether it starts a new message or continues one.
//! * `SetChunkSize` is recognised by message type id 1 alone (any chunk stream, any message
//!   stream id); only its first four payload bytes are read.
//! * `Abort` (type 2) has no effect on the deserializer, so it has none here either.
//!
//! # Example
//!
//! ```ignore
//! let mut guard = ChunkGuard::new(GuardLimits { max_chunk_size: 65_536, max_message_size: 8 << 20, max_command_size: 16 << 10 });
//! guard.inspect(&bytes_from_socket)?; // refuse the connection on Err
//! session.handle_input(&bytes_from_socket)?;
//! ```

use std::error::Error;
use std::fmt;

/// Chunk size every RTMP peer starts with (RTMP specification, section 5.4.1).
const INITIAL_CHUNK_SIZE: u32 = 128;
/// 24-bit timestamp field value announcing a 4-byte extended timestamp.
const EXTENDED_TIMESTAMP_MARKER: u32 = 0x00FF_FFFF;
/// Largest chunk size the specification (and `rml_rtmp`) allows: 31 bits.
const MAX_SPEC_CHUNK_SIZE: u32 = 0x7FFF_FFFF;
/// Message type id of the `SetChunkSize` protocol control message.
const SET_CHUNK_SIZE_TYPE_ID: u8 = 1;

/// Maximum number of distinct chunk stream ids a peer may open with type 0 chunks.
///
/// `rml_rtmp` keeps one header per chunk stream id forever (up to 65,599 of them); real encoders
/// use fewer than a dozen. The bound keeps both the guard's and the session's memory constant.
pub const MAX_CHUNK_STREAMS: usize = 256;

/// Default of [`GuardLimits::max_command_size`].
pub const DEFAULT_MAX_COMMAND_SIZE: u32 = 16 * 1024;

/// Limits enforced on the inbound (client→server) chunk stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GuardLimits {
    /// Largest chunk size the peer may announce with `SetChunkSize`.
    pub max_chunk_size: u32,
    /// Largest message length the peer may declare in a type 0 or type 1 chunk header.
    pub max_message_size: u32,
    /// Largest AMF command/data message (types 15–20). `rml_amf0` parses nested values recursively with no
    /// depth limit, so a deeply nested command of a few kilobytes would overflow the stack and abort the whole
    /// process; real `connect`/`publish`/`onMetaData` messages are well under 2 KiB.
    pub max_command_size: u32,
}

impl Default for GuardLimits {
    /// 64 KiB chunks and 8 MiB messages: far above what OBS, FFmpeg or librtmp send.
    fn default() -> Self {
        GuardLimits {
            max_chunk_size: 65_536,
            max_message_size: 8 * 1024 * 1024,
            max_command_size: DEFAULT_MAX_COMMAND_SIZE,
        }
    }
}

/// Why the guard refused the peer's chunk stream.
///
/// Every `offset` is the position, counted from the first byte given to
/// [`ChunkGuard::inspect`], of the first byte (basic header) of the chunk in which the violation
/// was detected.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GuardViolation {
    /// A `SetChunkSize` message asked for a chunk size above [`GuardLimits::max_chunk_size`].
    ChunkSizeTooLarge {
        /// Chunk size the peer asked for.
        requested: u32,
        /// Configured limit.
        limit: u32,
        /// Offset of the chunk that completed the `SetChunkSize` message.
        offset: u64,
    },
    /// A `SetChunkSize` message asked for 0 or set the reserved top bit.
    InvalidChunkSize {
        /// Chunk size the peer asked for.
        requested: u32,
        /// Offset of the chunk that completed the `SetChunkSize` message.
        offset: u64,
    },
    /// A `SetChunkSize` message had fewer than the 4 payload bytes it needs.
    TruncatedSetChunkSize {
        /// Payload length of the message.
        length: u32,
        /// Offset of the chunk that completed the message.
        offset: u64,
    },
    /// An AMF command or data message longer than [`GuardLimits::max_command_size`].
    CommandTooLarge {
        /// Chunk stream id of the offending chunk.
        csid: u32,
        /// RTMP message type (15–20).
        type_id: u8,
        /// Declared message length.
        length: u32,
        /// The configured limit.
        limit: u32,
        /// Offset of the offending chunk.
        offset: u64,
    },
    /// A chunk header declared a message longer than [`GuardLimits::max_message_size`].
    MessageTooLarge {
        /// Chunk stream id of the offending chunk.
        csid: u32,
        /// Declared message length.
        length: u32,
        /// Configured limit.
        limit: u32,
        /// Offset of the chunk whose header declared the length.
        offset: u64,
    },
    /// A type 1, 2 or 3 chunk arrived on a chunk stream never opened by a type 0 chunk.
    ChunkWithoutHeader {
        /// Chunk stream id of the offending chunk.
        csid: u32,
        /// Offset of the offending chunk.
        offset: u64,
    },
    /// A type 0 chunk opened more than [`MAX_CHUNK_STREAMS`] distinct chunk streams.
    TooManyChunkStreams {
        /// Chunk stream id that would have exceeded the bound.
        csid: u32,
        /// The bound ([`MAX_CHUNK_STREAMS`]).
        limit: u32,
        /// Offset of the offending chunk.
        offset: u64,
    },
    /// A chunk of another message arrived while a message was partially received, in a way
    /// `rml_rtmp` cannot survive: its single reassembly buffer would end up holding more bytes
    /// than the chunk's message length. The next chunk then makes it compute
    /// `length - buffered` unchecked, which panics in every build (overflow check, or a
    /// "capacity overflow" from the reserve that follows the wrapped value).
    InterleavedMessage {
        /// Chunk stream id of the offending chunk.
        csid: u32,
        /// Message length in the offending chunk's header.
        length: u32,
        /// Payload bytes already buffered for the partial message.
        buffered: u32,
        /// Offset of the offending chunk.
        offset: u64,
    },
    /// A type 1/2/3 chunk starting a message carried an extended timestamp below `0xFFFFFF`
    /// (non-canonical; `rml_rtmp` subtracts `0xFFFFFF` from it unchecked and panics with
    /// overflow checks).
    InvalidExtendedTimestamp {
        /// Chunk stream id of the offending chunk.
        csid: u32,
        /// The extended timestamp value.
        value: u32,
        /// Offset of the offending chunk.
        offset: u64,
    },
}

impl GuardViolation {
    /// Short, stable label for metrics: `"chunk_size"`, `"message_size"` or `"malformed"`.
    pub fn reason(&self) -> &'static str {
        match self {
            GuardViolation::ChunkSizeTooLarge { .. } | GuardViolation::InvalidChunkSize { .. } => "chunk_size",
            GuardViolation::MessageTooLarge { .. } | GuardViolation::CommandTooLarge { .. } => "message_size",
            GuardViolation::TruncatedSetChunkSize { .. }
            | GuardViolation::ChunkWithoutHeader { .. }
            | GuardViolation::TooManyChunkStreams { .. }
            | GuardViolation::InterleavedMessage { .. }
            | GuardViolation::InvalidExtendedTimestamp { .. } => "malformed",
        }
    }

    /// Stream offset of the chunk in which the violation was detected.
    pub fn offset(&self) -> u64 {
        match *self {
            GuardViolation::ChunkSizeTooLarge { offset, .. }
            | GuardViolation::InvalidChunkSize { offset, .. }
            | GuardViolation::TruncatedSetChunkSize { offset, .. }
            | GuardViolation::MessageTooLarge { offset, .. }
            | GuardViolation::CommandTooLarge { offset, .. }
            | GuardViolation::ChunkWithoutHeader { offset, .. }
            | GuardViolation::TooManyChunkStreams { offset, .. }
            | GuardViolation::InterleavedMessage { offset, .. }
            | GuardViolation::InvalidExtendedTimestamp { offset, .. } => offset,
        }
    }
}

impl fmt::Display for GuardViolation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            GuardViolation::ChunkSizeTooLarge {
                requested,
                limit,
                offset,
            } => write!(
                f,
                "peer requested chunk size {requested}, above the limit of {limit} (chunk at offset {offset})"
            ),
            GuardViolation::InvalidChunkSize { requested, offset } => write!(
                f,
                "peer requested invalid chunk size {requested:#x} (chunk at offset {offset})"
            ),
            GuardViolation::TruncatedSetChunkSize { length, offset } => write!(
                f,
                "SetChunkSize message has {length} payload bytes, 4 needed (chunk at offset {offset})"
            ),
            GuardViolation::MessageTooLarge {
                csid,
                length,
                limit,
                offset,
            } => write!(
                f,
                "peer declared a {length}-byte message on chunk stream {csid}, above the limit of {limit} (chunk at offset {offset})"
            ),
            GuardViolation::CommandTooLarge { csid, type_id, length, limit, offset } => write!(
                f,
                "peer declared a {length}-byte AMF message (type {type_id}) on chunk stream {csid}, above the limit of {limit} (chunk at offset {offset})"
            ),
            GuardViolation::ChunkWithoutHeader { csid, offset } => write!(
                f,
                "compressed chunk header on chunk stream {csid} which never had a type 0 chunk (chunk at offset {offset})"
            ),
            GuardViolation::TooManyChunkStreams {
                csid,
                limit,
                offset,
            } => write!(
                f,
                "chunk stream {csid} exceeds the limit of {limit} chunk streams (chunk at offset {offset})"
            ),
            GuardViolation::InterleavedMessage {
                csid,
                length,
                buffered,
                offset,
            } => write!(
                f,
                "chunk on stream {csid} for a {length}-byte message interleaved with a partial message of {buffered} buffered bytes (chunk at offset {offset})"
            ),
            GuardViolation::InvalidExtendedTimestamp {
                csid,
                value,
                offset,
            } => write!(
                f,
                "extended timestamp delta {value:#x} below 0xffffff on chunk stream {csid} (chunk at offset {offset})"
            ),
        }
    }
}

impl Error for GuardViolation {}

/// What the deserializer remembers about a chunk stream: the last header seen on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct StreamHeader {
    csid: u32,
    /// Last 24-bit timestamp (or delta) field; `0xFFFFFF` means an extended timestamp follows.
    timestamp_field: u32,
    message_length: u32,
    type_id: u8,
}

/// Where the parser is within the current chunk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stage {
    /// Expecting the first byte of a basic header.
    BasicHeader,
    /// Reading the 1 or 2 extra csid bytes of a basic header.
    ChunkStreamId,
    /// Reading the 3-byte timestamp / delta field.
    Timestamp,
    /// Reading the 3-byte message length.
    MessageLength,
    /// Reading the 1-byte message type id.
    TypeId,
    /// Reading the 4-byte little-endian message stream id (type 0 only).
    StreamId,
    /// Reading the 4-byte extended timestamp.
    ExtendedTimestamp,
    /// Skipping this many chunk payload bytes.
    Payload(u32),
}

/// Follows the inbound RTMP chunk stream and enforces [`GuardLimits`]; see the module docs.
#[derive(Debug, Clone)]
pub struct ChunkGuard {
    limits: GuardLimits,
    chunk_size: u32,
    /// Total bytes consumed.
    position: u64,
    /// Offset of the current chunk's basic header.
    chunk_start: u64,
    stage: Stage,
    /// Chunk header format (0..=3) of the current chunk.
    format: u8,
    /// Header of the current chunk being assembled.
    header: StreamHeader,
    /// Big-endian / little-endian field accumulator for the current header field.
    field_value: u32,
    field_read: u8,
    field_len: u8,
    /// Last header of each chunk stream that completed a chunk (bounded by `MAX_CHUNK_STREAMS`).
    streams: Vec<StreamHeader>,
    /// Payload bytes buffered by the deserializer's single reassembly buffer.
    buffered: u32,
    /// First four bytes of that buffer (the `SetChunkSize` value, if it is one).
    first_bytes: [u8; 4],
    messages_seen: u64,
    violation: Option<GuardViolation>,
}

impl ChunkGuard {
    /// Raises (or lowers) the largest message length the peer may declare from now on (a message already being
    /// received keeps the limit it was checked against).
    pub fn set_max_message_size(&mut self, max: u32) {
        self.limits.max_message_size = max;
    }

    /// Creates a guard for a fresh connection, expecting the initial chunk size of 128.
    pub fn new(limits: GuardLimits) -> Self {
        ChunkGuard {
            limits,
            chunk_size: INITIAL_CHUNK_SIZE,
            position: 0,
            chunk_start: 0,
            stage: Stage::BasicHeader,
            format: 0,
            header: StreamHeader { csid: 0, timestamp_field: 0, message_length: 0, type_id: 0 },
            field_value: 0,
            field_read: 0,
            field_len: 0,
            streams: Vec::new(),
            buffered: 0,
            first_bytes: [0; 4],
            messages_seen: 0,
            violation: None,
        }
    }

    /// Follows `bytes`, the next bytes received from the peer (any split is fine).
    ///
    /// Returns `Ok(())` if everything seen so far is within limits. Once a violation has been
    /// reported the guard is poisoned: every later call returns the same violation without
    /// looking at its input.
    pub fn inspect(&mut self, bytes: &[u8]) -> Result<(), GuardViolation> {
        if let Some(violation) = &self.violation {
            return Err(violation.clone());
        }
        match self.follow(bytes) {
            Ok(()) => Ok(()),
            Err(violation) => {
                self.violation = Some(violation.clone());
                Err(violation)
            }
        }
    }

    /// The chunk size the peer currently uses (starts at 128, changed by `SetChunkSize`).
    pub fn peer_chunk_size(&self) -> u32 {
        self.chunk_size
    }

    /// Number of bytes consumed so far; stops advancing at the byte that caused a violation.
    pub fn bytes_seen(&self) -> u64 {
        self.position
    }

    /// Number of complete messages the deserializer will have produced from the bytes so far.
    pub fn messages_seen(&self) -> u64 {
        self.messages_seen
    }

    fn follow(&mut self, mut input: &[u8]) -> Result<(), GuardViolation> {
        while let Some((&byte, rest)) = input.split_first() {
            if let Stage::Payload(remaining) = self.stage {
                let take = input.len().min(usize::try_from(remaining).unwrap_or(usize::MAX));
                let (payload, rest) = input.split_at(take);
                self.take_payload(payload);
                self.position = self.position.saturating_add(take as u64);
                input = rest;
                // `take` never exceeds `remaining`, a u32.
                let left = remaining.saturating_sub(u32::try_from(take).unwrap_or(u32::MAX));
                if left == 0 {
                    self.finish_chunk()?;
                } else {
                    self.stage = Stage::Payload(left);
                }
                continue;
            }
            if self.stage == Stage::BasicHeader {
                self.chunk_start = self.position;
            }
            self.position = self.position.saturating_add(1);
            input = rest;
            self.header_byte(byte)?;
        }
        Ok(())
    }

    /// Starts reading a header field of `len` bytes in `stage`.
    fn read_field(&mut self, stage: Stage, len: u8) {
        self.stage = stage;
        self.field_value = 0;
        self.field_read = 0;
        self.field_len = len;
    }

    fn header_byte(&mut self, byte: u8) -> Result<(), GuardViolation> {
        if self.stage == Stage::BasicHeader {
            self.format = byte >> 6;
            return match byte & 0x3F {
                0 => {
                    self.read_field(Stage::ChunkStreamId, 1);
                    Ok(())
                }
                1 => {
                    self.read_field(Stage::ChunkStreamId, 2);
                    Ok(())
                }
                csid => self.basic_header_done(u32::from(csid)),
            };
        }

        // Multi-byte fields: the csid extension and the message stream id are little-endian,
        // everything else big-endian.
        let little_endian = matches!(self.stage, Stage::ChunkStreamId | Stage::StreamId);
        if little_endian {
            let shift = u32::from(self.field_read).saturating_mul(8);
            self.field_value |= u32::from(byte).checked_shl(shift).unwrap_or(0);
        } else {
            self.field_value = self.field_value.checked_shl(8).unwrap_or(0) | u32::from(byte);
        }
        self.field_read = self.field_read.saturating_add(1);
        if self.field_read < self.field_len {
            return Ok(());
        }

        let value = self.field_value;
        match self.stage {
            Stage::ChunkStreamId => self.basic_header_done(value.saturating_add(64)),
            Stage::Timestamp => {
                self.header.timestamp_field = value;
                if self.format <= 1 {
                    self.read_field(Stage::MessageLength, 3);
                    Ok(())
                } else {
                    self.message_header_done()
                }
            }
            Stage::MessageLength => {
                if value > self.limits.max_message_size {
                    return Err(GuardViolation::MessageTooLarge {
                        csid: self.header.csid,
                        length: value,
                        limit: self.limits.max_message_size,
                        offset: self.chunk_start,
                    });
                }
                self.header.message_length = value;
                self.read_field(Stage::TypeId, 1);
                Ok(())
            }
            Stage::TypeId => {
                self.header.type_id = u8::try_from(value).unwrap_or(u8::MAX);
                if (15..=20).contains(&self.header.type_id) && self.header.message_length > self.limits.max_command_size
                {
                    return Err(GuardViolation::CommandTooLarge {
                        csid: self.header.csid,
                        type_id: self.header.type_id,
                        length: self.header.message_length,
                        limit: self.limits.max_command_size,
                        offset: self.chunk_start,
                    });
                }
                if self.format == 0 {
                    self.read_field(Stage::StreamId, 4);
                    Ok(())
                } else {
                    self.message_header_done()
                }
            }
            Stage::StreamId => self.message_header_done(),
            Stage::ExtendedTimestamp => {
                // rml_rtmp computes `extended - 0xFFFFFF` unchecked for a non-type-0 chunk that
                // starts a message; continuation chunks' extended timestamps are ignored.
                if self.format != 0 && self.buffered == 0 && value < EXTENDED_TIMESTAMP_MARKER {
                    return Err(GuardViolation::InvalidExtendedTimestamp {
                        csid: self.header.csid,
                        value,
                        offset: self.chunk_start,
                    });
                }
                self.start_payload()
            }
            Stage::BasicHeader | Stage::Payload(_) => Ok(()),
        }
    }

    fn basic_header_done(&mut self, csid: u32) -> Result<(), GuardViolation> {
        let known = self.streams.iter().find(|s| s.csid == csid).copied();
        if self.format == 0 {
            if known.is_none() && self.streams.len() >= MAX_CHUNK_STREAMS {
                return Err(GuardViolation::TooManyChunkStreams {
                    csid,
                    limit: u32::try_from(MAX_CHUNK_STREAMS).unwrap_or(u32::MAX),
                    offset: self.chunk_start,
                });
            }
            // A type 0 header starts from scratch, like rml_rtmp's `ChunkHeader::new()`.
            self.header = StreamHeader { csid, timestamp_field: 0, message_length: 0, type_id: 0 };
            self.read_field(Stage::Timestamp, 3);
            return Ok(());
        }
        match known {
            None => Err(GuardViolation::ChunkWithoutHeader { csid, offset: self.chunk_start }),
            Some(previous) => {
                self.header = previous;
                if self.format == 3 {
                    self.message_header_done()
                } else {
                    self.read_field(Stage::Timestamp, 3);
                    Ok(())
                }
            }
        }
    }

    /// The message header is complete; an extended timestamp may follow.
    fn message_header_done(&mut self) -> Result<(), GuardViolation> {
        if self.header.timestamp_field >= EXTENDED_TIMESTAMP_MARKER {
            self.read_field(Stage::ExtendedTimestamp, 4);
            Ok(())
        } else {
            self.start_payload()
        }
    }

    /// The whole chunk header is read: work out this chunk's payload size as rml_rtmp does.
    fn start_payload(&mut self) -> Result<(), GuardViolation> {
        let length = self.header.message_length;
        if self.buffered > 0 && (self.buffered > length || length <= self.chunk_size) {
            // rml_rtmp would compute `length - buffered` (underflow) or append a whole message to
            // a partial one, after which the partial can never complete.
            return Err(GuardViolation::InterleavedMessage {
                csid: self.header.csid,
                length,
                buffered: self.buffered,
                offset: self.chunk_start,
            });
        }
        let payload =
            if length > self.chunk_size { length.saturating_sub(self.buffered).min(self.chunk_size) } else { length };
        if payload == 0 {
            self.finish_chunk()
        } else {
            self.stage = Stage::Payload(payload);
            Ok(())
        }
    }

    fn take_payload(&mut self, payload: &[u8]) {
        let mut index = usize::try_from(self.buffered).unwrap_or(usize::MAX);
        for &byte in payload.iter().take(4) {
            if let Some(slot) = self.first_bytes.get_mut(index) {
                *slot = byte;
            }
            index = index.saturating_add(1);
        }
        let taken = u32::try_from(payload.len()).unwrap_or(u32::MAX);
        self.buffered = self.buffered.saturating_add(taken);
    }

    /// The chunk's payload is complete: remember its header and complete the message if due.
    fn finish_chunk(&mut self) -> Result<(), GuardViolation> {
        self.stage = Stage::BasicHeader;
        let header = self.header;
        match self.streams.iter_mut().find(|s| s.csid == header.csid) {
            Some(slot) => *slot = header,
            None => self.streams.push(header),
        }
        if self.buffered != header.message_length {
            return Ok(());
        }
        let length = self.buffered;
        self.buffered = 0;
        self.messages_seen = self.messages_seen.saturating_add(1);
        if header.type_id == SET_CHUNK_SIZE_TYPE_ID {
            self.apply_set_chunk_size(length)?;
        }
        Ok(())
    }

    /// Applies a completed `SetChunkSize` message, as `ServerSession` does before reading on.
    fn apply_set_chunk_size(&mut self, length: u32) -> Result<(), GuardViolation> {
        if length < 4 {
            return Err(GuardViolation::TruncatedSetChunkSize { length, offset: self.chunk_start });
        }
        let requested = u32::from_be_bytes(self.first_bytes);
        if requested == 0 || requested > MAX_SPEC_CHUNK_SIZE {
            return Err(GuardViolation::InvalidChunkSize { requested, offset: self.chunk_start });
        }
        if requested > self.limits.max_chunk_size {
            return Err(GuardViolation::ChunkSizeTooLarge {
                requested,
                limit: self.limits.max_chunk_size,
                offset: self.chunk_start,
            });
        }
        self.chunk_size = requested;
        Ok(())
    }
}

/// Fuzzing entry point: never panics unless the guard is inconsistent with itself.
///
/// The first byte of `data` picks where the rest is split; both parts are inspected in order by
/// one guard, and the outcome must equal inspecting the rest in one call.
///
/// # Panics
///
/// Only if the split and unsplit runs disagree, which would be a bug in the guard.
pub fn fuzz_inspect(data: &[u8]) {
    let Some((&split, rest)) = data.split_first() else {
        return;
    };
    let limits = GuardLimits {
        max_chunk_size: 65_536,
        max_message_size: 1024 * 1024,
        max_command_size: DEFAULT_MAX_COMMAND_SIZE,
    };
    let (head, tail) = rest.split_at(usize::from(split).min(rest.len()));

    let mut split_guard = ChunkGuard::new(limits);
    let split_result = split_guard.inspect(head).and_then(|()| split_guard.inspect(tail));

    let mut whole_guard = ChunkGuard::new(limits);
    let whole_result = whole_guard.inspect(rest);

    assert_eq!(split_result, whole_result, "split changed the verdict");
    assert_eq!(split_guard.bytes_seen(), whole_guard.bytes_seen());
    assert_eq!(split_guard.messages_seen(), whole_guard.messages_seen());
    assert_eq!(split_guard.peer_chunk_size(), whole_guard.peer_chunk_size());
    assert!(split_guard.streams.len() <= MAX_CHUNK_STREAMS);
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use rml_rtmp::chunk_io::{ChunkDeserializationError, ChunkDeserializer, ChunkSerializer};
    use rml_rtmp::messages::{MessagePayload, RtmpMessage};
    use rml_rtmp::rml_amf0::Amf0Value;
    use rml_rtmp::time::RtmpTimestamp;
    use std::collections::HashMap;
    use std::panic::{catch_unwind, AssertUnwindSafe};

    const LIMITS: GuardLimits = GuardLimits {
        max_chunk_size: 65_536,
        max_message_size: 1024 * 1024,
        max_command_size: DEFAULT_MAX_COMMAND_SIZE,
    };

    /// Only malformed framing is refused: differential tests against rml_rtmp use these.
    const NO_LIMITS: GuardLimits =
        GuardLimits { max_chunk_size: MAX_SPEC_CHUNK_SIZE, max_message_size: u32::MAX, max_command_size: u32::MAX };

    /// Tiny deterministic PRNG (xorshift64*).
    struct XorShift(u64);

    impl XorShift {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
        }

        fn below(&mut self, n: usize) -> usize {
            (self.next() % n as u64) as usize
        }

        fn chance(&mut self, percent: usize) -> bool {
            self.below(100) < percent
        }

        fn bytes(&mut self, len: usize) -> Vec<u8> {
            (0..len).map(|_| self.next() as u8).collect()
        }
    }

    /// rml_rtmp's deserializer driven the way `ServerSession::handle_input` drives it.
    struct Reference {
        deserializer: ChunkDeserializer,
        messages: u64,
    }

    impl Reference {
        fn new() -> Self {
            Reference { deserializer: ChunkDeserializer::new(), messages: 0 }
        }

        fn feed(&mut self, bytes: &[u8]) -> Result<(), ChunkDeserializationError> {
            let mut input = bytes;
            while let Some(payload) = self.deserializer.get_next_message(input)? {
                input = &[];
                self.messages += 1;
                // Only type 1 is decoded: rml_rtmp panics on some malformed AMF0 commands.
                if payload.type_id == 1 {
                    if let Ok(RtmpMessage::SetChunkSize { size }) = payload.to_rtmp_message() {
                        self.deserializer.set_max_chunk_size(size as usize)?;
                    }
                }
            }
            Ok(())
        }

        fn chunk_size(&self) -> u32 {
            self.deserializer.get_max_chunk_size() as u32
        }
    }

    /// Feeds `bytes` to guard and reference one byte at a time, comparing after every byte.
    fn assert_lockstep(bytes: &[u8], limits: GuardLimits) -> ChunkGuard {
        let mut guard = ChunkGuard::new(limits);
        let mut reference = Reference::new();
        for (index, byte) in bytes.iter().enumerate() {
            guard.inspect(std::slice::from_ref(byte)).unwrap_or_else(|v| panic!("byte {index}: {v}"));
            reference.feed(std::slice::from_ref(byte)).unwrap();
            assert_eq!(guard.messages_seen(), reference.messages, "byte {index}");
            assert_eq!(guard.peer_chunk_size(), reference.chunk_size(), "byte {index}");
        }
        assert_eq!(guard.bytes_seen(), bytes.len() as u64);
        guard
    }

    /// Feeds `bytes` whole and in random splits; all must be accepted with the same view.
    fn assert_all_splits_ok(bytes: &[u8], limits: GuardLimits, messages: u64, chunk_size: u32) {
        let mut whole = ChunkGuard::new(limits);
        whole.inspect(bytes).unwrap();
        assert_eq!(whole.messages_seen(), messages);
        assert_eq!(whole.peer_chunk_size(), chunk_size);
        for seed in 1..=20u64 {
            let mut rng = XorShift(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15));
            let mut guard = ChunkGuard::new(limits);
            let mut rest = bytes;
            while !rest.is_empty() {
                let max = if seed % 2 == 0 { 7 } else { 5000 };
                let take = (rng.below(max) + 1).min(rest.len());
                let (part, tail) = rest.split_at(take);
                guard.inspect(part).unwrap();
                rest = tail;
            }
            assert_eq!(guard.messages_seen(), messages, "seed {seed}");
            assert_eq!(guard.peer_chunk_size(), chunk_size, "seed {seed}");
            assert_eq!(guard.bytes_seen(), bytes.len() as u64);
        }
    }

    fn reference_outcome(bytes: &[u8]) -> (u64, u32) {
        let mut reference = Reference::new();
        reference.feed(bytes).unwrap();
        (reference.messages, reference.chunk_size())
    }

    fn payload(message: RtmpMessage, timestamp: u32, stream_id: u32) -> MessagePayload {
        message.into_message_payload(RtmpTimestamp::new(timestamp), stream_id).unwrap()
    }

    fn media(len: usize, seed: u8) -> Bytes {
        Bytes::from((0..len).map(|i| (i as u8) ^ seed).collect::<Vec<u8>>())
    }

    /// Serializes messages with rml_rtmp's own `ChunkSerializer`.
    struct Session {
        serializer: ChunkSerializer,
        out: Vec<u8>,
        count: u64,
    }

    impl Session {
        fn push(&mut self, message: RtmpMessage, timestamp: u32, stream_id: u32, force: bool) {
            let message = payload(message, timestamp, stream_id);
            let packet = self.serializer.serialize(&message, force, false).unwrap();
            self.out.extend_from_slice(&packet.bytes);
            self.count += 1;
        }

        fn set_chunk_size(&mut self, size: u32) {
            let packet = self.serializer.set_max_chunk_size(size, RtmpTimestamp::new(0)).unwrap();
            self.out.extend_from_slice(&packet.bytes);
            self.count += 1;
        }
    }

    /// A realistic publish session serialized by rml_rtmp itself.
    fn serializer_stream() -> (Vec<u8>, u64) {
        let mut s = Session { serializer: ChunkSerializer::new(), out: Vec::new(), count: 0 };
        let mut properties = HashMap::new();
        properties.insert("app".to_string(), Amf0Value::Utf8String("live".into()));
        properties.insert("tcUrl".to_string(), Amf0Value::Utf8String("rtmp://x/live".into()));
        let connect = RtmpMessage::Amf0Command {
            command_name: "connect".into(),
            transaction_id: 1.0,
            command_object: Amf0Value::Object(properties),
            additional_arguments: vec![],
        };
        s.push(connect, 0, 0, true);
        s.push(RtmpMessage::WindowAcknowledgement { size: 2_500_000 }, 0, 0, false);
        s.set_chunk_size(4096);

        // Constant-size audio at a constant delta: type 0, then type 1/2, then type 3 headers.
        for i in 0..12u32 {
            let audio = RtmpMessage::AudioData { data: media(200, i as u8) };
            s.push(audio, i * 23, 1, false);
        }
        // Video, including 300 KB key frames split into many 4096-byte chunks.
        for i in 0..6u32 {
            let len = if i % 3 == 0 { 300_000 } else { 5_000 + i as usize };
            let video = RtmpMessage::VideoData { data: media(len, i as u8) };
            s.push(video, i * 33, 1, false);
        }
        s.push(RtmpMessage::Abort { stream_id: 1 }, 200, 0, false);
        s.set_chunk_size(60_000);
        for i in 0..4u32 {
            let video = RtmpMessage::VideoData { data: media(300_000, i as u8) };
            s.push(video, 300 + i * 33, 1, false);
        }

        // Timestamps beyond 24 bits: absolute (type 0) and deltas (types 1, 2 and 3), each with
        // extended timestamps on every continuation chunk too.
        let big = 0x0100_0000u32;
        let video = RtmpMessage::VideoData { data: media(300_000, 7) };
        s.push(video, big + 5, 1, true);
        for i in 1..=4u32 {
            let video = RtmpMessage::VideoData { data: media(70_000, i as u8) };
            s.push(video, big + 5 + i * big, 1, false);
        }
        for i in 1..=3u32 {
            let audio = RtmpMessage::AudioData { data: media(200, i as u8) };
            s.push(audio, 300 + i * (big + 1), 1, false);
        }

        s.set_chunk_size(128);
        for i in 0..5u32 {
            let data = RtmpMessage::Unknown { type_id: 18, data: media(1000 + i as usize, 3) };
            s.push(data, 100 + i, 1, false);
        }
        (s.out, s.count)
    }

    #[test]
    fn follows_rml_rtmp_serializer_output_in_every_split() {
        let (bytes, count) = serializer_stream();
        assert!(bytes.len() > 2_000_000);
        let (messages, chunk_size) = reference_outcome(&bytes);
        assert_eq!(messages, count);
        assert_eq!(chunk_size, 128);
        let guard = assert_lockstep(&bytes, LIMITS);
        assert_eq!(guard.messages_seen(), count);
        assert_all_splits_ok(&bytes, LIMITS, messages, chunk_size);
        // Peak chunk size of the stream is 60000: a tighter limit must trip on it.
        let mut strict = ChunkGuard::new(GuardLimits { max_chunk_size: 4096, ..LIMITS });
        let err = strict.inspect(&bytes).unwrap_err();
        assert!(matches!(err, GuardViolation::ChunkSizeTooLarge { requested: 60_000, limit: 4096, .. }));
    }

    /// Hand-written chunks, for what rml_rtmp's serializer never emits.
    struct Writer {
        out: Vec<u8>,
        chunk_size: usize,
    }

    impl Writer {
        fn new() -> Self {
            Writer { out: Vec::new(), chunk_size: 128 }
        }

        fn basic(&mut self, format: u8, csid: u32) {
            let top = format << 6;
            if csid < 64 {
                self.out.push(top | csid as u8);
            } else if csid < 320 {
                self.out.extend_from_slice(&[top, (csid - 64) as u8]);
            } else {
                let v = csid - 64;
                self.out.extend_from_slice(&[top | 1, v as u8, (v >> 8) as u8]);
            }
        }

        /// Three-byte basic header even for a small csid (non-canonical but legal).
        fn basic_long(&mut self, format: u8, csid: u32) {
            let v = csid - 64;
            self.out.extend_from_slice(&[(format << 6) | 1, v as u8, (v >> 8) as u8]);
        }

        fn u24(&mut self, v: u32) {
            self.out.extend_from_slice(&v.to_be_bytes()[1..]);
        }

        /// Message header after the basic header; `ext` is written when given.
        fn header(&mut self, format: u8, ts: u32, len: usize, type_id: u8, ext: Option<u32>) {
            if format < 3 {
                self.u24(ts);
            }
            if format < 2 {
                self.u24(len as u32);
                self.out.push(type_id);
            }
            if format == 0 {
                self.out.extend_from_slice(&7u32.to_le_bytes());
            }
            if let Some(ext) = ext {
                self.out.extend_from_slice(&ext.to_be_bytes());
            }
        }

        /// A whole message; continuation chunks are type 3, repeating `ext` when given.
        fn message(&mut self, format: u8, csid: u32, ts: u32, type_id: u8, ext: Option<u32>, data: &[u8]) {
            self.basic(format, csid);
            self.header(format, ts, data.len(), type_id, ext);
            let mut chunks = data.chunks(self.chunk_size.max(1));
            if let Some(first) = chunks.next() {
                self.out.extend_from_slice(first);
            }
            for chunk in chunks {
                self.basic(3, csid);
                if let Some(ext) = ext {
                    self.out.extend_from_slice(&ext.to_be_bytes());
                }
                self.out.extend_from_slice(chunk);
            }
        }

        fn set_chunk_size(&mut self, csid: u32, size: u32) {
            self.message(0, csid, 0, 1, None, &size.to_be_bytes());
            self.chunk_size = size as usize;
        }
    }

    #[test]
    fn follows_hand_written_chunks_in_lockstep() {
        let mut w = Writer::new();
        let data: Vec<u8> = (0..1000u32).map(|i| i as u8).collect();
        // One-, two- and three-byte basic headers, including the extreme csids.
        for &csid in &[3u32, 63, 64, 100, 319, 320, 1000, 65_599] {
            w.message(0, csid, 10, 9, None, &data[..300]);
        }
        // Type 0 with an extended timestamp, split: every continuation carries it too.
        w.message(0, 100, 0xFF_FFFF, 9, Some(0x0123_4567), &data[..700]);
        // Type 3 starting a new message inherits the 0xFFFFFF field: extended timestamp again.
        w.message(3, 100, 0, 9, Some(0x0123_4567), &data[..700]);
        // Type 1 (new length and type), type 2 (delta only), type 3 (all inherited).
        w.message(1, 320, 40, 8, None, &data[..50]);
        w.message(2, 320, 41, 8, None, &data[..50]);
        w.message(3, 320, 0, 8, None, &data[..50]);
        w.message(1, 65_599, 0xFF_FFFF, 18, Some(0x0100_0000), &data[..500]);
        w.message(2, 65_599, 0xFF_FFFF, 18, Some(0x0FFF_FFFF), &data[..500]);
        // The same csid written in its three-byte form.
        w.basic_long(3, 100);
        w.header(3, 0, 0, 0, Some(0x00FF_FFFF));
        w.out.extend_from_slice(&data[..128]);
        w.basic_long(3, 100);
        w.header(3, 0, 0, 0, Some(0));
        w.out.extend_from_slice(&data[128..256]);
        w.basic(3, 100);
        w.header(3, 0, 0, 0, Some(1));
        w.out.extend_from_slice(&data[256..384]);
        w.basic(3, 100);
        w.header(3, 0, 0, 0, Some(2));
        w.out.extend_from_slice(&data[384..512]);
        w.basic(3, 100);
        w.header(3, 0, 0, 0, Some(3));
        w.out.extend_from_slice(&data[512..640]);
        w.basic(3, 100);
        w.header(3, 0, 0, 0, Some(3));
        w.out.extend_from_slice(&data[640..700]);
        // Zero-length messages complete on their header alone.
        w.message(0, 5, 0, 20, None, &[]);
        w.message(3, 5, 0, 20, None, &[]);
        // Abort at a message boundary has no effect.
        w.message(0, 2, 0, 2, None, &5u32.to_be_bytes());
        // SetChunkSize on an odd csid and message stream, then one split across two chunks,
        // then one with trailing bytes (ignored), then a message exactly one chunk long.
        w.set_chunk_size(65_599, 2);
        w.message(0, 3, 1, 9, None, &data[..9]);
        w.set_chunk_size(2, 1000);
        w.message(0, 3, 1, 9, None, &data[..1000]);
        w.message(0, 4, 1, 1, None, &[0, 0, 0x10, 0, 0xAA, 0xBB]);
        w.chunk_size = 4096;
        w.message(0, 6, 1, 9, None, &data[..1000]);
        w.message(1, 6, 1, 9, None, &[7u8; 4096]);
        w.message(1, 6, 1, 9, None, &[7u8; 4097]);

        let (messages, chunk_size) = reference_outcome(&w.out);
        assert_eq!(chunk_size, 4096);
        let guard = assert_lockstep(&w.out, LIMITS);
        assert_eq!(guard.messages_seen(), messages);
        assert_all_splits_ok(&w.out, LIMITS, messages, chunk_size);
    }

    #[test]
    fn stays_in_sync_with_rml_rtmp_on_tolerated_interleaving() {
        // rml_rtmp appends the chunks of a second large message to the first one's buffer;
        // the guard must reproduce the resulting (odd) framing exactly.
        let mut w = Writer::new();
        w.basic(0, 4);
        w.header(0, 0, 300, 9, None);
        w.out.extend_from_slice(&[1; 128]);
        w.basic(0, 6);
        w.header(0, 0, 1000, 9, None);
        w.out.extend_from_slice(&[2; 128]);
        for _ in 0..5 {
            w.basic(3, 6);
            w.out.extend_from_slice(&[3; 128]);
        }
        w.basic(3, 6);
        w.out.extend_from_slice(&[4; 1000 - 6 * 128 - 128]);
        w.message(0, 8, 0, 9, None, &[5; 10]);
        // A 256-byte message on a new csid when 256 bytes are buffered: its chunk is empty.
        w.basic(0, 4);
        w.header(0, 0, 300, 9, None);
        w.out.extend_from_slice(&[1; 128]);
        w.basic(3, 4);
        w.out.extend_from_slice(&[1; 128]);
        w.basic(0, 9);
        w.header(0, 0, 256, 9, None);
        // csid 4 then starts a fresh 300-byte message.
        w.message(3, 4, 0, 9, None, &[6; 300]);
        let guard = assert_lockstep(&w.out, NO_LIMITS);
        assert_eq!(guard.messages_seen(), 4);
    }

    fn set_chunk_size_bytes(csid: u32, size: u32) -> Vec<u8> {
        let mut w = Writer::new();
        w.message(0, csid, 0, 1, None, &size.to_be_bytes());
        w.out
    }

    #[test]
    fn refuses_chunk_size_over_limit() {
        let mut w = Writer::new();
        w.message(0, 3, 0, 20, None, &[0; 300]);
        let offset = w.out.len() as u64;
        w.out.extend(set_chunk_size_bytes(2, 100_000));
        let mut guard = ChunkGuard::new(LIMITS);
        let err = guard.inspect(&w.out).unwrap_err();
        assert_eq!(err, GuardViolation::ChunkSizeTooLarge { requested: 100_000, limit: 65_536, offset });
        assert_eq!(err.reason(), "chunk_size");
        assert_eq!(err.offset(), offset);
        assert_eq!(guard.peer_chunk_size(), 128);
        // Within the limit it is applied.
        let mut ok = ChunkGuard::new(LIMITS);
        ok.inspect(&set_chunk_size_bytes(2, 65_536)).unwrap();
        assert_eq!(ok.peer_chunk_size(), 65_536);
    }

    #[test]
    fn refuses_set_chunk_size_split_across_chunks_and_calls() {
        let mut w = Writer::new();
        w.set_chunk_size(2, 2);
        w.basic(0, 2);
        w.header(0, 0, 4, 1, None);
        w.out.extend_from_slice(&70_000u32.to_be_bytes()[..2]);
        let second_chunk = w.out.len() as u64;
        w.basic(3, 2);
        w.out.extend_from_slice(&70_000u32.to_be_bytes()[2..]);
        let mut guard = ChunkGuard::new(LIMITS);
        for byte in &w.out[..w.out.len() - 1] {
            guard.inspect(std::slice::from_ref(byte)).unwrap();
        }
        assert_eq!(guard.peer_chunk_size(), 2);
        let err = guard.inspect(&w.out[w.out.len() - 1..]).unwrap_err();
        assert_eq!(err, GuardViolation::ChunkSizeTooLarge { requested: 70_000, limit: 65_536, offset: second_chunk });
    }

    #[test]
    fn refuses_invalid_chunk_sizes() {
        for requested in [0u32, 0x8000_0000, u32::MAX] {
            let mut guard = ChunkGuard::new(NO_LIMITS);
            let err = guard.inspect(&set_chunk_size_bytes(2, requested)).unwrap_err();
            assert_eq!(err, GuardViolation::InvalidChunkSize { requested, offset: 0 });
            assert_eq!(err.reason(), "chunk_size");
        }
        let mut w = Writer::new();
        w.message(0, 2, 0, 1, None, &[0, 1]);
        let err = ChunkGuard::new(LIMITS).inspect(&w.out).unwrap_err();
        assert_eq!(err, GuardViolation::TruncatedSetChunkSize { length: 2, offset: 0 });
        assert_eq!(err.reason(), "malformed");
    }

    #[test]
    fn refuses_declared_message_over_limit_before_its_data() {
        let mut w = Writer::new();
        w.message(0, 6, 0, 20, None, &[0; 200]);
        let offset = w.out.len() as u64;
        w.basic(1, 6);
        w.header(1, 33, 0xFF_FFFF, 9, None);
        // Feed only up to the end of the length field: refused already.
        let header_end = offset as usize + 1 + 3 + 3;
        let mut guard = ChunkGuard::new(LIMITS);
        let err = guard.inspect(&w.out[..header_end]).unwrap_err();
        let expected = GuardViolation::MessageTooLarge { csid: 6, length: 0xFF_FFFF, limit: 1024 * 1024, offset };
        assert_eq!(err, expected);
        assert_eq!(err.reason(), "message_size");
        assert_eq!(guard.bytes_seen(), header_end as u64);
        // Poisoned: the same answer afterwards, without consuming more.
        assert_eq!(guard.inspect(&[0; 10]).unwrap_err(), expected);
        assert_eq!(guard.bytes_seen(), header_end as u64);

        // Type 0 declarations are checked too; exactly the limit is fine.
        let mut w = Writer::new();
        w.basic(0, 4);
        w.header(0, 0, 1024 * 1024, 9, None);
        assert!(ChunkGuard::new(LIMITS).inspect(&w.out).is_ok());
    }

    #[test]
    fn refuses_compressed_chunk_on_unknown_stream_like_rml_rtmp() {
        let mut w = Writer::new();
        w.message(0, 3, 0, 20, None, &[0; 10]);
        let offset = w.out.len() as u64;
        w.basic(3, 9);
        w.out.extend_from_slice(&[0; 10]);
        let err = ChunkGuard::new(LIMITS).inspect(&w.out).unwrap_err();
        assert_eq!(err, GuardViolation::ChunkWithoutHeader { csid: 9, offset });
        assert_eq!(err.reason(), "malformed");
        match Reference::new().feed(&w.out) {
            Err(ChunkDeserializationError::NoPreviousChunkOnStream { csid: 9 }) => {}
            other => panic!("unexpected reference result {other:?}"),
        }
        for format in 1..=2u8 {
            let mut w = Writer::new();
            w.basic(format, 400);
            let err = ChunkGuard::new(LIMITS).inspect(&w.out).unwrap_err();
            assert_eq!(err, GuardViolation::ChunkWithoutHeader { csid: 400, offset: 0 });
        }
    }

    /// Runs the reference on input the guard refused: it must not survive either.
    fn reference_panics(bytes: &[u8]) -> bool {
        let bytes = bytes.to_vec();
        catch_unwind(AssertUnwindSafe(move || {
            let _ = Reference::new().feed(&bytes);
        }))
        .is_err()
    }

    #[test]
    fn refuses_interleaving_that_breaks_rml_rtmp() {
        let mut w = Writer::new();
        w.basic(0, 4);
        w.header(0, 0, 300, 9, None);
        w.out.extend_from_slice(&[1; 128]);
        let offset = w.out.len() as u64;
        w.message(0, 5, 0, 8, None, &[2; 10]);
        w.out.extend_from_slice(&[0; 64]);
        let err = ChunkGuard::new(LIMITS).inspect(&w.out).unwrap_err();
        assert_eq!(err, GuardViolation::InterleavedMessage { csid: 5, length: 10, buffered: 128, offset });
        // Debug: subtraction overflow; release: `reserve(~2^63)` capacity overflow.
        assert!(reference_panics(&w.out), "rml_rtmp panics here");
        // Appending a whole short message to a partial one is refused as well.
        let mut w = Writer::new();
        w.basic(0, 4);
        w.header(0, 0, 300, 9, None);
        w.out.extend_from_slice(&[1; 128]);
        w.message(0, 5, 0, 8, None, &[2; 128]);
        let err = ChunkGuard::new(LIMITS).inspect(&w.out).unwrap_err();
        assert!(matches!(err, GuardViolation::InterleavedMessage { buffered: 128, length: 128, .. }));
    }

    #[test]
    fn refuses_extended_timestamp_rml_rtmp_cannot_subtract() {
        let mut w = Writer::new();
        w.message(0, 3, 0, 9, None, &[0; 4]);
        let offset = w.out.len() as u64;
        w.message(2, 3, 0xFF_FFFF, 9, Some(5), &[0; 4]);
        let err = ChunkGuard::new(LIMITS).inspect(&w.out).unwrap_err();
        assert_eq!(err, GuardViolation::InvalidExtendedTimestamp { csid: 3, value: 5, offset });
        // Release builds wrap the subtraction instead (a bogus timestamp, no panic).
        if cfg!(debug_assertions) {
            assert!(reference_panics(&w.out), "rml_rtmp underflows here");
        }
    }

    #[test]
    fn bounds_the_number_of_chunk_streams() {
        let mut w = Writer::new();
        for csid in 0..MAX_CHUNK_STREAMS as u32 {
            w.message(0, 64 + csid, 0, 9, None, &[]);
        }
        // Reusing a known stream is fine.
        w.message(0, 64, 0, 9, None, &[]);
        let offset = w.out.len() as u64;
        w.message(0, 10_000, 0, 9, None, &[]);
        let mut guard = ChunkGuard::new(LIMITS);
        let err = guard.inspect(&w.out).unwrap_err();
        assert_eq!(err, GuardViolation::TooManyChunkStreams { csid: 10_000, limit: MAX_CHUNK_STREAMS as u32, offset });
        assert_eq!(guard.messages_seen(), MAX_CHUNK_STREAMS as u64 + 1);
    }

    #[test]
    fn violations_display_and_are_errors() {
        let all = [
            GuardViolation::ChunkSizeTooLarge { requested: 1, limit: 2, offset: 3 },
            GuardViolation::InvalidChunkSize { requested: 0, offset: 3 },
            GuardViolation::TruncatedSetChunkSize { length: 1, offset: 3 },
            GuardViolation::MessageTooLarge { csid: 4, length: 5, limit: 6, offset: 3 },
            GuardViolation::ChunkWithoutHeader { csid: 4, offset: 3 },
            GuardViolation::TooManyChunkStreams { csid: 4, limit: 5, offset: 3 },
            GuardViolation::InterleavedMessage { csid: 4, length: 5, buffered: 6, offset: 3 },
            GuardViolation::InvalidExtendedTimestamp { csid: 4, value: 5, offset: 3 },
        ];
        for violation in all {
            let error: Box<dyn Error> = Box::new(violation.clone());
            let text = error.to_string();
            assert!(text.contains("offset 3"), "{text}");
            assert_eq!(violation.offset(), 3);
            assert!(["chunk_size", "message_size", "malformed"].contains(&violation.reason()));
        }
    }

    /// Semi-valid chunk streams: mostly well-formed, with random header compression, csids,
    /// extended timestamps, chunk sizes, and occasional corruption or interleaving.
    fn semi_valid_stream(rng: &mut XorShift) -> Vec<u8> {
        const CSIDS: [u32; 8] = [2, 3, 4, 5, 6, 70, 400, 65_599];
        let mut w = Writer::new();
        let mut known: HashMap<u32, (usize, u8, u32)> = HashMap::new();
        for _ in 0..rng.below(40) {
            if rng.chance(3) {
                let junk_len = rng.below(6) + 1;
                let junk = rng.bytes(junk_len);
                w.out.extend(junk);
                continue;
            }
            if rng.chance(5) {
                // A chunk cut short / interleaved: header plus part of a payload.
                let csid = CSIDS[rng.below(CSIDS.len())];
                w.basic(0, csid);
                let len = rng.below(600);
                w.header(0, 0, len, 9, None);
                let part = rng.below(len + 1).min(w.chunk_size);
                w.out.extend(rng.bytes(part));
                continue;
            }
            let csid = CSIDS[rng.below(CSIDS.len())];
            let previous = known.get(&csid).copied();
            let format = match previous {
                None => 0,
                Some(_) => rng.below(4) as u8,
            };
            let extended = rng.chance(15);
            let ts = if extended { 0xFF_FFFF } else { rng.below(1000) as u32 };
            let (len, type_id, field) = match (format, previous) {
                (2, Some((len, type_id, _))) => (len, type_id, ts),
                (3, Some(previous)) => previous,
                _ => {
                    let type_id = [1u8, 2, 8, 9, 18, 20, 0x55][rng.below(7)];
                    let len = if type_id == 1 { 4 } else { rng.below(700) };
                    (len, type_id, ts)
                }
            };
            let ext = (field == 0xFF_FFFF).then(|| {
                if format == 0 || rng.chance(2) {
                    rng.next() as u32
                } else {
                    0xFF_FFFF + (rng.next() as u32 >> 4)
                }
            });
            let data = if type_id == 1 {
                let size = if rng.chance(2) { rng.next() as u32 } else { rng.below(3000) as u32 + 1 };
                size.to_be_bytes()[..len.min(4)].to_vec()
            } else {
                rng.bytes(len)
            };
            w.message(format, csid, field, type_id, ext, &data);
            if type_id == 1 && len == 4 {
                w.chunk_size = u32::from_be_bytes([data[0], data[1], data[2], data[3]]) as usize;
            }
            known.insert(csid, (len, type_id, field));
        }
        w.out
    }

    /// Guard verdict must match rml_rtmp: same messages when accepted.
    fn assert_agrees_with_reference(bytes: &[u8]) {
        let mut guard = ChunkGuard::new(NO_LIMITS);
        match guard.inspect(bytes) {
            Ok(()) => {
                let mut reference = Reference::new();
                reference.feed(bytes).unwrap();
                assert_eq!(guard.messages_seen(), reference.messages);
                assert_eq!(guard.peer_chunk_size(), reference.chunk_size());
            }
            Err(GuardViolation::ChunkWithoutHeader { csid, .. }) => {
                let mut reference = Reference::new();
                match reference.feed(bytes) {
                    Err(ChunkDeserializationError::NoPreviousChunkOnStream { csid: c }) => {
                        assert_eq!(c, csid);
                        assert_eq!(reference.messages, guard.messages_seen());
                    }
                    other => panic!("reference disagrees: {other:?}"),
                }
            }
            Err(_) => {}
        }
    }

    #[test]
    fn agrees_with_rml_rtmp_on_semi_valid_streams() {
        let mut rng = XorShift(0xDEAD_BEEF_CAFE_F00D);
        let mut accepted = 0;
        for _ in 0..3000 {
            let bytes = semi_valid_stream(&mut rng);
            if ChunkGuard::new(NO_LIMITS).inspect(&bytes).is_ok() {
                accepted += 1;
            }
            assert_agrees_with_reference(&bytes);
            fuzz_inspect(&bytes);
        }
        assert!(accepted > 300, "only {accepted} streams accepted");
    }

    #[test]
    fn random_bytes_never_panic_and_memory_stays_bounded() {
        let mut rng = XorShift(0x1234_5678_9ABC_DEF1);
        for round in 0..4000 {
            let len = rng.below(3000);
            let mut bytes = rng.bytes(len);
            if round % 2 == 0 {
                // Start with a plausible type 0 header so parsing gets further.
                if let Some(first) = bytes.first_mut() {
                    *first &= 0x3F;
                }
            }
            let limits = if round % 3 == 0 { NO_LIMITS } else { LIMITS };
            let mut guard = ChunkGuard::new(limits);
            let mut rest = &bytes[..];
            while !rest.is_empty() {
                let take = (rng.below(64) + 1).min(rest.len());
                let _ = guard.inspect(&rest[..take]);
                rest = &rest[take..];
                assert!(guard.streams.len() <= MAX_CHUNK_STREAMS);
                assert!(guard.streams.capacity() <= 2 * MAX_CHUNK_STREAMS);
                assert!(guard.buffered <= limits.max_message_size.min(0xFF_FFFF));
            }
            assert_agrees_with_reference(&bytes);
            fuzz_inspect(&bytes);
        }
        assert!(std::mem::size_of::<ChunkGuard>() < 256);
    }

    #[test]
    fn oversized_amf_commands_are_refused_from_the_header() {
        // A type-20 (AMF0 command) message declared at 20 KiB: refused before its payload arrives, because a
        // deeply nested AMF0 value of that size overflows rml_amf0's recursive parser.
        let mut g = ChunkGuard::new(LIMITS);
        let header = [0x03, 0, 0, 0, 0, 0x50, 0x00, 20, 0, 0, 0, 0];
        let err = g.inspect(&header).unwrap_err();
        assert!(matches!(err, GuardViolation::CommandTooLarge { type_id: 20, length: 0x5000, .. }), "{err:?}");
        assert_eq!(err.reason(), "message_size");
        // Video of the same size is fine, and so is a normal-sized command.
        let mut g = ChunkGuard::new(LIMITS);
        assert!(g.inspect(&[0x04, 0, 0, 0, 0, 0x50, 0x00, 9, 1, 0, 0, 0]).is_ok());
        let mut g = ChunkGuard::new(LIMITS);
        assert!(g.inspect(&[0x03, 0, 0, 0, 0, 0x04, 0x00, 20, 0, 0, 0, 0]).is_ok());
    }

    #[test]
    fn fuzz_entry_handles_edge_inputs() {
        fuzz_inspect(&[]);
        fuzz_inspect(&[0]);
        fuzz_inspect(&[255]);
        fuzz_inspect(&[3, 0x03, 0, 0, 0, 0, 0, 4, 1, 0, 0, 0, 0, 0, 0x10, 0]);
        let (bytes, _) = serializer_stream();
        let mut data = vec![200];
        data.extend_from_slice(&bytes[..100_000]);
        fuzz_inspect(&data);
    }
}
