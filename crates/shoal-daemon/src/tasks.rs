//! In-memory view of the tasks this daemon holds or is downloading.
//!
//! State: for each task touched since start, its layout, the verified pieces and a status watch
//! (running, finished, failed). The upload side reads it to answer SyncPieces and Vortex requests
//! without a database round trip; the download engine writes it as pieces land. Finished tasks
//! are loaded lazily from the piece store. A per-task download lock makes concurrent requests for
//! one task share a single download.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, RwLock};

use shoal_storage::{PieceRecord, Store, StoreError};
use shoal_types::{PieceLayout, PieceNumber, TaskId};
use tokio::sync::watch;

/// Where a task stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum TaskStatus {
    Running,
    Finished,
    Failed(String),
}

/// One task's layout, pieces and status.
#[derive(Debug)]
pub(crate) struct TaskEntry {
    pub(crate) layout: PieceLayout,
    pieces: RwLock<BTreeMap<PieceNumber, PieceRecord>>,
    /// Bytes already written from the start of pieces still arriving from the origin; only
    /// the proxy reads these (children get whole, recorded pieces only).
    partial: RwLock<HashMap<PieceNumber, u64>>,
    status: watch::Sender<(TaskStatus, usize)>,
}

/// The registry; cheap to clone.
#[derive(Debug, Clone)]
pub(crate) struct Tasks {
    store: Store,
    entries: Arc<Mutex<HashMap<TaskId, Arc<TaskEntry>>>>,
    download_locks: Arc<Mutex<HashMap<TaskId, Arc<tokio::sync::Mutex<()>>>>>,
}

impl TaskEntry {
    fn new(
        layout: PieceLayout,
        pieces: BTreeMap<PieceNumber, PieceRecord>,
        status: TaskStatus,
    ) -> Self {
        let count = pieces.len();
        Self {
            layout,
            pieces: RwLock::new(pieces),
            partial: RwLock::new(HashMap::new()),
            status: watch::channel((status, count)).0,
        }
    }

    /// The record of a verified piece.
    pub(crate) fn piece(&self, number: PieceNumber) -> Option<PieceRecord> {
        self.pieces
            .read()
            .expect("piece map lock is never poisoned")
            .get(&number)
            .copied()
    }

    /// Every verified piece.
    pub(crate) fn pieces(&self) -> Vec<PieceRecord> {
        self.pieces
            .read()
            .expect("piece map lock is never poisoned")
            .values()
            .copied()
            .collect()
    }

    /// Notes that the first `available` bytes of an arriving piece are written, and wakes
    /// watchers.
    pub(crate) fn advance(&self, piece: PieceNumber, available: u64) {
        {
            let mut partial = self
                .partial
                .write()
                .expect("partial map lock is never poisoned");
            let entry = partial.entry(piece).or_default();
            *entry = (*entry).max(available);
        }
        self.status.send_modify(|_| {});
    }

    /// Bytes of `piece` readable from the start of the piece: all of them once recorded.
    pub(crate) fn available(&self, piece: PieceNumber) -> u64 {
        if let Some(record) = self.piece(piece) {
            return record.length;
        }
        self.partial
            .read()
            .expect("partial map lock is never poisoned")
            .get(&piece)
            .copied()
            .unwrap_or(0)
    }

    /// Records a verified piece and wakes watchers.
    pub(crate) fn record(&self, record: PieceRecord) {
        let count = {
            let mut pieces = self
                .pieces
                .write()
                .expect("piece map lock is never poisoned");
            pieces.insert(record.number, record);
            pieces.len()
        };
        self.partial
            .write()
            .expect("partial map lock is never poisoned")
            .remove(&record.number);
        self.status.send_modify(|(_, pieces)| *pieces = count);
    }

    pub(crate) fn set_status(&self, status: TaskStatus) {
        self.status.send_modify(|(current, _)| *current = status);
    }

    pub(crate) fn status(&self) -> TaskStatus {
        self.status.borrow().0.clone()
    }

    /// A receiver that changes whenever a piece lands or the status changes.
    pub(crate) fn subscribe(&self) -> watch::Receiver<(TaskStatus, usize)> {
        self.status.subscribe()
    }
}

impl Tasks {
    pub(crate) fn new(store: Store) -> Self {
        Self {
            store,
            entries: Arc::default(),
            download_locks: Arc::default(),
        }
    }

    pub(crate) fn store(&self) -> &Store {
        &self.store
    }

    /// The entry of a task, loading it from the store when it is not in memory.
    pub(crate) async fn get(&self, task_id: &TaskId) -> Result<Option<Arc<TaskEntry>>, StoreError> {
        if let Some(entry) = self.lookup(task_id) {
            return Ok(Some(entry));
        }
        let Some(state) = self.store.task(task_id).await? else {
            return Ok(None);
        };
        let status = if state.finished {
            TaskStatus::Finished
        } else {
            TaskStatus::Failed("task is not being downloaded".into())
        };
        let entry = Arc::new(TaskEntry::new(state.layout, state.pieces, status));
        let mut entries = self.entries.lock().expect("entries lock is never poisoned");
        Ok(Some(
            entries.entry(task_id.clone()).or_insert(entry).clone(),
        ))
    }

    fn lookup(&self, task_id: &TaskId) -> Option<Arc<TaskEntry>> {
        self.entries
            .lock()
            .expect("entries lock is never poisoned")
            .get(task_id)
            .cloned()
    }

    /// Starts (or restarts) a download of a task with the pieces already stored.
    pub(crate) fn begin(
        &self,
        task_id: &TaskId,
        layout: PieceLayout,
        pieces: BTreeMap<PieceNumber, PieceRecord>,
    ) -> Arc<TaskEntry> {
        let entry = Arc::new(TaskEntry::new(layout, pieces, TaskStatus::Running));
        self.entries
            .lock()
            .expect("entries lock is never poisoned")
            .insert(task_id.clone(), entry.clone());
        entry
    }

    /// Forgets a task (after deletion or a failed download that left nothing).
    pub(crate) fn forget(&self, task_id: &TaskId) {
        if let Some(entry) = self
            .entries
            .lock()
            .expect("entries lock is never poisoned")
            .remove(task_id)
        {
            if entry.status() == TaskStatus::Running {
                entry.set_status(TaskStatus::Failed("task was removed".into()));
            }
        }
    }

    /// Serialises downloads of one task: the second request waits and then finds it stored.
    pub(crate) async fn lock_download(&self, task_id: &TaskId) -> tokio::sync::OwnedMutexGuard<()> {
        let lock = {
            let mut locks = self
                .download_locks
                .lock()
                .expect("locks lock is never poisoned");
            locks.retain(|_, lock| Arc::strong_count(lock) > 1);
            locks.entry(task_id.clone()).or_default().clone()
        };
        lock.lock_owned().await
    }
}
