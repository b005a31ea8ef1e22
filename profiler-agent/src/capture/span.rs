//! What the HTTP capture produces: spans and the resource (process) they belong to. Pure data,
//! shared by the assembler ([`super::assemble`]), the RED aggregator ([`super::red`]) and the
//! OTLP exporter (`crate::export::otlp`).

use std::{borrow::Cow, sync::Arc};

/// An attribute value (the OTLP `AnyValue` kinds the capture uses).
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum AttrValue {
    Str(String),
    Int(i64),
    Bool(bool),
}

/// One attribute: OTel semantic-convention name → value. Names are nearly always constants:
/// `Cow` spares an allocation per attribute of every span.
pub type Attribute = (Cow<'static, str>, AttrValue);

/// The process a span or metric comes from: `service.name`, `process.pid`, `host.name` and the
/// container / Kubernetes attributes when known. Shared by every span of the process.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Resource {
    /// `service.name` (also present in `attributes`).
    pub service_name: String,
    /// All resource attributes, `service.name` included, sorted by name.
    pub attributes: Vec<Attribute>,
}

/// SERVER: a request this process served; CLIENT: a request it sent.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SpanKind {
    Server,
    Client,
}

/// One captured HTTP request (or, later, gRPC call).
#[derive(Clone, Debug, PartialEq)]
pub struct Span {
    pub resource: Arc<Resource>,
    pub kind: SpanKind,
    pub trace_id: [u8; 16],
    pub span_id: [u8; 8],
    /// The caller's span: from an incoming `traceparent` (SERVER) or the server span the thread
    /// was serving when it sent the request (CLIENT).
    pub parent_span_id: Option<[u8; 8]>,
    /// Low-cardinality name: `GET /users/{id}` (method and route).
    pub name: String,
    pub start_unix_ns: u64,
    pub end_unix_ns: u64,
    /// Semantic-convention attributes of the request (`http.request.method`, ...).
    pub attributes: Vec<Attribute>,
    /// The span's status is ERROR (5xx for SERVER, 4xx and 5xx for CLIENT).
    pub error: bool,
}
