"""Swarm-specific behaviour of the adapter, against the real single-node Swarm (no mocks)."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from typing import Any

import docker
import docker.errors
import pytest

from scalewise import operations
from scalewise.errors import ConflictError, NotFoundError, PermanentError, TransientError
from scalewise.orchestrators import create
from scalewise.orchestrators.history import parse_history
from scalewise.orchestrators.swarm import (
    LABEL_MANAGED,
    LABEL_REVISION,
    LABEL_REVISIONS,
    LABEL_WORKLOAD,
    MAX_REVISIONS,
    SwarmOrchestrator,
    map_docker_error,
)
from scalewise.revisions import plan_rollback
from tests.support.docker_env import (
    CHECK_INTERVAL_S,
    HTTP_CHECK,
    IMAGE_BROKEN,
    IMAGE_V1,
    IMAGE_V2,
    IMAGE_V3,
    unique_name,
)
from tests.support.targets import TargetHarness, roll_back

NS = 1_000_000_000


@pytest.fixture
def raw(docker_engine: None) -> Iterator[docker.DockerClient]:
    client = docker.from_env(timeout=30)
    yield client
    client.close()


def raw_bump(raw: docker.DockerClient, name: str, **changes: Any) -> int:
    """Another writer: rewrite the service with its full current spec plus a label (and changes)."""
    service = raw.api.inspect_service(name)
    spec = service["Spec"]
    labels = {**(spec.get("Labels") or {}), "other-writer": unique_name("w")}
    template = {**spec["TaskTemplate"], **changes}
    raw.api.update_service(
        service["ID"],
        version=service["Version"]["Index"],
        name=spec["Name"],
        labels=labels,
        mode=spec["Mode"],
        task_template=template,
        update_config=spec.get("UpdateConfig"),
        rollback_config=spec.get("RollbackConfig"),
        endpoint_spec=spec.get("EndpointSpec"),
    )
    return int(raw.api.inspect_service(name)["Version"]["Index"])


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_factory_builds_a_swarm_adapter(docker_engine: None) -> None:
    orch = create("swarm")
    try:
        assert isinstance(orch, SwarmOrchestrator)
        assert orch.target == "swarm"
    finally:
        orch.close()


def test_concurrent_writer_between_read_and_write_conflicts(
    swarm_target: TargetHarness, raw: docker.DockerClient
) -> None:
    orch = swarm_target.orchestrator
    spec = swarm_target.make_spec(replicas=0, healthcheck=False)
    observed = orch.apply(spec)
    raw_bump(raw, spec.name)
    with pytest.raises(ConflictError, match="stale"):
        orch.set_replicas(spec, 2, observed.version)
    with pytest.raises(ConflictError):
        orch.update_image(spec, IMAGE_V2, observed.version)
    now = orch.read(spec)
    assert now.desired_replicas == 0
    assert now.image == IMAGE_V1


def test_a_rollback_planned_before_another_write_is_refused(swarm_target: TargetHarness) -> None:
    orch = swarm_target.orchestrator
    spec = swarm_target.make_spec(replicas=0, healthcheck=False)
    orch.apply(spec)
    orch.update_image(spec, IMAGE_V2, orch.read(spec).version)
    plan = plan_rollback(orch.read(spec), orch.revisions(spec), None)
    moved = orch.update_image(spec, IMAGE_V3, orch.read(spec).version)
    with pytest.raises(PermanentError, match="not 2 as planned"):
        operations.rollback(orch, spec, plan)
    assert orch.read(spec).version == moved.version
    # A retried task whose first attempt already wrote the plan writes nothing the second time.
    plan = plan_rollback(orch.read(spec), orch.revisions(spec), 1)
    first = operations.rollback(orch, spec, plan)
    again = operations.rollback(orch, spec, plan)
    assert again.changed and again.after.version == first.after.version == orch.read(spec).version
    assert [r.image for r in orch.revisions(spec)] == [IMAGE_V1, IMAGE_V2, IMAGE_V3, IMAGE_V1]


class RacingSwarm(SwarmOrchestrator):
    """An adapter whose write is preceded by another writer, after the adapter's version check."""

    def __init__(self, client: docker.DockerClient, rival: docker.DockerClient) -> None:
        super().__init__(client)
        self.rival = rival

    def _write(self, name: str, service: dict[str, Any], new_spec: dict[str, Any], version: int) -> None:
        raw_bump(self.rival, name)
        super()._write(name, service, new_spec, version)


