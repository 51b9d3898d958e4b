//! Shared checks of a `shoal bench` run's outputs for the smoke tests: the run succeeded, the
//! report and charts exist, and every entry that ran has sane figures and verified nodes.
//! Outputs and their shape only, never timings.

use std::path::Path;
use std::process::Command;

use serde_json::Value;

/// Runs `shoal bench ARGS --out DIR` and returns DIR (removed on drop) and the report.
pub(crate) fn run_bench(args: &[&str]) -> (tempfile::TempDir, Value) {
    let out = tempfile::tempdir().expect("create output dir");
    let output = Command::new(env!("CARGO_BIN_EXE_shoal"))
        .arg("bench")
        .args(args)
        .arg("--out")
        .arg(out.path())
        .output()
        .expect("run shoal bench");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "shoal bench {args:?} failed\nstdout:\n{stdout}\nstderr:\n{stderr}"
    );
    for file in ["report.md", "completion-cdf.png", "origin-bandwidth.png"] {
        let len = out.path().join(file).metadata().map_or(0, |m| m.len());
        assert!(len > 0, "{file} is missing or empty\nstderr:\n{stderr}");
    }
    assert_png(&out.path().join("completion-cdf.png"));
    let text = std::fs::read_to_string(out.path().join("report.json")).expect("read report.json");
    let report: Value = serde_json::from_str(&text).expect("report.json is JSON");
    (out, report)
}

/// The report's entry for `system`.
pub(crate) fn entry<'a>(report: &'a Value, system: &str) -> &'a Value {
    report["entries"]
        .as_array()
        .expect("entries is a list")
        .iter()
        .find(|entry| entry["system"] == system)
        .unwrap_or_else(|| panic!("no entry for {system} in {report:#}"))
}

/// An entry that ran: the fields, `nodes` nodes all verified, completion times in
/// order, and the origin sent at least the content once (`size_bytes`, at least `min_size`).
pub(crate) fn check_measured(system: &str, entry: &Value, nodes: u64, min_size: u64) {
    for key in [
        "system",
        "nodes",
        "size_bytes",
        "t_min_s",
        "completion_s",
        "origin_bytes",
    ] {
        assert!(entry.get(key).is_some(), "{system}: no {key} in {entry:#}");
    }
    assert_eq!(entry["status"], "ok", "{system} did not run: {entry:#}");
    assert_eq!(entry["nodes"].as_u64(), Some(nodes), "{entry:#}");
    let size = entry["size_bytes"].as_u64().unwrap_or(0);
    assert!(size >= min_size, "{system}: size_bytes {size}");
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
        "{system}: the origin sent {origin_bytes} bytes, less than the content's {size}"
    );
    let per_node = entry["per_node"].as_array().expect("per_node is a list");
    assert_eq!(per_node.len() as u64, nodes, "{entry:#}");
    for node in per_node {
        assert_eq!(node["sha256_ok"], true, "{system}: {node:#}");
    }
}

fn assert_png(path: &Path) {
    let bytes = std::fs::read(path).expect("read chart");
    assert!(
        bytes.starts_with(b"\x89PNG\r\n\x1a\n"),
        "{} is not a PNG",
        path.display()
    );
}
