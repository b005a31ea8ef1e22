//! HTTP/1.x request and response heads, parsed from what the eBPF programs capture at the socket
//! syscalls.
//!
//! The input is a bounded prefix (about 1 KiB) of one `read`/`write`: it may stop anywhere, hold
//! several pipelined requests, or be no HTTP at all (TLS, another protocol, binary data). The
//! parser is therefore strict where a guess would be wrong and lenient where the prefix merely
//! ends early:
//!
//! - the start line must be complete and exactly right (a method from [`METHODS`], a target of
//!   visible ASCII, `HTTP/1.0` or `HTTP/1.1`), otherwise the result is an error, never a guess;
//! - header lines are parsed until the blank line or the end of the prefix; a last line cut off by
//!   the end of the prefix is ignored, a complete but malformed one is an error.
//!
//! Lines end in CRLF or a bare LF (RFC 9112 §2.2). Start reading at [`parse_request`]; the
//! kernel-side filter is [`is_request_start`] / [`is_response_start`]. Pure: no IO, no panics on
//! any input.

/// The request methods the capture recognises (RFC 9110 §9 and PATCH, RFC 5789), case-sensitive.
pub const METHODS: [&str; 9] = [
    "GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH",
];

/// Why bytes are not (yet) an HTTP/1.x head that can be reported.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Http1Error {
    /// The bytes do not start like an HTTP/1.x request (or response).
    #[error("not an http/1.x message")]
    NotHttp,
    /// The prefix ends before the start line is complete (or, for [`nth_request`], before the
    /// requested message starts).
    #[error("http/1.x message truncated before the end of its start line")]
    Truncated,
    /// The bytes start like HTTP/1.x but break its grammar.
    #[error("malformed http/1.x {what}")]
    Malformed {
        /// The part that is malformed, e.g. "request target", "content-length".
        what: &'static str,
    },
    /// [`nth_request`] cannot find the end of an earlier request: its body is chunked (or has
    /// another transfer coding), so its length is unknown from the head.
    #[error("request body with a transfer coding cannot be skipped")]
    UnskippableBody,
}

impl Http1Error {
    /// Returns a short stable label for counting dropped messages by reason.
    pub fn reason(&self) -> &'static str {
        match self {
            Http1Error::NotHttp => "not_http",
            Http1Error::Truncated => "truncated",
            Http1Error::Malformed { .. } => "malformed",
            Http1Error::UnskippableBody => "unskippable_body",
        }
    }
}

/// A W3C Trace Context `traceparent` (<https://www.w3.org/TR/trace-context/#traceparent-header>).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct TraceParent {
    /// Never all zeros.
    pub trace_id: [u8; 16],
    /// The caller's span id; never all zeros.
    pub parent_id: [u8; 8],
    /// Trace flags; bit 0 is `sampled`.
    pub flags: u8,
}

impl TraceParent {
    /// Returns whether the caller sampled the trace (flag bit 0).
    pub fn sampled(&self) -> bool {
        self.flags & 0x01 != 0
    }
}

/// The head of an HTTP/1.x request, as far as the captured prefix holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestHead {
    /// One of [`METHODS`].
    pub method: String,
    /// The request target as sent (origin form `/a?b`, absolute form, `*` or authority form);
    /// visible ASCII only. See [`super::route`] for a low-cardinality route.
    pub target: String,
    /// 0 for HTTP/1.0, 1 for HTTP/1.1.
    pub version_minor: u8,
    /// The `Host` header (whitespace-trimmed); `None` when absent or empty.
    pub host: Option<String>,
    /// The `Content-Length` header. Reported as sent even when `chunked` (which then governs).
    pub content_length: Option<u64>,
    /// Whether the final transfer coding is `chunked`.
    pub chunked: bool,
    /// The first `User-Agent` header.
    pub user_agent: Option<String>,
    /// A valid `traceparent` header; `None` when absent, invalid or repeated.
    pub traceparent: Option<TraceParent>,
    /// Whether the blank line ending the head is inside the prefix; when not, headers past the
    /// prefix are unknown.
    pub head_complete: bool,
    /// Bytes of the head: up to and including the blank line when `head_complete`, else up to the
    /// end of the last complete line.
    pub head_len: usize,
}

/// The head of an HTTP/1.x response, as far as the captured prefix holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResponseHead {
    /// 0 for HTTP/1.0, 1 for HTTP/1.1.
    pub version_minor: u8,
    /// Three digits, 100..=999.
    pub status: u16,
    /// The `Content-Length` header. Reported as sent even when `chunked` (which then governs).
    pub content_length: Option<u64>,
    /// Whether the final transfer coding is `chunked`.
    pub chunked: bool,
    /// Whether the blank line ending the head is inside the prefix.
    pub head_complete: bool,
    /// Bytes of the head, as [`RequestHead::head_len`].
    pub head_len: usize,
}

/// Returns whether `bytes` start with a method from [`METHODS`] followed by a space: the test the
/// kernel programs apply before capturing a request.
pub fn is_request_start(bytes: &[u8]) -> bool {
    request_method(bytes).is_some()
}

/// Returns whether `bytes` start with `HTTP/1.`: the test the kernel programs apply before
/// capturing a response.
pub fn is_response_start(bytes: &[u8]) -> bool {
    bytes.starts_with(b"HTTP/1.")
}

/// Parses the request head at the start of `bytes`.
///
/// Errors: [`Http1Error::NotHttp`] when `bytes` do not start with a method and a space,
/// [`Http1Error::Truncated`] when the request line does not end inside `bytes`,
/// [`Http1Error::Malformed`] for a bad target, version, header line, conflicting
/// `Content-Length` or repeated `Host`.
pub fn parse_request(bytes: &[u8]) -> Result<RequestHead, Http1Error> {
    parse_request_framed(bytes).map(|(head, _)| head)
}

/// Parses the response head at the start of `bytes`: a status line `HTTP/1.x NNN reason` and
/// header lines, with the errors of [`parse_request`].
pub fn parse_response(bytes: &[u8]) -> Result<ResponseHead, Http1Error> {
    let (version_minor, status, line_len) = parse_status_line(bytes)?;
    let fields = parse_fields(bytes, line_len)?;
    Ok(ResponseHead {
        version_minor,
        status,
        content_length: fields.content_length,
        chunked: fields.chunked,
        head_complete: fields.complete,
        head_len: fields.end,
    })
}

