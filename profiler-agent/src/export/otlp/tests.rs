//! Tests of the OTLP conversions and of the exporter against an in-process receiver.

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

use opentelemetry_proto::tonic::{
    common::v1::{any_value, AnyValue},
    metrics::v1::{metric, AggregationTemporality},
    trace::v1::{span::SpanKind as OtlpSpanKind, status::StatusCode, Span as OtlpSpan},
};

use super::*;
use crate::capture::{
    red::{DurationMetric, BUCKET_COUNT, DURATION_BUCKETS_S},
    span::{AttrValue, Resource, SpanKind},
};

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
        if let Err(error) = endpoint(good, None) {
            panic!("{good}: {error}");
        }
    }
    let ca = crate::tls::tests::ca_file("otlp-parse");
    endpoint("https://collector.example.com:4317", Some(&ca)).expect("https with a CA file");
    let error = |text: &str| match endpoint(text, None) {
        Ok(_) => panic!("{text} accepted"),
        Err(error) => error.to_string(),
    };
    let missing = endpoint("https://c:4317", Some(Path::new("/nonexistent/ca.crt")))
        .err()
        .map(|error| error.to_string());
    assert!(
        missing
            .as_deref()
            .is_some_and(|e| e.contains("/nonexistent/ca.crt")),
        "{missing:?}"
    );
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
        Receiver::start_with(port, script, then, false)
    }

    /// As [`Receiver::start`], over TLS with the test CA's certificate when `tls`.
    fn start_with(port: u16, script: &[Answer], then: Answer, tls: bool) -> Receiver {
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
                let mut server = tonic::transport::Server::builder();
                if tls {
                    server = server
                        .tls_config(tonic::transport::ServerTlsConfig::new().identity(
                            tonic::transport::Identity::from_pem(
                                crate::tls::tests::SERVER_CERT,
                                crate::tls::tests::SERVER_KEY,
                            ),
                        ))
                        .expect("receiver TLS");
                }
                server
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
fn exports_over_tls_to_a_receiver_the_ca_vouches_for() {
    let receiver = Receiver::start_with(0, &[], Answer::Accept, true);
    let mut options = options(format!("https://localhost:{}", receiver.port));
    options.ca_file = Some(crate::tls::tests::ca_file("otlp"));
    let exporter = OtlpExporter::start(options).expect("start");
    exporter.push_spans(spans(3));
    wait_until("the spans over TLS", &exporter, || {
        load(&exporter.stats().spans_sent) == 3
    });
    assert_eq!(exporter.shutdown(Duration::from_secs(5)), (3, 0));
    assert_eq!(flatten(&receiver.received().traces).len(), 3);

    // Without the test CA (the system's CAs only), nothing gets through.
    let untrusted = OtlpExporter::start(options_for_system_roots(receiver.port)).expect("start");
    untrusted.push_spans(spans(1));
    wait_until("a failed attempt", &untrusted, || {
        load(&untrusted.stats().export_errors) >= 1
    });
    assert_eq!(load(&untrusted.stats().spans_sent), 0);
    untrusted.shutdown(Duration::ZERO);
}

/// Options for `https://localhost:port` trusting the system's CAs, or a CA that did not sign
/// the test certificate when the machine has no bundle.
fn options_for_system_roots(port: u16) -> OtlpOptions {
    let mut options = options(format!("https://localhost:{port}"));
    if crate::tls::system_ca_file().is_err() {
        let other = std::env::temp_dir().join(format!("profiler-other-ca-{}", std::process::id()));
        std::fs::write(&other, crate::tls::tests::SERVER_CERT).expect("write");
        options.ca_file = Some(other);
    }
    options
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
    let mut own = crate::telemetry::Exposition::default();
    own.counter("profiler_agent_samples_total", "Samples.", &[], 7);
    let (own_request, own_points) = self_metrics_request(&a, own.samples(), 1, 2);
    exporter.push_metrics_request(own_request.clone(), own_points);
    wait_until("every span and point", &exporter, || {
        load(&exporter.stats().spans_sent) == 10 && load(&exporter.stats().metric_points_sent) == 3
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
    assert_eq!(
        received.metrics,
        vec![metrics_request(&series), own_request]
    );
    let Some(metric::Data::Histogram(histogram)) =
        &received.metrics[0].resource_metrics[0].scope_metrics[0].metrics[0].data
    else {
        panic!("not a histogram");
    };
    assert_eq!(
        histogram.data_points[0].bucket_counts,
        series[0].bucket_counts
    );
    assert_eq!(
        received.headers.len(),
        5,
        "3 span requests, 2 metrics requests"
    );
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
    let exporter =
        OtlpExporter::start(options(format!("http://127.0.0.1:{}", free_port()))).expect("start");
    exporter.push_spans(spans(10));
    exporter.push_metrics(vec![series(
        &resource("a"),
        DurationMetric::HttpServer,
        "/",
    )]);
    assert_eq!(exporter.shutdown(Duration::from_millis(300)), (0, 10));
    // Dropping without shutdown stops the thread too.
    let exporter =
        OtlpExporter::start(options(format!("http://127.0.0.1:{}", free_port()))).expect("start");
    exporter.push_spans(spans(3));
    drop(exporter);
}

#[test]
fn converts_the_agents_own_metrics() {
    let mut metrics = crate::telemetry::Exposition::default();
    metrics.counter("profiler_agent_samples_total", "Samples.", &[], 7);
    metrics.counter(
        "profiler_agent_spans_total",
        "Spans.",
        &[("kind", "server")],
        3,
    );
    metrics.counter(
        "profiler_agent_spans_total",
        "Spans.",
        &[("kind", "client")],
        1,
    );
    metrics.gauge("profiler_agent_counts_map_fill_ratio", "Fill.", &[], 0.25);
    let resource = resource("profiler-agent");
    let (request, points) = self_metrics_request(&resource, metrics.samples(), 10, 20);
    assert_eq!(points, 4);
    let scope = &request.resource_metrics[0].scope_metrics[0];
    let names: Vec<&str> = scope.metrics.iter().map(|m| m.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "profiler_agent_samples_total",
            "profiler_agent_spans_total",
            "profiler_agent_counts_map_fill_ratio"
        ]
    );
    let Some(metric::Data::Sum(spans)) = &scope.metrics[1].data else {
        panic!("counters are sums: {:?}", scope.metrics[1]);
    };
    assert!(spans.is_monotonic);
    assert_eq!(
        spans.aggregation_temporality,
        AggregationTemporality::Cumulative as i32
    );
    assert_eq!(spans.data_points.len(), 2);
    assert_eq!(spans.data_points[0].start_time_unix_nano, 10);
    assert_eq!(spans.data_points[0].time_unix_nano, 20);
    assert!(matches!(
        scope.metrics[2].data,
        Some(metric::Data::Gauge(_))
    ));
}
