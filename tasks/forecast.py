"""Forecast-model tasks: the demand history from Prometheus, the fit, and the model's Prefect Variable.

The trained model (a small JSON: final Holt-Winters state, training window, held-out error) lives in
the Prefect Variable ``scalewise-forecast-<workload>``; the autoscaler reads it every tick and refuses
it when it is missing or older than ``predictive.max_model_age``.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from prefect import task
from prefect.cache_policies import NO_CACHE
from prefect.variables import Variable

from scalewise import autoscaler
from scalewise.errors import ScalewiseError
from scalewise.forecasting import fit_holt_winters
from scalewise.metrics.base import WorkloadRef
from scalewise.policy.forecast import HoltWintersModel
from scalewise.spec import WorkloadSpec
from tasks.retry import RETRYING

VARIABLE_PREFIX = "scalewise-forecast-"
TAG = "scalewise-forecast"


def model_variable(workload: str) -> str:
    return f"{VARIABLE_PREFIX}{workload}"


def load_model(workload: str) -> HoltWintersModel | None:
    """The stored model, or None. Plain function: the autoscaler and ``plan`` call it every tick."""
    value: Any = Variable.get(model_variable(workload), default=None)
    return None if value is None else HoltWintersModel.model_validate(value)


@task(cache_policy=NO_CACHE, **RETRYING)
def save_model(workload: str, model: HoltWintersModel) -> None:
    Variable.set(model_variable(workload), model.model_dump(mode="json"), tags=[TAG], overwrite=True)


@task(cache_policy=NO_CACHE, **RETRYING)
def read_history(spec: WorkloadSpec, days: float, step_s: float, min_days: float) -> list[tuple[float, float]]:
    """``days`` of the predictive metric from Prometheus (one range query per day)."""
    auto = spec.autoscaling
    assert auto is not None and auto.predictive is not None
    source = autoscaler.sources().get("prometheus")
    if source is None or not hasattr(source, "history"):
        raise ScalewiseError(f"{autoscaler.ENV_PROM_URL} is not set: no history to train on")
    metric = next(m for m in auto.metrics if m.name == auto.predictive.metric)
    end = datetime.now(UTC)
    points: list[tuple[float, float]] = []
    day = timedelta(days=1)
    start = end - timedelta(days=days)
    while start < end:
        points.extend(source.history(metric, WorkloadRef.of(spec), start, min(start + day, end), step_s))
        start += day
    span = (points[-1][0] - points[0][0]) / 86400 if points else 0.0
    if span < min_days - step_s / 86400:
        raise ScalewiseError(f"{spec.name}: only {span:.2f} days of history, need {min_days:g}")
    return sorted(dict(points).items())


@task(cache_policy=NO_CACHE)
def fit_model(spec: WorkloadSpec, points: list[tuple[float, float]], step_s: float) -> HoltWintersModel:
    auto = spec.autoscaling
    assert auto is not None and auto.predictive is not None
    return fit_holt_winters(points, metric=auto.predictive.metric, step_s=step_s, season_s=auto.predictive.season)
