#!/usr/bin/env bash
# The demo command: installs what is missing and runs the demo (`retailflow-lab demo`).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
scripts/install-nats-server.sh
export RETAILFLOW_NATS_SERVER="$root/.tools/nats-server/bin/nats-server"
cargo run --release --quiet -p retailflow-lab -- demo "$@"