def test_server_side_out_of_sequence_maps_to_conflict(
    swarm_target: TargetHarness, raw: docker.DockerClient
) -> None:
    spec = swarm_target.make_spec(replicas=0, healthcheck=False)
    observed = swarm_target.orchestrator.apply(spec)
    racing = RacingSwarm(docker.from_env(timeout=30), raw)
    try:
        with pytest.raises(ConflictError, match="changed since it was read"):
            racing.set_replicas(spec, 3, observed.version)
    finally:
        racing.close()
    assert swarm_target.orchestrator.read(spec).desired_replicas == 0


def test_writes_keep_the_rest_of_the_spec(swarm_target: TargetHarness, raw: docker.DockerClient) -> None:
    orch = swarm_target.orchestrator
    spec = swarm_target.make_spec(replicas=0, healthcheck=False)
    orch.apply(spec)
    raw_bump(raw, spec.name, ForceUpdate=7)
    orch.set_replicas(spec, 0, orch.read(spec).version)
    orch.update_image(spec, IMAGE_V2, orch.read(spec).version)
    svc = raw.api.inspect_service(spec.name)["Spec"]
    assert svc["TaskTemplate"]["ForceUpdate"] == 7
    assert svc["Labels"]["other-writer"].startswith("w-")
    assert svc["TaskTemplate"]["ContainerSpec"]["Image"] == IMAGE_V2


@pytest.mark.parametrize(
    "base_url",
    [
        pytest.param("closed-tcp", id="closed-tcp-port"),
        pytest.param("unix:///nonexistent/docker.sock", id="no-socket"),
    ],
)
def test_connection_errors_are_transient(swarm_target: TargetHarness, base_url: str) -> None:
    url = f"tcp://127.0.0.1:{closed_port()}" if base_url == "closed-tcp" else base_url
    orch = SwarmOrchestrator(docker.DockerClient(base_url=url, version="1.41", timeout=2))
    spec = swarm_target.make_spec()
    try:
        with pytest.raises(TransientError, match="unreachable"):
            orch.read(spec)
        with pytest.raises(TransientError):
            orch.set_replicas(spec, 1, "1")
        with pytest.raises(TransientError):
            orch.remove(spec)
    finally:
        orch.close()


