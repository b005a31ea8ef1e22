//! End-to-end tests of the HTTP/2 and gRPC capture: a Python grpcio server and client
//! (`fixtures/grpc/`), and nginx serving cleartext HTTP/2 to h2load. Each server and its client
//! run together under one `profiler-agent record --spans` (a `sh` script starts both), and the
//! tests compare the spans of both sides with what the client saw.
//!
//! Root only (they skip with `skipping: <reason>` otherwise, and fail under `CI`); python3 with
//! grpcio, nginx and h2load must be installed.

use std::{
    collections::BTreeMap,
    fs,
    path::{Path, PathBuf},
    process::Command,
    sync::{Mutex, MutexGuard, PoisonError},
};

use serde_json::Value;
use tests::{
    attr, cpu_of_span, duration_ms, expect_success, free_port, http_summary, read_spans,
    require_sampler, require_tool, skip, start_recording, wait_with_timeout, TempDir,
    AGENT_TIMEOUT,
};

/// One capture at a time: the tests share 2 cores.
static CAPTURE: Mutex<()> = Mutex::new(());

fn one_at_a_time() -> MutexGuard<'static, ()> {
    CAPTURE.lock().unwrap_or_else(PoisonError::into_inner)
}

/// `true` when python3 can import grpc; else skips (fails under CI).
fn require_grpcio(test: &str) -> bool {
    let imports = Command::new("python3")
        .args(["-c", "import grpc"])
        .output()
        .is_ok_and(|output| output.status.success());
    imports
        || skip(
            test,
            "python3 cannot import grpc (pip install grpcio, or apt-get install python3-grpcio)",
        )
}

/// `fixtures/grpc`, where the Python server and client live.
fn grpc_fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/grpc")
}

/// The trimmed contents of `name` in `dir` ("" when it does not exist).
fn read_text(dir: &Path, name: &str) -> String {
    fs::read_to_string(dir.join(name))
        .map(|text| text.trim().to_string())
        .unwrap_or_default()
}

/// The number just before `label` in the agent's `http:` summary (`..., 0 records lost, ...`).
fn number_before(summary: &str, label: &str) -> u64 {
    summary
        .split_once(label)
        .and_then(|(before, _)| before.split_whitespace().next_back())
        .and_then(|number| number.parse().ok())
        .unwrap_or_else(|| panic!("no number before {label:?} in the summary: {summary}"))
}

/// The number just after `label` in the agent's `http:` summary (`orphan records 0, ...`).
fn number_after(summary: &str, label: &str) -> Option<u64> {
    let (_, after) = summary.split_once(label)?;
    let digits: String = after
        .trim_start()
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    digits.parse().ok()
}

/// The summary says the kernel lost no record and followed every connection, and every span
/// reached the file (HTTP/2 connections user space gave up on are checked by the caller).
fn assert_no_losses(summary: &str) {
    assert_eq!(number_before(summary, " records lost"), 0, "{summary}");
    assert_eq!(
        number_before(summary, " connections not followed"),
        0,
        "{summary}"
    );
    assert!(
        number_after(summary, "HTTP/2 connections lost").is_some(),
        "{summary}"
    );
    assert!(!summary.contains("not written"), "{summary}");
}

/// gRPC status codes by the names grpcio gives them (`grpc.StatusCode.X.name`).
const GRPC_CODES: [(&str, i64); 17] = [
    ("OK", 0),
    ("CANCELLED", 1),
    ("UNKNOWN", 2),
    ("INVALID_ARGUMENT", 3),
    ("DEADLINE_EXCEEDED", 4),
    ("NOT_FOUND", 5),
    ("ALREADY_EXISTS", 6),
    ("PERMISSION_DENIED", 7),
    ("RESOURCE_EXHAUSTED", 8),
    ("FAILED_PRECONDITION", 9),
    ("ABORTED", 10),
    ("OUT_OF_RANGE", 11),
    ("UNIMPLEMENTED", 12),
    ("INTERNAL", 13),
    ("UNAVAILABLE", 14),
    ("DATA_LOSS", 15),
    ("UNAUTHENTICATED", 16),
];

