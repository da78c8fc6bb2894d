"""Backtests: trace loading, the simulator (real policy per tick), the oracle, scores, CLI and Prometheus input."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from scalewise.backtest import (
    ServiceModel,
    Trace,
    TraceError,
    backtest,
    from_prometheus,
    load_csv,
    load_policy,
    policies_for,
)
from scalewise.backtest.simulate import build_grid, oracle
from scalewise.cli import app
from scalewise.errors import SpecError
from scalewise.spec import WorkloadSpec, parse_workload

RPS_QUERY = 'sum(rate(http_requests_total{service="{workload}"}[1m]))'
runner = CliRunner(env={"COLUMNS": "200"})


def api(target: float = 0.7, lo: int = 1, hi: int = 50, **auto: object) -> WorkloadSpec:
    metric = {"name": "rps", "query": RPS_QUERY, "type": "average_value", "target": target}
    return parse_workload({
        "name": "api", "target": "docker", "image": "scalewise/busybox:1", "replicas": {"min": lo, "max": hi},
        "autoscaling": {"metrics": [metric], **auto},
    })


def per_minute(counts: list[float]) -> Trace:
    return Trace("t", 60.0, np.asarray(counts, dtype=np.float64))


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


# -- traces


def test_csv_round_trip_and_any_interval(tmp_path: Path) -> None:
    trace = load_csv(write(tmp_path / "t.csv", "timestamp_s,requests\n100,5\n130,0\n160,7.5\n"))
    assert trace.interval_s == 30 and trace.start_s == 100
    assert trace.requests.tolist() == [5, 0, 7.5]
    assert trace.rate.tolist() == pytest.approx([5 / 30, 0, 0.25])


@pytest.mark.parametrize(
    ("text", "where", "reason"),
    [
        ("ts,requests\n0,1\n", "line 1: header", "expected 'timestamp_s,requests'"),
        ("timestamp_s,requests\n0,1\n60,abc\n", "line 3: requests", "'abc' is not a number"),
        ("timestamp_s,requests\n0,1\nx,2\n", "line 3: timestamp_s", "'x' is not a number"),
        ("timestamp_s,requests\n0,1\n60,-2\n", "line 3: requests", "-2 is negative"),
        ("timestamp_s,requests\n0,1\n60,2\n180,2\n", "line 4: timestamp_s", "differs from the trace's interval 60s"),
        ("timestamp_s,requests\n0,1\n0,2\n", "line 3: timestamp_s", "is not after the previous row"),
        ("timestamp_s,requests\n0,1\n60,nan\n", "line 3: requests", "not a finite number"),
        ("timestamp_s,requests\n0,1,2\n", "line 2", "expected 2 fields"),
        ("timestamp_s,requests\n0,1\n", "", "needs at least 2 rows"),
        ("", "", "empty file"),
    ],
)
def test_bad_csv_names_file_line_and_field(tmp_path: Path, text: str, where: str, reason: str) -> None:
    path = write(tmp_path / "bad.csv", text)
    with pytest.raises(TraceError) as err:
        load_csv(path)
    message = str(err.value)
    assert message.startswith(str(path)) and where in message and reason in message


def test_missing_trace_file(tmp_path: Path) -> None:
    with pytest.raises(TraceError, match=r"nope\.csv: cannot read"):
        load_csv(tmp_path / "nope.csv")


def test_model_refuses_bad_values() -> None:
    with pytest.raises(ValueError, match="capacity"):
        ServiceModel(capacity=0)
    with pytest.raises(ValueError, match="whole number of milliseconds"):
        ServiceModel(startup_s=0.0001)


# -- oracle and simulator


def test_oracle_on_a_step_is_computable_by_hand() -> None:
    # 10 idle minutes, then 10 minutes at 3 req/s; capacity 1 req/s, start-up 60 s, grid 15 s.
    trace = per_minute([0] * 10 + [180] * 10)
    grid = build_grid(trace, ServiceModel(capacity=1, startup_s=60))
    assert grid.step_s == 15 and grid.cells == 80
    run = oracle(grid, (1, 10))
    # min 1 replica until the 3 are needed minus the start-up (cell 40 - 4), then 3: (36 + 44 * 3) x 15 s
    assert run.provisioned.tolist() == [1] * 36 + [3] * 44
    assert run.ready.tolist() == [1] * 40 + [3] * 40
    result = backtest(trace, api(), ServiceModel(capacity=1, startup_s=60))
    assert result.scores["oracle"]["replica_hours"] == pytest.approx((36 + 44 * 3) * 15 / 3600, abs=0.01)
    assert result.scores["oracle"]["under_provisioned_minutes"] == 0
    assert result.scores["oracle"]["scale_actions"] == 1
    # the reactive HPA sees the step one scrape late and needs the start-up: under-provisioned a while
    hpa = result.scores["hpa"]
    assert 1 <= hpa["under_provisioned_minutes"] <= 3
    assert hpa["replica_hours_vs_oracle"] > 1


def test_flat_trace_leaves_the_hpa_never_under_provisioned() -> None:
    result = backtest(per_minute([120] * 60), api(target=1.4), ServiceModel(capacity=2, startup_s=60))
    for name in ("hpa", "workload", "oracle"):
        assert result.scores[name]["under_provisioned_minutes"] == 0, name
        assert result.scores[name]["unserved_pct"] == 0
    # 1 replica needed; the HPA's 70% target makes it 2, and it never needs more
    assert result.runs["hpa"].provisioned.max() == 2
    assert result.scores["hpa"]["decisions"] == 240
    assert sum(result.scores["hpa"]["reasons"].values()) == 240


def test_real_policy_and_autoscaler_state_each_tick() -> None:
    """Demand drops: the HPA default scale-down window (300 s) holds the count, because the
    decisions carry the policy state forward, starting from the autoscaler's initial state."""
    trace = per_minute([600] * 5 + [0] * 20)
    result = backtest(trace, api(), ServiceModel(capacity=1, startup_s=0))
    prov = result.runs["hpa"].provisioned
    drop = 5 * 4  # cell of the drop (15 s cells)
    seen = drop + 1 + 4  # one scrape late, and a 60 s window still holding the old demand
    assert prov[drop + 4] == prov[drop - 1]  # still held shortly after the drop
    first_down = int(np.flatnonzero(prov < prov[drop - 1])[0])
    assert first_down * 15 >= (drop + 1) * 15 + 300 - 60  # not before the window has passed
    assert first_down > seen
    assert result.scores["hpa"]["reasons"].get("stabilized_down", 0) > 0


