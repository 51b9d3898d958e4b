//! The systems compared in one lab, and what they share: arrival timing, per-node timing,
//! content verification and the origin counters around the measured window.

pub(crate) mod bittorrent;
pub(crate) mod direct;
pub(crate) mod dragonfly;
pub(crate) mod shoal;

use std::future::Future;
use std::path::PathBuf;

use anyhow::Context as _;
use serde::Serialize;
use tokio::time::{Duration, Instant};

use super::netns::{which, Host, Lab};
use super::origin::{sha256_file, Origin, Sampler};
use super::{Arrival, Bandwidth, System};

/// Why `system` cannot run here (a program it needs is missing), or `None`.
pub(crate) fn missing_tools(system: System) -> Option<String> {
    let tools: &[(&str, &str)] = match system {
        System::Direct => &[("curl", "curl")],
        System::Bittorrent => &bittorrent::TOOLS,
        System::Dragonfly | System::Shoal => &[],
    };
    let missing: Vec<&str> = tools
        .iter()
        .filter(|(tool, _)| which(tool).is_none())
        .map(|(_, package)| *package)
        .collect();
    (!missing.is_empty()).then(|| {
        format!(
            "needs the Debian package(s) {} (scripts/setup.sh installs them)",
            missing.join(" ")
        )
    })
}

/// Everything a system's run needs.
#[derive(Debug)]
pub(crate) struct Ctx<'a> {
    pub(crate) lab: &'a Lab,
    pub(crate) origin: &'a Origin,
    pub(crate) arrival: Arrival,
    /// Per-node bandwidth, applied by the tools themselves in loopback mode.
    pub(crate) node_bw: Bandwidth,
    /// The origin's uplink; in loopback mode only the BitTorrent seeder can apply it.
    pub(crate) origin_bw: Bandwidth,
    /// This system's scratch directory (outputs, data dirs).
    pub(crate) work: PathBuf,
    /// This system's log directory, kept in the output directory.
    pub(crate) logs: PathBuf,
    pub(crate) shoal_bin: PathBuf,
    /// Longest one node may take; a node still running then has failed.
    pub(crate) node_timeout: Duration,
    /// `SHOAL_LOG` filter of the shoal processes.
    pub(crate) shoal_log: String,
}

impl Ctx<'_> {
    pub(crate) fn loopback(&self) -> bool {
        !self.lab.mode.is_netns()
    }

    /// A log file for one process.
    pub(crate) fn log(&self, name: &str) -> anyhow::Result<std::process::Stdio> {
        let file = std::fs::File::create(self.logs.join(format!("{name}.log")))
            .with_context(|| format!("create log for {name}"))?;
        Ok(file.into())
    }
}

/// One node's result.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct NodeResult {
    pub(crate) node: String,
    /// When the node started, seconds after the first arrival.
    pub(crate) arrival_s: f64,
    /// From its own arrival until its file was complete.
    pub(crate) completion_s: f64,
    pub(crate) bytes_from_parents: Option<u64>,
    pub(crate) bytes_from_origin: Option<u64>,
    pub(crate) sha256_ok: bool,
    pub(crate) error: Option<String>,
}

/// What one system's run measured.
#[derive(Debug, Clone)]
pub(crate) struct Measured {
    pub(crate) per_node: Vec<NodeResult>,
    /// Payload bytes the origin sent during the window: HTTP bodies nginx logged, plus what a
    /// system adds for its own origin-side uploader (the BitTorrent seeder).
    pub(crate) origin_bytes: u64,
    /// Bytes on the origin's link during the window (netns mode).
    pub(crate) origin_wire_bytes: Option<u64>,
    /// (seconds, bytes since start) of the origin counter.
    pub(crate) samples: Vec<(f64, u64)>,
}

