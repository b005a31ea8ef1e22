//! OTLP spans → [`Span`]s.

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;

use super::{attribute_string, attributes_to_json, service_name, time_ns, OtlpError};
use crate::model::{Span, SpanId, SpanKind, SpanStatus, TraceId};

/// Converts every span of an export request; any malformed span rejects the request.
pub fn convert(request: &ExportTraceServiceRequest) -> Result<Vec<Span>, OtlpError> {
    let mut out = Vec::new();
    for resource_spans in &request.resource_spans {
        let service = service_name(resource_spans.resource.as_ref());
        for scope_spans in &resource_spans.scope_spans {
            for span in &scope_spans.spans {
                let at = |what: &str| OtlpError::new(format!("span {:?}: {what}", span.name));
                let trace_id = TraceId::from_slice(&span.trace_id)
                    .filter(|t| t.0 != [0; 16])
                    .ok_or_else(|| at("trace_id must be 16 bytes, not all zero"))?;
                let span_id = SpanId::from_slice(&span.span_id)
                    .filter(|s| s.0 != [0; 8])
                    .ok_or_else(|| at("span_id must be 8 bytes, not all zero"))?;
                let parent_span_id = if span.parent_span_id.is_empty() {
                    None
                } else {
                    Some(
                        SpanId::from_slice(&span.parent_span_id)
                            .ok_or_else(|| at("parent_span_id must be empty or 8 bytes"))?,
                    )
                };
                let start_ns = time_ns(span.start_time_unix_nano, "start_time_unix_nano")?;
                let end_ns = time_ns(span.end_time_unix_nano, "end_time_unix_nano")?;
                if end_ns < start_ns {
                    return Err(at("ends before it starts"));
                }
                let route = attribute_string(&span.attributes, "http.route").or_else(|| {
                    let service = attribute_string(&span.attributes, "rpc.service")?;
                    let method = attribute_string(&span.attributes, "rpc.method")?;
                    Some(format!("{service}/{method}"))
                });
                out.push(Span {
                    trace_id,
                    span_id,
                    parent_span_id: parent_span_id.filter(|p| p.0 != [0; 8]),
                    service: service.clone(),
                    name: span.name.clone(),
                    kind: SpanKind::from_i32(span.kind),
                    start_ns,
                    end_ns,
                    status: SpanStatus::from_i32(span.status.as_ref().map_or(0, |s| s.code)),
                    route,
                    attributes: attributes_to_json(&span.attributes),
                });
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, KeyValue};
    use opentelemetry_proto::tonic::resource::v1::Resource;
    use opentelemetry_proto::tonic::trace::v1::{
        ResourceSpans, ScopeSpans, Span as OtlpSpan, Status,
    };

    use super::*;

    fn kv(key: &str, value: any_value::Value) -> KeyValue {
        KeyValue {
            key: key.to_owned(),
            value: Some(AnyValue { value: Some(value) }),
            ..Default::default()
        }
    }

    fn request(spans: Vec<OtlpSpan>) -> ExportTraceServiceRequest {
        ExportTraceServiceRequest {
            resource_spans: vec![ResourceSpans {
                resource: Some(Resource {
                    attributes: vec![kv(
                        "service.name",
                        any_value::Value::StringValue("api".into()),
                    )],
                    ..Default::default()
                }),
                scope_spans: vec![ScopeSpans {
                    spans,
                    ..Default::default()
                }],
                ..Default::default()
            }],
        }
    }

    #[test]
    fn mutated_requests_never_panic() {
        crate::ingest::otlp::fuzz_converter(&request(vec![span(), span()]), |request| {
            let _ = convert(request);
        });
    }

    fn span() -> OtlpSpan {
        OtlpSpan {
            trace_id: vec![1; 16],
            span_id: vec![2; 8],
            name: "GET /users/{id}".into(),
            kind: 2,
            start_time_unix_nano: 1_000,
            end_time_unix_nano: 2_000,
            attributes: vec![
                kv(
                    "http.route",
                    any_value::Value::StringValue("/users/{id}".into()),
                ),
                kv("http.response.status_code", any_value::Value::IntValue(500)),
            ],
            status: Some(Status {
                code: 2,
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn spans_convert_with_service_route_and_attributes() {
        let spans = convert(&request(vec![span()])).expect("valid");
        let s = &spans[0];
        assert_eq!(s.service, "api");
        assert_eq!(s.route.as_deref(), Some("/users/{id}"));
        assert_eq!(s.kind, SpanKind::Server);
        assert_eq!(s.status, SpanStatus::Error);
        assert_eq!(s.parent_span_id, None);
        assert_eq!(s.attributes["http.response.status_code"], 500);
        assert_eq!(s.trace_id.to_string(), "01".repeat(16));
    }

    #[test]
    fn malformed_ids_are_rejected() {
        let mut bad = span();
        bad.trace_id = vec![1; 8];
        assert!(convert(&request(vec![span(), bad])).is_err());
        let mut bad = span();
        bad.span_id = vec![0; 8];
        assert!(convert(&request(vec![bad])).is_err());
        let mut bad = span();
        bad.parent_span_id = vec![3; 3];
        assert!(convert(&request(vec![bad])).is_err());
        let mut bad = span();
        bad.end_time_unix_nano = 10;
        assert!(convert(&request(vec![bad])).is_err());
    }
}
