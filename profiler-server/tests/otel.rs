//! OTLP/gRPC ingest with the real OpenTelemetry Python SDK (`tests/otel/send.py`): a trace
//! with a server span and a child, and `http.server.request.duration` histograms, then the
//! trace search, the trace detail and the RED series find them with the right values.
//!
//! Needs `pip install opentelemetry-sdk opentelemetry-exporter-otlp-proto-grpc`; without the
//! modules the test prints `skipping: ...`, and fails under `CI`.

mod common;

use std::process::Command;

use common::{get, get_json, InProcess, TempDir};
use serde_json::Value;

fn python_sdk_missing() -> Option<String> {
    let check = Command::new("python3")
        .args([
            "-c",
            "import opentelemetry.sdk, opentelemetry.exporter.otlp.proto.grpc",
        ])
        .output();
    match check {
        Err(error) => Some(format!("cannot run python3: {error}")),
        Ok(output) if !output.status.success() => Some(format!(
            "python modules missing (pip install opentelemetry-sdk \
             opentelemetry-exporter-otlp-proto-grpc): {}",
            String::from_utf8_lossy(&output.stderr).trim()
        )),
        Ok(_) => None,
    }
}

#[test]
fn python_sdk_spans_and_histograms() {
    let test = "python_sdk_spans_and_histograms";
    if let Some(reason) = python_sdk_missing() {
        tests::skip(test, &reason);
        return;
    }
    let dir = TempDir::new("otel");
    let server = InProcess::start(&dir.0, None, 16 << 20);
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/otel/send.py");
    let output = Command::new("python3")
        .arg(script)
        .arg(format!("http://{}", server.otlp))
        .output()
        .expect("run send.py");
    assert!(
        output.status.success(),
        "send.py failed: {}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    let sent: Value = serde_json::from_slice(&output.stdout).expect("send.py prints JSON");
    let trace_id = sent["trace_id"].as_str().expect("trace_id");

    // Trace search.
    let traces = get_json(server.http, "/api/v1/traces?service=checkout&from=now-10m");
    let trace = traces["traces"]
        .as_array()
        .expect("traces")
        .iter()
        .find(|t| t["trace_id"] == trace_id)
        .unwrap_or_else(|| panic!("trace {trace_id} not listed: {traces}"))
        .clone();
    assert_eq!(trace["service"], "checkout");
    assert_eq!(trace["name"], "GET /users/{id}");
    assert_eq!(trace["span_count"], 2);
    assert_eq!(trace["status"], "error", "the child failed");
    assert_eq!(trace["has_profile"], false);
    let duration = trace["duration_ms"].as_f64().expect("duration");
    assert!((30.0..5_000.0).contains(&duration), "{duration} ms");
    assert!(trace["start_unix_nano"]
        .as_str()
        .is_some_and(|s| s.parse::<u64>().is_ok()));
    let filtered = |query: &str| {
        get_json(server.http, &format!("/api/v1/traces?from=now-10m&{query}"))["traces"]
            .as_array()
            .map_or(0, Vec::len)
    };
    assert_eq!(filtered("status=error&route=%2Fusers%2F%7Bid%7D"), 1);
    assert_eq!(filtered("status=ok"), 0);
    assert_eq!(filtered("min_duration_ms=20"), 1);
    assert_eq!(filtered("min_duration_ms=100000"), 0);
    assert_eq!(filtered("service=other"), 0);

    // Trace detail.
    let detail = get_json(server.http, &format!("/api/v1/traces/{trace_id}"));
    assert_eq!(detail["trace_id"], trace_id);
    let spans = detail["spans"].as_array().expect("spans");
    assert_eq!(spans.len(), 2);
    let (root, child) = (&spans[0], &spans[1]);
    assert_eq!(root["span_id"], sent["root_span_id"]);
    assert_eq!(root["parent_span_id"], Value::Null);
    assert_eq!(root["kind"], "server");
    assert_eq!(root["status"], "ok");
    assert_eq!(root["service"], "checkout");
    assert_eq!(root["attributes"]["http.route"], "/users/{id}");
    assert_eq!(root["attributes"]["http.response.status_code"], 200);
    assert_eq!(root["profile_samples"], 0);
    assert_eq!(child["span_id"], sent["child_span_id"]);
    assert_eq!(child["parent_span_id"], sent["root_span_id"]);
    assert_eq!(child["kind"], "client");
    assert_eq!(child["status"], "error");
    assert_eq!(child["name"], "SELECT users");
    let start = |s: &Value| {
        s["start_unix_nano"]
            .as_str()
            .and_then(|v| v.parse::<u64>().ok())
    };
    assert!(start(root) <= start(child));
    assert!(child["duration_ms"].as_f64().is_some_and(|d| d >= 10.0));

    // RED: 10 requests, 2 failed; 8 at 20 ms, 2 at 300 ms.
    let red = get_json(
        server.http,
        "/api/v1/red?service=checkout&from=now-10m&until=now%2B1m&step=60s",
    );
    assert_eq!(red["step_seconds"], 60);
    let series = red["series"].as_array().expect("series");
    assert_eq!(series.len(), 1, "{red}");
    let series = &series[0];
    assert_eq!(series["service"], "checkout");
    assert_eq!(series["route"], "/users/{id}");
    assert_eq!(series["kind"], "server");
    let points = series["points"].as_array().expect("points");
    let requests: f64 = points
        .iter()
        .map(|p| p["rate"].as_f64().unwrap_or(0.0) * 60.0)
        .sum();
    assert!((requests - 10.0).abs() < 1e-6, "{requests} requests: {red}");
    let busy: Vec<&Value> = points
        .iter()
        .filter(|p| p["rate"].as_f64() > Some(0.0))
        .collect();
    assert_eq!(busy.len(), 1, "one export, one step: {red}");
    let point = busy[0];
    assert!(
        (point["error_ratio"].as_f64().unwrap_or(-1.0) - 0.2).abs() < 1e-9,
        "{point}"
    );
    // p50: rank 5 of 8 in (0.01, 0.025] → 0.01 + 0.015 * 5/8.
    let p50 = point["p50"].as_f64().expect("p50");
    assert!((p50 - 0.019_375).abs() < 1e-9, "p50 {p50}");
    // p95: rank 9.5, 1.5 of 2 into (0.25, 0.5].
    let p95 = point["p95"].as_f64().expect("p95");
    assert!((p95 - 0.4375).abs() < 1e-9, "p95 {p95}");
    let p99 = point["p99"].as_f64().expect("p99");
    assert!(p99 > p95 && p99 <= 0.5, "p99 {p99}");
    let idle = points
        .iter()
        .find(|p| p["rate"] == 0.0)
        .expect("an idle step");
    assert_eq!(idle["p50"], Value::Null);
    // The route filter and the services list see the same data.
    let none = get_json(
        server.http,
        "/api/v1/red?service=checkout&route=%2Fother&from=now-10m",
    );
    assert_eq!(none["series"], serde_json::json!([]));
    let services = get_json(server.http, "/api/v1/services?from=now-10m");
    assert_eq!(services["services"][0]["name"], "checkout");
    assert_eq!(services["services"][0]["spans"], 2);
    assert_eq!(
        get(
            server.http,
            "/api/v1/traces/00000000000000000000000000000001"
        )
        .status,
        404
    );
}
