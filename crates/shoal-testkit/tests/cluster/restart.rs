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
