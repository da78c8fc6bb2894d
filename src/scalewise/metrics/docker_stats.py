"""CPU % per container of a workload from the Docker engine (no Prometheus needed).

Containers of a workload are the *running* containers labelled ``scalewise.workload=<name>``
(plain engine replicas; never-started anchors are excluded) plus those labelled
``com.docker.swarm.service.name=<name>`` (Swarm tasks). Each container is sampled twice with
``stats(stream=False)`` ``interval`` seconds apart; its CPU % is
``(cpu_delta / system_delta) * online_cpus * 100`` (100 = one full core), keyed by container name.
A container without a usable pair of samples is left out (the policy then treats it as a replica
with a missing metric); no running container is a failed read ``no_replicas``.
"""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import docker
import requests
from docker.errors import APIError, DockerException, NotFound

from scalewise.metrics.base import Clock, WorkloadRef, utc_now
from scalewise.orchestrators.docker_common import LABEL_ROLE, LABEL_WORKLOAD, ROLE_ANCHOR, ROLE_CANARY
from scalewise.policy.config import MetricTarget
from scalewise.policy.readings import MetricReading

LABEL_SWARM_SERVICE = "com.docker.swarm.service.name"


def cpu_percent(first: dict[str, Any], second: dict[str, Any]) -> float | None:
    """CPU % between two stats samples of one container, or None when they cannot be compared."""
    try:
        c1 = first["cpu_stats"]
        c2 = second["cpu_stats"]
        cpu_delta = c2["cpu_usage"]["total_usage"] - c1["cpu_usage"]["total_usage"]
        system_delta = c2["system_cpu_usage"] - c1["system_cpu_usage"]
    except (KeyError, TypeError):
        return None
    if system_delta <= 0 or cpu_delta < 0:
        return None
    online = c2.get("online_cpus") or len(c2["cpu_usage"].get("percpu_usage") or []) or 1
    return cpu_delta / system_delta * online * 100.0


class DockerCpuSource:
    """Reads ``docker_cpu`` metrics from the local (or given) Docker engine."""

    kind = "docker_cpu"

    def __init__(
        self,
        client: docker.DockerClient | None = None,
        *,
        interval: float = 0.5,
        timeout: float = 10.0,
        max_workers: int = 16,
        clock: Clock = utc_now,
    ) -> None:
        self._client = client
        self.interval = interval
        self.timeout = timeout
        self.max_workers = max_workers
        self._clock = clock

    @property
    def client(self) -> docker.DockerClient:
        if self._client is None:
            self._client = docker.from_env(timeout=int(max(1, self.timeout)))
        return self._client

    def containers(self, workload: str) -> list[Any]:
        """Running containers of the workload (plain-engine replicas and Swarm tasks), by name."""
        found: dict[str, Any] = {}
        for label in (f"{LABEL_WORKLOAD}={workload}", f"{LABEL_SWARM_SERVICE}={workload}"):
            for c in self.client.containers.list(filters={"label": label, "status": "running"}):
                if (c.labels or {}).get(LABEL_ROLE) in (ROLE_ANCHOR, ROLE_CANARY):  # not stable replicas
                    continue
                found[c.id] = c
        return sorted(found.values(), key=lambda c: c.name)

    def _sample(self, container: Any) -> dict[str, Any] | None:
        try:
            stats: dict[str, Any] = container.stats(stream=False, one_shot=True)
            return stats
        except (NotFound, APIError):
            return None

    def cpu_by_container(self, workload: str) -> dict[str, float]:
        return self._cpu(self.containers(workload))

    def _cpu(self, containers: list[Any]) -> dict[str, float]:
        if not containers:
            return {}
        workers = max(1, min(self.max_workers, len(containers)))
        with ThreadPoolExecutor(max_workers=workers) as pool:
            first = list(pool.map(self._sample, containers))
            time.sleep(self.interval)
            second = list(pool.map(self._sample, containers))
        values: dict[str, float] = {}
        for container, a, b in zip(containers, first, second, strict=True):
            if a is None or b is None:
                continue
            pct = cpu_percent(a, b)
            if pct is not None:
                values[container.name] = pct
        return values

    def read(self, metric: MetricTarget, workload: WorkloadRef) -> MetricReading:
        name = metric.name
        try:
            ref = workload.validated()
        except ValueError as exc:
            return MetricReading.failure(name, self._clock(), "bad_query", str(exc))
        try:
            containers = self.containers(ref.name)
            if not containers:
                return MetricReading.failure(
                    name, self._clock(), "no_replicas", f"no running container of {ref.name!r}"
                )
            values = self._cpu(containers)
        except (DockerException, requests.exceptions.RequestException) as exc:
            text = f"{type(exc).__name__}: {exc}"[:300]
            code = "timeout" if "timed out" in text.lower() else "connection"
            if isinstance(exc, APIError):
                code = "http"
            return MetricReading.failure(name, self._clock(), code, text)
        if not values:
            return MetricReading.failure(
                name, self._clock(), "source", "no container gave two usable samples"
            )
        return MetricReading.per_replica(name, self._clock(), values)
