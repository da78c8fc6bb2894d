"""Demand forecasts for predictive scaling. Pure: no I/O, no clock, no third-party model library.

The policy never fits anything. A caller hands :func:`~scalewise.policy.decide.decide` a
:class:`Forecast` (the predicted peak of the demand metric over the horizon); the policy turns it into
a floor (``ceil(value x (1 + margin) / target)``), combines it with the reactive proposal by max and
records it. Two ways to make the value, both cheap per tick:

* :class:`SeasonalWindow`: the mean over the last ``seasons`` seasons of the peak in the same phase
  window (no training). A ring buffer fed one point per tick (the backtest: O(seasons x
  horizon/step) per forecast) or built from a range query (:func:`seasonal_window_forecast`).
* :class:`RecentWindow`: ``mean + deviations x standard deviation`` of the demand over the last
  ``window`` (no training, no seasonal history: a high quantile of the recent demand, so the floor
  follows a level, its trend within the window and its noise; fed one point per tick, O(1) each).
* :class:`HoltWintersModel`: the final state of an additive Holt-Winters model fitted elsewhere (a
  scheduled flow with statsmodels); :meth:`HoltWintersModel.predict` extrapolates it in pure Python.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Iterable
from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from scalewise.policy.rounding import ceil_rounded

Forecaster = Literal["seasonal_window", "holt_winters", "recent"]

#: Why a forecast could not be made (``Forecast.unavailable``).
UNAVAILABLE_CODES: tuple[str, ...] = (
    "no_history",  # not one past season in the demand history
    "model_missing",  # no trained model stored
    "model_stale",  # the trained model is older than max_model_age
    "model_invalid",  # the stored model could not be read, or is for another metric/season
    "source",  # the history could not be read (Prometheus down, ...)
)


class Forecast(BaseModel):
    """A demand forecast handed to ``decide()``; part of the decision's recorded inputs."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    value: float | None = Field(default=None, ge=0, description="Predicted peak demand over the horizon")
    horizon: float = Field(ge=0, description="Seconds ahead the value covers")
    forecaster: Forecaster
    trained_at: datetime | None = Field(default=None, description="End of the model's training window")
    error: float | None = Field(default=None, description="The model's error on held-out data (RMSE)")
    unavailable: str | None = Field(default=None, description="Code from UNAVAILABLE_CODES when value is None")
    detail: str = ""

    @field_validator("value")
    @classmethod
    def _finite(cls, value: float | None) -> float | None:
        if value is not None and not math.isfinite(value):
            raise ValueError("must be a finite number")
        return value

    @classmethod
    def missing(cls, forecaster: Forecaster, horizon: float, code: str, detail: str = "") -> Forecast:
        if code not in UNAVAILABLE_CODES:
            raise ValueError(f"unknown code {code!r}")
        return cls(horizon=horizon, forecaster=forecaster, unavailable=code, detail=detail)


#: The level adjustment is kept within these factors (a burst or an outage moves the floor, but boundedly).
LEVEL_LIMITS = (0.5, 2.0)


