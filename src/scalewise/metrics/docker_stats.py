"""CPU % per replica of a workload from the Docker engine (no Prometheus needed).

The replicas are the ones the workload's orchestrator listed for this read (``WorkloadRef.replicas``,
from ``Orchestrator.replicas``: plain-engine containers or Swarm tasks); this source knows nothing of
how an adapter labels its containers. Each listed replica that has a container and is not pending is
sampled twice with the engine's one-shot stats, ``interval`` seconds apart; its CPU % is
``(cpu_delta / system_delta) * online_cpus * 100`` (100 = one full core), keyed by the replica's id
(the container name). A replica without a usable pair of samples is left out (the policy then treats
it as a replica with a missing metric); no listing is a failed read ``source``, no started replica
a failed read ``no_replicas``.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import docker
import requests
from docker.errors import APIError, DockerException, NotFound

from scalewise.metrics.base import Clock, WorkloadRef, utc_now
from scalewise.policy.config import MetricTarget
from scalewise.policy.readings import MetricReading, ReplicaInfo


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

    @staticmethod
    def sampled(replicas: Sequence[ReplicaInfo]) -> list[ReplicaInfo]:
        """The listed replicas this source samples: started ones with a container."""
        return [r for r in replicas if r.container_id and not r.pending]

    def _sample(self, replica: ReplicaInfo) -> dict[str, Any] | None:
        try:
            stats: dict[str, Any] = self.client.api.stats(replica.container_id, stream=False, one_shot=True)
            return stats
        except (NotFound, APIError):
            return None

    def cpu_by_replica(self, replicas: Sequence[ReplicaInfo]) -> dict[str, float]:
        """CPU % of each sampled replica (:meth:`sampled`) by id; one without two usable samples is left out."""
        sampled = self.sampled(replicas)
        if not sampled:
            return {}
        workers = max(1, min(self.max_workers, len(sampled)))
        with ThreadPoolExecutor(max_workers=workers) as pool:
            first = list(pool.map(self._sample, sampled))
            time.sleep(self.interval)
            second = list(pool.map(self._sample, sampled))
        values: dict[str, float] = {}
        for replica, a, b in zip(sampled, first, second, strict=True):
            if a is None or b is None:
                continue
            pct = cpu_percent(a, b)
            if pct is not None:
                values[replica.id] = pct
        return values

    def read(self, metric: MetricTarget, workload: WorkloadRef) -> MetricReading:
        name = metric.name
        try:
            ref = workload.validated()
        except ValueError as exc:
            return MetricReading.failure(name, self._clock(), "bad_query", str(exc))
        if ref.replicas is None:
            return MetricReading.failure(
                name,
                self._clock(),
                "source",
                f"no replica listing for {ref.name!r}: pass WorkloadRef.of(spec, replicas=orchestrator.replicas(spec))",
            )
        if not self.sampled(ref.replicas):
            return MetricReading.failure(name, self._clock(), "no_replicas", f"no running container of {ref.name!r}")
        try:
            values = self.cpu_by_replica(ref.replicas)
        except (DockerException, requests.exceptions.RequestException) as exc:
            text = f"{type(exc).__name__}: {exc}"[:300]
            code = "timeout" if "timed out" in text.lower() else "connection"
            if isinstance(exc, APIError):
                code = "http"
            return MetricReading.failure(name, self._clock(), code, text)
        if not values:
            return MetricReading.failure(name, self._clock(), "source", "no container gave two usable samples")
        return MetricReading.per_replica(name, self._clock(), values)
