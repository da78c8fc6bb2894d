"""The operation flows end to end: a real Prefect server, a real single-node Swarm, the audit trail."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from uuid import UUID

import docker
import pytest
import yaml
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey, FlowRunFilter, FlowRunFilterId
from prefect.exceptions import ParameterTypeError

from flows.deploy import deploy
from flows.rollback import rollback
from flows.rolling_update import rolling_update
from flows.scale import scale
from flows.scale_in import scale_in
from flows.scale_out import scale_out
from scalewise import history, orchestrators
from scalewise.audit import Trigger
from scalewise.errors import NotFoundError, PermanentError, RolloutFailed, SpecError, StaleObservation
from scalewise.local import LocalServer
from tests.support.docker_env import IMAGE_BROKEN, IMAGE_V1, IMAGE_V2, health_check, unique_name

pytestmark = [pytest.mark.swarm, pytest.mark.prefect]


def spec_doc(name: str) -> dict[str, object]:
    return {
        "name": name,
        "target": "swarm",
        "image": IMAGE_V1,
        "healthcheck": health_check(),
        "replicas": {"min": 1, "max": 4, "initial": 2},
        "update": {"parallelism": 1, "order": "start-first", "monitor": "2s", "timeout": "60s"},
        "stop_grace_period": "1s",
    }


@pytest.fixture()
def workload(docker_engine: None, prefect_server: LocalServer, workloads_dir: Path) -> Iterator[str]:
    name = unique_name("flow")
    (workloads_dir / f"{name}.yaml").write_text(yaml.safe_dump(spec_doc(name)))
    yield name
    client = docker.from_env()
    for svc in client.services.list(filters={"name": name}):
        svc.remove()
    orchestrators.reset()


def service_state(name: str) -> tuple[int, str]:
    svc = docker.from_env().services.get(name)
    spec = svc.attrs["Spec"]
    return spec["Mode"]["Replicated"]["Replicas"], spec["TaskTemplate"]["ContainerSpec"]["Image"].split("@")[0]


def test_scenario_is_audited_with_trigger_before_after_and_reason(workload: str) -> None:
    ui = Trigger(kind="ui", actor="alice")
    deploy(workload=workload, reason="first deploy", trigger=ui)
    assert service_state(workload) == (2, IMAGE_V1)
    scale_out(workload=workload, by=1, reason="traffic up", trigger=Trigger(kind="cli", actor="bob"))
    assert service_state(workload)[0] == 3
    rolling_update(workload=workload, image=IMAGE_V2, reason="release 2")
    assert service_state(workload) == (3, IMAGE_V2)
    scale_in(workload=workload, by=5, reason="quiet night")  # bounded by min=1
    assert service_state(workload)[0] == 1
    rec = rollback(workload=workload, reason="bad release")
    assert service_state(workload) == (1, IMAGE_V1)
    assert rec.after.image == IMAGE_V1

    entries = history.fetch(workload)
    ops = [(e.record.operation, e.record.outcome) for e in entries]
    assert ops == [
        ("deploy", "succeeded"), ("scale-out", "succeeded"), ("rolling-update", "succeeded"),
        ("scale-in", "succeeded"), ("rollback", "succeeded"),
    ]
    first, out, upd, sin, rb = (e.record for e in entries)
    assert first.trigger == ui and first.reason == "first deploy" and first.after.replicas == 2
    assert out.trigger.kind == "cli" and out.trigger.actor == "bob"
    assert (out.before.replicas, out.after.replicas) == (2, 3)
    assert upd.trigger.kind == "api"  # called directly, not through a deployment
    assert (upd.before.image, upd.after.image) == (IMAGE_V1, IMAGE_V2)
    assert upd.after.revision == upd.before.revision + 1
    # The rollout's progress is in its run: the progress artifact ends at 100% on the new image.
    with get_client(sync_client=True) as client:
        bars = client.read_artifacts(
            artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=[f"rollout-{workload}"])),
            flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[UUID(upd.flow_run_id or "")])),
        )
    assert [(b.type, b.data) for b in bars] == [("progress", 100.0)], bars
    assert IMAGE_V2 in (bars[0].description or "") and "done: 3/3 ready" in (bars[0].description or ""), bars
    assert (sin.before.replicas, sin.after.replicas, sin.reason_code) == (3, 1, "clamped_min")
    assert (rb.before.image, rb.after.image, rb.reason) == (IMAGE_V2, IMAGE_V1, "bad release")
    assert all(e.run_url and e.record.flow_run_id in e.run_url for e in entries)
    assert all(e.record.durations["total_s"] > 0 for e in entries)
    # The same records went out as events on the workload's resource (what automations react to).
    # each action also announced itself as in_progress just before its first write
    every = wait_for_events(workload, 10)
    assert sorted(e["event"] for e in every if e["event"].endswith(".in_progress")) == sorted(
        f"scalewise.action.{op}.in_progress" for op in ("deploy", "scale-out", "rolling-update", "scale-in", "rollback")
    )
    events = [e for e in every if not e["event"].endswith(".in_progress")]
    assert [e["event"] for e in events] == [
        "scalewise.action.deploy.succeeded", "scalewise.action.scale-out.succeeded",
        "scalewise.action.rolling-update.succeeded", "scalewise.action.scale-in.succeeded",
        "scalewise.action.rollback.succeeded",
    ]
    assert events[1]["payload"]["trigger"] == {"kind": "cli", "actor": "bob", "detail": None}
    assert events[2]["resource"]["scalewise.target"] == "swarm"


def wait_for_events(workload: str, count: int, timeout_s: float = 20) -> list[dict[str, Any]]:
    import time

    from tests.support.prefect_env import read_events

    deadline = time.monotonic() + timeout_s
    events: list[dict[str, Any]] = []
    while time.monotonic() < deadline:
        stored = read_events({"resource": {"id": [f"scalewise.workload.{workload}"]}})
        events = [e for e in stored if e["event"].startswith("scalewise.action.")]
        if len(events) >= count:
            return events
        time.sleep(0.5)
    raise AssertionError(f"expected {count} action events, got {[e['event'] for e in events]}")


def test_broken_rollout_is_rolled_back_and_the_run_fails(workload: str) -> None:
    deploy(workload=workload, trigger=Trigger(kind="cli"))
    with pytest.raises(RolloutFailed):
        rolling_update(workload=workload, image=IMAGE_BROKEN, timeout_s=45)
    assert service_state(workload) == (2, IMAGE_V1)
    state = orchestrators.for_target("swarm").read(_spec(workload))
    assert state.ready_replicas == 2
    last = history.fetch(workload)[-1].record
    assert last.operation == "rolling-update" and last.outcome == "rolled_back"
    assert last.error and "RolloutFailed" in last.error
    with get_client(sync_client=True) as client:
        (bar,) = client.read_artifacts(
            artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=[f"rollout-{workload}"])),
            flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[UUID(last.flow_run_id or "")])),
        )
    assert bar.type == "progress" and "stopped: RolloutFailed" in (bar.description or ""), bar


def _spec(name: str):
    from scalewise.settings import workloads_path
    from scalewise.spec import get_workload

    return get_workload(workloads_path(), name)


def test_dry_run_plans_and_changes_nothing(workload: str) -> None:
    deploy(workload=workload)
    rec = scale(workload=workload, replicas=4, dry_run=True)
    assert rec.outcome == "planned" and rec.after.replicas == 4 and rec.plan
    rec2 = rolling_update(workload=workload, image=IMAGE_V2, dry_run=True)
    assert rec2.outcome == "planned" and rec2.after.image == IMAGE_V2
    assert service_state(workload) == (2, IMAGE_V1)
    assert [e.record.dry_run for e in history.fetch(workload)] == [False, True, True]


def test_bad_parameters_fail_clearly_and_change_nothing(workload: str) -> None:
    deploy(workload=workload)
    with pytest.raises(SpecError, match=r"parameter: replicas: 9 is outside \[min=1, max=4\]"):
        scale(workload=workload, replicas=9)
    with pytest.raises(ParameterTypeError, match="replicas"):
        scale(workload=workload, replicas=-1)
    with pytest.raises(ParameterTypeError, match="workload"):
        scale(workload="Not A Name", replicas=1)
    with pytest.raises(SpecError, match="unknown workload"):
        scale(workload="no-such-workload", replicas=1)
    with pytest.raises(ParameterTypeError, match="image"):
        rolling_update(workload=workload, image="bad image")
    assert service_state(workload) == (2, IMAGE_V1)
    failed = [e.record for e in history.fetch(workload) if e.record.outcome == "failed"]
    assert len(failed) == 1 and "outside" in (failed[0].error or "")


def test_scale_before_deploy_is_not_found(workload: str) -> None:
    with pytest.raises(NotFoundError, match="not deployed"):
        scale(workload=workload, replicas=2)


def test_stale_observation_is_refused(workload: str) -> None:
    from datetime import UTC, datetime, timedelta

    deploy(workload=workload)
    old = datetime.now(UTC) - timedelta(minutes=10)
    with pytest.raises(StaleObservation):
        scale(workload=workload, replicas=3, observed_at=old, max_observation_age_s=60)
    assert service_state(workload)[0] == 2


def test_one_operation_per_workload_at_a_time(workload: str, monkeypatch: pytest.MonkeyPatch) -> None:
    from prefect.concurrency.sync import concurrency

    from scalewise.errors import LockUnavailable
    from tasks.locking import ensure_lock, lock_name

    deploy(workload=workload)
    monkeypatch.setenv("SCALEWISE_LOCK_TIMEOUT", "2")
    ensure_lock(workload)
    with concurrency(lock_name(workload), occupy=1, strict=True), pytest.raises(LockUnavailable):
        scale(workload=workload, replicas=3)
    assert service_state(workload)[0] == 2
    with get_client(sync_client=True) as client:
        limit = client.read_global_concurrency_limit_by_name(lock_name(workload))
    assert limit.limit == 1 and limit.active_slots == 0


@pytest.mark.parametrize("target", ["docker", "swarm"])
def test_rollback_records_and_does_one_plan(
    target: str, docker_engine: None, prefect_server: LocalServer, workloads_dir: Path
) -> None:
    """Issue 9's scenario: rev 1 (:1), rev 2 (:2), rev 3 (:2 plus env). The dry run and the real run
    record the same plan (back to rev 2), the real run does it (env gone), and a rollback that could
    change nothing ends Failed with the reason."""
    from tests.support.target_engine import replica_ids
    from tests.support.target_swarm import running_task_containers
    from tests.support.targets import docker_env

    name = unique_name("rb")
    doc = {**spec_doc(name), "target": target, "replicas": {"min": 1, "max": 4, "initial": 1}}
    path = workloads_dir / f"{name}.yaml"
    path.write_text(yaml.safe_dump(doc))

    def greetings() -> list[str | None]:
        ids = replica_ids(name) if target == "docker" else running_task_containers(name)
        return [env.get("GREETING") for env in docker_env(ids)]

    try:
        deploy(workload=name)
        rolling_update(workload=name, image=IMAGE_V2)
        path.write_text(yaml.safe_dump({**doc, "env": {"GREETING": "hello"}}))
        deploy(workload=name, image=IMAGE_V2)
        assert greetings() == ["hello"]

        planned = rollback(workload=name, dry_run=True)
        assert planned.outcome == "planned"
        assert planned.plan[0] == f"roll back from revision 3 ({IMAGE_V2}) to 2 ({IMAGE_V2})"
        assert any("env" in line for line in planned.plan[1:]), planned.plan
        done = rollback(workload=name)
        assert done.outcome == "succeeded" and done.plan == planned.plan
        assert (done.after.image, done.after.revision) == (IMAGE_V2, 4)
        assert greetings() == [None]

        with pytest.raises(PermanentError, match="would change nothing"):
            rollback(workload=name, to_revision=2)
        last = history.fetch(name)[-1].record
        assert last.operation == "rollback" and last.outcome == "failed"
        assert last.error and "would change nothing" in last.error
    finally:
        with contextlib.suppress(Exception):
            orchestrators.for_target(target).remove(_spec(name))
        orchestrators.reset()
