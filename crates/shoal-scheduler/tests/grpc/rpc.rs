//! Unary RPCs, health, lifecycle and malformed input.

use shoal_protocol::common::{self, Download};
use shoal_protocol::scheduler::announce_peer_request::Request;
use shoal_protocol::scheduler::*;
use shoal_scheduler::{SchedulerConfig, SchedulerError};
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::HealthCheckRequest;

use crate::harness::*;

#[tokio::test]
async fn health_reports_serving() {
    let scheduler = TestScheduler::default().await;
    let mut health = HealthClient::new(scheduler.channel().await);
    for service in ["", "scheduler.v2.Scheduler"] {
        let request = HealthCheckRequest {
            service: service.into(),
        };
        let response = health.check(request).await.unwrap().into_inner();
        assert_eq!(
            response.status,
            ServingStatus::Serving as i32,
            "service {service:?}"
        );
    }
}

#[tokio::test]
async fn announce_host_is_idempotent_and_listed() {
    let scheduler = TestScheduler::default().await;
    let mut client = scheduler.client().await;
    announce_host(&mut client, host("host-a", 4000, false)).await;
    announce_host(&mut client, host("host-a", 4000, false)).await;
    announce_host(&mut client, host("host-b", 4001, true)).await;
    let all = ListHostsRequest { r#type: None };
    let hosts = client.list_hosts(all).await.unwrap().into_inner().hosts;
    let seeds = ListHostsRequest { r#type: Some(1) };
    let seeds = client.list_hosts(seeds).await.unwrap().into_inner().hosts;
    assert_eq!(seeds.len(), 1);
    assert_eq!(seeds[0].id, "host-b");
    let mut ids: Vec<_> = hosts.iter().map(|host| host.id.as_str()).collect();
    ids.sort();
    assert_eq!(ids, ["host-a", "host-b"]);
}

#[tokio::test]
async fn stat_task_and_peer_describe_registered_downloads() {
    let scheduler = TestScheduler::default().await;
    let mut client = scheduler.client().await;
    announce_hosts(&mut client, &["host-a"]).await;
    let _peer = origin_peer(&mut client, "peer-a", "host-a").await;
    let stat = StatTaskRequest {
        host_id: "host-a".into(),
        task_id: TASK.into(),
    };
    let task = client.stat_task(stat).await.unwrap().into_inner();
    assert_eq!(task.id, TASK);
    assert_eq!(task.content_length, 100);
    assert_eq!(task.piece_count, 10);
    assert_eq!(task.peer_count, 1);
    assert!(task.has_available_peer);
    let stat = StatPeerRequest {
        peer_id: "peer-a".into(),
        ..Default::default()
    };
    let peer = client.stat_peer(stat).await.unwrap().into_inner();
    assert_eq!(peer.id, "peer-a");
    assert_eq!(peer.state, "BackToSource");
    assert_eq!(peer.task.unwrap().id, TASK);
}

#[tokio::test]
async fn unknown_task_and_peer_are_not_found() {
    let scheduler = TestScheduler::default().await;
    let mut client = scheduler.client().await;
    let stat = StatTaskRequest {
        host_id: "h".into(),
        task_id: TASK.into(),
    };
    assert_eq!(
        client.stat_task(stat).await.unwrap_err().code(),
        tonic::Code::NotFound
    );
    let stat = StatPeerRequest {
        peer_id: "nobody".into(),
        ..Default::default()
    };
    assert_eq!(
        client.stat_peer(stat).await.unwrap_err().code(),
        tonic::Code::NotFound
    );
}

#[tokio::test]
async fn deleting_host_task_and_peer_stops_offering_them() {
    let scheduler = TestScheduler::default().await;
    let mut client = scheduler.client().await;
    announce_hosts(&mut client, &["host-a", "host-b", "host-c", "host-d"]).await;
    let _a = origin_peer(&mut client, "peer-a", "host-a").await;
    let mut b = PeerStream::register(&mut client, "peer-b", "host-b", sized()).await;
    assert_eq!(b.expect_parent_ids().await, ["peer-a"]);
    let mut c = PeerStream::register(&mut client, "peer-c", "host-c", sized()).await;
    assert_eq!(c.expect_normal().await.len(), 2);

    let delete = DeleteTaskRequest {
        host_id: "host-a".into(),
        task_id: TASK.into(),
    };
    client.delete_task(delete).await.unwrap();
    let delete = DeletePeerRequest {
        peer_id: "peer-b".into(),
        ..Default::default()
    };
    client.delete_peer(delete).await.unwrap();
    client
        .delete_host(DeleteHostRequest {
            host_id: "host-c".into(),
        })
        .await
        .unwrap();

    for peer_id in ["peer-a", "peer-b", "peer-c"] {
        let stat = StatPeerRequest {
            peer_id: peer_id.into(),
            ..Default::default()
        };
        assert_eq!(
            client.stat_peer(stat).await.unwrap_err().code(),
            tonic::Code::NotFound
        );
    }
    let hosts = client
        .list_hosts(ListHostsRequest::default())
        .await
        .unwrap()
        .into_inner()
        .hosts;
    assert_eq!(hosts.len(), 3);
    let mut d = PeerStream::register(&mut client, "peer-d", "host-d", sized()).await;
    d.expect_back_to_source().await;
}

#[tokio::test]
async fn other_rpcs_are_unimplemented() {
    let scheduler = TestScheduler::default().await;
    let mut client = scheduler.client().await;
    let status = client
        .stat_cache_task(StatCacheTaskRequest::default())
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::Unimplemented);
    let status = client
        .preheat_image(PreheatImageRequest::default())
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::Unimplemented);
    let status = client
        .stat_persistent_cache_task(StatPersistentCacheTaskRequest::default())
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::Unimplemented);
    let (_requests, outbound) = tokio::sync::mpsc::channel::<AnnounceCachePeerRequest>(1);
    let status = client
        .announce_cache_peer(tokio_stream::wrappers::ReceiverStream::new(outbound))
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::Unimplemented);
}

