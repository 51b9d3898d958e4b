//! Integration tests: a real scheduler on 127.0.0.1:0 driven by the generated tonic clients.

// Helper modules of a test binary are test code too; `allow-unwrap-in-tests` only covers
// `#[test]` functions and `cfg(test)` modules.
#![allow(clippy::unwrap_used)]

mod announce;
mod fake_seed;
mod harness;
mod rpc;
mod seed;
