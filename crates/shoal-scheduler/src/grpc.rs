//! The tonic adapter for `scheduler.v2.Scheduler`: decodes requests, calls [`Scheduler`] and
//! [`crate::announce`], and turns errors into statuses in one place ([`status`]). Every RPC
//! outside the served subset answers `UNIMPLEMENTED`.

use std::error::Error;

use shoal_protocol::common::{
    CachePeer, CacheTask, Peer, PersistentCachePeer, PersistentCacheTask, PersistentPeer,
    PersistentTask, Task,
};
use shoal_protocol::scheduler::scheduler_server::Scheduler as SchedulerRpc;
use shoal_protocol::scheduler::*;
use shoal_protocol::ErrorCode;
use tokio_stream::Empty;
use tonic::{Request, Response, Status, Streaming};
use tracing::debug;

use crate::announce::{self, ResponseStream};
use crate::service::{Scheduler, ServiceError};

/// `scheduler.v2.Scheduler` served over [`Scheduler`].
#[derive(Debug, Clone)]
pub(crate) struct SchedulerService {
    scheduler: Scheduler,
}

impl SchedulerService {
    pub(crate) fn new(scheduler: Scheduler) -> Self {
        Self { scheduler }
    }
}

/// The full `source()` chain of `err`, joined with ": ".
pub(crate) fn error_chain(err: &dyn Error) -> String {
    let mut message = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        message.push_str(": ");
        message.push_str(&cause.to_string());
        source = cause.source();
    }
    message
}

/// The status for a failed unary request.
fn status(err: &ServiceError) -> Status {
    debug!(error = %error_chain(err), "request failed");
    err.code().status(error_chain(err))
}

fn unimplemented(method: &str) -> Status {
    ErrorCode::Unimplemented.status(format!("scheduler.v2.Scheduler/{method} is not served"))
}

type Unary<T> = Result<Response<T>, Status>;

#[tonic::async_trait]
impl SchedulerRpc for SchedulerService {
    type AnnouncePeerStream = ResponseStream;
    type AnnounceCachePeerStream = Empty<Result<AnnounceCachePeerResponse, Status>>;
    type AnnouncePersistentPeerStream = Empty<Result<AnnouncePersistentPeerResponse, Status>>;
    type AnnouncePersistentCachePeerStream =
        Empty<Result<AnnouncePersistentCachePeerResponse, Status>>;

    async fn announce_peer(
        &self,
        request: Request<Streaming<AnnouncePeerRequest>>,
    ) -> Unary<Self::AnnouncePeerStream> {
        Ok(Response::new(announce::start(
            &self.scheduler,
            request.into_inner(),
        )))
    }

    async fn stat_peer(&self, request: Request<StatPeerRequest>) -> Unary<Peer> {
        let peer = self.scheduler.stat_peer(request.into_inner());
        peer.map(Response::new).map_err(|err| status(&err))
    }

    async fn delete_peer(&self, request: Request<DeletePeerRequest>) -> Unary<()> {
        let result = self.scheduler.delete_peer(request.into_inner());
        result.map(Response::new).map_err(|err| status(&err))
    }

    async fn stat_task(&self, request: Request<StatTaskRequest>) -> Unary<Task> {
        let task = self.scheduler.stat_task(request.into_inner());
        task.map(Response::new).map_err(|err| status(&err))
    }

    async fn delete_task(&self, request: Request<DeleteTaskRequest>) -> Unary<()> {
        let result = self.scheduler.delete_task(request.into_inner());
        result.map(Response::new).map_err(|err| status(&err))
    }

    async fn announce_host(&self, request: Request<AnnounceHostRequest>) -> Unary<()> {
        let result = self.scheduler.announce_host(request.into_inner());
        result.map(Response::new).map_err(|err| status(&err))
    }

    async fn list_hosts(&self, request: Request<ListHostsRequest>) -> Unary<ListHostsResponse> {
        Ok(Response::new(
            self.scheduler.list_hosts(request.into_inner()),
        ))
    }

    async fn delete_host(&self, request: Request<DeleteHostRequest>) -> Unary<()> {
        let result = self.scheduler.delete_host(request.into_inner());
        result.map(Response::new).map_err(|err| status(&err))
    }

    async fn announce_cache_peer(
        &self,
        _request: Request<Streaming<AnnounceCachePeerRequest>>,
    ) -> Unary<Self::AnnounceCachePeerStream> {
        Err(unimplemented("AnnounceCachePeer"))
    }

    async fn stat_cache_peer(&self, _request: Request<StatCachePeerRequest>) -> Unary<CachePeer> {
        Err(unimplemented("StatCachePeer"))
    }

    async fn delete_cache_peer(&self, _request: Request<DeleteCachePeerRequest>) -> Unary<()> {
        Err(unimplemented("DeleteCachePeer"))
    }

