"""Backtest speed and the goal table of issue 8 on the shared traces.

Run from the repository root: ``.venv/bin/python bench/backtest_bench.py [--traces ../shared/traces]
[--quick] [--json]``. Prints, per trace, under-provisioned minutes, unserved %, replica-hours and the
ratio to the oracle for the oracle, the HPA defaults (same target), the ``api`` workload's policy and a
few other settings, and whether the workload's best policy meets the goal: >= 50% fewer
under-provisioned minutes than ``hpa`` at no more replica-hours, and replica-hours within 1.3x the
oracle. Speed: decisions/s of the whole simulator (CPU time, so a loaded machine reads less wrong)
and of ``decide()`` alone on the same workload.

Model (issue 8 "Why"): each replica serves ``capacity`` requests/s (0.23, the README's example),
target 70% of it (api's 0.161 req/s), the metric is the demand over 60 s seen one 15 s scrape late,
decisions every 15 s, start-up 60 s for per-minute traces and 10 s for per-second ones.

Traces (read from ``../shared/traces``, not shipped with scalewise):

* NASA-HTTP: NASA Kennedy Space Center WWW server log, July 1995, Internet Traffic Archive (freely
  redistributable). M. Arlitt and C. Williamson, "Web Server Workload Characterization: The Search
  for Invariants", SIGMETRICS 1996.
* Azure LLM inference trace 2023 (github.com/Azure/AzurePublicDataset, ``AzureLLMInferenceTrace_code``
  and ``_conv``), CC-BY 4.0. Patel et al., "Splitwise: Efficient generative LLM inference using phase
  splitting", ISCA 2024.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from scalewise import backtest as bt  # noqa: E402
from scalewise.spec import WorkloadSpec, get_workload  # noqa: E402

TRACES = {  # file, start-up seconds
    "nasa": ("nasa_http_19950701-19950728_per_min.csv", 60.0),
    "azure-code": ("azure_llm_inference_2023_code_per_sec.csv", 10.0),
    "azure-conv": ("azure_llm_inference_2023_conv_per_sec.csv", 10.0),
}
CAPACITY = 0.23

#: Other settings tried (autoscaling overrides on top of the workload's own section).
VARIANTS: dict[str, dict[str, Any]] = {
    "hpa-target-60%": {"target": 0.6 * CAPACITY},
    "predictive-target-80%": {
        "target": 0.8 * CAPACITY,
        "predictive": {"metric": "rps", "season": "1d", "seasons": 7, "step": "60s", "horizon": "90s", "margin": 0.1},
    },
    "predictive-level-30m-target-80%": {
        "target": 0.8 * CAPACITY,
        "predictive": {"metric": "rps", "season": "1d", "seasons": 7, "step": "60s", "horizon": "90s", "margin": 0.1,
                       "level_window": "30m"},
    },
}


def variant(spec: WorkloadSpec, patch: dict[str, Any]) -> WorkloadSpec:
    assert spec.autoscaling is not None
    auto = bt.hpa_policy(spec.autoscaling).model_dump(mode="json")
    if "target" in patch:
        auto["metrics"][0]["target"] = patch["target"]
    auto.update({k: v for k, v in patch.items() if k != "target"})
    return spec.model_copy(update={"autoscaling": type(spec.autoscaling).model_validate(auto)})


def decide_alone(spec: WorkloadSpec, n: int = 5000) -> float:
    """decide() per CPU second on a warm state (the floor under the simulator's own overhead)."""
    from datetime import UTC, datetime, timedelta

    from scalewise.policy.decide import decide
    from scalewise.policy.readings import MetricReading

    assert spec.autoscaling is not None
    auto, name = spec.autoscaling, spec.autoscaling.metrics[0].name
    t0, state, current = datetime(2026, 1, 5, tzinfo=UTC), None, 4
    cpu0 = time.process_time()
    for i in range(n):
        now = t0 + timedelta(seconds=15 * i)
        reading = MetricReading.success(name, now, 0.5 + (i % 40) * 0.02)
        d = decide(auto, (1, 400), [reading], current, current, state, now)
        state, current = d.state, d.desired
    return n / (time.process_time() - cpu0)


def clairvoyant(result: bt.Backtest, window_s: float = 900.0) -> list[dict[str, Any]]:
    """What knowing the future buys: a policy told the true mean demand of the next ``window_s``
    (centred), without lag or start-up, holding ``headroom`` x that mean. The under-provisioning left
    is the trace's own noise at the grid's resolution, which no forecast can remove."""
    import numpy as np

    grid, capacity = result.grid, result.model.capacity
    width = max(1, round(window_s / grid.step_s))
    mean = np.convolve(grid.rate, np.ones(width) / width, mode="same")
    oracle = float(result.runs[bt.ORACLE].provisioned.sum())
    rows = []
    for headroom in (1.2, 1.43, 1.6):
        replicas = np.maximum(np.ceil(mean * headroom / capacity - 1e-9), 1)
        rows.append({
            "headroom": headroom,
            "under_provisioned_minutes": round(float((replicas < grid.need).sum()) * grid.step_s / 60, 2),
            "replica_hours_vs_oracle": round(float(replicas.sum()) / oracle, 3),
        })
    return rows


def goal(p: dict[str, Any], hpa: dict[str, Any]) -> bool:
    fewer = p["under_provisioned_minutes"] <= 0.5 * hpa["under_provisioned_minutes"]
    return fewer and p["replica_hours"] <= hpa["replica_hours"] and p["replica_hours_vs_oracle"] <= 1.3


def run(folder: Path, quick: bool) -> dict[str, Any]:
    api = get_workload(ROOT / "workloads", "api")
    policies = bt.policies_for(api)
    policies.update({name: variant(api, patch) for name, patch in VARIANTS.items()})
    out: dict[str, Any] = {"capacity": CAPACITY, "decide_alone_per_cpu_s": round(decide_alone(api)), "traces": {}}
    for key, (file, startup) in TRACES.items():
        trace = bt.load_csv(folder / file)
        if quick:
            trace = bt.Trace(trace.name, trace.interval_s, trace.requests[: 7 * 1440])
        cpu0 = time.process_time()
        result = bt.backtest(trace, api, bt.ServiceModel(capacity=CAPACITY, startup_s=startup), policies)
        cpu = time.process_time() - cpu0
        scores = result.scores
        hpa = scores[bt.HPA]
        tried = {n: goal(p, hpa) for n, p in scores.items() if n not in (bt.HPA, bt.ORACLE)}
        out["traces"][key] = {
            "file": file, "startup_s": startup,
            "decisions": result.to_json()["run"]["decisions"],
            "decisions_per_cpu_s": round(result.to_json()["run"]["decisions"] / cpu),
            "policies": {n: {k: p[k] for k in (
                "under_provisioned_minutes", "unserved_pct", "replica_hours", "replica_hours_vs_oracle",
                "scale_actions")} for n, p in scores.items()},
            "goal_met": tried,
            "clairvoyant_15min_mean": clairvoyant(result),
        }
    return out


def table(out: dict[str, Any]) -> str:
    lines = [
        f"decide() alone: {out['decide_alone_per_cpu_s']:,} decisions per CPU second",
        "",
        "| trace | policy | under-prov. min | unserved % | replica-h | x oracle | actions | goal |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for key, t in out["traces"].items():
        for name, p in t["policies"].items():
            mark = {True: "yes", False: "no"}.get(t["goal_met"].get(name), "")  # type: ignore[call-overload]
            lines.append(
                f"| {key} | {name} | {p['under_provisioned_minutes']} | {p['unserved_pct']} | {p['replica_hours']} "
                f"| {p['replica_hours_vs_oracle']} | {p['scale_actions']} | {mark} |"
            )
        lines.append(f"| {key} | (speed) | {t['decisions']:,} decisions | {t['decisions_per_cpu_s']:,}/CPU s | | | | |")
        for c in t["clairvoyant_15min_mean"]:
            lines.append(
                f"| {key} | clairvoyant mean x{c['headroom']} | {c['under_provisioned_minutes']} | | "
                f"| {c['replica_hours_vs_oracle']} | | |"
            )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--traces", type=Path, default=ROOT.parent / "shared" / "traces")
    parser.add_argument("--quick", action="store_true", help="first 7 days of NASA only")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    out = run(args.traces, args.quick)
    print(json.dumps(out, indent=2) if args.json else table(out))


if __name__ == "__main__":
    main()