/// Parses the `n`-th (0-based) of the pipelined requests in `bytes`.
///
/// Each earlier request is skipped by its head and its `Content-Length` body (none without one,
/// RFC 9112 §6.3), then any empty lines before the next request line (RFC 9112 §2.2). Errors:
/// [`Http1Error::Truncated`] when an earlier head or body, or the `n`-th request line, does not
/// end inside `bytes`; [`Http1Error::UnskippableBody`] when an earlier request has a
/// `Transfer-Encoding`; an earlier request's parse error as is.
pub fn nth_request(bytes: &[u8], n: usize) -> Result<RequestHead, Http1Error> {
    let mut start = 0;
    // Every skipped request consumes at least its request line, so a large `n` ends in
    // `Truncated` after at most `bytes.len()` rounds.
    for _ in 0..n {
        let rest = bytes.get(start..).unwrap_or_default();
        let (head, transfer_encoding) = parse_request_framed(rest)?;
        if !head.head_complete {
            return Err(Http1Error::Truncated);
        }
        if transfer_encoding {
            return Err(Http1Error::UnskippableBody);
        }
        let body_len =
            usize::try_from(head.content_length.unwrap_or(0)).map_err(|_| Http1Error::Truncated)?;
        start = start
            .checked_add(head.head_len)
            .and_then(|end| end.checked_add(body_len))
            .filter(|&end| end <= bytes.len())
            .ok_or(Http1Error::Truncated)?;
        start = skip_empty_lines(bytes, start);
    }
    parse_request(bytes.get(start..).unwrap_or_default())
}

/// Decodes a whole `chunked` body (RFC 9112 §7.1): hex chunk sizes (extensions ignored), the
/// data, the last chunk `0`, trailer lines (ignored) and the blank line ending them. Returns the
/// data; the decoded body is never longer than `bytes`.
///
/// Errors: [`Http1Error::Truncated`] when `bytes` end before the blank line after the last chunk,
/// [`Http1Error::Malformed`] for a bad size line or data not followed by a line end.
pub fn decode_chunked(bytes: &[u8]) -> Result<Vec<u8>, Http1Error> {
    const SIZE: Http1Error = Http1Error::Malformed { what: "chunk size" };
    let mut data = Vec::new();
    let mut pos = 0;
    loop {
        let (line, next) = next_line(bytes, pos)?;
        pos = next;
        let digits = trim_ows(line.split(|&b| b == b';').next().unwrap_or_default());
        // 15 hex digits stay below 2^60: no overflow in the sums below.
        if digits.is_empty() || digits.len() > 15 || !digits.iter().all(u8::is_ascii_hexdigit) {
            return Err(SIZE);
        }
        let size = digits.iter().fold(0usize, |size, &digit| {
            // The digit was checked above; `to_digit` of an ASCII hex digit is below 16.
            size * 16 + (digit as char).to_digit(16).unwrap_or(0) as usize
        });
        if size == 0 {
            // Trailer fields up to the blank line.
            loop {
                let (line, next) = next_line(bytes, pos)?;
                pos = next;
                if line.is_empty() {
                    return Ok(data);
                }
            }
        }
        let chunk = bytes.get(pos..pos + size).ok_or(Http1Error::Truncated)?;
        data.extend_from_slice(chunk);
        pos += size;
        let (rest_of_line, next) = next_line(bytes, pos)?;
        if !rest_of_line.is_empty() {
            return Err(Http1Error::Malformed { what: "chunk end" });
        }
        pos = next;
    }
}

/// The line starting at `pos` without its CRLF or LF, and the offset after it;
/// [`Http1Error::Truncated`] when it has no LF.
fn next_line(bytes: &[u8], pos: usize) -> Result<(&[u8], usize), Http1Error> {
    let rest = bytes.get(pos..).unwrap_or_default();
    let len = rest
        .iter()
        .position(|&b| b == b'\n')
        .ok_or(Http1Error::Truncated)?;
    Ok((strip_cr(&rest[..len]), pos + len + 1))
}

/// Parses a `traceparent` header value per W3C Trace Context level 1 §3.2.
///
/// Version `00` must be exactly `00-<32 hex>-<16 hex>-<2 hex>`; a higher version must start with
/// those 55 characters and continue with `-` or end there (forward compatibility). Version `ff`,
/// uppercase hex, and an all-zero trace id or parent id are invalid. Surrounding spaces and tabs
/// (HTTP optional whitespace) are ignored.
pub fn parse_traceparent(value: &[u8]) -> Option<TraceParent> {
    let value = trim_ows(value);
    let head = value.get(..55)?;
    let version = hex_byte(head.get(0..2)?)?;
    if version == 0xff {
        return None;
    }
    match value.len() {
        55 => {}
        _ if version == 0 => return None,
        _ if value.get(55) == Some(&b'-') => {}
        _ => return None,
    }
    if head[2] != b'-' || head[35] != b'-' || head[52] != b'-' {
        return None;
    }
    let mut trace_id = [0; 16];
    hex_into(&head[3..35], &mut trace_id)?;
    let mut parent_id = [0; 8];
    hex_into(&head[36..52], &mut parent_id)?;
    let flags = hex_byte(&head[53..55])?;
    if trace_id == [0; 16] || parent_id == [0; 8] {
        return None;
    }
    Some(TraceParent {
        trace_id,
        parent_id,
        flags,
    })
}

/// Returns the method at the start of `bytes` when it is followed by a space.
fn request_method(bytes: &[u8]) -> Option<&'static str> {
    METHODS.into_iter().find(|method| {
        bytes.starts_with(method.as_bytes()) && bytes.get(method.len()) == Some(&b' ')
    })
}

/// Parses a request head and also returns whether it has a `Transfer-Encoding`.
fn parse_request_framed(bytes: &[u8]) -> Result<(RequestHead, bool), Http1Error> {
    let Some(method) = request_method(bytes) else {
        // A prefix too short to hold "METHOD " may still be the start of a request.
        let could_start = METHODS
            .into_iter()
            .any(|method| bytes.len() <= method.len() && method.as_bytes().starts_with(bytes));
        return Err(if could_start {
            Http1Error::Truncated
        } else {
            Http1Error::NotHttp
        });
    };
    let rest = &bytes[method.len() + 1..];
    let target_len = match rest.iter().position(|&b| !is_visible(b)) {
        None => return Err(Http1Error::Truncated),
        Some(0) => {
            return Err(Http1Error::Malformed {
                what: "request target",
            })
        }
        Some(len) if rest[len] == b' ' => len,
        Some(_) => {
            return Err(Http1Error::Malformed {
                what: "request target",
            })
        }
    };
    let (version_minor, version_len) = parse_version_line_end(&rest[target_len + 1..])?;
    let line_len = method.len() + 1 + target_len + 1 + version_len;
    let fields = parse_fields(bytes, line_len)?;
    let head = RequestHead {
        method: method.to_owned(),
        target: String::from_utf8_lossy(&rest[..target_len]).into_owned(),
        version_minor,
        host: fields.host.filter(|host| !host.is_empty()).map(lossy),
        content_length: fields.content_length,
        chunked: fields.chunked,
        user_agent: fields.user_agent.map(lossy),
        traceparent: match fields.traceparent {
            TraceParentField::One(value) => parse_traceparent(value),
            TraceParentField::Absent | TraceParentField::Repeated => None,
        },
        head_complete: fields.complete,
        head_len: fields.end,
    };
    Ok((head, fields.transfer_encoding))
}

