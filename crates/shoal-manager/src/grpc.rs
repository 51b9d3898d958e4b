//! The gRPC adapter: `manager.v2.Manager` over [`ManagerService`], plus gRPC health.
//!
//! Registration (UpdateScheduler, UpdateSeedPeer) stores the instance and marks it seen;
//! KeepAlive renews that lease per message and marks the instance inactive when the stream
//! ends. ListSchedulers answers with the active schedulers of the client's best-matching
//! cluster, each carrying the cluster and its active seed peers, as upstream clients expect.
//! Errors reach the wire only through [`ServiceError::code`].

use std::net::IpAddr;

use shoal_protocol::manager::manager_server::{Manager, ManagerServer};
use shoal_protocol::manager::{
    Application, ApplicationPriority, DeleteSeedPeerRequest, GetSchedulerRequest,
    GetSeedPeerRequest, KeepAliveRequest, ListApplicationsRequest, ListApplicationsResponse,
    ListSchedulersRequest, ListSchedulersResponse, ListSeedPeersRequest, ListSeedPeersResponse,
    Scheduler, SchedulerCluster, SeedPeer, SeedPeerCluster, SourceType, UpdateSchedulerRequest,
    UpdateSeedPeerRequest, UrlPriority,
};
use shoal_protocol::MAX_GRPC_MESSAGE_BYTES;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tonic::transport::server::TcpIncoming;
use tonic::{Request, Response, Status, Streaming};
use tonic_health::ServingStatus;
use tracing::{debug, info};

use crate::db::{now_ms, Cluster, Instance, InstanceKind, InstanceUpdate};
use crate::scope::Client;
use crate::service::{ManagerService, ServiceError};
use crate::ManagerError;

/// Serves gRPC on `listener` until `cancel` fires.
pub(crate) async fn serve(
    listener: TcpListener,
    service: ManagerService,
    cancel: CancellationToken,
) -> Result<(), ManagerError> {
    let (health_reporter, health_service) = tonic_health::server::health_reporter();
    health_reporter
        .set_service_status("", ServingStatus::Serving)
        .await;
    health_reporter
        .set_serving::<ManagerServer<GrpcManager>>()
        .await;
    let manager = ManagerServer::new(GrpcManager { service })
        .max_decoding_message_size(MAX_GRPC_MESSAGE_BYTES)
        .max_encoding_message_size(MAX_GRPC_MESSAGE_BYTES);
    tonic::transport::Server::builder()
        .add_service(health_service)
        .add_service(manager)
        .serve_with_incoming_shutdown(
            // `Server::tcp_nodelay` covers only listeners tonic binds itself.
            TcpIncoming::from(listener).with_nodelay(Some(true)),
            cancel.cancelled_owned(),
        )
        .await
        .map_err(ManagerError::Grpc)
}

/// The tonic service.
#[derive(Debug, Clone)]
pub(crate) struct GrpcManager {
    service: ManagerService,
}

fn status(err: ServiceError) -> Status {
    err.code().status(format!("{err:#}"))
}

fn non_empty(value: &str) -> Option<String> {
    (!value.is_empty()).then(|| value.to_string())
}

fn scheduler_cluster(cluster: &Cluster) -> SchedulerCluster {
    SchedulerCluster {
        id: u64::try_from(cluster.id).unwrap_or_default(),
        name: cluster.name.clone(),
        bio: cluster.bio.clone(),
        config: cluster.config.to_string().into_bytes(),
        client_config: cluster.client_config.to_string().into_bytes(),
        scopes: serde_json::to_vec(&cluster.scopes).unwrap_or_default(),
        seed_client_config: cluster.seed_client_config.to_string().into_bytes(),
    }
}

fn seed_peer(instance: &Instance, state: &str) -> SeedPeer {
    SeedPeer {
        id: u64::try_from(instance.id).unwrap_or_default(),
        hostname: instance.hostname.clone(),
        r#type: instance.peer_type.clone(),
        idc: non_empty(&instance.idc),
        location: non_empty(&instance.location),
        ip: instance.ip.clone(),
        port: i32::try_from(instance.port).unwrap_or_default(),
        download_port: i32::try_from(instance.download_port).unwrap_or_default(),
        state: state.to_string(),
        seed_peer_cluster_id: u64::try_from(instance.cluster_id).unwrap_or_default(),
        seed_peer_cluster: Some(SeedPeerCluster {
            id: u64::try_from(instance.cluster_id).unwrap_or_default(),
            ..Default::default()
        }),
        schedulers: Vec::new(),
    }
}

