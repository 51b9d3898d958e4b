//! Interop with the upstream Dragonfly client (dfdaemon and dfget 1.5.10) through the real
//! binaries, on loopback addresses: the upstream dfdaemon uses shoal's scheduler (dynconfig file,
//! no manager), and pieces flow both ways.
//!
//! 1. upstream -> shoal: dfget through the upstream dfdaemon fetches a file (no seed yet, so the
//!    scheduler sends it to the origin); then `shoal get` through a shoal daemon gets every byte
//!    from the upstream daemon as its only parent, and the origin serves the body once.
//! 2. shoal -> upstream: with a shoal seed running, dfget through the upstream dfdaemon fetches
//!    a second file; the seed fetches it from the origin, the upstream daemon gets every byte from
//!    the seed (its `REMOTE_PEER` counter), and the origin serves the body once.
//!
//! The upstream client is too long a build for CI, so the test runs only when
//! `SHOAL_DRAGONFLY_BIN_DIR` names a directory holding `dfdaemon` and `dfget`; otherwise it says
//! why and returns.

#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use shoal_testkit::cluster::{download_bytes, metric_value};
use shoal_testkit::origin::FakeOrigin;
use shoal_testkit::{random_bytes, sha256_hex, wait_until};
use tokio::process::{Child, Command};

/// 5 pieces of upstream's 4 MiB default piece length, the last one short.
const LEN: usize = 18 * 1024 * 1024 + 12_345;

fn bin_dir() -> Result<PathBuf, String> {
    let dir = std::env::var_os("SHOAL_DRAGONFLY_BIN_DIR")
        .map(PathBuf::from)
        .ok_or("SHOAL_DRAGONFLY_BIN_DIR is not set (point it at dfdaemon and dfget 1.5.10)")?;
    for program in ["dfdaemon", "dfget"] {
        if !dir.join(program).is_file() {
            return Err(format!("no {program} in {}", dir.display()));
        }
    }
    Ok(dir)
}

/// A loopback /24 of our own, so parallel runs and other tests keep their ports.
fn ip(host: u8) -> String {
    let net = 100 + std::process::id() % 100;
    format!("127.{net}.7.{host}")
}

fn spawn(dir: &Path, name: &str, program: &Path, args: &[String]) -> Child {
    Command::new(program)
        .args(args)
        .env("SHOAL_LOG", "info")
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(dir.join(format!("{name}.out"))).unwrap())
        .stderr(std::fs::File::create(dir.join(format!("{name}.err"))).unwrap())
        .kill_on_drop(true)
        .spawn()
        .unwrap()
}

fn shoal() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_shoal"))
}

fn logs(dir: &Path) -> String {
    let mut text = String::new();
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "out" || e == "err"))
        .collect();
    entries.sort();
    for path in entries {
        let body = std::fs::read_to_string(&path).unwrap_or_default();
        let tail: Vec<&str> = body.lines().rev().take(15).collect();
        text.push_str(&format!("== {}\n", path.display()));
        for line in tail.into_iter().rev() {
            text.push_str(line);
            text.push('\n');
        }
    }
    text
}

fn start_shoal_daemon(dir: &Path, name: &str, ip: &str, scheduler: &str, seed: bool) -> Child {
    let mut args = vec![
        "daemon".to_owned(),
        "--data-dir".to_owned(),
        dir.join(name).display().to_string(),
        "--scheduler".to_owned(),
        format!("http://{scheduler}"),
        "--ip".to_owned(),
        ip.to_owned(),
        "--hostname".to_owned(),
        name.to_owned(),
        "--socket".to_owned(),
        dir.join(format!("{name}.sock")).display().to_string(),
    ];
    if seed {
        args.push("--seed".to_owned());
    }
    spawn(dir, name, shoal(), &args)
}

fn start_dfdaemon(dir: &Path, bins: &Path, ip: &str, scheduler: &str) -> Child {
    let home = dir.join("dfdaemon");
    std::fs::create_dir_all(&home).unwrap();
    let h = home.display();
    let config = format!(
        "host:\n  hostname: up\n  ip: {ip}\n\
         server:\n  pluginDir: {h}/plugins\n  cacheDir: {h}/cache\n\
         download:\n  server:\n    socketPath: {h}/dfdaemon.sock\n\
         upload:\n  server:\n    ip: {ip}\n    port: 4000\n\
         storage:\n  dir: {h}/data\n  server:\n    ip: {ip}\n    tcpPort: 4005\n    quicPort: 4006\n\
         gc:\n  interval: 24h\n  policy:\n    diskHighThresholdPercent: 99\n    diskLowThresholdPercent: 98\n\
         proxy:\n  server:\n    ip: {ip}\n    port: 4001\n\
         metrics:\n  server:\n    ip: {ip}\n    port: 4002\n\
         health:\n  server:\n    ip: {ip}\n    port: 4003\n\
         stats:\n  server:\n    ip: {ip}\n    port: 4004\n"
    );
    std::fs::write(home.join("dfdaemon.yaml"), config).unwrap();
    let dynconfig = format!("scheduler:\n  addrs:\n    - \"{scheduler}\"\n");
    std::fs::write(home.join("dynconfig.yaml"), dynconfig).unwrap();
    let args: Vec<String> = vec![
        "--config".into(),
        home.join("dfdaemon.yaml").display().to_string(),
        "--dynconfig".into(),
        home.join("dynconfig.yaml").display().to_string(),
        "--log-dir".into(),
        home.join("log").display().to_string(),
        "--console".into(),
    ];
    spawn(dir, "dfdaemon", &bins.join("dfdaemon"), &args)
}

async fn tcp_up(addr: &str) -> bool {
    tokio::net::TcpStream::connect(addr).await.is_ok()
}

