"""The simulation: a time grid, replica dynamics with start-up delay, the real autoscaler per tick, the oracle.

Everything runs on a grid whose step divides the trace interval, the decision interval, the scrape
interval and lag, the metric window and the start-up delay, so every event falls on a cell boundary
and the integrals (replica-hours, unserved requests) are exact for the step-wise demand of the trace.
Per-tick inputs that do not depend on the policy (the window-averaged demand, the times) are
precomputed with numpy; the loop itself only builds the readings, calls the autoscaler's evaluation
service (:func:`scalewise.autoscaler.evaluate`, the decision step the flow, ``plan`` and the fast loop
use: the real :func:`~scalewise.policy.decide.decide` with the autoscaler's state handling, the
initial state for a workload seen for the first time, then each decision's state carried forward as
the autoscaler persists it) and applies the decided count.
"""

from __future__ import annotations

import math
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import numpy as np
import numpy.typing as npt

from scalewise import autoscaler
from scalewise.autoscaler import Observed
from scalewise.backtest.model import ServiceModel
from scalewise.backtest.trace import Trace, TraceError
from scalewise.model import WorkloadState
from scalewise.policy.config import MetricTarget, Predictive
from scalewise.policy.decide import Decision, PolicyState
from scalewise.policy.forecast import MIN_RECENT_POINTS, Forecast, RecentWindow, SeasonalWindow, recent_detail
from scalewise.policy.readings import MetricReading
from scalewise.policy.trusted import maker
from scalewise.spec import WorkloadSpec

IntArray = npt.NDArray[np.int64]
FloatArray = npt.NDArray[np.float64]
Progress = Callable[[int], None]

#: The grid may not exceed this many cells (memory: a few arrays of 8 bytes per cell per policy).
MAX_CELLS = 40_000_000
_EPS = 1e-9

# Values the simulation computed (finite, non-negative): built without re-validation (see policy.trusted).
_reading = maker(MetricReading)
_forecast = maker(Forecast)


@dataclass(frozen=True)
class Grid:
    """The trace resampled on the simulation grid, plus per-tick precomputations."""

    step_s: float
    rate: FloatArray  # requests/s in each cell
    need: IntArray  # replicas needed to serve the cell: ceil(rate / capacity)
    tick_cells: int
    startup_cells: int
    ticks: int
    scrape_cell: IntArray  # per tick: end (exclusive) of the metric window
    window_start: IntArray  # per tick: start of the metric window
    total_rate: FloatArray  # per tick: demand averaged over the window (requests/s)
    now: list[datetime]  # per tick
    seen_at: list[datetime]  # per tick: time of the scrape the reading comes from
    now_s: list[float]  # per tick: ``now`` as a POSIX timestamp (the forecasters' clock)
    seen_s: list[float]  # per tick: ``seen_at`` as a POSIX timestamp

    @property
    def cells(self) -> int:
        return len(self.rate)


def _ms(seconds: float) -> int:
    return round(seconds * 1000)


