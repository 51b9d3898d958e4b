//! Job workers: claim, run under a renewed lease, record the outcome.
//!
//! Each of `job_workers` loops polls the queue; a claimed job gets a lease of `job_lease`,
//! renewed every third of it. When a renewal finds the job no longer ours (another replica took
//! it over after a stall), the run stops without recording anything. Items run a few at a time;
//! each pending item goes to one active seed peer (`single_seed_peer`, spread by item) or to all
//! of them (`all_seed_peers`). A job with no active seed peer waits up to [`SEED_WAIT`] for one.

use std::collections::HashMap;
use std::time::Duration;

use futures::StreamExt as _;
use shoal_protocol::common::{Download, TaskType};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{info, warn, Instrument as _};

use super::registry::{self, Credentials};
use super::{seed, PreheatArgs, SealedCredentials, DEFAULT_PLATFORM};
use crate::db::{now_ms, DbError, ItemState, Job, JobItem, JobState, NewItem};
use crate::service::{error_chain, ManagerService};

/// Pause between polls of an empty queue.
const POLL_INTERVAL: Duration = Duration::from_millis(500);
/// Longest wait for an active seed peer before the job fails.
const SEED_WAIT: Duration = Duration::from_secs(30);
/// Items triggered at once per job.
const ITEM_CONCURRENCY: usize = 4;

