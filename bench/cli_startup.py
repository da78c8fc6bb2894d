"""CLI start-up: wall time of ``scalewise --help`` and ``scalewise status``, median of ``--rounds`` warm runs
(one untimed run first), plus the CPU time of the imports each pays (``python -X importtime``, top modules).

Usage: .venv/bin/python bench/cli_startup.py [--rounds 5] [--workloads DIR]
``status`` reads the workloads in ``--workloads`` (default: the repository's ./workloads) from their
orchestrators (dockerd must be running; nothing is changed). Prints JSON. No assertions on timing.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench._common import loadavg  # noqa: E402

SCALEWISE = str(Path(sys.executable).with_name("scalewise"))
COMMANDS = {"help": ["--help"], "status": ["status"]}


def timed(args: list[str], env: dict[str, str]) -> tuple[float, int]:
    t0 = time.perf_counter()
    proc = subprocess.run([SCALEWISE, *args], cwd=ROOT, env=env, capture_output=True, timeout=120)
    return time.perf_counter() - t0, proc.returncode


def import_costs(args: list[str], env: dict[str, str], top: int = 8) -> dict[str, Any]:
    """Cumulative import time (ms) of the heaviest top-level imports of one run of the command."""
    code = f"import sys; sys.argv = ['scalewise', *{args!r}]; from scalewise.cli import main; main()"
    proc = subprocess.run([sys.executable, "-X", "importtime", "-c", code], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=120)
    rows: list[tuple[int, str]] = []
    total = 0
    for line in proc.stderr.splitlines():
        if not line.startswith("import time:") or "cumulative" in line:
            continue
        _, cumulative, raw = line.removeprefix("import time:").split("|")
        if raw[1:2] != " ":  # a top-level import (nested ones are indented further)
            rows.append((int(cumulative), raw.strip()))
            total += int(cumulative)
    rows.sort(reverse=True)
    return {"imports_ms": round(total / 1000), "top_ms": {name: round(us / 1000) for us, name in rows[:top]}}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--workloads", type=Path, default=ROOT / "workloads")
    args = parser.parse_args()
    if args.rounds < 1:
        parser.error("--rounds: at least 1")
    env = dict(os.environ, SCALEWISE_WORKLOADS=str(args.workloads.resolve()))
    out: dict[str, Any] = {"rounds": args.rounds, "cpus": os.cpu_count(), "load_avg_before": loadavg()}
    for label, cmd in COMMANDS.items():
        timed(cmd, env)  # warm: file cache, bytecode
        samples = [timed(cmd, env) for _ in range(args.rounds)]
        out[label] = {
            "command": f"scalewise {' '.join(cmd)}", "median_s": round(statistics.median(s for s, _ in samples), 3),
            "samples_s": [round(s, 3) for s, _ in samples], "exit_codes": sorted({rc for _, rc in samples}),
            **import_costs(cmd, env),
        }
    out["load_avg_after"] = loadavg()
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
