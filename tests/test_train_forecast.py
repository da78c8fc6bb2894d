"""The ``train-forecast`` flow against a real Prometheus holding 8 backfilled days (promtool) and a real
Prefect server: the model lands in a Variable with its training window and error; the autoscaler's
forecast input uses it while fresh and falls back to the seasonal window (read from the same
Prometheus) when it is stale or missing."""

from __future__ import annotations

import math
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import yaml

from flows.train_forecast import train_forecast
from scalewise import autoscaler
from scalewise.errors import ScalewiseError
from scalewise.forecasting import forecast_for, history_reader
from scalewise.local import LocalServer
from scalewise.metrics.base import WorkloadRef
from scalewise.metrics.prometheus_source import PrometheusSource
from scalewise.policy.decide import PolicyState, decide
from scalewise.policy.readings import MetricReading
from scalewise.spec import load_workloads
from tasks.forecast import load_model, model_variable
from tests.support.docker_env import unique_name
from tests.support.prom_env import PromEnv, start_prometheus

pytestmark = [pytest.mark.prefect, pytest.mark.prom]

DAY = 86400.0
METRIC = "scalewise_test_demand"
NAME = unique_name("fc")
NOW = math.floor(datetime.now(UTC).timestamp() / 300) * 300
START = NOW - 8 * DAY


def demand(t: float) -> float:
    """A daily cycle between 50 and 150 requests/s."""
    return 100.0 + 50.0 * math.sin(2 * math.pi * (t % DAY) / DAY)


def openmetrics() -> str:
    lines = [f"# TYPE {METRIC} gauge"]
    t = START
    while t <= NOW - 600:
        lines.append(f'{METRIC}{{workload="{NAME}"}} {demand(t):.3f} {t:.0f}')
        t += 300
    return "\n".join([*lines, "# EOF", ""])


@pytest.fixture(scope="module")
def history_prom() -> Iterator[PromEnv]:
    with start_prometheus(retention="30d", backfill=openmetrics()) as env:
        env.wait_until(lambda: bool(env.query(f"count_over_time({METRIC}[9d])")), 60, "backfilled series")
        yield env


def write_spec(folder: Path, forecaster: str) -> None:
    doc = {
        "name": NAME, "target": "docker", "image": "x:1", "replicas": {"min": 1, "max": 40},
        "autoscaling": {
            "metrics": [{"name": "rps", "type": "average_value", "target": 10,
                         "query": f'sum(last_over_time({METRIC}{{workload="{{workload}}"}}[1h]))'}],
            "predictive": {"metric": "rps", "forecaster": forecaster, "horizon": "5m", "step": "5m",
                           "max_model_age": "1d"},
        },
    }
    (folder / f"{NAME}.yaml").write_text(yaml.safe_dump(doc))


def test_train_store_and_use(
    prefect_server: LocalServer, history_prom: PromEnv, workloads_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from prefect.variables import Variable

    monkeypatch.setenv(autoscaler.ENV_PROM_URL, history_prom.url)
    autoscaler.reset_sources()
    write_spec(workloads_dir, "holt_winters")
    spec = load_workloads(workloads_dir)[NAME]
    assert spec.autoscaling is not None

    with pytest.raises(ScalewiseError, match=r"only .* days of history"):
        train_forecast(workloads=[NAME], days=9, min_days=8.5)
    assert Variable.get(model_variable(NAME), default=None) is None

    [result] = train_forecast(workloads=[NAME], days=8, min_days=7)
    model = load_model(NAME)
    assert model is not None and result["workload"] == NAME and result["points"] == model.points
    assert (model.trained_at - model.trained_from) >= timedelta(days=7)
    assert model.trained_at.timestamp() > NOW - 3600 and model.error < 10  # amplitude 50
    at = datetime.fromtimestamp(NOW + 1800, UTC)
    assert abs(model.predict(at, 0) - demand(NOW + 1800)) < 15

    source = autoscaler.sources()["prometheus"]
    assert isinstance(source, PrometheusSource)
    read = history_reader(source, WorkloadRef.of(spec))
    now = datetime.fromtimestamp(NOW, UTC)
    fresh = forecast_for(NAME, spec.autoscaling, now, read=read, load_model=load_model)
    assert fresh is not None and fresh.forecaster == "holt_winters" and fresh.value is not None
    assert fresh.trained_at == model.trained_at

    # the decision shows the forecast step and replays it
    reading = [MetricReading.success("rps", now, demand(NOW))]
    d = decide(spec.autoscaling, (1, 40), reading, 3, 3, PolicyState(), now, None, fresh)
    step = next(s for s in d.steps if s.name == "forecast")
    assert step.reason in ("forecast_floor", "forecast_covered") and "holt_winters forecast" in step.detail

    # stale: refused, the seasonal window over the same Prometheus takes over (7 past days)
    later = now + timedelta(days=2)
    stale = forecast_for(NAME, spec.autoscaling, later, read=read, load_model=load_model)
    assert stale is not None and stale.forecaster == "seasonal_window" and "model_stale" in stale.detail
    assert stale.value is not None and abs(stale.value - max(demand(NOW + k * 60) for k in range(6))) < 3
    missing = forecast_for(NAME, spec.autoscaling, now, read=read, load_model=lambda _: None)
    assert missing is not None and "model_missing" in missing.detail


def test_autoscaler_path_shows_the_forecast_step(
    history_prom: PromEnv, workloads_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The evaluation `plan`, the fast loop and the flow share: the seasonal window read from the real
    Prometheus becomes the forecast input, its step is in the plan lines and the record replays it."""
    from scalewise.model import WorkloadState
    from scalewise.policy.record import DecisionRecord, replay

    monkeypatch.setenv(autoscaler.ENV_PROM_URL, history_prom.url)
    autoscaler.reset_sources()
    write_spec(workloads_dir, "seasonal_window")
    spec = load_workloads(workloads_dir)[NAME]
    state = WorkloadState(name=NAME, target="docker", desired_replicas=2, ready_replicas=2, image="x:1", version="1")
    now = datetime.fromtimestamp(NOW, UTC)
    reads = autoscaler.Reads.plain(lambda _: state, lambda _: PolicyState(), clock=lambda: now)
    ev = autoscaler.evaluate_workload(spec, reads, clock=lambda: now)
    assert isinstance(ev, autoscaler.Evaluation)
    forecast = ev.decision.inputs.forecast
    assert forecast is not None and forecast.forecaster == "seasonal_window" and forecast.value is not None
    assert "7/7" in forecast.detail  # the seven backfilled past days
    result = autoscaler.result_of(ev, "planned", spec)
    lines = [x for x in result.steps if x.startswith("forecast:")]
    assert lines, f"no forecast step; the decision: {ev.decision.reason} {ev.decision.detail}; steps {result.steps}"
    line = lines[0]
    assert "seasonal_window forecast" in line and "floor" in line
    assert result.decision is not None
    assert replay(DecisionRecord.model_validate(result.decision)) == ev.decision
