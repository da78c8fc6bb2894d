"""The operations service (``scalewise.operations``) over the in-memory fake orchestrator: re-decide on
stale versions, bounds, rollback plans executed exactly, failed rollouts undone. Seconds, no engine."""

from __future__ import annotations

import pytest

from scalewise import operations
from scalewise.errors import ConflictError, PermanentError, RolloutFailed, SpecError
from scalewise.model import WorkloadState
from scalewise.orchestrators.fake import BROKEN_IMAGE, FakeOrchestrator
from scalewise.revisions import plan_rollback
from scalewise.spec import WorkloadSpec

V1, V2, V3 = "scalewise/busybox:1", "scalewise/busybox:2", "scalewise/busybox:3"


def make_spec(name: str = "web", initial: int = 2, image: str = V1) -> WorkloadSpec:
    return WorkloadSpec.model_validate(
        {"name": name, "target": "docker", "image": image, "replicas": {"min": 1, "max": 6, "initial": initial}}
    )


class RacingFake(FakeOrchestrator):
    """Another writer changes the count (to 1, or 2 when at 1) just before each of our first ``races``
    writes lands."""

    def __init__(self, races: int) -> None:
        super().__init__()
        self.races = races

    def set_replicas(self, spec: WorkloadSpec, replicas: int, expected_version: str) -> WorkloadState:
        if self.races > 0:
            self.races -= 1
            now = self.read(spec)
            super().set_replicas(spec, 2 if now.desired_replicas == 1 else 1, now.version)
        return super().set_replicas(spec, replicas, expected_version)


@pytest.mark.parametrize(
    ("mode", "amount", "expected", "reason"),
    [("absolute", 5, 5, None), ("out", 10, 6, None), ("in", 1, 1, None), ("absolute", 2, 2, "no_change")],
)
def test_scale_writes_the_planned_absolute_count(mode: str, amount: int, expected: int, reason: str | None) -> None:
    orch, spec = FakeOrchestrator(), make_spec()
    orch.apply(spec)
    outcome = operations.scale(orch, spec, mode, amount)  # type: ignore[arg-type]
    assert orch.read(spec).desired_replicas == expected
    assert outcome.changed is (reason is None)
    if reason is not None:
        assert outcome.reason_code == reason


def test_scale_outside_the_bounds_is_refused_naming_the_field_and_changes_nothing() -> None:
    orch, spec = FakeOrchestrator(), make_spec()
    before = orch.apply(spec)
    with pytest.raises(SpecError, match=r"replicas.*7 is outside \[min=1, max=6\]"):
        operations.scale(orch, spec, "absolute", 7)
    assert orch.read(spec) == before


def test_a_stale_write_is_decided_again_on_a_fresh_read() -> None:
    orch, spec = RacingFake(races=2), make_spec()
    orch.apply(spec)
    outcome = operations.scale(orch, spec, "out", 1)
    assert outcome.conflicts == 2
    assert outcome.after.desired_replicas == orch.read(spec).desired_replicas


def test_a_workload_that_keeps_changing_is_given_up_after_max_redecide() -> None:
    orch, spec = RacingFake(races=operations.MAX_REDECIDE), make_spec()
    orch.apply(spec)
    with pytest.raises(ConflictError, match="gave up"):
        operations.scale(orch, spec, "absolute", 4)


def test_a_failed_rollout_is_undone_and_names_the_old_revision() -> None:
    orch, spec = FakeOrchestrator(), make_spec()
    orch.apply(spec)
    with pytest.raises(RolloutFailed) as caught:
        operations.rolling_update(orch, spec, BROKEN_IMAGE, timeout_s=30)
    assert caught.value.rolled_back_to == 1
    state = orch.read(spec)
    assert (state.image, state.revision, state.ready_replicas) == (V1, 1, 2)


def test_rolling_update_converges_and_records_one_revision() -> None:
    orch, spec = FakeOrchestrator(), make_spec()
    orch.apply(spec)
    outcome, result = operations.rolling_update(orch, spec, V2, timeout_s=30)
    assert outcome.changed and result.converged
    assert [(r.number, r.image) for r in orch.revisions(spec)] == [(1, V1), (2, V2)]
    again, _ = operations.rolling_update(orch, spec, V2, timeout_s=30)
    assert not again.changed and len(orch.revisions(spec)) == 2


def test_a_rollback_plan_is_executed_exactly_and_a_retry_writes_nothing() -> None:
    orch, spec = FakeOrchestrator(), make_spec()
    orch.apply(spec)
    operations.update_image(orch, spec, V2)
    operations.update_image(orch, spec, V3)
    plan = plan_rollback(orch.read(spec), orch.revisions(spec), 1)
    first = operations.rollback(orch, spec, plan)
    assert first.after.image == V1 and first.after.revision == 4
    version = orch.read(spec).version
    retried = operations.rollback(orch, spec, plan)  # a retried task whose first attempt wrote
    assert retried.changed and orch.read(spec).version == version


def test_a_plan_made_before_another_change_is_refused() -> None:
    orch, spec = FakeOrchestrator(), make_spec()
    orch.apply(spec)
    operations.update_image(orch, spec, V2)
    plan = plan_rollback(orch.read(spec), orch.revisions(spec), None)
    operations.update_image(orch, spec, V3)
    with pytest.raises(PermanentError, match="plan the rollback again"):
        operations.rollback(orch, spec, plan)
    assert orch.read(spec).image == V3


def test_the_wait_is_bounded_in_virtual_time() -> None:
    orch, spec = FakeOrchestrator(), make_spec(image=BROKEN_IMAGE)
    orch.apply(spec)
    progress: list[int] = []
    result = orch.wait_converged(spec, timeout_s=120, poll_s=1, on_progress=lambda s: progress.append(s.ready_replicas))
    assert (result.converged, result.reason) == (False, "timeout")
    assert result.detail.startswith("after 120s")
    assert orch.clock() == pytest.approx(120)
    assert set(progress) == {0} and len(progress) >= 100
