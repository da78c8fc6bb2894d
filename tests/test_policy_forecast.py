"""Predictive scaling in the policy: the forecast floor, forecast_only, staleness, replay; forecasters."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from scalewise.errors import SpecError
from scalewise.policy.config import AutoscalingSpec
from scalewise.policy.decide import DecisionInputs, PolicyState, decide
from scalewise.policy.forecast import (
    LEVEL_LIMITS,
    MIN_RECENT_POINTS,
    Forecast,
    HoltWintersModel,
    RecentWindow,
    SeasonalWindow,
    recent_forecast,
    seasonal_window_forecast,
)
from scalewise.policy.readings import MetricReading
from scalewise.policy.record import DecisionRecord, replay
from scalewise.spec import parse_workload

T0 = datetime(2026, 1, 5, 12, 0, 0, tzinfo=UTC)
NO_WINDOWS = {
    "scale_up": {"stabilization_window": 0, "policies": [{"type": "percent", "value": 1000, "period": 15}]},
    "scale_down": {"stabilization_window": 0, "policies": [{"type": "percent", "value": 100, "period": 15}]},
}
RPS = {"name": "rps", "query": 'sum(rate(req{workload="{workload}"}[1m]))', "type": "average_value", "target": 10}


def spec(**predictive: Any) -> AutoscalingSpec:
    return AutoscalingSpec.model_validate(
        {"metrics": [RPS], "behavior": NO_WINDOWS, "predictive": {"metric": "rps", **predictive}}
    )


def run(s: AutoscalingSpec, total: float, current: int, forecast: Forecast | None, now: datetime = T0):
    reading = [MetricReading.success("rps", now, total)]
    return decide(s, (1, 20), reading, current, current, PolicyState(), now, None, forecast)


def fc(value: float | None, **kw: Any) -> Forecast:
    return Forecast(value=value, horizon=60, forecaster="seasonal_window", **kw)


def forecast_step(d):
    return next(s for s in d.steps if s.name == "forecast")


def test_floor_raises_the_reactive_proposal():
    d = run(spec(margin=0.1), 20, 2, fc(100))  # reactive: 20/10 -> 2 (in tolerance); floor ceil(110/10) = 11
    assert (d.desired, d.reason) == (11, "forecast_floor")
    step = forecast_step(d)
    assert (step.proposal, step.reason) == (11, "forecast_floor")
    assert "forecast 100 over 60s" in step.detail and "floor 11" in step.detail


def test_reactive_above_the_floor_wins():
    d = run(spec(), 150, 2, fc(50))  # reactive 15, floor 6
    assert (d.desired, d.reason) == (15, "scale_up")
    assert forecast_step(d).reason == "forecast_covered"


def test_forecast_alone_never_scales_in():
    d = run(spec(), 80, 8, fc(0))  # reactive holds 8 (in tolerance), the forecast says nothing is coming
    assert (d.desired, d.reason) == (8, "within_tolerance")
    assert forecast_step(d).reason == "forecast_covered"
    d = run(spec(), 30, 8, fc(50))  # reactive 3, floor 6: the scale-in stops at the floor
    assert (d.desired, d.reason) == (6, "forecast_floor")


def test_forecast_only_records_without_acting():
    base = run(spec(mode="forecast_only"), 20, 2, None)
    d = run(spec(mode="forecast_only"), 20, 2, fc(100))
    assert (d.desired, d.reason) == (base.desired, base.reason) == (2, "within_tolerance")
    step = forecast_step(d)
    assert (step.proposal, step.reason) == (11, "forecast_only") and "would raise 2 to 11" in step.detail


def test_stale_and_missing_forecasts_set_no_floor():
    stale = fc(100, trained_at=T0 - timedelta(days=3), error=1.5)
    d = run(spec(max_model_age="2d"), 20, 2, stale)
    assert d.desired == 2 and forecast_step(d).reason == "forecast_stale"
    d = run(spec(), 20, 2, fc(100, trained_at=T0 - timedelta(days=1)))
    assert d.desired == 11
    d = run(spec(), 20, 2, None)
    assert d.desired == 2 and forecast_step(d).reason == "forecast_unavailable"
    d = run(spec(), 20, 2, Forecast.missing("holt_winters", 60, "model_missing", "no stored model"))
    step = forecast_step(d)
    assert step.reason == "forecast_unavailable" and "model_missing: no stored model" in step.detail
    no_predictive = AutoscalingSpec.model_validate({"metrics": [RPS], "behavior": NO_WINDOWS})
    d = run(no_predictive, 20, 2, fc(100))
    assert d.desired == 2 and not any(s.name == "forecast" for s in d.steps)


def test_record_replays_the_forecast():
    s = spec()
    d = run(s, 20, 2, fc(100, trained_at=T0 - timedelta(hours=1), error=2.0, detail="x"))
    record = DecisionRecord.model_validate_json(DecisionRecord.of(s, PolicyState(), d).model_dump_json())
    assert record.decision.inputs.forecast is not None and record.decision.inputs.forecast.value == 100
    assert replay(record) == d


def test_old_records_without_a_forecast_still_load():
    old = {"bounds": [1, 5], "readings": [], "current": 1, "ready": 1, "now": T0.isoformat(), "config_hash": "x"}
    assert DecisionInputs.model_validate(old).forecast is None


@pytest.mark.parametrize(
    ("predictive", "field", "message"),
    [
        ({"metric": "nope"}, "predictive.metric", "not one of the metrics"),
        ({"metric": "cpu"}, "predictive.metric", "must be an 'average_value' metric"),
        ({"metric": "rps", "forecaster": "prophet"}, "predictive.forecaster", "seasonal_window"),
        ({"metric": "rps", "margin": -0.1}, "predictive.margin", "greater than or equal to 0"),
        ({"metric": "rps", "mode": "scale"}, "predictive.mode", "forecast_only"),
        ({"metric": "rps", "horizon": "0s"}, "predictive.horizon", "greater than 0"),
        ({"metric": "rps", "season": "90s", "step": "120s"}, "predictive", "longer than the season"),
        ({"metric": "rps", "seasons": 0}, "predictive.seasons", "greater than or equal to 1"),
        ({"metric": "rps", "max_model_age": "soon"}, "predictive.max_model_age", ""),
        ({"metric": "rps", "surprise": 1}, "predictive.surprise", "Extra inputs"),
        ({"metric": "rps", "forecaster": "recent", "window": "1m", "step": "30s"}, "predictive", "at least 4 steps"),
        ({"metric": "rps", "window": "0s"}, "predictive.window", "greater than 0"),
        ({"metric": "rps", "deviations": -1}, "predictive.deviations", "greater than or equal to 0"),
        ({"metric": "rps", "deviations": 11}, "predictive.deviations", "less than or equal to 10"),
        ({"metric": "rps", "target": 0}, "predictive.target", "greater than 0"),
        ({"metric": "rps", "target": "lots"}, "predictive.target", "valid number"),
    ],
)
def test_predictive_validation_names_the_field(predictive, field, message):
    doc = {
        "name": "api",
        "target": "docker",
        "image": "x:1",
        "autoscaling": {
            "metrics": [RPS, {"name": "cpu", "source": "docker_cpu", "type": "utilization", "target": 60}],
            "predictive": predictive,
        },
    }
    with pytest.raises(SpecError) as exc:
        parse_workload(doc, "api.yaml")
    text = str(exc.value)
    assert "api.yaml" in text and field in text and message in text, text


def test_defaults():
    p = spec().predictive
    assert p is not None
    assert (p.forecaster, p.horizon, p.margin, p.season, p.seasons, p.mode) == (
        "seasonal_window", 60.0, 0.1, 86400.0, 7, "forecast_and_scale",
    )


def test_predictive_target_plans_the_floor():
    # forecast 100 with no margin: at the metric's target (10) the floor is 10, at predictive.target 25 it is 4
    assert run(spec(margin=0), 20, 2, fc(100)).desired == 10
    d = run(spec(margin=0, target=25), 20, 2, fc(100))
    assert (d.desired, d.reason) == (4, "forecast_floor") and "/ 25 -> floor 4" in forecast_step(d).detail
    # the reactive proposal keeps the metric's own target
    assert run(spec(margin=0, target=25), 150, 2, fc(0)).desired == 15


def test_fields_added_later_keep_the_config_hash():
    assert spec().config_hash() == spec(window="30m", deviations=3, target=None, level_window=0).config_hash()
    assert spec().config_hash() != spec(forecaster="recent").config_hash()
    assert spec().config_hash() != spec(target=0.5).config_hash()


# --------------------------------------------------------------------------- forecasters


@pytest.mark.parametrize(
    ("points", "now", "deviations", "expected"),
    [
        ([(0, 1.0), (15, 2.0), (30, 3.0), (45, 4.0)], 45, 0.0, 2.5),  # the mean
        ([(0, 1.0), (15, 2.0), (30, 3.0), (45, 4.0)], 45, 2.0, 2.5 + 2 * (5 / 3) ** 0.5),  # + 2 sample sd
        ([(0, 5.0), (15, 5.0), (30, 5.0), (45, 5.0)], 45, 3.0, 5.0),  # flat: no spread
        ([(0, 9.0), (5, 1.0), (15, 2.0), (30, 3.0), (45, 4.0)], 45, 0.0, 2.5),  # the newest point in a step wins
        ([(-15, 99.0), (0, 1.0), (15, 2.0), (30, 3.0), (45, 4.0)], 45 + 14, 0.0, 2.5),  # older than the window
        ([(0, 0.0), (15, 0.0), (30, 0.0), (45, 4.0)], 45, 0.0, 1.0),
        ([(0, -4.0), (15, -4.0), (30, -4.0), (45, -4.0)], 45, 1.0, 0.0),  # never below 0
        ([(0, 1.0), (15, 2.0), (30, 3.0), (45, 4.0), (60, 50.0)], 45, 0.0, 2.5),  # after now: not used
    ],
)
def test_recent_window_table(points, now, deviations, expected):
    f = recent_forecast(points, now, window_s=60, step_s=15, deviations=deviations, horizon_s=75)
    assert f.value == pytest.approx(expected) and f.forecaster == "recent" and f.horizon == 75
    assert f"+ {deviations:g} x sd" in f.detail and "of 4 points in the last 60s" in f.detail


def test_recent_window_needs_a_few_points():
    points = [(t, 1.0) for t in range(0, 15 * (MIN_RECENT_POINTS - 1), 15)]
    f = recent_forecast(points, 60, window_s=600, step_s=15, deviations=3, horizon_s=60)
    assert (f.value, f.unavailable) == (None, "no_history")
    assert RecentWindow(600, 15, 3).extend(points).forecast(60) == (None, 0)
    with pytest.raises(ValueError):
        RecentWindow(0, 15, 3)


@settings(max_examples=150, deadline=None)
@given(
    st.lists(st.tuples(st.integers(0, 40), st.floats(-1000, 1000, allow_nan=False)), max_size=60),
    st.sampled_from([0.0, 1e6, 1e9]),
    st.integers(4, 12),
    st.floats(0, 5),
)
def test_recent_window_running_sums_match_brute_force(samples, offset, slots, deviations):
    """Fed in time order and asked after every point (as the backtest does), the running sums give
    the same forecast as the mean and sample deviation of the window's points; also for large values
    with a small spread (no cancellation)."""
    step = 15.0
    window = RecentWindow(slots * step, step, deviations)
    kept: dict[int, float] = {}
    for slot, v in sorted(samples, key=lambda p: p[0]):
        value = offset + v
        window.add(slot * step, value)
        kept[slot] = value
        inside = [x for k, x in kept.items() if slot - slots < k <= slot]
        got, n = window.forecast(slot * step)
        assert n == (len(inside) if len(inside) >= MIN_RECENT_POINTS else 0)
        if n:
            mean = sum(inside) / n
            sd = (sum((x - mean) ** 2 for x in inside) / (n - 1)) ** 0.5
            assert got == pytest.approx(max(0.0, mean + deviations * sd), rel=1e-9, abs=1e-6 * max(1.0, sd))


def test_forecast_for_recent_reads_one_window():
    from scalewise.forecasting import forecast_for

    now = T0 + timedelta(hours=3)
    asked: list[tuple[float, float, float]] = []

    def read(metric: Any, start: datetime, end: datetime, step_s: float) -> list[tuple[float, float]]:
        asked.append(((now - start).total_seconds(), (now - end).total_seconds(), step_s))
        count = int((end - start).total_seconds() // step_s) + 1
        return [(start.timestamp() + k * step_s, 10.0 + (k % 2)) for k in range(count)]

    s = spec(forecaster="recent", window="10m", step="15s", deviations=2, horizon="75s")
    f = forecast_for("api", s, now, read=read)
    assert asked == [(600.0, 0.0, 15.0)]
    assert f is not None and f.forecaster == "recent" and f.horizon == 75
    assert f.value == pytest.approx(10.5 + 2 * (10 / 39) ** 0.5)  # 40 points after now - 10m: 20 x 10, 20 x 11
    assert forecast_for("api", s, now, read=None).unavailable == "source"  # type: ignore[union-attr]

    def broken(*_: Any) -> list[tuple[float, float]]:
        raise ConnectionError("down")

    failed = forecast_for("api", s, now, read=broken)
    assert failed is not None and failed.unavailable == "source" and "ConnectionError: down" in failed.detail


def test_seasonal_window_mean_of_past_peaks():
    day = 86400.0
    points = [(k * day + 3600 + dt, v) for k, v in ((0, 10.0), (1, 20.0), (2, 30.0)) for dt in (0, 30, 60)]
    points.append((2 * day + 3600 + 120, 99.0))  # outside the 60 s window: ignored
    f = seasonal_window_forecast(points, 3 * day + 3600, season_s=day, seasons=7, horizon_s=60, step_s=30)
    assert f.value == pytest.approx(20.0) and "3/7" in f.detail
    f = seasonal_window_forecast(points, 3 * day + 3600, season_s=day, seasons=2, horizon_s=60, step_s=30)
    assert f.value == pytest.approx(25.0)
    empty = seasonal_window_forecast([], 0, season_s=day, seasons=7, horizon_s=60, step_s=30)
    assert (empty.value, empty.unavailable) == (None, "no_history")


def test_seasonal_window_level_adjustment():
    day, step = 86400.0, 60.0
    # two past days at 10 req/s all day; today at 15 req/s over the last 10 minutes
    points = [(k * day + t, 10.0) for k in (0, 1) for t in range(0, 86400, 60)]
    now = 2 * day + 7200
    points += [(now - t, 15.0) for t in range(0, 600, 60)]
    plain = seasonal_window_forecast(points, now, season_s=day, seasons=2, horizon_s=60, step_s=step)
    level = seasonal_window_forecast(points, now, season_s=day, seasons=2, horizon_s=60, step_s=step, level_s=600)
    assert plain.value == pytest.approx(10.0) and level.value == pytest.approx(15.0)
    # bounded: a burst (x50) raises the profile at most LEVEL_LIMITS[1] times
    burst = [*points[:-10], *((now - t, 500.0) for t in range(0, 600, 60))]
    high = seasonal_window_forecast(burst, now, season_s=day, seasons=2, horizon_s=60, step_s=step, level_s=600)
    assert high.value == pytest.approx(10.0 * LEVEL_LIMITS[1])
    # nothing recent (no reading yet): the plain profile
    quiet = seasonal_window_forecast(points[:-10], now, season_s=day, seasons=2, horizon_s=60, step_s=step, level_s=600)
    assert quiet.value == pytest.approx(10.0)


@settings(max_examples=150, deadline=None)
@given(
    st.lists(st.tuples(st.integers(0, 400), st.floats(0, 1000, allow_nan=False)), max_size=80),
    st.integers(100, 500),
    st.integers(1, 4),
    st.integers(0, 30),
)
def test_ring_buffer_matches_brute_force(samples, now, seasons, horizon):
    season, step = 50.0, 5.0
    window = SeasonalWindow(season, step, seasons, horizon)
    for t, v in sorted(samples):
        if t <= now:
            window.add(t, v)
    value, _ = window.forecast(now)
    now_slot = now // 5
    peaks = []
    for k in range(1, seasons + 1):
        lo = now_slot - k * 10
        inside = [v for t, v in samples if t <= now and lo <= t // 5 <= lo + -(-horizon // 5)]
        if inside:
            peaks.append(max(inside))
    assert (value is None) == (not peaks)
    if peaks:
        assert value == pytest.approx(sum(peaks) / len(peaks))


def test_holt_winters_model_predicts_its_season():
    model = HoltWintersModel(
        metric="rps", step_s=60, season_s=240, trained_from=T0 - timedelta(days=7), trained_at=T0,
        level=100.0, trend=1.0, damping=1.0, seasonal=[0.0, 10.0, -10.0, 0.0], error=3.0, points=10080,
    )
    assert model.predict(T0, 0) == pytest.approx(101.0)  # h=1
    assert model.predict(T0 + timedelta(seconds=60), 0) == pytest.approx(101.0)  # step h=1 is at T0 + 60 s
    assert model.predict(T0 + timedelta(seconds=120), 0) == pytest.approx(112.0)  # h=2: 100 + 2 + 10
    assert model.predict(T0, 180) == pytest.approx(112.0)  # peak of h=1..3
    f = model.forecast(T0, 60)
    assert f.forecaster == "holt_winters" and f.trained_at == T0 and f.error == 3.0
    damped = model.model_copy(update={"damping": 0.5})
    assert damped.predict(T0 + timedelta(hours=5), 0) < 102.0
    assert HoltWintersModel.model_validate_json(model.model_dump_json()) == model


@settings(max_examples=200, deadline=None)
@given(
    st.floats(0, 500, allow_nan=False),
    st.integers(1, 20),
    st.none() | st.floats(0, 500, allow_nan=False),
    st.sampled_from(["forecast_and_scale", "forecast_only"]),
)
def test_forecast_only_raises_never_lowers(total, current, value, mode):
    s = spec(mode=mode)
    without = run(s, total, current, None)
    d = run(s, total, current, None if value is None else fc(value))
    if mode == "forecast_only" or value is None:
        assert (d.desired, d.reason) == (without.desired, without.reason)
    else:
        assert d.desired >= without.desired
        if d.desired < current:
            assert without.desired <= d.desired  # any scale-in is the reactive policy's
    again = replay(DecisionRecord.model_validate_json(DecisionRecord.of(s, PolicyState(), d).model_dump_json()))
    assert again == d


def test_forecast_for_reads_the_level_window_too():
    from scalewise.forecasting import forecast_for

    day = 86400.0
    now = T0 + timedelta(days=2, hours=2)
    asked: list[tuple[float, float]] = []

    def read(metric: Any, start: datetime, end: datetime, step_s: float) -> list[tuple[float, float]]:
        asked.append(((now - start).total_seconds(), (now - end).total_seconds()))
        t, points = start.timestamp(), []
        while t <= end.timestamp():
            recent = now.timestamp() - t <= 600
            points.append((t, 15.0 if recent else 10.0))
            t += step_s
        return points

    s = spec(seasons=2, level_window="10m", horizon="60s")
    f = forecast_for("api", s, now, read=read)
    assert f is not None and f.value == pytest.approx(15.0)
    assert asked == [(600.0, 0.0), (day + 600, day - 60), (2 * day + 600, 2 * day - 60)]
    asked.clear()
    plain = forecast_for("api", spec(seasons=2, horizon="60s"), now, read=read)
    assert plain is not None and plain.value == pytest.approx(10.0)
    assert asked == [(day, day - 60), (2 * day, 2 * day - 60)]
