//! Micro-benchmarks of one mechanism each, on real `shoal` processes over loopback.
//!
//! - `hop`: one parent → child transfer against a plain file copy on the same disk;
//! - `scheduler`: AnnounceHost / AnnouncePeer load on a scheduler process;
//! - `small`: latency of small objects through a warm cluster against the origin;
//! - `ttfb`: proxy time to first byte of a cold blob against the origin.
//!
//! Each prints a table whose ratios were measured side by side in the same run, and writes the
//! figures as JSON with `--json PATH`. Processes are spawned from `--shoal-bin` (default: this
//! executable) with their logs in a temporary work dir, and killed when the benchmark ends,
//! also on failure.

mod cluster;
pub mod hop;
mod origin;
pub(crate) mod procs;
pub mod scheduler_load;
pub mod small;
pub(crate) mod stats;
pub mod ttfb;

use std::net::Ipv4Addr;
use std::path::PathBuf;

use anyhow::Context as _;

/// One micro-benchmark.
#[derive(Debug, clap::Subcommand)]
pub enum MicroCommand {
    /// One hop parent → child over loopback, against a plain file copy.
    Hop(hop::HopArgs),
    /// AnnounceHost and AnnouncePeer load on a scheduler process.
    Scheduler(scheduler_load::SchedulerArgs),
    /// Latency of small objects through a warm cluster, against the origin.
    Small(small::SmallArgs),
    /// Proxy time to first byte of a cold blob, against the origin.
    Ttfb(ttfb::TtfbArgs),
}

/// Flags every micro-benchmark takes.
#[derive(Debug, Clone, clap::Args)]
pub struct CommonArgs {
    /// The shoal binary to spawn (default: this executable).
    #[arg(long)]
    shoal_bin: Option<PathBuf>,
    /// Loopback block for the processes: scheduler on NET.1, daemons on NET.2, NET.3, ...
    #[arg(long, default_value = "127.0.1.0")]
    net: Ipv4Addr,
    /// Scheduler port on NET.1.
    #[arg(long, default_value_t = 8002)]
    scheduler_port: u16,
    /// Directory for data files, stores and logs (default: the system temp dir); it decides
    /// which disk is measured.
    #[arg(long)]
    work_dir: Option<PathBuf>,
    /// Also write the results as JSON to this file.
    #[arg(long)]
    json: Option<PathBuf>,
    /// Keep the work dir (logs, stores) instead of removing it.
    #[arg(long)]
    keep: bool,
}

/// Runs one micro-benchmark.
pub async fn run(command: MicroCommand) -> anyhow::Result<()> {
    match command {
        MicroCommand::Hop(args) => hop::run(args).await,
        MicroCommand::Scheduler(args) => scheduler_load::run(args).await,
        MicroCommand::Small(args) => small::run(args).await,
        MicroCommand::Ttfb(args) => ttfb::run(args).await,
    }
}

impl CommonArgs {
    fn bin(&self) -> anyhow::Result<PathBuf> {
        match &self.shoal_bin {
            Some(path) => Ok(path.clone()),
            None => std::env::current_exe().context("find the current executable"),
        }
    }

    fn cluster_spec(&self, daemons: usize) -> anyhow::Result<cluster::ClusterSpec> {
        Ok(cluster::ClusterSpec {
            bin: self.bin()?,
            net: self.net,
            scheduler_port: self.scheduler_port,
            daemons,
            scheduler_args: Vec::new(),
        })
    }

    /// A fresh work dir; removed on drop unless `--keep`.
    fn work_dir(&self, bench: &str) -> anyhow::Result<WorkDir> {
        let parent = self.work_dir.clone().unwrap_or_else(std::env::temp_dir);
        let dir = tempfile::Builder::new()
            .prefix(&format!("shoal-micro-{bench}-"))
            .tempdir_in(&parent)
            .with_context(|| format!("create work dir in {}", parent.display()))?;
        Ok(WorkDir {
            dir: Some(dir),
            keep: self.keep,
        })
    }

    /// Prints `text` and writes `json` when `--json` was given.
    fn report(&self, text: &str, json: &serde_json::Value) -> anyhow::Result<()> {
        println!("{text}");
        if let Some(path) = &self.json {
            let body = serde_json::to_string_pretty(json).context("encode results")?;
            std::fs::write(path, body + "\n")
                .with_context(|| format!("write {}", path.display()))?;
            println!("results written to {}", path.display());
        }
        Ok(())
    }
}

/// The temporary directory of one run.
#[derive(Debug)]
struct WorkDir {
    dir: Option<tempfile::TempDir>,
    keep: bool,
}

impl WorkDir {
    fn path(&self) -> &std::path::Path {
        self.dir
            .as_ref()
            .expect("the dir is only taken on drop")
            .path()
    }
}

impl Drop for WorkDir {
    fn drop(&mut self) {
        if let Some(dir) = self.dir.take() {
            if self.keep || std::thread::panicking() {
                let path = dir.keep();
                eprintln!("work dir kept: {}", path.display());
            }
        }
    }
}
