"""HPA fidelity: rules and cases ported from Kubernetes ``replica_calculator.go`` and its test table.

Per-replica CPU cases use utilization percentages (a request of 1 CPU per pod: 300m -> 30%).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from scalewise.errors import SpecError
from scalewise.policy.calculator import propose, within
from scalewise.policy.config import AutoscalingSpec, MetricTarget
from scalewise.policy.decide import PolicyState, decide, seed_state
from scalewise.policy.readings import MetricReading, ReplicaInfo
from scalewise.policy.record import DecisionRecord, replay
from scalewise.spec import parse_workload

T0 = datetime(2026, 1, 5, 12, 0, 0, tzinfo=UTC)
CPU = MetricTarget(name="cpu", source="docker_cpu", type="utilization", target=30)
RPS = MetricTarget(name="rps", source="docker_cpu", type="average_value", target=15000)


def pods(readiness: str) -> list[ReplicaInfo]:
    """'FTT' -> p0 unready, p1 and p2 ready; 'P' pending."""
    return [ReplicaInfo(id=f"p{i}", ready=c == "T", pending=c == "P") for i, c in enumerate(readiness)]


def levels(*values: float) -> MetricReading:
    return MetricReading.per_replica("m", T0, {f"p{i}": v for i, v in enumerate(values)})


def metric(base: MetricTarget, target: float | None = None) -> MetricTarget:
    return base.model_copy(update={"name": "m", **({"target": target} if target is not None else {})})


@pytest.mark.parametrize(
    ("case", "base", "target", "current", "readiness", "values", "expected", "reason"),
    [
        # TestReplicaCalcScaleUp: 50% / 30% x 3 -> 5
        ("ScaleUp", CPU, 30, 3, "TTT", (30, 50, 70), 5, "scale_up"),
        # TestReplicaCalcScaleUpUnreadyLessScale: ready 60% -> 2.0; unready at 0%: 40% -> 1.33 x 3 -> 4
        ("ScaleUpUnreadyLessScale", CPU, 30, 3, "FTT", (30, 50, 70), 4, "scale_up"),
        # TestReplicaCalcScaleUpUnreadyNoScale: ready 50% -> 1.67; two unready at 0%: 0.56, direction flips
        ("ScaleUpUnreadyNoScale", CPU, 30, 3, "FTF", (40, 50, 70), 3, "direction_flip"),
        # TestReplicaCalcScaleUpCM: 20000 / 15000 x 3 -> 4
        ("ScaleUpCM", RPS, None, 3, "TTT", (20000, 10000, 30000), 4, "scale_up"),
        # TestReplicaCalcScaleUpCMUnreadyHotCpuNoLessScale: readiness is ignored for non-CPU metrics
        ("ScaleUpCMUnreadyHotCpuNoLessScale", RPS, None, 3, "FTF", (50000, 10000, 30000), 6, "scale_up"),
        # TestReplicaCalcScaleUpCMUnreadyHotCpuScaleWouldScaleDown: 95000/3/15000 = 2.11 x 3 -> 7
        ("ScaleUpCMUnreadyHotCpuScaleWouldScaleDown", RPS, None, 3, "FTF", (50000, 15000, 30000), 7, "scale_up"),
        # a pending replica is unready for every metric: 20000/15000 = 1.33; pending at 0%: 0.89 -> flip
        ("PendingNonCpu", RPS, None, 3, "TTP", (20000, 20000), 3, "direction_flip"),
        # TestReplicaCalcScaleDown: 28% / 50% x 5 -> 3
        ("ScaleDown", CPU, 50, 5, "TTTTT", (10, 30, 50, 25, 25), 3, "scale_down"),
        # TestReplicaCalcScaleDownExcludeUnreadyPods: ready 30% / 50% x 3 -> 2
        ("ScaleDownExcludeUnreadyPods", CPU, 50, 5, "TTTFF", (10, 30, 50, 25, 25), 2, "scale_down"),
        # TestReplicaCalcTolerance: 102% of 100% -> within
        ("Tolerance", CPU, 100, 3, "TTT", (101, 103, 102), 3, "within_tolerance"),
        # TestReplicaCalcMissingMetricsNoChangeEq: ratio exactly 1, the missing pod is not filled in
        ("MissingMetricsNoChangeEq", CPU, 100, 2, "TT", (100,), 2, "within_tolerance"),
        # TestReplicaCalcMissingMetricsUnreadyScaleDown: p0 unready, p3 missing at max(100%, 50%):
        # (10+10+100)/3 = 40% -> 0.8 x 3 -> 3
        ("MissingMetricsUnreadyScaleDown", CPU, 50, 4, "FTTT", (10, 10, 10), 3, "scale_down"),
        # missing on scale-down for a target above 100%: filled at the target (300%)
        ("MissingScaleDownTargetOver100", CPU, 300, 4, "TTTT", (10, 10), 3, "scale_down"),
        # missing on scale-down for a non-utilization metric: filled at the target
        ("MissingScaleDownCM", RPS, None, 4, "TTTT", (3000, 3000, 3000), 2, "scale_down"),
    ],
)
def test_replica_calculator_table(case, base, target, current, readiness, values, expected, reason):
    replicas = pods(readiness)
    ready = sum(1 for r in replicas if r.ready and not r.pending)
    p = propose(metric(base, target), levels(*values), current, ready, 0.1, replicas)
    assert (p.replicas, p.reason) == (expected, reason), (case, p)


def test_without_fills_no_direction_check():
    """Nothing filled in: the HPA returns ceil(ratio x ready) (1.2 x 2 ready -> 3, below current 4)."""
    m = MetricTarget(name="m", query='x{a="{workload}"}', type="value", target=100)
    p = propose(m, MetricReading.success("m", T0, 120), 4, 2, 0.1)
    assert (p.replicas, p.reason) == (3, "scale_down")
    # per-replica values, no readiness list: 2 ready, both with a value
    p = propose(metric(CPU, 50), levels(60, 60), 4, 2, 0.1)
    assert (p.replicas, p.reason) == (3, "scale_down")


@pytest.mark.parametrize(
    ("type_", "value", "expected"),
    [("utilization", None, 3), ("value", 110.0, 3), ("average_value", 330.0, 3)],
)
def test_tolerance_uses_the_ceilings_rounding(type_, value, expected):
    """3 replicas at exactly 110% with a tolerance of 0.1 hold at 3 (1 - 1.1 is 0.1000...09 in floats)."""
    m = MetricTarget(name="m", source="docker_cpu" if value is None else "prometheus",
                     query=None if value is None else 'x{a="{workload}"}', type=type_, target=100 if value else 50)
    reading = levels(55, 55, 55) if value is None else MetricReading.success("m", T0, value)
    p = propose(m, reading, 3, 3, 0.1)
    assert (p.replicas, p.reason) == (expected, "within_tolerance")
    assert within(1.1, 0.1) and within(0.9, 0.1) and not within(1.1000001, 0.1)


def _spec(**kw: Any) -> AutoscalingSpec:
    m = {"name": "rps", "query": 'sum(x{workload="{workload}"})', "type": "value", "target": 100}
    return AutoscalingSpec.model_validate({"metrics": [m], **kw})


def test_per_direction_tolerance():
    behavior = {
        "scale_up": {"tolerance": 0.05, "policies": [{"type": "percent", "value": 1000}]},
        "scale_down": {"tolerance": 0.3, "policies": [{"type": "percent", "value": 100}]},
    }
    s = _spec(behavior=behavior)
    assert s.tolerances() == (0.05, 0.3)
    up = decide(s, (1, 20), [MetricReading.success("rps", T0, 108)], 10, 10, PolicyState(), T0)
    assert (up.desired, up.reason) == (11, "scale_up")
    hold = decide(s, (1, 20), [MetricReading.success("rps", T0, 75)], 10, 10, PolicyState(), T0)
    assert (hold.desired, hold.reason) == (10, "within_tolerance")
    down = decide(s, (1, 20), [MetricReading.success("rps", T0, 65)], 10, 10, PolicyState(), T0)
    assert (down.desired, down.reason) == (7, "scale_down")
    assert _spec().tolerances() == (0.1, 0.1)
    only_up = {"scale_up": {"tolerance": 0, "policies": [{"type": "pods", "value": 4}]}}
    assert _spec(tolerance=0.2, behavior=only_up).tolerances() == (0.0, 0.2)


@pytest.mark.parametrize(("direction", "value"), [("scale_up", -0.1), ("scale_down", 1.0), ("scale_down", "x")])
def test_per_direction_tolerance_validation_names_the_field(direction, value):
    doc = {
        "name": "web",
        "target": "docker",
        "image": "x:1",
        "autoscaling": {
            "metrics": [{"name": "rps", "query": 'x{a="{workload}"}', "target": 1}],
            "behavior": {direction: {"tolerance": value}},
        },
    }
    with pytest.raises(SpecError) as exc:
        parse_workload(doc, "web.yaml")
    assert f"autoscaling.behavior.{direction}.tolerance" in str(exc.value), str(exc.value)


def test_new_fields_unset_keep_the_config_hash():
    """A spec without the new fields hashes as before them (pinned from the previous release)."""
    m = {"name": "rps", "query": 'sum(x{workload="{workload}"})', "type": "average_value", "target": 10}
    assert AutoscalingSpec.model_validate({"metrics": [m], "burst": {}}).config_hash() == "534ea232e21a"


def test_failed_metric_tick_records_no_recommendation():
    """Today's hold (a failed metric forbids the scale-down) must not block a later scale-down."""
    s = _spec(metrics=[
        {"name": "rps", "query": 'sum(x{workload="{workload}"})', "type": "value", "target": 100},
        {"name": "lat", "query": 'sum(y{workload="{workload}"})', "type": "value", "target": 10},
    ])
    held = decide(s, (1, 10), [MetricReading.success("rps", T0, 10), MetricReading.failure("lat", T0, "timeout")],
                  5, 5, PolicyState(), T0)
    assert (held.desired, held.reason) == (5, "missing_metrics_hold")
    assert held.state.recommendations == []
    later = T0 + timedelta(seconds=15)
    ok = [MetricReading.success("rps", later, 10), MetricReading.success("lat", later, 0.5)]
    d = decide(s, (1, 10), ok, 5, 5, held.state, later)
    assert (d.desired, d.reason) == (1, "scale_down")
    # a scale-up despite a failed metric is recorded like any other (the HPA acts on it too)
    up = decide(s, (1, 10), [MetricReading.success("rps", T0, 900), MetricReading.failure("lat", T0, "http")],
                5, 5, PolicyState(), T0)
    assert up.desired > 5 and [r.replicas for r in up.state.recommendations] == [45]


