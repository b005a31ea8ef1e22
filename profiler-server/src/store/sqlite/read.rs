//! Queries on a read connection (a WAL snapshot; runs beside the writer).

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use rusqlite::{params, Connection, Row};

use super::codec;
use super::dictionary::{Dictionary, Entries};
use crate::model::{
    Frame, RedKey, RedPoint, Span, SpanId, SpanKind, SpanStatus, StackCounts, TraceId, BUCKET_NS,
    SPAN_ID_LABEL, TRACE_ID_LABEL,
};
use crate::query::Selector;
use crate::store::{
    ProfileFilter, RedFilter, ServiceSummary, SpanDetail, StoreError, TimeRange, TraceFilter,
    TraceSummary,
};

/// First and last bucket overlapping a range.
fn buckets(range: TimeRange) -> (i64, i64) {
    (
        range.from_ns.div_euclid(BUCKET_NS),
        range.until_ns.saturating_sub(1).div_euclid(BUCKET_NS),
    )
}

/// Ids of the series matching a selector, `None` for "all" (empty selector).
fn matching_series(
    conn: &Connection,
    dictionary: &Dictionary,
    selector: &Selector,
    candidates: impl IntoIterator<Item = i64>,
) -> Result<Vec<i64>, StoreError> {
    let mut out = Vec::new();
    for id in candidates {
        if selector.is_empty() || selector.matches(&dictionary.series(conn, id)?.labels) {
            out.push(id);
        }
    }
    Ok(out)
}

