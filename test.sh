#!/usr/bin/env bash
# One command on a fresh machine: set up, lint, run the test suite (CPU, offscreen Qt).
set -euo pipefail
cd "$(dirname "$0")"
bash scripts/setup.sh
.venv/bin/ruff check .
export QT_QPA_PLATFORM=offscreen
.venv/bin/python -m pytest -q -p no:cacheprovider "$@"
