//! Turns the kernel's exchange records into spans.
//!
//! Per connection the kernel sends: an EXCHANGE record when the first response bytes move (the
//! request prefix, the status line, the timings so far), MORE records while further response
//! bytes move (at most one a millisecond), and CLOSE when the process closes the socket; the next
//! EXCHANGE and the CLOSE also carry the final end of the exchange before. A span is therefore only final
//! once the next EXCHANGE or the CLOSE of its connection arrives, or after [`IDLE_FINISH`]
//! without news (an idle keep-alive connection); until then it waits in the assembler.
//!
//! Nothing here does IO: resources (service name, container) come from the caller.

use std::{collections::HashMap, sync::Arc, time::Duration};

use profiler_common::{http_event, http_flags, http_role, HttpExchange, COMM_LEN};
use rustc_hash::FxHashMap;

use super::{
    http1::{self, Http1Error},
    route,
    span::{AttrValue, Attribute, Resource, Span, SpanKind},
};

/// A waiting span is finished with what is known after this long without news.
pub const IDLE_FINISH: Duration = Duration::from_secs(1);

/// A record from the kernel: the fixed fields and the request bytes it carried.
pub struct ExchangeRecord<'a> {
    pub exchange: &'a HttpExchange,
    pub request: &'a [u8],
}

/// Why an exchange produced no span, for the drop counters.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Unparsed {
    /// The request bytes are not HTTP/1.x (binary, TLS, garbage behind a method-like start).
    Request(&'static str),
    /// The response does not start with a valid status line.
    Response,
    /// A pipelined response whose request was not inside the captured prefix.
    Pipelined,
    /// The connection closed before any response.
    NoResponse,
}

impl Unparsed {
    /// Stable label for counters and logs.
    pub fn label(&self) -> String {
        match self {
            Unparsed::Request(reason) => format!("request_{reason}"),
            Unparsed::Response => "response_malformed".to_string(),
            Unparsed::Pipelined => "pipelined_unmatched".to_string(),
            Unparsed::NoResponse => "no_response".to_string(),
        }
    }
}

/// Counters of what the assembler saw.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AssembleStats {
    /// EXCHANGE records received.
    pub exchanges: u64,
    /// Spans finished.
    pub spans: u64,
    /// Exchanges without a span, by reason.
    pub unparsed: HashMap<Unparsed, u64>,
    /// MORE records for a connection or exchange the assembler did not know (e.g. because the
    /// EXCHANGE record was lost).
    pub orphan_records: u64,
}

/// Connection identity: the kernel's (pid, fd) plus when it started following it, so a reused
/// fd number is a different connection.
type ConnId = (u32, u32, u64);

#[derive(Default)]
struct Connection {
    /// The request bytes of the last non-pipelined EXCHANGE (pipelined ones refer to them).
    last_request: Vec<u8>,
    pending: Option<Pending>,
}

struct Pending {
    span: Span,
    seq: u32,
    pipeline_index: u32,
    /// Monotonic time of the last record that touched it.
    updated_ns: u64,
}

impl Pending {
    /// Moves the end later (never earlier, never before the start).
    fn extend_to(&mut self, end_unix_ns: u64) {
        self.span.end_unix_ns = self
            .span
            .end_unix_ns
            .max(end_unix_ns)
            .max(self.span.start_unix_ns);
    }
}

/// Converts kernel timestamps (`CLOCK_MONOTONIC`) to Unix time.
#[derive(Clone, Copy, Debug)]
pub struct Clock {
    /// Unix time minus monotonic time, nanoseconds.
    pub offset_ns: i128,
}

impl Clock {
    pub fn unix_ns(&self, monotonic_ns: u64) -> u64 {
        (i128::from(monotonic_ns) + self.offset_ns).clamp(0, i128::from(u64::MAX)) as u64
    }
}

/// Pairs records into spans; see the module documentation.
#[derive(Default)]
pub struct Assembler {
    connections: FxHashMap<ConnId, Connection>,
    pub stats: AssembleStats,
}

