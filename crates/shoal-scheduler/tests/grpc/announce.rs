//! AnnouncePeer: first answers, parent selection over the wire, terminal handling.

use std::time::Duration;

use shoal_protocol::common::{Download, Piece};
use shoal_protocol::scheduler::announce_peer_request::Request;
use shoal_protocol::scheduler::announce_peer_response::Response;
use shoal_protocol::scheduler::*;
use shoal_scheduler::SchedulerConfig;

use crate::harness::*;

#[tokio::test]
async fn cold_task_first_peer_goes_to_source_second_pipelines_from_it() {
    let scheduler = TestScheduler::default().await;
    let mut client = scheduler.client().await;
    announce_hosts(&mut client, &["host-a", "host-b"]).await;
    let first = origin_peer(&mut client, "peer-a", "host-a").await;
    let mut second = PeerStream::register(&mut client, "peer-b", "host-b", sized()).await;
    let parents = second.expect_normal().await;
    assert_eq!(parents.len(), 1);
    assert_eq!(parents[0].id, "peer-a");
    let parent_host = parents[0]
        .host
        .as_ref()
        .expect("candidate carries its host");
    assert_eq!(parent_host.id, "host-a");
    assert_eq!(parent_host.ip, "127.0.0.1");
    assert_eq!(parent_host.port, 40_000);
    assert_eq!(parent_host.download_port, 40_000);
    assert!(parent_host
        .network
        .as_ref()
        .is_some_and(|network| network.idc.is_some()));
    first.finish_back_to_source().await;
}

#[tokio::test]
async fn back_to_source_budget_is_respected() {
    let config = SchedulerConfig {
        max_back_to_source_peers: 1,
        ..SchedulerConfig::default()
    };
    let scheduler = TestScheduler::start(config).await;
    let mut client = scheduler.client().await;
    // Same host: the first peer can never be the second one's parent.
    announce_hosts(&mut client, &["host-a"]).await;
    let first = origin_peer(&mut client, "peer-a", "host-a").await;
    let mut second = PeerStream::register(&mut client, "peer-b", "host-a", sized()).await;
    let early = tokio::time::timeout(Duration::from_millis(300), second.next()).await;
    assert!(
        early.is_err(),
        "no second origin peer while the budget is used: {early:?}"
    );
    first.finish_back_to_source().await;
    second.expect_back_to_source().await;
}

#[tokio::test]
async fn disable_back_to_source_never_gets_back_to_source() {
    let config = SchedulerConfig {
        schedule_wait: Duration::from_millis(300),
        ..SchedulerConfig::default()
    };
    let scheduler = TestScheduler::start(config).await;
    let mut client = scheduler.client().await;
    announce_hosts(&mut client, &["host-a"]).await;
    let download = Download {
        disable_back_to_source: true,
        ..sized()
    };
    let mut peer = PeerStream::register(&mut client, "peer-a", "host-a", download).await;
    let status = peer.expect_error().await;
    assert_eq!(status.code(), tonic::Code::Unavailable);
}

#[tokio::test]
async fn disable_back_to_source_peer_waits_for_a_parent() {
    let scheduler = TestScheduler::default().await;
    let mut client = scheduler.client().await;
    announce_hosts(&mut client, &["host-a", "host-b"]).await;
    let download = Download {
        disable_back_to_source: true,
        ..sized()
    };
    let mut child = PeerStream::register(&mut client, "peer-b", "host-b", download).await;
    let _parent = origin_peer(&mut client, "peer-a", "host-a").await;
    assert_eq!(child.expect_parent_ids().await, ["peer-a"]);
}

#[tokio::test]
async fn zero_length_task_is_empty() {
    let scheduler = TestScheduler::default().await;
    let mut client = scheduler.client().await;
    let download = Download {
        actual_content_length: Some(0),
        ..Default::default()
    };
    let mut peer = PeerStream::register(&mut client, "peer-a", "host-a", download).await;
    assert!(matches!(
        peer.next().await,
        Ok(Some(Response::EmptyTaskResponse(_)))
    ));
    peer.send(Request::DownloadPeerStartedRequest(
        DownloadPeerStartedRequest {},
    ))
    .await;
    peer.send(Request::DownloadPeerFinishedRequest(
        DownloadPeerFinishedRequest {},
    ))
    .await;
    peer.expect_end_ok().await;
}

