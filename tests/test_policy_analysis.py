"""The analysis verdict with Argo Rollouts' semantics (analysis/analysis.go, utils/evaluate): tables
from its rules and hypothesis properties over measurement sequences. Pure: ``now`` is a parameter."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from scalewise.policy.analysis import (
    ORDER,
    AnalysisMetric,
    AnalysisRun,
    AnalysisSpec,
    Measurement,
    Phase,
    due,
    judge,
    next_due,
    record,
    start,
    step,
    terminate,
    worst,
)

T0 = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)
Q = 'sum(rate(errors{service="{workload}"}[1m]))'
S, F, INC, E = Phase.SUCCESSFUL, Phase.FAILED, Phase.INCONCLUSIVE, Phase.ERROR


def metric(name: str = "err", **kw: Any) -> AnalysisMetric:
    return AnalysisMetric(name=name, query=Q, **kw)


def spec(*metrics: AnalysisMetric, **kw: Any) -> AnalysisSpec:
    return AnalysisSpec(metrics=list(metrics) or [metric()], **kw)


def m(name: str, phase: Phase, at: float = 0.0) -> Measurement:
    t = T0 + timedelta(seconds=at)
    return Measurement(metric=name, phase=phase, started_at=t, finished_at=t)


def feed(run: AnalysisRun, name: str, phases: list[Phase]) -> AnalysisRun:
    for i, phase in enumerate(phases):
        run = record(run, m(name, phase, float(i)))
    return run


# -- one measurement: EvaluateResult ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("success", "failure", "value", "phase"),
    [
        (None, None, [0.5], S),  # no condition: always Successful
        ("result[0] < 0.05", None, [0.01], S),
        ("result[0] < 0.05", None, [0.10], F),  # success only: not success is a failure
        (None, "result[0] > 0.2", [0.10], S),  # failure only: not failure is a success
        (None, "result[0] > 0.2", [0.30], F),
        ("result[0] < 0.05", "result[0] > 0.2", [0.01], S),
        ("result[0] < 0.05", "result[0] > 0.2", [0.10], INC),  # neither: Inconclusive
        ("result[0] < 0.05", "result[0] > 0.2", [0.30], F),
        ("result[0] < 0.5", "result[0] > 0.2", [0.30], F),  # both hold: the failure wins
        ("result[0] < 0.05", None, [], E),  # no data: the condition cannot be evaluated
        ("len(result) == 0 || result[0] < 0.05", None, [], S),
        ("result[0] < 0.05", None, [float("nan")], F),  # NaN compares false, as in Go
    ],
)
def test_judge(success: str | None, failure: str | None, value: Any, phase: Phase) -> None:
    got = judge(metric(success_condition=success, failure_condition=failure), value, T0, T0)
    assert got.phase is phase
    if phase is E:
        assert "could not evaluate success_condition" in got.message and "no data" in got.message


# -- one metric: counters, limits, count -----------------------------------------------------------


@pytest.mark.parametrize(
    ("kw", "phases", "expected"),
    [
        ({}, [S], S),  # no interval: count 1
        ({}, [F], F),  # failure_limit 0: one failure fails
        ({}, [INC], INC),  # inconclusive_limit 0
        ({"interval": 1, "count": 3}, [S, S], Phase.RUNNING),
        ({"interval": 1, "count": 3}, [S, S, S], S),
        ({"interval": 1, "count": 3, "failure_limit": 1}, [F, S, S], S),  # failed (1) not > 1
        ({"interval": 1, "count": 5, "failure_limit": 1}, [F, S, F], F),  # failed (2) > 1, before count
        ({"interval": 1, "count": 3, "failure_limit": -1}, [F, F, F], S),  # -1: never fails
        ({"interval": 1, "count": 3, "inconclusive_limit": 1}, [INC, S, S], S),
        ({"interval": 1, "count": 3, "inconclusive_limit": 1}, [INC, INC], INC),
        ({"interval": 1, "count": 3}, [E, E, E, E], Phase.RUNNING),  # 4 consecutive errors: not > 4
        ({"interval": 1, "count": 3}, [E, E, E, E, E], E),  # 5 > consecutive_error_limit 4
        ({"interval": 1, "count": 3, "consecutive_error_limit": 1}, [E, S, E, S, E, S], S),  # reset by a success
        ({"interval": 1, "count": 3, "consecutive_error_limit": 0}, [E], E),
        ({"interval": 1}, [S] * 50, Phase.RUNNING),  # interval without count: until terminated
        # several limits breached at once: the last checked wins (failed, inconclusive, errors)
        ({"interval": 1, "count": 9, "failure_limit": 0, "inconclusive_limit": 0}, [INC, F], INC),
        ({"interval": 1, "count": 9, "failure_limit": 0, "consecutive_error_limit": 0}, [F, E], F),
    ],
)
def test_metric_phase(kw: dict[str, Any], phases: list[Phase], expected: Phase) -> None:
    run = start(spec(metric(**kw)), T0)
    for i, phase in enumerate(phases):
        if run.phase.completed:
            break
        run = record(run, m("err", phase, float(i)))
    result = run.result("err")
    assert result is not None and result.phase is expected
    assert run.phase is (expected if expected.completed else Phase.RUNNING)


def test_counters_follow_argo() -> None:
    run = feed(start(spec(metric(interval=1, count=9, failure_limit=5, inconclusive_limit=5)), T0),
               "err", [S, E, E, F, INC, E, S])
    r = run.result("err")
    assert r is not None
    assert (r.count, r.successful, r.failed, r.inconclusive, r.error, r.consecutive_error) == (4, 2, 1, 1, 3, 0)
    assert len(r.measurements) == 7


def test_failed_message_names_the_limit_and_metric() -> None:
    run = feed(start(spec(metric(interval=1, count=5, failure_limit=1)), T0), "err", [F, F])
    assert run.phase is F
    assert run.message == "metric 'err' assessed Failed due to failed (2) > failure_limit (1)"


# -- the run: worst metric, dry run, termination ---------------------------------------------------


def test_order_is_argos() -> None:
    assert [str(p) for p in ORDER] == ["Successful", "Running", "Pending", "Inconclusive", "Error", "Failed"]
    assert worst([S, INC, E]) is E and worst([S, F, E]) is F and worst([]) is None


def test_run_is_the_worst_metric_and_a_bad_metric_terminates_the_rest() -> None:
    two = spec(metric("a", interval=1, count=3), metric("b", interval=1, count=3))
    run = feed(start(two, T0), "a", [S])
    assert run.phase is Phase.RUNNING
    run = record(run, m("b", INC))  # b Inconclusive: the run is terminating, a completes Successful
    assert run.phase is INC
    assert [r.phase for r in run.results] == [S, INC]
    assert due(run, T0 + timedelta(hours=1)) == [] and next_due(run) is None


def test_dry_run_metric_is_recorded_but_never_decides() -> None:
    two = spec(metric("a", interval=1, count=2), metric("shadow", interval=1, count=2, dry_run=True))
    run = feed(start(two, T0), "shadow", [F])
    shadow = run.result("shadow")
    assert shadow is not None and shadow.phase is F and shadow.dry_run
    assert run.phase is Phase.RUNNING  # a dry-run failure does not terminate the run
    assert [x.name for x in due(run, T0 + timedelta(seconds=5))] == ["a"]
    run = feed(run, "a", [S, S])
    assert run.phase is S


def test_only_dry_run_metrics_succeed() -> None:
    run = feed(start(spec(metric("shadow", dry_run=True)), T0), "shadow", [F])
    assert run.phase is S


def test_terminate_completes_unbounded_metrics_as_successful() -> None:
    run = feed(start(spec(metric(interval=1)), T0), "err", [S, S])
    assert run.phase is Phase.RUNNING
    done = terminate(run)
    assert done.phase is S and done.message == "run terminated"
    bad = terminate(feed(start(spec(metric(interval=1, failure_limit=3)), T0), "err", [F, S]))
    assert bad.phase is S  # failed (1) <= failure_limit (3): terminated Successful, as in Argo


# -- scheduling ------------------------------------------------------------------------------------


def test_schedule_initial_delay_interval_and_error_retry() -> None:
    run = start(spec(metric(interval=30, count=3, initial_delay=60), error_retry_interval=10), T0)
    assert next_due(run) == T0 + timedelta(seconds=60)
    assert due(run, T0 + timedelta(seconds=59)) == []
    run = record(run, m("err", S, 60))
    assert next_due(run) == T0 + timedelta(seconds=90)
    run = record(run, m("err", E, 90))
    assert next_due(run) == T0 + timedelta(seconds=100)  # after an Error: error_retry_interval


def step_until_done(run: AnalysisRun, phases: dict[str, list[Phase]], limit: int = 500) -> AnalysisRun:
    """Drive ``step`` with a simulated clock jumping to each next due time."""
    taken: dict[str, int] = {}

    def measure(metric: AnalysisMetric) -> Measurement:
        i = taken.get(metric.name, 0)
        taken[metric.name] = i + 1
        seq = phases[metric.name]
        return m(metric.name, seq[min(i, len(seq) - 1)], (now - T0).total_seconds())

    now = run.started_at
    for _ in range(limit):
        run = step(run, now, measure)
        if run.phase.completed:
            return run
        at = next_due(run)
        assert at is not None and at >= now
        now = at
    raise AssertionError("the run did not end")


# -- properties ------------------------------------------------------------------------------------

phases_st = st.lists(st.sampled_from([S, F, INC, E]), min_size=1, max_size=12)
metric_st = st.builds(
    lambda interval, count, fl, il, cel, delay: metric(
        interval=interval, count=count, failure_limit=fl, inconclusive_limit=il, consecutive_error_limit=cel,
        initial_delay=delay,
    ),
    st.sampled_from([None, 1.0, 5.0]),
    st.one_of(st.none(), st.integers(1, 6)),
    st.integers(-1, 3),
    st.integers(0, 3),
    st.integers(0, 4),
    st.sampled_from([0.0, 3.0]),
).filter(lambda x: x.effective_count is not None)


@settings(max_examples=300, deadline=None)
@given(metric_st, phases_st)
def test_counters_and_limits_invariants(met: AnalysisMetric, phases: list[Phase]) -> None:
    run = start(spec(met), T0)
    for i, phase in enumerate(phases):
        if run.phase.completed:
            break
        run = record(run, m("err", phase, float(i)))
        r = run.result("err")
        assert r is not None
        assert r.count == r.successful + r.failed + r.inconclusive
        assert len(r.measurements) == r.count + r.error
        assert r.consecutive_error <= r.error
        if r.phase is F:
            assert met.failure_limit >= 0 and r.failed > met.failure_limit
        if r.phase is INC:
            assert r.inconclusive > met.inconclusive_limit
        if r.phase is E:
            assert r.consecutive_error > met.consecutive_error_limit
        if met.failure_limit >= 0 and r.failed > met.failure_limit:
            assert r.phase in (F, INC, E)  # a breached failure_limit always ends the metric
        assert run.phase in (Phase.RUNNING, r.phase)


@settings(max_examples=200, deadline=None)
@given(metric_st, phases_st, phases_st)
def test_dry_run_never_changes_the_verdict(met: AnalysisMetric, real: list[Phase], shadow: list[Phase]) -> None:
    other = metric("shadow", interval=1.0, count=3, dry_run=True)
    alone = step_until_done(start(spec(met), T0), {"err": real})
    both = step_until_done(start(spec(met, other), T0), {"err": real, "shadow": shadow})
    assert both.phase is alone.phase


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(metric_st, phases_st), min_size=1, max_size=3))
def test_a_bounded_run_ends_with_the_worst_metric(items: list[tuple[AnalysisMetric, list[Phase]]]) -> None:
    metrics = [met.model_copy(update={"name": f"m{i}"}) for i, (met, _) in enumerate(items)]
    run = step_until_done(start(spec(*metrics), T0), {f"m{i}": ph for i, (_, ph) in enumerate(items)})
    decided = [r.phase for r in run.results if not r.dry_run]
    assert run.phase is worst(decided)
    assert all(p.completed for p in decided)
    # nothing is measured before its initial delay, nor sooner than its interval (error retry after an Error)
    for r in run.results:
        met = run.spec.metric(r.name)
        assert r.measurements[0].finished_at >= T0 + timedelta(seconds=met.initial_delay)
        for prev, nxt in zip(r.measurements, r.measurements[1:], strict=False):
            wait = run.spec.error_retry_interval if prev.phase is E or met.interval is None else met.interval
            assert nxt.finished_at - prev.finished_at >= timedelta(seconds=wait)


# -- spec validation names the field ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "field"),
    [
        ({"metrics": []}, "metrics"),
        ({"metrics": [{"name": "Err", "query": Q}]}, "name"),
        ({"metrics": [{"name": "err", "query": 'errors{service={workload}}'}]}, "query"),
        ({"metrics": [{"name": "err", "query": Q, "success_condition": "result[0] <"}]}, "success_condition"),
        ({"metrics": [{"name": "err", "query": Q, "failure_condition": "os.system(1)"}]}, "failure_condition"),
        ({"metrics": [{"name": "err", "query": Q, "interval": "soon"}]}, "interval"),
        ({"metrics": [{"name": "err", "query": Q, "interval": 0}]}, "interval"),
        ({"metrics": [{"name": "err", "query": Q, "count": 0}]}, "count"),
        ({"metrics": [{"name": "err", "query": Q, "failure_limit": -2}]}, "failure_limit"),
        ({"metrics": [{"name": "err", "query": Q, "consecutive_error_limit": -1}]}, "consecutive_error_limit"),
        ({"metrics": [{"name": "err", "query": Q, "inconclusive_limit": -1}]}, "inconclusive_limit"),
        ({"metrics": [{"name": "err", "query": Q, "dry_rn": True}]}, "dry_rn"),
        ({"metrics": [{"name": "err", "query": Q}, {"name": "err", "query": Q}]}, "duplicate metric name"),
    ],
)
def test_bad_specs_name_the_field(data: dict[str, Any], field: str) -> None:
    with pytest.raises(ValidationError) as info:
        AnalysisSpec.model_validate(data)
    assert field in str(info.value)


def test_defaults_are_argos() -> None:
    met = metric()
    assert (met.failure_limit, met.inconclusive_limit, met.consecutive_error_limit) == (0, 0, 4)
    assert met.effective_count == 1 and metric(interval=5).effective_count is None
    assert spec().error_retry_interval == 10.0
