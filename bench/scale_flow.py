"""Wall time of a `scale` flow run end to end vs the bare adapter call, same target, same run, on each
Prefect database side by side (PostgreSQL, SQLite).

Usage: .venv/bin/python bench/scale_flow.py [--target swarm|docker] [--rounds 5] [--lock-ops 50]
       [--databases postgres,sqlite]
For each database: starts its own Prefect server on a free loopback port and a workload of the chosen target;
each round scales 2 -> 3 -> 2 by each path, every step waiting until ready. Then more scale flows back to back
(3, 2, 3, ...) until ``--lock-ops`` flow operations have run in all. Prints JSON per database: both medians,
the ratio, the p50 added by the flow (also per direction: scale-out, scale-in), and lock_s (time taken to
acquire the workload lock, from the action records) p50/p95/max over every flow run, with the load average
(1/5/15 min) before and after.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench._common import drain_prefect, loadavg, start_local_server, use_api  # noqa: E402


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return round(ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))], 3)


def bench(database: str, target: str, rounds: int, lock_ops: int) -> dict[str, Any]:
    from prefect.settings import PREFECT_API_URL, temporary_settings

    from flows.scale import scale
    from scalewise import orchestrators
    from scalewise.audit import Trigger
    from scalewise.spec import get_workload

    load_before = loadavg()
    home = Path(tempfile.mkdtemp(prefix=f"bench-prefect-{database}-"))
    t0 = time.perf_counter()
    server = start_local_server(home, database)
    started_s = time.perf_counter() - t0
    use_api(server.api_url)  # every thread (the lock's beats), also for the second database
    name = f"bench-{uuid.uuid4().hex[:6]}"
    (home / "workloads").mkdir()
    (home / "workloads" / f"{name}.yaml").write_text(yaml.safe_dump({
        "name": name, "target": target, "image": "scalewise/busybox:1",
        "healthcheck": {"command": "wget -q -O /dev/null http://127.0.0.1:8080/ || exit 1", "interval": "1s",
                        "timeout": "1s", "retries": 2},
        "replicas": {"min": 1, "max": 5, "initial": 2}, "stop_grace_period": "1s",
    }))
    os.environ["SCALEWISE_WORKLOADS"] = str(home / "workloads")
    spec = get_workload(home / "workloads", name)
    orch = orchestrators.for_target(target)
    bare: list[float] = []
    flow: list[float] = []
    lock: list[float] = []
    phases: list[dict[str, float]] = []  # the action record's durations of each paired flow run
    try:
        orch.apply(spec, 2)
        orch.wait_converged(spec, 120)
        with temporary_settings(updates={PREFECT_API_URL: server.api_url}):
            scale(workload=name, replicas=2, trigger=Trigger(kind="api", actor="bench"))  # warm-up
            for _ in range(rounds):
                for n in (3, 2):  # scale out, then back in
                    t = time.perf_counter()
                    st = orch.read(spec)
                    orch.set_replicas(spec, n, st.version)
                    assert orch.wait_converged(spec, 120).converged
                    bare.append(time.perf_counter() - t)
                for n in (3, 2):
                    t = time.perf_counter()
                    rec = scale(workload=name, replicas=n, trigger=Trigger(kind="api", actor="bench"))
                    assert rec.outcome == "succeeded", rec
                    flow.append(time.perf_counter() - t)
                    lock.append(rec.durations.get("lock_s", 0.0))
                    phases.append({**rec.durations, "outside_action_s": flow[-1] - rec.durations["total_s"]})
            extra = 0
            while len(lock) < lock_ops:  # back-to-back operations, for lock_s alone
                rec = scale(workload=name, replicas=3 if extra % 2 == 0 else 2,
                            trigger=Trigger(kind="api", actor="bench"))
                assert rec.outcome == "succeeded", rec
                lock.append(rec.durations.get("lock_s", 0.0))
                extra += 1
    finally:
        orch.remove(spec)
        drain_prefect()
        server.stop()
        server.stop_database()
    return {
        "load_avg_before": load_before,
        "load_avg_after": loadavg(),
        "server_start_s": round(started_s, 2),
        "bare_adapter_s_median": round(statistics.median(bare), 3),
        "scale_flow_s_median": round(statistics.median(flow), 3),
        "ratio_flow_over_bare": round(statistics.median(flow) / statistics.median(bare), 2),
        "added_by_flow_s_p50": round(statistics.median(flow) - statistics.median(bare), 3),
        "lock_s": {"p50": pct(lock, 0.5), "p95": pct(lock, 0.95), "max": round(max(lock), 3), "n": len(lock)},
        # where a flow run's time goes: the record's phases (total_s: load spec .. done), and outside_action_s =
        # wall - total_s (flow-run creation and states, writing the action record, Prefect's teardown)
        "flow_phases_p50_s": {k: pct([ph[k] for ph in phases if k in ph], 0.5)
                              for k in sorted({k for ph in phases for k in ph})},
        # the medians above mix scale-outs (waiting for a new replica to become healthy) with scale-ins (nothing
        # to wait for): with as many of each, they fall between the two groups; the same figures per direction
        "by_direction_p50_s": {
            direction: {"bare": round(statistics.median(bare[i::2]), 3),
                        "flow": round(statistics.median(flow[i::2]), 3),
                        "added": round(statistics.median(flow[i::2]) - statistics.median(bare[i::2]), 3)}
            for i, direction in enumerate(("out", "in"))
        },
        "bare_s": [round(x, 3) for x in bare],
        "flow_s": [round(x, 3) for x in flow],
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--target", choices=["swarm", "docker"], default="swarm")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--lock-ops", type=int, default=50, help="flow operations in all, for lock_s")
    parser.add_argument("--databases", default="postgres,sqlite")
    args = parser.parse_args()
    subprocess.run(["bash", str(ROOT / "scripts" / "start-docker.sh")], check=True, capture_output=True)
    out: dict[str, Any] = {"target": args.target, "rounds": args.rounds, "cpus": os.cpu_count()}
    for database in args.databases.split(","):
        out[database] = bench(database.strip(), args.target, args.rounds, args.lock_ops)
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
