//! `dfdaemon.v2.DfdaemonDownload` on the daemon's unix socket: the local API `shoal get` uses.

use std::path::PathBuf;

use shoal_protocol::dfdaemon::dfdaemon_download_server::DfdaemonDownload;
use shoal_protocol::{common, dfdaemon, ErrorCode};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tonic::{Request, Response, Status};

use crate::download::Engine;
use crate::stream::{self, ResponseStream};
use crate::upload::grpc::{unserved_rpcs, Unserved};

/// The local download service.
#[derive(Debug, Clone)]
pub(crate) struct LocalService {
    pub(crate) engine: Engine,
    pub(crate) tracker: TaskTracker,
    pub(crate) cancel: CancellationToken,
}

#[tonic::async_trait]
impl DfdaemonDownload for LocalService {
    type DownloadTaskStream = ResponseStream<dfdaemon::DownloadTaskResponse>;

    async fn download_task(
        &self,
        request: Request<dfdaemon::DownloadTaskRequest>,
    ) -> Result<Response<Self::DownloadTaskStream>, Status> {
        let mut download = request
            .into_inner()
            .download
            .ok_or_else(|| ErrorCode::InvalidArgument.status("download is missing"))?;
        let output = match download.output_path.take().filter(|path| !path.is_empty()) {
            Some(path) => {
                let path = PathBuf::from(path);
                if !path.is_absolute() {
                    return Err(ErrorCode::InvalidArgument.status("output path must be absolute"));
                }
                Some(path)
            }
            None => None,
        };
        Ok(Response::new(stream::download_task(
            &self.engine,
            &self.tracker,
            download,
            output,
            &self.cancel,
        )))
    }

    async fn stat_task(
        &self,
        request: Request<dfdaemon::StatTaskRequest>,
    ) -> Result<Response<common::Task>, Status> {
        let task =
            crate::upload::grpc::stat_task(&self.engine, &request.into_inner().task_id).await?;
        Ok(Response::new(task))
    }

    async fn delete_task(
        &self,
        request: Request<dfdaemon::DeleteTaskRequest>,
    ) -> Result<Response<()>, Status> {
        crate::upload::grpc::delete_task(&self.engine, &request.into_inner().task_id).await?;
        Ok(Response::new(()))
    }

    type DownloadCacheTaskStream = Unserved<dfdaemon::DownloadCacheTaskResponse>;
    type DownloadPersistentTaskStream = Unserved<dfdaemon::DownloadPersistentTaskResponse>;
    type DownloadPersistentCacheTaskStream =
        Unserved<dfdaemon::DownloadPersistentCacheTaskResponse>;
    unserved_rpcs! {
        stat_local_task(dfdaemon::StatLocalTaskRequest) -> dfdaemon::StatLocalTaskResponse;
        list_local_tasks(dfdaemon::ListLocalTasksRequest) -> dfdaemon::ListLocalTasksResponse;
        list_task_entries(dfdaemon::ListTaskEntriesRequest) -> dfdaemon::ListTaskEntriesResponse;
        delete_local_task(dfdaemon::DeleteLocalTaskRequest) -> ();
        delete_host(()) -> ();
        download_cache_task(dfdaemon::DownloadCacheTaskRequest) -> Self::DownloadCacheTaskStream;
        stat_cache_task(dfdaemon::StatCacheTaskRequest) -> common::CacheTask;
        delete_cache_task(dfdaemon::DeleteCacheTaskRequest) -> ();
        download_persistent_task(dfdaemon::DownloadPersistentTaskRequest) -> Self::DownloadPersistentTaskStream;
        upload_persistent_task(dfdaemon::UploadPersistentTaskRequest) -> common::PersistentTask;
        stat_persistent_task(dfdaemon::StatPersistentTaskRequest) -> common::PersistentTask;
        stat_local_persistent_task(dfdaemon::StatLocalPersistentTaskRequest) -> dfdaemon::StatLocalPersistentTaskResponse;
        list_local_persistent_tasks(dfdaemon::ListLocalPersistentTasksRequest) -> dfdaemon::ListLocalPersistentTasksResponse;
        download_persistent_cache_task(dfdaemon::DownloadPersistentCacheTaskRequest) -> Self::DownloadPersistentCacheTaskStream;
        upload_persistent_cache_task(dfdaemon::UploadPersistentCacheTaskRequest) -> common::PersistentCacheTask;
        stat_persistent_cache_task(dfdaemon::StatPersistentCacheTaskRequest) -> common::PersistentCacheTask;
        stat_local_persistent_cache_task(dfdaemon::StatLocalPersistentCacheTaskRequest) -> dfdaemon::StatLocalPersistentCacheTaskResponse;
        list_local_persistent_cache_tasks(dfdaemon::ListLocalPersistentCacheTasksRequest) -> dfdaemon::ListLocalPersistentCacheTasksResponse;
    }
}
