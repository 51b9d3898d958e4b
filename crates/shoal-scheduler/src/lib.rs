//! The scheduler role: host, task and peer state, parent selection, seed triggering.
//!
//! Serves `scheduler.v2.Scheduler` (plus `grpc.health.v1.Health`) to Dragonfly v2 daemons and
//! shoal daemons over h2c. Daemons announce their hosts, then open one AnnouncePeer stream per
//! download; the scheduler answers with candidate parents, or tells the peer to fetch from the
//! origin, triggering a seed daemon first for cold tasks. All state is in memory and soft.
//!
//! ```no_run
//! # async fn example() -> Result<(), shoal_scheduler::SchedulerError> {
//! let cancel = tokio_util::sync::CancellationToken::new();
//! shoal_scheduler::run(shoal_scheduler::SchedulerConfig::default(), cancel).await
//! # }
//! ```
//!
//! Modules: `grpc` adapts tonic to `service` (unary RPCs) and `announce` (one session
//! per AnnouncePeer stream); `state` owns hosts, tasks and peers; `scheduling` is the pure
//! parent-selection and back-to-source policy; `seed` triggers seed daemons.

mod announce;
mod grpc;
mod scheduling;
mod seed;
mod service;
mod state;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use shoal_protocol::scheduler::scheduler_server::SchedulerServer;
use shoal_protocol::MAX_GRPC_MESSAGE_BYTES;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tonic::transport::server::TcpIncoming;
use tonic_health::ServingStatus;
use tracing::{info, warn};

use crate::grpc::SchedulerService;
use crate::scheduling::Policy;
use crate::service::Scheduler;
use crate::state::SharedState;

/// How long shutdown waits for sessions and seed triggers to stop after the server returned.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// Validated scheduler settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SchedulerConfig {
    /// The gRPC listen address; default `0.0.0.0:8002`.
    pub listen: SocketAddr,
    /// Peers of one task that may download from the origin at once, seeds included; default 2.
    /// A child that found no parent within `schedule_wait` may still exceed it.
    pub max_back_to_source_peers: usize,
    /// Candidate parents per answer; default 4.
    pub candidate_parent_limit: usize,
    /// A host that has not announced for this long is forgotten with its peers; default 15 min
    /// (upstream daemons announce every 300 s).
    pub host_ttl: Duration,
    /// Finished or failed peers are forgotten after this long; default 1 h.
    pub peer_ttl: Duration,
    /// How long a registration may wait for a parent before falling back to the origin (or,
    /// with back-to-source disabled, failing); default 30 s.
    pub schedule_wait: Duration,
    /// Whether the first peer of a cold task triggers a seed daemon; default true.
    pub seed_trigger: bool,
    /// Register with a manager and keep the registration alive; default none.
    pub manager: Option<ManagerRegistration>,
}

/// How the scheduler registers itself with a manager so daemons can discover it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ManagerRegistration {
    /// Manager gRPC URL, e.g. `http://127.0.0.1:65003`.
    pub url: String,
    /// Stable name of this scheduler instance (the hash-ring member name on daemons).
    pub hostname: String,
    /// IP daemons dial; must be an IP literal reachable by them.
    pub advertise_ip: IpAddr,
    /// Scheduler cluster to join; 0 joins the manager's default cluster.
    pub cluster_id: u64,
    pub idc: Option<String>,
    pub location: Option<String>,
    /// Period of keepalive messages; well under the manager's instance TTL.
    pub keep_alive_interval: Duration,
}

impl Default for SchedulerConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from((Ipv4Addr::UNSPECIFIED, 8002)),
            max_back_to_source_peers: 2,
            candidate_parent_limit: 4,
            host_ttl: Duration::from_secs(15 * 60),
            peer_ttl: Duration::from_secs(60 * 60),
            schedule_wait: Duration::from_secs(30),
            seed_trigger: true,
            manager: None,
        }
    }
}

/// Why the scheduler stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum SchedulerError {
    #[error("bind scheduler listener on {addr}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("set up the manager client")]
    Manager(#[source] shoal_client::manager::ManagerCallError),
    #[error("serve scheduler gRPC")]
    Serve {
        #[source]
        source: tonic::transport::Error,
    },
}

