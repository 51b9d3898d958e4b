//! The seed trigger: ask a seed daemon to fetch a cold task from the origin.
//!
//! The scheduler calls `dfdaemon.v2.DfdaemonUpload/DownloadTask` on the seed's upload port with
//! the child's `Download`, changed only where the seed must differ from the child (see
//! [`seed_download`]). The seed then registers its own peer with `need_back_to_source`, which
//! makes it a parent for every waiting child. The response stream is drained to its end, because
//! upstream seeds stall when nobody reads their progress. The result goes back into the task's
//! state ([`crate::state::State::seed_trigger_finished`]) so that waiting children fall back to
//! the origin when the seed cannot help.

use std::net::SocketAddr;
use std::time::Duration;

use shoal_client::seed::{download_to_end, SeedDownloadError, SeedTimeouts};
use shoal_protocol::common::Download;
use shoal_types::{HostId, TaskId};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, info, warn, Instrument};

use crate::state::SharedState;

/// Upstream daemons use 3 s to connect (a seed that cannot be reached that fast is not
/// healthy); 10 s for the seed to accept the call; between two progress messages, the upstream
/// per-piece timeout.
const TIMEOUTS: SeedTimeouts = SeedTimeouts {
    connect: Duration::from_secs(3),
    call: Duration::from_secs(10),
    progress: Duration::from_secs(360),
};

/// The seed host chosen for a task.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SeedTarget {
    pub(crate) host_id: HostId,
    /// The seed's upload gRPC address (`Host.ip`:`Host.port`).
    pub(crate) addr: SocketAddr,
}

/// Why a seed trigger failed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum SeedTriggerError {
    #[error(transparent)]
    Download(SeedDownloadError),
    #[error("seed trigger cancelled")]
    Cancelled,
}

/// The download a seed is asked to perform for `child`: the same task (every task-id input is
/// kept), but the whole content, from the origin, without the child's output path. The child's
/// `disable_back_to_source` is the child's own restriction, so the seed's copy clears it.
pub(crate) fn seed_download(child: &Download) -> Download {
    let mut download = child.clone();
    download.need_back_to_source = true;
    download.disable_back_to_source = false;
    download.metadata_only = false;
    download.output_path = None;
    download.range = None;
    download
        .request_header
        .retain(|name, _| !name.eq_ignore_ascii_case("range"));
    download
}

/// Triggers `target` for `task_id` in the background and records the result in `state`.
pub(crate) fn spawn_trigger(
    tracker: &TaskTracker,
    state: SharedState,
    cancel: CancellationToken,
    task_id: TaskId,
    target: SeedTarget,
    child: &Download,
) {
    let download = seed_download(child);
    let span = tracing::info_span!("seed_trigger", task_id = %task_id, host_id = %target.host_id);
    tracker.spawn(
        async move {
            info!(addr = %target.addr, "triggering seed");
            let result = tokio::select! {
                biased;
                () = cancel.cancelled() => Err(SeedTriggerError::Cancelled),
                result = trigger(target.addr, download) => result,
            };
            match &result {
                Ok(()) => debug!("seed finished the triggered download"),
                Err(SeedTriggerError::Cancelled) => return,
                Err(err) => warn!(error = %format!("{err:#}"), "seed trigger failed"),
            }
            state.lock().seed_trigger_finished(&task_id, result.is_ok());
        }
        .instrument(span),
    );
}

async fn trigger(addr: SocketAddr, download: Download) -> Result<(), SeedTriggerError> {
    download_to_end(&addr.to_string(), download, TIMEOUTS)
        .await
        .map_err(SeedTriggerError::Download)
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use shoal_protocol::common::Range;

    use super::*;

    #[test]
    fn seed_download_keeps_task_inputs_and_drops_child_specifics() {
        let child = Download {
            url: "https://example.com/blob".into(),
            tag: Some("tag".into()),
            application: Some("app".into()),
            piece_length: Some(4 << 20),
            filtered_query_params: vec!["x".into()],
            output_path: Some("/tmp/out".into()),
            range: Some(Range {
                start: 1,
                length: 2,
            }),
            disable_back_to_source: true,
            request_header: HashMap::from([
                ("Range".to_string(), "bytes=1-2".to_string()),
                ("Authorization".to_string(), "secret".to_string()),
            ]),
            ..Default::default()
        };
        let seed = seed_download(&child);
        assert!(seed.need_back_to_source);
        assert!(!seed.disable_back_to_source);
        assert_eq!(seed.output_path, None);
        assert_eq!(seed.range, None);
        assert_eq!(seed.request_header.len(), 1);
        assert!(seed.request_header.contains_key("Authorization"));
        assert_eq!(seed.url, child.url);
        assert_eq!(seed.tag, child.tag);
        assert_eq!(seed.application, child.application);
        assert_eq!(seed.piece_length, child.piece_length);
        assert_eq!(seed.filtered_query_params, child.filtered_query_params);
    }
}
