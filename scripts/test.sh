#!/usr/bin/env bash
# The test command: installs what the tests need, then runs lints and every test.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
"$root/scripts/setup.sh"
cargo fmt --all --check
cargo clippy --workspace --all-targets -q -- -D warnings
if cargo nextest --version >/dev/null 2>&1; then
    cargo nextest run --workspace --profile ci
else
    cargo test --workspace
fi
cargo test --workspace --doc -q
