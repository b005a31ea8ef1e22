//! Storage: the [`Store`] trait is the one interface between ingest/query and whatever keeps
//! the data; [`sqlite::SqliteStore`] is the embedded default.
//!
//! # Why SQLite
//!
//! The server must be one binary with an on-disk, crash-safe store that builds fast on 2 cores.
//! SQLite (rusqlite, `bundled`) gives exactly that: a transaction per ingest request acknowledged
//! only after commit (WAL, `synchronous=FULL`: a `kill -9` or a power cut after the 200 loses
//! nothing), concurrent readers beside one writer, clustered `WITHOUT ROWID` b-trees keyed by
//! time bucket (retention is a range delete at the start of the tree), and a 15 s build
//! (`shared/dependencies.md`). The others measured there: redb and fjall are as cheap to build
//! but are key-value stores, so every secondary index, aggregation and the trace search would be
//! hand-written; DuckDB/DataFusion/Arrow cost 1-28 minutes of build per CI run. Profile data is
//! made small before it reaches SQLite (functions and stacks interned, per-bucket counts packed
//! into varint blobs), so row overhead does not dominate: see `sqlite/mod.rs` for the schema and
//! the measured bytes per sample.
//!
//! A scale-out backend (ClickHouse) implements the same trait; ingest and query only see
//! [`Store`], the [`crate::model`] types and the filters below.

pub mod sqlite;

use async_trait::async_trait;

use crate::model::{Profile, RedPoint, Span, SpanId, StackCounts, TraceId};
use crate::query::Selector;

/// A failure of the store; always an internal error for clients.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// SQLite reported an error.
    #[error("sqlite error")]
    Sqlite {
        #[from]
        source: rusqlite::Error,
    },
    /// A stored value has an unexpected type.
    #[error("unexpected stored value")]
    ValueType {
        #[from]
        source: rusqlite::types::FromSqlError,
    },
    /// Stored data could not be decoded.
    #[error("corrupt stored data: {what}")]
    Corrupt {
        /// What was wrong.
        what: &'static str,
    },
    /// The data directory could not be prepared.
    #[error("cannot use data directory {path}")]
    DataDir {
        /// The directory.
        path: String,
        #[source]
        source: std::io::Error,
    },
    /// The database was written by a newer version of the server.
    #[error("database schema version {found} is newer than this server's {supported}; upgrade the server")]
    SchemaVersion {
        /// Version on disk.
        found: i64,
        /// Newest version this build knows.
        supported: i64,
    },
    /// The store is shutting down or its writer stopped.
    #[error("store is closed")]
    Closed,
    /// A blocking task failed.
    #[error("store task failed: {message}")]
    Task {
        /// The join error.
        message: String,
    },
}

/// A time range, nanoseconds since the Unix epoch, `from` inclusive, `until` exclusive.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TimeRange {
    /// Start.
    pub from_ns: i64,
    /// End.
    pub until_ns: i64,
}

impl TimeRange {
    /// Every time.
    pub const ALL: Self = Self {
        from_ns: i64::MIN,
        until_ns: i64::MAX,
    };
}

/// Which samples a profile query merges.
#[derive(Clone, Debug)]
pub struct ProfileFilter {
    /// Time range.
    pub range: TimeRange,
    /// Series selector.
    pub selector: Selector,
    /// Only samples labelled with this trace id.
    pub trace_id: Option<TraceId>,
    /// Only samples labelled with this span id.
    pub span_id: Option<SpanId>,
}

/// Trace search parameters.
#[derive(Clone, Debug, Default)]
pub struct TraceFilter {
    /// Range the trace starts in.
    pub range: Option<TimeRange>,
    /// Service of the trace's root span.
    pub service: Option<String>,
    /// Route of the trace's root span.
    pub route: Option<String>,
    /// `Some(true)`: only traces with an error span; `Some(false)`: only traces without.
    pub error: Option<bool>,
    /// Only traces at least this long.
    pub min_duration_ns: Option<i64>,
    /// At most this many, newest first.
    pub limit: usize,
}

/// One row of the trace list.
#[derive(Clone, Debug, PartialEq)]
pub struct TraceSummary {
    /// The trace.
    pub trace_id: TraceId,
    /// Service of the root span (or of the earliest span while the root is missing).
    pub service: String,
    /// Name of that span.
    pub name: String,
    /// Earliest span start, ns.
    pub start_ns: i64,
    /// Latest span end, ns.
    pub end_ns: i64,
    /// Whether any span failed.
    pub error: bool,
    /// Number of spans.
    pub span_count: u64,
    /// Whether samples are labelled with this trace.
    pub has_profile: bool,
}

/// A span with the number of profile samples labelled with it.
#[derive(Clone, Debug, PartialEq)]
pub struct SpanDetail {
    /// The span.
    pub span: Span,
    /// Samples labelled with its span id.
    pub profile_samples: u64,
}

/// RED points query.
#[derive(Clone, Debug, Default)]
pub struct RedFilter {
    /// Range of point times.
    pub range: Option<TimeRange>,
    /// Only this service.
    pub service: Option<String>,
    /// Only this route.
    pub route: Option<String>,
}

/// One row of `/services`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServiceSummary {
    /// `service_name` / `service.name`.
    pub name: String,
    /// Profile samples in range.
    pub profile_samples: u64,
    /// Spans starting in range.
    pub spans: u64,
}

/// What a profile write stored.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WriteSummary {
    /// Samples (sum of values).
    pub samples: u64,
    /// Distinct series.
    pub series: usize,
}

/// The storage interface: writes are durable when they return `Ok`.
#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// Stores a normalized profile atomically.
    async fn write_profile(&self, profile: Profile) -> Result<WriteSummary, StoreError>;
    /// Stores spans atomically; a span already stored (same trace and span id) is skipped.
    async fn write_spans(&self, spans: Vec<Span>) -> Result<(), StoreError>;
    /// Stores RED histogram points atomically.
    async fn write_red_points(&self, points: Vec<RedPoint>) -> Result<(), StoreError>;
    /// Deletes everything older than `cutoff_ns`; returns the number of rows deleted.
    async fn delete_before(&self, cutoff_ns: i64) -> Result<u64, StoreError>;
    /// Whether the store is open and its writer running.
    fn is_ready(&self) -> bool;
    /// Finishes queued writes and closes; later calls fail with [`StoreError::Closed`].
    async fn close(&self);

    /// Services with profile samples, spans or RED points in range, sorted by name.
    async fn services(&self, range: TimeRange) -> Result<Vec<ServiceSummary>, StoreError>;
    /// Label names of the selected series in range, sorted.
    async fn label_names(
        &self,
        range: TimeRange,
        selector: Selector,
    ) -> Result<Vec<String>, StoreError>;
    /// Values of one label over the selected series in range, sorted, at most `limit`.
    async fn label_values(
        &self,
        range: TimeRange,
        selector: Selector,
        name: String,
        limit: usize,
    ) -> Result<Vec<String>, StoreError>;
    /// The selected samples merged per stack.
    async fn stack_counts(&self, filter: ProfileFilter) -> Result<StackCounts, StoreError>;
    /// Trace search, newest first.
    async fn traces(&self, filter: TraceFilter) -> Result<Vec<TraceSummary>, StoreError>;
    /// All spans of a trace sorted by start; empty when unknown.
    async fn trace(&self, trace_id: TraceId) -> Result<Vec<SpanDetail>, StoreError>;
    /// Request-duration histogram points.
    async fn red_points(&self, filter: RedFilter) -> Result<Vec<RedPoint>, StoreError>;
}
