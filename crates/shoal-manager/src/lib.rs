//! The manager role: cluster registry, scheduler discovery, preheat jobs and the REST API.
//!
//! Serves `manager.v2.Manager` (plus `grpc.health.v1.Health`) over h2c, for schedulers and seed
//! daemons that register and keep a lease alive, and for daemons that discover their schedulers;
//! and a REST API (`/api/v1`, and `/oapi/v1/jobs` in the shape Harbor's Dragonfly preheat
//! provider calls) behind personal access tokens. All durable state is in one SQL database
//! (SQLite in the data dir by default, PostgreSQL for several replicas), so any replica gives
//! the same answers and a job survives the manager that started it.
//!
//! ```no_run
//! # async fn example() -> Result<(), shoal_manager::ManagerError> {
//! let cancel = tokio_util::sync::CancellationToken::new();
//! let config = shoal_manager::ManagerConfig::new("/var/lib/shoal/manager".into());
//! shoal_manager::run(config, cancel).await
//! # }
//! ```
//!
//! Modules: `db` is the storage layer (one code path over both backends); `service` holds the
//! domain operations both adapters share (registration, cluster choice, jobs); `grpc` and
//! `rest` adapt tonic and axum to it; `auth` issues and checks tokens; `seal` encrypts registry
//! credentials of jobs at rest; `jobs` runs preheat jobs on a lease-based queue.

mod auth;
mod db;
mod grpc;
mod jobs;
mod rest;
mod scope;
mod seal;
mod service;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::info;

pub use crate::db::DbError;
use crate::service::ManagerService;

/// How long shutdown waits for jobs and servers to stop after cancellation.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// Validated manager settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ManagerConfig {
    /// Holds the SQLite file (when `database` is None) and the credential-sealing key file.
    pub data_dir: PathBuf,
    /// `postgres://...` or `sqlite://...`; None: `sqlite://DATA_DIR/manager.db`.
    pub database: Option<String>,
    /// REST listen address; default `0.0.0.0:8080`.
    pub rest_listen: SocketAddr,
    /// gRPC listen address; default `0.0.0.0:65003`.
    pub grpc_listen: SocketAddr,
    /// A scheduler or seed peer not heard from within this is inactive; default 30 s.
    pub instance_ttl: Duration,
    /// A running job whose owner stopped renewing for this long is taken over; default 30 s.
    pub job_lease: Duration,
    /// Jobs this manager runs at once; default 2.
    pub job_workers: usize,
    /// The first admin token, used instead of a random one when no token exists yet.
    pub bootstrap_token: Option<String>,
    /// Key sealing job credentials; None: read or create `DATA_DIR/secret.key`.
    pub secret_key: Option<[u8; 32]>,
}

impl ManagerConfig {
    /// Defaults with `data_dir`.
    pub fn new(data_dir: PathBuf) -> Self {
        Self {
            data_dir,
            database: None,
            rest_listen: SocketAddr::from(([0, 0, 0, 0], 8080)),
            grpc_listen: SocketAddr::from(([0, 0, 0, 0], 65003)),
            instance_ttl: Duration::from_secs(30),
            job_lease: Duration::from_secs(30),
            job_workers: 2,
            bootstrap_token: None,
            secret_key: None,
        }
    }

    fn database_url(&self) -> String {
        self.database
            .clone()
            .unwrap_or_else(|| format!("sqlite://{}", self.data_dir.join("manager.db").display()))
    }
}

