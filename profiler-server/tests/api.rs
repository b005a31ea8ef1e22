//! The HTTP API over loopback with real payloads: the agent's burn3 pprof through
//! `/api/v1/profiles` and Pyroscope's `/ingest` (raw and multipart), queries, auth, limits and
//! malformed input.

mod common;

use common::{encode, get, get_json, http, node_value, InProcess, TempDir, BURN3};
use serde_json::Value;

const MIB16: usize = 16 << 20;

/// burn_alpha, burn_beta, burn_gamma values of a flame graph.
fn burners(graph: &Value) -> [u64; 3] {
    ["burn_alpha", "burn_beta", "burn_gamma"].map(|name| node_value(&graph["root"], name))
}

fn assert_one_two_three([alpha, beta, gamma]: [u64; 3]) {
    assert!(alpha > 5, "too few burn_alpha samples: {alpha}");
    let (beta_ratio, gamma_ratio) = (beta as f64 / alpha as f64, gamma as f64 / alpha as f64);
    assert!(
        (1.4..2.8).contains(&beta_ratio),
        "beta/alpha = {beta_ratio}"
    );
    assert!(
        (2.2..4.0).contains(&gamma_ratio),
        "gamma/alpha = {gamma_ratio}"
    );
}

fn flamegraph(addr: std::net::SocketAddr, selector: &str) -> Value {
    get_json(
        addr,
        &format!(
            "/api/v1/flamegraph?from=now-1h&until=now%2B1m&query={}",
            encode(selector)
        ),
    )
}

