#!/usr/bin/env bash
# Create (or reuse) .venv and install egeunet-deploy with every target's converter and runtime.
# torch is pinned to 2.13.0: on the reference machine pip takes the CPU build from its local wheel folder.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ ! -x .venv/bin/python ]; then
    python3 -m venv .venv
fi
. .venv/bin/activate
python -m pip install -q --upgrade pip
python -m pip install -q "torch==2.13.0"
python -m pip install -q -e ".[all,dev]"
echo "installed: $(egeunet --version)"
