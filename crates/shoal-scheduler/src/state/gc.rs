//! Expiry of soft state: hosts that stopped announcing (with their peers), peers that finished
//! or failed more than `peer_ttl` ago, and tasks left without peers.

use std::time::Duration;

use shoal_types::{HostId, PeerId, TaskId};
use tokio::time::{Instant, MissedTickBehavior};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, info};

use super::{SharedState, State};

/// How often the collector runs; well below any TTL, so expiry is late by at most this much.
const GC_INTERVAL: Duration = Duration::from_secs(5);

/// What one collection removed.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct GcReport {
    pub(crate) hosts: usize,
    pub(crate) peers: usize,
    pub(crate) tasks: usize,
}

impl State {
    /// Removes what expired at `now`.
    pub(crate) fn collect_garbage(
        &mut self,
        now: Instant,
        host_ttl: Duration,
        peer_ttl: Duration,
    ) -> GcReport {
        let mut report = GcReport::default();
        let expired_hosts: Vec<HostId> = self
            .hosts
            .iter()
            .filter(|(_, host)| now.saturating_duration_since(host.announced_at) > host_ttl)
            .map(|(id, _)| id.clone())
            .collect();
        for host in &expired_hosts {
            self.delete_host(host);
            report.hosts += 1;
        }
        let expired_peers: Vec<PeerId> = self
            .peers
            .values()
            .filter(|peer| {
                peer.terminal_at
                    .is_some_and(|at| now.saturating_duration_since(at) > peer_ttl)
            })
            .map(|peer| peer.id().clone())
            .collect();
        for peer in &expired_peers {
            if self.remove_peer(peer) {
                report.peers += 1;
            }
        }
        let empty_tasks: Vec<TaskId> = self
            .tasks
            .values()
            .filter(|task| task.peers.is_empty())
            .map(|task| task.id.clone())
            .collect();
        for task in &empty_tasks {
            self.tasks.remove(task);
        }
        report.tasks = empty_tasks.len();
        report
    }
}

/// Runs the collector every [`GC_INTERVAL`] until `cancel` fires.
pub(crate) fn spawn_gc(
    tracker: &TaskTracker,
    state: SharedState,
    host_ttl: Duration,
    peer_ttl: Duration,
    cancel: CancellationToken,
) {
    tracker.spawn(async move {
        let mut interval = tokio::time::interval(GC_INTERVAL);
        interval.set_missed_tick_behavior(MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                biased;
                () = cancel.cancelled() => break,
                _ = interval.tick() => {}
            }
            let report = state
                .lock()
                .collect_garbage(Instant::now(), host_ttl, peer_ttl);
            if report.hosts > 0 {
                info!(
                    hosts = report.hosts,
                    "expired hosts that stopped announcing"
                );
            }
            if report != GcReport::default() {
                debug!(
                    hosts = report.hosts,
                    peers = report.peers,
                    tasks = report.tasks,
                    "collected scheduler state"
                );
            }
        }
    });
}