def test_policy_file_replaces_the_workloads_section(tmp_path: Path) -> None:
    path = write(tmp_path / "p.yaml", yaml.safe_dump({"autoscaling": {
        "metrics": [{"name": "rps", "query": RPS_QUERY, "type": "average_value", "target": 0.5}], "tolerance": 0.0,
    }}))
    chosen = policies_for(api(), load_policy(path))
    assert chosen["workload"].autoscaling is not None and chosen["workload"].autoscaling.tolerance == 0.0
    assert chosen["hpa"].autoscaling is not None and chosen["hpa"].autoscaling.metrics[0].target == 0.5
    write(path, yaml.safe_dump({"autoscaling": {"metrics": [{"name": "rps", "target": 0}]}}))
    with pytest.raises(SpecError, match=r"p.yaml: autoscaling.metrics\[0\]"):
        load_policy(path)


def test_predictive_floor_learns_a_seasonal_rise_and_forecast_only_changes_nothing() -> None:
    """Hourly season: 50 minutes at 1 req/s, 10 at 10 req/s. The reactive HPA is late at every rise;
    the seasonal-window floor (fed by the readings the autoscaler saw) scales up before it."""
    hour = [60] * 50 + [600] * 10
    trace = per_minute(hour * 8)
    predictive = {"metric": "rps", "season": "1h", "seasons": 3, "step": "60s", "horizon": "90s", "margin": 0.0}
    model = ServiceModel(capacity=1, startup_s=60)
    chosen = {
        **policies_for(api()),
        "forecast_only": api(predictive={**predictive, "mode": "forecast_only"}),
        "predictive": api(predictive=predictive),
    }
    result = backtest(trace, api(), model, chosen)
    hpa, pred, dry = (result.scores[n] for n in ("hpa", "predictive", "forecast_only"))
    assert hpa["under_provisioned_minutes"] >= 8 * 1  # late at each of the 8 rises
    assert pred["under_provisioned_minutes"] <= hpa["under_provisioned_minutes"] / 4
    assert pred["forecast_steps"]["forecast_floor"] > 0 and pred["reasons"]["forecast_floor"] > 0
    assert pred["forecast_steps"]["forecast_unavailable"] >= 4 * 55  # no history until one season (less the horizon)
    # forecast_only records the floor it would have applied, and decides exactly like the HPA
    assert dry["forecast_steps"]["forecast_only"] > 0
    assert {k: v for k, v in dry.items() if k not in ("forecast_steps",)} == hpa
    assert np.array_equal(result.runs["forecast_only"].provisioned, result.runs["hpa"].provisioned)


