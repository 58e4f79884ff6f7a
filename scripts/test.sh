#!/usr/bin/env bash
# Set up (scripts/setup.sh) and run every test: the Python suite, then the Android demo's checks.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
. .venv/bin/activate
python -m pytest -q
if [ -x android_demo/ci.sh ]; then
    bash android_demo/ci.sh
fi
