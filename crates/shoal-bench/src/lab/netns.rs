//! The lab's network: one namespace per host behind a bridge in a hub namespace, or loopback.
//!
//! Netns mode (root, `ip netns add` works): a hub namespace `shoal-lab-<pid>-hub` holds the
//! bridge `sl<pid>br` (address `10.213.0.1`, where the scheduler and tracker run, unshaped). Each
//! host (origin, seeds, nodes) gets a namespace `shoal-lab-<pid>-<name>` and a veth pair: `eth0`
//! inside, `sl<pid>h<i>` in the hub on the bridge. `tc tbf` on `eth0` shapes the host's upload,
//! on the hub-side peer its download. The root namespace is never touched.
//!
//! Loopback mode: every host gets an address `127.<b>.0.<i>` (the block `b` derives from the
//! pid) and there is no shaping by `tc`.
//!
//! [`Lab`] removes its namespaces (and kills whatever still runs in them) on drop;
//! [`cleanup_leftovers`] removes those of earlier runs.

use std::process::Command as StdCommand;

use anyhow::{bail, Context as _};

use super::Bandwidth;

/// Prefix of every namespace the lab creates.
const NS_PREFIX: &str = "shoal-lab-";

/// How the lab's hosts are connected.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Mode {
    Netns,
    Loopback { reason: String },
}

impl Mode {
    pub(crate) fn label(&self) -> String {
        match self {
            Self::Netns => "network namespaces, shaped by tc".to_owned(),
            Self::Loopback { reason } => {
                format!("loopback fallback (not shaped by tc): {reason}")
            }
        }
    }

    pub(crate) fn is_netns(&self) -> bool {
        matches!(self, Self::Netns)
    }
}

/// One machine of the lab.
#[derive(Debug, Clone)]
pub(crate) struct Host {
    pub(crate) name: String,
    pub(crate) ns: Option<String>,
    pub(crate) ip: String,
}

impl Host {
    /// A command that runs `program` inside this host's namespace.
    pub(crate) fn command(&self, program: &str) -> tokio::process::Command {
        let mut command = match &self.ns {
            Some(ns) => {
                let mut command = tokio::process::Command::new("ip");
                command.args(["netns", "exec", ns, program]);
                command
            }
            None => tokio::process::Command::new(program),
        };
        command
            .stdin(std::process::Stdio::null())
            .kill_on_drop(true);
        command
    }
}

/// Upload and download of every host.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Shaping {
    pub(crate) origin: Bandwidth,
    pub(crate) node: Bandwidth,
}

/// The hosts of one run; removes its namespaces when dropped.
#[derive(Debug)]
pub(crate) struct Lab {
    pub(crate) mode: Mode,
    /// Where the scheduler and the tracker run (unshaped).
    pub(crate) hub: Host,
    pub(crate) origin: Host,
    pub(crate) seeds: Vec<Host>,
    pub(crate) nodes: Vec<Host>,
    namespaces: Vec<String>,
}

impl Lab {
    /// Creates the lab, in namespaces when possible (and not `force_loopback`), else on
    /// loopback.
    pub(crate) fn create(
        seeds: usize,
        nodes: usize,
        shaping: Shaping,
        force_loopback: bool,
    ) -> anyhow::Result<Self> {
        if seeds > 40 || nodes > 200 {
            bail!("the lab holds at most 40 seeds and 200 nodes");
        }
        let pid = std::process::id();
        let names = host_names(seeds, nodes);
        let unavailable = if force_loopback {
            Some("--loopback was given".to_owned())
        } else {
            netns_unavailable()
        };
        match unavailable {
            None => {
                let mut lab = Self {
                    mode: Mode::Netns,
                    hub: Host {
                        name: "hub".into(),
                        ns: Some(ns_name(pid, "hub")),
                        ip: "10.213.0.1".into(),
                    },
                    origin: netns_host(pid, "origin", 2),
                    seeds: Vec::new(),
                    nodes: Vec::new(),
                    namespaces: Vec::new(),
                };
                for (name, octet) in &names[1..] {
                    let host = netns_host(pid, name, *octet);
                    if name.starts_with("seed") {
                        lab.seeds.push(host);
                    } else {
                        lab.nodes.push(host);
                    }
                }
                // Namespaces are recorded before they exist, so a failure halfway removes them.
                lab.build(pid, shaping)?;
                Ok(lab)
            }
            Some(reason) => {
                let block = 20 + pid % 200;
                let host = |name: &str, octet: u8| Host {
                    name: name.to_owned(),
                    ns: None,
                    ip: format!("127.{block}.0.{octet}"),
                };
                Ok(Self {
                    mode: Mode::Loopback { reason },
                    hub: host("hub", 1),
                    origin: host("origin", 2),
                    seeds: names[1..]
                        .iter()
                        .filter(|(name, _)| name.starts_with("seed"))
                        .map(|(name, octet)| host(name, *octet))
                        .collect(),
                    nodes: names[1..]
                        .iter()
                        .filter(|(name, _)| name.starts_with("node"))
                        .map(|(name, octet)| host(name, *octet))
                        .collect(),
                    namespaces: Vec::new(),
                })
            }
        }
    }

