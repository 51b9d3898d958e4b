//! Upstream Dragonfly: dfdaemon and dfget 1.5.10 under shoal's scheduler.
//!
//! The hub runs shoal's scheduler and the seed hosts run shoal seed daemons (the same
//! [`Fleet`] as the shoal system, without node daemons). Every node runs one upstream
//! `dfdaemon` in its namespace, configured through a YAML file and a dynconfig file that lists
//! the scheduler (no manager), and then `dfget` at its arrival time. So the run exercises the
//! wire contract both ways: upstream peers announce to shoal's scheduler, fetch pieces from
//! shoal seeds and from each other.
//!
//! Bytes by source come from each dfdaemon's Prometheus counter
//! `dragonfly_client_download_traffic{type="REMOTE_PEER"|"BACK_TO_SOURCE"}` read after its
//! node finished.

use std::path::{Path, PathBuf};

use anyhow::Context as _;
use tokio::process::Child;
use tokio::time::{Duration, Instant};

use super::shoal::{wait_socket, Fleet, FleetSpec, SCHEDULER_PORT};
use super::{run_capture, run_nodes, Ctx, Measured};
use crate::lab::netns::{which, Host};
use crate::lab::origin::wait_tcp;
use crate::lab::Bandwidth;

/// The message for a lab without the upstream binaries.
pub(crate) const BUILD_HINT: &str = "upstream dfdaemon and dfget not found on PATH or in \
     --dragonfly-bin-dir; build them with `cargo install dragonfly-client --version 1.5.10 \
     --locked` (needs protobuf-compiler and libclang-dev; a long build on 2 cores), then pass \
     --dragonfly-bin-dir ~/.cargo/bin";

/// dfdaemon's health port; up once its servers are.
const HEALTH_PORT: u16 = 4003;
const METRICS_PORT: u16 = 4002;

/// Where the upstream binaries are.
#[derive(Debug, Clone)]
pub(crate) struct Binaries {
    pub(crate) dfdaemon: PathBuf,
    pub(crate) dfget: PathBuf,
}

/// Finds `dfdaemon` and `dfget` in `bin_dir`, or on PATH without one; the error is why the
/// system is skipped.
pub(crate) fn locate(bin_dir: Option<&Path>) -> Result<Binaries, String> {
    let found = |name: &str| -> Option<PathBuf> {
        match bin_dir {
            Some(dir) => Some(dir.join(name)).filter(|p| p.is_file()),
            None => which(name),
        }
    };
    match (found("dfdaemon"), found("dfget")) {
        (Some(dfdaemon), Some(dfget)) => Ok(Binaries { dfdaemon, dfget }),
        _ => Err(BUILD_HINT.to_owned()),
    }
}

pub(crate) async fn run(ctx: &Ctx<'_>, bins: &Binaries) -> anyhow::Result<Measured> {
    let fleet = Fleet::start(&FleetSpec {
        lab: ctx.lab,
        bin: ctx.shoal_bin.to_string_lossy().into_owned(),
        work: &ctx.work,
        logs: &ctx.logs,
        shoal_log: &ctx.shoal_log,
        upload_limit: ctx.loopback().then_some(ctx.node_bw),
        mirror: false,
        node_daemons: false,
    })
    .await?;
    let scheduler = format!("{}:{SCHEDULER_PORT}", ctx.lab.hub.ip);
    let upload_limit = ctx.loopback().then_some(ctx.node_bw);
    let mut daemons: Vec<Child> = Vec::new();
    for host in &ctx.lab.nodes {
        daemons.push(start_dfdaemon(ctx, bins, host, &scheduler, upload_limit)?);
    }
    for host in &ctx.lab.nodes {
        wait_ready(ctx, host).await?;
    }
    let dfget = bins.dfget.to_string_lossy().into_owned();
    let measured = run_nodes(ctx, |_, host, output| {
        let dfget = dfget.clone();
        async move {
            let mut command = host.command(&dfget);
            command
                .arg(&ctx.origin.url)
                .arg("--output")
                .arg(&output)
                .arg("--endpoint")
                .arg(socket(&ctx.work, &host))
                .args(["--no-progress", "--log-level", "warn"]);
            run_capture(command, &format!("dfget on {}", host.name)).await?;
            Ok(traffic(&host).await)
        }
    })
    .await;
    drop(daemons);
    drop(fleet);
    let (mut measured, traffic) = measured?;
    for (node, traffic) in measured.per_node.iter_mut().zip(traffic) {
        if let Some(Some(traffic)) = traffic {
            node.bytes_from_parents = Some(traffic.remote_peer);
            node.bytes_from_origin = Some(traffic.back_to_source);
        }
    }
    Ok(measured)
}

