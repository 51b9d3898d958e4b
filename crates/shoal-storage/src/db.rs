//! Piece metadata in redb (`metadata.redb`): one row per task, one row per recorded piece.
//!
//! Tables:
//! - `tasks`: task id -> JSON [`TaskRow`] (layout, generation, times, finished flag).
//! - `pieces`: (task id, piece number) -> (offset, length, crc32). A piece row exists only after
//!   its bytes were written to the content file.
//! - `meta`: schema version and the next task generation.
//!
//! Every task incarnation gets a fresh `generation`. A piece is recorded only if the task row
//! still carries the generation the writer saw before writing its bytes, so a write that raced
//! with a delete (and maybe a re-create) of the same task can never be recorded against a file
//! that does not hold its bytes.
//!
//! Durability: task creation, finishing and removal commit with redb's `Immediate` durability
//! (fsync before `commit` returns). Piece records and access times are *relaxed*: they commit
//! with `Durability::None` (visible at once, not fsynced) and every
//! [`RELAXED_COMMITS_PER_SYNC`]th of them, like every immediate commit and redb's own commit on
//! close, makes all earlier ones durable. A killed process therefore loses at most the last few
//! piece records, whose bytes are simply fetched again; it never keeps a record without bytes.
//! GC removal is relaxed too and followed by an empty immediate commit (see
//! [`Metadata::remove_unchanged`]). All functions block and run on blocking threads.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::{AtomicU32, Ordering};

use redb::{Database, Durability, ReadableTable, TableDefinition, WriteTransaction};
use serde::{Deserialize, Serialize};
use shoal_types::{PieceDigest, PieceLayout, PieceNumber, TaskId};

use crate::clock::to_system_time;
use crate::{PieceRecord, StoreError, TaskState};

const TASKS: TableDefinition<&str, &[u8]> = TableDefinition::new("tasks");
const PIECES: TableDefinition<(&str, u32), (u64, u64, u32)> = TableDefinition::new("pieces");
const META: TableDefinition<&str, u64> = TableDefinition::new("meta");

const SCHEMA_VERSION_KEY: &str = "schema_version";
const NEXT_GENERATION_KEY: &str = "next_generation";
/// One relaxed commit in this many is made durable. Bounds both what a kill can lose and how far
/// redb's file grows, since redb frees pages only on durable commits.
pub(crate) const RELAXED_COMMITS_PER_SYNC: u32 = 32;
/// Bump on any change to the tables or to [`TaskRow`]'s encoding.
pub(crate) const SCHEMA_VERSION: u64 = 1;

/// The metadata database.
#[derive(Debug)]
pub(crate) struct Metadata {
    db: Database,
    relaxed_commits: AtomicU32,
}

/// What the `tasks` table stores for one task. Times are nanoseconds since the unix epoch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct TaskRow {
    pub(crate) content_length: u64,
    pub(crate) piece_length: u64,
    pub(crate) generation: u64,
    pub(crate) created_at: u64,
    pub(crate) accessed_at: u64,
    pub(crate) finished: bool,
}

#[derive(Debug, thiserror::Error)]
#[error("piece length is zero or the layout has more than u32::MAX pieces")]
struct InvalidLayout;

/// Whether a layout's pieces can be numbered with `u32` (what [`PieceLayout`] assumes).
pub(crate) fn layout_is_valid(content_length: u64, piece_length: u64) -> bool {
    piece_length > 0 && content_length.div_ceil(piece_length) <= u64::from(u32::MAX)
}

impl TaskRow {
    pub(crate) fn layout(&self) -> PieceLayout {
        PieceLayout::with_piece_length(self.content_length, self.piece_length)
    }

    fn decode(key: &str, bytes: &[u8]) -> Result<Self, StoreError> {
        let corrupt =
            |source: Box<dyn std::error::Error + Send + Sync>| StoreError::CorruptMetadata {
                key: key.to_string(),
                source,
            };
        let row: Self = serde_json::from_slice(bytes).map_err(|err| corrupt(Box::new(err)))?;
        if !layout_is_valid(row.content_length, row.piece_length) {
            return Err(corrupt(Box::new(InvalidLayout)));
        }
        Ok(row)
    }

    fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("a TaskRow always serializes")
    }
}

fn parse_task_id(key: &str) -> Result<TaskId, StoreError> {
    key.parse().map_err(|err| StoreError::CorruptMetadata {
        key: key.to_string(),
        source: Box::new(err),
    })
}

fn read_row(
    tasks: &impl ReadableTable<&'static str, &'static [u8]>,
    task_id: &TaskId,
) -> Result<Option<TaskRow>, StoreError> {
    let Some(bytes) = tasks.get(task_id.as_str()).map_err(StoreError::database)? else {
        return Ok(None);
    };
    TaskRow::decode(task_id.as_str(), bytes.value()).map(Some)
}

