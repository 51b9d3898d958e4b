//! Runs a download and streams its progress as `dfdaemon.v2` DownloadTask responses: one
//! `DownloadTaskStartedResponse`, then one `DownloadPieceFinishedResponse` per piece, then the
//! end of the stream (OK) or an error status. Used by the local API and by seed triggers.

use std::pin::Pin;
use std::time::SystemTime;

use futures::Stream;
use shoal_protocol::common::{Download, Piece, TrafficType};
use shoal_protocol::dfdaemon::download_task_response::Response as TaskResponse;
use shoal_protocol::dfdaemon::{
    DownloadPieceFinishedResponse, DownloadTaskResponse, DownloadTaskStartedResponse,
};
use shoal_storage::PieceRecord;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tonic::Status;

use crate::download::{DownloadError, DownloadEvent, DownloadRequest, Engine, PieceSource};

/// A boxed response stream.
pub(crate) type ResponseStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send + 'static>>;

/// Starts `download` on `tracker` and returns its progress stream. The download goes on if the
/// caller stops reading, so the cache still fills.
pub(crate) fn download_task(
    engine: &Engine,
    tracker: &TaskTracker,
    download: Download,
    output: Option<std::path::PathBuf>,
    cancel: &CancellationToken,
) -> ResponseStream<DownloadTaskResponse> {
    let (responses, receiver) = mpsc::channel(128);
    let (events, mut event_receiver) = mpsc::channel(128);
    let engine = engine.clone();
    let host_id = engine.inner.host.host_id.to_string();
    let cancel = cancel.clone();
    tracker.spawn(async move {
        let request = DownloadRequest { download };
        let download = engine.download(request, events);
        tokio::pin!(download);
        let mut task_id = String::new();
        let result = loop {
            tokio::select! {
                biased;
                _ = cancel.cancelled() => break Err(DownloadError::Cancelled),
                Some(event) = event_receiver.recv() => {
                    let response = to_response(event, &host_id, &mut task_id);
                    let _ = responses.send(Ok(response)).await;
                }
                result = &mut download => break result,
            }
        };
        // Pieces reported before the download returned are still queued.
        while let Ok(event) = event_receiver.try_recv() {
            let _ = responses.send(Ok(to_response(event, &host_id, &mut task_id))).await;
        }
        match result {
Ok(outcome) => {
                tracing::info!(task_id = %outcome.task_id, content_length = outcome.content_length, "download finished");
                // The output is written only for a requester still waiting for it: a cancelled
                // `shoal get` or a stopping daemon leaves the path untouched.
                if let Some(path) = output {
                    if cancel.is_cancelled() || responses.is_closed() {
                        tracing::info!(path = %path.display(), "requester went away, output not written");
                    } else {
                        let content = engine.store().content_path(&outcome.task_id);
                        let _pin = engine.store().pin(&outcome.task_id);
                        if let Err(err) = crate::download::copy_output(&content, &path, outcome.content_length).await {
                            let _ = responses.send(Err(err.code().status(err.chain()))).await;
                        }
                    }
                }
            }
            Err(err) => {
                tracing::info!(task_id, error = %err.chain(), "download failed");
                let _ = responses.send(Err(err.code().status(err.chain()))).await;
            }
        }
    });
    Box::pin(ReceiverStream::new(receiver))
}

fn to_response(event: DownloadEvent, host_id: &str, task_id: &mut String) -> DownloadTaskResponse {
    let response = match event {
        DownloadEvent::Started {
            task_id: id,
            content_length,
            local_pieces,
        } => {
            *task_id = id.to_string();
            let finished = !local_pieces.is_empty()
                && local_pieces.iter().map(|piece| piece.length).sum::<u64>() == content_length;
            TaskResponse::DownloadTaskStartedResponse(DownloadTaskStartedResponse {
                content_length,
                range: None,
                response_header: Default::default(),
                pieces: local_pieces
                    .iter()
                    .map(|record| piece(record, &PieceSource::Local))
                    .collect(),
                is_finished: finished || content_length == 0,
            })
        }
        DownloadEvent::Piece { record, source } => {
            TaskResponse::DownloadPieceFinishedResponse(DownloadPieceFinishedResponse {
                piece: Some(piece(&record, &source)),
            })
        }
    };
    DownloadTaskResponse {
        host_id: host_id.to_string(),
        task_id: task_id.clone(),
        peer_id: String::new(),
        response: Some(response),
    }
}

fn piece(record: &PieceRecord, source: &PieceSource) -> Piece {
    let (traffic_type, parent_id) = match source {
        PieceSource::Origin => (TrafficType::BackToSource, None),
        PieceSource::Parent(peer) => (TrafficType::RemotePeer, Some(peer.to_string())),
        PieceSource::Local => (TrafficType::LocalPeer, None),
    };
    Piece {
        number: record.number.get(),
        parent_id,
        offset: record.offset,
        length: record.length,
        digest: record.digest.to_string(),
        content: None,
        traffic_type: Some(traffic_type as i32),
        cost: None,
        created_at: Some(shoal_protocol::convert::timestamp(SystemTime::now())),
    }
}
