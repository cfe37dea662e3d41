#!/usr/bin/env bash
# The whole test suite: formatting, lints, and every test (unit, vectors, Node interop,
# SoftHSM2, sled, TLS end-to-end). Installs missing system packages first.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/ensure-deps.sh
cargo fmt --check
cargo clippy --all-targets --locked -- -D warnings
cargo test --all-targets --locked
