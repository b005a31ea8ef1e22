//! The embedded store: SQLite in WAL mode, one writer thread, a pool of read connections.
//!
//! # Schema (see `schema.rs`)
//!
//! - `functions(id, name, kernel)` and `stacks(id, hash, frames)`: interned; a stack is the
//!   varint function ids root first, found again by its FNV-1a hash;
//! - `series(id, labels, service, period_ns)`: one per sorted label set, without
//!   `trace_id`/`span_id` (those would make every request a series);
//! - `samples(bucket, series) → (total, counts)`, `WITHOUT ROWID`, clustered by 10 s bucket:
//!   `counts` packs the (stack id delta, count) varint pairs of the bucket, so a sample that
//!   repeats a stack costs nothing and a distinct stack ~2-3 bytes; retention deletes a prefix;
//! - `span_samples(trace_id, span_id, bucket, series) → (total, counts)`: the samples labelled
//!   with a trace/span id, for span flame graphs and `profile_samples`;
//! - `spans` (one row per span, attributes as JSON) and `traces` (one summary row per trace,
//!   kept current on ingest, for the trace search);
//! - `red_series(service, route, method, kind, error)` and `red_points` (one row per
//!   histogram data point; cumulative points become deltas at query time).
//!
//! # Threads
//!
//! All writes go through one thread owning the write connection, fed by a bounded channel:
//! SQLite allows one writer at a time anyway, so a single owner never meets `SQLITE_BUSY`,
//! keeps the interned-id caches without locking on the hot path, and gives back-pressure
//! (ingest awaits a free slot instead of piling up blocked threads). Each command is one
//! transaction and is answered after `COMMIT` returns (`synchronous=FULL`), so an acknowledged
//! write survives `kill -9` and power loss. Reads run on tokio's blocking pool with pooled
//! read-only connections; WAL gives them a consistent snapshot beside the writer.
//!
//! # Size
//!
//! `cargo bench -p profiler-server --bench store` ingests 1 h of 100 processes × 2 threads at
//! 19 Hz (6.84 M samples, ~300 distinct stacks per process): 1.8 bytes per sample on disk,
//! ~1 M samples/s ingest (20 ms per 10 s node profile, fsync included), 320 ms for the
//! hour's flame graph over all series, 25 ms for one service (release build, 2 cores).

mod codec;
mod dictionary;
mod read;
mod schema;
mod write;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use async_trait::async_trait;
use rusqlite::{Connection, OpenFlags};
use tokio::sync::{mpsc, oneshot};

use self::dictionary::Dictionary;
use self::write::{Command, Writer};
use super::{
    ProfileFilter, RedFilter, ServiceSummary, SpanDetail, Store, StoreError, TimeRange,
    TraceFilter, TraceSummary, WriteSummary,
};
use crate::model::{Profile, RedPoint, Span, StackCounts, TraceId};
use crate::query::Selector;

/// Name of the database file inside the data directory.
pub const DB_FILE: &str = "profiler.sqlite3";

/// Requests queued for the writer before ingest waits.
const WRITER_QUEUE: usize = 64;

/// The SQLite store.
pub struct SqliteStore {
    writer: Mutex<Option<mpsc::Sender<Command>>>,
    writer_thread: Mutex<Option<std::thread::JoinHandle<()>>>,
    ready: Arc<AtomicBool>,
    readers: Arc<Readers>,
}

impl SqliteStore {
    /// Opens (creating if needed) the store in `data_dir` and starts its writer thread.
    pub fn open(data_dir: &Path) -> Result<Self, StoreError> {
        std::fs::create_dir_all(data_dir).map_err(|source| StoreError::DataDir {
            path: data_dir.display().to_string(),
            source,
        })?;
        let path = data_dir.join(DB_FILE);
        let mut conn = Connection::open(&path)?;
        schema::migrate(&mut conn)?;
        schema::configure(&conn)?;
        let dictionary = Arc::new(Dictionary::load(&conn)?);
        let readers = Arc::new(Readers {
            path,
            dictionary: Arc::clone(&dictionary),
            idle: Mutex::new(Vec::new()),
        });
        let (sender, receiver) = mpsc::channel(WRITER_QUEUE);
        let ready = Arc::new(AtomicBool::new(true));
        let writer = Writer::new(conn, dictionary);
        let thread_ready = Arc::clone(&ready);
        let thread = std::thread::Builder::new()
            .name("store-writer".to_owned())
            .spawn(move || {
                writer.run(receiver);
                thread_ready.store(false, Ordering::SeqCst);
            })
            .map_err(|source| StoreError::DataDir {
                path: data_dir.display().to_string(),
                source,
            })?;
        Ok(Self {
            writer: Mutex::new(Some(sender)),
            writer_thread: Mutex::new(Some(thread)),
            ready,
            readers,
        })
    }