fn socket(work: &Path, host: &Host) -> PathBuf {
    work.join(format!("{}-dfdaemon.sock", host.name))
}

/// dfdaemon's config: every server on the node's address with the standard ports, data under
/// `dir`, the loopback upload limit, and no disk-pressure GC during the run (the lab's disk may
/// be fuller than upstream's 80% default threshold).
fn dfdaemon_config(host: &Host, dir: &Path, socket: &Path, upload: Option<Bandwidth>) -> String {
    let ip = &host.ip;
    let dir = dir.display();
    let mut yaml = format!(
        "host:\n  hostname: {name}\n  ip: {ip}\n\
         server:\n  pluginDir: {dir}/plugins\n  cacheDir: {dir}/cache\n\
         download:\n  server:\n    socketPath: {socket}\n\
         upload:\n  server:\n    ip: {ip}\n    port: 4000\n",
        name = host.name,
        socket = socket.display(),
    );
    if let Some(limit) = upload {
        yaml.push_str(&format!("  bandwidthLimit: {}\n", limit.bytes_per_second()));
    }
    yaml.push_str(&format!(
        "storage:\n  dir: {dir}/data\n  server:\n    ip: {ip}\n    tcpPort: 4005\n    quicPort: 4006\n\
         gc:\n  interval: 24h\n  policy:\n    diskHighThresholdPercent: 99\n    diskLowThresholdPercent: 98\n\
         proxy:\n  server:\n    ip: {ip}\n    port: 4001\n\
         metrics:\n  server:\n    ip: {ip}\n    port: {METRICS_PORT}\n\
         health:\n  server:\n    ip: {ip}\n    port: {HEALTH_PORT}\n\
         stats:\n  server:\n    ip: {ip}\n    port: 4004\n"
    ));
    yaml
}

/// The dynconfig file: the static scheduler list of a daemon without a manager.
fn dynconfig(scheduler: &str) -> String {
    format!("scheduler:\n  addrs:\n    - \"{scheduler}\"\n")
}

fn start_dfdaemon(
    ctx: &Ctx<'_>,
    bins: &Binaries,
    host: &Host,
    scheduler: &str,
    upload: Option<Bandwidth>,
) -> anyhow::Result<Child> {
    let dir = ctx.work.join(&host.name);
    std::fs::create_dir_all(&dir).context("create dfdaemon dir")?;
    let config = dir.join("dfdaemon.yaml");
    let yaml = dfdaemon_config(host, &dir, &socket(&ctx.work, host), upload);
    std::fs::write(&config, yaml).context("write dfdaemon config")?;
    let dynconfig_path = dir.join("dynconfig.yaml");
    std::fs::write(&dynconfig_path, dynconfig(scheduler)).context("write dynconfig")?;
    let mut command = host.command(&bins.dfdaemon.to_string_lossy());
    command
        .arg("--config")
        .arg(&config)
        .arg("--dynconfig")
        .arg(&dynconfig_path)
        .arg("--log-dir")
        .arg(dir.join("log"))
        .args(["--console", "--log-level", "info"])
        .stdout(ctx.log(&format!("{}-dfdaemon", host.name))?)
        .stderr(ctx.log(&format!("{}-dfdaemon-err", host.name))?);
    command
        .spawn()
        .with_context(|| format!("start dfdaemon on {}", host.name))
}

