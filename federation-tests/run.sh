#!/usr/bin/env bash
# Install the Python environment of the federation scenarios (and the npm packages of the
# matrix-js-sdk scenario, when Node.js is present) and run them with pytest.
# Usage: federation-tests/run.sh [extra pytest arguments]
# The servers run the binary at LATTICE_BIN, or target/release/lattice by default,
# so build it first with `cargo build --release`. The exit code is pytest's.
set -euo pipefail

script_dir="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
venv_dir="$script_dir/.venv"
python="${PYTHON:-python3}"

if [[ ! -x "$venv_dir/bin/python" ]]; then
    # Debian splits venv and ensurepip into python3-venv (python3.11-venv on bookworm).
    if ! "$python" -c 'import venv, ensurepip' 2>/dev/null; then
        echo "run.sh: the Python venv module is missing, so run.sh installs python3-venv with apt-get" >&2
        if [[ "$(id -u)" -eq 0 ]]; then
            apt_get=(apt-get)
        else
            apt_get=(sudo apt-get)
        fi
        "${apt_get[@]}" update
        DEBIAN_FRONTEND=noninteractive "${apt_get[@]}" install -y python3-venv
    fi
    # A failed earlier run can leave a venv folder without its python, so the folder is created afresh.
    rm -rf "$venv_dir"
    "$python" -m venv "$venv_dir"
fi

"$venv_dir/bin/python" -m pip install --quiet --disable-pip-version-check -r "$script_dir/requirements.txt"

# The encrypted-DM scenario with Synapse runs matrix-js-sdk from tests/js; without
# Node.js that test is skipped and says so.
js_dir="$script_dir/../tests/js"
if command -v node >/dev/null && command -v npm >/dev/null; then
    (cd "$js_dir" && npm ci --no-audit --no-fund --loglevel=error)
else
    echo "run.sh: Node.js with npm is not installed, so the matrix-js-sdk scenario will be skipped" >&2
fi

cd "$script_dir"
set +e
"$venv_dir/bin/python" -m pytest -q "$@"
status=$?
set -e
exit "$status"
