use std::time::Duration;

use shoal_protocol::common::{self, Download, Priority};
use shoal_protocol::scheduler::announce_peer_request::Request;
use shoal_protocol::scheduler::announce_peer_response::Response;
use shoal_protocol::scheduler::*;
use tokio::sync::mpsc;
use tokio_stream::StreamExt;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::*;
use crate::scheduling::Policy;
use crate::state::SharedState;

const TASK: &str = "7fcf06e5f0b1e443065c1a563eed788eb2e168a05c6ad9c4b319f7a976322be0";

fn scheduler(schedule_wait: Duration) -> Scheduler {
    Scheduler {
        state: SharedState::default(),
        policy: Policy {
            candidate_parent_limit: 4,
            max_back_to_source_peers: 1,
            seed_trigger: true,
        },
        schedule_wait,
        idle_timeout: Duration::from_secs(900),
        tracker: TaskTracker::new(),
        cancel: CancellationToken::new(),
    }
}

/// A client side of one AnnouncePeer stream.
struct Client {
    peer_id: String,
    host_id: String,
    requests: mpsc::Sender<Result<AnnouncePeerRequest, Status>>,
    responses: ResponseStream,
}

impl Client {
    fn open(scheduler: &Scheduler, peer_id: &str, host_id: &str) -> Self {
        let (requests, inbound) = mpsc::channel(16);
        let responses = start(scheduler, ReceiverStream::new(inbound));
        Self {
            peer_id: peer_id.into(),
            host_id: host_id.into(),
            requests,
            responses,
        }
    }

    async fn send(&self, request: Request) {
        let message = AnnouncePeerRequest {
            host_id: self.host_id.clone(),
            task_id: TASK.into(),
            peer_id: self.peer_id.clone(),
            request: Some(request),
        };
        self.requests.send(Ok(message)).await.unwrap();
    }

    async fn register(&self, download: Download) {
        self.send(Request::RegisterPeerRequest(RegisterPeerRequest {
            download: Some(download),
        }))
        .await;
    }

    async fn next(&mut self) -> Option<Result<AnnouncePeerResponse, Status>> {
        tokio::time::timeout(Duration::from_secs(60), self.responses.next())
            .await
            .expect("the scheduler answers or ends the stream")
    }
}

fn sized() -> Download {
    Download {
        actual_content_length: Some(100),
        actual_piece_length: Some(10),
        ..Default::default()
    }
}

fn announce(scheduler: &Scheduler, id: &str, ip: &str) {
    let host = common::Host {
        id: id.into(),
        ip: ip.into(),
        port: 4000,
        ..Default::default()
    };
    scheduler.state.lock().announce_host(host, Instant::now());
}

fn is_back_to_source(response: &Option<Result<AnnouncePeerResponse, Status>>) -> bool {
    matches!(
        response,
        Some(Ok(AnnouncePeerResponse {
            response: Some(Response::NeedBackToSourceResponse(_))
        }))
    )
}

#[tokio::test(start_paused = true)]
async fn disabled_back_to_source_gives_up_after_the_wait() {
    let scheduler = scheduler(Duration::from_secs(30));
    let mut client = Client::open(&scheduler, "child", "unknown-host");
    client
        .register(Download {
            disable_back_to_source: true,
            ..sized()
        })
        .await;
    let status = client.next().await.unwrap().unwrap_err();
    assert_eq!(status.code(), tonic::Code::Unavailable);
    assert!(client.next().await.is_none());
}

#[tokio::test(start_paused = true)]
async fn exhausted_budget_waits_then_falls_back_to_the_origin() {
    let scheduler = scheduler(Duration::from_secs(30));
    let mut first = Client::open(&scheduler, "first", "host-unknown-1");
    first.register(sized()).await;
    assert!(is_back_to_source(&first.next().await));
    let mut second = Client::open(&scheduler, "second", "host-unknown-2");
    let started = Instant::now();
    second.register(sized()).await;
    assert!(is_back_to_source(&second.next().await));
    assert!(
        started.elapsed() >= Duration::from_secs(30),
        "waited for the stall fallback"
    );
}

#[tokio::test(start_paused = true)]
async fn waiting_child_is_answered_when_a_parent_registers() {
    let scheduler = scheduler(Duration::from_secs(30));
    announce(&scheduler, "host-a", "10.0.0.1");
    let mut child = Client::open(&scheduler, "child", "host-b");
    child
        .register(Download {
            disable_back_to_source: true,
            ..sized()
        })
        .await;
    let mut parent = Client::open(&scheduler, "parent", "host-a");
    parent.register(sized()).await;
    assert!(is_back_to_source(&parent.next().await));
    let Some(Ok(AnnouncePeerResponse {
        response: Some(Response::NormalTaskResponse(normal)),
    })) = child.next().await
    else {
        panic!("expected a normal answer");
    };
    assert_eq!(normal.candidate_parents[0].id, "parent");
}

