//! The REST adapter: `/api/v1` for operators and `/oapi/v1/jobs` for Harbor's preheat provider.
//!
//! Every route but `/healthy` needs `Authorization: Bearer <personal access token>`; a missing,
//! unknown, expired or revoked token gets 401 with `WWW-Authenticate: Bearer`. Tokens with the
//! `admin` scope may call everything; tokens with only the `job` scope may create and read jobs.
//! Errors are JSON `{"message": ...}` with the status [`ServiceError::code`] maps to.
//!
//! | route | methods |
//! |---|---|
//! | `/api/v1/schedulers`, `/api/v1/seed-peers` | GET (with `state` computed from the lease) |
//! | `/api/v1/scheduler-clusters`, `/api/v1/scheduler-clusters/{id}` | GET, POST / GET, PATCH, DELETE |
//! | `/api/v1/jobs`, `/oapi/v1/jobs`, `.../{id}` | GET, POST / GET |
//! | `/api/v1/personal-access-tokens`, `.../{id}` | GET, POST / DELETE |

use axum::extract::{Path, Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde::Deserialize;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::db::{now_ms, ClusterPatch, Instance, InstanceKind, NewCluster};
use crate::jobs::{self, CreateJob};
use crate::service::{error_chain, ManagerService, ServiceError};
use crate::{auth, ManagerError};

/// Serves REST on `listener` until `cancel` fires.
pub(crate) async fn serve(
    listener: TcpListener,
    service: ManagerService,
    cancel: CancellationToken,
) -> Result<(), ManagerError> {
    axum::serve(listener, router(service))
        .with_graceful_shutdown(cancel.cancelled_owned())
        .await
        .map_err(ManagerError::Rest)
}

fn router(service: ManagerService) -> Router {
    let api = Router::new()
        .route("/api/v1/schedulers", get(list_schedulers))
        .route("/api/v1/seed-peers", get(list_seed_peers))
        .route(
            "/api/v1/scheduler-clusters",
            get(list_clusters).post(create_cluster),
        )
        .route(
            "/api/v1/scheduler-clusters/{id}",
            get(get_cluster)
                .patch(update_cluster)
                .delete(delete_cluster),
        )
        .route("/api/v1/jobs", get(list_jobs).post(create_job))
        .route("/api/v1/jobs/{id}", get(get_job))
        .route("/oapi/v1/jobs", get(list_jobs).post(create_job))
        .route("/oapi/v1/jobs/{id}", get(get_job))
        .route(
            "/api/v1/personal-access-tokens",
            get(list_tokens).post(create_token),
        )
        .route(
            "/api/v1/personal-access-tokens/{id}",
            axum::routing::delete(revoke_token),
        )
        .layer(axum::middleware::from_fn_with_state(
            service.clone(),
            require_token,
        ));
    Router::new()
        .route("/healthy", get(|| async { "OK" }))
        .merge(api)
        .with_state(service)
}

/// A REST failure.
#[derive(Debug)]
enum ApiError {
    Service(ServiceError),
    Unauthorized,
    Forbidden,
}

impl From<ServiceError> for ApiError {
    fn from(err: ServiceError) -> Self {
        Self::Service(err)
    }
}

impl From<crate::db::DbError> for ApiError {
    fn from(err: crate::db::DbError) -> Self {
        Self::Service(err.into())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, message) = match &self {
            Self::Service(err) => {
                let code = err.code();
                if code == shoal_protocol::ErrorCode::Internal {
                    tracing::warn!(error = %format!("{err:#}"), "rest request failed");
                }
                (
                    StatusCode::from_u16(code.to_http())
                        .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
                    error_chain(err),
                )
            }
            Self::Unauthorized => (
                StatusCode::UNAUTHORIZED,
                "a valid personal access token is required (Authorization: Bearer ...)".into(),
            ),
            Self::Forbidden => (
                StatusCode::FORBIDDEN,
                "this token's scopes do not allow this request".into(),
            ),
        };
        let mut response =
            (status, Json(serde_json::json!({ "message": message }))).into_response();
        if matches!(self, Self::Unauthorized) {
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        response
    }
}

async fn require_token(
    State(service): State<ManagerService>,
    request: Request,
    next: Next,
) -> Result<Response, ApiError> {
    let authorization = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok());
    let token = auth::check(service.db(), authorization)
        .await?
        .ok_or(ApiError::Unauthorized)?;
    let path = request.uri().path();
    let job_route = path.starts_with("/oapi/v1/jobs") || path.starts_with("/api/v1/jobs");
    let allowed = token.scopes.iter().any(|scope| scope == "admin")
        || (job_route && token.scopes.iter().any(|scope| scope == "job"));
    if !allowed {
        return Err(ApiError::Forbidden);
    }
    Ok(next.run(request).await)
}

fn instances_json(service: &ManagerService, instances: Vec<Instance>) -> serde_json::Value {
    let now = now_ms();
    let items: Vec<serde_json::Value> = instances
        .into_iter()
        .map(|instance| {
            let state = instance.state(now, service.ttl_ms());
            let mut value = serde_json::to_value(&instance).unwrap_or_default();
            value["state"] = state.into();
            value
        })
        .collect();
    serde_json::Value::Array(items)
}

