//! OTLP/gRPC export of captured spans and RED histograms.
//!
//! Two halves. The pure one converts the capture's model to OTLP requests: [`trace_request`]
//! ([`Span`]s grouped by resource) and [`metrics_request`] (DELTA histograms of
//! [`HistogramSeries`]). The other is [`OtlpExporter`]: one dedicated thread running a tokio
//! current-thread runtime (the rest of the agent is synchronous) that sends them with the
//! generated `TraceService`/`MetricsService` clients over one lazily connected tonic channel
//! (it reconnects by itself after a failure).
//!
//! Pushing never blocks: spans wait in a queue bounded in spans, metric batches in a queue
//! bounded in batches, and the oldest are dropped and counted once it is full. A failed batch is
//! retried with exponential backoff (up to 30 s), and dropped once it has failed for 5 minutes
//! so one batch cannot hold the others back forever. A permanent rejection (`INVALID_ARGUMENT`,
//! `UNIMPLEMENTED`, `PERMISSION_DENIED`, `UNAUTHENTICATED`, ..., see [`is_permanent`]) drops the
//! batch at once. Everything dropped is counted in [`OtlpStats`]. An `https://` endpoint is
//! reached over TLS (rustls), its certificate checked against the system's CAs or a given file.

use std::{
    collections::VecDeque,
    fmt,
    future::Future,
    path::{Path, PathBuf},
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc, Mutex, MutexGuard,
    },
    thread::{self, JoinHandle},
    time::{Duration, Instant},
};

use opentelemetry_proto::tonic::collector::{
    metrics::v1::{metrics_service_client::MetricsServiceClient, ExportMetricsServiceRequest},
    trace::v1::{trace_service_client::TraceServiceClient, ExportTraceServiceRequest},
};
use tonic::{
    codec::CompressionEncoding,
    metadata::{errors::InvalidMetadataValue, AsciiMetadataValue},
    transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Uri},
    Code,
};

use crate::capture::{red::HistogramSeries, span::Span};

/// The instrumentation scope of everything exported.
pub const SCOPE_NAME: &str = "profiler-agent";
pub const DEFAULT_MAX_QUEUED_SPANS: usize = 65_536;
pub const DEFAULT_BATCH_SIZE: usize = 512;
pub const DEFAULT_FLUSH_INTERVAL: Duration = Duration::from_secs(1);
/// Metric batches waiting to be sent; beyond it the oldest is dropped.
pub const MAX_PENDING_METRIC_BATCHES: usize = 8;
/// Data points per metrics request: a batch above it is sent in several requests, so a
/// request stays well under the 4 MiB a gRPC server accepts by default (a point is ~400 bytes).
const MAX_METRIC_POINTS_PER_REQUEST: usize = 2_048;
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
const MIN_BACKOFF: Duration = Duration::from_millis(500);
const MAX_BACKOFF: Duration = Duration::from_secs(30);
/// A batch still failing this long after its first failure is dropped.
const MAX_RETRY_ELAPSED: Duration = Duration::from_secs(300);
/// At most one warning per interval on stderr, so a down receiver does not flood the log.
const WARNING_INTERVAL: Duration = Duration::from_secs(60);
/// Bounds the shutdown timeout so the deadline cannot overflow `Instant`.
const MAX_SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(86_400);

