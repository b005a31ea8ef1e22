//! The HTTP capture's thread: reads the kernel's records, assembles spans (HTTP/1.x in
//! [`crate::capture::assemble`], HTTP/2 and gRPC in [`crate::capture::h2`]), aggregates RED histograms ([`crate::capture::red`]) and hands
//! both to their sinks: the OTLP exporter (`run`) and/or a JSON-lines file (`record --spans`).

use std::{
    collections::{BTreeMap, HashMap},
    fs::File,
    io::{BufWriter, Write},
    path::PathBuf,
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        Arc, Mutex, PoisonError,
    },
    thread::{self, JoinHandle},
    time::{Duration, Instant},
};

use anyhow::{Context, Result};
use profiler_common::{http_event, http_protocol};

use crate::{
    agent::{monotonic_now_ns, process_exists, unix_now_ns},
    capture::{
        assemble::{Assembler, Clock, ExchangeRecord},
        h2::H2Assembler,
        red::{DurationMetric, RedAggregator},
        span::{AttrValue, Attribute, Resource, Span, SpanKind},
        stream_windows::SharedWindows,
    },
    ebpf::{HttpEvent, HttpEvents},
    encode::spans_json,
    export::otlp::OtlpExporter,
    metadata::{kube_api::PodSource, Metadata, ProcessMetadata},
};

/// Least time between two reads of the ring buffer while records keep coming: each read takes
/// what arrived meanwhile (the ring, 2 MiB or more, holds thousands of records), not one
/// wake-up per record.
const POLL_INTERVAL: Duration = Duration::from_millis(10);
/// How often waiting spans are checked for idleness.
const IDLE_CHECK_INTERVAL: Duration = Duration::from_millis(250);
/// How often the clock offset between monotonic and Unix time is re-read (NTP slews it).
const CLOCK_REFRESH_INTERVAL: Duration = Duration::from_secs(10);

/// What the capture does with what it finds.
pub struct CaptureSinks {
    /// Spans and RED metrics over OTLP. Shared with the main loop (the agent's own metrics);
    /// the capture shuts it down when it stops, once the main loop has let go of it.
    pub otlp: Option<Arc<OtlpExporter>>,
    /// Spans as JSON lines.
    pub spans_file: Option<PathBuf>,
    /// Every RED metric interval the histograms are sent to `otlp` (`Duration::MAX`: never).
    pub metrics_interval: Duration,
    /// Most distinct attribute sets per service and metric before the overflow series.
    pub max_series_per_service: usize,
    /// `service.name` for every process, instead of each process's name.
    pub service_name: Option<String>,
    /// The API server's pod listings, for names and service names (see [`Metadata`]).
    pub pods: Option<Arc<PodSource>>,
}

/// Counters of the capture thread, readable while it runs.
#[derive(Debug, Default)]
pub struct CaptureCounters {
    pub records: AtomicU64,
    pub spans: AtomicU64,
    pub server_spans: AtomicU64,
    pub client_spans: AtomicU64,
    /// Exchanges without a span, by reason (see `Unparsed::label`).
    pub unparsed: Mutex<BTreeMap<String, u64>>,
    pub orphan_records: AtomicU64,
    pub malformed_records: AtomicU64,
    /// HTTP/2 connections given up (bytes missing where the parser needed them, HPACK errors).
    pub h2_lost_connections: AtomicU64,
    /// Spans the JSON-lines file could not take (write errors).
    pub file_errors: AtomicU64,
}

impl CaptureCounters {
    /// One line for logs and summaries.
    pub fn describe(&self) -> String {
        let unparsed = self
            .unparsed
            .lock()
            .map(|u| {
                if u.is_empty() {
                    "none".to_string()
                } else {
                    u.iter()
                        .map(|(reason, n)| format!("{reason} {n}"))
                        .collect::<Vec<_>>()
                        .join(", ")
                }
            })
            .unwrap_or_default();
        let file_errors = self.file_errors.load(Ordering::Relaxed);
        format!(
            "{} spans ({} server, {} client) from {} kernel records; without span: {unparsed}; \
             orphan records {}, malformed records {}, HTTP/2 connections lost {}{}",
            self.spans.load(Ordering::Relaxed),
            self.server_spans.load(Ordering::Relaxed),
            self.client_spans.load(Ordering::Relaxed),
            self.records.load(Ordering::Relaxed),
            self.orphan_records.load(Ordering::Relaxed),
            self.malformed_records.load(Ordering::Relaxed),
            self.h2_lost_connections.load(Ordering::Relaxed),
            if file_errors > 0 {
                format!("; {file_errors} spans not written (file errors)")
            } else {
                String::new()
            },
        )
    }
}

