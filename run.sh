#!/usr/bin/env bash
# One command on a fresh machine: set up, then run the app (the bundled model on the bundled demo
# video). Without a display it runs headless and prints the live commentary. Extra arguments go to
# main.py, e.g. ./run.sh --source webcam
set -euo pipefail
cd "$(dirname "$0")"
bash scripts/setup.sh >&2
exec .venv/bin/python main.py "$@"