/// Errors of starting the exporter.
#[derive(Debug, thiserror::Error)]
pub enum OtlpError {
    #[error("OTLP endpoint `{endpoint}` is not supported: {reason}")]
    InvalidEndpoint { endpoint: String, reason: String },
    #[error("the OTLP auth token cannot be sent as gRPC metadata (use visible ASCII only)")]
    InvalidAuthToken {
        #[source]
        source: InvalidMetadataValue,
    },
    #[error("OTLP option `{name}` must be greater than zero")]
    ZeroOption { name: &'static str },
    #[error("cannot start the runtime of the OTLP exporter")]
    Runtime {
        #[source]
        source: std::io::Error,
    },
    #[error("cannot start the OTLP exporter thread")]
    Thread {
        #[source]
        source: std::io::Error,
    },
}

mod convert;
#[cfg(test)]
mod tests;

pub use convert::{metrics_request, self_metrics_request, trace_request};

// ---------------------------------------------------------------------------------------------
// The exporter.

/// How to reach the receiver and how much to buffer.
#[derive(Clone)]
pub struct OtlpOptions {
    /// `http://host:port` or `https://host:port` of an OTLP/gRPC receiver (port 4317 by
    /// convention).
    pub endpoint: String,
    /// PEM CA certificates an `https://` receiver is checked against; `None`: the system's.
    pub ca_file: Option<PathBuf>,
    /// Sent as `authorization: Bearer <token>` with every request.
    pub auth_token: Option<String>,
    /// Spans waiting to be sent; beyond it the oldest are dropped. One batch being sent or
    /// retried comes on top.
    pub max_queued_spans: usize,
    /// Spans per request.
    pub batch_size: usize,
    /// How long a span may wait for a batch to fill up.
    pub flush_interval: Duration,
    /// Compresses requests with gzip (every OTel Collector accepts it).
    pub gzip: bool,
}

impl OtlpOptions {
    /// The defaults, sending to `endpoint`.
    pub fn new(endpoint: impl Into<String>) -> Self {
        OtlpOptions {
            endpoint: endpoint.into(),
            ca_file: None,
            auth_token: None,
            max_queued_spans: DEFAULT_MAX_QUEUED_SPANS,
            batch_size: DEFAULT_BATCH_SIZE,
            flush_interval: DEFAULT_FLUSH_INTERVAL,
            gzip: true,
        }
    }
}

impl fmt::Debug for OtlpOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OtlpOptions")
            .field("endpoint", &self.endpoint)
            .field(
                "auth_token",
                &self.auth_token.as_ref().map(|_| "<redacted>"),
            )
            .field("max_queued_spans", &self.max_queued_spans)
            .field("batch_size", &self.batch_size)
            .field("flush_interval", &self.flush_interval)
            .field("gzip", &self.gzip)
            .finish()
    }
}

/// Counters of the exporter, readable at any time.
#[derive(Debug, Default)]
pub struct OtlpStats {
    /// Spans the receiver accepted.
    pub spans_sent: AtomicU64,
    /// Spans dropped because the queue was full.
    pub spans_dropped_queue_full: AtomicU64,
    /// Spans the receiver refused: their batch got a permanent error, or the receiver
    /// counted them in `partial_success.rejected_spans`.
    pub spans_dropped_rejected: AtomicU64,
    /// Spans of batches still failing after retrying for 5 minutes.
    pub spans_dropped_expired: AtomicU64,
    /// Histogram data points the receiver accepted.
    pub metric_points_sent: AtomicU64,
    /// Data points the receiver refused (permanent error or partial success).
    pub metric_points_rejected: AtomicU64,
    /// Metric batches dropped before the receiver took them: queue full or retries expired.
    pub metric_batches_dropped: AtomicU64,
    /// Failed export calls, retried or not.
    pub export_errors: AtomicU64,
}

fn add(counter: &AtomicU64, value: u64) {
    counter.fetch_add(value, Ordering::Relaxed);
}

#[derive(Default)]
struct Queue {
    spans: VecDeque<Span>,
    metric_batches: VecDeque<MetricBatch>,
    /// Set by shutdown: send what is queued until then, then stop.
    closing_deadline: Option<Instant>,
}

