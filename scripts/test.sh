#!/usr/bin/env bash
# Set up (scripts/setup.sh), then run the test suite on the CPU.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/setup.sh
python -m pytest -q