/// The running capture thread.
pub struct HttpCapture {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<Result<()>>>,
    pub counters: Arc<CaptureCounters>,
}

impl HttpCapture {
    /// Starts the thread. The spans file is created before this returns, so a bad path fails
    /// early. Finished HTTP/2 server streams are published into `windows`.
    pub fn start(
        events: HttpEvents,
        windows: SharedWindows,
        sinks: CaptureSinks,
    ) -> Result<HttpCapture> {
        let file = match &sinks.spans_file {
            Some(path) => {
                Some(BufWriter::new(File::create(path).with_context(|| {
                    format!("cannot create spans file {}", path.display())
                })?))
            }
            None => None,
        };
        let stop = Arc::new(AtomicBool::new(false));
        let counters = Arc::new(CaptureCounters::default());
        let worker = Worker {
            events,
            assembler: Assembler::default(),
            h2: H2Assembler::default(),
            windows,
            red: RedAggregator::new(sinks.max_series_per_service),
            resources: Resources::new(sinks.service_name.clone(), sinks.pods.clone()),
            file,
            line: String::new(),
            sinks,
            counters: counters.clone(),
        };
        let thread = thread::Builder::new()
            .name("http-capture".to_string())
            .spawn({
                let stop = stop.clone();
                move || worker.run(&stop)
            })
            .context("cannot start the HTTP capture thread")?;
        Ok(HttpCapture {
            stop,
            thread: Some(thread),
            counters,
        })
    }

    /// Reads what is left, finishes every waiting span, flushes the sinks (the OTLP exporter
    /// gets up to `timeout`) and stops.
    pub fn stop(mut self) -> Result<()> {
        self.stop.store(true, Ordering::Relaxed);
        match self.thread.take().map(JoinHandle::join) {
            Some(Ok(result)) => result,
            Some(Err(_)) => anyhow::bail!("the HTTP capture thread panicked"),
            None => Ok(()),
        }
    }
}

struct Worker {
    events: HttpEvents,
    assembler: Assembler,
    h2: H2Assembler,
    windows: SharedWindows,
    red: RedAggregator,
    resources: Resources,
    file: Option<BufWriter<File>>,
    /// Reused for each JSON line.
    line: String,
    sinks: CaptureSinks,
    counters: Arc<CaptureCounters>,
}

