"""The orchestrator contract, run against every target (real engines only, no mocks).

Adding a target is one change: append its name to ``TARGETS`` once ``<name>_target`` exists as a
fixture yielding a :class:`tests.support.targets.TargetHarness`. ``fake`` is the in-memory
:class:`~scalewise.orchestrators.fake.FakeOrchestrator` (the fast tier runs the contract over it in seconds).
"""

from __future__ import annotations

import contextlib
import contextvars
import math
import threading
import time

import pytest
from prefect.states import State

from scalewise import operations, orchestrators
from scalewise.errors import (
    ConflictError,
    ConvergenceTimeout,
    NotFoundError,
    PermanentError,
    RolloutFailed,
    ScalewiseError,
)
from scalewise.local import LocalServer
from scalewise.model import ConvergeResult, WorkloadState
from scalewise.orchestrators.base import Orchestrator
from scalewise.revisions import plan_rollback, same_spec
from scalewise.spec import WorkloadSpec
from tests.support.docker_env import IMAGE_V1, IMAGE_V2, IMAGE_V3
from tests.support.faultproxy import fault_proxy
from tests.support.prefect_env import task_run_counts
from tests.support.targets import TargetHarness, roll_back

#: Targets reached over a network (the fault-proxy test routes their client through a proxy).
REAL_TARGETS = ["swarm", "docker", "kubernetes"]
TARGETS = ["fake", *REAL_TARGETS]
WAIT_S = 90.0


@pytest.fixture(params=TARGETS)
def target(request: pytest.FixtureRequest) -> TargetHarness:
    harness: TargetHarness = request.getfixturevalue(f"{request.param}_target")
    return harness


@pytest.fixture(params=REAL_TARGETS)
def real_target(request: pytest.FixtureRequest) -> TargetHarness:
    harness: TargetHarness = request.getfixturevalue(f"{request.param}_target")
    return harness


def converge(orch: Orchestrator, spec: WorkloadSpec, timeout_s: float = WAIT_S) -> WorkloadState:
    result = orch.wait_converged(spec, timeout_s=timeout_s, poll_s=0.5)
    assert result.converged, f"{spec.name} did not converge: {result.reason} {result.detail} {result.state}"
    assert result.reason == "converged"
    return result.state


def deployed(target: TargetHarness, replicas: int = 1, image: str = IMAGE_V1, **kw: object) -> WorkloadSpec:
    spec = target.make_spec(replicas=replicas, image=image, **kw)
    target.orchestrator.apply(spec)
    converge(target.orchestrator, spec)
    return spec


def allowed_unavailable(spec: WorkloadSpec, desired: int) -> int:
    value = spec.update.max_unavailable
    if isinstance(value, str):
        return math.floor(desired * int(value[:-1]) / 100)
    return value


def test_apply_creates_with_start_replicas_and_converges(target: TargetHarness) -> None:
    orch = target.orchestrator
    spec = target.make_spec(replicas=2)
    assert not orch.exists(spec)
    state = orch.apply(spec)
    assert state.name == spec.name
    assert state.target == spec.target
    assert state.desired_replicas == spec.replicas.start == 2
    assert state.image == IMAGE_V1
    assert orch.exists(spec)
    final = converge(orch, spec)
    assert final.desired_replicas == final.ready_replicas == final.updated_replicas == 2
    assert final.revision == 1


def test_apply_is_idempotent(target: TargetHarness) -> None:
    orch = target.orchestrator
    spec = deployed(target)
    before = orch.read(spec)
    again = orch.apply(spec)
    assert again.version == before.version, "a repeated apply of the same spec must not write"
    assert again.desired_replicas == before.desired_replicas
    assert again.revision == before.revision
    assert again.image == before.image
    assert converge(orch, spec).ready_replicas == 1


def test_read_missing_raises_not_found(target: TargetHarness) -> None:
    orch = target.orchestrator
    spec = target.make_spec()
    with pytest.raises(NotFoundError, match=spec.name):
        orch.read(spec)
    assert orch.exists(spec) is False


def test_set_replicas_up_and_down_converges(target: TargetHarness) -> None:
    orch = target.orchestrator
    spec = deployed(target, replicas=1)
    state = orch.set_replicas(spec, 3, orch.read(spec).version)
    assert state.desired_replicas == 3
    up = converge(orch, spec)
    assert up.ready_replicas == up.desired_replicas == 3
    down_state = orch.set_replicas(spec, 1, up.version)
    assert down_state.desired_replicas == 1
    down = converge(orch, spec)
    assert down.ready_replicas == down.desired_replicas == 1
    with pytest.raises(PermanentError):
        orch.set_replicas(spec, -1, down.version)


