//! BitTorrent: `opentracker` on the hub, one `aria2c` seeder in the origin's namespace (so it
//! has the origin's shaping), one `aria2c` per node; DHT, LPD off. Peers keep seeding until every
//! node is done; a node's completion is when aria2c runs its `--on-bt-download-complete` hook.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context as _};
use tokio::process::Child;
use tokio::time::{Duration, Instant};

use super::{run_capture, run_nodes, run_to_end, Ctx, Measured};
use crate::lab::netns::{running_as_root, Host};
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
    let torrent = make_torrent(ctx).await?;
    let tracker = start_tracker(ctx, &info_hash(&torrent).await?).await?;
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

/// opentracker on the hub, serving only `info_hash`: Debian builds it with a whitelist.
async fn start_tracker(ctx: &Ctx<'_>, info_hash: &str) -> anyhow::Result<Child> {
    let hub = &ctx.lab.hub;
    let tracker_dir = ctx.work.join("tracker");
    std::fs::create_dir_all(&tracker_dir).context("create tracker dir")?;
    let whitelist = tracker_dir.join("whitelist");
    std::fs::write(&whitelist, format!("{info_hash}\n")).context("write tracker whitelist")?;
    // As root opentracker chroots into its -d dir before it reads the whitelist.
    let whitelist = if running_as_root() {
        PathBuf::from("/whitelist")
    } else {
        whitelist
    };
    let port = TRACKER_PORT.to_string();
    let tracker = hub
        .command("opentracker")
        .args(["-i", &hub.ip, "-p", &port, "-P", &port, "-d"])
        .arg(&tracker_dir)
        .arg("-w")
        .arg(&whitelist)
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

/// The torrent's info hash in hex, as `aria2c --show-files` prints it.
async fn info_hash(torrent: &Path) -> anyhow::Result<String> {
    let mut show = tokio::process::Command::new("aria2c");
    show.arg("--show-files=true").arg(torrent);
    let text = run_capture(show, "aria2c --show-files").await?;
    parse_info_hash(&text).context("aria2c --show-files printed no info hash")
}

fn parse_info_hash(text: &str) -> Option<String> {
    text.lines().find_map(|line| {
        let hash = line.trim().strip_prefix("Info Hash:")?.trim();
        (hash.len() == 40 && hash.chars().all(|c| c.is_ascii_hexdigit()))
            .then(|| hash.to_ascii_lowercase())
    })
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

    #[test]
    fn reads_the_info_hash() {
        let text = "Mode: single\nInfo Hash: BFFFECBBF20464064DC85C1CB95AFB80261728E7\nPiece Length: 256KiB\n";
        assert_eq!(
            parse_info_hash(text).as_deref(),
            Some("bfffecbbf20464064dc85c1cb95afb80261728e7")
        );
        assert_eq!(parse_info_hash("Info Hash: xyz"), None);
    }
}
