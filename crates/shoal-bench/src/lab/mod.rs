//! The shaped multi-node lab: one scenario, every system side by side on the same lab.
//!
//! `shoal bench --nodes N --size SIZE --out DIR` builds the lab ([`netns`]), starts the origin
//! ([`origin`]), runs each system ([`systems`]) in turn against the same file, and writes
//! `report.md`, `report.json` ([`report`]) and PNG charts ([`charts`]) to `DIR`. Each system's
//! result is set against the fluid-model bound ([`bound`]). The run fails when any node's copy
//! does not match the origin's sha256. Ctrl-C, SIGTERM, errors and success all remove the
//! namespaces and stop every process the run started; `--cleanup` removes leftovers of earlier
//! runs that were killed.

mod bound;
mod charts;
mod netns;
mod origin;
mod report;
mod systems;

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;

use anyhow::Context as _;
use bytesize::ByteSize;
use tokio::time::Duration;

/// Flags of the lab scenario.
#[derive(Debug, clap::Args)]
pub struct LabArgs {
    /// Downloading nodes (default 4; 3 with --smoke).
    #[arg(long)]
    nodes: Option<usize>,
    /// File size, e.g. 32MiB (default; 2MiB with --smoke).
    #[arg(long)]
    size: Option<ByteSize>,
    /// When nodes start: `all` at once, or `staggered[:DELAY]` (DELAY between nodes, 1s).
    #[arg(long, default_value = "all")]
    arrival: Arrival,
    /// Seed daemons (shoal); they count as peers with their own upload in the bound.
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
    /// Use loopback addresses and the tools' own rate limits even where namespaces work.
    #[arg(long)]
    loopback: bool,
    /// Remove namespaces and processes left by earlier runs, then exit.
    #[arg(long)]
    cleanup: bool,
}

/// A link rate, parsed from `100mbit`, `1gbit`, `500kbit` or bits per second.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Bandwidth(u64);

impl Bandwidth {
    pub(crate) fn bits_per_second(self) -> u64 {
        self.0
    }

    pub(crate) fn bytes_per_second(self) -> u64 {
        self.0 / 8
    }
}

impl FromStr for Bandwidth {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let lower = s.trim().to_ascii_lowercase();
        let split = lower
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(lower.len());
        let (number, unit) = lower.split_at(split);
        let number: f64 = number
            .parse()
            .map_err(|_| format!("bandwidth `{s}` does not start with a number"))?;
        let scale = match unit {
            "" | "bit" => 1.0,
            "kbit" => 1e3,
            "mbit" => 1e6,
            "gbit" => 1e9,
            _ => return Err(format!("bandwidth `{s}`: use bit, kbit, mbit or gbit")),
        };
        let bits = (number * scale) as u64;
        if bits < 8_000 {
            return Err(format!("bandwidth `{s}` is below 8kbit"));
        }
        Ok(Self(bits))
    }
}

impl fmt::Display for Bandwidth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_multiple_of(1_000_000_000) {
            write!(f, "{}gbit", self.0 / 1_000_000_000)
        } else if self.0.is_multiple_of(1_000_000) {
            write!(f, "{}mbit", self.0 / 1_000_000)
        } else if self.0.is_multiple_of(1_000) {
            write!(f, "{}kbit", self.0 / 1_000)
        } else {
            write!(f, "{}bit", self.0)
        }
    }
}

/// When nodes start their download.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Arrival {
    All,
    Staggered(Duration),
}

impl Arrival {
    pub(crate) fn offset(self, index: usize) -> Duration {
        match self {
            Self::All => Duration::ZERO,
            Self::Staggered(delay) => delay * index as u32,
        }
    }
}

impl FromStr for Arrival {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.split_once(':') {
            None if s == "all" => Ok(Self::All),
            None if s == "staggered" => Ok(Self::Staggered(Duration::from_secs(1))),
            Some(("staggered", delay)) => humantime::parse_duration(delay)
                .map(Self::Staggered)
                .map_err(|err| format!("arrival delay `{delay}`: {err}")),
            _ => Err(format!("arrival `{s}`: use all or staggered[:DELAY]")),
        }
    }
}

impl fmt::Display for Arrival {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::All => f.write_str("all"),
            Self::Staggered(d) => write!(f, "staggered:{}", humantime::format_duration(*d)),
        }
    }
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

