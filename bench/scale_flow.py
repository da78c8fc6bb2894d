"""Wall time of a `scale` flow run end to end vs the bare adapter call, same target, same run.

Usage: .venv/bin/python bench/scale_flow.py [--target swarm|docker] [--rounds 5]
Starts its own Prefect server (SQLite) on a free loopback port and a workload of the chosen target;
each round scales 2 -> 3 -> 2 by each path, every step waiting until ready; prints JSON with both medians and the ratio.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import tempfile
import time
import uuid
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--target", choices=["swarm", "docker"], default="swarm")
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    subprocess.run(["bash", str(ROOT / "scripts" / "start-docker.sh")], check=True, capture_output=True)

    from scalewise.local import start_server

    home = Path(tempfile.mkdtemp(prefix="bench-prefect-"))
    server = start_server(home, port=free_port())
    os.environ["PREFECT_API_URL"] = server.api_url
    name = f"bench-{uuid.uuid4().hex[:6]}"
    (home / "workloads").mkdir()
    (home / "workloads" / f"{name}.yaml").write_text(yaml.safe_dump({
        "name": name, "target": args.target, "image": "scalewise/busybox:1",
        "healthcheck": {"command": "wget -q -O /dev/null http://127.0.0.1:8080/ || exit 1", "interval": "1s",
                        "timeout": "1s", "retries": 2},
        "replicas": {"min": 1, "max": 5, "initial": 2}, "stop_grace_period": "1s",
    }))
    os.environ["SCALEWISE_WORKLOADS"] = str(home / "workloads")

    from prefect.settings import PREFECT_API_URL, temporary_settings

    from flows.scale import scale
    from scalewise import orchestrators
    from scalewise.audit import Trigger
    from scalewise.spec import get_workload

    spec = get_workload(home / "workloads", name)
    orch = orchestrators.for_target(args.target)
    bare: list[float] = []
    flow: list[float] = []
    try:
        orch.apply(spec, 2)
        orch.wait_converged(spec, 120)
        with temporary_settings(updates={PREFECT_API_URL: server.api_url}):
            scale(workload=name, replicas=2, trigger=Trigger(kind="api", actor="bench"))  # warm-up
            for _ in range(args.rounds):
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
    finally:
        orch.remove(spec)
        server.stop()
    out = {
        "target": args.target,
        "rounds": args.rounds,
        "bare_adapter_s_median": round(statistics.median(bare), 3),
        "scale_flow_s_median": round(statistics.median(flow), 3),
        "ratio_flow_over_bare": round(statistics.median(flow) / statistics.median(bare), 2),
        "bare_s": [round(x, 3) for x in bare],
        "flow_s": [round(x, 3) for x in flow],
    }
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
