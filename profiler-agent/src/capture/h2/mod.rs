//! HTTP/2 and gRPC capture, user-space half.
//!
//! The kernel follows a connection from the client connection preface on and sends the bytes of
//! every syscall on it as an [`H2Chunk`] (with the sizes of what it could not keep). Here each
//! direction is cut into frames ([`frame`]), header blocks are decoded with one HPACK decoder
//! per direction ([`hpack`]), and streams are followed from the request's HEADERS to the
//! response's END_STREAM (or RST_STREAM): each becomes a span. Requests whose `content-type` is
//! `application/grpc*` become gRPC spans (`rpc.*` attributes, status from the trailers); the
//! others HTTP spans like HTTP/1.x ones.
//!
//! Each finished server stream is also kept as a [`ServedStream`] (its time window and the
//! threads that wrote its response), which links the CPU samples of those threads to its span
//! (see [`super::stream_windows`]).
//!
//! When bytes the parser needs are missing (a frame header or header block the kernel did not
//! keep, an HPACK error), the connection is lost: its open streams, and the new ones it can
//! still see, are counted as unparsed, never reported with a guessed method or status.

pub mod frame;
pub mod fuzz;
pub mod hpack;

use std::{collections::HashMap, sync::Arc};

use profiler_common::{http_role, H2Chunk, TraceCtx, H2_GAPS};
use rustc_hash::FxHashMap;

use self::frame::{flag, kind, Frame, FrameError, FrameReader};
use super::{
    assemble::{comm_str, http_attributes, push_server_address, str_attr, Clock, HttpFields},
    http1::{parse_traceparent, TraceParent},
    span::{AttrValue, Attribute, Resource, Span, SpanKind},
    stream_windows::ServedStream,
};
use crate::collect::SpanLink;

/// Streams followed at once on one connection; more are counted as unparsed.
pub const MAX_OPEN_STREAMS: usize = 4096;

/// Threads noted per stream as writers of its response; more are not noted.
const MAX_WRITERS: usize = 8;

/// Counters of what the HTTP/2 assembler saw.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct H2Stats {
    /// Chunk records received.
    pub chunks: u64,
    /// Requests (HEADERS opening a stream) seen.
    pub streams: u64,
    /// Spans finished.
    pub spans: u64,
    /// Streams without a span, by reason.
    pub unparsed: HashMap<&'static str, u64>,
    /// Connections given up, by reason.
    pub lost_connections: HashMap<&'static str, u64>,
    /// Response frames of streams whose request was not seen.
    pub orphan_frames: u64,
}

impl H2Stats {
    fn unparsed(&mut self, reason: &'static str, n: u64) {
        if n > 0 {
            *self.unparsed.entry(reason).or_default() += n;
        }
    }
}

/// The header fields the capture uses.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct Fields {
    method: Option<String>,
    path: Option<String>,
    authority: Option<String>,
    content_type: Option<String>,
    user_agent: Option<String>,
    traceparent: Option<TraceParent>,
    status: Option<u16>,
    grpc_status: Option<i64>,
}

impl Fields {
    fn take(&mut self, name: &[u8], value: &[u8]) {
        let text = || std::str::from_utf8(value).ok().map(str::to_string);
        match name {
            b":method" => self.method = text(),
            b":path" => self.path = text(),
            b":authority" => self.authority = text(),
            b"host" if self.authority.is_none() => self.authority = text(),
            b"content-type" => self.content_type = text(),
            b"user-agent" => self.user_agent = text(),
            b"traceparent" => self.traceparent = parse_traceparent(value),
            b":status" => {
                self.status = std::str::from_utf8(value)
                    .ok()
                    .filter(|s| s.len() == 3)
                    .and_then(|s| s.parse().ok())
                    .filter(|s| (100..=999).contains(s))
            }
            b"grpc-status" => {
                self.grpc_status = std::str::from_utf8(value).ok().and_then(|s| s.parse().ok())
            }
            _ => {}
        }
    }
}

struct Stream {
    started_ns: u64,
    request: Fields,
    /// The trace context of the thread that sent the request (client side).
    sender_ctx: Option<TraceCtx>,
    status: Option<u16>,
    grpc_status: Option<i64>,
    /// Threads that wrote frames of the response (server side).
    writers: Vec<u32>,
}

/// A header block being collected (HEADERS or PUSH_PROMISE, then CONTINUATIONs).
struct Block {
    kind: u8,
    stream_id: u32,
    end_stream: bool,
    bytes: Vec<u8>,
    started_ns: u64,
}

struct Direction {
    reader: FrameReader,
    decoder: hpack::Decoder,
    block: Option<Block>,
}