/// Series with samples in range.
fn series_in_range(conn: &Connection, range: TimeRange) -> Result<Vec<i64>, StoreError> {
    let (first, last) = buckets(range);
    let mut stmt =
        conn.prepare_cached("SELECT DISTINCT series FROM samples WHERE bucket BETWEEN ?1 AND ?2")?;
    let rows = stmt.query_map([first, last], |row| row.get(0))?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// The services of profile series, spans and RED points in range.
pub fn services(
    conn: &Connection,
    dictionary: &Dictionary,
    range: TimeRange,
) -> Result<Vec<ServiceSummary>, StoreError> {
    let mut services: BTreeMap<String, (u64, u64)> = BTreeMap::new();
    let (first, last) = buckets(range);
    let mut stmt = conn.prepare_cached(
        "SELECT series, SUM(total) FROM samples WHERE bucket BETWEEN ?1 AND ?2 GROUP BY series",
    )?;
    let mut rows = stmt.query([first, last])?;
    while let Some(row) = rows.next()? {
        let info = dictionary.series(conn, row.get(0)?)?;
        let total: i64 = row.get(1)?;
        if !info.service.is_empty() {
            services.entry(info.service.clone()).or_default().0 += total.max(0) as u64;
        }
    }
    let mut stmt = conn.prepare_cached(
        "SELECT service, COUNT(*) FROM spans WHERE start_ns >= ?1 AND start_ns < ?2 \
         GROUP BY service",
    )?;
    let mut rows = stmt.query([range.from_ns, range.until_ns])?;
    while let Some(row) = rows.next()? {
        let count: i64 = row.get(1)?;
        services.entry(row.get(0)?).or_default().1 += count.max(0) as u64;
    }
    let mut stmt = conn.prepare_cached(
        "SELECT DISTINCT s.service FROM red_points p JOIN red_series s ON s.id = p.series \
         WHERE p.time_ns >= ?1 AND p.time_ns < ?2",
    )?;
    let mut rows = stmt.query([range.from_ns, range.until_ns])?;
    while let Some(row) = rows.next()? {
        services.entry(row.get(0)?).or_default();
    }
    Ok(services
        .into_iter()
        .filter(|(name, _)| !name.is_empty())
        .map(|(name, (profile_samples, spans))| ServiceSummary {
            name,
            profile_samples,
            spans,
        })
        .collect())
}

fn has_span_samples(
    conn: &Connection,
    range: TimeRange,
    series: &[i64],
) -> Result<bool, StoreError> {
    let (first, last) = buckets(range);
    let wanted: HashSet<i64> = series.iter().copied().collect();
    let mut stmt = conn.prepare_cached(
        "SELECT DISTINCT series FROM span_samples WHERE bucket BETWEEN ?1 AND ?2",
    )?;
    let mut rows = stmt.query([first, last])?;
    while let Some(row) = rows.next()? {
        if wanted.contains(&row.get(0)?) {
            return Ok(true);
        }
    }
    Ok(false)
}

/// Label names of the matching series in range.
pub fn label_names(
    conn: &Connection,
    dictionary: &Dictionary,
    range: TimeRange,
    selector: &Selector,
) -> Result<Vec<String>, StoreError> {
    let series = matching_series(conn, dictionary, selector, series_in_range(conn, range)?)?;
    let mut names = BTreeSet::new();
    for &id in &series {
        for (name, _) in &dictionary.series(conn, id)?.labels {
            names.insert(name.clone());
        }
    }
    if !series.is_empty() && has_span_samples(conn, range, &series)? {
        names.insert(TRACE_ID_LABEL.to_owned());
        names.insert(SPAN_ID_LABEL.to_owned());
    }
    Ok(names.into_iter().collect())
}

/// Values of a label over the matching series in range.
pub fn label_values(
    conn: &Connection,
    dictionary: &Dictionary,
    range: TimeRange,
    selector: &Selector,
    name: &str,
    limit: usize,
) -> Result<Vec<String>, StoreError> {
    let mut values = BTreeSet::new();
    if name == TRACE_ID_LABEL || name == SPAN_ID_LABEL {
        let series: HashSet<i64> =
            matching_series(conn, dictionary, selector, series_in_range(conn, range)?)?
                .into_iter()
                .collect();
        let (first, last) = buckets(range);
        let mut stmt = conn.prepare_cached(
            "SELECT trace_id, span_id, series FROM span_samples WHERE bucket BETWEEN ?1 AND ?2",
        )?;
        let mut rows = stmt.query([first, last])?;
        while let Some(row) = rows.next()? {
            if !series.contains(&row.get(2)?) {
                continue;
            }
            let value = if name == TRACE_ID_LABEL {
                let id: Vec<u8> = row.get(0)?;
                TraceId::from_slice(&id)
                    .filter(|t| t.0 != [0; 16])
                    .map(|t| t.to_string())
            } else {
                let id: Vec<u8> = row.get(1)?;
                SpanId::from_slice(&id)
                    .filter(|s| s.0 != [0; 8])
                    .map(|s| s.to_string())
            };
            values.extend(value);
        }
    } else {
        for id in matching_series(conn, dictionary, selector, series_in_range(conn, range)?)? {
            let info = dictionary.series(conn, id)?;
            if let Some((_, value)) = info.labels.iter().find(|(n, _)| n == name) {
                values.insert(value.clone());
            }
        }
    }
    Ok(values.into_iter().take(limit).collect())
}

/// Values keyed by an interned id (stack or function). Ids count up from 1 and are never
/// deleted, so a `Vec` indexed by id is as large as the dictionary at most; ids beyond
/// `dense_limit` (only in a corrupt database) go to a map instead of growing the `Vec`.
struct IdMap<V> {
    dense: Vec<Option<V>>,
    dense_limit: usize,
    sparse: HashMap<i64, V>,
}

impl<V: Copy> IdMap<V> {
    /// A map for ids of a dictionary holding `known` of them.
    fn new(known: usize) -> Self {
        Self {
            dense: Vec::new(),
            // Room for entries committed after the dictionary was read.
            dense_limit: known.saturating_mul(2).saturating_add(1 << 16),
            sparse: HashMap::new(),
        }
    }

    /// The slot of `id`, inserting `default` when absent.
    #[inline]
    fn entry(&mut self, id: i64, default: V) -> &mut V {
        match usize::try_from(id) {
            Ok(i) if i < self.dense_limit => {
                if i >= self.dense.len() {
                    self.dense.resize(i + 1, None);
                }
                self.dense[i].get_or_insert(default)
            }
            _ => self.sparse.entry(id).or_insert(default),
        }
    }

    /// The value of `id`, if present.
    #[inline]
    fn get(&self, id: i64) -> Option<V> {
        match usize::try_from(id) {
            Ok(i) if i < self.dense_limit => self.dense.get(i).copied().flatten(),
            _ => self.sparse.get(&id).copied(),
        }
    }

    /// Every entry, ids ascending.
    fn into_sorted(self) -> Vec<(i64, V)> {
        let mut out: Vec<(i64, V)> = self
            .dense
            .into_iter()
            .enumerate()
            .filter_map(|(i, v)| Some((i64::try_from(i).ok()?, v?)))
            .collect();
        if !self.sparse.is_empty() {
            out.extend(self.sparse);
            out.sort_unstable_by_key(|&(id, _)| id);
        }
        out
    }
}

/// Sample counts per stack id: an [`IdMap`] without the `Option`, as the sum of every pair
/// of every selected row goes through it.
struct Tally {
    counts: Vec<u64>,
    /// Set for a stack whose count may read 0 although it was seen (a pair counting 0, or a
    /// sum that wrapped).
    seen_zero: Vec<bool>,
    dense_limit: usize,
    sparse: HashMap<i64, u64>,
}

impl Tally {
    /// A tally for ids of a dictionary holding `known` stacks.
    fn new(known: usize) -> Self {
        let dense_limit = known.saturating_mul(2).saturating_add(1 << 16);
        let len = known.saturating_add(1).min(dense_limit);
        Self {
            counts: vec![0; len],
            seen_zero: vec![false; len],
            dense_limit,
            sparse: HashMap::new(),
        }
    }

    #[inline]
    fn add(&mut self, id: i64, count: u64) {
        match usize::try_from(id) {
            Ok(i) if i < self.dense_limit => {
                if i >= self.counts.len() {
                    self.counts.resize(i + 1, 0);
                    self.seen_zero.resize(i + 1, false);
                }
                let (sum, wrapped) = self.counts[i].overflowing_add(count);
                self.counts[i] = sum;
                if count == 0 || wrapped {
                    self.seen_zero[i] = true;
                }
            }
            _ => *self.sparse.entry(id).or_insert(0) += count,
        }
    }

    /// Every stack seen, ids ascending.
    fn into_sorted(self) -> Vec<(i64, u64)> {
        let mut out: Vec<(i64, u64)> = self
            .counts
            .iter()
            .zip(&self.seen_zero)
            .enumerate()
            .filter(|&(_, (&count, &seen_zero))| count != 0 || seen_zero)
            .filter_map(|(i, (&count, _))| Some((i64::try_from(i).ok()?, count)))
            .collect();
        if !self.sparse.is_empty() {
            out.extend(self.sparse);
            out.sort_unstable_by_key(|&(id, _)| id);
        }
        out
    }
}

/// Merges the selected samples per stack and resolves stacks to frames.
pub fn stack_counts(
    conn: &Connection,
    dictionary: &Dictionary,
    filter: &ProfileFilter,
) -> Result<StackCounts, StoreError> {
    let (first, last) = buckets(filter.range);
    let (known_stacks, known_functions, known_series) = {
        let entries = dictionary.read();
        (
            entries.stacks.len(),
            entries.functions.len(),
            entries.series.len(),
        )
    };
    let mut by_stack = Tally::new(known_stacks);
    let mut by_series: IdMap<u64> = IdMap::new(known_series);
    let mut wanted: IdMap<bool> = IdMap::new(known_series);
    // Rows are `(series, counts)`; the blob is read only for selected series.
    let mut add = |row: &Row<'_>| -> Result<(), StoreError> {
        let series: i64 = row.get(0)?;
        let matches = match wanted.get(series) {
            Some(m) => m,
            None => {
                let m = filter.selector.is_empty()
                    || filter
                        .selector
                        .matches(&dictionary.series(conn, series)?.labels);
                *wanted.entry(series, m) = m;
                m
            }
        };
        if !matches {
            return Ok(());
        }
        let blob = row.get_ref(1)?.as_blob()?;
        if !blob.is_empty() {
            let mut row_total = 0u64;
            codec::for_each_count(blob, |stack, count| {
                by_stack.add(stack, count);
                row_total += count;
            })?;
            *by_series.entry(series, 0) += row_total;
        }
        Ok(())
    };
    if filter.trace_id.is_some() || filter.span_id.is_some() {
        let trace = filter.trace_id.map(|t| t.0.to_vec());
        let span = filter.span_id.map(|s| s.0.to_vec());
        let mut stmt = match (&trace, &span) {
            (Some(_), _) => conn.prepare_cached(
                "SELECT series, counts FROM span_samples WHERE trace_id = ?1 \
                 AND (?2 IS NULL OR span_id = ?2) AND bucket BETWEEN ?3 AND ?4",
            )?,
            (None, _) => conn.prepare_cached(
                "SELECT series, counts FROM span_samples WHERE span_id = ?2 \
                 AND (?1 IS NULL) AND bucket BETWEEN ?3 AND ?4",
            )?,
        };
        let mut rows = stmt.query(params![trace, span, first, last])?;
        while let Some(row) = rows.next()? {
            add(row)?;
        }
    } else {
        let mut stmt = conn
            .prepare_cached("SELECT series, counts FROM samples WHERE bucket BETWEEN ?1 AND ?2")?;
        let mut rows = stmt.query([first, last])?;
        while let Some(row) = rows.next()? {
            add(row)?;
        }
    }
    // The period of the series contributing the most samples.
    let mut period_ns = 0;
    let by_series = by_series.into_sorted();
    if let Some(&(series, _)) = by_series.iter().max_by_key(|&&(id, count)| (count, -id)) {
        period_ns = dictionary.series(conn, series)?.period_ns;
    }
    let mut out = StackCounts {
        period_ns,
        ..StackCounts::default()
    };
    resolve_stacks(
        conn,
        dictionary,
        &by_stack.into_sorted(),
        known_functions,
        &mut out,
    )?;
    Ok(out)
}

