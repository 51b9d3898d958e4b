//! A cluster of real `shoal` processes on one loopback block: the scheduler on `NET.1:PORT`,
//! daemon `i` on `NET.(2+i)` with the standard ports, each with its own data dir and socket
//! under the benchmark's work dir. Dropping the [`Cluster`] kills every process.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context as _};
use shoal_protocol::scheduler::scheduler_client::SchedulerClient;
use shoal_protocol::scheduler::ListHostsRequest;
use tokio::time::Instant;

use super::procs::{self, Proc};

/// Ports every daemon binds on its own IP (upload, proxy, metrics, Vortex).
const DAEMON_PORTS: [u16; 4] = [4000, 4001, 4002, 4005];
/// How long a process may take to come up.
const START_TIMEOUT: Duration = Duration::from_secs(30);

/// Where and how to start a cluster.
#[derive(Debug, Clone)]
pub(crate) struct ClusterSpec {
    pub(crate) bin: PathBuf,
    /// The first three octets name the block; the last is ignored.
    pub(crate) net: Ipv4Addr,
    pub(crate) scheduler_port: u16,
    pub(crate) daemons: usize,
    /// Extra flags for `shoal scheduler`.
    pub(crate) scheduler_args: Vec<String>,
}

/// One running daemon.
#[derive(Debug)]
pub(crate) struct Daemon {
    pub(crate) process: Proc,
    pub(crate) ip: Ipv4Addr,
    pub(crate) socket: PathBuf,
    pub(crate) proxy: SocketAddr,
}

/// The running processes.
#[derive(Debug)]
pub(crate) struct Cluster {
    pub(crate) scheduler: Proc,
    pub(crate) scheduler_addr: SocketAddr,
    pub(crate) daemons: Vec<Daemon>,
}

impl ClusterSpec {
    /// `NET.host`.
    pub(crate) fn ip(&self, host: u8) -> Ipv4Addr {
        let [a, b, c, _] = self.net.octets();
        Ipv4Addr::new(a, b, c, host)
    }

    pub(crate) fn scheduler_addr(&self) -> SocketAddr {
        SocketAddr::new(IpAddr::V4(self.ip(1)), self.scheduler_port)
    }
}

/// Starts only the scheduler, logging to `dir/scheduler.log`, and waits until it accepts.
pub(crate) async fn start_scheduler(spec: &ClusterSpec, dir: &Path) -> anyhow::Result<Proc> {
    let addr = spec.scheduler_addr();
    if procs::is_listening(addr).await {
        bail!("{addr} is already in use; pick another block with --net or --scheduler-port");
    }
    let mut args = vec!["scheduler".to_string(), "--listen".into(), addr.to_string()];
    args.extend(spec.scheduler_args.iter().cloned());
    let mut scheduler = Proc::spawn("scheduler", &spec.bin, &args, dir.join("scheduler.log"))?;
    if let Err(err) = procs::wait_tcp(addr, START_TIMEOUT).await {
        scheduler.ensure_running()?;
        return Err(err);
    }
    Ok(scheduler)
}

impl Cluster {
    /// Starts the scheduler and `spec.daemons` daemons and waits until every daemon serves its
    /// socket and has announced its host.
    pub(crate) async fn start(spec: &ClusterSpec, dir: &Path) -> anyhow::Result<Self> {
        let scheduler = start_scheduler(spec, dir).await?;
        let scheduler_addr = spec.scheduler_addr();
        let mut daemons = Vec::new();
        for index in 0..spec.daemons {
            let ip = spec.ip(2 + index as u8);
            for port in DAEMON_PORTS {
                let addr = SocketAddr::new(IpAddr::V4(ip), port);
                if procs::is_listening(addr).await {
                    bail!("{addr} is already in use; pick another block with --net");
                }
            }
            let name = format!("daemon-{}", (b'a' + index as u8) as char);
            let socket = dir.join(format!("{name}.sock"));
            let args = vec![
                "daemon".to_string(),
                "--data-dir".into(),
                dir.join(&name).display().to_string(),
                "--scheduler".into(),
                format!("http://{scheduler_addr}"),
                "--ip".into(),
                ip.to_string(),
                "--hostname".into(),
                format!("micro-{name}"),
                "--socket".into(),
                socket.display().to_string(),
            ];
            let process = Proc::spawn(&name, &spec.bin, &args, dir.join(format!("{name}.log")))?;
            daemons.push(Daemon {
                process,
                ip,
                socket,
                proxy: SocketAddr::new(IpAddr::V4(ip), 4001),
            });
        }
        let mut cluster = Self {
            scheduler,
            scheduler_addr,
            daemons,
        };
        cluster.wait_ready().await?;
        Ok(cluster)
    }

    async fn wait_ready(&mut self) -> anyhow::Result<()> {
        for daemon in &mut self.daemons {
            if let Err(err) = procs::wait_unix(&daemon.socket, START_TIMEOUT).await {
                daemon.process.ensure_running()?;
                return Err(err);
            }
        }
        let expected: Vec<String> = self.daemons.iter().map(|d| d.ip.to_string()).collect();
        wait_hosts(self.scheduler_addr, &expected).await
    }

    /// Fails when any process has died.
    pub(crate) fn ensure_running(&mut self) -> anyhow::Result<()> {
        self.scheduler.ensure_running()?;
        for daemon in &mut self.daemons {
            daemon.process.ensure_running()?;
        }
        Ok(())
    }

    /// Kills every process.
    pub(crate) async fn stop(self) {
        for daemon in self.daemons {
            daemon.process.stop().await;
        }
        self.scheduler.stop().await;
    }
}

/// Waits until the scheduler lists a host for each of `ips`.
async fn wait_hosts(scheduler: SocketAddr, ips: &[String]) -> anyhow::Result<()> {
    let deadline = Instant::now() + START_TIMEOUT;
    let mut client = SchedulerClient::connect(format!("http://{scheduler}"))
        .await
        .context("connect to scheduler")?;
    loop {
        let hosts = tokio::time::timeout(
            Duration::from_secs(5),
            client.list_hosts(ListHostsRequest::default()),
        )
        .await;
        if let Ok(Ok(response)) = hosts {
            let listed = response.into_inner().hosts;
            if ips
                .iter()
                .all(|ip| listed.iter().any(|host| &host.ip == ip))
            {
                return Ok(());
            }
        }
        if Instant::now() >= deadline {
            bail!("daemons {ips:?} did not announce to the scheduler within {START_TIMEOUT:?}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