def test_replicas_listed_with_unique_stable_ids(target: TargetHarness) -> None:
    orch = target.orchestrator
    missing = target.make_spec()
    with pytest.raises(NotFoundError, match=missing.name):
        orch.replicas(missing)
    spec = deployed(target, replicas=1)
    orch.set_replicas(spec, 3, orch.read(spec).version)
    state = converge(orch, spec)
    listed = orch.replicas(spec)
    ids = [r.id for r in listed]
    assert len(listed) == state.desired_replicas == 3, listed
    assert len(set(ids)) == 3 and ids == sorted(ids), ids
    assert all(r.ready and not r.pending for r in listed), listed
    containers = [r.container_id for r in listed if r.container_id is not None]
    assert len(set(containers)) == len(containers), listed
    assert [r.id for r in orch.replicas(spec)] == ids, "ids must be stable across reads"
    orch.set_replicas(spec, 1, state.version)
    converge(orch, spec)
    after = orch.replicas(spec)
    assert len(after) == 1 and after[0].id in ids and after[0].ready, (after, ids)


def test_stale_version_conflicts_and_writes_nothing(target: TargetHarness) -> None:
    orch = target.orchestrator
    spec = deployed(target, replicas=1)
    stale = orch.read(spec).version
    orch.set_replicas(spec, 2, stale)
    after_first = converge(orch, spec)
    with pytest.raises(ConflictError):
        orch.set_replicas(spec, 3, stale)
    with pytest.raises(ConflictError):
        orch.update_image(spec, IMAGE_V2, stale)
    now = orch.read(spec)
    assert now.desired_replicas == 2
    assert now.image == IMAGE_V1
    assert now.version == after_first.version


def test_update_image_rolls_out_and_bumps_revision(target: TargetHarness) -> None:
    orch = target.orchestrator
    spec = deployed(target, replicas=2)
    before = orch.read(spec)
    state = orch.update_image(spec, IMAGE_V2, before.version)
    assert state.image == IMAGE_V2
    assert state.revision == before.revision + 1
    final = converge(orch, spec)
    assert final.image == IMAGE_V2
    assert final.desired_replicas == final.ready_replicas == final.updated_replicas == 2
    assert final.revision == before.revision + 1
    if target.fetch is not None:
        assert target.fetch(spec) == ["v2", "v2"]


def test_rollback_returns_to_previous_image(target: TargetHarness) -> None:
    orch = target.orchestrator
    spec = deployed(target, replicas=1)
    orch.update_image(spec, IMAGE_V2, orch.read(spec).version)
    on_v2 = converge(orch, spec)
    state = roll_back(orch, spec)
    assert state.image == IMAGE_V1
    assert state.revision > on_v2.revision
    final = converge(orch, spec)
    assert final.image == IMAGE_V1
    assert final.ready_replicas == final.updated_replicas == 1
    # Already running revision 1's spec: a rollback to it could change nothing, so it is refused.
    with pytest.raises(PermanentError, match="would change nothing"):
        roll_back(orch, spec, to_revision=1)
    assert orch.read(spec).version == final.version
    if target.fetch is not None:
        assert target.fetch(spec) == ["v1"]


def test_rollback_to_named_revision_after_two_updates(target: TargetHarness) -> None:
    orch = target.orchestrator
    spec = deployed(target, replicas=1)
    orch.update_image(spec, IMAGE_V2, orch.read(spec).version)
    converge(orch, spec)
    orch.update_image(spec, IMAGE_V3, orch.read(spec).version)
    on_v3 = converge(orch, spec)
    assert on_v3.image == IMAGE_V3
    history = orch.revisions(spec)
    assert [r.image for r in history][-3:] == [IMAGE_V1, IMAGE_V2, IMAGE_V3]
    first = next(r for r in history if r.image == IMAGE_V1)
    with pytest.raises(PermanentError, match="unknown revision 999"):
        roll_back(orch, spec, to_revision=999)
    state = roll_back(orch, spec, to_revision=first.number)
    assert state.image == IMAGE_V1
    final = converge(orch, spec)
    assert final.image == IMAGE_V1
    assert final.revision > on_v3.revision