/// Parses `HTTP/1.x` followed by CRLF or LF; returns the minor version and the bytes consumed.
fn parse_version_line_end(bytes: &[u8]) -> Result<(u8, usize), Http1Error> {
    let (minor, len) = parse_version(bytes)?;
    match bytes.get(len..) {
        Some([b'\n', ..]) => Ok((minor, len + 1)),
        Some([b'\r', b'\n', ..]) => Ok((minor, len + 2)),
        Some([] | [b'\r']) => Err(Http1Error::Truncated),
        _ => Err(Http1Error::Malformed {
            what: "http version",
        }),
    }
}

/// Parses `HTTP/1.0` or `HTTP/1.1` at the start of `bytes`; returns the minor version and the
/// bytes consumed (8).
fn parse_version(bytes: &[u8]) -> Result<(u8, usize), Http1Error> {
    const PREFIX: &[u8] = b"HTTP/1.";
    let seen = bytes.len().min(PREFIX.len());
    if bytes[..seen] != PREFIX[..seen] {
        return Err(Http1Error::Malformed {
            what: "http version",
        });
    }
    match bytes.get(PREFIX.len()) {
        None => Err(Http1Error::Truncated),
        Some(b'0') => Ok((0, PREFIX.len() + 1)),
        Some(b'1') => Ok((1, PREFIX.len() + 1)),
        Some(_) => Err(Http1Error::Malformed {
            what: "http version",
        }),
    }
}

/// Parses a status line; returns the minor version, the status and the bytes consumed.
fn parse_status_line(bytes: &[u8]) -> Result<(u8, u16, usize), Http1Error> {
    if !is_response_start(bytes) {
        return Err(if b"HTTP/1.".starts_with(bytes) {
            Http1Error::Truncated
        } else {
            Http1Error::NotHttp
        });
    }
    let (version_minor, version_len) = parse_version(bytes)?;
    let rest = &bytes[version_len..];
    let Some(line_len) = rest.iter().position(|&b| b == b'\n') else {
        return Err(Http1Error::Truncated);
    };
    let line = strip_cr(&rest[..line_len]);
    // `SP 3DIGIT`, then `SP reason` (RFC 9112 §4); a missing reason and its space are tolerated.
    let status = match line {
        [b' ', d0 @ b'1'..=b'9', d1 @ b'0'..=b'9', d2 @ b'0'..=b'9', reason @ ..]
            if reason.is_empty() || reason[0] == b' ' =>
        {
            u16::from(d0 - b'0') * 100 + u16::from(d1 - b'0') * 10 + u16::from(d2 - b'0')
        }
        _ => {
            return Err(Http1Error::Malformed {
                what: "status line",
            })
        }
    };
    if line.iter().any(|&b| is_control(b)) {
        return Err(Http1Error::Malformed {
            what: "reason phrase",
        });
    }
    Ok((version_minor, status, version_len + line_len + 1))
}

/// How many `traceparent` headers a request has.
#[derive(Clone, Copy)]
enum TraceParentField<'a> {
    Absent,
    One(&'a [u8]),
    /// W3C Trace Context §3.2.1 allows combining repeated headers, which for `traceparent` yields
    /// no valid value: treated as invalid.
    Repeated,
}

/// The header fields the capture uses, borrowed from the prefix.
struct Fields<'a> {
    host: Option<&'a [u8]>,
    content_length: Option<u64>,
    transfer_encoding: bool,
    chunked: bool,
    user_agent: Option<&'a [u8]>,
    traceparent: TraceParentField<'a>,
    /// Whether the blank line ending the head was found.
    complete: bool,
    /// Offset just past the blank line, or past the last complete header line.
    end: usize,
}

/// Parses header lines from `start` until the blank line or the end of `bytes`; a last line
/// without its LF is left out.
fn parse_fields(bytes: &[u8], start: usize) -> Result<Fields<'_>, Http1Error> {
    let mut fields = Fields {
        host: None,
        content_length: None,
        transfer_encoding: false,
        chunked: false,
        user_agent: None,
        traceparent: TraceParentField::Absent,
        complete: false,
        end: start,
    };
    let mut pos = start;
    loop {
        let rest = bytes.get(pos..).unwrap_or_default();
        let Some(line_len) = rest.iter().position(|&b| b == b'\n') else {
            fields.end = pos;
            return Ok(fields);
        };
        let line = strip_cr(&rest[..line_len]);
        pos += line_len + 1;
        if line.is_empty() {
            fields.complete = true;
            fields.end = pos;
            return Ok(fields);
        }
        let Some(colon) = line.iter().position(|&b| b == b':') else {
            return Err(Http1Error::Malformed {
                what: "header line",
            });
        };
        let name = &line[..colon];
        // No whitespace is allowed before the colon (RFC 9112 §5.1), and a line starting with
        // whitespace (obsolete line folding) has no valid name either.
        if name.is_empty() || !name.iter().all(|&b| is_tchar(b)) {
            return Err(Http1Error::Malformed {
                what: "header name",
            });
        }
        let value = trim_ows(&line[colon + 1..]);
        if value.iter().any(|&b| is_control(b)) {
            return Err(Http1Error::Malformed {
                what: "header value",
            });
        }
        if name.eq_ignore_ascii_case(b"content-length") {
            let length = parse_content_length(value)?;
            if fields.content_length.is_some_and(|seen| seen != length) {
                return Err(Http1Error::Malformed {
                    what: "content-length",
                });
            }
            fields.content_length = Some(length);
        } else if name.eq_ignore_ascii_case(b"transfer-encoding") {
            fields.transfer_encoding = true;
            // Repeated headers form one list (RFC 9110 §5.3): the last coding seen is the final
            // one.
            if let Some(last) = value
                .rsplit(|&b| b == b',')
                .map(trim_ows)
                .find(|c| !c.is_empty())
            {
                fields.chunked = last.eq_ignore_ascii_case(b"chunked");
            }
        } else if name.eq_ignore_ascii_case(b"host") {
            // RFC 9112 §3.2: a request with more than one Host is invalid.
            if fields.host.is_some() {
                return Err(Http1Error::Malformed { what: "host" });
            }
            fields.host = Some(value);
        } else if name.eq_ignore_ascii_case(b"user-agent") {
            fields.user_agent.get_or_insert(value);
        } else if name.eq_ignore_ascii_case(b"traceparent") {
            fields.traceparent = match fields.traceparent {
                TraceParentField::Absent => TraceParentField::One(value),
                _ => TraceParentField::Repeated,
            };
        }
    }
}

