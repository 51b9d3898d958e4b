//! The shaped multi-node lab: one scenario, every system side by side on the same lab.
//!
//! `shoal bench --nodes N --size SIZE --out DIR` builds the lab ([`netns`]), starts the origin
//! ([`origin`]), runs each system ([`systems`]) in turn against the same file, and writes
//! `report.md`, `report.json` ([`report`]) and PNG charts ([`charts`]) to `DIR`. The
//! `dragonfly` system runs upstream dfdaemon and dfget 1.5.10 (`--dragonfly-bin-dir`, else
//! PATH) on the nodes under shoal's scheduler and seeds; without them it is skipped. Each system's
//! result is set against the fluid-model bound ([`bound`]). The run fails when any node's copy
//! does not match the origin's sha256. Ctrl-C, SIGTERM, errors and success all remove the
//! namespaces and stop every process the run started; `--cleanup` removes leftovers of earlier
//! runs that were killed.
//!
//! `shoal bench --image [--nodes N] [--size SIZE] [--layers L]` runs the container-pull
//! scenario ([`image`]) instead, in the same lab: the origin host runs Debian's
//! `docker-registry`, the bench builds a random image of `L` layers (default 8) adding up to
//! `SIZE` (default 512MiB; `--smoke --image`: 8MiB in 4 layers) and pushes it there with
//! `skopeo`, and every node runs its own `containerd` inside its namespace. Two systems run side
//! by side: `direct` (each containerd pulls from the registry) and `shoal` (each pulls through
//! its node daemon's registry mirror on `http://<node ip>:4001`, set up with `shoal init
//! containerd`). Per node the time of `ctr images pull` (fetch and unpack) is measured and the
//! unpacked root filesystem is checked against the built image; the registry's bytes (its
//! access log, and its namespace's `eth0`) count as origin bytes, and `F` in `T_min` is the
//! image's blob total. It needs root and the Debian packages containerd, docker-registry and
//! skopeo; without namespaces it runs on loopback, unshaped except for shoal's upload limit.

mod bound;
mod charts;
mod image;
mod netns;
mod origin;
mod report;
mod scenario;
mod systems;

use std::path::PathBuf;

use anyhow::Context as _;
use bytesize::ByteSize;

pub(crate) use scenario::Scenario;
pub use scenario::{Arrival, Bandwidth};

/// Flags of the lab scenario.
#[derive(Debug, clap::Args)]
pub struct LabArgs {
    /// Downloading nodes (default 4; 3 with --smoke).
    #[arg(long)]
    nodes: Option<usize>,
    /// File size, e.g. 32MiB (default; 2MiB with --smoke); with --image the image's total
    /// (default 512MiB; 8MiB with --smoke).
    #[arg(long)]
    size: Option<ByteSize>,
    /// When nodes start: `all` at once, or `staggered[:DELAY]` (DELAY between nodes, 1s).
    #[arg(long, default_value = "all")]
    arrival: Arrival,
    /// shoal seed daemons (the shoal and dragonfly systems); they count as peers with their own
    /// upload in the bound.
    #[arg(long, default_value_t = 1)]
    seeds: usize,
    /// The origin's uplink, e.g. 100mbit (default; 1gbit with --smoke).
    #[arg(long)]
    origin_bw: Option<Bandwidth>,
    /// Each node's upload and download, e.g. 50mbit (default; 500mbit with --smoke).
    #[arg(long)]
    node_bw: Option<Bandwidth>,
    /// Systems to compare, comma-separated (default: all).
    #[arg(long, value_delimiter = ',')]
    systems: Vec<System>,
    /// The shoal binary (default: this executable).
    #[arg(long)]
    shoal_bin: Option<PathBuf>,
    /// Log filter (`SHOAL_LOG` syntax) of the shoal processes; their logs go to DIR/logs/shoal.
    #[arg(long, default_value = "warn")]
    shoal_log: String,
    /// Where upstream dfdaemon and dfget 1.5.10 are (default: PATH).
    #[arg(long)]
    dragonfly_bin_dir: Option<PathBuf>,
    /// Output directory for the report, charts and logs.
    #[arg(long, default_value = "bench-out")]
    out: PathBuf,
    /// The tiniest scenario, for CI.
    #[arg(long)]
    smoke: bool,
    /// Container-pull scenario: containerd on every node pulls an image, direct vs shoal.
    #[arg(long)]
    image: bool,
    /// Layers of the --image image (default 8; 4 with --smoke).
    #[arg(long, requires = "image")]
    layers: Option<usize>,
    /// Use loopback addresses and the tools' own rate limits even where namespaces work.
    #[arg(long)]
    loopback: bool,
    /// Remove namespaces and processes left by earlier runs, then exit.
    #[arg(long)]
    cleanup: bool,
}