async fn list_schedulers(
    State(service): State<ManagerService>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let instances = service
        .db()
        .list_instances(InstanceKind::Scheduler, None)
        .await?;
    Ok(Json(instances_json(&service, instances)))
}

async fn list_seed_peers(
    State(service): State<ManagerService>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let instances = service
        .db()
        .list_instances(InstanceKind::SeedPeer, None)
        .await?;
    Ok(Json(instances_json(&service, instances)))
}

async fn list_clusters(
    State(service): State<ManagerService>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let clusters = service.db().list_clusters().await?;
    Ok(Json(serde_json::to_value(clusters).unwrap_or_default()))
}

async fn get_cluster(
    State(service): State<ManagerService>,
    Path(id): Path<i64>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let cluster = service.db().get_cluster(id).await?;
    Ok(Json(serde_json::to_value(cluster).unwrap_or_default()))
}

fn parse_body<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    serde_json::from_slice(body)
        .map_err(|err| ApiError::Service(ServiceError::Invalid(format!("request body: {err}"))))
}

async fn create_cluster(
    State(service): State<ManagerService>,
    body: axum::body::Bytes,
) -> Result<(StatusCode, Json<serde_json::Value>), ApiError> {
    let new: NewCluster = parse_body(&body)?;
    if new.name.trim().is_empty() {
        return Err(ServiceError::Invalid("name is empty".into()).into());
    }
    let cluster = service.db().create_cluster(&new, now_ms()).await?;
    Ok((
        StatusCode::CREATED,
        Json(serde_json::to_value(cluster).unwrap_or_default()),
    ))
}

async fn update_cluster(
    State(service): State<ManagerService>,
    Path(id): Path<i64>,
    body: axum::body::Bytes,
) -> Result<Json<serde_json::Value>, ApiError> {
    let patch: ClusterPatch = parse_body(&body)?;
    let cluster = service.db().update_cluster(id, &patch, now_ms()).await?;
    Ok(Json(serde_json::to_value(cluster).unwrap_or_default()))
}

async fn delete_cluster(
    State(service): State<ManagerService>,
    Path(id): Path<i64>,
) -> Result<StatusCode, ApiError> {
    service.db().delete_cluster(id).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn list_jobs(
    State(service): State<ManagerService>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let jobs = service.db().list_jobs(100).await?;
    let mut items = Vec::with_capacity(jobs.len());
    for job in jobs {
        items.push(jobs::job_json(&service, &job).await?);
    }
    Ok(Json(serde_json::Value::Array(items)))
}

async fn get_job(
    State(service): State<ManagerService>,
    Path(id): Path<i64>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let job = service.db().get_job(id).await?;
    Ok(Json(jobs::job_json(&service, &job).await?))
}

async fn create_job(
    State(service): State<ManagerService>,
    body: axum::body::Bytes,
) -> Result<(StatusCode, Json<serde_json::Value>), ApiError> {
    let request: CreateJob = parse_body(&body)?;
    let job = jobs::create(&service, request).await?;
    Ok((
        StatusCode::CREATED,
        Json(jobs::job_json(&service, &job).await?),
    ))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateToken {
    name: String,
    /// `admin` or `job`; default `["job"]`.
    #[serde(default)]
    scopes: Vec<String>,
    /// Lifetime in seconds; absent: never expires.
    #[serde(default)]
    expires_in_seconds: Option<i64>,
}

async fn list_tokens(
    State(service): State<ManagerService>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let tokens = service.db().list_tokens().await?;
    Ok(Json(serde_json::to_value(tokens).unwrap_or_default()))
}

async fn create_token(
    State(service): State<ManagerService>,
    body: axum::body::Bytes,
) -> Result<(StatusCode, Json<serde_json::Value>), ApiError> {
    let request: CreateToken = parse_body(&body)?;
    if request.name.trim().is_empty() {
        return Err(ServiceError::Invalid("name is empty".into()).into());
    }
    let scopes = if request.scopes.is_empty() {
        vec!["job".to_string()]
    } else {
        request.scopes
    };
    if let Some(bad) = scopes
        .iter()
        .find(|scope| !matches!(scope.as_str(), "admin" | "job"))
    {
        return Err(ServiceError::Invalid(format!("unknown scope {bad:?} (admin, job)")).into());
    }
    let now = now_ms();
    let expires = match request.expires_in_seconds {
        Some(seconds) if seconds <= 0 => {
            return Err(ServiceError::Invalid("expires_in_seconds must be positive".into()).into())
        }
        Some(seconds) => Some(now.saturating_add(seconds.saturating_mul(1000))),
        None => None,
    };
    let secret = auth::generate();
    let token = service
        .db()
        .create_token(&request.name, &auth::hash(&secret), &scopes, expires, now)
        .await?;
    let mut value = serde_json::to_value(token).unwrap_or_default();
    // The only time the secret is shown.
    value["token"] = secret.into();
    Ok((StatusCode::CREATED, Json(value)))
}

async fn revoke_token(
    State(service): State<ManagerService>,
    Path(id): Path<i64>,
) -> Result<StatusCode, ApiError> {
    service.db().revoke_token(id).await?;
    Ok(StatusCode::NO_CONTENT)
}
