//! Seed triggering for cold tasks.

use std::collections::HashMap;

use shoal_protocol::common::{Download, Range};
use shoal_protocol::scheduler::announce_peer_request::Request;
use shoal_protocol::scheduler::*;
use shoal_scheduler::SchedulerConfig;

use crate::fake_seed::FakeSeed;
use crate::harness::*;

/// A ranged child download with an output path, as a proxy would send it.
fn child_download() -> Download {
    Download {
        range: Some(Range {
            start: 0,
            length: 10,
        }),
        output_path: Some("/tmp/child-output".into()),
        request_header: HashMap::from([
            ("Range".to_string(), "bytes=0-9".to_string()),
            ("X-Custom".to_string(), "kept".to_string()),
        ]),
        tag: Some("tag".into()),
        priority: 6,
        ..sized()
    }
}

#[tokio::test]
async fn cold_task_triggers_the_seed_and_schedules_it_as_parent() {
    let seed = FakeSeed::start(true).await;
    let scheduler = TestScheduler::default().await;
    let mut client = scheduler.client().await;
    announce_hosts(&mut client, &["host-a"]).await;
    let seed_port = i32::from(seed.addr.port());
    announce_host(&mut client, host("seed-host", seed_port, true)).await;

    let mut child = PeerStream::register(&mut client, "peer-a", "host-a", child_download()).await;
    let request = seed.first_download().await;
    let download = request.download.expect("download forwarded");
    assert!(download.need_back_to_source);
    assert_eq!(download.range, None);
    assert_eq!(download.output_path, None);
    assert!(!download
        .request_header
        .keys()
        .any(|name| name.eq_ignore_ascii_case("range")));
    assert_eq!(
        download.request_header.get("X-Custom").map(String::as_str),
        Some("kept")
    );
    assert_eq!(download.url, child_download().url);
    assert_eq!(download.tag, child_download().tag);

    // The seed registers its own peer, as a real seed does after the trigger.
    let mut seed_peer = PeerStream::register(&mut client, "seed-peer", "seed-host", download).await;
    seed_peer.expect_back_to_source().await;
    let parents = child.expect_normal().await;
    assert_eq!(parents[0].id, "seed-peer");
    assert_eq!(parents[0].host.as_ref().unwrap().r#type, 1);

    // A second child finds the seed at once and does not trigger it again.
    announce_hosts(&mut client, &["host-x", "host-b"]).await;
    let mut second = PeerStream::register(&mut client, "peer-b", "host-b", sized()).await;
    assert!(second
        .expect_parent_ids()
        .await
        .contains(&"seed-peer".to_string()));
    assert_eq!(seed.recorded.downloads.lock().unwrap().len(), 1);
    seed.release();
}

#[tokio::test]
async fn seed_that_finishes_without_registering_sends_the_child_to_the_origin() {
    let seed = FakeSeed::start(false).await;
    let scheduler = TestScheduler::default().await;
    let mut client = scheduler.client().await;
    announce_hosts(&mut client, &["host-a"]).await;
    announce_host(
        &mut client,
        host("seed-host", i32::from(seed.addr.port()), true),
    )
    .await;
    let mut child = PeerStream::register(&mut client, "peer-a", "host-a", child_download()).await;
    child.expect_back_to_source().await;
    assert_eq!(seed.recorded.downloads.lock().unwrap().len(), 1);
}

#[tokio::test]
async fn unreachable_seed_sends_the_child_to_the_origin() {
    // Bind then drop: nothing listens on this port any more.
    let port = {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        listener.local_addr().unwrap().port()
    };
    let scheduler = TestScheduler::default().await;
    let mut client = scheduler.client().await;
    announce_hosts(&mut client, &["host-a"]).await;
    announce_host(&mut client, host("seed-host", i32::from(port), true)).await;
    let mut child = PeerStream::register(&mut client, "peer-a", "host-a", sized()).await;
    child.expect_back_to_source().await;
}

#[tokio::test]
async fn seed_trigger_can_be_disabled() {
    let seed = FakeSeed::start(true).await;
    let config = SchedulerConfig {
        seed_trigger: false,
        ..SchedulerConfig::default()
    };
    let scheduler = TestScheduler::start(config).await;
    let mut client = scheduler.client().await;
    announce_hosts(&mut client, &["host-a"]).await;
    announce_host(
        &mut client,
        host("seed-host", i32::from(seed.addr.port()), true),
    )
    .await;
    let mut child = PeerStream::register(&mut client, "peer-a", "host-a", sized()).await;
    child.expect_back_to_source().await;
    assert!(seed.recorded.downloads.lock().unwrap().is_empty());
}

#[tokio::test]
async fn registration_from_a_seed_host_goes_to_the_origin() {
    let scheduler = TestScheduler::default().await;
    let mut client = scheduler.client().await;
    announce_hosts(&mut client, &["host-a"]).await;
    announce_host(&mut client, host("seed-host", 4100, true)).await;
    let _a = origin_peer(&mut client, "peer-a", "host-a").await;
    let mut seed_peer = PeerStream::register(&mut client, "seed-peer", "seed-host", sized()).await;
    seed_peer.expect_back_to_source().await;
    seed_peer
        .send(Request::DownloadPeerBackToSourceFailedRequest(
            DownloadPeerBackToSourceFailedRequest::default(),
        ))
        .await;
    seed_peer.expect_end_ok().await;
}
