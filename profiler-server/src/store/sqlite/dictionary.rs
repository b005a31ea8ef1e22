//! In-memory copies of the interned tables (functions, stacks, series), shared by the writer
//! and the readers. Ids never change once committed, so a copy is always right; the writer
//! publishes new entries after its commit, and a reader that meets an id it does not know yet
//! (committed, not yet published) loads it from its own snapshot.

use std::collections::HashMap;
use std::sync::{Arc, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};

use rusqlite::{Connection, OptionalExtension};

use super::codec;
use crate::model::{Frame, Labels, SERVICE_LABEL};
use crate::store::StoreError;

/// A profile series.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SeriesInfo {
    /// Sorted labels (without trace/span ids).
    pub labels: Labels,
    /// Value of `service_name`, empty when absent.
    pub service: String,
    /// Period of its profiles, 0 when unknown.
    pub period_ns: i64,
}

impl SeriesInfo {
    /// A series of these labels.
    pub fn new(labels: Labels, period_ns: i64) -> Self {
        let service = labels
            .iter()
            .find(|(k, _)| k == SERVICE_LABEL)
            .map(|(_, v)| v.clone())
            .unwrap_or_default();
        Self {
            labels,
            service,
            period_ns,
        }
    }
}

/// The shared dictionary.
#[derive(Default)]
pub struct Dictionary {
    inner: RwLock<Entries>,
}

/// The entries; also used by the writer for entries it has not committed yet.
#[derive(Default)]
pub struct Entries {
    /// Function id → frame.
    pub functions: HashMap<i64, Frame>,
    /// Frame → function id.
    pub function_ids: HashMap<Frame, i64>,
    /// Stack id → function ids, root first.
    pub stacks: HashMap<i64, Arc<[u32]>>,
    /// Stack hash → stack ids with that hash.
    pub stack_ids: HashMap<i64, Vec<i64>>,
    /// Series id → series.
    pub series: HashMap<i64, Arc<SeriesInfo>>,
    /// Labels → series id.
    pub series_ids: HashMap<Labels, i64>,
}

impl Entries {
    /// Adds a function.
    pub fn add_function(&mut self, id: i64, frame: Frame) {
        self.function_ids.insert(frame.clone(), id);
        self.functions.insert(id, frame);
    }

    /// Adds a stack.
    pub fn add_stack(&mut self, id: i64, hash: i64, functions: Arc<[u32]>) {
        self.stacks.insert(id, functions);
        let ids = self.stack_ids.entry(hash).or_default();
        if !ids.contains(&id) {
            ids.push(id);
        }
    }

    /// Adds a series.
    pub fn add_series(&mut self, id: i64, info: Arc<SeriesInfo>) {
        self.series_ids.insert(info.labels.clone(), id);
        self.series.insert(id, info);
    }

    /// The id of a stack, if known.
    pub fn stack_id(&self, hash: i64, functions: &[u32]) -> Option<i64> {
        self.stack_ids
            .get(&hash)?
            .iter()
            .copied()
            .find(|id| self.stacks.get(id).is_some_and(|s| **s == *functions))
    }

    /// Moves every entry of `other` in.
    pub fn absorb(&mut self, other: Entries) {
        for (id, frame) in other.functions {
            self.add_function(id, frame);
        }
        for (id, stack) in other.stacks {
            let hash = codec::stack_hash(&codec::encode_stack(&stack));
            self.add_stack(id, hash, stack);
        }
        for (id, info) in other.series {
            self.add_series(id, info);
        }
    }
}

