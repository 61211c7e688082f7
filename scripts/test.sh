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
log=$(mktemp)
trap 'rm -f "$log"' EXIT
cargo test --workspace 2>&1 | tee "$log"
# One closing line for the whole workspace (cargo prints one per test binary, the last of
# which is often an empty doc-test run).
awk '/^test result:/ { for (i = 1; i <= NF; i++) { if ($(i) ~ /^passed;?$/) p += $(i-1); if ($(i) ~ /^failed;?$/) f += $(i-1); if ($(i) ~ /^ignored;?$/) s += $(i-1) } }
     END { printf "workspace: %d passed, %d failed, %d skipped\n", p, f, s }' "$log"
