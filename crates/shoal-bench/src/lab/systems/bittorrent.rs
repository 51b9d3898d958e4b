//! BitTorrent: `opentracker` on the hub, one `aria2c` seeder in the origin's namespace (so it
//! has the origin's shaping), one `aria2c` per node; DHT, LPD off. Peers keep seeding until every
//! node is done; a node's completion is when aria2c runs its `--on-bt-download-complete` hook.

use std::path::PathBuf;

use anyhow::{bail, Context as _};
use tokio::process::Child;
use tokio::time::{Duration, Instant};

use super::{run_capture, run_nodes, run_to_end, Ctx, Measured};
use crate::lab::netns::Host;
use crate::lab::origin::{wait_tcp, FILE_NAME};

const TRACKER_PORT: u16 = 6969;
const SEEDER_PORT: u16 = 6880;
/// Programs this system runs, with their Debian packages.
pub(crate) const TOOLS: [(&str, &str); 3] = [
    ("aria2c", "aria2"),
    ("opentracker", "opentracker"),
    ("mktorrent", "mktorrent"),
];

/// The seeder's JSON-RPC port, on the origin host's loopback.
const SEEDER_RPC_PORT: u16 = 16800;

pub(crate) async fn run(ctx: &Ctx<'_>) -> anyhow::Result<Measured> {
    let tracker = start_tracker(ctx).await?;
    let torrent = make_torrent(ctx).await?;
    let hook = write_hook(ctx)?;
    let seeder = start_seeder(ctx, &torrent)?;
    // Let the seeder announce itself before the first peer asks the tracker.
    tokio::time::sleep(Duration::from_secs(1)).await;

    let nodes = run_nodes(ctx, |index, host, output| {
        let torrent = torrent.clone();
        let hook = hook.clone();
        async move {
            let dir = ctx.work.join(format!("peer-{}", host.name));
            std::fs::create_dir_all(&dir).context("create peer dir")?;
            let port = SEEDER_PORT + 1 + index as u16;
            let mut command = aria2c(ctx, &host, port, &torrent);
            command
                .arg(format!("--dir={}", dir.display()))
                .arg(format!("--on-bt-download-complete={}", hook.display()))
                .stdout(ctx.log(&format!("{}-aria2c", host.name))?)
                .stderr(ctx.log(&format!("{}-aria2c-err", host.name))?);
            let child = command.spawn().context("start aria2c")?;
            let file = dir.join(FILE_NAME);
            let child = wait_done(child, &file.with_extension("bin.done"), &host).await?;
            std::fs::hard_link(&file, &output).context("link downloaded file")?;
            Ok(child)
        }
    })
    .await;
    // Ask before anything stops: the seeder's upload is the origin's payload for BitTorrent.
    let uploaded = seeder_uploaded(ctx).await;
    drop((tracker, seeder));
    let (mut measured, peers) = nodes?;
    drop(peers);
    measured.origin_bytes += uploaded?;
    Ok(measured)
}

async fn start_tracker(ctx: &Ctx<'_>) -> anyhow::Result<Child> {
    let hub = &ctx.lab.hub;
    let tracker_dir = ctx.work.join("tracker");
    std::fs::create_dir_all(&tracker_dir).context("create tracker dir")?;
    let port = TRACKER_PORT.to_string();
    let tracker = hub
        .command("opentracker")
        .args(["-i", &hub.ip, "-p", &port, "-P", &port, "-u", "root", "-d"])
        .arg(&tracker_dir)
        .stdout(ctx.log("opentracker-out")?)
        .stderr(ctx.log("opentracker")?)
        .spawn()
        .context("start opentracker")?;
    wait_tcp(hub, &hub.ip, TRACKER_PORT, "opentracker").await?;
    Ok(tracker)
}

/// A torrent of the origin's file with 256 KiB pieces, announcing to the lab's tracker.
async fn make_torrent(ctx: &Ctx<'_>) -> anyhow::Result<PathBuf> {
    let torrent = ctx.work.join("blob.torrent");
    let mut mktorrent = tokio::process::Command::new("mktorrent");
    mktorrent
        .args(["-l", "18", "-a"])
        .arg(format!("http://{}:{TRACKER_PORT}/announce", ctx.lab.hub.ip))
        .arg("-o")
        .arg(&torrent)
        .arg(&ctx.origin.file);
    run_to_end(mktorrent, "mktorrent").await?;
    Ok(torrent)
}