#[tokio::test]
async fn malformed_unary_requests_are_rejected_without_harm() {
    let scheduler = TestScheduler::default().await;
    let mut client = scheduler.client().await;
    let invalid = tonic::Code::InvalidArgument;
    let no_host = AnnounceHostRequest {
        host: None,
        interval: None,
    };
    assert_eq!(
        client.announce_host(no_host).await.unwrap_err().code(),
        invalid
    );
    let empty_id = AnnounceHostRequest {
        host: Some(common::Host::default()),
        interval: None,
    };
    assert_eq!(
        client.announce_host(empty_id).await.unwrap_err().code(),
        invalid
    );
    let stat = StatTaskRequest::default();
    assert_eq!(client.stat_task(stat).await.unwrap_err().code(), invalid);
    let stat = StatTaskRequest {
        task_id: "not a task id!".into(),
        ..Default::default()
    };
    assert_eq!(client.stat_task(stat).await.unwrap_err().code(), invalid);
    assert_eq!(
        client
            .stat_peer(StatPeerRequest::default())
            .await
            .unwrap_err()
            .code(),
        invalid
    );
    let delete = DeleteTaskRequest::default();
    assert_eq!(
        client.delete_task(delete).await.unwrap_err().code(),
        invalid
    );
    let delete = DeletePeerRequest::default();
    assert_eq!(
        client.delete_peer(delete).await.unwrap_err().code(),
        invalid
    );
    let delete = DeleteHostRequest::default();
    assert_eq!(
        client.delete_host(delete).await.unwrap_err().code(),
        invalid
    );
    // Deleting what does not exist is fine.
    client
        .delete_host(DeleteHostRequest {
            host_id: "ghost".into(),
        })
        .await
        .unwrap();
    let delete = DeleteTaskRequest {
        host_id: "ghost".into(),
        task_id: TASK.into(),
    };
    client.delete_task(delete).await.unwrap();
    // Hosts without an address are accepted but never become parents.
    let bare = common::Host {
        id: "bare".into(),
        ..Default::default()
    };
    announce_host(&mut client, bare).await;
    let _a = origin_peer(&mut client, "peer-a", "bare").await;
    let mut b = PeerStream::register(&mut client, "peer-b", "other", sized()).await;
    b.expect_back_to_source().await;
    let mut health = tonic_health::pb::health_client::HealthClient::new(scheduler.channel().await);
    let check = tonic_health::pb::HealthCheckRequest {
        service: String::new(),
    };
    health.check(check).await.unwrap();
}