/// Parses a `Content-Length` value: digits, or a list of identical digit strings (RFC 9110
/// §8.6 lets a recipient accept `42, 42`).
fn parse_content_length(value: &[u8]) -> Result<u64, Http1Error> {
    const INVALID: Http1Error = Http1Error::Malformed {
        what: "content-length",
    };
    let mut length = None;
    for item in value.split(|&b| b == b',').map(trim_ows) {
        if item.is_empty() || !item.iter().all(u8::is_ascii_digit) {
            return Err(INVALID);
        }
        let parsed = item.iter().try_fold(0u64, |acc, &digit| {
            acc.checked_mul(10)?.checked_add(u64::from(digit - b'0'))
        });
        match (parsed, length) {
            (None, _) => return Err(INVALID),
            (Some(parsed), Some(seen)) if parsed != seen => return Err(INVALID),
            (Some(parsed), _) => length = Some(parsed),
        }
    }
    length.ok_or(INVALID)
}

/// Skips empty lines (CRLF or LF) starting at `pos`.
fn skip_empty_lines(bytes: &[u8], mut pos: usize) -> usize {
    loop {
        match bytes.get(pos..) {
            Some([b'\n', ..]) => pos += 1,
            Some([b'\r', b'\n', ..]) => pos += 2,
            _ => return pos,
        }
    }
}

/// Decodes two lowercase hex digits.
fn hex_byte(digits: &[u8]) -> Option<u8> {
    match digits {
        [high, low] => Some(hex_digit(*high)? << 4 | hex_digit(*low)?),
        _ => None,
    }
}

/// Decodes lowercase hex `digits` into `out`, which must be half as long.
fn hex_into(digits: &[u8], out: &mut [u8]) -> Option<()> {
    if digits.len() != out.len() * 2 {
        return None;
    }
    for (byte, pair) in out.iter_mut().zip(digits.chunks_exact(2)) {
        *byte = hex_byte(pair)?;
    }
    Some(())
}

/// Decodes one lowercase hex digit (W3C Trace Context allows no uppercase).
fn hex_digit(digit: u8) -> Option<u8> {
    match digit {
        b'0'..=b'9' => Some(digit - b'0'),
        b'a'..=b'f' => Some(digit - b'a' + 10),
        _ => None,
    }
}

/// Whether `b` is a visible ASCII character (VCHAR), as allowed in a request target.
fn is_visible(b: u8) -> bool {
    (0x21..=0x7e).contains(&b)
}

/// Whether `b` is a control byte not allowed in a field value or reason phrase (HTAB is).
fn is_control(b: u8) -> bool {
    (b < 0x20 && b != b'\t') || b == 0x7f
}

/// Whether `b` may appear in a header name (`tchar`, RFC 9110 §5.6.2).
fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// Removes one trailing CR (the line was split at LF).
fn strip_cr(line: &[u8]) -> &[u8] {
    line.strip_suffix(b"\r").unwrap_or(line)
}

/// Removes leading and trailing spaces and tabs (optional whitespace, RFC 9110 §5.6.3).
fn trim_ows(value: &[u8]) -> &[u8] {
    let is_ows = |b: &u8| *b == b' ' || *b == b'\t';
    let start = value.iter().position(|b| !is_ows(b)).unwrap_or(value.len());
    let end = value
        .iter()
        .rposition(|b| !is_ows(b))
        .map_or(start, |last| last + 1);
    value.get(start..end).unwrap_or_default()
}

