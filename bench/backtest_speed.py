"""Backtest speed alone: decisions per CPU second of a whole backtest (``hpa`` + the ``api`` workload).

Run from the repository root: ``.venv/bin/python bench/backtest_speed.py [--trace nasa|azure-code|
azure-conv|all] [--days 3] [--repeat 3] [--profile]``. The first ``--days`` of the NASA-HTTP trace
(``../shared/traces``, see bench/backtest_bench.py for the traces' attribution and start-ups),
capacity 0.23. CPU time, so a loaded machine reads less wrong; the best of ``--repeat`` runs is
reported, with a digest of the scores (equal digests: the same results), and ``decide()`` alone
(bench/backtest_bench.py's ``decide_alone``, best of ``--repeat``).
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

sys.path.insert(0, str(ROOT / "bench"))

from backtest_bench import TRACES, decide_alone  # noqa: E402

from scalewise import backtest as bt  # noqa: E402
from scalewise.spec import WorkloadSpec, get_workload  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--traces", type=Path, default=ROOT.parent / "shared" / "traces")
    parser.add_argument("--trace", choices=[*TRACES, "all"], default="nasa")
    parser.add_argument("--days", type=float, default=3.0, help="of NASA-HTTP (0: the whole trace)")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--profile", action="store_true", help="one run under cProfile, top 30 by own time")
    args = parser.parse_args()
    api = get_workload(ROOT / "workloads", "api")
    alone = max(decide_alone(api) for _ in range(args.repeat))
    print(f"decide() alone: {alone:,.0f} decisions per CPU s")
    for key in TRACES if args.trace == "all" else [args.trace]:
        file, startup = TRACES[key]
        trace = bt.load_csv(args.traces / file)
        if key == "nasa" and args.days > 0:
            trace = bt.Trace(trace.name, trace.interval_s, trace.requests[: int(args.days * 1440)])
        print(f"{key}: {file}, {len(trace.requests):,} rows, start-up {startup:g} s")
        speed(trace, api, bt.ServiceModel(capacity=0.23, startup_s=startup), args.repeat, args.profile)


def speed(trace: bt.Trace, api: WorkloadSpec, model: bt.ServiceModel, repeat: int, profiling: bool) -> None:
    best, profile = 0.0, cProfile.Profile() if profiling else None
    for _ in range(1 if profile else repeat):
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
