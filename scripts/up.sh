#!/usr/bin/env bash
# The main job on the embedded default: install what is missing, start dockerd and the local Prefect
# server (PostgreSQL), build the example image locally, deploy the example workload `web` to the local
# Docker engine, and serve every operation so it can be run from the Prefect UI or the CLI.
# Stop with Ctrl-C (the workload keeps running; `scalewise status` shows it).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-system.sh
bash scripts/install-python.sh
bash scripts/start-docker.sh
export PREFECT_API_URL=${PREFECT_API_URL:-http://127.0.0.1:4200/api}
.venv/bin/scalewise server >/dev/null
echo "Prefect UI: ${PREFECT_API_URL%/api}"
echo "Try, in another shell:  .venv/bin/scalewise status; .venv/bin/scalewise scale-out web; .venv/bin/scalewise history"
exec .venv/bin/python deployments/serve.py --deploy web "$@"
