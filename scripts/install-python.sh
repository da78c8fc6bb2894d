#!/usr/bin/env bash
# Create .venv and install scalewise with its pinned dependencies (requirements.lock: names and versions).
# Bytecode is compiled at install time: this environment sets PYTHONDONTWRITEBYTECODE=1, so without it
# every process (each CLI call, each flow run that serve or a worker spawns) pays seconds of imports.
set -euo pipefail
cd "$(dirname "$0")/.."
command -v uv >/dev/null 2>&1 || python3 -m pip install -q uv
[ -x .venv/bin/python ] || uv venv -q -p 3.11 .venv
uv pip install -q -p .venv/bin/python --compile-bytecode -r requirements.lock
uv pip install -q -p .venv/bin/python --no-deps -e .
# the editable project itself (src/, and the flows/ and tasks/ project layer)
# (also what an existing .venv installed before compiling was added; up-to-date files are skipped)
.venv/bin/python -m compileall -q -j 0 "$(.venv/bin/python -c "import sysconfig; print(sysconfig.get_paths()['purelib'])")" src flows tasks deployments >/dev/null || true
