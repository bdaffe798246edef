#!/usr/bin/env bash
# The full test suite: what CI runs (after .ci/run installs the tools).
# One build for every crate; tests that need real servers start them on loopback.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-/var/tmp/fathom-target}"
export PROPTEST_CASES="${PROPTEST_CASES:-2000}"
cargo build --workspace --all-targets --locked
cargo test --workspace --locked --no-fail-fast -- --test-threads=2
