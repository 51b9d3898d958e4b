//! Manager acceptance 2: the scheduler and the seed register with the manager, and daemons
//! started with only the manager's address find the scheduler and download peer to peer.

use std::sync::Arc;

use shoal_testkit::cluster::download_bytes;
use shoal_testkit::origin::FakeOrigin;
use shoal_testkit::{random_bytes, sha256_hex, TestCluster};

const MIB: usize = 1024 * 1024;

async fn rest_get(cluster: &TestCluster, path: &str) -> serde_json::Value {
    let manager = cluster.manager.as_ref().unwrap();
    let response = reqwest::Client::new()
        .get(format!("{}{path}", manager.rest_url()))
        .bearer_auth(&manager.token)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200, "GET {path}");
    response.json().await.unwrap()
}

fn items(value: &serde_json::Value) -> Vec<serde_json::Value> {
    match value {
        serde_json::Value::Array(items) => items.clone(),
        other => other
            .get("items")
            .or_else(|| other.get("data"))
            .and_then(|items| items.as_array())
            .cloned()
            .unwrap_or_default(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn daemons_with_only_a_manager_find_the_scheduler_and_share() {
    let origin = FakeOrigin::start().await.unwrap();
    let size = 12 * MIB + 5;
    let content = random_bytes(size, 41);
    let expected = sha256_hex(&content);
    let url = origin.add("model.bin", content);
    let cluster = Arc::new(
        TestCluster::builder()
            .manager(true)
            .seed(true)
            .daemons(2)
            .start()
            .await
            .unwrap(),
    );
    for daemon in &cluster.daemons {
        assert!(
            daemon.config.schedulers.is_empty(),
            "daemons must know only the manager"
        );
    }

    // Registrations are visible to operators through the REST API.
    let schedulers = items(&rest_get(&cluster, "/api/v1/schedulers").await);
    let scheduler = schedulers
        .iter()
        .find(|scheduler| scheduler["hostname"] == "scheduler-0")
        .unwrap_or_else(|| panic!("scheduler not registered: {schedulers:?}"));
    assert_eq!(scheduler["state"], "active", "{scheduler}");
    assert_eq!(
        scheduler["port"].as_u64(),
        Some(u64::from(cluster.scheduler_addr.port()))
    );
    let seeds = items(&rest_get(&cluster, "/api/v1/seed-peers").await);
    let seed = seeds
        .iter()
        .find(|seed| seed["hostname"] == "seed")
        .unwrap_or_else(|| panic!("seed not registered: {seeds:?}"));
    assert_eq!(seed["state"], "active", "{seed}");

    // Both daemons at once: one scheduler, found through the manager, makes them share.
    let mut gets = Vec::new();
    for index in 0..2 {
        let cluster = cluster.clone();
        let url = url.clone();
        gets.push(tokio::spawn(async move { cluster.get(index, &url).await }));
    }
    for (index, get) in gets.into_iter().enumerate() {
        let fetched = get
            .await
            .unwrap()
            .unwrap_or_else(|err| panic!("daemon {index} failed: {err:#}"));
        assert_eq!(sha256_hex(&fetched.bytes), expected, "daemon {index}");
        assert!(
            download_bytes(&cluster.metrics(index), "parent") > 0,
            "daemon {index} got nothing from parents"
        );
    }
    let served = origin.served("model.bin");
    assert!(
        served as f64 <= size as f64 * 1.05,
        "origin served {served} bytes for {size}"
    );
}
