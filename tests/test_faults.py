"""Faults against real components: dockerd connection errors are retried by the task policy, a
4xx-class refusal is not, and a stale write is re-read and decided again."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import docker
import pytest
import yaml

from flows.scale import scale
from scalewise import operations, orchestrators
from scalewise.audit import Trigger
from scalewise.errors import PermanentError
from scalewise.local import LocalServer
from scalewise.model import WorkloadState
from scalewise.orchestrators.swarm import SwarmOrchestrator
from scalewise.spec import WorkloadSpec, parse_workload
from tests.support.docker_env import IMAGE_V1, health_check, unique_name
from tests.support.faultproxy import fault_proxy
from tests.support.prefect_env import task_run_counts

DOCKER_SOCK = "/var/run/docker.sock"


def spec_doc(name: str) -> dict[str, object]:
    return {
        "name": name, "target": "swarm", "image": IMAGE_V1,
        "healthcheck": health_check(),
        "replicas": {"min": 1, "max": 4, "initial": 1}, "stop_grace_period": "1s",
    }


@pytest.fixture()
def swarm_workload(docker_engine: None, workloads_dir: Path) -> Iterator[WorkloadSpec]:
    name = unique_name("fault")
    (workloads_dir / f"{name}.yaml").write_text(yaml.safe_dump(spec_doc(name)))
    spec = parse_workload(spec_doc(name))
    orch = SwarmOrchestrator.from_env()
    orch.apply(spec, 1)
    assert orch.wait_converged(spec, 60).converged
    yield spec
    orch.remove(spec)
    orchestrators.reset()


@pytest.mark.prefect
def test_dockerd_connection_errors_are_retried(
    swarm_workload: WorkloadSpec, prefect_server: LocalServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    with fault_proxy(f"unix://{DOCKER_SOCK}", drop_first=2) as proxy:
        monkeypatch.setenv("DOCKER_HOST", proxy.url)
        orchestrators.reset()
        record = scale(workload=swarm_workload.name, replicas=2, trigger=Trigger(kind="api", actor="test"))
        assert proxy.attempts > 2
    assert record.outcome == "succeeded" and record.after.replicas == 2
    counts = task_run_counts(str(record.flow_run_id))
    assert counts["read_state"] >= 2, counts  # the first attempt hit the dropped connections
    svc = docker.DockerClient(base_url=f"unix://{DOCKER_SOCK}").services.get(swarm_workload.name)
    assert svc.attrs["Spec"]["Mode"]["Replicated"]["Replicas"] == 2


@pytest.mark.prefect
def test_permanent_errors_are_not_retried(swarm_workload: WorkloadSpec, prefect_server: LocalServer) -> None:
    from prefect import flow

    from scalewise.model import Revision
    from scalewise.revisions import RollbackPlan
    from tasks.workload import apply_rollback

    stale = RollbackPlan(
        workload=swarm_workload.name, from_revision=99, from_image=swarm_workload.image,
        target=Revision(number=98, image=swarm_workload.image), changes=[],
    )

    @flow(name="fault-permanent")
    def roll_back_to_unknown(spec: WorkloadSpec) -> None:
        apply_rollback(spec, stale)  # refused: the workload is not on revision 99 as planned

    state = roll_back_to_unknown(swarm_workload, return_state=True)
    assert state.is_failed()
    with pytest.raises(PermanentError, match="99"):
        state.result()
    counts = task_run_counts(str(state.state_details.flow_run_id))
    assert counts["apply_rollback"] == 1, counts


class RacingSwarm(SwarmOrchestrator):
    """The real adapter, with a real second writer that changes the service between our read and write."""

    races = 1

    def set_replicas(self, spec: WorkloadSpec, replicas: int, expected_version: str) -> WorkloadState:
        if self.races:
            self.races -= 1
            svc = docker.from_env().services.get(spec.name)
            svc.scale(3)  # someone else scales to 3 after we read
        return super().set_replicas(spec, replicas, expected_version)


def test_stale_write_is_detected_and_re_decided(swarm_workload: WorkloadSpec) -> None:
    orch = RacingSwarm.from_env()
    outcome = operations.scale(orch, swarm_workload, "out", 1)
    # At least the raced write was refused (Swarm may move the version once more on its own under load).
    assert outcome.conflicts >= 1
    # Decided again on the fresh state: 3 (the other writer) + 1, not 1 + 1.
    assert outcome.after.desired_replicas == 4
    assert orch.read(swarm_workload).desired_replicas == 4


def test_a_timeout_is_never_transient_and_waits_are_never_retried() -> None:
    from scalewise.errors import ConvergenceTimeout, TransientError, UnreachableError
    from tasks.retry import RETRIES
    from tasks.workload import apply_image, apply_scale, read_state, wait_until_ready

    assert not issubclass(ConvergenceTimeout, TransientError)
    assert issubclass(UnreachableError, TransientError)
    assert wait_until_ready.retries == 0 and apply_image.retries == 0  # a wait carries its own deadline
    assert read_state.retries == apply_scale.retries == RETRIES  # plain reads and writes keep the policy


@pytest.mark.prefect
def test_a_wait_that_times_out_runs_once(swarm_workload: WorkloadSpec, prefect_server: LocalServer) -> None:
    from prefect import flow

    from scalewise.errors import ConvergenceTimeout

    @flow(name="fault-timeout")
    def scale_and_wait_too_little(spec: WorkloadSpec) -> None:
        from tasks.workload import apply_scale, wait_until_ready

        apply_scale(spec, "absolute", 3)
        result = wait_until_ready(spec, 0.5)  # 3 new replicas cannot be healthy in 0.5 s
        if not result.converged:
            raise ConvergenceTimeout(f"{spec.name}: {result.reason}")

    state = scale_and_wait_too_little(swarm_workload, return_state=True)
    assert state.is_failed()
    with pytest.raises(ConvergenceTimeout):
        state.result()
    counts = task_run_counts(str(state.state_details.flow_run_id))
    assert counts["wait_until_ready"] == 1 and counts["apply_scale"] == 1, counts
