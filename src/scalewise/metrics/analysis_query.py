"""Measurements of analysis metrics: one Prometheus query, judged by the pure analysis rules.

The query template is rendered by the autoscaler's own :func:`render_query` (placeholders only
inside double-quoted label values, values checked against the workload-name rule and escaped). The
answer becomes ``result`` as in Argo Rollouts' Prometheus provider: a scalar is a number, an
instant vector a list of numbers (one per series, NaN kept), a range vector the list of all its
samples. A query that cannot be rendered or answered is a measurement in phase ``Error`` with the
reason; nothing here raises for a failed read.
"""

from __future__ import annotations

from typing import Any

from scalewise.metrics.base import Clock, WorkloadRef, utc_now
from scalewise.metrics.prometheus_source import PrometheusSource, render_query
from scalewise.policy.analysis import AnalysisMetric, Measurement, ResultValue, judge, query_error


def to_result(answer: Any) -> ResultValue:
    """The ``result`` a condition sees; ValueError for an answer that is none of the PromQL types."""
    if isinstance(answer, list) and len(answer) == 2 and not isinstance(answer[0], dict):
        return float(answer[1])  # scalar: [timestamp, "value"]
    if not isinstance(answer, list):
        raise ValueError(f"unexpected result type {type(answer).__name__}")
    values: list[float] = []
    for series in answer:
        if not isinstance(series, dict):
            raise ValueError(f"unexpected series {series!r}"[:200])
        if "value" in series:
            values.append(float(series["value"][1]))
        elif "values" in series:
            values.extend(float(v) for _, v in series["values"])
        else:
            raise ValueError("a series without values")
    return values


def measure(
    source: PrometheusSource, metric: AnalysisMetric, workload: WorkloadRef, clock: Clock = utc_now
) -> Measurement:
    """Query ``metric`` for ``workload`` and judge the answer (never raises for a failed read)."""
    started = clock()
    try:
        promql = render_query(metric.query, workload)
    except ValueError as exc:
        return query_error(metric, f"refused workload reference: {exc}", started, clock())
    try:
        answer = source.query(promql)
    except Exception as exc:  # connection, timeout, HTTP status, unreadable body: an Error measurement
        detail = f"{type(exc).__name__}: {exc}"[:300]
        if "Connection" in type(exc).__name__ or "Max retries" in str(exc):
            detail = f"Prometheus unreachable at {source.url} ({detail[:200]})"
        return query_error(metric, f"query failed: {detail}", started, clock())
    try:
        value = to_result(answer)
    except (TypeError, ValueError) as exc:
        return query_error(metric, f"unreadable answer: {exc}", started, clock())
    return judge(metric, value, started, clock())
