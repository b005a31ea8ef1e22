//! The capture's model → OTLP requests (pure).

use std::{collections::HashMap, sync::Arc};

use opentelemetry_proto::tonic::{
    collector::{metrics::v1::ExportMetricsServiceRequest, trace::v1::ExportTraceServiceRequest},
    common::v1::{any_value, AnyValue, InstrumentationScope, KeyValue},
    metrics::v1::{
        metric, number_data_point, AggregationTemporality, Gauge, Histogram, HistogramDataPoint,
        Metric, NumberDataPoint, ResourceMetrics, ScopeMetrics, Sum,
    },
    resource::v1::Resource as OtlpResource,
    trace::v1::{
        span::SpanKind as OtlpSpanKind, status::StatusCode, ResourceSpans, ScopeSpans,
        Span as OtlpSpan, SpanFlags, Status,
    },
};

use crate::{
    capture::{
        red::{DurationMetric, HistogramSeries, DURATION_BUCKETS_S},
        span::{AttrValue, Attribute, Resource, Span, SpanKind},
    },
    telemetry::{MetricKind, SelfMetric},
};

use super::SCOPE_NAME;

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

/// The agent's own metrics (`telemetry::agent_metrics`) as one request: counters become
/// cumulative monotonic sums since `start_unix_ns` (the agent's start), gauges gauges. Returns
/// the request and its number of data points.
pub fn self_metrics_request(
    resource: &Resource,
    metrics: &[SelfMetric],
    start_unix_ns: u64,
    now_unix_ns: u64,
) -> (ExportMetricsServiceRequest, usize) {
    let mut out: Vec<Metric> = Vec::new();
    for sample in metrics {
        let point = NumberDataPoint {
            attributes: sample
                .labels
                .iter()
                .map(|(key, value)| KeyValue {
                    key: key.clone(),
                    value: Some(any_value(&AttrValue::Str(value.clone()))),
                    ..Default::default()
                })
                .collect(),
            start_time_unix_nano: start_unix_ns,
            time_unix_nano: now_unix_ns,
            value: Some(number_data_point::Value::AsDouble(sample.value)),
            ..Default::default()
        };
        // Samples of one metric are next to each other: extend the last metric when it is the
        // same one.
        if let Some(last) = out.last_mut().filter(|m| m.name == sample.name) {
            match &mut last.data {
                Some(metric::Data::Sum(sum)) => sum.data_points.push(point),
                Some(metric::Data::Gauge(gauge)) => gauge.data_points.push(point),
                _ => {}
            }
            continue;
        }
        let data = match sample.kind {
            MetricKind::Counter => metric::Data::Sum(Sum {
                data_points: vec![point],
                aggregation_temporality: AggregationTemporality::Cumulative as i32,
                is_monotonic: true,
            }),
            MetricKind::Gauge => metric::Data::Gauge(Gauge {
                data_points: vec![point],
            }),
        };
        out.push(Metric {
            name: sample.name.to_string(),
            description: sample.help.clone(),
            data: Some(data),
            ..Default::default()
        });
    }
    let request = ExportMetricsServiceRequest {
        resource_metrics: vec![ResourceMetrics {
            resource: Some(otlp_resource(resource)),
            scope_metrics: vec![ScopeMetrics {
                scope: Some(scope()),
                metrics: out,
                ..Default::default()
            }],
            ..Default::default()
        }],
    };
    (request, metrics.len())
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
            key: key.to_string(),
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
