//! End-to-end tests of the HTTP capture: real servers (nginx, Python's `http.server`, Node's
//! `http`) and clients (h2load, curl) run under `profiler-agent record --spans`, and the tests
//! compare the spans it wrote with what the load generator and the clients saw.
//!
//! Root only (they skip with `skipping: <reason>` otherwise, and fail under `CI`); the servers
//! and clients must be installed (`cargo xtask test` installs them).

use std::{
    collections::HashMap,
    fs,
    io::{Read, Write},
    net::{Ipv4Addr, Shutdown, SocketAddr, TcpStream},
    path::Path,
    process::{Child, Command, Output},
    sync::{Mutex, MutexGuard, PoisonError},
    time::{Duration, Instant},
};

use serde_json::Value;
use tests::{
    agent_binary, attr, cpu_of_span, duration_ms, eventually, expect_success, free_port, http_get,
    http_summary, read_spans, require_sampler, require_tool, spawn_captured, start_recording,
    wait_with_timeout, TempDir, AGENT_TIMEOUT,
};

/// One capture at a time: the tests share 2 cores, and the CPU-time test needs them.
static CAPTURE: Mutex<()> = Mutex::new(());

fn one_at_a_time() -> MutexGuard<'static, ()> {
    CAPTURE.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Waits until something accepts connections on `port`.