impl Assembler {
    /// Handles one record; finished spans are appended to `out`. `resource` names the process
    /// of a pid (its second argument is the thread name the kernel saw).
    pub fn push(
        &mut self,
        record: &ExchangeRecord<'_>,
        clock: Clock,
        resource: &mut dyn FnMut(u32, &str) -> Arc<Resource>,
        out: &mut Vec<Span>,
    ) {
        let x = record.exchange;
        let id = (x.pid, x.fd, x.conn_start_ns);
        match x.kind {
            http_event::EXCHANGE => {
                self.stats.exchanges += 1;
                let connection = self.connections.entry(id).or_default();
                if let Some(mut pending) = connection.pending.take() {
                    // The previous exchange's final end (MORE records are throttled).
                    if pending.seq.wrapping_add(1) == x.seq && x.prev_response_end_ns != 0 {
                        pending.extend_to(clock.unix_ns(x.prev_response_end_ns));
                    }
                    out.push(pending.span);
                    self.stats.spans += 1;
                }
                if x.flags & http_flags::PIPELINED == 0 {
                    connection.last_request.clear();
                    connection.last_request.extend_from_slice(record.request);
                }
                match build_span(x, &connection.last_request, clock, resource) {
                    Ok(span) => {
                        connection.pending = Some(Pending {
                            span,
                            seq: x.seq,
                            pipeline_index: x.pipeline_index,
                            updated_ns: x.response_end_ns,
                        })
                    }
                    Err(reason) => *self.stats.unparsed.entry(reason).or_default() += 1,
                }
            }
            http_event::MORE => {
                let pending = self
                    .connections
                    .get_mut(&id)
                    .and_then(|c| c.pending.as_mut())
                    .filter(|p| p.seq == x.seq && p.pipeline_index == x.pipeline_index);
                match pending {
                    Some(pending) => {
                        pending.extend_to(clock.unix_ns(x.response_end_ns));
                        pending.updated_ns = x.response_end_ns;
                    }
                    None => self.stats.orphan_records += 1,
                }
            }
            http_event::CLOSE => {
                if x.flags & http_flags::NO_RESPONSE != 0 {
                    *self.stats.unparsed.entry(Unparsed::NoResponse).or_default() += 1;
                }
                if let Some(mut pending) = self.connections.remove(&id).and_then(|c| c.pending) {
                    if pending.seq == x.seq && pending.pipeline_index == x.pipeline_index {
                        pending.extend_to(clock.unix_ns(x.response_end_ns));
                    }
                    out.push(pending.span);
                    self.stats.spans += 1;
                }
            }
            _ => self.stats.orphan_records += 1,
        }
    }

    /// Finishes spans that waited [`IDLE_FINISH`] without news (`now_ns` is monotonic), and
    /// forgets connections of processes `alive` says are gone.
    pub fn finish_idle(&mut self, now_ns: u64, alive: &dyn Fn(u32) -> bool, out: &mut Vec<Span>) {
        let idle_ns = IDLE_FINISH.as_nanos() as u64;
        let mut dead = Vec::new();
        for (id, connection) in &mut self.connections {
            let idle = connection
                .pending
                .as_ref()
                .is_some_and(|p| now_ns.saturating_sub(p.updated_ns) >= idle_ns);
            if idle {
                if let Some(pending) = connection.pending.take() {
                    out.push(pending.span);
                    self.stats.spans += 1;
                }
            }
            if connection.pending.is_none() && !alive(id.0) {
                dead.push(*id);
            }
        }
        for id in dead {
            self.connections.remove(&id);
        }
    }

    /// Finishes every waiting span (at shutdown).
    pub fn finish_all(&mut self, out: &mut Vec<Span>) {
        for connection in self.connections.values_mut() {
            if let Some(pending) = connection.pending.take() {
                out.push(pending.span);
                self.stats.spans += 1;
            }
        }
    }

    /// Connections known (with a waiting span or a request kept for pipelining).
    pub fn connections(&self) -> usize {
        self.connections.len()
    }
}

