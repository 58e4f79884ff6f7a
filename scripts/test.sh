#!/usr/bin/env bash
# Set up (scripts/setup.sh) and run every test: the Android demo's checks (android_demo/ci.sh installs its own
# Kotlin/ktlint/aapt2 toolchain), then the Python suite.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
. .venv/bin/activate
bash android_demo/ci.sh
EGEUNET_ANDROID_CI_DONE=1 python -m pytest -q
