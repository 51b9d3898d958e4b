//! Enforces the dependency layers of STYLE.md §2 on the real workspace.
//!
//! A crate may depend only on crates in lower layers. Three exceptions: crates in layer 4 may
//! dev-depend on `shoal-testkit`; the binary `shoal` depends on `shoal-bench` to serve
//! `shoal bench`; and `shoal-bench` depends (normally) on `shoal-testkit` for the real-part
//! harness (registry, containerd, skopeo, image builder) of `shoal bench --image`, so those
//! drivers exist once. `shoal-testkit` must never depend on `shoal-bench` or `shoal`. Only `shoal-protocol` may name the wire crates
//! (`dragonfly-api`, `vortex-protocol`). Every workspace crate must appear in the table, so a new
//! crate forces a decision about its layer.
//!
//! Changing [`LAYERS`] changes the architecture: do it in a reviewed commit that also updates
//! STYLE.md.

use std::path::Path;
use std::process::Command;

use serde_json::{json, Value};

/// The layer table of STYLE.md §2.
const LAYERS: &[(&str, u8)] = &[
    ("shoal-types", 0),
    ("shoal-protocol", 1),
    ("shoal-storage", 1),
    ("shoal-telemetry", 1),
    ("shoal-client", 2),
    ("shoal-manager", 3),
    ("shoal-scheduler", 3),
    ("shoal-daemon", 3),
    ("shoal-cli", 3),
    ("shoal", 4),
    ("shoal-testkit", 4),
    ("shoal-bench", 4),
];

/// Wire crates, pinned and re-exported by [`WIRE_OWNER`] only.
const WIRE_CRATES: &[&str] = &["dragonfly-api", "vortex-protocol"];
const WIRE_OWNER: &str = "shoal-protocol";

/// The crate layer-4 crates may dev-depend on despite sharing its layer.
const TESTKIT: &str = "shoal-testkit";
/// The bench harness, which the binary serves as `shoal bench` despite sharing its layer.
const BENCH: &str = "shoal-bench";
const TOP_LAYER: u8 = 4;

fn layer_of(name: &str) -> Option<u8> {
    LAYERS
        .iter()
        .find(|(crate_name, _)| *crate_name == name)
        .map(|(_, layer)| *layer)
}

/// Every rule broken by the packages of `metadata` (`cargo metadata --no-deps` output), as
/// human-readable lines. Normal and build dependencies must point to strictly lower layers; so
/// must dev-dependencies, except layer 4 → `shoal-testkit`.
fn violations(metadata: &Value) -> Vec<String> {
    let packages = metadata["packages"]
        .as_array()
        .expect("metadata lists packages");
    let members: Vec<&str> = packages
        .iter()
        .map(|package| package["name"].as_str().expect("package name"))
        .collect();
    let mut found = Vec::new();
    for package in packages {
        let name = package["name"].as_str().expect("package name");
        let Some(layer) = layer_of(name) else {
            found.push(format!("{name} is not in the layer table of STYLE.md §2"));
            continue;
        };
        let dependencies = package["dependencies"]
            .as_array()
            .expect("package dependencies");
        for dependency in dependencies {
            let dep = dependency["name"].as_str().expect("dependency name");
            let kind = dependency["kind"].as_str().unwrap_or("normal");
            if WIRE_CRATES.contains(&dep) && name != WIRE_OWNER {
                found.push(format!(
                    "{name} depends ({kind}) on {dep}; only {WIRE_OWNER} may, use its re-exports"
                ));
            }
            if !members.contains(&dep) {
                continue;
            }
            let Some(dep_layer) = layer_of(dep) else {
                // Reported once as an unknown package above.
                continue;
            };
            let testkit_exception = kind == "dev" && dep == TESTKIT && layer == TOP_LAYER;
            let bench_exception = name == "shoal" && dep == BENCH;
            let harness_exception = name == BENCH && dep == TESTKIT;
            if dep_layer >= layer && !testkit_exception && !bench_exception && !harness_exception {
                found.push(format!(
                    "{name} (layer {layer}) depends ({kind}) on {dep} (layer {dep_layer}); \
                     dependencies must point to lower layers"
                ));
            }
        }
    }
    found
}

