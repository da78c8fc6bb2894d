"""The autoscaler around the pure policy: which workloads, which metric sources, one evaluation.

No Prefect here (the flow in ``flows/autoscale.py`` and the tasks in ``tasks/autoscale.py`` wrap
these functions); the policy itself stays pure in :mod:`scalewise.policy`.

Metric sources come from the environment:

* ``SCALEWISE_PROMETHEUS_URL``: enables the ``prometheus`` source;
  ``SCALEWISE_PROMETHEUS_TOKEN`` (bearer) or ``SCALEWISE_PROMETHEUS_USERNAME`` +
  ``SCALEWISE_PROMETHEUS_PASSWORD`` (basic auth), ``SCALEWISE_PROMETHEUS_CA_FILE``,
  ``SCALEWISE_PROMETHEUS_INSECURE=1``, ``SCALEWISE_PROMETHEUS_TIMEOUT`` (seconds, default 5);
* the ``docker_cpu`` source is always available (local engine, ``DOCKER_HOST``);
  ``SCALEWISE_DOCKER_CPU_INTERVAL`` is its sampling interval (seconds, default 0.5).

A metric whose source is not configured is a failed read (the policy then holds), never a zero.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import threading
import zlib
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any, Literal, TypeVar

from pydantic import BaseModel, Field

from scalewise.errors import ScalewiseError
from scalewise.forecasting import ModelLoader, forecast_for, history_reader
from scalewise.hold import REASON as HOLD_REASON
from scalewise.hold import ManualHold
from scalewise.metrics.base import Clock, MetricReading, MetricSource, ReplicaInfo, WorkloadRef, read_all, utc_now
from scalewise.model import WorkloadState
from scalewise.policy.decide import Decision, PolicyState, decide, seed_state
from scalewise.policy.forecast import Forecast
from scalewise.policy.record import DecisionRecord
from scalewise.spec import WorkloadSpec

if TYPE_CHECKING:
    from scalewise.metrics.prometheus_source import PrometheusSource

ENV_PROM_URL = "SCALEWISE_PROMETHEUS_URL"
ENV_PROM_TOKEN = "SCALEWISE_PROMETHEUS_TOKEN"
ENV_PROM_USERNAME = "SCALEWISE_PROMETHEUS_USERNAME"
ENV_PROM_PASSWORD = "SCALEWISE_PROMETHEUS_PASSWORD"
ENV_PROM_CA_FILE = "SCALEWISE_PROMETHEUS_CA_FILE"
ENV_PROM_INSECURE = "SCALEWISE_PROMETHEUS_INSECURE"
ENV_PROM_TIMEOUT = "SCALEWISE_PROMETHEUS_TIMEOUT"
ENV_DOCKER_CPU_INTERVAL = "SCALEWISE_DOCKER_CPU_INTERVAL"
SOURCE_ENV = (
    ENV_PROM_URL, ENV_PROM_TOKEN, ENV_PROM_USERNAME, ENV_PROM_PASSWORD, ENV_PROM_CA_FILE,
    ENV_PROM_INSECURE, ENV_PROM_TIMEOUT, ENV_DOCKER_CPU_INTERVAL,
)

#: Prefect Variable holding a workload's PolicyState (JSON).
STATE_VARIABLE_PREFIX = "scalewise-policy-"
#: Prefect Variables hold at most 5,000 characters of JSON.
MAX_STATE_CHARS = 5000

Outcome = Literal["unchanged", "scaled", "planned", "held", "skipped", "failed"]


class AutoscaleError(ScalewiseError):
    """One or more workloads could not be evaluated or scaled in an autoscale run."""


# -- metric sources -------------------------------------------------------------------------------


def _flag(value: str | None) -> bool:
    return (value or "").strip().lower() in ("1", "true", "yes", "on")


def prometheus_from_env(env: Mapping[str, str] | None = None) -> PrometheusSource | None:
    """The Prometheus source configured by ``SCALEWISE_PROMETHEUS_*`` (None without a URL)."""
    env = os.environ if env is None else env
    url = (env.get(ENV_PROM_URL) or "").strip()
    if not url:
        return None
    from scalewise.metrics.prometheus_source import PrometheusSource

    user, password = env.get(ENV_PROM_USERNAME), env.get(ENV_PROM_PASSWORD)
    if bool(user) != bool(password):
        raise ScalewiseError(f"set both {ENV_PROM_USERNAME} and {ENV_PROM_PASSWORD}, or neither")
    try:
        timeout = float(env.get(ENV_PROM_TIMEOUT) or 5.0)
    except ValueError:
        raise ScalewiseError(f"{ENV_PROM_TIMEOUT} must be a number of seconds") from None
    try:
        return PrometheusSource(
            url,
            timeout=timeout,
            bearer_token=env.get(ENV_PROM_TOKEN) or None,
            basic_auth=(user, password) if user and password else None,
            ca_file=env.get(ENV_PROM_CA_FILE) or None,
            insecure=_flag(env.get(ENV_PROM_INSECURE)),
        )
    except ValueError as exc:
        raise ScalewiseError(f"Prometheus source: {exc}") from None


def sources_from_env(env: Mapping[str, str] | None = None) -> dict[str, MetricSource]:
    """Build the metric sources from the environment (see the module docstring)."""
    env = os.environ if env is None else env
    result: dict[str, MetricSource] = {}
    prometheus = prometheus_from_env(env)
    if prometheus is not None:
        result["prometheus"] = prometheus
    from scalewise.metrics.docker_stats import DockerCpuSource

    try:
        interval = float(env.get(ENV_DOCKER_CPU_INTERVAL) or 0.5)
    except ValueError:
        raise ScalewiseError(f"{ENV_DOCKER_CPU_INTERVAL} must be a number of seconds") from None
    result["docker_cpu"] = DockerCpuSource(interval=interval)
    return result


_sources_lock = threading.Lock()
_sources: tuple[tuple[str, ...], dict[str, MetricSource]] | None = None


def sources() -> dict[str, MetricSource]:
    """Process-wide sources, rebuilt when their environment variables change."""
    global _sources
    key = tuple(os.environ.get(name, "") for name in SOURCE_ENV)
    with _sources_lock:
        if _sources is None or _sources[0] != key:
            _close(_sources[1] if _sources else {})
            _sources = (key, sources_from_env())
        return _sources[1]


def reset_sources() -> None:
    """Close and forget the process-wide sources (tests; a simulated restart)."""
    global _sources
    with _sources_lock:
        _close(_sources[1] if _sources else {})
        _sources = None


def _close(found: Mapping[str, MetricSource]) -> None:
    for source in found.values():
        close = getattr(source, "close", None)
        if callable(close):
            with contextlib.suppress(Exception):  # closing a client must never break a tick
                close()


# -- selection ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Skipped:
    workload: str
    why: str


def select(
    specs: Mapping[str, WorkloadSpec], names: Sequence[str] | None
) -> tuple[list[WorkloadSpec], list[Skipped]]:
    """Workloads to evaluate: those with ``autoscaling`` set and not paused (``names=None``: all)."""
    chosen: list[WorkloadSpec] = []
    skipped: list[Skipped] = []
    wanted = list(specs) if names is None else list(dict.fromkeys(names))
    for name in wanted:
        spec = specs.get(name)
        if spec is None:
            skipped.append(Skipped(name, "unknown workload"))
        elif spec.autoscaling is None:
            skipped.append(Skipped(name, "no autoscaling section"))
        elif spec.autoscaling.paused:
            skipped.append(Skipped(name, "autoscaling is paused"))
        else:
            chosen.append(spec)
    return chosen, skipped


# -- evaluation -----------------------------------------------------------------------------------


def read_metrics(
    spec: WorkloadSpec,
    found: Mapping[str, MetricSource],
    clock: Clock = utc_now,
    replicas: Sequence[ReplicaInfo] | None = None,
) -> list[MetricReading]:
    """One reading per configured metric; failures are failed readings (never zeros, never raised).
    ``replicas`` is the orchestrator's listing for this read (the ``docker_cpu`` source samples it)."""
    if spec.autoscaling is None:
        return []
    return read_all(spec.autoscaling.metrics, WorkloadRef.of(spec, replicas), found, clock)


