"""The canary strategy in the spec (bad specs fail naming the field), the weight rule and the plan."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from scalewise.cli import load_steps
from scalewise.errors import SpecError
from scalewise.policy.canary import canary_replicas, plan_canary
from scalewise.revisions import render_template
from scalewise.spec import WorkloadSpec, parse_workload

ANALYSIS = {"metrics": [{"name": "error-ratio", "query": "up", "success_condition": "result[0] < 0.05"}]}


def workload(update: dict[str, Any]) -> WorkloadSpec:
    return parse_workload({"name": "web", "target": "docker", "image": "scalewise/busybox:1", "update": update},
                          "web.yaml")


def test_a_canary_spec_with_every_step_kind() -> None:
    spec = workload({"strategy": "canary", "steps": [
        {"set_weight": 20}, {"pause": {"duration": "2m"}}, {"analysis": ANALYSIS}, {"set_weight": 50}, {"pause": {}},
    ]})
    steps = spec.update.steps
    assert [s.describe() for s in steps] == [
        "set weight 20%", "pause 120s", "analysis: error-ratio", "set weight 50%", "pause until approved",
    ]
    # a revision records the steps as written (one key per step) and restores them
    template = render_template(spec)
    assert template["update"]["steps"][:2] == [{"set_weight": 20}, {"pause": {"duration": 120.0}}]
    assert WorkloadSpec.model_validate(spec.model_dump(mode="json")) == spec


def test_a_rolling_spec_renders_as_before_canaries_existed() -> None:
    update = render_template(workload({}))["update"]
    assert "strategy" not in update and "steps" not in update  # revision hashes of rolling workloads unchanged


@pytest.mark.parametrize(
    ("update", "field", "reason"),
    [
        ({"strategy": "canary"}, "update", "steps: a canary needs at least one step"),
        ({"strategy": "canary", "steps": []}, "update", "at least one step"),
        ({"strategy": "canary", "steps": [{"set_weight": 50}, {"set_weight": 20}]}, "update",
         "steps[1].set_weight: 20 is below the previous weight 50"),
        ({"strategy": "canary", "steps": [{"set_weight": 101}]}, "update.steps[0].set_weight",
         "less than or equal to 100"),
        ({"strategy": "canary", "steps": [{"set_weight": -1}]}, "update.steps[0].set_weight",
         "greater than or equal to 0"),
        ({"strategy": "canary", "steps": [{"set_weight": 10, "pause": {}}]}, "update.steps[0]",
         "exactly one of set_weight, pause, analysis (got: set_weight, pause"),
        ({"strategy": "canary", "steps": [{}]}, "update.steps[0]", "exactly one of"),
        ({"strategy": "canary", "steps": [{"wait": 3}]}, "update.steps[0].wait", "Extra inputs are not permitted"),
        ({"strategy": "canary", "steps": [{"pause": {"duration": "0s"}}]}, "update.steps[0].pause", "duration"),
        ({"strategy": "canary", "steps": [{"pause": {"duration": "8d"}}]}, "update.steps[0].pause", "outside"),
        ({"strategy": "canary", "steps": [{"analysis": {"metrics": [{"name": "e", "query": "up",
          "success_condition": "result[0] <"}]}}]}, "update.steps[0].analysis.metrics[0].success_condition",
         "ends too early"),
        ({"steps": [{"set_weight": 10}]}, "update", "steps: only with strategy: canary"),
        ({"strategy": "blue-green"}, "update.strategy", "'rolling' or 'canary'"),
    ],
)
def test_bad_canary_specs_fail_naming_the_field(update: dict[str, Any], field: str, reason: str) -> None:
    with pytest.raises(SpecError) as caught:
        workload(update)
    assert caught.value.field == field
    assert reason in str(caught.value)
    assert str(caught.value).startswith(f"web.yaml: {field}: ")


@pytest.mark.parametrize(("weight", "desired", "replicas"), [
    (0, 4, 1), (1, 4, 1), (20, 4, 1), (25, 4, 1), (26, 4, 2), (50, 3, 2), (100, 3, 3), (20, 0, 1), (10, 10, 1),
])
def test_weight_is_ceil_of_the_share_and_at_least_one(weight: int, desired: int, replicas: int) -> None:
    assert canary_replicas(weight, desired) == replicas


@given(weight=st.integers(0, 100), desired=st.integers(1, 1000))
def test_canary_replicas_bound_and_cover_the_weight(weight: int, desired: int) -> None:
    n = canary_replicas(weight, desired)
    assert 1 <= n <= desired
    assert n * 100 >= weight * desired  # never less than the asked share
    assert n == 1 or (n - 1) * 100 < weight * desired  # and the smallest count that covers it


def test_weight_outside_percent_is_refused() -> None:
    with pytest.raises(ValueError, match="weight: 101"):
        canary_replicas(101, 3)


def test_the_plan_names_every_step_with_its_replica_count() -> None:
    spec = workload({"strategy": "canary", "steps": [{"set_weight": 25}, {"pause": {}}, {"analysis": ANALYSIS}]})
    plan = plan_canary(spec.update.steps, 4, "scalewise/busybox:1", "scalewise/busybox:2")
    assert plan[:4] == [
        "canary scalewise/busybox:2 beside 4 x scalewise/busybox:1",
        "step 1: set weight 25% (1 canary replicas for 4 stable)",
        "step 2: pause until approved",
        "step 3: analysis: error-ratio",
    ]
    assert plan[4].startswith("then: promote") and plan[5].startswith("on an unready canary")


def test_steps_file_for_the_cli(tmp_path: Path) -> None:
    good = tmp_path / "steps.yaml"
    good.write_text("steps:\n  - set_weight: 50\n  - pause: {duration: 10s}\n  - pause: {}\n")
    assert [s.describe() for s in load_steps(good)] == ["set weight 50%", "pause 10s", "pause until approved"]
    bad = tmp_path / "bad.yaml"
    bad.write_text("steps:\n  - set_weight: 50\n  - set_weight: 150\n")
    with pytest.raises(SpecError, match=r"bad.yaml: steps\[1\].set_weight: Input should be less than or equal to 100"):
        load_steps(bad)
    down = tmp_path / "down.yaml"
    down.write_text("- set_weight: 50\n- set_weight: 10\n")
    with pytest.raises(SpecError, match=r"steps\[1\].set_weight: 10 is below the previous weight 50"):
        load_steps(down)
    empty = tmp_path / "empty.yaml"
    empty.write_text("steps: []\n")
    with pytest.raises(SpecError, match="at least one step"):
        load_steps(empty)


def test_history_detail_shows_a_canarys_timed_steps() -> None:
    from datetime import UTC, datetime

    from scalewise.audit import ActionRecord, Trigger
    from scalewise.history import detail

    plan = ["canary b:2 beside 2 x b:1", "step 1: set weight 50% (1 canary replicas for 2 stable)",
            "10:00:01 step 1: weight 50%: 1/1 canary replicas of b:2 ready", "10:00:02 step 2: paused 1s"]
    record = ActionRecord(operation="canary", workload="web", target="docker", trigger=Trigger(kind="cli"),
                          started_at=datetime.now(UTC), plan=plan)
    assert detail(record) == "10:00:01 step 1: weight 50%: 1/1 canary replicas of b:2 ready; 10:00:02 step 2: paused 1s"
    assert detail(record.model_copy(update={"operation": "rollback"})) == ""
