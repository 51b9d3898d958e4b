//! The job queue: preheat jobs, their leases and their items.
//!
//! A job is claimed by one owner at a time with a lease (`lease_until_ms`). The claim is one
//! `UPDATE ... WHERE id = (SELECT ...) AND <claimable> RETURNING` statement: SQLite serialises
//! writers, and PostgreSQL re-checks the repeated condition on the row after a concurrent
//! claimer commits, so two managers never hold the same job. A job whose owner stopped renewing
//! becomes claimable again once its lease has passed. Items record per-blob progress so a
//! resumed job skips what already succeeded.

use serde::Serialize;
use sqlx::any::AnyRow;

use super::{col, query_err, Db, DbError};

/// How often a claim that lost a race is retried before reporting an empty queue.
const CLAIM_RACE_RETRIES: usize = 5;

/// Job states, spelled as upstream Dragonfly (and Harbor) expect them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub(crate) enum JobState {
    #[serde(rename = "PENDING")]
    Pending,
    #[serde(rename = "RUNNING")]
    Running,
    #[serde(rename = "SUCCESS")]
    Success,
    #[serde(rename = "FAILURE")]
    Failure,
}

impl JobState {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "PENDING",
            Self::Running => "RUNNING",
            Self::Success => "SUCCESS",
            Self::Failure => "FAILURE",
        }
    }

    fn parse(text: &str) -> Self {
        match text {
            "RUNNING" => Self::Running,
            "SUCCESS" => Self::Success,
            "FAILURE" => Self::Failure,
            _ => Self::Pending,
        }
    }
}

/// Item states.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub(crate) enum ItemState {
    #[serde(rename = "PENDING")]
    Pending,
    #[serde(rename = "SUCCESS")]
    Success,
    #[serde(rename = "FAILURE")]
    Failure,
}

impl ItemState {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "PENDING",
            Self::Success => "SUCCESS",
            Self::Failure => "FAILURE",
        }
    }

    fn parse(text: &str) -> Self {
        match text {
            "SUCCESS" => Self::Success,
            "FAILURE" => Self::Failure,
            _ => Self::Pending,
        }
    }
}

/// A stored job.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Job {
    pub(crate) id: i64,
    pub(crate) job_type: String,
    /// Arguments without credentials.
    pub(crate) args: serde_json::Value,
    /// Credentials sealed with the manager's secret key, if any.
    pub(crate) sealed_credentials: Option<Vec<u8>>,
    pub(crate) cluster_ids: Vec<i64>,
    pub(crate) state: JobState,
    pub(crate) owner: Option<String>,
    pub(crate) lease_until_ms: i64,
    pub(crate) attempts: i64,
    pub(crate) error: Option<String>,
    pub(crate) created_ms: i64,
    pub(crate) updated_ms: i64,
}

/// A job to enqueue.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct NewJob {
    pub(crate) job_type: String,
    pub(crate) args: serde_json::Value,
    pub(crate) sealed_credentials: Option<Vec<u8>>,
    pub(crate) cluster_ids: Vec<i64>,
}

/// One blob or file of a job.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub(crate) struct JobItem {
    pub(crate) job_id: i64,
    pub(crate) seq: i64,
    pub(crate) url: String,
    pub(crate) digest: String,
    /// `layer`, `config` or `file`.
    pub(crate) kind: String,
    pub(crate) state: ItemState,
    pub(crate) error: Option<String>,
}

/// An item to record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct NewItem {
    pub(crate) url: String,
    pub(crate) digest: String,
    pub(crate) kind: String,
}

const COLUMNS: &str = "id, type, args, sealed_credentials, cluster_ids, state, owner, \
                       lease_until_ms, attempts, error, created_ms, updated_ms";

/// The claimable condition, used twice in the claim (see the module docs).
const CLAIMABLE: &str = "(state = 'PENDING' OR (state = 'RUNNING' AND lease_until_ms < $3))";

fn corrupt(column: &'static str) -> impl FnOnce(serde_json::Error) -> DbError {
    move |source| DbError::Corrupt {
        table: "jobs",
        column,
        source,
    }
}

