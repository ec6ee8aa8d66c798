#!/usr/bin/env bash
# Browser tests of the My Network page: installs playwright-core with `npm ci`
# and runs network.test.mjs with node's test runner. Playwright drives Debian's
# Chromium (/usr/bin/chromium, headless) against a Lattice release binary.
# Usage: LATTICE_BIN=target/release/lattice tests/browser/run.sh
# Needs: Node.js 20 or later with npm, and Debian's chromium package (this
# script installs it with apt-get when it runs as root). The Firefox check
# runs when firefox-esr is installed and playwright-core can drive it;
# otherwise it is reported as skipped with the reason.
# Screenshots go to docs/network-page/ (SCREENSHOT_DIR overrides it).
set -euo pipefail

script_dir="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo_root="$(cd "$script_dir/../.." && pwd)"
export LATTICE_BIN="${LATTICE_BIN:-$repo_root/target/release/lattice}"

if [[ ! -x "$LATTICE_BIN" ]]; then
    echo "run.sh: no Lattice binary at $LATTICE_BIN; build it with cargo build --release or set LATTICE_BIN" >&2
    exit 1
fi

if ! command -v chromium >/dev/null 2>&1; then
    if [[ "$(id -u)" -ne 0 ]]; then
        echo "run.sh: Chromium is missing; install it with: sudo apt-get install -y chromium" >&2
        exit 1
    fi
    echo "run.sh: Chromium is missing, so run.sh installs it with apt-get" >&2
    apt-get update -q
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium
fi

cd "$script_dir"
npm ci --no-audit --no-fund --loglevel=error
node --test --test-concurrency=1 network.test.mjs