/// The codes that make a server span an error (OTel's gRPC conventions: UNKNOWN,
/// DEADLINE_EXCEEDED, UNIMPLEMENTED, INTERNAL, UNAVAILABLE, DATA_LOSS); any code but OK makes a
/// client span one. So Fail's NOT_FOUND is the client's error, not the server's.
const SERVER_ERROR_CODES: [i64; 6] = [2, 4, 12, 13, 14, 15];

fn grpc_code(name: &str) -> i64 {
    GRPC_CODES
        .iter()
        .find(|(known, _)| *known == name)
        .map(|(_, code)| *code)
        .unwrap_or_else(|| panic!("unknown gRPC status code name {name:?}"))
}

/// Calls per (method, status code).
type Calls = BTreeMap<(String, i64), u64>;

/// The calls of the client's report (`{"calls": {"SayHello": {"OK": 300}, ...}, ...}`).
fn reported_calls(report: &Value) -> Calls {
    let methods = report["calls"]
        .as_object()
        .unwrap_or_else(|| panic!("no calls in the client's report: {report}"));
    let mut calls = Calls::new();
    for (method, codes) in methods {
        let codes = codes
            .as_object()
            .unwrap_or_else(|| panic!("bad calls of {method} in the client's report: {report}"));
        for (name, n) in codes {
            let n = n
                .as_u64()
                .unwrap_or_else(|| panic!("bad count in the client's report: {report}"));
            calls.insert((method.clone(), grpc_code(name)), n);
        }
    }
    calls
}

/// The server and the client of the gRPC test, run by `sh` under the agent: the server in the
/// background until it says `ready`, the client, then SIGTERM to the server. Exit statuses go
/// to `client.status` and `server.status`, the client's report to `client.json`.
const GRPC_SCRIPT: &str = r#"
python3 "$FIXTURES/greeter_server.py" "$PORT" > "$DIR/server.out" 2> "$DIR/server.err" &
server=$!
tries=0
until grep -qx ready "$DIR/server.out"; do
    tries=$((tries + 1))
    if [ "$tries" -gt 600 ] || ! kill -0 "$server" 2> /dev/null; then
        echo "the gRPC server did not start" >&2
        kill "$server" 2> /dev/null
        exit 1
    fi
    sleep 0.05
done
python3 "$FIXTURES/greeter_client.py" "$PORT" $CALLS > "$DIR/client.json" 2> "$DIR/client.err"
echo $? > "$DIR/client.status"
kill -TERM "$server"
wait "$server"
echo $? > "$DIR/server.status"
"#;

/// What the gRPC client does: sequential SayHello calls, Fail calls, Count calls of
/// `STREAM_MESSAGES` messages each, concurrent SayHello calls, one Slow call, one Burn call
/// (400 ms of the handler thread's CPU, with a `traceparent`), then Big calls.
const UNARY: u64 = 200;
const FAILS: u64 = 20;
const STREAMS: u64 = 20;
const STREAM_MESSAGES: u64 = 5;
const CONCURRENT: u64 = 100;
/// Big calls: 100 kB requests, 300 kB responses (DATA frames of the maximum size, flow control,
/// reads and writes larger than one record of the kernel holds).
const BIG: u64 = 5;

