use proptest::prelude::*;

use super::*;
use crate::capture::span::AttrValue;

const CLOCK: Clock = Clock {
    offset_ns: 1_000_000_000_000,
};

fn frame(kind: u8, flags: u8, stream_id: u32, payload: &[u8]) -> Vec<u8> {
    let mut bytes = (payload.len() as u32).to_be_bytes()[1..].to_vec();
    bytes.push(kind);
    bytes.push(flags);
    bytes.extend_from_slice(&stream_id.to_be_bytes());
    bytes.extend_from_slice(payload);
    bytes
}

/// A header block of literal fields without indexing (names and values under 127 bytes).
fn block(fields: &[(&str, &str)]) -> Vec<u8> {
    let mut out = Vec::new();
    for (name, value) in fields {
        out.push(0x00);
        out.push(name.len() as u8);
        out.extend_from_slice(name.as_bytes());
        out.push(value.len() as u8);
        out.extend_from_slice(value.as_bytes());
    }
    out
}

fn settings() -> Vec<u8> {
    frame(4, 0, 0, &[0, 3, 0, 0, 0, 100])
}

fn grpc_request(stream_id: u32, method: &str) -> Vec<u8> {
    let mut bytes = frame(
        kind::HEADERS,
        flag::END_HEADERS,
        stream_id,
        &block(&[
            (":method", "POST"),
            (":scheme", "http"),
            (":path", &format!("/demo.Greeter/{method}")),
            (":authority", "127.0.0.1:50051"),
            ("content-type", "application/grpc"),
            ("te", "trailers"),
        ]),
    );
    bytes.extend(frame(
        kind::DATA,
        flag::END_STREAM,
        stream_id,
        &[0, 0, 0, 0, 2, 1, 2],
    ));
    bytes
}

fn grpc_response(stream_id: u32, status: &str) -> Vec<u8> {
    let mut bytes = frame(
        kind::HEADERS,
        flag::END_HEADERS,
        stream_id,
        &block(&[(":status", "200"), ("content-type", "application/grpc")]),
    );
    bytes.extend(frame(kind::DATA, 0, stream_id, &[0, 0, 0, 0, 1, 9]));
    bytes.extend(frame(
        kind::HEADERS,
        flag::END_HEADERS | flag::END_STREAM,
        stream_id,
        &block(&[("grpc-status", status)]),
    ));
    bytes
}

/// A chunk record of `role` moving `segments` (bytes kept, bytes moved: the rest of each is a gap,
/// or missing after the data for the last one) at `at_ns`.
fn chunk(
    role: u32,
    write: bool,
    at_ns: u64,
    segments: &[(&[u8], usize)],
) -> (Box<H2Chunk>, Vec<u8>) {
    // SAFETY: all-zero is a valid H2Chunk (integers and byte arrays).
    let mut c: Box<H2Chunk> = Box::new(unsafe { std::mem::zeroed() });
    c.kind = profiler_common::http_event::H2_DATA;
    c.role = role;
    c.pid = 42;
    c.fd = 7;
    c.write = u32::from(write);
    c.conn_start_ns = 5;
    c.enter_ns = at_ns;
    c.exit_ns = at_ns + 10;
    c.comm[..6].copy_from_slice(b"server");
    let mut data = Vec::new();
    for (i, (kept, moved)) in segments.iter().enumerate() {
        data.extend_from_slice(kept);
        c.moved += *moved as u64;
        if *moved > kept.len() && i + 1 < segments.len() {
            c.gaps[c.gap_count as usize] = [data.len() as u32, (moved - kept.len()) as u32];
            c.gap_count += 1;
        }
    }
    c.data_len = data.len() as u32;
    (c, data)
}

fn whole(bytes: &[u8]) -> Vec<(&[u8], usize)> {
    vec![(bytes, bytes.len())]
}

fn resource() -> impl FnMut(u32, &str) -> Arc<Resource> {
    |_, comm| {
        Arc::new(Resource {
            service_name: comm.to_string(),
            attributes: Vec::new(),
        })
    }
}