    fn build(&mut self, pid: u32, shaping: Shaping) -> anyhow::Result<()> {
        let hub = self.hub.ns.clone().expect("netns mode has a hub namespace");
        let bridge = format!("sl{pid}br");
        self.namespaces.push(hub.clone());
        ip(&["netns", "add", &hub])?;
        ip(&["-n", &hub, "link", "set", "lo", "up"])?;
        ip(&["-n", &hub, "link", "add", &bridge, "type", "bridge"])?;
        ip(&["-n", &hub, "addr", "add", "10.213.0.1/24", "dev", &bridge])?;
        ip(&["-n", &hub, "link", "set", &bridge, "up"])?;
        let hosts: Vec<(Host, Bandwidth)> = std::iter::once((self.origin.clone(), shaping.origin))
            .chain(self.seeds.iter().map(|h| (h.clone(), shaping.node)))
            .chain(self.nodes.iter().map(|h| (h.clone(), shaping.node)))
            .collect();
        for (index, (host, bandwidth)) in hosts.iter().enumerate() {
            let ns = host.ns.clone().expect("netns mode hosts have namespaces");
            let peer = format!("sl{pid}h{index}");
            self.namespaces.push(ns.clone());
            ip(&["netns", "add", &ns])?;
            ip(&["-n", &ns, "link", "set", "lo", "up"])?;
            ip(&[
                "-n", &hub, "link", "add", &peer, "type", "veth", "peer", "name", "eth0", "netns",
                &ns,
            ])?;
            ip(&["-n", &hub, "link", "set", &peer, "master", &bridge])?;
            ip(&["-n", &hub, "link", "set", &peer, "up"])?;
            ip(&[
                "-n",
                &ns,
                "addr",
                "add",
                &format!("{}/24", host.ip),
                "dev",
                "eth0",
            ])?;
            ip(&["-n", &ns, "link", "set", "eth0", "up"])?;
            shape(&ns, "eth0", *bandwidth)?; // the host's upload
            shape(&hub, &peer, *bandwidth)?; // the host's download
        }
        Ok(())
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        for ns in self.namespaces.iter().rev() {
            remove_namespace(ns);
        }
    }
}

/// Names and last address octets: origin, seeds, nodes.
fn host_names(seeds: usize, nodes: usize) -> Vec<(String, u8)> {
    let mut names = vec![("origin".to_owned(), 2u8)];
    for k in 0..seeds {
        names.push((format!("seed{k}"), 10 + k as u8));
    }
    for i in 0..nodes {
        names.push((format!("node{i}"), 50 + i as u8));
    }
    names
}

fn ns_name(pid: u32, name: &str) -> String {
    format!("{NS_PREFIX}{pid}-{name}")
}

fn netns_host(pid: u32, name: &str, octet: u8) -> Host {
    Host {
        name: name.to_owned(),
        ns: Some(ns_name(pid, name)),
        ip: format!("10.213.0.{octet}"),
    }
}

