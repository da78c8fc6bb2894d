"""Benchmark: start time of the real Kubernetes test control plane.

Runs scripts/k8s/build.sh once (timed; a cache hit is expected), then starts the
control plane ``--runs`` times. The first start is the "cold" start (fresh
process page cache for the binaries may still be warm from the build), the rest
are "warm". Each start is measured from process launch to: apiserver /readyz,
all fake nodes Ready and the ``default`` ServiceAccount present.

Usage: .venv/bin/python -m bench.k8s_controlplane [--runs 3] [--nodes 3]
Prints one JSON object. No assertions on timing.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.support.kube import ControlPlane, build_binaries


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=3, help="number of control-plane starts")
    parser.add_argument("--nodes", type=int, default=3, help="fake nodes per start")
    parser.add_argument("--extra-nodes", type=int, default=0, help="after the last start, add this many nodes (timed)")
    args = parser.parse_args(argv)

    t = time.monotonic()
    bin_dir = build_binaries()
    build_s = time.monotonic() - t

    starts: list[dict[str, float]] = []
    extra: dict[str, Any] = {}
    for i in range(args.runs):
        cp = ControlPlane(nodes=args.nodes, bin_dir=bin_dir)
        t = time.monotonic()
        cp.start()
        total = time.monotonic() - t
        timings = {k: round(v, 3) for k, v in cp.timings.items()}
        timings["wall"] = round(total, 3)
        if i == args.runs - 1 and args.extra_nodes > 0:
            t = time.monotonic()
            cp.add_nodes(args.extra_nodes)
            extra = {"extra_nodes": args.extra_nodes, "add_nodes_s": round(time.monotonic() - t, 3)}
        t = time.monotonic()
        cp.stop()
        timings["stop"] = round(time.monotonic() - t, 3)
        starts.append(timings)

    warm = [s["wall"] for s in starts[1:]]
    result: dict[str, Any] = {
        "bench": "k8s_controlplane",
        "bin_dir": str(bin_dir),
        "build_script_s": round(build_s, 3),
        "nodes": args.nodes,
        "cold_start_s": starts[0]["wall"] if starts else None,
        "warm_start_s_median": round(statistics.median(warm), 3) if warm else None,
        "warm_start_s": warm,
        "runs": starts,
        **extra,
    }
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
