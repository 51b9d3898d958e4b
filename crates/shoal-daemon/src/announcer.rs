//! Announces this host to every scheduler: at start, then every `announce_interval`, and
//! `DeleteHost` on shutdown. Errors are logged and retried on the next tick.

use std::time::Duration;

use shoal_protocol::common::{Build, Host, Network};
use shoal_protocol::scheduler::{AnnounceHostRequest, DeleteHostRequest};
use tokio_util::sync::CancellationToken;

use crate::scheduler::Schedulers;
use crate::HostIdentity;

/// What the announcer tells schedulers about this host.
#[derive(Debug, Clone)]
pub(crate) struct Announcer {
    pub(crate) schedulers: Schedulers,
    pub(crate) host: HostIdentity,
    pub(crate) upload_port: u16,
    pub(crate) idc: Option<String>,
    pub(crate) location: Option<String>,
    pub(crate) interval: Duration,
}

impl Announcer {
    fn host(&self) -> Host {
        Host {
            id: self.host.host_id.to_string(),
            r#type: u32::from(self.host.seed),
            hostname: self.host.hostname.clone(),
            ip: self.host.ip.to_string(),
            port: i32::from(self.upload_port),
            download_port: i32::from(self.upload_port),
            os: std::env::consts::OS.to_string(),
            network: Some(Network {
                idc: self.idc.clone(),
                location: self.location.clone(),
                ..Default::default()
            }),
            build: Some(Build {
                git_version: env!("CARGO_PKG_VERSION").to_string(),
                ..Default::default()
            }),
            name: self.host.hostname.clone(),
            ..Default::default()
        }
    }

    /// Announces once to every scheduler; returns how many accepted.
    pub(crate) async fn announce_once(&self) -> usize {
        let request = AnnounceHostRequest {
            host: Some(self.host()),
            interval: Some(shoal_protocol::convert::duration(self.interval)),
        };
        let mut accepted = 0;
        for (url, mut client) in self.schedulers.all() {
            match tokio::time::timeout(
                Duration::from_secs(10),
                client.announce_host(request.clone()),
            )
            .await
            {
                Ok(Ok(_)) => accepted += 1,
                Ok(Err(status)) => {
                    tracing::warn!(%url, code = ?status.code(), message = status.message(), "failed to announce host")
                }
                Err(_) => tracing::warn!(%url, "failed to announce host: timed out"),
            }
        }
        accepted
    }

    /// Announces until cancelled, then says goodbye.
    pub(crate) async fn run(self, cancel: CancellationToken) {
        let mut ticker = tokio::time::interval(self.interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                biased;
                _ = cancel.cancelled() => break,
                _ = ticker.tick() => { self.announce_once().await; }
            }
        }
        let request = DeleteHostRequest {
            host_id: self.host.host_id.to_string(),
        };
        for (url, mut client) in self.schedulers.all() {
            if let Err(err) =
                tokio::time::timeout(Duration::from_secs(2), client.delete_host(request.clone()))
                    .await
            {
                tracing::debug!(%url, error = %err, "delete host timed out");
            }
        }
    }
}
