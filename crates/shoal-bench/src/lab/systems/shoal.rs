//! shoal: a scheduler on the hub, `K` seed daemons and one daemon per node, each in its own
//! namespace with its own data dir and socket; every node runs `shoal get` at its arrival time.
//! Bytes by source come from the summary line each `shoal get` prints.
//!
//! [`Fleet`] starts those processes; the image scenario reuses it with each node daemon's
//! registry mirror listening on the node's address ([`FleetSpec::mirror`]).

use std::path::{Path, PathBuf};

use anyhow::Context as _;
use tokio::process::Child;
use tokio::time::{Duration, Instant};

use super::{run_capture, run_nodes, Ctx, Measured};
use crate::lab::netns::{Host, Lab};
use crate::lab::origin::wait_tcp;
use crate::lab::Bandwidth;
use crate::micro::procs::parse_sources;

pub(crate) const SCHEDULER_PORT: u16 = 8002;
/// Port of each node daemon's proxy and registry mirror (the daemon's default).
pub(crate) const PROXY_PORT: u16 = 4001;

/// Where and how the shoal processes of one run start.
#[derive(Debug)]
pub(crate) struct FleetSpec<'a> {
    pub(crate) lab: &'a Lab,
    pub(crate) bin: String,
    /// Data dirs, sockets and config files.
    pub(crate) work: &'a Path,
    pub(crate) logs: &'a Path,
    /// `SHOAL_LOG` filter.
    pub(crate) shoal_log: &'a str,
    /// Each daemon's upload limit, standing in for tc in loopback mode; `None` in netns mode.
    pub(crate) upload_limit: Option<Bandwidth>,
    /// Serve the registry mirror on `<node ip>:4001` to the lab's addresses.
    pub(crate) mirror: bool,
    /// Start a shoal daemon on every node too; `false` starts only the scheduler and the seeds
    /// (the nodes run another client, e.g. upstream dfdaemon).
    pub(crate) node_daemons: bool,
}

/// The scheduler and every daemon of one run; dropping it kills them all.
#[derive(Debug)]
pub(crate) struct Fleet {
    _procs: Vec<Child>,
}

impl Fleet {
    /// Starts the scheduler, the seeds and (with [`FleetSpec::node_daemons`]) one daemon per
    /// node; returns once every daemon's socket (and, with a mirror, every node's proxy port) is
    /// up.
    pub(crate) async fn start(spec: &FleetSpec<'_>) -> anyhow::Result<Self> {
        let mut procs: Vec<Child> = Vec::new();
        let hub = &spec.lab.hub;
        let scheduler_addr = format!("{}:{SCHEDULER_PORT}", hub.ip);
        procs.push(
            hub.command(&spec.bin)
                .env("SHOAL_LOG", spec.shoal_log)
                .args(["scheduler", "--listen", &scheduler_addr])
                .stdout(log(spec.logs, "scheduler-out")?)
                .stderr(log(spec.logs, "scheduler")?)
                .spawn()
                .context("start shoal scheduler")?,
        );
        wait_tcp(hub, &hub.ip, SCHEDULER_PORT, "shoal scheduler").await?;
        let scheduler_url = format!("http://{scheduler_addr}");
        let seeds = spec.lab.seeds.iter().map(|h| (h, true));
        let nodes = spec.lab.nodes.iter().filter(|_| spec.node_daemons);
        let hosts: Vec<(&Host, bool)> = seeds.chain(nodes.map(|h| (h, false))).collect();
        for (host, seed) in &hosts {
            procs.push(start_daemon(spec, host, *seed, &scheduler_url)?);
        }
        for (host, _) in &hosts {
            wait_socket(&socket(spec.work, host), &host.name).await?;
        }
        if spec.mirror {
            for host in &spec.lab.nodes {
                wait_tcp(host, &host.ip, PROXY_PORT, "shoal daemon proxy").await?;
            }
        }
        Ok(Self { _procs: procs })
    }
}