def initial_state(spec: WorkloadSpec, current: int, now: datetime) -> PolicyState:
    """The state used when none was persisted (first run, or a lost Variable): the policy's own
    first-seen rule (:func:`scalewise.policy.decide.seed_state`), shared with ``plan`` and the backtest."""
    if spec.autoscaling is None:
        return PolicyState()
    return seed_state(spec.autoscaling, current, now)


def forecast_input(
    spec: WorkloadSpec, found: Mapping[str, MetricSource], now: datetime, load_model: ModelLoader | None = None
) -> Forecast | None:
    """The forecast for a predictive workload (None otherwise): the stored model while fresh, else the
    seasonal window over the Prometheus history; a failed read is a forecast marked unavailable."""
    if spec.autoscaling is None or spec.autoscaling.predictive is None:
        return None
    read = history_reader(found.get("prometheus"), WorkloadRef.of(spec))
    return forecast_for(spec.name, spec.autoscaling, now, read=read, load_model=load_model)


# -- the evaluation service: one path for the flow, under the lock, `plan`, the fast loop, the backtest --
#
# ``evaluate_workload(spec, reads)`` reads the inputs in a fixed order through the caller's ``Reads``
# (task calls in the flow, plain functions in ``plan`` and the fast loop): the manual hold, the
# orchestrator state and its replica listing, the persisted PolicyState, the metrics (given the
# listing), then the forecast at ``now``; the listing's readiness goes to the policy too. A hold, a
# workload not deployed or a failed read ends there with a ``Held`` (never a guess); otherwise
# ``evaluate(spec, observed)`` decides (pure: the backtest calls it with the inputs it simulates).
# The service logs and counts nothing: its callers do (``Held.warning``, ``Held.stage``).


