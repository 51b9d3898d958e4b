//! Issue 3 acceptance with the real programs users run: containerd pulling through the daemon's
//! registry mirror (plain and token-auth registries), and skopeo copying through it.
//!
//! Needs root and the Debian packages `docker-registry`, `containerd` and `skopeo`
//! (`scripts/setup.sh` installs them); a missing one fails the test naming the package.

#![allow(clippy::unwrap_used)]

use std::time::Duration;

use shoal_cli::init::{InitOptions, Runtime};
use shoal_testkit::cluster::download_bytes;
use shoal_testkit::interop::containerd::{Containerd, PullOptions};
use shoal_testkit::interop::image::{BuiltImage, ImageSpec};
use shoal_testkit::interop::registry::{Registry, RegistryOptions};
use shoal_testkit::interop::skopeo;
use shoal_testkit::{wait_until, TestCluster};

async fn build_image(name: &str, seed: u64, layer_size: usize) -> (tempfile::TempDir, BuiltImage) {
    let dir = tempfile::tempdir().unwrap();
    let spec = ImageSpec {
        name: name.into(),
        seed,
        layers: 3,
        layer_size,
        ..ImageSpec::default()
    };
    let image = spec.build_async(dir.path().join("layout")).await.unwrap();
    (dir, image)
}

/// Points `containerd` at the daemon's proxy for `registry` with `shoal init containerd`.
fn mirror_through(containerd: &Containerd, registry: &Registry, proxy: std::net::SocketAddr) {
    let options = InitOptions {
        runtime: Runtime::Containerd,
        proxy: format!("http://{proxy}"),
        registries: vec![registry.host()],
        config_dir: Some(containerd.hosts_dir().to_path_buf()),
        insecure: true,
    };
    shoal_cli::init::init(&options).unwrap();
}

/// Every layer (and the config) left the registry about once in total, whatever the pulls.
async fn assert_blobs_served_once(registry: &Registry, image: &BuiltImage) {
    let platform = &image.platforms[0];
    // Access-log lines trail the bodies a little.
    let settled = wait_until(Duration::from_secs(10), || {
        let done = platform
            .layers
            .iter()
            .all(|layer| registry.blob_bytes_served(&layer.digest) >= layer.size);
        std::future::ready(done)
    })
    .await;
    assert!(
        settled.is_ok(),
        "some layer was never served by the registry"
    );
    for layer in &platform.layers {
        let served = registry.blob_bytes_served(&layer.digest);
        assert!(
            served as f64 <= layer.size as f64 * 1.05,
            "layer {} of {} bytes: registry sent {served} bytes",
            layer.digest,
            layer.size
        );
    }
}

async fn pull_twice_through_two_daemons(
    registry: Registry,
    image: BuiltImage,
    options: PullOptions,
) {
    let cluster = TestCluster::builder().daemons(2).start().await.unwrap();
    let reference = image.reference(&registry.host());
    let containerd_a = Containerd::start().await.unwrap();
    let containerd_b = Containerd::start().await.unwrap();
    mirror_through(
        &containerd_a,
        &registry,
        cluster.proxy_addr(0).await.unwrap(),
    );
    mirror_through(
        &containerd_b,
        &registry,
        cluster.proxy_addr(1).await.unwrap(),
    );

    containerd_a.pull_with(&reference, &options).await.unwrap();
    containerd_b.pull_with(&reference, &options).await.unwrap();

    assert_blobs_served_once(&registry, &image).await;
    let layer_bytes: u64 = image.platforms[0]
        .layers
        .iter()
        .map(|layer| layer.size)
        .sum();
    let from_parents = download_bytes(&cluster.metrics(1), "parent");
    assert!(
        from_parents >= layer_bytes,
        "daemon B took {from_parents} of {layer_bytes} layer bytes from parents"
    );
    assert_eq!(
        download_bytes(&cluster.metrics(1), "origin"),
        0,
        "daemon B went to the registry for blobs"
    );
    let tree_a = containerd_a.unpacked_digest(&reference).await.unwrap();
    let tree_b = containerd_b.unpacked_digest(&reference).await.unwrap();
    assert_eq!(tree_a, tree_b);
    assert_eq!(
        tree_a, image.platforms[0].tree_digest,
        "unpacked image differs from what was built"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn containerd_pulls_through_the_mirror() {
    let registry = Registry::start(RegistryOptions::default()).await.unwrap();
    let (_dir, image) = build_image("shoal/mirror", 41, 9 * 1024 * 1024).await;
    image.push(&registry).await.unwrap();
    pull_twice_through_two_daemons(registry, image, PullOptions::default()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn containerd_pulls_from_a_token_auth_registry_through_the_mirror() {
    let registry = Registry::start(RegistryOptions {
        token_auth: true,
        anonymous_pull: false,
        ..RegistryOptions::default()
    })
    .await
    .unwrap();
    let (_dir, image) = build_image("shoal/private", 42, 6 * 1024 * 1024).await;
    image.push(&registry).await.unwrap();
    let (user, password) = registry
        .credentials()
        .map(|(user, password)| (user.to_string(), password.to_string()))
        .unwrap();

    // An anonymous blob request through the proxy gets the registry's challenge, not 404/500.
    let cluster = TestCluster::builder().daemons(1).start().await.unwrap();
    let proxy = cluster.proxy_addr(0).await.unwrap();
    let layer = &image.platforms[0].layers[0];
    let response = reqwest::Client::new()
        .get(format!(
            "http://{proxy}/v2/{}/blobs/{}",
            image.name, layer.digest
        ))
        .header("X-Dragonfly-Registry", registry.url())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 401);
    let challenge = response.headers()["www-authenticate"]
        .to_str()
        .unwrap()
        .to_string();
    assert!(challenge.starts_with("Bearer realm="), "{challenge}");
    drop(cluster);

    let options = PullOptions {
        user: Some((user, password)),
        ..PullOptions::default()
    };
    pull_twice_through_two_daemons(registry, image, options).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn skopeo_copies_through_the_mirror() {
    let registry = Registry::start(RegistryOptions::default()).await.unwrap();
    let (dir, image) = build_image("shoal/skopeo", 43, 5 * 1024 * 1024).await;
    image.push(&registry).await.unwrap();
    let upstream: url::Url = registry.url().parse().unwrap();
    let cluster = TestCluster::builder()
        .daemons(1)
        .configure(move |_, config| config.proxy.default_registry = Some(upstream.clone()))
        .start()
        .await
        .unwrap();
    let proxy = cluster.proxy_addr(0).await.unwrap();
    let conf =
        skopeo::write_registries_conf(dir.path(), &registry.host(), &proxy.to_string()).unwrap();
    let copied = skopeo::copy_via_mirror(
        &conf,
        &image.reference(&registry.host()),
        &dir.path().join("copy"),
    )
    .await
    .unwrap();
    assert_eq!(copied.manifest_digest, image.platforms[0].manifest_digest);
    let layers: Vec<String> = copied
        .layers
        .iter()
        .map(|(digest, _)| digest.clone())
        .collect();
    assert_eq!(layers, image.layer_digests());
    let origin_bytes = download_bytes(&cluster.metrics(0), "origin");
    let layer_bytes: u64 = image.platforms[0]
        .layers
        .iter()
        .map(|layer| layer.size)
        .sum();
    assert!(
        origin_bytes >= layer_bytes,
        "layers did not go through the daemon ({origin_bytes} bytes)"
    );
}