impl Direction {
    fn new(preface: bool) -> Direction {
        Direction {
            reader: FrameReader::new(preface),
            // Accepts tables up to 1 MiB: a peer may announce more than the initial 4 KiB.
            decoder: hpack::Decoder::default(),
            block: None,
        }
    }
}

struct Connection {
    role: u32,
    pid: u32,
    comm: String,
    /// Client to server bytes (they start with the preface), and server to client.
    requests: Direction,
    responses: Direction,
    streams: FxHashMap<u32, Stream>,
    /// Why the connection is no longer parsed.
    lost: Option<&'static str>,
    /// Scratch list of frames of one chunk.
    frames: Vec<Frame>,
}

/// Connection identity, as in the HTTP/1 assembler: (pid, fd, when the kernel began following).
type ConnId = (u32, u32, u64);

/// Turns chunk records into spans; see the module documentation.
pub struct H2Assembler {
    connections: FxHashMap<ConnId, Connection>,
    ids: SpanIds,
    pub stats: H2Stats,
    /// Server streams finished since the caller last took them.
    pub served: Vec<ServedStream>,
}

impl Default for H2Assembler {
    fn default() -> Self {
        H2Assembler {
            connections: FxHashMap::default(),
            ids: SpanIds::new(),
            stats: H2Stats::default(),
            served: Vec::new(),
        }
    }
}

/// What a frame handler needs besides the connection.
struct Context<'a> {
    clock: Clock,
    resource: &'a mut dyn FnMut(u32, &str) -> Arc<Resource>,
    out: &'a mut Vec<Span>,
    stats: &'a mut H2Stats,
    ids: &'a mut SpanIds,
    served: &'a mut Vec<ServedStream>,
    /// The thread whose syscall moved the frames.
    tid: u32,
}

impl H2Assembler {
    /// Handles one chunk record and the bytes it carried; finished spans are appended to `out`.
    pub fn push(
        &mut self,
        chunk: &H2Chunk,
        data: &[u8],
        clock: Clock,
        resource: &mut dyn FnMut(u32, &str) -> Arc<Resource>,
        out: &mut Vec<Span>,
    ) {
        self.stats.chunks += 1;
        let id = (chunk.pid, chunk.fd, chunk.conn_start_ns);
        let connection = self
            .connections
            .entry(id)
            .or_insert_with(|| Connection::new(chunk));
        let write = chunk.write != 0;
        let request_direction = (chunk.role == http_role::SERVER) != write;
        let mut frames = std::mem::take(&mut connection.frames);
        let direction = if request_direction {
            &mut connection.requests
        } else {
            &mut connection.responses
        };
        let result = read_frames(&mut direction.reader, chunk, data, &mut frames);
        let sender_ctx = (write && chunk.span_id != [0; 8]).then_some(TraceCtx {
            trace_id: chunk.trace_id,
            span_id: chunk.span_id,
        });
        let mut cx = Context {
            clock,
            resource,
            out,
            stats: &mut self.stats,
            ids: &mut self.ids,
            served: &mut self.served,
            tid: chunk.tid,
        };
        for frame in frames.drain(..) {
            connection.on_frame(request_direction, frame, sender_ctx, &mut cx);
        }
        connection.frames = frames;
        if let Err(error) = result {
            connection.lose(error.label(), cx.stats);
        }
    }

    /// The process closed the connection: streams still open had no response.
    pub fn close(&mut self, pid: u32, fd: u32, conn_start_ns: u64) {
        if let Some(connection) = self.connections.remove(&(pid, fd, conn_start_ns)) {
            connection.abandon(&mut self.stats);
        }
    }

    /// Forgets connections of processes `alive` says are gone.
    pub fn forget_dead(&mut self, alive: &dyn Fn(u32) -> bool) {
        let stats = &mut self.stats;
        self.connections.retain(|_, connection| {
            let keep = alive(connection.pid);
            if !keep {
                stats.unparsed("no_response", connection.streams.len() as u64);
            }
            keep
        });
    }

    /// At shutdown: streams still open are counted as unfinished.
    pub fn finish_all(&mut self) {
        for (_, connection) in self.connections.drain() {
            self.stats
                .unparsed("unfinished", connection.streams.len() as u64);
        }
    }

    /// Per process, the start of its oldest server stream still open (`CLOCK_MONOTONIC`).
    pub fn open_server_streams(&self) -> HashMap<u32, u64> {
        let mut open: HashMap<u32, u64> = HashMap::new();
        for connection in self.connections.values() {
            if connection.role != http_role::SERVER {
                continue;
            }
            if let Some(start) = connection.streams.values().map(|s| s.started_ns).min() {
                let since = open.entry(connection.pid).or_insert(start);
                *since = (*since).min(start);
            }
        }
        open
    }