    async fn stat_cache_task(&self, _request: Request<StatCacheTaskRequest>) -> Unary<CacheTask> {
        Err(unimplemented("StatCacheTask"))
    }

    async fn delete_cache_task(&self, _request: Request<DeleteCacheTaskRequest>) -> Unary<()> {
        Err(unimplemented("DeleteCacheTask"))
    }

    async fn announce_persistent_peer(
        &self,
        _request: Request<Streaming<AnnouncePersistentPeerRequest>>,
    ) -> Unary<Self::AnnouncePersistentPeerStream> {
        Err(unimplemented("AnnouncePersistentPeer"))
    }

    async fn stat_persistent_peer(
        &self,
        _request: Request<StatPersistentPeerRequest>,
    ) -> Unary<PersistentPeer> {
        Err(unimplemented("StatPersistentPeer"))
    }

    async fn delete_persistent_peer(
        &self,
        _request: Request<DeletePersistentPeerRequest>,
    ) -> Unary<()> {
        Err(unimplemented("DeletePersistentPeer"))
    }

    async fn upload_persistent_task_started(
        &self,
        _request: Request<UploadPersistentTaskStartedRequest>,
    ) -> Unary<()> {
        Err(unimplemented("UploadPersistentTaskStarted"))
    }

    async fn upload_persistent_task_finished(
        &self,
        _request: Request<UploadPersistentTaskFinishedRequest>,
    ) -> Unary<PersistentTask> {
        Err(unimplemented("UploadPersistentTaskFinished"))
    }

    async fn upload_persistent_task_failed(
        &self,
        _request: Request<UploadPersistentTaskFailedRequest>,
    ) -> Unary<()> {
        Err(unimplemented("UploadPersistentTaskFailed"))
    }

    async fn stat_persistent_task(
        &self,
        _request: Request<StatPersistentTaskRequest>,
    ) -> Unary<PersistentTask> {
        Err(unimplemented("StatPersistentTask"))
    }

    async fn delete_persistent_task(
        &self,
        _request: Request<DeletePersistentTaskRequest>,
    ) -> Unary<()> {
        Err(unimplemented("DeletePersistentTask"))
    }

    async fn announce_persistent_cache_peer(
        &self,
        _request: Request<Streaming<AnnouncePersistentCachePeerRequest>>,
    ) -> Unary<Self::AnnouncePersistentCachePeerStream> {
        Err(unimplemented("AnnouncePersistentCachePeer"))
    }

    async fn stat_persistent_cache_peer(
        &self,
        _request: Request<StatPersistentCachePeerRequest>,
    ) -> Unary<PersistentCachePeer> {
        Err(unimplemented("StatPersistentCachePeer"))
    }

    async fn delete_persistent_cache_peer(
        &self,
        _request: Request<DeletePersistentCachePeerRequest>,
    ) -> Unary<()> {
        Err(unimplemented("DeletePersistentCachePeer"))
    }

    async fn upload_persistent_cache_task_started(
        &self,
        _request: Request<UploadPersistentCacheTaskStartedRequest>,
    ) -> Unary<()> {
        Err(unimplemented("UploadPersistentCacheTaskStarted"))
    }

    async fn upload_persistent_cache_task_finished(
        &self,
        _request: Request<UploadPersistentCacheTaskFinishedRequest>,
    ) -> Unary<PersistentCacheTask> {
        Err(unimplemented("UploadPersistentCacheTaskFinished"))
    }

    async fn upload_persistent_cache_task_failed(
        &self,
        _request: Request<UploadPersistentCacheTaskFailedRequest>,
    ) -> Unary<()> {
        Err(unimplemented("UploadPersistentCacheTaskFailed"))
    }

    async fn stat_persistent_cache_task(
        &self,
        _request: Request<StatPersistentCacheTaskRequest>,
    ) -> Unary<PersistentCacheTask> {
        Err(unimplemented("StatPersistentCacheTask"))
    }

    async fn delete_persistent_cache_task(
        &self,
        _request: Request<DeletePersistentCacheTaskRequest>,
    ) -> Unary<()> {
        Err(unimplemented("DeletePersistentCacheTask"))
    }

    async fn preheat_image(&self, _request: Request<PreheatImageRequest>) -> Unary<()> {
        Err(unimplemented("PreheatImage"))
    }

    async fn stat_image(&self, _request: Request<StatImageRequest>) -> Unary<StatImageResponse> {
        Err(unimplemented("StatImage"))
    }

    async fn preheat_file(&self, _request: Request<PreheatFileRequest>) -> Unary<()> {
        Err(unimplemented("PreheatFile"))
    }

    async fn stat_file(&self, _request: Request<StatFileRequest>) -> Unary<StatFileResponse> {
        Err(unimplemented("StatFile"))
    }
}
