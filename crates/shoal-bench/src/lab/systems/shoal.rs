//! shoal: a scheduler on the hub, `K` seed daemons and one daemon per node, each in its own
//! namespace with its own data dir and socket; every node runs `shoal get` at its arrival time.
//! Bytes by source come from the summary line each `shoal get` prints.

use std::path::Path;

use anyhow::Context as _;
use tokio::process::Child;
use tokio::time::{Duration, Instant};

use super::{run_capture, run_nodes, Ctx, Measured};
use crate::lab::netns::Host;
use crate::lab::origin::wait_tcp;
use crate::micro::procs::parse_sources;

const SCHEDULER_PORT: u16 = 8002;

pub(crate) async fn run(ctx: &Ctx<'_>) -> anyhow::Result<Measured> {
    let bin = ctx.shoal_bin.to_string_lossy().into_owned();
    let mut procs: Vec<Child> = Vec::new();
    let hub = &ctx.lab.hub;
    let scheduler_addr = format!("{}:{SCHEDULER_PORT}", hub.ip);
    procs.push(
        hub.command(&bin)
            .env("SHOAL_LOG", &ctx.shoal_log)
            .args(["scheduler", "--listen", &scheduler_addr])
            .stdout(ctx.log("scheduler-out")?)
            .stderr(ctx.log("scheduler")?)
            .spawn()
            .context("start shoal scheduler")?,
    );
    wait_tcp(hub, &hub.ip, SCHEDULER_PORT, "shoal scheduler").await?;
    let scheduler_url = format!("http://{scheduler_addr}");
    for (host, seed) in ctx
        .lab
        .seeds
        .iter()
        .map(|h| (h, true))
        .chain(ctx.lab.nodes.iter().map(|h| (h, false)))
    {
        procs.push(start_daemon(ctx, &bin, host, seed, &scheduler_url)?);
    }
    for host in ctx.lab.peers() {
        wait_socket(&socket(ctx, host), &host.name).await?;
    }
    let measured = run_nodes(ctx, |_, host, output| {
        let bin = bin.clone();
        async move {
            let mut command = host.command(&bin);
            command
                .env("SHOAL_LOG", &ctx.shoal_log)
                .args(["get", &ctx.origin.url, "-O"])
                .arg(&output)
                .arg("--socket")
                .arg(socket(ctx, &host))
                .arg("--no-progress");
            let summary = run_capture(command, &format!("shoal get on {}", host.name)).await?;
            let log = ctx.logs.join(format!("{}-get.log", host.name));
            std::fs::write(log, &summary).context("write shoal get summary")?;
            Ok(parse_sources(&summary))
        }
    })
    .await;
    drop(procs);
    let (mut measured, sources) = measured?;
    for (node, source) in measured.per_node.iter_mut().zip(sources) {
        if let Some(source) = source {
            node.bytes_from_parents = Some(source.parents);
            node.bytes_from_origin = Some(source.origin);
        }
    }
    Ok(measured)
}

fn socket(ctx: &Ctx<'_>, host: &Host) -> std::path::PathBuf {
    ctx.work.join(format!("{}.sock", host.name))
}

fn start_daemon(
    ctx: &Ctx<'_>,
    bin: &str,
    host: &Host,
    seed: bool,
    scheduler_url: &str,
) -> anyhow::Result<Child> {
    let data_dir = ctx.work.join(&host.name);
    std::fs::create_dir_all(&data_dir).context("create daemon data dir")?;
    let mut command = host.command(bin);
    command
        .env("SHOAL_LOG", &ctx.shoal_log)
        .arg("daemon")
        .arg("--data-dir")
        .arg(&data_dir)
        .args(["--scheduler", scheduler_url, "--ip", &host.ip])
        .args(["--hostname", &host.name])
        .arg("--socket")
        .arg(socket(ctx, host));
    if seed {
        command.arg("--seed");
    }
    if ctx.loopback() {
        // No tc here: the daemon's own upload limit stands in for the node's uplink.
        let config = ctx.work.join(format!("{}.yaml", host.name));
        std::fs::write(
            &config,
            format!("upload:\n  rateLimit: {}\n", ctx.node_bw.bytes_per_second()),
        )
        .context("write daemon config")?;
        command.arg("--config").arg(config);
    }
    command
        .stdout(ctx.log(&format!("{}-out", host.name))?)
        .stderr(ctx.log(&host.name)?)
        .spawn()
        .with_context(|| format!("start shoal daemon on {}", host.name))
}

async fn wait_socket(path: &Path, name: &str) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !path.exists() {
        if Instant::now() > deadline {
            anyhow::bail!("daemon {name} did not create {} within 30s", path.display());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Ok(())
}