    /// Connections followed.
    pub fn connections(&self) -> usize {
        self.connections.len()
    }
}

/// Feeds the bytes of one chunk, and its gaps, to the direction's frame reader.
fn read_frames(
    reader: &mut FrameReader,
    chunk: &H2Chunk,
    data: &[u8],
    frames: &mut Vec<Frame>,
) -> Result<(), FrameError> {
    let start_ns = if chunk.write != 0 {
        chunk.enter_ns
    } else {
        chunk.exit_ns
    };
    let end_ns = chunk.exit_ns;
    let mut offset = 0usize;
    let mut missing_total = 0u64;
    let count = (chunk.gap_count as usize).min(H2_GAPS);
    for &[at, missing] in &chunk.gaps[..count] {
        let at = (at as usize).clamp(offset, data.len());
        reader.push(&data[offset..at], start_ns, end_ns, frames)?;
        offset = at;
        reader.skip(u64::from(missing), end_ns, frames)?;
        missing_total += u64::from(missing);
    }
    reader.push(&data[offset..], start_ns, end_ns, frames)?;
    let after = chunk
        .moved
        .saturating_sub(data.len() as u64)
        .saturating_sub(missing_total);
    reader.skip(after, end_ns, frames)
}

impl Connection {
    fn new(chunk: &H2Chunk) -> Connection {
        Connection {
            role: chunk.role,
            pid: chunk.pid,
            comm: comm_str(&chunk.comm),
            requests: Direction::new(true),
            responses: Direction::new(false),
            streams: FxHashMap::default(),
            lost: None,
            frames: Vec::new(),
        }
    }

    /// Gives up on the connection: its open streams are unparsed.
    fn lose(&mut self, reason: &'static str, stats: &mut H2Stats) {
        if self.lost.is_none() {
            self.lost = Some(reason);
            *stats.lost_connections.entry(reason).or_default() += 1;
        }
        stats.unparsed(self.lost.unwrap_or(reason), self.streams.len() as u64);
        self.streams.clear();
        self.requests.block = None;
        self.responses.block = None;
    }

    /// The connection ended with streams open.
    fn abandon(self, stats: &mut H2Stats) {
        stats.unparsed("no_response", self.streams.len() as u64);
    }

    fn on_frame(
        &mut self,
        request_direction: bool,
        frame: Frame,
        sender_ctx: Option<TraceCtx>,
        cx: &mut Context<'_>,
    ) {
        if let Some(reason) = self.lost {
            // Requests that can still be seen are counted, not parsed.
            if request_direction && frame.kind == kind::HEADERS {
                cx.stats.unparsed(reason, 1);
            }
            return;
        }
        if !request_direction
            && self.role == http_role::SERVER
            && matches!(frame.kind, kind::HEADERS | kind::CONTINUATION | kind::DATA)
        {
            if let Some(stream) = self.streams.get_mut(&frame.stream_id) {
                if !stream.writers.contains(&cx.tid) && stream.writers.len() < MAX_WRITERS {
                    stream.writers.push(cx.tid);
                }
            }
        }
        let direction = if request_direction {
            &mut self.requests
        } else {
            &mut self.responses
        };
        if let Some(block) = &mut direction.block {
            if frame.kind != kind::CONTINUATION || frame.stream_id != block.stream_id {
                return self.lose("continuation_expected", cx.stats);
            }
            block.bytes.extend_from_slice(&frame.payload);
            if block.bytes.len() > 4 * frame::MAX_HEADER_FRAGMENT as usize {
                return self.lose("header_block_too_large", cx.stats);
            }
            if frame.flags & flag::END_HEADERS != 0 {
                if let Some(block) = direction.block.take() {
                    self.on_block(request_direction, block, frame.ended_ns, sender_ctx, cx);
                }
            }
            return;
        }
        match frame.kind {
            kind::HEADERS | kind::PUSH_PROMISE => {
                let Some(fragment) = header_fragment(&frame) else {
                    return self.lose("malformed_headers", cx.stats);
                };
                let block = Block {
                    kind: frame.kind,
                    stream_id: frame.stream_id,
                    end_stream: frame.kind == kind::HEADERS && frame.flags & flag::END_STREAM != 0,
                    bytes: fragment.to_vec(),
                    started_ns: frame.started_ns,
                };
                if frame.flags & flag::END_HEADERS != 0 {
                    self.on_block(request_direction, block, frame.ended_ns, sender_ctx, cx);
                } else {
                    direction.block = Some(block);
                }
            }
            kind::CONTINUATION => self.lose("unexpected_continuation", cx.stats),
            kind::DATA if !request_direction && frame.flags & flag::END_STREAM != 0 => {
                self.finish(frame.stream_id, frame.ended_ns, false, cx);
            }
            kind::RST_STREAM if self.streams.contains_key(&frame.stream_id) => {
                self.finish(frame.stream_id, frame.ended_ns, true, cx);
            }
            kind::GOAWAY if !request_direction && frame.payload.len() >= 4 => {
                // Streams above the server's last one were not processed: the client retries
                // them elsewhere, so they are not spans.
                let last = u32::from_be_bytes([
                    frame.payload[0],
                    frame.payload[1],
                    frame.payload[2],
                    frame.payload[3],
                ]) & 0x7fff_ffff;
                let before = self.streams.len();
                self.streams.retain(|&id, _| id <= last);
                cx.stats
                    .unparsed("refused_by_goaway", (before - self.streams.len()) as u64);
            }
            _ => {}
        }
    }

