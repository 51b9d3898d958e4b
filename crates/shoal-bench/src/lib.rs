//! The benchmark lab behind `shoal bench`.
//!
//! Two families of measurements, both printing ratios measured side by side in one run:
//! - [`lab`]: a shaped multi-node cluster (one network namespace per node, `tc` on every link)
//!   comparing direct download, BitTorrent, upstream Dragonfly and shoal against the fluid-model
//!   lower bound;
//! - [`micro`]: one-hop throughput, scheduler load, small-object latency and proxy time to first
//!   byte.

pub mod lab;
pub mod micro;

/// Flags of `shoal bench`: the lab's default scenario, or one micro-benchmark.
#[derive(Debug, clap::Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct BenchArgs {
    #[command(subcommand)]
    micro: Option<micro::MicroCommand>,
    #[command(flatten)]
    lab: lab::LabArgs,
}

/// Runs what the flags ask for.
pub async fn run(args: BenchArgs) -> anyhow::Result<()> {
    match args.micro {
        Some(command) => micro::run(command).await,
        None => lab::run(args.lab).await,
    }
}
