//! Acceptance 2, 3, 5 and 6: corrupt parents, parents that die, failing origins, and origins
//! that ignore `Range` or send no length.

use std::sync::Arc;
use std::time::Duration;

use shoal_testkit::cluster::download_bytes;
use shoal_testkit::origin::{Behaviour, FakeOrigin};
use shoal_testkit::{random_bytes, sha256_hex, wait_until, TestCluster};

const MIB: usize = 1024 * 1024;

/// A parent whose stored bytes rotted on disk: the child detects the mismatch, gets the piece
/// elsewhere, and the scheduler never offers that parent again for the task.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn corrupt_parent_is_detected_and_avoided() {
    let origin = FakeOrigin::start().await.unwrap();
    let content = random_bytes(12 * MIB, 11);
    let url = origin.add("blob", content.clone());
    let cluster = TestCluster::builder().daemons(3).start().await.unwrap();

    let first = cluster.get(0, &url).await.unwrap();
    assert_eq!(sha256_hex(&first.bytes), sha256_hex(&content));
    // Flip bytes inside piece 1 of daemon 0's stored content.
    let content_dir = cluster.daemons[0]
        .config
        .data_dir
        .join("store")
        .join("content");
    let stored = std::fs::read_dir(&content_dir)
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    let mut bytes = std::fs::read(&stored).unwrap();
    bytes[5 * MIB] ^= 0xff;
    std::fs::write(&stored, bytes).unwrap();

    let second = cluster.get(1, &url).await.unwrap();
    assert_eq!(
        sha256_hex(&second.bytes),
        sha256_hex(&content),
        "child stored corrupt bytes"
    );
    assert!(second.summary.from_parents > 0, "{:?}", second.summary);
    assert_eq!(
        second.summary.from_origin,
        4 * MIB as u64,
        "only the corrupt piece came from the origin"
    );

    let corrupt_host = format!(
        "{}-{}-",
        cluster.daemons[0].config.ip, cluster.daemons[0].config.hostname
    );
    let third = cluster.get(2, &url).await.unwrap();
    assert_eq!(sha256_hex(&third.bytes), sha256_hex(&content));
    assert!(third.summary.from_parents > 0);
    assert!(
        third
            .summary
            .parents
            .iter()
            .all(|parent| !parent.starts_with(&corrupt_host)),
        "the corrupt parent was offered again: {:?}",
        third.summary.parents
    );
}

/// A parent killed while a child is fetching from it: the child finishes from the origin.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn parent_killed_mid_transfer() {
    let origin = FakeOrigin::start().await.unwrap();
    let content = random_bytes(40 * MIB, 12);
    let url = origin.add("blob", content.clone());
    let cluster = Arc::new(
        TestCluster::builder()
            .daemons(2)
            // The parent uploads slowly so there is time to kill it mid-transfer.
            .configure(|index, config| {
                if index == 0 {
                    config.upload.rate_limit = Some(8 * MIB as u64);
                }
            })
            .start()
            .await
            .unwrap(),
    );
    cluster.get(0, &url).await.unwrap();
    let child = {
        let cluster = cluster.clone();
        let url = url.clone();
        tokio::spawn(async move { cluster.get(1, &url).await })
    };
    let watcher = cluster.clone();
    wait_until(Duration::from_secs(30), || {
        let received = download_bytes(&watcher.metrics(1), "parent");
        async move { received > 0 }
    })
    .await
    .unwrap();
    cluster.stop_daemon(0).await;
    let fetched = child.await.unwrap().unwrap();
    assert_eq!(sha256_hex(&fetched.bytes), sha256_hex(&content));
    assert!(fetched.summary.from_parents > 0);
    assert!(fetched.summary.from_origin > 0, "{:?}", fetched.summary);
}