fn wait_for_port(port: u16, agent: &mut Child) {
    let started = Instant::now();
    let address = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    while TcpStream::connect_timeout(&address, Duration::from_millis(200)).is_err() {
        if let Ok(Some(status)) = agent.try_wait() {
            panic!("the agent exited ({status}) before port {port} opened");
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "nothing listens on port {port} after 60 s"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Stops a recording with Ctrl-C (the agent then stops the command) and returns its output.
fn interrupt(agent: Child) -> Output {
    let status = Command::new("kill")
        .args(["-INT", &agent.id().to_string()])
        .status()
        .unwrap_or_else(|error| panic!("cannot run kill: {error}"));
    assert!(status.success(), "kill -INT {} failed", agent.id());
    wait_with_timeout(agent, AGENT_TIMEOUT, "profiler-agent record")
}

fn status_of(span: &Value) -> i64 {
    attr(span, "http.response.status_code")
        .as_i64()
        .unwrap_or_else(|| panic!("span without a status code: {span}"))
}

/// Spans per (kind, service, name, status).
type Tally = HashMap<(String, String, String, i64), u64>;

fn tally(spans: &[Value]) -> Tally {
    let mut counts = HashMap::new();
    for span in spans {
        let key = (
            span["kind"].as_str().unwrap_or_default().to_string(),
            span["service"].as_str().unwrap_or_default().to_string(),
            span["name"].as_str().unwrap_or_default().to_string(),
            status_of(span),
        );
        *counts.entry(key).or_default() += 1;
    }
    counts
}

/// Spans of that kind, name and status from services whose name starts with `service` (the
/// Python interpreter is `python3` or `python3.11` depending on how it was started).
fn count(counts: &Tally, kind: &str, service: &str, name: &str, status: i64) -> u64 {
    counts
        .iter()
        .filter(|((k, s, n, code), _)| {
            k == kind && s.starts_with(service) && n == name && *code == status
        })
        .map(|(_, n)| n)
        .sum()
}

/// The counts h2load reports: (2xx, 4xx) of `status codes: A 2xx, B 3xx, C 4xx, D 5xx`.
fn h2load(args: &[&str]) -> (u64, u64) {
    let output = Command::new("h2load")
        .args(args)
        .output()
        .unwrap_or_else(|error| panic!("cannot run h2load: {error}"));
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "h2load {args:?} failed:\n{stdout}");
    let line = stdout
        .lines()
        .find(|line| line.starts_with("status codes:"))
        .unwrap_or_else(|| panic!("no status line in h2load's output:\n{stdout}"));
    let numbers: Vec<u64> = line
        .split(|c: char| !c.is_ascii_digit())
        .filter_map(|n| n.parse().ok())
        .collect();
    // "status codes: 600 2xx, 0 3xx, 0 4xx, 0 5xx" → [600, 2, 0, 3, 0, 4, 0, 5]
    assert_eq!(numbers.len(), 8, "unexpected h2load line {line:?}");
    (numbers[0], numbers[4])
}

/// Sends raw bytes on a new connection, reads whatever comes back for a moment, and closes.
fn send_raw(port: u16, bytes: &[u8]) {
    // A few tries: a server that just closed a flood of connections may refuse one briefly.
    let mut tries = 0;
    let mut stream = loop {
        match TcpStream::connect((Ipv4Addr::LOCALHOST, port)) {
            Ok(stream) => break stream,
            Err(error) if tries < 10 => {
                eprintln!("connecting to port {port} failed ({error}); retrying");
                tries += 1;
                std::thread::sleep(Duration::from_millis(200));
            }
            Err(error) => panic!("cannot connect to port {port}: {error}"),
        }
    };
    let _ = stream.write_all(bytes);
    let _ = stream.shutdown(Shutdown::Write);
    let _ = stream.set_read_timeout(Some(Duration::from_millis(500)));
    let mut reply = Vec::new();
    let _ = stream.read_to_end(&mut reply);
}

/// Garbage, TLS and truncated requests: none may become a span, nor stop the capture.
fn send_garbage(port: u16) {
    // A TLS 1.2 ClientHello start.
    send_raw(
        port,
        &[
            0x16, 0x03, 0x01, 0x00, 0xa5, 0x01, 0x00, 0x00, 0xa1, 0x03, 0x03,
        ],
    );
    // Binary noise.
    let noise: Vec<u8> = (0u32..512)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    send_raw(port, &noise);
    // A method followed by garbage: the kernel follows it, user space refuses it.
    send_raw(port, b"GET \x00\x01\x02\xff HTTP/1.1\r\n\r\n");
    // A request cut before its end, then the connection closed.
    send_raw(port, b"GET /cut HTTP/1.1\r\nHost: loc");
    send_raw(port, b"GET ");
}

const NGINX_CONF: &str = "worker_processes 1;
pid DIR/nginx.pid;
error_log DIR/error.log;
events { worker_connections 256; }
http {
  access_log off;
  server {
    listen 127.0.0.1:PORT;
    root DIR/html;
  }
}
";

#[test]
fn nginx_requests_are_captured_exactly_once() {
    const TEST: &str = "nginx_requests_are_captured_exactly_once";
    if !require_sampler(TEST)
        || !require_tool(TEST, "nginx", &["-v"], "nginx-light")
        || !require_tool(TEST, "h2load", &["--version"], "nghttp2-client")
    {
        return;
    }
    let _one = one_at_a_time();
    let dir = TempDir::new("nginx");
    let port = free_port();
    fs::create_dir_all(dir.path().join("html")).expect("html dir");
    fs::write(dir.path().join("html/index.html"), "hello\n").expect("index.html");
    let conf = NGINX_CONF
        .replace("DIR", &dir.path().display().to_string())
        .replace("PORT", &port.to_string());
    let conf_path = dir.path().join("nginx.conf");
    fs::write(&conf_path, conf).expect("nginx.conf");
    let conf_arg = conf_path.display().to_string();

    let mut agent = start_recording(
        dir.path(),
        19,
        &["nginx", "-c", &conf_arg, "-g", "daemon off;"],
    );
    wait_for_port(port, &mut agent);
    let base = format!("http://127.0.0.1:{port}");
    // Keep-alive connections, then pipelining (8 requests in flight per connection).
    let (ok, _) = h2load(&[
        "--h1",
        "-n",
        "600",
        "-c",
        "3",
        &format!("{base}/index.html"),
    ]);
    let (_, missing) = h2load(&["--h1", "-n", "150", "-c", "2", &format!("{base}/missing")]);
    let (pipelined, _) = h2load(&[
        "--h1",
        "-n",
        "200",
        "-c",
        "1",
        "-m",
        "8",
        &format!("{base}/index.html?pipelined=1"),
    ]);
    send_garbage(port);
    let output = interrupt(agent);
    let stderr = expect_success(TEST, &output);

    let spans = read_spans(dir.path());
    let counts = tally(&spans);
    let summary = http_summary(&stderr);
    let report = format!("{summary}\ncounts: {counts:?}");
    assert_eq!(
        (ok, missing, pipelined),
        (600, 150, 200),
        "h2load itself failed"
    );
    // The readiness probes of wait_for_port send no request: they produce no span.
    assert_eq!(
        count(&counts, "server", "nginx", "GET /index.html", 200),
        ok + pipelined,
        "{report}"
    );
    assert_eq!(
        count(&counts, "server", "nginx", "GET /missing", 404),
        missing,
        "{report}"
    );
    assert_eq!(spans.len() as u64, ok + missing + pipelined, "{report}");
    for span in &spans {
        let ms = duration_ms(span);
        assert!((0.0..1000.0).contains(&ms), "implausible duration: {span}");
        assert_eq!(attr(span, "server.port"), port, "{span}");
        assert_eq!(span["parent_span_id"], Value::Null, "{span}");
    }
    // The garbage shows up in the counters, not as spans.
    assert!(summary.contains("request_malformed 1"), "{report}");
    assert!(summary.contains("no_response"), "{report}");
}

/// A Python server: /sleep?ms=N sleeps, /burn?ms=N burns N ms of its thread's CPU time,
/// /missing is a 404; HTTP/1.1 keep-alive; headers and body in two writes.
const PYTHON_SERVER: &str = r#"
import sys, time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def do_GET(self):
        path, _, query = self.path.partition("?")
        params = dict(p.split("=", 1) for p in query.split("&") if "=" in p)
        ms = int(params.get("ms", "0"))
        if path == "/sleep":
            time.sleep(ms / 1000)
        elif path == "/burn":
            end = time.thread_time() + ms / 1000
            n = 0
            while time.thread_time() < end:
                n += 1
        body = b'{"ok": true}\n'
        self.send_response(404 if path == "/missing" else 200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), Handler).serve_forever()
"#;

const TRACE_ID: &str = "0af7651916cd43dd8448eb211c80319c";
const PARENT_ID: &str = "b7ad6b7169203331";

/// The client side of the Python test, run by `sh` under the agent: curl requests whose status
/// and time it writes to `client.txt` (`<label> <status> <seconds>` per line).
const PYTHON_CLIENT: &str = r#"
set -e
python3 "$DIR/server.py" "$PORT" &
server=$!
for i in $(seq 200); do
    if curl -s -o /dev/null "http://127.0.0.1:$PORT/ready"; then break; fi
    sleep 0.05
done
get() {
    label=$1; shift
    curl -s -o /dev/null -w "$label %{http_code} %{time_total}\n" "$@" >> "$DIR/client.txt"
}
get sleep "http://127.0.0.1:$PORT/sleep?ms=300"
get traced -H "traceparent: 00-TRACE-PARENT-01" "http://127.0.0.1:$PORT/sleep?ms=20"
get missing "http://127.0.0.1:$PORT/missing"
get burn "http://127.0.0.1:$PORT/burn?ms=400"
# One connection, three requests (curl reuses it).
curl -s -o /dev/null -o /dev/null -o /dev/null "http://127.0.0.1:$PORT/a/1" "http://127.0.0.1:$PORT/a/2" "http://127.0.0.1:$PORT/a/3"
kill $server
"#;

#[test]
fn python_server_and_curl_client_spans_agree_with_the_client() {
    const TEST: &str = "python_server_and_curl_client_spans_agree_with_the_client";
    if !require_sampler(TEST)
        || !require_tool(TEST, "python3", &["--version"], "python3")
        || !require_tool(TEST, "curl", &["--version"], "curl")
    {
        return;
    }
    let _one = one_at_a_time();
    let dir = TempDir::new("python");
    let port = free_port();
    fs::write(dir.path().join("server.py"), PYTHON_SERVER).expect("server.py");
    let script = PYTHON_CLIENT
        .replace("TRACE", TRACE_ID)
        .replace("PARENT", PARENT_ID);
    fs::write(dir.path().join("client.sh"), script).expect("client.sh");
    let dir_arg = dir.path().display().to_string();
    let port_arg = port.to_string();
    let agent = start_recording(
        dir.path(),
        199,
        &[
            "env",
            &format!("DIR={dir_arg}"),
            &format!("PORT={port_arg}"),
            "sh",
            &format!("{dir_arg}/client.sh"),
        ],
    );
    let output = wait_with_timeout(agent, AGENT_TIMEOUT, "profiler-agent record");
    // The script ends by killing the server: sh exits 0, the agent with it.
    let stderr = expect_success(TEST, &output);
    let spans = read_spans(dir.path());
    let counts = tally(&spans);
    let report = format!("{}\ncounts: {counts:?}", http_summary(&stderr));

    let client: HashMap<String, (i64, f64)> = fs::read_to_string(dir.path().join("client.txt"))
        .expect("client.txt")
        .lines()
        .filter_map(|line| {
            let mut fields = line.split_whitespace();
            let label = fields.next()?.to_string();
            let status = fields.next()?.parse().ok()?;
            let seconds = fields.next()?.parse().ok()?;
            Some((label, (status, seconds)))
        })
        .collect();
    assert_eq!(client.len(), 4, "client.txt: {client:?}");

    // Every request once on each side: 1 readiness probe + 4 + 3 keep-alive.
    for (name, status) in [
        ("GET /ready", 200),
        ("GET /sleep", 200),
        ("GET /missing", 404),
        ("GET /burn", 200),
    ] {
        let server = count(&counts, "server", "python3", name, status);
        let curl = count(&counts, "client", "curl", name, status);
        let expected = if name == "GET /sleep" { 2 } else { 1 };
        assert_eq!((server, curl), (expected, expected), "{name}: {report}");
    }
    assert_eq!(
        count(&counts, "server", "python3", "GET /a/{id}", 200),
        3,
        "{report}"
    );
    assert_eq!(
        count(&counts, "client", "curl", "GET /a/{id}", 200),
        3,
        "{report}"
    );

    // The longest span of that kind for that path (two /sleep requests were made).
    let find = |kind: &str, path: &str| -> &Value {
        spans
            .iter()
            .filter(|s| s["kind"] == kind && attr(s, "url.path") == path)
            .max_by(|a, b| duration_ms(a).total_cmp(&duration_ms(b)))
            .unwrap_or_else(|| panic!("no {kind} span for {path}: {report}"))
    };
    // Durations: the server's span sits inside the client's measurement, and covers the sleep.
    let (status, curl_seconds) = client["sleep"];
    assert_eq!(status, 200);
    let server_ms = duration_ms(find("server", "/sleep"));
    let client_ms = duration_ms(find("client", "/sleep"));
    assert!(
        (300.0..=curl_seconds * 1000.0 + 1.0).contains(&server_ms),
        "server span {server_ms} ms vs 300 ms of sleep and curl's {} ms",
        curl_seconds * 1000.0
    );
    assert!(
        server_ms <= client_ms && client_ms <= curl_seconds * 1000.0 + 1.0,
        "client span {client_ms} ms should cover the server's {server_ms} ms and fit in curl's \
         {} ms",
        curl_seconds * 1000.0
    );
    // The incoming traceparent is honoured.
    let traced = spans
        .iter()
        .find(|s| s["kind"] == "server" && s["trace_id"] == TRACE_ID)
        .unwrap_or_else(|| panic!("no server span kept trace id {TRACE_ID}: {report}"));
    assert_eq!(traced["parent_span_id"], PARENT_ID, "{traced}");
    assert_eq!(attr(traced, "url.path"), "/sleep", "{traced}");
    // Status codes and errors.
    let missing = find("server", "/missing");
    assert_eq!(
        missing["status"], "ok",
        "a 404 is not a server error: {missing}"
    );
    let missing_client = find("client", "/missing");
    assert_eq!(missing_client["status"], "error", "{missing_client}");
    assert_eq!(
        attr(missing_client, "error.type"),
        "404",
        "{missing_client}"
    );

    // The CPU burnt while serving /burn is labelled with that span: 400 ms of thread CPU time.
    let burn = find("server", "/burn");
    let span_id = burn["span_id"].as_str().expect("span id");
    let trace_id = burn["trace_id"].as_str().expect("trace id");
    let (labelled_ns, labelled_samples) =
        cpu_of_span(&dir.path().join("profile.pb.gz"), span_id, trace_id);
    let labelled_ms = labelled_ns as f64 / 1e6;
    println!(
        "/burn: {labelled_samples} samples, {labelled_ms:.0} ms of CPU labelled with its span"
    );
    assert!(
        (320.0..=480.0).contains(&labelled_ms),
        "samples labelled with the /burn span add up to {labelled_ms:.0} ms \
         ({labelled_samples} samples), expected 400 ms +- 20 %"
    );
}

const NODE_SERVER: &str = r#"
const http = require("http");
http.createServer((req, res) => {
  const status = req.url.startsWith("/missing") ? 404 : 200;
  res.writeHead(status, { "Content-Type": "text/plain" });
  res.end("hello\n");
}).listen(Number(process.argv[2]), "127.0.0.1");
"#;

#[test]
fn node_server_requests_are_captured_exactly_once() {
    const TEST: &str = "node_server_requests_are_captured_exactly_once";
    if !require_sampler(TEST)
        || !require_tool(TEST, "node", &["--version"], "nodejs")
        || !require_tool(TEST, "h2load", &["--version"], "nghttp2-client")
    {
        return;
    }
    let _one = one_at_a_time();
    let dir = TempDir::new("node");
    let port = free_port();
    let script = dir.path().join("server.js");
    fs::write(&script, NODE_SERVER).expect("server.js");
    let script_arg = script.display().to_string();
    let mut agent = start_recording(dir.path(), 19, &["node", &script_arg, &port.to_string()]);
    wait_for_port(port, &mut agent);
    let base = format!("http://127.0.0.1:{port}");
    let (ok, _) = h2load(&["--h1", "-n", "400", "-c", "4", &format!("{base}/items/42")]);
    let (_, missing) = h2load(&["--h1", "-n", "50", "-c", "1", &format!("{base}/missing")]);
    send_garbage(port);
    let output = interrupt(agent);
    // Node dies of the SIGTERM the agent sends it on Ctrl-C: the agent exits with 128 + 15.
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    assert!(
        output.status.success() || output.status.code() == Some(143),
        "the agent failed with {}:\n{stderr}",
        output.status
    );
    let spans = read_spans(dir.path());
    let counts = tally(&spans);
    let report = format!("{}\ncounts: {counts:?}", http_summary(&stderr));
    assert_eq!((ok, missing), (400, 50), "h2load itself failed");
    let items = count(&counts, "server", "node", "GET /items/{id}", 200);
    assert_eq!(items, ok, "{report}");
    let missing_spans = count(&counts, "server", "node", "GET /missing", 404);
    assert_eq!(missing_spans, missing, "{report}");
    // Node answers the request cut before its end with a 400: a real exchange, so a span.
    let cut = count(&counts, "server", "node", "GET /cut", 400);
    assert!(cut <= 1, "{report}");
    assert_eq!(spans.len() as u64, ok + missing + cut, "{report}");
}

#[test]
fn run_sends_spans_red_metrics_and_linked_profiles_to_the_server() {
    const TEST: &str = "run_sends_spans_red_metrics_and_linked_profiles_to_the_server";
    if !require_sampler(TEST) || !require_tool(TEST, "python3", &["--version"], "python3") {
        return;
    }
    let _one = one_at_a_time();
    let dir = TempDir::new("run");
    let (app_port, telemetry_port) = (free_port(), free_port());
    let (server, api_port, otlp_port) = tests::start_server(dir.path());
    fs::write(dir.path().join("server.py"), PYTHON_SERVER).expect("server.py");
    let app = tests::Background::spawn(
        Path::new("python3"),
        &[
            dir.path().join("server.py").display().to_string(),
            app_port.to_string(),
        ],
    );
    eventually("the Python server", || {
        TcpStream::connect((Ipv4Addr::LOCALHOST, app_port)).ok()
    });
    let mut agent = Command::new(agent_binary());
    agent.args([
        "run",
        "--server",
        &format!("http://127.0.0.1:{api_port}"),
        "--otlp-endpoint",
        &format!("http://127.0.0.1:{otlp_port}"),
        "--pid",
        &app.pid().to_string(),
        "--service-name",
        "pyapp",
        "-F",
        "199",
        "--upload-interval",
        "2",
        "--metrics-interval",
        "2",
        "--telemetry-listen",
        &format!("127.0.0.1:{telemetry_port}"),
    ]);
    let agent = spawn_captured(&mut agent);
    eventually("the agent's readiness", || {
        (http_get(telemetry_port, "/readyz").0 == 200).then_some(())
    });
    // Warm up until the capture sees requests (the agent needs a moment to attach).
    eventually("a first span on the server", || {
        let _ = http_get(app_port, "/sleep?ms=1");
        let (_, body) = http_get(
            api_port,
            "/api/v1/traces?service=pyapp&from=now-5m&until=now",
        );
        body.contains("trace_id").then_some(())
    });
    const COUNTED: u64 = 30;
    for i in 0..COUNTED {
        let (status, _) = http_get(app_port, &format!("/counted/{i}"));
        assert_eq!(status, 200);
    }
    let (status, _) = http_get(app_port, "/burn?ms=300");
    assert_eq!(status, 200);

    // RED: the counted route's histograms add up to exactly the requests sent.
    let red_count = || {
        let (_, body) = http_get(
            api_port,
            "/api/v1/red?service=pyapp&route=/counted/{id}&from=now-10m&until=now%2B1m&step=10s",
        );
        let red: Value = serde_json::from_str(&body).ok()?;
        let step = red["step_seconds"].as_f64()?;
        let total: f64 = red["series"]
            .as_array()?
            .iter()
            .filter(|s| s["route"] == "/counted/{id}" && s["kind"] == "server")
            .flat_map(|s| s["points"].as_array().cloned().unwrap_or_default())
            .map(|p| p["rate"].as_f64().unwrap_or(0.0) * step)
            .sum();
        Some(total.round() as u64)
    };
    let counted = eventually("RED metrics of every counted request", || {
        red_count().filter(|&n| n >= COUNTED)
    });
    assert_eq!(
        counted, COUNTED,
        "RED counted {counted} requests, {COUNTED} were sent"
    );

    // The /burn span has profile samples: the server links the span to the CPU it burnt.
    let (trace_id, samples) =
        eventually("the /burn trace with >= 20 linked profile samples", || {
            let (_, body) = http_get(
                api_port,
                "/api/v1/traces?service=pyapp&route=/burn&from=now-10m&until=now%2B1m",
            );
            let traces: Value = serde_json::from_str(&body).ok()?;
            let trace_id = traces["traces"].get(0)?["trace_id"].as_str()?.to_string();
            let (_, body) = http_get(api_port, &format!("/api/v1/traces/{trace_id}"));
            let trace: Value = serde_json::from_str(&body).ok()?;
            let samples = trace["spans"].get(0)?["profile_samples"].as_u64()?;
            // The burn may straddle two uploads: wait for the later one too.
            (samples >= 20).then_some((trace_id, samples))
        });
    // 300 ms of CPU at 199 Hz is about 60 samples.
    println!("trace {trace_id}: {samples} samples linked to the /burn span");

    // The agent's own metrics count what it captured and sent.
    let metric = |page: &str, name: &str| -> f64 {
        page.lines()
            .filter(|line| line.starts_with(name))
            .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    };
    let page = eventually("the agent's metrics to count the spans sent", || {
        let (status, page) = http_get(telemetry_port, "/metrics");
        let sent = metric(&page, "profiler_agent_otlp_spans_sent_total");
        (status == 200 && sent >= (COUNTED + 1) as f64).then_some(page)
    });
    assert!(
        metric(&page, "profiler_agent_spans_total{kind=\"server\"}") >= (COUNTED + 1) as f64,
        "{page}"
    );
    assert!(
        metric(&page, "profiler_agent_samples_in_span_total") >= 20.0,
        "{page}"
    );
    assert_eq!(
        metric(&page, "profiler_agent_http_records_lost_total"),
        0.0,
        "{page}"
    );
    assert_eq!(http_get(telemetry_port, "/healthz").0, 200);

    drop(app);
    let output = interrupt(agent);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "the agent failed:\n{stderr}");
    assert!(stderr.contains("HTTP capture on"), "{stderr}");
    assert!(
        stderr.contains("sent over OTLP"),
        "the exporter was not flushed:\n{stderr}"
    );
    drop(server);
}