def test_rollback_restores_the_whole_spec_of_the_planned_revision(target: TargetHarness) -> None:
    """Issue 9: rev 1 (:1), rev 2 (:2), rev 3 (:2 plus env). The default rollback goes to rev 2 (the
    newest earlier revision whose spec differs), recorded and executed alike; config comes back too."""
    assert target.live_env is not None
    orch = target.orchestrator
    spec = deployed(target, replicas=1)
    with pytest.raises(PermanentError, match="nothing to roll back to"):
        plan_rollback(orch.read(spec), orch.revisions(spec), None)
    orch.update_image(spec, IMAGE_V2, orch.read(spec).version)
    converge(orch, spec)
    with_env = WorkloadSpec.model_validate(
        {**spec.model_dump(), "image": IMAGE_V2, "env": {"GREETING": "hello"}}
    )
    orch.apply(with_env)
    on_3 = converge(orch, with_env)
    assert (on_3.image, on_3.revision) == (IMAGE_V2, 3)
    assert [e.get("GREETING") for e in target.live_env(spec)] == ["hello"]
    revisions = orch.revisions(spec)
    assert [(r.number, r.image) for r in revisions] == [(1, IMAGE_V1), (2, IMAGE_V2), (3, IMAGE_V2)]
    assert all(r.template is not None for r in revisions), revisions

    planned = plan_rollback(on_3, revisions, None)  # what a dry run records
    assert (planned.from_revision, planned.to_revision, planned.target.image) == (3, 2, IMAGE_V2)
    assert planned.describe()[0] == f"roll back from revision 3 ({IMAGE_V2}) to 2 ({IMAGE_V2})"
    assert any(c.startswith("env: ") for c in planned.changes), planned.changes
    executed = plan_rollback(orch.read(spec), orch.revisions(spec), None)  # what the real run computes
    assert executed == planned
    outcome = operations.rollback(orch, spec, executed)
    assert outcome.changed and outcome.plan == planned.describe()
    back = converge(orch, spec)
    assert back.image == IMAGE_V2 and back.revision > 3
    assert [e.get("GREETING") for e in target.live_env(spec)] == [None]
    current = next(r for r in orch.revisions(spec) if r.number == back.revision)
    assert same_spec(current, revisions[1]) and current.template == revisions[1].template

    # A named revision, any kept one: back to revision 1 (image and config).
    state = roll_back(orch, spec, to_revision=1)
    assert state.image == IMAGE_V1
    assert converge(orch, spec).image == IMAGE_V1
    assert [e.get("GREETING") for e in target.live_env(spec)] == [None]
    if target.fetch is not None:
        assert target.fetch(spec) == ["v1"]
    # ... and forward again to revision 3, env included.
    roll_back(orch, spec, to_revision=3)
    assert converge(orch, spec).image == IMAGE_V2
    assert [e.get("GREETING") for e in target.live_env(spec)] == ["hello"]


def test_failed_update_is_rolled_back_without_losing_capacity(target: TargetHarness) -> None:
    orch = target.orchestrator
    spec = deployed(target, replicas=2)
    desired = 2
    floor = desired - allowed_unavailable(spec, desired)
    before = orch.read(spec)
    samples: list[WorkloadState] = []
    stop = threading.Event()

    def sample() -> None:  # readiness throughout, whether the adapter rolls out in the background or inline
        while not stop.is_set():
            with contextlib.suppress(ScalewiseError):
                samples.append(orch.read(spec))
            stop.wait(0.25)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        try:
            orch.update_image(spec, target.broken_image, before.version)
        except RolloutFailed as exc:
            # An adapter that performs the rollout itself (plain engine) restores the old revision inline.
            assert exc.rolled_back_to == before.revision
        else:
            result = orch.wait_converged(spec, timeout_s=spec.update.timeout, poll_s=0.25)
            assert not result.converged
            assert result.reason in ("rolled_back", "update_failed", "timeout", "deadline_exceeded"), result
            if result.reason != "rolled_back":
                roll_back(orch, spec, to_revision=before.revision)
                result = orch.wait_converged(spec, timeout_s=WAIT_S, poll_s=0.25)
                assert result.converged, result
    finally:
        stop.set()
        sampler.join(timeout=10)
    final = orch.read(spec)
    assert final.image == IMAGE_V1
    assert final.ready_replicas == final.desired_replicas == desired
    assert samples, "on_progress was never called"
    lowest = min(s.ready_replicas for s in samples)
    assert lowest >= floor, f"ready dropped to {lowest} (< {floor}) during the failed update"
    if target.fetch is not None:
        assert target.fetch(spec) == ["v1", "v1"]
    # Waiting again after the failed rollout sees the restored workload as converged.
    assert converge(orch, spec).image == IMAGE_V1


