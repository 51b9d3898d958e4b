//! Task records: the peers of one task, its bans, its seed trigger and its change signal.

use std::collections::HashSet;
use std::time::SystemTime;

use shoal_types::{PeerId, TaskId};
use tokio::sync::watch;

/// Where the seed trigger of a task stands; a task triggers its seed at most once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SeedTrigger {
    NotTriggered,
    /// The DownloadTask call to the seed is in flight.
    Running,
    /// The seed's DownloadTask stream ended with OK.
    Completed,
    /// The call failed or its stream ended with an error.
    Failed,
}

/// Everything the scheduler remembers about a task.
#[derive(Debug)]
pub(crate) struct TaskRecord {
    pub(crate) id: TaskId,
    /// First known values reported by a registration.
    pub(crate) content_length: Option<u64>,
    pub(crate) piece_length: Option<u64>,
    pub(crate) piece_count: Option<u64>,
    pub(crate) peers: HashSet<PeerId>,
    /// Parents that sent corrupt data: never offered again for this task.
    pub(crate) banned: HashSet<PeerId>,
    pub(crate) seed_trigger: SeedTrigger,
    /// Bumped on every change that may give a waiting child a parent or a new answer.
    changes: watch::Sender<u64>,
    pub(crate) created_at: SystemTime,
    pub(crate) updated_at: SystemTime,
}

impl TaskRecord {
    pub(crate) fn new(id: TaskId) -> Self {
        let now = SystemTime::now();
        Self {
            id,
            content_length: None,
            piece_length: None,
            piece_count: None,
            peers: HashSet::new(),
            banned: HashSet::new(),
            seed_trigger: SeedTrigger::NotTriggered,
            changes: watch::Sender::new(0),
            created_at: now,
            updated_at: now,
        }
    }

    /// A receiver that sees every change after this call. Subscribe under the state lock, in
    /// the same critical section as the check that decided to wait, so no wake-up is lost.
    pub(crate) fn subscribe(&self) -> watch::Receiver<u64> {
        self.changes.subscribe()
    }

    /// Wakes every child waiting on this task.
    pub(crate) fn notify(&mut self) {
        self.changes
            .send_modify(|version| *version = version.wrapping_add(1));
        self.updated_at = SystemTime::now();
    }

    /// Adopts layout values the task does not know yet.
    pub(crate) fn learn_layout(
        &mut self,
        content_length: Option<u64>,
        piece_length: Option<u64>,
        piece_count: Option<u64>,
    ) {
        self.content_length = self.content_length.or(content_length);
        self.piece_length = self.piece_length.or(piece_length);
        self.piece_count = self.piece_count.or(piece_count).or_else(|| {
            let piece_length = self.piece_length.filter(|length| *length > 0)?;
            Some(self.content_length?.div_ceil(piece_length))
        });
    }
}