struct Shared {
    queue: Mutex<Queue>,
    /// Wakes the exporter thread: a full batch, a metric batch, or shutdown.
    wake: tokio::sync::Notify,
    stats: Arc<OtlpStats>,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Queue> {
        // A panic while holding the lock cannot leave the queue inconsistent: keep going.
        self.queue
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// The background OTLP exporter.
pub struct OtlpExporter {
    shared: Arc<Shared>,
    max_queued_spans: usize,
    batch_size: usize,
    /// Returns the spans of the batch it was still sending when it stopped.
    thread: Option<JoinHandle<usize>>,
}

impl OtlpExporter {
    /// Validates the options and starts the exporter thread. Nothing connects yet: the first
    /// batch does.
    pub fn start(options: OtlpOptions) -> Result<OtlpExporter, OtlpError> {
        for (name, zero) in [
            ("max_queued_spans", options.max_queued_spans == 0),
            ("batch_size", options.batch_size == 0),
            ("flush_interval", options.flush_interval.is_zero()),
        ] {
            if zero {
                return Err(OtlpError::ZeroOption { name });
            }
        }
        let endpoint = endpoint(&options.endpoint, options.ca_file.as_deref())?;
        let authorization = options
            .auth_token
            .as_ref()
            .map(|token| {
                let mut value = AsciiMetadataValue::try_from(format!("Bearer {token}"))
                    .map_err(|source| OtlpError::InvalidAuthToken { source })?;
                value.set_sensitive(true);
                Ok(value)
            })
            .transpose()?;
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|source| OtlpError::Runtime { source })?;
        let shared = Arc::new(Shared {
            queue: Mutex::new(Queue::default()),
            wake: tokio::sync::Notify::new(),
            stats: Arc::default(),
        });
        let worker_shared = Arc::clone(&shared);
        let worker_options = options.clone();
        let thread = thread::Builder::new()
            .name("otlp-exporter".into())
            .spawn(move || {
                let unsent = runtime.block_on(async move {
                    Worker::new(worker_shared, &endpoint, authorization, &worker_options)
                        .run()
                        .await
                });
                // Do not wait for a DNS lookup still running on a blocking thread.
                runtime.shutdown_background();
                unsent
            })
            .map_err(|source| OtlpError::Thread { source })?;
        Ok(OtlpExporter {
            shared,
            max_queued_spans: options.max_queued_spans,
            batch_size: options.batch_size,
            thread: Some(thread),
        })
    }

    /// Queues spans, dropping the oldest queued ones beyond the bound. Never blocks.
    pub fn push_spans(&self, spans: Vec<Span>) {
        if spans.is_empty() {
            return;
        }
        let mut queue = self.shared.lock();
        queue.spans.extend(spans);
        let excess = queue.spans.len().saturating_sub(self.max_queued_spans);
        if excess > 0 {
            queue.spans.drain(..excess);
            add(&self.shared.stats.spans_dropped_queue_full, excess as u64);
        }
        let full_batch = queue.spans.len() >= self.batch_size;
        drop(queue);
        if full_batch {
            self.shared.wake.notify_one();
        }
    }

    /// Queues one batch of histogram series (one [`RedAggregator::take`]), dropping the
    /// oldest batch beyond [`MAX_PENDING_METRIC_BATCHES`]. Never blocks.
    ///
    /// [`RedAggregator::take`]: crate::capture::red::RedAggregator::take
    pub fn push_metrics(&self, series: Vec<HistogramSeries>) {
        if series.is_empty() {
            return;
        }
        self.push_metric_batch(MetricBatch::Histograms(series));
    }

    /// Queues a ready metrics request of `points` data points (the agent's own metrics) like
    /// [`push_metrics`](Self::push_metrics).
    pub fn push_metrics_request(&self, request: ExportMetricsServiceRequest, points: usize) {
        self.push_metric_batch(MetricBatch::Request(request, points));
    }

    fn push_metric_batch(&self, batch: MetricBatch) {
        let mut queue = self.shared.lock();
        queue.metric_batches.push_back(batch);
        while queue.metric_batches.len() > MAX_PENDING_METRIC_BATCHES {
            queue.metric_batches.pop_front();
            add(&self.shared.stats.metric_batches_dropped, 1);
        }
        drop(queue);
        self.shared.wake.notify_one();
    }

    pub fn stats(&self) -> &OtlpStats {
        &self.shared.stats
    }

    /// The counters, for reading them after [`OtlpExporter::shutdown`] or from another thread.
    pub fn stats_handle(&self) -> Arc<OtlpStats> {
        Arc::clone(&self.shared.stats)
    }

    /// Spans waiting in the queue (not counting the batch being sent).
    pub fn queued_spans(&self) -> usize {
        self.shared.lock().spans.len()
    }

    /// Sends what is queued for up to `timeout`, then stops the thread. Returns how many spans
    /// were sent in all and how many were left unsent (queued or in the batch being sent).
    pub fn shutdown(mut self, timeout: Duration) -> (u64, usize) {
        let in_flight = self.stop(timeout);
        (
            self.shared.stats.spans_sent.load(Ordering::Relaxed),
            self.queued_spans() + in_flight,
        )
    }

    /// Stops the thread after `timeout`, or earlier once everything is sent; returns the
    /// spans of the batch it was still sending.
    fn stop(&mut self, timeout: Duration) -> usize {
        let Some(thread) = self.thread.take() else {
            return 0;
        };
        let now = Instant::now();
        let deadline = now
            .checked_add(timeout.min(MAX_SHUTDOWN_TIMEOUT))
            .unwrap_or(now);
        self.shared.lock().closing_deadline = Some(deadline);
        self.shared.wake.notify_one();
        // A panicked thread has nothing more to report.
        thread.join().unwrap_or(0)
    }
}

impl Drop for OtlpExporter {
    /// Stops the thread at once (use [`OtlpExporter::shutdown`] to flush first).
    fn drop(&mut self) {
        self.stop(Duration::ZERO);
    }
}

/// Parses `http[s]://host:port` into a tonic endpoint with the exporter's timeouts; `https`
/// checks the receiver's certificate against `ca_file` (else the system's CAs).
fn endpoint(text: &str, ca_file: Option<&Path>) -> Result<Endpoint, OtlpError> {
    let invalid = |reason: &str| OtlpError::InvalidEndpoint {
        endpoint: text.to_string(),
        reason: reason.to_string(),
    };
    let scheme = text.split_once("://").map(|(scheme, _)| scheme);
    let tls = match scheme {
        Some(scheme) if scheme.eq_ignore_ascii_case("http") => false,
        Some(scheme) if scheme.eq_ignore_ascii_case("https") => true,
        _ => {
            return Err(invalid(
                "expected http://host:port or https://host:port, e.g. http://localhost:4317",
            ))
        }
    };
    let uri: Uri = text
        .parse()
        .map_err(|_| invalid("not a valid URL; expected http://host:port"))?;
    let Some(authority) = uri.authority() else {
        return Err(invalid("the host is missing; expected http://host:port"));
    };
    if uri.host().is_none_or(str::is_empty) {
        return Err(invalid("the host is missing; expected http://host:port"));
    }
    if authority.as_str().contains('@') {
        return Err(invalid(
            "user info is not supported: use the auth token option",
        ));
    }
    // Not `Authority::port`, which also says `None` for a port that is not a number.
    let port = (authority.as_str().rsplit_once(':'))
        .map(|(_, port)| port)
        .filter(|port| !port.contains(']'));
    match port {
        None => {
            return Err(invalid(
                "the port is missing (OTLP/gRPC receivers listen on 4317 by convention)",
            ))
        }
        Some(port) if !matches!(port.parse::<u16>(), Ok(1..)) => {
            return Err(invalid("the port is not a number from 1 to 65535"));
        }
        Some(_) => {}
    }
    if !matches!(uri.path(), "" | "/") || uri.query().is_some() {
        return Err(invalid("an OTLP/gRPC endpoint has no path or query"));
    }
    let host = uri
        .host()
        .unwrap_or_default()
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_string();
    let mut endpoint = Endpoint::from(uri)
        .connect_timeout(CONNECT_TIMEOUT)
        .timeout(REQUEST_TIMEOUT)
        .user_agent(format!("{SCOPE_NAME}/{}", env!("CARGO_PKG_VERSION")))
        .map_err(|_| invalid("cannot build the user agent"))?;
    if tls {
        let (_, pem) =
            crate::tls::read_ca_bundle(ca_file).map_err(|error| invalid(&error.to_string()))?;
        endpoint = endpoint
            .tls_config(
                ClientTlsConfig::new()
                    .ca_certificate(Certificate::from_pem(pem))
                    .domain_name(host),
            )
            .map_err(|error| invalid(&format!("TLS: {error}")))?;
    }
    Ok(endpoint)
}

/// Whether a gRPC error means the receiver will never take the batch: retrying cannot help.
/// The OTLP specification's non-retryable codes, except `UNKNOWN` and `INTERNAL`, which tonic
/// also uses for client-side transport failures, and `RESOURCE_EXHAUSTED`, which receivers use
/// for back-pressure.
pub fn is_permanent(code: Code) -> bool {
    matches!(
        code,
        Code::InvalidArgument
            | Code::NotFound
            | Code::AlreadyExists
            | Code::PermissionDenied
            | Code::FailedPrecondition
            | Code::Unimplemented
            | Code::Unauthenticated
    )
}

/// The result of one export call.
enum Outcome {
    /// Taken; `rejected` items refused (partial success).
    Accepted { rejected: i64, message: String },
    /// A permanent error: drop the batch.
    Rejected(tonic::Status),
    /// Retry later.
    Failed(tonic::Status),
}

impl Outcome {
    fn from_status(status: tonic::Status) -> Self {
        if is_permanent(status.code()) {
            Outcome::Rejected(status)
        } else {
            Outcome::Failed(status)
        }
    }
}

async fn export_spans(
    mut client: TraceServiceClient<Channel>,
    request: tonic::Request<ExportTraceServiceRequest>,
) -> Outcome {
    match client.export(request).await {
        Ok(response) => {
            let partial = response.into_inner().partial_success;
            Outcome::Accepted {
                rejected: partial.as_ref().map_or(0, |p| p.rejected_spans),
                message: partial.map(|p| p.error_message).unwrap_or_default(),
            }
        }
        Err(status) => Outcome::from_status(status),
    }
}

async fn export_metrics(
    mut client: MetricsServiceClient<Channel>,
    request: tonic::Request<ExportMetricsServiceRequest>,
) -> Outcome {
    match client.export(request).await {
        Ok(response) => {
            let partial = response.into_inner().partial_success;
            Outcome::Accepted {
                rejected: partial.as_ref().map_or(0, |p| p.rejected_data_points),
                message: partial.map(|p| p.error_message).unwrap_or_default(),
            }
        }
        Err(status) => Outcome::from_status(status),
    }
}

#[derive(Clone, Copy)]
enum Signal {
    Spans,
    Metrics,
}

/// A batch being sent or retried, already converted.
struct InFlight<R> {
    request: R,
    /// Spans or data points in it.
    items: u64,
    first_failure: Option<Instant>,
}

impl<R> InFlight<R> {
    fn new(request: R, items: usize) -> Self {
        InFlight {
            request,
            items: items as u64,
            first_failure: None,
        }
    }
}

/// What becomes of a batch after a call.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Settled {
    /// Accepted or permanently rejected: the batch is done.
    Done,
    /// Failed: send it again after a backoff.
    Retry,
    /// Failed for too long: dropped, and back off before the next one.
    Expired,
}