/// Why namespaces can't be used here, or `None` when they can.
fn netns_unavailable() -> Option<String> {
    for tool in ["ip", "tc"] {
        if which(tool).is_none() {
            return Some(format!("`{tool}` not found (Debian package iproute2)"));
        }
    }
    let probe = ns_name(std::process::id(), "probe");
    match StdCommand::new("ip")
        .args(["netns", "add", &probe])
        .output()
    {
        Ok(output) if output.status.success() => {
            remove_namespace(&probe);
            None
        }
        Ok(output) => Some(format!(
            "`ip netns add` failed ({}); run as root for the shaped lab",
            String::from_utf8_lossy(&output.stderr).trim()
        )),
        Err(err) => Some(format!("`ip netns add` could not run: {err}")),
    }
}

/// Whether this process runs with effective uid 0.
pub(crate) fn running_as_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            let uids = status.lines().find_map(|line| line.strip_prefix("Uid:"))?;
            uids.split_whitespace()
                .nth(1)
                .map(|effective| effective == "0")
        })
        .unwrap_or(false)
}

/// The path of `program` on PATH.
pub(crate) fn which(program: &str) -> Option<std::path::PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .chain(["/usr/sbin".into(), "/sbin".into()])
        .map(|dir| dir.join(program))
        .find(|candidate| candidate.is_file())
}

fn ip(args: &[&str]) -> anyhow::Result<()> {
    run("ip", args)
}

fn run(program: &str, args: &[&str]) -> anyhow::Result<()> {
    let output = StdCommand::new(program)
        .args(args)
        .output()
        .with_context(|| format!("run {program}"))?;
    if !output.status.success() {
        bail!(
            "`{program} {}` failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    Ok(())
}

/// Shapes the egress of `dev` in `ns` with a token bucket.
fn shape(ns: &str, dev: &str, bandwidth: Bandwidth) -> anyhow::Result<()> {
    let rate = format!("{}bit", bandwidth.bits_per_second());
    // 10 ms worth of tokens, at least a few full-size segments.
    let burst = (bandwidth.bytes_per_second() / 100)
        .max(32 * 1024)
        .to_string();
    run(
        "tc",
        &[
            "-n", ns, "qdisc", "add", "dev", dev, "root", "tbf", "rate", &rate, "burst", &burst,
            "latency", "100ms",
        ],
    )
}

/// Kills what still runs in `ns` (only processes this lab started live there) and deletes it.
fn remove_namespace(ns: &str) {
    if let Ok(output) = StdCommand::new("ip").args(["netns", "pids", ns]).output() {
        for pid in String::from_utf8_lossy(&output.stdout).split_whitespace() {
            let _ = StdCommand::new("kill").args(["-KILL", pid]).output();
        }
    }
    let _ = StdCommand::new("ip").args(["netns", "del", ns]).output();
}

/// Removes every `shoal-lab-*` namespace left by earlier runs whose process is gone, with
/// whatever still runs inside; returns the names removed.
pub(crate) fn cleanup_leftovers() -> anyhow::Result<Vec<String>> {
    let output = StdCommand::new("ip")
        .args(["netns", "list"])
        .output()
        .context("run ip netns list")?;
    let mut removed = Vec::new();
    for line in String::from_utf8_lossy(&output.stdout).lines() {
        let Some(name) = line.split_whitespace().next() else {
            continue;
        };
        let Some(rest) = name.strip_prefix(NS_PREFIX) else {
            continue;
        };
        let owner = rest
            .split('-')
            .next()
            .and_then(|pid| pid.parse::<u32>().ok());
        let alive = owner.is_some_and(|pid| {
            pid != std::process::id() && std::path::Path::new(&format!("/proc/{pid}")).exists()
        });
        if !alive {
            remove_namespace(name);
            removed.push(name.to_owned());
        }
    }
    Ok(removed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_fit_interface_limits() {
        let names = host_names(2, 3);
        assert_eq!(names[0], ("origin".to_owned(), 2));
        assert_eq!(names[1], ("seed0".to_owned(), 10));
        assert_eq!(names[3], ("node0".to_owned(), 50));
        // The longest pid (2^22) still yields interface names within 15 bytes.
        assert!(format!("sl{}h{}", 4_194_304, 250).len() <= 15);
    }
}
