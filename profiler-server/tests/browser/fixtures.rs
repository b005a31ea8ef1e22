//! What the browser test sends: a pprof profile with span labels, the matching OTLP trace, and
//! OTLP request-duration histograms with a latency spike at that trace.

use opentelemetry_proto::tonic::{
    collector::{metrics::v1::ExportMetricsServiceRequest, trace::v1::ExportTraceServiceRequest},
    common::v1::{any_value, AnyValue, KeyValue},
    metrics::v1::{
        metric, AggregationTemporality, Histogram, HistogramDataPoint, Metric, ResourceMetrics,
        ScopeMetrics,
    },
    resource::v1::Resource,
    trace::v1::{span::SpanKind, status::StatusCode, ResourceSpans, ScopeSpans, Span, Status},
};
use profiler_pprof::proto;
use prost::Message;

pub const TRACE_ID: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
pub const ROOT_SPAN: &str = "00f067aa0ba902b7";
pub const WORK_SPAN: &str = "53995c3f42cd8ad8";
/// The function only the work span's samples run.
pub const SPAN_FUNCTION: &str = "checkout_compute_prices";
pub const SPAN_SAMPLES: i64 = 12;

fn hex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).expect("hex id"))
        .collect()
}

fn string_attribute(key: &str, value: &str) -> KeyValue {
    KeyValue {
        key: key.into(),
        value: Some(AnyValue {
            value: Some(any_value::Value::StringValue(value.into())),
        }),
        ..Default::default()
    }
}

fn checkout_resource() -> Option<Resource> {
    Some(Resource {
        attributes: vec![string_attribute("service.name", "checkout")],
        ..Default::default()
    })
}

