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
//! batch at once. Everything dropped is counted in [`OtlpStats`]. Plain `http://` only: TLS is
//! not supported yet.

use std::{
    collections::{HashMap, VecDeque},
    fmt,
    future::Future,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc, Mutex, MutexGuard,
    },
    thread::{self, JoinHandle},
    time::{Duration, Instant},
};

use opentelemetry_proto::tonic::{
    collector::{
        metrics::v1::{metrics_service_client::MetricsServiceClient, ExportMetricsServiceRequest},
        trace::v1::{trace_service_client::TraceServiceClient, ExportTraceServiceRequest},
    },
    common::v1::{any_value, AnyValue, InstrumentationScope, KeyValue},
    metrics::v1::{
        metric, AggregationTemporality, Histogram, HistogramDataPoint, Metric, ResourceMetrics,
        ScopeMetrics,
    },
    resource::v1::Resource as OtlpResource,
    trace::v1::{
        span::SpanKind as OtlpSpanKind, status::StatusCode, ResourceSpans, ScopeSpans,
        Span as OtlpSpan, SpanFlags, Status,
    },
};
use tonic::{
    codec::CompressionEncoding,
    metadata::{errors::InvalidMetadataValue, AsciiMetadataValue},
    transport::{Channel, Endpoint, Uri},
    Code,
};

use crate::capture::{
    red::{DurationMetric, HistogramSeries, DURATION_BUCKETS_S},
    span::{AttrValue, Attribute, Resource, Span, SpanKind},
};

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

// ---------------------------------------------------------------------------------------------
// Conversion (pure).

/// One OTLP trace request: one `ResourceSpans` per distinct resource (in order of first
/// appearance), each with one `ScopeSpans` of scope [`SCOPE_NAME`].
pub fn trace_request(spans: &[Span]) -> ExportTraceServiceRequest {
    let groups = group_by_resource(spans.iter().map(|span| (&span.resource, otlp_span(span))));
    ExportTraceServiceRequest {
        resource_spans: groups
            .into_iter()
            .map(|(resource, spans)| ResourceSpans {
                resource: Some(otlp_resource(resource)),
                scope_spans: vec![ScopeSpans {
                    scope: Some(scope()),
                    spans,
                    ..Default::default()
                }],
                ..Default::default()
            })
            .collect(),
    }
}

/// One OTLP metrics request: per resource, one histogram `Metric` per [`DurationMetric`]
/// present (DELTA temporality, bounds [`DURATION_BUCKETS_S`]), one data point per series.
pub fn metrics_request(series: &[HistogramSeries]) -> ExportMetricsServiceRequest {
    let groups = group_by_resource(series.iter().map(|series| (&series.resource, series)));
    ExportMetricsServiceRequest {
        resource_metrics: groups
            .into_iter()
            .map(|(resource, series)| ResourceMetrics {
                resource: Some(otlp_resource(resource)),
                scope_metrics: vec![ScopeMetrics {
                    scope: Some(scope()),
                    metrics: histograms(&series),
                    ..Default::default()
                }],
                ..Default::default()
            })
            .collect(),
    }
}

/// Groups items by resource content, groups and items in order of first appearance.
fn group_by_resource<'a, T>(
    items: impl Iterator<Item = (&'a Arc<Resource>, T)>,
) -> Vec<(&'a Resource, Vec<T>)> {
    let mut index: HashMap<&Resource, usize> = HashMap::new();
    let mut groups: Vec<(&Resource, Vec<T>)> = Vec::new();
    for (resource, item) in items {
        let at = *index.entry(resource.as_ref()).or_insert_with(|| {
            groups.push((resource.as_ref(), Vec::new()));
            groups.len() - 1
        });
        groups[at].1.push(item);
    }
    groups
}

fn scope() -> InstrumentationScope {
    InstrumentationScope {
        name: SCOPE_NAME.to_string(),
        version: env!("CARGO_PKG_VERSION").to_string(),
        ..Default::default()
    }
}

fn otlp_resource(resource: &Resource) -> OtlpResource {
    OtlpResource {
        attributes: key_values(&resource.attributes),
        ..Default::default()
    }
}