impl Worker {
    fn run(mut self, stop: &AtomicBool) -> Result<()> {
        let mut clock = read_clock();
        let mut clock_read_at = Instant::now();
        let mut next_idle_check = Instant::now() + IDLE_CHECK_INTERVAL;
        let mut next_metrics = Instant::now().checked_add(self.sinks.metrics_interval);
        let mut spans: Vec<Span> = Vec::new();
        loop {
            let stopping = stop.load(Ordering::Relaxed);
            if clock_read_at.elapsed() >= CLOCK_REFRESH_INTERVAL {
                clock = read_clock();
                clock_read_at = Instant::now();
            }
            let read_from_ns = monotonic_now_ns();
            let (assembler, h2, resources) =
                (&mut self.assembler, &mut self.h2, &mut self.resources);
            let read = self.events.for_each(|event| match event {
                HttpEvent::Exchange(x, _)
                    if x.kind == http_event::CLOSE && x.protocol == http_protocol::HTTP2 =>
                {
                    h2.close(x.pid, x.fd, x.conn_start_ns)
                }
                HttpEvent::Exchange(exchange, request) => assembler.push(
                    &ExchangeRecord { exchange, request },
                    clock,
                    &mut |pid, comm| resources.get(pid, comm),
                    &mut spans,
                ),
                HttpEvent::H2(chunk, data) => h2.push(
                    chunk,
                    data,
                    clock,
                    &mut |pid, comm| resources.get(pid, comm),
                    &mut spans,
                ),
            });
            self.counters
                .records
                .fetch_add(read as u64, Ordering::Relaxed);
            let idle_check = Instant::now() >= next_idle_check;
            if stopping {
                self.assembler.finish_all(&mut spans);
                self.h2.finish_all();
            } else if idle_check {
                self.assembler
                    .finish_idle(monotonic_now_ns(), &process_exists, &mut spans);
                self.h2.forget_dead(&process_exists);
                self.resources.prune();
                next_idle_check = Instant::now() + IDLE_CHECK_INTERVAL;
            }
            self.publish_streams(read_from_ns, stopping, idle_check);
            self.deliver(&mut spans);
            if stopping || next_metrics.is_some_and(|next| Instant::now() >= next) {
                if let Some(otlp) = &self.sinks.otlp {
                    let series = self.red.take(unix_now_ns());
                    if !series.is_empty() {
                        otlp.push_metrics(series);
                    }
                }
                next_metrics = Instant::now().checked_add(self.sinks.metrics_interval);
            }
            if stopping {
                break;
            }
            if read > 0 {
                thread::sleep(POLL_INTERVAL);
            } else {
                // Idle: sleep until records pile up (the kernel wakes the ring then) or the next
                // timer, whichever is first.
                let next = next_metrics.map_or(next_idle_check, |m| m.min(next_idle_check));
                let timeout = next.saturating_duration_since(Instant::now());
                self.events.wait(timeout.max(POLL_INTERVAL));
            }
        }
        if let Some(file) = &mut self.file {
            file.flush().context("cannot write the spans file")?;
        }
        if let Some(otlp) = self.sinks.otlp.take() {
            match Arc::try_unwrap(otlp) {
                Ok(otlp) => {
                    let (sent, unsent) = otlp.shutdown(Duration::from_secs(5));
                    eprintln!("spans: {sent} sent over OTLP, {unsent} left unsent");
                }
                Err(_) => eprintln!("warning: the OTLP exporter is still in use; not flushed"),
            }
        }
        Ok(())
    }

    /// Hands the finished HTTP/2 server streams to the profiler's sample linking; with
    /// `progress`, also how far the capture has read and which streams are still open (a scan
    /// of every connection, so not on every read).
    fn publish_streams(&mut self, read_from_ns: u64, stopping: bool, progress: bool) {
        if self.h2.served.is_empty() && !stopping && !progress {
            return;
        }
        let mut windows = self.windows.lock().unwrap_or_else(PoisonError::into_inner);
        for stream in self.h2.served.drain(..) {
            windows.add(&stream);
        }
        if stopping {
            windows.complete();
        } else if progress {
            windows.progress(read_from_ns, self.h2.open_server_streams());
        }
    }

