#!/usr/bin/env bash
# The test command: installs what the tests need (system packages, Python deps, the Kubernetes
# control-plane binaries, cached), starts dockerd + Swarm, then runs lint, types, layering and pytest.
# Extra arguments go to pytest (e.g. scripts/test.sh -k swarm).
set -euo pipefail
cd "$(dirname "$0")/.."
t0=$SECONDS
bash scripts/install-system.sh
bash scripts/install-python.sh
bash scripts/start-docker.sh
bash scripts/build-scalewise-image.sh >/dev/null  # scalewise/scalewise (rebuilt only when its inputs change)
if [ -x scripts/k8s/build.sh ] || [ -f scripts/k8s/build.sh ]; then bash scripts/k8s/build.sh; fi
echo "setup took $((SECONDS - t0))s"
# Every check runs, so one report shows everything; the exit status is non-zero if any failed.
status=0
.venv/bin/ruff check . || status=1
.venv/bin/mypy || status=1
.venv/bin/lint-imports || status=1
.venv/bin/python -m pytest "$@" || status=$?
echo "checks and tests took $((SECONDS - t0))s in all"
exit "$status"
