//! Proves the interop harness works against the real programs, without shoal: a registry
//! (plain and with token auth), an image pushed with skopeo, pulls with two containerd
//! instances and with skopeo, and the registry's access-log counts.
//!
//! Needs root and the Debian packages `docker-registry`, `containerd` and `skopeo`; a missing
//! one fails the test with the package to install.

#![allow(clippy::unwrap_used)]

use std::time::Duration;

use shoal_testkit::interop::containerd::{Containerd, PullOptions};
use shoal_testkit::interop::image::{BuiltImage, ImageSpec};
use shoal_testkit::interop::registry::{Registry, RegistryOptions};
use shoal_testkit::interop::skopeo;
use shoal_testkit::wait_until;

/// Three layers of 7 MiB (about 21 MB).
async fn build_image(name: &str, seed: u64) -> (tempfile::TempDir, BuiltImage) {
    let dir = tempfile::tempdir().unwrap();
    let spec = ImageSpec {
        name: name.into(),
        seed,
        ..ImageSpec::default()
    };
    let image = spec.build_async(dir.path().join("layout")).await.unwrap();
    assert_eq!(image.platforms[0].layers.len(), 3);
    (dir, image)
}

/// Waits until every layer was served at least `pulls` times (log lines trail the bodies).
async fn wait_for_blob_gets(registry: &Registry, image: &BuiltImage, pulls: usize) {
    let layers = &image.platforms[0].layers;
    let served = wait_until(Duration::from_secs(10), || {
        let done = layers
            .iter()
            .all(|layer| registry.blob_gets(&layer.digest) >= pulls);
        std::future::ready(done)
    })
    .await;
    if served.is_err() {
        let counts: Vec<_> = layers
            .iter()
            .map(|layer| registry.blob_gets(&layer.digest))
            .collect();
        panic!("expected {pulls} GETs per layer, registry log shows {counts:?}");
    }
}

