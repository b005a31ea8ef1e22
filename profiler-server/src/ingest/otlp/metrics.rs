//! OTLP request-duration histograms → [`RedPoint`]s.
//!
//! Metrics used (OTel semantic conventions): `http.server.request.duration`,
//! `http.client.request.duration`, `rpc.server.call.duration`, `rpc.client.call.duration`
//! (and the older `http.server.duration`, `rpc.server.duration`, ... in milliseconds). Other
//! metrics are accepted and ignored, as are exponential histograms (not yet supported).

use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::common::v1::KeyValue;
use opentelemetry_proto::tonic::metrics::v1::{metric, AggregationTemporality, HistogramDataPoint};

use super::{attribute_int, attribute_string, service_name, time_ns, OtlpError};
use crate::model::{RedKey, RedPoint};

/// `(metric name, kind, default unit in seconds)` of the request-duration metrics.
const DURATION_METRICS: [(&str, &str, f64); 8] = [
    ("http.server.request.duration", "server", 1.0),
    ("http.client.request.duration", "client", 1.0),
    ("rpc.server.call.duration", "server", 1.0),
    ("rpc.client.call.duration", "client", 1.0),
    ("http.server.duration", "server", 0.001),
    ("http.client.duration", "client", 0.001),
    ("rpc.server.duration", "server", 0.001),
    ("rpc.client.duration", "client", 0.001),
];

/// Seconds per unit of a metric's unit string, `None` when unknown.
fn unit_seconds(unit: &str) -> Option<f64> {
    match unit {
        "s" => Some(1.0),
        "ms" => Some(0.001),
        "us" | "µs" => Some(0.000_001),
        "ns" => Some(0.000_000_001),
        _ => None,
    }
}

/// Converts the duration histograms of an export request.
pub fn convert(request: &ExportMetricsServiceRequest) -> Result<Vec<RedPoint>, OtlpError> {
    let mut out = Vec::new();
    for resource_metrics in &request.resource_metrics {
        let resource = resource_metrics.resource.as_ref();
        let service = service_name(resource);
        let resource_attributes = resource.map_or(&[][..], |r| &r.attributes[..]);
        for scope_metrics in &resource_metrics.scope_metrics {
            for metric in &scope_metrics.metrics {
                let Some(&(_, kind, default_unit)) = DURATION_METRICS
                    .iter()
                    .find(|(name, _, _)| *name == metric.name)
                else {
                    continue;
                };
                let Some(metric::Data::Histogram(histogram)) = &metric.data else {
                    continue;
                };
                let scale = unit_seconds(&metric.unit).unwrap_or(default_unit);
                let cumulative =
                    histogram.aggregation_temporality != AggregationTemporality::Delta as i32;
                for point in &histogram.data_points {
                    out.push(convert_point(
                        &metric.name,
                        kind,
                        scale,
                        cumulative,
                        &service,
                        resource_attributes,
                        point,
                    )?);
                }
            }
        }
    }
    Ok(out)
}

fn convert_point(
    metric: &str,
    kind: &str,
    scale: f64,
    cumulative: bool,
    service: &str,
    resource_attributes: &[KeyValue],
    point: &HistogramDataPoint,
) -> Result<RedPoint, OtlpError> {
    let attrs = &point.attributes[..];
    let bounds = &point.explicit_bounds;
    let counts = if point.bucket_counts.is_empty() {
        // A count-only point: one bucket, no bounds.
        if !bounds.is_empty() {
            return Err(OtlpError::new(format!(
                "{metric}: explicit_bounds without bucket_counts"
            )));
        }
        vec![point.count]
    } else {
        point.bucket_counts.clone()
    };
    if counts.len() != bounds.len() + 1 {
        return Err(OtlpError::new(format!(
            "{metric}: {} bucket counts for {} bounds (want bounds + 1)",
            counts.len(),
            bounds.len()
        )));
    }
    let ascending = bounds.windows(2).all(|w| w[0] < w[1]);
    if !ascending || bounds.iter().any(|b| !b.is_finite()) {
        return Err(OtlpError::new(format!(
            "{metric}: bounds must be finite and ascending"
        )));
    }
    let rpc = attribute_string(attrs, "rpc.system").is_some() || metric.starts_with("rpc.");
    let route = attribute_string(attrs, "http.route")
        .or_else(|| {
            let service = attribute_string(attrs, "rpc.service")?;
            let method = attribute_string(attrs, "rpc.method")?;
            Some(format!("{service}/{method}"))
        })
        .unwrap_or_default();
    let method = if rpc {
        "grpc".to_owned()
    } else {
        attribute_string(attrs, "http.request.method")
            .or_else(|| attribute_string(attrs, "http.method"))
            .unwrap_or_default()
    };
    let error = if rpc {
        match attribute_int(attrs, "rpc.grpc.status_code") {
            Some(code) => code != 0,
            None => attribute_string(attrs, "error.type").is_some(),
        }
    } else {
        let status = attribute_int(attrs, "http.response.status_code")
            .or_else(|| attribute_int(attrs, "http.status_code"));
        match status {
            Some(code) if kind == "server" => code >= 500,
            Some(code) => code >= 400,
            None => attribute_string(attrs, "error.type").is_some(),
        }
    };
    Ok(RedPoint {
        key: RedKey {
            service: attribute_string(attrs, "service.name").unwrap_or_else(|| service.to_owned()),
            route,
            method,
            kind: kind.to_owned(),
            error,
        },
        stream: stream_id(metric, resource_attributes, attrs),
        start_ns: time_ns(point.start_time_unix_nano, "start_time_unix_nano")?,
        time_ns: time_ns(point.time_unix_nano, "time_unix_nano")?,
        cumulative,
        count: point.count,
        sum: point.sum.unwrap_or(0.0) * scale,
        bounds: bounds.iter().map(|b| b * scale).collect(),
        counts,
    })
}

