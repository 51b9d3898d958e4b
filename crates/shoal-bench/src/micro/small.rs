//! `shoal bench micro small`: latency of small objects through a warm cluster.
//!
//! A scheduler and two daemons run as processes; the in-process origin serves one seeded file
//! per size. For each size and repetition a new URL (a new task) is fetched with `shoal get`
//! through daemon A (from the origin), then through daemon B (from A: cold for B, served by a
//! peer); then the first URL is fetched again through B `--reps` times (warm: B's own cache).
//! The baseline, measured in the same run, is `curl` fetching the same file straight from the
//! origin: both are one process per fetch, so process start costs the same on both sides.

use std::path::Path;
use std::time::Duration;

use anyhow::{bail, Context as _};
use bytesize::ByteSize;
use tokio::time::Instant;

use super::cluster::Cluster;
use super::origin::{self, Origin};
use super::procs;
use super::stats::{self, fmt, Summary, Table};
use super::CommonArgs;

/// Flags of `shoal bench micro small`.
#[derive(Debug, clap::Args)]
pub struct SmallArgs {
    /// Object sizes, comma separated.
    #[arg(long, value_delimiter = ',', default_value = "1B,1KiB,1MiB,10MiB")]
    sizes: Vec<ByteSize>,
    /// Fetches per size and path.
    #[arg(long, default_value_t = 20)]
    reps: usize,
    #[command(flatten)]
    common: CommonArgs,
}

/// Latencies of one size, per path.
#[derive(Debug, Default)]
struct SizeResult {
    size: u64,
    direct: Vec<Duration>,
    via_a_origin: Vec<Duration>,
    via_b_peer: Vec<Duration>,
    via_b_cache: Vec<Duration>,
}

/// Runs the benchmark and prints its table.
pub(crate) async fn run(args: SmallArgs) -> anyhow::Result<()> {
    anyhow::ensure!(args.reps > 0, "--reps must be at least 1");
    let work = args.common.work_dir("small")?;
    let dir = work.path().to_path_buf();
    let spec = args.common.cluster_spec(2)?;
    let origin = Origin::start(spec.ip(1).into()).await?;
    let mut cluster = Cluster::start(&spec, &dir).await?;
    let mut results = Vec::new();
    for (index, size) in args.sizes.iter().enumerate() {
        let data = dir.join(format!("object-{index}.bin"));
        let digest = origin::write_random_file(&data, size.as_u64(), 10 + index as u64).await?;
        eprintln!("small: {size}");
        let result = measure_size(
            &mut cluster,
            &spec.bin,
            &origin,
            &dir,
            &data,
            &digest,
            index,
            &args,
        )
        .await
        .with_context(|| format!("size {size}"))?;
        results.push(result);
    }
    cluster.stop().await;
    let (text, json) = report(&args, &results);
    args.common.report(&text, &json)
}

#[allow(clippy::too_many_arguments)]
async fn measure_size(
    cluster: &mut Cluster,
    bin: &Path,
    origin: &Origin,
    dir: &Path,
    data: &Path,
    digest: &str,
    index: usize,
    args: &SmallArgs,
) -> anyhow::Result<SizeResult> {
    let size = std::fs::metadata(data)?.len();
    let mut result = SizeResult {
        size,
        ..Default::default()
    };
    let output = dir.join("small.out");
    let first_url = origin.url(&format!("/small/{index}/0"));
    for rep in 0..args.reps {
        let path = format!("/small/{index}/{rep}");
        origin.add(&path, data);
        let url = origin.url(&path);
        result.direct.push(curl(&url, &output).await?);
        check(&output, digest).await?;
        let (a, b) = (&cluster.daemons[0], &cluster.daemons[1]);
        result.via_a_origin.push(
            procs::shoal_get(bin, &a.socket, &url, &output)
                .await?
                .elapsed,
        );
        check(&output, digest).await?;
        result.via_b_peer.push(
            procs::shoal_get(bin, &b.socket, &url, &output)
                .await?
                .elapsed,
        );
        check(&output, digest).await?;
    }
    for _ in 0..args.reps {
        let b = &cluster.daemons[1];
        result.via_b_cache.push(
            procs::shoal_get(bin, &b.socket, &first_url, &output)
                .await?
                .elapsed,
        );
        check(&output, digest).await?;
    }
    cluster.ensure_running()?;
    Ok(result)
}

/// `curl -sf -o output url`, timed.
async fn curl(url: &str, output: &Path) -> anyhow::Result<Duration> {
    let started = Instant::now();
    let status = tokio::process::Command::new("curl")
        .args(["-sf", "--noproxy", "*", "-o"])
        .arg(output)
        .arg(url)
        .kill_on_drop(true)
        .status()
        .await
        .context("run curl (Debian package curl)")?;
    let elapsed = started.elapsed();
    anyhow::ensure!(status.success(), "curl {url} failed: {status}");
    Ok(elapsed)
}

/// Fails when `path` does not hold the expected content; removes it either way.
async fn check(path: &Path, digest: &str) -> anyhow::Result<()> {
    let actual = origin::sha256_file(path).await?;
    tokio::fs::remove_file(path).await?;
    if actual != digest {
        bail!("fetched content has sha256 {actual}, expected {digest}");
    }
    Ok(())
}

fn report(args: &SmallArgs, results: &[SizeResult]) -> (String, serde_json::Value) {
    let mut table = Table::new(&[
        "size",
        "path",
        "p50 ms",
        "p99 ms",
        "max ms",
        "p50 / direct p50",
    ]);
    let mut json_sizes = Vec::new();
    for result in results {
        let direct = Summary::of_durations(&result.direct);
        let paths = [
            ("direct from origin (curl)", &result.direct),
            ("shoal get via A, from origin", &result.via_a_origin),
            ("shoal get via B, from peer A", &result.via_b_peer),
            ("shoal get via B, local cache", &result.via_b_cache),
        ];
        let mut json_paths = serde_json::Map::new();
        for (name, samples) in paths {
            let summary = Summary::of_durations(samples);
            let ratio = stats::ratio(summary.p50, direct.p50);
            table.row(vec![
                ByteSize::b(result.size).to_string(),
                name.to_string(),
                fmt(summary.p50 * 1000.0, 1),
                fmt(summary.p99 * 1000.0, 1),
                fmt(summary.max * 1000.0, 1),
                fmt(ratio, 2),
            ]);
            json_paths.insert(
                name.to_string(),
                serde_json::json!({"latency_ms": summary.to_json(1000.0), "p50_ratio_to_direct": ratio}),
            );
        }
        json_sizes.push(serde_json::json!({"size_bytes": result.size, "paths": json_paths}));
    }
    let text = format!(
        "small: {} fetches per size and path (nearest-rank p99: with fewer than 100 samples \
         it is the maximum)\n\n{}",
        args.reps,
        table.render()
    );
    let json = serde_json::json!({"bench": "small", "reps": args.reps, "sizes": json_sizes});
    (text, json)
}
