#!/usr/bin/env bash
# Set up everything on a fresh machine: system libraries (Debian/Ubuntu, when root), a virtualenv in
# .venv with the pinned dependencies, and the project installed in editable mode with dev extras.
set -euo pipefail
cd "$(dirname "$0")/.."

# Python 3.11 or 3.12 (what the pinned wheels exist for): $PYTHON, else python3, else python3.11 / python3.12.
supported() { "$1" -c 'import sys; sys.exit(0 if sys.version_info[:2] in ((3, 11), (3, 12)) else 1)' 2>/dev/null; }
PY=${PYTHON:-}
if [ -z "$PY" ]; then
  for c in python3 python3.11 python3.12; do
    if command -v "$c" >/dev/null 2>&1 && supported "$c"; then PY=$c; break; fi
  done
fi
if [ -z "$PY" ] || ! supported "$PY"; then
  found=$("${PY:-python3}" --version 2>&1 || echo "no python3")
  echo "moss-live needs Python 3.11 or 3.12 (found: $found); install one, or set PYTHON=/path/to/python3.11." >&2
  exit 1
fi

if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
  # portaudio: sounddevice; pulse: QtMultimedia; xcb: a real X server; xvfb: screenshot tests; espeak-ng: voice test
  pkgs="libportaudio2 libpulse0 libxcb-icccm4 libxcb-keysyms1 libxkbcommon-x11-0 libxcb-cursor0 libegl1 libgl1 xvfb espeak-ng"
  missing=""
  for p in $pkgs; do dpkg -s "$p" >/dev/null 2>&1 || missing="$missing $p"; done
  if [ -n "$missing" ]; then
    apt-get update -qq >/dev/null 2>&1 || true
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $missing >/dev/null 2>&1 || echo "note: could not install:$missing"
  fi
fi

if [ ! -x .venv/bin/python ] || ! supported .venv/bin/python; then
  rm -rf .venv
  "$PY" -m venv .venv
fi
.venv/bin/python -m pip install -q --upgrade pip >/dev/null 2>&1 || true
# torch first and pinned: a bare `torch` would pull a multi-GB CUDA build on machines without a GPU
.venv/bin/python -m pip install -q "torch==2.13.0" 2>&1 | grep -v "^WARNING: Location" || true
.venv/bin/python -m pip install -q -e ".[dev,voice]" 2>&1 | grep -v "^WARNING: Location" || true
.venv/bin/python -c "import torch, transformers, PySide6, cv2; print('setup ok: torch', torch.__version__)"
