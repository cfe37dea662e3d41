#!/usr/bin/env bash
# The main job on the embedded default. At this stage: build the appliance and verify the
# shipped signed vectors offline (a grant per algorithm, a grant through a Trust Bundle).
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/ensure-deps.sh
cargo build --release --locked
bin=target/release/mpcp-pa
v=test-vectors/l2
at=2026-06-01T12:00:00Z
for g in grant-eddsa-valid grant-es256k-valid grant-es256-valid; do
  "$bin" verify "$v/artifacts/$g.json" --keys "$v/keys/jwks.json" --at "$at"
done
"$bin" verify "$v/artifacts/grant-eddsa-valid.json" --keys "$v/keys/bundle.json" --root "$v/keys/root-jwks.json" --at "$at"
"$bin" verify "$v/artifacts/grant-tampered.json" --keys "$v/keys/jwks.json" --at "$at" || echo "(refused, as it must be)"
