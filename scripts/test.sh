#!/usr/bin/env bash
# The test command: installs what is missing, checks formatting and lints, runs every test
# against a private nats-server per test.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
scripts/install-nats-server.sh
export RETAILFLOW_NATS_SERVER="$root/.tools/nats-server/bin/nats-server"
# The dashboard test drives Debian's headless Chromium; the alert rules' tests run promtool
# from Debian's prometheus package.
missing=()
command -v chromium >/dev/null || missing+=(chromium)
command -v promtool >/dev/null || missing+=(prometheus)
if [ "${#missing[@]}" -gt 0 ]; then
    as_root=""
    [ "$(id -u)" -eq 0 ] || as_root="sudo"
    $as_root apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $as_root apt-get install -y -qq "${missing[@]}"
fi
cargo fmt --check
scripts/check-layers.sh
cargo clippy --workspace --all-targets --quiet -- -D warnings
cargo test --release --workspace
# The three-node cluster with two replicas and the ERP simulator, from the binaries just built:
# one leads, both answer, and the other takes over when the leader is killed.
scripts/cluster.sh --check --no-build
# Fuzz smoke: every target for a few seconds on nightly with the committed corpus (the long
# runs are `scripts/fuzz.sh 600`). cargo-fuzz comes from crates.io when it is missing.
command -v cargo-fuzz >/dev/null || cargo install --locked cargo-fuzz
scripts/fuzz.sh "${RETAILFLOW_FUZZ_SECONDS:-10}"