#[test]
fn grpcio_calls_are_captured_once_with_method_and_status() {
    const TEST: &str = "grpcio_calls_are_captured_once_with_method_and_status";
    if !require_sampler(TEST) || !require_grpcio(TEST) {
        return;
    }
    let _one = one_at_a_time();
    let dir = TempDir::new("grpc");
    let port = free_port();
    fs::write(dir.path().join("run.sh"), GRPC_SCRIPT).expect("run.sh");
    let dir_arg = dir.path().display().to_string();
    let calls = [UNARY, FAILS, STREAMS, STREAM_MESSAGES, CONCURRENT, BIG].map(|n| n.to_string());
    let agent = start_recording(
        dir.path(),
        19,
        &[
            "env",
            &format!("DIR={dir_arg}"),
            &format!("FIXTURES={}", grpc_fixtures().display()),
            &format!("PORT={port}"),
            &format!("CALLS={}", calls.join(" ")),
            "sh",
            &format!("{dir_arg}/run.sh"),
        ],
    );
    let output = wait_with_timeout(agent, AGENT_TIMEOUT, "profiler-agent record");
    // The script ends by stopping the server: sh exits 0, the agent with it.
    let stderr = expect_success(TEST, &output);

    // The fixtures themselves worked.
    assert_eq!(
        read_text(dir.path(), "server.out"),
        "ready",
        "server stderr:\n{}",
        read_text(dir.path(), "server.err")
    );
    assert_eq!(
        read_text(dir.path(), "server.status"),
        "0",
        "the server did not stop cleanly; stderr:\n{}",
        read_text(dir.path(), "server.err")
    );
    let client_json = read_text(dir.path(), "client.json");
    assert_eq!(
        read_text(dir.path(), "client.status"),
        "0",
        "the client failed: {client_json}\n{}",
        read_text(dir.path(), "client.err")
    );
    let report: Value = serde_json::from_str(&client_json)
        .unwrap_or_else(|error| panic!("bad client report {client_json:?}: {error}"));
    let expected = reported_calls(&report);
    let designed = Calls::from([
        (("Count".to_string(), 0), STREAMS),
        (("Fail".to_string(), 5), FAILS),
        (("SayHello".to_string(), 0), UNARY + CONCURRENT),
        (("Slow".to_string(), 0), 1),
        (("Burn".to_string(), 0), 1),
        (("Big".to_string(), 0), BIG),
    ]);
    assert_eq!(expected, designed, "the client's report: {report}");
    assert_eq!(
        report["stream_messages"],
        STREAMS * STREAM_MESSAGES,
        "{report}"
    );

    let spans = read_spans(dir.path());
    let summary = http_summary(&stderr);
    let mut server_calls = Calls::new();
    let mut client_calls = Calls::new();
    for span in &spans {
        // Only gRPC runs in this recording: every span is a gRPC call.
        assert_eq!(attr(span, "rpc.system"), "grpc", "{span}");
        assert_eq!(attr(span, "rpc.service"), "demo.Greeter", "{span}");
        let method = attr(span, "rpc.method")
            .as_str()
            .unwrap_or_else(|| panic!("no rpc.method: {span}"));
        let code = attr(span, "rpc.grpc.status_code")
            .as_i64()
            .unwrap_or_else(|| panic!("no integer rpc.grpc.status_code: {span}"));
        assert_eq!(span["name"], format!("demo.Greeter/{method}"), "{span}");
        let ms = duration_ms(span);
        assert!(
            (0.0..10_000.0).contains(&ms),
            "implausible duration: {span}"
        );
        let (calls, service) = match span["kind"].as_str() {
            Some("server") => (&mut server_calls, "greeter_server"),
            Some("client") => (&mut client_calls, "greeter_client"),
            _ => panic!("span of unknown kind: {span}"),
        };
        assert_eq!(span["service"], service, "{span}");
        let error = if span["kind"] == "server" {
            SERVER_ERROR_CODES.contains(&code)
        } else {
            code != 0
        };
        assert_eq!(
            span["status"],
            if error { "error" } else { "ok" },
            "status {code}: {span}"
        );
        *calls.entry((method.to_string(), code)).or_default() += 1;
    }
    let tally = format!(
        "{summary}\nserver spans: {server_calls:?}\nclient spans: {client_calls:?}\n\
         the client made: {expected:?}"
    );
    // Every call exactly once, Big ones too: their 300 kB reads take several records per
    // syscall (the kernel's continuation program), so no frame header goes missing.
    assert_eq!(server_calls, expected, "server spans: {tally}");
    assert_eq!(client_calls, expected, "client spans: {tally}");
    assert_no_losses(summary);

    // Slow: the server's span covers the 0.3 s sleep, the client's covers the server's and fits
    // in what the client measured around the call.
    let slow = |kind: &str| -> f64 {
        let slow = spans
            .iter()
            .find(|s| s["kind"] == kind && attr(s, "rpc.method") == "Slow")
            .unwrap_or_else(|| panic!("no {kind} span of Slow: {tally}"));
        duration_ms(slow)
    };
    let (server_ms, client_ms) = (slow("server"), slow("client"));
    let measured_ms = report["slow_ms"]
        .as_f64()
        .unwrap_or_else(|| panic!("no slow_ms in the client's report: {report}"));
    assert!(
        (290.0..5_000.0).contains(&server_ms),
        "the server span of Slow lasts {server_ms} ms (it sleeps 300 ms)"
    );
    assert!(
        server_ms <= client_ms && client_ms <= measured_ms + 50.0,
        "the client span of Slow lasts {client_ms} ms: it should cover the server's \
         {server_ms} ms and fit in the {measured_ms} ms the client measured"
    );

    // Burn: the server span continues the trace of the client's `traceparent` metadata, and the
    // CPU its handler thread burnt is labelled with it, though that thread is not the one that
    // read the request (grpcio's pollers read; a pool thread runs the handler and answers).
    let burn = spans
        .iter()
        .find(|s| s["kind"] == "server" && attr(s, "rpc.method") == "Burn")
        .unwrap_or_else(|| panic!("no server span of Burn: {tally}"));
    assert_eq!(burn["trace_id"], BURN_TRACE_ID, "{burn}");
    assert_eq!(burn["parent_span_id"], BURN_PARENT_ID, "{burn}");
    let span_id = burn["span_id"].as_str().expect("span id");
    let (labelled_ns, labelled_samples) =
        cpu_of_span(&dir.path().join("profile.pb.gz"), span_id, BURN_TRACE_ID);
    let labelled_ms = labelled_ns as f64 / 1e6;
    let links = stderr
        .lines()
        .find(|line| line.starts_with("http/2 server samples:"))
        .unwrap_or_else(|| panic!("no http/2 server samples line:\n{stderr}"));
    println!("Burn: {labelled_samples} samples, {labelled_ms:.0} ms labelled; {links}");
    assert!(
        (320.0..=480.0).contains(&labelled_ms),
        "samples labelled with the Burn span add up to {labelled_ms:.0} ms \
         ({labelled_samples} samples), expected 400 ms +- 20 %; {links}"
    );
}

