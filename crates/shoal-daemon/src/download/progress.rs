//! Progress of one download: records pieces in the task registry, counts bytes and tells the
//! requester (CLI stream, seed trigger) about every piece.

use std::sync::Arc;

use shoal_storage::PieceRecord;
use shoal_types::{PeerId, TaskId};
use tokio::sync::mpsc;

use crate::metrics::{Metrics, Source};
use crate::tasks::TaskEntry;

/// Where a piece came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum PieceSource {
    Origin,
    Parent(PeerId),
    Local,
}

/// What the requester of a download sees.
#[derive(Debug, Clone)]
pub(crate) enum DownloadEvent {
    /// The layout is known; `local_pieces` were already stored.
    Started {
        task_id: TaskId,
        content_length: u64,
        local_pieces: Vec<PieceRecord>,
    },
    /// A piece was verified and stored.
    Piece {
        record: PieceRecord,
        source: PieceSource,
    },
}

#[derive(Debug, Clone)]
pub(crate) struct Progress {
    entry: Arc<TaskEntry>,
    events: mpsc::Sender<DownloadEvent>,
    metrics: Metrics,
}

impl Progress {
    pub(crate) fn new(
        entry: Arc<TaskEntry>,
        events: mpsc::Sender<DownloadEvent>,
        metrics: Metrics,
    ) -> Self {
        Self {
            entry,
            events,
            metrics,
        }
    }

    pub(crate) fn entry(&self) -> &Arc<TaskEntry> {
        &self.entry
    }

    /// Records a stored piece; the requester going away does not stop the download.
    pub(crate) async fn piece_done(&self, record: PieceRecord, source: PieceSource) {
        self.entry.record(record);
        match source {
            PieceSource::Origin => self.metrics.downloaded(Source::Origin, record.length),
            PieceSource::Parent(_) => self.metrics.downloaded(Source::Parent, record.length),
            PieceSource::Local => {}
        }
        let _ = self
            .events
            .send(DownloadEvent::Piece { record, source })
            .await;
    }
}
