#!/usr/bin/env bash
# The house rules the compiler does not check: no import cycle between the modules of any
# crate (scripts/check_layers.py; cycles between crates Cargo refuses by itself), and rooms
# of one size (scripts/check_sizes.py: files up to 800 lines, functions up to 120).
# `scripts/check_layers.py --edges` prints the whole module graph.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
python3 "$root/scripts/check_layers.py" "$root"
python3 "$root/scripts/check_sizes.py" "$root"