@dataclass(frozen=True, slots=True)
class Observed:
    """What one evaluation decides on."""

    state: WorkloadState
    readings: Sequence[MetricReading]
    policy: PolicyState | None  # None: nothing persisted yet (the first-seen rule seeds the history)
    now: datetime
    forecast: Forecast | None = None  # for ``autoscaling.predictive`` (see scalewise.policy.forecast)
    replicas: Sequence[ReplicaInfo] | None = None  # per-replica readiness, when the target lists it


@dataclass(frozen=True)
class Evaluation:
    """A decision and the state it started from; ``decision.state`` is the state to save."""

    workload: str
    decision: Decision
    state_before: PolicyState

    def record(self, spec: WorkloadSpec) -> DecisionRecord:
        assert spec.autoscaling is not None
        return DecisionRecord.of(spec.autoscaling, self.state_before, self.decision, workload=self.workload)


def evaluate(spec: WorkloadSpec, observed: Observed) -> Evaluation:
    """Decide for one workload at ``observed.now`` with the autoscaler's state handling (a workload
    without persisted state starts from :func:`initial_state`)."""
    if spec.autoscaling is None:
        raise AutoscaleError(f"{spec.name} has no autoscaling section")
    state, before = observed.state, observed.policy
    if before is None:
        before = initial_state(spec, state.desired_replicas, observed.now)
    decision = decide(
        spec.autoscaling, (spec.replicas.min, spec.replicas.max), observed.readings, state.desired_replicas,
        state.ready_replicas, before, observed.now, replicas=observed.replicas, forecast=observed.forecast,
    )
    return Evaluation(spec.name, decision, before)


