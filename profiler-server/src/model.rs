//! The data model that ingest produces, the store keeps and query reads: normalized profiles
//! (stacks of function names, root first, with label sets), spans, and RED histogram points.
//! Plain data, no behaviour beyond small helpers.

use std::{collections::HashMap, fmt};

/// Width of a profile time bucket: samples are aggregated per series, bucket and stack.
pub const BUCKET_NS: i64 = 10_000_000_000;

/// A label set: `(name, value)` pairs sorted by name, names unique.
pub type Labels = Vec<(String, String)>;

/// The label of the service a profile series belongs to.
pub const SERVICE_LABEL: &str = "service_name";
/// The sample label holding the hex trace id of the request the thread was serving.
pub const TRACE_ID_LABEL: &str = "trace_id";
/// The sample label holding the hex span id of the request the thread was serving.
pub const SPAN_ID_LABEL: &str = "span_id";

/// One stack frame: a function name, and whether it runs in the kernel.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Frame {
    /// Human-readable (demangled) function name.
    pub name: String,
    /// Kernel frame (kallsyms), as opposed to user space.
    pub kernel: bool,
}

/// A profile after ingest: every stack resolved to frames, labels merged.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Profile {
    /// Time the samples are stored at, nanoseconds since the Unix epoch.
    pub time_ns: i64,
    /// How much CPU one sample stands for, 0 when unknown.
    pub period_ns: i64,
    /// Frames referenced by [`Sample::stack`], unique.
    pub frames: Vec<Frame>,
    /// Label sets referenced by [`Sample::labels`], unique.
    pub label_sets: Vec<Labels>,
    /// The samples; several may share a stack and label set.
    pub samples: Vec<Sample>,
}

impl Profile {
    /// Sum of all sample values.
    pub fn total(&self) -> u64 {
        self.samples.iter().map(|s| s.value).sum()
    }
}

/// Sorted labels from `(name, value)` pairs, for tests.
#[cfg(test)]
pub(crate) fn labels(pairs: &[(&str, &str)]) -> Labels {
    let mut labels: Labels = pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    labels.sort();
    labels
}

/// Builds a [`Profile`] from decoded samples, storing each frame and label set once.
#[derive(Debug, Default)]
pub struct ProfileBuilder {
    profile: Profile,
    frames: HashMap<Frame, u32>,
    label_sets: HashMap<Labels, u32>,
}

impl ProfileBuilder {
    pub fn new(time_ns: i64, period_ns: i64) -> Self {
        ProfileBuilder {
            profile: Profile {
                time_ns,
                period_ns,
                ..Profile::default()
            },
            ..ProfileBuilder::default()
        }
    }

    /// The index of `frame` in the profile's frames, added if new.
    pub fn frame(&mut self, frame: Frame) -> u32 {
        let frames = &mut self.profile.frames;
        let next = u32::try_from(frames.len()).unwrap_or(u32::MAX);
        *self.frames.entry(frame).or_insert_with_key(|frame| {
            frames.push(frame.clone());
            next
        })
    }

    /// Adds a sample: `stack` holds frame indexes, root first.
    pub fn push(&mut self, stack: Vec<u32>, labels: Labels, value: u64) {
        let label_sets = &mut self.profile.label_sets;
        let next = u32::try_from(label_sets.len()).unwrap_or(u32::MAX);
        let labels = *self.label_sets.entry(labels).or_insert_with_key(|labels| {
            label_sets.push(labels.clone());
            next
        });
        self.profile.samples.push(Sample {
            stack,
            labels,
            value,
        });
    }

    pub fn finish(self) -> Profile {
        self.profile
    }
}

/// Samples with one stack and one label set.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Sample {
    /// Indexes into [`Profile::frames`], root first, leaf last.
    pub stack: Vec<u32>,
    /// Index into [`Profile::label_sets`].
    pub labels: u32,
    /// Number of samples (never 0).
    pub value: u64,
}

/// Stacks with counts, the input of every flame graph computation.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct StackCounts {
    /// Frames referenced by the stacks.
    pub frames: Vec<Frame>,
    /// Stacks (indexes into `frames`, root first) with their sample counts.
    pub stacks: Vec<(Vec<u32>, u64)>,
    /// How much CPU one sample stands for, 0 when unknown.
    pub period_ns: i64,
}

/// A 128-bit W3C/OTel trace id.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TraceId(pub [u8; 16]);

/// A 64-bit W3C/OTel span id.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SpanId(pub [u8; 8]);

impl TraceId {
    /// Parses 32 hex digits (either case).
    pub fn from_hex(hex: &str) -> Option<Self> {
        parse_hex(hex).map(Self)
    }

    /// From the 16 bytes of an OTLP `trace_id` field.
    pub fn from_slice(bytes: &[u8]) -> Option<Self> {
        bytes.try_into().ok().map(Self)
    }
}

impl SpanId {
    /// Parses 16 hex digits (either case).
    pub fn from_hex(hex: &str) -> Option<Self> {
        parse_hex(hex).map(Self)
    }

    /// From the 8 bytes of an OTLP `span_id` field.
    pub fn from_slice(bytes: &[u8]) -> Option<Self> {
        bytes.try_into().ok().map(Self)
    }
}

impl fmt::Display for TraceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write_hex(f, &self.0)
    }
}

impl fmt::Display for SpanId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write_hex(f, &self.0)
    }
}

fn write_hex(f: &mut fmt::Formatter<'_>, bytes: &[u8]) -> fmt::Result {
    bytes.iter().try_for_each(|b| write!(f, "{b:02x}"))
}

