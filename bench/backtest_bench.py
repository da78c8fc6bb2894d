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

#: Other settings tried: patches on the workload's own autoscaling section (``predictive`` merged key by
#: key, ``target`` is the metric's; ``None`` removes a key).
SEASONAL = {"forecaster": "seasonal_window", "season": "1d", "seasons": 7, "step": "60s", "horizon": "90s",
            "margin": 0.1, "target": None, "window": None, "deviations": None}
HPA_BEHAVIOR: dict[str, Any] = {"behavior": None}
VARIANTS: dict[str, dict[str, Any]] = {
    "hpa-target-60%": {"target": 0.6 * CAPACITY, "predictive": None, **HPA_BEHAVIOR},
    "seasonal-7d (previous api)": {"predictive": SEASONAL, **HPA_BEHAVIOR},
    "seasonal-7d-level-30m-target-80%": {"target": 0.8 * CAPACITY, "predictive": {**SEASONAL, "level_window": "30m"},
                                         **HPA_BEHAVIOR},
    "recent-30m-2.5sd": {"predictive": {"deviations": 2.5}},
    "recent-30m-3sd-down-60s": {"behavior": {"scale_down": {"stabilization_window": "60s", "policies": [
        {"type": "percent", "value": 100, "period": "15s"}]}}},
    "recent-30m-3sd-down-300s": {"behavior": None},
    "recent-60m-3sd": {"predictive": {"window": "60m"}},
}
#: ``--frontier``: the workload's policy with more or fewer deviations (cost against under-provisioning).
FRONTIER = {f"recent-30m-{d:g}sd": {"predictive": {"deviations": d}} for d in (2.0, 2.75, 3.25, 3.5, 4.0)}


def variant(spec: WorkloadSpec, patch: dict[str, Any]) -> WorkloadSpec:
    assert spec.autoscaling is not None
    auto = spec.autoscaling.model_dump(mode="json", exclude_defaults=True)
    if "target" in patch:
        auto["metrics"][0]["target"] = patch["target"]
    for key, value in patch.items():
        if key == "target":
            continue
        if value is None:
            auto.pop(key, None)
        elif key == "predictive":
            merged = {**auto.get("predictive", {}), **value}
            auto["predictive"] = {k: v for k, v in merged.items() if v is not None}
        else:
            auto[key] = value
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


def foresight_bound(grid: Any, up_limit_min: float, block_s: float) -> float:
    """A lower bound on the replica-hours of any policy that holds one count per ``block_s`` and leaves at
    most ``up_limit_min`` under-provisioned minutes, even when told each coming block's demand (its
    distribution, not the order): per block, keeping ``k`` cells unserved costs the (k+1)-th largest need
    for the whole block. The Lagrangian sweep gives the convex frontier; the bound interpolates it."""
    import numpy as np

    cells = max(1, round(block_s / grid.step_s))
    need = np.maximum(grid.need, 1).astype(np.float64)
    full = len(need) // cells * cells
    parts = [-np.sort(-need[:full].reshape(-1, cells), axis=1)]
    if full < len(need):
        parts.append(-np.sort(-need[full:])[None, :])
    frontier = []
    for lam in np.geomspace(1e-3, 1e6, 600):
        cost = unserved = 0.0
        for blocks in parts:
            width = blocks.shape[1]
            j = (width * blocks + lam * np.arange(width)).argmin(axis=1)
            cost += float(blocks[np.arange(len(blocks)), j].sum()) * width
            unserved += float(j.sum())
        frontier.append((unserved * grid.step_s / 60, cost * grid.step_s / 3600))
    within = [p for p in frontier if p[0] <= up_limit_min]
    beyond = [p for p in frontier if p[0] > up_limit_min]
    lo = min(within, key=lambda p: p[1])
    if not beyond:
        return lo[1]
    hi = min(beyond, key=lambda p: p[0])
    return lo[1] + (up_limit_min - lo[0]) / (hi[0] - lo[0]) * (hi[1] - lo[1])


