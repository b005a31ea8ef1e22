//! The agent's own health and metrics, for Kubernetes probes and Prometheus: a small HTTP
//! endpoint (`run --telemetry-listen`) serving `/metrics` (Prometheus text format 0.0.4),
//! `/healthz` (the main loop ran within the last 30 s) and `/readyz` (the sampler is attached and
//! has been drained once).
//!
//! The main loop gathers the metrics ([`agent_metrics`]) after every drain and hands their page
//! over with [`Telemetry::update`] (`run` also sends them over OTLP every metrics interval); the endpoint's thread only serves the last page, so a scrape never
//! touches the kernel maps.

use std::{
    fmt::Write as _,
    io::{Read, Write},
    net::{SocketAddr, TcpListener, TcpStream},
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        Arc, Mutex,
    },
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context, Result};
use profiler_common::Stat;

use crate::{
    capture::http1,
    collect::LinkCounts,
    ebpf::KernelStats,
    export::{http::UploadStats, otlp::OtlpStats},
    http_capture::CaptureCounters,
    metadata::kube_api::PodSourceStats,
};

/// `/healthz` fails when the main loop has not updated the page for this long.
const STALE_AFTER: Duration = Duration::from_secs(30);
/// A scrape's request head must arrive within this long and fit in this many bytes.
const READ_TIMEOUT: Duration = Duration::from_secs(2);
const MAX_REQUEST_BYTES: usize = 8192;

struct Shared {
    page: Mutex<String>,
    updated: Mutex<Instant>,
    ready: AtomicBool,
}

/// The running endpoint.
pub struct Telemetry {
    shared: Arc<Shared>,
    pub address: SocketAddr,
}

impl Telemetry {
    /// Binds `address` (failing at once when it is taken) and serves it from a thread.
    pub fn start(address: SocketAddr) -> Result<Telemetry> {
        let listener = TcpListener::bind(address)
            .with_context(|| format!("cannot listen on {address} for /metrics and health"))?;
        let address = listener.local_addr().context("reading the bound address")?;
        let shared = Arc::new(Shared {
            page: Mutex::new(String::new()),
            updated: Mutex::new(Instant::now()),
            ready: AtomicBool::new(false),
        });
        thread::Builder::new()
            .name("telemetry".to_string())
            .spawn({
                let shared = shared.clone();
                move || {
                    for stream in listener.incoming().flatten() {
                        // One scrape at a time: probes and scrapes are seconds apart.
                        let _ = serve(stream, &shared);
                    }
                }
            })
            .context("cannot start the telemetry thread")?;
        Ok(Telemetry { shared, address })
    }

    /// Publishes a new `/metrics` page; also the main loop's heartbeat for `/healthz`.
    pub fn update(&self, page: String) {
        if let Ok(mut current) = self.shared.page.lock() {
            *current = page;
        }
        if let Ok(mut updated) = self.shared.updated.lock() {
            *updated = Instant::now();
        }
    }

    /// `/readyz` answers 200 from now on.
    pub fn set_ready(&self) {
        self.shared.ready.store(true, Ordering::Relaxed);
    }
}