async fn unix_up(path: &Path) -> bool {
    tokio::net::UnixStream::connect(path).await.is_ok()
}

async fn metrics(addr: &str) -> String {
    match reqwest::get(format!("http://{addr}/metrics")).await {
        Ok(response) => response.text().await.unwrap_or_default(),
        Err(_) => String::new(),
    }
}

/// Reads `dragonfly_client_download_traffic{type="..."}` (0 when absent).
fn upstream_traffic(metrics: &str, kind: &str) -> u64 {
    let name = format!("dragonfly_client_download_traffic{{type=\"{kind}\"}}");
    metric_value(metrics, &name)
}

async fn dfget(bins: &Path, dir: &Path, url: &str, output: &Path) -> std::process::Output {
    Command::new(bins.join("dfget"))
        .arg(url)
        .arg("--output")
        .arg(output)
        .arg("--endpoint")
        .arg(dir.join("dfdaemon").join("dfdaemon.sock"))
        .arg("--no-progress")
        .output()
        .await
        .unwrap()
}

/// Downloads `url` with upstream dfget and checks the copy against `expected`.
async fn dfget_verified(bins: &Path, dir: &Path, url: &str, output: &Path, expected: &[u8]) {
    let result = dfget(bins, dir, url, output).await;
    assert!(
        result.status.success(),
        "dfget failed: {}\n{}",
        String::from_utf8_lossy(&result.stderr),
        logs(dir)
    );
    assert_eq!(
        sha256_hex(&std::fs::read(output).unwrap()),
        sha256_hex(expected)
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn upstream_dfdaemon_and_shoal_exchange_pieces_both_ways() {
    let bins = match bin_dir() {
        Ok(dir) => dir,
        Err(reason) => {
            eprintln!("SKIPPED upstream_dfdaemon_and_shoal_exchange_pieces_both_ways: {reason}");
            return;
        }
    };
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let origin = FakeOrigin::start().await.unwrap();
    let first = random_bytes(LEN, 1);
    let second = random_bytes(LEN, 2);
    let first_url = origin.add("first.bin", first.clone());
    let second_url = origin.add("second.bin", second.clone());

    let scheduler = format!("{}:8002", ip(1));
    let _scheduler = spawn(
        dir,
        "scheduler",
        shoal(),
        &["scheduler".into(), "--listen".into(), scheduler.clone()],
    );
    wait_until(Duration::from_secs(20), || tcp_up(&scheduler))
        .await
        .unwrap_or_else(|e| panic!("scheduler: {e}\n{}", logs(dir)));
    let _dfdaemon = start_dfdaemon(dir, &bins, &ip(2), &scheduler);
    let _shoal = start_shoal_daemon(dir, "shoal", &ip(3), &scheduler, false);
    let up_socket = dir.join("dfdaemon").join("dfdaemon.sock");
    wait_until(Duration::from_secs(60), || unix_up(&up_socket))
        .await
        .unwrap_or_else(|e| panic!("dfdaemon: {e}\n{}", logs(dir)));
    let shoal_socket = dir.join("shoal.sock");
    wait_until(Duration::from_secs(30), || unix_up(&shoal_socket))
        .await
        .unwrap_or_else(|e| panic!("shoal daemon: {e}\n{}", logs(dir)));

    // 1. upstream -> shoal.
    dfget_verified(&bins, dir, &first_url, &dir.join("first-upstream"), &first).await;
    let out = dir.join("first-shoal");
    let result = Command::new(shoal())
        .arg("get")
        .arg(&first_url)
        .arg("-O")
        .arg(&out)
        .arg("--socket")
        .arg(&shoal_socket)
        .arg("--no-progress")
        .output()
        .await
        .unwrap();
    let summary = String::from_utf8_lossy(&result.stdout).into_owned();
    assert!(
        result.status.success(),
        "shoal get failed: {}\n{}",
        String::from_utf8_lossy(&result.stderr),
        logs(dir)
    );
    assert_eq!(
        sha256_hex(&std::fs::read(&out).unwrap()),
        sha256_hex(&first)
    );
    assert!(
        summary.contains(&format!(
            "{LEN} bytes from 1 parent(s), 0 bytes from origin"
        )),
        "shoal get did not take everything from the upstream daemon: {summary}"
    );
    let shoal_metrics = metrics(&format!("{}:4002", ip(3))).await;
    assert_eq!(download_bytes(&shoal_metrics, "parent"), LEN as u64);
    // Upstream's one-byte range probe is the only extra origin payload.
    assert!(
        origin.served("first.bin") <= LEN as u64 + 1,
        "origin served {} bytes of first.bin",
        origin.served("first.bin")
    );

    // 2. shoal -> upstream, through a shoal seed.
    let seed_socket = dir.join("seed.sock");
    let _seed = start_shoal_daemon(dir, "seed", &ip(4), &scheduler, true);
    wait_until(Duration::from_secs(30), || unix_up(&seed_socket))
        .await
        .unwrap_or_else(|e| panic!("seed: {e}\n{}", logs(dir)));
    let before = upstream_traffic(&metrics(&format!("{}:4002", ip(2))).await, "REMOTE_PEER");
    dfget_verified(
        &bins,
        dir,
        &second_url,
        &dir.join("second-upstream"),
        &second,
    )
    .await;
    let after = upstream_traffic(&metrics(&format!("{}:4002", ip(2))).await, "REMOTE_PEER");
    assert_eq!(
        after - before,
        LEN as u64,
        "upstream dfdaemon did not take every byte from the shoal seed\n{}",
        logs(dir)
    );
    assert!(
        origin.served("second.bin") <= LEN as u64 + 1,
        "origin served {} bytes of second.bin",
        origin.served("second.bin")
    );
}