fn from_row(row: &AnyRow) -> Result<Job, DbError> {
    let args: String = col(row, "args")?;
    let cluster_ids: String = col(row, "cluster_ids")?;
    let state: String = col(row, "state")?;
    Ok(Job {
        id: col(row, "id")?,
        job_type: col(row, "type")?,
        args: serde_json::from_str(&args).map_err(corrupt("args"))?,
        sealed_credentials: col(row, "sealed_credentials")?,
        cluster_ids: serde_json::from_str(&cluster_ids).map_err(corrupt("cluster_ids"))?,
        state: JobState::parse(&state),
        owner: col(row, "owner")?,
        lease_until_ms: col(row, "lease_until_ms")?,
        attempts: col(row, "attempts")?,
        error: col(row, "error")?,
        created_ms: col(row, "created_ms")?,
        updated_ms: col(row, "updated_ms")?,
    })
}

fn item_from_row(row: &AnyRow) -> Result<JobItem, DbError> {
    let state: String = col(row, "state")?;
    Ok(JobItem {
        job_id: col(row, "job_id")?,
        seq: col(row, "seq")?,
        url: col(row, "url")?,
        digest: col(row, "digest")?,
        kind: col(row, "kind")?,
        state: ItemState::parse(&state),
        error: col(row, "error")?,
    })
}

impl Db {
    /// Adds a PENDING job.
    pub(crate) async fn enqueue_job(&self, job: &NewJob, now_ms: i64) -> Result<Job, DbError> {
        let cluster_ids = serde_json::to_string(&job.cluster_ids).unwrap_or_else(|_| "[]".into());
        let row = sqlx::query(&format!(
            "INSERT INTO jobs (type, args, sealed_credentials, cluster_ids, state, \
             lease_until_ms, attempts, created_ms, updated_ms) \
             VALUES ($1, $2, $3, $4, 'PENDING', 0, 0, $5, $5) RETURNING {COLUMNS}"
        ))
        .bind(job.job_type.clone())
        .bind(job.args.to_string())
        .bind(job.sealed_credentials.clone())
        .bind(cluster_ids)
        .bind(now_ms)
        .fetch_one(self.pool())
        .await
        .map_err(query_err("enqueue a job"))?;
        from_row(&row)
    }

    /// Job `id`.
    pub(crate) async fn get_job(&self, id: i64) -> Result<Job, DbError> {
        let row = sqlx::query(&format!("SELECT {COLUMNS} FROM jobs WHERE id = $1"))
            .bind(id)
            .fetch_optional(self.pool())
            .await
            .map_err(query_err("read a job"))?
            .ok_or(DbError::NotFound { what: "job", id })?;
        from_row(&row)
    }

    /// The newest `limit` jobs, newest first.
    pub(crate) async fn list_jobs(&self, limit: i64) -> Result<Vec<Job>, DbError> {
        let rows = sqlx::query(&format!(
            "SELECT {COLUMNS} FROM jobs ORDER BY id DESC LIMIT $1"
        ))
        .bind(limit)
        .fetch_all(self.pool())
        .await
        .map_err(query_err("list jobs"))?;
        rows.iter().map(from_row).collect()
    }

    /// Claims the oldest claimable job for `owner` until `lease_until_ms`; None when the queue
    /// holds nothing claimable at `now_ms`.
    pub(crate) async fn claim_job(
        &self,
        owner: &str,
        lease_until_ms: i64,
        now_ms: i64,
    ) -> Result<Option<Job>, DbError> {
        let claim = format!(
            "UPDATE jobs SET state = 'RUNNING', owner = $1, lease_until_ms = $2, \
             attempts = attempts + 1, updated_ms = $3 \
             WHERE id = (SELECT id FROM jobs WHERE {CLAIMABLE} ORDER BY id LIMIT 1) \
             AND {CLAIMABLE} RETURNING {COLUMNS}"
        );
        for _ in 0..CLAIM_RACE_RETRIES {
            let row = sqlx::query(&claim)
                .bind(owner.to_string())
                .bind(lease_until_ms)
                .bind(now_ms)
                .fetch_optional(self.pool())
                .await
                .map_err(query_err("claim a job"))?;
            if let Some(row) = row {
                return from_row(&row).map(Some);
            }
            // No row: either the queue is empty or another claimer took the row we picked.
            let left = sqlx::query(&format!(
                "SELECT COUNT(*) AS n FROM jobs WHERE {}",
                CLAIMABLE.replace("$3", "$1")
            ))
            .bind(now_ms)
            .fetch_one(self.pool())
            .await
            .map_err(query_err("count claimable jobs"))?;
            if col::<i64>(&left, "n")? == 0 {
                return Ok(None);
            }
        }
        Ok(None)
    }