def test_from_env_with_unreachable_engine_is_transient(
    docker_engine: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DOCKER_HOST", f"tcp://127.0.0.1:{closed_port()}")
    with pytest.raises(TransientError):
        SwarmOrchestrator.from_env(timeout_s=2)


def test_real_engine_errors_map_to_the_taxonomy(
    swarm_target: TargetHarness, raw: docker.DockerClient
) -> None:
    spec = swarm_target.make_spec(replicas=0, healthcheck=False)
    swarm_target.orchestrator.apply(spec)
    current = raw.api.inspect_service(spec.name)

    # 409: a second service of the same name.
    with pytest.raises(docker.errors.APIError) as dup:
        raw.api.create_service({"ContainerSpec": {"Image": IMAGE_V1}}, name=spec.name)
    assert dup.value.status_code == 409
    assert isinstance(map_docker_error(dup.value, "x"), ConflictError)

    # "update out of sequence": a write with an old Version.Index.
    raw_bump(raw, spec.name)
    with pytest.raises(docker.errors.APIError) as stale:
        raw.api.update_service(
            current["ID"], version=current["Version"]["Index"], fetch_current_spec=True, labels={"a": "b"}
        )
    assert isinstance(map_docker_error(stale.value, "x"), ConflictError)

    # 404: inspect of a missing service.
    with pytest.raises(docker.errors.APIError) as missing:
        raw.api.inspect_service(unique_name("missing"))
    mapped = map_docker_error(missing.value, "x")
    assert isinstance(mapped, NotFoundError)

    # Other 4xx: an invalid service name; the server's reason is kept.
    with pytest.raises(docker.errors.APIError) as bad:
        raw.api.create_service({"ContainerSpec": {"Image": IMAGE_V1}}, name="Not A Valid Name!")
    assert 400 <= (bad.value.status_code or 0) < 500
    mapped = map_docker_error(bad.value, "x")
    assert type(mapped) is PermanentError
    assert str(bad.value.explanation) in str(mapped)

    # ImageNotFound.
    with pytest.raises(docker.errors.ImageNotFound) as noimage:
        raw.images.get("scalewise/does-not-exist:0")
    mapped = map_docker_error(noimage.value, "x")
    assert isinstance(mapped, PermanentError)
    assert not isinstance(mapped, NotFoundError | TransientError)


def test_native_update_and_rollback_config_are_set(
    swarm_target: TargetHarness, raw: docker.DockerClient
) -> None:
    spec = swarm_target.make_spec(
        replicas=0, parallelism=2, delay="1500ms", order="stop-first", monitor="3s", max_failure_ratio=0.25
    )
    swarm_target.orchestrator.apply(spec)
    svc = raw.api.inspect_service(spec.name)["Spec"]
    expected = {
        "Parallelism": 2,
        "Delay": int(1.5 * NS),
        "Order": "stop-first",
        "Monitor": 3 * NS,
        "MaxFailureRatio": 0.25,
    }
    assert svc["UpdateConfig"] == {**expected, "FailureAction": "rollback"}
    assert svc["RollbackConfig"] == {**expected, "FailureAction": "pause"}
    cspec = svc["TaskTemplate"]["ContainerSpec"]
    assert cspec["Healthcheck"]["Test"] == ["CMD-SHELL", HTTP_CHECK]
    assert cspec["Healthcheck"]["Interval"] == CHECK_INTERVAL_S * NS
    assert cspec["Healthcheck"]["Retries"] == 3  # tests.support.targets: 3 retries, 5 s timeout
    assert cspec["Healthcheck"]["Timeout"] == 5 * NS
    assert cspec["StopGracePeriod"] == NS
    assert svc["Labels"][LABEL_WORKLOAD] == spec.name
    assert svc["Labels"][LABEL_MANAGED] == "true"
    assert svc["Labels"]["scalewise-test"] == "1"
    assert svc["Mode"] == {"Replicated": {"Replicas": 0}}


def test_apply_updates_an_existing_service(swarm_target: TargetHarness, raw: docker.DockerClient) -> None:
    orch = swarm_target.orchestrator
    spec = swarm_target.make_spec(replicas=0, healthcheck=False)
    first = orch.apply(spec, replicas=2)
    assert first.desired_replicas == 2
    changed = spec.model_copy(update={"env": {"GREETING": "hi"}, "image": IMAGE_V2})
    state = orch.apply(changed)
    assert state.desired_replicas == 2, "apply keeps the current replicas unless given"
    assert state.image == IMAGE_V2
    assert state.revision == 2
    svc = raw.api.inspect_service(spec.name)["Spec"]
    assert svc["TaskTemplate"]["ContainerSpec"]["Env"] == ["GREETING=hi"]
    # Swarm itself bumps the version while it rolls the change out: compare once it is steady.
    steady = orch.wait_converged(changed, timeout_s=60).state
    again = orch.apply(changed)
    assert again.version == steady.version
    zero = orch.apply(changed, replicas=0)
    assert zero.desired_replicas == 0


def test_history_survives_a_new_adapter_instance(swarm_target: TargetHarness) -> None:
    orch = swarm_target.orchestrator
    spec = swarm_target.make_spec(replicas=0, healthcheck=False)
    orch.apply(spec)
    orch.update_image(spec, IMAGE_V2, orch.read(spec).version)
    orch.update_image(spec, IMAGE_V3, orch.read(spec).version)
    history = orch.revisions(spec)

    fresh = SwarmOrchestrator.from_env()
    try:
        assert fresh.revisions(spec) == history
        state = fresh.read(spec)
        assert state.revision == 3
        assert state.image == IMAGE_V3
        back = roll_back(fresh, spec)
        assert back.image == IMAGE_V2
        assert back.revision == 4
        assert [r.image for r in fresh.revisions(spec)] == [IMAGE_V1, IMAGE_V2, IMAGE_V3, IMAGE_V2]
        with pytest.raises(PermanentError, match=r"known: 1 \(scalewise/busybox:1\)"):
            roll_back(fresh, spec, to_revision=42)
    finally:
        fresh.close()


def test_history_is_capped_and_stored_in_labels(
    swarm_target: TargetHarness, raw: docker.DockerClient
) -> None:
    orch = swarm_target.orchestrator
    spec = swarm_target.make_spec(replicas=0, healthcheck=False)
    orch.apply(spec)
    images = [IMAGE_V2, IMAGE_V3, IMAGE_V1]
    for i in range(MAX_REVISIONS + 2):
        orch.update_image(spec, images[i % 3], orch.read(spec).version)
    history = orch.revisions(spec)
    assert len(history) == MAX_REVISIONS
    assert history[-1].number == MAX_REVISIONS + 3
    assert history[0].number == 4
    labels = raw.api.inspect_service(spec.name)["Spec"]["Labels"]
    assert labels[LABEL_REVISION] == str(MAX_REVISIONS + 3)
    # 20 whole specs: stored compressed (history.py), every entry with its spec.
    assert labels[LABEL_REVISIONS].startswith("z:")
    stored = parse_history(labels[LABEL_REVISIONS])
    assert stored == history and all(r.template is not None for r in stored)
    with pytest.raises(PermanentError, match="unknown revision 1"):
        roll_back(orch, spec, to_revision=1)


def test_paused_update_reports_update_failed_then_rollback_recovers(swarm_target: TargetHarness) -> None:
    orch = swarm_target.orchestrator
    spec = swarm_target.make_spec(replicas=1, failure_action="pause")
    orch.apply(spec)
    assert orch.wait_converged(spec, timeout_s=60).converged
    orch.update_image(spec, IMAGE_BROKEN, orch.read(spec).version)
    result = orch.wait_converged(spec, timeout_s=60, poll_s=0.25)
    assert (result.converged, result.reason) == (False, "update_failed"), result
    assert result.state.update_state == "paused"
    assert result.state.ready_replicas == 1, "start-first: the old replica keeps serving"
    back = roll_back(orch, spec)
    assert back.image == IMAGE_V1
    final = orch.wait_converged(spec, timeout_s=60, poll_s=0.25)
    assert final.converged, final
    assert [r.image for r in orch.revisions(spec)] == [IMAGE_V1, IMAGE_BROKEN, IMAGE_V1]


def test_wait_converged_times_out_and_reports_progress(swarm_target: TargetHarness) -> None:
    orch = swarm_target.orchestrator
    spec = swarm_target.make_spec(replicas=2)
    orch.apply(spec)
    seen: list[int] = []
    result = orch.wait_converged(
        spec, timeout_s=0.3, poll_s=0.1, on_progress=lambda s: seen.append(s.ready_replicas)
    )
    assert (result.converged, result.reason) == (False, "timeout")
    assert "desired 2" in result.detail
    assert seen and result.elapsed_s < 5
    assert orch.wait_converged(spec, timeout_s=60).converged


def test_native_rollback_is_reported_once_then_the_restored_service_converges(
    swarm_target: TargetHarness,
) -> None:
    orch = swarm_target.orchestrator
    spec = swarm_target.make_spec(replicas=1)
    orch.apply(spec)
    assert orch.wait_converged(spec, timeout_s=60).converged
    orch.update_image(spec, IMAGE_BROKEN, orch.read(spec).version)
    failed = orch.wait_converged(spec, timeout_s=60, poll_s=0.25)
    assert (failed.converged, failed.reason) == (False, "rolled_back"), failed
    assert failed.state.image == IMAGE_V1
    # Swarm restored the whole previous spec, labels included: the failed revision is not listed.
    assert [r.image for r in orch.revisions(spec)] == [IMAGE_V1]
    again = orch.wait_converged(spec, timeout_s=30, poll_s=0.25)
    assert (again.converged, again.reason) == (True, "converged"), again
    assert again.state.update_state == "rollback_completed"
    # The next write clears Swarm's update status.
    scaled = orch.set_replicas(spec, 2, again.state.version)
    assert scaled.update_state is None
    assert orch.wait_converged(spec, timeout_s=60).converged
