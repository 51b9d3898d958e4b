//! `shoal bench micro ttfb`: the proxy's time to first byte for a cold blob.
//!
//! A scheduler and one daemon run as processes; the in-process origin serves seeded random
//! blobs at `/v2/micro/blob/blobs/sha256:<hex>` (the daemon's default P2P rule matches them).
//! Per repetition (a new blob, so cold for the daemon) the blob is read straight from the origin,
//! then through the daemon's proxy as a registry mirror request (`X-Dragonfly-Registry`). Both
//! record the time to response headers and to the first body byte, read the whole body and check
//! its sha256. The proxy's extra TTFB is reported as a difference and a ratio.

use std::time::Duration;

use anyhow::{bail, Context as _};
use bytesize::ByteSize;
use sha2::Digest as _;
use tokio::time::Instant;

use super::cluster::Cluster;
use super::origin::{self, Origin};
use super::stats::{self, fmt, Summary, Table};
use super::CommonArgs;

/// Longest wait for one whole body.
const BODY_TIMEOUT: Duration = Duration::from_secs(600);

/// Flags of `shoal bench micro ttfb`.
#[derive(Debug, clap::Args)]
pub struct TtfbArgs {
    /// Blob size, e.g. 1GiB.
    #[arg(long, default_value = "1GiB")]
    size: ByteSize,
    /// Repetitions, each with a new (cold) blob.
    #[arg(long, default_value_t = 3)]
    reps: usize,
    #[command(flatten)]
    common: CommonArgs,
}

/// One read of a blob.
#[derive(Debug, Clone, Copy)]
struct Read {
    headers: Duration,
    first_byte: Duration,
    total: Duration,
}

/// Runs the benchmark and prints its table.
pub(crate) async fn run(args: TtfbArgs) -> anyhow::Result<()> {
    anyhow::ensure!(args.reps > 0, "--reps must be at least 1");
    let work = args.common.work_dir("ttfb")?;
    let dir = work.path().to_path_buf();
    let spec = args.common.cluster_spec(1)?;
    let origin = Origin::start(spec.ip(1).into()).await?;
    let mut cluster = Cluster::start(&spec, &dir).await?;
    let client = reqwest::Client::builder()
        .no_proxy()
        .build()
        .context("build http client")?;
    let mut direct = Vec::new();
    let mut proxied = Vec::new();
    for rep in 0..args.reps {
        let blob = dir.join(format!("blob-{rep}.bin"));
        eprintln!(
            "ttfb: writing blob {} of {} ({})",
            rep + 1,
            args.reps,
            args.size
        );
        let digest = origin::write_random_file(&blob, args.size.as_u64(), 100 + rep as u64).await?;
        let path = format!("/v2/micro/blob/blobs/sha256:{digest}");
        origin.add(&path, &blob);
        let read = read_blob(&client, &origin.url(&path), None, &digest).await;
        direct.push(read.context("read blob from the origin")?);
        let proxy_url = format!("http://{}{path}", cluster.daemons[0].proxy);
        let read = read_blob(&client, &proxy_url, Some(&origin.base()), &digest).await;
        proxied.push(read.context("read blob through the proxy")?);
        cluster.ensure_running()?;
        tokio::fs::remove_file(&blob).await?;
    }
    let origin_bytes = origin.body_bytes();
    cluster.stop().await;
    let (text, json) = report(&args, &direct, &proxied, origin_bytes);
    args.common.report(&text, &json)
}

/// GETs `url` (with `X-Dragonfly-Registry` when given), timing headers and first byte, and
/// checks the body's sha256.
async fn read_blob(
    client: &reqwest::Client,
    url: &str,
    registry: Option<&str>,
    digest: &str,
) -> anyhow::Result<Read> {
    let mut request = client.get(url);
    if let Some(registry) = registry {
        request = request.header("X-Dragonfly-Registry", registry);
    }
    let started = Instant::now();
    let mut response = tokio::time::timeout(BODY_TIMEOUT, request.send())
        .await
        .context("response headers timed out")?
        .context("send request")?;
    let headers = started.elapsed();
    if !response.status().is_success() {
        bail!("{url} answered {}", response.status());
    }
    let mut hasher = sha2::Sha256::new();
    let mut first_byte = None;
    let body = async {
        while let Some(chunk) = response.chunk().await.context("read body")? {
            if first_byte.is_none() && !chunk.is_empty() {
                first_byte = Some(started.elapsed());
            }
            hasher.update(&chunk);
        }
        anyhow::Ok(())
    };
    tokio::time::timeout(BODY_TIMEOUT, body)
        .await
        .context("body timed out")??;
    let total = started.elapsed();
    let actual = hex::encode(hasher.finalize());
    if actual != digest {
        bail!("body from {url} has sha256 {actual}, expected {digest}");
    }
    Ok(Read {
        headers,
        first_byte: first_byte.unwrap_or(total),
        total,
    })
}

fn report(
    args: &TtfbArgs,
    direct: &[Read],
    proxied: &[Read],
    origin_bytes: u64,
) -> (String, serde_json::Value) {
    let size = args.size.as_u64();
    let summarize = |reads: &[Read], pick: fn(&Read) -> Duration| {
        Summary::of_durations(&reads.iter().map(pick).collect::<Vec<_>>())
    };
    let mut table = Table::new(&[
        "path",
        "headers p50 ms",
        "TTFB p50 ms",
        "TTFB max ms",
        "whole body p50 s",
        "MiB/s (p50)",
    ]);
    let mut json_paths = serde_json::Map::new();
    let mut ttfb = Vec::new();
    for (name, reads) in [
        ("origin, direct", direct),
        ("daemon proxy, cold blob", proxied),
    ] {
        let headers = summarize(reads, |read| read.headers);
        let first = summarize(reads, |read| read.first_byte);
        let total = summarize(reads, |read| read.total);
        let rate = stats::mib_per_s(stats::throughput(size, Duration::from_secs_f64(total.p50)));
        table.row(vec![
            name.to_string(),
            fmt(headers.p50 * 1000.0, 2),
            fmt(first.p50 * 1000.0, 2),
            fmt(first.max * 1000.0, 2),
            fmt(total.p50, 2),
            fmt(rate, 0),
        ]);
        json_paths.insert(
            name.to_string(),
            serde_json::json!({
                "headers_ms": headers.to_json(1000.0),
                "ttfb_ms": first.to_json(1000.0),
                "total_s": total.to_json(1.0),
                "mib_per_s_at_p50": rate,
            }),
        );
        ttfb.push(first.p50);
    }
    let difference_ms = (ttfb[1] - ttfb[0]) * 1000.0;
    let ratio = stats::ratio(ttfb[1], ttfb[0]);
    let text = format!(
        "ttfb: {} blob x {} repetitions, each a new cold blob (bodies checked by sha256)\n\n{}\n\
         proxy TTFB - origin TTFB (p50): {} ms; ratio {}\n\
         origin sent {origin_bytes} body bytes for {} bytes read on both paths",
        args.size,
        args.reps,
        table.render(),
        fmt(difference_ms, 2),
        fmt(ratio, 1),
        2 * size * args.reps as u64,
    );
    let json = serde_json::json!({
        "bench": "ttfb",
        "size_bytes": size,
        "reps": args.reps,
        "paths": json_paths,
        "ttfb_difference_ms_p50": difference_ms,
        "ttfb_ratio_p50": ratio,
        "origin_body_bytes": origin_bytes,
    });
    (text, json)
}