fn push(assembler: &mut H2Assembler, c: &(Box<H2Chunk>, Vec<u8>), out: &mut Vec<Span>) {
    assembler.push(&c.0, &c.1, CLOCK, &mut resource(), out);
}

fn attr<'a>(span: &'a Span, name: &str) -> Option<&'a AttrValue> {
    span.attributes
        .iter()
        .find(|(n, _)| n == name)
        .map(|(_, v)| v)
}

fn server_conversation() -> (Vec<u8>, Vec<u8>) {
    let mut requests = PREFACE_BYTES.to_vec();
    requests.extend(settings());
    requests.extend(grpc_request(1, "SayHello"));
    requests.extend(grpc_request(3, "Fail"));
    let mut responses = settings();
    responses.extend(grpc_response(3, "5"));
    responses.extend(grpc_response(1, "0"));
    (requests, responses)
}

const PREFACE_BYTES: &[u8] = frame::PREFACE;

#[test]
fn grpc_calls_become_server_spans_with_method_and_status() {
    let (requests, responses) = server_conversation();
    let mut assembler = H2Assembler::default();
    let mut out = Vec::new();
    push(
        &mut assembler,
        &chunk(http_role::SERVER, false, 100, &whole(&requests)),
        &mut out,
    );
    assert!(out.is_empty());
    push(
        &mut assembler,
        &chunk(http_role::SERVER, true, 200, &whole(&responses)),
        &mut out,
    );
    assert_eq!(out.len(), 2);
    let (fail, hello) = (&out[0], &out[1]);
    assert_eq!(hello.name, "demo.Greeter/SayHello");
    assert_eq!(hello.kind, SpanKind::Server);
    assert_eq!(
        attr(hello, "rpc.system"),
        Some(&AttrValue::Str("grpc".into()))
    );
    assert_eq!(
        attr(hello, "rpc.service"),
        Some(&AttrValue::Str("demo.Greeter".into()))
    );
    assert_eq!(
        attr(hello, "rpc.method"),
        Some(&AttrValue::Str("SayHello".into()))
    );
    assert_eq!(
        attr(hello, "rpc.grpc.status_code"),
        Some(&AttrValue::Int(0))
    );
    assert_eq!(attr(hello, "server.port"), Some(&AttrValue::Int(50051)));
    assert!(!hello.error);
    // A server reads requests at the read's return and answers by the write's return.
    assert_eq!(hello.start_unix_ns, CLOCK.unix_ns(110));
    assert_eq!(hello.end_unix_ns, CLOCK.unix_ns(210));
    assert_eq!(fail.name, "demo.Greeter/Fail");
    assert_eq!(attr(fail, "rpc.grpc.status_code"), Some(&AttrValue::Int(5)));
    assert!(!fail.error, "NOT_FOUND is not a server error");
    assert_ne!(hello.trace_id, fail.trace_id);
    assert_eq!(assembler.stats.streams, 2);
    assert_eq!(assembler.stats.spans, 2);
}

#[test]
fn server_streams_keep_their_window_and_the_threads_that_answered() {
    let (requests, responses) = server_conversation();
    // The first response (stream 3) and the HEADERS of the second (stream 1) are written by
    // thread 1001, the rest of stream 1 by 1002; the requests are read by 1000.
    let response_headers = block(&[(":status", "200"), ("content-type", "application/grpc")]);
    let split = settings().len() + grpc_response(3, "5").len() + 9 + response_headers.len();
    let mut assembler = H2Assembler::default();
    let mut out = Vec::new();
    let mut read = chunk(http_role::SERVER, false, 100, &whole(&requests));
    read.0.tid = 1000;
    push(&mut assembler, &read, &mut out);
    assert_eq!(assembler.open_server_streams(), HashMap::from([(42, 110)]));
    let mut first = chunk(http_role::SERVER, true, 200, &whole(&responses[..split]));
    first.0.tid = 1001;
    push(&mut assembler, &first, &mut out);
    let mut second = chunk(http_role::SERVER, true, 300, &whole(&responses[split..]));
    second.0.tid = 1002;
    push(&mut assembler, &second, &mut out);
    assert!(assembler.open_server_streams().is_empty());

    let link = |span: &Span| SpanLink {
        trace_id: span.trace_id,
        span_id: span.span_id,
    };
    let (fail, hello) = (&out[0], &out[1]);
    assert_eq!(
        assembler.served,
        [
            ServedStream {
                pid: 42,
                threads: vec![1001],
                start_ns: 110,
                end_ns: 210,
                link: link(fail),
            },
            ServedStream {
                pid: 42,
                threads: vec![1001, 1002],
                start_ns: 110,
                end_ns: 310,
                link: link(hello),
            },
        ]
    );

    // Clients serve nothing.
    let mut client = H2Assembler::default();
    push(
        &mut client,
        &chunk(http_role::CLIENT, true, 100, &whole(&requests)),
        &mut out,
    );
    push(
        &mut client,
        &chunk(http_role::CLIENT, false, 300, &whole(&responses)),
        &mut out,
    );
    assert_eq!(client.stats.spans, 2);
    assert!(client.served.is_empty());
}

