//! The container-pull scenario (`shoal bench --image`): containerd on every node pulls one
//! image, straight from the registry (`direct`) or through its node's shoal daemon (`shoal`).
//!
//! [`run`] builds the image and starts the registry on the origin host ([`registry`]), then runs
//! each system's pulls ([`pull`]) on the same lab; the shoal system first starts the scheduler,
//! the seeds and a daemon per node with its registry mirror on `<node ip>:4001`
//! ([`Fleet`](crate::lab::systems::shoal::Fleet)). Every process belongs to a handle the run
//! owns, so errors, Ctrl-C and success all stop them; the lab then removes the namespaces.

mod pull;
mod registry;

use std::path::{Path, PathBuf};

use anyhow::Context as _;
use bytesize::ByteSize;
use shoal_testkit::interop::{containerd, registry as testkit_registry, skopeo};

use super::netns::Lab;
use super::report::SystemReport;
use super::systems::shoal::{Fleet, FleetSpec};
use super::{Scenario, System};

/// What every system's run shares.
#[derive(Debug)]
pub(crate) struct Setup<'a> {
    pub(crate) lab: &'a Lab,
    pub(crate) work: &'a Path,
    pub(crate) logs: &'a Path,
    pub(crate) shoal_bin: PathBuf,
    pub(crate) shoal_log: &'a str,
}

/// The systems to compare: `asked`, else both; only direct and shoal have a pull variant.
pub(crate) fn systems(asked: &[System]) -> anyhow::Result<Vec<System>> {
    if asked.is_empty() {
        return Ok(vec![System::Direct, System::Shoal]);
    }
    if let Some(other) = asked
        .iter()
        .find(|system| !matches!(system, System::Direct | System::Shoal))
    {
        anyhow::bail!(
            "the image scenario compares direct and shoal; {} has no container-pull variant",
            other.name()
        );
    }
    Ok(asked.to_vec())
}

/// Fails, naming the Debian package, when a program the scenario runs is missing, or when this
/// process is not root (containerd unpacks and mounts layers).
pub(crate) fn preflight() -> anyhow::Result<()> {
    let programs = [
        ("docker-registry", testkit_registry::PACKAGE),
        ("containerd", containerd::PACKAGE),
        ("ctr", containerd::PACKAGE),
        ("skopeo", skopeo::PACKAGE),
    ];
    for (program, package) in programs {
        shoal_testkit::interop::require_program(program, package)
            .context("the image scenario runs it")?;
    }
    shoal_testkit::interop::require_root("the image scenario (containerd)")
}

/// Builds and pushes the image, runs each system, and returns their entries; sets
/// `scenario.size` to the image's pull size, the `F` of every entry.
pub(crate) async fn run(
    setup: &Setup<'_>,
    scenario: &mut Scenario,
    systems: &[System],
) -> anyhow::Result<Vec<SystemReport>> {
    let layers = scenario.layers.unwrap_or(1);
    let origin =
        registry::ImageOrigin::start(&setup.lab.origin, setup.work, scenario.size, layers).await?;
    scenario.size = origin.pull_bytes;
    eprintln!(
        "image: {} ({layers} layers, {} per pull)",
        origin.reference,
        ByteSize(origin.pull_bytes).display().iec()
    );
    let mut results = Vec::new();
    for &system in systems {
        let entry = run_system(setup, &origin, scenario, system).await;
        origin.keep_logs(setup.logs);
        results.push(entry?);
    }
    Ok(results)
}

/// Runs one system; only a broken lab is an error, a broken system is a failed entry.
async fn run_system(
    setup: &Setup<'_>,
    origin: &registry::ImageOrigin,
    scenario: &Scenario,
    system: System,
) -> anyhow::Result<SystemReport> {
    let work = setup.work.join(system.name());
    let logs = setup.logs.join(system.name());
    std::fs::create_dir_all(&work).context("create system work dir")?;
    std::fs::create_dir_all(&logs).context("create system logs dir")?;
    eprintln!("running {}", system.name());
    let pulls = pull::PullRun {
        lab: setup.lab,
        origin,
        arrival: scenario.arrival,
        node_timeout: scenario.node_timeout(),
        logs: &logs,
        mirror: system == System::Shoal,
    };
    let outcome = match system {
        System::Direct => pull::run(&pulls).await,
        System::Shoal => {
            let spec = FleetSpec {
                lab: setup.lab,
                bin: setup.shoal_bin.to_string_lossy().into_owned(),
                work: &work,
                logs: &logs,
                shoal_log: setup.shoal_log,
                upload_limit: (!setup.lab.mode.is_netns()).then_some(scenario.node_bw),
                mirror: true,
                node_daemons: true,
            };
            match Fleet::start(&spec).await {
                Ok(fleet) => {
                    let measured = pull::run(&pulls).await;
                    drop(fleet);
                    measured
                }
                Err(err) => Err(err),
            }
        }
        System::Bittorrent | System::Dragonfly => {
            Err(anyhow::anyhow!("{} has no image variant", system.name()))
        }
    };
    let mode = &setup.lab.mode;
    let entry = match outcome {
        Ok(measured) => SystemReport::measured(system, scenario, mode, measured),
        Err(err) => SystemReport::failed(system, scenario, mode, &err),
    };
    eprintln!("  {}", entry.summary());
    let _ = std::fs::remove_dir_all(&work);
    Ok(entry)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn image_systems_are_direct_and_shoal() {
        assert_eq!(systems(&[]).unwrap(), vec![System::Direct, System::Shoal]);
        assert_eq!(systems(&[System::Shoal]).unwrap(), vec![System::Shoal]);
        let err = systems(&[System::Direct, System::Bittorrent]).unwrap_err();
        assert!(err.to_string().contains("bittorrent"), "{err}");
    }
}
