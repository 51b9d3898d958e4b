//! Peer records: one download of one task on one host, from registration until it is forgotten.

use std::collections::{BTreeSet, HashSet};
use std::time::SystemTime;

use shoal_protocol::common;
use shoal_types::{HostId, PeerId, TaskId};
use tokio::time::Instant;

use crate::scheduling::Layout;

/// How many piece numbers a peer may report before we stop tracking more; bounds memory when a
/// client reports numbers for a task whose piece count is unknown.
const MAX_TRACKED_PIECES: usize = 1 << 20;

/// The lifecycle of a peer, named like the upstream scheduler's states.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum PeerState {
    /// Registered, waiting for its first answer.
    Pending,
    /// Downloading from parents (or finishing an empty task).
    Running,
    /// Downloading from the origin.
    BackToSource,
    /// Holds the whole task (finished, or registered as metadata-only).
    Succeeded,
    /// Failed, or its stream ended without a terminal message.
    Failed,
}

/// How a peer's download ended, from its terminal message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum PeerOutcome {
    Finished,
    BackToSourceFinished,
    Failed,
    BackToSourceFailed,
}

/// What a registration tells the scheduler about a peer.
#[derive(Debug, Clone)]
pub(crate) struct Registration {
    pub(crate) peer_id: PeerId,
    pub(crate) task_id: TaskId,
    pub(crate) host_id: HostId,
    pub(crate) layout: Layout,
    pub(crate) piece_count: Option<u64>,
    pub(crate) priority: i32,
    pub(crate) range: Option<common::Range>,
    pub(crate) concurrent_piece_count: Option<u32>,
    pub(crate) need_back_to_source: bool,
    pub(crate) disable_back_to_source: bool,
    pub(crate) metadata_only: bool,
}

/// Everything the scheduler remembers about a peer.
#[derive(Debug)]
pub(crate) struct PeerRecord {
    pub(crate) registration: Registration,
    pub(crate) state: PeerState,
    /// Told to use the origin (or started doing so); counts against the task's budget.
    pub(crate) back_to_source: bool,
    pub(crate) pieces: BTreeSet<u32>,
    /// Peers this one downloads from: handed out by us or named in its piece reports.
    pub(crate) parents: HashSet<PeerId>,
    /// Parents never to offer this peer again.
    pub(crate) blocklist: HashSet<PeerId>,
    pub(crate) created_at: SystemTime,
    pub(crate) updated_at: SystemTime,
    /// When it finished or failed; drives garbage collection.
    pub(crate) terminal_at: Option<Instant>,
}

impl PeerState {
    /// The state name on the wire (`common.v2.Peer.state`).
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "Pending",
            Self::Running => "Running",
            Self::BackToSource => "BackToSource",
            Self::Succeeded => "Succeeded",
            Self::Failed => "Failed",
        }
    }

    /// Finished or failed.
    pub(crate) fn is_terminal(self) -> bool {
        matches!(self, Self::Succeeded | Self::Failed)
    }

    /// Has, or is getting, the content: a parent candidate.
    pub(crate) fn is_serving(self) -> bool {
        matches!(self, Self::Running | Self::BackToSource | Self::Succeeded)
    }
}

impl Registration {
    /// The registration of `peer_id` on `host_id` for `task_id`, described by `download`.
    pub(crate) fn new(
        peer_id: PeerId,
        task_id: TaskId,
        host_id: HostId,
        download: &common::Download,
    ) -> Self {
        Self {
            peer_id,
            task_id,
            host_id,
            layout: Layout {
                content_length: download.actual_content_length,
                piece_length: download.actual_piece_length,
            },
            piece_count: download.actual_piece_count,
            priority: download.priority,
            range: download.range,
            concurrent_piece_count: download.concurrent_piece_count,
            need_back_to_source: download.need_back_to_source,
            disable_back_to_source: download.disable_back_to_source,
            metadata_only: download.metadata_only,
        }
    }
}

impl PeerRecord {
    pub(crate) fn new(registration: Registration) -> Self {
        let now = SystemTime::now();
        Self {
            registration,
            state: PeerState::Pending,
            back_to_source: false,
            pieces: BTreeSet::new(),
            parents: HashSet::new(),
            blocklist: HashSet::new(),
            created_at: now,
            updated_at: now,
            terminal_at: None,
        }
    }

    pub(crate) fn id(&self) -> &PeerId {
        &self.registration.peer_id
    }

    pub(crate) fn task_id(&self) -> &TaskId {
        &self.registration.task_id
    }

    pub(crate) fn host_id(&self) -> &HostId {
        &self.registration.host_id
    }

    /// Moves to `state` unless the peer already finished or failed.
    pub(crate) fn advance(&mut self, state: PeerState) {
        if !self.state.is_terminal() {
            self.state = state;
        }
        self.updated_at = SystemTime::now();
    }

    /// Records the end of the download.
    pub(crate) fn finish(&mut self, outcome: PeerOutcome, now: Instant) {
        self.state = match outcome {
            PeerOutcome::Finished | PeerOutcome::BackToSourceFinished => PeerState::Succeeded,
            PeerOutcome::Failed | PeerOutcome::BackToSourceFailed => PeerState::Failed,
        };
        self.terminal_at = Some(now);
        self.updated_at = SystemTime::now();
    }

    /// Records a held piece; returns whether it is the peer's first.
    pub(crate) fn add_piece(&mut self, number: u32, piece_count: Option<u64>) -> bool {
        let was_empty = self.pieces.is_empty();
        let in_range = piece_count.is_none_or(|count| u64::from(number) < count);
        if in_range && self.pieces.len() < MAX_TRACKED_PIECES {
            self.pieces.insert(number);
        }
        self.updated_at = SystemTime::now();
        was_empty && !self.pieces.is_empty()
    }

    /// The fraction of the task held, for ranking; finished peers hold everything unless they
    /// only downloaded a range.
    pub(crate) fn held_fraction(&self, task_piece_count: Option<u64>) -> f64 {
        if self.state == PeerState::Succeeded && self.registration.range.is_none() {
            return 1.0;
        }
        match self.registration.piece_count.or(task_piece_count) {
            Some(count) if count > 0 => (self.pieces.len() as f64 / count as f64).min(1.0),
            _ => 0.0,
        }
    }
}
