"""Pure policy tests: HPA calculator, behavior, KEDA activation/fallback, Knative burst, schedules."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from scalewise.errors import SpecError
from scalewise.policy.behavior import Recommendation, ScaleEvent
from scalewise.policy.calculator import propose
from scalewise.policy.config import AutoscalingSpec, MetricTarget, Schedule
from scalewise.policy.decide import REASONS, Decision, PolicyState, decide
from scalewise.policy.readings import MetricReading, ReplicaInfo
from scalewise.policy.record import DecisionRecord, replay
from scalewise.spec import parse_workload

T0 = datetime(2026, 1, 5, 12, 0, 0, tzinfo=UTC)  # a Monday
NO_WINDOWS = {
    "scale_up": {"stabilization_window": 0, "policies": [{"type": "percent", "value": 1000, "period": 15}]},
    "scale_down": {"stabilization_window": 0, "policies": [{"type": "percent", "value": 100, "period": 15}]},
}


def spec(*metrics: dict[str, Any], **kw: Any) -> AutoscalingSpec:
    ms = list(metrics) or [{"name": "cpu", "source": "docker_cpu", "type": "utilization", "target": 50}]
    return AutoscalingSpec.model_validate({"metrics": ms, **kw})


def prom(name: str = "rps", type_: str = "value", target: float = 100, **kw: Any) -> dict[str, Any]:
    return {
        "name": name,
        "query": f'sum(rate(req{{workload="{{workload}}",m="{name}"}}[1m]))',
        "type": type_,
        "target": target,
        **kw,
    }


def one(name: str, value: float, at: datetime = T0) -> MetricReading:
    return MetricReading.success(name, at, value)


def per(name: str, values: dict[str, float], at: datetime = T0) -> MetricReading:
    return MetricReading.per_replica(name, at, values)


def bad(name: str, error: str = "connection", at: datetime = T0) -> MetricReading:
    return MetricReading.failure(name, at, error)


# --------------------------------------------------------------------------- calculator (HPA)

CPU = MetricTarget(name="cpu", source="docker_cpu", type="utilization", target=50)
ALL_READY = None


@pytest.mark.parametrize(
    ("case", "values", "current", "ready", "replicas", "expected", "reason"),
    [
        ("scale up", {"a": 90, "b": 90, "c": 90}, 3, 3, ALL_READY, 6, "scale_up"),
        ("scale down", {"a": 10, "b": 10, "c": 10, "d": 10, "e": 10}, 5, 5, ALL_READY, 1, "scale_down"),
        ("tolerance", {"a": 52, "b": 50, "c": 53}, 3, 3, ALL_READY, 3, "within_tolerance"),
        ("exact", {"a": 50, "b": 50}, 2, 2, ALL_READY, 2, "within_tolerance"),
        # 4 ready, one without a value: on scale-up it counts as 0% -> (300+0)/4/50 = 1.5 -> 6
        ("missing on scale-up", {"a": 100, "b": 100, "c": 100}, 4, 4, ALL_READY, 6, "scale_up"),
        # on scale-down it counts as max(100%, target) for utilization (HPA fallbackUtilization):
        # (30+100)/4/50 = 0.65 -> ceil(2.6) = 3
        ("missing on scale-down", {"a": 10, "b": 10, "c": 10}, 4, 4, ALL_READY, 3, "scale_down"),
        # ratio 1.2 but two missing at 0% -> 0.6: the direction flips, keep 4
        ("missing flips", {"a": 60, "b": 60}, 4, 4, ALL_READY, 4, "direction_flip"),
        # missing at 100% (utilization): (84+200)/4/50 = 1.42, the direction flips, keep 4
        ("missing into tolerance", {"a": 42, "b": 42}, 4, 4, ALL_READY, 4, "direction_flip"),
        # not-yet-ready c counts 0% on scale-up (its own 500 is ignored): 200/3/50 = 1.33 -> 4
        (
            "unready on scale-up",
            {"a": 100, "b": 100, "c": 500},
            3,
            2,
            [ReplicaInfo(id="a"), ReplicaInfo(id="b"), ReplicaInfo(id="c", ready=False)],
            4,
            "scale_up",
        ),
        # on scale-down the unready replica is simply left out: 0.2 * 2 -> 1
        (
            "unready ignored on scale-down",
            {"a": 10, "b": 10, "c": 500},
            3,
            2,
            [ReplicaInfo(id="a"), ReplicaInfo(id="b"), ReplicaInfo(id="c", ready=False)],
            1,
            "scale_down",
        ),
        (
            "unready flips",
            {"a": 60, "b": 60},
            3,
            2,
            [ReplicaInfo(id="a"), ReplicaInfo(id="b"), ReplicaInfo(id="c", ready=False)],
            3,
            "direction_flip",
        ),
        # a value from a replica that is not in the list (already gone) is ignored
        ("unknown replica ignored", {"a": 100, "zz": 0}, 1, 1, [ReplicaInfo(id="a")], 2, "scale_up"),
    ],
)
def test_hpa_calculator(case, values, current, ready, replicas, expected, reason):
    p = propose(CPU, per("cpu", values), current, ready, 0.1, replicas)
    assert (p.replicas, p.reason) == (expected, reason), (case, p)


@pytest.mark.parametrize(
    ("type_", "value", "current", "ready", "expected", "reason"),
    [
        ("value", 250, 2, 2, 5, "scale_up"),  # ratio 2.5 x 2 ready
        ("value", 250, 4, 2, 5, "scale_up"),  # based on ready replicas
        ("value", 105, 2, 2, 2, "within_tolerance"),
        ("value", 20, 5, 5, 1, "scale_down"),
        ("value", 300, 3, 0, None, "failed"),  # no ready replica to scale from
        ("average_value", 1000, 3, 3, 10, "scale_up"),  # a total spread over replicas
        ("average_value", 310, 3, 3, 3, "within_tolerance"),
        ("average_value", 50, 3, 3, 1, "scale_down"),
        ("value", 250, 0, 0, 3, "scale_up"),  # from zero: ceil(ratio)
    ],
)
def test_single_value_metrics(type_, value, current, ready, expected, reason):
    metric = MetricTarget.model_validate(prom(type_=type_))
    p = propose(metric, one("rps", value), current, ready, 0.1)
    assert (p.replicas, p.reason) == (expected, reason)


def test_no_ready_value_is_a_failed_proposal():
    p = propose(CPU, per("cpu", {}), 2, 2, 0.1)
    assert p.replicas is None and p.error == "no_ready_replicas"


# --------------------------------------------------------------------------- decide: table


def run(s: AutoscalingSpec, readings, current, ready=None, state=None, now=T0, bounds=(1, 10), replicas=None):
    return decide(s, bounds, readings, current, current if ready is None else ready, state, now, replicas)


def test_multiple_metrics_largest_wins():
    s = spec(prom("rps", target=100), prom("queue", type_="average_value", target=10), behavior=NO_WINDOWS)
    d = run(s, [one("rps", 400), one("queue", 60)], 2)  # rps -> 8, queue -> 6
    assert d.desired == 8 and d.reason == "scale_up" and d.changed
    names = [st.name for st in d.steps]
    assert "metric:rps" in names and "metric:queue" in names and "combine" in names


def test_multiple_metrics_no_change_reports_direction_flip():
    s = spec(*[prom("a"), prom("b")], behavior=NO_WINDOWS)
    d = run(s, [one("a", 100), one("b", 100)], 2)
    assert (d.desired, d.reason) == (2, "within_tolerance")


def test_failed_metric_allows_scale_up():
    s = spec(prom("rps"), prom("lat"), behavior=NO_WINDOWS)
    d = run(s, [one("rps", 300), bad("lat")], 2)
    assert (d.desired, d.reason) == (6, "scale_up")


def test_failed_metric_forbids_scale_down():
    s = spec(prom("rps"), prom("lat"), behavior=NO_WINDOWS)
    d = run(s, [one("rps", 10), bad("lat", "timeout")], 5)
    assert (d.desired, d.reason) == (5, "missing_metrics_hold")
    assert any(st.reason == "failed" and "timeout" in st.detail for st in d.steps)


def test_unsupplied_and_stale_readings_are_failed_reads():
    s = spec(prom("rps"), prom("lat"), behavior=NO_WINDOWS, stale_after="30s")
    d = run(s, [one("rps", 10)], 5)  # lat not supplied
    assert d.reason == "missing_metrics_hold"
    d = run(s, [one("rps", 10), one("lat", 10, at=T0 - timedelta(minutes=2))], 5)
    assert d.reason == "missing_metrics_hold" and any("stale" in st.detail for st in d.steps)


def test_empty_read_fails_unless_on_empty_zero():
    empty = MetricReading.failure("rps", T0, "empty")
    assert empty.outcome == "empty" and not empty.ok
    d = run(spec(prom("rps"), behavior=NO_WINDOWS), [empty], 4)
    assert (d.desired, d.reason) == (4, "missing_metrics_hold")
    d = run(spec(prom("rps", on_empty="zero"), behavior=NO_WINDOWS), [empty], 4)
    assert (d.desired, d.reason) == (1, "clamped_min")


def test_nan_and_inf_cannot_be_ok_readings():
    for v in (math.nan, math.inf, -math.inf):
        with pytest.raises(ValidationError):
            MetricReading.success("x", T0, v)


def test_all_failed_holds_then_falls_back():
    s = spec(prom("rps"), fallback={"failure_threshold": 3, "replicas": 7})
    state = None
    reasons = []
    for i in range(4):
        d = run(s, [bad("rps")], 2, state=state, now=T0 + timedelta(seconds=15 * i))
        reasons.append((d.desired, d.reason))
        state = d.state
    assert reasons == [
        (2, "missing_metrics_hold"),
        (2, "missing_metrics_hold"),
        (7, "fallback"),
        (7, "fallback"),
    ]
    assert state is not None and state.consecutive_failures == 4
    d = run(s, [one("rps", 200)], 7, state=state, now=T0 + timedelta(minutes=2))
    assert d.state.consecutive_failures == 0 and d.reason != "fallback"


def test_fallback_hold_never_moves():
    s = spec(prom("rps"), fallback={"failure_threshold": 1, "replicas": "hold"})
    d = run(s, [bad("rps")], 3)
    assert (d.desired, d.reason) == (3, "missing_metrics_hold")


def test_fallback_is_clamped_to_bounds():
    s = spec(prom("rps"), fallback={"failure_threshold": 1, "replicas": 50})
    assert run(s, [bad("rps")], 3).desired == 10


# --------------------------------------------------------------------------- behavior


def test_scale_down_stabilization_window_default_300s():
    s = spec(prom("rps"))
    state = PolicyState(recommendations=[Recommendation(at=T0 - timedelta(seconds=200), replicas=6)])
    d = run(s, [one("rps", 10)], 6, state=state)  # proposes 1
    assert (d.desired, d.reason) == (6, "stabilized_down")
    d = run(s, [one("rps", 10)], 6, state=state, now=T0 + timedelta(seconds=101))
    assert (d.desired, d.reason) == (1, "scale_down")


def test_stabilization_uses_max_of_window():
    s = spec(prom("rps"))
    recs = [Recommendation(at=T0 - timedelta(seconds=s_), replicas=r) for s_, r in ((250, 4), (100, 3), (50, 2))]
    d = run(s, [one("rps", 10)], 6, state=PolicyState(recommendations=recs))
    assert (d.desired, d.reason) == (4, "stabilized_down")


def test_scale_up_stabilization_uses_min_of_window():
    behavior = {"scale_up": {"stabilization_window": 60, "policies": [{"type": "pods", "value": 100}]}}
    s = spec(prom("rps"), behavior=behavior)
    recs = [Recommendation(at=T0 - timedelta(seconds=30), replicas=4)]
    d = run(s, [one("rps", 900)], 2, state=PolicyState(recommendations=recs))
    assert (d.desired, d.reason) == (4, "stabilized_up")


def test_default_scale_up_rate_is_max_of_100_percent_and_4_pods():
    s = spec(prom("rps"))
    d = run(s, [one("rps", 4000)], 2)  # wants 80; 100% -> 4, +4 -> 6
    assert (d.desired, d.reason) == (6, "rate_limited_up")
    d2 = run(s, [one("rps", 4000)], 6, state=d.state, now=T0 + timedelta(seconds=5))
    # the period started at 2 replicas: still capped at 6
    assert (d2.desired, d2.reason, d2.changed) == (6, "rate_limited_up", False)
    d3 = run(s, [one("rps", 4000)], 6, state=d2.state, now=T0 + timedelta(seconds=16))
    assert d3.desired == 10 and d3.reason == "clamped_max"  # 12 allowed, max 10


def test_select_min_and_disabled():
    up_min = {
        "scale_up": {
            "policies": [{"type": "percent", "value": 100}, {"type": "pods", "value": 1}],
            "select_policy": "min",
        }
    }
    assert run(spec(prom("rps"), behavior=up_min), [one("rps", 900)], 2).desired == 3
    off = {"scale_down": {"select_policy": "disabled"}}
    d = run(spec(prom("rps"), behavior=off), [one("rps", 10)], 5)
    assert (d.desired, d.reason) == (5, "scale_down_disabled")
    off_up = {"scale_up": {"select_policy": "disabled"}}
    d = run(spec(prom("rps"), behavior=off_up), [one("rps", 900)], 2)
    assert (d.desired, d.reason) == (2, "scale_up_disabled")


def test_scale_down_percent_policy():
    down = {
        "scale_down": {
            "stabilization_window": 0,
            "policies": [{"type": "percent", "value": 50, "period": 60}],
        }
    }
    s = spec(prom("rps"), behavior=down)
    d = run(s, [one("rps", 10)], 10)
    assert (d.desired, d.reason) == (5, "rate_limited_down")
    d2 = run(s, [one("rps", 10)], 5, state=d.state, now=T0 + timedelta(seconds=30))
    assert (d2.desired, d2.reason) == (5, "rate_limited_down")  # period started at 10: 50% -> 5
    d3 = run(s, [one("rps", 10)], 5, state=d2.state, now=T0 + timedelta(seconds=61))
    assert (d3.desired, d3.reason) == (2, "rate_limited_down")  # a new period from 5: int(5 * 0.5)


def test_clamp_max_and_min():
    s = spec(prom("rps"), behavior=NO_WINDOWS)
    assert (run(s, [one("rps", 5000)], 2).desired, run(s, [one("rps", 5000)], 2).reason) == (
        10,
        "clamped_max",
    )
    d = run(s, [one("rps", 1)], 3, bounds=(2, 10))
    assert (d.desired, d.reason) == (2, "clamped_min")


def test_current_outside_bounds_is_moved_in_directly():
    s = spec(prom("rps"))
    d = run(s, [one("rps", 5000)], 15)
    assert (d.desired, d.reason) == (10, "clamped_max")
    d = run(s, [bad("rps")], 1, bounds=(3, 10))
    assert (d.desired, d.reason) == (3, "clamped_min")


def test_state_history_is_pruned_and_json_round_trips():
    s = spec(prom("rps"))
    old = [Recommendation(at=T0 - timedelta(hours=2), replicas=9)]
    events = [ScaleEvent(at=T0 - timedelta(hours=2), change=3)]
    d = run(s, [one("rps", 200)], 2, state=PolicyState(recommendations=old, scale_events=events))
    assert all(r.at > T0 - timedelta(seconds=301) for r in d.state.recommendations)
    assert [e.at for e in d.state.scale_events] == [T0]  # only this tick's event survives
    assert PolicyState.model_validate_json(d.state.model_dump_json()) == d.state


def test_state_if_not_applied_drops_the_event():
    d = run(spec(prom("rps"), behavior=NO_WINDOWS), [one("rps", 400)], 2)
    assert d.changed and d.state.scale_events
    assert d.state_if_not_applied().scale_events == []


# --------------------------------------------------------------------------- scale to zero (KEDA)

ZERO = {"scale_to_zero": {"enabled": True, "cooldown": "60s"}, "behavior": NO_WINDOWS}


def test_activation_from_zero():
    s = spec(prom("queue", activation=5), **ZERO)
    d = run(s, [one("queue", 3)], 0, bounds=(0, 10))
    assert (d.desired, d.reason) == (0, "activation_zero")
    d = run(s, [one("queue", 6)], 0, bounds=(0, 10))
    assert (d.desired, d.reason) == (1, "activation_start")
    d = run(s, [one("queue", 700)], 0, bounds=(0, 10))  # value metric: straight to its proposal, rate-limited
    assert d.reason == "activation_start" and 1 <= d.desired <= 10


def test_cooldown_then_zero():
    s = spec(prom("queue", activation=5), **ZERO)
    d1 = run(s, [one("queue", 2)], 3, bounds=(0, 10))
    assert d1.desired == 1 and d1.state.inactive_since == T0
    d2 = run(s, [one("queue", 2)], 1, state=d1.state, bounds=(0, 10), now=T0 + timedelta(seconds=30))
    assert (d2.desired, d2.reason) == (1, "cooldown_hold")
    d3 = run(s, [one("queue", 2)], 1, state=d2.state, bounds=(0, 10), now=T0 + timedelta(seconds=60))
    assert (d3.desired, d3.reason) == (0, "activation_zero")


def test_activity_resets_cooldown_and_failures_do_not_start_it():
    s = spec(prom("queue", activation=5), **ZERO)
    d1 = run(s, [one("queue", 2)], 1, bounds=(0, 10))
    d2 = run(s, [one("queue", 90)], 1, state=d1.state, bounds=(0, 10), now=T0 + timedelta(seconds=30))
    assert d2.state.inactive_since is None and d2.state.last_active == T0 + timedelta(seconds=30)
    d3 = run(s, [bad("queue")], 1, state=PolicyState(), bounds=(0, 10))
    assert d3.state.inactive_since is None and d3.desired == 1


def test_scale_to_zero_needs_zero_min():
    s = spec(prom("queue", activation=5), **ZERO)
    d = run(
        s,
        [one("queue", 0)],
        1,
        bounds=(1, 10),
        now=T0 + timedelta(hours=1),
        state=PolicyState(inactive_since=T0),
    )
    assert d.desired == 1


def test_at_zero_without_scale_to_zero():
    s = spec(prom("rps"))
    assert run(s, [one("rps", 500)], 0, bounds=(0, 10)).reason == "zero_hold"
    d = run(s, [one("rps", 500)], 0, bounds=(2, 10))
    assert (d.desired, d.reason) == (2, "clamped_min")


def test_fallback_from_zero():
    s = spec(prom("queue"), scale_to_zero={"enabled": True}, fallback={"failure_threshold": 1, "replicas": 2})
    d = run(s, [bad("queue")], 0, bounds=(0, 10))
    assert (d.desired, d.reason) == (2, "fallback")


# --------------------------------------------------------------------------- burst (Knative panic)

BURST = {"burst": {"panic_threshold": 2.0, "panic_window": "60s"}}


def test_panic_scale_up_skips_rate_limits():
    s = spec(prom("rps"), **BURST)
    d = run(s, [one("rps", 800)], 2, bounds=(1, 20))  # ratio 8 -> 16, default rate would allow 6
    assert (d.desired, d.reason, d.in_panic) == (16, "panic_scale_up", True)
    assert d.state.panic_until == T0 + timedelta(seconds=60)


def test_panic_holds_scale_down_until_window_passes():
    s = spec(prom("rps"), behavior=NO_WINDOWS, **BURST)
    state = PolicyState(panic_until=T0 + timedelta(seconds=30))
    d = run(s, [one("rps", 10)], 8, state=state)
    assert (d.desired, d.reason) == (8, "panic_hold_down")
    d = run(s, [one("rps", 10)], 8, state=state, now=T0 + timedelta(seconds=30))
    assert (d.desired, d.reason, d.in_panic) == (1, "scale_down", False)


def test_no_panic_below_threshold():
    s = spec(prom("rps"), **BURST)
    d = run(s, [one("rps", 150)], 2)
    assert d.reason == "scale_up" and not d.in_panic and d.state.panic_until is None


# --------------------------------------------------------------------------- schedules


def test_schedule_floor_in_time_zone():
    sched = {"cron": "0 8 * * 1-5", "duration": "10h", "timezone": "Europe/Paris", "min": 5}
    s = spec(prom("rps"), schedules=[sched], behavior=NO_WINDOWS)
    at_8_paris = datetime(2026, 1, 5, 7, 0, tzinfo=UTC)
    d = run(s, [one("rps", 10)], 2, now=at_8_paris)
    assert (d.desired, d.reason, d.effective_min) == (5, "schedule_floor", 5)
    d = run(s, [one("rps", 10)], 5, now=at_8_paris + timedelta(hours=1))
    assert (d.desired, d.reason) == (5, "schedule_floor")  # metric wants 1, floor keeps 5
    d = run(s, [one("rps", 160)], 5, now=at_8_paris + timedelta(hours=1))
    assert d.desired == 8  # metric scaling above the floor
    d = run(s, [one("rps", 10)], 2, now=at_8_paris - timedelta(minutes=1))
    assert d.effective_min == 1
    d = run(s, [one("rps", 10)], 2, now=datetime(2026, 1, 10, 7, 30, tzinfo=UTC))  # Saturday
    assert d.effective_min == 1


def test_schedule_dst():
    s = Schedule(cron="0 9 * * *", duration="1h", timezone="America/New_York", min=3)
    assert s.active_at(datetime(2026, 1, 15, 14, 30, tzinfo=UTC))  # EST: 09:30
    assert not s.active_at(datetime(2026, 7, 15, 14, 30, tzinfo=UTC))  # EDT: 10:30
    assert s.active_at(datetime(2026, 7, 15, 13, 30, tzinfo=UTC))


def test_schedule_ceiling_and_conflict():
    night = {"cron": "0 22 * * *", "duration": "8h", "max": 3}
    s = spec(prom("rps"), schedules=[night], behavior=NO_WINDOWS)
    d = run(s, [one("rps", 900)], 6, now=datetime(2026, 1, 5, 23, 0, tzinfo=UTC))
    assert (d.desired, d.reason, d.effective_max) == (3, "schedule_ceiling", 3)
    d = run(s, [one("rps", 900)], 2, now=datetime(2026, 1, 5, 23, 0, tzinfo=UTC))
    assert (d.desired, d.reason) == (3, "schedule_ceiling")
    both = [night, {"cron": "0 23 * * *", "duration": "1h", "min": 8}]
    d = run(spec(prom("rps"), schedules=both), [one("rps", 100)], 2, now=datetime(2026, 1, 5, 23, 5, tzinfo=UTC))
    assert (d.effective_min, d.effective_max) == (3, 3)


# --------------------------------------------------------------------------- pause, validation


def test_paused_keeps_current():
    d = run(spec(prom("rps"), paused=True), [one("rps", 9000)], 4)
    assert (d.desired, d.reason, d.changed) == (4, "paused", False)


@pytest.mark.parametrize(
    ("patch", "field", "message"),
    [
        ({"schedules": [{"cron": "61 * * * *", "duration": "1h", "min": 2}]}, "schedules[0].cron", "cron"),
        (
            {"schedules": [{"cron": "0 8 * * *", "duration": "1h", "timezone": "europe/paris", "min": 2}]},
            "schedules[0].timezone",
            "Europe/Paris",
        ),
        (
            {"schedules": [{"cron": "0 8 * * *", "duration": -5, "min": 2}]},
            "schedules[0].duration",
            "negative",
        ),
        ({"schedules": [{"cron": "0 8 * * *", "duration": "1h"}]}, "schedules[0]", "'min', 'max'"),
        ({"behavior": {"scale_down": {"stabilization_window": -1}}}, "stabilization_window", "negative"),
        (
            {"behavior": {"scale_up": {"policies": [{"type": "pods", "value": 1, "period": "1h"}]}}},
            "period",
            "30m",
        ),
        ({"behavior": {"scale_up": {"policies": []}}}, "scale_up", "at least one policy"),
        ({"tolerance": 1.5}, "tolerance", "less than 1"),
        ({"burst": {"panic_threshold": 0.5}}, "panic_threshold", "greater than 1"),
        ({"fallback": {"replicas": "some"}}, "fallback.replicas", ""),
        ({"metrics": [{"name": "x", "query": "up{job={workload}}", "target": 1}]}, "query", "double-quoted"),
        (
            {"metrics": [{"name": "x", "query": 'up{job="{pod}"}', "target": 1}]},
            "query",
            "unknown placeholder",
        ),
        ({"metrics": [{"name": "x", "target": 1}]}, "metrics[0]", "needs a 'query'"),
        (
            {"metrics": [{"name": "x", "source": "docker_cpu", "type": "value", "target": 1}]},
            "metrics[0]",
            "utilization",
        ),
        ({"metrics": [prom("a"), prom("a")]}, "metrics", "unique"),
        ({"surprise": 1}, "surprise", "Extra inputs"),
    ],
)
def test_validation_messages(patch, field, message):
    doc = {
        "name": "web",
        "target": "docker",
        "image": "x:1",
        "autoscaling": {"metrics": [prom("rps")], **patch},
    }
    with pytest.raises(SpecError) as exc:
        parse_workload(doc, "web.yaml")
    text = str(exc.value)
    assert "web.yaml" in text and field in text and message in text, text


def test_workload_spec_carries_autoscaling():
    doc = {
        "name": "web",
        "target": "docker",
        "image": "x:1",
        "replicas": {"min": 0, "max": 5},
        "autoscaling": {
            "metrics": [{"name": "cpu", "source": "docker_cpu", "type": "utilization", "target": 70}],
            "scale_to_zero": {"enabled": True},
        },
    }
    w = parse_workload(doc)
    assert w.autoscaling is not None and w.autoscaling.behavior.scale_down.stabilization_window == 300
    assert parse_workload({k: v for k, v in doc.items() if k != "autoscaling"}).autoscaling is None


# --------------------------------------------------------------------------- records and replay


def test_record_replay_round_trip():
    s = spec(prom("rps"), prom("lat"), **BURST)
    state = PolicyState(recommendations=[Recommendation(at=T0 - timedelta(seconds=10), replicas=3)])
    d = run(s, [one("rps", 450), bad("lat")], 3, state=state)
    rec = DecisionRecord.of(s, state, d, workload="web")
    again = DecisionRecord.model_validate_json(rec.model_dump_json())
    assert replay(again) == d == again.decision
    assert again.steps == d.steps and again.config_version == s.config_hash()


def test_every_reason_is_registered():
    assert len(set(REASONS)) == len(REASONS)


# --------------------------------------------------------------------------- properties

metric_types = st.sampled_from(["value", "average_value", "utilization"])


@st.composite
def scenarios(draw):
    n = draw(st.integers(1, 3))
    metrics = []
    for i in range(n):
        metrics.append(
            prom(
                f"m{i}",
                type_=draw(metric_types),
                target=draw(st.sampled_from([1, 10, 50, 100])),
                activation=draw(st.sampled_from([0, 5])),
            )
        )
    kw: dict[str, Any] = {}
    if draw(st.booleans()):
        kw["behavior"] = NO_WINDOWS
    if draw(st.booleans()):
        kw["scale_to_zero"] = {"enabled": True, "cooldown": draw(st.sampled_from([0, 30, 300]))}
    if draw(st.booleans()):
        kw["burst"] = {"panic_threshold": draw(st.sampled_from([1.5, 2.0, 4.0])), "panic_window": 30}
    if draw(st.booleans()):
        kw["fallback"] = {
            "failure_threshold": draw(st.integers(1, 3)),
            "replicas": draw(st.sampled_from(["hold", 0, 3, 50])),
        }
    if draw(st.booleans()):
        kw["schedules"] = [
            {
                "cron": "0 * * * *",
                "duration": "20m",
                "min": draw(st.integers(0, 6)),
                "max": draw(st.integers(6, 12)),
            }
        ]
    kw["paused"] = draw(st.booleans()) and draw(st.booleans())
    s = spec(*metrics, **kw)
    lo = draw(st.integers(0, 4))
    hi = draw(st.integers(max(lo, 1), 15))
    current = draw(st.integers(0, 18))
    ready = draw(st.integers(0, current))
    now = T0 + timedelta(seconds=draw(st.integers(0, 7200)))
    readings = []
    for m in s.metrics:
        kind = draw(st.sampled_from(["one", "per", "bad", "empty", "absent"]))
        val = st.floats(0, 5000, allow_nan=False, allow_infinity=False)
        if kind == "one":
            readings.append(one(m.name, draw(val), now))
        elif kind == "per":
            ids = [f"r{i}" for i in range(draw(st.integers(0, current + 1)))]
            readings.append(per(m.name, {i: draw(val) for i in ids}, now))
        elif kind == "bad":
            readings.append(bad(m.name, draw(st.sampled_from(["http", "timeout", "nan"])), now))
        elif kind == "empty":
            readings.append(MetricReading.failure(m.name, now, "empty"))
    offsets = st.integers(0, 600)
    recs = [
        Recommendation(at=now - timedelta(seconds=draw(offsets)), replicas=draw(st.integers(0, 15)))
        for _ in range(draw(st.integers(0, 4)))
    ]
    events = [
        ScaleEvent(at=now - timedelta(seconds=draw(offsets)), change=draw(st.integers(-5, 5)))
        for _ in range(draw(st.integers(0, 3)))
    ]
    state = PolicyState(
        recommendations=recs,
        scale_events=events,
        consecutive_failures=draw(st.integers(0, 4)),
        inactive_since=draw(st.none() | st.just(now - timedelta(seconds=draw(offsets)))),
        panic_until=draw(st.none() | st.just(now + timedelta(seconds=draw(st.integers(-60, 60))))),
    )
    return s, (lo, hi), readings, current, ready, state, now


def assert_valid_records(d: Decision) -> None:
    """Every record of ``d`` holds exactly its schema's fields, and equals its validated copy."""
    records = [d, d.inputs, d.state, *d.steps, *d.state.recommendations, *d.state.scale_events]
    for record in records:
        assert list(record.__dict__) == list(type(record).model_fields), type(record).__name__
        assert type(record).model_validate(record.model_dump()) == record
    assert Decision.model_validate_json(d.model_dump_json()) == d