    /// Extends `owner`'s lease on job `id`; false when the job is no longer `owner`'s.
    pub(crate) async fn renew_lease(
        &self,
        id: i64,
        owner: &str,
        lease_until_ms: i64,
    ) -> Result<bool, DbError> {
        let done = sqlx::query(
            "UPDATE jobs SET lease_until_ms = $1 WHERE id = $2 AND owner = $3 \
             AND state = 'RUNNING'",
        )
        .bind(lease_until_ms)
        .bind(id)
        .bind(owner.to_string())
        .execute(self.pool())
        .await
        .map_err(query_err("renew a job lease"))?;
        Ok(done.rows_affected() > 0)
    }

    /// Moves `owner`'s job `id` to `state` (SUCCESS, FAILURE, or PENDING to retry later);
    /// false when the job is no longer `owner`'s.
    pub(crate) async fn finish_job(
        &self,
        id: i64,
        owner: &str,
        state: JobState,
        error: Option<&str>,
        now_ms: i64,
    ) -> Result<bool, DbError> {
        let done = sqlx::query(
            "UPDATE jobs SET state = $1, error = $2, owner = NULL, lease_until_ms = 0, \
             updated_ms = $3 WHERE id = $4 AND owner = $5 AND state = 'RUNNING'",
        )
        .bind(state.as_str())
        .bind(error.map(str::to_string))
        .bind(now_ms)
        .bind(id)
        .bind(owner.to_string())
        .execute(self.pool())
        .await
        .map_err(query_err("finish a job"))?;
        Ok(done.rows_affected() > 0)
    }

    /// Records `items` for job `id` unless it already has items (a resumed job keeps its own).
    pub(crate) async fn ensure_items(&self, id: i64, items: &[NewItem]) -> Result<(), DbError> {
        if !self.list_items(id).await?.is_empty() {
            return Ok(());
        }
        let mut tx = self
            .pool()
            .begin()
            .await
            .map_err(query_err("begin recording job items"))?;
        for (seq, item) in (0_i64..).zip(items) {
            sqlx::query(
                "INSERT INTO job_items (job_id, seq, url, digest, kind, state) \
                 VALUES ($1, $2, $3, $4, $5, 'PENDING')",
            )
            .bind(id)
            .bind(seq)
            .bind(item.url.clone())
            .bind(item.digest.clone())
            .bind(item.kind.clone())
            .execute(&mut *tx)
            .await
            .map_err(query_err("record a job item"))?;
        }
        tx.commit().await.map_err(query_err("commit job items"))?;
        Ok(())
    }

    /// The items of job `id`, in order.
    pub(crate) async fn list_items(&self, id: i64) -> Result<Vec<JobItem>, DbError> {
        let rows = sqlx::query(
            "SELECT job_id, seq, url, digest, kind, state, error FROM job_items \
             WHERE job_id = $1 ORDER BY seq",
        )
        .bind(id)
        .fetch_all(self.pool())
        .await
        .map_err(query_err("list job items"))?;
        rows.iter().map(item_from_row).collect()
    }

    /// Records the outcome of item `seq` of job `id`.
    pub(crate) async fn set_item_state(
        &self,
        id: i64,
        seq: i64,
        state: ItemState,
        error: Option<&str>,
    ) -> Result<(), DbError> {
        sqlx::query("UPDATE job_items SET state = $1, error = $2 WHERE job_id = $3 AND seq = $4")
            .bind(state.as_str())
            .bind(error.map(str::to_string))
            .bind(id)
            .bind(seq)
            .execute(self.pool())
            .await
            .map_err(query_err("record a job item's outcome"))?;
        Ok(())
    }
}
