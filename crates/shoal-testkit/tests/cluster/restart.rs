//! Acceptance 4: a daemon restarted mid-download keeps its verified pieces and the next
//! `shoal get` completes reusing them.

use std::sync::Arc;
use std::time::Duration;

use shoal_testkit::cluster::download_bytes;
use shoal_testkit::origin::FakeOrigin;
use shoal_testkit::{random_bytes, sha256_hex, wait_until, TestCluster};

const MIB: usize = 1024 * 1024;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn restart_mid_download_resumes() {
    let origin = FakeOrigin::start().await.unwrap();
    let content = random_bytes(40 * MIB, 21);
    let url = origin.add("blob", content.clone());
    origin.throttle("blob", 16 * MIB as u64);
    let cluster = Arc::new(
        TestCluster::builder()
            .daemons(1)
            .configure(|_, config| config.download.concurrent_pieces = 2)
            .start()
            .await
            .unwrap(),
    );

    let first = {
        let cluster = cluster.clone();
        let url = url.clone();
        tokio::spawn(async move { cluster.get(0, &url).await })
    };
    let watcher = cluster.clone();
    wait_until(Duration::from_secs(30), || {
        let stored = download_bytes(&watcher.metrics(0), "origin");
        async move { stored >= 8 * MIB as u64 }
    })
    .await
    .unwrap();
    cluster.restart_daemon(0).await.unwrap();
    assert!(
        first.await.unwrap().is_err(),
        "the interrupted download reported success"
    );

    origin.throttle("blob", 0);
    let fetched = cluster.get(0, &url).await.unwrap();
    assert_eq!(sha256_hex(&fetched.bytes), sha256_hex(&content));
    assert!(
        fetched.summary.from_cache >= 8 * MIB as u64,
        "stored pieces were not reused: {:?}",
        fetched.summary
    );
    assert!(fetched.summary.from_origin < content.len() as u64);
}

/// After a scheduler restart (empty state), a seed that holds a task registers it again when
/// triggered, so the next daemon gets it from the seed instead of the origin.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn scheduler_restart_keeps_cached_content_in_use() {
    let origin = FakeOrigin::start().await.unwrap();
    let content = random_bytes(9 * MIB, 22);
    let url = origin.add("blob", content.clone());
    let cluster = TestCluster::builder()
        .seed(true)
        .daemons(2)
        .configure(|_, config| config.upload.announce_interval = Duration::from_millis(200))
        .start()
        .await
        .unwrap();
    let first = cluster.get(0, &url).await.unwrap();
    assert_eq!(sha256_hex(&first.bytes), sha256_hex(&content));
    let served = origin.served("blob");

    cluster.restart_scheduler().await.unwrap();
    // Wait for the seed and both daemons to announce themselves to the new scheduler.
    let scheduler = format!("http://{}", cluster.scheduler_addr);
    wait_until(Duration::from_secs(10), || {
        let scheduler = scheduler.clone();
        async move {
            use shoal_protocol::scheduler::scheduler_client::SchedulerClient;
            let Ok(mut client) = SchedulerClient::connect(scheduler).await else {
                return false;
            };
            let hosts = client
                .list_hosts(shoal_protocol::scheduler::ListHostsRequest::default())
                .await;
            hosts.is_ok_and(|hosts| hosts.into_inner().hosts.len() == 3)
        }
    })
    .await
    .unwrap();
    let second = cluster.get(1, &url).await.unwrap();
    assert_eq!(sha256_hex(&second.bytes), sha256_hex(&content));
    assert_eq!(second.summary.from_origin, 0, "{:?}", second.summary);
    assert!(second.summary.from_parents > 0);
    assert_eq!(
        origin.served("blob"),
        served,
        "the origin served the blob again"
    );
}