def _any_failed(d: Decision) -> bool:
    return any(st.reason == "failed" for st in d.steps if st.name.startswith("metric:"))


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(scenarios())
def test_properties(case):
    s, bounds, readings, current, ready, state, now = case
    d = decide(s, bounds, readings, current, ready, state, now)
    assert d.reason in REASONS
    assert d.changed == (d.desired != current)
    if s.paused:
        assert d.desired == current
        return
    # 1. always within the effective bounds; zero only where zero is allowed
    assert d.effective_min <= d.desired <= d.effective_max
    if d.desired == 0:
        assert d.effective_min == 0 and d.reason in ("activation_zero", "zero_hold", "fallback")
    # 2. never a scale-down while a metric failed (fallback and a lowered ceiling aside)
    if _any_failed(d) and d.reason not in ("fallback", "clamped_max", "schedule_ceiling"):
        assert d.desired >= current or current > d.effective_max
    # 3. deterministic, also through the JSON-persisted state
    again = decide(s, bounds, readings, current, ready, PolicyState.model_validate_json(state.model_dump_json()), now)
    assert again == d
    # 4. replay of the record
    rec = DecisionRecord.model_validate_json(DecisionRecord.of(s, state, d).model_dump_json())
    assert replay(rec) == d
    # 5. the records decide() builds without validation are exactly what validation would build
    assert_valid_records(d)


