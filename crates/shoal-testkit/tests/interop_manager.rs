//! Manager acceptance 3 with the real registry and containerd: a preheat job on a multi-arch
//! image index makes the seed fetch only the chosen platform's blobs, after which containerd
//! pulls the image through a daemon without the registry sending any layer again.
//!
//! Needs root and the Debian packages `docker-registry` and `containerd` (`scripts/setup.sh`).

#![allow(clippy::unwrap_used)]

use std::time::Duration;

use shoal_cli::init::{InitOptions, Runtime};
use shoal_testkit::cluster::download_bytes;
use shoal_testkit::interop::containerd::{Containerd, PullOptions};
use shoal_testkit::interop::image::ImageSpec;
use shoal_testkit::interop::registry::{Registry, RegistryOptions};
use shoal_testkit::{wait_until, TestCluster};

/// Submits a preheat job the way Harbor's Dragonfly provider does and waits for its end.
async fn preheat(cluster: &TestCluster, args: serde_json::Value) -> serde_json::Value {
    let manager = cluster.manager.as_ref().unwrap();
    let http = reqwest::Client::new();
    let response = http
        .post(format!("{}/oapi/v1/jobs", manager.rest_url()))
        .bearer_auth(&manager.token)
        .json(&serde_json::json!({ "type": "preheat", "args": args }))
        .send()
        .await
        .unwrap();
    let status = response.status();
    let job: serde_json::Value = response.json().await.unwrap();
    assert!(status.is_success(), "create job: {status} {job}");
    let id = job["id"].as_u64().unwrap();
    let last = std::sync::Mutex::new(serde_json::Value::Null);
    let finished = wait_until(Duration::from_secs(180), || {
        let request = http
            .get(format!("{}/oapi/v1/jobs/{id}", manager.rest_url()))
            .bearer_auth(&manager.token);
        let last = &last;
        async move {
            let Ok(response) = request.send().await else {
                return false;
            };
            let Ok(job) = response.json::<serde_json::Value>().await else {
                return false;
            };
            let done = matches!(job["state"].as_str(), Some("SUCCESS" | "FAILURE"));
            *last.lock().unwrap() = job;
            done
        }
    })
    .await;
    let last = last.into_inner().unwrap();
    assert!(finished.is_ok(), "job did not finish: {last}");
    last
}

/// Waits until the manager lists the cluster's seed as active.
async fn wait_for_seed(cluster: &TestCluster) {
    let manager = cluster.manager.as_ref().unwrap();
    let http = reqwest::Client::new();
    let url = format!("{}/api/v1/seed-peers", manager.rest_url());
    let registered = wait_until(Duration::from_secs(30), || {
        let request = http.get(&url).bearer_auth(&manager.token);
        async move {
            let Ok(response) = request.send().await else {
                return false;
            };
            let text = response.text().await.unwrap_or_default();
            text.contains("\"active\"")
        }
    })
    .await;
    assert!(registered.is_ok(), "the seed never registered");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn preheat_of_a_multi_arch_index_warms_only_the_chosen_platform() {
    let registry = Registry::start(RegistryOptions::default()).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let spec = ImageSpec {
        name: "shoal/preheat".into(),
        seed: 77,
        layers: 2,
        layer_size: 6 << 20,
        multi_platform: true,
        ..ImageSpec::default()
    };
    let image = spec.build_async(dir.path().join("layout")).await.unwrap();
    image.push(&registry).await.unwrap();
    let chosen = image.platform("arm64").unwrap().clone();
    let other = image.platform("amd64").unwrap().clone();

    let cluster = TestCluster::builder()
        .manager(true)
        .seed(true)
        .daemons(1)
        .start()
        .await
        .unwrap();
    wait_for_seed(&cluster).await;
    let manifest_url = format!(
        "{}/v2/{}/manifests/{}",
        registry.url(),
        image.name,
        image.tag
    );
    let job = preheat(
        &cluster,
        serde_json::json!({ "type": "image", "url": manifest_url, "platform": "linux/arm64" }),
    )
    .await;
    assert_eq!(job["state"], "SUCCESS", "{job}");

    // The seed fetched the chosen platform's layers once (maybe as several ranged GETs), the
    // config too, and the other platform's layers never. Access-log lines trail the bodies.
    let settled = wait_until(Duration::from_secs(10), || {
        let done = chosen
            .layers
            .iter()
            .all(|layer| registry.blob_bytes_served(&layer.digest) >= layer.size)
            && registry.blob_gets(&chosen.config_digest) > 0;
        std::future::ready(done)
    })
    .await;
    assert!(settled.is_ok(), "a chosen layer never left the registry");
    let served_after_preheat: Vec<u64> = chosen
        .layers
        .iter()
        .map(|layer| registry.blob_bytes_served(&layer.digest))
        .collect();
    for (layer, served) in chosen.layers.iter().zip(&served_after_preheat) {
        assert!(
            *served as f64 <= layer.size as f64 * 1.05,
            "layer {} of {} bytes: registry sent {served}",
            layer.digest,
            layer.size
        );
    }
    for layer in &other.layers {
        assert_eq!(
            registry.blob_gets(&layer.digest),
            0,
            "unrequested platform layer {}",
            layer.digest
        );
    }
    assert!(download_bytes(&cluster.seed_metrics(), "origin") > 0);

    // containerd pulls the preheated platform through the daemon: no layer leaves the registry.
    let containerd = Containerd::start().await.unwrap();
    let options = InitOptions {
        runtime: Runtime::Containerd,
        proxy: format!("http://{}", cluster.proxy_addr(0).await.unwrap()),
        registries: vec![registry.host()],
        config_dir: Some(containerd.hosts_dir().to_path_buf()),
        insecure: true,
    };
    shoal_cli::init::init(&options).unwrap();
    let reference = image.reference(&registry.host());
    let pull = PullOptions {
        platform: Some("linux/arm64".into()),
        ..PullOptions::default()
    };
    containerd.pull_with(&reference, &pull).await.unwrap();
    for (layer, served) in chosen.layers.iter().zip(&served_after_preheat) {
        assert_eq!(
            registry.blob_bytes_served(&layer.digest),
            *served,
            "layer {} went to the registry again",
            layer.digest
        );
    }
    assert_eq!(
        download_bytes(&cluster.metrics(0), "origin"),
        0,
        "the daemon fetched blob bytes from the registry"
    );
    assert!(download_bytes(&cluster.metrics(0), "parent") > 0);
    let tree = containerd
        .unpacked_digest_for(&reference, Some("linux/arm64"))
        .await
        .unwrap();
    assert_eq!(tree, chosen.tree_digest, "unpacked image differs");
}
