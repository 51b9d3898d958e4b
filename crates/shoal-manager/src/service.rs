//! The manager's domain operations, shared by the gRPC and REST adapters.
//!
//! [`ManagerService`] is a cheap-to-clone handle over the database: every piece of state lives
//! there (nothing is cached in memory), so several replicas over one PostgreSQL database answer
//! alike. Liveness is `last_seen` within `instance_ttl`; cluster id 0 in a registration means
//! "the default cluster".

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use shoal_protocol::ErrorCode;

use crate::db::{now_ms, Cluster, Db, DbError, Instance, InstanceKind, InstanceUpdate};
use crate::scope::{self, Client};
use crate::seal::Sealer;
use crate::ManagerConfig;

/// A manager operation failed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ServiceError {
    #[error("{0}")]
    Db(#[from] DbError),
    #[error("invalid request: {0}")]
    Invalid(String),
    #[error("{what} is not registered")]
    NotRegistered { what: &'static str },
    #[error("no default scheduler cluster exists")]
    NoDefaultCluster,
    #[error("seal credentials")]
    Seal(#[source] crate::seal::SealError),
}

impl ServiceError {
    pub(crate) fn code(&self) -> ErrorCode {
        match self {
            Self::Db(DbError::NotFound { .. }) | Self::NotRegistered { .. } => ErrorCode::NotFound,
            Self::Db(DbError::Conflict { .. }) => ErrorCode::FailedPrecondition,
            Self::Db(_) | Self::Seal(_) => ErrorCode::Internal,
            Self::Invalid(_) => ErrorCode::InvalidArgument,
            Self::NoDefaultCluster => ErrorCode::FailedPrecondition,
        }
    }
}

/// Shared handle on the manager's state; cheap to clone.
#[derive(Debug, Clone)]
pub(crate) struct ManagerService {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    db: Db,
    sealer: Sealer,
    instance_ttl: Duration,
    job_lease: Duration,
    /// This replica's name in job leases.
    owner: String,
}

/// The schedulers handed to one client.
#[derive(Debug, Clone)]
pub(crate) struct Discovery {
    pub(crate) cluster: Cluster,
    pub(crate) schedulers: Vec<Instance>,
    pub(crate) seed_peers: Vec<Instance>,
}

impl ManagerService {
    pub(crate) fn new(db: Db, sealer: Sealer, config: &ManagerConfig) -> Self {
        let owner = format!(
            "{}-{}-{:08x}",
            std::env::var("HOSTNAME").unwrap_or_else(|_| "manager".to_string()),
            std::process::id(),
            rand::random::<u32>()
        );
        Self {
            inner: Arc::new(Inner {
                db,
                sealer,
                instance_ttl: config.instance_ttl,
                job_lease: config.job_lease,
                owner,
            }),
        }
    }

    pub(crate) fn db(&self) -> &Db {
        &self.inner.db
    }

    pub(crate) fn sealer(&self) -> &Sealer {
        &self.inner.sealer
    }

    pub(crate) fn job_lease(&self) -> Duration {
        self.inner.job_lease
    }

    pub(crate) fn owner(&self) -> &str {
        &self.inner.owner
    }

    pub(crate) fn ttl_ms(&self) -> i64 {
        i64::try_from(self.inner.instance_ttl.as_millis()).unwrap_or(i64::MAX)
    }

    /// The cluster id a registration names: 0 means the default cluster; others must exist.
    pub(crate) async fn resolve_cluster(&self, cluster_id: u64) -> Result<i64, ServiceError> {
        if cluster_id == 0 {
            return self.default_cluster_id().await;
        }
        let id = i64::try_from(cluster_id)
            .map_err(|_| ServiceError::Invalid(format!("cluster id {cluster_id} is too large")))?;
        if !self.db().cluster_exists(id).await? {
            return Err(ServiceError::Invalid(format!(
                "scheduler cluster {cluster_id} does not exist"
            )));
        }
        Ok(id)
    }

    async fn default_cluster_id(&self) -> Result<i64, ServiceError> {
        self.db()
            .list_clusters()
            .await?
            .into_iter()
            .find(|cluster| cluster.is_default)
            .map(|cluster| cluster.id)
            .ok_or(ServiceError::NoDefaultCluster)
    }

    /// Registers (or refreshes) a scheduler or seed peer.
    pub(crate) async fn register(
        &self,
        kind: InstanceKind,
        mut update: InstanceUpdate,
        cluster_id: u64,
    ) -> Result<Instance, ServiceError> {
        if update.hostname.is_empty() {
            return Err(ServiceError::Invalid("hostname is empty".into()));
        }
        if update.ip.parse::<IpAddr>().is_err() {
            return Err(ServiceError::Invalid(format!(
                "ip {:?} is not an IP address",
                update.ip
            )));
        }
        if !(1..=65535).contains(&update.port) {
            return Err(ServiceError::Invalid(format!(
                "port {} is out of range",
                update.port
            )));
        }
        update.cluster_id = self.resolve_cluster(cluster_id).await?;
        Ok(self.db().upsert_instance(kind, &update, now_ms()).await?)
    }

    /// Renews the lease of a registered instance.
    pub(crate) async fn keep_alive(
        &self,
        kind: InstanceKind,
        hostname: &str,
        ip: &str,
        cluster_id: i64,
    ) -> Result<(), ServiceError> {
        if self
            .db()
            .mark_seen(kind, hostname, ip, cluster_id, now_ms())
            .await?
        {
            Ok(())
        } else {
            Err(ServiceError::NotRegistered {
                what: kind_name(kind),
            })
        }
    }

    /// Marks an instance inactive at once (its keepalive stream ended).
    pub(crate) async fn leave(
        &self,
        kind: InstanceKind,
        hostname: &str,
        ip: &str,
        cluster_id: i64,
    ) -> Result<(), ServiceError> {
        self.db()
            .mark_inactive(kind, hostname, ip, cluster_id)
            .await?;
        Ok(())
    }

    /// One registered instance; `cluster_id` 0 searches the default cluster.
    pub(crate) async fn find(
        &self,
        kind: InstanceKind,
        hostname: &str,
        ip: &str,
        cluster_id: u64,
    ) -> Result<Instance, ServiceError> {
        let cluster_id = self.resolve_cluster(cluster_id).await?;
        self.db()
            .find_instance(kind, hostname, ip, cluster_id)
            .await?
            .ok_or(ServiceError::NotRegistered {
                what: kind_name(kind),
            })
    }

    /// The best-matching cluster that has an active scheduler, with its active schedulers and
    /// seed peers; an empty discovery of the default cluster when no scheduler is active.
    pub(crate) async fn discover(&self, client: &Client<'_>) -> Result<Discovery, ServiceError> {
        let clusters = self.db().list_clusters().await?;
        let now = now_ms();
        let ranked = scope::rank(&clusters, client);
        for id in &ranked {
            let schedulers = self
                .db()
                .list_active(InstanceKind::Scheduler, *id, now, self.ttl_ms())
                .await?;
            if schedulers.is_empty() {
                continue;
            }
            let seed_peers = self
                .db()
                .list_active(InstanceKind::SeedPeer, *id, now, self.ttl_ms())
                .await?;
            let cluster = clusters
                .iter()
                .find(|cluster| cluster.id == *id)
                .cloned()
                .ok_or(DbError::NotFound {
                    what: "cluster",
                    id: *id,
                })?;
            return Ok(Discovery {
                cluster,
                schedulers,
                seed_peers,
            });
        }
        let cluster = clusters
            .into_iter()
            .find(|cluster| cluster.is_default)
            .ok_or(ServiceError::NoDefaultCluster)?;
        Ok(Discovery {
            cluster,
            schedulers: Vec::new(),
            seed_peers: Vec::new(),
        })
    }

    /// Active seed peers in `cluster_ids` (every cluster when empty), by id.
    pub(crate) async fn active_seed_peers(
        &self,
        cluster_ids: &[i64],
    ) -> Result<Vec<Instance>, ServiceError> {
        let now = now_ms();
        let all = self
            .db()
            .list_instances(InstanceKind::SeedPeer, None)
            .await?;
        Ok(all
            .into_iter()
            .filter(|seed| seed.is_active(now, self.ttl_ms()))
            .filter(|seed| cluster_ids.is_empty() || cluster_ids.contains(&seed.cluster_id))
            .collect())
    }
}

fn kind_name(kind: InstanceKind) -> &'static str {
    match kind {
        InstanceKind::Scheduler => "scheduler",
        InstanceKind::SeedPeer => "seed peer",
    }
}

/// `err` and its sources, joined by `: `, for answers that leave the process (REST bodies, job
/// errors) where `{:#}` formatting is not available.
pub(crate) fn error_chain(err: &dyn std::error::Error) -> String {
    let mut message = err.to_string();
    let mut source = err.source();
    while let Some(next) = source {
        message.push_str(": ");
        message.push_str(&next.to_string());
        source = next.source();
    }
    message
}
