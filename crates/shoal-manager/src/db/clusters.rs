//! Scheduler clusters: named groups of schedulers and seed peers with the scopes that route
//! clients to them and the JSON policies handed to clients.

use serde::{Deserialize, Serialize};
use sqlx::any::AnyRow;

use super::{col, query_err, Db, DbError};

/// Which clients a cluster serves. Every field is optional; an empty scope matches nobody by
/// itself (the default cluster still catches unmatched clients).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub(crate) struct Scopes {
    /// IDC name compared case-insensitively with the client's.
    pub(crate) idc: String,
    /// Location prefix, `|`-separated levels (`country|province|city`).
    pub(crate) location: String,
    /// Networks in CIDR form (`10.0.0.0/8`, `fd00::/8`).
    pub(crate) cidrs: Vec<String>,
    /// Regular expressions matched against the client's hostname.
    pub(crate) hostnames: Vec<String>,
}

/// A scheduler cluster as stored.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub(crate) struct Cluster {
    pub(crate) id: i64,
    pub(crate) name: String,
    pub(crate) bio: String,
    pub(crate) scopes: Scopes,
    pub(crate) config: serde_json::Value,
    pub(crate) client_config: serde_json::Value,
    pub(crate) seed_client_config: serde_json::Value,
    pub(crate) is_default: bool,
    pub(crate) created_ms: i64,
    pub(crate) updated_ms: i64,
}

/// Fields of a cluster to create.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct NewCluster {
    pub(crate) name: String,
    #[serde(default)]
    pub(crate) bio: String,
    #[serde(default)]
    pub(crate) scopes: Scopes,
    #[serde(default)]
    pub(crate) config: Option<serde_json::Value>,
    #[serde(default)]
    pub(crate) client_config: Option<serde_json::Value>,
    #[serde(default)]
    pub(crate) seed_client_config: Option<serde_json::Value>,
    #[serde(default)]
    pub(crate) is_default: bool,
}

/// Fields of a cluster to change; absent fields keep their value.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ClusterPatch {
    pub(crate) name: Option<String>,
    pub(crate) bio: Option<String>,
    pub(crate) scopes: Option<Scopes>,
    pub(crate) config: Option<serde_json::Value>,
    pub(crate) client_config: Option<serde_json::Value>,
    pub(crate) seed_client_config: Option<serde_json::Value>,
    pub(crate) is_default: Option<bool>,
}

const COLUMNS: &str = "id, name, bio, scopes, config, client_config, seed_client_config, \
                       is_default, created_ms, updated_ms";

fn json_col(row: &AnyRow, column: &'static str) -> Result<serde_json::Value, DbError> {
    let text: String = col(row, column)?;
    serde_json::from_str(&text).map_err(|source| DbError::Corrupt {
        table: "scheduler_clusters",
        column,
        source,
    })
}

fn from_row(row: &AnyRow) -> Result<Cluster, DbError> {
    let scopes: String = col(row, "scopes")?;
    Ok(Cluster {
        id: col(row, "id")?,
        name: col(row, "name")?,
        bio: col(row, "bio")?,
        scopes: serde_json::from_str(&scopes).map_err(|source| DbError::Corrupt {
            table: "scheduler_clusters",
            column: "scopes",
            source,
        })?,
        config: json_col(row, "config")?,
        client_config: json_col(row, "client_config")?,
        seed_client_config: json_col(row, "seed_client_config")?,
        is_default: col::<i64>(row, "is_default")? != 0,
        created_ms: col(row, "created_ms")?,
        updated_ms: col(row, "updated_ms")?,
    })
}

fn to_json(value: &Option<serde_json::Value>) -> String {
    value
        .as_ref()
        .map_or_else(|| "{}".to_string(), serde_json::Value::to_string)
}

fn scopes_json(scopes: &Scopes) -> String {
    serde_json::to_string(scopes).unwrap_or_else(|_| "{}".to_string())
}

impl Db {
    /// All clusters, by id.
    pub(crate) async fn list_clusters(&self) -> Result<Vec<Cluster>, DbError> {
        let rows = sqlx::query(&format!(
            "SELECT {COLUMNS} FROM scheduler_clusters ORDER BY id"
        ))
        .fetch_all(self.pool())
        .await
        .map_err(query_err("list scheduler clusters"))?;
        rows.iter().map(from_row).collect()
    }

    /// The cluster `id`.
    pub(crate) async fn get_cluster(&self, id: i64) -> Result<Cluster, DbError> {
        let row = sqlx::query(&format!(
            "SELECT {COLUMNS} FROM scheduler_clusters WHERE id = $1"
        ))
        .bind(id)
        .fetch_optional(self.pool())
        .await
        .map_err(query_err("read a scheduler cluster"))?
        .ok_or(DbError::NotFound {
            what: "scheduler cluster",
            id,
        })?;
        from_row(&row)
    }

