//! A fake seed daemon: records DownloadTask calls and holds their streams open until released.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use shoal_protocol::common::{CacheTask, Host, PersistentCacheTask, PersistentTask, Task};
use shoal_protocol::dfdaemon::dfdaemon_upload_server::{DfdaemonUpload, DfdaemonUploadServer};
use shoal_protocol::dfdaemon::*;
use tokio::sync::{mpsc, Notify};
use tokio_stream::wrappers::{ReceiverStream, TcpListenerStream};
use tokio_stream::Empty;
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status};

type Unary<T> = Result<Response<T>, Status>;
type Stream<T> = Empty<Result<T, Status>>;
type Sender = mpsc::Sender<Result<DownloadTaskResponse, Status>>;

/// What the fake saw, shared with the test.
#[derive(Default)]
pub(crate) struct Recorded {
    pub(crate) downloads: Mutex<Vec<DownloadTaskRequest>>,
    /// Open DownloadTask streams; dropping a sender ends that stream with OK.
    streams: Mutex<Vec<Sender>>,
    pub(crate) called: Notify,
}

pub(crate) struct FakeSeed {
    pub(crate) addr: SocketAddr,
    pub(crate) recorded: Arc<Recorded>,
    cancel: CancellationToken,
}

struct Service {
    recorded: Arc<Recorded>,
    /// Whether DownloadTask streams stay open until [`FakeSeed::release`].
    hold: bool,
}

impl FakeSeed {
    /// Serves on 127.0.0.1:0; `hold` keeps every DownloadTask stream open until released.
    pub(crate) async fn start(hold: bool) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let recorded = Arc::new(Recorded::default());
        let cancel = CancellationToken::new();
        let service = Service {
            recorded: recorded.clone(),
            hold,
        };
        let shutdown = cancel.clone().cancelled_owned();
        tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(DfdaemonUploadServer::new(service))
                .serve_with_incoming_shutdown(TcpListenerStream::new(listener), shutdown),
        );
        Self {
            addr,
            recorded,
            cancel,
        }
    }

    /// Waits for the first DownloadTask request.
    pub(crate) async fn first_download(&self) -> DownloadTaskRequest {
        let wait = async {
            loop {
                let called = self.recorded.called.notified();
                if let Some(first) = self.recorded.downloads.lock().unwrap().first() {
                    return first.clone();
                }
                called.await;
            }
        };
        tokio::time::timeout(crate::harness::PATIENCE, wait)
            .await
            .expect("seed triggered")
    }

    /// Ends every held stream with OK.
    pub(crate) fn release(&self) {
        self.recorded.streams.lock().unwrap().clear();
    }
}

impl Drop for FakeSeed {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}

#[tonic::async_trait]
impl DfdaemonUpload for Service {
    type DownloadTaskStream = ReceiverStream<Result<DownloadTaskResponse, Status>>;
    type SyncPiecesStream = Stream<SyncPiecesResponse>;
    type DownloadCacheTaskStream = Stream<DownloadCacheTaskResponse>;
    type SyncCachePiecesStream = Stream<SyncCachePiecesResponse>;
    type DownloadPersistentTaskStream = Stream<DownloadPersistentTaskResponse>;
    type SyncPersistentPiecesStream = Stream<SyncPersistentPiecesResponse>;
    type DownloadPersistentCacheTaskStream = Stream<DownloadPersistentCacheTaskResponse>;
    type SyncPersistentCachePiecesStream = Stream<SyncPersistentCachePiecesResponse>;
    type SyncHostStream = Stream<Host>;

    async fn download_task(
        &self,
        request: Request<DownloadTaskRequest>,
    ) -> Unary<Self::DownloadTaskStream> {
        let (sender, receiver) = mpsc::channel(1);
        self.recorded
            .downloads
            .lock()
            .unwrap()
            .push(request.into_inner());
        if self.hold {
            self.recorded.streams.lock().unwrap().push(sender);
        }
        self.recorded.called.notify_waiters();
        Ok(Response::new(ReceiverStream::new(receiver)))
    }