#[tokio::test]
async fn metadata_only_registration_becomes_a_complete_holder() {
    let scheduler = TestScheduler::default().await;
    let mut client = scheduler.client().await;
    announce_hosts(&mut client, &["host-a", "host-b"]).await;
    let download = Download {
        metadata_only: true,
        ..sized()
    };
    let mut holder = PeerStream::register(&mut client, "holder", "host-a", download).await;
    assert!(matches!(
        holder.next().await,
        Ok(Some(Response::MetadataOnlyResponse(_)))
    ));
    holder
        .send(Request::DownloadPeerStartedRequest(
            DownloadPeerStartedRequest {},
        ))
        .await;
    holder
        .send(Request::DownloadPeerFinishedRequest(
            DownloadPeerFinishedRequest {},
        ))
        .await;
    holder.expect_end_ok().await;
    let mut child = PeerStream::register(&mut client, "child", "host-b", sized()).await;
    assert_eq!(child.expect_parent_ids().await, ["holder"]);
    let stat = StatPeerRequest {
        peer_id: "holder".into(),
        ..Default::default()
    };
    let holder = client.stat_peer(stat).await.unwrap().into_inner();
    assert_eq!(holder.state, "Succeeded");
}

#[tokio::test]
async fn every_terminal_message_ends_the_stream_with_ok() {
    let scheduler = TestScheduler::default().await;
    let mut client = scheduler.client().await;
    let terminals = [
        Request::DownloadPeerFinishedRequest(DownloadPeerFinishedRequest {}),
        Request::DownloadPeerBackToSourceFinishedRequest(
            DownloadPeerBackToSourceFinishedRequest {},
        ),
        Request::DownloadPeerFailedRequest(DownloadPeerFailedRequest::default()),
        Request::DownloadPeerBackToSourceFailedRequest(
            DownloadPeerBackToSourceFailedRequest::default(),
        ),
    ];
    for (index, terminal) in terminals.into_iter().enumerate() {
        let peer_id = format!("peer-{index}");
        let host_id = format!("host-{index}");
        let mut peer = PeerStream::register(&mut client, &peer_id, &host_id, sized()).await;
        peer.next().await.unwrap();
        peer.send(terminal).await;
        peer.expect_end_ok().await;
    }
}

#[tokio::test]
async fn reschedule_excludes_the_listed_parents() {
    let scheduler = TestScheduler::default().await;
    let mut client = scheduler.client().await;
    announce_hosts(&mut client, &["host-a", "host-b", "host-c"]).await;
    let _a = origin_peer(&mut client, "peer-a", "host-a").await;
    let mut b = PeerStream::register(&mut client, "peer-b", "host-b", sized()).await;
    assert_eq!(b.expect_parent_ids().await, ["peer-a"]);
    let mut c = PeerStream::register(&mut client, "peer-c", "host-c", sized()).await;
    let parents = c.expect_normal().await;
    assert_eq!(parents.len(), 2);
    let listed: Vec<_> = parents
        .iter()
        .filter(|peer| peer.id == "peer-a")
        .cloned()
        .collect();
    c.send(Request::ReschedulePeerRequest(ReschedulePeerRequest {
        candidate_parents: listed,
        description: Some("parents did not deliver".into()),
    }))
    .await;
    assert_eq!(c.expect_parent_ids().await, ["peer-b"]);
    c.send(Request::ReschedulePeerRequest(ReschedulePeerRequest {
        candidate_parents: parents,
        description: None,
    }))
    .await;
    c.expect_back_to_source().await;
}

#[tokio::test]
async fn corrupt_data_bans_the_parent_for_every_child() {
    let scheduler = TestScheduler::default().await;
    let mut client = scheduler.client().await;
    announce_hosts(&mut client, &["host-a", "host-b", "host-c"]).await;
    let _a = origin_peer(&mut client, "peer-a", "host-a").await;
    let mut b = PeerStream::register(&mut client, "peer-b", "host-b", sized()).await;
    assert_eq!(b.expect_parent_ids().await, ["peer-a"]);
    b.send(Request::DownloadPieceFailedRequest(
        DownloadPieceFailedRequest {
            piece_number: Some(0),
            parent_id: "peer-a".into(),
            temporary: false,
        },
    ))
    .await;
    // The session handles b's messages in order, so the ban is in place once b's stream ends.
    b.send(Request::DownloadPeerFinishedRequest(
        DownloadPeerFinishedRequest {},
    ))
    .await;
    b.expect_end_ok().await;
    let mut c = PeerStream::register(&mut client, "peer-c", "host-c", sized()).await;
    assert_eq!(c.expect_parent_ids().await, ["peer-b"]);
}

#[tokio::test]
async fn temporary_failure_blocks_the_parent_only_for_that_child() {
    let scheduler = TestScheduler::default().await;
    let mut client = scheduler.client().await;
    announce_hosts(&mut client, &["host-a", "host-b", "host-c"]).await;
    let _a = origin_peer(&mut client, "peer-a", "host-a").await;
    let mut b = PeerStream::register(&mut client, "peer-b", "host-b", sized()).await;
    assert_eq!(b.expect_parent_ids().await, ["peer-a"]);
    b.send(Request::DownloadPieceFailedRequest(
        DownloadPieceFailedRequest {
            piece_number: Some(0),
            parent_id: "peer-a".into(),
            temporary: true,
        },
    ))
    .await;
    b.send(Request::ReschedulePeerRequest(
        ReschedulePeerRequest::default(),
    ))
    .await;
    b.expect_back_to_source().await;
    let mut c = PeerStream::register(&mut client, "peer-c", "host-c", sized()).await;
    assert!(c.expect_parent_ids().await.contains(&"peer-a".to_string()));
}

