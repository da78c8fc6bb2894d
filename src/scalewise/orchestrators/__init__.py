"""Orchestrator adapters, one file per target. SDKs are imported only inside each adapter module."""

from __future__ import annotations

import threading

from scalewise.errors import SpecError
from scalewise.orchestrators.base import Orchestrator

_lock = threading.Lock()
_cache: dict[str, Orchestrator] = {}


def create(target: str) -> Orchestrator:
    """A new adapter for ``target``, configured from the environment (DOCKER_HOST, KUBECONFIG...)."""
    if target == "swarm":
        from scalewise.orchestrators.swarm import SwarmOrchestrator

        return SwarmOrchestrator.from_env()
    if target == "docker":
        from scalewise.orchestrators.engine import EngineOrchestrator

        return EngineOrchestrator.from_env()
    if target == "kubernetes":
        from scalewise.orchestrators.kube import KubernetesOrchestrator

        return KubernetesOrchestrator.from_env()
    raise SpecError("parameter", "target", f"unknown target {target!r} (swarm, docker, kubernetes)")


def for_target(target: str) -> Orchestrator:
    """A process-wide adapter for ``target`` (clients are reused across tasks)."""
    with _lock:
        if target not in _cache:
            _cache[target] = create(target)
        return _cache[target]


def reset() -> None:
    """Close and forget cached adapters (tests; after changing the environment)."""
    with _lock:
        for orch in _cache.values():
            orch.close()
        _cache.clear()


__all__ = ["Orchestrator", "create", "for_target", "reset"]