def test_revisions_list_history_oldest_first(target: TargetHarness) -> None:
    orch = target.orchestrator
    spec = deployed(target, replicas=1, healthcheck=False)
    assert [(r.number, r.image) for r in orch.revisions(spec)] == [(1, IMAGE_V1)]
    orch.update_image(spec, IMAGE_V2, orch.read(spec).version)
    history = orch.revisions(spec)
    assert [r.image for r in history] == [IMAGE_V1, IMAGE_V2]
    assert [r.number for r in history] == sorted(r.number for r in history)
    assert history[-1].number == orch.read(spec).revision
    converge(orch, spec)


def test_remove_is_idempotent(target: TargetHarness) -> None:
    orch = target.orchestrator
    spec = deployed(target, replicas=1)
    orch.remove(spec)
    orch.remove(spec)
    assert orch.exists(spec) is False
    with pytest.raises(NotFoundError):
        orch.read(spec)


# --- bounded waits: a wait is bounded by its own limit, never retried ----------------------------------

BOUND_T = 15.0


def within_bound(elapsed: float, timeout_s: float) -> bool:
    """Generous for a loaded 2-core machine; a wait retried even twice would overshoot it."""
    return elapsed < timeout_s * 1.5 + 10


def test_wait_on_a_never_ready_workload_is_bounded_by_its_own_limit(target: TargetHarness) -> None:
    orch = target.orchestrator
    spec = target.make_spec(replicas=1, image=target.broken_image)
    orch.apply(spec)
    t0 = time.monotonic()
    result = orch.wait_converged(spec, timeout_s=BOUND_T, poll_s=0.5)
    elapsed = time.monotonic() - t0
    assert not result.converged and result.reason == "timeout", result
    assert not any(r.ready for r in orch.replicas(spec)), "a replica of a never-ready image is listed ready"
    assert within_bound(elapsed, BOUND_T), f"the adapter's wait took {elapsed:.1f}s for a {BOUND_T:g}s bound"


def test_flow_wait_on_a_vanishing_orchestrator_is_bounded_and_runs_once(
    real_target: TargetHarness, prefect_server: LocalServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    from prefect import flow

    from tasks.workload import wait_until_ready

    target = real_target
    spec = target.make_spec(replicas=1, image=target.broken_image)
    target.orchestrator.apply(spec)
    # The flow-level wait, with the orchestrator going away mid-wait (every read then fails with a
    # TransientError): the wait absorbs the errors until its own deadline, and the task runs once.
    with fault_proxy(target.upstream) as proxy:
        for key, value in target.route_env(proxy.address).items():
            monkeypatch.setenv(key, value)
        orchestrators.reset()

        @flow(name="bounded-wait")
        def bounded_wait(spec: WorkloadSpec) -> ConvergeResult:
            return wait_until_ready(spec, BOUND_T)

        outcome: list[object] = []
        context = contextvars.copy_context()  # the Prefect settings (the test server) live in context variables
        runner = threading.Thread(
            target=lambda: outcome.append(context.run(bounded_wait, spec, return_state=True)), daemon=True
        )
        t0 = time.monotonic()
        runner.start()
        deadline = time.monotonic() + 60
        while proxy.sent < 4:  # the wait's reads go through the proxy
            assert runner.is_alive(), f"the flow ended before reading through the proxy: {outcome}"
            assert time.monotonic() < deadline, f"no reads through the proxy ({proxy.served}, {proxy.sent})"
            time.sleep(0.05)
        proxy.cut()
        runner.join(timeout=BOUND_T * 5 + 60)
        elapsed = time.monotonic() - t0
    orchestrators.reset()
    assert outcome, "the flow did not finish"
    state = outcome[0]
    assert isinstance(state, State), state
    if state.is_completed():  # the wait had read a state before the cut: a timeout result
        waited = state.result()
        assert not waited.converged and waited.reason == "timeout", waited
        assert "unreachable" in waited.detail, waited.detail  # the last read failed: said, not hidden
    else:  # the cut came before the first read: ConvergenceTimeout (permanent), naming the last error
        with pytest.raises(ConvergenceTimeout, match="unreachable"):
            state.result()
    assert within_bound(elapsed, BOUND_T), f"the flow's wait took {elapsed:.1f}s for a {BOUND_T:g}s bound"
    assert task_run_counts(str(state.state_details.flow_run_id))["wait_until_ready"] == 1
