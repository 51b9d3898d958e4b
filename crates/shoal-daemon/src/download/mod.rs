//! The download engine: turns a `common.v2.Download` into a complete, verified task in the
//! piece store (and optionally a file), from parents the scheduler names or from the origin.
//!
//! Flow: derive the task id; serve from the store when complete; stat the origin for the length;
//! prepare the task in the store (resuming stored pieces); announce to the scheduler and follow
//! its answers (parents, back-to-source, empty) until every piece is verified; finish the task,
//! check the whole-content digest when one was given, and copy the content to the output path
//! through a temporary file. The scheduler conversation is in `announce`, parent transfers in
//! `p2p`, origin transfers in `source`.

mod announce;
mod error;
pub(crate) mod origin;
mod output;
pub(crate) use output::copy_atomically as copy_output;
mod p2p;
mod picker;
mod progress;
mod source;

use std::collections::BTreeSet;
use std::sync::Arc;

use shoal_client::vortex::PieceClient;
use shoal_protocol::common::Download;
use shoal_storage::{PieceRecord, Store};
use shoal_types::task_id::{self, TaskIdInputs};
use shoal_types::{ContentDigest, PeerId, PieceLayout, PieceNumber, TaskId};
use tokio::sync::mpsc;

use crate::config::DownloadConfig;
use crate::metrics::{Metrics, TaskResult};
use crate::scheduler::Schedulers;
use crate::tasks::{TaskStatus, Tasks};
use crate::HostIdentity;
pub use error::DownloadError;
use origin::{Origin, OriginStat};
use progress::Progress;
pub(crate) use progress::{DownloadEvent, PieceSource};

/// Shared parts every download uses; cheap to clone.
#[derive(Debug, Clone)]
pub(crate) struct Engine {
    pub(crate) inner: Arc<EngineInner>,
}

#[derive(Debug)]
pub(crate) struct EngineInner {
    pub(crate) config: DownloadConfig,
    pub(crate) tasks: Tasks,
    pub(crate) http: reqwest::Client,
    pub(crate) pieces: PieceClient,
    pub(crate) schedulers: Schedulers,
    pub(crate) metrics: Metrics,
    pub(crate) host: HostIdentity,
}

/// One download request.
#[derive(Debug, Clone)]
pub(crate) struct DownloadRequest {
    pub(crate) download: Download,
}

/// What a finished download produced.
#[derive(Debug, Clone)]
pub(crate) struct DownloadOutcome {
    pub(crate) task_id: TaskId,
    pub(crate) content_length: u64,
}

/// Everything one task's download needs, passed to the sub-modules.
#[derive(Debug)]
pub(crate) struct TaskContext {
    pub(crate) engine: Arc<EngineInner>,
    pub(crate) task_id: TaskId,
    pub(crate) peer_id: PeerId,
    pub(crate) layout: PieceLayout,
    pub(crate) download: Download,
    pub(crate) origin: Origin,
    pub(crate) progress: Progress,
}

impl Engine {
    pub(crate) fn new(inner: EngineInner) -> Self {
        Self {
            inner: Arc::new(inner),
        }
    }

    pub(crate) fn store(&self) -> &Store {
        self.inner.tasks.store()
    }

    /// The task id of a download request (wire reference §11.1).
    pub(crate) fn task_id(download: &Download) -> Result<TaskId, DownloadError> {
        let hub_revision = download
            .hugging_face
            .as_ref()
            .map(|hub| hub.revision.clone())
            .or_else(|| {
                download
                    .model_scope
                    .as_ref()
                    .map(|hub| hub.revision.clone())
            })
            .or_else(|| download.open_csg.as_ref().map(|hub| hub.revision.clone()))
            .filter(|revision| !revision.is_empty());
        let inputs = TaskIdInputs {
            url: download.url.clone(),
            tag: download.tag.clone().filter(|tag| !tag.is_empty()),
            application: download.application.clone().filter(|app| !app.is_empty()),
            filtered_query_params: download.filtered_query_params.clone(),
            piece_length: download.piece_length,
            content_for_calculating_task_id: download.content_for_calculating_task_id.clone(),
            enable_task_id_based_blob_digest: download.enable_task_id_based_blob_digest,
            hub_revision,
        };
        task_id::derive(&inputs).map_err(DownloadError::TaskId)
    }

    /// Runs one download to completion, reporting progress on `events`.
    pub(crate) async fn download(
        &self,
        request: DownloadRequest,
        events: mpsc::Sender<DownloadEvent>,
    ) -> Result<DownloadOutcome, DownloadError> {
        let result = self.download_inner(request, events).await;
        let state = if result.is_ok() {
            TaskResult::Succeeded
        } else {
            TaskResult::Failed
        };
        self.inner.metrics.task_done(state);
        result
    }

