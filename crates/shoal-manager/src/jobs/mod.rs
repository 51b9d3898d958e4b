//! Preheat jobs: creation (credentials sealed), their JSON form, and the workers that run them.
//!
//! A job is a database row, claimed by one worker of any replica under a lease it renews
//! ([`worker`]). A preheat of an image resolves the manifest or index for the requested platform
//! ([`registry`]), records one item per blob (config and layers), then asks active seed peers to
//! download each pending item ([`seed`]); a preheat of a file has one item, the URL. Items keep
//! their outcome, so a job taken over after its manager died skips what already succeeded.

mod registry;
mod seed;
mod worker;

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

use crate::db::{now_ms, DbError, Job, NewJob};
use crate::service::{ManagerService, ServiceError};

pub(crate) use worker::spawn_workers;

/// The only job type served.
const PREHEAT: &str = "preheat";
/// Platform chosen from an index when the job names none.
const DEFAULT_PLATFORM: &str = "linux/amd64";

/// `POST /oapi/v1/jobs` and `/api/v1/jobs`, in the shape Harbor's Dragonfly provider sends.
/// Unknown fields are ignored so newer providers keep working.
#[derive(Debug, Deserialize)]
pub(crate) struct CreateJob {
    #[serde(rename = "type")]
    job_type: String,
    args: PreheatArgs,
    /// Clusters whose seed peers run the job; empty: every cluster.
    #[serde(default)]
    scheduler_cluster_ids: Vec<i64>,
}

/// What to preheat. Credentials (`headers`, `username`, `password`) are sealed apart.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub(crate) struct PreheatArgs {
    /// `image` (a manifest URL) or `file` (any URL).
    #[serde(rename = "type")]
    pub(crate) kind: String,
    pub(crate) url: String,
    /// `os/arch[/variant]` picked from an index; default `linux/amd64`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) platform: Option<String>,
    /// `single_seed_peer` (default) or `all_seed_peers`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) scope: Option<String>,
    /// Task-id inputs of a file preheat (wire reference §11).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) tag: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) application: Option<String>,
    /// `&`-separated query parameters left out of the task id (Harbor's `filteredQueryParams`).
    #[serde(
        default,
        alias = "filteredQueryParams",
        skip_serializing_if = "Option::is_none"
    )]
    pub(crate) filtered_query_params: Option<String>,
    #[serde(default, skip_serializing)]
    headers: HashMap<String, String>,
    #[serde(default, skip_serializing)]
    username: Option<String>,
    #[serde(default, skip_serializing)]
    password: Option<String>,
}

/// The sealed part of a job.
#[derive(Debug, Default, Serialize, Deserialize)]
struct SealedCredentials {
    headers: HashMap<String, String>,
    username: Option<String>,
    password: Option<String>,
}

/// Validates and enqueues a job; credentials are sealed, never stored in plaintext.
pub(crate) async fn create(
    service: &ManagerService,
    request: CreateJob,
) -> Result<Job, ServiceError> {
    if request.job_type != PREHEAT {
        return Err(ServiceError::Invalid(format!(
            "job type {:?} is not supported (preheat)",
            request.job_type
        )));
    }
    let args = request.args;
    match args.kind.as_str() {
        "image" | "file" => {}
        other => {
            return Err(ServiceError::Invalid(format!(
                "preheat type {other:?} is not supported (image, file)"
            )))
        }
    }
    let url = url::Url::parse(&args.url)
        .map_err(|err| ServiceError::Invalid(format!("url {:?}: {err}", args.url)))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(ServiceError::Invalid(format!(
            "url {:?} is not http or https",
            args.url
        )));
    }
    if let Some(scope) = &args.scope {
        if !matches!(scope.as_str(), "single_seed_peer" | "all_seed_peers") {
            return Err(ServiceError::Invalid(format!(
                "scope {scope:?} is not supported (single_seed_peer, all_seed_peers)"
            )));
        }
    }
    for id in &request.scheduler_cluster_ids {
        if !service.db().cluster_exists(*id).await? {
            return Err(ServiceError::Invalid(format!(
                "scheduler cluster {id} does not exist"
            )));
        }
    }
    let credentials = SealedCredentials {
        headers: args.headers.clone(),
        username: args.username.clone(),
        password: args.password.clone(),
    };
    let sealed = if credentials.headers.is_empty()
        && credentials.username.is_none()
        && credentials.password.is_none()
    {
        None
    } else {
        let plain = serde_json::to_vec(&credentials).unwrap_or_default();
        Some(service.sealer().seal(&plain).map_err(ServiceError::Seal)?)
    };
    let job = NewJob {
        job_type: PREHEAT.to_string(),
        // Serialising skips the credential fields.
        args: serde_json::to_value(&args).unwrap_or_default(),
        sealed_credentials: sealed,
        cluster_ids: request.scheduler_cluster_ids,
    };
    let job = service.db().enqueue_job(&job, now_ms()).await?;
    tracing::info!(job = job.id, url = %args.url, "preheat job queued");
    Ok(job)
}

/// The REST form of a job, with its items.
pub(crate) async fn job_json(
    service: &ManagerService,
    job: &Job,
) -> Result<serde_json::Value, DbError> {
    let items = service.db().list_items(job.id).await?;
    Ok(serde_json::json!({
        "id": job.id,
        "type": job.job_type,
        "state": job.state,
        "args": job.args,
        "scheduler_cluster_ids": job.cluster_ids,
        "attempts": job.attempts,
        "error": job.error,
        "created_at": job.created_ms,
        "updated_at": job.updated_ms,
        "result": {
            "items": items,
        },
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_never_serialise_with_the_args() {
        let args: PreheatArgs = serde_json::from_value(serde_json::json!({
            "type": "image",
            "url": "http://r/v2/a/manifests/1",
            "headers": {"Authorization": "Basic c2VjcmV0"},
            "username": "u",
            "password": "hunter2",
            "filteredQueryParams": "X-Amz-Signature",
        }))
        .unwrap();
        let stored = serde_json::to_string(&args).unwrap();
        assert!(!stored.contains("c2VjcmV0"), "{stored}");
        assert!(!stored.contains("hunter2"), "{stored}");
        assert!(stored.contains("X-Amz-Signature"), "{stored}");
    }
}