    /// Whether cluster `id` exists.
    pub(crate) async fn cluster_exists(&self, id: i64) -> Result<bool, DbError> {
        match self.get_cluster(id).await {
            Ok(_) => Ok(true),
            Err(DbError::NotFound { .. }) => Ok(false),
            Err(err) => Err(err),
        }
    }

    /// Creates a cluster; a duplicate name is a conflict.
    pub(crate) async fn create_cluster(
        &self,
        new: &NewCluster,
        now_ms: i64,
    ) -> Result<Cluster, DbError> {
        let exists = sqlx::query("SELECT id FROM scheduler_clusters WHERE name = $1")
            .bind(new.name.clone())
            .fetch_optional(self.pool())
            .await
            .map_err(query_err("look up a scheduler cluster by name"))?;
        if exists.is_some() {
            return Err(DbError::Conflict {
                what: "scheduler cluster with this name",
            });
        }
        let row = sqlx::query(&format!(
            "INSERT INTO scheduler_clusters (name, bio, scopes, config, client_config, \
             seed_client_config, is_default, created_ms, updated_ms) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $8) RETURNING {COLUMNS}"
        ))
        .bind(new.name.clone())
        .bind(new.bio.clone())
        .bind(scopes_json(&new.scopes))
        .bind(to_json(&new.config))
        .bind(to_json(&new.client_config))
        .bind(to_json(&new.seed_client_config))
        .bind(i64::from(new.is_default))
        .bind(now_ms)
        .fetch_one(self.pool())
        .await
        .map_err(query_err("create a scheduler cluster"))?;
        let cluster = from_row(&row)?;
        if cluster.is_default {
            self.make_only_default(cluster.id).await?;
        }
        Ok(cluster)
    }

    /// Applies `patch` to cluster `id`.
    pub(crate) async fn update_cluster(
        &self,
        id: i64,
        patch: &ClusterPatch,
        now_ms: i64,
    ) -> Result<Cluster, DbError> {
        let mut cluster = self.get_cluster(id).await?;
        if let Some(name) = &patch.name {
            cluster.name.clone_from(name);
        }
        if let Some(bio) = &patch.bio {
            cluster.bio.clone_from(bio);
        }
        if let Some(scopes) = &patch.scopes {
            cluster.scopes = scopes.clone();
        }
        for (field, value) in [
            (&mut cluster.config, &patch.config),
            (&mut cluster.client_config, &patch.client_config),
            (&mut cluster.seed_client_config, &patch.seed_client_config),
        ] {
            if let Some(value) = value {
                *field = value.clone();
            }
        }
        let make_default = patch.is_default == Some(true) && !cluster.is_default;
        if let Some(is_default) = patch.is_default {
            cluster.is_default = is_default;
        }
        sqlx::query(
            "UPDATE scheduler_clusters SET name = $1, bio = $2, scopes = $3, config = $4, \
             client_config = $5, seed_client_config = $6, is_default = $7, updated_ms = $8 \
             WHERE id = $9",
        )
        .bind(cluster.name.clone())
        .bind(cluster.bio.clone())
        .bind(scopes_json(&cluster.scopes))
        .bind(cluster.config.to_string())
        .bind(cluster.client_config.to_string())
        .bind(cluster.seed_client_config.to_string())
        .bind(i64::from(cluster.is_default))
        .bind(now_ms)
        .bind(id)
        .execute(self.pool())
        .await
        .map_err(query_err("update a scheduler cluster"))?;
        if make_default {
            self.make_only_default(id).await?;
        }
        self.get_cluster(id).await
    }

    /// Deletes cluster `id` with its scheduler and seed-peer registrations.
    pub(crate) async fn delete_cluster(&self, id: i64) -> Result<(), DbError> {
        let deleted = sqlx::query("DELETE FROM scheduler_clusters WHERE id = $1")
            .bind(id)
            .execute(self.pool())
            .await
            .map_err(query_err("delete a scheduler cluster"))?;
        if deleted.rows_affected() == 0 {
            return Err(DbError::NotFound {
                what: "scheduler cluster",
                id,
            });
        }
        for table in ["schedulers", "seed_peers"] {
            sqlx::query(&format!("DELETE FROM {table} WHERE cluster_id = $1"))
                .bind(id)
                .execute(self.pool())
                .await
                .map_err(query_err("delete a cluster's instances"))?;
        }
        Ok(())
    }

    async fn make_only_default(&self, id: i64) -> Result<(), DbError> {
        sqlx::query("UPDATE scheduler_clusters SET is_default = 0 WHERE id <> $1")
            .bind(id)
            .execute(self.pool())
            .await
            .map_err(query_err("clear the default cluster flag"))?;
        Ok(())
    }
}