fn serve(mut stream: TcpStream, shared: &Shared) -> std::io::Result<()> {
    stream.set_read_timeout(Some(READ_TIMEOUT))?;
    stream.set_write_timeout(Some(READ_TIMEOUT))?;
    let mut request = Vec::new();
    let mut chunk = [0u8; 1024];
    while !request.windows(4).any(|w| w == b"\r\n\r\n") && request.len() < MAX_REQUEST_BYTES {
        let n = stream.read(&mut chunk)?;
        if n == 0 {
            break;
        }
        request.extend_from_slice(&chunk[..n]);
    }
    let (status, content_type, body) = match http1::parse_request(&request) {
        Ok(head) if head.method == "GET" || head.method == "HEAD" => {
            let (status, content_type, body) =
                respond(crate::capture::route::path_of(&head.target), shared);
            let body = if head.method == "HEAD" {
                String::new()
            } else {
                body
            };
            (status, content_type, body)
        }
        Ok(_) => (405, "text/plain", "only GET and HEAD\n".to_string()),
        Err(_) => (400, "text/plain", "bad request\n".to_string()),
    };
    let reason = match status {
        200 => "OK",
        400 => "Bad Request",
        404 => "Not Found",
        405 => "Method Not Allowed",
        _ => "Service Unavailable",
    };
    let head = format!(
        "HTTP/1.1 {status} {reason}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n\
         Connection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes())?;
    stream.write_all(body.as_bytes())
}

/// Status, content type and body for a path.
fn respond(path: &str, shared: &Shared) -> (u16, &'static str, String) {
    match path {
        "/metrics" => (
            200,
            "text/plain; version=0.0.4; charset=utf-8",
            shared.page.lock().map(|p| p.clone()).unwrap_or_default(),
        ),
        "/healthz" => {
            let age = shared
                .updated
                .lock()
                .map(|updated| updated.elapsed())
                .unwrap_or(Duration::MAX);
            if age < STALE_AFTER {
                (200, "text/plain", "ok\n".to_string())
            } else {
                (
                    503,
                    "text/plain",
                    format!("the main loop has not run for {} s\n", age.as_secs()),
                )
            }
        }
        "/readyz" => {
            if shared.ready.load(Ordering::Relaxed) {
                (200, "text/plain", "ready\n".to_string())
            } else {
                (503, "text/plain", "starting\n".to_string())
            }
        }
        _ => (
            404,
            "text/plain",
            "try /metrics, /healthz or /readyz\n".to_string(),
        ),
    }
}

/// Whether a metric only grows (counter) or goes up and down (gauge).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MetricKind {
    Counter,
    Gauge,
}

/// One sample of the agent's own metrics.
#[derive(Clone, Debug, PartialEq)]
pub struct SelfMetric {
    pub name: &'static str,
    pub help: String,
    pub kind: MetricKind,
    pub labels: Vec<(String, String)>,
    pub value: f64,
}

/// The agent's own metrics, rendered as a Prometheus text page ([`Exposition::finish`]) or
/// exported over OTLP ([`Exposition::samples`], see `export::otlp::self_metrics_request`).
#[derive(Default)]
pub struct Exposition {
    samples: Vec<SelfMetric>,
}

impl Exposition {
    /// A counter (`name` ends in `_total`) with label pairs.
    pub fn counter(&mut self, name: &'static str, help: &str, labels: &[(&str, &str)], value: u64) {
        self.sample(name, MetricKind::Counter, help, labels, value as f64);
    }

    /// A counter of a fractional quantity (seconds).
    pub fn counter_f64(
        &mut self,
        name: &'static str,
        help: &str,
        labels: &[(&str, &str)],
        value: f64,
    ) {
        self.sample(name, MetricKind::Counter, help, labels, value);
    }

    /// A gauge with label pairs.
    pub fn gauge(&mut self, name: &'static str, help: &str, labels: &[(&str, &str)], value: f64) {
        self.sample(name, MetricKind::Gauge, help, labels, value);
    }

    fn sample(
        &mut self,
        name: &'static str,
        kind: MetricKind,
        help: &str,
        labels: &[(&str, &str)],
        value: f64,
    ) {
        self.samples.push(SelfMetric {
            name,
            help: help.to_string(),
            kind,
            labels: labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            value,
        });
    }

    /// The samples, in the order they were added (those of one metric next to each other).
    pub fn samples(&self) -> &[SelfMetric] {
        &self.samples
    }

    /// The Prometheus text page: one `# HELP`/`# TYPE` per metric, then its samples.
    pub fn finish(&self) -> String {
        let mut out = String::new();
        let mut current = None;
        for sample in &self.samples {
            if current != Some(sample.name) {
                let kind = match sample.kind {
                    MetricKind::Counter => "counter",
                    MetricKind::Gauge => "gauge",
                };
                let _ = writeln!(out, "# HELP {} {}", sample.name, sample.help);
                let _ = writeln!(out, "# TYPE {} {kind}", sample.name);
                current = Some(sample.name);
            }
            out.push_str(sample.name);
            if !sample.labels.is_empty() {
                out.push('{');
                for (i, (key, value)) in sample.labels.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    let _ = write!(out, "{key}=\"{}\"", escape(value));
                }
                out.push('}');
            }
            let _ = writeln!(out, " {}", sample.value);
        }
        out
    }
}