/// Counts the outcome of a call for `batch` and says what becomes of it.
fn settle<R>(
    stats: &OtlpStats,
    log: &mut Log,
    signal: Signal,
    batch: &mut InFlight<R>,
    outcome: Outcome,
) -> Settled {
    let (what, sent, rejected) = match signal {
        Signal::Spans => ("spans", &stats.spans_sent, &stats.spans_dropped_rejected),
        Signal::Metrics => (
            "metric points",
            &stats.metric_points_sent,
            &stats.metric_points_rejected,
        ),
    };
    match outcome {
        Outcome::Accepted {
            rejected: refused,
            message,
        } => {
            let refused = u64::try_from(refused).unwrap_or(0).min(batch.items);
            add(sent, batch.items - refused);
            add(rejected, refused);
            log.recovered();
            if refused > 0 {
                log.warn(format_args!(
                    "the receiver refused {refused} {what}: {message}"
                ));
            }
            Settled::Done
        }
        Outcome::Rejected(status) => {
            add(&stats.export_errors, 1);
            add(rejected, batch.items);
            log.warn(format_args!(
                "the receiver rejected {} {what} ({:?}: {}); dropped",
                batch.items,
                status.code(),
                status.message()
            ));
            Settled::Done
        }
        Outcome::Failed(status) => {
            add(&stats.export_errors, 1);
            let first_failure = *batch.first_failure.get_or_insert_with(Instant::now);
            if first_failure.elapsed() < MAX_RETRY_ELAPSED {
                log.failed(&status, "retrying with backoff");
                return Settled::Retry;
            }
            match signal {
                Signal::Spans => add(&stats.spans_dropped_expired, batch.items),
                Signal::Metrics => add(&stats.metric_batches_dropped, 1),
            }
            log.failed(&status, "dropped a batch that kept failing for 5 minutes");
            Settled::Expired
        }
    }
}

