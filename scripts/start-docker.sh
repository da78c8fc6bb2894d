#!/usr/bin/env bash
# Start dockerd if no engine answers, make this node a single-node Swarm manager on 127.0.0.1, and
# build the local test images (no registry is reachable, so images are imported from busybox-static).
set -euo pipefail
cd "$(dirname "$0")/.."
log=${SCALEWISE_STATE:-/tmp/scalewise}/dockerd.log
mkdir -p "$(dirname "$log")"
if ! docker info >/dev/null 2>&1; then
  command -v dockerd >/dev/null || { echo "dockerd is not installed: run scripts/install-system.sh" >&2; exit 1; }
  echo "starting dockerd (log: $log)"
  nohup dockerd --host unix:///var/run/docker.sock >"$log" 2>&1 &
  for _ in $(seq 1 60); do docker info >/dev/null 2>&1 && break; sleep 0.5; done
  docker info >/dev/null 2>&1 || { echo "dockerd did not start; last log lines:" >&2; tail -20 "$log" >&2; exit 1; }
fi
state=$(docker info --format '{{.Swarm.LocalNodeState}}')
if [ "$state" != "active" ]; then
  docker swarm init --advertise-addr 127.0.0.1 >/dev/null
  echo "swarm initialised"
fi
bash scripts/build-images.sh
