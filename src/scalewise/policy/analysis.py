"""Metric analysis with Argo Rollouts' semantics (pure: no I/O, ``now`` is a parameter).

The spec (:class:`AnalysisSpec`) and the rules follow Argo Rollouts' analysis controller
(``analysis/analysis.go``: ``generateMetricTasks``, ``runMeasurements``, ``assessMetricStatus``,
``assessMetricFailureInconclusiveOrError``, ``assessRunStatus``; ``utils/evaluate/evaluate.go``:
``EvaluateResult``; ``utils/analysis/helpers.go``: ``IsWorse``, ``IsTerminating``):

Measurement (one query)
    Both conditions empty: ``Successful``. Only ``success_condition``: ``Successful`` when it holds,
    else ``Failed``. Only ``failure_condition``: ``Failed`` when it holds, else ``Successful``. Both:
    ``Failed`` when the failure condition holds, else ``Successful`` when the success condition
    holds, else ``Inconclusive``. A query that fails, or a condition that cannot be evaluated on the
    result (``result[0]`` of an empty vector: no data), is an ``Error``.
Counters (per metric)
    ``Successful``/``Failed``/``Inconclusive`` add to ``count`` and reset ``consecutive_error``;
    ``Error`` adds to ``error`` and ``consecutive_error`` but not to ``count``.
Metric phase
    ``Failed`` when ``failed > failure_limit`` (a negative limit disables it); ``Inconclusive`` when
    ``inconclusive > inconclusive_limit``; ``Error`` when ``consecutive_error >
    consecutive_error_limit`` (default 4) -- checked in that order, the last that applies wins, as
    in Argo. Else ``Successful`` once ``count`` measurements were taken (``count`` defaults to 1
    without an ``interval``; with an ``interval`` and no ``count`` the metric runs until the run is
    terminated); else ``Running`` (``Pending`` before its first measurement). A terminated run
    completes its unfinished metrics as ``Successful``.
Scheduling
    The first measurement after ``initial_delay`` from the run's start; the next one ``interval``
    after the previous one finished, or ``error_retry_interval`` (Argo: 10 s) after an ``Error``.
    Once a non-dry-run metric has completed ``Failed``, ``Error`` or ``Inconclusive`` the run is
    terminating: nothing more is measured.
Run phase
    The worst phase of the completed non-dry-run metrics, by the order Successful < Running <
    Pending < Inconclusive < Error < Failed; ``Running`` while any metric is unfinished (unless the
    run is terminating). ``dry_run`` metrics are measured and recorded with their own phase, but
    never decide and never terminate the run.

What the caller does with the phase (a canary aborting on ``Failed``/``Error``, pausing for a
person on ``Inconclusive``) is not decided here.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Annotated

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, WithJsonSchema, field_validator, model_validator

from scalewise.durations import parse_duration
from scalewise.policy.config import _check_template, check_metric_name

#: A duration as seconds or text ('30s', '5m'); the JSON schema says so, because flow parameters are
#: checked against it by the Prefect server (the UI's Run form, API runs).
Duration = Annotated[
    float,
    BeforeValidator(parse_duration),
    WithJsonSchema({"anyOf": [{"type": "number", "minimum": 0}, {"type": "string", "pattern": r"^[0-9.a-z ]+$"}]}),
]

DEFAULT_CONSECUTIVE_ERROR_LIMIT = 4
DEFAULT_ERROR_RETRY_INTERVAL_S = 10.0


class Phase(StrEnum):
    """Argo Rollouts' ``AnalysisPhase`` values (a contract for records and automations)."""

    PENDING = "Pending"
    RUNNING = "Running"
    SUCCESSFUL = "Successful"
    FAILED = "Failed"
    ERROR = "Error"
    INCONCLUSIVE = "Inconclusive"

    @property
    def completed(self) -> bool:
        return self in COMPLETED


COMPLETED = frozenset({Phase.SUCCESSFUL, Phase.FAILED, Phase.ERROR, Phase.INCONCLUSIVE})
#: Best to worst (``analysisStatusOrder`` in Argo Rollouts).
ORDER: tuple[Phase, ...] = (
    Phase.SUCCESSFUL, Phase.RUNNING, Phase.PENDING, Phase.INCONCLUSIVE, Phase.ERROR, Phase.FAILED,
)


def is_worse(current: Phase, new: Phase) -> bool:
    return ORDER.index(new) > ORDER.index(current)


def worst(phases: Iterable[Phase]) -> Phase | None:
    found: Phase | None = None
    for phase in phases:
        if found is None or is_worse(found, phase):
            found = phase
    return found