/// The trace context the client sends with its Burn call (`greeter_client.py`).
const BURN_TRACE_ID: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const BURN_PARENT_ID: &str = "00f067aa0ba902b7";

/// nginx with cleartext HTTP/2 only (prior knowledge, no upgrade): nginx 1.22's `listen ...
/// http2` (1.25 moved it to `http2 on;`).
const NGINX_H2C_CONF: &str = "worker_processes 1;
pid DIR/nginx.pid;
error_log DIR/error.log;
events { worker_connections 256; }
http {
  access_log off;
  server {
    listen 127.0.0.1:PORT http2;
    root DIR/html;
  }
}
";

/// nginx and h2load, run by `sh` under the agent: nginx in the background until it wrote its
/// pid file (it does once it listens), h2load, then SIGTERM to nginx. Exit statuses go to
/// `h2load.status` and `nginx.status`, h2load's output to `h2load.out`.
const H2LOAD_SCRIPT: &str = r#"
nginx -c "$DIR/nginx.conf" -g "daemon off;" &
nginx=$!
tries=0
until [ -s "$DIR/nginx.pid" ]; do
    tries=$((tries + 1))
    if [ "$tries" -gt 600 ] || ! kill -0 "$nginx" 2> /dev/null; then
        echo "nginx did not start" >&2
        kill "$nginx" 2> /dev/null
        exit 1
    fi
    sleep 0.05
done
h2load -n 2000 -c 4 -m 10 "http://127.0.0.1:$PORT/index.html" > "$DIR/h2load.out" 2>&1
echo $? > "$DIR/h2load.status"
kill -TERM "$nginx"
wait "$nginx"
echo $? > "$DIR/nginx.status"
"#;

