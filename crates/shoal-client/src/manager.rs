//! Client of the manager (`manager.v2.Manager`): scheduler discovery and instance liveness.
//!
//! - [`ManagerClient::list_schedulers`] is what daemons call at start and every refresh
//!   interval to learn their scheduler cluster.
//! - [`keep_alive`] registers an instance (a scheduler or a seed peer) and keeps its lease fresh:
//!   it calls the register RPC, then holds a `KeepAlive` client stream open, sending one
//!   message per interval; a failure of either is retried with backoff until cancelled.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::time::Duration;

use shoal_protocol::manager::manager_client::ManagerClient as RawClient;
use shoal_protocol::manager::{
    KeepAliveRequest, ListSchedulersRequest, SourceType, UpdateSchedulerRequest,
    UpdateSeedPeerRequest,
};
use tokio_stream::StreamExt as _;
use tokio_util::sync::CancellationToken;
use tonic::transport::Channel;

use crate::channel::{self, ChannelError};

/// Time allowed for one unary call to the manager.
const CALL_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest pause between two registration attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(10);

/// A call to the manager failed.
#[derive(Debug, thiserror::Error)]
pub enum ManagerCallError {
    #[error("set up channel to the manager")]
    Channel(#[source] ChannelError),
    #[error("manager answered {code:?}: {message}")]
    Status { code: tonic::Code, message: String },
    #[error("manager did not answer within {0:?}")]
    Timeout(Duration),
}

impl From<tonic::Status> for ManagerCallError {
    fn from(status: tonic::Status) -> Self {
        Self::Status {
            code: status.code(),
            message: status.message().to_string(),
        }
    }
}

/// One scheduler the manager handed out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiscoveredScheduler {
    /// `http://ip:port`.
    pub url: String,
    pub hostname: String,
    pub cluster_id: u64,
}

/// Who is asking for schedulers, so the manager can pick the best-matching cluster.
#[derive(Debug, Clone, Default)]
pub struct Requester {
    pub hostname: String,
    pub ip: String,
    pub idc: Option<String>,
    pub location: Option<String>,
    pub seed: bool,
}

/// A lazily connecting client of one manager; cheap to clone.
#[derive(Debug, Clone)]
pub struct ManagerClient {
    url: String,
    client: RawClient<Channel>,
}

impl ManagerClient {
    /// A client for `url` (`http://host:65003`); nothing is dialled until the first call.
    pub fn new(url: &str) -> Result<Self, ManagerCallError> {
        let channel = channel::lazy(url).map_err(ManagerCallError::Channel)?;
        Ok(Self {
            url: url.to_string(),
            client: RawClient::new(channel),
        })
    }

    /// The manager's URL.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The schedulers of the cluster the manager picks for `requester`, in the manager's order,
    /// keeping only those of the first scheduler's cluster (as upstream clients do).
    pub async fn list_schedulers(
        &self,
        requester: &Requester,
    ) -> Result<Vec<DiscoveredScheduler>, ManagerCallError> {
        let request = ListSchedulersRequest {
            source_type: if requester.seed {
                SourceType::SeedPeerSource
            } else {
                SourceType::PeerSource
            } as i32,
            hostname: requester.hostname.clone(),
            ip: requester.ip.clone(),
            idc: requester.idc.clone(),
            location: requester.location.clone(),
            version: env!("CARGO_PKG_VERSION").to_string(),
            ..Default::default()
        };
        let mut client = self.client.clone();
        let response = tokio::time::timeout(CALL_TIMEOUT, client.list_schedulers(request))
            .await
            .map_err(|_| ManagerCallError::Timeout(CALL_TIMEOUT))??
            .into_inner();
        let cluster = response
            .schedulers
            .first()
            .map(|scheduler| scheduler.scheduler_cluster_id);
        let schedulers = response
            .schedulers
            .into_iter()
            .filter(|scheduler| Some(scheduler.scheduler_cluster_id) == cluster)
            .filter_map(|scheduler| {
                let ip: std::net::IpAddr = scheduler.ip.parse().ok()?;
                let port = u16::try_from(scheduler.port).ok()?;
                Some(DiscoveredScheduler {
                    url: format!("http://{}", SocketAddr::new(ip, port)),
                    hostname: scheduler.hostname,
                    cluster_id: scheduler.scheduler_cluster_id,
                })
            })
            .collect();
        Ok(schedulers)
    }
}