/// Escapes a label value: backslash, double quote and newline.
fn escape(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// Resident memory (bytes) and CPU time (seconds) of this process, from `/proc/self`.
pub fn process_usage() -> (u64, f64) {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // utime and stime are the 14th and 15th fields; the comm before them may hold spaces.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest.split_whitespace().collect())
        .unwrap_or_default();
    // SAFETY: sysconf has no memory-safety preconditions.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    let field = |index: usize| fields.get(index).and_then(|f| f.parse::<f64>().ok());
    // After the comm, field 3 (state) is index 0, so utime (14) is index 11.
    let cpu = (field(11).unwrap_or(0.0) + field(12).unwrap_or(0.0)) / ticks;
    let page = crate::page_size() as u64;
    let rss_pages = std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|statm| statm.split_whitespace().nth(1)?.parse::<u64>().ok())
        .unwrap_or(0);
    (rss_pages * page, cpu)
}

/// What the `/metrics` page of `run` shows.
pub struct AgentState<'a> {
    pub kernel: &'a KernelStats,
    /// Map entries that could not be read back while draining.
    pub read_errors: u64,
    /// Sample keys of the last drain and the counts map's capacity.
    pub counts_fill: (usize, u32),
    pub samples_uploaded: u64,
    pub uploads: &'a UploadStats,
    pub upload_queue_capacity_bytes: usize,
    pub capture: Option<&'a CaptureCounters>,
    /// Samples of HTTP/2 servers, by what linking them to streams found.
    pub sample_links: LinkCounts,
    pub otlp: Option<&'a OtlpStats>,
    /// The Kubernetes API server's listings, when the agent asks it.
    pub kube: Option<PodSourceStats>,
}

