"""Autoscaler tasks: thin wrappers over :mod:`scalewise.autoscaler`, retried for transient errors only,
and the evaluation service's reads (:class:`scalewise.autoscaler.Reads`) as task runs and as plain calls.

Metric sources never raise for a failed read (a failure is a reading the policy holds on), so
``read_metrics`` is retried only for a source bug surfacing as a connection error.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from prefect import task
from prefect.cache_policies import NO_CACHE

from scalewise import autoscaler
from scalewise.metrics.base import MetricReading, ReplicaInfo
from scalewise.policy.decide import PolicyState
from scalewise.policy.forecast import Forecast
from scalewise.spec import WorkloadSpec
from tasks import policy_state
from tasks.forecast import load_model
from tasks.hold import load_hold
from tasks.retry import RETRYING
from tasks.workload import read_replicas, read_state


@task(cache_policy=NO_CACHE, **RETRYING)
def read_metrics(spec: WorkloadSpec, replicas: Sequence[ReplicaInfo] | None = None) -> list[MetricReading]:
    """One reading per configured metric, through the sources configured by the environment
    (``replicas``: the orchestrator's listing, which the ``docker_cpu`` source samples)."""
    return autoscaler.read_metrics(spec, autoscaler.sources(), replicas=replicas)


@task(cache_policy=NO_CACHE)
def read_forecast(spec: WorkloadSpec, now: datetime) -> Forecast | None:
    """The forecast input of a predictive workload at ``now`` (stored model or Prometheus history; a
    failure is a forecast marked unavailable, never raised)."""
    return autoscaler.forecast_input(spec, autoscaler.sources(), now, load_model)


@task(cache_policy=NO_CACHE, **RETRYING)
def load_policy_state(workload: str) -> PolicyState | None:
    return policy_state.load_state(workload)


@task(cache_policy=NO_CACHE, **RETRYING)
def save_policy_state(workload: str, state: PolicyState) -> None:
    policy_state.save_state(workload, state)


#: The evaluation service's reads inside the ``autoscale`` flow: each a task run (retried where transient).
FLOW_READS = autoscaler.Reads(
    state=read_state, policy=load_policy_state, hold=load_hold, replicas=read_replicas, metrics=read_metrics,
    forecast=read_forecast,
)
#: The same reads as plain calls (no task run): ``plan`` and the fast loop's no-change path.
PLAIN_READS = autoscaler.Reads.plain(
    read_state.fn, policy_state.load_state, load_hold, read_replicas.fn, load_model=load_model
)
