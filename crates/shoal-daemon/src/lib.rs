//! The shoal daemon: runs on every node, downloads tasks from parents or the origin into its
//! piece store and serves pieces to other peers.
//!
//! Servers (each on the daemon's own IP):
//! - upload gRPC (`dfdaemon.v2.DfdaemonUpload` + health) on `upload_addr` (4000),
//! - Vortex piece server on `vortex_addr` (4005),
//! - Prometheus metrics on `metrics_addr` (4002),
//! - local download API (`dfdaemon.v2.DfdaemonDownload`) on the unix `socket`.
//!
//! ```no_run
//! # async fn example(config: shoal_daemon::DaemonConfig) -> Result<(), shoal_daemon::DaemonError> {
//! let cancel = tokio_util::sync::CancellationToken::new();
//! let daemon = shoal_daemon::start(config, cancel.clone()).await?;
//! println!("upload server on {}", daemon.upload_addr);
//! cancel.cancel();
//! daemon.wait().await;
//! # Ok(()) }
//! ```

mod announcer;
pub mod config;
mod discovery;
mod download;
mod local;
mod metrics;
pub mod proxy;
mod scheduler;
mod stream;
mod tasks;
mod upload;

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use shoal_client::vortex::PieceClient;
use shoal_protocol::dfdaemon::dfdaemon_download_server::DfdaemonDownloadServer;
use shoal_protocol::dfdaemon::dfdaemon_upload_server::DfdaemonUploadServer;
use shoal_storage::{Store, StoreConfig};
use shoal_types::HostId;
use tokio::net::{TcpListener, UnixListener};
use tokio::sync::Semaphore;
use tokio_stream::wrappers::UnixListenerStream;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tonic::transport::server::TcpIncoming;

pub use config::{DaemonConfig, DaemonToml};
pub use download::DownloadError;
pub use metrics::Metrics;

/// Who this daemon is on the wire.
#[derive(Debug, Clone)]
pub(crate) struct HostIdentity {
    pub(crate) host_id: HostId,
    pub(crate) ip: IpAddr,
    pub(crate) hostname: String,
    pub(crate) seed: bool,
}

