//! `dfdaemon.v2.DfdaemonDownload` on the daemon's unix socket: the local API `shoal get` uses.

use std::path::PathBuf;

use shoal_protocol::dfdaemon::dfdaemon_download_server::DfdaemonDownload;
use shoal_protocol::{common, dfdaemon, ErrorCode};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tonic::{Request, Response, Status};

use crate::download::Engine;
use crate::stream::{self, ResponseStream};
use crate::upload::grpc::{unserved, Unserved};

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
    async fn stat_local_task(
        &self,
        _request: Request<dfdaemon::StatLocalTaskRequest>,
    ) -> Result<Response<dfdaemon::StatLocalTaskResponse>, Status> {
        Err(unserved("stat_local_task"))
    }
    async fn list_local_tasks(
        &self,
        _request: Request<dfdaemon::ListLocalTasksRequest>,
    ) -> Result<Response<dfdaemon::ListLocalTasksResponse>, Status> {
        Err(unserved("list_local_tasks"))
    }
    async fn list_task_entries(
        &self,
        _request: Request<dfdaemon::ListTaskEntriesRequest>,
    ) -> Result<Response<dfdaemon::ListTaskEntriesResponse>, Status> {
        Err(unserved("list_task_entries"))
    }
    async fn delete_local_task(
        &self,
        _request: Request<dfdaemon::DeleteLocalTaskRequest>,
    ) -> Result<Response<()>, Status> {
        Err(unserved("delete_local_task"))
    }
    async fn delete_host(&self, _request: Request<()>) -> Result<Response<()>, Status> {
        Err(unserved("delete_host"))
    }
    async fn download_cache_task(
        &self,
        _request: Request<dfdaemon::DownloadCacheTaskRequest>,
    ) -> Result<Response<Self::DownloadCacheTaskStream>, Status> {
        Err(unserved("download_cache_task"))
    }
    async fn stat_cache_task(
        &self,
        _request: Request<dfdaemon::StatCacheTaskRequest>,
    ) -> Result<Response<common::CacheTask>, Status> {
        Err(unserved("stat_cache_task"))
    }
    async fn delete_cache_task(
        &self,
        _request: Request<dfdaemon::DeleteCacheTaskRequest>,
    ) -> Result<Response<()>, Status> {
        Err(unserved("delete_cache_task"))
    }
    async fn download_persistent_task(
        &self,
        _request: Request<dfdaemon::DownloadPersistentTaskRequest>,
    ) -> Result<Response<Self::DownloadPersistentTaskStream>, Status> {
        Err(unserved("download_persistent_task"))
    }
    async fn upload_persistent_task(
        &self,
        _request: Request<dfdaemon::UploadPersistentTaskRequest>,
    ) -> Result<Response<common::PersistentTask>, Status> {
        Err(unserved("upload_persistent_task"))
    }
    async fn stat_persistent_task(
        &self,
        _request: Request<dfdaemon::StatPersistentTaskRequest>,
    ) -> Result<Response<common::PersistentTask>, Status> {
        Err(unserved("stat_persistent_task"))
    }
    async fn stat_local_persistent_task(
        &self,
        _request: Request<dfdaemon::StatLocalPersistentTaskRequest>,
    ) -> Result<Response<dfdaemon::StatLocalPersistentTaskResponse>, Status> {
        Err(unserved("stat_local_persistent_task"))
    }
    async fn list_local_persistent_tasks(
        &self,
        _request: Request<dfdaemon::ListLocalPersistentTasksRequest>,
    ) -> Result<Response<dfdaemon::ListLocalPersistentTasksResponse>, Status> {
        Err(unserved("list_local_persistent_tasks"))
    }
    async fn download_persistent_cache_task(
        &self,
        _request: Request<dfdaemon::DownloadPersistentCacheTaskRequest>,
    ) -> Result<Response<Self::DownloadPersistentCacheTaskStream>, Status> {
        Err(unserved("download_persistent_cache_task"))
    }
    async fn upload_persistent_cache_task(
        &self,
        _request: Request<dfdaemon::UploadPersistentCacheTaskRequest>,
    ) -> Result<Response<common::PersistentCacheTask>, Status> {
        Err(unserved("upload_persistent_cache_task"))
    }
    async fn stat_persistent_cache_task(
        &self,
        _request: Request<dfdaemon::StatPersistentCacheTaskRequest>,
    ) -> Result<Response<common::PersistentCacheTask>, Status> {
        Err(unserved("stat_persistent_cache_task"))
    }
    async fn stat_local_persistent_cache_task(
        &self,
        _request: Request<dfdaemon::StatLocalPersistentCacheTaskRequest>,
    ) -> Result<Response<dfdaemon::StatLocalPersistentCacheTaskResponse>, Status> {
        Err(unserved("stat_local_persistent_cache_task"))
    }
    async fn list_local_persistent_cache_tasks(
        &self,
        _request: Request<dfdaemon::ListLocalPersistentCacheTasksRequest>,
    ) -> Result<Response<dfdaemon::ListLocalPersistentCacheTasksResponse>, Status> {
        Err(unserved("list_local_persistent_cache_tasks"))
    }
}
