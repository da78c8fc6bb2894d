"""The harness every target fixture (``swarm_target``, ``docker_target``, ``kubernetes_target``) yields.

A harness owns an adapter and a spec factory for its target; ``cleanup`` removes every workload the
factory named (the fixture calls it in its finalizer, tests may call it early).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from scalewise.orchestrators.base import Orchestrator
from scalewise.spec import WorkloadSpec
from tests.support.docker_env import HTTP_CHECK, IMAGE_BROKEN, IMAGE_V1, unique_name

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


def spec_factory(target: str, created: list[WorkloadSpec], **fixed: Any) -> Callable[..., WorkloadSpec]:
    """``make_spec(name=None, replicas=1, image=IMAGE_V1, healthcheck=True, **update_overrides)``.

    Fast settings for a 2-core test machine: 1s health checks, a 2s update monitor window, 1s stop
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
            data["healthcheck"] = {"command": HTTP_CHECK, "interval": 1, "timeout": 1, "retries": 2}
        spec = WorkloadSpec.model_validate(data)
        created.append(spec)
        return spec

    return make_spec