/// Adds `stacks` (id, count) to `out`, their functions as indexes into `out.frames` (which
/// gets each function on first use).
fn resolve_stacks(
    conn: &Connection,
    dictionary: &Dictionary,
    stacks: &[(i64, u64)],
    known_functions: usize,
    out: &mut StackCounts,
) -> Result<(), StoreError> {
    // Function id → index into `out.frames`.
    let mut frame_index: IdMap<u32> = IdMap::new(known_functions);
    out.stacks.reserve_exact(stacks.len());
    // One read lock per chunk rather than one per stack and function (a lock, a hash lookup
    // and an `Arc` clone per stack cost more than the rest of the query), and short enough
    // not to hold up the writer publishing entries.
    for chunk in stacks.chunks(4096) {
        // Stacks not in memory yet (committed after the dictionary was published) are loaded
        // from this snapshot first, with the read lock released.
        let mut entries = dictionary.read();
        let functions_of = match stacks_in_memory(&entries, chunk) {
            Ok(functions_of) => functions_of,
            Err(missing) => {
                drop(entries);
                for id in missing {
                    dictionary.stack(conn, id)?;
                }
                entries = dictionary.read();
                // Entries are never removed: every stack is in memory now.
                stacks_in_memory(&entries, chunk).map_err(|_| StoreError::Corrupt {
                    what: "sample refers to a missing stack",
                })?
            }
        };
        // Frames not in memory yet: (index into `out.frames`, function id), filled in below.
        let mut missing_functions = Vec::new();
        for (&(_, count), functions) in chunk.iter().zip(functions_of) {
            let mut frames = Vec::with_capacity(functions.len());
            for &function in functions {
                let function = i64::from(function);
                let index = match frame_index.get(function) {
                    Some(i) => i,
                    None => {
                        let i = u32::try_from(out.frames.len()).unwrap_or(u32::MAX);
                        let frame = match entries.functions.get(&function) {
                            Some(frame) => frame.clone(),
                            None => {
                                missing_functions.push((out.frames.len(), function));
                                Frame {
                                    name: String::new(),
                                    kernel: false,
                                }
                            }
                        };
                        out.frames.push(frame);
                        *frame_index.entry(function, i) = i;
                        i
                    }
                };
                frames.push(index);
            }
            out.stacks.push((frames, count));
        }
        drop(entries);
        for (index, function) in missing_functions {
            out.frames[index] = dictionary.function(conn, function)?;
        }
    }
    Ok(())
}