/// The `--on-bt-download-complete` hook: marks `<first file>.done`.
fn write_hook(ctx: &Ctx<'_>) -> anyhow::Result<PathBuf> {
    let hook = ctx.work.join("done-hook.sh");
    std::fs::write(&hook, "#!/bin/sh\ntouch \"$3.done\"\n").context("write hook")?;
    let mut perms = std::fs::metadata(&hook).context("stat hook")?.permissions();
    std::os::unix::fs::PermissionsExt::set_mode(&mut perms, 0o755);
    std::fs::set_permissions(&hook, perms).context("chmod hook")?;
    Ok(hook)
}

/// The one seeder, on the origin host with the origin's file and (in loopback mode, where tc
/// does not shape) the origin's rate as its upload limit.
fn start_seeder(ctx: &Ctx<'_>, torrent: &PathBuf) -> anyhow::Result<Child> {
    let mut seeder = aria2c(ctx, &ctx.lab.origin, SEEDER_PORT, torrent);
    seeder
        .arg(format!("--dir={}", ctx.origin.root.display()))
        .arg("--bt-seed-unverified=true")
        .arg("--enable-rpc=true")
        .arg(format!("--rpc-listen-port={SEEDER_RPC_PORT}"))
        .stdout(ctx.log("seeder")?)
        .stderr(ctx.log("seeder-err")?);
    if ctx.loopback() {
        let rate = ctx.origin_bw.bytes_per_second();
        seeder.arg(format!("--max-overall-upload-limit={rate}"));
    }
    seeder.spawn().context("start aria2c seeder")
}

/// Payload bytes the seeder uploaded, from its JSON-RPC `aria2.tellActive`.
async fn seeder_uploaded(ctx: &Ctx<'_>) -> anyhow::Result<u64> {
    let request =
        r#"{"jsonrpc":"2.0","id":"lab","method":"aria2.tellActive","params":[["uploadLength"]]}"#;
    let mut curl = ctx.lab.origin.command("curl");
    curl.args(["-sS", "--fail", "--max-time", "5", "-d", request])
        .arg(format!("http://127.0.0.1:{SEEDER_RPC_PORT}/jsonrpc"));
    let reply = run_capture(curl, "query the seeder's upload").await?;
    parse_upload_length(&reply)
}

fn parse_upload_length(reply: &str) -> anyhow::Result<u64> {
    let value: serde_json::Value =
        serde_json::from_str(reply).context("parse the seeder's RPC reply")?;
    let downloads = value["result"]
        .as_array()
        .context("the seeder's RPC reply has no result list")?;
    downloads
        .iter()
        .map(|download| {
            download["uploadLength"]
                .as_str()
                .and_then(|n| n.parse::<u64>().ok())
                .context("the seeder's RPC reply has no uploadLength")
        })
        .sum()
}

/// An aria2c that seeds forever, without DHT, LPD or local peer discovery.
fn aria2c(ctx: &Ctx<'_>, host: &Host, port: u16, torrent: &PathBuf) -> tokio::process::Command {
    let mut command = host.command("aria2c");
    command.args([
        "--no-conf",
        "--enable-dht=false",
        "--enable-dht6=false",
        "--bt-enable-lpd=false",
        "--disable-ipv6=true",
        "--file-allocation=none",
        "--seed-ratio=0.0",
        "--summary-interval=0",
        "--console-log-level=warn",
        "--bt-tracker-connect-timeout=10",
    ]);
    command.arg(format!("--listen-port={port}"));
    if ctx.loopback() && host.name != ctx.lab.origin.name {
        let rate = ctx.node_bw.bytes_per_second();
        command
            .arg(format!("--max-overall-upload-limit={rate}"))
            .arg(format!("--max-overall-download-limit={rate}"));
    }
    command.arg(torrent);
    command
}

/// Waits for the hook's marker; fails when aria2c exits first or after 10 minutes.
async fn wait_done(
    mut child: Child,
    marker: &std::path::Path,
    host: &Host,
) -> anyhow::Result<Child> {
    let deadline = Instant::now() + Duration::from_secs(600);
    loop {
        if marker.exists() {
            return Ok(child);
        }
        if let Some(status) = child.try_wait().context("poll aria2c")? {
            bail!(
                "aria2c on {} exited with {status} before completing",
                host.name
            );
        }
        if Instant::now() > deadline {
            bail!("aria2c on {} did not complete within 10 minutes", host.name);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_seeders_upload() {
        let reply = r#"{"id":"lab","jsonrpc":"2.0","result":[{"uploadLength":"2097152"}]}"#;
        assert_eq!(parse_upload_length(reply).unwrap(), 2_097_152);
        assert!(parse_upload_length(r#"{"error":{}}"#).is_err());
        assert!(parse_upload_length("not json").is_err());
    }
}
