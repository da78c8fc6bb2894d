"""``docker_target``: a :class:`TargetHarness` over the real plain Docker engine (containers only)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from scalewise.orchestrators.engine import EngineOrchestrator
from scalewise.spec import WorkloadSpec
from tests.support.targets import (
    TargetHarness,
    docker_cli,
    docker_env,
    docker_exec_fetch,
    make_cleanup,
    serve,
    spec_factory,
)


def replica_ids(name: str, running_only: bool = True) -> list[str]:
    """Ids of the replica containers of workload ``name`` (via the docker CLI, not the adapter)."""
    args = ["ps", "-q", "--no-trunc", "--filter", f"label=scalewise.workload={name}"]
    args += ["--filter", "label=scalewise.role=replica"]
    if not running_only:
        args.insert(1, "-a")
    proc = docker_cli(*args)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.split()


def all_ids(name: str) -> list[str]:
    """Every container (replicas and anchors, any state) of workload ``name``."""
    proc = docker_cli("ps", "-aq", "--no-trunc", "--filter", f"label=scalewise.workload={name}")
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.split()


def engine_fetch(spec: WorkloadSpec) -> list[str]:
    """The page each running replica container of ``spec`` serves on 127.0.0.1:8080 (docker exec)."""
    return docker_exec_fetch(replica_ids(spec.name))


def force_remove(name: str) -> None:
    """Last-resort cleanup of everything labelled with workload ``name``."""
    ids = all_ids(name)
    if ids:
        docker_cli("rm", "-f", *ids, timeout=60)


@pytest.fixture
def docker_target(docker_engine: None) -> Iterator[TargetHarness]:
    orchestrator = EngineOrchestrator.from_env()
    created: list[WorkloadSpec] = []
    yield from serve(
        TargetHarness(
            orchestrator=orchestrator,
            make_spec=spec_factory("docker", created),
            cleanup=make_cleanup(orchestrator, created, after_remove=force_remove),
            fetch=engine_fetch,
            created=created,
            live_env=lambda spec: docker_env(replica_ids(spec.name)),
        )
    )
