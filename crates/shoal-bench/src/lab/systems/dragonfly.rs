//! Upstream Dragonfly (dfdaemon/dfget 1.5.10 under shoal's scheduler).
//!
//! Not run yet: the harness only looks for the binaries and says why the system is skipped.

use std::path::{Path, PathBuf};

use crate::lab::netns::which;

/// The message for a lab without the upstream binaries.
pub(crate) const BUILD_HINT: &str = "upstream dfdaemon and dfget not found on PATH or in \
     --dragonfly-bin-dir; build them with `cargo install dragonfly-client --version 1.5.10 \
     --locked` (needs protobuf-compiler and libclang-dev; a long build on 2 cores), then pass \
     --dragonfly-bin-dir ~/.cargo/bin";

/// Why the system is skipped in this run.
pub(crate) fn skip_reason(bin_dir: Option<&Path>) -> String {
    let found = |name: &str| -> Option<PathBuf> {
        match bin_dir {
            Some(dir) => Some(dir.join(name)).filter(|p| p.is_file()),
            None => which(name),
        }
    };
    match (found("dfdaemon"), found("dfget")) {
        (Some(daemon), Some(_)) => format!(
            "found {} but the harness does not drive upstream dfdaemon yet",
            daemon.display()
        ),
        _ => BUILD_HINT.to_owned(),
    }
}
