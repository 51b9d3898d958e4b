//! Scheduler and seed-peer registrations and their liveness lease.
//!
//! An instance is identified by (hostname, ip, cluster). Every UpdateX or KeepAlive message
//! stores `last_seen_ms`; an instance is active while `state = 'active'` and it was seen within
//! the caller's TTL. Both are stored, not held in memory, so manager replicas agree.

use serde::Serialize;
use sqlx::any::AnyRow;

use super::{col, query_err, Db, DbError};

/// Which table an instance lives in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum InstanceKind {
    Scheduler,
    SeedPeer,
}

impl InstanceKind {
    fn table(self) -> &'static str {
        match self {
            Self::Scheduler => "schedulers",
            Self::SeedPeer => "seed_peers",
        }
    }

    fn columns(self) -> &'static str {
        match self {
            Self::Scheduler => {
                "id, hostname, ip, port, idc, location, cluster_id, state, last_seen_ms, features"
            }
            Self::SeedPeer => {
                "id, hostname, ip, port, download_port, type, idc, location, cluster_id, state, \
                 last_seen_ms"
            }
        }
    }
}

/// A registered scheduler or seed peer.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub(crate) struct Instance {
    pub(crate) id: i64,
    pub(crate) hostname: String,
    pub(crate) ip: String,
    pub(crate) port: i64,
    /// Seed peers only; 0 for schedulers.
    pub(crate) download_port: i64,
    /// Seed peers only (`super`, `strong`, `weak`); empty for schedulers.
    #[serde(rename = "type")]
    pub(crate) peer_type: String,
    pub(crate) idc: String,
    pub(crate) location: String,
    pub(crate) cluster_id: i64,
    /// The stored state; callers combine it with the lease through [`Instance::is_active`].
    #[serde(skip)]
    pub(crate) stored_state: String,
    pub(crate) last_seen_ms: i64,
    /// Schedulers only: JSON list of feature names.
    #[serde(skip)]
    pub(crate) features: String,
}

impl Instance {
    /// Whether the instance reported within `ttl_ms` before `now_ms` and has not left.
    pub(crate) fn is_active(&self, now_ms: i64, ttl_ms: i64) -> bool {
        self.stored_state == "active" && self.last_seen_ms.saturating_add(ttl_ms) >= now_ms
    }

    /// `active` or `inactive` at `now_ms`.
    pub(crate) fn state(&self, now_ms: i64, ttl_ms: i64) -> &'static str {
        if self.is_active(now_ms, ttl_ms) {
            "active"
        } else {
            "inactive"
        }
    }
}

/// What an UpdateScheduler or UpdateSeedPeer call reports.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct InstanceUpdate {
    pub(crate) hostname: String,
    pub(crate) ip: String,
    pub(crate) port: i64,
    pub(crate) download_port: i64,
    pub(crate) peer_type: String,
    pub(crate) idc: String,
    pub(crate) location: String,
    pub(crate) cluster_id: i64,
    /// JSON list of feature names (schedulers).
    pub(crate) features: String,
}

fn from_row(kind: InstanceKind, row: &AnyRow) -> Result<Instance, DbError> {
    let (download_port, peer_type, features) = match kind {
        InstanceKind::Scheduler => (0, String::new(), col(row, "features")?),
        InstanceKind::SeedPeer => (
            col(row, "download_port")?,
            col(row, "type")?,
            "[]".to_string(),
        ),
    };
    Ok(Instance {
        id: col(row, "id")?,
        hostname: col(row, "hostname")?,
        ip: col(row, "ip")?,
        port: col(row, "port")?,
        download_port,
        peer_type,
        idc: col(row, "idc")?,
        location: col(row, "location")?,
        cluster_id: col(row, "cluster_id")?,
        stored_state: col(row, "state")?,
        last_seen_ms: col(row, "last_seen_ms")?,
        features,
    })
}

impl Db {
    /// Inserts or updates the instance keyed by (hostname, ip, cluster) and marks it seen.
    pub(crate) async fn upsert_instance(
        &self,
        kind: InstanceKind,
        update: &InstanceUpdate,
        now_ms: i64,
    ) -> Result<Instance, DbError> {
        let columns = kind.columns();
        let query = match kind {
            InstanceKind::Scheduler => format!(
                "INSERT INTO schedulers (hostname, ip, port, idc, location, cluster_id, state, \
                 last_seen_ms, features, created_ms, updated_ms) \
                 VALUES ($1, $2, $3, $4, $5, $6, 'active', $7, $8, $7, $7) \
                 ON CONFLICT (hostname, ip, cluster_id) DO UPDATE SET port = excluded.port, \
                 idc = excluded.idc, location = excluded.location, state = 'active', \
                 last_seen_ms = excluded.last_seen_ms, features = excluded.features, \
                 updated_ms = excluded.updated_ms RETURNING {columns}"
            ),
            InstanceKind::SeedPeer => format!(
                "INSERT INTO seed_peers (hostname, ip, port, idc, location, cluster_id, state, \
                 last_seen_ms, type, download_port, created_ms, updated_ms) \
                 VALUES ($1, $2, $3, $4, $5, $6, 'active', $7, $8, $9, $7, $7) \
                 ON CONFLICT (hostname, ip, cluster_id) DO UPDATE SET port = excluded.port, \
                 idc = excluded.idc, location = excluded.location, state = 'active', \
                 last_seen_ms = excluded.last_seen_ms, type = excluded.type, \
                 download_port = excluded.download_port, updated_ms = excluded.updated_ms \
                 RETURNING {columns}"
            ),
        };
        let mut query = sqlx::query(&query)
            .bind(update.hostname.clone())
            .bind(update.ip.clone())
            .bind(update.port)
            .bind(update.idc.clone())
            .bind(update.location.clone())
            .bind(update.cluster_id)
            .bind(now_ms);
        query = match kind {
            InstanceKind::Scheduler => query.bind(update.features.clone()),
            InstanceKind::SeedPeer => query
                .bind(update.peer_type.clone())
                .bind(update.download_port),
        };
        let row = query
            .fetch_one(self.pool())
            .await
            .map_err(query_err("register an instance"))?;
        from_row(kind, &row)
    }