fn key_values(attributes: &[Attribute]) -> Vec<KeyValue> {
    attributes
        .iter()
        .map(|(key, value)| KeyValue {
            key: key.clone(),
            value: Some(any_value(value)),
            ..Default::default()
        })
        .collect()
}

fn any_value(value: &AttrValue) -> AnyValue {
    let value = match value {
        AttrValue::Str(text) => any_value::Value::StringValue(text.clone()),
        AttrValue::Int(number) => any_value::Value::IntValue(*number),
        AttrValue::Bool(flag) => any_value::Value::BoolValue(*flag),
    };
    AnyValue { value: Some(value) }
}

fn otlp_span(span: &Span) -> OtlpSpan {
    let kind = match span.kind {
        SpanKind::Server => OtlpSpanKind::Server,
        SpanKind::Client => OtlpSpanKind::Client,
    };
    // Whether the parent is remote: a SERVER span's parent comes from the caller's
    // `traceparent`, a CLIENT span's parent is the server span of the same process.
    let flags = match (span.parent_span_id, span.kind) {
        (None, _) => 0,
        (Some(_), SpanKind::Server) => {
            SpanFlags::ContextHasIsRemoteMask as u32 | SpanFlags::ContextIsRemoteMask as u32
        }
        (Some(_), SpanKind::Client) => SpanFlags::ContextHasIsRemoteMask as u32,
    };
    let code = if span.error {
        StatusCode::Error
    } else {
        StatusCode::Unset
    };
    OtlpSpan {
        trace_id: span.trace_id.to_vec(),
        span_id: span.span_id.to_vec(),
        parent_span_id: span.parent_span_id.map_or_else(Vec::new, |id| id.to_vec()),
        flags,
        name: span.name.clone(),
        kind: kind as i32,
        start_time_unix_nano: span.start_unix_ns,
        end_time_unix_nano: span.end_unix_ns,
        attributes: key_values(&span.attributes),
        status: Some(Status {
            code: code as i32,
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn histograms(series: &[&HistogramSeries]) -> Vec<Metric> {
    DurationMetric::ALL
        .iter()
        .filter_map(|&metric| {
            let data_points: Vec<HistogramDataPoint> = series
                .iter()
                .filter(|series| series.metric == metric)
                .map(|series| data_point(series))
                .collect();
            if data_points.is_empty() {
                return None;
            }
            Some(Metric {
                name: metric.name().to_string(),
                description: metric.description().to_string(),
                unit: metric.unit().to_string(),
                data: Some(metric::Data::Histogram(Histogram {
                    data_points,
                    aggregation_temporality: AggregationTemporality::Delta as i32,
                })),
                ..Default::default()
            })
        })
        .collect()
}

fn data_point(series: &HistogramSeries) -> HistogramDataPoint {
    let observed = series.count > 0;
    HistogramDataPoint {
        attributes: key_values(&series.attributes),
        start_time_unix_nano: series.start_unix_ns,
        time_unix_nano: series.end_unix_ns,
        count: series.count,
        sum: Some(series.sum_s),
        bucket_counts: series.bucket_counts.clone(),
        explicit_bounds: DURATION_BUCKETS_S.to_vec(),
        min: observed.then_some(series.min_s),
        max: observed.then_some(series.max_s),
        ..Default::default()
    }
}

// ---------------------------------------------------------------------------------------------
// The exporter.

/// How to reach the receiver and how much to buffer.
#[derive(Clone)]
pub struct OtlpOptions {
    /// `http://host:port` of an OTLP/gRPC receiver (port 4317 by convention).
    pub endpoint: String,
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
    metric_batches: VecDeque<Vec<HistogramSeries>>,
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
        let endpoint = endpoint(&options.endpoint)?;
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
        let mut queue = self.shared.lock();
        queue.metric_batches.push_back(series);
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

/// Parses `http://host:port` into a tonic endpoint with the exporter's timeouts.
fn endpoint(text: &str) -> Result<Endpoint, OtlpError> {
    let invalid = |reason: &str| OtlpError::InvalidEndpoint {
        endpoint: text.to_string(),
        reason: reason.to_string(),
    };
    let scheme = text.split_once("://").map(|(scheme, _)| scheme);
    match scheme {
        Some(scheme) if scheme.eq_ignore_ascii_case("http") => {}
        Some(scheme) if scheme.eq_ignore_ascii_case("https") => {
            return Err(invalid(
                "TLS is not supported yet: use http:// (e.g. an OTel Collector on the node, \
                 which can forward over TLS)",
            ))
        }
        _ => {
            return Err(invalid(
                "expected http://host:port, e.g. http://localhost:4317",
            ))
        }
    }
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
    let endpoint = Endpoint::from(uri)
        .connect_timeout(CONNECT_TIMEOUT)
        .timeout(REQUEST_TIMEOUT)
        .user_agent(format!("{SCOPE_NAME}/{}", env!("CARGO_PKG_VERSION")))
        .map_err(|_| invalid("cannot build the user agent"))?;
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
        if let Some(series) = series {
            self.points = Some(InFlight::new(metrics_request(&series), series.len()));
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
fn take_metric_batch(queue: &mut Queue) -> Option<Vec<HistogramSeries>> {
    let mut batch = queue.metric_batches.pop_front()?;
    if batch.len() > MAX_METRIC_POINTS_PER_REQUEST {
        let rest = batch.split_off(MAX_METRIC_POINTS_PER_REQUEST);
        queue.metric_batches.push_front(rest);
    }
    Some(batch)
}

#[cfg(test)]
mod tests {
    use std::sync::mpsc;

    use opentelemetry_proto::tonic::collector::{
        metrics::v1::{
            metrics_service_server::{MetricsService, MetricsServiceServer},
            ExportMetricsPartialSuccess, ExportMetricsServiceResponse,
        },
        trace::v1::{
            trace_service_server::{TraceService, TraceServiceServer},
            ExportTracePartialSuccess, ExportTraceServiceResponse,
        },
    };
    use tonic::transport::server::TcpIncoming;

    use super::*;
    use crate::capture::red::BUCKET_COUNT;

    fn resource(service: &str) -> Arc<Resource> {
        Arc::new(Resource {
            service_name: service.to_string(),
            attributes: vec![
                ("process.pid".into(), AttrValue::Int(42)),
                ("service.name".into(), AttrValue::Str(service.into())),
            ],
        })
    }

    fn span(resource: &Arc<Resource>, kind: SpanKind, n: u8) -> Span {
        Span {
            resource: Arc::clone(resource),
            kind,
            trace_id: [n; 16],
            span_id: [n; 8],
            parent_span_id: n.is_multiple_of(2).then_some([n + 100; 8]),
            name: "GET /users/{id}".into(),
            start_unix_ns: 1_000_000 + u64::from(n),
            end_unix_ns: 2_000_000 + u64::from(n),
            attributes: vec![
                ("http.request.method".into(), AttrValue::Str("GET".into())),
                ("http.response.status_code".into(), AttrValue::Int(500)),
                ("network.peer.local".into(), AttrValue::Bool(true)),
            ],
            error: n.is_multiple_of(3),
        }
    }

    fn spans(count: u8) -> Vec<Span> {
        let (a, b) = (resource("a"), resource("b"));
        (0..count)
            .map(|n| {
                let resource = if n % 2 == 0 { &a } else { &b };
                let kind = if n % 4 < 2 {
                    SpanKind::Server
                } else {
                    SpanKind::Client
                };
                span(resource, kind, n)
            })
            .collect()
    }

    fn series(resource: &Arc<Resource>, metric: DurationMetric, route: &str) -> HistogramSeries {
        let mut bucket_counts = vec![0; BUCKET_COUNT];
        bucket_counts[0] = 2;
        bucket_counts[9] = 1;
        HistogramSeries {
            resource: Arc::clone(resource),
            metric,
            attributes: vec![("http.route".into(), AttrValue::Str(route.into()))],
            start_unix_ns: 10,
            end_unix_ns: 20,
            count: 3,
            sum_s: 1.008,
            min_s: 0.003,
            max_s: 1.0,
            bucket_counts,
        }
    }

    fn string(value: &str) -> Option<AnyValue> {
        Some(AnyValue {
            value: Some(any_value::Value::StringValue(value.into())),
        })
    }

    #[test]
    fn converts_spans_grouped_by_resource() {
        let spans = spans(4);
        let request = trace_request(&spans);
        assert_eq!(request.resource_spans.len(), 2);
        let first = &request.resource_spans[0];
        let resource = first.resource.as_ref().expect("resource");
        assert_eq!(resource.attributes[1].key, "service.name");
        assert_eq!(resource.attributes[1].value, string("a"));
        assert_eq!(first.scope_spans.len(), 1);
        let scope = first.scope_spans[0].scope.as_ref().expect("scope");
        assert_eq!(
            (scope.name.as_str(), scope.version.as_str()),
            ("profiler-agent", env!("CARGO_PKG_VERSION"))
        );
        // Spans 0 and 2 belong to "a", in order.
        let otlp = &first.scope_spans[0].spans;
        assert_eq!(otlp.len(), 2);
        let (server, client) = (&otlp[0], &otlp[1]);
        assert_eq!(server.trace_id, vec![0; 16]);
        assert_eq!(server.span_id, vec![0; 8]);
        assert_eq!(server.parent_span_id, vec![100; 8]);
        assert_eq!(server.kind, OtlpSpanKind::Server as i32);
        assert_eq!(server.flags, 0x300, "server parents are remote");
        assert_eq!(server.name, "GET /users/{id}");
        assert_eq!(
            (server.start_time_unix_nano, server.end_time_unix_nano),
            (1_000_000, 2_000_000)
        );
        assert_eq!(
            server.status.as_ref().map(|s| s.code),
            Some(StatusCode::Error as i32)
        );
        let values: Vec<(&str, Option<&any_value::Value>)> = server
            .attributes
            .iter()
            .map(|kv| {
                (
                    kv.key.as_str(),
                    kv.value.as_ref().and_then(|v| v.value.as_ref()),
                )
            })
            .collect();
        assert_eq!(
            values,
            vec![
                (
                    "http.request.method",
                    Some(&any_value::Value::StringValue("GET".into()))
                ),
                (
                    "http.response.status_code",
                    Some(&any_value::Value::IntValue(500))
                ),
                (
                    "network.peer.local",
                    Some(&any_value::Value::BoolValue(true))
                ),
            ]
        );
        assert_eq!(client.span_id, vec![2; 8]);
        assert_eq!(client.kind, OtlpSpanKind::Client as i32);
        assert_eq!(client.flags, 0x100, "client parents are local");
        assert_eq!(
            client.status.as_ref().map(|s| s.code),
            Some(StatusCode::Unset as i32)
        );
        // Span 1 ("b"): no parent.
        let orphan = &request.resource_spans[1].scope_spans[0].spans[0];
        assert!(orphan.parent_span_id.is_empty());
        assert_eq!(orphan.flags, 0);
        assert!(trace_request(&[]).resource_spans.is_empty());
    }

    #[test]
    fn converts_histograms_grouped_by_resource_and_metric() {
        let (a, b) = (resource("a"), resource("b"));
        let request = metrics_request(&[
            series(&a, DurationMetric::HttpClient, "/x"),
            series(&b, DurationMetric::HttpServer, "/y"),
            series(&a, DurationMetric::HttpServer, "/z"),
            series(&a, DurationMetric::HttpClient, "/w"),
        ]);
        assert_eq!(request.resource_metrics.len(), 2);
        let scope_metrics = &request.resource_metrics[0].scope_metrics;
        assert_eq!(scope_metrics.len(), 1);
        assert_eq!(
            scope_metrics[0].scope.as_ref().map(|s| s.name.as_str()),
            Some("profiler-agent")
        );
        let metrics = &scope_metrics[0].metrics;
        let names: Vec<&str> = metrics.iter().map(|m| m.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "http.server.request.duration",
                "http.client.request.duration"
            ]
        );
        assert!(metrics.iter().all(|m| m.unit == "s"));
        let Some(metric::Data::Histogram(client)) = &metrics[1].data else {
            panic!("not a histogram: {:?}", metrics[1].data);
        };
        assert_eq!(
            client.aggregation_temporality,
            AggregationTemporality::Delta as i32
        );
        assert_eq!(client.data_points.len(), 2);
        let point = &client.data_points[0];
        assert_eq!(point.attributes[0].value, string("/x"));
        assert_eq!((point.start_time_unix_nano, point.time_unix_nano), (10, 20));
        assert_eq!(point.count, 3);
        assert_eq!(
            (point.sum, point.min, point.max),
            (Some(1.008), Some(0.003), Some(1.0))
        );
        assert_eq!(point.explicit_bounds, DURATION_BUCKETS_S.to_vec());
        assert_eq!(point.bucket_counts.len(), point.explicit_bounds.len() + 1);
        assert_eq!(point.bucket_counts[0], 2);
        assert_eq!(point.bucket_counts[9], 1);
        assert_eq!(client.data_points[1].attributes[0].value, string("/w"));
    }

    #[test]
    fn parses_endpoints() {
        for good in [
            "http://127.0.0.1:4317",
            "http://collector.observability.svc:4317/",
            "HTTP://[::1]:4317",
            "http://[::1]:4317/",
        ] {
            if let Err(error) = endpoint(good) {
                panic!("{good}: {error}");
            }
        }
        let error = |text: &str| match endpoint(text) {
            Ok(_) => panic!("{text} accepted"),
            Err(error) => error.to_string(),
        };
        assert!(error("https://collector:4317").contains("TLS is not supported yet"));
        assert!(error("collector:4317").contains("expected http://host:port"));
        assert!(error("garbage").contains("expected http://host:port"));
        assert!(error("http://").contains("http://host:port"));
        assert!(error("http://collector").contains("port is missing"));
        assert!(error("http://[::1]").contains("port is missing"));
        assert!(error("http://collector:port").contains("port is not a number"));
        assert!(error("http://collector:0").contains("port is not a number"));
        assert!(error("http://collector:99999").contains("port is not a number"));
        assert!(error("http://bad host:4317").contains("not a valid URL"));
        assert!(error("http://user@collector:4317").contains("user info"));
        assert!(error("http://collector:4317/v1/traces").contains("no path"));
        let options = |change: fn(&mut OtlpOptions)| {
            let mut options = OtlpOptions::new("http://127.0.0.1:4317");
            change(&mut options);
            OtlpExporter::start(options).err().map(|e| e.to_string())
        };
        assert_eq!(
            options(|o| o.batch_size = 0).as_deref(),
            Some("OTLP option `batch_size` must be greater than zero")
        );
        assert!(options(|o| o.auth_token = Some("bad\ntoken".into()))
            .is_some_and(|e| e.contains("auth token")));
        let debug = format!("{:?}", {
            let mut o = OtlpOptions::new("http://h:1");
            o.auth_token = Some("s3cret".into());
            o
        });
        assert!(!debug.contains("s3cret"), "{debug}");
    }

    // -- An in-process OTLP receiver -----------------------------------------------------------

    /// How the receiver answers: the scripted answers first, then `then`.
    #[derive(Clone, Copy, Debug)]
    enum Answer {
        Accept,
        /// Accept, reporting this many items refused.
        Partial(i64),
        Fail(Code),
    }

    #[derive(Default)]
    struct Received {
        traces: Vec<ExportTraceServiceRequest>,
        metrics: Vec<ExportMetricsServiceRequest>,
        /// `authorization` and `grpc-encoding` of every request.
        headers: Vec<(Option<String>, Option<String>)>,
    }

    struct Collector {
        script: Mutex<VecDeque<Answer>>,
        then: Answer,
        received: Arc<Mutex<Received>>,
    }

    impl Collector {
        fn answer<T>(&self, request: &tonic::Request<T>) -> Answer {
            let header = |name| {
                request
                    .metadata()
                    .get(name)
                    .and_then(|value| value.to_str().ok())
                    .map(String::from)
            };
            self.received
                .lock()
                .expect("received")
                .headers
                .push((header("authorization"), header("grpc-encoding")));
            self.script
                .lock()
                .expect("script")
                .pop_front()
                .unwrap_or(self.then)
        }
    }

    #[tonic::async_trait]
    impl TraceService for Collector {
        async fn export(
            &self,
            request: tonic::Request<ExportTraceServiceRequest>,
        ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
            let answer = self.answer(&request);
            let request = request.into_inner();
            self.received.lock().expect("received").traces.push(request);
            match answer {
                Answer::Accept => Ok(tonic::Response::new(ExportTraceServiceResponse::default())),
                Answer::Partial(rejected_spans) => {
                    Ok(tonic::Response::new(ExportTraceServiceResponse {
                        partial_success: Some(ExportTracePartialSuccess {
                            rejected_spans,
                            error_message: "too old".into(),
                        }),
                    }))
                }
                Answer::Fail(code) => Err(tonic::Status::new(code, "test receiver says no")),
            }
        }
    }

    #[tonic::async_trait]
    impl MetricsService for Collector {
        async fn export(
            &self,
            request: tonic::Request<ExportMetricsServiceRequest>,
        ) -> Result<tonic::Response<ExportMetricsServiceResponse>, tonic::Status> {
            let answer = self.answer(&request);
            let request = request.into_inner();
            self.received
                .lock()
                .expect("received")
                .metrics
                .push(request);
            match answer {
                Answer::Accept => Ok(tonic::Response::new(ExportMetricsServiceResponse::default())),
                Answer::Partial(rejected_data_points) => {
                    Ok(tonic::Response::new(ExportMetricsServiceResponse {
                        partial_success: Some(ExportMetricsPartialSuccess {
                            rejected_data_points,
                            error_message: "too old".into(),
                        }),
                    }))
                }
                Answer::Fail(code) => Err(tonic::Status::new(code, "test receiver says no")),
            }
        }
    }

    /// A tonic OTLP receiver on 127.0.0.1, on its own thread and runtime.
    struct Receiver {
        port: u16,
        received: Arc<Mutex<Received>>,
        stop: Option<tokio::sync::oneshot::Sender<()>>,
        thread: Option<JoinHandle<()>>,
    }

    impl Receiver {
        /// Listens on `port` (0: any free port).
        fn start(port: u16, script: &[Answer], then: Answer) -> Receiver {
            let received = Arc::new(Mutex::new(Received::default()));
            let collector = Arc::new(Collector {
                script: Mutex::new(script.iter().copied().collect()),
                then,
                received: Arc::clone(&received),
            });
            let (port_sender, port_receiver) = mpsc::channel();
            let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
            let thread = thread::spawn(move || {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("receiver runtime");
                runtime.block_on(async move {
                    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
                        .await
                        .unwrap_or_else(|e| panic!("binding the receiver to port {port}: {e}"));
                    let port = listener.local_addr().expect("receiver address").port();
                    port_sender.send(port).expect("sending the receiver port");
                    tonic::transport::Server::builder()
                        .add_service(
                            TraceServiceServer::from_arc(Arc::clone(&collector))
                                .accept_compressed(CompressionEncoding::Gzip),
                        )
                        .add_service(
                            MetricsServiceServer::from_arc(collector)
                                .accept_compressed(CompressionEncoding::Gzip),
                        )
                        .serve_with_incoming_shutdown(TcpIncoming::from(listener), async {
                            let _ = stopped.await;
                        })
                        .await
                        .expect("receiver");
                });
            });
            let port = port_receiver.recv().expect("receiver port");
            Receiver {
                port,
                received,
                stop: Some(stop),
                thread: Some(thread),
            }
        }

        fn endpoint(&self) -> String {
            format!("http://127.0.0.1:{}", self.port)
        }

        fn received(&self) -> MutexGuard<'_, Received> {
            self.received.lock().expect("received")
        }
    }

    impl Drop for Receiver {
        fn drop(&mut self) {
            if let Some(stop) = self.stop.take() {
                let _ = stop.send(());
            }
            if let Some(thread) = self.thread.take() {
                let _ = thread.join();
            }
        }
    }

    /// A loopback port with nothing listening (free when this returns).
    fn free_port() -> u16 {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        listener.local_addr().expect("address").port()
    }

    fn options(endpoint: String) -> OtlpOptions {
        OtlpOptions {
            batch_size: 4,
            flush_interval: Duration::from_millis(20),
            ..OtlpOptions::new(endpoint)
        }
    }

    fn load(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
    }

    /// Polls `done` for up to 20 s, panicking with `what` (and the stats) on timeout.
    fn wait_until(what: &str, exporter: &OtlpExporter, mut done: impl FnMut() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while !done() {
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {what}; stats: {:?}",
                exporter.stats()
            );
            thread::sleep(Duration::from_millis(10));
        }
    }

    /// (service name, span) of every span of `requests`, in order.
    fn flatten(requests: &[ExportTraceServiceRequest]) -> Vec<(Option<AnyValue>, OtlpSpan)> {
        let mut out = Vec::new();
        for request in requests {
            for resource_spans in &request.resource_spans {
                let resource = resource_spans.resource.as_ref().expect("resource");
                let service = resource
                    .attributes
                    .iter()
                    .find(|kv| kv.key == "service.name")
                    .and_then(|kv| kv.value.clone());
                for scope_spans in &resource_spans.scope_spans {
                    for span in &scope_spans.spans {
                        out.push((service.clone(), span.clone()));
                    }
                }
            }
        }
        out
    }

    #[test]
    fn exports_spans_and_metrics_to_a_receiver() {
        let receiver = Receiver::start(0, &[], Answer::Accept);
        let mut options = options(receiver.endpoint());
        options.auth_token = Some("s3cret".into());
        let exporter = OtlpExporter::start(options).expect("start");
        let spans = spans(10);
        let (a, b) = (resource("a"), resource("b"));
        let series = vec![
            series(&a, DurationMetric::HttpServer, "/x"),
            series(&b, DurationMetric::HttpClient, "/y"),
        ];
        exporter.push_spans(spans.clone());
        exporter.push_metrics(series.clone());
        wait_until("every span and point", &exporter, || {
            load(&exporter.stats().spans_sent) == 10
                && load(&exporter.stats().metric_points_sent) == 2
        });
        let stats = exporter.stats();
        assert_eq!(load(&stats.export_errors), 0);
        assert_eq!(load(&stats.spans_dropped_queue_full), 0);
        assert_eq!(exporter.shutdown(Duration::from_secs(5)), (10, 0));

        let received = receiver.received();
        // Batches of at most 4 spans: 4, 4, 2.
        let sizes: Vec<usize> = received
            .traces
            .iter()
            .map(|request| flatten(std::slice::from_ref(request)).len())
            .collect();
        assert_eq!(sizes, [4, 4, 2]);
        // Batches group spans by resource, so compare in span id order.
        let by_id = |mut spans: Vec<(Option<AnyValue>, OtlpSpan)>| {
            spans.sort_by(|a, b| a.1.span_id.cmp(&b.1.span_id));
            spans
        };
        assert_eq!(
            by_id(flatten(&received.traces)),
            by_id(flatten(&[trace_request(&spans)]))
        );
        assert_eq!(received.metrics, vec![metrics_request(&series)]);
        let Some(metric::Data::Histogram(histogram)) =
            &received.metrics[0].resource_metrics[0].scope_metrics[0].metrics[0].data
        else {
            panic!("not a histogram");
        };
        assert_eq!(
            histogram.data_points[0].bucket_counts,
            series[0].bucket_counts
        );
        assert_eq!(received.headers.len(), 4);
        for (authorization, encoding) in &received.headers {
            assert_eq!(authorization.as_deref(), Some("Bearer s3cret"));
            assert_eq!(encoding.as_deref(), Some("gzip"));
        }
    }

    #[test]
    fn counts_drops_while_the_receiver_is_down_and_delivers_once_it_is_up() {
        let port = free_port();
        let mut options = options(format!("http://127.0.0.1:{port}"));
        options.max_queued_spans = 8;
        options.gzip = false;
        let exporter = OtlpExporter::start(options).expect("start");
        let stats = exporter.stats_handle();
        let first = spans(20);
        exporter.push_spans(first.clone());
        // Twelve over the bound: the oldest go.
        assert_eq!(load(&exporter.stats().spans_dropped_queue_full), 12);
        wait_until("two failed attempts", &exporter, || {
            load(&exporter.stats().export_errors) >= 2
        });
        // Pushing does not wait for the receiver.
        let started = Instant::now();
        for _ in 0..1_000 {
            exporter.push_spans(spans(1));
        }
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "pushing took {:?}",
            started.elapsed()
        );
        assert_eq!(exporter.queued_spans(), 8);
        assert_eq!(load(&exporter.stats().spans_sent), 0);

        let receiver = Receiver::start(port, &[], Answer::Accept);
        wait_until("the queue to drain", &exporter, || {
            exporter.queued_spans() == 0 && load(&exporter.stats().spans_sent) >= 8
        });
        let (sent, unsent) = exporter.shutdown(Duration::from_secs(5));
        assert_eq!(unsent, 0);
        let dropped = load(&stats.spans_dropped_queue_full);
        assert_eq!(sent + dropped, 1_020, "every span is sent or counted");
        let received = flatten(&receiver.received().traces);
        assert_eq!(received.len() as u64, sent);
        // The batch retried across the outage went first: the 4 oldest spans the bound kept
        // (grouped by resource inside the request, hence the sort).
        let mut first_ids: Vec<Vec<u8>> = received[..4]
            .iter()
            .map(|(_, s)| s.span_id.clone())
            .collect();
        first_ids.sort();
        let expected: Vec<Vec<u8>> = first[12..16].iter().map(|s| s.span_id.to_vec()).collect();
        assert_eq!(first_ids, expected);
    }

    #[test]
    fn drops_batches_the_receiver_rejects_without_retrying() {
        let receiver = Receiver::start(0, &[], Answer::Fail(Code::InvalidArgument));
        let exporter = OtlpExporter::start(options(receiver.endpoint())).expect("start");
        exporter.push_spans(spans(10));
        exporter.push_metrics(vec![series(
            &resource("a"),
            DurationMetric::RpcServer,
            "/x",
        )]);
        wait_until("the rejections", &exporter, || {
            load(&exporter.stats().spans_dropped_rejected) == 10
                && load(&exporter.stats().metric_points_rejected) == 1
        });
        let stats = exporter.stats();
        assert_eq!(load(&stats.export_errors), 4);
        assert_eq!(load(&stats.spans_sent), 0);
        assert_eq!(load(&stats.metric_points_sent), 0);
        assert_eq!(exporter.shutdown(Duration::from_secs(5)), (0, 0));
        let received = receiver.received();
        assert_eq!((received.traces.len(), received.metrics.len()), (3, 1));
    }

    #[test]
    fn retries_retryable_errors_and_counts_partial_rejections() {
        let receiver = Receiver::start(
            0,
            &[Answer::Fail(Code::Unavailable), Answer::Partial(1)],
            Answer::Partial(1),
        );
        let mut options = options(receiver.endpoint());
        options.batch_size = 512;
        let exporter = OtlpExporter::start(options).expect("start");
        exporter.push_spans(spans(10));
        wait_until("the retry", &exporter, || {
            load(&exporter.stats().spans_sent) == 9
        });
        let stats = exporter.stats();
        assert_eq!(load(&stats.spans_dropped_rejected), 1);
        assert_eq!(load(&stats.export_errors), 1);
        assert_eq!(exporter.shutdown(Duration::from_secs(5)), (9, 0));
        let received = receiver.received();
        assert_eq!(received.traces.len(), 2);
        assert_eq!(
            received.traces[0], received.traces[1],
            "the same batch again"
        );
    }

    #[test]
    fn shutdown_gives_up_at_the_timeout_and_reports_unsent_spans() {
        let exporter = OtlpExporter::start(options(format!("http://127.0.0.1:{}", free_port())))
            .expect("start");
        exporter.push_spans(spans(10));
        exporter.push_metrics(vec![series(
            &resource("a"),
            DurationMetric::HttpServer,
            "/",
        )]);
        assert_eq!(exporter.shutdown(Duration::from_millis(300)), (0, 10));
        // Dropping without shutdown stops the thread too.
        let exporter = OtlpExporter::start(options(format!("http://127.0.0.1:{}", free_port())))
            .expect("start");
        exporter.push_spans(spans(3));
        drop(exporter);
    }
}
