"""Pure parts of replica ownership: the hold itself and how long a manual scale pins."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from hypothesis import given
from hypothesis import strategies as st

from flows.scaling import hold_seconds
from scalewise.hold import ManualHold, make_hold
from scalewise.spec import WorkloadSpec

NOW = datetime(2026, 11, 28, 10, 32, 0, tzinfo=UTC)


def spec(autoscaling: dict[str, object] | None) -> WorkloadSpec:
    doc: dict[str, object] = {"name": "web", "target": "swarm", "image": "x:1", "replicas": {"min": 1, "max": 6}}
    if autoscaling is not None:
        doc["autoscaling"] = autoscaling
    return WorkloadSpec.model_validate(doc)


CPU = {"metrics": [{"name": "cpu", "source": "docker_cpu", "type": "utilization", "target": 60}]}


def test_the_hold_says_until_when() -> None:
    hold = make_hold(4, 600, NOW, by="cli:alice", operation="scale-out")
    assert hold.sentence("web") == "autoscaler will leave web at 4 until 10:42:00 UTC"
    assert hold.active(NOW) and hold.active(NOW + timedelta(seconds=599))
    assert not hold.active(NOW + timedelta(seconds=600))


def test_hold_time_comes_from_the_flag_else_the_spec_and_only_for_autoscaled_workloads() -> None:
    assert hold_seconds(spec(CPU), None) == 600.0  # the default: 10 minutes
    assert hold_seconds(spec({**CPU, "manual_hold": "90s"}), None) == 90.0
    assert hold_seconds(spec({**CPU, "manual_hold": "90s"}), 0) == 0.0  # --hold 0: no pin
    assert hold_seconds(spec(CPU), 1800) == 1800.0
    assert hold_seconds(spec(None), 1800) == 0.0  # nothing to hold against


@given(st.integers(min_value=0, max_value=100), st.floats(min_value=0.001, max_value=86400))
def test_a_hold_round_trips_and_ends_exactly_after_its_time(replicas: int, seconds: float) -> None:
    hold = make_hold(replicas, seconds, NOW)
    again = ManualHold.model_validate(hold.model_dump(mode="json"))
    assert again == hold
    assert again.active(NOW) and not again.active(NOW + timedelta(seconds=seconds))