fn workspace_metadata() -> Value {
    let workspace_root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let output = Command::new(env!("CARGO"))
        .args(["metadata", "--format-version", "1", "--no-deps"])
        .current_dir(&workspace_root)
        .output()
        .expect("run cargo metadata");
    assert!(
        output.status.success(),
        "cargo metadata failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).expect("cargo metadata prints json")
}

#[test]
fn workspace_dependencies_follow_the_layer_table() {
    let metadata = workspace_metadata();
    let found = violations(&metadata);
    assert!(
        found.is_empty(),
        "layering violations:\n  {}",
        found.join("\n  ")
    );
    let checked = metadata["packages"].as_array().map_or(0, Vec::len);
    assert!(
        checked >= 10,
        "expected the whole workspace, saw {checked} packages"
    );
}

fn dependency(name: &str, kind: Option<&str>) -> Value {
    json!({ "name": name, "kind": kind })
}

fn package(name: &str, dependencies: Vec<Value>) -> Value {
    json!({ "name": name, "dependencies": dependencies })
}

#[test]
fn checker_accepts_downward_edges_and_the_documented_exceptions() {
    let metadata = json!({ "packages": [
        package("shoal-types", vec![dependency("sha2", None)]),
        package("shoal-protocol", vec![
            dependency("shoal-types", None),
            dependency("dragonfly-api", None),
            dependency("vortex-protocol", None),
        ]),
        package("shoal-testkit", vec![dependency("shoal-protocol", None)]),
        package("shoal-bench", vec![dependency("shoal-testkit", None)]),
        package("shoal", vec![
            dependency("shoal-protocol", None),
            dependency("shoal-bench", None),
            dependency("shoal-testkit", Some("dev")),
        ]),
    ]});
    assert_eq!(violations(&metadata), Vec::<String>::new());
}

#[test]
fn checker_rejects_upward_sideways_and_wire_edges() {
    let metadata = json!({ "packages": [
        package("shoal-types", vec![dependency("shoal-protocol", Some("dev"))]),
        package("shoal-protocol", vec![dependency("shoal-storage", None)]),
        package("shoal-storage", vec![dependency("vortex-protocol", None)]),
        package("shoal-daemon", vec![
            dependency("shoal-scheduler", None),
            dependency("shoal-testkit", Some("dev")),
            dependency("dragonfly-api", Some("dev")),
        ]),
        package("shoal-scheduler", vec![]),
        package("shoal-testkit", vec![
            dependency("shoal", None),
            dependency("shoal-bench", None),
        ]),
        package("shoal", vec![dependency("shoal-testkit", None)]),
        package("shoal-bench", vec![]),
        package("shoal-extra", vec![]),
    ]});
    let found = violations(&metadata);
    let expected_offenders = [
        "shoal-types (layer 0) depends (dev) on shoal-protocol",
        "shoal-protocol (layer 1) depends (normal) on shoal-storage",
        "shoal-storage depends (normal) on vortex-protocol",
        "shoal-daemon (layer 3) depends (normal) on shoal-scheduler",
        "shoal-daemon (layer 3) depends (dev) on shoal-testkit",
        "shoal-daemon depends (dev) on dragonfly-api",
        "shoal-testkit (layer 4) depends (normal) on shoal ",
        "shoal-testkit (layer 4) depends (normal) on shoal-bench",
        "shoal (layer 4) depends (normal) on shoal-testkit",
        "shoal-extra is not in the layer table",
    ];
    for offender in expected_offenders {
        assert!(
            found.iter().any(|line| line.starts_with(offender)),
            "missing {offender:?} in {found:#?}"
        );
    }
    assert_eq!(found.len(), expected_offenders.len(), "{found:#?}");
}
