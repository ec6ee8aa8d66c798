#!/usr/bin/env bash
# Runs every test suite of Lattice:
#   1. unit and integration tests (`cargo test`), on SQLite, and also on
#      PostgreSQL when LATTICE_TEST_POSTGRES_URL is set;
#   2. the crash test (SIGKILL after acknowledged sends, then restart);
#   3. the real-client scenarios with matrix-nio against a release build.
# Needs: a Rust toolchain, python3 with venv and pip, network access to crates.io and PyPI.
set -euo pipefail
cd "$(dirname "$0")/.."

echo "== cargo test (unit, integration, crash)"
cargo test --workspace --locked

echo "== release build for the client scenarios"
cargo build --release --locked

echo "== matrix-nio client scenarios"
LATTICE_BIN="$PWD/target/release/lattice" tests/clients/run.sh