    /// The instance (hostname, ip, cluster); an empty `ip` matches any address of that host.
    pub(crate) async fn find_instance(
        &self,
        kind: InstanceKind,
        hostname: &str,
        ip: &str,
        cluster_id: i64,
    ) -> Result<Option<Instance>, DbError> {
        let row = sqlx::query(&format!(
            "SELECT {} FROM {} WHERE hostname = $1 AND (ip = $2 OR $2 = '') AND cluster_id = $3 \
             ORDER BY last_seen_ms DESC LIMIT 1",
            kind.columns(),
            kind.table()
        ))
        .bind(hostname.to_string())
        .bind(ip.to_string())
        .bind(cluster_id)
        .fetch_optional(self.pool())
        .await
        .map_err(query_err("read an instance"))?;
        row.map(|row| from_row(kind, &row)).transpose()
    }

    /// Every instance of `kind`, in `cluster_id` when given, by id.
    pub(crate) async fn list_instances(
        &self,
        kind: InstanceKind,
        cluster_id: Option<i64>,
    ) -> Result<Vec<Instance>, DbError> {
        let rows = sqlx::query(&format!(
            "SELECT {} FROM {} WHERE cluster_id = $1 OR $1 = 0 ORDER BY id",
            kind.columns(),
            kind.table()
        ))
        .bind(cluster_id.unwrap_or(0))
        .fetch_all(self.pool())
        .await
        .map_err(query_err("list instances"))?;
        rows.iter().map(|row| from_row(kind, row)).collect()
    }

    /// Active instances of `kind` in `cluster_id` at `now_ms`, by id.
    pub(crate) async fn list_active(
        &self,
        kind: InstanceKind,
        cluster_id: i64,
        now_ms: i64,
        ttl_ms: i64,
    ) -> Result<Vec<Instance>, DbError> {
        let rows = sqlx::query(&format!(
            "SELECT {} FROM {} WHERE cluster_id = $1 AND state = 'active' AND last_seen_ms >= $2 \
             ORDER BY id",
            kind.columns(),
            kind.table()
        ))
        .bind(cluster_id)
        .bind(now_ms.saturating_sub(ttl_ms))
        .fetch_all(self.pool())
        .await
        .map_err(query_err("list active instances"))?;
        rows.iter().map(|row| from_row(kind, row)).collect()
    }

    /// Renews the lease of (hostname, ip, cluster); false when no such instance is registered.
    pub(crate) async fn mark_seen(
        &self,
        kind: InstanceKind,
        hostname: &str,
        ip: &str,
        cluster_id: i64,
        now_ms: i64,
    ) -> Result<bool, DbError> {
        self.set_state(kind, hostname, ip, cluster_id, "active", Some(now_ms))
            .await
    }

    /// Marks (hostname, ip, cluster) inactive at once (its KeepAlive stream ended).
    pub(crate) async fn mark_inactive(
        &self,
        kind: InstanceKind,
        hostname: &str,
        ip: &str,
        cluster_id: i64,
    ) -> Result<bool, DbError> {
        self.set_state(kind, hostname, ip, cluster_id, "inactive", None)
            .await
    }

    async fn set_state(
        &self,
        kind: InstanceKind,
        hostname: &str,
        ip: &str,
        cluster_id: i64,
        state: &'static str,
        seen_ms: Option<i64>,
    ) -> Result<bool, DbError> {
        let done = sqlx::query(&format!(
            "UPDATE {} SET state = $1, last_seen_ms = CASE WHEN $2 > 0 THEN $2 ELSE last_seen_ms \
             END WHERE hostname = $3 AND (ip = $4 OR $4 = '') AND cluster_id = $5",
            kind.table()
        ))
        .bind(state)
        .bind(seen_ms.unwrap_or(0))
        .bind(hostname.to_string())
        .bind(ip.to_string())
        .bind(cluster_id)
        .execute(self.pool())
        .await
        .map_err(query_err("update an instance's liveness"))?;
        Ok(done.rows_affected() > 0)
    }

    /// Removes (hostname, ip, cluster); false when it was not registered.
    pub(crate) async fn delete_instance(
        &self,
        kind: InstanceKind,
        hostname: &str,
        ip: &str,
        cluster_id: i64,
    ) -> Result<bool, DbError> {
        let done = sqlx::query(&format!(
            "DELETE FROM {} WHERE hostname = $1 AND (ip = $2 OR $2 = '') AND cluster_id = $3",
            kind.table()
        ))
        .bind(hostname.to_string())
        .bind(ip.to_string())
        .bind(cluster_id)
        .execute(self.pool())
        .await
        .map_err(query_err("delete an instance"))?;
        Ok(done.rows_affected() > 0)
    }
}