/// Binds `config.listen` and serves until `cancel` fires.
pub async fn run(config: SchedulerConfig, cancel: CancellationToken) -> Result<(), SchedulerError> {
    let listener =
        TcpListener::bind(config.listen)
            .await
            .map_err(|source| SchedulerError::Bind {
                addr: config.listen,
                source,
            })?;
    serve(listener, config, cancel).await
}

/// Serves on an already bound listener until `cancel` fires.
///
/// Health reports SERVING for `""` and `scheduler.v2.Scheduler` from the start. On
/// cancellation open AnnouncePeer streams end with `CANCELLED`, the server drains, and
/// background work gets [`SHUTDOWN_GRACE`] to stop.
pub async fn serve(
    listener: TcpListener,
    config: SchedulerConfig,
    cancel: CancellationToken,
) -> Result<(), SchedulerError> {
    let local_addr = listener.local_addr().ok();
    let tracker = TaskTracker::new();
    let work_cancel = cancel.child_token();
    let scheduler = setup_scheduler(&config, tracker.clone(), work_cancel.clone());
    state::spawn_gc(
        &tracker,
        scheduler.state.clone(),
        config.host_ttl,
        config.peer_ttl,
        work_cancel.clone(),
    );
    let (health_reporter, health_service) = tonic_health::server::health_reporter();
    health_reporter
        .set_service_status("", ServingStatus::Serving)
        .await;
    health_reporter
        .set_serving::<SchedulerServer<SchedulerService>>()
        .await;
    let scheduler_service = SchedulerServer::new(SchedulerService::new(scheduler))
        .max_decoding_message_size(MAX_GRPC_MESSAGE_BYTES)
        .max_encoding_message_size(MAX_GRPC_MESSAGE_BYTES);
    info!(addr = ?local_addr, "scheduler listening");
    if let (Some(registration), Some(local_addr)) = (&config.manager, local_addr) {
        spawn_registration(&tracker, registration, local_addr, work_cancel.clone())?;
    }
    let shutdown = cancel.clone().cancelled_owned();
    let result = tonic::transport::Server::builder()
        .add_service(health_service)
        .add_service(scheduler_service)
        // Without TCP_NODELAY small answers wait for delayed ACKs (`Server::tcp_nodelay` covers
        // only listeners tonic binds itself).
        .serve_with_incoming_shutdown(
            TcpIncoming::from(listener).with_nodelay(Some(true)),
            shutdown,
        )
        .await
        .map_err(|source| SchedulerError::Serve { source });
    work_cancel.cancel();
    tracker.close();
    if tokio::time::timeout(SHUTDOWN_GRACE, tracker.wait())
        .await
        .is_err()
    {
        warn!("scheduler background tasks did not stop within the grace period");
    }
    info!("scheduler stopped");
    result
}

fn spawn_registration(
    tracker: &TaskTracker,
    registration: &ManagerRegistration,
    local_addr: SocketAddr,
    cancel: CancellationToken,
) -> Result<(), SchedulerError> {
    let manager = shoal_client::manager::ManagerClient::new(&registration.url)
        .map_err(SchedulerError::Manager)?;
    let instance = shoal_client::manager::Registration::Scheduler {
        hostname: registration.hostname.clone(),
        ip: registration.advertise_ip.to_string(),
        port: local_addr.port(),
        cluster_id: registration.cluster_id,
        idc: registration.idc.clone(),
        location: registration.location.clone(),
    };
    tracker.spawn(shoal_client::manager::keep_alive(
        manager,
        instance,
        registration.keep_alive_interval,
        cancel,
    ));
    Ok(())
}

fn setup_scheduler(
    config: &SchedulerConfig,
    tracker: TaskTracker,
    cancel: CancellationToken,
) -> Scheduler {
    Scheduler {
        state: SharedState::default(),
        policy: Policy {
            candidate_parent_limit: config.candidate_parent_limit,
            max_back_to_source_peers: config.max_back_to_source_peers,
            seed_trigger: config.seed_trigger,
        },
        schedule_wait: config.schedule_wait,
        idle_timeout: config.host_ttl,
        tracker,
        cancel,
    }
}
