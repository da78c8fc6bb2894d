#!/usr/bin/env bash
# The test command: installs what the tests need (system packages, Python deps, the Kubernetes
# control-plane binaries, cached), starts dockerd + Swarm, then runs lint, types, layering and pytest.
#   bash scripts/test.sh            everything: lint, types, layering, the whole suite on real components
#   bash scripts/test.sh --fast     lint, types, layering and the pure/unit tests (seconds; no set-up)
# Other arguments go to pytest (e.g. scripts/test.sh -k swarm). The full suite runs on
# SCALEWISE_TEST_WORKERS pytest-xdist workers (default 3: most tests wait on timers and components, so a
# third worker overlaps those waits; 0 runs in one process).
set -euo pipefail
cd "$(dirname "$0")/.."
t0=$SECONDS
fast=0
args=()
for a in "$@"; do
  if [ "$a" = "--fast" ]; then fast=1; else args+=("$a"); fi
done
if ((fast)); then
  [ -x .venv/bin/python ] || bash scripts/install-python.sh
else
  bash scripts/install-system.sh
  bash scripts/install-python.sh
  bash scripts/start-docker.sh
  # The images (debootstrap + wheelhouse, then the scalewise image and the stack's infra image: mostly
  # downloads) build while the Kubernetes binaries compile; all are cached and rebuilt only when their
  # inputs change.
  image_log=${SCALEWISE_STATE:-/tmp/scalewise}/build-image.log
  mkdir -p "$(dirname "$image_log")"
  bash scripts/build-stack-images.sh >"$image_log" 2>&1 &
  image_pid=$!
  k8s_status=0
  bash scripts/k8s/build.sh || k8s_status=$?
  image_status=0
  wait "$image_pid" || image_status=$?
  if ((image_status)); then echo "building the images failed:"; tail -30 "$image_log"; exit "$image_status"; fi
  ((k8s_status == 0)) || exit "$k8s_status"
  echo "setup took $((SECONDS - t0))s"
fi
# Every check runs, so one report shows everything; the exit status is non-zero if any failed.
# mypy's cache lives with the other caches, not in the checkout: a fresh clone on a warm machine checks
# in ~1 s instead of ~27 s of CPU (mypy re-validates every cached module by its content hash).
export MYPY_CACHE_DIR=${MYPY_CACHE_DIR:-${SCALEWISE_CACHE:-$HOME/.cache/scalewise}/mypy}
status=0
.venv/bin/ruff check . || status=1
.venv/bin/mypy || status=1
.venv/bin/lint-imports || status=1
if ((fast)); then
  .venv/bin/python -m pytest -m "not component" ${args[@]+"${args[@]}"} || status=$?
else
  workers=${SCALEWISE_TEST_WORKERS:-3}
  xdist=()
  # files in collection order, the slowest first (tests/conftest.py SLOW_FIRST), not by test count
  ((workers > 0)) && xdist=(-n "$workers" --dist loadfile --no-loadscope-reorder)
  .venv/bin/python -m pytest ${xdist[@]+"${xdist[@]}"} ${args[@]+"${args[@]}"} || status=$?
fi
echo "checks and tests took $((SECONDS - t0))s in all"
exit "$status"
