//! The disk backend: the synchronous operations behind [`crate::Store`], run on blocking threads.
//!
//! State: the content directory, the metadata database, the pin table, the access clock and
//! the lifecycle lock. The lifecycle lock serialises what creates or removes a task as a whole
//! (prepare, finish, delete, GC) so that, for example, a delete's unlink can never hit the file
//! of a task prepared again meanwhile. Piece writes and reads do not take it; the metadata
//! generation check keeps them correct against concurrent deletes (see `db`).
//!
//! Ordering invariants:
//! - a piece's bytes are written before its row is committed, so no row lacks its bytes after
//!   a process kill; after a power cut the digest check in [`DiskStore::read_piece`] catches
//!   any lost write, and a task's file is fsynced before it is marked finished;
//! - a content file is created before its task row and unlinked after the row is removed; the
//!   open-time sweep removes files left without a row, and rows left without an intact file.

use std::collections::HashSet;
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use bytes::Bytes;
use shoal_types::{ByteRange, PieceDigest, PieceLayout, PieceNumber, TaskId};

use crate::clock::AccessClock;
use crate::content::ContentDir;
use crate::db::{layout_is_valid, Metadata, TaskRow};
use crate::pins::PinTable;
use crate::{PieceRecord, StoreError, TaskState};

/// Reads refresh a task's access time at most this often, so serving a popular task does not
/// cost a metadata commit per piece.
const READ_TOUCH_INTERVAL: Duration = Duration::from_secs(1);

/// The piece store on one directory.
#[derive(Debug)]
pub(crate) struct DiskStore {
    pub(crate) content: ContentDir,
    pub(crate) metadata: Metadata,
    pub(crate) pins: Arc<PinTable>,
    pub(crate) clock: AccessClock,
    lifecycle: Mutex<()>,
}

impl DiskStore {
    /// Opens the store under `dir` and repairs what a crash may have left: rows whose content
    /// file is missing or has the wrong length are dropped, files without a row are removed.
    pub(crate) fn open(dir: &Path) -> Result<Self, StoreError> {
        std::fs::create_dir_all(dir).map_err(|source| StoreError::io(dir, source))?;
        let content = ContentDir::open(dir.join("content"))?;
        let metadata = Metadata::open(&dir.join("metadata.redb"))?;
        let mut known = HashSet::new();
        let mut latest = 0;
        for (task_id, row) in metadata.rows()? {
            if content.is_intact(&task_id, row.content_length)? {
                latest = latest.max(row.accessed_at);
                known.insert(task_id);
                continue;
            }
            tracing::warn!(%task_id, "content file missing or truncated, dropping task");
            metadata.remove(&task_id)?;
        }
        for path in content.sweep(&known)? {
            tracing::warn!(path = %path.display(), "removed content file of unknown task");
        }
        Ok(Self {
            content,
            metadata,
            pins: Arc::default(),
            clock: AccessClock::starting_after(latest),
            lifecycle: Mutex::new(()),
        })
    }

    /// Serialises task creation and removal. Held on blocking threads only, never across
    /// `.await`; the guarded unit carries no state, so poisoning is ignored.
    pub(crate) fn lifecycle(&self) -> MutexGuard<'_, ()> {
        self.lifecycle
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    pub(crate) fn prepare_task(
        &self,
        task_id: &TaskId,
        layout: PieceLayout,
    ) -> Result<TaskState, StoreError> {
        self.content.path(task_id)?;
        if !layout_is_valid(layout.content_length(), layout.piece_length()) {
            return Err(StoreError::InvalidLayout {
                task_id: task_id.clone(),
            });
        }
        let _lifecycle = self.lifecycle();
        let Some(row) = self.metadata.task_row(task_id)? else {
            self.content.create(task_id, layout.content_length())?;
            return self.metadata.create_task(task_id, layout, self.clock.now());
        };
        if row.layout() != layout {
            return Err(StoreError::LayoutMismatch {
                task_id: task_id.clone(),
            });
        }
        if self.content.is_intact(task_id, layout.content_length())? {
            let state = self.metadata.touch(task_id, self.clock.now())?;
            return state.ok_or_else(|| StoreError::TaskNotFound(task_id.clone()));
        }
        tracing::warn!(%task_id, "content file missing or truncated, starting the task over");
        self.content.create(task_id, layout.content_length())?;
        self.metadata.create_task(task_id, layout, self.clock.now())
    }

    pub(crate) fn task(&self, task_id: &TaskId) -> Result<Option<TaskState>, StoreError> {
        self.content.path(task_id)?;
        self.metadata.touch(task_id, self.clock.now())
    }