/// The scenario after defaults.
#[derive(Debug, Clone)]
pub(crate) struct Scenario {
    pub(crate) nodes: usize,
    pub(crate) seeds: usize,
    pub(crate) size: u64,
    pub(crate) arrival: Arrival,
    pub(crate) origin_bw: Bandwidth,
    pub(crate) node_bw: Bandwidth,
}

impl Scenario {
    pub(crate) fn label(&self) -> String {
        format!(
            "{} nodes + {} seed(s), {}, origin {}, nodes {}, arrival {}",
            self.nodes,
            self.seeds,
            ByteSize(self.size).display().iec(),
            self.origin_bw,
            self.node_bw,
            self.arrival
        )
    }

    /// The bound: the N nodes receive; the N nodes and the K seeds upload.
    pub(crate) fn t_min(&self) -> f64 {
        self.model().t_min()
    }

    /// The bound's terms: `F/u_s`, `F/d_min`, `N·F/(u_s + Σu_i)`.
    pub(crate) fn t_min_terms(&self) -> [f64; 3] {
        self.model().terms()
    }

    /// How long one node may take before it counts as failed: generous, so only a hang trips
    /// it (30 × `T_min`, at least a minute).
    pub(crate) fn node_timeout(&self) -> Duration {
        Duration::from_secs_f64((30.0 * self.t_min()).max(60.0))
    }

    fn model(&self) -> bound::FluidModel {
        let node = self.node_bw.bytes_per_second() as f64;
        bound::FluidModel {
            file_bytes: self.size as f64,
            origin_up: self.origin_bw.bytes_per_second() as f64,
            receiver_down: vec![node; self.nodes],
            peer_up: vec![node; self.nodes + self.seeds],
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
    let scenario = Scenario::from_args(&args);
    let systems = if args.systems.is_empty() {
        vec![
            System::Direct,
            System::Bittorrent,
            System::Dragonfly,
            System::Shoal,
        ]
    } else {
        args.systems.clone()
    };
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

impl Scenario {
    fn from_args(args: &LabArgs) -> Self {
        let smoke = args.smoke;
        let default_size = ByteSize::mib(if smoke { 2 } else { 32 });
        Self {
            nodes: args.nodes.unwrap_or(if smoke { 3 } else { 4 }).max(1),
            seeds: args.seeds,
            size: args.size.unwrap_or(default_size).as_u64().max(1),
            arrival: args.arrival,
            origin_bw: args.origin_bw.unwrap_or(Bandwidth(if smoke {
                1_000_000_000
            } else {
                100_000_000
            })),
            node_bw: args.node_bw.unwrap_or(Bandwidth(if smoke {
                500_000_000
            } else {
                50_000_000
            })),
        }
    }
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
    if system == System::Dragonfly {
        let reason = systems::dragonfly::skip_reason(setup.dragonfly_bin_dir);
        eprintln!("skipping dragonfly: {reason}");
        return Ok(report::SystemReport::skipped(
            system, scenario, mode, reason,
        ));
    }
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
        System::Dragonfly => unreachable!("dragonfly is skipped above"),
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_bandwidths() {
        assert_eq!("100mbit".parse::<Bandwidth>(), Ok(Bandwidth(100_000_000)));
        assert_eq!("1gbit".parse::<Bandwidth>(), Ok(Bandwidth(1_000_000_000)));
        assert_eq!("2.5Mbit".parse::<Bandwidth>(), Ok(Bandwidth(2_500_000)));
        assert!("fast".parse::<Bandwidth>().is_err());
        assert!("10mbps".parse::<Bandwidth>().is_err());
        assert_eq!(Bandwidth(50_000_000).to_string(), "50mbit");
        assert_eq!(Bandwidth(50_000_000).bytes_per_second(), 6_250_000);
    }

    #[test]
    fn parses_arrivals() {
        assert_eq!("all".parse::<Arrival>(), Ok(Arrival::All));
        assert_eq!(
            "staggered:500ms".parse::<Arrival>(),
            Ok(Arrival::Staggered(Duration::from_millis(500)))
        );
        assert_eq!(
            "staggered".parse::<Arrival>(),
            Ok(Arrival::Staggered(Duration::from_secs(1)))
        );
        assert!("later".parse::<Arrival>().is_err());
        assert_eq!(
            Arrival::Staggered(Duration::from_secs(2)).offset(3),
            Duration::from_secs(6)
        );
    }
}
