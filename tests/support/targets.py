"""The harness every target fixture (``swarm_target``, ``docker_target``, ``kubernetes_target``) yields.

A harness owns an adapter and a spec factory for its target; ``cleanup`` removes every workload the
factory named (the fixture calls it in its finalizer, tests may call it early). The helpers below
(:func:`make_cleanup`, :func:`serve`, :func:`docker_exec_fetch`) are what the target fixtures share.
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from scalewise import operations
from scalewise.errors import ScalewiseError
from scalewise.model import WorkloadState
from scalewise.orchestrators.base import Orchestrator
from scalewise.revisions import plan_rollback
from scalewise.spec import WorkloadSpec
from tests.support.docker_env import IMAGE_BROKEN, IMAGE_V1, health_check, unique_name

#: Label put on every test workload so leftovers can be found by hand (``scalewise.`` is reserved).
TEST_SPEC_LABEL = "scalewise-test"


@dataclass
class TargetHarness:
    orchestrator: Orchestrator
    make_spec: Callable[..., WorkloadSpec]
    cleanup: Callable[[], None]
    #: Optional: what each running replica of ``spec`` answers on its HTTP port (the page text);
    #: ``None`` when the target cannot reach replicas (e.g. simulated pods).
    fetch: Callable[[WorkloadSpec], list[str]] | None = None
    created: list[WorkloadSpec] = field(default_factory=list)
    #: An image whose replicas never become healthy on this target (the failed-update case).
    broken_image: str = IMAGE_BROKEN
    #: Where ``orchestrators.for_target`` connects (``unix:///path`` or ``host:port``) ...
    upstream: str = field(default_factory=lambda: docker_upstream())
    #: ... and the environment that makes it connect to ``host:port`` instead (a fault proxy).
    route_env: Callable[[str], dict[str, str]] = field(default=lambda address: {"DOCKER_HOST": f"tcp://{address}"})
    #: The environment each live replica of ``spec`` runs with (containers, or the simulated pods'
    #: specs on Kubernetes), read around the adapter.
    live_env: Callable[[WorkloadSpec], list[dict[str, str]]] | None = None


def docker_upstream() -> str:
    """The Docker engine the SDK's ``from_env`` reaches (DOCKER_HOST, else the default socket)."""
    host = os.environ.get("DOCKER_HOST") or "unix:///var/run/docker.sock"
    return host.removeprefix("tcp://")



def roll_back(orch: Orchestrator, spec: WorkloadSpec, to_revision: int | None = None) -> WorkloadState:
    """What the rollback flow does: plan once from what the target reports, then execute that plan."""
    plan = plan_rollback(orch.read(spec), orch.revisions(spec), to_revision)
    return operations.rollback(orch, spec, plan).after


def spec_factory(target: str, created: list[WorkloadSpec], **fixed: Any) -> Callable[..., WorkloadSpec]:
    """``make_spec(name=None, replicas=1, image=IMAGE_V1, healthcheck=True, **update_overrides)``.

    Fast settings for a 2-core test machine: health checks every CHECK_INTERVAL_S (5s timeout, 3 retries: a check
    can take seconds on a loaded machine), a 2s update monitor window, 1s stop
    grace period, start-first one-at-a-time rolling updates with native rollback. ``fixed`` adds
    target-specific top-level fields (e.g. ``kubernetes={...}``).
    """

    def make_spec(
        name: str | None = None,
        replicas: int = 1,
        image: str = IMAGE_V1,
        healthcheck: bool = True,
        **update_overrides: Any,
    ) -> WorkloadSpec:
        update: dict[str, Any] = {
            "parallelism": 1,
            "order": "start-first",
            "max_surge": 1,
            "max_unavailable": 0,
            "delay": 0,
            "failure_action": "rollback",
            "monitor": 2,
            "timeout": 60,
        }
        update.update(update_overrides)
        data: dict[str, Any] = {
            "name": name or unique_name("sw"),
            "target": target,
            "image": image,
            "labels": {TEST_SPEC_LABEL: "1"},
            "replicas": {"min": 0, "max": max(10, replicas), "initial": replicas},
            "update": update,
            "stop_grace_period": 1,
            **fixed,
        }
        if healthcheck:
            data["healthcheck"] = health_check(timeout_s=5, retries=3)
        spec = WorkloadSpec.model_validate(data)
        created.append(spec)
        return spec

    return make_spec


def make_cleanup(
    orchestrator: Orchestrator, created: list[WorkloadSpec], after_remove: Callable[[str], None] | None = None
) -> Callable[[], None]:
    """``cleanup()``: remove every created workload (newest first), then call ``after_remove(name)``;
    raises AssertionError naming the workloads the adapter failed to remove."""

    def cleanup() -> None:
        errors: list[str] = []
        while created:
            spec = created.pop()
            try:
                orchestrator.remove(spec)
            except ScalewiseError as exc:
                errors.append(f"{spec.name}: {exc}")
            if after_remove is not None:
                after_remove(spec.name)
        if errors:
            raise AssertionError("cleanup failed: " + "; ".join(errors))

    return cleanup


def serve(harness: TargetHarness) -> Iterator[TargetHarness]:
    """Body of a target fixture: yield ``harness``, then clean up and close the adapter."""
    try:
        yield harness
    finally:
        try:
            harness.cleanup()
        finally:
            harness.orchestrator.close()


def docker_cli(*args: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    """Run the docker CLI (output captured as text)."""
    return subprocess.run(["docker", *args], capture_output=True, text=True, timeout=timeout)


def docker_env(container_ids: Iterable[str]) -> list[dict[str, str]]:
    """The environment of each container (``docker inspect``), as a dict."""
    out: list[dict[str, str]] = []
    for cid in container_ids:
        proc = docker_cli("inspect", "--format", "{{json .Config.Env}}", cid)
        assert proc.returncode == 0, proc.stderr
        pairs = json.loads(proc.stdout) or []
        out.append(dict(p.split("=", 1) for p in pairs))
    return out


def docker_exec_fetch(container_ids: Iterable[str]) -> list[str]:
    """The page each container serves on 127.0.0.1:8080 (``docker exec ... wget``), or ``<error rc>``."""
    texts: list[str] = []
    for cid in container_ids:
        proc = docker_cli("exec", cid, "wget", "-q", "-O", "-", "http://127.0.0.1:8080/", timeout=20)
        texts.append(proc.stdout.strip() if proc.returncode == 0 else f"<error {proc.returncode}>")
    return texts
