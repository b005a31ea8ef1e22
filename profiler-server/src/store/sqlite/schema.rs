//! The SQLite schema and connection settings. `PRAGMA user_version` holds [`VERSION`].

use rusqlite::Connection;

use crate::store::StoreError;

/// Schema version this build writes.
pub const VERSION: i64 = 1;

const SCHEMA: &str = r"
-- Interned function names; `kernel` marks kallsyms frames.
CREATE TABLE functions (
    id INTEGER PRIMARY KEY,
    name TEXT NOT NULL,
    kernel INTEGER NOT NULL,
    UNIQUE (name, kernel)
);
-- Interned stacks: `frames` is the varint function ids root first, `hash` its FNV-1a.
CREATE TABLE stacks (
    id INTEGER PRIMARY KEY,
    hash INTEGER NOT NULL,
    frames BLOB NOT NULL
);
CREATE INDEX stacks_by_hash ON stacks (hash);
-- Profile series: the sorted label set (JSON pairs) without trace_id/span_id.
CREATE TABLE series (
    id INTEGER PRIMARY KEY,
    labels TEXT NOT NULL UNIQUE,
    service TEXT NOT NULL,
    period_ns INTEGER NOT NULL
);
-- Samples per 10 s bucket (unix seconds / 10) and series; `counts` packs (stack, count)
-- pairs, `total` is their sum. Clustered by bucket: retention deletes a prefix of the tree.
CREATE TABLE samples (
    bucket INTEGER NOT NULL,
    series INTEGER NOT NULL,
    total INTEGER NOT NULL,
    counts BLOB NOT NULL,
    PRIMARY KEY (bucket, series)
) WITHOUT ROWID;
-- The subset of samples labelled with a trace and/or span id (zero bytes when absent), also
-- counted in `samples`.
CREATE TABLE span_samples (
    trace_id BLOB NOT NULL,
    span_id BLOB NOT NULL,
    bucket INTEGER NOT NULL,
    series INTEGER NOT NULL,
    total INTEGER NOT NULL,
    counts BLOB NOT NULL,
    PRIMARY KEY (trace_id, span_id, bucket, series)
) WITHOUT ROWID;
CREATE INDEX span_samples_by_span ON span_samples (span_id);
CREATE INDEX span_samples_by_bucket ON span_samples (bucket);
-- Spans; `status`: 0 unset, 1 ok, 2 error; `kind`: OTLP's SpanKind.
CREATE TABLE spans (
    trace_id BLOB NOT NULL,
    span_id BLOB NOT NULL,
    parent_span_id BLOB,
    service TEXT NOT NULL,
    name TEXT NOT NULL,
    kind INTEGER NOT NULL,
    start_ns INTEGER NOT NULL,
    end_ns INTEGER NOT NULL,
    status INTEGER NOT NULL,
    route TEXT,
    attributes TEXT NOT NULL,
    UNIQUE (trace_id, span_id)
);
CREATE INDEX spans_by_start ON spans (start_ns);
-- One row per trace for the trace search, kept up to date as spans arrive: name, service and
-- route of the root span (or of the earliest span while the root is missing).
CREATE TABLE traces (
    trace_id BLOB PRIMARY KEY,
    start_ns INTEGER NOT NULL,
    end_ns INTEGER NOT NULL,
    service TEXT NOT NULL,
    name TEXT NOT NULL,
    route TEXT,
    has_root INTEGER NOT NULL,
    error INTEGER NOT NULL,
    span_count INTEGER NOT NULL
) WITHOUT ROWID;
CREATE INDEX traces_by_start ON traces (start_ns);
-- RED series and their histogram points (bounds: f64 LE seconds; counts: varints).
CREATE TABLE red_series (
    id INTEGER PRIMARY KEY,
    service TEXT NOT NULL,
    route TEXT NOT NULL,
    method TEXT NOT NULL,
    kind TEXT NOT NULL,
    error INTEGER NOT NULL,
    UNIQUE (service, route, method, kind, error)
);
CREATE TABLE red_points (
    series INTEGER NOT NULL,
    stream INTEGER NOT NULL,
    start_ns INTEGER NOT NULL,
    time_ns INTEGER NOT NULL,
    cumulative INTEGER NOT NULL,
    count INTEGER NOT NULL,
    sum REAL NOT NULL,
    bounds BLOB NOT NULL,
    counts BLOB NOT NULL
);
CREATE INDEX red_points_by_time ON red_points (time_ns);
";

/// Settings of every connection: WAL (readers never block the writer), full sync (a commit is
/// on disk before the client's 200), a busy timeout for the rare checkpoint contention.
pub fn configure(conn: &Connection) -> Result<(), StoreError> {
    conn.busy_timeout(std::time::Duration::from_secs(10))?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(None, "synchronous", "FULL")?;
    conn.pragma_update(None, "cache_size", -16_384)?;
    Ok(())
}

/// Creates the schema in a new database, or checks the version of an existing one.
pub fn migrate(conn: &mut Connection) -> Result<(), StoreError> {
    let version: i64 = conn.pragma_query_value(None, "user_version", |row| row.get(0))?;
    if version > VERSION {
        return Err(StoreError::SchemaVersion {
            found: version,
            supported: VERSION,
        });
    }
    if version == 0 {
        // Must precede the first table: lets retention give freed pages back to the OS.
        conn.pragma_update(None, "auto_vacuum", "INCREMENTAL")?;
        let tx = conn.transaction()?;
        tx.execute_batch(SCHEMA)?;
        tx.pragma_update(None, "user_version", VERSION)?;
        tx.commit()?;
    }
    Ok(())
}
