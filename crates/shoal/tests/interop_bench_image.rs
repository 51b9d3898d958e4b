//! CI smoke run of the benchmark lab's container-pull scenario: `shoal bench --smoke --image`.
//!
//! Proves the image scenario still works end to end (registry on the origin, image build and
//! push, a containerd per node, direct pulls and pulls through each node's shoal mirror, the
//! unpacked-image checks, report and charts). It asserts on outputs and their shape, never on
//! timings. It needs root and the Debian packages containerd, docker-registry and skopeo (CI
//! installs them and runs as root); without them it fails naming what is missing. Like every
//! `interop*` test it runs in the `ci` nextest profile, not the default one.

mod bench_report;

const SMOKE_NODES: u64 = 3;
/// `--smoke --image` asks for 8 MiB of layers; the image's blobs add a little to that.
const SMOKE_SIZE: u64 = 8 * 1024 * 1024;

/// Why this machine cannot run the scenario, or `None`.
fn missing_prerequisite() -> Option<String> {
    let programs = [
        ("containerd", "containerd"),
        ("ctr", "containerd"),
        ("docker-registry", "docker-registry"),
        ("skopeo", "skopeo"),
    ];
    let path = std::env::var_os("PATH").unwrap_or_default();
    let dirs: Vec<_> = std::env::split_paths(&path)
        .chain(["/usr/sbin".into(), "/sbin".into()])
        .collect();
    let missing: Vec<&str> = programs
        .iter()
        .filter(|(program, _)| !dirs.iter().any(|dir| dir.join(program).is_file()))
        .map(|(_, package)| *package)
        .collect();
    if !missing.is_empty() {
        return Some(format!(
            "install the Debian package(s) {}",
            missing.join(" ")
        ));
    }
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let root = status
        .lines()
        .find_map(|line| line.strip_prefix("Uid:"))
        .and_then(|uids| uids.split_whitespace().nth(1))
        == Some("0");
    (!root).then(|| "containerd needs root".to_owned())
}

#[test]
fn bench_image_smoke_produces_a_verified_report() {
    if let Some(reason) = missing_prerequisite() {
        panic!("cannot run `shoal bench --smoke --image`: {reason}");
    }
    let (_out, report) = bench_report::run_bench(&["--smoke", "--image"]);
    assert_eq!(report["scenario"]["kind"], "image", "{report:#}");
    let entries = report["entries"].as_array().expect("entries is a list");
    assert_eq!(entries.len(), 2, "{report:#}");
    for system in ["direct", "shoal"] {
        let entry = bench_report::entry(&report, system);
        assert_eq!(entry["scenario"], "image", "{entry:#}");
        bench_report::check_measured(system, entry, SMOKE_NODES, SMOKE_SIZE);
    }
}
