#!/usr/bin/env bash
# The main job on the embedded default: the Policy Authority service over HTTPS on
# 127.0.0.1:8443, with SoftHSM2 tokens, keys, the sled store and a self-signed development
# certificate under ./mpcp-data (MPCP_PA_DATA_DIR), all created on first start. The first
# start prints the security-officer API token once. Extra arguments go to `mpcp-pa up`
# (e.g. --listen 127.0.0.1:9443). Stop with Ctrl-C: in-flight requests are drained.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/ensure-deps.sh
cargo build --release --locked
exec target/release/mpcp-pa up "$@"
