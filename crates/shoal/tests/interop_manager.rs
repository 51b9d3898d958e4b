//! Manager acceptance through the real binary: `shoal all-in-one` plus one extra daemon serves
//! `shoal get` with no other set-up (6); a manager killed with SIGKILL in the middle of a preheat
//! job and restarted still finishes the job without the seed fetching a layer twice (4); the
//! REST API refuses requests without a token (5).
//!
//! Needs root-free loopback only, plus the Debian package `docker-registry` for the preheat case.

#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use shoal_testkit::interop::image::ImageSpec;
use shoal_testkit::interop::registry::{Registry, RegistryOptions};
use shoal_testkit::origin::FakeOrigin;
use shoal_testkit::relay::ThrottledRelay;
use shoal_testkit::{random_bytes, sha256_hex, wait_until};
use tokio::process::{Child, Command};

const TOKEN: &str = "e2e-admin-token";

/// A `shoal` process whose stdout and stderr go to files; killed on drop.
struct Proc {
    child: Child,
    stdout: PathBuf,
    stderr: PathBuf,
}

impl Proc {
    fn spawn(dir: &Path, name: &str, args: &[&str]) -> Proc {
        let stdout = dir.join(format!("{name}.out"));
        let stderr = dir.join(format!("{name}.err"));
        let child = Command::new(env!("CARGO_BIN_EXE_shoal"))
            .args(args)
            .env("SHOAL_BOOTSTRAP_TOKEN", TOKEN)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(&stdout).unwrap())
            .stderr(std::fs::File::create(&stderr).unwrap())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        Proc {
            child,
            stdout,
            stderr,
        }
    }

    fn stdout(&self) -> String {
        std::fs::read_to_string(&self.stdout).unwrap_or_default()
    }

    fn logs(&self) -> String {
        format!(
            "stdout:\n{}\nstderr:\n{}",
            self.stdout(),
            std::fs::read_to_string(&self.stderr).unwrap_or_default()
        )
    }

    /// SIGKILL: no graceful shutdown, as a crashed or OOM-killed process.
    async fn kill(&mut self) {
        self.child.kill().await.unwrap();
    }
}

async fn rest(method: reqwest::Method, url: &str, token: Option<&str>) -> reqwest::Response {
    let mut request = reqwest::Client::new().request(method, url);
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    request.send().await.unwrap()
}

async fn wait_for<F, Fut>(what: &str, proc: &Proc, timeout: Duration, check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let result = wait_until(timeout, check).await;
    assert!(result.is_ok(), "{what}\n{}", proc.logs());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn all_in_one_and_one_more_daemon_serve_shoal_get() {
    let dir = tempfile::tempdir().unwrap();
    let origin = FakeOrigin::start().await.unwrap();
    let content = random_bytes(9 * 1024 * 1024 + 3, 61);
    let expected = sha256_hex(&content);
    let url = origin.add("file.bin", content);

    let aio_dir = dir.path().join("aio");
    let aio = Proc::spawn(
        dir.path(),
        "all-in-one",
        &[
            "all-in-one",
            "--data-dir",
            aio_dir.to_str().unwrap(),
            "--ip",
            "127.0.81.1",
        ],
    );
    let aio_ref = &aio;
    wait_for(
        "all-in-one never came up",
        &aio,
        Duration::from_secs(60),
        || async move { aio_ref.stdout().contains("join another node") },
    )
    .await;
    let banner = aio.stdout();
    assert!(banner.contains("http://127.0.81.1:65003"), "{banner}");

    // REST: refused without a token, served with the bootstrap token.
    let schedulers = "http://127.0.81.1:8080/api/v1/schedulers";
    assert_eq!(
        rest(reqwest::Method::GET, schedulers, None).await.status(),
        401
    );
    assert_eq!(
        rest(reqwest::Method::GET, schedulers, Some("wrong"))
            .await
            .status(),
        401
    );
    assert_eq!(
        rest(reqwest::Method::GET, schedulers, Some(TOKEN))
            .await
            .status(),
        200
    );

    let extra_dir = dir.path().join("extra");
    let socket = extra_dir.join("daemon.sock");
    let extra = Proc::spawn(
        dir.path(),
        "extra",
        &[
            "daemon",
            "--manager",
            "http://127.0.81.1:65003",
            "--ip",
            "127.0.81.2",
            "--data-dir",
            extra_dir.to_str().unwrap(),
            "--socket",
            socket.to_str().unwrap(),
        ],
    );
    let (extra_log, socket_ref) = (&extra.stderr, &socket);
    wait_for(
        "the extra daemon never found the scheduler",
        &extra,
        Duration::from_secs(60),
        || async move {
            std::fs::read_to_string(extra_log)
                .unwrap_or_default()
                .contains("scheduler set changed")
                && socket_ref.exists()
        },
    )
    .await;

    // Warm the seed, then fetch through the extra daemon: its bytes come from the seed.
    let warm = dir.path().join("warm.bin");
    let status = Command::new(env!("CARGO_BIN_EXE_shoal"))
        .args(["get", &url, "--no-progress", "-O", warm.to_str().unwrap()])
        .arg("--socket")
        .arg(aio_dir.join("daemon.sock"))
        .status()
        .await
        .unwrap();
    assert!(status.success(), "{}", aio.logs());
    let out = dir.path().join("out.bin");
    let output = Command::new(env!("CARGO_BIN_EXE_shoal"))
        .args(["get", &url, "--no-progress", "-O", out.to_str().unwrap()])
        .arg("--socket")
        .arg(&socket)
        .output()
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout).to_string();
    assert!(
        output.status.success(),
        "{stdout}{}\n{}",
        String::from_utf8_lossy(&output.stderr),
        extra.logs()
    );
    assert_eq!(sha256_hex(&std::fs::read(&out).unwrap()), expected);
    assert!(!stdout.contains("from 0 parent(s)"), "{stdout}");
    let served = origin.served("file.bin");
    assert!(
        served <= 9 * 1024 * 1024 * 105 / 100 + 3,
        "origin served {served}"
    );
}

