"""Autoscaler tasks: thin wrappers over :mod:`scalewise.autoscaler`, retried for transient errors only.

Metric sources never raise for a failed read (a failure is a reading the policy holds on), so
``read_metrics`` is retried only for a source bug surfacing as a connection error.
"""

from __future__ import annotations

from datetime import datetime

from prefect import task
from prefect.cache_policies import NO_CACHE

from scalewise import autoscaler
from scalewise.metrics.base import MetricReading
from scalewise.model import WorkloadState
from scalewise.policy.decide import Decision, PolicyState
from scalewise.spec import WorkloadSpec
from tasks import policy_state
from tasks.forecast import load_model
from tasks.retry import RETRYING


@task(cache_policy=NO_CACHE, **RETRYING)
def read_metrics(spec: WorkloadSpec) -> list[MetricReading]:
    """One reading per configured metric, through the sources configured by the environment."""
    return autoscaler.read_metrics(spec, autoscaler.sources())


@task(cache_policy=NO_CACHE)
def evaluate(
    spec: WorkloadSpec,
    state: WorkloadState,
    readings: list[MetricReading],
    policy: PolicyState | None,
    now: datetime,
) -> tuple[Decision, PolicyState]:
    """The policy decision; returns it with the state it started from. For a predictive workload the
    forecast input is read first (stored model or Prometheus history; a failure is recorded, never raised)."""
    forecast = autoscaler.forecast_input(spec, autoscaler.sources(), now, load_model)
    return autoscaler.evaluate(spec, state, readings, policy, now, forecast)


@task(cache_policy=NO_CACHE, **RETRYING)
def load_policy_state(workload: str) -> PolicyState | None:
    return policy_state.load_state(workload)


@task(cache_policy=NO_CACHE, **RETRYING)
def save_policy_state(workload: str, state: PolicyState) -> None:
    policy_state.save_state(workload, state)
