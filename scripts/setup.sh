#!/usr/bin/env bash
# Create .venv (if missing) and install icdcoder with its pinned dependencies and dev tools.
# torch is pinned to 2.13.0 in pyproject.toml so pip takes the CPU wheel (see docs/INSTALL notes).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
.venv/bin/python -m pip install --quiet --upgrade pip >/dev/null 2>&1 || true
.venv/bin/python -m pip install --quiet -e '.[dev]'