    /// A complete header block arrived (its last frame ended at `ended_ns`).
    fn on_block(
        &mut self,
        request_direction: bool,
        block: Block,
        ended_ns: u64,
        sender_ctx: Option<TraceCtx>,
        cx: &mut Context<'_>,
    ) {
        let direction = if request_direction {
            &mut self.requests
        } else {
            &mut self.responses
        };
        let mut fields = Fields::default();
        if let Err(error) = direction
            .decoder
            .decode(&block.bytes, |name, value| fields.take(name, value))
        {
            return self.lose(error.label(), cx.stats);
        }
        if block.kind == kind::PUSH_PROMISE {
            // Decoded for the HPACK table only: pushed responses are not requests.
            return;
        }
        if request_direction {
            if block.stream_id == 0 {
                return self.lose("headers_on_stream_0", cx.stats);
            }
            if self.streams.contains_key(&block.stream_id) {
                return; // Request trailers.
            }
            cx.stats.streams += 1;
            if self.streams.len() >= MAX_OPEN_STREAMS {
                return cx.stats.unparsed("too_many_streams", 1);
            }
            self.streams.insert(
                block.stream_id,
                Stream {
                    started_ns: block.started_ns,
                    request: fields,
                    sender_ctx,
                    status: None,
                    grpc_status: None,
                    writers: Vec::new(),
                },
            );
            return;
        }
        let Some(stream) = self.streams.get_mut(&block.stream_id) else {
            cx.stats.orphan_frames += 1;
            return;
        };
        if stream.status.is_none() {
            // Interim (1xx) responses are followed by the final one.
            stream.status = fields.status.filter(|s| *s >= 200);
        }
        if fields.grpc_status.is_some() {
            stream.grpc_status = fields.grpc_status;
        }
        if block.end_stream {
            self.finish(block.stream_id, ended_ns, false, cx);
        }
    }

