//! Computing one answer for a child: step the state until it yields an answer, waiting on the
//! task's change signal in between (event driven, bounded by `schedule_wait`).

use std::sync::Arc;

use shoal_protocol::common::Download;
use shoal_protocol::scheduler::AnnouncePeerResponse;
use shoal_types::{PeerId, TaskId};
use tokio::time::Instant;
use tracing::debug;

use super::AnnounceError;
use crate::scheduling::ScheduleMode;
use crate::seed;
use crate::service::Scheduler;
use crate::state::Step;

/// The answer for `peer_id` (Normal or NeedBackToSource), or why there is none.
pub(super) async fn schedule(
    scheduler: Scheduler,
    peer_id: PeerId,
    task_id: TaskId,
    download: Arc<Download>,
    mode: ScheduleMode,
) -> Result<AnnouncePeerResponse, AnnounceError> {
    let started = Instant::now();
    let deadline = started + scheduler.schedule_wait;
    loop {
        let deadline_passed = Instant::now() >= deadline;
        let step = scheduler.state.lock().schedule_step(
            &peer_id,
            &scheduler.policy,
            mode,
            deadline_passed,
        );
        match step {
            Step::Respond(response) => return Ok(response),
            Step::TriggerSeed(target) => seed::spawn_trigger(
                &scheduler.tracker,
                scheduler.state.clone(),
                scheduler.cancel.clone(),
                task_id.clone(),
                target,
                &download,
            ),
            // The policy never waits past the deadline; this guards against a spin.
            Step::Wait(_) if deadline_passed => {
                return Err(AnnounceError::NoParent {
                    peer_id,
                    waited: started.elapsed(),
                });
            }
            Step::Wait(mut changes) => {
                debug!("waiting for a parent");
                // A closed channel means the task is gone; the next step reports it.
                let _ = tokio::time::timeout_at(deadline, changes.changed()).await;
            }
            Step::GiveUp => {
                return Err(AnnounceError::NoParent {
                    peer_id,
                    waited: started.elapsed(),
                });
            }
            Step::PeerGone => return Err(AnnounceError::PeerDeleted(peer_id)),
        }
    }
}
