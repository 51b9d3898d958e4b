//! The one error type of the piece store, [`StoreError`].
//!
//! Variants say who is at fault: the caller asked for something the store does not hold or that
//! contradicts the layout (`TaskNotFound`, `PieceOutOfRange`, ...), or local storage failed
//! (`Io`, `Database`, `PieceCorrupt`, `CorruptMetadata`).

use std::path::PathBuf;

use shoal_types::{PieceNumber, TaskId};

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
    PieceLength {
        piece: PieceNumber,
        expected: u64,
        actual: u64,
    },
    #[error("piece {piece} is beyond the end of the task")]
    PieceOutOfRange { piece: PieceNumber },
    /// The layout has more pieces than a `u32` can number.
    #[error("layout of task {task_id} has more pieces than a u32 can number")]
    InvalidLayout { task_id: TaskId },
    /// [`crate::Store::finish_task`] found pieces of the layout that are not recorded.
    #[error("finish task {task_id} with {missing} pieces missing")]
    Incomplete { task_id: TaskId, missing: u32 },
    /// The id is not plain ascii letters and digits, so it cannot name a content file.
    #[error("task id {0} is not plain ascii letters and digits")]
    InvalidTaskId(TaskId),
    /// The bytes on disk no longer match the recorded digest (lost write after a power cut,
    /// external modification). The record has been dropped, so the piece can be fetched again.
    #[error("piece {piece} of task {task_id} does not match its recorded digest")]
    PieceCorrupt { task_id: TaskId, piece: PieceNumber },
    #[error("access content file {path}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("access piece metadata database")]
    Database(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// A metadata row could not be decoded; the database was written by something else.
    #[error("decode metadata row {key:?}")]
    CorruptMetadata {
        key: String,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// The database was written by a newer (or unknown) version of the store.
    #[error("open metadata schema version {found}, this build reads version {supported}")]
    SchemaVersion { found: u64, supported: u64 },
    /// The blocking worker running the operation panicked or the runtime is shutting down.
    #[error("run blocking store operation")]
    Blocking(#[source] tokio::task::JoinError),
}

impl StoreError {
    pub(crate) fn database(source: impl Into<redb::Error>) -> Self {
        Self::Database(Box::new(source.into()))
    }

    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Self::Io {
            path: path.into(),
            source,
        }
    }
}
