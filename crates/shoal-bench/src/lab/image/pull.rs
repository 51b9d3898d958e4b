//! One system's container pulls: a private `containerd` per node inside the node's namespace,
//! `ctr images pull` at each node's arrival time (straight from the registry, or through the
//! node daemon's mirror), then a check of every node's image against the built one.
//!
//! The containerds start before and stop after the measured window; their logs are copied to
//! the system's log directory. A node's completion is the wall time of its pull, which fetches
//! every blob and unpacks the layers into the snapshotter.

use std::path::Path;

use anyhow::Context as _;
use shoal_cli::init::{InitOptions, Runtime};
use shoal_testkit::interop::containerd::{Containerd, ContainerdOptions, PullOptions};
use tokio::time::{Duration, Instant};

use super::registry::{bytes_to, ImageOrigin, PLATFORM};
use crate::lab::netns::{Host, Lab};
use crate::lab::origin::Sampler;
use crate::lab::systems::shoal::PROXY_PORT;
use crate::lab::systems::{Measured, NodeResult};
use crate::lab::Arrival;

/// What one system's pulls need.
#[derive(Debug)]
pub(crate) struct PullRun<'a> {
    pub(crate) lab: &'a Lab,
    pub(crate) origin: &'a ImageOrigin,
    pub(crate) arrival: Arrival,
    /// Longest one pull may take; a pull still running then has failed.
    pub(crate) node_timeout: Duration,
    /// This system's log directory.
    pub(crate) logs: &'a Path,
    /// Pull through `http://<node ip>:4001` (the node daemon's mirror) instead of directly.
    pub(crate) mirror: bool,
}

/// Runs every node's pull and checks the results; only a broken setup is an error.
pub(crate) async fn run(run: &PullRun<'_>) -> anyhow::Result<Measured> {
    let nodes = &run.lab.nodes;
    let containerds = futures::future::try_join_all(nodes.iter().map(|host| {
        Containerd::start_with(ContainerdOptions {
            netns: host.ns.clone(),
        })
    }))
    .await
    .context("start a containerd per node")?;
    if run.mirror {
        for (host, containerd) in nodes.iter().zip(&containerds) {
            mirror_through_daemon(run.origin, host, containerd)?;
        }
    }
    let options = PullOptions {
        platform: Some(PLATFORM.into()),
        // The bench's own timeout below decides; this only stops a pull that outlives it.
        timeout: Some(run.node_timeout * 2),
        ..PullOptions::default()
    };

    let log_mark = run.origin.log_len();
    let served_before = run.origin.served_bytes();
    let wire_before = run.origin.wire_bytes();
    let t0 = Instant::now();
    let sampler = Sampler::start_with(run.origin.counter(), t0);
    let pulls = nodes
        .iter()
        .zip(&containerds)
        .enumerate()
        .map(|(index, (host, containerd))| {
            let offset = run.arrival.offset(index);
            let options = &options;
            async move {
                tokio::time::sleep_until(t0 + offset).await;
                let start = Instant::now();
                let pull = containerd.pull_with(&run.origin.reference, options);
                let result = match tokio::time::timeout(run.node_timeout, pull).await {
                    Ok(result) => result,
                    Err(_) => Err(anyhow::anyhow!(
                        "{} did not complete within {:?}",
                        host.name,
                        run.node_timeout
                    )),
                };
                (offset, start.elapsed().as_secs_f64(), result)
            }
        });
    let finished = futures::future::join_all(pulls).await;
    // Let trailing transfers (a seed finishing its copy) and log lines reach the counters.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let samples = sampler.stop();
    let origin_bytes = run.origin.served_bytes().saturating_sub(served_before);
    let origin_wire_bytes = match (run.origin.wire_bytes(), wire_before) {
        (Some(after), Some(before)) => Some(after.saturating_sub(before)),
        _ => None,
    };
    let served = run.origin.served_since(log_mark);

    let mut per_node = Vec::new();
    for ((host, containerd), (offset, completion_s, result)) in
        nodes.iter().zip(&containerds).zip(finished)
    {
        let checked = match result {
            Ok(()) => verify(containerd, run.origin).await,
            Err(err) => Err(err),
        };
        let _ = std::fs::copy(
            containerd.log_path(),
            run.logs.join(format!("{}-containerd.log", host.name)),
        );
        // Clients are told apart by address only in namespaces; on loopback all are 127.0.0.1.
        let from_origin = run.lab.mode.is_netns().then(|| bytes_to(&served, &host.ip));
        per_node.push(NodeResult {
            node: host.name.clone(),
            arrival_s: offset.as_secs_f64(),
            completion_s,
            bytes_from_parents: (!run.mirror).then_some(0),
            bytes_from_origin: from_origin,
            sha256_ok: checked.is_ok(),
            error: checked.err().map(|err| format!("{err:#}")),
        });
    }
    Ok(Measured {
        per_node,
        origin_bytes,
        origin_wire_bytes,
        samples,
    })
}

/// Writes the node's hosts directory the way users do (`shoal init containerd --insecure`), so
/// its containerd pulls the registry's blobs through the node daemon's mirror.
fn mirror_through_daemon(
    origin: &ImageOrigin,
    host: &Host,
    containerd: &Containerd,
) -> anyhow::Result<()> {
    let options = InitOptions {
        runtime: Runtime::Containerd,
        proxy: format!("http://{}:{PROXY_PORT}", host.ip),
        registries: vec![origin.host()],
        config_dir: Some(containerd.hosts_dir().to_path_buf()),
        insecure: true,
    };
    shoal_cli::init::init(&options)
        .with_context(|| format!("write the mirror config of {}", host.name))?;
    Ok(())
}

/// The node's image is the pushed one: same manifest digest, same unpacked root filesystem.
async fn verify(containerd: &Containerd, origin: &ImageOrigin) -> anyhow::Result<()> {
    let reference = &origin.reference;
    let digest = containerd.image_digest(reference).await?;
    anyhow::ensure!(
        digest == origin.image.digest,
        "image digest {digest} differs from the pushed {}",
        origin.image.digest
    );
    let tree = containerd
        .unpacked_digest_for(reference, Some(PLATFORM))
        .await?;
    anyhow::ensure!(
        tree == origin.tree_digest,
        "unpacked tree {tree} differs from the built image's {}",
        origin.tree_digest
    );
    Ok(())
}
