//! The image scenario's origin: Debian's `docker-registry` on the origin host, inside its
//! namespace so the origin's uplink shaping applies, holding a random image the bench built and
//! pushed with `skopeo` (from inside that namespace too), and the counters of what it served.
//!
//! Payload bytes are the bodies of GETs in the registry's access log; wire bytes are the
//! transmit counter of the origin namespace's `eth0` (netns mode), read through the registry's
//! pid like the file scenario's origin does.

use std::net::{IpAddr, SocketAddr};
use std::path::Path;

use anyhow::Context as _;
use shoal_testkit::interop::image::{BuiltImage, ImageSpec};
use shoal_testkit::interop::registry::{AccessLogEntry, Registry, RegistryOptions};
use shoal_testkit::interop::skopeo::CopyOptions;
use tokio::time::Instant;

use crate::lab::netns::Host;
use crate::lab::origin::{eth0_tx_bytes, wait_tcp};

/// The registry's port on the origin host.
const PORT: u16 = 5000;
/// The only platform built and pulled.
pub(crate) const PLATFORM: &str = "linux/amd64";
const ARCHITECTURE: &str = "amd64";

/// The registry with the image in it; stops the registry and removes its storage on drop.
#[derive(Debug)]
pub(crate) struct ImageOrigin {
    pub(crate) image: BuiltImage,
    /// `<origin ip>:5000/shoal/bench:v1`.
    pub(crate) reference: String,
    /// `F`: the bytes of one pull (manifest, config and layer blobs).
    pub(crate) pull_bytes: u64,
    /// The built image's unpacked root filesystem ([`shoal_testkit::interop::tree::FileTree`]).
    pub(crate) tree_digest: String,
    registry: Registry,
    netns: bool,
}

impl ImageOrigin {
    /// Builds an image of `layers` layers adding up to about `size` bytes under `work`, starts
    /// the registry on `host` and pushes the image to it.
    pub(crate) async fn start(
        host: &Host,
        work: &Path,
        size: u64,
        layers: usize,
    ) -> anyhow::Result<Self> {
        let spec = ImageSpec {
            name: "shoal/bench".into(),
            tag: "v1".into(),
            layers,
            layer_size: usize::try_from(size / layers as u64)
                .context("layer size does not fit in memory")?
                .max(1),
            files_per_layer: 4,
            seed: 5,
            multi_platform: false,
        };
        let started = Instant::now();
        let image = spec.build_async(work.join("image")).await?;
        eprintln!("built the image in {:.1}s", started.elapsed().as_secs_f64());
        let ip: IpAddr = host.ip.parse().context("parse the origin's address")?;
        let registry = Registry::start(RegistryOptions {
            netns: host.ns.clone(),
            listen: Some(SocketAddr::new(ip, PORT)),
            ..RegistryOptions::default()
        })
        .await
        .context("start docker-registry on the origin")?;
        wait_tcp(host, &host.ip, PORT, "docker-registry").await?;
        let push = CopyOptions {
            netns: host.ns.clone(),
            ..CopyOptions::default()
        };
        let reference = image.push_with(&registry.host(), push).await?;
        let platform = image
            .platform(ARCHITECTURE)
            .context("the image has no linux/amd64 platform")?;
        let tree_digest = platform.tree_digest.clone();
        let pull_bytes = image
            .pull_bytes(ARCHITECTURE)
            .context("size the image's blobs")?;
        Ok(Self {
            image,
            reference,
            pull_bytes,
            tree_digest,
            netns: host.ns.is_some(),
            registry,
        })
    }

    /// `<ip>:<port>`, the registry host that containerd's hosts directory names.
    pub(crate) fn host(&self) -> String {
        self.registry.host()
    }

    /// Access log lines so far (a mark for [`ImageOrigin::served_since`]).
    pub(crate) fn log_len(&self) -> usize {
        self.registry
            .access_log()
            .map_or(0, |entries| entries.len())
    }