#[tokio::test]
async fn own_host_is_never_a_parent() {
    let scheduler = TestScheduler::default().await;
    let mut client = scheduler.client().await;
    announce_hosts(&mut client, &["host-a"]).await;
    let _a = origin_peer(&mut client, "peer-a", "host-a").await;
    let mut same_host = PeerStream::register(&mut client, "peer-a2", "host-a", sized()).await;
    same_host.expect_back_to_source().await;
}

#[tokio::test]
async fn descendants_are_never_parents() {
    let scheduler = TestScheduler::default().await;
    let mut client = scheduler.client().await;
    announce_hosts(&mut client, &["host-a", "host-b"]).await;
    let mut a = origin_peer(&mut client, "peer-a", "host-a").await;
    let mut b = PeerStream::register(&mut client, "peer-b", "host-b", sized()).await;
    assert_eq!(b.expect_parent_ids().await, ["peer-a"]);
    b.send(Request::DownloadPeerStartedRequest(
        DownloadPeerStartedRequest {},
    ))
    .await;
    b.send(Request::DownloadPieceFinishedRequest(
        DownloadPieceFinishedRequest {
            piece: Some(Piece {
                number: 0,
                parent_id: Some("peer-a".into()),
                ..Default::default()
            }),
        },
    ))
    .await;
    a.send(Request::ReschedulePeerRequest(
        ReschedulePeerRequest::default(),
    ))
    .await;
    a.expect_back_to_source().await;
}

#[tokio::test]
async fn running_peer_with_pieces_ranks_first() {
    let scheduler = TestScheduler::default().await;
    let mut client = scheduler.client().await;
    announce_hosts(&mut client, &["host-a", "host-b", "host-c"]).await;
    let mut a = origin_peer(&mut client, "peer-a", "host-a").await;
    for number in 0..10 {
        a.send(Request::DownloadPieceBackToSourceFinishedRequest(
            DownloadPieceBackToSourceFinishedRequest {
                piece: Some(Piece {
                    number,
                    ..Default::default()
                }),
            },
        ))
        .await;
    }
    // An answer on a's stream proves its piece reports were handled.
    a.send(Request::ReschedulePeerRequest(
        ReschedulePeerRequest::default(),
    ))
    .await;
    a.expect_back_to_source().await;
    let mut b = PeerStream::register(&mut client, "peer-b", "host-b", sized()).await;
    assert_eq!(b.expect_parent_ids().await, ["peer-a"]);
    let mut c = PeerStream::register(&mut client, "peer-c", "host-c", sized()).await;
    assert_eq!(
        c.expect_parent_ids().await.first().map(String::as_str),
        Some("peer-a")
    );
}

#[tokio::test]
async fn mismatched_content_length_is_not_paired() {
    let scheduler = TestScheduler::default().await;
    let mut client = scheduler.client().await;
    announce_hosts(&mut client, &["host-a", "host-b"]).await;
    let _a = origin_peer(&mut client, "peer-a", "host-a").await;
    let other = Download {
        actual_content_length: Some(99),
        ..sized()
    };
    let mut b = PeerStream::register(&mut client, "peer-b", "host-b", other).await;
    b.expect_back_to_source().await;
}

#[tokio::test]
async fn level1_priority_fails_with_failed_precondition() {
    let scheduler = TestScheduler::default().await;
    let mut client = scheduler.client().await;
    let download = Download {
        priority: 1,
        ..sized()
    };
    let mut peer = PeerStream::register(&mut client, "peer-a", "host-a", download).await;
    assert_eq!(
        peer.expect_error().await.code(),
        tonic::Code::FailedPrecondition
    );
}

#[tokio::test]
async fn stream_closed_without_terminal_marks_the_peer_failed() {
    let scheduler = TestScheduler::default().await;
    let mut client = scheduler.client().await;
    let peer = origin_peer(&mut client, "peer-a", "host-a").await;
    drop(peer);
    let request = StatPeerRequest {
        peer_id: "peer-a".into(),
        ..Default::default()
    };
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        let stat = client
            .stat_peer(request.clone())
            .await
            .unwrap()
            .into_inner();
        if stat.state == "Failed" {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "peer never marked failed"
        );
        tokio::task::yield_now().await;
    }
}