#[test]
fn any_split_into_syscalls_gives_the_same_spans() {
    let (requests, responses) = server_conversation();
    for split in (1..requests.len()).step_by(7) {
        let mut assembler = H2Assembler::default();
        let mut out = Vec::new();
        let reads = [&requests[..split], &requests[split..]];
        for (i, read) in reads.iter().enumerate() {
            let c = chunk(http_role::SERVER, false, 100 + i as u64, &whole(read));
            push(&mut assembler, &c, &mut out);
        }
        // The responses go out as one writev of three buffers.
        let (a, rest) = responses.split_at(split.min(responses.len()) / 2);
        let (b, c) = rest.split_at(rest.len() / 2);
        let segments = [(a, a.len()), (b, b.len()), (c, c.len())];
        push(
            &mut assembler,
            &chunk(http_role::SERVER, true, 200, &segments),
            &mut out,
        );
        let names: Vec<&str> = out.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(
            names,
            ["demo.Greeter/Fail", "demo.Greeter/SayHello"],
            "split {split}"
        );
    }
}

#[test]
fn client_spans_of_failed_calls_are_errors_and_children_of_the_sending_thread() {
    let (requests, responses) = server_conversation();
    let mut assembler = H2Assembler::default();
    let mut out = Vec::new();
    let mut write = chunk(http_role::CLIENT, true, 100, &whole(&requests));
    write.0.trace_id = [3; 16];
    write.0.span_id = [4; 8];
    push(&mut assembler, &write, &mut out);
    push(
        &mut assembler,
        &chunk(http_role::CLIENT, false, 300, &whole(&responses)),
        &mut out,
    );
    assert_eq!(out.len(), 2);
    let fail = &out[0];
    assert_eq!(fail.kind, SpanKind::Client);
    assert!(fail.error);
    assert_eq!(attr(fail, "error.type"), Some(&AttrValue::Str("5".into())));
    assert_eq!(fail.trace_id, [3; 16]);
    assert_eq!(fail.parent_span_id, Some([4; 8]));
    // A client sends at the write's entry.
    assert_eq!(fail.start_unix_ns, CLOCK.unix_ns(100));
    assert_eq!(fail.end_unix_ns, CLOCK.unix_ns(310));
}