/// The agent's metrics (names prefixed `profiler_agent_`).
pub fn agent_metrics(state: &AgentState<'_>) -> Exposition {
    let mut page = Exposition::default();
    let k = |stat: Stat| state.kernel.get(stat);
    let load = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
    page.counter(
        "profiler_agent_samples_total",
        "CPU samples counted by the kernel.",
        &[],
        k(Stat::Samples),
    );
    page.counter(
        "profiler_agent_samples_in_span_total",
        "CPU samples taken while the thread served a captured HTTP request.",
        &[],
        k(Stat::SamplesInSpan),
    );
    let links = &state.sample_links;
    for (result, n) in [
        ("linked", links.linked),
        ("ambiguous", links.ambiguous),
        ("outside_streams", links.outside),
        ("expired", links.expired),
    ] {
        page.counter(
            "profiler_agent_http2_server_samples_total",
            "CPU samples of HTTP/2 server processes, by whether they were linked to the stream \
             their thread was answering (ambiguous: two streams at once; expired: the stream \
             stayed open too long).",
            &[("result", result)],
            n,
        );
    }
    page.counter(
        "profiler_agent_http2_stream_windows_dropped_total",
        "HTTP/2 server stream windows dropped before use (too many kept at once); samples \
         they held went unlinked.",
        &[],
        links.windows_dropped,
    );
    page.counter(
        "profiler_agent_samples_lost_total",
        "CPU samples lost, by reason.",
        &[("reason", "counts_map_full")],
        k(Stat::CountsMapFull),
    );
    for (stack, reason, stat) in [
        ("user", "map_full", Stat::UserStackMapFull),
        ("user", "capture_failed", Stat::UserStackCaptureFailed),
        ("kernel", "map_full", Stat::KernelStackMapFull),
        ("kernel", "capture_failed", Stat::KernelStackCaptureFailed),
    ] {
        page.counter(
            "profiler_agent_stacks_lost_total",
            "Stacks lost (their samples still count), by stack and reason.",
            &[("stack", stack), ("reason", reason)],
            k(stat),
        );
    }
    page.counter(
        "profiler_agent_drain_read_errors_total",
        "Kernel map entries that could not be read back while draining.",
        &[],
        state.read_errors,
    );
    let (keys, capacity) = state.counts_fill;
    page.gauge(
        "profiler_agent_counts_map_fill_ratio",
        "Share of the sample counts map the last drain found used.",
        &[],
        keys as f64 / f64::from(capacity.max(1)),
    );
    page.counter(
        "profiler_agent_profile_samples_uploaded_total",
        "Samples in profiles queued for the server.",
        &[],
        state.samples_uploaded,
    );
    page.counter(
        "profiler_agent_profiles_sent_total",
        "Profiles the server accepted.",
        &[],
        load(&state.uploads.sent),
    );
    page.counter(
        "profiler_agent_profile_upload_errors_total",
        "Failed profile upload attempts (retried).",
        &[],
        load(&state.uploads.failed_attempts),
    );
    for (reason, counter) in [
        ("queue_full", &state.uploads.dropped_queue_full),
        ("rejected", &state.uploads.dropped_rejected),
    ] {
        page.counter(
            "profiler_agent_profiles_dropped_total",
            "Profiles dropped, by reason.",
            &[("reason", reason)],
            load(counter),
        );
    }
    page.gauge(
        "profiler_agent_profile_queue_fill_ratio",
        "Share of the profile upload queue (bytes) in use.",
        &[],
        load(&state.uploads.queued_bytes) as f64 / state.upload_queue_capacity_bytes.max(1) as f64,
    );
    for (name, help, stat) in [
        (
            "profiler_agent_http_requests_seen_total",
            "HTTP requests whose first bytes the kernel saw.",
            Stat::HttpRequests,
        ),
        (
            "profiler_agent_http_traceparents_total",
            "HTTP requests that carried a valid traceparent.",
            Stat::HttpTraceparents,
        ),
        (
            "profiler_agent_http2_connections_total",
            "HTTP/2 connections followed from their connection preface.",
            Stat::Http2Connections,
        ),
        (
            "profiler_agent_http_records_lost_total",
            "HTTP records lost because the ring buffer was full.",
            Stat::HttpEventsLost,
        ),
        (
            "profiler_agent_http_connections_not_followed_total",
            "HTTP connections not followed because the connection map was full.",
            Stat::HttpConnsFull,
        ),
        (
            "profiler_agent_http_syscalls_not_inspected_total",
            "Reads and writes not inspected because the argument map was full.",
            Stat::HttpArgsFull,
        ),
        (
            "profiler_agent_http_unrecognized_total",
            "Reads and writes on followed connections that were neither request nor response.",
            Stat::HttpUnrecognized,
        ),
    ] {
        page.counter(name, help, &[], k(stat));
    }
    if let Some(capture) = state.capture {
        for (kind, counter) in [
            ("server", &capture.server_spans),
            ("client", &capture.client_spans),
        ] {
            page.counter(
                "profiler_agent_spans_total",
                "Spans captured, by kind.",
                &[("kind", kind)],
                load(counter),
            );
        }
        if let Ok(unparsed) = capture.unparsed.lock() {
            for (reason, n) in unparsed.iter() {
                page.counter(
                    "profiler_agent_http_exchanges_without_span_total",
                    "HTTP exchanges that produced no span, by reason.",
                    &[("reason", reason)],
                    *n,
                );
            }
        }
        page.counter(
            "profiler_agent_http2_connections_lost_total",
            "HTTP/2 connections given up: bytes the parser needed were not captured, or HPACK \
             failed.",
            &[],
            load(&capture.h2_lost_connections),
        );
    }
    if let Some(otlp) = state.otlp {
        page.counter(
            "profiler_agent_otlp_spans_sent_total",
            "Spans the OTLP receiver accepted.",
            &[],
            load(&otlp.spans_sent),
        );
        for (reason, counter) in [
            ("queue_full", &otlp.spans_dropped_queue_full),
            ("rejected", &otlp.spans_dropped_rejected),
            ("expired", &otlp.spans_dropped_expired),
        ] {
            page.counter(
                "profiler_agent_otlp_spans_dropped_total",
                "Spans dropped before the OTLP receiver took them, by reason.",
                &[("reason", reason)],
                load(counter),
            );
        }
        page.counter(
            "profiler_agent_otlp_metric_points_sent_total",
            "RED histogram points the OTLP receiver accepted.",
            &[],
            load(&otlp.metric_points_sent),
        );
        page.counter(
            "profiler_agent_otlp_export_errors_total",
            "Failed OTLP export calls (retried or not).",
            &[],
            load(&otlp.export_errors),
        );
    }
    if let Some(kube) = state.kube {
        for (result, value) in [("ok", kube.listings_ok), ("error", kube.listings_failed)] {
            page.counter(
                "profiler_agent_kube_api_listings_total",
                "Listings of this node's pods from the Kubernetes API server, by result.",
                &[("result", result)],
                value,
            );
        }
        page.gauge(
            "profiler_agent_kube_api_pods",
            "Pods of this node in the last good listing.",
            &[],
            kube.pods as f64,
        );
    }
    let (rss, cpu) = process_usage();
    page.gauge(
        "process_resident_memory_bytes",
        "Resident memory of the agent.",
        &[],
        rss as f64,
    );
    page.counter_f64(
        "process_cpu_seconds_total",
        "CPU time the agent used, user and system.",
        &[],
        cpu,
    );
    page
}