/// The status code of a status line that may be cut anywhere after the code (the kernel keeps
/// the first 32 bytes: long reason phrases do not fit).
pub fn status_code(response: &[u8]) -> Option<u16> {
    if response.len() < 12 || !response.starts_with(b"HTTP/1.") || response[8] != b' ' {
        return None;
    }
    if !matches!(response[7], b'0' | b'1') {
        return None;
    }
    let digits = &response[9..12];
    if !digits.iter().all(u8::is_ascii_digit) || digits[0] == b'0' {
        return None;
    }
    match response.get(12) {
        None | Some(b' ' | b'\r' | b'\n') => {}
        Some(_) => return None,
    }
    Some(
        digits
            .iter()
            .fold(0u16, |n, d| n * 10 + u16::from(d - b'0')),
    )
}

fn build_span(
    x: &HttpExchange,
    request_bytes: &[u8],
    clock: Clock,
    resource: &mut dyn FnMut(u32, &str) -> Arc<Resource>,
) -> Result<Span, Unparsed> {
    let pipelined = x.flags & http_flags::PIPELINED != 0;
    let request = http1::nth_request(request_bytes, x.pipeline_index as usize).map_err(|e| {
        if pipelined && matches!(e, Http1Error::Truncated) {
            Unparsed::Pipelined
        } else {
            Unparsed::Request(e.reason())
        }
    })?;
    let response_len = (x.response_len as usize).min(x.response.len());
    let status = status_code(&x.response[..response_len]).ok_or(Unparsed::Response)?;
    let kind = if x.role == http_role::CLIENT {
        SpanKind::Client
    } else {
        SpanKind::Server
    };
    let comm = comm_str(&x.comm);
    let resource = resource(x.pid, &comm);
    let start_ns = if pipelined {
        // Pipelined requests were all read at once; the response is what tells them apart.
        x.response_start_ns
    } else {
        x.request_start_ns
    };
    let parent = (x.parent_span_id != [0; 8]).then_some(x.parent_span_id);
    let fields = HttpFields {
        method: &request.method,
        target: &request.target,
        version: if request.version_minor == 0 {
            "1.0"
        } else {
            "1.1"
        },
        host: request.host.as_deref(),
        user_agent: request.user_agent.as_deref(),
    };
    let (attributes, route, error) = http_attributes(kind, &fields, status);
    Ok(Span {
        resource,
        kind,
        trace_id: x.trace_id,
        span_id: x.span_id,
        parent_span_id: parent,
        name: format!("{} {}", request.method, route),
        start_unix_ns: clock.unix_ns(start_ns),
        end_unix_ns: clock.unix_ns(x.response_end_ns.max(start_ns)),
        attributes,
        error,
    })
}

/// What the HTTP attributes of a span are made of (HTTP/1.x request heads and HTTP/2 header
/// blocks alike).
pub(super) struct HttpFields<'a> {
    pub method: &'a str,
    /// The request target (`:path` in HTTP/2).
    pub target: &'a str,
    /// `network.protocol.version`: "1.0", "1.1" or "2".
    pub version: &'static str,
    /// `Host` or `:authority`.
    pub host: Option<&'a str>,
    pub user_agent: Option<&'a str>,
}

/// The semantic-convention attributes of a span, its route, and whether it is an error.
pub(super) fn http_attributes(
    kind: SpanKind,
    request: &HttpFields<'_>,
    status: u16,
) -> (Vec<Attribute>, String, bool) {
    let route = route::route_of(request.target);
    let path = route::path_of(request.target);
    // Room for every attribute an HTTP span can get (nine, and an HTTP/2 reset's error.type):
    // growing the vector cost two reallocations per span.
    let mut attributes = Vec::with_capacity(10);
    attributes.extend([
        str_attr("http.request.method", request.method),
        (
            "http.response.status_code".into(),
            AttrValue::Int(i64::from(status)),
        ),
        str_attr("url.path", truncate(path, 1024)),
        str_attr("network.protocol.version", request.version),
    ]);
    if kind == SpanKind::Server {
        attributes.push(str_attr("http.route", &route));
    }
    push_server_address(&mut attributes, request.host);
    if let Some(agent) = request.user_agent {
        attributes.push(str_attr("user_agent.original", truncate(agent, 256)));
    }
    let error = match kind {
        SpanKind::Server => status >= 500,
        SpanKind::Client => status >= 400,
    };
    if error {
        attributes.push(str_attr("error.type", &status.to_string()));
    }
    (attributes, route, error)
}

