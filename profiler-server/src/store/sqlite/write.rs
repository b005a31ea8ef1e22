//! The writer thread: owns the only write connection and applies one command per transaction,
//! replying after the commit. Interned ids it creates are published to the shared
//! [`Dictionary`] only once committed, so a rolled-back request leaves no trace in memory.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use rusqlite::{params, Connection, OptionalExtension, Transaction};
use tokio::sync::{mpsc, oneshot};

use super::codec;
use super::dictionary::{encode_labels, Dictionary, Entries, SeriesInfo};
use crate::model::{
    Labels, Profile, RedKey, RedPoint, Span, SpanId, TraceId, BUCKET_NS, SPAN_ID_LABEL,
    TRACE_ID_LABEL,
};
use crate::store::{StoreError, WriteSummary};

/// A request to the writer, with the channel its result goes back on.
pub enum Command {
    /// Store a profile.
    Profile(Profile, oneshot::Sender<Result<WriteSummary, StoreError>>),
    /// Store spans.
    Spans(Vec<Span>, oneshot::Sender<Result<(), StoreError>>),
    /// Store RED points.
    RedPoints(Vec<RedPoint>, oneshot::Sender<Result<(), StoreError>>),
    /// Delete data older than the cutoff (ns).
    DeleteBefore(i64, oneshot::Sender<Result<u64, StoreError>>),
}

/// The writer's state.
pub struct Writer {
    conn: Connection,
    dictionary: Arc<Dictionary>,
    red_series: HashMap<RedKey, i64>,
}

impl Writer {
    /// A writer on an open, migrated connection.
    pub fn new(conn: Connection, dictionary: Arc<Dictionary>) -> Self {
        Self {
            conn,
            dictionary,
            red_series: HashMap::new(),
        }
    }

    /// Serves commands until every sender is gone, then checkpoints the WAL.
    pub fn run(mut self, mut commands: mpsc::Receiver<Command>) {
        while let Some(command) = commands.blocking_recv() {
            // A client that went away does not care about the result; the write stands.
            match command {
                Command::Profile(profile, reply) => {
                    let _ = reply.send(self.write_profile(&profile));
                }
                Command::Spans(spans, reply) => {
                    let _ = reply.send(self.write_spans(&spans));
                }
                Command::RedPoints(points, reply) => {
                    let _ = reply.send(self.write_red_points(&points));
                }
                Command::DeleteBefore(cutoff_ns, reply) => {
                    let _ = reply.send(self.delete_before(cutoff_ns));
                }
            }
        }
        if let Err(error) = self
            .conn
            .query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))
        {
            tracing::warn!(%error, "final WAL checkpoint failed (the WAL is replayed on next open)");
        }
        tracing::debug!("store writer stopped");
    }

    fn write_profile(&mut self, profile: &Profile) -> Result<WriteSummary, StoreError> {
        let mut staged = Entries::default();
        let tx = self.conn.transaction()?;
        let summary = write_profile(&tx, &self.dictionary, &mut staged, profile)?;
        tx.commit()?;
        self.dictionary.write().absorb(staged);
        Ok(summary)
    }

    fn write_spans(&mut self, spans: &[Span]) -> Result<(), StoreError> {
        let tx = self.conn.transaction()?;
        {
            let mut insert = tx.prepare_cached(
                "INSERT OR IGNORE INTO spans (trace_id, span_id, parent_span_id, service, name, \
                 kind, start_ns, end_ns, status, route, attributes) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
            )?;
            let mut trace = tx.prepare_cached(UPSERT_TRACE)?;
            for span in spans {
                let attributes = serde_json::Value::Object(span.attributes.clone()).to_string();
                let inserted = insert.execute(params![
                    &span.trace_id.0[..],
                    &span.span_id.0[..],
                    span.parent_span_id.as_ref().map(|p| p.0.to_vec()),
                    span.service,
                    span.name,
                    span.kind as i32,
                    span.start_ns,
                    span.end_ns,
                    span.status as i32,
                    span.route,
                    attributes,
                ])?;
                if inserted == 1 {
                    trace.execute(params![
                        &span.trace_id.0[..],
                        span.start_ns,
                        span.end_ns,
                        span.service,
                        span.name,
                        span.route,
                        span.parent_span_id.is_none(),
                        span.status == crate::model::SpanStatus::Error,
                    ])?;
                }
            }
        }
        tx.commit()?;
        Ok(())
    }

    fn write_red_points(&mut self, points: &[RedPoint]) -> Result<(), StoreError> {
        let tx = self.conn.transaction()?;
        let mut new_series = HashMap::new();
        {
            let mut insert = tx.prepare_cached(
                "INSERT INTO red_points (series, stream, start_ns, time_ns, cumulative, count, \
                 sum, bounds, counts) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
            )?;
            for point in points {
                let series = match self
                    .red_series
                    .get(&point.key)
                    .or(new_series.get(&point.key))
                {
                    Some(&id) => id,
                    None => {
                        let id = red_series_id(&tx, &point.key)?;
                        new_series.insert(point.key.clone(), id);
                        id
                    }
                };
                let bounds: Vec<u8> = point.bounds.iter().flat_map(|b| b.to_le_bytes()).collect();
                let mut counts = Vec::with_capacity(point.counts.len());
                for &count in &point.counts {
                    codec::put_varint(&mut counts, count);
                }
                insert.execute(params![
                    series,
                    point.stream as i64,
                    point.start_ns,
                    point.time_ns,
                    point.cumulative,
                    i64::try_from(point.count).unwrap_or(i64::MAX),
                    point.sum,
                    bounds,
                    counts,
                ])?;
            }
        }
        tx.commit()?;
        self.red_series.extend(new_series);
        Ok(())
    }

    fn delete_before(&mut self, cutoff_ns: i64) -> Result<u64, StoreError> {
        let cutoff_bucket = cutoff_ns.div_euclid(BUCKET_NS);
        let tx = self.conn.transaction()?;
        let mut deleted = 0;
        deleted += tx.execute("DELETE FROM samples WHERE bucket < ?1", [cutoff_bucket])?;
        deleted += tx.execute(
            "DELETE FROM span_samples WHERE bucket < ?1",
            [cutoff_bucket],
        )?;
        deleted += tx.execute("DELETE FROM spans WHERE start_ns < ?1", [cutoff_ns])?;
        deleted += tx.execute("DELETE FROM traces WHERE start_ns < ?1", [cutoff_ns])?;
        deleted += tx.execute("DELETE FROM red_points WHERE time_ns < ?1", [cutoff_ns])?;
        tx.commit()?;
        if deleted > 0 {
            // Hand the freed pages back to the file system.
            self.conn.execute_batch("PRAGMA incremental_vacuum")?;
        }
        Ok(deleted as u64)
    }
}

