"""Metric sources: the protocol, the workload reference queries are rendered for, and ``read_all``.

The result type :class:`~scalewise.policy.readings.MetricReading` lives in the pure policy package
(the policy must not import this one); it is re-exported here. A source never raises for a failed
read and never turns one into a zero: it returns a reading with ``outcome`` ``empty`` or ``error``
and a stable ``error`` code (see :data:`~scalewise.policy.readings.ERROR_CODES`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Protocol, runtime_checkable

from scalewise.policy.config import MetricTarget
from scalewise.policy.readings import ERROR_CODES, MetricReading, ReplicaInfo
from scalewise.spec import TARGETS, check_name

if TYPE_CHECKING:
    from scalewise.spec import WorkloadSpec

__all__ = [
    "ERROR_CODES",
    "Clock",
    "MetricReading",
    "MetricSource",
    "ReplicaInfo",
    "WorkloadRef",
    "read_all",
    "utc_now",
]

Clock = Callable[[], datetime]


def utc_now() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class WorkloadRef:
    """What a query template may refer to: ``{workload}``, ``{namespace}``, ``{target}``; and the
    workload's replicas as its orchestrator listed them for this read (``Orchestrator.replicas``),
    which a source that samples replicas itself (``docker_cpu``) reads, keyed by their ids."""

    name: str
    namespace: str = "default"
    target: str = "docker"
    replicas: tuple[ReplicaInfo, ...] | None = None

    def validated(self) -> WorkloadRef:
        """Raise ValueError unless every field follows the workload-name rule (no injection)."""
        check_name(self.name)
        try:
            check_name(self.namespace)
        except ValueError as exc:
            raise ValueError(f"namespace {self.namespace!r}: {exc}") from None
        if self.target not in TARGETS:
            raise ValueError(f"unknown target {self.target!r}")
        return self

    @classmethod
    def of(cls, spec: WorkloadSpec, replicas: Sequence[ReplicaInfo] | None = None) -> WorkloadRef:
        listed = tuple(replicas) if replicas is not None else None
        return cls(name=spec.name, namespace=spec.kubernetes.namespace, target=spec.target, replicas=listed)


@runtime_checkable
class MetricSource(Protocol):
    """Reads one metric of one workload. Never raises for a failed read."""

    kind: str  # the MetricTarget.source it serves: "prometheus" or "docker_cpu"

    def read(self, metric: MetricTarget, workload: WorkloadRef) -> MetricReading: ...


def read_all(
    metrics: Iterable[MetricTarget],
    workload: WorkloadRef,
    sources: Mapping[str, MetricSource],
    clock: Clock = utc_now,
) -> list[MetricReading]:
    """One reading per metric, in order; a metric whose source is not configured is a failed read."""
    readings: list[MetricReading] = []
    for metric in metrics:
        source = sources.get(metric.source)
        if source is None:
            readings.append(
                MetricReading.failure(
                    metric.name, clock(), "source", f"no {metric.source!r} source configured"
                )
            )
            continue
        try:
            readings.append(source.read(metric, workload))
        except Exception as exc:  # a source bug must not become a zero either
            readings.append(
                MetricReading.failure(metric.name, clock(), "source", f"{type(exc).__name__}: {exc}")
            )
    return readings