fn assert_plausible_counts(registry: &Registry, image: &BuiltImage, pulls: usize) {
    for layer in &image.platforms[0].layers {
        let gets = registry.blob_gets(&layer.digest);
        // A client may retry a layer, but never skip one or fetch it many times over.
        assert!(
            (pulls..=pulls + 2).contains(&gets),
            "layer {} fetched {gets} times",
            layer.digest
        );
        assert!(registry.blob_bytes_served(&layer.digest) >= pulls as u64 * layer.size);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plain_registry_serves_containerd_and_skopeo() {
    let registry = Registry::start(RegistryOptions::default()).await.unwrap();
    let (dir, image) = build_image("shoal/plain", 11).await;
    let reference = image.push(&registry).await.unwrap();
    assert_eq!(reference, format!("{}/shoal/plain:v1", registry.host()));
    for layer in &image.platforms[0].layers {
        assert_eq!(
            registry.blob_gets(&layer.digest),
            0,
            "a push does not GET blobs"
        );
    }

    let (first, second) = tokio::join!(Containerd::start(), Containerd::start());
    let (first, second) = (first.unwrap(), second.unwrap());
    first.pull(&reference).await.unwrap();
    second.pull(&reference).await.unwrap();
    assert_eq!(first.image_digest(&reference).await.unwrap(), image.digest);
    let first_tree = first.unpacked_digest(&reference).await.unwrap();
    let second_tree = second.unpacked_digest(&reference).await.unwrap();
    assert_eq!(first_tree, second_tree);
    assert_eq!(
        first_tree, image.platforms[0].tree_digest,
        "unpacked tree differs from the built one"
    );
    wait_for_blob_gets(&registry, &image, 2).await;

    let copied = skopeo::copy_direct(&reference, &dir.path().join("copy"), None)
        .await
        .unwrap();
    assert_eq!(copied.manifest_digest, image.digest);
    let expected: Vec<_> = image.platforms[0]
        .layers
        .iter()
        .map(|layer| (layer.digest.clone(), layer.size))
        .collect();
    assert_eq!(copied.layers, expected);
    wait_for_blob_gets(&registry, &image, 3).await;
    assert_plausible_counts(&registry, &image, 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_auth_registry_challenges_and_serves_users() {
    let options = RegistryOptions {
        token_auth: true,
        anonymous_pull: true,
        ..RegistryOptions::default()
    };
    let registry = Registry::start(options).await.unwrap();
    let (user, password) = registry.credentials().unwrap();
    let (user, password) = (user.to_owned(), password.to_owned());
    let (dir, image) = build_image("shoal/token", 12).await;
    let layer = image.platforms[0].layers[0].digest.clone();

    let client = reqwest::Client::builder().no_proxy().build().unwrap();
    let url = format!("{}/v2/shoal/token/blobs/{layer}", registry.url());
    let response = client.get(&url).send().await.unwrap();
    assert_eq!(response.status(), 401);
    let challenge = response.headers()["www-authenticate"]
        .to_str()
        .unwrap()
        .to_owned();
    let realm = registry.token_server().unwrap().realm();
    assert!(
        challenge.starts_with(&format!("Bearer realm=\"{realm}\"")),
        "challenge: {challenge}"
    );
    assert!(
        challenge.contains("scope=\"repository:shoal/token:pull\""),
        "challenge: {challenge}"
    );

    let anonymous_push = image.push_to(&registry.host(), None).await;
    assert!(anonymous_push.is_err(), "an anonymous push must be refused");
    let reference = image.push(&registry).await.unwrap();
    let requests = registry.token_server().unwrap().requests();
    assert!(requests
        .iter()
        .any(|request| request.user.as_deref() == Some(user.as_str())
            && request
                .granted
                .iter()
                .any(|access| access.actions.contains(&"push".to_owned()))));

    let (anonymous, authenticated) = tokio::join!(Containerd::start(), Containerd::start());
    let (anonymous, authenticated) = (anonymous.unwrap(), authenticated.unwrap());
    anonymous.pull(&reference).await.unwrap();
    let with_user = PullOptions {
        user: Some((user.clone(), password.clone())),
        ..PullOptions::default()
    };
    authenticated
        .pull_with(&reference, &with_user)
        .await
        .unwrap();
    // containerd with credentials uses the OAuth2 password grant (POST), without them GET.
    let requests = registry.token_server().unwrap().requests();
    assert!(requests
        .iter()
        .any(|request| request.method == http::Method::POST
            && request.user.as_deref() == Some(user.as_str())));
    assert!(requests
        .iter()
        .any(|request| request.method == http::Method::GET
            && request.user.is_none()
            && request
                .granted
                .iter()
                .any(|access| access.actions == ["pull"])));
    let anonymous_tree = anonymous.unpacked_digest(&reference).await.unwrap();
    assert_eq!(
        anonymous_tree,
        authenticated.unpacked_digest(&reference).await.unwrap()
    );
    assert_eq!(anonymous_tree, image.platforms[0].tree_digest);

    let copy_dir = dir.path().join("copy");
    let copied = skopeo::copy_direct(&reference, &copy_dir, Some((&user, &password)))
        .await
        .unwrap();
    assert_eq!(copied.manifest_digest, image.digest);
    wait_for_blob_gets(&registry, &image, 3).await;
    assert_plausible_counts(&registry, &image, 3);
}

/// A second registry stands in for the shoal mirror: containerd's `hosts.toml` and skopeo's
/// `registries.conf` written by the harness must send every pull of the origin's images to it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mirror_configs_route_pulls_to_the_mirror() {
    let (origin, mirror) = tokio::join!(
        Registry::start(RegistryOptions::default()),
        Registry::start(RegistryOptions::default())
    );
    let (origin, mirror) = (origin.unwrap(), mirror.unwrap());
    let dir = tempfile::tempdir().unwrap();
    let spec = ImageSpec {
        name: "shoal/mirrored".into(),
        seed: 13,
        layer_size: 2 << 20,
        multi_platform: true,
        ..ImageSpec::default()
    };
    let image = spec.build_async(dir.path().join("layout")).await.unwrap();
    let reference = image.push(&origin).await.unwrap();
    image.push(&mirror).await.unwrap();

    let containerd = Containerd::start().await.unwrap();
    containerd
        .write_mirror(&origin.host(), &mirror.url())
        .unwrap();
    containerd.pull(&reference).await.unwrap();
    assert_eq!(
        containerd.image_digest(&reference).await.unwrap(),
        image.digest
    );
    let amd64 = image.platform("amd64").unwrap();
    let arm64 = image.platform("arm64").unwrap();
    assert_eq!(
        containerd.unpacked_digest(&reference).await.unwrap(),
        amd64.tree_digest
    );

    let conf = skopeo::write_registries_conf(dir.path(), &origin.host(), &mirror.host()).unwrap();
    let copied = skopeo::copy_via_mirror(&conf, &reference, &dir.path().join("copy"))
        .await
        .unwrap();
    assert_eq!(
        copied.manifest_digest, amd64.manifest_digest,
        "skopeo copies the host platform"
    );

    let mirror_platform = BuiltImage {
        platforms: vec![amd64.clone()],
        ..image.clone()
    };
    wait_for_blob_gets(&mirror, &mirror_platform, 2).await;
    assert_plausible_counts(&mirror, &mirror_platform, 2);
    for layer in amd64.layers.iter().chain(&arm64.layers) {
        assert_eq!(
            origin.blob_gets(&layer.digest),
            0,
            "the origin served a blob"
        );
    }
    for layer in &arm64.layers {
        assert_eq!(
            mirror.blob_gets(&layer.digest),
            0,
            "the other platform was fetched"
        );
    }
}