@dataclass(frozen=True)
class Reads:
    """How one evaluation reads its inputs. Any read may raise: a failed hold, state or policy-state
    read holds the workload; metric sources never raise for a failed read (it is a failed reading)."""

    state: Callable[[WorkloadSpec], WorkloadState | None]
    policy: Callable[[str], PolicyState | None]
    hold: Callable[[str], ManualHold | None]
    replicas: Callable[[WorkloadSpec], Sequence[ReplicaInfo] | None]
    metrics: Callable[[WorkloadSpec, Sequence[ReplicaInfo] | None], Sequence[MetricReading]]
    forecast: Callable[[WorkloadSpec, datetime], Forecast | None]  # called for predictive workloads only

    @classmethod
    def plain(
        cls,
        state: Callable[[WorkloadSpec], WorkloadState | None],
        policy: Callable[[str], PolicyState | None],
        hold: Callable[[str], ManualHold | None] = lambda _: None,
        replicas: Callable[[WorkloadSpec], Sequence[ReplicaInfo] | None] = lambda _: None,
        *,
        found: Callable[[], Mapping[str, MetricSource]] | None = None,
        load_model: ModelLoader | None = None,
        clock: Clock = utc_now,
    ) -> Reads:
        """Metrics and forecast read in process through the metric sources (default :func:`sources`)."""
        get = found or sources
        return cls(
            state, policy, hold, replicas, lambda spec, listed: read_metrics(spec, get(), clock, listed),
            lambda spec, now: forecast_input(spec, get(), now, load_model),
        )


@dataclass(frozen=True)
class Held:
    """No decision this time: a manual hold, a workload not deployed, or a read that failed."""

    result: Result
    stage: str | None = None  # the read that failed (self-metrics error stage)
    error: BaseException | None = None  # a failed orchestrator or policy-state read fails the run
    warning: str = ""  # what the caller logs
    pinned: bool = False  # a person's hold (or one that cannot be read) owns the count

    @property
    def workload(self) -> str:
        return self.result.workload


T = TypeVar("T")


def _read_or_hold(
    read: Callable[[], T], workload: str, reason: str, stage: str | None, what: str
) -> T | Held:
    """``read()``, or the ``held`` outcome naming the failed read (``stage`` None: the run does not fail)."""
    try:
        return read()
    except Exception as exc:
        result = Result(workload=workload, outcome="held", reason=reason, error=f"{exc}")
        return Held(result, stage, exc if stage else None, f"{what}, holding: {type(exc).__name__}: {exc}",
                    pinned=stage is None)


def _hold_of(spec: WorkloadSpec, read: Callable[[str], ManualHold | None], now: datetime) -> Held | None:
    """A ``manual_hold`` while a manual scale pins the count (scalewise.hold); a hold that cannot be
    read holds too (never overwrite a person's count on a guess)."""
    hold = _read_or_hold(lambda: read(spec.name), spec.name, "hold_state_error", None, "manual hold unreadable")
    if isinstance(hold, Held):
        return hold
    if hold is None or not hold.active(now):
        return None
    detail = f"{hold.sentence(spec.name)} ({hold.operation} by {hold.by})"
    result = Result(workload=spec.name, outcome="held", at=now, current=hold.replicas, desired=hold.replicas,
                    reason=HOLD_REASON, detail=detail)
    return Held(result, pinned=True)


def observe(spec: WorkloadSpec, reads: Reads, clock: Clock = utc_now) -> Observed | Held:
    """Read what one evaluation needs, in order (hold, state, replicas, policy state, metrics, forecast)."""
    name = spec.name
    held = _hold_of(spec, reads.hold, clock())
    if held is not None:
        return held
    state = _read_or_hold(lambda: reads.state(spec), name, "orchestrator_error", "state", "orchestrator read failed")
    if isinstance(state, Held):
        return state
    if state is None:
        return Held(Result(workload=name, outcome="skipped", reason="not_deployed"))
    listed = _read_or_hold(lambda: reads.replicas(spec), name, "orchestrator_error", "replicas",
                           "replica listing failed")
    if isinstance(listed, Held):
        return listed
    policy = _read_or_hold(lambda: reads.policy(name), name, "policy_state_error", "policy_state",
                           "policy state unreadable")
    if isinstance(policy, Held):
        return policy
    readings = reads.metrics(spec, listed)
    now = clock()
    predictive = spec.autoscaling is not None and spec.autoscaling.predictive is not None
    forecast = reads.forecast(spec, now) if predictive else None
    return Observed(state, readings, policy, now, forecast, listed)