def test_first_seen_workload_is_seeded_inside_the_policy():
    s = _spec()  # default scale-down window: 300 s
    reading = [MetricReading.success("rps", T0, 10)]
    first = decide(s, (1, 10), reading, 6, 6, None, T0)
    assert (first.desired, first.reason) == (6, "stabilized_down")
    assert seed_state(s, 6, T0).recommendations[0].replicas == 6
    empty = decide(s, (1, 10), reading, 6, 6, PolicyState(), T0)
    assert (empty.desired, empty.reason) == (1, "scale_down")
    record = DecisionRecord.model_validate_json(DecisionRecord.of(s, None, first).model_dump_json())
    assert replay(record) == first
    assert seed_state(_spec(behavior={"scale_down": {"stabilization_window": 0, "policies": [
        {"type": "pods", "value": 1}]}}), 6, T0) == PolicyState()
    assert seed_state(s, 0, T0) == PolicyState()


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.sampled_from("TFP"), min_size=1, max_size=6),
    st.lists(st.floats(0, 500, allow_nan=False), min_size=0, max_size=6),
    st.sampled_from([CPU, RPS]),
)
def test_scale_up_never_proposes_fewer_than_current_when_filled(readiness, values, base):
    """With fills, a proposal never moves against the raw ratio (the direction-flip rule)."""
    replicas = pods("".join(readiness))
    reading = levels(*values)
    current = len(replicas)
    ready = sum(1 for r in replicas if r.ready and not r.pending)
    p = propose(metric(base, 50), reading, current, ready, 0.1, replicas)
    if p.replicas is None or p.usage_ratio is None:
        return
    filled = len(values) < len(replicas) or any(r.pending or not r.ready for r in replicas)
    if filled and p.usage_ratio > 1:
        assert p.replicas >= current
