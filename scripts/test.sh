#!/usr/bin/env bash
# Runs the whole test suite: formatting, lints, unit and integration tests, and the end-to-end
# tests against real PostgreSQL, Garage and Python's mail clients.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/deps.sh
ensure_test_deps
echo "==> cargo fmt --check"
cargo fmt --all --check
echo "==> cargo clippy"
cargo clippy --workspace --all-targets -- -D warnings
echo "==> cargo test"
cargo test --workspace
