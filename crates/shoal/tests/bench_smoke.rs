//! CI smoke run of the benchmark lab: `shoal bench --smoke` at its tiniest size.
//!
//! Proves the harness still works end to end (lab, origin, every system, sha256 checks, report
//! and charts). It asserts on the outputs and their shape, never on timings: performance claims
//! belong in benchmark reports. As root it runs in network namespaces; otherwise the lab falls
//! back to loopback addresses, and the report says so.

use std::path::Path;
use std::process::Command;

use serde_json::Value;

const SMOKE_NODES: u64 = 3;
const SMOKE_SIZE: u64 = 2 * 1024 * 1024;

#[test]
fn bench_smoke_produces_a_verified_report() {
    let out = tempfile::tempdir().expect("create output dir");
    let output = Command::new(env!("CARGO_BIN_EXE_shoal"))
        .args(["bench", "--smoke", "--out"])
        .arg(out.path())
        .output()
        .expect("run shoal bench --smoke");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "shoal bench --smoke failed\nstdout:\n{stdout}\nstderr:\n{stderr}"
    );

    for file in [
        "report.json",
        "report.md",
        "completion-cdf.png",
        "origin-bandwidth.png",
    ] {
        let path = out.path().join(file);
        let len = path.metadata().map(|m| m.len()).unwrap_or(0);
        assert!(len > 0, "{file} is missing or empty\nstderr:\n{stderr}");
    }
    assert_png(&out.path().join("completion-cdf.png"));

    let markdown = std::fs::read_to_string(out.path().join("report.md")).expect("read report.md");
    assert!(
        markdown.contains("bench --smoke --out"),
        "report.md does not start with the command:\n{markdown}"
    );

    let text = std::fs::read_to_string(out.path().join("report.json")).expect("read report.json");
    let report: Value = serde_json::from_str(&text).expect("report.json is JSON");
    assert!(
        report["command"]
            .as_str()
            .is_some_and(|c| c.contains("bench --smoke")),
        "{report:#}"
    );
    let entries = report["entries"].as_array().expect("entries is a list");
    for system in ["direct", "bittorrent", "dragonfly", "shoal"] {
        let entry = entries
            .iter()
            .find(|entry| entry["system"] == system)
            .unwrap_or_else(|| panic!("no entry for {system} in {report:#}"));
        check_entry(system, entry);
    }
}

/// Every entry has the fields; systems that ran have sane figures and verified nodes.
fn check_entry(system: &str, entry: &Value) {
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
    assert_eq!(entry["nodes"].as_u64(), Some(SMOKE_NODES), "{entry:#}");
    assert_eq!(entry["size_bytes"].as_u64(), Some(SMOKE_SIZE), "{entry:#}");
    assert!(
        entry["t_min_s"].as_f64().is_some_and(|t| t > 0.0),
        "{entry:#}"
    );
    let status = entry["status"].as_str().unwrap_or_default();
    match (system, status) {
        // Systems that need programs from outside the workspace may be skipped, with a reason.
        ("bittorrent" | "dragonfly", "skipped") => {
            assert!(
                entry["reason"].as_str().is_some_and(|r| !r.is_empty()),
                "{entry:#}"
            );
            return;
        }
        (_, "ok") => {}
        _ => panic!("{system} did not run: {entry:#}"),
    }
    let completion = &entry["completion_s"];
    let [p50, p99, max] = ["p50", "p99", "max"].map(|k| completion[k].as_f64().unwrap_or(-1.0));
    assert!(
        0.0 < p50 && p50 <= p99 && p99 <= max,
        "{system}: completion_s {completion}"
    );
    let origin_bytes = entry["origin_bytes"].as_u64().unwrap_or(0);
    assert!(
        origin_bytes >= SMOKE_SIZE,
        "{system}: the origin sent {origin_bytes} bytes, less than the file"
    );
    let nodes = entry["per_node"].as_array().expect("per_node is a list");
    assert_eq!(nodes.len() as u64, SMOKE_NODES, "{entry:#}");
    for node in nodes {
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