/// Keeps one row per trace current; see the `traces` table in `schema.rs`. Expressions on the
/// right of `SET` see the row as it was before the update.
const UPSERT_TRACE: &str = "
INSERT INTO traces (trace_id, start_ns, end_ns, service, name, route, has_root, error, span_count)
VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, 1)
ON CONFLICT (trace_id) DO UPDATE SET
    service = CASE WHEN excluded.has_root > has_root
        OR (excluded.has_root = has_root AND excluded.start_ns < start_ns)
        THEN excluded.service ELSE service END,
    name = CASE WHEN excluded.has_root > has_root
        OR (excluded.has_root = has_root AND excluded.start_ns < start_ns)
        THEN excluded.name ELSE name END,
    route = CASE WHEN excluded.has_root > has_root
        OR (excluded.has_root = has_root AND excluded.start_ns < start_ns)
        THEN excluded.route ELSE route END,
    has_root = max(has_root, excluded.has_root),
    start_ns = min(start_ns, excluded.start_ns),
    end_ns = max(end_ns, excluded.end_ns),
    error = max(error, excluded.error),
    span_count = span_count + 1";

fn red_series_id(tx: &Transaction<'_>, key: &RedKey) -> Result<i64, StoreError> {
    let select = "SELECT id FROM red_series WHERE service = ?1 AND route = ?2 AND method = ?3 \
                  AND kind = ?4 AND error = ?5";
    let values = params![key.service, key.route, key.method, key.kind, key.error];
    if let Some(id) = tx.query_row(select, values, |row| row.get(0)).optional()? {
        return Ok(id);
    }
    tx.execute(
        "INSERT INTO red_series (service, route, method, kind, error) VALUES (?1, ?2, ?3, ?4, ?5)",
        values,
    )?;
    Ok(tx.last_insert_rowid())
}

/// Trace and span id of a sample, zero bytes for the one that is absent.
type SpanKey = ([u8; 16], [u8; 8]);

/// Splits valid `trace_id`/`span_id` labels off a label set: they go to `span_samples`
/// instead of making every request its own series. Invalid ones stay ordinary labels.
fn split_span(labels: &Labels) -> (Labels, Option<SpanKey>) {
    let mut rest = Labels::with_capacity(labels.len());
    let mut trace = None;
    let mut span = None;
    for (name, value) in labels {
        match name.as_str() {
            TRACE_ID_LABEL if TraceId::from_hex(value).is_some() => {
                trace = TraceId::from_hex(value);
            }
            SPAN_ID_LABEL if SpanId::from_hex(value).is_some() => {
                span = SpanId::from_hex(value);
            }
            _ => rest.push((name.clone(), value.clone())),
        }
    }
    let key = (trace.is_some() || span.is_some())
        .then(|| (trace.map_or([0; 16], |t| t.0), span.map_or([0; 8], |s| s.0)));
    (rest, key)
}