/// The instance [`keep_alive`] registers.
#[derive(Debug, Clone)]
pub enum Registration {
    /// A scheduler serving gRPC on `ip:port`.
    Scheduler {
        hostname: String,
        ip: String,
        port: u16,
        cluster_id: u64,
        idc: Option<String>,
        location: Option<String>,
    },
    /// A seed daemon whose upload gRPC listens on `ip:port`.
    SeedPeer {
        hostname: String,
        ip: String,
        port: u16,
        cluster_id: u64,
        idc: Option<String>,
        location: Option<String>,
    },
}

impl Registration {
    fn keep_alive_request(&self) -> KeepAliveRequest {
        match self {
            Self::Scheduler {
                hostname,
                ip,
                cluster_id,
                ..
            } => KeepAliveRequest {
                source_type: SourceType::SchedulerSource as i32,
                hostname: hostname.clone(),
                cluster_id: *cluster_id,
                ip: ip.clone(),
            },
            Self::SeedPeer {
                hostname,
                ip,
                cluster_id,
                ..
            } => KeepAliveRequest {
                source_type: SourceType::SeedPeerSource as i32,
                hostname: hostname.clone(),
                cluster_id: *cluster_id,
                ip: ip.clone(),
            },
        }
    }

    async fn register(&self, manager: &ManagerClient) -> Result<(), ManagerCallError> {
        let mut client = manager.client.clone();
        let call: Pin<Box<dyn Future<Output = Result<(), tonic::Status>> + Send>> = match self {
            Self::Scheduler {
                hostname,
                ip,
                port,
                cluster_id,
                idc,
                location,
            } => {
                let request = UpdateSchedulerRequest {
                    source_type: SourceType::SchedulerSource as i32,
                    hostname: hostname.clone(),
                    scheduler_cluster_id: *cluster_id,
                    idc: idc.clone(),
                    location: location.clone(),
                    ip: ip.clone(),
                    port: i32::from(*port),
                    ..Default::default()
                };
                Box::pin(async move { client.update_scheduler(request).await.map(|_| ()) })
            }
            Self::SeedPeer {
                hostname,
                ip,
                port,
                cluster_id,
                idc,
                location,
            } => {
                let request = UpdateSeedPeerRequest {
                    source_type: SourceType::SeedPeerSource as i32,
                    hostname: hostname.clone(),
                    r#type: "super".to_string(),
                    idc: idc.clone(),
                    location: location.clone(),
                    ip: ip.clone(),
                    port: i32::from(*port),
                    download_port: i32::from(*port),
                    seed_peer_cluster_id: *cluster_id,
                };
                Box::pin(async move { client.update_seed_peer(request).await.map(|_| ()) })
            }
        };
        tokio::time::timeout(CALL_TIMEOUT, call)
            .await
            .map_err(|_| ManagerCallError::Timeout(CALL_TIMEOUT))??;
        Ok(())
    }
}

/// Registers `registration` with the manager and keeps its lease fresh until `cancel` fires.
///
/// Every failure (manager down, stream broken) is logged and retried with backoff, so an
/// instance re-registers by itself after a manager restart.
pub async fn keep_alive(
    manager: ManagerClient,
    registration: Registration,
    interval: Duration,
    cancel: CancellationToken,
) {
    let mut backoff = Duration::from_millis(200);
    loop {
        let attempt = async {
            registration.register(&manager).await?;
            tracing::info!(manager = manager.url(), "registered with the manager");
            backoff = Duration::from_millis(200);
            hold_keep_alive(&manager, &registration, interval).await
        };
        let result = tokio::select! {
            biased;
            _ = cancel.cancelled() => return,
            result = attempt => result,
        };
        if let Err(err) = result {
            tracing::warn!(manager = manager.url(), error = %err, "manager keepalive failed; retrying");
        }
        tokio::select! {
            biased;
            _ = cancel.cancelled() => return,
            _ = tokio::time::sleep(backoff) => {}
        }
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}

/// Sends one keepalive per `interval` on one client stream until the stream fails.
async fn hold_keep_alive(
    manager: &ManagerClient,
    registration: &Registration,
    interval: Duration,
) -> Result<(), ManagerCallError> {
    let request = registration.keep_alive_request();
    let messages = futures_stream(request, interval);
    let mut client = manager.client.clone();
    client.keep_alive(messages).await?;
    // The manager closed the stream without an error: register again.
    Ok(())
}

fn futures_stream(
    request: KeepAliveRequest,
    interval: Duration,
) -> impl tokio_stream::Stream<Item = KeepAliveRequest> + Send + 'static {
    let ticker = tokio::time::interval(interval);
    tokio_stream::wrappers::IntervalStream::new(ticker).map(move |_| request.clone())
}
