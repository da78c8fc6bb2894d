"""Scores of a simulated schedule against the demand (all integrals exact on the simulation grid).

Per policy, with ``need_t = ceil(demand_t / capacity)`` replicas and ``ready_t`` / ``provisioned_t``
the policy's ready and provisioned (ready + starting, i.e. paid) replicas:

* ``under_provisioned_minutes`` / ``under_provisioned_pct``: time with ``ready_t < need_t``;
* ``unserved_pct``: ``sum max(demand_t - ready_t * capacity, 0) / sum demand_t`` (requests);
* ``replica_hours``: ``sum provisioned_t * dt / 3600``; ``replica_hours_vs_oracle``: its ratio to the oracle's;
* ``scale_actions``: changes of the provisioned count.

SPEC Research Group elasticity metrics (Herbst et al., "Ready for Rain? A View from SPEC Research on
the Future of Cloud Metrics", SPEC-RG-2016-01; formalised in Herbst et al., "Quantifying Cloud
Performance and Dependability", ACM TOMPECS 2018), with demand ``d_t = need_t``, supply
``s_t = ready_t`` and ``T`` the trace duration, in percent:

* under-provisioning accuracy ``theta_U = 100/T * sum max(d_t - s_t, 0) / max(d_t, 1) * dt``;
* over-provisioning accuracy ``theta_O = 100/T * sum max(s_t - d_t, 0) / max(d_t, 1) * dt``
  (the paper divides by ``d_t``; ``max(d_t, 1)`` keeps idle periods, where ``d_t = 0``, finite);
* under/over-provisioning timeshare ``tau_U = 100/T * sum [d_t > s_t] * dt``,
  ``tau_O = 100/T * sum [s_t > d_t] * dt``;
* instability ``upsilon = 100/(T - dt) * sum min(|sgn(s_t - s_{t-1}) - sgn(d_t - d_{t-1})|, 1) * dt``:
  the share of time in which supply and demand do not move in the same direction;
* jitter ``(adaptations of supply - changes of demand) / T``, per hour (negative: supply too inert).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from scalewise.backtest.simulate import Grid, Run


def score(run: Run, grid: Grid, capacity: float, oracle_hours: float | None) -> dict[str, Any]:
    step = grid.step_s
    need, ready, prov, rate = grid.need, run.ready, run.provisioned, grid.rate
    cells = len(need)
    total_s = cells * step
    under = ready < need
    over = ready > need
    demand = float(rate.sum()) * step
    unserved = float(np.maximum(rate - ready * capacity, 0.0).sum()) * step
    hours = float(prov.sum()) * step / 3600
    denom = np.maximum(need, 1)
    d_need, d_ready = np.sign(np.diff(need)), np.sign(np.diff(ready))
    unstable = np.minimum(np.abs(d_ready - d_need), 1)
    supply_changes = int(np.count_nonzero(np.diff(ready)))
    demand_changes = int(np.count_nonzero(np.diff(need)))
    return {
        "under_provisioned_minutes": round(float(under.sum()) * step / 60, 2),
        "under_provisioned_pct": round(100 * float(under.mean()), 3),
        "unserved_pct": round(100 * unserved / demand, 4) if demand > 0 else 0.0,
        "replica_hours": round(hours, 2),
        "replica_hours_vs_oracle": round(hours / oracle_hours, 3) if oracle_hours else None,
        "scale_actions": run.actions,
        "max_replicas": int(prov.max()),
        "mean_replicas": round(float(prov.mean()), 3),
        "decisions": run.decisions,
        "spec": {
            "under_accuracy_pct": round(100 * float((np.maximum(need - ready, 0) / denom).mean()), 3),
            "over_accuracy_pct": round(100 * float((np.maximum(ready - need, 0) / denom).mean()), 3),
            "under_timeshare_pct": round(100 * float(under.mean()), 3),
            "over_timeshare_pct": round(100 * float(over.mean()), 3),
            "instability_pct": round(100 * float(unstable.mean()), 3) if cells > 1 else 0.0,
            "jitter_per_hour": round((supply_changes - demand_changes) / (total_s / 3600), 3),
        },
        "reasons": dict(sorted(run.reasons.items(), key=lambda kv: (-kv[1], kv[0]))),
        **({"forecast_steps": dict(sorted(run.forecast_steps.items()))} if run.forecast_steps else {}),
    }