    /// The task's row and the byte range of `piece` in its layout.
    fn piece_row(
        &self,
        task_id: &TaskId,
        piece: PieceNumber,
    ) -> Result<(TaskRow, ByteRange), StoreError> {
        let row = self
            .metadata
            .task_row(task_id)?
            .ok_or_else(|| StoreError::TaskNotFound(task_id.clone()))?;
        let range = row
            .layout()
            .piece_range(piece)
            .ok_or(StoreError::PieceOutOfRange { piece })?;
        Ok((row, range))
    }

    pub(crate) fn write_piece(
        &self,
        task_id: &TaskId,
        piece: PieceNumber,
        data: &[u8],
    ) -> Result<PieceRecord, StoreError> {
        self.content.path(task_id)?;
        let (row, range) = self.piece_row(task_id, piece)?;
        let actual = data.len() as u64;
        if actual != range.len() {
            return Err(StoreError::PieceLength {
                piece,
                expected: range.len(),
                actual,
            });
        }
        self.content.write_at(task_id, range.start, data)?;
        let record = PieceRecord {
            number: piece,
            offset: range.start,
            length: range.len(),
            digest: PieceDigest::compute(data),
        };
        self.metadata
            .record_piece(task_id, row.generation, &record, self.clock.now())?;
        Ok(record)
    }

    /// Writes part of a piece (`offset` is within the piece) without recording anything.
    pub(crate) fn write_partial(
        &self,
        task_id: &TaskId,
        piece: PieceNumber,
        offset: u64,
        data: &[u8],
    ) -> Result<(), StoreError> {
        self.content.path(task_id)?;
        let (_, range) = self.piece_row(task_id, piece)?;
        let end = offset + data.len() as u64;
        if end > range.len() {
            return Err(StoreError::PieceLength {
                piece,
                expected: range.len(),
                actual: end,
            });
        }
        self.content.write_at(task_id, range.start + offset, data)
    }

    /// Records a piece whose bytes the caller wrote with `write_partial`, with the digest it
    /// computed over exactly those bytes.
    pub(crate) fn commit_piece(
        &self,
        task_id: &TaskId,
        piece: PieceNumber,
        digest: PieceDigest,
    ) -> Result<PieceRecord, StoreError> {
        let (row, range) = self.piece_row(task_id, piece)?;
        let record = PieceRecord {
            number: piece,
            offset: range.start,
            length: range.len(),
            digest,
        };
        self.metadata
            .record_piece(task_id, row.generation, &record, self.clock.now())?;
        Ok(record)
    }

    pub(crate) fn read_piece(
        &self,
        task_id: &TaskId,
        piece: PieceNumber,
    ) -> Result<(PieceRecord, Bytes), StoreError> {
        self.content.path(task_id)?;
        let (row, record) = self.metadata.piece(task_id, piece)?;
        let bytes = self
            .content
            .read_at(task_id, record.offset, record.length)?;
        let Some(bytes) = bytes.filter(|bytes| PieceDigest::compute(bytes) == record.digest) else {
            // Either the bytes were lost or changed behind our back, or the task was deleted
            // and prepared again while we read; `forget_piece` tells the two apart by
            // generation and only drops the record in the first case.
            tracing::warn!(%task_id, %piece, "piece does not match its recorded digest");
            self.metadata
                .forget_piece(task_id, row.generation, &record)?;
            return Err(StoreError::PieceCorrupt {
                task_id: task_id.clone(),
                piece,
            });
        };
        let now = self.clock.now();
        let interval = u64::try_from(READ_TOUCH_INTERVAL.as_nanos()).unwrap_or(u64::MAX);
        if now.saturating_sub(row.accessed_at) >= interval {
            self.metadata.touch(task_id, now)?;
        }
        Ok((record, Bytes::from(bytes)))
    }

    pub(crate) fn finish_task(&self, task_id: &TaskId) -> Result<TaskState, StoreError> {
        self.content.path(task_id)?;
        let _lifecycle = self.lifecycle();
        if self.metadata.task_row(task_id)?.is_none() {
            return Err(StoreError::TaskNotFound(task_id.clone()));
        }
        // Durable bytes before a durable `finished`: a finished task must survive a power cut.
        self.content.sync(task_id)?;
        self.metadata.finish(task_id, self.clock.now())
    }

    pub(crate) fn delete_task(&self, task_id: &TaskId) -> Result<(), StoreError> {
        self.content.path(task_id)?;
        let _lifecycle = self.lifecycle();
        if self.metadata.remove(task_id)?.is_some() {
            tracing::debug!(%task_id, "deleted task");
        }
        self.content.remove(task_id)
    }

    pub(crate) fn list_tasks(&self) -> Result<Vec<TaskState>, StoreError> {
        self.metadata.list()
    }
}
