//! Host records: the last announcement of each daemon and when it arrived.

use std::net::{IpAddr, SocketAddr};

use shoal_protocol::common;
use tokio::time::Instant;

/// One announced host.
#[derive(Debug)]
pub(crate) struct HostRecord {
    pub(crate) host: common::Host,
    pub(crate) announced_at: Instant,
}

impl HostRecord {
    /// Seed hosts announce `type >= 1` (super, strong and weak seeds upstream).
    pub(crate) fn is_seed(&self) -> bool {
        self.host.r#type >= 1
    }

    pub(crate) fn idc(&self) -> Option<&str> {
        self.host.network.as_ref()?.idc.as_deref()
    }

    pub(crate) fn location(&self) -> Option<&str> {
        self.host.network.as_ref()?.location.as_deref()
    }

    /// The upload gRPC address children and the scheduler dial; `None` unless the announced
    /// ip is an IP literal and the port is valid.
    pub(crate) fn upload_addr(&self) -> Option<SocketAddr> {
        let ip: IpAddr = self.host.ip.parse().ok()?;
        let port = u16::try_from(self.host.port)
            .ok()
            .filter(|port| *port != 0)?;
        Some(SocketAddr::new(ip, port))
    }
}
