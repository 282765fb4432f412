#!/usr/bin/env bash
# Create .venv (once) and install fredset with its test extras. Source it to stay in the venv.
# torch is pinned to the CPU build that lies on disk here; elsewhere any torch >= 2.1 works.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
if [ ! -x .venv/bin/python ]; then
  python3 -m venv .venv
fi
# shellcheck disable=SC1091
source .venv/bin/activate
python -m pip install --quiet --upgrade pip
python -m pip install --quiet "torch==2.13.0"
python -m pip install --quiet -e ".[test]"