pub(crate) async fn run(ctx: &Ctx<'_>) -> anyhow::Result<Measured> {
    let bin = ctx.shoal_bin.to_string_lossy().into_owned();
    let fleet = Fleet::start(&FleetSpec {
        lab: ctx.lab,
        bin: bin.clone(),
        work: &ctx.work,
        logs: &ctx.logs,
        shoal_log: &ctx.shoal_log,
        upload_limit: ctx.loopback().then_some(ctx.node_bw),
        mirror: false,
        node_daemons: true,
    })
    .await?;
    let measured = run_nodes(ctx, |_, host, output| {
        let bin = bin.clone();
        async move {
            let mut command = host.command(&bin);
            command
                .env("SHOAL_LOG", &ctx.shoal_log)
                .args(["get", &ctx.origin.url, "-O"])
                .arg(&output)
                .arg("--socket")
                .arg(socket(&ctx.work, &host))
                .arg("--no-progress");
            let summary = run_capture(command, &format!("shoal get on {}", host.name)).await?;
            let log = ctx.logs.join(format!("{}-get.log", host.name));
            std::fs::write(log, &summary).context("write shoal get summary")?;
            Ok(parse_sources(&summary))
        }
    })
    .await;
    drop(fleet);
    let (mut measured, sources) = measured?;
    for (node, source) in measured.per_node.iter_mut().zip(sources) {
        if let Some(source) = source {
            node.bytes_from_parents = Some(source.parents);
            node.bytes_from_origin = Some(source.origin);
        }
    }
    Ok(measured)
}

fn socket(work: &Path, host: &Host) -> PathBuf {
    work.join(format!("{}.sock", host.name))
}

fn log(logs: &Path, name: &str) -> anyhow::Result<std::process::Stdio> {
    let file = std::fs::File::create(logs.join(format!("{name}.log")))
        .with_context(|| format!("create log for {name}"))?;
    Ok(file.into())
}

/// The daemon's config file: the loopback upload limit, and the mirror's allowed clients (the
/// lab's /24: a node's containerd connects from the node's own address, not from loopback).
fn daemon_config(spec: &FleetSpec<'_>, host: &Host) -> Option<String> {
    let mut yaml = String::new();
    if let Some(limit) = spec.upload_limit {
        yaml.push_str(&format!(
            "upload:\n  rateLimit: {}\n",
            limit.bytes_per_second()
        ));
    }
    if spec.mirror && !host.name.starts_with("seed") {
        let net = host.ip.rsplit_once('.').map_or("", |(net, _)| net);
        yaml.push_str(&format!("proxy:\n  allowCidrs: [\"{net}.0/24\"]\n"));
    }
    (!yaml.is_empty()).then_some(yaml)
}

fn start_daemon(
    spec: &FleetSpec<'_>,
    host: &Host,
    seed: bool,
    scheduler_url: &str,
) -> anyhow::Result<Child> {
    let data_dir = spec.work.join(&host.name);
    std::fs::create_dir_all(&data_dir).context("create daemon data dir")?;
    let mut command = host.command(&spec.bin);
    command
        .env("SHOAL_LOG", spec.shoal_log)
        .arg("daemon")
        .arg("--data-dir")
        .arg(&data_dir)
        .args(["--scheduler", scheduler_url, "--ip", &host.ip])
        .args(["--hostname", &host.name])
        .arg("--socket")
        .arg(socket(spec.work, host));
    if seed {
        command.arg("--seed");
    }
    if spec.mirror && !seed {
        command
            .arg("--proxy-listen")
            .arg(format!("{}:{PROXY_PORT}", host.ip));
    }
    if let Some(yaml) = daemon_config(spec, host) {
        let config = spec.work.join(format!("{}.yaml", host.name));
        std::fs::write(&config, yaml).context("write daemon config")?;
        command.arg("--config").arg(config);
    }
    command
        .stdout(log(spec.logs, &format!("{}-out", host.name))?)
        .stderr(log(spec.logs, &host.name)?)
        .spawn()
        .with_context(|| format!("start shoal daemon on {}", host.name))
}

pub(crate) async fn wait_socket(path: &Path, name: &str) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !path.exists() {
        if Instant::now() > deadline {
            anyhow::bail!("daemon {name} did not create {} within 30s", path.display());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mirror_daemons_allow_the_lab_network() {
        let rate: Bandwidth = "8mbit".parse().unwrap();
        let shaping = crate::lab::netns::Shaping {
            origin: rate,
            node: rate,
        };
        let lab = Lab::create(0, 1, shaping, true).unwrap();
        let spec = FleetSpec {
            lab: &lab,
            bin: "shoal".into(),
            work: Path::new("/tmp"),
            logs: Path::new("/tmp"),
            shoal_log: "warn",
            upload_limit: Some(rate),
            mirror: true,
            node_daemons: true,
        };
        let host = Host {
            name: "node0".into(),
            ns: None,
            ip: "10.213.0.50".into(),
        };
        let yaml = daemon_config(&spec, &host).unwrap();
        assert_eq!(
            yaml,
            "upload:\n  rateLimit: 1000000\nproxy:\n  allowCidrs: [\"10.213.0.0/24\"]\n"
        );
        let seed = Host {
            name: "seed0".into(),
            ..host
        };
        let spec = FleetSpec {
            upload_limit: None,
            ..spec
        };
        assert_eq!(daemon_config(&spec, &seed), None);
    }
}
