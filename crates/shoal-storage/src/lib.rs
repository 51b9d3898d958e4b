//! The piece store: one content file per task written at piece offsets, piece metadata in redb.
//!
//! Only verified pieces are recorded: callers check a piece's digest before [`Store::write_piece`].
//! Finished tasks survive restarts and partial tasks resume from the pieces already recorded.
//! Garbage collection removes tasks by TTL and by a disk budget (least recently used first) and
//! never removes a task that is pinned by a reader or writer.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use shoal_types::{PieceDigest, PieceLayout, PieceNumber, TaskId};

/// Where and how much the store keeps.
#[derive(Debug, Clone)]
pub struct StoreConfig {
    /// Root directory; the store owns everything below it.
    pub dir: PathBuf,
    /// Disk budget for content files; `None` means unlimited.
    pub capacity: Option<u64>,
    /// Tasks not accessed for this long are removed by GC.
    pub ttl: Duration,
}

/// Handle to the store; cheap to clone.
#[derive(Debug, Clone)]
pub struct Store {
    _private: (),
}

/// What the store knows of one task.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskState {
    pub task_id: TaskId,
    pub layout: PieceLayout,
    /// Verified pieces, by number.
    pub pieces: BTreeMap<PieceNumber, PieceRecord>,
    /// Whether every piece is present and the task was marked finished.
    pub finished: bool,
    pub created_at: SystemTime,
    pub accessed_at: SystemTime,
}

/// One verified piece.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PieceRecord {
    pub number: PieceNumber,
    pub offset: u64,
    pub length: u64,
    pub digest: PieceDigest,
}

/// What a GC pass removed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GcReport {
    pub removed: Vec<TaskId>,
    pub freed_bytes: u64,
}

/// Keeps a task from being garbage collected while alive.
#[derive(Debug)]
pub struct PinGuard {
    _private: (),
}

/// A store operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("task {0} is not in the store")]
    TaskNotFound(TaskId),
    #[error("piece {piece} of task {task_id} is not in the store")]
    PieceNotFound { task_id: TaskId, piece: PieceNumber },
    #[error("task {task_id} is stored with another layout")]
    LayoutMismatch { task_id: TaskId },
    #[error("piece {piece} has {actual} bytes, the layout says {expected}")]
    PieceLength { piece: PieceNumber, expected: u64, actual: u64 },
    #[error("piece {piece} is beyond the end of the task")]
    PieceOutOfRange { piece: PieceNumber },
    #[error("access content file {path}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("access piece metadata database")]
    Database(#[source] Box<dyn std::error::Error + Send + Sync>),
}

#[allow(clippy::todo, unused_variables, clippy::unused_async)]
impl Store {
    /// Opens (creating if needed) the store under `config.dir`.
    pub async fn open(config: StoreConfig) -> Result<Self, StoreError> {
        todo!()
    }

    /// Registers a task with its layout, creating its content file, or returns the existing
    /// state when the task is already known with the same layout.
    pub async fn prepare_task(
        &self,
        task_id: &TaskId,
        layout: PieceLayout,
    ) -> Result<TaskState, StoreError> {
        todo!()
    }

    /// The state of a task, if stored. Updates its access time.
    pub async fn task(&self, task_id: &TaskId) -> Result<Option<TaskState>, StoreError> {
        todo!()
    }

    /// Writes a verified piece at its offset and records it. The length must match the layout.
    pub async fn write_piece(
        &self,
        task_id: &TaskId,
        piece: PieceNumber,
        data: Bytes,
    ) -> Result<PieceRecord, StoreError> {
        todo!()
    }

    /// Reads a recorded piece's bytes.
    pub async fn read_piece(
        &self,
        task_id: &TaskId,
        piece: PieceNumber,
    ) -> Result<(PieceRecord, Bytes), StoreError> {
        todo!()
    }

    /// The content file of a task, for zero-copy sends and final copies.
    pub fn content_path(&self, task_id: &TaskId) -> PathBuf {
        todo!()
    }

    /// Marks a task finished; every piece of its layout must be recorded.
    pub async fn finish_task(&self, task_id: &TaskId) -> Result<TaskState, StoreError> {
        todo!()
    }

    /// Removes a task and its content.
    pub async fn delete_task(&self, task_id: &TaskId) -> Result<(), StoreError> {
        todo!()
    }

    /// Every stored task.
    pub async fn list_tasks(&self) -> Result<Vec<TaskState>, StoreError> {
        todo!()
    }

    /// Keeps `task_id` from being collected until the guard drops.
    pub fn pin(&self, task_id: &TaskId) -> PinGuard {
        todo!()
    }

    /// Removes expired tasks, then least recently used ones until under capacity; pinned tasks
    /// are skipped.
    pub async fn gc(&self) -> Result<GcReport, StoreError> {
        todo!()
    }
}
