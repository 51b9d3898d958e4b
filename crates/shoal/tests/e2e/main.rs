//! End-to-end tests of the real `shoal` binary: the README's demo on a real nginx origin, and
//! the CLI's behaviour when no daemon answers.

use std::process::Command;

fn shoal() -> Command {
    Command::new(env!("CARGO_BIN_EXE_shoal"))
}

/// Acceptance 8: the README's run command (scripts/demo.sh) on a real file through nginx.
#[test]
fn demo_distributes_a_real_file_through_two_daemons() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let nginx = std::path::Path::new("/usr/sbin/nginx");
    assert!(
        nginx.exists(),
        "nginx is missing: install the Debian package nginx-light (scripts/setup.sh does)"
    );
    let output = Command::new(root.join("scripts/demo.sh"))
        .env("SHOAL_BIN", env!("CARGO_BIN_EXE_shoal"))
        .env("SHOAL_SKIP_SETUP", "1")
        .env("SHOAL_DEMO_NET", "127.0.77")
        .output()
        .expect("run scripts/demo.sh");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "demo failed\nstdout:\n{stdout}\nstderr:\n{stderr}"
    );
    assert!(
        stdout.contains("verified:  both copies have sha256"),
        "{stdout}"
    );
    let node_b = stdout
        .lines()
        .find(|line| line.starts_with("node-b:"))
        .expect("node-b line");
    assert!(
        !node_b.contains(": 0 bytes from 0 parent(s)"),
        "node-b got nothing from parents: {node_b}"
    );
    let size: u64 = stdout
        .lines()
        .find_map(|line| line.strip_prefix("nginx:     sent "))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|served| served.parse().ok())
        .expect("nginx line");
    let delivered: u64 = stdout
        .lines()
        .find_map(|line| line.split("body bytes in total for ").nth(1))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|bytes| bytes.parse().ok())
        .expect("delivered bytes");
    assert!(
        size as f64 <= delivered as f64 * 1.05,
        "nginx sent {size} bytes for a {delivered} byte file"
    );
    // The image part needs root (containerd); CI runs as root.
    if running_as_root() {
        let pulls = stdout
            .lines()
            .filter(|line| line.contains("unpacked /bin/busybox matches"))
            .count();
        assert_eq!(pulls, 2, "{stdout}");
        let registry = stdout
            .lines()
            .find(|line| line.starts_with("registry:  served the layer blob"))
            .expect("registry line");
        let numbers: Vec<u64> = registry
            .split(|c: char| !c.is_ascii_digit())
            .filter_map(|n| n.parse().ok())
            .collect();
        // "... in R request(s), B bytes, for 2 pulls of a L-byte layer"
        let [_, served, _, layer] = numbers[..] else {
            panic!("unexpected registry line: {registry}");
        };
        assert!(served <= layer, "{registry}");
    }
}

fn running_as_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            let uids = status.lines().find_map(|line| line.strip_prefix("Uid:"))?;
            uids.split_whitespace().nth(1).map(|uid| uid == "0")
        })
        .unwrap_or(false)
}

#[test]
fn get_without_daemon_says_how_to_start_one() {
    let dir = tempfile::tempdir().unwrap();
    let output = shoal()
        .args(["get", "http://127.0.0.1:9/x", "-O"])
        .arg(dir.path().join("out"))
        .arg("--socket")
        .arg(dir.path().join("missing.sock"))
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.starts_with("error: no shoal daemon is answering on"),
        "{stderr}"
    );
    assert!(stderr.contains("shoal daemon --scheduler"), "{stderr}");
    assert_eq!(stderr.trim_end().lines().count(), 1, "{stderr}");
    assert!(!dir.path().join("out").exists());
}

#[test]
fn daemon_rejects_unknown_config_keys() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("daemon.yaml");
    std::fs::write(
        &config,
        "schedulers: [http://127.0.0.1:8002]\nbogus: true\n",
    )
    .unwrap();
    let output = shoal()
        .arg("daemon")
        .arg("--config")
        .arg(&config)
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("bogus"), "{stderr}");
}

#[test]
fn daemon_without_scheduler_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let output = shoal()
        .args(["daemon", "--data-dir"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("no scheduler configured"), "{stderr}");
}