/// The trace: a server span `POST /checkout` and its child `compute prices`.
pub fn trace_request(start_secs: u64) -> ExportTraceServiceRequest {
    let start = start_secs * 1_000_000_000;
    let span =
        |id: &str, parent: &str, name: &str, kind: SpanKind, from_ms: u64, to_ms: u64| Span {
            trace_id: hex(TRACE_ID),
            span_id: hex(id),
            parent_span_id: hex(parent),
            name: name.into(),
            kind: kind as i32,
            start_time_unix_nano: start + from_ms * 1_000_000,
            end_time_unix_nano: start + to_ms * 1_000_000,
            attributes: vec![
                string_attribute("http.route", "/checkout"),
                string_attribute("http.request.method", "POST"),
            ],
            status: Some(Status {
                code: StatusCode::Ok as i32,
                message: String::new(),
            }),
            ..Default::default()
        };
    ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: checkout_resource(),
            scope_spans: vec![ScopeSpans {
                spans: vec![
                    span(ROOT_SPAN, "", "POST /checkout", SpanKind::Server, 0, 180),
                    span(
                        WORK_SPAN,
                        ROOT_SPAN,
                        "compute prices",
                        SpanKind::Internal,
                        20,
                        150,
                    ),
                ],
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
}

/// Ten minutes of `http.server.request.duration` for checkout's `/checkout` in 15 s deltas (the
/// step of a 15-minute chart): about 20 ms, slower and with a 5xx in the 15 s of the traced
/// request.
pub fn red_request(now: u64, trace_start: u64) -> ExportMetricsServiceRequest {
    let bounds = vec![
        0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0,
    ];
    let mut points = Vec::new();
    let end_of_trace_step = trace_start - trace_start % 15 + 15;
    for i in 0..40 {
        let end = now - now % 15 - 15 * i;
        let spike = end == end_of_trace_step;
        let mut counts = vec![0u64; bounds.len() + 1];
        counts[2] = 40; // 10..25 ms
        counts[3] = 8;
        if spike {
            counts[6] = 6; // 100..250 ms
            counts[7] = 4;
        }
        for (status, counts) in [
            ("200", counts),
            ("500", vec![0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]),
        ] {
            if status == "500" && !spike {
                continue;
            }
            let count = counts.iter().sum();
            points.push(HistogramDataPoint {
                attributes: vec![
                    string_attribute("http.route", "/checkout"),
                    string_attribute("http.request.method", "POST"),
                    KeyValue {
                        key: "http.response.status_code".into(),
                        value: Some(AnyValue {
                            value: Some(any_value::Value::IntValue(
                                status.parse().expect("status"),
                            )),
                        }),
                        ..Default::default()
                    },
                ],
                start_time_unix_nano: (end - 15) * 1_000_000_000,
                time_unix_nano: end * 1_000_000_000,
                count,
                sum: Some(0.02 * count as f64),
                bucket_counts: counts,
                explicit_bounds: bounds.clone(),
                ..Default::default()
            });
        }
    }
    ExportMetricsServiceRequest {
        resource_metrics: vec![ResourceMetrics {
            resource: checkout_resource(),
            scope_metrics: vec![ScopeMetrics {
                metrics: vec![Metric {
                    name: "http.server.request.duration".into(),
                    unit: "s".into(),
                    data: Some(metric::Data::Histogram(Histogram {
                        data_points: points,
                        aggregation_temporality: AggregationTemporality::Delta as i32,
                    })),
                    ..Default::default()
                }],
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
}

/// A pprof profile of `checkout` around the traced request: 12 samples inside the work span (in
/// `checkout_compute_prices`), 3 in the root span only, 5 outside any span.
pub fn span_profile(trace_start: u64) -> Vec<u8> {
    let mut strings = vec![String::new()];
    let mut s = |text: &str| -> i64 {
        let index = strings.iter().position(|x| x == text).unwrap_or_else(|| {
            strings.push(text.to_string());
            strings.len() - 1
        });
        i64::try_from(index).expect("small string table")
    };
    let period = 10_101_010;
    let names = ["main", "handle_checkout", SPAN_FUNCTION, "idle_poll"];
    let function: Vec<_> = names
        .iter()
        .zip(1u64..)
        .map(|(name, id)| proto::Function {
            id,
            name: s(name),
            ..Default::default()
        })
        .collect();
    let location: Vec<_> = (1u64..=4)
        .map(|id| proto::Location {
            id,
            line: vec![proto::Line {
                function_id: id,
                ..Default::default()
            }],
            ..Default::default()
        })
        .collect();
    let (span_key, trace_key) = (s("span_id"), s("trace_id"));
    let (work, root, trace) = (s(WORK_SPAN), s(ROOT_SPAN), s(TRACE_ID));
    let labels = |span: i64| {
        vec![
            proto::Label {
                key: span_key,
                str: span,
                ..Default::default()
            },
            proto::Label {
                key: trace_key,
                str: trace,
                ..Default::default()
            },
        ]
    };
    let sample = |stack: &[u64], count: i64, label: Vec<proto::Label>| proto::Sample {
        location_id: stack.to_vec(),
        value: vec![count, count * period],
        label,
    };
    let sample_type = vec![
        proto::ValueType {
            r#type: s("samples"),
            unit: s("count"),
        },
        proto::ValueType {
            r#type: s("cpu"),
            unit: s("nanoseconds"),
        },
    ];
    let period_type = Some(proto::ValueType {
        r#type: s("cpu"),
        unit: s("nanoseconds"),
    });
    let profile = proto::Profile {
        sample_type,
        sample: vec![
            sample(&[3, 2, 1], SPAN_SAMPLES, labels(work)),
            sample(&[2, 1], 3, labels(root)),
            sample(&[4, 1], 5, Vec::new()),
        ],
        location,
        function,
        time_nanos: i64::try_from((trace_start - 10) * 1_000_000_000).expect("time fits"),
        duration_nanos: 20_000_000_000,
        period_type,
        period,
        string_table: strings,
        ..Default::default()
    };
    profile.encode_to_vec()
}
