//! One scheduling step for a child: select parents, apply the back-to-source policy, and record
//! the result (parent edges, origin budget, seed trigger) in the same critical section.

use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};

use shoal_protocol::common::Priority;
use shoal_protocol::scheduler::{
    announce_peer_response, AnnouncePeerResponse, NeedBackToSourceResponse, NormalTaskResponse,
};
use shoal_types::{PeerId, TaskId};
use tokio::sync::watch;

use super::{view, HostRecord, PeerRecord, PeerState, SeedTrigger, State, TaskRecord};
use crate::scheduling::{
    self, decide, BackToSourceReason, ChildView, Decision, DecisionInput, HostView, PeerView,
    Policy, ScheduleMode, SeedStatus,
};
use crate::seed::SeedTarget;

/// The outcome of one step.
#[derive(Debug)]
pub(crate) enum Step {
    /// Send this answer (Normal with parents, or NeedBackToSource).
    Respond(AnnouncePeerResponse),
    /// Trigger this seed (the task is marked as triggered), then step again.
    TriggerSeed(SeedTarget),
    /// Nothing to answer yet; step again when this receiver sees a change.
    Wait(watch::Receiver<u64>),
    /// No parent in time and the origin is not allowed.
    GiveUp,
    /// The peer (or its task) was deleted.
    PeerGone,
}

impl State {
    /// Decides what to answer `child_id` now.
    pub(crate) fn schedule_step(
        &mut self,
        child_id: &PeerId,
        policy: &Policy,
        mode: ScheduleMode,
        deadline_passed: bool,
    ) -> Step {
        let Some(child) = self.peers.get(child_id) else {
            return Step::PeerGone;
        };
        let Some(task) = self.tasks.get(child.task_id()) else {
            return Step::PeerGone;
        };
        let parents = self.select_for(child, task, policy.candidate_parent_limit);
        let from_seed_host = self
            .hosts
            .get(child.host_id())
            .is_some_and(HostRecord::is_seed);
        let (seed, target) = self.seed_status(child, task, policy, from_seed_host);
        let input = DecisionInput {
            has_parents: !parents.is_empty(),
            mode,
            from_seed_host,
            need_back_to_source: child.registration.need_back_to_source,
            disable_back_to_source: child.registration.disable_back_to_source,
            back_to_source_active: self.back_to_source_active(task),
            back_to_source_limit: policy.max_back_to_source_peers,
            seed,
            deadline_passed,
        };
        let task_id = task.id.clone();
        match decide(&input) {
            Decision::Parents => self.answer_parents(child_id, &task_id, parents),
            Decision::BackToSource(reason) => {
                self.answer_back_to_source(child_id, &task_id, reason)
            }
            Decision::TriggerSeed => match (target, self.tasks.get_mut(&task_id)) {
                (Some(target), Some(task)) => {
                    task.seed_trigger = SeedTrigger::Running;
                    Step::TriggerSeed(target)
                }
                _ => self.wait(&task_id),
            },
            Decision::Wait => self.wait(&task_id),
            Decision::GiveUp => Step::GiveUp,
        }
    }

    fn select_for(&self, child: &PeerRecord, task: &TaskRecord, limit: usize) -> Vec<PeerId> {
        let child_host = self.hosts.get(child.host_id());
        let child_view = ChildView {
            id: child.id(),
            host_id: child.host_id(),
            idc: child_host.and_then(HostRecord::idc),
            location: child_host.and_then(HostRecord::location),
            layout: child.registration.layout,
            blocklist: &child.blocklist,
        };
        let peers: Vec<PeerView<'_>> = task
            .peers
            .iter()
            .filter_map(|id| self.peers.get(id))
            .map(|peer| PeerView {
                id: peer.id(),
                host: self.host_view(peer),
                serving: peer.state.is_serving(),
                active: !peer.state.is_terminal(),
                banned: task.banned.contains(peer.id()),
                held_fraction: peer.held_fraction(task.piece_count),
                layout: peer.registration.layout,
                parents: &peer.parents,
            })
            .collect();
        scheduling::select_parents(&child_view, &peers, limit)
            .into_iter()
            .cloned()
            .collect()
    }