#[cfg(test)]
mod tests {
    use super::*;

    fn get(address: SocketAddr, path: &str) -> (u16, String) {
        let mut stream = TcpStream::connect(address).expect("connects");
        write!(stream, "GET {path} HTTP/1.1\r\nHost: agent\r\n\r\n").expect("sends");
        let mut response = String::new();
        stream.read_to_string(&mut response).expect("reads");
        let status = response
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        let body = response.split_once("\r\n\r\n").map_or("", |(_, b)| b);
        (status, body.to_string())
    }

    #[test]
    fn serves_metrics_health_and_readiness() {
        let telemetry = Telemetry::start("127.0.0.1:0".parse().expect("address")).expect("binds");
        let address = telemetry.address;
        assert_eq!(get(address, "/readyz").0, 503, "not ready before set_ready");
        assert_eq!(get(address, "/healthz").0, 200);
        let mut page = Exposition::default();
        page.counter("profiler_agent_samples_total", "Samples.", &[], 7);
        page.counter(
            "profiler_agent_spans_total",
            "Spans.",
            &[("kind", "server")],
            3,
        );
        page.counter(
            "profiler_agent_spans_total",
            "Spans.",
            &[("kind", "cl\"ient")],
            1,
        );
        telemetry.update(page.finish());
        telemetry.set_ready();
        assert_eq!(get(address, "/readyz").0, 200);
        let (status, body) = get(address, "/metrics?x=1");
        assert_eq!(status, 200);
        assert_eq!(
            body,
            "# HELP profiler_agent_samples_total Samples.\n\
             # TYPE profiler_agent_samples_total counter\n\
             profiler_agent_samples_total 7\n\
             # HELP profiler_agent_spans_total Spans.\n\
             # TYPE profiler_agent_spans_total counter\n\
             profiler_agent_spans_total{kind=\"server\"} 3\n\
             profiler_agent_spans_total{kind=\"cl\\\"ient\"} 1\n"
        );
        assert_eq!(get(address, "/nope").0, 404);
        // Garbage is answered, not fatal to the endpoint.
        let mut stream = TcpStream::connect(address).expect("connects");
        stream
            .write_all(b"\x16\x03\x01 garbage\r\n\r\n")
            .expect("sends");
        let mut response = String::new();
        let _ = stream.read_to_string(&mut response);
        assert!(response.starts_with("HTTP/1.1 400"), "{response}");
        assert_eq!(get(address, "/healthz").0, 200, "still serving");
    }

    #[test]
    fn reports_kube_api_listings_when_asked() {
        let kernel = KernelStats::default();
        let uploads = UploadStats::default();
        let state = |kube| AgentState {
            kernel: &kernel,
            read_errors: 0,
            counts_fill: (0, 1),
            samples_uploaded: 0,
            uploads: &uploads,
            upload_queue_capacity_bytes: 1,
            capture: None,
            sample_links: LinkCounts::default(),
            otlp: None,
            kube,
        };
        let page = agent_metrics(&state(Some(PodSourceStats {
            listings_ok: 3,
            listings_failed: 1,
            pods: 42,
        })))
        .finish();
        assert!(
            page.contains("profiler_agent_kube_api_listings_total{result=\"ok\"} 3\n"),
            "{page}"
        );
        assert!(
            page.contains("profiler_agent_kube_api_listings_total{result=\"error\"} 1\n"),
            "{page}"
        );
        assert!(page.contains("profiler_agent_kube_api_pods 42\n"), "{page}");
        let page = agent_metrics(&state(None)).finish();
        assert!(!page.contains("kube_api"), "{page}");
    }

    #[test]
    fn reads_its_own_usage() {
        let (rss, cpu) = process_usage();
        assert!(rss > 1 << 20, "rss {rss}");
        assert!(cpu >= 0.0);
    }
}