fn write_profile(
    tx: &Transaction<'_>,
    dictionary: &Dictionary,
    staged: &mut Entries,
    profile: &Profile,
) -> Result<WriteSummary, StoreError> {
    let mut functions = Vec::with_capacity(profile.frames.len());
    {
        let mut insert =
            tx.prepare_cached("INSERT INTO functions (name, kernel) VALUES (?1, ?2)")?;
        for frame in &profile.frames {
            let known = dictionary.read().function_ids.get(frame).copied();
            let id = match known.or_else(|| staged.function_ids.get(frame).copied()) {
                Some(id) => id,
                None => {
                    insert.execute(params![frame.name, frame.kernel])?;
                    let id = tx.last_insert_rowid();
                    staged.add_function(id, frame.clone());
                    id
                }
            };
            functions.push(u32::try_from(id).map_err(|_| StoreError::Corrupt {
                what: "function id above 2^32",
            })?);
        }
    }

    let mut series_of_set = Vec::with_capacity(profile.label_sets.len());
    {
        let mut insert = tx.prepare_cached(
            "INSERT INTO series (labels, service, period_ns) VALUES (?1, ?2, ?3)",
        )?;
        for labels in &profile.label_sets {
            let (labels, span) = split_span(labels);
            let known = dictionary.read().series_ids.get(&labels).copied();
            let id = match known.or_else(|| staged.series_ids.get(&labels).copied()) {
                Some(id) => id,
                None => {
                    let info = SeriesInfo::new(labels, profile.period_ns);
                    insert.execute(params![
                        encode_labels(&info.labels),
                        info.service,
                        info.period_ns
                    ])?;
                    let id = tx.last_insert_rowid();
                    staged.add_series(id, Arc::new(info));
                    id
                }
            };
            series_of_set.push((id, span));
        }
    }

    let mut by_series: HashMap<i64, BTreeMap<i64, u64>> = HashMap::new();
    let mut by_span: HashMap<(SpanKey, i64), BTreeMap<i64, u64>> = HashMap::new();
    {
        let mut insert = tx.prepare_cached("INSERT INTO stacks (hash, frames) VALUES (?1, ?2)")?;
        let mut stack = Vec::new();
        for sample in &profile.samples {
            stack.clear();
            for &frame in &sample.stack {
                stack.push(*functions.get(frame as usize).ok_or(StoreError::Corrupt {
                    what: "profile sample refers to a missing frame",
                })?);
            }
            let blob = codec::encode_stack(&stack);
            let hash = codec::stack_hash(&blob);
            let known = dictionary.read().stack_id(hash, &stack);
            let stack_id = match known.or_else(|| staged.stack_id(hash, &stack)) {
                Some(id) => id,
                None => {
                    insert.execute(params![hash, blob])?;
                    let id = tx.last_insert_rowid();
                    staged.add_stack(id, hash, stack.as_slice().into());
                    id
                }
            };
            let &(series, span) =
                series_of_set
                    .get(sample.labels as usize)
                    .ok_or(StoreError::Corrupt {
                        what: "profile sample refers to a missing label set",
                    })?;
            *by_series
                .entry(series)
                .or_default()
                .entry(stack_id)
                .or_insert(0) += sample.value;
            if let Some(span) = span {
                *by_span
                    .entry((span, series))
                    .or_default()
                    .entry(stack_id)
                    .or_insert(0) += sample.value;
            }
        }
    }

    let bucket = profile.time_ns.div_euclid(BUCKET_NS);
    {
        let mut select =
            tx.prepare_cached("SELECT counts FROM samples WHERE bucket = ?1 AND series = ?2")?;
        let mut upsert = tx.prepare_cached(
            "INSERT INTO samples (bucket, series, total, counts) VALUES (?1, ?2, ?3, ?4) \
             ON CONFLICT (bucket, series) DO UPDATE SET total = excluded.total, \
             counts = excluded.counts",
        )?;
        for (&series, counts) in &mut by_series {
            let existing: Option<Vec<u8>> = select
                .query_row(params![bucket, series], |row| row.get(0))
                .optional()?;
            if let Some(existing) = existing {
                codec::merge_counts(&existing, counts)?;
            }
            let total: u64 = counts.values().sum();
            upsert.execute(params![
                bucket,
                series,
                i64::try_from(total).unwrap_or(i64::MAX),
                codec::encode_counts(counts)
            ])?;
        }
    }
    {
        let mut select = tx.prepare_cached(
            "SELECT counts FROM span_samples WHERE trace_id = ?1 AND span_id = ?2 \
             AND bucket = ?3 AND series = ?4",
        )?;
        let mut upsert = tx.prepare_cached(
            "INSERT INTO span_samples (trace_id, span_id, bucket, series, total, counts) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6) ON CONFLICT (trace_id, span_id, bucket, series) \
             DO UPDATE SET total = excluded.total, counts = excluded.counts",
        )?;
        for (((trace, span), series), counts) in &mut by_span {
            let key = params![&trace[..], &span[..], bucket, series];
            let existing: Option<Vec<u8>> = select.query_row(key, |row| row.get(0)).optional()?;
            if let Some(existing) = existing {
                codec::merge_counts(&existing, counts)?;
            }
            let total: u64 = counts.values().sum();
            upsert.execute(params![
                &trace[..],
                &span[..],
                bucket,
                series,
                i64::try_from(total).unwrap_or(i64::MAX),
                codec::encode_counts(counts)
            ])?;
        }
    }
    Ok(WriteSummary {
        samples: profile.total(),
        series: by_series.len(),
    })
}