#[test]
fn pprof_ingest_flamegraph_top_and_labels() {
    let dir = TempDir::new("api");
    let server = InProcess::start(&dir.0, None, MIB16);
    let response = http(
        server.http,
        "POST",
        "/api/v1/profiles?service_name=burn&host_name=ci&from=now",
        &[("Content-Type", "application/octet-stream")],
        BURN3,
    );
    assert_eq!(response.status, 200, "{}", response.text());
    let summary = response.json();
    let ingested = summary["samples"].as_u64().expect("samples");
    assert!(ingested > 100, "{summary}");
    assert_eq!(summary["series"], 1, "one pid/tid/comm: {summary}");

    let graph = flamegraph(server.http, r#"{service_name="burn"}"#);
    assert_eq!(graph["total"].as_u64(), Some(ingested));
    assert_eq!(graph["unit"], "samples");
    assert_eq!(graph["period_ns"], 1_000_000_000 / 99);
    assert_eq!(graph["root"]["name"], "total");
    assert_one_two_three(burners(&graph));
    // Children are sorted by name and carry the kernel flag.
    let children = graph["root"]["children"].as_array().expect("children");
    let names: Vec<&str> = children.iter().filter_map(|c| c["name"].as_str()).collect();
    let mut sorted = names.clone();
    sorted.sort_unstable();
    assert_eq!(names, sorted);
    assert!(children.iter().all(|c| c["kernel"].is_boolean()));
    // Another service selects nothing.
    assert_eq!(
        flamegraph(server.http, r#"{service_name="other"}"#)["total"],
        0
    );

    let top = get_json(
        server.http,
        "/api/v1/top?from=now-1h&until=now%2B1m&limit=5",
    );
    let functions = top["functions"].as_array().expect("functions");
    assert!(functions.len() <= 5);
    let names: Vec<&str> = functions
        .iter()
        .filter_map(|f| f["name"].as_str())
        .collect();
    assert_eq!(
        &names[..3],
        ["burn_gamma", "burn_beta", "burn_alpha"],
        "{top}"
    );
    assert!(functions
        .windows(2)
        .all(|w| w[0]["self"].as_u64() >= w[1]["self"].as_u64()));

    let services = get_json(server.http, "/api/v1/services?until=now%2B1m");
    assert_eq!(services["services"][0]["name"], "burn");
    assert_eq!(
        services["services"][0]["profile_samples"].as_u64(),
        Some(ingested)
    );
    let labels = get_json(server.http, "/api/v1/labels?until=now%2B1m");
    for name in ["comm", "host_name", "pid", "service_name", "tid"] {
        assert!(
            labels["labels"]
                .as_array()
                .expect("labels")
                .contains(&name.into()),
            "{labels}"
        );
    }
    let values = get_json(server.http, "/api/v1/labels/comm/values?until=now%2B1m");
    assert_eq!(values["values"], serde_json::json!(["burn3"]));

    // Diff against the hour before (empty).
    let diff = get_json(server.http, "/api/v1/diff?from=now-1h&until=now%2B1m");
    assert_eq!(diff["total"].as_u64(), Some(ingested));
    assert_eq!(diff["base_total"], 0);
    assert_eq!(diff["root"]["children"][0]["base_value"], 0);
    let diff = get_json(
        server.http,
        "/api/v1/diff?from=now-1h&until=now%2B1m&base_from=now-1h&base_until=now%2B1m",
    );
    assert_eq!(diff["base_total"].as_u64(), Some(ingested));

    // max_nodes folds small nodes into their parents.
    let small = get_json(server.http, "/api/v1/flamegraph?until=now%2B1m&max_nodes=2");
    assert_eq!(small["total"].as_u64(), Some(ingested));
}

#[test]
fn pyroscope_ingest_raw_and_multipart() {
    let dir = TempDir::new("pyroscope");
    let server = InProcess::start(&dir.0, None, MIB16);
    let from = common::unix_now();
    let path = format!(
        "/ingest?name={}&from={from}&until={}&format=pprof&sampleRate=99&spyName=ebpfspy",
        encode("burnpyro.cpu{env=test}"),
        from + 10
    );
    let raw = http(server.http, "POST", &path, &[], BURN3);
    assert_eq!(raw.status, 200, "{}", raw.text());
    assert_eq!(raw.json(), serde_json::json!({}));

    let boundary = "------------------------7a9c3e1f";
    let mut body = Vec::new();
    body.extend_from_slice(format!("--{boundary}\r\nContent-Disposition: form-data; name=\"profile\"; filename=\"profile.pprof\"\r\nContent-Type: application/octet-stream\r\n\r\n").as_bytes());
    body.extend_from_slice(BURN3);
    body.extend_from_slice(format!("\r\n--{boundary}\r\nContent-Disposition: form-data; name=\"sample_type_config\"\r\n\r\n{{}}\r\n--{boundary}--\r\n").as_bytes());
    let content_type = format!("multipart/form-data; boundary={boundary}");
    let multipart = http(
        server.http,
        "POST",
        &path,
        &[("Content-Type", &content_type)],
        &body,
    );
    assert_eq!(multipart.status, 200, "{}", multipart.text());

    let graph = flamegraph(server.http, r#"{service_name="burnpyro",env="test"}"#);
    assert_one_two_three(burners(&graph));
    let single = burners(&graph);
    // Both requests landed: every count is even, and the top lists the burners.
    assert!(single.iter().all(|v| v % 2 == 0), "{single:?}");
    let top = get_json(
        server.http,
        "/api/v1/top?until=now%2B1m&query=%7Benv%3D%22test%22%7D",
    );
    let names: Vec<&str> = top["functions"]
        .as_array()
        .expect("functions")
        .iter()
        .filter_map(|f| f["name"].as_str())
        .collect();
    assert!(
        names.starts_with(&["burn_gamma", "burn_beta", "burn_alpha"]),
        "{top}"
    );

    let other_format = http(server.http, "POST", "/ingest?name=x&format=jfr", &[], BURN3);
    assert_eq!(
        (other_format.status, other_format.error_code().as_str()),
        (400, "invalid_argument")
    );
    let no_name = http(server.http, "POST", "/ingest?format=pprof", &[], BURN3);
    assert_eq!(no_name.status, 400);
    let bad_multipart = http(
        server.http,
        "POST",
        &path,
        &[("Content-Type", &content_type)],
        b"--nope",
    );
    assert_eq!(bad_multipart.status, 400);
}

#[test]
fn malformed_input_is_400_and_stores_nothing() {
    let dir = TempDir::new("malformed");
    let server = InProcess::start(&dir.0, None, MIB16);
    let cases: [(&str, &[u8]); 4] = [
        ("garbage", b"this is not a pprof profile, just some text"),
        (
            "bad gzip",
            &[0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 3, 1, 2, 3, 4],
        ),
        ("truncated", &BURN3[..BURN3.len() - 40]),
        ("empty", b""),
    ];
    for (what, body) in cases {
        for path in ["/api/v1/profiles?service_name=bad", "/ingest?name=bad"] {
            let response = http(server.http, "POST", path, &[], body);
            assert_eq!(
                response.status,
                400,
                "{what} to {path}: {}",
                response.text()
            );
            assert_eq!(response.error_code(), "invalid_argument");
            assert!(!response.json()["error"]["message"]
                .as_str()
                .unwrap_or("")
                .is_empty());
        }
    }
    let missing_service = http(server.http, "POST", "/api/v1/profiles", &[], BURN3);
    assert_eq!(missing_service.status, 400);
    let bad_label = http(
        server.http,
        "POST",
        "/api/v1/profiles?service_name=a&bad%20name=1",
        &[],
        BURN3,
    );
    assert_eq!(bad_label.status, 400);
    // Content-Encoding: gzip around a plain pprof is fine, around garbage it is not.
    let wrapped = http(
        server.http,
        "POST",
        "/api/v1/profiles?service_name=bad",
        &[("Content-Encoding", "gzip")],
        b"not gzip",
    );
    assert_eq!(wrapped.status, 400);

    let services = get_json(server.http, "/api/v1/services?from=0&until=now%2B1d");
    assert_eq!(
        services["services"],
        serde_json::json!([]),
        "nothing stored"
    );
    assert_eq!(
        get_json(server.http, "/api/v1/flamegraph?from=0")["total"],
        0
    );

    // Query parameters are checked too.
    for path in [
        "/api/v1/flamegraph?from=yesterday",
        "/api/v1/flamegraph?query=%7Bservice_name%3D",
        "/api/v1/flamegraph?max_nodes=0",
        "/api/v1/flamegraph?from=now&until=now-1h",
        "/api/v1/traces?status=maybe",
        "/api/v1/traces/not-hex",
        "/api/v1/spans/xyz/flamegraph",
        "/api/v1/red?step=0",
    ] {
        let response = get(server.http, path);
        assert_eq!(response.status, 400, "{path}: {}", response.text());
        assert_eq!(response.error_code(), "invalid_argument", "{path}");
    }
    let unknown = get(server.http, &format!("/api/v1/traces/{}", "ab".repeat(16)));
    assert_eq!(
        (unknown.status, unknown.error_code().as_str()),
        (404, "not_found")
    );
    let no_route = get(server.http, "/api/v1/nothing");
    assert_eq!(
        (no_route.status, no_route.error_code().as_str()),
        (404, "not_found")
    );
    assert_eq!(get(server.http, "/no/such/file.js").status, 404);
}

#[test]
fn oversized_bodies_are_413() {
    let dir = TempDir::new("limit");
    let server = InProcess::start(&dir.0, None, 1024);
    let big = vec![0u8; 4096];
    for path in ["/api/v1/profiles?service_name=big", "/ingest?name=big"] {
        let response = http(server.http, "POST", path, &[], &big);
        assert_eq!(response.status, 413, "{path}: {}", response.text());
        assert_eq!(response.error_code(), "payload_too_large");
    }
    // A body declared small but sent chunked is cut at the limit too.
    let mut chunked = format!("{:x}\r\n", big.len()).into_bytes();
    chunked.extend_from_slice(&big);
    chunked.extend_from_slice(b"\r\n0\r\n\r\n");
    let response = http(
        server.http,
        "POST",
        "/api/v1/profiles?service_name=big",
        &[("Transfer-Encoding", "chunked")],
        &chunked,
    );
    assert_eq!(response.status, 413, "{}", response.text());
    // A fitting body is decoded (and rejected for what it is, not for its size).
    let response = http(
        server.http,
        "POST",
        "/api/v1/profiles?service_name=big",
        &[],
        &big[..100],
    );
    assert_eq!(response.status, 400);
}

#[test]
fn bearer_token_guards_api_and_ingest() {
    let dir = TempDir::new("auth");
    let server = InProcess::start(&dir.0, Some("s3cret"), MIB16);
    let no_token = get(server.http, "/api/v1/services");
    assert_eq!(
        (no_token.status, no_token.error_code().as_str()),
        (401, "unauthenticated")
    );
    let wrong = http(
        server.http,
        "GET",
        "/api/v1/services",
        &[("Authorization", "Bearer nope")],
        b"",
    );
    assert_eq!(wrong.status, 401);
    let ingest = http(
        server.http,
        "POST",
        "/api/v1/profiles?service_name=a",
        &[],
        BURN3,
    );
    assert_eq!(ingest.status, 401);
    let pyroscope = http(server.http, "POST", "/ingest?name=a", &[], BURN3);
    assert_eq!(pyroscope.status, 401);

    let auth = [("Authorization", "Bearer s3cret")];
    let ok = http(server.http, "GET", "/api/v1/services", &auth, b"");
    assert_eq!(ok.status, 200, "{}", ok.text());
    assert_eq!(ok.json()["services"], serde_json::json!([]));
    let ingest = http(
        server.http,
        "POST",
        "/api/v1/profiles?service_name=a",
        &auth,
        BURN3,
    );
    assert_eq!(ingest.status, 200, "{}", ingest.text());
    // Health checks and the UI's files need no token.
    assert_eq!(get(server.http, "/healthz").text(), "ok");
    assert_eq!(get(server.http, "/readyz").status, 200);
    let index = get(server.http, "/");
    assert_eq!(index.status, 200);
    assert!(index.text().contains("<html") || index.text().contains("<!doctype"));
}

#[test]
fn otlp_requires_the_token_and_rejects_malformed_spans() {
    use opentelemetry_proto::tonic::collector::trace::v1::trace_service_client::TraceServiceClient;
    use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
    use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};

    let dir = TempDir::new("otlp-auth");
    let server = InProcess::start(&dir.0, Some("s3cret"), 4096);
    let request = |trace_id: Vec<u8>, name: &str| {
        let mut request = tonic::Request::new(ExportTraceServiceRequest {
            resource_spans: vec![ResourceSpans {
                scope_spans: vec![ScopeSpans {
                    spans: vec![Span {
                        trace_id,
                        span_id: vec![2; 8],
                        name: name.to_owned(),
                        start_time_unix_nano: 1,
                        end_time_unix_nano: 2,
                        ..Default::default()
                    }],
                    ..Default::default()
                }],
                ..Default::default()
            }],
        });
        request
            .metadata_mut()
            .insert("authorization", "Bearer s3cret".parse().expect("ascii"));
        request
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        let mut client = TraceServiceClient::connect(format!("http://{}", server.otlp))
            .await
            .expect("connect");
        let denied = client
            .export(ExportTraceServiceRequest::default())
            .await
            .expect_err("no token");
        assert_eq!(denied.code(), tonic::Code::Unauthenticated);
        client
            .export(request(vec![1; 16], "ok"))
            .await
            .expect("with the token");
        let bad = client
            .export(request(vec![1; 15], "bad"))
            .await
            .expect_err("15-byte trace id");
        assert_eq!(bad.code(), tonic::Code::InvalidArgument, "{bad}");
        let big = client
            .export(request(vec![1; 16], &"x".repeat(8192)))
            .await
            .expect_err("over --max-body-bytes");
        assert_eq!(big.code(), tonic::Code::OutOfRange, "{big}");
    });
    let auth = [("Authorization", "Bearer s3cret")];
    let traces = http(server.http, "GET", "/api/v1/traces?from=0", &auth, b"").json();
    assert_eq!(
        traces["traces"].as_array().map(Vec::len),
        Some(1),
        "only the valid export: {traces}"
    );
}
