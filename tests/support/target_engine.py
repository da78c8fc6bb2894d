"""``docker_target``: a :class:`TargetHarness` over the real plain Docker engine (containers only)."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator

import pytest

from scalewise.errors import ScalewiseError
from scalewise.orchestrators.engine import EngineOrchestrator
from scalewise.spec import WorkloadSpec
from tests.support.targets import TargetHarness, spec_factory


def _docker(*args: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["docker", *args], capture_output=True, text=True, timeout=timeout)


def replica_ids(name: str, running_only: bool = True) -> list[str]:
    """Ids of the replica containers of workload ``name`` (via the docker CLI, not the adapter)."""
    args = ["ps", "-q", "--no-trunc", "--filter", f"label=scalewise.workload={name}"]
    args += ["--filter", "label=scalewise.role=replica"]
    if not running_only:
        args.insert(1, "-a")
    proc = _docker(*args)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.split()


def all_ids(name: str) -> list[str]:
    """Every container (replicas and anchors, any state) of workload ``name``."""
    proc = _docker("ps", "-aq", "--no-trunc", "--filter", f"label=scalewise.workload={name}")
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.split()


def page(container_id: str) -> str:
    proc = _docker("exec", container_id, "wget", "-q", "-O", "-", "http://127.0.0.1:8080/", timeout=20)
    return proc.stdout.strip() if proc.returncode == 0 else f"<error {proc.returncode}>"


def engine_fetch(spec: WorkloadSpec) -> list[str]:
    """The page each running replica container of ``spec`` serves on 127.0.0.1:8080 (docker exec)."""
    return [page(cid) for cid in replica_ids(spec.name)]


def force_remove(name: str) -> None:
    """Last-resort cleanup of everything labelled with workload ``name``."""
    ids = all_ids(name)
    if ids:
        _docker("rm", "-f", *ids, timeout=60)


@pytest.fixture
def docker_target(docker_engine: None) -> Iterator[TargetHarness]:
    orchestrator = EngineOrchestrator.from_env()
    created: list[WorkloadSpec] = []

    def cleanup() -> None:
        errors: list[str] = []
        while created:
            spec = created.pop()
            try:
                orchestrator.remove(spec)
            except ScalewiseError as exc:
                errors.append(f"{spec.name}: {exc}")
            force_remove(spec.name)
        if errors:
            raise AssertionError("cleanup failed: " + "; ".join(errors))

    harness = TargetHarness(
        orchestrator=orchestrator,
        make_spec=spec_factory("docker", created),
        cleanup=cleanup,
        fetch=engine_fetch,
        created=created,
    )
    try:
        yield harness
    finally:
        try:
            cleanup()
        finally:
            orchestrator.close()