impl Dictionary {
    /// Loads every entry from the database.
    pub fn load(conn: &Connection) -> Result<Self, StoreError> {
        let mut entries = Entries::default();
        let mut stmt = conn.prepare("SELECT id, name, kernel FROM functions")?;
        let mut rows = stmt.query([])?;
        while let Some(row) = rows.next()? {
            let frame = Frame {
                name: row.get(1)?,
                kernel: row.get(2)?,
            };
            entries.add_function(row.get(0)?, frame);
        }
        let mut stmt = conn.prepare("SELECT id, hash, frames FROM stacks")?;
        let mut rows = stmt.query([])?;
        while let Some(row) = rows.next()? {
            let blob: Vec<u8> = row.get(2)?;
            entries.add_stack(row.get(0)?, row.get(1)?, codec::decode_stack(&blob)?.into());
        }
        let mut stmt = conn.prepare("SELECT id, labels, period_ns FROM series")?;
        let mut rows = stmt.query([])?;
        while let Some(row) = rows.next()? {
            let labels: String = row.get(1)?;
            let labels = decode_labels(&labels)?;
            entries.add_series(row.get(0)?, Arc::new(SeriesInfo::new(labels, row.get(2)?)));
        }
        Ok(Self {
            inner: RwLock::new(entries),
        })
    }

    /// Read access (a poisoned lock still holds consistent data: entries are only inserted).
    pub fn read(&self) -> RwLockReadGuard<'_, Entries> {
        self.inner.read().unwrap_or_else(PoisonError::into_inner)
    }

    /// Write access.
    pub fn write(&self) -> RwLockWriteGuard<'_, Entries> {
        self.inner.write().unwrap_or_else(PoisonError::into_inner)
    }

    /// A stack's functions, from memory or else from `conn`'s snapshot.
    pub fn stack(&self, conn: &Connection, id: i64) -> Result<Arc<[u32]>, StoreError> {
        if let Some(stack) = self.read().stacks.get(&id) {
            return Ok(Arc::clone(stack));
        }
        let row: Option<(i64, Vec<u8>)> = conn
            .query_row(
                "SELECT hash, frames FROM stacks WHERE id = ?1",
                [id],
                |row| Ok((row.get(0)?, row.get(1)?)),
            )
            .optional()?;
        let (hash, blob) = row.ok_or(StoreError::Corrupt {
            what: "sample refers to a missing stack",
        })?;
        let stack: Arc<[u32]> = codec::decode_stack(&blob)?.into();
        self.write().add_stack(id, hash, Arc::clone(&stack));
        Ok(stack)
    }

    /// A function's frame, from memory or else from `conn`'s snapshot.
    pub fn function(&self, conn: &Connection, id: i64) -> Result<Frame, StoreError> {
        if let Some(frame) = self.read().functions.get(&id) {
            return Ok(frame.clone());
        }
        let frame = conn
            .query_row(
                "SELECT name, kernel FROM functions WHERE id = ?1",
                [id],
                |row| {
                    Ok(Frame {
                        name: row.get(0)?,
                        kernel: row.get(1)?,
                    })
                },
            )
            .optional()?
            .ok_or(StoreError::Corrupt {
                what: "stack refers to a missing function",
            })?;
        self.write().add_function(id, frame.clone());
        Ok(frame)
    }

    /// A series, from memory or else from `conn`'s snapshot.
    pub fn series(&self, conn: &Connection, id: i64) -> Result<Arc<SeriesInfo>, StoreError> {
        if let Some(info) = self.read().series.get(&id) {
            return Ok(Arc::clone(info));
        }
        let (labels, period_ns): (String, i64) = conn
            .query_row(
                "SELECT labels, period_ns FROM series WHERE id = ?1",
                [id],
                |row| Ok((row.get(0)?, row.get(1)?)),
            )
            .optional()?
            .ok_or(StoreError::Corrupt {
                what: "sample refers to a missing series",
            })?;
        let info = Arc::new(SeriesInfo::new(decode_labels(&labels)?, period_ns));
        self.write().add_series(id, Arc::clone(&info));
        Ok(info)
    }
}

/// Labels as stored: a JSON array of `[name, value]` pairs.
pub fn encode_labels(labels: &Labels) -> String {
    serde_json::to_string(labels).unwrap_or_else(|_| "[]".to_owned())
}

/// See [`encode_labels`].
pub fn decode_labels(text: &str) -> Result<Labels, StoreError> {
    serde_json::from_str(text).map_err(|_| StoreError::Corrupt {
        what: "series labels are not JSON pairs",
    })
}
