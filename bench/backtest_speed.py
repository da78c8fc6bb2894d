"""Backtest speed alone: decisions per CPU second of a whole backtest (``hpa`` + the ``api`` workload).

Run from the repository root: ``.venv/bin/python bench/backtest_speed.py [--days 3] [--repeat 3]
[--profile]``. The first ``--days`` of the NASA-HTTP trace (``../shared/traces``, see
bench/backtest_bench.py for its attribution), capacity 0.23, start-up 60 s. CPU time, so a loaded
machine reads less wrong; the best of ``--repeat`` runs is reported, with a digest of the scores
and schedules (equal digests: the same results).
"""

from __future__ import annotations

import argparse
import cProfile
import hashlib
import json
import pstats
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from scalewise import backtest as bt  # noqa: E402
from scalewise.spec import get_workload  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--traces", type=Path, default=ROOT.parent / "shared" / "traces")
    parser.add_argument("--days", type=float, default=3.0)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--profile", action="store_true", help="one run under cProfile, top 30 by own time")
    args = parser.parse_args()
    api = get_workload(ROOT / "workloads", "api")
    full = bt.load_csv(args.traces / "nasa_http_19950701-19950728_per_min.csv")
    trace = bt.Trace(full.name, full.interval_s, full.requests[: int(args.days * 1440)])
    model = bt.ServiceModel(capacity=0.23, startup_s=60)
    best, profile = 0.0, cProfile.Profile() if args.profile else None
    for _ in range(1 if profile else args.repeat):
        cpu0 = time.process_time()
        if profile:
            profile.enable()
        result = bt.backtest(trace, api, model)
        if profile:
            profile.disable()
        cpu = time.process_time() - cpu0
        decisions = result.to_json()["run"]["decisions"]
        best = max(best, decisions / cpu)
        print(f"{decisions:,} decisions in {cpu:.2f} CPU s: {decisions / cpu:,.0f} per CPU s")
    scores = hashlib.sha256(json.dumps(result.scores, sort_keys=True, default=str).encode()).hexdigest()[:16]
    print(f"best {best:,.0f} decisions per CPU s; results digest {scores}")
    if profile:
        pstats.Stats(profile).sort_stats("tottime").print_stats(30)


if __name__ == "__main__":
    main()