/// The functions of each stack of `chunk` from memory, else the ids of those not in memory
/// (committed after the dictionary was published).
fn stacks_in_memory<'a>(
    entries: &'a Entries,
    chunk: &[(i64, u64)],
) -> Result<Vec<&'a [u32]>, Vec<i64>> {
    let mut missing = Vec::new();
    let functions_of = chunk
        .iter()
        .map(|&(id, _)| match entries.stacks.get(&id) {
            Some(functions) => &functions[..],
            None => {
                missing.push(id);
                &[]
            }
        })
        .collect();
    if missing.is_empty() {
        Ok(functions_of)
    } else {
        Err(missing)
    }
}

/// Trace search.
pub fn traces(conn: &Connection, filter: &TraceFilter) -> Result<Vec<TraceSummary>, StoreError> {
    let range = filter.range.unwrap_or(TimeRange::ALL);
    let mut stmt = conn.prepare_cached(
        "SELECT t.trace_id, t.service, t.name, t.start_ns, t.end_ns, t.error, t.span_count, \
         EXISTS (SELECT 1 FROM span_samples s WHERE s.trace_id = t.trace_id) \
         FROM traces t \
         WHERE t.start_ns >= ?1 AND t.start_ns < ?2 \
         AND (?3 IS NULL OR t.service = ?3) AND (?4 IS NULL OR t.route = ?4) \
         AND (?5 IS NULL OR t.error = ?5) AND (?6 IS NULL OR t.end_ns - t.start_ns >= ?6) \
         ORDER BY t.start_ns DESC LIMIT ?7",
    )?;
    let limit = i64::try_from(filter.limit).unwrap_or(i64::MAX);
    let mut rows = stmt.query(params![
        range.from_ns,
        range.until_ns,
        filter.service,
        filter.route,
        filter.error,
        filter.min_duration_ns,
        limit
    ])?;
    let mut out = Vec::new();
    while let Some(row) = rows.next()? {
        let id: Vec<u8> = row.get(0)?;
        out.push(TraceSummary {
            trace_id: TraceId::from_slice(&id).ok_or(StoreError::Corrupt {
                what: "trace id is not 16 bytes",
            })?,
            service: row.get(1)?,
            name: row.get(2)?,
            start_ns: row.get(3)?,
            end_ns: row.get(4)?,
            error: row.get(5)?,
            span_count: row.get::<_, i64>(6)?.max(0) as u64,
            has_profile: row.get(7)?,
        });
    }
    Ok(out)
}