def test_schedule_window_edges():
    s = Schedule(cron="0 8 * * *", duration="2h", timezone="Europe/Paris", min=2)
    opens = datetime(2026, 1, 5, 7, 0, tzinfo=UTC)  # 08:00 Paris
    assert s.active_at(opens)
    assert not s.active_at(opens - timedelta(seconds=1))
    assert s.active_at(opens + timedelta(hours=2) - timedelta(microseconds=1))
    assert not s.active_at(opens + timedelta(hours=2))
    secs = Schedule(cron="*/10 * * * * 30", duration="5s", max=3)  # 6 fields: at second 30
    at = datetime(2026, 1, 5, 7, 10, 30, tzinfo=UTC)
    assert secs.active_at(at) and secs.active_at(at + timedelta(seconds=4.5))
    assert not secs.active_at(at + timedelta(seconds=5)) and not secs.active_at(at - timedelta(seconds=1))


@settings(max_examples=300, deadline=None)
@given(
    st.lists(st.tuples(st.integers(0, 900), st.integers(0, 12)), max_size=40),
    st.integers(0, 12),
    st.integers(0, 12),
    st.integers(0, 600),
    st.integers(0, 600),
    st.integers(0, 900),
)
def test_compaction_preserves_stabilization(samples, desired, current, up_w, down_w, later):
    from scalewise.policy.behavior import compact_recommendations, stabilize
    from scalewise.policy.config import Behavior

    history = [Recommendation(at=T0 + timedelta(seconds=t), replicas=r) for t, r in samples]
    behavior = Behavior.model_validate(
        {
            "scale_up": {"stabilization_window": up_w, "policies": [{"type": "pods", "value": 1}]},
            "scale_down": {"stabilization_window": down_w, "policies": [{"type": "pods", "value": 1}]},
        }
    )
    now = T0 + timedelta(seconds=900 + later)
    compact = compact_recommendations(history)
    assert len(compact) <= len(history)
    assert stabilize(desired, current, compact, behavior, now) == stabilize(desired, current, history, behavior, now)


def test_persisted_state_stays_small():
    s = spec(prom("rps"))
    state, current = PolicyState(), 3
    for i in range(300):  # 300 ticks of 1 s with a noisy metric
        now = T0 + timedelta(seconds=i)
        d = run(s, [one("rps", 100 + (i * 37) % 250)], current, state=state, now=now, bounds=(1, 50))
        state, current = d.state, d.desired
    assert len(state.model_dump_json()) < 5000  # fits a Prefect Variable


def test_min_zero_without_scale_to_zero_is_not_a_schedule_floor():
    d = run(spec(prom("rps"), behavior=NO_WINDOWS), [one("rps", 0)], 3, bounds=(0, 10))
    assert (d.desired, d.reason) == (1, "clamped_min")


def test_unready_replicas_hold_but_do_not_count_towards_fallback():
    s = spec(prom("rps"), fallback={"failure_threshold": 1, "replicas": 9})
    d = run(s, [one("rps", 500)], 3, ready=0)
    assert (d.desired, d.reason, d.state.consecutive_failures) == (3, "missing_metrics_hold", 0)
