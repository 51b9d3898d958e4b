//! CI smoke run of the benchmark lab: `shoal bench --smoke` at its tiniest size.
//!
//! Proves the harness still works end to end (lab, origin, every system, sha256 checks, report
//! and charts). It asserts on the outputs and their shape, never on timings: performance claims
//! belong in benchmark reports. As root it runs in network namespaces; otherwise the lab falls
//! back to loopback addresses, and the report says so.

mod bench_report;

const SMOKE_NODES: u64 = 3;
const SMOKE_SIZE: u64 = 2 * 1024 * 1024;

#[test]
fn bench_smoke_produces_a_verified_report() {
    let (out, report) = bench_report::run_bench(&["--smoke"]);
    let markdown = std::fs::read_to_string(out.path().join("report.md")).expect("read report.md");
    assert!(
        markdown.contains("bench --smoke --out"),
        "report.md does not start with the command:\n{markdown}"
    );
    assert!(
        report["command"]
            .as_str()
            .is_some_and(|c| c.contains("bench --smoke")),
        "{report:#}"
    );
    for system in ["direct", "bittorrent", "dragonfly", "shoal"] {
        let entry = bench_report::entry(&report, system);
        assert_eq!(entry["size_bytes"].as_u64(), Some(SMOKE_SIZE), "{entry:#}");
        // Systems that need programs from outside the workspace may be skipped, with a reason.
        if matches!(system, "bittorrent" | "dragonfly") && entry["status"] == "skipped" {
            assert!(
                entry["reason"].as_str().is_some_and(|r| !r.is_empty()),
                "{entry:#}"
            );
            continue;
        }
        bench_report::check_measured(system, entry, SMOKE_NODES, SMOKE_SIZE);
    }
}