fn scheduler(instance: &Instance, state: &str) -> Scheduler {
    Scheduler {
        id: u64::try_from(instance.id).unwrap_or_default(),
        hostname: instance.hostname.clone(),
        idc: non_empty(&instance.idc),
        location: non_empty(&instance.location),
        ip: instance.ip.clone(),
        port: i32::try_from(instance.port).unwrap_or_default(),
        state: state.to_string(),
        scheduler_cluster_id: u64::try_from(instance.cluster_id).unwrap_or_default(),
        scheduler_cluster: None,
        seed_peers: Vec::new(),
        features: instance.features.clone().into_bytes(),
    }
}

impl GrpcManager {
    fn state(&self, instance: &Instance) -> &'static str {
        instance.state(now_ms(), self.service.ttl_ms())
    }
}

#[tonic::async_trait]
impl Manager for GrpcManager {
    async fn get_seed_peer(
        &self,
        request: Request<GetSeedPeerRequest>,
    ) -> Result<Response<SeedPeer>, Status> {
        let request = request.into_inner();
        let instance = self
            .service
            .find(
                InstanceKind::SeedPeer,
                &request.hostname,
                &request.ip,
                request.seed_peer_cluster_id,
            )
            .await
            .map_err(status)?;
        Ok(Response::new(seed_peer(&instance, self.state(&instance))))
    }

    async fn list_seed_peers(
        &self,
        request: Request<ListSeedPeersRequest>,
    ) -> Result<Response<ListSeedPeersResponse>, Status> {
        let request = request.into_inner();
        let ip = request.ip.parse::<IpAddr>().ok();
        let client = Client {
            hostname: &request.hostname,
            ip,
            idc: None,
            location: None,
        };
        let discovery = self.service.discover(&client).await.map_err(status)?;
        let seed_peers = discovery
            .seed_peers
            .iter()
            .map(|instance| seed_peer(instance, "active"))
            .collect();
        Ok(Response::new(ListSeedPeersResponse { seed_peers }))
    }

