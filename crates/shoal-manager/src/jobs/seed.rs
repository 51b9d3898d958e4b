//! Asking a seed daemon to download one blob or file: `dfdaemon.v2.DfdaemonUpload/DownloadTask`
//! on the seed's upload port, draining the progress stream to its end (upstream seeds stall when
//! nobody reads it). The seed downloads like any peer, announcing to its scheduler, so the task
//! is then found on the seed by every daemon of the cluster.
//!
//! A seed goes on with a download whose caller went away, so a manager that dies mid-trigger
//! leaves the download running; the replica that takes the job over triggers the same task
//! again and the seed joins the running download or answers from its store.

use std::time::Duration;

use shoal_client::seed::{download_to_end, SeedDownloadError, SeedTimeouts};
use shoal_protocol::common::Download;

/// A seed that cannot accept a TCP connection in 3 s is not healthy; it has 30 s to accept the
/// call, and 360 s between two progress messages (a piece on a slow origin).
const TIMEOUTS: SeedTimeouts = SeedTimeouts {
    connect: Duration::from_secs(3),
    call: Duration::from_secs(30),
    progress: Duration::from_secs(360),
};

/// Runs `download` on the seed whose upload gRPC listens on `addr` (`ip:port`) to its end.
pub(crate) async fn trigger(addr: &str, download: Download) -> Result<(), SeedDownloadError> {
    download_to_end(addr, download, TIMEOUTS).await
}