fn manager_args(data: &str) -> Vec<&str> {
    vec![
        "manager",
        "--data-dir",
        data,
        "--rest-listen",
        "127.0.82.1:8080",
        "--grpc-listen",
        "127.0.82.1:65003",
        "--job-lease",
        "3s",
    ]
}

async fn job(id: u64) -> Option<serde_json::Value> {
    let response = reqwest::Client::new()
        .get(format!("http://127.0.82.1:8080/oapi/v1/jobs/{id}"))
        .bearer_auth(TOKEN)
        .send()
        .await
        .ok()?;
    response.json().await.ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn preheat_survives_a_killed_manager_without_fetching_a_layer_twice() {
    let dir = tempfile::tempdir().unwrap();
    let registry = Registry::start(RegistryOptions::default()).await.unwrap();
    let spec = ImageSpec {
        name: "shoal/killed".into(),
        seed: 91,
        layers: 3,
        layer_size: 12 << 20,
        ..ImageSpec::default()
    };
    let image = spec.build_async(dir.path().join("layout")).await.unwrap();
    image.push(&registry).await.unwrap();
    // 8 MiB/s per connection keeps the job in flight for seconds.
    let relay = ThrottledRelay::start(
        "127.0.0.1:0".parse().unwrap(),
        format!("127.0.0.1:{}", registry.port()).parse().unwrap(),
        8 << 20,
    )
    .await
    .unwrap();

    let manager_dir = dir.path().join("manager");
    let manager_data = manager_dir.to_str().unwrap().to_string();
    let mut manager = Proc::spawn(dir.path(), "manager-1", &manager_args(&manager_data));
    let _scheduler = Proc::spawn(
        dir.path(),
        "scheduler",
        &[
            "scheduler",
            "--listen",
            "127.0.82.1:8002",
            "--manager",
            "http://127.0.82.1:65003",
        ],
    );
    let seed_dir = dir.path().join("seed");
    let seed = Proc::spawn(
        dir.path(),
        "seed",
        &[
            "daemon",
            "--seed",
            "--manager",
            "http://127.0.82.1:65003",
            "--ip",
            "127.0.82.2",
            "--data-dir",
            seed_dir.to_str().unwrap(),
            "--socket",
            seed_dir.join("daemon.sock").to_str().unwrap(),
        ],
    );
    wait_for(
        "the seed never registered",
        &seed,
        Duration::from_secs(60),
        || async {
            let response = reqwest::Client::new()
                .get("http://127.0.82.1:8080/api/v1/seed-peers")
                .bearer_auth(TOKEN)
                .send()
                .await;
            match response {
                Ok(response) => response
                    .text()
                    .await
                    .unwrap_or_default()
                    .contains("\"active\""),
                Err(_) => false,
            }
        },
    )
    .await;

    let manifest = format!(
        "http://{}/v2/{}/manifests/{}",
        relay.addr(),
        image.name,
        image.tag
    );
    let created: serde_json::Value = reqwest::Client::new()
        .post("http://127.0.82.1:8080/oapi/v1/jobs")
        .bearer_auth(TOKEN)
        .json(&serde_json::json!({"type": "preheat", "args": {"type": "image", "url": manifest}}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let id = created["id"]
        .as_u64()
        .unwrap_or_else(|| panic!("{created}"));

    // Kill the manager once the seed is busy with the first layer.
    let first = &image.platforms[0].layers[0];
    let (registry_ref, config_digest, seed_log) =
        (&registry, &image.platforms[0].config_digest, &seed.stderr);
    wait_for(
        "the preheat never started",
        &manager,
        Duration::from_secs(60),
        || async move {
            registry_ref.blob_gets(config_digest) > 0
                || registry_ref.blob_bytes_served(&first.digest) > 0
                || std::fs::read_to_string(seed_log)
                    .unwrap_or_default()
                    .contains("download triggered by a remote caller")
        },
    )
    .await;
    let before = job(id).await.unwrap();
    assert_ne!(
        before["state"], "SUCCESS",
        "job finished before the kill: {before}"
    );
    manager.kill().await;

    let mut restarted = Proc::spawn(dir.path(), "manager-2", &manager_args(&manager_data));
    let last = std::sync::Mutex::new(serde_json::Value::Null);
    let finished = wait_until(Duration::from_secs(240), || {
        let last = &last;
        async move {
            let Some(job) = job(id).await else {
                return false;
            };
            let done = matches!(job["state"].as_str(), Some("SUCCESS" | "FAILURE"));
            *last.lock().unwrap() = job;
            done
        }
    })
    .await;
    let last = last.into_inner().unwrap();
    assert!(
        finished.is_ok(),
        "job never finished: {last}\n{}",
        restarted.logs()
    );
    assert_eq!(last["state"], "SUCCESS", "{last}\n{}", restarted.logs());

    // Every layer left the registry about once in total, across both managers.
    for layer in &image.platforms[0].layers {
        let settled = wait_until(Duration::from_secs(10), || {
            std::future::ready(registry.blob_bytes_served(&layer.digest) >= layer.size)
        })
        .await;
        assert!(settled.is_ok(), "layer {} never fully served", layer.digest);
        let served = registry.blob_bytes_served(&layer.digest);
        assert!(
            served as f64 <= layer.size as f64 * 1.05,
            "layer {} of {} bytes: registry sent {served}",
            layer.digest,
            layer.size
        );
    }
    restarted.kill().await;
}