    async fn update_seed_peer(
        &self,
        request: Request<UpdateSeedPeerRequest>,
    ) -> Result<Response<SeedPeer>, Status> {
        let request = request.into_inner();
        let port = i64::from(request.port);
        let update = InstanceUpdate {
            hostname: request.hostname,
            ip: request.ip,
            port,
            download_port: if request.download_port > 0 {
                i64::from(request.download_port)
            } else {
                port
            },
            peer_type: if request.r#type.is_empty() {
                "super".to_string()
            } else {
                request.r#type
            },
            idc: request.idc.unwrap_or_default(),
            location: request.location.unwrap_or_default(),
            cluster_id: 0,
            features: "[]".to_string(),
        };
        let instance = self
            .service
            .register(InstanceKind::SeedPeer, update, request.seed_peer_cluster_id)
            .await
            .map_err(status)?;
        info!(hostname = %instance.hostname, ip = %instance.ip, port = instance.port, "seed peer registered");
        Ok(Response::new(seed_peer(&instance, "active")))
    }

    async fn delete_seed_peer(
        &self,
        request: Request<DeleteSeedPeerRequest>,
    ) -> Result<Response<()>, Status> {
        let request = request.into_inner();
        let cluster_id = self
            .service
            .resolve_cluster(request.seed_peer_cluster_id)
            .await
            .map_err(status)?;
        let deleted = self
            .service
            .db()
            .delete_instance(
                InstanceKind::SeedPeer,
                &request.hostname,
                &request.ip,
                cluster_id,
            )
            .await
            .map_err(|err| status(err.into()))?;
        if !deleted {
            return Err(status(ServiceError::NotRegistered { what: "seed peer" }));
        }
        Ok(Response::new(()))
    }

    async fn get_scheduler(
        &self,
        request: Request<GetSchedulerRequest>,
    ) -> Result<Response<Scheduler>, Status> {
        let request = request.into_inner();
        let instance = self
            .service
            .find(
                InstanceKind::Scheduler,
                &request.hostname,
                &request.ip,
                request.scheduler_cluster_id,
            )
            .await
            .map_err(status)?;
        let mut answer = scheduler(&instance, self.state(&instance));
        let cluster = self
            .service
            .db()
            .get_cluster(instance.cluster_id)
            .await
            .map_err(|err| status(err.into()))?;
        answer.scheduler_cluster = Some(scheduler_cluster(&cluster));
        let seeds = self
            .service
            .active_seed_peers(&[instance.cluster_id])
            .await
            .map_err(status)?;
        answer.seed_peers = seeds.iter().map(|seed| seed_peer(seed, "active")).collect();
        Ok(Response::new(answer))
    }

    async fn update_scheduler(
        &self,
        request: Request<UpdateSchedulerRequest>,
    ) -> Result<Response<Scheduler>, Status> {
        let request = request.into_inner();
        let update = InstanceUpdate {
            hostname: request.hostname,
            ip: request.ip,
            port: i64::from(request.port),
            download_port: 0,
            peer_type: String::new(),
            idc: request.idc.unwrap_or_default(),
            location: request.location.unwrap_or_default(),
            cluster_id: 0,
            features: serde_json::to_string(&request.features).unwrap_or_else(|_| "[]".into()),
        };
        let instance = self
            .service
            .register(
                InstanceKind::Scheduler,
                update,
                request.scheduler_cluster_id,
            )
            .await
            .map_err(status)?;
        info!(hostname = %instance.hostname, ip = %instance.ip, port = instance.port, "scheduler registered");
        Ok(Response::new(scheduler(&instance, "active")))
    }

    async fn list_schedulers(
        &self,
        request: Request<ListSchedulersRequest>,
    ) -> Result<Response<ListSchedulersResponse>, Status> {
        let request = request.into_inner();
        let ip = request.ip.parse::<IpAddr>().ok();
        let client = Client {
            hostname: &request.hostname,
            ip,
            idc: request.idc.as_deref().filter(|idc| !idc.is_empty()),
            location: request
                .location
                .as_deref()
                .filter(|location| !location.is_empty()),
        };
        let discovery = self.service.discover(&client).await.map_err(status)?;
        let cluster = scheduler_cluster(&discovery.cluster);
        let seeds: Vec<SeedPeer> = discovery
            .seed_peers
            .iter()
            .map(|seed| seed_peer(seed, "active"))
            .collect();
        let schedulers = discovery
            .schedulers
            .iter()
            .map(|instance| {
                let mut answer = scheduler(instance, "active");
                answer.scheduler_cluster = Some(cluster.clone());
                answer.seed_peers = seeds.clone();
                answer
            })
            .collect::<Vec<_>>();
        debug!(
            hostname = %request.hostname,
            cluster = discovery.cluster.id,
            schedulers = schedulers.len(),
            "schedulers listed"
        );
        Ok(Response::new(ListSchedulersResponse { schedulers }))
    }

    async fn list_applications(
        &self,
        _request: Request<ListApplicationsRequest>,
    ) -> Result<Response<ListApplicationsResponse>, Status> {
        let rows = self
            .service
            .db()
            .list_applications()
            .await
            .map_err(|err| status(err.into()))?;
        let applications = rows
            .into_iter()
            .map(|(id, name, url, bio, priority)| Application {
                id: u64::try_from(id).unwrap_or_default(),
                name,
                url,
                bio,
                priority: parse_priority(&priority),
            })
            .collect();
        Ok(Response::new(ListApplicationsResponse { applications }))
    }

    async fn keep_alive(
        &self,
        request: Request<Streaming<KeepAliveRequest>>,
    ) -> Result<Response<()>, Status> {
        let mut stream = request.into_inner();
        let mut identity: Option<(InstanceKind, String, String, i64)> = None;
        loop {
            let message = match stream.message().await {
                Ok(Some(message)) => message,
                // The instance closed its stream or went away: it is gone at once.
                Ok(None) | Err(_) => break,
            };
            let kind = match SourceType::try_from(message.source_type) {
                Ok(SourceType::SchedulerSource) => InstanceKind::Scheduler,
                Ok(SourceType::SeedPeerSource) => InstanceKind::SeedPeer,
                // Normal peers have no lease; nothing to record.
                Ok(SourceType::PeerSource) => continue,
                Err(_) => {
                    return Err(status(ServiceError::Invalid(format!(
                        "unknown source type {}",
                        message.source_type
                    ))))
                }
            };
            let cluster_id = self
                .service
                .resolve_cluster(message.cluster_id)
                .await
                .map_err(status)?;
            self.service
                .keep_alive(kind, &message.hostname, &message.ip, cluster_id)
                .await
                .map_err(status)?;
            identity = Some((kind, message.hostname, message.ip, cluster_id));
        }
        if let Some((kind, hostname, ip, cluster_id)) = identity {
            info!(%hostname, %ip, "keepalive stream ended; instance inactive");
            self.service
                .leave(kind, &hostname, &ip, cluster_id)
                .await
                .map_err(status)?;
        }
        Ok(Response::new(()))
    }
}

/// Applications store their priority as `{"value": N, "urls": [{"regex": R, "value": N}]}`.
fn parse_priority(text: &str) -> Option<ApplicationPriority> {
    let value: serde_json::Value = serde_json::from_str(text).ok()?;
    let number = |value: &serde_json::Value| {
        value
            .get("value")
            .and_then(serde_json::Value::as_i64)
            .and_then(|value| i32::try_from(value).ok())
            .unwrap_or_default()
    };
    let urls = value
        .get("urls")
        .and_then(serde_json::Value::as_array)
        .map(|urls| {
            urls.iter()
                .map(|url| UrlPriority {
                    regex: url
                        .get("regex")
                        .and_then(serde_json::Value::as_str)
                        .unwrap_or_default()
                        .to_string(),
                    value: number(url),
                })
                .collect()
        })
        .unwrap_or_default();
    Some(ApplicationPriority {
        value: number(&value),
        urls,
    })
}