/// Runs `fetch` on every node at its arrival time, times each, then checks every output.
///
/// `fetch(index, host, output)` returns when the node's file is complete. What it returns (e.g.
/// a process that keeps seeding, or where the bytes came from) comes back per node, in node
/// order, `None` where the fetch failed; nothing is dropped before every node finished.
pub(crate) async fn run_nodes<F, Fut, T>(
    ctx: &Ctx<'_>,
    fetch: F,
) -> anyhow::Result<(Measured, Vec<Option<T>>)>
where
    F: Fn(usize, Host, PathBuf) -> Fut,
    Fut: Future<Output = anyhow::Result<T>>,
{
    let out_dir = ctx.work.join("out");
    std::fs::create_dir_all(&out_dir).context("create output dir")?;
    let served_before = ctx.origin.served_bytes();
    let wire_before = ctx.origin.wire_bytes();
    let t0 = Instant::now();
    let sampler = Sampler::start(ctx.origin, t0);
    let runs = ctx.lab.nodes.iter().enumerate().map(|(index, host)| {
        let output = out_dir.join(&host.name);
        let offset = ctx.arrival.offset(index);
        let fut_output = output.clone();
        let host = host.clone();
        let fetch = &fetch;
        async move {
            tokio::time::sleep_until(t0 + offset).await;
            let start = Instant::now();
            let result =
                tokio::time::timeout(ctx.node_timeout, fetch(index, host.clone(), fut_output))
                    .await
                    .unwrap_or_else(|_| {
                        Err(anyhow::anyhow!(
                            "{} did not complete within {:?}",
                            host.name,
                            ctx.node_timeout
                        ))
                    });
            let completion = start.elapsed().as_secs_f64();
            (host, offset, completion, output, result)
        }
    });
    let finished = futures::future::join_all(runs).await;
    // Let trailing transfers (a seed finishing its copy) reach the counters.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let samples = sampler.stop();
    let origin_bytes = ctx.origin.served_bytes().saturating_sub(served_before);
    let origin_wire_bytes = match (ctx.origin.wire_bytes(), wire_before) {
        (Some(after), Some(before)) => Some(after.saturating_sub(before)),
        _ => None,
    };
    let mut per_node = Vec::new();
    let mut returned = Vec::new();
    for (host, offset, completion, output, result) in finished {
        let (sha256_ok, error) = match result {
            Ok(value) => {
                returned.push(Some(value));
                let expected = ctx.origin.sha256.clone();
                let path = output.clone();
                match tokio::task::spawn_blocking(move || sha256_file(&path)).await {
                    Ok(Ok(actual)) if actual == expected => (true, None),
                    Ok(Ok(actual)) => (false, Some(format!("sha256 {actual} differs"))),
                    Ok(Err(err)) => (false, Some(format!("{err:#}"))),
                    Err(err) => (false, Some(format!("hash task: {err}"))),
                }
            }
            Err(err) => {
                returned.push(None);
                (false, Some(format!("{err:#}")))
            }
        };
        let _ = std::fs::remove_file(&output);
        per_node.push(NodeResult {
            node: host.name,
            arrival_s: offset.as_secs_f64(),
            completion_s: completion,
            bytes_from_parents: None,
            bytes_from_origin: None,
            sha256_ok,
            error,
        });
    }
    let measured = Measured {
        per_node,
        origin_bytes,
        origin_wire_bytes,
        samples,
    };
    Ok((measured, returned))
}

/// Runs a command to completion, failing with its exit status and the tail of its stderr.
pub(crate) async fn run_to_end(command: tokio::process::Command, what: &str) -> anyhow::Result<()> {
    run_capture(command, what).await.map(drop)
}

/// Runs a command to completion and returns its stdout; fails like [`run_to_end`].
pub(crate) async fn run_capture(
    mut command: tokio::process::Command,
    what: &str,
) -> anyhow::Result<String> {
    let output = command
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .output()
        .await
        .with_context(|| format!("run {what}"))?;
    if !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr);
        let tail: Vec<&str> = stderr.lines().rev().take(3).collect();
        anyhow::bail!(
            "{what} exited with {}: {}",
            output.status,
            tail.into_iter().rev().collect::<Vec<_>>().join(" | ")
        );
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}