class SeasonalWindow:
    """Ring buffer of one value per ``step`` over ``seasons`` seasons (+ one horizon, + the level window).

    ``forecast(t, horizon)`` = mean over k = 1..seasons of the peak over ``[t - k*season,
    t - k*season + horizon]``, over the seasons that have data; None when none has.

    With ``level_s > 0`` the seasonal profile is scaled to the current level: by the mean of the last
    ``level_s`` seconds over the mean of the same phase in the past seasons (within
    :data:`LEVEL_LIMITS`). A weekday after a weekend, a slow decline or a busier day then shifts the
    forecast instead of being averaged away.
    """

    def __init__(
        self, season_s: float, step_s: float, seasons: int, horizon_s: float, level_s: float = 0.0
    ) -> None:
        if season_s <= 0 or step_s <= 0 or seasons < 1 or horizon_s < 0 or level_s < 0:
            raise ValueError("season and step must be positive, seasons >= 1, horizon and level >= 0")
        self.step = step_s
        self.season_slots = max(1, round(season_s / step_s))
        self.seasons = seasons
        self.horizon_slots = math.ceil(horizon_s / step_s)
        self.level_slots = math.ceil(level_s / step_s)
        self.capacity = self.season_slots * seasons + self.horizon_slots + self.level_slots + 2
        self._values: list[float] = [0.0] * self.capacity
        self._slot: list[int | None] = [None] * self.capacity  # which absolute slot each cell holds

    def _index(self, t_s: float) -> int:
        return math.floor(t_s / self.step + 1e-9)

    def add(self, t_s: float, value: float) -> None:
        """Record ``value`` at ``t_s`` (seconds, any epoch); within a slot the peak is kept."""
        slot = self._index(t_s)
        cell = slot % self.capacity
        if self._slot[cell] == slot:
            self._values[cell] = max(self._values[cell], value)
        else:
            self._slot[cell], self._values[cell] = slot, value

    def extend(self, points: Iterable[tuple[float, float]]) -> SeasonalWindow:
        for t_s, value in points:
            self.add(t_s, value)
        return self

    def _known(self, first: int, last: int) -> list[float]:
        """The recorded values of slots ``first..last`` (inclusive)."""
        found = []
        for slot in range(first, last + 1):
            cell = slot % self.capacity
            if self._slot[cell] == slot:
                found.append(self._values[cell])
        return found

    def level(self, t_s: float) -> float | None:
        """Mean of the last ``level_s`` over the mean of that phase in the past seasons (None: not known)."""
        if self.level_slots == 0:
            return None
        now_slot = self._index(t_s)
        recent = self._known(now_slot - self.level_slots, now_slot)
        past: list[float] = []
        for k in range(1, self.seasons + 1):
            shift = k * self.season_slots
            past.extend(self._known(now_slot - shift - self.level_slots, now_slot - shift))
        if not recent or not past:
            return None
        past_mean = sum(past) / len(past)
        if past_mean <= 0:
            return None
        low, high = LEVEL_LIMITS
        return min(high, max(low, (sum(recent) / len(recent)) / past_mean))

    def forecast(self, t_s: float) -> tuple[float | None, int]:
        """(forecast, number of seasons it averages) at ``t_s`` for the configured horizon."""
        now_slot = self._index(t_s)
        peaks: list[float] = []
        for k in range(1, self.seasons + 1):
            start = now_slot - k * self.season_slots
            found = self._known(start, start + self.horizon_slots)
            if found:
                peaks.append(max(found))
        if not peaks:
            return None, 0
        value = sum(peaks) / len(peaks)
        factor = self.level(t_s)
        return (value if factor is None else value * factor), len(peaks)


def seasonal_window_forecast(
    points: Iterable[tuple[float, float]],
    now_s: float,
    *,
    season_s: float,
    seasons: int,
    horizon_s: float,
    step_s: float,
    level_s: float = 0.0,
) -> Forecast:
    """The seasonal-window forecast at ``now_s`` from ``(t_s, value)`` points (e.g. a range query)."""
    window = SeasonalWindow(season_s, step_s, seasons, horizon_s, level_s).extend(points)
    value, used = window.forecast(now_s)
    if value is None:
        return Forecast.missing("seasonal_window", horizon_s, "no_history", f"no data in the last {seasons} seasons")
    return Forecast(
        value=value,
        horizon=horizon_s,
        forecaster="seasonal_window",
        detail=f"mean of the peaks of {used}/{seasons} past seasons",
    )


#: Fewer recent points than this make no ``recent`` forecast (no deviation to speak of).
MIN_RECENT_POINTS = 4


class RecentWindow:
    """The last ``window_s`` of a metric, one value per ``step`` (the newest in a step wins, as a range
    query samples it), with running sums: ``forecast(t)`` is ``mean + deviations x sd`` (sample standard
    deviation) over the slots in ``(t - window, t]``, never below 0; None with fewer than
    :data:`MIN_RECENT_POINTS` points."""

    def __init__(self, window_s: float, step_s: float, deviations: float) -> None:
        if window_s <= 0 or step_s <= 0 or deviations < 0:
            raise ValueError("window and step must be positive, deviations >= 0")
        self.step = step_s
        self.window_slots = max(1, math.floor(window_s / step_s + 1e-9))
        self.deviations = deviations
        self._points: deque[tuple[int, float]] = deque()  # (slot, value), oldest first
        # running sums of (value - shift): shifted by a value of the window, so the variance does not
        # cancel out for large values with a small spread
        self._shift = 0.0
        self._sum = 0.0
        self._sumsq = 0.0

    def _index(self, t_s: float) -> int:
        return math.floor(t_s / self.step + 1e-9)

    def add(self, t_s: float, value: float) -> None:
        """Record ``value`` at ``t_s``; a point older than the newest one is ignored."""
        slot, points = self._index(t_s), self._points
        if points and slot < points[-1][0]:
            return
        if points and slot == points[-1][0]:
            self._drop(points.pop()[1])
        if not points:
            self._shift, self._sum, self._sumsq = value, 0.0, 0.0
        points.append((slot, value))
        d = value - self._shift
        self._sum += d
        self._sumsq += d * d

    def _drop(self, value: float) -> None:
        d = value - self._shift
        self._sum -= d
        self._sumsq -= d * d

    def extend(self, points: Iterable[tuple[float, float]]) -> RecentWindow:
        for t_s, value in sorted(points):
            self.add(t_s, value)
        return self

    def _evict(self, now_slot: int) -> None:
        points, first = self._points, now_slot - self.window_slots
        while points and points[0][0] <= first:
            self._drop(points.popleft()[1])

    def stats(self, t_s: float) -> tuple[float, float, int] | None:
        """(mean, sample standard deviation, points) of the window ending at ``t_s``; None: too few points."""
        now_slot = self._index(t_s)
        self._evict(now_slot)
        points = self._points
        if points and points[-1][0] > now_slot:  # points after t_s (a query that ran past it): exact, slower
            values = [v for slot, v in points if slot <= now_slot]
            n = len(values)
            if n < MIN_RECENT_POINTS:
                return None
            mean = sum(values) / n
            var = sum((v - mean) ** 2 for v in values) / (n - 1)
        else:
            n = len(points)
            if n < MIN_RECENT_POINTS:
                return None
            d = self._sum / n
            mean = self._shift + d
            var = max(0.0, (self._sumsq - n * d * d) / (n - 1))
        return mean, math.sqrt(var), n

    def forecast(self, t_s: float) -> tuple[float | None, int]:
        """(forecast, points it uses) at ``t_s``."""
        found = self.stats(t_s)
        if found is None:
            return None, 0
        mean, sd, n = found
        return max(0.0, mean + self.deviations * sd), n