/// A text attribute.
pub(super) fn str_attr(name: &'static str, value: &str) -> Attribute {
    (name.into(), AttrValue::Str(value.to_string()))
}

/// `server.address` and `server.port` from a `Host` / `:authority` value, when it parses.
pub(super) fn push_server_address(attributes: &mut Vec<Attribute>, host: Option<&str>) {
    if let Some((host, port)) = host.and_then(split_host) {
        attributes.push(str_attr("server.address", host));
        attributes.push(("server.port".into(), AttrValue::Int(i64::from(port))));
    }
}

/// `host[:port]` or `[v6][:port]` of a Host header; port 80 when absent (cleartext capture).
fn split_host(host: &str) -> Option<(&str, u16)> {
    let host = host.trim();
    if host.is_empty() {
        return None;
    }
    let (name, port) = if let Some(rest) = host.strip_prefix('[') {
        let (name, after) = rest.split_once(']')?;
        (name, after.strip_prefix(':'))
    } else {
        match host.rsplit_once(':') {
            Some((name, port)) if !name.contains(':') => (name, Some(port)),
            _ => (host, None),
        }
    };
    let port = match port {
        Some(port) => port.parse().ok()?,
        None => 80,
    };
    (!name.is_empty()).then_some((name, port))
}

pub(super) fn truncate(text: &str, max: usize) -> &str {
    if text.len() <= max {
        return text;
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

/// A NUL-padded `comm` as text.
pub fn comm_str(comm: &[u8; COMM_LEN]) -> String {
    let end = comm.iter().position(|&b| b == 0).unwrap_or(comm.len());
    String::from_utf8_lossy(&comm[..end]).into_owned()
}

#[cfg(test)]
mod tests {
    use profiler_common::{http_phase, RESPONSE_CAPTURE_BYTES};

    use super::*;

    fn resource() -> impl FnMut(u32, &str) -> Arc<Resource> {
        |pid, comm| {
            Arc::new(Resource {
                service_name: comm.to_string(),
                attributes: vec![("process.pid".into(), AttrValue::Int(i64::from(pid)))],
            })
        }
    }

    fn record(kind: u32, role: u32, seq: u32) -> HttpExchange {
        // SAFETY: all-zero is a valid HttpExchange (integers and byte arrays).
        let mut x: HttpExchange = unsafe { std::mem::zeroed() };
        x.kind = kind;
        x.role = role;
        x.pid = 42;
        x.fd = 7;
        x.seq = seq;
        x.phase = http_phase::RESPONSE;
        x.conn_start_ns = 1_000;
        x.request_start_ns = 10_000 + u64::from(seq) * 1_000_000;
        x.response_start_ns = x.request_start_ns + 500;
        x.response_end_ns = x.request_start_ns + 1_000;
        x.trace_id = [1; 16];
        x.span_id = [2; 8];
        x.comm[..5].copy_from_slice(b"nginx");
        x
    }

    fn with_status(mut x: HttpExchange, line: &[u8]) -> HttpExchange {
        let n = line.len().min(RESPONSE_CAPTURE_BYTES);
        x.response[..n].copy_from_slice(&line[..n]);
        x.response_len = n as u32;
        x
    }

    const CLOCK: Clock = Clock {
        offset_ns: 1_000_000_000_000,
    };

    #[test]
    fn keep_alive_exchanges_become_spans_when_the_next_one_starts() {
        let mut assembler = Assembler::default();
        let mut out = Vec::new();
        let mut resource = resource();
        let request = b"GET /users/123?x=1 HTTP/1.1\r\nHost: example.com:8080\r\n\r\n";
        for seq in 0..3 {
            let x = with_status(
                record(http_event::EXCHANGE, http_role::SERVER, seq),
                b"HTTP/1.1 404 Not Found\r\n",
            );
            assembler.push(
                &ExchangeRecord {
                    exchange: &x,
                    request,
                },
                CLOCK,
                &mut resource,
                &mut out,
            );
        }
        assert_eq!(
            out.len(),
            2,
            "the last span waits for its connection's next record"
        );
        let close = record(http_event::CLOSE, http_role::SERVER, 2);
        assembler.push(
            &ExchangeRecord {
                exchange: &close,
                request: &[],
            },
            CLOCK,
            &mut resource,
            &mut out,
        );
        assert_eq!(out.len(), 3);
        let span = &out[0];
        assert_eq!(span.name, "GET /users/{id}");
        assert_eq!(span.kind, SpanKind::Server);
        assert_eq!(span.start_unix_ns, CLOCK.unix_ns(10_000));
        assert_eq!(span.end_unix_ns - span.start_unix_ns, 1_000);
        assert!(!span.error, "404 is not a server error");
        assert_eq!(span.resource.service_name, "nginx");
        let attr = |name: &str| {
            span.attributes
                .iter()
                .find(|(n, _)| n == name)
                .map(|(_, v)| v.clone())
        };
        assert_eq!(attr("http.response.status_code"), Some(AttrValue::Int(404)));
        assert_eq!(attr("url.path"), Some(AttrValue::Str("/users/123".into())));
        assert_eq!(
            attr("http.route"),
            Some(AttrValue::Str("/users/{id}".into()))
        );
        assert_eq!(
            attr("server.address"),
            Some(AttrValue::Str("example.com".into()))
        );
        assert_eq!(attr("server.port"), Some(AttrValue::Int(8080)));
        assert_eq!(assembler.connections(), 0);
    }

    #[test]
    fn the_next_exchange_and_the_close_carry_the_final_end() {
        let mut assembler = Assembler::default();
        let mut out = Vec::new();
        let request: &[u8] = b"GET /big HTTP/1.1\r\nHost: h\r\n\r\n";
        let ok = b"HTTP/1.1 200 OK\r\n";
        let first = with_status(record(http_event::EXCHANGE, http_role::SERVER, 0), ok);
        let push = |assembler: &mut Assembler, x: &HttpExchange, out: &mut Vec<Span>| {
            let record = ExchangeRecord {
                exchange: x,
                request,
            };
            assembler.push(&record, CLOCK, &mut resource(), out);
        };
        push(&mut assembler, &first, &mut out);
        // Throttled MORE records told nothing; the next exchange says where the first ended.
        let mut second = with_status(record(http_event::EXCHANGE, http_role::SERVER, 1), ok);
        second.prev_response_end_ns = first.request_start_ns + 7_000;
        push(&mut assembler, &second, &mut out);
        assert_eq!(out[0].end_unix_ns - out[0].start_unix_ns, 7_000);
        // The close carries the second exchange's end.
        let mut close = record(http_event::CLOSE, http_role::SERVER, 1);
        close.response_end_ns = second.request_start_ns + 9_000;
        push(&mut assembler, &close, &mut out);
        assert_eq!(out[1].end_unix_ns - out[1].start_unix_ns, 9_000);
    }

    #[test]
    fn more_records_extend_the_waiting_span_and_idle_ones_finish() {
        let mut assembler = Assembler::default();
        let mut out = Vec::new();
        let mut resource = resource();
        let x = with_status(
            record(http_event::EXCHANGE, http_role::CLIENT, 0),
            b"HTTP/1.1 503 Service Unavailable\r\n",
        );
        assembler.push(
            &ExchangeRecord {
                exchange: &x,
                request: b"POST /upload HTTP/1.1\r\nHost: api\r\n\r\n",
            },
            CLOCK,
            &mut resource,
            &mut out,
        );
        let mut more = record(http_event::MORE, http_role::CLIENT, 0);
        more.response_end_ns = x.request_start_ns + 9_000;
        assembler.push(
            &ExchangeRecord {
                exchange: &more,
                request: &[],
            },
            CLOCK,
            &mut resource,
            &mut out,
        );
        // A MORE record of an exchange the assembler never saw is counted.
        let orphan = record(http_event::MORE, http_role::CLIENT, 5);
        assembler.push(
            &ExchangeRecord {
                exchange: &orphan,
                request: &[],
            },
            CLOCK,
            &mut resource,
            &mut out,
        );
        assert_eq!(assembler.stats.orphan_records, 1);
        assembler.finish_idle(more.response_end_ns + 10, &|_| true, &mut out);
        assert!(out.is_empty(), "not idle yet");
        assembler.finish_idle(
            more.response_end_ns + IDLE_FINISH.as_nanos() as u64,
            &|_| true,
            &mut out,
        );
        assert_eq!(out.len(), 1);
        let span = &out[0];
        assert_eq!(span.kind, SpanKind::Client);
        assert_eq!(span.end_unix_ns - span.start_unix_ns, 9_000);
        assert!(span.error, "503 is an error for a client");
        assert!(span
            .attributes
            .iter()
            .any(|(n, v)| n == "error.type" && *v == AttrValue::Str("503".into())));
        assert!(
            !span.attributes.iter().any(|(n, _)| n == "http.route"),
            "client spans have no route"
        );
        assert_eq!(span.name, "POST /upload");
        assembler.finish_idle(u64::MAX, &|_| false, &mut out);
        assert_eq!(
            assembler.connections(),
            0,
            "connections of exited processes are forgotten"
        );
    }

    #[test]
    fn pipelined_responses_take_the_next_request_of_the_same_read() {
        let mut assembler = Assembler::default();
        let mut out = Vec::new();
        let mut resource = resource();
        let request = b"GET /a HTTP/1.1\r\nHost: h\r\n\r\nGET /b HTTP/1.1\r\nHost: h\r\n\r\nGET /c";
        let first = with_status(
            record(http_event::EXCHANGE, http_role::SERVER, 0),
            b"HTTP/1.1 200 OK\r\n",
        );
        assembler.push(
            &ExchangeRecord {
                exchange: &first,
                request,
            },
            CLOCK,
            &mut resource,
            &mut out,
        );
        for index in 1..=3 {
            let mut next = with_status(
                record(http_event::EXCHANGE, http_role::SERVER, 0),
                b"HTTP/1.1 200 OK\r\n",
            );
            next.flags = http_flags::PIPELINED;
            next.pipeline_index = index;
            assembler.push(
                &ExchangeRecord {
                    exchange: &next,
                    request: &[],
                },
                CLOCK,
                &mut resource,
                &mut out,
            );
        }
        assembler.finish_all(&mut out);
        let names: Vec<&str> = out.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, ["GET /a", "GET /b"]);
        assert_eq!(
            assembler.stats.unparsed.get(&Unparsed::Pipelined),
            Some(&2),
            "/c is cut, the 4th is missing"
        );
    }

    #[test]
    fn garbage_and_bad_status_lines_are_counted_not_spans() {
        let mut assembler = Assembler::default();
        let mut out = Vec::new();
        let mut resource = resource();
        let x = with_status(
            record(http_event::EXCHANGE, http_role::SERVER, 0),
            b"HTTP/1.1 200 OK\r\n",
        );
        assembler.push(
            &ExchangeRecord {
                exchange: &x,
                request: b"GET \x00\x01\x02 HTTP/1.1\r\n\r\n",
            },
            CLOCK,
            &mut resource,
            &mut out,
        );
        let bad = with_status(
            record(http_event::EXCHANGE, http_role::SERVER, 1),
            b"HTTP/1.1 2x0 OK\r\n",
        );
        assembler.push(
            &ExchangeRecord {
                exchange: &bad,
                request: b"GET / HTTP/1.1\r\n\r\n",
            },
            CLOCK,
            &mut resource,
            &mut out,
        );
        let mut close = record(http_event::CLOSE, http_role::SERVER, 2);
        close.flags = http_flags::NO_RESPONSE;
        assembler.push(
            &ExchangeRecord {
                exchange: &close,
                request: &[],
            },
            CLOCK,
            &mut resource,
            &mut out,
        );
        assert!(out.is_empty());
        assert_eq!(assembler.stats.unparsed.get(&Unparsed::Response), Some(&1));
        assert_eq!(
            assembler.stats.unparsed.get(&Unparsed::NoResponse),
            Some(&1)
        );
        assert_eq!(assembler.stats.unparsed.values().sum::<u64>(), 3);
    }

    #[test]
    fn status_codes_survive_cut_reason_phrases() {
        assert_eq!(status_code(b"HTTP/1.1 500 Internal Server Err"), Some(500));
        assert_eq!(status_code(b"HTTP/1.0 200"), Some(200));
        assert_eq!(status_code(b"HTTP/1.1 200OK"), None);
        assert_eq!(status_code(b"HTTP/1.1 099 x"), None);
        assert_eq!(status_code(b"HTTP/2.0 200 OK"), None);
        assert_eq!(status_code(b"HTTP/1.1 20"), None);
    }

    #[test]
    fn host_headers_split_into_address_and_port() {
        assert_eq!(split_host("example.com"), Some(("example.com", 80)));
        assert_eq!(split_host("example.com:8443"), Some(("example.com", 8443)));
        assert_eq!(split_host("[::1]:8080"), Some(("::1", 8080)));
        assert_eq!(split_host("[::1]"), Some(("::1", 80)));
        assert_eq!(split_host("host:notaport"), None);
        assert_eq!(split_host(""), None);
    }

    proptest::proptest! {
        /// Records garbled any way (two threads racing on one socket can interleave the
        /// kernel's updates) never panic the assembler, and every EXCHANGE ends as a span or a
        /// counted reason.
        #[test]
        fn garbled_records_never_panic(
            records in proptest::collection::vec(
                (
                    0u32..5,
                    0u32..4,
                    0u32..3,
                    proptest::prelude::any::<u32>(),
                    0u32..4,
                    proptest::collection::vec(proptest::prelude::any::<u8>(), 0..40),
                    proptest::collection::vec(proptest::prelude::any::<u8>(), 0..200),
                    proptest::prelude::any::<[u64; 3]>(),
                ),
                1..20,
            )
        ) {
            let mut assembler = Assembler::default();
            let mut out = Vec::new();
            let mut resource = resource();
            let mut exchanges = 0;
            for (kind, role, fd, flags, index, response, request, times) in records {
                let mut x = record(kind, role, 0);
                x.fd = fd;
                x.flags = flags;
                x.pipeline_index = index;
                x.request_start_ns = times[0];
                x.response_start_ns = times[1];
                x.response_end_ns = times[2];
                let n = response.len().min(RESPONSE_CAPTURE_BYTES);
                x.response[..n].copy_from_slice(&response[..n]);
                x.response_len = response.len() as u32;
                x.request_len = request.len() as u32;
                exchanges += u64::from(kind == http_event::EXCHANGE);
                let record = ExchangeRecord { exchange: &x, request: &request };
                assembler.push(&record, CLOCK, &mut resource, &mut out);
            }
            assembler.finish_all(&mut out);
            let unparsed: u64 = assembler
                .stats
                .unparsed
                .iter()
                .filter(|(reason, _)| **reason != Unparsed::NoResponse)
                .map(|(_, n)| n)
                .sum();
            proptest::prop_assert_eq!(out.len() as u64 + unparsed, exchanges);
            for span in &out {
                proptest::prop_assert!(span.end_unix_ns >= span.start_unix_ns);
            }
        }
    }
}