#[tokio::test]
async fn malformed_announce_streams_end_with_errors() {
    let scheduler = TestScheduler::default().await;
    let mut client = scheduler.client().await;
    let invalid = tonic::Code::InvalidArgument;

    let mut empty_ids = PeerStream::open_for(&mut client, "", "", "").await;
    empty_ids
        .send(Request::RegisterPeerRequest(RegisterPeerRequest::default()))
        .await;
    assert_eq!(empty_ids.expect_error().await.code(), invalid);

    let mut no_download = PeerStream::open(&mut client, "peer", "host").await;
    no_download
        .send(Request::RegisterPeerRequest(RegisterPeerRequest {
            download: None,
        }))
        .await;
    assert_eq!(no_download.expect_error().await.code(), invalid);

    let mut unregistered = PeerStream::open(&mut client, "peer", "host").await;
    unregistered
        .send(Request::DownloadPieceFailedRequest(
            DownloadPieceFailedRequest::default(),
        ))
        .await;
    assert_eq!(unregistered.expect_error().await.code(), invalid);

    let mut terminal_first = PeerStream::open(&mut client, "peer", "host").await;
    terminal_first
        .send(Request::DownloadPeerFailedRequest(
            DownloadPeerFailedRequest::default(),
        ))
        .await;
    terminal_first.expect_end_ok().await;

    // Empty variants, empty pieces and empty parent ids are ignored.
    let mut peer = PeerStream::register(&mut client, "peer-z", "host-z", sized()).await;
    peer.expect_back_to_source().await;
    peer.send_raw(AnnouncePeerRequest::default()).await;
    peer.send(Request::DownloadPieceFinishedRequest(
        DownloadPieceFinishedRequest { piece: None },
    ))
    .await;
    peer.send(Request::DownloadPieceBackToSourceFinishedRequest(
        DownloadPieceBackToSourceFinishedRequest {
            piece: Some(common::Piece {
                number: u32::MAX,
                ..Default::default()
            }),
        },
    ))
    .await;
    peer.send(Request::DownloadPieceFailedRequest(
        DownloadPieceFailedRequest::default(),
    ))
    .await;
    peer.send(Request::ReschedulePeerRequest(ReschedulePeerRequest {
        candidate_parents: vec![common::Peer::default()],
        description: None,
    }))
    .await;
    peer.expect_back_to_source().await;
    peer.send(Request::RegisterPeerRequest(RegisterPeerRequest {
        download: Some(Download {
            priority: 99,
            ..Default::default()
        }),
    }))
    .await;
    peer.send(Request::DownloadPeerFinishedRequest(
        DownloadPeerFinishedRequest {},
    ))
    .await;
    peer.expect_end_ok().await;
}

#[tokio::test]
async fn serve_stops_on_cancel_with_streams_open() {
    let scheduler = TestScheduler::default().await;
    let mut client = scheduler.client().await;
    let download = Download {
        disable_back_to_source: true,
        ..sized()
    };
    let mut waiting = PeerStream::register(&mut client, "peer-a", "host-a", download).await;
    let stopped = scheduler.stop();
    let (stopped, end) = tokio::join!(stopped, waiting.next());
    stopped.unwrap();
    assert_eq!(end.unwrap_err().code(), tonic::Code::Cancelled);
}

#[tokio::test]
async fn run_reports_bind_errors() {
    let taken = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let config = SchedulerConfig {
        listen: taken.local_addr().unwrap(),
        ..Default::default()
    };
    let cancel = tokio_util::sync::CancellationToken::new();
    let result = tokio::time::timeout(PATIENCE, shoal_scheduler::run(config, cancel)).await;
    assert!(
        matches!(result, Ok(Err(SchedulerError::Bind { .. }))),
        "{result:?}"
    );
}

#[test]
fn default_config_matches_the_contract() {
    let config = SchedulerConfig::default();
    assert_eq!(config.listen, "0.0.0.0:8002".parse().unwrap());
    assert_eq!(config.max_back_to_source_peers, 2);
    assert_eq!(config.candidate_parent_limit, 4);
    assert_eq!(config.host_ttl, std::time::Duration::from_secs(900));
    assert_eq!(config.peer_ttl, std::time::Duration::from_secs(3600));
    assert_eq!(config.schedule_wait, std::time::Duration::from_secs(30));
    assert!(config.seed_trigger);
}
