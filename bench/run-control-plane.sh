#!/usr/bin/env bash
# Issue 10's control-plane figures, back to back, each on PostgreSQL and SQLite side by side:
# CLI start-up, scale flow vs bare adapter with lock_s, reaction latency (threshold and fast paths),
# webhook request -> replica write at 1/5/20 requests/s, flow runs/s with 1/2/4 process workers.
# Usage: bash bench/run-control-plane.sh [OUT_DIR] [STOP_AT_UTC_HH:MM]
# Each bench's JSON goes to OUT_DIR/<bench>.json with `uptime` before and after in OUT_DIR/<bench>.uptime;
# a bench is not started past STOP_AT (default: none). Run it on a quiet machine: the figures are wall times.
set -uo pipefail
cd "$(dirname "$0")/.."
out=${1:-/tmp/scalewise-bench-$(date -u +%Y%m%dT%H%M%S)}
stop_at=${2:-}
mkdir -p "$out"
py=.venv/bin/python

run() {  # run NAME COMMAND...
  local name=$1
  shift
  if [[ -n $stop_at && $(date -u +%H:%M) > $stop_at ]]; then
    echo "skipped $name: past $stop_at" | tee -a "$out/summary.txt"
    return
  fi
  { echo "\$ $*"; echo "before: $(uptime)"; } >"$out/$name.uptime"
  local t0=$SECONDS
  timeout -k 10 900 "$@" >"$out/$name.json" 2>"$out/$name.log"
  local rc=$?
  echo "after:  $(uptime)" >>"$out/$name.uptime"
  echo "$name rc=$rc $((SECONDS - t0))s: $*" | tee -a "$out/summary.txt"
}

run cli_startup $py bench/cli_startup.py --rounds 5
for db in postgres sqlite; do  # one process per database: a failure on one keeps the other's figures
  run scale_flow-$db $py bench/scale_flow.py --target docker --rounds 5 --lock-ops 50 --databases $db
done
for db in postgres sqlite; do
  run reaction-$db $py bench/reaction_latency.py --paths threshold,fast --breaches 6 --fast-interval 1 \
    --workloads 1000 --databases $db
done
for db in postgres sqlite; do
  run webhook-$db $py -m bench.webhook_bench --parts rates --rates 1,5,20 --per-rate 20 --fanout 5 --drain 300 \
    --databases $db
done
for db in postgres sqlite; do
  run workers-$db $py bench/worker_throughput.py --workers 1,2,4 --runs 12 --timeout 300 --databases $db
done
echo "results in $out"