def recent_forecast(
    points: Iterable[tuple[float, float]], now_s: float, *, window_s: float, step_s: float, deviations: float,
    horizon_s: float,
) -> Forecast:
    """The ``recent`` forecast at ``now_s`` from ``(t_s, value)`` points (e.g. a range query)."""
    window = RecentWindow(window_s, step_s, deviations).extend(points)
    found = window.stats(now_s)
    if found is None:
        return Forecast.missing(
            "recent", horizon_s, "no_history", f"fewer than {MIN_RECENT_POINTS} points in the last {window_s:g}s"
        )
    mean, sd, n = found
    return Forecast(
        value=max(0.0, mean + deviations * sd),
        horizon=horizon_s,
        forecaster="recent",
        detail=recent_detail(mean, sd, n, deviations, window_s),
    )


def recent_detail(mean: float, sd: float, n: int, deviations: float, window_s: float) -> str:
    """``mean {mean:.6g} + {deviations:g} x sd {sd:.6g} of {n} points in the last {window_s:g}s``."""
    parts = _RECENT_PARTS.get((deviations, window_s))
    if parts is None:  # the config's constants, formatted once
        if len(_RECENT_PARTS) > 4096:  # config values only, but never unbounded
            _RECENT_PARTS.clear()
        parts = _RECENT_PARTS[deviations, window_s] = (f" + {deviations:g} x sd ", f" points in the last {window_s:g}s")
    return f"mean {mean:.6g}{parts[0]}{sd:.6g} of {n}{parts[1]}"


_RECENT_PARTS: dict[tuple[float, float], tuple[str, str]] = {}


class HoltWintersModel(BaseModel):
    """The final state of an additive (damped-trend) Holt-Winters model, as stored after training.

    ``seasonal[i]`` is the seasonal component of step ``i`` after the end of the training window
    (``i`` modulo the season length). Small: one float per step of one season.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    forecaster: Literal["holt_winters"] = "holt_winters"
    metric: str
    step_s: float = Field(gt=0)
    season_s: float = Field(gt=0)
    trained_from: datetime
    trained_at: datetime = Field(description="End of the training window")
    level: float
    trend: float = 0.0
    damping: float = Field(default=1.0, ge=0.0, le=1.0)
    seasonal: list[float] = Field(min_length=1)
    error: float = Field(ge=0, description="RMSE on the held-out last part of the window")
    points: int = Field(ge=0, description="Points in the training window")

    def predict(self, at: datetime, horizon_s: float) -> float:
        """Peak of the forecast over ``[at, at + horizon_s]`` (never below 0)."""
        start = (at - self.trained_at).total_seconds()
        first = max(1, math.ceil(start / self.step_s - 1e-9))
        last = max(first, math.ceil((start + horizon_s) / self.step_s - 1e-9))
        m = len(self.seasonal)
        best = 0.0
        for h in range(first, last + 1):
            if self.damping == 1.0:
                trend = h * self.trend
            else:
                trend = self.trend * self.damping * (1 - self.damping**h) / (1 - self.damping)
            best = max(best, self.level + trend + self.seasonal[(h - 1) % m])
        return best

    def forecast(self, at: datetime, horizon_s: float) -> Forecast:
        return Forecast(
            value=self.predict(at, horizon_s),
            horizon=horizon_s,
            forecaster="holt_winters",
            trained_at=self.trained_at,
            error=self.error,
            detail=f"trained on {self.points} points to {self.trained_at.isoformat()}",
        )


def floor_for(value: float, margin: float, target: float) -> int:
    """Replicas needed for ``value`` with the safety margin: ``ceil(value x (1 + margin) / target)``."""
    return max(1, ceil_rounded(value * (1 + margin) / target))
