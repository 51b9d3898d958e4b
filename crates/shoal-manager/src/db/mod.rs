//! The manager's durable state: one SQL code path over SQLite and PostgreSQL.
//!
//! [`Db`] wraps an `sqlx` `Any` pool. Queries are written once with `$N` placeholders and only
//! `i64`, `String` and `Vec<u8>` columns, which both backends decode identically; flags are 0/1
//! integers and times are unix milliseconds passed in by the caller (`now_ms`), so liveness and
//! lease logic is testable without sleeping. Migrations live in `migrations/{sqlite,postgres}`
//! and differ only in id column types.
//!
//! Durable state: clusters, scheduler and seed-peer registrations with their last-seen time,
//! applications, personal access tokens (hashes only), preheat jobs and their items. Several
//! manager replicas may share one PostgreSQL database: liveness is computed from `last_seen_ms`
//! and job ownership from leases, so every replica reaches the same answer.

use std::time::{SystemTime, UNIX_EPOCH};

use sqlx::any::{AnyPoolOptions, AnyRow};
use sqlx::AnyPool;

mod clusters;
mod instances;
mod jobs;
#[cfg(test)]
mod tests;
mod tokens;

pub(crate) use clusters::{Cluster, ClusterPatch, NewCluster, Scopes};
pub(crate) use instances::{Instance, InstanceKind, InstanceUpdate};
pub(crate) use jobs::{ItemState, Job, JobItem, JobState, NewItem, NewJob};
pub(crate) use tokens::Token;

/// The id of the cluster created by the first migration.
#[cfg(test)]
pub(crate) const DEFAULT_CLUSTER_ID: i64 = 1;

static SQLITE_MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/sqlite");
static POSTGRES_MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/postgres");

/// A database operation failed.
#[derive(Debug, thiserror::Error)]
pub enum DbError {
    #[error("open database {url}")]
    Connect {
        url: String,
        #[source]
        source: sqlx::Error,
    },
    #[error("database url {url} names no supported backend (sqlite:// or postgres://)")]
    UnsupportedUrl { url: String },
    #[error("migrate database schema")]
    Migrate(#[source] sqlx::migrate::MigrateError),
    #[error("{action}")]
    Query {
        action: &'static str,
        #[source]
        source: sqlx::Error,
    },
    #[error("decode {column} of a {table} row")]
    Corrupt {
        table: &'static str,
        column: &'static str,
        #[source]
        source: serde_json::Error,
    },
    #[error("{what} {id} not found")]
    NotFound { what: &'static str, id: i64 },
    #[error("{what} already exists")]
    Conflict { what: &'static str },
}

/// Which SQL dialect the pool talks; only migrations depend on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Backend {
    Sqlite,
    Postgres,
}

/// A handle on the manager database; cheap to clone.
#[derive(Debug, Clone)]
pub(crate) struct Db {
    pool: AnyPool,
    backend: Backend,
}

impl Db {
    /// Opens (creating a SQLite file if needed) and migrates the database at `url`.
    pub(crate) async fn open(url: &str) -> Result<Self, DbError> {
        sqlx::any::install_default_drivers();
        let backend = if url.starts_with("sqlite:") {
            Backend::Sqlite
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Backend::Postgres
        } else {
            return Err(DbError::UnsupportedUrl { url: redact(url) });
        };
        let url = match backend {
            Backend::Sqlite if !url.contains('?') => format!("{url}?mode=rwc"),
            _ => url.to_string(),
        };
        let max = match backend {
            // SQLite serialises writers anyway; a few connections let readers run alongside.
            Backend::Sqlite => 4,
            Backend::Postgres => 10,
        };
        let pool = AnyPoolOptions::new()
            .max_connections(max)
            .acquire_timeout(std::time::Duration::from_secs(30))
            .after_connect(move |conn, _| {
                Box::pin(async move {
                    if backend == Backend::Sqlite {
                        use sqlx::Executor;
                        conn.execute("PRAGMA journal_mode = WAL").await?;
                        conn.execute("PRAGMA busy_timeout = 10000").await?;
                    }
                    Ok(())
                })
            })
            .connect(&url)
            .await
            .map_err(|source| DbError::Connect {
                url: redact(&url),
                source,
            })?;
        let db = Self { pool, backend };
        db.migrate().await?;
        Ok(db)
    }

    async fn migrate(&self) -> Result<(), DbError> {
        let migrator = match self.backend {
            Backend::Sqlite => &SQLITE_MIGRATOR,
            Backend::Postgres => &POSTGRES_MIGRATOR,
        };
        migrator.run(&self.pool).await.map_err(DbError::Migrate)
    }

    pub(crate) fn pool(&self) -> &AnyPool {
        &self.pool
    }

    /// Closes every connection; used at shutdown and before a test drops its database.
    pub(crate) async fn close(&self) {
        self.pool.close().await;
    }
}

/// The current time in unix milliseconds.
pub(crate) fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|elapsed| i64::try_from(elapsed.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// `url` without its password, for logs and errors.
pub(crate) fn redact(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut parsed) if parsed.password().is_some() => {
            let _ = parsed.set_password(Some("***"));
            parsed.to_string()
        }
        _ => url.to_string(),
    }
}

/// Reads column `name` of `row`, naming the action on failure.
pub(crate) fn col<T>(row: &AnyRow, name: &'static str) -> Result<T, DbError>
where
    T: for<'r> sqlx::Decode<'r, sqlx::Any> + sqlx::Type<sqlx::Any>,
{
    use sqlx::Row;
    row.try_get(name).map_err(|source| DbError::Query {
        action: "decode a row",
        source,
    })
}

/// Wraps an `sqlx` error with the action that failed.
pub(crate) fn query_err(action: &'static str) -> impl FnOnce(sqlx::Error) -> DbError {
    move |source| DbError::Query { action, source }
}