fn lossy(value: &[u8]) -> String {
    String::from_utf8_lossy(value).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// The W3C Trace Context example `traceparent`.
    const W3C_TRACEPARENT: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    const W3C_TRACE_ID: [u8; 16] = [
        0x4b, 0xf9, 0x2f, 0x35, 0x77, 0xb3, 0x4d, 0xa6, 0xa3, 0xce, 0x92, 0x9d, 0x0e, 0x0e, 0x47,
        0x36,
    ];
    const W3C_PARENT_ID: [u8; 8] = [0x00, 0xf0, 0x67, 0xaa, 0x0b, 0xa9, 0x02, 0xb7];

    fn request(bytes: &[u8]) -> RequestHead {
        parse_request(bytes).unwrap_or_else(|err| {
            panic!("{:?} should parse: {err}", String::from_utf8_lossy(bytes))
        })
    }

    fn malformed(what: &'static str) -> Result<RequestHead, Http1Error> {
        Err(Http1Error::Malformed { what })
    }

    #[test]
    fn parses_a_get_with_headers() {
        let bytes = format!(
            "GET /api/users?id=7 HTTP/1.1\r\nHost: example.com:8080\r\n\
             user-agent:  curl/8.5.0 \r\nAccept: */*\r\ntraceparent: {W3C_TRACEPARENT}\r\n\r\n"
        );
        let head = request(bytes.as_bytes());
        assert_eq!(
            head,
            RequestHead {
                method: "GET".into(),
                target: "/api/users?id=7".into(),
                version_minor: 1,
                host: Some("example.com:8080".into()),
                content_length: None,
                chunked: false,
                user_agent: Some("curl/8.5.0".into()),
                traceparent: Some(TraceParent {
                    trace_id: W3C_TRACE_ID,
                    parent_id: W3C_PARENT_ID,
                    flags: 1
                }),
                head_complete: true,
                head_len: bytes.len(),
            }
        );
    }

    #[test]
    fn parses_every_method() {
        for method in METHODS {
            let head = request(format!("{method} / HTTP/1.0\r\n\r\n").as_bytes());
            assert_eq!(head.method, method);
            assert_eq!(head.version_minor, 0);
        }
        assert_eq!(
            parse_request(b"get / HTTP/1.1\r\n\r\n"),
            Err(Http1Error::NotHttp)
        );
        assert_eq!(
            parse_request(b"PRI * HTTP/2.0\r\n\r\n"),
            Err(Http1Error::NotHttp)
        );
        assert_eq!(request(b"OPTIONS * HTTP/1.1\r\n\r\n").target, "*");
        assert_eq!(
            request(b"CONNECT example.com:443 HTTP/1.1\r\n\r\n").target,
            "example.com:443"
        );
    }

    #[test]
    fn accepts_bare_lf_line_ends() {
        let bytes = b"POST /submit HTTP/1.1\nHost: a\nContent-Length: 3\n\nabc";
        let head = request(bytes);
        assert_eq!(head.host.as_deref(), Some("a"));
        assert_eq!(head.content_length, Some(3));
        assert!(head.head_complete);
        assert_eq!(head.head_len, bytes.len() - 3);
    }

    #[test]
    fn header_names_are_case_insensitive() {
        let head =
            request(b"PUT /x HTTP/1.1\r\nHOST: h\r\ncOnTeNt-LeNgTh: 10\r\nUser-Agent: ua\r\n\r\n");
        assert_eq!(head.host.as_deref(), Some("h"));
        assert_eq!(head.content_length, Some(10));
        assert_eq!(head.user_agent.as_deref(), Some("ua"));
    }

    #[test]
    fn incomplete_head_keeps_complete_lines_only() {
        let bytes = b"GET / HTTP/1.1\r\nHost: a\r\nContent-Length: 12";
        let head = request(bytes);
        assert_eq!(head.host.as_deref(), Some("a"));
        // The cut-off line might have gone on as "123": it is left out.
        assert_eq!(head.content_length, None);
        assert!(!head.head_complete);
        assert_eq!(head.head_len, "GET / HTTP/1.1\r\nHost: a\r\n".len());

        let cut_before_lf = request(b"GET / HTTP/1.1\r\nHost: a\r");
        assert_eq!(cut_before_lf.host, None);
        assert_eq!(cut_before_lf.head_len, "GET / HTTP/1.1\r\n".len());
    }

    #[test]
    fn content_length_is_validated() {
        let with = |value: &str| {
            parse_request(format!("POST / HTTP/1.1\r\nContent-Length: {value}\r\n\r\n").as_bytes())
                .map(|head| head.content_length)
        };
        assert_eq!(with("0"), Ok(Some(0)));
        assert_eq!(with("42, 42"), Ok(Some(42)));
        assert_eq!(with("18446744073709551615"), Ok(Some(u64::MAX)));
        for invalid in [
            "",
            "-1",
            "+1",
            "1.5",
            "0x10",
            "4 2",
            "42, 43",
            "42,",
            "18446744073709551616",
        ] {
            assert_eq!(
                with(invalid),
                Err(Http1Error::Malformed {
                    what: "content-length"
                }),
                "{invalid:?}"
            );
        }
        assert_eq!(
            parse_request(b"POST / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n"),
            malformed("content-length")
        );
        let same_twice = b"POST / HTTP/1.1\r\nContent-Length: 2\r\nContent-Length: 2\r\n\r\n";
        assert_eq!(request(same_twice).content_length, Some(2));
    }

    #[test]
    fn transfer_encoding_chunked_is_the_final_coding() {
        let with = |headers: &str| request(format!("POST / HTTP/1.1\r\n{headers}\r\n").as_bytes());
        assert!(with("Transfer-Encoding: chunked\r\n").chunked);
        assert!(with("Transfer-Encoding: gzip, Chunked\r\n").chunked);
        assert!(with("Transfer-Encoding: gzip\r\nTransfer-Encoding: chunked\r\n").chunked);
        assert!(!with("Transfer-Encoding: chunked, gzip\r\n").chunked);
        assert!(!with("Content-Length: 5\r\n").chunked);
    }

    #[test]
    fn rejects_malformed_header_lines() {
        assert_eq!(
            parse_request(b"GET / HTTP/1.1\r\nHost example.com\r\n\r\n"),
            malformed("header line")
        );
        assert_eq!(
            parse_request(b"GET / HTTP/1.1\r\nHost : a\r\n\r\n"),
            malformed("header name")
        );
        assert_eq!(
            parse_request(b"GET / HTTP/1.1\r\n: a\r\n\r\n"),
            malformed("header name")
        );
        assert_eq!(
            parse_request(b"GET / HTTP/1.1\r\nX\x01Y: a\r\n\r\n"),
            malformed("header name")
        );
        assert_eq!(
            parse_request(b"GET / HTTP/1.1\r\nA: b\r\n c: d\r\n\r\n"),
            malformed("header name")
        );
        assert_eq!(
            parse_request(b"GET / HTTP/1.1\r\nA: b\r\n c\r\n\r\n"),
            malformed("header line")
        );
        assert_eq!(
            parse_request(b"GET / HTTP/1.1\r\nA: b\x00c\r\n\r\n"),
            malformed("header value")
        );
        assert_eq!(
            parse_request(b"GET / HTTP/1.1\r\nA: b\rc\r\n\r\n"),
            malformed("header value")
        );
        assert_eq!(
            parse_request(b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n"),
            malformed("host")
        );
        // Tabs and obs-text are allowed in values.
        let head = request(b"GET / HTTP/1.1\r\nUser-Agent: a\tb \xc3\xa9\r\n\r\n");
        assert_eq!(head.user_agent.as_deref(), Some("a\tb \u{e9}"));
    }

    #[test]
    fn rejects_bad_request_lines() {
        assert_eq!(parse_request(b"GET\r\n\r\n"), Err(Http1Error::NotHttp));
        assert_eq!(parse_request(b"GET \r\n\r\n"), malformed("request target"));
        assert_eq!(
            parse_request(b"GET  / HTTP/1.1\r\n\r\n"),
            malformed("request target")
        );
        assert_eq!(parse_request(b"GET /\r\n\r\n"), malformed("request target"));
        assert_eq!(
            parse_request(b"GET /a b HTTP/1.1\r\n\r\n"),
            malformed("http version")
        );
        assert_eq!(
            parse_request(b"GET /\x7f HTTP/1.1\r\n\r\n"),
            malformed("request target")
        );
        assert_eq!(
            parse_request(b"GET /caf\xc3\xa9 HTTP/1.1\r\n\r\n"),
            malformed("request target")
        );
        assert_eq!(
            parse_request(b"GET / HTTP/2.0\r\n\r\n"),
            malformed("http version")
        );
        assert_eq!(
            parse_request(b"GET / HTTP/1.2\r\n\r\n"),
            malformed("http version")
        );
        assert_eq!(
            parse_request(b"GET / HTTP/1.10\r\n\r\n"),
            malformed("http version")
        );
        assert_eq!(
            parse_request(b"GET / HTTP/1.1 \r\n\r\n"),
            malformed("http version")
        );
        assert_eq!(
            parse_request(b"GET / HTTP/1.1\r\r\n\r\n"),
            malformed("http version")
        );
        assert_eq!(
            parse_request(b"GET / http/1.1\r\n\r\n"),
            malformed("http version")
        );
    }

    #[test]
    fn short_prefixes_are_truncated_not_wrong() {
        assert_eq!(parse_request(b""), Err(Http1Error::Truncated));
        assert_eq!(parse_request(b"GE"), Err(Http1Error::Truncated));
        assert_eq!(parse_request(b"GET"), Err(Http1Error::Truncated));
        assert_eq!(parse_request(b"GET /index.ht"), Err(Http1Error::Truncated));
        assert_eq!(
            parse_request(b"GET / HTTP/1.1\r"),
            Err(Http1Error::Truncated)
        );
        assert_eq!(parse_request(b"GX"), Err(Http1Error::NotHttp));
    }

    #[test]
    fn every_truncation_of_a_request_is_the_same_request_or_an_error() {
        let full = format!(
            "POST /api/v1/orders?x=1 HTTP/1.1\r\nHost: shop\r\nContent-Length: 4\r\n\
             traceparent: {W3C_TRACEPARENT}\r\n\r\nbody"
        );
        let full = full.as_bytes();
        let whole = request(full);
        for end in 0..=full.len() {
            match parse_request(&full[..end]) {
                Ok(head) => {
                    assert_eq!((&head.method, &head.target), (&whole.method, &whole.target));
                    assert!(head.head_len <= end);
                    if head.head_complete {
                        assert_eq!(head, whole);
                    }
                }
                Err(err) => assert_eq!(err, Http1Error::Truncated, "cut at {end}"),
            }
        }
    }

    #[test]
    fn tls_and_binary_are_not_http() {
        let client_hello = [
            0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01, 0xfc, 0x03, 0x03,
        ];
        assert_eq!(parse_request(&client_hello), Err(Http1Error::NotHttp));
        assert_eq!(parse_response(&client_hello), Err(Http1Error::NotHttp));
        assert_eq!(nth_request(&client_hello, 0), Err(Http1Error::NotHttp));
        assert!(!is_request_start(&client_hello));
        assert!(!is_response_start(&client_hello));
        assert_eq!(
            parse_request(b"\0\0\0\x04GET / HTTP/1.1\r\n"),
            Err(Http1Error::NotHttp)
        );
    }

    #[test]
    fn start_tests_match_the_kernel_filter() {
        assert!(is_request_start(b"GET /"));
        assert!(is_request_start(b"DELETE "));
        assert!(!is_request_start(b"GET"));
        assert!(!is_request_start(b"GETS /"));
        assert!(!is_request_start(b"get /"));
        assert!(is_response_start(b"HTTP/1.1 200 OK"));
        assert!(is_response_start(b"HTTP/1.9"));
        assert!(!is_response_start(b"HTTP/2 200"));
        assert!(!is_response_start(b"HTTP/1"));
    }

    #[test]
    fn pipelined_keep_alive_gets() {
        let bytes = b"GET /a HTTP/1.1\r\nHost: h\r\n\r\nGET /b HTTP/1.1\r\nHost: h\r\n\r\nGET /c HTTP/1.1\r\nHo";
        let targets: Vec<_> = (0..3)
            .map(|n| nth_request(bytes, n).map(|head| (head.target, head.head_complete)))
            .collect();
        assert_eq!(
            targets,
            [
                Ok(("/a".into(), true)),
                Ok(("/b".into(), true)),
                Ok(("/c".into(), false))
            ]
        );
        assert_eq!(nth_request(bytes, 3), Err(Http1Error::Truncated));
        assert_eq!(nth_request(bytes, usize::MAX), Err(Http1Error::Truncated));
        // The third request is incomplete, so nothing after it can be located.
        let complete = &bytes[..bytes.len() - "GET /c HTTP/1.1\r\nHo".len()];
        assert_eq!(nth_request(complete, 2), Err(Http1Error::Truncated));
    }

    #[test]
    fn pipelining_skips_content_length_bodies() {
        let bytes = b"POST /upload HTTP/1.1\r\nContent-Length: 11\r\n\r\nhello world\
                      GET /next HTTP/1.1\r\n\r\n";
        assert_eq!(
            nth_request(bytes, 0).map(|head| head.method),
            Ok("POST".into())
        );
        let next = nth_request(bytes, 1).unwrap_or_else(|err| panic!("second request: {err}"));
        assert_eq!(
            (next.method.as_str(), next.target.as_str()),
            ("GET", "/next")
        );
        // The body does not fit in the prefix: the next request cannot be located.
        let cut = b"POST /upload HTTP/1.1\r\nContent-Length: 500\r\n\r\nhello";
        assert_eq!(nth_request(cut, 1), Err(Http1Error::Truncated));
        let huge = b"POST / HTTP/1.1\r\nContent-Length: 18446744073709551615\r\n\r\nGET / HTTP/1.1\r\n\r\n";
        assert_eq!(nth_request(huge, 1), Err(Http1Error::Truncated));
    }

    #[test]
    fn pipelining_skips_empty_lines_between_requests() {
        let bytes = b"POST / HTTP/1.1\r\nContent-Length: 1\r\n\r\nx\r\nGET /b HTTP/1.1\r\n\r\n";
        assert_eq!(
            nth_request(bytes, 1).map(|head| head.target),
            Ok("/b".into())
        );
    }

    #[test]
    fn chunked_body_stops_pipelining() {
        let bytes = b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n\
                      GET /next HTTP/1.1\r\n\r\n";
        assert!(nth_request(bytes, 0).is_ok_and(|head| head.chunked));
        assert_eq!(nth_request(bytes, 1), Err(Http1Error::UnskippableBody));
        let gzip = b"POST / HTTP/1.1\r\nTransfer-Encoding: gzip\r\n\r\nGET / HTTP/1.1\r\n\r\n";
        assert_eq!(nth_request(gzip, 1), Err(Http1Error::UnskippableBody));
    }

    #[test]
    fn parses_responses() {
        let head = parse_response(b"HTTP/1.1 404 Not Found\r\nContent-Length: 9\r\n\r\nnot found")
            .unwrap_or_else(|err| panic!("response: {err}"));
        assert_eq!(
            head,
            ResponseHead {
                version_minor: 1,
                status: 404,
                content_length: Some(9),
                chunked: false,
                head_complete: true,
                head_len: "HTTP/1.1 404 Not Found\r\nContent-Length: 9\r\n\r\n".len(),
            }
        );
        let chunked = parse_response(b"HTTP/1.0 200 OK\nTransfer-Encoding: chunked\n\n");
        assert!(chunked.is_ok_and(|head| head.chunked && head.version_minor == 0));
        assert!(parse_response(b"HTTP/1.1 204\r\n\r\n").is_ok_and(|head| head.status == 204));
        assert!(parse_response(b"HTTP/1.1 999 \r\n").is_ok_and(|head| !head.head_complete));
        assert!(
            parse_response(b"HTTP/1.1 200 OK\r\nDate: Mon").is_ok_and(|head| head.head_len == 17)
        );
    }

    #[test]
    fn rejects_bad_status_lines() {
        let status_line = Err(Http1Error::Malformed {
            what: "status line",
        });
        assert_eq!(parse_response(b"HTTP/1.1 099 Low\r\n\r\n"), status_line);
        assert_eq!(parse_response(b"HTTP/1.1 20 OK\r\n\r\n"), status_line);
        assert_eq!(parse_response(b"HTTP/1.1 2000 OK\r\n\r\n"), status_line);
        assert_eq!(parse_response(b"HTTP/1.1 2x0 OK\r\n\r\n"), status_line);
        assert_eq!(parse_response(b"HTTP/1.1  200 OK\r\n\r\n"), status_line);
        assert_eq!(
            parse_response(b"HTTP/1.1 200 O\x00K\r\n\r\n"),
            Err(Http1Error::Malformed {
                what: "reason phrase"
            })
        );
        assert_eq!(
            parse_response(b"HTTP/1.3 200 OK\r\n\r\n"),
            Err(Http1Error::Malformed {
                what: "http version"
            })
        );
        assert_eq!(
            parse_response(b"HTTP/1.1 200 OK"),
            Err(Http1Error::Truncated)
        );
        assert_eq!(parse_response(b"HTTP/"), Err(Http1Error::Truncated));
        assert_eq!(parse_response(b"HTTP/2 200\r\n"), Err(Http1Error::NotHttp));
        assert_eq!(
            parse_response(b"GET / HTTP/1.1\r\n"),
            Err(Http1Error::NotHttp)
        );
    }

    #[test]
    fn traceparent_examples_from_the_w3c_spec() {
        let valid = Some(TraceParent {
            trace_id: W3C_TRACE_ID,
            parent_id: W3C_PARENT_ID,
            flags: 1,
        });
        assert_eq!(parse_traceparent(W3C_TRACEPARENT.as_bytes()), valid);
        assert_eq!(
            parse_traceparent(format!(" {W3C_TRACEPARENT}\t").as_bytes()),
            valid
        );
        let not_sampled = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00";
        assert!(parse_traceparent(not_sampled.as_bytes()).is_some_and(|tp| !tp.sampled()));
        // Future versions: more fields after a dash are allowed.
        for future in [
            "cc-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "cc-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-what-the-future-will-be-like",
            "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-09-",
        ] {
            assert!(parse_traceparent(future.as_bytes()).is_some(), "{future}");
        }
        for invalid in [
            "",
            "00",
            // Version 00 allows nothing after the flags.
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01x",
            "cc-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01.what",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00F067AA0BA902B7-01",
            "0A-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-0g",
            "00_4bf92f3577b34da6a3ce929d0e0e4736_00f067aa0ba902b7_01",
            "00-4bf92f3577b34da6a3ce929d0e0e473-600f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-1",
        ] {
            assert_eq!(parse_traceparent(invalid.as_bytes()), None, "{invalid}");
        }
    }

    #[test]
    fn invalid_or_repeated_traceparent_is_dropped_not_an_error() {
        let invalid = request(b"GET / HTTP/1.1\r\ntraceparent: 00-xyz\r\n\r\n");
        assert_eq!(invalid.traceparent, None);
        let twice = format!(
            "GET / HTTP/1.1\r\ntraceparent: {W3C_TRACEPARENT}\r\nTraceparent: {W3C_TRACEPARENT}\r\n\r\n"
        );
        assert_eq!(request(twice.as_bytes()).traceparent, None);
    }

    #[test]
    fn error_reasons_are_stable() {
        assert_eq!(Http1Error::NotHttp.reason(), "not_http");
        assert_eq!(Http1Error::Truncated.reason(), "truncated");
        assert_eq!(Http1Error::Malformed { what: "host" }.reason(), "malformed");
        assert_eq!(Http1Error::UnskippableBody.reason(), "unskippable_body");
        assert_eq!(
            Http1Error::Malformed {
                what: "content-length"
            }
            .to_string(),
            "malformed http/1.x content-length"
        );
    }

    /// A generated request: its parts and its bytes.
    #[derive(Debug, Clone)]
    struct Generated {
        method: &'static str,
        target: String,
        version_minor: u8,
        host: Option<String>,
        user_agent: Option<String>,
        body: Vec<u8>,
        traceparent: Option<TraceParent>,
        bytes: Vec<u8>,
    }

    fn hex(bytes: &[u8]) -> String {
        bytes.iter().map(|b| format!("{b:02x}")).collect()
    }

    prop_compose! {
        fn generated_request()(
            method in proptest::sample::select(METHODS.to_vec()),
            target in "/[a-zA-Z0-9/_.-]{0,40}",
            version_minor in 0u8..=1,
            host in proptest::option::of("[a-z0-9.-]{1,20}(:[0-9]{1,5})?"),
            user_agent in proptest::option::of("[ -~]{0,30}[!-~]"),
            extra in proptest::collection::vec(("[A-Za-z][A-Za-z0-9-]{0,15}", "[!-~]([ -~]{0,20}[!-~])?"), 0..4),
            body in proptest::collection::vec(any::<u8>(), 0..40),
            traceparent in proptest::option::of((any::<[u8; 16]>(), any::<[u8; 8]>(), any::<u8>())),
            lf_only in any::<bool>(),
        ) -> Generated {
            let eol = if lf_only { "\n" } else { "\r\n" };
            let traceparent = traceparent
                .filter(|(trace_id, parent_id, _)| *trace_id != [0; 16] && *parent_id != [0; 8])
                .map(|(trace_id, parent_id, flags)| TraceParent { trace_id, parent_id, flags });
            let mut head = format!("{method} {target} HTTP/1.{version_minor}{eol}");
            if let Some(host) = &host {
                head += &format!("Host: {host}{eol}");
            }
            for (name, value) in &extra {
                // Generated names must not collide with the headers under test.
                head += &format!("X-{name}: {value}{eol}");
            }
            if let Some(user_agent) = &user_agent {
                head += &format!("user-agent:{user_agent}{eol}");
            }
            if let Some(tp) = &traceparent {
                head += &format!(
                    "Traceparent: 00-{}-{}-{:02x}{eol}",
                    hex(&tp.trace_id),
                    hex(&tp.parent_id),
                    tp.flags
                );
            }
            if !body.is_empty() {
                head += &format!("Content-Length: {}{eol}", body.len());
            }
            head += eol;
            let mut bytes = head.into_bytes();
            bytes.extend_from_slice(&body);
            let user_agent = user_agent.map(|ua| ua.trim_start().to_owned());
            Generated { method, target, version_minor, host, user_agent, body, traceparent, bytes }
        }
    }

    fn assert_matches(head: &RequestHead, generated: &Generated) {
        assert_eq!(head.method, generated.method);
        assert_eq!(head.target, generated.target);
        assert_eq!(head.version_minor, generated.version_minor);
        assert_eq!(head.host, generated.host);
        assert_eq!(head.user_agent, generated.user_agent);
        assert_eq!(head.traceparent, generated.traceparent);
        let body_len = generated.body.len() as u64;
        assert_eq!(head.content_length, (body_len > 0).then_some(body_len));
        assert!(!head.chunked);
        assert!(head.head_complete);
        assert_eq!(head.head_len, generated.bytes.len() - generated.body.len());
    }

    #[test]
    fn decodes_chunked_bodies() {
        let body =
            b"5;name=value\r\nhello\r\n1\r\n \r\nA\r\n0123456789\r\n0\r\nX-Trailer: 1\r\n\r\n";
        assert_eq!(decode_chunked(body).expect("chunked"), b"hello 0123456789");
        assert_eq!(decode_chunked(b"0\n\n").expect("empty"), b"");
        assert_eq!(decode_chunked(b"3\nabc\n0\n\n").expect("bare LF"), b"abc");
    }

    #[test]
    fn rejects_broken_chunked_bodies() {
        for (bytes, error) in [
            (&b""[..], Http1Error::Truncated),
            (b"5\r\nhel", Http1Error::Truncated),
            (b"5\r\nhello\r\n", Http1Error::Truncated),
            (b"0\r\nX-Trailer: 1\r\n", Http1Error::Truncated),
            (b"x\r\n", Http1Error::Malformed { what: "chunk size" }),
            (b"\r\n", Http1Error::Malformed { what: "chunk size" }),
            (
                b"1000000000000000\r\n",
                Http1Error::Malformed { what: "chunk size" },
            ),
            (
                b"2\r\nhello\r\n0\r\n\r\n",
                Http1Error::Malformed { what: "chunk end" },
            ),
        ] {
            assert_eq!(
                decode_chunked(bytes),
                Err(error),
                "{:?}",
                String::from_utf8_lossy(bytes)
            );
        }
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..300), n in 0usize..4) {
            let _ = parse_request(&bytes);
            let _ = parse_response(&bytes);
            let _ = nth_request(&bytes, n);
            let _ = parse_traceparent(&bytes);
            let _ = decode_chunked(&bytes);
            let _ = is_request_start(&bytes);
            let _ = is_response_start(&bytes);
        }

        #[test]
        fn http_like_bytes_never_panic(
            start in proptest::sample::select(vec!["GET / HTTP/1.1\r\n", "HTTP/1.1 200 OK\r\n", "POST /x HTTP/1.0\n"]),
            rest in proptest::collection::vec(
                proptest::sample::select(b"\r\n :,-0123456789abcdefHTTP/1.GETContent-Length\x00\xff".to_vec()),
                0..200,
            ),
            n in 0usize..4,
        ) {
            let mut bytes = start.as_bytes().to_vec();
            bytes.extend_from_slice(&rest);
            let _ = parse_request(&bytes);
            let _ = parse_response(&bytes);
            let _ = nth_request(&bytes, n);
        }

        #[test]
        fn chunked_bodies_round_trip(
            chunks in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 1..50), 0..6),
            uppercase in any::<bool>(),
            cut in any::<prop::sample::Index>(),
        ) {
            let mut bytes = Vec::new();
            for chunk in &chunks {
                let size = if uppercase { format!("{:X}", chunk.len()) } else { format!("{:x}", chunk.len()) };
                bytes.extend_from_slice(format!("{size}\r\n").as_bytes());
                bytes.extend_from_slice(chunk);
                bytes.extend_from_slice(b"\r\n");
            }
            bytes.extend_from_slice(b"0\r\n\r\n");
            prop_assert_eq!(decode_chunked(&bytes), Ok(chunks.concat()));
            let end = cut.index(bytes.len());
            prop_assert_eq!(decode_chunked(&bytes[..end]), Err(Http1Error::Truncated));
        }

        #[test]
        fn valid_requests_round_trip(generated in generated_request()) {
            assert_matches(&request(&generated.bytes), &generated);
        }

        #[test]
        fn truncated_requests_keep_method_and_target(generated in generated_request(), cut in any::<prop::sample::Index>()) {
            let end = cut.index(generated.bytes.len() + 1);
            match parse_request(&generated.bytes[..end]) {
                Ok(head) => {
                    prop_assert_eq!(head.method, generated.method);
                    prop_assert_eq!(head.target, generated.target);
                }
                Err(err) => prop_assert_eq!(err, Http1Error::Truncated),
            }
        }

        #[test]
        fn pipelined_requests_are_found_in_order(requests in proptest::collection::vec(generated_request(), 1..5)) {
            let bytes: Vec<u8> = requests.iter().flat_map(|r| r.bytes.iter().copied()).collect();
            for (n, generated) in requests.iter().enumerate() {
                let head = nth_request(&bytes, n).unwrap_or_else(|err| panic!("request {n}: {err}"));
                assert_matches(&head, generated);
            }
            prop_assert_eq!(nth_request(&bytes, requests.len()), Err(Http1Error::Truncated));
        }
    }
}