    /// GETs answered since the mark `from`.
    pub(crate) fn served_since(&self, from: usize) -> Vec<AccessLogEntry> {
        let entries = self.registry.access_log().unwrap_or_default();
        entries
            .into_iter()
            .skip(from)
            .filter(|entry| entry.method == "GET")
            .collect()
    }

    /// Body bytes of every GET the registry logged.
    pub(crate) fn served_bytes(&self) -> u64 {
        served_bytes(&self.registry.access_log().unwrap_or_default())
    }

    /// Bytes sent on the origin's link (netns mode), else `None`.
    pub(crate) fn wire_bytes(&self) -> Option<u64> {
        self.netns
            .then(|| eth0_tx_bytes(self.registry.pid()))
            .flatten()
    }

    /// The counter the bandwidth chart samples: wire bytes in netns mode, else logged bytes.
    pub(crate) fn counter(&self) -> impl Fn() -> u64 + Send + 'static {
        let pid = self.netns.then_some(self.registry.pid());
        let access_log = self.registry.access_log_path();
        move || match pid.and_then(eth0_tx_bytes) {
            Some(bytes) => bytes,
            None => {
                let text = std::fs::read_to_string(&access_log).unwrap_or_default();
                let entries: Vec<AccessLogEntry> = text
                    .lines()
                    .filter_map(shoal_testkit::interop::registry::parse_access_line)
                    .collect();
                served_bytes(&entries)
            }
        }
    }

    /// Copies the registry's access and application logs into `logs`.
    pub(crate) fn keep_logs(&self, logs: &Path) {
        let _ = std::fs::copy(
            self.registry.access_log_path(),
            logs.join("registry-access.log"),
        );
        let _ = std::fs::copy(self.registry.log_path(), logs.join("registry.log"));
    }
}

/// Body bytes of the GETs among `entries`.
fn served_bytes(entries: &[AccessLogEntry]) -> u64 {
    entries
        .iter()
        .filter(|entry| entry.method == "GET")
        .map(|entry| entry.bytes)
        .sum()
}

/// Body bytes of the GETs that came from `ip`.
pub(crate) fn bytes_to(entries: &[AccessLogEntry], ip: &str) -> u64 {
    entries
        .iter()
        .filter(|entry| entry.remote == ip)
        .map(|entry| entry.bytes)
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;
    use shoal_testkit::interop::registry::parse_access_line;

    #[test]
    fn counts_get_bodies_by_client() {
        let log = r#"10.213.0.50 - - [04/Dec/2026:10:00:00 +0000] "GET /v2/shoal/bench/blobs/sha256:aa HTTP/1.1" 200 1000 "" "containerd/1.6.20~ds1"
10.213.0.51 - - [04/Dec/2026:10:00:00 +0000] "GET /v2/shoal/bench/blobs/sha256:aa HTTP/1.1" 206 500 "" "shoal"
10.213.0.50 - - [04/Dec/2026:10:00:00 +0000] "HEAD /v2/shoal/bench/manifests/v1 HTTP/1.1" 200 900 "" "containerd/1.6.20~ds1"
10.213.0.50 - - [04/Dec/2026:10:00:00 +0000] "GET /v2/shoal/bench/manifests/v1 HTTP/1.1" 200 900 "" "containerd/1.6.20~ds1""#;
        let entries: Vec<AccessLogEntry> = log.lines().filter_map(parse_access_line).collect();
        assert_eq!(entries.len(), 4);
        assert_eq!(served_bytes(&entries), 2400);
        let gets: Vec<AccessLogEntry> = entries
            .into_iter()
            .filter(|entry| entry.method == "GET")
            .collect();
        assert_eq!(bytes_to(&gets, "10.213.0.50"), 1900);
        assert_eq!(bytes_to(&gets, "10.213.0.51"), 500);
        assert_eq!(bytes_to(&gets, "10.213.0.52"), 0);
    }
}