    async fn send<T>(
        &self,
        command: impl FnOnce(oneshot::Sender<Result<T, StoreError>>) -> Command,
    ) -> Result<T, StoreError> {
        let sender = self
            .writer
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
            .ok_or(StoreError::Closed)?;
        let (reply, result) = oneshot::channel();
        sender
            .send(command(reply))
            .await
            .map_err(|_| StoreError::Closed)?;
        result.await.map_err(|_| StoreError::Closed)?
    }

    async fn read<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Connection, &Dictionary) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        let readers = Arc::clone(&self.readers);
        tokio::task::spawn_blocking(move || readers.with(f))
            .await
            .map_err(|e| StoreError::Task {
                message: e.to_string(),
            })?
    }
}

/// Pooled read-only connections.
struct Readers {
    path: PathBuf,
    dictionary: Arc<Dictionary>,
    idle: Mutex<Vec<Connection>>,
}

impl Readers {
    fn with<T>(
        &self,
        f: impl FnOnce(&Connection, &Dictionary) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let pooled = self
            .idle
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .pop();
        let conn = match pooled {
            Some(conn) => conn,
            None => {
                let conn = Connection::open_with_flags(
                    &self.path,
                    OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
                )?;
                conn.busy_timeout(std::time::Duration::from_secs(10))?;
                conn
            }
        };
        let result = f(&conn, &self.dictionary);
        let mut idle = self.idle.lock().unwrap_or_else(PoisonError::into_inner);
        if idle.len() < 8 {
            idle.push(conn);
        }
        result
    }
}

#[async_trait]
impl Store for SqliteStore {
    async fn write_profile(&self, profile: Profile) -> Result<WriteSummary, StoreError> {
        self.send(|reply| Command::Profile(profile, reply)).await
    }

    async fn write_spans(&self, spans: Vec<Span>) -> Result<(), StoreError> {
        self.send(|reply| Command::Spans(spans, reply)).await
    }

    async fn write_red_points(&self, points: Vec<RedPoint>) -> Result<(), StoreError> {
        self.send(|reply| Command::RedPoints(points, reply)).await
    }

    async fn delete_before(&self, cutoff_ns: i64) -> Result<u64, StoreError> {
        self.send(|reply| Command::DeleteBefore(cutoff_ns, reply))
            .await
    }

    fn is_ready(&self) -> bool {
        self.ready.load(Ordering::SeqCst)
            && self
                .writer
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .is_some()
    }

    async fn close(&self) {
        // Dropping the last sender ends the writer's loop after the queued commands.
        drop(
            self.writer
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .take(),
        );
        let thread = self
            .writer_thread
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if let Some(thread) = thread {
            let joined = tokio::task::spawn_blocking(move || thread.join()).await;
            if !matches!(joined, Ok(Ok(()))) {
                tracing::error!("store writer thread panicked");
            }
        }
    }

    async fn services(&self, range: TimeRange) -> Result<Vec<ServiceSummary>, StoreError> {
        self.read(move |conn, dict| read::services(conn, dict, range))
            .await
    }

    async fn label_names(
        &self,
        range: TimeRange,
        selector: Selector,
    ) -> Result<Vec<String>, StoreError> {
        self.read(move |conn, dict| read::label_names(conn, dict, range, &selector))
            .await
    }

    async fn label_values(
        &self,
        range: TimeRange,
        selector: Selector,
        name: String,
        limit: usize,
    ) -> Result<Vec<String>, StoreError> {
        self.read(move |conn, dict| read::label_values(conn, dict, range, &selector, &name, limit))
            .await
    }

    async fn stack_counts(&self, filter: ProfileFilter) -> Result<StackCounts, StoreError> {
        self.read(move |conn, dict| read::stack_counts(conn, dict, &filter))
            .await
    }

    async fn traces(&self, filter: TraceFilter) -> Result<Vec<TraceSummary>, StoreError> {
        self.read(move |conn, _| read::traces(conn, &filter)).await
    }

    async fn trace(&self, trace_id: TraceId) -> Result<Vec<SpanDetail>, StoreError> {
        self.read(move |conn, _| read::trace(conn, trace_id)).await
    }

    async fn red_points(&self, filter: RedFilter) -> Result<Vec<RedPoint>, StoreError> {
        self.read(move |conn, _| read::red_points(conn, &filter))
            .await
    }
}

#[cfg(test)]
#[path = "tests.rs"]
mod tests;
