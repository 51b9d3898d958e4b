//! Scheduler discovery through a manager (`manager:` config, `--manager` flag).
//!
//! At start and every refresh interval the daemon asks the manager for the schedulers of its
//! cluster (`ListSchedulers`) and replaces the scheduler set when the answer changed, then
//! announces its host to the new set at once. While no scheduler is known it asks every couple
//! of seconds. A manager that cannot be reached keeps the last known set.
//!
//! Seed daemons also register themselves (`UpdateSeedPeer`) and keep their lease alive, so the
//! manager can hand them preheat jobs.

use std::time::Duration;

use shoal_client::manager::{ManagerCallError, ManagerClient, Registration, Requester};
use tokio_util::sync::CancellationToken;

use crate::announcer::Announcer;
use crate::scheduler::{SchedulerEntry, Schedulers};

/// Refresh period while the scheduler set is empty.
const EMPTY_REFRESH: Duration = Duration::from_secs(2);

/// Keeps [`Schedulers`] in line with what the manager says.
#[derive(Debug)]
pub(crate) struct Discovery {
    pub(crate) manager: ManagerClient,
    pub(crate) requester: Requester,
    pub(crate) schedulers: Schedulers,
    pub(crate) announcer: Announcer,
    pub(crate) interval: Duration,
}

impl Discovery {
    /// Asks the manager once; on a changed answer replaces the set and announces the host.
    pub(crate) async fn refresh_once(&self) -> Result<(), ManagerCallError> {
        let discovered = self.manager.list_schedulers(&self.requester).await?;
        let entries: Vec<SchedulerEntry> = discovered
            .into_iter()
            .map(|scheduler| SchedulerEntry {
                name: if scheduler.hostname.is_empty() {
                    SchedulerEntry::from_url(&scheduler.url).name
                } else {
                    scheduler.hostname
                },
                url: scheduler.url,
            })
            .collect();
        if entries.is_empty() {
            tracing::warn!(
                manager = self.manager.url(),
                "manager knows no active scheduler for this host"
            );
            return Ok(());
        }
        match self.schedulers.replace(&entries) {
            Ok(true) => {
                let urls: Vec<&str> = entries.iter().map(|entry| entry.url.as_str()).collect();
                tracing::info!(schedulers = ?urls, "scheduler set changed");
                self.announcer.announce_once().await;
            }
            Ok(false) => {}
            Err(err) => tracing::warn!(error = %err, "manager sent an unusable scheduler address"),
        }
        Ok(())
    }

    /// Refreshes until cancelled.
    pub(crate) async fn run(self, cancel: CancellationToken) {
        loop {
            let wait = if self.schedulers.all().is_empty() {
                EMPTY_REFRESH.min(self.interval)
            } else {
                self.interval
            };
            tokio::select! {
                biased;
                _ = cancel.cancelled() => return,
                _ = tokio::time::sleep(wait) => {}
            }
            if let Err(err) = self.refresh_once().await {
                tracing::warn!(manager = self.manager.url(), error = %err, "failed to refresh schedulers from the manager");
            }
        }
    }
}

/// The registration a seed daemon keeps alive with the manager.
pub(crate) fn seed_registration(
    announcer: &Announcer,
    upload_port: u16,
    cluster_id: u64,
) -> Registration {
    Registration::SeedPeer {
        hostname: announcer.host.hostname.clone(),
        ip: announcer.host.ip.to_string(),
        port: upload_port,
        cluster_id,
        idc: announcer.idc.clone(),
        location: announcer.location.clone(),
    }
}