async fn assert_origin_failure(behaviour: Behaviour, expected: &str) {
    let origin = FakeOrigin::start().await.unwrap();
    let url = origin.add_with("blob", random_bytes(6 * MIB, 13), behaviour);
    let cluster = TestCluster::builder()
        .daemons(1)
        .configure(|_, config| config.download.origin_retries = 2)
        .start()
        .await
        .unwrap();
    let options = cluster.get_options(0, &url);
    let path = options.output.clone();
    let err = shoal_cli::get::get(&options).await.unwrap_err();
    let message = err.to_string();
    assert!(
        message.contains(expected),
        "error {message:?} does not mention {expected:?}"
    );
    assert!(
        !message.contains('\n'),
        "error is not one line: {message:?}"
    );
    assert!(!path.exists(), "a file was left at the output path");
    let leftovers: Vec<_> = std::fs::read_dir(cluster.dir())
        .unwrap()
        .filter_map(Result::ok)
        .filter(|entry| entry.file_name().to_string_lossy().contains(".tmp"))
        .collect();
    assert!(leftovers.is_empty(), "temporary files left: {leftovers:?}");
    let content_dir = cluster.daemons[0]
        .config
        .data_dir
        .join("store")
        .join("content");
    let cached = std::fs::read_dir(&content_dir)
        .map(|entries| entries.count())
        .unwrap_or(0);
    assert_eq!(cached, 0, "something was cached after the failure");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn origin_404_is_a_clear_error() {
    assert_origin_failure(Behaviour::Status(404), "404 Not Found").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn origin_500_is_a_clear_error() {
    assert_origin_failure(Behaviour::Status(500), "500 Internal Server Error").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn origin_reset_is_a_clear_error() {
    assert_origin_failure(Behaviour::Reset, "origin").await;
}

async fn assert_correct_through(behaviour: Behaviour) {
    let origin = FakeOrigin::start().await.unwrap();
    let content = random_bytes(9 * MIB + 17, 14);
    let url = origin.add_with("blob", content.clone(), behaviour);
    let cluster = TestCluster::builder().daemons(2).start().await.unwrap();
    for index in 0..2 {
        let fetched = cluster.get(index, &url).await.unwrap();
        assert_eq!(
            sha256_hex(&fetched.bytes),
            sha256_hex(&content),
            "daemon {index}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn origin_ignoring_range_works() {
    assert_correct_through(Behaviour::IgnoreRange).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn origin_without_content_length_works() {
    assert_correct_through(Behaviour::Chunked).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn digest_mismatch_leaves_no_file() {
    let origin = FakeOrigin::start().await.unwrap();
    let url = origin.add("blob", random_bytes(MIB, 15));
    let cluster = TestCluster::builder().daemons(1).start().await.unwrap();
    let mut options = cluster.get_options(0, &url);
    options.digest = Some(format!("sha256:{}", "0".repeat(64)));
    let path = options.output.clone();
    let message = shoal_cli::get::get(&options).await.unwrap_err().to_string();
    assert!(
        message.starts_with("digest mismatch: expected sha256:000"),
        "{message}"
    );
    assert!(!path.exists());
}

/// An origin that sends headers and then nothing: the download fails with a clear error
/// instead of hanging, and leaves nothing behind.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn origin_that_stalls_fails_instead_of_hanging() {
    let origin = FakeOrigin::start().await.unwrap();
    let url = origin.add("blob", random_bytes(2 * MIB, 16));
    origin.throttle("blob", 1);
    let cluster = TestCluster::builder()
        .daemons(1)
        .configure(|_, config| {
            config.download.piece_timeout = Duration::from_secs(2);
            config.download.origin_retries = 1;
        })
        .start()
        .await
        .unwrap();
    let options = cluster.get_options(0, &url);
    let path = options.output.clone();
    let result = tokio::time::timeout(Duration::from_secs(60), shoal_cli::get::get(&options))
        .await
        .expect("the download hung");
    let message = result.unwrap_err().to_string();
    assert!(message.contains("origin"), "{message}");
    assert!(!path.exists());
}

/// A `shoal get` that goes away mid-download: the daemon finishes filling its cache but never
/// writes the abandoned output path.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn abandoned_get_writes_no_output() {
    let origin = FakeOrigin::start().await.unwrap();
    let content = random_bytes(12 * MIB, 17);
    let url = origin.add("blob", content.clone());
    origin.throttle("blob", 8 * MIB as u64);
    let cluster = Arc::new(TestCluster::builder().daemons(1).start().await.unwrap());
    let options = cluster.get_options(0, &url);
    let path = options.output.clone();
    let get = tokio::spawn(async move { shoal_cli::get::get(&options).await });
    let watcher = cluster.clone();
    wait_until(Duration::from_secs(30), || {
        let received = download_bytes(&watcher.metrics(0), "origin");
        async move { received > 0 }
    })
    .await
    .unwrap();
    get.abort();
    origin.throttle("blob", 0);
    let watcher = cluster.clone();
    wait_until(Duration::from_secs(30), || {
        let metrics = watcher.metrics(0);
        async move {
            shoal_testkit::cluster::metric_value(
                &metrics,
                "shoal_daemon_tasks_total{state=\"succeeded\"}",
            ) >= 1
        }
    })
    .await
    .expect("the daemon finished the download for its cache");
    assert!(!path.exists(), "an abandoned get wrote its output");
    // The cache is complete: the next get is served locally.
    let fetched = cluster.get(0, &url).await.unwrap();
    assert_eq!(sha256_hex(&fetched.bytes), sha256_hex(&content));
    assert_eq!(fetched.summary.from_cache, content.len() as u64);
}

/// RPCs shoal does not serve answer Unimplemented (upstream's `todo!()` would kill a daemon).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn unserved_rpcs_answer_unimplemented() {
    use shoal_protocol::dfdaemon::dfdaemon_upload_client::DfdaemonUploadClient;
    use shoal_protocol::dfdaemon::{DownloadCachePieceRequest, StatCacheTaskRequest};
    let cluster = TestCluster::builder().daemons(1).start().await.unwrap();
    let addr = cluster.upload_addr(0).await.unwrap();
    let mut client = DfdaemonUploadClient::connect(format!("http://{addr}"))
        .await
        .unwrap();
    let status = client
        .stat_cache_task(StatCacheTaskRequest::default())
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::Unimplemented);
    let status = client
        .download_cache_piece(DownloadCachePieceRequest::default())
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::Unimplemented);
    // SyncHost is served (children weight parents with it): one host message, stream held open.
    let mut hosts = client
        .sync_host(shoal_protocol::dfdaemon::SyncHostRequest::default())
        .await
        .unwrap()
        .into_inner();
    let host = hosts.message().await.unwrap().expect("a host message");
    assert!(host.network.is_some());
    drop(hosts);
    // The daemon is still serving afterwards.
    let status = client
        .sync_pieces(shoal_protocol::dfdaemon::SyncPiecesRequest::default())
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::InvalidArgument);
}