#[test]
fn plain_http2_requests_get_http_attributes_and_continuations_are_joined() {
    let fields = block(&[
        (":method", "GET"),
        (":scheme", "http"),
        (":path", "/users/123?x=1"),
        (":authority", "example.com:8080"),
        (
            "traceparent",
            "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
        ),
    ]);
    let (first, second) = fields.split_at(10);
    let mut requests = PREFACE_BYTES.to_vec();
    requests.extend(frame(kind::HEADERS, flag::END_STREAM, 1, first));
    requests.extend(frame(kind::CONTINUATION, flag::END_HEADERS, 1, second));
    // Padded response headers with 3 bytes of padding.
    let mut padded = vec![3];
    padded.extend(block(&[(":status", "503")]));
    padded.extend([0, 0, 0]);
    let mut responses = frame(kind::HEADERS, flag::END_HEADERS | flag::PADDED, 1, &padded);
    responses.extend(frame(kind::DATA, flag::END_STREAM, 1, b"down"));
    let mut assembler = H2Assembler::default();
    let mut out = Vec::new();
    push(
        &mut assembler,
        &chunk(http_role::SERVER, false, 100, &whole(&requests)),
        &mut out,
    );
    push(
        &mut assembler,
        &chunk(http_role::SERVER, true, 200, &whole(&responses)),
        &mut out,
    );
    assert_eq!(out.len(), 1);
    let span = &out[0];
    assert_eq!(span.name, "GET /users/{id}");
    assert_eq!(
        attr(span, "network.protocol.version"),
        Some(&AttrValue::Str("2".into()))
    );
    assert_eq!(
        attr(span, "http.response.status_code"),
        Some(&AttrValue::Int(503))
    );
    assert_eq!(
        attr(span, "url.path"),
        Some(&AttrValue::Str("/users/123".into()))
    );
    assert!(attr(span, "rpc.system").is_none());
    assert!(span.error);
    assert_eq!(span.trace_id[..2], [0x0a, 0xf7]);
    assert_eq!(span.parent_span_id.map(|p| p[0]), Some(0xb7));
}

#[test]
fn gaps_in_data_are_harmless_and_gaps_in_headers_lose_the_connection() {
    let mut requests = PREFACE_BYTES.to_vec();
    requests.extend(grpc_request(1, "SayHello"));
    let mut big = frame(
        kind::HEADERS,
        flag::END_HEADERS,
        1,
        &block(&[(":status", "200"), ("content-type", "application/grpc")]),
    );
    let data = frame(kind::DATA, 0, 1, &[1; 10_000]);
    let trailers = frame(
        kind::HEADERS,
        flag::END_HEADERS | flag::END_STREAM,
        1,
        &block(&[("grpc-status", "0")]),
    );
    big.extend_from_slice(&data[..50]);
    let mut assembler = H2Assembler::default();
    let mut out = Vec::new();
    push(
        &mut assembler,
        &chunk(http_role::SERVER, false, 100, &whole(&requests)),
        &mut out,
    );
    // The kernel kept the first bytes of the DATA frame only, then the trailers in a second
    // buffer of the same writev.
    let segments = [
        (&big[..], big.len() + data.len() - 50),
        (&trailers[..], trailers.len()),
    ];
    push(
        &mut assembler,
        &chunk(http_role::SERVER, true, 200, &segments),
        &mut out,
    );
    assert_eq!(out.len(), 1, "{:?}", assembler.stats);

    // Now a request whose header block is cut: the connection is lost, its streams counted.
    let mut assembler = H2Assembler::default();
    let mut out = Vec::new();
    let mut second = grpc_request(3, "Count");
    second.truncate(20);
    let segments = [(&requests[..], requests.len()), (&second[..], 60)];
    push(
        &mut assembler,
        &chunk(http_role::SERVER, false, 100, &segments),
        &mut out,
    );
    push(
        &mut assembler,
        &chunk(http_role::SERVER, false, 120, &whole(&grpc_request(5, "X"))),
        &mut out,
    );
    assert!(out.is_empty());
    assert_eq!(
        assembler.stats.lost_connections.get("bytes_missing"),
        Some(&1)
    );
    assert_eq!(
        assembler.stats.unparsed.get("bytes_missing"),
        Some(&1),
        "stream 1 was open"
    );
}

