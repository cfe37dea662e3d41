#!/usr/bin/env bash
# Installs what mpcp-pa needs on a fresh Debian machine, only where missing:
# SoftHSM2 (the development/test PKCS#11 token), p11-kit (`p11-kit server`, which exports a
# token over a unix socket) and p11-kit-modules (`p11-kit-client.so`, its client module: the
# remote-HSM test), Node.js (interop tests: Node's crypto and a
# key resolver written from the spec), nginx and wrk (the discovery bench serves the same
# bytes from nginx and drives both with wrk), libfaketime (the clock tests run the binary
# with its wall clock moved), prometheus (`promtool check metrics` lints what GET /metrics
# serves), chromium (the console is tested in headless Chromium). Needs root for apt-get; the Rust toolchain is
# assumed.
# Then npm ci in tests/interop: ripple-binary-codec and ripple-keypairs, the XRPL Foundation's clients that check every signed XRPL blob.
set -euo pipefail
missing=()
[ -e /usr/lib/softhsm/libsofthsm2.so ] || missing+=(softhsm2)
[ -x /usr/libexec/p11-kit/p11-kit-server ] || missing+=(p11-kit)
[ -e /usr/lib/x86_64-linux-gnu/pkcs11/p11-kit-client.so ] || missing+=(p11-kit-modules)
command -v node >/dev/null 2>&1 || missing+=(nodejs)
[ -x /usr/sbin/nginx ] || missing+=(nginx)
command -v wrk >/dev/null 2>&1 || missing+=(wrk)
[ -e /usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1 ] || missing+=(faketime)
command -v promtool >/dev/null 2>&1 || missing+=(prometheus)
command -v chromium >/dev/null 2>&1 || missing+=(chromium)
command -v cargo >/dev/null 2>&1 || { echo "cargo is required (install Rust with rustup)" >&2; exit 1; }
if [ ${#missing[@]} -gt 0 ]; then
  echo "installing: ${missing[*]}"
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}"
fi
# The interop tests' npm packages, installed exactly as locked (the repo root is the script's parent dir).
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
if [ ! -d "$root/tests/interop/node_modules/ripple-binary-codec" ]; then
  echo "installing: npm packages in tests/interop"
  npm ci --prefix "$root/tests/interop" --no-audit --no-fund
fi
