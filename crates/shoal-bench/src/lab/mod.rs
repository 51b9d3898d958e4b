//! The shaped multi-node lab (being built).

/// Flags of the lab scenario.
#[derive(Debug, clap::Args)]
pub struct LabArgs {}

/// Runs the lab scenario.
pub async fn run(_args: LabArgs) -> anyhow::Result<()> {
    anyhow::bail!("the lab is not built yet")
}
