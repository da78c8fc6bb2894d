"""The service model a backtest simulates (every default documented here and in ``scalewise backtest --help``).

* Each **ready** replica serves ``capacity`` requests/s; demand above ``ready x capacity`` is unserved.
* A replica added at a decision becomes ready ``startup_s`` later (it is paid for while it starts);
  a scale-down removes starting replicas first (newest first), then ready ones, at once.
* The autoscaler decides every ``interval_s``. The metric it reads is what Prometheus would return:
  the demand averaged over ``window_s`` (``rate(...[1m])``), as of the last scrape (every
  ``scrape_interval_s``) at least ``scrape_lag_s`` old (seen one scrape late by default).
* The metric counts arriving requests (served or not, as a load balancer counts them). Each metric of
  the workload reads the same demand in its own unit: ``value`` and ``average_value`` as a total
  (requests/s), per-replica metrics (``docker_cpu``, ``per_replica_label``) as requests/s per ready
  replica, ``utilization`` as a percentage of ``capacity`` per ready replica.
* Replica bounds come from the workload (``replicas.min``/``max``); every policy starts with the
  oracle's first count (at least 1), all ready.
"""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field, field_validator

DEFAULT_CAPACITY = 1.0
DEFAULT_STARTUP_S = 60.0
DEFAULT_INTERVAL_S = 15.0
DEFAULT_SCRAPE_S = 15.0
DEFAULT_WINDOW_S = 60.0


def _whole_ms(value: float) -> float:
    if abs(value * 1000 - round(value * 1000)) > 1e-6:
        raise ValueError("must be a whole number of milliseconds")
    return value


class ServiceModel(BaseModel):
    """How demand turns into need, metrics and ready replicas in the simulation."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    capacity: float = Field(default=DEFAULT_CAPACITY, gt=0, description="Requests/s one ready replica serves")
    startup_s: float = Field(
        default=DEFAULT_STARTUP_S, ge=0, le=86_400, description="Seconds from a scale-up decision to a ready replica"
    )
    interval_s: float = Field(
        default=DEFAULT_INTERVAL_S, gt=0, le=3600, description="Seconds between autoscaler decisions"
    )
    scrape_interval_s: float = Field(default=DEFAULT_SCRAPE_S, gt=0, le=3600, description="Prometheus scrape interval")
    scrape_lag_s: float = Field(
        default=DEFAULT_SCRAPE_S, ge=0, le=3600, description="Age of the newest usable scrape (one scrape late)"
    )
    window_s: float = Field(
        default=DEFAULT_WINDOW_S, gt=0, le=86_400, description="Metric averaging window (PromQL rate range)"
    )
    start: datetime | None = Field(
        default=None, description="Wall-clock time of the trace's first row (default: its timestamp_s as Unix time)"
    )

    @field_validator("startup_s", "interval_s", "scrape_interval_s", "scrape_lag_s", "window_s")
    @classmethod
    def _ms(cls, value: float) -> float:
        return _whole_ms(value)

    @field_validator("start")
    @classmethod
    def _aware(cls, value: datetime | None) -> datetime | None:
        if value is not None and value.tzinfo is None:
            raise ValueError("must carry a time zone (e.g. 2026-01-05T00:00:00Z)")
        return value
