//! `shoal bench micro hop`: one hop parent → child over loopback, against the copy limit.
//!
//! A scheduler and two daemons run as processes; an in-process origin serves a seeded random
//! file. Per repetition (a new URL, so a new task): daemon A fetches the file from the origin
//! (the warm parent), then daemon B fetches it from A while the resident memory of both is
//! sampled; B's output is checked against the file's sha256. Side by side, the same file is
//! copied on the same disk twice — `std::fs::copy` and `cat > file`, each followed by fsync, as
//! the daemon fsyncs what it stores — and the hop's throughput is reported as a ratio to the
//! copy. Targets: hop ≥ 0.8 × copy, daemon idle RSS ≤ 20 MiB.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context as _};
use bytesize::ByteSize;
use tokio::time::Instant;

use super::cluster::Cluster;
use super::origin::{self, Origin};
use super::procs::{self, RssSampler};
use super::stats::{self, fmt, Summary, Table};
use super::CommonArgs;

/// Idle RSS target per daemon, MiB.
const IDLE_RSS_TARGET_MIB: f64 = 20.0;
/// Hop throughput target as a fraction of the copy.
const COPY_RATIO_TARGET: f64 = 0.8;
/// How long daemons settle after start before their idle memory is read.
const SETTLE: Duration = Duration::from_secs(2);

/// Flags of `shoal bench micro hop`.
#[derive(Debug, clap::Args)]
pub struct HopArgs {
    /// File size, e.g. 256MiB or 1GiB.
    #[arg(long, default_value = "256MiB")]
    size: ByteSize,
    /// Repetitions (each a new task); figures are medians over them.
    #[arg(long, default_value_t = 3)]
    reps: usize,
    #[command(flatten)]
    common: CommonArgs,
}

/// Picks one wall time out of a repetition.
type Pick = fn(&Rep) -> Duration;

/// Wall times of one repetition.
#[derive(Debug, Default)]
struct Rep {
    copy: Duration,
    cat: Duration,
    origin_to_a: Duration,
    a_to_b: Duration,
    b_from_parents: u64,
    max_rss_kib: Vec<u64>,
}

/// Runs the benchmark and prints its tables.
pub(crate) async fn run(args: HopArgs) -> anyhow::Result<()> {
    anyhow::ensure!(args.reps > 0, "--reps must be at least 1");
    let size = args.size.as_u64();
    let work = args.common.work_dir("hop")?;
    let dir = work.path().to_path_buf();
    let data = dir.join("data.bin");
    eprintln!("hop: writing {} of random data", args.size);
    let digest = origin::write_random_file(&data, size, 1).await?;

    let spec = args.common.cluster_spec(2)?;
    let origin = Origin::start(spec.ip(1).into()).await?;
    let mut cluster = Cluster::start(&spec, &dir).await?;
    tokio::time::sleep(SETTLE).await;
    let idle: Vec<procs::Memory> = cluster
        .daemons
        .iter()
        .map(|daemon| daemon.process.memory())
        .collect::<anyhow::Result<_>>()?;

    let mut reps = Vec::new();
    for rep in 0..args.reps {
        let path = format!("/hop/rep-{rep}.bin");
        origin.add(&path, &data);
        let url = origin.url(&path);
        let result = run_rep(&mut cluster, &spec.bin, &dir, &data, &url, &digest, rep).await;
        reps.push(result.with_context(|| format!("repetition {rep}"))?);
        eprintln!("hop: repetition {} of {} done", rep + 1, args.reps);
    }
    let peak: Vec<procs::Memory> = cluster
        .daemons
        .iter()
        .map(|daemon| daemon.process.memory())
        .collect::<anyhow::Result<_>>()?;
    let origin_bytes = origin.body_bytes();
    cluster.stop().await;

    let (text, json) = report(&args, &reps, &idle, &peak, origin_bytes);
    args.common.report(&text, &json)
}