/// A system the lab compares.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum System {
    Direct,
    Bittorrent,
    Dragonfly,
    Shoal,
}

impl System {
    pub(crate) fn name(self) -> &'static str {
        match self {
            Self::Direct => "direct",
            Self::Bittorrent => "bittorrent",
            Self::Dragonfly => "dragonfly",
            Self::Shoal => "shoal",
        }
    }
}

/// Runs the lab scenario; Ctrl-C and SIGTERM clean up like any other exit.
pub async fn run(args: LabArgs) -> anyhow::Result<()> {
    if args.cleanup {
        let removed = netns::cleanup_leftovers()?;
        println!("removed {} leftover namespace(s)", removed.len());
        for name in removed {
            println!("  {name}");
        }
        return Ok(());
    }
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("install SIGTERM handler")?;
    tokio::select! {
        result = run_scenario(args) => result,
        _ = tokio::signal::ctrl_c() => anyhow::bail!("interrupted; lab removed"),
        _ = terminate.recv() => anyhow::bail!("terminated; lab removed"),
    }
}

async fn run_scenario(args: LabArgs) -> anyhow::Result<()> {
    let command: Vec<String> = std::env::args().collect();
    eprintln!("$ {}", command.join(" "));
    let mut scenario = Scenario::from_args(&args);
    let systems = if args.image {
        image::systems(&args.systems)?
    } else if args.systems.is_empty() {
        vec![
            System::Direct,
            System::Bittorrent,
            System::Dragonfly,
            System::Shoal,
        ]
    } else {
        args.systems.clone()
    };
    if args.image {
        image::preflight()?;
    }
    let shoal_bin = match &args.shoal_bin {
        Some(path) => path.clone(),
        None => std::env::current_exe().context("find this executable")?,
    };
    let out = setup_out_dir(&args.out)?;
    let work = tempfile::Builder::new()
        .prefix("shoal-lab-")
        .tempdir()
        .context("create work dir")?;

    let lab = netns::Lab::create(
        scenario.seeds,
        scenario.nodes,
        netns::Shaping {
            origin: scenario.origin_bw,
            node: scenario.node_bw,
        },
        args.loopback,
    )?;
    if let netns::Mode::Loopback { reason } = &lab.mode {
        eprintln!("network namespaces unavailable ({reason}); using loopback addresses");
    }
    eprintln!("lab: {} ({})", scenario.label(), lab.mode.label());
    let logs = out.join("logs");
    if args.image {
        let setup = image::Setup {
            lab: &lab,
            work: work.path(),
            logs: &logs,
            shoal_bin,
            shoal_log: &args.shoal_log,
        };
        let results = image::run(&setup, &mut scenario, &systems).await?;
        let mode = lab.mode.clone();
        drop(lab);
        return write_outputs(&out, &command, &scenario, &mode, &results);
    }
    let origin = origin::Origin::start(&lab.origin, work.path(), scenario.size, &logs).await?;
    let setup = Setup {
        lab: &lab,
        origin: &origin,
        scenario: &scenario,
        work: work.path(),
        logs: &logs,
        shoal_bin,
        shoal_log: &args.shoal_log,
        dragonfly_bin_dir: args.dragonfly_bin_dir.as_deref(),
    };
    let mut results = Vec::new();
    for system in systems {
        results.push(run_system(&setup, system).await?);
    }
    let mode = lab.mode.clone();
    // Stop the origin and remove the namespaces before writing: the report is what remains.
    drop(origin);
    drop(lab);
    write_outputs(&out, &command, &scenario, &mode, &results)
}