#[test]
fn resets_goaway_and_close_end_streams_without_guessing() {
    let mut requests = PREFACE_BYTES.to_vec();
    for (id, method) in [(1, "SayHello"), (3, "Slow"), (5, "Count"), (7, "Count")] {
        requests.extend(grpc_request(id, method));
    }
    let mut responses = frame(kind::RST_STREAM, 0, 1, &8u32.to_be_bytes());
    responses.extend(frame(kind::GOAWAY, 0, 0, &[0, 0, 0, 5, 0, 0, 0, 0]));
    let mut assembler = H2Assembler::default();
    let mut out = Vec::new();
    push(
        &mut assembler,
        &chunk(http_role::SERVER, false, 100, &whole(&requests)),
        &mut out,
    );
    push(
        &mut assembler,
        &chunk(http_role::SERVER, true, 200, &whole(&responses)),
        &mut out,
    );
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].name, "demo.Greeter/SayHello");
    assert!(out[0].error);
    assert_eq!(
        attr(&out[0], "error.type"),
        Some(&AttrValue::Str("stream_reset".into()))
    );
    assert!(attr(&out[0], "rpc.grpc.status_code").is_none());
    assert_eq!(assembler.stats.unparsed.get("refused_by_goaway"), Some(&1));
    assembler.close(42, 7, 5);
    assert_eq!(assembler.stats.unparsed.get("no_response"), Some(&2));
    assert_eq!(assembler.connections(), 0);
}

#[test]
fn the_dynamic_table_is_kept_per_direction() {
    // `:path` literal with incremental indexing (name index 4), then the same field by index 62.
    let mut first = vec![0x83, 0x86, 0x44, 5];
    first.extend_from_slice(b"/a/b1");
    let mut requests = PREFACE_BYTES.to_vec();
    requests.extend(frame(
        kind::HEADERS,
        flag::END_HEADERS | flag::END_STREAM,
        1,
        &first,
    ));
    requests.extend(frame(
        kind::HEADERS,
        flag::END_HEADERS | flag::END_STREAM,
        3,
        &[0x83, 0x86, 0xbe],
    ));
    // `:status 200` is static index 8.
    let mut responses = frame(
        kind::HEADERS,
        flag::END_HEADERS | flag::END_STREAM,
        1,
        &[0x88],
    );
    responses.extend(frame(
        kind::HEADERS,
        flag::END_HEADERS | flag::END_STREAM,
        3,
        &[0x88],
    ));
    let mut assembler = H2Assembler::default();
    let mut out = Vec::new();
    push(
        &mut assembler,
        &chunk(http_role::SERVER, false, 100, &whole(&requests)),
        &mut out,
    );
    push(
        &mut assembler,
        &chunk(http_role::SERVER, true, 200, &whole(&responses)),
        &mut out,
    );
    let names: Vec<&str> = out.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(names, ["POST /a/b1", "POST /a/b1"]);
}

/// The input of [`fuzz::replay`] for chunks of (written, bytes, missing / 7).
fn replay_input(server: bool, chunks: &[(bool, Vec<u8>, u8)]) -> Vec<u8> {
    let mut input = vec![u8::from(!server)];
    for (write, bytes, missing) in chunks {
        input.push(u8::from(*write) | (missing % 64) << 1);
        input.extend_from_slice(&(bytes.len() as u16).to_le_bytes());
        input.extend_from_slice(bytes);
    }
    input
}

#[test]
fn replay_reads_its_documented_layout() {
    let (requests, responses) = server_conversation();
    let input = replay_input(
        true,
        &[
            (false, requests[PREFACE_BYTES.len()..].to_vec(), 0),
            (true, responses, 0),
        ],
    );
    assert_eq!(fuzz::replay(&input).len(), 2);
}

proptest! {
    #[test]
    fn arbitrary_bytes_never_panic(input in proptest::collection::vec(any::<u8>(), 0..2000)) {
        fuzz::replay(&input);
    }

    #[test]
    fn garbled_conversations_never_panic(
        flips in proptest::collection::vec((any::<usize>(), any::<u8>()), 0..6),
        cut in any::<usize>(),
        missing in 0u8..4,
    ) {
        let (mut requests, mut responses) = server_conversation();
        for (at, bits) in &flips {
            let target = if at % 2 == 0 { &mut requests } else { &mut responses };
            let i = at / 2 % target.len();
            target[i] ^= bits;
        }
        let requests = &requests[PREFACE_BYTES.len()..];
        let cut = cut % requests.len();
        let input = replay_input(
            true,
            &[
                (false, requests[..cut].to_vec(), missing),
                (false, requests[cut..].to_vec(), 0),
                (true, responses, 0),
            ],
        );
        fuzz::replay(&input);
    }
}