fn read_pieces(
    pieces: &impl ReadableTable<(&'static str, u32), (u64, u64, u32)>,
    task_id: &TaskId,
) -> Result<BTreeMap<PieceNumber, PieceRecord>, StoreError> {
    let key = task_id.as_str();
    let mut records = BTreeMap::new();
    for entry in pieces
        .range((key, 0)..=(key, u32::MAX))
        .map_err(StoreError::database)?
    {
        let (number, value) = entry.map_err(StoreError::database)?;
        let (offset, length, crc) = value.value();
        let number = PieceNumber::new(number.value().1);
        let digest = PieceDigest::from_crc(crc);
        let record = PieceRecord {
            number,
            offset,
            length,
            digest,
        };
        records.insert(number, record);
    }
    Ok(records)
}

fn state_of(
    task_id: &TaskId,
    row: &TaskRow,
    pieces: BTreeMap<PieceNumber, PieceRecord>,
) -> TaskState {
    TaskState {
        task_id: task_id.clone(),
        layout: row.layout(),
        pieces,
        finished: row.finished,
        created_at: to_system_time(row.created_at),
        accessed_at: to_system_time(row.accessed_at),
    }
}

fn remove_pieces(txn: &WriteTransaction, task_id: &TaskId) -> Result<(), StoreError> {
    let key = task_id.as_str();
    let mut pieces = txn.open_table(PIECES).map_err(StoreError::database)?;
    pieces
        .retain_in((key, 0)..=(key, u32::MAX), |_, _| false)
        .map_err(StoreError::database)
}

fn write_row(txn: &WriteTransaction, task_id: &TaskId, row: &TaskRow) -> Result<(), StoreError> {
    let mut tasks = txn.open_table(TASKS).map_err(StoreError::database)?;
    tasks
        .insert(task_id.as_str(), row.encode().as_slice())
        .map_err(StoreError::database)?;
    Ok(())
}

fn row_in(txn: &WriteTransaction, task_id: &TaskId) -> Result<Option<TaskRow>, StoreError> {
    read_row(
        &txn.open_table(TASKS).map_err(StoreError::database)?,
        task_id,
    )
}

fn state_in(
    txn: &WriteTransaction,
    task_id: &TaskId,
    row: &TaskRow,
) -> Result<TaskState, StoreError> {
    let pieces = read_pieces(
        &txn.open_table(PIECES).map_err(StoreError::database)?,
        task_id,
    )?;
    Ok(state_of(task_id, row, pieces))
}

impl Metadata {
    /// Opens or creates the database and checks its schema version.
    pub(crate) fn open(path: &Path) -> Result<Self, StoreError> {
        let db = Database::create(path).map_err(StoreError::database)?;
        let metadata = Self {
            db,
            relaxed_commits: AtomicU32::new(0),
        };
        metadata.write(|txn| {
            txn.open_table(TASKS).map_err(StoreError::database)?;
            txn.open_table(PIECES).map_err(StoreError::database)?;
            let mut meta = txn.open_table(META).map_err(StoreError::database)?;
            let found = meta
                .get(SCHEMA_VERSION_KEY)
                .map_err(StoreError::database)?
                .map(|v| v.value());
            match found {
                None => {
                    meta.insert(SCHEMA_VERSION_KEY, SCHEMA_VERSION)
                        .map_err(StoreError::database)?;
                }
                Some(SCHEMA_VERSION) => {}
                Some(found) => {
                    return Err(StoreError::SchemaVersion {
                        found,
                        supported: SCHEMA_VERSION,
                    });
                }
            }
            Ok(())
        })?;
        Ok(metadata)
    }

    /// Runs `operation` in one write transaction and commits it durably; aborts on error.
    fn write<T>(
        &self,
        operation: impl FnOnce(&WriteTransaction) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        self.write_with(Durability::Immediate, operation)
    }

    /// Like [`Self::write`] for changes a kill may lose (see the module docs).
    fn write_relaxed<T>(
        &self,
        operation: impl FnOnce(&WriteTransaction) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let count = self.relaxed_commits.fetch_add(1, Ordering::Relaxed);
        let durability = if count % RELAXED_COMMITS_PER_SYNC == RELAXED_COMMITS_PER_SYNC - 1 {
            Durability::Immediate
        } else {
            Durability::None
        };
        self.write_with(durability, operation)
    }

    fn write_with<T>(
        &self,
        durability: Durability,
        operation: impl FnOnce(&WriteTransaction) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let mut txn = self.db.begin_write().map_err(StoreError::database)?;
        txn.set_durability(durability);
        match operation(&txn) {
            Ok(value) => {
                txn.commit().map_err(StoreError::database)?;
                Ok(value)
            }
            Err(err) => {
                // The operation's error is the one worth reporting; a failed abort only means the
                // transaction is discarded when dropped.
                if let Err(abort) = txn.abort() {
                    tracing::debug!(error = %abort, "abort of failed metadata transaction failed");
                }
                Err(err)
            }
        }
    }

    pub(crate) fn task_row(&self, task_id: &TaskId) -> Result<Option<TaskRow>, StoreError> {
        let txn = self.db.begin_read().map_err(StoreError::database)?;
        read_row(
            &txn.open_table(TASKS).map_err(StoreError::database)?,
            task_id,
        )
    }

    /// Every task row, for GC and startup checks.
    pub(crate) fn rows(&self) -> Result<Vec<(TaskId, TaskRow)>, StoreError> {
        let txn = self.db.begin_read().map_err(StoreError::database)?;
        let tasks = txn.open_table(TASKS).map_err(StoreError::database)?;
        let mut rows = Vec::new();
        for entry in tasks.iter().map_err(StoreError::database)? {
            let (key, bytes) = entry.map_err(StoreError::database)?;
            let row = TaskRow::decode(key.value(), bytes.value())?;
            rows.push((parse_task_id(key.value())?, row));
        }
        Ok(rows)
    }

    /// Every task with its pieces, from one consistent snapshot.
    pub(crate) fn list(&self) -> Result<Vec<TaskState>, StoreError> {
        let txn = self.db.begin_read().map_err(StoreError::database)?;
        let tasks = txn.open_table(TASKS).map_err(StoreError::database)?;
        let pieces = txn.open_table(PIECES).map_err(StoreError::database)?;
        let mut states = Vec::new();
        for entry in tasks.iter().map_err(StoreError::database)? {
            let (key, bytes) = entry.map_err(StoreError::database)?;
            let row = TaskRow::decode(key.value(), bytes.value())?;
            let task_id = parse_task_id(key.value())?;
            let records = read_pieces(&pieces, &task_id)?;
            states.push(state_of(&task_id, &row, records));
        }
        Ok(states)
    }

    /// Records a new incarnation of a task: fresh generation, no pieces, not finished.
    pub(crate) fn create_task(
        &self,
        task_id: &TaskId,
        layout: PieceLayout,
        now: u64,
    ) -> Result<TaskState, StoreError> {
        self.write(|txn| {
            let mut meta = txn.open_table(META).map_err(StoreError::database)?;
            let generation = meta
                .get(NEXT_GENERATION_KEY)
                .map_err(StoreError::database)?
                .map_or(0, |v| v.value());
            meta.insert(NEXT_GENERATION_KEY, generation + 1)
                .map_err(StoreError::database)?;
            let row = TaskRow {
                content_length: layout.content_length(),
                piece_length: layout.piece_length(),
                generation,
                created_at: now,
                accessed_at: now,
                finished: false,
            };
            remove_pieces(txn, task_id)?;
            write_row(txn, task_id, &row)?;
            Ok(state_of(task_id, &row, BTreeMap::new()))
        })
    }

    /// Sets the access time of a task and returns its state; `None` if unknown.
    pub(crate) fn touch(
        &self,
        task_id: &TaskId,
        now: u64,
    ) -> Result<Option<TaskState>, StoreError> {
        self.write_relaxed(|txn| {
            let Some(mut row) = row_in(txn, task_id)? else {
                return Ok(None);
            };
            row.accessed_at = now;
            write_row(txn, task_id, &row)?;
            state_in(txn, task_id, &row).map(Some)
        })
    }

    /// Records a piece whose bytes are already in the content file of incarnation `generation`.
    pub(crate) fn record_piece(
        &self,
        task_id: &TaskId,
        generation: u64,
        record: &PieceRecord,
        now: u64,
    ) -> Result<(), StoreError> {
        self.write_relaxed(|txn| {
            let mut row = match row_in(txn, task_id)? {
                Some(row) if row.generation == generation => row,
                _ => return Err(StoreError::TaskNotFound(task_id.clone())),
            };
            row.accessed_at = now;
            write_row(txn, task_id, &row)?;
            let mut pieces = txn.open_table(PIECES).map_err(StoreError::database)?;
            let value = (record.offset, record.length, record.digest.crc());
            pieces
                .insert((task_id.as_str(), record.number.get()), value)
                .map_err(StoreError::database)?;
            Ok(())
        })
    }

    /// The row of a task and the record of one of its pieces.
    pub(crate) fn piece(
        &self,
        task_id: &TaskId,
        piece: PieceNumber,
    ) -> Result<(TaskRow, PieceRecord), StoreError> {
        let txn = self.db.begin_read().map_err(StoreError::database)?;
        let row = read_row(
            &txn.open_table(TASKS).map_err(StoreError::database)?,
            task_id,
        )?
        .ok_or_else(|| StoreError::TaskNotFound(task_id.clone()))?;
        let pieces = txn.open_table(PIECES).map_err(StoreError::database)?;
        let value = pieces
            .get((task_id.as_str(), piece.get()))
            .map_err(StoreError::database)?;
        let Some((offset, length, crc)) = value.map(|value| value.value()) else {
            return Err(StoreError::PieceNotFound {
                task_id: task_id.clone(),
                piece,
            });
        };
        Ok((
            row,
            PieceRecord {
                number: piece,
                offset,
                length,
                digest: PieceDigest::from_crc(crc),
            },
        ))
    }

    /// Drops a piece record found corrupt, unless the task or the record changed meanwhile.
    /// The task is no longer finished.
    pub(crate) fn forget_piece(
        &self,
        task_id: &TaskId,
        generation: u64,
        record: &PieceRecord,
    ) -> Result<(), StoreError> {
        self.write(|txn| {
            let mut row = match row_in(txn, task_id)? {
                Some(row) if row.generation == generation => row,
                _ => return Ok(()),
            };
            let mut pieces = txn.open_table(PIECES).map_err(StoreError::database)?;
            let key = (task_id.as_str(), record.number.get());
            let stored = pieces
                .get(key)
                .map_err(StoreError::database)?
                .map(|value| value.value());
            if stored != Some((record.offset, record.length, record.digest.crc())) {
                return Ok(());
            }
            pieces.remove(key).map_err(StoreError::database)?;
            row.finished = false;
            write_row(txn, task_id, &row)
        })
    }

    /// Marks a task finished if every piece of its layout is recorded.
    pub(crate) fn finish(&self, task_id: &TaskId, now: u64) -> Result<TaskState, StoreError> {
        self.write(|txn| {
            let mut row =
                row_in(txn, task_id)?.ok_or_else(|| StoreError::TaskNotFound(task_id.clone()))?;
            let state = state_in(txn, task_id, &row)?;
            let recorded = u32::try_from(state.pieces.len()).expect("piece numbers are u32");
            let missing = row.layout().piece_count().saturating_sub(recorded);
            if missing > 0 {
                return Err(StoreError::Incomplete {
                    task_id: task_id.clone(),
                    missing,
                });
            }
            row.finished = true;
            row.accessed_at = now;
            write_row(txn, task_id, &row)?;
            Ok(state_of(task_id, &row, state.pieces))
        })
    }

    /// Removes a task's rows; returns the removed row, `None` if unknown.
    pub(crate) fn remove(&self, task_id: &TaskId) -> Result<Option<TaskRow>, StoreError> {
        self.write(|txn| {
            let row = row_in(txn, task_id)?;
            if row.is_some() {
                remove_pieces(txn, task_id)?;
                txn.open_table(TASKS)
                    .map_err(StoreError::database)?
                    .remove(task_id.as_str())
                    .map_err(StoreError::database)?;
            }
            Ok(row)
        })
    }

    /// Removes, in one transaction, each victim whose row is unchanged since it was chosen and
    /// which `keep` does not hold on to. `lock` runs once the write transaction has begun and
    /// what it returns lives until the removal is visible: GC passes the pin table's lock, so
    /// checking pins and removing is atomic for `pin()`. To keep that lock short the commit
    /// skips fsync; an empty durable commit follows once the lock is released. Returns the
    /// removed victims.
    pub(crate) fn remove_unchanged<L>(
        &self,
        victims: &[(TaskId, TaskRow)],
        lock: impl FnOnce() -> L,
        keep: impl Fn(&L, &TaskId) -> bool,
    ) -> Result<Vec<(TaskId, TaskRow)>, StoreError> {
        let removed = self.write_with(Durability::None, |txn| {
            let guard = lock();
            let mut removed = Vec::new();
            for (task_id, chosen) in victims {
                if keep(&guard, task_id) || row_in(txn, task_id)?.as_ref() != Some(chosen) {
                    continue;
                }
                remove_pieces(txn, task_id)?;
                txn.open_table(TASKS)
                    .map_err(StoreError::database)?
                    .remove(task_id.as_str())
                    .map_err(StoreError::database)?;
                removed.push((task_id.clone(), *chosen));
            }
            Ok((removed, guard))
        })?;
        let (removed, guard) = removed;
        drop(guard);
        self.write(|_| Ok(()))?;
        Ok(removed)
    }
}
