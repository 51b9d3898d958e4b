#!/usr/bin/env bash
# The test command: installs what the tests need, then runs lints and every test.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
"$root/scripts/setup.sh"
# The manager's storage suite also runs against a real PostgreSQL.
SHOAL_TEST_POSTGRES_URL="$("$root/scripts/postgres.sh")"
export SHOAL_TEST_POSTGRES_URL
cargo fmt --all --check
cargo clippy --workspace --all-targets -q -- -D warnings
if cargo nextest --version >/dev/null 2>&1; then
    cargo nextest run --workspace --profile ci
else
    cargo test --workspace
fi
cargo test --workspace --doc -q
