//! The scheduler's in-memory state: hosts, tasks and peers.
//!
//! State is soft: daemons re-announce hosts every few minutes and peers exist only while a
//! download runs (plus `peer_ttl`). [`SharedState`] wraps one [`State`] in a mutex; every
//! operation is a short synchronous critical section and the lock is never held across an
//! `.await`. Children waiting for a parent subscribe to their task's change signal
//! ([`TaskRecord::subscribe`]) under the same lock that found nothing, and every change that can
//! help them (a registration, a first piece, an answer, a failure, a host announcement, a seed
//! trigger result) calls [`TaskRecord::notify`].
//!
//! - `host`, `task`, `peer`: the records.
//! - `schedule`: one scheduling step for a child (selection plus back-to-source policy).
//! - `view`: conversion of records to `common.v2` messages.
//! - `gc`: expiry of hosts, finished peers and empty tasks.

mod gc;
mod host;
mod peer;
mod schedule;
mod task;
mod view;

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use shoal_protocol::common;
use shoal_types::{HostId, PeerId, TaskId};
use tokio::time::Instant;

pub(crate) use gc::spawn_gc;
pub(crate) use host::HostRecord;
pub(crate) use peer::{PeerOutcome, PeerRecord, PeerState, Registration};
pub(crate) use schedule::Step;
pub(crate) use task::{SeedTrigger, TaskRecord};

/// A cheap-to-clone handle on the state.
#[derive(Debug, Clone, Default)]
pub(crate) struct SharedState(Arc<Mutex<State>>);

/// The first answer a registration gets without any scheduling.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum FirstAnswer {
    /// The peer already holds the whole task.
    MetadataOnly,
    /// The task has no content.
    Empty,
    /// Parents or the origin must be chosen.
    Schedule,
}

/// Hosts, tasks and peers.
#[derive(Debug, Default)]
pub(crate) struct State {
    hosts: HashMap<HostId, HostRecord>,
    tasks: HashMap<TaskId, TaskRecord>,
    peers: HashMap<PeerId, PeerRecord>,
}

impl SharedState {
    /// Locks the state. A panic while holding the lock cannot leave the maps half-updated in a
    /// way that matters more than losing the scheduler, so a poisoned lock is used as is.
    pub(crate) fn lock(&self) -> MutexGuard<'_, State> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl State {
    /// Upserts a host; returns whether it was new.
    pub(crate) fn announce_host(&mut self, host: common::Host, now: Instant) -> bool {
        let id = HostId::from_wire(host.id.clone());
        let is_seed = host.r#type >= 1;
        let record = HostRecord {
            host,
            announced_at: now,
        };
        let new = self.hosts.insert(id.clone(), record).is_none();
        // A newly usable seed can unblock any waiting task; other hosts only their own peers.
        let affected: Vec<TaskId> = if is_seed {
            self.tasks.keys().cloned().collect()
        } else {
            self.tasks_of_host(&id)
        };
        self.notify_tasks(&affected);
        new
    }

    /// Forgets a host and its peers; returns whether the host was known.
    pub(crate) fn delete_host(&mut self, id: &HostId) -> bool {
        let known = self.hosts.remove(id).is_some();
        let peers: Vec<PeerId> = self
            .peers
            .values()
            .filter(|peer| peer.host_id() == id)
            .map(|peer| peer.id().clone())
            .collect();
        for peer in &peers {
            self.remove_peer(peer);
        }
        known || !peers.is_empty()
    }

