#!/usr/bin/env bash
# The test command: installs what is missing, checks formatting and lints, runs every test
# against a private nats-server per test.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
scripts/install-nats-server.sh
export RETAILFLOW_NATS_SERVER="$root/.tools/nats-server/bin/nats-server"
cargo fmt --check
cargo clippy --all-targets --quiet -- -D warnings
cargo test --release