fn span_from_row(trace_id: TraceId, row: &Row<'_>) -> Result<Span, StoreError> {
    let span_id: Vec<u8> = row.get(0)?;
    let parent: Option<Vec<u8>> = row.get(1)?;
    let attributes: String = row.get(9)?;
    let attributes = match serde_json::from_str(&attributes) {
        Ok(serde_json::Value::Object(map)) => map,
        _ => serde_json::Map::new(),
    };
    Ok(Span {
        trace_id,
        span_id: SpanId::from_slice(&span_id).ok_or(StoreError::Corrupt {
            what: "span id is not 8 bytes",
        })?,
        parent_span_id: parent.as_deref().and_then(SpanId::from_slice),
        service: row.get(2)?,
        name: row.get(3)?,
        kind: SpanKind::from_i32(row.get(4)?),
        start_ns: row.get(5)?,
        end_ns: row.get(6)?,
        status: SpanStatus::from_i32(row.get(7)?),
        route: row.get(8)?,
        attributes,
    })
}

/// All spans of a trace, by start, with their profile sample counts.
pub fn trace(conn: &Connection, trace_id: TraceId) -> Result<Vec<SpanDetail>, StoreError> {
    let mut samples: HashMap<Vec<u8>, u64> = HashMap::new();
    let mut stmt = conn.prepare_cached(
        "SELECT span_id, SUM(total) FROM span_samples WHERE trace_id = ?1 GROUP BY span_id",
    )?;
    let mut rows = stmt.query([&trace_id.0[..]])?;
    while let Some(row) = rows.next()? {
        let total: i64 = row.get(1)?;
        samples.insert(row.get(0)?, total.max(0) as u64);
    }
    let mut stmt = conn.prepare_cached(
        "SELECT span_id, parent_span_id, service, name, kind, start_ns, end_ns, status, route, \
         attributes FROM spans WHERE trace_id = ?1 ORDER BY start_ns, span_id",
    )?;
    let mut rows = stmt.query([&trace_id.0[..]])?;
    let mut out = Vec::new();
    while let Some(row) = rows.next()? {
        let span = span_from_row(trace_id, row)?;
        let profile_samples = samples.get(&span.span_id.0[..]).copied().unwrap_or(0);
        out.push(SpanDetail {
            span,
            profile_samples,
        });
    }
    Ok(out)
}