    /// Every announced host, or those of type `host_type` when given.
    pub(crate) fn list_hosts(&self, host_type: Option<u32>) -> Vec<common::Host> {
        self.hosts
            .values()
            .filter(|record| host_type.is_none_or(|wanted| record.host.r#type == wanted))
            .map(|record| record.host.clone())
            .collect()
    }

    /// Records a registration (replacing an earlier peer with the same id) and says whether the
    /// peer needs scheduling.
    pub(crate) fn register_peer(&mut self, registration: Registration) -> FirstAnswer {
        let peer_id = registration.peer_id.clone();
        self.remove_peer(&peer_id);
        let task = self
            .tasks
            .entry(registration.task_id.clone())
            .or_insert_with(|| TaskRecord::new(registration.task_id.clone()));
        task.learn_layout(
            registration.layout.content_length,
            registration.layout.piece_length,
            registration.piece_count,
        );
        task.peers.insert(peer_id.clone());
        let mut peer = PeerRecord::new(registration);
        let answer = if peer.registration.metadata_only {
            peer.advance(PeerState::Succeeded);
            FirstAnswer::MetadataOnly
        } else if peer.registration.layout.content_length == Some(0) {
            peer.advance(PeerState::Running);
            FirstAnswer::Empty
        } else {
            FirstAnswer::Schedule
        };
        task.notify();
        self.peers.insert(peer_id, peer);
        answer
    }

    /// The peer started downloading (from parents, or from the origin).
    pub(crate) fn peer_started(&mut self, id: &PeerId, back_to_source: bool) {
        let Some(peer) = self.peers.get_mut(id) else {
            return;
        };
        if back_to_source {
            peer.back_to_source = true;
            peer.advance(PeerState::BackToSource);
        } else if peer.state == PeerState::Pending {
            peer.advance(PeerState::Running);
        }
    }

    /// The peer holds `piece` now (from `piece.parent_id`, or from the origin).
    pub(crate) fn piece_finished(&mut self, id: &PeerId, piece: &common::Piece, from_source: bool) {
        let Some(peer) = self.peers.get_mut(id) else {
            return;
        };
        let task_piece_count = self
            .tasks
            .get(peer.task_id())
            .and_then(|task| task.piece_count);
        let piece_count = peer.registration.piece_count.or(task_piece_count);
        if let Some(parent) = piece
            .parent_id
            .as_deref()
            .filter(|parent| !parent.is_empty())
        {
            let parent = PeerId::from_wire(parent);
            if &parent != peer.id() {
                peer.parents.insert(parent);
            }
        }
        if from_source && !peer.back_to_source {
            peer.back_to_source = true;
            peer.advance(PeerState::BackToSource);
        } else if peer.state == PeerState::Pending {
            peer.advance(PeerState::Running);
        }
        let first = peer.add_piece(piece.number, piece_count);
        if first {
            let task_id = peer.task_id().clone();
            self.notify_tasks(&[task_id]);
        }
    }

    /// A piece from `parent` failed for `child`: a temporary failure blocks the parent for this
    /// child; a permanent one (corrupt data) bans it for the whole task.
    pub(crate) fn piece_failed(&mut self, child: &PeerId, parent: PeerId, temporary: bool) {
        let Some(peer) = self.peers.get_mut(child) else {
            return;
        };
        peer.parents.remove(&parent);
        if temporary {
            peer.blocklist.insert(parent);
            return;
        }
        if let Some(task) = self.tasks.get_mut(peer.task_id()) {
            task.banned.insert(parent);
        }
    }

    /// The child asked for new parents instead of `parents`.
    pub(crate) fn block_parents(
        &mut self,
        child: &PeerId,
        parents: impl IntoIterator<Item = PeerId>,
    ) {
        let Some(peer) = self.peers.get_mut(child) else {
            return;
        };
        for parent in parents {
            peer.parents.remove(&parent);
            peer.blocklist.insert(parent);
        }
    }

    /// Records a terminal message (or the loss of the stream, as a failure).
    pub(crate) fn peer_finished(&mut self, id: &PeerId, outcome: PeerOutcome, now: Instant) {
        let Some(peer) = self.peers.get_mut(id) else {
            return;
        };
        peer.finish(outcome, now);
        let task_id = peer.task_id().clone();
        self.notify_tasks(&[task_id]);
    }

    /// The result of a task's seed trigger.
    pub(crate) fn seed_trigger_finished(&mut self, task_id: &TaskId, succeeded: bool) {
        if let Some(task) = self.tasks.get_mut(task_id) {
            task.seed_trigger = if succeeded {
                SeedTrigger::Completed
            } else {
                SeedTrigger::Failed
            };
            task.notify();
        }
    }

    /// Forgets one peer; returns whether it existed.
    pub(crate) fn delete_peer(&mut self, id: &PeerId) -> bool {
        self.remove_peer(id)
    }

    /// Forgets the peers `host_id` has for `task_id`; returns how many.
    pub(crate) fn delete_task_on_host(&mut self, task_id: &TaskId, host_id: &HostId) -> usize {
        let Some(task) = self.tasks.get(task_id) else {
            return 0;
        };
        let peers: Vec<PeerId> = task
            .peers
            .iter()
            .filter(|id| {
                self.peers
                    .get(*id)
                    .is_some_and(|peer| peer.host_id() == host_id)
            })
            .cloned()
            .collect();
        for peer in &peers {
            self.remove_peer(peer);
        }
        peers.len()
    }

    fn remove_peer(&mut self, id: &PeerId) -> bool {
        let Some(peer) = self.peers.remove(id) else {
            return false;
        };
        if let Some(task) = self.tasks.get_mut(peer.task_id()) {
            task.peers.remove(id);
            task.notify();
        }
        true
    }

    fn tasks_of_host(&self, host_id: &HostId) -> Vec<TaskId> {
        let mut tasks: Vec<TaskId> = self
            .peers
            .values()
            .filter(|peer| peer.host_id() == host_id)
            .map(|peer| peer.task_id().clone())
            .collect();
        tasks.sort();
        tasks.dedup();
        tasks
    }

    fn notify_tasks(&mut self, task_ids: &[TaskId]) {
        for task_id in task_ids {
            if let Some(task) = self.tasks.get_mut(task_id) {
                task.notify();
            }
        }
    }
}

#[cfg(test)]
mod tests;