/// Warnings about one endpoint on stderr, at most one per [`WARNING_INTERVAL`] (plus the
/// first failure and the recovery) so a receiver that is down does not flood the log.
struct Log {
    endpoint: String,
    /// The last call failed.
    failing: bool,
    last_warning: Option<Instant>,
}

impl Log {
    fn warn(&mut self, message: fmt::Arguments<'_>) {
        let now = Instant::now();
        if self
            .last_warning
            .is_some_and(|last| now.duration_since(last) < WARNING_INTERVAL)
        {
            return;
        }
        self.last_warning = Some(now);
        eprintln!("warning: OTLP export to {}: {message}", self.endpoint);
    }

    fn failed(&mut self, status: &tonic::Status, then: &str) {
        if !self.failing {
            // Always report the start of an outage.
            self.failing = true;
            self.last_warning = None;
        }
        self.warn(format_args!(
            "failed ({:?}: {}); {then}",
            status.code(),
            status.message()
        ));
    }

    fn recovered(&mut self) {
        if self.failing {
            self.failing = false;
            eprintln!("OTLP export to {} works again", self.endpoint);
        }
    }
}

/// When spans go out in a partial batch: every flush interval, the spans queued at that time
/// are sent even if they do not fill a batch; at shutdown, everything is.
struct Flush {
    interval: Duration,
    next: Instant,
    /// Spans of the last flush not yet taken.
    remaining: usize,
}

