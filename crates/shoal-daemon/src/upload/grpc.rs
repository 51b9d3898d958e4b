//! `dfdaemon.v2.DfdaemonUpload` on the upload port: what children and schedulers call.
//!
//! Served: SyncPieces (finished pieces first, then in-flight ones as they land, with our Vortex
//! address), DownloadTask (seed triggers and preheats), StatTask, DeleteTask. Everything else
//! answers Unimplemented, never panics.

use std::collections::BTreeSet;
use std::net::IpAddr;

use shoal_protocol::dfdaemon::dfdaemon_upload_server::DfdaemonUpload;
use shoal_protocol::{common, dfdaemon, ErrorCode};
use shoal_types::{PieceNumber, TaskId};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tonic::{Request, Response, Status};

use crate::download::Engine;
use crate::stream::{self, ResponseStream};
use crate::tasks::TaskStatus;

/// Stream type of RPCs we do not serve.
pub(crate) type Unserved<T> = ResponseStream<T>;

/// Implements RPCs shoal does not serve: each answers `Unimplemented`, never panics.
macro_rules! unserved_rpcs {
    ($($method:ident($request:ty) -> $response:ty;)*) => {
        $(
            // Spelled out the way `#[async_trait]` expands a method, because that attribute does
            // not see methods produced by a macro inside the impl.
            fn $method<'life0, 'async_trait>(
                &'life0 self,
                _request: Request<$request>,
            ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<Response<$response>, Status>> + Send + 'async_trait>>
            where
                'life0: 'async_trait,
                Self: 'async_trait,
            {
                Box::pin(async move { Err(crate::upload::grpc::unserved(stringify!($method))) })
            }
        )*
    };
}
pub(crate) use unserved_rpcs;

pub(crate) fn unserved(method: &str) -> Status {
    ErrorCode::Unimplemented.status(format!("{method} is not served by shoal"))
}

/// The upload service.
#[derive(Debug, Clone)]
pub(crate) struct UploadService {
    pub(crate) engine: Engine,
    pub(crate) tracker: TaskTracker,
    /// Advertised IP and Vortex port, sent in every SyncPieces answer.
    pub(crate) ip: IpAddr,
    pub(crate) vortex_port: u16,
    pub(crate) cancel: CancellationToken,
}

pub(crate) fn parse_task_id(task_id: &str) -> Result<TaskId, Status> {
    task_id
        .parse::<TaskId>()
        .map_err(|err| ErrorCode::InvalidArgument.status(err.to_string()))
}

/// The `common.v2.Task` view of a stored task.
pub(crate) async fn stat_task(engine: &Engine, task_id: &str) -> Result<common::Task, Status> {
    let task_id = parse_task_id(task_id)?;
    let entry = engine
        .inner
        .tasks
        .get(&task_id)
        .await
        .map_err(|err| ErrorCode::Internal.status(err.to_string()))?
        .ok_or_else(|| ErrorCode::NotFound.status(format!("task {task_id} not found")))?;
    let state = match entry.status() {
        TaskStatus::Running => "Running",
        TaskStatus::Finished => "Succeeded",
        TaskStatus::Failed(_) => "Failed",
    };
    Ok(common::Task {
        id: task_id.to_string(),
        content_length: entry.layout.content_length(),
        piece_count: entry.layout.piece_count(),
        state: state.to_string(),
        pieces: entry
            .pieces()
            .iter()
            .map(|record| common::Piece {
                number: record.number.get(),
                offset: record.offset,
                length: record.length,
                digest: record.digest.to_string(),
                ..Default::default()
            })
            .collect(),
        ..Default::default()
    })
}

/// Removes a task from this daemon.
pub(crate) async fn delete_task(engine: &Engine, task_id: &str) -> Result<(), Status> {
    let task_id = parse_task_id(task_id)?;
    engine.inner.tasks.forget(&task_id);
    engine
        .store()
        .delete_task(&task_id)
        .await
        .map_err(|err| ErrorCode::Internal.status(err.to_string()))
}

#[tonic::async_trait]
impl DfdaemonUpload for UploadService {
    type DownloadTaskStream = ResponseStream<dfdaemon::DownloadTaskResponse>;
    type SyncPiecesStream = ResponseStream<dfdaemon::SyncPiecesResponse>;

    async fn download_task(
        &self,
        request: Request<dfdaemon::DownloadTaskRequest>,
    ) -> Result<Response<Self::DownloadTaskStream>, Status> {
        let download = request
            .into_inner()
            .download
            .ok_or_else(|| ErrorCode::InvalidArgument.status("download is missing"))?;
        tracing::info!(url = %download.url, "download triggered by a remote caller");
        Ok(Response::new(stream::download_task(
            &self.engine,
            &self.tracker,
            download,
            None,
            &self.cancel,
        )))
    }

    async fn sync_pieces(
        &self,
        request: Request<dfdaemon::SyncPiecesRequest>,
    ) -> Result<Response<Self::SyncPiecesStream>, Status> {
        let request = request.into_inner();
        let task_id = parse_task_id(&request.task_id)?;
        let entry = self
            .engine
            .inner
            .tasks
            .get(&task_id)
            .await
            .map_err(|err| ErrorCode::Internal.status(err.to_string()))?
            .ok_or_else(|| ErrorCode::NotFound.status(format!("task {task_id} not found")))?;
        let interested: BTreeSet<PieceNumber> = if request.interested_piece_numbers.is_empty() {
            entry.layout.pieces().collect()
        } else {
            request
                .interested_piece_numbers
                .iter()
                .copied()
                .map(PieceNumber::new)
                .collect()
        };
        let (sender, receiver) = mpsc::channel(64);
        let ip = self.ip.to_string();
        let vortex_port = i32::from(self.vortex_port);
        let cancel = self.cancel.clone();
        self.tracker.spawn(async move {
            let mut changes = entry.subscribe();
            let mut unsent = interested;
            loop {
                let status = changes.borrow_and_update().0.clone();
                let ready: Vec<_> = unsent.iter().filter_map(|piece| entry.piece(*piece)).collect();
                for record in ready {
                    unsent.remove(&record.number);
                    let response = dfdaemon::SyncPiecesResponse {
                        number: record.number.get(),
                        offset: record.offset,
                        length: record.length,
                        ip: ip.clone(),
                        tcp_port: Some(vortex_port),
                        quic_port: None,
                    };
                    if sender.send(Ok(response)).await.is_err() {
                        return; // the child went away
                    }
                }
                match status {
                    _ if unsent.is_empty() => return,
                    TaskStatus::Finished => return,
                    TaskStatus::Failed(reason) => {
                        let _ = sender.send(Err(ErrorCode::NotFound.status(format!("task {task_id} is not available: {reason}")))).await;
                        return;
                    }
                    TaskStatus::Running => {}
                }
                tokio::select! {
                    _ = cancel.cancelled() => {
                        let _ = sender.send(Err(ErrorCode::Unavailable.status("daemon is shutting down"))).await;
                        return;
                    }
                    changed = changes.changed() => if changed.is_err() { return },
                    _ = sender.closed() => return,
                }
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(receiver))))
    }

    /// Children weight parents by free upload bandwidth; we do not sample ours yet, so we send
    /// one host message with the bandwidth unknown (children then use their default weight) and
    /// hold the stream open until the child leaves, as upstream parents do.
    async fn sync_host(
        &self,
        _request: Request<dfdaemon::SyncHostRequest>,
    ) -> Result<Response<Self::SyncHostStream>, Status> {
        let (sender, receiver) = mpsc::channel(1);
        let cancel = self.cancel.clone();
        self.tracker.spawn(async move {
            let host = common::Host {
                network: Some(common::Network::default()),
                ..Default::default()
            };
            if sender.send(Ok(host)).await.is_err() {
                return;
            }
            tokio::select! {
                _ = cancel.cancelled() => {}
                _ = sender.closed() => {}
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(receiver))))
    }

    async fn stat_task(
        &self,
        request: Request<dfdaemon::StatTaskRequest>,
    ) -> Result<Response<common::Task>, Status> {
        Ok(Response::new(
            stat_task(&self.engine, &request.into_inner().task_id).await?,
        ))
    }

    async fn delete_task(
        &self,
        request: Request<dfdaemon::DeleteTaskRequest>,
    ) -> Result<Response<()>, Status> {
        delete_task(&self.engine, &request.into_inner().task_id).await?;
        Ok(Response::new(()))
    }

    type DownloadCacheTaskStream = Unserved<dfdaemon::DownloadCacheTaskResponse>;
    type SyncCachePiecesStream = Unserved<dfdaemon::SyncCachePiecesResponse>;
    type DownloadPersistentTaskStream = Unserved<dfdaemon::DownloadPersistentTaskResponse>;
    type SyncPersistentPiecesStream = Unserved<dfdaemon::SyncPersistentPiecesResponse>;
    type DownloadPersistentCacheTaskStream =
        Unserved<dfdaemon::DownloadPersistentCacheTaskResponse>;
    type SyncPersistentCachePiecesStream = Unserved<dfdaemon::SyncPersistentCachePiecesResponse>;
    type SyncHostStream = ResponseStream<common::Host>;
    unserved_rpcs! {
        stat_local_task(dfdaemon::StatLocalTaskRequest) -> dfdaemon::StatLocalTaskResponse;
        list_task_entries(dfdaemon::ListTaskEntriesRequest) -> dfdaemon::ListTaskEntriesResponse;
        download_cache_task(dfdaemon::DownloadCacheTaskRequest) -> Self::DownloadCacheTaskStream;
        stat_cache_task(dfdaemon::StatCacheTaskRequest) -> common::CacheTask;
        delete_cache_task(dfdaemon::DeleteCacheTaskRequest) -> ();
        sync_cache_pieces(dfdaemon::SyncCachePiecesRequest) -> Self::SyncCachePiecesStream;
        download_cache_piece(dfdaemon::DownloadCachePieceRequest) -> dfdaemon::DownloadCachePieceResponse;
        download_persistent_task(dfdaemon::DownloadPersistentTaskRequest) -> Self::DownloadPersistentTaskStream;
        sync_persistent_pieces(dfdaemon::SyncPersistentPiecesRequest) -> Self::SyncPersistentPiecesStream;
        update_persistent_task(dfdaemon::UpdatePersistentTaskRequest) -> ();
        stat_persistent_task(dfdaemon::StatPersistentTaskRequest) -> common::PersistentTask;
        delete_persistent_task(dfdaemon::DeletePersistentTaskRequest) -> ();
        download_persistent_cache_task(dfdaemon::DownloadPersistentCacheTaskRequest) -> Self::DownloadPersistentCacheTaskStream;
        update_persistent_cache_task(dfdaemon::UpdatePersistentCacheTaskRequest) -> ();
        stat_persistent_cache_task(dfdaemon::StatPersistentCacheTaskRequest) -> common::PersistentCacheTask;
        delete_persistent_cache_task(dfdaemon::DeletePersistentCacheTaskRequest) -> ();
        sync_persistent_cache_pieces(dfdaemon::SyncPersistentCachePiecesRequest) -> Self::SyncPersistentCachePiecesStream;
    }
}
