//! OTLP/gRPC ingest: the collector `TraceService`, `MetricsService` and (development)
//! `ProfilesService`, served by tonic on the OTLP port. Each `Export` is converted in full
//! first ([`traces`], [`metrics`], [`profiles`]; malformed → `INVALID_ARGUMENT`, nothing
//! stored), then written in one store transaction; the response is sent after the commit.

pub mod metrics;
pub mod profiles;
pub mod traces;

use std::sync::Arc;

use opentelemetry_proto::tonic::collector::metrics::v1::metrics_service_server::{
    MetricsService, MetricsServiceServer,
};
use opentelemetry_proto::tonic::collector::metrics::v1::{
    ExportMetricsServiceRequest, ExportMetricsServiceResponse,
};
use opentelemetry_proto::tonic::collector::profiles::v1development::profiles_service_server::{
    ProfilesService, ProfilesServiceServer,
};
use opentelemetry_proto::tonic::collector::profiles::v1development::{
    ExportProfilesServiceRequest, ExportProfilesServiceResponse,
};
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, KeyValue};
use tonic::codec::CompressionEncoding;
use tonic::service::interceptor::InterceptedService;
use tonic::{Request, Response, Status};

use crate::api::auth::constant_time_eq;
use crate::error::{ApiError, ErrorCode};
use crate::store::Store;

/// A malformed OTLP request.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("{what}")]
pub struct OtlpError {
    /// What is wrong, and where.
    pub what: String,
}

impl OtlpError {
    fn new(what: impl Into<String>) -> Self {
        Self { what: what.into() }
    }
}

impl From<OtlpError> for Status {
    fn from(error: OtlpError) -> Self {
        ApiError::from_error(ErrorCode::InvalidArgument, &error).into()
    }
}

fn store_status(error: &crate::store::StoreError) -> Status {
    ApiError::from_error(ErrorCode::Internal, error).into()
}

/// The OTLP services sharing one store.
#[derive(Clone)]
pub struct Otlp {
    store: Arc<dyn Store>,
}

impl Otlp {
    /// Services writing to `store`.
    pub fn new(store: Arc<dyn Store>) -> Self {
        Self { store }
    }

    /// The tonic routes of the three services, accepting gzip and messages up to
    /// `max_message_bytes`, and requiring `authorization: Bearer <token>` metadata when a
    /// token is set.
    pub fn routes(
        self,
        max_message_bytes: usize,
        auth_token: Option<Arc<str>>,
    ) -> tonic::service::Routes {
        let auth = BearerToken(auth_token);
        let traces = TraceServiceServer::new(self.clone())
            .accept_compressed(CompressionEncoding::Gzip)
            .max_decoding_message_size(max_message_bytes);
        let metrics = MetricsServiceServer::new(self.clone())
            .accept_compressed(CompressionEncoding::Gzip)
            .max_decoding_message_size(max_message_bytes);
        let profiles = ProfilesServiceServer::new(self)
            .accept_compressed(CompressionEncoding::Gzip)
            .max_decoding_message_size(max_message_bytes);
        tonic::service::Routes::new(InterceptedService::new(traces, auth.clone()))
            .add_service(InterceptedService::new(metrics, auth.clone()))
            .add_service(InterceptedService::new(profiles, auth))
    }
}

/// The `--auth-token` check of the gRPC port.
#[derive(Clone)]
struct BearerToken(Option<Arc<str>>);

impl tonic::service::Interceptor for BearerToken {
    fn call(&mut self, request: Request<()>) -> Result<Request<()>, Status> {
        let Some(expected) = self.0.as_deref() else {
            return Ok(request);
        };
        let given = request
            .metadata()
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "));
        match given {
            Some(token) if constant_time_eq(token.as_bytes(), expected.as_bytes()) => Ok(request),
            _ => Err(Status::unauthenticated(
                "missing or wrong `authorization: Bearer <token>` metadata (the server runs with \
                 --auth-token)",
            )),
        }
    }
}

#[tonic::async_trait]
impl TraceService for Otlp {
    async fn export(
        &self,
        request: Request<ExportTraceServiceRequest>,
    ) -> Result<Response<ExportTraceServiceResponse>, Status> {
        let spans = traces::convert(request.get_ref())?;
        if !spans.is_empty() {
            let count = spans.len();
            self.store
                .write_spans(spans)
                .await
                .map_err(|e| store_status(&e))?;
            tracing::debug!(spans = count, "otlp traces stored");
        }
        Ok(Response::new(ExportTraceServiceResponse::default()))
    }
}

#[tonic::async_trait]
impl MetricsService for Otlp {
    async fn export(
        &self,
        request: Request<ExportMetricsServiceRequest>,
    ) -> Result<Response<ExportMetricsServiceResponse>, Status> {
        let points = metrics::convert(request.get_ref())?;
        if !points.is_empty() {
            let count = points.len();
            self.store
                .write_red_points(points)
                .await
                .map_err(|e| store_status(&e))?;
            tracing::debug!(points = count, "otlp metrics stored");
        }
        Ok(Response::new(ExportMetricsServiceResponse::default()))
    }
}