impl Flush {
    fn update(&mut self, now: Instant, queued: usize, closing: bool) {
        if closing {
            self.remaining = usize::MAX;
        } else if now >= self.next {
            self.remaining = queued;
            self.next = now + self.interval;
        }
    }

    /// The next batch: a full one, or a partial one while flushing.
    fn take(&mut self, queue: &mut VecDeque<Span>, batch_size: usize) -> Option<Vec<Span>> {
        if queue.len() < batch_size && (self.remaining == 0 || queue.is_empty()) {
            return None;
        }
        let take = queue.len().min(batch_size);
        self.remaining = self.remaining.saturating_sub(take);
        Some(queue.drain(..take).collect())
    }
}

/// The exporter thread's state: the clients and the batch of each signal being sent.
struct Worker {
    shared: Arc<Shared>,
    traces: TraceServiceClient<Channel>,
    metrics: MetricsServiceClient<Channel>,
    authorization: Option<AsciiMetadataValue>,
    batch_size: usize,
    spans: Option<InFlight<ExportTraceServiceRequest>>,
    points: Option<InFlight<ExportMetricsServiceRequest>>,
    flush: Flush,
    log: Log,
}

impl Worker {
    /// Must run inside the runtime: the channel spawns its connection task there.
    fn new(
        shared: Arc<Shared>,
        endpoint: &Endpoint,
        authorization: Option<AsciiMetadataValue>,
        options: &OtlpOptions,
    ) -> Self {
        // Lazy: the first call connects, and the channel reconnects by itself after a failure.
        let channel = endpoint.connect_lazy();
        let mut traces = TraceServiceClient::new(channel.clone());
        let mut metrics = MetricsServiceClient::new(channel);
        if options.gzip {
            traces = traces.send_compressed(CompressionEncoding::Gzip);
            metrics = metrics.send_compressed(CompressionEncoding::Gzip);
        }
        Worker {
            shared,
            traces,
            metrics,
            authorization,
            batch_size: options.batch_size,
            spans: None,
            points: None,
            flush: Flush {
                interval: options.flush_interval,
                next: Instant::now() + options.flush_interval,
                remaining: 0,
            },
            log: Log {
                endpoint: options.endpoint.clone(),
                failing: false,
                last_warning: None,
            },
        }
    }

    /// Sends until shutdown; returns the spans of the batch it was still sending.
    async fn run(mut self) -> usize {
        let mut backoff = Duration::ZERO;
        // `fill` says `None` once the shutdown deadline has passed.
        while let Some(closing) = self.fill() {
            if self.spans.is_none() && self.points.is_none() {
                if closing {
                    break;
                }
                // Wait for a full batch, a metric batch, shutdown, or the next flush.
                let wake = self.shared.wake.notified();
                let _ = tokio::time::timeout_at(self.flush.next.into(), wake).await;
                continue;
            }
            let Some(back_off) = self.send().await else {
                break;
            };
            if !back_off {
                backoff = Duration::ZERO;
                continue;
            }
            backoff = (backoff * 2).clamp(MIN_BACKOFF, MAX_BACKOFF);
            if self
                .until_deadline(tokio::time::sleep(backoff))
                .await
                .is_none()
            {
                break;
            }
        }
        self.spans.map_or(0, |batch| batch.items as usize)
    }