/// FNV-1a of the metric name and every attribute: identifies the producer's time series.
fn stream_id(metric: &str, resource: &[KeyValue], attributes: &[KeyValue]) -> u64 {
    let mut pairs: Vec<(&str, String)> = resource
        .iter()
        .chain(attributes)
        .map(|kv| {
            (
                kv.key.as_str(),
                super::any_to_json(kv.value.as_ref()).to_string(),
            )
        })
        .collect();
    pairs.sort();
    let mut hash = 0xcbf2_9ce4_8422_2325u64;
    let mut feed = |bytes: &[u8]| {
        for &b in bytes.iter().chain(&[0xff]) {
            hash ^= u64::from(b);
            hash = hash.wrapping_mul(0x0100_0000_01b3);
        }
    };
    feed(metric.as_bytes());
    for (key, value) in &pairs {
        feed(key.as_bytes());
        feed(value.as_bytes());
    }
    hash
}

#[cfg(test)]
mod tests {
    use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue};
    use opentelemetry_proto::tonic::metrics::v1::{
        Histogram, Metric, ResourceMetrics, ScopeMetrics,
    };
    use opentelemetry_proto::tonic::resource::v1::Resource;

    use super::*;

    fn kv(key: &str, value: any_value::Value) -> KeyValue {
        KeyValue {
            key: key.to_owned(),
            value: Some(AnyValue { value: Some(value) }),
            ..Default::default()
        }
    }

    fn request(name: &str, unit: &str, point: HistogramDataPoint) -> ExportMetricsServiceRequest {
        ExportMetricsServiceRequest {
            resource_metrics: vec![ResourceMetrics {
                resource: Some(Resource {
                    attributes: vec![kv(
                        "service.name",
                        any_value::Value::StringValue("api".into()),
                    )],
                    ..Default::default()
                }),
                scope_metrics: vec![ScopeMetrics {
                    metrics: vec![Metric {
                        name: name.to_owned(),
                        unit: unit.to_owned(),
                        data: Some(metric::Data::Histogram(Histogram {
                            data_points: vec![point],
                            aggregation_temporality: AggregationTemporality::Cumulative as i32,
                        })),
                        ..Default::default()
                    }],
                    ..Default::default()
                }],
                ..Default::default()
            }],
        }
    }

    #[test]
    fn mutated_requests_never_panic() {
        let valid = request("http.server.request.duration", "s", point(200));
        crate::ingest::otlp::fuzz_converter(&valid, |request| {
            let _ = convert(request);
        });
    }

    fn point(status: i64) -> HistogramDataPoint {
        HistogramDataPoint {
            attributes: vec![
                kv(
                    "http.route",
                    any_value::Value::StringValue("/users/{id}".into()),
                ),
                kv(
                    "http.request.method",
                    any_value::Value::StringValue("GET".into()),
                ),
                kv(
                    "http.response.status_code",
                    any_value::Value::IntValue(status),
                ),
            ],
            start_time_unix_nano: 1,
            time_unix_nano: 2,
            count: 3,
            sum: Some(0.3),
            bucket_counts: vec![1, 2, 0],
            explicit_bounds: vec![0.1, 1.0],
            ..Default::default()
        }
    }

    #[test]
    fn http_server_histograms_become_red_points() {
        let points =
            convert(&request("http.server.request.duration", "s", point(200))).expect("ok");
        assert_eq!(points.len(), 1);
        let p = &points[0];
        assert_eq!(p.key.service, "api");
        assert_eq!(p.key.route, "/users/{id}");
        assert_eq!(p.key.method, "GET");
        assert_eq!(p.key.kind, "server");
        assert!(!p.key.error);
        assert!(p.cumulative);
        assert_eq!(p.counts, [1, 2, 0]);
        let p = &convert(&request("http.server.request.duration", "s", point(503))).expect("ok")[0];
        assert!(p.key.error);
        let p = &convert(&request("http.client.request.duration", "s", point(404))).expect("ok")[0];
        assert!(p.key.error, "4xx is an error for clients");
        let p = &convert(&request("http.server.duration", "ms", point(200))).expect("ok")[0];
        assert_eq!(p.bounds, [0.0001, 0.001]);
    }

    #[test]
    fn other_metrics_are_ignored_and_bad_shapes_rejected() {
        assert!(convert(&request("process.cpu.time", "s", point(200)))
            .expect("ok")
            .is_empty());
        let mut bad = point(200);
        bad.bucket_counts.pop();
        assert!(convert(&request("http.server.request.duration", "s", bad)).is_err());
        let mut bad = point(200);
        bad.explicit_bounds = vec![1.0, 0.1];
        assert!(convert(&request("http.server.request.duration", "s", bad)).is_err());
    }

    #[test]
    fn streams_differ_by_attributes() {
        let a = stream_id("m", &[], &point(200).attributes);
        let b = stream_id("m", &[], &point(500).attributes);
        assert_ne!(a, b);
        assert_eq!(a, stream_id("m", &[], &point(200).attributes));
    }
}
