//! Acceptance 1: one origin, one scheduler, one seed, three daemons; every size arrives intact,
//! the origin serves it about once, and the daemons get their bytes from parents.

use std::sync::Arc;

use shoal_testkit::cluster::download_bytes;
use shoal_testkit::origin::FakeOrigin;
use shoal_testkit::{random_bytes, sha256_hex, TestCluster};

const MIB: usize = 1024 * 1024;

async fn distribute(size: usize, seed: u64) {
    let origin = FakeOrigin::start().await.unwrap();
    let content = random_bytes(size, seed);
    let expected = sha256_hex(&content);
    let url = origin.add("blob", content);
    let cluster = Arc::new(
        TestCluster::builder()
            .seed(true)
            .daemons(3)
            .start()
            .await
            .unwrap(),
    );

    // All three at once: the scheduler must make them share instead of each hitting the origin.
    let mut gets = Vec::new();
    for index in 0..3 {
        let cluster = cluster.clone();
        let url = url.clone();
        gets.push(tokio::spawn(async move { cluster.get(index, &url).await }));
    }
    for (index, get) in gets.into_iter().enumerate() {
        let fetched = get
            .await
            .unwrap()
            .unwrap_or_else(|err| panic!("daemon {index} failed: {err:#}"));
        assert_eq!(fetched.bytes.len(), size, "daemon {index} length");
        assert_eq!(
            sha256_hex(&fetched.bytes),
            expected,
            "daemon {index} sha256"
        );
        assert_eq!(fetched.summary.content_length, size as u64);
        if size > 0 {
            assert!(
                fetched.summary.from_parents > 0,
                "daemon {index} got nothing from parents: {:?}",
                fetched.summary
            );
            assert!(download_bytes(&cluster.metrics(index), "parent") > 0);
        }
    }
    let served = origin.served("blob");
    assert!(
        served as f64 <= size as f64 * 1.05,
        "origin served {served} bytes for a {size} byte blob"
    );
    if size > 0 {
        assert!(
            download_bytes(&cluster.seed_metrics(), "origin") > 0,
            "the seed did not go to the origin"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn distributes_empty_blob() {
    distribute(0, 1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn distributes_one_byte() {
    distribute(1, 2).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn distributes_piece_minus_one() {
    distribute(4 * MIB - 1, 3).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn distributes_one_piece() {
    distribute(4 * MIB, 4).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn distributes_piece_plus_one() {
    distribute(4 * MIB + 1, 5).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn distributes_100_mib() {
    distribute(100 * MIB, 6).await;
}

/// Without a seed exactly one daemon goes to the origin and the others follow it.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn without_seed_one_peer_goes_back_to_source() {
    let origin = FakeOrigin::start().await.unwrap();
    let content = random_bytes(20 * MIB, 7);
    let url = origin.add("blob", content.clone());
    let cluster = Arc::new(
        TestCluster::builder()
            .daemons(3)
            .scheduler(|config| config.max_back_to_source_peers = 1)
            .start()
            .await
            .unwrap(),
    );
    let mut gets = Vec::new();
    for index in 0..3 {
        let cluster = cluster.clone();
        let url = url.clone();
        gets.push(tokio::spawn(async move { cluster.get(index, &url).await }));
    }
    let mut from_origin = 0;
    for get in gets {
        let fetched = get.await.unwrap().unwrap();
        assert_eq!(sha256_hex(&fetched.bytes), sha256_hex(&content));
        from_origin += fetched.summary.from_origin;
    }
    assert_eq!(
        from_origin,
        content.len() as u64,
        "exactly one copy came from the origin"
    );
    assert!(origin.served("blob") as f64 <= content.len() as f64 * 1.05);
}