    /// Moves the next batches from the queue into the empty slots, converted. Returns
    /// whether shutdown has begun, `None` once its deadline has passed.
    fn fill(&mut self) -> Option<bool> {
        let now = Instant::now();
        let (closing, spans, series) = {
            let mut queue = self.shared.lock();
            let closing = queue.closing_deadline;
            if closing.is_some_and(|deadline| now >= deadline) {
                return None;
            }
            self.flush.update(now, queue.spans.len(), closing.is_some());
            let spans = match self.spans {
                None => self.flush.take(&mut queue.spans, self.batch_size),
                Some(_) => None,
            };
            let series = match self.points {
                None => take_metric_batch(&mut queue),
                Some(_) => None,
            };
            (closing.is_some(), spans, series)
        };
        // Converted outside the lock, so pushing never waits for it.
        if let Some(spans) = spans {
            self.spans = Some(InFlight::new(trace_request(&spans), spans.len()));
        }
        if let Some(batch) = series {
            self.points = Some(match batch {
                MetricBatch::Histograms(series) => {
                    InFlight::new(metrics_request(&series), series.len())
                }
                MetricBatch::Request(request, points) => InFlight::new(request, points),
            });
        }
        Some(closing)
    }

    /// Sends each batch once (metrics first: they are few and small). Returns whether to
    /// back off, `None` once the shutdown deadline has passed.
    async fn send(&mut self) -> Option<bool> {
        let mut back_off = false;
        if let Some(batch) = &self.points {
            let request = self.request(batch.request.clone());
            let outcome = self
                .until_deadline(export_metrics(self.metrics.clone(), request))
                .await?;
            if let Some(batch) = self.points.as_mut() {
                let settled = settle(
                    &self.shared.stats,
                    &mut self.log,
                    Signal::Metrics,
                    batch,
                    outcome,
                );
                if settled != Settled::Retry {
                    self.points = None;
                }
                back_off |= settled != Settled::Done;
            }
        }
        if let Some(batch) = &self.spans {
            let request = self.request(batch.request.clone());
            let outcome = self
                .until_deadline(export_spans(self.traces.clone(), request))
                .await?;
            if let Some(batch) = self.spans.as_mut() {
                let settled = settle(
                    &self.shared.stats,
                    &mut self.log,
                    Signal::Spans,
                    batch,
                    outcome,
                );
                if settled != Settled::Retry {
                    self.spans = None;
                }
                back_off |= settled != Settled::Done;
            }
        }
        Some(back_off)
    }

    /// Runs `future` to completion, or until the shutdown deadline once there is one
    /// (`None`).
    async fn until_deadline<F: Future>(&self, future: F) -> Option<F::Output> {
        let mut future = std::pin::pin!(future);
        loop {
            let deadline = self.shared.lock().closing_deadline;
            if let Some(deadline) = deadline {
                return tokio::time::timeout_at(deadline.into(), future).await.ok();
            }
            tokio::select! {
                output = &mut future => return Some(output),
                () = self.shared.wake.notified() => {}
            }
        }
    }

    fn request<T>(&self, message: T) -> tonic::Request<T> {
        let mut request = tonic::Request::new(message);
        if let Some(authorization) = &self.authorization {
            request
                .metadata_mut()
                .insert("authorization", authorization.clone());
        }
        request
    }
}

/// The next metric batch to send, at most [`MAX_METRIC_POINTS_PER_REQUEST`] points (the rest
/// stays first in the queue).
/// A queued metrics export: RED histograms (converted when sent) or a ready request.
enum MetricBatch {
    Histograms(Vec<HistogramSeries>),
    Request(ExportMetricsServiceRequest, usize),
}

/// The next metrics request to send, splitting histogram batches above
/// [`MAX_METRIC_POINTS_PER_REQUEST`].
fn take_metric_batch(queue: &mut Queue) -> Option<MetricBatch> {
    let mut batch = queue.metric_batches.pop_front()?;
    if let MetricBatch::Histograms(series) = &mut batch {
        if series.len() > MAX_METRIC_POINTS_PER_REQUEST {
            let rest = series.split_off(MAX_METRIC_POINTS_PER_REQUEST);
            queue
                .metric_batches
                .push_front(MetricBatch::Histograms(rest));
        }
    }
    Some(batch)
}