/// The daemon could not start or stopped on a fault.
#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error("bind {what} on {addr}")]
    Bind {
        what: &'static str,
        addr: String,
        #[source]
        source: std::io::Error,
    },
    #[error("open piece store in {dir}")]
    Store {
        dir: PathBuf,
        #[source]
        source: shoal_storage::StoreError,
    },
    #[error("set up scheduler channels")]
    Scheduler(#[source] shoal_client::channel::ChannelError),
    #[error("set up the manager client")]
    Manager(#[source] shoal_client::manager::ManagerCallError),
    #[error("build http client")]
    Http(#[source] reqwest::Error),
    #[error("another daemon is already serving on socket {0}")]
    SocketInUse(PathBuf),
    #[error("{0} exists and is not a socket; refusing to replace it")]
    NotASocket(PathBuf),
}

/// A started daemon: its bound addresses and a handle to wait for shutdown.
#[derive(Debug)]
pub struct RunningDaemon {
    pub upload_addr: SocketAddr,
    pub vortex_addr: SocketAddr,
    pub metrics_addr: Option<SocketAddr>,
    pub proxy_addr: Option<SocketAddr>,
    pub socket: PathBuf,
    pub metrics: Metrics,
    tracker: TaskTracker,
    store: Store,
}

impl RunningDaemon {
    /// Waits until every server and transfer has stopped (after cancellation).
    pub async fn wait(self) {
        self.tracker.close();
        self.tracker.wait().await;
        // Aborted transfers drop their store handles a moment later; wait so the database is
        // closed when this returns.
        if !self.store.close(Duration::from_secs(10)).await {
            tracing::warn!("piece store still in use after shutdown");
        }
    }
}

/// Starts the daemon and runs it until `cancel` fires.
pub async fn run(config: DaemonConfig, cancel: CancellationToken) -> Result<(), DaemonError> {
    let daemon = start(config, cancel.clone()).await?;
    cancel.cancelled().await;
    tracing::info!("daemon shutting down");
    let _ = tokio::time::timeout(Duration::from_secs(10), daemon.wait()).await;
    Ok(())
}

/// Binds every server and starts the daemon's work; returns once it is serving.
pub async fn start(
    config: DaemonConfig,
    cancel: CancellationToken,
) -> Result<RunningDaemon, DaemonError> {
    let store_dir = config.data_dir.join("store");
    let store = Store::open(StoreConfig {
        dir: store_dir.clone(),
        capacity: config.storage.capacity,
        ttl: config.storage.ttl,
    })
    .await
    .map_err(|source| DaemonError::Store {
        dir: store_dir,
        source,
    })?;
    let upload_listener = bind(config.upload_addr, "upload gRPC server").await?;
    let vortex_listener = bind(config.vortex_addr, "vortex piece server").await?;
    let metrics_listener = match config.metrics_addr {
        Some(addr) => Some(bind(addr, "metrics server").await?),
        None => None,
    };
    let proxy_listener = match config.proxy.listen {
        Some(addr) => Some(bind(addr, "proxy").await?),
        None => None,
    };
    let unix_listener = bind_unix(&config.socket).await?;
    let upload_addr = local_addr(&upload_listener)?;
    let vortex_addr = local_addr(&vortex_listener)?;
    let metrics_addr = metrics_listener.as_ref().map(local_addr).transpose()?;
    let proxy_addr = proxy_listener.as_ref().map(local_addr).transpose()?;

    let host = HostIdentity {
        host_id: HostId::new(&config.ip.to_string(), &config.hostname, config.seed),
        ip: config.ip,
        hostname: config.hostname.clone(),
        seed: config.seed,
    };
    let schedulers =
        scheduler::Schedulers::new(&config.schedulers).map_err(DaemonError::Scheduler)?;
    let metrics = Metrics::new();
    let tasks = tasks::Tasks::new(store.clone());
    let http = with_origin_roots(reqwest::Client::builder(), &config.origin_ca_certs)?
        .connect_timeout(Duration::from_secs(10))
        // An origin that stops sending mid-body fails the request instead of hanging it.
        .read_timeout(config.download.piece_timeout)
        .tcp_nodelay(true)
        .build()
        .map_err(DaemonError::Http)?;
    let engine = download::Engine::new(download::EngineInner {
        config: config.download.clone(),
        tasks: tasks.clone(),
        http,
        pieces: PieceClient::new(),
        schedulers: schedulers.clone(),
        metrics: metrics.clone(),
        host: host.clone(),
    });
    let tracker = TaskTracker::new();
    let announcer = announcer::Announcer {
        schedulers,
        host: host.clone(),
        upload_port: upload_addr.port(),
        idc: config.idc.clone(),
        location: config.location.clone(),
        interval: config.upload.announce_interval,
    };
    // Learn the schedulers before any server runs: requests already queue on the bound
    // listeners and are served with a known scheduler set.
    if let Some(manager) = &config.manager {
        spawn_discovery(&tracker, &cancel, manager, &announcer, upload_addr.port()).await?;
    }

    spawn_upload_server(
        &tracker,
        &cancel,
        upload_listener,
        &engine,
        config.ip,
        vortex_addr.port(),
    );
    spawn_vortex_server(
        &tracker,
        &cancel,
        vortex_listener,
        &tasks,
        &metrics,
        &config,
    );
    if let Some(listener) = proxy_listener {
        let passthrough = with_origin_roots(reqwest::Client::builder(), &config.origin_ca_certs)?
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy()
            .connect_timeout(Duration::from_secs(10))
            .read_timeout(Duration::from_secs(120))
            .build()
            .map_err(DaemonError::Http)?;
        let state = Arc::new(proxy::ProxyState {
            config: config.proxy.clone(),
            engine: engine.clone(),
            tracker: tracker.clone(),
            cancel: cancel.clone(),
            passthrough,
            server_ip: config.ip,
        });
        tracker.spawn(proxy::serve(listener, state));
    }
    spawn_local_server(
        &tracker,
        &cancel,
        unix_listener,
        &engine,
        config.socket.clone(),
    );
    if let Some(listener) = metrics_listener {
        let metrics = metrics.clone();
        let cancel = cancel.clone();
        tracker.spawn(async move {
            if let Err(err) = metrics::serve(listener, metrics, cancel).await {
                tracing::error!(error = %err, "metrics server failed");
            }
        });
    }
    // Announce before serving downloads so the scheduler can offer us as a parent at once.
    if announcer.announce_once().await == 0 {
        tracing::warn!(
            "no scheduler accepted the host announcement yet; retrying in the background"
        );
    }
    tracker.spawn(announcer.run(cancel.clone()));
    spawn_gc(&tracker, &cancel, store.clone(), config.storage.gc_interval);
    tracing::info!(host_id = %host.host_id, %upload_addr, %vortex_addr, socket = %config.socket.display(), seed = config.seed, "daemon started");
    Ok(RunningDaemon {
        upload_addr,
        vortex_addr,
        metrics_addr,
        proxy_addr,
        socket: config.socket,
        metrics,
        tracker,
        store,
    })
}

/// Learns the schedulers from the manager now (best effort) and keeps them fresh; a seed also
/// registers itself.
async fn spawn_discovery(
    tracker: &TaskTracker,
    cancel: &CancellationToken,
    config: &config::ManagerClientConfig,
    announcer: &announcer::Announcer,
    upload_port: u16,
) -> Result<(), DaemonError> {
    let manager =
        shoal_client::manager::ManagerClient::new(&config.url).map_err(DaemonError::Manager)?;
    if announcer.host.seed {
        let registration =
            discovery::seed_registration(announcer, upload_port, config.scheduler_cluster_id);
        tracker.spawn(shoal_client::manager::keep_alive(
            manager.clone(),
            registration,
            config.keep_alive_interval,
            cancel.clone(),
        ));
    }
    let discovery = discovery::Discovery {
        manager,
        requester: shoal_client::manager::Requester {
            hostname: announcer.host.hostname.clone(),
            ip: announcer.host.ip.to_string(),
            idc: announcer.idc.clone(),
            location: announcer.location.clone(),
            seed: announcer.host.seed,
        },
        schedulers: announcer.schedulers.clone(),
        announcer: announcer.clone(),
        interval: config.refresh_interval,
    };
    if let Err(err) = discovery.refresh_once().await {
        tracing::warn!(manager = %config.url, error = %err, "failed to ask the manager for schedulers; retrying in the background");
    }
    tracker.spawn(discovery.run(cancel.clone()));
    Ok(())
}

fn spawn_upload_server(
    tracker: &TaskTracker,
    cancel: &CancellationToken,
    listener: TcpListener,
    engine: &download::Engine,
    ip: IpAddr,
    vortex_port: u16,
) {
    let service = upload::grpc::UploadService {
        engine: engine.clone(),
        tracker: tracker.clone(),
        ip,
        vortex_port,
        cancel: cancel.clone(),
    };
    let cancel = cancel.clone();
    tracker.spawn(async move {
        let (reporter, health) = tonic_health::server::health_reporter();
        reporter
            .set_serving::<DfdaemonUploadServer<upload::grpc::UploadService>>()
            .await;
        reporter
            .set_service_status("", tonic_health::ServingStatus::Serving)
            .await;
        let server = DfdaemonUploadServer::new(service)
            .max_decoding_message_size(shoal_protocol::MAX_GRPC_MESSAGE_BYTES)
            .max_encoding_message_size(shoal_protocol::MAX_GRPC_MESSAGE_BYTES);
        let result = tonic::transport::Server::builder()
            .tcp_nodelay(true)
            .add_service(health)
            .add_service(server)
            .serve_with_incoming_shutdown(
                // `Server::tcp_nodelay` covers only listeners tonic binds itself.
                TcpIncoming::from(listener).with_nodelay(Some(true)),
                cancel.cancelled_owned(),
            )
            .await;
        if let Err(err) = result {
            tracing::error!(error = %err, "upload gRPC server failed");
        }
    });
}

fn spawn_vortex_server(
    tracker: &TaskTracker,
    cancel: &CancellationToken,
    listener: TcpListener,
    tasks: &tasks::Tasks,
    metrics: &Metrics,
    config: &DaemonConfig,
) {
    let server = upload::vortex::PieceServer {
        tasks: tasks.clone(),
        metrics: metrics.clone(),
        slots: Arc::new(Semaphore::new(config.upload.concurrent_pieces)),
        rate: config
            .upload
            .rate_limit
            .map(|rate| Arc::new(upload::limit::RateLimiter::new(rate))),
    };
    tracker.spawn(server.serve(listener, cancel.clone(), tracker.clone()));
}

fn spawn_local_server(
    tracker: &TaskTracker,
    cancel: &CancellationToken,
    listener: UnixListener,
    engine: &download::Engine,
    socket: PathBuf,
) {
    let service = local::LocalService {
        engine: engine.clone(),
        tracker: tracker.clone(),
        cancel: cancel.clone(),
    };
    let cancel = cancel.clone();
    tracker.spawn(async move {
        let server = DfdaemonDownloadServer::new(service)
            .max_decoding_message_size(shoal_protocol::MAX_GRPC_MESSAGE_BYTES)
            .max_encoding_message_size(shoal_protocol::MAX_GRPC_MESSAGE_BYTES);
        let result = tonic::transport::Server::builder()
            .add_service(server)
            .serve_with_incoming_shutdown(
                UnixListenerStream::new(listener),
                cancel.cancelled_owned(),
            )
            .await;
        if let Err(err) = result {
            tracing::error!(error = %err, "local download server failed");
        }
        let _ = std::fs::remove_file(&socket);
    });
}

fn spawn_gc(tracker: &TaskTracker, cancel: &CancellationToken, store: Store, interval: Duration) {
    let cancel = cancel.clone();
    tracker.spawn(async move {
        let mut ticker = tokio::time::interval(interval);
        ticker.tick().await;
        loop {
            tokio::select! {
                biased;
                _ = cancel.cancelled() => return,
                _ = ticker.tick() => match store.gc().await {
                    Ok(report) if !report.removed.is_empty() => {
                        tracing::info!(removed = report.removed.len(), freed_bytes = report.freed_bytes, "garbage collected tasks");
                    }
                    Ok(_) => {}
                    Err(err) => tracing::warn!(error = %err, "failed to collect garbage"),
                },
            }
        }
    });
}

/// Adds the configured extra CA certificates to an origin client.
fn with_origin_roots(
    mut builder: reqwest::ClientBuilder,
    certs: &[Vec<u8>],
) -> Result<reqwest::ClientBuilder, DaemonError> {
    for pem in certs {
        let cert = reqwest::Certificate::from_pem(pem).map_err(DaemonError::Http)?;
        builder = builder.add_root_certificate(cert);
    }
    Ok(builder)
}

async fn bind(addr: SocketAddr, what: &'static str) -> Result<TcpListener, DaemonError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| DaemonError::Bind {
            what,
            addr: addr.to_string(),
            source,
        })
}

fn local_addr(listener: &TcpListener) -> Result<SocketAddr, DaemonError> {
    listener.local_addr().map_err(|source| DaemonError::Bind {
        what: "listener",
        addr: "?".into(),
        source,
    })
}

/// Binds the unix socket, replacing a stale file left by a daemon that died, never a live one.
async fn bind_unix(path: &Path) -> Result<UnixListener, DaemonError> {
    let error = |source| DaemonError::Bind {
        what: "local API socket",
        addr: path.display().to_string(),
        source,
    };
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(error)?;
    }
    if let Ok(metadata) = std::fs::symlink_metadata(path) {
        use std::os::unix::fs::FileTypeExt as _;
        if !metadata.file_type().is_socket() {
            return Err(DaemonError::NotASocket(path.to_path_buf()));
        }
        if tokio::net::UnixStream::connect(path).await.is_ok() {
            return Err(DaemonError::SocketInUse(path.to_path_buf()));
        }
        std::fs::remove_file(path).map_err(error)?;
    }
    UnixListener::bind(path).map_err(error)
}