/// A Go net/http server: /burn spins for 200 ms of wall time, anything else says hi. Go's
/// server reads the next request's first byte on its own (a background 1-byte read), which the
/// capture must stitch back to the rest of the request.
const GO_SERVER: &str = r#"package main

import (
	"fmt"
	"net/http"
	"os"
	"time"
)

//go:noinline
func burn(d time.Duration) int {
	end := time.Now().Add(d)
	n := 0
	for time.Now().Before(end) {
		n++
	}
	return n
}

func main() {
	http.HandleFunc("/burn", func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "%d\n", burn(200*time.Millisecond))
	})
	http.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintln(w, "hi")
	})
	if err := http.ListenAndServe("127.0.0.1:"+os.Args[1], nil); err != nil {
		panic(err)
	}
}
"#;

#[test]
fn go_server_requests_and_their_cpu_are_captured() {
    const TEST: &str = "go_server_requests_and_their_cpu_are_captured";
    if !require_sampler(TEST)
        || !require_tool(TEST, "go", &["version"], "golang-go")
        || !require_tool(TEST, "h2load", &["--version"], "nghttp2-client")
    {
        return;
    }
    let _one = one_at_a_time();
    let dir = TempDir::new("go");
    let binary = tests::go_build(dir.path(), GO_SERVER, "gosrv");
    let port = free_port();
    let binary_arg = binary.display().to_string();
    let mut agent = start_recording(dir.path(), 199, &[&binary_arg, &port.to_string()]);
    wait_for_port(port, &mut agent);
    let (ok, _) = h2load(&[
        "--h1",
        "-n",
        "300",
        "-c",
        "3",
        &format!("http://127.0.0.1:{port}/x"),
    ]);
    for _ in 0..2 {
        assert_eq!(http_get(port, "/burn").0, 200);
    }
    let output = interrupt(agent);
    // Go exits on SIGTERM with status 2 (its default handler); the agent passes that on.
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    assert!(
        stderr.contains("wrote "),
        "the agent wrote nothing ({}):\n{stderr}",
        output.status
    );
    let spans = read_spans(dir.path());
    let counts = tally(&spans);
    let report = format!("{}\ncounts: {counts:?}", http_summary(&stderr));
    assert_eq!(ok, 300, "h2load itself failed");
    assert_eq!(
        count(&counts, "server", "gosrv", "GET /x", 200),
        ok,
        "{report}"
    );
    assert_eq!(
        count(&counts, "server", "gosrv", "GET /burn", 200),
        2,
        "{report}"
    );
    assert!(
        summary_has_no_losses(http_summary(&stderr)),
        "requests went unseen: {report}"
    );
    for burn in spans.iter().filter(|s| s["name"] == "GET /burn") {
        let (ns, samples) = cpu_of_span(
            &dir.path().join("profile.pb.gz"),
            burn["span_id"].as_str().expect("span id"),
            burn["trace_id"].as_str().expect("trace id"),
        );
        let labelled_ms = ns as f64 / 1e6;
        let span_ms = duration_ms(burn);
        println!("/burn: span {span_ms:.0} ms, {samples} samples = {labelled_ms:.0} ms of CPU");
        assert!(
            (0.8 * span_ms..=1.2 * span_ms).contains(&labelled_ms),
            "{labelled_ms:.0} ms of CPU labelled with a {span_ms:.0} ms /burn span ({samples} \
             samples)"
        );
    }
}

/// The summary says nothing went unparsed and no read/write went unrecognized.
fn summary_has_no_losses(summary: &str) -> bool {
    summary.contains("without span: none") && summary.contains(" 0 unrecognized")
}