/// What every system's run shares.
struct Setup<'a> {
    lab: &'a netns::Lab,
    origin: &'a origin::Origin,
    scenario: &'a Scenario,
    work: &'a std::path::Path,
    logs: &'a std::path::Path,
    shoal_bin: PathBuf,
    shoal_log: &'a str,
    dragonfly_bin_dir: Option<&'a std::path::Path>,
}

/// Creates `out` with an empty `logs/` and returns its absolute path.
fn setup_out_dir(out: &std::path::Path) -> anyhow::Result<PathBuf> {
    std::fs::create_dir_all(out).with_context(|| format!("create {}", out.display()))?;
    let out = std::fs::canonicalize(out).context("resolve output dir")?;
    let logs = out.join("logs");
    if logs.exists() {
        std::fs::remove_dir_all(&logs).context("remove old logs")?;
    }
    std::fs::create_dir_all(&logs).context("create logs dir")?;
    Ok(out)
}

/// Runs one system; only a broken lab is an error, a broken system is a failed entry.
async fn run_system(setup: &Setup<'_>, system: System) -> anyhow::Result<report::SystemReport> {
    let (scenario, mode) = (setup.scenario, &setup.lab.mode);
    let dragonfly = if system == System::Dragonfly {
        match systems::dragonfly::locate(setup.dragonfly_bin_dir) {
            Ok(bins) => Some(bins),
            Err(reason) => {
                eprintln!("skipping dragonfly: {reason}");
                return Ok(report::SystemReport::skipped(
                    system, scenario, mode, reason,
                ));
            }
        }
    } else {
        None
    };
    if let Some(reason) = systems::missing_tools(system) {
        eprintln!("skipping {}: {reason}", system.name());
        return Ok(report::SystemReport::skipped(
            system, scenario, mode, reason,
        ));
    }
    let ctx = systems::Ctx {
        lab: setup.lab,
        origin: setup.origin,
        arrival: scenario.arrival,
        node_bw: scenario.node_bw,
        origin_bw: scenario.origin_bw,
        work: setup.work.join(system.name()),
        logs: setup.logs.join(system.name()),
        shoal_bin: setup.shoal_bin.clone(),
        shoal_log: setup.shoal_log.to_owned(),
        node_timeout: scenario.node_timeout(),
    };
    std::fs::create_dir_all(&ctx.work).context("create system work dir")?;
    std::fs::create_dir_all(&ctx.logs).context("create system logs dir")?;
    eprintln!("running {}", system.name());
    let outcome = match system {
        System::Direct => systems::direct::run(&ctx).await,
        System::Bittorrent => systems::bittorrent::run(&ctx).await,
        System::Shoal => systems::shoal::run(&ctx).await,
        System::Dragonfly => match &dragonfly {
            Some(bins) => systems::dragonfly::run(&ctx, bins).await,
            None => Err(anyhow::anyhow!("dragonfly binaries not located")),
        },
    };
    let entry = match outcome {
        Ok(measured) => report::SystemReport::measured(system, scenario, mode, measured),
        Err(err) => report::SystemReport::failed(system, scenario, mode, &err),
    };
    eprintln!("  {}", entry.summary());
    let _ = std::fs::remove_dir_all(&ctx.work);
    Ok(entry)
}

/// Writes the report and the charts, prints the table, and fails when a system failed.
fn write_outputs(
    out: &std::path::Path,
    command: &[String],
    scenario: &Scenario,
    mode: &netns::Mode,
    results: &[report::SystemReport],
) -> anyhow::Result<()> {
    let charts = charts::draw(out, results);
    let chart_note = match &charts {
        Ok(drawn) => drawn.note.clone(),
        Err(err) => Some(format!("not drawn: {err:#}")),
    };
    if let Some(note) = &chart_note {
        eprintln!("charts: {note}");
    }
    let written = report::write(out, command, scenario, mode, results, chart_note.as_deref())?;
    println!("{}", report::results_table(results));
    println!("report: {}", written.display());
    let broken: Vec<String> = results.iter().filter_map(|r| r.problem()).collect();
    if !broken.is_empty() {
        anyhow::bail!("{}", broken.join("; "));
    }
    charts.map(drop)
}
