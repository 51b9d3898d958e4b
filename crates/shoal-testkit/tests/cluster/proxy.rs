//! The daemon's HTTP proxy: P2P through the proxy, the range matrix, aborted bodies, relayed
//! origin errors and CONNECT tunnels.

use std::time::Duration;

use shoal_testkit::origin::{Behaviour, FakeOrigin};
use shoal_testkit::{random_bytes, sha256_hex, TestCluster};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const MIB: usize = 1024 * 1024;

fn client(proxy: std::net::SocketAddr) -> reqwest::Client {
    reqwest::Client::builder()
        .proxy(reqwest::Proxy::http(format!("http://{proxy}")).unwrap())
        .timeout(Duration::from_secs(60))
        .build()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn proxied_downloads_go_peer_to_peer() {
    let origin = FakeOrigin::start().await.unwrap();
    let content = random_bytes(10 * MIB + 3, 31);
    // The default rule sends registry blob paths through P2P.
    let url = origin.add("v2/app/blobs/sha256:abc", content.clone());
    let cluster = TestCluster::builder().daemons(2).start().await.unwrap();
    for index in 0..2 {
        let proxy = cluster.proxy_addr(index).await.unwrap();
        let response = client(proxy).get(&url).send().await.unwrap();
        assert_eq!(response.status(), 200);
        assert_eq!(
            response.headers()["content-length"],
            content.len().to_string().as_str()
        );
        assert!(response.headers().contains_key("x-dragonfly-task-id"));
        let body = response.bytes().await.unwrap();
        assert_eq!(sha256_hex(&body), sha256_hex(&content), "daemon {index}");
    }
    assert!(origin.served("v2/app/blobs/sha256:abc") as f64 <= content.len() as f64 * 1.05);
    assert!(shoal_testkit::cluster::download_bytes(&cluster.metrics(1), "parent") > 0);
    // HEAD of a blob held completely is answered from metadata, without asking the origin.
    let requests = origin.requests("v2/app/blobs/sha256:abc");
    let head = client(cluster.proxy_addr(1).await.unwrap())
        .head(&url)
        .send()
        .await
        .unwrap();
    assert_eq!(head.status(), 200);
    assert_eq!(
        head.headers()["content-length"],
        content.len().to_string().as_str()
    );
    assert_eq!(head.headers()["x-dragonfly-task-download-finished"], "true");
    assert_eq!(origin.requests("v2/app/blobs/sha256:abc"), requests);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn range_matrix() {
    let origin = FakeOrigin::start().await.unwrap();
    let length = 9 * MIB + 7;
    let content = random_bytes(length, 32);
    let url = origin.add("file", content.clone());
    let cluster = TestCluster::builder().daemons(1).start().await.unwrap();
    let proxy = client(cluster.proxy_addr(0).await.unwrap());
    let len = length as u64;
    // (Range header, status, Some((start, end exclusive)) for the expected bytes)
    type Case<'a> = (&'a str, u16, Option<(u64, u64)>);
    let cases: Vec<Case<'_>> = vec![
        ("bytes=0-0", 206, Some((0, 1))),
        ("bytes=4194300-4194310", 206, Some((4_194_300, 4_194_311))),
        (
            &*Box::leak(format!("bytes={}-{}", len - 1, len - 1).into_boxed_str()),
            206,
            Some((len - 1, len)),
        ),
        ("bytes=8388608-", 206, Some((8_388_608, len))),
        ("bytes=-100", 206, Some((len - 100, len))),
        (
            &*Box::leak(format!("bytes={len}-").into_boxed_str()),
            416,
            None,
        ),
        ("bytes=abc", 200, Some((0, len))),
        ("bytes=0-0,5-9", 206, Some((0, 10))),
    ];
    for (range, status, bytes) in cases {
        let response = proxy
            .get(&url)
            .header("X-Dragonfly-Use-P2P", "true")
            .header("Range", range)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status().as_u16(), status, "{range}");
        let headers = response.headers().clone();
        let body = response.bytes().await.unwrap();
        match bytes {
            Some((start, end)) => {
                assert_eq!(
                    headers["content-length"],
                    (end - start).to_string().as_str(),
                    "{range}"
                );
                assert_eq!(&body[..], &content[start as usize..end as usize], "{range}");
                if status == 206 {
                    let expected = format!("bytes {}-{}/{}", start, end - 1, len);
                    assert_eq!(headers["content-range"], expected.as_str(), "{range}");
                }
            }
            None => assert_eq!(
                headers["content-range"],
                format!("bytes */{len}").as_str(),
                "{range}"
            ),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn origin_cut_mid_body_aborts_the_client() {
    let origin = FakeOrigin::start().await.unwrap();
    let url = origin.add_with("file", random_bytes(6 * MIB, 33), Behaviour::Reset);
    let cluster = TestCluster::builder()
        .daemons(1)
        .configure(|_, config| config.download.origin_retries = 2)
        .start()
        .await
        .unwrap();
    let proxy = client(cluster.proxy_addr(0).await.unwrap());
    let response = proxy
        .get(&url)
        .header("X-Dragonfly-Use-P2P", "true")
        .send()
        .await
        .unwrap();
    assert_eq!(
        response.status(),
        200,
        "headers go out once the length is known"
    );
    assert!(
        response.bytes().await.is_err(),
        "a short body must not look complete"
    );
    let content_dir = cluster.daemons[0]
        .config
        .data_dir
        .join("store")
        .join("content");
    shoal_testkit::wait_until(Duration::from_secs(10), || {
        let cached = std::fs::read_dir(&content_dir)
            .map(|entries| entries.count())
            .unwrap_or(0);
        async move { cached == 0 }
    })
    .await
    .expect("nothing corrupt is cached");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn origin_errors_are_relayed() {
    let origin = FakeOrigin::start().await.unwrap();
    let missing = origin.url("v2/app/blobs/sha256:missing");
    let broken = origin.add_with(
        "v2/app/blobs/sha256:broken",
        vec![1],
        Behaviour::Status(503),
    );
    let cluster = TestCluster::builder()
        .daemons(1)
        .configure(|_, config| config.download.origin_retries = 1)
        .start()
        .await
        .unwrap();
    let proxy = client(cluster.proxy_addr(0).await.unwrap());
    let response = proxy.get(&missing).send().await.unwrap();
    assert_eq!(response.status(), 404);
    assert_eq!(response.headers()["x-dragonfly-error-type"], "backend");
    let response = proxy.get(&broken).send().await.unwrap();
    assert_eq!(response.status(), 503);
    // Not P2P: passes straight through with the origin's own status and body.
    let response = proxy.get(origin.url("nothing-here")).send().await.unwrap();
    assert_eq!(response.status(), 404);
    assert!(!response.headers().contains_key("x-dragonfly-error-type"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn connect_is_a_byte_tunnel() {
    let origin = FakeOrigin::start().await.unwrap();
    let content = random_bytes(100_000, 34);
    let url = origin.add("file", content.clone());
    let authority = url
        .trim_start_matches("http://")
        .split('/')
        .next()
        .unwrap()
        .to_string();
    let cluster = TestCluster::builder().daemons(1).start().await.unwrap();
    let mut stream = tokio::net::TcpStream::connect(cluster.proxy_addr(0).await.unwrap())
        .await
        .unwrap();
    stream
        .write_all(format!("CONNECT {authority} HTTP/1.1\r\nHost: {authority}\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        let mut byte = [0u8; 1];
        stream.read_exact(&mut byte).await.unwrap();
        head.push(byte[0]);
    }
    assert!(
        head.starts_with(b"HTTP/1.1 200"),
        "{}",
        String::from_utf8_lossy(&head)
    );
    // Plain HTTP inside the tunnel reaches the origin untouched.
    stream
        .write_all(
            format!("GET /file HTTP/1.1\r\nHost: {authority}\r\nConnection: close\r\n\r\n")
                .as_bytes(),
        )
        .await
        .unwrap();
    let mut response = Vec::new();
    stream.read_to_end(&mut response).await.unwrap();
    let split = response
        .windows(4)
        .position(|window| window == b"\r\n\r\n")
        .unwrap()
        + 4;
    assert!(response.starts_with(b"HTTP/1.1 200"));
    assert_eq!(&response[split..], &content[..]);
    assert_eq!(origin.served("file"), content.len() as u64);
}

/// Registries redirect blob GETs to object storage: the redirect is followed (relative and
/// absolute), and the registry's `Authorization` never reaches another host.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn redirects_are_followed_without_leaking_credentials() {
    let registry = FakeOrigin::start().await.unwrap();
    let storage = FakeOrigin::start().await.unwrap();
    let content = random_bytes(5 * MIB, 35);
    let presigned = storage.add("bucket/layer", content.clone());
    registry.add("v2/app/blobs/sha256:rel", content.clone());
    let relative =
        registry.add_redirect("v2/app/blobs/sha256:relative", "/v2/app/blobs/sha256:rel");
    let absolute = registry.add_redirect("v2/app/blobs/sha256:absolute", &presigned);
    let cluster = TestCluster::builder().daemons(1).start().await.unwrap();
    let proxy = client(cluster.proxy_addr(0).await.unwrap());
    for url in [&relative, &absolute] {
        let response = proxy
            .get(url)
            .header("Authorization", "Bearer registry-secret")
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200, "{url}");
        assert_eq!(
            sha256_hex(&response.bytes().await.unwrap()),
            sha256_hex(&content),
            "{url}"
        );
    }
    assert!(registry
        .authorizations("v2/app/blobs/sha256:absolute")
        .iter()
        .all(|value| value == "Bearer registry-secret"));
    assert!(
        !registry
            .authorizations("v2/app/blobs/sha256:rel")
            .is_empty(),
        "same-host redirect keeps credentials"
    );
    assert!(
        storage.authorizations("bucket/layer").is_empty(),
        "credentials leaked to object storage"
    );
}

/// CONNECT to a host listed for termination: the proxy speaks TLS with a leaf from its CA, the
/// blob inside goes P2P (HTTP/2 and HTTP/1.1), and a second daemon gets it from the first.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn listed_hosts_are_terminated_and_go_peer_to_peer() {
    use shoal_daemon::proxy::mitm::{CertificateAuthority, MitmConfig};
    let content = random_bytes(6 * MIB + 5, 36);
    let origin = shoal_testkit::tls_origin::TlsOrigin::start(content.clone())
        .await
        .unwrap();
    let (ca_pem, ca_key, _) = shoal_testkit::tls_origin::new_ca("shoal mitm CA").unwrap();
    let ca = std::sync::Arc::new(CertificateAuthority::from_pem(&ca_pem, &ca_key).unwrap());
    let origin_ca = origin.ca_pem.clone().into_bytes();
    let cluster = TestCluster::builder()
        .daemons(2)
        .configure(move |_, config| {
            config.proxy.mitm = Some(MitmConfig {
                hosts: vec![regex::Regex::new(r"^127\.0\.0\.1$").unwrap()],
                ca: ca.clone(),
            });
            config.origin_ca_certs = vec![origin_ca.clone()];
        })
        .start()
        .await
        .unwrap();
    let url = format!("https://{}/v2/app/blobs/sha256:mitm", origin.addr);
    for (index, http2) in [(0, true), (1, false)] {
        let proxy = cluster.proxy_addr(index).await.unwrap();
        let mut builder = reqwest::Client::builder()
            .proxy(reqwest::Proxy::all(format!("http://{proxy}")).unwrap())
            .add_root_certificate(reqwest::Certificate::from_pem(ca_pem.as_bytes()).unwrap());
        if !http2 {
            builder = builder.http1_only();
        }
        let response = builder.build().unwrap().get(&url).send().await.unwrap();
        assert_eq!(response.status(), 200);
        assert_eq!(
            response.version(),
            if http2 {
                reqwest::Version::HTTP_2
            } else {
                reqwest::Version::HTTP_11
            }
        );
        assert!(
            response.headers().contains_key("x-dragonfly-task-id"),
            "the tunnel was not terminated"
        );
        assert_eq!(
            sha256_hex(&response.bytes().await.unwrap()),
            sha256_hex(&content)
        );
    }
    assert!(origin.served() as f64 <= content.len() as f64 * 1.05);
    assert!(shoal_testkit::cluster::download_bytes(&cluster.metrics(1), "parent") > 0);
}

/// A cold blob's first bytes reach the client while its first piece is still arriving from the
/// origin (a range is answered as soon as its bytes are stored, not when the piece completes).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn bytes_flow_before_their_piece_completes() {
    let origin = FakeOrigin::start().await.unwrap();
    let content = random_bytes(4 * MIB, 37);
    let url = origin.add("v2/app/blobs/sha256:slow", content.clone());
    origin.throttle("v2/app/blobs/sha256:slow", MIB as u64);
    let cluster = TestCluster::builder().daemons(1).start().await.unwrap();
    let proxy = client(cluster.proxy_addr(0).await.unwrap());
    let mut response = proxy.get(&url).send().await.unwrap();
    assert_eq!(response.status(), 200);
    let first = response.chunk().await.unwrap().expect("a first chunk");
    let served = origin.served("v2/app/blobs/sha256:slow");
    assert!(
        served < content.len() as u64,
        "the first bytes waited for the whole piece ({served} bytes served)"
    );
    let mut body = first.to_vec();
    while let Some(chunk) = response.chunk().await.unwrap() {
        body.extend_from_slice(&chunk);
    }
    assert_eq!(sha256_hex(&body), sha256_hex(&content));
}
