"""``backtest``: a workload's policy vs the HPA and the oracle on recorded demand, as Prefect artifacts."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Annotated, Any

from prefect import flow
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from pydantic import Field

from flows.params import WorkloadName
from scalewise import backtest as bt
from scalewise.settings import workloads_path
from scalewise.spec import get_workload

COLUMNS = ("under_provisioned_minutes", "unserved_pct", "replica_hours", "replica_hours_vs_oracle", "scale_actions")


@flow(name="backtest", flow_run_name="backtest-{workload}", validate_parameters=True)
def backtest(
    workload: WorkloadName, trace: str | None = None, prometheus_query: str | None = None,
    lookback_s: Annotated[float, Field(gt=0, le=90 * 86_400)] = 7 * 86_400.0,
    step_s: Annotated[float, Field(gt=0, le=3600)] = 60.0, policy: str | None = None,
    capacity: Annotated[float, Field(gt=0)] = 1.0, startup_s: Annotated[float, Field(ge=0, le=86_400)] = 60.0,
    interval_s: Annotated[float, Field(gt=0, le=3600)] = 15.0,
) -> dict[str, Any]:
    """Backtest a workload's autoscaling policy on recorded demand against the HPA defaults and the oracle.

    Args:
        workload: Workload whose replica bounds and autoscaling section are replayed.
        trace: Path of a CSV trace 'timestamp_s,requests' (or use prometheus_query).
        prometheus_query: PromQL giving the demand in requests/s, read over the last lookback_s.
        lookback_s: Past window of the Prometheus range query, seconds.
        step_s: Step of the Prometheus range query, seconds.
        policy: Path of a YAML autoscaling block used instead of the workload's own.
        capacity: Requests/s one ready replica serves.
        startup_s: Seconds from a scale-up decision to a ready replica.
        interval_s: Seconds between autoscaler decisions.
    """
    spec = get_workload(workloads_path(), workload)
    chosen = bt.policies_for(spec, bt.load_policy(policy) if policy else None)
    end, model = datetime.now(UTC), bt.ServiceModel(capacity=capacity, startup_s=startup_s, interval_s=interval_s)
    demand = bt.load_demand(trace, prometheus_query, end - timedelta(seconds=lookback_s), end, step_s)
    out = bt.backtest(demand, spec, model, chosen).to_json()
    key, hpa, own = f"scalewise-backtest-{workload}", out["policies"][bt.HPA], out["policies"][bt.WORKLOAD]
    create_table_artifact([{"policy": name, **{c: p[c] for c in COLUMNS}} for name, p in out["policies"].items()],
                          key=key, description=f"backtest of {workload} on {demand.name}")
    create_markdown_artifact(
        f"# Backtest of `{workload}` on `{demand.name}`\n\nmodel `{out['model']}`\n\n- under-provisioned minutes: "
        f"workload {own['under_provisioned_minutes']}, hpa {hpa['under_provisioned_minutes']}\n- replica-hours: "
        f"workload {own['replica_hours']} ({own['replica_hours_vs_oracle']}x oracle), hpa {hpa['replica_hours']}\n"
        f"- workload decisions by reason: {own['reasons']}", key=key, description="backtest summary")
    return out