fn parse_hex<const N: usize>(hex: &str) -> Option<[u8; N]> {
    let digits = hex.as_bytes();
    if digits.len() != 2 * N {
        return None;
    }
    let mut out = [0u8; N];
    for (byte, pair) in out.iter_mut().zip(digits.chunks_exact(2)) {
        let hi = char::from(pair[0]).to_digit(16)?;
        let lo = char::from(pair[1]).to_digit(16)?;
        *byte = u8::try_from(hi * 16 + lo).ok()?;
    }
    Some(out)
}

/// OTel span kind.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SpanKind {
    /// Not specified by the producer.
    Unspecified = 0,
    /// Internal operation.
    Internal = 1,
    /// Server side of a request.
    Server = 2,
    /// Client side of a request.
    Client = 3,
    /// Message producer.
    Producer = 4,
    /// Message consumer.
    Consumer = 5,
}

impl SpanKind {
    /// From OTLP's enum value; unknown values are `Unspecified`.
    pub fn from_i32(value: i32) -> Self {
        match value {
            1 => Self::Internal,
            2 => Self::Server,
            3 => Self::Client,
            4 => Self::Producer,
            5 => Self::Consumer,
            _ => Self::Unspecified,
        }
    }

    /// The lowercase name used by the API.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Unspecified => "unspecified",
            Self::Internal => "internal",
            Self::Server => "server",
            Self::Client => "client",
            Self::Producer => "producer",
            Self::Consumer => "consumer",
        }
    }
}

/// Outcome of a span.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SpanStatus {
    /// Not set by the producer (counts as ok).
    Unset = 0,
    /// Explicitly ok.
    Ok = 1,
    /// Failed.
    Error = 2,
}

impl SpanStatus {
    /// From OTLP's `Status.code`; unknown values are `Unset`.
    pub fn from_i32(value: i32) -> Self {
        match value {
            1 => Self::Ok,
            2 => Self::Error,
            _ => Self::Unset,
        }
    }

    /// `"error"` or `"ok"`, as the API reports it.
    pub fn as_str(self) -> &'static str {
        if self == Self::Error {
            "error"
        } else {
            "ok"
        }
    }
}

/// One span, as stored.
#[derive(Clone, Debug, PartialEq)]
pub struct Span {
    /// Trace the span belongs to.
    pub trace_id: TraceId,
    /// The span's own id.
    pub span_id: SpanId,
    /// Parent span, `None` for a root span.
    pub parent_span_id: Option<SpanId>,
    /// `service.name` of the resource that produced the span.
    pub service: String,
    /// Span name, e.g. `GET /users/{id}`.
    pub name: String,
    /// Span kind.
    pub kind: SpanKind,
    /// Start, nanoseconds since the Unix epoch.
    pub start_ns: i64,
    /// End, nanoseconds since the Unix epoch.
    pub end_ns: i64,
    /// Outcome.
    pub status: SpanStatus,
    /// `http.route` (or `rpc.service/rpc.method`), for trace search.
    pub route: Option<String>,
    /// The span's attributes as a JSON object.
    pub attributes: serde_json::Map<String, serde_json::Value>,
}

/// Which series of RED metrics a histogram point belongs to.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RedKey {
    /// `service.name`.
    pub service: String,
    /// `http.route`, or `rpc.service/rpc.method`; empty when unknown.
    pub route: String,
    /// `http.request.method` or `"grpc"`; empty when unknown.
    pub method: String,
    /// `server` or `client`.
    pub kind: String,
    /// Whether the requests counted failed (5xx for HTTP servers, 4xx/5xx for clients, non-OK
    /// gRPC status, or `error.type` set).
    pub error: bool,
}

/// One histogram data point of a request-duration metric, bounds in seconds.
#[derive(Clone, Debug, PartialEq)]
pub struct RedPoint {
    /// The series.
    pub key: RedKey,
    /// Identity of the producer's time series (hash of metric name and all attributes), to turn
    /// cumulative points into deltas.
    pub stream: u64,
    /// Start of the accumulation, nanoseconds since the Unix epoch.
    pub start_ns: i64,
    /// Time of the point, nanoseconds since the Unix epoch.
    pub time_ns: i64,
    /// Cumulative since `start_ns` (else a delta since the previous point).
    pub cumulative: bool,
    /// Number of requests.
    pub count: u64,
    /// Sum of the durations, seconds.
    pub sum: f64,
    /// Explicit bucket upper bounds, seconds, ascending.
    pub bounds: Vec<f64>,
    /// `bounds.len() + 1` bucket counts (the last one is `(bounds.last(), +inf)`).
    pub counts: Vec<u64>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_round_trip_through_hex() {
        let hex = "0af7651916cd43dd8448eb211c80319c";
        let id = TraceId::from_hex(hex).expect("valid");
        assert_eq!(id.to_string(), hex);
        assert_eq!(
            TraceId::from_hex(&hex.to_uppercase()).map(|i| i.to_string()),
            Some(hex.to_owned())
        );
        assert_eq!(
            SpanId::from_hex("b7ad6b7169203331").map(|s| s.to_string()),
            Some("b7ad6b7169203331".to_owned())
        );
        assert!(SpanId::from_hex("b7ad6b716920333").is_none());
        assert!(SpanId::from_hex("b7ad6b716920333g").is_none());
        assert!(SpanId::from_hex("é7ad6b716920333").is_none());
    }
}