/// The requests h2load reports as succeeded
/// (`requests: 2000 total, 2000 started, 2000 done, 2000 succeeded, 0 failed, ...`).
fn h2load_succeeded(output: &str) -> u64 {
    output
        .lines()
        .find_map(|line| line.strip_prefix("requests: "))
        .and_then(|line| line.split(", ").find_map(|n| n.strip_suffix(" succeeded")))
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no succeeded count in h2load's output:\n{output}"))
}

#[test]
fn h2load_against_nginx_h2c_counts_match() {
    const TEST: &str = "h2load_against_nginx_h2c_counts_match";
    if !require_sampler(TEST)
        || !require_tool(TEST, "nginx", &["-v"], "nginx-light")
        || !require_tool(TEST, "h2load", &["--version"], "nghttp2-client")
    {
        return;
    }
    let _one = one_at_a_time();
    let dir = TempDir::new("h2c");
    let port = free_port();
    fs::create_dir_all(dir.path().join("html")).expect("html dir");
    fs::write(dir.path().join("html/index.html"), "hello\n").expect("index.html");
    let dir_arg = dir.path().display().to_string();
    let conf = NGINX_H2C_CONF
        .replace("DIR", &dir_arg)
        .replace("PORT", &port.to_string());
    fs::write(dir.path().join("nginx.conf"), conf).expect("nginx.conf");
    fs::write(dir.path().join("run.sh"), H2LOAD_SCRIPT).expect("run.sh");
    let agent = start_recording(
        dir.path(),
        19,
        &[
            "env",
            &format!("DIR={dir_arg}"),
            &format!("PORT={port}"),
            "sh",
            &format!("{dir_arg}/run.sh"),
        ],
    );
    let output = wait_with_timeout(agent, AGENT_TIMEOUT, "profiler-agent record");
    let stderr = expect_success(TEST, &output);

    let h2load = read_text(dir.path(), "h2load.out");
    assert_eq!(read_text(dir.path(), "h2load.status"), "0", "{h2load}");
    assert!(h2load.contains("Application protocol: h2c"), "{h2load}");
    let succeeded = h2load_succeeded(&h2load);
    assert_eq!(succeeded, 2000, "h2load itself failed:\n{h2load}");
    assert_eq!(
        read_text(dir.path(), "nginx.status"),
        "0",
        "nginx did not stop cleanly:\n{}",
        read_text(dir.path(), "error.log")
    );

    let spans = read_spans(dir.path());
    let mut counts: BTreeMap<(String, String, String, i64), u64> = BTreeMap::new();
    for span in &spans {
        let key = (
            span["kind"].as_str().unwrap_or_default().to_string(),
            span["service"].as_str().unwrap_or_default().to_string(),
            attr(span, "network.protocol.version")
                .as_str()
                .unwrap_or_default()
                .to_string(),
            attr(span, "http.response.status_code")
                .as_i64()
                .unwrap_or_default(),
        );
        *counts.entry(key).or_default() += 1;
    }
    let report = format!("{}\ncounts: {counts:?}", http_summary(&stderr));
    let count = |kind: &str, service: &str| {
        counts
            .get(&(kind.to_string(), service.to_string(), "2".to_string(), 200))
            .copied()
            .unwrap_or(0)
    };
    assert_eq!(count("server", "nginx"), succeeded, "{report}");
    assert_eq!(count("client", "h2load"), succeeded, "{report}");
    // Nothing but h2load's requests ran: no other span, none twice.
    assert_eq!(spans.len() as u64, 2 * succeeded, "{report}");
    for span in &spans {
        assert_eq!(attr(span, "http.request.method"), "GET", "{span}");
        assert_eq!(attr(span, "url.path"), "/index.html", "{span}");
        assert_eq!(span["status"], "ok", "{span}");
    }
    let summary = http_summary(&stderr);
    assert_no_losses(summary);
    assert_eq!(
        number_after(summary, "HTTP/2 connections lost"),
        Some(0),
        "{summary}"
    );
}