# -- spec ------------------------------------------------------------------------------------------


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class AnalysisMetric(_Strict):
    """One metric of an analysis: a PromQL query and the conditions its result is judged by."""

    name: str = Field(description="Metric name, unique within the analysis ([a-z][a-z0-9_-]*)")
    query: str = Field(
        description='PromQL template; {workload}, {namespace}, {target} only inside a double-quoted label value'
    )
    success_condition: str | None = Field(
        default=None, description="Expression over `result` that makes a measurement Successful, e.g. result[0] < 0.05"
    )
    failure_condition: str | None = Field(
        default=None, description="Expression over `result` that makes a measurement Failed, e.g. result[0] > 0.2"
    )
    interval: Duration | None = Field(default=None, description="Time between measurements (e.g. 30s)")
    count: int | None = Field(
        default=None, ge=1, le=10_000,
        description="Measurements to take (default 1 without an interval; with an interval and no count: until "
        "the run is terminated)",
    )
    initial_delay: Duration = Field(default=0.0, description="Wait before the first measurement")
    failure_limit: int = Field(
        default=0, ge=-1, le=10_000, description="The metric fails when failed measurements > this (-1: never)"
    )
    inconclusive_limit: int = Field(
        default=0, ge=0, le=10_000, description="The metric is Inconclusive when inconclusive measurements > this"
    )
    consecutive_error_limit: int = Field(
        default=DEFAULT_CONSECUTIVE_ERROR_LIMIT, ge=0, le=10_000,
        description="The metric errors when consecutive erroneous measurements > this",
    )
    dry_run: bool = Field(default=False, description="Measure and record, but never decide the run")

    _name = field_validator("name")(check_metric_name)

    @field_validator("query")
    @classmethod
    def _query(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("must not be empty")
        return _check_template(value)

    @field_validator("success_condition", "failure_condition")
    @classmethod
    def _condition(cls, value: str | None) -> str | None:
        if value is None:
            return None
        from scalewise.policy import expr  # lazily: Lark costs ~40 ms of every CLI start-up (status never parses)

        try:
            return expr.check(value)
        except expr.ExprError as exc:
            raise ValueError(str(exc)) from None

    @field_validator("interval")
    @classmethod
    def _interval(cls, value: float | None) -> float | None:
        if value is not None and value <= 0:
            raise ValueError("must be positive")
        return value

    @property
    def effective_count(self) -> int | None:
        """Argo's ``EffectiveCount``: ``count``, 1 without an interval, None (unbounded) otherwise."""
        if self.count is None:
            return 1 if self.interval is None else None
        return self.count


class AnalysisSpec(_Strict):
    """An analysis: every metric is measured on its own schedule; the run's phase is the worst metric's."""

    metrics: list[AnalysisMetric] = Field(min_length=1, max_length=20, description="The metrics to measure")
    error_retry_interval: Duration = Field(
        default=DEFAULT_ERROR_RETRY_INTERVAL_S, description="Time before measuring again after an Error (Argo: 10s)"
    )

    @model_validator(mode="after")
    def _unique(self) -> AnalysisSpec:
        seen: set[str] = set()
        for metric in self.metrics:
            if metric.name in seen:
                raise ValueError(f"metrics: duplicate metric name {metric.name!r}")
            seen.add(metric.name)
        if self.error_retry_interval <= 0:
            raise ValueError("error_retry_interval: must be positive")
        return self

    def metric(self, name: str) -> AnalysisMetric:
        return next(m for m in self.metrics if m.name == name)


# -- measurements and results ----------------------------------------------------------------------

ResultValue = float | list[float] | None


class Measurement(_Strict):
    """One query of one metric and its verdict."""

    metric: str
    phase: Phase
    value: str = Field(default="", description="What the query returned, as text ('' for an error)")
    started_at: datetime
    finished_at: datetime
    message: str = ""


class MetricResult(_Strict):
    """Argo's ``MetricResult``: the counters and measurements of one metric."""

    name: str
    dry_run: bool = False
    phase: Phase = Phase.PENDING
    count: int = 0
    successful: int = 0
    failed: int = 0
    inconclusive: int = 0
    error: int = 0
    consecutive_error: int = 0
    measurements: tuple[Measurement, ...] = ()
    message: str = ""


class AnalysisRun(_Strict):
    """The state of one analysis run (what Argo keeps in ``AnalysisRun.status``)."""

    spec: AnalysisSpec
    started_at: datetime
    results: tuple[MetricResult, ...] = ()
    phase: Phase = Phase.RUNNING
    message: str = ""
    terminate: bool = Field(default=False, description="Stop measuring (Argo's spec.terminate)")

    def result(self, name: str) -> MetricResult | None:
        return next((r for r in self.results if r.name == name), None)

    @property
    def measurements(self) -> list[Measurement]:
        return sorted((m for r in self.results for m in r.measurements), key=lambda m: m.finished_at)


def start(spec: AnalysisSpec, now: datetime) -> AnalysisRun:
    return AnalysisRun(spec=spec, started_at=now)


def _show(value: ResultValue) -> str:
    if value is None:
        return "nil"
    if isinstance(value, list):
        return "[" + ", ".join(f"{v:g}" for v in value) + "]"
    return f"{value:g}"


def judge(
    metric: AnalysisMetric, value: ResultValue, started_at: datetime, finished_at: datetime
) -> Measurement:
    """``EvaluateResult``: a successful query's ``value`` judged by the metric's conditions."""

    def done(phase: Phase, message: str = "") -> Measurement:
        return Measurement(
            metric=metric.name, phase=phase, value=_show(value), started_at=started_at,
            finished_at=finished_at, message=message,
        )

    from scalewise.policy import expr

    success = failure = False
    try:
        if metric.success_condition is not None:
            success = expr.evaluate_condition(metric.success_condition, value)
    except expr.ExprError as exc:
        return done(Phase.ERROR, f"could not evaluate success_condition {metric.success_condition!r}: {exc}")
    try:
        if metric.failure_condition is not None:
            failure = expr.evaluate_condition(metric.failure_condition, value)
    except expr.ExprError as exc:
        return done(Phase.ERROR, f"could not evaluate failure_condition {metric.failure_condition!r}: {exc}")
    if metric.success_condition is None and metric.failure_condition is None:
        return done(Phase.SUCCESSFUL)
    if metric.failure_condition is None:
        failure = not success
    elif metric.success_condition is None:
        success = not failure
    if failure:
        return done(Phase.FAILED)
    if not success:
        return done(Phase.INCONCLUSIVE)
    return done(Phase.SUCCESSFUL)


def query_error(metric: AnalysisMetric, message: str, started_at: datetime, finished_at: datetime) -> Measurement:
    """A measurement whose query failed (connection, HTTP, a refused workload reference)."""
    return Measurement(
        metric=metric.name, phase=Phase.ERROR, started_at=started_at, finished_at=finished_at, message=message
    )


def record(run: AnalysisRun, measurement: Measurement) -> AnalysisRun:
    """Add a completed measurement to its metric's counters (``runMeasurements``), then assess."""
    metric = run.spec.metric(measurement.metric)
    old = run.result(metric.name) or MetricResult(name=metric.name, dry_run=metric.dry_run, phase=Phase.RUNNING)
    counts = {
        "count": old.count, "successful": old.successful, "failed": old.failed,
        "inconclusive": old.inconclusive, "error": old.error, "consecutive_error": old.consecutive_error,
    }
    phase = measurement.phase
    if phase is Phase.ERROR:
        counts["error"] += 1
        counts["consecutive_error"] += 1
    elif phase in (Phase.SUCCESSFUL, Phase.FAILED, Phase.INCONCLUSIVE):
        counts["count"] += 1
        counts[phase.value.lower()] += 1
        counts["consecutive_error"] = 0
    else:
        raise ValueError(f"a recorded measurement is completed, not {phase}")
    new = old.model_copy(update={**counts, "measurements": (*old.measurements, measurement)})
    results = tuple(new if r.name == metric.name else r for r in run.results)
    if run.result(metric.name) is None:
        results = (*run.results, new)
    return assess(run.model_copy(update={"results": results}))


def limits_breached(metric: AnalysisMetric, result: MetricResult) -> tuple[Phase | None, str]:
    """``assessMetricFailureInconclusiveOrError``: the last of Failed, Inconclusive, Error that applies."""
    phase: Phase | None = None
    message = ""
    if metric.failure_limit >= 0 and result.failed > metric.failure_limit:
        phase, message = Phase.FAILED, f"failed ({result.failed}) > failure_limit ({metric.failure_limit})"
    if result.inconclusive > metric.inconclusive_limit:
        phase = Phase.INCONCLUSIVE
        message = f"inconclusive ({result.inconclusive}) > inconclusive_limit ({metric.inconclusive_limit})"
    if result.consecutive_error > metric.consecutive_error_limit:
        phase = Phase.ERROR
        message = (
            f"consecutive errors ({result.consecutive_error}) > consecutive_error_limit "
            f"({metric.consecutive_error_limit})"
        )
    return phase, message


def metric_phase(metric: AnalysisMetric, result: MetricResult, terminating: bool) -> Phase:
    """``assessMetricStatus`` (without consecutiveSuccessLimit, which scalewise does not offer)."""
    if result.phase.completed:
        return result.phase
    if not result.measurements:
        return Phase.SUCCESSFUL if terminating else Phase.PENDING
    breached, _ = limits_breached(metric, result)
    if breached is not None:
        return breached
    count = metric.effective_count
    if count is not None and result.count >= count:
        return Phase.SUCCESSFUL
    return Phase.SUCCESSFUL if terminating else Phase.RUNNING


def is_terminating(run: AnalysisRun) -> bool:
    """``IsTerminating``: asked to, or a non-dry-run metric completed Failed, Error or Inconclusive."""
    if run.terminate:
        return True
    bad = {Phase.FAILED, Phase.ERROR, Phase.INCONCLUSIVE}
    return any(not r.dry_run and r.phase in bad for r in run.results)


def assess(run: AnalysisRun) -> AnalysisRun:
    """``assessRunStatus``: update each metric's phase, then the run's phase and message.

    A metric's transition to a bad phase makes the run terminating; the remaining metrics are then
    completed in the same assessment (Argo does so at its next reconcile)."""
    for _ in range(2):  # a second pass when this pass made the run terminating
        terminating = is_terminating(run)
        results = []
        for r in run.results:
            metric = run.spec.metric(r.name)
            phase = metric_phase(metric, r, terminating)
            message = r.message
            if phase != r.phase:
                _, why = limits_breached(metric, r)
                last = r.measurements[-1].message if r.measurements else ""
                message = "; ".join(m for m in (why, last) if m)
            results.append(r.model_copy(update={"phase": phase, "message": message}))
        run = run.model_copy(update={"results": tuple(results)})
        if is_terminating(run) == terminating:
            break
    terminating = is_terminating(run)
    worst_phase: Phase | None = None
    worst_message = "run terminated" if run.terminate else ""
    everything_completed = True
    for metric in run.spec.metrics:
        found = run.result(metric.name)
        if found is None:
            if terminating:
                continue  # never measured: Argo completes it as Successful
            everything_completed = False
            continue
        r = found
        if not r.phase.completed:
            everything_completed = False
            continue
        if r.dry_run:
            if worst_phase is None:
                worst_phase = Phase.SUCCESSFUL
            continue
        if worst_phase is None or is_worse(worst_phase, r.phase):
            worst_phase = r.phase
            breached, reason = limits_breached(metric, r)
            if breached is not None:
                worst_message = f"metric {metric.name!r} assessed {r.phase} due to {reason}"
                last = r.measurements[-1].message if r.measurements else ""
                if last:
                    worst_message += f": {last}"
    if terminating:
        phase = worst_phase or Phase.SUCCESSFUL
    elif not everything_completed or worst_phase is None:
        return run.model_copy(update={"phase": Phase.RUNNING, "message": ""})
    else:
        phase = worst_phase
    if not worst_message:
        worst_message = f"all metrics assessed {phase}" if phase is Phase.SUCCESSFUL else str(phase)
    return run.model_copy(update={"phase": phase, "message": worst_message})


def terminate(run: AnalysisRun) -> AnalysisRun:
    """Ask the run to stop (e.g. its time ran out): unfinished metrics complete as Successful."""
    return assess(run.model_copy(update={"terminate": True}))


def due(run: AnalysisRun, now: datetime) -> list[AnalysisMetric]:
    """``generateMetricTasks``: the metrics to measure now, in spec order."""
    if run.phase.completed or is_terminating(run):
        return []
    return [m for m in run.spec.metrics if (at := _next_at(run, m)) is not None and at <= now]


def next_due(run: AnalysisRun) -> datetime | None:
    """When the next measurement is due (None: the run needs no more measurements)."""
    if run.phase.completed or is_terminating(run):
        return None
    times = [at for m in run.spec.metrics if (at := _next_at(run, m)) is not None]
    return min(times) if times else None


def _next_at(run: AnalysisRun, metric: AnalysisMetric) -> datetime | None:
    result = run.result(metric.name)
    if result is not None and result.phase.completed:
        return None
    if result is None or not result.measurements:
        return run.started_at + timedelta(seconds=metric.initial_delay)
    count = metric.effective_count
    if count is not None and result.count >= count:
        return None
    last = result.measurements[-1]
    if last.phase is Phase.ERROR:
        wait = run.spec.error_retry_interval
    elif metric.interval is not None:
        wait = metric.interval
    else:
        wait = run.spec.error_retry_interval  # Argo's default when a metric has no interval
    return last.finished_at + timedelta(seconds=wait)


Measure = Callable[[AnalysisMetric], Measurement]


def step(run: AnalysisRun, now: datetime, measure: Measure) -> AnalysisRun:
    """Take every measurement due at ``now`` (through ``measure``) and assess."""
    for metric in due(run, now):
        run = record(run, measure(metric))
    return assess(run)


def summary_rows(run: AnalysisRun) -> list[dict[str, object]]:
    """One row per measurement, for a table artifact and the action record."""
    dry = {m.name for m in run.spec.metrics if m.dry_run}
    return [
        {
            "time": m.finished_at.isoformat(timespec="seconds"),
            "metric": m.metric + (" (dry run)" if m.metric in dry else ""),
            "value": m.value,
            "phase": str(m.phase),
            "message": m.message,
        }
        for m in run.measurements
    ]