/// Why a job run ended without an outcome to record, or failed.
#[derive(Debug, thiserror::Error)]
enum RunError {
    #[error("job storage")]
    Db(#[from] DbError),
    #[error("{0}")]
    Failed(String),
    #[error("lost the job's lease")]
    LostLease,
    #[error("manager shutting down")]
    Cancelled,
}

/// Starts `count` workers on `tracker`; they stop when `cancel` fires.
pub(crate) fn spawn_workers(
    tracker: &TaskTracker,
    service: ManagerService,
    count: usize,
    cancel: CancellationToken,
) {
    let http = reqwest::Client::builder()
        .build()
        .unwrap_or_else(|_| reqwest::Client::new());
    for index in 0..count.max(1) {
        let service = service.clone();
        let cancel = cancel.clone();
        let http = http.clone();
        let span = tracing::info_span!("job_worker", worker = index);
        tracker.spawn(async move { work(service, http, cancel).await }.instrument(span));
    }
}

async fn work(service: ManagerService, http: reqwest::Client, cancel: CancellationToken) {
    loop {
        tokio::select! {
            biased;
            () = cancel.cancelled() => return,
            () = tokio::time::sleep(POLL_INTERVAL) => {}
        }
        let lease = lease_ms(&service);
        let now = now_ms();
        let job = match service
            .db()
            .claim_job(service.owner(), now.saturating_add(lease), now)
            .await
        {
            Ok(Some(job)) => job,
            Ok(None) => continue,
            Err(err) => {
                warn!(error = %format!("{err:#}"), "claim a job failed");
                continue;
            }
        };
        let span = tracing::info_span!("job", job = job.id);
        run_claimed(&service, &http, job, &cancel)
            .instrument(span)
            .await;
    }
}

fn lease_ms(service: &ManagerService) -> i64 {
    i64::try_from(service.job_lease().as_millis()).unwrap_or(i64::MAX)
}

/// Runs `job` while a renewer keeps its lease; records the outcome unless the lease was lost.
async fn run_claimed(
    service: &ManagerService,
    http: &reqwest::Client,
    job: Job,
    cancel: &CancellationToken,
) {
    info!(attempt = job.attempts, "job claimed");
    let lost = CancellationToken::new();
    let renewer = renew(service.clone(), job.id, lost.clone());
    let outcome = tokio::select! {
        biased;
        () = cancel.cancelled() => Err(RunError::Cancelled),
        () = lost.cancelled() => Err(RunError::LostLease),
        () = renewer => Err(RunError::LostLease),
        outcome = run(service, http, &job) => outcome,
    };
    let (state, error) = match outcome {
        Ok(()) => (JobState::Success, None),
        Err(RunError::Failed(message)) => (JobState::Failure, Some(message)),
        Err(RunError::Db(err)) => {
            // The database is the queue: leave the job to be taken over when it recovers.
            warn!(error = %format!("{err:#}"), "job storage failed; the job will be retried");
            return;
        }
        Err(RunError::LostLease) => {
            warn!("job lease lost; another manager owns it now");
            return;
        }
        // Shutting down: the lease expires and another replica (or our restart) resumes.
        Err(RunError::Cancelled) => return,
    };
    match service
        .db()
        .finish_job(job.id, service.owner(), state, error.as_deref(), now_ms())
        .await
    {
        Ok(true) => match &error {
            None => info!("job succeeded"),
            Some(error) => warn!(%error, "job failed"),
        },
        Ok(false) => warn!("job finished after its lease was lost; outcome dropped"),
        Err(err) => warn!(error = %format!("{err:#}"), "record a job outcome failed"),
    }
}

/// Renews the lease every third of it; returns (and cancels `lost`) once it is no longer ours.
async fn renew(service: ManagerService, id: i64, lost: CancellationToken) {
    let period = service.job_lease() / 3;
    loop {
        tokio::time::sleep(period).await;
        let until = now_ms().saturating_add(lease_ms(&service));
        match service.db().renew_lease(id, service.owner(), until).await {
            Ok(true) => {}
            Ok(false) => {
                lost.cancel();
                return;
            }
            Err(err) => warn!(error = %format!("{err:#}"), "renew a job lease failed"),
        }
    }
}

async fn run(service: &ManagerService, http: &reqwest::Client, job: &Job) -> Result<(), RunError> {
    let args: PreheatArgs = serde_json::from_value(job.args.clone())
        .map_err(|err| RunError::Failed(format!("stored job arguments are unreadable: {err}")))?;
    let credentials = open_credentials(service, job)?;
    let plan = plan(http, &args, &credentials).await?;
    let new_items: Vec<NewItem> = plan
        .items
        .iter()
        .map(|item| NewItem {
            url: item.url.clone(),
            digest: item.digest.clone(),
            kind: item.kind.to_string(),
        })
        .collect();
    service.db().ensure_items(job.id, &new_items).await?;
    let items = service.db().list_items(job.id).await?;
    let pending: Vec<JobItem> = items
        .into_iter()
        .filter(|item| item.state != ItemState::Success)
        .collect();
    if pending.is_empty() {
        return Ok(());
    }
    let seeds = wait_for_seeds(service, &job.cluster_ids).await?;
    let all = args.scope.as_deref() == Some("all_seed_peers");
    let results: Vec<Result<(), String>> = futures::stream::iter(pending)
        .map(|item| {
            let targets: Vec<String> = if all {
                seeds.clone()
            } else {
                let index = usize::try_from(item.seq).unwrap_or_default() % seeds.len();
                vec![seeds[index].clone()]
            };
            let download = download_for(&args, &plan.headers, &item);
            async move {
                let mut outcome = Ok(());
                for target in &targets {
                    if let Err(err) = seed::trigger(target, download.clone()).await {
                        outcome = Err(format!("{}: {err}", item.url));
                    }
                }
                let (state, error) = match &outcome {
                    Ok(()) => (ItemState::Success, None),
                    Err(message) => (ItemState::Failure, Some(message.as_str())),
                };
                service
                    .db()
                    .set_item_state(item.job_id, item.seq, state, error)
                    .await
                    .map_err(|err| format!("record item {}: {err}", item.seq))?;
                outcome
            }
        })
        .buffer_unordered(ITEM_CONCURRENCY)
        .collect()
        .await;
    let failures: Vec<String> = results.into_iter().filter_map(Result::err).collect();
    if failures.is_empty() {
        Ok(())
    } else {
        Err(RunError::Failed(format!(
            "{} item(s) failed: {}",
            failures.len(),
            failures.join("; ")
        )))
    }
}

fn open_credentials(service: &ManagerService, job: &Job) -> Result<Credentials, RunError> {
    let Some(sealed) = &job.sealed_credentials else {
        return Ok(Credentials::default());
    };
    let plain = service
        .sealer()
        .open(sealed)
        .map_err(|err| RunError::Failed(format!("open the job's credentials: {err}")))?;
    let stored: SealedCredentials = serde_json::from_slice(&plain)
        .map_err(|err| RunError::Failed(format!("decode the job's credentials: {err}")))?;
    Ok(Credentials {
        headers: stored.headers,
        username: stored.username,
        password: stored.password,
    })
}

/// What a run downloads, and the headers the seed sends to the origin.
struct Plan {
    items: Vec<registry::Blob>,
    headers: HashMap<String, String>,
}

async fn plan(
    http: &reqwest::Client,
    args: &PreheatArgs,
    credentials: &Credentials,
) -> Result<Plan, RunError> {
    if args.kind == "file" {
        return Ok(Plan {
            items: vec![registry::Blob {
                url: args.url.clone(),
                digest: String::new(),
                kind: "file",
            }],
            headers: credentials.headers.clone(),
        });
    }
    let platform = args.platform.as_deref().unwrap_or(DEFAULT_PLATFORM);
    let resolved = registry::resolve(http, &args.url, platform, credentials)
        .await
        .map_err(|err| RunError::Failed(format!("resolve image: {}", error_chain(&err))))?;
    Ok(Plan {
        items: resolved.blobs,
        headers: resolved.headers,
    })
}

async fn wait_for_seeds(
    service: &ManagerService,
    clusters: &[i64],
) -> Result<Vec<String>, RunError> {
    let deadline = tokio::time::Instant::now() + SEED_WAIT;
    loop {
        let seeds = service
            .active_seed_peers(clusters)
            .await
            .map_err(|err| RunError::Failed(format!("list seed peers: {err}")))?;
        if !seeds.is_empty() {
            return Ok(seeds
                .iter()
                .map(|seed| format!("{}:{}", bracket(&seed.ip), seed.port))
                .collect());
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(RunError::Failed(format!(
                "no active seed peer within {SEED_WAIT:?}"
            )));
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

fn bracket(ip: &str) -> String {
    if ip.contains(':') {
        format!("[{ip}]")
    } else {
        ip.to_string()
    }
}

/// The Download a seed runs for `item`: blobs take their task id from the digest, as the
/// registry mirror does, so later pulls through any daemon find them.
fn download_for(args: &PreheatArgs, headers: &HashMap<String, String>, item: &JobItem) -> Download {
    let blob = item.kind != "file";
    Download {
        url: item.url.clone(),
        r#type: TaskType::Standard as i32,
        tag: if blob { None } else { args.tag.clone() },
        application: if blob { None } else { args.application.clone() },
        filtered_query_params: if blob {
            Vec::new()
        } else {
            args.filtered_query_params
                .as_deref()
                .map(|params| {
                    params
                        .split('&')
                        .filter(|param| !param.is_empty())
                        .map(str::to_string)
                        .collect()
                })
                .unwrap_or_default()
        },
        request_header: headers.clone(),
        need_back_to_source: true,
        enable_task_id_based_blob_digest: blob,
        ..Default::default()
    }
}