    /// Hands finished spans to the sinks and updates the counters.
    fn deliver(&mut self, spans: &mut Vec<Span>) {
        let stats = &self.assembler.stats;
        let h2 = &self.h2.stats;
        self.counters
            .orphan_records
            .store(stats.orphan_records + h2.orphan_frames, Ordering::Relaxed);
        self.counters
            .h2_lost_connections
            .store(h2.lost_connections.values().sum(), Ordering::Relaxed);
        self.counters
            .malformed_records
            .store(self.events.malformed, Ordering::Relaxed);
        if let Ok(mut unparsed) = self.counters.unparsed.lock() {
            for (reason, n) in &stats.unparsed {
                unparsed.insert(reason.label(), *n);
            }
            for (reason, n) in &h2.unparsed {
                unparsed.insert(format!("h2_{reason}"), *n);
            }
        }
        if spans.is_empty() {
            return;
        }
        for span in spans.iter() {
            let counter = match span.kind {
                SpanKind::Server => &self.counters.server_spans,
                SpanKind::Client => &self.counters.client_spans,
            };
            counter.fetch_add(1, Ordering::Relaxed);
            let metric = DurationMetric::of(span);
            if self.sinks.otlp.is_some() {
                let seconds = span.end_unix_ns.saturating_sub(span.start_unix_ns) as f64 / 1e9;
                self.red
                    .record(&span.resource, metric, metric_attributes(span), seconds);
            }
            if let Some(file) = &mut self.file {
                self.line.clear();
                spans_json::encode_into(span, &mut self.line);
                self.line.push('\n');
                if file.write_all(self.line.as_bytes()).is_err() {
                    self.counters.file_errors.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
        self.counters
            .spans
            .fetch_add(spans.len() as u64, Ordering::Relaxed);
        match &self.sinks.otlp {
            Some(otlp) => otlp.push_spans(std::mem::take(spans)),
            None => spans.clear(),
        }
    }
}

/// The attributes of the duration histograms: the span's low-cardinality ones only (never the
/// path, the user agent or the client address).
fn metric_attributes(span: &Span) -> Vec<Attribute> {
    const KEPT: [&str; 10] = [
        "http.request.method",
        "http.response.status_code",
        "http.route",
        "error.type",
        "network.protocol.version",
        "server.port",
        "rpc.system",
        "rpc.service",
        "rpc.method",
        "rpc.grpc.status_code",
    ];
    let client_kept = |name: &str| span.kind == SpanKind::Client && name == "server.address";
    span.attributes
        .iter()
        .filter(|(name, _)| KEPT.contains(&name.as_ref()) || client_kept(name))
        .cloned()
        .collect()
}

/// `service.name` and the other resource attributes of each process, cached by pid.
struct Resources {
    service_name: Option<String>,
    host_name: String,
    metadata: Metadata,
    /// Each process's resource and the metadata it was built from.
    by_pid: HashMap<u32, (Arc<Resource>, ProcessMetadata)>,
}

impl Resources {
    fn new(service_name: Option<String>, pods: Option<Arc<PodSource>>) -> Resources {
        Resources {
            service_name,
            host_name: crate::metadata::host_name_or_unknown(),
            metadata: Metadata::new(pods),
            by_pid: HashMap::new(),
        }
    }

    /// The resource of `pid`; `comm` (the thread the kernel saw) names it when the process is
    /// already gone.
    fn get(&mut self, pid: u32, comm: &str) -> Arc<Resource> {
        if let Some((resource, _)) = self.by_pid.get(&pid) {
            return resource.clone();
        }
        let process_name = std::fs::read_to_string(format!("/proc/{pid}/comm"))
            .map(|name| name.trim_end().to_string())
            .ok()
            .filter(|name| !name.is_empty())
            .unwrap_or_else(|| comm.to_string());
        let metadata = self.metadata.for_pid(pid);
        let service_name = self
            .service_name
            .clone()
            .or_else(|| metadata.service_name().map(String::from))
            .unwrap_or(process_name.clone());
        let mut attributes: Vec<Attribute> = vec![
            ("service.name".into(), AttrValue::Str(service_name.clone())),
            ("process.pid".into(), AttrValue::Int(i64::from(pid))),
            (
                "process.executable.name".into(),
                AttrValue::Str(process_name),
            ),
            ("host.name".into(), AttrValue::Str(self.host_name.clone())),
            (
                "telemetry.sdk.name".into(),
                AttrValue::Str("profiler-agent".into()),
            ),
        ];
        // Container and Kubernetes attributes for containerized processes only (as profiles).
        if metadata.container_id.is_some() || metadata.pod_uid.is_some() {
            for (name, value) in metadata.attributes() {
                attributes.push((name.into(), AttrValue::Str(value.to_string())));
            }
        }
        attributes.sort();
        let resource = Arc::new(Resource {
            service_name,
            attributes,
        });
        let metadata = metadata.clone();
        self.by_pid.insert(pid, (resource.clone(), metadata));
        resource
    }

    /// Forgets exited processes (pids are recycled), and the resources of processes whose
    /// metadata changed since (names that came late, a new API server listing): their next span
    /// builds the resource again, as profiles get the new names at their next upload.
    fn prune(&mut self) {
        let mut stale = Vec::new();
        for (&pid, (_, built_from)) in &self.by_pid {
            if !process_exists(pid) {
                self.metadata.forget(pid);
                stale.push(pid);
            } else if self.metadata.for_pid(pid) != built_from {
                stale.push(pid);
            }
        }
        for pid in stale {
            self.by_pid.remove(&pid);
        }
    }
}

/// The offset from monotonic to Unix time, read as a pair of close clock readings.
fn read_clock() -> Clock {
    let before = monotonic_now_ns();
    let unix = unix_now_ns();
    let after = monotonic_now_ns();
    let monotonic = before / 2 + after / 2;
    Clock {
        offset_ns: i128::from(unix) - i128::from(monotonic),
    }
}
