#!/usr/bin/env bash
# Installs the pinned npm packages (matrix-js-sdk with its Rust crypto) and runs
# the encrypted-DM scenario against a Lattice server that it starts on loopback.
# Usage: LATTICE_BIN=target/release/lattice tests/js/run.sh
# LATTICE_BIN defaults to target/release/lattice; build it with `cargo build --release`.
set -euo pipefail

script_dir="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo_root="$(cd "$script_dir/../.." && pwd)"
export LATTICE_BIN="${LATTICE_BIN:-$repo_root/target/release/lattice}"
if [[ "$LATTICE_BIN" != /* ]]; then
    LATTICE_BIN="$repo_root/$LATTICE_BIN"
fi

cd "$script_dir"
npm ci --no-audit --no-fund --loglevel=error
timeout 600 node encrypted_dm.mjs