    /// The peer's host as a parent candidate: announced, with a dialable address.
    fn host_view<'a>(&'a self, peer: &'a PeerRecord) -> Option<HostView<'a>> {
        let host = self.hosts.get(peer.host_id())?;
        host.upload_addr()?;
        Some(HostView {
            id: peer.host_id(),
            disable_shared: host.host.disable_shared,
            is_seed: host.is_seed(),
            idc: host.idc(),
            location: host.location(),
        })
    }

    fn back_to_source_active(&self, task: &TaskRecord) -> usize {
        task.peers
            .iter()
            .filter_map(|id| self.peers.get(id))
            .filter(|peer| peer.back_to_source && !peer.state.is_terminal())
            .count()
    }

    fn seed_status(
        &self,
        child: &PeerRecord,
        task: &TaskRecord,
        policy: &Policy,
        from_seed_host: bool,
    ) -> (SeedStatus, Option<SeedTarget>) {
        match task.seed_trigger {
            SeedTrigger::Running => return (SeedStatus::Pending, None),
            SeedTrigger::Failed => return (SeedStatus::Failed, None),
            SeedTrigger::Completed => return (SeedStatus::Unavailable, None),
            SeedTrigger::NotTriggered => {}
        }
        // LEVEL3: the first normal peer itself goes to the origin, no seed.
        let level3 = child.registration.priority == Priority::Level3 as i32;
        if !policy.seed_trigger || from_seed_host || level3 {
            return (SeedStatus::Unavailable, None);
        }
        match self.pick_seed(&task.id) {
            Some(target) => (SeedStatus::Available, Some(target)),
            None => (SeedStatus::Unavailable, None),
        }
    }

    /// A stable choice among the usable seed hosts, keyed by task id.
    fn pick_seed(&self, task_id: &TaskId) -> Option<SeedTarget> {
        let mut seeds: Vec<(&HostRecord, std::net::SocketAddr)> = self
            .hosts
            .values()
            .filter(|host| host.is_seed() && !host.host.disable_shared)
            .filter_map(|host| Some((host, host.upload_addr()?)))
            .collect();
        if seeds.is_empty() {
            return None;
        }
        seeds.sort_by(|(a, _), (b, _)| a.host.id.cmp(&b.host.id));
        let mut hasher = DefaultHasher::new();
        task_id.hash(&mut hasher);
        let index = usize::try_from(hasher.finish() % seeds.len() as u64).unwrap_or(0);
        let (host, addr) = seeds.get(index).or(seeds.first())?;
        Some(SeedTarget {
            host_id: shoal_types::HostId::from_wire(host.host.id.clone()),
            addr: *addr,
        })
    }

    fn answer_parents(
        &mut self,
        child_id: &PeerId,
        task_id: &TaskId,
        parents: Vec<PeerId>,
    ) -> Step {
        let candidates: Vec<_> = parents
            .iter()
            .filter_map(|id| {
                let peer = self.peers.get(id)?;
                let host = self.hosts.get(peer.host_id())?;
                Some(view::candidate_peer(peer, host))
            })
            .collect();
        if candidates.is_empty() {
            // Never answer Normal without parents: it burns one of the client's answers.
            return self.wait(task_id);
        }
        if let Some(child) = self.peers.get_mut(child_id) {
            child.parents.extend(parents);
            if child.state == PeerState::Pending {
                child.advance(PeerState::Running);
            }
        }
        self.notify_tasks(std::slice::from_ref(task_id));
        Step::Respond(AnnouncePeerResponse {
            response: Some(announce_peer_response::Response::NormalTaskResponse(
                NormalTaskResponse {
                    candidate_parents: candidates,
                },
            )),
        })
    }

    fn answer_back_to_source(
        &mut self,
        child_id: &PeerId,
        task_id: &TaskId,
        reason: BackToSourceReason,
    ) -> Step {
        if let Some(child) = self.peers.get_mut(child_id) {
            child.back_to_source = true;
            child.advance(PeerState::BackToSource);
        }
        self.notify_tasks(std::slice::from_ref(task_id));
        Step::Respond(AnnouncePeerResponse {
            response: Some(announce_peer_response::Response::NeedBackToSourceResponse(
                NeedBackToSourceResponse {
                    description: Some(reason.description().to_string()),
                },
            )),
        })
    }

    fn wait(&self, task_id: &TaskId) -> Step {
        match self.tasks.get(task_id) {
            Some(task) => Step::Wait(task.subscribe()),
            None => Step::PeerGone,
        }
    }
}
