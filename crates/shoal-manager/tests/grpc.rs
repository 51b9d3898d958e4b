//! The `manager.v2.Manager` surface over a real socket: registration, lookup, leases expiring
//! into `inactive`, discovery by cluster scopes, and clear status codes for bad input.

#![allow(clippy::unwrap_used)]

use std::time::Duration;

use shoal_protocol::manager::manager_client::ManagerClient;
use shoal_protocol::manager::{
    DeleteSeedPeerRequest, GetSchedulerRequest, GetSeedPeerRequest, KeepAliveRequest,
    ListApplicationsRequest, ListSchedulersRequest, ListSeedPeersRequest, SourceType,
    UpdateSchedulerRequest, UpdateSeedPeerRequest,
};
use tokio_util::sync::CancellationToken;
use tonic::transport::Channel;

const TOKEN: &str = "grpc-test-token";

struct Running {
    client: ManagerClient<Channel>,
    rest: String,
    cancel: CancellationToken,
    _dir: tempfile::TempDir,
}

async fn start(ttl: Duration) -> Running {
    let dir = tempfile::tempdir().unwrap();
    let mut config = shoal_manager::ManagerConfig::new(dir.path().join("manager"));
    config.rest_listen = "127.0.0.1:0".parse().unwrap();
    config.grpc_listen = "127.0.0.1:0".parse().unwrap();
    config.instance_ttl = ttl;
    config.bootstrap_token = Some(TOKEN.to_string());
    let cancel = CancellationToken::new();
    let manager = shoal_manager::start(config, cancel.clone()).await.unwrap();
    assert!(
        manager.created_root_token().is_none(),
        "a configured bootstrap token is not shown again"
    );
    let url = format!("http://{}", manager.grpc_addr());
    let rest = format!("http://{}", manager.rest_addr());
    tokio::spawn(manager.wait());
    let client = ManagerClient::connect(url).await.unwrap();
    Running {
        client,
        rest,
        cancel,
        _dir: dir,
    }
}

fn scheduler(hostname: &str, ip: &str, cluster: u64) -> UpdateSchedulerRequest {
    UpdateSchedulerRequest {
        source_type: SourceType::SchedulerSource as i32,
        hostname: hostname.into(),
        scheduler_cluster_id: cluster,
        ip: ip.into(),
        port: 8002,
        ..Default::default()
    }
}

fn seed(hostname: &str, ip: &str) -> UpdateSeedPeerRequest {
    UpdateSeedPeerRequest {
        source_type: SourceType::SeedPeerSource as i32,
        hostname: hostname.into(),
        r#type: "super".into(),
        ip: ip.into(),
        port: 4000,
        download_port: 4000,
        ..Default::default()
    }
}