async fn run_rep(
    cluster: &mut Cluster,
    bin: &Path,
    dir: &Path,
    data: &Path,
    url: &str,
    digest: &str,
    rep: usize,
) -> anyhow::Result<Rep> {
    let copy = timed_copy(data, &dir.join(format!("copy-{rep}.bin"))).await?;
    let cat = timed_cat(data, &dir.join(format!("cat-{rep}.bin"))).await?;

    let a_output = dir.join(format!("a-{rep}.out"));
    let b_output = dir.join(format!("b-{rep}.out"));
    let (a, b) = (&cluster.daemons[0], &cluster.daemons[1]);
    let warm = procs::shoal_get(bin, &a.socket, url, &a_output).await?;
    let sampler = RssSampler::start(vec![a.process.pid(), b.process.pid()]);
    let hop = procs::shoal_get(bin, &b.socket, url, &b_output).await;
    let max_rss_kib = sampler.finish().await?;
    let hop = hop?;
    cluster.ensure_running()?;
    let actual = origin::sha256_file(&b_output).await?;
    if actual != digest {
        bail!("daemon B's output has sha256 {actual}, expected {digest}");
    }
    for path in [a_output, b_output] {
        let _ = tokio::fs::remove_file(path).await;
    }
    Ok(Rep {
        copy,
        cat,
        origin_to_a: warm.elapsed,
        a_to_b: hop.elapsed,
        b_from_parents: procs::parse_sources(&hop.summary).parents,
        max_rss_kib,
    })
}

/// `std::fs::copy` then fsync of the copy; the copy is removed afterwards.
async fn timed_copy(source: &Path, target: &Path) -> anyhow::Result<Duration> {
    let (source, target) = (source.to_path_buf(), target.to_path_buf());
    tokio::task::spawn_blocking(move || -> anyhow::Result<Duration> {
        let started = Instant::now();
        std::fs::copy(&source, &target).context("copy data file")?;
        std::fs::File::open(&target)?.sync_all()?;
        let elapsed = started.elapsed();
        std::fs::remove_file(&target)?;
        Ok(elapsed)
    })
    .await
    .context("join copy")?
}

/// `cat source > target` in a shell, then fsync of the target; the copy is removed afterwards.
async fn timed_cat(source: &Path, target: &Path) -> anyhow::Result<Duration> {
    let started = Instant::now();
    let status = tokio::process::Command::new("sh")
        .arg("-c")
        .arg("cat \"$1\" > \"$2\"")
        .arg("sh")
        .arg(source)
        .arg(target)
        .status()
        .await
        .context("run cat")?;
    anyhow::ensure!(status.success(), "cat failed: {status}");
    let target: PathBuf = target.to_path_buf();
    let sync_target = target.clone();
    tokio::task::spawn_blocking(move || std::fs::File::open(&sync_target)?.sync_all())
        .await
        .context("join fsync")??;
    let elapsed = started.elapsed();
    tokio::fs::remove_file(&target).await?;
    Ok(elapsed)
}

