#!/usr/bin/env bash
# Runs every fuzz target for SECONDS each (default 30: a smoke run; `scripts/fuzz.sh 600` is
# the ten-minute run), one after another, on a scratch copy of the committed corpus, then
# replays it on stable. Needs the nightly toolchain and cargo-fuzz
# (`rustup toolchain install nightly; cargo install cargo-fuzz`).
# A crash stops the script; its input is in fuzz/artifacts/<target>/. Copy it into
# fuzz/regressions/<target>/ with the fix, so `cargo test` replays it on stable.
# Reseed from real messages: `cargo test --release -p retailflow-lab --test it write_fuzz_seeds -- --ignored`,
# then shrink with `cargo +nightly fuzz cmin <target>`.
set -euo pipefail
seconds="${1:-30}"
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root/fuzz"
targets=(nats_protocol fastpack_vs_serde json_envelope http_requests posting_document finance_record)
cargo +nightly fuzz build
for t in "${targets[@]}"; do
    scratch="$(mktemp -d)"
    trap 'rm -rf "$scratch"' EXIT
    # New inputs go to the scratch directory, so the committed corpus stays small.
    cargo +nightly fuzz run "$t" "$scratch" "corpus/$t" -- \
        -max_total_time="$seconds" -rss_limit_mb=2048 -malloc_limit_mb=512 -print_final_stats=1
    rm -rf "$scratch"
done
cd "$root"
cargo test --release -p retailflow --lib fuzzing::
