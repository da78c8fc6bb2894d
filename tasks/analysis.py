"""Analysis tasks: one task run per measurement, the measurements as a table artifact, and the loop
that drives a run on its schedule (the rules are pure: :mod:`scalewise.policy.analysis`)."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from prefect import get_run_logger, task
from prefect.artifacts import create_table_artifact
from prefect.cache_policies import NO_CACHE

from scalewise import autoscaler
from scalewise.audit import artifact_key
from scalewise.metrics.analysis_query import measure
from scalewise.metrics.base import WorkloadRef, utc_now
from scalewise.policy.analysis import (
    AnalysisMetric,
    AnalysisRun,
    AnalysisSpec,
    Measurement,
    next_due,
    query_error,
    start,
    step,
    summary_rows,
    terminate,
)

ANALYSIS_ARTIFACT_PREFIX = "scalewise-analysis-"


def analysis_artifact_key(workload: str) -> str:
    return ANALYSIS_ARTIFACT_PREFIX + artifact_key(workload).removeprefix("scalewise-action-")


@task(cache_policy=NO_CACHE, task_run_name="measure-{metric.name}")
def measure_metric(metric: AnalysisMetric, workload: WorkloadRef) -> Measurement:
    """Query one metric (SCALEWISE_PROMETHEUS_*) and judge it. Never raises and is never retried: a
    failed query is a measurement in phase Error, which the analysis counts (consecutive_error_limit)."""
    started = utc_now()
    try:
        source = autoscaler.prometheus_from_env()
    except Exception as exc:
        return query_error(metric, f"Prometheus source: {exc}", started, utc_now())
    if source is None:
        return query_error(
            metric, "no Prometheus configured: set SCALEWISE_PROMETHEUS_URL", started, utc_now()
        )
    try:
        found = measure(source, metric, workload)
    finally:
        source.close()
    get_run_logger().info(
        "%s = %s: %s%s", metric.name, found.value or "-", found.phase, f" ({found.message})" if found.message else ""
    )
    return found


@task(cache_policy=NO_CACHE, retries=2, retry_delay_seconds=1)
def publish_analysis(workload: str, run: AnalysisRun) -> None:
    """Every measurement so far as a table artifact (one new version per update, in the run's Artifacts tab)."""
    rows: list[dict[str, Any]] = summary_rows(run) or [
        {"time": run.started_at.isoformat(timespec="seconds"), "metric": "-", "value": "", "phase": "Pending",
         "message": "no measurement yet"}
    ]
    create_table_artifact(
        table=rows,
        key=analysis_artifact_key(workload),
        description=f"analysis of {workload}: {run.phase}" + (f" ({run.message})" if run.message else ""),
    )


def run_analysis(
    spec: AnalysisSpec,
    workload: WorkloadRef,
    *,
    duration_s: float,
    on_update: Callable[[AnalysisRun], object] | None = None,
    sleep: Callable[[float], None] = time.sleep,
) -> AnalysisRun:
    """Measure ``spec`` on its schedule until the run completes.

    A run whose metrics all have a count ends by itself; metrics with an interval and no count run
    until ``duration_s`` has passed, then the run is terminated (Argo Rollouts' semantics: their
    phase is Successful unless a limit was breached). ``on_update`` sees the run after each round."""
    run = start(spec, utc_now())
    deadline = time.monotonic() + duration_s
    while True:
        before = len(run.measurements)
        run = step(run, utc_now(), lambda metric: measure_metric(metric, workload))
        if on_update is not None and len(run.measurements) != before:
            on_update(run)
        if run.phase.completed:
            return run
        due_at = next_due(run)
        left = deadline - time.monotonic()
        if due_at is None or left <= 0:
            run = terminate(run)
            if on_update is not None:
                on_update(run)
            return run
        sleep(max(0.0, min(left, (due_at - utc_now()).total_seconds())))