fn list(hostname: &str, ip: &str) -> ListSchedulersRequest {
    ListSchedulersRequest {
        source_type: SourceType::PeerSource as i32,
        hostname: hostname.into(),
        ip: ip.into(),
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registrations_are_listed_looked_up_and_validated() {
    let mut running = start(Duration::from_secs(30)).await;
    let client = &mut running.client;

    let registered = client
        .update_scheduler(scheduler("sched-a", "127.0.0.9", 0))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        registered.scheduler_cluster_id, 1,
        "0 means the default cluster"
    );
    assert_eq!(registered.state, "active");
    client
        .update_seed_peer(seed("seed-a", "127.0.0.10"))
        .await
        .unwrap();

    let found = client
        .get_scheduler(GetSchedulerRequest {
            hostname: "sched-a".into(),
            ip: "127.0.0.9".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(found.port, 8002);
    assert_eq!(found.scheduler_cluster.unwrap().name, "default");
    assert_eq!(found.seed_peers.len(), 1);
    let seed_peer = client
        .get_seed_peer(GetSeedPeerRequest {
            hostname: "seed-a".into(),
            ip: "127.0.0.10".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(seed_peer.download_port, 4000);

    let schedulers = client
        .list_schedulers(list("node-1", "10.0.0.1"))
        .await
        .unwrap()
        .into_inner()
        .schedulers;
    assert_eq!(schedulers.len(), 1);
    assert_eq!(schedulers[0].seed_peers[0].hostname, "seed-a");
    let seeds = client
        .list_seed_peers(ListSeedPeersRequest {
            hostname: "node-1".into(),
            ip: "10.0.0.1".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .seed_peers;
    assert_eq!(seeds.len(), 1);
    let applications = client
        .list_applications(ListApplicationsRequest::default())
        .await
        .unwrap()
        .into_inner()
        .applications;
    assert!(applications.is_empty());

    // Bad input gets a clear code, never a panic or a silent success.
    for (request, what) in [
        (scheduler("", "127.0.0.9", 0), "empty hostname"),
        (scheduler("x", "not-an-ip", 0), "bad ip"),
        (scheduler("x", "127.0.0.9", 999), "unknown cluster"),
    ] {
        let status = client.update_scheduler(request).await.unwrap_err();
        assert_eq!(
            status.code(),
            tonic::Code::InvalidArgument,
            "{what}: {status:?}"
        );
    }
    let mut bad_port = seed("s", "127.0.0.1");
    bad_port.port = 0;
    assert_eq!(
        client.update_seed_peer(bad_port).await.unwrap_err().code(),
        tonic::Code::InvalidArgument
    );
    let missing = client
        .get_scheduler(GetSchedulerRequest {
            hostname: "nobody".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(missing.code(), tonic::Code::NotFound);

    // A keepalive for an instance nobody registered is refused, so it registers again.
    let stray = KeepAliveRequest {
        source_type: SourceType::SchedulerSource as i32,
        hostname: "ghost".into(),
        cluster_id: 0,
        ip: "127.0.0.99".into(),
    };
    let refused = client
        .keep_alive(tokio_stream::iter(vec![stray]))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), tonic::Code::NotFound);

    client
        .delete_seed_peer(DeleteSeedPeerRequest {
            hostname: "seed-a".into(),
            ip: "127.0.0.10".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    let gone = client
        .delete_seed_peer(DeleteSeedPeerRequest {
            hostname: "seed-a".into(),
            ip: "127.0.0.10".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(gone.code(), tonic::Code::NotFound);
    running.cancel.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_instance_becomes_inactive_and_is_no_longer_handed_out() {
    let mut running = start(Duration::from_millis(600)).await;
    running
        .client
        .update_scheduler(scheduler("sched-ttl", "127.0.0.9", 0))
        .await
        .unwrap();
    let listed = running
        .client
        .list_schedulers(list("n", "10.0.0.1"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(listed.schedulers.len(), 1);

    let http = reqwest::Client::new();
    let url = format!("{}/api/v1/schedulers", running.rest);
    let mut client = running.client.clone();
    let expired = wait_until(Duration::from_secs(10), || {
        let request = http.get(&url).bearer_auth(TOKEN);
        async move {
            let Ok(response) = request.send().await else {
                return false;
            };
            let text = response.text().await.unwrap_or_default();
            text.contains("\"inactive\"")
        }
    })
    .await;
    assert!(expired, "the scheduler never became inactive");
    let listed = client
        .list_schedulers(list("n", "10.0.0.1"))
        .await
        .unwrap()
        .into_inner();
    assert!(
        listed.schedulers.is_empty(),
        "an expired scheduler was handed out"
    );
    running.cancel.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn daemons_get_the_cluster_their_scopes_match() {
    let mut running = start(Duration::from_secs(30)).await;
    let http = reqwest::Client::new();
    let created = http
        .post(format!("{}/api/v1/scheduler-clusters", running.rest))
        .bearer_auth(TOKEN)
        .json(&serde_json::json!({
            "name": "gpu",
            "scopes": {"cidrs": ["10.8.0.0/16"], "hostnames": []},
        }))
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), 201);
    let cluster: serde_json::Value = created.json().await.unwrap();
    let gpu = cluster["id"].as_u64().unwrap();
    let unknown_field = http
        .post(format!("{}/api/v1/scheduler-clusters", running.rest))
        .bearer_auth(TOKEN)
        .json(&serde_json::json!({"name": "x", "colour": "blue"}))
        .send()
        .await
        .unwrap();
    assert_eq!(unknown_field.status(), 400);

    let client = &mut running.client;
    client
        .update_scheduler(scheduler("sched-default", "127.0.0.9", 0))
        .await
        .unwrap();
    client
        .update_scheduler(scheduler("sched-gpu", "127.0.0.8", gpu))
        .await
        .unwrap();
    let hostnames = |response: shoal_protocol::manager::ListSchedulersResponse| {
        response
            .schedulers
            .into_iter()
            .map(|scheduler| scheduler.hostname)
            .collect::<Vec<_>>()
    };
    let inside = client
        .list_schedulers(list("gpu-node", "10.8.3.4"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(hostnames(inside), vec!["sched-gpu"]);
    let outside = client
        .list_schedulers(list("cpu-node", "10.9.3.4"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(hostnames(outside), vec!["sched-default"]);
    running.cancel.cancel();
}

async fn wait_until<F, Fut>(timeout: Duration, mut check: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    while tokio::time::Instant::now() < deadline {
        if check().await {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    false
}