/// Waits for the daemon's download socket and its health port (dfdaemon takes a few seconds
/// to sample the host before it serves).
async fn wait_ready(ctx: &Ctx<'_>, host: &Host) -> anyhow::Result<()> {
    wait_socket(&socket(&ctx.work, host), &host.name).await?;
    wait_tcp(host, &host.ip, HEALTH_PORT, "dfdaemon health").await?;
    // The socket file appears before the server accepts on it.
    let deadline = Instant::now() + Duration::from_secs(10);
    while tokio::net::UnixStream::connect(socket(&ctx.work, host))
        .await
        .is_err()
    {
        if Instant::now() > deadline {
            anyhow::bail!("dfdaemon on {} does not accept on its socket", host.name);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Ok(())
}

/// Bytes a dfdaemon downloaded, by source.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Traffic {
    remote_peer: u64,
    back_to_source: u64,
}

/// Reads the node's dfdaemon counters with curl in its namespace; `None` when unreadable.
async fn traffic(host: &Host) -> Option<Traffic> {
    let mut command = host.command("curl");
    command
        .args(["-sS", "--fail", "--max-time", "5"])
        .arg(format!("http://{}:{METRICS_PORT}/metrics", host.ip));
    let text = run_capture(command, "curl dfdaemon metrics").await.ok()?;
    parse_traffic(&text)
}

/// Parses `dragonfly_client_download_traffic{type="..."}` out of a Prometheus exposition.
fn parse_traffic(text: &str) -> Option<Traffic> {
    let mut traffic = Traffic::default();
    let mut seen = false;
    for line in text.lines() {
        let Some(rest) = line.strip_prefix("dragonfly_client_download_traffic{") else {
            continue;
        };
        let Some((labels, value)) = rest.split_once('}') else {
            continue;
        };
        let Ok(value) = value.trim().parse::<f64>() else {
            continue;
        };
        // Counters are integral byte counts exported as floats.
        #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
        let bytes = value as u64;
        if labels.contains("\"REMOTE_PEER\"") {
            traffic.remote_peer = bytes;
            seen = true;
        } else if labels.contains("\"BACK_TO_SOURCE\"") {
            traffic.back_to_source = bytes;
            seen = true;
        }
    }
    seen.then_some(traffic)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_download_traffic_by_source() {
        let text = "# HELP x\n\
            dragonfly_client_download_traffic{type=\"BACK_TO_SOURCE\"} 4194305\n\
            dragonfly_client_download_traffic{type=\"LOCAL_PEER\"} 7\n\
            dragonfly_client_download_traffic{type=\"REMOTE_PEER\"} 50331648\n";
        assert_eq!(
            parse_traffic(text),
            Some(Traffic {
                remote_peer: 50_331_648,
                back_to_source: 4_194_305,
            })
        );
        assert_eq!(parse_traffic("other_metric 1\n"), None);
    }

    #[test]
    fn config_binds_every_server_to_the_node() {
        let host = Host {
            name: "node0".into(),
            ns: None,
            ip: "10.213.0.50".into(),
        };
        let rate: Bandwidth = "8mbit".parse().unwrap();
        let yaml = dfdaemon_config(
            &host,
            Path::new("/w/node0"),
            Path::new("/w/node0.sock"),
            Some(rate),
        );
        assert!(yaml.contains("  ip: 10.213.0.50\n"));
        assert!(yaml.contains("    socketPath: /w/node0.sock\n"));
        assert!(yaml.contains("  bandwidthLimit: 1000000\n"));
        assert_eq!(yaml.matches("ip: 10.213.0.50").count(), 7);
        assert_eq!(
            dynconfig("10.213.0.1:8002"),
            "scheduler:\n  addrs:\n    - \"10.213.0.1:8002\"\n"
        );
    }
}