#[tonic::async_trait]
impl ProfilesService for Otlp {
    async fn export(
        &self,
        request: Request<ExportProfilesServiceRequest>,
    ) -> Result<Response<ExportProfilesServiceResponse>, Status> {
        let profiles = profiles::convert(request.get_ref())?;
        for profile in profiles {
            self.store
                .write_profile(profile)
                .await
                .map_err(|e| store_status(&e))?;
        }
        Ok(Response::new(ExportProfilesServiceResponse::default()))
    }
}

/// An attribute value as JSON (bytes as hex).
pub fn any_to_json(value: Option<&AnyValue>) -> serde_json::Value {
    use serde_json::Value;
    match value.and_then(|v| v.value.as_ref()) {
        None | Some(any_value::Value::StringValueStrindex(_)) => Value::Null,
        Some(any_value::Value::StringValue(s)) => Value::String(s.clone()),
        Some(any_value::Value::BoolValue(b)) => Value::Bool(*b),
        Some(any_value::Value::IntValue(i)) => Value::from(*i),
        Some(any_value::Value::DoubleValue(d)) => {
            serde_json::Number::from_f64(*d).map_or(Value::Null, Value::Number)
        }
        Some(any_value::Value::ArrayValue(array)) => {
            Value::Array(array.values.iter().map(|v| any_to_json(Some(v))).collect())
        }
        Some(any_value::Value::KvlistValue(list)) => {
            Value::Object(attributes_to_json(&list.values))
        }
        Some(any_value::Value::BytesValue(bytes)) => {
            Value::String(bytes.iter().map(|b| format!("{b:02x}")).collect())
        }
    }
}

/// Attributes as a JSON object.
pub fn attributes_to_json(attributes: &[KeyValue]) -> serde_json::Map<String, serde_json::Value> {
    attributes
        .iter()
        .map(|kv| (kv.key.clone(), any_to_json(kv.value.as_ref())))
        .collect()
}

/// An attribute as a string: strings as they are, numbers and booleans formatted.
pub fn attribute_string(attributes: &[KeyValue], key: &str) -> Option<String> {
    let value = attributes.iter().find(|kv| kv.key == key)?.value.as_ref()?;
    match value.value.as_ref()? {
        any_value::Value::StringValue(s) => Some(s.clone()),
        any_value::Value::IntValue(i) => Some(i.to_string()),
        any_value::Value::BoolValue(b) => Some(b.to_string()),
        any_value::Value::DoubleValue(d) => Some(d.to_string()),
        _ => None,
    }
}

/// An attribute as an integer (ints, and strings holding one).
pub fn attribute_int(attributes: &[KeyValue], key: &str) -> Option<i64> {
    let value = attributes.iter().find(|kv| kv.key == key)?.value.as_ref()?;
    match value.value.as_ref()? {
        any_value::Value::IntValue(i) => Some(*i),
        any_value::Value::StringValue(s) => s.trim().parse().ok(),
        any_value::Value::DoubleValue(d) if d.fract() == 0.0 => Some(*d as i64),
        _ => None,
    }
}

/// `service.name` of a resource, `unknown_service` when absent (the OTel default).
pub fn service_name(
    resource: Option<&opentelemetry_proto::tonic::resource::v1::Resource>,
) -> String {
    resource
        .and_then(|r| attribute_string(&r.attributes, "service.name"))
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "unknown_service".to_owned())
}

/// OTLP times are u64 ns; the store keeps i64 (valid until 2262).
fn time_ns(value: u64, what: &str) -> Result<i64, OtlpError> {
    i64::try_from(value).map_err(|_| OtlpError::new(format!("{what} {value} is out of range")))
}

/// Mutation fuzzing shared by the converters' tests: `valid` is encoded, bytes are overwritten,
/// inserted and cut at random (xorshift, fixed seed), and whatever still decodes as the message
/// goes through `convert`, which may reject it but must never panic.
#[cfg(test)]
pub(crate) fn fuzz_converter<M: prost::Message + Default>(valid: &M, convert: impl Fn(&M)) {
    let bytes = valid.encode_to_vec();
    let mut state = 0x2545_f491_4f6c_dd1du64;
    let mut next = || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let mut decoded = 0;
    for _ in 0..2_000 {
        let mut mutated = bytes.clone();
        for _ in 0..1 + next() % 6 {
            let at = (next() % mutated.len().max(1) as u64) as usize;
            match next() % 3 {
                0 if !mutated.is_empty() => mutated[at] = next() as u8,
                1 => mutated.insert(at.min(mutated.len()), next() as u8),
                _ => mutated.truncate(at),
            }
        }
        if let Ok(message) = M::decode(mutated.as_slice()) {
            decoded += 1;
            convert(&message);
        }
    }
    assert!(
        decoded > 0,
        "no mutation decoded: the fuzzing reached no converter"
    );
}
