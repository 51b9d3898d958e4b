//! Starting a scheduler on loopback and driving AnnouncePeer streams.

use std::net::SocketAddr;
use std::time::Duration;

use shoal_protocol::common::{self, Download, Network};
use shoal_protocol::scheduler::announce_peer_request::Request;
use shoal_protocol::scheduler::announce_peer_response::Response;
use shoal_protocol::scheduler::scheduler_client::SchedulerClient;
use shoal_protocol::scheduler::*;
use shoal_scheduler::{SchedulerConfig, SchedulerError};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tonic::transport::Channel;
use tonic::Streaming;

/// Bound on every await that waits for the scheduler.
pub(crate) const PATIENCE: Duration = Duration::from_secs(10);
pub(crate) const TASK: &str = "7fcf06e5f0b1e443065c1a563eed788eb2e168a05c6ad9c4b319f7a976322be0";

/// A scheduler serving on an ephemeral loopback port.
pub(crate) struct TestScheduler {
    pub(crate) addr: SocketAddr,
    cancel: CancellationToken,
    handle: Option<JoinHandle<Result<(), SchedulerError>>>,
}

impl TestScheduler {
    pub(crate) async fn start(config: SchedulerConfig) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let cancel = CancellationToken::new();
        let handle = tokio::spawn(shoal_scheduler::serve(listener, config, cancel.clone()));
        Self {
            addr,
            cancel,
            handle: Some(handle),
        }
    }

    pub(crate) async fn default() -> Self {
        Self::start(SchedulerConfig::default()).await
    }

    pub(crate) async fn channel(&self) -> Channel {
        let endpoint = tonic::transport::Endpoint::from_shared(format!("http://{}", self.addr))
            .unwrap()
            .connect_timeout(PATIENCE);
        tokio::time::timeout(PATIENCE, endpoint.connect())
            .await
            .unwrap()
            .unwrap()
    }

    pub(crate) async fn client(&self) -> SchedulerClient<Channel> {
        SchedulerClient::new(self.channel().await)
    }

    /// Cancels and waits for `serve` to return.
    pub(crate) async fn stop(mut self) -> Result<(), SchedulerError> {
        self.cancel.cancel();
        let handle = self.handle.take().unwrap();
        tokio::time::timeout(PATIENCE, handle)
            .await
            .expect("serve returns after cancel")
            .unwrap()
    }
}

impl Drop for TestScheduler {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}

/// A normal (or seed) host at `ip:port`.
pub(crate) fn host(id: &str, port: i32, seed: bool) -> common::Host {
    common::Host {
        id: id.into(),
        r#type: u32::from(seed),
        hostname: id.into(),
        ip: "127.0.0.1".into(),
        port,
        download_port: port,
        network: Some(Network {
            idc: Some("idc-1".into()),
            location: Some("cn|hz".into()),
            ..Default::default()
        }),
        ..Default::default()
    }
}

pub(crate) async fn announce_host(client: &mut SchedulerClient<Channel>, host: common::Host) {
    let request = AnnounceHostRequest {
        host: Some(host),
        interval: None,
    };
    tokio::time::timeout(PATIENCE, client.announce_host(request))
        .await
        .unwrap()
        .unwrap();
}

/// Announces normal hosts `ids` on distinct fake ports.
pub(crate) async fn announce_hosts(client: &mut SchedulerClient<Channel>, ids: &[&str]) {
    for (index, id) in ids.iter().enumerate() {
        let port = 40_000 + i32::try_from(index).unwrap();
        announce_host(client, host(id, port, false)).await;
    }
}

/// A download whose origin stat gave 100 bytes in pieces of 10.
pub(crate) fn sized() -> Download {
    Download {
        url: "http://origin.invalid/file".into(),
        actual_content_length: Some(100),
        actual_piece_length: Some(10),
        actual_piece_count: Some(10),
        ..Default::default()
    }
}

/// The client side of one AnnouncePeer stream.
pub(crate) struct PeerStream {
    pub(crate) peer_id: String,
    host_id: String,
    task_id: String,
    requests: mpsc::Sender<AnnouncePeerRequest>,
    responses: Streaming<AnnouncePeerResponse>,
}

