//! The piece store: one content file per task written at piece offsets, piece metadata in redb.
//!
//! Only verified pieces are recorded: callers check a piece's digest before [`Store::write_piece`].
//! Finished tasks survive restarts and partial tasks resume from the pieces already recorded.
//! Garbage collection removes tasks by TTL and by a disk budget (least recently used first) and
//! never removes a task that is pinned by a reader or writer.
//!
//! # Layout on disk
//!
//! ```text
//! <dir>/metadata.redb      task rows and piece rows (redb)
//! <dir>/content/<task_id>  sparse file of the task's content length, pieces at their offsets
//! ```
//!
//! # Guarantees
//!
//! - A piece is recorded only after its bytes are in the content file, so a killed process never
//!   leaves a recorded piece without its bytes. Piece records are fsynced in batches: a kill may
//!   forget the last few, which are then fetched again. Task creation, finishing and deletion
//!   are durable when their call returns. Reads check the bytes against the recorded
//!   digest; a mismatch (a write lost in a power cut) drops the record and returns
//!   [`StoreError::PieceCorrupt`], so the piece is fetched again.
//! - [`Store::finish_task`] fsyncs the content file before it durably marks the task finished.
//! - [`Store::open`] drops tasks whose content file vanished and removes files of unknown tasks.
//! - Every blocking call (redb, file I/O, CRC) runs on tokio's blocking pool, at most
//!   [`MAX_BLOCKING_OPERATIONS`] at a time. Dropping a returned future does not stop its
//!   operation: it runs to completion, so a piece is either written and recorded or not recorded.
//!
//! # Example
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use shoal_storage::{Store, StoreConfig};
//! use shoal_types::{PieceLayout, PieceNumber, TaskId};
//!
//! let dir = tempfile::tempdir()?;
//! let config = StoreConfig {
//!     dir: dir.path().to_path_buf(),
//!     capacity: None,
//!     ttl: std::time::Duration::from_secs(3600),
//! };
//! let store = Store::open(config).await?;
//! let task_id: TaskId = "abc123".parse()?;
//! let _pin = store.pin(&task_id);
//! store.prepare_task(&task_id, PieceLayout::with_piece_length(5, 4)).await?;
//! store.write_piece(&task_id, PieceNumber::new(1), "o".into()).await?;
//! store.write_piece(&task_id, PieceNumber::new(0), "hell".into()).await?;
//! let state = store.finish_task(&task_id).await?;
//! assert!(state.finished);
//! assert_eq!(std::fs::read(store.content_path(&task_id))?, b"hello");
//! # Ok(())
//! # }
//! ```

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use shoal_types::{PieceDigest, PieceLayout, PieceNumber, TaskId};
use tokio::sync::Semaphore;

mod clock;
mod content;
mod db;
mod disk;
mod error;
mod gc;
mod pins;

#[cfg(test)]
mod conformance;
#[cfg(test)]
mod tests;

pub use error::StoreError;
pub use pins::PinGuard;

use disk::DiskStore;
use pins::PinTable;

/// How many store operations may occupy blocking threads at once, so a burst of piece writes
/// cannot starve the rest of the process of tokio's blocking pool.
pub const MAX_BLOCKING_OPERATIONS: usize = 64;

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
    inner: Arc<Inner>,
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
    /// The content lengths of the removed tasks (sparse files may have used less disk).
    pub freed_bytes: u64,
}

#[derive(Debug)]
struct Inner {
    config: StoreConfig,
    disk: DiskStore,
    permits: Arc<Semaphore>,
}

impl Store {
    /// Opens (creating if needed) the store under `config.dir`. Only one `Store` may have a
    /// directory open at a time; reopening after every handle is dropped resumes its tasks.
    pub async fn open(config: StoreConfig) -> Result<Self, StoreError> {
        let dir = config.dir.clone();
        let disk = tokio::task::spawn_blocking(move || DiskStore::open(&dir))
            .await
            .map_err(StoreError::Blocking)??;
        let permits = Arc::new(Semaphore::new(MAX_BLOCKING_OPERATIONS));
        Ok(Self {
            inner: Arc::new(Inner {
                config,
                disk,
                permits,
            }),
        })
    }

    /// Registers a task with its layout, creating its content file, or returns the existing
    /// state when the task is already known with the same layout. A known task whose content
    /// file is gone starts over with no pieces. Another layout gives
    /// [`StoreError::LayoutMismatch`].
    pub async fn prepare_task(
        &self,
        task_id: &TaskId,
        layout: PieceLayout,
    ) -> Result<TaskState, StoreError> {
        let task_id = task_id.clone();
        self.blocking(move |disk| disk.prepare_task(&task_id, layout))
            .await
    }

    /// The state of a task, if stored. Updates its access time.
    pub async fn task(&self, task_id: &TaskId) -> Result<Option<TaskState>, StoreError> {
        let task_id = task_id.clone();
        self.blocking(move |disk| disk.task(&task_id)).await
    }

