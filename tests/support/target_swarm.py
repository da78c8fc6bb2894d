"""``swarm_target``: a :class:`TargetHarness` over the real single-node Swarm."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator

import docker
import pytest

from scalewise.errors import ScalewiseError
from scalewise.orchestrators.swarm import SwarmOrchestrator
from scalewise.spec import WorkloadSpec
from tests.support.targets import TargetHarness, spec_factory


def swarm_fetch(spec: WorkloadSpec) -> list[str]:
    """The page each running task container of ``spec`` serves on 127.0.0.1:8080 (via docker exec)."""
    client = docker.from_env(timeout=30)
    try:
        texts: list[str] = []
        for task in client.api.tasks(filters={"service": spec.name, "desired-state": "running"}):
            status = task.get("Status") or {}
            if status.get("State") != "running":
                continue
            cid = (status.get("ContainerStatus") or {}).get("ContainerID")
            if not cid:
                continue
            proc = subprocess.run(
                ["docker", "exec", cid, "wget", "-q", "-O", "-", "http://127.0.0.1:8080/"],
                capture_output=True,
                text=True,
                timeout=20,
            )
            texts.append(proc.stdout.strip() if proc.returncode == 0 else f"<error {proc.returncode}>")
        return texts
    finally:
        client.close()


@pytest.fixture
def swarm_target(docker_engine: None) -> Iterator[TargetHarness]:
    orchestrator = SwarmOrchestrator.from_env()
    created: list[WorkloadSpec] = []

    def cleanup() -> None:
        errors: list[str] = []
        while created:
            spec = created.pop()
            try:
                orchestrator.remove(spec)
            except ScalewiseError as exc:
                errors.append(f"{spec.name}: {exc}")
        if errors:
            raise AssertionError("cleanup failed: " + "; ".join(errors))

    harness = TargetHarness(
        orchestrator=orchestrator,
        make_spec=spec_factory("swarm", created),
        cleanup=cleanup,
        fetch=swarm_fetch,
        created=created,
    )
    try:
        yield harness
    finally:
        try:
            cleanup()
        finally:
            orchestrator.close()