def test_recent_forecaster_covers_noise_without_seasonal_history() -> None:
    """A one-minute burst to 3 req/s every 7 minutes over 1 req/s, no season: the reactive HPA has
    scaled in after its 5-minute window and is late at every burst; the recent floor (mean + 2 sd of
    the last 10 minutes, planned at capacity) holds for the burst, and its forecast steps are recorded."""
    pattern = [60] * 6 + [180]
    trace = per_minute(pattern * 20)
    model = ServiceModel(capacity=1, startup_s=60)
    recent = {"metric": "rps", "forecaster": "recent", "window": "10m", "step": "15s", "deviations": 2,
              "target": 1.0, "margin": 0.0}
    chosen = {**policies_for(api()), "recent": api(predictive=recent)}
    result = backtest(trace, api(), model, chosen)
    hpa, pred = result.scores["hpa"], result.scores["recent"]
    assert hpa["under_provisioned_minutes"] >= 10
    assert pred["under_provisioned_minutes"] <= hpa["under_provisioned_minutes"] / 4
    steps = pred["forecast_steps"]
    # only the first ticks, before 4 distinct scrapes were seen (the ones before the trace starts are one)
    assert 0 < steps["forecast_unavailable"] <= 6
    assert sum(steps.values()) == result.grid.ticks and steps["forecast_floor"] > 0


@st.composite
def scenarios(draw: st.DrawFn) -> tuple[Trace, ServiceModel, WorkloadSpec]:
    interval = draw(st.sampled_from([1.0, 5.0, 15.0, 60.0]))
    counts = draw(st.lists(st.integers(0, 40), min_size=2, max_size=30))
    capacity = draw(st.sampled_from([0.5, 1.0, 3.0]))
    startup = draw(st.sampled_from([0.0, 10.0, 60.0]))
    need = int(np.ceil(max(counts) / interval / capacity))
    lo = draw(st.integers(0, 2))
    hi = max(lo, 1, need) + draw(st.integers(0, 3))
    burst = draw(st.booleans())
    spec = api(target=capacity * 0.7, lo=lo, hi=hi, **({"burst": {"panic_threshold": 1.5}} if burst else {}))
    trace = Trace("h", interval, np.asarray(counts, dtype=np.float64))
    return trace, ServiceModel(capacity=capacity, startup_s=startup, interval_s=15), spec


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(scenarios())
def test_oracle_never_under_provisions_and_every_policy_stays_in_bounds(
    scenario: tuple[Trace, ServiceModel, WorkloadSpec],
) -> None:
    trace, model, spec = scenario
    result = backtest(trace, spec, model)
    assert result.scores["oracle"]["under_provisioned_minutes"] == 0
    assert np.all(result.runs["oracle"].ready >= result.grid.need)
    for name, run in result.runs.items():
        assert run.provisioned.min() >= max(spec.replicas.min, 1) or name == "oracle", name
        assert run.provisioned.max() <= spec.replicas.max, name
        assert np.all(run.ready <= run.provisioned) and np.all(run.ready >= 0), name
    assert result.scores["oracle"]["replica_hours"] <= result.scores["hpa"]["replica_hours"] + 1e-9 or (
        result.scores["hpa"]["under_provisioned_minutes"] > 0
    )


# -- CLI


@pytest.fixture()
def api_workloads(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    folder = tmp_path / "workloads"
    folder.mkdir()
    (folder / "api.yaml").write_text(yaml.safe_dump(api(target=0.161, hi=100).model_dump(mode="json")))
    monkeypatch.setenv("SCALEWISE_WORKLOADS", str(folder))
    return folder


def test_cli_json_and_plot(tmp_path: Path, api_workloads: Path) -> None:
    rows = "".join(f"{60 * i},{20 + (600 if 20 <= i < 30 else 0) + 5 * (i % 7)}\n" for i in range(90))
    trace = write(tmp_path / "small.csv", "timestamp_s,requests\n" + rows)
    png = tmp_path / "out.png"
    out = runner.invoke(
        app, ["backtest", str(trace), "--workload", "api", "--capacity", "0.23", "--startup", "60", "--json",
              "--plot", str(png)],
    )
    assert out.exit_code == 0, out.output
    data = json.loads(out.stdout)
    assert data["trace"]["points"] == 90 and data["model"]["capacity"] == 0.23
    assert set(data["policies"]) == {"oracle", "hpa", "workload"}
    for name, p in data["policies"].items():
        for key in ("under_provisioned_minutes", "unserved_pct", "replica_hours", "replica_hours_vs_oracle",
                    "scale_actions", "spec", "reasons"):
            assert key in p, (name, key)
    assert data["policies"]["oracle"]["replica_hours_vs_oracle"] == 1
    assert data["policies"]["hpa"]["under_provisioned_minutes"] > 0
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    text = runner.invoke(app, ["backtest", str(trace), "--workload", "api", "--capacity", "0.23"])
    assert text.exit_code == 0, text.output
    assert "oracle" in text.stdout and "workload" in text.stdout


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--capacity", "0"], "--capacity: "),
        (["--startup", "-1"], "--startup: "),
        (["--workload", "nope"], "workload: unknown workload 'nope'"),
        (["--policy", "/nonexistent.yaml"], "/nonexistent.yaml: cannot read"),
        (["--prometheus-query", "up"], "exactly one"),
    ],
)
def test_cli_bad_input_exits_2_naming_the_field(tmp_path: Path, api_workloads: Path, args: list[str],
                                               message: str) -> None:
    trace = write(tmp_path / "t.csv", "timestamp_s,requests\n0,1\n60,2\n")
    base = ["backtest", str(trace), "--workload", "api"]
    if "--workload" in args:
        base = base[:2]
    out = runner.invoke(app, [*base, *args])
    assert out.exit_code == 2, out.output
    assert message in out.output.replace("\n", "")