    /// Writes a verified piece at its offset and records it. The length must match the layout.
    /// Writing a piece again overwrites it; different pieces may be written concurrently.
    pub async fn write_piece(
        &self,
        task_id: &TaskId,
        piece: PieceNumber,
        data: Bytes,
    ) -> Result<PieceRecord, StoreError> {
        let task_id = task_id.clone();
        self.blocking(move |disk| disk.write_piece(&task_id, piece, &data))
            .await
    }

    /// Writes bytes of a piece as they arrive (`offset` within the piece) without recording
    /// the piece; readers may use them before [`Store::commit_piece`] records it.
    pub async fn write_partial(
        &self,
        task_id: &TaskId,
        piece: PieceNumber,
        offset: u64,
        data: Bytes,
    ) -> Result<(), StoreError> {
        let task_id = task_id.clone();
        self.blocking(move |disk| disk.write_partial(&task_id, piece, offset, &data))
            .await
    }

    /// Records a piece written completely with [`Store::write_partial`]; `digest` must be the
    /// caller's digest of exactly the bytes it wrote.
    pub async fn commit_piece(
        &self,
        task_id: &TaskId,
        piece: PieceNumber,
        digest: PieceDigest,
    ) -> Result<PieceRecord, StoreError> {
        let task_id = task_id.clone();
        self.blocking(move |disk| disk.commit_piece(&task_id, piece, digest))
            .await
    }

    /// Reads a recorded piece's bytes, checked against its digest. Refreshes the task's access
    /// time (at most once a second).
    pub async fn read_piece(
        &self,
        task_id: &TaskId,
        piece: PieceNumber,
    ) -> Result<(PieceRecord, Bytes), StoreError> {
        let task_id = task_id.clone();
        self.blocking(move |disk| disk.read_piece(&task_id, piece))
            .await
    }

    /// The content file of a task, for zero-copy sends and final copies. Only pieces recorded
    /// in [`TaskState::pieces`] hold meaningful bytes; the rest of the file reads as zeros.
    pub fn content_path(&self, task_id: &TaskId) -> PathBuf {
        self.inner.disk.content.path_unchecked(task_id)
    }

    /// Marks a task finished; every piece of its layout must be recorded, else
    /// [`StoreError::Incomplete`]. Finishing a finished task returns its state again.
    pub async fn finish_task(&self, task_id: &TaskId) -> Result<TaskState, StoreError> {
        let task_id = task_id.clone();
        self.blocking(move |disk| disk.finish_task(&task_id)).await
    }

    /// Removes a task and its content. Deleting an unknown task succeeds. This is an explicit
    /// request, so it removes a pinned task too: whoever holds the pin then gets
    /// [`StoreError::TaskNotFound`] and can prepare the task again.
    pub async fn delete_task(&self, task_id: &TaskId) -> Result<(), StoreError> {
        let task_id = task_id.clone();
        self.blocking(move |disk| disk.delete_task(&task_id)).await
    }

    /// Every stored task. Does not update access times.
    pub async fn list_tasks(&self) -> Result<Vec<TaskState>, StoreError> {
        self.blocking(|disk| disk.list_tasks()).await
    }

    /// Keeps `task_id` from being collected until the guard drops. Pin before looking the task
    /// up: a task found after pinning stays until the guard drops (or an explicit delete).
    pub fn pin(&self, task_id: &TaskId) -> PinGuard {
        PinTable::pin(&self.inner.disk.pins, task_id)
    }

    /// Removes expired tasks, then least recently used ones until under capacity; pinned tasks
    /// are skipped (and still count against the capacity).
    pub async fn gc(&self) -> Result<GcReport, StoreError> {
        let (ttl, capacity) = (self.inner.config.ttl, self.inner.config.capacity);
        let report = self.blocking(move |disk| disk.gc(ttl, capacity)).await?;
        if !report.removed.is_empty() {
            tracing::info!(
                tasks = report.removed.len(),
                bytes = report.freed_bytes,
                "garbage collected tasks"
            );
        }
        Ok(report)
    }

    /// Runs `operation` on a blocking thread once a permit is free.
    /// Waits until this is the last handle to the store (every clone and every blocking
    /// operation finished), so dropping it closes the database; gives up after `timeout`.
    /// A role calls this on shutdown so a restart in the same process can reopen the store.
    pub async fn close(self, timeout: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + timeout;
        while Arc::strong_count(&self.inner) > 1 {
            if tokio::time::Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        true
    }

    async fn blocking<T: Send + 'static>(
        &self,
        operation: impl FnOnce(&DiskStore) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        let permit = Arc::clone(&self.inner.permits)
            .acquire_owned()
            .await
            .expect("the permit semaphore is never closed");
        let inner = Arc::clone(&self.inner);
        tokio::task::spawn_blocking(move || {
            let _permit = permit;
            operation(&inner.disk)
        })
        .await
        .map_err(StoreError::Blocking)?
    }
}
