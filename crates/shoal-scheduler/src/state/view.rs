//! Records rendered as `common.v2` messages for answers, StatTask and StatPeer.

use shoal_protocol::{common, convert};

use super::{HostRecord, PeerRecord, PeerState, State, TaskRecord};
use shoal_types::{PeerId, TaskId};

/// A candidate parent entry: the peer plus the address part of its announced host, which is
/// what the child dials (`ip`/`port`) and weights (`network`).
pub(crate) fn candidate_peer(peer: &PeerRecord, host: &HostRecord) -> common::Peer {
    common::Peer {
        id: peer.id().as_str().to_string(),
        state: peer.state.as_str().to_string(),
        host: Some(address_host(&host.host)),
        priority: peer.registration.priority,
        range: peer.registration.range,
        created_at: Some(convert::timestamp(peer.created_at)),
        updated_at: Some(convert::timestamp(peer.updated_at)),
        ..Default::default()
    }
}

fn address_host(host: &common::Host) -> common::Host {
    common::Host {
        id: host.id.clone(),
        r#type: host.r#type,
        hostname: host.hostname.clone(),
        ip: host.ip.clone(),
        port: host.port,
        download_port: host.download_port,
        network: host.network.clone(),
        ..Default::default()
    }
}

impl State {
    /// The task as `common.v2.Task`, or `None` when unknown.
    pub(crate) fn task_message(&self, task_id: &TaskId) -> Option<common::Task> {
        let task = self.tasks.get(task_id)?;
        Some(self.render_task(task))
    }

    /// The peer as `common.v2.Peer` (with its task and host), or `None` when unknown.
    pub(crate) fn peer_message(&self, peer_id: &PeerId) -> Option<common::Peer> {
        let peer = self.peers.get(peer_id)?;
        let task = self.tasks.get(peer.task_id());
        Some(common::Peer {
            id: peer.id().as_str().to_string(),
            range: peer.registration.range,
            priority: peer.registration.priority,
            state: peer.state.as_str().to_string(),
            task: task.map(|task| self.render_task(task)),
            host: self.hosts.get(peer.host_id()).map(|host| host.host.clone()),
            need_back_to_source: peer.registration.need_back_to_source,
            created_at: Some(convert::timestamp(peer.created_at)),
            updated_at: Some(convert::timestamp(peer.updated_at)),
            concurrent_piece_count: peer.registration.concurrent_piece_count,
            ..Default::default()
        })
    }

    fn render_task(&self, task: &TaskRecord) -> common::Task {
        let peers: Vec<&PeerRecord> = task
            .peers
            .iter()
            .filter_map(|id| self.peers.get(id))
            .collect();
        let has_available_peer = peers.iter().any(|peer| {
            peer.state.is_serving()
                && !task.banned.contains(peer.id())
                && self
                    .hosts
                    .get(peer.host_id())
                    .is_some_and(|host| !host.host.disable_shared && host.upload_addr().is_some())
        });
        common::Task {
            id: task.id.as_str().to_string(),
            r#type: common::TaskType::Standard as i32,
            content_length: task.content_length.unwrap_or(0),
            piece_count: task
                .piece_count
                .and_then(|count| u32::try_from(count).ok())
                .unwrap_or(0),
            state: task_state(&peers).to_string(),
            peer_count: u32::try_from(peers.len()).unwrap_or(u32::MAX),
            has_available_peer,
            created_at: Some(convert::timestamp(task.created_at)),
            updated_at: Some(convert::timestamp(task.updated_at)),
            ..Default::default()
        }
    }
}

/// The task's state from its peers: any holder makes it Succeeded, any download Running.
fn task_state(peers: &[&PeerRecord]) -> &'static str {
    let any = |state: PeerState| peers.iter().any(|peer| peer.state == state);
    if any(PeerState::Succeeded) {
        "Succeeded"
    } else if any(PeerState::Running) || any(PeerState::BackToSource) {
        "Running"
    } else if !peers.is_empty() && peers.iter().all(|peer| peer.state == PeerState::Failed) {
        "Failed"
    } else {
        "Pending"
    }
}