/// RED points in range (from the filter), joined with their series.
pub fn red_points(conn: &Connection, filter: &RedFilter) -> Result<Vec<RedPoint>, StoreError> {
    let range = filter.range.unwrap_or(TimeRange::ALL);
    let mut stmt = conn.prepare_cached(
        "SELECT s.service, s.route, s.method, s.kind, s.error, p.stream, p.start_ns, p.time_ns, \
         p.cumulative, p.count, p.sum, p.bounds, p.counts \
         FROM red_points p JOIN red_series s ON s.id = p.series \
         WHERE p.time_ns >= ?1 AND p.time_ns <= ?2 \
         AND (?3 IS NULL OR s.service = ?3) AND (?4 IS NULL OR s.route = ?4)",
    )?;
    let mut rows = stmt.query(params![
        range.from_ns,
        range.until_ns,
        filter.service,
        filter.route
    ])?;
    let mut out = Vec::new();
    while let Some(row) = rows.next()? {
        let bounds_blob = row.get_ref(11)?.as_blob()?;
        if bounds_blob.len() % 8 != 0 {
            return Err(StoreError::Corrupt {
                what: "histogram bounds are not f64s",
            });
        }
        let bounds = bounds_blob
            .chunks_exact(8)
            .map(|c| f64::from_le_bytes(c.try_into().unwrap_or([0; 8])))
            .collect();
        let counts_blob = row.get_ref(12)?.as_blob()?;
        let mut counts = Vec::new();
        let mut pos = 0;
        while pos < counts_blob.len() {
            counts.push(codec::get_varint(counts_blob, &mut pos)?);
        }
        let stream: i64 = row.get(5)?;
        let count: i64 = row.get(9)?;
        out.push(RedPoint {
            key: RedKey {
                service: row.get(0)?,
                route: row.get(1)?,
                method: row.get(2)?,
                kind: row.get(3)?,
                error: row.get(4)?,
            },
            stream: stream as u64,
            start_ns: row.get(6)?,
            time_ns: row.get(7)?,
            cumulative: row.get(8)?,
            count: count.max(0) as u64,
            sum: row.get(10)?,
            bounds,
            counts,
        });
    }
    Ok(out)
}