    async fn download_inner(
        &self,
        request: DownloadRequest,
        events: mpsc::Sender<DownloadEvent>,
    ) -> Result<DownloadOutcome, DownloadError> {
        let download = request.download;
        if download.url.is_empty() {
            return Err(DownloadError::InvalidRequest("url is empty".into()));
        }
        let digest = match download
            .digest
            .as_deref()
            .filter(|digest| !digest.is_empty())
        {
            Some(digest) => Some(
                digest
                    .parse::<ContentDigest>()
                    .map_err(DownloadError::Digest)?,
            ),
            None => None,
        };
        let task_id = Self::task_id(&download)?;
        let _lock = self.inner.tasks.lock_download(&task_id).await;
        let store = self.store().clone();
        let _pin = store.pin(&task_id);

        // Built first so bad request headers fail the same way on a cache hit as on a miss.
        let origin = Origin::new(
            self.inner.http.clone(),
            &download.url,
            &download.request_header,
            self.inner.config.origin_retries,
        )
        .map_err(DownloadError::Origin)?;
        if let Some(state) = store.task(&task_id).await.map_err(DownloadError::Store)? {
            if state.finished {
                let outcome = self
                    .serve_local(
                        &task_id,
                        state.layout,
                        state.pieces.into_values().collect(),
                        digest,
                        &events,
                    )
                    .await;
                // Tell the scheduler we hold the task (it may have restarted and forgotten).
                announce::announce_holder(&self.inner, &task_id, state.layout, &download).await;
                return outcome;
            }
        }

        let length = match origin.stat().await.map_err(DownloadError::Origin)? {
            OriginStat::Length(length) => length,
            OriginStat::Unknown(response) => {
                let layout = source::import_unknown_length(
                    &self.inner,
                    &task_id,
                    &download,
                    response,
                    &events,
                )
                .await?;
                return self.complete(&task_id, layout, digest, true).await;
            }
        };
        let layout = match download.piece_length {
            Some(piece_length) if piece_length > 0 => {
                PieceLayout::with_piece_length(length, piece_length)
            }
            _ => PieceLayout::for_content_length(length),
        };
        let state = match store.prepare_task(&task_id, layout).await {
            Ok(state) => state,
            Err(shoal_storage::StoreError::LayoutMismatch { .. }) => {
                // The origin's content changed length since we stored it: start over.
                store
                    .delete_task(&task_id)
                    .await
                    .map_err(DownloadError::Store)?;
                store
                    .prepare_task(&task_id, layout)
                    .await
                    .map_err(DownloadError::Store)?
            }
            Err(err) => return Err(DownloadError::Store(err)),
        };
        let entry = self
            .inner
            .tasks
            .begin(&task_id, layout, state.pieces.clone());
        let local: Vec<PieceRecord> = state.pieces.values().copied().collect();
        let _ = events
            .send(DownloadEvent::Started {
                task_id: task_id.clone(),
                content_length: length,
                local_pieces: local.clone(),
            })
            .await;
        let missing: BTreeSet<PieceNumber> = layout
            .pieces()
            .filter(|piece| !state.pieces.contains_key(piece))
            .collect();
        let peer_id = PeerId::generate(
            &self.inner.host.ip.to_string(),
            &self.inner.host.hostname,
            self.inner.host.seed,
        );
        let context = TaskContext {
            engine: self.inner.clone(),
            task_id: task_id.clone(),
            peer_id,
            layout,
            download,
            origin,
            progress: Progress::new(entry.clone(), events.clone(), self.inner.metrics.clone()),
        };
        let fetched = if missing.is_empty() {
            Ok(())
        } else {
            announce::run(&context, missing).await
        };
        if let Err(err) = fetched {
            entry.set_status(TaskStatus::Failed(format!("{err:#}")));
            if err.discards_task() {
                self.inner.tasks.forget(&task_id);
                if let Err(delete) = store.delete_task(&task_id).await {
                    tracing::warn!(%task_id, error = %delete, "failed to delete task after download failure");
                }
            }
            return Err(err);
        }
        let outcome = self.complete(&task_id, layout, digest, true).await;
        match &outcome {
            Ok(_) => entry.set_status(TaskStatus::Finished),
            Err(err) => entry.set_status(TaskStatus::Failed(format!("{err:#}"))),
        }
        outcome
    }

    async fn serve_local(
        &self,
        task_id: &TaskId,
        layout: PieceLayout,
        pieces: Vec<PieceRecord>,
        digest: Option<ContentDigest>,
        events: &mpsc::Sender<DownloadEvent>,
    ) -> Result<DownloadOutcome, DownloadError> {
        let _ = events
            .send(DownloadEvent::Started {
                task_id: task_id.clone(),
                content_length: layout.content_length(),
                local_pieces: pieces.clone(),
            })
            .await;
        // Cached pieces were verified when stored: a mismatch is the caller's digest, not ours.
        self.complete(task_id, layout, digest, false).await
    }

    /// Marks the task finished and checks the whole digest; a mismatch on freshly downloaded
    /// content (`fresh`) discards the task.
    async fn complete(
        &self,
        task_id: &TaskId,
        layout: PieceLayout,
        digest: Option<ContentDigest>,
        fresh: bool,
    ) -> Result<DownloadOutcome, DownloadError> {
        let store = self.store();
        let state = store
            .finish_task(task_id)
            .await
            .map_err(DownloadError::Store)?;
        if state.finished {
            if let Some(entry) = self
                .inner
                .tasks
                .get(task_id)
                .await
                .map_err(DownloadError::Store)?
            {
                entry.set_status(TaskStatus::Finished);
            }
        }
        let path = store.content_path(task_id);
        if let Some(expected) = digest {
            if let Err(err) = output::verify_digest(&path, &expected).await {
                if !fresh {
                    return Err(err);
                }
                self.inner.tasks.forget(task_id);
                if let Err(delete) = store.delete_task(task_id).await {
                    tracing::warn!(%task_id, error = %delete, "failed to delete task after digest mismatch");
                }
                return Err(err);
            }
        }
        Ok(DownloadOutcome {
            task_id: task_id.clone(),
            content_length: layout.content_length(),
        })
    }
}
