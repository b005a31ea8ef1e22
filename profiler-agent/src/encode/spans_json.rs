//! Spans as JSON lines (`record --spans FILE`): one object per span, ids in lowercase hex,
//! times in Unix nanoseconds, attributes by their OTel names. Readable with `jq`.

use std::fmt::Write;

use crate::capture::span::{AttrValue, Attribute, Span, SpanKind};

/// One span as a single-line JSON object.
pub fn encode(span: &Span) -> String {
    let mut out = String::with_capacity(768);
    encode_into(span, &mut out);
    out
}

/// Appends one span as a single-line JSON object to `out` (written by hand: this runs for
/// every request the machine serves, and a `serde_json::Value` tree costs several times more).
pub fn encode_into(span: &Span, out: &mut String) {
    out.push_str("{\"trace_id\":\"");
    push_hex(out, &span.trace_id);
    out.push_str("\",\"span_id\":\"");
    push_hex(out, &span.span_id);
    out.push_str("\",\"parent_span_id\":");
    match &span.parent_span_id {
        Some(id) => {
            out.push('"');
            push_hex(out, id);
            out.push('"');
        }
        None => out.push_str("null"),
    }
    out.push_str(",\"kind\":");
    out.push_str(match span.kind {
        SpanKind::Server => "\"server\"",
        SpanKind::Client => "\"client\"",
    });
    out.push_str(",\"name\":");
    push_str(out, &span.name);
    out.push_str(",\"service\":");
    push_str(out, &span.resource.service_name);
    let duration_ms = span.end_unix_ns.saturating_sub(span.start_unix_ns) as f64 / 1e6;
    let _ = write!(
        out,
        ",\"start_unix_nano\":{},\"end_unix_nano\":{},\"duration_ms\":{duration_ms},\"status\":\"{}\"",
        span.start_unix_ns,
        span.end_unix_ns,
        if span.error { "error" } else { "ok" },
    );
    out.push_str(",\"attributes\":");
    push_object(out, &span.attributes);
    out.push_str(",\"resource\":");
    push_object(out, &span.resource.attributes);
    out.push('}');
}

fn push_hex(out: &mut String, bytes: &[u8]) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    for &b in bytes {
        out.push(DIGITS[usize::from(b >> 4)] as char);
        out.push(DIGITS[usize::from(b & 0xf)] as char);
    }
}

/// A JSON string literal. Text needing no escapes (the usual case: names, routes, paths) is
/// copied as is; other text goes through serde_json's escaping.
fn push_str(out: &mut String, text: &str) {
    // Branch-free over the whole text (the compiler vectorizes it): escapes are rare.
    let needs_escape = text.bytes().fold(false, |seen, b| {
        seen | (b < 0x20) | (b == b'"') | (b == b'\\')
    });
    if !needs_escape {
        out.push('"');
        out.push_str(text);
        out.push('"');
        return;
    }
    match serde_json::to_string(text) {
        Ok(quoted) => out.push_str(&quoted),
        Err(_) => out.push_str("null"),
    }
}

fn push_object(out: &mut String, attributes: &[Attribute]) {
    out.push('{');
    for (i, (name, value)) in attributes.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        push_str(out, name);
        out.push(':');
        match value {
            AttrValue::Str(text) => push_str(out, text),
            AttrValue::Int(n) => {
                let _ = write!(out, "{n}");
            }
            AttrValue::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        }
    }
    out.push('}');
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use serde_json::Value;

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
                ("url.path".into(), AttrValue::Str("/x/1\n\"\\\u{7f}".into())),
                (
                    "user_agent.original".into(),
                    AttrValue::Str("curl/8 ü".into()),
                ),
                ("ok".into(), AttrValue::Bool(true)),
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
        assert_eq!(value["attributes"]["url.path"], "/x/1\n\"\\\u{7f}");
        assert_eq!(value["attributes"]["user_agent.original"], "curl/8 ü");
        assert_eq!(value["attributes"]["ok"], true);
        assert_eq!(value["resource"]["service.name"], "api");
        assert_eq!(value["kind"], "server");
        assert_eq!(value["status"], "ok");
    }

    proptest::proptest! {
        #[test]
        fn strings_and_ids_round_trip(text in ".*", bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..20)) {
            let mut out = String::new();
            push_str(&mut out, &text);
            let parsed: String = serde_json::from_str(&out).expect("a JSON string");
            proptest::prop_assert_eq!(parsed, text);
            let mut hex = String::new();
            push_hex(&mut hex, &bytes);
            let expected: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
            proptest::prop_assert_eq!(hex, expected);
        }
    }
}
