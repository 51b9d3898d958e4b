//! The scheduler's operations, independent of tonic: validation of wire ids and the unary
//! RPCs over the state. AnnouncePeer lives in [`crate::announce`].

use std::str::FromStr;
use std::time::Duration;

use shoal_protocol::scheduler::{
    AnnounceHostRequest, DeleteHostRequest, DeletePeerRequest, DeleteTaskRequest, ListHostsRequest,
    ListHostsResponse, StatPeerRequest, StatTaskRequest,
};
use shoal_protocol::{common, ErrorCode};
use shoal_types::{HostId, PeerId, TaskId, TaskIdParseError};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, info};

use crate::scheduling::Policy;
use crate::state::SharedState;

/// Shared context of every RPC: the state, the scheduling knobs, and where to spawn work.
#[derive(Debug, Clone)]
pub(crate) struct Scheduler {
    pub(crate) state: SharedState,
    pub(crate) policy: Policy,
    /// How long a child may wait for a parent before the fallback applies.
    pub(crate) schedule_wait: Duration,
    /// An AnnouncePeer stream silent for this long (with no answer pending) is reclaimed.
    pub(crate) idle_timeout: Duration,
    /// Tracks every spawned announce session and seed trigger.
    pub(crate) tracker: TaskTracker,
    /// Fires when the scheduler shuts down.
    pub(crate) cancel: CancellationToken,
}

/// Why a unary request failed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ServiceError {
    #[error("request has no {0}")]
    MissingField(&'static str),
    #[error("request has an empty {0}")]
    EmptyField(&'static str),
    #[error("parse task id")]
    TaskId(#[source] TaskIdParseError),
    #[error("task {0} not found")]
    TaskNotFound(TaskId),
    #[error("peer {0} not found")]
    PeerNotFound(PeerId),
}

impl ServiceError {
    pub(crate) fn code(&self) -> ErrorCode {
        match self {
            Self::MissingField(_) | Self::EmptyField(_) | Self::TaskId(_) => {
                ErrorCode::InvalidArgument
            }
            Self::TaskNotFound(_) | Self::PeerNotFound(_) => ErrorCode::NotFound,
        }
    }
}

/// A host id from the wire; ids are opaque but must not be empty.
pub(crate) fn parse_host_id(id: &str) -> Result<HostId, ServiceError> {
    if id.is_empty() {
        return Err(ServiceError::EmptyField("host_id"));
    }
    Ok(HostId::from_wire(id))
}

/// A peer id from the wire; ids are opaque but must not be empty.
pub(crate) fn parse_peer_id(id: &str) -> Result<PeerId, ServiceError> {
    if id.is_empty() {
        return Err(ServiceError::EmptyField("peer_id"));
    }
    Ok(PeerId::from_wire(id))
}

/// A task id from the wire.
pub(crate) fn parse_task_id(id: &str) -> Result<TaskId, ServiceError> {
    if id.is_empty() {
        return Err(ServiceError::EmptyField("task_id"));
    }
    TaskId::from_str(id).map_err(ServiceError::TaskId)
}

impl Scheduler {
    /// Upserts the announced host.
    pub(crate) fn announce_host(&self, request: AnnounceHostRequest) -> Result<(), ServiceError> {
        let host = request.host.ok_or(ServiceError::MissingField("host"))?;
        let host_id = parse_host_id(&host.id)?;
        let (ip, port, seed) = (host.ip.clone(), host.port, host.r#type >= 1);
        let new = self.state.lock().announce_host(host, Instant::now());
        if new {
            info!(%host_id, %ip, port, seed, "host announced");
        } else {
            debug!(%host_id, "host re-announced");
        }
        Ok(())
    }

    /// Forgets the host and its peers.
    pub(crate) fn delete_host(&self, request: DeleteHostRequest) -> Result<(), ServiceError> {
        let host_id = parse_host_id(&request.host_id)?;
        if self.state.lock().delete_host(&host_id) {
            info!(%host_id, "host left");
        }
        Ok(())
    }

    /// Every announced host, filtered by `type` when the request sets it.
    pub(crate) fn list_hosts(&self, request: ListHostsRequest) -> ListHostsResponse {
        ListHostsResponse {
            hosts: self.state.lock().list_hosts(request.r#type),
        }
    }

    /// The task, or NotFound.
    pub(crate) fn stat_task(&self, request: StatTaskRequest) -> Result<common::Task, ServiceError> {
        let task_id = parse_task_id(&request.task_id)?;
        let task = self.state.lock().task_message(&task_id);
        task.ok_or(ServiceError::TaskNotFound(task_id))
    }

    /// The peer, or NotFound.
    pub(crate) fn stat_peer(&self, request: StatPeerRequest) -> Result<common::Peer, ServiceError> {
        let peer_id = parse_peer_id(&request.peer_id)?;
        let peer = self.state.lock().peer_message(&peer_id);
        peer.ok_or(ServiceError::PeerNotFound(peer_id))
    }

    /// Forgets the peer; deleting an unknown peer succeeds.
    pub(crate) fn delete_peer(&self, request: DeletePeerRequest) -> Result<(), ServiceError> {
        let peer_id = parse_peer_id(&request.peer_id)?;
        let deleted = self.state.lock().delete_peer(&peer_id);
        debug!(%peer_id, deleted, "peer deleted");
        Ok(())
    }

    /// Forgets the host's peers of the task: the host no longer holds it.
    pub(crate) fn delete_task(&self, request: DeleteTaskRequest) -> Result<(), ServiceError> {
        let host_id = parse_host_id(&request.host_id)?;
        let task_id = parse_task_id(&request.task_id)?;
        let deleted = self.state.lock().delete_task_on_host(&task_id, &host_id);
        debug!(%host_id, %task_id, peers = deleted, "task deleted on host");
        Ok(())
    }
}
