"""Forecasts for predictive scaling, outside the pure policy: fitting (statsmodels) and the per-tick input.

* :func:`fit_holt_winters`: an additive damped-trend Holt-Winters model (statsmodels
  ``ExponentialSmoothing``) fitted on a demand history; returns the small
  :class:`~scalewise.policy.forecast.HoltWintersModel` (final level, trend, one season of seasonal
  components, training window and held-out RMSE) that the ``train-forecast`` flow stores.
* :func:`forecast_for`: the :class:`~scalewise.policy.forecast.Forecast` handed to ``decide()`` for
  one workload at ``now``: the stored model when it is fresh, else the seasonal window over the
  Prometheus history (or none), always with the reason.

statsmodels and numpy are imported here only, inside :func:`fit_holt_winters`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta

from scalewise.metrics.base import WorkloadRef
from scalewise.policy.config import AutoscalingSpec, MetricTarget, Predictive
from scalewise.policy.forecast import Forecast, HoltWintersModel, recent_forecast, seasonal_window_forecast

#: Reads ``(unix seconds, value)`` points of a metric over [start, end] at a step (a range query).
HistoryReader = Callable[[MetricTarget, datetime, datetime, float], Sequence[tuple[float, float]]]
#: Loads the stored model of a workload (None when there is none).
ModelLoader = Callable[[str], HoltWintersModel | None]

MIN_TRAINING_SEASONS = 2


def _grid(points: Sequence[tuple[float, float]], step_s: float) -> tuple[float, list[float]]:
    """Bucket means on a regular grid; empty buckets linearly interpolated."""
    import numpy as np

    ts = np.array([p[0] for p in points], dtype=float)
    vs = np.array([p[1] for p in points], dtype=float)
    start = math.floor(ts.min() / step_s) * step_s
    idx = ((ts - start) // step_s).astype(int)
    n = int(idx.max()) + 1
    sums = np.bincount(idx, weights=vs, minlength=n)
    counts = np.bincount(idx, minlength=n)
    known = counts > 0
    grid = np.interp(np.arange(n), np.flatnonzero(known), sums[known] / counts[known])
    return start, [float(v) for v in grid]


def fit_holt_winters(
    points: Sequence[tuple[float, float]], *, metric: str, step_s: float, season_s: float
) -> HoltWintersModel:
    """Fit on ``(unix seconds, value)`` points; the last season (at most a seventh) is held out for the
    error, then the model is refitted on everything. ValueError when there is too little history."""
    import numpy as np
    from statsmodels.tsa.holtwinters import ExponentialSmoothing

    if not points:
        raise ValueError("no history to train on")
    start, y = _grid(points, step_s)
    m = max(2, round(season_s / step_s))
    if len(y) < MIN_TRAINING_SEASONS * m + 2:
        raise ValueError(f"{len(y)} points of {step_s:g}s: need at least {MIN_TRAINING_SEASONS} seasons of {m}")

    def fit(series: list[float]):  # type: ignore[no-untyped-def]
        model = ExponentialSmoothing(
            np.asarray(series), trend="add", damped_trend=True, seasonal="add", seasonal_periods=m,
            initialization_method="heuristic",
        )
        return model.fit()

    hold = min(m, len(y) // 7)
    held = fit(y[:-hold])
    rmse = float(np.sqrt(np.mean((np.asarray(held.forecast(hold)) - np.asarray(y[-hold:])) ** 2)))
    result = fit(y)
    end = start + (len(y) - 1) * step_s
    return HoltWintersModel(
        metric=metric,
        step_s=step_s,
        season_s=season_s,
        trained_from=datetime.fromtimestamp(start, UTC),
        trained_at=datetime.fromtimestamp(end, UTC),
        level=round(float(result.level[-1]), 6),
        trend=round(float(result.trend[-1]), 6),
        damping=min(1.0, max(0.0, float(result.params["damping_trend"]))),
        seasonal=[round(float(v), 4) for v in result.season[-m:]],
        error=round(rmse, 6),
        points=len(points),
    )


def _seasonal(p: Predictive, metric: MetricTarget, now: datetime, read: HistoryReader | None) -> Forecast:
    """The seasonal-window forecast from one small range query per past season (and, with a
    ``level_window``, one over the recent window)."""
    if read is None:
        return Forecast.missing("seasonal_window", p.horizon, "source", "no Prometheus source configured")
    points: list[tuple[float, float]] = []
    level = timedelta(seconds=p.level_window)
    try:
        for k in range(0 if p.level_window else 1, p.seasons + 1):
            phase = now - timedelta(seconds=k * p.season)
            end = phase + timedelta(seconds=p.horizon) if k else now
            points.extend(read(metric, phase - level, end, p.step))
    except Exception as exc:  # a failed history read means no floor this tick, never a failed tick
        return Forecast.missing("seasonal_window", p.horizon, "source", f"{type(exc).__name__}: {exc}"[:200])
    return seasonal_window_forecast(
        points, now.timestamp(), season_s=p.season, seasons=p.seasons, horizon_s=p.horizon, step_s=p.step,
        level_s=p.level_window,
    )


def _recent(p: Predictive, metric: MetricTarget, now: datetime, read: HistoryReader | None) -> Forecast:
    """The ``recent`` forecast from one range query over the last ``window``."""
    if read is None:
        return Forecast.missing("recent", p.horizon, "source", "no Prometheus source configured")
    try:
        points = read(metric, now - timedelta(seconds=p.window), now, p.step)
    except Exception as exc:  # a failed history read means no floor this tick, never a failed tick
        return Forecast.missing("recent", p.horizon, "source", f"{type(exc).__name__}: {exc}"[:200])
    return recent_forecast(
        points, now.timestamp(), window_s=p.window, step_s=p.step, deviations=p.deviations, horizon_s=p.horizon
    )


def _model_problem(p: Predictive, model: HoltWintersModel | None, now: datetime) -> tuple[str, str] | None:
    if model is None:
        return "model_missing", "no trained model stored (run the train-forecast flow)"
    if model.metric != p.metric or model.season_s != p.season:
        return "model_invalid", f"model is for {model.metric!r}/{model.season_s:g}s, not {p.metric!r}/{p.season:g}s"
    age = (now - model.trained_at).total_seconds()
    if age > p.max_model_age:
        return "model_stale", f"trained {age:.0f}s ago > max_model_age {p.max_model_age:.0f}s"
    return None


def forecast_for(
    workload: str,
    spec: AutoscalingSpec,
    now: datetime,
    *,
    read: HistoryReader | None = None,
    load_model: ModelLoader | None = None,
) -> Forecast | None:
    """The forecast input of ``decide()`` for one workload (None without ``predictive``)."""
    p = spec.predictive
    if p is None:
        return None
    metric = next(m for m in spec.metrics if m.name == p.metric)
    if p.forecaster == "seasonal_window":
        return _seasonal(p, metric, now, read)
    if p.forecaster == "recent":
        return _recent(p, metric, now, read)
    try:
        model = load_model(workload) if load_model is not None else None
        problem = _model_problem(p, model, now)
    except Exception as exc:
        model, problem = None, ("model_invalid", f"{type(exc).__name__}: {exc}"[:200])
    if problem is None:
        assert model is not None
        return model.forecast(now, p.horizon)
    code, why = problem
    if p.fallback == "none":
        return Forecast.missing("holt_winters", p.horizon, code, why)
    fallback = _seasonal(p, metric, now, read)
    note = f"holt_winters refused ({code}: {why}); seasonal_window fallback"
    return fallback.model_copy(update={"detail": f"{note}: {fallback.detail}" if fallback.detail else note})


def history_reader(source: object, workload: WorkloadRef) -> HistoryReader | None:
    """A :data:`HistoryReader` over a Prometheus source (anything with ``history``), else None."""
    history = getattr(source, "history", None)
    if history is None:
        return None

    def read(metric: MetricTarget, start: datetime, end: datetime, step_s: float) -> Sequence[tuple[float, float]]:
        result: Sequence[tuple[float, float]] = history(metric, workload, start, end, step_s)
        return result

    return read
