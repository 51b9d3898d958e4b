//! Micro-benchmarks (being built).

/// One micro-benchmark.
#[derive(Debug, clap::Subcommand)]
pub enum MicroCommand {}

/// Runs one micro-benchmark.
pub async fn run(command: MicroCommand) -> anyhow::Result<()> {
    match command {}
}
