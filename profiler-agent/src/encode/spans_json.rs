//! Spans as JSON lines (`record --spans FILE`): one object per span, ids in lowercase hex,
//! times in Unix nanoseconds, attributes by their OTel names. Readable with `jq`.

use serde_json::{json, Map, Value};

use crate::{
    capture::span::{AttrValue, Attribute, Span, SpanKind},
    collect::hex,
};

/// One span as a single-line JSON object.
pub fn encode(span: &Span) -> String {
    json!({
        "trace_id": hex(&span.trace_id),
        "span_id": hex(&span.span_id),
        "parent_span_id": span.parent_span_id.map(|id| hex(&id)),
        "kind": match span.kind {
            SpanKind::Server => "server",
            SpanKind::Client => "client",
        },
        "name": span.name,
        "service": span.resource.service_name,
        "start_unix_nano": span.start_unix_ns,
        "end_unix_nano": span.end_unix_ns,
        "duration_ms": span.end_unix_ns.saturating_sub(span.start_unix_ns) as f64 / 1e6,
        "status": if span.error { "error" } else { "ok" },
        "attributes": object(&span.attributes),
        "resource": object(&span.resource.attributes),
    })
    .to_string()
}

fn object(attributes: &[Attribute]) -> Value {
    let map: Map<String, Value> = attributes
        .iter()
        .map(|(name, value)| {
            let value = match value {
                AttrValue::Str(s) => Value::from(s.as_str()),
                AttrValue::Int(i) => Value::from(*i),
                AttrValue::Bool(b) => Value::from(*b),
            };
            (name.clone(), value)
        })
        .collect();
    Value::Object(map)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::capture::span::Resource;

    #[test]
    fn spans_become_one_json_object_per_line() {
        let span = Span {
            resource: Arc::new(Resource {
                service_name: "api".into(),
                attributes: vec![("service.name".into(), AttrValue::Str("api".into()))],
            }),
            kind: SpanKind::Server,
            trace_id: [0xab; 16],
            span_id: [1; 8],
            parent_span_id: None,
            name: "GET /x/{id}".into(),
            start_unix_ns: 1_000_000,
            end_unix_ns: 3_500_000,
            attributes: vec![
                ("http.response.status_code".into(), AttrValue::Int(200)),
                ("url.path".into(), AttrValue::Str("/x/1\n\"".into())),
            ],
            error: false,
        };
        let line = encode(&span);
        assert!(!line.contains('\n'));
        let value: Value = serde_json::from_str(&line).expect("valid JSON");
        assert_eq!(value["trace_id"], "ab".repeat(16));
        assert_eq!(value["span_id"], "0101010101010101");
        assert_eq!(value["parent_span_id"], Value::Null);
        assert_eq!(value["duration_ms"], 2.5);
        assert_eq!(value["attributes"]["http.response.status_code"], 200);
        assert_eq!(value["attributes"]["url.path"], "/x/1\n\"");
        assert_eq!(value["resource"]["service.name"], "api");
    }
}