#[tokio::test]
async fn level1_priority_is_refused() {
    let scheduler = scheduler(Duration::from_secs(30));
    let mut client = Client::open(&scheduler, "child", "host");
    client
        .register(Download {
            priority: Priority::Level1 as i32,
            ..sized()
        })
        .await;
    let status = client.next().await.unwrap().unwrap_err();
    assert_eq!(status.code(), tonic::Code::FailedPrecondition);
}

#[tokio::test]
async fn messages_before_registration_are_refused() {
    let scheduler = scheduler(Duration::from_secs(30));
    let mut client = Client::open(&scheduler, "child", "host");
    client
        .send(Request::DownloadPeerStartedRequest(
            DownloadPeerStartedRequest {},
        ))
        .await;
    let status = client.next().await.unwrap().unwrap_err();
    assert_eq!(status.code(), tonic::Code::InvalidArgument);
}

#[tokio::test]
async fn terminal_message_ends_the_stream_with_ok() {
    let scheduler = scheduler(Duration::from_secs(30));
    let mut client = Client::open(&scheduler, "child", "host");
    client.register(sized()).await;
    assert!(is_back_to_source(&client.next().await));
    client
        .send(Request::DownloadPeerBackToSourceFinishedRequest(
            DownloadPeerBackToSourceFinishedRequest {},
        ))
        .await;
    assert!(client.next().await.is_none());
    let peer = scheduler
        .state
        .lock()
        .peer_message(&PeerId::from_wire("child"))
        .unwrap();
    assert_eq!(peer.state, "Succeeded");
}

#[tokio::test]
async fn closed_inbound_stream_marks_the_peer_failed() {
    let scheduler = scheduler(Duration::from_secs(30));
    let mut client = Client::open(&scheduler, "child", "host");
    client.register(sized()).await;
    assert!(is_back_to_source(&client.next().await));
    let Client {
        requests,
        mut responses,
        ..
    } = client;
    drop(requests);
    let end = tokio::time::timeout(Duration::from_secs(5), responses.next())
        .await
        .unwrap();
    assert!(end.is_none());
    let peer = scheduler
        .state
        .lock()
        .peer_message(&PeerId::from_wire("child"))
        .unwrap();
    assert_eq!(peer.state, "Failed");
}

#[tokio::test]
async fn shutdown_ends_open_streams_with_cancelled() {
    let scheduler = scheduler(Duration::from_secs(30));
    let mut client = Client::open(&scheduler, "child", "host");
    client
        .register(Download {
            disable_back_to_source: true,
            ..sized()
        })
        .await;
    scheduler.cancel.cancel();
    let status = client.next().await.unwrap().unwrap_err();
    assert_eq!(status.code(), tonic::Code::Cancelled);
    scheduler.tracker.close();
    tokio::time::timeout(Duration::from_secs(5), scheduler.tracker.wait())
        .await
        .unwrap();
}

#[tokio::test]
async fn answers_stop_at_the_client_limit() {
    let scheduler = scheduler(Duration::from_secs(30));
    let mut client = Client::open(&scheduler, "child", "host");
    client.register(sized()).await;
    let mut answers = 0;
    assert!(is_back_to_source(&client.next().await));
    answers += 1;
    for _ in 0..MAX_RESPONSES + 2 {
        client
            .send(Request::ReschedulePeerRequest(
                ReschedulePeerRequest::default(),
            ))
            .await;
    }
    client
        .send(Request::DownloadPeerFailedRequest(
            DownloadPeerFailedRequest::default(),
        ))
        .await;
    while let Some(response) = client.next().await {
        assert!(response.is_ok());
        answers += 1;
    }
    assert_eq!(answers, MAX_RESPONSES);
}

#[tokio::test(start_paused = true)]
async fn silent_streams_are_reclaimed() {
    let scheduler = scheduler(Duration::from_secs(30));
    let mut client = Client::open(&scheduler, "child", "host");
    client.register(sized()).await;
    assert!(is_back_to_source(&client.next().await));
    let end = tokio::time::timeout(Duration::from_secs(3600), client.responses.next()).await;
    let status = end
        .expect("reclaimed within the idle timeout")
        .unwrap()
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::Unavailable);
    let peer = scheduler
        .state
        .lock()
        .peer_message(&PeerId::from_wire("child"))
        .unwrap();
    assert_eq!(peer.state, "Failed");
}
