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

/// Reads the manager's SQLite files (main file and write-ahead log) as one byte string.
fn manager_db_bytes(cluster: &TestCluster) -> Vec<u8> {
    let dir = cluster.dir().join("manager");
    let mut bytes = Vec::new();
    for name in ["manager.db", "manager.db-wal"] {
        if let Ok(mut file) = std::fs::read(dir.join(name)) {
            bytes.append(&mut file);
        }
    }
    assert!(
        !bytes.is_empty(),
        "no manager database under {}",
        dir.display()
    );
    bytes
}

fn contains(haystack: &[u8], needle: &str) -> bool {
    haystack
        .windows(needle.len())
        .any(|window| window == needle.as_bytes())
}

/// Manager acceptance 5 (storage side) and a file preheat: a job's registry credentials and
/// the tokens are stored sealed or hashed, never in plaintext; a file preheat warms the seed so
/// a daemon then fetches every byte from it; bad jobs and bad tokens get clear 4xx answers.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn file_preheat_warms_the_seed_and_secrets_stay_sealed() {
    let origin = FakeOrigin::start().await.unwrap();
    let size = 6 * MIB + 11;
    let content = random_bytes(size, 43);
    let expected = sha256_hex(&content);
    let url = origin.add("weights.bin", content);
    let cluster = TestCluster::builder()
        .manager(true)
        .seed(true)
        .daemons(1)
        .start()
        .await
        .unwrap();
    let manager = cluster.manager.as_ref().unwrap();
    let http = reqwest::Client::new();
    let jobs = format!("{}/oapi/v1/jobs", manager.rest_url());

    // Bad input: a clear 400 that names the problem; no token or a wrong one: 401.
    let bad = http
        .post(&jobs)
        .bearer_auth(&manager.token)
        .json(&serde_json::json!({"type": "preheat", "args": {"type": "tarball", "url": url}}))
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), 400);
    assert!(bad.text().await.unwrap().contains("tarball"));
    let unauthenticated = http.get(&jobs).send().await.unwrap();
    assert_eq!(unauthenticated.status(), 401);
    assert_eq!(
        unauthenticated.headers()["www-authenticate"],
        "Bearer",
        "401 must carry the challenge"
    );

    let secret_header = "Basic c2hvYWwtdGVzdDpzZWFsZWQtc2VjcmV0";
    let created = http
        .post(&jobs)
        .bearer_auth(&manager.token)
        .json(&serde_json::json!({
            "type": "preheat",
            "args": {
                "type": "file",
                "url": url,
                "headers": {"Authorization": secret_header},
                "username": "shoal-test",
                "password": "hunter2-never-stored",
            }
        }))
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), 201);
    let job: serde_json::Value = created.json().await.unwrap();
    let id = job["id"].as_u64().unwrap();
    assert!(
        !job.to_string().contains("hunter2"),
        "credentials echoed: {job}"
    );
    let finished = shoal_testkit::wait_until(std::time::Duration::from_secs(60), || {
        let request = http.get(format!("{jobs}/{id}")).bearer_auth(&manager.token);
        async move {
            let Ok(response) = request.send().await else {
                return false;
            };
            let job: serde_json::Value = response.json().await.unwrap_or_default();
            job["state"] == "SUCCESS"
        }
    })
    .await;
    assert!(finished.is_ok(), "file preheat never succeeded");
    let served = origin.served("weights.bin");
    assert!(
        served >= size as u64 && served as f64 <= size as f64 * 1.05,
        "the seed should fetch it about once, origin served {served} of {size}"
    );

    // The daemon now gets every byte from the seed.
    let fetched = cluster.get(0, &url).await.unwrap();
    assert_eq!(sha256_hex(&fetched.bytes), expected);
    assert_eq!(download_bytes(&cluster.metrics(0), "origin"), 0);
    assert!(download_bytes(&cluster.metrics(0), "parent") > 0);
    assert_eq!(
        origin.served("weights.bin"),
        served,
        "the daemon went to the origin"
    );

    // Secrets at rest: the token only as its hash, credentials only sealed.
    let stored = manager_db_bytes(&cluster);
    assert!(
        !contains(&stored, &manager.token),
        "token stored in plaintext"
    );
    assert!(
        !contains(&stored, "hunter2-never-stored"),
        "password stored in plaintext"
    );
    assert!(
        !contains(&stored, "c2hvYWwtdGVzdDpzZWFsZWQtc2VjcmV0"),
        "header stored in plaintext"
    );
}
