"""``swarm_target``: a :class:`TargetHarness` over the real single-node Swarm."""

from __future__ import annotations

from collections.abc import Iterator

import docker
import pytest

from scalewise.orchestrators.swarm import SwarmOrchestrator
from scalewise.spec import WorkloadSpec
from tests.support.targets import TargetHarness, docker_env, docker_exec_fetch, make_cleanup, serve, spec_factory


def running_task_containers(name: str) -> list[str]:
    """Container ids of the running tasks of service ``name`` (only that service: the task filter
    matches name prefixes, so ``<name>-canary``'s tasks are left out)."""
    client = docker.from_env(timeout=30)
    try:
        ids: list[str] = []
        service_id = client.api.inspect_service(name)["ID"]
        for task in client.api.tasks(filters={"service": service_id, "desired-state": "running"}):
            if task.get("ServiceID") != service_id:
                continue
            status = task.get("Status") or {}
            cid = (status.get("ContainerStatus") or {}).get("ContainerID")
            if status.get("State") == "running" and cid:
                ids.append(cid)
        return ids
    finally:
        client.close()


def swarm_fetch(spec: WorkloadSpec) -> list[str]:
    """The page each running task container of ``spec`` serves on 127.0.0.1:8080 (via docker exec)."""
    return docker_exec_fetch(running_task_containers(spec.name))


@pytest.fixture
def swarm_target(docker_engine: None) -> Iterator[TargetHarness]:
    orchestrator = SwarmOrchestrator.from_env()
    created: list[WorkloadSpec] = []
    yield from serve(
        TargetHarness(
            orchestrator=orchestrator,
            make_spec=spec_factory("swarm", created),
            cleanup=make_cleanup(orchestrator, created),
            fetch=swarm_fetch,
            created=created,
            live_env=lambda spec: docker_env(running_task_containers(spec.name)),
        )
    )
