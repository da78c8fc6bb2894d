"""Analysis speed: condition evaluations/s and verdict rounds/s (pure code), and, with a Prometheus,
the latency of one measurement (query + judge).

Run from the repository root: ``.venv/bin/python bench/analysis_bench.py [--prometheus URL --query
PROMQL]``. CPU time for the pure parts (a loaded machine reads less wrong); wall time for the query.
"""

from __future__ import annotations

import argparse
import statistics
import time
from datetime import UTC, datetime, timedelta

from scalewise.metrics.base import WorkloadRef
from scalewise.policy import expr
from scalewise.policy.analysis import AnalysisMetric, AnalysisSpec, Measurement, Phase, record, start

CONDITIONS = [
    "result[0] < 0.05",
    "len(result) == 0 || result[0] >= 0.95",
    "all(result, {# < 0.05}) && !isNaN(result[0])",
]


def bench_conditions(n: int) -> None:
    for text in CONDITIONS:
        expr.parse.cache_clear()
        t0 = time.process_time()
        expr.parse(text)
        parse_ms = (time.process_time() - t0) * 1000
        t0 = time.process_time()
        for i in range(n):
            expr.evaluate_condition(text, [0.01 * (i % 10), 0.02])
        rate = n / (time.process_time() - t0)
        print(f"condition {text!r}: first parse {parse_ms:.2f} ms CPU, {rate:,.0f} evaluations/s")


def bench_record(n: int) -> None:
    spec = AnalysisSpec(metrics=[
        AnalysisMetric(name=f"m{i}", query='up{job="{workload}"}', interval=1, count=n, failure_limit=-1)
        for i in range(3)
    ])
    t = datetime(2026, 1, 1, tzinfo=UTC)
    run = start(spec, t)
    t0 = time.process_time()
    for i in range(n):
        for metric in spec.metrics:
            at = t + timedelta(seconds=i)
            run = record(run, Measurement(metric=metric.name, phase=Phase.SUCCESSFUL, started_at=at, finished_at=at))
    took = time.process_time() - t0
    print(f"record+assess: {3 * n / took:,.0f} measurements/s over {3 * n} measurements (3 metrics), run {run.phase}")


def bench_query(url: str, query: str, n: int) -> None:
    from scalewise.metrics.analysis_query import measure
    from scalewise.metrics.prometheus_source import PrometheusSource

    source = PrometheusSource(url)
    metric = AnalysisMetric(name="q", query=query, success_condition="len(result) >= 0")
    times = []
    for _ in range(n):
        t0 = time.perf_counter()
        found = measure(source, metric, WorkloadRef("web"))
        times.append((time.perf_counter() - t0) * 1000)
    source.close()
    print(f"measurement against {url}: p50 {statistics.median(times):.1f} ms, max {max(times):.1f} ms "
          f"over {n} ({found.phase})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--n", type=int, default=20000)
    parser.add_argument("--prometheus")
    parser.add_argument("--query", default='up{job="{workload}"}')
    args = parser.parse_args()
    bench_conditions(args.n)
    bench_record(min(args.n, 300))
    if args.prometheus:
        bench_query(args.prometheus, args.query, 50)


if __name__ == "__main__":
    main()