/// The manager failed to start or to serve.
#[derive(Debug, thiserror::Error)]
pub enum ManagerError {
    #[error("create data dir {path}")]
    DataDir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("open the manager database")]
    Database(#[source] DbError),
    #[error("load the credential-sealing key")]
    SecretKey(#[source] seal::SealError),
    #[error("create the first admin token")]
    Bootstrap(#[source] DbError),
    #[error("bind {what} on {addr}")]
    Bind {
        what: &'static str,
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("serve gRPC")]
    Grpc(#[source] tonic::transport::Error),
    #[error("serve REST")]
    Rest(#[source] std::io::Error),
}

/// A started manager: its bound addresses and its servers running in the background.
#[derive(Debug)]
pub struct Manager {
    grpc_addr: SocketAddr,
    rest_addr: SocketAddr,
    created_root_token: Option<String>,
    tracker: TaskTracker,
    servers: tokio::task::JoinSet<Result<(), ManagerError>>,
    cancel: CancellationToken,
    db: db::Db,
}

impl Manager {
    /// The bound gRPC address (`manager.v2.Manager`).
    pub fn grpc_addr(&self) -> SocketAddr {
        self.grpc_addr
    }

    /// The bound REST address.
    pub fn rest_addr(&self) -> SocketAddr {
        self.rest_addr
    }

    /// The admin token created by this start (the database had none), to show once; None when
    /// tokens existed or the token came from `bootstrap_token`.
    pub fn created_root_token(&self) -> Option<&str> {
        self.created_root_token.as_deref()
    }

    /// Waits until both servers stop (after cancellation) and the job workers wind down.
    pub async fn wait(mut self) -> Result<(), ManagerError> {
        let mut result = Ok(());
        while let Some(joined) = self.servers.join_next().await {
            match joined {
                Ok(Ok(())) => {}
                Ok(Err(err)) => {
                    // One server failed: stop the other and report the first failure.
                    self.cancel.cancel();
                    if result.is_ok() {
                        result = Err(err);
                    }
                }
                Err(join) => {
                    tracing::warn!(error = %join, "manager server task ended abnormally");
                    self.cancel.cancel();
                }
            }
        }
        self.tracker.close();
        if tokio::time::timeout(SHUTDOWN_GRACE, self.tracker.wait())
            .await
            .is_err()
        {
            tracing::warn!("manager jobs did not stop within the grace period");
        }
        self.db.close().await;
        result
    }
}

/// Opens the database, binds both listeners, starts the job workers and returns at once.
pub async fn start(
    config: ManagerConfig,
    cancel: CancellationToken,
) -> Result<Manager, ManagerError> {
    std::fs::create_dir_all(&config.data_dir).map_err(|source| ManagerError::DataDir {
        path: config.data_dir.clone(),
        source,
    })?;
    let db = db::Db::open(&config.database_url())
        .await
        .map_err(ManagerError::Database)?;
    let sealer = match config.secret_key {
        Some(key) => seal::Sealer::new(key),
        None => seal::Sealer::from_key_file(&config.data_dir.join("secret.key"))
            .map_err(ManagerError::SecretKey)?,
    };
    let created_root_token = auth::bootstrap(&db, config.bootstrap_token.as_deref())
        .await
        .map_err(ManagerError::Bootstrap)?;
    let service = ManagerService::new(db.clone(), sealer, &config);

    let grpc_listener = bind("gRPC", config.grpc_listen).await?;
    let rest_listener = bind("REST", config.rest_listen).await?;
    let grpc_addr = local_addr("gRPC", &grpc_listener, config.grpc_listen)?;
    let rest_addr = local_addr("REST", &rest_listener, config.rest_listen)?;

    let tracker = TaskTracker::new();
    jobs::spawn_workers(
        &tracker,
        service.clone(),
        config.job_workers,
        cancel.child_token(),
    );
    let mut servers = tokio::task::JoinSet::new();
    servers.spawn(grpc::serve(grpc_listener, service.clone(), cancel.clone()));
    servers.spawn(rest::serve(rest_listener, service, cancel.clone()));
    info!(grpc = %grpc_addr, rest = %rest_addr, "manager listening");
    Ok(Manager {
        grpc_addr,
        rest_addr,
        created_root_token,
        tracker,
        servers,
        cancel,
        db,
    })
}

/// Runs the manager until `cancel` fires; prints a newly created admin token once.
pub async fn run(config: ManagerConfig, cancel: CancellationToken) -> Result<(), ManagerError> {
    let manager = start(config, cancel).await?;
    if let Some(token) = manager.created_root_token() {
        // Stdout, not the log: the token must not end up in log collectors.
        println!("admin token (shown once; store it now): {token}");
    }
    manager.wait().await
}

async fn bind(what: &'static str, addr: SocketAddr) -> Result<TcpListener, ManagerError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| ManagerError::Bind { what, addr, source })
}

fn local_addr(
    what: &'static str,
    listener: &TcpListener,
    addr: SocketAddr,
) -> Result<SocketAddr, ManagerError> {
    listener
        .local_addr()
        .map_err(|source| ManagerError::Bind { what, addr, source })
}