def goal(p: dict[str, Any], hpa: dict[str, Any]) -> str:
    """'yes' (all of the goal), 'beats hpa' (half its under-provisioned minutes at no more
    replica-hours, but above 1.3x the oracle) or 'no'."""
    fewer = p["under_provisioned_minutes"] <= 0.5 * hpa["under_provisioned_minutes"]
    beats = fewer and p["replica_hours"] <= hpa["replica_hours"]
    if beats:
        return "yes" if p["replica_hours_vs_oracle"] <= 1.3 else "beats hpa, > 1.3x oracle"
    return "no"


def clairvoyant(result: bt.Backtest, window_s: float = 900.0) -> list[dict[str, Any]]:
    """What knowing the demand's level and noise buys: a policy told the true mean and standard
    deviation of the demand over the ``window_s`` centred on each moment (half of it in the future),
    without lag or start-up, holding ``ceil((mean + z x sd) / capacity)``. The under-provisioning left
    is the demand's own noise, which no forecast of its level removes."""
    import numpy as np

    grid, capacity = result.grid, result.model.capacity
    width = max(1, round(window_s / grid.step_s))
    kernel = np.ones(width) / width
    mean = np.convolve(grid.rate, kernel, mode="same")
    sd = np.sqrt(np.maximum(np.convolve(grid.rate**2, kernel, mode="same") - mean**2, 0.0))
    oracle = float(result.runs[bt.ORACLE].provisioned.sum())
    rows = []
    for z in (2.0, 2.5, 3.0):
        replicas = np.maximum(np.ceil((mean + z * sd) / capacity - 1e-9), 1)
        rows.append({
            "z": z,
            "under_provisioned_minutes": round(float((replicas < grid.need).sum()) * grid.step_s / 60, 2),
            "replica_hours_vs_oracle": round(float(replicas.sum()) / oracle, 3),
        })
    return rows


def run(folder: Path, days: float | None, frontier: bool = False) -> dict[str, Any]:
    api = get_workload(ROOT / "workloads", "api")
    policies = bt.policies_for(api)
    policies.update({name: variant(api, patch) for name, patch in VARIANTS.items()})
    if frontier:
        policies.update({name: variant(api, patch) for name, patch in FRONTIER.items()})
    out: dict[str, Any] = {"capacity": CAPACITY, "decide_alone_per_cpu_s": round(decide_alone(api)), "traces": {}}
    for key, (file, startup) in TRACES.items():
        trace = bt.load_csv(folder / file)
        if days is not None and key == "nasa":
            trace = bt.Trace(trace.name, trace.interval_s, trace.requests[: round(days * 1440)])
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
            "clairvoyant_15min": clairvoyant(result),
            "foresight_bounds": [
                {"block_s": b, "replica_hours_vs_oracle": round(
                    foresight_bound(result.grid, hpa["under_provisioned_minutes"] / 2, b)
                    * hpa["replica_hours_vs_oracle"] / hpa["replica_hours"], 3)}
                for b in (60, 300, 900)
            ],
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
            mark = t["goal_met"].get(name, "")
            lines.append(
                f"| {key} | {name} | {p['under_provisioned_minutes']} | {p['unserved_pct']} | {p['replica_hours']} "
                f"| {p['replica_hours_vs_oracle']} | {p['scale_actions']} | {mark} |"
            )
        lines.append(f"| {key} | (speed) | {t['decisions']:,} decisions | {t['decisions_per_cpu_s']:,}/CPU s | | | | |")
        for c in t["clairvoyant_15min"]:
            lines.append(
                f"| {key} | told the coming 15 min mean + {c['z']} sd | {c['under_provisioned_minutes']} | | "
                f"| {c['replica_hours_vs_oracle']} | | |"
            )
        for b in t["foresight_bounds"]:
            lines.append(
                f"| {key} | bound: told each {b['block_s']} s ahead, one count per block | half of hpa's | | "
                f"| >= {b['replica_hours_vs_oracle']} | | |"
            )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--traces", type=Path, default=ROOT.parent / "shared" / "traces")
    parser.add_argument("--quick", action="store_true", help="first 7 days of NASA only")
    parser.add_argument("--days", type=float, default=None, help="first DAYS of NASA only")
    parser.add_argument("--frontier", action="store_true", help="also the workload's policy at 2-4 deviations")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    out = run(args.traces, 7.0 if args.quick else args.days, args.frontier)
    print(json.dumps(out, indent=2) if args.json else table(out))


if __name__ == "__main__":
    main()