def test_cli_bad_trace_exits_2(tmp_path: Path, api_workloads: Path) -> None:
    trace = write(tmp_path / "t.csv", "timestamp_s,requests\n0,1\n60,x\n")
    out = runner.invoke(app, ["backtest", str(trace), "--workload", "api"])
    assert out.exit_code == 2
    assert "t.csv line 3: requests: 'x' is not a number" in out.output.replace("\n", "")


# -- Prometheus range input (real Prometheus)


@pytest.mark.prom
def test_prometheus_range_query_as_a_trace(prom_env, api_workloads: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from scalewise.metrics.prometheus_source import PrometheusSource
    from tests.support.prom_env import METRIC

    name = f"bt-{datetime.now(UTC).strftime('%H%M%S%f')}"
    query = f'{METRIC}{{workload="{name}"}}'
    prom_env.exporter.set(name, 2.5)
    prom_env.wait_for_value(query, 2.5)
    source = PrometheusSource(prom_env.url)

    def samples() -> list:
        now = datetime.now(UTC)
        return source.query_range(query, now - timedelta(seconds=60), now, 1.0)

    prom_env.wait_until(lambda: len(samples()[0]["values"]) >= 4, what="4 samples of the series")
    first = datetime.fromtimestamp(float(samples()[0]["values"][0][0]), UTC)
    trace = from_prometheus(source, query, first, first + timedelta(seconds=3), 1.0)
    assert trace.interval_s == 1.0 and trace.requests.tolist() == [2.5] * 4 and not trace.notes
    with pytest.raises(TraceError, match="end"):
        from_prometheus(source, query, first, first, 1.0)
    source.close()

    monkeypatch.setenv("SCALEWISE_PROMETHEUS_URL", prom_env.url)
    out = runner.invoke(app, [
        "backtest", "--prometheus-query", query, "--start", first.isoformat(),
        "--end", (first + timedelta(seconds=3)).isoformat(), "--step", "1s", "--workload", "api", "--json",
        "--capacity", "1", "--startup", "0",
    ])
    assert out.exit_code == 0, out.output
    data = json.loads(out.stdout)
    assert data["trace"]["points"] == 4 and data["trace"]["requests"] == 10.0


# -- the backtest flow (real Prefect server)


@pytest.mark.prefect
def test_backtest_flow_records_table_and_markdown_artifacts(prefect_server, tmp_path: Path, api_workloads: Path):
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

    from flows.backtest import backtest as flow

    rows = "".join(f"{60 * i},{30 + (300 if 10 <= i < 15 else 0)}\n" for i in range(40))
    trace = write(tmp_path / "f.csv", "timestamp_s,requests\n" + rows)
    out = flow(workload="api", trace=str(trace), capacity=0.23, startup_s=60)
    assert set(out["policies"]) == {"oracle", "hpa", "workload"}
    with get_client(sync_client=True) as client:
        keys = ArtifactFilter(key=ArtifactFilterKey(any_=["scalewise-backtest-api"]))
        found = client.read_artifacts(artifact_filter=keys)
    kinds = {a.type for a in found}
    assert {"table", "markdown"} <= kinds
    table = next(a for a in found if a.type == "table")
    assert "replica_hours_vs_oracle" in str(table.data) and "oracle" in str(table.data)
    with pytest.raises(SpecError, match="exactly one"):
        flow(workload="api", capacity=0.23)
