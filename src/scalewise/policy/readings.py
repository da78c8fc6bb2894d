"""Pure input types shared by the policy and the metric sources (sources import them from here)."""

from __future__ import annotations

import math
from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

Outcome = Literal["ok", "empty", "error"]

#: Stable codes for ``MetricReading.error``.
ERROR_CODES: tuple[str, ...] = (
    "empty",  # the query returned no series
    "nan",  # the value was NaN
    "inf",  # the value was +Inf or -Inf
    "multiple_series",  # several series and multiple_series=error
    "http",  # HTTP error status / API error
    "connection",  # connection refused, DNS, TLS failure
    "timeout",  # the source did not answer in time
    "bad_query",  # template substitution refused (e.g. hostile name) or the query is malformed
    "no_replicas",  # a per-replica source found no running replica
    "no_ready_replicas",  # no ready replica to base a proposal on (set by the policy)
    "stale",  # older than stale_after (set by the policy)
    "not_read",  # no reading was supplied for a configured metric (set by the policy)
    "source",  # any other source failure
)


class MetricReading(BaseModel):
    """One read of one metric. A failed or empty read is a distinct outcome, never a zero."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str
    outcome: Outcome = "ok"
    value: float | None = Field(default=None, description="A single value (an aggregate)")
    values: dict[str, float] | None = Field(default=None, description="Per-replica values by replica id")
    timestamp: datetime
    error: str | None = Field(default=None, description="Stable code, see ERROR_CODES")
    detail: str = ""

    @model_validator(mode="after")
    def _consistent(self) -> MetricReading:
        if self.outcome == "ok":
            if (self.value is None) == (self.values is None):
                raise ValueError("an ok reading carries exactly one of 'value' or 'values'")
            numbers = [self.value] if self.value is not None else list((self.values or {}).values())
            for number in numbers:
                if number is None or not math.isfinite(number):
                    raise ValueError("an ok reading has only finite numbers (NaN/Inf are failed reads)")
            if self.error is not None:
                raise ValueError("an ok reading has no error code")
        else:
            if self.value is not None or self.values is not None:
                raise ValueError("a failed or empty reading carries no value")
            if self.error is None:
                object.__setattr__(self, "error", "empty" if self.outcome == "empty" else "source")
        return self

    @property
    def ok(self) -> bool:
        return self.outcome == "ok"

    @classmethod
    def success(cls, name: str, timestamp: datetime, value: float) -> MetricReading:
        return cls(name=name, timestamp=timestamp, value=value)

    @classmethod
    def per_replica(cls, name: str, timestamp: datetime, values: dict[str, float]) -> MetricReading:
        return cls(name=name, timestamp=timestamp, values=values)

    @classmethod
    def failure(cls, name: str, timestamp: datetime, error: str, detail: str = "") -> MetricReading:
        outcome: Outcome = "empty" if error == "empty" else "error"
        return cls(name=name, outcome=outcome, timestamp=timestamp, error=error, detail=detail)


class ReplicaInfo(BaseModel):
    """Readiness of one replica (pod, task, container), identified like the per-replica values.

    Orchestrator adapters list them (``Orchestrator.replicas``); the policy matches ``id`` with the keys
    of a per-replica reading. ``id`` is the name a per-replica series carries: the pod name on
    Kubernetes, the container name on the plain engine, ``<service>.<slot>.<task id>`` (the name Swarm
    gives the task's container) on Swarm. It stays the same for the replica's whole life.

    ``ready`` is only used for ``utilization`` metrics (the HPA discounts unready pods for CPU only);
    ``pending`` replicas count as unready for every metric.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    id: str
    ready: bool = True
    pending: bool = Field(
        default=False, description="Not started yet (a Pending pod, a container not running): unready for every metric"
    )
    container_id: str | None = Field(
        default=None,
        description="The Docker container id (plain engine, Swarm task with a container) for sources that read"
        " the engine; None on Kubernetes and for a task whose container does not exist yet",
    )