fn report(
    args: &HopArgs,
    reps: &[Rep],
    idle: &[procs::Memory],
    peak: &[procs::Memory],
    origin_bytes: u64,
) -> (String, serde_json::Value) {
    let size = args.size.as_u64();
    let rates = |pick: fn(&Rep) -> Duration| -> Summary {
        let rates: Vec<f64> = reps
            .iter()
            .map(|rep| stats::mib_per_s(stats::throughput(size, pick(rep))))
            .collect();
        Summary::of(&rates)
    };
    let copy = rates(|rep| rep.copy);
    let rows: [(&str, Summary, Pick); 4] = [
        ("copy + fsync (std::fs::copy)", copy, |rep| rep.copy),
        ("cat > file + fsync", rates(|rep| rep.cat), |rep| rep.cat),
        (
            "origin -> daemon A (shoal get)",
            rates(|rep| rep.origin_to_a),
            |rep| rep.origin_to_a,
        ),
        (
            "daemon A -> daemon B (one hop)",
            rates(|rep| rep.a_to_b),
            |rep| rep.a_to_b,
        ),
    ];
    let mut table = Table::new(&[
        "path",
        "median s",
        "median MiB/s",
        "min..max MiB/s",
        "ratio to copy",
    ]);
    let mut json_rows = serde_json::Map::new();
    for (name, rate, pick) in &rows {
        let seconds = Summary::of_durations(&reps.iter().map(pick).collect::<Vec<_>>());
        let ratio = stats::ratio(rate.p50, copy.p50);
        table.row(vec![
            name.to_string(),
            fmt(seconds.p50, 3),
            fmt(rate.p50, 0),
            format!("{}..{}", fmt(rate.min, 0), fmt(rate.max, 0)),
            fmt(ratio, 2),
        ]);
        json_rows.insert(
            name.to_string(),
            serde_json::json!({
                "seconds": seconds.to_json(1.0),
                "mib_per_s": rate.to_json(1.0),
                "ratio_to_copy": ratio,
            }),
        );
    }
    let hop_ratio = stats::ratio(rows[3].1.p50, copy.p50);

    let mut memory = Table::new(&[
        "daemon",
        "idle RSS MiB",
        "max RSS during hop MiB",
        "peak VmHWM MiB",
    ]);
    let mut json_memory = Vec::new();
    for (index, name) in ["A (parent)", "B (child)"].iter().enumerate() {
        let max_rss = reps
            .iter()
            .filter_map(|rep| rep.max_rss_kib.get(index).copied())
            .max()
            .unwrap_or(0);
        let idle_mib = stats::kib_to_mib(idle[index].rss_kib);
        memory.row(vec![
            name.to_string(),
            fmt(idle_mib, 1),
            fmt(stats::kib_to_mib(max_rss), 1),
            fmt(stats::kib_to_mib(peak[index].hwm_kib), 1),
        ]);
        json_memory.push(serde_json::json!({
            "daemon": name,
            "idle_rss_mib": idle_mib,
            "max_rss_during_hop_mib": stats::kib_to_mib(max_rss),
            "peak_hwm_mib": stats::kib_to_mib(peak[index].hwm_kib),
        }));
    }
    let idle_max = idle
        .iter()
        .map(|memory| stats::kib_to_mib(memory.rss_kib))
        .fold(0.0, f64::max);
    let from_parents = reps.iter().map(|rep| rep.b_from_parents).min().unwrap_or(0);
    let text = format!(
        "hop: {} x {} repetitions (median over repetitions)\n\n{}\n{}\n\
         B got {from_parents} of {size} bytes from its parent (lowest over repetitions); \
         origin sent {origin_bytes} body bytes in total\n\
         target hop >= {COPY_RATIO_TARGET} x copy: measured {} -> {}\n\
         target daemon idle RSS <= {IDLE_RSS_TARGET_MIB} MiB: measured {} MiB -> {}",
        args.size,
        reps.len(),
        table.render(),
        memory.render(),
        fmt(hop_ratio, 2),
        verdict(hop_ratio >= COPY_RATIO_TARGET),
        fmt(idle_max, 1),
        verdict(idle_max <= IDLE_RSS_TARGET_MIB),
    );
    let json = serde_json::json!({
        "bench": "hop",
        "size_bytes": size,
        "reps": reps.len(),
        "paths": json_rows,
        "memory": json_memory,
        "b_bytes_from_parents_min": from_parents,
        "origin_body_bytes": origin_bytes,
        "hop_ratio_to_copy": hop_ratio,
        "targets": {
            "hop_ratio_to_copy": COPY_RATIO_TARGET,
            "idle_rss_mib": IDLE_RSS_TARGET_MIB,
        },
    });
    (text, json)
}

/// `met` or `MISSED`.
pub(crate) fn verdict(met: bool) -> &'static str {
    if met {
        "met"
    } else {
        "MISSED"
    }
}
