#!/usr/bin/env bash
# Runs every test suite of Lattice:
#   1. unit and integration tests (`cargo test`), on SQLite, and also on
#      PostgreSQL when LATTICE_TEST_POSTGRES_URL is set;
#   2. the crash test (SIGKILL after acknowledged sends, then restart);
#   3. the real-client scenarios with matrix-nio against a release build;
#   4. the federation scenarios: three Lattice servers on 127.0.0.2-4 over TLS;
#   5. the encrypted DM scenario with matrix-js-sdk and its Rust crypto;
#   6. the My Network page in headless Chromium (Playwright).
# Needs: a Rust toolchain, python3 with venv and pip, Node.js 20 with npm,
# Debian's chromium, and network access to crates.io, PyPI and npm.
set -euo pipefail
cd "$(dirname "$0")/.."

# CI machines can be short of disk: without incremental state and with the
# test profile's artifacts removed before the release build, the target
# directory stays around 2 GiB. Local runs keep both for fast rebuilds.
if [[ "${CI:-}" == "true" ]]; then
    export CARGO_INCREMENTAL=0
    df -h . | tail -n 1 | awk '{print "disk: " $4 " free before the build"}'
fi
target_dir="${CARGO_TARGET_DIR:-$PWD/target}"

echo "== cargo test (unit, integration, crash)"
cargo test --workspace --locked

if [[ "${CI:-}" == "true" && -z "${CARGO_TARGET_DIR:-}" ]]; then
    rm -rf "$target_dir/debug"
fi

echo "== release build for the client scenarios"
cargo build --release --locked

# The client suites all run, and the script fails at the end if any failed.
failed=()

echo "== matrix-nio client scenarios"
LATTICE_BIN="$target_dir/release/lattice" tests/clients/run.sh || failed+=("matrix-nio scenarios")

echo "== federation scenarios (three Lattice servers)"
LATTICE_BIN="$target_dir/release/lattice" federation-tests/run.sh || failed+=("federation scenarios")

echo "== matrix-js-sdk encrypted DM scenario"
LATTICE_BIN="$target_dir/release/lattice" tests/js/run.sh || failed+=("matrix-js-sdk scenario")

echo "== My Network page in Chromium (Playwright)"
# Screenshots go to a scratch folder here; run tests/browser/run.sh directly to refresh docs/network-page/.
SCREENSHOT_DIR="${SCREENSHOT_DIR:-$(mktemp -d)}" LATTICE_BIN="$target_dir/release/lattice" tests/browser/run.sh ||
    failed+=("browser tests")

if ((${#failed[@]} > 0)); then
    echo "== failed: ${failed[*]}" >&2
    exit 1
fi
echo "== all suites passed"