impl PeerStream {
    pub(crate) async fn open(
        client: &mut SchedulerClient<Channel>,
        peer_id: &str,
        host_id: &str,
    ) -> Self {
        Self::open_for(client, peer_id, host_id, TASK).await
    }

    pub(crate) async fn open_for(
        client: &mut SchedulerClient<Channel>,
        peer_id: &str,
        host_id: &str,
        task_id: &str,
    ) -> Self {
        let (requests, outbound) = mpsc::channel(16);
        let call = client.announce_peer(ReceiverStream::new(outbound));
        let responses = tokio::time::timeout(PATIENCE, call)
            .await
            .expect("the response stream opens at once")
            .unwrap()
            .into_inner();
        Self {
            peer_id: peer_id.into(),
            host_id: host_id.into(),
            task_id: task_id.into(),
            requests,
            responses,
        }
    }

    /// Opens a stream and registers `download`.
    pub(crate) async fn register(
        client: &mut SchedulerClient<Channel>,
        peer_id: &str,
        host_id: &str,
        download: Download,
    ) -> Self {
        let stream = Self::open(client, peer_id, host_id).await;
        stream
            .send(Request::RegisterPeerRequest(RegisterPeerRequest {
                download: Some(download),
            }))
            .await;
        stream
    }

    pub(crate) async fn send(&self, request: Request) {
        self.send_raw(AnnouncePeerRequest {
            host_id: self.host_id.clone(),
            task_id: self.task_id.clone(),
            peer_id: self.peer_id.clone(),
            request: Some(request),
        })
        .await;
    }

    pub(crate) async fn send_raw(&self, request: AnnouncePeerRequest) {
        self.requests.send(request).await.expect("stream open");
    }

    /// The next response, `Ok(None)` at the end of the stream.
    pub(crate) async fn next(&mut self) -> Result<Option<Response>, tonic::Status> {
        let message = tokio::time::timeout(PATIENCE, self.responses.message())
            .await
            .expect("the scheduler answers in time")?;
        Ok(message.map(|message| message.response.expect("response variant set")))
    }

    pub(crate) async fn expect_normal(&mut self) -> Vec<common::Peer> {
        match self.next().await {
            Ok(Some(Response::NormalTaskResponse(normal))) => {
                assert!(
                    !normal.candidate_parents.is_empty(),
                    "normal answers carry parents"
                );
                normal.candidate_parents
            }
            other => panic!("{}: expected a normal answer, got {other:?}", self.peer_id),
        }
    }

    pub(crate) async fn expect_parent_ids(&mut self) -> Vec<String> {
        self.expect_normal()
            .await
            .into_iter()
            .map(|peer| peer.id)
            .collect()
    }

    pub(crate) async fn expect_back_to_source(&mut self) {
        match self.next().await {
            Ok(Some(Response::NeedBackToSourceResponse(_))) => {}
            other => panic!("{}: expected back-to-source, got {other:?}", self.peer_id),
        }
    }

    /// The stream ends with OK within one second.
    pub(crate) async fn expect_end_ok(&mut self) {
        let end = tokio::time::timeout(Duration::from_secs(1), self.responses.message())
            .await
            .expect("the stream ends within 1 s");
        assert!(
            matches!(end, Ok(None)),
            "{}: expected OK end, got {end:?}",
            self.peer_id
        );
    }

    pub(crate) async fn expect_error(&mut self) -> tonic::Status {
        match self.next().await {
            Err(status) => status,
            other => panic!("{}: expected an error status, got {other:?}", self.peer_id),
        }
    }

    /// Ends the download from the origin and checks the stream closes.
    pub(crate) async fn finish_back_to_source(mut self) {
        self.send(Request::DownloadPeerBackToSourceFinishedRequest(
            DownloadPeerBackToSourceFinishedRequest {},
        ))
        .await;
        self.expect_end_ok().await;
    }
}

/// A first peer that is told to use the origin and starts doing so.
pub(crate) async fn origin_peer(
    client: &mut SchedulerClient<Channel>,
    peer_id: &str,
    host_id: &str,
) -> PeerStream {
    let mut peer = PeerStream::register(client, peer_id, host_id, sized()).await;
    peer.expect_back_to_source().await;
    peer.send(Request::DownloadPeerBackToSourceStartedRequest(
        DownloadPeerBackToSourceStartedRequest::default(),
    ))
    .await;
    peer
}
