#!/usr/bin/env bash
# Create .venv and install scalewise with its pinned dependencies (requirements.lock: names and versions).
set -euo pipefail
cd "$(dirname "$0")/.."
command -v uv >/dev/null 2>&1 || python3 -m pip install -q uv
[ -x .venv/bin/python ] || uv venv -q -p 3.11 .venv
uv pip install -q -p .venv/bin/python -r requirements.lock
uv pip install -q -p .venv/bin/python --no-deps -e .