def build_grid(trace: Trace, model: ServiceModel) -> Grid:
    parts = [trace.interval_s, model.interval_s, model.scrape_interval_s, model.window_s]
    parts += [x for x in (model.startup_s, model.scrape_lag_s) if x > 0]
    step_ms = 0
    for part in parts:
        step_ms = math.gcd(step_ms, _ms(part))
    per_row = _ms(trace.interval_s) // step_ms
    cells = per_row * len(trace.requests)
    if cells > MAX_CELLS:
        raise TraceError(
            "model", "interval",
            f"the trace needs {cells:,} simulation steps of {step_ms} ms (limit {MAX_CELLS:,}); "
            "use intervals that share a larger common divisor with the trace interval",
        )
    step = step_ms / 1000
    rate = np.repeat(trace.rate, per_row)
    need = np.ceil(rate / model.capacity - _EPS).astype(np.int64)
    need[need < 0] = 0
    tick_cells = _ms(model.interval_s) // step_ms
    ticks = -(-cells // tick_cells)
    scrape = _ms(model.scrape_interval_s) // step_ms
    lag = _ms(model.scrape_lag_s) // step_ms
    window = _ms(model.window_s) // step_ms
    decision_cells = np.arange(ticks, dtype=np.int64) * tick_cells
    end = ((decision_cells - lag) // scrape) * scrape  # the newest scrape old enough to be seen
    end = np.clip(end, 1, cells)  # before the trace starts: its first cell stands in
    begin = np.maximum(end - window, 0)
    csum = np.concatenate(([0.0], np.cumsum(rate)))
    total = (csum[end] - csum[begin]) / (end - begin)
    t0 = model.start or datetime.fromtimestamp(trace.start_s, UTC)
    now = [t0 + timedelta(seconds=float(c) * step) for c in decision_cells]
    seen = [t0 + timedelta(seconds=float(max(int(e) - 1, 0)) * step) for e in end]
    return Grid(step, rate, need, tick_cells, _ms(model.startup_s) // step_ms, ticks, end, begin, total, now, seen,
                [t.timestamp() for t in now], [t.timestamp() for t in seen])


class Replicas:
    """Provisioned and ready replicas over the grid, with the start-up delay.

    The arrays are written lazily: while the counts stay the same and no replica is starting, the
    cells are one open run written at the next change or :meth:`flush` (call ``flush(cells)`` before
    reading the arrays, ``flush(cell)`` before reading the cells before ``cell``).
    """

    def __init__(self, cells: int, initial: int, startup_cells: int) -> None:
        self.provisioned: IntArray = np.zeros(cells, dtype=np.int64)
        self.ready_cells: IntArray = np.zeros(cells, dtype=np.int64)
        self.current = initial
        self.ready = initial
        self.startup = startup_cells
        self.pending: deque[list[int]] = deque()  # [ready_at_cell, count], in launch order
        self.actions = 0
        self._run_from = 0  # the open run: cells [_run_from, ...) hold (_run_current, _run_ready)
        self._run_current = self._run_ready = -1  # -1: no open run

    def mature(self, cell: int) -> None:
        while self.pending and self.pending[0][0] <= cell:
            self.ready += self.pending.popleft()[1]

    def set(self, cell: int, desired: int) -> None:
        """Apply a new desired count at ``cell`` (scale-down drops starting replicas first, newest first)."""
        if desired == self.current:
            return
        self.actions += 1
        if desired > self.current:
            self.pending.append([cell + self.startup, desired - self.current])
        else:
            drop = self.current - desired
            while drop and self.pending:
                last = self.pending[-1]
                take = min(drop, last[1])
                last[1] -= take
                drop -= take
                if last[1] == 0:
                    self.pending.pop()
            self.ready -= drop
        self.current = desired
        self.mature(cell)

    def fill(self, cell: int, end: int) -> None:
        """Record the counts for cells ``[cell, end)`` (replicas becoming ready inside are included)."""
        if not self.pending:
            if self.current == self._run_current and self.ready == self._run_ready:
                return  # the open run goes on
            self.flush(cell)
            self._run_current, self._run_ready = self.current, self.ready
            return
        self.flush(cell)
        self._run_current = self._run_ready = -1
        self._run_from = end
        self.provisioned[cell:end] = self.current
        self.ready_cells[cell:end] = self.ready
        for at, count in self.pending:
            if at >= end:
                break
            self.ready_cells[at:end] += count

    def flush(self, cell: int) -> None:
        """Write the open run's cells before ``cell``."""
        start = self._run_from
        if start < cell:
            if self._run_current >= 0:
                self.provisioned[start:cell] = self._run_current
                self.ready_cells[start:cell] = self._run_ready
            self._run_from = cell


@dataclass
class Run:
    """One policy's simulated schedule."""

    name: str
    provisioned: IntArray
    ready: IntArray
    actions: int
    decisions: int = 0
    reasons: Counter[str] = field(default_factory=Counter)
    forecast_steps: Counter[str] = field(default_factory=Counter)  # reasons of the predictive step

    def tally(self, decision: Decision, forecast: bool) -> None:
        """Count a decision's reason (and, with a forecast, its predictive step's reason)."""
        self.reasons[decision.reason] += 1
        if forecast:
            for step in decision.steps:
                if step.name == "forecast":
                    self.forecast_steps[step.reason] += 1


def _clamp(value: int, low: int, high: int) -> int:
    return max(low, min(high, value))


def oracle(grid: Grid, bounds: tuple[int, int]) -> Run:
    """The cheapest schedule with no under-provisioning under the same start-up delay.

    A replica that must be ready at ``t`` has to be started by ``t - startup``, so at every ``t`` the
    oracle holds the largest need over ``[t, t + startup]`` (within the bounds), and scales down at once.
    """
    need = np.clip(grid.need, bounds[0], bounds[1])
    width = grid.startup_cells + 1
    padded = np.concatenate((need, np.full(width - 1, need[-1])))
    planned = np.lib.stride_tricks.sliding_window_view(padded, width).max(axis=1)
    reps = Replicas(grid.cells, int(planned[0]), grid.startup_cells)
    changes = np.flatnonzero(np.diff(planned)) + 1
    starts = [0, *changes.tolist()]
    ends = [*changes.tolist(), grid.cells]
    for begin, end in zip(starts, ends, strict=True):
        reps.mature(begin)
        reps.set(begin, int(planned[begin]))
        reps.fill(begin, end)
    reps.flush(grid.cells)
    return Run("oracle", reps.provisioned, reps.ready_cells, reps.actions, decisions=0)


def initial_count(grid: Grid, bounds: tuple[int, int]) -> int:
    width = grid.startup_cells + 1
    return _clamp(int(grid.need[:width].max()), bounds[0], bounds[1])


class Forecaster:
    """The demand forecast for ``autoscaling.predictive``, made the way a deployment makes it: from the
    history of the demand metric the autoscaler has seen (a seasonal-window ring buffer, or the recent
    window, fed with each tick's reading). The backtest trains no model: ``holt_winters`` uses its
    ``fallback`` (``seasonal_window``), or reports ``model_missing`` with ``fallback: none``."""

    def __init__(self, predictive: Predictive) -> None:
        self.spec = predictive
        self.recent: RecentWindow | None = None
        if predictive.forecaster == "recent":
            self.recent = RecentWindow(predictive.window, predictive.step, predictive.deviations)
        self.window = SeasonalWindow(
            predictive.season, predictive.step, predictive.seasons, predictive.horizon, predictive.level_window
        )
        self.missing: Forecast | None = None
        if predictive.forecaster == "holt_winters" and predictive.fallback == "none":
            self.missing = Forecast.missing(
                "holt_winters", predictive.horizon, "model_missing", "no model is trained in a backtest"
            )
        self.note = "" if predictive.forecaster == "seasonal_window" else "model_missing: seasonal_window fallback; "
        self.no_history = Forecast.missing(
            "seasonal_window", predictive.horizon, "no_history", f"no data in the last {predictive.seasons} seasons"
        )

    def __call__(self, seen_s: float, demand: float, now_s: float) -> Forecast:
        """The forecast at ``now_s`` after the reading of ``demand`` scraped at ``seen_s`` (POSIX seconds)."""
        if self.recent is not None:
            return self._recent(self.recent, seen_s, demand, now_s)
        self.window.add(seen_s, demand)
        if self.missing is not None:
            return self.missing
        horizon = self.spec.horizon
        value, used = self.window.forecast(now_s)
        if value is None:
            return self.no_history
        detail = f"{self.note}mean of the peaks of {used}/{self.spec.seasons} past seasons"
        return _forecast(value=value, horizon=horizon, forecaster="seasonal_window", detail=detail)


    def _recent(self, recent: RecentWindow, seen_s: float, demand: float, now_s: float) -> Forecast:
        p = self.spec
        recent.add(seen_s, demand)
        found = recent.stats(now_s)
        if found is None:
            why = f"fewer than {MIN_RECENT_POINTS} points in the last {p.window:g}s"
            return Forecast.missing("recent", p.horizon, "no_history", why)
        mean, sd, n = found
        detail = recent_detail(mean, sd, n, p.deviations, p.window)
        value = max(0.0, mean + p.deviations * sd)
        return _forecast(value=value, horizon=p.horizon, forecaster="recent", trained_at=None, error=None,
                       unavailable=None, detail=detail)


def _metric_kind(metric: MetricTarget) -> str:
    per_replica = metric.source == "docker_cpu" or metric.per_replica_label is not None
    if metric.type == "utilization":
        return "utilization_each" if per_replica else "utilization"
    if per_replica:
        return "rate_each"
    return "total"


class _Meter:
    """The readings the autoscaler sees at each tick: the window-averaged demand (``total``), or the
    demand per ready replica over the window (per replica, or as utilization of ``capacity``)."""

    def __init__(self, metrics: list[MetricTarget], grid: Grid, model: ServiceModel, ready: IntArray) -> None:
        self.kinds = [(m.name, _metric_kind(m)) for m in metrics]
        self.needs_history = any(kind != "total" for _, kind in self.kinds)
        # One metric of the total demand (the common case): its reading is built directly.
        self.only_total = self.kinds[0][0] if len(self.kinds) == 1 and not self.needs_history else None
        self.rate, self.ready_hist, self.capacity = grid.rate, ready, model.capacity
        self.totals = grid.total_rate.tolist()
        self.ends, self.begins = grid.scrape_cell.tolist(), grid.window_start.tolist()

    def per_replica(self, k: int, cell: int, ready: int) -> tuple[float, bool]:
        """The demand per ready replica over tick ``k``'s window, and whether any replica was ready."""
        lo, hi = self.begins[k], self.ends[k]
        hist = self.ready_hist[lo:hi] if hi <= cell else None
        if hist is None or hist.size == 0:
            return (self.totals[k] / ready, True) if ready > 0 else (0.0, False)
        mask = hist > 0
        if not mask.any():
            return 0.0, False
        return float((self.rate[lo:hi][mask] / hist[mask]).mean()), True

    def __call__(self, k: int, cell: int, seen: datetime, ready: int) -> list[MetricReading]:
        if self.only_total is not None:
            return [_reading(name=self.only_total, value=self.totals[k], timestamp=seen)]
        per_replica, hist_ok = self.per_replica(k, cell, ready) if self.needs_history else (0.0, True)
        readings: list[MetricReading] = []
        for metric_name, kind in self.kinds:
            if kind == "total":
                readings.append(_success(metric_name, seen, self.totals[k]))
            elif not hist_ok:
                readings.append(MetricReading.failure(metric_name, seen, "no_replicas", "no ready replica"))
            else:
                value = per_replica if kind == "rate_each" else 100.0 * per_replica / self.capacity
                if kind == "utilization":
                    readings.append(_success(metric_name, seen, value))
                else:
                    each = {f"r{i}": value for i in range(ready)}
                    readings.append(MetricReading.per_replica(metric_name, seen, each))
        return readings


def _success(metric: str, at: datetime, value: float) -> MetricReading:
    return _reading(name=metric, value=value, timestamp=at)


class _Observer:
    """The orchestrator's view of the workload; only the counts vary, so one object per (desired, ready)."""

    def __init__(self, spec: WorkloadSpec) -> None:
        self.spec = spec
        self.seen: dict[tuple[int, int], WorkloadState] = {}

    def __call__(self, desired: int, ready: int) -> WorkloadState:
        state = self.seen.get((desired, ready))
        if state is None:
            spec = self.spec
            state = self.seen[(desired, ready)] = WorkloadState(
                name=spec.name, target=spec.target, desired_replicas=desired, ready_replicas=ready,
                running_replicas=desired, image=spec.image, version="backtest",
            )
        return state


def simulate(
    name: str,
    spec: WorkloadSpec,
    grid: Grid,
    model: ServiceModel,
    progress: Progress | None = None,
    every: int = 2000,
) -> Run:
    """Drive the autoscaler's evaluation service over the grid, one :func:`~scalewise.autoscaler.evaluate`
    per decision tick, each decision's state carried forward as the autoscaler persists it."""
    auto = spec.autoscaling
    if auto is None:
        raise TraceError("workload", "autoscaling", f"{spec.name} has no autoscaling section to backtest")
    # A deployed service runs at least one replica (metric scaling never starts from 0).
    reps = Replicas(grid.cells, max(1, initial_count(grid, (spec.replicas.min, spec.replicas.max))), grid.startup_cells)
    meter, observer = _Meter(auto.metrics, grid, model, reps.ready_cells), _Observer(spec)
    forecaster = Forecaster(auto.predictive) if auto.predictive is not None else None
    evaluate = autoscaler.evaluate  # looked up per run (tests record the decisions by wrapping it)
    state: PolicyState | None = None
    run = Run(name, reps.provisioned, reps.ready_cells, 0, decisions=grid.ticks)
    tick_cells, cells, history = grid.tick_cells, grid.cells, meter.needs_history
    seen_at, now_at, seen_s, now_s, totals = grid.seen_at, grid.now, grid.seen_s, grid.now_s, meter.totals
    mature, apply, fill, pending = reps.mature, reps.set, reps.fill, reps.pending
    states, reasons, forecast_steps = observer.seen, run.reasons, run.forecast_steps
    # The loop inlines the cheap checks of reps.mature/set/fill, observer() and run.tally (same effects).
    for k in range(grid.ticks):
        cell = k * tick_cells
        if pending and pending[0][0] <= cell:
            mature(cell)
        if history:
            reps.flush(cell)  # the meter reads the ready replicas before this cell
        current, ready = reps.current, reps.ready
        readings = meter(k, cell, seen_at[k], ready)
        forecast = forecaster(seen_s[k], totals[k], now_s[k]) if forecaster is not None else None
        workload = states.get((current, ready)) or observer(current, ready)
        decision = evaluate(spec, Observed(workload, readings, state, now_at[k], forecast)).decision
        state = decision.state
        reasons[decision.reason] += 1
        if forecast is not None:
            for step in decision.steps:
                if step.name == "forecast":
                    forecast_steps[step.reason] += 1
        if decision.desired != current:
            apply(cell, decision.desired)
        if pending or reps.current != reps._run_current or reps.ready != reps._run_ready:
            fill(cell, min(cell + tick_cells, cells))
        if progress is not None and (k + 1) % every == 0:
            progress(every)
    if progress is not None:
        progress(grid.ticks % every)
    reps.flush(cells)
    run.actions = reps.actions
    return run