    /// The stream ended (response END_STREAM, or a reset): its span.
    fn finish(&mut self, stream_id: u32, end_ns: u64, reset: bool, cx: &mut Context<'_>) {
        let Some(stream) = self.streams.remove(&stream_id) else {
            cx.stats.orphan_frames += 1;
            return;
        };
        let kind = if self.role == http_role::CLIENT {
            SpanKind::Client
        } else {
            SpanKind::Server
        };
        let request = &stream.request;
        let (Some(method), Some(path)) = (&request.method, &request.path) else {
            return cx.stats.unparsed("request_pseudo_headers_missing", 1);
        };
        let grpc = request
            .content_type
            .as_deref()
            .is_some_and(|t| t.starts_with("application/grpc"));
        let rpc = if grpc { grpc_method(path) } else { None };
        let (name, mut attributes, mut error) = match rpc {
            Some((service, method)) => {
                let mut attributes = vec![
                    str_attr("rpc.system", "grpc"),
                    str_attr("rpc.service", service),
                    str_attr("rpc.method", method),
                ];
                push_server_address(&mut attributes, request.authority.as_deref());
                let error = match stream.grpc_status {
                    Some(code) => {
                        attributes.push(("rpc.grpc.status_code".into(), AttrValue::Int(code)));
                        let error = grpc_error(kind, code);
                        if error {
                            attributes.push(str_attr("error.type", &code.to_string()));
                        }
                        error
                    }
                    // No status in the trailers: the call did not end normally.
                    None => {
                        let reason = if reset {
                            "stream_reset"
                        } else {
                            "no_grpc_status"
                        };
                        attributes.push(str_attr("error.type", reason));
                        true
                    }
                };
                (format!("{service}/{method}"), attributes, error)
            }
            None => {
                let Some(status) = stream.status else {
                    return cx.stats.unparsed(
                        if reset {
                            "reset_before_response"
                        } else {
                            "no_status"
                        },
                        1,
                    );
                };
                let fields = HttpFields {
                    method,
                    target: path,
                    version: "2",
                    host: request.authority.as_deref(),
                    user_agent: request.user_agent.as_deref(),
                };
                let (attributes, route, error) = http_attributes(kind, &fields, status);
                (format!("{method} {route}"), attributes, error)
            }
        };
        if reset && !error {
            error = true;
            attributes.push(str_attr("error.type", "stream_reset"));
        }
        let (trace_id, parent_span_id) = match (kind, &request.traceparent, stream.sender_ctx) {
            (SpanKind::Server, Some(parent), _) => (parent.trace_id, Some(parent.parent_id)),
            (SpanKind::Client, _, Some(ctx)) => (ctx.trace_id, Some(ctx.span_id)),
            _ => (cx.ids.trace_id(), None),
        };
        let span_id = cx.ids.span_id();
        if kind == SpanKind::Server {
            cx.served.push(ServedStream {
                pid: self.pid,
                threads: stream.writers,
                start_ns: stream.started_ns,
                end_ns,
                link: SpanLink { trace_id, span_id },
            });
        }
        let resource = (cx.resource)(self.pid, &self.comm);
        cx.out.push(Span {
            resource,
            kind,
            trace_id,
            span_id,
            parent_span_id,
            name,
            start_unix_ns: cx.clock.unix_ns(stream.started_ns),
            end_unix_ns: cx.clock.unix_ns(end_ns.max(stream.started_ns)),
            attributes: sorted(attributes),
            error,
        });
        cx.stats.spans += 1;
    }
}

fn sorted(mut attributes: Vec<Attribute>) -> Vec<Attribute> {
    attributes.sort_by(|a, b| a.0.cmp(&b.0));
    attributes
}

/// The header-block fragment of a HEADERS or PUSH_PROMISE payload: without padding, priority
/// fields and the promised stream id.
fn header_fragment(frame: &Frame) -> Option<&[u8]> {
    let mut payload = &frame.payload[..];
    if frame.flags & flag::PADDED != 0 {
        let (&pad, rest) = payload.split_first()?;
        payload = rest.get(..rest.len().checked_sub(usize::from(pad))?)?;
    }
    let skip = match frame.kind {
        kind::HEADERS if frame.flags & flag::PRIORITY != 0 => 5,
        kind::PUSH_PROMISE => 4,
        _ => 0,
    };
    payload.get(skip..)
}

/// `(service, method)` of a gRPC `:path` (`/package.Service/Method`).
fn grpc_method(path: &str) -> Option<(&str, &str)> {
    let (service, method) = path.strip_prefix('/')?.split_once('/')?;
    let valid = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_graphic() && b != b'/');
    (valid(service) && valid(method)).then_some((service, method))
}

/// Whether a gRPC status makes the span an error (OTel gRPC conventions: any non-OK status for
/// clients; for servers only the codes that mean the server failed).
fn grpc_error(kind: SpanKind, code: i64) -> bool {
    match kind {
        SpanKind::Client => code != 0,
        // UNKNOWN, DEADLINE_EXCEEDED, UNIMPLEMENTED, INTERNAL, UNAVAILABLE, DATA_LOSS.
        SpanKind::Server => matches!(code, 2 | 4 | 12 | 13 | 14 | 15),
    }
}

/// Random trace and span ids (SplitMix64 seeded from the kernel's random source).
struct SpanIds {
    state: u64,
}

impl SpanIds {
    fn new() -> SpanIds {
        let mut seed = [0u8; 8];
        // SAFETY: getrandom writes at most `seed.len()` bytes into the buffer we own.
        let got = unsafe { libc::getrandom(seed.as_mut_ptr().cast(), seed.len(), 0) };
        let mut state = u64::from_ne_bytes(seed);
        if got != 8 {
            state ^= crate::agent::unix_now_ns() ^ u64::from(std::process::id()) << 32;
        }
        SpanIds { state }
    }

    fn next(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn span_id(&mut self) -> [u8; 8] {
        loop {
            let id = self.next();
            if id != 0 {
                return id.to_be_bytes();
            }
        }
    }

    fn trace_id(&mut self) -> [u8; 16] {
        let mut id = [0u8; 16];
        id[..8].copy_from_slice(&self.span_id());
        id[8..].copy_from_slice(&self.next().to_be_bytes());
        id
    }
}

#[cfg(test)]
mod tests;