def evaluate_workload(spec: WorkloadSpec, reads: Reads, clock: Clock = utc_now) -> Evaluation | Held:
    """The service: :func:`observe`, then :func:`evaluate` unless it held."""
    observed = observe(spec, reads, clock)
    return observed if isinstance(observed, Held) else evaluate(spec, observed)


# -- explaining -----------------------------------------------------------------------------------


def describe(decision: Decision) -> list[str]:
    """One line per step: ``name: proposal (reason_code) detail``."""
    lines = []
    for step in decision.steps:
        proposal = "-" if step.proposal is None else str(step.proposal)
        tail = f" {step.detail}" if step.detail else ""
        lines.append(f"{step.name}: {proposal} ({step.reason}){tail}")
    return lines


def summary(workload: str, decision: Decision) -> str:
    verb = "scale" if decision.changed else "keep"
    target = f"{decision.current} -> {decision.desired}" if decision.changed else str(decision.current)
    detail = f": {decision.detail}" if decision.detail else ""
    return f"{workload}: {verb} {target} ({decision.reason}){detail}"


class Result(BaseModel):
    """What an autoscale run did for one workload (returned by the flow, printed by ``plan``)."""

    workload: str
    outcome: Outcome
    at: datetime | None = Field(default=None, description="The decision's 'now'")
    current: int | None = None
    desired: int | None = None
    reason: str = ""
    detail: str = ""
    steps: list[str] = Field(default_factory=list)
    error: str | None = None
    action_id: str | None = None
    decision: dict[str, Any] | None = None


def result_of(evaluation: Evaluation, outcome: Outcome, spec: WorkloadSpec) -> Result:
    d = evaluation.decision
    return Result(
        workload=evaluation.workload,
        outcome=outcome,
        at=d.inputs.now,
        current=d.current,
        desired=d.desired,
        reason=d.reason,
        detail=d.detail,
        steps=describe(d),
        decision=evaluation.record(spec).model_dump(mode="json"),
    )


# -- persisted state codec ------------------------------------------------------------------------


def state_variable(workload: str) -> str:
    return f"{STATE_VARIABLE_PREFIX}{workload}"


def encode_state(state: PolicyState) -> dict[str, Any]:
    """A JSON value for a Prefect Variable: the state itself, zlib-packed if it is too long."""
    plain: dict[str, Any] = {"v": 1, "state": state.model_dump(mode="json")}
    if len(json.dumps(plain)) <= MAX_STATE_CHARS:
        return plain
    packed = base64.b64encode(zlib.compress(state.model_dump_json().encode(), 9)).decode()
    value = {"v": 1, "zlib": packed}
    if len(json.dumps(value)) > MAX_STATE_CHARS:
        raise AutoscaleError(f"policy state too large to persist ({len(packed)} packed characters)")
    return value


def decode_state(value: Any) -> PolicyState | None:
    """The PolicyState in a Variable value (None when there is none); ValueError when unreadable."""
    if value is None:
        return None
    if not isinstance(value, dict) or value.get("v") != 1:
        raise ValueError("not a scalewise policy state (expected {'v': 1, ...})")
    if "zlib" in value:
        return PolicyState.model_validate_json(zlib.decompress(base64.b64decode(value["zlib"])))
    return PolicyState.model_validate(value["state"])


def names_of(specs: Iterable[WorkloadSpec]) -> list[str]:
    return [s.name for s in specs]
