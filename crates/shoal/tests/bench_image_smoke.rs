//! CI smoke run of the benchmark lab's container-pull scenario: `shoal bench --smoke --image`.
//!
//! Proves the image scenario still works end to end (registry on the origin, image build and
//! push, a containerd per node, direct pulls and pulls through each node's shoal mirror, the
//! unpacked-image checks, report and charts). It asserts on outputs and their shape, never on
//! timings. It needs root and the Debian packages containerd, docker-registry and skopeo (CI
//! installs them and runs as root); without them it skips and says why.

use std::process::Command;

use serde_json::Value;

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
        eprintln!("SKIPPED bench_image_smoke_produces_a_verified_report: {reason}");
        return;
    }
    let out = tempfile::tempdir().expect("create output dir");
    let output = Command::new(env!("CARGO_BIN_EXE_shoal"))
        .args(["bench", "--smoke", "--image", "--out"])
        .arg(out.path())
        .output()
        .expect("run shoal bench --smoke --image");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "shoal bench --smoke --image failed\nstdout:\n{stdout}\nstderr:\n{stderr}"
    );
    for file in ["report.md", "completion-cdf.png", "origin-bandwidth.png"] {
        let len = out.path().join(file).metadata().map_or(0, |m| m.len());
        assert!(len > 0, "{file} is missing or empty\nstderr:\n{stderr}");
    }

    let text = std::fs::read_to_string(out.path().join("report.json")).expect("read report.json");
    let report: Value = serde_json::from_str(&text).expect("report.json is JSON");
    assert_eq!(report["scenario"]["kind"], "image", "{report:#}");
    let entries = report["entries"].as_array().expect("entries is a list");
    assert_eq!(entries.len(), 2, "{report:#}");
    for system in ["direct", "shoal"] {
        let entry = entries
            .iter()
            .find(|entry| entry["system"] == system)
            .unwrap_or_else(|| panic!("no entry for {system} in {report:#}"));
        check_entry(system, entry);
    }
}

/// The entry ran, every node's image matched the built one, and the registry served at least
/// one copy of the image.
fn check_entry(system: &str, entry: &Value) {
    assert_eq!(entry["scenario"], "image", "{entry:#}");
    assert_eq!(entry["status"], "ok", "{system}: {entry:#}");
    assert_eq!(entry["nodes"].as_u64(), Some(SMOKE_NODES), "{entry:#}");
    let size = entry["size_bytes"].as_u64().unwrap_or(0);
    assert!(size >= SMOKE_SIZE, "{system}: size_bytes {size}");
    assert!(
        entry["t_min_s"].as_f64().is_some_and(|t| t > 0.0),
        "{entry:#}"
    );
    let completion = &entry["completion_s"];
    let [p50, p99, max] = ["p50", "p99", "max"].map(|k| completion[k].as_f64().unwrap_or(-1.0));
    assert!(
        0.0 < p50 && p50 <= p99 && p99 <= max,
        "{system}: completion_s {completion}"
    );
    let origin_bytes = entry["origin_bytes"].as_u64().unwrap_or(0);
    assert!(
        origin_bytes >= size,
        "{system}: the registry sent {origin_bytes} bytes, less than the image's {size}"
    );
    let nodes = entry["per_node"].as_array().expect("per_node is a list");
    assert_eq!(nodes.len() as u64, SMOKE_NODES, "{entry:#}");
    for node in nodes {
        assert_eq!(node["sha256_ok"], true, "{system}: {node:#}");
    }
}
