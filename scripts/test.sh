#!/usr/bin/env bash
# The project's checks: lint (ruff), types (mypy), then the test suite (pytest).
set -euo pipefail
cd "$(dirname "$0")/.."
.venv/bin/ruff check src tests
.venv/bin/ruff format --check src tests
.venv/bin/mypy
.venv/bin/python -m pytest "$@"