    async fn stat_task(&self, _: Request<StatTaskRequest>) -> Unary<Task> {
        Err(Status::unimplemented(""))
    }

    async fn stat_local_task(
        &self,
        _: Request<StatLocalTaskRequest>,
    ) -> Unary<StatLocalTaskResponse> {
        Err(Status::unimplemented(""))
    }

    async fn list_task_entries(
        &self,
        _: Request<ListTaskEntriesRequest>,
    ) -> Unary<ListTaskEntriesResponse> {
        Err(Status::unimplemented(""))
    }

    async fn delete_task(&self, _: Request<DeleteTaskRequest>) -> Unary<()> {
        Err(Status::unimplemented(""))
    }

    async fn sync_pieces(&self, _: Request<SyncPiecesRequest>) -> Unary<Self::SyncPiecesStream> {
        Err(Status::unimplemented(""))
    }

    async fn download_cache_task(
        &self,
        _: Request<DownloadCacheTaskRequest>,
    ) -> Unary<Self::DownloadCacheTaskStream> {
        Err(Status::unimplemented(""))
    }

    async fn stat_cache_task(&self, _: Request<StatCacheTaskRequest>) -> Unary<CacheTask> {
        Err(Status::unimplemented(""))
    }

    async fn delete_cache_task(&self, _: Request<DeleteCacheTaskRequest>) -> Unary<()> {
        Err(Status::unimplemented(""))
    }

    async fn sync_cache_pieces(
        &self,
        _: Request<SyncCachePiecesRequest>,
    ) -> Unary<Self::SyncCachePiecesStream> {
        Err(Status::unimplemented(""))
    }

    async fn download_cache_piece(
        &self,
        _: Request<DownloadCachePieceRequest>,
    ) -> Unary<DownloadCachePieceResponse> {
        Err(Status::unimplemented(""))
    }

    async fn download_persistent_task(
        &self,
        _: Request<DownloadPersistentTaskRequest>,
    ) -> Unary<Self::DownloadPersistentTaskStream> {
        Err(Status::unimplemented(""))
    }

    async fn sync_persistent_pieces(
        &self,
        _: Request<SyncPersistentPiecesRequest>,
    ) -> Unary<Self::SyncPersistentPiecesStream> {
        Err(Status::unimplemented(""))
    }

    async fn update_persistent_task(&self, _: Request<UpdatePersistentTaskRequest>) -> Unary<()> {
        Err(Status::unimplemented(""))
    }

    async fn stat_persistent_task(
        &self,
        _: Request<StatPersistentTaskRequest>,
    ) -> Unary<PersistentTask> {
        Err(Status::unimplemented(""))
    }

    async fn delete_persistent_task(&self, _: Request<DeletePersistentTaskRequest>) -> Unary<()> {
        Err(Status::unimplemented(""))
    }

    async fn download_persistent_cache_task(
        &self,
        _: Request<DownloadPersistentCacheTaskRequest>,
    ) -> Unary<Self::DownloadPersistentCacheTaskStream> {
        Err(Status::unimplemented(""))
    }

    async fn update_persistent_cache_task(
        &self,
        _: Request<UpdatePersistentCacheTaskRequest>,
    ) -> Unary<()> {
        Err(Status::unimplemented(""))
    }

    async fn stat_persistent_cache_task(
        &self,
        _: Request<StatPersistentCacheTaskRequest>,
    ) -> Unary<PersistentCacheTask> {
        Err(Status::unimplemented(""))
    }

    async fn delete_persistent_cache_task(
        &self,
        _: Request<DeletePersistentCacheTaskRequest>,
    ) -> Unary<()> {
        Err(Status::unimplemented(""))
    }

    async fn sync_persistent_cache_pieces(
        &self,
        _: Request<SyncPersistentCachePiecesRequest>,
    ) -> Unary<Self::SyncPersistentCachePiecesStream> {
        Err(Status::unimplemented(""))
    }

    async fn sync_host(&self, _: Request<SyncHostRequest>) -> Unary<Self::SyncHostStream> {
        Err(Status::unimplemented(""))
    }
}
